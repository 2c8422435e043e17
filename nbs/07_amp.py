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
# # 07 · Mixed precision: fewer bits per number (AMP)
#
# Every weight, activation and gradient of our GPT has so far been a 32-bit float. Half as
# many bits halves the memory each tensor needs and the bytes moved between memory and the
# arithmetic units, and GPUs multiply 16-bit matrices several times faster than 32-bit ones.
# The catch is that 16 bits hold less: fewer significant digits, and for `float16` a much
# smaller range, so small gradients can silently become zero. **Automatic mixed precision**
# (自动混合精度, AMP) is the standard compromise: keep the weights and the optimizer in
# float32, run the matrix products in 16 bits inside `torch.autocast`, and, for float16 only,
# scale the loss so that gradients stay representable. This chapter looks at the formats
# bit by bit, makes an underflow happen and prevents it, shows which operations autocast
# really runs in 16 bits, trains the GPT in bfloat16 next to float32, and measures what it
# buys on the hardware at hand.
#
# **Learning goals**
#
# - read the range and precision of fp32, fp16 and bf16 from their bit layouts (and `torch.finfo`);
# - see small gradients underflow in fp16 and rescue them with loss scaling; explain what a
#   `GradScaler` does at each step;
# - know which operations `torch.autocast` runs in 16 bits and which it keeps in fp32;
# - train with `precision="bf16"` and compare the loss curve with fp32;
# - measure speed and memory honestly, and explain a disappointing result.

# %%
from course_utils import config, plots, timing

plots.setup()                # CJK font for Chinese labels
profile = config.get_profile()
print(config.summary(profile))
config.seed_everything(0)

# %% [markdown]
# ## 1. Three formats, bit by bit
#
# A floating-point number is $(-1)^s \times 1.m \times 2^{e - \text{bias}}$: a sign bit, an
# exponent of $E$ bits (which sets the **range**) and a mantissa of $M$ bits (which sets the
# **precision**, the spacing between neighbouring numbers, $\varepsilon = 2^{-M}$ relative).
#
# | format | sign | exponent $E$ | mantissa $M$ | bytes |
# |---|---|---|---|---|
# | fp32 (float32) | 1 | 8 | 23 | 4 |
# | fp16 (float16, "half") | 1 | 5 | 10 | 2 |
# | bf16 (bfloat16, "brain float") | 1 | 8 | 7 | 2 |
#
# bf16 is fp32 with the last 16 mantissa bits cut off: the same range, but only $M + 1 = 8$
# bits of precision (counting the implicit leading 1), about $\log_{10} 2^8 \approx 2.4$
# significant decimal digits: neighbouring bf16 numbers differ by 1 part in 128 to 1 part
# in 256. fp16 spends more bits on the mantissa (11 bits of precision, about 3.3 digits) and has
# only 5 exponent bits: its largest number is 65504, its smallest positive one about
# $6 \times 10^{-8}$, and anything below half of that rounds to zero. From $E$ and $M$ alone
# (with $\text{bias} = 2^{E-1} - 1$):

# %%
# NBVAL_CHECK_OUTPUT
def float_format(exponent_bits, mantissa_bits):
    bias = 2 ** (exponent_bits - 1) - 1
    return {"max": (2 - 2.0 ** -mantissa_bits) * 2.0 ** bias,   # the top exponent is inf/nan
            "smallest normal": 2.0 ** (1 - bias),
            "smallest subnormal": 2.0 ** (1 - bias - mantissa_bits),  # 0.000…1 × 2^(1-bias)
            "eps": 2.0 ** -mantissa_bits}


ours = {"fp32": float_format(8, 23), "bf16": float_format(8, 7), "fp16": float_format(5, 10)}
for name, values in ours.items():
    print(name, {k: f"{v:.3e}" for k, v in values.items()})

# %% [markdown]
# `course_utils.amp.format_table()` reads the same quantities from `torch.finfo`; they must agree.

# %%
import pandas as pd

from course_utils import amp

table = amp.format_table()
with pd.option_context("display.float_format", "{:.3e}".format):
    print(table.to_string())
for name, values in ours.items():
    for key, value in values.items():
        assert table.loc[name, key] == value, (name, key)
print("derived from the bit layout = torch.finfo, for all three formats")

# %% [markdown]
# What this means for actual numbers: each row is stored in each format and read back.

# %%
# NBVAL_CHECK_OUTPUT
import torch

samples = [0.1, 1 / 3, 1000.1, 2049.0, 70000.0, 1e-5, 1e-8, 1.0 + 1e-4]
rows = []
for x in samples:
    rows.append({"value": f"{x:.10g}",
                 **{name: f"{torch.tensor(x, dtype=amp.DTYPES[name]).item():.10g}"
                    for name in ("fp32", "bf16", "fp16")}})
print(pd.DataFrame(rows).to_string(index=False))

# %% [markdown]
# 2049 is not an fp16 number (above 2048 fp16 counts in steps of 2), 70000 overflows fp16 to
# `inf`, $10^{-8}$ underflows fp16 to 0 but is fine in bf16, and bf16 stores 1000.1 as 1000.
# The last row is why the **weights stay in fp32**: an update of $10^{-4}$ to a weight of 1 is
# lost entirely in either 16-bit format, so a model whose weights were 16-bit would stop
# learning once its updates became small. In AMP the optimizer adds updates to fp32 weights.

# %%
# NBVAL_CHECK_OUTPUT
w16 = torch.tensor(1.0, dtype=torch.bfloat16)
update = 1e-4
print(f"bf16: 1 + {update} = {(w16 + update).item()}  |  fp32: 1 + {update} = "
      f"{(torch.tensor(1.0) + update).item():.6f}")
assert (w16 + update).item() == 1.0

# %% [markdown]
# ## 2. Underflow: small gradients vanish in fp16
#
# How small are real gradients? One backward pass of the GPT (in fp32) on a real batch, and the
# distribution of $|g|$ against the fp16 thresholds:

# %%
import numpy as np

from course_utils import artifacts
from course_utils.batches import WindowBatches
from course_utils.model import GPT, GPTConfig

vocab = artifacts.news_vocab()
train_tokens, val_tokens = artifacts.news_tokens("train"), artifacts.news_tokens("val")
source = WindowBatches(train_tokens, profile.batch_size, profile.block_size)
model = GPT(GPTConfig(vocab_size=len(vocab), **profile.model_kwargs()))
_, loss = model(*source.get(0))
loss.backward()
grads = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
nonzero = grads[grads != 0]
print(f"{grads.numel():,} gradient entries, {nonzero.numel():,} of them non-zero")
print(f"|g| ranges from {nonzero.abs().min():.1e} to {nonzero.abs().max():.1e}")

fp16 = torch.finfo(torch.float16)
lost = amp.underflow_fraction(grads, torch.float16)
subnormal = ((nonzero.abs() < fp16.tiny) & (nonzero.half() != 0)).float().mean().item()
print(f"cast to fp16: {lost:.2%} of the non-zero gradients become 0, and {subnormal:.2%} land "
      f"among the subnormals (at most 10 significant bits instead of 11)")
print(f"cast to bf16: {amp.underflow_fraction(grads, torch.bfloat16):.2%} become 0")
if profile.name != "ci":  # the next paragraph: a large share subnormal, a thin tail lost
    assert subnormal > 0.2 and 0 < lost < 0.01, (subnormal, lost)

# %%
import matplotlib.pyplot as plt

log_g = np.log2(nonzero.abs().numpy())
fig, ax = plt.subplots(figsize=(8, 3.2))
ax.hist(log_g, bins=80, color="#3b78b8")
ax.axvline(np.log2(fp16.tiny), color="#c77a1a", ls="--", label="fp16 smallest normal 2^-14")
ax.axvline(np.log2(fp16.tiny * fp16.eps), color="#b03030", ls="-",
           label="fp16 smallest subnormal 2^-24 (below half of it: 0)")
ax.set_xlabel("log2 |gradient|")
ax.set_ylabel("number of entries")
ax.set_title(f"Gradients of the GPT at initialisation (profile {profile.name}, loss {loss.item():.2f})")
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# (Even the embedding rows of characters absent from the batch get a gradient, because the
# embedding is tied to the output head, whose softmax involves every character.) Almost all
# gradients are far below 1; a large share lies under fp16's smallest *normal* number, where
# fp16 keeps fewer significant bits, and a thin tail under its smallest subnormal, where it
# keeps none. How many fall below fp16's range depends on the model, the batch and the moment in training
# (late in training, gradients shrink). And in real fp16 training it is not only the final
# parameter gradients: every activation gradient of the backward pass is computed in fp16
# too, so underflow can strike in the middle of the chain rule.
#
# **Loss scaling** (损失缩放) is the fix: multiply the loss by a factor $S$ before the backward
# pass. By the chain rule every gradient is multiplied by $S$ too, which lifts the small ones
# into fp16's range; before the optimizer step, divide by $S$ again, in fp32. By hand, on the
# gradients above:

# %%
def scale_by_hand(g, scale):
    scaled = (g * scale).half()          # what the fp16 backward pass would hold
    return scaled.float() / scale        # unscaled in fp32 before the optimizer sees it


S = 2.0 ** 16                            # GradScaler's initial scale
rescued = scale_by_hand(nonzero, S)
assert torch.equal(rescued, amp.scale_roundtrip(nonzero, S))   # = course_utils.amp's version
plain = nonzero.half().float()
rel = lambda approx: ((approx - nonzero).abs() / nonzero.abs()).median().item()
print(f"plain fp16 : {(plain == 0).float().mean():.2%} zeros, median relative error {rel(plain):.1e}")
print(f"scaled 2^16: {(rescued == 0).float().mean():.2%} zeros, median relative error {rel(rescued):.1e}")
print(f"largest scaled |g| = {(nonzero.abs().max() * S):.3g} (fp16 max {fp16.max:.0f})")

# %% [markdown]
# A scale too large has the opposite problem: the largest gradients overflow to `inf`. Sweeping
# $S$ over powers of two shows the window between the two failures:

# %%
scales = [2.0 ** k for k in range(0, 33, 2)]
zeros = [(amp.scale_roundtrip(nonzero, s) == 0).float().mean().item() for s in scales]
infs = [torch.isinf(amp.scale_roundtrip(nonzero, s)).float().mean().item() for s in scales]
fig, ax = plt.subplots(figsize=(8, 3.2))
ax.plot(np.log2(scales), np.array(zeros) * 100, "o-", label="underflow: became 0")
ax.plot(np.log2(scales), np.array(infs) * 100, "s-", color="#b03030", label="overflow: became inf")
ax.set_yscale("symlog", linthresh=1e-3)
ax.set_xlabel("log2 of the loss scale S")
ax.set_ylabel("% of non-zero gradients (symlog)")
ax.set_title("fp16 round trip of the GPT's gradients at each loss scale")
ax.legend()
plt.show()
safe = [(z, -s) for s, z, i in zip(scales, zeros, infs, strict=True) if i == 0]
fewest, neg_scale = min(safe)
print(f"without any overflow, the fewest zeros ({fewest:.4%}) at S = 2^{int(np.log2(-neg_scale))}; "
      f"unscaled (S = 1): {zeros[0]:.4%} zeros")

# %% [markdown]
# ## 3. `GradScaler`: finding the scale automatically
#
# The right $S$ changes during training, so `torch.amp.GradScaler` searches for it: start
# high ($2^{16}$); after each backward pass, unscale the gradients and check them for `inf`
# or `nan`; if there is one, **skip the optimizer step** and halve $S$; after
# `growth_interval` (2000) clean steps in a row, double $S$. A skipped step now and then is
# normal; it is how the scaler probes the top of the window. The book's training loop uses
# it exactly in this order (clipping needs the true gradients, so it comes after `unscale_`):

# %%
import inspect

from course_utils import train as train_module

loop = inspect.getsource(train_module.train).splitlines()
keep = ("scaler = ", "scaler.scale(", "scaler.unscale_", "clip_grad_norm_", "scaler.step", "scaler.update")
print("\n".join(line.strip() for line in loop if any(k in line for k in keep)))

# %% [markdown]
# The scaler's bookkeeping does not need a GPU. Here a real `torch.amp.GradScaler` runs on the
# CPU on a one-weight model with `growth_interval=3`; at step 3 we plant an `inf` in the
# gradient, as an fp16 overflow would:

# %%
w = torch.nn.Parameter(torch.tensor([1.0]))
opt = torch.optim.SGD([w], lr=0.1)
scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16, growth_interval=3)
rows = []
for step in range(1, 9):
    scale_before = scaler.get_scale()
    opt.zero_grad()
    scaler.scale((w * 2).sum()).backward()       # d/dw = 2, times the scale
    if step == 3:
        w.grad[0] = float("inf")                 # an overflow somewhere in the backward pass
    w_before = w.item()
    scaler.step(opt)                             # unscales, checks for inf, steps or skips
    scaler.update()
    rows.append({"step": step, "scale": f"2^{int(np.log2(scale_before))}",
                 "inf found": step == 3, "weight changed": w.item() != w_before,
                 "next scale": f"2^{int(np.log2(scaler.get_scale()))}"})
print(pd.DataFrame(rows).to_string(index=False))
assert not rows[2]["weight changed"] and rows[2]["next scale"] == "2^15"
assert [r["next scale"] for r in rows[3:6]] == ["2^15", "2^15", "2^16"]   # doubled after 3 clean steps

# %% [markdown]
# Step 3 was skipped (the weight did not move) and the scale halved; after three clean steps
# it doubled (step 6). With bf16 none of this is needed: its range is fp32's, so
# `amp.grad_scaler(device, "bf16")` returns a disabled scaler whose `scale()` returns the loss
# unchanged. fp16 training with the scaler needs a CUDA GPU here:

# %%
print("scaler enabled for fp32 / bf16:",
      amp.grad_scaler("cpu", "fp32").is_enabled(), "/", amp.grad_scaler("cpu", "bf16").is_enabled())
if torch.cuda.is_available():
    from course_utils.train import TrainConfig, train

    config.seed_everything(0)
    gpu_model = GPT(GPTConfig(vocab_size=len(vocab), **profile.model_kwargs()))
    cfg16 = TrainConfig.from_profile(profile, max_steps=50, warmup_steps=5, eval_interval=50,
                                     eval_iters=2, log_interval=10, precision="fp16")
    res16 = train(gpu_model, source, cfg16, device="cuda")
    print("fp16 + GradScaler on", torch.cuda.get_device_name(0), "losses:",
          [round(v, 3) for v in res16.history["loss"]])
else:
    print("no CUDA device here: fp16 training with a GradScaler is skipped "
          "(on a GPU this cell trains 50 steps with precision='fp16')")

# %% [markdown]
# ## 4. `torch.autocast`: which operations run in 16 bits
#
# Inside `with torch.autocast(device_type, dtype):` PyTorch does not convert the model. It
# intercepts each operation and, by a fixed list, either casts its inputs to the 16-bit
# type (matrix products, convolutions, attention: fast and tolerant of rounding), or casts
# them to fp32 (ops where rounding or range hurts: losses everywhere, and on CUDA also
# softmax, layer_norm, exp, sum and other reductions), or runs it in whatever type its inputs
# have (everything else; mixed inputs are promoted to the wider type). The lists differ
# between CPU and CUDA: PyTorch's "Automatic Mixed Precision" documentation lists them per
# device. Measured here, for fp32 inputs and for 16-bit inputs (on a CUDA machine, a CUDA
# column is added):

# %%
import torch.nn.functional as F

x = torch.randn(4, 8, 16)
wt = torch.randn(16, 16)
ops = {
    "linear / matmul": lambda a: F.linear(a, wt.to(a.dtype)),
    "scaled_dot_product_attention": lambda a: F.scaled_dot_product_attention(a, a, a),
    "softmax": lambda a: torch.softmax(a, -1),
    "layer_norm": lambda a: F.layer_norm(a, (16,)),
    "gelu": lambda a: F.gelu(a),
    "exp": lambda a: a.exp(),
    "sum": lambda a: a.sum(),
    "cross_entropy": lambda a: F.cross_entropy(a.reshape(-1, 16), torch.zeros(32, dtype=torch.long)),
    "16-bit matmul + fp32 tensor": lambda a: F.linear(a, wt.to(a.dtype)) + x,
}
devices = [("cpu", torch.bfloat16)] + ([("cuda", torch.float16)] if torch.cuda.is_available() else [])
short = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}
rows = []
for name, op in ops.items():
    row = {"op": name}
    for dev, dtype in devices:
        for label, inp in (("fp32 in", x), (f"{short[dtype]} in", x.to(dtype))):
            with torch.autocast(dev, dtype=dtype):
                row[f"{dev} autocast {short[dtype]}: {label}"] = short[op(inp.to(dev)).dtype]
    rows.append(row)
print(pd.DataFrame(rows).to_string(index=False))
if not torch.cuda.is_available():
    print("(no CUDA device here: only the CPU columns were measured)")

# %% [markdown]
# Autocast is not magic: for a `Linear` it does what we could do by hand, casting input,
# weight and bias to bf16 and multiplying. The two give the very same bits:

# %%
layer = torch.nn.Linear(16, 8)
inp = torch.randn(5, 16)
by_hand = F.linear(inp.bfloat16(), layer.weight.bfloat16(), layer.bias.bfloat16())
with amp.autocast("cpu", "bf16"):
    auto = layer(inp)
print(auto.dtype, "| identical to the manual cast:", torch.equal(by_hand, auto))
assert torch.equal(by_hand, auto) and layer.weight.dtype == torch.float32

# %% [markdown]
# Inside our GPT, a forward hook on every leaf module records the dtype of its output:

# %%
x_batch, y_batch = source.get(0)
for precision in ("fp32", "bf16"):
    counts = amp.output_dtypes(model, x_batch, device="cpu", precision=precision)
    print(f"{precision}: " + ", ".join(f"{mod} -> {short[dt]} x{n}" for (mod, dt), n in sorted(
        counts.items(), key=lambda kv: (kv[0][0], str(kv[0][1])))))
model.zero_grad()
with amp.autocast("cpu", "bf16"):
    logits, loss16 = model(x_batch, y_batch)
loss16.backward()
grad_dtypes = {p.grad.dtype for p in model.parameters()}
print(f"logits {short[logits.dtype]}, loss {short[loss16.dtype]}, parameters "
      f"{ {short[p.dtype] for p in model.parameters()} }, gradients { {short[d] for d in grad_dtypes} }")
assert grad_dtypes == {torch.float32}

# %% [markdown]
# Every `Linear` (the attention projections, the MLP and the tied output head) runs in bf16;
# the embeddings and LayerNorms see the fp32 residual stream and stay fp32 (the residual
# additions mix bf16 and fp32, so they promote to fp32); our model computes the loss from
# `logits.float()`; the parameters and their gradients stay fp32, so the optimizer is
# untouched. That is the "mixed" in mixed precision.
#
# ## 5. Training in bf16: the loss curves
#
# The same model, seed and batches, trained for the same number of steps with
# `precision="fp32"` and `precision="bf16"` by the book's loop:

# %%
import time

from course_utils.evaluation import unigram_loss
from course_utils.train import TrainConfig, train

steps = {"ci": profile.max_steps, "cpu": 150, "gpu": 2000}[profile.name]
unigram = unigram_loss(train_tokens, val_tokens, len(vocab))
val_source = WindowBatches(val_tokens, profile.batch_size, profile.block_size, seed=1)
results = {}
for precision in ("fp32", "bf16"):
    config.seed_everything(0)
    net = GPT(GPTConfig(vocab_size=len(vocab), **profile.model_kwargs()))
    cfg = TrainConfig.from_profile(profile, max_steps=steps, warmup_steps=max(1, steps // 10),
                                   eval_interval=max(1, steps // 3), eval_iters=5,
                                   log_interval=max(1, steps // 30), precision=precision,
                                   fused_loss=False, fused_adamw=False, compiled=False)  # the plain step
    t0 = time.perf_counter()
    results[precision] = train(net, source, cfg, val_source=val_source)
    results[precision].wall = time.perf_counter() - t0

# %%
fig, ax = plt.subplots(figsize=(8, 3.6))
for precision, color in (("fp32", "#3b78b8"), ("bf16", "#c77a1a")):
    h = results[precision].history
    ax.plot(h["step"], h["loss"], color=color, label=f"{precision} train (batch)")
    ax.plot(h["eval_step"], h["val_loss"], "o--", color=color, label=f"{precision} validation")
ax.axhline(unigram, color="#777", ls=":", label="unigram baseline (validation)")
ax.set_xlabel("step")
ax.set_ylabel("cross-entropy (nats / character)")
ax.set_title(f"fp32 vs bf16 autocast, same seed and batches (profile {profile.name})")
ax.legend()
plt.show()
for precision, res in results.items():
    final = res.history["val_loss"][-1]
    print(f"{precision}: final validation loss {final:.4f} ({unigram - final:.4f} below the unigram "
          f"baseline {unigram:.4f}), {res.history['tokens_per_s'][-1]:,.0f} tokens/s, {res.wall:.1f} s")
h32, h16 = results["fp32"].history, results["bf16"].history
gap = h16["val_loss"][-1] - h32["val_loss"][-1]
print(f"bf16 - fp32: first logged batch loss {h16['loss'][0] - h32['loss'][0]:+.4f}, final validation "
      f"loss {gap:+.4f} nats ({'bf16' if gap < 0 else 'fp32'} ended lower)")
rate = (h32["val_loss"][0] - h32["val_loss"][-1]) / max(1, h32["eval_step"][-1] - h32["eval_step"][0])
if rate > 0:
    print(f"fp32's validation loss fell {rate:.4f} nats/step from step {h32['eval_step'][0]} to "
          f"{h32['eval_step'][-1]}: the gap is about {abs(gap) / rate:.0f} steps of that progress")
drift = max(abs(a - b) for a, b in zip(h16["loss"], h32["loss"], strict=True))
print(f"largest difference between the two runs' logged batch losses: {drift:.4f} nats")
if profile.name != "ci":  # the next paragraph: the same start, then different paths
    assert abs(h16["loss"][0] - h32["loss"][0]) < 0.005 < drift and rate > 0

# %% [markdown]
# The two runs start from the same weights and batches, and their first logged losses differ
# only in the rounding (the first difference printed above). Then they drift apart: bf16's
# rounding in the matrix products changes every step a little, the differences compound, and
# the two runs follow different paths (the largest difference between their logged batch
# losses is printed last). The final gap deserves an honest reading, whichever run ended
# lower, rather than "the curves agree" or "bf16 is worse":
#
# - **The runs are short.** Both models are still early in training, not far below the
#   unigram baseline (predicting each character from its frequency alone), where the loss
#   falls steeply. Measured in steps of fp32's progress (printed above), the gap says
#   how far one run is ahead of the other, and being some steps ahead is enough for a
#   gap of this size.
# - **One run per precision cannot tell bf16 from chance.** Any perturbation (another seed,
#   another batch order, even another thread count that reorders fp32 sums) sends training
#   down a different path; the validation loss is also an estimate from only 5 batches. To
#   know whether bf16 helped or hurt here, train a few seeds of each precision and compare
#   the gap with the spread between seeds of the same precision.
#
# So this experiment shows that bf16 autocast trains this model without stalling or diverging,
# not that it reaches the same loss to the second decimal. The usual experience with bf16
# autocast over long runs at larger scale is that it learns as well as fp32, which is why it
# is the default choice on hardware that supports it.
#
# ## 6. Speed and memory, measured here
#
# Fewer bits should mean less memory and more speed. **Memory first.** The activations autograd
# saves for the backward pass dominate a training step's memory, and we can count their bytes
# on any device with a saved-tensors hook:

# %%
def one_forward(precision):
    def run():
        with amp.autocast("cpu", precision):
            model(x_batch, y_batch)
    return run


saved = {p: amp.saved_activation_bytes(one_forward(p)) for p in ("fp32", "bf16")}
for p, n in saved.items():
    print(f"{p}: {n / 2**20:6.1f} MiB of activations saved for backward "
          f"(batch {profile.batch_size} x {profile.block_size} tokens)")
print(f"bf16 / fp32 = {saved['bf16'] / saved['fp32']:.2f}")
assert saved["bf16"] < saved["fp32"]
if profile.name != "ci":  # the next paragraph: saved, but by less than one half
    assert saved["bf16"] > saved["fp32"] / 2

# %% [markdown]
# Not one half: autocast saves the bf16 copies of the inputs of each matrix product, but the
# LayerNorms, the residual stream and the loss (which our model computes from fp32 logits, a
# $B \times T \times |V|$ tensor, large with 4.7k characters) stay fp32. On a GPU,
# `torch.cuda.max_memory_allocated()` measures the same thing directly:

# %%
if torch.cuda.is_available():
    gpu_net = GPT(GPTConfig(vocab_size=len(vocab), **profile.model_kwargs())).cuda()
    xb, yb = x_batch.cuda(), y_batch.cuda()
    for precision in ("fp32", "bf16", "fp16"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        with amp.autocast("cuda", precision):
            _, gpu_loss = gpu_net(xb, yb)
        gpu_loss.backward()
        gpu_net.zero_grad(set_to_none=True)
        print(f"{precision}: peak CUDA memory {torch.cuda.max_memory_allocated() / 2**20:.1f} MiB")
else:
    print("no CUDA device here: peak GPU memory is not measured")

# %% [markdown]
# **Speed.** First the raw operation, a 1024 × 1024 matrix product, timed with
# `torch.utils.benchmark` (which warms up and repeats). What the CPU offers matters, so we
# print it too: `timing.machine_line()` gives the CPU model, cores, torch threads, the load
# average (other programs competing for the cores) and the CPU flags that decide which
# speed-ups exist (✓ present, ✗ absent); `timing.cpu_flags()` returns the flags as a dict.

# %%
from torch.utils import benchmark

print(timing.machine_line())
native = [flag for flag, present in timing.cpu_flags(("avx512_bf16", "amx_bf16")).items() if present]
print(f"CPU vector capability seen by PyTorch: {torch.backends.cpu.get_cpu_capability()}; "
      f"native bf16 instructions: {', '.join(native) or 'none (or not Linux)'}")
matmul = {}
for name in ("fp32", "bf16"):
    a = torch.randn(1024, 1024, dtype=amp.DTYPES[name])
    timer = benchmark.Timer("a @ a", globals={"a": a})
    matmul[name] = timer.blocked_autorange(min_run_time=1.0).median
    print(f"{name} 1024x1024 matmul: {matmul[name] * 1e3:6.2f} ms = "
          f"{2 * 1024**3 / matmul[name] / 1e9:6.1f} GFLOP/s")

# %% [markdown]
# Then whole training steps of our GPT (forward, backward, AdamW) at the profile's batch size.
# The two training runs of section 5 ran one after the other, so a change in the machine's load
# between them would bias their throughputs; here the two precisions alternate, step by step,
# and we compare median step times.

# %%
from statistics import median


def make_step(precision):
    config.seed_everything(0)
    net = GPT(GPTConfig(vocab_size=len(vocab), **profile.model_kwargs()))
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)

    def step():
        with amp.autocast("cpu", precision):
            _, step_loss = net(x_batch, y_batch)
        step_loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    step()                                  # warm-up: first-call overheads
    return step


steps_fn = {p: make_step(p) for p in ("fp32", "bf16")}
times = {p: [] for p in steps_fn}
for _ in range({"ci": 2, "cpu": 6, "gpu": 20}[profile.name]):
    for p, fn in steps_fn.items():
        t0 = time.perf_counter()
        fn()
        times[p].append(time.perf_counter() - t0)
step_time = {p: median(t) for p, t in times.items()}
tokens = x_batch.numel()
print(timing.machine_line())
for p, t in step_time.items():
    print(f"{p}: median training step {t * 1e3:7.1f} ms = {tokens / t:8,.0f} tokens/s "
          f"(section 5's run: {results[p].history['tokens_per_s'][-1]:,.0f} tokens/s)")
speedup = {"matmul": matmul["fp32"] / matmul["bf16"], "training step": step_time["fp32"] / step_time["bf16"]}
print("bf16 speed-up over fp32 (above 1: bf16 is faster): "
      + ", ".join(f"{k} x{v:.2f}" for k, v in speedup.items()))
ratio = speedup["training step"]
verdict = "faster than" if ratio > 1.1 else "slower than" if ratio < 0.9 else "at about the speed of"
closer = abs(np.log(ratio)) < abs(np.log(speedup["matmul"]))
print(f"here bf16 trains {verdict} fp32 (native bf16 instructions: {', '.join(native) or 'none'}); "
      f"the step's ratio is {'closer to' if closer else 'further from'} 1 than the matmul's")

# %% [markdown]
# How to read these numbers, whatever they are on your machine:
#
# - **On a CPU, bf16 pays only with native bf16 instructions.** Check before you switch: on
#   Linux, the `flags` line of `/proc/cpuinfo` lists `avx512_bf16` (bf16 dot products in
#   AVX-512: Intel Xeons since Cooper Lake, AMD since Zen 4) and `amx_bf16` (Intel's AMX matrix
#   units, Xeons since Sapphire Rapids); `timing.cpu_flags()` reads them and
#   `timing.machine_line()` shows them (✓/✗) beside every timing above. With `avx512_bf16`
#   one instruction does twice as many bf16 multiply-adds as an fp32 one does, and the
#   operands take half the bytes; AMX goes much further. There bf16 matrix products and, to a
#   lesser degree, training steps are faster. Without them, bf16 is converted to fp32,
#   multiplied in fp32 and converted back: the product gains nothing and pays for the
#   conversions, so bf16 autocast is *slower* than fp32, on a small CPU possibly several
#   times slower. On such a CPU, train in fp32 and use bf16 only to test code meant for a GPU.
# - **A training step's ratio is usually closer to 1 than a matrix product's** (the last
#   line above says whether it was here). Autocast casts every weight to bf16 at every forward pass, the LayerNorms,
#   softmax and loss stay in fp32, and many operations of a model this small are too small to
#   keep the vector units busy. The step-time ratio is the honest answer for this model on
#   this machine; the load average in the machine line says how much other programs
#   competed for the cores while it was measured.
# - **On a recent GPU the picture changes**: tensor cores multiply fp16/bf16 matrices many
#   times faster than fp32, and halving the bytes moved speeds up the memory-bound operations,
#   so the `gpu` profile typically trains markedly faster with bf16 (Ampere or newer) or fp16
#   plus a GradScaler (older cards).
# - **Memory** savings are real everywhere, but smaller than a factor of two, as measured above.

# %% [markdown]
# ## 7. Two mistakes in the source material
#
# The course's mixed-precision script chose the autocast context like this (in essence):
#
# ```python
# ctx = nullcontext() if device_type == "cpu" else torch.amp.autocast(device_type=device_type, dtype=ptdtype)
# ptdtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
# ```
#
# `ptdtype` is used one line before it is defined. Run in that order, the script stops at once:

# %%
from contextlib import nullcontext

source_order = '''
ctx = nullcontext() if device_type == "cpu" else torch.amp.autocast(device_type=device_type, dtype=ptdtype)
ptdtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
'''
try:
    exec(source_order, {"torch": torch, "nullcontext": nullcontext,
                        "device_type": "cuda", "dtype": "bfloat16"})
except NameError as err:
    print("NameError:", err)

# %% [markdown]
# (On the CPU branch the bug hides, because `nullcontext()` never reads `ptdtype`: the CPU
# simply never got mixed precision.) `course_utils.amp.autocast(device, precision)` looks the
# dtype up first, validates the combination, and works on both devices.
#
# The second mistake is a spelling that still works but is deprecated: `torch.cuda.amp.autocast`
# and `torch.cuda.amp.GradScaler`. The current API is device-generic, `torch.amp.autocast(
# "cuda", ...)` and `torch.amp.GradScaler("cuda")`. PyTorch says so itself:

# %%
import warnings

with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    torch.cuda.amp.autocast()
    torch.cuda.amp.GradScaler()
for w in caught:
    if "deprecated" in str(w.message):
        print(f"{type(w.message).__name__}: {w.message}")

# %% [markdown]
# > **Pitfalls.**
# >
# > - **fp16 without a GradScaler**: small gradients underflow to 0 (section 2) and training
# >   quietly stalls. Use `precision="fp16"` only with the scaler (`amp.grad_scaler` enables it).
# >   bf16 needs no scaler: do not add one "to be safe", it only costs time.
# > - **16-bit weights**: `model.half()` stores the weights themselves in 16 bits and small
# >   updates vanish (section 1). Keep the weights and optimizer in fp32 and let autocast cast.
# > - **Clipping scaled gradients**: call `scaler.unscale_(optimizer)` before
# >   `clip_grad_norm_`, or you clip gradients that are $S$ times too large.
# > - **Autocast around too much**: wrap the forward pass and the loss; the backward pass
# >   reuses the dtypes chosen in forward and must not be inside the context.
# > - **A skipped step is not a bug**: a GradScaler skips a step whenever it finds `inf`; many in
# >   a row mean the loss itself is blowing up.
# > - **Checkpoints**: save the scaler's state with the model and optimizer (our checkpoints do),
# >   or a resumed fp16 run restarts its scale search.
# > - **The source's mistakes**: `ptdtype` used before it is defined, and the deprecated
# >   `torch.cuda.amp.*` where `torch.amp.*` is meant (section 7).
# > - **Timing claims**: "AMP makes training 2-3x faster" is a GPU statement. Measure on your
# >   hardware, as section 6 does, before you believe it.

# %% [markdown]
# ## Exercises
#
# **Exercise 07.1.** Write `max_exact_integer(dtype)`: the largest integer $N$ such that every
# integer from 0 to $N$ is represented exactly in `dtype` (an `int`). Hint: with $M$ mantissa
# bits, integers are exact up to $2^{M+1}$; `torch.finfo(dtype).eps` is $2^{-M}$.

# %%
from course_utils.exercises import ch07


def max_exact_integer(dtype):
    raise NotImplementedError


_ = ch07.check_max_exact_integer(max_exact_integer)


# %% tags=["hide-cell"]
# NBVAL_CHECK_OUTPUT
def max_exact_integer(dtype):
    return int(2 / torch.finfo(dtype).eps)


_ = ch07.check_max_exact_integer(max_exact_integer)
print({name: max_exact_integer(dt) for name, dt in amp.DTYPES.items()})


# %% [markdown]
# **Exercise 07.2.** Write `largest_safe_scale(grads)`: the largest power of two $2^k$ ($k$ an
# integer, possibly negative) such that no entry of `grads * 2**k` exceeds fp16's maximum
# (65504) in absolute value. Return a float. This is the top of the window of section 2.

# %%
def largest_safe_scale(grads):
    raise NotImplementedError


_ = ch07.check_largest_safe_scale(largest_safe_scale)


# %% tags=["hide-cell"]
import math


def largest_safe_scale(grads):
    peak = grads.abs().max().item()
    return 2.0 ** math.floor(math.log2(torch.finfo(torch.float16).max / peak))


_ = ch07.check_largest_safe_scale(largest_safe_scale)
print(f"for the GPT's gradients of section 2: 2^{int(math.log2(largest_safe_scale(nonzero)))}")


# %% [markdown]
# **Exercise 07.3.** Write GradScaler's update rule, `update_scale(scale, found_inf,
# good_steps, growth_factor=2.0, backoff_factor=0.5, growth_interval=2000)`, returning
# `(new_scale, new_good_steps)`: an overflow multiplies the scale by `backoff_factor` and
# resets the count of clean steps; a clean step adds one to the count, and when the count
# reaches `growth_interval` the scale is multiplied by `growth_factor` and the count restarts
# at 0. The checker also compares you with PyTorch's own kernel.

# %%
def update_scale(scale, found_inf, good_steps, growth_factor=2.0, backoff_factor=0.5,
                 growth_interval=2000):
    raise NotImplementedError


_ = ch07.check_update_scale(update_scale)


# %% tags=["hide-cell"]
def update_scale(scale, found_inf, good_steps, growth_factor=2.0, backoff_factor=0.5,
                 growth_interval=2000):
    if found_inf:
        return scale * backoff_factor, 0
    good_steps += 1
    if good_steps == growth_interval:
        return scale * growth_factor, 0
    return scale, good_steps


_ = ch07.check_update_scale(update_scale)

# %% [markdown]
# ## Summary
#
# - fp16 has 10 mantissa bits but a range of only $6 \times 10^{-8}$ to 65504; bf16 keeps fp32's
#   range with 7 mantissa bits. We derived both from the bit layout and checked `torch.finfo`.
# - Real GPT gradients partly fall below fp16's range; loss scaling lifts them back, and
#   `torch.amp.GradScaler` finds the scale by halving on overflow and doubling after clean
#   steps. bf16 needs none of it.
# - `torch.autocast` runs matrix products in 16 bits and keeps weights, gradients, norms and the
#   loss in fp32. `course_utils.amp.autocast(device, precision)` and `grad_scaler` are what
#   the training loop uses; `TrainConfig(precision="bf16")` switches a run over.
# - bf16 training followed the fp32 curve at first, then took its own path; the final
#   validation losses differed by far more than rounding, by an amount section 5 printed and
#   translated into steps of progress. One short run per precision cannot say whether bf16
#   helped or hurt: compare several seeds before concluding either way.
# - bf16's speed on a CPU depends on native bf16 instructions (`avx512_bf16`, `amx_bf16` in
#   `timing.cpu_flags()`): with them it can be faster, without them it is slower than fp32.
#   Section 6 measured it on this machine. The activation memory shrank, but by less than
#   half: measure before you believe.
#
# From here the book turns from training the model to using it: sampling text from it (with a
# KV cache that makes generation fast), and quantization, which stores the weights in even
# fewer bits (int8) for inference. Mixed precision also combines with chapter 06:
# `python -m course_utils.ddp --precision bf16` trains data-parallel in bf16.
