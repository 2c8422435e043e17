"""The pretrained GPT in PyTorch eager and in ONNX Runtime (fp32 and int8): tokens/s of batch-1
greedy decoding and of a batch forward over whole windows, and the size on disk, side by side.

The ONNX graph has no KV cache, so every decoding step runs the whole window in all three
(PyTorch's cached `generate` is printed for reference). Timed blocks are interleaved (the
order alternates every repeat) after one warm-up; the median is reported with the ratios.
Nothing is asserted about speed: the script prints what it measured.

    python bench/export.py                       # the active profile ($COURSE_PROFILE)
    python bench/export.py --profile ci --new-tokens 8 --repeats 1
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a source checkout
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/_common.py

from _common import make_parser, setup  # noqa: E402

from course_utils import artifacts, export, quantize  # noqa: E402
from course_utils.sampling import generate  # noqa: E402
from course_utils.timing import machine_info, time_interleaved  # noqa: E402

DEFAULT_REPEATS = {"ci": 2, "cpu": 5, "gpu": 5}
PROMPT_TOKENS = 8


def bench(profile, new_tokens: int, repeats: int, threads: int) -> dict:
    model, vocab, _ = artifacts.pretrained_lm(profile, device="cpu", progress=False)
    val_tokens = artifacts.news_tokens("val")
    prompt = val_tokens[:PROMPT_TOKENS].astype("int64").tolist()
    block = model.config.block_size
    batch = torch.from_numpy(np.stack([val_tokens[i * 997: i * 997 + block].astype("int64")
                                       for i in range(profile.batch_size)]))
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = export.to_onnx(model, Path(tmp) / "gpt.onnx", quantize=True)
        int8 = fp32.with_suffix(".int8.onnx")
        sessions = {"ONNX Runtime fp32": export.onnx_session(fp32, threads),
                    "ONNX Runtime int8": export.onnx_session(int8, threads)}
        sizes = {"PyTorch eager": quantize.state_dict_bytes(model) / 1e6,
                 "ONNX Runtime fp32": fp32.stat().st_size / 1e6,
                 "ONNX Runtime int8": int8.stat().st_size / 1e6}
        steps = {"PyTorch eager": export.torch_logits(model),
                 **{name: export.onnx_logits(s) for name, s in sessions.items()}}
        tokens = {name: export.greedy_decode(fn, prompt, new_tokens, block) for name, fn in steps.items()}
        decode = time_interleaved(
            {name: (lambda fn=fn: export.greedy_decode(fn, prompt, new_tokens, block))
             for name, fn in steps.items()}
            | {"PyTorch generate (KV cache)": lambda: generate(model, torch.tensor([prompt]), new_tokens,
                                                               temperature=0)}, repeats)

        def torch_forward():
            with torch.no_grad():
                model(batch)

        forward = time_interleaved(
            {"PyTorch eager": torch_forward,
             **{name: (lambda s=s: s.run(None, {"idx": batch.numpy()})) for name, s in sessions.items()}},
            repeats)
        with torch.no_grad():
            reference = model(batch)[0].numpy()
        diffs = {name: float(np.abs(s.run(None, {"idx": batch.numpy()})[0] - reference).max())
                 for name, s in sessions.items()}
    return {"decode": decode, "forward": forward, "sizes": sizes, "diffs": diffs,
            "same_tokens": {name: t == tokens["PyTorch eager"] for name, t in tokens.items()},
            "batch_shape": tuple(batch.shape), "parameters": model.num_parameters(), "block": block}


def rate(seconds: list[float], items: int) -> float:
    return items / statistics.median(seconds)


def main(argv: list[str] | None = None) -> int:
    parser = make_parser("python bench/export.py",
                         "PyTorch eager against ONNX Runtime fp32 and int8: decoding and batch "
                         "forward tokens/s and size on disk, measured side by side on the CPU.")
    parser.add_argument("--new-tokens", type=int, default=64, help="tokens decoded per timed run")
    args = parser.parse_args(argv)
    default_threads = torch.get_num_threads()
    profile, repeats = setup(parser, args, DEFAULT_REPEATS, new_tokens=args.new_tokens)
    threads = torch.get_num_threads()

    print("## Export: PyTorch eager and ONNX Runtime\n")
    for key, value in machine_info().items():
        print(f"- {key}: {value}" + (f" (torch's default here: {default_threads}; ONNX Runtime "
                                     f"gets the same number of intra-op threads)"
                                     if key == "torch threads" else ""))
    r = bench(profile, args.new_tokens, repeats, threads)
    n, (b, t) = args.new_tokens, r["batch_shape"]
    print(f"- profile: {profile.name} ({r['parameters']:,} parameters, block_size={r['block']})")
    print(f"- decoding: greedy, batch 1, {n} new tokens after a {PROMPT_TOKENS}-token prompt, the whole "
          f"window each step (the ONNX graph has no KV cache); forward: a {b}x{t} batch of windows")
    print(f"- timing: {repeats} interleaved repeats, median reported (one warm-up run excluded)\n")

    print("| runtime | decoding tokens/s | ms/token | forward tokens/s | size on disk (MB) | "
          "max logit diff vs PyTorch | same greedy tokens |")
    print("|---|---:|---:|---:|---:|---:|:---:|")
    for name, secs in r["decode"].items():
        dec = rate(secs, n)
        fwd = f"{rate(r['forward'][name], b * t):,.0f}" if name in r["forward"] else ""
        size = f"{r['sizes'][name]:.2f}" if name in r["sizes"] else ""
        diff = f"{r['diffs'][name]:.1e}" if name in r["diffs"] else ("0" if name == "PyTorch eager" else "")
        same = {True: "yes", False: "no"}.get(r["same_tokens"].get(name), "")
        print(f"| {name} | {dec:,.0f} | {1000 / dec:.2f} | {fwd} | {size} | {diff} | {same} |")
    base_dec, base_fwd = rate(r["decode"]["PyTorch eager"], n), rate(r["forward"]["PyTorch eager"], b * t)
    print()
    for name in ("ONNX Runtime fp32", "ONNX Runtime int8"):
        print(f"ratio {name} / PyTorch eager: decoding {rate(r['decode'][name], n) / base_dec:.2f}x, "
              f"forward {rate(r['forward'][name], b * t) / base_fwd:.2f}x, "
              f"size {r['sizes'][name] / r['sizes']['PyTorch eager']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
