"""A Tron full node (java-tron HTTP API) simulator, for tests and ``make demo``.

It speaks the real wire format, quirks included:

* POST JSON bodies (GET with query parameters also works, as on java-tron); unknown paths answer 404.
* proto3 JSON: fields at their default are omitted (no ``transactions`` key in an empty block, ``{}`` for an
  unknown account, no ``balance`` key at zero, no ``number`` in the genesis block header).
* ``visible``: 21-byte hex ``41..`` addresses by default, base58 with ``"visible": true`` (inputs are then expected
  in the same form). Log addresses are always 20-byte hex without ``41``.
* errors are HTTP 200 ``{"Error": "class java.lang.X : msg"}``; ``/wallet/gettransactioninfobyblocknum`` answers a
  bare JSON array; ``/wallet/getblockbylimitnext`` answers ``{}`` outside its [start, end) <= 100 contract.
* block IDs are 64 hex digits whose first 16 encode the block number; ``parentHash`` links them.
* the solidified head lags the head by ``solid_lag`` blocks (18 by default); ``/walletsolidity/*`` serve it.
* ``/wallet/getblockbyid {"value": id}`` answers the block with that ID (transactions included) or ``{}``.

State: TRX balances (sun) and TRC20 tokens with balances. Transactions are queued by the Python API and take
effect when a block is produced (``produce_block``, ``produce_blocks`` or the timer of ``block_time_s``). Fees are
reported in receipts (energy × 100 sun) but never deducted, so balances equal the sum of the transfers.
A TRC20 transfer without enough balance reverts like the real contract; a TRX transfer is refused at submission.

Faults (``sim.faults``): the next ``count`` requests, or a ``probability`` of each, get a rate-limit ``Error``
body, a TronGrid-style 403/429/503, a 500, a truncated body or a delay. ``api_key=...`` makes every request without
the header ``TRON-PRO-API-KEY`` equal to it fail with 401; ``sim.requests`` records the path and headers of each.

A lagging node behind a load balancer (``sim.faults.lag(probability, blocks=3)``): that share of the requests is
answered, in the same wire format, by a node that saw the chain as it was ``blocks`` blocks ago (so after a fork it
may still be on the old branch): ``getnowblock`` and ``getnodeinfo``'s ``block``/``solidityBlock`` lower,
``getblockbylimitnext`` short or ``{}`` above its head, ``gettransactioninfobyblocknum`` ``[]``,
``getblockbynum``/``getblock``/``getblockbyid``/``gettransactioninfobyid`` ``{}`` for what it has not seen.
``faults.injected["lagging"]`` counts such requests, ``faults.injected["lag_hidden"]`` those whose answer differed from
the up-to-date node's.

Python API (sync, call it from the loop that runs the server)::

    async with TronSimulator() as sim:
        alice, bob = sim.new_address(), sim.new_address()
        sim.fund(alice, 10_000_000)
        usdt = sim.deploy_trc20("USDT", 6)
        sim.mint(usdt, alice, 5_000_000)
        sim.transfer_trx(alice, bob, 1_000)
        sim.transfer_trc20(usdt, alice, bob, 1_000, revert=False)
        sim.produce_block()
        sim.fork(3, replacement_txs=[TrxTransfer(alice, bob, 7)])

Standalone (for the demo)::

    python -m citadel_devtools.tron_simulator --port 8090 --block-time 3 [--api-key K] [--demo]

It prints one JSON line with ``url`` (and, with ``--demo``, the demo wallets and tokens) then serves until killed.
An admin API under ``/_sim/`` (state, fund, deploy_trc20, mint, transfer_trx, transfer_trc20, produce, fork) lets a
separate process drive it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import logging
import random
import sys
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
from aiohttp import web

from chains.tron.address import to_base58, to_hex20, to_hex41, to_word, word_to_base58

log = logging.getLogger(__name__)

TRANSFER_TOPIC = "ddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"
SEL_TRANSFER = "a9059cbb"
SEL_BALANCE_OF = "70a08231"
SEL_DECIMALS = "313ce567"
SEL_SYMBOL = "95d89b41"
SEL_NAME = "06fdde03"
SEL_TOTAL_SUPPLY = "18160ddd"
_SIGNATURES = {
    "transfer(address,uint256)": SEL_TRANSFER,
    "balanceOf(address)": SEL_BALANCE_OF,
    "decimals()": SEL_DECIMALS,
    "symbol()": SEL_SYMBOL,
    "name()": SEL_NAME,
    "totalSupply()": SEL_TOTAL_SUPPLY,
}
ENERGY_PRICE_SUN = 100
SEEN_CHAINS = 64  # how many past states of the chain a lagging node can be in
BLOCK_INTERVAL_MS = 3000
GENESIS_PARENT = (
    "957dc2d350daecc7bb6a38f3938ebde0a0c1cedafe15f0edae4256a2907449f6"  # mainnet genesis parentHash
)
LACK_OF_RESOURCES = "class java.lang.IllegalAccessException : lack of computing resources"
FREQUENCY_LIMIT_403 = "The key exceeds the frequency limit(30), and the query server is suspended for 30s"
RATE_429 = "request rate exceeded the allowed_rps(15), and the query server is suspended for 1s"
HTML_503 = "<html>\r\n<head><title>503 Service Temporarily Unavailable</title></head>\r\n<body>\r\n<center><h1>503 Service Temporarily Unavailable</h1></center>\r\n</body>\r\n</html>\r\n"


class ForkBelowSolidified(RuntimeError):
    """``fork`` would replace a solidified block (pass ``force=True`` to do it anyway)."""


# ---------------------------------------------------------------------------------------------------- tx specs


@dataclass(frozen=True)
class TrxTransfer:
    from_address: str
    to_address: str
    amount_sun: int


@dataclass(frozen=True)
class Trc20Transfer:
    token: str
    from_address: str
    to_address: str
    amount: int
    revert: bool = False
    pad_with_41: bool = False  # put the 41 byte in the recipient word's padding, as some wallets do


@dataclass(frozen=True)
class RawLogs:
    """A contract call whose info carries ``logs`` verbatim (for malformed or non-standard logs)."""

    contract: str
    owner: str
    logs: tuple[dict[str, Any], ...]
    data: str = ""


@dataclass(frozen=True)
class OtherContract:
    """A transaction of another contract type (e.g. ``FreezeBalanceV2Contract``): indexers must ignore it."""

    owner: str
    contract_type: str
    value: tuple[tuple[str, Any], ...] = ()


TxSpec = TrxTransfer | Trc20Transfer | RawLogs | OtherContract


# ---------------------------------------------------------------------------------------------------- chain data


@dataclass
class Token:
    address: str  # base58
    symbol: str
    decimals: int
    name: str
    balances: dict[str, int] = field(default_factory=dict)  # base58 -> raw
    symbol_answer: str | None = None  # symbol()'s constant_result verbatim (hex), or "revert"; None: the ABI string

    @property
    def total_supply(self) -> int:
        return sum(self.balances.values())


@dataclass
class SimTx:
    txid: str
    tx: dict[str, Any]  # hex form (visible=false)
    info: dict[str, Any]  # hex form, without the block fields
    deltas: list[tuple[str | None, str, int]]  # (token or None, address, delta) applied by the block


@dataclass
class SimBlock:
    number: int
    block_id: str
    parent_hash: str
    timestamp_ms: int
    witness: str  # 41-hex
    txs: list[SimTx]


@dataclass
class SeenRequest:
    method: str
    path: str
    headers: dict[str, str]
    api_key: str | None


# ---------------------------------------------------------------------------------------------------- faults

FaultKind = Literal[
    "lack_of_resources",
    "frequency_limit_body",
    "http_403",
    "http_429",
    "http_503",
    "http_500",
    "truncated",
    "slow",
]


@dataclass
class Fault:
    kind: FaultKind
    count: int = 0  # the next `count` matching requests
    probability: float = 0.0  # then each matching request with this probability
    paths: frozenset[str] | None = None  # None = every path
    delay_s: float = 0.0  # for "slow"

    def matches(self, path: str) -> bool:
        return self.paths is None or path in self.paths


@dataclass
class Faults:
    rules: list[Fault] = field(default_factory=list)
    injected: dict[str, int] = field(default_factory=dict)
    rng: random.Random = field(default_factory=lambda: random.Random(7))
    lagging: float = 0.0  # share of the requests a lagging node answers
    lag_blocks: int = 3

    def lag(self, probability: float, blocks: int = 3) -> None:
        """From now on, ``probability`` of the requests are answered by a node ``blocks`` blocks behind."""
        self.lagging, self.lag_blocks = probability, blocks

    def count(self, kind: str) -> None:
        self.injected[kind] = self.injected.get(kind, 0) + 1

    def lag_now(self, path: str) -> bool:
        """Whether this request goes to the lagging node (one draw per request)."""
        if path.startswith("/_sim/") or self.lagging <= 0 or self.rng.random() >= self.lagging:
            return False
        self.count("lagging")
        return True

    def add(
        self,
        kind: FaultKind,
        *,
        count: int = 0,
        probability: float = 0.0,
        paths: Sequence[str] | None = None,
        delay_s: float = 0.0,
    ) -> Fault:
        fault = Fault(kind, count, probability, frozenset(paths) if paths is not None else None, delay_s)
        self.rules.append(fault)
        return fault

    def clear(self) -> None:
        """No more faults (rules and lagging)."""
        self.rules.clear()
        self.lagging = 0.0

    def pick(self, path: str) -> Fault | None:
        if path.startswith("/_sim/"):
            return None
        for fault in self.rules:
            if not fault.matches(path):
                continue
            if fault.count > 0:
                fault.count -= 1
            elif not (fault.probability > 0 and self.rng.random() < fault.probability):
                continue
            self.injected[fault.kind] = self.injected.get(fault.kind, 0) + 1
            return fault
        return None


# ---------------------------------------------------------------------------------------------------- helpers


class _JavaError(Exception):
    """Answered as HTTP 200 ``{"Error": "class <java_class> : <message>"}``."""

    def __init__(self, java_class: str, message: str) -> None:
        super().__init__(f"class {java_class} : {message}")


def _sha(*parts: object) -> str:
    return hashlib.sha256(orjson.dumps(parts, option=orjson.OPT_SORT_KEYS)).hexdigest()


def _uint_word(value: int) -> str:
    return f"{value:064x}"


def _abi_string(text: str) -> str:
    data = text.encode()
    padded = data.hex().ljust(((len(data) + 31) // 32) * 64, "0")
    return _uint_word(32) + _uint_word(len(data)) + padded


def _truthy(value: object) -> bool:
    return value is True or (isinstance(value, str) and value.lower() == "true")


def _int_param(params: dict[str, Any], name: str, default: int | None = None) -> int:
    value = params.get(name, default)
    if value is None:
        value = 0
    if isinstance(value, bool):
        raise _JavaError("java.lang.NumberFormatException", f'For input string: "{value}"')
    if isinstance(value, int):
        return value
    try:
        return int(str(value))
    except ValueError:
        raise _JavaError("java.lang.NumberFormatException", f'For input string: "{value}"') from None


# ---------------------------------------------------------------------------------------------------- simulator


class TronSimulator:
    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        initial_blocks: int = 40,
        solid_lag: int = 18,
        block_time_s: float | None = None,
        api_key: str | None = None,
        seed: int = 0,
        genesis_timestamp_ms: int = 1_700_000_000_000,
    ) -> None:
        self.host = host
        self.port = port
        self.solid_lag = solid_lag
        self.block_time_s = block_time_s
        self.api_key = api_key
        self.faults = Faults()
        self.requests: list[SeenRequest] = []
        self.tokens: dict[str, Token] = {}
        self.trx: dict[str, int] = {}  # base58 -> sun
        self.activated: dict[str, int] = {}  # base58 -> create_time (ms)
        self.blocks: list[SimBlock] = []
        self.pending: list[tuple[str, TxSpec]] = []  # (txID, spec)
        self._seed = seed
        self._nonce = 0
        self._tx_counter = 0
        self._genesis_ts = genesis_timestamp_ms
        self._witnesses = [to_hex41(bytes.fromhex(_sha("witness", seed, i)[:40])) for i in range(27)]
        self._runner: web.AppRunner | None = None
        self._timer: asyncio.Task[None] | None = None
        self._txs: dict[str, tuple[SimBlock, int]] = {}
        self._seen: deque[list[SimBlock]] = deque(maxlen=SEEN_CHAINS)  # the chain after each block, newest last
        self._add_block([])  # genesis
        self.produce_blocks(initial_blocks)

    # ------------------------------------------------------------------------------------------- lifecycle

    async def __aenter__(self) -> TronSimulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        app = web.Application(client_max_size=4 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        sockname = self._runner.addresses[0]
        self.port = int(sockname[1])
        if self.block_time_s:
            self._timer = asyncio.create_task(self._produce_forever(self.block_time_s))

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._timer
            self._timer = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def _produce_forever(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            self.produce_block()

    # ------------------------------------------------------------------------------------------- chain view

    @property
    def head_number(self) -> int:
        return self.blocks[-1].number

    @property
    def solid_number(self) -> int:
        return max(0, self.head_number - self.solid_lag)

    def block(self, number: int) -> SimBlock:
        return self.blocks[number]

    def trx_balance(self, address: str) -> int:
        return self.trx.get(to_base58(address), 0)

    def token_balance(self, token: str, address: str) -> int:
        return self.tokens[to_base58(token)].balances.get(to_base58(address), 0)

    # ------------------------------------------------------------------------------------------- state set-up

    def new_address(self) -> str:
        self._nonce += 1
        return to_base58(bytes.fromhex(_sha("account", self._seed, self._nonce)[:40]))

    def fund(self, address: str, amount_sun: int) -> None:
        """Give TRX directly (genesis-like; no transaction) and activate the account."""
        addr = to_base58(address)
        self.trx[addr] = self.trx.get(addr, 0) + amount_sun
        self.activated.setdefault(addr, self.blocks[-1].timestamp_ms)

    def deploy_trc20(
        self, symbol: str, decimals: int, name: str | None = None, *, symbol_answer: str | None = None
    ) -> str:
        """A TRC20 token. ``symbol_answer``: what ``symbol()`` answers instead of the ABI string ``symbol`` (hex
        verbatim, or ``"revert"``), as some real tokens do."""
        self._nonce += 1
        address = to_base58(bytes.fromhex(_sha("contract", self._seed, self._nonce, symbol)[:40]))
        self.tokens[address] = Token(address, symbol, decimals, name or symbol, symbol_answer=symbol_answer)
        return address

    def mint(self, token: str, to: str, amount: int) -> None:
        """Credit tokens directly (no transaction, no log)."""
        tok = self.tokens[to_base58(token)]
        addr = to_base58(to)
        tok.balances[addr] = tok.balances.get(addr, 0) + amount

    # ------------------------------------------------------------------------------------------- transactions

    def submit(self, spec: TxSpec) -> str:
        """Queue a transaction for the next block; returns its txID."""
        if isinstance(spec, TrxTransfer):
            sender = to_base58(spec.from_address)
            to_base58(spec.to_address)
            if spec.amount_sun <= 0:
                raise ValueError("amount must be positive")
            queued = sum(
                p.amount_sun
                for _, p in self.pending
                if isinstance(p, TrxTransfer) and p.from_address == sender
            )
            if self.trx.get(sender, 0) - queued < spec.amount_sun:
                raise ValueError("Validate TransferContract error, balance is not sufficient.")
        elif isinstance(spec, Trc20Transfer):
            if to_base58(spec.token) not in self.tokens:
                raise ValueError(f"unknown token {spec.token}")
        txid = self._new_txid(spec)
        self.pending.append((txid, spec))
        return txid

    def transfer_trx(self, from_address: str, to_address: str, amount_sun: int) -> str:
        return self.submit(TrxTransfer(to_base58(from_address), to_base58(to_address), amount_sun))

    def transfer_trc20(
        self, token: str, from_address: str, to_address: str, amount: int, revert: bool = False
    ) -> str:
        return self.submit(
            Trc20Transfer(to_base58(token), to_base58(from_address), to_base58(to_address), amount, revert)
        )

    def emit_logs(self, contract: str, owner: str, logs: Sequence[dict[str, Any]]) -> str:
        return self.submit(RawLogs(to_base58(contract), to_base58(owner), tuple(logs)))

    def _new_txid(self, spec: TxSpec) -> str:
        self._tx_counter += 1
        return _sha("tx", self._seed, self._tx_counter, repr(spec))

    def produce_block(self) -> SimBlock:
        """A block with every pending transaction (their state changes apply in order)."""
        pending, self.pending = self.pending, []
        txs: list[SimTx] = []
        number = self.head_number + 1
        for txid, spec in pending:
            built = self._build_tx(spec, txid, number)
            if built is not None:
                txs.append(built)
        return self._add_block(txs)

    def produce_blocks(self, n: int) -> list[SimBlock]:
        return [self.produce_block() for _ in range(n)]

    def fork(
        self,
        depth: int,
        replacement_txs: Sequence[TxSpec] | None = None,
        *,
        new_blocks: int | None = None,
        force: bool = False,
    ) -> list[SimBlock]:
        """Replace the last ``depth`` blocks by ``new_blocks`` (default ``depth``) new ones; ``replacement_txs`` go
        into the first new block. The orphaned transactions are dropped and their state changes undone.
        Refuses (``ForkBelowSolidified``) to replace a solidified block unless ``force``."""
        if depth < 1 or depth >= len(self.blocks):
            raise ValueError(f"fork depth {depth} out of range (head {self.head_number})")
        first_replaced = self.head_number - depth + 1
        if first_replaced <= self.solid_number and not force:
            raise ForkBelowSolidified(
                f"fork of depth {depth} replaces block {first_replaced}, at or below solidified {self.solid_number}"
            )
        self._nonce += 1  # new IDs for the new branch
        for block in reversed(self.blocks[first_replaced:]):
            for tx in reversed(block.txs):
                for token, address, delta in tx.deltas:
                    self._apply(token, address, -delta)
                self._txs.pop(tx.txid, None)
        del self.blocks[first_replaced:]
        self.pending = [(self._new_txid(spec), spec) for spec in replacement_txs or []] + self.pending
        return self.produce_blocks(depth if new_blocks is None else new_blocks)

    def _apply(self, token: str | None, address: str, delta: int) -> None:
        if token is None:
            self.trx[address] = self.trx.get(address, 0) + delta
        else:
            balances = self.tokens[token].balances
            balances[address] = balances.get(address, 0) + delta

    def _add_block(self, txs: list[SimTx]) -> SimBlock:
        number = len(self.blocks)
        parent = self.blocks[-1].block_id if self.blocks else GENESIS_PARENT
        timestamp = self._genesis_ts + number * BLOCK_INTERVAL_MS if number else 0
        digest = _sha("block", self._seed, number, parent, [t.txid for t in txs], self._nonce)
        block = SimBlock(
            number=number,
            block_id=f"{number:016x}{digest[16:]}",
            parent_hash=parent,
            timestamp_ms=timestamp,
            witness=self._witnesses[number % len(self._witnesses)] if number else "",
            txs=txs,
        )
        self.blocks.append(block)
        self._seen.append(list(self.blocks))
        for index, tx in enumerate(txs):  # their deltas were applied as they were built
            self._txs[tx.txid] = (block, index)
            for token, address, delta in tx.deltas:
                if token is None and delta > 0:
                    self.activated.setdefault(address, block.timestamp_ms)
        return block

    def _raw_data(
        self, contract_type: str, value: dict[str, Any], number: int, **extra: Any
    ) -> dict[str, Any]:
        parent = self.blocks[-1]
        ts = self._genesis_ts + number * BLOCK_INTERVAL_MS - 1500
        raw: dict[str, Any] = {
            "contract": [
                {
                    "parameter": {
                        "value": value,
                        "type_url": f"type.googleapis.com/protocol.{contract_type}",
                    },
                    "type": contract_type,
                }
            ],
            "ref_block_bytes": f"{parent.number & 0xFFFF:04x}",
            "ref_block_hash": parent.block_id[16:32],
            "expiration": ts + 60_000,
            "timestamp": ts,
        }
        raw.update(extra)
        return raw

    def _build_tx(self, spec: TxSpec, txid: str, number: int) -> SimTx | None:
        if isinstance(spec, TrxTransfer):
            if self.trx.get(spec.from_address, 0) < spec.amount_sun:
                log.warning("dropping TRX transfer %s: balance is not sufficient", txid)
                return None
            value = {
                "amount": spec.amount_sun,
                "owner_address": to_hex41(spec.from_address),
                "to_address": to_hex41(spec.to_address),
            }
            tx = {
                "ret": [{"contractRet": "SUCCESS"}],
                "signature": [_sha("sig", txid) * 2 + "1b"],
                "txID": txid,
                "raw_data": self._raw_data("TransferContract", value, number),
            }
            info: dict[str, Any] = {"id": txid, "receipt": {"net_usage": 268}}
            deltas: list[tuple[str | None, str, int]] = [
                (None, spec.from_address, -spec.amount_sun),
                (None, spec.to_address, spec.amount_sun),
            ]
            self._apply(None, spec.from_address, -spec.amount_sun)
            self._apply(None, spec.to_address, spec.amount_sun)
            return SimTx(txid, tx, info, deltas)
        if isinstance(spec, Trc20Transfer):
            token = self.tokens[spec.token]
            word = ("0" * 22 + "41" if spec.pad_with_41 else "0" * 24) + to_hex20(spec.to_address)
            data = SEL_TRANSFER + word + _uint_word(spec.amount)
            ok = not spec.revert and token.balances.get(spec.from_address, 0) >= spec.amount
            energy = (31_895 if token.balances.get(spec.to_address, 0) else 64_895) if ok else 1_956
            value = {
                "data": data,
                "owner_address": to_hex41(spec.from_address),
                "contract_address": to_hex41(spec.token),
            }
            tx = {
                "ret": [{"contractRet": "SUCCESS" if ok else "REVERT"}],
                "signature": [_sha("sig", txid) * 2 + "1c"],
                "txID": txid,
                "raw_data": self._raw_data("TriggerSmartContract", value, number, fee_limit=100_000_000),
            }
            fee = energy * ENERGY_PRICE_SUN
            receipt: dict[str, Any] = {
                "energy_fee": fee,
                "energy_usage_total": energy,
                "net_usage": 345,
                "result": "SUCCESS" if ok else "REVERT",
            }
            info = {
                "id": txid,
                "fee": fee,
                "contractResult": ["0" * 64 if ok else ""],  # USDT answers all zeros even on success
                "contract_address": to_hex41(spec.token),
                "receipt": receipt,
            }
            if not ok:
                info["result"] = "FAILED"
                info["resMessage"] = b"REVERT opcode executed".hex()
                return SimTx(txid, tx, info, [])
            info["log"] = [
                {
                    "address": to_hex20(spec.token),
                    "topics": [TRANSFER_TOPIC, to_word(spec.from_address), to_word(spec.to_address)],
                    "data": _uint_word(spec.amount),
                }
            ]
            deltas = [
                (spec.token, spec.from_address, -spec.amount),
                (spec.token, spec.to_address, spec.amount),
            ]
            self._apply(spec.token, spec.from_address, -spec.amount)
            self._apply(spec.token, spec.to_address, spec.amount)
            return SimTx(txid, tx, info, deltas)
        if isinstance(spec, RawLogs):
            value = {
                "data": spec.data or SEL_TRANSFER,
                "owner_address": to_hex41(spec.owner),
                "contract_address": to_hex41(spec.contract),
            }
            tx = {
                "ret": [{"contractRet": "SUCCESS"}],
                "txID": txid,
                "raw_data": self._raw_data("TriggerSmartContract", value, number, fee_limit=100_000_000),
            }
            info = {
                "id": txid,
                "fee": 3_000_000,
                "contract_address": to_hex41(spec.contract),
                "receipt": {"energy_usage_total": 30_000, "net_usage": 345, "result": "SUCCESS"},
                "log": [dict(entry) for entry in spec.logs],
            }
            return SimTx(txid, tx, info, [])
        value = {"owner_address": to_hex41(spec.owner), **dict(spec.value)}
        tx = {
            "ret": [{"contractRet": "SUCCESS"}],
            "txID": txid,
            "raw_data": self._raw_data(spec.contract_type, value, number),
        }
        return SimTx(txid, tx, {"id": txid, "receipt": {"net_usage": 280}}, [])

    # ------------------------------------------------------------------------------------------- JSON views

    def _addr(self, hex41: str, visible: bool) -> str:
        return to_base58(hex41) if visible else hex41

    def _tx_json(self, tx: SimTx, visible: bool) -> dict[str, Any]:
        out = json.loads(json.dumps(tx.tx))
        if visible:
            out["visible"] = True
            for contract in out["raw_data"]["contract"]:
                value = contract["parameter"]["value"]
                for key in ("owner_address", "to_address", "contract_address"):
                    if key in value:
                        value[key] = to_base58(value[key])
        return dict(out)

    def _block_json(self, block: SimBlock, visible: bool, detail: bool = True) -> dict[str, Any]:
        raw: dict[str, Any] = {}
        if block.number:
            raw["number"] = block.number
        raw["txTrieRoot"] = _sha("trie", [t.txid for t in block.txs]) if block.txs else "0" * 64
        if block.witness:
            raw["witness_address"] = self._addr(block.witness, visible)
        raw["parentHash"] = block.parent_hash
        if block.number:
            raw["version"] = 31
        if block.timestamp_ms:
            raw["timestamp"] = block.timestamp_ms
        header: dict[str, Any] = {"raw_data": raw}
        if block.number:
            header["witness_signature"] = _sha("wsig", block.block_id) * 2 + "00"
        out: dict[str, Any] = {"blockID": block.block_id, "block_header": header}
        if detail and block.txs:
            out["transactions"] = [self._tx_json(tx, visible) for tx in block.txs]
        return out

    def _info_json(self, block: SimBlock, tx: SimTx, visible: bool) -> dict[str, Any]:
        info = json.loads(json.dumps(tx.info))
        out: dict[str, Any] = {"id": info.pop("id")}
        if "fee" in info:
            out["fee"] = info.pop("fee")
        out["blockNumber"] = block.number
        out["blockTimeStamp"] = block.timestamp_ms
        out.update(info)
        if visible and "contract_address" in out:
            out["contract_address"] = to_base58(out["contract_address"])
        return out

    # ------------------------------------------------------------------------------------------- HTTP

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        path = request.path.rstrip("/") or "/"
        headers = {k: v for k, v in request.headers.items()}
        api_key = request.headers.get("TRON-PRO-API-KEY")
        self.requests.append(SeenRequest(request.method, path, headers, api_key))
        if path.startswith("/_sim/"):
            return await self._admin(request, path)
        if self.api_key is not None and api_key != self.api_key:
            return web.json_response(
                {"Success": False, "Error": "ApiKey not exists", "StatusCode": 401}, status=401
            )
        fault = self.faults.pick(path)
        if fault is not None:
            answer = await self._fault_answer(fault)
            if answer is not None:
                return answer
        if path not in self._routes(self.blocks) or request.method not in ("GET", "POST"):
            return web.Response(status=404, text=f"<html><body><h2>404 Not found</h2>{path}</body></html>")
        lagging = self.faults.lag_now(path)
        try:
            params = await self._params(request)
            visible = _truthy(params.get("visible", False))
            result = self._routes(self._lagging_chain() if lagging else self.blocks)[path](params, visible)
            if lagging and result != self._routes(self.blocks)[path](params, visible):
                self.faults.count("lag_hidden")
        except _JavaError as exc:
            result = {"Error": str(exc)}
        except ValueError as exc:  # address decoding
            result = {"Error": f"class java.lang.IllegalArgumentException : {exc}"}
        return web.Response(body=orjson.dumps(result), content_type="application/json")

    def _lagging_chain(self) -> list[SimBlock]:
        """The chain as a node ``lag_blocks`` blocks behind has it: as it was that many blocks ago."""
        lag = self.faults.lag_blocks
        if lag <= 0:
            return self.blocks
        if lag < len(self._seen):
            return self._seen[-1 - lag]
        return self.blocks[: max(1, len(self.blocks) - lag)]

    async def _fault_answer(self, fault: Fault) -> web.StreamResponse | None:
        kind = fault.kind
        if kind == "slow":
            await asyncio.sleep(fault.delay_s)
            return None
        if kind == "lack_of_resources":
            return web.json_response({"Error": LACK_OF_RESOURCES})
        if kind == "frequency_limit_body":
            return web.json_response({"Error": FREQUENCY_LIMIT_403})
        if kind == "http_403":
            return web.json_response({"Error": FREQUENCY_LIMIT_403}, status=403)
        if kind == "http_429":
            return web.json_response(
                {"Success": False, "Error": RATE_429, "StatusCode": 429},
                status=429,
                headers={"Retry-After": "1"},
            )
        if kind == "http_503":
            return web.Response(status=503, text=HTML_503, content_type="text/html")
        if kind == "http_500":
            return web.Response(status=500, text="Internal Server Error")
        # truncated
        return web.Response(body=b'{"blockID":"00000000', content_type="application/json")

    async def _params(self, request: web.Request) -> dict[str, Any]:
        params: dict[str, Any] = dict(request.query)
        if request.method == "POST":
            body = await request.read()
            if body.strip():
                try:
                    parsed = json.loads(body)
                except ValueError:
                    raise _JavaError(
                        "org.tron.core.services.http.JsonFormat$ParseException", '1:1: Expected "{".'
                    ) from None
                if not isinstance(parsed, dict):
                    raise _JavaError(
                        "org.tron.core.services.http.JsonFormat$ParseException", '1:1: Expected "{".'
                    )
                params.update(parsed)
        return params

    def _routes(self, chain: Sequence[SimBlock]) -> dict[str, Callable[[dict[str, Any], bool], Any]]:
        """The API as a node whose chain is ``chain`` (the current one, or what a lagging node has) answers it."""
        head = len(chain) - 1
        solid = max(0, head - self.solid_lag)
        return {
            "/wallet/getnowblock": lambda p, v: self._block_json(chain[head], v),
            "/walletsolidity/getnowblock": lambda p, v: self._block_json(chain[solid], v),
            "/wallet/getblockbynum": lambda p, v: self._get_block_by_num(p, v, chain, head),
            "/walletsolidity/getblockbynum": lambda p, v: self._get_block_by_num(p, v, chain, solid),
            "/wallet/getblock": lambda p, v: self._get_block(p, v, chain, head),
            "/walletsolidity/getblock": lambda p, v: self._get_block(p, v, chain, solid),
            "/wallet/getblockbyid": lambda p, v: self._get_block_by_id(p, v, chain, head),
            "/wallet/getblockbylimitnext": lambda p, v: self._get_block_by_limit_next(p, v, chain, head),
            "/wallet/gettransactioninfobyblocknum": lambda p, v: self._infos_by_num(p, v, chain, head),
            "/walletsolidity/gettransactioninfobyblocknum": lambda p, v: self._infos_by_num(p, v, chain, solid),
            "/wallet/gettransactioninfobyid": lambda p, v: self._info_by_id(p, v, chain, head),
            "/walletsolidity/gettransactioninfobyid": lambda p, v: self._info_by_id(p, v, chain, solid),
            "/wallet/gettransactionbyid": lambda p, v: self._tx_by_id(p, v, chain, head),
            "/wallet/getaccount": lambda p, v: self._get_account(p, v),
            "/walletsolidity/getaccount": lambda p, v: self._get_account(p, v),
            "/wallet/triggerconstantcontract": lambda p, v: self._trigger_constant(p, v),
            "/wallet/getnodeinfo": lambda p, v: self._node_info(chain[head], chain[solid]),
        }

    def _get_block_by_num(
        self, params: dict[str, Any], visible: bool, chain: Sequence[SimBlock], top: int
    ) -> dict[str, Any]:
        num = _int_param(params, "num", 0)
        if num < 0 or num > top:
            return {}
        return self._block_json(chain[num], visible)

    def _by_id(self, key: str, chain: Sequence[SimBlock], top: int) -> SimBlock | None:
        number = int(key[:16], 16)
        if number <= top and chain[number].block_id == key:
            return chain[number]
        return None

    def _get_block(
        self, params: dict[str, Any], visible: bool, chain: Sequence[SimBlock], top: int
    ) -> dict[str, Any]:
        detail = _truthy(params.get("detail", False))
        key = params.get("id_or_num")
        if key is None or key == "":
            return self._block_json(chain[top], visible, detail)
        key = str(key)
        if len(key) == 64:
            block = self._by_id(key, chain, top)
            return self._block_json(block, visible, detail) if block is not None else {}
        if not key.isdigit():
            raise _JavaError("java.lang.NumberFormatException", f'For input string: "{key}"')
        number = int(key)
        return self._block_json(chain[number], visible, detail) if number <= top else {}

    def _get_block_by_id(
        self, params: dict[str, Any], visible: bool, chain: Sequence[SimBlock], top: int
    ) -> dict[str, Any]:
        key = str(params.get("value", ""))
        if any(c not in "0123456789abcdefABCDEF" for c in key) or len(key) % 2:
            raise _JavaError(
                "org.bouncycastle.util.encoders.DecoderException",
                "exception decoding Hex string: invalid characters encountered in Hex string",
            )
        block = self._by_id(key.lower(), chain, top) if len(key) == 64 else None
        return self._block_json(block, visible) if block is not None else {}

    def _get_block_by_limit_next(
        self, params: dict[str, Any], visible: bool, chain: Sequence[SimBlock], top: int
    ) -> dict[str, Any]:
        start = _int_param(params, "startNum", 0)
        end = _int_param(params, "endNum", 0)
        if start < 0 or end <= start or end - start > 100:
            return {}
        blocks = [self._block_json(chain[n], visible) for n in range(start, min(end, top + 1))]
        return {"block": blocks} if blocks else {}

    def _infos_by_num(
        self, params: dict[str, Any], visible: bool, chain: Sequence[SimBlock], top: int
    ) -> list[dict[str, Any]]:
        num = _int_param(params, "num", 0)
        if num < 0 or num > top:
            return []
        block = chain[num]
        return [self._info_json(block, tx, visible) for tx in block.txs]

    def _locate(
        self, params: dict[str, Any], chain: Sequence[SimBlock], top: int
    ) -> tuple[SimBlock, SimTx] | None:
        txid = str(params.get("value", ""))
        found = self._txs.get(txid)
        if chain is not self.blocks:  # a lagging node: where it has the transaction, if anywhere
            found = next(((b, i) for b in chain for i, tx in enumerate(b.txs) if tx.txid == txid), None)
        if found is None or found[0].number > top:
            return None
        block, index = found
        return block, block.txs[index]

    def _info_by_id(
        self, params: dict[str, Any], visible: bool, chain: Sequence[SimBlock], top: int
    ) -> dict[str, Any]:
        found = self._locate(params, chain, top)
        return self._info_json(*found, visible) if found else {}

    def _tx_by_id(
        self, params: dict[str, Any], visible: bool, chain: Sequence[SimBlock], top: int
    ) -> dict[str, Any]:
        found = self._locate(params, chain, top)
        return self._tx_json(found[1], visible) if found else {}

    def _input_address(self, value: object, visible: bool, what: str) -> str:
        text = str(value or "")
        if not text:
            raise _JavaError("java.lang.IllegalArgumentException", f"Invalid {what}")
        if visible:
            if not text.startswith("T"):
                raise _JavaError("java.lang.IllegalArgumentException", f"Invalid {what}: expected base58")
            return to_base58(text)
        if any(c not in "0123456789abcdefABCDEF" for c in text):
            raise _JavaError(
                "org.bouncycastle.util.encoders.DecoderException",
                "exception decoding Hex string: invalid characters encountered in Hex string",
            )
        if len(text) != 42 or not text.startswith("41"):
            raise _JavaError("java.lang.IllegalArgumentException", f"Invalid {what}")
        return to_base58(text)

    def _get_account(self, params: dict[str, Any], visible: bool) -> dict[str, Any]:
        address = self._input_address(params.get("address"), visible, "address")
        if address not in self.activated:
            return {}
        out: dict[str, Any] = {"address": address if visible else to_hex41(address)}
        balance = self.trx.get(address, 0)
        if balance:
            out["balance"] = balance
        out["create_time"] = self.activated[address]
        out["net_window_size"] = 28800000
        out["account_resource"] = {"energy_window_size": 28800000}
        return out

    def _trigger_constant(self, params: dict[str, Any], visible: bool) -> dict[str, Any]:
        contract = self._input_address(params.get("contract_address"), visible, "contract_address")
        if params.get("owner_address"):
            self._input_address(params.get("owner_address"), visible, "owner_address")
        if "function_selector" in params:
            selector = _SIGNATURES.get(str(params["function_selector"]).replace(" ", ""), "ffffffff")
            args = str(params.get("parameter", ""))
        else:
            data = str(params.get("data", ""))
            selector, args = data[:8], data[8:]
        token = self.tokens.get(contract)
        if token is None:
            return {
                "result": {
                    "code": "CONTRACT_VALIDATE_ERROR",
                    "message": b"Smart contract is not exist.".hex(),
                }
            }
        if selector == SEL_BALANCE_OF and len(args) == 64:
            result = _uint_word(token.balances.get(word_to_base58(args), 0))
        elif selector == SEL_DECIMALS:
            result = _uint_word(token.decimals)
        elif selector == SEL_SYMBOL and token.symbol_answer == "revert":
            return {
                "result": {"code": "CONTRACT_EXE_ERROR", "message": b"REVERT opcode executed".hex()},
                "energy_used": 170,
                "constant_result": [""],
            }
        elif selector == SEL_SYMBOL:
            result = _abi_string(token.symbol) if token.symbol_answer is None else token.symbol_answer
        elif selector == SEL_NAME:
            result = _abi_string(token.name)
        elif selector == SEL_TOTAL_SUPPLY:
            result = _uint_word(token.total_supply)
        else:
            return {
                "result": {"code": "CONTRACT_EXE_ERROR", "message": b"REVERT opcode executed".hex()},
                "energy_used": 170,
                "constant_result": [""],
            }
        return {
            "result": {"result": True},
            "energy_used": 539,
            "constant_result": [result],
            "transaction": {"ret": [{}], "visible": visible, "txID": _sha("call", contract, selector, args)},
        }

    def _node_info(self, head: SimBlock, solid: SimBlock) -> dict[str, Any]:
        return {
            "activeConnectCount": 5,
            "beginSyncNum": head.number,
            "block": f"Num:{head.number},ID:{head.block_id}",
            "configNodeInfo": {"codeVersion": "4.8.0", "p2pVersion": "11111", "versionNum": "19360"},
            "currentConnectCount": 30,
            "machineInfo": {"cpuCount": 8, "javaVersion": "1.8.0_372", "threadCount": 150},
            "passiveConnectCount": 25,
            "solidityBlock": f"Num:{solid.number},ID:{solid.block_id}",
            "totalFlow": 0,
        }

    # ------------------------------------------------------------------------------------------- admin API

    async def _admin(self, request: web.Request, path: str) -> web.StreamResponse:
        body = await request.read()
        params: dict[str, Any] = json.loads(body) if body.strip() else {}
        actions: dict[str, Callable[[], object]] = {
            "/_sim/state": self.state,
            "/_sim/new_address": self.new_address,
            "/_sim/fund": lambda: self.fund(params["address"], int(params["amount"])),
            "/_sim/deploy_trc20": lambda: self.deploy_trc20(params["symbol"], int(params["decimals"])),
            "/_sim/mint": lambda: self.mint(params["token"], params["to"], int(params["amount"])),
            "/_sim/transfer_trx": lambda: self.transfer_trx(
                params["from"], params["to"], int(params["amount"])
            ),
            "/_sim/transfer_trc20": lambda: self.transfer_trc20(
                params["token"],
                params["from"],
                params["to"],
                int(params["amount"]),
                bool(params.get("revert")),
            ),
            "/_sim/produce": lambda: [b.number for b in self.produce_blocks(int(params.get("n", 1)))],
            "/_sim/fork": lambda: [
                b.number for b in self.fork(int(params["depth"]), force=bool(params.get("force")))
            ],
        }
        action = actions.get(path)
        if action is None:
            return web.json_response({"error": "unknown admin action"}, status=404)
        try:
            return web.json_response({"result": action()})
        except (KeyError, ValueError, ForkBelowSolidified) as exc:
            return web.json_response({"error": f"{type(exc).__name__}: {exc}"}, status=400)

    def state(self) -> dict[str, Any]:
        return {
            "head": self.head_number,
            "solid": self.solid_number,
            "trx": dict(self.trx),
            "tokens": {
                t.address: {"symbol": t.symbol, "decimals": t.decimals, "balances": dict(t.balances)}
                for t in self.tokens.values()
            },
        }


# ---------------------------------------------------------------------------------------------------- CLI


def _demo_setup(sim: TronSimulator, wallets: int) -> dict[str, Any]:
    usdt = sim.deploy_trc20("USDT", 6, "Tether USD")
    usdc = sim.deploy_trc20("USDC", 6, "USD Coin")
    addresses = [sim.new_address() for _ in range(wallets)]
    for address in addresses:
        sim.fund(address, 1_000 * 10**6)
        sim.mint(usdt, address, 10_000 * 10**6)
        sim.mint(usdc, address, 5_000 * 10**6)
    return {"wallets": addresses, "tokens": {"USDT": usdt, "USDC": usdc}}


def _random_activity(sim: TronSimulator, info: dict[str, Any], rng: random.Random) -> None:
    wallets: list[str] = info["wallets"]
    outsider = sim.new_address()
    for _ in range(rng.randint(0, 3)):
        a, b = rng.sample(wallets, 2)
        if rng.random() < 0.2:
            b = outsider
        kind = rng.random()
        if kind < 0.3 and sim.trx_balance(a) > 10**6:
            sim.transfer_trx(a, b, rng.randint(1, 10**6))
        else:
            token = info["tokens"]["USDT" if kind < 0.8 else "USDC"]
            sim.transfer_trc20(token, a, b, rng.randint(1, 100 * 10**6), revert=rng.random() < 0.05)


async def _serve(args: argparse.Namespace) -> None:
    sim = TronSimulator(
        host=args.host, port=args.port, block_time_s=None, api_key=args.api_key, solid_lag=args.solid_lag
    )
    info: dict[str, Any] = {}
    if args.demo:
        info = _demo_setup(sim, args.demo_wallets)
    async with sim:
        print(json.dumps({"url": sim.url, **info}), flush=True)
        rng = random.Random(args.seed)
        while True:
            await asyncio.sleep(args.block_time)
            if args.demo:
                _random_activity(sim, info, rng)
            sim.produce_block()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--block-time", type=float, default=3.0, help="seconds between blocks")
    parser.add_argument("--solid-lag", type=int, default=18)
    parser.add_argument("--api-key", default=None, help="require this TRON-PRO-API-KEY header")
    parser.add_argument(
        "--demo", action="store_true", help="deploy USDT/USDC, fund wallets, random transfers"
    )
    parser.add_argument("--demo-wallets", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args))


if __name__ == "__main__":
    main()
