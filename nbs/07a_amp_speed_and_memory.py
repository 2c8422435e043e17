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
# # 07a · Going further: speed and memory, measured
#
# Fewer bits per number should mean less memory and more speed. Chapter 07 showed what bf16
# autocast does to the numbers and to the loss curves; this deep dive measures what it buys,
# on the machine at hand: the activation memory of a training step, then the speed of a
# matrix product and of a whole training step, fp32 against bf16, timed side by side. It
# assumes chapter 07's formats (fp32, bf16, fp16 and their bit layouts), what
# `torch.autocast` runs in 16 bits, and `course_utils.amp.autocast(device, precision)`.
#
# **Learning goals**
#
# - count the activation memory of a training step with a saved-tensors hook, and explain
#   why bf16 saves less than half of it;
# - time two variants honestly: interleaved repeats, and the ratio with its range;
# - read a CPU's flags to predict whether bf16's matrix products will be faster or slower than
#   fp32's, and explain why a whole training step gains less.

# %%
from course_utils import config, plots, timing

plots.setup()                # CJK font for Chinese labels
profile = config.get_profile()
print(config.summary(profile))
print(timing.machine_line())   # the bf16 flags (avx512_bf16, amx_bf16) decide bf16's speed
config.seed_everything(0)

# %% [markdown]
# ## 1. Memory: the activations saved for the backward pass
#
# The activations autograd saves for the backward pass dominate a training step's memory,
# and we can count their bytes on any device with a saved-tensors hook:
# `torch.autograd.graph.saved_tensors_hooks(pack, unpack)` calls `pack` on every tensor the
# forward pass saves. We use chapter 07's GPT and one batch of the profile's size.

# %%
import torch

from course_utils import amp, artifacts
from course_utils.batches import WindowBatches
from course_utils.model import GPT, GPTConfig

vocab = artifacts.news_vocab()
source = WindowBatches(artifacts.news_tokens("train"), profile.batch_size, profile.block_size)
model = GPT(GPTConfig(vocab_size=len(vocab), **profile.model_kwargs()))
x_batch, y_batch = source.get(0)


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
config.claim(f"bf16 saves activation memory, but less than half of it "
             f"({saved['bf16'] / saved['fp32']:.2f} of fp32's bytes)", saved["bf16"] > saved["fp32"] / 2)

# %% [markdown]
# Not one half. To see why, we count the saved bytes by dtype with a hook of our own (the same
# count as `amp.saved_activation_bytes`: each saved tensor once, parameters not at all) and
# list the largest saved tensors of the bf16 step:

# %%
from collections import Counter


def saved_by_dtype(fn):
    bytes_by_dtype, largest, seen = Counter(), [], set()

    def pack(t):
        key = (t.data_ptr(), t.dtype, tuple(t.shape), t.stride())
        if key not in seen and not isinstance(t, torch.nn.Parameter):
            seen.add(key)
            bytes_by_dtype[t.dtype] += t.numel() * t.element_size()
            largest.append((t.numel() * t.element_size(), tuple(t.shape), t.dtype))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return bytes_by_dtype, sorted(largest, reverse=True)[:3]


by_dtype, largest = saved_by_dtype(one_forward("bf16"))
print("bf16 step, saved bytes by dtype:",
      ", ".join(f"{dt}: {n / 2**20:.1f} MiB" for dt, n in by_dtype.most_common()))
for n, shape, dt in largest:
    print(f"  {n / 2**20:6.1f} MiB  {shape} {dt}")
assert sum(by_dtype.values()) == saved["bf16"]   # = course_utils.amp's count
config.claim(f"in the bf16 step most saved bytes are still fp32 "
             f"({by_dtype[torch.float32] / saved['bf16']:.0%})",
             by_dtype[torch.float32] > by_dtype[torch.bfloat16])

# %% [markdown]
# Autocast saves the bf16 copies of the inputs of each matrix product, but the LayerNorms,
# the residual stream and the loss stay fp32, and so does what they save. The loss is the
# largest piece: our model computes it from fp32 logits, a $B \times T \times |V|$ tensor,
# large with 4.7k characters (the shapes above). On a GPU, `torch.cuda.max_memory_allocated()`
# measures the whole step's memory directly:

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
# ## 2. Speed: one matrix product
#
# What the CPU offers matters, so the setup cell printed it: `timing.machine_line` gives
# the CPU model, cores, torch threads, the load average (other programs competing for the
# cores) and the CPU flags that decide which speed-ups exist (✓ present, ✗ absent);
# `timing.cpu_flags()` returns the flags as a dict. First the raw operation, a 1024 × 1024
# matrix product in each precision. On a shared machine the speed changes from moment to
# moment, so `timing.time_interleaved` alternates the two variants, repeat after repeat,
# and `timing.paired_ratio` compares them within each repeat: the median ratio, and its
# range over the repeats.

# %%
import numpy as np
from tqdm.auto import tqdm

native = [flag for flag, present in timing.cpu_flags(("avx512_bf16", "amx_bf16")).items() if present]
print(f"CPU vector capability seen by PyTorch: {torch.backends.cpu.get_cpu_capability()}; "
      f"native bf16 instructions: {', '.join(native) or 'none (or not Linux)'}")
mats = {name: torch.randn(1024, 1024, dtype=amp.DTYPES[name]) for name in ("fp32", "bf16")}
repeats = {"ci": 3, "cpu": 15, "gpu": 30}[profile.name]
with tqdm(total=2 * repeats, desc="matmuls") as bar:
    matmul = timing.time_interleaved({n: (lambda a=a: a @ a) for n, a in mats.items()}, repeats,
                                     on_round=bar.update)
for name, seconds in matmul.items():
    t = float(np.median(seconds))
    print(f"{name} 1024x1024 matmul: median {t * 1e3:6.2f} ms = {2 * 1024**3 / t / 1e9:6.1f} GFLOP/s "
          f"(torch threads: {torch.get_num_threads()})")


def bf16_speed(seconds):
    """bf16's speed relative to fp32 in each repeat (above 1: bf16 is faster), and in words."""
    r = [f / b for f, b in zip(seconds["fp32"], seconds["bf16"], strict=True)]
    side = ("faster in every repeat" if min(r) > 1 else "slower in every repeat" if max(r) < 1
            else "faster in some repeats, slower in others")
    return float(np.median(r)), f"bf16 at x{np.median(r):.2f} the speed of fp32 (repeats x{min(r):.2f} to x{max(r):.2f}): {side}"


matmul_ratio, words = bf16_speed(matmul)
print("matmul:", words)

# %% [markdown]
# ## 3. Speed: whole training steps
#
# Then whole training steps of our GPT (forward, backward, AdamW) at the profile's batch
# size, one fresh model per precision, again interleaved step by step. Chapter 07's training
# runs also printed tokens per second, but each precision ran at its own time, so a change
# in the machine's load between them would bias the comparison; here it cannot.

# %%
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
    return step


repeats = {"ci": 2, "cpu": 8, "gpu": 20}[profile.name]
with tqdm(total=2 * repeats, desc="training steps") as bar:
    step_times = timing.time_interleaved({p: make_step(p) for p in ("fp32", "bf16")}, repeats,
                                         on_round=bar.update)   # one untimed warm-up step each
tokens = x_batch.numel()
for p, seconds in step_times.items():
    t = float(np.median(seconds))
    print(f"{p}: median training step {t * 1e3:7.1f} ms = {tokens / t:8,.0f} tokens/s "
          f"(torch threads: {torch.get_num_threads()})")
step_ratio, words = bf16_speed(step_times)
print("training step:", words)
closer = abs(np.log(step_ratio)) < abs(np.log(matmul_ratio))
print(f"the step's ratio (x{step_ratio:.2f}) is {'closer to' if closer else 'further from'} 1 "
      f"than the matmul's (x{matmul_ratio:.2f})")

# %% [markdown]
# How to read these numbers, whatever they are on your machine:
#
# - **On a CPU, bf16 pays only with native bf16 instructions.** Check before you switch: on
#   Linux, the `flags` line of `/proc/cpuinfo` lists `avx512_bf16` (bf16 dot products in
#   AVX-512: Intel Xeons since Cooper Lake, AMD since Zen 4) and `amx_bf16` (Intel's AMX matrix
#   units, Xeons since Sapphire Rapids); `timing.cpu_flags()` reads them and
#   `timing.machine_line` shows them (✓/✗) in the setup cell. With `avx512_bf16`
#   one instruction does twice as many bf16 multiply-adds as an fp32 one does, and the
#   operands take half the bytes; AMX goes much further. There bf16 matrix products are
#   faster; a whole training step gains much less, if anything (next point). Without them,
#   bf16 is converted to fp32, multiplied in fp32 and converted back: the product gains
#   nothing and pays for the conversions, so bf16 autocast is *slower* than fp32, on a small
#   CPU possibly several times slower. On such a CPU, train in fp32 and use bf16 only to test
#   code meant for a GPU.
# - **A training step gains less than its matrix products.** Autocast casts every weight to
#   bf16 at every forward pass, the LayerNorms, softmax and loss stay in fp32, and many
#   operations of a model this small are too small to keep the vector units busy. So the
#   step's ratio usually lies much closer to 1 than the product's, and it falls below 1 when
#   the casts cost more than the faster products save (the lines above print both ratios for
#   the machine that ran them). The step-time ratio is the honest answer for this model on
#   this machine.
# - **On a recent GPU the picture changes**: tensor cores multiply fp16/bf16 matrices many
#   times faster than fp32, and halving the bytes moved speeds up the memory-bound operations,
#   so the `gpu` profile typically trains markedly faster with bf16 (Ampere or newer) or fp16
#   plus a GradScaler (older cards).
# - **Memory** savings are real everywhere, but smaller than a factor of two (section 1).

# %% [markdown]
# > **Pitfalls.**
# >
# > - **Timing one run of each variant**, one after the other: a change in the machine's load
# >   between them shows up as a speed difference. Interleave the variants and look at the
# >   range of the per-repeat ratios, not only at one number.
# > - **Timing the first call**: it pays for allocations, kernel selection and caches. One
# >   untimed warm-up call per variant (`time_interleaved`'s `warmup`) keeps it out.
# > - **Trusting "AMP makes training 2-3x faster" on a CPU**: that is a GPU statement. Read
# >   the CPU flags, then measure.
# > - **Expecting half the memory**: only the inputs of the matrix products are saved in 16
# >   bits; the loss, the norms and the residual stream stay in fp32.

# %% [markdown]
# ## Summary
#
# - A saved-tensors hook counts a training step's activation memory on any device: bf16
#   autocast cut it, but by less than half, because most of the saved bytes stay fp32, the
#   loss's logits first.
# - Timed side by side, repeat after repeat, a matrix product and a training step show what
#   bf16 buys on this CPU: the flags `avx512_bf16` and `amx_bf16` predict whether its matrix
#   products are faster or slower than fp32's, and a whole training step's ratio usually lies
#   much closer to 1 than the product's.
# - On a GPU with tensor cores the same code trains markedly faster in bf16 or fp16, which is
#   where mixed precision earns its name; on a CPU without native bf16, train in fp32.
#
# Back to [chapter 07](07_amp.ipynb), or on to chapter 08, sampling.
