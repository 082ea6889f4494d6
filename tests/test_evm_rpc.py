"""JsonRpcClient against plain anvil, through the fault proxy and behind bad endpoints: batches, per-entry errors,
retries, Retry-After, failover and cool-down for every endpoint fault (HTTP errors with HTML pages, unknown node
errors, oversized, truncated or invalid bodies, answers the validation rejects), reverts and refused methods as
answers, batch fallback, and no secret in messages, log records or metric labels."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from chains.base import (
    BlockNotAvailable,
    CallReverted,
    Chain,
    ChainError,
    FatalChainError,
    MalformedResponse,
    RangeTooLarge,
    RateLimited,
    RetryableChainError,
)
from chains.evm.adapter import EvmAdapter
from chains.evm.logs import TRANSFER_TOPIC, LogRangeTooLarge
from chains.evm.rpc import BatchesRefused, JsonRpcClient, RpcError, TransientRpcError, classify_rpc_error
from chains.redact import redact_url
from citadel_devtools.anvil import Anvil
from tests.fixtures.anvil import AnvilFactory
from tests.support import evm
from tests.support.badendpoints import (
    Answer,
    BadEndpoint,
    forward,
    html,
    invalid_json,
    json_answer,
    oversized,
    rpc_error,
    rpc_result,
    truncated,
)
from tests.support.faultproxy import FaultProxy, Faults

API_KEY = "sk9f3b2c1d0e8a7f6e5d4c3b2a19"
REVERTING_CALL = {"data": "0x60006000fd"}  # init code PUSH1 0 PUSH1 0 REVERT, run by eth_call without "to"
CAP = 256 * 1024


class RecordingObserver:
    def __init__(self) -> None:
        self.requests: list[tuple[str, str, str, float, str]] = []
        self.skipped: list[tuple[str, str]] = []
        self.endpoints: list[tuple[str, str, bool]] = []

    def rpc_request(self, chain: str, endpoint: str, method: str, duration_s: float, outcome: str) -> None:
        self.requests.append((chain, endpoint, method, duration_s, outcome))

    def skipped_item(self, chain: str, reason: str, where: str = "") -> None:
        self.skipped.append((chain, reason))

    def endpoint_up(self, chain: str, endpoint: str, up: bool) -> None:
        self.endpoints.append((chain, endpoint, up))

    def outcomes(self) -> list[str]:
        return [r[4] for r in self.requests]

    def outcomes_of(self, url: str) -> list[str]:
        return [r[4] for r in self.requests if r[1] == redact_url(url)]


def fast_client(urls: list[str], observer: RecordingObserver | None = None, **kw: object) -> JsonRpcClient:
    opts: dict[str, object] = {"timeout_s": 0.5, "max_attempts": 6, "cooldown_s": 0.2, "backoff_base_s": 0.01}
    opts.update(kw)
    return JsonRpcClient(urls, chain="bsc", observer=observer, **opts)  # type: ignore[arg-type]


async def test_call_and_chunked_batch_against_anvil(anvil_bsc: Anvil) -> None:
    obs = RecordingObserver()
    async with fast_client([anvil_bsc.url], obs, max_batch=100) as client:
        assert int(await client.call("eth_chainId", []), 16) == 56
        results = await client.batch([("eth_chainId", [])] * 250)
    assert results == ["0x38"] * 250
    batches = [r for r in obs.requests if r[2] == "batch:eth_chainId"]
    assert len(batches) == 3  # 100 + 100 + 50
    assert set(obs.outcomes()) == {"ok"}


async def test_one_failed_batch_entry_fails_only_that_entry(anvil_bsc: Anvil) -> None:
    async with fast_client([anvil_bsc.url]) as client:
        calls: list[tuple[str, list[object]]] = [
            ("eth_chainId", []),
            ("eth_noSuchMethod", []),
            ("eth_chainId", []),
        ]
        results = await client.batch(calls, return_errors=True)
        assert results[0] == results[2] == "0x38"
        assert isinstance(results[1], RpcError)
        with pytest.raises(RpcError):
            await client.batch(calls)


async def test_a_refused_method_is_asked_once_and_is_retryable(anvil_bsc: Anvil) -> None:
    obs = RecordingObserver()
    async with fast_client([anvil_bsc.url], obs) as client:
        with pytest.raises(RpcError) as info:
            await client.call("eth_noSuchMethod", [])
    assert info.value.code == -32601
    assert isinstance(info.value, RetryableChainError) and not isinstance(info.value, FatalChainError)
    assert len(obs.requests) == 1  # the only endpoint refused it: no retry, no backoff
    assert obs.endpoints == []  # an endpoint refusing a request is not faulty


async def test_transient_faults_are_retried_until_success(anvil_bsc: Anvil) -> None:
    faults = Faults(seed=3, server_error=0.3, rate_limit=0.2, truncate=0.2)
    async with (
        FaultProxy(anvil_bsc.url, faults) as proxy,
        fast_client([proxy.url], max_attempts=10) as client,
    ):
        for _ in range(20):
            assert await client.call("eth_chainId", []) == "0x38"
        assert await client.batch([("eth_chainId", [])] * 30) == ["0x38"] * 30
    assert proxy.injected["server_error"] and proxy.injected["rate_limit"] and proxy.injected["truncate"]


async def test_retry_after_is_read(anvil_bsc: Anvil) -> None:
    """The wait it implies is :meth:`EndpointPool.wait_s`'s (tests/test_transport.py)."""
    obs = RecordingObserver()
    faults = Faults(rate_limit=1.0, retry_after="1")
    async with (
        FaultProxy(anvil_bsc.url, faults) as proxy,
        fast_client([proxy.url], obs, max_attempts=2) as client,
    ):
        with pytest.raises(RateLimited) as info:
            await client.call("eth_chainId", [])
    assert info.value.retry_after_s == 1.0
    assert obs.outcomes() == ["rate_limited", "rate_limited"]


async def test_hanging_endpoint_times_out_as_retryable(anvil_bsc: Anvil) -> None:
    obs = RecordingObserver()
    faults = Faults(timeout=1.0, hang_s=3)
    async with FaultProxy(anvil_bsc.url, faults) as proxy:
        async with fast_client([proxy.url], obs, timeout_s=0.2, max_attempts=2) as client:
            with pytest.raises(RetryableChainError, match="no answer within 0.2 s"):
                await client.call("eth_chainId", [])
    assert obs.outcomes() == ["timeout", "timeout"]


async def test_truncated_json_is_malformed(anvil_bsc: Anvil) -> None:
    async with FaultProxy(anvil_bsc.url, Faults(truncate=1.0)) as proxy:
        async with fast_client([proxy.url], max_attempts=2) as client:
            with pytest.raises(MalformedResponse, match="invalid JSON"):
                await client.call("eth_chainId", [])


async def test_failover_to_the_next_endpoint_and_back_after_cooldown(anvil_bsc: Anvil) -> None:
    obs = RecordingObserver()
    async with FaultProxy(anvil_bsc.url) as first, FaultProxy(anvil_bsc.url) as second:
        await first.down()
        async with fast_client([first.url, second.url], obs, cooldown_s=0.3) as client:
            assert await client.call("eth_chainId", []) == "0x38"
            assert await client.call("eth_chainId", []) == "0x38"  # still cooling: straight to the second
            assert second.requests == 2
            assert obs.outcomes() == ["connection_error", "ok", "ok"]
            await first.up()
            await asyncio.sleep(0.35)
            assert await client.call("eth_chainId", []) == "0x38"
            assert first.requests == 1  # back to the preferred endpoint


async def test_endpoint_refusing_batches_gets_single_calls(anvil_bsc: Anvil) -> None:
    async with FaultProxy(anvil_bsc.url, Faults(reject_batches=True)) as proxy:
        async with fast_client([proxy.url]) as client:
            assert await client.batch([("eth_chainId", [])] * 5) == ["0x38"] * 5
            assert await client.batch([("eth_chainId", [])] * 5) == ["0x38"] * 5
    assert proxy.injected["batch_rejected"] == 1  # remembered per endpoint


async def test_range_errors_are_not_retried_by_the_client(anvil_bsc: Anvil) -> None:
    obs = RecordingObserver()
    async with FaultProxy(anvil_bsc.url, Faults(max_log_blocks=10)) as proxy:
        async with fast_client([proxy.url], obs) as client:
            with pytest.raises(LogRangeTooLarge) as info:
                await client.call("eth_getLogs", [{"fromBlock": "0x0", "toBlock": "0x63"}])
    assert info.value.max_blocks == 10
    assert obs.outcomes() == ["range_too_large"]


async def test_api_key_never_appears_in_messages_logs_or_labels(
    anvil_bsc: Anvil, caplog: pytest.LogCaptureFixture
) -> None:
    obs = RecordingObserver()
    caplog.set_level(logging.DEBUG)
    async with FaultProxy(anvil_bsc.url) as proxy:
        down_url = proxy.url_with(f"/v3/{API_KEY}?apikey={API_KEY}")
        await proxy.down()
        async with fast_client([down_url], obs, max_attempts=2) as client:
            with pytest.raises(RetryableChainError) as info:
                await client.call("eth_chainId", [])
        messages = [str(info.value)]
        cause = info.value.__cause__
        assert cause is not None  # translated at the edge, with the original kept as the cause
    await_text = " ".join(messages + [r.getMessage() for r in caplog.records])
    await_text += " ".join(str(vars(r)) for r in caplog.records)
    assert API_KEY not in await_text
    assert all(API_KEY not in r[1] for r in obs.requests)
    assert "127.0.0.1" in messages[0]  # still says which endpoint


async def test_client_is_closed_once_and_refuses_use_after_close(anvil_bsc: Anvil) -> None:
    client = fast_client([anvil_bsc.url])
    await client.call("eth_chainId", [])
    await client.aclose()
    await client.aclose()
    with pytest.raises(RuntimeError):
        await client.call("eth_chainId", [])


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        ({"code": 429, "message": "Too Many Requests"}, RateLimited),
        ({"code": -32005, "message": "daily request count exceeded, request rate limited"}, RateLimited),
        ({"code": -32000, "message": "header not found"}, TransientRpcError),
        ({"code": -32603, "message": "internal error"}, TransientRpcError),
        ({"code": -32602, "message": "invalid argument 0: json: cannot unmarshal"}, RpcError),
        ({"code": 3, "message": "execution reverted", "data": "0x08c379a0"}, CallReverted),
        ({"code": -32000, "message": "execution reverted"}, CallReverted),
        ({"code": -32015, "message": "VM execution error.", "data": "Reverted 0x08c379a0"}, CallReverted),
        ({"code": -32601, "message": "the method x does not exist/is not available"}, RpcError),
        ({"code": -32600, "message": "invalid request"}, RpcError),
        ({"code": -32099, "message": "an error nobody documented"}, TransientRpcError),
        ({"message": "no code at all"}, TransientRpcError),
    ],
)
def test_json_rpc_errors_are_sorted_into_the_tree(error: dict[str, object], kind: type[Exception]) -> None:
    assert type(classify_rpc_error("eth_call", error, "http://h#ab12")) is kind


def test_infura_backoff_seconds_become_retry_after() -> None:
    err = classify_rpc_error(
        "eth_call",
        {
            "code": -32005,
            "message": "project ID request rate exceeded",
            "data": {"rate": {"backoff_seconds": 2}},
        },
        "x",
    )
    assert isinstance(err, RateLimited) and err.retry_after_s == 2


# ---------------------------------------------------------------------------------------------------- bad endpoints

BAD_ANSWERS: dict[str, tuple[Answer, str]] = {
    "403 html (banned key)": (html(403, "Forbidden"), "http_error"),
    "401 html": (html(401, "Unauthorized"), "http_error"),
    "404 html": (html(404, "Not Found"), "http_error"),
    "500 html": (html(500, "Internal Server Error"), "http_error"),
    "429 json-rpc body": (rpc_error(-32005, "daily request count exceeded", status=429), "rate_limited"),
    "unknown json-rpc error": (rpc_error(-32099, "upstream said something odd"), "rpc_error"),
    "json without result": (json_answer({"jsonrpc": "2.0", "id": 1}), "malformed"),
    "oversized, announced": (oversized(4 * CAP, announce_length=True), "oversized"),
    "oversized, chunked": (oversized(4 * CAP, announce_length=False), "oversized"),
    "truncated": (truncated(), "malformed"),
    "invalid json": (invalid_json(), "malformed"),
}


@pytest.mark.parametrize("kind", list(BAD_ANSWERS))
async def test_a_bad_first_endpoint_is_cooled_down_and_the_next_one_answers(anvil_bsc: Anvil, kind: str) -> None:
    answer, outcome = BAD_ANSWERS[kind]
    obs = RecordingObserver()
    async with (
        BadEndpoint(answer) as bad,
        fast_client([bad.url, anvil_bsc.url], obs, cooldown_s=60, max_response_bytes=CAP) as client,
    ):
        assert await client.call("eth_chainId", []) == "0x38"
        assert await client.batch([("eth_chainId", [])] * 3) == ["0x38"] * 3  # still cooling: straight to anvil
        assert len(bad.requests) == 1
    assert obs.outcomes_of(bad.url) == [outcome]
    assert obs.endpoints == [("bsc", redact_url(bad.url), False)]


async def test_a_bad_endpoint_fails_a_batch_over_too(anvil_bsc: Anvil) -> None:
    obs = RecordingObserver()
    async with (
        BadEndpoint(html(403)) as bad,
        fast_client([bad.url, anvil_bsc.url], obs, cooldown_s=60) as client,
    ):
        assert await client.batch([("eth_chainId", [])] * 5) == ["0x38"] * 5
    assert len(bad.requests) == 1 and obs.endpoints == [("bsc", redact_url(bad.url), False)]


async def test_every_endpoint_bad_is_retryable_never_fatal() -> None:
    obs = RecordingObserver()
    async with (
        BadEndpoint(html(403)) as banned,
        BadEndpoint(rpc_error(-32099, "odd")) as odd,
        BadEndpoint(html(404)) as disabled,
    ):
        urls = [banned.url, odd.url, disabled.url]
        async with fast_client(urls, obs, max_attempts=5) as client:
            with pytest.raises(RetryableChainError) as single:
                await client.call("eth_chainId", [])
            results = await client.batch([("eth_chainId", [])] * 2, return_errors=True)
            with pytest.raises(RetryableChainError):
                await client.batch([("eth_chainId", [])] * 2)
        sent = len(banned.requests) + len(odd.requests) + len(disabled.requests)
    assert not isinstance(single.value, FatalChainError)
    assert all(isinstance(r, RetryableChainError) and not isinstance(r, FatalChainError) for r in results)
    assert sent == 5 * 3  # every attempt of the call and of both batches reached an endpoint
    assert sorted(e for _, e, up in obs.endpoints if not up) == sorted(redact_url(u) for u in urls)


async def test_check_chain_id_succeeds_with_a_banned_key_first(anvil_bsc: Anvil) -> None:
    obs = RecordingObserver()
    async with BadEndpoint(html(403, echo_url=True)) as bad:
        banned = bad.url_with(f"/v3/{API_KEY}")
        async with EvmAdapter(Chain.BSC, [banned, anvil_bsc.url], 56, observer=obs, timeout_s=2) as adapter:
            await adapter.check_chain_id()
    assert obs.endpoints == [("bsc", redact_url(banned), False)]


async def test_a_revert_is_an_answer_raised_once_without_failover(anvil_bsc: Anvil) -> None:
    obs = RecordingObserver()
    async with (
        BadEndpoint(forward(anvil_bsc.url, keep_path=False)) as first,
        BadEndpoint(forward(anvil_bsc.url, keep_path=False)) as second,
        fast_client([first.url, second.url], obs) as client,
    ):
        with pytest.raises(CallReverted) as info:
            await client.call("eth_call", [REVERTING_CALL, "latest"])
        calls: list[tuple[str, list[Any]]] = [
            ("eth_chainId", []), ("eth_call", [REVERTING_CALL, "latest"]), ("eth_chainId", [])
        ]
        results = await client.batch(calls, return_errors=True)
        with pytest.raises(CallReverted):
            await client.batch(calls)
    assert not isinstance(info.value, RetryableChainError | FatalChainError)
    assert results[0] == results[2] == "0x38" and isinstance(results[1], CallReverted)
    assert (len(first.requests), len(second.requests)) == (3, 0)  # one request each, never re-sent
    assert obs.endpoints == [] and obs.outcomes() == ["reverted", "reverted", "reverted"]


def _plausible_chain_id(result: Any) -> None:
    if not isinstance(result, str) or int(result, 16) >= 2**32:
        raise MalformedResponse(f"chain id {result!r} out of range")


async def test_a_result_the_validation_rejects_fails_over(anvil_bsc: Anvil) -> None:
    obs = RecordingObserver()
    absurd = "0x" + "f" * 18  # 2^72 - 1
    async with (
        BadEndpoint(rpc_result(absurd)) as liar,
        fast_client([liar.url, anvil_bsc.url], obs, cooldown_s=60) as client,
    ):
        assert await client.call("eth_chainId", []) == absurd  # without validation it is taken as it is
        got = await client.call("eth_chainId", [], validate=_plausible_chain_id)
        batch = await client.batch([("eth_chainId", [])] * 3, validate=_plausible_chain_id)
    assert got == "0x38" and batch == ["0x38"] * 3
    assert obs.outcomes_of(liar.url) == ["ok", "malformed"]
    assert obs.endpoints == [("bsc", redact_url(liar.url), False)]


async def test_a_validation_that_always_rejects_ends_in_malformed_response(anvil_bsc: Anvil) -> None:
    def never(result: Any) -> None:
        raise MalformedResponse("rejected")

    async with fast_client([anvil_bsc.url], max_attempts=3) as client:
        with pytest.raises(MalformedResponse, match="rejected"):
            await client.call("eth_chainId", [], validate=never)
        results = await client.batch([("eth_chainId", [])] * 2, return_errors=True, validate=never)
    assert all(isinstance(r, MalformedResponse) for r in results)


def _no_finalized_tag(entry: dict[str, Any]) -> dict[str, Any] | None:
    if entry.get("method") == "eth_getBlockByNumber" and (entry.get("params") or [None])[0] == "finalized":
        return {"code": -32602, "message": "invalid argument 0: unknown block tag finalized"}
    return None


async def test_an_endpoint_lacking_the_finalized_tag_is_passed_over_without_cooldown(anvil_bsc: Anvil) -> None:
    obs = RecordingObserver()
    async with (
        BadEndpoint(forward(anvil_bsc.url, _no_finalized_tag, keep_path=False)) as lacking,
        BadEndpoint(forward(anvil_bsc.url, keep_path=False)) as full,
        fast_client([lacking.url, full.url], obs, cooldown_s=60) as client,
    ):
        block = await client.call("eth_getBlockByNumber", ["finalized", False])
        blocks = await client.batch([("eth_getBlockByNumber", ["finalized", False])] * 2)
        assert await client.call("eth_chainId", []) == "0x38"
    assert isinstance(block, dict) and blocks == [block, block]
    assert [s.rpc_methods() for s in lacking.requests][-1] == ["eth_chainId"]  # still the preferred endpoint
    assert len(lacking.requests) == 3 and len(full.requests) == 2
    assert obs.endpoints == []


async def test_finality_fallback_stays_cheap_when_no_endpoint_knows_the_tag(anvil_bsc: Anvil) -> None:
    obs = RecordingObserver()
    async with (
        BadEndpoint(forward(anvil_bsc.url, _no_finalized_tag, keep_path=False)) as a,
        BadEndpoint(forward(anvil_bsc.url, _no_finalized_tag, keep_path=False)) as b,
    ):
        client = fast_client([a.url, b.url], obs, backoff_base_s=30, backoff_max_s=30)  # a wait would time out
        async with EvmAdapter(Chain.BSC, [a.url], 56, rpc=client) as adapter:
            for _ in range(3):
                assert await asyncio.wait_for(adapter.finalized_number(), 10) is None
            with pytest.raises(RpcError) as info:
                await client.call("eth_getBlockByNumber", ["finalized", False])
    assert info.value.code == -32602 and isinstance(info.value, RetryableChainError)
    assert (len(a.requests), len(b.requests)) == (4, 4)  # each endpoint asked once per call, nothing more
    assert obs.endpoints == []


async def test_a_banned_key_page_echoing_the_url_leaks_no_secret(
    anvil_bsc: Anvil, caplog: pytest.LogCaptureFixture
) -> None:
    obs = RecordingObserver()
    caplog.set_level(logging.DEBUG)
    async with BadEndpoint(html(403, echo_url=True)) as bad:
        url = bad.url_with(f"/v3/{API_KEY}?apikey={API_KEY}")
        async with fast_client([url], obs, max_attempts=2) as client:
            with pytest.raises(ChainError) as info:
                await client.call("eth_chainId", [])
        assert all(API_KEY in s.path_qs for s in bad.requests)  # it was sent, and echoed in the page
    texts = [str(info.value), repr(info.value)] + [r.getMessage() + str(vars(r)) for r in caplog.records]
    texts += [r[1] for r in obs.requests] + [e for _, e, _ in obs.endpoints]
    assert all(API_KEY not in t for t in texts)
    assert "HTTP 403" in str(info.value) and "Forbidden" in str(info.value)  # still says what happened


# ---------------------------------------------------------------------------------------------------- atomic batches


def _piece(first: int, last: int) -> list[tuple[str, list[Any]]]:
    """A log piece as chains.evm.logs sends it: the header of its last block, then its filters' logs."""
    return [("eth_getBlockByNumber", [hex(last), False]),
            ("eth_getLogs", [{"fromBlock": hex(first), "toBlock": hex(last), "topics": [TRANSFER_TOPIC]}]),
            ("eth_getLogs", [{"fromBlock": hex(first), "toBlock": hex(last)}])]


PIECE_METHODS = ["eth_getBlockByNumber", "eth_getLogs", "eth_getLogs"]


async def test_a_failed_entry_re_sends_only_itself_by_default_and_the_whole_batch_when_atomic(
    anvil_bsc: Anvil
) -> None:
    acc = evm.accounts(anvil_bsc)
    evm.token_mint(anvil_bsc, evm.deploy_token(anvil_bsc, 18), acc[0], acc[1], 10**18)  # a Transfer log
    head = evm.block_number(anvil_bsc)
    calls = _piece(0, head)
    async with FaultProxy(anvil_bsc.url, Faults(script=("logs_error",))) as proxy:
        async with fast_client([proxy.url]) as client:
            default = await client.batch(calls)
        assert proxy.methods == [PIECE_METHODS, ["eth_getLogs", "eth_getLogs"]]  # the header's request is gone
    async with FaultProxy(anvil_bsc.url, Faults(script=("logs_error",))) as proxy:
        async with fast_client([proxy.url]) as client:
            atomic = await client.batch(calls, atomic=True)
        assert proxy.methods == [PIECE_METHODS, PIECE_METHODS]
    assert proxy.injected["logs_error"] == 2
    assert atomic == default and int(atomic[0]["number"], 16) == head and atomic[1] and atomic[2]


async def test_an_atomic_batch_whose_entry_the_validation_rejects_is_re_sent_whole(anvil_bsc: Anvil) -> None:
    rejected: list[Any] = []

    def reject_the_first_log_list(result: Any) -> None:
        if isinstance(result, list) and not rejected:
            rejected.append(result)
            raise MalformedResponse("a log index of 2^70")

    obs = RecordingObserver()
    calls = _piece(0, evm.block_number(anvil_bsc))
    async with FaultProxy(anvil_bsc.url) as proxy, fast_client([proxy.url], obs) as client:
        results = await client.batch(calls, atomic=True, validate=reject_the_first_log_list)
    assert rejected and proxy.methods == [PIECE_METHODS, PIECE_METHODS]
    assert not any(isinstance(r, ChainError) for r in results)
    assert obs.outcomes() == ["malformed", "ok"] and obs.endpoints[0][2] is False  # a fault of the endpoint


async def test_an_atomic_batch_returns_a_range_refusal_at_once(anvil_bsc: Anvil) -> None:
    obs = RecordingObserver()
    calls = _piece(0, 99)
    async with (
        FaultProxy(anvil_bsc.url, Faults(max_log_blocks=10)) as proxy,
        fast_client([proxy.url], obs) as client,
    ):
        results = await client.batch(calls, atomic=True, return_errors=True)
        with pytest.raises(LogRangeTooLarge):
            await client.batch(calls, atomic=True)
    assert isinstance(results[1], LogRangeTooLarge) and results[1].max_blocks == 10
    assert proxy.methods == [PIECE_METHODS, PIECE_METHODS]  # one request per batch: the caller splits the range
    assert obs.endpoints == []  # not a fault


async def test_a_node_behind_is_a_fault_in_an_atomic_batch_and_the_whole_batch_goes_elsewhere(
    anvil_bsc: Anvil, anvil_factory: AnvilFactory
) -> None:
    """anvil refuses a log range starting above its head with -32602 "BlockOutOfRangeError": the node is behind, the
    range is fine. A node of its own, still at block 0, stands for a node behind the shared one."""
    behind_node = anvil_factory(56)
    evm.mine(anvil_bsc, 3)
    head = evm.block_number(anvil_bsc)
    calls = _piece(head - 1, head)  # blocks only the shared node has
    async with fast_client([behind_node.url], max_attempts=1) as alone:
        lone = await alone.batch(calls, atomic=True, return_errors=True)
    assert lone[0] is None and "BlockOutOfRange" in str(lone[1])  # real anvil's text
    assert type(lone[1]) is BlockNotAvailable
    obs = RecordingObserver()
    async with (
        FaultProxy(behind_node.url) as behind,
        FaultProxy(anvil_bsc.url) as current,
        fast_client([behind.url, current.url], obs, cooldown_s=60) as client,
    ):
        results = await client.batch(calls, atomic=True)
        assert await client.call("eth_chainId", []) == "0x38"  # still cooling down: the other endpoint
    assert int(results[0]["number"], 16) == head and isinstance(results[1], list)
    assert behind.methods == [PIECE_METHODS]
    assert current.methods == [PIECE_METHODS, ["eth_chainId"]]
    assert obs.endpoints == [("bsc", redact_url(behind.url), False)]


async def test_an_atomic_batch_to_an_endpoint_refusing_batches_raises_batches_refused(anvil_bsc: Anvil) -> None:
    calls = _piece(0, evm.block_number(anvil_bsc))
    async with (
        FaultProxy(anvil_bsc.url, Faults(reject_batches=True)) as proxy,
        fast_client([proxy.url]) as client,
    ):
        assert not client.refuses_batches
        with pytest.raises(BatchesRefused):
            await client.batch(calls, atomic=True, return_errors=True)
        assert client.refuses_batches
        with pytest.raises(BatchesRefused):  # known now: not even asked
            await client.batch(calls, atomic=True, return_errors=True)
        assert proxy.methods == [PIECE_METHODS]  # never sent as single calls
        one = await client.batch(calls[:1], atomic=True)  # one call needs no batch
        assert len(await client.batch(calls)) == 3  # the default still falls back to single calls
    assert isinstance(BatchesRefused("x"), RetryableChainError)
    assert int(one[0]["number"], 16) == int(calls[0][1][0], 16)
    assert proxy.methods[1:] == [["eth_getBlockByNumber"]] + [[m] for m in PIECE_METHODS]


async def test_an_atomic_batch_passes_over_an_endpoint_refusing_batches(anvil_bsc: Anvil) -> None:
    obs = RecordingObserver()
    calls = _piece(0, evm.block_number(anvil_bsc))
    async with (
        FaultProxy(anvil_bsc.url, Faults(reject_batches=True)) as single,
        FaultProxy(anvil_bsc.url) as batching,
        fast_client([single.url, batching.url], obs) as client,
    ):
        first = await client.batch(calls, atomic=True)
        second = await client.batch(calls, atomic=True)
        assert not client.refuses_batches  # one endpoint still takes them
        assert await client.call("eth_chainId", []) == "0x38"  # still the preferred endpoint for the rest
    assert first == second
    assert single.methods == [PIECE_METHODS, ["eth_chainId"]]  # refused once, passed over since
    assert batching.methods == [PIECE_METHODS, PIECE_METHODS]
    assert obs.endpoints == []  # refusing batches is no fault


async def test_an_entry_every_endpoint_refuses_comes_back_in_its_place_after_one_request_each(
    anvil_bsc: Anvil
) -> None:
    obs = RecordingObserver()
    calls: list[tuple[str, list[Any]]] = [("eth_chainId", []), ("eth_noSuchMethod", []), ("eth_blockNumber", [])]
    async with (
        FaultProxy(anvil_bsc.url) as a,
        FaultProxy(anvil_bsc.url) as b,
        fast_client([a.url, b.url], obs) as client,
    ):
        results = await client.batch(calls, atomic=True, return_errors=True)
        with pytest.raises(RpcError):
            await client.batch(calls, atomic=True)
    assert results[0] == "0x38" and isinstance(results[1], RpcError) and isinstance(results[2], str)
    methods = [m for m, _ in calls]
    assert a.methods == b.methods == [methods, methods]  # whole, once per endpoint and batch
    assert obs.endpoints == []


async def test_an_atomic_batch_every_endpoint_fails_holds_one_attempts_errors(anvil_bsc: Anvil) -> None:
    calls = _piece(0, 1)
    async with BadEndpoint(rpc_error(-32099, "odd")) as odd:
        async with fast_client([odd.url], max_attempts=3) as client:
            results = await client.batch(calls, atomic=True, return_errors=True)
            with pytest.raises(TransientRpcError):
                await client.batch(calls, atomic=True)
    assert all(isinstance(r, TransientRpcError) for r in results)
    assert [s.rpc_methods() for s in odd.requests] == [PIECE_METHODS] * 6


async def test_an_atomic_batch_larger_than_a_batch_is_refused_unsent(anvil_bsc: Anvil) -> None:
    async with FaultProxy(anvil_bsc.url) as proxy, fast_client([proxy.url], max_batch=2) as client:
        with pytest.raises(ValueError, match="max_batch"):
            await client.batch(_piece(0, 1), atomic=True)
        assert await client.batch([], atomic=True) == []
    assert proxy.requests == 0


@pytest.mark.parametrize(
    "message",
    [
        "block range extends beyond current head block",  # newer geth, reth
        "BlockOutOfRangeError: block height is 5 but requested was 64",  # anvil
    ],
)
@pytest.mark.parametrize("code", [-32602, -32000])
def test_an_error_saying_the_node_is_behind_is_block_not_available(code: int, message: str) -> None:
    for method in ("eth_getLogs", "eth_getBlockByNumber"):
        err = classify_rpc_error(method, {"code": code, "message": message}, "x")
        assert type(err) is BlockNotAvailable  # a fault of that node: cooled down, asked elsewhere
        assert isinstance(err, RetryableChainError) and not isinstance(err, RangeTooLarge | RpcError)
