"""The HTTP transport both protocol clients (EVM JSON-RPC in :mod:`chains.evm.rpc`, the java-tron HTTP API in
:mod:`chains.tron.client`) stand on: an endpoint pool with failover, cooldown and retries, and one POST/read layer
that caps response sizes and sorts HTTP answers into the error tree. A fix to rotation, backoff, Retry-After,
size limits or secret scrubbing lands here once, for every chain.

Errors added to :mod:`chains.base`'s tree (all retryable: nothing an endpoint answers is fatal)::

    RetryableChainError
    ├── TransportTimeout        no answer within the request timeout
    ├── ConnectionFailed        refused, reset or otherwise broken connection
    ├── TransientHttpStatus     HTTP 5xx, 408
    ├── HttpStatusError         any other HTTP error status, whatever the body (a banned key's 403 HTML page,
    │                           401, 404 "API disabled"): the endpoint is unusable for now
    ├── RequestRefused          the endpoint refused *this request* (EVM: method not found, invalid params); another
    │                           endpoint may accept it, so it is asked once, and the endpoint is not cooled down
    └── MalformedResponse
        └── ResponseTooLarge    a body over ``max_response_bytes`` (announced or counted while reading)

How a request is sent (:meth:`EndpointPool.run`): endpoints are tried in configured order, the first one not cooling
down is used. A fault of the endpoint (any ``RetryableChainError`` but ``RangeTooLarge`` and ``RequestRefused``)
cools it down for ``cooldown_s`` (or the server's ``Retry-After``, if longer) and the next endpoint is asked at
once; when every endpoint is cooling down the retry waits a jittered, doubling backoff and goes to the endpoint
whose cooldown ends first, never before a ``Retry-After`` it gave. After ``max_attempts`` the last error is raised.
Answers about the request itself end it at once, without cooldown: ``CallReverted`` (a reverted contract call) and
``RangeTooLarge`` (the caller splits the range); a ``RequestRefused`` is asked of each other endpoint once and
raised when every endpoint refused. An endpoint that failed is reported down to the observer
(``endpoint_up(chain, label, False)``) and up again with its next good answer (one to a request sent after the
failure), so the gauge reads "the last word from this endpoint was good".

What ``rpc_request`` reports as ``outcome`` for each HTTP exchange: see :func:`outcome_of`.

Secrets: endpoints are named only by their redacted label; every text that comes from aiohttp or from a response
body is cleaned of every configured URL, URL part and key (:mod:`chains.redact`) before it reaches a message.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp
import orjson

from chains.base import (
    CallReverted,
    ChainError,
    MalformedResponse,
    NullObserver,
    RangeTooLarge,
    RateLimited,
    RetryableChainError,
    RpcObserver,
)
from chains.redact import clean, redact_url, secrets_of, shown_body

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_MAX_RESPONSE_BYTES = 64 * 1024 * 1024


# ---------------------------------------------------------------------------------------------------- errors


class TransportTimeout(RetryableChainError):
    """No answer within the request timeout."""


class ConnectionFailed(RetryableChainError):
    """Refused, reset or otherwise broken connection."""


class TransientHttpStatus(RetryableChainError):
    """HTTP 5xx or 408."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class HttpStatusError(RetryableChainError):
    """Any other HTTP error status (401 bad key, 403 banned key, 404 API disabled, other 4xx), whatever the body:
    the endpoint is cooled down and the next one asked."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class RequestRefused(RetryableChainError):
    """The endpoint answered, but refuses this request as such (a method it lacks, a parameter it does not take):
    another endpoint may accept it. Not a fault of the endpoint: it is not cooled down."""


class ResponseTooLarge(MalformedResponse):
    """A body larger than the client's ``max_response_bytes``: refused unread, its connection closed."""


def outcome_of(exc: BaseException) -> str:
    """The ``outcome`` label of :meth:`chains.base.RpcObserver.rpc_request` for a failed exchange."""
    if isinstance(exc, RateLimited):
        return "rate_limited"
    if isinstance(exc, RangeTooLarge):
        return "range_too_large"
    if isinstance(exc, ResponseTooLarge):
        return "oversized"
    if isinstance(exc, MalformedResponse):
        return "malformed"
    if isinstance(exc, TransportTimeout):
        return "timeout"
    if isinstance(exc, ConnectionFailed):
        return "connection_error"
    if isinstance(exc, TransientHttpStatus | HttpStatusError):
        return "http_error"
    if isinstance(exc, CallReverted):
        return "reverted"
    return "rpc_error"


# ---------------------------------------------------------------------------------------------------- HTTP answers


RATE_LIMIT_RE = re.compile(
    r"rate.?limit|rate exceeded|too many requests|request limit|exceeded .*(capacity|quota|credits)|daily limit|"
    r"frequency limit|throughput|compute units|lack of computing resources|allowed_rps|query server is suspended",
    re.IGNORECASE,
)
"""Texts of rate limiting in HTTP error bodies and node error messages, across providers."""


def retry_after_s(value: str | None) -> float | None:
    """``Retry-After``: delta seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        return max(0.0, when.timestamp() - time.time())
    return max(0.0, seconds) if seconds == seconds else None  # NaN is no answer


@dataclass(frozen=True, slots=True)
class HttpReply:
    status: int
    raw: bytes
    retry_after_s: float | None


def http_fault(reply: HttpReply, where: str, secrets: Sequence[str]) -> ChainError | None:
    """The error for a reply whose status is not 2xx, whatever its body; None for 2xx. A body that reads as rate
    limiting (or status 429, or 503 with a Retry-After) is ``RateLimited``."""
    status = reply.status
    if 200 <= status < 300:
        return None
    shown = f"{where}: HTTP {status}: {shown_body(reply.raw, secrets)}".rstrip(": ")
    if status == 429 or (status == 503 and reply.retry_after_s is not None):
        return RateLimited(shown, reply.retry_after_s)
    if RATE_LIMIT_RE.search(reply.raw[:4096].decode("utf-8", "replace")):
        return RateLimited(shown, reply.retry_after_s)
    if status >= 500 or status == 408:
        return TransientHttpStatus(shown, status)
    return HttpStatusError(shown, status)


def decode_json(reply: HttpReply, where: str, secrets: Sequence[str]) -> Any:
    try:
        return orjson.loads(reply.raw)
    except orjson.JSONDecodeError:
        shown = shown_body(reply.raw, secrets, limit=80)
        raise MalformedResponse(
            f"{where}: invalid JSON ({len(reply.raw)} bytes, HTTP {reply.status})" + (f": {shown}" if shown else "")
        ) from None


# ---------------------------------------------------------------------------------------------------- endpoint pool


@dataclass(eq=False)
class Endpoint:
    index: int
    url: str
    label: str
    cooldown_until: float = 0.0  # preferred again from then on
    not_before: float = 0.0  # asked again not before then (the server's Retry-After)
    failed_at: float = -1.0
    up: bool = True
    notes: dict[str, Any] = field(default_factory=dict)  # what a protocol client learnt of it (batch support)


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 6
    cooldown_s: float = 10.0
    backoff_base_s: float = 0.1
    backoff_max_s: float = 5.0
    max_retry_after_s: float = 60.0


class EndpointPool:
    """One chain's endpoints: which to ask next, and the retry loop around a request (:meth:`run`)."""

    def __init__(
        self,
        urls: Sequence[str],
        *,
        chain: str,
        observer: RpcObserver | None = None,
        policy: RetryPolicy = RetryPolicy(),
        extra_secrets: Sequence[str] = (),
    ) -> None:
        if not urls:
            raise ValueError(f"{chain}: no RPC URL configured")
        self.chain = chain
        self.observer: RpcObserver = observer or NullObserver()
        self.policy = policy
        self.endpoints = [Endpoint(i, u, redact_url(u)) for i, u in enumerate(urls)]
        secrets = {s for u in urls for s in secrets_of(u)} | {s for s in extra_secrets if s}
        self.secrets: list[str] = sorted(secrets, key=len, reverse=True)
        self._rng = random.Random()

    @property
    def labels(self) -> list[str]:
        return [e.label for e in self.endpoints]

    def clean(self, text: str) -> str:
        """``text`` without any configured URL, URL part or key."""
        return clean(text, self.secrets)

    # ------------------------------------------------------------------------------------------- choosing

    def _candidates(self, excluded: Collection[int]) -> list[Endpoint]:
        return [e for e in self.endpoints if e.index not in excluded] or self.endpoints

    def pick(self, excluded: Collection[int] = ()) -> Endpoint:
        """The first endpoint (in configured order, leaving out ``excluded``) not cooling down; else, of those
        whose Retry-After has passed, the one whose cooldown ends first; else the one free first."""
        now = time.monotonic()
        candidates = self._candidates(excluded)
        for endpoint in candidates:
            if endpoint.cooldown_until <= now:
                return endpoint
        allowed = [e for e in candidates if e.not_before <= now]
        if allowed:
            return min(allowed, key=lambda e: e.cooldown_until)
        return min(candidates, key=lambda e: e.not_before)

    def wait_s(self, attempt: int, excluded: Collection[int] = ()) -> float:
        """How long to wait before attempt ``attempt + 1``: nothing while an endpoint is not cooling down; else a
        jittered backoff doubling per attempt, and at least until the first Retry-After among them has passed."""
        now = time.monotonic()
        candidates = self._candidates(excluded)
        if any(e.cooldown_until <= now for e in candidates):
            return 0.0
        p = self.policy
        cap = min(p.backoff_max_s, p.backoff_base_s * 2 ** min(attempt - 1, 32))
        wait = self._rng.uniform(cap / 2, cap)
        first_allowed = min(e.not_before for e in candidates)
        return max(wait, first_allowed - now)

    # ------------------------------------------------------------------------------------------- what happened

    def failed(self, endpoint: Endpoint, exc: ChainError, what: str, attempt: int) -> None:
        """A fault of ``endpoint``: cool it down (longer when it asked for it) and report it down."""
        now = time.monotonic()
        cooldown = self.policy.cooldown_s
        if isinstance(exc, RateLimited) and exc.retry_after_s is not None:
            retry_after = min(exc.retry_after_s, self.policy.max_retry_after_s)
            endpoint.not_before = now + retry_after
            cooldown = max(cooldown, retry_after)
        endpoint.cooldown_until = now + cooldown
        endpoint.failed_at = now
        fields = {
            "chain": self.chain,
            "endpoint": endpoint.label,
            "method": what,
            "outcome": outcome_of(exc),
            "attempt": attempt,
            "error": self.clean(str(exc))[:300],
        }
        if endpoint.up:
            endpoint.up = False
            log.warning("rpc endpoint failed: cooling it down, retrying", extra={"fields": fields})
            self.observer.endpoint_up(self.chain, endpoint.label, False)
        else:
            log.debug("rpc endpoint failed again, retrying", extra={"fields": fields})

    def answered(self, endpoint: Endpoint, started: float) -> None:
        """``endpoint`` answered a request sent at ``started`` (monotonic): if it was down and the request went
        out after its last fault, it is up again."""
        if endpoint.up or started < endpoint.failed_at:
            return
        endpoint.up = True
        endpoint.cooldown_until = endpoint.not_before = 0.0
        log.info("rpc endpoint answering again", extra={"fields": {"chain": self.chain, "endpoint": endpoint.label}})
        self.observer.endpoint_up(self.chain, endpoint.label, True)

    # ------------------------------------------------------------------------------------------- the retry loop

    async def run(
        self,
        attempt: Callable[[Endpoint], Awaitable[T]],
        *,
        what: str,
        max_attempts: int | None = None,
        refused_before: Collection[int] = (),
    ) -> T:
        """``attempt(endpoint)`` until it returns, with failover and retries (see the module docstring).
        ``refused_before``: indexes of endpoints known to refuse this request (an endpoint that takes no JSON-RPC
        batch), never asked; the caller raises its own refusal when that is every endpoint."""
        attempts = max(1, max_attempts if max_attempts is not None else self.policy.max_attempts)
        refused: set[int] = set(refused_before)
        if len(refused) >= len(self.endpoints):
            raise ValueError(f"{self.chain}: {what}: every endpoint is known to refuse it")
        last: ChainError | None = None
        for n in range(1, attempts + 1):
            endpoint = self.pick(refused)
            started = time.monotonic()
            try:
                value = await attempt(endpoint)
            except RequestRefused as exc:
                self.answered(endpoint, started)
                refused.add(endpoint.index)
                last = exc
                if len(refused) == len(self.endpoints):
                    raise
            except RangeTooLarge:
                self.answered(endpoint, started)
                raise
            except RetryableChainError as exc:
                self.failed(endpoint, exc, what, n)
                last = exc
            except ChainError:  # CallReverted: an answer about the request, given alike by every endpoint
                self.answered(endpoint, started)
                raise
            else:
                self.answered(endpoint, started)
                return value
            if n < attempts:
                delay = self.wait_s(n, refused)
                if delay > 0:
                    await asyncio.sleep(delay)
        assert last is not None
        raise last


# ---------------------------------------------------------------------------------------------------- HTTP layer


class HttpTransport:
    """POSTs to a pool's endpoints over one aiohttp session: response size cap, network errors translated, every
    exchange reported to the pool's observer. Use ``async with`` or call :meth:`aclose`."""

    def __init__(
        self,
        pool: EndpointPool,
        *,
        timeout_s: float = 10.0,
        headers: Mapping[str, str] | None = None,
        connections: int = 64,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        if max_response_bytes <= 0:
            raise ValueError("max_response_bytes must be positive")
        self.pool = pool
        self.timeout_s = timeout_s
        self.max_response_bytes = max_response_bytes
        self._headers = {"Content-Type": "application/json", "Accept": "application/json", **(headers or {})}
        self._connections = connections
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    async def aclose(self) -> None:
        """Close the session. Safe to call twice; the transport refuses requests afterwards."""
        self._closed = True
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    def _get_session(self) -> aiohttp.ClientSession:
        if self._closed:
            raise RuntimeError(f"{self.pool.chain}: RPC client used after aclose()")
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout_s),
                connector=aiohttp.TCPConnector(limit=self._connections),
                headers=self._headers,
            )
        return self._session

    async def exchange(
        self,
        endpoint: Endpoint,
        url: str,
        body: bytes,
        method: str,
        interpret: Callable[[HttpReply], tuple[T, str]],
    ) -> T:
        """POST ``body`` to ``url`` (one of ``endpoint``'s) and ``interpret`` the reply into a value and an outcome
        label. Reports the exchange to the observer, unless cancelled."""
        started = time.perf_counter()
        outcome = "ok"
        cancelled = False
        try:
            reply = await self._post(endpoint, url, body, f"{method} via {endpoint.label}")
            value, outcome = interpret(reply)
            return value
        except asyncio.CancelledError:
            cancelled = True
            raise
        except BaseException as exc:
            outcome = outcome_of(exc)
            raise
        finally:
            if not cancelled:
                self.pool.observer.rpc_request(
                    self.pool.chain, endpoint.label, method, time.perf_counter() - started, outcome
                )

    async def _post(self, endpoint: Endpoint, url: str, body: bytes, where: str) -> HttpReply:
        session = self._get_session()
        try:
            async with session.post(url, data=body) as resp:
                raw = await self._read(resp, where)
                return HttpReply(resp.status, raw, retry_after_s(resp.headers.get("Retry-After")))
        except TimeoutError as exc:
            raise TransportTimeout(f"{where}: no answer within {self.timeout_s} s") from exc
        except aiohttp.ClientPayloadError as exc:
            raise MalformedResponse(f"{where}: truncated body ({self._detail(exc)})") from exc
        except aiohttp.ClientConnectionError as exc:
            raise ConnectionFailed(f"{where}: connection failed ({self._detail(exc)})") from exc
        except aiohttp.ClientError as exc:
            raise ConnectionFailed(f"{where}: HTTP client error ({self._detail(exc)})") from exc

    async def _read(self, resp: aiohttp.ClientResponse, where: str) -> bytes:
        """The body, refused (connection closed) past ``max_response_bytes``, announced or counted."""
        cap = self.max_response_bytes
        length = resp.content_length
        if length is not None and length > cap:
            resp.close()
            raise ResponseTooLarge(f"{where}: {length} bytes announced, over the {cap}-byte limit")
        if length is not None and "Content-Encoding" not in resp.headers:
            return await resp.read()  # exactly the announced length, already checked
        chunks: list[bytes] = []
        size = 0
        async for chunk in resp.content.iter_any():
            size += len(chunk)
            if size > cap:
                resp.close()
                raise ResponseTooLarge(f"{where}: body over the {cap}-byte limit")
            chunks.append(chunk)
        return b"".join(chunks)

    def _detail(self, exc: BaseException) -> str:
        return self.pool.clean(f"{type(exc).__name__}: {exc}")[:300]
