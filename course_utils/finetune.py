"""Fine-tuning the pretrained GPT: a classification head, freezing by structure, LoRA,
whole-text predictions over windows, metrics, and sentence embeddings.

The head sits on the GPT module itself (never on a DDP wrapper), and freezing picks
parts by the model's structure (`blocks[-1]`), not by a hard-coded parameter name.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .batches import DatasetBatches
from .model import GPT
from .train import train_keeping_best
from .vocab import PAD, Vocab

POOLINGS = ("last", "mean")
STRATEGIES = ("head", "last_block", "all")


# ---------------------------------------------------------------------------- pooling


def pool(hidden: torch.Tensor, idx: torch.Tensor, how: str = "last", mask_padding: bool = True):
    """(B, T, d) hidden states -> (B, d) features.

    `last`: the state of the last real (non-`<pad>`) token, which has seen the whole
    text through causal attention. `mean`: the mean over real tokens. With
    `mask_padding=False` padding is not told apart (the course's ablation): `last`
    takes position T-1 and `mean` averages every position, pads included.
    """
    if how not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {how!r}")
    if not mask_padding:
        return hidden[:, -1] if how == "last" else hidden.mean(dim=1)
    real = (idx != PAD)
    if how == "last":
        last = (real.long().cumsum(dim=1).argmax(dim=1))  # index of the last real token
        return hidden[torch.arange(hidden.size(0), device=hidden.device), last]
    weights = real.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


class GPTClassifier(nn.Module):
    """The pretrained GPT plus a linear head over pooled features.

    `forward(idx, targets=None)` returns `(logits (B, num_classes), loss)` like the GPT,
    so the same training loop (course_utils.train) trains it.
    """

    def __init__(self, backbone: GPT, num_classes: int = 2, pooling: str = "last",
                 mask_padding: bool = True, dropout: float = 0.1):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        self.backbone, self.pooling, self.mask_padding = backbone, pooling, mask_padding
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(backbone.config.d_model, num_classes)
        nn.init.normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    @property
    def config(self):
        return self.backbone.config

    def features(self, idx: torch.Tensor) -> torch.Tensor:
        hidden = self.backbone.hidden_states(idx)
        return pool(hidden, idx, self.pooling, self.mask_padding)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        logits = self.head(self.drop(self.features(idx)))
        loss = None if targets is None else F.cross_entropy(logits, targets.long())
        return logits, loss


# ---------------------------------------------------------------------------- freezing


def freeze(model: GPTClassifier, strategy: str) -> int:
    """Make only part of the classifier trainable; returns the trainable-parameter count.

    `head`: the linear head only. `last_block`: the last transformer block, the final
    LayerNorm and the head. `all`: everything. Parts are chosen by structure.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    for p in model.parameters():
        p.requires_grad = strategy == "all"
    trainable: list[nn.Module] = [model.head]
    if strategy == "last_block":
        trainable += [model.backbone.blocks[-1], model.backbone.ln_f]
    for module in trainable:
        for p in module.parameters():
            p.requires_grad = True
    return count_trainable(model)


def count_trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# ---------------------------------------------------------------------------- LoRA


class LoRALinear(nn.Module):
    """y = W x + b + (alpha / r) * B A x, with W, b frozen and A (r x in), B (out x r) trained.

    B starts at zero, so at initialisation the layer computes exactly what it did before.
    """

    def __init__(self, base: nn.Linear, rank: int = 8, alpha: float = 16.0, dropout: float = 0.0):
        super().__init__()
        if rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {rank}")
        self.base, self.rank, self.alpha = base, rank, alpha
        self.scale = alpha / rank
        for p in base.parameters():
            p.requires_grad = False
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))
        self.drop = nn.Dropout(dropout)
        self.merged = False

    def forward(self, x):
        if self.merged:
            return self.base(x)
        # W x + b, then the low-rank path added inside the same product (`addmm` accumulates into
        # its input): the (tokens, r) middle is scaled, not the (tokens, out) result, so no extra
        # pass over the full-size output is made, forward or backward.
        low = (self.drop(x) @ self.lora_a.T) * self.scale                  # (..., r)
        y = self.base(x)
        return torch.addmm(y.reshape(-1, y.size(-1)), low.reshape(-1, self.rank),
                           self.lora_b.T).view(y.shape)

    def delta_weight(self) -> torch.Tensor:
        return self.lora_b @ self.lora_a * self.scale

    @torch.no_grad()
    def merge(self) -> None:
        """Fold B A into W: inference then costs exactly one matrix product again."""
        if not self.merged:
            self.base.weight += self.delta_weight()
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        if self.merged:
            self.base.weight -= self.delta_weight()
            self.merged = False


def apply_lora(model: nn.Module, rank: int = 8, alpha: float = 16.0,
               targets: Iterable[str] = ("attn.qkv", "attn.proj"), dropout: float = 0.0) -> list[str]:
    """Replace the chosen nn.Linear layers inside the transformer blocks by LoRALinear.

    `targets` are name suffixes (`attn.qkv`, `attn.proj`, `mlp.fc`, `mlp.proj`). Every
    other parameter is frozen except a classifier head, if there is one. Returns the
    names of the wrapped layers.
    """
    targets = tuple(targets)
    for p in model.parameters():
        p.requires_grad = False
    wrapped = []
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.Linear) and ".blocks." in f".{name}" and name.endswith(targets):
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name), child, LoRALinear(module, rank, alpha, dropout))
            wrapped.append(name)
    if not wrapped:
        raise ValueError(f"no linear layer inside the blocks matches {targets}")
    if isinstance(model, GPTClassifier):
        for p in model.head.parameters():
            p.requires_grad = True
    return wrapped


def merge_lora(model: nn.Module) -> int:
    """Merge every LoRA layer into its base weight; returns how many were merged."""
    layers = [m for m in model.modules() if isinstance(m, LoRALinear)]
    for layer in layers:
        layer.merge()
    return len(layers)


# ---------------------------------------------------------------------------- evaluation


@torch.no_grad()
def predict(model: GPTClassifier, dataset, batch_size: int = 128, device=None) -> tuple[np.ndarray, np.ndarray]:
    """(predicted labels, true labels) over a dataset of (ids, label) pairs."""
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    preds, labels = [], []
    for start in range(0, len(dataset), batch_size):
        xs, ys = zip(*(dataset[i] for i in range(start, min(start + batch_size, len(dataset)))), strict=True)
        logits, _ = model(torch.stack(xs).to(device))
        preds.append(logits.argmax(-1).cpu().numpy())
        labels.append(torch.stack(ys).numpy())
    model.train(was_training)
    return np.concatenate(preds), np.concatenate(labels)


def window_starts(n: int, window: int, stride: int) -> list[int]:
    """Where the windows over a text of `n` tokens start: every `stride` tokens, plus a last
    window that ends at the text's end. Every token is read, and when `n >= window` every
    window is full; a text of at most `window` tokens is one window, starting at 0."""
    if window < 1 or not 1 <= stride <= window:
        raise ValueError(f"need window >= 1 and 1 <= stride <= window, got window={window}, stride={stride}")
    last = max(n - window, 0)
    starts = list(range(0, last + 1, stride))
    return starts if starts[-1] == last else [*starts, last]


@torch.no_grad()
def predict_windows(model: GPTClassifier, texts: Sequence[str], vocab: Vocab, window: int | None = None,
                    stride: int | None = None, average: str = "logits", batch_size: int = 128,
                    device=None) -> tuple[np.ndarray, torch.Tensor]:
    """Classify whole texts, not just their first `window` tokens: cut each text into windows
    (`window_starts`), classify every window, and average a text's class scores over its
    windows: the logits (`average="logits"`) or the probabilities (`"probs"`).

    `window` defaults to the model's block_size and `stride` to `window`. A text of at most
    `window` tokens is one window, right-padded as `LabeledTexts` pads it, so its scores are
    the plain classifier's. Returns (predicted labels (N,), averaged scores (N, num_classes)).
    """
    if average not in ("logits", "probs"):
        raise ValueError(f"average must be 'logits' or 'probs', got {average!r}")
    if not texts:
        raise ValueError("no texts to classify")
    window = window or model.config.block_size
    stride = stride or window
    device = device or next(model.parameters()).device
    pieces, owner = [], []                       # every window's ids, and the text it belongs to
    for i, text in enumerate(texts):
        ids = vocab.encode(text)
        if not ids:
            raise ValueError(f"text {i} is empty: nothing to classify")
        for s in window_starts(len(ids), window, stride):
            pieces.append(ids[s: s + window])
            owner.append(i)
    was_training = model.training
    model.eval()
    scores = []
    for start in range(0, len(pieces), batch_size):
        chunk = pieces[start: start + batch_size]
        batch = torch.full((len(chunk), window), PAD, dtype=torch.long)   # right-padded, as LabeledTexts
        for row, ids in enumerate(chunk):
            batch[row, : len(ids)] = torch.tensor(ids)
        logits = model(batch.to(device))[0].float().cpu()
        scores.append(logits if average == "logits" else logits.softmax(-1))
    model.train(was_training)
    owner_t = torch.tensor(owner)
    total = torch.zeros(len(texts), scores[0].size(1)).index_add_(0, owner_t, torch.cat(scores))
    mean = total / torch.bincount(owner_t, minlength=len(texts)).unsqueeze(1)
    return mean.argmax(-1).numpy(), mean


def classification_report(pred: Sequence[int], true: Sequence[int]) -> dict:
    """Accuracy, macro F1 and the confusion matrix (rows: true label, columns: predicted)."""
    # heavy: a second to import, only to score
    from sklearn.metrics import (
        accuracy_score,
        confusion_matrix,
        f1_score,
    )

    return {"accuracy": float(accuracy_score(true, pred)),
            "f1": float(f1_score(true, pred, average="macro")),
            "confusion": confusion_matrix(true, pred, labels=[0, 1])}


# ---------------------------------------------------------------------------- how sure are we?


def wilson_interval(correct: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """The Wilson score interval of an accuracy of `correct` out of `n` (95% by default):
    better behaved than p ± z·sqrt(p(1-p)/n) near 0 and 1 and for small n."""
    if n < 1 or not 0 <= correct <= n:
        raise ValueError(f"need 0 <= correct <= n and n >= 1, got correct={correct}, n={n}")
    p = correct / n
    center = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, center - half), min(1.0, center + half)


def bootstrap_interval(pred: Sequence[int], true: Sequence[int], metric: str = "f1",
                       n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """A percentile bootstrap interval of `metric` ('accuracy' or macro 'f1'): resample the
    test set with replacement `n_boot` times and take the middle `level` of the scores."""
    # heavy: a second to import, only to score
    from sklearn.metrics import f1_score

    if metric not in ("accuracy", "f1"):
        raise ValueError(f"metric must be 'accuracy' or 'f1', got {metric!r}")
    pred, true = np.asarray(pred), np.asarray(true)
    rng = np.random.default_rng(seed)
    scores = []
    for _ in range(n_boot):
        i = rng.integers(0, len(true), len(true))
        scores.append(float((pred[i] == true[i]).mean()) if metric == "accuracy"
                      else float(f1_score(true[i], pred[i], average="macro", labels=[0, 1])))
    lo, hi = np.quantile(scores, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def mcnemar(pred_a: Sequence[int], pred_b: Sequence[int], true: Sequence[int]) -> dict:
    """McNemar's exact test: do classifiers A and B, on the same test items, differ in accuracy?

    Only the items where exactly one of them is right count: `a_only` (A right, B wrong) and
    `b_only`. Under the null hypothesis each such item is a fair coin, so the two-sided p-value
    is 2 · P(Binomial(a_only + b_only, 1/2) <= min(a_only, b_only)), capped at 1.
    """
    pred_a, pred_b, true = (np.asarray(x) for x in (pred_a, pred_b, true))
    if not len(pred_a) == len(pred_b) == len(true):
        raise ValueError("the two predictions and the labels must cover the same test items")
    right_a, right_b = pred_a == true, pred_b == true
    a_only, b_only = int((right_a & ~right_b).sum()), int((~right_a & right_b).sum())
    n, k = a_only + b_only, min(a_only, b_only)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n if n else 1.0
    return {"a_only": a_only, "b_only": b_only, "p_value": min(1.0, 2 * tail)}


def score(pred: Sequence[int], true: Sequence[int], n_boot: int = 1000) -> dict:
    """Accuracy with its Wilson interval and macro F1 with a bootstrap interval (95%)."""
    pred, true = np.asarray(pred), np.asarray(true)
    report = classification_report(pred, true)
    correct = int((pred == true).sum())
    return {"accuracy": report["accuracy"], "accuracy_ci": wilson_interval(correct, len(true)),
            "f1": report["f1"], "f1_ci": bootstrap_interval(pred, true, "f1", n_boot),
            "confusion": report["confusion"]}


# ---------------------------------------------------------------------------- features


@torch.no_grad()
def pooled_features(model: GPTClassifier, dataset, batch_size: int = 128, device=None,
                    progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(features (N, d_model), labels (N,)) of a dataset of (ids, label) pairs, in eval mode.

    With a frozen backbone these never change, so a "head only" classifier can be trained
    on them directly: one forward pass over the data instead of one per step.
    """
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    starts = range(0, len(dataset), batch_size)
    if progress:
        starts = tqdm(starts, desc="features", unit="batch", dynamic_ncols=True)
    feats, labels = [], []
    for start in starts:
        xs, ys = zip(*(dataset[i] for i in range(start, min(start + batch_size, len(dataset)))),
                     strict=True)
        feats.append(model.features(torch.stack(xs).to(device)).float().cpu())
        labels.append(torch.stack(ys))
    model.train(was_training)
    return torch.cat(feats), torch.cat(labels)


@torch.no_grad()
def frozen_pass(model: GPT, dataset, poolings: Iterable[tuple[str, bool]] = (("last", True),),
                batch_size: int = 128, desc: str = "", progress: bool = True):
    """One pass of a frozen GPT over a dataset of (ids, label) pairs. Returns the inputs of its
    last block (N, T, d_model), for training only the top, and its final hidden states pooled
    in each (pooling, mask_padding) way of `poolings`, for training only a head."""
    poolings = list(poolings)
    was_training = model.training
    model.eval()
    caught: list[torch.Tensor] = []
    hook = model.blocks[-1].register_forward_pre_hook(lambda block, args: caught.append(args[0]))
    pooled: dict = {key: [] for key in poolings}
    try:
        starts = range(0, len(dataset), batch_size)
        for start in tqdm(starts, desc=desc, unit="batch", disable=not progress, dynamic_ncols=True):
            xb = torch.stack([dataset[i][0] for i in range(start, min(start + batch_size, len(dataset)))])
            hidden = model.hidden_states(xb.to(next(model.parameters()).device))
            for how, mask in poolings:
                pooled[how, mask].append(pool(hidden, xb.to(hidden.device), how, mask).cpu())
    finally:
        hook.remove()
        model.train(was_training)
    return torch.cat(caught).cpu(), {key: torch.cat(v) for key, v in pooled.items()}


class HeadOnFeatures(nn.Module):
    """A classifier's dropout and head (shared, not copied), fed precomputed pooled features:
    trains exactly the "head" strategy without running the frozen GPT at every step."""

    def __init__(self, classifier: GPTClassifier):
        super().__init__()
        self.drop, self.head = classifier.drop, classifier.head
        self.config = classifier.config                  # what a checkpoint records

    def forward(self, feats, targets=None):
        logits = self.head(self.drop(feats))
        return logits, None if targets is None else F.cross_entropy(logits, targets.long())


class TopOfGPT(nn.Module):
    """A classifier's last block, final LayerNorm, dropout and head (shared with it), run on the
    cached inputs of the last block. Its input is a row number into `cache` (N, T, d_model)
    and `ids` (N, T), so the book's batch sources and `train` work unchanged."""

    def __init__(self, classifier: GPTClassifier, cache: torch.Tensor, ids: torch.Tensor):
        super().__init__()
        backbone = classifier.backbone
        self.block, self.ln_f = backbone.blocks[-1], backbone.ln_f
        self.drop, self.head, self.pooling = classifier.drop, classifier.head, classifier.pooling
        self.mask_padding, self.config = classifier.mask_padding, classifier.config
        self.cache, self.ids = cache, ids

    def forward(self, rows, targets=None):
        r = rows.cpu()
        hidden = self.ln_f(self.block(self.cache[r].to(rows.device)))
        pooled = pool(hidden, self.ids[r].to(rows.device), self.pooling, self.mask_padding)
        logits = self.head(self.drop(pooled))
        return logits, None if targets is None else F.cross_entropy(logits, targets.long())


def train_best(model: nn.Module, fit, val, cfg, batch_size: int, seed: int = 0):
    """Train `model` on (input, label) datasets with the book's loop and keep the weights of the
    evaluation with the lowest validation loss (steps chosen on validation, never on test).
    Returns (the train result, the best step)."""
    result, best = train_keeping_best(model, DatasetBatches(fit, batch_size, seed=seed), cfg,
                                      val_source=DatasetBatches(val, min(len(val), 4 * batch_size), seed=1))
    return result, int(best["step"])


def tfidf_logreg():
    """Chapter 10's strongest baseline, not yet fitted: TF-IDF over character 1- to 3-grams, then
    logistic regression (an sklearn pipeline: `.fit(texts, labels)`, `.predict(texts)`)."""
    # heavy: a second to import, only to fit the baseline
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    return make_pipeline(TfidfVectorizer(analyzer="char", ngram_range=(1, 3)), LogisticRegression(max_iter=2000))


# ---------------------------------------------------------------------------- embeddings


@torch.no_grad()
def embed(model: GPT, vocab: Vocab, texts: Sequence[str], batch_size: int = 64,
          max_len: int | None = None, center: bool | torch.Tensor = False,
          normalize: bool = True) -> torch.Tensor:
    """Sentence embeddings: the masked mean of the final hidden states, L2-normalised.

    GPT features share a large common direction, which lifts every raw cosine (about 0.5 on
    average for the book's cpu models, chapter 10a). `center=True` subtracts the mean embedding of `texts`, and a
    tensor subtracts that mean (e.g. the mean over a training set, from `normalize=False`)
    before normalising, which spreads the cosines out.
    """
    max_len = max_len or model.config.block_size
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = []
    for start in range(0, len(texts), batch_size):
        ids = [vocab.encode(t)[:max_len] or [PAD] for t in texts[start: start + batch_size]]
        width = max(map(len, ids))
        batch = torch.full((len(ids), width), PAD, dtype=torch.long)
        for i, row in enumerate(ids):
            batch[i, : len(row)] = torch.tensor(row)
        batch = batch.to(device)
        out.append(pool(model.hidden_states(batch), batch, "mean").float().cpu())
    model.train(was_training)
    emb = torch.cat(out)
    if isinstance(center, torch.Tensor):
        if center.shape != emb.shape[1:]:
            raise ValueError(f"center must be a ({emb.size(1)},) mean embedding, got {tuple(center.shape)}")
        emb = emb - center.to(emb)
    elif center:
        emb = emb - emb.mean(dim=0)
    return F.normalize(emb, dim=-1) if normalize else emb
