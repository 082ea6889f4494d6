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
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from eth_abi.abi import decode as abi_decode
from eth_utils.address import is_checksum_address

from chains.base import (
    NATIVE_LOG_INDEX,
    BlockNotAvailable,
    BlockRef,
    Chain,
    ChainError,
    ChainIdMismatch,
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
    RangeSizer,
    fetch_logs,
    plan_filters,
    topic_of,
    unwrap_task_group,
)
from chains.evm.rpc import Call, JsonRpcClient, RpcError
from chains.redact import redact_url
from chains.transport import DEFAULT_MAX_RESPONSE_BYTES

_ADDRESS_RE = re.compile(r"0x[0-9a-fA-F]{40}")
_SELECTOR_SYMBOL = "0x95d89b41"
_SELECTOR_DECIMALS = "0x313ce567"
_SELECTOR_BALANCE_OF = "0x70a08231"

_NATIVE_SYMBOLS = {Chain.BSC: "BNB", Chain.POLYGON: "POL"}


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


def _block_ref(block: Any) -> BlockRef:
    if not isinstance(block, dict):
        raise MalformedResponse("block: not an object")
    hash_, parent = block.get("hash"), block.get("parentHash")
    if not isinstance(hash_, str) or not isinstance(parent, str):
        raise MalformedResponse("block: hash or parentHash missing")
    return BlockRef(
        number=_int(block.get("number"), "block.number"),
        hash=hash_.lower(),
        parent_hash=parent.lower(),
        timestamp=_int(block.get("timestamp"), "block.timestamp"),
    )


def _receipt(raw: Any) -> TxReceipt:
    if not isinstance(raw, dict) or not isinstance(raw.get("transactionHash"), str):
        raise MalformedResponse("receipt: not an object with transactionHash")
    gas_used = raw.get("gasUsed")
    gas_price = raw.get("effectiveGasPrice")
    return TxReceipt(
        tx_hash=str(raw["transactionHash"]).lower(),
        block_number=_int(raw.get("blockNumber"), "receipt.blockNumber"),
        block_hash=str(raw.get("blockHash", "")).lower(),
        tx_index=_int(raw.get("transactionIndex"), "receipt.transactionIndex"),
        success=raw.get("status") != "0x0",
        gas_used=_int(gas_used, "receipt.gasUsed") if gas_used is not None else None,
        gas_price=_int(gas_price, "receipt.effectiveGasPrice") if gas_price is not None else None,
    )


def decode_symbol(result: str) -> str:
    """An ERC20 ``symbol()`` return: an ABI ``string``, or a ``bytes32`` (MKR-style); ``""`` when neither."""
    try:
        raw = bytes.fromhex(result[2:])
    except ValueError:
        return ""
    if len(raw) >= 64:
        try:
            return str(abi_decode(["string"], raw)[0])
        except Exception:  # eth_abi raises many types; fall through to bytes32
            pass
    if len(raw) >= 32:
        return raw[:32].rstrip(b"\0").decode("utf-8", errors="replace")
    return ""


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
        # one sizer per kind of query: the learned provider limit and the log density differ
        self._token_sizer = RangeSizer(max_block_range, cap=max_block_range)
        self._native_sizer = RangeSizer(max_block_range, cap=max_block_range)

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
        block = await self.rpc.call("eth_getBlockByNumber", ["latest", False])
        if block is None:
            raise MalformedResponse(f"{self.chain}: the node returned no latest block")
        return _block_ref(block)

    async def finalized_number(self) -> int | None:
        try:
            block = await self.rpc.call("eth_getBlockByNumber", ["finalized", False])
        except RpcError:
            return None  # the node does not know the tag
        if not isinstance(block, dict):
            return None
        return _int(block.get("number"), "block.number")

    async def block_ref(self, number: int) -> BlockRef | None:
        block = await self.rpc.call("eth_getBlockByNumber", [hex(number), False])
        return None if block is None else _block_ref(block)

    async def block_refs(self, first: int, last: int) -> list[BlockRef]:
        blocks = await self.rpc.batch(
            [("eth_getBlockByNumber", [hex(n), False]) for n in range(first, last + 1)]
        )
        refs = []
        for n, block in zip(range(first, last + 1), blocks, strict=True):
            if block is None:
                raise BlockNotAvailable(f"{self.chain}: block {n} is not available on the node yet")
            refs.append(_block_ref(block))
        return refs

    # ------------------------------------------------------------------------------------------- transfers

    async def transfers(
        self, first: int, last: int, watched: frozenset[str], tokens: frozenset[str], *, native: bool = True
    ) -> list[Transfer]:
        if last < first or not watched:
            return []
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
        if not blocks:
            return []
        hashes = {b.number: b.hash for b in blocks}
        found = await self.transfers(blocks[0].number, blocks[-1].number, watched, tokens, native=native)
        for t in found:
            if hashes.get(t.block_number) != t.block_hash:
                raise BlockNotAvailable(f"{self.chain}: block {t.block_number} answered from another fork")
        return found

    async def _logs(
        self, sizer: RangeSizer, first: int, last: int, filters: list[dict[str, Any]]
    ) -> list[Log]:
        async def batch(calls: list[tuple[str, list[Any]]]) -> list[Any]:
            return await self.rpc.batch(calls, return_errors=True)

        return await fetch_logs(batch, first, last, filters, sizer, concurrency=self.concurrency)

    def _decode_logs(
        self, logs: list[Log], from_pos: int, watched: frozenset[str], emitters: frozenset[str], *, native: bool
    ) -> list[Transfer]:
        """Raw logs (any order, duplicates possible) as Transfers, each once. Only a transfer with both sides
        watched can come back from both the sender and the recipient filter, so only those are de-duplicated."""
        out = []
        seen: set[tuple[str, int]] = set()
        for entry in logs:
            transfer = self._decode_log(entry, from_pos, watched, emitters, native=native)
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
        logs = await self._logs(self._token_sizer, first, last, plan.filters)
        return self._decode_logs(logs, 1, watched, tokens, native=False)

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
        logs = await self._logs(self._native_sizer, first, last, plan.filters)
        return self._decode_logs(logs, 2, watched, frozenset([POLYGON_NATIVE_CONTRACT]), native=True)

    def _decode_log(
        self, entry: Log, from_pos: int, watched: frozenset[str], emitters: frozenset[str], *, native: bool
    ) -> Transfer | None:
        """A Transfer (ERC20, ``from_pos`` 1) or LogTransfer (Polygon, ``from_pos`` 2) log as a Transfer;
        None when it is not ours or not standard (reported to the observer). On the catch-up hot path: one pass,
        no work for logs that are not ours."""
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
            ts = entry.get("blockTimestamp")
            return Transfer(
                entry["transactionHash"].lower(),
                int(entry["logIndex"], 16),
                int(entry["blockNumber"], 16),
                entry["blockHash"].lower(),
                int(entry["transactionIndex"], 16),
                sender,
                receiver,
                int(data[2:66], 16),
                None if native else emitter,
                int(ts, 16) if ts is not None else None,
            )
        except (KeyError, TypeError, ValueError, AttributeError):
            self._skip_log(entry, "malformed_log")
            return None

    def _skip_log(self, entry: Log, reason: str) -> None:
        where = f"tx {entry.get('transactionHash')} log {entry.get('logIndex')}" if isinstance(entry, dict) else ""
        self.observer.skipped_item(self.chain, reason, where)

    async def _top_level_native_transfers(
        self, first: int, last: int, watched: frozenset[str]
    ) -> list[Transfer]:
        candidates: list[tuple[dict[str, Any], dict[str, Any]]] = []
        # Full BSC blocks are big (hundreds of transactions): fetch a window at a time, keep only candidates.
        window = self.rpc.max_batch * max(1, self.concurrency)
        for start in range(first, last + 1, window):
            numbers = range(start, min(last, start + window - 1) + 1)
            blocks = await self.rpc.batch([("eth_getBlockByNumber", [hex(n), True]) for n in numbers])
            for n, block in zip(numbers, blocks, strict=True):
                candidates += self._native_candidates(n, block, watched)
        if not candidates:
            return []
        receipts = await self.rpc.batch([("eth_getTransactionReceipt", [tx["hash"]]) for _, tx in candidates])
        out = []
        for (block, tx), receipt in zip(candidates, receipts, strict=True):
            if (
                not isinstance(receipt, dict)
                or str(receipt.get("blockHash", "")).lower() != str(block["hash"]).lower()
            ):
                raise RetryableChainError(
                    f"{self.chain}: receipt of a transaction in block {int(block['number'], 16)} is missing or "
                    "from another block (the chain moved): fetch again"
                )
            rec = _receipt(receipt)
            recipient = tx.get("to") or receipt.get("contractAddress")
            if not isinstance(recipient, str):
                self.observer.skipped_item(self.chain, "native_without_recipient")
                continue
            out.append(
                Transfer(
                    tx_hash=str(tx["hash"]).lower(),
                    log_index=NATIVE_LOG_INDEX,
                    block_number=_int(block.get("number"), "block.number"),
                    block_hash=str(block["hash"]).lower(),
                    tx_index=_int(tx.get("transactionIndex"), "tx.transactionIndex"),
                    from_address=str(tx["from"]).lower(),
                    to_address=recipient.lower(),
                    amount_raw=_int(tx["value"], "tx.value"),
                    token_address=None,
                    block_timestamp=_int(block.get("timestamp"), "block.timestamp"),
                    success=rec.success,
                    gas_used=rec.gas_used,
                    gas_price=rec.gas_price if rec.gas_price is not None else _gas_price_of(tx),
                )
            )
        return out

    def _native_candidates(
        self, n: int, block: Any, watched: frozenset[str]
    ) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        """(block, tx) of the value-carrying transactions in ``block`` that touch ``watched``."""
        if block is None:
            raise BlockNotAvailable(f"{self.chain}: block {n} is not available on the node yet")
        txs = block.get("transactions") if isinstance(block, dict) else None
        if not isinstance(txs, list):
            raise MalformedResponse(f"{self.chain}: block {n} has no transaction list")
        out = []
        for tx in txs:
            if not isinstance(tx, dict):
                raise MalformedResponse(f"{self.chain}: block {n} lists hashes, not transactions")
            value = tx.get("value")
            if not isinstance(value, str) or value in ("0x0", "0x", "0x00"):
                continue
            if str(tx.get("from", "")).lower() in watched or str(tx.get("to") or "").lower() in watched:
                out.append((block, tx))
        return out

    # ------------------------------------------------------------------------------------------- receipts

    async def receipts(self, tx_hashes: list[str]) -> dict[str, TxReceipt]:
        if not tx_hashes:
            return {}
        raw = await self.rpc.batch([("eth_getTransactionReceipt", [h]) for h in tx_hashes])
        out = {}
        for h, receipt in zip(tx_hashes, raw, strict=True):
            if receipt is None:
                continue
            out[h] = _receipt(receipt)
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
        decimals = int(decimals_r[2:66], 16)
        if decimals > 255:
            raise FatalChainError(f"{self.chain}: token {token} answers decimals() = {decimals}, not a uint8")
        symbol = decode_symbol(symbol_r) if isinstance(symbol_r, str) else ""
        return TokenInfo(address=token, symbol=symbol, decimals=decimals)

    async def balances(self, addresses: list[str], tokens: list[str]) -> dict[tuple[str, str | None], int]:
        keys: list[tuple[str, str | None]] = []
        calls: list[Call] = []
        for address in addresses:
            a = address.lower()
            keys.append((a, None))
            calls.append(("eth_getBalance", [a, "latest"]))
            for token in tokens:
                t = token.lower()
                keys.append((a, t))
                calls.append(
                    ("eth_call", [{"to": t, "data": _SELECTOR_BALANCE_OF + topic_of(a)[2:]}, "latest"])
                )
        results = await self.rpc.batch(calls, return_errors=True)
        out: dict[tuple[str, str | None], int] = {}
        for key, result in zip(keys, results, strict=True):
            if isinstance(result, str) and len(result) >= 3 and (key[1] is None or len(result) >= 66):
                out[key] = int(result[:66], 16)
            else:
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


def _gas_price_of(tx: dict[str, Any]) -> int | None:
    price = tx.get("gasPrice")
    return int(price, 16) if isinstance(price, str) else None
