"""TronAdapter against the simulator over real HTTP."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import get_args

import pytest
import pytest_asyncio

from chains.base import (
    NATIVE_LOG_INDEX,
    BlockNotAvailable,
    ChainAdapter,
    ChainError,
    ChainIdMismatch,
    RateLimited,
    RetryableChainError,
    Transfer,
)
from chains.tron.adapter import TronAdapter
from chains.tron.address import to_hex20, to_word
from citadel_devtools.ports import free_port
from citadel_devtools.tron_simulator import TRANSFER_TOPIC, FaultKind, RawLogs, Trc20Transfer, TronSimulator

pytestmark = pytest.mark.asyncio(loop_scope="session")

FAST = {"backoff_base_s": 0.005, "backoff_cap_s": 0.02, "cooldown_s": 0.02}


@dataclass
class RecordingObserver:
    requests: list[tuple[str, str, str, str]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def rpc_request(self, chain: str, endpoint: str, method: str, duration_s: float, outcome: str) -> None:
        self.requests.append((chain, endpoint, method, outcome))

    def skipped_item(self, chain: str, reason: str, where: str = "") -> None:
        self.skipped.append(reason)

    def endpoint_up(self, chain: str, endpoint: str, up: bool) -> None:
        return None


@pytest_asyncio.fixture(loop_scope="session")
async def observer() -> RecordingObserver:
    return RecordingObserver()


@pytest_asyncio.fixture(loop_scope="session")
async def adapter(tron_sim: TronSimulator, observer: RecordingObserver) -> AsyncIterator[TronAdapter]:
    a = TronAdapter([tron_sim.url], observer=observer, max_retries=4, **FAST)  # type: ignore[arg-type]
    yield a
    await a.aclose()


async def test_is_a_chain_adapter() -> None:
    adapter: ChainAdapter = TronAdapter(["http://127.0.0.1:1"])
    assert adapter.native_symbol == "TRX" and adapter.native_decimals == 6


async def test_head_finalized_and_block_ref(tron_sim: TronSimulator, adapter: TronAdapter) -> None:
    head = await adapter.head()
    sim_head = tron_sim.block(tron_sim.head_number)
    assert (head.number, head.hash, head.parent_hash) == (40, sim_head.block_id, sim_head.parent_hash)
    assert head.timestamp == sim_head.timestamp_ms // 1000
    assert await adapter.finalized_number() == 22
    ref = await adapter.block_ref(17)
    assert ref is not None and ref.hash == tron_sim.block(17).block_id
    genesis = await adapter.block_ref(0)
    assert genesis is not None and genesis.number == 0 and genesis.timestamp == 0
    assert await adapter.block_ref(41) is None


async def test_block_refs_across_chunks(tron_sim: TronSimulator, adapter: TronAdapter) -> None:
    tron_sim.produce_blocks(230)
    refs = await adapter.block_refs(3, 250)
    assert [r.number for r in refs] == list(range(3, 251))
    assert [r.hash for r in refs] == [tron_sim.block(n).block_id for n in range(3, 251)]
    for prev, cur in zip(refs, refs[1:], strict=False):
        assert cur.parent_hash == prev.hash
    assert [r.number for r in await adapter.block_refs(265, 270)] == [265, 266, 267, 268, 269, 270]
    # blocks the node does not have are not the end of the chain: a node behind answers just like that
    for first, last in ((265, 400), (271, 300)):
        with pytest.raises(BlockNotAvailable):
            await adapter.block_refs(first, last)
    assert await adapter.block_refs(5, 4) == []


async def test_transfers(tron_sim: TronSimulator, adapter: TronAdapter, observer: RecordingObserver) -> None:
    alice, bob, outsider, stranger = (tron_sim.new_address() for _ in range(4))
    usdt = tron_sim.deploy_trc20("USDT", 6)
    spam = tron_sim.deploy_trc20("SPAM", 18)
    for who in (alice, outsider):
        tron_sim.fund(who, 10**9)
        tron_sim.mint(usdt, who, 10**9)
        tron_sim.mint(spam, who, 10**9)
    first = tron_sim.head_number + 1
    t_out = tron_sim.transfer_trx(alice, outsider, 1_000)  # TRX out
    t_in = tron_sim.transfer_trx(outsider, alice, 2_000)  # TRX in
    tron_sim.transfer_trx(outsider, stranger, 3_000)  # nobody watched
    u_other = tron_sim.transfer_trc20(usdt, outsider, stranger, 5)  # a log that counts for log_index
    u_in = tron_sim.transfer_trc20(usdt, outsider, alice, 7)  # TRC20 in
    tron_sim.transfer_trc20(spam, outsider, alice, 9)  # unknown token: ignored
    b1 = tron_sim.produce_block()
    tron_sim.produce_block()  # empty
    u_p2p = tron_sim.transfer_trc20(usdt, alice, bob, 11)  # between two watched wallets
    u_rev = tron_sim.transfer_trc20(usdt, alice, outsider, 13, revert=True)  # reverted
    tron_sim.submit(Trc20Transfer(usdt, outsider, bob, 15, revert=True, pad_with_41=True))  # 41 in padding
    u_out = tron_sim.transfer_trc20(usdt, alice, outsider, 17)  # TRC20 out
    b3 = tron_sim.produce_block()

    got = await adapter.transfers(first, b3.number, frozenset({alice, bob}), frozenset({usdt}))
    assert [t.amount_raw for t in got] == [1_000, 2_000, 7, 11, 13, 15, 17]
    by_amount = {t.amount_raw: t for t in got}

    trx_out = by_amount[1_000]
    assert trx_out == Transfer(
        tx_hash=t_out,
        log_index=NATIVE_LOG_INDEX,
        block_number=b1.number,
        block_hash=b1.block_id,
        tx_index=0,
        from_address=alice,
        to_address=outsider,
        amount_raw=1_000,
        token_address=None,
        block_timestamp=b1.timestamp_ms // 1000,
        success=True,
        gas_used=0,
        gas_price=0,
    )
    assert (by_amount[2_000].tx_hash, by_amount[2_000].tx_index, by_amount[2_000].to_address) == (
        t_in,
        1,
        alice,
    )
    trc_in = by_amount[7]
    # log 0 is the outsider->stranger USDT transfer of tx 3; alice's incoming transfer is the block's log 1
    assert (trc_in.tx_hash, trc_in.log_index, trc_in.tx_index) == (u_in, 1, 4)
    assert trc_in.token_address == usdt and trc_in.success
    info = tron_sim.block(b1.number).txs[4].info
    assert trc_in.gas_used == info["receipt"]["energy_usage_total"] and trc_in.gas_price == info["fee"]
    assert u_other not in {t.tx_hash for t in got}

    p2p = by_amount[11]
    assert (p2p.tx_hash, p2p.from_address, p2p.to_address, p2p.log_index) == (u_p2p, alice, bob, 0)
    rev = by_amount[13]
    assert (rev.tx_hash, rev.success, rev.from_address, rev.to_address, rev.token_address) == (
        u_rev,
        False,
        alice,
        outsider,
        usdt,
    )
    assert rev.log_index == 1  # the index its log would have had: one log (the p2p one) before it
    padded = by_amount[15]
    assert (padded.success, padded.to_address, padded.log_index) == (False, bob, 1)
    out = by_amount[17]
    assert (out.tx_hash, out.log_index, out.success) == (u_out, 1, True)
    assert out.gas_price > 0 and out.gas_used > 0
    assert [(t.block_number, t.log_index) for t in got] == sorted((t.block_number, t.log_index) for t in got)
    assert observer.skipped == []

    # no tokens asked for: only the native transfer to the stranger, not the USDT one (u_other)
    only_trx = await adapter.transfers(first, b3.number, frozenset({stranger}), frozenset())
    assert [(t.amount_raw, t.token_address, t.log_index) for t in only_trx] == [
        (3_000, None, NATIVE_LOG_INDEX)
    ]


async def test_malformed_logs_are_skipped_and_reported(
    tron_sim: TronSimulator, adapter: TronAdapter, observer: RecordingObserver
) -> None:
    alice, outsider = tron_sim.new_address(), tron_sim.new_address()
    usdt = tron_sim.deploy_trc20("USDT", 6)
    good = {
        "address": to_hex20(usdt),
        "topics": [TRANSFER_TOPIC, to_word(outsider), to_word(alice)],
        "data": f"{5:064x}",
    }
    logs = (
        {"address": to_hex20(usdt), "data": f"{1:064x}"},  # no topics
        {"address": to_hex20(usdt), "topics": [TRANSFER_TOPIC, to_word(outsider)], "data": f"{2:064x}"},
        {
            "address": to_hex20(usdt),
            "topics": [TRANSFER_TOPIC, to_word(outsider), to_word(alice)],
            "data": "01",
        },
        good,
    )
    tron_sim.submit(RawLogs(usdt, outsider, logs))
    block = tron_sim.produce_block()
    got = await adapter.transfers(block.number, block.number, frozenset({alice}), frozenset({usdt}))
    assert [(t.amount_raw, t.log_index) for t in got] == [(5, 3)]
    assert sorted(observer.skipped) == ["malformed_log", "malformed_transfer_log", "malformed_transfer_log"]


async def test_receipts_token_info_balances(tron_sim: TronSimulator, adapter: TronAdapter) -> None:
    alice, bob, nobody = tron_sim.new_address(), tron_sim.new_address(), tron_sim.new_address()
    usdt = tron_sim.deploy_trc20("USDT", 6)
    tron_sim.fund(alice, 5_000_000)
    tron_sim.mint(usdt, alice, 100)
    tron_sim.produce_block()
    ok = tron_sim.transfer_trc20(usdt, alice, bob, 40)
    bad = tron_sim.transfer_trc20(usdt, alice, bob, 1, revert=True)
    trx = tron_sim.transfer_trx(alice, bob, 5_000_000)  # alice's TRX balance drops to 0: no balance key
    block = tron_sim.produce_block()

    receipts = await adapter.receipts([ok, bad, trx, "ab" * 32])
    assert set(receipts) == {ok, bad, trx}
    assert receipts[ok].success and not receipts[bad].success and receipts[trx].success
    assert [receipts[h].tx_index for h in (ok, bad, trx)] == [0, 1, 2]
    assert receipts[ok].block_hash == block.block_id and receipts[ok].block_number == block.number
    assert receipts[ok].gas_used == 64_895 and receipts[ok].gas_price == 64_895 * 100

    info = await adapter.token_info(usdt)
    assert (info.address, info.symbol, info.decimals) == (usdt, "USDT", 6)
    with pytest.raises(ChainError):
        await adapter.token_info(alice)

    balances = await adapter.balances([alice, bob, nobody], [usdt])
    assert balances == {
        (alice, None): 0,
        (bob, None): 5_000_000,
        (nobody, None): 0,
        (alice, usdt): 60,
        (bob, usdt): 40,
        (nobody, usdt): 0,
    }


async def test_normalise_and_chain_id(tron_sim: TronSimulator, adapter: TronAdapter) -> None:
    assert (
        adapter.normalise_address("TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t")
        == "TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t"
    )
    for bad, reason in [
        ("TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6u", "checksum"),
        ("tr7nhqjekqxgtci8q8zy4pl8otszgjlj6t", "character|length|checksum"),
        ("41a614f803b6fd780986a42c78ec9c7f77e6ded13c", "length"),
    ]:
        with pytest.raises(ValueError, match=reason):
            adapter.normalise_address(bad)
    await adapter.check_chain_id()  # none configured: accepted
    unset = TronAdapter([tron_sim.url], chain_id=0)  # the settings' default for Tron
    await unset.check_chain_id()
    await unset.aclose()
    genesis = tron_sim.block(0).block_id
    for good in (int(genesis[-8:], 16), genesis):
        a = TronAdapter([tron_sim.url], chain_id=good)
        await a.check_chain_id()
        await a.aclose()
    for wrong in (728126428, "00" * 32):
        a = TronAdapter([tron_sim.url], chain_id=wrong)
        with pytest.raises(ChainIdMismatch):
            await a.check_chain_id()
        await a.aclose()


@pytest.mark.parametrize("kind", [k for k in get_args(FaultKind) if k != "slow"])
async def test_faults_are_retried_never_empty(
    tron_sim: TronSimulator, adapter: TronAdapter, observer: RecordingObserver, kind: str
) -> None:
    alice, bob = tron_sim.new_address(), tron_sim.new_address()
    tron_sim.fund(alice, 100)
    tron_sim.transfer_trx(alice, bob, 100)
    block = tron_sim.produce_block()
    paths = ["/wallet/gettransactioninfobyblocknum", "/wallet/getblockbylimitnext", "/wallet/getnowblock"]
    tron_sim.faults.add(kind, count=2, paths=paths)  # type: ignore[arg-type]
    got = await adapter.transfers(block.number, block.number, frozenset({bob}), frozenset())
    assert [t.amount_raw for t in got] == [100]
    assert (await adapter.head()).number == block.number
    assert tron_sim.faults.injected[kind] == 2
    outcomes = {o for *_, o in observer.requests}
    assert outcomes - {"ok"} <= {"rate_limited", "http_error", "malformed"} and len(outcomes) == 2

    tron_sim.faults.add(kind, probability=1.0, paths=paths)  # type: ignore[arg-type]
    with pytest.raises(ChainError) as caught:
        await adapter.transfers(block.number, block.number, frozenset({bob}), frozenset())
    assert isinstance(caught.value, RetryableChainError)  # never fatal, whatever the node answers


async def test_api_key_sent_to_any_host_and_never_shown(caplog: pytest.LogCaptureFixture) -> None:
    key = "0f1e2d3c-secret-api-key-4b5a6978"
    caplog.set_level(logging.DEBUG)
    async with TronSimulator(api_key=key) as sim:
        url = f"{sim.url}/?apikey=QUERYSECRET123"
        adapter = TronAdapter([url], api_key=key, max_retries=2, **FAST)  # type: ignore[arg-type]
        assert (await adapter.head()).number == 40
        assert sim.requests and all(r.api_key == key for r in sim.requests)
        sim.faults.add("http_429", probability=1.0)
        with pytest.raises(RateLimited) as caught:
            await adapter.head()
        await adapter.aclose()
        no_key = TronAdapter([url], max_retries=0)
        with pytest.raises(ChainError) as rejected:
            await no_key.head()
        await no_key.aclose()
    texts = [str(caught.value), repr(caught.value), str(rejected.value)]
    texts += [r.getMessage() for r in caplog.records]
    assert any("retrying" in t for t in texts)
    for text in texts:
        assert key not in text and "QUERYSECRET123" not in text and str(sim.port) + "/?" not in text


async def test_failover_when_first_url_is_down(tron_sim: TronSimulator) -> None:
    observer = RecordingObserver()
    dead = f"http://127.0.0.1:{free_port()}"
    adapter = TronAdapter([dead, tron_sim.url], observer=observer, max_retries=2, **FAST)  # type: ignore[arg-type]
    assert (await adapter.head()).number == tron_sim.head_number
    assert (await adapter.block_refs(0, 40))[-1].number == 40
    await adapter.aclose()
    outcomes = [
        (endpoint.startswith("http://127.0.0.1:" + dead.rsplit(":", 1)[1]), o)
        for _, endpoint, _, o in observer.requests
    ]
    assert outcomes[0] == (True, "connection_error")
    assert (False, "ok") in outcomes
