"""A fault-injecting JSON-RPC HTTP proxy in front of anvil (or any node), for the EVM client's tests.

    async with FaultProxy(anvil.url, Faults(seed=7, timeout=0.05, rate_limit=0.1)) as proxy:
        client = JsonRpcClient([proxy.url], chain="bsc", timeout_s=0.5)

Per request one seeded random draw picks at most one transport fault (hang past the client timeout, HTTP 429 with
Retry-After, HTTP 5xx, a truncated JSON body). Independently, eth_getLogs entries are refused with providers' real
error texts when they span more than ``max_log_blocks`` blocks, return more than ``max_log_results`` logs (Infura's
-32005 with a suggested range) or carry more than ``max_filter_values`` values in one filter position. Block replies
can be rewritten to carry a 97-byte ``extraData`` as BSC/Polygon blocks do. ``down()`` stops listening (connection
refused) and drops open connections; ``up()`` listens again on the same port. ``injected`` counts every fault.

A lagging node behind a load balancer (``lagging`` = the probability per HTTP request, a whole batch being one
request; ``lag_blocks`` = how far behind): such a request is answered as a node whose head is ``lag_blocks`` below the
real one, the way geth answers:

- ``eth_blockNumber`` and the ``latest``/``pending`` tags give the lagging head; ``safe``/``finalized`` never above it;
- ``eth_getBlockByNumber``/``eth_getBlockByHash`` of a block above it, and the receipts and transactions in such
  blocks, are ``null``;
- ``eth_getLogs`` over a range is silently clamped to the lagging head (a range starting above it is ``[]``), and by a
  ``blockHash`` above it is geth's ``-32000 unknown block``;
- ``eth_call``, ``eth_getBalance`` and the other state reads at ``latest`` read the state at the lagging head; at a
  block number above it they fail with geth's ``-32000 header not found``.

``injected["lagging"]`` counts the requests answered that way, ``injected["lag_hidden"]`` the entries whose answer it
changed (a ``null``, a clamped range, an error, a lower number).

Per-entry errors inside a batch (``logs_error`` = the probability per request, its own draw): every ``eth_getLogs``
entry of such a request is answered with a provider's per-entry rate-limit error (``LOGS_RATE_LIMITED``), the other
entries as usual. ``injected["logs_error"]`` counts the entries answered so.

A scripted start (``script``): the first requests, one step each in arrival order, are answered as the step says and
draw nothing: ``"ok"`` (no drawn fault), ``"lagging"`` (as the lagging node above), ``"logs_error"`` (the
``eth_getLogs`` entries errored as above); the configured limits and rewrites still apply. The draws above apply
once the script is used up. With one request in flight at a time, a test knows which request meets which fault.

``methods`` records the JSON-RPC methods of every request, one list per HTTP request (a batch's entries in order).

Impossible values (a node serving corrupt data): with probability ``corrupt`` per request, and always for the
transactions in ``corrupt_txs``, logs get a ``logIndex`` of 2^31 (beyond PostgreSQL's ``integer``) and transactions in
full blocks a ``transactionIndex`` of 2^31; blocks numbered in ``corrupt_headers`` get a ``timestamp`` of 2^64 - 1
(beyond any ``datetime``). ``injected["corrupt"]`` counts the values changed.

The proxy accepts any path and query, so a URL can carry a fake API key (``proxy.url_with("/v3/KEY?apikey=KEY")``).
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from citadel_devtools.ports import free_port

EXTRA_DATA_97 = "0x" + "d8" + "83" * 31 + "ab" * 65  # 97 bytes: 32 vanity + 65 seal, like a BSC/bor header


@dataclass
class Faults:
    seed: int = 0
    # probabilities, one draw per HTTP request (their sum should stay below 1)
    timeout: float = 0.0
    rate_limit: float = 0.0
    server_error: float = 0.0
    truncate: float = 0.0
    hang_s: float = 5.0
    retry_after: str | None = "0"
    # eth_getLogs limits
    max_log_blocks: int | None = None
    range_style: str = "bsc"  # bsc | reth | infura | alchemy
    max_log_results: int | None = None
    max_filter_values: int | None = None
    # block rewriting and batch support
    bsc_extra_data: bool = False
    reject_batches: bool = False
    # restrict transport faults to these methods (None: all)
    methods: frozenset[str] | None = None
    # a node behind the others, answering this share of the requests (its own draw, after the transport faults)
    lagging: float = 0.0
    lag_blocks: int = 3
    # a provider's per-entry error for the eth_getLogs entries of this share of the requests (its own draw)
    logs_error: float = 0.0
    # the first requests' faults, one step per request before any draw: "ok", "lagging" or "logs_error"
    script: tuple[str, ...] = ()
    # impossible values
    corrupt: float = 0.0
    corrupt_txs: frozenset[str] = frozenset()
    corrupt_headers: frozenset[int] = frozenset()


OUT_OF_INT32 = hex(2**31)
OUT_OF_DATETIME = hex(2**64 - 1)


LATEST_TAGS = ("latest", "pending")
FINALITY_TAGS = ("safe", "finalized")
UNKNOWN_BLOCK = {"code": -32000, "message": "unknown block"}  # geth, anvil: eth_getLogs by an unknown blockHash
HEADER_NOT_FOUND = {"code": -32000, "message": "header not found"}  # geth: state read at a block it lacks
LOGS_RATE_LIMITED = {  # Alchemy's per-entry answer in a batch that went over the rate
    "code": 429,
    "message": "Your app has exceeded its compute units per second capacity. If you have retries enabled, you can "
               "safely ignore this message.",
}
SCRIPT_STEPS = frozenset({"ok", "lagging", "logs_error"})
STATE_READS = ("eth_call", "eth_getBalance", "eth_getCode", "eth_getTransactionCount", "eth_getStorageAt")


@dataclass
class LagView:
    """How one lagging request sees the chain: its head, and what it resolves tags and block hashes to."""

    head: int
    tags: dict[str, int]  # safe / finalized -> number, already capped at ``head``
    hash_numbers: dict[str, int | None]  # a block hash named by an eth_getLogs filter -> its number (None: unknown)

    def block_param(self, value: Any) -> Any:
        """A block parameter as the lagging node resolves it (tags become numbers; numbers stay)."""
        if value in LATEST_TAGS:
            return hex(self.head)
        if value in FINALITY_TAGS:
            return hex(self.tags[value])
        return value

    def above(self, value: Any) -> bool:
        """A hex block number (or a reply object carrying ``number``/``blockNumber``) above the lagging head."""
        if isinstance(value, dict):
            value = value.get("number", value.get("blockNumber"))
        return isinstance(value, str) and value.startswith("0x") and int(value, 16) > self.head


def range_error(style: str, limit: int, first: int, last: int) -> dict[str, Any]:
    """The JSON-RPC error object a provider of ``style`` answers for a log range over its block limit."""
    if style == "bsc":
        return {"code": -32000, "message": f"exceed maximum block range: {limit}"}
    if style == "reth":
        return {"code": -32602, "message": f"query exceeds max block range {limit}"}
    if style == "infura":
        return {"code": -32602, "message": f"range {last - first + 1} exceeds limit of {limit}"}
    if style == "alchemy":
        return {
            "code": -32602,
            "message": (
                f"Log response size exceeded. You can make eth_getLogs requests with up to a {limit // 1000}K "
                "block range and no limit on the response size, or you can request any block range with a cap "
                f"of 10K logs in the response. Based on your parameters, this block range should work: "
                f"[{hex(first)}, {hex(first + limit - 1)}]"
            ),
        }
    raise ValueError(style)


def too_many_results_error(limit: int, first: int, suggested_to: int) -> dict[str, Any]:
    return {
        "code": -32005,
        "message": (
            f"query returned more than {limit} results. Try with this block range "
            f"[{hex(first)}, {hex(suggested_to)}]."
        ),
        "data": {"from": hex(first), "to": hex(suggested_to)},
    }


@dataclass
class FaultProxy:
    upstream_url: str
    faults: Faults = field(default_factory=Faults)
    injected: Counter[str] = field(default_factory=Counter)
    requests: int = 0
    methods: list[list[str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.port = free_port()
        self.set_faults(self.faults)
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._session: aiohttp.ClientSession | None = None
        self._stopping = asyncio.Event()
        self._down = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url_with(self, path_and_query: str) -> str:
        return self.url + path_and_query

    def set_faults(self, faults: Faults) -> None:
        unknown = set(faults.script) - SCRIPT_STEPS
        if unknown:
            raise ValueError(f"unknown script steps: {sorted(unknown)}")
        self.faults = faults
        self._rng = random.Random(faults.seed)
        self._script = list(faults.script)

    # ------------------------------------------------------------------------------------------- lifecycle

    async def __aenter__(self) -> FaultProxy:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=0.2, access_log=None)  # the "provider" side
        await self._runner.setup()
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        await self.up()

    async def stop(self) -> None:
        self._stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def down(self) -> None:
        """Stop listening: new connections are refused, open ones are dropped on their next request."""
        self._down = True
        if self._site is not None:
            await self._site.stop()
            self._site = None

    async def up(self) -> None:
        assert self._runner is not None
        self._down = False
        self._site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await self._site.start()

    # ------------------------------------------------------------------------------------------- handling

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if self._down:
            self.injected["down"] += 1
            if request.transport is not None:
                request.transport.close()
            return web.Response(status=503)
        body = await request.read()
        self.requests += 1
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            return web.Response(status=400, text="invalid JSON")
        entries: list[dict[str, Any]] = payload if isinstance(payload, list) else [payload]
        is_batch = isinstance(payload, list)
        self.methods.append([str(e.get("method")) if isinstance(e, dict) else "" for e in entries])
        f = self.faults

        if is_batch and f.reject_batches:
            self.injected["batch_rejected"] += 1
            return self._json(
                {
                    "jsonrpc": "2.0",
                    "id": None,
                    "error": {"code": -32600, "message": "batch requests are not supported"},
                }
            )

        step = self._script.pop(0) if self._script else None
        if step is not None:
            lag = await self._lag_view(entries) if step == "lagging" else None
            logs_error = step == "logs_error"
            return await self._answer(entries, is_batch, lag=lag, logs_error=logs_error, truncate=False,
                                      corrupt=False)

        draw = self._rng.random()
        methods = {str(e.get("method")) for e in entries}
        faultable = f.methods is None or bool(methods & f.methods)
        if faultable:
            if draw < f.timeout:
                self.injected["timeout"] += 1
                try:
                    await asyncio.wait_for(self._stopping.wait(), f.hang_s)
                except TimeoutError:
                    pass
                return web.Response(status=504, text="gateway timeout")
            draw -= f.timeout
            if draw < f.rate_limit:
                self.injected["rate_limit"] += 1
                headers = {"Retry-After": f.retry_after} if f.retry_after is not None else {}
                return web.Response(status=429, text="Too Many Requests", headers=headers)
            draw -= f.rate_limit
            if draw < f.server_error:
                self.injected["server_error"] += 1
                return web.Response(status=self._rng.choice([500, 502, 503]), text="upstream error")
            draw -= f.server_error
        truncate = faultable and draw < f.truncate
        lag = await self._lag_view(entries) if f.lagging and self._rng.random() < f.lagging else None
        corrupt = bool(f.corrupt) and self._rng.random() < f.corrupt
        logs_error = bool(f.logs_error) and self._rng.random() < f.logs_error
        return await self._answer(entries, is_batch, lag=lag, logs_error=logs_error, truncate=truncate,
                                  corrupt=corrupt)

    async def _answer(
        self, entries: list[dict[str, Any]], is_batch: bool, *, lag: LagView | None, logs_error: bool,
        truncate: bool, corrupt: bool,
    ) -> web.Response:
        """The reply to a request that met no transport fault: each entry forwarded (rewritten for a lagging node)
        or answered here."""
        replies: dict[int, dict[str, Any]] = {}
        forward: list[dict[str, Any]] = []
        sent: dict[int, dict[str, Any]] = {}  # position -> the entry as forwarded (rewritten for a lagging node)
        for pos, entry in enumerate(entries):
            if logs_error and entry.get("method") == "eth_getLogs":
                self.injected["logs_error"] += 1
                replies[pos] = {"jsonrpc": "2.0", "id": entry.get("id"), "error": LOGS_RATE_LIMITED}
                continue
            refusal = self._refuse_logs(entry)
            if refusal is not None:
                replies[pos] = {"jsonrpc": "2.0", "id": entry.get("id"), "error": refusal}
                continue
            if lag is not None:
                answered, entry = self._lag_request(lag, entry)
                if answered is not None:
                    replies[pos] = answered
                    continue
            sent[pos] = entry
            forward.append(entry)
        if forward:
            upstream = await self._upstream(forward)
            upstream_by_id = {r.get("id"): r for r in upstream}
            for pos, entry in sent.items():
                reply = upstream_by_id[entry.get("id")]
                if lag is not None:
                    reply = self._lag_reply(lag, entry, reply)
                replies[pos] = self._corrupt(entry, self._rewrite(entry, reply), corrupt)
        out = [replies[pos] for pos in range(len(entries))]
        raw = orjson.dumps(out if is_batch else out[0])
        if truncate:
            self.injected["truncate"] += 1
            raw = raw[: max(1, len(raw) // 2)]
        return web.Response(body=raw, content_type="application/json")

    def _json(self, obj: Any) -> web.Response:
        return web.Response(body=orjson.dumps(obj), content_type="application/json")

    async def _upstream(self, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        assert self._session is not None
        headers = {"Content-Type": "application/json"}
        async with self._session.post(self.upstream_url, data=orjson.dumps(entries), headers=headers) as resp:
            reply = orjson.loads(await resp.read())
        assert isinstance(reply, list)
        return reply

    # ------------------------------------------------------------------------------------------- lagging node

    async def _lag_view(self, entries: list[dict[str, Any]]) -> LagView:
        """Ask the real node (one batch) for its head, the finality tags and the numbers of the block hashes the
        request names, and derive what a node ``lag_blocks`` behind would answer with."""
        self.injected["lagging"] += 1
        hashes = sorted({
            flt["blockHash"] for e in entries if e.get("method") == "eth_getLogs"
            for flt in (e.get("params") or [None])[:1] if isinstance(flt, dict) and isinstance(flt.get("blockHash"), str)
        })
        calls: list[tuple[str, list[Any]]] = [("eth_blockNumber", [])]
        calls += [("eth_getBlockByNumber", [t, False]) for t in FINALITY_TAGS]
        calls += [("eth_getBlockByHash", [h, False]) for h in hashes]
        replies = await self._upstream(
            [{"jsonrpc": "2.0", "id": i, "method": m, "params": p} for i, (m, p) in enumerate(calls)])
        results = {r.get("id"): r.get("result") for r in replies}
        head = max(0, int(str(results[0]), 16) - self.faults.lag_blocks)
        tags = {}
        for i, tag in enumerate(FINALITY_TAGS, start=1):
            block = results.get(i)
            tags[tag] = min(head, int(block["number"], 16)) if isinstance(block, dict) else head
        numbers: dict[str, int | None] = {}
        for i, h in enumerate(hashes, start=1 + len(FINALITY_TAGS)):
            block = results.get(i)
            numbers[h] = int(block["number"], 16) if isinstance(block, dict) else None
        return LagView(head, tags, numbers)

    def _lag_request(
        self, lag: LagView, entry: dict[str, Any]
    ) -> tuple[dict[str, Any] | None, dict[str, Any]]:
        """(the lagging node's reply when it answers without the real node, the entry to forward otherwise)."""
        method, params, entry_id = entry.get("method"), list(entry.get("params") or []), entry.get("id")

        def answer(result: Any = None, error: dict[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
            self.injected["lag_hidden"] += 1
            body = {"error": error} if error is not None else {"result": result}
            return {"jsonrpc": "2.0", "id": entry_id, **body}, entry

        if method == "eth_blockNumber":
            return answer(hex(lag.head))
        if method == "eth_getLogs" and params and isinstance(params[0], dict):
            flt = dict(params[0])
            if isinstance(flt.get("blockHash"), str):
                number = lag.hash_numbers.get(flt["blockHash"])
                if number is not None and number > lag.head:
                    return answer(error=UNKNOWN_BLOCK)
            else:
                first = lag.block_param(flt.get("fromBlock", "latest"))
                last = lag.block_param(flt.get("toBlock", "latest"))
                if isinstance(first, str) and first.startswith("0x") and int(first, 16) > lag.head:
                    return answer([])
                if isinstance(last, str) and last.startswith("0x") and int(last, 16) > lag.head:
                    self.injected["lag_hidden"] += 1
                    last = hex(lag.head)
                flt["fromBlock"], flt["toBlock"] = first, last
            return None, {**entry, "params": [flt, *params[1:]]}
        params = [lag.block_param(p) if isinstance(p, str) else p for p in params]
        if method == "eth_getBlockByNumber" and params and lag.above(params[0]):
            return answer(None)
        if method in STATE_READS and params and lag.above(params[-1]):
            return answer(error=HEADER_NOT_FOUND)
        return None, {**entry, "params": params}

    def _lag_reply(self, lag: LagView, entry: dict[str, Any], reply: dict[str, Any]) -> dict[str, Any]:
        """The real node's reply as the lagging node would give it: nothing of a block above its head."""
        method, result = entry.get("method"), reply.get("result")
        hides = method in ("eth_getBlockByHash", "eth_getBlockByNumber", "eth_getTransactionReceipt",
                           "eth_getTransactionByHash", "eth_getTransactionByBlockHashAndIndex")
        if hides and isinstance(result, dict) and lag.above(result):
            self.injected["lag_hidden"] += 1
            return {**reply, "result": None}
        if method == "eth_getLogs" and isinstance(result, list):
            kept = [log for log in result if not lag.above(log)]  # a block mined while the request was served
            if len(kept) != len(result):
                self.injected["lag_hidden"] += 1
                return {**reply, "result": kept}
        return reply

    # ------------------------------------------------------------------------------------------- corruption

    def _corrupt(self, entry: dict[str, Any], reply: dict[str, Any], always: bool) -> dict[str, Any]:
        f = self.faults
        method, result = entry.get("method"), reply.get("result")

        def hit(tx_hash: Any) -> bool:
            return always or (isinstance(tx_hash, str) and tx_hash.lower() in f.corrupt_txs)

        if method == "eth_getLogs" and isinstance(result, list):
            logs = []
            for log in result:
                if isinstance(log, dict) and hit(log.get("transactionHash")):
                    self.injected["corrupt"] += 1
                    log = {**log, "logIndex": OUT_OF_INT32}
                logs.append(log)
            return {**reply, "result": logs}
        if method in ("eth_getBlockByNumber", "eth_getBlockByHash") and isinstance(result, dict):
            block = dict(result)
            if int(block.get("number", "0x0"), 16) in f.corrupt_headers:
                self.injected["corrupt"] += 1
                block["timestamp"] = OUT_OF_DATETIME
            txs = block.get("transactions")
            if isinstance(txs, list) and txs and isinstance(txs[0], dict):
                changed = []
                for tx in txs:
                    if hit(tx.get("hash")):
                        self.injected["corrupt"] += 1
                        tx = {**tx, "transactionIndex": OUT_OF_INT32}
                    changed.append(tx)
                block["transactions"] = changed
            return {**reply, "result": block}
        return reply

    # ------------------------------------------------------------------------------------------- log limits

    def _refuse_logs(self, entry: dict[str, Any]) -> dict[str, Any] | None:
        if entry.get("method") != "eth_getLogs":
            return None
        f = self.faults
        params = entry.get("params") or [{}]
        flt = params[0] if isinstance(params[0], dict) else {}
        if f.max_filter_values is not None:
            lists = [flt.get("address")] + list(flt.get("topics") or [])
            if any(isinstance(v, list) and len(v) > f.max_filter_values for v in lists):
                self.injected["filter_values"] += 1
                return {"code": -32602, "message": "exceed max addresses or topics per search position"}
        first, last = flt.get("fromBlock"), flt.get("toBlock")
        if f.max_log_blocks is not None and isinstance(first, str) and isinstance(last, str):
            a, b = int(first, 16), int(last, 16)
            if b - a + 1 > f.max_log_blocks:
                self.injected["range_blocks"] += 1
                return range_error(f.range_style, f.max_log_blocks, a, b)
        return None

    def _rewrite(self, entry: dict[str, Any], reply: dict[str, Any]) -> dict[str, Any]:
        f = self.faults
        method = entry.get("method")
        result = reply.get("result")
        if (
            f.bsc_extra_data
            and method in ("eth_getBlockByNumber", "eth_getBlockByHash")
            and isinstance(result, dict)
        ):
            self.injected["extra_data"] += 1
            return {**reply, "result": {**result, "extraData": EXTRA_DATA_97}}
        if method == "eth_getLogs" and f.max_log_results is not None and isinstance(result, list):
            flt = entry["params"][0]
            a, b = int(flt["fromBlock"], 16), int(flt["toBlock"], 16)
            if len(result) > f.max_log_results and b > a:
                blocks = sorted(int(log["blockNumber"], 16) for log in result)
                suggested_to = max(a, blocks[f.max_log_results] - 1)
                self.injected["range_results"] += 1
                return {
                    "jsonrpc": "2.0",
                    "id": entry.get("id"),
                    "error": too_many_results_error(f.max_log_results, a, suggested_to),
                }
        return reply
