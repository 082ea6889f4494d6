"""The Guardian's risk checks on indexed transfers. Pure, no I/O: the store gathers the history each rule needs
(:class:`History`) and records the alerts in the same transaction that writes the transfers, so a transfer and its
alerts commit together; each alert at most once per (rule, transaction, wallet).

Rules (``alert_type`` of ``guardian_checks``; configured per chain and wallet type, see :class:`RuleConfig`)::

    large_amount           a transfer (in or out) at or above ``threshold_usd``
    new_address            a withdrawal to an address the user never sent to before on that chain
    rapid_transactions     more than ``max_transfers`` outgoing transfers from one wallet within ``window_minutes``
    custom / address_poisoning
                           an incoming zero-value or dust transfer (zero, or ``value_usd`` <= ``dust_usd``)
                           from an address that imitates one the user sent to before: the same first and last
                           ``match_chars`` characters, a different address. Users who copy an address from their
                           history then pay the attacker.
    custom / unexpected_outgoing
                           an outgoing transfer from a platform wallet (``wallet_types``, e.g. escrow, hot_wallet) that
                           no platform row announced (no row of the platform with that tx_hash): a possible key
                           compromise

Only transfers that moved value (not ``failed``) and whose block is younger than ``max_age_s`` are checked: a
history backfill reaching years back raises no alert about them. "Before" means earlier in chain order (block, then
log index), this batch's earlier rows included.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

RULE_ALERT_TYPES = {
    "large_amount": "large_amount",
    "new_address": "new_address",
    "rapid_transactions": "rapid_transactions",
    "address_poisoning": "custom",
    "unexpected_outgoing": "custom",
}


@dataclass(frozen=True, slots=True)
class RuleConfig:
    """One rule's settings; ``chains`` / ``wallet_types`` empty = every chain / wallet type. Several entries of one
    rule may exist: the first whose scope matches a transfer applies to it."""

    rule: str
    risk_score: Decimal
    chains: frozenset[str] = frozenset()
    wallet_types: frozenset[str] = frozenset()
    threshold_usd: Decimal | None = None  # large_amount
    max_transfers: int | None = None  # rapid_transactions
    window_minutes: int | None = None  # rapid_transactions
    dust_usd: Decimal | None = None  # address_poisoning
    match_chars: int | None = None  # address_poisoning
    requires_approval: bool = True

    def covers(self, chain: str, wallet_type: str) -> bool:
        return (not self.chains or chain in self.chains) and (not self.wallet_types or wallet_type in self.wallet_types)

    def params(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in ("threshold_usd", "max_transfers", "window_minutes", "dust_usd", "match_chars"):
            value = getattr(self, name)
            if value is not None:
                out[name] = str(value) if isinstance(value, Decimal) else value
        return out


@dataclass(frozen=True, slots=True)
class Checked:
    """A transfer row as the rules see it (one wallet's side)."""

    chain: str
    tx_hash: str
    log_index: int
    wallet_id: int
    user_id: int
    wallet_type: str
    wallet_address: str
    from_address: str
    to_address: str
    amount: Decimal
    token: str
    token_address: str | None
    value_usd: Decimal | None
    block_number: int
    block_time: datetime
    source: str  # 'indexer' or 'platform' (a row the platform recorded, matched by the indexer)

    @property
    def outgoing(self) -> bool:
        return self.from_address == self.wallet_address

    @property
    def counterparty(self) -> str:
        return self.to_address if self.outgoing else self.from_address

    @property
    def position(self) -> tuple[int, int]:
        return self.block_number, self.log_index


@dataclass(slots=True)
class History:
    """What the rules need to know of the past, for the users and wallets of the transfers checked."""

    # (user_id, address) -> position of the user's first transfer to that address
    first_sent: dict[tuple[int, str], tuple[int, int]] = field(default_factory=dict)
    # wallet_id -> block times of its outgoing transfers (earlier ones, and this batch's)
    outgoing_times: dict[int, list[tuple[tuple[int, int], datetime]]] = field(default_factory=dict)
    # user_id -> addresses the user sent to (what a victim copies from their history), with the first position
    counterparties: dict[int, dict[str, tuple[int, int]]] = field(default_factory=dict)
    # tx hashes the platform recorded rows for
    announced: set[str] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class Alert:
    rule: str
    alert_type: str
    risk_score: Decimal
    description: str
    requires_approval: bool
    row: Checked
    context: dict[str, Any]


def _lookalike(a: str, b: str, chars: int) -> bool:
    """Same leading and trailing ``chars`` characters (after EVM's 0x or Tron's T), a different address."""
    if a == b:
        return False
    start = 2 if a.startswith("0x") else 1
    return (len(a) == len(b) and a[start : start + chars] == b[start : start + chars]
            and a[-chars:] == b[-chars:])


def _config_for(rules: Sequence[RuleConfig], rule: str, row: Checked) -> RuleConfig | None:
    return next((r for r in rules if r.rule == rule and r.covers(row.chain, row.wallet_type)), None)


def evaluate(rows: Iterable[Checked], history: History, rules: Sequence[RuleConfig], *, now: datetime,
             max_age_s: float) -> list[Alert]:
    """Alerts for ``rows`` (this batch's transfers), in chain order."""
    alerts: list[Alert] = []
    ordered = sorted(rows, key=lambda r: r.position)
    for row in ordered:
        if (now - row.block_time).total_seconds() > max_age_s:
            continue
        for rule, check in _CHECKS.items():
            cfg = _config_for(rules, rule, row)
            if cfg is None:
                continue
            found = check(row, history, cfg)
            if found is not None:
                description, extra = found
                alerts.append(Alert(rule, RULE_ALERT_TYPES[rule], cfg.risk_score, description, cfg.requires_approval,
                                    row, _context(row, rule, cfg, extra)))
    return alerts


def _context(row: Checked, rule: str, cfg: RuleConfig, extra: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "rule": rule, "chain": row.chain, "tx_hash": row.tx_hash, "log_index": row.log_index,
        "block_number": row.block_number, "block_time": row.block_time.isoformat(),
        "direction": "out" if row.outgoing else "in", "counterparty": row.counterparty,
        "token": row.token, "token_address": row.token_address, "amount": str(row.amount),
        "value_usd": str(row.value_usd) if row.value_usd is not None else None,
        "params": cfg.params(), **extra,
    }


Check = Any  # Callable[[Checked, History, RuleConfig], tuple[str, dict[str, Any]] | None]


def _large_amount(row: Checked, history: History, cfg: RuleConfig) -> tuple[str, dict[str, Any]] | None:
    if cfg.threshold_usd is None or row.value_usd is None or row.value_usd < cfg.threshold_usd:
        return None
    way = "sent to" if row.outgoing else "received from"
    return (f"{row.amount} {row.token} (${row.value_usd}) {way} {row.counterparty} on {row.chain}: at or above the "
            f"${cfg.threshold_usd} review threshold. Confirm the user expected it.", {})


def _new_address(row: Checked, history: History, cfg: RuleConfig) -> tuple[str, dict[str, Any]] | None:
    if not row.outgoing:
        return None
    first = history.first_sent.get((row.user_id, row.to_address))
    if first is not None and first < row.position:
        return None
    return (f"Withdrawal of {row.amount} {row.token} to {row.to_address}, an address this user has never sent to on "
            f"{row.chain}. Confirm the destination with the user before anything else leaves.", {})


def _rapid(row: Checked, history: History, cfg: RuleConfig) -> tuple[str, dict[str, Any]] | None:
    if not row.outgoing or cfg.max_transfers is None or cfg.window_minutes is None:
        return None
    since = row.block_time - timedelta(minutes=cfg.window_minutes)
    count = sum(1 for position, at in history.outgoing_times.get(row.wallet_id, [])
                if position <= row.position and since < at <= row.block_time)
    if count <= cfg.max_transfers:
        return None
    return (f"{count} outgoing transfers from {row.wallet_address} on {row.chain} within {cfg.window_minutes} "
            f"minutes (more than {cfg.max_transfers}): a drained or automated wallet? Check the user's recent "
            "activity.", {"count": count})


def _poisoning(row: Checked, history: History, cfg: RuleConfig) -> tuple[str, dict[str, Any]] | None:
    if row.outgoing or cfg.match_chars is None:
        return None
    # zero, or priced at most dust_usd (an unpriced non-zero amount cannot be told to be dust)
    dust = row.amount == 0 or (cfg.dust_usd is not None and row.value_usd is not None and row.value_usd <= cfg.dust_usd)
    if not dust:
        return None
    earlier = history.counterparties.get(row.user_id, {})
    imitated = sorted(a for a, first in earlier.items()
                      if first < row.position and _lookalike(row.from_address, a, cfg.match_chars))
    if not imitated:
        return None
    return (f"Dust transfer ({row.amount} {row.token}) from {row.from_address}, which imitates the user's earlier "
            f"recipient {imitated[0]} (same first and last {cfg.match_chars} characters): an address poisoning "
            "attempt. Warn the user not to copy addresses from their history.",
            {"imitated": imitated[0], "kind": "address_poisoning"})


def _unexpected(row: Checked, history: History, cfg: RuleConfig) -> tuple[str, dict[str, Any]] | None:
    if not row.outgoing or row.source == "platform" or row.tx_hash in history.announced:
        return None
    return (f"{row.amount} {row.token} left platform {row.wallet_type} wallet {row.wallet_address} on {row.chain} "
            f"to {row.to_address} in a transaction no platform service recorded: a possible key compromise. Freeze "
            "the wallet's outgoing flows and investigate now.", {"kind": "unexpected_outgoing"})


_CHECKS: dict[str, Check] = {
    "large_amount": _large_amount,
    "new_address": _new_address,
    "rapid_transactions": _rapid,
    "address_poisoning": _poisoning,
    "unexpected_outgoing": _unexpected,
}


def extend_history(history: History, rows: Iterable[Checked]) -> None:
    """Add this batch's own rows to the history (an earlier row of the batch counts as "before")."""
    for row in rows:
        if not row.outgoing:
            continue
        key = (row.user_id, row.to_address)
        if key not in history.first_sent or row.position < history.first_sent[key]:
            history.first_sent[key] = row.position
        history.outgoing_times.setdefault(row.wallet_id, []).append((row.position, row.block_time))
        sent = history.counterparties.setdefault(row.user_id, {})
        if row.to_address not in sent or row.position < sent[row.to_address]:
            sent[row.to_address] = row.position


DEFAULT_RULES: tuple[RuleConfig, ...] = (
    RuleConfig("large_amount", Decimal(60), threshold_usd=Decimal(10_000)),
    RuleConfig("new_address", Decimal(40), wallet_types=frozenset({"personal"})),
    RuleConfig("rapid_transactions", Decimal(55), max_transfers=5, window_minutes=10),
    RuleConfig("address_poisoning", Decimal(75), dust_usd=Decimal(1), match_chars=4),
    RuleConfig("unexpected_outgoing", Decimal(95), wallet_types=frozenset({"escrow", "hot_wallet"})),
)
