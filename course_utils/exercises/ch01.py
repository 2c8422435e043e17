"""Checkers for chapter 01 (the character vocabulary).

Each checker compares the learner's function with `course_utils.vocab.Vocab` on small
cases (so a wrong answer gets a precise hint) and prints ✓ or ✗.
"""

from __future__ import annotations

import random
import unicodedata
from collections import Counter

from ..vocab import UNK, Vocab
from . import checker


@checker("Exercise 01.1 (a vocabulary with min_freq)")
def check_build_vocab(build_vocab) -> None:
    """`build_vocab(texts, min_freq) -> dict token -> id`, the same ids as `Vocab.build`."""

    cases = [
        (["banana", "cab"], 1),
        (["banana", "cab"], 2),
        (["人民日报", "日报社", "人人"], 2),
        (["zyx", "xyz"], 1),
    ]
    for texts, min_freq in cases:
        expected = Vocab.build(texts, min_freq=min_freq).token2idx
        got = build_vocab(list(texts), min_freq)
        assert isinstance(got, dict), f"return a dict token -> id, got {type(got).__name__}"
        specials = {k: got.get(k) for k in ("<pad>", "<unk>", "<sep>")}
        assert specials == {"<pad>": 0, "<unk>": 1, "<sep>": 2}, (
            f"the specials come first: <pad>=0, <unk>=1, <sep>=2; got {specials}"
        )
        assert got == expected, (
            f"build_vocab({texts!r}, min_freq={min_freq}) gave {got}, expected {expected} "
            f"(keep characters seen at least min_freq times, sorted, after the specials)"
        )
    texts = ["春眠不觉晓", "处处闻啼鸟", "夜来风雨声", "花落知多少"]
    shuffled = texts[:]
    random.Random(0).shuffle(shuffled)
    assert build_vocab(texts, 1) == build_vocab(shuffled, 1), (
        "the ids depend on the order of the texts: sort the characters"
    )


@checker("Exercise 01.2 (coverage of the top-k characters)")
def check_coverage(coverage) -> None:
    """`coverage(counts, k) -> float`: share of all occurrences due to the k most frequent."""

    counts = Counter({"a": 1, "b": 5, "c": 4})  # inserted in an order that is not by count
    cases = [(counts, 1, 0.5), (counts, 2, 0.9), (counts, 3, 1.0), (counts, 10, 1.0),
             (counts, 0, 0.0), (Counter("人人人民"), 1, 0.75)]
    for c, k, expected in cases:
        got = coverage(Counter(c), k)
        assert abs(float(got) - expected) < 1e-9, (
            f"coverage({dict(c)}, k={k}) returned {got}, expected {expected}: add up the counts "
            f"of the k *most frequent* characters and divide by the sum of all counts"
        )


@checker("Exercise 01.3 (NFKC normalisation)")
def check_nfkc_unk_rate(nfkc_unk_rate) -> None:
    """`nfkc_unk_rate(train_texts, test_texts) -> float`, both sides NFKC-normalised."""

    def reference(train, test):
        vocab = Vocab.build([unicodedata.normalize("NFKC", t) for t in train])
        ids = [i for t in test for i in vocab.encode(unicodedata.normalize("NFKC", t))]
        return sum(i == UNK for i in ids) / len(ids)

    cases = [
        (["价格１２０元，很好！"], ["价格120元,很好!"]),  # full-width vs half-width
        (["ＡＢＣ"], ["abc"]),  # NFKC does not change case
        (["你好"], ["你好吗"]),
    ]
    for train, test in cases:
        expected = reference(train, test)
        got = nfkc_unk_rate(list(train), list(test))
        assert abs(float(got) - expected) < 1e-9, (
            f"nfkc_unk_rate({train!r}, {test!r}) returned {got}, expected {expected:.4f}: "
            f"normalise *both* the training and the test texts with "
            f"unicodedata.normalize('NFKC', text) before building and encoding"
        )
