"""One chain's realtime stream: catch up to the final block, then follow the head block by block through reorgs.

States of the ``realtime`` stream (cursor = last committed block)::

    catch-up   cursor < final      ranges [cursor+1, min(cursor+range, final)]; blocks are final, no reorg check;
                                   the range's last block becomes the window's anchor
    follow     cursor >= final     the node's blocks above the cursor, indexed BY HASH (a node behind the others or
                                   on another fork can never answer for them); what to do is decided by
                                   :func:`indexer.sync.reconcile.next_step`; a reorg is rolled back to the common
                                   ancestor IN THE SAME TRANSACTION as the replacement blocks' data
    stopped    ReorgTooDeep / FatalChainError: the watcher ends with a loud error and a metric

Wallets added while running join the watch set at once; the unfinalised part of their history is rescanned here
(so a reorg cannot interleave) and the final part, ``START_BLOCK`` up to the anchor, is filled by the backfill task
(:mod:`indexer.sync.backfill`) without holding back the head. Every write goes through the chain's
:class:`indexer.sync.writer.ChainWriter`.

Transient failures (the node, the network, the database, a wallet changed under a batch) are retried with backoff
for ever; after ``degraded_after_s`` of failing the chain reports itself degraded (``citadel_chain_degraded``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from chains.base import (
    BlockNotAvailable,
    BlockRef,
    ChainAdapter,
    ChainData,
    EscrowEvent,
    ReorgTooDeep,
    Transfer,
    TxReceipt,
)
from indexer import metrics
from indexer.model import Batch, StreamState, TokenMeta, WalletRef
from indexer.store.chain_store import ChainStore
from indexer.sync.reconcile import Advance, Reconcile, Wait, next_step, revert_point
from indexer.sync.resilience import TRANSIENT_ERRORS, Backoff
from indexer.sync.view import ChainView, WatcherConfig
from indexer.sync.wallets import WalletSet
from indexer.sync.window import InconsistentBlocks, ReorgWindow, check_linked
from indexer.sync.writer import REALTIME, ChainWriter

log = logging.getLogger("citadel.watcher")

START_STREAM = "start"  # sync_cursors row recording the realtime stream's first block
PLATFORM_POLL_MAX_S = 60.0  # receipts of an unmined platform transaction are asked for at most this rarely
PLATFORM_RECEIPTS_PER_STEP = 500
DROP_CHECK_EVERY_S = 60.0
PROGRESS_EVERY_S = 5.0  # a catch-up progress line per chain at most this often


@dataclass(slots=True)
class CatchUpProgress:
    """Blocks and transfers done since the catch-up (re)started, for the progress lines and their ETA."""

    started_at: float
    from_block: int
    blocks: int = 0
    rows: int = 0
    logged_at: float = 0.0

    def line_fields(self, chain: str, cursor: int, final: int, now: float) -> dict[str, object]:
        elapsed = max(now - self.started_at, 1e-9)
        rate = self.blocks / elapsed
        remaining = max(final - cursor, 0)
        total = max(final - self.from_block + 1, 1)
        return {
            "chain": chain, "block": cursor, "final": final,
            "done_pct": round(100.0 * (cursor - self.from_block + 1) / total, 1),
            "blocks_per_s": round(rate, 1), "transfers_per_s": round(self.rows / elapsed, 1),
            "eta_s": round(remaining / rate) if rate > 0 else None,
        }


@dataclass(slots=True)
class PlatformPolling:
    """When to ask again for the receipt of each platform transaction not seen mined: soon at first, then less and
    less often (doubling up to ``max_s``), so transactions that never get mined cost almost nothing until they are
    given up (``dropped``) after ``platform_tx_max_age_s``."""

    first_s: float
    max_s: float = PLATFORM_POLL_MAX_S
    due_at: dict[str, tuple[float, float]] = field(default_factory=dict)  # hash -> (next poll, interval)

    def due(self, hashes: list[str], now: float) -> list[str]:
        known = set(hashes)
        for gone in [h for h in self.due_at if h not in known]:
            del self.due_at[gone]
        return [h for h in hashes if self.due_at.get(h, (0.0, 0.0))[0] <= now]

    def polled(self, asked: list[str], found: set[str], now: float) -> None:
        for h in asked:
            if h in found:
                self.due_at.pop(h, None)
                continue
            interval = min(max(self.due_at.get(h, (0.0, self.first_s / 2))[1] * 2, self.first_s), self.max_s)
            self.due_at[h] = (now + interval, interval)


class ChainWatcher:
    def __init__(
        self,
        adapter: ChainAdapter,
        writer: ChainWriter,
        cfg: WatcherConfig,
        wallet_changed: asyncio.Event | None = None,
    ) -> None:
        self.adapter = adapter
        self.writer = writer
        self.cfg = cfg
        self.chain = adapter.chain.value
        self.view = ChainView(adapter, writer, cfg)
        self.wallet_changed = wallet_changed or asyncio.Event()
        self.window = ReorgWindow()
        self.cursor: int = (cfg.start_block if isinstance(cfg.start_block, int) else 0) - 1
        self._wallets_loaded_at = 0.0
        self._cursor_committed = False  # a realtime cursor exists in the database
        self._platform = PlatformPolling(first_s=max(cfg.poll_interval_s, 1.0))
        self._last_drop_check = 0.0
        self.failing_since: float | None = None
        self.degraded = False
        self._progress: CatchUpProgress | None = None
        self._prefetch: tuple[tuple[int, int, frozenset[str], frozenset[str]],
                              asyncio.Task[tuple[list[Transfer], list[EscrowEvent], BlockRef]]] | None = None

    # the chain's shared state, as tests and the health endpoint read it
    @property
    def store(self) -> ChainStore:
        return self.writer.store

    @property
    def wallets(self) -> WalletSet:
        return self.view.wallets

    @property
    def tokens(self) -> dict[str | None, TokenMeta]:
        return self.view.tokens

    @property
    def head_number(self) -> int:
        return self.view.head_number

    @property
    def final_number(self) -> int:
        return self.view.final_number

    @property
    def caught_up(self) -> asyncio.Event:
        return self.view.caught_up

    # ------------------------------------------------------------------------------------------------ set-up

    async def prepare(self) -> None:
        """Check the node, read token metadata on-chain, load the cursor, window and wallets."""
        await self.adapter.check_chain_id()
        await self.view.load_tokens(self.writer)
        stored = await self.store.cursor(REALTIME)
        recorded_start = await self.store.cursor(START_STREAM)
        if stored is not None:
            self.cursor = stored
            self._cursor_committed = True
        self.window = ReorgWindow(await self.store.window())
        await self._refresh_wallets(force=True)
        if stored is None or recorded_start is None:
            await self._record_start(stored, recorded_start)
        else:
            self.view.start_block = recorded_start
        self.writer.cursor = self.cursor

    async def _record_start(self, stored: int | None, recorded: int | None) -> None:
        """The realtime stream's first block, resolved once and recorded with the cursor: ``START_BLOCK = final``
        is the final block at the FIRST start, so a restart resumes where the stream is, never at a later final
        block (which would skip what lies between)."""
        if stored is None:
            if isinstance(self.cfg.start_block, int):
                first = self.cfg.start_block
            else:
                await self.view.observe_head()
                first = max(self.view.final_number, 0)
            self.cursor = first - 1
            await self._commit(Batch(stream=REALTIME, cursor=self.cursor,
                                     stream_states=[StreamState(START_STREAM, first, first)]))
            log.info("first start", extra={"fields": {"chain": self.chain, "start_block": first}})
        else:  # a database from before the start was recorded: its stream began at START_BLOCK (genesis then)
            first = self.cfg.start_block if isinstance(self.cfg.start_block, int) else 0
            await self._commit(Batch(stream="start", stream_states=[StreamState(START_STREAM, first, first)]))
        self.view.start_block = first

    # ------------------------------------------------------------------------------------------------ the loop

    async def run(self) -> None:
        """Follow the chain until cancelled. Transient failures back off and retry; fatal ones end the watcher."""
        metrics.WATCHER_UP.labels(self.chain).set(0)
        backoff = Backoff(self.chain, "step", self.cfg.max_backoff_s)
        prepared = False
        try:
            while True:
                try:
                    if not prepared:
                        await self.prepare()
                        prepared = True
                        metrics.WATCHER_UP.labels(self.chain).set(1)
                    more = await self.step()
                    backoff.reset()
                    self._succeeded()
                    if not more:
                        await self._idle()
                except ReorgTooDeep:
                    metrics.REORG_TOO_DEEP.labels(self.chain).inc()
                    raise
                except TRANSIENT_ERRORS as exc:
                    self._failed()
                    await backoff.after(exc)
        finally:
            self._drop_prefetch()
            metrics.WATCHER_UP.labels(self.chain).set(0)
            metrics.CHAIN_DEGRADED.labels(self.chain).set(0)

    def _succeeded(self) -> None:
        if self.degraded:
            log.info("chain recovered", extra={"fields": {"chain": self.chain}})
        self.failing_since, self.degraded = None, False
        metrics.CHAIN_DEGRADED.labels(self.chain).set(0)

    def _failed(self) -> None:
        now = time.monotonic()
        if self.failing_since is None:
            self.failing_since = now
        if not self.degraded and now - self.failing_since >= self.cfg.degraded_after_s:
            self.degraded = True
            metrics.CHAIN_DEGRADED.labels(self.chain).set(1)
            log.error("chain degraded: every attempt failed for a while; still retrying",
                      extra={"fields": {"chain": self.chain, "failing_s": round(now - self.failing_since)}})

    async def _idle(self) -> None:
        """Until the next poll, a new head announced by the node, or a wallet change, whichever comes first."""
        waits = [
            asyncio.ensure_future(self.adapter.wait_for_new_head(self.cfg.poll_interval_s)),
            asyncio.ensure_future(self.wallet_changed.wait()),
            asyncio.ensure_future(self.writer.wallets_stale.wait()),
        ]
        try:
            await asyncio.wait(waits, timeout=self.cfg.poll_interval_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waits:
                task.cancel()
            await asyncio.gather(*waits, return_exceptions=True)

    async def step(self) -> bool:
        """One unit of work. True when more work is waiting right away."""
        await self._refresh_wallets()
        head = await self.view.observe_head()
        final = self.view.final_number
        if self.wallets.pending_rescan:
            await self._rescan_for_new_wallets()
        if self.cursor < final:
            await self._catch_up(final)
            more = self.cursor < head.number
        else:
            more = await self._follow(head, final)
        metrics.LAG_BLOCKS.labels(self.chain).set(max(self.view.head_number - self.cursor, 0))
        return more

    async def final_number_for(self, head: BlockRef) -> int:
        """Kept for callers that only need the final number: observes the head again."""
        await self.view.observe_head()
        return self.view.final_number

    # ------------------------------------------------------------------------------------------------ catch-up

    async def _catch_up(self, final: int) -> None:
        """One range of final blocks. The next range is fetched while this one commits (the node and the database
        work at the same time); a prefetch made for another watch set or token set is discarded."""
        first = self.cursor + 1
        last = min(final, self.cursor + self.cfg.catchup_range)
        transfers, escrow, anchor = await self._take_prefetch(first, last)
        following = (last + 1, min(final, last + self.cfg.catchup_range))
        if following[0] <= following[1]:
            self._start_prefetch(*following)
        # platform transactions are settled once at the head, not on every range of the catch-up hot path
        rows = self.view.rows(transfers)
        await self._commit(
            Batch(stream=REALTIME, rows=rows, cursor=last, cursor_hash=anchor.hash,
                  window_reset=anchor, head=self.view.head_number, final=final, escrow=escrow),
            blocks=last - first + 1,
        )
        self.window.reset(anchor)
        self.cursor = last
        self._report_progress(last - first + 1, len(rows), final)

    def _report_progress(self, blocks: int, rows: int, final: int) -> None:
        """A progress line every few seconds while catching up (blocks done/total, rates, ETA)."""
        now = time.monotonic()
        if self._progress is None:
            self._progress = CatchUpProgress(now, self.cursor - blocks + 1, logged_at=now)
        progress = self._progress
        progress.blocks += blocks
        progress.rows += rows
        metrics.CATCHUP_REMAINING_BLOCKS.labels(self.chain).set(max(final - self.cursor, 0))
        done = self.cursor >= final
        if done or now - progress.logged_at >= PROGRESS_EVERY_S:
            progress.logged_at = now
            fields = progress.line_fields(self.chain, self.cursor, final, now)
            log.info("caught up" if done else "catching up", extra={"fields": fields})
        if done:
            self._progress = None

    async def _fetch_final_range(self, first: int, last: int) -> tuple[list[Transfer], list[EscrowEvent], BlockRef]:
        data = await self.view.read_range(first, last, self.wallets.addresses)
        anchor = await self.adapter.block_ref(last)
        if anchor is None:
            raise InconsistentBlocks(f"block {last} vanished")
        return await self.view.with_timestamps(data.transfers, {}), data.escrow, anchor

    def _prefetch_key(self, first: int, last: int) -> tuple[int, int, frozenset[str], frozenset[str]]:
        return first, last, self.wallets.addresses, self.view.token_addresses

    def _start_prefetch(self, first: int, last: int) -> None:
        self._drop_prefetch()
        task = asyncio.create_task(self._fetch_final_range(first, last), name=f"prefetch-{self.chain}-{first}")
        self._prefetch = (self._prefetch_key(first, last), task)

    async def _take_prefetch(self, first: int, last: int) -> tuple[list[Transfer], list[EscrowEvent], BlockRef]:
        if self._prefetch is not None and self._prefetch[0] == self._prefetch_key(first, last):
            task = self._prefetch[1]
            self._prefetch = None
            return await task
        self._drop_prefetch()
        return await self._fetch_final_range(first, last)

    def _drop_prefetch(self) -> None:
        if self._prefetch is not None:
            task = self._prefetch[1]
            task.cancel()
            task.add_done_callback(_consume_outcome)
            self._prefetch = None

    # ------------------------------------------------------------------------------------------------ follow

    async def _follow(self, head: BlockRef, final: int) -> bool:
        """One batch at the head; True when more blocks are waiting."""
        if self.window.tip is None or self.window.tip.number != self.cursor:
            anchor = await self.adapter.block_ref(self.cursor) if self.cursor >= 0 else None
            if anchor is None and self.cursor >= 0:  # a node behind: never follow without a block to link to
                raise BlockNotAvailable(f"{self.chain}: block {self.cursor} is not available on the node")
            self.window = ReorgWindow([anchor] if anchor else [])
        last = min(head.number, self.cursor + self.cfg.follow_batch)
        new = await self.adapter.block_refs(self.cursor + 1, last) if last > self.cursor else []
        step = next_step(self.window, head, new)
        rollback_to: int | None = None
        match step:
            case Wait():
                self.caught_up.set()
                await self._settle_platform_only(final)
                return False
            case Advance(blocks):
                refs = list(blocks)
            case Reconcile():
                anchor, tip = self.window.anchor, self.window.tip
                if anchor is None or tip is None:
                    raise InconsistentBlocks("no window to compare with")
                # the node's chain may be shorter than the window (a reorg to a lower height): compare what it has
                canonical = await self.adapter.block_refs(anchor.number, min(tip.number, head.number))
                rollback_to = revert_point(self.window, canonical).ancestor
                log.warning("reorg", extra={"fields": {"chain": self.chain, "ancestor": rollback_to,
                                                       "depth": self.cursor - rollback_to}})
                refs = await self.adapter.block_refs(rollback_to + 1, last) if last > rollback_to else []
                check_linked(refs)
                if refs and refs[0].parent_hash != self.window.hash_at(rollback_to):
                    raise InconsistentBlocks("the chain moved again while rolling back")
        if not refs and rollback_to is None:
            return False
        data = await self.view.read_blocks(refs, self.wallets.addresses) if refs else ChainData([], [])
        transfers = await self.view.with_timestamps(data.transfers, {b.number: b.timestamp for b in refs})
        escrow = data.escrow
        # a reorg that lowered the height may leave nothing above the ancestor yet: the rollback commits alone
        tip = refs[-1] if refs else None
        last = tip.number if tip is not None else rollback_to if rollback_to is not None else self.cursor
        last_hash = tip.hash if tip is not None else self.window.hash_at(last)
        settle = await self._receipts_up_to(last, final, {b.number: b.hash for b in refs})
        await self._commit(
            Batch(stream=REALTIME, rows=self.view.rows(transfers), cursor=last, cursor_hash=last_hash,
                  rollback_to=rollback_to, window_add=refs, prune_below=min(final, last),
                  head=self.view.head_number, final=final, settle=settle, escrow=escrow),
            blocks=len(refs),
        )
        if rollback_to is not None:
            metrics.REORGS.labels(self.chain).inc()
            metrics.REORG_DEPTH.labels(self.chain).observe(self.cursor - rollback_to)
            self.window.rollback(rollback_to)
        self.window.extend(refs)
        self.window.prune(min(final, last))
        self.cursor = last
        return self.cursor < head.number

    async def _settle_platform_only(self, final: int) -> None:
        """At the head with no new block: settle platform transactions, give up those never mined, and confirm
        rows when finality moved. Nothing to write, no transaction."""
        settle = await self._receipts_up_to(self.cursor, final, {})
        now = time.monotonic()
        drop = now - self._last_drop_check >= DROP_CHECK_EVERY_S
        head = self.view.head_number
        if settle or drop or self.writer.refreshed_at != (head, final):
            await self._commit(Batch(stream=REALTIME, settle=settle, head=head, final=final,
                                     drop_platform_older_than_s=self.cfg.platform_tx_max_age_s if drop else None))
            if drop:
                self._last_drop_check = now

    # ------------------------------------------------------------------------------------------------ helpers

    async def _receipts_up_to(self, last: int, final: int, fresh: dict[int, str]) -> list[TxReceipt]:
        """Receipts of platform transactions mined in blocks this stream has (or is about to have) committed,
        on the fork the window knows. Each unmined one is asked for less and less often."""
        unsettled = await self.store.unsettled_platform()
        now = time.monotonic()
        max_age_s = self.cfg.platform_tx_max_age_s
        wall = datetime.now(UTC)
        hashes = [h for h, recorded in unsettled
                  if recorded is None or (wall - _aware(recorded)).total_seconds() < max_age_s]
        due = self._platform.due(hashes, now)[:PLATFORM_RECEIPTS_PER_STEP]
        if not due:
            return []
        found = await self.adapter.receipts(due)
        self._platform.polled(due, set(found), now)
        out = []
        for receipt in found.values():
            if receipt.block_number > last:
                continue
            known = fresh.get(receipt.block_number) or self.window.hash_at(receipt.block_number)
            if receipt.block_number <= final or known == receipt.block_hash:
                out.append(receipt)
        return out

    async def _commit(self, batch: Batch, blocks: int = 0) -> None:
        await self.writer.commit(batch, blocks=blocks)
        if batch.cursor is not None:
            self._cursor_committed = True

    # ------------------------------------------------------------------------------------------------ wallets

    async def _refresh_wallets(self, force: bool = False) -> None:
        due = time.monotonic() - self._wallets_loaded_at > self.cfg.wallet_poll_s
        stale = self.writer.wallets_stale.is_set()
        if not (force or due or stale or self.wallet_changed.is_set()):
            return
        self.wallet_changed.clear()
        self._wallets_loaded_at = time.monotonic()
        await self.wallets.reload(self._cursor_committed)

    async def _rescan_for_new_wallets(self) -> None:
        """New wallets' transfers in the unfinalised blocks the follow loop already passed (read by hash, so they
        come from the fork the window holds), committed with their backfill stream records (whose target is the
        window's anchor: everything up to it is final).

        Rows are built against every known wallet, so the other side of a transfer between a new and an old wallet
        is rewritten as ``p2p_transfer``."""
        added = set(self.wallets.pending_rescan)
        anchor = self.window.anchor.number if self.window.anchor is not None else self.cursor
        rows = []
        unfinal = [b for b in self.window.blocks if b.number > anchor]
        if unfinal:
            transfers = (await self.view.read_blocks(unfinal, frozenset(added), escrow=False)).transfers
            transfers = await self.view.with_timestamps(transfers, {b.number: b.timestamp for b in unfinal})
            rows = self.view.rows(transfers)
        history = self.view.history_from()
        target = anchor if history is None else max(anchor, history - 1)
        done = target if history is None else history - 1  # "none": nothing before the wallet joined
        states = [StreamState(self.wallets.stream_name(self.wallets.by_address[a]), done, target)
                  for a in added if a in self.wallets.by_address]
        await self._commit(Batch(stream="wallet-rescan", rows=rows, stream_states=states))
        self.wallets.rescan_done(added)
        self.view.backfill_wakeup.set()
        log.info("wallets added", extra={"fields": {"chain": self.chain, "count": len(added), "backfill_to": target}})


def _aware(when: datetime) -> datetime:
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def _consume_outcome(task: asyncio.Task[tuple[list[Transfer], list[EscrowEvent], BlockRef]]) -> None:
    """A discarded prefetch's result or error is of no interest; retrieving it keeps asyncio from warning."""
    if not task.cancelled():
        task.exception()


__all__ = ["REALTIME", "ChainWatcher", "WalletRef", "WatcherConfig"]
