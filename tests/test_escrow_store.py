"""Escrow events through the store's write transaction, on a real PostgreSQL: agreements, escrow rows, audit trail,
reorgs and replays."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import asyncpg

from chains.base import EscrowEvent
from indexer.model import Batch
from tests.fixtures.writer import WriterFactory
from tests.support.sync import add_wallet

TOKEN = "0x" + "7" * 40
ESCROW = "0x" + "e" * 40
LENDER, BORROWER, STRANGER = "0x" + "a" * 40, "0x" + "b" * 40, "0x" + "c" * 40
T0 = 1_760_000_000


async def setup(pool: asyncpg.Pool) -> dict[str, Any]:
    lender = await add_wallet(pool, "bsc", LENDER)
    borrower = await add_wallet(pool, "bsc", BORROWER)
    await pool.execute("INSERT INTO tokens (chain, contract_address, symbol, decimals) VALUES ('bsc', $1, 'USDT', 6)",
                       TOKEN)
    agreement = await pool.fetchval(
        """INSERT INTO p2p_agreements (lender_id, borrower_id, principal_amount, interest_rate, duration_days, token,
               chain, token_address) VALUES ($1, $2, 250.5, 5, 30, 'USDT', 'bsc', $3) RETURNING id""",
        lender.user_id, borrower.user_id, TOKEN)
    return {"lender": lender, "borrower": borrower, "agreement": agreement}


def event(kind: str, agreement: int, party: str, amount: int, block: int, *, counterparty: str | None = None,
          log: int = 1) -> EscrowEvent:
    return EscrowEvent(kind, agreement, f"0x{block:062x}{log:02x}", log, block, f"0x{block:064x}", 0, ESCROW, party,
                       counterparty, TOKEN, amount, T0 + block)


async def agreement_row(pool: asyncpg.Pool, agreement: int) -> Any:
    return await pool.fetchrow("SELECT * FROM p2p_agreements WHERE id = $1", agreement)


async def test_lock_then_repayment_drive_the_agreement_with_rows_and_audit(
    pool: asyncpg.Pool, writer_factory: WriterFactory
) -> None:
    s = await setup(pool)
    store = (await writer_factory("bsc")).store
    lock = event("locked", s["agreement"], LENDER, 250_500_000, 10, counterparty=BORROWER)
    result = await store.commit(Batch(stream="realtime", escrow=[lock], head=12, final=11))
    assert (result.escrow_applied, result.escrow_rejected) == (1, 0)
    a = await agreement_row(pool, s["agreement"])
    assert a["status"] == "active" and a["escrow_tx_hash"] == lock.tx_hash and a["escrow_address"] == ESCROW
    assert a["funded_at"].timestamp() == T0 + 10
    assert (a["maturity_date"] - a["funded_at"]).days == 30
    row = await pool.fetchrow("SELECT * FROM transactions WHERE tx_hash = $1", lock.tx_hash)
    assert (row["tx_type"], row["agreement_id"], row["wallet_id"]) == ("escrow_lock", s["agreement"], s["lender"].id)
    assert (row["amount"], row["from_address"], row["to_address"]) == (Decimal("250.5"), LENDER, ESCROW)
    assert row["status"] == "confirmed"
    disburse = event("released", s["agreement"], BORROWER, 250_500_000, 13)
    repay = event("released", s["agreement"], LENDER, 260_000_000, 20)
    await store.commit(Batch(stream="realtime", escrow=[disburse, repay], head=25, final=15))
    a = await agreement_row(pool, s["agreement"])
    assert a["status"] == "completed" and a["repayment_amount"] == Decimal("260")
    assert a["repay_tx_hash"] == repay.tx_hash and a["settled_at"].timestamp() == T0 + 20
    kinds = [r["tx_type"] for r in await pool.fetch(
        "SELECT tx_type FROM transactions WHERE agreement_id = $1 ORDER BY block_number", s["agreement"])]
    assert kinds == ["escrow_lock", "escrow_release", "escrow_release"]
    actions = [r["action_type"] for r in await pool.fetch("SELECT action_type FROM audit_trail ORDER BY id")]
    assert actions.count("escrow_lock") == 1 and actions.count("escrow_repay") == 1
    assert actions.count("escrow_disburse") == 1 and "agreement_updated_from_chain" in actions
    # a replay changes nothing: no new row, no new audit entry
    before = await pool.fetchval("SELECT count(*) FROM audit_trail")
    again = await store.commit(Batch(stream="realtime", escrow=[lock, disburse, repay], head=25, final=15))
    assert (again.escrow_applied, again.escrow_rejected) == (0, 0)
    assert await pool.fetchval("SELECT count(*) FROM audit_trail") == before


async def test_mismatching_events_change_no_agreement_and_are_audited(
    pool: asyncpg.Pool, writer_factory: WriterFactory
) -> None:
    s = await setup(pool)
    store = (await writer_factory("bsc")).store
    bad = [
        event("locked", s["agreement"], LENDER, 250_000_000, 10, counterparty=BORROWER),  # wrong amount
        event("locked", s["agreement"], STRANGER, 250_500_000, 11, counterparty=BORROWER),  # wrong lender
        event("locked", 999_999, LENDER, 250_500_000, 12, counterparty=BORROWER),  # unknown agreement
        event("locked", 2**200, LENDER, 250_500_000, 13, counterparty=BORROWER),  # not even a bigint
        event("released", s["agreement"], LENDER, 1, 14),  # nothing locked yet
    ]
    result = await store.commit(Batch(stream="realtime", escrow=bad, head=20, final=20))
    assert (result.escrow_applied, result.escrow_rejected) == (0, 5)
    assert (await agreement_row(pool, s["agreement"]))["status"] == "pending"
    assert await pool.fetchval("SELECT count(*) FROM transactions") == 0
    reasons = [r["reason"] for r in await pool.fetch("SELECT reason FROM escrow_events ORDER BY block_number")]
    assert "amount" in reasons[0] and "lender" in reasons[1] and "no agreement" in reasons[2]
    assert "no agreement" in reasons[3] and "not active" in reasons[4]
    audit = await pool.fetch("SELECT * FROM audit_trail WHERE action_type = 'escrow_event_rejected'")
    assert len(audit) == 5 and all("rejected" in r["description"] for r in audit)


async def test_a_reorg_undoes_exactly_what_the_orphaned_events_did(
    pool: asyncpg.Pool, writer_factory: WriterFactory
) -> None:
    s = await setup(pool)
    store = (await writer_factory("bsc")).store
    lock = event("locked", s["agreement"], LENDER, 250_500_000, 10, counterparty=BORROWER)
    repay = event("released", s["agreement"], LENDER, 260_000_000, 20)
    await store.commit(Batch(stream="realtime", escrow=[lock, repay], head=25, final=5))
    assert (await agreement_row(pool, s["agreement"]))["status"] == "completed"
    result = await store.commit(Batch(stream="realtime", rollback_to=15, head=25, final=5))
    assert result.escrow_orphaned == 1
    a = await agreement_row(pool, s["agreement"])
    assert a["status"] == "active" and a["settled_at"] is None and a["repay_tx_hash"] is None
    assert a["escrow_tx_hash"] == lock.tx_hash
    await store.commit(Batch(stream="realtime", rollback_to=5, head=25, final=5))
    a = await agreement_row(pool, s["agreement"])
    assert a["status"] == "pending" and a["funded_at"] is None and a["escrow_address"] is None
    assert await pool.fetchval("SELECT count(*) FROM transactions") == 0
    assert await pool.fetchval("SELECT count(*) FROM audit_trail WHERE action_type = 'escrow_event_orphaned'") == 2
    # re-mined in another block: applied again
    moved = lock._replace(block_number=7, block_hash="0x" + "f" * 64, block_timestamp=T0 + 7)
    await store.commit(Batch(stream="realtime", escrow=[moved], head=25, final=5))
    a = await agreement_row(pool, s["agreement"])
    assert a["status"] == "active" and a["funded_at"].timestamp() == T0 + 7


async def test_a_cancelled_or_disputed_agreement_keeps_the_platforms_status(
    pool: asyncpg.Pool, writer_factory: WriterFactory
) -> None:
    s = await setup(pool)
    store = (await writer_factory("bsc")).store
    await pool.execute("UPDATE p2p_agreements SET status = 'cancelled' WHERE id = $1", s["agreement"])
    lock = event("locked", s["agreement"], LENDER, 250_500_000, 10, counterparty=BORROWER)
    result = await store.commit(Batch(stream="realtime", escrow=[lock], head=25, final=5))
    assert result.escrow_rejected == 1 and (await agreement_row(pool, s["agreement"]))["status"] == "cancelled"
    await pool.execute("UPDATE p2p_agreements SET status = 'disputed' WHERE id = $1", s["agreement"])
    await store.commit(Batch(stream="realtime", rollback_to=5, head=25, final=5))
    relock = lock._replace(tx_hash="0x" + "d" * 64, block_number=11)
    result = await store.commit(Batch(stream="realtime", escrow=[relock], head=25, final=5))
    a = await agreement_row(pool, s["agreement"])
    assert result.escrow_applied == 1 and a["status"] == "disputed" and a["escrow_tx_hash"] == relock.tx_hash
