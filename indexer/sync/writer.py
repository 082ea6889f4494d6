"""One writer per chain: the only way a chain's loops change the database, and what follows every change.

The realtime watcher, the new-wallet rescan, the wallet and range backfills, the wallet set's stream records, the
token registry and the balance refresher all write through the chain's :class:`ChainWriter`. So whatever holds for
the writer holds for every path by construction:

- **fenced**: every write runs in a transaction that first checks the replica still holds the chain's writer lease
  (:mod:`indexer.store.lease`); a replica that lost it gets ``WriterFenced`` and its chain task stands by again;
- **wallet changes** under a batch (a wallet re-owned, deleted or re-addressed between reading the wallets and
  committing) come back as ``WalletsChanged`` with nothing written: the wallet set is marked stale, so the caller's
  retry reloads it and rebuilds the batch from what the chain says. Rows carry the wallet set version they were
  built for; the store refuses them under a newer one;
- **after each commit**: the realtime cursor, the wallets whose cached balance a new transfer changed, metrics.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from decimal import Decimal

from indexer import metrics
from indexer.model import Batch, CommitResult, WalletsChanged, row_wallet_id
from indexer.store.chain_store import ChainStore

REALTIME = "realtime"


def stream_kind(stream: str) -> str:
    """A metric label for a stream: bounded (``wallet:<id>:<address>`` and ``backfill:<a>-<b>`` are one kind each)."""
    return stream.split(":", 1)[0] if ":" in stream else stream


class ChainWriter:
    def __init__(self, store: ChainStore) -> None:
        self.store = store
        self.chain = store.chain
        self.cursor: int | None = None  # the realtime stream's committed cursor, once known
        self.dirty_wallets: set[int] = set()  # wallet ids whose cached balance a new transfer changed
        self.wallets_stale = asyncio.Event()  # set when a commit found the wallets changed under it
        self.refreshed_at: tuple[int, int] | None = None  # (head, final) of the last confirmation refresh
        self.wallet_version: int | None = None  # wallet_set_version when the wallets were last read

    async def commit(self, batch: Batch, *, blocks: int = 0) -> CommitResult:
        started = time.perf_counter()
        if batch.rows:
            batch.wallet_version = self.wallet_version
        try:
            result = await self.store.commit(batch)
        except WalletsChanged:
            self.wallets_stale.set()
            raise
        kind = stream_kind(batch.stream)
        if batch.stream == REALTIME and batch.cursor is not None:
            self.cursor = batch.cursor
            metrics.CURSOR_BLOCK.labels(self.chain, REALTIME).set(batch.cursor)
        if batch.head is not None and batch.final is not None:
            self.refreshed_at = (batch.head, batch.final)
        self.dirty_wallets.update(map(row_wallet_id, batch.rows))
        metrics.COMMIT_DURATION.labels(self.chain).observe(time.perf_counter() - started)
        if batch.rows or blocks:
            metrics.TRANSFERS_INDEXED.labels(self.chain, kind).inc(result.rows_written)
            metrics.BLOCKS_PROCESSED.labels(self.chain, kind).inc(blocks)
        if result.platform_dropped:
            metrics.PLATFORM_TX_DROPPED.labels(self.chain).inc(result.platform_dropped)
        for outcome, count in (("applied", result.escrow_applied), ("rejected", result.escrow_rejected),
                               ("orphaned", result.escrow_orphaned)):
            if count:
                metrics.ESCROW_EVENTS.labels(self.chain, outcome).inc(count)
        for rule, count in result.alerts_raised.items():
            metrics.GUARDIAN_ALERTS.labels(self.chain, rule).inc(count)
        if result.alerts_expired:
            metrics.GUARDIAN_ALERTS_EXPIRED.labels(self.chain).inc(result.alerts_expired)
        return result

    async def upsert_tokens(self, tokens: Sequence[tuple[str, str, int]]) -> None:
        await self.store.upsert_tokens(tokens)

    async def write_balances(self, updates: Sequence[tuple[int, dict[str, Decimal]]]) -> None:
        await self.store.write_balances(updates)
        metrics.BALANCE_REFRESHES.labels(self.chain).inc(len(updates))

    def take_dirty_wallets(self) -> set[int]:
        dirty, self.dirty_wallets = self.dirty_wallets, set()
        return dirty
