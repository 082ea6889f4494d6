"""Refreshing the cached balances in ``wallets`` (``balance_native``, ``balance_usdt``, ``balance_usdc``,
``balance_tst``, ``balance_usd``, ``last_balance_sync``).

The chain is the source of truth; the columns are a cache. A wallet is refreshed soon after a transfer touches it
(the watcher marks it dirty) and every ``full_refresh_s`` in any case (the seed's five-minute cadence). Balances are
read at the node's latest block and scaled exactly with the token's on-chain decimals; ``balance_usd`` is the sum
of the priced tokens (stablecoins); the native coin has no price yet and is left out of it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from decimal import Decimal

from chains.base import ChainError
from indexer.model import TokenMeta, WalletRef, scale, usd_value
from indexer.sync.resilience import run_forever
from indexer.sync.view import ChainView
from indexer.sync.writer import ChainWriter

log = logging.getLogger("citadel.balances")

# token symbol (as configured) -> wallets column
BALANCE_COLUMNS = {"USDT": "balance_usdt", "USDC": "balance_usdc", "TST": "balance_tst"}


def balance_values(
    wallet: WalletRef, raw: dict[tuple[str, str | None], int], tokens: dict[str | None, TokenMeta]
) -> dict[str, Decimal] | None:
    """Column values for one wallet, or None when the node did not answer for all of them."""
    values: dict[str, Decimal] = {}
    usd = Decimal(0)
    for address, token in tokens.items():
        amount_raw = raw.get((wallet.address, address))
        if amount_raw is None:
            return None
        amount = scale(amount_raw, token.decimals)
        if address is None:
            values["balance_native"] = amount
        elif token.symbol.upper() in BALANCE_COLUMNS:
            values[BALANCE_COLUMNS[token.symbol.upper()]] = amount
        priced = usd_value(amount, token.usd_price) if address is not None else None
        if priced is not None:
            usd += priced
    values["balance_usd"] = usd
    return values


class BalanceRefresher:
    def __init__(self, view: ChainView, writer: ChainWriter, *, every_s: float = 5.0,
                 full_refresh_s: float = 300.0, batch: int = 200) -> None:
        self.view = view
        self.writer = writer
        self.every_s = every_s
        self.full_refresh_s = full_refresh_s
        self.batch = batch
        self._last_full = 0.0

    async def run(self) -> None:
        await self.view.caught_up.wait()

        async def once() -> float:
            await self.refresh_once()
            return self.every_s

        await run_forever(self.view.chain, "balance refresh", once)

    async def refresh_once(self) -> int:
        """One pass; returns how many wallets were written."""
        wallets = self.view.wallets.by_address
        if time.monotonic() - self._last_full > self.full_refresh_s:
            targets = list(wallets.values())
            self._last_full = time.monotonic()
            self.writer.take_dirty_wallets()
        else:
            dirty = self.writer.take_dirty_wallets()
            targets = [w for w in wallets.values() if w.id in dirty]
        written = 0
        for i in range(0, len(targets), self.batch):
            written += await self._refresh(targets[i : i + self.batch])
        return written

    async def _refresh(self, wallets: Iterable[WalletRef]) -> int:
        wallets = list(wallets)
        tokens = self.view.tokens
        try:
            raw = await self.view.adapter.balances(
                [w.address for w in wallets], [a for a in tokens if a is not None]
            )
        except ChainError as exc:
            log.warning("balance refresh failed", extra={"fields": {"chain": self.view.chain,
                                                                     "error": f"{type(exc).__name__}: {exc}"}})
            self.writer.dirty_wallets.update(w.id for w in wallets)
            return 0
        updates = []
        for wallet in wallets:
            values = balance_values(wallet, raw, tokens)
            if values is None:
                self.writer.dirty_wallets.add(wallet.id)
                continue
            updates.append((wallet.id, values))
        await self.writer.write_balances(updates)
        return len(updates)
