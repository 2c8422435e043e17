"""Checkpoints: a model's weights with everything needed to read, check or resume it.

A checkpoint is one `torch.save`d dict (format `course_utils.checkpoint/1`): the model's
configuration and weights, the optimizer's and gradient scaler's state, the step, the
vocabulary, the training configuration and history, and the random-number state, so a run
resumed from it continues exactly as if it had never stopped (chapter 05). Files are written
atomically (`course_utils.files`) and read with `weights_only=True` (tensors and plain data,
never code).
"""

from __future__ import annotations

import re
from dataclasses import asdict
from pathlib import Path

import torch

from .files import atomic_path
from .model import GPT, GPTConfig
from .vocab import Vocab

FORMAT = "course_utils.checkpoint/1"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable, or does not match the model/vocabulary."""


def atomic_save(obj, path: str | Path) -> Path:
    """`torch.save` to a temporary file in the same folder, then rename over `path`.

    A crash mid-save leaves the previous file untouched (and no half-written one).
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return path


def rng_state() -> dict:
    """The random-number state of torch (and of every GPU), to store in a checkpoint."""
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what `rng_state` returned."""
    # RNG states must be CPU byte tensors, but a checkpoint loaded with
    # map_location="cuda" has moved them to the GPU: bring them back first.
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def make_checkpoint(model: GPT, optimizer=None, *, step: int = 0, vocab: Vocab | None = None,
                    train_config=None, history: dict | None = None, scaler=None,
                    extra: dict | None = None) -> dict:
    """The checkpoint dict of `model` (and, to resume training, its optimizer and scaler);
    `train_config` is the run's `TrainConfig`, `extra` anything else worth keeping."""
    return {
        "format": FORMAT,
        "model_config": model.config.to_dict(),
        "model": model.state_dict(),
        "optimizer": None if optimizer is None else optimizer.state_dict(),
        "scaler": None if scaler is None else scaler.state_dict(),
        "step": step,
        "vocab": None if vocab is None else vocab.token2idx,
        "train_config": None if train_config is None else asdict(train_config),
        "history": history or {},
        "rng": rng_state(),
        "extra": extra or {},
    }


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """Read a checkpoint safely (`weights_only=True`: tensors and plain data, no code)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        raise CheckpointError(f"{path} is not a readable checkpoint ({type(err).__name__}: "
                              f"{str(err).splitlines()[0][:200]}); was it written by "
                              f"course_utils, and completely?") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a course_utils checkpoint")
    return ckpt


def check_compatible(ckpt: dict, model_config: GPTConfig | dict | None = None,
                     vocab: Vocab | None = None, source: str = "checkpoint") -> None:
    """Raise CheckpointError naming what differs between a checkpoint and a model/vocab."""
    if model_config is not None:
        want = model_config.to_dict() if isinstance(model_config, GPTConfig) else dict(model_config)
        have = ckpt["model_config"]
        diff = [f"{k}: {source} has {have.get(k)!r}, expected {want.get(k)!r}"
                for k in sorted(set(want) | set(have))
                if k != "fused_attention" and have.get(k) != want.get(k)]
        if diff:
            raise CheckpointError(f"{source} does not match the model configuration: " + "; ".join(diff))
    if vocab is not None and ckpt.get("vocab") is not None and ckpt["vocab"] != vocab.token2idx:
        have = ckpt["vocab"]
        inv = {i: t for t, i in have.items()}
        first = next((i for i, t in enumerate(vocab.idx2token) if inv.get(i) != t), None)
        where = (f"first difference at id {first}: {source} has {inv.get(first)!r}, "
                 f"the vocabulary {vocab.idx2token[first]!r}") if first is not None else "extra tokens"
        raise CheckpointError(f"{source} was trained with a different vocabulary "
                              f"({len(have)} tokens vs {len(vocab)}; {where})")


def model_from_checkpoint(path: str | Path, map_location="cpu", vocab: Vocab | None = None):
    """(model in eval mode, vocab or None, checkpoint dict) from a checkpoint file."""
    ckpt = load_checkpoint(path, map_location)
    check_compatible(ckpt, vocab=vocab, source=str(path))
    try:
        model = GPT(GPTConfig(**ckpt["model_config"]))
        model.load_state_dict(ckpt["model"])
    except (TypeError, RuntimeError, ValueError) as err:
        raise CheckpointError(f"{path}: the weights do not fit the stored configuration "
                              f"({str(err).splitlines()[0][:200]})") from None
    model.to(map_location).eval()
    stored_vocab = Vocab(ckpt["vocab"]) if ckpt.get("vocab") else None
    return model, stored_vocab, ckpt


def resume(path: str | Path, model, optimizer, scaler=None, *, vocab: Vocab | None = None,
           map_location="cpu") -> tuple[int, dict]:
    """Put a training run back where the checkpoint at `path` (or, for a folder, its latest
    `ckpt_*.pt`) left it: the weights, the optimizer's and scaler's state and the random-number
    state. Returns `(step, history)`: the step to continue from and the history so far."""
    path = Path(path)
    if path.is_dir():
        latest = CheckpointManager(path).latest()
        if latest is None:
            raise CheckpointError(f"no ckpt_*.pt in {path} to resume from")
        path = latest
    ckpt = load_checkpoint(path, map_location=map_location)
    check_compatible(ckpt, getattr(model, "config", None), vocab, source=str(path))
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    if scaler is not None and ckpt.get("scaler"):
        scaler.load_state_dict(ckpt["scaler"])
    set_rng_state(ckpt["rng"])
    return ckpt["step"], ckpt["history"]


_CKPT_RE = re.compile(r"^ckpt_(\d+)\.pt$")


class CheckpointManager:
    """`ckpt_<step>.pt` files in one folder: keeps the last `keep_last` plus `best.pt`."""

    def __init__(self, directory: str | Path, keep_last: int = 5):
        self.dir = Path(directory)
        self.keep_last = keep_last

    def steps(self) -> list[int]:
        if not self.dir.is_dir():
            return []
        return sorted(int(m.group(1)) for p in self.dir.iterdir() if (m := _CKPT_RE.match(p.name)))

    def path(self, step: int) -> Path:
        return self.dir / f"ckpt_{step:07d}.pt"

    @property
    def best_path(self) -> Path:
        return self.dir / "best.pt"

    def latest(self) -> Path | None:
        steps = self.steps()
        return self.path(steps[-1]) if steps else None

    def save(self, ckpt: dict, step: int, is_best: bool = False) -> Path:
        # best.pt first: a run killed between the two files resumes from the step before,
        # evaluates this step again and writes the same best.pt
        if is_best:
            atomic_save(ckpt, self.best_path)
        path = atomic_save(ckpt, self.path(step))
        for old in self.steps()[: -self.keep_last]:
            self.path(old).unlink(missing_ok=True)
        return path
