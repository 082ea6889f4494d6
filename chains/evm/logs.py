"""eth_getLogs over block ranges: provider limit errors, an adaptive range size, filter shapes, and proof that the
node that answered had every block of the range.

Pure parts (no I/O): :func:`classify_range_error`, :func:`node_behind`, :class:`RangeSizer`, :func:`plan_filters`.
The async part, :func:`fetch_logs`, walks a range with a bounded number of concurrent requests, splitting a
range the provider refused and splitting the address lists of a filter the provider found too wide.

Completeness (why each piece carries an ``eth_getBlockByNumber``): a node behind the others (one of several behind a
load balancer) answers ``eth_getLogs`` over a range reaching above its head with the logs it has and no error: geth
and anvil clamp the range to their head, as do bsc and bor (newer geth refuses with "block range extends beyond
current head block", anvil a range starting above its head with "BlockOutOfRangeError": see :func:`beyond_head`).
An empty answer cannot be told from "no transfer happened". So each piece is sent as one JSON-RPC batch that starts
with ``eth_getBlockByNumber(<piece's last block>)``: one HTTP request, hence one backend behind a load balancer, and
a node that has the last block when it reads the header has the whole range when it reads the logs (batch entries
are served in order; final blocks do not go away). A ``null`` header (or a lower number, or an error that says the
node is behind) means the node lacked blocks of the piece: the whole piece is sent again, a few times, then
:class:`chains.base.BlockNotAvailable` is raised for the caller to retry later. The check costs one header per piece
(a piece is hundreds to thousands of blocks), not one request per block.

This proof needs the piece's entries to travel together, on every attempt: the batch function must be atomic
(``JsonRpcClient.batch(..., atomic=True)``), which re-sends the whole batch when any entry failed. A client that
re-sent only a failed logs entry (a per-entry 429) could have it answered by a node behind, clamped, next to a
header another node gave. An endpoint that refuses batches cannot carry the proof at all: the atomic client passes it
over, and raises ``BatchesRefused`` when every endpoint does, for the caller to use per-block-hash queries (which
prove themselves).

Filter shapes (topics are AND across positions, OR within one):

- a small watch set (``<= address_filter_limit``): two filters per chunk of watched addresses, one with the
  chunk in the ``from`` position and one in the ``to`` position; the tokens go in ``address``. A transfer between
  two watched addresses comes back from both; the caller, which decodes every log anyway, keeps one.
- a large watch set: one token-wide filter (event topic only) and an in-memory membership test by the caller.
  Sending 100k addresses in a filter fails on every provider (bsc/bor cap each position at 1000 values).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from chains.base import BlockNotAvailable, ChainError, MalformedResponse, RangeTooLarge

T = TypeVar("T")

TRANSFER_TOPIC = "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"
"""keccak256("Transfer(address,address,uint256)")."""
LOG_TRANSFER_TOPIC = "0xe6497e3ee548a3372136af2fcb0696db31fc6cf20260707645068bd3fe97f3c4"
"""Polygon's ``LogTransfer(address token, address from, address to, uint256 amount, ...)`` from 0x…1010."""
POLYGON_NATIVE_CONTRACT = "0x0000000000000000000000000000000000001010"

DEFAULT_ADDRESS_FILTER_LIMIT = 500
DEFAULT_POSITION_LIMIT = 1000  # bsc and bor default per topic position / address list
DEFAULT_CONCURRENCY = 4
DEFAULT_MAX_BATCH = 100  # entries per JSON-RPC batch (chains.evm.rpc.JsonRpcClient.max_batch)
PIECE_ATTEMPTS = 4  # sends of one piece before a node that is behind (or a malformed answer) is given up on

Log = dict[str, Any]
LogFilter = dict[str, Any]
"""An eth_getLogs filter without its block range: ``{"address": [...], "topics": [...]}``."""


# ---------------------------------------------------------------------------------------------------- errors


class LogRangeTooLarge(RangeTooLarge):
    """A refused log range, with what the provider told about its limit.

    ``max_blocks``: the provider's hard block-span limit, when it named one (a limit to remember).
    ``suggested_from``/``suggested_to``: a range the provider proposed (result-count limits; depends on density).
    """

    def __init__(
        self,
        message: str,
        suggested_to: int | None = None,
        *,
        suggested_from: int | None = None,
        max_blocks: int | None = None,
    ) -> None:
        super().__init__(message, suggested_to)
        self.suggested_from = suggested_from
        self.max_blocks = max_blocks


class FilterTooLarge(LogRangeTooLarge):
    """Too many addresses or topics in one filter position: split the address lists, not the block range."""


_HEX_PAIR_RE = re.compile(r"\[\s*(0x[0-9a-fA-F]+)\s*,\s*(0x[0-9a-fA-F]+)\s*\]")

# (pattern, how to read the block limit from the match: group index or a multiplier for "2K")
_MAX_BLOCKS_PATTERNS: list[re.Pattern[str]] = [
    re.compile(r"exceed maximum block range: (\d+)", re.I),  # bsc
    re.compile(r"query exceeds max block range (\d+)", re.I),  # reth
    re.compile(r"range \d+ exceeds limit of (\d+)", re.I),  # Infura -32602
    re.compile(r"up to a (\d+)K block range", re.I),  # Alchemy (thousands)
    re.compile(r"limited to (?:a )?([\d,]+) ?blocks? range", re.I),  # QuickNode
    re.compile(r"block range (?:is )?(?:too (?:large|wide|big))?.*?max(?:imum)?(?: is)?:? ?(\d+)", re.I),
    re.compile(r"maximum \[from, to\] blocks distance: (\d+)", re.I),  # bor/erigon
    re.compile(r"ranges? over (\d+) blocks", re.I),
]
_GENERIC_RANGE_RE = re.compile(
    r"block range|blocks range|more than \d+ results|response size|too many (?:logs|results)|"
    r"query timeout exceeded|log response size|returned more than",
    re.I,
)
_FILTER_RE = re.compile(
    r"exceed max addresses or topics per search position|too many (?:addresses|topics)", re.I
)
_BEYOND_HEAD = r"beyond (?:the )?current head|BlockOutOfRange|block height is \d+ but requested"
_BEYOND_HEAD_RE = re.compile(_BEYOND_HEAD, re.I)
_BEHIND_RE = re.compile(
    _BEYOND_HEAD + r"|unknown block|header not found|block not found|could not be found|"
    r"not (?:yet )?(?:available|synced)",
    re.I,
)


def beyond_head(message: str) -> bool:
    """Whether a JSON-RPC error message says the request reaches above the head of the node that answered: newer
    geth's (and reth's) ``block range extends beyond current head block``, anvil's ``BlockOutOfRangeError: block
    height is 5 but requested was 64`` (an eth_getLogs range starting above its head). Both come with -32602
    (invalid params), yet the request is fine: the node is behind. :func:`chains.evm.rpc.classify_rpc_error` makes
    them ``BlockNotAvailable``, a fault of that node, never a refusal of the range."""
    return bool(_BEYOND_HEAD_RE.search(message))


def node_behind(error: BaseException) -> bool:
    """Whether an error a node answered a block-specific request with says it lacks the block: geth and anvil's
    ``unknown block`` (eth_getLogs by an unknown ``blockHash``), ``header not found``, erigon/reth's ``block not
    found``, Nethermind's ``could not be found``, and the texts of :func:`beyond_head` (already
    ``BlockNotAvailable`` when they come through the client). Such a node is behind the others (or on another fork):
    a transient fault of that node, never an empty answer."""
    return isinstance(error, BlockNotAvailable) or (
        isinstance(error, ChainError) and bool(_BEHIND_RE.search(str(error)))
    )


def _int_or_none(value: Any) -> int | None:
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value, 0)
        except ValueError:
            return None
    return None


def classify_range_error(code: int | None, message: str, data: Any) -> RangeTooLarge | None:
    """The :class:`LogRangeTooLarge` (or :class:`FilterTooLarge`) a provider's eth_getLogs error means, or None
    when it is not about the size of the request."""
    shown = f"eth_getLogs refused: {code}: {message[:300]}"
    if _BEHIND_RE.search(message):
        return None  # "block range extends beyond current head block": the node is behind, the range is fine
    if _FILTER_RE.search(message):
        return FilterTooLarge(shown)

    suggested_from = suggested_to = None
    if isinstance(data, dict) and "from" in data and "to" in data:
        suggested_from, suggested_to = _int_or_none(data.get("from")), _int_or_none(data.get("to"))
    if suggested_to is None:
        m = _HEX_PAIR_RE.search(message)
        if m:
            suggested_from, suggested_to = int(m.group(1), 16), int(m.group(2), 16)

    max_blocks = None
    for pattern in _MAX_BLOCKS_PATTERNS:
        m = pattern.search(message)
        if m:
            max_blocks = int(m.group(1).replace(",", ""))
            if "K block range" in pattern.pattern:
                max_blocks *= 1000
            break

    if max_blocks is None and suggested_to is None and not _GENERIC_RANGE_RE.search(message):
        return None
    return LogRangeTooLarge(shown, suggested_to, suggested_from=suggested_from, max_blocks=max_blocks)


# ---------------------------------------------------------------------------------------------------- sizing


class RangeSizer:
    """How many blocks to ask for in one eth_getLogs call.

    Grows by ``fast_growth`` (25%) after each success until the first refusal, then by ``slow_growth`` (5%),
    never past ``cap`` nor past a limit the provider named (remembered in ``learned_limit``). A refusal halves
    the size, or jumps to the provider's suggested range or named limit.
    """

    def __init__(
        self,
        initial: int = 1000,
        *,
        cap: int = 2000,
        minimum: int = 1,
        fast_growth: float = 0.25,
        slow_growth: float = 0.05,
    ) -> None:
        self.cap = max(1, cap)
        self.minimum = max(1, minimum)
        self.size = max(self.minimum, min(initial, self.cap))
        self.learned_limit: int | None = None
        self.fast_growth = fast_growth
        self.slow_growth = slow_growth
        self._probing = True

    @property
    def ceiling(self) -> int:
        return min(self.cap, self.learned_limit) if self.learned_limit else self.cap

    def on_success(self, blocks: int) -> None:
        """A range of ``blocks`` succeeded; grow when that range was a full-sized one."""
        if blocks < self.size:
            return  # a short tail or a split piece says nothing about the current size
        rate = self.fast_growth if self._probing else self.slow_growth
        self.size = min(self.ceiling, max(self.size + 1, int(self.size * (1 + rate))))

    def on_too_large(self, err: RangeTooLarge, from_block: int, to_block: int) -> tuple[int, int]:
        """Shrink after ``[from_block, to_block]`` was refused; returns the first piece to try again."""
        self._probing = False
        requested = to_block - from_block + 1
        max_blocks = getattr(err, "max_blocks", None)
        suggested_from = getattr(err, "suggested_from", None)
        if isinstance(max_blocks, int) and max_blocks > 0:
            self.learned_limit = min(self.learned_limit or max_blocks, max_blocks)
            new = min(max_blocks, requested - 1) if requested > 1 else 1
        elif (
            err.suggested_to is not None
            and err.suggested_to >= from_block
            and (suggested_from is None or suggested_from == from_block)
            and err.suggested_to < to_block
        ):
            new = err.suggested_to - from_block + 1
        else:
            new = requested // 2
        new = max(self.minimum, min(new, self.ceiling, max(1, requested - 1)))
        self.size = new
        return from_block, from_block + new - 1


# ---------------------------------------------------------------------------------------------------- shapes


def topic_of(address: str) -> str:
    """A lowercase 0x address as a 32-byte topic."""
    return "0x" + "0" * 24 + address[2:]


def chunked(items: Sequence[str], size: int) -> list[list[str]]:
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


@dataclass(frozen=True, slots=True)
class FilterPlan:
    """The filters to send for one event, and whether results must be filtered by membership in memory."""

    filters: list[LogFilter]
    token_wide: bool


def plan_filters(
    event_topic: str,
    emitters: Iterable[str],
    watched: Iterable[str],
    *,
    from_position: int = 1,
    address_filter_limit: int = DEFAULT_ADDRESS_FILTER_LIMIT,
    position_limit: int = DEFAULT_POSITION_LIMIT,
) -> FilterPlan:
    """Filters for logs of ``event_topic`` emitted by ``emitters`` whose from/to (topics ``from_position`` and
    ``from_position + 1``) is in ``watched``. No emitters or nothing watched: no filters (an empty ``address``
    list would mean every contract)."""
    emitter_list = sorted(set(emitters))
    watched_list = sorted(set(watched))
    if not emitter_list or not watched_list:
        return FilterPlan([], token_wide=False)
    position_limit = max(1, position_limit)
    emitter_chunks = chunked(emitter_list, position_limit)
    filters: list[LogFilter] = []
    if len(watched_list) > address_filter_limit:
        for emitters_chunk in emitter_chunks:
            filters.append({"address": emitters_chunk, "topics": [event_topic]})
        return FilterPlan(filters, token_wide=True)
    pad: list[str | None] = [None] * (from_position - 1)
    for watched_chunk in chunked([topic_of(a) for a in watched_list], position_limit):
        for emitters_chunk in emitter_chunks:
            filters.append({"address": emitters_chunk, "topics": [event_topic, *pad, watched_chunk]})
            filters.append({"address": emitters_chunk, "topics": [event_topic, *pad, None, watched_chunk]})
    return FilterPlan(filters, token_wide=False)


# ---------------------------------------------------------------------------------------------------- fetching


def first_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first non-group exception inside ``group``."""
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


@asynccontextmanager
async def unwrap_task_group() -> AsyncIterator[asyncio.TaskGroup]:
    """``asyncio.TaskGroup`` that raises the first failure itself (a ``ChainError``), not an ExceptionGroup:
    the adapter's callers handle the error tree, and the siblings were cancelled anyway."""
    try:
        async with asyncio.TaskGroup() as tg:
            yield tg
    except BaseExceptionGroup as group:
        raise first_leaf(group) from None


BatchFn = Callable[[list[tuple[str, list[Any]]]], Awaitable[list[Any]]]
"""``JsonRpcClient.batch`` with ``return_errors=True, atomic=True``: results or ``ChainError`` instances, in order,
all from one reply; at most ``max_batch`` calls, sent together as one request on every attempt."""

Decode = Callable[[list[Log], bool], list[T]]
"""What the caller makes of one piece's raw logs: ``decode(logs, strict)``. Strict, it raises ``MalformedResponse``
for a log it would keep that carries impossible values (the piece is then asked again); not strict (the last
answer, after the attempts), it skips such logs and reports them."""


def raw_logs(logs: list[Log], strict: bool) -> list[Log]:
    """The :data:`Decode` that keeps the node's logs as they are."""
    return logs


def _piece_logs(answers: list[tuple[Any, list[Any]]], end: int) -> list[Log]:
    """The logs of one piece's batches, once each batch's header shows its node had block ``end``; raises
    ``BlockNotAvailable`` when a node was behind, and any other error an entry holds."""
    out: list[Log] = []
    for header, results in answers:
        for r in (header, *results):
            if isinstance(r, BaseException):
                if node_behind(r):  # the client's BlockNotAvailable, or a node error text saying so
                    raise BlockNotAvailable(f"block {end} is not available on the node that answered ({r})") from r
                raise r
        if header is None:
            raise BlockNotAvailable(f"block {end} is not available on the node that answered the logs (behind)")
        number = header.get("number") if isinstance(header, dict) else None
        if not isinstance(number, str) or not number.startswith("0x") or int(number, 16) != end:
            raise MalformedResponse(f"block {end}: the header in the logs batch is not that block's")
        for r in results:
            if not isinstance(r, list):
                raise MalformedResponse(f"eth_getLogs returned {type(r).__name__}, not a list")
            out.extend(r)
    return out


def _split_filter(flt: LogFilter) -> list[LogFilter]:
    """Halve the longest list in ``flt`` (its address list or a topic position)."""
    lists: list[tuple[int, str | int]] = []
    if isinstance(flt.get("address"), list) and len(flt["address"]) > 1:
        lists.append((len(flt["address"]), "address"))
    for pos, topic in enumerate(flt.get("topics", [])):
        if isinstance(topic, list) and len(topic) > 1:
            lists.append((len(topic), pos))
    if not lists:
        raise ValueError("a filter with one value per position cannot be split")
    _, where = max(lists, key=lambda item: item[0])
    values = flt["address"] if where == "address" else flt["topics"][where]
    halves = [values[: len(values) // 2], values[len(values) // 2 :]]
    out = []
    for half in halves:
        topics: list[Any] = list(flt.get("topics", []))
        address = flt.get("address")
        if where == "address":
            address = half
        else:
            assert isinstance(where, int)
            topics[where] = half
        out.append({"address": address, "topics": topics})
    return out


async def fetch_logs(
    batch: BatchFn,
    first: int,
    last: int,
    filters: list[LogFilter],
    sizer: RangeSizer,
    decode: Decode[T],
    *,
    concurrency: int = DEFAULT_CONCURRENCY,
    max_batch: int = DEFAULT_MAX_BATCH,
    attempts: int = PIECE_ATTEMPTS,
) -> list[T]:
    """Every log matching any of ``filters`` in blocks ``first..last``, through ``decode`` piece by piece. The node
    sends them in no particular order, a log matched by two filters twice, ``removed`` logs included: ``decode``
    drops what it does not want, which costs less than sorting and de-duplicating tens of thousands of raw dicts
    first (the catch-up hot path).

    The range is walked in pieces of ``sizer.size`` blocks by ``concurrency`` workers; each piece sends its
    filters in one JSON-RPC batch (several when they are more than ``max_batch``) that starts with the header of the
    piece's last block (see the module docstring). A refused piece is split (as the provider suggested or in half)
    and its pieces are retried; a filter refused as too wide is split into two filters for the rest of the walk. A
    piece whose node was behind, or whose logs ``decode`` found malformed, is sent again, up to ``attempts`` times:
    then ``BlockNotAvailable`` is raised, or the last (complete) answer is decoded leniently.
    """
    if not filters or last < first:
        return []
    current_filters = list(filters)
    found: list[T] = []
    pending: list[tuple[int, int]] = []
    cursor = first
    in_flight = 0
    changed = asyncio.Condition()
    per_batch = max(1, max_batch - 1)  # one entry of each batch is the header check

    # a range no bigger than the provider's limit is still cut in ``concurrency`` pieces, so the workers share it
    fair_share = max(1, -(-(last - first + 1) // concurrency))

    def next_range() -> tuple[int, int] | None:
        nonlocal cursor
        if pending:
            return pending.pop()
        if cursor > last:
            return None
        start, end = cursor, min(last, cursor + min(sizer.size, fair_share) - 1)
        cursor = end + 1
        return start, end

    async def send(start: int, end: int, flts: list[LogFilter]) -> list[tuple[Any, list[Any]]]:
        """(header of ``end``, the filters' results) per batch, each batch one request."""
        check = ("eth_getBlockByNumber", [hex(end), False])
        groups = [flts[i : i + per_batch] for i in range(0, len(flts), per_batch)]
        sends = [
            batch([check] + [("eth_getLogs", [{**flt, "fromBlock": hex(start), "toBlock": hex(end)}])
                             for flt in group])
            for group in groups
        ]
        replies = [await sends[0]] if len(sends) == 1 else await asyncio.gather(*sends)
        return [(reply[0], reply[1:]) for reply in replies]

    async def fetch_piece(start: int, end: int) -> None:
        last_error: ChainError | None = None
        complete: list[Log] | None = None  # the logs of the last answer that covered the whole piece
        for _ in range(max(1, attempts)):
            flts = list(current_filters)
            answers = await send(start, end, flts)
            results = [r for _, group in answers for r in group]
            wide = [(flts[i], r) for i, r in enumerate(results) if isinstance(r, FilterTooLarge)]
            if wide:
                for flt, err in wide:
                    if flt in current_filters:
                        try:
                            halves = _split_filter(flt)
                        except ValueError:
                            raise err from None
                        current_filters.remove(flt)
                        current_filters.extend(halves)
                pending.append((start, end))
                return
            refused = next((r for r in results if isinstance(r, RangeTooLarge)), None)
            if refused is not None:
                if start == end:
                    raise refused
                a, b = sizer.on_too_large(refused, start, end)
                pending.append((b + 1, end))
                pending.append((a, b))
                return
            try:
                logs = _piece_logs(answers, end)
            except (BlockNotAvailable, MalformedResponse) as exc:
                last_error = exc
                continue
            complete = logs
            try:
                decoded = decode(logs, True)
            except MalformedResponse as exc:
                last_error = exc
                continue
            found.extend(decoded)
            sizer.on_success(end - start + 1)
            return
        if complete is None:
            assert last_error is not None
            raise last_error
        found.extend(decode(complete, False))  # every node answered it malformed: skip (and report) what is
        sizer.on_success(end - start + 1)

    async def worker() -> None:
        nonlocal in_flight
        while True:
            async with changed:
                while (piece := next_range()) is None and in_flight > 0:
                    await changed.wait()
                if piece is None:
                    changed.notify_all()
                    return
                in_flight += 1
            try:
                await fetch_piece(*piece)
            finally:
                async with changed:
                    in_flight -= 1
                    changed.notify_all()

    async with unwrap_task_group() as tg:
        for _ in range(max(1, concurrency)):
            tg.create_task(worker())
    return found
