"""``citadel-indexer status [--json]``: what each chain's indexing looks like, with or without a running daemon.

Everything comes from the database (the daemon's own records) and, for the head and final blocks, from the chain's
configured node, asked with a short timeout (``null`` when it does not answer). JSON keys (stable)::

    {"generated_at": ISO time,
     "chains": {"<chain>": {
        "enabled": bool,
        "writer": {"replica": str, "epoch": int, "since": ISO time, "alive": bool} | null,
        "state": "writing" | "no writer",
        "head": int | null, "final": int | null, "cursor": int | null, "start_block": int | null,
        "lag_blocks": int | null, "lag_seconds": float | null,
        "wallets_watched": int,
        "rows": {"pending": int, "confirmed": int, "failed": int, "dropped": int},
        "backfills": [{"stream": str, "kind": "range" | "wallet", "done_to": int, "target": int,
                       "blocks_remaining": int, "blocks_per_s": float | null, "eta_s": float | null,
                       "finished": bool}],
        "last_balance_refresh": ISO time | null,
        "node_error": str | null}}}

A chain is "no writer" when no replica holds its writer lease (nobody indexes it: the daemon is down, standing by
everywhere, or stopped on a fatal error): ``status`` then exits with code 1.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from chains.base import Chain, ChainError
from indexer.config import Settings
from indexer.store import db
from indexer.store.lease import WRITER_LOCK_KEYS

NODE_TIMEOUT_S = 5.0
WALLET_STREAMS_SHOWN = 20  # wallet backfills are listed up to this many (the rest are counted)


async def chain_status(conn: Any, settings: Settings, chain: Chain) -> dict[str, Any]:
    name = chain.value
    key = WRITER_LOCK_KEYS[name]
    writer = await conn.fetchrow(
        """SELECT l.holder, l.epoch, l.acquired_at, EXISTS (
                   SELECT 1 FROM pg_locks k WHERE k.locktype = 'advisory' AND k.granted AND k.pid = l.backend_pid
                     AND k.classid = $2 AND k.objid = $3 AND k.objsubid = 1) AS alive
           FROM writer_leases l WHERE l.chain = $1""",
        name, (key >> 32) & 0xFFFFFFFF, key & 0xFFFFFFFF)
    streams = await conn.fetch(
        """SELECT stream, block_number, target_block, first_block, created_at, updated_at, block_hash
           FROM sync_cursors WHERE chain = $1""", name)
    by_stream = {r["stream"]: r for r in streams}
    cursor = by_stream["realtime"]["block_number"] if "realtime" in by_stream else None
    start = by_stream["start"]["block_number"] if "start" in by_stream else None
    counts = {r["status"]: r["n"] for r in await conn.fetch(
        "SELECT status, count(*) AS n FROM transactions WHERE chain = $1 GROUP BY status", name)}
    wallets = await conn.fetchrow(
        "SELECT count(*) FILTER (WHERE is_active) AS watched, max(last_balance_sync) AS refreshed "
        "FROM wallets WHERE chain = $1", name)
    head, final, node_error, cursor_time = await _node(settings, chain, cursor)
    now = datetime.now(UTC)
    lag_blocks = max(head - cursor, 0) if head is not None and cursor is not None else None
    lag_seconds = round((now - cursor_time).total_seconds(), 1) if cursor_time is not None else None
    alive = writer is not None and writer["alive"]
    return {
        "enabled": settings.chain(chain).enabled,
        "writer": None if writer is None else {
            "replica": writer["holder"], "epoch": writer["epoch"], "since": writer["acquired_at"].isoformat(),
            "alive": writer["alive"]},
        "state": "writing" if alive else "no writer",
        "head": head, "final": final, "cursor": cursor, "start_block": start,
        "lag_blocks": lag_blocks, "lag_seconds": lag_seconds,
        "wallets_watched": wallets["watched"],
        "rows": {s: int(counts.get(s, 0)) for s in ("pending", "confirmed", "failed", "dropped")},
        "backfills": _backfills(streams, now),
        "last_balance_refresh": wallets["refreshed"].isoformat() if wallets["refreshed"] else None,
        "node_error": node_error,
    }


def _backfills(streams: Sequence[Any], now: datetime) -> list[dict[str, Any]]:
    out = []
    for r in streams:
        kind = "range" if r["stream"].startswith("backfill:") else "wallet" if r["stream"].startswith("wallet:") \
            else None
        if kind is None or r["target_block"] is None:
            continue
        done, target, first = r["block_number"], r["target_block"], r["first_block"]
        remaining = max(target - done, 0)
        rate = None
        if first is not None and done > first and r["updated_at"] > r["created_at"]:
            rate = (done - first) / (r["updated_at"] - r["created_at"]).total_seconds()
        out.append({"stream": r["stream"], "kind": kind, "done_to": done, "target": target,
                    "blocks_remaining": remaining, "blocks_per_s": round(rate, 1) if rate else None,
                    "eta_s": round(remaining / rate, 1) if rate and remaining else (0 if not remaining else None),
                    "finished": remaining == 0})
    ranges = [b for b in out if b["kind"] == "range"]
    wallets = sorted((b for b in out if b["kind"] == "wallet"), key=lambda b: (b["finished"], -b["blocks_remaining"]))
    return ranges + wallets[:WALLET_STREAMS_SHOWN]


async def _node(settings: Settings, chain: Chain, cursor: int | None) -> tuple[int | None, int | None, str | None,
                                                                               datetime | None]:
    cfg = settings.chain(chain)
    if not cfg.rpc_urls:
        return None, None, "no RPC URL configured", None
    from indexer.app import build_adapter

    adapter = build_adapter(chain, cfg)
    try:
        async with asyncio.timeout(NODE_TIMEOUT_S):
            head = await adapter.head()
            final = await adapter.finalized_number()
            at = await adapter.block_ref(cursor) if cursor is not None and cursor >= 0 else None
    except (ChainError, TimeoutError, OSError) as exc:
        return None, None, f"{type(exc).__name__}: {exc}"[:300], None
    finally:
        await adapter.aclose()
    if final is None:
        final = head.number - cfg.confirmations + 1
    return head.number, final, None, datetime.fromtimestamp(at.timestamp, UTC) if at is not None else None


async def collect(settings: Settings, dsn: str, chains: Sequence[Chain]) -> dict[str, Any]:
    conn = await db.connect(dsn)
    try:
        result = {name.value: await chain_status(conn, settings, name) for name in chains}
    finally:
        await conn.close()
    return {"generated_at": datetime.now(UTC).isoformat(), "chains": result}


def table(report: dict[str, Any]) -> str:
    """The report for a terminal: one line per chain, then its backfills."""
    lines = [f"{'chain':<8} {'state':<10} {'writer':<22} {'head':>10} {'final':>10} {'cursor':>10} {'lag':>7} "
             f"{'lag s':>7} {'wallets':>7} {'pending':>8} {'confirmed':>10} {'failed':>7}  last balances"]
    for name, c in report["chains"].items():
        writer = c["writer"]["replica"] if c["writer"] and c["writer"]["alive"] else "-"
        rows = c["rows"]
        lines.append(
            f"{name:<8} {c['state']:<10} {writer[:22]:<22} {_n(c['head']):>10} {_n(c['final']):>10} "
            f"{_n(c['cursor']):>10} {_n(c['lag_blocks']):>7} {_n(c['lag_seconds']):>7} {c['wallets_watched']:>7} "
            f"{rows['pending']:>8} {rows['confirmed']:>10} {rows['failed']:>7}  {c['last_balance_refresh'] or '-'}")
        if c["node_error"]:
            lines.append(f"         node: {c['node_error']}")
        for b in c["backfills"]:
            eta = "done" if b["finished"] else (f"ETA {b['eta_s']:.0f} s" if b["eta_s"] is not None else "ETA ?")
            lines.append(f"         {b['stream'][:40]:<40} {b['done_to']}/{b['target']} "
                         f"({b['blocks_remaining']} left) {eta}")
    return "\n".join(lines)


def _n(value: Any) -> str:
    return "-" if value is None else str(value)


def exit_code(report: dict[str, Any]) -> int:
    """1 when an enabled chain has no writer (nobody indexes it), else 0."""
    return 1 if any(c["enabled"] and c["state"] != "writing" for c in report["chains"].values()) else 0


def render(report: dict[str, Any], as_json: bool) -> str:
    return json.dumps(report, indent=2, sort_keys=True) if as_json else table(report)

