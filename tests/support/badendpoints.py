"""Small HTTP servers that answer like broken, banned or odd RPC endpoints, for the transport's failover tests.

    async with BadEndpoint(html(403)) as bad:
        client = JsonRpcClient([bad.url, anvil.url], chain="bsc")

An endpoint answers every request (any path, any query, any method) with its ``answer``: a coroutine function given
the request as :class:`Seen` and the aiohttp request, returning the response. ``requests`` records what came in, so
a test can tell which endpoint a request reached. Ready-made answers:

- :func:`html`: an error page with any status, as a provider answers a banned or unknown key; ``echo_url`` puts the
  requested path and query in the page (and in a link), as some error pages do;
- :func:`json_answer`: any JSON with any status (a Tron ``{"Error": ...}`` body, a JSON-RPC error object);
- :func:`rpc_error`: a JSON-RPC error object for each entry of the request (batches answered as a list);
- :func:`rpc_result`: a JSON-RPC result for each entry, the same for all (a value that parses but is wrong);
- :func:`oversized`: a JSON-RPC reply of ``size`` bytes, with a Content-Length or chunked (no length announced);
- :func:`truncated`: a Content-Length larger than what is sent before the connection is closed;
- :func:`invalid_json`: HTTP 200 with a JSON content type and a body that is not JSON;
- :func:`forward`: a pass-through to a real node (anvil, the Tron simulator), except the JSON-RPC entries
  ``refuse`` answers itself (an endpoint lacking a method or a block tag).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from citadel_devtools.ports import free_port


@dataclass(frozen=True)
class Seen:
    method: str
    path_qs: str
    body: bytes
    headers: dict[str, str]

    def payload(self) -> Any:
        try:
            return orjson.loads(self.body)
        except orjson.JSONDecodeError:
            return None

    def rpc_methods(self) -> list[str]:
        """The JSON-RPC methods of the request (one per batch entry)."""
        payload = self.payload()
        entries = payload if isinstance(payload, list) else [payload]
        return [str(e.get("method")) for e in entries if isinstance(e, dict)]


Answer = Callable[["BadEndpoint", Seen, web.Request], Awaitable[web.StreamResponse]]


class BadEndpoint:
    """One HTTP server on a free port of 127.0.0.1 answering with ``answer``."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.port = free_port()
        self.requests: list[Seen] = []
        self.bytes_sent = 0  # by answers that stream
        self.session: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url_with(self, path_and_query: str) -> str:
        return self.url + path_and_query

    async def __aenter__(self) -> BadEndpoint:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=0.2, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True).start()
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self.session is not None:
            await self.session.close()
            self.session = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        seen = Seen(request.method, request.path_qs, await request.read(), dict(request.headers))
        self.requests.append(seen)
        return await self.answer(self, seen, request)


# ---------------------------------------------------------------------------------------------------- answers


def html(status: int, text: str = "Forbidden", *, echo_url: bool = False) -> Answer:
    async def answer(endpoint: BadEndpoint, seen: Seen, request: web.Request) -> web.StreamResponse:
        echoed = ""
        if echo_url:
            url = endpoint.url + seen.path_qs
            echoed = f'<p>The requested URL {seen.path_qs} was refused.</p><a href="{url}">{url}</a>'
        page = (
            f"<!DOCTYPE html><html><head><title>{status} {text}</title></head>"
            f"<body><h1>{status} {text}</h1>{echoed}<hr><center>nginx</center></body></html>"
        )
        return web.Response(status=status, text=page, content_type="text/html")

    return answer


def json_answer(value: Any, status: int = 200) -> Answer:
    body = json.dumps(value).encode()  # not orjson: numbers past 64 bits are allowed

    async def answer(endpoint: BadEndpoint, seen: Seen, request: web.Request) -> web.StreamResponse:
        return web.Response(status=status, body=body, content_type="application/json")

    return answer


def rpc_error(code: int, message: str, status: int = 200) -> Answer:
    async def answer(endpoint: BadEndpoint, seen: Seen, request: web.Request) -> web.StreamResponse:
        payload = seen.payload()
        entries = payload if isinstance(payload, list) else [payload]
        replies = [
            {"jsonrpc": "2.0", "id": e.get("id") if isinstance(e, dict) else None,
             "error": {"code": code, "message": message}}
            for e in entries
        ]
        body = orjson.dumps(replies if isinstance(payload, list) else replies[0])
        return web.Response(status=status, body=body, content_type="application/json")

    return answer


def rpc_result(result: Any) -> Answer:
    """A well-formed JSON-RPC reply carrying ``result`` for each entry of the request (a value that parses but may be
    wrong: a number out of any plausible range)."""

    async def answer(endpoint: BadEndpoint, seen: Seen, request: web.Request) -> web.StreamResponse:
        payload = seen.payload()
        entries = payload if isinstance(payload, list) else [payload]
        replies = [
            {"jsonrpc": "2.0", "id": e.get("id") if isinstance(e, dict) else None, "result": result}
            for e in entries
        ]
        body = orjson.dumps(replies if isinstance(payload, list) else replies[0])
        return web.Response(body=body, content_type="application/json")

    return answer


def oversized(size: int, *, announce_length: bool) -> Answer:
    """A well-formed JSON-RPC reply (``result`` a long hex string) of ``size`` bytes or a little more, streamed
    64 KiB at a time (never held in memory: ``size`` may be gigabytes) with its Content-Length announced or
    chunked; ``BadEndpoint.bytes_sent`` counts what the client took before it hung up."""
    head, tail = b'{"jsonrpc":"2.0","id":1,"result":"0x', b'"}'
    chunk = b"ab" * (1 << 15)
    body_len = len(head) + max(0, size - len(head) - len(tail)) // len(chunk) * len(chunk) + len(chunk) + len(tail)

    async def answer(endpoint: BadEndpoint, seen: Seen, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.content_type = "application/json"
        if announce_length:
            response.content_length = body_len
        await response.prepare(request)
        with contextlib.suppress(ConnectionError, aiohttp.ClientConnectionResetError):
            await response.write(head)
            written = len(head)
            while written < body_len - len(tail):
                await response.write(chunk)
                written += len(chunk)
                endpoint.bytes_sent += len(chunk)
            await response.write(tail)
            await response.write_eof()
        return response

    return answer


def truncated(sent: bytes = b'{"jsonrpc":"2.0","id":1,"resu', announced: int = 4096) -> Answer:
    async def answer(endpoint: BadEndpoint, seen: Seen, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.content_type = "application/json"
        response.content_length = announced
        await response.prepare(request)
        await response.write(sent)
        if request.transport is not None:
            request.transport.close()  # the rest never comes
        return response

    return answer


def invalid_json() -> Answer:
    async def answer(endpoint: BadEndpoint, seen: Seen, request: web.Request) -> web.StreamResponse:
        return web.Response(body=b"<<< not json >>>", content_type="application/json")

    return answer


Refusal = Callable[[dict[str, Any]], dict[str, Any] | None]
"""Given one JSON-RPC request entry: the error object to answer it with, or None to forward it."""


def forward(upstream: str, refuse: Refusal | None = None, *, keep_path: bool = True) -> Answer:
    """Pass every request to ``upstream`` (its path appended to the upstream URL when ``keep_path``, as the Tron
    API needs; the query is dropped), unless ``refuse`` answers a JSON-RPC entry itself."""

    async def answer(endpoint: BadEndpoint, seen: Seen, request: web.Request) -> web.StreamResponse:
        assert endpoint.session is not None
        payload = seen.payload()
        if refuse is not None and isinstance(payload, dict | list):
            entries = payload if isinstance(payload, list) else [payload]
            errors = [refuse(e) if isinstance(e, dict) else None for e in entries]
            if any(e is not None for e in errors):
                if any(e is None for e in errors):
                    raise NotImplementedError("forward(): a batch mixing refused and forwarded entries")
                replies = [
                    {"jsonrpc": "2.0", "id": entry.get("id"), "error": error}
                    for entry, error in zip(entries, errors, strict=True)
                ]
                body = orjson.dumps(replies if isinstance(payload, list) else replies[0])
                return web.Response(body=body, content_type="application/json")
        headers = {"Content-Type": "application/json"}
        target = upstream + request.path if keep_path else upstream
        async with endpoint.session.post(target, data=seen.body, headers=headers) as resp:
            raw = await resp.read()
            return web.Response(status=resp.status, body=raw, content_type="application/json")

    return answer
