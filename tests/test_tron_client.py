"""TronHttpClient and TronAdapter behind bad endpoints, in front of the Tron simulator over real HTTP: every endpoint
fault (HTTP errors with HTML pages, unknown ``Error`` bodies, oversized, truncated or invalid bodies, answers the
validation rejects) fails over and cools the endpoint down; nothing is fatal but the adapter's own checks; a failed
constant call is an answer, not retried; no secret (URL parts, the API key header) reaches a message or a log."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from chains.base import (
    CallReverted,
    ChainError,
    FatalChainError,
    MalformedResponse,
    RetryableChainError,
)
from chains.redact import redact_url
from chains.tron.adapter import TronAdapter, TronCallFailed
from chains.tron.client import TronHttpClient, TronNodeError
from citadel_devtools.tron_simulator import TronSimulator
from tests.support.badendpoints import (
    Answer,
    BadEndpoint,
    Seen,
    html,
    invalid_json,
    json_answer,
    oversized,
    truncated,
)

FAST: dict[str, Any] = {"backoff_base_s": 0.005, "backoff_cap_s": 0.02, "cooldown_s": 60.0}
CAP = 256 * 1024
API_KEY = "0f1e2d3c-secret-api-key-4b5a6978"


@dataclass
class Recorder:
    requests: list[tuple[str, str, str]] = field(default_factory=list)  # (endpoint, path, outcome)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    endpoints: list[tuple[str, str, bool]] = field(default_factory=list)

    def rpc_request(self, chain: str, endpoint: str, method: str, duration_s: float, outcome: str) -> None:
        self.requests.append((endpoint, method, outcome))

    def skipped_item(self, chain: str, reason: str, where: str = "") -> None:
        self.skipped.append((reason, where))

    def endpoint_up(self, chain: str, endpoint: str, up: bool) -> None:
        self.endpoints.append((chain, endpoint, up))

    def outcomes_of(self, url: str) -> list[str]:
        return [o for e, _, o in self.requests if e == redact_url(url)]


def sim_calls(sim: TronSimulator, path: str) -> int:
    return sum(1 for r in sim.requests if r.path == path)


BAD_ANSWERS: dict[str, tuple[Answer, str]] = {
    "403 html (banned key)": (html(403, "Forbidden"), "http_error"),
    "401 json (TronGrid, unknown key)": (
        json_answer({"Success": False, "Error": "ApiKey not exists", "StatusCode": 401}, 401), "http_error"
    ),
    "404 html (API disabled)": (html(404, "Not Found"), "http_error"),
    "500 html": (html(500, "Internal Server Error"), "http_error"),
    "unknown Error body": (json_answer({"Error": "class java.lang.NullPointerException : null"}), "rpc_error"),
    "oversized, announced": (oversized(4 * CAP, announce_length=True), "oversized"),
    "oversized, chunked": (oversized(4 * CAP, announce_length=False), "oversized"),
    "truncated": (truncated(b'{"blockID":"0000', 2048), "malformed"),
    "invalid json": (invalid_json(), "malformed"),
}


@pytest.mark.parametrize("kind", list(BAD_ANSWERS))
async def test_a_bad_first_endpoint_is_cooled_down_and_the_next_one_answers(
    tron_sim: TronSimulator, kind: str
) -> None:
    answer, outcome = BAD_ANSWERS[kind]
    obs = Recorder()
    async with BadEndpoint(answer) as bad:
        client = TronHttpClient([bad.url, tron_sim.url], observer=obs, max_response_bytes=CAP, **FAST)
        try:
            block = await client.call("/wallet/getnowblock")
            again = await client.call("/wallet/getnowblock")  # still cooling: straight to the simulator
        finally:
            await client.aclose()
        assert len(bad.requests) == 1
    assert block["blockID"] == again["blockID"] == tron_sim.block(tron_sim.head_number).block_id
    assert obs.outcomes_of(bad.url) == [outcome]
    assert obs.endpoints == [("tron", redact_url(bad.url), False)]


async def test_every_endpoint_bad_is_retryable_never_fatal() -> None:
    obs = Recorder()
    async with (
        BadEndpoint(html(403)) as banned,
        BadEndpoint(json_answer({"Error": "class java.lang.IllegalStateException : odd"})) as odd,
    ):
        client = TronHttpClient([banned.url, odd.url], observer=obs, max_retries=4, **FAST)
        try:
            with pytest.raises(RetryableChainError) as caught:
                await client.call("/wallet/getnowblock")
        finally:
            await client.aclose()
        assert len(banned.requests) + len(odd.requests) == 5
    assert not isinstance(caught.value, FatalChainError)
    assert [up for *_, up in obs.endpoints] == [False, False]


async def test_an_unknown_error_body_is_retried_and_ends_retryable(tron_sim: TronSimulator) -> None:
    client = TronHttpClient([tron_sim.url], max_retries=3, **FAST)
    try:
        with pytest.raises(TronNodeError, match="NumberFormatException") as caught:
            await client.call("/wallet/getblockbynum", {"num": "abc"})
    finally:
        await client.aclose()
    assert isinstance(caught.value, RetryableChainError)
    assert sim_calls(tron_sim, "/wallet/getblockbynum") == 4  # every attempt


def _plausible_block(block: Any) -> None:
    number = block.get("block_header", {}).get("raw_data", {}).get("number", 0)
    if not isinstance(number, int) or number >= 2**40:
        raise MalformedResponse(f"block number {number} out of range")


async def test_an_answer_the_validation_rejects_fails_over(tron_sim: TronSimulator) -> None:
    obs = Recorder()
    absurd = {"blockID": "ff" * 32, "block_header": {"raw_data": {"number": 2**70, "parentHash": "00" * 32}}}
    async with BadEndpoint(json_answer(absurd)) as liar:
        client = TronHttpClient([liar.url, tron_sim.url], observer=obs, **FAST)
        try:
            assert (await client.call("/wallet/getnowblock"))["blockID"] == "ff" * 32  # taken as it is
            got = await client.call("/wallet/getnowblock", validate=_plausible_block)
        finally:
            await client.aclose()
    assert got["blockID"] == tron_sim.block(tron_sim.head_number).block_id
    assert obs.outcomes_of(liar.url) == ["ok", "malformed"]
    assert obs.endpoints == [("tron", redact_url(liar.url), False)]


async def test_a_validation_that_always_rejects_ends_in_malformed_response(tron_sim: TronSimulator) -> None:
    def never(value: Any) -> None:
        raise MalformedResponse("rejected")

    client = TronHttpClient([tron_sim.url], max_retries=2, **FAST)
    try:
        with pytest.raises(MalformedResponse, match="rejected"):
            await client.call("/wallet/getnowblock", validate=never)
    finally:
        await client.aclose()
    assert sim_calls(tron_sim, "/wallet/getnowblock") == 3


async def test_check_chain_id_succeeds_with_a_banned_key_first(tron_sim: TronSimulator) -> None:
    obs = Recorder()
    genesis = tron_sim.block(0).block_id
    async with BadEndpoint(html(403, echo_url=True)) as bad:
        adapter = TronAdapter([bad.url, tron_sim.url], observer=obs, chain_id=genesis, **FAST)
        try:
            await adapter.check_chain_id()
        finally:
            await adapter.aclose()
    assert obs.endpoints == [("tron", redact_url(bad.url), False)]


async def test_a_failed_constant_call_is_an_answer_not_a_fault(tron_sim: TronSimulator) -> None:
    obs = Recorder()
    alice, not_a_token = tron_sim.new_address(), tron_sim.new_address()
    usdt = tron_sim.deploy_trc20("USDT", 6)
    tron_sim.mint(usdt, alice, 500)
    tron_sim.produce_block()
    adapter = TronAdapter([tron_sim.url, tron_sim.url + "/"], observer=obs, **FAST)
    try:
        with pytest.raises(TronCallFailed) as reverted:
            await adapter._constant_call(not_a_token, "decimals()")
        assert sim_calls(tron_sim, "/wallet/triggerconstantcontract") == 1  # not retried, not failed over
        with pytest.raises(FatalChainError, match="not a TRC20 contract"):
            await adapter.token_info(not_a_token)  # a configured token that is none: the adapter's own check
        balances = await adapter.balances([alice], [usdt, not_a_token])
    finally:
        await adapter.aclose()
    assert isinstance(reverted.value, CallReverted) and not isinstance(reverted.value, RetryableChainError)
    assert balances[(alice, usdt)] == 500 and (alice, not_a_token) not in balances
    assert [reason for reason, _ in obs.skipped] == ["balance_unavailable"]
    assert obs.endpoints == []


async def test_an_error_page_echoing_the_url_and_key_leaks_nothing(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)

    async def echo_everything(endpoint: BadEndpoint, seen: Seen, request: web.Request) -> web.StreamResponse:
        page = (
            f"<html><body><h1>403 Forbidden</h1><p>{endpoint.url}{seen.path_qs}</p>"
            f"<p>key: {seen.headers.get('TRON-PRO-API-KEY')}</p></body></html>"
        )
        return web.Response(status=403, text=page, content_type="text/html")

    obs = Recorder()
    async with BadEndpoint(echo_everything) as bad:
        url = bad.url_with("/QUERYPATHSECRET99/?apikey=QUERYSECRET123")
        client = TronHttpClient([url], api_key=API_KEY, observer=obs, max_retries=1, **FAST)
        try:
            with pytest.raises(ChainError) as caught:
                await client.call("/wallet/getnowblock")
        finally:
            await client.aclose()
        assert all(r.headers.get("TRON-PRO-API-KEY") == API_KEY for r in bad.requests)  # sent, and echoed
    texts = [str(caught.value), repr(caught.value)] + [r.getMessage() + str(vars(r)) for r in caplog.records]
    texts += [e for e, _, _ in obs.requests] + [e for _, e, _ in obs.endpoints]
    for text in texts:
        assert API_KEY not in text and "QUERYSECRET123" not in text and "QUERYPATHSECRET99" not in text, text
    assert "HTTP 403" in str(caught.value) and "Forbidden" in str(caught.value)
