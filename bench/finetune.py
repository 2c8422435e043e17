"""Fine-tuning cost per step: all layers, LoRA (every block, last block), last block, head.

Every variant is a `finetune.GPTClassifier` over the same GPT weights (the profile's size),
trained with AdamW on the same batches of real reviews; the timed blocks are interleaved and
the median is reported. Nothing is cached here (chapter 10 caches frozen parts): every
variant runs the whole GPT forward, and what differs is how far back the gradient travels
and how many parameters the optimizer updates. Memory is counted, not sampled: a gradient
plus AdamW's two moments, 3 floats per trainable parameter.

    python bench/finetune.py                  # the active profile ($COURSE_PROFILE)
    python bench/finetune.py --profile ci --steps 1 --repeats 1
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

from course_utils import artifacts, config, data, finetune  # noqa: E402
from course_utils.batches import DatasetBatches, LabeledTexts  # noqa: E402
from course_utils.model import GPT, GPTConfig  # noqa: E402
from course_utils.timing import machine_info, time_interleaved  # noqa: E402
from course_utils.train import TrainConfig, configure_optimizer  # noqa: E402

DEFAULTS = {"ci": (2, 2), "cpu": (10, 5), "gpu": (20, 5)}  # (timed steps per block, repeats)
LAYER_KINDS = ("attn.qkv", "attn.proj", "mlp.fc", "mlp.proj")


def variants(n_layers: int, rank: int) -> dict:
    """name -> function that makes part of a fresh classifier trainable."""
    last = [f"blocks.{n_layers - 1}.{kind}" for kind in LAYER_KINDS]
    return {
        "all layers": lambda m: finetune.freeze(m, "all"),
        f"LoRA r={rank}, every block": lambda m: finetune.apply_lora(m, rank, 2 * rank, LAYER_KINDS),
        "last block + head": lambda m: finetune.freeze(m, "last_block"),
        f"LoRA r={rank}, last block": lambda m: finetune.apply_lora(m, rank, 2 * rank, last),
        "head only": lambda m: finetune.freeze(m, "head"),
    }


def bench(profile, steps: int, repeats: int, rank: int, device) -> dict:
    vocab = artifacts.news_vocab()
    reviews = data.load_sentiment().head(max(512, steps * profile.batch_size))
    texts = [data.to_fullwidth(t, vocab) for t in reviews.review]
    dataset = LabeledTexts(texts, reviews.label.tolist(), vocab, profile.block_size)
    source = DatasetBatches(dataset, profile.batch_size, seed=0)
    batches = [tuple(t.to(device) for t in source.get(i)) for i in range(steps)]
    config.seed_everything(0)
    base = GPT(GPTConfig(vocab_size=len(vocab), **profile.model_kwargs()))
    cfg = TrainConfig(lr=profile.finetune_lr, progress=False)

    runs, rows = {}, {}
    for name, prepare in variants(profile.n_layers, rank).items():
        model = finetune.GPTClassifier(copy.deepcopy(base), 2)
        prepare(model)
        model.to(device).train()  # after prepare: LoRA's A and B are new parameters
        trainable = finetune.count_trainable(model)
        optimizer = configure_optimizer(model, cfg)

        def run(model=model, optimizer=optimizer):
            for x, y in batches:
                _, loss = model(x, y)
                loss.backward()
                torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)

        runs[name] = run
        rows[name] = {"trainable": trainable, "share": trainable / sum(p.numel() for p in model.parameters()),
                      "state_mb": 3 * 4 * trainable / 2**20}
    seconds = time_interleaved(runs, repeats, device=device)
    for name, secs in seconds.items():
        rows[name]["ms_per_step"] = [1000 * s / steps for s in secs]
    return {"rows": rows, "parameters": base.num_parameters(), "batch": profile.batch_size}


def main(argv: list[str] | None = None) -> int:
    parser = make_parser("python bench/finetune.py",
                         "Fine-tuning ms/step and optimizer memory: all layers vs LoRA vs last block "
                         "vs head only, measured side by side (interleaved repeats, median).")
    parser.add_argument("--steps", type=int, help="timed training steps per block")
    parser.add_argument("--rank", type=int, default=8, help="LoRA rank (alpha = 2 x rank)")
    parser.add_argument("--device", help="cpu, cuda, mps (default: the best one present)")
    args = parser.parse_args(argv)
    profile, repeats = setup(parser, args, {name: d[1] for name, d in DEFAULTS.items()},
                             steps=args.steps, rank=args.rank)
    steps = args.steps if args.steps is not None else DEFAULTS[profile.name][0]
    device = config.get_device(args.device)

    print("## Fine-tuning: what each strategy costs per step\n")
    for key, value in machine_info(device).items():
        print(f"- {key}: {value}")
    r = bench(profile, steps, repeats, args.rank, device)
    print(f"- profile: {profile.name} ({r['parameters']:,} GPT parameters, block_size="
          f"{profile.block_size}, batch {r['batch']} reviews)")
    print(f"- timing: {repeats} interleaved repeats x {steps} AdamW steps per variant, one warm-up "
          "block excluded, median reported; no caching of frozen parts")
    print("- memory: gradient + AdamW moments = 3 float32 per trainable parameter\n")
    print("| variant | trainable | share | grad + AdamW state | ms/step (median) | min | max |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, row in r["rows"].items():
        ms = row["ms_per_step"]
        print(f"| {name} | {row['trainable']:,} | {row['share']:.2%} | {row['state_mb']:.2f} MB | "
              f"{statistics.median(ms):.1f} | {min(ms):.1f} | {max(ms):.1f} |")
    median = {name: statistics.median(row["ms_per_step"]) for name, row in r["rows"].items()}
    full = median["all layers"]
    lora = f"LoRA r={args.rank}, every block"
    print(f"\nratio all layers / {lora} (time per step): {full / median[lora]:.2f}x")
    print(f"ratio all layers / head only (time per step): {full / median['head only']:.2f}x")
    print(f"ratio all layers / {lora} (optimizer memory): "
          f"{r['rows']['all layers']['state_mb'] / r['rows'][lora]['state_mb']:.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
