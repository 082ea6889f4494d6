"""EvmAdapter on anvil (chain ids 56 and 137), directly and through the fault proxy."""

from __future__ import annotations

import logging
import secrets
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from chains.base import (
    NATIVE_LOG_INDEX,
    Chain,
    ChainIdMismatch,
    FatalChainError,
    RetryableChainError,
    Transfer,
)
from chains.evm.adapter import EvmAdapter, decode_symbol, normalise_evm_address
from chains.evm.logs import LOG_TRANSFER_TOPIC, POLYGON_NATIVE_CONTRACT, TRANSFER_TOPIC, topic_of
from chains.evm.rpc import JsonRpcClient
from citadel_devtools.anvil import Anvil
from tests.support import evm
from tests.support.faultproxy import EXTRA_DATA_97, FaultProxy, Faults

API_KEY = "ak7c2e9b4f1d3a5c8e0b6d2f4a7c9e1b3"


class RecordingObserver:
    def __init__(self) -> None:
        self.outcomes: Counter[str] = Counter()
        self.skipped: Counter[str] = Counter()
        self.endpoints: set[str] = set()

    def rpc_request(self, chain: str, endpoint: str, method: str, duration_s: float, outcome: str) -> None:
        self.outcomes[outcome] += 1
        self.endpoints.add(endpoint)

    def skipped_item(self, chain: str, reason: str, where: str = "") -> None:
        self.skipped[reason] += 1

    def endpoint_up(self, chain: str, endpoint: str, up: bool) -> None:
        self.endpoints.add(endpoint)


def mined(anvil: Anvil, tx_hash: str) -> str:
    """Wait for ``tx_hash``'s receipt: under automine anvil can answer eth_sendTransaction before eth_blockNumber
    moves, so a test reading the height right after sending could miss its own last block."""
    evm.wait_receipt(anvil, tx_hash)
    return tx_hash


def random_address() -> str:
    return "0x" + secrets.token_hex(20)


def adapter(
    url: str,
    chain: Chain = Chain.BSC,
    chain_id: int = 56,
    observer: RecordingObserver | None = None,
    **kw: Any,
) -> EvmAdapter:
    return EvmAdapter(chain, [url], chain_id, observer=observer, timeout_s=5, **kw)


def key(t: Transfer) -> tuple[str, str, str, int, str | None, bool]:
    return (t.tx_hash, t.from_address, t.to_address, t.amount_raw, t.token_address, t.success)


# ---------------------------------------------------------------------------------------------------- scenario


@dataclass
class Scenario:
    first: int
    last: int
    watched: frozenset[str]
    tokens: frozenset[str]
    expected: set[tuple[str, str, str, int, str | None, bool]]
    p2p_tx: str
    batch_tx: str
    native_tx: str
    failed_tx: str
    tok6: str
    odd: str
    w1: str


@pytest.fixture(scope="module")
def bsc_scenario(anvil_bsc: Anvil) -> Scenario:
    """Token and native movements on the shared chain-56 node; ``expected`` is what a watcher must find."""
    a = anvil_bsc
    acc = evm.accounts(a)
    minter, w1, w2, outsider = acc[0], acc[1], acc[2], acc[5]
    r0 = random_address()
    tok18 = evm.deploy_token(a, 18, "T18")
    tok6 = evm.deploy_token(a, 6, "T6")
    unknown = evm.deploy_token(a, 18, "UNK")
    tokmax = evm.deploy_token(a, 18, "MAX")
    odd = evm.deploy(a, "OddToken")
    reverter = evm.deploy(a, "Reverter")
    recipients = [random_address() for _ in range(300)]
    watched = frozenset({w1, w2, r0, *recipients[:150]})
    expected: set[tuple[str, str, str, int, str | None, bool]] = set()
    zero = "0x" + "0" * 40

    first = evm.block_number(a) + 1
    expected.add((evm.token_mint(a, tok18, minter, w1, 10**24), zero, w1, 10**24, tok18, True))
    evm.token_mint(a, tok6, minter, outsider, 10**12)  # nobody watched
    expected.add((evm.token_transfer(a, tok6, outsider, w2, 5 * 10**6), outsider, w2, 5 * 10**6, tok6, True))
    p2p = evm.token_transfer(a, tok18, w1, w2, 3 * 10**18)
    expected.add((p2p, w1, w2, 3 * 10**18, tok18, True))
    evm.token_mint(a, unknown, minter, w1, 1)  # token not in the set
    expected.add(
        (evm.token_mint(a, tokmax, minter, r0, evm.UINT256_MAX), zero, r0, evm.UINT256_MAX, tokmax, True)
    )
    expected.add((evm.token_mint(a, tok6, minter, w1, 10**12), zero, w1, 10**12, tok6, True))
    batch = evm.token_batch_transfer(a, tok6, w1, recipients, [i + 1 for i in range(300)])
    expected |= {(batch, w1, r, i + 1, tok6, True) for i, r in enumerate(recipients)}
    evm.send_tx(a, minter, odd, evm.calldata("emitUnindexed(address,address,uint256)", w1, w2, 9))
    evm.send_tx(a, minter, odd, evm.calldata("emitFromIndexed(address,address,uint256)", w1, w2, 9))
    evm.send_tx(a, minter, odd, evm.calldata("emitBare()"))
    native = evm.native_transfer(a, acc[3], r0, 7)
    expected.add((native, acc[3], r0, 7, None, True))
    failed = evm.send_tx(
        a, w2, reverter, evm.calldata("transferOrRevert(address,uint256)", r0, 1), value=11, gas=100_000
    )
    assert evm.wait_receipt(a, failed)["status"] == "0x0"
    expected.add((failed, w2, reverter, 11, None, False))
    mined(a, evm.native_transfer(a, acc[4], acc[6], 1))  # nobody watched
    last = evm.block_number(a)
    return Scenario(
        first=first,
        last=last,
        watched=watched,
        tokens=frozenset({tok18, tok6, tokmax, odd}),
        expected=expected,
        p2p_tx=p2p,
        batch_tx=batch,
        native_tx=native,
        failed_tx=failed,
        tok6=tok6,
        odd=odd,
        w1=w1,
    )


# ---------------------------------------------------------------------------------------------------- identity


async def test_wrong_chain_id_is_refused_with_both_ids(anvil_bsc: Anvil) -> None:
    async with adapter(anvil_bsc.url, Chain.POLYGON, 137) as wrong:
        with pytest.raises(ChainIdMismatch, match=r"serves chain id 56, but chain id 137 is configured"):
            await wrong.check_chain_id()
    async with adapter(anvil_bsc.url) as right:
        await right.check_chain_id()
        assert right.native_symbol == "BNB" and right.native_decimals == 18


def test_addresses_are_normalised_and_checksums_enforced() -> None:
    good = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"
    assert normalise_evm_address(good) == good.lower()
    assert normalise_evm_address(good.lower()) == good.lower()
    assert normalise_evm_address("0x" + good[2:].upper()) == good.lower()
    with pytest.raises(ValueError, match="bad EIP-55 checksum"):
        normalise_evm_address("0x5AAeb6053F3E94C9b9A09f33669435E7Ef1BeAed")
    for bad in (
        "0x5aaeb6053f3e94c9b9a09f33669435e7ef1beae",
        "5aaeb6053f3e94c9b9a09f33669435e7ef1beaed00",
        "0xzaaeb6053f3e94c9b9a09f33669435e7ef1beaed",
        "",
    ):
        with pytest.raises(ValueError):
            normalise_evm_address(bad)


# ---------------------------------------------------------------------------------------------------- transfers


async def test_transfers_match_what_happened_on_chain(anvil_bsc: Anvil, bsc_scenario: Scenario) -> None:
    s = bsc_scenario
    obs = RecordingObserver()
    async with adapter(anvil_bsc.url, observer=obs) as ad:
        got = await ad.transfers(s.first, s.last, s.watched, s.tokens)
    assert {key(t) for t in got} == s.expected
    assert len(got) == len(s.expected)  # nothing twice: the p2p transfer came back from both filters
    assert sum(t.tx_hash == s.p2p_tx for t in got) == 1
    assert [(t.block_number, t.log_index) for t in got] == sorted((t.block_number, t.log_index) for t in got)
    batch = [t for t in got if t.tx_hash == s.batch_tx]
    assert [t.log_index for t in batch] == list(range(300))
    assert all(t.token_address != s.odd for t in got)
    assert (
        obs.skipped["nonstandard_transfer"] == 1
    )  # emitFromIndexed matches the from filter, then is skipped

    native = next(t for t in got if t.tx_hash == s.native_tx)
    assert native.log_index == NATIVE_LOG_INDEX and native.success
    assert native.gas_used == 21_000 and native.gas_price and native.gas_price > 0
    failed = next(t for t in got if t.tx_hash == s.failed_tx)
    assert failed.log_index == NATIVE_LOG_INDEX and failed.success is False and failed.gas_used
    assert all(t.block_timestamp for t in got)
    assert all(t.block_hash.startswith("0x") and len(t.block_hash) == 66 for t in got)


def test_decoding_keeps_each_transfer_once_and_drops_removed_logs() -> None:
    """Raw logs come unordered and may repeat (the sender and the recipient filter both match a transfer between
    two watched wallets); a log the node marks ``removed`` belongs to an orphaned block."""
    token, a, b, outsider = "0x" + "70" * 20, "0x" + "aa" * 20, "0x" + "bb" * 20, "0x" + "cc" * 20

    def log(index: int, frm: str, to: str, *, removed: bool = False) -> dict[str, Any]:
        return {"address": token, "topics": [TRANSFER_TOPIC, topic_of(frm), topic_of(to)],
                "data": "0x" + "0" * 63 + "1", "transactionHash": "0x" + f"{index:064x}", "logIndex": hex(index), "blockNumber": "0x5",
                "blockHash": "0x" + "05" * 32, "transactionIndex": "0x0", "removed": removed}

    p2p, deposit, orphaned = log(1, a, b), log(2, outsider, a), log(3, outsider, b, removed=True)
    ad = adapter("http://127.0.0.1:1")
    got = ad._decode_logs([p2p, deposit, p2p, orphaned], 1, frozenset({a, b}), frozenset({token}), native=False)
    assert sorted(t.log_index for t in got) == [1, 2]


async def test_token_wide_scan_returns_the_same_as_topic_filters(
    anvil_bsc: Anvil, bsc_scenario: Scenario
) -> None:
    s = bsc_scenario
    obs = RecordingObserver()
    async with (
        adapter(anvil_bsc.url) as small,
        adapter(anvil_bsc.url, observer=obs, address_filter_limit=10) as large,
    ):
        by_topics = await small.transfers(s.first, s.last, s.watched, s.tokens)
        token_wide = await large.transfers(s.first, s.last, s.watched, s.tokens)
    assert token_wide == by_topics
    assert obs.skipped["nonstandard_transfer"] == 3  # all three OddToken logs seen, none crashed the decoder


async def test_small_ranges_and_tiny_position_limits_change_nothing(
    anvil_bsc: Anvil, bsc_scenario: Scenario
) -> None:
    s = bsc_scenario
    async with (
        adapter(anvil_bsc.url) as ref,
        adapter(anvil_bsc.url, max_block_range=2, position_limit=7) as tiny,
    ):
        assert await tiny.transfers(s.first, s.last, s.watched, s.tokens) == await ref.transfers(
            s.first, s.last, s.watched, s.tokens
        )


async def test_all_faults_on_give_the_fault_free_result(anvil_bsc: Anvil, bsc_scenario: Scenario) -> None:
    s = bsc_scenario
    faults = Faults(
        seed=11,
        timeout=0.03,
        hang_s=2,
        rate_limit=0.08,
        server_error=0.08,
        truncate=0.06,
        max_log_blocks=3,
        max_log_results=40,
        bsc_extra_data=True,
    )
    async with adapter(anvil_bsc.url) as direct:
        want = await direct.transfers(s.first, s.last, s.watched, s.tokens)
        want_refs = await direct.block_refs(s.first, s.last)
    async with FaultProxy(anvil_bsc.url, faults) as proxy:
        client = JsonRpcClient(
            [proxy.url], chain="bsc", timeout_s=0.3, max_attempts=12, cooldown_s=0.05, backoff_base_s=0.01
        )
        async with EvmAdapter(Chain.BSC, [proxy.url], 56, rpc=client, max_block_range=50) as faulty:
            for _round in range(4):  # later rounds start from the learned range limit
                assert await faulty.transfers(s.first, s.last, s.watched, s.tokens) == want
                assert await faulty.block_refs(s.first, s.last) == want_refs
    for kind in (
        "timeout",
        "rate_limit",
        "server_error",
        "truncate",
        "range_blocks",
        "range_results",
        "extra_data",
    ):
        assert proxy.injected[kind] > 0, (kind, proxy.injected)


async def test_no_transfers_without_watched_addresses_or_tokens(
    anvil_bsc: Anvil, bsc_scenario: Scenario
) -> None:
    s = bsc_scenario
    async with adapter(anvil_bsc.url) as ad:
        assert await ad.transfers(s.first, s.last, frozenset(), s.tokens) == []
        only_native = await ad.transfers(s.first, s.last, s.watched, frozenset())
    assert {t.tx_hash for t in only_native} == {s.native_tx, s.failed_tx}


# ---------------------------------------------------------------------------------------------------- polygon


def _log_transfer_emitter() -> str:
    """Runtime code for 0x…1010 on anvil: on any call, LogTransfer(token=0x…1010, from=caller,
    to=calldata word 0, data = msg.value + 4 zero words), like bor's native transfer log."""
    code = "34600052"  # CALLVALUE PUSH1 0 MSTORE
    code += "600035"  # PUSH1 0 CALLDATALOAD             -> topic3: to
    code += "33"  # CALLER                                   -> topic2: from
    code += "73" + POLYGON_NATIVE_CONTRACT[2:]  # PUSH20     -> topic1: token
    code += "7f" + LOG_TRANSFER_TOPIC[2:]  # PUSH32           -> topic0
    code += "60a0" + "6000" + "a4" + "00"  # size, offset, LOG4, STOP
    return "0x" + code


async def test_polygon_native_rows_top_level_and_internal_without_double_counting(
    anvil_factory: Callable[..., Anvil],
) -> None:
    node = anvil_factory(137)
    node.rpc("anvil_setCode", [POLYGON_NATIVE_CONTRACT, _log_transfer_emitter()])
    acc = evm.accounts(node)
    sender, receiver = acc[1], random_address()
    first = evm.block_number(node) + 1
    plain = evm.native_transfer(node, sender, receiver, 5)  # top-level value: a -1 row
    internal = evm.send_tx(
        node, acc[2], POLYGON_NATIVE_CONTRACT, bytes.fromhex(receiver[2:].rjust(64, "0")), value=9
    )  # LogTransfer(acc2 -> receiver, 9) while the top-level value went to 0x…1010: an internal movement
    mirrored = evm.send_tx(
        node,
        sender,
        POLYGON_NATIVE_CONTRACT,
        bytes.fromhex(POLYGON_NATIVE_CONTRACT[2:].rjust(64, "0")),
        value=3,
    )  # LogTransfer(sender -> 0x…1010, 3) mirrors the top-level value: one row, not two
    mined(node, mirrored)
    last = evm.block_number(node)
    async with adapter(node.url, Chain.POLYGON, 137) as ad:
        await ad.check_chain_id()
        assert ad.native_symbol == "POL"
        got = await ad.transfers(first, last, frozenset({sender, receiver}), frozenset())
    rows = {
        (t.tx_hash, t.log_index, t.from_address, t.to_address, t.amount_raw, t.token_address) for t in got
    }
    assert rows == {
        (plain, NATIVE_LOG_INDEX, sender, receiver, 5, None),
        (internal, 0, acc[2], receiver, 9, None),
        (mirrored, NATIVE_LOG_INDEX, sender, POLYGON_NATIVE_CONTRACT, 3, None),
    }
    assert len(got) == 3


async def test_polygon_node_serves_token_transfers(anvil_polygon: Anvil) -> None:
    acc = evm.accounts(anvil_polygon)
    tok = evm.deploy_token(anvil_polygon, 6, "USDT")
    watched = random_address()
    first = evm.block_number(anvil_polygon) + 1
    tx = mined(anvil_polygon, evm.token_mint(anvil_polygon, tok, acc[0], watched, 123_456))
    async with adapter(anvil_polygon.url, Chain.POLYGON, 137) as ad:
        got = await ad.transfers(
            first, evm.block_number(anvil_polygon), frozenset({watched}), frozenset({tok})
        )
        info = await ad.token_info(tok)
    assert [(t.tx_hash, t.amount_raw, t.token_address) for t in got] == [(tx, 123_456, tok)]
    assert (info.symbol, info.decimals) == ("USDT", 6)


# ---------------------------------------------------------------------------------------------------- blocks


async def test_blocks_with_97_byte_extra_data_parse(anvil_bsc: Anvil) -> None:
    async with FaultProxy(anvil_bsc.url, Faults(bsc_extra_data=True)) as proxy, adapter(proxy.url) as ad:
        raw = await ad.rpc.call("eth_getBlockByNumber", ["latest", False])
        assert raw["extraData"] == EXTRA_DATA_97 and len(bytes.fromhex(raw["extraData"][2:])) == 97
        head = await ad.head()
        refs = await ad.block_refs(max(0, head.number - 5), head.number)
    assert refs[-1] == head
    assert all(b.parent_hash == a.hash for a, b in zip(refs, refs[1:], strict=False))
    assert proxy.injected["extra_data"] >= 8


async def test_block_ref_finalized_and_missing_blocks(anvil_bsc: Anvil) -> None:
    async with adapter(anvil_bsc.url, max_attempts=2) as ad:
        head = await ad.head()
        assert await ad.block_ref(head.number) == head
        assert await ad.block_ref(head.number + 1000) is None
        finalized = await ad.finalized_number()
        assert finalized is not None and 0 <= finalized <= head.number
        with pytest.raises(RetryableChainError, match="not available"):
            await ad.block_refs(head.number, head.number + 2)


# ---------------------------------------------------------------------------------------------------- receipts, tokens


async def test_receipts_batch_and_absent_hashes(anvil_bsc: Anvil, bsc_scenario: Scenario) -> None:
    s = bsc_scenario
    unknown = "0x" + "ab" * 32
    async with adapter(anvil_bsc.url) as ad:
        got = await ad.receipts([s.native_tx, s.failed_tx, unknown])
    assert set(got) == {s.native_tx, s.failed_tx}
    assert got[s.native_tx].success and not got[s.failed_tx].success
    assert got[s.native_tx].gas_used == 21_000 and got[s.native_tx].gas_price


async def test_token_info_and_balances(anvil_bsc: Anvil, bsc_scenario: Scenario) -> None:
    s = bsc_scenario
    async with adapter(anvil_bsc.url) as ad:
        info = await ad.token_info(s.tok6.upper().replace("0X", "0x"))
        assert (info.address, info.symbol, info.decimals) == (s.tok6, "T6", 6)
        with pytest.raises(FatalChainError, match="does not answer decimals"):
            await ad.token_info(s.odd)
        balances = await ad.balances([s.w1], [s.tok6])
    assert balances[(s.w1, s.tok6)] == evm.token_balance(anvil_bsc, s.tok6, s.w1)
    assert balances[(s.w1, None)] == evm.native_balance(anvil_bsc, s.w1)


def test_bytes32_and_string_symbols_decode() -> None:
    assert decode_symbol("0x" + b"MKR".hex().ljust(64, "0")) == "MKR"
    string_abi = "0x" + f"{32:064x}" + f"{4:064x}" + b"USDT".hex().ljust(64, "0")
    assert decode_symbol(string_abi) == "USDT"
    assert decode_symbol("0x") == ""


# ---------------------------------------------------------------------------------------------------- secrets


async def test_api_key_in_url_never_leaks(anvil_bsc: Anvil, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    obs = RecordingObserver()
    texts: list[str] = []
    async with FaultProxy(anvil_bsc.url) as proxy:
        url = proxy.url_with(f"/v2/{API_KEY}?apikey={API_KEY}&x=1")
        async with EvmAdapter(Chain.POLYGON, [url], 137, observer=obs, timeout_s=1) as wrong:
            with pytest.raises(ChainIdMismatch) as mismatch:
                await wrong.check_chain_id()
            texts.append(str(mismatch.value))
        await proxy.down()
        client = JsonRpcClient([url], chain="bsc", timeout_s=0.5, max_attempts=2, observer=obs)
        async with EvmAdapter(Chain.BSC, [url], 56, observer=obs, rpc=client) as down:
            with pytest.raises(RetryableChainError) as refused:
                await down.head()
            texts.append(str(refused.value))
    texts += [r.getMessage() for r in caplog.records] + [str(vars(r)) for r in caplog.records]
    texts += sorted(obs.endpoints)
    joined = "\n".join(texts)
    assert API_KEY not in joined
    assert "127.0.0.1" in texts[0] and "127.0.0.1" in texts[1]


async def test_native_scan_in_small_windows_and_errors_surface_unwrapped(
    anvil_bsc: Anvil, bsc_scenario: Scenario
) -> None:
    s = bsc_scenario
    client = JsonRpcClient([anvil_bsc.url], chain="bsc", max_batch=2)
    async with EvmAdapter(Chain.BSC, [anvil_bsc.url], 56, rpc=client, concurrency=1) as ad:
        native = await ad.transfers(s.first, s.last, s.watched, frozenset())
        assert {t.tx_hash for t in native} == {s.native_tx, s.failed_tx}
        head = await ad.head()
        with pytest.raises(RetryableChainError, match="not available"):  # not an ExceptionGroup
            await ad.transfers(head.number, head.number + 3, s.watched, s.tokens)
