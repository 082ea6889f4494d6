"""What one chain's loops share: the adapter, the tokens, the wallet set, and the chain's head and final block.

The realtime watcher, the backfills and the balance refresher each take a :class:`ChainView` (what the chain looks
like) and the chain's :class:`indexer.sync.writer.ChainWriter` (the only way to change the database); none of them
reaches into another's state.

Finality (:meth:`ChainView.observe_head`): the node's signal (finalized tag, solidified block) where it has one,
never moving backwards (a node behind a load balancer may report an older one), never above the head; the
configured depth (``CONFIRMATIONS``) where the node has none. A signal that has not moved for ``finality_stall_s``
while the head advances is reported (``citadel_chain_finalized_stalled``, error log) and **not** replaced by depth:
rows stay ``pending`` rather than being confirmed by a rule the chain did not vouch for. A custody platform pays out
confirmed rows.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from decimal import Decimal

from chains.base import BlockNotAvailable, BlockRef, ChainAdapter, ChainData, EscrowEvent, Transfer
from indexer import metrics
from indexer.model import TokenMeta, TransferRow, transfer_rows
from indexer.sync.wallets import WalletSet
from indexer.sync.writer import ChainWriter

log = logging.getLogger("citadel.chain")


@dataclass(frozen=True, slots=True)
class WatcherConfig:
    start_block: int | str  # a block number, or "final" (CITADEL_<CHAIN>__START_BLOCK)
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
    degraded_after_s: float = 60.0  # failing this long: the chain reports itself degraded
    platform_tx_max_age_s: float = 6 * 3600.0  # unmined platform transactions are 'dropped' after this long
    range_size: int = 2000  # blocks per backfill step (CITADEL_<CHAIN>__MAX_BLOCK_RANGE)
    escrow_contract: str | None = None  # CITADEL_<CHAIN>__ESCROW_CONTRACT, as configured
    wallet_history_from: int | str = "start"  # a block number, "start" or "none" (CITADEL_<CHAIN>__WALLET_HISTORY_FROM)


@dataclass(slots=True)
class _Finality:
    last_value: int | None = None
    changed_at: float = field(default_factory=time.monotonic)
    stalled: bool = False


class ChainView:
    def __init__(self, adapter: ChainAdapter, writer: ChainWriter, cfg: WatcherConfig) -> None:
        self.adapter = adapter
        self.cfg = cfg
        self.chain = adapter.chain.value
        # the first block of the realtime stream, once known (START_BLOCK, or the final block at the first start)
        self.start_block: int | None = cfg.start_block if isinstance(cfg.start_block, int) else None
        self.wallets = WalletSet(adapter, writer, self.history_from)
        self.tokens: dict[str | None, TokenMeta] = {}
        self.token_addresses: frozenset[str] = frozenset()
        self.escrow = adapter.normalise_address(cfg.escrow_contract) if cfg.escrow_contract else None
        self.head_number = -1
        self.final_number = -1
        self._finality = _Finality()
        self.caught_up = asyncio.Event()  # the realtime stream reached the head once
        self.backfill_wakeup = asyncio.Event()  # a backfill stream was recorded

    def history_from(self) -> int | None:
        """The first block of a late wallet's history; None: no history before it joined."""
        setting = self.cfg.wallet_history_from
        if setting == "none":
            return None
        if isinstance(setting, int):
            return setting
        return self.start_block if self.start_block is not None else 0

    async def load_tokens(self, writer: ChainWriter) -> None:
        """Token metadata read on-chain (decimals) and recorded in ``tokens``. The native coin is always described:
        its cached balance is refreshed even when its transfers are not indexed."""
        self.tokens = {None: TokenMeta(None, self.adapter.native_symbol, self.adapter.native_decimals, None)}
        records = []
        for symbol, configured in self.cfg.tokens.items():
            address = self.adapter.normalise_address(configured)
            info = await self.adapter.token_info(address)
            price = self.cfg.stablecoin_usd_price if symbol.upper() in self.cfg.stablecoins else None
            self.tokens[address] = TokenMeta(address, symbol, info.decimals, price)
            records.append((address, info.symbol, info.decimals))
            log.info("token", extra={"fields": {"chain": self.chain, "symbol": symbol, "decimals": info.decimals}})
        await writer.upsert_tokens(records)
        self.token_addresses = frozenset(a for a in self.tokens if a is not None)

    async def observe_head(self) -> BlockRef:
        """The node's head; updates ``head_number`` and ``final_number`` (see the module docstring)."""
        head = await self.adapter.head()
        by_depth = head.number - self.cfg.confirmations + 1
        signal = await self.adapter.finalized_number()
        if signal is None:
            final = max(by_depth, -1)
        else:
            final = self._track_signal(signal, head.number)
        # finality never moves back (a node behind the others reports an older one), nor above this head
        final = max(min(final, head.number), self.final_number)
        self.head_number, self.final_number = max(head.number, final), final
        metrics.HEAD_BLOCK.labels(self.chain).set(self.head_number)
        metrics.FINALIZED_BLOCK.labels(self.chain).set(final)
        return head

    def _track_signal(self, signal: int, head: int) -> int:
        state = self._finality
        now = time.monotonic()
        if state.last_value is None or signal > state.last_value:
            if state.stalled:
                log.info("finality signal moving again", extra={"fields": {"chain": self.chain, "final": signal}})
            state.last_value, state.changed_at, state.stalled = signal, now, False
        elif not state.stalled and now - state.changed_at > self.cfg.finality_stall_s and head > state.last_value:
            state.stalled = True
            log.error(
                "finality signal stalled: rows stay pending until it moves",
                extra={"fields": {"chain": self.chain, "final": state.last_value, "head": head,
                                  "stalled_s": round(now - state.changed_at)}},
            )
        metrics.FINALIZED_STALLED.labels(self.chain).set(1 if state.stalled else 0)
        return state.last_value

    # ------------------------------------------------------------------------------------------------ reading

    async def read_range(self, first: int, last: int, watched: frozenset[str], *,
                         escrow: bool = True) -> ChainData:
        """What this chain indexes in final blocks ``first..last`` for ``watched``: the configured tokens, the native
        coin unless ``native_transfers`` is off, and the escrow contract's events when one is configured (and
        ``escrow``); every event carries its block's time."""
        data = await self.adapter.read_range(first, last, watched, self.token_addresses,
                                             native=self.cfg.native_transfers,
                                             escrow=self.escrow if escrow else None)
        return ChainData(data.transfers, await self._escrow_times(data.escrow, {}))

    async def read_blocks(self, blocks: list[BlockRef], watched: frozenset[str], *,
                          escrow: bool = True) -> ChainData:
        """The same for exactly ``blocks``, by hash (the realtime path)."""
        data = await self.adapter.read_blocks(blocks, watched, self.token_addresses,
                                              native=self.cfg.native_transfers,
                                              escrow=self.escrow if escrow else None)
        times = {b.number: b.timestamp for b in blocks}
        return ChainData(data.transfers, await self._escrow_times(data.escrow, times))

    async def transfers_of(self, first: int, last: int, watched: frozenset[str]) -> list[Transfer]:
        """Transfers only (backfills: escrow events belong to the realtime stream)."""
        return (await self.read_range(first, last, watched, escrow=False)).transfers

    async def _escrow_times(self, events: list[EscrowEvent], known: dict[int, int]) -> list[EscrowEvent]:
        missing = sorted({e.block_number for e in events if e.block_timestamp is None} - known.keys())
        for n in missing:
            ref = await self.adapter.block_ref(n)
            if ref is None:
                raise BlockNotAvailable(f"{self.chain}: block {n} is not available on the node")
            known[n] = ref.timestamp
        return [e if e.block_timestamp is not None else e._replace(block_timestamp=known[e.block_number])
                for e in events]

    async def with_timestamps(self, transfers: list[Transfer], known: dict[int, int]) -> list[Transfer]:
        """Every transfer with its block's time; blocks not in ``known`` are read from the node (a node that does
        not have one is a retryable fault, never a row without a time)."""
        missing = sorted({t.block_number for t in transfers if t.block_timestamp is None} - known.keys())
        if missing:
            sem = asyncio.Semaphore(8)

            async def one(n: int) -> None:
                async with sem:
                    ref = await self.adapter.block_ref(n)
                if ref is None:
                    raise BlockNotAvailable(f"{self.chain}: block {n} is not available on the node")
                known[n] = ref.timestamp

            async with asyncio.TaskGroup() as group:
                for n in missing:
                    group.create_task(one(n))
        if not known:
            return transfers
        return [t if t.block_timestamp is not None else t._replace(block_timestamp=known.get(t.block_number))
                for t in transfers]

    def rows(self, transfers: list[Transfer], *, at_least_block: int = -1) -> list[TransferRow]:
        """Rows of ``transfers`` for the current wallets; ``at_least_block`` is a block known final (a backfill's
        range), in case the head and final numbers were not observed yet."""
        return transfer_rows(transfers, self.wallets.by_address, self.tokens, chain=self.chain,
                             head_number=max(self.head_number, at_least_block),
                             final_number=max(self.final_number, at_least_block))
