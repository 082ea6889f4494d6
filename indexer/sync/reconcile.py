"""The realtime stream's decision, apart from carrying it out: what the window and the node's latest blocks say to do
next. Pure, no I/O (the watcher fetches, asks, then writes), so every case is tested without a node or a database.

Steps (what :func:`next_step` returns)::

    Advance(blocks)   the new blocks continue the window's tip: index them
    Reconcile()       the new blocks, or the node's head, contradict the window: the chain reorganised. Fetch the
                      node's blocks over the window's span and ask :func:`revert_point`
    Wait()            nothing new (the node has no block above the cursor, or is behind it on the same chain)

:func:`revert_point` gives ``Revert(ancestor)``: the highest block where the window and the node agree; everything
above it is rolled back and the node's blocks from ``ancestor + 1`` are indexed IN THE SAME TRANSACTION. When they
agree nowhere in the window, a block the indexer had as final was replaced: :class:`chains.base.ReorgTooDeep`, and
the chain stops loudly instead of diverging.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from chains.base import BlockRef, ReorgTooDeep
from indexer.sync.window import Extends, ReorgWindow, check_linked


@dataclass(frozen=True, slots=True)
class Advance:
    blocks: tuple[BlockRef, ...]


@dataclass(frozen=True, slots=True)
class Reconcile:
    """The window's blocks must be compared with the node's to find where they part."""


@dataclass(frozen=True, slots=True)
class Wait:
    reason: str


@dataclass(frozen=True, slots=True)
class Revert:
    """Roll back everything above ``ancestor`` (the highest block the window and the node agree on)."""

    ancestor: int


Step = Advance | Reconcile | Wait


def next_step(window: ReorgWindow, head: BlockRef, new: Sequence[BlockRef]) -> Step:
    """``new``: the node's blocks right above the window's tip (linked, ascending; empty when it has none).

    A head at or below the tip whose hash the window holds differently is a reorg that kept or lowered the height;
    a head merely below the tip with the same hash, or unknown to the window, is a node behind the others."""
    check_linked(new)
    known = window.hash_at(head.number)
    tip = window.tip
    if tip is not None and head.number <= tip.number and known is not None and known != head.hash:
        return Reconcile()
    if not new:
        return Wait("no block above the cursor")
    if tip is not None and not isinstance(window.check(new), Extends):
        return Reconcile()
    return Advance(tuple(new))


def revert_point(window: ReorgWindow, canonical: Sequence[BlockRef]) -> Revert:
    """Where to roll back to, given the node's blocks over the window's span."""
    ancestor = window.common_ancestor(canonical)
    anchor = window.anchor
    if ancestor is None:
        where = f"block {anchor.number}" if anchor is not None else "the window's anchor"
        raise ReorgTooDeep(
            f"the chain replaced {where}, which was final; stored data above it can no longer be trusted. "
            "Investigate the node, then re-index from a known good block"
        )
    return Revert(ancestor)
