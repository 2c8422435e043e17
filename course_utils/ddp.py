"""Data-parallel pretraining: the torchrun entry point (chapter 06).

Every rank runs this file. It joins the process group torchrun describes, wraps the
GPT in DistributedDataParallel and calls the book's one loop, `course_utils.train.train`.

    torchrun --standalone --nproc_per_node=2 -m course_utils.ddp --profile ci --steps 20

Command line: `python -m course_utils.ddp --help`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from . import amp

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
    import socket

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

    model: torch.nn.Module
    vocab: object
    train_source: object
    val_source: object
    cfg: object


def build_run(profile, *, batch_size: int | None = None, steps: int | None = None,
              lr: float | None = None, dropout: float | None = None, precision: str = "fp32",
              seed: int = 0, eval_interval: int | None = None, eval_iters: int | None = None,
              log_interval: int = 10, checkpoint_dir: str | None = None,
              progress: bool = False) -> Run:
    """The model, batch sources and TrainConfig of a news-pretraining run.

    `batch_size` is the *global* batch: in a DDP run each of the `world_size` ranks gets
    `batch_size / world_size` of its windows (`WindowBatches.get(step, rank, world_size)`).
    Warm-up is capped at a tenth of the run so that short runs leave it.
    """
    from . import artifacts
    from .config import seed_everything
    from .model import GPT, GPTConfig
    from .train import TrainConfig, WindowBatches

    batch_size = batch_size or profile.batch_size
    steps = steps or profile.max_steps
    vocab = artifacts.news_vocab()
    train_tokens, val_tokens = artifacts.news_tokens("train"), artifacts.news_tokens("val")
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
        fused_loss=False, fused_adamw=False, compile=False)  # the plain step: DDP is the lesson
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


# ---------------------------------------------------------------------------- command line


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m course_utils.ddp",
        description="Pretrain the char-level GPT on the news corpus with DistributedDataParallel. "
                    "Start it with torchrun, e.g. `torchrun --standalone --nproc_per_node=2 "
                    "-m course_utils.ddp --profile ci --steps 20`; every rank runs this program.")
    parser.add_argument("--profile", choices=["ci", "cpu", "gpu"], help="model size and budget "
                        "(default: $COURSE_PROFILE, else gpu with CUDA, else cpu)")
    parser.add_argument("--steps", type=int, help="training steps (default: the profile's)")
    parser.add_argument("--batch-size", type=int, help="the GLOBAL batch in windows, split evenly "
                        "over the ranks (default: the profile's)")
    parser.add_argument("--lr", type=float, help="peak learning rate (default: the profile's)")
    parser.add_argument("--dropout", type=float, help="override the profile's dropout")
    parser.add_argument("--precision", default="fp32", choices=amp.PRECISIONS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-interval", type=int, help="evaluate (and log) every N steps")
    parser.add_argument("--eval-iters", type=int, help="batches per evaluation")
    parser.add_argument("--out", "--checkpoint-dir", dest="out", metavar="DIR",
                        help="rank 0 writes checkpoints and summary.json here")
    parser.add_argument("--resume", action="store_true", help="continue from the latest "
                        "checkpoint in --out (every rank must see that folder)")
    parser.add_argument("--save-params", metavar="FILE", help="rank 0 saves the final "
                        "state_dict here (for comparisons and tests)")
    parser.add_argument("--backend", choices=["gloo", "nccl"], help="default: nccl with CUDA, else gloo")
    parser.add_argument("--timeout", type=float, default=300, metavar="SECONDS",
                        help="give up on a collective after this long (a dead or stuck rank)")
    parser.add_argument("--progress", action="store_true", help="a tqdm bar on rank 0")
    args = parser.parse_args(argv)
    for name in ("steps", "batch_size", "eval_interval", "eval_iters"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    if args.resume and not args.out:
        parser.error("--resume needs --out DIR (the folder holding the checkpoints)")
    return args


def run(args: argparse.Namespace, env: DistEnv, device: torch.device, backend: str) -> dict:
    """One rank's share of the job; returns the summary (meaningful on rank 0)."""
    from . import artifacts
    from .config import get_profile
    from .train import train

    profile = get_profile(args.profile)
    rank, world = env.rank, env.world_size
    is_main = rank == 0
    batch_size = args.batch_size or profile.batch_size
    # Rank 0 builds the cached token files; the others wait so they never read half a file.
    if is_main:
        artifacts.news_tokens("train"), artifacts.news_tokens("val")
    barrier(device)

    job = build_run(profile, batch_size=batch_size, steps=args.steps, lr=args.lr,
                    dropout=args.dropout, precision=args.precision, seed=args.seed,
                    eval_interval=args.eval_interval, eval_iters=args.eval_iters,
                    checkpoint_dir=args.out, progress=args.progress and is_main)
    model = job.model.to(device)
    # DDP broadcasts rank 0's weights to every rank here, then all-reduces gradients in
    # backward. Anything we add to the model (a head, LoRA) goes on `model`, not on `ddp`.
    ddp = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    x, _ = job.train_source.get(0, rank, world)
    print(f"[rank {rank}/{world}] local_rank {env.local_rank} on {device} ({backend}), "
          f"{torch.get_num_threads()} thread(s): {x.shape[0]} of the {batch_size} windows "
          f"of each step, {x.numel()} tokens", flush=True)
    if is_main:
        print(f"[rank 0] profile {profile.name}: {model.num_parameters():,} parameters, "
              f"{job.cfg.max_steps} steps, global batch {batch_size} = {world} x "
              f"{batch_size // world} windows of {profile.block_size} tokens", flush=True)

    def log(step, _model, history):
        speed = f" | {history['tokens_per_s'][-1]:,.0f} tokens/s" if history["tokens_per_s"] else ""
        print(f"[rank 0] step {step:>5}/{job.cfg.max_steps} | train loss "
              f"{history['train_loss'][-1]:.3f} | val loss {history['val_loss'][-1]:.3f}{speed}",
              flush=True)

    resume = None
    if args.resume:
        from .train import CheckpointManager
        resume = CheckpointManager(args.out).latest()
        if is_main:
            print(f"[rank 0] resuming from {resume}" if resume else
                  f"[rank 0] no checkpoint in {args.out}: starting from scratch", flush=True)
    start = time.perf_counter()
    result = train(model, job.train_source, job.cfg, val_source=job.val_source, vocab=job.vocab,
                   device=device, rank=rank, world_size=world, ddp_model=ddp,
                   on_eval=log, resume_from=resume)
    wall = time.perf_counter() - start

    spread = replica_spread(model, world)
    checksum = float(parameter_vector(model).double().sum())
    print(f"[rank {rank}/{world}] done: parameter sum {checksum:.6f}", flush=True)
    history = result.history
    summary = {"world_size": world, "backend": backend, "device": str(device),
               "profile": profile.name, "steps": result.step, "global_batch": batch_size,
               "block_size": profile.block_size, "precision": args.precision,
               "threads_per_rank": torch.get_num_threads(), "wall_s": wall,
               "tokens_per_s": history["tokens_per_s"][-1] if history["tokens_per_s"] else None,
               "train_loss": history["loss"][-1] if history["loss"] else None,
               "val_loss": history["val_loss"][-1] if history["val_loss"] else None,
               "replica_spread": spread, "history": history}
    if is_main:
        verdict = "agree" if spread == 0 else "DIFFER"
        print(f"[rank 0] the {world} replicas {verdict}: largest parameter difference between "
              f"ranks {spread:.1e}; {summary['tokens_per_s']:,.0f} tokens/s over {wall:.1f} s",
              flush=True)
        if args.save_params:
            from .train import atomic_save
            atomic_save(model.state_dict(), args.save_params)  # the module's names: no "module."
            print(f"[rank 0] parameters saved to {args.save_params}", flush=True)
        if args.out:
            path = Path(args.out) / "summary.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(summary, indent=1))
            print(f"[rank 0] checkpoints and summary.json in {args.out}", flush=True)
    return summary


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    env = DistEnv.from_environ()
    if env is None:
        print(NOT_UNDER_TORCHRUN, file=sys.stderr)
        return 2
    try:  # settings are checked before joining the group, so no rank is left waiting
        from .config import get_profile
        batch_size = args.batch_size or get_profile(args.profile).batch_size
        if batch_size % env.world_size:
            raise ValueError(f"--batch-size {batch_size} does not split evenly over "
                             f"{env.world_size} ranks: use a multiple of {env.world_size}, so "
                             f"every rank averages over as many tokens")
        device = device_for(env.local_rank)
        amp.check_precision(args.precision, device)
    except (ValueError, RuntimeError) as err:
        print(f"error: [rank {env.rank}] {err}", file=sys.stderr)
        return 2
    backend = init(env, device, args.backend, args.timeout)
    try:
        run(args, env, device, backend)
    except ValueError as err:  # a bad setting: every rank sees it, each says so in one line
        print(f"error: [rank {env.rank}] {err}", file=sys.stderr)
        return 2
    finally:
        cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = ["DistEnv", "device_for", "backend_for", "init", "barrier", "free_port", "cleanup", "Run",
           "build_run", "parameter_vector", "replica_spread", "all_reduce_demo", "main", "TORCHRUN_VARS"]
