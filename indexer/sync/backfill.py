"""Backfills: historical, final blocks indexed for some wallets while the realtime stream keeps the head.

Two kinds of stream, both records in ``sync_cursors`` (done up to ``block_number``, to go up to ``target_block``),
both resumable and idempotent (a replayed range rewrites identical rows), both written by the chain's writer:

- wallet backfills (``wallet:<id>:<address>``): a wallet that joined while running, from ``START_BLOCK`` to the
  block that was final when it joined;
- range backfills (``backfill:<first>-<last>``): ``citadel-indexer backfill`` re-indexes a block range for every
  active wallet (``--wallet``: it re-runs those wallets' own streams over the range instead). The command records
  the job; the chain's writer runs it with a :class:`Backfiller` — the daemon's when one holds the lease (the
  command shows the progress), else the command's own after taking the lease. Either way one writer per chain owns
  every commit.

Backfills only touch final blocks, so a reorg can never interleave with them.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import defaultdict
from dataclasses import dataclass

from indexer import metrics
from indexer.model import Batch, StreamState
from indexer.sync.resilience import run_forever
from indexer.sync.view import ChainView
from indexer.sync.wallets import WALLET_STREAM_PREFIX
from indexer.sync.writer import ChainWriter

log = logging.getLogger("citadel.backfill")

RANGE_STREAM_PREFIX = "backfill:"
_RANGE_RE = re.compile(r"^backfill:(\d+)-(\d+)$")


class BackfillError(Exception):
    pass


def range_stream(first: int, last: int) -> str:
    return f"{RANGE_STREAM_PREFIX}{first}-{last}"


def range_of(stream: str) -> tuple[int, int] | None:
    match = _RANGE_RE.match(stream)
    return (int(match.group(1)), int(match.group(2))) if match else None


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


async def index_range(
    view: ChainView, writer: ChainWriter, first: int, last: int, watched: frozenset[str], states: list[StreamState]
) -> int:
    """Final blocks ``first..last`` for ``watched``, committed with the streams' new records; rows written."""
    transfers = await view.transfers_of(first, last, watched)
    transfers = await view.with_timestamps(transfers, {})
    result = await writer.commit(
        Batch(stream=states[0].stream if states else "backfill", rows=view.rows(transfers, at_least_block=last),
              stream_states=states),
        blocks=last - first + 1,
    )
    return result.rows_written


class Backfiller:
    """Runs the chain's pending backfill streams (wallet and range) beside the realtime loop, one step each in turn."""

    def __init__(self, view: ChainView, writer: ChainWriter) -> None:
        self.view = view
        self.writer = writer
        self.chain = view.chain
        self.range_size = view.cfg.range_size

    async def run(self) -> None:
        await self.view.caught_up.wait()
        await run_forever(self.chain, "backfill", self.advance_all)

    async def advance_all(self) -> float:
        """One step of every pending stream; when none is pending, wait for one to be recorded."""
        states = await self.writer.store.streams(WALLET_STREAM_PREFIX)
        wallet_groups = self._wallet_groups(states)
        ranges = [s for s in await self.writer.store.streams(RANGE_STREAM_PREFIX) if _pending(s)]
        if not wallet_groups and not ranges:
            metrics.WALLET_BACKFILLS_PENDING.labels(self.chain).set(0)
            metrics.WALLET_BACKFILL_REMAINING_BLOCKS.labels(self.chain).set(0)
            self.view.backfill_wakeup.clear()
            try:
                await asyncio.wait_for(self.view.backfill_wakeup.wait(), timeout=5.0)
            except TimeoutError:
                pass
            return 0.0
        left: list[tuple[int, int]] = []  # (streams still pending, blocks left) per group, after this step
        for (done, target), streams in wallet_groups.items():
            last = await self._advance_wallets(done, target, streams)
            left.append((len(streams) if last < target else 0, target - last))
        metrics.WALLET_BACKFILLS_PENDING.labels(self.chain).set(sum(n for n, _ in left))
        metrics.WALLET_BACKFILL_REMAINING_BLOCKS.labels(self.chain).set(max((b for _, b in left), default=0))
        for state in ranges:
            await self._advance_range(state)
        return 0.0

    def _wallet_groups(self, states: list[StreamState]) -> dict[tuple[int, int], list[str]]:
        """Pending wallet streams of watched wallets, grouped by (done, target) so they share their reads."""
        groups: dict[tuple[int, int], list[str]] = defaultdict(list)
        watched = self.view.wallets.by_address
        for state in states:
            if not _pending(state):
                continue
            assert state.block_number is not None and state.target_block is not None
            address = state.stream.split(":", 2)[2]
            if address in watched:  # a wallet deactivated mid-way: its record goes with the next wallet reload
                groups[(state.block_number, state.target_block)].append(state.stream)
        return groups

    async def _advance_wallets(self, done: int, target: int, streams: list[str]) -> int:
        """One step of a group of wallet streams; the block they are done to now."""
        first, last = done + 1, min(target, done + self.range_size)
        addresses = frozenset(s.split(":", 2)[2] for s in streams)
        await index_range(self.view, self.writer, first, last, addresses,
                          [StreamState(name, last, target) for name in streams])
        if last == target:
            log.info("wallet backfill done", extra={"fields": {"chain": self.chain, "wallets": len(streams),
                                                               "to_block": target}})
        return last

    async def _advance_range(self, state: StreamState) -> None:
        assert state.block_number is not None and state.target_block is not None
        target = min(state.target_block, self.view.final_number)
        if state.block_number >= target:
            return  # recorded beyond what is final yet: waits for finality
        first, last = state.block_number + 1, min(target, state.block_number + self.range_size)
        await index_range(self.view, self.writer, first, last, self.view.wallets.addresses,
                          [StreamState(state.stream, last, state.target_block)])
        metrics.BACKFILL_REMAINING_BLOCKS.labels(self.chain, state.stream).set(state.target_block - last)
        if last == state.target_block:
            log.info("backfill done", extra={"fields": {"chain": self.chain, "stream": state.stream}})


def _pending(state: StreamState) -> bool:
    return (state.block_number is not None and state.target_block is not None
            and state.block_number < state.target_block)


def check_range(view: ChainView, first: int, last: int) -> None:
    """Refuse what a backfill may not touch (``view`` has observed the head)."""
    if first > last:
        raise BackfillError(f"--from-block {first} is above --to-block {last}")
    if last > view.final_number:
        raise BackfillError(
            f"--to-block {last} is above the final block {view.final_number} of {view.chain}: unfinalised blocks "
            "belong to the realtime stream (run the daemon)"
        )
