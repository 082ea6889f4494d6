"""HTTP client for the java-tron full-node API, over the shared transport (:mod:`chains.transport`: failover,
cooldown, retries, response size cap, secret scrubbing); this module adds the API's error bodies.

Why not tronpy's ``AsyncTron``/``AsyncHTTPProvider``: the endpoints the indexer lives on
(``gettransactioninfobyblocknum``, ``getblockbylimitnext``) have no tronpy wrapper, its provider sends
``TRON-PRO-API-KEY`` only to hosts named ``trongrid`` (and otherwise rotates tronpy's built-in shared keys), prints
to stderr and recurses on a 403, and its high-level calls raise their own exception types. Plain POSTs over aiohttp
(the transport the EVM client uses too) keep one behaviour for every host.

Every request is a POST of a JSON body to ``<base url>/<path>`` (the base may carry a path and a query; the
path is appended to the base's path, not resolved with ``urljoin``). The ``TRON-PRO-API-KEY`` header is sent to every
endpoint when a key is configured.

Answers and what they become (all retryable: every one but the first is a fault of the endpoint, which is cooled
down while the next endpoint is asked)::

    HTTP 200 + JSON                         the decoded value (dict, or list for bare-array endpoints), once
                                            ``validate`` accepted it
    HTTP 200 + {"Error": "...lack of computing resources"} / "frequency limit" / "rate"      RateLimited
    HTTP 200 + {"Error": "...timeout / busy / unavailable"}   TronTransientError
    HTTP 200 + {"Error": anything else}      TronNodeError
    HTTP 200 + truncated / non-JSON / wrong top-level type / over the size cap     MalformedResponse
    HTTP 429, 503 with Retry-After, rate-limit bodies (TronGrid's 403)      RateLimited (Retry-After honoured)
    HTTP 5xx (other), 408, timeout, connection refused/reset   TransientHttpStatus, TransportTimeout, ConnectionFailed
    HTTP 401, 403, 404 (API disabled), other 4xx, any body     HttpStatusError

An ``Error`` body is never taken for an empty answer: it is classified before the shape is looked at. A constant
contract call whose ``result.result`` is false is an answer, not an error, here: the adapter reads it
(``TronCallFailed``, a :class:`chains.base.CallReverted`).

Secrets: an endpoint is named only by :func:`chains.redact.redact_url`; any text that comes from aiohttp or from the
node is scrubbed of the URL, its path, its query and the API key before it reaches a message or a log line.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson

from chains.base import MalformedResponse, RateLimited, RetryableChainError, RpcObserver
from chains.transport import (
    DEFAULT_MAX_RESPONSE_BYTES,
    RATE_LIMIT_RE,
    Endpoint,
    EndpointPool,
    HttpReply,
    HttpTransport,
    RetryPolicy,
    decode_json,
    http_fault,
)

CHAIN = "tron"
API_KEY_HEADER = "TRON-PRO-API-KEY"

_RATE_LIMIT_RE = re.compile(RATE_LIMIT_RE.pattern + r"|suspended|exceed", re.IGNORECASE)
_TRANSIENT_RE = re.compile(r"timeout|timed out|busy|unavailable|try again|temporar", re.IGNORECASE)

Validate = Callable[[Any], None]
"""Called with the decoded answer; raises ``MalformedResponse`` when it cannot be right (the endpoint is then
treated as faulty: cooled down, the request asked elsewhere)."""


class TronNodeError(RetryableChainError):
    """The node answered ``{"Error": ...}`` with a text not known to be transient or a rate limit: taken as a
    fault of that node (another may answer), retried elsewhere like any other."""

    def __init__(self, message: str, node_error: str) -> None:
        super().__init__(message)
        self.node_error = node_error


class TronTransientError(RetryableChainError):
    """An ``Error`` body that reads transient (timeouts, busy node)."""


def _join(base: str, path: str) -> str:
    """``base`` with ``path`` appended to its path, its query kept (``https://h/key/?a=b`` + ``/wallet/x``)."""
    parts = urlsplit(base)
    return urlunsplit(parts._replace(path=parts.path.rstrip("/") + path))


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
        backoff_base_s: float = 0.1,
        backoff_cap_s: float = 5.0,
        max_retry_after_s: float = 60.0,
        max_connections: int = 16,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        if not urls:
            raise ValueError("at least one Tron RPC URL is required")
        self._api_key = api_key or None
        policy = RetryPolicy(1 + max(0, max_retries), cooldown_s, backoff_base_s, backoff_cap_s, max_retry_after_s)
        self._pool = EndpointPool(
            urls, chain=CHAIN, observer=observer, policy=policy, extra_secrets=[self._api_key or ""]
        )
        headers = {API_KEY_HEADER: self._api_key} if self._api_key else {}
        self._http = HttpTransport(
            self._pool,
            timeout_s=request_timeout_s,
            headers=headers,
            connections=max_connections,
            max_response_bytes=max_response_bytes,
        )

    @property
    def labels(self) -> list[str]:
        return self._pool.labels

    def clean(self, text: str) -> str:
        """``text`` without any configured URL, URL part or API key."""
        return self._pool.clean(text)

    async def aclose(self) -> None:
        """Close the session. Safe to call twice; the client refuses calls afterwards."""
        await self._http.aclose()

    async def call(
        self,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        expect: type = dict,
        validate: Validate | None = None,
    ) -> Any:
        """POST ``body`` to ``path`` (``/wallet/getnowblock``) with retries and failover; the decoded JSON, which
        is an instance of ``expect`` (``dict`` or ``list``) and was accepted by ``validate``."""
        data = orjson.dumps(body or {})

        async def attempt(endpoint: Endpoint) -> Any:
            return await self._http.exchange(
                endpoint,
                _join(endpoint.url, path),
                data,
                path,
                lambda reply: (self._interpret(endpoint, path, reply, expect, validate), "ok"),
            )

        return await self._pool.run(attempt, what=path)

    def _interpret(
        self, endpoint: Endpoint, path: str, reply: HttpReply, expect: type, validate: Validate | None
    ) -> Any:
        where = f"{path} via {endpoint.label}"
        fault = http_fault(reply, where, self._pool.secrets)
        if fault is not None:
            raise fault
        value = decode_json(reply, where, self._pool.secrets)
        if isinstance(value, dict) and "Error" in value:
            node_error = self.clean(str(value["Error"]))[:500]
            shown = f"{where}: node error: {node_error}"
            if _RATE_LIMIT_RE.search(node_error):
                raise RateLimited(shown, reply.retry_after_s)
            if _TRANSIENT_RE.search(node_error):
                raise TronTransientError(shown)
            raise TronNodeError(shown, node_error)
        if not isinstance(value, expect):
            raise MalformedResponse(f"{where}: expected a JSON {expect.__name__}, got {type(value).__name__}")
        if validate is not None:
            validate(value)
        return value
