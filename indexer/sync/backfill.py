"""Backfills: historical, final blocks indexed for some wallets while the realtime stream keeps the head.

Two kinds, both resumable from their stream records in ``sync_cursors`` and idempotent (a replayed range rewrites
identical rows):
- wallet backfills (stream ``wallet:<id>:<address>``): a wallet that joined while running, from ``START_BLOCK`` to
  the final block at the time it joined; driven by :class:`WalletBackfiller` inside the daemon;
- range backfills (stream ``backfill:<first>-<last>``): ``citadel-indexer backfill`` re-indexes a block range for
  every active wallet; the range must be final (the realtime stream owns unfinalised blocks).

Backfills only touch final blocks, so a reorg can never interleave with them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass

from indexer import metrics
from indexer.store.chain_store import Batch, StreamState
from indexer.sync.resilience import run_forever
from indexer.sync.rows import TransferRow, transfer_rows
from indexer.sync.wallets import WALLET_STREAM_PREFIX
from indexer.sync.watcher import ChainWatcher

log = logging.getLogger("citadel.backfill")


class BackfillError(Exception):
    pass


@dataclass(frozen=True, slots=True)
class Progress:
    stream: str
    done_to: int
    target: int
    blocks_done: int
    blocks_total: int
    rows_written: int
    elapsed_s: float

    def line(self) -> str:
        pct = 100.0 * self.blocks_done / self.blocks_total if self.blocks_total else 100.0
        rate = self.blocks_done / self.elapsed_s if self.elapsed_s > 0 else 0.0
        return (
            f"{self.stream}: block {self.done_to}/{self.target} ({pct:.1f}%), {self.rows_written} rows, "
            f"{rate:.0f} blocks/s"
        )


async def _range_rows(watcher: ChainWatcher, first: int, last: int, watched: frozenset[str]) -> list[TransferRow]:
    transfers = await watcher.transfers_of(first, last, watched)
    transfers = await watcher.with_timestamps(transfers, {})
    return transfer_rows(
        transfers,
        watcher.wallets.by_address,
        watcher.tokens,
        chain=watcher.chain,
        head_number=max(watcher.head_number, last),
        final_number=max(watcher.final_number, last),
    )


class WalletBackfiller:
    """Fills the history of wallets that joined while the daemon ran. Runs beside the realtime loop."""

    def __init__(self, watcher: ChainWatcher, range_size: int) -> None:
        self.watcher = watcher
        self.range_size = range_size
        self.chain = watcher.chain

    async def run(self) -> None:
        await self.watcher.caught_up.wait()
        await run_forever(self.chain, "wallet backfill", self.advance_all)

    async def advance_all(self) -> float:
        """One range for every group of pending wallet streams; how long to wait when none is pending."""
        groups = await self._pending()
        if not groups:
            self.watcher.backfill_wakeup.clear()
            try:
                await asyncio.wait_for(self.watcher.backfill_wakeup.wait(), timeout=5.0)
            except TimeoutError:
                pass
            return 0.0
        for (done, target), streams in groups.items():
            await self._advance(done, target, streams)
        return 0.0

    async def _pending(self) -> dict[tuple[int, int], dict[str, str]]:
        groups: dict[tuple[int, int], dict[str, str]] = defaultdict(dict)
        watched = self.watcher.wallets.by_address
        for state in await self.watcher.store.streams(WALLET_STREAM_PREFIX):
            if state.block_number is None or state.target_block is None or state.block_number >= state.target_block:
                metrics.BACKFILL_REMAINING_BLOCKS.labels(self.chain, state.stream).set(0)
                continue
            address = state.stream.split(":", 2)[2]
            if address in watched:
                groups[(state.block_number, state.target_block)][state.stream] = address
            else:  # deactivated mid-way: its record goes with the next wallet reload; so does its gauge
                with suppress(KeyError):
                    metrics.BACKFILL_REMAINING_BLOCKS.remove(self.chain, state.stream)
        return groups

    async def _advance(self, done: int, target: int, streams: dict[str, str]) -> None:
        first = done + 1
        last = min(target, done + self.range_size)
        rows = await _range_rows(self.watcher, first, last, frozenset(streams.values()))
        states = [StreamState(name, last, target) for name in streams]
        result = await self.watcher.store.commit(Batch(stream="wallet-backfill", rows=rows, stream_states=states))
        metrics.TRANSFERS_INDEXED.labels(self.chain, "wallet-backfill").inc(result.rows_written)
        metrics.BLOCKS_PROCESSED.labels(self.chain, "wallet-backfill").inc(last - first + 1)
        for name in streams:
            metrics.BACKFILL_REMAINING_BLOCKS.labels(self.chain, name).set(target - last)
        if last == target:
            log.info("wallet backfill done", extra={"fields": {"chain": self.chain, "wallets": len(streams),
                                                               "to_block": target}})


async def backfill_blocks(
    watcher: ChainWatcher,
    first: int,
    last: int,
    range_size: int,
    report: Callable[[Progress], None],
) -> Progress:
    """Re-index final blocks ``first..last`` for every active wallet, resuming where an earlier run stopped."""
    if first > last:
        raise BackfillError(f"--from-block {first} is above --to-block {last}")
    head = await watcher.adapter.head()
    final = await watcher.final_number_for(head)
    watcher.head_number, watcher.final_number = head.number, final
    if last > final:
        raise BackfillError(
            f"--to-block {last} is above the final block {final} of {watcher.chain}: unfinalised blocks belong to "
            "the realtime stream (run the daemon)"
        )
    stream = f"backfill:{first}-{last}"
    done = await watcher.store.cursor(stream)
    cursor = first - 1 if done is None else done
    if cursor >= first:
        log.info("resuming", extra={"fields": {"stream": stream, "from_block": cursor + 1}})
    started = time.monotonic()
    rows_written = 0
    total = last - first + 1
    progress = Progress(stream, cursor, last, cursor - first + 1, total, 0, 0.0)
    while cursor < last:
        step_last = min(last, cursor + range_size)
        rows = await _range_rows(watcher, cursor + 1, step_last, watcher.wallets.addresses)
        result = await watcher.store.commit(Batch(stream=stream, rows=rows, cursor=step_last))
        rows_written += result.rows_written
        cursor = step_last
        metrics.BACKFILL_REMAINING_BLOCKS.labels(watcher.chain, stream).set(last - cursor)
        progress = Progress(stream, cursor, last, cursor - first + 1, total, rows_written,
                            time.monotonic() - started)
        report(progress)
    return progress
