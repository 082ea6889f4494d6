"""The indexer's own value types, shared by the sync core and the store (neither owns them): the ``transactions``
row model and how transfers map onto it, and what one commit carries (:class:`Batch`). Pure, no I/O.

Rows (docs/data-model.md): one row per (transfer, known wallet side); incoming → ``deposit``, outgoing →
``withdrawal``, both sides known → ``p2p_transfer`` on each side's row; a transfer from a wallet to itself is one
row. Amounts are scaled exactly.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Context, Decimal
from typing import Final

from chains.base import BlockRef, EscrowEvent, Transfer, TxReceipt

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


# ---------------------------------------------------------------------------------------------------- commits


@dataclass(frozen=True, slots=True)
class WalletRecord:
    """A row of ``wallets`` as the store reads it (the address as stored, not yet validated)."""

    id: int
    user_id: int
    public_address: str
    updated_at: datetime | None


@dataclass(frozen=True, slots=True)
class StreamState:
    """A backfill stream's record in ``sync_cursors``: done up to ``block_number``, to go up to ``target_block``."""

    stream: str
    block_number: int | None
    target_block: int | None


@dataclass(slots=True)
class Batch:
    """Everything one step of a stream commits together, in one transaction."""

    stream: str
    rows: Sequence[TransferRow] = ()
    cursor: int | None = None  # the stream's new cursor; None leaves it
    cursor_hash: str | None = None
    rollback_to: int | None = None  # drop everything above this block first (a reorg)
    window_add: Sequence[BlockRef] = ()
    window_reset: BlockRef | None = None  # replace the whole window by this final block
    prune_below: int | None = None
    head: int | None = None  # refresh confirmations / finality of pending rows
    final: int | None = None
    settle: Sequence[TxReceipt] = ()
    stream_states: Sequence[StreamState] = field(default_factory=list)
    drop_streams: Sequence[str] = ()
    # platform transactions still unmined this many seconds after they were recorded are marked 'dropped'
    drop_platform_older_than_s: float | None = None
    # the wallet_set_version the rows were built for (set by the writer); a newer one refuses the batch
    wallet_version: int | None = None
    escrow: Sequence[EscrowEvent] = ()  # the escrow contract's events in the batch's blocks

    def is_empty(self) -> bool:
        return not (
            self.rows or self.cursor is not None or self.rollback_to is not None or self.window_add
            or self.window_reset is not None or self.prune_below is not None or self.head is not None
            or self.settle or self.stream_states or self.drop_streams or self.escrow
            or self.drop_platform_older_than_s is not None
        )


@dataclass(frozen=True, slots=True)
class CommitResult:
    rows_written: int
    rows_rolled_back: int
    platform_dropped: int = 0
    escrow_applied: int = 0
    escrow_rejected: int = 0
    escrow_orphaned: int = 0
    alerts_raised: dict[str, int] = field(default_factory=dict)  # per Guardian rule
    alerts_expired: int = 0


class WalletsChanged(Exception):
    """The wallets a batch was built for changed before it committed (re-owned, deleted, re-addressed while the
    batch was read): the batch was not written. Reload the wallets, rebuild the batch and commit again."""


class WriterFenced(Exception):
    """This replica is no longer the chain's writer (its epoch is not the current one, or its lock session no
    longer holds the writer lock): the write was refused inside its transaction and nothing of it was committed."""
