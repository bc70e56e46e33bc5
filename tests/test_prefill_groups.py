"""Prefill passes of similar suffix length (the continuous batcher's grouping, a pure function)."""

from streamsynth.backends.continuous import PASS_COST, _prefill_groups


def test_rows_of_very_different_lengths_get_their_own_passes():
    rows = list("abcdefgh")
    lengths = [30, 60, 31, 59, 30, 60, 32, 58]
    groups = _prefill_groups(rows, lengths)
    assert sorted(r for g in groups for r in g) == rows  # every row once
    assert [sorted(g) for g in groups] == [["a", "c", "e", "g"], ["b", "d", "f", "h"]]


def test_similar_lengths_share_one_pass_and_cost_never_rises():
    rows = list(range(10))
    lengths = [40 + (i % 3) for i in rows]
    groups = _prefill_groups(rows, lengths)
    assert len(groups) == 1

    def cost(gs):
        return sum(len(g) * max(lengths[r] for r in g) + PASS_COST for g in gs)

    mixed = [5, 80, 6, 81, 7, 79, 40, 41]
    idx = list(range(len(mixed)))
    lengths = mixed
    assert cost(_prefill_groups(idx, mixed)) <= cost([idx])


def test_empty_and_single():
    assert _prefill_groups([], []) == []
    assert _prefill_groups(["x"], [7]) == [["x"]]
