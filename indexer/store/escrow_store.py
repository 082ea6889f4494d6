"""Escrow events in the database, inside the chain's write transaction (:meth:`ChainStore.commit`).

What the events mean is decided by :mod:`indexer.escrow` (pure); this module reads what that needs and writes what it
decides, in the same transaction as the batch's transfers, cursor and window:

- each new event is recorded in ``escrow_events`` with its effect (or its rejection's reason), once: a replayed range
  finds it there and changes nothing;
- an applied event writes a ``transactions`` row (``escrow_lock`` / ``escrow_release``, ``agreement_id`` set, the
  party's wallet), and its agreement's chain-derived columns;
- every event writes one ``audit_trail`` entry (applied or rejected, with the reason); a reorg that orphans events
  writes one entry each and folds the agreement again from the events that remain.

Agreements are read ``FOR UPDATE``: a platform service changing one at the same moment waits for this transaction,
or this transaction sees its change.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from chains.base import EscrowEvent
from indexer.escrow import (
    MANAGED_STATUSES,
    MAX_AGREEMENT_ID,
    Agreement,
    ChainState,
    column_values,
    fold,
    judge,
)
from indexer.model import INDEXER_SOURCE, scale


@dataclass(frozen=True, slots=True)
class EscrowOutcome:
    applied: int = 0
    rejected: int = 0
    orphaned: int = 0


_EVENT_COLUMNS = ("chain", "tx_hash", "log_index", "kind", "agreement_id", "agreement_ref", "contract", "party",
                  "counterparty", "token", "amount_raw", "block_number", "block_hash", "block_timestamp", "tx_index",
                  "effect", "reason", "wallet_id")

_AGREEMENT_SQL = """
SELECT a.id, a.chain, a.lender_id, a.borrower_id, a.token_address, a.token, a.principal_amount, a.duration_days,
       a.status, a.funded_at, a.maturity_date, a.escrow_address, a.escrow_tx_hash, a.settled_at,
       a.repayment_amount, a.repay_tx_hash, t.decimals
FROM p2p_agreements a LEFT JOIN tokens t ON t.chain = a.chain AND t.contract_address = a.token_address
WHERE a.id = ANY($1::bigint[])
ORDER BY a.id
FOR UPDATE OF a
"""


def _time(event: EscrowEvent) -> datetime:
    assert event.block_timestamp is not None
    return datetime.fromtimestamp(event.block_timestamp, UTC)


async def _agreements(conn: Any, ids: set[int]) -> tuple[dict[int, Agreement], dict[int, Any]]:
    rows = await conn.fetch(_AGREEMENT_SQL, sorted(ids))
    users = sorted({r["lender_id"] for r in rows} | {r["borrower_id"] for r in rows})
    wallets: dict[tuple[int, str], dict[str, int]] = defaultdict(dict)
    for w in await conn.fetch(
        "SELECT id, user_id, chain, address_normalized FROM wallets WHERE user_id = ANY($1::bigint[])", users
    ):
        wallets[(w["user_id"], w["chain"])][w["address_normalized"]] = w["id"]
    out = {}
    for r in rows:
        out[r["id"]] = Agreement(
            id=r["id"], chain=r["chain"], lender_id=r["lender_id"], borrower_id=r["borrower_id"],
            token_address=r["token_address"], principal_amount=r["principal_amount"],
            duration_days=r["duration_days"], status=r["status"],
            lender_wallets=wallets.get((r["lender_id"], r["chain"]), {}),
            borrower_wallets=wallets.get((r["borrower_id"], r["chain"]), {}),
            token_decimals=r["decimals"],
        )
    return out, {r["id"]: r for r in rows}


async def _applied(conn: Any, chain: str, ids: set[int]) -> dict[int, list[tuple[EscrowEvent, str]]]:
    rows = await conn.fetch(
        """SELECT * FROM escrow_events WHERE agreement_ref = ANY($1::bigint[]) AND effect IS NOT NULL
           ORDER BY block_number, log_index""",
        sorted(ids),
    )
    out: dict[int, list[tuple[EscrowEvent, str]]] = defaultdict(list)
    for r in rows:
        out[r["agreement_ref"]].append((_event_of(r), r["effect"]))
    return out


def _event_of(r: Any) -> EscrowEvent:
    return EscrowEvent(r["kind"], int(r["agreement_id"]), r["tx_hash"], r["log_index"], r["block_number"],
                       r["block_hash"], r["tx_index"] or 0, r["contract"], r["party"], r["counterparty"], r["token"],
                       int(r["amount_raw"]), int(r["block_timestamp"].timestamp()))


async def _write_agreement(conn: Any, row: Any, state: ChainState) -> dict[str, Any] | None:
    """The chain-derived columns where they changed (status only where the indexer manages it); the changes."""
    values = column_values(state)
    if row["status"] not in MANAGED_STATUSES:
        values.pop("status")
    changes = {k: v for k, v in values.items() if row[k] != v}
    if not changes:
        return None
    columns = list(changes)
    sets = ", ".join(f"{c} = ${i + 2}" for i, c in enumerate(columns))
    await conn.execute(f"UPDATE p2p_agreements SET {sets} WHERE id = $1", row["id"], *changes.values())  # noqa: S608
    return {k: {"from": _plain(row[k]), "to": _plain(v)} for k, v in changes.items()}


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    return value


async def _audit(conn: Any, entries: list[tuple[int | None, str, int | None, str, dict[str, Any]]]) -> None:
    if entries:
        await conn.executemany(
            """INSERT INTO audit_trail (user_id, action_type, entity_type, entity_id, description, changes)
               VALUES ($1, $2, 'agreement', $3, $4, $5::jsonb)""",
            [(user, action, entity, text, json.dumps(changes, default=str))
             for user, action, entity, text, changes in entries],
        )


async def record_escrow(conn: Any, chain: str, events: Sequence[EscrowEvent], head: int | None,
                        final: int | None) -> EscrowOutcome:
    """Record the batch's escrow events (those not recorded yet), apply them to their agreements, write their rows."""
    if not events:
        return EscrowOutcome()
    known = {(r["tx_hash"], r["log_index"]) for r in await conn.fetch(
        "SELECT tx_hash, log_index FROM escrow_events WHERE chain = $1 AND tx_hash = ANY($2::text[])",
        chain, sorted({e.tx_hash for e in events}))}
    new = sorted((e for e in events if (e.tx_hash, e.log_index) not in known),
                 key=lambda e: (e.block_number, e.log_index))
    if not new:
        return EscrowOutcome()
    ids = {e.agreement_id for e in new if 0 < e.agreement_id <= MAX_AGREEMENT_ID}
    agreements, rows = await _agreements(conn, ids)
    applied_before = await _applied(conn, chain, set(agreements))
    states = {i: fold(a, applied_before.get(i, [])) for i, a in agreements.items()}
    before = dict(states)
    records, tx_rows, audit = [], [], []
    applied = rejected = 0
    for event in new:
        agreement = agreements.get(event.agreement_id)
        state = states.get(event.agreement_id, ChainState())
        after, verdict = judge(agreement, state, event, chain)
        if agreement is not None:
            states[agreement.id] = after
        records.append((chain, event.tx_hash, event.log_index, event.kind, Decimal(event.agreement_id),
                        agreement.id if agreement is not None else None, event.contract, event.party,
                        event.counterparty, event.token, Decimal(event.amount_raw), event.block_number,
                        event.block_hash, _time(event), event.tx_index, verdict.effect, verdict.reason,
                        verdict.wallet_id))
        detail = {"chain": chain, "tx_hash": event.tx_hash, "log_index": event.log_index,
                  "block_number": event.block_number, "event": event.kind, "party": event.party,
                  "counterparty": event.counterparty, "token": event.token, "amount_raw": str(event.amount_raw),
                  "agreement_id": str(event.agreement_id)}
        entity = agreement.id if agreement is not None else None
        if verdict.applied and agreement is not None and verdict.wallet_id is not None:
            applied += 1
            tx_rows.append(_transaction_row(chain, event, agreement, rows[agreement.id], verdict.wallet_id,
                                            verdict.user_id, head, final))
            audit.append((verdict.user_id, f"escrow_{verdict.effect}", entity,
                          f"escrow {event.kind} on {chain}: {verdict.reason}", {"event": detail}))
        else:
            rejected += 1
            user = agreement.lender_id if agreement is not None else None
            audit.append((user, "escrow_event_rejected", entity,
                          f"escrow {event.kind} on {chain} rejected: {verdict.reason}", {"event": detail}))
    await conn.executemany(
        f"INSERT INTO escrow_events ({', '.join(_EVENT_COLUMNS)}) "  # noqa: S608
        f"VALUES ({', '.join(f'${i + 1}' for i in range(len(_EVENT_COLUMNS)))}) ON CONFLICT DO NOTHING",
        records,
    )
    if tx_rows:
        await conn.executemany(_ESCROW_ROW_SQL, tx_rows)
    for agreement_id, state in states.items():
        if state != before.get(agreement_id):
            changes = await _write_agreement(conn, rows[agreement_id], state)
            if changes:
                audit.append((agreements[agreement_id].lender_id, "agreement_updated_from_chain", agreement_id,
                              f"agreement {agreement_id} is {state.status} on {chain}", changes))
    await _audit(conn, audit)
    return EscrowOutcome(applied=applied, rejected=rejected)


_ESCROW_ROW_SQL = """
INSERT INTO transactions (chain, source, user_id, wallet_id, tx_hash, log_index, from_address, to_address, amount,
                          amount_raw, token, token_address, token_decimals, status, confirmations, tx_index, tx_type,
                          block_number, block_hash, block_timestamp, agreement_id)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21)
ON CONFLICT (chain, tx_hash, log_index, wallet_id) DO UPDATE SET status = EXCLUDED.status,
    confirmations = EXCLUDED.confirmations, block_hash = EXCLUDED.block_hash, agreement_id = EXCLUDED.agreement_id
"""


def _transaction_row(chain: str, event: EscrowEvent, agreement: Agreement, row: Any, wallet_id: int,
                     user_id: int | None, head: int | None, final: int | None) -> tuple[Any, ...]:
    decimals = agreement.token_decimals or 0
    locked = event.kind == "locked"
    status = "confirmed" if final is not None and event.block_number <= final else "pending"
    confirmations = max((head if head is not None else event.block_number) - event.block_number + 1, 0)
    return (chain, INDEXER_SOURCE, user_id, wallet_id, event.tx_hash, event.log_index,
            event.party if locked else event.contract, event.contract if locked else event.party,
            scale(event.amount_raw, decimals), Decimal(event.amount_raw), row["token"] or "", event.token, decimals,
            status, confirmations, event.tx_index, "escrow_lock" if locked else "escrow_release",
            event.block_number, event.block_hash, _time(event), agreement.id)


async def rollback_escrow(conn: Any, chain: str, ancestor: int) -> EscrowOutcome:
    """Events above ``ancestor`` are orphaned: they go, and their agreements are folded from what remains."""
    gone = await conn.fetch(
        "DELETE FROM escrow_events WHERE chain = $1 AND block_number > $2 RETURNING *", chain, ancestor
    )
    if not gone:
        return EscrowOutcome()
    ids = {r["agreement_ref"] for r in gone if r["agreement_ref"] is not None}
    agreements, rows = await _agreements(conn, ids)
    applied = await _applied(conn, chain, ids)
    audit: list[tuple[int | None, str, int | None, str, dict[str, Any]]] = []
    for r in gone:
        agreement = agreements.get(r["agreement_ref"]) if r["agreement_ref"] is not None else None
        audit.append((agreement.lender_id if agreement is not None else None, "escrow_event_orphaned",
                      r["agreement_ref"],
                      f"escrow {r['kind']} on {chain} orphaned by a reorg (block {r['block_number']})",
                      {"event": {"tx_hash": r["tx_hash"], "log_index": r["log_index"], "effect": r["effect"],
                                 "block_number": r["block_number"]}}))
    for agreement_id, agreement in agreements.items():
        changes = await _write_agreement(conn, rows[agreement_id], fold(agreement, applied.get(agreement_id, [])))
        if changes:
            audit.append((agreement.lender_id, "agreement_updated_from_chain", agreement_id,
                          f"agreement {agreement_id} undone by a reorg on {chain}", changes))
    await _audit(conn, audit)
    return EscrowOutcome(orphaned=len(gone))
