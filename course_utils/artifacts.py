"""Artifacts later chapters reuse (vocabulary, token streams, trained models), cached.

Each one is loaded from the git-ignored cache (`course_utils.config.cache_dir()`) or
built on demand, deterministically, so every notebook runs standalone in a fresh kernel.
A model's training run checkpoints as it goes into `cache_dir()/runs/`: a run that stops
(a crash, a killed kernel) resumes from its last checkpoint the next time it is asked for,
and ends exactly as an uninterrupted run would; its folder is removed once the model is saved.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

from . import data
from .batches import (
    DatasetBatches,
    DialogueExamples,
    LabeledTexts,
    WindowBatches,
    load_tokens,
    pack_documents,
    save_tokens,
    split_documents,
)
from .checkpoints import (
    CheckpointError,
    CheckpointManager,
    atomic_save,
    load_checkpoint,
    make_checkpoint,
    model_from_checkpoint,
)
from .config import cache_dir, get_device, get_profile, seed_everything
from .evaluation import evaluate, unigram_loss
from .finetune import GPTClassifier, freeze, predict, train_best
from .model import GPT, GPTConfig
from .train import TrainConfig, train, train_keeping_best
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


def _load_cached(path: Path, device, vocab: Vocab, what: str, rebuild: str):
    """The model cached at `path` with its info, or None when there is none yet. A cache
    that does not fit (another vocabulary, a damaged file) is an ArtifactError saying how
    to `rebuild` it, never a silent retrain."""
    if not path.is_file():
        return None
    try:
        model, _, ckpt = model_from_checkpoint(path, map_location=device, vocab=vocab)
    except CheckpointError as err:
        raise ArtifactError(f"the cached {what} does not fit: {err}. Delete {path} {rebuild}") from None
    return model, vocab, dict(ckpt["extra"], path=path, history=ckpt["history"])


def fingerprint(model) -> str:
    """A short digest of a model's weights: which starting point a run trains from."""
    sums = [float(t.detach().double().sum()) for t in model.state_dict().values()]
    return hashlib.sha256(json.dumps(sums).encode()).hexdigest()[:16]


def run_folder(name: str, model, cfg: TrainConfig, data_key) -> Path:
    """Where the training run of an artifact checkpoints as it goes: a folder under
    `cache_dir()/runs/` named after everything that decides the run's result (the model's
    configuration and starting weights, the training configuration, `data_key`), so a run with
    other settings starts afresh instead of resuming this one."""
    recipe = {"model": model.config.to_dict(), "start": fingerprint(model), "data": data_key,
              "train": asdict(replace(cfg, progress=True, checkpoint_dir=None))}
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return cache_dir() / "runs" / f"{name}-{digest}"


def _resumable(name: str, what: str, model, cfg: TrainConfig, data_key, force: bool = False):
    """(cfg checkpointing into the run's folder, the folder, its latest checkpoint or None);
    says so when there is one to resume from. `force` starts afresh."""
    folder = run_folder(name, model, cfg, data_key)
    if force:
        shutil.rmtree(folder, ignore_errors=True)
    steps = CheckpointManager(folder).steps()
    if steps:
        print(f"resuming {what} from step {steps[-1]} of {cfg.max_steps}: the checkpoint an "
              f"interrupted run left in {folder}", flush=True)
    latest = CheckpointManager(folder).latest()
    return replace(cfg, checkpoint_dir=str(folder), keep_last=1), folder, latest


def pretrained_path(profile=None) -> Path:
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
    profile = profile or get_profile()
    device = torch.device(device) if device else get_device()
    vocab = news_vocab()
    path = pretrained_path(profile)
    train_tokens, val_tokens = news_tokens("train"), news_tokens("val")
    cached = None if force else _load_cached(path, device, vocab, "model",
                                             "(or pass force=True / --force) to retrain it")
    if cached is not None:
        return cached

    seed_everything(0)
    model = GPT(GPTConfig(vocab_size=len(vocab), **profile.model_kwargs())).to(device)
    cfg = TrainConfig.from_profile(profile, precision=precision, progress=progress)
    train_src = WindowBatches(train_tokens, profile.batch_size, profile.block_size, seed=0)
    val_src = WindowBatches(val_tokens, profile.batch_size, profile.block_size, seed=1)
    run_cfg, folder, latest = _resumable(f"pretrained_{profile.name}", "pretraining", model, cfg,
                                         ["news", len(train_tokens), len(val_tokens)], force)
    result = train(model, train_src, run_cfg, val_source=val_src, vocab=vocab, device=device,
                   on_eval=on_eval, resume_from=latest)
    info = {"profile": profile.name, "steps": result.step, "val_loss": result.history["val_loss"][-1],
            "unigram_loss": unigram_loss(train_tokens, val_tokens, len(vocab))}
    ckpt = make_checkpoint(result.model, step=result.step, vocab=vocab, train_config=cfg,
                           history=result.history, extra=info)
    atomic_save(ckpt, path)
    shutil.rmtree(folder, ignore_errors=True)   # the model is saved: the run's checkpoints go
    return result.model.eval(), vocab, dict(info, path=path, history=result.history)


# ---------------------------------------------------------------- the dialogue model (chapter 11)

DIALOGUE_SPLIT_SEED = 0
DIALOGUE_VAL_FRACTION = 0.1


def dialogue_splits(vocab: Vocab | None = None, path=None) -> tuple[list[list[str]], list[list[str]]]:
    """Conversations split 90/10 by conversation (never by turn), turns fitted to the vocabulary.

    Half-width characters the news vocabulary lacks become their full-width forms
    (`data.to_fullwidth`), so `,` `?` `Python` are not read as `<unk>`.
    """
    vocab = vocab or news_vocab()
    dialogues = [[data.to_fullwidth(t, vocab) for t in turns] for turns in data.load_dialogues(path)]
    return split_documents(dialogues, DIALOGUE_VAL_FRACTION, seed=DIALOGUE_SPLIT_SEED)


# The dialogue model starts from chapter 10's review-adapted GPT ("reviews") or chapter 05's
# news GPT ("news"). The default is the one that predicts the validation replies better before
# fine-tuning (chapter 11, section 3, measures both and checks it under `cpu`); exercise 11.5
# compares the two after fine-tuning.
DIALOGUE_BASES = ("reviews", "news")
DIALOGUE_BASE = "reviews"


def dialogue_path(profile=None, dialogues=None, base: str = DIALOGUE_BASE) -> Path:
    """The cache file of the dialogue model: one per profile and base model, and per corpus
    file if given."""
    profile = profile or get_profile()
    name = f"dialogue_{profile.name}_from_{base}"
    if dialogues is None:
        return cache_dir() / f"{name}.pt"
    digest = hashlib.sha256(Path(dialogues).read_bytes()).hexdigest()[:10]
    return cache_dir() / f"{name}_{Path(dialogues).stem}_{digest}.pt"


def dialogue_train_config(profile, progress: bool = True):
    """The fine-tuning run of chapter 11: `profile.dialogue_steps`, frequent evaluations."""
    steps = profile.dialogue_steps
    return TrainConfig(max_steps=steps, lr=profile.finetune_lr, warmup_steps=max(1, steps // 20),
                       eval_interval=max(2, steps // 12), eval_iters=4, log_interval=max(1, steps // 60),
                       weight_decay=0.1, progress=progress, **profile.lm_speedups(steps=steps))


def dialogue_lm(profile=None, *, base: str = DIALOGUE_BASE, dialogues=None, force: bool = False,
                progress: bool = True, device=None):
    """A pretrained GPT fine-tuned on the dialogues with the response-only loss, cached.

    `base`: "reviews", the GPT chapter 10 adapted to review text (`review_lm`, built first if
    missing), or "news", the pretrained GPT of chapter 05. `dialogues`: your own corpus file (see
    `data.load_dialogues`) instead of chatterbot's; it gets its own cache file, named after
    its content.

    Every reply is one example: its history (cropped from the left) and the reply, with
    the loss on the reply and its closing `<sep>` only. Training runs `profile.dialogue_steps`
    steps and keeps the weights of the evaluation with the lowest validation loss (the
    corpus is tiny, so later steps mostly memorise it). Returns `(model, vocab, info)`;
    `info` has the path, the best step, the validation losses before and after, and the
    training history.
    """

    profile = profile or get_profile()
    device = torch.device(device) if device else get_device()
    if base not in DIALOGUE_BASES:
        raise ValueError(f"base must be one of {', '.join(DIALOGUE_BASES)}, got {base!r}")
    if dialogues is not None and not Path(dialogues).is_file():
        raise FileNotFoundError(f"dialogue file {dialogues} does not exist")
    path = dialogue_path(profile, dialogues, base)
    vocab = news_vocab()
    cached = None if force else _load_cached(path, device, vocab, "dialogue model",
                                             "(or pass force=True) to rebuild it")
    if cached is not None:
        return cached

    build = pretrained_lm if base == "news" else review_lm
    model, vocab, pre_info = build(profile, progress=progress, device=device)
    train_dialogues, val_dialogues = dialogue_splits(vocab, dialogues)
    block = model.config.block_size
    train_set = DialogueExamples(train_dialogues, vocab, block, response_only=True)
    val_set = DialogueExamples(val_dialogues, vocab, block, response_only=True)
    batch_size = min(profile.batch_size, len(train_set))
    train_src = DatasetBatches(train_set, batch_size, seed=0)
    val_src = DatasetBatches(val_set, len(val_set), shuffle=False)  # one batch: the whole val set
    cfg = dialogue_train_config(profile, progress)
    val_before = evaluate(model, val_src, 1, device)

    seed_everything(0)
    run_cfg, folder, latest = _resumable(path.stem, "the dialogue fine-tuning", model, cfg,
                                         [len(train_set), len(val_set), path.name], force)
    result, best = train_keeping_best(model, train_src, run_cfg, val_source=val_src, vocab=vocab,
                                      device=device, resume_from=latest)
    history = result.history
    info = {"profile": profile.name, "base": base, "steps": result.step, "best_step": best["step"],
            "val_loss_before": val_before, "val_loss": result.best_val_loss,
            "pretrained_path": str(pre_info["path"]), "train_conversations": len(train_dialogues),
            "val_conversations": len(val_dialogues), "train_examples": len(train_set),
            "val_examples": len(val_set), "normalize": "to_fullwidth",
            "dialogues": "chatterbot-corpus" if dialogues is None else str(dialogues)}
    ckpt = make_checkpoint(model, step=best["step"], vocab=vocab, train_config=cfg,
                           history=history, extra=info)
    atomic_save(ckpt, path)
    shutil.rmtree(folder, ignore_errors=True)
    return model.eval(), vocab, dict(info, path=path, history=history)


# ---------------------------------------------------------------- reviews (chapter 10)

SENTIMENT_TEST_SEED, SENTIMENT_VAL_SEED = 0, 1


def sentiment_splits(profile=None, vocab: Vocab | None = None):
    """(fit, validation, test) DataFrames of the deduplicated reviews, as chapter 10 splits
    them: 10% test, then 10% of the rest for validation, stratified, no text on two sides.
    Each has a `text` column: the review through `data.to_fullwidth` for the news vocabulary.
    Under a profile with `max_docs` (ci), a sample of each split."""
    profile = profile or get_profile()
    vocab = vocab or news_vocab()
    train_df, test_df = data.split_sentiment(data.load_sentiment(), test_size=0.1, seed=SENTIMENT_TEST_SEED)
    fit_df, val_df = data.split_sentiment(train_df, test_size=0.1, seed=SENTIMENT_VAL_SEED)
    if profile.max_docs:
        fit_df = fit_df.head(profile.max_docs)
        val_df = val_df.head(profile.max_docs // 4)
        test_df = test_df.head(profile.max_docs // 2)
    out = []
    for df in (fit_df, val_df, test_df):
        df = df.copy()
        df["text"] = [data.to_fullwidth(t, vocab) for t in df.review]
        out.append(df)
    return tuple(out)


def review_path(profile=None) -> Path:
    return cache_dir() / f"reviews_lm_{(profile or get_profile()).name}.pt"


def review_windows(texts, vocab: Vocab, batch_size: int, block_size: int, seed: int):
    """Review texts packed into one token stream (each followed by `<sep>`), as random windows."""
    return WindowBatches(pack_documents(list(texts), vocab), batch_size, block_size, seed=seed)


def review_lm(profile=None, *, force: bool = False, progress: bool = True, device=None):
    """Domain-adaptive pretraining (ULMFiT's second stage): the news GPT of chapter 05, trained
    further as a language model on the review text of the *fit* split only (never a validation
    or test review), `profile.adapt_steps` steps at peak rate `profile.adapt_lr`, keeping the
    evaluation with the lowest loss on the validation reviews. Cached.

    Returns `(model, vocab, info)`; `info` has the review and news validation losses before
    and after, the best step, the minutes it took and the training history.
    """
    profile = profile or get_profile()
    device = torch.device(device) if device else get_device()
    path = review_path(profile)
    vocab = news_vocab()
    cached = None if force else _load_cached(path, device, vocab, "review-adapted model",
                                             "(or pass force=True) to rebuild it")
    if cached is not None:
        return cached

    model, vocab, pre_info = pretrained_lm(profile, progress=progress, device=device)
    fit_df, val_df, _ = sentiment_splits(profile, vocab)
    block, batch = model.config.block_size, profile.batch_size
    fit_src = review_windows(fit_df.text, vocab, batch, block, seed=0)
    val_src = review_windows(val_df.text, vocab, batch, block, seed=1)
    news_val = news_val_windows(batch, block)
    iters = profile.eval_iters
    before = {"reviews": evaluate(model, val_src, iters, device), "news": evaluate(model, news_val, iters, device)}
    steps = profile.adapt_steps
    cfg = TrainConfig(max_steps=steps, lr=profile.adapt_lr, warmup_steps=max(1, steps // 20),
                      eval_interval=max(2, steps // 10), eval_iters=iters, log_interval=max(1, steps // 100),
                      weight_decay=0.1, progress=progress, **profile.lm_speedups(steps=steps))
    seed_everything(0)
    run_cfg, folder, latest = _resumable(path.stem, "the review adaptation", model, cfg,
                                         [len(fit_df), len(val_df), len(fit_src.tokens)], force)
    t0 = time.perf_counter()
    result, best = train_keeping_best(model, fit_src, run_cfg, val_source=val_src, vocab=vocab,
                                      device=device, resume_from=latest)
    minutes = (time.perf_counter() - t0) / 60
    after = {"reviews": evaluate(model, val_src, iters, device), "news": evaluate(model, news_val, iters, device)}
    info = {"profile": profile.name, "steps": result.step, "best_step": best["step"],
            "before": before, "after": after, "minutes": minutes,
            "fit_reviews": len(fit_df), "fit_tokens": len(fit_src.tokens),
            "pretrained_path": str(pre_info["path"])}
    ckpt = make_checkpoint(model, step=best["step"], vocab=vocab, train_config=cfg,
                           history=result.history, extra=info)
    atomic_save(ckpt, path)
    shutil.rmtree(folder, ignore_errors=True)
    return model.eval(), vocab, dict(info, path=path, history=result.history)


def review_classifier_path(profile=None) -> Path:
    return cache_dir() / f"review_classifier_{(profile or get_profile()).name}.pt"


def review_classifier(profile=None, *, force: bool = False, progress: bool = True):
    """Chapter 10's best GPT row, "adapted GPT, all layers": the review-adapted GPT with a
    linear head on the last real token's state, every weight fine-tuned on the fit reviews
    (`profile.finetune_steps` steps at `profile.finetune_lr`), keeping the evaluation with the
    lowest validation loss. Cached: chapter 14's reward model is this very checkpoint.

    Returns `(classifier in eval mode, vocab, info)`; `info` has the best step, the seconds the
    training took, the trainable-parameter count, the history and the test accuracy.
    """
    profile = profile or get_profile()
    path, vocab = review_classifier_path(profile), news_vocab()
    if path.is_file() and not force:
        try:
            ckpt = load_checkpoint(path)
            if ckpt["vocab"] != vocab.token2idx:
                raise CheckpointError("it was trained with another vocabulary")
            clf = GPTClassifier(GPT(GPTConfig(**ckpt["model_config"])), 2, pooling=ckpt["extra"]["pooling"])
            clf.load_state_dict(ckpt["model"])
        except (CheckpointError, KeyError, RuntimeError) as err:
            raise ArtifactError(f"the cached review classifier does not fit: {err}. Delete {path} "
                                "(or pass force=True) to rebuild it") from None
        return clf.eval(), vocab, dict(ckpt["extra"], path=path, history=ckpt["history"])

    backbone, vocab, _ = review_lm(profile, progress=progress)
    fit_df, val_df, test_df = sentiment_splits(profile, vocab)
    sets = [LabeledTexts(df.text.tolist(), df.label.tolist(), vocab, profile.block_size)
            for df in (fit_df, val_df, test_df)]
    steps = profile.finetune_steps
    cfg = TrainConfig(max_steps=steps, lr=profile.finetune_lr, warmup_steps=max(1, steps // 10),
                      eval_interval=max(1, steps // 6), eval_iters=4, log_interval=max(1, steps // 50),
                      progress=progress)
    seed_everything(0)
    clf = GPTClassifier(backbone, 2, pooling="last")
    t0 = time.perf_counter()
    trainable = freeze(clf, "all")
    run, best_step = train_best(clf, sets[0], sets[1], cfg, profile.batch_size)
    seconds = time.perf_counter() - t0
    pred, _ = predict(clf.eval(), sets[2])
    info = {"profile": profile.name, "pooling": "last", "best_step": best_step, "seconds": seconds,
            "trainable": trainable, "test_accuracy": float((pred == test_df.label.to_numpy()).mean())}
    atomic_save(make_checkpoint(clf, step=best_step, vocab=vocab, train_config=cfg,
                                history=run.history, extra=info), path)
    return clf.eval(), vocab, dict(info, path=path, history=run.history)


# ---------------------------------------------------------------- preference tuning (chapter 14)


def tuned_policy_path(profile=None) -> Path:
    return cache_dir() / f"positive_{(profile or get_profile()).name}.pt"


def save_tuned_policy(model: GPT, vocab: Vocab, info: dict, profile=None) -> Path:
    """Keep the policy chapter 14 tuned toward positive reviews (the site exports this file).
    Its training stops after a budget in seconds, so a rerun on another machine gives another
    model: the cache keeps the one the chapter printed."""
    path = tuned_policy_path(profile)
    atomic_save(make_checkpoint(model, vocab=vocab, extra=dict(info, profile=(profile or get_profile()).name)), path)
    return path


def tuned_policy(profile=None, device=None):
    """(model, vocab, info) of the policy chapter 14 saved; run chapter 14 first."""
    profile = profile or get_profile()
    device = torch.device(device) if device else get_device()
    cached = _load_cached(tuned_policy_path(profile), device, news_vocab(), "tuned policy",
                          "and run chapter 14 again")
    if cached is None:
        raise ArtifactError(f"no tuned policy for profile {profile.name} in {cache_dir()}: run "
                            "nbs/14_preference_tuning.ipynb first (it saves the policy it tunes)")
    return cached


def news_val_windows(batch_size: int, block_size: int):
    """The news validation windows the chapters evaluate on (seed 1)."""
    return WindowBatches(news_tokens("val"), batch_size, block_size, seed=1)
