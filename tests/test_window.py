"""The reorg window is pure: every verdict is checked without a node or a database."""

import pytest

from chains.base import BlockRef
from indexer.sync.window import Extends, Gap, InconsistentBlocks, Mismatch, ReorgWindow, check_linked


def chain(first: int, last: int, fork: str = "a", parent_fork: str | None = None) -> list[BlockRef]:
    blocks = []
    for n in range(first, last + 1):
        parent_tag = parent_fork if (n == first and parent_fork) else fork
        blocks.append(BlockRef(n, f"{fork}{n}", f"{parent_tag}{n - 1}", 1000 + n))
    return blocks


def test_blocks_continuing_the_tip_extend_the_window() -> None:
    window = ReorgWindow(chain(10, 15))
    assert window.check(chain(16, 18)) == Extends()
    window.extend(chain(16, 18))
    assert window.tip is not None and window.tip.number == 18
    assert window.anchor is not None and window.anchor.number == 10


def test_a_block_whose_parent_differs_from_the_tip_is_a_mismatch() -> None:
    window = ReorgWindow(chain(10, 15))
    assert window.check(chain(16, 17, fork="b")) == Mismatch(number=16)


def test_blocks_not_starting_above_the_tip_are_a_gap() -> None:
    window = ReorgWindow(chain(10, 15))
    assert window.check(chain(18, 19)) == Gap(expected=16)


def test_common_ancestor_is_the_highest_block_both_agree_on() -> None:
    window = ReorgWindow(chain(10, 20))
    canonical = chain(10, 17) + chain(18, 20, fork="b", parent_fork="a")
    assert window.common_ancestor(canonical) == 17


def test_no_common_ancestor_when_the_anchor_itself_was_replaced() -> None:
    window = ReorgWindow(chain(10, 20))
    assert window.common_ancestor(chain(10, 20, fork="b")) is None


def test_rollback_then_extend_with_the_new_fork() -> None:
    window = ReorgWindow(chain(10, 20))
    window.rollback(17)
    window.extend(chain(18, 22, fork="b", parent_fork="a"))
    assert window.hash_at(18) == "b18"
    assert window.hash_at(17) == "a17"
    assert len(window) == 13


def test_prune_keeps_the_final_block_as_anchor() -> None:
    window = ReorgWindow(chain(10, 20))
    window.prune(15)
    assert window.anchor is not None and window.anchor.number == 15
    window.prune(99)  # never prunes the tip away
    assert window.tip is not None and window.tip.number == 20 and len(window) == 1


def test_unlinked_batches_are_refused() -> None:
    broken = chain(1, 3) + chain(4, 5, fork="x")
    with pytest.raises(InconsistentBlocks):
        check_linked(broken)
    with pytest.raises(InconsistentBlocks):
        ReorgWindow(broken)
    window = ReorgWindow(chain(1, 3))
    with pytest.raises(InconsistentBlocks):
        window.extend(chain(4, 5, fork="x"))
