"""The contract between the chain-agnostic core (``indexer``) and the per-chain adapters (``chains.evm``,
``chains.tron``).

Adapters translate a node's wire format into the frozen value types below and translate every library or
transport error into the error tree below, at their edge (``raise ... from exc``). The core never sees web3,
tronpy, aiohttp or JSON.

Error tree::

    ChainError                      anything an adapter raises
    ├── RetryableChainError         transient, or a fault of the endpoint that answered: the core backs off and
    │   │                           retries (for ever, reporting the chain degraded after a while)
    │   ├── RateLimited             429 / rate-limit bodies / "lack of computing resources"; ``retry_after_s``
    │   ├── RangeTooLarge           the provider refused a log range; ``suggested_to`` when it proposed one
    │   ├── MalformedResponse       a response without the documented shape (truncated or oversized body, invalid
    │   │                           JSON, missing fields), or one an adapter's validation rejected
    │   └── BlockNotAvailable       the answering node lacks a block it was asked about (behind the others)
    ├── CallReverted                a contract call reverted: the answer about the request itself, which every
    │                               endpoint would give alike; not retried, and no fault of the endpoint
    └── FatalChainError             retrying will not help, found by an adapter's own checks: the node serves
        │                           another chain, a configured token is not a token, a reorg past finality
        ├── ChainIdMismatch
        └── ReorgTooDeep            the chain replaced a block the indexer had as final

Nothing an endpoint answers is fatal: HTTP errors with any body (a banned key's 403 page, a 404, a 5xx), unknown
node errors, oversized or invalid bodies all make the clients (:mod:`chains.transport`) cool that endpoint down and
ask the next one; when every attempt failed they raise a ``RetryableChainError``. ``FatalChainError`` is left to the
adapters' semantic checks.

Every message is free of secrets: RPC URLs are shown through :func:`chains.redact.redact_url`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple, Protocol


class Chain(StrEnum):
    """The value stored in the ``chain`` columns."""

    BSC = "bsc"
    POLYGON = "polygon"
    TRON = "tron"


# ---------------------------------------------------------------------------------------------------- errors


class ChainError(Exception):
    """Base of everything an adapter raises."""


class RetryableChainError(ChainError):
    """A transient failure: the same request may succeed later or on another endpoint."""


class RateLimited(RetryableChainError):
    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class RangeTooLarge(RetryableChainError):
    """The provider refused a block range for logs. ``suggested_to`` is the last block of a range it offered."""

    def __init__(self, message: str, suggested_to: int | None = None) -> None:
        super().__init__(message)
        self.suggested_to = suggested_to


class MalformedResponse(RetryableChainError):
    """A response without the documented shape (truncated or oversized body, invalid JSON, missing fields, wrong
    types), or values an adapter's validation rejected (a log index of 2^70): a fault of the endpoint."""


class BlockNotAvailable(RetryableChainError):
    """The node that answered does not have (yet) a block it was asked about: typically one node of several behind a
    load balancer, a few blocks behind the others. Never to be read as "nothing happened in that block"."""


class CallReverted(ChainError):
    """A contract call (``eth_call``, Tron ``triggerconstantcontract``) reverted or failed in the contract: an answer
    about the request that every endpoint would give alike, so neither retried nor a fault of the endpoint. Neither
    retryable nor fatal: the caller decides (a balance left out, a configured token refused). ``data`` is what the
    node gave with it (revert data, a message), when anything."""

    def __init__(self, message: str, *, data: object = None) -> None:
        super().__init__(message)
        self.data = data


class FatalChainError(ChainError):
    """Retrying will not help; the chain's watcher stops with this message. Raised only by adapters' semantic
    checks, never for what a transport or an endpoint did."""


class ChainIdMismatch(FatalChainError):
    pass


class ReorgTooDeep(FatalChainError):
    """A reorg reached below the finality bound: the stored data can no longer be trusted."""


# ---------------------------------------------------------------------------------------------------- values


NATIVE_LOG_INDEX = -1
"""``log_index`` of a top-level native coin transfer (a transaction's ``value``), which has no log."""


@dataclass(frozen=True, slots=True)
class BlockRef:
    """A block as the reorg window sees it. Invariant kept by the window: each stored block's ``parent_hash`` is
    the ``hash`` of the stored block one below it."""

    number: int
    hash: str
    parent_hash: str
    timestamp: int  # seconds since the epoch, UTC


class Transfer(NamedTuple):
    """One movement of value between two addresses, as found on chain.

    ``token_address`` is ``None`` for the chain's native coin. Addresses are in the chain's normalised form
    (EVM: lowercase ``0x`` hex; Tron: base58check). ``amount_raw`` is the exact integer from the chain.
    ``success`` is False for a reverted transaction (it moved nothing but is recorded as ``failed``).

    A NamedTuple, not a frozen dataclass: catch-up builds one per log (tens of thousands per range) and a frozen
    dataclass costs five times as much to construct. Immutable all the same; ``_replace`` makes a changed copy.
    """

    tx_hash: str
    log_index: int
    block_number: int
    block_hash: str
    tx_index: int
    from_address: str
    to_address: str
    amount_raw: int
    token_address: str | None
    block_timestamp: int | None = None  # seconds, UTC; None when the adapter could not get it cheaply
    success: bool = True
    gas_used: int | None = None
    gas_price: int | None = None


@dataclass(frozen=True, slots=True)
class TxReceipt:
    """What the core needs to settle a transaction another service broadcast (``source = 'platform'`` rows)."""

    tx_hash: str
    block_number: int
    block_hash: str
    tx_index: int
    success: bool
    gas_used: int | None
    gas_price: int | None


class EscrowEvent(NamedTuple):
    """A ``Locked`` or ``Released`` event of the platform's escrow contract, as found on chain::

        event Locked(uint256 indexed agreementId, address indexed lender, address indexed borrower, address token,
                     uint256 amount)
        event Released(uint256 indexed agreementId, address indexed to, address token, uint256 amount)

    ``kind`` is ``"locked"`` or ``"released"``; ``party`` is the lender (locked) or the recipient (released),
    ``counterparty`` the borrower (locked) or None. Addresses are normalised like a Transfer's; ``contract`` is the
    emitting contract. ``agreement_id`` is the raw uint256 (it may not fit a ``p2p_agreements.id``: then it names no
    agreement)."""

    kind: str
    agreement_id: int
    tx_hash: str
    log_index: int
    block_number: int
    block_hash: str
    tx_index: int
    contract: str
    party: str
    counterparty: str | None
    token: str
    amount_raw: int
    block_timestamp: int | None = None


LOCKED_TOPIC = "0x4c9e4f829048022358b487e164c43d686497c9a5d12e35bd0e1502182438fc95"
"""keccak256("Locked(uint256,address,address,address,uint256)")."""
RELEASED_TOPIC = "0xbe9955ede01f89429605b39b8541dc3efb42abc6215925c50e35c676e9e06f88"
"""keccak256("Released(uint256,address,address,uint256)")."""


class ChainData(NamedTuple):
    """What one read of a block range (or list) gives: the transfers of watched wallets, and the escrow contract's
    events (empty when no contract was asked for)."""

    transfers: list[Transfer]
    escrow: list[EscrowEvent]


@dataclass(frozen=True, slots=True)
class TokenInfo:
    address: str
    symbol: str
    decimals: int


class ChainAdapter(Protocol):
    """What the sync core asks of a chain. Implementations: ``chains.evm.adapter``, ``chains.tron.adapter``."""

    chain: Chain
    native_symbol: str
    native_decimals: int

    def normalise_address(self, address: str) -> str:
        """The stored form of ``address``; raises ``ValueError`` with a reason when it is not a valid address."""
        ...

    async def check_chain_id(self) -> None:
        """Raise ``ChainIdMismatch`` when the node serves another chain than the configured one."""
        ...

    async def head(self) -> BlockRef: ...

    async def finalized_number(self) -> int | None:
        """The node's finality signal (finalized tag, solidified block), or None where it has none."""
        ...

    async def block_ref(self, number: int) -> BlockRef | None: ...

    async def block_refs(self, first: int, last: int) -> list[BlockRef]:
        """Blocks ``first..last`` inclusive, in order."""
        ...

    async def transfers(
        self, first: int, last: int, watched: frozenset[str], tokens: frozenset[str], *, native: bool = True
    ) -> list[Transfer]:
        """Every transfer in blocks ``first..last`` of a token in ``tokens`` (and of the native coin when
        ``native``) where either side is in ``watched``. Ordered by (block, log_index). Without ``native`` an
        adapter skips whatever it reads only for native transfers (the EVM full-block scan).

        Complete or an error: every block of the range is covered by the answer, or ``BlockNotAvailable`` /
        another ``RetryableChainError`` is raised. A node behind the others (its head below ``last``) must never
        make blocks look empty."""
        ...

    async def block_transfers(
        self, blocks: Sequence[BlockRef], watched: frozenset[str], tokens: frozenset[str], *, native: bool = True
    ) -> list[Transfer]:
        """What :meth:`transfers` gives, for exactly ``blocks`` (linked, ascending), identified by their hashes: the
        realtime path, where the window knows which fork it follows. Never returns a transfer of another block with
        the same number; raises ``BlockNotAvailable`` (retryable) when the node that answered does not know one of
        the blocks, instead of answering as if it were empty."""
        ...

    async def read_range(
        self, first: int, last: int, watched: frozenset[str], tokens: frozenset[str], *, native: bool = True,
        escrow: str | None = None,
    ) -> ChainData:
        """:meth:`transfers` and, when ``escrow`` (a contract address) is given, that contract's ``Locked`` /
        ``Released`` events in the same blocks, read together and with the same completeness guarantee."""
        ...

    async def read_blocks(
        self, blocks: Sequence[BlockRef], watched: frozenset[str], tokens: frozenset[str], *, native: bool = True,
        escrow: str | None = None,
    ) -> ChainData:
        """:meth:`block_transfers` and the escrow contract's events of exactly ``blocks``, by hash."""
        ...

    async def receipts(self, tx_hashes: list[str]) -> dict[str, TxReceipt]:
        """Receipts of mined transactions; hashes not (or no longer) on chain are absent."""
        ...

    async def token_info(self, token_address: str) -> TokenInfo: ...

    async def balances(
        self, addresses: list[str], tokens: list[str]
    ) -> dict[tuple[str, str | None], int]:
        """Raw balances keyed by (address, token address or None for native)."""
        ...

    async def wait_for_new_head(self, timeout_s: float) -> None:
        """Return when the node announces a new block (a websocket subscription, where one is configured) or after
        ``timeout_s``, whichever comes first. Polling adapters simply sleep."""
        ...

    async def aclose(self) -> None: ...


class RpcObserver(Protocol):
    """Where adapters report what they do, so the core can turn it into metrics without adapters importing it.

    ``endpoint`` is always a redacted label (:func:`chains.redact.redact_url`), never a raw URL.
    ``outcome`` is one of ``ok``, ``timeout``, ``rate_limited``, ``range_too_large``, ``http_error``,
    ``rpc_error``, ``reverted``, ``malformed``, ``oversized``, ``connection_error``.
    """

    def rpc_request(self, chain: str, endpoint: str, method: str, duration_s: float, outcome: str) -> None: ...

    def skipped_item(self, chain: str, reason: str, where: str = "") -> None:
        """A log or transaction left out because it was malformed or non-standard (``reason`` is a short code,
        ``where`` locates it: a transaction hash and log index, a block number)."""
        ...

    def endpoint_up(self, chain: str, endpoint: str, up: bool) -> None:
        """An endpoint went into cooldown after a fault (``up`` False), or answered again after one (``up`` True).
        Only changes are reported; an endpoint that never failed is never reported."""
        ...


class NullObserver:
    def rpc_request(self, chain: str, endpoint: str, method: str, duration_s: float, outcome: str) -> None:
        return None

    def skipped_item(self, chain: str, reason: str, where: str = "") -> None:
        return None

    def endpoint_up(self, chain: str, endpoint: str, up: bool) -> None:
        return None
