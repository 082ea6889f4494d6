"""HTTP client for the java-tron full-node API: one aiohttp session, orjson, failover, retries, error translation.

Why not tronpy's ``AsyncTron``/``AsyncHTTPProvider``: the endpoints the indexer lives on
(``gettransactioninfobyblocknum``, ``getblockbylimitnext``) have no tronpy wrapper, its provider sends
``TRON-PRO-API-KEY`` only to hosts named ``trongrid`` (and otherwise rotates tronpy's built-in shared keys), prints
to stderr and recurses on a 403, and its high-level calls raise their own exception types. Plain POSTs over aiohttp
(the transport the EVM client uses too) keep one behaviour for every host.

Every request is a POST of a JSON body to ``<base url>/<path>`` (the base may carry a path and a query; the
path is appended to the base's path, not resolved with ``urljoin``). The ``TRON-PRO-API-KEY`` header is sent to every endpoint when a key is configured.

Answers and what they become (all from :mod:`chains.base`)::

    HTTP 200 + JSON                         the decoded value (dict, or list for bare-array endpoints)
    HTTP 200 + {"Error": "...lack of computing resources"} / "frequency limit" / "rate"      RateLimited
    HTTP 200 + {"Error": "...timeout / busy / unavailable"}   TronTransientError (retryable)
    HTTP 200 + {"Error": anything else}      TronNodeError (fatal: the request itself is wrong)
    HTTP 200 + truncated / non-JSON / wrong top-level type     MalformedResponse
    HTTP 403, 429, 503                        RateLimited (Retry-After honoured)
    HTTP 5xx (other), 408, timeout, connection refused/reset   RetryableChainError
    HTTP 401, 404 (API disabled), other 4xx   HttpStatusError (fatal)

An ``Error`` body is never taken for an empty answer: it is classified before the shape is looked at.

Retries: tenacity, ``1 + max_retries`` attempts per request, on ``RetryableChainError`` only. Failover: endpoints
are tried in configured order; one that failed is cooled down for ``cooldown_s`` and the next is used at once;
the first endpoint is preferred again when its cooldown is over. When every endpoint is cooling down a retry waits
a full-jitter exponential backoff (at least the server's ``Retry-After``, at most ``backoff_cap_s``).

Secrets: an endpoint is named only by :func:`chains.redact.redact_url`; any text that comes from aiohttp or from the
node is scrubbed of the URL, its path, its query and the API key before it reaches a message or a log line.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import orjson
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt

from chains.base import (
    FatalChainError,
    MalformedResponse,
    NullObserver,
    RateLimited,
    RetryableChainError,
    RpcObserver,
)
from chains.redact import redact_url, scrub, scrub_urls
from chains.transport import (
    ConnectionFailed,
    HttpStatusError,
    TransientHttpStatus,
    TransportTimeout,
    outcome_of,
)

log = logging.getLogger(__name__)

CHAIN = "tron"
API_KEY_HEADER = "TRON-PRO-API-KEY"

_RATE_LIMIT_RE = re.compile(
    r"lack of computing resources|frequency limit|rate limit|allowed_rps|too many requests|suspended|exceed",
    re.IGNORECASE,
)
_TRANSIENT_RE = re.compile(r"timeout|timed out|busy|unavailable|try again|temporar", re.IGNORECASE)
_RATE_LIMIT_STATUS = {403, 429, 503}


class TronNodeError(FatalChainError):
    """The node answered ``{"Error": ...}`` with an error retrying will not fix (bad parameter, unknown method)."""

    def __init__(self, message: str, node_error: str) -> None:
        super().__init__(message)
        self.node_error = node_error


class TronTransientError(RetryableChainError):
    """An ``Error`` body that reads transient (timeouts, busy node)."""












def _retry_after_s(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value.strip()))
    except ValueError:
        return None


def _join(base: str, path: str) -> str:
    """``base`` with ``path`` appended to its path, its query kept (``https://h/key/?a=b`` + ``/wallet/x``)."""
    parts = urlsplit(base)
    return urlunsplit(parts._replace(path=parts.path.rstrip("/") + path))


@dataclass
class _Endpoint:
    url: str
    label: str
    secrets: list[str]
    cooldown_until: float = 0.0


def _secrets_of(url: str) -> list[str]:
    """What of ``url`` must not be shown: all of it when it has a path, query or credentials (a bare
    ``scheme://host:port`` is what its label shows anyway), and those parts on their own."""
    parts = urlsplit(url)
    if parts.path in ("", "/") and not parts.query and not parts.username and not parts.password:
        return []
    secrets = [url, url.rstrip("/"), parts.query, parts.password or ""]
    if parts.path not in ("", "/"):
        secrets.append(parts.path)
        secrets += [seg for seg in parts.path.split("/") if len(seg) >= 8]
    secrets += [kv.partition("=")[2] for kv in parts.query.split("&") if len(kv.partition("=")[2]) >= 4]
    return [s for s in secrets if s]


class TronHttpClient:
    def __init__(
        self,
        urls: list[str],
        *,
        api_key: str | None = None,
        request_timeout_s: float = 10.0,
        observer: RpcObserver | None = None,
        max_retries: int = 5,
        cooldown_s: float = 10.0,
        backoff_base_s: float = 0.25,
        backoff_cap_s: float = 10.0,
        max_connections: int = 16,
    ) -> None:
        if not urls:
            raise ValueError("at least one Tron RPC URL is required")
        self._api_key = api_key or None
        extra = [self._api_key] if self._api_key else []
        self._endpoints = [_Endpoint(u, redact_url(u), _secrets_of(u) + extra) for u in urls]
        self._all_secrets = [s for e in self._endpoints for s in e.secrets]
        self._timeout = aiohttp.ClientTimeout(total=request_timeout_s)
        self._observer: RpcObserver = observer or NullObserver()
        self._max_retries = max(0, max_retries)
        self._cooldown_s = cooldown_s
        self._backoff_base_s = backoff_base_s
        self._backoff_cap_s = backoff_cap_s
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None
        self._rng = random.Random()

    @property
    def labels(self) -> list[str]:
        return [e.label for e in self._endpoints]

    def clean(self, text: str) -> str:
        """``text`` without any configured URL, URL part or API key."""
        return scrub_urls(scrub(text, self._all_secrets))

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            headers = {"Content-Type": "application/json", "Accept": "application/json"}
            if self._api_key:
                headers[API_KEY_HEADER] = self._api_key
            self._session = aiohttp.ClientSession(
                timeout=self._timeout,
                headers=headers,
                connector=aiohttp.TCPConnector(limit=self._max_connections),
                json_serialize=lambda obj: orjson.dumps(obj).decode(),
            )
        return self._session

    def _pick(self) -> _Endpoint:
        now = time.monotonic()
        for endpoint in self._endpoints:
            if endpoint.cooldown_until <= now:
                return endpoint
        return min(self._endpoints, key=lambda e: e.cooldown_until)

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome is not None else None
        now = time.monotonic()
        retry_after = exc.retry_after_s if isinstance(exc, RateLimited) else None
        available = any(e.cooldown_until <= now for e in self._endpoints)
        if available and retry_after is None:
            return 0.0
        backoff = self._rng.uniform(
            0, min(self._backoff_cap_s, self._backoff_base_s * 2**state.attempt_number)
        )
        if retry_after is not None and not available:
            backoff = max(backoff, min(retry_after, self._backoff_cap_s))
        return backoff

    def _before_sleep(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        log.warning(
            "tron request failed, retrying (attempt %d of %d): %s",
            state.attempt_number,
            self._max_retries + 1,
            self.clean(f"{type(exc).__name__}: {exc}"),
        )

    async def call(self, path: str, body: dict[str, Any] | None = None, *, expect: type = dict) -> Any:
        """POST ``body`` to ``path`` (``/wallet/getnowblock``) with retries and failover; the decoded JSON, which
        is an instance of ``expect`` (``dict`` or ``list``)."""
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._max_retries + 1),
            retry=retry_if_exception_type(RetryableChainError),
            wait=self._wait,
            before_sleep=self._before_sleep,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await self._once(self._pick(), path, body or {}, expect)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _once(self, endpoint: _Endpoint, path: str, body: dict[str, Any], expect: type) -> Any:
        started = time.monotonic()
        try:
            result = await self._request(endpoint, path, body, expect)
        except BaseException as exc:
            if isinstance(exc, RetryableChainError):
                endpoint.cooldown_until = time.monotonic() + self._cooldown_s
            if not isinstance(exc, asyncio.CancelledError):
                self._observer.rpc_request(
                    CHAIN, endpoint.label, path, time.monotonic() - started, outcome_of(exc)
                )
            raise
        self._observer.rpc_request(CHAIN, endpoint.label, path, time.monotonic() - started, "ok")
        return result

    async def _request(self, endpoint: _Endpoint, path: str, body: dict[str, Any], expect: type) -> Any:
        where = f"{path} via {endpoint.label}"
        url = _join(endpoint.url, path)
        try:
            async with self._get_session().post(url, data=orjson.dumps(body)) as resp:
                status = resp.status
                retry_after = _retry_after_s(resp.headers.get("Retry-After"))
                raw = await resp.read()
        except TimeoutError as exc:
            raise TransportTimeout(f"{where}: timed out") from exc
        except aiohttp.ClientError as exc:
            detail = self.clean(f"{type(exc).__name__}: {exc}")[:300]
            raise ConnectionFailed(f"{where}: {detail}") from None
        if status != 200:
            snippet = self.clean(raw[:300].decode("utf-8", "replace")).replace("\n", " ")
            shown = f"{where}: HTTP {status}: {snippet}"
            if status in _RATE_LIMIT_STATUS:
                raise RateLimited(shown, retry_after)
            if status >= 500 or status == 408:
                raise TransientHttpStatus(shown)
            raise HttpStatusError(shown, status)
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise MalformedResponse(f"{where}: truncated or invalid JSON ({len(raw)} bytes)") from None
        if isinstance(value, dict) and "Error" in value:
            node_error = self.clean(str(value["Error"]))[:500]
            shown = f"{where}: node error: {node_error}"
            if _RATE_LIMIT_RE.search(node_error):
                raise RateLimited(shown)
            if _TRANSIENT_RE.search(node_error):
                raise TronTransientError(shown)
            raise TronNodeError(shown, node_error)
        if not isinstance(value, expect):
            raise MalformedResponse(f"{where}: expected a JSON {expect.__name__}, got {type(value).__name__}")
        return value
