"""A small async JSON-RPC client for EVM nodes: one aiohttp session, orjson, batches, failover and retries.

Why not web3.py here: its result formatters cost tens of microseconds per log and its batch path neither retries
nor tolerates one failed entry (see ``docs``/reference ``design.md``). This client returns plain decoded JSON;
callers slice hex strings themselves.

Errors (all from :mod:`chains.base`, translated here with ``raise ... from exc``)::

    RetryableChainError         timeout, connection refused/reset, HTTP 5xx/408, transient node errors
    ├── RateLimited             HTTP 429 (Retry-After honoured), JSON-RPC rate-limit errors
    ├── RangeTooLarge           eth_getLogs range/result/filter limits (see chains.evm.logs); NOT retried here:
    │                           the caller has to change the request
    └── MalformedResponse       truncated or invalid JSON, a reply without result/error, missing batch entries
    FatalChainError
    └── RpcError                any other JSON-RPC error (method not found, invalid params, execution reverted)
                                and HTTP 4xx other than 408/429

Retries: tenacity, up to ``max_attempts`` per request, only on ``RetryableChainError`` minus ``RangeTooLarge``.
Failover: endpoints are tried in configured order; an endpoint that failed is cooled down for ``cooldown_s`` and
the next one is used; once the cooldown is over the first endpoint is preferred again. While another endpoint is
available a retry goes out at once; when all are cooling down the retry waits (full-jitter exponential backoff,
or the server's Retry-After).

Secrets: an endpoint is only ever named by :func:`chains.redact.redact_url` (its label); texts that come from
aiohttp are scrubbed of the URL, its path and its query before they reach a message.
"""

from __future__ import annotations

import asyncio
import email.utils
import itertools
import logging
import random
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import urlsplit

import aiohttp
import orjson
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt

from chains.base import (
    ChainError,
    FatalChainError,
    MalformedResponse,
    NullObserver,
    RangeTooLarge,
    RateLimited,
    RetryableChainError,
    RpcObserver,
)
from chains.evm.logs import classify_range_error
from chains.redact import redact_url, scrub, scrub_urls
from chains.transport import (
    ConnectionFailed,
    HttpStatusError,
    TransientHttpStatus,
    TransportTimeout,
    outcome_of,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

Call = tuple[str, Sequence[Any]]
"""``(method, params)`` of one JSON-RPC call."""


class RpcError(FatalChainError):
    """A JSON-RPC error object the node answered with, that retrying will not fix."""

    def __init__(
        self, message: str, *, code: int | None = None, rpc_message: str = "", data: Any = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.rpc_message = rpc_message
        self.data = data


class TransientRpcError(RetryableChainError):
    """A JSON-RPC error a load-balanced or syncing node gives now and then (header not found, internal error)."""

    def __init__(self, message: str, *, code: int | None = None, rpc_message: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.rpc_message = rpc_message


class _BatchRejected(Exception):
    """The endpoint answered a batch with something other than a list: send the entries one by one."""


_RATE_LIMIT_RE = re.compile(
    r"rate.?limit|rate exceeded|too many requests|request limit|exceeded .*(capacity|quota|credits)|daily limit|"
    r"frequency limit|throughput|compute units",
    re.IGNORECASE,
)
_TRANSIENT_RE = re.compile(
    r"header not found|unknown block|missing trie node|timeout|timed out|try again|temporar|"
    r"busy|unavailable|overloaded|internal error|upstream",
    re.IGNORECASE,
)
_RPC_TRANSIENT_CODES = {-32603}  # internal error


def _retry_after_s(value: str | None) -> float | None:
    """``Retry-After``: delta seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def classify_rpc_error(method: str, error: Any, label: str) -> ChainError:
    """The exception for a JSON-RPC ``error`` object returned for ``method`` by endpoint ``label``."""
    if not isinstance(error, dict):
        return MalformedResponse(f"{method} via {label}: error member is not an object")
    code = error.get("code")
    code = code if isinstance(code, int) else None
    message = str(error.get("message", ""))[:500]
    data = error.get("data")
    shown = f"{method} via {label}: JSON-RPC error {code}: {message}"
    if method == "eth_getLogs":
        too_large = classify_range_error(code, message, data)
        if too_large is not None:
            return too_large
    if code == 429 or _RATE_LIMIT_RE.search(message) or (code == -32005 and "limit" in message.lower()):
        retry_after = None
        if isinstance(data, dict):
            rate = data.get("rate")
            backoff = rate.get("backoff_seconds") if isinstance(rate, dict) else data.get("retry_after")
            if isinstance(backoff, int | float):
                retry_after = float(backoff)
        return RateLimited(shown, retry_after)
    if code in _RPC_TRANSIENT_CODES or (
        code not in (-32601, -32602, -32600, 3) and _TRANSIENT_RE.search(message)
    ):
        return TransientRpcError(shown, code=code, rpc_message=message)
    return RpcError(shown, code=code, rpc_message=message, data=data)












@dataclass
class _Endpoint:
    url: str
    label: str
    secrets: list[str]
    cooldown_until: float = 0.0
    batches_ok: bool = True


def _secrets_of(url: str) -> list[str]:
    parts = urlsplit(url)
    secrets = [url, parts.path if parts.path not in ("", "/") else "", parts.query, parts.password or ""]
    secrets += [seg for seg in parts.path.split("/") if len(seg) >= 8]
    secrets += [kv.partition("=")[2] for kv in parts.query.split("&") if len(kv.partition("=")[2]) >= 4]
    return [s for s in secrets if s]


_MISSING: Any = object()


class JsonRpcClient:
    """JSON-RPC over HTTP to one chain's endpoints. Use ``async with`` or call :meth:`aclose`."""

    def __init__(
        self,
        urls: list[str],
        *,
        chain: str,
        timeout_s: float = 10,
        max_attempts: int = 6,
        observer: RpcObserver | None = None,
        cooldown_s: float = 10.0,
        backoff_base_s: float = 0.05,
        backoff_max_s: float = 5.0,
        max_retry_after_s: float = 60.0,
        max_batch: int = 100,
        max_concurrency: int = 16,
    ) -> None:
        if not urls:
            raise ValueError(f"{chain}: no RPC URL configured")
        self.chain = chain
        self.timeout_s = timeout_s
        self.max_attempts = max_attempts
        self.observer: RpcObserver = observer or NullObserver()
        self.cooldown_s = cooldown_s
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.max_retry_after_s = max_retry_after_s
        self.max_batch = max_batch
        self._endpoints = [_Endpoint(u, redact_url(u), _secrets_of(u)) for u in urls]
        self._ids = itertools.count(1)
        self._session: aiohttp.ClientSession | None = None
        self._closed = False
        self._limit = asyncio.Semaphore(max_concurrency)
        self._rng = random.Random()

    # ------------------------------------------------------------------------------------------- lifecycle

    @property
    def endpoint_labels(self) -> list[str]:
        return [e.label for e in self._endpoints]

    async def __aenter__(self) -> JsonRpcClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the session. Safe to call twice."""
        self._closed = True
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    def _get_session(self) -> aiohttp.ClientSession:
        if self._closed:
            raise RuntimeError(f"{self.chain}: JSON-RPC client used after aclose()")
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout_s),
                connector=aiohttp.TCPConnector(limit=64),
                headers={"Content-Type": "application/json", "Accept": "application/json"},
            )
        return self._session

    # ------------------------------------------------------------------------------------------- public API

    async def call(self, method: str, params: Sequence[Any]) -> Any:
        """One call; returns its ``result`` (which may be ``None``)."""
        async for attempt in self._retrying():
            with attempt:
                endpoint = self._pick()
                return await self._call_once(endpoint, method, params)
        raise AssertionError("unreachable")  # pragma: no cover

    async def batch(self, calls: Sequence[Call], *, return_errors: bool = False) -> list[Any]:
        """Results of ``calls`` in order, sent as JSON-RPC batches of at most ``max_batch`` entries.

        Entries that fail with a retryable error are retried (only they are re-sent). An entry that fails for good
        raises its error, unless ``return_errors``: then its place in the list holds the ``ChainError``.
        """
        results: list[Any] = [_MISSING] * len(calls)
        chunks = [
            list(range(i, min(i + self.max_batch, len(calls)))) for i in range(0, len(calls), self.max_batch)
        ]
        await asyncio.gather(*(self._batch_chunk(calls, idxs, results) for idxs in chunks))
        if not return_errors:
            for r in results:
                if isinstance(r, ChainError):
                    raise r
        return results

    # ------------------------------------------------------------------------------------------- retries

    def _retryable(self, exc: BaseException) -> bool:
        return isinstance(exc, RetryableChainError) and not isinstance(exc, RangeTooLarge)

    def _wait_s(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        now = time.monotonic()
        if any(e.cooldown_until <= now for e in self._endpoints):
            return 0.0  # fail over at once
        if isinstance(exc, RateLimited) and exc.retry_after_s is not None:
            return min(exc.retry_after_s, self.max_retry_after_s)
        cap = min(self.backoff_max_s, self.backoff_base_s * 2 ** (state.attempt_number - 1))
        return self._rng.uniform(cap / 2, cap)

    def _retrying(self) -> AsyncRetrying:
        return AsyncRetrying(
            stop=stop_after_attempt(self.max_attempts),
            wait=self._wait_s,
            retry=retry_if_exception(self._retryable),
            reraise=True,
        )

    def _pick(self) -> _Endpoint:
        now = time.monotonic()
        for endpoint in self._endpoints:
            if endpoint.cooldown_until <= now:
                return endpoint
        return min(self._endpoints, key=lambda e: e.cooldown_until)

    def _failed(self, endpoint: _Endpoint, method: str, exc: ChainError) -> None:
        if not self._retryable(exc):
            return
        cooldown = self.cooldown_s
        if isinstance(exc, RateLimited) and exc.retry_after_s is not None:
            cooldown = max(min(exc.retry_after_s, self.max_retry_after_s), 0.0)
        endpoint.cooldown_until = time.monotonic() + cooldown
        log.warning(
            "rpc request failed, endpoint cooling down",
            extra={"fields": {
                "chain": self.chain,
                "endpoint": endpoint.label,
                "method": method,
                "outcome": outcome_of(exc),
            }},
        )

    # ------------------------------------------------------------------------------------------- transport

    async def _exchange(
        self, endpoint: _Endpoint, method: str, payload: Any, interpret: Callable[[Any], tuple[T, str]]
    ) -> T:
        """POST ``payload`` and ``interpret`` the decoded reply (value and outcome label); reports the request,
        JSON-RPC level outcome included, to the observer."""
        body = orjson.dumps(payload)
        started = time.perf_counter()
        outcome = "ok"
        try:
            async with self._limit:
                reply = await self._post_raw(endpoint, method, body)
            value, outcome = interpret(reply)
            return value
        except ChainError as exc:
            outcome = outcome_of(exc)
            raise
        except _BatchRejected:
            outcome = "rpc_error"
            raise
        finally:
            self.observer.rpc_request(
                self.chain, endpoint.label, method, time.perf_counter() - started, outcome
            )

    async def _post_raw(self, endpoint: _Endpoint, method: str, body: bytes) -> Any:
        where = f"{method} via {endpoint.label}"
        session = self._get_session()
        try:
            async with session.post(endpoint.url, data=body) as resp:
                status = resp.status
                retry_after = _retry_after_s(resp.headers.get("Retry-After"))
                raw = await resp.read()
        except TimeoutError as exc:
            raise TransportTimeout(f"{where}: no answer within {self.timeout_s} s") from exc
        except aiohttp.ClientPayloadError as exc:
            raise MalformedResponse(f"{where}: truncated body ({self._clean(endpoint, exc)})") from exc
        except aiohttp.ClientConnectionError as exc:
            raise ConnectionFailed(f"{where}: connection failed ({self._clean(endpoint, exc)})") from exc
        except aiohttp.ClientError as exc:
            raise ConnectionFailed(f"{where}: HTTP client error ({self._clean(endpoint, exc)})") from exc
        if status == 429 or (status == 503 and retry_after is not None):
            raise RateLimited(f"{where}: HTTP {status} (rate limited)", retry_after)
        if status >= 500 or status == 408:
            raise TransientHttpStatus(f"{where}: HTTP {status}")
        if status >= 400 and not raw.lstrip().startswith((b"{", b"[")):
            text = raw[:200].decode(errors="replace")
            if _RATE_LIMIT_RE.search(text):
                raise RateLimited(f"{where}: HTTP {status} (rate limited)", retry_after)
            raise HttpStatusError(
                f"{where}: HTTP {status}: {scrub(scrub_urls(text), endpoint.secrets)}", status
            )
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise MalformedResponse(f"{where}: invalid JSON ({len(raw)} bytes, HTTP {status})") from exc

    def _clean(self, endpoint: _Endpoint, exc: BaseException) -> str:
        return scrub(scrub_urls(f"{type(exc).__name__}: {exc}"), endpoint.secrets)[:300]

    async def _call_once(self, endpoint: _Endpoint, method: str, params: Sequence[Any]) -> Any:
        req_id = next(self._ids)
        payload = {"jsonrpc": "2.0", "id": req_id, "method": method, "params": list(params)}
        try:
            return await self._exchange(
                endpoint, method, payload, lambda r: (self._result_of(endpoint, method, r), "ok")
            )
        except ChainError as exc:
            self._failed(endpoint, method, exc)
            raise

    def _result_of(self, endpoint: _Endpoint, method: str, reply: Any) -> Any:
        if not isinstance(reply, dict):
            raise MalformedResponse(f"{method} via {endpoint.label}: reply is not a JSON object")
        if "error" in reply and reply["error"] is not None:
            raise classify_rpc_error(method, reply["error"], endpoint.label)
        if "result" not in reply:
            raise MalformedResponse(f"{method} via {endpoint.label}: reply has neither result nor error")
        return reply["result"]

    # ------------------------------------------------------------------------------------------- batches

    async def _batch_chunk(self, calls: Sequence[Call], idxs: list[int], results: list[Any]) -> None:
        async for attempt in self._retrying():
            with attempt:
                pending = [i for i in idxs if results[i] is _MISSING or self._retryable(results[i])]
                for i in pending:
                    results[i] = _MISSING
                endpoint = self._pick()
                if len(pending) == 1:
                    await self._single_into(endpoint, calls, pending[0], results)
                elif endpoint.batches_ok:
                    try:
                        await self._batch_once(endpoint, calls, pending, results)
                    except _BatchRejected:
                        endpoint.batches_ok = False
                        log.warning(
                            "rpc endpoint refuses batches, sending single calls",
                            extra={"fields": {"chain": self.chain, "endpoint": endpoint.label}},
                        )
                        await self._singles(endpoint, calls, pending, results)
                else:
                    await self._singles(endpoint, calls, pending, results)
                retry = [results[i] for i in pending if self._retryable(results[i])]
                if retry:
                    self._failed(endpoint, "batch", retry[0])
                    raise retry[0]

    async def _single_into(
        self, endpoint: _Endpoint, calls: Sequence[Call], i: int, results: list[Any]
    ) -> None:
        method, params = calls[i]
        req_id = next(self._ids)
        payload = {"jsonrpc": "2.0", "id": req_id, "method": method, "params": list(params)}
        try:
            results[i] = await self._exchange(
                endpoint, method, payload, lambda r: (self._result_of(endpoint, method, r), "ok")
            )
        except ChainError as exc:
            results[i] = exc

    async def _singles(
        self, endpoint: _Endpoint, calls: Sequence[Call], idxs: list[int], results: list[Any]
    ) -> None:
        await asyncio.gather(*(self._single_into(endpoint, calls, i, results) for i in idxs))

    async def _batch_once(
        self, endpoint: _Endpoint, calls: Sequence[Call], idxs: list[int], results: list[Any]
    ) -> None:
        by_id: dict[int, int] = {}
        payload = []
        for i in idxs:
            req_id = next(self._ids)
            by_id[req_id] = i
            method, params = calls[i]
            payload.append({"jsonrpc": "2.0", "id": req_id, "method": method, "params": list(params)})
        methods = {calls[i][0] for i in idxs}
        label = f"batch:{next(iter(methods))}" if len(methods) == 1 else "batch"

        def interpret(reply: Any) -> tuple[None, str]:
            if not isinstance(reply, list):
                raise _BatchRejected()
            first_error: ChainError | None = None
            for entry in reply:
                if not isinstance(entry, dict):
                    continue
                entry_id = entry.get("id")
                i = by_id.pop(entry_id, -1) if isinstance(entry_id, int) else -1
                if i < 0:
                    continue
                try:
                    results[i] = self._result_of(endpoint, calls[i][0], entry)
                except ChainError as exc:
                    results[i] = exc
                    first_error = first_error or exc
            for i in by_id.values():
                results[i] = MalformedResponse(
                    f"{calls[i][0]} via {endpoint.label}: batch reply lacks this entry"
                )
                first_error = first_error or results[i]
            return None, outcome_of(first_error) if first_error is not None else "ok"

        try:
            await self._exchange(endpoint, label, payload, interpret)
        except HttpStatusError as exc:
            if exc.status in (400, 405, 413, 415):
                raise _BatchRejected() from exc
            for i in idxs:
                results[i] = exc
        except ChainError as exc:
            for i in idxs:
                results[i] = exc
