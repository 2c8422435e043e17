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
# # 11a · Going further: long conversations under four samplers
#
# Chapter 11 fine-tuned the GPT on chatterbot's conversations, chose how much history the chat
# keeps, and held short chats with it. This notebook holds long ones: three scripted users say
# ten things each, and the model answers every one of them, with its own earlier replies in
# its history, under the course's four ways of choosing the next character (chapter 08). It
# assumes chapter 11: the dialogue model (`artifacts.dialogue_lm`, which chapter 11 builds and
# caches; built here if it is missing), `course_utils.chat.Conversation` and the reply budget
# `REPLY_TOKENS`, the room that nine in ten of the training replies need.
#
# **What you will see**
#
# - thirty scripted turns under greedy decoding, temperature 0.8, top-k 4 and top-p 0.95;
# - how long, how varied and how original the replies are under each setting;
# - why greedy decoding loops in a conversation, and what sampling does instead.

# %%
from course_utils import config, plots

plots.setup()                # CJK font for Chinese labels
profile = config.get_profile()
print(config.summary(profile))
config.seed_everything(0)

# %% [markdown]
# ## 1. The model and the reply budget
#
# The dialogue model of chapter 11 from the cache, the training replies (to spot copies) and
# the reply budget, computed as chapter 11 computes it.

# %%
from collections import Counter

import numpy as np
import pandas as pd

from course_utils import artifacts
from course_utils.batches import DialogueExamples
from course_utils.chat import Conversation

model, vocab, info = artifacts.dialogue_lm(profile)
train_dialogues, _ = artifacts.dialogue_splits(vocab)
training_replies = {t for d in train_dialogues for t in d[1:]}
train_set = DialogueExamples(train_dialogues, vocab, model.config.block_size, response_only=True)
REPLY_TOKENS = int(np.percentile([len(ids) - n for ids, n in train_set.examples], 90))
history_kept = Conversation(model, vocab, max_new_tokens=REPLY_TOKENS).context_budget
print(f"dialogue model from the {info['base']} base, validation loss on the replies "
      f"{info['val_loss']:.3f}; replies of at most {REPLY_TOKENS} tokens, "
      f"{history_kept} tokens of history")

# %% [markdown]
# ## 2. Three scripted users, four settings
#
# The course compared four ways of choosing the next character (chapter 08): greedy decoding,
# temperature 0.8, top-k with $k = 4$, and top-p (nucleus) with $p = 0.95$. Below, three
# scripted users each say ten things; under each setting the model replies to every one of
# them, with its own earlier replies in its history. Every reply is generated here, now.

# %%
SETTINGS = {"greedy": dict(temperature=0.0, top_k=None, top_p=None),
            "temperature 0.8": dict(temperature=0.8, top_k=None, top_p=None),
            "top-k 4": dict(temperature=1.0, top_k=4, top_p=None),
            "top-p 0.95": dict(temperature=1.0, top_k=None, top_p=0.95)}
SCRIPTS = {
    "small talk": ["你好", "你好吗？", "你叫什么名字？", "你是机器人吗？", "你几岁了？",
                   "你喜欢什么？", "你喜欢音乐吗？", "给我讲个笑话", "你会死吗？", "再见"],
    "about itself": ["什么是人工智能", "你是什么语言编写的", "你能在什么电脑上运行", "你有身体吗",
                     "你会感到伤心吗", "你有朋友吗", "你的爱好是什么", "你会说谎吗", "你聪明吗",
                     "谢谢你"],
    "the world": ["今天天气怎么样", "你知道北京吗", "中国的首都是哪里？", "你看新闻吗",
                  "经济发展得怎么样", "你喜欢什么运动", "你知道篮球吗", "什么是细菌学",
                  "你有多少钱", "晚安"],
}

transcripts = {}
for title, script in SCRIPTS.items():
    for name, settings in SETTINGS.items():
        talk = Conversation(model, vocab, max_new_tokens=REPLY_TOKENS, seed=0, **settings)
        transcripts[title, name] = [talk.say(message) for message in script]
        assert len(talk) == 2 * len(script) >= 20  # ten user turns, ten replies


def show(title):
    table = pd.DataFrame({"user": SCRIPTS[title],
                          **{name: [r[:18] for r in transcripts[title, name]] for name in SETTINGS}})
    print(f"— {title} —")
    print(table.to_string(index=False))


show("small talk")

# %%
show("about itself")

# %%
show("the world")

# %% [markdown]
# A few numbers per setting, over all thirty replies: how long the replies are, how many are
# empty, how many are verbatim copies of a training reply, and how many distinct replies each
# conversation has (ten means no repetition).

# %%
rows = []
for name in SETTINGS:
    replies = [r for title in SCRIPTS for r in transcripts[title, name]]
    rows.append({"setting": name, "mean length": np.mean([len(r) for r in replies]),
                 "empty": sum(not r for r in replies),
                 "copied from training": np.mean([r in training_replies for r in replies]),
                 "distinct per conversation": np.mean([len(set(transcripts[t, name])) for t in SCRIPTS])})
stats = pd.DataFrame(rows).set_index("setting")
print(stats.to_string(formatters={
    "mean length": "{:.1f}".format, "copied from training": "{:.0%}".format,
    "distinct per conversation": "{:.1f}".format}))
greedy = [r for title in SCRIPTS for r in transcripts[title, "greedy"]]
(loop, loop_count), = Counter(greedy).most_common(1)   # ties: the first to occur
print(f"greedy's most repeated reply: {loop!r}, {loop_count} times in {len(greedy)} replies")
distinct = stats["distinct per conversation"]
config.claim(f"greedy decoding has fewer distinct replies per conversation than every sampler "
             f"({distinct['greedy']:.1f} of 10, the samplers at least {distinct.drop('greedy').min():.1f}) "
             f"and repeats its most frequent reply {loop_count} times",
             (distinct.drop("greedy") > distinct["greedy"]).all() and loop_count >= 3)
config.claim(f"under every setting, fewer than half of the replies are copies of a training reply "
             f"(at most {stats['copied from training'].max():.0%})", (stats["copied from training"] < 0.5).all())

# %% [markdown]
# What the transcripts show (the first claim checks the first two points, the second claim
# the copies in the third):
#
# - **Greedy decoding repeats itself.** Once a reply is in the history, the most likely next
#   reply is often the same one again (the most repeated one is printed above): the model
#   conditions on its own recent turns, and greedy decoding has no randomness to break the loop.
# - **Sampling varies more**, for better and worse: more distinct replies per conversation.
#   Top-k with $k=4$ only ever picks among the four most likely characters. Top-p 0.95 at
#   temperature 1 and temperature 0.8 without a filter both reach into the long tail of rare
#   characters, which is where the strangest strings in the transcripts come from. The mean
#   lengths come from one set of random draws, thirty replies per setting: too few to rank the
#   settings by length, so we do not.
# - **Few replies answer the question**, and most are not copies of a training reply. The model
#   has learned the *shape* of a reply, not how to answer one.
#
# > **Pitfalls.**
# > - *Judging a sampler by one conversation.* Thirty replies per setting are too few to rank
# >   the settings by length; the differences that hold (greedy loops, sampling varies) come
# >   from how each setting chooses, not from one transcript.
# > - *Greedy decoding in a chat.* The model reads its own earlier replies: a deterministic
# >   choice that repeats once tends to repeat again. Sample, or penalise repetition
# >   (`repetition_penalty`, chapter 08).
#
# ## Summary
#
# - In long conversations greedy decoding falls into loops: it has no randomness to leave a
#   reply that its own history makes likely.
# - Temperature, top-k and top-p vary more; top-p and temperature without a filter reach the
#   rare characters where the strangest strings come from.
# - Under every setting the model keeps the *shape* of a reply and rarely answers the question:
#   chapter 11, section 8, measured why (its fine-tuning is limited by its data).
#
# Back to [chapter 11](11_finetune_dialogue.ipynb), section 8: how much more dialogue it would
# take.
