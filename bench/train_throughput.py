"""Training throughput of the course GPT: fused attention against the explicit softmax(QK^T)V.

Both variants share one set of weights and the same batches; their timed blocks are
interleaved (the order alternates every repeat) so a slow patch of the machine hits both,
warm-up steps are excluded, and the median over repeats is reported with the ratio.
Nothing is asserted about speed: the script prints what it measured.

    python bench/train_throughput.py                 # the active profile ($COURSE_PROFILE)
    python bench/train_throughput.py --profile ci --steps 2 --repeats 1
"""

from __future__ import annotations

import copy
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a source checkout
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/_common.py

from _common import make_parser, setup  # noqa: E402

from course_utils import artifacts, config  # noqa: E402
from course_utils.batches import WindowBatches  # noqa: E402
from course_utils.model import GPT, GPTConfig  # noqa: E402
from course_utils.timing import machine_info, time_interleaved  # noqa: E402
from course_utils.train import TrainConfig, configure_optimizer  # noqa: E402

DEFAULTS = {  # (timed steps per block, repeats, warm-up steps) for each profile
    "ci": (3, 2, 1),
    "cpu": (10, 5, 3),
    "gpu": (50, 5, 10),
}


def train_steps(model, optimizer, source, first_step: int, n: int, device) -> int:
    """`n` plain training steps (forward, loss, backward, clip, AdamW step); returns tokens seen."""
    tokens = 0
    for step in range(first_step, first_step + n):
        x, y = source.get(step)
        x, y = x.to(device), y.to(device)
        _, loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        tokens += y.numel()
    return tokens


def measure(profile, steps: int, repeats: int, warmup: int, device: torch.device,
            batch_size: int | None = None) -> dict:
    """Tokens/s of each variant in every repeat (interleaved), plus a same-math check."""
    tokens = artifacts.news_tokens("train")
    vocab_size = len(artifacts.news_vocab())
    batch_size = batch_size or profile.batch_size
    source = WindowBatches(tokens, batch_size, profile.block_size, seed=0)
    config.seed_everything(0)
    fused = GPT(GPTConfig(vocab_size=vocab_size, **profile.model_kwargs(), fused_attention=True))
    naive = GPT(GPTConfig(vocab_size=vocab_size, **profile.model_kwargs(), fused_attention=False))
    naive.load_state_dict(copy.deepcopy(fused.state_dict()))  # the very same weights
    models = {"fused": fused.to(device).train(), "naive": naive.to(device).train()}

    x, y = source.get(0)
    with torch.no_grad():
        fused.eval(), naive.eval()
        same = float((fused(x.to(device))[0] - naive(x.to(device))[0]).abs().max())
        fused.train(), naive.train()

    cfg = TrainConfig(lr=profile.lr, progress=False)
    optimizers = {name: configure_optimizer(m, cfg) for name, m in models.items()}
    for name, m in models.items():  # warm-up: allocator, kernels, caches (not timed)
        train_steps(m, optimizers[name], source, 0, warmup, device)

    # each variant steps through the same batches: repeat r trains on steps warmup + r * steps ...
    done = {name: 0 for name in models}

    def block(name):
        train_steps(models[name], optimizers[name], source, warmup + done[name] * steps, steps, device)
        done[name] += 1

    seconds = time_interleaved({name: lambda name=name: block(name) for name in models}, repeats,
                               warmup=0, device=device)
    n_tokens = steps * batch_size * profile.block_size
    rates = {name: [n_tokens / s for s in secs] for name, secs in seconds.items()}
    return {"rates": rates, "max_abs_logit_diff": same, "batch_size": batch_size,
            "tokens_per_step": batch_size * profile.block_size,
            "parameters": fused.num_parameters()}


def markdown_table(result: dict) -> str:
    rows = ["| attention | tokens/s (median) | min | max | ms/step (median) |",
            "|---|---:|---:|---:|---:|"]
    labels = {"fused": "fused `scaled_dot_product_attention`", "naive": "explicit softmax(QKᵀ)V"}
    for name, values in result["rates"].items():
        med = statistics.median(values)
        rows.append(f"| {labels[name]} | {med:,.0f} | {min(values):,.0f} | {max(values):,.0f} | "
                    f"{1000 * result['tokens_per_step'] / med:.1f} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = make_parser("python bench/train_throughput.py",
                         "Training tokens/s of the course GPT with fused attention vs the explicit "
                         "softmax(QK^T)V, measured side by side (interleaved repeats, median).", threads=0)
    parser.add_argument("--steps", type=int, help="timed training steps per block")
    parser.add_argument("--warmup", type=int, help="untimed warm-up steps per variant")
    parser.add_argument("--batch-size", type=int, help="override the profile's batch size")
    parser.add_argument("--device", help="cpu, cuda, mps (default: the best one present)")
    args = parser.parse_args(argv)
    profile, repeats = setup(parser, args, {name: d[1] for name, d in DEFAULTS.items()},
                             steps=args.steps, batch_size=args.batch_size)
    steps, _, warmup = DEFAULTS[profile.name]
    steps = args.steps if args.steps is not None else steps
    warmup = args.warmup if args.warmup is not None else warmup
    if warmup < 0:
        parser.error(f"--warmup must be at least 0, got {warmup}")
    device = config.get_device(args.device)

    print("## Training throughput: fused vs explicit attention\n")
    for key, value in machine_info(device).items():
        print(f"- {key}: {value}")
    result = measure(profile, steps, repeats, warmup, device, args.batch_size)
    print(f"- profile: {profile.name} (d_model={profile.d_model}, n_layers={profile.n_layers}, "
          f"n_heads={profile.n_heads}, block_size={profile.block_size}, "
          f"batch={result['batch_size']}, {result['parameters']:,} parameters)")
    print(f"- timing: {repeats} interleaved repeats x {steps} steps per variant, "
          f"{warmup} warm-up step(s) per variant excluded, median reported")
    print(f"- same math: max |logits fused - logits naive| = {result['max_abs_logit_diff']:.2e}\n")
    print(markdown_table(result))
    fused = statistics.median(result["rates"]["fused"])
    naive = statistics.median(result["rates"]["naive"])
    print(f"\nratio fused / naive: {fused / naive:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
