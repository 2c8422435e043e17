"""Checkers for chapter 11 (fine-tuning for dialogue).

Each checker runs the learner's function on small cases whose answers come from
`course_utils.batches` and `course_utils.chat`, and prints ✓ or ✗ with a hint.
"""

from __future__ import annotations

import torch

from ..batches import DialogueExamples, encode_dialogue
from ..chat import Conversation
from ..model import GPT, GPTConfig
from ..vocab import PAD, SEP, UNK, Vocab
from . import checker

TURNS = [["你好", "你好呀"], ["今天天气怎么样", "很好", "我们去公园吧", "好的，走吧"],
         ["你是谁", "我是一个很小很小的语言模型，只读过一个月的报纸"]]


def _vocab():
    return Vocab.build("".join(t for turns in TURNS for t in turns))


@checker("Exercise 11.1 (response-only targets)")
def check_response_example(response_example) -> None:
    """`response_example(history_ids, reply_ids, block_size) -> (x, y)`: the training pair of
    one reply, as `DialogueExamples(..., response_only=True)` builds it."""

    vocab = _vocab()
    for block_size in (40, 12, 8):
        data = DialogueExamples(TURNS, vocab, block_size, response_only=True)
        k = 0
        for turns in TURNS:
            for i in range(1, len(turns)):
                history = encode_dialogue(turns[:i], vocab)
                reply = encode_dialogue(turns[i:i + 1], vocab)
                want_x, want_y = data[k]
                k += 1
                got = response_example(history, reply, block_size)
                assert isinstance(got, tuple) and len(got) == 2, "return a pair (x, y)"
                x, y = (torch.as_tensor(t) for t in got)
                case = f"history {vocab.decode(history)!r}, reply {vocab.decode(reply)!r}, block_size {block_size}"
                assert tuple(x.shape) == tuple(y.shape) == (block_size,), (
                    f"{case}: x and y have block_size entries, got {tuple(x.shape)} and {tuple(y.shape)}"
                )
                assert torch.equal(x.long(), want_x), (
                    f"{case}: x should be {want_x.tolist()}, got {x.tolist()}. Crop the history from "
                    f"the left so history + reply is at most block_size + 1 tokens; x is the "
                    f"sequence without its last token, padded with <pad>"
                )
                assert torch.equal(y.long(), want_y), (
                    f"{case}: y should be {want_y.tolist()}, got {y.tolist()}. y is the sequence "
                    f"shifted left by one, with <pad> wherever the target is still inside the "
                    f"history: the first learned target is the reply's first token"
                )


@checker("Exercise 11.2 (the context a reply is generated from)")
def check_chat_context(chat_context) -> None:
    """`chat_context(turns, vocab, budget) -> list[int]`: every turn followed by `<sep>`,
    keeping only the last `budget` tokens."""

    vocab = _vocab()
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=len(vocab), block_size=16, d_model=8, n_heads=2,
                          n_layers=1, d_ff=16, dropout=0.0))
    for max_new_tokens in (4, 8, 30):
        for turns in TURNS:
            conv = Conversation(model, vocab, max_new_tokens=max_new_tokens)
            for i, text in enumerate(turns):
                conv.add("user" if i % 2 == 0 else "bot", text)
            want = conv.context_ids()
            got = list(map(int, chat_context(list(turns), vocab, conv.context_budget)))
            assert got == want, (
                f"turns {turns} with budget {conv.context_budget}: expected {want}, got {got}. "
                f"Encode each turn, append <sep> (id 2) after every turn, and keep the last "
                f"`budget` ids"
            )


@checker("Exercise 11.3 (cut a generated reply at <sep>)")
def check_cut_reply(cut_reply) -> None:
    """`cut_reply(new_ids, vocab) -> str`: the text before the first `<sep>`, without specials."""

    vocab = _vocab()
    enc = vocab.encode
    cases = [(enc("很好") + [SEP] + enc("你好"), "很好"),
             (enc("好的") + [SEP, PAD, PAD], "好的"),
             ([SEP] + enc("天气"), ""),
             (enc("走吧"), "走吧"),
             (enc("我") + [UNK] + enc("是") + [SEP], "我是")]
    for ids, want in cases:
        got = cut_reply(list(ids), vocab)
        assert got == want, (
            f"for {vocab.decode(ids)!r} expected {want!r}, got {got!r}: keep the ids before the "
            f"first <sep>, then decode them with skip_special=True"
        )
