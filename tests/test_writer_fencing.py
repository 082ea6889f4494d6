"""One writer per chain, however its lock session dies: fencing inside every write transaction, on a real PostgreSQL.

The failure this guards against, as an operator saw it: replica A held the writer lock; its lock session vanished
silently (the server side ended, A's socket never heard of it) while A's pool still reached the database; replica B
took the lock within seconds; A never noticed and kept committing rows of its own node's fork: deposits that never
happened, in the table a custody platform pays out from.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from citadel_devtools.anvil import Anvil
from citadel_devtools.ports import free_port
from indexer.model import Batch, WriterFenced
from indexer.store.chain_store import ChainStore
from indexer.store.lease import LeaseLost, WriterLease, current_writer
from tests.support import evm
from tests.support.daemon import Daemon, cursor, daemon_env, health
from tests.support.sync import KnownWallet, actual_rows, add_wallet, eventually, expected_evm_rows
from tests.support.tcpproxy import TcpProxy


async def lock_released(pool: asyncpg.Pool, backend_pid: int) -> bool:
    return not await pool.fetchval(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = $1", backend_pid)


async def test_a_writer_whose_lease_session_ended_can_never_commit_again(db_url: str, pool: asyncpg.Pool) -> None:
    lease_a = await WriterLease.try_take(db_url, "bsc", "replica-a")
    assert lease_a is not None
    store_a = ChainStore(pool, "bsc", lease_a.fence)
    await store_a.commit(Batch(stream="realtime", cursor=10))
    assert await WriterLease.try_take(db_url, "bsc", "replica-b") is None  # one writer at a time
    # the lease session ends on the server; A's pool connections are untouched
    await pool.execute("SELECT pg_terminate_backend($1)", lease_a.backend_pid)
    await eventually(lambda: lock_released(pool, lease_a.backend_pid), timeout_s=10)
    with pytest.raises(WriterFenced):  # refused even before anyone took over
        await store_a.commit(Batch(stream="realtime", cursor=11))
    lease_b = await WriterLease.try_take(db_url, "bsc", "replica-b")
    assert lease_b is not None and lease_b.fence.epoch == lease_a.fence.epoch + 1
    try:
        await ChainStore(pool, "bsc", lease_b.fence).commit(Batch(stream="realtime", cursor=20))
        for write in (store_a.commit(Batch(stream="realtime", cursor=12)),
                      store_a.write_balances([(1, {})]),
                      store_a.upsert_tokens([("0x" + "1" * 40, "X", 6)])):
            with pytest.raises(WriterFenced):
                await write
        assert await pool.fetchval("SELECT block_number FROM sync_cursors WHERE stream = 'realtime'") == 20
        writer = await current_writer(pool, "bsc")
        assert writer is not None and writer.holder == "replica-b" and writer.alive
    finally:
        await lease_b.release()
        await lease_a.release()


async def test_a_store_without_a_lease_only_reads(pool: asyncpg.Pool) -> None:
    store = ChainStore(pool, "bsc")
    assert await store.cursor("realtime") is None
    with pytest.raises(WriterFenced):
        await store.commit(Batch(stream="realtime", cursor=1))


async def test_the_next_writer_waits_for_a_commit_the_old_one_had_already_begun(
    db_url: str, pool: asyncpg.Pool
) -> None:
    """The old writer's transaction that passed its fence holds the lease row FOR SHARE: the new writer's epoch bump
    waits for it, and the new writer reads the state after it. No write can interleave with a takeover."""
    lease_a = await WriterLease.try_take(db_url, "bsc", "replica-a")
    assert lease_a is not None
    store_a = ChainStore(pool, "bsc", lease_a.fence)
    take_b: asyncio.Task[WriterLease | None] | None = None
    try:
        async with store_a._writing() as conn:  # fence passed
            await pool.execute("SELECT pg_terminate_backend($1)", lease_a.backend_pid)
            await eventually(lambda: lock_released(pool, lease_a.backend_pid), timeout_s=10)
            take_b = asyncio.create_task(WriterLease.try_take(db_url, "bsc", "replica-b"))

            async def b_waits_on_the_lease_row() -> bool:
                return bool(await pool.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND application_name = 'citadel-indexer lease'"))

            await eventually(b_waits_on_the_lease_row, timeout_s=10)
            assert not take_b.done()
            await conn.execute("INSERT INTO sync_cursors (chain, stream, block_number) VALUES ('bsc', 'realtime', 5)")
        lease_b = await take_b
        assert lease_b is not None
        await lease_b.release()
        assert await pool.fetchval("SELECT block_number FROM sync_cursors WHERE stream = 'realtime'") == 5
    finally:
        if take_b is not None and not take_b.done():
            take_b.cancel()
        await lease_a.release()


def via_proxy(db_url: str, port: int) -> str:
    parts = urlsplit(db_url)
    netloc = parts.netloc.rsplit("@", 1)
    host = f"127.0.0.1:{port}"
    return urlunsplit(parts._replace(netloc=f"{netloc[0]}@{host}" if len(netloc) == 2 else host))


async def pg_endpoint(pool: asyncpg.Pool) -> tuple[str, int]:
    """Host and TCP port of the test server (the embedded one may listen on a socket too: the TCP side is used)."""
    row = await pool.fetchrow("SELECT coalesce(host(inet_server_addr()), '127.0.0.1') AS h, "
                              "current_setting('port')::int AS p")
    return str(row["h"]), int(row["p"])


async def test_a_silent_lease_session_is_noticed_by_its_heartbeat(db_url: str, pool: asyncpg.Pool) -> None:
    host, port = await pg_endpoint(pool)
    async with TcpProxy(host, port) as proxy:
        lease = await WriterLease.try_take(via_proxy(db_url, proxy.port), "bsc", "replica-a")
        assert lease is not None
        client_port = await pool.fetchval("SELECT client_port FROM pg_stat_activity WHERE pid = $1",
                                          lease.backend_pid)
        watching = asyncio.create_task(lease.watch(0.1, 1.0))
        await asyncio.sleep(0.3)
        assert not watching.done()  # a healthy session keeps the lease
        proxy.blackhole(client_port)
        with pytest.raises(LeaseLost, match="did not answer"):
            async with asyncio.timeout(20):
                await watching
        await lease.release()  # never hangs on the silent socket


# ---------------------------------------------------------------------------------------------------- end to end


def fork_history(node: Anvil, token: str, wallets: list[KnownWallet], outsider: str, amount: int, n: int) -> None:
    """``n`` transfers touching known wallets, amounts from ``amount`` up (each node gets its own amounts)."""
    for i in range(n):
        w = wallets[i % len(wallets)]
        if i % 2:
            evm.token_transfer(node, token, w.address, outsider, amount + i)
        else:
            evm.token_transfer(node, token, outsider, w.address, amount + i)


async def test_split_brain_a_replica_whose_lock_session_vanished_never_writes_its_fork(
    anvil_factory: Any, pool: asyncpg.Pool, db_url: str, daemons: list[Daemon], tmp_path: Path
) -> None:
    """Replica A follows a node on a fork; its lease session vanishes silently (server side ended, A's socket black-
    holed: A hears nothing) while its pool still reaches the database; replica B, on the canonical node, takes over.
    A keeps seeing new fork blocks and tries to commit them: every one is fenced, A stands by, and the table ends
    equal to the canonical chain, computed independently from B's node."""
    canonical = anvil_factory(56)
    accounts = evm.accounts(canonical)
    token = evm.deploy_token(canonical, 18, "USDT")
    wallets = [await add_wallet(pool, "bsc", evm.to_checksum(a)) for a in accounts[1:3]]
    outsider = accounts[8]
    for a in [*accounts[1:3], outsider]:
        evm.token_mint(canonical, token, accounts[0], a, 10**24)
    fork_point = evm.block_number(canonical)
    fork = anvil_factory(56, extra_args=["--fork-url", canonical.url, "--fork-block-number", str(fork_point)])
    fork_history(fork, token, wallets, outsider, 1_000, 8)  # only on the fork
    fork_history(canonical, token, wallets, outsider, 5_000, 4)  # only on the canonical chain

    host, port = await pg_endpoint(pool)
    async with TcpProxy(host, port) as proxy:
        port_a, port_b = free_port(), free_port()
        env_a = daemon_env(via_proxy(db_url, proxy.port), fork, {"USDT": token}, CITADEL_REPLICA_ID="replica-a",
                           CITADEL_METRICS_PORT=str(port_a), CITADEL_BSC__CONFIRMATIONS="200",
                           CITADEL_WRITER_HEARTBEAT_S="0.5",
                           CITADEL_WRITER_TIMEOUT_S="600")  # the fence alone must stop A, not its heartbeat
        a = Daemon(env_a, tmp_path / "a.log")
        daemons.append(a)
        a.start()
        await eventually(lambda: _cursor_at_least(pool, evm.block_number(fork)), timeout_s=60)
        assert await _fork_rows(pool, canonical, token, wallets)  # A wrote its fork: B will have to undo it

        lease_pid = await pool.fetchval("SELECT backend_pid FROM writer_leases WHERE chain = 'bsc'")
        client_port = await pool.fetchval("SELECT client_port FROM pg_stat_activity WHERE pid = $1", lease_pid)
        proxy.blackhole(client_port)
        await pool.execute("SELECT pg_terminate_backend($1)", lease_pid)

        b = Daemon(daemon_env(db_url, canonical, {"USDT": token}, CITADEL_REPLICA_ID="replica-b",
                              CITADEL_METRICS_PORT=str(port_b), CITADEL_BSC__CONFIRMATIONS="200",
                              CITADEL_WRITER_HEARTBEAT_S="0.5"), tmp_path / "b.log")
        daemons.append(b)
        b.start()

        async def b_writes() -> bool:
            writer = await current_writer(pool, "bsc")
            return writer is not None and writer.holder == "replica-b" and writer.alive

        await eventually(b_writes, timeout_s=60)
        for round_ in range(4):  # both nodes keep producing blocks; A keeps trying to write its fork
            fork_history(fork, token, wallets, outsider, 2_000 + 100 * round_, 3)
            fork_history(canonical, token, wallets, outsider, 6_000 + 100 * round_, 2)
            await asyncio.sleep(0.5)
        evm.mine(canonical, 3)
        head = evm.block_number(canonical)
        await eventually(lambda: _cursor_at_least(pool, head), timeout_s=60)

        async def a_stands_by() -> bool:
            chain = (await asyncio.to_thread(health, port_a))["chains"]["bsc"]
            return chain["status"] in ("standby", "reacquiring") and chain["writer"] is False

        await eventually(a_stands_by, timeout_s=30)
        b_health = (await asyncio.to_thread(health, port_b))["chains"]["bsc"]
        assert b_health["writer"] is True and b_health["writer_replica"] == "replica-b"
        assert b.stop() == 0
        # A's database connections pass through the proxy, which runs in this event loop: wait in a thread
        assert await asyncio.to_thread(a.stop) == 0
    done = await cursor(pool)
    assert done >= head
    assert await actual_rows(pool, "bsc") == expected_evm_rows(canonical, wallets, [token], 0, done)
    assert "writer lock lost" in a.log_text()
    assert not await _fork_rows(pool, canonical, token, wallets)


async def _cursor_at_least(pool: asyncpg.Pool, block: int) -> bool:
    return await cursor(pool) >= block


async def _fork_rows(pool: asyncpg.Pool, canonical: Anvil, token: str, wallets: list[KnownWallet]) -> bool:
    """Does the table hold a row the canonical chain does not have?"""
    stored = set(await actual_rows(pool, "bsc"))
    truth = set(expected_evm_rows(canonical, wallets, [token], 0, evm.block_number(canonical)))
    return bool(stored - truth)

