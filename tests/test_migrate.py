"""The migration runner, on PostgreSQL 16 (embedded, or CITADEL_TEST_DATABASE_URL) and on PostgreSQL 15."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from indexer.store.migrate import MigrationError, apply_migrations, load_migrations, migration_status

pytestmark = pytest.mark.asyncio(loop_scope="session")

REPO_MIGRATIONS = Path(__file__).resolve().parents[1] / "indexer" / "migrations"
ALL_VERSIONS = [m.version for m in load_migrations(REPO_MIGRATIONS)]
DbFactory = Callable[[str], Awaitable[str]]
EVM_1 = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"


@pytest.fixture(params=["16", "15"], ids=["pg16", "pg15"])
def server_dsn(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue("pg_server_dsn" if request.param == "16" else "pg15_dsn"))


def with_password(url: str, password: str) -> str:
    """The URL with a password (trust authentication ignores it): it must never be printed."""
    parts = urlsplit(url)
    netloc = f"{parts.username}:{password}@{parts.hostname}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def copy_migrations(target: Path, upto: str | None = None) -> Path:
    target.mkdir()
    for path in sorted(REPO_MIGRATIONS.glob("*.sql")):
        if upto is None or path.name[:3] <= upto:
            shutil.copy(path, target / path.name)
    return target


async def applied_versions(url: str) -> list[str]:
    conn = await asyncpg.connect(url)
    try:
        return [r[0] for r in await conn.fetch("SELECT version FROM schema_migrations ORDER BY version")]
    finally:
        await conn.close()


async def test_apply_is_idempotent(server_dsn: str, fresh_db_factory: DbFactory) -> None:
    url = with_password(await fresh_db_factory(server_dsn), "s3cret-pw")
    lines: list[str] = []
    assert await apply_migrations(url, echo=lines.append) == ALL_VERSIONS
    assert len(lines) == len(ALL_VERSIONS)
    for line, migration in zip(lines, load_migrations(REPO_MIGRATIONS), strict=True):
        assert re.fullmatch(rf"applied {re.escape(migration.filename)} \(\d+ ms\)", line), line
    again: list[str] = []
    assert await apply_migrations(url, echo=again.append) == []
    assert again == ["nothing to apply"]
    status = await migration_status(url)
    assert [s.version for s in status] == ALL_VERSIONS
    assert all(s.applied_at is not None and s.checksum_ok for s in status)
    assert not any("s3cret" in line for line in lines + again)


async def test_refuses_an_edited_applied_file(server_dsn: str, fresh_db_factory: DbFactory, tmp_path: Path) -> None:
    url = await fresh_db_factory(server_dsn)
    migrations = copy_migrations(tmp_path / "migrations")
    await apply_migrations(url, migrations, echo=lambda _: None)
    edited = migrations / "003_wallets_addresses.sql"
    edited.write_text(edited.read_text() + "\n-- an innocent edit\n")
    (migrations / "099_later.sql").write_text("CREATE TABLE later (id int);\n")
    with pytest.raises(MigrationError, match=r"003_wallets_addresses\.sql .*changed"):
        await apply_migrations(url, migrations, echo=lambda _: None)
    assert await applied_versions(url) == ALL_VERSIONS  # 099 was not applied either
    status = {s.version: s for s in await migration_status(url, migrations)}
    assert status["003"].checksum_ok is False and status["002"].checksum_ok is True
    assert status["099"].applied_at is None


async def test_concurrent_runs_apply_once(server_dsn: str, fresh_db_factory: DbFactory) -> None:
    url = await fresh_db_factory(server_dsn)
    first: list[str] = []
    second: list[str] = []
    results = await asyncio.gather(apply_migrations(url, echo=first.append),
                                   apply_migrations(url, echo=second.append))
    assert sorted(results, key=len) == [[], ALL_VERSIONS]
    assert "nothing to apply" in first + second
    assert await applied_versions(url) == ALL_VERSIONS


async def test_conflicting_seed_data_fails_clearly_and_leaves_nothing_half_applied(
    server_dsn: str, fresh_db_factory: DbFactory, tmp_path: Path
) -> None:
    url = await fresh_db_factory(server_dsn)
    await apply_migrations(url, copy_migrations(tmp_path / "seed", upto="001"), echo=lambda _: None)
    conn = await asyncpg.connect(url)
    try:
        user = await conn.fetchval("INSERT INTO users (email, password_hash) VALUES ('a@example.com', 'x') RETURNING id")
        # the seed accepts a lowercase copy of a checksummed address as a second wallet
        ids = [await conn.fetchval(
            "INSERT INTO wallets (user_id, chain, public_address, wallet_type) VALUES ($1, 'bsc', $2, $3) RETURNING id",
            user, address, wallet_type) for address, wallet_type in ((EVM_1, "personal"), (EVM_1.lower(), "escrow"))]
        with pytest.raises(MigrationError) as failure:
            await apply_migrations(url, echo=lambda _: None)
        message = str(failure.value)
        assert "003_wallets_addresses.sql" in message
        assert "the same address is registered more than once" in message
        assert f"wallet ids {ids[0]}, {ids[1]}" in message
        # 002 committed in its own transaction; nothing of 003 remains
        assert await applied_versions(url) == ["001", "002"]
        assert await conn.fetchval(
            "SELECT count(*) FROM information_schema.columns WHERE table_name = 'wallets' "
            "AND column_name = 'address_normalized'") == 0
        assert await conn.fetchval(
            "SELECT count(*) FROM pg_constraint WHERE conname = 'wallets_public_address_key'") == 1
        # once the duplicate is resolved, the rest applies
        await conn.execute("DELETE FROM wallets WHERE id = $1", ids[1])
        assert await apply_migrations(url, echo=lambda _: None) == ALL_VERSIONS[2:]
    finally:
        await conn.close()


async def test_seed_database_with_data_migrates_and_keeps_it(
    server_dsn: str, fresh_db_factory: DbFactory, tmp_path: Path
) -> None:
    url = await fresh_db_factory(server_dsn)
    await apply_migrations(url, copy_migrations(tmp_path / "seed", upto="001"), echo=lambda _: None)
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("SET TimeZone = 'UTC'")
        user = await conn.fetchval(
            "INSERT INTO users (email, password_hash) VALUES ('a..b@example.com', 'x') RETURNING id")
        wallet = await conn.fetchval(
            "INSERT INTO wallets (user_id, chain, public_address, balance_usdt) VALUES ($1, 'bsc', $2, 12.34) RETURNING id",
            user, EVM_1)
        await conn.execute(
            """INSERT INTO transactions (user_id, wallet_id, tx_hash, chain, from_address, to_address, amount, tx_type,
                                         block_timestamp) VALUES ($1, $2, $3, 'bsc', 'a', 'b', 1.5, 'deposit',
                                         '2025-06-01 08:00:00')""",
            user, wallet, "0x" + "AB" * 32)
        # the seed's CHECK (created_at = CURRENT_TIMESTAMP) holds on insert only
        await conn.execute("INSERT INTO audit_trail (user_id, action_type) VALUES ($1, 'wallet_created')", user)
        audit_time = await conn.fetchval("SELECT created_at FROM audit_trail")
        assert await apply_migrations(url, echo=lambda _: None) == ALL_VERSIONS[1:]
        row = await conn.fetchrow("SELECT block_timestamp::text, amount, source, log_index FROM transactions")
        assert tuple(row) == ("2025-06-01 08:00:00+00", 1.5, "platform", None)
        assert await conn.fetchval("SELECT created_at FROM audit_trail") == audit_time.replace(tzinfo=UTC)
        assert await conn.fetchval("SELECT address_normalized FROM wallets") == EVM_1.lower()
        # legacy rows a new CHECK would reject leave that CHECK NOT VALID (still enforced on new rows)
        validated = dict(await conn.fetch(
            "SELECT conname, convalidated FROM pg_constraint WHERE conname = ANY($1::text[])",
            ["users_email_format", "transactions_tx_hash_format", "wallets_address_format"]))
        assert validated == {"users_email_format": False, "transactions_tx_hash_format": False,
                             "wallets_address_format": True}
    finally:
        await conn.close()


async def test_misnamed_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "1-init.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match=r"1-init\.sql"):
        load_migrations(tmp_path)


async def test_failing_sql_names_the_file_and_hides_the_password(
    pg_server_dsn: str, fresh_db_factory: DbFactory, tmp_path: Path
) -> None:
    url = with_password(await fresh_db_factory(pg_server_dsn), "s3cret-pw")
    (tmp_path / "001_ok.sql").write_text("CREATE TABLE ok (id int);")
    (tmp_path / "002_broken.sql").write_text("CREATE TABLE half (id int);\nSELECT * FROM missing_table;")
    with pytest.raises(MigrationError, match=r"002_broken\.sql failed") as failure:
        await apply_migrations(url, tmp_path, echo=lambda _: None)
    assert "s3cret" not in str(failure.value) and "missing_table" in str(failure.value)
    conn = await asyncpg.connect(url)
    try:
        assert await conn.fetchval("SELECT to_regclass('half') IS NULL")
        assert await conn.fetchval("SELECT to_regclass('ok') IS NOT NULL")
    finally:
        await conn.close()


# ------------------------------------------------------------------------------------------------- lock timeout

REPO = Path(__file__).resolve().parents[1]


def run_cli_migrate(url: str, migrations: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITADEL_")}
    env.update({"CITADEL_DATABASE_URL": url, "CITADEL_MIGRATIONS_DIR": str(migrations)})
    return subprocess.run([sys.executable, "-m", "indexer", "migrate", *args], env=env, capture_output=True,
                          text=True, timeout=120, cwd=REPO)


async def test_a_migration_behind_a_busy_table_stops_at_the_lock_timeout_and_applies_nothing(
    server_dsn: str, fresh_db_factory: DbFactory, tmp_path: Path
) -> None:
    url = with_password(await fresh_db_factory(server_dsn), "s3cret-pw")
    migrations = tmp_path / "migrations"
    migrations.mkdir()
    (migrations / "001_busy.sql").write_text("CREATE TABLE busy (id int);\n")
    await apply_migrations(url, migrations, echo=lambda _: None)
    (migrations / "002_alter_busy.sql").write_text(
        "CREATE TABLE side_effect (id int);\nALTER TABLE busy ADD COLUMN note text;\n")
    blocker = await asyncpg.connect(url)
    try:
        # a long read: its ACCESS SHARE lock lasts until the transaction ends, and ALTER TABLE must wait for it
        await blocker.execute("BEGIN; SELECT count(*) FROM busy")
        # without the lock timeout this run would wait for the blocker forever (the subprocess times out)
        busy = await asyncio.to_thread(run_cli_migrate, url, migrations, "--lock-timeout-s", "0.5")
        assert busy.returncode == 1
        assert busy.stdout == ""
        (line,) = busy.stderr.strip().splitlines()
        assert line.startswith("citadel-indexer: migrate: 002_alter_busy.sql: a table it changes is busy")
        assert "nothing of this migration was applied: retry later" in line
        assert "s3cret" not in busy.stderr
        assert await applied_versions(url) == ["001"]
        assert await blocker.fetchval("SELECT to_regclass('side_effect') IS NULL")
        assert await blocker.fetchval(
            "SELECT count(*) FROM information_schema.columns WHERE table_name = 'busy' AND column_name = 'note'") == 0
    finally:
        await blocker.close()
    done = await asyncio.to_thread(run_cli_migrate, url, migrations, "--lock-timeout-s", "0.5")
    assert done.returncode == 0, done.stderr
    assert "applied 002_alter_busy.sql" in done.stdout
    assert await applied_versions(url) == ["001", "002"]


async def test_each_migration_runs_with_the_lock_timeout(pg_server_dsn: str, fresh_db_factory: DbFactory,
                                                          tmp_path: Path) -> None:
    url = await fresh_db_factory(pg_server_dsn)
    migrations = tmp_path / "migrations"
    migrations.mkdir()
    (migrations / "001_seen.sql").write_text(
        "CREATE TABLE seen AS SELECT 1 AS version, current_setting('lock_timeout') AS lock_timeout;\n")
    (migrations / "002_seen.sql").write_text(
        "INSERT INTO seen SELECT 2, current_setting('lock_timeout');\n")
    default = await asyncio.to_thread(run_cli_migrate, url, migrations)
    assert default.returncode == 0, default.stderr
    (migrations / "003_seen.sql").write_text("INSERT INTO seen SELECT 3, current_setting('lock_timeout');\n")
    flagged = await asyncio.to_thread(run_cli_migrate, url, migrations, "--lock-timeout-s", "2.5")
    assert flagged.returncode == 0, flagged.stderr
    conn = await asyncpg.connect(url)
    try:
        seen = [tuple(r) for r in await conn.fetch("SELECT version, lock_timeout FROM seen ORDER BY version")]
        assert seen == [(1, "5s"), (2, "5s"), (3, "2500ms")]
        assert await conn.fetchval("SHOW lock_timeout") == "0"  # the database's own setting is untouched
    finally:
        await conn.close()


@pytest.mark.parametrize("value", ["-1", "abc", "100000"])
async def test_a_bad_lock_timeout_is_a_usage_error(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    from indexer.cli import main

    with pytest.raises(SystemExit) as exited:
        main(["migrate", "--lock-timeout-s", value])
    assert exited.value.code == 2
    assert "--lock-timeout-s" in capsys.readouterr().err
