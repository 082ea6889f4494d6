"""From chain transfers to ``transactions`` rows: one row per (transfer, known wallet side). Pure, no I/O.

See docs/data-model.md for the model: incoming → ``deposit``, outgoing → ``withdrawal``, both sides known →
``p2p_transfer`` on each side's row; a transfer from a wallet to itself is one row. Amounts are scaled exactly.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Context, Decimal
from typing import Final

from chains.base import Transfer

# uint256 has 78 digits; scaling and pricing never round with this precision
_EXACT = Context(prec=200)
_CENT = Decimal("0.01")


@dataclass(frozen=True, slots=True)
class WalletRef:
    id: int
    user_id: int
    address: str  # normalised


@dataclass(frozen=True, slots=True)
class TokenMeta:
    """A token as the rows describe it; ``address`` None is the native coin."""

    address: str | None
    symbol: str
    decimals: int
    usd_price: Decimal | None = None


# The column order of TransferRow, shared with the store's staging table. A row is complete as built (chain and
# source included), so the store COPYs the tuples as they are, without rebuilding tens of thousands of them.
ROW_COLUMNS: tuple[str, ...] = (
    "chain",
    "source",
    "user_id",
    "wallet_id",
    "tx_hash",
    "log_index",
    "from_address",
    "to_address",
    "amount",
    "amount_raw",
    "token",
    "token_address",
    "token_decimals",
    "value_usd",
    "status",
    "confirmations",
    "tx_index",
    "tx_type",
    "gas_used",
    "gas_price",
    "block_number",
    "block_hash",
    "block_timestamp",
)

TransferRow = tuple[
    str,
    str,
    int,
    int,
    str,
    int,
    str,
    str,
    Decimal,
    Decimal,
    str,
    str | None,
    int,
    Decimal | None,
    str,
    int,
    int,
    str,
    Decimal | None,
    Decimal | None,
    int,
    str,
    datetime | None,
]


INDEXER_SOURCE = "indexer"  # transactions.source of the rows the indexer writes

# positions in ROW_COLUMNS, as literals so the type checker knows each element's type (a test checks them)
WALLET_ID_AT: Final = 3
TX_HASH_AT: Final = 4
LOG_INDEX_AT: Final = 5
BLOCK_NUMBER_AT: Final = 20


def row_block_number(row: TransferRow) -> int:
    return row[BLOCK_NUMBER_AT]


def row_wallet_id(row: TransferRow) -> int:
    return row[WALLET_ID_AT]


def row_key(row: TransferRow) -> tuple[str, int, int]:
    """The natural key within one chain: (tx_hash, log_index, wallet_id)."""
    return row[TX_HASH_AT], row[LOG_INDEX_AT], row[WALLET_ID_AT]


def scale(amount_raw: int, decimals: int) -> Decimal:
    """``amount_raw / 10**decimals`` exactly (no float, no context rounding)."""
    return _EXACT.scaleb(Decimal(amount_raw), -decimals)


def usd_value(amount: Decimal, price: Decimal | None) -> Decimal | None:
    if price is None:
        return None
    return _EXACT.multiply(amount, price).quantize(_CENT, context=_EXACT)


def status_for(transfer: Transfer, final_number: int) -> str:
    if not transfer.success:
        return "failed"
    return "confirmed" if transfer.block_number <= final_number else "pending"


def transfer_rows(
    transfers: Iterable[Transfer],
    wallets: Mapping[str, WalletRef],
    tokens: Mapping[str | None, TokenMeta],
    *,
    chain: str,
    head_number: int,
    final_number: int,
) -> list[TransferRow]:
    """Rows of ``chain`` for every side of every transfer that touches a wallet in ``wallets`` (keyed by normalised
    address). Transfers of tokens missing from ``tokens`` are ignored (they should not have been fetched)."""
    rows: list[TransferRow] = []
    times: dict[int, datetime] = {}  # a block's transfers share its timestamp
    for t in transfers:
        token = tokens.get(t.token_address)
        if token is None:
            continue
        sender = wallets.get(t.from_address)
        receiver = wallets.get(t.to_address)
        if sender is None and receiver is None:
            continue
        both = sender is not None and receiver is not None
        amount = scale(t.amount_raw, token.decimals)
        value = usd_value(amount, token.usd_price)
        status = status_for(t, final_number)
        confirmations = max(head_number - t.block_number + 1, 0)
        when = None
        if t.block_timestamp is not None:
            when = times.get(t.block_timestamp)
            if when is None:
                when = times[t.block_timestamp] = datetime.fromtimestamp(t.block_timestamp, UTC)
        gas_used = Decimal(t.gas_used) if t.gas_used is not None else None
        gas_price = Decimal(t.gas_price) if t.gas_price is not None else None
        sides: list[tuple[WalletRef, str]] = []
        if sender is not None:
            sides.append((sender, "p2p_transfer" if both else "withdrawal"))
        if receiver is not None and receiver is not sender:
            sides.append((receiver, "p2p_transfer" if both else "deposit"))
        for wallet, tx_type in sides:
            rows.append(
                (
                    chain,
                    INDEXER_SOURCE,
                    wallet.user_id,
                    wallet.id,
                    t.tx_hash,
                    t.log_index,
                    t.from_address,
                    t.to_address,
                    amount,
                    Decimal(t.amount_raw),
                    token.symbol,
                    token.address,
                    token.decimals,
                    value,
                    status,
                    confirmations,
                    t.tx_index,
                    tx_type,
                    gas_used,
                    gas_price,
                    t.block_number,
                    t.block_hash,
                    when,
                )
            )
    return rows
