"""Measuring a model: the mean loss over fixed evaluation batches, the unigram baseline, and
where the time of a call goes (`op_table`, from torch.profiler).

Training (`course_utils.train`), quantization and export all measure with these, so none of
them needs the training loop to judge a model.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
from torch import nn

from . import amp
from .vocab import PAD

EVAL_OFFSET = 10**9  # evaluation batches are drawn from step numbers no training step reaches


@contextlib.contextmanager
def num_threads(threads: int | None):
    """Run the block on `threads` CPU threads (torch.set_num_threads), restoring the previous
    setting afterwards; None leaves it as it is."""
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


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


def op_table(fn, repeats: int = 5, top: int = 8, per: int = 1, threads: int | None = None):
    """Where the time of `fn()` goes, by operator: a DataFrame of the `top` PyTorch operators
    by *self* CPU time (time inside the operator itself, not in the operators it calls), per
    run of `fn` divided by `per` (e.g. the number of tokens `fn` generates), with the share of
    the wall time. A last row, "(outside the operators)", is the rest of the wall time: Python,
    dispatch and the profiler's own bookkeeping, which inflates every profiled run a little.

    One warm-up run comes first; then `repeats` runs under `torch.profiler.profile`, on
    `threads` CPU threads (None: the current setting).
    """
    import os
    import time

    import pandas as pd
    from torch.profiler import ProfilerActivity, profile

    # Kineto (the profiler's backend) logs a line at every start and stop unless told not to;
    # it reads this when the profiler first starts in a process
    os.environ.setdefault("KINETO_LOG_LEVEL", "6")

    if not callable(fn) or repeats < 1 or per <= 0:
        raise ValueError("op_table needs a callable, repeats >= 1 and per > 0")
    with num_threads(threads):
        fn()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            t0 = time.perf_counter()
            for _ in range(repeats):
                fn()
            wall_us = (time.perf_counter() - t0) * 1e6
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    scale = 1 / (1000 * repeats * per)  # microseconds in total -> milliseconds per unit
    rows = [{"operator": e.key, "calls": e.count / (repeats * per), "self ms": e.self_cpu_time_total * scale,
             "share of wall time": e.self_cpu_time_total / wall_us} for e in events[:top]]
    inside = sum(e.self_cpu_time_total for e in events)
    rows.append({"operator": f"(the other {max(len(events) - top, 0)} operators)",
                 "calls": sum(e.count for e in events[top:]) / (repeats * per),
                 "self ms": sum(e.self_cpu_time_total for e in events[top:]) * scale,
                 "share of wall time": sum(e.self_cpu_time_total for e in events[top:]) / wall_us})
    rows.append({"operator": "(outside the operators)", "calls": float("nan"),
                 "self ms": max(wall_us - inside, 0.0) * scale,
                 "share of wall time": max(wall_us - inside, 0.0) / wall_us})
    return pd.DataFrame(rows).set_index("operator")
