"""The reorg window: the recent, not yet final blocks of one chain, as the database holds them. Pure, no I/O.

Invariants (checked on every change):
- block numbers are contiguous;
- each block's ``parent_hash`` is the ``hash`` of the block one below it.

The lowest block is the *anchor*: the last block known final when the window was pruned. A reorg that replaces the
anchor replaced a final block, which the indexer refuses to follow (``ReorgTooDeep``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from chains.base import BlockRef


@dataclass(frozen=True, slots=True)
class Extends:
    """The new blocks continue the window."""


@dataclass(frozen=True, slots=True)
class Mismatch:
    """The block at ``number`` does not link to the window: the chain reorganised at or below ``number - 1``."""

    number: int


@dataclass(frozen=True, slots=True)
class Gap:
    """The new blocks do not start right above the window's tip."""

    expected: int


Verdict = Extends | Mismatch | Gap


class InconsistentBlocks(ValueError):
    """A batch of blocks that does not link up by itself (the node changed its mind between two calls)."""


def check_linked(blocks: Sequence[BlockRef]) -> None:
    for lower, upper in zip(blocks, blocks[1:], strict=False):
        if upper.number != lower.number + 1 or upper.parent_hash != lower.hash:
            raise InconsistentBlocks(f"block {upper.number} does not link to block {lower.number}")


class ReorgWindow:
    def __init__(self, blocks: Iterable[BlockRef] = ()) -> None:
        self._blocks: list[BlockRef] = sorted(blocks, key=lambda b: b.number)
        check_linked(self._blocks)

    def __len__(self) -> int:
        return len(self._blocks)

    @property
    def blocks(self) -> list[BlockRef]:
        return list(self._blocks)

    @property
    def tip(self) -> BlockRef | None:
        return self._blocks[-1] if self._blocks else None

    @property
    def anchor(self) -> BlockRef | None:
        return self._blocks[0] if self._blocks else None

    def hash_at(self, number: int) -> str | None:
        if not self._blocks:
            return None
        i = number - self._blocks[0].number
        return self._blocks[i].hash if 0 <= i < len(self._blocks) else None

    def check(self, new: Sequence[BlockRef]) -> Verdict:
        """Does ``new`` (linked, ascending, non-empty) continue the window?"""
        check_linked(new)
        tip = self.tip
        if tip is None:
            return Extends()
        first = new[0]
        if first.number != tip.number + 1:
            return Gap(expected=tip.number + 1)
        if first.parent_hash != tip.hash:
            return Mismatch(number=first.number)
        return Extends()

    def common_ancestor(self, canonical: Iterable[BlockRef]) -> int | None:
        """The highest block number where the window and the node's canonical blocks agree, or None when they
        agree nowhere in the window (the reorg reaches below the anchor)."""
        by_number = {b.number: b.hash for b in canonical}
        for block in reversed(self._blocks):
            if by_number.get(block.number) == block.hash:
                return block.number
        return None

    def extend(self, new: Sequence[BlockRef]) -> None:
        if not new:
            return
        verdict = self.check(new)
        if not isinstance(verdict, Extends):
            raise InconsistentBlocks(f"cannot extend the window: {verdict}")
        self._blocks.extend(new)

    def rollback(self, to_number: int) -> None:
        """Drop every block above ``to_number``."""
        self._blocks = [b for b in self._blocks if b.number <= to_number]

    def prune(self, final_number: int) -> None:
        """Forget blocks below ``final_number``; the final block itself stays as the anchor."""
        if self._blocks and final_number > self._blocks[0].number:
            keep_from = min(final_number, self._blocks[-1].number)
            self._blocks = [b for b in self._blocks if b.number >= keep_from]

    def reset(self, anchor: BlockRef) -> None:
        """Start over from one final block (after a catch-up step)."""
        self._blocks = [anchor]
