"""`torchrun ... -m course_utils.ddp`: data-parallel pretraining on the news corpus (chapter 06).

Every rank runs this program: it joins the process group torchrun describes, builds the same
run (`course_utils.ddp.build_run`), wraps the GPT in DistributedDataParallel and calls the
book's one loop, `course_utils.train.train`.

    torchrun --standalone --nproc_per_node=2 -m course_utils.ddp --profile ci --steps 20
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from .. import amp, artifacts
from ..checkpoints import CheckpointManager, atomic_save
from ..config import PROFILES, get_profile
from ..ddp import (
    NOT_UNDER_TORCHRUN,
    DistEnv,
    barrier,
    build_run,
    cleanup,
    device_for,
    init,
    parameter_vector,
    replica_spread,
)
from ..train import train
from . import PROFILE_HELP


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m course_utils.ddp",
        description="Pretrain the char-level GPT on the news corpus with DistributedDataParallel. "
                    "Start it with torchrun, e.g. `torchrun --standalone --nproc_per_node=2 "
                    "-m course_utils.ddp --profile ci --steps 20`; every rank runs this program.")
    parser.add_argument("--profile", choices=list(PROFILES), help=PROFILE_HELP)
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
    profile = get_profile(args.profile)
    rank, world = env.rank, env.world_size
    is_main = rank == 0
    batch_size = args.batch_size or profile.batch_size
    # Rank 0 builds the cached token files; the others wait so they never read half a file.
    if is_main:
        artifacts.news_tokens("train"), artifacts.news_tokens("val")
    barrier(device)

    job = build_run(profile, artifacts.news_vocab(), artifacts.news_tokens("train"),
                    artifacts.news_tokens("val"), batch_size=batch_size, steps=args.steps, lr=args.lr,
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
