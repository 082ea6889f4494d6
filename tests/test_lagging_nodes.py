"""A node behind the others, behind a load balancer: the adapters never take its silence for "nothing happened".

Public BSC, Polygon and Tron endpoints are load balancers over nodes a few blocks apart. Here a share of the requests
(``LAGGING``, one draw per HTTP request) is answered by a node ``LAG`` blocks behind: the fault proxy in front of
anvil (tests/support/faultproxy.py) and the Tron simulator's lagging mode. Transfers sit in the blocks such a node
lacks, and every answer the adapters give is compared with an independent computation straight from the node
(tests/support/sync.py ``expected_evm_rows``, tests/test_tron_sync.py ``expected_tron_rows``). An adapter may give up
with a retryable error (the watcher retries it): it may never answer with a transfer missing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import pytest
import pytest_asyncio

from chains.base import BlockNotAvailable, BlockRef, Chain, RetryableChainError, Transfer
from chains.evm.adapter import EvmAdapter
from chains.evm.rpc import JsonRpcClient
from chains.tron.adapter import TronAdapter
from citadel_devtools.anvil import Anvil
from citadel_devtools.tron_simulator import TronSimulator, TrxTransfer
from tests.fixtures.anvil import AnvilFactory
from tests.support import evm
from tests.support.faultproxy import FaultProxy, Faults
from tests.support.sync import KnownWallet, Row, expected_evm_rows, sides_of
from tests.test_tron_sync import expected_tron_rows

pytestmark = pytest.mark.asyncio(loop_scope="session")

LAGGING = 0.3
LAG = 3
ROUNDS = 6
T = TypeVar("T")


def rows_of(transfers: list[Transfer], wallets: list[KnownWallet]) -> list[Row]:
    """The adapter's transfers as the rows they give (the shape of the independent computations)."""
    by_address = {w.address: w for w in wallets}
    return sorted(
        (wallet.id, t.tx_hash, t.log_index, kind, t.amount_raw, t.token_address, t.block_number, t.block_hash,
         "ok" if t.success else "failed")
        for t in transfers for wallet, kind in sides_of(t.from_address, t.to_address, by_address)
    )


async def complete(fetch: Callable[[], Awaitable[T]], tries: int = 30) -> T:
    """``fetch()`` retried on retryable errors, as the watcher does: the answer an adapter finally commits to."""
    for _ in range(tries - 1):
        try:
            return await fetch()
        except RetryableChainError:
            continue
    return await fetch()


# ---------------------------------------------------------------------------------------------------- EVM


@dataclass
class EvmTail:
    """Token and native transfers to and from known wallets in each of the chain's last blocks."""

    anvil: Anvil
    token: str
    wallets: list[KnownWallet]
    first: int
    last: int

    @property
    def watched(self) -> frozenset[str]:
        return frozenset(w.address for w in self.wallets)

    def expected(self, first: int | None = None, last: int | None = None) -> list[Row]:
        return expected_evm_rows(self.anvil, self.wallets, [self.token], self.first if first is None else first,
                                 self.last if last is None else last)


def make_tail(anvil: Anvil, blocks: int = 8) -> EvmTail:
    acc = evm.accounts(anvil)
    token = evm.deploy_token(anvil, 18, "USDT")
    wallets = [KnownWallet(i + 1, i + 1, a) for i, a in enumerate(acc[1:4])]
    outsider = acc[8]
    evm.token_mint(anvil, token, acc[0], outsider, 10**24)
    first = evm.block_number(anvil) + 1
    for i in range(blocks):  # one transaction per block (automine): a transfer in every block a lagging node lacks
        if i % 2:
            evm.native_transfer(anvil, outsider, wallets[i % 3].address, 10**15 + i)
        else:
            evm.token_transfer(anvil, token, outsider, wallets[i % 3].address, 1000 + i)
    return EvmTail(anvil, token, wallets, first, evm.block_number(anvil))


@pytest.fixture(scope="module")
def bsc_tail(anvil_bsc: Anvil) -> EvmTail:
    return make_tail(anvil_bsc)


@pytest_asyncio.fixture(loop_scope="session")
async def lagging_bsc(anvil_bsc: Anvil) -> AsyncIterator[tuple[FaultProxy, EvmAdapter]]:
    async with FaultProxy(anvil_bsc.url, Faults(seed=5, lagging=LAGGING, lag_blocks=LAG)) as proxy:
        client = JsonRpcClient([proxy.url], chain="bsc", timeout_s=5, cooldown_s=0.01, backoff_base_s=0.005)
        async with EvmAdapter(Chain.BSC, [proxy.url], 56, rpc=client) as adapter:
            yield proxy, adapter


async def test_the_lagging_proxy_answers_as_a_node_behind(anvil_bsc: Anvil, bsc_tail: EvmTail) -> None:
    async with FaultProxy(anvil_bsc.url, Faults(lagging=1.0, lag_blocks=LAG)) as proxy:
        client = JsonRpcClient([proxy.url], chain="bsc", timeout_s=5, max_attempts=1)
        head = evm.block_number(anvil_bsc)
        top = evm.get_block(anvil_bsc, head)
        assert int(await client.call("eth_blockNumber", []), 16) == head - LAG
        assert int((await client.call("eth_getBlockByNumber", ["latest", False]))["number"], 16) == head - LAG
        assert int((await client.call("eth_getBlockByNumber", ["finalized", False]))["number"], 16) <= head - LAG
        assert await client.call("eth_getBlockByNumber", [hex(head), False]) is None
        assert await client.call("eth_getBlockByHash", [top["hash"], False]) is None
        assert await client.call("eth_getTransactionReceipt", [top["transactions"][0]]) is None
        logs = await client.call("eth_getLogs", [{"fromBlock": hex(bsc_tail.first), "toBlock": hex(head)}])
        assert logs and max(int(log["blockNumber"], 16) for log in logs) <= head - LAG  # silently clamped
        assert evm.get_logs(anvil_bsc, head - LAG + 1, head)  # though the chain has logs there
        assert await client.call("eth_getLogs", [{"fromBlock": hex(head - 1), "toBlock": hex(head)}]) == []
        unknown = (await client.batch([("eth_getLogs", [{"blockHash": top["hash"]}])], return_errors=True))[0]
        assert isinstance(unknown, RetryableChainError) and "unknown block" in str(unknown)
        await client.aclose()
    assert proxy.injected["lagging"] >= 9 and proxy.injected["lag_hidden"] >= 7


async def test_catch_up_ranges_through_a_lagging_node_miss_nothing(
    bsc_tail: EvmTail, lagging_bsc: tuple[FaultProxy, EvmAdapter]
) -> None:
    proxy, adapter = lagging_bsc
    assert {r[6] for r in bsc_tail.expected()} == set(range(bsc_tail.first, bsc_tail.last + 1))  # one per block
    for native in (False, True):  # tokens only: no full-block scan fails by chance next to the logs
        expected = [r for r in bsc_tail.expected() if native or r[5] is not None]
        for _ in range(ROUNDS):
            got = await complete(lambda n=native: adapter.transfers(
                bsc_tail.first, bsc_tail.last, bsc_tail.watched, frozenset({bsc_tail.token}), native=n))
            assert rows_of(got, bsc_tail.wallets) == expected
    assert proxy.injected["lag_hidden"] > 0


async def test_logs_failing_inside_their_piece_are_never_answered_again_without_the_header(
    anvil_bsc: Anvil, bsc_tail: EvmTail
) -> None:
    """A piece's header vouches for the logs of its own request only. The first request of the piece answers the
    header and errors the logs entries (a provider's per-entry 429); the next one is served by a node that lacks the
    upper half of the piece. The logs must never come back from that node without a header of their own."""
    head = evm.block_number(anvil_bsc)
    middle = (bsc_tail.first + bsc_tail.last) // 2
    expected = [r for r in bsc_tail.expected() if r[5] is not None]
    assert any(r[6] > middle for r in expected)  # token transfers the node behind lacks
    faults = Faults(lag_blocks=head - middle, script=("logs_error", "lagging"))
    async with FaultProxy(anvil_bsc.url, faults) as proxy:
        client = JsonRpcClient([proxy.url], chain="bsc", timeout_s=5, cooldown_s=0.01, backoff_base_s=0.005)
        # one worker: the range is one piece, its requests one after the other, each meeting its scripted fault
        async with EvmAdapter(Chain.BSC, [proxy.url], 56, rpc=client, concurrency=1) as adapter:
            got = await adapter.transfers(bsc_tail.first, bsc_tail.last, bsc_tail.watched,
                                          frozenset({bsc_tail.token}), native=False)
    assert proxy.injected["logs_error"] == 2 and proxy.injected["lag_hidden"] > 0  # both faults were met
    assert rows_of(got, bsc_tail.wallets) == expected
    with_logs = [m for m in proxy.methods if "eth_getLogs" in m]
    assert len(with_logs) >= 3 and all(m[0] == "eth_getBlockByNumber" for m in with_logs)


async def test_catch_up_through_per_entry_errors_and_a_lagging_node_misses_nothing(
    bsc_tail: EvmTail, anvil_bsc: Anvil
) -> None:
    """The same faults drawn at random, with the adapter's usual concurrency."""
    faults = Faults(seed=11, lagging=LAGGING, lag_blocks=LAG, logs_error=0.3)
    async with FaultProxy(anvil_bsc.url, faults) as proxy:
        client = JsonRpcClient([proxy.url], chain="bsc", timeout_s=5, cooldown_s=0.01, backoff_base_s=0.005)
        async with EvmAdapter(Chain.BSC, [proxy.url], 56, rpc=client) as adapter:
            expected = [r for r in bsc_tail.expected() if r[5] is not None]
            for _ in range(ROUNDS):
                got = await complete(lambda: adapter.transfers(
                    bsc_tail.first, bsc_tail.last, bsc_tail.watched, frozenset({bsc_tail.token}), native=False))
                assert rows_of(got, bsc_tail.wallets) == expected
    assert proxy.injected["logs_error"] > 0 and proxy.injected["lag_hidden"] > 0
    assert all(m[0] == "eth_getBlockByNumber" for m in proxy.methods if "eth_getLogs" in m)


async def test_block_lists_through_a_lagging_node_are_whole_or_an_error(
    anvil_bsc: Anvil, bsc_tail: EvmTail, lagging_bsc: tuple[FaultProxy, EvmAdapter]
) -> None:
    proxy, adapter = lagging_bsc
    async with EvmAdapter(Chain.BSC, [anvil_bsc.url], 56) as direct:
        want = await direct.block_refs(bsc_tail.first, bsc_tail.last)
    for _ in range(ROUNDS):
        try:
            assert await adapter.block_refs(bsc_tail.first, bsc_tail.last) == want
        except BlockNotAvailable:
            pass
    assert proxy.injected["lag_hidden"] > 0


async def test_blocks_by_hash_through_a_lagging_node_miss_nothing(
    anvil_bsc: Anvil, bsc_tail: EvmTail, lagging_bsc: tuple[FaultProxy, EvmAdapter]
) -> None:
    proxy, adapter = lagging_bsc
    async with EvmAdapter(Chain.BSC, [anvil_bsc.url], 56) as direct:
        refs = await direct.block_refs(bsc_tail.first, bsc_tail.last)
    for native in (True, False):
        expected = [r for r in bsc_tail.expected() if native or r[5] is not None]
        for _ in range(ROUNDS):
            got = await complete(lambda n=native: adapter.block_transfers(
                refs, bsc_tail.watched, frozenset({bsc_tail.token}), native=n))
            assert rows_of(got, bsc_tail.wallets) == expected
            assert all(t.block_timestamp == refs[t.block_number - bsc_tail.first].timestamp for t in got)
    assert proxy.injected["lag_hidden"] > 0


async def test_balances_through_a_lagging_node_are_never_older_than_the_head_seen(
    anvil_bsc: Anvil, bsc_tail: EvmTail, lagging_bsc: tuple[FaultProxy, EvmAdapter]
) -> None:
    """A cached balance read from a node behind would miss the deposits of its missing blocks (each wallet got one
    in the last three blocks) until the next transfer touches the wallet."""
    proxy, adapter = lagging_bsc
    real_head = evm.block_number(anvil_bsc)
    assert real_head - LAG < bsc_tail.last  # the tail's last transfers are in blocks the lagging node lacks
    for _ in range(30):  # the watcher asks for the head every poll; some answer is the real one
        if (await adapter.head()).number == real_head:
            break
    addresses = [w.address for w in bsc_tail.wallets]
    truth = {(a, None): evm.native_balance(anvil_bsc, a) for a in addresses}
    truth |= {(a, bsc_tail.token): evm.token_balance(anvil_bsc, bsc_tail.token, a) for a in addresses}
    answered = 0
    for _ in range(ROUNDS):
        got = await adapter.balances(addresses, [bsc_tail.token])
        assert {k: v for k, v in got.items()} == {k: truth[k] for k in got}  # left out, maybe; never stale
        answered += len(got)
    assert answered > 0 and proxy.injected["lag_hidden"] > 0


async def test_an_endpoint_refusing_batches_behind_a_load_balancer_misses_nothing(
    anvil_bsc: Anvil, bsc_tail: EvmTail
) -> None:
    """Without batches, a block check and the logs it vouches for travel in separate requests (to different nodes):
    the adapter must not rely on it."""
    faults = Faults(seed=9, lagging=LAGGING, lag_blocks=LAG, reject_batches=True)
    async with FaultProxy(anvil_bsc.url, faults) as proxy:
        client = JsonRpcClient([proxy.url], chain="bsc", timeout_s=5, cooldown_s=0.01, backoff_base_s=0.005)
        async with EvmAdapter(Chain.BSC, [proxy.url], 56, rpc=client) as adapter:
            for native in (False, True):
                expected = [r for r in bsc_tail.expected() if native or r[5] is not None]
                for _ in range(ROUNDS):
                    got = await complete(lambda n=native: adapter.transfers(
                        bsc_tail.first, bsc_tail.last, bsc_tail.watched, frozenset({bsc_tail.token}), native=n))
                    assert rows_of(got, bsc_tail.wallets) == expected
    assert proxy.injected["batch_rejected"] > 0 and proxy.injected["lag_hidden"] > 0


async def test_an_endpoint_refusing_batches_next_to_one_taking_them_keeps_ranges_whole(
    anvil_bsc: Anvil, bsc_tail: EvmTail
) -> None:
    """The log pieces go to the endpoint that takes batches (each proves itself there); the one that refuses them
    still serves what proves itself one call at a time (blocks, receipts). No fallback to a request per block."""
    async with (
        FaultProxy(anvil_bsc.url, Faults(seed=4, lagging=LAGGING, lag_blocks=LAG, reject_batches=True)) as single,
        FaultProxy(anvil_bsc.url, Faults(seed=6, lagging=LAGGING, lag_blocks=LAG, logs_error=0.2)) as batching,
    ):
        client = JsonRpcClient([single.url, batching.url], chain="bsc", timeout_s=5, cooldown_s=0.01,
                               backoff_base_s=0.005)
        async with EvmAdapter(Chain.BSC, [single.url], 56, rpc=client) as adapter:
            for native in (False, True):
                expected = [r for r in bsc_tail.expected() if native or r[5] is not None]
                for _ in range(ROUNDS):
                    got = await complete(lambda n=native: adapter.transfers(
                        bsc_tail.first, bsc_tail.last, bsc_tail.watched, frozenset({bsc_tail.token}), native=n))
                    assert rows_of(got, bsc_tail.wallets) == expected
            assert not client.refuses_batches
    logs_requests = [m for p in (single, batching) for m in p.methods if "eth_getLogs" in m]
    assert logs_requests and all(m[0] == "eth_getBlockByNumber" and len(m) > 1 for m in logs_requests)
    # refused by the first pieces in flight at once (one per worker), passed over by the rest of the 12 reads
    assert 1 <= single.injected["batch_rejected"] <= adapter.concurrency
    assert not any("eth_getBlockByHash" in m for p in (single, batching) for m in p.methods)  # ranges throughout
    assert batching.injected["lag_hidden"] > 0 and batching.injected["logs_error"] > 0


async def test_a_block_the_node_does_not_know_is_an_error_never_empty(anvil_bsc: Anvil, bsc_tail: EvmTail) -> None:
    async with EvmAdapter(Chain.BSC, [anvil_bsc.url], 56, max_attempts=2) as adapter:
        refs = await adapter.block_refs(bsc_tail.first, bsc_tail.last)
        for ref in (refs[0], refs[-1]):
            unknown = dataclasses.replace(ref, hash="0x" + "ab" * 32)
            for native in (True, False):
                with pytest.raises(BlockNotAvailable):
                    await adapter.block_transfers([unknown], bsc_tail.watched, frozenset({bsc_tail.token}),
                                                  native=native)


async def test_blocks_of_an_orphaned_fork_are_never_answered_from_the_new_one(anvil_factory: AnvilFactory) -> None:
    node = anvil_factory(56)
    tail = make_tail(node, blocks=6)
    async with EvmAdapter(Chain.BSC, [node.url], 56, max_attempts=2) as adapter:
        old: list[BlockRef] = await adapter.block_refs(tail.first, tail.last)
        acc = evm.accounts(node)
        evm.reorg(node, 3, [({"from": acc[8], "to": tail.wallets[0].address, "value": hex(777)}, 0),
                            ({"from": acc[8], "to": tail.wallets[1].address, "value": hex(778)}, 2)])
        new = await adapter.block_refs(tail.first, tail.last)
        assert [r.hash for r in new[:-3]] == [r.hash for r in old[:-3]]
        for orphan in old[-3:]:  # the middle one's successor has no transfer: no "empty" answer either
            with pytest.raises(BlockNotAvailable):
                await adapter.block_transfers([orphan], tail.watched, frozenset({tail.token}))
        got = await adapter.block_transfers(new, tail.watched, frozenset({tail.token}))
    assert rows_of(got, tail.wallets) == tail.expected()
    assert {t.amount_raw for t in got} >= {777, 778}


# ---------------------------------------------------------------------------------------------------- Tron


@dataclass
class TronTail:
    sim: TronSimulator
    token: str
    wallets: list[KnownWallet]
    first: int

    @property
    def watched(self) -> frozenset[str]:
        return frozenset(w.address for w in self.wallets)

    def expected(self, first: int | None = None, last: int | None = None) -> list[Row]:
        lo = self.first if first is None else first
        hi = self.sim.head_number if last is None else last
        return [r for r in expected_tron_rows(self.sim, self.wallets, {self.token}) if lo <= r[6] <= hi]


@pytest.fixture
def tron_tail(tron_sim: TronSimulator) -> Iterator[TronTail]:
    sim = tron_sim
    token = sim.deploy_trc20("USDT", 6)
    people = [sim.new_address() for _ in range(4)]
    for p in people:
        sim.fund(p, 10**12)
        sim.mint(token, p, 10**12)
    wallets = [KnownWallet(i + 1, i + 1, a) for i, a in enumerate(people[:3])]
    first = sim.head_number + 1
    for i in range(8):
        if i % 2:
            sim.transfer_trx(people[3], people[i % 3], 100 + i)
        else:
            sim.transfer_trc20(token, people[3], people[i % 3], 1000 + i)
            sim.transfer_trc20(token, people[i % 3], people[3], 5, revert=True)
        sim.produce_block()
    yield TronTail(sim, token, wallets, first)
    sim.faults.clear()


@pytest_asyncio.fixture(loop_scope="session")
async def tron(tron_sim: TronSimulator) -> AsyncIterator[TronAdapter]:
    adapter = TronAdapter([tron_sim.url], max_retries=4, backoff_base_s=0.005, backoff_cap_s=0.02, cooldown_s=0.01)
    yield adapter
    await adapter.aclose()


async def test_tron_ranges_through_a_lagging_node_miss_nothing(tron_tail: TronTail, tron: TronAdapter) -> None:
    sim = tron_tail.sim
    expected = tron_tail.expected()
    assert {r[6] for r in expected} == set(range(tron_tail.first, sim.head_number + 1))
    sim.faults.lag(LAGGING, LAG)
    for _ in range(ROUNDS):
        got = await complete(lambda: tron.transfers(tron_tail.first, sim.head_number, tron_tail.watched,
                                                    frozenset({tron_tail.token})))
        assert rows_of(got, tron_tail.wallets) == expected
    assert sim.faults.injected["lag_hidden"] > 0


async def test_tron_block_lists_through_a_lagging_node_are_whole_or_an_error(
    tron_tail: TronTail, tron: TronAdapter
) -> None:
    sim = tron_tail.sim
    want = await tron.block_refs(tron_tail.first, sim.head_number)
    assert len(want) == sim.head_number - tron_tail.first + 1
    sim.faults.lag(LAGGING, LAG)
    for _ in range(ROUNDS):
        try:
            assert await tron.block_refs(tron_tail.first, sim.head_number) == want
        except BlockNotAvailable:
            pass
    sim.faults.clear()
    with pytest.raises(BlockNotAvailable):  # above the head: no block is not an empty block
        await tron.block_refs(sim.head_number - 1, sim.head_number + 1)
    assert sim.faults.injected["lag_hidden"] > 0


async def test_tron_blocks_by_hash_through_a_lagging_node_and_a_fork_never_mix_branches(
    tron_tail: TronTail, tron: TronAdapter
) -> None:
    sim = tron_tail.sim
    tokens = frozenset({tron_tail.token})
    old = await tron.block_refs(tron_tail.first, sim.head_number)
    sim.faults.lag(LAGGING, LAG)
    for _ in range(ROUNDS):
        got = await complete(lambda: tron.block_transfers(old, tron_tail.watched, tokens))
        assert rows_of(got, tron_tail.wallets) == tron_tail.expected()
    expected_before = tron_tail.expected()
    sim.fork(3, [TrxTransfer(tron_tail.wallets[0].address, tron_tail.wallets[1].address, 4242)], new_blocks=4)
    sim.faults.lag(LAGGING, 5)  # a node this far behind is still on the old branch
    new = await complete(lambda: tron.block_refs(tron_tail.first, sim.head_number))
    assert [r.hash for r in new[:-4]] == [r.hash for r in old[:-3]]
    for _ in range(ROUNDS):
        got = await complete(lambda: tron.block_transfers(new, tron_tail.watched, tokens))
        assert rows_of(got, tron_tail.wallets) == tron_tail.expected()
        try:  # the orphaned blocks: whatever a node still on the old branch says, never the new branch's data
            orphaned = await tron.block_transfers(old[-3:], tron_tail.watched, tokens)
        except BlockNotAvailable:
            continue
        assert rows_of(orphaned, tron_tail.wallets) == [r for r in expected_before if r[6] >= old[-3].number]
    assert sim.faults.injected["lag_hidden"] > 0
    sim.faults.clear()
    with pytest.raises(BlockNotAvailable):
        await tron.block_transfers(old[-3:], tron_tail.watched, tokens)
