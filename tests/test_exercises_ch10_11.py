"""The exercise checkers of chapters 10 and 11: ✓ for a right answer, ✗ for a typical wrong
one, "not attempted" for a stub, and never an exception."""

from __future__ import annotations

import pytest
import torch

from course_utils.exercises import ch10, ch11
from course_utils.vocab import PAD, SEP


def _stub(*args, **kwargs):
    raise NotImplementedError


# ------------------------------------------------------------ chapter 10


def last_token_pool(hidden, idx):
    return hidden[torch.arange(hidden.size(0)), (idx != PAD).sum(1) - 1]


def last_position_pool(hidden, idx):  # ignores the padding
    return hidden[:, -1]


def last_block_count(config, num_classes):
    d, f, b = config.d_model, config.d_ff, int(config.bias)
    ln = d * (1 + b)
    block = 2 * ln + 4 * d * d + 4 * d * b + 2 * d * f + f * b + d * b
    return block + ln + d * num_classes + num_classes


def last_block_count_no_ln_f(config, num_classes):
    return last_block_count(config, num_classes) - config.d_model * (1 + int(config.bias))


def lora_merge(layer):
    return layer.base.weight + layer.scale * layer.lora_b @ layer.lora_a


def lora_merge_no_scale(layer):
    return layer.base.weight + layer.lora_b @ layer.lora_a


def lora_merge_in_place(layer):
    layer.merge()
    return layer.base.weight


# ------------------------------------------------------------ chapter 11


def response_example(history, reply, block_size):
    reply = reply[:block_size]
    history = history[-(block_size + 1 - len(reply)):]
    seq = torch.tensor(history + reply)
    x, y = torch.full((block_size,), PAD), torch.full((block_size,), PAD)
    x[: len(seq) - 1], y[: len(seq) - 1] = seq[:-1], seq[1:]
    if len(history) > 1:
        y[: len(history) - 1] = PAD
    return x, y


def response_example_unmasked(history, reply, block_size):
    x, y = response_example(history, reply, block_size)
    seq = torch.tensor((history + reply[:block_size])[-(block_size + 1):])
    y[: len(seq) - 1] = seq[1:]
    return x, y


def chat_context(turns, vocab, budget):
    ids = []
    for turn in turns:
        ids += vocab.encode(turn) + [SEP]
    return ids[-budget:]


def chat_context_from_the_start(turns, vocab, budget):
    return chat_context(turns, vocab, 10**9)[:budget]


def cut_reply(ids, vocab):
    ids = ids[: ids.index(SEP)] if SEP in ids else ids
    return vocab.decode(ids, skip_special=True)


def cut_reply_keeping_all(ids, vocab):
    return vocab.decode(ids, skip_special=True)


CASES = [
    (ch10.check_last_token_pool, last_token_pool, last_position_pool),
    (ch10.check_last_block_count, last_block_count, last_block_count_no_ln_f),
    (ch10.check_lora_merge, lora_merge, lora_merge_no_scale),
    (ch10.check_lora_merge, lora_merge, lora_merge_in_place),
    (ch11.check_response_example, response_example, response_example_unmasked),
    (ch11.check_chat_context, chat_context, chat_context_from_the_start),
    (ch11.check_cut_reply, cut_reply, cut_reply_keeping_all),
]


@pytest.mark.parametrize("check, right, wrong", CASES,
                         ids=[f"{c.__name__}-{w.__name__}" for c, _, w in CASES])
def test_checker(check, right, wrong, capsys):
    assert check(right) is True
    assert "✓" in capsys.readouterr().out
    assert check(wrong) is False
    assert "✗" in capsys.readouterr().out
    assert check(_stub) is False
    assert "not attempted" in capsys.readouterr().out
