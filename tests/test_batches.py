"""course_utils.batches: splits, padded lines, the packed stream, dialogue examples."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from course_utils import artifacts, config
from course_utils.batches import (
    DialogueExamples,
    PackedWindows,
    PaddedLines,
    encode_dialogue,
    load_tokens,
    non_pad_fraction,
    pack_documents,
    random_batch,
    save_tokens,
    split_documents,
)
from course_utils.vocab import PAD, SEP, UNK, Vocab

LINES = ["短", "今天天气很好我们去公园散步吧", "这是一个刚好十六个字符长度的句子啊",
         "一二三四五六七八九十一二三四五六七八九十", "长" * 80]


@pytest.fixture(scope="module")
def vocab() -> Vocab:
    return Vocab.build(LINES + ["你好再见早上好吃了吗在的没有"])


# ------------------------------------------------------------ split_documents


def test_split_documents_has_no_overlap_and_is_deterministic():
    docs = [f"doc{i}" for i in range(1000)]
    train, val = split_documents(docs, val_fraction=0.1, seed=0)
    assert len(val) == 100 and len(train) == 900
    assert not set(train) & set(val) and set(train) | set(val) == set(docs)
    assert split_documents(docs, 0.1, seed=0) == (train, val)
    assert split_documents(docs, 0.1, seed=1)[1] != val
    assert val == sorted(val, key=lambda d: int(d[3:])), "each half keeps the corpus order"


def test_split_documents_errors():
    with pytest.raises(ValueError, match="val_fraction"):
        split_documents(["a", "b"], val_fraction=0)
    with pytest.raises(ValueError, match="at least two documents"):
        split_documents(["a"])


# ------------------------------------------------------------ PaddedLines


def test_padded_lines_filter_shapes_and_shift(vocab):
    ds = PaddedLines(LINES, vocab, min_len=16, max_len=64)
    assert ds.lines == [s for s in LINES if 16 <= len(s) <= 64] and len(ds) == 2
    for i, line in enumerate(ds.lines):
        x, y = ds[i]
        assert x.shape == y.shape == (63,) and x.dtype == torch.long
        n = len(line) - 1
        ids = vocab.encode(line)
        assert x[:n].tolist() == ids[:-1] and y[:n].tolist() == ids[1:]
        assert torch.equal(x[1:n], y[: n - 1]), "y is x shifted left by one"
        assert (x[n:] == PAD).all() and (y[n:] == PAD).all()


def test_padded_lines_errors(vocab):
    with pytest.raises(ValueError, match="no line has"):
        PaddedLines(["短"], vocab)
    with pytest.raises(ValueError, match="min_len"):
        PaddedLines(LINES, vocab, min_len=10, max_len=5)


# ------------------------------------------------------------ packed stream


def test_pack_documents_joins_with_sep(vocab):
    stream = pack_documents(["你好", "再见"], vocab)
    assert stream.dtype == np.uint16
    assert stream.tolist() == vocab.encode("你好") + [SEP] + vocab.encode("再见") + [SEP]


def test_token_file_round_trip_and_errors(tmp_path, vocab):
    stream = pack_documents(LINES, vocab)
    path = save_tokens(stream, tmp_path / "t.u16")
    assert path.stat().st_size == 2 * len(stream)
    loaded = load_tokens(path)
    assert isinstance(loaded, np.memmap) and np.array_equal(loaded, stream)
    odd = tmp_path / "odd.u16"
    odd.write_bytes(b"\x00\x01\x02")
    with pytest.raises(ValueError, match="odd number of bytes"):
        load_tokens(odd)
    with pytest.raises(FileNotFoundError):
        load_tokens(tmp_path / "missing.u16")


def test_packed_windows_shapes_shift_and_determinism():
    tokens = np.arange(500, dtype=np.uint16)
    ds = PackedWindows(tokens, block_size=16, num_samples=50, seed=3)
    assert len(ds) == 50
    for i in range(len(ds)):
        x, y = ds[i]
        assert x.shape == y.shape == (16,) and x.dtype == torch.long
        assert torch.equal(y, x + 1), "y is x shifted by one token"
    assert all(torch.equal(ds[i][0], ds[i][0]) for i in range(5)), "item i must not change"
    again = PackedWindows(tokens, 16, 50, seed=3)
    other = PackedWindows(tokens, 16, 50, seed=4)
    assert all(torch.equal(ds[i][0], again[i][0]) for i in range(50))
    assert any(not torch.equal(ds[i][0], other[i][0]) for i in range(50))
    with pytest.raises(ValueError, match="shorter than one window"):
        PackedWindows(tokens[:17], block_size=16, num_samples=1)


def test_random_batch_shapes_shift_and_generator():
    tokens = np.arange(1000, dtype=np.uint16)
    x, y = random_batch(tokens, 8, 32, generator=torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (8, 32) and x.dtype == torch.long
    assert torch.equal(y, x + 1) and int(y.max()) < 1000
    x2, _ = random_batch(tokens, 8, 32, generator=torch.Generator().manual_seed(0))
    assert torch.equal(x, x2)
    with pytest.raises(ValueError, match="shorter than one window"):
        random_batch(tokens[:10], 2, 32)


def test_non_pad_fraction():
    assert non_pad_fraction(torch.tensor([[3, 4, PAD, PAD]])) == 0.5
    assert non_pad_fraction(torch.tensor([[3, 4]])) == 1.0


# ------------------------------------------------------------ dialogue examples

DIALOGUES = [["你好", "你好吗", "很好"], ["早上好", "早"], ["在吗", "在的"]]


def test_encode_dialogue(vocab):
    ids = encode_dialogue(["你好", "再见"], vocab)
    assert ids == vocab.encode("你好") + [SEP] + vocab.encode("再见") + [SEP]


def test_dialogue_examples_shapes_and_shift(vocab):
    ds = DialogueExamples(DIALOGUES, vocab, block_size=12, response_only=False)
    assert len(ds) == sum(len(d) - 1 for d in DIALOGUES)
    x, y = ds[1]  # history 你好<sep>你好吗<sep>, reply 很好<sep>
    assert x.shape == y.shape == (12,)
    full = vocab.encode("你好<sep>你好吗<sep>很好<sep>")
    n = len(full) - 1
    assert x[:n].tolist() == full[:-1] and y[:n].tolist() == full[1:]
    assert (x[n:] == PAD).all() and (y[n:] == PAD).all()
    assert vocab.decode(x[:n]) == "你好<sep>你好吗<sep>很好"


def test_response_only_masks_the_history(vocab):
    masked = DialogueExamples(DIALOGUES, vocab, block_size=12, response_only=True)
    full = DialogueExamples(DIALOGUES, vocab, block_size=12, response_only=False)
    for i in range(len(masked)):
        xm, ym = masked[i]
        xf, yf = full[i]
        assert torch.equal(xm, xf), "masking changes targets only"
        kept = ym[ym != PAD]
        reply = vocab.decode(kept)
        assert reply.endswith("<sep>") and reply.count("<sep>") == 1, reply
        # the kept targets are exactly the last len(kept) real targets of the full example
        real = yf[yf != PAD]
        assert torch.equal(kept, real[-len(kept):])
    x, y = masked[1]
    assert vocab.decode(y[y != PAD]) == "很好<sep>"


def test_dialogue_examples_crop_long_history_from_the_left(vocab):
    long = [["一二三四五六七八九十", "你好"]]
    ds = DialogueExamples(long, vocab, block_size=6, response_only=False)
    x, y = ds[0]
    seq = x.tolist() + [y[-1].item()]
    assert vocab.decode(seq) == "八九十<sep>你好<sep>", "the oldest history goes first"
    long_reply = DialogueExamples([["你", "一二三四五六七八九十"]], vocab, block_size=6)
    x, y = long_reply[0]
    assert x.shape == (6,) and UNK not in x.tolist()


def test_dialogue_examples_need_two_turns(vocab):
    with pytest.raises(ValueError, match="two turns"):
        DialogueExamples([["孤单"]], vocab, block_size=8)


# ------------------------------------------------------------ the cached news stream


def test_news_tokens_match_the_packed_split(tmp_path, monkeypatch):
    monkeypatch.setenv(config.CACHE_ENV, str(tmp_path))
    val = artifacts.news_tokens("val")
    _, val_docs = artifacts.news_splits()
    assert isinstance(val, np.memmap) and val.dtype == np.uint16
    assert np.array_equal(val, pack_documents(val_docs, artifacts.news_vocab()))
    assert (tmp_path / "news_val.u16").is_file() and (tmp_path / "news_vocab.json").is_file()
    with pytest.raises(ValueError, match="'train' or 'val'"):
        artifacts.news_tokens("test")
