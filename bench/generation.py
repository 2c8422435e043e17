"""Generation speed of the pretrained GPT: the KV cache (eager, with the decode step compiled, and
compiled with the weights frozen in) against recomputation, and int8 against
fp32 (PyTorch's dynamic int8, the same only for the layers where it beat fp32 alone, the book's
weight-only int8 with and without PyTorch's int8 kernel, and int8 weights *and* inputs
multiplied by `torch._int_mm`, eager and with the compiled decode step), with what each costs
in validation loss and size on disk.

Both comparisons run in one process on the same prompt; timed blocks are interleaved
(the order alternates every repeat) so a slow patch of the machine hits both sides, one
warm-up run is excluded, and the median over repeats is reported; each speed-up is the median
of the per-repeat ratios, with their range. Timing uses one CPU thread by default
(`--threads`): batch-1 decoding of these small models gains little from more, and one thread
gives steadier numbers on a shared machine.
Nothing is asserted about speed: the script prints what it measured.

    python bench/generation.py                  # the active profile ($COURSE_PROFILE)
    python bench/generation.py --profile ci --new-tokens 16 --repeats 1
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a source checkout
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/_common.py

from _common import make_parser, setup  # noqa: E402

from course_utils import artifacts, quantize  # noqa: E402
from course_utils.batches import WindowBatches  # noqa: E402
from course_utils.config import compiler_available  # noqa: E402
from course_utils.evaluation import evaluate  # noqa: E402
from course_utils.sampling import generate  # noqa: E402
from course_utils.timing import linear_timings, machine_info, paired_ratio, time_interleaved  # noqa: E402

DEFAULT_REPEATS = {"ci": 2, "cpu": 9, "gpu": 9}
INT_MM = "int8 weights and inputs (torch._int_mm)"
FROZEN = "KV cache, compiled step, weights frozen"
PROMPT_TOKENS = 8


def bench(profile, new_tokens: int, repeats: int) -> dict:
    model, vocab, _ = artifacts.pretrained_lm(profile, device="cpu", progress=False)
    val_tokens = artifacts.news_tokens("val")
    prompt = torch.from_numpy(val_tokens[:PROMPT_TOKENS].astype("int64"))[None]
    val = WindowBatches(val_tokens, profile.batch_size, profile.block_size, seed=1)

    def run(m, use_cache: bool, compiled: bool | str = False):
        return lambda: generate(m, prompt, new_tokens, temperature=0, use_cache=use_cache, compiled=compiled)

    # 1. KV cache vs recomputation: the same model, greedy, token-identical; the cached decode
    #    step also compiled (its compilation timed apart: the first call)
    t0 = time.perf_counter()
    compiled = generate(model, prompt, new_tokens, temperature=0, compiled=True)
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    frozen = generate(model, prompt, new_tokens, temperature=0, compiled="frozen")
    compile_frozen_s = time.perf_counter() - t0
    cached = generate(model, prompt, new_tokens, temperature=0, use_cache=True)
    recomputed = generate(model, prompt, new_tokens, temperature=0, use_cache=False)
    kv = time_interleaved({FROZEN: run(model, True, "frozen"), "KV cache, compiled step": run(model, True, True),
                           "KV cache": run(model, True), "recompute": run(model, False)}, repeats)

    # 2. int8 vs fp32, KV cache on: eager for every version, and the compiled step for fp32 and
    #    for the int8 version made of plain tensor operations (torch.ao's packed modules do not
    #    compile; its first compiled call, compilation included, timed apart)
    models = {"fp32": model, "int8 dynamic (torch.ao)": quantize.dynamic_int8(model),
              "int8 weight-only (from scratch)": quantize.quantize_model(model)}
    if quantize.INT8_MM:
        models["int8 weight-only, PyTorch's int8 kernel"] = quantize.quantize_model(model, kernel="int8pack")
    if quantize.INT_MM:
        models[INT_MM] = quantize.quantize_model(model, kernel="int_mm")
    # ... and dynamic int8 only for the layers where int8 beat fp32 alone, at one row per call
    wins = [name for t in linear_timings(model, rows=1) if t["int8_us"] < t["fp32_us"]
            for name in t["names"]]
    if wins:
        models["int8 dynamic, only where it won (torch.ao)"] = quantize.dynamic_int8(model, only=wins)
    compiled_models = {name: models[name] for name in ("fp32", INT_MM) if name in models}
    t0 = time.perf_counter()
    if INT_MM in models:
        generate(models[INT_MM], prompt, new_tokens, temperature=0, compiled=True)
    compile_int8_s = time.perf_counter() - t0
    q = time_interleaved({**{name: run(m, True) for name, m in models.items()},
                          **{f"{name}, compiled step": run(m, True, True) for name, m in compiled_models.items()}},
                         repeats)
    # ... and whole windows at once (evaluation, or a long prompt's prefill): many tokens per call
    batch = val.get(0)[0]

    def forward(m):
        def go():
            with torch.no_grad():
                m(batch)
        return go

    fwd = time_interleaved({name: forward(m) for name, m in models.items()}, repeats)
    quality = {name: {"val_loss": evaluate(m, val, profile.eval_iters, "cpu"),
                      "size_MB": quantize.state_dict_bytes(m) / 1e6} for name, m in models.items()}
    identical = all(torch.equal(out, recomputed) for out in (cached, compiled, frozen))
    return {"kv": kv, "identical": identical, "compile_s": compile_s, "compile_frozen_s": compile_frozen_s,
            "compile_int8_s": compile_int8_s, "compiler": compiler_available(),
            "quant": q, "compiled": list(compiled_models), "forward": fwd,
            "batch_tokens": batch.numel(), "batch_shape": tuple(batch.shape), "quality": quality,
            "parameters": model.num_parameters(), "block_size": model.config.block_size,
            "vocab": len(vocab), "wins": wins}


def tokens_per_s(seconds: list[float], new_tokens: int) -> float:
    return new_tokens / statistics.median(seconds)


def main(argv: list[str] | None = None) -> int:
    parser = make_parser("python bench/generation.py",
                         "Generation tokens/s: KV cache vs recomputation, and dynamic int8 vs fp32 "
                         "(with validation loss and size), measured side by side on the CPU.")
    parser.add_argument("--new-tokens", type=int, default=256, help="tokens generated per run")
    args = parser.parse_args(argv)
    default_threads = torch.get_num_threads()
    profile, repeats = setup(parser, args, DEFAULT_REPEATS, new_tokens=args.new_tokens)

    print("## Generation: KV cache and int8\n")
    for key, value in machine_info().items():
        print(f"- {key}: {value}" + (f" (torch's default here: {default_threads})"
                                     if key == "torch threads" else ""))
    r = bench(profile, args.new_tokens, repeats)
    n = args.new_tokens
    print(f"- profile: {profile.name} ({r['parameters']:,} parameters, block_size={r['block_size']}, "
          f"vocabulary {r['vocab']:,})")
    print(f"- timing: greedy decoding of {n} new tokens after a {PROMPT_TOKENS}-token prompt, batch 1, "
          f"{repeats} interleaved repeats, median reported (one warm-up run excluded)")
    print(f"- KV cache (eager, compiled, compiled with the weights frozen) and recomputation give "
          f"identical tokens: {r['identical']}")
    print(f"- compiling the decode step and the slide's prefill (torch.compile, first call, excluded below): "
          f"{r['compile_s']:.1f} s; with the weights frozen in and each matrix product autotuned "
          f"(`compiled=\"frozen\"`): {r['compile_frozen_s']:.1f} s"
          + (f" (not compiled: {r['compiler']})" if r["compiler"] else "") + "\n")

    print("| generation | tokens/s (median) | ms/token |")
    print("|---|---:|---:|")
    for name, secs in r["kv"].items():
        rate = tokens_per_s(secs, n)
        print(f"| {name} | {rate:,.0f} | {1000 / rate:.2f} |")
    kv = r["kv"]
    print(f"\nratio KV cache / recompute: {paired_ratio(kv['recompute'], kv['KV cache'])}; "
          f"compiled step / recompute: {paired_ratio(kv['recompute'], kv['KV cache, compiled step'])}; "
          f"compiled step with the weights frozen / recompute: {paired_ratio(kv['recompute'], kv[FROZEN])}\n")

    b, t = r["batch_shape"]
    q = r["quant"]
    print(f"| weights | generation tokens/s (median) | ms/token | forward tokens/s, {b}x{t} batch "
          f"(median) | val loss | size on disk (MB) |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in r["quality"]:
        rate = tokens_per_s(q[name], n)
        fwd = tokens_per_s(r["forward"][name], r["batch_tokens"])
        qual = r["quality"][name]
        print(f"| {name} | {rate:,.0f} | {1000 / rate:.2f} | {fwd:,.0f} | {qual['val_loss']:.4f} | "
              f"{qual['size_MB']:.2f} |")
    for name in r["compiled"]:
        rate = tokens_per_s(q[f"{name}, compiled step"], n)
        print(f"| {name}, compiled step | {rate:,.0f} | {1000 / rate:.2f} | | | |")
    print()
    for name in [m for m in r["quality"] if m != "fp32"]:
        fwd = paired_ratio(r["forward"]["fp32"], r["forward"][name])
        d_loss = r["quality"][name]["val_loss"] - r["quality"]["fp32"]["val_loss"]
        print(f"ratio {name} / fp32: generation (batch 1, one token per call) {paired_ratio(q['fp32'], q[name])}, "
              f"forward over whole windows {fwd}; val loss change {d_loss:+.4f} nats/token")
    if INT_MM in r["compiled"]:
        d_loss = r["quality"][INT_MM]["val_loss"] - r["quality"]["fp32"]["val_loss"]
        print(f"ratio {INT_MM} / fp32, both with the compiled decode step: generation "
              f"{paired_ratio(q['fp32, compiled step'], q[f'{INT_MM}, compiled step'])}; "
              f"val loss change {d_loss:+.4f} nats/token (its first compiled call, compilation "
              f"included: {r['compile_int8_s']:.1f} s)")
    print(f"\n(layers where dynamic int8 beat fp32 alone at one row, so quantized in the 'only where it "
          f"won' row: {', '.join(r['wins']) or 'none, so that row is absent'}; "
          "weight-only int8 from scratch converts the int8 codes to float at every call; the "
          "int8-kernel row multiplies with torch._weight_int8pack_mm"
          + ("" if quantize.INT8_MM else ", missing in this PyTorch, so that row is absent")
          + "; the torch._int_mm row rounds each input row to int8 with its own scale and multiplies "
          "integers, like torch.ao's dynamic int8 but in plain tensor operations, which torch.compile "
          "fuses into the decode step" + ("" if quantize.INT_MM else ": missing in this PyTorch, so absent")
          + ")")
    return 0

if __name__ == "__main__":
    raise SystemExit(main())
