"""Guardian alerts in the database, inside the chain's write transaction (:meth:`ChainStore.commit`).

:mod:`indexer.guardian` decides (pure); this module gathers the history the rules need — with the batch's rows
already written, so "before" includes the batch's earlier rows — and records the alerts, each at most once per
(rule, transaction, wallet) (``guardian_checks_rule_transfer_key``). A reorg that orphans a transfer expires its
pending alerts (status ``expired``, the reason in ``context_data``); if the same transfer is mined again, its alert
comes back to ``pending``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from indexer.guardian import Checked, History, RuleConfig, evaluate
from indexer.model import TransferRow


@dataclass(frozen=True, slots=True)
class GuardianPolicy:
    rules: tuple[RuleConfig, ...]
    max_age_s: float


_INSERT_SQL = """
INSERT INTO guardian_checks (user_id, alert_type, description, risk_score, detected_at, context_data,
                             requires_approval, status, rule, chain, tx_hash, log_index, wallet_id, block_number)
VALUES ($1, $2, $3, $4, now(), $5::jsonb, $6, 'pending', $7, $8, $9, $10, $11, $12)
ON CONFLICT (rule, chain, tx_hash, log_index, wallet_id) WHERE rule IS NOT NULL
DO UPDATE SET status = 'pending', block_number = EXCLUDED.block_number, detected_at = EXCLUDED.detected_at,
              context_data = EXCLUDED.context_data
    WHERE guardian_checks.status = 'expired' AND guardian_checks.context_data ? 'expired_by_reorg'
RETURNING rule
"""

_EXPIRE_SQL = """
UPDATE guardian_checks
   SET status = 'expired',
       context_data = coalesce(context_data, '{}'::jsonb) || jsonb_build_object(
           'expired_by_reorg', true,
           'expired_reason', 'the transfer was orphaned by a chain reorganisation (rolled back above block '
                             || $2::bigint || ')')
 WHERE chain = $1 AND rule IS NOT NULL AND status = 'pending' AND block_number > $2
"""


async def expire_alerts(conn: Any, chain: str, ancestor: int) -> int:
    status = await conn.execute(_EXPIRE_SQL, chain, ancestor)
    return int(status.split()[-1])


async def raise_alerts(conn: Any, chain: str, rows: Sequence[TransferRow], policy: GuardianPolicy) -> dict[str, int]:
    """Alerts for ``rows`` (just written); the number raised per rule."""
    now = datetime.now(UTC)
    oldest = now - timedelta(seconds=policy.max_age_s)
    fresh = []
    for r in rows:  # unpacked in ROW_COLUMNS order (indexer.model)
        (_, source, user_id, wallet_id, tx_hash, log_index, from_address, to_address, amount, _, token,
         token_address, _, value_usd, status, _, _, _, _, _, block_number, _, block_time) = r
        if status != "failed" and block_time is not None and block_time >= oldest:
            fresh.append((source, user_id, wallet_id, tx_hash, log_index, from_address, to_address, amount, token,
                          token_address, value_usd, block_number, block_time))
    if not fresh or not policy.rules:
        return {}
    wallets = {w["id"]: w for w in await conn.fetch(
        "SELECT id, address_normalized, wallet_type FROM wallets WHERE id = ANY($1::bigint[])",
        sorted({f[2] for f in fresh}))}
    checked = []
    for (source, user_id, wallet_id, tx_hash, log_index, from_address, to_address, amount, token, token_address,
         value_usd, block_number, block_time) in fresh:
        w = wallets.get(wallet_id)
        if w is None:
            continue
        checked.append(Checked(chain, tx_hash, log_index, wallet_id, user_id, w["wallet_type"] or "personal",
                               w["address_normalized"], from_address, to_address, amount, token, token_address,
                               value_usd, block_number, block_time, source))
    history = await _history(conn, chain, checked, policy)
    alerts = evaluate(checked, history, policy.rules, now=now, max_age_s=policy.max_age_s)
    if not alerts:
        return {}
    raised: dict[str, int] = {}
    for alert in alerts:
        row = alert.row
        got = await conn.fetchval(
            _INSERT_SQL, row.user_id, alert.alert_type, alert.description, alert.risk_score,
            json.dumps(alert.context), alert.requires_approval, alert.rule, chain, row.tx_hash, row.log_index,
            row.wallet_id, row.block_number,
        )
        if got is not None:
            raised[alert.rule] = raised.get(alert.rule, 0) + 1
    return raised


async def _history(conn: Any, chain: str, rows: list[Checked], policy: GuardianPolicy) -> History:
    history = History()
    rules = {r.rule for r in policy.rules}
    outgoing = [r for r in rows if r.outgoing]
    users = sorted({r.user_id for r in rows})
    if "new_address" in rules and outgoing:
        for r in await conn.fetch(
            """SELECT DISTINCT ON (t.user_id, t.to_address) t.user_id, t.to_address, t.block_number, t.log_index
               FROM transactions t JOIN wallets w ON w.id = t.wallet_id
               WHERE t.chain = $1 AND t.user_id = ANY($2::bigint[]) AND t.to_address = ANY($3::text[])
                 AND t.from_address = w.address_normalized AND t.block_number IS NOT NULL
               ORDER BY t.user_id, t.to_address, t.block_number, t.log_index NULLS LAST""",
            chain, users, sorted({r.to_address for r in outgoing}),
        ):
            history.first_sent[(r["user_id"], r["to_address"])] = (r["block_number"], r["log_index"] or 0)
    windows = [c.window_minutes for c in policy.rules if c.rule == "rapid_transactions" and c.window_minutes]
    if windows and outgoing:
        since = min(r.block_time for r in outgoing) - timedelta(minutes=max(windows))
        for r in await conn.fetch(
            """SELECT t.wallet_id, t.block_number, t.log_index, t.block_timestamp
               FROM transactions t JOIN wallets w ON w.id = t.wallet_id
               WHERE t.wallet_id = ANY($1::bigint[]) AND t.from_address = w.address_normalized
                 AND t.block_timestamp > $2 AND t.block_number IS NOT NULL AND t.status <> 'failed'""",
            sorted({r.wallet_id for r in outgoing}), since,
        ):
            history.outgoing_times.setdefault(r["wallet_id"], []).append(
                ((r["block_number"], r["log_index"] or 0), r["block_timestamp"]))
    chars = [c.match_chars for c in policy.rules if c.rule == "address_poisoning" and c.match_chars]
    incoming = [r for r in rows if not r.outgoing]
    if chars and incoming:
        k = min(chars)
        start = 2 if chain != "tron" else 1
        prefixes = sorted({r.from_address[: start + k] for r in incoming})
        suffixes = sorted({r.from_address[-k:] for r in incoming})
        for r in await conn.fetch(
            """SELECT DISTINCT ON (t.user_id, t.to_address) t.user_id, t.to_address, t.block_number, t.log_index
               FROM transactions t JOIN wallets w ON w.id = t.wallet_id
               WHERE t.chain = $1 AND t.user_id = ANY($2::bigint[]) AND t.from_address = w.address_normalized
                 AND left(t.to_address, $3) = ANY($4::text[]) AND right(t.to_address, $5) = ANY($6::text[])
                 AND t.block_number IS NOT NULL
               ORDER BY t.user_id, t.to_address, t.block_number, t.log_index NULLS LAST""",
            chain, sorted({r.user_id for r in incoming}), start + k, prefixes, k, suffixes,
        ):
            history.counterparties.setdefault(r["user_id"], {})[r["to_address"]] = (
                r["block_number"], r["log_index"] or 0)
    if "unexpected_outgoing" in rules and outgoing:
        history.announced = {r["tx_hash"] for r in await conn.fetch(
            "SELECT DISTINCT tx_hash FROM transactions WHERE chain = $1 AND source = 'platform' "
            "AND tx_hash = ANY($2::text[])", chain, sorted({r.tx_hash for r in outgoing}))}
    return history
