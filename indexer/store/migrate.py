"""The schema migration runner (asyncpg only).

Migrations are the files ``NNN_name.sql`` of the migrations directory (``indexer/migrations``, shipped in the
package), applied in version order, each in its own transaction, and recorded in
``schema_migrations (version, name, checksum, applied_at)`` with the SHA-256 of the file. A session advisory lock
is held for the whole run, so replicas starting together apply each file once: the others wait, then find nothing
to apply. That lock needs a direct connection: through a transaction-mode pooler (Neon's ``-pooler`` endpoint,
PgBouncer) a session lock is not held across transactions, so run migrations against the direct endpoint.

An applied file whose content changed is refused (``MigrationError`` naming the file) before anything is applied:
write a new migration instead of editing an applied one. The DSN is never printed (it can hold a password).

Each migration's transaction runs with ``SET LOCAL lock_timeout`` (default 5 s): on a live database a migration
that waits for a table lock would queue every later query on that table behind it, so a migration that cannot get
its locks in time stops instead (:class:`TableBusy`, nothing of it applied) and is simply run again later.

With ``indexer_password`` (``CITADEL_INDEXER_DB_PASSWORD``), the run ends by giving the daemon's role
``citadel_indexer`` LOGIN and that password, sent as a SCRAM verifier only (:mod:`indexer.store.roles`).
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg

from indexer.store import roles

MIGRATIONS_DIR_ENV = "CITADEL_MIGRATIONS_DIR"
# pg_advisory_lock key of the migration run: the bytes "CTDLMIGR" as a signed 64-bit integer.
ADVISORY_LOCK_KEY = int.from_bytes(b"CTDLMIGR", "big", signed=True)
# how long a migration may wait for each lock it needs before it gives up (SET LOCAL lock_timeout); 0 waits forever
DEFAULT_LOCK_TIMEOUT_S = 5.0
_FILE_RE = re.compile(r"^(?P<version>\d{3,})_(?P<name>[A-Za-z0-9_\-]+)\.sql$")

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    checksum   CHAR(64) NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
COMMENT ON TABLE schema_migrations IS
    'Applied migrations (indexer.store.migrate): file version, name, SHA-256 of the file, when applied.';
"""


class MigrationError(RuntimeError):
    """A migration cannot be applied: an applied file was edited, a file is misnamed, or its SQL failed."""


class TableBusy(MigrationError):
    """A migration did not get a lock within the lock timeout: another session is using a table it changes."""


@dataclass(frozen=True)
class MigrationFile:
    version: str
    name: str
    path: Path
    checksum: str

    @property
    def filename(self) -> str:
        return self.path.name


@dataclass(frozen=True)
class MigrationStatus:
    """One migration: ``applied_at`` is None when pending; ``checksum_ok`` is False when the applied file was
    edited since (or is missing from the directory), True otherwise."""

    version: str
    name: str
    applied_at: datetime | None
    checksum_ok: bool


def default_migrations_dir() -> Path:
    """``CITADEL_MIGRATIONS_DIR`` when set, else the SQL files shipped inside the package (``indexer/migrations``,
    package data: the same files in a checkout and in an installed wheel)."""
    override = os.environ.get(MIGRATIONS_DIR_ENV, "").strip()
    if override:
        return Path(override)
    return Path(__file__).resolve().parents[1] / "migrations"


def load_migrations(migrations_dir: Path | None = None) -> list[MigrationFile]:
    """The migration files, in version order. Raises MigrationError on a misnamed ``.sql`` or a duplicate version."""
    directory = migrations_dir if migrations_dir is not None else default_migrations_dir()
    if not directory.is_dir():
        raise MigrationError(f"migrations directory not found: {directory}")
    files: dict[str, MigrationFile] = {}
    for path in sorted(directory.glob("*.sql")):
        match = _FILE_RE.match(path.name)
        if match is None:
            raise MigrationError(f"{path.name}: migration files are named NNN_name.sql")
        version = match["version"]
        if version in files:
            raise MigrationError(f"{path.name}: version {version} also used by {files[version].filename}")
        files[version] = MigrationFile(
            version=version,
            name=match["name"],
            path=path,
            checksum=hashlib.sha256(path.read_bytes()).hexdigest(),
        )
    return [files[v] for v in sorted(files, key=int)]


def _describe(error: asyncpg.PostgresError) -> str:
    parts = [str(error)]
    for attr in ("detail", "hint"):
        value = getattr(error, attr, None)
        if value:
            parts.append(f"{attr.upper()}: {value}")
    return "\n".join(parts)


async def _applied(conn: Any) -> dict[str, asyncpg.Record]:
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    if not exists:
        return {}
    rows = await conn.fetch("SELECT version, name, checksum, applied_at FROM schema_migrations")
    return {row["version"]: row for row in rows}


async def apply_migrations(
    dsn: str,
    migrations_dir: Path | None = None,
    *,
    echo: Callable[[str], None] = print,
    lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S,
    indexer_password: str | None = None,
) -> list[str]:
    """Apply pending migrations; return the versions applied (empty when up to date). Then, when
    ``indexer_password`` is given, give ``citadel_indexer`` LOGIN and that password (it is never echoed)."""
    if lock_timeout_s < 0:
        raise ValueError("lock_timeout_s must be >= 0")
    if indexer_password is not None and not indexer_password:
        raise MigrationError("the password for citadel_indexer is empty")
    migrations = load_migrations(migrations_dir)
    # statement_cache_size=0: harmless on a direct connection, required behind a transaction pooler
    conn = await asyncpg.connect(dsn, statement_cache_size=0)
    try:
        if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", ADVISORY_LOCK_KEY):
            echo("waiting for another migration run to finish")
            await conn.execute("SELECT pg_advisory_lock($1)", ADVISORY_LOCK_KEY)
        try:
            done = await _apply_pending(conn, migrations, lock_timeout_s, echo)
            if indexer_password is not None:
                await _set_indexer_password(conn, indexer_password, lock_timeout_s)
                echo(f"{roles.INDEXER_ROLE}: login enabled, password set (sent as a SCRAM-SHA-256 verifier)")
            return done
        finally:
            # closing the session releases the lock anyway; unlocking first keeps a pooled connection clean
            try:
                await conn.execute("SELECT pg_advisory_unlock($1)", ADVISORY_LOCK_KEY)
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
                pass
    finally:
        await conn.close()


async def _set_lock_timeout(conn: Any, seconds: float) -> None:
    """For the current transaction only (SET LOCAL)."""
    await conn.execute("SELECT set_config('lock_timeout', $1, true)", f"{round(seconds * 1000)}ms")


async def _apply_pending(
    conn: Any, migrations: list[MigrationFile], lock_timeout_s: float, echo: Callable[[str], None]
) -> list[str]:
    await conn.execute(_CREATE_TABLE)
    applied = await _applied(conn)
    for migration in migrations:
        row = applied.get(migration.version)
        if row is not None and row["checksum"] != migration.checksum:
            raise MigrationError(
                f"{migration.filename} was applied on {row['applied_at']:%Y-%m-%d %H:%M:%S%z} "
                "and has changed since (checksum mismatch): restore it and put the change in a new "
                "migration file"
            )
    pending = [m for m in migrations if m.version not in applied]
    if not pending:
        echo("nothing to apply")
        return []
    done: list[str] = []
    for migration in pending:
        sql = migration.path.read_text(encoding="utf-8")
        if hashlib.sha256(sql.encode("utf-8")).hexdigest() != migration.checksum:
            raise MigrationError(f"{migration.filename} changed while migrations were running")
        started = time.perf_counter()
        try:
            async with conn.transaction():
                await _set_lock_timeout(conn, lock_timeout_s)
                await conn.execute(sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    migration.version,
                    migration.name,
                    migration.checksum,
                )
        except asyncpg.LockNotAvailableError:
            raise TableBusy(
                f"{migration.filename}: a table it changes is busy (another session held a conflicting lock for "
                f"more than {lock_timeout_s:g} s); nothing of this migration was applied: retry later, or allow a "
                "longer wait with --lock-timeout-s"
            ) from None
        except asyncpg.PostgresError as error:
            raise MigrationError(
                f"{migration.filename} failed and was rolled back: {_describe(error)}"
            ) from error
        elapsed_ms = (time.perf_counter() - started) * 1000
        echo(f"applied {migration.filename} ({elapsed_ms:.0f} ms)")
        done.append(migration.version)
    return done


async def _set_indexer_password(conn: Any, password: str, lock_timeout_s: float) -> None:
    if not await roles.role_exists(conn):
        raise MigrationError(
            f"a password is set for {roles.INDEXER_ROLE} but the role does not exist: the migration that creates "
            "it (014_least_privilege.sql) is missing from the migrations directory"
        )
    try:
        async with conn.transaction():
            await _set_lock_timeout(conn, lock_timeout_s)
            await roles.set_login_password(conn, password)
    except asyncpg.PostgresError as error:
        # the server's message names the role and the missing privilege, never the statement's text
        raise MigrationError(f"cannot give {roles.INDEXER_ROLE} its login password: {_describe(error)}") from None


async def migration_status(dsn: str, migrations_dir: Path | None = None) -> list[MigrationStatus]:
    """Every migration file with when it was applied (None: pending) and whether its checksum still matches.
    Applied versions whose file is gone are listed too, with ``checksum_ok=False``."""
    migrations = load_migrations(migrations_dir)
    conn = await asyncpg.connect(dsn, statement_cache_size=0)
    try:
        applied = await _applied(conn)
    finally:
        await conn.close()
    result: list[MigrationStatus] = []
    for migration in migrations:
        row = applied.pop(migration.version, None)
        result.append(
            MigrationStatus(
                version=migration.version,
                name=migration.name,
                applied_at=row["applied_at"] if row is not None else None,
                checksum_ok=row is None or row["checksum"] == migration.checksum,
            )
        )
    for version, row in sorted(applied.items(), key=lambda item: int(item[0])):
        result.append(MigrationStatus(version=version, name=row["name"], applied_at=row["applied_at"],
                                      checksum_ok=False))
    return result
