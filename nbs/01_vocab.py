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
# # 01 · A character vocabulary (词表)
#
# A neural network reads numbers, not characters. The first layer of our GPT is an embedding
# table with one row per *token*; the vocabulary (词表) decides what a token is and which row
# it gets. Chinese makes a character-level vocabulary natural: a few thousand characters
# cover a newspaper, there are no spaces to split words on, and no word is ever "unknown" as
# long as its characters are known. In this chapter we build that vocabulary, fix a bug in
# the source material that made ids change from one run to the next, measure how well the
# news characters cover the dialogue and review corpora, and compare characters with word
# tokens (jieba) and BPE subwords: what a larger vocabulary buys and what it costs.
#
# **Learning goals**
#
# - build a character vocabulary with special tokens `<pad>`, `<unk>`, `<sep>` and use it to
#   encode and decode text;
# - see why ids must not depend on the iteration order of a Python `set`, and fix it;
# - measure coverage and the `<unk>` rate on held-out text, and the effect of `min_freq`;
# - read a Zipf plot, and compare characters, words and BPE tokens by vocabulary size and
#   sequence length;
# - save and load a vocabulary, with clear errors for a broken file.

# %%
from course_utils import config, plots

plots.setup()                # CJK font for Chinese labels
profile = config.get_profile()
print(config.summary(profile))
config.seed_everything(0)

# %% [markdown]
# ## 1. The idea
#
# A vocabulary is a bijection between tokens and the integers $0, \dots, V-1$. A text
# $c_1 c_2 \dots c_T$ of $T$ characters becomes the id sequence
# $\big(v(c_1), \dots, v(c_T)\big)$, and the GPT's first layer looks up row $v(c_t)$ of an
# embedding matrix $E \in \mathbb{R}^{V \times d_\text{model}}$. Three ids are reserved:
#
# | id | token | meaning |
# |---|---|---|
# | 0 | `<pad>` | fills short sequences up to a common length; the loss ignores it |
# | 1 | `<unk>` | stands for any character the vocabulary does not know |
# | 2 | `<sep>` | separates dialogue turns and documents |
#
# The figure shows the vocabulary this chapter builds at work on the opening of a conversation
# from the dialogue corpus. Each character becomes its id; the text `<sep>` becomes the single
# id 2; the half-width `?`, which the 1998 newspaper never prints (section 2 counts its ASCII
# characters: none), becomes `<unk>` and cannot be decoded back (section 4 measures how often
# that happens, and fixes it). Below, the vocabulary itself, a table from id to token: the three
# specials, then every character of the news in code-point order.
#
# ![A dialogue turn pair, 你好吗? and 我还不错，你呢?, encoded with the news vocabulary: each character becomes its id, the separator token between and after the turns becomes id 2, and both half-width question marks become the unknown token, id 1. Below, the vocabulary as a table from id to token: the three special tokens at ids 0, 1 and 2, then the characters of the news sorted by code point, with the full-width question mark that the fix maps to](../book/images/vocab.png)
#
# ## 2. Building it inline
#
# The whole news corpus, every distinct character, sorted, after the three specials:

# %%
from course_utils import artifacts, data

news = data.load_news()
SPECIALS = ["<pad>", "<unk>", "<sep>"]
itos = SPECIALS + sorted(set("".join(news)))       # id -> token
stoi = {token: i for i, token in enumerate(itos)}  # token -> id


def encode(text):
    return [stoi.get(ch, 1) for ch in text]  # 1 is <unk>


def decode(ids):
    return "".join(itos[i] for i in ids)


sentence = news[3][:20]
print(sentence, "->", encode(sentence))
assert decode(encode(sentence)) == sentence

# %%
# NBVAL_CHECK_OUTPUT
print(f"vocabulary size: {len(itos)} (3 specials + {len(itos) - 3} characters)")
print("first tokens:", itos[:12])
print("last tokens: ", itos[-8:])
print("ASCII characters in the news:", sum(ch.isascii() for ch in itos[3:]))

# %% [markdown]
# Sorting orders characters by Unicode code point: symbols and punctuation first (`°`, `×`, `—`,
# `“` above; further on signs such as `℃` and `①`, and CJK punctuation such as `、` and `。`),
# then the ideographs, and the full-width forms (`！`, `０`-`９`, `Ａ`-`ｚ`) at the end. The
# newspaper contains no ASCII character at all: remember this for section 4. The order itself
# means nothing to the model; what matters is that it is *fixed*.
#
# Now the canonical version, `course_utils.vocab.Vocab`, on the same text. It must give the
# same ids; later chapters get it (cached on disk) from `artifacts.news_vocab()`:

# %%
from course_utils.vocab import PAD, SEP, UNK, Vocab

vocab = Vocab.build(news)
assert vocab.token2idx == stoi and vocab.idx2token == itos
assert artifacts.news_vocab() == vocab
assert all(vocab.encode(p) == encode(p) for p in news[:2000])
print(vocab, "| PAD, UNK, SEP =", (PAD, UNK, SEP))

# %% [markdown]
# They differ in one place on purpose: `Vocab.encode` reads the text `<sep>` as the single
# token 2, while our inline `encode` sees five characters it does not know. That is what lets
# us write a dialogue as `"你好<sep>你好呀"`:

# %%
print("inline:", encode("你好<sep>"))
print("Vocab: ", vocab.encode("你好<sep>"), "->", vocab.decode(vocab.encode("你好<sep>")))
assert vocab.encode("你好<sep>")[-1] == SEP and encode("你好<sep>")[-1] == UNK

# %% [markdown]
# ## 3. A bug in the source material: ids from a `set`
#
# The course built its vocabulary as `chars = list(set(text))`. That works in one process, but
# Python randomises string hashing per process (the environment variable `PYTHONHASHSEED`), and
# the order of a set of strings follows the hashes. Train a model in one process, load it in
# another, and every character may get a different id: the saved embedding rows no longer
# match the characters. Let us see it happen, in two fresh Python processes:

# %%
import json
import os
import subprocess
import sys

SET_ORDER = """
import json, sys
text = sys.stdin.read()
itos = ["<pad>", "<unk>", "<sep>"] + list(set(text))            # the source material's way
print(json.dumps({ch: i for i, ch in enumerate(itos)}))
"""
SORTED_ORDER = SET_ORDER.replace("list(set(text))", "sorted(set(text))")  # the fix


def ids_in_new_process(program, hashseed):
    env = {**os.environ, "PYTHONHASHSEED": str(hashseed), "PYTHONIOENCODING": "utf-8"}
    out = subprocess.run([sys.executable, "-c", program], input="".join(news), env=env,
                         capture_output=True, text=True, encoding="utf-8", check=True)
    return json.loads(out.stdout)


def compare(program, name):
    a, b = ids_in_new_process(program, 1), ids_in_new_process(program, 2)
    moved = sum(a[ch] != b[ch] for ch in a)
    print(f"{name}: {moved} of {len(a)} tokens have a different id in the two processes")
    print("   id 3..10 with PYTHONHASHSEED=1:", [t for t, _ in sorted(a.items(), key=lambda kv: kv[1])][3:11])
    print("   id 3..10 with PYTHONHASHSEED=2:", [t for t, _ in sorted(b.items(), key=lambda kv: kv[1])][3:11])
    return moved


moved_set = compare(SET_ORDER, "list(set(text))  ")
moved_sorted = compare(SORTED_ORDER, "sorted(set(text))")
assert moved_set > 0 and moved_sorted == 0

# %% [markdown]
# With `sorted`, the ids depend only on the text. `Vocab.build` sorts, and `tests/test_vocab.py`
# repeats this experiment on every test run.
#
# ## 4. Coverage: what the vocabulary does not know
#
# A vocabulary built from some text meets new text later. Every character it has not seen
# becomes `<unk>`, and the model cannot tell two unknown characters apart. We measure the
# `<unk>` rate (the share of characters encoded as `<unk>`) on three kinds of held-out text:
#
# - the news *validation* split, against a vocabulary built from the news *training* split
#   (the split is by paragraph; chapter 02 explains why);
# - the dialogues and the reviews, against the vocabulary of the whole news corpus, which is
#   the one later chapters use for pretraining.

# %%
from collections import Counter

import pandas as pd

train, val = artifacts.news_splits()
train_vocab = Vocab.build(train)
dialogue_text = [t for d in data.load_dialogues() for t in d]
reviews = data.load_sentiment().review.tolist()


def unknown_chars(vocab, texts):
    return Counter(ch for t in texts for ch in t if ch not in vocab)


rows = []
for name, v, texts in [("news validation split", train_vocab, val),
                       ("dialogues", vocab, dialogue_text),
                       ("reviews", vocab, reviews)]:
    missing = unknown_chars(v, texts)
    n_chars = sum(map(len, texts))
    n_unk = sum(missing.values())
    assert n_unk == sum(i == UNK for t in texts for i in v.encode(t))  # the same count via encode
    rows.append((name, len(v), n_chars, n_unk, n_unk / n_chars, len(missing),
                 " ".join(repr(c)[1:-1].replace(" ", "␣") for c, _ in missing.most_common(12))))
coverage_table = pd.DataFrame(rows, columns=["held-out text", "vocab size", "chars", "<unk> chars",
                                             "<unk> rate", "distinct unknown", "most frequent unknown"])

# %%
# NBVAL_CHECK_OUTPUT
print(coverage_table.to_string(index=False, formatters={"<unk> rate": "{:.2%}".format}))
rate = coverage_table.set_index("held-out text")["<unk> rate"]
ascii_share = {name: sum(n for c, n in unknown_chars(vocab, texts).items() if c.isascii())
               / rate[name] / sum(map(len, texts))
               for name, texts in [("dialogues", dialogue_text), ("reviews", reviews)]}
# what the next paragraph says (the corpora and the vocabulary are the same in every profile)
assert rate["news validation split"] < 0.001
assert round(1 / rate["reviews"]) == 16 and round(1 / rate["dialogues"]) == 12
assert min(ascii_share.values()) > 0.9  # the unknown characters are (half-width) ASCII

# %% [markdown]
# The news vocabulary covers held-out news almost perfectly, but not the other corpora: about
# one review character in sixteen and one dialogue character in twelve is unknown. The culprits
# are not rare ideographs but **half-width** ASCII (over 90% of the unknown occurrences): `,`
# `.` `!` `?`, digits, Latin letters and the space. The 1998 newspaper writes these in their
# full-width forms (`，` `１` `Ａ`), which are *different* Unicode characters.
#
# Two remedies. We could normalise all text, news included, before building the vocabulary
# (Exercise 01.3 measures Unicode's NFKC normalisation); but the vocabulary must be fixed
# *before* pretraining, because the embedding table is indexed by it. The book keeps the
# news vocabulary and maps the other way: `data.to_fullwidth(text, vocab)` replaces each
# half-width character the vocabulary lacks by its full-width twin, when the vocabulary has
# that. The fine-tuning chapters apply it to the dialogues and the reviews:

# %%
# NBVAL_CHECK_OUTPUT
for name, texts in [("dialogues", dialogue_text), ("reviews", reviews)]:
    mapped = [data.to_fullwidth(t, vocab) for t in texts]
    before = sum(unknown_chars(vocab, texts).values()) / sum(map(len, texts))
    after = unknown_chars(vocab, mapped)
    print(f"{name:<9}: <unk> rate {before:.2%} -> {sum(after.values()) / sum(map(len, mapped)):.2%} "
          f"after to_fullwidth; still unknown: {' '.join(c.replace(' ', '␣') for c, _ in after.most_common(8))}")
print("example:", reviews[40][:30], "->", data.to_fullwidth(reviews[40], vocab)[:30])

# %% [markdown]
#
# ## 5. Rare characters and `min_freq`
#
# How often does each character occur? Many characters appear only once or twice: the model
# sees too few examples to learn anything about them, yet each costs a row of the embedding
# table. A threshold `min_freq` keeps only characters seen at least that often, and sends
# the others to `<unk>`.

# %%
# NBVAL_CHECK_OUTPUT
val_counts = Counter("".join(val))
n_val = sum(val_counts.values())
rows = []
for min_freq in [1, 2, 3, 5, 10, 20, 50, 100]:
    v = Vocab.build(train, min_freq=min_freq)
    unk = sum(n for ch, n in val_counts.items() if ch not in v)
    rows.append((min_freq, len(v), unk / n_val))
min_freq_table = pd.DataFrame(rows, columns=["min_freq", "vocab size", "val <unk> rate"])
print(min_freq_table.to_string(index=False, formatters={"val <unk> rate": "{:.3%}".format}))

# %%
import matplotlib.pyplot as plt

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.2))
ax1.plot(min_freq_table["min_freq"], min_freq_table["vocab size"], "o-")
ax1.set(xscale="log", xlabel="min_freq (log scale)", ylabel="vocabulary size (tokens)",
        title="Fewer tokens with a higher threshold")
ax2.plot(min_freq_table["min_freq"], 100 * min_freq_table["val <unk> rate"], "o-", color="tab:red")
ax2.set(xscale="log", xlabel="min_freq (log scale)", ylabel="<unk> rate on news val (%)",
        title="...and more unknown characters")
fig.tight_layout()
plt.show()
at_10 = min_freq_table.set_index("min_freq").loc[10]
removed = 1 - at_10["vocab size"] / min_freq_table["vocab size"].iloc[0]
assert 0.28 < removed < 0.4 and at_10["val <unk> rate"] < 0.01  # what the next paragraph says

# %% [markdown]
# Dropping every character seen fewer than 10 times removes roughly a third of the vocabulary
# but turns only a fraction of a percent of the validation text into `<unk>`. The vocabulary
# in this book keeps `min_freq=1`: a character embedding table is the smallest of the
# tokenizations compared in section 7 anyway, and every character of the news text stays
# readable.
#
# ## 6. Zipf's law
#
# Sort the characters by frequency and plot frequency against rank on log-log axes. Natural
# language gives roughly a straight line (Zipf's law, $f(r) \propto r^{-s}$): a few characters
# are extremely common and a long tail is rare.

# %%
import numpy as np

freq = np.array(sorted(vocab.counts.values(), reverse=True))
rank = np.arange(1, len(freq) + 1)
middle = slice(9, 1000)  # fit the slope on ranks 10..1000, away from both ends
slope, intercept = np.polyfit(np.log10(rank[middle]), np.log10(freq[middle]), 1)

fig, ax = plt.subplots(figsize=(6.5, 4))
ax.loglog(rank, freq, ".", ms=4, label="news characters")
ax.loglog(rank, 10**intercept * rank**slope, "--", color="tab:red",
          label=f"fit on ranks 10-1000: slope {slope:.2f}")
top = "\n".join(f"{r}. {ch}  {n:,}" for r, (ch, n) in enumerate(vocab.counts.most_common(5), 1))
ax.text(0.03, 0.05, "most frequent:\n" + top, transform=ax.transAxes, fontsize=10,
        va="bottom", bbox=dict(fc="white", ec="0.8"))
ax.set(xlabel="rank (log scale)", ylabel="frequency: occurrences (log scale)",
       title="Zipf plot of the characters of the news corpus")
ax.legend()
plt.show()
print(f"{(freq == 1).sum()} characters occur once, {(freq <= 5).sum()} at most five times; "
      f"the most common, {vocab.counts.most_common(1)[0][0]!r}, occurs {freq[0]:,} times")
fit = 10**intercept * rank**slope
r_squared = np.corrcoef(np.log10(rank[middle]), np.log10(freq[middle]))[0, 1] ** 2
print(f"straight-line fit on ranks 10-1000: R² = {r_squared:.3f}; from rank 2,000 on the real "
      f"frequencies are below the line {(freq[1999:] < fit[1999:]).mean():.0%} of the time")
assert r_squared > 0.9 and (freq[1999:] < fit[1999:]).all()  # what the next paragraph says

# %% [markdown]
# The middle of the curve is close to a power law (the R² above); the tail falls off faster,
# below the line from rank 2,000 on, because the number of characters in use is limited (a
# few thousand), unlike the number of words.
#
# ## 7. Characters, words or subwords?
#
# GPT-2 does not use characters: it uses BPE (byte-pair encoding), which starts from single
# symbols and repeatedly merges the most frequent adjacent pair into a new token. Chinese NLP
# has long used word segmentation (分词), for example with `jieba`. A larger vocabulary makes
# sequences shorter, so a context window of `block_size` tokens covers more text, but it costs
# embedding rows and spreads the training data over more, rarer tokens.
#
# We compare, on the same split, a character vocabulary, jieba words and BPE vocabularies of
# several sizes trained with Hugging Face `tokenizers`. Each tokenizer learns from the training
# paragraphs; we count tokens on the validation paragraphs. (Under the `ci` profile this uses
# a subset of the corpus, `profile.max_docs` paragraphs.)

# %%
import logging

import jieba
from tqdm.auto import tqdm

jieba.setLogLevel(logging.WARNING)  # jieba logs its dictionary loading to stderr
n_docs = profile.max_docs
tok_train = train if n_docs is None else train[:n_docs]
tok_val = val if n_docs is None else val[: max(200, n_docs // 10)]
val_chars = sum(map(len, tok_val))
print(f"tokenizers learn from {len(tok_train):,} paragraphs ({sum(map(len, tok_train)):,} chars) "
      f"and are measured on {len(tok_val):,} ({val_chars:,} chars)")

results = []  # (tokenizer, vocab size, tokens on val, <unk> tokens on val)
char_vocab = Vocab.build(tok_train)
char_ids = [vocab_id for p in tok_val for vocab_id in char_vocab.encode(p)]
results.append(("characters", len(char_vocab), len(char_ids), char_ids.count(UNK)))

# %%
train_words = [jieba.lcut(p) for p in tqdm(tok_train, desc="jieba (train)")]
val_words = [jieba.lcut(p) for p in tqdm(tok_val, desc="jieba (val)")]
word_counts = Counter(w for ws in train_words for w in ws)
val_tokens = [w for ws in val_words for w in ws]
for min_freq in [1, 5]:
    known = {w for w, n in word_counts.items() if n >= min_freq}
    results.append((f"jieba words, min_freq {min_freq}", len(known) + 3, len(val_tokens),
                    sum(w not in known for w in val_tokens)))
print("jieba:", " / ".join(val_words[0][:15]))

# %%
from tokenizers import Tokenizer, models, pre_tokenizers, trainers


def train_bpe(texts, vocab_size):
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Punctuation()  # no merges across punctuation
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS,
                                  show_progress=False)
    tokenizer.train_from_iterator(texts, trainer)
    return tokenizer


bpe = {}
for size in tqdm([6000, 8000, 16000, 32000], desc="BPE"):
    bpe[size] = train_bpe(tok_train, size)
    encoded = bpe[size].encode_batch(tok_val)
    ids = [i for e in encoded for i in e.ids]
    assert bpe[size].token_to_id("<unk>") == UNK
    results.append((f"BPE {size // 1000}k", bpe[size].get_vocab_size(), len(ids), ids.count(UNK)))
print("BPE 32k:", " / ".join(bpe[32000].encode(tok_val[0]).tokens[:15]))

# %%
comparison = pd.DataFrame(results, columns=["tokenizer", "vocab size", "val tokens", "<unk> tokens"])
comparison["tokens per paragraph"] = comparison["val tokens"] / len(tok_val)
comparison["chars per token"] = val_chars / comparison["val tokens"]
comparison["<unk> rate"] = comparison["<unk> tokens"] / comparison["val tokens"]
comparison["embedding params (d_model 256)"] = comparison["vocab size"] * 256
print(comparison.drop(columns=["val tokens", "<unk> tokens"]).to_string(
    index=False, formatters={"tokens per paragraph": "{:.1f}".format,
                             "chars per token": "{:.2f}".format, "<unk> rate": "{:.2%}".format,
                             "embedding params (d_model 256)": "{:,}".format}))

# %%
fig, ax = plt.subplots(figsize=(7, 4))
is_bpe = comparison.tokenizer.str.startswith("BPE")
ax.plot(comparison[is_bpe]["vocab size"], comparison[is_bpe]["tokens per paragraph"], "o-",
        label="BPE (tokenizers)")
for marker, name in [("s", "characters"), ("^", "jieba words")]:
    rows = comparison[comparison.tokenizer.str.startswith(name)]
    ax.plot(rows["vocab size"], rows["tokens per paragraph"], marker, ms=9, label=name)
for _, row in comparison.iterrows():
    right = row.tokenizer.startswith("jieba")  # label to the left of the point
    ax.annotate(row.tokenizer, (row["vocab size"], row["tokens per paragraph"]),
                textcoords="offset points", xytext=(-8 if right else 6, 6), fontsize=8,
                ha="right" if right else "left")
ax.set(xscale="log", xlabel="vocabulary size (tokens, log scale)",
       ylabel="tokens per validation paragraph", title="A larger vocabulary, shorter sequences")
ax.set_xticks([3000, 5000, 10000, 20000, 50000, 100000], labels=["3k", "5k", "10k", "20k", "50k", "100k"])
ax.xaxis.set_minor_formatter(plt.NullFormatter())
ax.margins(y=0.12)
ax.legend(loc="upper right")
plt.show()

# %%
by_name = comparison.set_index("tokenizer")
bpe_rows = by_name[is_bpe.to_numpy()]
chars_row, words_row, words5_row, bpe32_row = (by_name.loc[n] for n in [
    "characters", "jieba words, min_freq 1", "jieba words, min_freq 5", "BPE 32k"])
config.claim(f"characters need the smallest table ({int(chars_row['vocab size']):,} tokens); a "
             f"jieba word averages {words_row['chars per token']:.1f} characters, and jieba's "
             f"vocabulary is {words_row['vocab size'] / chars_row['vocab size']:.0f} times larger",
             chars_row["vocab size"] == by_name["vocab size"].min()
             and round(words_row["chars per token"], 1) == 1.7
             and words_row["vocab size"] > 10 * chars_row["vocab size"])
config.claim(f"jieba's vocabulary misses {words_row['<unk> rate']:.1%} of the validation words, "
             f"{words5_row['<unk> rate']:.1%} with min_freq 5",
             words5_row["<unk> rate"] > words_row["<unk> rate"] > 0.01)
config.claim("a larger BPE vocabulary gives shorter sequences ("
             + " > ".join(f"{n:.1f}" for n in bpe_rows["tokens per paragraph"])
             + f" tokens per paragraph); BPE 32k's {bpe32_row['tokens per paragraph']:.1f} are no "
             f"more than jieba's {words_row['tokens per paragraph']:.1f}, from a vocabulary "
             f"{bpe32_row['vocab size'] / words_row['vocab size']:.0%} of jieba's size",
             bpe_rows["tokens per paragraph"].is_monotonic_decreasing
             and bpe32_row["tokens per paragraph"] <= words_row["tokens per paragraph"]
             and bpe32_row["vocab size"] < words_row["vocab size"] / 2)
config.claim(f"every BPE vocabulary meets exactly the {int(chars_row['<unk> tokens']):,} unknown "
             "characters the character vocabulary meets",
             (bpe_rows["<unk> tokens"] == chars_row["<unk> tokens"]).all())
config.claim(f"a window of characters holds {1 / words_row['chars per token']:.0%} of the text "
             f"a window of as many jieba words holds, {1 / bpe32_row['chars per token']:.0%} of a "
             "BPE 32k window's",
             all(0.5 < 1 / r["chars per token"] < 0.65 for r in (words_row, bpe32_row)))

# %% [markdown]
# Read the table from top to bottom, with the claims above. Characters need the smallest table,
# but every character is one token. jieba words make the sequences much shorter (a word is 1.7
# characters on average), at the price of a vocabulary more than ten times larger that still
# misses the validation words it never met in training (the second claim); dropping rare words
# makes that worse. BPE lets us choose the trade-off: a larger BPE vocabulary gives steadily
# shorter sequences, and at 32k tokens they are as short as jieba's words with less than half of
# the full jieba vocabulary (min_freq 1; pruned to min_freq 5, jieba's is smaller than BPE 32k
# but misses about one validation word in ten). BPE meets exactly the unknown characters the
# character vocabulary meets (every character it has seen is also a token), so its `<unk>` rate
# stays near the characters': a little higher only because the same unknowns are spread over
# fewer tokens.
#
# The course (and this book) uses characters. For a small model trained on under two million
# characters this is a sound choice: most of the ~4,700 tokens are seen often enough to learn
# (the few hundred seen once, section 6, are not, whatever the tokenizer), the embedding table
# is the smallest of all the tokenizers compared, and every token the model generates is a real
# character. The price is context: a window of `block_size` tokens covers only `block_size`
# characters, little more than half the text the same window would hold with words or a large
# BPE vocabulary (the last claim), and attention's cost grows with the square of the length.
#
# ## 8. Saving and loading
#
# A trained model is useless without *its* vocabulary, so the vocabulary is saved next to it.
# `Vocab.save` writes the token-to-id mapping as JSON (atomically: a crash never leaves half a
# file); `Vocab.load` checks the file before trusting it.

# %%
import tempfile
from pathlib import Path

from course_utils.vocab import VocabError

folder = Path(tempfile.mkdtemp())
vocab.save(folder / "vocab.json")
print((folder / "vocab.json").read_text(encoding="utf-8")[:60].replace("\n", " "), "...")
loaded = Vocab.load(folder / "vocab.json")
assert loaded == vocab and loaded.encode(news[0]) == vocab.encode(news[0])
print("loaded:", loaded, "| cached copy used by later chapters:",
      (config.cache_dir() / "news_vocab.json").is_file())

# %% [markdown]
# A file that is not JSON, lacks a special token, or has two tokens on one id would
# silently scramble a model's inputs. Each is caught with a message that says what is wrong:

# %%
broken = {
    "not_json.json": "<pad> 0\n<unk> 1\n",
    "no_sep.json": json.dumps({"<pad>": 0, "<unk>": 1, "人": 2}),
    "shared_id.json": json.dumps({"<pad>": 0, "<unk>": 1, "<sep>": 2, "人": 3, "民": 3}),
    "gap.json": json.dumps({"<pad>": 0, "<unk>": 1, "<sep>": 2, "人": 4}),
}
for name, text in broken.items():
    (folder / name).write_text(text, encoding="utf-8")
    try:
        Vocab.load(folder / name)
        print(f"{name}: loaded (unexpected!)")
    except VocabError as err:
        print(f"VocabError: {err}".replace(str(folder) + os.sep, ""))

# %% [markdown]
# > **Pitfalls.**
# > - *Ids from a `set`.* The source material built its vocabulary with `list(set(text))`; ids
# >   then change with each process's hash seed and a saved checkpoint stops matching its
# >   vocabulary (section 3). Sort the characters.
# > - *The vocabulary belongs to the model.* Changing `min_freq`, adding a character or
# >   building from different text shifts ids. Save the vocabulary with every checkpoint
# >   and load both together.
# > - *Look-alike characters.* `,` and `，`, `1` and `１` are different characters. A
# >   vocabulary built on 1998 newspaper text does not know the half-width forms that modern
# >   reviews and chats use (section 4). Map them to the forms the vocabulary knows
# >   (`data.to_fullwidth`), or build the vocabulary from all the text the model will see.
# > - *Special tokens in raw text.* `Vocab.encode` treats the string `<sep>` in a text as the
# >   separator token. That is what we want for dialogues; strip such strings from untrusted
# >   input if they should be plain characters.
# > - *Measure coverage on held-out text.* A vocabulary built from all the news covers all the
# >   news by construction: the `<unk>` rate on its own training text is always 0.

# %% [markdown]
# ## Exercises
#
# **Exercise 01.1 (a vocabulary with min_freq).** Write `build_vocab(texts, min_freq)` returning
# a dict token → id with the specials first (`<pad>`=0, `<unk>`=1, `<sep>`=2), then every
# character seen at least `min_freq` times, sorted. It must give exactly the ids of
# `Vocab.build`.

# %%
from course_utils.exercises import ch01


def build_vocab(texts, min_freq=1):
    raise NotImplementedError


_ = ch01.check_build_vocab(build_vocab)


# %% tags=["hide-cell"]
def build_vocab(texts, min_freq=1):
    counts = Counter("".join(texts))
    chars = sorted(ch for ch, n in counts.items() if n >= min_freq)
    return {token: i for i, token in enumerate(SPECIALS + chars)}


_ = ch01.check_build_vocab(build_vocab)


# %% [markdown]
# **Exercise 01.2 (coverage of the top-k characters).** The Zipf plot says a few characters
# dominate. Write `coverage(counts, k)`: given a `Counter` of character counts, the share of all
# occurrences that the `k` most frequent characters account for. Then use it: how much of the
# news do the 100, 1,000 and 3,000 most common characters cover?

# %%
def coverage(counts, k):
    raise NotImplementedError


_ = ch01.check_coverage(coverage)


# %% tags=["hide-cell"]
def coverage(counts, k):
    return sum(n for _, n in counts.most_common(k)) / sum(counts.values())


_ = ch01.check_coverage(coverage)
for k in [100, 1000, 3000]:
    print(f"the {k:>5,} most frequent characters cover {coverage(vocab.counts, k):.2%} of the news")


# %% [markdown]
# **Exercise 01.3 (NFKC normalisation).** Unicode's NFKC normalisation maps compatibility forms
# to a canonical one: full-width `１` and `，` become `1` and `,`. Write
# `nfkc_unk_rate(train_texts, test_texts)`: normalise both sides with
# `unicodedata.normalize("NFKC", text)`, build a `Vocab` from the training texts, and return the
# `<unk>` rate on the test texts. Then apply it to news (train) and reviews (test): how much of
# the reviews' `<unk>` rate of section 4 is left?

# %%
def nfkc_unk_rate(train_texts, test_texts):
    raise NotImplementedError


_ = ch01.check_nfkc_unk_rate(nfkc_unk_rate)


# %% tags=["hide-cell"]
import unicodedata


def nfkc_unk_rate(train_texts, test_texts):
    v = Vocab.build([unicodedata.normalize("NFKC", t) for t in train_texts])
    ids = [i for t in test_texts for i in v.encode(unicodedata.normalize("NFKC", t))]
    return sum(i == UNK for i in ids) / len(ids)


_ = ch01.check_nfkc_unk_rate(nfkc_unk_rate)
print(f"reviews against the news vocabulary: {coverage_table.iloc[2]['<unk> rate']:.2%} <unk> "
      f"as is, {nfkc_unk_rate(news, reviews):.2%} after NFKC")

# %% [markdown]
# ## Summary
#
# - A character vocabulary: `<pad>`=0, `<unk>`=1, `<sep>`=2, then the sorted characters of the
#   news corpus. Our inline version and `course_utils.vocab.Vocab` give identical ids, in
#   every process, whatever its hash seed.
# - It covers held-out news almost completely, but a noticeable share of review and dialogue
#   characters (half-width punctuation, digits, Latin letters) is unknown to it, until
#   `data.to_fullwidth` maps most of them to their full-width twins (the space, a few symbols
#   and a few rare ideographs stay unknown).
# - Character frequencies follow Zipf's law in the middle ranks and fall off faster in the
#   tail; `min_freq` trades vocabulary size for `<unk>`s.
# - Words and BPE shorten sequences (more text per context window) at the cost of a larger
#   vocabulary, and the larger the vocabulary, the shorter the sequences; for our small model
#   characters are the sensible choice.
# - `Vocab.save`/`Vocab.load` store it as JSON and reject malformed files with a clear message.
#
# **Next**, chapter 02 turns id sequences into training batches: the course's padded lines
# against a packed token stream, and splits that do not leak.
