"""``citadel-indexer demo`` (``make demo``): the whole local stack, live, in one process, so a newcomer sees the
indexer work.

What runs, in this order (and is stopped in the reverse order on Ctrl-C, SIGTERM or after ``--seconds``)::

    PostgreSQL        a throwaway PostgreSQL 16 (pgserver wheel) in a temp dir, migrated, demo/seed.sql loaded.
                      With CITADEL_DATABASE_URL set, a throwaway database ``citadel_demo_<hex>`` is created on that
                      server instead (the role needs CREATEDB) and dropped at exit: the demo never writes into an
                      existing database.
    anvil ×2          chain ids 56 (bsc) and 137 (polygon), a block a second, a finalized tag (4 slots an epoch);
                      test tokens USDT, USDC (18 decimals on bsc, 6 on polygon) and TST (18) deployed and minted.
    Tron simulator    a block every 3 s, TRC20 USDT (6 decimals); the seed's Tron wallets hold TRX and USDT.
    activity          every 1-2 s, random token and native transfers between the demo wallets and from/to
                      outsiders on every chain, now and then a batchTransfer; once, a 3-block reorg on bsc
                      (``anvil_reorg``) and a 2-block fork on Tron, which the daemon's log reports as ``reorg``.
    the daemon        :class:`indexer.app.Daemon` in this event loop, all three chains enabled, metrics on a free
                      port.
    summary           every 5 s on stdout: per chain head / cursor / final, rows by status, reorgs rolled back,
                      the last 3 transfers indexed; once more after the daemon stops.

The daemon's log goes to stderr, everything of the demo's own to stdout. ``--seconds N`` counts from the moment the
stack is up. Exit code 0 after a clean stop, 1 when something could not start or the daemon gave up.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import secrets
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg
from eth_utils.crypto import keccak

from chains.base import Chain
from citadel_devtools.anvil import Anvil, AnvilNotInstalled, start_anvil
from citadel_devtools.evm_activity import EvmNode, EvmRpcError
from citadel_devtools.ports import free_port
from citadel_devtools.postgres import (
    LocalPostgres,
    PostgresUnavailable,
    database_url_from_env,
    start_postgres,
)
from citadel_devtools.tron_simulator import ForkBelowSolidified, TronSimulator
from indexer import metrics
from indexer.app import Daemon, StartupError
from indexer.config import ConfigError, Settings, load_settings
from indexer.store.migrate import MigrationError, apply_migrations

log = logging.getLogger("citadel.demo")

REPO_ROOT = Path(__file__).resolve().parents[1]
SEED_FILE = REPO_ROOT / "demo" / "seed.sql"

SUMMARY_EVERY_S = 5.0
REORG_AFTER_S = 8.0  # activity time before the bsc reorg
FORK_AFTER_S = 11.0  # ... and before the Tron fork
REORG_DEPTH = 3
FORK_DEPTH = 2
EVM_TOKEN_DECIMALS = {
    Chain.BSC: {"USDT": 18, "USDC": 18, "TST": 18},
    Chain.POLYGON: {"USDT": 6, "USDC": 6, "TST": 18},
}
TOKEN_NAMES = {"USDT": "Tether USD (demo)", "USDC": "USD Coin (demo)", "TST": "Test Token"}
CHAIN_IDS = {Chain.BSC: 56, Chain.POLYGON: 137}
TRX_SUN = 10**6


class DemoError(Exception):
    """The stack could not start; the message is the one line shown."""


def say(text: str = "") -> None:
    print(text, flush=True)


# ---------------------------------------------------------------------------------------------------- chains


@dataclass
class EvmSide:
    chain: Chain
    anvil: Anvil
    node: EvmNode
    deployer: str
    tokens: dict[str, str]  # symbol -> address (lower-case)
    decimals: dict[str, int]
    wallets: list[str]  # the seed's wallets on this chain, lower-case
    senders: list[str]  # those of them the node holds unlocked
    outsiders: list[str]  # unlocked accounts that are not demo wallets
    sent: int = 0


@dataclass
class TronSide:
    sim: TronSimulator
    usdt: str
    wallets: list[str]
    outsiders: list[str]
    sent: int = 0


@dataclass
class Stack:
    dsn: str = ""
    pg: LocalPostgres | None = None
    evm: list[EvmSide] = field(default_factory=list)
    tron: TronSide | None = None
    metrics_url: str = ""
    started_at: float = field(default_factory=time.monotonic)


def _amount(rng: random.Random, decimals: int, low: int = 1, high: int = 500) -> tuple[int, Decimal]:
    """A human-looking amount (two decimals) and its raw value in the token's units."""
    cents = rng.randint(low * 100, high * 100)
    return cents * 10**decimals // 100, Decimal(cents) / 100


def _stranger(rng: random.Random) -> str:
    """An address nobody in the demo holds (an exchange, a merchant...)."""
    return "0x" + keccak(text=f"stranger-{rng.randint(1, 50)}").hex()[-40:]


# ---------------------------------------------------------------------------------------------------- set-up


def _postmaster_pid(pg: LocalPostgres) -> str:
    try:
        return (pg.data_dir / "postmaster.pid").read_text().split("\n", 1)[0].strip()
    except OSError:
        return "?"


def _with_database(dsn: str, name: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


async def _throwaway_database(server_dsn: str) -> tuple[str, Callable[[], Awaitable[None]]]:
    """A new database on the server of ``server_dsn``; returns its URL and the coroutine function dropping it."""
    name = f"citadel_demo_{secrets.token_hex(4)}"
    try:
        conn = await asyncpg.connect(server_dsn)
    except (OSError, asyncpg.PostgresError) as exc:
        raise DemoError(f"CITADEL_DATABASE_URL: cannot connect ({type(exc).__name__}); unset it to let the demo "
                        "start its own PostgreSQL") from None
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    except asyncpg.PostgresError as exc:
        raise DemoError(f"CITADEL_DATABASE_URL: cannot create a demo database ({exc.sqlstate}: "
                        f"{type(exc).__name__}); unset it to let the demo start its own PostgreSQL") from None
    finally:
        await conn.close()

    async def drop() -> None:
        with contextlib.suppress(OSError, asyncpg.PostgresError):
            conn = await asyncpg.connect(server_dsn)
            try:
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            finally:
                await conn.close()
        say(f"  dropped database {name}")

    return _with_database(server_dsn, name), drop


async def _start_database(stack: Stack, exits: contextlib.AsyncExitStack) -> None:
    server = database_url_from_env()
    if server is None:
        try:
            pg = await asyncio.to_thread(start_postgres, "16")
        except PostgresUnavailable as exc:
            raise DemoError(str(exc)) from None

        pg_pid = _postmaster_pid(pg)

        async def stop_pg() -> None:
            await asyncio.to_thread(pg.stop)
            say(f"  stopped PostgreSQL {pg.version} (pid {pg_pid})")

        exits.push_async_callback(stop_pg)
        stack.pg, stack.dsn = pg, pg.dsn
        say(f"  PostgreSQL {pg.version:<5}  127.0.0.1:{pg.port}  pid {pg_pid}  data {pg.data_dir} (throwaway)")
    else:
        stack.dsn, drop = await _throwaway_database(server)
        exits.push_async_callback(drop)
        say(f"  PostgreSQL      database {urlsplit(stack.dsn).path.lstrip('/')} on the CITADEL_DATABASE_URL "
            "server (dropped at exit)")
    try:
        applied = await apply_migrations(stack.dsn, echo=lambda line: log.debug("migrate: %s", line))
        conn = await asyncpg.connect(stack.dsn)
        try:
            await conn.execute(SEED_FILE.read_text(encoding="utf-8"))
            users = await conn.fetchval("SELECT count(*) FROM users")
            wallets = await conn.fetchval("SELECT count(*) FROM wallets")
        finally:
            await conn.close()
    except MigrationError as exc:
        raise DemoError(f"migrate: {exc}") from None
    say(f"  schema          {len(applied)} migrations applied; {SEED_FILE.relative_to(REPO_ROOT)} loaded: "
        f"{users} users, {wallets} wallets")


async def _seed_wallets(dsn: str) -> dict[Chain, list[str]]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT chain, public_address FROM wallets WHERE is_active IS NOT FALSE ORDER BY id")
    finally:
        await conn.close()
    out: dict[Chain, list[str]] = {c: [] for c in Chain}
    for row in rows:
        if row["chain"] in {c.value for c in Chain}:
            out[Chain(row["chain"])].append(str(row["public_address"]))
    return out


async def _start_anvil(chain: Chain, exits: contextlib.AsyncExitStack) -> Anvil:
    try:
        anvil = await asyncio.to_thread(
            start_anvil, CHAIN_IDS[chain], block_time_s=1, extra_args=["--slots-in-an-epoch", "4"]
        )
    except (AnvilNotInstalled, RuntimeError) as exc:
        raise DemoError(str(exc)) from None

    async def stop() -> None:
        await asyncio.to_thread(anvil.stop)
        say(f"  stopped anvil {chain.value} (pid {anvil.process.pid})")

    exits.push_async_callback(stop)
    return anvil


async def _prepare_evm(chain: Chain, anvil: Anvil, wallets: list[str], exits: contextlib.AsyncExitStack) -> EvmSide:
    """Deploy the test tokens and give every demo wallet and outsider tokens (the mints are indexed too)."""
    node = await exits.enter_async_context(EvmNode(anvil.url))
    accounts = await node.accounts()
    deployer = accounts[0]
    lowered = [w.lower() for w in wallets]
    senders = [w for w in lowered if w in accounts]
    outsiders = [a for a in accounts if a not in lowered and a != deployer][:3]
    decimals = EVM_TOKEN_DECIMALS[chain]
    deploys = {sym: await node.send_deploy(deployer, "TestToken", [TOKEN_NAMES[sym], sym, dec])
               for sym, dec in decimals.items()}
    tokens = {sym: await node.deployed_address(tx) for sym, tx in deploys.items()}
    mints = []
    for sym, token in tokens.items():
        for holder in [*senders, *outsiders]:
            mints.append(await node.mint(token, deployer, holder, 1_000_000 * 10 ** decimals[sym]))
    await asyncio.gather(*(node.wait_receipt(tx) for tx in mints))
    side = EvmSide(chain, anvil, node, deployer, tokens, decimals, lowered, senders, outsiders)
    listed = "  ".join(f"{sym} {addr}" for sym, addr in tokens.items())
    say(f"  anvil {chain.value:<9} {anvil.url}  chain id {anvil.chain_id}  pid {anvil.process.pid}")
    say(f"                  {listed}")
    return side


def _prepare_tron(sim: TronSimulator, wallets: list[str]) -> TronSide:
    usdt = sim.deploy_trc20("USDT", 6, "Tether USD (demo)")
    outsiders = [sim.new_address() for _ in range(3)]
    for address in [*wallets, *outsiders]:
        sim.fund(address, 100_000 * TRX_SUN)
        sim.mint(usdt, address, 1_000_000 * 10**6)
    for i, wallet in enumerate(wallets):  # something to index in the first block
        sim.transfer_trc20(usdt, outsiders[i % len(outsiders)], wallet, (i + 1) * 100 * 10**6)
    return TronSide(sim, usdt, wallets, outsiders)


def _daemon_settings(stack: Stack, metrics_port: int) -> Settings:
    env: dict[str, str] = {
        "CITADEL_DATABASE_URL": stack.dsn,
        "CITADEL_METRICS_HOST": "127.0.0.1",
        "CITADEL_METRICS_PORT": str(metrics_port),
        "CITADEL_LOG_FORMAT": "text",
    }
    for side in stack.evm:
        prefix = f"CITADEL_{side.chain.name}__"
        env.update({
            prefix + "ENABLED": "true",
            prefix + "RPC_URLS": json.dumps([side.anvil.url]),
            prefix + "CHAIN_ID": str(side.anvil.chain_id),
            prefix + "TOKENS": json.dumps(side.tokens),
            prefix + "CONFIRMATIONS": "8",  # only used if the node's finalized tag stalls
            prefix + "POLL_INTERVAL_S": "0.5",
        })
    if stack.tron is not None:
        env.update({
            "CITADEL_TRON__ENABLED": "true",
            "CITADEL_TRON__RPC_URLS": json.dumps([stack.tron.sim.url]),
            "CITADEL_TRON__CHAIN_ID": "0",  # the simulator's genesis is not mainnet's: accept whatever it serves
            "CITADEL_TRON__TOKENS": json.dumps({"USDT": stack.tron.usdt}),
            "CITADEL_TRON__CONFIRMATIONS": "19",
            "CITADEL_TRON__POLL_INTERVAL_S": "1",
        })
    try:
        return load_settings(environ=env)
    except ConfigError as exc:
        raise DemoError(f"demo settings: {exc}") from None


# ---------------------------------------------------------------------------------------------------- activity


async def _evm_step(side: EvmSide, rng: random.Random) -> None:
    node = side.node
    symbol = rng.choice(["USDT", "USDT", "USDC", "TST"])
    token, decimals = side.tokens[symbol], side.decimals[symbol]
    raw, _ = _amount(rng, decimals)
    roll = rng.random()
    if roll < 0.30 and len(side.senders) >= 2:  # between two demo users
        a, b = rng.sample(side.senders, 2)
        await node.transfer(token, a, b, raw)
    elif roll < 0.50 and side.outsiders:  # a deposit from outside
        await node.transfer(token, rng.choice(side.outsiders), rng.choice(side.wallets), raw)
    elif roll < 0.65 and side.senders:  # a withdrawal to a stranger
        await node.transfer(token, rng.choice(side.senders), _stranger(rng), raw)
    elif roll < 0.88 and side.senders:  # native coin
        value = rng.randint(1, 50) * 10**16
        sender = rng.choice([*side.senders, *side.outsiders])
        to = rng.choice([w for w in side.wallets if w != sender] or side.wallets)
        await node.native_transfer(sender, to, value)
    elif side.senders:  # one transaction, several Transfer logs
        sender = rng.choice(side.senders)
        recipients = [w for w in side.wallets if w != sender][:2] + [_stranger(rng)]
        amounts = [_amount(rng, decimals, 1, 50)[0] for _ in recipients]
        await node.batch_transfer(token, sender, recipients, amounts)
    side.sent += 1


def _tron_step(side: TronSide, rng: random.Random) -> None:
    sim = side.sim
    roll = rng.random()
    if roll < 0.3:
        a, b = rng.sample(side.wallets, 2)
    elif roll < 0.55:
        a, b = rng.choice(side.outsiders), rng.choice(side.wallets)
    else:
        a, b = rng.choice(side.wallets), rng.choice([*side.outsiders, *side.wallets])
        if a == b:
            b = side.outsiders[0]
    if rng.random() < 0.3:
        sim.transfer_trx(a, b, rng.randint(1, 200) * TRX_SUN)
    else:
        sim.transfer_trc20(side.usdt, a, b, _amount(rng, 6)[0])
    side.sent += 1


async def _activity(stack: Stack, seed: int) -> None:
    """Random transfers on every chain every 1-2 s; one reorg on the first EVM chain and one Tron fork."""
    rng = random.Random(seed)
    started = time.monotonic()
    reorged = forked = False
    while True:
        for side in stack.evm:
            try:
                await _evm_step(side, rng)
            except (EvmRpcError, aiohttp.ClientError, TimeoutError, OSError) as exc:
                log.warning("demo activity: transfer not sent",
                            extra={"fields": {"chain": side.chain.value, "error": str(exc)[:200]}})
        if stack.tron is not None:
            try:
                _tron_step(stack.tron, rng)
            except ValueError as exc:  # not enough TRX: skip this one
                log.debug("demo activity: tron transfer refused: %s", exc)
        elapsed = time.monotonic() - started
        if not reorged and stack.evm and elapsed >= REORG_AFTER_S:
            reorged = True
            side = stack.evm[0]
            log.warning("demo: reorganising the chain: the last blocks are replaced, their transfers vanish",
                        extra={"fields": {"chain": side.chain.value, "depth": REORG_DEPTH}})
            try:
                await side.node.reorg(REORG_DEPTH)
            except (EvmRpcError, aiohttp.ClientError, TimeoutError, OSError) as exc:
                log.warning("demo: anvil_reorg failed", extra={"fields": {"error": str(exc)[:200]}})
        if not forked and stack.tron is not None and elapsed >= FORK_AFTER_S:
            forked = True
            log.warning("demo: forking the chain: the last blocks are replaced, their transfers vanish",
                        extra={"fields": {"chain": "tron", "depth": FORK_DEPTH}})
            try:
                stack.tron.sim.fork(FORK_DEPTH)
            except (ValueError, ForkBelowSolidified) as exc:
                log.warning("demo: fork failed", extra={"fields": {"error": str(exc)}})
        await asyncio.sleep(rng.uniform(1.0, 2.0))


# ---------------------------------------------------------------------------------------------------- summary

_COUNTS_SQL = "SELECT chain, status, count(*) AS n FROM transactions GROUP BY chain, status"
_LATEST_SQL = """
SELECT chain, label, tx_type, amount, token, status, block_number
  FROM (SELECT t.chain, w.label, t.tx_type, t.amount, t.token, t.status, t.block_number,
               row_number() OVER (PARTITION BY t.chain
                                  ORDER BY t.block_number DESC NULLS LAST, t.log_index DESC, t.id DESC) AS rn
          FROM transactions t JOIN wallets w ON w.id = t.wallet_id) latest
 WHERE rn <= 3
 ORDER BY chain, rn
"""
STATUSES = ("confirmed", "pending", "failed")


def _num(value: int | None) -> str:
    return "-" if value is None or value < 0 else str(value)


def _fmt_amount(amount: Decimal) -> str:
    text = f"{amount:f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


async def render_summary(dsn: str, daemon: Daemon, stack: Stack, title: str) -> str:
    counts: dict[str, dict[str, int]] = {}
    latest: dict[str, list[asyncpg.Record]] = {}
    db_note = ""
    try:
        conn = await asyncpg.connect(dsn, timeout=5)
        try:
            for row in await conn.fetch(_COUNTS_SQL):
                counts.setdefault(row["chain"], {})[row["status"]] = int(row["n"])
            for row in await conn.fetch(_LATEST_SQL):
                latest.setdefault(row["chain"], []).append(row)
        finally:
            await conn.close()
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        db_note = f"  (database not readable: {type(exc).__name__})"
    elapsed = int(time.monotonic() - stack.started_at)
    lines = [f"==== citadel demo · {title} · {elapsed // 60}:{elapsed % 60:02d} " + "=" * 40 + db_note]
    lines.append(f"{'chain':<8} {'watcher':<9} {'head':>6} {'cursor':>6} {'final':>6}   {'rows':>5}  "
                 + "  ".join(f"{s:>9}" for s in STATUSES) + f"  {'reorgs':>6}")
    for chain in daemon.settings.enabled_chains():
        name = chain.value
        watcher = daemon.watchers.get(chain)
        by_status = counts.get(name, {})
        reorgs = metrics.REGISTRY.get_sample_value("citadel_reorgs_total", {"chain": name}) or 0
        status = daemon.status.get(name, "-").split(":", 1)[0]
        lines.append(
            f"{name:<8} {status:<9} {_num(watcher.head_number if watcher else None):>6} "
            f"{_num(watcher.cursor if watcher else None):>6} {_num(watcher.final_number if watcher else None):>6}"
            f"   {sum(by_status.values()):>5}  " + "  ".join(f"{by_status.get(s, 0):>9}" for s in STATUSES)
            + f"  {int(reorgs):>6}"
        )
    lines.append("last transfers indexed:")
    for chain in daemon.settings.enabled_chains():
        for row in latest.get(chain.value, []):
            lines.append(
                f"  {chain.value:<8} block {_num(row['block_number']):>5}  {row['label'] or '?':<14} "
                f"{row['tx_type']:<13} {_fmt_amount(row['amount']):>10} {row['token'] or '?':<5} {row['status']}"
            )
    lines.append(f"metrics {stack.metrics_url}/metrics · health {stack.metrics_url}/healthz · Ctrl-C stops")
    return "\n".join(lines)


async def _summaries(dsn: str, daemon: Daemon, stack: Stack) -> None:
    while True:
        await asyncio.sleep(SUMMARY_EVERY_S)
        say(await render_summary(dsn, daemon, stack, "live"))


# ---------------------------------------------------------------------------------------------------- main


async def _cancel(task: asyncio.Task[Any]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def run_demo(seconds: float | None) -> int:
    """Run the local stack and the daemon until Ctrl-C / SIGTERM or ``seconds`` after the stack is up."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    stack = Stack()
    try:
        async with contextlib.AsyncExitStack() as exits:
            say("citadel demo: starting a throwaway local stack (Ctrl-C stops everything)")
            try:
                code = await _run(stack, stop, seconds, exits)
            finally:
                say("citadel demo: stopping")
        say("citadel demo: everything stopped")
        return code
    except DemoError as exc:
        if stop.is_set():  # Ctrl-C during start-up: a server already got the SIGINT too, which is what failed
            say("citadel demo: stopped during start-up")
            return 0
        print(f"citadel-indexer demo: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def _run(stack: Stack, stop: asyncio.Event, seconds: float | None, exits: contextlib.AsyncExitStack) -> int:
    # The exit stack unwinds in reverse: daemon, summaries, activity, Tron simulator, anvils, PostgreSQL.
    await _start_database(stack, exits)
    if stop.is_set():
        return 0
    wallets = await _seed_wallets(stack.dsn)
    for chain in (Chain.BSC, Chain.POLYGON):  # one after the other: a failure leaves no half-started node behind
        anvil = await _start_anvil(chain, exits)
        if stop.is_set():
            return 0
        try:
            stack.evm.append(await _prepare_evm(chain, anvil, wallets[chain], exits))
        except (EvmRpcError, aiohttp.ClientError, TimeoutError) as exc:
            raise DemoError(f"anvil {chain.value}: cannot deploy the test tokens: {exc}") from None

    sim = TronSimulator(port=0, block_time_s=3)
    stack.tron = _prepare_tron(sim, wallets[Chain.TRON])
    await sim.start()

    async def stop_sim() -> None:
        await sim.stop()
        say("  stopped the Tron simulator")

    exits.push_async_callback(stop_sim)
    say(f"  Tron simulator  {sim.url}  a block every 3 s  USDT {stack.tron.usdt}")
    if stop.is_set():
        return 0

    activity = asyncio.create_task(_activity(stack, seed=secrets.randbits(32)), name="demo-activity")

    async def stop_activity() -> None:
        await _cancel(activity)
        say("  stopped the activity generator")

    exits.push_async_callback(stop_activity)

    metrics_port = free_port()
    stack.metrics_url = f"http://127.0.0.1:{metrics_port}"
    settings = _daemon_settings(stack, metrics_port)
    daemon = Daemon(settings)
    say(f"  metrics         {stack.metrics_url}/metrics   health {stack.metrics_url}/healthz")
    say("  demo wallets    alice, bob, carol, dave on bsc, polygon and tron (demo/seed.sql)")
    say("citadel demo: stack up; the daemon starts indexing (its log below, a summary every "
        f"{SUMMARY_EVERY_S:.0f} s" + (f", stopping after {seconds:g} s)" if seconds is not None else ")"))
    daemon_task = asyncio.create_task(daemon.run(stop), name="daemon")
    summaries = asyncio.create_task(_summaries(stack.dsn, daemon, stack), name="demo-summary")

    async def stop_daemon() -> None:
        await _cancel(summaries)
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.shield(daemon_task), timeout=20)
        if not daemon_task.done():
            await _cancel(daemon_task)
        say("  stopped the daemon")
        say(await render_summary(stack.dsn, daemon, stack, "final"))

    exits.push_async_callback(stop_daemon)
    stack.started_at = time.monotonic()
    if seconds is not None:
        loop = asyncio.get_running_loop()
        timer = loop.call_later(seconds, stop.set)
        exits.callback(timer.cancel)

    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait({stopper, daemon_task}, return_when=asyncio.FIRST_COMPLETED)
    await _cancel(stopper)
    if daemon_task.done() and not stop.is_set():
        failure = daemon_task.exception()
        if isinstance(failure, StartupError):
            raise DemoError(f"the daemon did not start: {failure}")
        if failure is not None:
            raise DemoError(f"the daemon failed: {type(failure).__name__}: {failure}")
        say("citadel demo: the daemon stopped on its own (see its log)")
        return 1
    return 0
