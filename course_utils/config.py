"""Profiles (ci / cpu / gpu), device choice, seeding and the cache folder.

One code path, three sizes: every notebook and script asks `get_profile()` for its
model size and training budget, so the same cells run in CI, on a laptop and on a GPU.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import platform
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent   # the source checkout: the book and the cache
PROFILE_ENV = "COURSE_PROFILE"
CACHE_ENV = "COURSE_CACHE"
COMPILE_MIN_STEPS = 500  # Profile.lm_speedups: shorter runs train without torch.compile


@dataclass(frozen=True)
class Profile:
    """Model size and training budget of one profile."""

    name: str
    # model (the GPT of chapters 04-11)
    d_model: int
    n_heads: int
    n_layers: int
    d_ff: int
    dropout: float
    block_size: int
    # pretraining (chapter 05)
    batch_size: int
    lr: float
    max_steps: int
    warmup_steps: int
    eval_interval: int
    eval_iters: int
    # fine-tuning (chapters 10-11)
    finetune_lr: float
    finetune_steps: int
    dialogue_steps: int               # chapter 11: the corpus is tiny, its best step comes early
    # domain adaptation (chapter 10): language-model steps on review text before fine-tuning
    adapt_lr: float
    adapt_steps: int
    # how much data a chapter may touch (None: all of it)
    max_docs: int | None
    description: str
    # how the language-model training steps run (chapter 05's "Going faster"): the head and
    # the loss fused chunk by chunk, fused AdamW, torch.compile (eager where no C++ compiler)
    fast_lm_training: bool = False
    # preference tuning (chapter 14): optimizer steps of RLHF and of DPO (64 samples each)
    preference_steps: int = 300

    def lm_speedups(self, precision: str = "fp32", steps: int | None = None) -> dict:
        """The `TrainConfig` fields that make this profile's language-model steps faster:
        `fused_loss` (fp32 only), `fused_adamw` and `compiled`, all off unless `fast_lm_training`.
        `compiled` only for runs of at least `COMPILE_MIN_STEPS` steps (default: the pretraining's):
        compiling costs tens of seconds once per run, which a short run does not earn back."""
        on = self.fast_lm_training
        steps = self.max_steps if steps is None else steps
        return {"fused_loss": on and precision == "fp32", "fused_adamw": on,
                "compiled": on and steps >= COMPILE_MIN_STEPS}

    def model_kwargs(self) -> dict:
        """The GPTConfig fields this profile fixes (vocab_size comes from the data)."""
        return dict(
            block_size=self.block_size,
            d_model=self.d_model,
            n_heads=self.n_heads,
            n_layers=self.n_layers,
            d_ff=self.d_ff,
            dropout=self.dropout,
        )

    def replace(self, **changes) -> Profile:
        return dataclasses.replace(self, **changes)


PROFILES: dict[str, Profile] = {
    # Tiny and fast: exercised by CI and `make test` on 2 CPU cores.
    "ci": Profile(
        name="ci",
        d_model=32, n_heads=2, n_layers=2, d_ff=64, dropout=0.0, block_size=32,
        batch_size=8, lr=3e-3, max_steps=30, warmup_steps=5, eval_interval=10, eval_iters=2,
        finetune_lr=1e-3, finetune_steps=20, dialogue_steps=20, adapt_lr=3e-3, adapt_steps=20, max_docs=2000,
        description="tiny model, a few dozen steps: checks that every cell runs", preference_steps=4,
    ),
    # A laptop without a GPU: minutes per notebook, enough to see real learning.
    "cpu": Profile(
        name="cpu",
        d_model=128, n_heads=4, n_layers=4, d_ff=512, dropout=0.0, block_size=64,
        batch_size=32, lr=2e-3, max_steps=2000, warmup_steps=100, eval_interval=250, eval_iters=20,
        finetune_lr=5e-4, finetune_steps=600, dialogue_steps=300, adapt_lr=1e-3, adapt_steps=1000, max_docs=None,
        description="small model, minutes per notebook on a laptop CPU", fast_lm_training=True,
    ),
    # The course's model and training settings on one GPU (an RTX 3090 in the original); the
    # context of 128 tokens is the book's choice (the source material fixes none).
    "gpu": Profile(
        name="gpu",
        d_model=256, n_heads=8, n_layers=6, d_ff=1024, dropout=0.1, block_size=128,
        batch_size=32, lr=1e-4, max_steps=20000, warmup_steps=500, eval_interval=1000,
        eval_iters=50, finetune_lr=1e-5, finetune_steps=3000, dialogue_steps=3000, adapt_lr=1e-4, adapt_steps=5000,
        max_docs=None,
        description="the course's model (d_model 256, 8 heads, 6 layers) on a CUDA GPU",
    ),
}


def get_profile(name: str | None = None) -> Profile:
    """The active profile: `name`, else $COURSE_PROFILE, else `gpu` with CUDA and `cpu` without."""
    name = name or os.environ.get(PROFILE_ENV) or ("gpu" if torch.cuda.is_available() else "cpu")
    name = name.strip().lower()
    if name not in PROFILES:
        raise ValueError(
            f"unknown profile {name!r}: choose one of {', '.join(PROFILES)} "
            f"(set {PROFILE_ENV} or pass --profile)"
        )
    return PROFILES[name]


def get_device(prefer: str | None = None) -> torch.device:
    """CUDA when present, else Apple's MPS, else the CPU (or `prefer` if given)."""
    if prefer:
        return torch.device(prefer)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int = 0) -> None:
    """Seed Python, NumPy and PyTorch (all devices) so a run can be repeated."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


@functools.lru_cache(maxsize=1)
def compiler_available() -> str | None:
    """None if `torch.compile` can build CPU kernels here, else why not (it needs a C++ compiler)."""
    if not any(shutil.which(c) for c in (os.environ.get("CXX", ""), "g++", "c++", "clang++") if c):
        return "no C++ compiler (g++, c++ or clang++) on PATH"
    return None


def cache_dir() -> Path:
    """Where built artifacts (vocabularies, pretrained models) are cached; git-ignores it."""
    path = Path(os.environ.get(CACHE_ENV, REPO / ".cache"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def claim(statement: str, holds: bool, profile: Profile | None = None) -> None:
    """State what this run shows, and check it. Under `cpu` and `gpu` the statement is printed
    with a tick, and the cell fails (AssertionError naming the statement) if it does not hold;
    under `ci`, whose tiny model and few steps cannot show what a full run shows, it is printed
    as checked on the full run. A chapter's prose then rests on a visible, checked line:

        config.claim(f"the loss fell below the unigram baseline ({val:.3f} < {uni:.3f})", val < uni)
    """
    profile = profile or get_profile()
    if profile.name == "ci":
        print(f"(checked on the full run, not under ci) {statement}")
    elif not holds:
        raise AssertionError(f"this run does not show what the text says: {statement}")
    else:
        print(f"\u2713 {statement}")


def summary(profile: Profile | None = None) -> str:
    """One line a notebook prints near its top: profile, device, versions."""
    profile = profile or get_profile()
    device = get_device()
    threads = torch.get_num_threads()
    return (
        f"profile={profile.name} ({profile.description}) | device={device} | "
        f"torch {torch.__version__} | python {platform.python_version()} | {threads} CPU threads"
    )
