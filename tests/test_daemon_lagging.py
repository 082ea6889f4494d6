"""The daemon (``python -m indexer run``) behind a load balancer where about a third of the requests reach a node
three blocks behind, while transfers arrive at the head (and, on Tron, the chain forks): the table ends equal to an
independent computation from the node, every deposit in it. (An operator saw 2 of 100 EVM rows and 3 of 32 Tron rows
never written, and a Tron fork converge to 16 of 17.)"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from citadel_devtools.tron_simulator import TronSimulator, TrxTransfer
from tests.support import evm
from tests.support.daemon import Daemon, busy_bsc, cursor, daemon_env
from tests.support.faultproxy import FaultProxy, Faults
from tests.support.sync import actual_rows, add_wallet, eventually, expected_evm_rows
from tests.test_tron_sync import API_KEY, expected_tron_rows

pytestmark = pytest.mark.slow

LAGGING = 0.3
LAG = 3


async def test_evm_daemon_behind_a_lagging_load_balancer_writes_every_transfer(
    anvil_factory: Any, pool: asyncpg.Pool, db_url: str, daemons: list[Daemon], tmp_path: Path
) -> None:
    anvil = anvil_factory(56, extra_args=["--slots-in-an-epoch", "1"])  # finalized = head - 2, within the lag
    token, wallets = await busy_bsc(anvil, pool, known=3, blocks=12)
    acc = evm.accounts(anvil)
    async with FaultProxy(anvil.url, Faults(seed=21, lagging=LAGGING, lag_blocks=LAG)) as proxy:
        env = daemon_env(db_url, anvil, {"USDT": token}, CITADEL_BSC__RPC_URLS=json.dumps([proxy.url]),
                         CITADEL_BSC__POLL_INTERVAL_S="0.05", CITADEL_BSC__CATCHUP_BATCH_BLOCKS="5")
        daemon = Daemon(env, tmp_path / "evm.log")
        daemons.append(daemon)
        daemon.start()
        await eventually(lambda: _cursor_at_least(pool, evm.block_number(anvil)), timeout_s=30)

        def arrive(i: int) -> None:  # a deposit in a block of its own, at the head (anvil mines each at once)
            if i % 2:
                evm.native_transfer(anvil, acc[8], wallets[i % 3].address, 10**15 + i)
            else:
                evm.token_transfer(anvil, token, acc[8], wallets[i % 3].address, 1000 + i)

        for i in range(24):
            await asyncio.to_thread(arrive, i)
            await asyncio.sleep(0.05)
        head = evm.block_number(anvil)
        await eventually(lambda: _cursor_at_least(pool, head), timeout_s=30)
        assert daemon.stop() == 0
    done = await cursor(pool)
    assert await actual_rows(pool, "bsc") == expected_evm_rows(anvil, wallets, [token], 0, done)
    assert proxy.injected["lag_hidden"] > 10


async def _cursor_at_least(pool: asyncpg.Pool, block: int, chain: str = "bsc") -> bool:
    value = await pool.fetchval(
        "SELECT block_number FROM sync_cursors WHERE chain = $1 AND stream = 'realtime'", chain)
    return value is not None and value >= block


async def test_tron_daemon_behind_a_lagging_load_balancer_writes_every_transfer_through_a_fork(
    pool: asyncpg.Pool, db_url: str, daemons: list[Daemon], tmp_path: Path
) -> None:
    async with TronSimulator(api_key=API_KEY, initial_blocks=5) as sim:
        usdt = sim.deploy_trc20("USDT", 6)
        people = [sim.new_address() for _ in range(4)]
        for p in people:
            sim.fund(p, 10**12)
            sim.mint(usdt, p, 10**12)
        wallets = [await add_wallet(pool, "tron", p) for p in people[:3]]

        def arrive(i: int) -> None:  # a transfer touching a known wallet in every block
            if i % 2:
                sim.transfer_trc20(usdt, people[3], people[i % 3], 1000 + i)
            else:
                sim.transfer_trx(people[3], people[i % 3], 100 + i)
            sim.produce_block()

        for i in range(20):
            arrive(i)
        env = {k: v for k, v in os.environ.items() if not k.startswith("CITADEL_")}
        env.update({
            "CITADEL_DATABASE_URL": db_url,
            "CITADEL_TRON__ENABLED": "true",
            "CITADEL_TRON__START_BLOCK": "0",
            "CITADEL_TRON__RPC_URLS": json.dumps([sim.url]),
            "CITADEL_TRON__API_KEY": API_KEY,
            "CITADEL_TRON__TOKENS": json.dumps({"USDT": usdt}),
            "CITADEL_TRON__POLL_INTERVAL_S": "0.05",
            "CITADEL_TRON__CATCHUP_BATCH_BLOCKS": "5",
            "CITADEL_METRICS_PORT": "0",
        })
        sim.faults.lag(LAGGING, LAG)
        daemon = Daemon(env, tmp_path / "tron.log")
        daemons.append(daemon)
        daemon.start()
        await eventually(lambda: _cursor_at_least(pool, sim.head_number, "tron"), timeout_s=30)
        for i in range(20, 45):
            arrive(i)
            await asyncio.sleep(0.05)
        # a fork replacing three followed blocks, one transfer moving to another block of the new branch; a node
        # three blocks behind may still answer from the old branch
        sim.fork(3, [TrxTransfer(people[3], people[0], 4242)], new_blocks=4)
        for i in range(45, 50):
            arrive(i)
            await asyncio.sleep(0.05)
        await eventually(lambda: _cursor_at_least(pool, sim.head_number, "tron"), timeout_s=30)
        assert daemon.stop() == 0
        assert await actual_rows(pool, "tron") == expected_tron_rows(sim, wallets, {usdt})
        assert sum(r[4] == 4242 for r in await actual_rows(pool, "tron")) == 1
        assert sim.faults.injected["lag_hidden"] > 10
