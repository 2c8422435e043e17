"""Data-parallel pretraining (chapter 06): the process group, what every rank builds, and checks
that the replicas agree.

Every rank of `torchrun ... -m course_utils.ddp` (course_utils/cli/ddp.py) joins the process group
torchrun describes (`DistEnv`, `init`), builds the same run (`build_run`), wraps the GPT in
DistributedDataParallel and calls the book's one loop, `course_utils.train.train`.

    torchrun --standalone --nproc_per_node=2 -m course_utils.ddp --profile ci --steps 20
"""

from __future__ import annotations

import datetime
import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from .batches import WindowBatches
from .config import seed_everything
from .model import GPT, GPTConfig
from .train import TrainConfig
from .vocab import Vocab

TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
NOT_UNDER_TORCHRUN = ("error: run me under torchrun, which sets " + ", ".join(TORCHRUN_VARS)
                      + ": torchrun --standalone --nproc_per_node=2 -m course_utils.ddp --profile ci")


# ---------------------------------------------------------------------------- the process group


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits in the job, as torchrun describes it in the environment."""

    rank: int          # 0 .. world_size-1, unique over all machines
    world_size: int    # number of processes in the job
    local_rank: int    # 0 .. (processes on this machine)-1: picks the GPU
    master_addr: str   # where rank 0's rendezvous store listens
    master_port: int

    @classmethod
    def from_environ(cls, environ=None) -> DistEnv | None:
        """The torchrun variables, or None when any is missing (not started by torchrun)."""
        environ = os.environ if environ is None else environ
        if any(name not in environ for name in TORCHRUN_VARS):
            return None
        return cls(int(environ["RANK"]), int(environ["WORLD_SIZE"]), int(environ["LOCAL_RANK"]),
                   environ["MASTER_ADDR"], int(environ["MASTER_PORT"]))


def device_for(local_rank: int) -> torch.device:
    """`cuda:<local_rank>` when GPUs are present (one GPU per process), else the CPU."""
    if torch.cuda.is_available():
        if local_rank >= torch.cuda.device_count():
            raise RuntimeError(f"local rank {local_rank} has no GPU: this machine has "
                               f"{torch.cuda.device_count()}; lower --nproc_per_node")
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def backend_for(device: torch.device) -> str:
    """NCCL moves CUDA tensors between GPUs; Gloo works on CPU tensors (and everywhere)."""
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


def init(env: DistEnv, device: torch.device, backend: str | None = None,
         timeout_s: float = 300) -> str:
    """Join the process group (the `env://` rendezvous torchrun prepared) and return the backend.

    The timeout bounds every collective: a rank that died or hangs makes the others fail
    with an error after `timeout_s` seconds instead of waiting forever.
    """
    backend = backend or backend_for(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)  # before any collective, so NCCL uses this rank's GPU
    dist.init_process_group(backend, rank=env.rank, world_size=env.world_size,
                            timeout=datetime.timedelta(seconds=timeout_s))
    return backend


def barrier(device: torch.device) -> None:
    """Wait until every rank gets here (with NCCL, name the GPU so no extra context is made)."""
    if device.type == "cuda":
        dist.barrier(device_ids=[device.index])
    else:
        dist.barrier()


def free_port() -> int:
    """A TCP port nobody listens on right now (for MASTER_PORT on one machine)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


# ---------------------------------------------------------------------------- one run


@dataclass
class Run:
    """What a pretraining run needs; built the same way in every rank and in a single process."""

    model: GPT
    vocab: Vocab
    train_source: WindowBatches
    val_source: WindowBatches
    cfg: TrainConfig


def build_run(profile, vocab: Vocab, train_tokens, val_tokens, *, batch_size: int | None = None,
              steps: int | None = None, lr: float | None = None, dropout: float | None = None,
              precision: str = "fp32", seed: int = 0, eval_interval: int | None = None,
              eval_iters: int | None = None, log_interval: int = 10,
              checkpoint_dir: str | None = None, progress: bool = False) -> Run:
    """The model, batch sources and TrainConfig of a pretraining run on the token streams
    `train_tokens` and `val_tokens` (the news corpus, `artifacts.news_tokens`).

    `batch_size` is the *global* batch: in a DDP run each of the `world_size` ranks gets
    `batch_size / world_size` of its windows (`WindowBatches.get(step, rank, world_size)`).
    Warm-up is capped at a tenth of the run so that short runs leave it.
    """
    batch_size = batch_size or profile.batch_size
    steps = steps or profile.max_steps
    model_kwargs = profile.model_kwargs()
    if dropout is not None:
        model_kwargs["dropout"] = dropout
    seed_everything(seed)
    model = GPT(GPTConfig(vocab_size=len(vocab), **model_kwargs))
    train_source = WindowBatches(train_tokens, batch_size, profile.block_size, seed=seed)
    val_source = WindowBatches(val_tokens, batch_size, profile.block_size, seed=seed + 1)
    eval_interval = min(eval_interval or profile.eval_interval, steps)
    cfg = TrainConfig.from_profile(
        profile, max_steps=steps, lr=lr or profile.lr, precision=precision, seed=seed,
        warmup_steps=min(profile.warmup_steps, max(1, steps // 10)),
        eval_interval=eval_interval, eval_iters=eval_iters or profile.eval_iters,
        log_interval=min(log_interval, eval_interval),
        checkpoint_dir=checkpoint_dir, progress=progress,
        fused_loss=False, fused_adamw=False, compiled=False)  # the plain step: DDP is the lesson
    return Run(model, vocab, train_source, val_source, cfg)


def parameter_vector(model: torch.nn.Module) -> torch.Tensor:
    """All parameters of `model`, flattened into one fp32 vector (tied weights once)."""
    return torch.cat([p.detach().float().reshape(-1) for p in model.parameters()])


def replica_spread(model: torch.nn.Module, world_size: int) -> float:
    """The largest difference between this rank's parameters and any other rank's (0: in sync)."""
    mine = parameter_vector(model)
    lo, hi = mine.clone(), mine.clone()
    dist.all_reduce(lo, op=dist.ReduceOp.MIN)
    dist.all_reduce(hi, op=dist.ReduceOp.MAX)
    return float((hi - lo).abs().max())


def all_reduce_demo(rank: int, world_size: int, port: int, out_dir: str) -> None:
    """One process of chapter 06's all-reduce demo, started by `torch.multiprocessing.spawn`.

    Rank r holds the tensor [0, 1, 2, 3] + 10 r (think: its gradient); after
    `all_reduce(SUM)` every rank holds the same sum. What each rank saw goes to
    `out_dir/rank<r>.json`, since a spawned process's prints do not reach a notebook.
    """
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size,
                            timeout=datetime.timedelta(seconds=60))
    try:
        grad = torch.arange(4, dtype=torch.float32) + 10 * rank
        before = grad.tolist()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        summed = grad.tolist()
        grad /= world_size  # what DDP does: the sum, divided by the number of ranks
        record = {"rank": rank, "pid": os.getpid(), "before": before, "sum": summed,
                  "mean": grad.tolist()}
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(record))
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":  # torchrun's `-m course_utils.ddp` runs the command line, kept apart
    import runpy

    runpy.run_module("course_utils.cli.ddp", run_name="__main__")
