"""The composition root: the only module that knows the concrete adapters, creates the pool and starts the tasks.

Daemon shape::

    run_daemon
    ├── metrics/health HTTP server           /metrics (Prometheus), /healthz (JSON, 503 when a watcher is down)
    ├── wallet listener                      LISTEN citadel_wallets → wakes the chain's watcher (polling fallback)
    └── per enabled chain (own task, own failure domain):
        ├── writer lease (indexer.store.lease) one writer per chain across replicas; heartbeat on its session
        ├── ChainWatcher.run                 catch-up, follow, reorgs
        ├── Backfiller.run                   history of wallets added while running, range backfill jobs
        └── BalanceRefresher.run             cached balances in wallets (touched wallets soon, all every 5 min)
        all of them writing through the chain's one ChainWriter, whose every transaction is fenced

A replica that loses its lease (its lease session cut or silent, or a write fenced because another replica took
over) stops every loop of that chain at once and stands by again. A chain whose watcher stops on a fatal error
(wrong chain id, reorg past finality) is reported and left stopped; the other chains go on. Shutdown
(SIGINT/SIGTERM) cancels the tasks; every batch is one transaction, so an interrupted batch simply never happened.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import time
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack, suppress
from typing import Any

import asyncpg
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from chains.base import Chain, ChainAdapter, FatalChainError
from indexer import metrics
from indexer.config import ChainSettings, Settings
from indexer.guardian import RuleConfig
from indexer.logs import register_secret
from indexer.model import StreamState, WalletRef, WriterFenced
from indexer.store import db
from indexer.store.chain_store import ChainStore, prepare_connection
from indexer.store.guardian_store import GuardianPolicy
from indexer.store.lease import LeaseLost, WriterLease, current_writer
from indexer.store.migrate import migration_status
from indexer.sync.backfill import Backfiller, BackfillError, Progress, check_range, range_stream
from indexer.sync.balances import BalanceRefresher
from indexer.sync.resilience import TRANSIENT_ERRORS, Backoff
from indexer.sync.view import ChainView, WatcherConfig
from indexer.sync.watcher import ChainWatcher
from indexer.sync.writer import ChainWriter

log = logging.getLogger("citadel.app")

WALLET_CHANNEL = "citadel_wallets"


def replica_id(settings: Settings) -> str:
    return settings.replica_id or f"{socket.gethostname()}:{os.getpid()}"


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
            chain_id=cfg.chain_id or None, max_response_bytes=cfg.max_response_mb * 2**20,
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
            max_response_bytes=cfg.max_response_mb * 2**20,
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
        degraded_after_s=cfg.degraded_after_s,
        platform_tx_max_age_s=cfg.platform_tx_max_age_s,
        range_size=cfg.max_block_range,
        escrow_contract=cfg.escrow_contract,
        wallet_history_from=cfg.wallet_history_from,
    )


def guardian_policy(settings: Settings) -> GuardianPolicy | None:
    """The Guardian's rules as the store applies them; None when the Guardian is off."""
    g = settings.guardian
    if not g.enabled:
        return None
    rules = tuple(
        RuleConfig(r.rule, r.risk_score, frozenset(c.value for c in r.chains), frozenset(r.wallet_types),
                   r.threshold_usd, r.max_transfers, r.window_minutes, r.dust_usd, r.match_chars,
                   r.requires_approval)
        for r in g.rules
    )
    return GuardianPolicy(rules, g.max_age_s)


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


async def run_backfill(
    settings: Settings,
    chain: Chain,
    first: int,
    last: int,
    report: Callable[[Progress], None],
    say: Callable[[str], None],
    *,
    wallets: Sequence[str] | None = None,
    poll_s: float = 1.0,
) -> Progress:
    """``citadel-indexer backfill``: re-index final blocks ``first..last`` of ``chain`` for every active wallet, or
    for ``wallets`` only (their history streams).

    One writer per chain owns every commit: the job is recorded as streams in ``sync_cursors``; when a daemon holds
    the chain's writer lease it runs them and this command follows their progress; when none does (or the daemon
    goes away), this process takes the lease and runs them itself, resuming from the recorded progress either way."""
    cfg = settings.chain(chain)
    name = chain.value
    dsn = database_url(settings)
    await check_schema(dsn)
    pool = await open_pool(dsn)
    adapter = build_adapter(chain, cfg)
    try:
        reader = ChainStore(pool, name)  # no lease: reads, and the job request
        view = ChainView(adapter, ChainWriter(reader), watcher_config(cfg))
        await adapter.check_chain_id()
        await view.observe_head()
        check_range(view, first, last)
        if wallets:
            streams = await _request_wallet_backfills(reader, adapter, wallets, first, last)
            label = f"wallets:{len(streams)}"
        else:
            label = range_stream(first, last)
            await reader.request_backfill(label, first - 1, last)
            streams = [label]
        started = time.monotonic()
        told = False
        while True:
            lease = await WriterLease.try_take(dsn, name, f"{replica_id(settings)} backfill")
            if lease is not None:
                try:
                    async with lease:
                        return await _backfill_leased(lease, pool, adapter, cfg, streams, label, first, last,
                                                      started, report)
                except (LeaseLost, WriterFenced) as exc:
                    say(f"lost the writer lease of {name} ({exc}); going on where the job stands")
                    continue
            if not told:
                say(f"a daemon writes {name}: the job {label} is recorded and runs there; following its progress "
                    "(Ctrl-C stops following, not the job)")
                told = True
            progress = await _job_progress(reader, streams, label, first, last, started)
            report(progress)
            if progress.done_to >= last:
                return progress
            await asyncio.sleep(poll_s)
    finally:
        await adapter.aclose()
        await close_pool(pool)


async def _request_wallet_backfills(
    reader: ChainStore, adapter: ChainAdapter, wallets: Sequence[str], first: int, last: int
) -> list[str]:
    """The history streams of ``wallets``, set to ``first..last``; a wallet the daemon has not picked up yet, or
    whose history is still being filled, is refused (its own backfill covers it)."""
    from indexer.sync.wallets import WalletSet

    by_address = {}
    for record in await reader.active_wallets():
        try:
            by_address[adapter.normalise_address(record.public_address)] = record
        except ValueError:
            continue
    streams = []
    for given in wallets:
        try:
            address = adapter.normalise_address(given)
        except ValueError as exc:
            raise BackfillError(f"--wallet {given}: {exc}") from None
        found = by_address.get(address)
        if found is None:
            raise BackfillError(f"--wallet {given}: no active wallet of {reader.chain} has this address")
        streams.append(WalletSet.stream_name(WalletRef(found.id, found.user_id, address)))
    refused = await reader.request_wallet_backfills(streams, first - 1, last)
    if refused:
        raise BackfillError("; ".join(f"{stream}: {why}" for stream, why in refused.items()))
    return streams


async def _job_progress(
    reader: ChainStore, streams: Sequence[str], label: str, first: int, last: int, started: float
) -> Progress:
    """The job's progress: its slowest stream."""
    states = {s.stream: s for prefix in {n.rsplit(":", 1)[0] for n in streams} for s in await reader.streams(prefix)}
    done = min(_done_to(states.get(n), first - 1) for n in streams)
    return Progress(label, done, last, done - first + 1, last - first + 1, 0, time.monotonic() - started)


def _done_to(state: StreamState | None, default: int) -> int:
    return state.block_number if state is not None and state.block_number is not None else default


async def _backfill_leased(
    lease: WriterLease, pool: asyncpg.Pool, adapter: ChainAdapter, cfg: ChainSettings, streams: Sequence[str],
    label: str, first: int, last: int, started: float, report: Callable[[Progress], None],
) -> Progress:
    """Run the job's streams as the chain's writer (the daemon's Backfiller does the same), watching the lease."""
    writer = ChainWriter(ChainStore(pool, lease.fence.chain, lease.fence))
    watcher = ChainWatcher(adapter, writer, watcher_config(cfg))
    await watcher.prepare()
    await watcher.view.observe_head()
    backfiller = Backfiller(watcher.view, writer)

    async def work() -> Progress:
        while True:
            progress = await _job_progress(writer.store, streams, label, first, last, started)
            report(progress)
            if progress.done_to >= last:
                return progress
            await backfiller.advance_all()

    job = asyncio.create_task(work())
    guard = asyncio.create_task(lease.watch(1.0, 10.0))
    try:
        await asyncio.wait({job, guard}, return_when=asyncio.FIRST_COMPLETED)
        if guard.done():
            job.cancel()
            guard.result()  # raises LeaseLost
        return job.result()
    finally:
        for task in (job, guard):
            task.cancel()
        await asyncio.gather(job, guard, return_exceptions=True)


class Daemon:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.watchers: dict[Chain, ChainWatcher] = {}
        self.leases: dict[Chain, WriterLease] = {}
        self.replica = replica_id(settings)
        self.pool: asyncpg.Pool | None = None
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
            self.pool = pool
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
        """The chain's task: take its writer lease, run its loops; when the lease is lost (its session cut or
        silent, or a write fenced because another replica took over), stop writing at once and stand by for the
        lease again. Ends only on a fatal error, which it reports."""
        cfg = self.settings.chain(chain)
        name = chain.value
        adapter = build_adapter(chain, cfg)
        backoff = Backoff(name, "writer lease", 30.0)
        # series exist from the start (at 0), so alerts see their first change and a standby replica says so
        metrics.CHAIN_WRITER.labels(name).set(0)
        metrics.CHAIN_DEGRADED.labels(name).set(0)
        metrics.CHAIN_STOPPED.labels(name).set(0)
        for reason in ("fenced", "lease_lost"):
            metrics.WRITER_LEASE_LOST.labels(name, reason).inc(0)
        metrics.PLATFORM_TX_DROPPED.labels(name).inc(0)
        stopped = False
        try:
            while not stopped:
                try:
                    await self._run_chain_leased(chain, cfg, adapter, pool, dsn)
                except* (LeaseLost, WriterFenced) as errors:
                    lost = errors.exceptions[0]
                    reason = "fenced" if isinstance(lost, WriterFenced) else "lease_lost"
                    metrics.WRITER_LEASE_LOST.labels(name, reason).inc()
                    log.error("writer lock lost: stopped writing this chain; standing by for the lease again",
                              extra={"fields": {"chain": name, "reason": str(lost)}})
                    self.status[name] = "reacquiring"
                    await asyncio.sleep(1)
                except* TRANSIENT_ERRORS as errors:  # the lease's connection could not be opened
                    await backoff.after(errors.exceptions[0])
                except* FatalChainError as errors:
                    for exc in errors.exceptions:
                        log.critical("chain watcher stopped", extra={"fields": {"chain": name, "error": str(exc)}})
                    self.status[name] = "stopped: " + str(errors.exceptions[0])
                    metrics.CHAIN_STOPPED.labels(name).set(1)
                    stopped = True
                except* Exception as errors:
                    log.critical("chain task crashed", exc_info=errors.exceptions[0],
                                 extra={"fields": {"chain": name}})
                    self.status[name] = f"stopped: {type(errors.exceptions[0]).__name__}"
                    metrics.CHAIN_STOPPED.labels(name).set(1)
                    stopped = True
        finally:
            await adapter.aclose()

    async def _take_lease(self, chain: Chain, dsn: str) -> WriterLease:
        name = chain.value
        while True:
            lease = await WriterLease.try_take(dsn, name, self.replica)
            if lease is not None:
                return lease
            if self.status[name] != "standby":
                log.warning("another replica writes this chain; standing by", extra={"fields": {"chain": name}})
            self.status[name] = "standby"
            await asyncio.sleep(self.settings.writer_heartbeat_s)

    async def _run_chain_leased(
        self, chain: Chain, cfg: ChainSettings, adapter: ChainAdapter, pool: asyncpg.Pool, dsn: str
    ) -> None:
        name = chain.value
        lease = await self._take_lease(chain, dsn)
        try:
            self.leases[chain] = lease
            metrics.CHAIN_WRITER.labels(name).set(1)
            metrics.WRITER_EPOCH.labels(name).set(lease.fence.epoch)
            writer = ChainWriter(ChainStore(pool, name, lease.fence, guardian_policy(self.settings)))
            watcher = ChainWatcher(adapter, writer, watcher_config(cfg), self.wallet_events[name])
            self.watchers[chain] = watcher
            self.status[name] = "running"
            log.info("watching", extra={"fields": {"chain": name, "start_block": cfg.start_block,
                                                   "epoch": lease.fence.epoch, "replica": self.replica}})
            async with asyncio.TaskGroup() as group:
                group.create_task(lease.watch(self.settings.writer_heartbeat_s, self.settings.writer_timeout_s))
                group.create_task(watcher.run())
                group.create_task(Backfiller(watcher.view, writer).run())
                group.create_task(BalanceRefresher(watcher.view, writer).run())
        finally:
            self.leases.pop(chain, None)
            metrics.CHAIN_WRITER.labels(name).set(0)
            metrics.WRITER_EPOCH.labels(name).set(0)
            await lease.release()

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
        app.router.add_get("/readyz", self._ready)
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
        """Per chain: status (running, degraded, standby, reacquiring, starting, stopped: <reason>), whether this
        replica writes it (and with which epoch), who the database says writes it, cursor, head and final. 503 only
        when a chain is stopped: a degraded chain (its providers failing) keeps retrying, a restart would not help."""
        chains = {}
        for chain in self.settings.enabled_chains():
            watcher = self.watchers.get(chain)
            lease = self.leases.get(chain)
            status = self.status.get(chain.value, "unknown")
            if status == "running" and watcher is not None and watcher.degraded:
                status = "degraded"
            chains[chain.value] = {
                "status": status,
                "writer": lease is not None,
                "epoch": lease.fence.epoch if lease is not None else None,
                "writer_replica": await self._writer_of(chain),
                "cursor": watcher.cursor if watcher else None,
                "head": watcher.head_number if watcher else None,
                "final": watcher.final_number if watcher else None,
            }
        healthy = all(not str(c["status"]).startswith("stopped") for c in chains.values())
        return web.json_response({"healthy": healthy, "replica": self.replica, "chains": chains},
                                 status=200 if healthy else 503)

    async def _ready(self, _request: web.Request) -> web.Response:
        """Ready when every enabled chain is either written by this replica within ``READY_LAG_BLOCKS`` of its head,
        or stood by while another replica writes it. 503 otherwise, naming each chain that is not and why."""
        chains: dict[str, dict[str, Any]] = {}
        for chain in self.settings.enabled_chains():
            name = chain.value
            status = self.status.get(name, "unknown")
            watcher = self.watchers.get(chain)
            max_lag = self.settings.chain(chain).ready_lag_blocks
            lag = None
            if status == "running" and watcher is not None and watcher.head_number >= 0:
                lag = max(watcher.head_number - watcher.cursor, 0)
                ready = lag <= max_lag and not watcher.degraded
                reason = "" if ready else ("degraded" if watcher.degraded else f"{lag} blocks behind the head")
            elif status == "standby":
                ready, reason = True, "another replica writes it"
            else:
                ready, reason = False, status
            chains[name] = {"ready": ready, "lag_blocks": lag, "max_lag_blocks": max_lag, "reason": reason}
        ready = all(c["ready"] for c in chains.values())
        return web.json_response({"ready": ready, "replica": self.replica, "chains": chains},
                                 status=200 if ready else 503)

    async def _writer_of(self, chain: Chain) -> str | None:
        """The replica the database names as the chain's writer (None when unknown or the database is away)."""
        if self.pool is None:
            return None
        try:
            async with asyncio.timeout(1.0):
                info = await current_writer(self.pool, chain.value)
        except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            return None
        return info.holder if info is not None and info.alive else None
