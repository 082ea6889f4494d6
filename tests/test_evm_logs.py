"""Pure tests of chains.evm.logs: provider error texts, the range sizer, filter shapes, de-duplication, and
fetch_logs driven by a fake batch function (no I/O)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chains.base import BlockNotAvailable, MalformedResponse, RangeTooLarge
from chains.evm.logs import (
    TRANSFER_TOPIC,
    FilterTooLarge,
    LogRangeTooLarge,
    RangeSizer,
    beyond_head,
    classify_range_error,
    fetch_logs,
    node_behind,
    plan_filters,
    raw_logs,
    topic_of,
)

# ---------------------------------------------------------------------------------------------------- classify


def test_bsc_max_block_range_text_gives_the_limit() -> None:
    err = classify_range_error(-32000, "exceed maximum block range: 5000", None)
    assert isinstance(err, LogRangeTooLarge)
    assert err.max_blocks == 5000 and err.suggested_to is None


def test_infura_too_many_results_gives_suggested_range_from_message() -> None:
    msg = "query returned more than 10000 results. Try with this block range [0x1B4, 0x1C2]."
    err = classify_range_error(-32005, msg, None)
    assert isinstance(err, LogRangeTooLarge)
    assert (err.suggested_from, err.suggested_to) == (0x1B4, 0x1C2)
    assert err.max_blocks is None


def test_infura_suggested_range_in_data_wins() -> None:
    msg = "query returned more than 10000 results. Try with this block range [0x10, 0x20]."
    err = classify_range_error(-32005, msg, {"from": "0x10", "to": "0x18"})
    assert isinstance(err, LogRangeTooLarge)
    assert (err.suggested_from, err.suggested_to) == (0x10, 0x18)


def test_infura_range_exceeds_limit() -> None:
    err = classify_range_error(-32602, "range 1000000 exceeds limit of 10000", None)
    assert isinstance(err, LogRangeTooLarge) and err.max_blocks == 10000


def test_alchemy_log_response_size_exceeded() -> None:
    msg = (
        "Log response size exceeded. You can make eth_getLogs requests with up to a 2K block range and no limit "
        "on the response size, or you can request any block range with a cap of 10K logs in the response. "
        "Based on your parameters, this block range should work: [0x10, 0x7cf]"
    )
    err = classify_range_error(-32602, msg, None)
    assert isinstance(err, LogRangeTooLarge)
    assert err.max_blocks == 2000
    assert err.suggested_to == 0x7CF


def test_reth_max_block_range() -> None:
    err = classify_range_error(-32602, "query exceeds max block range 5000", None)
    assert isinstance(err, LogRangeTooLarge) and err.max_blocks == 5000


def test_too_many_addresses_or_topics_means_split_the_filter() -> None:
    err = classify_range_error(-32602, "exceed max addresses or topics per search position", None)
    assert isinstance(err, FilterTooLarge)
    assert isinstance(err, RangeTooLarge)


@pytest.mark.parametrize(
    ("code", "message"),
    [
        (-32601, "the method eth_foo does not exist/is not available"),
        (-32602, "invalid argument 0: hex string without 0x prefix"),
        (3, "execution reverted"),
        (-32000, "header not found"),
    ],
)
def test_other_errors_are_not_range_errors(code: int, message: str) -> None:
    assert classify_range_error(code, message, None) is None


@pytest.mark.parametrize(
    ("code", "message"),
    [
        (-32602, "block range extends beyond current head block"),  # newer geth
        (-32602, "BlockOutOfRangeError: block height is 5 but requested was 64"),  # anvil
        (-32000, "unknown block"),  # geth, anvil: by an unknown blockHash
    ],
)
def test_a_node_that_is_behind_is_not_a_range_refusal(code: int, message: str) -> None:
    """A node behind the others must not make the sizer shrink: the range is fine, the node is not."""
    from chains.evm.rpc import RpcError

    assert classify_range_error(code, message, None) is None
    assert node_behind(RpcError(f"eth_getLogs via x: JSON-RPC error {code}: {message}", code=code))
    assert beyond_head(message) == (message != "unknown block")  # what the client classifies BlockNotAvailable
    assert node_behind(BlockNotAvailable("block 5 is not available on the node that answered"))
    assert not beyond_head("invalid argument 0: hex string without 0x prefix")


def test_generic_block_range_texts_are_recognised() -> None:
    assert classify_range_error(-32000, "block range is too wide", None) is not None
    assert classify_range_error(-32000, "eth_getLogs is limited to a 10,000 blocks range", None) is not None


# ---------------------------------------------------------------------------------------------------- sizer


def test_sizer_grows_25_percent_then_5_percent_after_a_refusal() -> None:
    sizer = RangeSizer(100, cap=10_000)
    sizer.on_success(100)
    assert sizer.size == 125
    sizer.on_success(125)
    assert sizer.size == 156
    sizer.on_too_large(RangeTooLarge("x"), 0, 155)
    assert sizer.size == 78
    sizer.on_success(78)
    assert sizer.size == 81  # +5%


def test_sizer_never_grows_past_cap() -> None:
    sizer = RangeSizer(1900, cap=2000)
    for _ in range(5):
        sizer.on_success(sizer.size)
    assert sizer.size == 2000


def test_sizer_remembers_a_named_limit() -> None:
    sizer = RangeSizer(2000, cap=10_000)
    first, last = sizer.on_too_large(LogRangeTooLarge("bsc", max_blocks=500), 100, 2099)
    assert (first, last) == (100, 599)
    assert sizer.learned_limit == 500
    for _ in range(50):
        sizer.on_success(sizer.size)
    assert sizer.size == 500


def test_sizer_jumps_to_the_suggested_range() -> None:
    sizer = RangeSizer(2000, cap=2000)
    first, last = sizer.on_too_large(LogRangeTooLarge("infura", 130, suggested_from=100), 100, 2099)
    assert (first, last) == (100, 130)
    assert sizer.size == 31
    assert sizer.learned_limit is None  # density-dependent: not a hard limit


def test_sizer_halves_without_hint() -> None:
    sizer = RangeSizer(1000, cap=1000)
    assert sizer.on_too_large(RangeTooLarge("?"), 0, 999) == (0, 499)


def test_sizer_ignores_short_ranges_for_growth() -> None:
    sizer = RangeSizer(100, cap=1000)
    sizer.on_success(3)
    assert sizer.size == 100


@given(st.integers(1, 5000), st.integers(0, 10_000), st.integers(1, 5000))
def test_sizer_always_makes_progress(size: int, start: int, span: int) -> None:
    sizer = RangeSizer(size, cap=5000)
    end = start + span
    a, b = sizer.on_too_large(RangeTooLarge("x"), start, end)
    assert a == start and start <= b < end
    assert 1 <= sizer.size <= 5000


# ---------------------------------------------------------------------------------------------------- shapes

TOKEN_A = "0x" + "aa" * 20
TOKEN_B = "0x" + "bb" * 20


def _addrs(n: int) -> list[str]:
    return [f"0x{i:040x}" for i in range(1, n + 1)]


def test_small_watch_set_uses_from_and_to_topic_filters() -> None:
    watched = _addrs(3)
    plan = plan_filters(TRANSFER_TOPIC, [TOKEN_B, TOKEN_A], watched)
    assert not plan.token_wide
    padded = [topic_of(a) for a in watched]
    assert plan.filters == [
        {"address": [TOKEN_A, TOKEN_B], "topics": [TRANSFER_TOPIC, padded]},
        {"address": [TOKEN_A, TOKEN_B], "topics": [TRANSFER_TOPIC, None, padded]},
    ]


def test_watch_sets_are_chunked_per_position() -> None:
    plan = plan_filters(TRANSFER_TOPIC, [TOKEN_A], _addrs(450), position_limit=200)
    assert len(plan.filters) == 6  # 3 chunks x (from, to)
    assert all(len(f["topics"][-1]) <= 200 for f in plan.filters)


def test_large_watch_set_uses_one_token_wide_filter() -> None:
    plan = plan_filters(TRANSFER_TOPIC, [TOKEN_A], _addrs(501), address_filter_limit=500)
    assert plan.token_wide
    assert plan.filters == [{"address": [TOKEN_A], "topics": [TRANSFER_TOPIC]}]


def test_log_transfer_shape_puts_from_in_position_two() -> None:
    plan = plan_filters("0xsig", ["0x" + "0" * 36 + "1010"], _addrs(1), from_position=2)
    assert plan.filters[0]["topics"] == ["0xsig", None, [topic_of(_addrs(1)[0])]]
    assert plan.filters[1]["topics"] == ["0xsig", None, None, [topic_of(_addrs(1)[0])]]


def test_no_tokens_means_no_filter_at_all() -> None:
    # an empty address list would match every contract on the chain
    assert plan_filters(TRANSFER_TOPIC, [], _addrs(2)).filters == []


def _log(block: int, index: int) -> dict[str, Any]:
    return {"blockNumber": hex(block), "logIndex": hex(index), "blockHash": f"0x{block:064x}"}


# ---------------------------------------------------------------------------------------------------- fetching


class FakeNode:
    """Answers eth_getLogs batches from a list of logs with a bsc-style block limit and a per-position limit, and
    headers by number. ``behind``: how many of the next batches a node ``lag`` blocks behind answers (geth's way:
    a null header, logs clamped to its head without a word)."""

    def __init__(self, logs_per_block: dict[int, int], max_blocks: int, max_values: int = 10**9, *,
                 head: int = 10**9, behind: int = 0, lag: int = 3) -> None:
        self.logs_per_block = logs_per_block
        self.max_blocks = max_blocks
        self.max_values = max_values
        self.head = head
        self.behind = behind
        self.lag = lag
        self.requests: list[tuple[int, int]] = []
        self.batches: list[list[str]] = []

    async def batch(self, calls: list[tuple[str, list[Any]]]) -> list[Any]:
        self.batches.append([method for method, _ in calls])
        head = self.head
        if self.behind:
            self.behind -= 1
            head -= self.lag
        out: list[Any] = []
        for method, params in calls:
            if method == "eth_getBlockByNumber":
                n = int(params[0], 16)
                out.append({"number": hex(n)} if n <= head else None)
                continue
            (flt,) = params
            a, b = int(flt["fromBlock"], 16), min(int(flt["toBlock"], 16), head)
            self.requests.append((a, b))
            if any(isinstance(t, list) and len(t) > self.max_values for t in flt["topics"]):
                out.append(
                    classify_range_error(-32602, "exceed max addresses or topics per search position", None)
                )
            elif b - a + 1 > self.max_blocks:
                out.append(
                    classify_range_error(-32000, f"exceed maximum block range: {self.max_blocks}", None)
                )
            else:
                out.append(
                    [_log(n, i) for n in range(a, b + 1) for i in range(self.logs_per_block.get(n, 0))]
                )
        return out


async def test_fetch_logs_learns_the_limit_and_returns_every_log_once_per_filter() -> None:
    node = FakeNode({n: n % 3 for n in range(0, 3000)}, max_blocks=300)
    sizer = RangeSizer(1000, cap=1000)
    flt = {"address": [TOKEN_A], "topics": [TRANSFER_TOPIC]}
    logs = await fetch_logs(node.batch, 0, 2999, [flt, flt], sizer, raw_logs, concurrency=4)
    keys = [(int(x["blockNumber"], 16), int(x["logIndex"], 16)) for x in logs]
    every_log = [(n, i) for n in range(3000) for i in range(n % 3)]
    assert sorted(keys) == sorted(every_log * 2)  # each filter's answer, whole: no gap, no overlap of pieces
    assert sizer.learned_limit == 300
    refused = [r for r in node.requests if r[1] - r[0] + 1 > 300]
    assert len(refused) <= 8  # learned quickly, not refused on every piece


async def test_fetch_logs_splits_a_too_wide_filter() -> None:
    node = FakeNode({5: 1}, max_blocks=10**9, max_values=2)
    flt = {"address": [TOKEN_A], "topics": [TRANSFER_TOPIC, [topic_of(a) for a in _addrs(7)]]}
    logs = await fetch_logs(node.batch, 0, 9, [flt], RangeSizer(10, cap=10), raw_logs)
    # 7 addresses halved until each filter holds at most 2: 2 + 2 + 2 + 1, four filters; this fake node ignores
    # topics, so each answers with the block's one log
    assert logs == [_log(5, 0)] * 4


async def test_fetch_logs_with_no_filters_sends_nothing() -> None:
    node = FakeNode({}, max_blocks=10)
    assert await fetch_logs(node.batch, 0, 100, [], RangeSizer(), raw_logs) == []
    assert node.requests == []


async def test_a_fatal_error_surfaces_as_itself_not_as_an_exception_group() -> None:
    from chains.evm.rpc import RpcError

    async def failing(calls: list[tuple[str, list[Any]]]) -> list[Any]:
        return [RpcError("eth_getLogs via x: invalid params", code=-32602) for _ in calls]

    flt = {"address": [TOKEN_A], "topics": [TRANSFER_TOPIC]}
    with pytest.raises(RpcError, match="invalid params"):
        await fetch_logs(failing, 0, 100, [flt], RangeSizer(10, cap=10), raw_logs, concurrency=4)


async def test_a_piece_answered_by_a_node_behind_is_asked_again_never_taken_as_complete() -> None:
    node = FakeNode({n: 1 for n in range(100)}, max_blocks=10**9, head=99, behind=3)
    flt = {"address": [TOKEN_A], "topics": [TRANSFER_TOPIC]}
    logs = await fetch_logs(node.batch, 0, 99, [flt], RangeSizer(100, cap=100), raw_logs, concurrency=1)
    assert sorted(int(x["blockNumber"], 16) for x in logs) == list(range(100))
    assert len(node.batches) == 4  # three answers from the node behind, thrown away whole
    assert all(methods[0] == "eth_getBlockByNumber" for methods in node.batches)  # each vouched for in-request


async def test_a_node_behind_on_every_attempt_is_an_error_never_an_empty_answer() -> None:
    node = FakeNode({n: 1 for n in range(100)}, max_blocks=10**9, head=99, behind=100)
    flt = {"address": [TOKEN_A], "topics": [TRANSFER_TOPIC]}
    with pytest.raises(BlockNotAvailable):
        await fetch_logs(node.batch, 90, 99, [flt], RangeSizer(100, cap=100), raw_logs, concurrency=1)


async def test_every_batch_carries_its_own_check_when_filters_outnumber_a_batch() -> None:
    node = FakeNode({5: 1}, max_blocks=10**9)
    filters = [{"address": [TOKEN_A], "topics": [TRANSFER_TOPIC, topic_of(a)]} for a in _addrs(7)]
    logs = await fetch_logs(node.batch, 0, 9, filters, RangeSizer(10, cap=10), raw_logs, concurrency=1, max_batch=3)
    assert len(logs) == 7
    assert [len(m) for m in node.batches] == [3, 3, 3, 2]
    assert all(m[0] == "eth_getBlockByNumber" and m.count("eth_getBlockByNumber") == 1 for m in node.batches)


async def test_malformed_logs_are_asked_again_then_decoded_leniently() -> None:
    node = FakeNode({n: 1 for n in range(10)}, max_blocks=10**9)
    flt = {"address": [TOKEN_A], "topics": [TRANSFER_TOPIC]}
    calls: list[bool] = []

    def picky(logs: list[dict[str, Any]], strict: bool) -> list[int]:
        calls.append(strict)
        if strict:
            raise MalformedResponse("a log index of 2^70")
        return [int(x["blockNumber"], 16) for x in logs]

    got = await fetch_logs(node.batch, 0, 9, [flt], RangeSizer(10, cap=10), picky, concurrency=1, attempts=3)
    assert sorted(got) == list(range(10))
    assert calls == [True, True, True, False]  # asked three times, then the last answer with the bad items skipped


async def test_a_piece_whose_logs_the_client_gave_up_on_as_behind_is_sent_again_whole() -> None:
    """What an atomic client returns when a node stayed behind through its attempts: the header and a
    BlockNotAvailable logs entry of the same reply. The piece is sent again whole, never half-taken."""
    node = FakeNode({n: 1 for n in range(10)}, max_blocks=10**9)
    behind = 2

    async def batch(calls: list[tuple[str, list[Any]]]) -> list[Any]:
        nonlocal behind
        results = await node.batch(calls)
        if behind:
            behind -= 1
            results[1:] = [BlockNotAvailable("eth_getLogs via x: block range extends beyond current head block")
                           for _ in results[1:]]
        return results

    flt = {"address": [TOKEN_A], "topics": [TRANSFER_TOPIC]}
    logs = await fetch_logs(batch, 0, 9, [flt], RangeSizer(10, cap=10), raw_logs, concurrency=1)
    assert sorted(int(x["blockNumber"], 16) for x in logs) == list(range(10))
    assert node.batches == [["eth_getBlockByNumber", "eth_getLogs"]] * 3
    behind = 10
    with pytest.raises(BlockNotAvailable):
        await fetch_logs(batch, 0, 9, [flt], RangeSizer(10, cap=10), raw_logs, concurrency=1)
