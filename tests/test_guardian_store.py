"""Guardian alerts raised in the transaction that writes the transfers, on a real PostgreSQL: each rule once per
(rule, transaction, wallet), history from the table, expiry and revival across reorgs."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

import asyncpg

from chains.base import Transfer
from indexer.app import guardian_policy
from indexer.config import load_settings
from indexer.model import Batch, TokenMeta, WalletRef, transfer_rows
from indexer.store.chain_store import ChainStore
from tests.fixtures.writer import WriterFactory
from tests.support.sync import add_wallet

TOKEN = "0x" + "7" * 40
ME, HOT = "0x" + "a" * 40, "0x" + "9" * 40
FRIEND = "0x1234" + "5" * 32 + "cdef"
IMPOSTOR = "0x1234" + "6" * 32 + "cdef"
OTHER = "0x" + "b" * 40
NOW = int(time.time())
TOKENS = {TOKEN: TokenMeta(TOKEN, "USDT", 6, Decimal("1.00"))}


def transfer(frm: str, to: str, usd: int, block: int, *, log: int = 0, minutes_ago: int = 1) -> Transfer:
    return Transfer(f"0x{block:060x}{log:04x}", log, block, f"0x{block:064x}", 0, frm, to, usd * 10**6, TOKEN,
                    NOW - minutes_ago * 60)


async def guarded_store(pool: asyncpg.Pool, writers: WriterFactory) -> tuple[ChainStore, dict[str, WalletRef]]:
    me = await add_wallet(pool, "bsc", ME)
    hot = await add_wallet(pool, "bsc", HOT, wallet_type="hot_wallet")
    store = (await writers("bsc")).store
    store.guardian = guardian_policy(load_settings(environ={}))  # the default rules
    return store, {ME: WalletRef(me.id, me.user_id, ME), HOT: WalletRef(hot.id, hot.user_id, HOT)}


async def commit(store: ChainStore, wallets: dict[str, WalletRef], transfers: list[Transfer], **batch: Any) -> Any:
    rows = transfer_rows(transfers, wallets, TOKENS, chain="bsc", head_number=10_000, final_number=0)
    return await store.commit(Batch(stream="realtime", rows=rows, **batch))


async def alerts(pool: asyncpg.Pool) -> list[tuple[str, str, str]]:
    rows = await pool.fetch("SELECT rule, tx_hash, status FROM guardian_checks ORDER BY block_number, rule")
    return [(r["rule"], r["tx_hash"], r["status"]) for r in rows]


async def test_each_rule_raises_once_on_its_case_and_never_on_its_lookalike(
    pool: asyncpg.Pool, writer_factory: WriterFactory
) -> None:
    store, wallets = await guarded_store(pool, writer_factory)
    sent_before = transfer(ME, FRIEND, 5, 100, minutes_ago=600)  # long ago, within a day
    await commit(store, wallets, [sent_before])
    await pool.execute("DELETE FROM guardian_checks")  # what that first withdrawal raised is not under test here
    large_in = transfer(OTHER, ME, 10_000, 101)
    below = transfer(OTHER, ME, 9_999, 102)
    again_to_friend = transfer(ME, FRIEND, 3, 103)
    poison = transfer(IMPOSTOR, ME, 0, 104)
    genuine_dust = transfer(FRIEND, ME, 0, 105)
    stolen = transfer(HOT, OTHER, 7, 106)
    result = await commit(store, wallets, [large_in, below, again_to_friend, poison, genuine_dust, stolen])
    assert result.alerts_raised == {"large_amount": 1, "address_poisoning": 1, "unexpected_outgoing": 1}
    assert await alerts(pool) == [("large_amount", large_in.tx_hash, "pending"),
                                  ("address_poisoning", poison.tx_hash, "pending"),
                                  ("unexpected_outgoing", stolen.tx_hash, "pending")]
    check = await pool.fetchrow("SELECT * FROM guardian_checks WHERE rule = 'address_poisoning'")
    assert check["alert_type"] == "custom" and check["risk_score"] == Decimal(75)
    assert check["user_id"] == wallets[ME].user_id and check["wallet_id"] == wallets[ME].id
    assert FRIEND in check["description"] and IMPOSTOR in check["description"]
    # replaying the block raises nothing twice
    again = await commit(store, wallets, [large_in, below, again_to_friend, poison, genuine_dust, stolen])
    assert again.alerts_raised == {} and len(await alerts(pool)) == 3


async def test_new_address_and_rapid_transactions_count_this_batch_and_the_table(
    pool: asyncpg.Pool, writer_factory: WriterFactory
) -> None:
    store, wallets = await guarded_store(pool, writer_factory)
    first = [transfer(ME, OTHER, 1, 200 + i, minutes_ago=9 - i) for i in range(3)]
    await commit(store, wallets, first)
    assert [a[0] for a in await alerts(pool)] == ["new_address"]  # only the first withdrawal to OTHER
    burst = [transfer(ME, OTHER, 1, 210 + i, minutes_ago=5 - i) for i in range(4)]  # 7 within 10 minutes
    result = await commit(store, wallets, burst)
    assert result.alerts_raised == {"rapid_transactions": 2}  # the 6th and the 7th


async def test_a_reorg_expires_pending_alerts_and_a_remined_transfer_revives_them(
    pool: asyncpg.Pool, writer_factory: WriterFactory
) -> None:
    store, wallets = await guarded_store(pool, writer_factory)
    big = transfer(OTHER, ME, 50_000, 300)
    await commit(store, wallets, [big])
    result = await store.commit(Batch(stream="realtime", rollback_to=299, head=10_000, final=0))
    assert result.alerts_expired == 1
    expired = await pool.fetchrow("SELECT status, context_data FROM guardian_checks")
    assert expired["status"] == "expired" and "reorg" in expired["context_data"]
    await commit(store, wallets, [big._replace(block_number=301, block_hash="0x" + "c" * 64)])
    revived = await pool.fetchrow("SELECT status, block_number FROM guardian_checks")
    assert (revived["status"], revived["block_number"]) == ("pending", 301)
    assert await pool.fetchval("SELECT count(*) FROM guardian_checks") == 1


async def test_old_history_raises_nothing(pool: asyncpg.Pool, writer_factory: WriterFactory) -> None:
    store, wallets = await guarded_store(pool, writer_factory)
    await commit(store, wallets, [transfer(OTHER, ME, 90_000, 400, minutes_ago=3 * 24 * 60)])
    assert await alerts(pool) == []
