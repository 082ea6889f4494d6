"""The EVM test helpers and test contracts work on anvil."""

from __future__ import annotations

import pytest
from eth_abi.abi import decode

from citadel_devtools.anvil import Anvil
from tests.fixtures.anvil import BSC_CHAIN_ID, AnvilFactory
from tests.support import evm


def _topic_address(address: str) -> str:
    return "0x" + "0" * 24 + address[2:].lower()


def test_session_nodes_have_their_chain_ids(anvil_bsc: Anvil, anvil_polygon: Anvil) -> None:
    assert int(str(anvil_bsc.rpc("eth_chainId")), 16) == 56
    assert int(str(anvil_polygon.rpc("eth_chainId")), 16) == 137
    assert len(evm.accounts(anvil_bsc)) == 10


@pytest.mark.parametrize(("node", "decimals"), [("anvil_bsc", 18), ("anvil_polygon", 6)])
def test_token_decimals_read_back(node: str, decimals: int, request: pytest.FixtureRequest) -> None:
    anvil: Anvil = request.getfixturevalue(node)
    token = evm.deploy_token(anvil, decimals, symbol="USDT")
    assert evm.token_decimals(anvil, token) == decimals
    assert evm.call_fn(anvil, token, "symbol()", [], ["string"]) == ("USDT",)


def test_mint_and_transfer(anvil_bsc: Anvil) -> None:
    alice, bob = evm.accounts(anvil_bsc)[1:3]
    token = evm.deploy_token(anvil_bsc, 18)
    evm.token_mint(anvil_bsc, token, alice, alice, 1000)
    receipt = evm.wait_receipt(anvil_bsc, evm.token_transfer(anvil_bsc, token, alice, bob, 400))
    assert receipt["status"] == "0x1"
    (log,) = receipt["logs"]
    assert log["topics"] == [evm.TRANSFER_TOPIC, _topic_address(alice), _topic_address(bob)]
    assert int(log["data"], 16) == 400
    assert evm.token_balance(anvil_bsc, token, alice) == 600
    assert evm.token_balance(anvil_bsc, token, bob) == 400


def test_batch_transfer_emits_one_log_per_recipient(anvil_bsc: Anvil) -> None:
    sender = evm.accounts(anvil_bsc)[0]
    token = evm.deploy_token(anvil_bsc, 6)
    evm.token_mint(anvil_bsc, token, sender, sender, 10**12)
    recipients = [f"0x{i + 0x1000:040x}" for i in range(300)]
    amounts = list(range(1, 301))
    tx_hash = evm.token_batch_transfer(anvil_bsc, token, sender, recipients, amounts)
    receipt = evm.wait_receipt(anvil_bsc, tx_hash)
    assert receipt["status"] == "0x1"
    block = int(receipt["blockNumber"], 16)
    logs = evm.get_logs(anvil_bsc, block, block, address=token, topics=[evm.TRANSFER_TOPIC])
    assert len(logs) == 300
    assert {log["transactionHash"] for log in logs} == {tx_hash}
    assert [log["topics"][2] for log in logs] == [_topic_address(r) for r in recipients]
    assert [int(log["data"], 16) for log in logs] == amounts


def test_uint256_max_mint_and_transfer(anvil_bsc: Anvil) -> None:
    spammer, victim = evm.accounts(anvil_bsc)[3:5]
    token = evm.deploy_token(anvil_bsc, 18)
    evm.token_mint(anvil_bsc, token, spammer, spammer, 5)  # supply already non-zero: max would overflow it
    evm.token_transfer(anvil_bsc, token, spammer, victim, 5)
    assert (
        evm.wait_receipt(anvil_bsc, evm.token_mint(anvil_bsc, token, spammer, spammer, evm.UINT256_MAX))[
            "status"
        ]
        == "0x1"
    )
    receipt = evm.wait_receipt(
        anvil_bsc, evm.token_transfer(anvil_bsc, token, spammer, f"0x{0xDEAD:040x}", evm.UINT256_MAX)
    )
    assert receipt["status"] == "0x1"
    (log,) = receipt["logs"]
    assert int(log["data"], 16) == evm.UINT256_MAX == 2**256 - 1
    assert evm.token_balance(anvil_bsc, token, f"0x{0xDEAD:040x}") == evm.UINT256_MAX


def test_odd_token_logs_have_unusual_topic_counts(anvil_bsc: Anvil) -> None:
    sender, a, b = evm.accounts(anvil_bsc)[5:8]
    odd = evm.deploy(anvil_bsc, "OddToken", [], sender)

    def logs_of(signature: str, *args: object) -> list[dict[str, object]]:
        tx = evm.send_tx(anvil_bsc, sender, odd, evm.calldata(signature, *args))
        receipt = evm.wait_receipt(anvil_bsc, tx)
        assert receipt["status"] == "0x1"
        return list(receipt["logs"])

    (unindexed,) = logs_of("emitUnindexed(address,address,uint256)", a, b, 7)
    assert unindexed["topics"] == [evm.TRANSFER_TOPIC]
    assert decode(["address", "address", "uint256"], bytes.fromhex(str(unindexed["data"])[2:])) == (a, b, 7)

    (from_only,) = logs_of("emitFromIndexed(address,address,uint256)", a, b, 8)
    assert from_only["topics"] == [evm.TRANSFER_TOPIC, _topic_address(a)]
    assert decode(["address", "uint256"], bytes.fromhex(str(from_only["data"])[2:])) == (b, 8)

    (bare,) = logs_of("emitBare()")
    assert bare["topics"] == [evm.TRANSFER_TOPIC]
    assert bare["data"] == "0x"


def test_reverting_call_is_mined_with_status_zero(anvil_bsc: Anvil) -> None:
    wallet, to = evm.accounts(anvil_bsc)[8:10]
    reverter = evm.deploy(anvil_bsc, "Reverter", [], wallet)
    data = evm.calldata("transferOrRevert(address,uint256)", to, 1)
    receipt = evm.wait_receipt(anvil_bsc, evm.send_tx(anvil_bsc, wallet, reverter, data, gas=100_000))
    assert receipt["status"] == "0x0"
    assert receipt["from"] == wallet
    assert receipt["logs"] == []


def test_forward_moves_native_coin_inside_a_call(anvil_bsc: Anvil) -> None:
    wallet = evm.accounts(anvil_bsc)[0]
    reverter = evm.deploy(anvil_bsc, "Reverter", [], wallet)
    target = f"0x{0xBEEF:040x}"
    before = evm.native_balance(anvil_bsc, target)
    data = evm.calldata("forward(address)", target)
    receipt = evm.wait_receipt(anvil_bsc, evm.send_tx(anvil_bsc, wallet, reverter, data, value=10**15))
    assert receipt["status"] == "0x1"
    assert evm.native_balance(anvil_bsc, target) - before == 10**15
    assert evm.native_balance(anvil_bsc, reverter) == 0


def test_reorg_changes_hashes_and_drops_transactions(anvil_factory: AnvilFactory) -> None:
    anvil = anvil_factory(BSC_CHAIN_ID)
    alice, bob, carol = evm.accounts(anvil)[:3]
    evm.mine(anvil, 5)
    dropped = evm.native_transfer(anvil, alice, bob, 1)
    evm.mine(anvil, 1)
    tip = evm.block_number(anvil)
    before = {n: evm.get_block(anvil, n)["hash"] for n in range(tip - 4, tip + 1)}

    evm.reorg(anvil, 3, [({"from": alice, "to": carol, "value": hex(2)}, 0)])

    assert evm.block_number(anvil) == tip
    after = {n: evm.get_block(anvil, n)["hash"] for n in range(tip - 4, tip + 1)}
    assert [before[n] == after[n] for n in sorted(before)] == [True, True, False, False, False]
    assert anvil.rpc("eth_getTransactionReceipt", [dropped]) is None
    assert len(evm.get_block(anvil, tip - 2)["transactions"]) == 1


def test_automine_off_queues_until_mined(anvil_factory: AnvilFactory) -> None:
    anvil = anvil_factory(137)
    alice, bob = evm.accounts(anvil)[:2]
    start = evm.block_number(anvil)
    evm.set_automine(anvil, False)
    hashes = [evm.native_transfer(anvil, alice, bob, i + 1) for i in range(3)]
    assert evm.block_number(anvil) == start
    evm.mine(anvil)
    receipts = [evm.wait_receipt(anvil, h) for h in hashes]
    assert {int(r["blockNumber"], 16) for r in receipts} == {start + 1}
    evm.set_automine(anvil, True)


def test_snapshot_and_revert(anvil_factory: AnvilFactory) -> None:
    anvil = anvil_factory(BSC_CHAIN_ID)
    snap = evm.snapshot(anvil)
    evm.mine(anvil, 4)
    assert evm.block_number(anvil) == 4
    assert evm.revert(anvil, snap)
    assert evm.block_number(anvil) == 0
