"""EVM sync end to end: anvil (chain ids 56 and 137) + a real PostgreSQL + the real adapter and watcher.

Every test ends by comparing ``transactions`` with an independent computation from the node (tests/support/sync.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from decimal import Context, Decimal
from typing import Any

import asyncpg
import pytest
import pytest_asyncio

from chains.base import Chain, ReorgTooDeep
from chains.evm.adapter import EvmAdapter
from citadel_devtools.anvil import Anvil
from indexer.sync.watcher import ChainWatcher
from tests.fixtures.writer import WriterFactory
from tests.support import evm
from tests.support.sync import (
    KnownWallet,
    actual_rows,
    add_wallet,
    expected_evm_rows,
    run_backfills,
    sync_to_head,
    watcher_config,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")

CHAINS = {56: Chain.BSC, 137: Chain.POLYGON}


class Scene:
    """A chain with tokens deployed, known wallets registered, and a watcher ready to run."""

    def __init__(self, anvil: Anvil, pool: asyncpg.Pool, decimals: int, writers: WriterFactory) -> None:
        self.anvil = anvil
        self.writers = writers
        self.pool = pool
        self.chain = CHAINS[anvil.chain_id]
        self.accounts = evm.accounts(anvil)
        self.deployer = self.accounts[0]
        self.usdt = evm.deploy_token(anvil, decimals, "USDT")
        self.usdc = evm.deploy_token(anvil, decimals, "USDC")
        self.tst = evm.deploy_token(anvil, 18, "TST")
        self.unknown = evm.deploy_token(anvil, 18, "UNK")
        self.tokens = {"USDT": self.usdt, "USDC": self.usdc, "TST": self.tst}
        self.wallets: list[KnownWallet] = []
        self.adapter = EvmAdapter(self.chain, [anvil.url], anvil.chain_id, timeout_s=5)
        self.watcher: ChainWatcher | None = None
        self.db_url = ""

    async def register(self, *accounts: str) -> list[KnownWallet]:
        added = [await add_wallet(self.pool, self.chain.value, evm.to_checksum(a)) for a in accounts]
        self.wallets.extend(added)
        return added

    async def make_watcher(self, **overrides: Any) -> ChainWatcher:
        self.watcher = ChainWatcher(self.adapter, await self.writers(self.chain.value),
                                    watcher_config(self.tokens, **overrides))
        return self.watcher

    def head(self) -> int:
        return evm.block_number(self.anvil)

    def expected(self) -> list[Any]:
        return expected_evm_rows(self.anvil, self.wallets, self.tokens.values(), 0, self.head())

    async def assert_table_matches_chain(self) -> None:
        expected = self.expected()
        actual = await actual_rows(self.pool, self.chain.value)
        assert actual == expected


@pytest_asyncio.fixture(loop_scope="session")
async def scene_factory(
    anvil_factory: Any, pool: asyncpg.Pool, db_url: str, writer_factory: WriterFactory
) -> AsyncIterator[Any]:
    scenes: list[Scene] = []

    def make(chain_id: int, decimals: int, **anvil_kw: Any) -> Scene:
        scene = Scene(anvil_factory(chain_id, **anvil_kw), pool, decimals, writer_factory)
        scene.db_url = db_url
        scenes.append(scene)
        return scene

    yield make
    for scene in scenes:
        await scene.adapter.aclose()


def mixed_history(s: Scene) -> dict[str, str]:
    """Every kind of activity the indexer must get right. Returns notable tx hashes."""
    a = s.accounts
    known1, known2, known3, outsider = a[1], a[2], a[3], a[7]
    notes: dict[str, str] = {}
    evm.token_mint(s.anvil, s.usdt, s.deployer, known1, 10**12)
    evm.token_mint(s.anvil, s.usdc, s.deployer, outsider, 10**12)
    evm.token_mint(s.anvil, s.tst, s.deployer, known3, 10**24)
    evm.token_transfer(s.anvil, s.usdt, known1, known2, 12_345)  # p2p between known users
    evm.token_transfer(s.anvil, s.usdc, outsider, known3, 777)  # deposit
    evm.token_transfer(s.anvil, s.usdt, known1, outsider, 1)  # withdrawal
    recipients = [known2, known3] + [evm.address_of(i) for i in range(298)]
    notes["batch"] = evm.token_batch_transfer(s.anvil, s.tst, known3, recipients, list(range(1, 301)),
                                              gas=12_000_000)
    evm.token_mint(s.anvil, s.tst, s.deployer, known2, evm.UINT256_MAX)  # spam-sized amount, stored exactly
    evm.token_mint(s.anvil, s.unknown, s.deployer, known1, 5 * 10**18)  # unknown token: ignored
    evm.token_transfer(s.anvil, s.unknown, known1, known2, 10**18)
    evm.native_transfer(s.anvil, outsider, known1, 3 * 10**18)  # native deposit
    evm.native_transfer(s.anvil, known2, outsider, 10**17)  # native withdrawal
    evm.native_transfer(s.anvil, known1, known3, 10**16)  # native p2p
    reverter = evm.deploy(s.anvil, "Reverter")
    notes["failed"] = evm.send_tx(s.anvil, known1, reverter,
                                  evm.calldata("transferOrRevert(address,uint256)", outsider, 1),
                                  value=10**15, gas=100_000)
    evm.mine(s.anvil, 3)
    return notes


@pytest.mark.parametrize(("chain_id", "decimals"), [(56, 18), (137, 6)])
async def test_mixed_history_ends_equal_to_the_chain(scene_factory: Any, chain_id: int, decimals: int) -> None:
    s: Scene = scene_factory(chain_id, decimals)
    await s.register(*s.accounts[1:4])
    notes = mixed_history(s)
    watcher = await s.make_watcher()
    await sync_to_head(watcher, s.head)
    await s.assert_table_matches_chain()

    rows = await s.pool.fetch("SELECT * FROM transactions WHERE chain = $1", s.chain.value)
    by_hash: dict[str, list[asyncpg.Record]] = {}
    for r in rows:
        by_hash.setdefault(r["tx_hash"], []).append(r)
    # hundreds of Transfer logs in one transaction: each known recipient's log is its own row
    # known3 -> known2 (two p2p rows), known3 -> known3 (one row), known3 -> 298 outsiders (withdrawals)
    assert len(by_hash[notes["batch"]]) == 301
    # the failed outbound native transfer is recorded as failed
    assert {r["status"] for r in by_hash[notes["failed"]]} == {"failed"}
    # uint256 max is exact in amount_raw and amount
    huge = [r for r in rows if r["amount_raw"] == Decimal(evm.UINT256_MAX)]
    assert len(huge) == 1 and huge[0]["amount"] == Decimal(evm.UINT256_MAX).scaleb(-18, context=Context(prec=100))
    # tokens are read on-chain; stablecoins priced, others not
    usdt = [r for r in rows if r["token"] == "USDT"]
    assert usdt and all(r["token_decimals"] == decimals and r["value_usd"] is not None for r in usdt)
    assert all(r["value_usd"] is None for r in rows if r["token"] in ("TST", "BNB", "POL"))
    assert not [r for r in rows if r["token_address"] == s.unknown.lower()]
    # replaying the whole range changes nothing
    before = await s.pool.fetch("SELECT * FROM transactions ORDER BY id")
    await s.pool.execute("DELETE FROM sync_cursors WHERE stream = 'realtime'")
    await s.pool.execute("DELETE FROM chain_blocks")
    replay = await s.make_watcher()
    await sync_to_head(replay, s.head)
    after = await s.pool.fetch("SELECT * FROM transactions ORDER BY id")
    strip = ("updated_at", "confirmations", "status")
    assert [{k: v for k, v in r.items() if k not in strip} for r in before] == [
        {k: v for k, v in r.items() if k not in strip} for r in after
    ]


@pytest.mark.parametrize(("chain_id", "decimals"), [(56, 18), (137, 6)])
async def test_with_native_transfers_off_only_the_tokens_are_indexed_and_no_block_is_read_in_full(
    scene_factory: Any, chain_id: int, decimals: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    s: Scene = scene_factory(chain_id, decimals)
    await s.register(*s.accounts[1:4])
    mixed_history(s)
    native_reads: list[str] = []
    for name in ("_top_level_native_transfers", "_polygon_native_transfers"):
        async def spy(*args: Any, _name: str = name, **kwargs: Any) -> list[Any]:
            native_reads.append(_name)
            return []
        monkeypatch.setattr(s.adapter, name, spy)
    watcher = await s.make_watcher(native_transfers=False)
    await sync_to_head(watcher, s.head)
    expected = [r for r in s.expected() if r[5] is not None]  # token rows only
    assert any(r[5] is None for r in s.expected())  # the history has native transfers to leave out
    assert await actual_rows(s.pool, s.chain.value) == expected
    assert native_reads == []


async def test_confirmations_track_the_head_and_rows_confirm_at_finality(scene_factory: Any) -> None:
    s: Scene = scene_factory(56, 18, extra_args=["--slots-in-an-epoch", "4"])  # finalized = head - 8
    (w,) = await s.register(s.accounts[1])
    evm.token_mint(s.anvil, s.usdt, s.deployer, w.address, 100)
    watcher = await s.make_watcher()
    await sync_to_head(watcher, s.head)
    row = await s.pool.fetchrow("SELECT status, confirmations, block_number FROM transactions")
    assert row["status"] == "pending" and row["confirmations"] == s.head() - row["block_number"] + 1
    evm.mine(s.anvil, 3)
    await sync_to_head(watcher, s.head)
    row = await s.pool.fetchrow("SELECT status, confirmations, block_number FROM transactions")
    assert row["status"] == "pending" and row["confirmations"] == s.head() - row["block_number"] + 1
    evm.mine(s.anvil, 10)
    await sync_to_head(watcher, s.head)
    row = await s.pool.fetchrow("SELECT status, confirmations FROM transactions")
    assert row["status"] == "confirmed"


@pytest.mark.parametrize("depth", [1, 3, 20])
async def test_reorg_during_realtime_leaves_the_table_equal_to_the_canonical_chain(
    scene_factory: Any, depth: int
) -> None:
    s: Scene = scene_factory(56, 18, extra_args=["--slots-in-an-epoch", "16"])  # finalized = head - 32
    k1, k2 = await s.register(s.accounts[1], s.accounts[2])
    evm.token_mint(s.anvil, s.usdt, s.deployer, k1.address, 10**9)
    evm.mine(s.anvil, 40)
    watcher = await s.make_watcher()
    await sync_to_head(watcher, s.head)
    # both transfers in the first block about to be orphaned: one is dropped, one comes back in another block
    nonce = int(str(s.anvil.rpc("eth_getTransactionCount", [k1.address, "latest"])), 16)
    evm.set_automine(s.anvil, False)
    dropped = evm.token_transfer(s.anvil, s.usdt, k1.address, k2.address, 11)
    moved_tx = {"from": k1.address, "to": s.usdt,
                "data": "0x" + evm.calldata("transfer(address,uint256)", k2.address, 22).hex(),
                # the dropped transfer's nonce is free again on the new fork; anvil's own gas estimate for a
                # replacement is made on the old state and can run out of gas on the new one
                "nonce": hex(nonce), "gas": hex(100_000)}
    evm.send_tx(s.anvil, k1.address, s.usdt, evm.calldata("transfer(address,uint256)", k2.address, 22))
    evm.mine(s.anvil, 1)
    evm.set_automine(s.anvil, True)
    if depth > 1:
        evm.mine(s.anvil, depth - 1)
    await sync_to_head(watcher, s.head)
    assert any(r[1] == dropped for r in await actual_rows(s.pool, "bsc"))
    evm.reorg(s.anvil, depth, [(moved_tx, depth - 1)])
    await sync_to_head(watcher, s.head)
    await s.assert_table_matches_chain()
    hashes = {r[1] for r in await actual_rows(s.pool, "bsc")}
    assert dropped not in hashes
    assert (await s.pool.fetchval("SELECT count(*) FROM transactions WHERE amount_raw = 22")) == 2
    # the window holds the canonical hashes again
    stored = {r["number"]: r["hash"] for r in await s.pool.fetch("SELECT number, hash FROM chain_blocks")}
    for number, block_hash in stored.items():
        assert evm.get_block(s.anvil, number)["hash"] == block_hash


async def test_reorg_past_the_finality_bound_stops_loudly(scene_factory: Any) -> None:
    s: Scene = scene_factory(56, 18, extra_args=["--slots-in-an-epoch", "2"])  # finalized = head - 4
    (k1,) = await s.register(s.accounts[1])
    evm.token_mint(s.anvil, s.usdt, s.deployer, k1.address, 10)
    evm.mine(s.anvil, 10)
    watcher = await s.make_watcher()
    await sync_to_head(watcher, s.head)
    before = await actual_rows(s.pool, "bsc")
    evm.reorg(s.anvil, 8, [])
    with pytest.raises(ReorgTooDeep, match="final"):
        await sync_to_head(watcher, s.head)
    assert await actual_rows(s.pool, "bsc") == before  # nothing silently rewritten


async def test_a_platform_withdrawal_is_settled_and_a_reverted_one_fails(scene_factory: Any) -> None:
    s: Scene = scene_factory(56, 18)
    (k1,) = await s.register(s.accounts[1])
    outsider = s.accounts[8]
    evm.token_mint(s.anvil, s.usdt, s.deployer, k1.address, 1000)
    ok_tx = evm.token_transfer(s.anvil, s.usdt, k1.address, outsider, 250)
    reverter = evm.deploy(s.anvil, "Reverter")
    bad_tx = evm.send_tx(s.anvil, k1.address, reverter,
                         evm.calldata("transferOrRevert(address,uint256)", outsider, 1), gas=100_000)
    for tx in (ok_tx, bad_tx):  # another service broadcast these and recorded them as pending withdrawals
        await s.pool.execute(
            """INSERT INTO transactions (user_id, wallet_id, tx_hash, chain, from_address, to_address, amount,
                   token, tx_type) VALUES ($1, $2, $3, 'bsc', $4, $5, 250, 'USDT', 'withdrawal')""",
            k1.user_id, k1.id, tx, k1.address, outsider.lower(),
        )
    watcher = await s.make_watcher()
    await sync_to_head(watcher, s.head)
    await sync_to_head(watcher, s.head)  # settlement happens on the following step at the head
    ok = await s.pool.fetchrow("SELECT * FROM transactions WHERE tx_hash = $1", ok_tx)
    bad = await s.pool.fetchrow("SELECT * FROM transactions WHERE tx_hash = $1", bad_tx)
    assert ok["source"] == "platform" and ok["block_number"] is not None and ok["log_index"] is not None
    assert ok["amount_raw"] == 250 and ok["gas_used"] is not None
    assert (await s.pool.fetchval("SELECT count(*) FROM transactions WHERE tx_hash = $1", ok_tx)) == 1
    assert bad["status"] == "failed" and bad["block_number"] is not None and bad["gas_used"] > 0


async def test_platform_transactions_never_mined_are_polled_ever_less_often_then_dropped(scene_factory: Any) -> None:
    """A withdrawal another service recorded but that never reached a block (dropped from the mempool): its receipt is
    asked for less and less often instead of on every poll, and after PLATFORM_TX_MAX_AGE_S the row is 'dropped'."""
    s: Scene = scene_factory(56, 18)
    (k1,) = await s.register(s.accounts[1])
    evm.mine(s.anvil, 3)
    never = {"old": "0x" + "ab" * 32, "recent": "0x" + "cd" * 32}
    for name, age_h in (("old", 7), ("recent", 0)):
        await s.pool.execute(
            """INSERT INTO transactions (user_id, wallet_id, tx_hash, chain, from_address, to_address, amount, token,
                   tx_type, created_at) VALUES ($1, $2, $3, 'bsc', $4, $5, 1, 'USDT', 'withdrawal',
                   now() - make_interval(hours => $6))""",
            k1.user_id, k1.id, never[name], k1.address, s.accounts[8].lower(), age_h,
        )
    watcher = await s.make_watcher(platform_tx_max_age_s=6 * 3600)
    asked: list[str] = []
    receipts = watcher.adapter.receipts

    async def spy(hashes: list[str]) -> Any:
        asked.extend(hashes)
        return await receipts(hashes)

    watcher.adapter.receipts = spy  # type: ignore[method-assign]
    await sync_to_head(watcher, s.head)
    steps = 0
    async with asyncio.timeout(30):
        while steps < 40:
            await watcher.step()
            steps += 1
            await asyncio.sleep(0.05)
    status = {r["tx_hash"]: r["status"] for r in await s.pool.fetch("SELECT tx_hash, status FROM transactions")}
    assert status == {never["old"]: "dropped", never["recent"]: "pending"}
    assert never["old"] not in asked  # past the age: never asked for again
    assert 1 <= asked.count(never["recent"]) <= 6  # 40 polls at the head, a handful of receipt requests


async def test_a_wallet_inserted_while_running_is_indexed_with_its_history(scene_factory: Any) -> None:
    s: Scene = scene_factory(137, 6, extra_args=["--slots-in-an-epoch", "4"])
    (k1,) = await s.register(s.accounts[1])
    late = s.accounts[5]
    evm.token_mint(s.anvil, s.usdt, s.deployer, late, 5000)  # history before the wallet is known
    evm.token_transfer(s.anvil, s.usdt, late, k1.address, 40)  # old wallet <- new wallet
    evm.mine(s.anvil, 30)
    watcher = await s.make_watcher()
    await sync_to_head(watcher, s.head)
    evm.token_transfer(s.anvil, s.usdt, late, s.accounts[9], 3)  # unfinalised, before it is known
    evm.mine(s.anvil, 2)
    await sync_to_head(watcher, s.head)
    await s.register(late)
    watcher.wallet_changed.set()
    await sync_to_head(watcher, s.head)
    await run_backfills(watcher, range_size=7)
    await s.assert_table_matches_chain()
    types = await s.pool.fetch("SELECT wallet_id, tx_type FROM transactions WHERE amount_raw = 40")
    assert sorted(r["tx_type"] for r in types) == ["p2p_transfer", "p2p_transfer"]
    # bounded metrics: wallet backfills are counted per chain, never one series per wallet (100k wallets would
    # mean 100k series, and addresses on an unauthenticated endpoint)
    from prometheus_client import generate_latest

    from indexer import metrics

    scrape = generate_latest(metrics.REGISTRY).decode()
    assert "wallet:" not in scrape and late.lower()[2:] not in scrape.lower()
    assert 'citadel_wallet_backfills_pending{chain="polygon"} 0.0' in scrape


async def test_faulty_providers_slow_the_sync_but_never_change_the_result(
    scene_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Two endpoints behind fault-injecting proxies: timeouts, 429s, 5xx, truncated JSON, range limits with the real
    texts, BSC-sized extraData, and the first endpoint down for part of the run."""
    from tests.support.faultproxy import FaultProxy, Faults

    s: Scene = scene_factory(56, 18)
    await s.register(*s.accounts[1:4])
    mixed_history(s)
    evm.mine(s.anvil, 60)
    first = Faults(seed=3, timeout=0.03, rate_limit=0.08, server_error=0.08, truncate=0.05, hang_s=1.5,
                   max_log_blocks=20, range_style="bsc", max_log_results=150, bsc_extra_data=True)
    second = Faults(seed=4, rate_limit=0.1, server_error=0.05, max_log_blocks=15, range_style="reth",
                    bsc_extra_data=True)
    caplog.set_level(logging.DEBUG)
    async with FaultProxy(s.anvil.url, first) as p1, FaultProxy(s.anvil.url, second) as p2:
        secret_url = p1.url_with("/v3/TOPSECRETKEY?apikey=TOPSECRETKEY")
        s.adapter = EvmAdapter(s.chain, [secret_url, p2.url], 56, timeout_s=0.5, max_block_range=200)
        watcher = await s.make_watcher(catchup_range=40)
        await watcher.prepare()
        await p1.down()
        for _ in range(3):
            await watcher.step()
        await p1.up()
        await sync_to_head(watcher, s.head, timeout_s=240)
        injected = sum(p1.injected.values()) + sum(p2.injected.values())
    await s.assert_table_matches_chain()
    assert injected >= 10
    assert "TOPSECRETKEY" not in caplog.text


async def test_an_invalid_wallet_address_is_reported_and_skipped_not_fatal(
    scene_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from indexer import metrics

    s: Scene = scene_factory(56, 18)
    (good,) = await s.register(s.accounts[1])
    checksummed = evm.to_checksum(s.accounts[2])
    i = next(i for i, c in enumerate(checksummed) if i > 1 and c.isalpha())
    bad_checksum = checksummed[:i] + checksummed[i].swapcase() + checksummed[i + 1:]  # one letter's case flipped
    await add_wallet(s.pool, "bsc", bad_checksum)  # passes the table's format check, fails EIP-55
    evm.token_mint(s.anvil, s.usdt, s.deployer, good.address, 5)
    evm.token_mint(s.anvil, s.usdt, s.deployer, s.accounts[2], 6)
    caplog.set_level(logging.ERROR)
    watcher = await s.make_watcher()
    await sync_to_head(watcher, s.head)
    await s.assert_table_matches_chain()  # only the valid wallet's rows
    assert "invalid wallet address skipped" in caplog.text
    assert metrics.WALLETS_INVALID.labels("bsc")._value.get() == 1


async def test_a_node_on_another_chain_is_refused(scene_factory: Any) -> None:
    from chains.base import ChainIdMismatch

    s: Scene = scene_factory(137, 6)
    wrong = EvmAdapter(Chain.BSC, [s.anvil.url], 56, timeout_s=5)
    try:
        watcher = ChainWatcher(wrong, await s.writers("bsc"), watcher_config(s.tokens))
        with pytest.raises(ChainIdMismatch, match="56.*137|137.*56"):
            await watcher.prepare()
    finally:
        await wrong.aclose()


async def test_a_stalled_finality_signal_is_reported_and_nothing_is_confirmed_by_depth_alone(
    scene_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A custody platform pays out confirmed rows: while the node's finality signal is stuck, rows stay pending
    (metric, error log) however deep they are; they are confirmed when the signal moves past them."""
    from indexer import metrics

    s: Scene = scene_factory(56, 18)  # anvil: finalized = head - 64, so it stays at 0 for this short chain
    (k1,) = await s.register(s.accounts[1])
    evm.token_mint(s.anvil, s.usdt, s.deployer, k1.address, 5)
    evm.mine(s.anvil, 20)
    caplog.set_level(logging.INFO)
    watcher = await s.make_watcher(confirmations=5, finality_stall_s=0.3)
    await sync_to_head(watcher, s.head)
    assert await s.pool.fetchval("SELECT status FROM transactions") == "pending"  # the node says nothing is final
    assert metrics.FINALIZED_STALLED.labels("bsc")._value.get() == 0
    await asyncio.sleep(0.4)
    evm.mine(s.anvil, 1)
    await sync_to_head(watcher, s.head)
    assert metrics.FINALIZED_STALLED.labels("bsc")._value.get() == 1
    assert "finality signal stalled" in caplog.text
    # 20 blocks deep with CONFIRMATIONS = 5, but the chain did not say it is final: still pending
    assert await s.pool.fetchval("SELECT status FROM transactions") == "pending"
    assert await s.pool.fetchval("SELECT confirmations FROM transactions") >= 20
    evm.mine(s.anvil, 70)  # the finalized tag (head - 64) moves past the transfer
    await sync_to_head(watcher, s.head)
    assert await s.pool.fetchval("SELECT status FROM transactions") == "confirmed"
    assert metrics.FINALIZED_STALLED.labels("bsc")._value.get() == 0


async def test_cached_balances_are_refreshed_exactly_from_the_chain(scene_factory: Any) -> None:
    from indexer.sync.balances import BalanceRefresher

    s: Scene = scene_factory(137, 6)
    k1, k2 = await s.register(s.accounts[1], s.accounts[2])
    evm.token_mint(s.anvil, s.usdt, s.deployer, k1.address, 1_234_567)  # 1.234567 USDT
    evm.token_mint(s.anvil, s.usdc, s.deployer, k1.address, 5)  # 0.000005 USDC
    evm.token_mint(s.anvil, s.tst, s.deployer, k2.address, 10**18 + 1)
    watcher = await s.make_watcher()
    await sync_to_head(watcher, s.head)
    refresher = BalanceRefresher(watcher.view, watcher.writer)
    assert await refresher.refresh_once() == 2  # the first pass covers every wallet
    rows = {r["id"]: r for r in await s.pool.fetch("SELECT * FROM wallets")}
    assert rows[k1.id]["balance_usdt"] == Decimal("1.234567")
    assert rows[k1.id]["balance_usdc"] == Decimal("0.000005")
    assert rows[k1.id]["balance_usd"] == Decimal("1.23")
    assert rows[k2.id]["balance_tst"] == Decimal("1.000000000000000001")
    assert rows[k1.id]["balance_native"] == Decimal(evm.native_balance(s.anvil, k1.address)).scaleb(
        -18, context=Context(prec=100))
    assert rows[k1.id]["last_balance_sync"] is not None
    # later passes refresh only the wallets a new transfer touched
    evm.token_transfer(s.anvil, s.usdt, k1.address, k2.address, 1_000_000)
    await sync_to_head(watcher, s.head)
    assert await refresher.refresh_once() == 2
    assert await refresher.refresh_once() == 0
    assert await s.pool.fetchval("SELECT balance_usdt FROM wallets WHERE id = $1", k2.id) == Decimal("1")


async def test_the_watcher_survives_lost_database_connections(scene_factory: Any) -> None:
    """A restarting or scaled-to-zero database drops every pool connection: the watcher backs off, reconnects
    through the pool and carries on from its cursor. (The writer lease's own session is spared here: losing it
    stops the writer, tests/test_writer_fencing.py.)"""
    s: Scene = scene_factory(56, 18)
    (k1,) = await s.register(s.accounts[1])
    evm.token_mint(s.anvil, s.usdt, s.deployer, k1.address, 10**6)
    watcher = await s.make_watcher()
    task = asyncio.create_task(watcher.run())
    try:
        async def at_head() -> bool:
            return watcher.cursor >= s.head()

        from tests.support.sync import eventually

        await eventually(at_head, timeout_s=30)
        killer = await asyncpg.connect(s.db_url)
        terminated = 0
        for _ in range(3):  # keep killing while new blocks arrive
            evm.token_transfer(s.anvil, s.usdt, k1.address, s.accounts[9], 7)
            terminated += await killer.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                "AND application_name <> 'citadel-indexer lease'"
            )
            await asyncio.sleep(0.3)
        await killer.close()
        await eventually(at_head, timeout_s=60)
        assert not task.done()
        assert terminated > 0  # the watcher's connections really were cut (idle ones are replaced silently)
        await s.assert_table_matches_chain()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    # every connection the watcher took went back to the pool: the pool can still hand out all of them at once.
    # (asyncpg < 0.32 stranded a connection lost mid-protocol as "in use" forever, asyncpg #1307: one per outage,
    # until a months-long daemon starves)
    async with asyncio.timeout(10):
        taken = [await s.pool.acquire() for _ in range(s.pool.get_max_size())]
    for conn in taken:
        await s.pool.release(conn)



async def test_wallets_reowned_or_deleted_under_a_batch_never_stop_the_chain(scene_factory: Any) -> None:
    """Support re-assigns a wallet to another user, and deletes another, after the watcher read its wallets and
    before it commits (no notification reaches it in between): the batch is refused as a whole, the wallets are
    re-read and the batch rebuilt. Rows follow the wallet's new owner (docs/data-model.md); a deleted wallet's rows
    go with it. Before, the foreign key (wallet_id, user_id) crashed the chain's task."""
    s: Scene = scene_factory(56, 18)
    k1, k2, k3 = await s.register(*s.accounts[1:4])
    for k in (k1, k2, k3):
        evm.token_mint(s.anvil, s.usdt, s.deployer, k.address, 10**6)
    watcher = await s.make_watcher(wallet_poll_s=3600)  # no periodic reload: only the commit can tell
    task = asyncio.create_task(watcher.run())
    try:
        from tests.support.sync import eventually

        async def at_head() -> bool:
            return watcher.cursor >= s.head()

        await eventually(at_head, timeout_s=30)
        new_owner = await s.pool.fetchval(
            "INSERT INTO users (email, password_hash, username) VALUES ('new@example.com', 'x', 'newowner') "
            "RETURNING id")
        async with s.pool.acquire() as conn:  # the daemon's LISTEN is not running here: the watcher hears nothing
            await conn.execute("UPDATE wallets SET user_id = $1 WHERE id = $2", new_owner, k1.id)
            await conn.execute("DELETE FROM wallets WHERE id = $1", k3.id)
        s.wallets = [w for w in s.wallets if w.id != k3.id]
        evm.token_transfer(s.anvil, s.usdt, k1.address, k2.address, 11)  # rows for the re-owned wallet
        evm.token_transfer(s.anvil, s.usdt, k3.address, k2.address, 13)  # and for the deleted one
        await eventually(at_head, timeout_s=30)
        assert not task.done()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    await s.assert_table_matches_chain()
    owners = await s.pool.fetch("SELECT DISTINCT user_id FROM transactions WHERE wallet_id = $1", k1.id)
    assert [r["user_id"] for r in owners] == [new_owner]
    assert not await s.pool.fetchval("SELECT count(*) FROM transactions WHERE wallet_id = $1", k3.id)
    # the deleted wallet's transfer to k2 is still k2's deposit
    assert await s.pool.fetchval(
        "SELECT tx_type FROM transactions WHERE wallet_id = $1 AND amount_raw = 13", k2.id) == "deposit"


async def test_a_chain_whose_every_endpoint_fails_reports_itself_degraded_and_recovers(scene_factory: Any) -> None:
    """Every endpoint down for long: the chain keeps retrying (it never exits on its own) and says so
    (citadel_chain_degraded, /healthz "degraded"); it recovers by itself when an endpoint answers again."""
    from indexer import metrics
    from tests.support.faultproxy import FaultProxy, Faults
    from tests.support.sync import eventually

    s: Scene = scene_factory(56, 18)
    (k1,) = await s.register(s.accounts[1])
    evm.token_mint(s.anvil, s.usdt, s.deployer, k1.address, 5)
    async with FaultProxy(s.anvil.url, Faults()) as proxy:
        s.adapter = EvmAdapter(s.chain, [proxy.url], 56, timeout_s=0.5, max_attempts=2)
        watcher = await s.make_watcher(degraded_after_s=0.5, max_backoff_s=0.2)
        task = asyncio.create_task(watcher.run())
        try:
            async def at_head() -> bool:
                return watcher.cursor >= s.head()

            await eventually(at_head, timeout_s=30)
            await proxy.down()
            evm.token_transfer(s.anvil, s.usdt, k1.address, s.accounts[9], 1)

            async def degraded() -> bool:
                return watcher.degraded and metrics.CHAIN_DEGRADED.labels("bsc")._value.get() == 1

            await eventually(degraded, timeout_s=30)
            assert not task.done()
            await proxy.up()
            await eventually(at_head, timeout_s=30)
            assert not watcher.degraded and metrics.CHAIN_DEGRADED.labels("bsc")._value.get() == 0
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    await s.assert_table_matches_chain()


async def test_a_wallet_readdressed_under_a_running_watcher_is_indexed_for_its_new_address_only(
    scene_factory: Any,
) -> None:
    """Support corrects a wallet's address while the watcher runs (and hears nothing): the batch read for the old
    address is refused, the wallet's rows of the old address go (the other side of its p2p transfers becomes a
    deposit/withdrawal again), the new address's whole history is indexed. The table equals what the chain and the
    current wallets imply."""
    s: Scene = scene_factory(56, 18)
    k1, k2 = await s.register(*s.accounts[1:3])
    new_address = s.accounts[6]
    for a in (k1.address, k2.address, new_address):
        evm.token_mint(s.anvil, s.usdt, s.deployer, a, 10**6)
    evm.token_transfer(s.anvil, s.usdt, k1.address, k2.address, 21)  # p2p, to become k2's plain deposit
    evm.token_transfer(s.anvil, s.usdt, new_address, k2.address, 22)  # history of the new address: p2p later
    watcher = await s.make_watcher(wallet_poll_s=3600)  # no periodic reload: only the commit can tell
    task = asyncio.create_task(watcher.run())
    try:
        from tests.support.sync import eventually

        async def at_head() -> bool:
            return watcher.cursor >= s.head()

        await eventually(at_head, timeout_s=30)
        await s.pool.execute("UPDATE wallets SET public_address = $1 WHERE id = $2", evm.to_checksum(new_address),
                             k1.id)
        s.wallets[0] = KnownWallet(k1.id, k1.user_id, new_address)
        evm.token_transfer(s.anvil, s.usdt, k1.address, s.accounts[9], 23)  # the old address: no longer ours
        evm.token_transfer(s.anvil, s.usdt, s.accounts[9], new_address, 24)  # the new one
        await eventually(at_head, timeout_s=30)
        assert not task.done()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    await run_backfills(watcher, range_size=50)
    await s.assert_table_matches_chain()
    assert await s.pool.fetchval(
        "SELECT tx_type FROM transactions WHERE wallet_id = $1 AND amount_raw = 21", k2.id) == "deposit"


async def test_the_follow_loop_never_rebuilds_its_window_from_a_node_that_lacks_the_cursor_block(
    scene_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a window tip at the cursor, the watcher anchors a new window on the node's block at the cursor; a node
    behind answers null for it. That must be a retryable fault, not an empty window onto which any next block would
    be advanced without checking that it links to what is stored."""
    from chains.base import BlockNotAvailable
    from indexer.sync.window import ReorgWindow

    s: Scene = scene_factory(56, 18)
    (k1,) = await s.register(s.accounts[1])
    evm.token_mint(s.anvil, s.usdt, s.deployer, k1.address, 5)
    watcher = await s.make_watcher()
    await sync_to_head(watcher, s.head)
    evm.token_transfer(s.anvil, s.usdt, k1.address, s.accounts[9], 1)
    watcher.window = ReorgWindow()

    async def behind(number: int) -> None:
        return None

    monkeypatch.setattr(watcher.adapter, "block_ref", behind)
    cursor = watcher.cursor
    with pytest.raises(BlockNotAvailable):
        await watcher.step()
    assert watcher.cursor == cursor
    monkeypatch.undo()
    await sync_to_head(watcher, s.head)
    await s.assert_table_matches_chain()


async def test_guardian_alerts_at_the_head_and_expired_by_the_reorg_that_orphans_their_transfer(
    scene_factory: Any,
) -> None:
    from indexer.app import guardian_policy
    from indexer.config import load_settings

    s: Scene = scene_factory(56, 18)
    (k1,) = await s.register(s.accounts[1])
    whale = s.accounts[7]
    evm.token_mint(s.anvil, s.usdt, s.deployer, whale, 10**24)
    watcher = await s.make_watcher()
    watcher.writer.store.guardian = guardian_policy(load_settings(environ={}))
    await sync_to_head(watcher, s.head)
    below = evm.token_transfer(s.anvil, s.usdt, whale, k1.address, 9_999 * 10**18)
    large = evm.token_transfer(s.anvil, s.usdt, whale, k1.address, 25_000 * 10**18)
    await sync_to_head(watcher, s.head)
    checks = await s.pool.fetch("SELECT rule, tx_hash, status, context_data FROM guardian_checks")
    assert [(c["rule"], c["tx_hash"], c["status"]) for c in checks] == [("large_amount", large, "pending")]
    assert below not in {c["tx_hash"] for c in checks}
    evm.reorg(s.anvil, 1, [])  # the large deposit's block is replaced; its transaction is gone
    evm.mine(s.anvil, 1)
    await sync_to_head(watcher, s.head)
    expired = await s.pool.fetchrow("SELECT status, context_data FROM guardian_checks WHERE tx_hash = $1", large)
    assert expired["status"] == "expired" and "reorg" in expired["context_data"]
    await s.assert_table_matches_chain()


async def test_start_block_final_starts_at_the_final_block_and_a_restart_never_skips(scene_factory: Any) -> None:
    s: Scene = scene_factory(56, 18, extra_args=["--slots-in-an-epoch", "2"])  # finalized = head - 4
    (k1,) = await s.register(s.accounts[1])
    for i in range(10):
        evm.token_mint(s.anvil, s.usdt, s.deployer, k1.address, 1 + i)  # one block each
    first_final = s.head() - 4
    watcher = await s.make_watcher(start_block="final")
    await watcher.prepare()
    assert watcher.view.start_block == first_final
    assert await s.pool.fetchval("SELECT block_number FROM sync_cursors WHERE stream = 'start'") == first_final
    await sync_to_head(watcher, s.head)
    stored = {r["block_number"] for r in await s.pool.fetch("SELECT block_number FROM transactions")}
    assert stored and min(stored) >= first_final  # nothing before the start: no scan of years of history
    for i in range(12):  # while "down": the final block moves well past where the stream is
        evm.token_mint(s.anvil, s.usdt, s.deployer, k1.address, 100 + i)
    restarted = await s.make_watcher(start_block="final")
    await sync_to_head(restarted, s.head)
    assert restarted.view.start_block == first_final
    expected = [r for r in s.expected() if r[6] >= first_final]
    assert await actual_rows(s.pool, "bsc") == expected


async def test_wallet_history_from_none_and_from_a_block(scene_factory: Any) -> None:
    s: Scene = scene_factory(56, 18, extra_args=["--slots-in-an-epoch", "2"])
    (k1,) = await s.register(s.accounts[1])
    late, later = s.accounts[2], s.accounts[3]
    for a in (late, later):
        evm.token_mint(s.anvil, s.usdt, s.deployer, a, 5)  # history before they are known
    from_block = s.head() + 1
    for a in (late, later):
        evm.token_mint(s.anvil, s.usdt, s.deployer, a, 6)
    evm.mine(s.anvil, 6)
    for setting, address in (("none", late), (from_block, later)):
        watcher = await s.make_watcher(wallet_history_from=setting)
        await sync_to_head(watcher, s.head)
        (wallet,) = await s.register(address)
        watcher.wallet_changed.set()
        await sync_to_head(watcher, s.head)
        await run_backfills(watcher, range_size=50)
        blocks = sorted(r["block_number"] for r in await s.pool.fetch(
            "SELECT block_number FROM transactions WHERE wallet_id = $1", wallet.id))
        if setting == "none":
            assert blocks == []  # its history before it joined is not indexed
        else:
            assert blocks and min(blocks) >= from_block and len(blocks) == 1
