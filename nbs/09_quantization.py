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
# - measure size, speed and loss of fp32, bf16, our int8 and PyTorch's dynamic int8 side by
#   side, with the spread of the timings.

# %%
from course_utils import config, plots, timing

plots.setup()                # CJK font for Chinese labels
profile = config.get_profile()
print(config.summary(profile))
print(timing.machine_line())   # section 7 times the models
config.seed_everything(0)

# %%
import copy
import statistics

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from IPython.display import display
from tqdm.auto import tqdm

from course_utils import artifacts, quantize
from course_utils.batches import WindowBatches
from course_utils.evaluation import evaluate
from course_utils.sampling import generate

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
print(f"codes used: {int(q.unique().numel())} of 255; half of the weights have |q| <= {half}")
config.claim(f"half of the weights share {2 * half + 1} of the 255 levels: a few dozen", 12 <= 2 * half + 1 <= 99)

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
# When values are one-sided, half of a symmetric grid is wasted. Activations after a GELU are
# such values: they are all $\ge -0.17$, since GELU's minimum is about $-0.170$, while their
# positive side reaches far higher (the cell below prints GELU's minimum and their range). Asymmetric (affine) quantization maps $[\min, \max]$ onto the
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
gelu_min = float(F.gelu(torch.linspace(-4, 0, 40_001)).min())
print(f"GELU's minimum {gelu_min:.4f}; the activations here run from {float(gelu_out.min()):.4f} "
      f"to {float(gelu_out.max()):.2f}")
assert float(gelu_out.min()) >= gelu_min - 1e-6          # all of them, by construction

rows = {}
for name, t in [("MLP weight (symmetric around 0)", W.flatten()),
                ("GELU activations (one-sided)", gelu_out)]:
    rows[name] = {"min": float(t.min()), "max": float(t.max()),
                  "RMS error, symmetric": float((t - quantize.roundtrip(t, "symmetric")).pow(2).mean().sqrt()),
                  "RMS error, asymmetric": float((t - quantize.roundtrip(t, "asymmetric")).pow(2).mean().sqrt())}
errors = pd.DataFrame(rows).T
gain = errors["RMS error, asymmetric"] / errors["RMS error, symmetric"]
acts_gain, weight_gain = gain["GELU activations (one-sided)"], gain["MLP weight (symmetric around 0)"]
config.claim(f"a zero point cuts the activations' error to x{acts_gain:.2f} (about half) and changes the "
             f"weights' by little (x{weight_gain:.2f})", 0.35 < acts_gain < 0.65 and 0.8 < weight_gain < 1.2)
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
config.claim(f"one scale per output row beats one per tensor in {better} of {len(rows)} layers; one per "
             f"input column beats one per output row in {columns} of {len(rows)}: some, not all",
             better == len(rows) and 0 < columns < len(rows))

# %% [markdown]
# Scales per input column are about as accurate (the columns' ranges differ too: they win in
# some layers and lose in others, as the claim above says), but they cannot be pulled out
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
# directly, with no float copy (a private operator, hence the underscore). Whether that is
# faster is measured in this chapter's [Going further](09a_where_the_time_goes.ipynb).

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
# `torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)`.
# `torch.ao.quantization` is deprecated in favour of the separate
# [torchao](https://github.com/pytorch/ao) package (`torchao.quantization.quantize_`, not
# installed here), but it still works in torch 2.13, with a deprecation warning.
# `quantize.dynamic_int8(model)` makes that call on a copy of the model, with the warnings
# silenced (`quiet=True`): the library's notice is not part of the lesson.

# %%
dynamic_model = quantize.dynamic_int8(model)
print(dynamic_model.blocks[0].mlp.fc)
print("the head is quantized separately from the embedding:", type(dynamic_model.lm_head).__name__,
      "vs", type(dynamic_model.tok_emb).__name__)
agreement.loc["int8 dynamic (torch.ao)"] = pd.Series(quantize.logits_agreement(model, dynamic_model, x_val))
agreement

# %% [markdown]
# Its weights have one scale per tensor (`per_tensor_affine` above), the head gets an int8 copy
# of the tied embedding while the embedding stays in fp32, and it rounds the activations too:
# the agreement table's last row shows how far that takes its predictions from fp32's.
#
# ## 7. Size, speed and loss, measured side by side
#
# For each version of the model: the size of its `state_dict` saved to a file; the time per
# generated token (greedy with the KV cache of chapter 08, batch 1: one token per call); the
# time of one forward pass over a whole batch of windows (many tokens per call, as in
# evaluation or the prefill of a long prompt); and the validation loss on the same validation
# windows as chapter 05. The timings run on one CPU thread, in interleaved repeats: every model
# once per repeat, the order alternating, so a busy moment of the machine hits them all. Each
# model's speed relative to fp32 is the ratio of two runs of the same repeat, reported as the
# median with the lowest and highest over the repeats.

# %%
NEW_TOKENS = 64


def measure(models, repeats=5):
    """Size (MB), median ms per generated token and per batch forward, validation loss; and the
    per-repeat speed of each model relative to the first (fp32): median, lowest, highest."""
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
                           "val_loss": evaluate(m, val_source, profile.eval_iters, "cpu")}
            bar.update(1)
            for col in ("per token", "per batch"):
                r = [b / t for b, t in zip(seconds[base, col], seconds[name, col], strict=True)]
                speed[name, col] = {"median": statistics.median(r), "lowest": min(r), "highest": max(r)}
    return pd.DataFrame(table).T, pd.DataFrame(speed).T


prompt = torch.tensor([vocab.encode("中国人民")])
candidates = {"fp32": model, "bf16 weights": copy.deepcopy(model).to(torch.bfloat16),
              "int8 per tensor (ours)": quantize.quantize_model(model, per_channel=False),
              "int8 per channel (ours)": int8_model, "int8 dynamic (torch.ao)": dynamic_model}
table, speed = measure(candidates)
table["Δ val loss"] = table["val_loss"] - table.loc["fp32", "val_loss"]
table["size vs fp32"] = table["size_MB"] / table.loc["fp32", "size_MB"]
print(f"1 CPU thread; {NEW_TOKENS} new tokens per generation; one batch: {x_val.shape[0]} windows of "
      f"{x_val.shape[1]} tokens; CPU vector instructions used: {torch.backends.cpu.get_cpu_capability()}")
table.round(4)

# %%
fig, axes = plt.subplots(1, 4, figsize=(14, 3.6))
names = list(table.index)
for ax, col, label in zip(axes, ["size_MB", "ms_per_token", "ms_per_batch", "val_loss"],
                          ["size on disk (MB)", "ms per generated token (median)",
                           "ms per batch forward (median)", "validation loss (nats/char)"], strict=True):
    ax.barh(names, table[col], color=[f"C{i}" for i in range(len(names))])
    ax.set_xlabel(label)
    ax.invert_yaxis()
axes[3].set_xlim(table["val_loss"].min() - 0.02, table["val_loss"].max() + 0.01)
for ax in axes[1:]:
    ax.set_yticklabels([])
fig.suptitle(f"The same model in {len(names)} versions (1 CPU thread, medians of interleaved repeats)")
plt.tight_layout()
plt.show()

# %% [markdown]
# The timings as speed relative to fp32 (above 1: faster than fp32), with the range over the
# repeats. A verdict needs the whole range on one side of 1: "faster" or "slower" in every
# repeat; otherwise the difference is within the noise of this machine.

# %%
def verdict(row):
    return ("faster than" if row["lowest"] > 1 else "slower than" if row["highest"] < 1
            else "within the noise of")


print(speed.drop(index="fp32", level=0).round(2).to_string())
for name in names[1:]:
    token, batch = speed.loc[(name, "per token")], speed.loc[(name, "per batch")]
    print(f"{name}: {verdict(token)} fp32 per generated token, {verdict(batch)} fp32 for a batch forward")
loss_gap = table["Δ val loss"].abs()
config.claim(f"torch.ao's dynamic int8 is {table.loc['int8 dynamic (torch.ao)', 'size_MB']:.2f} MB, over twice "
             f"our per-channel int8's {table.loc['int8 per channel (ours)', 'size_MB']:.2f} MB",
             table.loc["int8 dynamic (torch.ao)", "size_MB"] > 2 * table.loc["int8 per channel (ours)", "size_MB"])
config.claim(f"of the int8 versions, per channel loses least ({loss_gap['int8 per channel (ours)']:.4f} nats; "
             f"per tensor {loss_gap['int8 per tensor (ours)']:.4f}, dynamic {loss_gap['int8 dynamic (torch.ao)']:.4f}); "
             f"bf16 {loss_gap['bf16 weights']:.4f}", loss_gap["bf16 weights"] < 1e-3 and loss_gap["int8 per channel (ours)"]
             < min(loss_gap["int8 per tensor (ours)"], loss_gap["int8 dynamic (torch.ao)"]))
ours = speed.loc[("int8 per channel (ours)", "per token")]
config.claim(f"our weight-only int8 was slower than fp32 per token (median x{ours['median']:.2f}, x{ours['highest']:.2f} "
             f"in its best repeat)", ours["median"] < 1)

# %% [markdown]
# How to read it.
#
# - **Size.** int8 weights take a quarter of fp32's bytes; biases, LayerNorms and the position
#   table stay in float. The dynamic version keeps the fp32 embedding *and* an int8 copy of the
#   tied head, so it saves much less than our tie-aware swap (the first claim).
# - **Loss.** Of the int8 versions, per-channel stays closest to fp32. One scale per tensor
#   costs more, and so does the dynamic version, which uses per-tensor weight scales and also
#   rounds the activations (the second claim).
# - **Speed depends on the kernel that multiplies, and on how many tokens each call
#   processes.** Our layers convert int8 to float at every call, on top of the same float
#   product as fp32: strictly more work, so they save memory, not time. Per generated token they
#   were slower than fp32 in the median repeat (the third claim), and the verdict lines show
#   them slower over a batch of windows too. The dynamic version runs integer kernels, which
#   round the activations at every call; at one token per call the products are a small part
#   of a token's work, so a faster product has little to save, while over a whole batch of
#   windows they are most of it, so it fares better there than per token (compare its two
#   rows). int8 is not automatically faster: it needs a kernel that multiplies the codes, and
#   enough tokens per call to pay for the work around that kernel.
# - **bf16** halves the size at no visible cost in loss (the second claim). Its speed depends on
#   the CPU, and again on the tokens per call. x86 CPUs with bf16 instructions (`avx512_bf16`,
#   `amx_bf16`: ✓ or ✗ in the machine line at the top; chapter 07 explains them) multiply bf16
#   natively, in kernels built for many rows at a time (AMX works on tiles of rows): that pays
#   over a batch of windows, while at one row per call their set-up can cost more than they
#   save. The machine of the committed run has both ✓, and its verdict lines show just that:
#   bf16 faster than fp32 for a batch forward, slower per generated token. CPUs without them
#   convert bf16 to fp32 and back, and run it slower than fp32.
#
# Why int8 loses time at one token, and how it can win, is the subject of
# [Going further: where the time of one token goes](09a_where_the_time_goes.ipynb): it profiles
# a generated token operator by operator with `torch.profiler`, times every layer shape alone,
# measures PyTorch's int8 kernels, multiplies int8 inputs by int8 weights with `torch._int_mm`,
# and compiles that into chapter 08's decode step, where int8 can beat fp32; and it measures
# fp16/bf16 with `torch.compile` on a GPU.

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
# >   Measure side by side, with repeats, as in section 7.
# > - *`torch.ao.quantization` is deprecated* in favour of the `torchao` package; in torch 2.13
# >   it still works, with a deprecation warning. The ideas above carry over unchanged.

# %% [markdown]
# ## Exercises
#
# Each exercise has a stub that raises `NotImplementedError` and a checker from
# `course_utils.exercises.ch09`. Replace the `raise` with your code and re-run the checker: it
# prints ✓ when your answer is right and ✗ with a hint when it is not. A solution follows,
# collapsed.
#
# **Exercise 09.1 (symmetric per-tensor int8).** Write `quantize_per_tensor(w)` returning `(q, scale)`: `q` an int8
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
# **Exercise 09.2 (asymmetric int8 with a zero point).** Write `quantize_asymmetric(w)` returning `(q, scale, zero_point)` with
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
# **Exercise 09.3 (symmetric per-channel int8).** Write `quantize_per_channel(w)` for a Linear weight of shape
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
#   embedding and head as one int8 table: about a quarter of fp32's size, at almost no cost in
#   loss. PyTorch's dynamic int8 (`quantize.dynamic_int8`, torch.ao's `quantize_dynamic`) adds
#   int8 kernels and rounds the activations too, but keeps the fp32 embedding beside the int8 head.
# - The table of section 7 is the chapter's result: size on disk, time per token and per
#   batch, and validation loss, measured side by side, with the spread of the timings. Int8
#   is not automatically faster: our weight-only layers convert the codes to float at every
#   call, and save memory, not time.
# - [Going further](09a_where_the_time_goes.ipynb) looks inside one generated token with
#   `torch.profiler`, measures PyTorch's int8 kernels layer by layer, and multiplies int8 by int8
#   (`torch._int_mm`) inside chapter 08's compiled decode step; `bench/generation.py` repeats
#   the comparisons for the [benchmarks appendix](../book/benchmarks.md).
#
# **Next**, chapters 10 and 11 fine-tune the pretrained model: as a sentiment classifier,
# and as the chatbot that talks through the `generate` function of chapter 08.
