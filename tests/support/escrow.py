"""The Citadel escrow contract (``contracts/CitadelEscrow.sol``) on anvil: deploy it, lock and release agreements,
decode its events, read revert errors.

Typical use::

    escrow = deploy_escrow(anvil)                         # owner and signer: two of anvil's accounts
    evm.token_mint(anvil, token, lender, lender, 500)
    lock_tx = lock(anvil, escrow, agreement_id, lender, borrower, token, 500)   # authorise, approve, lock
    release_tx = release(anvil, escrow, agreement_id, borrower, 200)            # by escrow.signer

``lock`` and ``release`` send every transaction with an explicit gas limit (no estimation against a pending state,
so they also work with automine off: mine, then ``evm.wait_receipt``). Under automine a transaction that failed
raises ``EscrowTxFailed`` with its revert error; with automine off nothing is checked. For ``evm.reorg`` requests,
build the call data with ``authorize_lock_data``, ``lock_data`` and ``release_data``.

Addresses are lower-case ``0x`` hex, amounts raw integers, hashes ``0x`` hex.
"""

from __future__ import annotations

import json
import urllib.request
from dataclasses import dataclass
from typing import Any

from eth_abi.abi import encode
from eth_utils.crypto import keccak

from citadel_devtools.anvil import Anvil
from tests.support import evm

LOCKED_SIGNATURE = "Locked(uint256,address,address,address,uint256)"
RELEASED_SIGNATURE = "Released(uint256,address,address,uint256)"
LOCKED_TOPIC = "0x" + keccak(text=LOCKED_SIGNATURE).hex()
"""topic0 of ``Locked(uint256 indexed agreementId, address indexed lender, address indexed borrower, address token,
uint256 amount)``."""
RELEASED_TOPIC = "0x" + keccak(text=RELEASED_SIGNATURE).hex()
"""topic0 of ``Released(uint256 indexed agreementId, address indexed to, address token, uint256 amount)``."""

TX_GAS = 400_000  # a lock or release costs well under 200k; a failed one is cheap to mine

# CitadelEscrow.Status
STATUS_NONE, STATUS_AUTHORIZED, STATUS_LOCKED = 0, 1, 2


class EscrowTxFailed(RuntimeError):
    """A transaction the helper sent was mined with status 0."""


@dataclass(frozen=True, slots=True)
class Escrow:
    address: str
    owner: str
    signer: str


@dataclass(frozen=True, slots=True)
class AgreementState:
    """``getAgreement``: zeros unless the agreement is locked."""

    lender: str
    borrower: str
    token: str
    locked: int
    released: int

    @property
    def remaining(self) -> int:
        return self.locked - self.released


@dataclass(frozen=True, slots=True)
class LockedEvent:
    agreement_id: int
    lender: str
    borrower: str
    token: str
    amount: int


@dataclass(frozen=True, slots=True)
class ReleasedEvent:
    agreement_id: int
    to: str
    token: str
    amount: int


# --- deployment and calls ------------------------------------------------------------------------------------------


def deploy_escrow(anvil: Anvil, owner: str | None = None, signer: str | None = None,
                  deployer: str | None = None) -> Escrow:
    """Deploy ``CitadelEscrow(owner, signer)``; by default the owner is anvil's account 8 and the signer account 9
    (the deployer, account 0 by default, is neither)."""
    accounts = evm.accounts(anvil)
    owner = (owner or accounts[8]).lower()
    signer = (signer or accounts[9]).lower()
    address = evm.deploy(anvil, "CitadelEscrow", [owner, signer], sender=deployer)
    return Escrow(address, owner, signer)


def authorize_lock_data(agreement_id: int, lender: str, borrower: str, token: str, amount: int) -> bytes:
    return evm.calldata("authorizeLock(uint256,address,address,address,uint256)",
                        agreement_id, lender, borrower, token, amount)


def lock_data(agreement_id: int, borrower: str, token: str, amount: int) -> bytes:
    return evm.calldata("lock(uint256,address,address,uint256)", agreement_id, borrower, token, amount)


def release_data(agreement_id: int, to: str, amount: int) -> bytes:
    return evm.calldata("release(uint256,address,uint256)", agreement_id, to, amount)


def approve_data(spender: str, amount: int) -> bytes:
    return evm.calldata("approve(address,uint256)", spender, amount)


def send(anvil: Anvil, sender: str, to: str, data: bytes) -> str:
    """Send with ``TX_GAS``; under automine, raise ``EscrowTxFailed`` (with the revert error) if it failed."""
    tx_hash = evm.send_tx(anvil, sender, to, data, gas=TX_GAS)
    if anvil.url not in evm._MANUAL_MINING:
        receipt = evm.wait_receipt(anvil, tx_hash)
        if int(receipt["status"], 16) != 1:
            error = revert_data(anvil, sender, to, data)
            raise EscrowTxFailed(f"{tx_hash} failed: {error.hex() if error is not None else 'no revert data'}")
    return tx_hash


def authorize_lock(anvil: Anvil, escrow: Escrow, agreement_id: int, lender: str, borrower: str, token: str,
                   amount: int, signer: str | None = None) -> str:
    return send(anvil, signer or escrow.signer, escrow.address,
                authorize_lock_data(agreement_id, lender, borrower, token, amount))


def lock(anvil: Anvil, escrow: Escrow, agreement_id: int, lender: str, borrower: str, token: str, amount: int,
         *, authorize: bool = True, approve: bool = True) -> str:
    """The lender locks ``amount`` of ``token`` for ``agreement_id``; returns the lock's tx hash.

    First, unless told not to: the escrow's signer authorises the terms, and the lender approves the escrow for
    ``amount``. The lender must already hold ``amount`` (``evm.token_mint``)."""
    if authorize:
        authorize_lock(anvil, escrow, agreement_id, lender, borrower, token, amount)
    if approve:
        send(anvil, lender, token, approve_data(escrow.address, amount))
    return send(anvil, lender, escrow.address, lock_data(agreement_id, borrower, token, amount))


def release(anvil: Anvil, escrow: Escrow, agreement_id: int, to: str, amount: int, signer: str | None = None) -> str:
    """A signer (the escrow's by default) releases ``amount`` of the agreement to ``to``; returns the tx hash."""
    return send(anvil, signer or escrow.signer, escrow.address, release_data(agreement_id, to, amount))


def get_agreement(anvil: Anvil, escrow: Escrow | str, agreement_id: int) -> AgreementState:
    address = escrow.address if isinstance(escrow, Escrow) else escrow
    lender, borrower, token, locked, released = evm.call_fn(
        anvil, address, "getAgreement(uint256)", [agreement_id],
        ["address", "address", "address", "uint256", "uint256"])
    return AgreementState(str(lender).lower(), str(borrower).lower(), str(token).lower(), int(locked), int(released))


def status_of(anvil: Anvil, escrow: Escrow | str, agreement_id: int) -> int:
    address = escrow.address if isinstance(escrow, Escrow) else escrow
    return int(evm.call_fn(anvil, address, "statusOf(uint256)", [agreement_id], ["uint8"])[0])


# --- events --------------------------------------------------------------------------------------------------------


def _address_word(word: str) -> str:
    raw = word.lower().removeprefix("0x")
    if len(raw) != 64 or raw[:24] != "0" * 24:
        raise ValueError(f"not an ABI address word: {word}")
    return "0x" + raw[24:]


def _data_words(data: str, n: int) -> list[str]:
    raw = data.lower().removeprefix("0x")
    if len(raw) != 64 * n:
        raise ValueError(f"expected {n} data words, got {len(raw) / 64}")
    return [raw[i * 64:(i + 1) * 64] for i in range(n)]


def decode_locked(log: dict[str, Any]) -> LockedEvent:
    """A ``Locked`` log, checked against the event's exact shape: topic0, three indexed topics, two data words."""
    topics = log["topics"]
    if len(topics) != 4 or topics[0].lower() != LOCKED_TOPIC:
        raise ValueError(f"not a Locked log: {topics}")
    token, amount = _data_words(log["data"], 2)
    return LockedEvent(int(topics[1], 16), _address_word(topics[2]), _address_word(topics[3]),
                       _address_word(token), int(amount, 16))


def decode_released(log: dict[str, Any]) -> ReleasedEvent:
    """A ``Released`` log, checked against the event's exact shape: topic0, two indexed topics, two data words."""
    topics = log["topics"]
    if len(topics) != 3 or topics[0].lower() != RELEASED_TOPIC:
        raise ValueError(f"not a Released log: {topics}")
    token, amount = _data_words(log["data"], 2)
    return ReleasedEvent(int(topics[1], 16), _address_word(topics[2]), _address_word(token), int(amount, 16))


def escrow_logs(anvil: Anvil, escrow: Escrow | str, tx_hash: str) -> list[dict[str, Any]]:
    """The logs ``escrow`` emitted in transaction ``tx_hash`` (not those of the tokens it called)."""
    address = (escrow.address if isinstance(escrow, Escrow) else escrow).lower()
    return [log for log in evm.wait_receipt(anvil, tx_hash)["logs"] if str(log["address"]).lower() == address]


# --- revert errors -------------------------------------------------------------------------------------------------


def error_data(signature: str, *args: Any) -> bytes:
    """The revert data of custom error ``signature`` (e.g. ``"NotSigner(address)"``) with ``args``."""
    _, types = evm._split_types(signature)
    return evm.selector(signature) + encode(types, list(args))


def revert_data(anvil: Anvil, sender: str, to: str, data: bytes) -> bytes | None:
    """What ``eth_call`` of ``data`` from ``sender`` reverts with at the latest block (b"" for a bare revert), or
    None if the call succeeds."""
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_call",
                       "params": [{"from": sender, "to": to, "data": "0x" + data.hex()}, "latest"]}).encode()
    request = urllib.request.Request(anvil.url, body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        reply = json.loads(response.read())
    if "error" not in reply:
        return None
    payload = reply["error"].get("data")
    if payload is None:
        return b""
    if not isinstance(payload, str) or not payload.startswith("0x"):
        raise RuntimeError(f"eth_call: unexpected error {reply['error']}")
    return bytes.fromhex(payload[2:])
