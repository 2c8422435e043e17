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
# # 05 · Training: the loop, the schedule, and pretraining on the news
#
# Chapter 04 gave us a GPT that maps token ids to next-token logits, but with random weights
# its predictions are no better than a uniform guess over 4.7 thousand characters. Training
# (训练) is what turns it into a language model: show it a batch of text, measure how
# surprised it was by each next character (the cross-entropy loss), compute how every weight
# should move to be less surprised (backpropagation), and move the weights a little
# (the optimizer step). Repeated a few thousand times on People's Daily news, this loop
# produces the pretrained model (预训练模型) that every later chapter samples from,
# quantizes, serves and fine-tunes. In this chapter we write the loop by hand, then use the
# book's one training loop, `course_utils.train.train`, which adds a learning-rate schedule,
# evaluation, checkpoints and exact resumption, and with it we run the pretraining of the book.
#
# **Learning goals**
#
# - write a training step by hand: forward, loss, backward, gradient clipping, optimizer step,
#   zeroing the gradients, and check it against `course_utils.train.train`;
# - explain AdamW's two parameter groups and the warm-up + cosine learning-rate schedule;
# - pretrain the GPT on the news corpus and read its loss curves, its perplexity and its
#   samples against a unigram baseline;
# - explain why the book packs its text into full windows instead of padding sentences;
# - save checkpoints, resume a stopped run exactly, and recognise a mismatched checkpoint.

# %%
from course_utils import config, plots, timing

plots.setup()                # CJK font for Chinese labels
profile = config.get_profile()
print(config.summary(profile))
print(timing.machine_line())   # section 6 times the pretraining run
config.seed_everything(0)

# %% [markdown]
# ## 1. Batches that depend only on the step
#
# We pretrain on the packed token stream of chapter 02: every news paragraph encoded and
# joined by `<sep>`, split 90/10 *by paragraph* into a training and a validation stream.
# `course_utils.artifacts` builds both once and caches them.

# %%
# NBVAL_CHECK_OUTPUT
import math
import time

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from course_utils import artifacts
from course_utils import train as T
from course_utils.batches import WindowBatches

vocab = artifacts.news_vocab()
train_tokens, val_tokens = artifacts.news_tokens("train"), artifacts.news_tokens("val")
print(f"vocabulary: {len(vocab)} tokens | training stream: {len(train_tokens):,} tokens | "
      f"validation stream: {len(val_tokens):,} tokens")

# %% [markdown]
# A *batch source* hands out the `(x, y)` batch of a training step. `WindowBatches` cuts
# `batch_size` random windows of `block_size + 1` tokens from the stream; `y` is `x` shifted
# left by one, so every position has a next character to predict. The window offsets are
# drawn from a generator seeded with `(seed, step)`: the batch of step 1234 is the same
# whether we get there in one run or after a restart, which is what makes exact resumption
# (section 8) and splitting a batch over several GPUs (chapter 06) simple.

# %%
device = config.get_device()
train_src = WindowBatches(train_tokens, profile.batch_size, profile.block_size, seed=0)
val_src = WindowBatches(val_tokens, profile.batch_size, profile.block_size, seed=1)

x, y = train_src.get(0)
print("x:", tuple(x.shape), "y:", tuple(y.shape), x.dtype)
print("x[0]:", vocab.decode(x[0, :24].tolist()))
print("y[0]:", vocab.decode(y[0, :24].tolist()))
assert torch.equal(x[:, 1:], y[:, :-1])        # y is x shifted by one token
assert torch.equal(train_src.get(0)[0], x)     # a step always gets the same batch
assert not torch.equal(train_src.get(1)[0], x)  # and the next step another one

# %% [markdown]
# ## 2. One training step, by hand
#
# ![One training step as a loop: schedule, batch, forward, loss, backward, clip, AdamW step, zero_grad; below, the learning rate warming up linearly then decaying along a cosine](../book/images/training_step.png)
#
# *One step of `course_utils.train.train`, and the learning-rate schedule it follows, computed with `lr_at` under the `cpu` profile.*
#
# The model's loss is the mean cross-entropy of the true next token $y_t$ under the
# predicted distribution, over the $N$ real (non-`<pad>`) targets of the batch:
#
# $$\mathcal{L} = -\frac{1}{N}\sum_{t} \log p_\theta(y_t \mid x_{\le t}).$$
#
# A freshly initialised GPT has tiny logits, so it predicts an almost uniform distribution
# over the $V$ tokens and its loss should be close to $\log V$. That is our first check.

# %%
from course_utils.model import GPT, GPTConfig

config.seed_everything(0)
model_cfg = GPTConfig(vocab_size=len(vocab), **profile.model_kwargs())
model = GPT(model_cfg)
print(f"GPT with {model.num_parameters():,} parameters")

logits, loss = model(x, y)                     # 1. forward pass, 2. loss
print("logits:", tuple(logits.shape), f"| loss {loss.item():.3f} | log V = {math.log(len(vocab)):.3f}")
assert abs(loss.item() - math.log(len(vocab))) < 0.5

# %% [markdown]
# `loss.backward()` fills `p.grad` for every parameter. Before using the gradients we *clip*
# their global norm $\lVert g\rVert = \sqrt{\sum_p \lVert g_p\rVert^2}$ to at most 1: a rare
# batch with a huge gradient then cannot throw the weights far away.
# `clip_grad_norm_` rescales the gradients in place and returns the norm they had before.

# %%
loss.backward()                                                         # 3. backward
norm_before = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)    # 4. clip
norm_after = torch.sqrt(sum((p.grad ** 2).sum() for p in model.parameters()))
print(f"gradient norm: {norm_before:.3f} before clipping, {norm_after:.3f} after")
assert norm_after <= 1.0 + 1e-4

# %% [markdown]
# The optimizer turns gradients into a weight update. We use AdamW (next section); for now
# one step with every parameter in one group. After the step the gradients are zeroed:
# PyTorch *adds* new gradients to `p.grad`, so forgetting this line silently sums the
# gradients of all past batches. The loss on the same batch should now be a little lower.

# %%
optimizer = torch.optim.AdamW(model.parameters(), lr=profile.lr)
before = model.tok_emb.weight.detach().clone()
optimizer.step()                                # 5. update the weights
optimizer.zero_grad(set_to_none=True)           # 6. forget this batch's gradients

with torch.no_grad():
    _, loss_after = model(x, y)
print(f"largest change of an embedding weight: {(model.tok_emb.weight - before).abs().max():.2e}"
      f" | loss on the same batch: {loss.item():.4f} -> {loss_after.item():.4f}")
assert all(p.grad is None for p in model.parameters())
assert loss_after < loss

# %% [markdown]
# ## 3. AdamW and its two parameter groups
#
# Adam keeps a running mean $m$ and a running mean of squares $v$ of each gradient and moves
# every weight by about $\text{lr}\cdot m/\sqrt{v}$: each weight gets its own step size.
# *Weight decay* pulls weights towards 0, $\theta \leftarrow \theta - \text{lr}\,\lambda\,\theta$;
# AdamW applies it directly to the weights ("decoupled") rather than through the gradient.
#
# Decay makes sense for the matrices (linear layers, embeddings): it keeps them from growing
# without need. It makes no sense for biases and LayerNorm gains, which set offsets and
# scales: pulling a LayerNorm gain towards 0 would switch its feature off. So the
# parameters go in two groups: tensors with 2 or more dimensions are decayed, the 1-D ones
# are not. Let us count them.

# %%
groups = {
    "decay (matrices)": [(n, p) for n, p in model.named_parameters() if p.dim() >= 2],
    "no decay (biases, LayerNorm)": [(n, p) for n, p in model.named_parameters() if p.dim() < 2],
}
rows = [(name, len(params), sum(p.numel() for _, p in params), ", ".join(n for n, _ in params[:3]))
        for name, params in groups.items()]
print(pd.DataFrame(rows, columns=["group", "tensors", "parameters", "e.g."]).to_string(index=False))
print("lm_head.weight listed separately?", any(n == "lm_head.weight" for n, _ in model.named_parameters()))
assert sum(r[2] for r in rows) == model.num_parameters()
assert rows[1][2] < 0.01 * model.num_parameters()  # the next paragraph: under 1% is not decayed

# %% [markdown]
# The output head shares its matrix with the token embedding (weight tying, chapter 04), and
# `named_parameters()` lists a shared tensor once, so it is decayed once. Most parameters
# sit in matrices; the no-decay group holds under 1% of them.
# `course_utils.train.configure_optimizer` builds exactly these groups:

# %%
opt = T.configure_optimizer(model, T.TrainConfig(weight_decay=0.1, progress=False))
for group, (name, params) in zip(opt.param_groups, groups.items(), strict=True):
    same = [id(p) for p in group["params"]] == [id(p) for _, p in params]
    print(f"{name:30s} weight_decay={group['weight_decay']:<4} same tensors as ours: {same}")
    assert same

# %% [markdown]
# ## 4. The learning-rate schedule: warm-up, then cosine decay
#
# At the start Adam's running means $m, v$ are built from very few gradients and are
# unreliable, so large steps are risky: we *warm up*, raising the learning rate linearly
# over the first $W$ steps. Afterwards we lower it along a half cosine to a floor
# $\text{lr}_{\min} = 0.1\,\text{lr}_{\max}$ at the last step $S$: big steps while the loss
# falls fast, small ones to settle at the end.
#
# $$\text{lr}(s) = \begin{cases} \text{lr}_{\max}\,\dfrac{s+1}{W} & s < W \\[6pt]
# \text{lr}_{\min} + \tfrac12(\text{lr}_{\max}-\text{lr}_{\min})\left(1+\cos\left(\pi\,\dfrac{s-W}{S-W}\right)\right) & s \ge W
# \end{cases}$$

# %%
cfg = T.TrainConfig.from_profile(profile, progress=False)
steps = np.arange(cfg.max_steps + 1)
lrs = [T.lr_at(int(s), cfg) for s in steps]
fig, ax = plt.subplots(figsize=(7, 3))
ax.plot(steps, lrs)
ax.axvline(cfg.warmup_steps, color="gray", ls=":", label=f"end of warm-up ({cfg.warmup_steps} steps)")
ax.set(title=f"Learning rate of the pretraining run (profile {profile.name})", xlabel="step",
       ylabel="learning rate")
ax.legend()
plt.show()
print(f"lr at step 0: {lrs[0]:.2e} | at the end of warm-up: {lrs[cfg.warmup_steps]:.2e} | "
      f"at the last step: {lrs[-1]:.2e}")
assert max(lrs) == cfg.lr and lrs[-1] == min(lrs[cfg.warmup_steps:])

# %% [markdown]
# ## 5. The loop, written out, and the book's `train`
#
# Putting the pieces together: for every step, set the scheduled learning rate, get the
# step's batch, forward, backward, clip, step, zero. We run it for a few steps from a fresh,
# seeded model.

# %%
demo_cfg = T.TrainConfig(max_steps=20, lr=profile.lr, warmup_steps=5, eval_interval=20,
                         eval_iters=1, log_interval=1, progress=False)


def run_loop(model, source, cfg):
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        [{"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
         {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}],
        lr=cfg.lr, betas=cfg.betas)
    model.to(device).train()
    losses = []
    for step in range(cfg.max_steps):
        for group in optimizer.param_groups:
            group["lr"] = T.lr_at(step, cfg)
        x, y = source.get(step)
        _, loss = model(x.to(device), y.to(device))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return losses


config.seed_everything(0)
ours = run_loop(GPT(model_cfg), train_src, demo_cfg)
print("loss every 5 steps:", " ".join(f"{v:.3f}" for v in ours[::5]), f"... {ours[-1]:.3f}")
assert ours[-1] < ours[0]

# %% [markdown]
# `course_utils.train.train(model, source, cfg)` runs the same steps. Around them it adds what
# a real run needs: a progress bar, evaluation on fixed batches every `eval_interval` steps,
# checkpoints, resumption, gradient accumulation, mixed precision (chapter 07) and several
# processes (chapter 06). From the same seed and batches it must give the same losses:

# %%
config.seed_everything(0)
result = T.train(GPT(model_cfg), train_src, demo_cfg, device=device)
diff = np.abs(np.array(result.history["loss"]) - np.array(ours)).max()
print(f"{len(ours)} steps, largest loss difference between our loop and train(): {diff:.1e}")
assert result.history["step"] == list(range(1, demo_cfg.max_steps + 1)) and diff < 1e-4

# %% [markdown]
# ## 6. The pretraining run of the book
#
# Now the real thing. `artifacts.pretrained_lm(profile)` trains the profile's GPT on the
# training stream for `profile.max_steps` steps with the schedule above, evaluates on fixed
# training and validation batches every `profile.eval_interval` steps, and caches the result
# (`.cache/pretrained_<profile>.pt`) for later chapters. Here we pass `force=True`, so this
# notebook's run is the one that produces the cached model, and a callback that samples two
# continuations at each evaluation (temperature 0.8, top-k 40; samplers are chapter 08's
# subject), from the same prompts and sampling seed each time, so what changes is the model
# alone. A model of this size, trained for minutes, learns which characters and words tend
# to follow each other, not what they mean: the samples come to use the words and phrases of
# the news without making sense as a whole, and the loss, not any one sample, measures
# progress. Under `cpu` this is one of the longest cells of the book: 2,000 steps, a few
# minutes on a recent laptop CPU, more on an older or busy one (the time is printed at the
# end), with the speed-ups of "Going faster" below turned on (`profile.lm_speedups()`).

# %%
from course_utils import sampling

PROMPTS = ["中国", "今天"]


def show_samples(step, model, history):
    print(f"step {step:5d} | train loss {history['train_loss'][-1]:.3f} | "
          f"val loss {history['val_loss'][-1]:.3f}")
    for prompt in PROMPTS:
        text = sampling.complete(model, vocab, prompt, max_new_tokens=40, temperature=0.8,
                                 top_k=40, seed=0)[0]
        print(f"    {prompt} → {text}")


t0 = time.perf_counter()
lm, vocab, info = artifacts.pretrained_lm(profile, force=True, on_eval=show_samples)
minutes = (time.perf_counter() - t0) / 60
print(f"\n{info['steps']} steps in {minutes:.1f} min (torch threads: {torch.get_num_threads()}); "
      f"cached as {info['path'].name}")
print("speed-ups:", ", ".join(f"{k}={v}" for k, v in profile.lm_speedups().items()),
      "" if config.compiler_available() is None else f"(no compile: {config.compiler_available()})")

# %% [markdown]
# The loss curves come from the run's history: the loss of each training batch (every 10
# steps) and the evaluations on fixed batches. The dashed line is the *unigram baseline*,
# the cross-entropy of a model that ignores the context and always predicts the training
# frequencies of the characters. A language model has learned something from context only
# when it goes below that line. The throughput (right) is averaged from the start: it climbs
# as the slow first steps (compilation, when on) are paid off, and dips after each evaluation.

# %%
h = info["history"]
fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(12, 4))
ax0.plot(h["step"], h["loss"], alpha=0.35, label="training batches")
ax0.plot(h["eval_step"], h["train_loss"], "o-", label="train (fixed eval batches)")
ax0.plot(h["eval_step"], h["val_loss"], "s-", label="validation")
ax0.axhline(info["unigram_loss"], color="gray", ls="--", label="unigram baseline")
ax0.set(title="Pretraining loss", xlabel="step", ylabel="cross-entropy (nats per character)")
ax0.legend()
ax1.plot(h["step"], h["tokens_per_s"])
ax1.set(title="Training throughput", xlabel="step", ylabel="tokens per second", ylim=(0, None))
plt.tight_layout()
plt.show()

# %% [markdown]
# A loss in nats is hard to picture. Its exponential, the *perplexity* (困惑度)
# $e^{\mathcal{L}}$, is the number of equally likely characters the model is, on average,
# hesitating between: the uniform guess has perplexity $V$, a perfect model 1.

# %%
table = pd.DataFrame({"step": h["eval_step"], "train loss": h["train_loss"], "val loss": h["val_loss"]})
table["val perplexity"] = np.exp(table["val loss"])
print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))

val_loss, unigram = info["val_loss"], info["unigram_loss"]
print(f"\nvalidation loss {val_loss:.3f} nats/char = {val_loss / math.log(2):.2f} bits/char, "
      f"perplexity {math.exp(val_loss):.1f}")
print(f"unigram baseline {unigram:.3f} nats/char, perplexity {math.exp(unigram):.1f} | "
      f"uniform guess: perplexity {len(vocab)}")
gap = np.array(h["val_loss"]) - np.array(h["train_loss"])
print(f"validation minus training loss: {gap[0]:+.3f} at step {h['eval_step'][0]}, "
      f"{gap[-1]:+.3f} at step {h['eval_step'][-1]}")
config.claim(f"the validation loss ends more than 0.5 below the unigram baseline ({val_loss:.3f} "
             f"< {unigram:.3f} - 0.5)", val_loss < unigram - 0.5)
config.claim("both losses still fell between the last two evaluations",
             h["val_loss"][-1] < h["val_loss"][-2] and h["train_loss"][-1] < h["train_loss"][-2])
config.claim(f"validation stays above training at every evaluation, and the gap grows "
             f"({gap[0]:+.3f} -> {gap[-1]:+.3f})", bool((gap > 0).all()) and gap[-1] > gap[0])

# %% [markdown]
# Both losses still fell between the last two evaluations (the claims above): the run stops
# while the model is still learning (the `gpu` profile trains a larger model for 20,000
# steps). Validation sits above training at every evaluation and the gap grows: 2,000 steps
# of 32 × 64 targets are about two and a half passes over the 1.7 million training
# characters, and the model fits those better than unseen text, a first sign of overfitting
# (validation itself still improves) that more data or dropout would hold back (`cpu` trains
# without dropout, `gpu` with 0.1). Every evaluation uses the same `eval_iters` fixed batches,
# so successive points can be compared; each is an estimate from a small sample of the text.

# %% [markdown]
# ## 7. Padded sentences or packed windows?
#
# The course trained on single sentences of 16-64 characters, each padded with `<pad>` to a
# fixed length, the loss ignoring the `<pad>` targets (`batches.PaddedLines` of chapter 02,
# batched by `train.DatasetBatches`, which reshuffles every epoch). We pack the stream
# instead (`WindowBatches`, section 1): every position of every window is a real target. A
# padded step costs as much as a packed one, since both push `batch_size × ~block_size`
# positions through the model, so the share of `<pad>` positions is compute spent on
# nothing; and a packed window lets the model read context across sentence boundaries. The
# deep dive [Going further: padded sentences or packed windows](05a_packed_or_padded.ipynb)
# measures that share on the news sentences and trains the GPT both ways from several seeds,
# comparing the two at the same compute and at the same number of real targets.

# %% [markdown]
# ## 8. Checkpoints: keep the last few, resume exactly
#
# A long run must survive a crash, a closed laptop or a job time limit. `train` writes a
# checkpoint (模型检查点) every `checkpoint_interval` steps and at each evaluation: the
# weights, the optimizer's running means, the step, the vocabulary, the history and the
# random-number state. It keeps the last `keep_last` files plus `best.pt`, the lowest
# validation loss so far. Files are written to a temporary name and renamed, so a crash
# mid-save never leaves a half-written checkpoint behind.
#
# To see this cheaply we use a small model with dropout (so the random state matters) and
# train it for 30 steps twice: once straight through, once stopped at step 20 (`stop_at`,
# as if the machine died) and resumed from the checkpoint folder (`resume_from`). It saves
# every 5 steps and keeps the last 3.

# %%
import shutil

ckpt_root = config.cache_dir() / "ch05_checkpoints"
shutil.rmtree(ckpt_root, ignore_errors=True)
small_cfg = GPTConfig(vocab_size=len(vocab), block_size=32, d_model=32, n_heads=2, n_layers=2,
                      d_ff=64, dropout=0.1)
small_train = WindowBatches(train_tokens, 8, 32, seed=0)
small_val = WindowBatches(val_tokens, 8, 32, seed=1)


def small_run(folder, **kwargs):
    config.seed_everything(0)
    cfg = T.TrainConfig(max_steps=30, lr=3e-3, warmup_steps=5, eval_interval=10, eval_iters=2,
                        log_interval=1, checkpoint_dir=str(ckpt_root / folder),
                        checkpoint_interval=5, keep_last=3, progress=False)
    return T.train(GPT(small_cfg), small_train, cfg, val_source=small_val, vocab=vocab, **kwargs)


def listing(folder):
    return ", ".join(f"{p.name} ({p.stat().st_size // 1024} kB)" for p in sorted(folder.iterdir()))


full = small_run("uninterrupted")
stopped = small_run("interrupted", stop_at=20)
print("stopped at step", stopped.step, "| folder:", listing(ckpt_root / "interrupted"))
resumed = small_run("interrupted", resume_from=ckpt_root / "interrupted")
print("resumed to step", resumed.step, "| folder:", listing(ckpt_root / "interrupted"))

# %%
loss_diff = np.abs(np.array(full.history["loss"]) - np.array(resumed.history["loss"])).max()
val_diff = np.abs(np.array(full.history["val_loss"]) - np.array(resumed.history["val_loss"])).max()
print(f"uninterrupted vs stopped + resumed, {len(full.history['loss'])} steps: "
      f"max |Δ training loss| = {loss_diff:.1e}, max |Δ validation loss| = {val_diff:.1e}")
assert resumed.history["step"] == full.history["step"] and loss_diff < 1e-5 and val_diff < 1e-5

fig, ax = plt.subplots(figsize=(7, 3))
ax.plot(full.history["step"], full.history["loss"], lw=4, alpha=0.4, label="uninterrupted")
ax.plot(resumed.history["step"], resumed.history["loss"], "k--", lw=1, label=f"stopped at {stopped.step}, resumed")
ax.axvline(stopped.step, color="gray", ls=":")
ax.set(title="Resuming gives the same run", xlabel="step", ylabel="training batch loss")
ax.legend()
plt.show()

# %% [markdown]
# Exact resumption needs three things besides the weights: the optimizer state (Adam's
# running means, or the first steps after a restart are too large), the random state
# (dropout masks), and batches that depend only on the step number.
#
# A checkpoint records the vocabulary and model configuration it was trained with. Loading
# it with another vocabulary, or into a differently shaped model, fails with a message that
# says what differs, instead of producing nonsense from shuffled ids (the bug of the source
# material, whose vocabulary came out of an unsorted `set`).

# %%
from course_utils import data
from course_utils.checkpoints import CheckpointError, model_from_checkpoint
from course_utils.vocab import Vocab

best = ckpt_root / "interrupted" / "best.pt"
dialogue_vocab = Vocab.build(t for d in data.load_dialogues() for t in d)
short = lambda err: str(err).replace(str(ckpt_root), "<checkpoints>")
try:
    model_from_checkpoint(best, vocab=dialogue_vocab)
except CheckpointError as err:
    print("CheckpointError:", short(err))
try:
    wider = GPT(GPTConfig(**{**small_cfg.to_dict(), "d_model": 64}))
    T.train(wider, small_train, T.TrainConfig(max_steps=30, progress=False), resume_from=best)
except CheckpointError as err:
    print("CheckpointError:", short(err))
model_ok, vocab_ok, _ = model_from_checkpoint(best, vocab=vocab)  # the matching pair loads
assert vocab_ok == vocab
shutil.rmtree(ckpt_root)

# %% [markdown]
# Checkpoints are read with `torch.load(..., weights_only=True)`, which only rebuilds
# tensors and plain data: a checkpoint file from the internet cannot run code on your
# machine when loaded.
#
# **Going faster.** `TrainConfig(compiled=True)` wraps the model in `torch.compile`, which
# fuses operations into larger kernels: the first steps are slow (compilation), later ones
# faster. On a CPU it needs a C++ compiler; without one, `train` says so in one line and runs
# eagerly. The largest single piece of this small GPT's step is the head and the loss: for
# 32 × 64 tokens and 4,690 characters the logits alone are a 38 MB tensor, written, read and
# rewritten several times. `TrainConfig(fused_loss=True)` computes the head, the loss and
# their gradients a chunk of 256 tokens at a time while they sit in the CPU's cache, without
# ever holding all the logits (`model.linear_cross_entropy`: the same arithmetic, up to
# rounding, tested against `F.cross_entropy`). `TrainConfig(fused_adamw=True)` updates all
# parameters in one fused AdamW kernel. `python bench/train_step.py` measures what each of
# these pays on your CPU, alone and together, from the same weights on the same batches;
# `python bench/train_throughput.py` what PyTorch's fused `scaled_dot_product_attention`
# (which our attention uses) gains over the explicit `softmax(QKᵀ)V` of chapter 03. The
# [benchmarks appendix](../book/benchmarks.md) shows the book's runs: together the three paid
# enough that the `cpu` profile turns them on for its language-model training
# (`profile.lm_speedups()`, printed after the pretraining run; `torch.compile` only for runs
# of at least `config.COMPILE_MIN_STEPS` steps, since compiling costs tens of seconds that a
# short run does not earn back), while chapters 06 and 07 keep the plain step, their subject.
#
# **Threads.** On a CPU, PyTorch starts one thread per core by default. On a machine shared
# with other busy programs this can be far *slower* than one thread, because the threads of
# every operation wait for each other whenever one of them is descheduled. If training is
# unexpectedly slow, try `torch.set_num_threads(1)` (or start Jupyter with
# `OMP_NUM_THREADS=1`). The setup cell's output says how many threads produced the outputs
# stored with this notebook, on which CPU and under which load.

# %% [markdown]
# > **Pitfalls.**
# > - *Forgetting `optimizer.zero_grad()`*: `backward()` adds to `p.grad`, so each step's
# >   gradient is the sum of every batch seen so far (in our loop, rescaled to norm at most 1
# >   after each addition): stale gradients, computed for earlier weights on earlier batches,
# >   pull the update away from what the current batch asks for, and training quietly does
# >   worse than it should (nothing crashes). With plain SGD and no clipping the steps would
# >   also keep growing; AdamW's do not, because it divides by the running
# >   root-mean-square of the gradient, so each step stays at most about `lr` per weight
# >   (Kingma & Ba, 2015, section 2.1): the damage is in the direction, not the size. Zero
# >   after the step, not between micro-batches of one step.
# > - *Clipping after `optimizer.step()`* does nothing for the step already taken.
# > - *Evaluating in training mode* (dropout on) or without `torch.no_grad()`: a noisy
# >   loss and wasted memory; and forgetting `model.train()` afterwards trains on without
# >   dropout.
# > - *Averaging per-batch mean losses* when batches hold different numbers of real targets
# >   weights a short batch like a long one; weight by the number of non-`<pad>` targets.
# > - *A learning rate without warm-up* can blow up the first steps of a transformer, and
# >   one that never decays leaves the loss bouncing at the end.
# > - *Resuming with only the weights* (no optimizer state, no random state, batches drawn
# >   from a fresh random generator) gives a different run from the uninterrupted one.
# > - *The source material's checkpoint folder bug*: `if os.path.exists(save_dir):
# >   os.makedirs(save_dir)` tests the wrong way round (it tries to create the folder only
# >   when it already exists); use `mkdir(parents=True, exist_ok=True)`.
# > - *The same order every epoch*: the source material never called
# >   `DistributedSampler.set_epoch`, so every epoch saw the sentences in the same order.
# >   `DatasetBatches` draws the permutation of epoch `e` from `(seed, e)`.
# > - *A vocabulary built from a `set`* has different ids in every process, so a saved model
# >   stops matching it; checkpoints here store the vocabulary and refuse a different one.

# %% [markdown]
# ## Exercises
#
# Each exercise has a stub that raises `NotImplementedError` and a checker from
# `course_utils.exercises.ch05`. Replace the `raise` with your code and re-run the checker:
# it prints ✓ when your answer is right and ✗ with a hint when it is not. A solution
# follows, collapsed.
#
# **Exercise 05.1.** Write `lr_schedule(step, max_steps, lr, warmup_steps, min_lr_ratio)`,
# the warm-up + cosine schedule of section 4, without looking at `train.lr_at`.

# %%
from course_utils.exercises import ch05


def lr_schedule(step, max_steps, lr, warmup_steps, min_lr_ratio):
    raise NotImplementedError


_ = ch05.check_lr_schedule(lr_schedule)


# %% tags=["hide-cell"]
def lr_schedule(step, max_steps, lr, warmup_steps, min_lr_ratio):
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, max_steps - warmup_steps))
    min_lr = lr * min_lr_ratio
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * progress))


_ = ch05.check_lr_schedule(lr_schedule)


# %% [markdown]
# **Exercise 05.2.** A batch too large for memory can be processed in `n_micro` slices
# (*gradient accumulation*): run forward and backward on each slice, and step once. Write
# `accumulate_step(model, optimizer, x, y, n_micro)` so that the update equals one step on
# the whole batch, and return the batch's loss. Careful: the rows may end in `<pad>`, so
# the slices hold different numbers of real targets. (Use `x.chunk(n_micro)`.)

# %%
def accumulate_step(model, optimizer, x, y, n_micro):
    raise NotImplementedError


_ = ch05.check_accumulate_step(accumulate_step)


# %% tags=["hide-cell"]
def accumulate_step(model, optimizer, x, y, n_micro):
    n_real = int((y != 0).sum())
    total = 0.0
    for xb, yb in zip(x.chunk(n_micro), y.chunk(n_micro), strict=True):
        share = int((yb != 0).sum()) / n_real  # this slice's share of the real targets
        _, loss = model(xb, yb)
        (loss * share).backward()               # gradients add up in p.grad
        total += loss.item() * share
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return total


_ = ch05.check_accumulate_step(accumulate_step)


# %% [markdown]
# **Exercise 05.3.** Write `mean_loss(model, batches)`: the loss per real target over a list
# of `(x, y)` batches, as `train.evaluate` computes it: dropout off, no gradients, every
# batch weighted by its number of real targets, and the model left in the mode it was in.
# Then turn your answer on the pretrained model into a validation perplexity.

# %%
def mean_loss(model, batches):
    raise NotImplementedError


_ = ch05.check_mean_loss(mean_loss)


# %% tags=["hide-cell"]
@torch.no_grad()
def mean_loss(model, batches):
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for x, y in batches:
        _, loss = model(x, y)
        n = int((y != 0).sum())
        total, count = total + loss.item() * n, count + n
    model.train(was_training)
    return total / count


_ = ch05.check_mean_loss(mean_loss)
from course_utils.evaluation import EVAL_OFFSET  # evaluation batches come from these step numbers

batches = [val_src.get(EVAL_OFFSET + i) for i in range(profile.eval_iters)]
print(f"pretrained model: validation perplexity {math.exp(mean_loss(lm.cpu(), batches)):.1f}")

# %% [markdown]
# ## Summary
#
# - A training step is forward, loss, backward, clip, optimizer step, zero the gradients;
#   our hand-written loop and `course_utils.train.train` give the same losses.
# - AdamW decays the matrices and leaves biases and LayerNorm gains alone; the learning rate
#   warms up linearly, then follows a cosine down to a tenth of its peak.
# - The pretraining run of the book is cached by `artifacts.pretrained_lm`: its validation
#   loss and perplexity, against the unigram baseline, and its samples are printed above.
# - Packed windows spend no compute on `<pad>`, while a padded step costs as much as a packed
#   one; the deep dive 05a measures what that is worth, over several seeds.
# - Checkpoints keep the last few plus the best, survive crashes, resume a run exactly, and
#   refuse a mismatched vocabulary or model with a clear message.
#
# **Next**, chapter 06 runs this same loop on several processes with
# `DistributedDataParallel`, each rank taking its slice of every step's batch.
