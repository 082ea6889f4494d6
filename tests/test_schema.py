"""The migrated schema on real PostgreSQL: each defect found when the seed schema was first run on PostgreSQL is
shown fixed. Every test gets its own database cloned from the migrated template (fixture ``db_url``)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import subprocess
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio
from eth_utils import to_checksum_address

from tests.fixtures.postgres import create_database, drop_database

pytestmark = pytest.mark.asyncio(loop_scope="session")

# anvil default accounts 1..3 (EIP-55) and the Tron addresses of the same keys
EVM_1 = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
EVM_2 = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"
EVM_3 = "0x90F79bf6EB2c4f870365E785982E1f101E93b906"
TRON_1 = "TLEaY8XoqpBmndLsjcfThgdKLN1ssNuUcF"
TX_A = "0x" + "ab" * 32
TX_B = "0x" + "cd" * 32
BLOCK_HASH = "0x" + "11" * 32
UINT256_MAX = 2**256 - 1
DEMO_SEED = Path(__file__).resolve().parents[1] / "demo" / "seed.sql"


@pytest_asyncio.fixture(loop_scope="session")
async def conn(db_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(db_url)
    try:
        yield connection
    finally:
        await connection.close()


async def add_user(conn: asyncpg.Connection, email: str) -> int:
    return int(await conn.fetchval(
        "INSERT INTO users (email, password_hash) VALUES ($1, 'x') RETURNING id", email))


async def add_wallet(conn: asyncpg.Connection, user_id: int, chain: str, address: str, **extra: object) -> int:
    columns = ["user_id", "chain", "public_address", *extra]
    placeholders = ", ".join(f"${i}" for i in range(1, len(columns) + 1))
    sql = f"INSERT INTO wallets ({', '.join(columns)}) VALUES ({placeholders}) RETURNING id"  # noqa: S608
    return int(await conn.fetchval(sql, user_id, chain, address, *extra.values()))


TRANSFER_SQL = """
INSERT INTO transactions (user_id, wallet_id, tx_hash, chain, from_address, to_address, amount, amount_raw,
                          token, token_address, token_decimals, tx_type, log_index, block_number, block_hash,
                          source, status)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'USDT', $9, 18, $10, $11, 100, $12, 'indexer', 'pending')
ON CONFLICT ON CONSTRAINT transactions_transfer_key DO NOTHING
"""
USDT = "0x55d398326f99059ff775485246999027b3197955"


async def test_same_evm_address_on_two_chains_and_case_variant_rejected(conn: asyncpg.Connection) -> None:
    user = await add_user(conn, "alice@example.com")
    await add_wallet(conn, user, "bsc", EVM_1)
    await add_wallet(conn, user, "polygon", EVM_1)
    with pytest.raises(asyncpg.UniqueViolationError, match="wallets_chain_address_key"):
        await add_wallet(conn, user, "bsc", EVM_1.lower())
    normalized = await conn.fetch("SELECT DISTINCT address_normalized FROM wallets")
    assert [r[0] for r in normalized] == [EVM_1.lower()]
    # Tron base58 is case-sensitive: never lowercased
    await add_wallet(conn, user, "tron", TRON_1)
    assert await conn.fetchval("SELECT address_normalized FROM wallets WHERE chain = 'tron'") == TRON_1
    # lookups by normalised address use an index
    await conn.execute("SET enable_seqscan = off")
    plan = "\n".join(r[0] for r in await conn.fetch(
        "EXPLAIN SELECT id FROM wallets WHERE chain = 'bsc' AND address_normalized = $1", EVM_1.lower()))
    assert "Index" in plan


async def test_wallet_format_and_several_escrow_wallets(conn: asyncpg.Connection) -> None:
    user = await add_user(conn, "bob@example.com")
    with pytest.raises(asyncpg.CheckViolationError, match="wallets_address_format"):
        await add_wallet(conn, user, "bsc", "0x1234")
    with pytest.raises(asyncpg.CheckViolationError, match="wallets_address_format"):
        await add_wallet(conn, user, "tron", "T0000000000000000000000000000000O")
    # several escrow wallets per user and chain (the seed allowed one); one primary wallet per user and chain
    await add_wallet(conn, user, "bsc", EVM_1, wallet_type="escrow")
    await add_wallet(conn, user, "bsc", EVM_2, wallet_type="escrow")
    await add_wallet(conn, user, "polygon", EVM_1, is_primary=True)
    with pytest.raises(asyncpg.UniqueViolationError, match="wallets_one_primary_per_user_chain"):
        await add_wallet(conn, user, "polygon", EVM_2, is_primary=True)


async def test_transfer_between_two_known_users_stores_both_sides(conn: asyncpg.Connection) -> None:
    alice, bob = await add_user(conn, "alice@example.com"), await add_user(conn, "bob@example.com")
    wa = await add_wallet(conn, alice, "bsc", EVM_1)
    wb = await add_wallet(conn, bob, "bsc", EVM_2)
    frm, to = EVM_1.lower(), EVM_2.lower()
    for user, wallet in ((alice, wa), (bob, wb)):
        await conn.execute(TRANSFER_SQL, user, wallet, TX_A, "bsc", frm, to, Decimal(5), 5 * 10**18, USDT,
                           "p2p_transfer", 3, BLOCK_HASH)
    # replaying the block is a no-op
    await conn.execute(TRANSFER_SQL, alice, wa, TX_A, "bsc", frm, to, Decimal(5), 5 * 10**18, USDT,
                       "p2p_transfer", 3, BLOCK_HASH)
    rows = await conn.fetch("SELECT wallet_id, log_index FROM transactions WHERE tx_hash = $1 ORDER BY wallet_id", TX_A)
    assert [(r["wallet_id"], r["log_index"]) for r in rows] == [(wa, 3), (wb, 3)]


async def test_deleting_a_wallet_turns_the_other_side_of_its_p2p_transfers_into_deposits_and_withdrawals(
    conn: asyncpg.Connection,
) -> None:
    """The reverse of a wallet joining: the rows say what the current wallets imply, whatever the order."""
    alice, bob = await add_user(conn, "alice@example.com"), await add_user(conn, "bob@example.com")
    wa = await add_wallet(conn, alice, "bsc", EVM_1)
    wb = await add_wallet(conn, bob, "bsc", EVM_2)
    a, b = EVM_1.lower(), EVM_2.lower()
    for user, wallet in ((alice, wa), (bob, wb)):  # alice -> bob (log 3), bob -> alice (log 4)
        await conn.execute(TRANSFER_SQL, user, wallet, TX_A, "bsc", a, b, Decimal(5), 5 * 10**18, USDT,
                           "p2p_transfer", 3, BLOCK_HASH)
        await conn.execute(TRANSFER_SQL, user, wallet, TX_A, "bsc", b, a, Decimal(1), 10**18, USDT,
                           "p2p_transfer", 4, BLOCK_HASH)
    await conn.execute("DELETE FROM wallets WHERE id = $1", wa)
    rows = await conn.fetch("SELECT wallet_id, log_index, tx_type FROM transactions ORDER BY log_index")
    assert [(r["wallet_id"], r["log_index"], r["tx_type"]) for r in rows] == [(wb, 3, "deposit"),
                                                                             (wb, 4, "withdrawal")]


async def test_transaction_with_several_transfer_logs_stores_each(conn: asyncpg.Connection) -> None:
    alice = await add_user(conn, "alice@example.com")
    wa = await add_wallet(conn, alice, "bsc", EVM_1)
    for log_index, amount in ((0, 10), (1, 15), (-1, 1)):
        await conn.execute(TRANSFER_SQL, alice, wa, TX_B, "bsc", EVM_3.lower(), EVM_1.lower(), Decimal(amount),
                           amount * 10**18, USDT if log_index >= 0 else None, "deposit", log_index, BLOCK_HASH)
    total = await conn.fetchval("SELECT sum(amount) FROM transactions WHERE tx_hash = $1 AND log_index >= 0", TX_B)
    assert total == Decimal(25)
    assert await conn.fetchval("SELECT count(*) FROM transactions WHERE tx_hash = $1", TX_B) == 3


async def test_platform_rows_with_null_log_index_are_unique_per_wallet(conn: asyncpg.Connection) -> None:
    alice = await add_user(conn, "alice@example.com")
    wa = await add_wallet(conn, alice, "bsc", EVM_1)
    sql = """INSERT INTO transactions (user_id, wallet_id, tx_hash, chain, from_address, to_address, amount, tx_type)
             VALUES ($1, $2, $3, 'bsc', $4, $5, 1, 'withdrawal')"""
    await conn.execute(sql, alice, wa, TX_A, EVM_1.lower(), EVM_2.lower())
    with pytest.raises(asyncpg.UniqueViolationError, match="transactions_transfer_key"):
        await conn.execute(sql, alice, wa, TX_A, EVM_1.lower(), EVM_2.lower())
    assert await conn.fetchval("SELECT source FROM transactions") == "platform"


async def test_uint256_max_amount_exact_and_spam_cannot_abort_batch(conn: asyncpg.Connection) -> None:
    alice = await add_user(conn, "alice@example.com")
    wa = await add_wallet(conn, alice, "bsc", EVM_1)
    spam = Decimal(f"{UINT256_MAX}E-18")  # exact: the constructor does not round (arithmetic would, at 28 digits)
    batch = [
        (alice, wa, TX_A, "bsc", EVM_2.lower(), EVM_1.lower(), Decimal("1.5"), 15 * 10**17, USDT, "deposit", 0,
         BLOCK_HASH),
        (alice, wa, TX_A, "bsc", EVM_3.lower(), EVM_1.lower(), spam, UINT256_MAX, USDT, "deposit", 1, BLOCK_HASH),
        (alice, wa, TX_A, "bsc", EVM_2.lower(), EVM_1.lower(), Decimal("0.000000000000000001"), 1, USDT, "deposit",
         2, BLOCK_HASH),
    ]
    await conn.executemany(TRANSFER_SQL, batch)
    raw, amount = await conn.fetchrow("SELECT amount_raw, amount FROM transactions WHERE log_index = 1")
    assert int(raw) == UINT256_MAX
    assert amount == spam and "".join(map(str, amount.as_tuple().digits)) == str(UINT256_MAX)
    assert await conn.fetchval("SELECT amount FROM transactions WHERE log_index = 2") == Decimal("1E-18")
    assert await conn.fetchval("SELECT count(*) FROM transactions") == 3
    with pytest.raises(asyncpg.CheckViolationError, match="transactions_amount_raw_check"):
        await conn.execute(TRANSFER_SQL, alice, wa, TX_B, "bsc", EVM_2.lower(), EVM_1.lower(), Decimal(0),
                           UINT256_MAX + 1, USDT, "deposit", 0, BLOCK_HASH)


async def test_balances_and_gas_are_exact(conn: asyncpg.Connection) -> None:
    alice = await add_user(conn, "alice@example.com")
    wa = await add_wallet(conn, alice, "bsc", EVM_1)
    await conn.execute("UPDATE wallets SET balance_usdt = 0 WHERE id = $1", wa)
    for _ in range(3):
        await conn.execute("UPDATE wallets SET balance_usdt = balance_usdt + 0.005 WHERE id = $1", wa)
    assert await conn.fetchval("SELECT balance_usdt FROM wallets WHERE id = $1", wa) == Decimal("0.015")
    await conn.execute(
        """INSERT INTO transactions (user_id, wallet_id, tx_hash, chain, from_address, to_address, amount, tx_type,
                                     gas_price, gas_used) VALUES ($1, $2, $3, 'bsc', 'a', 'b', 1, 'deposit', $4, $5)""",
        alice, wa, TX_A, Decimal(3 * 10**9), Decimal(21000))
    assert await conn.fetchval("SELECT gas_price FROM transactions") == Decimal(3_000_000_000)


async def test_chain_hash_and_owner_constraints(conn: asyncpg.Connection) -> None:
    alice, bob = await add_user(conn, "alice@example.com"), await add_user(conn, "bob@example.com")
    wa = await add_wallet(conn, alice, "bsc", EVM_1)
    sql = """INSERT INTO transactions (user_id, wallet_id, tx_hash, chain, from_address, to_address, amount, tx_type)
             VALUES ($1, $2, $3, $4, 'a', 'b', 1, 'deposit')"""
    with pytest.raises(asyncpg.ForeignKeyViolationError, match="transactions_wallet_owner_fkey"):
        await conn.execute(sql, bob, wa, TX_A, "bsc")
    with pytest.raises(asyncpg.CheckViolationError, match="transactions_chain_check"):
        await conn.execute(sql, alice, wa, TX_A, "ethereum")
    with pytest.raises(asyncpg.CheckViolationError, match="transactions_tx_hash_format"):
        await conn.execute(sql, alice, wa, TX_A.upper().replace("0X", "0x"), "bsc")
    with pytest.raises(asyncpg.CheckViolationError, match="transactions_tx_hash_format"):
        await conn.execute(sql, alice, wa, TX_A, "tron")  # tron hashes carry no 0x
    await conn.execute(sql, alice, wa, TX_A[2:], "tron")


async def test_audit_trail_rejects_update_delete_truncate_and_user_delete_nulls(conn: asyncpg.Connection) -> None:
    alice = await add_user(conn, "alice@example.com")
    await conn.execute(
        "INSERT INTO audit_trail (user_id, action_type, description) VALUES ($1, 'strategy_created', 'x')", alice)
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
        await conn.execute("UPDATE audit_trail SET description = 'y', created_at = now()")
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
        await conn.execute("UPDATE audit_trail SET user_id = NULL")  # the user still exists
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
        await conn.execute("DELETE FROM audit_trail")
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
        await conn.execute("TRUNCATE audit_trail")
    await conn.execute("DELETE FROM users WHERE id = $1", alice)
    row = await conn.fetchrow("SELECT user_id, description FROM audit_trail")
    assert row["user_id"] is None and row["description"] == "x"


def dump_and_restore(bin_dir: Path, source: str, target: str) -> None:
    """``pg_dump source | psql target`` (plain format, the seed's weekly archive), stopping at the first error."""
    dump = subprocess.run([str(bin_dir / "pg_dump"), "--no-owner", "-d", source],
                          capture_output=True, check=True, timeout=60)
    subprocess.run([str(bin_dir / "psql"), "-q", "-v", "ON_ERROR_STOP=1", "-d", target],
                   input=dump.stdout, capture_output=True, check=True, timeout=60)


async def test_audit_rows_survive_dump_and_restore(
    db_url: str, conn: asyncpg.Connection, pg_server_dsn: str, pg_client_bin: Path
) -> None:
    alice = await add_user(conn, "alice@example.com")
    old = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
    await conn.execute(
        "INSERT INTO audit_trail (user_id, action_type, created_at) VALUES ($1, 'funds_withdrawn', $2)", alice, old)
    await conn.execute("INSERT INTO audit_trail (user_id, action_type) VALUES ($1, 'decision_vetoed')", alice)
    before = await conn.fetch("SELECT id, user_id, action_type, created_at FROM audit_trail ORDER BY id")
    restored = await create_database(pg_server_dsn)
    try:
        await asyncio.to_thread(dump_and_restore, pg_client_bin, db_url, restored)
        other = await asyncpg.connect(restored)
        try:
            after = await other.fetch("SELECT id, user_id, action_type, created_at FROM audit_trail ORDER BY id")
            assert after == before and after[0]["created_at"] == old
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await other.execute("DELETE FROM audit_trail")
        finally:
            await other.close()
    finally:
        await drop_database(pg_server_dsn, restored)


async def test_updated_at_moves(conn: asyncpg.Connection) -> None:
    alice = await add_user(conn, "alice@example.com")
    wa = await add_wallet(conn, alice, "bsc", EVM_1)
    await conn.execute("ALTER TABLE users DISABLE TRIGGER users_set_updated_at")
    await conn.execute("UPDATE users SET updated_at = '2020-01-01Z'")
    await conn.execute("ALTER TABLE users ENABLE TRIGGER users_set_updated_at")
    await conn.execute("UPDATE users SET first_name = 'Alice'")
    assert await conn.fetchval("SELECT updated_at > '2020-01-02Z' FROM users")
    for table in ("wallets", "transactions", "strategies", "strategy_decisions", "guardian_checks", "api_keys",
                  "sync_cursors", "tokens"):
        assert await conn.fetchval(
            "SELECT count(*) FROM pg_trigger WHERE tgrelid = $1::regclass AND tgname = $2",
            table, f"{table}_set_updated_at") == 1
    before = await conn.fetchval("SELECT updated_at FROM wallets WHERE id = $1", wa)
    await asyncio.sleep(0.01)
    await conn.execute("UPDATE wallets SET label = 'main' WHERE id = $1", wa)
    assert await conn.fetchval("SELECT updated_at FROM wallets WHERE id = $1", wa) > before


async def test_timestamps_identical_across_session_time_zones(db_url: str, conn: asyncpg.Connection) -> None:
    assert await conn.fetchval("SHOW timezone") == "UTC"  # the database default
    alice = await add_user(conn, "alice@example.com")
    wa = await add_wallet(conn, alice, "bsc", EVM_1)
    block_time = datetime(2026, 1, 30, 2, 0, tzinfo=UTC)
    sg = await asyncpg.connect(db_url, server_settings={"TimeZone": "Asia/Singapore"})
    try:
        await sg.execute(
            """INSERT INTO transactions (user_id, wallet_id, tx_hash, chain, from_address, to_address, amount,
                                         tx_type, block_timestamp) VALUES ($1, $2, $3, 'bsc', 'a', 'b', 1, 'deposit', $4)""",
            alice, wa, TX_A, block_time)
        await sg.execute("UPDATE wallets SET last_balance_sync = '2026-01-30 10:00:00+08' WHERE id = $1", wa)
        from_sg = await sg.fetchval("SELECT block_timestamp FROM transactions")
    finally:
        await sg.close()
    assert from_sg == block_time
    assert await conn.fetchval("SELECT block_timestamp FROM transactions") == block_time
    assert await conn.fetchval("SELECT last_balance_sync FROM wallets") == block_time + timedelta(hours=0)
    remaining = await conn.fetchval(
        """SELECT count(*) FROM information_schema.columns
            WHERE table_schema = current_schema() AND data_type = 'timestamp without time zone'""")
    assert remaining == 0


@pytest.mark.parametrize(
    ("email", "ok"),
    [
        ("o'brien@example.ie", True),
        ("user+tag@sub.example.co.uk", True),
        ("info@例え.テスト", True),
        ("test@example.xn--p1ai", True),
        ("a..b@example.com", False),
        ("a@example..com", False),
        (".a@example.com", False),
        ("a.@example.com", False),
        ("a@-example.com", False),
        ("a b@example.com", False),
        ("a@example", False),
        ("a@@example.com", False),
    ],
)
async def test_email_check(conn: asyncpg.Connection, email: str, ok: bool) -> None:
    if ok:
        await add_user(conn, email)
    else:
        with pytest.raises(asyncpg.CheckViolationError, match="users_email_format"):
            await add_user(conn, email)


async def test_email_unique_case_insensitive(conn: asyncpg.Connection) -> None:
    await add_user(conn, "Alice@Example.com")
    with pytest.raises(asyncpg.UniqueViolationError, match="users_email_lower_key"):
        await add_user(conn, "alice@example.COM")


async def test_api_key_lookup(conn: asyncpg.Connection) -> None:
    alice = await add_user(conn, "alice@example.com")
    pepper = b"server-secret"
    keys = ["ctd_live_ab12" + "x" * 20, "ctd_live_cd34" + "y" * 20]

    def lookup_hash(key: str) -> str:
        return hmac.new(pepper, key.encode(), hashlib.sha256).hexdigest()

    for key in keys:
        # bcrypt hashes are salted; the same placeholder twice is accepted (key_hash is no longer unique)
        await conn.execute(
            "INSERT INTO api_keys (user_id, key_hash, key_prefix, key_lookup_hash) VALUES ($1, '$2b$12$same', $2, $3)",
            alice, key[:13], lookup_hash(key))
    await conn.execute("SET enable_seqscan = off")
    plan = "\n".join(r[0] for r in await conn.fetch(
        "EXPLAIN SELECT id FROM api_keys WHERE key_lookup_hash = $1", lookup_hash(keys[1])))
    assert "api_keys_key_lookup_hash_key" in plan
    assert await conn.fetchval("SELECT key_prefix FROM api_keys WHERE key_lookup_hash = $1",
                               lookup_hash(keys[1])) == "ctd_live_cd34"
    with pytest.raises(asyncpg.UniqueViolationError, match="api_keys_key_lookup_hash_key"):
        await conn.execute("INSERT INTO api_keys (user_id, key_hash, key_lookup_hash) VALUES ($1, 'h', $2)",
                           alice, lookup_hash(keys[0]))


async def test_feature_flag_duplicate_global_rejected(conn: asyncpg.Connection) -> None:
    await conn.execute("INSERT INTO feature_flags (user_id, flag_name) VALUES (NULL, 'p2p')")
    with pytest.raises(asyncpg.UniqueViolationError, match="feature_flags_user_flag_key"):
        await conn.execute("INSERT INTO feature_flags (user_id, flag_name) VALUES (NULL, 'p2p')")
    alice = await add_user(conn, "alice@example.com")
    await conn.execute("INSERT INTO feature_flags (user_id, flag_name) VALUES ($1, 'p2p')", alice)


async def test_self_lending_rejected(conn: asyncpg.Connection) -> None:
    alice, bob = await add_user(conn, "alice@example.com"), await add_user(conn, "bob@example.com")
    sql = """INSERT INTO p2p_agreements (lender_id, borrower_id, principal_amount, interest_rate, duration_days,
                                         chain, token_address, escrow_address) VALUES ($1, $2, 100, 5, 30, 'bsc', $3, $4)"""
    with pytest.raises(asyncpg.CheckViolationError, match="p2p_agreements_distinct_parties"):
        await conn.execute(sql, alice, alice, USDT, EVM_3)
    await conn.execute(sql, alice, bob, USDT, EVM_3)
    with pytest.raises(asyncpg.CheckViolationError, match="p2p_agreements_chain_check"):
        await conn.execute(sql.replace("'bsc'", "'eth'"), alice, bob, USDT, EVM_3)


async def test_wallet_changes_notify(db_url: str, conn: asyncpg.Connection) -> None:
    received: list[dict[str, object]] = []
    listener = await asyncpg.connect(db_url)
    try:
        await listener.add_listener("citadel_wallets", lambda *args: received.append(json.loads(args[3])))
        alice = await add_user(conn, "alice@example.com")
        wa = await add_wallet(conn, alice, "bsc", EVM_1)
        await conn.execute("UPDATE wallets SET label = 'no notify' WHERE id = $1", wa)
        await conn.execute("UPDATE wallets SET is_active = true WHERE id = $1", wa)  # unchanged: no notify
        await conn.execute("UPDATE wallets SET is_active = false WHERE id = $1", wa)
        await conn.execute("DELETE FROM wallets WHERE id = $1", wa)
        for _ in range(100):
            if len(received) >= 3:
                break
            await asyncio.sleep(0.01)
    finally:
        await listener.close()
    assert received == [
        {"op": "INSERT", "id": wa, "chain": "bsc"},
        {"op": "UPDATE", "id": wa, "chain": "bsc"},
        {"op": "DELETE", "id": wa, "chain": "bsc"},
    ]


SAMPLE_QUERIES = {
    "balances": """SELECT w.chain, w.balance_usd, w.balance_usdt, w.balance_tst FROM wallets w
                   WHERE w.user_id = $1 AND w.is_active = TRUE""",
    "performance": """SELECT pm.period_date, pm.daily_profit, pm.daily_roi, pm.trades_executed, pm.win_rate
                      FROM performance_metrics pm
                      WHERE pm.strategy_id = $1 AND pm.period_date >= CURRENT_DATE - INTERVAL '30 days'
                      ORDER BY pm.period_date DESC""",
    "guardian": """SELECT id, alert_type, risk_score, detected_at, approval_required_until FROM guardian_checks
                   WHERE user_id = $1 AND status = 'pending' ORDER BY risk_score DESC""",
    "staked": """SELECT SUM(amount) as total_staked, SUM(total_rewards_earned) as rewards_earned FROM tst_stakes
                 WHERE user_id = $1 AND is_active = TRUE""",
    "lender": """SELECT id, borrower_id, principal_amount, interest_rate, status, maturity_date FROM p2p_agreements
                 WHERE lender_id = $1 ORDER BY created_at DESC""",
    "audit": """SELECT action_type, entity_type, description, created_at FROM audit_trail
                WHERE user_id = $1 AND created_at >= CURRENT_DATE - INTERVAL '7 days' ORDER BY created_at DESC""",
}


EXPECTED_INDEX = {
    "balances": "idx_wallets_user_active",
    "performance": "performance_metrics_strategy_id_period_date_period_type_key",
    "guardian": "idx_guardian_checks_user_pending",
    "staked": "idx_tst_stakes_user_active",
    "lender": "idx_p2p_agreements_lender_created",
    "audit": "idx_audit_trail_user_created",
}


@pytest.mark.parametrize("query", list(SAMPLE_QUERIES))
async def test_seed_sample_queries_use_an_index(conn: asyncpg.Connection, query: str) -> None:
    await conn.execute("SET enable_seqscan = off")
    await conn.execute("SET plan_cache_mode = force_generic_plan")  # plan for any $1, not one value
    await conn.fetch(SAMPLE_QUERIES[query], 1)  # it runs
    plan = "\n".join(r[0] for r in await conn.fetch(f"EXPLAIN {SAMPLE_QUERIES[query]}", 1))
    assert f"using {EXPECTED_INDEX[query]} " in plan and "Seq Scan" not in plan and "Sort" not in plan, plan


async def test_demo_seed_loads_and_is_idempotent(conn: asyncpg.Connection) -> None:
    seed = DEMO_SEED.read_text()
    await conn.execute(seed)
    await conn.execute(seed)
    assert await conn.fetchval("SELECT count(*) FROM users") == 4
    per_chain = dict(await conn.fetch("SELECT chain, count(*) FROM wallets GROUP BY chain"))
    assert per_chain == {"bsc": 4, "polygon": 4, "tron": 4}
    assert await conn.fetchval("SELECT count(*) FROM feature_flags") == 2
    # every format CHECK held (the inserts would have failed otherwise); addresses are EIP-55 / base58check
    for (address,) in await conn.fetch("SELECT public_address FROM wallets WHERE chain <> 'tron'"):
        assert to_checksum_address(address) == address
    alphabet = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
    for (address,) in await conn.fetch("SELECT public_address FROM wallets WHERE chain = 'tron'"):
        raw = 0
        for char in address:
            raw = raw * 58 + alphabet.index(char)
        payload = raw.to_bytes(25, "big")
        assert payload[0] == 0x41
        assert hashlib.sha256(hashlib.sha256(payload[:21]).digest()).digest()[:4] == payload[21:]
