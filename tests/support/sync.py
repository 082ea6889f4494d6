"""Driving the sync core in tests, and computing what ``transactions`` must hold independently of it.

The expected rows are computed straight from the node (one unbounded ``eth_getLogs`` per token and a scan of every
block's transactions), with none of the indexer's code, so a bug shared by the indexer and the expectation is unlikely.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import asyncpg

from citadel_devtools.anvil import Anvil
from indexer.store.chain_store import ChainStore, prepare_connection
from indexer.sync.backfill import Backfiller
from indexer.sync.watcher import ChainWatcher, WatcherConfig
from tests.support.evm import TRANSFER_TOPIC, get_block, get_logs

Row = tuple[int, str, int, str, int, str | None, int, str, str]
"""(wallet_id, tx_hash, log_index, tx_type, amount_raw, token_address, block_number, block_hash, status_kind)
status_kind is 'failed' or 'ok' (pending/confirmed depends on timing and is checked separately)."""


@dataclass(frozen=True)
class KnownWallet:
    id: int
    user_id: int
    address: str  # lowercase


async def open_pool(db_url: str) -> asyncpg.Pool:
    pool: asyncpg.Pool = await asyncpg.create_pool(db_url, min_size=1, max_size=4, init=prepare_connection,
                                                   server_settings={"timezone": "UTC"})
    return pool


async def add_wallet(pool: asyncpg.Pool, chain: str, address: str, *, user_id: int | None = None,
                     wallet_type: str = "personal") -> KnownWallet:
    """A user (created when ``user_id`` is None) and a wallet on ``chain``."""
    async with pool.acquire() as conn:
        if user_id is None:
            n = await conn.fetchval("SELECT count(*) FROM users") + 1
            user_id = await conn.fetchval(
                "INSERT INTO users (email, password_hash, username) VALUES ($1, 'x', $2) RETURNING id",
                f"user{n}-{address[-6:]}@example.com",
                f"user{n}{address[-6:]}",
            )
        wallet_id = await conn.fetchval(
            "INSERT INTO wallets (user_id, chain, public_address, wallet_type) VALUES ($1, $2, $3, $4) RETURNING id",
            user_id,
            chain,
            address,
            wallet_type,
        )
    return KnownWallet(wallet_id, user_id, address.lower() if address.startswith("0x") else address)


async def actual_rows(pool: asyncpg.Pool, chain: str) -> list[Row]:
    rows = await pool.fetch(
        """SELECT wallet_id, tx_hash, log_index, tx_type, amount_raw, token_address, block_number, block_hash,
                  status FROM transactions WHERE chain = $1 AND block_number IS NOT NULL""",
        chain,
    )
    return sorted(
        (r["wallet_id"], r["tx_hash"], r["log_index"], r["tx_type"], int(r["amount_raw"]), r["token_address"],
         r["block_number"], r["block_hash"], "failed" if r["status"] == "failed" else "ok")
        for r in rows
    )


def sides_of(frm: str, to: str, wallets: dict[str, KnownWallet]) -> list[tuple[KnownWallet, str]]:
    """The rows a transfer gives: each known side, p2p when both are known, one row for a self-transfer."""
    sender, receiver = wallets.get(frm), wallets.get(to)
    both = sender is not None and receiver is not None
    out = []
    if sender is not None:
        out.append((sender, "p2p_transfer" if both else "withdrawal"))
    if receiver is not None and receiver is not sender:
        out.append((receiver, "p2p_transfer" if both else "deposit"))
    return out


def expected_evm_rows(anvil: Anvil, wallets: Iterable[KnownWallet], tokens: Iterable[str], first: int,
                      last: int) -> list[Row]:
    """What ``transactions`` must hold for blocks first..last, read straight from the node."""
    by_address = {w.address: w for w in wallets}
    token_set = [t.lower() for t in tokens]
    rows: list[Row] = []
    for log in get_logs(anvil, first, last, address=token_set, topics=[TRANSFER_TOPIC]):
        topics, data = log["topics"], log["data"]
        if len(topics) != 3 or len(data) < 66:
            continue
        frm, to = "0x" + topics[1][-40:], "0x" + topics[2][-40:]
        for wallet, kind in sides_of(frm, to, by_address):
            rows.append((wallet.id, log["transactionHash"], int(log["logIndex"], 16), kind, int(data[2:66], 16),
                         log["address"].lower(), int(log["blockNumber"], 16), log["blockHash"], "ok"))
    for number in range(first, last + 1):
        block = get_block(anvil, number, full=True)
        for tx in block["transactions"]:
            value = int(tx["value"], 16)
            to = (tx.get("to") or "").lower()
            if value == 0 or not to:
                continue
            sides = sides_of(tx["from"].lower(), to, by_address)
            if not sides:
                continue
            receipt: Any = anvil.rpc("eth_getTransactionReceipt", [tx["hash"]])
            kind_of_status = "ok" if int(receipt["status"], 16) == 1 else "failed"
            for wallet, kind in sides:
                rows.append((wallet.id, tx["hash"], -1, kind, value, None, number, block["hash"], kind_of_status))
    return sorted(rows)


def watcher_config(tokens: dict[str, str], **overrides: Any) -> WatcherConfig:
    base: dict[str, Any] = {"start_block": 0, "confirmations": 10, "poll_interval_s": 0.05, "tokens": tokens,
                            "catchup_range": 50, "follow_batch": 20, "wallet_poll_s": 0.2, "max_backoff_s": 0.5}
    base.update(overrides)
    return WatcherConfig(**base)


async def sync_to_head(watcher: ChainWatcher, head: Callable[[], int], timeout_s: float = 60) -> None:
    """Step the watcher until its cursor reaches the node's head and no wallet waits for a rescan."""
    async def done() -> bool:
        return watcher.cursor >= head() and not watcher.wallets.pending_rescan

    async with asyncio.timeout(timeout_s):
        if not watcher.tokens:
            await watcher.prepare()
        while True:
            await watcher.step()
            if await done():
                return


async def eventually(check: Callable[[], Awaitable[bool]], timeout_s: float = 30, every_s: float = 0.1) -> None:
    async with asyncio.timeout(timeout_s):
        while not await check():  # noqa: ASYNC110 (polls state another process writes)
            await asyncio.sleep(every_s)


def store_for(pool: asyncpg.Pool, chain: str) -> ChainStore:
    """A store that reads (writes need the chain's writer lease: the ``writer_factory`` fixture)."""
    return ChainStore(pool, chain)


async def run_backfills(watcher: ChainWatcher, range_size: int) -> None:
    """Run every pending backfill stream of the watcher's chain to its end, in steps of ``range_size`` blocks."""
    backfiller = Backfiller(watcher.view, watcher.writer)
    backfiller.range_size = range_size

    async def pending() -> bool:
        states = await watcher.store.streams("")
        return any(s.block_number is not None and s.target_block is not None and s.block_number < s.target_block
                   for s in states if s.stream != "realtime")

    while await pending():
        await backfiller.advance_all()
