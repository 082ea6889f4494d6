"""The store's write paths on a real PostgreSQL: COPY straight into transactions for fresh blocks, the staging
upsert otherwise, and the fall-back when a concurrent writer got to the same rows first."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import asyncpg
import pytest

from chains.base import Transfer
from indexer.model import Batch, TokenMeta, WalletRef, transfer_rows
from indexer.store import chain_store
from tests.fixtures.writer import WriterFactory
from tests.support.sync import actual_rows, add_wallet

TOKEN = "0x" + "1" * 40


async def rows_for(pool: asyncpg.Pool, n: int) -> list:  # type: ignore[type-arg]
    w = await add_wallet(pool, "bsc", "0x" + "a" * 40)
    wallets = {w.address: WalletRef(w.id, w.user_id, w.address)}
    tokens = {TOKEN: TokenMeta(TOKEN, "USDT", 6, Decimal(1))}
    transfers = [Transfer(f"0x{i:064x}", i, 10 + i, f"0x{10 + i:064x}", 0, "0x" + "b" * 40, w.address, i + 1,
                          TOKEN, 1_700_000_000) for i in range(n)]
    return transfer_rows(transfers, wallets, tokens, chain="bsc", head_number=100, final_number=100)


async def test_replaying_a_batch_rewrites_nothing(pool: asyncpg.Pool, writer_factory: WriterFactory) -> None:
    store = (await writer_factory("bsc")).store
    rows = await rows_for(pool, 50)
    first = await store.commit(Batch(stream="realtime", rows=rows, cursor=59))
    before = await actual_rows(pool, "bsc")
    again = await store.commit(Batch(stream="realtime", rows=rows, cursor=59))
    assert first.rows_written == again.rows_written == 50
    assert await actual_rows(pool, "bsc") == before and len(before) == 50


async def test_a_concurrent_writer_makes_the_fast_path_fall_back_to_the_upsert(
    pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch, writer_factory: WriterFactory
) -> None:
    store = (await writer_factory("bsc")).store
    rows = await rows_for(pool, 20)
    await store.commit(Batch(stream="wallet:1", rows=rows[:5]))  # another stream wrote some of them
    monkeypatch.setattr(chain_store, "ROWS_IN_RANGE_SQL", "SELECT false AND $1::text IS NULL AND $2::bigint < $3::bigint")
    result = await store.commit(Batch(stream="realtime", rows=rows, cursor=29))
    assert result.rows_written == 20
    assert len(await actual_rows(pool, "bsc")) == 20
    assert await pool.fetchval("SELECT block_number FROM sync_cursors WHERE stream = 'realtime'") == 29


async def test_a_row_repeated_within_a_fresh_batch_is_stored_once(
    pool: asyncpg.Pool, writer_factory: WriterFactory
) -> None:
    """The fast path does not de-duplicate in Python: a repeated row makes its COPY fail on the natural key and
    the batch goes through the de-duplicating upsert, with the rest of the batch intact."""
    store = (await writer_factory("bsc")).store
    rows = await rows_for(pool, 10)
    result = await store.commit(Batch(stream="realtime", rows=[*rows, rows[3], rows[7]], cursor=19))
    assert result.rows_written == 10
    stored = await actual_rows(pool, "bsc")
    assert len(stored) == 10 and len(set(stored)) == 10
    assert await pool.fetchval("SELECT block_number FROM sync_cursors WHERE stream = 'realtime'") == 19


async def test_a_connection_aborted_mid_protocol_goes_back_to_the_pool(pool: asyncpg.Pool) -> None:
    """What asyncpg does itself on a protocol error or a connection cut mid-message (``Protocol.abort()``): before
    asyncpg 0.32 the pool never got that connection back (asyncpg #1307), so each database outage could strand one
    of the daemon's connections until the pool was empty and every chain hung. pyproject pins asyncpg >= 0.32."""
    async with pool.acquire() as conn:
        conn._con._protocol.abort()  # the internal path under test
    async with asyncio.timeout(10):
        taken = [await pool.acquire() for _ in range(pool.get_max_size())]
    for conn in taken:
        await pool.release(conn)
