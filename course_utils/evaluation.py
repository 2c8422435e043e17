"""Judging a language model: its mean loss over fixed evaluation batches, and the unigram
baseline it must beat.

Training (`course_utils.train`), quantization and export all evaluate with these, so none of
them needs the training loop to judge a model.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from . import amp
from .vocab import PAD

EVAL_OFFSET = 10**9  # evaluation batches are drawn from step numbers no training step reaches


def num_targets(y: torch.Tensor) -> int:
    """How many targets a batch holds: non-`<pad>` tokens for (B, T) token targets, one
    per example for (B,) class labels (where label 0 is a class, not padding)."""
    return int((y != PAD).sum()) if y.dim() >= 2 else y.numel()


def sum_over_ranks(total: float, count: float, device, world_size: int = 1) -> tuple[float, float]:
    """Add up `(total, count)` over the ranks of a DDP run (unchanged for one process).

    Every rank must call it at the same point (it is a collective, like all collectives).
    """
    if world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
        both = torch.tensor([total, count], dtype=torch.float64, device=device)
        torch.distributed.all_reduce(both)
        total, count = both.tolist()
    return total, count


@torch.no_grad()
def evaluate(model: nn.Module, source, iters: int, device, precision: str = "fp32",
             rank: int = 0, world_size: int = 1) -> float:
    """Mean loss over `iters` fixed batches of `source` (the same batches every time).

    In a DDP run each rank evaluates its share of every batch and the sums are
    all-reduced, so every rank returns the loss of the whole batches.
    """
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for i in range(iters):
        x, y = source.get(EVAL_OFFSET + i, rank, world_size)
        x, y = x.to(device), y.to(device)
        with amp.autocast(device, precision):
            _, loss = model(x, y)
        n = num_targets(y)
        total, count = total + float(loss) * n, count + n
    model.train(was_training)
    total, count = sum_over_ranks(total, count, device, world_size)
    return total / max(count, 1)


def unigram_loss(train_tokens: np.ndarray, val_tokens: np.ndarray, vocab_size: int) -> float:
    """Cross-entropy (nats/token) of predicting every token from training-set frequencies
    alone (add-one smoothed): the baseline a language model must beat."""
    counts = np.bincount(np.asarray(train_tokens, dtype=np.int64), minlength=vocab_size) + 1.0
    logp = np.log(counts / counts.sum())
    return float(-logp[np.asarray(val_tokens, dtype=np.int64)].mean())
