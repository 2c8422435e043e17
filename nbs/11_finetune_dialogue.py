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
# # 11 · Fine-tuning for dialogue (对话微调)
#
# This is where Task 1, the running example of the book, comes together. Our GPT, pretrained
# on a month of People's Daily, continues any text in the style of a 1998 newspaper; chapter 10
# trained a copy further on product reviews. Asked `你好`, neither answers: they go on as a
# newspaper or a review would (or loop) and never stop. To make it *answer*, we show it
# conversations in one fixed format: the turns joined by a separator token, `<sep>`. After
# fine-tuning, a prompt that ends with `<sep>` means "now reply", and a reply that ends with
# `<sep>` means "done, your turn". We train only on what the model should say (the replies),
# then talk to it, in a chat widget and in the terminal, and measure what this chatbot can and
# cannot be: how much of a conversation it can keep in view, and how its loss falls with more
# conversations to learn from.
#
# **Learning goals**
#
# - encode a conversation as one token sequence with `<sep>` between turns;
# - build training examples whose loss covers only the response tokens, and check the mask;
# - choose the base model by its validation loss on the replies, then fine-tune it on
#   conversations (split by conversation) and read the curves;
# - compare samples before and after fine-tuning, and choose how much history a chat keeps by
#   measuring what it buys and what it costs the reply;
# - measure how far 467 tiny conversations are from enough, and plug in a larger corpus.

# %%
from course_utils import config, plots

plots.setup()                # CJK font for Chinese labels
profile = config.get_profile()
print(config.summary(profile))
config.seed_everything(0)

# %% [markdown]
# ## 1. Conversations as one sequence
#
# The dialogues come from the `chatterbot-corpus` package: short Chinese conversations, most
# of them one question and one answer.

# %%
# NBVAL_CHECK_OUTPUT
from collections import Counter

import pandas as pd

from course_utils import artifacts, data

dialogues = data.load_dialogues()
n_turns = Counter(len(d) for d in dialogues)
print(f"{len(dialogues)} conversations, {sum(map(len, dialogues))} turns, "
      f"{sum(map(len, (t for d in dialogues for t in d))):,} characters")
print("turns per conversation:", dict(sorted(n_turns.items())))
for d in [dialogues[0], dialogues[100], next(d for d in dialogues if len(d) >= 5)]:
    print(" | ".join(d)[:110])

# %% [markdown]
# As in chapter 10, the news vocabulary knows digits, Latin letters and punctuation only in
# their full-width forms, so `data.to_fullwidth(text, vocab)` maps the half-width characters
# it lacks (`,` `?` `Python`) before encoding. Then a conversation is its turns, each followed
# by `<sep>` (id 2). The final `<sep>` matters: it is how the model learns to *stop*.

# %%
# NBVAL_CHECK_OUTPUT
from course_utils.batches import encode_dialogue
from course_utils.vocab import PAD, SEP, UNK

vocab = artifacts.news_vocab()


def unk_rate(texts):
    ids = [i for t in texts for i in vocab.encode(t)]
    return sum(i == UNK for i in ids) / len(ids)


turns = [t for d in dialogues for t in d]
print(f"<unk> rate of the dialogue text: {unk_rate(turns):.2%} raw, "
      f"{unk_rate([data.to_fullwidth(t, vocab) for t in turns]):.2%} after to_fullwidth")

example = [data.to_fullwidth(t, vocab) for t in ["你好吗?", "很好,谢谢."]]
ids = []
for turn in example:                        # inline: each turn, then <sep>
    ids += vocab.encode(turn) + [SEP]
print(example, "->", ids)
print("decoded:", vocab.decode(ids))
assert ids == encode_dialogue(example, vocab)

# %% [markdown]
# We split **by conversation**, 90/10: all turns of a conversation are on the same side, so
# the validation loss measures replies to conversations the model has never seen.

# %%
# NBVAL_CHECK_OUTPUT
train_dialogues, val_dialogues = artifacts.dialogue_splits(vocab)
print(f"train: {len(train_dialogues)} conversations, validation: {len(val_dialogues)}")
assert not {tuple(d) for d in train_dialogues} & {tuple(d) for d in val_dialogues}

# %% [markdown]
# ## 2. The loss on the response only
#
# ![A conversation laid out as one sequence with sep after each turn; the input row and the target row shifted by one; the history targets are pad and only the reply and its closing sep count in the loss](../book/images/dialogue_loss.png)
#
# *A conversation as one training example, built by `encode_dialogue` and `DialogueExamples(response_only=True)`: the history is seen but its targets are `<pad>`, so only the reply and its closing `<sep>` are learned.*
#
# Each reply is one training example: the history before it (cropped from the left to fit the
# context) followed by the reply and its `<sep>`. Inputs $x$ and targets $y$ are the sequence
# and the sequence shifted by one, as in pretraining. But the user's words are not ours to
# imitate: the targets inside the history are replaced by `<pad>`, which the loss ignores
# (`ignore_index=<pad>`). With $R$ the positions whose target is a reply token,
#
# $$\mathcal{L} = -\frac{1}{|R|} \sum_{t \in R} \log p_\theta(y_t \mid x_{\le t}).$$
#
# The first learned target is the reply's first character, predicted from the `<sep>` that
# closes the history. Building one example by hand:

# %%
# NBVAL_CHECK_OUTPUT
import torch

block_size = profile.block_size
history = encode_dialogue(["今天天气怎么样", "很好"], vocab)
reply = encode_dialogue(["我们去公园吧"], vocab)
seq = (history + reply)[-(block_size + 1):]          # crop from the left
n_hist = len(seq) - len(reply)
x = torch.full((block_size,), PAD)
y = torch.full((block_size,), PAD)
x[: len(seq) - 1] = torch.tensor(seq[:-1])
y[: len(seq) - 1] = torch.tensor(seq[1:])
y[: n_hist - 1] = PAD                                # targets inside the history: not learned

show = len(seq) - 1
print("pos    ", " ".join(f"{i:>5}" for i in range(show)))
print("x      ", " ".join(f"{vocab.decode([i]):>5}" for i in x[:show].tolist()))
print("y      ", " ".join(f"{vocab.decode([i]) if i != PAD else '·':>5}" for i in y[:show].tolist()))
print(f"{int((y != PAD).sum())} of {show} positions are learned: the reply and its <sep>")

# %% [markdown]
# `batches.DialogueExamples(..., response_only=True)` builds every example this way; it
# must agree with our inline version:

# %%
from course_utils.batches import DialogueExamples

one = DialogueExamples([["今天天气怎么样", "很好", "我们去公园吧"]], vocab, block_size)
x2, y2 = one[1]  # the example of the third turn
assert torch.equal(x2, x) and torch.equal(y2, y)

train_set = DialogueExamples(train_dialogues, vocab, block_size, response_only=True)
val_set = DialogueExamples(val_dialogues, vocab, block_size, response_only=True)
xs, ys = map(torch.stack, zip(*(train_set[i] for i in range(len(train_set))), strict=True))
learned = float((ys != PAD).sum() / (xs != PAD).sum())
print(f"{len(train_set)} training examples, {len(val_set)} validation examples; "
      f"{learned:.0%} of the real input tokens carry a target")

# %% [markdown]
# The mask of a few training examples, the six with the longest histories and six ordinary
# ones: grey history (seen, not learned), blue reply (learned), white padding.

# %%
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import ListedColormap

rows = sorted(range(len(train_set)), key=lambda i: -train_set.examples[i][1])[:6] + list(range(6))
kind = np.stack([np.where(yi != PAD, 2, np.where(xi != PAD, 1, 0)) for xi, yi in map(train_set.__getitem__, rows)])
fig, ax = plt.subplots(figsize=(9, 3.2))
ax.imshow(kind, cmap=ListedColormap(["white", "lightgray", "tab:blue"]), aspect="auto",
          vmin=0, vmax=2)
ax.set(title="Which positions are learned (blue: reply, grey: history, white: padding)",
       xlabel="position in the example", ylabel="example")
ax.grid(False)
plt.show()

# %% [markdown]
# ## 3. Which base model, and what it says before fine-tuning
#
# Two models could start the fine-tuning: the news GPT of chapter 05, and the copy chapter 10
# adapted to product reviews (`artifacts.review_lm`; built here if chapter 10 has not run, a few
# minutes under `cpu`). Reviews might be closer to conversation than news, but that is a guess;
# the fair way to choose is the number we will train on, the loss on the validation replies.

# %%
from course_utils import sampling
from course_utils.batches import DatasetBatches
from course_utils.evaluation import evaluate

bases = {"news": artifacts.pretrained_lm(profile), "reviews": artifacts.review_lm(profile)}
val_batches = DatasetBatches(val_set, len(val_set), shuffle=False)  # one batch: all of it
base_loss = pd.Series({name: evaluate(m, val_batches, 1, next(m.parameters()).device)
                       for name, (m, _, _) in bases.items()}, name="val loss on the replies")
print(base_loss.round(3).to_string())
base = artifacts.DIALOGUE_BASE           # the library's default base for the dialogue model
print(f"reviews - news: {base_loss['reviews'] - base_loss['news']:+.3f} nats/char")
config.claim(f"the library's default base, {base}, is the one with the lower loss on the validation "
             f"replies", base == base_loss.idxmin())
pretrained, vocab, pre_info = bases[base]
loss_before = base_loss[base]

# %% [markdown]
# A reply needs a limit on its length, and the training replies set it: `REPLY_TOKENS` is the
# room that nine in ten of them need, closing `<sep>` included (section 6 weighs this room
# against the history it leaves). The history is cropped from the left so that the reply still
# fits in the context, keeping at least half of it, as the chat below does.

# %%
PROMPTS = ["你好", "你是谁？", "什么是机器人", "你喜欢音乐吗？", "今天天气怎么样"]
reply_lengths = np.array([len(ids) - n for ids, n in train_set.examples])   # each with its <sep>
REPLY_TOKENS = int(np.percentile(reply_lengths, 90))
print(f"training replies: median {np.median(reply_lengths):.0f} tokens; REPLY_TOKENS = {REPLY_TOKENS} "
      f"fits {np.mean(reply_lengths <= REPLY_TOKENS):.0%} of them")


def reply(model, history, max_new_tokens=REPLY_TOKENS, **settings):
    """The model's next turn after `history` (a list of turns), cut at the first <sep>."""
    ids = encode_dialogue([data.to_fullwidth(t, vocab) for t in history], vocab)
    ids = ids[-(block_size - min(max_new_tokens, block_size // 2)):]  # room for the reply
    out = sampling.generate(model, torch.tensor([ids]), max_new_tokens, stop_tokens=[SEP], **settings)
    new = out[0, len(ids):].tolist()
    stopped = SEP in new
    return vocab.decode(new[: new.index(SEP)] if stopped else new, skip_special=True), stopped


before = {p: reply(pretrained, [p], temperature=0) for p in PROMPTS}   # the chosen base
for p, (text, stopped) in before.items():
    print(f"{p:8s} -> {text}{'' if stopped else ' …(no <sep>)'}")
ended = sum(stopped for _, stopped in before.values())
config.claim(f"before fine-tuning, {ended} of {len(PROMPTS)} greedy replies end with a <sep>",
             ended <= len(PROMPTS) // 2)

# %% [markdown]
# Prose, and rarely a `<sep>`: the model has no idea that a turn is supposed to end.
#
# ## 4. Fine-tuning
#
# The run is the book's training loop again, on the dialogue examples: batches of
# `profile.batch_size` examples reshuffled every epoch, `profile.dialogue_steps` steps at peak
# learning rate `profile.finetune_lr`, and an evaluation on the whole validation set a dozen
# times. The corpus is tiny and soon memorised, so this run has its own budget (under `cpu`,
# shorter than chapter 10's fine-tunings: both printed below) and keeps the weights of the
# evaluation with the lowest validation loss (early stopping). `artifacts.dialogue_lm` does all
# that and caches the result for the chat and later chapters; `force=True` runs it here.

# %%
print(artifacts.dialogue_train_config(profile))
print(f"{profile.dialogue_steps} steps (chapter 10's fine-tunings: {profile.finetune_steps}), "
      f"{profile.dialogue_steps * min(profile.batch_size, len(train_set)) / len(train_set):.1f} "
      f"epochs over {len(train_set)} examples")
model, vocab, info = artifacts.dialogue_lm(profile, force=True)
assert info["train_examples"] == len(train_set) and info["val_examples"] == len(val_set)
assert abs(info["val_loss_before"] - loss_before) < 1e-4
print(f"validation loss on the replies: {info['val_loss_before']:.3f} before, "
      f"{info['val_loss']:.3f} after (best at step {info['best_step']} of {info['steps']})")

# %%
h = info["history"]                        # the run's curves
fig, ax = plt.subplots(figsize=(8, 4))
ax.plot(h["step"], h["loss"], color="tab:blue", alpha=0.35, label="training batch loss")
ax.plot(h["eval_step"], h["train_loss"], "o-", color="tab:blue", label="training loss (evaluated)")
ax.plot(h["eval_step"], h["val_loss"], "o-", color="tab:orange", label="validation loss")
ax.axhline(info["val_loss_before"], color="gray", ls=":", label="validation loss before fine-tuning")
ax.axvline(info["best_step"], color="tab:green", ls="--", label=f"kept: step {info['best_step']}")
ax.set(title="Fine-tuning on dialogues (loss on reply tokens only)", xlabel="step",
       ylabel="cross-entropy (nats per character)")
ax.legend(fontsize="small")
plt.show()
config.claim(f"the validation loss fell from {info['val_loss_before']:.3f} to {min(h['val_loss']):.3f} at "
             f"step {info['best_step']}, then rose to {h['val_loss'][-1]:.3f}, while the training loss "
             f"fell from {h['train_loss'][0]:.3f} to {h['train_loss'][-1]:.3f}",
             min(h["val_loss"]) < info["val_loss_before"] and h["val_loss"][-1] > min(h["val_loss"]) + 0.2
             and h["train_loss"][-1] < 0.25 * h["train_loss"][0] and info["best_step"] < info["steps"])

# %% [markdown]
# The validation loss falls at first, then climbs back while the training loss keeps falling
# (the claim above): past its best evaluation the model memorises the training replies, which
# does not help with unseen conversations. Early stopping keeps the best evaluation's weights
# (green). Those first steps teach mostly the *format*: short turns closed by `<sep>`.
#
# ## 5. Before and after
#
# The same prompts before and after, then the first turns of *validation* conversations, which
# the model never saw, next to the reply the corpus gives:

# %%
training_replies = {t for d in train_dialogues for t in d[1:]}
rows, ends = [], []                         # ends: did each fine-tuned reply end with <sep>?
for p in PROMPTS:
    after, stopped = reply(model, [p], temperature=0)
    ends.append(stopped)
    rows.append({"prompt": p, f"{base} base (greedy)": before[p][0][:30],
                 "fine-tuned (greedy)": after + ("" if stopped else " …"),
                 "copy of a training reply": after in training_replies})
pd.set_option("display.max_colwidth", 60)
print(pd.DataFrame(rows).to_string(index=False), "\n")
rows = []
for d in val_dialogues[:12]:
    after, stopped = reply(model, d[:1], temperature=0)
    ends.append(stopped)
    rows.append({"prompt (unseen)": d[0][:16], "corpus reply": d[1][:20],
                 "fine-tuned (greedy)": after[:24] + ("" if stopped else " …"),
                 "copied": after in training_replies})
val_table = pd.DataFrame(rows)
print(val_table.to_string(index=False))
print(f"replies copied verbatim from the training set: {val_table.copied.mean():.0%}")
config.claim(f"after fine-tuning, {sum(ends)} of {len(ends)} greedy replies end with a <sep> within "
             f"{REPLY_TOKENS} tokens (before: {ended} of {len(PROMPTS)})", sum(ends) >= 0.9 * len(ends))

# %% [markdown]
# ## 6. Talking to it, and how much of the conversation it sees
#
# `course_utils.chat.Conversation` keeps a chat's history in exactly the training format,
# applies `to_fullwidth` to what you type, and generates until `<sep>`. The model reads at most
# `block_size` tokens, and what the history takes, the reply cannot have: with room for a reply
# of `max_new_tokens`, the history gets the rest, cropped from the left, but never less than
# half the context (`Conversation.context_budget`; past that, a long reply makes `generate`
# slide its window). How much history is worth keeping? We measure both sides: the loss on the
# validation replies with each history cut to its last $h$ tokens, and the share of the training
# replies (with their `<sep>`) that fit in the `block_size` $- h$ tokens left.

# %%
import copy

from course_utils.chat import Conversation


def with_history(dataset, h):
    """A copy of `dataset` whose examples keep only the last `h` tokens of their history."""
    cut = copy.copy(dataset)
    cut.examples = [(ids[max(0, n - h):], min(n, h)) for ids, n in dataset.examples]
    return cut


device = next(model.parameters()).device
kept = Conversation(model, vocab, max_new_tokens=REPLY_TOKENS).context_budget
trade = pd.DataFrame({"history kept": sorted({1, 2, 4, 8, 16, 24, 32, 48, kept} & set(range(1, block_size)))})
trade["val loss"] = [evaluate(model, DatasetBatches(with_history(val_set, h), len(val_set), shuffle=False),
                              1, device) for h in trade["history kept"]]
trade["replies that fit"] = [np.mean(reply_lengths <= block_size - h) for h in trade["history kept"]]
full, longest = evaluate(model, val_batches, 1, device), max(n for _, n in val_set.examples)
print(trade.round(3).to_string(index=False))
print(f"whole histories: val loss {full:.3f}; the longest validation history has {longest} tokens; "
      f"the chat keeps {kept} of {block_size}, leaving room for {REPLY_TOKENS}")
at = dict(zip(trade["history kept"], trade["val loss"], strict=True))
config.claim(f"the question helps: with only its closing <sep> the reply loss is {at[1]:.3f}, with the "
             f"whole history {full:.3f}", at[1] > full)
config.claim(f"keeping {kept} tokens loses nothing on the held-out conversations, whose histories are at "
             f"most {longest} tokens (loss {at[kept]:.3f})", kept >= longest and abs(at[kept] - full) < 1e-4)

# %% [markdown]
# The question helps: cut to its closing `<sep>`, the history leaves a higher reply loss (the
# first claim); once the whole history fits, nothing changes (the second). Nearly all held-out
# conversations are one question and one answer (47 conversations, 49 replies), so this corpus
# cannot show what a longer memory is worth. What history costs is certain: room for the reply
# (the last column). So the chat keeps all that the reply budget leaves (`block_size` minus
# `REPLY_TOKENS`), not half the context: still a short memory (the next cell prints what the
# model reads). Multi-turn chat needs a longer context (the `gpu` profile's is 128) and
# multi-turn data to learn from.

# %%
conv = Conversation(model, vocab, max_new_tokens=REPLY_TOKENS, temperature=0.8, top_p=0.95, seed=0)
for message in ["你好", "你叫什么名字?", "你喜欢什么?"]:
    print(f"你> {message}\n机> {conv.say(message)}")
print(f"\nwhat the model reads ({len(conv.context_ids())} of at most {conv.context_budget} tokens):")
print(conv.history_text())

# %% [markdown]
# The chat widget below wraps the same `Conversation`: type a message and press Enter. It
# needs a live kernel, so on the website its place shows the transcript of two messages sent
# from code; the website has its own chat box further down, and the terminal has `python -m
# course_utils.chat` (`--help` lists its options).

# %%
from IPython.display import HTML, display

from course_utils.widgets import ChatWidget

chat_box = ChatWidget(model, vocab, max_new_tokens=REPLY_TOKENS, temperature=0.8, top_p=0.95, seed=1)
display(chat_box)
for message in ["你好", "你是机器人吗?"]:
    chat_box.send(message)
display(HTML(chat_box.transcript.value))

# %% [markdown]
# **On the book's website** this box talks to the dialogue model in your browser, with no
# kernel and no server: the model is exported by `course_utils.export` (int8 weights) and run
# by the same JavaScript as chapter 08's explorer ([the GPT in your browser](../book/browser.md)).
# It keeps the history as `Conversation` does, samples at temperature 0.8 with top-p 0.95 (with
# the browser's random numbers, so its replies are not the kernel's), and *清空* clears it. The
# file the site ships is checked against this chapter's model, greedy reply for reply:

# %%
from course_utils import export

site_file = config.REPO / "book" / "_static" / "models" / "dialogue.js"   # `make browser-models`
web_model, _, web_meta = export.load_browser(site_file)
print(f"{site_file.name}: {site_file.stat().st_size / 1e6:.2f} MB, {web_meta['precision']} "
      f"weights, exported from the {web_meta['profile']} model")
assert REPLY_TOKENS == 27, "update data-max-new-tokens of the site's chat box below to REPLY_TOKENS"
if web_meta["profile"] == profile.name:      # under another profile this chapter has another model
    ours = Conversation(model, vocab, max_new_tokens=REPLY_TOKENS, temperature=0)
    web = Conversation(web_model, vocab, max_new_tokens=REPLY_TOKENS, temperature=0)
    for message in ["你好", "你是谁？", "你喜欢什么？"]:
        assert ours.say(message) == web.say(message), "the site's model is not this chapter's"
    print(f"{len(ours.turns) // 2} greedy replies: the same from the site's model as from ours ✓")

# %% [markdown]
# <div class="gpt-chat" data-model="dialogue" data-max-new-tokens="27" data-temperature="0.8" data-top-p="0.95" data-seed="1"><p><em>(In JupyterLab this box stays empty: use the chat widget above. On the book's website it is a live chat.)</em></p></div>
# <script src="../_static/gpt.js"></script>
# <script src="../_static/gpt-demo.js"></script>

# %% [markdown]
# The terminal version reads one line per turn from standard input, so it can also be
# scripted; here it reads two lines and stops at the end of the input:

# %%
import os
import subprocess
import sys

out = subprocess.run([sys.executable, "-m", "course_utils.chat", "--profile", profile.name,
                      "--temperature", "0", "--max-new-tokens", str(REPLY_TOKENS)], input="你好\n你是谁?\n", capture_output=True,
                     text=True, encoding="utf-8", env={**os.environ, "PYTHONIOENCODING": "utf-8"},
                     timeout=600)
print(out.stdout, f"(exit code {out.returncode})")
assert out.returncode == 0

# %% [markdown]
# Long conversations (three scripted users saying ten things each, under greedy decoding,
# temperature, top-k and top-p) are the subject of [Going further: long conversations under four
# samplers](11a_long_conversations.ipynb): greedy decoding falls into loops there, and sampling
# varies more, for better and worse.
#
# ## 8. How far 467 conversations are from enough
#
# 467 conversations, most of them one question and one answer, give a few hundred training
# replies. How much would more help? We fine-tune the same base the same way
# (`dialogue_train_config`, seed, validation set) on an eighth, a quarter and half of the
# training conversations (nested random subsets); all of them is section 4's run. A smaller
# corpus is memorised sooner, so these runs stop at a third of the schedule (`stop_at`; the
# schedule is unchanged), and a claim checks that each had passed its best by then.

# %%
from tqdm.auto import tqdm

from course_utils.train import train

cfg = artifacts.dialogue_train_config(profile, progress=False)
order = np.random.default_rng(0).permutation(len(train_dialogues))
runs = []
for share in tqdm((8, 4, 2), desc="smaller corpora"):
    subset = [train_dialogues[i] for i in sorted(order[: len(train_dialogues) // share])]
    examples = DialogueExamples(subset, vocab, block_size, response_only=True)
    config.seed_everything(0)
    batches = DatasetBatches(examples, min(profile.batch_size, len(examples)), seed=0)
    runs.append((len(subset), train(copy.deepcopy(pretrained), batches, cfg, val_source=val_batches,
                                    stop_at=profile.dialogue_steps // 3).history))
runs.append((len(train_dialogues), info["history"]))                  # all of them: section 4
wall = pd.DataFrame([{"conversations": n, "best val loss": min(r["val_loss"]),
                      "best step": r["eval_step"][int(np.argmin(r["val_loss"]))],
                      "last val loss": r["val_loss"][-1]} for n, r in runs])
slope, intercept = np.polyfit(np.log2(wall.conversations), wall["best val loss"], 1)
print(wall.round(3).to_string(index=False))
config.claim("every run had passed its best evaluation before it stopped",
             bool((wall["last val loss"] > wall["best val loss"]).all()))
config.claim(f"more conversations, lower loss: the trend falls {-slope:.3f} nats per doubling, and all "
             f"{len(train_dialogues)} give the lowest ({wall['best val loss'].iloc[-1]:.3f})",
             slope < 0 and wall["best val loss"].idxmin() == len(wall) - 1)

# %%
far = 16 * len(train_dialogues)
grid = np.geomspace(wall.conversations.min(), far, 50)
fig, ax = plt.subplots(figsize=(8, 3.8))
ax.plot(wall.conversations, wall["best val loss"], "o", ms=8, label="best validation loss of a run")
ax.plot(grid, intercept + slope * np.log2(grid), "--", color="gray",
        label=f"straight-line trend: {slope:+.3f} per doubling")
ax.axhline(info["val_loss_before"], color="gray", ls=":", label="before fine-tuning")
ax.set_xscale("log", base=2)
ax.set(title="The data wall: reply loss against training conversations",
       xlabel="training conversations (log scale)", ylabel="cross-entropy (nats per character)")
ax.legend(fontsize="small")
plt.show()
news, replies = len(artifacts.news_tokens("train")), int(reply_lengths.sum())
print(f"the trend at {far:,} conversations (16 times ours): {intercept + slope * np.log2(far):.3f}; "
      f"the news corpus holds {news:,} tokens, the training replies {replies:,} (each with its <sep>)")

# %% [markdown]
# Every smaller share of the corpus left a higher best reply loss than all of it, and the trend
# falls with more conversations (the second claim); every run had passed its best before it
# stopped (the first), so more steps would not have helped: this fine-tuning is limited by its
# data. The dashed line extrapolates four points from one seed; its value at 16 times our corpus
# (printed above) is an optimistic bound, not a forecast, because a loss has a floor (the
# entropy of the replies) that measured scaling laws approach as a power of the data, each
# doubling buying less than the last. The news corpus is far larger still (printed above), yet
# the pretrained model writes newspaper-like text, not sense (chapter 08): a useful chatbot
# needs orders of magnitude more dialogue, and a larger model. Give `data.load_dialogues` a
# UTF-8 file with one conversation per line, turns separated by a tab or `<sep>`, and
# `artifacts.dialogue_lm(profile, dialogues=path)` fine-tunes on it:

# %%
import tempfile
from pathlib import Path

corpus = Path(tempfile.mkdtemp()) / "my_dialogues.txt"
corpus.write_text("你好\t你好呀，今天过得怎么样？\t还不错\n"
                  "你喜欢看书吗<sep>喜欢，尤其是历史书<sep>为什么<sep>因为能看到过去\n",
                  encoding="utf-8")
mine = data.load_dialogues(corpus)
print(mine)
mine_set = DialogueExamples(mine, vocab, block_size)
print(f"{len(mine)} conversations -> {len(mine_set)} training examples (one per reply)")

# %% [markdown]
# > **Pitfalls.**
# > - *Learning the user's words.* Without the response mask the loss also trains the model
# >   to produce the user's turns: it spends capacity imitating questions and may answer with
# >   one. Check the mask (section 2): no target inside the history.
# > - *Forgetting the closing `<sep>`.* If the reply is not followed by `<sep>` in training,
# >   the model never learns to stop, and generation runs to `max_new_tokens`.
# > - *Splitting by turn.* Turns of one conversation depend on each other; a split by turn puts
# >   half a conversation in training and the other half in validation. Split by conversation.
# > - *Training longer is not better here.* With a few hundred examples the training loss keeps
# >   falling while the validation loss turns up: keep the best evaluation, not the last. More
# >   data, not more steps, is what lowers it (section 8).
# > - *The same format at inference.* The chat must send exactly what training showed: turns
# >   followed by `<sep>`, normalised with `to_fullwidth`, cropped from the left to leave room
# >   for the reply. A missing `<sep>` after the user's turn makes the model *continue* the
# >   user's sentence instead of answering it.
# > - *Reading samples.* A fluent reply may be a memorised training answer: compare with the
# >   corpus before crediting the model with understanding.
#
# ## Exercises
#
# **Exercise 11.1 (response-only targets).** Write `response_example(history_ids, reply_ids,
# block_size)` returning the `(x, y)` tensors of one training example, exactly as
# `DialogueExamples(response_only=True)` makes them (crop the history from the left; `<pad>`
# targets inside the history).

# %%
from course_utils.exercises import ch11


def response_example(history_ids, reply_ids, block_size):
    raise NotImplementedError


_ = ch11.check_response_example(response_example)


# %% tags=["hide-cell"]
def response_example(history_ids, reply_ids, block_size):
    reply_ids = reply_ids[:block_size]
    keep = block_size + 1 - len(reply_ids)
    history_ids = history_ids[-keep:]
    seq = torch.tensor(history_ids + reply_ids)
    x = torch.full((block_size,), PAD)
    y = torch.full((block_size,), PAD)
    x[: len(seq) - 1], y[: len(seq) - 1] = seq[:-1], seq[1:]
    if len(history_ids) > 1:
        y[: len(history_ids) - 1] = PAD
    return x, y


_ = ch11.check_response_example(response_example)


# %% [markdown]
# **Exercise 11.2 (the context a reply is generated from).** Write `chat_context(turns, vocab, budget)`: the ids the model reads before
# replying, every turn followed by `<sep>`, keeping the last `budget` ids (as
# `Conversation.context_ids` does).

# %%
def chat_context(turns, vocab, budget):
    raise NotImplementedError


_ = ch11.check_chat_context(chat_context)


# %% tags=["hide-cell"]
def chat_context(turns, vocab, budget):
    ids = []
    for turn in turns:
        ids += vocab.encode(turn) + [SEP]
    return ids[-budget:]


_ = ch11.check_chat_context(chat_context)


# %% [markdown]
# **Exercise 11.3 (cut a generated reply at <sep>).** Write `cut_reply(new_ids, vocab)`: the text of a generated reply, i.e.
# the ids before the first `<sep>`, decoded without special tokens.

# %%
def cut_reply(new_ids, vocab):
    raise NotImplementedError


_ = ch11.check_cut_reply(cut_reply)


# %% tags=["hide-cell"]
def cut_reply(new_ids, vocab):
    if SEP in new_ids:
        new_ids = new_ids[: new_ids.index(SEP)]
    return vocab.decode(new_ids, skip_special=True)


_ = ch11.check_cut_reply(cut_reply)

# %% [markdown]
# **Exercise 11.4 (loss on whole conversations).** *Open project* (no checker: the answer is a
# measurement). Fine-tune with `response_only=False` and compare the validation loss *on
# replies* and the replies themselves. Does the model start answering questions with questions?
# A reference answer, on a tiny model, is `test_open_project_11_4` in `tests/test_exercises_ch10_11.py`.
#
# **Exercise 11.5 (the other base).** *Open project.* Section 3 chose the base by its loss
# *before* fine-tuning. Does the head start survive fine-tuning? Fine-tune from the other base,
# `artifacts.dialogue_lm(profile, base="news")` (cached in its own file; a few minutes under
# `cpu`), and compare its `info["val_loss"]` and its replies with this chapter's. A reference
# answer, on the `ci` models, is `test_open_project_11_5` in `tests/test_exercises_ch10_11.py`.
#
# ## Summary
#
# - A conversation is one sequence: turns joined by `<sep>`, with a `<sep>` after the last;
#   training examples put the loss on the reply only (history targets are `<pad>`).
# - The base model is chosen by a measurement, the loss on the validation replies before
#   fine-tuning; `artifacts.dialogue_lm` fine-tunes it, split by conversation, keeps the best
#   checkpoint and caches it for `python -m course_utils.chat`, the widget and `Conversation`.
# - The chat keeps as much history as the reply's room (`REPLY_TOKENS`) leaves; the question
#   lowers the reply loss, and what a longer memory is worth this corpus cannot show.
# - The model learns the format (its replies end with `<sep>`), not how to answer. Every smaller
#   share of the corpus gave a higher reply loss than all of it, and each run had passed its
#   best before it stopped: the fine-tuning is limited by its data, not its steps; more dialogue
#   plugs in through `load_dialogues(path)`.
#
# Chapter 12 puts a generator behind an HTTP service for many users at once. It serves the
# pretrained model; `serve.make_app(model, vocab)` takes this chatbot just as well.
