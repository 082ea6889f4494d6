"""Every Guardian rule raises on what it is for and stays quiet on its look-alike, without a node or a database."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from indexer.guardian import DEFAULT_RULES, Checked, History, RuleConfig, evaluate, extend_history

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
ME = "0x" + "a" * 40
FRIEND = "0x1234" + "5" * 32 + "cdef"
IMPOSTOR = "0x1234" + "9" * 32 + "cdef"  # same first and last 4 characters as FRIEND
OTHER = "0x" + "b" * 40


def row(*, frm: str = ME, to: str = OTHER, amount: str = "10", usd: str | None = "10", block: int = 100, log: int = 0,
        wallet_type: str = "personal", source: str = "indexer", minutes_ago: float = 1, tx: str | None = None,
        chain: str = "bsc") -> Checked:
    return Checked(chain, tx or f"0x{block:060x}{log:04x}", log, 5, 1, wallet_type, ME, frm, to, Decimal(amount),
                   "USDT", "0x" + "7" * 40, Decimal(usd) if usd is not None else None, block,
                   NOW - timedelta(minutes=minutes_ago), source)


def alerts(rows: list[Checked], history: History | None = None, rules: tuple[RuleConfig, ...] = DEFAULT_RULES,
           max_age_s: float = 86_400) -> list[tuple[str, str]]:
    history = history or History()
    extend_history(history, rows)
    return [(a.rule, a.row.tx_hash) for a in evaluate(rows, history, rules, now=NOW, max_age_s=max_age_s)]


def only(rule: str, rows: list[Checked], history: History | None = None) -> list[str]:
    return [tx for r, tx in alerts(rows, history) if r == rule]


def test_large_amount_at_the_threshold_raises_just_below_does_not() -> None:
    at = row(to=ME, frm=OTHER, amount="10000", usd="10000.00", log=1)
    below = row(to=ME, frm=OTHER, amount="9999.99", usd="9999.99", log=2)
    assert only("large_amount", [at, below]) == [at.tx_hash]


def test_a_withdrawal_to_a_new_address_raises_a_repeat_does_not() -> None:
    first = row(to=OTHER, block=100)
    again = row(to=OTHER, block=101)
    assert only("new_address", [first, again]) == [first.tx_hash]
    history = History(first_sent={(1, OTHER): (50, 0)})  # sent there long ago
    assert only("new_address", [row(to=OTHER, block=102)], history) == []


def test_more_than_n_outgoing_within_the_window_raises_spread_out_does_not() -> None:
    burst = [row(block=100 + i, to=OTHER, minutes_ago=5 - i * 0.5) for i in range(6)]  # 6 within 3 minutes
    raised = only("rapid_transactions", burst)
    assert raised == [burst[5].tx_hash]  # the sixth is the first above 5
    spread = [row(block=200 + i, to=OTHER, minutes_ago=60 - i * 11) for i in range(6)]  # one every 11 minutes
    assert only("rapid_transactions", spread) == []


def test_dust_from_a_lookalike_of_an_earlier_counterparty_raises_the_real_one_does_not() -> None:
    history = History(counterparties={1: {FRIEND: (10, 0)}})  # the user sent to FRIEND before
    poison = row(frm=IMPOSTOR, to=ME, amount="0", usd="0", block=100)
    genuine = row(frm=FRIEND, to=ME, amount="0", usd="0", block=101)  # the same address: not an imitation
    big = row(frm=IMPOSTOR, to=ME, amount="50", usd="50", block=102, log=1)  # not dust
    assert only("address_poisoning", [poison, genuine, big], history) == [poison.tx_hash]


def test_the_first_transfer_from_an_address_is_not_an_imitation_of_itself() -> None:
    """A look-alike must imitate an EARLIER counterparty: the impostor's own first transfer does not count."""
    assert only("address_poisoning", [row(frm=IMPOSTOR, to=ME, amount="0", usd="0")]) == []


def test_an_unannounced_withdrawal_from_a_platform_wallet_raises_an_announced_one_does_not() -> None:
    stolen = row(wallet_type="hot_wallet", tx="0x" + "1" * 64)
    announced = row(wallet_type="hot_wallet", tx="0x" + "2" * 64, block=101)
    matched = row(wallet_type="hot_wallet", tx="0x" + "3" * 64, block=102, source="platform")
    personal = row(tx="0x" + "4" * 64, block=103)
    history = History(announced={announced.tx_hash})
    assert only("unexpected_outgoing", [stolen, announced, matched, personal], history) == [stolen.tx_hash]


def test_rules_apply_per_chain_and_wallet_type_and_old_blocks_raise_nothing() -> None:
    rules = (RuleConfig("large_amount", Decimal(60), chains=frozenset({"tron"}), threshold_usd=Decimal(100)),
             RuleConfig("large_amount", Decimal(70), wallet_types=frozenset({"escrow"}), threshold_usd=Decimal(5)))
    bsc = row(to=ME, frm=OTHER, usd="500")
    tron = replace(bsc, chain="tron")
    escrow = replace(bsc, wallet_type="escrow", tx_hash="0x" + "9" * 64)
    assert [r for r, _ in alerts([bsc, tron, escrow], rules=rules)] == ["large_amount", "large_amount"]
    old = row(to=ME, frm=OTHER, usd="50000", minutes_ago=3 * 24 * 60)
    assert alerts([old], max_age_s=86_400) == []


def test_alerts_carry_what_a_person_needs() -> None:
    withdrawal = row(to=OTHER, amount="12345", usd="12345.00")
    history = History()
    extend_history(history, [withdrawal])
    found = {a.rule: a for a in evaluate([withdrawal], history, DEFAULT_RULES, now=NOW, max_age_s=86_400)}
    large = found["large_amount"]
    assert large.alert_type == "large_amount" and large.risk_score == Decimal(60)
    assert large.context["tx_hash"] == withdrawal.tx_hash and large.context["counterparty"] == OTHER
    assert large.context["amount"] == "12345" and large.context["params"] == {"threshold_usd": "10000"}
    assert "12345 USDT" in large.description and OTHER in large.description
    assert found["new_address"].alert_type == "new_address"
