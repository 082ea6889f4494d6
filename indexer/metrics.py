"""Every Prometheus metric the indexer exports, declared in one place. Prefix ``citadel_``, units in the names.

Labels never carry secrets: RPC endpoints appear only in redacted form (``chains.redact.redact_url``).
"""

from __future__ import annotations

import logging

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
)

_log = logging.getLogger("citadel.skipped")

REGISTRY = CollectorRegistry(auto_describe=True)
# resident memory, CPU seconds, open fds (process_*), garbage collections (python_gc_*), the interpreter (python_info)
for _collector in (PROCESS_COLLECTOR, GC_COLLECTOR, PLATFORM_COLLECTOR):
    REGISTRY.register(_collector)

HEAD_BLOCK = Gauge("citadel_chain_head_block", "Latest block number the node reported", ["chain"], registry=REGISTRY)
FINALIZED_BLOCK = Gauge(
    "citadel_chain_finalized_block",
    "Latest final block (finalized tag, solidified block, or head - confirmations + 1)",
    ["chain"],
    registry=REGISTRY,
)
FINALIZED_STALLED = Gauge(
    "citadel_chain_finalized_stalled",
    "1 while the node's finality signal has not moved for longer than the stall threshold",
    ["chain"],
    registry=REGISTRY,
)
CURSOR_BLOCK = Gauge(
    "citadel_sync_cursor_block", "Last block whose data is committed, per stream", ["chain", "stream"], registry=REGISTRY
)
LAG_BLOCKS = Gauge("citadel_sync_lag_blocks", "Head minus the realtime cursor", ["chain"], registry=REGISTRY)
BACKFILL_REMAINING_BLOCKS = Gauge(
    "citadel_backfill_remaining_blocks",
    "Blocks left in a range backfill (citadel-indexer backfill jobs; one series per job an operator started)",
    ["chain", "stream"],
    registry=REGISTRY,
)
# wallet backfills are one per wallet (100k wallets = 100k streams): aggregated, never one series per wallet
WALLET_BACKFILLS_PENDING = Gauge(
    "citadel_wallet_backfills_pending", "Wallets whose history is still being backfilled", ["chain"],
    registry=REGISTRY,
)
WALLET_BACKFILL_REMAINING_BLOCKS = Gauge(
    "citadel_wallet_backfill_remaining_blocks", "Blocks left for the wallet backfill furthest from done", ["chain"],
    registry=REGISTRY,
)
TRANSFERS_INDEXED = Counter(
    "citadel_transfers_indexed_total", "Transfers written (rows per wallet side)", ["chain", "stream"], registry=REGISTRY
)
BLOCKS_PROCESSED = Counter(
    "citadel_blocks_processed_total", "Blocks whose data was committed", ["chain", "stream"], registry=REGISTRY
)
REORGS = Counter("citadel_reorgs_total", "Chain reorganisations rolled back", ["chain"], registry=REGISTRY)
REORG_DEPTH = Histogram(
    "citadel_reorg_depth_blocks",
    "Depth of rolled-back reorgs",
    ["chain"],
    buckets=(1, 2, 3, 5, 10, 20, 50, 100, 200, 500),
    registry=REGISTRY,
)
REORG_TOO_DEEP = Counter(
    "citadel_reorg_too_deep_total",
    "Reorgs reaching below the finality bound; the chain's watcher stopped",
    ["chain"],
    registry=REGISTRY,
)
CHAIN_DEGRADED = Gauge(
    "citadel_chain_degraded",
    "1 while every attempt of the chain's realtime loop has failed for longer than the degraded threshold",
    ["chain"],
    registry=REGISTRY,
)
CHAIN_STOPPED = Gauge(
    "citadel_chain_stopped",
    "1 when this replica stopped following the chain on a fatal error (wrong chain id, reorg past finality, a bug); "
    "it stays stopped until restarted",
    ["chain"],
    registry=REGISTRY,
)
CHAIN_WRITER = Gauge(
    "citadel_chain_writer", "1 while this replica holds the chain's writer lease", ["chain"], registry=REGISTRY
)
WRITER_EPOCH = Gauge(
    "citadel_writer_epoch", "Epoch of the chain's writer lease this replica holds (0: none)", ["chain"],
    registry=REGISTRY,
)
WRITER_LEASE_LOST = Counter(
    "citadel_writer_lease_lost_total",
    "Times this replica stopped writing a chain: its lease session was lost or a write was fenced",
    ["chain", "reason"],
    registry=REGISTRY,
)
PLATFORM_TX_DROPPED = Counter(
    "citadel_platform_transactions_dropped_total",
    "Platform transactions given up ('dropped') after never being seen mined within the configured age",
    ["chain"],
    registry=REGISTRY,
)
ESCROW_EVENTS = Counter(
    "citadel_escrow_events_total",
    "Escrow contract events by outcome: applied (changed its agreement), rejected (unknown agreement, wrong party, "
    "token, amount or state: recorded in audit_trail), orphaned (undone by a reorg)",
    ["chain", "outcome"],
    registry=REGISTRY,
)
GUARDIAN_ALERTS = Counter(
    "citadel_guardian_alerts_total", "Guardian alerts raised on indexed transfers, by rule", ["chain", "rule"],
    registry=REGISTRY,
)
GUARDIAN_ALERTS_EXPIRED = Counter(
    "citadel_guardian_alerts_expired_total", "Pending Guardian alerts expired because a reorg orphaned their transfer",
    ["chain"], registry=REGISTRY,
)
CATCHUP_REMAINING_BLOCKS = Gauge(
    "citadel_catchup_remaining_blocks", "Final blocks the realtime stream still has to catch up", ["chain"],
    registry=REGISTRY,
)
WATCHER_UP = Gauge("citadel_watcher_up", "1 while the chain's watcher runs", ["chain"], registry=REGISTRY)
WATCHER_ERRORS = Counter(
    "citadel_watcher_errors_total", "Iterations that failed and were retried", ["chain", "kind"], registry=REGISTRY
)
RPC_REQUESTS = Counter(
    "citadel_rpc_requests_total",
    "RPC requests by redacted endpoint, method and outcome",
    ["chain", "endpoint", "method", "outcome"],
    registry=REGISTRY,
)
RPC_DURATION = Histogram(
    "citadel_rpc_request_duration_seconds", "RPC request latency", ["chain", "method"], registry=REGISTRY
)
SKIPPED_ITEMS = Counter(
    "citadel_skipped_items_total",
    "Logs or transactions left out as malformed or non-standard",
    ["chain", "reason"],
    registry=REGISTRY,
)
WALLETS_WATCHED = Gauge("citadel_wallets_watched", "Active wallets followed", ["chain"], registry=REGISTRY)
WALLETS_INVALID = Gauge(
    "citadel_wallets_invalid", "Wallets skipped because their address is invalid", ["chain"], registry=REGISTRY
)
COMMIT_DURATION = Histogram(
    "citadel_batch_commit_duration_seconds", "Time to commit one batch of data", ["chain"], registry=REGISTRY
)
BALANCE_REFRESHES = Counter(
    "citadel_balance_refreshes_total", "Wallet balance refreshes written", ["chain"], registry=REGISTRY
)
RPC_ENDPOINT_UP = Gauge(
    "citadel_rpc_endpoint_up",
    "0 while an RPC endpoint is cooling down after a fault (HTTP error, banned key, bad body), 1 once it answers "
    "again; endpoints that never failed have no series. endpoint = the redacted label",
    ["chain", "endpoint"],
    registry=REGISTRY,
)


class MetricsObserver:
    """The adapters' :class:`chains.base.RpcObserver`, feeding the metrics above."""

    def rpc_request(self, chain: str, endpoint: str, method: str, duration_s: float, outcome: str) -> None:
        RPC_REQUESTS.labels(chain, endpoint, method, outcome).inc()
        RPC_DURATION.labels(chain, method).observe(duration_s)

    def skipped_item(self, chain: str, reason: str, where: str = "") -> None:
        SKIPPED_ITEMS.labels(chain, reason).inc()
        _log.warning("item skipped", extra={"fields": {"chain": chain, "reason": reason, "where": where}})

    def endpoint_up(self, chain: str, endpoint: str, up: bool) -> None:
        RPC_ENDPOINT_UP.labels(chain, endpoint).set(1 if up else 0)
