"""course_utils.vocab: deterministic ids, encode/decode, save/load, malformed files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from course_utils import data
from course_utils.vocab import PAD, SEP, SPECIALS, UNK, Vocab, VocabError


@pytest.fixture(scope="module")
def news_vocab() -> Vocab:
    return Vocab.build(data.load_news())


def test_special_ids():
    assert (PAD, UNK, SEP) == (0, 1, 2)
    assert SPECIALS == ("<pad>", "<unk>", "<sep>")


def test_build_puts_specials_first_then_sorted_chars():
    v = Vocab.build(["cab", "bca", "人"])
    assert v.idx2token == ["<pad>", "<unk>", "<sep>", "a", "b", "c", "人"]
    assert len(v) == 7 and "a" in v and "z" not in v
    assert v.counts["a"] == 2


def test_build_accepts_a_single_string():
    assert Vocab.build("ba") == Vocab.build(["b", "a"])


def test_min_freq():
    v = Vocab.build(["aab", "a"], min_freq=2)
    assert v.idx2token == ["<pad>", "<unk>", "<sep>", "a"]
    assert v.encode("ab") == [3, UNK]
    with pytest.raises(ValueError, match="min_freq"):
        Vocab.build(["a"], min_freq=0)


_IDS_SCRIPT = textwrap.dedent("""
    import hashlib, json
    from course_utils import data
    from course_utils.vocab import Vocab
    news = data.load_news()
    vocab = Vocab.build(news)
    chars = list(set("".join(news[:500])))   # the source material's way, for contrast
    print(hashlib.sha256(json.dumps(vocab.token2idx).encode()).hexdigest())
    print(hashlib.sha256("".join(chars).encode()).hexdigest())
""")


def _run_with_hashseed(seed: str) -> list[str]:
    env = dict(os.environ, PYTHONHASHSEED=seed)
    out = subprocess.run([sys.executable, "-c", _IDS_SCRIPT], env=env, check=True,
                         capture_output=True, text=True, timeout=120)
    return out.stdout.split()


def test_ids_identical_across_processes_with_different_hash_seeds():
    vocab_a, set_a = _run_with_hashseed("1")
    vocab_b, set_b = _run_with_hashseed("2")
    assert set_a != set_b, "the hash seed did not change set order: the test proves nothing"
    assert vocab_a == vocab_b, "vocabulary ids depend on the process (set order?)"


def test_round_trip_over_the_whole_news_corpus(news_vocab):
    news = data.load_news()
    for paragraph in news:
        ids = news_vocab.encode(paragraph)
        assert UNK not in ids
        assert news_vocab.decode(ids) == paragraph
    assert len(news_vocab) == len(set("".join(news))) + 3


def test_unseen_character_is_unk(news_vocab):
    assert "☃" not in news_vocab
    ids = news_vocab.encode("人☃民")
    assert ids[1] == UNK and ids[0] != UNK and ids[2] != UNK
    assert news_vocab.decode(ids) == "人<unk>民"
    assert news_vocab.decode(ids, skip_special=True) == "人民"


def test_special_tokens_in_text_are_single_tokens(news_vocab):
    ids = news_vocab.encode("你好<sep>再见<pad>")
    assert ids.count(SEP) == 1 and ids[-1] == PAD and len(ids) == 6
    assert news_vocab.decode(ids) == "你好<sep>再见<pad>"


def test_bad_arguments():
    v = Vocab.build(["ab"])
    with pytest.raises(TypeError, match="expects a str"):
        v.encode(["a"])
    with pytest.raises(ValueError, match="outside this vocabulary"):
        v.decode([len(v)])
    with pytest.raises(ValueError, match="outside this vocabulary"):
        v.decode([-1])


def test_save_load_round_trip(tmp_path, news_vocab):
    path = tmp_path / "sub" / "vocab.json"
    news_vocab.save(path)
    loaded = Vocab.load(path)
    assert loaded == news_vocab and loaded.idx2token == news_vocab.idx2token
    assert [p.name for p in path.parent.iterdir()] == ["vocab.json"], "temporary file left behind"
    assert json.loads(path.read_text(encoding="utf-8"))["<sep>"] == SEP


def test_load_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Vocab.load(tmp_path / "nope.json")


GOOD = {"<pad>": 0, "<unk>": 1, "<sep>": 2, "a": 3, "b": 4}


@pytest.mark.parametrize("content, message", [
    ("this is not json", "not a JSON vocabulary file"),
    (b"\xff\xfe\x00garbage", "not a JSON vocabulary file"),
    (["<pad>", "<unk>"], "JSON object token -> id"),
    ({"<pad>": 0, "<unk>": 1, "a": 2}, "special token <sep> is missing"),
    ({"<pad>": 1, "<unk>": 0, "<sep>": 2}, "special token <pad> has id 1, expected 0"),
    ({**GOOD, "<sep>": 5, "c": 2}, "special token <sep> has id 5, expected 2"),
    ({**GOOD, "c": 4}, "share the id 4"),
    ({**GOOD, "c": 7}, r"without gaps; missing \[5\], unexpected \[7\]"),
    ({**GOOD, "c": "5"}, "not an integer"),
    ({**GOOD, "c": True}, "not an integer"),
    ({**GOOD, "": 5}, "not a non-empty string"),
])
def test_malformed_files_raise_a_clear_vocab_error(tmp_path, content, message):
    path = tmp_path / "bad.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    else:
        path.write_text(json.dumps(content), encoding="utf-8")
    with pytest.raises(VocabError, match=message) as info:
        Vocab.load(path)
    assert str(path) in str(info.value), "the message should name the file"


def test_good_file_loads(tmp_path):
    path = tmp_path / "good.json"
    path.write_text(json.dumps(GOOD), encoding="utf-8")
    assert Vocab.load(path).encode("abc") == [3, 4, UNK]
