"""The daemon as an operator runs it: ``citadel-indexer`` subprocesses, killed with SIGKILL and restarted.

Exactly-once across crashes: after any kill, the committed rows equal the chain up to the committed cursor (no
partial batch), and after a restart the table equals the chain (no gap, no duplicate).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.support import evm
from tests.support.daemon import Daemon, busy_bsc, busy_history, cursor, daemon_env
from tests.support.sync import actual_rows, add_wallet, eventually, expected_evm_rows

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


async def test_kill9_during_catch_up_and_realtime_then_restart_loses_and_duplicates_nothing(
    anvil_factory: Any, pool: asyncpg.Pool, db_url: str, daemons: list[Daemon], tmp_path: Path
) -> None:
    anvil = anvil_factory(56)
    token, wallets = await busy_bsc(anvil, pool, known=3, blocks=240)
    env = daemon_env(db_url, anvil, {"USDT": token}, CITADEL_BSC__MAX_BLOCK_RANGE="4",
                     CITADEL_BSC__CATCHUP_BATCH_BLOCKS="4")  # many small commits: the kill lands between two

    async def consistent_up_to_cursor() -> None:
        done = await cursor(pool)
        expected = [r for r in expected_evm_rows(anvil, wallets, [token], 0, max(done, 0)) if r[6] <= done]
        assert [r for r in await actual_rows(pool, "bsc")] == expected

    # 1. killed during catch-up
    first = Daemon(env, tmp_path / "run1.log")
    daemons.append(first)
    first.start()
    await eventually(lambda: _cursor_above(pool, 60), timeout_s=60)
    first.kill9()
    killed_at = await cursor(pool)
    assert killed_at < evm.block_number(anvil) - 5, "the kill should land during catch-up"
    await consistent_up_to_cursor()

    # 2. restarted, caught up, then killed while following new blocks
    second = Daemon(env, tmp_path / "run2.log")
    daemons.append(second)
    second.start()
    await eventually(lambda: _cursor_above(pool, evm.block_number(anvil) - 1), timeout_s=90)
    for _ in range(4):
        busy_history(anvil, wallets, token, 5)
        await asyncio.sleep(0.3)
    second.kill9()
    await consistent_up_to_cursor()
    busy_history(anvil, wallets, token, 10)

    # 3. restarted: resumes without gaps or duplicates
    third = Daemon(env, tmp_path / "run3.log")
    daemons.append(third)
    third.start()
    head = evm.block_number(anvil)
    await eventually(lambda: _cursor_above(pool, head - 1), timeout_s=90)
    assert third.stop() == 0
    # compared up to the committed cursor: anvil may mine the last sent transfer just after block_number was read
    done = await cursor(pool)
    assert done >= head
    assert await actual_rows(pool, "bsc") == expected_evm_rows(anvil, wallets, [token], 0, done)
    for daemon in (first, second, third):
        assert "SECRETKEY42" not in daemon.log_text()


async def _cursor_above(pool: asyncpg.Pool, block: int) -> bool:
    return await cursor(pool) >= block


async def test_daemon_serves_metrics_and_health_and_a_second_replica_stands_by(
    anvil_factory: Any, pool: asyncpg.Pool, db_url: str, daemons: list[Daemon], tmp_path: Path
) -> None:
    anvil = anvil_factory(56)
    token = evm.deploy_token(anvil, 18, "USDT")
    await add_wallet(pool, "bsc", evm.to_checksum(evm.accounts(anvil)[1]))
    evm.mine(anvil, 20)
    ports = []
    for i in range(2):
        from citadel_devtools.ports import free_port

        port = free_port()
        ports.append(port)
        d = Daemon(daemon_env(db_url, anvil, {"USDT": token}, CITADEL_METRICS_PORT=str(port),
                              CITADEL_LOG_FORMAT="text"), tmp_path / f"replica{i}.log")
        daemons.append(d)
        d.start()
        if i == 0:
            await eventually(lambda: _cursor_above(pool, 15), timeout_s=60)

    def fetch(port: int, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode()

    async def serving(port: int) -> bool:
        try:
            return (await asyncio.to_thread(fetch, port, "/healthz"))[0] in (200, 503)
        except OSError:
            return False

    await eventually(lambda: serving(ports[1]), timeout_s=30)
    status, body = await asyncio.to_thread(fetch, ports[0], "/metrics")
    assert status == 200
    assert 'citadel_watcher_up{chain="bsc"} 1.0' in body
    assert "citadel_sync_cursor_block" in body and "citadel_rpc_requests_total" in body
    assert "SECRETKEY42" not in body and "apikey" not in body  # endpoints are labelled redacted
    status, body = await asyncio.to_thread(fetch, ports[0], "/healthz")
    assert status == 200 and json.loads(body)["chains"]["bsc"]["status"] == "running"
    status, body = await asyncio.to_thread(fetch, ports[0], "/metrics")
    for collected in ("process_resident_memory_bytes", "process_cpu_seconds_total", "process_open_fds",
                      "python_gc_objects_collected_total"):
        assert collected in body
    status, body = await asyncio.to_thread(fetch, ports[0], "/readyz")
    ready = json.loads(body)
    assert status == 200 and ready["ready"] and ready["chains"]["bsc"]["lag_blocks"] is not None

    async def standby() -> bool:
        return json.loads((await asyncio.to_thread(fetch, ports[1], "/healthz"))[1])["chains"]["bsc"]["status"] \
            == "standby"

    await eventually(standby, timeout_s=30)
    status, body = await asyncio.to_thread(fetch, ports[1], "/readyz")  # standing by while another writes: ready
    assert status == 200 and json.loads(body)["chains"]["bsc"]["reason"] == "another replica writes it"
    assert "caught up" in daemons[0].log_text()  # the catch-up's progress lines
    for d in daemons:
        assert d.stop() == 0


async def test_cli_migrate_is_idempotent_and_reports_status(pg_server_dsn: str, tmp_path: Path) -> None:
    from tests.fixtures.postgres import create_database

    url = await create_database(pg_server_dsn)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("CITADEL_")}, "CITADEL_DATABASE_URL": url}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "indexer", *args], env=env, capture_output=True, text=True,
                              timeout=120, cwd=REPO)

    first = await asyncio.to_thread(run, "migrate")
    assert first.returncode == 0 and "applied 001_initial_schema.sql" in first.stdout
    second = await asyncio.to_thread(run, "migrate")
    assert second.returncode == 0 and "nothing to apply" in second.stdout
    status = await asyncio.to_thread(run, "migrate", "--status")
    lines = status.stdout.strip().splitlines()
    assert status.returncode == 0 and len(lines) >= 10
    newest = sorted(p.name for p in (REPO / "indexer" / "migrations").glob("*.sql"))[-1].split("_")[0]
    assert all(" applied " in line for line in lines) and lines[-1].startswith(newest + " ")
    assert url.split("@")[0] not in first.stdout + first.stderr  # credentials never printed


async def test_cli_backfill_reindexes_a_final_range_and_refuses_unfinalised_blocks(
    anvil_factory: Any, pool: asyncpg.Pool, db_url: str
) -> None:
    anvil = anvil_factory(56, extra_args=["--slots-in-an-epoch", "2"])  # finalized = head - 4
    token, wallets = await busy_bsc(anvil, pool, known=1, blocks=30)
    head = evm.block_number(anvil)
    env = daemon_env(db_url, anvil, {"USDT": token}, CITADEL_BSC__MAX_BLOCK_RANGE="7")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "indexer", "backfill", "--chain", "bsc", *args], env=env,
                              capture_output=True, text=True, timeout=120, cwd=REPO)

    refused = await asyncio.to_thread(run, "--from-block", "0", "--to-block", str(head))
    assert refused.returncode == 2 and "above the final block" in refused.stderr
    done = await asyncio.to_thread(run, "--from-block", "0", "--to-block", str(head - 5))
    assert done.returncode == 0, done.stderr
    assert "100.0%" in done.stderr  # progress lines
    expected = [r for r in expected_evm_rows(anvil, wallets, [token], 0, head) if r[6] <= head - 5]
    assert await actual_rows(pool, "bsc") == expected
    again = await asyncio.to_thread(run, "--from-block", "0", "--to-block", str(head - 5))
    assert again.returncode == 0 and await actual_rows(pool, "bsc") == expected


async def test_tron_kill9_then_restart_loses_and_duplicates_nothing(
    pool: asyncpg.Pool, db_url: str, daemons: list[Daemon], tmp_path: Path
) -> None:
    from citadel_devtools.tron_simulator import TronSimulator
    from tests.test_tron_sync import API_KEY, expected_tron_rows

    async with TronSimulator(api_key=API_KEY) as sim:
        usdt = sim.deploy_trc20("USDT", 6)
        people = [sim.new_address() for _ in range(4)]
        for p in people:
            sim.fund(p, 10**12)
            sim.mint(usdt, p, 10**12)
        wallets = [await add_wallet(pool, "tron", p) for p in people[:2]]
        for i in range(150):  # a transfer touching a known wallet in every block
            if i % 2:
                sim.transfer_trc20(usdt, people[i % 4], people[(i + 1) % 4], i + 1)
            else:
                sim.transfer_trx(people[(i + 1) % 4], people[i % 4], i + 1)
            sim.produce_block()
        env = {k: v for k, v in os.environ.items() if not k.startswith("CITADEL_")}
        env.update({
            "CITADEL_DATABASE_URL": db_url,
            "CITADEL_TRON__ENABLED": "true",
            "CITADEL_TRON__START_BLOCK": "0",
            "CITADEL_TRON__RPC_URLS": json.dumps([sim.url]),
            "CITADEL_TRON__API_KEY": API_KEY,
            "CITADEL_TRON__TOKENS": json.dumps({"USDT": usdt}),
            "CITADEL_TRON__POLL_INTERVAL_S": "0.1",
            "CITADEL_TRON__MAX_BLOCK_RANGE": "3",
            "CITADEL_TRON__CATCHUP_BATCH_BLOCKS": "3",
            "CITADEL_METRICS_PORT": "0",
            "CITADEL_LOG_LEVEL": "DEBUG",
        })

        async def tron_cursor_above(block: int) -> bool:
            value = await pool.fetchval(
                "SELECT block_number FROM sync_cursors WHERE chain = 'tron' AND stream = 'realtime'")
            return value is not None and value >= block

        first = Daemon(env, tmp_path / "tron1.log")
        daemons.append(first)
        first.start()
        await eventually(lambda: tron_cursor_above(60), timeout_s=60)
        first.kill9()
        killed_at = await pool.fetchval(
            "SELECT block_number FROM sync_cursors WHERE chain = 'tron' AND stream = 'realtime'")
        assert killed_at < sim.head_number - 5, "the kill should land during catch-up"
        for i in range(10):
            sim.transfer_trx(people[2], people[i % 2], 1000 + i)
            sim.produce_block()
        second = Daemon(env, tmp_path / "tron2.log")
        daemons.append(second)
        second.start()
        await eventually(lambda: tron_cursor_above(sim.head_number), timeout_s=90)
        assert second.stop() == 0
        assert await actual_rows(pool, "tron") == expected_tron_rows(sim, wallets, {usdt})
        assert all(r.api_key == API_KEY for r in sim.requests)
        for daemon in (first, second):
            assert API_KEY not in daemon.log_text()


async def test_daemon_retakes_its_writer_lock_after_losing_every_database_connection(
    anvil_factory: Any, pool: asyncpg.Pool, db_url: str, daemons: list[Daemon], tmp_path: Path
) -> None:
    anvil = anvil_factory(56)
    token, wallets = await busy_bsc(anvil, pool, known=1, blocks=10)
    daemon = Daemon(daemon_env(db_url, anvil, {"USDT": token}, CITADEL_LOG_FORMAT="text"), tmp_path / "d.log")
    daemons.append(daemon)
    daemon.start()
    await eventually(lambda: _cursor_above(pool, evm.block_number(anvil)), timeout_s=60)
    killer = await asyncpg.connect(db_url)
    cut = await killer.fetchval(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid() AND application_name LIKE 'citadel-indexer%'"
    )
    await killer.close()
    assert cut >= 2  # at least the writer lock's connection and the wallet listener's
    busy_history(anvil, wallets, token, 5)
    head = evm.block_number(anvil)
    await eventually(lambda: _cursor_above(pool, head), timeout_s=60)

    async def lock_held_again() -> bool:
        return bool(await pool.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND objid = $1",
            0x434954_01 & 0xFFFFFFFF))

    await eventually(lock_held_again, timeout_s=30)
    assert daemon.proc is not None and daemon.proc.poll() is None
    assert "writer lock lost" in daemon.log_text()
    assert daemon.stop() == 0
    # compared up to the committed cursor: anvil may mine the last sent transfer just after block_number was read
    done = await cursor(pool)
    assert done >= head
    assert await actual_rows(pool, "bsc") == expected_evm_rows(anvil, wallets, [token], 0, done)


async def test_cli_backfill_hands_its_job_to_the_running_daemon(
    anvil_factory: Any, pool: asyncpg.Pool, db_url: str, daemons: list[Daemon], tmp_path: Path
) -> None:
    """One writer per chain owns every commit: with a daemon holding the chain's writer lease, `backfill` records
    its job, the daemon runs it, and the command follows its progress to the end."""
    anvil = anvil_factory(56, extra_args=["--slots-in-an-epoch", "2"])  # finalized = head - 4
    token, wallets = await busy_bsc(anvil, pool, known=2, blocks=30)
    env = daemon_env(db_url, anvil, {"USDT": token}, CITADEL_BSC__MAX_BLOCK_RANGE="7")
    daemon = Daemon(env, tmp_path / "d.log")
    daemons.append(daemon)
    daemon.start()
    head = evm.block_number(anvil)
    await eventually(lambda: _cursor_above(pool, head), timeout_s=60)
    expected = [r for r in expected_evm_rows(anvil, wallets, [token], 0, head) if r[6] <= head - 5]
    lost = await pool.execute("DELETE FROM transactions WHERE block_number <= $1", head - 5)  # rows lost somehow
    assert int(lost.split()[-1]) > 0

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "indexer", "backfill", "--chain", "bsc", "--from-block", "0",
                               "--to-block", str(head - 5)], env=env, capture_output=True, text=True, timeout=120,
                              cwd=REPO)

    done = await asyncio.to_thread(run)
    assert done.returncode == 0, done.stderr
    assert "runs there" in done.stderr and "100.0%" in done.stderr
    assert [r for r in await actual_rows(pool, "bsc") if r[6] <= head - 5] == expected
    assert await pool.fetchval(
        "SELECT block_number FROM sync_cursors WHERE stream = $1", f"backfill:0-{head - 5}") == head - 5
    assert daemon.stop() == 0


async def test_a_banned_key_first_in_the_list_does_not_stop_the_chain(
    anvil_factory: Any, pool: asyncpg.Pool, db_url: str, daemons: list[Daemon], tmp_path: Path
) -> None:
    """RPC_URLS = [an endpoint answering every request with HTTP 403 and an HTML page, a healthy one]: before, the
    watcher stopped at start-up (``eth_chainId ... HTTP 403``) and the daemon exited. Now the banned endpoint cools
    down, is reported (citadel_rpc_endpoint_up 0) and the healthy one serves."""
    from citadel_devtools.ports import free_port
    from tests.support.badendpoints import BadEndpoint, html
    from tests.support.daemon import http_get

    anvil = anvil_factory(56)
    token, wallets = await busy_bsc(anvil, pool, known=2, blocks=15)
    port = free_port()
    async with BadEndpoint(html(403, "<html><body><h1>403 Forbidden</h1>key suspended</body></html>")) as banned:
        env = daemon_env(db_url, anvil, {"USDT": token}, CITADEL_METRICS_PORT=str(port),
                         CITADEL_BSC__RPC_URLS=json.dumps([banned.url_with("/v1/BANNEDKEY77"), anvil.url]))
        daemon = Daemon(env, tmp_path / "d.log")
        daemons.append(daemon)
        daemon.start()
        head = evm.block_number(anvil)
        await eventually(lambda: _cursor_above(pool, head), timeout_s=60)
        assert banned.requests  # it was tried, and passed over
        status, body = await asyncio.to_thread(http_get, port, "/metrics")
        assert status == 200
        assert any(line.startswith("citadel_rpc_endpoint_up{") and line.endswith(" 0.0")
                   for line in body.splitlines())
        status, body = await asyncio.to_thread(http_get, port, "/healthz")
        assert status == 200 and json.loads(body)["chains"]["bsc"]["status"] == "running"
        assert await asyncio.to_thread(daemon.stop) == 0
    assert await actual_rows(pool, "bsc") == expected_evm_rows(anvil, wallets, [token], 0, await cursor(pool))
    assert "BANNEDKEY77" not in daemon.log_text()
