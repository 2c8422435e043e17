"""The exercise checkers of chapters 00-02: ✓ for a right answer, ✗ for a wrong one,
"not attempted" for a stub, and never an exception."""

from __future__ import annotations

import unicodedata
from collections import Counter

import pytest

from course_utils.exercises import ch00, ch01, ch02
from course_utils.vocab import UNK, Vocab


def _stub(*args, **kwargs):
    raise NotImplementedError


def _verdict(check, answer, capsys) -> tuple[bool, str]:
    ok = check(answer)
    return ok, capsys.readouterr().out


# ------------------------------------------------------------ right answers


def count_chars(texts):
    return sum(map(len, texts)), len(set("".join(texts)))


def positive_share(df):
    return float((df.label == 1).mean())


def build_vocab(texts, min_freq=1):
    counts = Counter("".join(texts))
    chars = sorted(c for c, n in counts.items() if n >= min_freq)
    return {tok: i for i, tok in enumerate(["<pad>", "<unk>", "<sep>"] + chars)}


def unk_rate(vocab, texts):
    ids = [i for t in texts for i in vocab.encode(t)]
    return sum(i == UNK for i in ids) / len(ids)


def coverage(counts, k):
    return sum(n for _, n in counts.most_common(k)) / sum(counts.values())


def nfkc_unk_rate(train, test):
    vocab = Vocab.build([unicodedata.normalize("NFKC", t) for t in train])
    return unk_rate(vocab, [unicodedata.normalize("NFKC", t) for t in test])


def make_xy(ids, seq_len, pad=0):
    x, y = ids[:-1], ids[1:]
    return x + [pad] * (seq_len - len(x)), y + [pad] * (seq_len - len(y))


def useful_fraction(batch):
    return (batch != 0).float().mean().item()


def kept_char_share(texts, lo, hi):
    return sum(len(t) for t in texts if lo <= len(t) <= hi) / sum(map(len, texts))


# ------------------------------------------------------------ wrong answers (typical mistakes)


def count_chars_wrong(texts):
    return len(texts), len(set("".join(texts)))  # counts texts, not characters


def positive_share_wrong(df):
    return float((df.label == 1).sum())  # a count, not a share


def build_vocab_unsorted(texts, min_freq=1):
    seen = list(dict.fromkeys("".join(texts)))  # first-appearance order
    counts = Counter("".join(texts))
    chars = [c for c in seen if counts[c] >= min_freq]
    return {tok: i for i, tok in enumerate(["<pad>", "<unk>", "<sep>"] + chars)}


def coverage_unsorted(counts, k):
    return sum(list(counts.values())[:k]) / sum(counts.values())  # the first k, not the top k


def nfkc_only_test(train, test):
    vocab = Vocab.build(train)
    return unk_rate(vocab, [unicodedata.normalize("NFKC", t) for t in test])


def make_xy_unshifted(ids, seq_len, pad=0):
    x = ids + [pad] * (seq_len - len(ids))
    return x[:seq_len], x[:seq_len]


def useful_fraction_count(batch):
    return float((batch != 0).sum())


def kept_text_share(texts, lo, hi):
    return sum(lo <= len(t) <= hi for t in texts) / len(texts)  # texts, not characters


CASES = [
    (ch00.check_count_chars, count_chars, count_chars_wrong),
    (ch00.check_positive_share, positive_share, positive_share_wrong),
    (ch01.check_build_vocab, build_vocab, build_vocab_unsorted),
    (ch01.check_coverage, coverage, coverage_unsorted),
    (ch01.check_nfkc_unk_rate, nfkc_unk_rate, nfkc_only_test),
    (ch02.check_make_xy, make_xy, make_xy_unshifted),
    (ch02.check_useful_fraction, useful_fraction, useful_fraction_count),
    (ch02.check_kept_char_share, kept_char_share, kept_text_share),
]
IDS = [c[0].__name__ for c in CASES]


@pytest.mark.parametrize("check, right, wrong", CASES, ids=IDS)
def test_right_answer_gets_a_tick(check, right, wrong, capsys):
    ok, out = _verdict(check, right, capsys)
    assert ok is True and out.startswith("✓"), out


@pytest.mark.parametrize("check, right, wrong", CASES, ids=IDS)
def test_wrong_answer_gets_a_cross_and_a_hint(check, right, wrong, capsys):
    ok, out = _verdict(check, wrong, capsys)
    assert ok is False and out.startswith("✗") and len(out) > 40, out


@pytest.mark.parametrize("check, right, wrong", CASES, ids=IDS)
def test_stub_is_not_attempted(check, right, wrong, capsys):
    ok, out = _verdict(check, _stub, capsys)
    assert ok is False and out.startswith("…") and "not attempted" in out, out


@pytest.mark.parametrize("check", [c[0] for c in CASES], ids=IDS)
def test_a_crashing_answer_is_reported_not_raised(check, capsys):
    def crash(*args, **kwargs):
        raise KeyError("oops")

    ok, out = _verdict(check, crash, capsys)
    assert ok is False and "KeyError" in out, out


def test_useful_fraction_accepts_a_tensor_result(capsys):
    ok, _ = _verdict(ch02.check_useful_fraction, lambda b: (b != 0).float().mean(), capsys)
    assert ok
