"""Synchronous helpers for tests on anvil: deploy the contracts in ``contracts/``, send transactions, shape the chain.

Raw JSON-RPC through ``Anvil.rpc`` and eth_abi for encoding; no web3 provider. Transactions are sent with
``eth_sendTransaction`` from anvil's unlocked default accounts (``accounts(anvil)``). Under automine (the default)
a sent transaction is mined before the call returns; with automine off, call ``mine`` then ``wait_receipt``.

Addresses are returned lower-case ``0x`` hex; amounts are ints; hashes are ``0x`` hex strings.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

from eth_abi.abi import decode, encode
from eth_utils.crypto import keccak

from citadel_devtools.anvil import Anvil

REPO_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS_DIR = REPO_ROOT / "contracts" / "artifacts"

TRANSFER_TOPIC = "0x" + keccak(text="Transfer(address,address,uint256)").hex()
UINT256_MAX = 2**256 - 1

Json = dict[str, Any]


# --- encoding -------------------------------------------------------------------------------------------------


def _split_types(signature: str) -> tuple[str, list[str]]:
    """``"f(address[],uint256)"`` -> ``("f", ["address[]", "uint256"])`` (tuples are not supported)."""
    name, _, rest = signature.partition("(")
    inner = rest.rstrip(")")
    return name, [t for t in inner.split(",") if t]


def selector(signature: str) -> bytes:
    return keccak(text=signature)[:4]


def calldata(signature: str, *args: Any) -> bytes:
    """ABI call data for ``signature`` (e.g. ``"transfer(address,uint256)"``) applied to ``args``."""
    _, types = _split_types(signature)
    return selector(signature) + encode(types, list(args))


def _hex(data: bytes) -> str:
    return "0x" + data.hex()


def _qty(n: int) -> str:
    return hex(n)


# --- artifacts and deployment ---------------------------------------------------------------------------------


@cache
def load_artifact(name: str) -> Json:
    """``contracts/artifacts/<name>.json``: ``abi``, ``bytecode`` (0x hex), ``sourceSha256``, ``compiler``."""
    data: Json = json.loads((ARTIFACTS_DIR / f"{name}.json").read_text())
    return data


def deploy(anvil: Anvil, name: str, args: Sequence[Any] = (), sender: str | None = None) -> str:
    """Deploy artifact ``name`` with constructor ``args``; returns the contract address (mines under automine)."""
    artifact = load_artifact(name)
    ctor = next((e for e in artifact["abi"] if e["type"] == "constructor"), None)
    types = [i["type"] for i in ctor["inputs"]] if ctor else []
    code = bytes.fromhex(artifact["bytecode"][2:]) + encode(types, list(args))
    tx_hash = send_tx(anvil, sender or accounts(anvil)[0], None, code)
    receipt = wait_receipt(anvil, tx_hash)
    if int(receipt["status"], 16) != 1:
        raise RuntimeError(f"deploying {name} failed: {receipt}")
    return str(receipt["contractAddress"]).lower()


# --- transactions and calls -----------------------------------------------------------------------------------


def accounts(anvil: Anvil) -> list[str]:
    """anvil's 10 unlocked default accounts (lower-case)."""
    result = anvil.rpc("eth_accounts")
    assert isinstance(result, list)
    return [str(a).lower() for a in result]


def send_tx(
    anvil: Anvil, sender: str, to: str | None, data: bytes = b"", value: int = 0, gas: int | None = None
) -> str:
    """``eth_sendTransaction`` from an unlocked account; returns the tx hash. ``to=None`` creates a contract.

    Without ``gas`` anvil estimates it; when estimation fails (a call that reverts) anvil still sends the
    transaction with the block gas limit and mines it with status 0. Pass ``gas`` to keep such a failure cheap.
    """
    tx: Json = {"from": sender, "data": _hex(data), "value": _qty(value)}
    if to is not None:
        tx["to"] = to
    if gas is not None:
        tx["gas"] = _qty(gas)
    tx_hash = str(anvil.rpc("eth_sendTransaction", [tx]))
    if anvil.url not in _MANUAL_MINING:
        # anvil can answer before its block is visible to eth_blockNumber: callers that read the height next
        # (tests comparing against the chain) must see the transaction's block
        wait_receipt(anvil, tx_hash)
    return tx_hash


_MANUAL_MINING: set[str] = set()  # nodes whose automine a test switched off: their sends are mined later


def wait_receipt(anvil: Anvil, tx_hash: str, timeout_s: float = 10.0) -> Json:
    """Poll ``eth_getTransactionReceipt`` until the transaction is mined."""
    deadline = time.monotonic() + timeout_s
    while True:
        receipt = anvil.rpc("eth_getTransactionReceipt", [tx_hash])
        if isinstance(receipt, dict):
            return receipt
        if time.monotonic() > deadline:
            raise TimeoutError(f"no receipt for {tx_hash} after {timeout_s} s (automine off? call mine())")
        time.sleep(0.02)


def call(anvil: Anvil, to: str, data: bytes, block: str | int = "latest") -> bytes:
    """``eth_call``; returns the raw return data."""
    tag = block if isinstance(block, str) else _qty(block)
    result = anvil.rpc("eth_call", [{"to": to, "data": _hex(data)}, tag])
    return bytes.fromhex(str(result)[2:])


def call_fn(
    anvil: Anvil, to: str, signature: str, args: Sequence[Any], returns: Sequence[str]
) -> tuple[Any, ...]:
    """``call`` with ABI encoding: ``call_fn(a, token, "balanceOf(address)", [addr], ["uint256"])[0]``."""
    return tuple(decode(list(returns), call(anvil, to, calldata(signature, *args))))


# --- tokens and native coin -----------------------------------------------------------------------------------


def deploy_token(anvil: Anvil, decimals: int, symbol: str = "TST", sender: str | None = None) -> str:
    return deploy(anvil, "TestToken", [f"Test {symbol}", symbol, decimals], sender)


def token_mint(anvil: Anvil, token: str, sender: str, to: str, amount: int) -> str:
    return send_tx(anvil, sender, token, calldata("mint(address,uint256)", to, amount))


def token_transfer(anvil: Anvil, token: str, sender: str, to: str, amount: int) -> str:
    return send_tx(anvil, sender, token, calldata("transfer(address,uint256)", to, amount))


def token_batch_transfer(
    anvil: Anvil,
    token: str,
    sender: str,
    recipients: Sequence[str],
    amounts: Sequence[int],
    gas: int | None = None,
) -> str:
    """One transaction, one Transfer(sender, recipients[i], amounts[i]) log per recipient.

    About 25k gas per new recipient: 300 fit anvil's default 30M block gas limit, ~1000 do not.
    """
    data = calldata("batchTransfer(address[],uint256[])", list(recipients), list(amounts))
    return send_tx(anvil, sender, token, data, gas=gas)


def token_balance(anvil: Anvil, token: str, owner: str) -> int:
    return int(call_fn(anvil, token, "balanceOf(address)", [owner], ["uint256"])[0])


def token_decimals(anvil: Anvil, token: str) -> int:
    return int(call_fn(anvil, token, "decimals()", [], ["uint8"])[0])


def native_transfer(anvil: Anvil, sender: str, to: str, value: int) -> str:
    return send_tx(anvil, sender, to, value=value)


def native_balance(anvil: Anvil, address: str) -> int:
    return int(str(anvil.rpc("eth_getBalance", [address, "latest"])), 16)


# --- chain shaping --------------------------------------------------------------------------------------------


def block_number(anvil: Anvil) -> int:
    return int(str(anvil.rpc("eth_blockNumber")), 16)


def get_block(anvil: Anvil, number: int | str = "latest", full: bool = False) -> Json:
    tag = number if isinstance(number, str) else _qty(number)
    block = anvil.rpc("eth_getBlockByNumber", [tag, full])
    assert isinstance(block, dict), f"no block {number}"
    return block


def get_logs(
    anvil: Anvil, from_block: int, to_block: int, address: str | None = None, topics: list[Any] | None = None
) -> list[Json]:
    flt: Json = {"fromBlock": _qty(from_block), "toBlock": _qty(to_block)}
    if address is not None:
        flt["address"] = address
    if topics is not None:
        flt["topics"] = topics
    logs = anvil.rpc("eth_getLogs", [flt])
    assert isinstance(logs, list)
    return logs


def mine(anvil: Anvil, n: int = 1) -> None:
    anvil.rpc("anvil_mine", [_qty(n)])


def set_automine(anvil: Anvil, enabled: bool) -> None:
    """With automine off, sent transactions wait in the pool until ``mine``. Send sequentially from one account
    (nonces in order): out-of-order nonces can stay queued forever (foundry#10122)."""
    anvil.rpc("evm_setAutomine", [enabled])
    if enabled:
        _MANUAL_MINING.discard(anvil.url)
    else:
        _MANUAL_MINING.add(anvil.url)


def reorg(anvil: Anvil, depth: int, txs: Sequence[tuple[Json, int]] | None = None) -> None:
    """``anvil_reorg``: replace the last ``depth`` blocks with new ones (same height, new hashes).

    ``txs`` are ``(tx_request, block_offset)`` pairs to include in the new blocks (offset 0 = first replaced
    block); a request is ``{"from", "to", "data"?, "value"?}`` from an unlocked account. Transactions of the
    dropped blocks are gone (receipt null), not re-queued.
    """
    anvil.rpc("anvil_reorg", [depth, [[tx, offset] for tx, offset in (txs or [])]])


def snapshot(anvil: Anvil) -> str:
    return str(anvil.rpc("evm_snapshot"))


def revert(anvil: Anvil, snapshot_id: str) -> bool:
    """``evm_revert`` to ``snapshot_id`` (which is consumed: take a new snapshot to revert again)."""
    return bool(anvil.rpc("evm_revert", [snapshot_id]))


def to_checksum(address: str) -> str:
    """EIP-55 form, as a platform would store an address it derived."""
    from eth_utils.address import to_checksum_address

    return str(to_checksum_address(address))


def address_of(i: int) -> str:
    """A deterministic address nobody controls (an outsider), lowercase."""
    return "0x" + keccak(text=f"outsider-{i}").hex()[-40:]
