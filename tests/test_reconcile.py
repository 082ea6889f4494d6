"""The follow decision is pure: what the window and the node's latest blocks say to do, without a node or a database."""

import pytest

from chains.base import ReorgTooDeep
from indexer.sync.reconcile import Advance, Reconcile, Revert, Wait, next_step, revert_point
from indexer.sync.window import InconsistentBlocks, ReorgWindow
from tests.test_window import chain


def test_new_blocks_on_the_tip_advance() -> None:
    window = ReorgWindow(chain(10, 15))
    new = chain(16, 18)
    assert next_step(window, new[-1], new) == Advance(tuple(new))


def test_nothing_above_the_cursor_waits() -> None:
    window = ReorgWindow(chain(10, 15))
    assert isinstance(next_step(window, chain(15, 15)[0], []), Wait)


def test_a_node_behind_on_the_same_chain_waits_and_is_not_a_reorg() -> None:
    """A node a few blocks behind (one of several behind a load balancer) reports a head the window holds with the
    same hash: nothing to do, nothing to roll back."""
    window = ReorgWindow(chain(10, 15))
    assert isinstance(next_step(window, chain(12, 12)[0], []), Wait)


def test_a_head_unknown_to_the_window_below_its_anchor_waits() -> None:
    window = ReorgWindow(chain(10, 15))
    assert isinstance(next_step(window, chain(7, 7, fork="z")[0], []), Wait)


def test_new_blocks_that_do_not_link_to_the_tip_reconcile() -> None:
    window = ReorgWindow(chain(10, 15))
    new = chain(16, 17, fork="b", parent_fork="b")
    assert next_step(window, new[-1], new) == Reconcile()


def test_a_replaced_tip_at_the_same_height_reconciles() -> None:
    """A reorg that kept the height: no block above the cursor, but the node's head at the tip's height differs."""
    window = ReorgWindow(chain(10, 15))
    assert next_step(window, chain(15, 15, fork="b")[0], []) == Reconcile()


def test_a_reorg_to_a_lower_height_reconciles() -> None:
    window = ReorgWindow(chain(10, 15))
    assert next_step(window, chain(13, 13, fork="b", parent_fork="a")[0], []) == Reconcile()


def test_new_blocks_that_do_not_link_among_themselves_are_refused() -> None:
    window = ReorgWindow(chain(10, 15))
    with pytest.raises(InconsistentBlocks):
        next_step(window, chain(17, 17)[0], [chain(16, 16)[0], chain(17, 17, fork="b")[0]])


def test_the_revert_point_is_the_common_ancestor() -> None:
    window = ReorgWindow(chain(10, 20))
    canonical = chain(10, 16) + chain(17, 20, fork="b", parent_fork="a")
    assert revert_point(window, canonical) == Revert(16)


def test_the_revert_point_on_a_node_whose_chain_is_shorter_than_the_window() -> None:
    window = ReorgWindow(chain(10, 20))
    canonical = chain(10, 14) + chain(15, 17, fork="b", parent_fork="a")  # the node has only up to 17
    assert revert_point(window, canonical) == Revert(14)


def test_a_reorg_replacing_the_final_anchor_is_too_deep() -> None:
    window = ReorgWindow(chain(10, 20))
    with pytest.raises(ReorgTooDeep, match="block 10"):
        revert_point(window, chain(10, 20, fork="b", parent_fork="b"))
