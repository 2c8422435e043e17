"""Artifacts later chapters reuse (vocabulary, token streams, pretrained models), cached.

Each one is loaded from the git-ignored cache (`course_utils.config.cache_dir()`) or
built on demand, deterministically, so every notebook runs standalone in a fresh kernel.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

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


# ---------------------------------------------------------------- the pretrained language model


class ArtifactError(RuntimeError):
    """A cached artifact cannot be used or built."""


def pretrained_path(profile=None) -> Path:
    from .config import get_profile

    profile = profile or get_profile()
    return cache_dir() / f"pretrained_{profile.name}.pt"


def pretrained_lm(profile=None, *, force: bool = False, precision: str = "fp32",
                  progress: bool = True, device=None, on_eval=None):
    """The char-level GPT pretrained on the news corpus for `profile` (default: active one).

    Loaded from the cache, or trained on demand (seeded, so the same on every machine
    for a given profile and device) with a progress bar, then cached. Returns
    `(model in eval mode, vocab, info)`; `info` has the path, validation loss, unigram
    baseline, steps and the training history. `on_eval(step, model, history)` is called
    at each evaluation when the model is trained here (chapter 05 prints samples with it).
    """
    from .config import get_device, get_profile, seed_everything
    from .model import GPT, GPTConfig
    from .train import (
        CheckpointError,
        TrainConfig,
        WindowBatches,
        atomic_save,
        make_checkpoint,
        model_from_checkpoint,
        train,
        unigram_loss,
    )

    profile = profile or get_profile()
    device = torch.device(device) if device else get_device()
    vocab = news_vocab()
    path = pretrained_path(profile)
    train_tokens, val_tokens = news_tokens("train"), news_tokens("val")
    if path.is_file() and not force:
        try:
            model, _, ckpt = model_from_checkpoint(path, map_location=device, vocab=vocab)
            return model, vocab, dict(ckpt["extra"], path=path, history=ckpt["history"])
        except CheckpointError as err:
            raise ArtifactError(f"the cached model does not fit: {err}. Delete {path} (or pass "
                                f"force=True / --force) to retrain it") from None

    seed_everything(0)
    model = GPT(GPTConfig(vocab_size=len(vocab), **profile.model_kwargs())).to(device)
    cfg = TrainConfig.from_profile(profile, precision=precision, progress=progress)
    train_src = WindowBatches(train_tokens, profile.batch_size, profile.block_size, seed=0)
    val_src = WindowBatches(val_tokens, profile.batch_size, profile.block_size, seed=1)
    result = train(model, train_src, cfg, val_source=val_src, vocab=vocab, device=device,
                   on_eval=on_eval)
    info = {"profile": profile.name, "steps": result.step, "val_loss": result.history["val_loss"][-1],
            "unigram_loss": unigram_loss(train_tokens, val_tokens, len(vocab))}
    ckpt = make_checkpoint(result.model, step=result.step, vocab=vocab, train_config=cfg,
                           history=result.history, extra=info)
    atomic_save(ckpt, path)
    return result.model.eval(), vocab, dict(info, path=path, history=result.history)
