"""What escrow events do to an agreement, without a node or a database (indexer.escrow is pure)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from chains.base import EscrowEvent
from indexer.escrow import Agreement, ChainState, fold, judge

TOKEN = "0x" + "7" * 40
ESCROW = "0x" + "e" * 40
LENDER, LENDER_2, BORROWER, STRANGER = ("0x" + c * 40 for c in "abcd")
T0 = 1_760_000_000

AGREEMENT = Agreement(
    id=7, chain="bsc", lender_id=1, borrower_id=2, token_address=TOKEN, principal_amount=Decimal("1000.50"),
    duration_days=30, status="pending", lender_wallets={LENDER: 11, LENDER_2: 12}, borrower_wallets={BORROWER: 21},
    token_decimals=6,
)


def event(kind: str, party: str, amount_raw: int, *, block: int = 10, log: int = 0, counterparty: str | None = None,
          token: str = TOKEN, contract: str = ESCROW, agreement_id: int = 7) -> EscrowEvent:
    return EscrowEvent(kind, agreement_id, f"0x{block:032x}{log:032x}", log, block, f"0x{block:064x}", 0, contract,
                       party, counterparty, token, amount_raw, T0 + block)


LOCK = event("locked", LENDER, 1_000_500_000, counterparty=BORROWER)


def test_a_matching_lock_activates_the_agreement_with_its_dates() -> None:
    state, verdict = judge(AGREEMENT, ChainState(), LOCK, "bsc")
    funded = datetime.fromtimestamp(T0 + 10, UTC)
    assert verdict.effect == "lock" and (verdict.wallet_id, verdict.user_id) == (11, 1)
    assert state.status == "active" and state.funded_at == funded
    assert state.maturity_date == funded + timedelta(days=30)
    assert (state.escrow_address, state.escrow_tx_hash) == (ESCROW, LOCK.tx_hash)


def test_a_lock_that_does_not_match_changes_nothing_and_says_why() -> None:
    cases = {
        "amount": event("locked", LENDER, 1_000_499_999, counterparty=BORROWER),
        "not the agreement's token": event("locked", LENDER, 1_000_500_000, counterparty=BORROWER, token="0x" + "8" * 40),
        "lender": event("locked", STRANGER, 1_000_500_000, counterparty=BORROWER),
        "borrower": event("locked", LENDER, 1_000_500_000, counterparty=STRANGER),
        "no agreement 8": event("locked", LENDER, 1_000_500_000, counterparty=BORROWER, agreement_id=8),
    }
    for expected, bad in cases.items():
        agreement = None if bad.agreement_id != 7 else AGREEMENT
        state, verdict = judge(agreement, ChainState(), bad, "bsc")
        assert verdict.effect is None and state == ChainState(), expected
        assert expected.split()[0] in verdict.reason, (expected, verdict.reason)


def test_a_lock_on_another_chain_or_of_a_cancelled_agreement_is_rejected() -> None:
    assert judge(AGREEMENT, ChainState(), LOCK, "polygon")[1].effect is None
    cancelled = replace(AGREEMENT, status="cancelled")
    assert "cancelled" in judge(cancelled, ChainState(), LOCK, "bsc")[1].reason


def test_a_second_lock_is_rejected() -> None:
    state, _ = judge(AGREEMENT, ChainState(), LOCK, "bsc")
    again = event("locked", LENDER_2, 1_000_500_000, block=11, counterparty=BORROWER)
    after, verdict = judge(AGREEMENT, state, again, "bsc")
    assert verdict.effect is None and "already locked" in verdict.reason and after == state


def test_release_to_the_borrower_disburses_and_to_the_lender_completes() -> None:
    state, _ = judge(AGREEMENT, ChainState(), LOCK, "bsc")
    disbursed, verdict = judge(AGREEMENT, state, event("released", BORROWER, 1_000_500_000, block=12), "bsc")
    assert verdict.effect == "disburse" and disbursed.status == "active" and verdict.wallet_id == 21
    repay = event("released", LENDER_2, 1_050_000_000, block=20)  # any of the lender's wallets
    done, verdict = judge(AGREEMENT, disbursed, repay, "bsc")
    assert verdict.effect == "repay" and verdict.wallet_id == 12
    assert done.status == "completed" and done.repayment_amount == Decimal("1050")
    assert done.settled_at == datetime.fromtimestamp(T0 + 20, UTC) and done.repay_tx_hash == repay.tx_hash


def test_a_release_before_a_lock_to_a_stranger_or_from_another_contract_is_rejected() -> None:
    assert "not active" in judge(AGREEMENT, ChainState(), event("released", LENDER, 1), "bsc")[1].reason
    state, _ = judge(AGREEMENT, ChainState(), LOCK, "bsc")
    assert "neither party" in judge(AGREEMENT, state, event("released", STRANGER, 1, block=12), "bsc")[1].reason
    other = event("released", LENDER, 1, block=12, contract="0x" + "f" * 40)
    assert "locked in" in judge(AGREEMENT, state, other, "bsc")[1].reason


def test_folding_what_remains_after_a_reorg_undoes_exactly_the_orphaned_events() -> None:
    lock_state, _ = judge(AGREEMENT, ChainState(), LOCK, "bsc")
    repay = event("released", LENDER, 1_050_000_000, block=20)
    assert fold(AGREEMENT, [(LOCK, "lock"), (repay, "repay")]).status == "completed"
    assert fold(AGREEMENT, [(LOCK, "lock")]) == lock_state  # the repayment orphaned: active again
    assert fold(AGREEMENT, []) == ChainState()  # the lock orphaned: pending again, no dates
    # effects are replayed, not judged again: the lender's wallet removed since does not undo history
    gone = replace(AGREEMENT, lender_wallets={})
    assert fold(gone, [(LOCK, "lock"), (repay, "repay")]).status == "completed"
