"""The shared transport (chains.transport) and secret scrubbing (chains.redact), below the protocol clients: how HTTP
answers are sorted, how the pool picks, waits, cools down and reports endpoints, how a request is retried, and how
a body over the size cap is refused without being read. The clients' end-to-end failover is tested against real
nodes in tests/test_evm_rpc.py and tests/test_tron_client.py."""

from __future__ import annotations

import asyncio
import email.utils
import time
from typing import Any

import pytest

from chains.base import (
    CallReverted,
    ChainError,
    FatalChainError,
    MalformedResponse,
    RateLimited,
    RetryableChainError,
)
from chains.redact import redact_url, secrets_of, shown_body
from chains.transport import (
    Endpoint,
    EndpointPool,
    HttpReply,
    HttpStatusError,
    HttpTransport,
    RequestRefused,
    ResponseTooLarge,
    RetryPolicy,
    TransientHttpStatus,
    http_fault,
    retry_after_s,
)
from tests.support.badendpoints import BadEndpoint, json_answer, oversized

KEY = "Zk3vQ9pLmN4rT7wX2yB5"


class Recorder:
    def __init__(self) -> None:
        self.requests: list[tuple[str, str, str]] = []
        self.endpoints: list[tuple[str, bool]] = []

    def rpc_request(self, chain: str, endpoint: str, method: str, duration_s: float, outcome: str) -> None:
        self.requests.append((endpoint, method, outcome))

    def skipped_item(self, chain: str, reason: str, where: str = "") -> None:
        raise AssertionError("the transport skips nothing")

    def endpoint_up(self, chain: str, endpoint: str, up: bool) -> None:
        self.endpoints.append((endpoint, up))


def pool(n: int = 2, obs: Recorder | None = None, **policy: Any) -> EndpointPool:
    urls = [f"http://10.0.0.{i}:8545/v3/{KEY}" for i in range(1, n + 1)]
    opts: dict[str, Any] = {"cooldown_s": 60.0, "backoff_base_s": 0.01, "backoff_max_s": 0.02}
    opts.update(policy)
    return EndpointPool(urls, chain="bsc", observer=obs, policy=RetryPolicy(**opts))


# ---------------------------------------------------------------------------------------------------- secrets


def test_secrets_of_covers_every_form_a_key_takes_in_a_url() -> None:
    url = f"https://user:{KEY}@rpc.example:8443/v2/{KEY}%21?apikey={KEY}&x=1"
    found = secrets_of(url)
    for form in (url, KEY, f"/v2/{KEY}%21", f"/v2/{KEY}!", f"{KEY}!", f"apikey={KEY}&x=1"):
        assert form in found, form
    assert secrets_of("http://127.0.0.1:8545") == secrets_of("http://127.0.0.1:8545/") == []


def test_shown_body_reads_an_error_page_as_text_without_its_secrets() -> None:
    url = f"https://rpc.example/v3/{KEY}"
    page = (
        "<html><head><title>403 Forbidden</title><style>h1 {color: red}</style></head><body><h1>403 Forbidden</h1>"
        f"<p>Key {KEY.upper()} is banned.</p><p>URL: {url}</p><a href='/v3/{KEY.replace('Q', '%51')}'>x</a>"
        f"<p>{KEY[:10]}&#{ord(KEY[10])};{KEY[11:]}</p><script>var k = '{KEY}';</script></body></html>"
    )
    shown = shown_body(page.encode(), secrets_of(url))
    assert shown.startswith("403 Forbidden 403 Forbidden Key <redacted> is banned. URL: https://rpc.example/…#")
    assert KEY.lower() not in shown.lower() and "color" not in shown and "var k" not in shown
    assert len(shown_body(b"x" * 1000, [], limit=50)) == 50


def test_shown_body_never_shows_part_of_a_secret_cut_by_its_window() -> None:
    body = b" " * (64 * 1024 - 6) + KEY.encode() + b" and more"
    shown = shown_body(body, [KEY])
    assert KEY[:4] not in shown


def test_redacted_labels_tell_endpoints_apart_without_showing_keys() -> None:
    a, b = redact_url(f"https://h.example/v3/{KEY}"), redact_url("https://h.example/v3/other-key-123")
    assert a != b and KEY not in a and a.startswith("https://h.example/…#")


# ---------------------------------------------------------------------------------------------------- HTTP answers


@pytest.mark.parametrize(
    ("header", "expected"),
    [("5", 5.0), (" 2.5 ", 2.5), ("-3", 0.0), ("nan", None), ("", None), (None, None), ("soon", None)],
)
def test_retry_after_values(header: str | None, expected: float | None) -> None:
    assert retry_after_s(header) == expected


def test_retry_after_as_an_http_date() -> None:
    value = retry_after_s(email.utils.formatdate(time.time() + 120, usegmt=True))
    assert value is not None and 100 < value <= 120


@pytest.mark.parametrize(
    ("status", "body", "retry_after", "kind"),
    [
        (403, b"<html><h1>403 Forbidden</h1></html>", None, HttpStatusError),
        (401, b'{"Success":false,"Error":"ApiKey not exists","StatusCode":401}', None, HttpStatusError),
        (404, b"<html>404 Not Found</html>", None, HttpStatusError),
        (400, b"", None, HttpStatusError),
        (429, b"Too Many Requests", 3.0, RateLimited),
        (403, b'{"Error":"The key exceeds the frequency limit(30), and the query server is suspended"}', None,
         RateLimited),
        (503, b"<html>503 Service Temporarily Unavailable</html>", 7.0, RateLimited),
        (503, b"<html>503 Service Temporarily Unavailable</html>", None, TransientHttpStatus),
        (500, b"Internal Server Error", None, TransientHttpStatus),
        (408, b"", None, TransientHttpStatus),
    ],
)
def test_every_http_error_status_is_a_retryable_endpoint_fault(
    status: int, body: bytes, retry_after: float | None, kind: type[ChainError]
) -> None:
    fault = http_fault(HttpReply(status, body, retry_after), "m via x", [])
    assert type(fault) is kind
    assert isinstance(fault, RetryableChainError) and not isinstance(fault, FatalChainError)
    assert f"HTTP {status}" in str(fault)
    if isinstance(fault, RateLimited):
        assert fault.retry_after_s == retry_after


def test_a_2xx_reply_is_no_fault() -> None:
    assert http_fault(HttpReply(200, b"<html>", None), "m via x", []) is None


# ---------------------------------------------------------------------------------------------------- the pool


def test_pick_prefers_configured_order_and_then_the_cooldown_ending_first() -> None:
    p = pool(3)
    a, b, c = p.endpoints
    assert p.pick() is a
    p.failed(a, TransientHttpStatus("x", 500), "m", 1)
    assert p.pick() is b and p.wait_s(1) == 0.0
    p.failed(c, TransientHttpStatus("x", 500), "m", 1)
    p.failed(b, TransientHttpStatus("x", 500), "m", 1)
    assert p.pick() is a  # all cooling: a's cooldown ends first
    assert p.pick(excluded={a.index}) is c


def test_retry_after_is_honoured_when_every_endpoint_is_cooling_down() -> None:
    p = pool(2, backoff_base_s=0.01, backoff_max_s=0.02)
    a, b = p.endpoints
    p.failed(a, RateLimited("x", retry_after_s=30), "m", 1)
    assert p.pick() is b and p.wait_s(1) == 0.0  # another endpoint is free: fail over at once
    p.failed(b, RateLimited("x", retry_after_s=3), "m", 1)
    assert p.pick() is b  # a asked for 30 s, b for 3 s
    assert 2.5 < p.wait_s(1) <= 3.0  # the backoff (at most 0.02 s) is stretched to b's Retry-After
    p.failed(b, TransientHttpStatus("x", 500), "m", 1)  # a fault without one does not cancel it
    assert 2.5 < p.wait_s(1) <= 3.0
    fresh = pool(1, backoff_base_s=0.01, backoff_max_s=0.02)
    fresh.failed(fresh.endpoints[0], TransientHttpStatus("x", 500), "m", 1)
    assert 0.005 <= fresh.wait_s(1) <= 0.01 and 0.01 <= fresh.wait_s(2) <= 0.02  # the jittered backoff alone


def test_a_long_retry_after_is_capped() -> None:
    p = pool(1, max_retry_after_s=5.0)
    p.failed(p.endpoints[0], RateLimited("x", retry_after_s=3600), "m", 1)
    assert p.wait_s(1) <= 5.0


async def test_run_fails_over_reports_down_once_and_up_again() -> None:
    obs = Recorder()
    p = pool(2, obs)
    a, b = p.endpoints
    answers = {a.index: [HttpStatusError("a: 403", 403), HttpStatusError("a: 403", 403), "a"], b.index: ["b"] * 3}

    async def attempt(endpoint: Endpoint) -> str:
        answer = answers[endpoint.index].pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert await p.run(attempt, what="m") == "b"
    assert await p.run(attempt, what="m") == "b"  # a is cooling down
    a.cooldown_until = 0.0  # its cooldown is over
    with pytest.raises(HttpStatusError):
        await p.run(attempt, what="m", max_attempts=1)  # fails again: no second "down" report
    a.cooldown_until = 0.0
    assert await p.run(attempt, what="m") == "a"
    assert obs.endpoints == [(a.label, False), (a.label, True)]


async def test_an_answer_to_a_request_sent_before_a_fault_does_not_mark_the_endpoint_up() -> None:
    obs = Recorder()
    p = pool(1, obs)
    release = asyncio.Event()

    async def slow_ok(endpoint: Endpoint) -> str:
        await release.wait()
        return "ok"

    async def failing(endpoint: Endpoint) -> str:
        raise TransientHttpStatus("x", 502)

    early = asyncio.create_task(p.run(slow_ok, what="m"))
    await asyncio.sleep(0)  # the slow request is on its way
    with pytest.raises(TransientHttpStatus):
        await p.run(failing, what="m", max_attempts=1)
    release.set()
    assert await early == "ok"
    assert obs.endpoints == [(p.endpoints[0].label, False)]  # the early answer is older news than the fault
    assert await p.run(slow_ok, what="m") == "ok"
    assert obs.endpoints[-1] == (p.endpoints[0].label, True)


async def test_a_refused_request_asks_each_endpoint_once_without_cooldown_or_wait() -> None:
    obs = Recorder()
    p = pool(3, obs, backoff_base_s=1000.0, backoff_max_s=1000.0)  # any wait would hang the test
    asked: list[int] = []

    async def refusing(endpoint: Endpoint) -> str:
        asked.append(endpoint.index)
        raise RequestRefused(f"{endpoint.label}: method not found")

    with pytest.raises(RequestRefused):
        await asyncio.wait_for(p.run(refusing, what="m", max_attempts=10), 30)
    assert asked == [0, 1, 2]
    assert obs.endpoints == [] and all(e.cooldown_until == 0.0 for e in p.endpoints)


async def test_a_revert_ends_the_request_at_once() -> None:
    obs = Recorder()
    p = pool(2, obs)
    asked: list[int] = []

    async def reverting(endpoint: Endpoint) -> str:
        asked.append(endpoint.index)
        raise CallReverted("execution reverted")

    with pytest.raises(CallReverted):
        await p.run(reverting, what="eth_call")
    assert asked == [0] and obs.endpoints == []


async def test_cancellation_propagates_and_cools_nothing_down() -> None:
    obs = Recorder()
    p = pool(1, obs)

    async def hanging(endpoint: Endpoint) -> str:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    task = asyncio.create_task(p.run(hanging, what="m"))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert obs.endpoints == [] and p.endpoints[0].cooldown_until == 0.0


# ---------------------------------------------------------------------------------------------------- the size cap


async def _fetch(transport: HttpTransport, url: str) -> bytes:
    endpoint = transport.pool.endpoints[0]
    raw: bytes = await transport.exchange(endpoint, url, b"{}", "m", lambda reply: (reply.raw, "ok"))
    return raw


@pytest.mark.parametrize("announce_length", [True, False])
async def test_a_body_over_the_cap_is_refused_without_being_read(announce_length: bool) -> None:
    obs = Recorder()
    cap = 1 << 20
    async with (
        BadEndpoint(oversized(1 << 30, announce_length=announce_length)) as huge,
        BadEndpoint(json_answer({"fine": True})) as fine,
    ):
        transport = HttpTransport(EndpointPool([huge.url], chain="bsc", observer=obs), max_response_bytes=cap,
                                  connections=1)
        try:
            with pytest.raises(ResponseTooLarge) as info:
                await _fetch(transport, huge.url)
            assert await _fetch(transport, fine.url) == b'{"fine": true}'  # the one connection was released
        finally:
            await transport.aclose()
        assert huge.bytes_sent < 64 * cap  # a 1 GiB body, abandoned after about the cap and the socket buffers
    assert isinstance(info.value, MalformedResponse)
    assert ("bytes announced, over the 1048576-byte limit" in str(info.value)) is announce_length
    assert obs.requests[0][2] == "oversized"


async def test_the_cap_leaves_bodies_under_it_alone() -> None:
    async with BadEndpoint(oversized(200_000, announce_length=False)) as big:
        transport = HttpTransport(EndpointPool([big.url], chain="bsc"), max_response_bytes=300_000)
        try:
            raw = await _fetch(transport, big.url)
        finally:
            await transport.aclose()
    assert raw.startswith(b'{"jsonrpc"') and raw.endswith(b'"}') and len(raw) > 200_000
