"""Checkers for chapter 00 (introduction): counting the corpora.

Each checker takes the learner's function, runs it on small cases with known answers
and on the real corpus, and prints ✓ or ✗ with a hint (see `course_utils.exercises`).
"""

from __future__ import annotations

import pandas as pd

from .. import data
from . import checker


@checker("Exercise 00.1 (count characters)")
def check_count_chars(count_chars) -> None:
    """`count_chars(texts) -> (total characters, distinct characters)`."""
    cases = [
        (["ab", "ba"], (4, 2)),
        (["人民日报", "日报"], (6, 4)),
        ([""], (0, 0)),
        (["a b"], (3, 3)),  # a space is a character too
    ]
    for texts, expected in cases:
        got = count_chars(list(texts))
        assert tuple(got) == expected, (
            f"count_chars({texts!r}) returned {got!r}, expected {expected!r} "
            f"(total = sum of lengths, distinct = size of the set of characters)"
        )

    stats = data.corpus_stats().set_index("corpus")
    got = tuple(count_chars(data.load_news()))
    expected = (int(stats.loc["news", "characters"]), int(stats.loc["news", "distinct chars"]))
    assert got == expected, f"on the news corpus you got {got}, corpus_stats() says {expected}"


@checker("Exercise 00.2 (share of positive reviews)")
def check_positive_share(positive_share) -> None:
    """`positive_share(df) -> float`: the fraction of rows with `label == 1`."""
    toy = pd.DataFrame({"review": ["好", "差", "很好", "不错"], "label": [1, 0, 1, 1]})
    got = positive_share(toy)
    assert isinstance(got, float), f"return a float, got {type(got).__name__}"
    assert abs(got - 0.75) < 1e-9, f"on 3 positive of 4 reviews you returned {got}, expected 0.75"

    df = data.load_sentiment()
    expected = float((df.label == 1).mean())
    got = positive_share(df)
    assert abs(got - expected) < 1e-9, (
        f"on load_sentiment() you returned {got}, expected {expected:.4f} (a share, not a count)"
    )
