"""Artifacts later chapters reuse (vocabulary, token streams, pretrained models), cached.

Each one is loaded from the git-ignored cache (`course_utils.config.cache_dir()`) or
built on demand, deterministically, so every notebook runs standalone in a fresh kernel.
"""

from __future__ import annotations

import numpy as np

from . import data
from .config import cache_dir
from .datasets import load_tokens, pack_documents, save_tokens, split_documents
from .vocab import Vocab

NEWS_SPLIT_SEED = 0
NEWS_VAL_FRACTION = 0.1


def news_vocab() -> Vocab:
    """The character vocabulary of the whole news corpus (the same in every profile)."""
    path = cache_dir() / "news_vocab.json"
    if path.is_file():
        return Vocab.load(path)
    vocab = Vocab.build(data.load_news())
    vocab.save(path)
    return vocab


def news_splits() -> tuple[list[str], list[str]]:
    """News paragraphs split 90/10 by paragraph (never by window)."""
    return split_documents(data.load_news(), NEWS_VAL_FRACTION, seed=NEWS_SPLIT_SEED)


def news_tokens(split: str) -> np.memmap:
    """The packed uint16 token stream of the news `train` or `val` split (memory-mapped)."""
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    path = cache_dir() / f"news_{split}.u16"
    if not path.is_file():
        train, val = news_splits()
        save_tokens(pack_documents(train if split == "train" else val, news_vocab()), path)
    return load_tokens(path)
