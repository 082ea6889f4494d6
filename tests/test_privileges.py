"""The daemon's least-privilege role ``citadel_indexer`` (migration 014) and the audit trail's trigger, against a real
PostgreSQL 16.

The tests share a server of their own (module scope): its pg_hba.conf asks every role but the superuser for a SCRAM
password, so a login proves the password, and it logs every statement, so its log shows what travelled in SQL
text. Its template database is migrated with the module's password for ``citadel_indexer``; each test gets a copy.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest
import pytest_asyncio

from citadel_devtools.postgres import LocalPostgres, PostgresUnavailable, start_postgres
from indexer.app import close_pool
from indexer.store.migrate import apply_migrations, load_migrations
from indexer.store.roles import INDEXER_ROLE, saslprep, scram_keys, scram_verifier
from tests.fixtures.postgres import create_database, drop_database
from tests.support import evm
from tests.support.daemon import Daemon, busy_bsc, cursor, daemon_env
from tests.support.sync import actual_rows, eventually, expected_evm_rows, open_pool

REPO = Path(__file__).resolve().parents[1]
MIGRATIONS = REPO / "indexer" / "migrations"
PASSWORD = "pw-" + secrets.token_urlsafe(18)
# the migrations from 014 on, applied to a database that stopped at 013
FROM_014 = [m.version for m in load_migrations(MIGRATIONS) if int(m.version) >= 14]
EVM_1 = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"

# What the daemon may do, table by table (docs/data-model.md, "Database roles"); every other table: nothing.
TABLE_PRIVILEGES = {
    "transactions": {"SELECT", "INSERT", "UPDATE", "DELETE"},
    "chain_blocks": {"SELECT", "INSERT", "UPDATE", "DELETE"},
    "sync_cursors": {"SELECT", "INSERT", "UPDATE", "DELETE"},
    "tokens": {"SELECT", "INSERT", "UPDATE"},
    "writer_leases": {"SELECT", "INSERT", "UPDATE"},
    "wallets": {"SELECT"},
    "audit_trail": {"SELECT", "INSERT"},
    "p2p_agreements": {"SELECT"},
    "guardian_checks": {"SELECT", "INSERT"},
    "escrow_events": {"SELECT", "INSERT", "UPDATE", "DELETE"},
    "schema_migrations": {"SELECT"},
    "users": {"SELECT"},
    "wallet_set_version": {"SELECT"},
}
WALLET_COLUMNS_WRITTEN = {"balance_native", "balance_usdt", "balance_usdc", "balance_tst", "balance_usd",
                          "last_balance_sync"}
# column grants: the cached balances, and the one column whose UPDATE grant only serves FOR SHARE (017)
# escrow (018): the chain-derived columns of an agreement; Guardian alerts: what a reorg expires or revives
AGREEMENT_COLUMNS_WRITTEN = {"status", "funded_at", "maturity_date", "escrow_address", "escrow_tx_hash", "settled_at",
                             "repayment_amount", "repay_tx_hash"}
GUARDIAN_COLUMNS_WRITTEN = {"status", "context_data", "block_number", "detected_at"}
COLUMN_PRIVILEGES = (
    {("wallets", column, "UPDATE") for column in WALLET_COLUMNS_WRITTEN}
    | {("wallet_set_version", "singleton", "UPDATE")}
    | {("p2p_agreements", column, "UPDATE") for column in AGREEMENT_COLUMNS_WRITTEN}
    | {("guardian_checks", column, "UPDATE") for column in GUARDIAN_COLUMNS_WRITTEN}
)
ALL_TABLE_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")


@dataclass
class ScramServer:
    local: LocalPostgres
    template: str

    @property
    def log(self) -> str:
        return (self.local.base_dir / "server.log").read_text(errors="replace")


def as_role(url: str, user: str, password: str) -> str:
    parts = urlsplit(url)
    return f"postgresql://{user}:{password}@{parts.hostname}:{parts.port}{parts.path}"


def indexer_url(url: str) -> str:
    return as_role(url, INDEXER_ROLE, PASSWORD)


async def _refused_without_password(dsn: str) -> bool:
    try:
        conn = await asyncpg.connect(dsn)
    except asyncpg.InvalidPasswordError:
        return True
    await conn.close()
    return False


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def server() -> AsyncIterator[ScramServer]:
    try:
        local = start_postgres("16", allow_fallback=False)
    except PostgresUnavailable as error:
        pytest.fail(f"no PostgreSQL 16 for the privilege tests: {error}", pytrace=False)
    try:
        hba = local.data_dir / "pg_hba.conf"
        hba.write_text("host all postgres 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 scram-sha-256\n"
                       + hba.read_text())
        conn = await asyncpg.connect(local.dsn)
        try:
            await conn.execute("ALTER SYSTEM SET log_statement = 'all'")
            await conn.execute("CREATE ROLE hba_probe LOGIN")
            await conn.execute("SELECT pg_reload_conf()")
        finally:
            await conn.close()
        probe = local.dsn.replace("postgres@", "hba_probe@", 1)
        # the postmaster reloads pg_hba.conf asynchronously
        await eventually(lambda: _refused_without_password(probe), every_s=0.05)
        template = await create_database(local.dsn)
        await apply_migrations(template, echo=lambda _: None, indexer_password=PASSWORD)
        yield ScramServer(local, urlsplit(template).path.lstrip("/"))
    finally:
        local.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def owner_url(server: ScramServer) -> AsyncIterator[str]:
    """A new database from the module's migrated template, as the superuser (the schema owner)."""
    url = await create_database(server.local.dsn, template=server.template)
    try:
        yield url
    finally:
        await drop_database(server.local.dsn, url)


@pytest_asyncio.fixture(loop_scope="session")
async def owner(owner_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(owner_url)
    try:
        yield conn
    finally:
        await conn.close()


@pytest_asyncio.fixture(loop_scope="session")
async def daemon_role(owner_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A real login as citadel_indexer, with its password."""
    conn = await asyncpg.connect(indexer_url(owner_url))
    try:
        yield conn
    finally:
        await conn.close()


async def add_user_and_wallet(conn: asyncpg.Connection) -> tuple[int, int]:
    user = await conn.fetchval("INSERT INTO users (email, password_hash) VALUES ('a@example.com', 'x') RETURNING id")
    wallet = await conn.fetchval(
        "INSERT INTO wallets (user_id, chain, public_address) VALUES ($1, 'bsc', $2) RETURNING id", user, EVM_1)
    return int(user), int(wallet)


# ------------------------------------------------------------------------------------------------- the password


def test_scram_keys_match_the_rfc_7677_example() -> None:
    """RFC 7677's exchange (user "user", password "pencil"): the keys computed here give its client proof and
    server signature, so the verifier built from them is the one a server derives."""
    salt, iterations = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ=="), 4096
    nonce = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
    auth_message = (f"n=user,r=rOprNGfwEbeRWgbNEkqO,r={nonce},s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,"
                    f"c=biws,r={nonce}").encode()
    client_key, stored_key, server_key = scram_keys("pencil", salt, iterations)
    client_signature = hmac.digest(stored_key, auth_message, "sha256")
    proof = bytes(a ^ b for a, b in zip(client_key, client_signature, strict=True))
    assert base64.b64encode(proof).decode() == "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
    server_signature = hmac.digest(server_key, auth_message, "sha256")
    assert base64.b64encode(server_signature).decode() == "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
    assert hashlib.sha256(client_key).digest() == stored_key
    verifier = scram_verifier("pencil", salt=salt)
    assert verifier == (f"SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==${base64.b64encode(stored_key).decode()}:"
                        f"{base64.b64encode(server_key).decode()}")
    assert scram_verifier("pencil") != scram_verifier("pencil")  # a fresh salt each time


def test_saslprep_as_postgresql_applies_it() -> None:
    assert saslprep("pencil") == "pencil"
    assert saslprep("I\u00adX") == "IX"  # soft hyphen: mapped to nothing
    assert saslprep("a\u00a0b") == "a b"  # non-ASCII space: mapped to a space
    assert saslprep("e\u0301t\u00e9") == "\u00e9t\u00e9"  # NFKC
    assert saslprep("\u2168") == "IX"  # NFKC: roman numeral nine
    assert saslprep("a\u0007\u00e9") == "a\u0007\u00e9"  # a prohibited character: used as it is, like PostgreSQL


async def test_migrate_gives_the_role_login_and_its_password_never_travels_in_clear(
    server: ScramServer, owner: asyncpg.Connection, owner_url: str
) -> None:
    await owner.execute("ALTER ROLE citadel_indexer NOLOGIN PASSWORD NULL")
    try:
        with pytest.raises(asyncpg.InvalidAuthorizationSpecificationError):
            await asyncpg.connect(indexer_url(owner_url))
        fresh = await create_database(server.local.dsn)
        try:
            env = {**{k: v for k, v in os.environ.items() if not k.startswith("CITADEL_")},
                   "CITADEL_DATABASE_URL": fresh, "CITADEL_INDEXER_DB_PASSWORD": PASSWORD}
            log_before = len(server.log)
            result = await asyncio.to_thread(
                subprocess.run, [sys.executable, "-m", "indexer", "migrate"], env=env, capture_output=True,
                text=True, timeout=120, cwd=REPO)
            assert result.returncode == 0, result.stderr
            assert "applied 014_least_privilege.sql" in result.stdout
            assert "citadel_indexer: login enabled, password set" in result.stdout
            assert PASSWORD not in result.stdout + result.stderr
            logged = server.log[log_before:]
            assert "ALTER ROLE citadel_indexer WITH LOGIN PASSWORD 'SCRAM-SHA-256$4096:" in logged
            assert PASSWORD not in logged
        finally:
            await drop_database(server.local.dsn, fresh)
        stored = await owner.fetchval("SELECT rolpassword FROM pg_authid WHERE rolname = 'citadel_indexer'")
        assert stored.startswith("SCRAM-SHA-256$4096:")
        conn = await asyncpg.connect(indexer_url(owner_url))
        try:
            assert await conn.fetchval("SELECT current_user") == INDEXER_ROLE
        finally:
            await conn.close()
        with pytest.raises(asyncpg.InvalidPasswordError):
            await asyncpg.connect(as_role(owner_url, INDEXER_ROLE, PASSWORD + "x"))
    finally:
        await owner.execute("ALTER ROLE citadel_indexer LOGIN")
        await apply_migrations(owner_url, echo=lambda _: None, indexer_password=PASSWORD)


async def test_a_non_ascii_password_logs_in_as_a_client_normalises_it(owner_url: str) -> None:
    password = "pa\u00adss-e\u0301t\u00e9-\u2168-" + secrets.token_hex(4)
    try:
        await apply_migrations(owner_url, echo=lambda _: None, indexer_password=password)
        parts = urlsplit(owner_url)
        conn = await asyncpg.connect(host=parts.hostname, port=parts.port, database=parts.path.lstrip("/"),
                                     user=INDEXER_ROLE, password=password)
        await conn.close()
    finally:
        await apply_migrations(owner_url, echo=lambda _: None, indexer_password=PASSWORD)


async def test_the_role_is_created_once_when_two_databases_migrate_at_once(tmp_path: Path) -> None:
    """Roles belong to the server: a database whose migration finds the role being created by another database's
    migration (uncommitted yet) waits for it, then goes on with the role that one created."""
    from indexer.store.migrate import MigrationError

    try:
        local = start_postgres("16", allow_fallback=False)
    except PostgresUnavailable as error:
        pytest.fail(f"no PostgreSQL 16: {error}", pytrace=False)
    try:
        first, second, third = [await create_database(local.dsn) for _ in range(3)]
        only = tmp_path / "only"
        only.mkdir()
        (only / "001_only.sql").write_text("CREATE TABLE only_one (id int);\n")
        with pytest.raises(MigrationError, match=r"citadel_indexer but the role does not exist.*014_least_privilege"):
            await apply_migrations(third, only, echo=lambda _: None, indexer_password="x")
        upto_013 = copy_migrations(tmp_path / "upto_013", "013")
        await apply_migrations(second, upto_013, echo=lambda _: None)
        creator = await asyncpg.connect(first)
        try:
            await creator.execute("BEGIN")
            await creator.execute("CREATE ROLE citadel_indexer NOLOGIN")
            migrating = asyncio.create_task(apply_migrations(second, MIGRATIONS, echo=lambda _: None))

            async def waiting_for_the_role() -> bool:
                # from another session: pg_stat_activity is a snapshot taken once per transaction
                return await _lock_waiters(local.dsn, urlsplit(second).path.lstrip("/")) > 0

            try:
                await eventually(waiting_for_the_role, every_s=0.02)
                await creator.execute("COMMIT")
            finally:
                applied = await migrating
            assert applied == FROM_014
            role = await creator.fetchrow(
                "SELECT rolcanlogin, rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls "
                "FROM pg_roles WHERE rolname = 'citadel_indexer'")
            assert not any(role.values())
        finally:
            await creator.close()
        conn = await asyncpg.connect(second)
        try:
            assert await conn.fetchval("SELECT has_table_privilege('citadel_indexer', 'transactions', 'INSERT')")
        finally:
            await conn.close()
    finally:
        local.stop()


async def _lock_waiters(server_dsn: str, database: str) -> int:
    conn = await asyncpg.connect(server_dsn)
    try:
        return int(await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock'", database))
    finally:
        await conn.close()


def copy_migrations(target: Path, upto: str) -> Path:
    target.mkdir()
    for path in sorted(MIGRATIONS.glob("*.sql")):
        if path.name[:3] <= upto:
            shutil.copy(path, target / path.name)
    return target


# ------------------------------------------------------------------------------------------------- the grants


async def test_the_grants_are_exactly_what_the_daemon_needs(owner: asyncpg.Connection) -> None:
    tables = await owner.fetch(
        """SELECT c.relname, array_agg(p.priv ORDER BY p.priv) FILTER (WHERE has_table_privilege(
                  'citadel_indexer', c.oid, p.priv)) AS privs
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace CROSS JOIN unnest($1::text[]) p(priv)
           WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
           GROUP BY c.relname""",
        list(ALL_TABLE_PRIVILEGES))
    granted = {r["relname"]: set(r["privs"] or ()) for r in tables}
    assert {t: p for t, p in granted.items() if p} == TABLE_PRIVILEGES
    assert "strategies" in granted and "api_keys" in granted  # every table was looked at
    assert await owner.fetchval(  # nothing it could pass on
        """SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           CROSS JOIN unnest($1::text[]) p(priv)
           WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
             AND has_table_privilege('citadel_indexer', c.oid, p.priv || ' WITH GRANT OPTION')""",
        ["SELECT", "INSERT", "UPDATE", "DELETE"]) == 0
    columns = await owner.fetch(
        """SELECT c.relname, a.attname, p.priv
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
           CROSS JOIN unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'REFERENCES']) p(priv)
           WHERE n.nspname = current_schema() AND c.relkind = 'r'
             AND has_column_privilege('citadel_indexer', c.oid, a.attnum, p.priv)
             AND NOT has_table_privilege('citadel_indexer', c.oid, p.priv)""")
    assert {(r["relname"], r["attname"], r["priv"]) for r in columns} == COLUMN_PRIVILEGES
    sequences = await owner.fetch(
        """SELECT c.relname, p.priv FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           CROSS JOIN unnest(ARRAY['USAGE', 'SELECT', 'UPDATE']) p(priv)
           WHERE n.nspname = current_schema() AND c.relkind = 'S'
             AND has_sequence_privilege('citadel_indexer', c.oid, p.priv)""")
    assert {(r["relname"], r["priv"]) for r in sequences} == {("transactions_id_seq", "USAGE"),
                                                             ("audit_trail_id_seq", "USAGE"),
                                                             ("guardian_checks_id_seq", "USAGE")}
    assert await owner.fetchval(
        """SELECT has_schema_privilege('citadel_indexer', current_schema(), 'USAGE')
              AND NOT has_schema_privilege('citadel_indexer', current_schema(), 'CREATE')
              AND has_database_privilege('citadel_indexer', current_database(), 'TEMPORARY')
              AND NOT has_database_privilege('citadel_indexer', current_database(), 'CREATE')""")
    role = await owner.fetchrow(
        "SELECT oid, rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls FROM pg_roles "
        "WHERE rolname = 'citadel_indexer'")
    assert not any(v for k, v in role.items() if k != "oid")
    assert await owner.fetchval("SELECT count(*) FROM pg_auth_members WHERE member = $1", role["oid"]) == 0
    # owns nothing, anywhere on the server
    assert await owner.fetchval(
        "SELECT count(*) FROM pg_shdepend WHERE refobjid = $1 AND deptype = 'o'", role["oid"]) == 0


async def test_the_daemons_role_cannot_change_or_remove_audit_rows(
    owner: asyncpg.Connection, daemon_role: asyncpg.Connection
) -> None:
    user, _wallet = await add_user_and_wallet(owner)
    audit_id = await daemon_role.fetchval(
        "INSERT INTO audit_trail (user_id, action_type, description) VALUES ($1, 'escrow_funded', 'x') RETURNING id",
        user)
    before = await owner.fetchrow("SELECT * FROM audit_trail WHERE id = $1", audit_id)
    refused = [
        "UPDATE audit_trail SET description = 'y'",
        "UPDATE audit_trail SET user_id = NULL",
        "DELETE FROM audit_trail",
        "TRUNCATE audit_trail",
        "ALTER TABLE audit_trail DISABLE TRIGGER audit_trail_no_update_delete",
        "ALTER TABLE audit_trail DISABLE TRIGGER ALL",
        "DROP TRIGGER audit_trail_no_truncate ON audit_trail",
        "SET session_replication_role = replica",
        "ALTER FUNCTION audit_trail_append_only() RESET search_path",
        "CREATE OR REPLACE FUNCTION audit_trail_append_only() RETURNS trigger LANGUAGE plpgsql "
        "AS $$ BEGIN RETURN NEW; END $$",
        "DROP TABLE audit_trail",
    ]
    for statement in refused:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await daemon_role.execute(statement)
    assert await daemon_role.fetchval("SHOW session_replication_role") == "origin"
    assert await owner.fetchrow("SELECT * FROM audit_trail WHERE id = $1", audit_id) == before
    assert await owner.fetchval(
        "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'audit_trail'::regclass AND tgenabled = 'O' "
        "AND tgname IN ('audit_trail_no_update_delete', 'audit_trail_no_truncate')") == 2


async def test_the_daemons_role_writes_cached_balances_but_never_who_owns_a_wallet(
    owner: asyncpg.Connection, daemon_role: asyncpg.Connection
) -> None:
    user, wallet = await add_user_and_wallet(owner)
    other = await owner.fetchval(
        "INSERT INTO users (email, password_hash) VALUES ('b@example.com', 'x') RETURNING id")
    await daemon_role.execute(
        "UPDATE wallets SET balance_usdt = 12.5, balance_native = 1, last_balance_sync = now() WHERE id = $1", wallet)
    for column, value in (("public_address", EVM_1.lower()), ("user_id", other), ("chain", "polygon"),
                          ("is_active", False), ("wallet_type", "escrow")):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await daemon_role.execute(f"UPDATE wallets SET {column} = $2 WHERE id = $1", wallet, value)  # noqa: S608
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await daemon_role.execute("DELETE FROM wallets WHERE id = $1", wallet)
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await daemon_role.execute(
            "INSERT INTO wallets (user_id, chain, public_address) VALUES ($1, 'polygon', $2)", user, EVM_1)
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await daemon_role.execute("UPDATE users SET email = 'c@example.com'")
    row = await owner.fetchrow("SELECT * FROM wallets WHERE id = $1", wallet)
    assert (row["user_id"], row["public_address"], row["chain"], row["is_active"]) == (user, EVM_1, "bsc", True)
    assert row["balance_usdt"] == 12.5 and row["last_balance_sync"] is not None


async def test_the_daemons_role_locks_the_wallet_set_version_but_never_bumps_it(
    daemon_role: asyncpg.Connection,
) -> None:
    async with daemon_role.transaction():
        version = await daemon_role.fetchval("SELECT version FROM wallet_set_version FOR SHARE")
    for statement in ("UPDATE wallet_set_version SET version = version + 1", "DELETE FROM wallet_set_version",
                      "INSERT INTO wallet_set_version VALUES (DEFAULT, 0)"):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await daemon_role.execute(statement)
    assert await daemon_role.fetchval("SELECT version FROM wallet_set_version") == version


async def test_the_daemons_role_runs_no_ddl_but_its_staging_table(daemon_role: asyncpg.Connection) -> None:
    for statement in ("CREATE TABLE mine (id int)", "ALTER TABLE transactions ADD COLUMN x int",
                      "CREATE INDEX ON transactions (amount)", "DROP TABLE chain_blocks",
                      "TRUNCATE transactions", "TRUNCATE chain_blocks", "TRUNCATE sync_cursors"):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await daemon_role.execute(statement)
    from indexer.store.chain_store import STAGING_DDL

    await daemon_role.execute(STAGING_DDL)


# ---------------------------------------------------------------------------------------- the audit trail trigger


async def test_a_temporary_users_table_cannot_shadow_users_in_the_audit_trigger(
    server: ScramServer, tmp_path: Path
) -> None:
    """Before 014 a session could null the user of an audit row whose user still exists: the trigger's "is the
    user row gone?" looked at the session's own temporary ``users`` (pg_temp is searched first)."""
    url = await create_database(server.local.dsn)
    try:
        await apply_migrations(url, copy_migrations(tmp_path / "upto_013", "013"), echo=lambda _: None)
        conn = await asyncpg.connect(url)
        try:
            user = await conn.fetchval(
                "INSERT INTO users (email, password_hash) VALUES ('a@example.com', 'x') RETURNING id")
            first, second = [await conn.fetchval(
                "INSERT INTO audit_trail (user_id, action_type) VALUES ($1, 'funds_withdrawn') RETURNING id", user)
                for _ in range(2)]

            async def null_the_user_behind_a_temporary_users_table(audit_id: int) -> None:
                await conn.execute("CREATE TEMP TABLE IF NOT EXISTS users (id bigint)")
                await conn.execute("UPDATE audit_trail SET user_id = NULL WHERE id = $1", audit_id)

            await null_the_user_behind_a_temporary_users_table(first)  # accepted up to 013
            assert await conn.fetchval("SELECT user_id FROM audit_trail WHERE id = $1", first) is None
            assert await conn.fetchval("SELECT count(*) FROM public.users WHERE id = $1", user) == 1

            assert await apply_migrations(url, MIGRATIONS, echo=lambda _: None) == FROM_014
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
                await null_the_user_behind_a_temporary_users_table(second)
            assert await conn.fetchval("SELECT user_id FROM audit_trail WHERE id = $1", second) == user
            schema = await conn.fetchval("SELECT current_schema()")
            configs = dict(await conn.fetch(
                "SELECT proname, proconfig FROM pg_proc WHERE proname = ANY($1::text[])",
                ["audit_trail_append_only", "set_updated_at", "notify_wallet_change"]))
            assert configs == {name: [f"search_path=pg_catalog, {schema}, pg_temp"] for name in configs}
            assert len(configs) == 3
            # the foreign key's ON DELETE SET NULL still passes
            await conn.execute("DROP TABLE pg_temp.users")
            await conn.execute("DELETE FROM users WHERE id = $1", user)
            assert await conn.fetchval("SELECT count(*) FROM audit_trail WHERE user_id IS NULL") == 2
        finally:
            await conn.close()
    finally:
        await drop_database(server.local.dsn, url)


# ------------------------------------------------------------------------------------------------- the daemon


@pytest.mark.slow
async def test_the_daemon_runs_as_citadel_indexer(
    anvil_factory: Any, owner_url: str, daemons: list[Daemon], tmp_path: Path
) -> None:
    """``python -m indexer run`` logged in as citadel_indexer does all of its work: catch-up, following the head,
    a reorg (rollback), a platform withdrawal settled, token metadata, the writer lease, cached balances."""
    anvil = anvil_factory(56)
    pool = await open_pool(owner_url)  # the platform's side: the schema owner
    try:
        token, wallets = await busy_bsc(anvil, pool, known=3, blocks=60)
        k1, k2 = wallets[0], wallets[1]
        outsider = evm.accounts(anvil)[9]
        withdrawal = evm.token_transfer(anvil, token, k1.address, outsider, 77)
        await pool.execute(  # another service broadcast it and recorded it as a pending withdrawal
            """INSERT INTO transactions (user_id, wallet_id, tx_hash, chain, from_address, to_address, amount,
                   token, tx_type) VALUES ($1, $2, $3, 'bsc', $4, $5, 77, 'USDT', 'withdrawal')""",
            k1.user_id, k1.id, withdrawal, k1.address, outsider)
        daemon = Daemon(daemon_env(indexer_url(owner_url), anvil, {"USDT": token}), tmp_path / "daemon.log")
        daemons.append(daemon)
        daemon.start()

        async def at_head() -> bool:
            # a statement the role may not run stops the chain's task: fail with its log line, not a timeout
            stopped = [line for line in daemon.log_text().splitlines()
                       if '"level": "critical"' in line or "permission denied" in line]
            assert not stopped, stopped[0]
            return await cursor(pool) >= evm.block_number(anvil)

        await eventually(at_head, timeout_s=90)
        sessions = await pool.fetch(
            "SELECT DISTINCT usename FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name LIKE 'citadel-indexer%'")
        assert [r["usename"] for r in sessions] == [INDEXER_ROLE]

        # following the head: two transfers in a block about to be orphaned; one is dropped, one comes back
        nonce = int(str(anvil.rpc("eth_getTransactionCount", [k1.address, "latest"])), 16)
        evm.set_automine(anvil, False)
        dropped = evm.token_transfer(anvil, token, k1.address, k2.address, 11)
        evm.send_tx(anvil, k1.address, token, evm.calldata("transfer(address,uint256)", k2.address, 22))
        evm.mine(anvil, 1)
        evm.set_automine(anvil, True)
        evm.mine(anvil, 2)
        await eventually(at_head, timeout_s=60)
        assert await pool.fetchval("SELECT count(*) FROM transactions WHERE tx_hash = $1", dropped) == 2
        moved = {"from": k1.address, "to": token, "nonce": hex(nonce), "gas": hex(100_000),
                 "data": "0x" + evm.calldata("transfer(address,uint256)", k2.address, 22).hex()}
        evm.reorg(anvil, 3, [(moved, 2)])
        evm.mine(anvil, 1)  # the daemon reaches this block only through the rollback
        await eventually(at_head, timeout_s=60)

        async def balances_cached() -> bool:
            expected = Decimal(evm.token_balance(anvil, token, k1.address)) / 10**18
            return bool(await pool.fetchval(
                "SELECT balance_usdt = $2 AND last_balance_sync IS NOT NULL FROM wallets WHERE id = $1",
                k1.id, expected))

        await eventually(balances_cached, timeout_s=60)
        assert daemon.stop() == 0
        done = await cursor(pool)
        assert await actual_rows(pool, "bsc") == expected_evm_rows(anvil, wallets, [token], 0, done)
        assert await pool.fetchval("SELECT count(*) FROM transactions WHERE tx_hash = $1", dropped) == 0
        settled = await pool.fetchrow(
            "SELECT source, log_index, gas_used FROM transactions WHERE tx_hash = $1", withdrawal)
        assert settled["source"] == "platform" and settled["log_index"] is not None
        assert settled["gas_used"] is not None
        assert await pool.fetchval("SELECT decimals FROM tokens WHERE contract_address = $1", token.lower()) == 18
        assert await pool.fetchval("SELECT epoch FROM writer_leases WHERE chain = 'bsc'") >= 1
        log = daemon.log_text()
        assert "permission denied" not in log and "InsufficientPrivilege" not in log
        assert PASSWORD not in log
    finally:
        await close_pool(pool)
