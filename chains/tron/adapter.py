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
    receipts(hashes)     /wallet/gettransactioninfobyid, then /wallet/getblockbynum for hash and tx index
    token_info(t)        /wallet/triggerconstantcontract symbol(), decimals()
    balances(...)        /wallet/getaccount (absent "balance" = 0, {} = unactivated = 0) and balanceOf(address)

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
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeVar

from chains.base import (
    NATIVE_LOG_INDEX,
    BlockNotAvailable,
    BlockRef,
    CallReverted,
    Chain,
    ChainError,
    ChainIdMismatch,
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
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")
_NODE_BLOCK_RE = re.compile(r"Num:(\d+)")

T = TypeVar("T")


class TronCallFailed(CallReverted):
    """A constant contract call failed (not a contract, not a TRC20, reverted): the node's answer about the call,
    not a fault of the node; not retried."""


def _int(value: Any, what: str, default: int | None = None) -> int:
    if value is None and default is not None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise MalformedResponse(f"{what}: expected an integer, got {type(value).__name__}")
    return value


def _block_ref(block: Any, what: str) -> BlockRef:
    """BlockRef of a block JSON (proto3: ``number``/``timestamp`` absent mean 0)."""
    if not isinstance(block, dict):
        raise MalformedResponse(f"{what}: block is not an object")
    block_id = block.get("blockID")
    header = block.get("block_header")
    raw = header.get("raw_data") if isinstance(header, dict) else None
    if not isinstance(block_id, str) or not _HEX64.match(block_id) or not isinstance(raw, dict):
        raise MalformedResponse(f"{what}: block without blockID or block_header.raw_data")
    parent = raw.get("parentHash")
    if not isinstance(parent, str) or not _HEX64.match(parent):
        raise MalformedResponse(f"{what}: block without parentHash")
    number = _int(raw.get("number"), f"{what} number", 0)
    if int(block_id[:16], 16) != number:
        raise MalformedResponse(f"{what}: blockID does not encode block number {number}")
    timestamp_ms = _int(raw.get("timestamp"), f"{what} timestamp", 0)
    return BlockRef(
        number=number, hash=block_id.lower(), parent_hash=parent.lower(), timestamp=timestamp_ms // 1000
    )


def _outcome_of(info: dict[str, Any]) -> tuple[bool, int, int]:
    """(success, energy used, total fee in sun) of a transaction info; proto3: absent = SUCCESS / 0."""
    receipt = info.get("receipt")
    if not isinstance(receipt, dict):
        receipt = {}
    success = receipt.get("result") in (None, "SUCCESS")
    return (
        success,
        _int(receipt.get("energy_usage_total"), "energy_usage_total", 0),
        _int(info.get("fee"), "fee", 0),
    )


def _decode_abi_string(hex_result: str) -> str:
    data = bytes.fromhex(hex_result)
    if len(data) >= 64:
        offset = int.from_bytes(data[:32], "big")
        if offset + 32 <= len(data):
            length = int.from_bytes(data[offset : offset + 32], "big")
            if offset + 32 + length <= len(data):
                return data[offset + 32 : offset + 32 + length].decode("utf-8", "replace")
    if len(data) == 32:  # bytes32 symbol (old tokens)
        return data.rstrip(b"\0").decode("utf-8", "replace")
    raise MalformedResponse("symbol(): result is neither an ABI string nor bytes32")


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

    async def _call(self, path: str, body: dict[str, Any] | None = None, *, expect: type = dict) -> Any:
        async with self._semaphore:
            return await self._client.call(path, body, expect=expect)

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
        block = await self._call("/wallet/getblock", {"id_or_num": str(number), "detail": False})
        if not block:
            return None
        ref = _block_ref(block, f"getblock {number}")
        if ref.number != number:
            raise MalformedResponse(f"getblock {number}: answered block {ref.number}")
        return ref

    async def _blocks(self, first: int, last: int) -> list[dict[str, Any]]:
        """Raw blocks ``first..last`` (fewer when the chain ends earlier), contiguous, in order."""
        chunks = [(s, min(s + BLOCKS_PER_CALL, last + 1)) for s in range(first, last + 1, BLOCKS_PER_CALL)]

        async def fetch(chunk: tuple[int, int]) -> list[Any]:
            got = await self._call("/wallet/getblockbylimitnext", {"startNum": chunk[0], "endNum": chunk[1]})
            blocks = got.get("block", [])
            if not isinstance(blocks, list):
                raise MalformedResponse("getblockbylimitnext: 'block' is not a list")
            return blocks

        out: list[dict[str, Any]] = []
        for (_start, end), blocks in zip(chunks, await self._gather(chunks, fetch), strict=True):
            for block in blocks:
                expected = first + len(out)
                ref = _block_ref(block, f"getblockbylimitnext block {expected}")
                if ref.number != expected:
                    raise MalformedResponse(
                        f"getblockbylimitnext: expected block {expected}, got {ref.number}"
                    )
                out.append(block)
            if first + len(out) < end:
                break  # a short chunk: the chain ends here
        return out

    async def block_refs(self, first: int, last: int) -> list[BlockRef]:
        if last < first:
            return []
        return [_block_ref(b, "getblockbylimitnext") for b in await self._blocks(first, last)]

    async def transfers(
        self, first: int, last: int, watched: frozenset[str], tokens: frozenset[str], *, native: bool = True
    ) -> list[Transfer]:
        if last < first:
            return []
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

        blocks = await self._blocks(first, last)
        with_txs = [b for b in blocks if b.get("transactions")]

        async def infos_of(block: dict[str, Any]) -> list[Any]:
            number = _block_ref(block, "block").number
            infos: list[Any] = await self._call(
                "/wallet/gettransactioninfobyblocknum", {"num": number}, expect=list
            )
            return infos

        infos_by_block = dict(
            zip((id(b) for b in with_txs), await self._gather(with_txs, infos_of), strict=True)
        )
        out: list[Transfer] = []
        for block in blocks:
            if block.get("transactions"):
                out.extend(self._block_transfers(block, infos_by_block[id(block)], watched_hex, token_hex,
                                                 native=native))
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
                raise BlockNotAvailable(f"tron: block {t.block_number} answered from another fork")
        return found

    def _block_transfers(
        self,
        block: dict[str, Any],
        infos: list[Any],
        watched_hex: dict[str, str],
        token_hex: dict[str, str],
        *,
        native: bool = True,
    ) -> list[Transfer]:
        ref = _block_ref(block, "block")
        txs = block["transactions"]
        if not isinstance(txs, list):
            raise MalformedResponse(f"block {ref.number}: transactions is not a list")
        by_id: dict[str, dict[str, Any]] = {}
        for info in infos:
            if isinstance(info, dict) and isinstance(info.get("id"), str):
                by_id[info["id"]] = info
        tx_ids = [tx.get("txID") if isinstance(tx, dict) else None for tx in txs]
        if len(infos) != len(txs) or set(by_id) != set(tx_ids):
            raise MalformedResponse(
                f"block {ref.number}: transaction infos do not match the block's transactions (reorg between calls?)"
            )
        out: list[Transfer] = []
        logs_before = 0
        for tx_index, tx in enumerate(txs):
            info = by_id[tx["txID"]]
            success, gas_used, fee = _outcome_of(info)
            timestamp_ms = info.get("blockTimeStamp")
            common: dict[str, Any] = {
                "tx_hash": tx["txID"],
                "block_number": ref.number,
                "block_hash": ref.hash,
                "tx_index": tx_index,
                "block_timestamp": timestamp_ms // 1000 if isinstance(timestamp_ms, int) else ref.timestamp,
                "gas_used": gas_used,
                "gas_price": fee,
            }
            # (log_index, from hex20, to hex20, amount, token or None, success) of this transaction
            found: list[tuple[int, str, str, int, str | None, bool]] = []

            contract = self._contract_of(tx)
            if contract is not None:
                kind, value = contract
                if kind == "TransferContract" and native:
                    try:
                        from_hex, to_hex = to_hex20(value["owner_address"]), to_hex20(value["to_address"])
                        amount = _int(value.get("amount"), "amount", 0)
                    except (KeyError, ValueError, TypeError, ChainError):
                        self._skip("malformed_trx_transfer")
                    else:
                        if from_hex in watched_hex or to_hex in watched_hex:
                            found.append((NATIVE_LOG_INDEX, from_hex, to_hex, amount, None, success))
                elif kind == "TriggerSmartContract" and not success and token_hex:
                    failed = self._failed_token_call(value, token_hex, watched_hex)
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
        found = {h: i for h, i in infos.items() if i}
        numbers = sorted({_int(i.get("blockNumber"), "blockNumber", 0) for i in found.values()})

        async def block_of(number: int) -> Any:
            return await self._call("/wallet/getblockbynum", {"num": number})

        blocks = dict(zip(numbers, await self._gather(numbers, block_of), strict=True))
        out: dict[str, TxReceipt] = {}
        for tx_hash, info in found.items():
            number = _int(info.get("blockNumber"), "blockNumber", 0)
            block = blocks[number]
            if not block:
                continue  # reorged away between the calls
            ref = _block_ref(block, f"getblockbynum {number}")
            ids = [tx.get("txID") for tx in block.get("transactions", []) if isinstance(tx, dict)]
            if tx_hash not in ids:
                continue
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
            raise MalformedResponse(f"{signature} on {token}: no constant_result")
        value = constant[0]
        if len(value) % 2 or any(c not in "0123456789abcdefABCDEF" for c in value):
            raise MalformedResponse(f"{signature} on {token}: constant_result is not hex")
        return value

    async def token_info(self, token_address: str) -> TokenInfo:
        token = self.normalise_address(token_address)
        try:
            symbol_hex, decimals_hex = await asyncio.gather(
                self._constant_call(token, "symbol()"), self._constant_call(token, "decimals()")
            )
        except CallReverted as exc:
            raise FatalChainError(f"tron: token {token} is not a TRC20 contract on this chain: {exc}") from exc
        if len(decimals_hex) != 64:
            raise FatalChainError(f"decimals() on {token}: not a uint")
        decimals = int(decimals_hex, 16)
        if decimals > 77:
            raise FatalChainError(f"decimals() on {token}: {decimals} is not a plausible value")
        return TokenInfo(address=token, symbol=_decode_abi_string(symbol_hex), decimals=decimals)

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
