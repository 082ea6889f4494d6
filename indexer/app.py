"""The composition root: the only module that knows the concrete adapters, creates the pool and starts the tasks.

Daemon shape::

    run_daemon
    ├── metrics/health HTTP server           /metrics (Prometheus), /healthz (JSON, 503 when a watcher is down)
    ├── wallet listener                      LISTEN citadel_wallets → wakes the chain's watcher (polling fallback)
    └── per enabled chain (own task, own failure domain):
        ├── writer lock                      session advisory lock: one writer per chain across replicas
        ├── ChainWatcher.run                 catch-up, follow, reorgs
        ├── WalletBackfiller.run             history of wallets added while running
        └── BalanceRefresher.run             cached balances in wallets (touched wallets soon, all every 5 min)

A chain whose watcher stops on a fatal error (wrong chain id, reorg past finality) is reported and left stopped;
the other chains go on. Shutdown (SIGINT/SIGTERM) cancels the tasks; every batch is one transaction, so an
interrupted batch simply never happened.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
from contextlib import AsyncExitStack, suppress
from typing import Any

import asyncpg
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from chains.base import Chain, ChainAdapter, FatalChainError
from indexer import metrics
from indexer.config import ChainSettings, Settings
from indexer.logs import register_secret
from indexer.store import db
from indexer.store.chain_store import ChainStore, prepare_connection
from indexer.store.migrate import migration_status
from indexer.sync.backfill import WalletBackfiller
from indexer.sync.balances import BalanceRefresher
from indexer.sync.resilience import TRANSIENT_ERRORS, Backoff
from indexer.sync.watcher import ChainWatcher, WatcherConfig

log = logging.getLogger("citadel.app")

WALLET_CHANNEL = "citadel_wallets"
# pg_advisory_lock keys: one writer per chain ("CIT" + chain number)
WRITER_LOCK_KEYS = {Chain.BSC: 0x434954_01, Chain.POLYGON: 0x434954_02, Chain.TRON: 0x434954_03}


class WriterLockLost(Exception):
    """The connection holding the chain's advisory lock is gone, so another replica may now write the chain."""


class StartupError(Exception):
    """The daemon cannot start; the message is the one line shown to the operator."""


def build_adapter(chain: Chain, cfg: ChainSettings) -> ChainAdapter:
    observer = metrics.MetricsObserver()
    for url in cfg.rpc_urls:
        register_secret(url)
    if chain is Chain.TRON:
        from chains.tron.adapter import TronAdapter

        api_key = cfg.api_key.get_secret_value() if cfg.api_key else None
        register_secret(api_key)
        return TronAdapter(
            cfg.rpc_urls, api_key=api_key, request_timeout_s=cfg.request_timeout_s, observer=observer,
            chain_id=cfg.chain_id or None,
        )
    from chains.evm.adapter import EvmAdapter

    try:
        return EvmAdapter(
            chain,
            cfg.rpc_urls,
            cfg.chain_id,
            observer=observer,
            timeout_s=cfg.request_timeout_s,
            max_block_range=cfg.max_block_range,
            address_filter_limit=cfg.address_filter_limit,
        )
    except ValueError as exc:  # an unusable URL mix (only ws(s) URLs, say): the message names the setting
        raise StartupError(str(exc)) from None


def watcher_config(cfg: ChainSettings) -> WatcherConfig:
    return WatcherConfig(
        start_block=cfg.start_block,
        confirmations=cfg.confirmations,
        poll_interval_s=cfg.poll_interval_s,
        tokens=dict(cfg.tokens),
        catchup_range=cfg.catchup_batch_blocks,
        native_transfers=cfg.native_transfers,
        finality_stall_s=cfg.finality_stall_s,
        stablecoins=frozenset(s.upper() for s in cfg.stablecoins),
        stablecoin_usd_price=cfg.stablecoin_usd_price,
    )


def database_url(settings: Settings) -> str:
    if settings.database_url is None:
        raise StartupError("CITADEL_DATABASE_URL: not set (postgresql://user:password@host:port/dbname)")
    url = settings.database_url.get_secret_value()
    register_secret(url)
    return url


async def open_pool(dsn: str) -> asyncpg.Pool:
    try:
        pool: asyncpg.Pool = await asyncpg.create_pool(
            dsn, min_size=2, max_size=10, server_settings=db.SERVER_SETTINGS, init=prepare_connection,
            command_timeout=120,
        )
    except (OSError, asyncpg.PostgresError) as exc:
        raise StartupError(
            f"CITADEL_DATABASE_URL: cannot connect to {db.describe_dsn(dsn)} ({type(exc).__name__})"
        ) from None
    return pool


async def close_pool(pool: asyncpg.Pool, timeout_s: float = 10.0) -> None:
    """Close gracefully, but never hang shutdown on a connection the server already cut."""
    try:
        await asyncio.wait_for(pool.close(), timeout_s)
    except TimeoutError:
        pool.terminate()


async def check_schema(dsn: str) -> None:
    try:
        statuses = await migration_status(dsn)
    except (OSError, asyncpg.PostgresError) as exc:
        raise StartupError(f"cannot read the schema version at {db.describe_dsn(dsn)}: {type(exc).__name__}") from None
    missing = [s.version for s in statuses if s.applied_at is None]
    if missing:
        raise StartupError(f"the database lacks migrations {', '.join(missing)}: run `citadel-indexer migrate` first")


class Daemon:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.watchers: dict[Chain, ChainWatcher] = {}
        self.status: dict[str, str] = {c.value: "starting" for c in settings.enabled_chains()}
        self.wallet_events: dict[str, asyncio.Event] = {c.value: asyncio.Event() for c in Chain}
        self.metrics_port: int | None = None

    async def run(self, stop: asyncio.Event | None = None) -> int:
        """Run until ``stop`` is set (or SIGINT/SIGTERM). Returns the process exit code."""
        if not self.settings.enabled_chains():
            raise StartupError("no chain is enabled: set CITADEL_BSC__ENABLED, CITADEL_POLYGON__ENABLED or "
                               "CITADEL_TRON__ENABLED to true")
        dsn = database_url(self.settings)
        if db.is_pooled_endpoint(dsn):
            raise StartupError(
                f"CITADEL_DATABASE_URL points at a pooled endpoint ({db.describe_dsn(dsn)}): LISTEN and advisory "
                "locks need the direct endpoint"
            )
        for chain in self.settings.enabled_chains():  # fail before starting anything on an unusable RPC setting
            await build_adapter(chain, self.settings.chain(chain)).aclose()
        await check_schema(dsn)
        stop = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        async with AsyncExitStack() as stack:
            pool = await open_pool(dsn)
            stack.push_async_callback(close_pool, pool)
            runner = await self._start_http()
            stack.push_async_callback(runner.cleanup)
            tasks = [asyncio.create_task(self._listen_wallets(dsn), name="wallet-listener")]
            chain_tasks = {
                chain: asyncio.create_task(self._run_chain(chain, pool, dsn), name=f"chain-{chain.value}")
                for chain in self.settings.enabled_chains()
            }
            stopper = asyncio.create_task(stop.wait())
            try:
                pending = set(chain_tasks.values()) | {stopper}
                while not stop.is_set():
                    done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                    if stopper in done:
                        break
                    if all(t.done() for t in chain_tasks.values()):
                        log.critical("every chain watcher has stopped; exiting")
                        return 1
            finally:
                for task in [*tasks, *chain_tasks.values(), stopper]:
                    task.cancel()
                await asyncio.gather(*tasks, *chain_tasks.values(), stopper, return_exceptions=True)
        log.info("stopped")
        return 0

    async def _run_chain(self, chain: Chain, pool: asyncpg.Pool, dsn: str) -> None:
        """The chain's task: take its writer lock, run its loops; if the lock's connection is lost (and with it the
        lock), stop writing at once and take the lock again. Ends only on a fatal error, which it reports."""
        cfg = self.settings.chain(chain)
        name = chain.value
        adapter = build_adapter(chain, cfg)
        backoff = Backoff(name, "writer lock", 30.0)
        stopped = False
        try:
            while not stopped:
                try:
                    await self._run_chain_locked(chain, cfg, adapter, pool, dsn)
                except* WriterLockLost:
                    log.error("writer lock lost with its connection; stopped writing, taking it again",
                              extra={"fields": {"chain": name}})
                    self.status[name] = "reacquiring"
                    await asyncio.sleep(1)
                except* TRANSIENT_ERRORS as errors:  # the lock's connection could not be opened
                    await backoff.after(errors.exceptions[0])
                except* FatalChainError as errors:
                    for exc in errors.exceptions:
                        log.critical("chain watcher stopped", extra={"fields": {"chain": name, "error": str(exc)}})
                    self.status[name] = "stopped: " + str(errors.exceptions[0])
                    stopped = True
                except* Exception as errors:
                    log.critical("chain task crashed", exc_info=errors.exceptions[0],
                                 extra={"fields": {"chain": name}})
                    self.status[name] = f"stopped: {type(errors.exceptions[0]).__name__}"
                    stopped = True
        finally:
            await adapter.aclose()

    async def _run_chain_locked(
        self, chain: Chain, cfg: ChainSettings, adapter: ChainAdapter, pool: asyncpg.Pool, dsn: str
    ) -> None:
        name = chain.value
        lock_conn = await db.connect(dsn)
        lost = asyncio.Event()
        lock_conn.add_termination_listener(lambda _conn: lost.set())
        try:
            while not await lock_conn.fetchval("SELECT pg_try_advisory_lock($1)", WRITER_LOCK_KEYS[chain]):
                if self.status[name] != "standby":
                    log.warning("another indexer writes this chain; standing by",
                                extra={"fields": {"chain": name}})
                self.status[name] = "standby"
                await asyncio.sleep(5)
            watcher = ChainWatcher(adapter, ChainStore(pool, name), watcher_config(cfg), self.wallet_events[name])
            self.watchers[chain] = watcher
            self.status[name] = "running"
            log.info("watching", extra={"fields": {"chain": name, "start_block": cfg.start_block}})

            async def guard_lock() -> None:
                await lost.wait()
                raise WriterLockLost(name)

            async with asyncio.TaskGroup() as group:
                group.create_task(guard_lock())
                group.create_task(watcher.run())
                group.create_task(WalletBackfiller(watcher, cfg.max_block_range).run())
                group.create_task(BalanceRefresher(watcher, watcher.store).run())
        finally:
            with suppress(Exception):
                await lock_conn.close()

    async def _listen_wallets(self, dsn: str) -> None:
        """Wake a chain's watcher when its wallets change. Without LISTEN (a pooled endpoint, a lost connection)
        the watchers still poll the wallets every ``wallet_poll_s``."""

        def on_notify(_conn: Any, _pid: int, _channel: str, payload: str) -> None:
            try:
                chain = json.loads(payload).get("chain")
            except ValueError:
                chain = None
            for name, event in self.wallet_events.items():
                if chain in (None, name):
                    event.set()

        while True:
            conn = None
            try:
                conn = await db.connect(dsn)
                lost = asyncio.Event()
                conn.add_termination_listener(lambda _conn, lost=lost: lost.set())
                await conn.add_listener(WALLET_CHANNEL, on_notify)
                for event in self.wallet_events.values():
                    event.set()  # changes made while not listening
                await lost.wait()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("wallet listener reconnecting", extra={"fields": {"error": type(exc).__name__}})
            finally:
                if conn is not None:
                    with suppress(Exception):
                        await conn.close()
            await asyncio.sleep(5)

    async def _start_http(self) -> web.AppRunner:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._health)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.settings.metrics_host, self.settings.metrics_port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise StartupError(
                f"CITADEL_METRICS_PORT: cannot listen on {self.settings.metrics_host}:{self.settings.metrics_port} "
                f"({exc.strerror})"
            ) from None
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.metrics_port = sockets[0].getsockname()[1] if sockets else self.settings.metrics_port
        log.info("metrics listening", extra={"fields": {"host": self.settings.metrics_host,
                                                         "port": self.metrics_port}})
        return runner

    async def _metrics(self, _request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(metrics.REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _health(self, _request: web.Request) -> web.Response:
        chains = {}
        for chain in self.settings.enabled_chains():
            watcher = self.watchers.get(chain)
            chains[chain.value] = {
                "status": self.status.get(chain.value, "unknown"),
                "cursor": watcher.cursor if watcher else None,
                "head": watcher.head_number if watcher else None,
                "final": watcher.final_number if watcher else None,
            }
        healthy = all(c["status"] in ("running", "standby") for c in chains.values())
        return web.json_response({"healthy": healthy, "chains": chains}, status=200 if healthy else 503)
