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
# really runs in 16 bits, and trains the GPT in bfloat16 next to float32 from several seeds;
# a deep dive measures what it buys in speed and memory on the hardware at hand.
#
# **Learning goals**
#
# - read the range and precision of fp32, fp16 and bf16 from their bit layouts (and `torch.finfo`);
# - see small gradients underflow in fp16 and rescue them with loss scaling; explain what a
#   `GradScaler` does at each step;
# - know which operations `torch.autocast` runs in 16 bits and which it keeps in fp32;
# - train with `precision="bf16"` and compare it with fp32 over several seeds;
# - know when bf16 saves time and memory, and why it can be slower on a CPU.

# %%
from course_utils import config, plots, timing

plots.setup()                # CJK font for Chinese labels
profile = config.get_profile()
print(config.summary(profile))
print(timing.machine_line())   # section 5 reports tokens/s; the bf16 flags decide its speed
config.seed_everything(0)

# %% [markdown]
# ## 1. Three formats, bit by bit
#
# A floating-point number is $(-1)^s \times 1.m \times 2^{e - \text{bias}}$: a sign bit, an
# exponent of $E$ bits (which sets the **range**) and a mantissa of $M$ bits (which sets the
# **precision**, the spacing between neighbouring numbers, $\varepsilon = 2^{-M}$ relative).
#
# ![The bits of pi in fp32, bf16 and fp16: one sign bit, then 8, 8 and 5 exponent bits, then 23, 7 and 10 mantissa bits; fp32 stores 3.14159274, bf16 and fp16 both 3.140625](../book/images/number_formats.png)
#
# *π in fp32 (float32, 4 bytes), bf16 (bfloat16, "brain float", 2 bytes) and fp16 (float16,
# "half", 2 bytes): the bits are torch's own, read back with `view(torch.int32)` or
# `view(torch.int16)`, and the ranges come from `torch.finfo` (`book/images/make_number_formats.py`).*
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
config.claim(f"over a fifth of the gradients land among fp16's subnormals ({subnormal:.1%}), and a "
             f"thin tail, under 1%, becomes 0 ({lost:.2%})", subnormal > 0.2 and 0 < lost < 0.01)

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
# Every `Linear` (attention projections, MLP, the tied output head) runs in bf16; the
# embeddings and LayerNorms see the fp32 residual stream (its additions mix bf16 and fp32,
# so they promote to fp32) and stay fp32; our model computes the loss from `logits.float()`;
# parameters and gradients stay fp32, so the optimizer is untouched: the "mixed" in AMP.
#
# ## 5. Training in bf16: the loss curves, over several seeds
#
# The same model trained with `precision="fp32"` and `precision="bf16"` by the book's loop,
# for the first `steps` steps of chapter 05's schedule (warm-up, then the start of the
# cosine): far enough to leave the unigram plateau. One pair of runs cannot say whether bf16
# trains better or worse: any perturbation (another seed, batch order, even a thread count
# that reorders fp32 sums) sends training down a different path. So we train each precision
# from a few seeds (a seed fixes the initial weights and batch order of both precisions) and
# measure each seed's gap in steps of fp32's own progress.

# %%
import time

from tqdm.auto import tqdm

from course_utils.evaluation import unigram_loss
from course_utils.train import TrainConfig, train

steps = {"ci": profile.max_steps, "cpu": 150, "gpu": 2000}[profile.name]
seeds = {"ci": [0, 1], "cpu": [0, 1, 2], "gpu": [0, 1, 2]}[profile.name]
unigram = unigram_loss(train_tokens, val_tokens, len(vocab))
val_source = WindowBatches(val_tokens, profile.batch_size, profile.block_size, seed=1)
results, wall = {}, {}  # (precision, seed) -> the run, its seconds
with tqdm(total=2 * len(seeds), desc="training runs") as bar:
    for seed in seeds:
        for precision in ("fp32", "bf16"):
            config.seed_everything(seed)
            net = GPT(GPTConfig(vocab_size=len(vocab), **profile.model_kwargs()))
            cfg = TrainConfig.from_profile(  # chapter 05's schedule, stopped after `steps`
                profile, eval_interval=max(1, steps // 3), eval_iters=10,
                log_interval=max(1, steps // 30), precision=precision, progress=False,
                fused_loss=False, fused_adamw=False, compiled=False)  # the plain step
            batches = WindowBatches(train_tokens, profile.batch_size, profile.block_size, seed=seed)
            t0 = time.perf_counter()
            results[precision, seed] = train(net, batches, cfg, val_source=val_source, stop_at=steps)
            wall[precision, seed] = time.perf_counter() - t0
            bar.update()
final = {key: res.history["val_loss"][-1] for key, res in results.items()}
for (precision, seed), res in results.items():
    print(f"seed {seed} {precision}: final validation loss {final[precision, seed]:.4f}, "
          f"{res.history['tokens_per_s'][-1]:,.0f} tokens/s, {wall[precision, seed]:.1f} s")

# %%
fig, ax = plt.subplots(figsize=(8, 3.6))
for precision, color in (("fp32", "#3b78b8"), ("bf16", "#c77a1a")):
    for seed in seeds:
        h, first = results[precision, seed].history, seed == seeds[0]
        ax.plot(h["step"], h["loss"], color=color, lw=1, alpha=0.6,
                label=f"{precision} train (batch), one line per seed" if first else None)
        ax.plot(h["eval_step"], h["val_loss"], "o--", color=color, ms=4,
                label=f"{precision} validation" if first else None)
ax.axhline(unigram, color="#777", ls=":", label="unigram baseline (validation)")
ax.set_xlabel("step")
ax.set_ylabel("cross-entropy (nats / character)")
ax.set_title(f"fp32 vs bf16 autocast, {len(seeds)} seeds (profile {profile.name})")
ax.legend(fontsize=8)
plt.show()

# %%
pairs = [(results["fp32", s].history, results["bf16", s].history) for s in seeds]
start = max(abs(h16["loss"][0] - h32["loss"][0]) for h32, h16 in pairs)
drift = max(max(abs(a - b) for a, b in zip(h16["loss"], h32["loss"], strict=True)) for h32, h16 in pairs)
gaps = np.array([final["bf16", s] - final["fp32", s] for s in seeds])  # > 0: bf16 ended higher
# fp32's progress over its last evaluation interval, in nats per step (mean over the seeds)
rate = np.mean([(h32["val_loss"][-2] - h32["val_loss"][-1]) / (h32["eval_step"][-1] - h32["eval_step"][-2])
                for h32, _ in pairs])
spread = max(final["fp32", s] for s in seeds) - min(final["fp32", s] for s in seeds)
print("bf16 - fp32, final validation loss, per seed: " + ", ".join(f"{g:+.4f}" for g in gaps)
      + f"; in steps of fp32's progress at the end ({rate:.4f} nats/step): "
      + ", ".join(f"{g / rate:+.1f}" for g in gaps))
print(f"fp32's final loss over the {len(seeds)} seeds spans {spread:.4f} nats")
config.claim(f"in every seed the two precisions start alike (first logged losses within "
             f"{start:.4f}) and then drift apart (by up to {drift:.4f})", start < 0.005 < drift)
config.claim(f"every run ends below the unigram baseline (the highest at {max(final.values()):.4f} "
             f"< {unigram:.4f})", max(final.values()) < unigram)
config.claim(f"in every seed bf16 ends within 5 steps of fp32's progress (at most "
             f"{np.abs(gaps).max() / rate:.1f} steps)", rate > 0 and np.abs(gaps).max() < 5 * rate)

# %% [markdown]
# Within a seed the two runs start from the same weights and batches, and their first
# logged losses differ only in the rounding. Then they drift apart: bf16's rounding in the
# matrix products changes every step a little, the differences compound, and the runs follow
# different paths. They still end close: in every seed, bf16's final validation loss is
# within five steps' worth of fp32's progress at the end (the last claim). Three seeds cannot
# say which precision ends lower: even if bf16 made no difference at all, all three gaps
# would fall on the same side one time in four, so gaps of one sign are weak evidence either
# way. bf16 autocast trains this model as well as fp32 to within a few steps; a smaller
# difference would take many more seeds, or longer runs, to resolve. At larger scale it is
# usually found to learn as well as fp32, hence the default on hardware that supports it.
#
# **Speed and memory.** The tokens per second beside each run are only a rough guide: the
# runs did not alternate, so a change in the machine's load can pass for one of precision.
# bf16's speed depends on the CPU's native bf16 instructions, listed in the setup cell
# (`avx512_bf16`, `amx_bf16`). Without them every bf16 product is converted to fp32 and back,
# and bf16 is slower. With them bf16's matrix products are faster, but a whole step of this
# small model gains much less, if anything: autocast casts every weight to bf16 at every
# forward pass, and the LayerNorms, the loss and the optimizer stay fp32, which is also why
# the activations saved for backward shrink by less than half. The deep dive [Going further:
# speed and memory, measured](07a_amp_speed_and_memory.ipynb) counts those bytes and times a
# matrix product and a training step side by side.

# %% [markdown]
# ## 6. Two mistakes in the source material
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
# >   `torch.cuda.amp.*` where `torch.amp.*` is meant (section 6).
# > - **Timing claims**: "AMP makes training 2-3x faster" is a GPU statement. Measure on your
# >   hardware, as the deep dive 07a does, before you believe it.

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
# - bf16 training follows the fp32 curve at first, then takes its own path; in every seed it
#   ended within a few steps' worth of fp32's progress (section 5): at this scale bf16 trains
#   as well as fp32, as far as three seeds of a short run can tell.
# - bf16's speed on a CPU depends on native bf16 instructions (`avx512_bf16`, `amx_bf16`): with
#   them its matrix products are faster (a whole step of this small model gains much less),
#   without them bf16 is slower than fp32. The deep dive 07a measures speed and memory here.
#
# From here the book turns from training the model to using it: sampling text from it (with a
# KV cache that makes generation fast), and quantization, which stores the weights in even
# fewer bits (int8) for inference. Mixed precision also combines with chapter 06:
# `python -m course_utils.ddp --precision bf16` trains data-parallel in bf16.
