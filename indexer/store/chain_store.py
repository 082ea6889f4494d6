"""The sync core's only door to the database: one chain's rows, cursors, reorg window, tokens and cached balances.

Everything a batch changes (transfer rows, rollback of orphaned blocks, settled platform transactions, the reorg
window, the stream cursor, confirmation counts) commits in ONE transaction (:meth:`ChainStore.commit`), so a crash at
any point leaves either all of a batch or none of it: restarting resumes from the cursor without gaps or duplicates,
and replaying a range rewrites identical rows (every write is an idempotent upsert on the natural key
``(chain, tx_hash, log_index, wallet_id)``).

Every write transaction is fenced (:mod:`indexer.store.lease`): its first statement checks, inside the
transaction, that this replica still holds the chain's writer lease, and raises ``WriterFenced`` otherwise. A store
without a fence reads only.

A batch built for wallets that changed before it committed (a wallet re-owned or deleted while its rows were read:
the composite foreign key ``(wallet_id, user_id)`` refuses them) raises ``WalletsChanged``: nothing is written and
the caller reloads its wallets and builds the batch again.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import asyncpg

from chains.base import BlockRef
from indexer.model import (
    ROW_COLUMNS,
    Batch,
    CommitResult,
    StreamState,
    TransferRow,
    WalletRecord,
    WalletsChanged,
    WriterFenced,
    row_block_number,
    row_key,
)
from indexer.store.escrow_store import EscrowOutcome, record_escrow, rollback_escrow
from indexer.store.guardian_store import GuardianPolicy, expire_alerts, raise_alerts
from indexer.store.lease import FENCE_SQL, Fence

STAGING_DDL = """
CREATE TEMP TABLE IF NOT EXISTS staging_transfers (
    chain text, source text, user_id bigint, wallet_id bigint, tx_hash text, log_index integer,
    from_address text, to_address text, amount numeric, amount_raw numeric, token text, token_address text,
    token_decimals smallint, value_usd numeric, status text, confirmations bigint, tx_index integer, tx_type text,
    gas_used numeric, gas_price numeric, block_number bigint, block_hash text, block_timestamp timestamptz
) ON COMMIT DELETE ROWS
"""

_COLS = ", ".join(ROW_COLUMNS)
_S_COLS = ", ".join(f"s.{c}" for c in ROW_COLUMNS)
_CHAIN_FACTS = (
    "log_index",
    "from_address",
    "to_address",
    "amount",
    "amount_raw",
    "token_address",
    "token_decimals",
    "tx_index",
    "block_number",
    "block_hash",
    "block_timestamp",
)

# Rows another service inserted (source 'platform', log_index NULL until matched) take the chain's facts of the
# first matching transfer of their (tx_hash, wallet); the rest is inserted as indexer rows.
# A replayed transfer rewrites the chain's facts; the platform's own description of its rows (type, symbol) stays.
_ON_CONFLICT = f"""ON CONFLICT (chain, tx_hash, log_index, wallet_id) DO UPDATE SET
    {", ".join(f"{c} = EXCLUDED.{c}" for c in _CHAIN_FACTS if c != "log_index")},
    status = EXCLUDED.status,
    confirmations = EXCLUDED.confirmations,
    tx_type = CASE WHEN transactions.source = 'indexer' THEN EXCLUDED.tx_type ELSE transactions.tx_type END,
    token = CASE WHEN transactions.source = 'indexer' THEN EXCLUDED.token ELSE transactions.token END,
    value_usd = CASE WHEN transactions.source = 'indexer' THEN EXCLUDED.value_usd
                     ELSE COALESCE(transactions.value_usd, EXCLUDED.value_usd) END
"""

# (only the column-name constants above are formatted into the text; values are parameters)
UPSERT_SQL = f"""
WITH s AS (
    SELECT DISTINCT ON (tx_hash, log_index, wallet_id) * FROM staging_transfers
    ORDER BY tx_hash, log_index, wallet_id
), claim AS (
    SELECT DISTINCT ON (p.tx_hash, p.wallet_id) p.id, s.tx_hash, s.log_index, s.wallet_id
    FROM transactions p JOIN s ON p.tx_hash = s.tx_hash AND p.wallet_id = s.wallet_id
    WHERE p.chain = $1 AND p.source = 'platform' AND p.log_index IS NULL
    ORDER BY p.tx_hash, p.wallet_id, p.id, s.log_index
), claimed AS (
    UPDATE transactions t SET {", ".join(f"{c} = s.{c}" for c in _CHAIN_FACTS)},
        status = CASE WHEN s.status = 'failed' THEN 'failed' ELSE s.status END,
        confirmations = s.confirmations,
        value_usd = COALESCE(t.value_usd, s.value_usd)
    FROM claim c JOIN s ON s.tx_hash = c.tx_hash AND s.log_index = c.log_index AND s.wallet_id = c.wallet_id
    WHERE t.id = c.id
    RETURNING t.tx_hash, t.log_index, t.wallet_id
)
INSERT INTO transactions ({_COLS})
SELECT {_S_COLS} FROM s
WHERE NOT EXISTS (
    SELECT 1 FROM claimed c WHERE c.tx_hash = s.tx_hash AND c.log_index = s.log_index AND c.wallet_id = s.wallet_id
)
{_ON_CONFLICT}"""  # noqa: S608

MERGE_LATE_PLATFORM_SQL = """
WITH pairs AS (
    SELECT DISTINCT ON (p.id) p.id AS pid, i.id AS iid
    FROM transactions p JOIN transactions i
      ON i.chain = p.chain AND i.tx_hash = p.tx_hash AND i.wallet_id = p.wallet_id AND i.source = 'indexer'
    WHERE p.chain = $1 AND p.source = 'platform' AND p.log_index IS NULL
    ORDER BY p.id, i.log_index
), gone AS (
    DELETE FROM transactions i USING pairs WHERE i.id = pairs.iid
    RETURNING pairs.pid, i.log_index, i.from_address, i.to_address, i.amount, i.amount_raw, i.token_address,
              i.token_decimals, i.tx_index, i.block_number, i.block_hash, i.block_timestamp, i.status, i.confirmations
)
UPDATE transactions p SET log_index = g.log_index, from_address = g.from_address, to_address = g.to_address,
    amount = g.amount, amount_raw = g.amount_raw, token_address = g.token_address, token_decimals = g.token_decimals,
    tx_index = g.tx_index, block_number = g.block_number, block_hash = g.block_hash,
    block_timestamp = g.block_timestamp, status = g.status, confirmations = g.confirmations
FROM gone g WHERE p.id = g.pid
"""

# The common case: no platform row waits for a match, and rows were de-duplicated in Python.
INSERT_SQL = f"""
INSERT INTO transactions ({_COLS})
SELECT {_COLS} FROM staging_transfers
{_ON_CONFLICT}"""  # noqa: S608

ROWS_IN_RANGE_SQL = (
    "SELECT EXISTS (SELECT 1 FROM transactions WHERE chain = $1 AND block_number BETWEEN $2 AND $3)"
)

UNMATCHED_PLATFORM_SQL = (
    "SELECT EXISTS (SELECT 1 FROM transactions WHERE chain = $1 AND source = 'platform' AND log_index IS NULL)"
)

# a platform transaction never seen mined within the configured age is given up ('dropped'); if it is mined after
# all, the indexer's upsert still matches it (a dropped row keeps source 'platform' and log_index NULL)
DROP_PLATFORM_SQL = """
UPDATE transactions SET status = 'dropped'
WHERE chain = $1 AND source = 'platform' AND status = 'pending' AND block_number IS NULL
  AND created_at < now() - make_interval(secs => $2)
"""

ROLLBACK_SQL = (
    "DELETE FROM transactions WHERE chain = $1 AND source = 'indexer' AND block_number > $2",
    """UPDATE transactions SET block_number = NULL, block_hash = NULL, block_timestamp = NULL, tx_index = NULL,
           log_index = NULL, confirmations = 0, status = 'pending', gas_used = NULL, gas_price = NULL
       WHERE chain = $1 AND source = 'platform' AND block_number > $2""",
    "DELETE FROM chain_blocks WHERE chain = $1 AND number > $2",
)


async def prepare_connection(conn: Any) -> None:
    """Pool ``init``: the per-connection staging table used by :meth:`ChainStore.commit`."""
    await conn.execute(STAGING_DDL)


class ChainStore:
    def __init__(
        self, pool: asyncpg.Pool, chain: str, fence: Fence | None = None, guardian: GuardianPolicy | None = None
    ) -> None:
        self.pool = pool
        self.chain = chain
        self.fence = fence
        self.guardian = guardian

    # ------------------------------------------------------------------------------------------------ reads

    async def wallet_set_version(self) -> int:
        """Bumped by the database whenever a wallet's address or chain changes (migration 016)."""
        return int(await self.pool.fetchval("SELECT version FROM wallet_set_version"))

    async def active_wallets(self) -> list[WalletRecord]:
        rows = await self.pool.fetch(
            "SELECT id, user_id, public_address, updated_at FROM wallets WHERE chain = $1 AND is_active ORDER BY id",
            self.chain,
        )
        return [WalletRecord(r["id"], r["user_id"], r["public_address"], r["updated_at"]) for r in rows]

    async def window(self) -> list[BlockRef]:
        rows = await self.pool.fetch(
            "SELECT number, hash, parent_hash, block_timestamp FROM chain_blocks WHERE chain = $1 ORDER BY number",
            self.chain,
        )
        return [
            BlockRef(r["number"], r["hash"], r["parent_hash"], int(r["block_timestamp"].timestamp())) for r in rows
        ]

    async def cursor(self, stream: str) -> int | None:
        value = await self.pool.fetchval(
            "SELECT block_number FROM sync_cursors WHERE chain = $1 AND stream = $2", self.chain, stream
        )
        return int(value) if value is not None else None

    async def streams(self, prefix: str) -> list[StreamState]:
        rows = await self.pool.fetch(
            "SELECT stream, block_number, target_block FROM sync_cursors WHERE chain = $1 AND stream LIKE $2",
            self.chain,
            prefix.replace("%", r"\%").replace("_", r"\_") + "%",
        )
        return [StreamState(r["stream"], r["block_number"], r["target_block"]) for r in rows]

    async def unsettled_platform(self, limit: int = 5000) -> list[tuple[str, datetime]]:
        """Transactions another service inserted that still wait for their block or their gas figures, with when
        they were recorded (the oldest first)."""
        rows = await self.pool.fetch(
            """SELECT tx_hash, min(created_at) AS recorded FROM transactions
               WHERE chain = $1 AND source = 'platform' AND status = 'pending'
                 AND (block_number IS NULL OR gas_used IS NULL)
               GROUP BY tx_hash ORDER BY recorded LIMIT $2""",
            self.chain,
            limit,
        )
        return [(r["tx_hash"], r["recorded"]) for r in rows]

    async def request_backfill(self, stream: str, done: int, target: int) -> None:
        """Record a backfill job for the chain's writer to run (``citadel-indexer backfill`` while a daemon holds
        the lease). The one write that is not fenced: it is a request, not chain data, and it never moves an
        existing record (a job already recorded keeps its progress)."""
        await self.pool.execute(
            """INSERT INTO sync_cursors (chain, stream, block_number, target_block, first_block, updated_at)
               VALUES ($1, $2, $3, $4, $3, now()) ON CONFLICT (chain, stream) DO NOTHING""",
            self.chain, stream, done, target,
        )

    async def request_wallet_backfills(self, streams: Sequence[str], done: int, target: int) -> dict[str, str]:
        """Set finished wallet history streams to re-index ``done+1..target`` (``backfill --wallet``), like
        :meth:`request_backfill` a request for the chain's writer; the streams it refuses, with why (nothing is
        changed then)."""
        async with self.pool.acquire() as conn, conn.transaction():
            rows = {r["stream"]: r for r in await conn.fetch(
                "SELECT stream, block_number, target_block FROM sync_cursors WHERE chain = $1 "
                "AND stream = ANY($2::text[]) FOR UPDATE", self.chain, list(streams))}
            refused = {}
            for stream in streams:
                row = rows.get(stream)
                if row is None:
                    refused[stream] = "not followed yet: its whole history is backfilled when the daemon picks it up"
                elif row["target_block"] is not None and row["block_number"] < row["target_block"]:
                    refused[stream] = (f"its history backfill is still running ({row['block_number']} of "
                                       f"{row['target_block']})")
            if not refused:
                await conn.execute(
                    """UPDATE sync_cursors SET block_number = $3, target_block = $4, first_block = $3,
                           created_at = now(), updated_at = now()
                       WHERE chain = $1 AND stream = ANY($2::text[])""",
                    self.chain, list(streams), done, target)
            return refused

    # ------------------------------------------------------------------------------------------------ writes

    @asynccontextmanager
    async def _writing(self) -> AsyncIterator[Any]:
        """One fenced write transaction (see the module docstring)."""
        if self.fence is None:
            raise WriterFenced(f"{self.chain}: this store holds no writer lease; it can only read")
        async with self.pool.acquire() as conn:
            try:
                async with conn.transaction():
                    if not await conn.fetchval(FENCE_SQL, *self.fence.params()):
                        raise WriterFenced(
                            f"{self.chain}: writer epoch {self.fence.epoch} is no longer the chain's writer"
                        )
                    yield conn
            except asyncpg.ForeignKeyViolationError as exc:
                raise WalletsChanged(
                    f"{self.chain}: a wallet of this batch changed owner or was deleted before it committed "
                    f"({exc.constraint_name})"
                ) from None

    async def upsert_tokens(self, tokens: Sequence[tuple[str, str, int]]) -> None:
        """(contract address, symbol, decimals) as read on-chain; an empty symbol never replaces a known one."""
        async with self._writing() as conn:
            await conn.executemany(
                """INSERT INTO tokens (chain, contract_address, symbol, decimals) VALUES ($1, $2, $3, $4)
                   ON CONFLICT (chain, contract_address) DO UPDATE SET
                       symbol = COALESCE(NULLIF(EXCLUDED.symbol, ''), tokens.symbol),
                       decimals = EXCLUDED.decimals""",
                [(self.chain, a, s[:32], d) for a, s, d in tokens],  # tokens.symbol is VARCHAR(32)
            )

    async def write_balances(self, updates: Sequence[tuple[int, dict[str, Decimal]]]) -> None:
        """Cached balances per wallet id; a column absent from a wallet's values is left as it is."""
        if not updates:
            return
        columns = ("balance_native", "balance_usdt", "balance_usdc", "balance_tst", "balance_usd")
        async with self._writing() as conn:
            await conn.executemany(
                """UPDATE wallets SET balance_native = COALESCE($2, balance_native),
                       balance_usdt = COALESCE($3, balance_usdt), balance_usdc = COALESCE($4, balance_usdc),
                       balance_tst = COALESCE($5, balance_tst), balance_usd = COALESCE($6, balance_usd),
                       last_balance_sync = now()
                   WHERE id = $1 AND chain = $7""",
                [(wallet_id, *(values.get(c) for c in columns), self.chain) for wallet_id, values in updates],
            )

    async def commit(self, batch: Batch) -> CommitResult:
        rolled_back = 0
        written = 0
        dropped = 0
        orphaned = EscrowOutcome()
        escrow = EscrowOutcome()
        expired = 0
        raised: dict[str, int] = {}
        async with self._writing() as conn:
            if batch.rollback_to is not None:
                status = await conn.execute(ROLLBACK_SQL[0], self.chain, batch.rollback_to)
                rolled_back = int(status.split()[-1])
                for sql in ROLLBACK_SQL[1:]:
                    await conn.execute(sql, self.chain, batch.rollback_to)
                orphaned = await rollback_escrow(conn, self.chain, batch.rollback_to)
                expired = await expire_alerts(conn, self.chain, batch.rollback_to)
            if batch.rows and batch.wallet_version is not None:
                current = await conn.fetchval("SELECT version FROM wallet_set_version FOR SHARE")
                if current != batch.wallet_version:
                    raise WalletsChanged(f"{self.chain}: a wallet's address changed since this batch was built")
            platform_waiting = await conn.fetchval(UNMATCHED_PLATFORM_SQL, self.chain)
            if batch.rows:
                written = await self._write_rows(conn, batch.rows, platform_waiting)
            if platform_waiting:
                await self._merge_late_platform_rows(conn)
            if batch.escrow:
                escrow = await record_escrow(conn, self.chain, batch.escrow, batch.head, batch.final)
            if batch.rows and self.guardian is not None:
                raised = await raise_alerts(conn, self.chain, batch.rows, self.guardian)
            if batch.settle:
                await self._settle(conn, batch)
            if batch.drop_platform_older_than_s is not None:
                status = await conn.execute(DROP_PLATFORM_SQL, self.chain, batch.drop_platform_older_than_s)
                dropped = int(status.split()[-1])
            await self._write_window(conn, batch)
            if batch.cursor is not None:
                await conn.execute(
                    """INSERT INTO sync_cursors (chain, stream, block_number, block_hash, updated_at)
                       VALUES ($1, $2, $3, $4, now())
                       ON CONFLICT (chain, stream) DO UPDATE SET block_number = EXCLUDED.block_number,
                           block_hash = EXCLUDED.block_hash, updated_at = now()""",
                    self.chain,
                    batch.stream,
                    batch.cursor,
                    batch.cursor_hash,
                )
            if batch.stream_states:
                await conn.executemany(
                    """INSERT INTO sync_cursors (chain, stream, block_number, target_block, first_block, updated_at)
                       VALUES ($1, $2, $3, $4, $3, now())
                       ON CONFLICT (chain, stream) DO UPDATE SET block_number = EXCLUDED.block_number,
                           target_block = EXCLUDED.target_block, updated_at = now()""",
                    [(self.chain, s.stream, s.block_number, s.target_block) for s in batch.stream_states],
                )
            if batch.drop_streams:
                await conn.execute(
                    "DELETE FROM sync_cursors WHERE chain = $1 AND stream = ANY($2::text[])",
                    self.chain,
                    list(batch.drop_streams),
                )
            if batch.head is not None and batch.final is not None:
                await self._refresh_confirmations(conn, batch.head, batch.final)
        return CommitResult(rows_written=written, rows_rolled_back=rolled_back, platform_dropped=dropped,
                            escrow_applied=escrow.applied, escrow_rejected=escrow.rejected,
                            escrow_orphaned=orphaned.orphaned, alerts_raised=raised, alerts_expired=expired)

    async def _write_rows(self, conn: Any, rows: Sequence[TransferRow], platform_waiting: bool) -> int:
        """Fresh blocks (catch-up, the head): no row of this chain exists in their range yet, so the rows are
        COPYed straight into ``transactions``; a concurrent writer (a backfill) that got there first, or a row
        repeated within the batch, makes the COPY fail on the natural key, and the batch then goes through the
        staging table and the upsert instead (de-duplicated first: one statement cannot upsert a row twice)."""
        block_numbers = list(map(row_block_number, rows))
        first, last = min(block_numbers), max(block_numbers)
        if not platform_waiting and not await conn.fetchval(ROWS_IN_RANGE_SQL, self.chain, first, last):
            try:
                async with conn.transaction():  # a savepoint
                    status = await conn.copy_records_to_table("transactions", records=rows, columns=ROW_COLUMNS)
                return int(status.split()[-1])
            except asyncpg.UniqueViolationError:
                pass
        unique = list({row_key(r): r for r in rows}.values())
        await conn.copy_records_to_table("staging_transfers", records=unique, columns=ROW_COLUMNS)
        status = await (conn.execute(UPSERT_SQL, self.chain) if platform_waiting else conn.execute(INSERT_SQL))
        return int(status.split()[-1])

    async def _write_window(self, conn: Any, batch: Batch) -> None:
        if batch.window_reset is not None:
            await conn.execute("DELETE FROM chain_blocks WHERE chain = $1", self.chain)
        blocks = ([batch.window_reset] if batch.window_reset is not None else []) + list(batch.window_add)
        if blocks:
            await conn.executemany(
                """INSERT INTO chain_blocks (chain, number, hash, parent_hash, block_timestamp)
                   VALUES ($1, $2, $3, $4, $5)
                   ON CONFLICT (chain, number) DO UPDATE SET hash = EXCLUDED.hash,
                       parent_hash = EXCLUDED.parent_hash, block_timestamp = EXCLUDED.block_timestamp""",
                [
                    (self.chain, b.number, b.hash, b.parent_hash, datetime.fromtimestamp(b.timestamp, UTC))
                    for b in blocks
                ],
            )
        if batch.prune_below is not None:
            await conn.execute(
                "DELETE FROM chain_blocks WHERE chain = $1 AND number < $2", self.chain, batch.prune_below
            )

    async def _refresh_confirmations(self, conn: Any, head: int, final: int) -> None:
        await conn.execute(
            """UPDATE transactions SET confirmations = $2 - block_number + 1,
                   status = CASE WHEN block_number <= $3 THEN 'confirmed' ELSE 'pending' END
               WHERE chain = $1 AND status = 'pending' AND block_number IS NOT NULL
                 AND (confirmations IS DISTINCT FROM $2 - block_number + 1 OR block_number <= $3)""",
            self.chain,
            head,
            final,
        )

    async def _merge_late_platform_rows(self, conn: Any) -> None:
        """A platform row inserted after the indexer had already stored the same transfer as its own row: the
        platform row takes the chain's facts and the indexer's duplicate goes, so the wallet is not counted twice."""
        await conn.execute(MERGE_LATE_PLATFORM_SQL, self.chain)

    async def _settle(self, conn: Any, batch: Batch) -> None:
        """Platform transactions now mined: block, gas, and ``failed`` when the receipt says so."""
        head = batch.head if batch.head is not None else 0
        final = batch.final if batch.final is not None else -1
        await conn.executemany(
            """UPDATE transactions SET
                   block_number = COALESCE(block_number, $3), block_hash = COALESCE(block_hash, $4),
                   tx_index = COALESCE(tx_index, $5),
                   gas_used = $6, gas_price = $7,
                   confirmations = $8 - $3 + 1,
                   status = CASE WHEN NOT $9 THEN 'failed' WHEN $3 <= $10 THEN 'confirmed' ELSE 'pending' END
               WHERE chain = $1 AND tx_hash = $2 AND source = 'platform' AND status = 'pending'""",
            [
                (
                    self.chain,
                    r.tx_hash,
                    r.block_number,
                    r.block_hash,
                    r.tx_index,
                    Decimal(r.gas_used) if r.gas_used is not None else None,
                    Decimal(r.gas_price) if r.gas_price is not None else None,
                    head,
                    r.success,
                    final,
                )
                for r in batch.settle
            ],
        )
