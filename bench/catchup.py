"""EVM catch-up throughput against a floor measured in the same run (a benchmark, not a test).

    .venv/bin/python bench/catchup.py [--transfers 30000] [--blocks 3000] [--repeat 3] [--strict]

1. Generates a history on a throwaway anvil (chain id 56, ``--slots-in-an-epoch 1`` so finalized = head - 2): one
   TestToken and ``--transfers`` Transfer logs from an outside sender to ``--wallets`` known wallets, spread over
   ``--blocks`` blocks (``batchTransfer``, automine off, blocks mined in bulk). Generation is not measured.
2. floor: the same logs fetched with plain parallel ``eth_getLogs`` (aiohttp + orjson, the indexer's range size
   and concurrency), decoded into 23-column tuples (the indexer's ``ROW_COLUMNS``) and COPYed into a bare table.
3. indexer: the real ``ChainWatcher`` catch-up (``EvmAdapter`` for BSC, ``ChainStore``, a fresh migrated database
   per run) from block 0 until its cursor reaches the last block of the history.
4. Prints both (median of ``--repeat``), their ratio and PASS/FAIL against the 1.5x target; exit 0 unless
   ``--strict``. A per-phase breakdown of one extra indexer run follows (``--no-breakdown`` skips it).

Every server is started here and stopped at exit: anvil from ``node_modules`` and PostgreSQL 16 (``pgserver``
wheel), unless ``CITADEL_DATABASE_URL`` names a server, in which case the bench creates and drops its own
``citadel_bench_<pid>_*`` databases there (the role needs CREATEDB) and touches nothing else.

``--tokens-only`` runs the indexer with ``native_transfers = false``. ``--experiment NAME`` (repeatable) applies a
cost probe to the bench's own template database (see ``EXPERIMENTS``); the repository is not touched.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import os
import signal
import statistics
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # `python bench/catchup.py` puts bench/ first, not the repo root
    sys.path.insert(0, str(REPO_ROOT))

import aiohttp  # noqa: E402
import asyncpg  # noqa: E402
import orjson  # noqa: E402

from chains.base import Chain  # noqa: E402
from chains.evm.adapter import EvmAdapter  # noqa: E402
from chains.evm.logs import (  # noqa: E402
    DEFAULT_ADDRESS_FILTER_LIMIT,
    DEFAULT_CONCURRENCY,
    TRANSFER_TOPIC,
)
from citadel_devtools.anvil import Anvil, start_anvil  # noqa: E402
from citadel_devtools.postgres import LocalPostgres, database_url_from_env, start_postgres  # noqa: E402
from indexer.app import open_pool, watcher_config  # noqa: E402
from indexer.config import ChainSettings  # noqa: E402
from indexer.model import ROW_COLUMNS  # noqa: E402
from indexer.store import chain_store  # noqa: E402
from indexer.store.chain_store import ChainStore  # noqa: E402
from indexer.store.lease import WriterLease  # noqa: E402
from indexer.store.migrate import apply_migrations  # noqa: E402
from indexer.sync import view as view_mod  # noqa: E402
from indexer.sync.view import ChainView  # noqa: E402
from indexer.sync.watcher import ChainWatcher, WatcherConfig  # noqa: E402
from indexer.sync.writer import ChainWriter  # noqa: E402
from tests.support.evm import (  # noqa: E402
    accounts,
    block_number,
    calldata,
    deploy_token,
    get_block,
    mine,
    send_tx,
    set_automine,
    token_mint,
    wait_receipt,
)

CHAIN_ID = 56
TARGET_RATIO = 1.5
DECIMALS = 18
SYMBOL = "TST"
GAS_PER_RECIPIENT = 35_000  # a cold recipient costs ~27k in TestToken.batchTransfer; 35k leaves room
PRODUCT_MAX_BLOCK_RANGE = ChainSettings().max_block_range  # the eth_getLogs range of the product and the floor

# The floor's table: the columns and types of the indexer's staging table (chain_store.STAGING_DDL), as a plain
# logged heap table without index or constraint, created afresh before each run.
_STAGING_COLUMNS = chain_store.STAGING_DDL[chain_store.STAGING_DDL.index("(") + 1:chain_store.STAGING_DDL.rindex(")")]
FLOOR_DDL = f"DROP TABLE IF EXISTS floor_transfers; CREATE TABLE floor_transfers ({_STAGING_COLUMNS})"


# ------------------------------------------------------------------------------------------------ generation


@dataclass(frozen=True)
class History:
    token: str
    wallets: list[str]  # lowercase addresses, in wallet-id order
    last_block: int  # every block 0..last_block is final once generation is done
    logs: int
    generation_s: float


def wallet_address(i: int) -> str:
    """Deterministic addresses nobody controls (the known wallets)."""
    return "0x" + f"c17ade1{i:033x}"


def generate(node: Anvil, transfers: int, blocks: int, n_wallets: int, logs_per_tx: int) -> History:
    """``transfers`` Transfer logs in ``ceil(transfers / logs_per_tx)`` batchTransfer transactions spread evenly
    over blocks up to ``blocks`` (more than one per block when there are more transactions than blocks)."""
    started = time.perf_counter()
    sender = accounts(node)[0]
    token = deploy_token(node, DECIMALS, SYMBOL)
    wait_receipt(node, token_mint(node, token, sender, sender, 10**40))
    wallets = [wallet_address(i) for i in range(n_wallets)]
    n_txs = math.ceil(transfers / logs_per_tx)
    first = block_number(node) + 1
    span = max(1, blocks - first + 1)  # blocks first..blocks carry the history
    by_block: dict[int, list[int]] = defaultdict(list)
    for i in range(n_txs):
        by_block[first + i * span // n_txs].append(i)
    set_automine(node, False)
    try:
        sent = 0
        last_hash = ""
        current = first
        for number in sorted(by_block):
            if number > current:
                mine(node, number - current)  # empty blocks up to this one
                current = number
            for _ in by_block[number]:
                count = min(logs_per_tx, transfers - sent)
                recipients = [wallets[(sent + j) % n_wallets] for j in range(count)]
                amounts = [10**15 * (1 + (sent + j) % 997) for j in range(count)]
                data = calldata("batchTransfer(address[],uint256[])", recipients, amounts)
                last_hash = send_tx(node, sender, token, data, gas=60_000 + GAS_PER_RECIPIENT * count)
                sent += count
            mine(node)
            current += 1
        if current <= blocks:
            mine(node, blocks - current + 1)
        # --slots-in-an-epoch 1: finalized = head - 2, so two more blocks make the whole history final
        mine(node, 2)
    finally:
        set_automine(node, True)
    receipt = wait_receipt(node, last_hash)
    if int(receipt["status"], 16) != 1:
        raise RuntimeError("a batchTransfer reverted: raise GAS_PER_RECIPIENT")
    last_block = int(get_block(node, "finalized")["number"], 16)
    return History(token, wallets, last_block, sent, time.perf_counter() - started)


# ------------------------------------------------------------------------------------------------ databases


def dsn_for(server_dsn: str, database: str) -> str:
    parts = urlsplit(server_dsn)
    return urlunsplit(parts._replace(path="/" + database))


class Databases:
    """Throwaway databases on one server: a migrated template holding the wallets, copies of it per run."""

    def __init__(self, server_dsn: str) -> None:
        self.server_dsn = server_dsn
        self.prefix = f"citadel_bench_{os.getpid()}"
        self.created: list[str] = []

    async def _admin(self, sql: str) -> None:
        conn = await asyncpg.connect(self.server_dsn)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    async def create(self, name: str, template: str | None = None) -> str:
        full = f"{self.prefix}_{name}"
        await self._admin(f'CREATE DATABASE "{full}"' + (f' TEMPLATE "{template}"' if template else ""))
        self.created.append(full)
        return full

    async def drop(self, full: str) -> None:
        await self._admin(f'DROP DATABASE IF EXISTS "{full}" WITH (FORCE)')
        if full in self.created:
            self.created.remove(full)

    async def drop_all(self) -> None:
        for full in list(self.created):
            await self.drop(full)


async def make_template(
    dbs: Databases, wallets: list[str], extra_sql: list[str]
) -> tuple[str, dict[str, tuple[int, int]]]:
    """A migrated database (then ``extra_sql``, from experiments) with one user and one BSC wallet per address;
    returns its name and address -> (user_id, wallet_id)."""
    name = await dbs.create("template")
    dsn = dsn_for(dbs.server_dsn, name)
    await apply_migrations(dsn, echo=lambda _line: None)
    conn = await asyncpg.connect(dsn)
    try:
        for sql in extra_sql:
            await conn.execute(sql)
        ids: dict[str, tuple[int, int]] = {}
        for i, address in enumerate(wallets):
            user_id = await conn.fetchval(
                "INSERT INTO users (email, password_hash, username) VALUES ($1, 'x', $2) RETURNING id",
                f"bench{i}@example.com", f"bench{i}",
            )
            wallet_id = await conn.fetchval(
                "INSERT INTO wallets (user_id, chain, public_address, wallet_type) "
                "VALUES ($1, 'bsc', $2, 'personal') RETURNING id",
                user_id, address,
            )
            ids[address] = (user_id, wallet_id)
    finally:
        await conn.close()
    return name, ids


# ------------------------------------------------------------------------------------------------ floor


class CpuMeter:
    """CPU seconds (user + system) spent by this process, anvil and, when the bench started it, PostgreSQL (the
    postmaster, its live backends, and the backends that exited, which the kernel adds to the postmaster's
    children's time) between ``start()`` and ``stop()``. Shows where the machine's cores went during a run."""

    TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    def __init__(self, anvil_pid: int, postmaster_pid: int | None) -> None:
        self.pids = {"python": os.getpid(), "anvil": anvil_pid}
        self.postmaster_pid = postmaster_pid
        self._start: dict[str, float] = {}
        self.last: dict[str, float] = {}

    @staticmethod
    def _stat(pid: int) -> list[str] | None:
        try:
            with open(f"/proc/{pid}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()
        except OSError:
            return None

    def _process_s(self, pid: int, *, children: bool = False) -> float:
        f = self._stat(pid)
        if f is None:
            return 0.0
        ticks = int(f[11]) + int(f[12]) + ((int(f[13]) + int(f[14])) if children else 0)
        return ticks / self.TICK

    def _postgres_s(self) -> float:
        assert self.postmaster_pid is not None
        total = self._process_s(self.postmaster_pid, children=True)
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                f = self._stat(int(entry))
                if f is not None and int(f[1]) == self.postmaster_pid:
                    total += self._process_s(int(entry))
        return total

    def sample(self) -> dict[str, float]:
        out = {name: self._process_s(pid) for name, pid in self.pids.items()}
        if self.postmaster_pid is not None:
            out["postgres"] = self._postgres_s()
        return out

    def start(self) -> None:
        self._start = self.sample()

    def stop(self) -> None:
        end = self.sample()
        self.last = {k: end[k] - self._start.get(k, 0.0) for k in end}


def postmaster_pid(pg: LocalPostgres | None) -> int | None:
    if pg is None:
        return None
    try:
        return int((pg.data_dir / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


async def floor_once(
    url: str, dsn: str, history: History, ids: dict[str, tuple[int, int]], range_size: int, concurrency: int,
    meter: CpuMeter | None = None, *, with_blocks: bool = False,
) -> tuple[float, int, dict[str, float]]:
    """Seconds to fetch every Transfer log of the token (parallel eth_getLogs) and COPY one row per log, rows
    written, and seconds per part (fetch, decode, COPY).

    ``with_blocks``: also fetch every block with its transactions (batches of 100 ``eth_getBlockByNumber``,
    ``concurrency`` at a time, alongside the logs) and test each value transfer's sides against the known
    wallets: the least a BSC indexer must do for native transfers, for a like-for-like comparison."""
    conn = await asyncpg.connect(dsn)
    await conn.execute(FLOOR_DDL)
    try:
        async with aiohttp.ClientSession() as session:
            if meter is not None:
                meter.start()
            started = time.perf_counter()
            sem = asyncio.Semaphore(concurrency)

            async def get_logs(first: int, last: int) -> list[dict[str, Any]]:
                body = orjson.dumps({"jsonrpc": "2.0", "id": first, "method": "eth_getLogs", "params": [{
                    "address": history.token, "topics": [TRANSFER_TOPIC],
                    "fromBlock": hex(first), "toBlock": hex(last)}]})
                async with sem, session.post(url, data=body, headers={"Content-Type": "application/json"}) as resp:
                    reply = orjson.loads(await resp.read())
                result: list[dict[str, Any]] = reply["result"]
                return result

            ranges = [(a, min(a + range_size - 1, history.last_block))
                      for a in range(0, history.last_block + 1, range_size)]
            block_sem = asyncio.Semaphore(concurrency)

            async def native_candidates(first: int, last: int) -> int:
                body = orjson.dumps([{"jsonrpc": "2.0", "id": n, "method": "eth_getBlockByNumber",
                                      "params": [hex(n), True]} for n in range(first, last + 1)])
                async with block_sem, session.post(url, data=body,
                                                   headers={"Content-Type": "application/json"}) as resp:
                    reply = orjson.loads(await resp.read())
                return sum(1 for entry in reply for tx in entry["result"]["transactions"]
                           if tx["value"] != "0x0" and (tx["from"] in ids or (tx["to"] or "") in ids))

            scans = [native_candidates(a, min(a + 99, history.last_block))
                     for a in range(0, history.last_block + 1, 100)] if with_blocks else []
            pieces, *_ = await asyncio.gather(
                asyncio.gather(*(get_logs(a, b) for a, b in ranges)), *scans)
            fetched = time.perf_counter()
            records = []
            token = history.token
            for piece in pieces:
                for log in piece:
                    topics = log["topics"]
                    frm, to = "0x" + topics[1][-40:], "0x" + topics[2][-40:]
                    side = ids.get(to)  # the generated history only credits known wallets
                    if side is None:
                        continue  # the sender's mint
                    user_id, wallet_id = side
                    raw = int(log["data"][2:66], 16)
                    number = int(log["blockNumber"], 16)
                    records.append((
                        "bsc", "indexer", user_id, wallet_id, log["transactionHash"], int(log["logIndex"], 16),
                        frm, to, Decimal(raw).scaleb(-DECIMALS), Decimal(raw), SYMBOL, token, DECIMALS, None, "confirmed",
                        history.last_block - number + 1, int(log["transactionIndex"], 16), "deposit", None, None,
                        number, log["blockHash"], datetime.fromtimestamp(int(log["blockTimestamp"], 16), UTC),
                    ))
            decoded = time.perf_counter()
            await conn.copy_records_to_table("floor_transfers", records=records, columns=ROW_COLUMNS)
            done = time.perf_counter()
            if meter is not None:
                meter.stop()
    finally:
        await conn.close()
    parts = {"fetch": fetched - started, "decode": decoded - fetched, "COPY": done - decoded}
    return done - started, len(records), parts


# ------------------------------------------------------------------------------------------------ indexer


def make_adapter(url: str, range_size: int, concurrency: int) -> EvmAdapter:
    """As ``indexer.app`` builds it for BSC (defaults for what the settings leave out)."""
    return EvmAdapter(Chain.BSC, [url], CHAIN_ID, max_block_range=range_size,
                      address_filter_limit=DEFAULT_ADDRESS_FILTER_LIMIT, concurrency=concurrency)


SETTINGS_OVERRIDES: dict[str, Any] = {}  # from the command line (--tokens-only)


def make_config(token: str, range_size: int) -> WatcherConfig:
    """Built by ``indexer.app.watcher_config`` from settings (the product's defaults for the rest, the catch-up
    batch included); the finalized tag decides finality on anvil anyway."""
    return watcher_config(ChainSettings(start_block=0, confirmations=1, poll_interval_s=0.05,
                                        tokens={SYMBOL: token}, max_block_range=range_size, **SETTINGS_OVERRIDES))


async def indexer_once(
    url: str, dbs: Databases, template: str, history: History, range_size: int, concurrency: int, label: str,
    meter: CpuMeter | None = None,
) -> tuple[float, int]:
    """Seconds for a fresh watcher to catch up from block 0 to the last block (``prepare`` included); rows."""
    name = await dbs.create(label, template=template)
    dsn = dsn_for(dbs.server_dsn, name)
    pool = await open_pool(dsn)
    try:
        async with make_adapter(url, range_size, concurrency) as adapter:
            if meter is not None:
                meter.start()
            started = time.perf_counter()
            lease = await WriterLease.try_take(dsn, "bsc", "bench")  # as the daemon: every commit is fenced
            assert lease is not None
            watcher = ChainWatcher(adapter, ChainWriter(ChainStore(pool, "bsc", lease.fence)),
                                   make_config(history.token, range_size))
            await watcher.prepare()
            while watcher.cursor < history.last_block:
                await watcher.step()
            elapsed = time.perf_counter() - started
            if meter is not None:
                meter.stop()
            await lease.release()
        rows = await pool.fetchval("SELECT count(*) FROM transactions WHERE chain = 'bsc'")
    finally:
        await pool.close()
        await dbs.drop(name)
    return elapsed, int(rows)


# ------------------------------------------------------------------------------------------------ breakdown


class PhaseTimer:
    """Wall time and call count per phase, by wrapping methods/functions for one run. Phases nest and overlap
    (token logs and the block scan run concurrently inside ``transfers``), so the column does not add up."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._undo: list[tuple[Any, str, Any]] = []
        self.missing: list[str] = []

    def wrap_async(self, owner: Any, attr: str, phase: str) -> None:
        original = getattr(owner, attr)

        async def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return await original(*args, **kwargs)
            finally:
                self.seconds[phase] += time.perf_counter() - started
                self.calls[phase] += 1

        self._undo.append((owner, attr, original))
        setattr(owner, attr, timed)

    def wrap_sync(self, owner: Any, attr: str, phase: str) -> None:
        original = getattr(owner, attr)

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[phase] += time.perf_counter() - started
                self.calls[phase] += 1

        self._undo.append((owner, attr, original))
        setattr(owner, attr, timed)

    def wrap_execute(self, sql: str, phase: str) -> None:
        """``Connection.execute`` of exactly ``sql`` (the pool's connection proxies forward to the class)."""
        owner = asyncpg.connection.Connection
        original = owner.execute

        async def timed(conn: Any, query: str, *args: Any, **kwargs: Any) -> Any:
            if query is not sql:
                return await original(conn, query, *args, **kwargs)
            started = time.perf_counter()
            try:
                return await original(conn, query, *args, **kwargs)
            finally:
                self.seconds[phase] += time.perf_counter() - started
                self.calls[phase] += 1

        self._undo.append((owner, "execute", original))
        owner.execute = timed

    def restore(self) -> None:
        for owner, attr, original in reversed(self._undo):
            setattr(owner, attr, original)
        self._undo.clear()


PHASES: list[tuple[str, Any, str, str]] = [
    # (kind, owner, attribute (alternatives separated by |; for "execute": the SQL text), phase name)
    ("async", ChainWatcher, "_refresh_wallets", "watcher: reload wallets"),
    ("async", EvmAdapter, "head", "rpc: head (latest block)"),
    ("async", EvmAdapter, "finalized_number", "rpc: finalized block"),
    ("async", EvmAdapter, "transfers", "adapter.transfers (both below, concurrent)"),
    ("async", EvmAdapter, "_token_transfers", "  token logs: eth_getLogs + decode"),
    ("async", EvmAdapter, "_top_level_native_transfers", "  native: full-block scan"),
    ("async", EvmAdapter, "block_ref", "rpc: block_ref (anchor, timestamps)"),
    ("async", ChainView, "with_timestamps", "view: missing timestamps"),
    ("async", ChainWatcher, "_receipts_up_to", "watcher: platform receipts"),
    ("sync", view_mod, "transfer_rows", "rows: transfer_rows (Python)"),
    ("async", ChainStore, "commit", "store.commit (one transaction)"),
    ("async", asyncpg.connection.Connection, "copy_records_to_table",
     "  COPY (into transactions; staging on fallback)"),
    ("execute", None, chain_store.UPSERT_SQL, "  UPSERT_SQL (staging -> transactions)"),
    ("execute", None, chain_store.INSERT_SQL, "  INSERT_SQL (staging -> transactions)"),
    ("async", chain_store.ChainStore, "_merge_late_platform_rows", "  merge late platform rows"),
    ("async", chain_store.ChainStore, "_write_window", "  window write"),
    ("async", chain_store.ChainStore, "_refresh_confirmations", "  refresh confirmations"),
]


async def breakdown_once(
    url: str, dbs: Databases, template: str, history: History, range_size: int, concurrency: int
) -> tuple[float, PhaseTimer]:
    timer = PhaseTimer()
    for kind, owner, attrs, phase in PHASES:
        if kind == "execute":
            timer.wrap_execute(attrs, phase)
            continue
        # the product moves on: a renamed method drops out of the breakdown instead of failing the bench
        attr = next((a for a in attrs.split("|") if hasattr(owner, a)), None)
        if attr is None:
            timer.missing.append(phase)
        else:
            (timer.wrap_async if kind == "async" else timer.wrap_sync)(owner, attr, phase)
    try:
        elapsed, _rows = await indexer_once(url, dbs, template, history, range_size, concurrency, "breakdown")
    finally:
        timer.restore()
    return elapsed, timer


# ------------------------------------------------------------------------------------------------ experiments
# Cost probes: SQL run on the bench's template database after the migrations. The repository's code and
# migrations are not touched.

NO_FOREIGN_KEYS = [
    "ALTER TABLE transactions DROP CONSTRAINT transactions_wallet_owner_fkey",
    "ALTER TABLE transactions DROP CONSTRAINT transactions_strategy_id_fkey",
    "ALTER TABLE transactions DROP CONSTRAINT transactions_agreement_id_fkey",
]


@dataclass(frozen=True)
class Experiment:
    help: str
    template_sql: tuple[str, ...] = ()


EXPERIMENTS: dict[str, Experiment] = {
    "no-foreign-keys": Experiment("drop the three FKs of transactions (what their per-row checks cost; not a fix)",
                                  template_sql=tuple(NO_FOREIGN_KEYS)),
}


# ------------------------------------------------------------------------------------------------ report


@dataclass
class Result:
    seconds: list[float]
    rows: int

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


def rate(n: int, seconds: float) -> str:
    return f"{n / seconds:,.0f}" if seconds > 0 else "inf"


def report(
    history: History, blocks: int, floor: Result, indexer: Result, args: argparse.Namespace, floor_blocks: Result
) -> bool:
    ratio = indexer.median / floor.median
    ok = ratio <= TARGET_RATIO
    runs = lambda r: ", ".join(f"{s:.3f}" for s in r.seconds)  # noqa: E731
    print()
    print(f"history: {blocks:,} blocks (0..{history.last_block}), {history.logs:,} Transfer logs, "
          f"{len(history.wallets)} known wallets; generated in {history.generation_s:.1f} s (not measured)")
    print(f"settings: range {args.range} blocks, concurrency {args.concurrency}, median of {args.repeat}"
          + (", indexer with native_transfers = false" if args.tokens_only else "")
          + (f", experiments: {', '.join(args.experiment)}" if args.experiment else ""))
    print()
    print(f"{'':10} {'rows':>8} {'median s':>9} {'transfers/s':>12} {'blocks/s':>10}   runs (s)")
    for name, r in (("floor", floor), ("floor+scan", floor_blocks), ("indexer", indexer)):
        print(f"{name:10} {r.rows:>8,} {r.median:>9.3f} {rate(history.logs, r.median):>12} "
              f"{rate(blocks, r.median):>10}   {runs(r)}")
    print()
    print(f"ratio indexer/floor: {ratio:.2f}x (target <= {TARGET_RATIO}x): {'PASS' if ok else 'FAIL'}")
    print(f"ratio indexer/floor+scan (like for like: the floor also reads every block for native transfers, as "
          f"BSC needs): {indexer.median / floor_blocks.median:.2f}x (for information; the target is on the floor)")
    if indexer.rows != history.logs or floor.rows != history.logs:
        print(f"WARNING: expected {history.logs} rows (one per log), floor wrote {floor.rows}, "
              f"indexer {indexer.rows}")
    return ok


def print_cpu(cpu: dict[str, dict[str, list[float]]]) -> None:
    """Median CPU seconds per process and side; the machine's cores are shared by all three."""
    print("CPU seconds per run (median; user + system; the cores are shared):")
    for side, per_process in cpu.items():
        medians = {k: statistics.median(v) for k, v in per_process.items()}
        print(f"  {side:8} " + "  ".join(f"{k} {v:.2f}" for k, v in medians.items())
              + f"  total {sum(medians.values()):.2f}")
    if not any("postgres" in p for p in cpu.values()):
        print("  (PostgreSQL not counted: it is the server of CITADEL_DATABASE_URL, not one this bench started)")


def print_breakdown(total: float, timer: PhaseTimer) -> None:
    print()
    print(f"indexer breakdown (one extra instrumented run, {total:.3f} s wall; phases overlap and nest):")
    for _kind, _owner, _attr, phase in PHASES:
        if timer.calls.get(phase):
            s = timer.seconds[phase]
            print(f"  {phase:46} {s:8.3f} s {100 * s / total:5.1f}%  {timer.calls[phase]:>6} calls")
    if timer.missing:
        print(f"  (not found in this version of the code, not timed: {'; '.join(timer.missing)})")


# ------------------------------------------------------------------------------------------------ main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--transfers", type=int, default=30_000, help="Transfer logs to generate (default 30000)")
    p.add_argument("--blocks", type=int, default=3_000, help="blocks the history spans (default 3000)")
    p.add_argument("--wallets", type=int, default=50, help="known wallets (default 50)")
    p.add_argument("--logs-per-tx", type=int, default=20, help="recipients per batchTransfer (default 20)")
    p.add_argument("--range", type=int, default=PRODUCT_MAX_BLOCK_RANGE,
                   help=f"max_block_range (default {PRODUCT_MAX_BLOCK_RANGE}, as the product)")
    p.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY,
                   help=f"parallel eth_getLogs (default {DEFAULT_CONCURRENCY}, as the product)")
    p.add_argument("--repeat", type=int, default=3, help="runs of each measurement; the median is reported")
    p.add_argument("--strict", action="store_true", help="exit 1 when the ratio is above the target")
    p.add_argument("--no-breakdown", action="store_true", help="skip the instrumented per-phase run")
    p.add_argument("--tokens-only", action="store_true",
                   help="run the indexer with CITADEL_BSC__NATIVE_TRANSFERS=false (no full-block scan)")
    p.add_argument("--experiment", action="append", default=[], choices=sorted(EXPERIMENTS),
                   help="prototype a change in this process only: " + "; ".join(
                       f"{k}: {v.help}" for k, v in EXPERIMENTS.items()))
    args = p.parse_args(argv)
    if args.transfers < 1 or args.blocks < 10 or args.wallets < 1 or args.repeat < 1:
        p.error("--transfers >= 1, --blocks >= 10, --wallets >= 1, --repeat >= 1")
    if not 1 <= args.logs_per_tx <= 800:
        p.error("--logs-per-tx must be 1..800 (block gas limit)")
    return args


async def measure(
    node: Anvil, server_dsn: str, history: History, args: argparse.Namespace, meter: CpuMeter
) -> bool:
    dbs = Databases(server_dsn)
    try:
        extra_sql = [sql for n in args.experiment for sql in EXPERIMENTS[n].template_sql]
        template, ids = await make_template(dbs, history.wallets, extra_sql)
        floor_db = dsn_for(server_dsn, await dbs.create("floor"))
        step = lambda what: print(f"  {what}", flush=True)  # noqa: E731
        # warm-up, one run of each (not counted): anvil's log index, asyncpg's codecs, the page cache, the
        # process's memory arenas; without it whichever side runs first pays for them
        await floor_once(node.url, floor_db, history, ids, args.range, args.concurrency)
        await indexer_once(node.url, dbs, template, history, args.range, args.concurrency, "warmup")
        floor = Result([], 0)
        floor_blocks = Result([], 0)
        indexer = Result([], 0)
        floor_parts: dict[str, list[float]] = defaultdict(list)
        cpu: dict[str, dict[str, list[float]]] = {"floor": defaultdict(list), "indexer": defaultdict(list)}
        for i in range(args.repeat):
            s, floor.rows, parts = await floor_once(node.url, floor_db, history, ids, args.range,
                                                    args.concurrency, meter)
            floor.seconds.append(s)
            for k, v in meter.last.items():
                cpu["floor"][k].append(v)
            for k, v in parts.items():
                floor_parts[k].append(v)
            step(f"run {i + 1}/{args.repeat}: floor {s:.3f} s")
            s, floor_blocks.rows, _ = await floor_once(node.url, floor_db, history, ids, args.range,
                                                       args.concurrency, with_blocks=True)
            floor_blocks.seconds.append(s)
            step(f"run {i + 1}/{args.repeat}: floor with the block scan {s:.3f} s")
            s, indexer.rows = await indexer_once(node.url, dbs, template, history, args.range,
                                                 args.concurrency, f"run{i}", meter)
            indexer.seconds.append(s)
            for k, v in meter.last.items():
                cpu["indexer"][k].append(v)
            step(f"run {i + 1}/{args.repeat}: indexer {s:.3f} s")
        blocks = history.last_block + 1
        ok = report(history, blocks, floor, indexer, args, floor_blocks)
        print("floor parts (median s): " + ", ".join(
            f"{k} {statistics.median(v):.3f}" for k, v in floor_parts.items()))
        print_cpu(cpu)
        if not args.no_breakdown:
            total, timer = await breakdown_once(node.url, dbs, template, history, args.range, args.concurrency)
            print_breakdown(total, timer)
        return ok
    finally:
        await dbs.drop_all()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.tokens_only:
        SETTINGS_OVERRIDES["native_transfers"] = False
    logging.basicConfig(level=logging.WARNING)
    # a SIGTERM (make interrupted, CI timeout) unwinds through the finally blocks that stop the servers
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    node: Anvil | None = None
    pg: LocalPostgres | None = None
    try:
        print(f"starting anvil (chain id {CHAIN_ID}) and generating {args.transfers:,} transfers over "
              f"{args.blocks:,} blocks...", flush=True)
        node = start_anvil(CHAIN_ID, extra_args=["--slots-in-an-epoch", "1"])
        history = generate(node, args.transfers, args.blocks, args.wallets, args.logs_per_tx)
        server_dsn = database_url_from_env()
        if server_dsn is None:
            pg = start_postgres("16")
            server_dsn = pg.dsn
            print(f"PostgreSQL {pg.version} (throwaway, fsync=off); measuring...", flush=True)
        else:
            print("PostgreSQL from CITADEL_DATABASE_URL (bench databases created and dropped); measuring...",
                  flush=True)
        ok = asyncio.run(measure(node, server_dsn, history, args, CpuMeter(node.process.pid, postmaster_pid(pg))))
    finally:
        if pg is not None:
            pg.stop()
        if node is not None:
            node.stop()
    return 0 if ok or not args.strict else 1



if __name__ == "__main__":
    sys.exit(main())
