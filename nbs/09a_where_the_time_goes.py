# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: tags,-all
#     notebook_metadata_filter: kernelspec,jupytext,-jupytext.text_representation.jupytext_version
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 09a · Going further: where the time of one token goes
#
# Chapter 09 quantized the pretrained GPT to int8 and measured it: a quarter of the size, almost
# no loss, and *no* time saved per generated token by our weight-only layers. This notebook
# assumes that chapter (int8 codes with one scale per output row, `quantize.Int8Linear` and its
# `kernel` setting, `quantize_model`, `quantize.dynamic_int8`, its table of section 7) and
# chapter 08's KV cache and compiled decode step ([its Going further](08a_fast_decoding.ipynb)).
# It looks inside one generated token to see where the time goes, operator by operator and
# layer by layer; multiplies int8 inputs by int8 weights with plain tensor operations that
# `torch.compile` can fuse into the decode step, where int8 can beat fp32; and, on a GPU,
# measures fp16/bf16 with `torch.compile`.
#
# **Learning goals**
#
# - multiply int8 by int8 into int32 with `torch._int_mm`, and see why torch.ao's packed layers
#   break a compiled graph while ours do not;
# - profile one generated token with `torch.profiler` and read the operator table;
# - time every layer shape alone, and quantize only the layers where int8 wins;
# - measure PyTorch's int8 kernels against fp32, eager and compiled, with the spread of the repeats.

# %%
from course_utils import config, plots, timing

plots.setup()                # CJK font for Chinese labels
profile = config.get_profile()
print(config.summary(profile))
print(timing.machine_line())   # this notebook times operators, layers and models
config.seed_everything(0)

# %%
import copy
import statistics
import time

import pandas as pd
import torch
from IPython.display import display
from tqdm.auto import tqdm

from course_utils import artifacts, quantize
from course_utils.batches import WindowBatches
from course_utils.decoding import explain_decode_step
from course_utils.evaluation import evaluate
from course_utils.sampling import generate

# Quantized kernels of torch.ao run on the CPU: this notebook keeps the model there.
model, vocab, info = artifacts.pretrained_lm(profile, device="cpu")
val_source = WindowBatches(artifacts.news_tokens("val"), profile.batch_size, profile.block_size, seed=1)
x_val, _ = val_source.get(1)
prompt = torch.tensor([vocab.encode("中国人民")])
int8_model = quantize.quantize_model(model)                       # chapter 09's, the float copy
dynamic_model = quantize.dynamic_int8(model)                      # torch.ao's, warnings silenced
print(f"{model.num_parameters():,} parameters; PyTorch's int8 kernels here: "
      f"_weight_int8pack_mm {quantize.INT8_MM}, _int_mm {quantize.INT_MM}")

# %% [markdown]
# ## 1. int8 times int8, in plain tensor operations
#
# The arithmetic of a dynamic int8 layer is short: round each row of the input to int8 with its
# own scale, multiply those codes by the int8 weights, summing exactly in int32, and multiply
# the sums by both scales, $y = (x_q\,q^\top) \odot s_x s_w^\top + b$. PyTorch has the integer
# product as one operator, `torch._int_mm` (int8 times int8 into int32, run by oneDNN's integer
# kernels on x86; private, hence the underscore). `Int8Linear` with `kernel="int_mm"` computes
# exactly this, with `quantize.quantize_rows` for the inputs:

# %%
def int8_linear_int_mm(x, q, w_scale, bias):     # x (rows, in) float; q (out, in) int8 codes
    x_scale = x.abs().amax(dim=1, keepdim=True) / 127           # one scale per input row
    xq = torch.round(x / x_scale).clamp(-127, 127).to(torch.int8)
    sums = torch._int_mm(xq, q.t())                              # int32: no rounding in the sum
    return sums.float() * x_scale * w_scale.view(1, -1) + bias


layer = model.blocks[0].mlp.fc
x_in = torch.randn(4, layer.in_features)
int_mm_layer = quantize.Int8Linear.from_linear(layer)
int_mm_layer.kernel = "int_mm"
with torch.no_grad():
    ours = int8_linear_int_mm(x_in, int_mm_layer.weight_int8, int_mm_layer.scale, int_mm_layer.bias)
    assert torch.allclose(ours, int_mm_layer(x_in), atol=1e-5)
    exact, weight_only = layer(x_in), quantize.Int8Linear.from_linear(layer)(x_in)
print(f"inline == Int8Linear(kernel='int_mm') ✓; relative error vs fp32 "
      f"{float((ours - exact).norm() / exact.norm()):.2e} (weight-only int8: "
      f"{float((weight_only - exact).norm() / exact.norm()):.2e}: rounding the inputs adds error)")
int_mm_model = quantize.quantize_model(model, kernel="int_mm")
int8pack_model = quantize.quantize_model(model, kernel="int8pack")   # PyTorch's weight-only int8 kernel

# %% [markdown]
# Why build it again when torch.ao has it? torch.ao's layers keep their int8 weights in a
# packed C++ object that `torch.compile` cannot see into, while ours are ordinary tensors.
# `torch._dynamo.explain` traces chapter 08's decode step (`decoding.decode_step`, the one
# `generate(..., compiled=True)` compiles) for each model and counts the graphs it gets and the
# *graph breaks* between them, places where compilation stops and Python takes over.
# `explain_decode_step(m)` fills a cache with three tokens, resets Dynamo (so that no earlier
# compilation answers instead) and runs `torch._dynamo.explain(decode_step)` on one step:

# %%
traced = {name: explain_decode_step(m) for name, m in
          {"fp32": model, "int8 dynamic (torch.ao)": dynamic_model, "int8 x int8 (torch._int_mm)": int_mm_model}.items()}
for name, e in traced.items():
    first = str(e.break_reasons[0].reason).splitlines()[0] if e.break_reasons else ""
    print(f"{name:28s} {e.graph_count} graph(s), {e.graph_break_count} break(s) {first}")
assert traced["int8 x int8 (torch._int_mm)"].graph_break_count == 0
assert traced["int8 dynamic (torch.ao)"].graph_break_count > 0

# %% [markdown]
# ## 2. One token, operator by operator
#
# Before timing whole models, look inside one: `torch.profiler` records every PyTorch operator
# a call runs and how long it spent *in itself* ("self" time, not counting the operators it
# calls). `timing.op_table` profiles a function and lists the top operators per generated
# token, plus the time outside any operator (Python, dispatch, the profiler itself). Here: 32
# greedy tokens with the KV cache, batch 1, on one thread, for fp32, chapter 09's int8 (the
# float copy), the same with PyTorch's int8 kernel (`kernel="int8pack"`), torch.ao's dynamic
# int8, and our int8 x int8 layers. The four most expensive operators of each:

# %%
variants = {"fp32": model, "int8 per channel (ours)": int8_model,
            "int8 per channel, int8 kernel": int8pack_model,
            "int8 dynamic (torch.ao)": dynamic_model, "int8 x int8 (torch._int_mm)": int_mm_model}
profiles = {name: timing.op_table(lambda m=m: generate(m, prompt, 32, temperature=0),
                                  repeats=3, top=100, per=32, threads=1)
            for name, m in tqdm(variants.items(), desc="profiling")}
top4 = pd.concat({name: t.head(4)[["calls", "self ms"]] for name, t in profiles.items()},
                 names=["model", "operator"])
print("per generated token, 1 CPU thread")
top4.round(3)

# %% [markdown]
# The matrix products of one token sit in a handful of operators: `aten::addmm`/`aten::mm` for
# fp32 (and for our layers, after they add `aten::_to_copy`/`aten::copy_`: converting every
# int8 matrix to float at every token), `aten::_weight_int8pack_mm` for the int8 kernel,
# `quantized::linear_dynamic` for torch.ao, `aten::_int_mm` for int8 x int8 (whose rounding of
# the inputs adds `aten::abs`, `aten::amax`, `aten::round` and more). Summing what each version
# spends per token in its matrix products (and in those conversions):

# %%
MATMUL_OPS = ("aten::addmm", "aten::mm", "aten::linear", "aten::_weight_int8pack_mm", "aten::_int_mm",
              "quantized::linear_dynamic", "aten::_to_copy", "aten::copy_")
matmul_ms = pd.Series({name: t.loc[t.index.isin(MATMUL_OPS), "self ms"].sum() for name, t in profiles.items()})
total_ms = pd.Series({name: t["self ms"].sum() for name, t in profiles.items()})
per_token = pd.DataFrame({"products and conversions (ms/token)": matmul_ms,
                          "wall time, profiled (ms/token)": total_ms, "share": matmul_ms / total_ms})
print(f"int8 matrices converted at every token by the float-copy layer: "
      f"{quantize.count_modules(int8_model)['Int8Linear']}; 1 CPU thread")
print(per_token.round(3).to_string())
print(f"least time in the products: {per_token.iloc[:, 0].idxmin()}; "
      f"most: {per_token.iloc[:, 0].idxmax()}")

# %% [markdown]
# Compare the two columns. The products are a minority of fp32's token (the share column), so
# a token's time follows the work around them as much as the products: int8 x int8 spends about
# as long as fp32 in its products, yet its token takes longer, for the operations that round
# its inputs; torch.ao's products take the least time of all (the last line). One profiled run is
# one sample, and the profiler adds its own cost to every operator, so read the table for
# *where* the time goes, and the timings of section 4 for how much.
#
# ## 3. Layer by layer
#
# int8 need not be all or nothing. An int8 kernel pays only where a product reads many weights
# for one token, and the model's matrices differ a lot in size: the head maps `d_model` numbers
# to the whole vocabulary, each block matrix to at most `d_ff`. `timing.linear_timings` times
# every distinct `nn.Linear` shape alone, fp32 against PyTorch's dynamic int8, at one row per
# call (the best of 5 interleaved rounds); `dynamic_int8(model, only=[...])` then quantizes just
# the layers where int8 was faster.

# %%
timings = pd.DataFrame(timing.linear_timings(model, rows=1))
timings["int8 faster"] = timings.int8_us < timings.fp32_us
timings["layers"] = [f"{len(n)}: {n[0]}{', ...' if len(n) > 1 else ''}" for n in timings.names]
wins = [name for names, faster in zip(timings.names, timings["int8 faster"], strict=True) if faster
        for name in names]
print("microseconds per call, 1 CPU thread")
print(timings[["shape", "layers", "fp32_us", "int8_us", "int8 faster"]].round(1).to_string(index=False))
print(f"quantized where int8 won: {wins or 'nowhere'}")
selective = quantize.dynamic_int8(model, only=wins) if wins else None

# %% [markdown]
# ## 4. Size, speed and loss of the int8 kernels
#
# The same measurement as chapter 09's section 7, for the versions this notebook built:
# size on disk, time per generated token (64 tokens, batch 1) and per batch forward (medians of
# interleaved repeats on one thread, with each ratio to fp32 taken within a repeat) and
# validation loss. One exception: the int8-kernel version computes the same product as the
# float copy, and over whole windows it is so slow (the table shows how slow) that its full
# validation loss would take longer than everything else here; its loss is checked on two
# batches instead, after the table.

# %%
NEW_TOKENS = 64


def measure(models, repeats=5, skip_loss=()):
    """Size (MB), median ms per generated token and per batch forward, validation loss (NaN for
    names in `skip_loss`); and the per-repeat speed relative to the first model: median, range."""
    runs = {}
    for name, m in models.items():
        runs[name, "per token"] = lambda m=m: generate(m, prompt, NEW_TOKENS, temperature=0)
        runs[name, "per batch"] = torch.no_grad()(lambda m=m: m(x_val))
    with tqdm(total=repeats * len(runs) + len(models), desc="measuring") as bar:
        seconds = timing.time_interleaved(runs, repeats, threads=1, on_round=bar.update)
        table, speed, base = {}, {}, next(iter(models))
        for name, m in models.items():
            table[name] = {"size_MB": quantize.state_dict_bytes(m) / 1e6,
                           "ms_per_token": 1000 * statistics.median(seconds[name, "per token"]) / NEW_TOKENS,
                           "ms_per_batch": 1000 * statistics.median(seconds[name, "per batch"]),
                           "val_loss": (float("nan") if name in skip_loss
                                        else evaluate(m, val_source, profile.eval_iters, "cpu"))}
            bar.update(1)
            for col in ("per token", "per batch"):
                r = [b / t for b, t in zip(seconds[base, col], seconds[name, col], strict=True)]
                speed[name, col] = {"median": statistics.median(r), "lowest": min(r), "highest": max(r)}
    return pd.DataFrame(table).T, pd.DataFrame(speed).T


candidates = dict(variants)
if selective is not None:
    candidates["int8 dynamic, only where it won"] = selective
table, speed = measure(candidates, skip_loss=["int8 per channel, int8 kernel"])
table["Δ val loss"] = table["val_loss"] - table.loc["fp32", "val_loss"]
print(f"1 CPU thread; one batch: {x_val.shape[0]} windows of {x_val.shape[1]} tokens")
table.round(4)

# %% [markdown]
# The timings as speed relative to fp32 (above 1: faster), with the range over the repeats; a
# verdict needs the whole range on one side of 1.

# %%
def verdict(row):
    return ("faster than" if row["lowest"] > 1 else "slower than" if row["highest"] < 1
            else "within the noise of")


print(speed.drop(index="fp32", level=0).round(2).to_string())
for name in list(table.index)[1:]:
    token, batch = speed.loc[(name, "per token")], speed.loc[(name, "per batch")]
    print(f"{name}: {verdict(token)} fp32 per generated token, {verdict(batch)} fp32 for a batch forward")
kernel_gain = {col: speed.loc[("int8 per channel, int8 kernel", col), "median"]
               / speed.loc[("int8 per channel (ours)", col), "median"] for col in ("per token", "per batch")}
print(f"the int8 kernel against the float copy of the same layers (medians): x{kernel_gain['per token']:.2f} "
      f"per generated token, x{kernel_gain['per batch']:.2f} for a batch forward")

# %% [markdown]
# Two checks complete the table: the int8 kernel computes the same product as the float copy,
# so it must lose the same (on two batches); and the layers quantized "only where it won" can
# gain at most what section 3's layer timings saved, which we turn into an expected speed-up.

# %%
kernel_loss, copy_loss = (evaluate(m, val_source, 2, "cpu") for m in (int8pack_model, int8_model))
assert abs(kernel_loss - copy_loss) < 1e-4
print(f"int8 kernel: validation loss on 2 batches {kernel_loss:.4f}, the float copy's on the same {copy_loss:.4f}")
if selective is not None:   # what the layer timings predict for it, against what it measured
    saved_ms = sum(len(n) * (f - i) for n, f, i, w in timings[["names", "fp32_us", "int8_us", "int8 faster"]]
                   .itertuples(index=False) if w) / 1000
    fp32_ms = table.loc["fp32", "ms_per_token"]
    won = speed.loc[("int8 dynamic, only where it won", "per token")]
    print(f"only where it won: the layer timings save {saved_ms:.3f} ms of fp32's {fp32_ms:.3f} ms per token, "
          f"about x{fp32_ms / (fp32_ms - saved_ms):.2f} expected; measured x{won['median']:.2f} "
          f"(x{won['lowest']:.2f} to x{won['highest']:.2f} over the repeats)")
loss_gap = table["Δ val loss"].abs()
config.claim(f"int8 x int8 loses {loss_gap['int8 x int8 (torch._int_mm)']:.4f} nats: under 0.01, and less than "
             f"torch.ao's dynamic int8 ({loss_gap['int8 dynamic (torch.ao)']:.4f})",
             loss_gap["int8 x int8 (torch._int_mm)"] < min(0.01, loss_gap["int8 dynamic (torch.ao)"]))
if selective is not None:
    config.claim(f"quantizing only where int8 won loses {loss_gap['int8 dynamic, only where it won']:.4f} "
                 f"nats, within 0.01", loss_gap["int8 dynamic, only where it won"] <= 0.01)

# %% [markdown]
# How to read it, with the operator table of section 2 in mind:
#
# - **The int8 kernel** (`torch._weight_int8pack_mm`) skips the float copy and reads a quarter
#   of the bytes, which *could* pay at one token per call, where a product does little
#   arithmetic per weight it reads; but a kernel is only as fast as its implementation for this
#   CPU, and the float products it competes with are among the most tuned code there is. Here
#   it lost to the float copy it replaces: per generated token, and over a batch of windows by
#   more than an order of magnitude (the last line above).
# - **Dynamic int8** runs integer kernels, with the rounding of the activations inside them
#   (`quantized::linear_dynamic`); in section 2's profile they took the least time of all the
#   versions' products. But the products are a minority of a token's time, so per token there
#   is little to gain: the verdict lines show it did not beat fp32 per generated token here.
#   Over a batch of windows, where the products are most of the work, it fares better (compare
#   its two verdicts).
# - **Only where it won.** Quantizing just the layers where int8 beat fp32 alone keeps the
#   others in fp32, so the loss moves little (the claim). Everything else in a token is
#   unchanged, so it can gain about what those layers saved, no more: here the head alone, a
#   gain of a few percent by the layer timings (the expected speed-up above). That is less than
#   the spread of timing whole generations, so the measured speed-up beside it, with its range
#   over the repeats, cannot confirm it. And the model keeps its fp32 embedding beside an int8
#   copy of the tied head, so it is larger than fp32 (the size column).
# - **int8 x int8** multiplies integers in one kernel per layer, but in eager mode every layer
#   also runs about ten small operations to round its input (absolute value, maximum, divide,
#   round, clamp, convert) and to rescale the sums, each a separate call with its own overhead,
#   where fp32 runs one product: eager, it is slower than fp32 per token and over a batch (the
#   verdict lines). It rounds the inputs as torch.ao does, but with one scale per input row and
#   per output channel where torch.ao uses one per tensor, and it loses less (the claim).
#
# ## 5. Compiled
#
# Those small operations are what `torch.compile` removes: it fuses the rounding and rescaling
# into the kernels around each product, so a token costs the integer products plus little else.
# The same two models with chapter 08's compiled decode step (`generate(..., compiled=True)`;
# compiling both takes a while the first time, not timed), in 7 interleaved repeats on one
# thread, on as many new tokens as fill one window after the prompt: no slide, so only the
# one-token step is compiled, not the prefill a slide would need.

# %%
one_window = profile.block_size - prompt.size(1)          # the last new token is never fed back
pair = {"fp32": model, "int8 x int8 (torch._int_mm)": int_mm_model}
t0 = time.perf_counter()
for m in pair.values():
    generate(m, prompt, one_window, temperature=0, compiled=True)       # compiles the step
compile_s = time.perf_counter() - t0
seconds = timing.time_interleaved({name: lambda m=m: generate(m, prompt, one_window, temperature=0, compiled=True)
                                   for name, m in pair.items()}, repeats=7, threads=1)
ratios = [f / q for f, q in zip(seconds["fp32"], seconds["int8 x int8 (torch._int_mm)"], strict=True)]
compiled_row = {"median": statistics.median(ratios), "lowest": min(ratios), "highest": max(ratios)}
eager_row = speed.loc[("int8 x int8 (torch._int_mm)", "per token")]
for name, s in seconds.items():
    print(f"{name:28s} {1000 * statistics.median(s) / one_window:.3f} ms per token, compiled step (median)")
print(f"int8 x int8 against fp32 per generated token, 1 CPU thread: eager x{eager_row['median']:.2f} "
      f"({verdict(eager_row)} fp32), compiled x{compiled_row['median']:.2f} (x{compiled_row['lowest']:.2f} to "
      f"x{compiled_row['highest']:.2f}: {verdict(compiled_row)} fp32); {one_window} new tokens; compiling took "
      f"{compile_s:.0f} s")
config.claim(f"compiling raises int8 x int8's speed relative to fp32, from x{eager_row['median']:.2f} eager "
             f"to x{compiled_row['median']:.2f} compiled (medians)", compiled_row["median"] > eager_row["median"])

# %% [markdown]
# Compiling raises int8 x int8's speed relative to fp32 (the claim), and the claim rests on the
# mechanism: the small operations around each integer product are fused away. Whether that
# lifts it past fp32 depends on the machine's integer product against its float one. On the run
# shown it did: faster than fp32 in every repeat (the line above), but by a few percent, a
# margin that a busier machine or another CPU can erase. So the same model, with the same int8
# products, can be slower or faster than fp32 depending on what surrounds those products:
# quantization pays at one token only when the code around the kernel is lean.
# `bench/generation.py` repeats this comparison with more repeats for the
# [benchmarks appendix](../book/benchmarks.md).
#
# ## 6. Half precision and `torch.compile` on a GPU
#
# On a GPU the usual first step is not int8 but 16-bit floats: cast the weights to fp16 or
# bf16 (halving memory and using tensor cores), then let `torch.compile` fuse the small
# operations. This cell measures both when a CUDA GPU is present and says so on a CPU.

# %%
if torch.cuda.is_available():
    gpu_rows = {}
    xb, yb = val_source.get(0)
    xb, yb = xb.cuda(), yb.cuda()
    for name, dtype in [("fp32", torch.float32), ("fp16", torch.float16), ("bf16", torch.bfloat16)]:
        for compiled in (False, True):
            m = copy.deepcopy(model).cuda().to(dtype).eval()
            run = torch.compile(m) if compiled else m
            try:
                with torch.no_grad():
                    for _ in range(3):                                # warm-up (and compilation)
                        run(xb, yb)
                    torch.cuda.synchronize()
                    t0 = time.perf_counter()
                    for _ in range(20):
                        _, loss = run(xb, yb)
                    torch.cuda.synchronize()
            except Exception as err:   # e.g. torch.compile without a working Triton/compiler
                print(f"{name}{' + compile' if compiled else ''} failed: {type(err).__name__}: "
                      f"{str(err).splitlines()[0][:200]}")
                continue
            gpu_rows[f"{name}{' + compile' if compiled else ''}"] = {
                "ms per batch": (time.perf_counter() - t0) / 20 * 1000, "batch loss": float(loss)}
    display(pd.DataFrame(gpu_rows).T.round(4))
else:
    print("No CUDA GPU here: the fp16/bf16 and torch.compile measurements are skipped. "
          "(bf16 weights on the CPU are in chapter 09's table.)")

# %% [markdown]
# > **Pitfalls.**
# > - *Profile before you optimise*, and read a profile for where the time goes, not for how
# >   much: the profiler adds its own cost to every operator, and one profiled run is one sample.
# > - *A faster kernel is not a faster token.* At batch 1 a product is a small part of a step;
# >   the work around it (rounding inputs, converting, allocating, dispatching) can eat the gain.
# > - *Private operators* (`torch._int_mm`, `torch._weight_int8pack_mm`) can change or vanish
# >   between PyTorch versions: `quantize` checks that they exist and falls back to the float copy.
# > - *Packed modules break compiled graphs*: torch.ao's dynamic layers stop `torch.compile`,
# >   plain tensor operations do not.
# > - *Timings on a shared machine jitter*: interleave, repeat, and give a verdict only when the
# >   whole range of the ratios lies on one side of 1.
#
# ## Summary
#
# - `timing.op_table` (torch.profiler) shows where the time of a call goes, operator by
#   operator: at one token, the matrix products are a minority of the time, and int8 versions
#   add conversions or input rounding around them.
# - `timing.linear_timings` does the same layer by layer, and `dynamic_int8(model, only=[...])`
#   quantizes only the layers where int8 won; it can gain about what those layers saved, no more.
# - `Int8Linear(kernel="int_mm")` multiplies int8 inputs by int8 weights with `torch._int_mm`,
#   in plain tensor operations that compile into chapter 08's decode step without a graph break;
#   compiling removes the eager overhead around the integer products.
# - Speed at one token is decided by the code around the products as much as by the products.
