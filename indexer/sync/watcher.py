"""One chain's watcher: catch-up to the final block, then follow the head block by block through reorgs.

States of the ``realtime`` stream (cursor = last committed block)::

    catch-up   cursor < final      ranges [cursor+1, min(cursor+range, final)]; blocks are final, no reorg check;
                                   the range's last block becomes the window's anchor
    follow     cursor >= final     blocks [cursor+1, head]: linked to the window or a reorg is rolled back to the
                                   common ancestor IN THE SAME TRANSACTION as the replacement blocks' data
    stopped    ReorgTooDeep / FatalChainError: the watcher ends with a loud error and a metric

Wallets added while running join the watch set at once; the unfinalised part of their history is rescanned by the
follow loop itself (so a reorg cannot interleave) and the final part, ``START_BLOCK`` up to the anchor, is filled by
the wallet backfill task (:mod:`indexer.sync.backfill`) without holding back the head.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from decimal import Decimal

from chains.base import (
    BlockRef,
    ChainAdapter,
    ReorgTooDeep,
    Transfer,
    TxReceipt,
)
from indexer import metrics
from indexer.store.chain_store import Batch, ChainStore, StreamState
from indexer.sync.resilience import TRANSIENT_ERRORS, Backoff
from indexer.sync.rows import TokenMeta, WalletRef, row_wallet_id, transfer_rows
from indexer.sync.wallets import WalletSet
from indexer.sync.window import Extends, InconsistentBlocks, ReorgWindow, check_linked

log = logging.getLogger("citadel.watcher")

REALTIME = "realtime"


@dataclass(frozen=True, slots=True)
class WatcherConfig:
    start_block: int
    confirmations: int
    poll_interval_s: float
    tokens: dict[str, str]  # symbol -> contract address (as configured)
    catchup_range: int = 500  # blocks per catch-up commit (CITADEL_<CHAIN>__CATCHUP_BATCH_BLOCKS)
    native_transfers: bool = True  # CITADEL_<CHAIN>__NATIVE_TRANSFERS
    follow_batch: int = 100
    finality_stall_s: float = 300.0
    stablecoins: frozenset[str] = frozenset({"USDT", "USDC"})
    stablecoin_usd_price: Decimal = Decimal("1.00")
    wallet_poll_s: float = 30.0
    max_backoff_s: float = 30.0


@dataclass(slots=True)
class _Finality:
    last_value: int | None = None
    changed_at: float = field(default_factory=time.monotonic)
    stalled: bool = False


class ChainWatcher:
    def __init__(
        self,
        adapter: ChainAdapter,
        store: ChainStore,
        cfg: WatcherConfig,
        wallet_changed: asyncio.Event | None = None,
    ) -> None:
        self.adapter = adapter
        self.store = store
        self.cfg = cfg
        self.chain = adapter.chain.value
        self.wallet_changed = wallet_changed or asyncio.Event()
        self.wallets = WalletSet(adapter, store, cfg.start_block)
        self.window = ReorgWindow()
        self.cursor: int = cfg.start_block - 1
        self.tokens: dict[str | None, TokenMeta] = {}
        self.token_addresses: frozenset[str] = frozenset()
        self.head_number: int = -1
        self.final_number: int = -1
        self._finality = _Finality()
        self._wallets_loaded_at = 0.0
        self.caught_up = asyncio.Event()
        self._cursor_committed = False  # a realtime cursor exists in the database
        self._refreshed_at: tuple[int, int] | None = None  # (head, final) of the last confirmation refresh
        self.backfill_wakeup = asyncio.Event()
        self.dirty_wallets: set[int] = set()  # wallet ids whose cached balance a new transfer changed
        self._prefetch: tuple[tuple[int, int, frozenset[str], frozenset[str]],
                              asyncio.Task[tuple[list[Transfer], BlockRef]]] | None = None

    # ------------------------------------------------------------------------------------------------ set-up

    async def prepare(self) -> None:
        """Check the node, read token metadata on-chain, load the cursor, window and wallets."""
        await self.adapter.check_chain_id()
        await self._load_tokens()
        stored = await self.store.cursor(REALTIME)
        if stored is not None:
            self.cursor = stored
            self._cursor_committed = True
        self.window = ReorgWindow(await self.store.window())
        await self._refresh_wallets(force=True)

    async def _load_tokens(self) -> None:
        # the native coin is always described: its cached balance is refreshed even when its transfers are not
        # indexed (``native_transfers`` off only stops the adapters from reading them)
        self.tokens = {
            None: TokenMeta(None, self.adapter.native_symbol, self.adapter.native_decimals, None),
        }
        records = []
        for symbol, configured in self.cfg.tokens.items():
            address = self.adapter.normalise_address(configured)
            info = await self.adapter.token_info(address)
            price = self.cfg.stablecoin_usd_price if symbol.upper() in self.cfg.stablecoins else None
            self.tokens[address] = TokenMeta(address, symbol, info.decimals, price)
            records.append((address, symbol, info.decimals))
            log.info("token", extra={"fields": {"chain": self.chain, "symbol": symbol, "decimals": info.decimals}})
        await self.store.upsert_tokens(records)
        self.token_addresses = frozenset(a for a in self.tokens if a is not None)

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
                    if not more:
                        await self._idle()
                except ReorgTooDeep:
                    metrics.REORG_TOO_DEEP.labels(self.chain).inc()
                    raise
                except TRANSIENT_ERRORS as exc:
                    await backoff.after(exc)
        finally:
            self._drop_prefetch()
            metrics.WATCHER_UP.labels(self.chain).set(0)

    async def _idle(self) -> None:
        """Until the next poll, a new head announced by the node, or a wallet change, whichever comes first."""
        head = asyncio.ensure_future(self.adapter.wait_for_new_head(self.cfg.poll_interval_s))
        wallets = asyncio.ensure_future(self.wallet_changed.wait())
        try:
            await asyncio.wait({head, wallets}, timeout=self.cfg.poll_interval_s,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (head, wallets):
                task.cancel()
            await asyncio.gather(head, wallets, return_exceptions=True)

    async def step(self) -> bool:
        """One unit of work. True when more work is waiting right away."""
        await self._refresh_wallets()
        head = await self.adapter.head()
        final = await self.final_number_for(head)
        self.head_number, self.final_number = head.number, final
        metrics.HEAD_BLOCK.labels(self.chain).set(head.number)
        metrics.FINALIZED_BLOCK.labels(self.chain).set(final)
        if self.wallets.pending_rescan:
            await self._rescan_for_new_wallets()
        if self.cursor < final:
            await self._catch_up(head, final)
            more = self.cursor < head.number
        elif self.cursor < head.number or self._tip_replaced(head):
            await self._follow(head, final)
            more = self.cursor < head.number
        else:
            self.caught_up.set()
            await self._settle_platform_only(head.number, final)
            more = False
        metrics.CURSOR_BLOCK.labels(self.chain, REALTIME).set(self.cursor)
        metrics.LAG_BLOCKS.labels(self.chain).set(max(head.number - self.cursor, 0))
        return more

    async def final_number_for(self, head: BlockRef) -> int:
        """The node's finality signal; the configured depth where it has none. A signal that has not moved for
        ``finality_stall_s`` is reported (metric, log) and no longer trusted on its own: the depth rule then
        applies as well, so confirmations keep moving and the window stays bounded."""
        by_depth = head.number - self.cfg.confirmations + 1
        signal = await self.adapter.finalized_number()
        if signal is None:
            return max(by_depth, -1)
        state = self._finality
        now = time.monotonic()
        if signal != state.last_value:
            if state.stalled:
                log.info("finality signal moving again", extra={"fields": {"chain": self.chain, "final": signal}})
            state.last_value, state.changed_at, state.stalled = signal, now, False
        elif not state.stalled and now - state.changed_at > self.cfg.finality_stall_s and head.number > signal:
            state.stalled = True
            log.error(
                "finality signal stalled",
                extra={"fields": {"chain": self.chain, "final": signal, "head": head.number,
                                  "stalled_s": round(now - state.changed_at)}},
            )
        metrics.FINALIZED_STALLED.labels(self.chain).set(1 if state.stalled else 0)
        final = max(signal, by_depth) if state.stalled else signal
        return min(final, head.number)

    # ------------------------------------------------------------------------------------------------ catch-up

    async def _catch_up(self, head: BlockRef, final: int) -> None:
        """One range of final blocks. The next range is fetched while this one commits (the node and the database
        work at the same time); a prefetch made for another watch set or token set is discarded."""
        first = self.cursor + 1
        last = min(final, self.cursor + self.cfg.catchup_range)
        transfers, anchor = await self._take_prefetch(first, last)
        following = (last + 1, min(final, last + self.cfg.catchup_range))
        if following[0] <= following[1]:
            self._start_prefetch(*following)
        # platform transactions are settled once at the head, not on every range of the catch-up hot path
        rows = transfer_rows(transfers, self.wallets.by_address, self.tokens, chain=self.chain,
                             head_number=head.number, final_number=final)
        await self._commit(
            Batch(stream=REALTIME, rows=rows, cursor=last, cursor_hash=anchor.hash, window_reset=anchor,
                  head=head.number, final=final),
            blocks=last - first + 1,
        )
        self.window.reset(anchor)
        self.cursor = last

    async def _fetch_final_range(self, first: int, last: int) -> tuple[list[Transfer], BlockRef]:
        transfers = await self.transfers_of(first, last, self.wallets.addresses)
        anchor = await self.adapter.block_ref(last)
        if anchor is None:
            raise InconsistentBlocks(f"block {last} vanished")
        return await self.with_timestamps(transfers, {}), anchor

    def _prefetch_key(self, first: int, last: int) -> tuple[int, int, frozenset[str], frozenset[str]]:
        return first, last, self.wallets.addresses, self.token_addresses

    def _start_prefetch(self, first: int, last: int) -> None:
        self._drop_prefetch()
        task = asyncio.create_task(self._fetch_final_range(first, last), name=f"prefetch-{self.chain}-{first}")
        self._prefetch = (self._prefetch_key(first, last), task)

    async def _take_prefetch(self, first: int, last: int) -> tuple[list[Transfer], BlockRef]:
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

    async def _follow(self, head: BlockRef, final: int) -> None:
        if self.window.tip is None or self.window.tip.number != self.cursor:
            anchor = await self.adapter.block_ref(self.cursor) if self.cursor >= 0 else None
            self.window = ReorgWindow([anchor] if anchor else [])
        last = min(head.number, self.cursor + self.cfg.follow_batch)
        refs = await self.adapter.block_refs(self.cursor + 1, last) if last > self.cursor else []
        check_linked(refs)
        rollback_to: int | None = None
        if (refs and not isinstance(self.window.check(refs), Extends)) or self._tip_replaced(head):
            rollback_to = await self._common_ancestor()
            depth = self.cursor - rollback_to
            log.warning("reorg", extra={"fields": {"chain": self.chain, "ancestor": rollback_to, "depth": depth}})
            refs = await self.adapter.block_refs(rollback_to + 1, last)
            check_linked(refs)
            if refs and refs[0].parent_hash != self.window.hash_at(rollback_to):
                raise InconsistentBlocks("the chain moved again while rolling back")
        if not refs:
            return
        hashes = {b.number: b.hash for b in refs}
        transfers = await self.transfers_of(refs[0].number, last, self.wallets.addresses)
        for t in transfers:
            if hashes.get(t.block_number) != t.block_hash:
                raise InconsistentBlocks(f"transfer in block {t.block_number} is from another fork")
        transfers = await self.with_timestamps(transfers, {b.number: b.timestamp for b in refs})
        settle = await self._receipts_up_to(last, final, hashes)
        rows = transfer_rows(transfers, self.wallets.by_address, self.tokens, chain=self.chain,
                             head_number=head.number, final_number=final)
        await self._commit(
            Batch(stream=REALTIME, rows=rows, cursor=last, cursor_hash=refs[-1].hash, rollback_to=rollback_to,
                  window_add=refs, prune_below=min(final, last), head=head.number, final=final, settle=settle),
            blocks=len(refs),
        )
        if rollback_to is not None:
            metrics.REORGS.labels(self.chain).inc()
            metrics.REORG_DEPTH.labels(self.chain).observe(self.cursor - rollback_to)
            self.window.rollback(rollback_to)
        self.window.extend(refs)
        self.window.prune(min(final, last))
        self.cursor = last

    def _tip_replaced(self, head: BlockRef) -> bool:
        """The node's head is a block the window holds under another hash: a reorg that kept (or lowered) the
        height. A head merely behind the cursor with a known hash is a lagging node, not a reorg."""
        known = self.window.hash_at(head.number)
        return head.number <= self.cursor and known is not None and known != head.hash

    async def _common_ancestor(self) -> int:
        anchor, tip = self.window.anchor, self.window.tip
        if anchor is None or tip is None:
            raise InconsistentBlocks("no window to compare with")
        canonical = await self.adapter.block_refs(anchor.number, tip.number)
        ancestor = self.window.common_ancestor(canonical)
        if ancestor is None:
            log.critical(
                "reorg deeper than the finality bound: stopping this chain's watcher",
                extra={"fields": {"chain": self.chain, "final_anchor": anchor.number, "tip": tip.number}},
            )
            raise ReorgTooDeep(
                f"{self.chain}: the chain replaced block {anchor.number}, which was final; stored data above it "
                "can no longer be trusted. Investigate the node, then re-index from a known good block"
            )
        return ancestor

    async def _settle_platform_only(self, head: int, final: int) -> None:
        """At the head with no new block: settle platform transactions, and confirm rows when finality moved.
        Nothing to write, no transaction."""
        settle = await self._receipts_up_to(self.cursor, final, {})
        if settle or self._refreshed_at != (head, final):
            await self._commit(Batch(stream=REALTIME, settle=settle, head=head, final=final), blocks=0)

    # ------------------------------------------------------------------------------------------------ helpers

    async def _receipts_up_to(self, last: int, final: int, fresh: dict[int, str]) -> list[TxReceipt]:
        """Receipts of platform transactions mined in blocks this stream has (or is about to have) committed,
        on the fork the window knows."""
        hashes = await self.store.unsettled_platform_hashes()
        if not hashes:
            return []
        found = await self.adapter.receipts(hashes)
        out = []
        for receipt in found.values():
            if receipt.block_number > last:
                continue
            known = fresh.get(receipt.block_number) or self.window.hash_at(receipt.block_number)
            if receipt.block_number <= final or known == receipt.block_hash:
                out.append(receipt)
        return out

    async def transfers_of(self, first: int, last: int, watched: frozenset[str]) -> list[Transfer]:
        """What this chain indexes in blocks ``first..last`` for ``watched``: the configured tokens, and the native
        coin unless ``native_transfers`` is off."""
        return await self.adapter.transfers(first, last, watched, self.token_addresses,
                                            native=self.cfg.native_transfers)

    async def with_timestamps(self, transfers: list[Transfer], known: dict[int, int]) -> list[Transfer]:
        missing = sorted({t.block_number for t in transfers if t.block_timestamp is None} - known.keys())
        if missing:
            sem = asyncio.Semaphore(8)

            async def one(n: int) -> None:
                async with sem:
                    ref = await self.adapter.block_ref(n)
                if ref is not None:
                    known[n] = ref.timestamp

            await asyncio.gather(*(one(n) for n in missing))
        if not known:
            return transfers
        return [t if t.block_timestamp is not None else t._replace(block_timestamp=known.get(t.block_number))
                for t in transfers]

    async def _commit(self, batch: Batch, blocks: int) -> None:
        started = time.perf_counter()
        result = await self.store.commit(batch)
        if batch.cursor is not None and batch.stream == REALTIME:
            self._cursor_committed = True
        if batch.head is not None and batch.final is not None:
            self._refreshed_at = (batch.head, batch.final)
        self.dirty_wallets.update(map(row_wallet_id, batch.rows))
        metrics.COMMIT_DURATION.labels(self.chain).observe(time.perf_counter() - started)
        metrics.TRANSFERS_INDEXED.labels(self.chain, batch.stream).inc(result.rows_written)
        metrics.BLOCKS_PROCESSED.labels(self.chain, batch.stream).inc(blocks)

    # ------------------------------------------------------------------------------------------------ wallets

    async def _refresh_wallets(self, force: bool = False) -> None:
        due = time.monotonic() - self._wallets_loaded_at > self.cfg.wallet_poll_s
        if not (force or due or self.wallet_changed.is_set()):
            return
        self.wallet_changed.clear()
        self._wallets_loaded_at = time.monotonic()
        await self.wallets.reload(self._cursor_committed)

    async def _rescan_for_new_wallets(self) -> None:
        """New wallets' transfers in the unfinalised blocks the follow loop already passed, committed with their
        backfill stream records (whose target is the window's anchor: everything up to it is final).

        Rows are built against every known wallet, so the other side of a transfer between a new and an old wallet
        is rewritten as ``p2p_transfer``."""
        added = set(self.wallets.pending_rescan)
        anchor = self.window.anchor.number if self.window.anchor is not None else self.cursor
        rows = []
        if self.cursor > anchor:
            transfers = await self.transfers_of(anchor + 1, self.cursor, frozenset(added))
            for t in transfers:
                if self.window.hash_at(t.block_number) != t.block_hash:
                    raise InconsistentBlocks("rescan saw another fork; retrying")
            transfers = await self.with_timestamps(transfers, {b.number: b.timestamp for b in self.window.blocks})
            rows = transfer_rows(transfers, self.wallets.by_address, self.tokens, chain=self.chain,
                                 head_number=self.head_number, final_number=self.final_number)
        target = max(anchor, self.cfg.start_block - 1)
        states = [StreamState(self.wallets.stream_name(self.wallets.by_address[a]), self.cfg.start_block - 1, target)
                  for a in added if a in self.wallets.by_address]
        await self.store.commit(Batch(stream=REALTIME, rows=rows, stream_states=states))
        self.wallets.rescan_done(added)
        self.backfill_wakeup.set()
        log.info("wallets added", extra={"fields": {"chain": self.chain, "count": len(added), "backfill_to": target}})


def _consume_outcome(task: asyncio.Task[tuple[list[Transfer], BlockRef]]) -> None:
    """A discarded prefetch's result or error is of no interest; retrieving it keeps asyncio from warning."""
    if not task.cancelled():
        task.exception()


__all__ = ["REALTIME", "ChainWatcher", "WalletRef", "WatcherConfig"]
