"""A TCP proxy that can make one connection go silent: what a database failover or a dropped NAT entry does to a
client. The server side ends, and the client's socket never hears of it (no FIN, no RST, no data).

    async with TcpProxy("127.0.0.1", 5432) as proxy:        # clients connect to proxy.port
        proxy.blackhole(server_side_port)                     # pg_stat_activity.client_port of that session

``blackhole`` takes the local port of the proxy's connection to the server, which the server reports as the
session's ``client_port``: a test picks one session (the writer lease's, say) and silences only that one.
"""

from __future__ import annotations

import asyncio
from contextlib import suppress
from dataclasses import dataclass, field
from types import TracebackType


@dataclass
class _Pair:
    client: asyncio.StreamWriter
    server: asyncio.StreamWriter
    silent: bool = False
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


class TcpProxy:
    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._pairs: dict[int, _Pair] = {}  # by the proxy's local port towards the server

    async def __aenter__(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._server is not None:
            self._server.close()
        for pair in list(self._pairs.values()):
            for task in pair.tasks:
                task.cancel()
            for writer in (pair.client, pair.server):
                writer.close()
        if self._server is not None:
            with suppress(Exception):
                await self._server.wait_closed()

    def blackhole(self, server_side_port: int) -> None:
        """From now on nothing passes on that connection in either direction, and the client side is never
        closed: the client waits for ever on a socket that looks alive."""
        self._pairs[server_side_port].silent = True

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.close()
            return
        local_port = up_writer.get_extra_info("sockname")[1]
        pair = _Pair(writer, up_writer)
        self._pairs[local_port] = pair
        pair.tasks = [
            asyncio.create_task(self._pipe(reader, up_writer, pair, close_on_end=True)),
            asyncio.create_task(self._pipe(up_reader, writer, pair, close_on_end=True)),
        ]

    @staticmethod
    async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, pair: _Pair, close_on_end: bool) -> None:
        try:
            while data := await src.read(65536):
                if pair.silent:
                    continue
                dst.write(data)
                await dst.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        if close_on_end and not pair.silent:
            dst.close()
