"""Answers that parse but cannot be right, and display-only fields, never stop indexing nor reach the table.

- A value no row can hold (a log index past PostgreSQL's ``integer``, a timestamp no ``datetime`` holds, a negative
  TRX amount) is a malformed answer: asked again elsewhere, and when every answer says the same, that item is skipped
  and reported (``skipped_item``); the rest of the range is indexed. A block header with such a value cannot be
  skipped: it stays a retryable error.
- A token's ``symbol()`` is display-only: one that reverts or is not text becomes ``""`` (``undecodable_symbol``)
  instead of stopping the chain at start-up.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from chains.base import Chain, MalformedResponse, RetryableChainError, Transfer
from chains.evm.adapter import EvmAdapter
from chains.evm.rpc import JsonRpcClient
from chains.tron.adapter import TronAdapter
from chains.tron.address import to_hex41
from citadel_devtools.anvil import Anvil
from citadel_devtools.tron_simulator import OtherContract, TronSimulator
from tests.support import evm
from tests.support.faultproxy import FaultProxy, Faults

pytestmark = pytest.mark.asyncio(loop_scope="session")


class Observer:
    def __init__(self) -> None:
        self.skipped: Counter[str] = Counter()
        self.where: list[str] = []

    def rpc_request(self, chain: str, endpoint: str, method: str, duration_s: float, outcome: str) -> None:
        return None

    def skipped_item(self, chain: str, reason: str, where: str = "") -> None:
        self.skipped[reason] += 1
        self.where.append(where)

    def endpoint_up(self, chain: str, endpoint: str, up: bool) -> None:
        return None


def keys(transfers: list[Transfer]) -> set[tuple[str, int, str, int]]:
    return {(t.tx_hash, t.log_index, t.to_address, t.amount_raw) for t in transfers}


# ---------------------------------------------------------------------------------------------------- symbols


def _answering(symbol_payload: bytes | None) -> str:
    """Runtime code: ``decimals()`` answers 18; any other call answers ``symbol_payload`` (None: reverts)."""
    tail = "60006000fd" if symbol_payload is None else (
        f"61{len(symbol_payload):04x}61{41:04x}600039" + f"61{len(symbol_payload):04x}6000f3")
    tail = tail.ljust(30, "0")  # the two paths as long: the decimals() code stays at byte 30 (0x1e)
    code = "60003560e01c" + "63313ce56714" + "601e57" + tail + "5b60126000526020600" + "0f3"
    assert len(code) // 2 == 41, len(code) // 2
    return "0x" + code + (symbol_payload or b"").hex()


def _abi_string(text: bytes) -> bytes:
    return (32).to_bytes(32, "big") + len(text).to_bytes(32, "big") + text.ljust(-(-len(text) // 32) * 32, b"\0")


@pytest.mark.parametrize(
    ("payload", "shown", "counted"),
    [
        (_abi_string(b"US\0DT"), "", True),  # a NUL: PostgreSQL text cannot hold it
        (b"\xff\xfe" + b"\0" * 30, "", True),  # bytes32 that is not UTF-8
        (b"\x01" * 7, "", True),  # neither an ABI string nor bytes32
        (None, "", True),  # reverts
        (b"MKR".ljust(32, b"\0"), "MKR", False),  # bytes32, as old tokens answer
        (_abi_string(b"A" * 40), "A" * 32, False),  # longer than the platform keeps: cut
    ],
    ids=["nul", "not-utf8", "neither", "reverts", "bytes32", "too-long"],
)
async def test_an_evm_symbol_that_is_not_text_is_shown_empty_and_never_stops_indexing(
    anvil_bsc: Anvil, payload: bytes | None, shown: str, counted: bool
) -> None:
    token = evm.address_of(hash(payload) & 0xFFFF_FFFF)
    anvil_bsc.rpc("anvil_setCode", [token, _answering(payload)])
    observer = Observer()
    async with EvmAdapter(Chain.BSC, [anvil_bsc.url], 56, observer=observer) as adapter:
        info = await adapter.token_info(token)
    assert (info.symbol, info.decimals) == (shown, 18)
    assert observer.skipped["undecodable_symbol"] == (1 if counted else 0)


@pytest.mark.parametrize(
    ("answer", "shown", "counted"),
    [
        ("00" * 31, "", True),  # neither an ABI string nor bytes32: today's start-up loops on it
        ("revert", "", True),  # symbol() reverts: a token still, its decimals answer
        (_abi_string(b"US\0DT").hex(), "", True),
        (b"OLD".ljust(32, b"\0").hex(), "OLD", False),
    ],
    ids=["neither", "reverts", "nul", "bytes32"],
)
async def test_a_tron_symbol_that_is_not_text_is_shown_empty_and_never_stops_indexing(
    tron_sim: TronSimulator, answer: str, shown: str, counted: bool
) -> None:
    token = tron_sim.deploy_trc20("WEIRD", 6, symbol_answer=answer)
    observer = Observer()
    adapter = TronAdapter([tron_sim.url], observer=observer, max_retries=1)
    try:
        info = await adapter.token_info(token)
    finally:
        await adapter.aclose()
    assert (info.symbol, info.decimals) == (shown, 6)
    assert observer.skipped["undecodable_symbol"] == (1 if counted else 0)


# ---------------------------------------------------------------------------------------------------- EVM numbers


@pytest_asyncio.fixture(loop_scope="session")
async def evm_history(anvil_bsc: Anvil) -> AsyncIterator[tuple[Anvil, str, list[str], int, int, dict[str, str]]]:
    acc = evm.accounts(anvil_bsc)
    token = evm.deploy_token(anvil_bsc, 18, "USDT")
    wallets = acc[1:3]
    evm.token_mint(anvil_bsc, token, acc[0], acc[8], 10**24)
    first = evm.block_number(anvil_bsc) + 1
    notes = {
        "token_ok": evm.token_transfer(anvil_bsc, token, acc[8], wallets[0], 11),
        "token_bad": evm.token_transfer(anvil_bsc, token, acc[8], wallets[1], 22),
        "native_ok": evm.native_transfer(anvil_bsc, acc[8], wallets[0], 33),
        "native_bad": evm.native_transfer(anvil_bsc, acc[8], wallets[1], 44),
    }
    yield anvil_bsc, token, wallets, first, evm.block_number(anvil_bsc), notes


async def test_transient_impossible_values_are_asked_again_and_change_nothing(
    evm_history: tuple[Anvil, str, list[str], int, int, dict[str, str]],
) -> None:
    anvil, token, wallets, first, last, _ = evm_history
    async with EvmAdapter(Chain.BSC, [anvil.url], 56) as direct:
        want = await direct.transfers(first, last, frozenset(wallets), frozenset({token}))
        refs = await direct.block_refs(first, last)
    assert len(want) == 4
    observer = Observer()
    async with FaultProxy(anvil.url, Faults(seed=2, corrupt=0.3)) as proxy:
        client = JsonRpcClient([proxy.url], chain="bsc", cooldown_s=0.01, backoff_base_s=0.005, max_attempts=8,
                               observer=observer)
        async with EvmAdapter(Chain.BSC, [proxy.url], 56, rpc=client, observer=observer) as adapter:
            for _ in range(4):
                assert await adapter.transfers(first, last, frozenset(wallets), frozenset({token})) == want
                got = await adapter.block_transfers(refs, frozenset(wallets), frozenset({token}))
                assert keys(got) == keys(want)
    assert proxy.injected["corrupt"] > 0
    assert not observer.skipped  # every bad answer was asked again: nothing had to be left out


async def test_an_item_every_node_answers_impossibly_is_skipped_and_reported_never_written(
    evm_history: tuple[Anvil, str, list[str], int, int, dict[str, str]],
) -> None:
    anvil, token, wallets, first, last, notes = evm_history
    bad = frozenset({notes["token_bad"], notes["native_bad"]})
    observer = Observer()
    async with FaultProxy(anvil.url, Faults(corrupt_txs=bad)) as proxy:
        client = JsonRpcClient([proxy.url], chain="bsc", cooldown_s=0.01, backoff_base_s=0.005, max_attempts=3,
                               observer=observer)
        async with EvmAdapter(Chain.BSC, [proxy.url], 56, rpc=client, observer=observer) as adapter:
            ranged = await adapter.transfers(first, last, frozenset(wallets), frozenset({token}))
            refs = await adapter.block_refs(first, last)
            by_hash = await adapter.block_transfers(refs, frozenset(wallets), frozenset({token}))
    for got in (ranged, by_hash):
        assert {t.tx_hash for t in got} == {notes["token_ok"], notes["native_ok"]}
        assert all(-1 <= t.log_index < 2**31 and 0 <= t.tx_index < 2**31 for t in got)
    assert observer.skipped["malformed_log"] == 2 and observer.skipped["malformed_transaction"] == 2
    assert proxy.injected["corrupt"] > 0


async def test_a_header_with_an_impossible_value_stays_a_retryable_error(
    evm_history: tuple[Anvil, str, list[str], int, int, dict[str, str]],
) -> None:
    anvil, _, _, first, last, _ = evm_history
    async with FaultProxy(anvil.url, Faults(corrupt_headers=frozenset({last}))) as proxy:
        client = JsonRpcClient([proxy.url], chain="bsc", cooldown_s=0.01, backoff_base_s=0.005, max_attempts=2)
        async with EvmAdapter(Chain.BSC, [proxy.url], 56, rpc=client) as adapter:
            with pytest.raises(MalformedResponse):
                await adapter.block_refs(first, last)
            with pytest.raises(RetryableChainError):
                await adapter.block_ref(last)
            assert len(await adapter.block_refs(first, last - 1)) == last - first


# ---------------------------------------------------------------------------------------------------- Tron numbers


async def test_a_tron_transfer_with_an_impossible_amount_is_skipped_and_reported(tron_sim: TronSimulator) -> None:
    alice, bob, outsider = tron_sim.new_address(), tron_sim.new_address(), tron_sim.new_address()
    tron_sim.fund(outsider, 10**9)
    ok = tron_sim.transfer_trx(outsider, alice, 5)
    for amount in (-5, "7", 1.5):
        tron_sim.submit(OtherContract(outsider, "TransferContract",
                                      (("amount", amount), ("to_address", to_hex41(bob)))))
    block = tron_sim.produce_block()
    observer = Observer()
    adapter = TronAdapter([tron_sim.url], observer=observer, max_retries=1, backoff_base_s=0.005,
                          backoff_cap_s=0.01, cooldown_s=0.01)
    try:
        ranged = await adapter.transfers(block.number, block.number, frozenset({alice, bob}), frozenset())
        refs = await adapter.block_refs(block.number, block.number)
        by_hash = await adapter.block_transfers(refs, frozenset({alice, bob}), frozenset())
    finally:
        await adapter.aclose()
    for got in (ranged, by_hash):
        assert [(t.tx_hash, t.amount_raw) for t in got] == [(ok, 5)]
    assert observer.skipped["malformed_trx_transfer"] == 6  # three, by range and by hash
