"""The :class:`chains.base.ChainAdapter` for BSC and Polygon PoS, over :class:`chains.evm.rpc.JsonRpcClient`.

Wire data is read as hex strings and sliced (an address topic's last 40 hex digits, a data word's first 64):
no web3 formatters on the hot path. Only ``number``, ``hash``, ``parentHash`` and ``timestamp`` of a block are
read, so the long ``extraData`` of BSC/Polygon blocks (web3.py's ``ExtraDataLengthError``) does not matter here.

Native coin (``docs/data-model.md``):
- every chain: top-level transaction ``value`` from full blocks, ``log_index = -1``
  (:data:`chains.base.NATIVE_LOG_INDEX`); receipts are fetched only for the matching transactions, for
  ``success`` and gas (so a reverted top-level transfer is recorded as failed). Full blocks are fetched a window
  at a time and only the matching transactions kept.
- Polygon additionally: internal POL transfers from the ``LogTransfer`` logs of ``0x…1010`` (real log index);
  the ``LogTransfer`` that mirrors a transaction's own ``value`` is dropped, so nothing is counted twice.
- BSC internal transfers would need traces and are not indexed.

Completeness: a node that is behind is a fault, never an empty answer. Public endpoints are load balancers over
nodes a few blocks apart, and a node asked about blocks above its head answers ``null`` blocks and receipts, and
``eth_getLogs`` over a range with the logs it has, silently (geth, bsc, bor and anvil clamp the range). Every answer
is therefore tied to the blocks it is about:

- **by hash** (:meth:`EvmAdapter.block_transfers`, the realtime path, where the window knows which fork it
  follows): each block's logs are asked with ``eth_getLogs {"blockHash": h}`` (per filter, one batch per block that
  also asks ``eth_getBlockByHash(h)``); a node that does not know ``h`` answers geth's ``-32000 unknown block``
  (anvil alike), or ``null`` for the block: :class:`chains.base.BlockNotAvailable`, asked elsewhere. Native
  transfers come from that block fetched by hash, their receipts must name ``h`` as their block, Polygon's
  ``LogTransfer`` is read by hash too. Every log must carry ``h``: nothing of another block with the same number
  is ever returned. This is what indexers that follow reorgs do (EIP-234; The Graph, Ponder, Chainlink's log
  poller ask by hash at the head).
- **ranges of final blocks** (:meth:`EvmAdapter.transfers`, the catch-up hot path): by-hash queries would cost one
  request per block, so ranges stay, each piece sent as one batch that starts with the header of the piece's last
  block (:mod:`chains.evm.logs`): same HTTP request, same backend; a ``null`` or lower header means the piece is
  sent again. The client sends such a batch atomically (``JsonRpcClient.batch(atomic=True)``): whole on every
  attempt, so a logs entry that failed is never re-sent without its header, to a node that may be behind. Endpoints
  that refuse batches are passed over; when every endpoint does (``JsonRpcClient.refuses_batches``, or
  ``BatchesRefused`` on the way) a range cannot be vouched for that way: the adapter then reads it block by block,
  by hash.
- blocks by number (``block_refs``, the full-block scan) and receipts: a ``null`` is rejected by the client's
  ``validate`` hook, so it is asked again elsewhere, and raised as ``BlockNotAvailable`` after the attempts.
  ``block_ref`` keeps the contract's ``None`` for a block the node does not have; its callers treat that as
  retryable.

Impossible values (a log or transaction index beyond PostgreSQL's ``integer``, a block number beyond ``bigint``, a
timestamp no ``datetime`` holds, a hash that is not 0x and 64 hex digits, a negative or oversized quantity) make an
answer malformed: it is asked again elsewhere (``validate``), and when every endpoint said the same, asked once more
unchecked and the bad items are skipped and reported (``observer.skipped_item``); never written, never a crash. A
block header with such a value cannot be skipped (the chain needs it): it stays a retryable ``MalformedResponse``.
A token's ``symbol()`` is display-only: undecodable or reverting, it becomes ``""`` (``undecodable_symbol``).
"""

from __future__ import annotations

import asyncio
import re
import unicodedata
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

from eth_utils.address import is_checksum_address

from chains.base import (
    LOCKED_TOPIC,
    NATIVE_LOG_INDEX,
    RELEASED_TOPIC,
    BlockNotAvailable,
    BlockRef,
    Chain,
    ChainData,
    ChainError,
    ChainIdMismatch,
    EscrowEvent,
    FatalChainError,
    MalformedResponse,
    NullObserver,
    RetryableChainError,
    RpcObserver,
    TokenInfo,
    Transfer,
    TxReceipt,
)
from chains.evm.heads import NewHeadsSubscription
from chains.evm.logs import (
    DEFAULT_ADDRESS_FILTER_LIMIT,
    DEFAULT_CONCURRENCY,
    DEFAULT_POSITION_LIMIT,
    LOG_TRANSFER_TOPIC,
    POLYGON_NATIVE_CONTRACT,
    TRANSFER_TOPIC,
    Log,
    LogFilter,
    RangeSizer,
    fetch_logs,
    node_behind,
    plan_filters,
    topic_of,
    unwrap_task_group,
)
from chains.evm.rpc import BatchesRefused, Call, JsonRpcClient, RpcError
from chains.redact import redact_url
from chains.transport import DEFAULT_MAX_RESPONSE_BYTES

_ADDRESS_RE = re.compile(r"0x[0-9a-fA-F]{40}")
_HASH_RE = re.compile(r"0x[0-9a-fA-F]{64}")
_SELECTOR_SYMBOL = "0x95d89b41"
_SELECTOR_DECIMALS = "0x313ce567"
_SELECTOR_BALANCE_OF = "0x70a08231"

_NATIVE_SYMBOLS = {Chain.BSC: "BNB", Chain.POLYGON: "POL"}

MAX_INDEX = 2**31 - 1  # log and transaction indexes: PostgreSQL integer
MAX_BLOCK_NUMBER = 2**63 - 1  # PostgreSQL bigint
MAX_TIMESTAMP = 253_402_300_799  # 9999-12-31T23:59:59Z, the last second Python's datetime holds
MAX_UINT256 = 2**256 - 1
MAX_SYMBOL_CHARS = 32  # what the platform's tokens table keeps

Check = Callable[[Any], None]
"""A ``validate`` hook of :class:`chains.evm.rpc.JsonRpcClient`: raises for a result that cannot be right."""


def split_rpc_urls(urls: list[str]) -> tuple[list[str], list[str]]:
    """``(http, ws)``: http(s) URLs serve requests, ws(s) URLs new-head subscriptions; each keeps its order.
    Any other scheme is refused (the settings already validate it; this guards direct construction)."""
    http: list[str] = []
    ws: list[str] = []
    for url in urls:
        try:
            scheme = urlsplit(url).scheme.lower()
        except ValueError:
            scheme = ""
        if scheme in ("http", "https"):
            http.append(url)
        elif scheme in ("ws", "wss"):
            ws.append(url)
        else:
            raise ValueError(f"RPC URL {redact_url(url)}: expected http(s):// or ws(s)://")
    return http, ws


def normalise_evm_address(address: str) -> str:
    """Lowercase ``0x`` hex. Mixed case must be a valid EIP-55 checksum; all-lower and all-upper are accepted."""
    if not isinstance(address, str) or not _ADDRESS_RE.fullmatch(address):
        raise ValueError(f"not an EVM address (want 0x and 40 hex digits): {address!r}")
    body = address[2:]
    if body != body.lower() and body != body.upper() and not is_checksum_address(address):
        raise ValueError("bad EIP-55 checksum")
    return "0x" + body.lower()


def _int(value: Any, what: str) -> int:
    if isinstance(value, str) and value.startswith(("0x", "0X")):
        try:
            return int(value, 16)
        except ValueError:
            pass
    raise MalformedResponse(f"{what}: not a hex quantity")


def _quantity(value: Any, what: str, maximum: int = MAX_UINT256) -> int:
    """A hex quantity in ``0..maximum``."""
    n = _int(value, what)
    if not 0 <= n <= maximum:
        raise MalformedResponse(f"{what}: {n} is out of range")
    return n


def _hash(value: Any, what: str) -> str:
    if not isinstance(value, str) or not _HASH_RE.fullmatch(value):
        raise MalformedResponse(f"{what}: not 0x and 64 hex digits")
    return value.lower()


def _block_ref(block: Any) -> BlockRef:
    if not isinstance(block, dict):
        raise MalformedResponse("block: not an object")
    return BlockRef(
        number=_quantity(block.get("number"), "block.number", MAX_BLOCK_NUMBER),
        hash=_hash(block.get("hash"), "block.hash"),
        parent_hash=_hash(block.get("parentHash"), "block.parentHash"),
        timestamp=_quantity(block.get("timestamp"), "block.timestamp", MAX_TIMESTAMP),
    )


def _check_header(block: Any) -> None:
    """``validate`` for a block that may be absent (``block_ref``): a header with impossible values is malformed."""
    if block is not None:
        _block_ref(block)


def _receipt(raw: Any) -> TxReceipt:
    if not isinstance(raw, dict):
        raise MalformedResponse("receipt: not an object")
    gas_used = raw.get("gasUsed")
    gas_price = raw.get("effectiveGasPrice")
    status = raw.get("status")
    if status not in (None, "0x0", "0x1"):
        raise MalformedResponse("receipt.status: neither 0x0 nor 0x1")
    return TxReceipt(
        tx_hash=_hash(raw.get("transactionHash"), "receipt.transactionHash"),
        block_number=_quantity(raw.get("blockNumber"), "receipt.blockNumber", MAX_BLOCK_NUMBER),
        block_hash=_hash(raw.get("blockHash"), "receipt.blockHash"),
        tx_index=_quantity(raw.get("transactionIndex"), "receipt.transactionIndex", MAX_INDEX),
        success=status != "0x0",
        gas_used=_quantity(gas_used, "receipt.gasUsed") if gas_used is not None else None,
        gas_price=_quantity(gas_price, "receipt.effectiveGasPrice") if gas_price is not None else None,
    )


def _check_receipt(raw: Any) -> None:
    """``validate`` for receipts that may be absent (a transaction not mined, or not known to that node)."""
    if raw is not None:
        _receipt(raw)


def display_symbol(raw: bytes) -> str | None:
    """A token's ``symbol()`` return as text to show: an ABI ``string``, or a ``bytes32`` (MKR-style) without its
    padding; valid UTF-8 without control characters, at most ``MAX_SYMBOL_CHARS`` characters (longer ones are cut).
    None when it is neither (the caller shows ``""``)."""
    text: bytes | None = None
    if len(raw) >= 64:
        offset = int.from_bytes(raw[:32], "big")
        if offset <= len(raw) - 32:
            length = int.from_bytes(raw[offset : offset + 32], "big")
            if offset + 32 + length <= len(raw):
                text = raw[offset + 32 : offset + 32 + length]
    if text is None and len(raw) == 32:
        text = raw.rstrip(b"\0")
    if text is None:
        return None
    try:
        symbol = text.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if any(unicodedata.category(c) == "Cc" for c in symbol):
        return None  # NUL among them: PostgreSQL text cannot hold it
    return symbol[:MAX_SYMBOL_CHARS]


def symbol_of(result: Any) -> str | None:
    """An ERC20 ``symbol()`` return (0x hex) as text to show, None when it is not one (see :func:`display_symbol`)."""
    if not isinstance(result, str) or not result.startswith("0x"):
        return None
    try:
        raw = bytes.fromhex(result[2:])
    except ValueError:
        return None
    return display_symbol(raw)


def decode_symbol(result: str) -> str:
    """:func:`symbol_of`, ``""`` when the answer is not a symbol."""
    return symbol_of(result) or ""


class EvmAdapter:
    """BSC / Polygon PoS adapter. ``async with`` or :meth:`aclose`.

    Of ``rpc_urls`` (tried in order), the http(s) ones serve every request; the ws(s) ones only feed a new-head
    subscription (:mod:`chains.evm.heads`) that wakes :meth:`wait_for_new_head`. At least one http(s) URL is needed.
    """

    native_decimals = 18

    def __init__(
        self,
        chain: Chain,
        rpc_urls: list[str],
        chain_id: int,
        *,
        observer: RpcObserver | None = None,
        timeout_s: float = 10,
        max_block_range: int = 2000,
        address_filter_limit: int = DEFAULT_ADDRESS_FILTER_LIMIT,
        concurrency: int = DEFAULT_CONCURRENCY,
        max_attempts: int = 6,
        position_limit: int = DEFAULT_POSITION_LIMIT,
        rpc: JsonRpcClient | None = None,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        if chain not in _NATIVE_SYMBOLS:
            raise ValueError(f"EvmAdapter serves bsc and polygon, not {chain}")
        self.chain = chain
        self.native_symbol = _NATIVE_SYMBOLS[chain]
        self.chain_id = chain_id
        self.observer: RpcObserver = observer or NullObserver()
        self.address_filter_limit = address_filter_limit
        self.position_limit = position_limit
        self.concurrency = concurrency
        http_urls, ws_urls = split_rpc_urls(rpc_urls)
        if rpc is None and not http_urls:
            raise ValueError(
                f"CITADEL_{chain.name}__RPC_URLS: {chain} needs at least one http(s) URL for requests; "
                "ws(s) URLs are used for new-head subscriptions"
            )
        self.rpc = rpc or JsonRpcClient(
            http_urls, chain=str(chain), timeout_s=timeout_s, max_attempts=max_attempts, observer=self.observer,
            max_response_bytes=max_response_bytes,
        )
        self.heads: NewHeadsSubscription | None = (
            NewHeadsSubscription(ws_urls, chain=str(chain), observer=self.observer) if ws_urls else None
        )
        self._head_seen: int | None = None  # the highest head a node answered: balances are read there
        # one sizer per kind of query: the learned provider limit and the log density differ
        self._token_sizer = RangeSizer(max_block_range, cap=max_block_range)
        self._native_sizer = RangeSizer(max_block_range, cap=max_block_range)
        self._escrow_sizer = RangeSizer(max_block_range, cap=max_block_range)

    async def __aenter__(self) -> EvmAdapter:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def wait_for_new_head(self, timeout_s: float) -> None:
        """Until the websocket subscription announces a head (see :mod:`chains.evm.heads`), or ``timeout_s``.
        Without a ws(s) URL the adapter polls: the caller's poll interval is simply waited out."""
        if self.heads is None:
            await asyncio.sleep(timeout_s)
        else:
            await self.heads.wait(timeout_s)

    async def aclose(self) -> None:
        try:
            if self.heads is not None:
                await self.heads.aclose()
        finally:
            await self.rpc.aclose()

    # ------------------------------------------------------------------------------------------- identity

    def normalise_address(self, address: str) -> str:
        return normalise_evm_address(address)

    async def check_chain_id(self) -> None:
        actual = _int(await self.rpc.call("eth_chainId", []), "eth_chainId")
        if actual != self.chain_id:
            raise ChainIdMismatch(
                f"{self.chain}: the RPC endpoint ({', '.join(self.rpc.endpoint_labels)}) serves chain id {actual}, "
                f"but chain id {self.chain_id} is configured"
            )

    # ------------------------------------------------------------------------------------------- blocks

    async def head(self) -> BlockRef:
        block = await self.rpc.call("eth_getBlockByNumber", ["latest", False], validate=_check_header)
        if block is None:
            raise MalformedResponse(f"{self.chain}: the node returned no latest block")
        ref = _block_ref(block)
        self._head_seen = max(ref.number, self._head_seen or 0)
        return ref

    async def finalized_number(self) -> int | None:
        try:
            block = await self.rpc.call("eth_getBlockByNumber", ["finalized", False], validate=_check_header)
        except RpcError:
            return None  # the node does not know the tag
        if not isinstance(block, dict):
            return None
        return _block_ref(block).number

    async def block_ref(self, number: int) -> BlockRef | None:
        """The block at ``number``, or None when the node that answered has none there (yet): callers treat that as
        retryable, never as an empty block."""
        block = await self.rpc.call("eth_getBlockByNumber", [hex(number), False], validate=_check_header)
        if block is None:
            return None
        ref = _block_ref(block)
        if ref.number != number:
            raise MalformedResponse(f"{self.chain}: asked for block {number}, the node answered block {ref.number}")
        return ref

    async def block_refs(self, first: int, last: int) -> list[BlockRef]:
        numbers = list(range(first, last + 1))
        return [_block_ref(b) for b in await self._blocks_by_number(numbers, full=False)]

    async def _blocks_by_number(
        self, numbers: Sequence[int], *, full: bool, strict: Check | None = None
    ) -> list[dict[str, Any]]:
        """Blocks ``numbers``, each present: a ``null`` (the node that answered lacks it) is asked again, elsewhere
        when possible, and ``BlockNotAvailable`` after the attempts. ``strict`` checks a full block's transactions."""
        wanted = set(numbers)
        checked: dict[int, int] = {}  # id of an accepted block -> its number (the catch-up scan reads thousands)

        def check(block: Any) -> None:
            if block is None:
                raise BlockNotAvailable(f"{self.chain}: a block is not available on the node that answered")
            ref = _block_ref(block)
            if ref.number not in wanted:
                raise MalformedResponse(f"{self.chain}: answered block {ref.number}, which was not asked for")
            if strict is not None:
                strict(block)
            checked[id(block)] = ref.number

        blocks = await self._ask([("eth_getBlockByNumber", [hex(n), full]) for n in numbers], check)
        for n, block in zip(numbers, blocks, strict=True):
            if block is None:
                raise BlockNotAvailable(f"{self.chain}: block {n} is not available on the node that answered")
            number = checked.get(id(block))
            if (number if number is not None else _block_ref(block).number) != n:
                raise MalformedResponse(f"{self.chain}: asked for block {n}, the node answered another")
        return list(blocks)

    async def _ask(self, calls: list[Call], check: Check) -> list[Any]:
        """Results of ``calls`` that ``check`` accepted; a result it refused is asked elsewhere (the client's
        ``validate``). An entry every endpoint answered malformed is asked once more unchecked, for the caller's
        lenient decoding to skip and report the bad items; a node that was behind raises ``BlockNotAvailable``;
        any other error is raised."""
        results = await self.rpc.batch(calls, return_errors=True, validate=check)
        again = [i for i, r in enumerate(results) if isinstance(r, MalformedResponse)]
        if again:
            unchecked = await self.rpc.batch([calls[i] for i in again], return_errors=True)
            for i, r in zip(again, unchecked, strict=True):
                results[i] = r
        for r in results:
            if isinstance(r, ChainError):
                if node_behind(r) and not isinstance(r, BlockNotAvailable):
                    raise BlockNotAvailable(f"{self.chain}: the node that answered is behind ({r})") from r
                raise r
        return results

    async def _vouched_batch(self, calls: list[tuple[str, list[Any]]]) -> list[Any]:
        """:data:`chains.evm.logs.BatchFn`: a piece's header and logs in one request on every attempt."""
        return await self.rpc.batch(calls, return_errors=True, atomic=True)

    # ------------------------------------------------------------------------------------------- transfers

    async def transfers(
        self, first: int, last: int, watched: frozenset[str], tokens: frozenset[str], *, native: bool = True
    ) -> list[Transfer]:
        if last < first or not watched:
            return []
        if not self.rpc.refuses_batches:
            try:
                return await self._range_transfers(first, last, watched, tokens, native=native)
            except BatchesRefused:
                pass  # the last endpoint taking batches stopped: nothing can vouch for a range's logs now
        refs = await self.block_refs(first, last)
        return await self.block_transfers(refs, watched, tokens, native=native)

    async def _range_transfers(
        self, first: int, last: int, watched: frozenset[str], tokens: frozenset[str], *, native: bool
    ) -> list[Transfer]:
        watched_l = frozenset(a.lower() for a in watched)
        tokens_l = frozenset(t.lower() for t in tokens)
        async with unwrap_task_group() as tg:
            token_task = tg.create_task(self._token_transfers(first, last, watched_l, tokens_l))
            if native:
                native_task = tg.create_task(self._top_level_native_transfers(first, last, watched_l))
                if self.chain == Chain.POLYGON:
                    internal_task = tg.create_task(self._polygon_native_transfers(first, last, watched_l))
        out = token_task.result()
        if native:
            out += native_task.result()
            if self.chain == Chain.POLYGON:
                out += _internal_only(internal_task.result(), native_task.result())
        out.sort(key=lambda t: (t.block_number, t.log_index, t.tx_index))
        return out

    async def block_transfers(
        self, blocks: Sequence[BlockRef], watched: frozenset[str], tokens: frozenset[str], *, native: bool = True
    ) -> list[Transfer]:
        """Transfers of exactly ``blocks``, each read by its hash (see the module docstring)."""
        if not blocks or not watched:
            return []
        watched_l = frozenset(a.lower() for a in watched)
        tokens_l = frozenset(t.lower() for t in tokens)
        token_filters = plan_filters(
            TRANSFER_TOPIC, tokens_l, watched_l,
            address_filter_limit=self.address_filter_limit, position_limit=self.position_limit,
        ).filters
        internal_filters: list[LogFilter] = []
        if native and self.chain == Chain.POLYGON:
            internal_filters = plan_filters(
                LOG_TRANSFER_TOPIC, [POLYGON_NATIVE_CONTRACT], watched_l, from_position=2,
                address_filter_limit=self.address_filter_limit, position_limit=self.position_limit,
            ).filters
        per_block = await asyncio.gather(*(
            self._block_by_hash(ref, token_filters, internal_filters, watched_l, tokens_l, native=native)
            for ref in blocks
        ))
        out: list[Transfer] = []
        candidates: list[tuple[dict[str, Any], dict[str, Any]]] = []
        for token_found, _, block in per_block:
            out += token_found
            if block is not None:
                candidates += self._native_candidates(block, watched_l, strict=False)
        if native:
            top_level = await self._native_transfers(candidates)
            out += top_level
            out += _internal_only([t for _, internal, _ in per_block for t in internal], top_level)
        timestamps = {b.hash: b.timestamp for b in blocks}
        out = [t._replace(block_timestamp=timestamps[t.block_hash]) for t in out]
        out.sort(key=lambda t: (t.block_number, t.log_index, t.tx_index))
        return out

    async def _block_by_hash(
        self,
        ref: BlockRef,
        token_filters: list[LogFilter],
        internal_filters: list[LogFilter],
        watched: frozenset[str],
        tokens: frozenset[str],
        *,
        native: bool,
    ) -> tuple[list[Transfer], list[Transfer], dict[str, Any] | None]:
        """(token transfers, Polygon LogTransfers, the full block when ``native``) of the block ``ref``, asked by its
        hash in one batch: the block itself first, then each filter's logs."""
        internal_emitters = frozenset([POLYGON_NATIVE_CONTRACT])

        def check(result: Any) -> None:
            if isinstance(result, list):
                for entry in result:
                    if not isinstance(entry, dict) or str(entry.get("blockHash", "")).lower() != ref.hash:
                        raise MalformedResponse(f"{self.chain}: a log of another block than {ref.hash}")
                self._decode_logs(result, 1, watched, tokens, native=False, strict=True)
                self._decode_logs(result, 2, watched, internal_emitters, native=True, strict=True)
                return
            if result is None:
                raise BlockNotAvailable(f"{self.chain}: block {ref.hash} is not known to the node that answered")
            if _block_ref(result) != ref:
                raise MalformedResponse(f"{self.chain}: asked for block {ref.hash}, the node answered another")
            if native:
                self._native_candidates(result, watched, strict=True)

        calls: list[Call] = [("eth_getBlockByHash", [ref.hash, native])]
        calls += [("eth_getLogs", [{**flt, "blockHash": ref.hash}]) for flt in token_filters + internal_filters]
        results = await self._ask(calls, check)
        block = results[0]
        if block is None or _block_ref(block) != ref:
            raise BlockNotAvailable(f"{self.chain}: block {ref.hash} is not known to the node that answered")
        token_logs = [e for r in results[1 : 1 + len(token_filters)] for e in self._logs_of(r, ref)]
        internal_logs = [e for r in results[1 + len(token_filters) :] for e in self._logs_of(r, ref)]
        return (
            self._decode_logs(token_logs, 1, watched, tokens, native=False, strict=False),
            self._decode_logs(internal_logs, 2, watched, internal_emitters, native=True, strict=False),
            block if native else None,
        )

    # ------------------------------------------------------------------------------------------- escrow

    async def read_range(
        self, first: int, last: int, watched: frozenset[str], tokens: frozenset[str], *, native: bool = True,
        escrow: str | None = None,
    ) -> ChainData:
        transfers = await self.transfers(first, last, watched, tokens, native=native)
        if escrow is None or last < first:
            return ChainData(transfers, [])
        if not self.rpc.refuses_batches:
            try:
                events = await fetch_logs(self._vouched_batch, first, last, [_escrow_filter(escrow)],
                                          self._escrow_sizer,
                                          lambda logs, strict: self._decode_escrow(logs, escrow.lower(), strict),
                                          concurrency=self.concurrency, max_batch=self.rpc.max_batch)
            except BatchesRefused:
                pass  # as in transfers(): by hash instead
            else:
                events.sort(key=lambda e: (e.block_number, e.log_index))
                return ChainData(transfers, events)
        return ChainData(transfers, await self._escrow_blocks(await self.block_refs(first, last), escrow))

    async def read_blocks(
        self, blocks: Sequence[BlockRef], watched: frozenset[str], tokens: frozenset[str], *, native: bool = True,
        escrow: str | None = None,
    ) -> ChainData:
        transfers = await self.block_transfers(blocks, watched, tokens, native=native)
        if escrow is None or not blocks:
            return ChainData(transfers, [])
        return ChainData(transfers, await self._escrow_blocks(list(blocks), escrow))

    async def _escrow_blocks(self, blocks: list[BlockRef], escrow: str) -> list[EscrowEvent]:
        """The escrow contract's events of exactly ``blocks``, each asked by its hash (a node that does not know the
        block errors; a log of another block is refused)."""
        contract = escrow.lower()
        flt = _escrow_filter(escrow)
        hashes = {b.hash for b in blocks}

        def check(result: Any) -> None:
            if not isinstance(result, list):
                raise MalformedResponse(f"{self.chain}: eth_getLogs by block hash: not a list")
            for entry in result:
                if not isinstance(entry, dict) or str(entry.get("blockHash", "")).lower() not in hashes:
                    raise MalformedResponse(f"{self.chain}: a log of another block")
            self._decode_escrow(result, contract, True)

        results = await self._ask([("eth_getLogs", [{**flt, "blockHash": b.hash}]) for b in blocks], check)
        events: list[EscrowEvent] = []
        for ref, result in zip(blocks, results, strict=True):
            events += self._decode_escrow(self._logs_of(result, ref), contract, False)
        timestamps = {b.hash: b.timestamp for b in blocks}
        return sorted((e._replace(block_timestamp=timestamps[e.block_hash]) for e in events),
                      key=lambda e: (e.block_number, e.log_index))

    def _decode_escrow(self, logs: list[Log], contract: str, strict: bool) -> list[EscrowEvent]:
        """``Locked`` / ``Released`` logs of ``contract``; a malformed one raises when ``strict`` (the answer is asked
        elsewhere), else it is skipped and reported."""
        out = []
        for entry in logs:
            try:
                if str(entry["address"]).lower() != contract or entry.get("removed"):
                    continue
                topics, data = entry["topics"], str(entry["data"]).lower()
                kind = "locked" if topics[0].lower() == LOCKED_TOPIC else "released" \
                    if topics[0].lower() == RELEASED_TOPIC else None
                if kind is None:
                    continue
                if len(topics) != (4 if kind == "locked" else 3) or len(data) != 130:
                    raise ValueError("not the escrow event's shape")
                ts = entry.get("blockTimestamp")
                out.append(EscrowEvent(
                    kind=kind, agreement_id=int(topics[1], 16), tx_hash=_hash(entry["transactionHash"], "tx hash"),
                    log_index=_quantity(entry["logIndex"], "logIndex", MAX_INDEX),
                    block_number=_quantity(entry["blockNumber"], "blockNumber", MAX_BLOCK_NUMBER),
                    block_hash=_hash(entry["blockHash"], "block hash"),
                    tx_index=_quantity(entry["transactionIndex"], "transactionIndex", MAX_INDEX),
                    contract=contract, party="0x" + topics[2][-40:].lower(),
                    counterparty="0x" + topics[3][-40:].lower() if kind == "locked" else None,
                    token="0x" + data[26:66], amount_raw=int(data[66:130], 16),
                    block_timestamp=_quantity(ts, "blockTimestamp", MAX_TIMESTAMP) if ts is not None else None,
                ))
            except (KeyError, TypeError, ValueError, AttributeError, IndexError, MalformedResponse) as exc:
                if strict:
                    raise MalformedResponse(f"{self.chain}: malformed escrow event") from exc
                self._skip_log(entry, "malformed_escrow_event")
        return out

    async def _logs(
        self, sizer: RangeSizer, first: int, last: int, filters: list[dict[str, Any]],
        decode: Callable[[list[Log], bool], list[Transfer]],
    ) -> list[Transfer]:
        return await fetch_logs(self._vouched_batch, first, last, filters, sizer, decode,
                                concurrency=self.concurrency, max_batch=self.rpc.max_batch)

    def _decode_logs(
        self,
        logs: list[Log],
        from_pos: int,
        watched: frozenset[str],
        emitters: frozenset[str],
        *,
        native: bool,
        strict: bool = False,
    ) -> list[Transfer]:
        """Raw logs (any order, duplicates possible) as Transfers, each once. Only a transfer with both sides
        watched can come back from both the sender and the recipient filter, so only those are de-duplicated.
        ``strict``: a log that would be kept but carries impossible values raises ``MalformedResponse``; otherwise
        it is skipped and reported."""
        out = []
        seen: set[tuple[str, int]] = set()
        good: set[str] = set()  # hashes and topics found well-formed (a block's logs share them)
        decode = self._decode_log
        for entry in logs:
            transfer = decode(entry, from_pos, watched, emitters, native, strict, good)
            if transfer is None:
                continue
            if transfer.from_address in watched and transfer.to_address in watched:
                key = (transfer.block_hash, transfer.log_index)
                if key in seen:
                    continue
                seen.add(key)
            out.append(transfer)
        return out

    async def _token_transfers(
        self, first: int, last: int, watched: frozenset[str], tokens: frozenset[str]
    ) -> list[Transfer]:
        plan = plan_filters(
            TRANSFER_TOPIC,
            tokens,
            watched,
            address_filter_limit=self.address_filter_limit,
            position_limit=self.position_limit,
        )
        if not plan.filters:
            return []
        return await self._logs(
            self._token_sizer, first, last, plan.filters,
            lambda logs, strict: self._decode_logs(logs, 1, watched, tokens, native=False, strict=strict),
        )

    async def _polygon_native_transfers(
        self, first: int, last: int, watched: frozenset[str]
    ) -> list[Transfer]:
        plan = plan_filters(
            LOG_TRANSFER_TOPIC,
            [POLYGON_NATIVE_CONTRACT],
            watched,
            from_position=2,
            address_filter_limit=self.address_filter_limit,
            position_limit=self.position_limit,
        )
        emitters = frozenset([POLYGON_NATIVE_CONTRACT])
        return await self._logs(
            self._native_sizer, first, last, plan.filters,
            lambda logs, strict: self._decode_logs(logs, 2, watched, emitters, native=True, strict=strict),
        )

    def _decode_log(
        self,
        entry: Log,
        from_pos: int,
        watched: frozenset[str],
        emitters: frozenset[str],
        native: bool,
        strict: bool,
        good: set[str],
    ) -> Transfer | None:
        """A Transfer (ERC20, ``from_pos`` 1) or LogTransfer (Polygon, ``from_pos`` 2) log as a Transfer;
        None when it is not ours or not standard (reported to the observer). On the catch-up hot path: one pass,
        no work for logs that are not ours; the values of a log that is ours are checked (see ``_decode_logs``)."""
        try:
            emitter = entry["address"].lower()
            if emitter not in emitters or entry.get("removed"):
                return None
            topics, data = entry["topics"], entry["data"]
            if len(topics) < from_pos + 2 or len(data) < 66:
                self._skip_log(entry, "nonstandard_transfer")
                return None
            from_t, to_t = topics[from_pos], topics[from_pos + 1]
            if len(from_t) < 42 or len(to_t) < 42:
                self._skip_log(entry, "nonstandard_transfer")
                return None
            sender = "0x" + from_t[-40:].lower()
            receiver = "0x" + to_t[-40:].lower()
            if sender not in watched and receiver not in watched:
                return None
            tx_hash, block_hash = entry["transactionHash"], entry["blockHash"]
            log_index = int(entry["logIndex"], 16)
            block_number = int(entry["blockNumber"], 16)
            tx_index = int(entry["transactionIndex"], 16)
            amount = int(data[2:66], 16)
            ts = entry.get("blockTimestamp")
            timestamp = int(ts, 16) if ts is not None else None
            # 0x and 64 hex digits; a block's logs share its hash, a batch payout's logs their transaction and sender
            if tx_hash not in good:
                if not _HASH_RE.fullmatch(tx_hash):
                    raise ValueError("transaction hash: not 0x and 64 hex digits")
                good.add(tx_hash)
            if block_hash not in good:
                if not _HASH_RE.fullmatch(block_hash):
                    raise ValueError("block hash: not 0x and 64 hex digits")
                good.add(block_hash)
            if from_t not in good:
                if not _HASH_RE.fullmatch(from_t):
                    raise ValueError("topic: not 0x and 64 hex digits")
                good.add(from_t)
            if to_t not in good:
                if not _HASH_RE.fullmatch(to_t):
                    raise ValueError("topic: not 0x and 64 hex digits")
                good.add(to_t)
            if not (
                0 <= log_index <= MAX_INDEX
                and 0 <= tx_index <= MAX_INDEX
                and 0 <= block_number <= MAX_BLOCK_NUMBER
                and (timestamp is None or 0 <= timestamp <= MAX_TIMESTAMP)
                and data.startswith("0x")
            ):
                raise ValueError("out of range")
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            if strict:
                raise MalformedResponse(f"{self.chain}: malformed log ({exc})") from None
            self._skip_log(entry, "malformed_log")
            return None
        return Transfer(
            tx_hash.lower(),
            log_index,
            block_number,
            block_hash.lower(),
            tx_index,
            sender,
            receiver,
            amount,
            None if native else emitter,
            timestamp,
        )

    def _logs_of(self, result: Any, ref: BlockRef) -> list[Log]:
        """An ``eth_getLogs`` result by the hash of ``ref``: its logs of that block; any other is skipped and reported
        (every endpoint answered so: the checked attempts failed over already)."""
        if not isinstance(result, list):
            raise MalformedResponse(f"{self.chain}: eth_getLogs for block {ref.hash}: not a list")
        out = []
        for entry in result:
            if isinstance(entry, dict) and str(entry.get("blockHash", "")).lower() == ref.hash:
                out.append(entry)
            else:
                self.observer.skipped_item(self.chain, "log_of_another_block", f"block {ref.number}")
        return out

    def _skip_log(self, entry: Log, reason: str) -> None:
        where = f"tx {entry.get('transactionHash')} log {entry.get('logIndex')}" if isinstance(entry, dict) else ""
        self.observer.skipped_item(self.chain, reason, where[:200])

    async def _top_level_native_transfers(
        self, first: int, last: int, watched: frozenset[str]
    ) -> list[Transfer]:
        candidates: list[tuple[dict[str, Any], dict[str, Any]]] = []
        scanned: dict[int, list[tuple[dict[str, Any], dict[str, Any]]]] = {}  # id of a checked block -> candidates

        def strict(block: Any) -> None:
            scanned[id(block)] = self._native_candidates(block, watched, strict=True)

        # Full BSC blocks are big (hundreds of transactions): fetch a window at a time, keep only candidates.
        window = self.rpc.max_batch * max(1, self.concurrency)
        for start in range(first, last + 1, window):
            numbers = range(start, min(last, start + window - 1) + 1)
            for block in await self._blocks_by_number(numbers, full=True, strict=strict):
                found = scanned.pop(id(block), None)
                candidates += found if found is not None else self._native_candidates(block, watched, strict=False)
            scanned.clear()
        return await self._native_transfers(candidates)

    async def _native_transfers(self, candidates: list[tuple[dict[str, Any], dict[str, Any]]]) -> list[Transfer]:
        """Transfers of the value-carrying candidate transactions, with their receipts (success, gas). A receipt
        the node that answered does not have, or that names another block, is asked elsewhere, then
        ``BlockNotAvailable``: the block is not (or no longer) what that node has."""
        if not candidates:
            return []
        block_of = {str(tx["hash"]).lower(): str(block["hash"]).lower() for block, tx in candidates}

        def check(raw: Any) -> None:
            if raw is None:
                raise BlockNotAvailable(f"{self.chain}: a receipt is not available on the node that answered")
            receipt = _receipt(raw)
            if block_of.get(receipt.tx_hash) != receipt.block_hash:
                raise BlockNotAvailable(
                    f"{self.chain}: the receipt of {receipt.tx_hash} names another block (the chain moved)")

        receipts = await self._ask([("eth_getTransactionReceipt", [tx["hash"]]) for _, tx in candidates], check)
        out = []
        for (block, tx), raw in zip(candidates, receipts, strict=True):
            tx_hash, block_hash = str(tx["hash"]).lower(), str(block["hash"]).lower()
            if not isinstance(raw, dict) or str(raw.get("blockHash", "")).lower() != block_hash:
                raise BlockNotAvailable(
                    f"{self.chain}: receipt of {tx_hash} in block {int(block['number'], 16)} is missing or from "
                    "another block (the chain moved)"
                )
            try:
                rec = _receipt(raw)
                if rec.tx_hash != tx_hash:
                    raise MalformedResponse("receipt of another transaction")
            except MalformedResponse:
                self.observer.skipped_item(self.chain, "malformed_receipt", f"tx {tx_hash}")
                continue
            recipient = tx.get("to") or raw.get("contractAddress")
            if not isinstance(recipient, str) or not _ADDRESS_RE.fullmatch(recipient):
                self.observer.skipped_item(self.chain, "native_without_recipient", f"tx {tx_hash}")
                continue
            out.append(
                Transfer(
                    tx_hash=tx_hash,
                    log_index=NATIVE_LOG_INDEX,
                    block_number=_block_ref(block).number,
                    block_hash=block_hash,
                    tx_index=int(tx["transactionIndex"], 16),
                    from_address=str(tx["from"]).lower(),
                    to_address=recipient.lower(),
                    amount_raw=int(tx["value"], 16),
                    token_address=None,
                    block_timestamp=_block_ref(block).timestamp,
                    success=rec.success,
                    gas_used=rec.gas_used,
                    gas_price=rec.gas_price if rec.gas_price is not None else _gas_price_of(tx),
                )
            )
        return out

    def _native_candidates(
        self, block: Any, watched: frozenset[str], *, strict: bool
    ) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        """(block, tx) of the value-carrying transactions in ``block`` that touch ``watched``. A candidate with
        impossible values raises ``MalformedResponse`` when ``strict``, and is otherwise skipped and reported. The
        header is the caller's to check (it cannot be skipped: the chain needs it)."""
        if not isinstance(block, dict):
            raise MalformedResponse(f"{self.chain}: a block is not an object")
        where = f"block {str(block.get('number'))[:20]}"  # the caller checked the header
        txs = block.get("transactions")
        if not isinstance(txs, list):
            raise MalformedResponse(f"{self.chain}: {where} has no transaction list")
        out = []
        for tx in txs:
            if not isinstance(tx, dict):
                raise MalformedResponse(f"{self.chain}: {where} lists hashes, not transactions")
            if str(tx.get("from", "")).lower() not in watched and str(tx.get("to") or "").lower() not in watched:
                continue
            value = tx.get("value")
            if isinstance(value, str) and value in ("0x0", "0x", "0x00"):
                continue
            try:
                if _quantity(value, "tx.value") == 0:
                    continue
                _hash(tx.get("hash"), "tx.hash")
                _quantity(tx.get("transactionIndex"), "tx.transactionIndex", MAX_INDEX)
                if tx.get("gasPrice") is not None:
                    _quantity(tx.get("gasPrice"), "tx.gasPrice")
                for side in ("from", "to"):
                    address = tx.get(side)
                    if (address is not None or side == "from") and (
                        not isinstance(address, str) or not _ADDRESS_RE.fullmatch(address)
                    ):
                        raise MalformedResponse(f"tx.{side}: not an address")
            except MalformedResponse as exc:
                if strict:
                    raise MalformedResponse(f"{self.chain}: {where}: {exc}") from None
                self.observer.skipped_item(self.chain, "malformed_transaction", where)
                continue
            out.append((block, tx))
        return out

    # ------------------------------------------------------------------------------------------- receipts

    async def receipts(self, tx_hashes: list[str]) -> dict[str, TxReceipt]:
        if not tx_hashes:
            return {}
        raw = await self._ask([("eth_getTransactionReceipt", [h]) for h in tx_hashes], _check_receipt)
        out = {}
        for h, receipt in zip(tx_hashes, raw, strict=True):
            if receipt is None:
                continue
            try:
                out[h] = _receipt(receipt)
            except MalformedResponse:
                self.observer.skipped_item(self.chain, "malformed_receipt", f"tx {h}")
        return out

    # ------------------------------------------------------------------------------------------- tokens

    async def token_info(self, token_address: str) -> TokenInfo:
        token = self.normalise_address(token_address)
        symbol_r, decimals_r = await self.rpc.batch(
            [
                ("eth_call", [{"to": token, "data": _SELECTOR_SYMBOL}, "latest"]),
                ("eth_call", [{"to": token, "data": _SELECTOR_DECIMALS}, "latest"]),
            ],
            return_errors=True,
        )
        for failed in (symbol_r, decimals_r):
            if isinstance(failed, RetryableChainError):
                raise failed  # the endpoints failed, not the token: retried later, never fatal
        if isinstance(decimals_r, ChainError) or not isinstance(decimals_r, str) or len(decimals_r) < 66:
            why = "it reverted" if isinstance(decimals_r, ChainError) else "it returned no data"
            raise FatalChainError(
                f"{self.chain}: token {token} does not answer decimals() ({why}): not an ERC20 contract, "
                "or not deployed on this chain"
            )
        decimals = _quantity(decimals_r[:66], f"{token} decimals()")
        if decimals > 255:
            raise FatalChainError(f"{self.chain}: token {token} answers decimals() = {decimals}, not a uint8")
        # display-only: a symbol() that reverts or answers something undecodable never holds indexing back
        symbol = symbol_of(symbol_r)
        if symbol is None:
            self.observer.skipped_item(self.chain, "undecodable_symbol", token)
        return TokenInfo(address=token, symbol=symbol or "", decimals=decimals)

    async def balances(self, addresses: list[str], tokens: list[str]) -> dict[tuple[str, str | None], int]:
        """Balances at the highest head a node has answered this adapter with (``latest`` before any): a node behind
        the others answers ``header not found`` there (asked elsewhere; the balance is left out when every attempt
        failed, and the caller asks again later) instead of an older balance that misses the latest transfers."""
        at = hex(self._head_seen) if self._head_seen is not None else "latest"
        keys: list[tuple[str, str | None]] = []
        calls: list[Call] = []
        for address in addresses:
            a = address.lower()
            keys.append((a, None))
            calls.append(("eth_getBalance", [a, at]))
            for token in tokens:
                t = token.lower()
                keys.append((a, t))
                calls.append(
                    ("eth_call", [{"to": t, "data": _SELECTOR_BALANCE_OF + topic_of(a)[2:]}, at])
                )
        results = await self.rpc.batch(calls, return_errors=True)
        out: dict[tuple[str, str | None], int] = {}
        for key, result in zip(keys, results, strict=True):
            try:
                if not isinstance(result, str) or len(result) < 3 or (key[1] is not None and len(result) < 66):
                    raise MalformedResponse("no balance")
                out[key] = _quantity(result[:66], "balance")
            except MalformedResponse:
                self.observer.skipped_item(self.chain, "balance_unavailable")
        return out




def _internal_only(log_transfers: list[Transfer], top_level: list[Transfer]) -> list[Transfer]:
    """Polygon logs every POL movement as ``LogTransfer``, the transaction's own ``value`` included. Top-level values
    are already rows (``log_index`` -1, as on every EVM chain), so the ``LogTransfer`` that mirrors one (same
    transaction, sender, recipient and amount; the first such log) is dropped and only internal transfers remain."""
    mirrors = {(t.tx_hash, t.from_address, t.to_address, t.amount_raw) for t in top_level if t.success}
    out = []
    for t in log_transfers:
        key = (t.tx_hash, t.from_address, t.to_address, t.amount_raw)
        if key in mirrors:
            mirrors.discard(key)
            continue
        out.append(t)
    return out


def _escrow_filter(contract: str) -> LogFilter:
    return {"address": [contract.lower()], "topics": [[LOCKED_TOPIC, RELEASED_TOPIC]]}


def _gas_price_of(tx: dict[str, Any]) -> int | None:
    price = tx.get("gasPrice")
    return int(price, 16) if isinstance(price, str) else None
