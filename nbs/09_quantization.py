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
# # 09 · Quantization: the same model in 8-bit integers
#
# Every weight of our GPT is a 32-bit float. Most of those bits are noise as far as the
# model's predictions are concerned: storing each weight as an 8-bit integer plus one shared
# scale factor shrinks the file by about four times, and on CPUs with integer matrix
# instructions it can make inference faster. This is *quantization* (量化), and it is how
# large models are made to fit on laptops and phones. We build int8 quantization from
# scratch (symmetric and asymmetric, per tensor and per channel), swap it into the
# pretrained model, compare it with PyTorch's built-in dynamic quantization, and measure the
# only three numbers that matter: size on disk, time per generated token, and validation loss.
#
# **Learning goals**
#
# - know the number formats (fp32, fp16, bf16, int8) and what each costs in range and precision;
# - quantize a tensor to int8 and back, symmetrically and with a zero point, and bound the error;
# - see why one scale *per output channel* beats one per tensor, and which axis that is;
# - swap a model's Linear layers for an int8 version without breaking the tied embedding;
# - profile one generated token with `torch.profiler` to see which operators take the time;
# - measure size, speed and loss of fp32, our int8 and PyTorch's dynamic int8 in one run;
# - multiply int8 inputs by int8 weights with plain tensor operations that `torch.compile`
#   fuses into the decode step, and see int8 beat fp32 per generated token there.

# %%
from course_utils import config, plots, timing

plots.setup()                # CJK font for Chinese labels
profile = config.get_profile()
print(config.summary(profile))
config.seed_everything(0)

# %%
import copy
import warnings

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from IPython.display import display

from course_utils import artifacts, quantize
from course_utils.batches import WindowBatches
from course_utils.evaluation import evaluate

# Quantized kernels of torch.ao run on the CPU: this chapter keeps the model there.
model, vocab, info = artifacts.pretrained_lm(profile, device="cpu")
val_source = WindowBatches(artifacts.news_tokens("val"), profile.batch_size, profile.block_size, seed=1)
print(f"{model.num_parameters():,} parameters, validation loss {info['val_loss']:.3f} nats/char")
print(f"fp32 state_dict on disk: {quantize.state_dict_bytes(model) / 1e6:.2f} MB")

# %% [markdown]
# ## 1. Number formats
#
# A float stores a sign, an exponent (the range) and a mantissa (the precision). fp16 keeps
# 10 mantissa bits but only 5 exponent bits, so it overflows above 65,504; bf16 keeps fp32's
# 8 exponent bits (the same range) with only 7 mantissa bits. int8 has no exponent at all: 256
# evenly spaced values, so we must choose the spacing, the *scale*, ourselves.

# %%
rows = []
for name, dtype in [("fp32", torch.float32), ("fp16", torch.float16), ("bf16", torch.bfloat16)]:
    fi = torch.finfo(dtype)
    rows.append({"format": name, "bits": fi.bits, "largest": fi.max, "smallest normal": fi.tiny,
                 "eps (precision)": fi.eps})
ii = torch.iinfo(torch.int8)
rows.append({"format": "int8", "bits": ii.bits, "largest": ii.max, "smallest normal": 1,
             "eps (precision)": 1})
pd.DataFrame(rows).set_index("format")

# %% [markdown]
# Casting the model's weights to fp16 or bf16 and back shows the precision each keeps:

# %%
weights = torch.cat([p.detach().flatten() for p in model.parameters()])
for name, dtype in [("fp16", torch.float16), ("bf16", torch.bfloat16)]:
    rel = ((weights.to(dtype).float() - weights).abs() / weights.abs().clamp_min(1e-12)).median()
    print(f"{name}: median relative error of a weight {float(rel):.1e}")

# %% [markdown]
# ## 2. Symmetric int8, per tensor
#
# Pick the scale so that the largest weight maps to 127:
#
# $$s = \frac{\max_i |w_i|}{127}, \qquad q_i = \mathrm{round}(w_i / s) \in \{-127, \dots, 127\},
# \qquad \hat w_i = s\, q_i .$$
#
# Rounding moves each weight by at most half a step, so $|w_i - \hat w_i| \le s/2$. We try it
# on the first MLP layer's weight matrix.

# %%
W = model.blocks[0].mlp.fc.weight.detach()
scale = W.abs().max() / 127
q = torch.round(W / scale).clamp(-127, 127).to(torch.int8)
W_hat = q.float() * scale
err = W - W_hat
print(f"W {tuple(W.shape)} {W.dtype} -> q {q.dtype}; scale {float(scale):.2e}")
print(f"largest error {float(err.abs().max()):.2e} <= scale / 2 = {float(scale / 2):.2e}")
assert err.abs().max() <= scale / 2 * (1 + 1e-5)

q_ref, scale_ref = quantize.quantize_symmetric(W)
assert torch.equal(q, q_ref) and torch.allclose(scale, scale_ref.squeeze())
print("same codes and scale as course_utils.quantize.quantize_symmetric ✓")

# %%
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3))
ax1.hist(W.flatten().numpy(), bins=200)
ax1.set_yscale("log")
ax1.set_xlabel("weight value")
ax1.set_ylabel("count (log)")
ax1.set_title(f"blocks[0].mlp.fc weights: the int8 grid step is {float(scale):.1e}")
ax2.hist(err.flatten().numpy() / float(scale), bins=60)
ax2.set_xlabel("error / scale")
ax2.set_ylabel("count")
ax2.set_title("Round-trip error: uniform within ±½ step")
plt.tight_layout()
plt.show()
half = int(q.abs().float().median())
print(f"codes used: {int(q.unique().numel())} of 255; half of the weights have |q| <= {half}, "
      f"i.e. they share {2 * half + 1} levels")
if profile.name != "ci":  # the next paragraph: the typical weight gets only a few dozen levels
    assert 12 <= 2 * half + 1 <= 99

# %% [markdown]
# Most weights sit near zero while the scale is set by the few largest: a handful of
# *outliers* decide the grid step for everyone, and the typical weight is represented by
# only a few dozen levels. Two remedies follow: a zero point for lopsided ranges, and one scale
# per channel.
#
# ## 3. Asymmetric int8: a zero point
#
# ![Two number lines for the same small tensor: symmetric int8 with scale max|w|/127 and zero at code 0, and asymmetric uint8 with a zero point using all 256 codes; tables of codes, dequantized values and rounding errors](../book/images/int8.png)
#
# *Symmetric and asymmetric 8-bit quantization of the same small tensor, computed with `quantize_symmetric` and `quantize_asymmetric`: both represent 0 exactly, and the zero point spends all 256 codes on a lopsided range.*
#
# When values are one-sided (activations after a GELU are almost all $\ge -0.17$), half of a
# symmetric grid is wasted. Asymmetric (affine) quantization maps $[\min, \max]$ onto the
# codes $0..255$:
#
# $$s = \frac{\max - \min}{255}, \quad z = \mathrm{round}(-\min / s), \quad
# q = \mathrm{clamp}(\mathrm{round}(w/s) + z,\ 0,\ 255), \quad \hat w = s\,(q - z).$$
#
# (The range is widened to include 0 so that 0 is represented exactly.) We compare both
# schemes on a weight matrix and on real GELU activations of the first block.

# %%
def asymmetric_roundtrip(x):
    lo, hi = x.min().clamp(max=0), x.max().clamp(min=0)     # the range, widened to include 0
    s = (hi - lo) / 255
    z = torch.round(-lo / s)
    q = (torch.round(x / s) + z).clamp(0, 255).to(torch.uint8)
    return (q.float() - z) * s


x, _ = val_source.get(0)
acts = {}
hook = model.blocks[0].mlp.fc.register_forward_hook(lambda m, i, out: acts.update(fc=out))
with torch.no_grad():
    model(x)
hook.remove()
gelu_out = F.gelu(acts["fc"]).flatten()
assert torch.allclose(asymmetric_roundtrip(gelu_out), quantize.roundtrip(gelu_out, "asymmetric"),
                      atol=1e-6)

rows = {}
for name, t in [("MLP weight (symmetric around 0)", W.flatten()),
                ("GELU activations (one-sided)", gelu_out)]:
    rows[name] = {"min": float(t.min()), "max": float(t.max()),
                  "RMS error, symmetric": float((t - quantize.roundtrip(t, "symmetric")).pow(2).mean().sqrt()),
                  "RMS error, asymmetric": float((t - quantize.roundtrip(t, "asymmetric")).pow(2).mean().sqrt())}
errors = pd.DataFrame(rows).T
gain = errors["RMS error, asymmetric"] / errors["RMS error, symmetric"]
if profile.name != "ci":  # the next paragraph: about half on activations, little change on weights
    assert 0.35 < gain["GELU activations (one-sided)"] < 0.65
    assert 0.8 < gain["MLP weight (symmetric around 0)"] < 1.2
errors

# %% [markdown]
# On the one-sided activations the zero point roughly halves the error (all 256 codes cover
# the range actually used); on the weights, symmetric around 0 already, it changes little.
# That is why weights are usually quantized symmetrically and activations asymmetrically.
#
# ## 4. Per channel: one scale per output row
#
# A Linear layer computes $y_j = \sum_i W_{ji} x_i + b_j$. If each *output* row $j$ has its
# own scale $s_j$, then $y_j = s_j \sum_i q_{ji} x_i + b_j$: the scale comes out of the sum,
# so the integer matrix product stays one matrix product. Rows with small weights then get a
# fine grid instead of the coarse one the largest row imposes. The embedding table (tied to
# the output head) is the clearest case: the rows of frequent and rare characters differ a lot.

# %%
E = model.tok_emb.weight.detach()       # (vocab, d_model): also the lm_head's weight
row_max = E.abs().amax(dim=1)
err_tensor = (E - quantize.roundtrip(E, axis=None)).pow(2).mean(dim=1).sqrt()
err_channel = (E - quantize.roundtrip(E, axis=0)).pow(2).mean(dim=1).sqrt()
print(f"row ranges: max|w| from {float(row_max.min()):.3f} to {float(row_max.max()):.3f} "
      f"({float(row_max.max() / row_max.min()):.0f}x)")
print(f"RMS error per tensor {float(err_tensor.pow(2).mean().sqrt()):.2e}, "
      f"per channel {float(err_channel.pow(2).mean().sqrt()):.2e}; per channel is better on "
      f"{float((err_channel < err_tensor).float().mean()):.0%} of the rows")
assert err_channel.pow(2).mean() < err_tensor.pow(2).mean()

# %%
order = row_max.argsort()
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.2))
ax1.plot(row_max[order].numpy())
ax1.set_xlabel("embedding row (sorted by range)")
ax1.set_ylabel("max |w| of the row")
ax1.set_title("Rows have very different ranges")
ax2.plot(err_tensor[order].numpy(), label="one scale per tensor")
ax2.plot(err_channel[order].numpy(), label="one scale per row (channel)")
ax2.set_yscale("log")
ax2.set_xlabel("embedding row (sorted by range)")
ax2.set_ylabel("RMS round-trip error")
ax2.set_title("Per-channel error follows each row's own range")
ax2.legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# Per channel means per **output** channel: for `nn.Linear` the weight is `(out, in)`, so
# the scale is taken over dim 1 (`axis=0` keeps one per row). Scales per *input* column would
# not come out of the sum over $i$; they would have to be folded into the activations
# instead. Here is the error along both axes for every Linear layer of the model:

# %%
rows = []
for name, m in model.named_modules():
    if isinstance(m, torch.nn.Linear) and name != "lm_head":
        w = m.weight.detach()
        rmse = {axis: float((w - quantize.roundtrip(w, axis=axis)).pow(2).mean().sqrt())
                for axis in (None, 0, 1)}
        rows.append({"layer": name, "shape": tuple(w.shape), "per tensor": rmse[None],
                     "per output row (axis 0)": rmse[0], "per input column (axis 1)": rmse[1]})
with pd.option_context("display.float_format", "{:.2e}".format):
    display(pd.DataFrame(rows).set_index("layer"))
better = sum(r["per output row (axis 0)"] < r["per tensor"] for r in rows)
columns = sum(r["per input column (axis 1)"] < r["per output row (axis 0)"] for r in rows)
print(f"one scale per output row beats one per tensor in {better} of {len(rows)} layers; "
      f"one per input column beats one per output row in {columns} of {len(rows)}")
if profile.name != "ci":  # the next paragraph and the summary
    assert better == len(rows) and 0 < columns < len(rows)

# %% [markdown]
# Scales per input column are about as accurate (the columns' ranges differ too: they win in
# some layers and lose in others, as the count above says), but they cannot be pulled out
# of the sum: using them means rescaling every activation first. Per output row is the
# choice that keeps the integer matrix product intact.
#
# ## 5. A weight-only int8 Linear, and swapping it in
#
# A weight-only int8 layer stores `q` (int8) and the per-row scales, and computes in float:
# $y = (x\,q^\top) \odot s + b$. It saves memory and disk. Here is the layer, small enough to
# read. Spelled out like this it cannot be faster than fp32: `self.q.to(x.dtype)` writes a float
# copy of the whole matrix at every call, and then the same float product runs.
# `course_utils.quantize.Int8Linear` does the same by default; with `kernel="int8pack"` it calls
# `torch._weight_int8pack_mm` instead, a PyTorch CPU kernel that multiplies by the int8 codes
# directly, with no float copy (a private operator, hence the underscore). Sections 7 and 8
# measure whether that is faster.

# %%
class Int8LinearInline(torch.nn.Module):
    def __init__(self, linear):
        super().__init__()
        q, scale = quantize.quantize_symmetric(linear.weight, axis=0)     # one scale per row
        self.register_buffer("q", q)
        self.register_buffer("scale", scale.flatten())
        self.bias = linear.bias

    def forward(self, x):
        y = F.linear(x, self.q.to(x.dtype)) * self.scale     # the scale comes out of the sum
        return y if self.bias is None else y + self.bias


layer = model.blocks[0].mlp.fc
x_in = torch.randn(4, layer.in_features)
with torch.no_grad():
    ours, theirs, exact = Int8LinearInline(layer)(x_in), quantize.Int8Linear.from_linear(layer)(x_in), layer(x_in)
kernel_layer = quantize.Int8Linear.from_linear(layer)
kernel_layer.kernel = "int8pack" if quantize.INT8_MM else "float"   # where PyTorch has it
with torch.no_grad():
    assert torch.allclose(ours, kernel_layer(x_in), atol=1e-5)   # the same product, computed directly
assert torch.allclose(ours, theirs, atol=1e-5)
print(f"inline == course_utils.quantize.Int8Linear ✓ (and with the int8 kernel: "
      f"{'✓' if quantize.INT8_MM else 'not in this PyTorch'}); relative error vs fp32 "
      f"{float((ours - exact).norm() / exact.norm()):.2e}")

# %% [markdown]
# `quantize.quantize_model` copies the model and swaps every `nn.Linear`. One trap: the GPT's
# output head **shares its weight with the token embedding** (weight tying, chapter 04). A
# naive swap gives the head its own int8 copy and leaves the embedding in fp32, so the
# matrix is stored twice and the two can drift apart. The tie-aware swap quantizes the
# embedding once (per row, which is the head's per-output-channel axis) and lets the head
# read the same int8 table.

# %%
int8_model = quantize.quantize_model(model, per_channel=True)
naive_model = quantize.quantize_model(model, per_channel=True, tie_aware=False)
print("before:", quantize.count_modules(model))
print("after: ", quantize.count_modules(int8_model))
print("head and embedding share the int8 table:",
      int8_model.lm_head.weight_int8 is int8_model.tok_emb.weight_int8)
for name, m in [("fp32", model), ("int8, naive swap", naive_model), ("int8, tie-aware", int8_model)]:
    print(f"{name:17s} {quantize.state_dict_bytes(m) / 1e6:6.2f} MB on disk")

# %%
x_val, _ = val_source.get(1)
agreement = pd.DataFrame({
    "int8 per tensor": quantize.logits_agreement(model, quantize.quantize_model(model, per_channel=False), x_val),
    "int8 per channel": quantize.logits_agreement(model, int8_model, x_val),
}).T
agreement

# %% [markdown]
# `top1_agree` is the share of positions where the quantized model predicts the same next
# character as the fp32 one; `kl` is the mean KL divergence of its next-token distribution
# from fp32's, in nats.
#
# ## 6. PyTorch's dynamic int8
#
# *Dynamic* quantization stores int8 weights ahead of time and quantizes the *activations*
# on the fly, batch by batch, with a scale computed from their current range; the matrix
# products then run on int8 kernels (fbgemm/oneDNN on x86, qnnpack on ARM). It is one call,
# `torch.ao.quantization.quantize_dynamic`. In torch 2.13 the call still works but warns that
# `torch.ao.quantization` is deprecated in favour of the separate
# [torchao](https://github.com/pytorch/ao) package (`torchao.quantization.quantize_`), which
# is not installed here. We show the warning once, then use it.

# %%
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    dynamic_model = torch.ao.quantization.quantize_dynamic(
        copy.deepcopy(model), {torch.nn.Linear}, dtype=torch.qint8)
for category, first_line in {(w.category.__name__, str(w.message).strip().splitlines()[0])
                             for w in caught}:
    print(f"{category}: {first_line}")
print(dynamic_model.blocks[0].mlp.fc)
print("the head is quantized separately from the embedding:", type(dynamic_model.lm_head).__name__,
      "vs", type(dynamic_model.tok_emb).__name__)
with torch.no_grad():
    assert torch.equal(dynamic_model(x_val)[0], quantize.dynamic_int8(model)(x_val)[0])

# %% [markdown]
# **The same idea in plain tensor operations.** The arithmetic of a dynamic int8 layer is
# short: round each row of the input to int8 with its own scale, multiply those codes by the
# int8 weights, summing exactly in int32, and multiply the sums by both scales,
# $y = (x_q\,q^\top) \odot s_x s_w^\top + b$. PyTorch has the integer product as one operator,
# `torch._int_mm` (int8 times int8 into int32, run by oneDNN's integer kernels on x86; private,
# hence the underscore). `Int8Linear` with `kernel="int_mm"` computes exactly this, with
# `quantize.quantize_rows` for the inputs:

# %%
def int8_linear_int_mm(x, q, w_scale, bias):     # x (rows, in) float; q (out, in) int8 codes
    x_scale = x.abs().amax(dim=1, keepdim=True) / 127           # one scale per input row
    xq = torch.round(x / x_scale).clamp(-127, 127).to(torch.int8)
    sums = torch._int_mm(xq, q.t())                              # int32: no rounding in the sum
    return sums.float() * x_scale * w_scale.view(1, -1) + bias


int_mm_layer = quantize.Int8Linear.from_linear(layer)
int_mm_layer.kernel = "int_mm"
with torch.no_grad():
    ours = int8_linear_int_mm(x_in, int_mm_layer.weight_int8, int_mm_layer.scale, int_mm_layer.bias)
    assert torch.allclose(ours, int_mm_layer(x_in), atol=1e-5)
    weight_only = quantize.Int8Linear.from_linear(layer)(x_in)
print(f"inline == Int8Linear(kernel='int_mm') ✓; relative error vs fp32 "
      f"{float((ours - exact).norm() / exact.norm()):.2e} (weight-only int8: "
      f"{float((weight_only - exact).norm() / exact.norm()):.2e}: rounding the inputs adds error)")
int_mm_model = quantize.quantize_model(model, kernel="int_mm")

# %% [markdown]
# Why build it again when torch.ao has it? torch.ao's layers keep their int8 weights in a
# packed C++ object that `torch.compile` cannot see into, while ours are ordinary tensors.
# `torch._dynamo.explain` traces chapter 08's decode step (`decoding.decode_step`, the one
# `generate(..., compiled=True)` compiles) for each model and counts the graphs it gets and the
# *graph breaks* between them, places where compilation stops and Python takes over.
# `decoding.explain_decode_step(m)` fills a cache with three tokens, resets Dynamo (so that no
# earlier compilation answers instead) and runs `torch._dynamo.explain(decode_step)` on one step:

# %%
from course_utils.decoding import explain_decode_step

traced = {name: explain_decode_step(m) for name, m in
          {"fp32": model, "int8 dynamic (torch.ao)": dynamic_model, "int8 x int8 (torch._int_mm)": int_mm_model}.items()}
for name, e in traced.items():
    first = str(e.break_reasons[0].reason).splitlines()[0] if e.break_reasons else ""
    print(f"{name:28s} {e.graph_count} graph(s), {e.graph_break_count} break(s) {first}")
assert traced["int8 x int8 (torch._int_mm)"].graph_break_count == 0
assert traced["int8 dynamic (torch.ao)"].graph_break_count > 0

# %% [markdown]
# ## 7. Where the time goes at one token
#
# Before timing whole models, look inside one: `torch.profiler` records every PyTorch operator
# a call runs and how long it spent *in itself* ("self" time, not counting the operators it
# calls). `course_utils.timing.op_table` profiles a function and lists the top operators per
# generated token, plus the time outside any operator (Python, dispatch, the profiler itself).
# Here: 32 greedy tokens with the KV cache, batch 1, on one thread, for fp32, our int8 (the
# float copy), our int8 with PyTorch's int8 kernel (`kernel="int8pack"`), the dynamic int8 of
# section 6, and our int8 x int8 layers.

# %%
from course_utils.sampling import generate

prompt = torch.tensor([vocab.encode("中国人民")])
variants = {"fp32": model, "int8 per channel (ours)": int8_model,
            "int8 per channel, int8 kernel": quantize.quantize_model(model, kernel="int8pack"),
            "int8 dynamic (torch.ao)": dynamic_model, "int8 x int8 (torch._int_mm)": int_mm_model}
profiles = {name: timing.op_table(lambda m=m: generate(m, prompt, 32, temperature=0),
                                   repeats=3, top=100, per=32, threads=1) for name, m in variants.items()}
print(timing.machine_line())
display(pd.concat({name: t.head(4) for name, t in profiles.items()}, names=["model", "operator"]).round(3))

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
      f"{quantize.count_modules(int8_model)['Int8Linear']}")
print(timing.machine_line())
print(per_token.round(3).to_string())
print(f"least time in the products: {per_token.iloc[:, 0].idxmin()}; "
      f"most: {per_token.iloc[:, 0].idxmax()}")

# %% [markdown]
# Compare the two columns: a version can spend less time in its matrix products and still take
# longer per token, when the work around the products grows (quantizing activations,
# converting, allocating: the operators listed above). With that picture, the whole-model
# timings below read easily. They are noisy (the machine
# line says how busy it was), so the verdicts that follow are printed from the measurements.
#
# One more idea follows from the table: int8 need not be all or nothing. The int8 kernel pays
# only where a product reads many weights for one token, and the model's matrices differ a lot
# in size: the head maps 128 numbers to a whole vocabulary, each block matrix to at most 512.
# `quantize.linear_timings` times every distinct `nn.Linear` shape alone, fp32 against
# PyTorch's dynamic int8, at one row per call; `dynamic_int8(model, only=[...])` then
# quantizes just the layers where int8 was faster.

# %%
timings = pd.DataFrame(timing.linear_timings(model, rows=1))
timings["int8 faster"] = timings.int8_us < timings.fp32_us
timings["layers"] = [f"{len(n)}: {n[0]}{', ...' if len(n) > 1 else ''}" for n in timings.names]
wins = [name for names, faster in zip(timings.names, timings["int8 faster"], strict=True) if faster
        for name in names]
print(timing.machine_line())
print(timings[["shape", "layers", "fp32_us", "int8_us", "int8 faster"]].round(1).to_string(index=False))
print(f"quantized where int8 won: {wins or 'nowhere'}")
selective = quantize.dynamic_int8(model, only=wins) if wins else None

# %% [markdown]
# ## 8. Size, speed and loss, measured in one run
#
# For each version of the model: the size of its `state_dict` saved to a file; the time per
# generated token (greedy with the KV cache, batch 1: one token per call); the time of one
# forward pass over a whole batch of windows (many tokens per call, as in evaluation or the
# prefill of a long prompt); and the validation loss with `course_utils.train.evaluate` on the
# same validation windows as chapter 05. Timings run on one CPU thread, as in chapter 08, in
# three interleaved rounds (every model once per round), keeping each model's best round, so
# that a busy moment of the machine does not favour one model over another. One exception: the
# int8-kernel version computes the same product as our float copy (section 5 checked it), and
# over whole windows it is so slow (the table shows how slow) that its full validation loss
# would take longer than everything else here; its loss is checked on two batches instead,
# after the table.

# %%
candidates = {
    "fp32": model,
    "bf16 weights": copy.deepcopy(model).to(torch.bfloat16),
    "int8 per tensor (ours)": quantize.quantize_model(model, per_channel=False),
    "int8 per channel (ours)": int8_model,
    "int8 per channel, int8 kernel": variants["int8 per channel, int8 kernel"],
    "int8 dynamic (torch.ao)": quantize.dynamic_int8(model),
    "int8 x int8 (torch._int_mm)": int_mm_model,
}
if selective is not None:
    candidates["int8 dynamic, only where it won"] = selective
table = timing.compare(candidates, val_source=val_source, eval_iters=profile.eval_iters,
                         prompt=prompt, new_tokens=64, batch=x_val, rounds=3, threads=1,
                         progress=True, skip_loss=["int8 per channel, int8 kernel"])
table["Δ val loss"] = table["val_loss"] - table.loc["fp32", "val_loss"]
table["size vs fp32"] = table["size_MB"] / table.loc["fp32", "size_MB"]
print(timing.machine_line())
print(f"ms_per_batch: one forward pass over {x_val.shape[0]} windows of {x_val.shape[1]} tokens; "
      f"CPU vector instructions PyTorch uses here: {torch.backends.cpu.get_cpu_capability()}")
table.round(4)

# %%
fig, axes = plt.subplots(1, 4, figsize=(14, 3.6))
names = list(table.index)
for ax, col, label in zip(axes, ["size_MB", "ms_per_token", "ms_per_batch", "val_loss"],
                          ["size on disk (MB)", "ms per generated token", "ms per batch forward",
                           "validation loss (nats/char)"], strict=True):
    ax.barh(names, table[col], color=[f"C{i}" for i in range(len(names))])
    ax.set_xlabel(label)
    ax.invert_yaxis()
axes[3].set_xlim(table["val_loss"].min() - 0.02, table["val_loss"].max() + 0.01)
for ax in axes[1:]:
    ax.set_yticklabels([])
fig.suptitle(f"The same model in {len(names)} versions (one run, this machine)")
plt.tight_layout()
plt.show()

# %% [markdown]
# The timings as speed relative to fp32 (above 1: faster than fp32), with a verdict per
# column; a ratio within 5% of 1 counts as "about as fast", since timings jitter that much.

# %%
speed = pd.DataFrame({col: table.loc["fp32", col] / table[col]
                      for col in ("ms_per_token", "ms_per_batch")}).drop(index="fp32")
speed.columns = ["per generated token", "per batch forward"]
print(timing.machine_line())
print(speed.round(2).to_string())


def verdict(ratio):
    return "faster than" if ratio > 1.05 else "slower than" if ratio < 0.95 else "about as fast as"


for name, row in speed.iterrows():
    print(f"{name}: {verdict(row.iloc[0])} fp32 per generated token, {verdict(row.iloc[1])} fp32 "
          f"for a batch forward")
if selective is not None:   # what the layer timings predict for it, against what it measured
    saved_ms = sum(len(n) * (f - i) for n, f, i, w in timings[["names", "fp32_us", "int8_us", "int8 faster"]]
                   .itertuples(index=False) if w) / 1000
    fp32_ms = table.loc["fp32", "ms_per_token"]
    print(f"only where it won: the layer timings save {saved_ms:.3f} ms of fp32's {fp32_ms:.3f} ms per "
          f"token, about x{fp32_ms / (fp32_ms - saved_ms):.2f} expected; measured "
          f"x{speed.loc['int8 dynamic, only where it won'].iloc[0]:.2f}")
# the int8 kernel computes the same product as the float copy: the same loss, up to float noise
kernel_loss, copy_loss = (evaluate(m, val_source, 2, "cpu") for m in (variants["int8 per channel, int8 kernel"],
                                                                     int8_model))
assert abs(kernel_loss - copy_loss) < 1e-4
print(f"int8 kernel: validation loss on 2 batches {kernel_loss:.4f}, the float copy's on the same {copy_loss:.4f}")
kernel_gain = speed.loc["int8 per channel, int8 kernel"] / speed.loc["int8 per channel (ours)"]
print(f"the int8 kernel against the float copy of the same layers: x{kernel_gain.iloc[0]:.2f} per "
      f"generated token, x{kernel_gain.iloc[1]:.2f} for a batch forward")
loss_gap = table["Δ val loss"].abs()
if profile.name != "ci":  # the next list: sizes and losses (not timings: those are printed)
    assert table.loc["int8 dynamic (torch.ao)", "size_MB"] > 2 * table.loc["int8 per channel (ours)", "size_MB"]
    assert loss_gap["int8 per channel (ours)"] < min(loss_gap["int8 per tensor (ours)"],
                                                     loss_gap["int8 dynamic (torch.ao)"])
    assert loss_gap["bf16 weights"] < 1e-3
    if "int8 dynamic, only where it won" in table.index:
        assert loss_gap["int8 dynamic, only where it won"] <= 0.01
    assert loss_gap["int8 x int8 (torch._int_mm)"] < min(0.01, loss_gap["int8 dynamic (torch.ao)"])

# %% [markdown]
# How to read it.
#
# - **Size.** int8 weights take a quarter of fp32's bytes; biases, LayerNorms and the
#   position table stay in float. The dynamic version keeps the fp32 embedding *and* an int8
#   copy of the tied head, so it saves much less than our tie-aware swap.
# - **Loss.** Of the int8 versions, per-channel stays closest to fp32. One scale per tensor
#   costs more, and so does the dynamic version, which uses per-tensor weight scales and also
#   rounds the activations.
# - **Speed depends on the kernel that multiplies, and on how many tokens each call
#   processes.** Our layers convert int8 to float at every call, on top of the same float
#   product as fp32: strictly more work (section 7 showed the conversions), so they save
#   memory, not time. The int8 kernel skips the conversion and reads a quarter of the bytes,
#   which *could* pay at one token per call, where a product does little arithmetic per weight
#   it reads; but a kernel is only as fast as its implementation for this CPU, and the float
#   products it competes with are among the most tuned code there is. The dynamic version
#   runs integer kernels too, but quantizes the activations at every call, which at one token
#   can cost as much as the int8 product saves. The verdicts above say which way each went
#   on this machine: int8 is not automatically faster, and the same int8 weights can be
#   faster or slower depending on the kernel that multiplies them.
# - **Only where it won.** Quantizing just the layers where int8 beat fp32 alone keeps the
#   others in fp32, so the loss moves little (within 0.01 nats of fp32: the assert above
#   checks it). Everything else in a token is unchanged, so it can gain about what those
#   layers saved in the timing table: the line under the verdicts turns that saving into an
#   expected speed-up and prints the measured one beside it. Where the two differ, that is
#   the noise of timing whole generations on this machine, a useful yardstick for every
#   ratio in the table. When the head is among them, the
#   model keeps its fp32 embedding beside an int8 copy of the tied head, so it is no smaller
#   than fp32 (the size column): this version trades nothing for memory, only for speed.
# - **bf16** halves the size at no visible cost in loss. Its speed depends on the CPU: x86
#   CPUs with bf16 instructions (`avx512_bf16`, `amx_bf16`: ✓ or ✗ in the machine line above)
#   multiply bf16 natively and can beat fp32, while others convert bf16 to fp32 and back and
#   run it slower than fp32 (chapter 07 explains the flags).
# - **int8 x int8** multiplies integers in one fast kernel, but in eager mode every layer
#   also runs about ten small operations to round its input (absolute value, maximum, divide,
#   round, clamp, convert) and to rescale the sums, each a separate call with its own
#   overhead, where fp32 runs one product. It rounds the inputs as torch.ao does, but with one
#   scale per input row and per output channel where torch.ao uses one per tensor, and it
#   loses less (asserted above); its size is our tie-aware int8's.
#
# **Compiled.** Those small operations are what `torch.compile` removes: it fuses the rounding
# and rescaling into the kernels around each product, so a token costs the integer products
# plus little else. The same models with the compiled decode step of chapter 08
# (`generate(..., compiled=True)`; compiling both takes a while the first time), timed in
# interleaved rounds as above, on as many new tokens as fill one window after the prompt:
# no slide, so only the one-token step is compiled, not the prefill a slide would need.

# %%
import time

compiled_models = {"fp32": model, "int8 x int8 (torch._int_mm)": int_mm_model}
t0 = time.perf_counter()
one_window = profile.block_size - prompt.size(1)          # the last new token is never fed back
compiled = timing.compare(compiled_models, prompt=prompt, new_tokens=one_window, rounds=5, threads=1,
                            compiled=True, progress=True)
compile_and_time_s = time.perf_counter() - t0
eager_ratio = speed.loc["int8 x int8 (torch._int_mm)"].iloc[0]
compiled_ratio = compiled.loc["fp32", "ms_per_token"] / compiled.loc["int8 x int8 (torch._int_mm)", "ms_per_token"]
print(timing.machine_line())
print(compiled[["ms_per_token"]].rename(columns={"ms_per_token": "ms per token, compiled step"}).round(3).to_string())
print(f"int8 x int8 against fp32 per generated token: eager x{eager_ratio:.2f} ({verdict(eager_ratio)} fp32), "
      f"compiled x{compiled_ratio:.2f} ({verdict(compiled_ratio)} fp32); validation loss "
      f"{table.loc['int8 x int8 (torch._int_mm)', 'Δ val loss']:+.4f} nats; {one_window} new tokens; "
      f"compiling and timing took {compile_and_time_s:.0f} s")

# %% [markdown]
# The line above says which way it went on this machine, eager and compiled. The same model,
# with the same int8 products, can be slower or faster than fp32 depending on what surrounds
# those products: quantization pays at one token only when the code around the kernel is
# lean. `bench/generation.py` repeats this comparison with more rounds, and prints the range
# of the ratio over them, for the [benchmarks appendix](../book/benchmarks.md).
#
# ## 9. Half precision and `torch.compile` on a GPU
#
# On a GPU the usual first step is not int8 but 16-bit floats: cast the weights to fp16 or
# bf16 (halving memory and using tensor cores), then let `torch.compile` fuse the small
# operations. This cell measures both when a CUDA GPU is present and is skipped on a CPU.

# %%
if torch.cuda.is_available():
    import time

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
          "(bf16 weights on the CPU are in the table above.)")

# %% [markdown]
# > **Pitfalls.**
# > - *Tied weights.* The embedding and the output head are one matrix. A naive swap
# >   quantizes the head into a second copy and leaves the fp32 embedding in place: the file
# >   shrinks far less than expected, and after loading, the two copies no longer agree.
# >   PyTorch's dynamic quantization does exactly this (its size above).
# > - *Outliers set the scale.* One large weight stretches the grid for the whole tensor (or
# >   row), and most weights then use only a few codes. Per-channel scales limit the damage
# >   to one row; clipping the range, or keeping outlier channels in float, are the next steps.
# > - *The per-channel axis.* For `nn.Linear` (`weight` of shape `(out, in)`) it is one scale
# >   per **output** row, i.e. reduce over dim 1. One scale per input column does not factor
# >   out of the matrix product.
# > - *Symmetric grids waste half their codes on one-sided data* (activations after ReLU or
# >   GELU): use a zero point there.
# > - *Quantization is not free speed.* Weight-only int8 saves memory; only a kernel that
# >   multiplies the int8 codes directly (or dynamic quantization's integer kernels, or GPU
# >   kernels) can make it faster, and at batch 1 on a tiny model, overheads hide much of it.
# >   Profile (section 7) and measure (section 8), as above.
# > - *`torch.ao.quantization` is deprecated* (it warns in torch 2.13 and will move to the
# >   `torchao` package); the ideas above carry over unchanged.

# %% [markdown]
# ## Exercises
#
# Each exercise has a stub that raises `NotImplementedError` and a checker from
# `course_utils.exercises.ch09`. Replace the `raise` with your code and re-run the checker: it
# prints ✓ when your answer is right and ✗ with a hint when it is not. A solution follows,
# collapsed.
#
# **Exercise 09.1.** Write `quantize_per_tensor(w)` returning `(q, scale)`: `q` an int8
# tensor of the shape of `w` with values in $-127..127$, `scale` one number, such that
# `q * scale` is within `scale / 2` of `w`.

# %%
from course_utils.exercises import ch09


def quantize_per_tensor(w):
    raise NotImplementedError


_ = ch09.check_quantize_per_tensor(quantize_per_tensor)


# %% tags=["hide-cell"]
def quantize_per_tensor(w):
    scale = w.abs().max() / 127
    q = torch.round(w / scale).clamp(-127, 127).to(torch.int8)
    return q, scale


_ = ch09.check_quantize_per_tensor(quantize_per_tensor)


# %% [markdown]
# **Exercise 09.2.** Write `quantize_asymmetric(w)` returning `(q, scale, zero_point)` with
# `q` a uint8 tensor (codes $0..255$) and `(q - zero_point) * scale` within `scale / 2` of
# `w`. Widen the range to include 0.

# %%
def quantize_asymmetric(w):
    raise NotImplementedError


_ = ch09.check_quantize_asymmetric(quantize_asymmetric)


# %% tags=["hide-cell"]
def quantize_asymmetric(w):
    lo, hi = min(float(w.min()), 0.0), max(float(w.max()), 0.0)
    scale = (hi - lo) / 255
    zero_point = round(-lo / scale)
    q = (torch.round(w / scale) + zero_point).clamp(0, 255).to(torch.uint8)
    return q, scale, zero_point


_ = ch09.check_quantize_asymmetric(quantize_asymmetric)


# %% [markdown]
# **Exercise 09.3.** Write `quantize_per_channel(w)` for a Linear weight of shape
# `(out, in)`: int8 codes and one scale per output row (shape `(out, 1)` or `(out,)`).

# %%
def quantize_per_channel(w):
    raise NotImplementedError


_ = ch09.check_quantize_per_channel(quantize_per_channel)


# %% tags=["hide-cell"]
def quantize_per_channel(w):
    scale = w.abs().amax(dim=1, keepdim=True) / 127
    q = torch.round(w / scale).clamp(-127, 127).to(torch.int8)
    return q, scale


_ = ch09.check_quantize_per_channel(quantize_per_channel)

# %% [markdown]
# ## Summary
#
# - Symmetric int8 stores $q = \mathrm{round}(w/s)$ with $s = \max|w|/127$; the error is at
#   most $s/2$. A zero point (asymmetric int8) serves one-sided data such as activations.
# - One scale per output channel follows each row's own range and cuts the error, at no
#   cost to the matrix product.
# - `quantize.quantize_model` swaps every Linear for an `Int8Linear` and keeps the tied
#   embedding and head as one int8 table; its layers convert the codes to float at every call,
#   or multiply with PyTorch's weight-only int8 kernel (`kernel="int8pack"`), or round the
#   inputs to int8 too and multiply integers with `torch._int_mm` (`kernel="int_mm"`).
#   PyTorch's `quantize_dynamic` adds int8 kernels (and activation quantization) but keeps the
#   fp32 embedding beside the int8 head, and its packed layers break a compiled graph.
# - Speed at one token is decided by the code around the products as much as by the products:
#   int8 x int8 pays once `torch.compile` fuses the rounding of the inputs into the step.
# - `measure.op_table` (torch.profiler) shows where the time of a call goes, operator by
#   operator: look before you optimise. `quantize.linear_timings` does the same layer by layer,
#   and `dynamic_int8(model, only=[...])` quantizes only the layers where int8 won (the list
#   printed in section 7); it can gain about what those layers saved, no more.
# - The table above is the chapter's result: size on disk, time per token and validation
#   loss, measured side by side; `bench/generation.py` repeats the comparison for the
#   [benchmarks appendix](../book/benchmarks.md).
#
# **Next**, chapters 10 and 11 fine-tune the pretrained model: as a sentiment classifier,
# and as the chatbot that talks through the `generate` function of chapter 08.
