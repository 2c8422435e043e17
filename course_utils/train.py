"""The one training loop of the book: AdamW, warm-up + cosine schedule, clipping,
accumulation, evaluation, checkpoints and exact resumption.

Chapters 05-11 and the DDP entry point all call `train`. Batches come from a *batch
source* whose batch at step `s` depends only on `s`, so a resumed run sees exactly the
batches an uninterrupted run would, and DDP ranks can split one global batch. The checkpoint
files themselves are `course_utils.checkpoints`.

Command line: `python -m course_utils.train --help` (course_utils/cli/train.py).
"""

from __future__ import annotations

import contextlib
import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from . import amp
from .checkpoints import CheckpointManager, load_checkpoint, make_checkpoint, resume
from .config import cache_dir, compiler_available
from .evaluation import evaluate, num_targets, sum_over_ranks
from .model import GPT
from .vocab import Vocab

# ---------------------------------------------------------------------------- config


@dataclass
class TrainConfig:
    max_steps: int = 1000
    lr: float = 1e-3
    min_lr_ratio: float = 0.1          # cosine decays to lr * min_lr_ratio
    warmup_steps: int = 100
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0             # 0 disables clipping
    grad_accum: int = 1                # micro-batches per step (the batch is split)
    eval_interval: int = 100
    eval_iters: int = 10
    log_interval: int = 10
    seed: int = 0
    precision: str = "fp32"            # fp32 | bf16 | fp16 (see course_utils.amp)
    compiled: bool = False             # torch.compile the model (eager, saying so, without a C++ compiler)
    fused_adamw: bool = False          # AdamW's single fused kernel (torch.optim.AdamW(fused=True))
    fused_loss: bool = False           # GPT only, fp32: model.linear_cross_entropy (no logits)
    checkpoint_dir: str | None = None
    checkpoint_interval: int = 0       # 0: only at evaluations
    keep_last: int = 5                 # the course kept 5; the best one is kept besides
    progress: bool = True

    def __post_init__(self):
        self.betas = tuple(self.betas)
        checks = {"max_steps": self.max_steps >= 1, "lr": self.lr > 0, "grad_accum": self.grad_accum >= 1,
                  "eval_interval": self.eval_interval >= 1, "eval_iters": self.eval_iters >= 1,
                  "warmup_steps": self.warmup_steps >= 0, "keep_last": self.keep_last >= 1,
                  "min_lr_ratio": 0 <= self.min_lr_ratio <= 1}
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"TrainConfig.{name} has an invalid value: {getattr(self, name)!r}")
        amp.check_precision(self.precision, "cuda" if self.precision == "fp16" else "cpu")
        if self.fused_loss and self.precision != "fp32":
            raise ValueError(f"TrainConfig.fused_loss computes the loss in fp32 and cannot be combined "
                             f"with precision={self.precision!r}: set one of them")

    @classmethod
    def from_profile(cls, profile, **overrides) -> TrainConfig:
        """The profile's pretraining budget and its language-model speed-ups
        (`profile.lm_speedups`: the fused head and loss only in fp32); `overrides` win."""
        base = dict(max_steps=profile.max_steps, lr=profile.lr, warmup_steps=profile.warmup_steps,
                    eval_interval=profile.eval_interval, eval_iters=profile.eval_iters,
                    **profile.lm_speedups(overrides.get("precision", "fp32"), overrides.get("max_steps")))
        base.update(overrides)
        return cls(**base)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up to `lr`, then cosine decay to `lr * min_lr_ratio` at `max_steps`."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(1, cfg.max_steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    min_lr = cfg.lr * cfg.min_lr_ratio
    return min_lr + 0.5 * (cfg.lr - min_lr) * (1 + math.cos(math.pi * progress))


def configure_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices (linear and embedding weights) only.

    Biases and LayerNorm gains are not decayed: shrinking them toward 0 has no
    regularising meaning. Tied weights appear once (named_parameters deduplicates).
    """
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, fused=cfg.fused_adamw or None)


# ---------------------------------------------------------------------------- the loop


@dataclass
class TrainResult:
    model: GPT
    history: dict = field(default_factory=dict)  # lists: step, lr, loss, tokens_per_s; eval_*
    step: int = 0
    best_val_loss: float = float("inf")
    checkpoint: Path | None = None


def _new_history() -> dict:
    return {"step": [], "lr": [], "loss": [], "tokens_per_s": [],
            "eval_step": [], "train_loss": [], "val_loss": []}


def train(model: GPT, train_source, cfg: TrainConfig, *, val_source=None, vocab: Vocab | None = None,
          device=None, resume_from: str | Path | None = None, stop_at: int | None = None,
          on_eval: Callable[[int, GPT, dict], None] | None = None,
          rank: int = 0, world_size: int = 1, ddp_model: nn.Module | None = None) -> TrainResult:
    """Train `model` for `cfg.max_steps` steps (or until `stop_at`, to simulate a stop).

    - `train_source.get(step, rank, world_size)` gives the (x, y) batch of a step.
    - `resume_from`: a checkpoint (or a checkpoint folder: its latest) to continue from.
    - `on_eval(step, model, history)`: called after each evaluation (e.g. to print samples).
    - `ddp_model`: the DistributedDataParallel wrapper of `model` (course_utils.ddp).
    """
    device = torch.device(device or next(model.parameters()).device)
    model.to(device)
    is_main = rank == 0
    if cfg.fused_loss and not isinstance(model, GPT):
        raise ValueError(f"TrainConfig.fused_loss needs the GPT language model, not a "
                         f"{type(model).__name__}: set fused_loss=False")
    loss_kwargs = {"fused_loss": True} if cfg.fused_loss else {}
    amp.check_precision(cfg.precision, device)
    optimizer = configure_optimizer(model, cfg)
    scaler = amp.grad_scaler(device, cfg.precision)
    history, start, best = _new_history(), 0, float("inf")
    manager = CheckpointManager(cfg.checkpoint_dir, cfg.keep_last) if cfg.checkpoint_dir else None

    if resume_from is not None:
        start, stored = resume(resume_from, model, optimizer, scaler, vocab=vocab, map_location=device)
        history = {**_new_history(), **stored}
        best = min(history["val_loss"], default=float("inf"))

    runner = ddp_model if ddp_model is not None else model
    if cfg.compiled:
        why = compiler_available()
        if why is None:
            runner = torch.compile(runner)
        elif is_main:
            print(f"torch.compile is not available here ({why}): training without it")
    end = cfg.max_steps if stop_at is None else min(stop_at, cfg.max_steps)
    model.train()

    def do_eval(step: int) -> None:
        nonlocal best
        tr = evaluate(model, train_source, cfg.eval_iters, device, cfg.precision, rank, world_size)
        history["eval_step"].append(step)
        history["train_loss"].append(tr)
        if val_source is not None:
            va = evaluate(model, val_source, cfg.eval_iters, device, cfg.precision, rank, world_size)
            history["val_loss"].append(va)
        if on_eval is not None and is_main:
            on_eval(step, model, history)

    def save(step: int) -> Path | None:
        nonlocal best
        if manager is None or not is_main:
            return None
        current = history["val_loss"][-1] if history["val_loss"] else None
        is_best = current is not None and current < best and history["eval_step"][-1] == step
        if is_best:
            best = current
        ckpt = make_checkpoint(model, optimizer, step=step, vocab=vocab, train_config=cfg,
                               history=history, scaler=scaler)
        return manager.save(ckpt, step, is_best=is_best)

    bar = None
    if cfg.progress and is_main:
        bar = tqdm(total=end, initial=start, desc="training", unit="step", dynamic_ncols=True)

    tokens_seen, t0, last_path = 0, time.perf_counter(), None
    for step in range(start, end):
        lr = lr_at(step, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        x, y = train_source.get(step, rank, world_size)
        n_valid = num_targets(y)
        step_loss = 0.0
        micro = list(zip(x.chunk(cfg.grad_accum), y.chunk(cfg.grad_accum), strict=True))
        for i, (xb, yb) in enumerate(micro):
            xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
            share = num_targets(yb) / max(n_valid, 1)  # token-weighted: equals one big batch
            sync = ddp_model is None or i == len(micro) - 1
            ctx = contextlib.nullcontext() if sync else ddp_model.no_sync()
            with ctx:
                with amp.autocast(device, cfg.precision):
                    _, loss = runner(xb, yb, **loss_kwargs)
                scaler.scale(loss * share).backward()
            step_loss += float(loss.detach()) * share
        if cfg.grad_clip > 0:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        tokens_seen += n_valid

        done = step + 1
        if done % cfg.log_interval == 0 or done == end:
            elapsed = time.perf_counter() - t0
            total, count = sum_over_ranks(step_loss * n_valid, n_valid, device, world_size)
            history["step"].append(done)
            history["lr"].append(lr)
            history["loss"].append(total / max(count, 1))  # the loss of the global batch
            history["tokens_per_s"].append(tokens_seen * world_size / max(elapsed, 1e-9))
        if done % cfg.eval_interval == 0 or done == cfg.max_steps:
            do_eval(done)
            last_path = save(done) or last_path
        elif cfg.checkpoint_interval and done % cfg.checkpoint_interval == 0:
            last_path = save(done) or last_path
        if bar is not None:
            post = {"loss": f"{step_loss:.3f}", "lr": f"{lr:.1e}"}
            if history["val_loss"]:
                post["val"] = f"{history['val_loss'][-1]:.3f}"
            bar.set_postfix(post, refresh=False)
            bar.update(1)
    if bar is not None:
        bar.close()
    if stop_at is not None and end < cfg.max_steps and manager is not None:
        last_path = save(end) or last_path  # a deliberate stop: leave a checkpoint to resume
    model.eval()
    return TrainResult(model=model, history=history, step=end,
                       best_val_loss=min(history["val_loss"], default=float("inf")),
                       checkpoint=last_path)


# ---------------------------------------------------------------------------- keeping the best


def train_keeping_best(model: nn.Module, train_source, cfg: TrainConfig, *, val_source,
                       vocab: Vocab | None = None, device=None, resume_from: str | Path | None = None):
    """`train`, then load the weights of the evaluation with the lowest validation loss (the
    number of steps chosen on validation). Checkpoints go to `cfg.checkpoint_dir`, or, when it
    is None, to a temporary folder in the cache, removed afterwards. Returns `(the train result,
    the best checkpoint)`."""
    if cfg.checkpoint_dir is None:
        with tempfile.TemporaryDirectory(dir=cache_dir(), prefix=".run.") as run_dir:
            return train_keeping_best(model, train_source, replace(cfg, checkpoint_dir=run_dir, keep_last=1),
                                      val_source=val_source, vocab=vocab, device=device,
                                      resume_from=resume_from)
    result = train(model, train_source, cfg, val_source=val_source, vocab=vocab, device=device,
                   resume_from=resume_from)
    best = load_checkpoint(Path(cfg.checkpoint_dir) / "best.pt", map_location=device or "cpu")
    model.load_state_dict(best["model"])
    return result, best


if __name__ == "__main__":  # `python -m course_utils.train` runs the command line, kept apart
    import runpy

    runpy.run_module("course_utils.cli.train", run_name="__main__")
