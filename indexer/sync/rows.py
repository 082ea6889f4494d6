"""From chain transfers to ``transactions`` rows: one row per (transfer, known wallet side). Pure, no I/O.

See docs/data-model.md for the model: incoming → ``deposit``, outgoing → ``withdrawal``, both sides known →
``p2p_transfer`` on each side's row; a transfer from a wallet to itself is one row. Amounts are scaled exactly.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Context, Decimal

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


# The column order of TransferRow, shared with the store's staging table.
ROW_COLUMNS: tuple[str, ...] = (
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


def row_block_number(row: TransferRow) -> int:
    return row[18]  # ROW_COLUMNS.index("block_number"), checked by a test


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
    head_number: int,
    final_number: int,
) -> list[TransferRow]:
    """Rows for every side of every transfer that touches a wallet in ``wallets`` (keyed by normalised address).
    Transfers of tokens missing from ``tokens`` are ignored (they should not have been fetched)."""
    rows: list[TransferRow] = []
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
        when = datetime.fromtimestamp(t.block_timestamp, UTC) if t.block_timestamp is not None else None
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
