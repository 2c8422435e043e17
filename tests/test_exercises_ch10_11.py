"""The exercise checkers of chapter 10, its deep dive 10a, and chapter 11: ✓ for a right
answer, ✗ for a typical wrong one, "not attempted" for a stub, and never an exception."""

from __future__ import annotations

import pytest
import torch

from course_utils.exercises import ch10, ch10a, ch11
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


def mcnemar_p(pred_a, pred_b, true):
    import math

    import numpy as np

    a, b, t = (np.asarray(x) for x in (pred_a, pred_b, true))
    a_only, b_only = int(((a == t) & (b != t)).sum()), int(((a != t) & (b == t)).sum())
    n = a_only + b_only
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(min(a_only, b_only) + 1)) / 2 ** n) if n else 1.0


def mcnemar_p_all_items(pred_a, pred_b, true):  # counts agreements too
    import math

    import numpy as np

    a, t = np.asarray(pred_a), np.asarray(true)
    k, n = int((a == t).sum()), len(t)
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(min(k, n - k) + 1)) / 2 ** n)


def wilson(correct, n, z=1.96):
    p = correct / n
    center = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * (p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5
    return center - half, center + half


def wald(correct, n, z=1.96):  # the textbook interval: wrong near 0 and 1
    p = correct / n
    return p - z * (p * (1 - p) / n) ** 0.5, p + z * (p * (1 - p) / n) ** 0.5


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
    (ch10a.check_last_token_pool, last_token_pool, last_position_pool),
    (ch10.check_last_block_count, last_block_count, last_block_count_no_ln_f),
    (ch10.check_lora_merge, lora_merge, lora_merge_no_scale),
    (ch10.check_lora_merge, lora_merge, lora_merge_in_place),
    (ch10.check_mcnemar_p, mcnemar_p, mcnemar_p_all_items),
    (ch10a.check_wilson, wilson, wald),
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


# ------------------------------------------------------------ open projects: reference answers


def test_open_project_11_4(one_thread):
    """Exercise 11.4, a reference answer: fine-tune once on replies only and once on whole
    conversations, from the same start, and measure both on the replies of held-out
    conversations. The whole-conversation run trains on more targets; both are judged on
    exactly the same reply tokens."""
    from conftest import tiny_lm

    from course_utils.batches import DatasetBatches, DialogueExamples
    from course_utils.evaluation import evaluate
    from course_utils.train import TrainConfig, train

    dialogues = [["你好", "你好吗？"], ["今天天气很好。", "我很好！"], ["你好吗？", "我很好。"],
                 ["人民日报记者报道", "中国经济发展。"], ["你好", "我很好！", "今天天气很好。"]] * 4
    fit, held_out = dialogues[:15], dialogues[15:]
    losses, targets = {}, {}
    for response_only in (True, False):
        model, vocab = tiny_lm(block_size=16)
        fit_set = DialogueExamples(fit, vocab, 16, response_only=response_only)
        val_set = DialogueExamples(held_out, vocab, 16, response_only=True)   # judged on replies
        targets[response_only] = sum(int((y != PAD).sum()) for _, y in fit_set)
        cfg = TrainConfig(max_steps=30, lr=3e-3, warmup_steps=2, eval_interval=30, eval_iters=1,
                          progress=False)
        train(model, DatasetBatches(fit_set, 8, seed=0), cfg, vocab=vocab)
        losses[response_only] = evaluate(model, DatasetBatches(val_set, len(val_set), shuffle=False), 1, "cpu")
    assert targets[False] > targets[True]          # the history's characters become targets too
    assert all(0 < loss < 10 for loss in losses.values()), losses


def discriminative_groups(classifier, lr, decay=2.6):
    """Exercise 10.4, a reference answer: ULMFiT's discriminative learning rates. The head gets
    `lr`, the last block and final LayerNorm lr / decay, each block below one more factor of
    `decay`, the embeddings the smallest rate."""
    backbone = classifier.backbone
    layers = [list(classifier.head.parameters()),
              list(backbone.blocks[-1].parameters()) + list(backbone.ln_f.parameters())]
    layers += [list(block.parameters()) for block in reversed(backbone.blocks[:-1])]
    layers.append([backbone.tok_emb.weight, backbone.pos_emb.weight])
    return [{"params": params, "lr": lr / decay ** depth} for depth, params in enumerate(layers)]


def test_open_project_11_5(one_thread, tmp_path, monkeypatch):
    """Exercise 11.5, a reference answer: fine-tune the dialogue model from both bases, each
    cached in its own file, and compare their best validation losses on the same replies."""
    from course_utils import artifacts, config

    monkeypatch.setenv("COURSE_CACHE", str(tmp_path))
    profile = config.get_profile("ci")
    runs = {base: artifacts.dialogue_lm(profile, base=base, progress=False, device="cpu")[2]
            for base in artifacts.DIALOGUE_BASES}
    assert {info["path"].name for info in runs.values()} == {
        "dialogue_ci_from_reviews.pt", "dialogue_ci_from_news.pt"}
    for info in runs.values():                        # each improved on its own starting point
        assert info["val_loss"] <= info["val_loss_before"]
        assert info["val_examples"] == runs["news"]["val_examples"]   # judged on the same replies
    gap = runs["reviews"]["val_loss"] - runs["news"]["val_loss"]    # the answer: its sign and size
    assert abs(gap) < 2.0


def test_open_project_10_4(one_thread):
    """Exercise 10.4: every parameter in exactly one group, rates falling with depth, and a
    classifier trained with them learns a separable toy task."""
    from conftest import tiny_gpt

    from course_utils import finetune

    torch.manual_seed(0)
    clf = finetune.GPTClassifier(tiny_gpt(30, 8, n_layers=3), 2, pooling="mean", dropout=0.0)
    groups = discriminative_groups(clf, lr=1e-2)
    ids = [id(p) for g in groups for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in clf.parameters()) and len(set(ids)) == len(ids)
    rates = [g["lr"] for g in groups]
    assert rates == sorted(rates, reverse=True) and rates[0] / rates[-1] == pytest.approx(2.6 ** 4)
    x = torch.randint(3, 30, (64, 8))
    y = (x[:, 0] > 16).long()                           # the label is in the first token
    opt = torch.optim.AdamW(groups)
    for _ in range(150):
        loss = clf(x, y)[1]
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float((clf(x)[0].argmax(-1) == y).float().mean()) > 0.9
