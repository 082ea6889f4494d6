"""Tron sync end to end: the Tron node simulator over real HTTP + a real PostgreSQL + the real adapter and watcher.

The expected table is computed in this file from the simulator's blocks (the same JSON a node serves), decoded with
tronpy's address helpers rather than the indexer's, so the two computations share no code.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
from tronpy.keys import to_base58check_address

from chains.base import ReorgTooDeep
from chains.tron.adapter import TronAdapter
from citadel_devtools.tron_simulator import Trc20Transfer, TronSimulator, TrxTransfer
from indexer.sync.watcher import ChainWatcher
from tests.fixtures.writer import WriterFactory
from tests.support.sync import (
    KnownWallet,
    actual_rows,
    add_wallet,
    run_backfills,
    sides_of,
    sync_to_head,
    watcher_config,
)

TRANSFER_TOPIC = "ddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"
API_KEY = "0b5e4c1d-7f1a-4c39-9d6e-secret-tron-key"


def _b58(hex_addr: str) -> str:
    return str(to_base58check_address(hex_addr if len(hex_addr) == 42 else "41" + hex_addr[-40:]))


def expected_tron_rows(sim: TronSimulator, wallets: list[KnownWallet], tokens: set[str]) -> list[Any]:
    """Rows for blocks 1..head, from the simulator's blocks: TRX TransferContract (log_index -1) and TRC20
    Transfer logs (log_index = position among all logs of the block); a reverted TRC20 transfer call from or to a
    known wallet is a failed row at the index its log would have had."""
    by_address = {w.address: w for w in wallets}
    rows = []

    for number in range(1, sim.head_number + 1):
        block = sim.block(number)
        log_position = 0
        for index, tx in enumerate(block.txs):
            contract = tx.tx["raw_data"]["contract"][0]
            value = contract["parameter"]["value"]
            ok = tx.tx.get("ret", [{}])[0].get("contractRet", "SUCCESS") == "SUCCESS"
            if contract["type"] == "TransferContract":
                frm, to = _b58(value["owner_address"]), _b58(value["to_address"])
                for wallet, kind in sides_of(frm, to, by_address):
                    rows.append((wallet.id, tx.txid, -1, kind, value.get("amount", 0), None, number, block.block_id,
                                 "ok" if ok else "failed"))
            logs = tx.info.get("log", [])
            token = _b58(tx.info["contract_address"]) if "contract_address" in tx.info else None
            if not ok and token in tokens and value.get("data", "").startswith("a9059cbb"):
                data = value["data"]
                frm, to, amount = _b58(value["owner_address"]), _b58(data[8:72][-40:]), int(data[72:136], 16)
                for wallet, kind in sides_of(frm, to, by_address):
                    rows.append((wallet.id, tx.txid, log_position, kind, amount, token, number, block.block_id,
                                 "failed"))
            for log in logs:
                emitter = _b58(log["address"])
                topics = log.get("topics", [])
                if emitter in tokens and len(topics) == 3 and topics[0] == TRANSFER_TOPIC and len(log["data"]) >= 64:
                    frm, to = _b58(topics[1][-40:]), _b58(topics[2][-40:])
                    for wallet, kind in sides_of(frm, to, by_address):
                        rows.append((wallet.id, tx.txid, log_position, kind, int(log["data"][:64], 16), emitter,
                                     number, block.block_id, "ok"))
                log_position += 1
            del index
    return sorted(rows)


class TronScene:
    def __init__(self, sim: TronSimulator, pool: asyncpg.Pool, writers: WriterFactory) -> None:
        self.writers = writers
        self.sim = sim
        self.pool = pool
        self.usdt = sim.deploy_trc20("USDT", 6)
        self.unknown = sim.deploy_trc20("SCAM", 6)
        self.tokens = {"USDT": self.usdt}
        self.people = [sim.new_address() for _ in range(6)]
        for person in self.people:
            sim.fund(person, 10_000 * 10**6)
            sim.mint(self.usdt, person, 10**12)
            sim.mint(self.unknown, person, 10**12)
        self.wallets: list[KnownWallet] = []
        self.adapter = TronAdapter([sim.url], api_key=API_KEY, request_timeout_s=2, backoff_base_s=0.01,
                                   backoff_cap_s=0.05, cooldown_s=0.05, max_retries=8)

    async def register(self, *addresses: str) -> list[KnownWallet]:
        added = [await add_wallet(self.pool, "tron", a) for a in addresses]
        self.wallets.extend(added)
        return added

    async def watcher(self, **overrides: Any) -> ChainWatcher:
        settings: dict[str, Any] = {"confirmations": 19, "catchup_range": 30, "follow_batch": 10, **overrides}
        return ChainWatcher(self.adapter, await self.writers("tron"), watcher_config(self.tokens, **settings))

    def head(self) -> int:
        return self.sim.head_number

    async def assert_table_matches_chain(self) -> None:
        expected = expected_tron_rows(self.sim, self.wallets, set(self.tokens.values()))
        assert await actual_rows(self.pool, "tron") == expected


@pytest_asyncio.fixture
async def scene(pool: asyncpg.Pool, writer_factory: WriterFactory) -> AsyncIterator[TronScene]:
    async with TronSimulator(api_key=API_KEY) as sim:
        s = TronScene(sim, pool, writer_factory)
        sim.produce_block()
        yield s
        await s.adapter.aclose()


def mixed_history(s: TronScene) -> None:
    k1, k2, k3, out1, out2 = s.people[0], s.people[1], s.people[2], s.people[4], s.people[5]
    sim = s.sim
    sim.transfer_trx(out1, k1, 5 * 10**6)  # TRX deposit
    sim.transfer_trx(k2, out2, 10**6)  # TRX withdrawal
    sim.transfer_trx(k1, k3, 7)  # TRX p2p
    sim.produce_block()
    sim.transfer_trc20(s.usdt, out1, k1, 1_000_000)  # TRC20 deposit
    sim.transfer_trc20(s.usdt, k1, out2, 250_000)  # TRC20 withdrawal
    sim.transfer_trc20(s.usdt, k2, k3, 42)  # TRC20 p2p
    sim.submit(Trc20Transfer(s.usdt, out1, k2, 77, pad_with_41=True))  # 41 byte in the word's padding
    sim.transfer_trc20(s.usdt, k3, out1, 5, revert=True)  # reverted TRC20 call
    sim.transfer_trc20(s.unknown, out1, k1, 999)  # unknown token: ignored
    sim.produce_blocks(2)
    sim.submit(TrxTransfer(out2, k2, 123))
    sim.produce_blocks(25)


async def test_mixed_history_ends_equal_to_the_chain(scene: TronScene) -> None:
    await scene.register(*scene.people[:3])
    mixed_history(scene)
    watcher = await scene.watcher()
    await sync_to_head(watcher, scene.head)
    await scene.assert_table_matches_chain()
    rows = await scene.pool.fetch("SELECT * FROM transactions WHERE chain = 'tron'")
    kinds = {(r["token"], r["tx_type"], r["status"]) for r in rows}
    assert ("TRX", "deposit", "confirmed") in kinds and ("USDT", "p2p_transfer", "confirmed") in kinds
    assert any(r["status"] == "failed" and r["token"] == "USDT" for r in rows)
    assert not [r for r in rows if r["token_address"] == scene.unknown]
    assert all(r["from_address"].startswith("T") and r["to_address"].startswith("T") for r in rows)
    pending = [r for r in rows if r["block_number"] > scene.sim.solid_number]
    assert all(r["status"] in ("pending", "failed") for r in pending)


async def test_with_native_transfers_off_trx_transfers_are_left_out(scene: TronScene) -> None:
    await scene.register(*scene.people[:3])
    mixed_history(scene)
    await sync_to_head(await scene.watcher(native_transfers=False), scene.head)
    everything = expected_tron_rows(scene.sim, scene.wallets, set(scene.tokens.values()))
    assert any(r[5] is None for r in everything)  # the history has TRX transfers to leave out
    assert await actual_rows(scene.pool, "tron") == [r for r in everything if r[5] is not None]


@pytest.mark.parametrize("depth", [1, 5, 18])
async def test_forks_during_realtime_leave_the_table_equal_to_the_canonical_chain(
    scene: TronScene, depth: int
) -> None:
    k1, k2 = scene.people[0], scene.people[1]
    await scene.register(k1, k2)
    scene.sim.produce_blocks(20)
    watcher = await scene.watcher()
    await sync_to_head(watcher, scene.head)
    scene.sim.transfer_trc20(scene.usdt, k1, k2, 11)  # will be dropped
    scene.sim.transfer_trx(k2, k1, 22)  # will move to another block
    scene.sim.produce_blocks(depth)
    await sync_to_head(watcher, scene.head)
    before = await actual_rows(scene.pool, "tron")
    assert any(r[4] == 11 for r in before)
    scene.sim.fork(depth, [TrxTransfer(k2, k1, 22)], new_blocks=depth + 1)
    await sync_to_head(watcher, scene.head)
    await scene.assert_table_matches_chain()
    after = await actual_rows(scene.pool, "tron")
    assert not any(r[4] == 11 for r in after) and sum(r[4] == 22 for r in after) == 2


async def test_a_fork_below_the_solidified_block_stops_loudly(scene: TronScene) -> None:
    await scene.register(scene.people[0])
    scene.sim.transfer_trx(scene.people[3], scene.people[0], 5)
    scene.sim.produce_blocks(5)
    watcher = await scene.watcher()
    await sync_to_head(watcher, scene.head)
    before = await actual_rows(scene.pool, "tron")
    scene.sim.fork(25, force=True)
    with pytest.raises(ReorgTooDeep):
        await sync_to_head(watcher, scene.head)
    assert await actual_rows(scene.pool, "tron") == before


async def test_a_tron_wallet_inserted_while_running_is_indexed_with_history(scene: TronScene) -> None:
    k1, late, out = scene.people[0], scene.people[1], scene.people[4]
    await scene.register(k1)
    scene.sim.transfer_trc20(scene.usdt, out, late, 500)  # before the wallet is known: final
    scene.sim.transfer_trx(late, k1, 9)
    scene.sim.produce_blocks(30)
    watcher = await scene.watcher()
    await sync_to_head(watcher, scene.head)
    scene.sim.transfer_trc20(scene.usdt, late, out, 3)  # not yet final
    scene.sim.produce_blocks(3)
    await sync_to_head(watcher, scene.head)
    await scene.register(late)
    watcher.wallet_changed.set()
    await sync_to_head(watcher, scene.head)
    await run_backfills(watcher, range_size=11)
    await scene.assert_table_matches_chain()


async def test_injected_faults_slow_the_sync_but_never_change_the_result(
    scene: TronScene, caplog: pytest.LogCaptureFixture
) -> None:
    await scene.register(*scene.people[:3])
    mixed_history(scene)
    for kind in ("lack_of_resources", "frequency_limit_body", "http_403", "http_429", "http_503", "http_500",
                 "truncated"):
        scene.sim.faults.add(kind, probability=0.04)  # type: ignore[arg-type]
    caplog.set_level(logging.DEBUG)
    watcher = await scene.watcher()
    await sync_to_head(watcher, scene.head, timeout_s=120)
    scene.sim.faults.clear()
    await scene.assert_table_matches_chain()
    assert sum(scene.sim.faults.injected.values()) >= 10
    # the API key went to this (non-trongrid) host on every request and never into a log line
    assert all(r.api_key == API_KEY for r in scene.sim.requests)
    assert API_KEY not in caplog.text
    assert all(API_KEY not in str(r.__dict__) for r in caplog.records)
