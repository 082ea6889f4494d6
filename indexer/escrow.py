"""P2P agreements from what the escrow contract says on chain. Pure, no I/O: the store calls it inside the
transaction that records the events, so an agreement and its events never disagree.

An agreement's chain-derived state is a fold of its **applied** escrow events in chain order, from ``pending``::

    pending ──Locked (right parties, token, amount)──▶ active ──Released to the lender──▶ completed
                                                       active ──Released to the borrower──▶ active (disbursed)

New events are judged once, in chain order, on top of the state the earlier applied events give (:func:`judge`);
the verdict is recorded with the event and never changes while the event stays on the canonical chain. A reorg that
orphans events removes them, and the agreement's state is folded again from the events that remain
(:func:`fold`): exactly what they had done is undone (an agreement goes back to ``pending`` or ``active``).

An event is rejected — it changes no agreement, is recorded in ``audit_trail`` and counted — when its agreement is
unknown, on another chain, cancelled, or in the wrong state, or when a party, the token or the amount does not
match: ``Locked`` needs the lender and the borrower to be wallets of the agreement's two users on its chain, the
agreement's token, and exactly ``principal_amount`` in the token's decimals; ``Released`` goes to one of the two
parties, in the agreement's token.

The platform owns ``disputed`` and ``cancelled``: the indexer never writes those statuses nor replaces them, but
keeps the chain-derived columns (funded_at, ...) up to date under them. A ``cancelled`` agreement accepts no event.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from chains.base import EscrowEvent
from indexer.model import scale

MANAGED_STATUSES = frozenset({"pending", "active", "completed"})
MAX_AGREEMENT_ID = 2**63 - 1  # p2p_agreements.id is a BIGINT


@dataclass(frozen=True, slots=True)
class Agreement:
    """A ``p2p_agreements`` row with what judging its events needs."""

    id: int
    chain: str | None
    lender_id: int
    borrower_id: int
    token_address: str | None
    principal_amount: Decimal
    duration_days: int
    status: str
    # the two users' wallet addresses on the agreement's chain (normalised) -> wallet id
    lender_wallets: Mapping[str, int]
    borrower_wallets: Mapping[str, int]
    token_decimals: int | None  # None: the token is not one the indexer follows


@dataclass(frozen=True, slots=True)
class ChainState:
    """The chain-derived columns of an agreement."""

    status: str = "pending"
    funded_at: datetime | None = None
    maturity_date: datetime | None = None
    escrow_address: str | None = None
    escrow_tx_hash: str | None = None
    settled_at: datetime | None = None
    repayment_amount: Decimal | None = None
    repay_tx_hash: str | None = None
    disbursed_raw: int = 0  # released to the borrower so far (not a column: for the audit trail)


@dataclass(frozen=True, slots=True)
class Verdict:
    """What an event did: its ``effect`` (``lock``, ``repay``, ``disburse``) with the wallet it concerns (the
    lender's for a lock, the recipient's for a release), or None and a reason a person can act on."""

    effect: str | None
    reason: str
    wallet_id: int | None = None
    user_id: int | None = None

    @property
    def applied(self) -> bool:
        return self.effect is not None


def when(event: EscrowEvent) -> datetime:
    if event.block_timestamp is None:
        raise ValueError("an escrow event needs its block time")
    return datetime.fromtimestamp(event.block_timestamp, UTC)


def judge(agreement: Agreement | None, state: ChainState, event: EscrowEvent, chain: str) -> tuple[ChainState, Verdict]:
    """The state after ``event`` and what it did, given the state the earlier applied events gave."""
    if agreement is None:
        return state, Verdict(None, f"no agreement {event.agreement_id}")
    if agreement.chain != chain:
        return state, Verdict(None, f"agreement {agreement.id} is on {agreement.chain or 'no chain'}, not {chain}")
    if agreement.status == "cancelled":
        return state, Verdict(None, f"agreement {agreement.id} is cancelled")
    if agreement.token_address is None or event.token != agreement.token_address:
        return state, Verdict(None, f"token {event.token} is not the agreement's token {agreement.token_address}")
    if agreement.token_decimals is None:
        return state, Verdict(None, f"token {event.token} is not one the indexer follows on {chain}")
    if event.kind == "locked":
        return _judge_lock(agreement, state, event)
    if event.kind == "released":
        return _judge_release(agreement, state, event)
    return state, Verdict(None, f"unknown escrow event {event.kind!r}")


def _judge_lock(agreement: Agreement, state: ChainState, event: EscrowEvent) -> tuple[ChainState, Verdict]:
    if state.status != "pending":
        return state, Verdict(None, f"agreement {agreement.id} is {state.status}, not pending: already locked")
    lender_wallet = agreement.lender_wallets.get(event.party)
    if lender_wallet is None:
        return state, Verdict(None, f"lender {event.party} is not a wallet of user {agreement.lender_id}")
    if event.counterparty is None or event.counterparty not in agreement.borrower_wallets:
        return state, Verdict(None, f"borrower {event.counterparty} is not a wallet of user {agreement.borrower_id}")
    assert agreement.token_decimals is not None
    locked = scale(event.amount_raw, agreement.token_decimals)
    if locked != agreement.principal_amount:
        return state, Verdict(None, f"amount {locked} locked, the agreement's principal is {agreement.principal_amount}")
    return apply(agreement, state, event, "lock"), Verdict("lock", "locked", lender_wallet, agreement.lender_id)


def _judge_release(agreement: Agreement, state: ChainState, event: EscrowEvent) -> tuple[ChainState, Verdict]:
    if state.status != "active":
        return state, Verdict(None, f"agreement {agreement.id} is {state.status}, not active: nothing to release")
    if event.contract != state.escrow_address:
        return state, Verdict(None, f"released by {event.contract}, but locked in {state.escrow_address}")
    if event.party in agreement.lender_wallets:
        return apply(agreement, state, event, "repay"), Verdict(
            "repay", "repaid to the lender", agreement.lender_wallets[event.party], agreement.lender_id)
    if event.party in agreement.borrower_wallets:
        return apply(agreement, state, event, "disburse"), Verdict(
            "disburse", "disbursed to the borrower", agreement.borrower_wallets[event.party], agreement.borrower_id)
    return state, Verdict(None, f"released to {event.party}, neither party of agreement {agreement.id}")


def apply(agreement: Agreement, state: ChainState, event: EscrowEvent, effect: str) -> ChainState:
    """The transition an applied event makes (its effect was decided by :func:`judge` when it arrived)."""
    decimals = agreement.token_decimals if agreement.token_decimals is not None else 0
    if effect == "lock":
        funded = when(event)
        return replace(state, status="active", funded_at=funded,
                       maturity_date=funded + timedelta(days=agreement.duration_days),
                       escrow_address=event.contract, escrow_tx_hash=event.tx_hash)
    if effect == "repay":
        return replace(state, status="completed", settled_at=when(event),
                       repayment_amount=scale(event.amount_raw, decimals), repay_tx_hash=event.tx_hash)
    if effect == "disburse":
        return replace(state, disbursed_raw=state.disbursed_raw + event.amount_raw)
    raise ValueError(f"unknown effect {effect!r}")


def fold(agreement: Agreement, applied: Iterable[tuple[EscrowEvent, str]]) -> ChainState:
    """The state the applied events (with the effect each had) give, in chain order: after a reorg removed some,
    exactly what the removed ones had done is undone. The effects are not judged again (the agreement's wallets may
    have changed since), only replayed."""
    state = ChainState()
    for event, effect in sorted(applied, key=lambda pair: (pair[0].block_number, pair[0].log_index)):
        state = apply(agreement, state, event, effect)
    return state


def column_values(state: ChainState) -> dict[str, object]:
    """The ``p2p_agreements`` columns the chain decides (``status`` only where the indexer manages it)."""
    return {
        "status": state.status,
        "funded_at": state.funded_at,
        "maturity_date": state.maturity_date,
        "escrow_address": state.escrow_address,
        "escrow_tx_hash": state.escrow_tx_hash,
        "settled_at": state.settled_at,
        "repayment_amount": state.repayment_amount,
        "repay_tx_hash": state.repay_tx_hash,
    }
