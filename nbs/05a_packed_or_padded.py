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
# # 05a · Going further: padded sentences or packed windows
#
# The course trained its GPT on single sentences of 16-64 characters, each padded with
# `<pad>` to a fixed length, the loss ignoring the `<pad>` targets. Chapter 05 pretrains on
# the packed stream instead: random windows in which every position is a real target. This
# deep dive measures what that choice is worth. It assumes chapter 05: the batch sources
# (`WindowBatches` for windows, `DatasetBatches` over chapter 02's `PaddedLines` for
# sentences), the book's loop `train.train` with its warm-up + cosine schedule, evaluation on
# fixed validation batches, and the unigram baseline.
#
# Two questions, two ways of making the comparison fair:
#
# - **Same compute.** After the same number of steps, which model is better? A padded step
#   costs as much as a packed one, so this is also the same time.
# - **Same real tokens.** After both have seen the same number of real (non-`<pad>`)
#   targets, which is better? The padded run needs more steps for that.
#
# Training runs differ from seed to seed, so we train each way from several seeds and read
# every difference against that spread.
#
# **Learning goals**
#
# - measure the share of `<pad>` in padded sentence batches, and what a padded step costs;
# - compare two training setups at equal compute and at equal data, over several seeds;
# - say why the book pretrains on packed windows.

# %%
from course_utils import config, plots, timing

plots.setup()                # CJK font for Chinese labels
profile = config.get_profile()
print(config.summary(profile))
print(timing.machine_line())   # section 2 times training steps
config.seed_everything(0)

# %% [markdown]
# ## 1. The news as padded sentences
#
# We cut the news paragraphs into sentences after 。！？ and keep those of 16-64 characters,
# as the course did (chapter 02's `PaddedLines` pads each example to a fixed length).
# For a budget of `packed_steps` packed steps, every target of which is real, we count how
# many padded steps give the same number of real targets.

# %%
import re

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from course_utils import artifacts
from course_utils import train as T
from course_utils.batches import DatasetBatches, PaddedLines, WindowBatches
from course_utils.evaluation import evaluate, unigram_loss
from course_utils.model import GPT, GPTConfig


def sentences(docs):
    """Cut paragraphs after 。！？ (the course trained on sentences, not paragraphs)."""
    return [s for d in docs for s in re.findall(r"[^。！？]*[。！？]|[^。！？]+$", d)]


vocab = artifacts.news_vocab()
train_tokens, val_tokens = artifacts.news_tokens("train"), artifacts.news_tokens("val")
train_docs, val_docs = artifacts.news_splits()
if profile.max_docs:
    train_docs, val_docs = train_docs[: profile.max_docs], val_docs[: profile.max_docs]
max_len = min(64, profile.block_size + 1)  # an example must fit in the model's context
lines_train = PaddedLines(sentences(train_docs), vocab, min_len=16, max_len=max_len)
lines_val = PaddedLines(sentences(val_docs), vocab, min_len=16, max_len=max_len)
print(f"sentences of 16-{max_len} characters, each padded to {lines_train.seq_len} positions: "
      f"{len(lines_train):,} for training, {len(lines_val):,} held out")

# %%
B, block = profile.batch_size, profile.block_size
packed_steps = {"ci": 20, "cpu": 120, "gpu": 2000}[profile.name]
budget = packed_steps * B * block  # every packed target is real
real_per_line = np.array([len(s) - 1 for s in lines_train.lines])


def padded_tokens(source):
    """Real targets seen after each padded step of `source`, until the budget is reached."""
    seen = [0]
    while seen[-1] < budget:
        seen.append(seen[-1] + int(real_per_line[source.indices(len(seen) - 1)].sum()))
    return np.array(seen)


seen0 = padded_tokens(DatasetBatches(lines_train, B, seed=0))
pad_share = 1 - seen0[-1] / ((len(seen0) - 1) * B * lines_train.seq_len)
print(f"budget {budget:,} real targets: {packed_steps} packed steps or {len(seen0) - 1} padded "
      f"steps ({pad_share:.0%} of the padded positions are <pad>)")

# %% [markdown]
# ## 2. What a step costs
#
# A padded step pushes `batch_size` examples of that fixed length through the model, a packed
# one `batch_size` windows of `block_size` positions, about as many: the `<pad>` positions
# are computed like any other and then ignored by the loss. So the two kinds of step should
# cost about the same, and the padded run should process fewer real tokens per second, by
# the factor $1 - \text{pad share}$. We time one training step of each kind, alternating
# them with `timing.time_interleaved`.

# %%
device = config.get_device()
model_cfg = GPTConfig(vocab_size=len(vocab), **profile.model_kwargs())
train_src = WindowBatches(train_tokens, B, block, seed=0)
padded_src = DatasetBatches(lines_train, B, seed=0)


def stepper(source):
    config.seed_everything(0)
    model = GPT(model_cfg).to(device)
    optimizer = T.configure_optimizer(model, T.TrainConfig(progress=False))
    counter = iter(range(10**6))

    def step():
        x, y = source.get(next(counter))
        _, loss = model(x.to(device), y.to(device))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss.item()  # waits for a GPU to finish
    return step


repeats = {"ci": 3, "cpu": 10, "gpu": 20}[profile.name]
seconds = timing.time_interleaved({"packed windows": stepper(train_src),
                                   "padded sentences": stepper(padded_src)}, repeats, device=device)
per_step = {name: float(np.median(s)) for name, s in seconds.items()}
cost = [p / w for p, w in zip(seconds["padded sentences"], seconds["packed windows"], strict=True)]
real_per_s = {"packed windows": B * block / per_step["packed windows"],
              "padded sentences": seen0[-1] / (len(seen0) - 1) / per_step["padded sentences"]}
for name in per_step:
    print(f"{name:17s} {per_step[name] * 1e3:6.0f} ms per step, {real_per_s[name]:8,.0f} real "
          f"targets per second (median of {repeats}; torch threads: {torch.get_num_threads()})")
speedup = real_per_s["packed windows"] / real_per_s["padded sentences"]
print(f"padded / packed step time: median x{np.median(cost):.2f} (repeats x{min(cost):.2f} to "
      f"x{max(cost):.2f}); packing processes x{speedup:.2f} as many real targets per second, "
      f"1 / (1 - pad share) = x{1 / (1 - pad_share):.2f}")
config.claim(f"a padded step costs about as much as a packed one (x{np.median(cost):.2f}, within "
             f"x0.8 to x1.25)", 0.8 < np.median(cost) < 1.25)

# %% [markdown]
# ## 3. Training both ways, from several seeds
#
# For each seed (which fixes the initial weights and the order of the batches) we train two
# fresh GPTs: one on packed windows for `packed_steps` steps, one on padded sentences until
# it has seen the same number of real targets. Both follow the first steps of chapter 05's
# pretraining schedule (its warm-up, then the start of its cosine), so at any step the two
# runs have had the same learning rate, and reading the padded run at step `packed_steps`
# is the same as stopping it there. Every evaluation uses the same validation windows; at
# the end of each run (so at the same real targets) both models are also scored on held-out
# *sentences*, the padded run's own format.

# %%
from tqdm.auto import tqdm

seeds = {"ci": [0, 1], "cpu": [0, 1, 2], "gpu": [0, 1, 2]}[profile.name]
val_src = WindowBatches(val_tokens, B, block, seed=1)
val_lines = DatasetBatches(lines_val, B, seed=1)
n_eval = profile.eval_iters
unigram = unigram_loss(train_tokens, val_tokens, len(vocab))


def run(source, steps, seed):
    """A fresh GPT trained for `steps` steps of the pretraining schedule; evaluated on the
    validation windows every `packed_steps // 2` steps, and at the end."""
    config.seed_everything(seed)
    model = GPT(model_cfg)
    cfg = T.TrainConfig.from_profile(profile, max_steps=max(profile.max_steps, steps),
                                     eval_interval=packed_steps // 2, eval_iters=n_eval,
                                     compiled=False, progress=False)
    h = T.train(model, source, cfg, val_source=val_src, device=device, stop_at=steps).history
    at = dict(zip(h["eval_step"], h["val_loss"], strict=True))
    if steps not in at:
        at[steps] = evaluate(model, val_src, n_eval, device)
    return at, evaluate(model, val_lines, n_eval, device)

# %%
rows, curves = [], {}
with tqdm(total=len(seeds) * 2, desc="training runs") as bar:
    for seed in seeds:
        padded = DatasetBatches(lines_train, B, seed=seed)
        seen = padded_tokens(padded)
        packed_at, packed_sent = run(WindowBatches(train_tokens, B, block, seed=seed), packed_steps, seed)
        bar.update()
        padded_at, padded_sent = run(padded, len(seen) - 1, seed)
        bar.update()
        curves[seed] = (packed_at, padded_at, seen)
        rows.append({"seed": seed, "padded steps": len(seen) - 1,
                     "packed @ same compute": packed_at[packed_steps],
                     "padded @ same compute": padded_at[packed_steps],
                     "padded @ same real targets": padded_at[len(seen) - 1],
                     "sentences: packed": packed_sent, "sentences: padded": padded_sent})
table = pd.DataFrame(rows).set_index("seed")
print(table.to_string(float_format=lambda v: f"{v:.3f}"))
print(f"\nunigram baseline on the validation windows: {unigram:.3f}")

# %% [markdown]
# The same numbers as pictures: the validation loss on the windows against the steps taken
# (compute) and against the real targets seen (data), one line per seed and setup.

# %%
fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(12, 4), sharey=True)
for seed, (packed_at, padded_at, seen) in curves.items():
    for name, at, color in (("packed windows", packed_at, "C0"), ("padded sentences", padded_at, "C1")):
        steps = np.array(sorted(at))
        tokens = steps * B * block if name == "packed windows" else seen[steps]
        label = name if seed == seeds[0] else None
        ax0.plot(steps, [at[s] for s in steps], "o-", color=color, alpha=0.7, label=label)
        ax1.plot(tokens, [at[s] for s in steps], "o-", color=color, alpha=0.7, label=label)
for ax in (ax0, ax1):
    ax.axhline(unigram, color="gray", ls="--", label="unigram baseline")
    ax.set_ylabel("validation loss on windows (nats / character)")
ax0.axvline(packed_steps, color="gray", ls=":")
ax1.axvline(budget, color="gray", ls=":")
ax0.set(title="Same compute: loss against steps", xlabel="training step")
ax1.set(title="Same data: loss against real targets seen", xlabel="real (non-<pad>) targets seen")
ax0.legend()
plt.tight_layout()
plt.show()

# %%
lead_compute = table["padded @ same compute"] - table["packed @ same compute"]  # > 0: packed ahead
lead_data = table["padded @ same real targets"] - table["packed @ same compute"]  # packed: at the budget
lead_sent = table["sentences: padded"] - table["sentences: packed"]  # < 0: padded ahead
show = lambda s: ", ".join(f"{v:+.3f}" for v in s)
print(f"padded minus packed on the windows, per seed: same compute {show(lead_compute)}; "
      f"same real targets {show(lead_data)}")
print(f"padded minus packed on held-out sentences, per seed: {show(lead_sent)}")
at_n = table[["packed @ same compute", "padded @ same compute"]].max().max()
config.claim(f"every run is below the unigram baseline at step {packed_steps} (the highest "
             f"validation loss there: {at_n:.3f} < {unigram:.3f})", at_n < unigram)
config.claim(f"at the same compute packing is ahead in every seed, by more than the packed runs "
             f"differ among seeds ({lead_compute.min():.3f} > {np.ptp(table['packed @ same compute']):.3f})",
             lead_compute.min() > np.ptp(table["packed @ same compute"]))
config.claim(f"at the same real targets the two are within {lead_data.abs().max():.3f} of each other in "
             f"every seed, under half the smallest same-compute lead",
             lead_data.abs().max() < lead_compute.min() / 2)
config.claim(f"on held-out sentences the padded model is ahead in every seed (by at least "
             f"{-lead_sent.max():.3f})", lead_sent.max() < 0)

# %% [markdown]
# What the numbers say (the claims above, each checked in every seed):
#
# - *Same compute.* At step `packed_steps` the two runs have had the same learning rate at
#   every step and have cost about the same per step (section 2), and the packed model is
#   ahead on the validation windows in every seed, by more than the packed runs differ
#   among seeds.
# - *Same real targets.* The padded run needed about $1 / (1 - \text{pad share})$ times as
#   many steps to get there (section 1), and then the two models are close on the windows:
#   in every seed the difference, of either sign, is under half the smallest same-compute
#   lead. Per real target seen, a padded sentence teaches about as much as a window (spread
#   over more optimizer steps, each with fewer real targets); packing's lead at the same
#   compute comes from the real targets it processes per step, not from better ones.
# - *On held-out sentences*, the padded model's own format, it is ahead in every seed. It never
#   saw text that starts mid-sentence or crosses a paragraph break (`<sep>`), but it practised
#   exactly the kind of input this test holds: the format a model trains on shapes what it is
#   good at.
#
# Packing spends no compute on `<pad>`: for the same compute it processes more real targets
# and gets further, in every seed, which is why the book pretrains on packed windows (whose
# text also runs across sentence boundaries, as a document's does). The tasks of chapters
# 10 and 11, single reviews and dialogue turns, are then learned by fine-tuning on their own
# format.

# %% [markdown]
# > **Pitfalls.**
# >
# > - *Comparing at one seed*: two runs of the same setup differ, and near the unigram
# >   plateau, where the loss is about to drop, they differ most. Read a difference between
# >   setups against the spread between seeds.
# > - *Comparing runs on different schedules*: a run stopped in the middle of its cosine has
# >   not annealed, and scores worse than a run of the same length that has. Give both the
# >   same schedule, step for step, as here.
# > - *Comparing training losses across formats*: a sentence batch and a window batch are
# >   different tasks; evaluate both models on the same held-out batches.
# > - *Counting padded positions as data*: a padded batch of 32 × 63 positions holds far fewer
# >   real targets (section 1); budgets and throughputs must count real targets.

# %% [markdown]
# ## Summary
#
# - Padding the course's sentences to a fixed length leaves a large share of the positions
#   `<pad>` (section 1): computed, then ignored, while a padded step costs as much as a
#   packed one.
# - At the same compute, packed windows trained a clearly better model than padded sentences
#   in every seed; at the same number of real targets the two were close on the windows, and
#   the padded model was ahead on its own format, sentences.
# - Chapter 05's pretraining therefore uses packed windows: more learning for the same
#   compute.
#
# Back to [chapter 05](05_training.ipynb), section 8: checkpoints.
