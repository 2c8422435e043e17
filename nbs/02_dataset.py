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
# # 02 · From text to batches: datasets (数据集) and data loaders
#
# A GPT learns by predicting, at every position of a sequence, the next token. So a training
# example is a pair of id sequences `(x, y)` where `y` is `x` shifted left by one, and a batch
# stacks many such pairs into two tensors of shape `(batch, length)`. How we cut the text
# into examples decides how much of each batch is real text and how much is padding, how
# much of the corpus the model ever sees, and whether the validation score can be trusted.
# The course padded each 16-64 character sentence to a fixed length; nanoGPT instead packs
# all the text into one long stream and cuts random windows from it. We build both on the
# same news text and measure the difference, make splits that do not leak, and prepare the
# dialogue examples of Task 1.
#
# **Learning goals**
#
# - build `(x, y)` pairs shifted by one, in the course's padded style and in the packed style;
# - measure the share of useful (non-`<pad>`) tokens per batch, and how much text a filter
#   throws away;
# - use `Dataset` and `DataLoader`, and store a token stream as a `uint16` memory map;
# - split by document, so that no validation document is also a training one, for news and
#   reviews;
# - turn conversations into `<sep>`-joined examples whose loss covers only the reply.

# %%
from course_utils import config, plots

plots.setup()                # CJK font for Chinese labels
profile = config.get_profile()
print(config.summary(profile))
config.seed_everything(0)

# %% [markdown]
# ## 1. The idea: predict the next token everywhere
#
# For a sequence of ids $t_1, \dots, t_{n}$ the model receives $x = (t_1, \dots, t_{n-1})$
# and is trained to output $y = (t_2, \dots, t_n)$: at position $i$ it has seen
# $t_1, \dots, t_i$ and must predict $t_{i+1}$. One sequence of $n$ tokens therefore gives
# $n-1$ training signals at once. The loss is the mean cross-entropy over the positions that
# hold real text,
#
# $$\mathcal{L} = -\frac{1}{|\{i : y_i \ne \texttt{<pad>}\}|}\sum_{i : y_i \ne \texttt{<pad>}} \log p_\theta(y_i \mid x_{\le i}),$$
#
# which is what `CrossEntropyLoss(ignore_index=PAD)` computes.

# %%
from course_utils import artifacts, data
from course_utils.vocab import PAD, SEP

vocab = artifacts.news_vocab()
news = data.load_news()
line = news[3][:12]
ids = vocab.encode(line)
x, y = ids[:-1], ids[1:]
print("text:", line)
for i in range(4):
    print(f"  seen {vocab.decode(x[: i + 1])!r:<8} -> predict {vocab.decode([y[i]])!r}")
assert x[1:] == y[:-1] and len(x) == len(y) == len(ids) - 1

# %% [markdown]
# A batch needs examples of one length, and there are two ways to get them from documents of
# many lengths. The figure shows both on three short paragraphs of the news, scaled down to
# examples of 10 positions. **Padded lines** (the course): one line per example, filled up with
# `<pad>`; the `<pad>` targets (grey) cost compute, and the loss ignores them. **Packed
# windows** (nanoGPT): the documents joined by `<sep>` into one stream, from which windows are
# cut at random offsets; every target is text, and a window may cross a `<sep>`. In both, `y` is
# `x` shifted left by one. Sections 2 to 4 build each style and measure the difference on full
# batches.
#
# ![Three short lines of the news cut into examples two ways. Left, the course's padded lines: one line per example, x and y padded with pad tokens to 10 positions, so only 5, 6 and 8 of the 10 targets of each row are in the loss. Right, packed windows: the three lines joined by separator tokens into one stream of 25 tokens, and three windows of 11 tokens cut from it at random offsets, each giving an x and a y of 10 tokens in which every target is text. Arrows show that y is x shifted left by one](../book/images/batches.png)
#
# ## 2. The course's style: one padded line per example
#
# The course kept every sentence of 16 to 64 characters and made one example of each, padded
# with `<pad>` to a fixed length: with the source material's default maximum of 512 tokens, `x`
# and `y` have 511 positions, of which at most 63 are text. Here each line is padded only to
# the longest line the filter allows, 63 positions, the kindest reading of the course, and even
# that wastes a lot (section 4). First, how much of the news does that filter keep?
# (This uses the whole corpus in every profile.)

# %%
# NBVAL_CHECK_OUTPUT
import numpy as np

lengths = np.array([len(p) for p in news])
kept = (lengths >= 16) & (lengths <= 64)
print(f"paragraphs of 16-64 characters: {kept.sum():,} of {len(news):,} ({kept.mean():.1%})")
print(f"characters in them: {lengths[kept].sum():,} of {lengths.sum():,} "
      f"({lengths[kept].sum() / lengths.sum():.1%})")

# %%
import matplotlib.pyplot as plt

fig, ax = plt.subplots(figsize=(8, 3.2))
bins = np.arange(0, 400, 8)
ax.hist(lengths, bins=bins, color="tab:gray", label="all paragraphs")
ax.hist(lengths[kept], bins=bins, color="tab:blue", label="kept by the 16-64 filter")
ax.set(xlabel="paragraph length (characters; longer ones cut off at 400)",
       ylabel="paragraphs", title="The course's filter keeps a narrow band of the news")
ax.legend()
plt.show()
kept_char_share = lengths[kept].sum() / lengths.sum()
# what the next paragraph says (the whole corpus, in every profile)
assert kept.mean() < 0.25 and kept_char_share < kept.mean()
assert lengths[lengths > 64].sum() > 0.5 * lengths.sum()  # long paragraphs hold most of the text

# %% [markdown]
# Fewer than a quarter of the paragraphs are 16 to 64 characters long, and since the long
# paragraphs hold most of the text, the filter keeps an even smaller share of the
# characters: the model would never see most of the corpus. The course applied the filter
# to *sentences*. Cutting the paragraphs after `。`, `！` and `？` first helps, but still
# loses a large part of the text:

# %%
# NBVAL_CHECK_OUTPUT
import re

sentences = [s for p in news for s in re.split(r"(?<=[。！？])", p) if s]
sentence_lengths = np.array([len(s) for s in sentences])
kept_sentences = (sentence_lengths >= 16) & (sentence_lengths <= 64)
print(f"sentences of 16-64 characters: {kept_sentences.sum():,} of {len(sentences):,} "
      f"({kept_sentences.mean():.1%}); characters in them: "
      f"{sentence_lengths[kept_sentences].sum() / sentence_lengths.sum():.1%}")
assert "".join(sentences) == "".join(news)  # the split loses no character
# as the text above says: better than filtering paragraphs, yet a large part of the text is lost
assert kept_char_share < sentence_lengths[kept_sentences].sum() / sentence_lengths.sum() < 0.7

# %% [markdown]
#
# Now one padded example, built inline from the training paragraphs:

# %%
MAX_LEN = 64
SEQ_LEN = MAX_LEN - 1
train_docs, val_docs = artifacts.news_splits()  # 90% of the paragraphs; section 6 explains
lines = [p for p in train_docs if 16 <= len(p) <= MAX_LEN]


def padded_pair(text):
    ids = vocab.encode(text)
    x = ids[:-1] + [PAD] * (SEQ_LEN - (len(ids) - 1))
    y = ids[1:] + [PAD] * (SEQ_LEN - (len(ids) - 1))
    return x, y


x, y = padded_pair(lines[0])
print(lines[0], f"({len(lines[0])} chars)")
print("x:", x[:8], "...", x[-4:])
print("y:", y[:8], "...", y[-4:])
assert len(x) == len(y) == SEQ_LEN and x[1 : len(lines[0]) - 1] == y[: len(lines[0]) - 2]

# %% [markdown]
# `course_utils.batches.PaddedLines` is the same thing as a PyTorch `Dataset`: `len(ds)` and
# `ds[i]` returning a pair of tensors. It must agree with our inline version:

# %%
import torch

from course_utils.batches import PaddedLines

padded = PaddedLines(train_docs, vocab, min_len=16, max_len=MAX_LEN)
assert padded.lines == lines
for i in [0, 1, 500, len(padded) - 1]:
    xi, yi = padded[i]
    assert xi.tolist() == padded_pair(lines[i])[0] and yi.tolist() == padded_pair(lines[i])[1]
print(f"{len(padded):,} examples, each x and y of shape {tuple(padded[0][0].shape)}")

# %% [markdown]
# ## 3. The packed style: one long stream, random windows
#
# nanoGPT takes the opposite approach. Encode every document, join them with a separator (we
# use `<sep>`) into one long stream of ids, and cut windows of `block_size + 1` tokens at
# random offsets. There is no padding and no filter: every character of the corpus can be
# seen. The price: a window may start mid-sentence and cross a document boundary; the `<sep>`
# tells the model where one paragraph ends.
#
# We pack the same training paragraphs as above. Inline, for the first hundred:

# %%
inline_stream = []
for doc in train_docs[:100]:
    inline_stream += vocab.encode(doc) + [SEP]
print(vocab.decode(inline_stream[:60]))

# %% [markdown]
# The packed stream of the whole split is built once and cached as raw `uint16` numbers (two
# bytes per token: ids up to 65,535 fit). `np.memmap` maps the file into memory without
# reading it, so even a corpus larger than RAM works, and every notebook gets the same
# stream. `artifacts.news_tokens` returns it:

# %%
train_tokens = artifacts.news_tokens("train")
path = config.cache_dir() / "news_train.u16"
print(f"{type(train_tokens).__name__} of {len(train_tokens):,} tokens, dtype {train_tokens.dtype}, "
      f"file {path.stat().st_size:,} bytes")
assert path.stat().st_size == 2 * len(train_tokens)
assert train_tokens[: len(inline_stream)].tolist() == inline_stream
assert len(train_tokens) == sum(map(len, train_docs)) + len(train_docs)  # characters + one <sep> each

# %% [markdown]
# A batch takes `batch_size` random windows. Inline, with a seeded generator, and then
# `course_utils.batches.random_batch` with the same seed:

# %%
from course_utils.batches import random_batch

block_size, batch_size = SEQ_LEN, profile.batch_size  # the padded style's length, to compare


def get_batch(tokens, generator):
    starts = torch.randint(len(tokens) - block_size - 1, (batch_size,), generator=generator)
    windows = [torch.from_numpy(tokens[s : s + block_size + 1].astype(np.int64)) for s in starts]
    xb = torch.stack([w[:-1] for w in windows])
    yb = torch.stack([w[1:] for w in windows])
    return xb, yb


xb, yb = get_batch(train_tokens, torch.Generator().manual_seed(0))
xr, yr = random_batch(train_tokens, batch_size, block_size, generator=torch.Generator().manual_seed(0))
assert torch.equal(xb, xr) and torch.equal(yb, yr)
assert torch.equal(xb[:, 1:], yb[:, :-1])
print("x:", tuple(xb.shape), xb.dtype, "| y:", tuple(yb.shape))

# %% [markdown]
# For a `DataLoader` (several worker processes, distributed samplers) the same idea is the
# `Dataset` `PackedWindows`: item `i` is always the same window, drawn from a generator
# seeded with `(seed, i)`, so an epoch can be repeated or resumed exactly.

# %%
from torch.utils.data import DataLoader

from course_utils.batches import PackedWindows

windows = PackedWindows(train_tokens, block_size, num_samples=100 * batch_size, seed=0)
packed_loader = DataLoader(windows, batch_size=batch_size)
padded_loader = DataLoader(padded, batch_size=batch_size, shuffle=True, drop_last=True,
                           generator=torch.Generator().manual_seed(0))
xp, yp = next(iter(packed_loader))
xq, yq = next(iter(padded_loader))
print(f"packed: {len(packed_loader)} batches of x {tuple(xp.shape)}; "
      f"padded: {len(padded_loader)} batches of x {tuple(xq.shape)}")
assert xp.shape == xq.shape == (batch_size, SEQ_LEN)
assert torch.equal(windows[0][0], xp[0])

# %% [markdown]
# ## 4. How much of a batch is useful?
#
# Every position of a batch costs the same compute, but only positions whose target is not
# `<pad>` teach the model anything. We measure that share, `non_pad_fraction(y)`, over 100
# batches of each style, with the same batch shape:

# %%
from course_utils.batches import non_pad_fraction

n_batches = 100
useful = {"padded lines (course)": [], "packed windows": []}
for (_, y_pad), (_, y_pack) in zip(padded_loader, packed_loader, strict=False):
    useful["padded lines (course)"].append(non_pad_fraction(y_pad))
    useful["packed windows"].append(non_pad_fraction(y_pack))
    if len(useful["packed windows"]) == n_batches:
        break
for style, fractions in useful.items():
    print(f"{style:<22}: {np.mean(fractions):.1%} useful targets per batch "
          f"(min {np.min(fractions):.1%}, max {np.max(fractions):.1%}, {len(fractions)} batches)")
sep_share = float((yp == SEP).float().mean())
print(f"(in the packed batch, {sep_share:.1%} of the targets are <sep> document boundaries)")
gain = np.mean(useful["packed windows"]) / np.mean(useful["padded lines (course)"])
print(f"packed batches carry {gain:.2f} times as many useful targets as padded ones")

# %%
fig, ax = plt.subplots(figsize=(7, 3.2))
for k, fractions in enumerate(useful.values()):
    jitter = np.random.default_rng(k).uniform(-0.15, 0.15, len(fractions))
    ax.plot(np.full(len(fractions), k) + jitter, 100 * np.array(fractions), ".", alpha=0.6)
    ax.hlines(100 * np.mean(fractions), k - 0.3, k + 0.3, color="black",
              label="mean" if k == 0 else None)
ax.set_xticks([0, 1], labels=list(useful))
ax.set(ylabel="non-<pad> targets per batch (%)", ylim=(0, 105), xlim=(-0.6, 1.6),
       title=f"Useful tokens in {n_batches} batches of {batch_size}x{SEQ_LEN}")
ax.legend(loc="lower right")
plt.show()
assert min(useful["packed windows"]) == 1.0  # packed batches are all text, in every profile
fullest = max(useful["padded lines (course)"])
config.claim(f"the fullest of the {n_batches} padded batches is {fullest:.0%} text, and packed "
             f"batches carry {gain:.2f} times as many useful targets", fullest < 0.8 and gain > 1.5)

# %% [markdown]
# With the course's padding, a large share of every batch is `<pad>` (over a fifth even in the
# fullest batch): computed, then thrown away by `ignore_index`. The packed batches are all
# text: for the same compute they carry more than one and a half times as many useful targets
# (the claim above), *and* they draw them from the whole corpus rather than the filtered part
# of section 2. The later
# chapters pretrain on packed windows.
#
# ## 5. A batch, seen
#
# What does a batch look like? Each row is one example, each column a position; colour is the
# token id, and `<pad>` is white.

# %%
fig, axes = plt.subplots(1, 2, figsize=(12, 3.6), sharey=True, layout="constrained")
rows = 12
for ax, (name, xs) in zip(axes, [("padded lines (course)", xq), ("packed windows", xp)], strict=True):
    shown = np.ma.masked_equal(xs[:rows].numpy(), PAD)
    image = ax.imshow(shown, aspect="auto", cmap="viridis", interpolation="nearest")
    seps = np.argwhere(xs[:rows].numpy() == SEP)
    ax.scatter(seps[:, 1], seps[:, 0], marker="s", s=30, c="red", edgecolors="white")
    ax.set(title=name, xlabel="position in the sequence")
    ax.grid(False)
axes[0].set_ylabel("example in the batch")
fig.suptitle(f"Token ids of {rows} examples (white: <pad>, red squares: <sep>)")
fig.colorbar(image, ax=axes, label="token id")
plt.show()

# %% [markdown]
# And decoded, with `<pad>` shown as `·`:

# %%
def show(xs, n=3):
    for row in xs[:n]:
        print("  " + vocab.decode(row.tolist()).replace("<pad>", "·"))


print("padded lines:")
show(xq)
print("packed windows:")
show(xp)

# %% [markdown]
# ## 6. Splits that do not leak
#
# A validation set estimates how the model does on text it has *not* trained on. If the
# split is made by window (cut the stream, shuffle the windows, set some aside), overlapping
# windows put the same sentences on both sides and the validation loss is too optimistic.
# We split by **document**: `split_documents` shuffles whole paragraphs with a fixed seed and
# sets 10% aside. No paragraph is in both halves:

# %%
# NBVAL_CHECK_OUTPUT
from collections import Counter

from course_utils.batches import split_documents

train_idx, val_idx = split_documents(list(range(len(news))), val_fraction=0.1, seed=0)
assert not set(train_idx) & set(val_idx) and len(train_idx) + len(val_idx) == len(news)
assert [news[i] for i in val_idx] == val_docs  # the same split as artifacts.news_splits()
print(f"news: {len(train_idx):,} training and {len(val_idx):,} validation paragraphs, "
      f"no paragraph in both")
train_set = set(train_docs)
repeated = [p for p in val_docs if p in train_set]
repeated_share = sum(map(len, repeated)) / sum(map(len, val_docs))
print(f"identical *texts* in both halves: {len(repeated)} paragraphs (median length "
      f"{np.median([len(p) for p in repeated]):.0f} characters), {repeated_share:.2%} of the "
      "validation characters, e.g. " + ", ".join(text for text, _ in Counter(repeated).most_common(4)))
assert repeated_share < 0.01  # "a tiny share of the text", as the next paragraph says

# %% [markdown]
# The corpus itself repeats a few paragraphs, mostly short boilerplate (captions like the ones
# printed above, bylines like `本报记者阎晓明`); they appear on both sides because they appear
# several times in the newspaper, not because the split leaks. They are a tiny share of the
# text, so we keep them.
#
# For the reviews of Task 2 leakage is a real danger: the raw files repeat half their lines
# (chapter 00). `data.split_sentiment` works on the deduplicated, conflict-free reviews and
# makes a deterministic, *stratified* split: each class is split 90/10 separately, so both
# halves keep the class balance.

# %%
# NBVAL_CHECK_OUTPUT
import pandas as pd

reviews = data.load_sentiment()
train_rev, test_rev = data.split_sentiment(reviews, test_size=0.1, seed=0)
in_both_classes = set(reviews.review[reviews.label == 0]) & set(reviews.review[reviews.label == 1])
in_both_halves = set(train_rev.review) & set(test_rev.review)
print(f"texts in both classes: {len(in_both_classes)}; texts in both train and test: {len(in_both_halves)}")
balance = pd.DataFrame({
    "reviews": [len(train_rev), len(test_rev)],
    "negative": [(train_rev.label == 0).sum(), (test_rev.label == 0).sum()],
    "positive": [(train_rev.label == 1).sum(), (test_rev.label == 1).sum()],
    "share positive": [train_rev.label.mean(), test_rev.label.mean()],
}, index=["train", "test"])
print(balance.to_string(formatters={"share positive": "{:.2%}".format}))
again = data.split_sentiment(reviews, test_size=0.1, seed=0)[1]
assert not in_both_classes and not in_both_halves and again.equals(test_rev)

# %% [markdown]
# ## 7. Dialogue examples for Task 1
#
# A conversation becomes one sequence: its turns joined by `<sep>`, with a closing `<sep>`
# so the model learns where a reply ends. `DialogueExamples` makes one example per reply:
# the history (cropped from the left to fit `block_size`) followed by the reply. With
# `response_only=True` the targets inside the history are set to `<pad>`, so the loss
# teaches the model to *answer*, not to imitate the user's side.
#
# Conversations are split by conversation, like the news by paragraph.

# %%
from course_utils.batches import DialogueExamples, encode_dialogue

dialogues = data.load_dialogues()
train_dialogues, val_dialogues = split_documents(dialogues, val_fraction=0.1, seed=0)
examples = DialogueExamples(train_dialogues, vocab, block_size=profile.block_size)
n_replies = sum(len(d) - 1 for d in train_dialogues)
print(f"{len(train_dialogues)} training / {len(val_dialogues)} validation conversations -> "
      f"{len(examples)} training examples (one per reply), block_size {profile.block_size}")
assert len(examples) == n_replies

turns = train_dialogues[0]
print("turns:  ", turns)
print("encoded:", vocab.decode(encode_dialogue(turns, vocab)))


# %%
def show_example(i):
    x, y = examples[i]
    print("x:", vocab.decode(x.tolist()).replace("<pad>", "·"))
    print("y:", vocab.decode(y.tolist()).replace("<pad>", "·"))


show_example(0)
x, y = examples[0]
reply = vocab.decode(y[y != PAD].tolist())
print("the loss covers:", reply)
assert reply == vocab.decode(encode_dialogue(train_dialogues[0][1:2], vocab))[: len(reply)]

# %% [markdown]
# In `y`, the history positions are `·` (ignored); the targets are the reply and its closing
# `<sep>`. Notice the `<unk>`s: the dialogues use half-width punctuation and Latin letters
# that the news vocabulary does not know (chapter 01, section 4); chapter 11 maps them to
# their full-width twins with `data.to_fullwidth` before fine-tuning.
#
# A conversation with more turns gives one example per reply, each with a longer history:

# %%
long_one = max(range(len(train_dialogues)), key=lambda i: len(train_dialogues[i]))
first = sum(len(d) - 1 for d in train_dialogues[:long_one])
print(f"conversation {long_one} has {len(train_dialogues[long_one])} turns; its third reply:")
show_example(first + 2)

# %% [markdown]
# > **Pitfalls.**
# > - *Shift by one.* `y` must be `x` moved left by one token. Predicting `x` itself (no
# >   shift) gives a near-zero loss and a model that learned nothing.
# > - *Padding costs compute.* Padded positions are computed and then ignored; with the
# >   course's lines a large share of every batch is wasted (section 4). Forgetting
# >   `ignore_index=PAD` is worse: the model then learns to predict padding.
# > - *Filters hide data.* The 16-64 character filter keeps under a quarter of the news
# >   paragraphs and an even smaller share of its characters, and even on sentences it drops
# >   a large part of the text; always measure what a filter throws away.
# > - *Split by document, never by window.* Overlapping windows on both sides of a split make
# >   the validation loss too optimistic. For reviews, deduplicate first: the source material
# >   split the raw review files, duplicates included, so test reviews were also training
# >   reviews.
# > - *`uint16` holds ids up to 65,535.* Fine for characters; a larger vocabulary needs
# >   `uint32` (`pack_documents` refuses to overflow silently).
# > - *`num_workers` in notebooks.* `DataLoader(num_workers=k)` starts processes; on macOS and
# >   Windows they re-import your code, which fails for functions defined in a notebook.
# >   Start with `num_workers=0`.

# %% [markdown]
# ## Exercises
#
# **Exercise 02.1 (a padded example).** Write `make_xy(ids, seq_len, pad=0)`: given the ids of
# one line, return the course's pair `x, y` as lists of length `seq_len`, right-padded with
# `pad`.

# %%
from course_utils.exercises import ch02


def make_xy(ids, seq_len, pad=0):
    raise NotImplementedError


_ = ch02.check_make_xy(make_xy)


# %% tags=["hide-cell"]
def make_xy(ids, seq_len, pad=0):
    x, y = list(ids[:-1]), list(ids[1:])
    return x + [pad] * (seq_len - len(x)), y + [pad] * (seq_len - len(y))


_ = ch02.check_make_xy(make_xy)


# %% [markdown]
# **Exercise 02.2 (useful tokens per batch).** Write `useful_fraction(batch)`: the share of
# entries of an integer tensor that are not `<pad>` (id 0), as a float.

# %%
def useful_fraction(batch):
    raise NotImplementedError


_ = ch02.check_useful_fraction(useful_fraction)


# %% tags=["hide-cell"]
def useful_fraction(batch):
    return (batch != PAD).float().mean().item()


_ = ch02.check_useful_fraction(useful_fraction)


# %% [markdown]
# **Exercise 02.3 (what the 16-64 filter keeps).** Write
# `kept_char_share(texts, min_len, max_len)`: the share of all *characters* that sit in texts
# of `min_len` to `max_len` characters (bounds included). Then use it: which share of the news
# does the course's 16-64 filter keep, and how much would a 16-128 filter keep?

# %%
def kept_char_share(texts, min_len, max_len):
    raise NotImplementedError


_ = ch02.check_kept_char_share(kept_char_share)


# %% tags=["hide-cell"]
def kept_char_share(texts, min_len, max_len):
    return sum(len(t) for t in texts if min_len <= len(t) <= max_len) / sum(len(t) for t in texts)


_ = ch02.check_kept_char_share(kept_char_share)
for hi in [64, 128]:
    print(f"16-{hi} characters: {kept_char_share(news, 16, hi):.1%} of the news characters kept")

# %% [markdown]
# ## Summary
#
# - A training example is `(x, y)` with `y` shifted left by one; the loss ignores `<pad>`.
# - The course's padded 16-64 character lines use only part of each batch and only a small
#   part of the news; packed windows over a `<sep>`-joined `uint16` stream use all of both.
#   Our inline versions agree with `PaddedLines` and `random_batch`; `PackedWindows` serves
#   such windows to a `DataLoader`, the same window for the same index.
# - Splits are made by document (news paragraphs, conversations) and, for reviews, after
#   deduplication, stratified and deterministic: no document is on both sides, and no review
#   text (a few boilerplate news paragraphs recur on both sides, as they recur in the
#   newspaper).
# - Dialogues become `<sep>`-joined examples whose loss covers only the reply.
#
# **Next**, chapters 03 and 04 build the model that consumes these batches: causal
# self-attention, then the GPT itself. Later chapters get the vocabulary and the token
# streams from `course_utils.artifacts`.
