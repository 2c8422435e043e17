"""course_utils.data: the three corpora, the user dialogue format, the sentiment split."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from course_utils import data

# ---------------------------------------------------------------- news


def test_news_is_large_and_tag_free():
    news = data.load_news()
    assert len(news) > 19_000
    assert sum(map(len, news)) >= 1_800_000
    assert all(p and not any(ch.isspace() for ch in p) for p in news)
    tagged = re.compile(r"/[a-zA-Z]{1,3}\b")
    assert not any(tagged.search(p) for p in news[:2000]), "part-of-speech tags left in the text"
    assert news[0].startswith("迈向充满希望的新世纪")


def test_news_returns_a_fresh_list():
    a = data.load_news()
    a.clear()
    assert data.load_news()


# ---------------------------------------------------------------- dialogues


def test_bundled_dialogues():
    dialogues = data.load_dialogues()
    assert len(dialogues) >= 400
    assert all(len(d) >= 2 and all(isinstance(t, str) and t.strip() == t and t for t in d)
               for d in dialogues)


def test_user_dialogue_file_tab_and_sep(tmp_path):
    path = tmp_path / "chats.txt"
    path.write_text("你好\t你好呀\n\n 在吗 <sep>在的<sep>  有什么事  \n早\t早上好<sep>吃了吗\n",
                    encoding="utf-8")
    assert data.load_dialogues(path) == [
        ["你好", "你好呀"],
        ["在吗", "在的", "有什么事"],
        ["早", "早上好", "吃了吗"],
    ]


def test_user_dialogue_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="one conversation per line"):
        data.load_dialogues(tmp_path / "missing.txt")
    one_turn = tmp_path / "one.txt"
    one_turn.write_text("你好\t你好呀\n只有一句\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"one.txt:2: a conversation needs at least two turns"):
        data.load_dialogues(one_turn)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n", encoding="utf-8")
    with pytest.raises(ValueError, match="holds no conversations"):
        data.load_dialogues(empty)
    latin1 = tmp_path / "gbk.txt"
    latin1.write_bytes("你好\t再见\n".encode("gbk"))
    with pytest.raises(ValueError, match="not UTF-8"):
        data.load_dialogues(latin1)


def test_missing_corpus_package_names_it():
    with pytest.raises(data.CorpusError, match="pip install no-such-corpus"):
        data._package_dir("no_such_corpus_package", "no-such-corpus")


# ---------------------------------------------------------------- sentiment


def test_sentiment_is_unique_and_conflict_free():
    df = data.load_sentiment()
    assert list(df.columns) == ["review", "label"]
    assert len(df) >= 17_000
    assert not df.review.duplicated().any()
    assert set(df.label) == {0, 1}
    neg, pos = set(df.review[df.label == 0]), set(df.review[df.label == 1])
    assert not neg & pos, "a text is in both classes"
    assert df.attrs["raw_rows"] > 30_000 and df.attrs["conflicting_texts"] > 0


def test_load_sentiment_is_a_copy():
    df = data.load_sentiment()
    df.loc[0, "review"] = "changed"
    assert data.load_sentiment().review[0] != "changed"


def test_split_sentiment_has_no_shared_text_and_is_stratified():
    df = data.load_sentiment()
    train, test = data.split_sentiment(df, test_size=0.1, seed=0)
    assert len(train) + len(test) == len(df)
    assert not set(train.review) & set(test.review)
    for label, n in df.label.value_counts().items():
        assert abs((test.label == label).sum() - 0.1 * n) <= 1, "the split is not stratified"
    assert abs(test.label.mean() - df.label.mean()) < 0.005


def test_split_sentiment_is_deterministic():
    a_train, a_test = data.split_sentiment(seed=0)
    b_train, b_test = data.split_sentiment(seed=0)
    pd.testing.assert_frame_equal(a_test, b_test)
    pd.testing.assert_frame_equal(a_train, b_train)
    _, c_test = data.split_sentiment(seed=1)
    assert set(c_test.review) != set(a_test.review)


def test_split_sentiment_rejects_bad_input():
    df = pd.DataFrame({"review": ["好", "好", "差"], "label": [1, 1, 0]})
    with pytest.raises(ValueError, match="duplicates"):
        data.split_sentiment(df)
    with pytest.raises(ValueError, match="test_size"):
        data.split_sentiment(test_size=1.5)


def test_corpus_stats_table():
    stats = data.corpus_stats().set_index("corpus")
    assert list(stats.index) == ["news", "dialogues", "sentiment"]
    assert stats.loc["news", "characters"] == sum(map(len, data.load_news()))
    assert stats.loc["sentiment", "items"] == len(data.load_sentiment())
    assert stats.loc["dialogues", "items"] == len(data.load_dialogues())
