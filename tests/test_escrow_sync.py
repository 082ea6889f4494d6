"""Escrow lock/release followed end to end by the watcher, on the Tron simulator (java-tron's wire format) and a real
PostgreSQL: the agreement, the escrow rows and the audit trail are compared with an independent computation from
the canonical chain's events, through a reorg that orphans a release and re-mines it elsewhere."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import asyncpg
import pytest_asyncio

from chains.base import LOCKED_TOPIC, RELEASED_TOPIC
from chains.tron.adapter import TronAdapter
from chains.tron.address import to_base58, to_hex20
from citadel_devtools.tron_simulator import TronSimulator
from indexer.sync.watcher import ChainWatcher
from tests.fixtures.writer import WriterFactory
from tests.support.sync import add_wallet, sync_to_head, watcher_config

TRANSFER = "ddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"


def word(value: int | str) -> str:
    if isinstance(value, str):
        return "0" * 24 + to_hex20(value)
    return f"{value:064x}"


def token_transfer_log(token: str, frm: str, to: str, amount: int) -> dict[str, Any]:
    return {"address": to_hex20(token), "topics": [TRANSFER, word(frm), word(to)], "data": word(amount)}


def locked_log(escrow: str, agreement: int, lender: str, borrower: str, token: str, amount: int) -> dict[str, Any]:
    return {"address": to_hex20(escrow), "topics": [LOCKED_TOPIC[2:], word(agreement), word(lender), word(borrower)],
            "data": word(token) + word(amount)}


def released_log(escrow: str, agreement: int, to: str, token: str, amount: int) -> dict[str, Any]:
    return {"address": to_hex20(escrow), "topics": [RELEASED_TOPIC[2:], word(agreement), word(to)],
            "data": word(token) + word(amount)}


class EscrowScene:
    def __init__(self, sim: TronSimulator, pool: asyncpg.Pool, writers: WriterFactory) -> None:
        self.sim, self.pool, self.writers = sim, pool, writers
        self.usdt = sim.deploy_trc20("USDT", 6)
        self.escrow = to_base58(bytes.fromhex("5e" * 20))
        self.lender, self.borrower, self.outsider = sim.new_address(), sim.new_address(), sim.new_address()
        self.adapter = TronAdapter([sim.url], request_timeout_s=2, backoff_base_s=0.01, backoff_cap_s=0.05,
                                   cooldown_s=0.05, max_retries=8)

    async def watcher(self) -> ChainWatcher:
        cfg = watcher_config({"USDT": self.usdt}, confirmations=19, catchup_range=30, follow_batch=10,
                             escrow_contract=self.escrow)
        return ChainWatcher(self.adapter, await self.writers("tron"), cfg)

    async def agreement(self, principal: str) -> int:
        lender = await self.pool.fetchval("SELECT user_id FROM wallets WHERE public_address = $1", self.lender)
        borrower = await self.pool.fetchval("SELECT user_id FROM wallets WHERE public_address = $1", self.borrower)
        return int(await self.pool.fetchval(
            """INSERT INTO p2p_agreements (lender_id, borrower_id, principal_amount, interest_rate, duration_days,
                   token, chain, token_address) VALUES ($1, $2, $3, 5, 30, 'USDT', 'tron', $4) RETURNING id""",
            lender, borrower, Decimal(principal), self.usdt))

    def lock(self, agreement: int, amount: int) -> str:
        return self.sim.emit_logs(self.escrow, self.lender, [
            token_transfer_log(self.usdt, self.lender, self.escrow, amount),
            locked_log(self.escrow, agreement, self.lender, self.borrower, self.usdt, amount)])

    def release(self, agreement: int, to: str, amount: int) -> str:
        return self.sim.emit_logs(self.escrow, self.outsider, [
            token_transfer_log(self.usdt, self.escrow, to, amount),
            released_log(self.escrow, agreement, to, self.usdt, amount)])


@pytest_asyncio.fixture
async def scene(pool: asyncpg.Pool, writer_factory: WriterFactory) -> AsyncIterator[EscrowScene]:
    async with TronSimulator() as sim:
        s = EscrowScene(sim, pool, writer_factory)
        sim.produce_block()
        yield s
        await s.adapter.aclose()


def canonical_events(sim: TronSimulator, escrow: str) -> list[tuple[str, int, str, int, str, int]]:
    """(kind, agreement, party, amount, tx, block) of the escrow's events on the simulator's canonical chain,
    read from its blocks directly."""
    out = []
    for number in range(1, sim.head_number + 1):
        for tx in sim.block(number).txs:
            for log in tx.info.get("log", []):
                if log["address"] != to_hex20(escrow):
                    continue
                kind = "locked" if log["topics"][0] == LOCKED_TOPIC[2:] else "released"
                out.append((kind, int(log["topics"][1], 16), to_base58(log["topics"][2][-40:]),
                            int(log["data"][64:], 16), tx.txid, number))
    return out


def expected_agreement(events: list[tuple[str, int, str, int, str, int]], agreement: int, principal_raw: int,
                       lender: str) -> tuple[str, str | None, str | None]:
    """(status, escrow tx, repay tx), by the README's rules, written independently of indexer.escrow."""
    status, lock_tx, repay_tx = "pending", None, None
    for kind, agreement_id, party, amount, tx, _block in events:
        if agreement_id != agreement:
            continue
        if kind == "locked" and status == "pending" and amount == principal_raw:
            status, lock_tx = "active", tx
        elif kind == "released" and status == "active" and party == lender:
            status, repay_tx = "completed", tx
    return status, lock_tx, repay_tx


async def test_tron_escrow_lock_release_and_a_reorg_end_equal_to_the_chain(scene: EscrowScene) -> None:
    s, sim = scene, scene.sim
    for address in (s.lender, s.borrower):
        await add_wallet(s.pool, "tron", address)
    good = await s.agreement("100.5")
    short = await s.agreement("7")
    s.lock(good, 100_500_000)
    s.lock(short, 6_999_999)  # wrong amount: rejected
    s.lock(987_654, 1)  # no such agreement: rejected
    sim.produce_blocks(3)
    watcher = await s.watcher()
    await sync_to_head(watcher, lambda: sim.head_number)
    s.release(good, s.borrower, 100_500_000)  # disbursed: still active
    sim.produce_block()
    s.release(good, s.lender, 105_000_000)  # repaid: completed
    sim.produce_blocks(2)
    await sync_to_head(watcher, lambda: sim.head_number)
    row = await s.pool.fetchrow("SELECT * FROM p2p_agreements WHERE id = $1", good)
    assert (row["status"], row["repayment_amount"]) == ("completed", Decimal("105"))
    # a reorg orphans the repayment (and the block after it), then it is mined again in another block
    sim.fork(2)
    sim.produce_block()
    await sync_to_head(watcher, lambda: sim.head_number)
    assert (await s.pool.fetchrow("SELECT * FROM p2p_agreements WHERE id = $1", good))["status"] == "active"
    s.release(good, s.lender, 105_000_000)
    sim.produce_blocks(2)
    await sync_to_head(watcher, lambda: sim.head_number)

    events = canonical_events(sim, s.escrow)
    for agreement, principal_raw in ((good, 100_500_000), (short, 7_000_000)):
        status, lock_tx, repay_tx = expected_agreement(events, agreement, principal_raw, s.lender)
        row = await s.pool.fetchrow("SELECT * FROM p2p_agreements WHERE id = $1", agreement)
        assert (row["status"], row["escrow_tx_hash"], row["repay_tx_hash"]) == (status, lock_tx, repay_tx)
    stored = sorted((r["tx_type"], r["tx_hash"], int(r["amount_raw"])) for r in await s.pool.fetch(
        "SELECT tx_type, tx_hash, amount_raw FROM transactions WHERE agreement_id IS NOT NULL"))
    applied = [e for e in events if e[1] == good]
    assert stored == sorted(("escrow_lock" if k == "locked" else "escrow_release", tx, amount)
                            for k, _, _, amount, tx, _ in applied)
    recorded = {(r["tx_hash"], r["effect"] is not None) for r in await s.pool.fetch("SELECT * FROM escrow_events")}
    assert recorded == {(tx, agreement == good) for _, agreement, _, _, tx, _ in events}
    audit = [r["action_type"] for r in await s.pool.fetch("SELECT action_type FROM audit_trail")]
    assert audit.count("escrow_event_rejected") == 2 and audit.count("escrow_event_orphaned") == 1
    # the lender's own token transfer into the escrow is indexed as always, beside the escrow_lock row
    lock_tx = await s.pool.fetchval("SELECT escrow_tx_hash FROM p2p_agreements WHERE id = $1", good)
    kinds = sorted(r["tx_type"] for r in await s.pool.fetch(
        "SELECT tx_type FROM transactions WHERE tx_hash = $1", lock_tx))
    assert kinds == ["escrow_lock", "withdrawal"]


async def test_tron_escrow_through_kill9_mid_catch_up_changes_nothing(
    pool: asyncpg.Pool, db_url: str, writer_factory: WriterFactory, tmp_path: Any
) -> None:
    """The daemon killed with SIGKILL while it catches up through 60 escrow events: after a restart every agreement,
    escrow row and audit entry is there exactly once, as the chain's events imply."""
    import json
    import os

    from tests.support.daemon import Daemon
    from tests.support.sync import eventually

    async with TronSimulator() as sim:
        s = EscrowScene(sim, pool, writer_factory)
        await s.adapter.aclose()
        for address in (s.lender, s.borrower):
            await add_wallet(pool, "tron", address)
        agreements = [await s.agreement("10") for _ in range(30)]
        for i, agreement in enumerate(agreements):
            s.lock(agreement, 10_000_000 if i % 5 else 9_000_000)  # every fifth: wrong amount
            sim.produce_block()
            if i % 3 == 0:
                s.release(agreement, s.lender, 11_000_000)
                sim.produce_block()
        env = {k: v for k, v in os.environ.items() if not k.startswith("CITADEL_")}
        env.update({
            "CITADEL_DATABASE_URL": db_url,
            "CITADEL_TRON__ENABLED": "true", "CITADEL_TRON__START_BLOCK": "0", "CITADEL_TRON__RPC_URLS": json.dumps([sim.url]),
            "CITADEL_TRON__TOKENS": json.dumps({"USDT": s.usdt}), "CITADEL_TRON__ESCROW_CONTRACT": s.escrow,
            "CITADEL_TRON__POLL_INTERVAL_S": "0.1", "CITADEL_TRON__MAX_BLOCK_RANGE": "2",
            "CITADEL_TRON__CATCHUP_BATCH_BLOCKS": "2", "CITADEL_METRICS_PORT": "0",
        })

        async def cursor_at(block: int) -> bool:
            value = await pool.fetchval(
                "SELECT block_number FROM sync_cursors WHERE chain = 'tron' AND stream = 'realtime'")
            return value is not None and value >= block

        first = Daemon(env, tmp_path / "escrow1.log")
        first.start()
        try:
            await eventually(lambda: cursor_at(15), timeout_s=60)
            await asyncio.to_thread(first.kill9)
            assert not await cursor_at(sim.head_number - 5), "the kill should land during catch-up"
            second = Daemon(env, tmp_path / "escrow2.log")
            second.start()
            try:
                await eventually(lambda: cursor_at(sim.head_number), timeout_s=90)
            finally:
                assert await asyncio.to_thread(second.stop) == 0  # the simulator serves from this event loop
        finally:
            if first.proc is not None and first.proc.poll() is None:
                first.proc.kill()
        events = canonical_events(sim, s.escrow)
        for agreement in agreements:
            status, lock_tx, repay_tx = expected_agreement(events, agreement, 10_000_000, s.lender)
            row = await pool.fetchrow("SELECT * FROM p2p_agreements WHERE id = $1", agreement)
            assert (row["status"], row["escrow_tx_hash"], row["repay_tx_hash"]) == (status, lock_tx, repay_tx)
        assert await pool.fetchval("SELECT count(*) FROM escrow_events") == len(events)
        per_event = await pool.fetchval(
            "SELECT count(*) FROM audit_trail WHERE action_type LIKE 'escrow_%' AND action_type <> 'escrow_event_orphaned'")
        assert per_event == len(events)  # one entry per event: none lost, none twice
        rows = await pool.fetchval("SELECT count(*) FROM transactions WHERE agreement_id IS NOT NULL")
        assert rows == await pool.fetchval("SELECT count(*) FROM escrow_events WHERE effect IS NOT NULL")

