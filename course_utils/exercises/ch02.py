"""Checkers for chapter 02 (datasets and batches).

Each checker runs the learner's function on small cases whose answers come from
`course_utils.batches` and prints ✓ or ✗ with a hint.
"""

from __future__ import annotations

import torch

from ..batches import PaddedLines, non_pad_fraction
from ..vocab import Vocab
from . import checker


@checker("Exercise 02.1 (a padded example)")
def check_make_xy(make_xy) -> None:
    """`make_xy(ids, seq_len, pad=0) -> (x, y)`: the course's shifted, padded pair."""
    cases = [
        ([5, 6, 7, 8], 6, ([5, 6, 7, 0, 0, 0], [6, 7, 8, 0, 0, 0])),
        ([3, 4], 1, ([3], [4])),
        ([9, 10, 11], 2, ([9, 10], [10, 11])),
    ]
    for ids, seq_len, expected in cases:
        x, y = make_xy(list(ids), seq_len)
        x, y = [int(v) for v in x], [int(v) for v in y]
        assert len(x) == len(y) == seq_len, f"x and y must both have seq_len={seq_len} items"
        assert (x, y) == expected, (
            f"make_xy({ids}, {seq_len}) gave x={x}, y={y}, expected x={expected[0]}, "
            f"y={expected[1]} (x drops the last id, y drops the first, both padded on the right)"
        )

    line = "迈向充满希望的新世纪一九九八年"
    vocab = Vocab.build([line])
    ds = PaddedLines([line], vocab, min_len=4, max_len=20)
    x_ref, y_ref = ds[0]
    x, y = make_xy(vocab.encode(line), ds.seq_len)
    assert [int(v) for v in x] == x_ref.tolist() and [int(v) for v in y] == y_ref.tolist(), (
        "your pair differs from course_utils.batches.PaddedLines on a real line"
    )


@checker("Exercise 02.2 (useful tokens per batch)")
def check_useful_fraction(useful_fraction) -> None:
    """`useful_fraction(batch) -> float`: the share of entries that are not `<pad>` (0)."""

    cases = [
        torch.tensor([[5, 6, 0, 0], [7, 0, 0, 0]]),
        torch.tensor([[1, 2, 3]]),
        torch.zeros(2, 5, dtype=torch.long),
        torch.tensor([[2, 0], [0, 4], [9, 9]]),
    ]
    for batch in cases:
        expected = non_pad_fraction(batch)
        got = useful_fraction(batch.clone())
        assert abs(float(got) - expected) < 1e-6, (
            f"on {batch.tolist()} you returned {float(got):.4f}, expected {expected:.4f} "
            f"(count the entries != 0 and divide by all entries)"
        )


@checker("Exercise 02.3 (what the 16-64 filter keeps)")
def check_kept_char_share(kept_char_share) -> None:
    """`kept_char_share(texts, min_len, max_len) -> float`: share of characters kept."""
    cases = [
        (["ab", "abcd", "abcdefgh"], 3, 5, 4 / 14),
        (["ab", "abcd", "abcdefgh"], 2, 8, 1.0),
        (["ab", "abcd"], 5, 6, 0.0),
    ]
    for texts, lo, hi, expected in cases:
        got = kept_char_share(list(texts), lo, hi)
        assert abs(float(got) - expected) < 1e-9, (
            f"kept_char_share({texts}, {lo}, {hi}) returned {got}, expected {expected:.4f}: "
            f"sum the lengths of the texts with {lo} <= len <= {hi} (bounds included) and "
            f"divide by the total length of all texts (characters, not texts)"
        )
