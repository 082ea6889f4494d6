"""The known wallets of one chain, as the watcher follows them.

Each wallet the realtime stream follows has a stream record ``wallet:<id>:<address>`` in ``sync_cursors`` whose
``target_block`` is the last block its history must be backfilled to and whose ``block_number`` is how far that
backfill got. A wallet without a record is new to the watcher (inserted, reactivated or readdressed, maybe while
the daemon was down): it is watched at once and its history is filled in. Records of wallets no longer active are
dropped, so a reactivated wallet is backfilled again (idempotently).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from chains.base import ChainAdapter
from indexer import metrics
from indexer.model import Batch, StreamState, WalletRef

if TYPE_CHECKING:
    from indexer.sync.writer import ChainWriter

log = logging.getLogger("citadel.wallets")

WALLET_STREAM_PREFIX = "wallet:"


class WalletSet:
    def __init__(self, adapter: ChainAdapter, writer: ChainWriter, history_from: Callable[[], int | None]) -> None:
        self.adapter = adapter
        self.writer = writer
        self.store = writer.store
        self.chain = adapter.chain.value
        self.history_from = history_from  # where a late wallet's history starts (None: no history)
        self.by_address: dict[str, WalletRef] = {}
        self.addresses: frozenset[str] = frozenset()
        self.pending_rescan: set[str] = set()
        self._reported_invalid: set[tuple[int, str]] = set()

    @staticmethod
    def stream_name(wallet: WalletRef) -> str:
        return f"{WALLET_STREAM_PREFIX}{wallet.id}:{wallet.address}"

    async def reload(self, realtime_started: bool) -> None:
        self.writer.wallets_stale.clear()
        version = await self.store.wallet_set_version()  # before the wallets: a change in between errs safe
        records = await self.store.active_wallets()
        fresh: dict[str, WalletRef] = {}
        invalid = 0
        for rec in records:
            try:
                address = self.adapter.normalise_address(rec.public_address)
            except ValueError as exc:
                invalid += 1
                if (rec.id, rec.public_address) not in self._reported_invalid:
                    self._reported_invalid.add((rec.id, rec.public_address))
                    log.error(
                        "invalid wallet address skipped",
                        extra={"fields": {"chain": self.chain, "wallet_id": rec.id, "reason": str(exc)}},
                    )
                continue
            fresh[address] = WalletRef(rec.id, rec.user_id, address)
        metrics.WALLETS_INVALID.labels(self.chain).set(invalid)
        metrics.WALLETS_WATCHED.labels(self.chain).set(len(fresh))

        streams = {s.stream for s in await self.store.streams(WALLET_STREAM_PREFIX)}
        names = {self.stream_name(w): a for a, w in fresh.items()}
        stale = sorted(streams - names.keys())
        missing = [a for name, a in names.items() if name not in streams]
        covered: list[StreamState] = []
        if not realtime_started:
            # the first catch-up starts at START_BLOCK with every wallet: nothing to backfill for them
            covered = [StreamState(self.stream_name(fresh[a]), -1, -1) for a in missing]
            missing = []
        if stale or covered:
            await self.writer.commit(Batch(stream="wallets", stream_states=covered, drop_streams=stale))
        self.pending_rescan = {a for a in self.pending_rescan if a in fresh} | set(missing)
        self.by_address = fresh
        self.addresses = frozenset(fresh)
        self.writer.wallet_version = version

    def rescan_done(self, added: set[str]) -> None:
        self.pending_rescan -= added
