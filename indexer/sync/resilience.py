"""What the per-chain loops (watcher, wallet backfill, balance refresh) retry, and how.

Transient: an RPC failure the adapter gave up on (``RetryableChainError``: every endpoint fault is one), a batch
the node contradicted while it was read (``InconsistentBlocks``), a lost or refused database connection (a
restarting or scaled-to-zero server, an administrator's termination, a network cut), a deadlock or lock timeout,
and a wallet changed under a batch (``WalletsChanged``: the wallets are reloaded before the retry). Each is logged,
counted in ``citadel_watcher_errors_total{chain,kind}`` and retried after a jittered, doubling delay; the loop's own
state is consistent because every batch is one transaction.

Rejected by the database (a value a constraint refuses): not transient, but a chain must not stop on one bad row
either: logged as an error and retried the same way, so the chain shows degraded and keeps its place.

Anything else ends the loop: ``FatalChainError`` (wrong chain, reorg past finality), ``WriterFenced`` (this replica
is no longer the writer: its chain task stands by again), a bug.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable

import asyncpg

from chains.base import RetryableChainError
from indexer import metrics
from indexer.model import WalletsChanged
from indexer.sync.window import InconsistentBlocks

log = logging.getLogger("citadel.sync")

TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    RetryableChainError,
    InconsistentBlocks,
    asyncpg.PostgresConnectionError,  # includes ConnectionDoesNotExistError
    asyncpg.CannotConnectNowError,  # the server is starting up
    asyncpg.exceptions.OperatorInterventionError,  # terminated by an administrator, server shutting down
    asyncpg.InterfaceError,  # "connection is closed"
    asyncpg.exceptions.InternalClientError,  # a connection cut in the middle of a query can leave it mid-protocol
    OSError,
    TimeoutError,
    asyncpg.exceptions.TransactionRollbackError,  # deadlock detected, serialization failure
    asyncpg.exceptions.LockNotAvailableError,
    asyncpg.exceptions.QueryCanceledError,  # statement timeout
    WalletsChanged,
)

REJECTED_BY_DATABASE: tuple[type[BaseException], ...] = (
    asyncpg.exceptions.DataError,
    asyncpg.exceptions.IntegrityConstraintViolationError,
)
TRANSIENT_ERRORS += REJECTED_BY_DATABASE


class Backoff:
    def __init__(self, chain: str, what: str, max_s: float = 30.0) -> None:
        self.chain = chain
        self.what = what
        self.max_s = max_s
        self.delay_s = 1.0

    def reset(self) -> None:
        self.delay_s = 1.0

    async def after(self, exc: BaseException) -> None:
        kind = type(exc).__name__
        metrics.WATCHER_ERRORS.labels(self.chain, kind).inc()
        if isinstance(exc, WalletsChanged):
            log.info(f"{self.what}: wallets changed under the batch; reloading and retrying",
                     extra={"fields": {"chain": self.chain}})
            # nothing is wrong: the batch is rebuilt for the wallets as they are now, once the realtime loop (woken
            # by the writer) has reloaded them
            await asyncio.sleep(0.2)
            return
        pause_s = self.delay_s * (0.5 + random.random())  # jittered, so replicas do not retry in step
        log.log(
            logging.ERROR if isinstance(exc, REJECTED_BY_DATABASE) else logging.WARNING,
            f"{self.what} failed, retrying",
            extra={"fields": {"chain": self.chain, "error": f"{kind}: {exc}", "retry_in_s": round(pause_s, 2)}},
        )
        await asyncio.sleep(pause_s)
        self.delay_s = min(self.delay_s * 2, self.max_s)


async def run_forever(chain: str, what: str, once: Callable[[], Awaitable[float]], max_backoff_s: float = 30.0) -> None:
    """Call ``once`` again and again; it returns how long to pause before the next call. Transient errors back
    off and retry; others propagate."""
    backoff = Backoff(chain, what, max_backoff_s)
    while True:
        try:
            pause_s = await once()
            backoff.reset()
        except TRANSIENT_ERRORS as exc:
            await backoff.after(exc)
            continue
        if pause_s > 0:
            await asyncio.sleep(pause_s)
