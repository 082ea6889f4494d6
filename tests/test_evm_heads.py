"""New-head websocket subscriptions (chains.evm.heads) on anvil, directly and through a websocket proxy we can cut.

anvil serves websocket JSON-RPC on its HTTP port. Blocks are mined by hand (``anvil_mine``), so every head a test
sees is one it caused; "woke because of a head" is asserted on the announced number, never on timing alone.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import web

from chains.base import Chain
from chains.evm.adapter import EvmAdapter
from chains.evm.heads import NewHeadsSubscription
from chains.redact import redact_url
from citadel_devtools.anvil import Anvil
from citadel_devtools.ports import free_port
from tests.fixtures.anvil import AnvilFactory

PATH_KEY = "pk5e8a1c3f7b9d2e4a6c8f0b1d3e5a7c9"
QUERY_KEY = "qk2b4d6f8a0c1e3a5c7e9b1d3f5a7c9e0"


@dataclass
class Recorder:
    """An RpcObserver keeping every report in order."""

    requests: list[tuple[str, str, str]] = field(default_factory=list)  # (endpoint, method, outcome)
    skipped: list[str] = field(default_factory=list)
    where: list[str] = field(default_factory=list)

    def rpc_request(self, chain: str, endpoint: str, method: str, duration_s: float, outcome: str) -> None:
        self.requests.append((endpoint, method, outcome))

    def skipped_item(self, chain: str, reason: str, where: str = "") -> None:
        self.skipped.append(reason)
        self.where.append(where)

    def subscribes(self, outcome: str) -> list[str]:
        return [e for e, m, o in self.requests if m == "eth_subscribe" and o == outcome]


def ws_url(node: Anvil) -> str:
    return f"ws://127.0.0.1:{node.port}"


async def until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():  # noqa: ASYNC110 (polls state the subscription task and the proxy change)
            await asyncio.sleep(0.01)


async def mine(node: Anvil) -> int:
    """Mine one block; its number."""
    async with aiohttp.ClientSession() as session:
        for method, params in (("anvil_mine", ["0x1"]), ("eth_blockNumber", [])):
            body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
            async with session.post(node.url, json=body) as resp:
                reply = await resp.json()
    return int(reply["result"], 16)


class WsProxy:
    """A websocket relay in front of anvil: every path is relayed; ``?refuse`` answers the handshake with 403.
    :meth:`cut` closes every relayed connection (the server side drops), :meth:`inject` sends a raw text frame
    to every client."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.port = free_port()
        self.clients: set[web.WebSocketResponse] = set()
        self.connections = 0
        self._runner: web.AppRunner | None = None

    def url(self, tail: str = "") -> str:
        return f"ws://127.0.0.1:{self.port}{tail}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        await self.cut()
        if self._runner is not None:
            await self._runner.cleanup()

    async def cut(self) -> None:
        for ws in list(self.clients):
            await ws.close()

    async def inject(self, text: str) -> None:
        for ws in list(self.clients):
            await ws.send_str(text)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if "refuse" in request.query:
            return web.Response(status=403, text="forbidden")
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.connections += 1
        self.clients.add(ws)
        try:
            async with aiohttp.ClientSession() as session, session.ws_connect(self.upstream) as up:

                async def downstream() -> None:
                    async for msg in up:
                        if msg.type == aiohttp.WSMsgType.TEXT:
                            await ws.send_str(msg.data)

                relay = asyncio.create_task(downstream())
                try:
                    async for msg in ws:
                        if msg.type == aiohttp.WSMsgType.TEXT:
                            await up.send_str(msg.data)
                finally:
                    relay.cancel()
                    await asyncio.gather(relay, return_exceptions=True)
        finally:
            self.clients.discard(ws)
        return ws


@pytest.fixture
def node(anvil_factory: AnvilFactory) -> Anvil:
    return anvil_factory(56)


@pytest.fixture
async def proxy(node: Anvil) -> AsyncIterator[WsProxy]:
    relay = WsProxy(ws_url(node))
    await relay.start()
    yield relay
    await relay.stop()


# ---------------------------------------------------------------------------------------------------- adapter


async def test_subscription_wakes_wait_for_new_head(node: Anvil) -> None:
    obs = Recorder()
    async with EvmAdapter(Chain.BSC, [ws_url(node), node.url], 56, observer=obs) as adapter:
        heads = adapter.heads
        assert heads is not None and heads.latest_number is None
        assert (await adapter.head()).number == 0  # requests go over HTTP, not the ws URL listed first

        waiter = asyncio.create_task(adapter.wait_for_new_head(60))  # starts the subscription lazily
        await until(lambda: heads.connected)
        assert not waiter.done()
        number = await mine(node)
        await asyncio.wait_for(waiter, 10)  # a 60 s wait that ended well within 10 s ...
        assert heads.latest_number == number  # ... because the node announced the block we mined
        assert heads.heads_received == 1

        # nothing mined: a wait times out; a head announced while nobody waits is not lost
        assert await heads.wait(0.2) is False
        number = await mine(node)
        await until(lambda: heads.latest_number == number)
        assert await heads.wait(0.0) is True
        assert await heads.wait(0.0) is False

        # cancelled the way the watcher's _idle cancels it, the subscription keeps running
        waiter = asyncio.create_task(adapter.wait_for_new_head(60))
        await asyncio.sleep(0.05)
        waiter.cancel()
        await asyncio.gather(waiter, return_exceptions=True)
        number = await mine(node)
        await asyncio.wait_for(adapter.wait_for_new_head(60), 10)
        assert heads.latest_number == number
    assert obs.subscribes("ok") == [redact_url(ws_url(node))]
    assert not heads.connected
    await adapter.aclose()  # safe twice
    assert await heads.wait(0.01) is False  # closed: never restarts, never raises


async def test_adapter_without_ws_url_polls(node: Anvil) -> None:
    async with EvmAdapter(Chain.BSC, [node.url], 56) as adapter:
        assert adapter.heads is None
        loop = asyncio.get_running_loop()
        started = loop.time()
        await adapter.wait_for_new_head(0.2)
        assert loop.time() - started >= 0.19


def test_adapter_with_only_ws_urls_is_refused() -> None:
    with pytest.raises(ValueError) as refused:
        EvmAdapter(Chain.POLYGON, ["ws://127.0.0.1:1", "wss://polygon.example/v2/" + PATH_KEY], 137)
    message = str(refused.value)
    assert "CITADEL_POLYGON__RPC_URLS" in message
    assert (
        "needs at least one http(s) URL for requests; ws(s) URLs are used for new-head subscriptions"
        in message
    )
    assert PATH_KEY not in message


def test_build_adapter_turns_the_refusal_into_a_startup_error() -> None:
    from indexer.app import StartupError, build_adapter
    from indexer.config import ChainSettings

    cfg = ChainSettings(enabled=True, rpc_urls=["wss://bsc.example/ws?apikey=" + QUERY_KEY], chain_id=56)
    with pytest.raises(
        StartupError, match=r"CITADEL_BSC__RPC_URLS: .*needs at least one http\(s\) URL"
    ) as err:
        build_adapter(Chain.BSC, cfg)
    assert QUERY_KEY not in str(err.value)


async def test_daemon_refuses_only_ws_urls_before_touching_the_database() -> None:
    from indexer.app import Daemon, StartupError
    from indexer.config import load_settings

    settings = load_settings(
        environ={
            "CITADEL_DATABASE_URL": f"postgresql://citadel@127.0.0.1:{free_port()}/citadel",
            "CITADEL_BSC__ENABLED": "true",
            "CITADEL_BSC__RPC_URLS": f'["wss://bsc.example/v3/{PATH_KEY}"]',
        }
    )
    with pytest.raises(StartupError, match=r"^CITADEL_BSC__RPC_URLS: ") as err:
        await Daemon(settings).run(asyncio.Event())
    assert PATH_KEY not in str(err.value)


# ---------------------------------------------------------------------------------------------------- failover


async def test_dead_first_ws_url_fails_over_to_the_second(node: Anvil) -> None:
    obs = Recorder()
    dead = f"ws://127.0.0.1:{free_port()}"
    heads = NewHeadsSubscription([dead, ws_url(node)], chain="bsc", observer=obs)
    try:
        heads.start()
        await until(lambda: heads.connected)
        number = await mine(node)
        assert await heads.wait(10) is True
        assert heads.latest_number == number
    finally:
        await heads.aclose()
    assert obs.subscribes("connection_error") == [redact_url(dead)]
    assert obs.subscribes("ok") == [redact_url(ws_url(node))]


async def test_dropped_subscription_reconnects(node: Anvil, proxy: WsProxy) -> None:
    obs = Recorder()
    heads = NewHeadsSubscription([proxy.url()], chain="bsc", observer=obs, backoff_base_s=0.05)
    try:
        heads.start()
        await until(lambda: heads.connected)
        first = await mine(node)
        assert await heads.wait(10) is True and heads.latest_number == first

        await proxy.cut()  # the server drops the connection
        await until(lambda: proxy.connections == 2 and heads.connected)
        second = await mine(node)
        assert await heads.wait(10) is True and heads.latest_number == second
    finally:
        await heads.aclose()
    assert obs.subscribes("ok") == [redact_url(proxy.url())] * 2
    assert obs.subscribes("connection_error") == [redact_url(proxy.url())]


async def test_all_urls_down_backs_off_and_recovers(node: Anvil) -> None:
    """Every URL refused: the subscription keeps retrying (never raising), and connects once one comes up."""
    obs = Recorder()
    relay = WsProxy(ws_url(node))
    heads = NewHeadsSubscription(
        [relay.url()], chain="bsc", observer=obs, backoff_base_s=0.05, backoff_max_s=0.2
    )
    try:
        assert await heads.wait(0.5) is False
        assert len(obs.subscribes("connection_error")) >= 2
        await relay.start()
        await until(lambda: heads.connected)
        number = await mine(node)
        assert await heads.wait(10) is True and heads.latest_number == number
    finally:
        await heads.aclose()
        await relay.stop()


async def test_malformed_notifications_are_ignored(node: Anvil, proxy: WsProxy) -> None:
    obs = Recorder()
    heads = NewHeadsSubscription([proxy.url()], chain="bsc", observer=obs)
    try:
        heads.start()
        await until(lambda: heads.connected)
        for bad in (
            "not json",
            "[1, 2]",
            '{"jsonrpc": "2.0", "method": "eth_subscription", "params": 7}',
            '{"jsonrpc": "2.0", "method": "eth_subscription", "params": {"subscription": "%s", "result": {}}}',
        ):
            await proxy.inject(bad)
        await until(lambda: len(obs.skipped) == 3)  # the last one names another subscription: not counted
        assert await heads.wait(0.1) is False and heads.latest_number is None
        assert heads.connected
        number = await mine(node)
        assert await heads.wait(10) is True and heads.latest_number == number
    finally:
        await heads.aclose()
    assert obs.skipped == ["malformed_head"] * 3
    assert obs.where == [f"new head via {redact_url(proxy.url())}"] * 3


async def test_malformed_head_of_our_subscription_is_counted(node: Anvil, proxy: WsProxy) -> None:
    obs = Recorder()
    heads = NewHeadsSubscription([proxy.url()], chain="bsc", observer=obs)
    try:
        heads.start()
        await until(lambda: heads.connected)
        number = await mine(node)
        assert await heads.wait(10) is True
        sub_id = heads.subscription_id
        await proxy.inject(
            '{"jsonrpc": "2.0", "method": "eth_subscription", '
            f'"params": {{"subscription": "{sub_id}", "result": {{"number": "0xzz"}}}}}}'
        )
        await until(lambda: obs.skipped == ["malformed_head"])
        assert await heads.wait(0.1) is False and heads.latest_number == number
    finally:
        await heads.aclose()


# ---------------------------------------------------------------------------------------------------- secrets


async def test_api_keys_never_reach_logs_or_labels(
    node: Anvil, proxy: WsProxy, caplog: pytest.LogCaptureFixture
) -> None:
    obs = Recorder()
    dead = f"ws://127.0.0.1:{free_port()}/v3/{PATH_KEY}?apikey={QUERY_KEY}"
    refused = proxy.url(f"/v3/{PATH_KEY}?refuse=1&apikey={QUERY_KEY}")
    good = proxy.url(f"/v3/{PATH_KEY}?apikey={QUERY_KEY}")
    caplog.set_level(logging.DEBUG)
    async with EvmAdapter(Chain.BSC, [dead, refused, good, node.url], 56, observer=obs) as adapter:
        assert adapter.heads is not None
        adapter.heads.start()
        await until(lambda: adapter.heads is not None and adapter.heads.connected)
        await proxy.cut()
        await until(lambda: proxy.connections == 2 and adapter.heads is not None and adapter.heads.connected)
    # dead, refused, good; the cut (before any head) counts against good; the next round starts again at dead
    assert obs.subscribes("connection_error") == [redact_url(dead), redact_url(good), redact_url(dead)]
    assert obs.subscribes("http_error") == [redact_url(refused)] * 2
    assert obs.subscribes("ok") == [redact_url(good)] * 2
    assert len(caplog.records) >= 3
    for record in caplog.records:
        text = record.getMessage() + repr(record.__dict__)
        assert PATH_KEY not in text and QUERY_KEY not in text, text
    for endpoint, _method, _outcome in obs.requests:
        assert PATH_KEY not in endpoint and QUERY_KEY not in endpoint
