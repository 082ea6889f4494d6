"""The writer lease: which replica may write a chain, and the proof every write transaction checks (fencing).

Taking the lease, on one dedicated connection per chain (the *lease session*)::

    1. pg_try_advisory_lock(key)            at most one session holds it; it goes with the session
    2. writer_leases: epoch + 1, holder = this replica, backend_pid = this session, on the same connection.
       The UPDATE waits for every write transaction of the previous writer that already passed its fence check.

Every write transaction of the daemon (:class:`indexer.store.chain_store.ChainStore`) starts with
:data:`FENCE_SQL`: the chain's lease row, read ``FOR SHARE``, must still carry this replica's epoch, and the lease
session must still hold the advisory lock. Otherwise the transaction raises :class:`indexer.model.WriterFenced` and
nothing of it commits. So however the lease session died — a failover, a dropped NAT entry, an administrator's
``pg_terminate_backend``, all of which the client may never hear of — no write of the old writer can reach the
table once the session is gone, and none at all once another replica took over.

Watching the lease: :meth:`WriterLease.watch` runs a heartbeat on the lease session every ``heartbeat_s``; it must
answer within ``timeout_s`` and find the lease still ours, else :class:`LeaseLost` (the replica stops writing and
stands by again). The server notices a client that vanished through TCP keepalives set on the lease session, so
its advisory lock is freed within about a minute rather than the hours of the kernel's default.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from indexer.store import db

log = logging.getLogger("citadel.lease")

# pg_advisory_lock keys: one writer per chain ("CIT" + chain number)
WRITER_LOCK_KEYS = {"bsc": 0x434954_01, "polygon": 0x434954_02, "tron": 0x434954_03}

# the server drops a silent lease session after ~idle + interval * count seconds, freeing the lock
LEASE_SERVER_SETTINGS = {
    **db.SERVER_SETTINGS,
    "application_name": "citadel-indexer lease",
    "tcp_keepalives_idle": "15",
    "tcp_keepalives_interval": "5",
    "tcp_keepalives_count": "4",
}

FENCE_SQL = """
SELECT l.epoch = $2 AND EXISTS (
           SELECT 1 FROM pg_locks k
           WHERE k.locktype = 'advisory' AND k.granted AND k.pid = l.backend_pid
             AND k.classid = $3 AND k.objid = $4 AND k.objsubid = 1)
FROM writer_leases l WHERE l.chain = $1 FOR SHARE OF l
"""

_HEARTBEAT_SQL = FENCE_SQL.replace("FOR SHARE OF l", "")

_TAKE_SQL = """
INSERT INTO writer_leases (chain, epoch, holder, backend_pid, acquired_at)
VALUES ($1, 1, $2, pg_backend_pid(), now())
ON CONFLICT (chain) DO UPDATE SET epoch = writer_leases.epoch + 1, holder = EXCLUDED.holder,
    backend_pid = EXCLUDED.backend_pid, acquired_at = EXCLUDED.acquired_at
RETURNING epoch, backend_pid
"""


class LeaseLost(Exception):
    """The lease session stopped answering, was cut, or no longer holds the lease: stop writing."""


@dataclass(frozen=True, slots=True)
class Fence:
    """What a write transaction checks: the chain's lease must still be this epoch, held by the lease session."""

    chain: str
    epoch: int

    @property
    def lock_key(self) -> int:
        return WRITER_LOCK_KEYS[self.chain]

    def params(self) -> tuple[str, int, int, int]:
        """Arguments of :data:`FENCE_SQL`: chain, epoch, the advisory lock's ``classid`` and ``objid``."""
        key = self.lock_key
        return self.chain, self.epoch, (key >> 32) & 0xFFFFFFFF, key & 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class WriterInfo:
    """The chain's writer as the database knows it (``alive``: its lease session still holds the lock)."""

    holder: str
    epoch: int
    acquired_at: datetime
    alive: bool


class WriterLease:
    """A taken lease. ``async with`` or :meth:`release`; :meth:`watch` raises :class:`LeaseLost` when it is gone."""

    def __init__(self, conn: Any, fence: Fence, holder: str, backend_pid: int) -> None:
        self.conn = conn
        self.fence = fence
        self.holder = holder
        self.backend_pid = backend_pid
        self._lost = asyncio.Event()
        conn.add_termination_listener(lambda _conn: self._lost.set())

    @classmethod
    async def try_take(cls, dsn: str, chain: str, holder: str) -> WriterLease | None:
        """The lease, or None when another session holds the chain's writer lock."""
        conn = await asyncpg.connect(dsn, server_settings=LEASE_SERVER_SETTINGS)
        try:
            if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", WRITER_LOCK_KEYS[chain]):
                await conn.close()
                return None
            row = await conn.fetchrow(_TAKE_SQL, chain, holder)
        except BaseException:
            conn.terminate()
            raise
        lease = cls(conn, Fence(chain, int(row["epoch"])), holder, int(row["backend_pid"]))
        log.info("writer lease taken", extra={"fields": {"chain": chain, "epoch": lease.fence.epoch,
                                                          "replica": holder}})
        return lease

    async def __aenter__(self) -> WriterLease:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.release()

    async def watch(self, heartbeat_s: float, timeout_s: float) -> None:
        """Until the lease is lost; then raise :class:`LeaseLost`. Never returns normally."""
        while True:
            lost = asyncio.ensure_future(self._lost.wait())
            try:
                await asyncio.wait({lost}, timeout=heartbeat_s)
            finally:
                lost.cancel()
            if self._lost.is_set():
                raise LeaseLost(f"{self.fence.chain}: the lease session was closed")
            try:
                async with asyncio.timeout(timeout_s):
                    still_ours = await self.conn.fetchval(_HEARTBEAT_SQL, *self.fence.params())
            except TimeoutError:
                raise LeaseLost(f"{self.fence.chain}: the lease session did not answer within {timeout_s} s") from None
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                raise LeaseLost(f"{self.fence.chain}: the lease session failed ({type(exc).__name__})") from None
            if not still_ours:
                raise LeaseLost(f"{self.fence.chain}: another replica holds the writer lease now")

    async def release(self) -> None:
        """Give the lease up (the lock goes with the session). Never waits on a session that stopped answering."""
        if self.conn.is_closed():
            return
        try:
            async with asyncio.timeout(2):
                await self.conn.close()
        except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            with suppress(Exception):
                self.conn.terminate()


async def current_writer(pool: asyncpg.Pool, chain: str) -> WriterInfo | None:
    """Who writes ``chain``, as recorded; ``alive`` False when that lease session no longer holds the lock."""
    key = WRITER_LOCK_KEYS[chain]
    row = await pool.fetchrow(
        """SELECT l.holder, l.epoch, l.acquired_at, EXISTS (
                   SELECT 1 FROM pg_locks k
                   WHERE k.locktype = 'advisory' AND k.granted AND k.pid = l.backend_pid
                     AND k.classid = $2 AND k.objid = $3 AND k.objsubid = 1) AS alive
           FROM writer_leases l WHERE l.chain = $1""",
        chain, (key >> 32) & 0xFFFFFFFF, key & 0xFFFFFFFF,
    )
    if row is None:
        return None
    return WriterInfo(row["holder"], int(row["epoch"]), row["acquired_at"], bool(row["alive"]))
