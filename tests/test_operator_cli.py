"""The operator's commands through the real CLI, as subprocesses against a real PostgreSQL and anvil: ``status``,
``run --chains``, ``backfill --wallet``."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.support import evm
from tests.support.daemon import REPO, Daemon, busy_bsc, cursor, daemon_env
from tests.support.sync import actual_rows, eventually, expected_evm_rows

pytestmark = pytest.mark.slow


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "indexer", *args], env=env, capture_output=True, text=True,
                          timeout=120, cwd=REPO)


async def test_status_with_and_without_a_running_daemon(
    anvil_factory: Any, pool: asyncpg.Pool, db_url: str, daemons: list[Daemon], tmp_path: Path
) -> None:
    anvil = anvil_factory(56, extra_args=["--slots-in-an-epoch", "2"])
    token, wallets = await busy_bsc(anvil, pool, known=2, blocks=20)
    env = daemon_env(db_url, anvil, {"USDT": token}, CITADEL_REPLICA_ID="replica-x")

    await pool.execute(  # a backfill job half way (recorded 10 s ago, 5 blocks done since)
        """INSERT INTO sync_cursors (chain, stream, block_number, target_block, first_block, created_at, updated_at)
           VALUES ('bsc', 'backfill:0-9', 4, 9, -1, now() - interval '10 seconds', now())""")
    idle = await asyncio.to_thread(cli, env, "status", "--json")
    assert idle.returncode == 1, idle.stderr  # nobody indexes bsc
    report = json.loads(idle.stdout)
    bsc = report["chains"]["bsc"]
    assert bsc["state"] == "no writer" and bsc["cursor"] is None
    assert bsc["head"] == evm.block_number(anvil) and bsc["wallets_watched"] == 2
    (job,) = [b for b in bsc["backfills"] if b["kind"] == "range"]
    assert (job["done_to"], job["blocks_remaining"], job["finished"]) == (4, 5, False)
    assert job["blocks_per_s"] == pytest.approx(0.5, rel=0.2) and job["eta_s"] == pytest.approx(10, rel=0.2)
    table = await asyncio.to_thread(cli, env, "status")
    assert table.returncode == 1 and "no writer" in table.stdout and "backfill:0-9" in table.stdout

    daemon = Daemon(env, tmp_path / "d.log")
    daemons.append(daemon)
    daemon.start()
    head = evm.block_number(anvil)
    await eventually(lambda: _at(pool, head), timeout_s=60)
    await eventually(lambda: _job_done(pool), timeout_s=30)  # the daemon ran the recorded job
    running = await asyncio.to_thread(cli, env, "status", "--json")
    assert running.returncode == 0, running.stderr
    bsc = json.loads(running.stdout)["chains"]["bsc"]
    assert bsc["state"] == "writing" and bsc["writer"]["replica"] == "replica-x" and bsc["writer"]["alive"]
    assert bsc["cursor"] >= head and bsc["lag_blocks"] is not None and bsc["lag_blocks"] <= 2
    stored = await pool.fetchval("SELECT count(*) FROM transactions WHERE chain = 'bsc'")
    assert sum(bsc["rows"].values()) == stored > 0
    (job,) = [b for b in bsc["backfills"] if b["kind"] == "range"]
    assert job["finished"] and job["blocks_remaining"] == 0
    table = await asyncio.to_thread(cli, env, "status")
    assert table.returncode == 0 and "replica-x" in table.stdout and "done" in table.stdout
    assert "SECRETKEY42" not in table.stdout + running.stdout  # the RPC URL's key never shown
    assert await asyncio.to_thread(daemon.stop) == 0


async def _job_done(pool: asyncpg.Pool) -> bool:
    return bool(await pool.fetchval("SELECT block_number >= 9 FROM sync_cursors WHERE stream = 'backfill:0-9'"))


async def _at(pool: asyncpg.Pool, block: int) -> bool:
    return await cursor(pool) >= block


async def test_run_follows_only_the_chains_named(
    anvil_factory: Any, pool: asyncpg.Pool, db_url: str, daemons: list[Daemon], tmp_path: Path
) -> None:
    anvil = anvil_factory(56)
    token, _ = await busy_bsc(anvil, pool, known=1, blocks=5)
    env = daemon_env(db_url, anvil, {"USDT": token}, CITADEL_TRON__ENABLED="true",
                     CITADEL_TRON__RPC_URLS='["http://127.0.0.1:9/"]')  # tron enabled, but not asked for
    refused = await asyncio.to_thread(cli, env, "run", "--chains", "bsc,polygon")
    assert refused.returncode == 2 and "CITADEL_POLYGON__ENABLED" in refused.stderr
    daemon = Daemon(env, tmp_path / "d.log", args=("--chains", "bsc"))
    daemons.append(daemon)
    daemon.start()
    await eventually(lambda: _at(pool, evm.block_number(anvil)), timeout_s=60)
    assert {r["chain"] for r in await pool.fetch("SELECT chain FROM writer_leases")} == {"bsc"}
    assert await asyncio.to_thread(daemon.stop) == 0


async def test_backfill_of_one_wallet_reindexes_only_its_history(
    anvil_factory: Any, pool: asyncpg.Pool, db_url: str, daemons: list[Daemon], tmp_path: Path
) -> None:
    anvil = anvil_factory(56, extra_args=["--slots-in-an-epoch", "2"])  # finalized = head - 4
    token, wallets = await busy_bsc(anvil, pool, known=2, blocks=24)
    env = daemon_env(db_url, anvil, {"USDT": token})
    daemon = Daemon(env, tmp_path / "d.log")
    daemons.append(daemon)
    daemon.start()
    head = evm.block_number(anvil)
    await eventually(lambda: _at(pool, head), timeout_s=60)
    final = head - 5
    await pool.execute("DELETE FROM transactions WHERE block_number <= $1", final)  # lost, for both wallets
    done = await asyncio.to_thread(cli, env, "backfill", "--chain", "bsc", "--from-block", "0", "--to-block",
                                   str(final), "--wallet", evm.to_checksum(wallets[0].address))
    assert done.returncode == 0, done.stderr
    assert "runs there" in done.stderr  # the daemon, which holds the lease, ran it
    expected = [r for r in expected_evm_rows(anvil, wallets, [token], 0, head) if r[6] <= final]
    restored = [r for r in await actual_rows(pool, "bsc") if r[6] <= final]
    touching = {(r[1], r[2]) for r in expected if r[0] == wallets[0].id}  # the transfers of that wallet
    assert restored == [r for r in expected if (r[1], r[2]) in touching]  # only they came back
    assert restored and len(restored) < len(expected)
    unknown = await asyncio.to_thread(cli, env, "backfill", "--chain", "bsc", "--from-block", "0", "--to-block",
                                      str(final), "--wallet", "0x" + "12" * 20)
    assert unknown.returncode == 2 and "no active wallet" in unknown.stderr
    assert await asyncio.to_thread(daemon.stop) == 0
