"""What the per-chain loops (watcher, wallet backfill, balance refresh) retry, and how.

Transient: an RPC failure the adapter gave up on (``RetryableChainError``), a batch the node contradicted while it
was read (``InconsistentBlocks``), and a lost or refused database connection (a restarting or scaled-to-zero
server, an administrator's termination, a network cut). Each is logged, counted in
``citadel_watcher_errors_total{chain,kind}`` and retried after a jittered, doubling delay; the loop's own state is
consistent because every batch is one transaction. Anything else (``FatalChainError``, a bug) ends the loop.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable

import asyncpg

from chains.base import RetryableChainError
from indexer import metrics
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
)


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
        pause_s = self.delay_s * (0.5 + random.random())  # jittered, so replicas do not retry in step
        log.warning(
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
