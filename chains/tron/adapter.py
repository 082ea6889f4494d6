"""``TronAdapter``: :class:`chains.base.ChainAdapter` for Tron over the java-tron HTTP API.

Transport, retries, failover and error translation live in :mod:`chains.tron.client` (plain aiohttp, not tronpy:
see there why). This module turns the wire format into :mod:`chains.base` values.

Calls used::

    head()               /wallet/getnowblock
    finalized_number()   /wallet/getnodeinfo "solidityBlock" (fallback /walletsolidity/getnowblock)
    block_ref(n)         /wallet/getblock {"id_or_num": "n", "detail": false}     ({} -> None)
    block_refs(a, b)     /wallet/getblockbylimitnext, [start, end) chunks of <= 100 blocks
    transfers(a, b)      getblockbylimitnext (transactions, block hash) + /wallet/gettransactioninfobyblocknum
                         for each block that has transactions (logs, receipts, fees)
    block_transfers(bs)  /wallet/getblockbyid {"value": block ID} for each block + gettransactioninfobyblocknum
    receipts(hashes)     /wallet/gettransactioninfobyid, then /wallet/getblockbynum for hash and tx index
    token_info(t)        /wallet/triggerconstantcontract symbol(), decimals()
    balances(...)        /wallet/getaccount (absent "balance" = 0, {} = unactivated = 0) and balanceOf(address)

Completeness: a node that is behind is a fault, never an empty answer. TronGrid and other public endpoints are load
balancers over full nodes a few blocks apart; one that is behind answers ``getnowblock`` lower,
``getblockbylimitnext`` short (or ``{}``) above its head, ``gettransactioninfobyblocknum`` ``[]``, and
``getblock``/``getblockbynum``/``getblockbyid`` ``{}``: all in the wire format of a valid answer. So:

- block lists are exact: ``first..last``, numbered and linked, or ``BlockNotAvailable`` (the client's ``validate``
  hook rejects a short answer, so it is asked again, elsewhere when possible, and raised after the attempts);
- at the head (:meth:`TronAdapter.block_transfers`) each block is read by its ID: a node that does not know it
  (behind, or still on another branch of a fork) answers ``{}``, which is ``BlockNotAvailable``; nothing of another
  block of the same height is ever returned;
- transaction infos are asked by height (java-tron has no by-ID variant), so they are bound to the block they are
  for: exactly its transactions (same IDs, one each), at its height and block time. ``[]`` for a block with
  transactions, or another block's infos, is ``BlockNotAvailable``;
- ``getnowblock``/``getnodeinfo`` from a node behind only report a lower head or solidified block, which the core
  takes as the maximum/minimum it needs: never a gap.

Impossible values (a TRX amount that is not a non-negative integer, a fee or energy that is not, a transaction ID
that is not 64 hex digits, a timestamp no ``datetime`` holds, a block number beyond ``bigint``) make an answer
malformed: it is asked again elsewhere, and when every endpoint said the same it is asked once more without that
check and the bad items are skipped and reported (``observer.skipped_item``). A block header with such a value cannot
be skipped: it stays a retryable ``MalformedResponse``. ``symbol()`` is display-only: reverting or not text, it is
``""`` (``undecodable_symbol``), never a start-up that cannot finish.

Decisions:

* **log_index** = the log's position counted across the whole block: the logs of every transaction info of the
  block, in block order, each transaction's ``log`` list in order, every log counted (Transfer or not, watched or
  not). That is the EVM rule, and it is stable across rescans. A top-level TRX ``TransferContract`` has
  ``NATIVE_LOG_INDEX`` (-1). A **reverted** TRC20 ``transfer``/``transferFrom`` (no log exists) gets the index its
  log would have had: the number of logs in the block before its transaction (unique within its transaction,
  which is all the natural key ``(chain, tx_hash, log_index, wallet_id)`` needs). Results are sorted by
  ``(block_number, log_index, tx_index)``.
* **Fees**: ``gas_used`` = ``receipt.energy_usage_total`` (energy units, 0 when absent) and ``gas_price`` =
  ``fee`` = the **total** fee of the transaction in sun (energy + bandwidth burn, 0 when absent), *not* a price
  per unit: on Tron, cost = ``gas_price``, never ``gas_used * gas_price``.
* **Success** is ``receipt.result`` absent or ``"SUCCESS"``; ``contractResult`` is ignored (USDT answers zeros
  even on success). A reverted TRC20 call from or to a watched wallet yields ``success=False`` with sender, recipient
  (the last 20 bytes of the call-data word) and amount decoded from the call data.
* **Chain id**: Tron has none on its HTTP API. ``chain_id`` may be given as an int, compared with the last 4 bytes
  of the genesis block ID (the rule java-tron's JSON-RPC ``eth_chainId`` uses: mainnet 728126428 = 0x2b6653dc), or
  as the full 64-hex genesis block ID. Without one (None or 0), ``check_chain_id`` logs the genesis ID and accepts.
* Addresses are base58check ``T...``; ``normalise_address`` accepts only that form (the stored form), unchanged.
* Not seen: TRX moved by contracts (``internal_transactions``) and TRC10 assets; malformed Transfer logs of a
  watched token (missing topics, short data) are skipped and reported via ``observer.skipped_item``.
"""

from __future__ import annotations

import asyncio
import logging
import re
import unicodedata
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeVar

from chains.base import (
    LOCKED_TOPIC,
    NATIVE_LOG_INDEX,
    RELEASED_TOPIC,
    BlockNotAvailable,
    BlockRef,
    CallReverted,
    Chain,
    ChainData,
    ChainIdMismatch,
    EscrowEvent,
    FatalChainError,
    MalformedResponse,
    NullObserver,
    RpcObserver,
    TokenInfo,
    Transfer,
    TxReceipt,
)
from chains.transport import DEFAULT_MAX_RESPONSE_BYTES
from chains.tron.address import decode_base58, to_base58, to_hex20, to_hex41, to_word
from chains.tron.client import TronHttpClient

log = logging.getLogger(__name__)

TRANSFER_TOPIC = "ddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"
SEL_TRANSFER = "a9059cbb"  # transfer(address,uint256)
SEL_TRANSFER_FROM = "23b872dd"  # transferFrom(address,address,uint256)
ZERO_ADDRESS_HEX = "41" + "00" * 20
BLOCKS_PER_CALL = 100
MAX_BLOCK_NUMBER = 2**63 - 1  # PostgreSQL bigint
MAX_TIMESTAMP_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z, the last instant Python's datetime holds
MAX_AMOUNT = 2**256 - 1  # amounts and fees: NUMERIC(78, 0) holds it
MAX_SYMBOL_CHARS = 32  # what the platform's tokens table keeps
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_NODE_BLOCK_RE = re.compile(r"Num:(\d+)")

T = TypeVar("T")

Check = Callable[[Any], None]
"""A ``validate`` hook of :class:`chains.tron.client.TronHttpClient`: raises for an answer that cannot be right."""


class _AnswerMalformed(MalformedResponse):
    """A contract call's answer without a usable ``constant_result`` (the call itself went through)."""


class TronCallFailed(CallReverted):
    """A constant contract call failed (not a contract, not a TRC20, reverted): the node's answer about the call,
    not a fault of the node; not retried."""


def _int(value: Any, what: str, default: int | None = None, maximum: int | None = None) -> int:
    """An integer field (proto3: absent is ``default``), in ``0..maximum`` when a maximum is given."""
    if value is None and default is not None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise MalformedResponse(f"{what}: expected an integer, got {type(value).__name__}")
    if maximum is not None and not 0 <= value <= maximum:
        raise MalformedResponse(f"{what}: {value} is out of range")
    return value


def _hex64(value: Any) -> bool:
    return isinstance(value, str) and _HEX64.fullmatch(value) is not None


def _block_ref(block: Any, what: str) -> BlockRef:
    """BlockRef of a block JSON (proto3: ``number``/``timestamp`` absent mean 0); impossible values are malformed
    (a header cannot be skipped: the chain needs it)."""
    if not isinstance(block, dict):
        raise MalformedResponse(f"{what}: block is not an object")
    block_id = block.get("blockID")
    header = block.get("block_header")
    raw = header.get("raw_data") if isinstance(header, dict) else None
    if not _hex64(block_id) or not isinstance(raw, dict):
        raise MalformedResponse(f"{what}: block without blockID or block_header.raw_data")
    assert isinstance(block_id, str)
    parent = raw.get("parentHash")
    if not _hex64(parent):
        raise MalformedResponse(f"{what}: block without parentHash")
    number = _int(raw.get("number"), f"{what} number", 0, MAX_BLOCK_NUMBER)
    if int(block_id[:16], 16) != number:
        raise MalformedResponse(f"{what}: blockID does not encode block number {number}")
    timestamp_ms = _int(raw.get("timestamp"), f"{what} timestamp", 0, MAX_TIMESTAMP_MS)
    return BlockRef(
        number=number, hash=block_id.lower(), parent_hash=str(parent).lower(), timestamp=timestamp_ms // 1000
    )


def _outcome_of(info: dict[str, Any]) -> tuple[bool, int, int]:
    """(success, energy used, total fee in sun) of a transaction info; proto3: absent = SUCCESS / 0."""
    receipt = info.get("receipt")
    if not isinstance(receipt, dict):
        receipt = {}
    success = receipt.get("result") in (None, "SUCCESS")
    return (
        success,
        _int(receipt.get("energy_usage_total"), "energy_usage_total", 0, MAX_AMOUNT),
        _int(info.get("fee"), "fee", 0, MAX_AMOUNT),
    )


def display_symbol(raw: bytes) -> str | None:
    """A token's ``symbol()`` return as text to show: an ABI ``string``, or a ``bytes32`` (old tokens) without its
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


class TronAdapter:
    chain = Chain.TRON
    native_symbol = "TRX"
    native_decimals = 6

    def __init__(
        self,
        rpc_urls: list[str],
        *,
        api_key: str | None = None,
        request_timeout_s: float = 10,
        observer: RpcObserver | None = None,
        max_retries: int = 5,
        chain_id: int | str | None = None,
        concurrency: int = 8,
        cooldown_s: float = 10.0,
        backoff_base_s: float = 0.25,
        backoff_cap_s: float = 10.0,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        if isinstance(chain_id, str) and not _HEX64.match(chain_id):
            raise ValueError(
                "Tron chain_id must be an int (last 4 bytes of the genesis ID) or the 64-hex genesis ID"
            )
        self._observer: RpcObserver = observer or NullObserver()
        self._client = TronHttpClient(
            rpc_urls,
            api_key=api_key,
            request_timeout_s=request_timeout_s,
            observer=self._observer,
            max_retries=max_retries,
            cooldown_s=cooldown_s,
            backoff_base_s=backoff_base_s,
            backoff_cap_s=backoff_cap_s,
            max_connections=max(concurrency, 1) * 2,
            max_response_bytes=max_response_bytes,
        )
        self._chain_id = chain_id or None  # 0 (the settings' default for Tron) means "not configured"
        self._semaphore = asyncio.Semaphore(max(concurrency, 1))

    # ------------------------------------------------------------------------------------------- helpers

    async def _call(
        self, path: str, body: dict[str, Any] | None = None, *, expect: type = dict, validate: Check | None = None
    ) -> Any:
        async with self._semaphore:
            return await self._client.call(path, body, expect=expect, validate=validate)

    async def _checked(
        self, path: str, body: dict[str, Any], *, must: Check, strict: Check | None = None, expect: type = dict
    ) -> Any:
        """The answer to ``path``, which ``must`` accepts (complete, well-formed headers: what the answer cannot do
        without) and ``strict`` too (items that could be skipped): a refused answer is asked elsewhere (the client's
        ``validate``). When every endpoint answered items ``strict`` refuses, it is asked once more with ``must``
        only, for the lenient decoding to skip and report them."""
        if strict is None:
            return await self._call(path, body, expect=expect, validate=must)

        def both(value: Any) -> None:
            must(value)
            strict(value)

        try:
            return await self._call(path, body, expect=expect, validate=both)
        except MalformedResponse:
            return await self._call(path, body, expect=expect, validate=must)

    async def _gather(self, items: Iterable[T], fn: Callable[[T], Awaitable[Any]]) -> list[Any]:
        return list(await asyncio.gather(*(fn(item) for item in items)))

    def _skip(self, reason: str, where: str = "") -> None:
        self._observer.skipped_item(Chain.TRON.value, reason, where)

    async def wait_for_new_head(self, timeout_s: float) -> None:
        """This adapter polls: nothing announces blocks, so the caller's poll interval is simply waited out."""
        await asyncio.sleep(timeout_s)

    async def aclose(self) -> None:
        await self._client.aclose()

    # ------------------------------------------------------------------------------------------- protocol

    def normalise_address(self, address: str) -> str:
        decode_base58(address)  # raises ValueError with the reason
        return address

    async def check_chain_id(self) -> None:
        genesis = await self.block_ref(0)
        if genesis is None:
            raise MalformedResponse("getblock 0: the node has no genesis block")
        if self._chain_id is None:
            log.info("tron: no chain id configured; node's genesis block is %s", genesis.hash)
            return
        if isinstance(self._chain_id, int):
            served = int(genesis.hash[-8:], 16)
            if served != self._chain_id:
                raise ChainIdMismatch(
                    f"tron: configured chain id {self._chain_id} but the node's genesis block {genesis.hash} "
                    f"gives {served}"
                )
        elif genesis.hash != self._chain_id.lower():
            raise ChainIdMismatch(
                f"tron: configured genesis block {self._chain_id} but the node serves {genesis.hash}"
            )

    async def head(self) -> BlockRef:
        block = await self._call("/wallet/getnowblock")
        return _block_ref(block, "getnowblock")

    async def finalized_number(self) -> int | None:
        info = await self._call("/wallet/getnodeinfo")
        match = _NODE_BLOCK_RE.match(str(info.get("solidityBlock", "")))
        if match:
            return int(match.group(1))
        block = await self._call("/walletsolidity/getnowblock")
        return _block_ref(block, "walletsolidity/getnowblock").number

    async def block_ref(self, number: int) -> BlockRef | None:
        """The block at ``number``, or None when the node that answered has none there (yet): callers treat that as
        retryable, never as an empty block."""

        def check(block: Any) -> None:
            if block:
                _block_ref(block, f"getblock {number}")

        block = await self._call("/wallet/getblock", {"id_or_num": str(number), "detail": False}, validate=check)
        if not block:
            return None
        ref = _block_ref(block, f"getblock {number}")
        if ref.number != number:
            raise MalformedResponse(f"getblock {number}: answered block {ref.number}")
        return ref

    async def _blocks(
        self, first: int, last: int, strict: Callable[[dict[str, Any]], None] | None = None
    ) -> list[dict[str, Any]]:
        """Raw blocks ``first..last``, exactly: a node that is behind answers ``getblockbylimitnext`` short (or
        ``{}``) above its head, which is ``BlockNotAvailable`` (asked elsewhere, then raised), never the end of the
        chain. ``strict`` checks each block's transactions."""
        chunks = [(s, min(s + BLOCKS_PER_CALL, last + 1)) for s in range(first, last + 1, BLOCKS_PER_CALL)]

        async def fetch(chunk: tuple[int, int]) -> list[dict[str, Any]]:
            start, end = chunk

            def must(got: Any) -> None:
                blocks = got.get("block")
                if not isinstance(blocks, list) or len(blocks) != end - start:
                    have = len(blocks) if isinstance(blocks, list) else 0
                    raise BlockNotAvailable(
                        f"tron: blocks {start}..{end - 1}: the node that answered has {have} of them (behind)"
                    )
                previous: BlockRef | None = None
                for offset, block in enumerate(blocks):
                    ref = _block_ref(block, f"getblockbylimitnext block {start + offset}")
                    if ref.number != start + offset:
                        raise MalformedResponse(
                            f"getblockbylimitnext: expected block {start + offset}, got {ref.number}"
                        )
                    if previous is not None and ref.parent_hash != previous.hash:
                        raise MalformedResponse(f"getblockbylimitnext: block {ref.number} does not link to its parent")
                    previous = ref

            def strict_check(got: Any) -> None:
                if strict is not None:
                    for block in got["block"]:
                        strict(block)

            got = await self._checked("/wallet/getblockbylimitnext", {"startNum": start, "endNum": end},
                                      must=must, strict=strict_check if strict is not None else None)
            blocks: list[dict[str, Any]] = got["block"]
            return blocks

        out: list[dict[str, Any]] = []
        for blocks in await self._gather(chunks, fetch):
            out.extend(blocks)
        return out

    async def _block_by_id(
        self, ref: BlockRef, strict: Callable[[dict[str, Any]], None] | None = None
    ) -> dict[str, Any]:
        """The block ``ref`` (transactions included), by its ID: a node that does not know it (behind, or on another
        fork) answers ``{}``: ``BlockNotAvailable``, asked elsewhere, then raised. Never another block of the same
        height."""

        def must(block: Any) -> None:
            if not block:
                raise BlockNotAvailable(f"tron: block {ref.number} {ref.hash} is not known to the node that answered")
            if _block_ref(block, f"getblockbyid {ref.number}") != ref:
                raise MalformedResponse(f"getblockbyid {ref.hash}: answered another block")

        block: dict[str, Any] = await self._checked(
            "/wallet/getblockbyid", {"value": ref.hash}, must=must, strict=strict
        )
        return block

    async def block_refs(self, first: int, last: int) -> list[BlockRef]:
        if last < first:
            return []
        return [_block_ref(b, "getblockbylimitnext") for b in await self._blocks(first, last)]

    def _hex_sets(
        self, watched: frozenset[str], tokens: frozenset[str]
    ) -> tuple[dict[str, str], dict[str, str]]:
        watched_hex: dict[str, str] = {}
        for address in watched:
            try:
                watched_hex[to_hex20(address)] = address
            except ValueError:
                self._skip("invalid_watched_address")
        token_hex: dict[str, str] = {}
        for token in tokens:
            try:
                token_hex[to_hex20(token)] = token
            except ValueError:
                self._skip("invalid_token_address")
        return watched_hex, token_hex

    async def transfers(
        self, first: int, last: int, watched: frozenset[str], tokens: frozenset[str], *, native: bool = True
    ) -> list[Transfer]:
        return (await self.read_range(first, last, watched, tokens, native=native)).transfers

    async def block_transfers(
        self, blocks: Sequence[BlockRef], watched: frozenset[str], tokens: frozenset[str], *, native: bool = True
    ) -> list[Transfer]:
        return (await self.read_blocks(blocks, watched, tokens, native=native)).transfers

    async def read_range(
        self, first: int, last: int, watched: frozenset[str], tokens: frozenset[str], *, native: bool = True,
        escrow: str | None = None,
    ) -> ChainData:
        if last < first:
            return ChainData([], [])
        watched_hex, token_hex = self._hex_sets(watched, tokens)
        blocks = await self._blocks(first, last, self._strict_block(watched_hex, token_hex, native))
        return await self._read(blocks, watched_hex, token_hex, native=native, escrow=escrow)

    async def read_blocks(
        self, blocks: Sequence[BlockRef], watched: frozenset[str], tokens: frozenset[str], *, native: bool = True,
        escrow: str | None = None,
    ) -> ChainData:
        """Exactly ``blocks``, each read by its ID (``/wallet/getblockbyid``), with the transaction infos of its
        height, which must be those of that block's transactions (same set, same block time)."""
        if not blocks:
            return ChainData([], [])
        watched_hex, token_hex = self._hex_sets(watched, tokens)
        strict = self._strict_block(watched_hex, token_hex, native)
        raw = await self._gather(blocks, lambda ref: self._block_by_id(ref, strict))
        return await self._read(raw, watched_hex, token_hex, native=native, escrow=escrow)

    async def _read(
        self, blocks: list[dict[str, Any]], watched_hex: dict[str, str], token_hex: dict[str, str], *, native: bool,
        escrow: str | None,
    ) -> ChainData:
        """Transfers and escrow events of ``blocks`` from one pass over their transaction infos (a Tron block's
        infos are its one costly call)."""
        with_txs = [b for b in blocks if b.get("transactions")]
        infos = await self._gather(with_txs, self._infos_of)
        escrow_hex = to_hex20(escrow) if escrow else None
        out: list[Transfer] = []
        events: list[EscrowEvent] = []
        for block, block_infos in zip(with_txs, infos, strict=True):
            out.extend(self._block_transfers(block, block_infos, watched_hex, token_hex, native=native))
            if escrow_hex is not None:
                events.extend(self._escrow_events(block, block_infos, escrow_hex))
        out.sort(key=lambda t: (t.block_number, t.log_index, t.tx_index))
        events.sort(key=lambda e: (e.block_number, e.log_index))
        return ChainData(out, events)

    def _escrow_events(self, block: dict[str, Any], infos: list[Any], escrow_hex: str) -> list[EscrowEvent]:
        """``Locked`` / ``Released`` logs of the escrow contract in one block, with their block-wide log index (the
        same count as :meth:`_block_transfers`'); a malformed one is skipped and reported."""
        ref = _block_ref(block, "block")
        txs = block["transactions"]
        by_id = {i["id"]: i for i in infos if isinstance(i, dict) and _hex64(i.get("id"))}
        out: list[EscrowEvent] = []
        logs_before = 0
        for tx_index, tx in enumerate(txs):
            tx_id = str(tx.get("txID")) if isinstance(tx, dict) else ""
            info = by_id.get(tx_id) or (infos[tx_index] if len(infos) == len(txs) else {})
            logs = info.get("log", []) if isinstance(info, dict) else []
            if not isinstance(logs, list):
                continue
            for position, entry in enumerate(logs):
                if not isinstance(entry, dict) or str(entry.get("address", "")).lower()[-40:] != escrow_hex:
                    continue
                event = self._escrow_event(entry, ref, tx_id.lower(), tx_index, logs_before + position, escrow_hex,
                                           info.get("blockTimeStamp"))
                if event is not None:
                    out.append(event)
            logs_before += len(logs)
        return out

    def _escrow_event(self, entry: dict[str, Any], ref: BlockRef, tx_id: str, tx_index: int, log_index: int,
                      escrow_hex: str, timestamp_ms: Any) -> EscrowEvent | None:
        topics = entry.get("topics")
        words = [t.lower().removeprefix("0x") if isinstance(t, str) else "" for t in topics] \
            if isinstance(topics, list) else []
        if not words or words[0] not in (LOCKED_TOPIC[2:], RELEASED_TOPIC[2:]):
            return None
        data = str(entry.get("data", "")).lower().removeprefix("0x")
        kind = "locked" if words[0] == LOCKED_TOPIC[2:] else "released"
        want = 4 if kind == "locked" else 3
        if len(words) != want or any(not _HEX64.match(w) for w in words[1:]) or len(data) != 128 \
                or not _HEX64.match(data[:64]) or not _HEX64.match(data[64:]):
            self._skip("malformed_escrow_event", f"{tx_id} log {log_index}")
            return None
        when = timestamp_ms // 1000 if isinstance(timestamp_ms, int) and 0 <= timestamp_ms <= MAX_TIMESTAMP_MS \
            else ref.timestamp
        return EscrowEvent(
            kind=kind, agreement_id=int(words[1], 16), tx_hash=tx_id, log_index=log_index,
            block_number=ref.number, block_hash=ref.hash, tx_index=tx_index, contract=to_base58(escrow_hex),
            party=to_base58(words[2][-40:]), counterparty=to_base58(words[3][-40:]) if kind == "locked" else None,
            token=to_base58(data[24:64]), amount_raw=int(data[64:], 16), block_timestamp=when,
        )

    async def _infos_of(self, block: dict[str, Any]) -> list[Any]:
        """The transaction infos of ``block``, asked by its height: they must be exactly those of its transactions,
        in a block of its time. A node that is behind answers ``[]``, one on another fork the infos of another
        block: ``BlockNotAvailable`` (asked elsewhere, then raised), never "no transfer"."""
        ref = _block_ref(block, "block")
        txs = block.get("transactions")
        if not isinstance(txs, list):
            raise MalformedResponse(f"block {ref.number}: transactions is not a list")
        tx_ids = [tx.get("txID") for tx in txs if isinstance(tx, dict) and _hex64(tx.get("txID"))]
        timestamp_ms = block["block_header"]["raw_data"].get("timestamp", 0)

        def must(infos: Any) -> None:
            if not all(isinstance(i, dict) for i in infos):
                raise MalformedResponse(f"block {ref.number}: a transaction info is not an object")
            ids = [i.get("id") for i in infos]
            if len(infos) != len(txs) or not set(tx_ids) <= set(ids):
                raise BlockNotAvailable(
                    f"tron: block {ref.number}: the node that answered has transaction infos for {len(infos)} of its "
                    f"{len(txs)} transactions (behind, or on another fork)"
                )
            for info in infos:
                number, at = info.get("blockNumber"), info.get("blockTimeStamp")
                if (number is not None and number != ref.number) or (at is not None and at != timestamp_ms):
                    raise BlockNotAvailable(
                        f"tron: block {ref.number}: transaction infos of another block (the node is on another fork)"
                    )

        def strict(infos: Any) -> None:
            for info in infos:
                if not _hex64(info.get("id")):
                    raise MalformedResponse(f"block {ref.number}: a transaction info without a valid id")
                _outcome_of(info)

        infos: list[Any] = await self._checked(
            "/wallet/gettransactioninfobyblocknum", {"num": ref.number}, must=must, strict=strict, expect=list
        )
        return infos

    def _strict_block(
        self, watched_hex: dict[str, str], token_hex: dict[str, str], native: bool
    ) -> Callable[[dict[str, Any]], None]:
        """The check of a block's transactions that could be skipped: each needs a 64-hex ID, and a TRX transfer of
        a watched wallet a non-negative integer amount and valid addresses."""

        def check(block: dict[str, Any]) -> None:
            txs = block.get("transactions", [])
            if not isinstance(txs, list):
                raise MalformedResponse("block: transactions is not a list")
            for tx in txs:
                if not isinstance(tx, dict) or not _hex64(tx.get("txID")):
                    raise MalformedResponse("block: a transaction without a valid txID")
                if native:
                    self._trx_transfer(tx, watched_hex, strict=True)

        return check

    def _trx_transfer(
        self, tx: dict[str, Any], watched_hex: dict[str, str], *, strict: bool
    ) -> tuple[str, str, int] | None:
        """(from hex20, to hex20, amount) of a TRX ``TransferContract`` touching a watched wallet. A malformed one
        raises when ``strict``, else it is skipped and reported."""
        contract = self._contract_of(tx)
        if contract is None or contract[0] != "TransferContract":
            return None
        value = contract[1]
        try:
            from_hex, to_hex = to_hex20(value["owner_address"]), to_hex20(value["to_address"])
            if from_hex not in watched_hex and to_hex not in watched_hex:
                return None
            amount = _int(value.get("amount"), "amount", 0, MAX_AMOUNT)
        except (KeyError, ValueError, TypeError, MalformedResponse) as exc:
            if strict:
                raise MalformedResponse(f"transaction {str(tx.get('txID'))[:64]}: malformed TRX transfer") from exc
            self._skip("malformed_trx_transfer", str(tx.get("txID"))[:64])
            return None
        return from_hex, to_hex, amount

    def _block_transfers(
        self,
        block: dict[str, Any],
        infos: list[Any],
        watched_hex: dict[str, str],
        token_hex: dict[str, str],
        *,
        native: bool = True,
    ) -> list[Transfer]:
        """Transfers of one block with its transaction infos (checked to be that block's). Transactions with
        impossible values are skipped and reported (they were asked elsewhere first)."""
        ref = _block_ref(block, "block")
        txs = block["transactions"]
        if not isinstance(txs, list):
            raise MalformedResponse(f"block {ref.number}: transactions is not a list")
        by_id: dict[str, dict[str, Any]] = {}
        for info in infos:
            if isinstance(info, dict) and _hex64(info.get("id")):
                by_id[info["id"]] = info
        out: list[Transfer] = []
        logs_before = 0
        for tx_index, tx in enumerate(txs):
            tx_id = str(tx.get("txID")) if isinstance(tx, dict) else ""
            info = by_id.get(tx_id) if _hex64(tx_id) else None
            if info is None:
                self._skip("malformed_transaction", f"block {ref.number} tx {tx_index}")
                # its logs still count: the indexes of the block's later logs must not move (infos come in the
                # block's order, one per transaction)
                same = infos[tx_index] if len(infos) == len(txs) and isinstance(infos[tx_index], dict) else {}
                logs_before += len(same.get("log", [])) if isinstance(same.get("log"), list) else 0
                continue
            try:
                success, gas_used, fee = _outcome_of(info)
            except MalformedResponse:
                self._skip("malformed_transaction_info", tx_id)
                logs = info.get("log", [])
                logs_before += len(logs) if isinstance(logs, list) else 0
                continue
            timestamp_ms = info.get("blockTimeStamp")
            if not isinstance(timestamp_ms, int) or not 0 <= timestamp_ms <= MAX_TIMESTAMP_MS:
                timestamp_ms = ref.timestamp * 1000
            common: dict[str, Any] = {
                "tx_hash": tx_id.lower(),
                "block_number": ref.number,
                "block_hash": ref.hash,
                "tx_index": tx_index,
                "block_timestamp": timestamp_ms // 1000,
                "gas_used": gas_used,
                "gas_price": fee,
            }
            # (log_index, from hex20, to hex20, amount, token or None, success) of this transaction
            found: list[tuple[int, str, str, int, str | None, bool]] = []

            if native:
                trx = self._trx_transfer(tx, watched_hex, strict=False)
                if trx is not None:
                    found.append((NATIVE_LOG_INDEX, trx[0], trx[1], trx[2], None, success))
            contract = self._contract_of(tx)
            if contract is not None and contract[0] == "TriggerSmartContract" and not success and token_hex:
                failed = self._failed_token_call(contract[1], token_hex, watched_hex)
                if failed is not None:
                    token, from_hex, to_hex, amount = failed
                    found.append((logs_before, from_hex, to_hex, amount, token, False))

            logs = info.get("log", [])
            if not isinstance(logs, list):
                self._skip("malformed_log_list")
                logs = []
            for position, entry in enumerate(logs):
                parsed = self._transfer_log(entry, token_hex, watched_hex)
                if parsed is not None:
                    token, from_hex, to_hex, amount = parsed
                    found.append((logs_before + position, from_hex, to_hex, amount, token, success))
            logs_before += len(logs)
            for log_index, from_hex, to_hex, amount, token_or_none, ok in found:
                out.append(
                    Transfer(
                        **common,
                        log_index=log_index,
                        from_address=watched_hex.get(from_hex) or to_base58(from_hex),
                        to_address=watched_hex.get(to_hex) or to_base58(to_hex),
                        amount_raw=amount,
                        token_address=token_or_none,
                        success=ok,
                    )
                )
        return out

    @staticmethod
    def _contract_of(tx: Any) -> tuple[str, dict[str, Any]] | None:
        try:
            contract = tx["raw_data"]["contract"][0]
            value = contract["parameter"]["value"]
            kind = contract["type"]
        except (KeyError, IndexError, TypeError):
            return None
        if not isinstance(value, dict) or not isinstance(kind, str):
            return None
        return kind, value

    def _transfer_log(
        self, entry: Any, token_hex: dict[str, str], watched_hex: dict[str, str]
    ) -> tuple[str, str, str, int] | None:
        """(token, from hex20, to hex20, amount) of a Transfer log of a watched token touching a watched wallet."""
        if not isinstance(entry, dict):
            self._skip("malformed_log")
            return None
        address = entry.get("address")
        token = token_hex.get(address.lower()[-40:]) if isinstance(address, str) else None
        if token is None:
            return None
        topics = entry.get("topics")
        if not isinstance(topics, list) or not topics or not isinstance(topics[0], str):
            self._skip("malformed_log")
            return None
        if topics[0].lower().removeprefix("0x") != TRANSFER_TOPIC:
            return None
        data = entry.get("data")
        words = [t.lower().removeprefix("0x") if isinstance(t, str) else "" for t in topics[1:]]
        if len(words) != 2 or any(not _HEX64.match(w) for w in words):
            self._skip("malformed_transfer_log")  # also TRC721 Transfer (tokenId as 3rd topic)
            return None
        data_hex = data.lower().removeprefix("0x") if isinstance(data, str) else ""
        if len(data_hex) != 64 or not _HEX64.match(data_hex):
            self._skip("malformed_transfer_log")
            return None
        from_hex, to_hex = words[0][-40:], words[1][-40:]
        if from_hex not in watched_hex and to_hex not in watched_hex:
            return None
        return token, from_hex, to_hex, int(data_hex, 16)

    def _failed_token_call(
        self, value: dict[str, Any], token_hex: dict[str, str], watched_hex: dict[str, str]
    ) -> tuple[str, str, str, int] | None:
        """(token, from, to, amount) decoded from the call data of a reverted transfer/transferFrom."""
        try:
            token = token_hex.get(to_hex20(value["contract_address"]))
            owner = to_hex20(value["owner_address"])
        except (KeyError, ValueError, TypeError):
            return None
        data = value.get("data")
        if token is None or not isinstance(data, str):
            return None
        data = data.lower().removeprefix("0x")
        selector, args = data[:8], data[8:]
        try:
            if selector == SEL_TRANSFER and len(args) >= 128:
                from_hex, to_hex, amount = owner, args[24:64], int(args[64:128], 16)
            elif selector == SEL_TRANSFER_FROM and len(args) >= 192:
                from_hex, to_hex, amount = args[24:64], args[88:128], int(args[128:192], 16)
            else:
                return None
            bytes.fromhex(from_hex + to_hex)
        except ValueError:
            self._skip("malformed_call_data")
            return None
        if from_hex not in watched_hex and to_hex not in watched_hex:
            return None
        return token, from_hex, to_hex, amount

    async def receipts(self, tx_hashes: list[str]) -> dict[str, TxReceipt]:
        async def info_of(tx_hash: str) -> Any:
            return await self._call("/wallet/gettransactioninfobyid", {"value": tx_hash})

        infos = dict(zip(tx_hashes, await self._gather(tx_hashes, info_of), strict=True))
        found: dict[str, dict[str, Any]] = {}
        for tx_hash, info in infos.items():
            if not info:
                continue  # not mined, or not known to the node that answered: asked again later
            try:
                _int(info.get("blockNumber"), "blockNumber", 0, MAX_BLOCK_NUMBER)
                _outcome_of(info)
            except MalformedResponse:
                self._skip("malformed_transaction_info", tx_hash)
                continue
            found[tx_hash] = info
        numbers = sorted({int(i.get("blockNumber", 0)) for i in found.values()})

        async def block_of(number: int) -> Any:
            def must(block: Any) -> None:
                if not block:  # the info said the transaction is there: this node lacks the block (behind)
                    raise BlockNotAvailable(f"tron: block {number} is not available on the node that answered")
                _block_ref(block, f"getblockbynum {number}")

            return await self._call("/wallet/getblockbynum", {"num": number}, validate=must)

        blocks = dict(zip(numbers, await self._gather(numbers, block_of), strict=True))
        out: dict[str, TxReceipt] = {}
        for tx_hash, info in found.items():
            number = int(info.get("blockNumber", 0))
            block = blocks[number]
            ref = _block_ref(block, f"getblockbynum {number}")
            ids = [tx.get("txID") for tx in block.get("transactions", []) if isinstance(tx, dict)]
            if tx_hash not in ids:
                continue  # reorged away between the calls
            success, gas_used, fee = _outcome_of(info)
            out[tx_hash] = TxReceipt(
                tx_hash=tx_hash,
                block_number=ref.number,
                block_hash=ref.hash,
                tx_index=ids.index(tx_hash),
                success=success,
                gas_used=gas_used,
                gas_price=fee,
            )
        return out

    async def _constant_call(self, token: str, signature: str, parameter: str = "") -> str:
        body = {
            "owner_address": ZERO_ADDRESS_HEX,
            "contract_address": to_hex41(token),
            "function_selector": signature,
            "parameter": parameter,
        }
        got = await self._call("/wallet/triggerconstantcontract", body)
        result = got.get("result")
        if not isinstance(result, dict) or result.get("result") is not True:
            code = result.get("code", "?") if isinstance(result, dict) else "?"
            message = result.get("message", "") if isinstance(result, dict) else ""
            try:
                message = bytes.fromhex(str(message)).decode("utf-8", "replace")
            except ValueError:
                pass
            raise TronCallFailed(f"{signature} on {token} failed: {code} {message}"[:300])
        constant = got.get("constant_result")
        if not isinstance(constant, list) or not constant or not isinstance(constant[0], str):
            raise _AnswerMalformed(f"{signature} on {token}: no constant_result")
        value = constant[0]
        if len(value) % 2 or any(c not in "0123456789abcdefABCDEF" for c in value):
            raise _AnswerMalformed(f"{signature} on {token}: constant_result is not hex")
        return value

    async def token_info(self, token_address: str) -> TokenInfo:
        token = self.normalise_address(token_address)
        symbol, decimals_hex = await asyncio.gather(self._symbol(token), self._decimals(token))
        if len(decimals_hex) != 64:
            raise FatalChainError(f"decimals() on {token}: not a uint")
        decimals = int(decimals_hex, 16)
        if decimals > 77:
            raise FatalChainError(f"decimals() on {token}: {decimals} is not a plausible value")
        if symbol is None:
            self._skip("undecodable_symbol", token)
        return TokenInfo(address=token, symbol=symbol or "", decimals=decimals)

    async def _decimals(self, token: str) -> str:
        try:
            return await self._constant_call(token, "decimals()")
        except CallReverted as exc:
            raise FatalChainError(f"tron: token {token} is not a TRC20 contract on this chain: {exc}") from exc

    async def _symbol(self, token: str) -> str | None:
        """``symbol()`` as text to show, None when it reverts or answers something that is not a symbol: it is
        display-only and never holds indexing back. Endpoint faults are raised as usual (retried)."""
        try:
            return display_symbol(bytes.fromhex(await self._constant_call(token, "symbol()")))
        except CallReverted:
            return None
        except MalformedResponse as exc:
            if isinstance(exc, _AnswerMalformed):
                return None
            raise

    async def balances(self, addresses: list[str], tokens: list[str]) -> dict[tuple[str, str | None], int]:
        async def native(address: str) -> int:
            account = await self._call("/wallet/getaccount", {"address": to_hex41(address)})
            return _int(account.get("balance"), "balance", 0)

        async def token_balance(pair: tuple[str, str]) -> int | None:
            address, token = pair
            try:
                result = await self._constant_call(token, "balanceOf(address)", to_word(address))
            except CallReverted:
                self._skip("balance_unavailable", f"{token} balanceOf({address})")
                return None
            return int(result[:64], 16) if len(result) >= 64 else 0

        pairs = [(a, t) for a in addresses for t in tokens]
        natives, token_values = await asyncio.gather(
            self._gather(addresses, native), self._gather(pairs, token_balance)
        )
        out: dict[tuple[str, str | None], int] = {
            (a, None): v for a, v in zip(addresses, natives, strict=True)
        }
        out.update({(a, t): v for (a, t), v in zip(pairs, token_values, strict=True) if v is not None})
        return out
