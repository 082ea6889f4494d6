"""JsonRpcClient against plain anvil and through the fault proxy: batches, per-entry errors, retries, Retry-After,
failover and cool-down, batch fallback, and no secret in messages, log records or metric labels."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from chains.base import MalformedResponse, RateLimited, RetryableChainError
from chains.evm.logs import LogRangeTooLarge
from chains.evm.rpc import JsonRpcClient, RpcError, TransientRpcError, classify_rpc_error
from indexer.devstack.anvil import Anvil
from tests.support.faultproxy import FaultProxy, Faults

API_KEY = "sk9f3b2c1d0e8a7f6e5d4c3b2a19"


class RecordingObserver:
    def __init__(self) -> None:
        self.requests: list[tuple[str, str, str, float, str]] = []
        self.skipped: list[tuple[str, str]] = []

    def rpc_request(self, chain: str, endpoint: str, method: str, duration_s: float, outcome: str) -> None:
        self.requests.append((chain, endpoint, method, duration_s, outcome))

    def skipped_item(self, chain: str, reason: str, where: str = "") -> None:
        self.skipped.append((chain, reason))

    def outcomes(self) -> list[str]:
        return [r[4] for r in self.requests]


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


async def test_fatal_errors_are_not_retried(anvil_bsc: Anvil) -> None:
    obs = RecordingObserver()
    async with fast_client([anvil_bsc.url], obs) as client:
        with pytest.raises(RpcError) as info:
            await client.call("eth_noSuchMethod", [])
    assert info.value.code == -32601
    assert len(obs.requests) == 1


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


async def test_retry_after_is_honoured(anvil_bsc: Anvil) -> None:
    obs = RecordingObserver()
    faults = Faults(rate_limit=1.0, retry_after="1")
    async with (
        FaultProxy(anvil_bsc.url, faults) as proxy,
        fast_client([proxy.url], obs, max_attempts=2) as client,
    ):
        started = time.monotonic()
        with pytest.raises(RateLimited) as info:
            await client.call("eth_chainId", [])
        elapsed = time.monotonic() - started
    assert info.value.retry_after_s == 1.0
    assert elapsed >= 0.95
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
        ({"code": 3, "message": "execution reverted", "data": "0x08c379a0"}, RpcError),
        ({"code": -32601, "message": "the method x does not exist/is not available"}, RpcError),
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
