"""A small async JSON-RPC client for EVM nodes: orjson, batches, over the shared transport (:mod:`chains.transport`:
failover, cooldown, retries, response size cap, secret scrubbing).

Why not web3.py here: its result formatters cost tens of microseconds per log and its batch path neither retries
nor tolerates one failed entry (see ``docs``/reference ``design.md``). This client returns plain decoded JSON;
callers slice hex strings themselves.

Errors (from :mod:`chains.base` and :mod:`chains.transport`, translated here with ``raise ... from exc``)::

    RetryableChainError           after the attempts are exhausted: the core backs off and retries
    ├── (transport)               timeouts, connection errors, any HTTP error status with any body, oversized or
    │                             truncated bodies, invalid JSON: faults of the endpoint, which is cooled down
    ├── RateLimited               HTTP 429 (Retry-After honoured), JSON-RPC rate-limit errors
    ├── TransientRpcError         any JSON-RPC error not known to be about the request (header not found, internal
    │                             error, texts nobody documented): a fault of the endpoint
    ├── MalformedResponse         a reply without result/error, missing batch entries, a result ``validate``
    │                             rejected: a fault of the endpoint
    ├── BlockNotAvailable         "block range extends beyond current head block" (newer geth, reth), anvil's
    │                             "BlockOutOfRangeError" (both -32602): the node that answered is behind, the
    │                             request is fine; a fault of the endpoint (see chains.evm.logs.beyond_head)
    ├── RangeTooLarge             eth_getLogs range/result/filter limits (see chains.evm.logs); NOT retried here:
    │                             the caller has to change the request
    └── RequestRefused
        ├── RpcError              method not found, invalid params, invalid request (-32601/-32602/-32600): one
        │                         provider may lack a method or the ``finalized`` tag, so every other endpoint is
        │                         asked once (no cooldown, no backoff) and RpcError is raised when all refused
        └── BatchesRefused        an atomic batch (below) that no endpoint takes: every endpoint answered JSON-RPC
                                  batches with something other than a list
    CallReverted                  an eth_call that reverted (code 3, "execution reverted"): an answer, not a fault;
                                  raised at once, never retried

Batches (:meth:`JsonRpcClient.batch`): by default entries are retried one by one as above (only the entries that
need it are re-sent, alone or in a smaller batch, maybe to another endpoint); an endpoint that answers a batch with
something other than a list gets single calls from then on (:attr:`JsonRpcClient.refuses_batches` says when that
is every endpoint).

Atomic batches (``atomic=True``) are for answers that vouch for each other, as a block header vouches for the logs
asked in the same request (:mod:`chains.evm.logs`): behind a load balancer one HTTP request reaches one node, and
two requests may reach two nodes. The entries always travel together, as one JSON-RPC batch in one HTTP request:
never split, never partly re-sent. Every attempt sends them all, and the results returned all come from one reply:

- any entry's fault (rate limited, a node error, a node behind, a result ``validate`` rejected, a missing entry)
  fails the attempt as a fault of the endpoint: it is cooled down and the whole batch sent again, elsewhere when
  another endpoint is free;
- an entry refused (``RequestRefused``) sends the whole batch to the next endpoint without cooldown; when every
  endpoint refused, the last reply is returned with the refusal in its place;
- ``RangeTooLarge`` and ``CallReverted`` entries are answers: returned in their place at once, for the caller to
  change its request (no retry);
- an endpoint that refuses batches is passed over for atomic batches from then on (``BatchesRefused`` when that is
  every endpoint, whatever ``return_errors``): the caller has to choose another way to vouch for its answers.

Secrets: an endpoint is only ever named by :func:`chains.redact.redact_url` (its label); texts that come from
aiohttp or a response body are scrubbed of every URL, its path and its query before they reach a message.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any

import orjson

from chains.base import (
    BlockNotAvailable,
    CallReverted,
    ChainError,
    MalformedResponse,
    RangeTooLarge,
    RateLimited,
    RetryableChainError,
    RpcObserver,
)
from chains.evm.logs import beyond_head, classify_range_error
from chains.transport import (
    DEFAULT_MAX_RESPONSE_BYTES,
    RATE_LIMIT_RE,
    Endpoint,
    EndpointPool,
    HttpReply,
    HttpTransport,
    RequestRefused,
    RetryPolicy,
    decode_json,
    http_fault,
    outcome_of,
)

log = logging.getLogger(__name__)

Call = tuple[str, Sequence[Any]]
"""``(method, params)`` of one JSON-RPC call."""

Validate = Callable[[Any], None]
"""Called with a call's ``result``; raises ``MalformedResponse`` when the value cannot be right (the endpoint is then
treated as faulty: cooled down, the call asked elsewhere)."""


class RpcError(RequestRefused):
    """A JSON-RPC error refusing the request as such (method not found, invalid params) that every endpoint gave."""

    def __init__(
        self, message: str, *, code: int | None = None, rpc_message: str = "", data: Any = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.rpc_message = rpc_message
        self.data = data


class TransientRpcError(RetryableChainError):
    """A JSON-RPC error taken as a fault of the endpoint: the ones a load-balanced or syncing node gives now and
    then (header not found, internal error), and any other not known to be about the request."""

    def __init__(self, message: str, *, code: int | None = None, rpc_message: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.rpc_message = rpc_message


class BatchesRefused(RequestRefused):
    """No endpoint takes JSON-RPC batches (each answered one with something other than a list, and is remembered for
    it): an atomic batch cannot be sent. The caller needs another way to vouch for its answers."""


class _BatchRejected(Exception):
    """The endpoint answered a batch with something other than a list: send the entries one by one."""


_REFUSAL_CODES = {-32600, -32601, -32602}  # invalid request, method not found, invalid params
_REVERT_RE = re.compile(r"execution reverted|\brevert(ed)?\b", re.IGNORECASE)


def classify_rpc_error(method: str, error: Any, label: str) -> ChainError:
    """The exception for a JSON-RPC ``error`` object returned for ``method`` by endpoint ``label``."""
    if not isinstance(error, dict):
        return MalformedResponse(f"{method} via {label}: error member is not an object")
    code = error.get("code")
    code = code if isinstance(code, int) and not isinstance(code, bool) else None
    message = str(error.get("message", ""))[:500]
    data = error.get("data")
    shown = f"{method} via {label}: JSON-RPC error {code}: {message}"
    if beyond_head(message):  # -32602 though the request is fine: never a refusal, nor a range to shrink
        return BlockNotAvailable(f"{shown} (the node is behind)")
    if method == "eth_getLogs":
        too_large = classify_range_error(code, message, data)
        if too_large is not None:
            return too_large
    if code == 3 or _REVERT_RE.search(message) or (isinstance(data, str) and _REVERT_RE.match(data)):
        return CallReverted(shown, data=data)
    if code == 429 or RATE_LIMIT_RE.search(message) or (code == -32005 and "limit" in message.lower()):
        retry_after = None
        if isinstance(data, dict):
            rate = data.get("rate")
            backoff = rate.get("backoff_seconds") if isinstance(rate, dict) else data.get("retry_after")
            if isinstance(backoff, int | float):
                retry_after = float(backoff)
        return RateLimited(shown, retry_after)
    if code in _REFUSAL_CODES:
        return RpcError(shown, code=code, rpc_message=message, data=data)
    return TransientRpcError(shown, code=code, rpc_message=message)


_MISSING: Any = object()


def _settled(result: Any) -> bool:
    """An entry needs no further attempt: a value, or an error that is an answer about the request."""
    return result is not _MISSING and (
        not isinstance(result, RetryableChainError) or isinstance(result, RangeTooLarge)
    )


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
        backoff_base_s: float = 0.1,
        backoff_max_s: float = 5.0,
        max_retry_after_s: float = 60.0,
        max_batch: int = 100,
        max_concurrency: int = 16,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        self.chain = chain
        self.max_attempts = max_attempts
        self.max_batch = max_batch
        policy = RetryPolicy(max_attempts, cooldown_s, backoff_base_s, backoff_max_s, max_retry_after_s)
        self._pool = EndpointPool(urls, chain=chain, observer=observer, policy=policy)
        self._http = HttpTransport(self._pool, timeout_s=timeout_s, max_response_bytes=max_response_bytes)
        self.observer = self._pool.observer
        self._ids = itertools.count(1)
        self._limit = asyncio.Semaphore(max_concurrency)

    # ------------------------------------------------------------------------------------------- lifecycle

    @property
    def endpoint_labels(self) -> list[str]:
        return self._pool.labels

    @property
    def refuses_batches(self) -> bool:
        """Whether every endpoint has refused a JSON-RPC batch (learnt from their answers, kept for the client's
        life): atomic batches then raise ``BatchesRefused`` without a request, and other batches travel as single
        calls, which a load balancer may route to different nodes."""
        return all(e.notes.get("no_batches") for e in self._pool.endpoints)

    async def __aenter__(self) -> JsonRpcClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the session. Safe to call twice; the client refuses calls afterwards."""
        await self._http.aclose()

    # ------------------------------------------------------------------------------------------- public API

    async def call(self, method: str, params: Sequence[Any], *, validate: Validate | None = None) -> Any:
        """One call; returns its ``result`` (which may be ``None``), after ``validate`` accepted it."""

        async def attempt(endpoint: Endpoint) -> Any:
            payload = {"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": list(params)}
            return await self._exchange(
                endpoint, method, payload, lambda reply: (self._single_result(endpoint, method, reply, validate), "ok")
            )

        return await self._pool.run(attempt, what=method)

    async def batch(
        self,
        calls: Sequence[Call],
        *,
        return_errors: bool = False,
        validate: Validate | None = None,
        atomic: bool = False,
    ) -> list[Any]:
        """Results of ``calls`` in order, sent as JSON-RPC batches of at most ``max_batch`` entries; ``validate``
        is applied to each entry's result.

        Entries that fail with a retryable error are retried (only they are re-sent). An entry that fails for good
        raises its error, unless ``return_errors``: then its place in the list holds the ``ChainError``.

        ``atomic``: ``calls`` (at most ``max_batch``) travel as one request on every attempt and the results come
        from one reply (see the module docstring); ``BatchesRefused`` when no endpoint takes batches.
        """
        if atomic:
            return await self._atomic_batch(calls, return_errors, validate)
        results: list[Any] = [_MISSING] * len(calls)
        chunks = [
            list(range(i, min(i + self.max_batch, len(calls)))) for i in range(0, len(calls), self.max_batch)
        ]
        await asyncio.gather(*(self._batch_chunk(calls, idxs, results, validate) for idxs in chunks))
        if not return_errors:
            for r in results:
                if isinstance(r, ChainError):
                    raise r
        return results

    # ------------------------------------------------------------------------------------------- exchanges

    async def _exchange(
        self, endpoint: Endpoint, method: str, payload: Any, interpret: Callable[[HttpReply], tuple[Any, str]]
    ) -> Any:
        async with self._limit:
            return await self._http.exchange(endpoint, endpoint.url, orjson.dumps(payload), method, interpret)

    def _decode(self, endpoint: Endpoint, what: str, reply: HttpReply) -> Any:
        """The decoded JSON of a 2xx reply, or of an error status carrying a JSON-RPC error object (which says more
        than the status); any other error status raises its HTTP fault."""
        where = f"{what} via {endpoint.label}"
        fault = http_fault(reply, where, self._pool.secrets)
        if fault is None:
            return decode_json(reply, where, self._pool.secrets)
        if reply.status != 429 and reply.raw.lstrip()[:1] == b"{":
            try:
                value = orjson.loads(reply.raw)
            except orjson.JSONDecodeError:
                value = None
            if isinstance(value, dict) and isinstance(value.get("error"), dict):
                return value
        raise fault

    def _single_result(self, endpoint: Endpoint, method: str, reply: HttpReply, validate: Validate | None) -> Any:
        value = self._decode(endpoint, method, reply)
        result = self._result_of(endpoint, method, value, reply.retry_after_s)
        if validate is not None:
            validate(result)
        return result

    def _result_of(self, endpoint: Endpoint, method: str, reply: Any, retry_after: float | None = None) -> Any:
        if not isinstance(reply, dict):
            raise MalformedResponse(f"{method} via {endpoint.label}: reply is not a JSON object")
        if reply.get("error") is not None:
            error = classify_rpc_error(method, reply["error"], endpoint.label)
            if isinstance(error, RateLimited) and error.retry_after_s is None:
                error.retry_after_s = retry_after
            raise error
        if "result" not in reply:
            raise MalformedResponse(f"{method} via {endpoint.label}: reply has neither result nor error")
        return reply["result"]

    # ------------------------------------------------------------------------------------------- batches

    async def _atomic_batch(
        self, calls: Sequence[Call], return_errors: bool, validate: Validate | None
    ) -> list[Any]:
        """``calls`` as one request per attempt, the results of one reply (see the module docstring)."""
        if not calls:
            return []
        if len(calls) > self.max_batch:
            raise ValueError(f"an atomic batch of {len(calls)} calls: more than max_batch ({self.max_batch})")
        methods = {method for method, _ in calls}
        what = f"batch:{next(iter(methods))}" if len(methods) == 1 else "batch"
        # one call is one request anyway: it needs no batch support
        passed_over = {e.index for e in self._pool.endpoints if len(calls) > 1 and e.notes.get("no_batches")}
        if len(passed_over) == len(self._pool.endpoints):
            raise BatchesRefused(f"{self.chain}: {what}: no endpoint takes JSON-RPC batches")
        idxs = list(range(len(calls)))
        last: list[Any] | None = None  # the results of the last reply

        async def attempt(endpoint: Endpoint) -> list[Any]:
            nonlocal last
            results: list[Any] = [_MISSING] * len(calls)
            if len(calls) == 1:
                await self._singles(endpoint, calls, idxs, results, validate)
            else:
                try:
                    await self._batch_once(endpoint, calls, idxs, results, validate)
                except _BatchRejected:
                    self._refuses_batches(endpoint)
                    raise BatchesRefused(
                        f"{what} via {endpoint.label}: the endpoint refuses JSON-RPC batches") from None
            last = results
            for r in results:
                if isinstance(r, RetryableChainError) and not isinstance(r, RangeTooLarge | RequestRefused):
                    raise r  # the endpoint is cooled down; the whole batch goes again
            for r in results:
                if isinstance(r, RequestRefused):
                    raise r  # the whole batch goes to the next endpoint, if one has not refused it yet
            return results

        try:
            results = await self._pool.run(attempt, what=what, max_attempts=self.max_attempts,
                                           refused_before=passed_over)
        except RetryableChainError:
            if last is None:
                raise  # no reply at all: the batches refused, or every attempt failed as a whole
            results = last
        if not return_errors:
            for r in results:
                if isinstance(r, ChainError):
                    raise r
        return results

    def _refuses_batches(self, endpoint: Endpoint) -> None:
        """Remember that ``endpoint`` answered a batch with something other than a list."""
        if not endpoint.notes.get("no_batches"):
            endpoint.notes["no_batches"] = True
            log.warning(
                "rpc endpoint refuses batches, sending single calls",
                extra={"fields": {"chain": self.chain, "endpoint": endpoint.label}},
            )

    async def _batch_chunk(
        self, calls: Sequence[Call], idxs: list[int], results: list[Any], validate: Validate | None
    ) -> None:
        """Settle the entries ``idxs``. Each attempt sends the entries still open, except those the chosen endpoint
        already refused; an entry every endpoint refused is settled with its ``RpcError``."""
        refused_by: dict[int, set[int]] = {i: set() for i in idxs}
        everyone = len(self._pool.endpoints)
        methods = {calls[i][0] for i in idxs}
        what = f"batch:{next(iter(methods))}" if len(methods) == 1 else "batch"

        def open_entries() -> list[int]:
            return [
                i for i in idxs
                if not _settled(results[i])
                and not (isinstance(results[i], RequestRefused) and len(refused_by[i]) == everyone)
            ]

        async def attempt(endpoint: Endpoint) -> None:
            send = [i for i in open_entries() if endpoint.index not in refused_by[i]]
            if send:
                for i in send:
                    results[i] = _MISSING
                await self._send(endpoint, calls, send, results, validate)
                for i in send:
                    if isinstance(results[i], RequestRefused):
                        refused_by[i].add(endpoint.index)
            still_open = open_entries()
            if not still_open:
                return
            faults = [results[i] for i in send if i in still_open and not isinstance(results[i], RequestRefused)]
            if faults:
                raise faults[0]  # the endpoint is cooled down; the open entries go elsewhere
            # no fault: this endpoint refused every entry still open, so it is not asked again for them
            refusals = [results[i] for i in still_open if isinstance(results[i], RequestRefused)]
            raise refusals[0] if refusals else RequestRefused(f"{what} via {endpoint.label}: refused")

        try:
            await self._pool.run(attempt, what=what, max_attempts=self.max_attempts)
        except ChainError:
            pass  # each open entry holds its last error
        for i in idxs:
            if results[i] is _MISSING:  # pragma: no cover - every entry is sent on the first attempt
                results[i] = MalformedResponse(f"{calls[i][0]}: no attempt reached an endpoint")

    async def _send(
        self, endpoint: Endpoint, calls: Sequence[Call], idxs: list[int], results: list[Any], validate: Validate | None
    ) -> None:
        """Send entries ``idxs`` to ``endpoint`` (one batch, or single calls where batches are refused); each entry's
        result or ``ChainError`` lands in ``results``."""
        if len(idxs) == 1 or endpoint.notes.get("no_batches"):
            await self._singles(endpoint, calls, idxs, results, validate)
            return
        try:
            await self._batch_once(endpoint, calls, idxs, results, validate)
        except _BatchRejected:
            self._refuses_batches(endpoint)
            await self._singles(endpoint, calls, idxs, results, validate)

    async def _singles(
        self, endpoint: Endpoint, calls: Sequence[Call], idxs: list[int], results: list[Any], validate: Validate | None
    ) -> None:
        async def single(i: int) -> None:
            method, params = calls[i]
            payload = {"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": list(params)}
            try:
                results[i] = await self._exchange(
                    endpoint, method, payload,
                    lambda reply: (self._single_result(endpoint, method, reply, validate), "ok"),
                )
            except ChainError as exc:
                results[i] = exc

        await asyncio.gather(*(single(i) for i in idxs))

    async def _batch_once(
        self, endpoint: Endpoint, calls: Sequence[Call], idxs: list[int], results: list[Any], validate: Validate | None
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

        def interpret(reply: HttpReply) -> tuple[None, str]:
            if reply.status in (400, 405, 413, 415):
                raise _BatchRejected()
            value = self._decode(endpoint, label, reply)
            if not isinstance(value, list):
                raise _BatchRejected()
            first_error: ChainError | None = None
            for entry in value:
                if not isinstance(entry, dict):
                    continue
                entry_id = entry.get("id")
                i = by_id.pop(entry_id, -1) if isinstance(entry_id, int) else -1
                if i < 0:
                    continue
                try:
                    results[i] = self._result_of(endpoint, calls[i][0], entry, reply.retry_after_s)
                    if validate is not None:
                        validate(results[i])
                except ChainError as exc:
                    results[i] = exc
                    first_error = first_error or exc
            for i in by_id.values():
                results[i] = MalformedResponse(f"{calls[i][0]} via {endpoint.label}: batch reply lacks this entry")
                first_error = first_error or results[i]
            return None, outcome_of(first_error) if first_error is not None else "ok"

        try:
            await self._exchange(endpoint, label, payload, interpret)
        except _BatchRejected:
            raise
        except ChainError as exc:
            for i in idxs:
                results[i] = exc

