"""The training step of the `cpu` profile: the plain fp32 eager step against what might make it
faster on a CPU: fused AdamW, `torch.compile`, the head and loss fused chunk by chunk
(`model.linear_cross_entropy`, `TrainConfig(fused_loss=True)`), and bf16 autocast (only where
the CPU has native bf16 instructions; elsewhere it is listed as skipped, with the reason).

Every variant starts from the same weights and trains on the same batches for the same steps,
so the loss curves must agree within float noise; the steps run in interleaved blocks (each
variant advances one block in turn, the order alternating) so a slow patch of the machine hits
all of them. Compilation is timed apart (the first step of the compiled variant). The median
block is reported with the ratio to the plain step. Nothing is asserted about speed.

    python bench/train_step.py                       # the active profile ($COURSE_PROFILE)
    python bench/train_step.py --profile ci --steps 8 --block 4
"""

from __future__ import annotations

import copy
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a source checkout
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/_common.py

from _common import make_parser, setup  # noqa: E402

from course_utils import amp, artifacts, config  # noqa: E402
from course_utils.batches import WindowBatches  # noqa: E402
from course_utils.model import GPT, GPTConfig  # noqa: E402
from course_utils.timing import cpu_flags, machine_info, op_table, time_interleaved  # noqa: E402

DEFAULT_REPEATS = {"ci": 1, "cpu": 1, "gpu": 1}   # the blocks are the repeats here


class Variant:
    def __init__(self, name, model, fused: bool, compile: bool, precision: str, fused_loss: bool = False):
        self.name, self.model, self.precision = name, model, precision
        self.opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1, fused=fused)
        self.runner = torch.compile(model) if compile else model
        self.loss_kwargs = {"fused_loss": True} if fused_loss else {}
        self.losses, self.block_s, self.first_s = [], [], None

    def step(self, x, y) -> None:
        with amp.autocast("cpu", self.precision):
            _, loss = self.runner(x, y, **self.loss_kwargs)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.losses.append(float(loss.detach()))


def bench(profile, steps: int, block: int) -> tuple[list[Variant], dict]:
    vocab_size = len(artifacts.news_vocab())
    source = WindowBatches(artifacts.news_tokens("train"), profile.batch_size, profile.block_size, seed=0)
    config.seed_everything(0)
    base = GPT(GPTConfig(vocab_size=vocab_size, **dict(profile.model_kwargs(), dropout=0.0)))
    native_bf16 = any(v for k, v in cpu_flags().items() if k in ("avx512_bf16", "amx_bf16"))
    specs = [("fp32 eager (the plain step)", False, False, "fp32", False),
             ("+ fused AdamW", True, False, "fp32", False),
             ("+ fused AdamW + torch.compile", True, True, "fp32", False),
             ("+ fused AdamW + fused head and loss", True, False, "fp32", True),
             ("+ fused AdamW + fused head and loss + torch.compile (adopted: the cpu profile's "
              "language-model step)", True, True, "fp32", True)]
    skipped = {}
    if native_bf16:
        specs.append(("+ fused AdamW + bf16 autocast", True, False, "bf16", False))
    else:
        skipped["bf16 autocast"] = "this CPU has no native bf16 instructions (avx512_bf16 / amx_bf16)"
    variants = [Variant(name, copy.deepcopy(base), *flags) for name, *flags in specs]
    x0, y0 = source.get(0)
    for v in variants:                                   # step 0: warm-up, and compilation
        t0 = time.perf_counter()
        v.step(x0, y0)
        v.first_s = time.perf_counter() - t0
    blocks = [range(start, min(start + block, steps)) for start in range(1, steps, block)]
    done = {v.name: 0 for v in variants}      # each variant runs the same blocks, in order

    def run_block(v):
        for s in blocks[done[v.name]]:
            v.step(*source.get(s))
        done[v.name] += 1

    if blocks:
        seconds = time_interleaved({v.name: lambda v=v: run_block(v) for v in variants}, len(blocks), warmup=0)
        for v in variants:
            v.block_s = [t / len(b) for t, b in zip(seconds[v.name], blocks, strict=True)]
    x, y = source.get(steps)                             # where the plain step's time goes
    plain, seen = variants[0], len(variants[0].losses)
    ops = op_table(lambda: plain.step(x, y), repeats=3, top=10)
    del plain.losses[seen:]                              # the table compares the timed steps only
    return variants, skipped, ops


def main(argv: list[str] | None = None) -> int:
    parser = make_parser("python bench/train_step.py",
                         "The cpu training step: plain fp32 eager against fused AdamW, torch.compile, "
                         "the fused head and loss and (with native bf16) bf16 autocast, same weights "
                         "and batches, side by side.",
                         threads=0)
    parser.add_argument("--steps", type=int, default=200, help="training steps per variant")
    parser.add_argument("--block", type=int, default=20, help="steps per interleaved timing block")
    args = parser.parse_args(argv)
    profile, _ = setup(parser, args, DEFAULT_REPEATS, steps=args.steps, block=args.block)
    print("## The training step: what pays on this CPU\n")
    for key, value in machine_info().items():
        print(f"- {key}: {value}")
    variants, skipped, ops = bench(profile, args.steps, args.block)
    print(f"- profile: {profile.name} (batch {profile.batch_size} x {profile.block_size} tokens, "
          f"dropout 0), {args.steps} steps per variant from the same weights on the same batches, "
          f"timed in interleaved blocks of {args.block} steps (median block reported); step 0 "
          f"(warm-up, and compilation for torch.compile) is timed apart")
    for name, why in skipped.items():
        print(f"- skipped: {name}: {why}")
    base = statistics.median(variants[0].block_s)
    tail = max(1, args.steps // 10)
    print("\n| variant | ms/step (median block) | speed vs fp32 eager | first step (s) | "
          f"mean loss, last {tail} steps | max abs loss difference vs fp32 eager |")
    print("|---|---:|---:|---:|---:|---:|")
    for v in variants:
        med = statistics.median(v.block_s)
        diff = max(abs(a - b) for a, b in zip(v.losses, variants[0].losses, strict=True))
        print(f"| {v.name} | {1000 * med:.1f} | {base / med:.2f}x | {v.first_s:.1f} | "
              f"{statistics.mean(v.losses[-tail:]):.4f} | {diff:.4f} |")
    best = min(variants, key=lambda v: statistics.median(v.block_s))
    print(f"\nfastest: {best.name}, x{base / statistics.median(best.block_s):.2f} over the plain fp32 "
          f"eager step")
    print("\nWhere the plain fp32 step's time goes (torch.profiler, 3 steps after the runs above; "
          "self time per step; the profiler itself adds a little):\n")
    print("| operator | calls per step | self ms per step | share of the step |")
    print("|---|---:|---:|---:|")
    for name, row in ops.iterrows():
        calls = "" if row["calls"] != row["calls"] else f"{row['calls']:.0f}"  # NaN: no count
        print(f"| {name} | {calls} | {row['self ms']:.1f} | {row['share of wall time']:.1%} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
