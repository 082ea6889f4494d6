"""Chaos: two replicas of the daemon for several minutes against every production fault at once, then the table
compared with an independent computation from the canonical chain. Zero divergence is the only acceptable result.

Faults, on a seeded schedule (``CITADEL_CHAOS_SECONDS``, default 240; ``CITADEL_CHAOS_SEED``):
- the RPC endpoint is a load balancer: ~30% of requests reach a node 3 blocks behind, ~5% fail at the HTTP level
  (timeouts, 429, 5xx, truncated bodies), eth_getLogs ranges are limited as providers limit them;
- a replica is killed with SIGKILL every ~20 s and restarted a moment later;
- the writer's lease session is cut every ~45 s: its socket black-holed (the replica hears nothing) and its server
  side terminated, as in a database failover;
- the chain reorganises 3 blocks deep every ~30 s;
- wallets change under the daemon every ~12 s: one added with history, one re-owned, one deactivated and
  reactivated, one deleted.
Transfers (token and native) touching the known wallets arrive all along.

Run with ``make chaos`` (heavy: excluded from ``make test``). The figures are printed and written to
``chaos-report.json`` in the test's temporary directory.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from citadel_devtools.anvil import Anvil
from citadel_devtools.ports import free_port
from tests.support import evm
from tests.support.daemon import Daemon, cursor, daemon_env
from tests.support.faultproxy import FaultProxy, Faults
from tests.support.sync import KnownWallet, actual_rows, add_wallet, eventually, expected_evm_rows
from tests.support.tcpproxy import TcpProxy
from tests.test_writer_fencing import pg_endpoint, via_proxy

pytestmark = [pytest.mark.chaos, pytest.mark.slow, pytest.mark.timeout(3600)]

CHAOS_SECONDS = float(os.environ.get("CITADEL_CHAOS_SECONDS", "240"))
SEED = int(os.environ.get("CITADEL_CHAOS_SEED", "7"))


class Chaos:
    def __init__(self, anvil: Anvil, pool: asyncpg.Pool, token: str, wallets: list[KnownWallet],
                 outsiders: list[str], rng: random.Random) -> None:
        self.anvil = anvil
        self.pool = pool
        self.token = token
        self.wallets = wallets
        self.outsiders = outsiders
        self.rng = rng
        self.counts: Counter[str] = Counter()
        self.spare = list(evm.accounts(anvil)[5:7])  # accounts that become wallets later
        self.deactivated: KnownWallet | None = None
        self.deleted = False

    async def traffic(self, until: float) -> None:
        """A transfer touching a known wallet every ~0.25 s, each mined in its own block."""
        accounts = evm.accounts(self.anvil)
        while time.monotonic() < until:
            w = self.rng.choice(self.wallets)
            other = self.rng.choice(self.outsiders + [x.address for x in self.wallets])
            amount = self.rng.randint(1, 10**6)
            kind = self.rng.random()
            try:
                if kind < 0.6:
                    sender, to = (w.address, other) if self.rng.random() < 0.5 else (other, w.address)
                    await asyncio.to_thread(evm.token_transfer, self.anvil, self.token, sender, to, amount)
                    self.counts["token_transfers"] += 1
                else:
                    sender = accounts[0] if self.rng.random() < 0.5 else w.address
                    to = w.address if sender == accounts[0] else other
                    await asyncio.to_thread(evm.native_transfer, self.anvil, sender, to, amount)
                    self.counts["native_transfers"] += 1
            except (TimeoutError, AssertionError):
                self.counts["transfers_lost_to_reorgs"] += 1  # dropped by a reorg before its receipt was seen
            await asyncio.sleep(0.2)

    async def reorg(self) -> None:
        await asyncio.to_thread(evm.reorg, self.anvil, 3, [])
        self.counts["reorgs_depth_3"] += 1

    async def cut_lease(self, proxy: TcpProxy) -> None:
        pid = await self.pool.fetchval("SELECT backend_pid FROM writer_leases WHERE chain = 'bsc'")
        port = await self.pool.fetchval(
            "SELECT client_port FROM pg_stat_activity WHERE pid = $1 AND application_name = 'citadel-indexer lease'",
            pid)
        if port is None:
            return
        proxy.blackhole(port)
        await self.pool.execute("SELECT pg_terminate_backend($1)", pid)
        self.counts["lease_sessions_cut"] += 1

    async def edit_wallets(self, step: int) -> None:
        kind = step % 4
        if kind == 0 and self.spare:
            address = self.spare.pop()
            self.wallets.append(await add_wallet(self.pool, "bsc", evm.to_checksum(address)))
            self.counts["wallets_added"] += 1
        elif kind == 1:
            w = self.rng.choice(self.wallets)
            owner = await self.pool.fetchval(
                "INSERT INTO users (email, password_hash, username) VALUES ($1, 'x', $2) RETURNING id",
                f"owner{step}@example.com", f"owner{step}")
            await self.pool.execute("UPDATE wallets SET user_id = $1 WHERE id = $2", owner, w.id)
            self.wallets[self.wallets.index(w)] = KnownWallet(w.id, owner, w.address)
            self.counts["wallets_reowned"] += 1
        elif kind == 2:
            if self.deactivated is None:
                self.deactivated = self.rng.choice(self.wallets)
                await self.pool.execute("UPDATE wallets SET is_active = false WHERE id = $1", self.deactivated.id)
                self.counts["wallets_deactivated"] += 1
            else:
                await self.pool.execute("UPDATE wallets SET is_active = true WHERE id = $1", self.deactivated.id)
                self.deactivated = None
                self.counts["wallets_reactivated"] += 1
        elif kind == 3 and not self.deleted and len(self.wallets) > 3:
            w = next(x for x in self.wallets if x is not self.deactivated)
            await self.pool.execute("DELETE FROM wallets WHERE id = $1", w.id)
            self.wallets.remove(w)
            self.deleted = True
            self.counts["wallets_deleted"] += 1


async def test_chaos_two_replicas_every_fault_at_once_zero_divergence(
    anvil_factory: Any, pool: asyncpg.Pool, db_url: str, daemons: list[Daemon], tmp_path: Path
) -> None:
    rng = random.Random(SEED)
    anvil = anvil_factory(56, extra_args=["--slots-in-an-epoch", "4"])  # finalized = head - 8: reorgs of 3 stay above
    accounts = evm.accounts(anvil)
    token = evm.deploy_token(anvil, 18, "USDT")
    wallets = [await add_wallet(pool, "bsc", evm.to_checksum(a)) for a in accounts[1:5]]
    outsiders = accounts[7:10]
    for a in [*accounts[1:10]]:
        evm.token_mint(anvil, token, accounts[0], a, 10**30)
    chaos = Chaos(anvil, pool, token, wallets, outsiders, rng)
    faults = Faults(seed=SEED, timeout=0.01, rate_limit=0.015, server_error=0.015, truncate=0.01, hang_s=1.0,
                    max_log_blocks=40, range_style="bsc", lagging=0.3, lag_blocks=3)
    host, port = await pg_endpoint(pool)
    replicas: list[Daemon] = []
    async with FaultProxy(anvil.url, faults) as rpc, TcpProxy(host, port) as db:
        for name in ("a", "b"):
            env = daemon_env(via_proxy(db_url, db.port), anvil, {"USDT": token},
                             CITADEL_BSC__RPC_URLS=json.dumps([rpc.url_with("/v1/CHAOSKEY")]),
                             CITADEL_REPLICA_ID=f"replica-{name}", CITADEL_METRICS_PORT=str(free_port()),
                             CITADEL_BSC__POLL_INTERVAL_S="0.2", CITADEL_BSC__REQUEST_TIMEOUT_S="0.8",
                             CITADEL_WRITER_HEARTBEAT_S="0.5", CITADEL_WRITER_TIMEOUT_S="3",
                             CITADEL_BSC__CATCHUP_BATCH_BLOCKS="20")
            d = Daemon(env, tmp_path / f"replica-{name}.log")
            daemons.append(d)
            replicas.append(d)
            d.start()
        started = time.monotonic()
        until = started + CHAOS_SECONDS
        traffic = asyncio.create_task(chaos.traffic(until))
        next_kill, next_reorg, next_cut, next_edit = (started + rng.uniform(15, 25), started + rng.uniform(25, 35),
                                                       started + rng.uniform(40, 50), started + rng.uniform(8, 16))
        edits = 0
        try:
            while time.monotonic() < until:
                now = time.monotonic()
                if now >= next_kill:
                    victim = rng.choice([d for d in replicas if d.proc is not None and d.proc.poll() is None]
                                        or replicas)
                    if victim.proc is not None and victim.proc.poll() is None:
                        await asyncio.to_thread(victim.kill9)
                        chaos.counts["kill9"] += 1
                    await asyncio.sleep(rng.uniform(1, 3))
                    victim.start()
                    next_kill = time.monotonic() + rng.uniform(15, 25)
                if now >= next_reorg:
                    await chaos.reorg()
                    next_reorg = now + rng.uniform(25, 35)
                if now >= next_cut:
                    await chaos.cut_lease(db)
                    next_cut = now + rng.uniform(40, 50)
                if now >= next_edit:
                    await chaos.edit_wallets(edits)
                    edits += 1
                    next_edit = now + rng.uniform(8, 16)
                await asyncio.sleep(0.2)
            await traffic
        finally:
            traffic.cancel()
        if chaos.deactivated is not None:  # the end state: every remaining wallet active, its whole history indexed
            await pool.execute("UPDATE wallets SET is_active = true WHERE id = $1", chaos.deactivated.id)
            chaos.counts["wallets_reactivated"] += 1
        for d in replicas:
            if d.proc is None or d.proc.poll() is not None:
                d.start()
        await asyncio.to_thread(evm.mine, anvil, 20)  # everything final
        head = await asyncio.to_thread(evm.block_number, anvil)

        async def settled() -> bool:
            pending = await pool.fetchval(
                "SELECT count(*) FROM sync_cursors WHERE chain = 'bsc' AND target_block IS NOT NULL "
                "AND block_number < target_block")
            return await cursor(pool) >= head and pending == 0

        await eventually(settled, timeout_s=180, every_s=0.5)
        for d in replicas:
            assert await asyncio.to_thread(d.stop) == 0
        injected = dict(rpc.injected)
    done = await cursor(pool)
    actual = await actual_rows(pool, "bsc")
    expected = await asyncio.to_thread(expected_evm_rows, anvil, chaos.wallets, [token], 0, done)
    owners = await pool.fetch(
        "SELECT count(*) AS n FROM transactions t JOIN wallets w ON w.id = t.wallet_id WHERE t.user_id <> w.user_id")
    report = {
        "seconds": CHAOS_SECONDS, "seed": SEED, "blocks": done + 1, "rows": len(actual),
        "expected_rows": len(expected), "missing": len(set(expected) - set(actual)),
        "extra": len(set(actual) - set(expected)), "owner_mismatches": owners[0]["n"],
        "rpc_faults_injected": injected, "events": dict(chaos.counts),
    }
    (tmp_path / "chaos-report.json").write_text(json.dumps(report, indent=1))
    for label, rows in (("missing", set(expected) - set(actual)), ("extra", set(actual) - set(expected))):
        for row in sorted(rows, key=lambda r: (r[6], r[1], r[2]))[:15]:
            print(label, row)
    print("\nchaos report:", json.dumps(report, indent=1))
    assert report["missing"] == report["extra"] == report["owner_mismatches"] == 0
    assert actual == expected
    for d in replicas:
        assert "CHAOSKEY" not in d.log_text()
