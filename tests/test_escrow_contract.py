"""The Citadel escrow contract's own tests, on anvil: its compiled artifact deployed through tests/support/escrow.py.

Every refusal is checked twice: ``eth_call`` must revert with the exact custom error, and the same transaction, mined,
must fail and change nothing (balances and the agreement are read again). The events the indexer reads are checked
as raw logs (topic0, indexed topics, data words), not through a decoder that could share a mistake with the contract.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from eth_abi.abi import decode, encode
from eth_utils.crypto import keccak

from chains.base import LOCKED_TOPIC, RELEASED_TOPIC
from citadel_devtools.anvil import Anvil
from tests.fixtures.anvil import BSC_CHAIN_ID, AnvilFactory
from tests.support import escrow as E
from tests.support import evm

ZERO = "0x" + "0" * 40
MAX_AGREEMENT_ID = 2**63 - 1
# QuirkToken.Quirk
STANDARD, NO_RETURN, FALSE_ON_SUCCESS, FALSE_NO_MOVE, SHORT_RETURN = range(5)


def word(address: str) -> str:
    return "0x" + "0" * 24 + address.lower().removeprefix("0x")


def uint_word(n: int) -> str:
    return f"0x{n:064x}"


def event_data(token: str, amount: int) -> str:
    return "0x" + encode(["address", "uint256"], [token, amount]).hex()


def err(signature: str, *args: Any) -> bytes:
    return E.error_data(signature, *args)


def assert_reverts(anvil: Anvil, sender: str, to: str, data: bytes, error: bytes) -> None:
    """``eth_call`` reverts with ``error``, and the same transaction mined has status 0."""
    assert E.revert_data(anvil, sender, to, data) == error
    receipt = evm.wait_receipt(anvil, evm.send_tx(anvil, sender, to, data, gas=E.TX_GAS))
    assert receipt["status"] == "0x0"


def escrow_call(anvil: Anvil, escrow: E.Escrow, signature: str, args: list[Any], returns: list[str]) -> Any:
    (value,) = evm.call_fn(anvil, escrow.address, signature, args, returns)
    return value


@dataclass
class Scene:
    anvil: Anvil
    escrow: E.Escrow
    token: str
    deployer: str
    lender: str
    borrower: str
    outsider: str
    other: str

    def balances(self, token: str | None = None) -> tuple[int, int, int]:
        """(lender, borrower, escrow) balances of ``token`` (the scene's TestToken by default)."""
        t = token or self.token
        return tuple(evm.token_balance(self.anvil, t, a)  # type: ignore[return-value]
                     for a in (self.lender, self.borrower, self.escrow.address))

    def held(self, token: str | None = None) -> int:
        return int(escrow_call(self.anvil, self.escrow, "held(address)", [token or self.token], ["uint256"]))

    def funded_lock(self, agreement_id: int, amount: int, token: str | None = None) -> str:
        t = token or self.token
        evm.token_mint(self.anvil, t, self.lender, self.lender, amount)
        return E.lock(self.anvil, self.escrow, agreement_id, self.lender, self.borrower, t, amount)


@pytest.fixture
def scene(anvil_bsc: Anvil) -> Scene:
    accounts = evm.accounts(anvil_bsc)
    escrow = E.deploy_escrow(anvil_bsc)
    token = evm.deploy_token(anvil_bsc, 6, "USDT")
    return Scene(anvil_bsc, escrow, token, *accounts[0:5])


def deploy_quirk_token(anvil: Anvil, for_transfer: int, for_transfer_from: int) -> str:
    token = evm.deploy(anvil, "QuirkToken")
    E.send(anvil, evm.accounts(anvil)[0], token,
           evm.calldata("setQuirks(uint8,uint8)", for_transfer, for_transfer_from))
    return token


# --- the indexer's interface -------------------------------------------------------------------------------------


def test_the_two_events_are_exactly_the_indexers_interface() -> None:
    artifact = json.loads((evm.ARTIFACTS_DIR / "CitadelEscrow.json").read_text())
    events = {e["name"]: e for e in artifact["abi"] if e["type"] == "event"}
    shape = {name: [(i["name"], i["type"], i["indexed"]) for i in events[name]["inputs"]]
             for name in ("Locked", "Released")}
    assert shape["Locked"] == [("agreementId", "uint256", True), ("lender", "address", True),
                               ("borrower", "address", True), ("token", "address", False),
                               ("amount", "uint256", False)]
    assert shape["Released"] == [("agreementId", "uint256", True), ("to", "address", True),
                                 ("token", "address", False), ("amount", "uint256", False)]
    assert not events["Locked"]["anonymous"] and not events["Released"]["anonymous"]
    # the topics the indexer filters on, the helpers' constants, and keccak of the signatures are one and the same
    locked = "0x" + keccak(text="Locked(uint256,address,address,address,uint256)").hex()
    released = "0x" + keccak(text="Released(uint256,address,address,uint256)").hex()
    assert E.LOCKED_TOPIC == LOCKED_TOPIC == locked
    assert E.RELEASED_TOPIC == RELEASED_TOPIC == released
    # no other event of the contract can be taken for one of them
    topic0s = ["0x" + keccak(text=f"{e['name']}({','.join(i['type'] for i in e['inputs'])})").hex()
               for e in events.values()]
    assert topic0s.count(LOCKED_TOPIC) == 1 and topic0s.count(RELEASED_TOPIC) == 1


# --- lock and release ----------------------------------------------------------------------------------------------


def test_lock_then_release_to_the_borrower_and_the_lender_with_exact_events(scene: Scene) -> None:
    s, a = scene, scene.anvil
    evm.token_mint(a, s.token, s.lender, s.lender, 1_000)
    E.authorize_lock(a, s.escrow, 41, s.lender, s.borrower, s.token, 1_000)
    assert E.status_of(a, s.escrow, 41) == E.STATUS_AUTHORIZED
    assert E.get_agreement(a, s.escrow, 41) == E.AgreementState(ZERO, ZERO, ZERO, 0, 0)

    lock_tx = E.lock(a, s.escrow, 41, s.lender, s.borrower, s.token, 1_000, authorize=False)
    logs = evm.wait_receipt(a, lock_tx)["logs"]
    (locked,) = E.escrow_logs(a, s.escrow, lock_tx)
    assert locked["topics"] == [LOCKED_TOPIC, uint_word(41), word(s.lender), word(s.borrower)]
    assert locked["data"] == event_data(s.token, 1_000)
    assert E.decode_locked(locked) == E.LockedEvent(41, s.lender, s.borrower, s.token, 1_000)
    # the token moved in the same transaction, before the event
    (pulled,) = [log for log in logs if log["address"] == s.token]
    assert pulled["topics"] == [evm.TRANSFER_TOPIC, word(s.lender), word(s.escrow.address)]
    assert int(pulled["data"], 16) == 1_000 and int(pulled["logIndex"], 16) < int(locked["logIndex"], 16)
    assert s.balances() == (0, 0, 1_000) and s.held() == 1_000
    assert E.status_of(a, s.escrow, 41) == E.STATUS_LOCKED
    assert E.get_agreement(a, s.escrow, 41) == E.AgreementState(s.lender, s.borrower, s.token, 1_000, 0)

    disburse_tx = E.release(a, s.escrow, 41, s.borrower, 300)  # partial: a disbursement
    (released,) = E.escrow_logs(a, s.escrow, disburse_tx)
    assert released["topics"] == [RELEASED_TOPIC, uint_word(41), word(s.borrower)]
    assert released["data"] == event_data(s.token, 300)
    assert E.decode_released(released) == E.ReleasedEvent(41, s.borrower, s.token, 300)
    assert s.balances() == (0, 300, 700) and s.held() == 700
    assert E.get_agreement(a, s.escrow, 41).remaining == 700

    repay_tx = E.release(a, s.escrow, 41, s.lender, 700)  # the rest, to the lender
    (released,) = E.escrow_logs(a, s.escrow, repay_tx)
    assert released["topics"] == [RELEASED_TOPIC, uint_word(41), word(s.lender)]
    assert released["data"] == event_data(s.token, 700)
    assert s.balances() == (700, 300, 0) and s.held() == 0
    assert E.get_agreement(a, s.escrow, 41) == E.AgreementState(s.lender, s.borrower, s.token, 1_000, 1_000)
    assert E.status_of(a, s.escrow, 41) == E.STATUS_LOCKED  # locked once, ever: it stays so when emptied


def test_releases_to_the_lender_may_be_partial_and_follow_each_other(scene: Scene) -> None:
    s, a = scene, scene.anvil
    s.funded_lock(42, 900)
    amounts = [(s.lender, 100), (s.borrower, 500), (s.lender, 250), (s.lender, 50)]
    events = [E.decode_released(log) for to, amount in amounts
              for log in E.escrow_logs(a, s.escrow, E.release(a, s.escrow, 42, to, amount))]
    assert events == [E.ReleasedEvent(42, to, s.token, amount) for to, amount in amounts]
    assert s.balances() == (400, 500, 0)
    assert_reverts(a, s.escrow.signer, s.escrow.address, E.release_data(42, s.lender, 1),
                   err("ExceedsRemaining(uint256,uint256,uint256)", 42, 1, 0))


def test_an_agreement_id_is_locked_once_ever(scene: Scene) -> None:
    s, a = scene, scene.anvil
    s.funded_lock(43, 500)
    evm.token_mint(a, s.token, s.lender, s.lender, 500)
    E.send(a, s.lender, s.token, E.approve_data(s.escrow.address, 500))
    already = err("AlreadyLocked(uint256)", 43)
    assert_reverts(a, s.lender, s.escrow.address, E.lock_data(43, s.borrower, s.token, 500), already)
    assert_reverts(a, s.escrow.signer, s.escrow.address,
                   E.authorize_lock_data(43, s.lender, s.borrower, s.token, 500), already)
    assert_reverts(a, s.escrow.signer, s.escrow.address,
                   E.authorize_lock_data(43, s.other, s.outsider, s.token, 5), already)
    assert_reverts(a, s.escrow.signer, s.escrow.address,
                   evm.calldata("revokeLockAuthorization(uint256)", 43), already)
    # emptied, it is still locked
    E.release(a, s.escrow, 43, s.lender, 500)
    assert_reverts(a, s.lender, s.escrow.address, E.lock_data(43, s.borrower, s.token, 500), already)
    assert_reverts(a, s.escrow.signer, s.escrow.address,
                   E.authorize_lock_data(43, s.lender, s.borrower, s.token, 500), already)
    assert s.balances() == (1_000, 0, 0) and s.held() == 0
    assert E.get_agreement(a, s.escrow, 43) == E.AgreementState(s.lender, s.borrower, s.token, 500, 500)


def test_only_the_authorised_lender_can_lock_and_only_the_authorised_terms(scene: Scene) -> None:
    """Nobody can take an agreement id before its lender (ids are sequential): a lock needs the terms a signer
    fixed, and the lender it named."""
    s, a = scene, scene.anvil
    for account in (s.lender, s.outsider):
        evm.token_mint(a, s.token, account, account, 1_000)
        E.send(a, account, s.token, E.approve_data(s.escrow.address, 1_000))
    escrow = s.escrow.address
    assert_reverts(a, s.outsider, escrow, E.lock_data(44, s.borrower, s.token, 1_000),
                   err("LockNotAuthorized(uint256)", 44))
    E.authorize_lock(a, s.escrow, 44, s.lender, s.borrower, s.token, 1_000)
    assert_reverts(a, s.outsider, escrow, E.lock_data(44, s.borrower, s.token, 1_000),
                   err("NotLender(uint256,address)", 44, s.outsider))
    mismatch = err("TermsMismatch(uint256)", 44)
    other_token = evm.deploy_token(a, 6)
    for borrower, token, amount in [(s.outsider, s.token, 1_000), (s.borrower, other_token, 1_000),
                                    (s.borrower, s.token, 999), (s.borrower, s.token, 1_001),
                                    (s.borrower, s.token, 0), (ZERO, s.token, 1_000)]:
        assert_reverts(a, s.lender, escrow, E.lock_data(44, borrower, token, amount), mismatch)
    # terms replaced before the lock: only the new ones lock
    E.authorize_lock(a, s.escrow, 44, s.lender, s.borrower, s.token, 600)
    assert evm.call_fn(a, escrow, "lockAuthorization(uint256)", [44], ["address", "address", "address", "uint256"]) \
        == (s.lender, s.borrower, s.token, 600)
    assert_reverts(a, s.lender, escrow, E.lock_data(44, s.borrower, s.token, 1_000), mismatch)
    # revoked: nothing to lock
    revoke = E.send(a, s.escrow.signer, escrow, evm.calldata("revokeLockAuthorization(uint256)", 44))
    (log,) = E.escrow_logs(a, s.escrow, revoke)
    assert log["topics"][1:] == [uint_word(44), word(s.escrow.signer)]
    assert E.status_of(a, s.escrow, 44) == E.STATUS_NONE
    assert_reverts(a, s.lender, escrow, E.lock_data(44, s.borrower, s.token, 600),
                   err("LockNotAuthorized(uint256)", 44))
    assert_reverts(a, s.escrow.signer, escrow, evm.calldata("revokeLockAuthorization(uint256)", 44),
                   err("LockNotAuthorized(uint256)", 44))
    assert s.balances() == (1_000, 0, 0) and evm.token_balance(a, s.token, s.outsider) == 1_000
    # authorised again, the lender locks it
    E.authorize_lock(a, s.escrow, 44, s.lender, s.borrower, s.token, 600)
    E.lock(a, s.escrow, 44, s.lender, s.borrower, s.token, 600, authorize=False, approve=False)
    assert s.balances() == (400, 0, 600)


def test_authorize_lock_refuses_bad_terms(scene: Scene) -> None:
    s, a = scene, scene.anvil
    signer, escrow = s.escrow.signer, s.escrow.address

    def refused(agreement: int, lender: str, borrower: str, token: str, amount: int, error: bytes,
                sender: str = signer) -> None:
        assert_reverts(a, sender, escrow, E.authorize_lock_data(agreement, lender, borrower, token, amount), error)
        assert E.status_of(a, s.escrow, agreement) == E.STATUS_NONE

    refused(45, s.lender, s.borrower, s.token, 1, err("NotSigner(address)", s.lender), sender=s.lender)
    refused(45, s.lender, s.borrower, s.token, 1, err("NotSigner(address)", s.escrow.owner),
            sender=s.escrow.owner)
    refused(0, s.lender, s.borrower, s.token, 1, err("InvalidAgreementId(uint256)", 0))
    refused(MAX_AGREEMENT_ID + 1, s.lender, s.borrower, s.token, 1,
            err("InvalidAgreementId(uint256)", MAX_AGREEMENT_ID + 1))
    refused(45, ZERO, s.borrower, s.token, 1, err("ZeroAddress()"))
    refused(45, s.lender, ZERO, s.token, 1, err("ZeroAddress()"))
    refused(45, s.lender, s.borrower, ZERO, 1, err("ZeroAddress()"))
    refused(45, s.lender, s.lender, s.token, 1, err("SameParty(address)", s.lender))
    refused(45, s.lender, escrow, s.token, 1, err("EscrowAsParty()"))
    refused(45, escrow, s.borrower, s.token, 1, err("EscrowAsParty()"))
    refused(45, s.lender, s.borrower, s.token, 0, err("ZeroAmount()"))
    refused(45, s.lender, s.borrower, s.outsider, 1, err("NotAContract(address)", s.outsider))
    # the largest BIGINT is a valid id; the event names the terms and the signer
    tx = E.authorize_lock(a, s.escrow, MAX_AGREEMENT_ID, s.lender, s.borrower, s.token, 7)
    (log,) = E.escrow_logs(a, s.escrow, tx)
    topic0 = "0x" + keccak(text="LockAuthorized(uint256,address,address,address,uint256,address)").hex()
    assert log["topics"] == [topic0, uint_word(MAX_AGREEMENT_ID), word(s.lender), word(s.borrower)]
    assert log["data"] == "0x" + encode(["address", "uint256", "address"], [s.token, 7, signer]).hex()
    assert E.status_of(a, s.escrow, MAX_AGREEMENT_ID) == E.STATUS_AUTHORIZED


def test_release_refusals_change_nothing(scene: Scene) -> None:
    s, a = scene, scene.anvil
    s.funded_lock(46, 1_000)
    escrow, signer = s.escrow.address, s.escrow.signer
    E.authorize_lock(a, s.escrow, 47, s.lender, s.borrower, s.token, 1_000)  # authorised, never locked
    before = s.balances(), E.get_agreement(a, s.escrow, 46)

    for caller in (s.lender, s.borrower, s.escrow.owner, s.outsider):  # only a signer releases
        assert_reverts(a, caller, escrow, E.release_data(46, caller, 1), err("NotSigner(address)", caller))
    for to in (s.outsider, signer, s.escrow.owner, escrow, ZERO):  # only to the agreement's parties
        assert_reverts(a, signer, escrow, E.release_data(46, to, 1), err("NotAParty(uint256,address)", 46, to))
    assert_reverts(a, signer, escrow, E.release_data(46, s.borrower, 1_001),
                   err("ExceedsRemaining(uint256,uint256,uint256)", 46, 1_001, 1_000))
    assert_reverts(a, signer, escrow, E.release_data(46, s.borrower, 0), err("ZeroAmount()"))
    for agreement in (47, 48):  # authorised only, unknown
        assert_reverts(a, signer, escrow, E.release_data(agreement, s.borrower, 1),
                       err("NotLocked(uint256)", agreement))
    assert (s.balances(), E.get_agreement(a, s.escrow, 46)) == before

    # after a partial release, the bound is what remains, not what was locked
    E.release(a, s.escrow, 46, s.borrower, 600)
    assert_reverts(a, signer, escrow, E.release_data(46, s.lender, 401),
                   err("ExceedsRemaining(uint256,uint256,uint256)", 46, 401, 400))
    # another agreement's funds in the same token do not count as this one's
    s.funded_lock(49, 5_000)
    assert_reverts(a, signer, escrow, E.release_data(46, s.lender, 401),
                   err("ExceedsRemaining(uint256,uint256,uint256)", 46, 401, 400))
    assert s.balances() == (0, 600, 5_400) and s.held() == 5_400


# --- tokens --------------------------------------------------------------------------------------------------------


def test_a_token_that_returns_no_bool_works(scene: Scene) -> None:
    """USDT on Ethereum: transfer and transferFrom return no data at all."""
    s, a = scene, scene.anvil
    token = deploy_quirk_token(a, NO_RETURN, NO_RETURN)
    assert E.revert_data(a, s.lender, token, evm.calldata("transfer(address,uint256)", s.borrower, 0)) is None
    assert evm.call(a, token, evm.calldata("transfer(address,uint256)", s.borrower, 0)) == b""  # truly no data
    lock_tx = s.funded_lock(50, 2_000, token)
    assert [E.decode_locked(log) for log in E.escrow_logs(a, s.escrow, lock_tx)] == \
        [E.LockedEvent(50, s.lender, s.borrower, token, 2_000)]
    for to, amount in [(s.borrower, 1_500), (s.lender, 500)]:
        tx = E.release(a, s.escrow, 50, to, amount)
        assert [E.decode_released(log) for log in E.escrow_logs(a, s.escrow, tx)] == \
            [E.ReleasedEvent(50, to, token, amount)]
    assert s.balances(token) == (500, 1_500, 0)


@pytest.mark.parametrize(("quirk", "error"), [
    (STANDARD, None),
    (NO_RETURN, None),
    (FALSE_ON_SUCCESS, "TokenCallFailed(address)"),
    (FALSE_NO_MOVE, "TokenCallFailed(address)"),
    (SHORT_RETURN, "TokenCallFailed(address)"),
])
def test_lock_accepts_true_or_no_data_and_nothing_else(scene: Scene, quirk: int, error: str | None) -> None:
    s, a = scene, scene.anvil
    token = deploy_quirk_token(a, STANDARD, quirk)
    evm.token_mint(a, token, s.lender, s.lender, 300)
    E.authorize_lock(a, s.escrow, 51, s.lender, s.borrower, token, 300)
    E.send(a, s.lender, token, E.approve_data(s.escrow.address, 300))
    data = E.lock_data(51, s.borrower, token, 300)
    if error is None:
        E.send(a, s.lender, s.escrow.address, data)
        assert s.balances(token) == (0, 0, 300) and E.status_of(a, s.escrow, 51) == E.STATUS_LOCKED
    else:
        assert_reverts(a, s.lender, s.escrow.address, data, err(error, token))
        assert s.balances(token) == (300, 0, 0) and E.status_of(a, s.escrow, 51) == E.STATUS_AUTHORIZED


def test_a_token_answering_false_on_success_is_released_once_the_owner_lists_it(scene: Scene) -> None:
    """USDT on Tron: its transfer returns false although it moved the tokens. Refused until the owner lists the
    token; listed, its releases go through, still checked against the escrow's balance."""
    s, a = scene, scene.anvil
    token = deploy_quirk_token(a, FALSE_ON_SUCCESS, STANDARD)
    s.funded_lock(52, 800, token)
    data = E.release_data(52, s.borrower, 300)
    assert_reverts(a, s.escrow.signer, s.escrow.address, data, err("TokenCallFailed(address)", token))

    listing = evm.calldata("setFalseReturnAccepted(address,bool)", token, True)
    assert_reverts(a, s.escrow.signer, s.escrow.address, listing, err("NotOwner(address)", s.escrow.signer))
    tx = E.send(a, s.escrow.owner, s.escrow.address, listing)
    (log,) = E.escrow_logs(a, s.escrow, tx)
    assert log["topics"] == ["0x" + keccak(text="FalseReturnAcceptedSet(address,bool)").hex(), word(token)]
    assert int(log["data"], 16) == 1
    assert escrow_call(a, s.escrow, "falseReturnAccepted(address)", [token], ["bool"]) is True

    tx = E.release(a, s.escrow, 52, s.borrower, 300)
    assert [E.decode_released(log) for log in E.escrow_logs(a, s.escrow, tx)] == \
        [E.ReleasedEvent(52, s.borrower, token, 300)]
    assert s.balances(token) == (0, 300, 500)

    # listed, a false that moved nothing is still a failure: the escrow's balance did not fall
    E.send(a, s.lender, token, evm.calldata("setQuirks(uint8,uint8)", FALSE_NO_MOVE, STANDARD))
    assert_reverts(a, s.escrow.signer, s.escrow.address, E.release_data(52, s.lender, 500),
                   err("BalanceMismatch(address,uint256,uint256)", token, 500, 0))
    # and an answer that is no bool at all, too
    E.send(a, s.lender, token, evm.calldata("setQuirks(uint8,uint8)", SHORT_RETURN, STANDARD))
    assert_reverts(a, s.escrow.signer, s.escrow.address, E.release_data(52, s.lender, 500),
                   err("TokenCallFailed(address)", token))
    # unlisted again: refused again
    E.send(a, s.escrow.owner, s.escrow.address, evm.calldata("setFalseReturnAccepted(address,bool)", token, False))
    E.send(a, s.lender, token, evm.calldata("setQuirks(uint8,uint8)", FALSE_ON_SUCCESS, STANDARD))
    assert_reverts(a, s.escrow.signer, s.escrow.address, E.release_data(52, s.lender, 500),
                   err("TokenCallFailed(address)", token))
    assert s.balances(token) == (0, 300, 500) and E.get_agreement(a, s.escrow, 52).remaining == 500


def test_a_fee_on_transfer_token_cannot_be_locked(scene: Scene) -> None:
    s, a = scene, scene.anvil
    token = evm.deploy(a, "FeeToken")
    E.send(a, s.lender, token, evm.calldata("setFee(uint256,bool)", 100, False))  # 1 % off what arrives
    evm.token_mint(a, token, s.lender, s.lender, 10_000)
    E.authorize_lock(a, s.escrow, 53, s.lender, s.borrower, token, 10_000)
    E.send(a, s.lender, token, E.approve_data(s.escrow.address, 10_000))
    assert_reverts(a, s.lender, s.escrow.address, E.lock_data(53, s.borrower, token, 10_000),
                   err("BalanceMismatch(address,uint256,uint256)", token, 10_000, 9_900))
    assert s.balances(token) == (10_000, 0, 0) and s.held(token) == 0
    assert E.status_of(a, s.escrow, 53) == E.STATUS_AUTHORIZED

    # a fee the lender pays on top leaves the escrow holding exactly the amount: Locked says what it holds
    E.send(a, s.lender, token, evm.calldata("setFee(uint256,bool)", 100, True))
    tx = E.lock(a, s.escrow, 53, s.lender, s.borrower, token, 9_900, approve=False)
    assert [E.decode_locked(log) for log in E.escrow_logs(a, s.escrow, tx)] == \
        [E.LockedEvent(53, s.lender, s.borrower, token, 9_900)]
    assert s.balances(token) == (1, 0, 9_900) and s.held(token) == 9_900


def test_a_fee_switched_on_after_the_lock(scene: Scene) -> None:
    """Released.amount is what left the escrow. A fee taken from what the recipient gets does not block a release;
    a fee taken from the escrow on top would come out of other agreements' money and is refused."""
    s, a = scene, scene.anvil
    token = evm.deploy(a, "FeeToken")
    s.funded_lock(54, 1_000, token)
    s.funded_lock(55, 1_000, token)
    E.send(a, s.lender, token, evm.calldata("setFee(uint256,bool)", 100, False))
    tx = E.release(a, s.escrow, 54, s.borrower, 1_000)
    assert [E.decode_released(log) for log in E.escrow_logs(a, s.escrow, tx)] == \
        [E.ReleasedEvent(54, s.borrower, token, 1_000)]
    assert s.balances(token) == (0, 990, 1_000) and s.held(token) == 1_000

    E.send(a, s.lender, token, evm.calldata("setFee(uint256,bool)", 100, True))
    assert_reverts(a, s.escrow.signer, s.escrow.address, E.release_data(55, s.borrower, 500),
                   err("BalanceMismatch(address,uint256,uint256)", token, 500, 505))
    assert s.balances(token) == (0, 990, 1_000) and E.get_agreement(a, s.escrow, 55).remaining == 1_000


def test_no_native_coin_is_accepted(scene: Scene) -> None:
    s, a = scene, scene.anvil
    s.funded_lock(56, 100)
    assert E.revert_data(a, s.outsider, s.escrow.address, b"") == b""  # no receive, no fallback
    receipt = evm.wait_receipt(a, evm.send_tx(a, s.outsider, s.escrow.address, value=10**18, gas=100_000))
    assert receipt["status"] == "0x0"
    # no function is payable
    evm.token_mint(a, s.token, s.lender, s.lender, 100)
    E.authorize_lock(a, s.escrow, 57, s.lender, s.borrower, s.token, 100)
    E.send(a, s.lender, s.token, E.approve_data(s.escrow.address, 100))
    for sender, data in [(s.lender, E.lock_data(57, s.borrower, s.token, 100)),
                         (s.escrow.signer, E.release_data(56, s.borrower, 100))]:
        receipt = evm.wait_receipt(a, evm.send_tx(a, sender, s.escrow.address, data, value=1, gas=E.TX_GAS))
        assert receipt["status"] == "0x0"
    assert evm.native_balance(a, s.escrow.address) == 0
    assert E.status_of(a, s.escrow, 57) == E.STATUS_AUTHORIZED and s.balances() == (100, 0, 100)


def test_the_owner_recovers_only_what_no_agreement_holds(scene: Scene) -> None:
    s, a = scene, scene.anvil
    s.funded_lock(58, 1_000)
    recover = evm.calldata("recoverSurplus(address,address)", s.token, s.other)
    assert_reverts(a, s.escrow.owner, s.escrow.address, recover, err("NoSurplus(address)", s.token))
    evm.token_mint(a, s.token, s.outsider, s.outsider, 55)
    evm.token_transfer(a, s.token, s.outsider, s.escrow.address, 55)  # sent directly, by mistake
    for caller in (s.escrow.signer, s.lender):
        assert_reverts(a, caller, s.escrow.address, recover, err("NotOwner(address)", caller))
    assert_reverts(a, s.escrow.owner, s.escrow.address,
                   evm.calldata("recoverSurplus(address,address)", s.token, ZERO), err("ZeroAddress()"))
    tx = E.send(a, s.escrow.owner, s.escrow.address, recover)
    (log,) = E.escrow_logs(a, s.escrow, tx)
    assert log["topics"] == ["0x" + keccak(text="SurplusRecovered(address,address,uint256)").hex(),
                             word(s.token), word(s.other)]
    assert int(log["data"], 16) == 55
    assert evm.token_balance(a, s.token, s.other) == 55 and s.balances() == (0, 0, 1_000)
    assert_reverts(a, s.escrow.owner, s.escrow.address, recover, err("NoSurplus(address)", s.token))
    E.release(a, s.escrow, 58, s.borrower, 1_000)  # the agreement's money was all there
    assert s.balances() == (0, 1_000, 0)


# --- re-entrancy ---------------------------------------------------------------------------------------------------


@dataclass
class ReentryScene:
    """The escrow's owner and second signer is the re-entering token itself, and it is the lender of agreement 61:
    every call it makes back into the escrow would pass the escrow's other checks. Agreement 60 is the lender's."""

    s: Scene
    escrow: E.Escrow
    token: str

    def call_out(self, target: str, data: bytes) -> str:
        return E.send(self.s.anvil, self.s.deployer, self.token, evm.calldata("callOut(address,bytes)", target, data))

    def arm(self, data: bytes) -> None:
        E.send(self.s.anvil, self.s.deployer, self.token,
               evm.calldata("arm(address,bytes)", self.escrow.address, data))

    def reentered(self, tx_hash: str) -> list[tuple[bool, bytes]]:
        topic = "0x" + keccak(text="Reentered(bool,bytes)").hex()
        return [tuple(decode(["bool", "bytes"], bytes.fromhex(log["data"][2:])))  # type: ignore[misc]
                for log in evm.wait_receipt(self.s.anvil, tx_hash)["logs"] if log["topics"][0] == topic]


SURPLUS = 77


@pytest.fixture
def reentry(scene: Scene) -> ReentryScene:
    a = scene.anvil
    token = evm.deploy(a, "ReentrantToken")
    escrow = E.deploy_escrow(a, owner=token)
    r = ReentryScene(scene, escrow, token)
    r.call_out(escrow.address, evm.calldata("addSigner(address)", token))
    evm.token_mint(a, token, scene.lender, scene.lender, 1_000)
    E.authorize_lock(a, escrow, 60, scene.lender, scene.borrower, token, 1_000)
    E.send(a, scene.lender, token, E.approve_data(escrow.address, 1_000))
    evm.token_mint(a, token, scene.deployer, token, 500)
    E.authorize_lock(a, escrow, 61, token, scene.borrower, token, 500)
    r.call_out(token, E.approve_data(escrow.address, 500))
    evm.token_mint(a, token, scene.outsider, escrow.address, SURPLUS)  # for recoverSurplus
    return r


REENTRANT_CALLS: dict[str, Callable[[ReentryScene], bytes]] = {
    "lock": lambda r: E.lock_data(61, r.s.borrower, r.token, 500),
    "release": lambda r: E.release_data(60, r.s.borrower, 100),
    "recoverSurplus": lambda r: evm.calldata("recoverSurplus(address,address)", r.token, r.s.other),
}


@pytest.mark.parametrize(("outer", "inner"), [
    ("lock", "lock"), ("lock", "release"), ("lock", "recoverSurplus"),
    ("release", "release"), ("release", "lock"), ("release", "recoverSurplus"),
])
def test_a_token_that_calls_back_into_the_escrow_is_stopped_by_the_guard(
        reentry: ReentryScene, outer: str, inner: str) -> None:
    r, s, a = reentry, reentry.s, reentry.s.anvil
    if outer == "release":
        E.lock(a, r.escrow, 60, s.lender, s.borrower, r.token, 1_000, authorize=False, approve=False)
    inner_data = REENTRANT_CALLS[inner](r)
    r.arm(inner_data)
    if outer == "lock":
        tx = E.lock(a, r.escrow, 60, s.lender, s.borrower, r.token, 1_000, authorize=False, approve=False)
    else:
        tx = E.release(a, r.escrow, 60, s.borrower, 400)
    # the outer call went through; the call back failed on the guard and nothing else
    assert r.reentered(tx) == [(False, err("Reentrancy()"))]
    outer_events = E.escrow_logs(a, r.escrow, tx)
    assert [log["topics"][0] for log in outer_events] == [LOCKED_TOPIC if outer == "lock" else RELEASED_TOPIC]

    # the very same call, made outside a transfer, succeeds: the guard was the only thing in its way
    after = r.call_out(r.escrow.address, inner_data)
    topics = [log["topics"][0] for log in E.escrow_logs(a, r.escrow, after)]
    expected = {"lock": LOCKED_TOPIC, "release": RELEASED_TOPIC,
                "recoverSurplus": "0x" + keccak(text="SurplusRecovered(address,address,uint256)").hex()}[inner]
    assert topics == [expected]

    # and the books still balance: the escrow holds what its agreements have left, plus the surplus unless it went
    held = sum(E.get_agreement(a, r.escrow, i).remaining for i in (60, 61))
    assert int(escrow_call(a, r.escrow, "held(address)", [r.token], ["uint256"])) == held
    surplus = 0 if inner == "recoverSurplus" else SURPLUS
    assert evm.token_balance(a, r.token, r.escrow.address) == held + surplus
    assert evm.token_balance(a, r.token, r.s.other) == SURPLUS - surplus


# --- authority -----------------------------------------------------------------------------------------------------


def test_deployment_sets_the_owner_and_the_first_signer(scene: Scene) -> None:
    s, a = scene, scene.anvil
    assert escrow_call(a, s.escrow, "owner()", [], ["address"]) == s.escrow.owner
    assert escrow_call(a, s.escrow, "pendingOwner()", [], ["address"]) == ZERO
    assert escrow_call(a, s.escrow, "isSigner(address)", [s.escrow.signer], ["bool"]) is True
    assert escrow_call(a, s.escrow, "isSigner(address)", [s.escrow.owner], ["bool"]) is False
    assert escrow_call(a, s.escrow, "signerCount()", [], ["uint256"]) == 1
    block = evm.block_number(a)
    logs = evm.get_logs(a, 0, block, address=s.escrow.address)
    assert [log["topics"] for log in logs] == [
        ["0x" + keccak(text="OwnershipTransferred(address,address)").hex(), word(ZERO), word(s.escrow.owner)],
        ["0x" + keccak(text="SignerAdded(address)").hex(), word(s.escrow.signer)],
    ]
    for owner, signer in [(ZERO, s.other), (s.other, ZERO)]:
        with pytest.raises(RuntimeError, match="deploying CitadelEscrow failed"):
            E.deploy_escrow(a, owner=owner, signer=signer)


def test_ownership_moves_in_two_steps(scene: Scene) -> None:
    s, a = scene, scene.anvil
    escrow, old, new = s.escrow.address, s.escrow.owner, s.other
    started = "0x" + keccak(text="OwnershipTransferStarted(address,address)").hex()
    transferred = "0x" + keccak(text="OwnershipTransferred(address,address)").hex()
    add_signer = evm.calldata("addSigner(address)", s.outsider)

    assert_reverts(a, new, escrow, evm.calldata("transferOwnership(address)", new), err("NotOwner(address)", new))
    tx = E.send(a, old, escrow, evm.calldata("transferOwnership(address)", new))
    assert [log["topics"] for log in E.escrow_logs(a, s.escrow, tx)] == [[started, word(old), word(new)]]
    assert escrow_call(a, s.escrow, "pendingOwner()", [], ["address"]) == new
    # named, not yet owner: the old owner still rules, the new one cannot
    assert escrow_call(a, s.escrow, "owner()", [], ["address"]) == old
    assert_reverts(a, new, escrow, add_signer, err("NotOwner(address)", new))
    for caller in (s.outsider, s.escrow.signer, old):
        assert_reverts(a, caller, escrow, evm.calldata("acceptOwnership()"), err("NotPendingOwner(address)", caller))

    tx = E.send(a, new, escrow, evm.calldata("acceptOwnership()"))
    assert [log["topics"] for log in E.escrow_logs(a, s.escrow, tx)] == [[transferred, word(old), word(new)]]
    assert escrow_call(a, s.escrow, "owner()", [], ["address"]) == new
    assert escrow_call(a, s.escrow, "pendingOwner()", [], ["address"]) == ZERO
    assert_reverts(a, old, escrow, add_signer, err("NotOwner(address)", old))
    assert_reverts(a, new, escrow, evm.calldata("acceptOwnership()"), err("NotPendingOwner(address)", new))
    E.send(a, new, escrow, add_signer)

    # a transfer named by mistake is cancelled by naming nobody
    E.send(a, new, escrow, evm.calldata("transferOwnership(address)", s.outsider))
    E.send(a, new, escrow, evm.calldata("transferOwnership(address)", ZERO))
    assert_reverts(a, s.outsider, escrow, evm.calldata("acceptOwnership()"),
                   err("NotPendingOwner(address)", s.outsider))
    assert escrow_call(a, s.escrow, "owner()", [], ["address"]) == new


def test_signers_are_added_and_removed_by_the_owner_only(scene: Scene) -> None:
    s, a = scene, scene.anvil
    escrow, owner, first, second = s.escrow.address, s.escrow.owner, s.escrow.signer, s.other
    s.funded_lock(62, 900)

    def count() -> int:
        return int(escrow_call(a, s.escrow, "signerCount()", [], ["uint256"]))

    for caller in (first, s.lender):
        assert_reverts(a, caller, escrow, evm.calldata("addSigner(address)", second),
                       err("NotOwner(address)", caller))
        assert_reverts(a, caller, escrow, evm.calldata("removeSigner(address)", first),
                       err("NotOwner(address)", caller))
    assert_reverts(a, owner, escrow, evm.calldata("addSigner(address)", ZERO), err("ZeroAddress()"))
    assert_reverts(a, owner, escrow, evm.calldata("addSigner(address)", first), err("AlreadySigner(address)", first))
    assert_reverts(a, owner, escrow, evm.calldata("removeSigner(address)", second),
                   err("UnknownSigner(address)", second))
    assert_reverts(a, second, escrow, E.release_data(62, s.borrower, 100), err("NotSigner(address)", second))

    tx = E.send(a, owner, escrow, evm.calldata("addSigner(address)", second))
    assert [log["topics"] for log in E.escrow_logs(a, s.escrow, tx)] == \
        [["0x" + keccak(text="SignerAdded(address)").hex(), word(second)]]
    assert count() == 2
    E.release(a, s.escrow, 62, s.borrower, 100, signer=second)

    tx = E.send(a, owner, escrow, evm.calldata("removeSigner(address)", first))
    assert [log["topics"] for log in E.escrow_logs(a, s.escrow, tx)] == \
        [["0x" + keccak(text="SignerRemoved(address)").hex(), word(first)]]
    assert count() == 1
    assert_reverts(a, first, escrow, E.release_data(62, s.borrower, 100), err("NotSigner(address)", first))
    assert_reverts(a, first, escrow, E.authorize_lock_data(63, s.lender, s.borrower, s.token, 1),
                   err("NotSigner(address)", first))
    E.release(a, s.escrow, 62, s.lender, 800, signer=second)

    # the last signer may go: releases wait for a new one, the agreement's books are untouched
    E.send(a, owner, escrow, evm.calldata("removeSigner(address)", second))
    assert count() == 0
    assert_reverts(a, second, escrow, E.release_data(62, s.lender, 1), err("NotSigner(address)", second))
    assert s.balances() == (800, 100, 0)


# --- the helpers, with automine off --------------------------------------------------------------------------------


def test_helpers_work_with_automine_off(anvil_factory: AnvilFactory) -> None:
    """A test that mines by hand can lock and release with the helpers: each transaction carries its own gas limit,
    so nothing is estimated against a state that is not mined yet."""
    anvil = anvil_factory(BSC_CHAIN_ID)
    _, lender, borrower = evm.accounts(anvil)[:3]
    escrow = E.deploy_escrow(anvil)
    token = evm.deploy_token(anvil, 18)
    evm.token_mint(anvil, token, lender, lender, 5)
    evm.set_automine(anvil, False)
    try:
        hashes = [*lock_hashes(anvil, escrow, lender, borrower, token)]
        evm.mine(anvil)
        lock_tx = hashes[-1]
        assert [evm.wait_receipt(anvil, h)["status"] for h in hashes] == ["0x1"] * len(hashes)
        release_tx = E.release(anvil, escrow, 70, borrower, 5)
        evm.mine(anvil)
        assert evm.wait_receipt(anvil, release_tx)["status"] == "0x1"
    finally:
        evm.set_automine(anvil, True)
    assert [E.decode_locked(log) for log in E.escrow_logs(anvil, escrow, lock_tx)] == \
        [E.LockedEvent(70, lender, borrower, token, 5)]
    assert evm.token_balance(anvil, token, borrower) == 5


def lock_hashes(anvil: Anvil, escrow: E.Escrow, lender: str, borrower: str, token: str) -> list[str]:
    return [E.authorize_lock(anvil, escrow, 70, lender, borrower, token, 5),
            E.send(anvil, lender, token, E.approve_data(escrow.address, 5)),
            E.lock(anvil, escrow, 70, lender, borrower, token, 5, authorize=False, approve=False)]
