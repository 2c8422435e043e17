"""course_utils.preference: each piece on cases small enough to check by hand."""

import copy
import math

import numpy as np
import pytest
import torch

from course_utils import preference as pref
from course_utils.model import GPT, GPTConfig
from course_utils.vocab import PAD, SEP, Vocab


@pytest.fixture(scope="module")
def vocab():
    return Vocab.build(["好书很棒不错差劲失望一般还行真的"])


@pytest.fixture
def tiny(vocab):
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=len(vocab), block_size=16, d_model=16, n_heads=2, n_layers=1,
                         d_ff=32, dropout=0.0)).eval()


# ---------------------------------------------------------------- prompts


def test_prompts_come_from_the_texts_given_and_hold_out_apart():
    fit = [f"{a}{b}很好的书" for a in "一二三四五六七八" for b in "甲乙丙丁"]
    train, held = pref.review_prompts(fit, n_chars=2, n_heldout=5, seed=1)
    assert len(held) == 5 and len(train) == 32 - 5
    assert not set(train) & set(held)
    assert set(train) | set(held) == {t[:2] for t in fit}
    with pytest.raises(ValueError, match="fewer than n_heldout"):
        pref.review_prompts(fit, n_chars=2, n_heldout=32)


def test_no_prompt_comes_from_a_validation_or_test_review():
    from course_utils import artifacts
    from course_utils.config import get_profile

    profile = get_profile("ci")
    fit, val, test = artifacts.sentiment_splits(profile)
    train, held = pref.review_prompts(fit.text.tolist(), n_chars=4, n_heldout=100)
    fit_openings = {t[:4] for t in fit.text}
    only_unseen = {t[:4] for t in list(val.text) + list(test.text)} - fit_openings
    assert only_unseen, "the check needs openings that only validation/test reviews have"
    assert not (set(train) | set(held)) & only_unseen
    assert set(train) | set(held) <= fit_openings


# ---------------------------------------------------------------- rollouts and log-probabilities


def test_rollout_stops_at_sep_and_logprobs_match_a_hand_sum(tiny, vocab):
    prompts = torch.tensor([vocab.encode("好书")] * 6)
    batch = pref.rollout(tiny, prompts, 8, vocab, generator=torch.Generator().manual_seed(0))
    assert batch.ids.shape[0] == 6 and batch.ids.shape[1] <= 2 + 8
    stopped = 0
    for row, mask in zip(batch.ids[:, 2:].tolist(), batch.mask.tolist(), strict=True):
        n = int(sum(mask))
        assert mask == [1.0] * n + [0.0] * (len(mask) - n)
        assert SEP not in row[:n - 1] and all(t == PAD for t in row[n:])
        stopped += n < len(row) or row[-1] == SEP
    assert stopped, "the check needs a row that stopped at <sep>: change the seed"
    logp = pref.token_logprobs(tiny, batch.ids, 2, batch.mask)
    r = 0
    n = int(batch.mask[r].sum())
    by_hand = sum(torch.log_softmax(tiny(batch.ids[r:r + 1, :2 + t])[0][0, -1], -1)[batch.ids[r, 2 + t]]
                  for t in range(n))
    assert logp[r].sum().item() == pytest.approx(by_hand.item(), abs=1e-4)
    assert (logp[batch.mask == 0] == 0).all()


def test_sampled_kl_estimate_converges_to_the_exact_sum(tiny, vocab):
    """On a tiny vocabulary: the mean of log p(x) - log q(x) over x ~ p is KL(p || q), and
    token_kl sums p (log p - log q) exactly."""
    torch.manual_seed(1)
    p_logits, q_logits = torch.randn(len(vocab)), torch.randn(len(vocab))
    logp, logq = torch.log_softmax(p_logits, -1), torch.log_softmax(q_logits, -1)
    exact = float((logp.exp() * (logp - logq)).sum())
    x = torch.multinomial(logp.exp(), 200_000, replacement=True, generator=torch.Generator().manual_seed(0))
    estimate = float((logp[x] - logq[x]).mean())
    assert estimate == pytest.approx(exact, abs=0.02)
    other = copy.deepcopy(tiny)
    with torch.no_grad():
        other.lm_head.weight.add_(0.3 * torch.randn_like(other.lm_head.weight))
    ids = torch.tensor([vocab.encode("好书很棒")])
    kl = pref.token_kl(tiny, other, ids, 2, torch.ones(1, 2))
    lp = torch.log_softmax(tiny(ids[:, :-1])[0][0, 1:], -1)
    lq = torch.log_softmax(other(ids[:, :-1])[0][0, 1:], -1)
    assert torch.allclose(kl[0], (lp.exp() * (lp - lq)).sum(-1), atol=1e-6)
    assert (kl >= 0).all() and pref.token_kl(tiny, tiny, ids, 2, torch.ones(1, 2)).abs().max() < 1e-6


# ---------------------------------------------------------------- RLHF


def test_leave_one_out_baseline_by_hand():
    scores = torch.tensor([1.0, 2.0, 3.0, 10.0, 10.0, 10.0])
    adv = pref.leave_one_out(scores, 3)
    assert adv.tolist() == pytest.approx([1 - 2.5, 2 - 2.0, 3 - 1.5, 0, 0, 0])
    assert adv[3:].abs().max() == 0                          # equal samples: no signal
    with pytest.raises(ValueError, match="divisible"):
        pref.leave_one_out(scores, 4)


def test_kl_penalty_and_reinforce_gradient_sign():
    reward = torch.tensor([1.0, 0.0])
    logp = torch.tensor([[-1.0, -1.0], [-2.0, 0.0]])
    ref = torch.tensor([[-1.5, -1.5], [-2.0, 0.0]])
    assert pref.kl_penalized(reward, logp, ref, 0.1).tolist() == pytest.approx([1.0 - 0.1 * 1.0, 0.0])
    theta = torch.zeros(2, requires_grad=True)              # log-probs that move with theta
    loss = pref.reinforce_loss(theta.view(2, 1) - 1.0, torch.tensor([1.0, -1.0]))
    loss.backward()
    assert theta.grad[0] < 0 < theta.grad[1]               # descent raises the better sample


# ---------------------------------------------------------------- DPO


def test_dpo_loss_by_hand_and_its_gradient_sign():
    zero = torch.zeros(3)
    loss, stats = pref.dpo_loss(zero, zero, zero, zero, beta=0.1)
    assert float(loss) == pytest.approx(math.log(2))         # policy == reference: log 2
    chosen = torch.tensor([-3.0], requires_grad=True)
    rejected = torch.tensor([-4.0], requires_grad=True)
    loss, stats = pref.dpo_loss(chosen, rejected, torch.tensor([-3.5]), torch.tensor([-3.0]), beta=0.5)
    margin = 0.5 * ((-3.0 + 3.5) - (-4.0 + 3.0))
    assert float(loss) == pytest.approx(-math.log(1 / (1 + math.exp(-margin))))
    loss.backward()
    assert chosen.grad[0] < 0 < rejected.grad[0]           # descent: chosen up, rejected down
    assert stats["pair_accuracy"] == 1.0


def test_preference_pairs_pick_best_and_worst_of_each_group():
    reward = torch.tensor([0.2, 0.9, 0.5, 0.4, 0.4, 0.4, 0.1, 0.3, 0.7])
    chosen, rejected = pref.preference_pairs(reward, 3)
    assert chosen.tolist() == [1, 8] and rejected.tolist() == [0, 6]   # the tied group is dropped


# ---------------------------------------------------------------- the loop and the measures


@pytest.mark.parametrize("method", pref.METHODS)
def test_tune_moves_the_policy_toward_the_reward_and_never_the_reference(tiny, vocab, method):
    """A reward for writing 好: after a few steps the policy writes it more often; the
    reference's weights are untouched."""
    policy, reference = copy.deepcopy(tiny), copy.deepcopy(tiny)
    before = {k: v.clone() for k, v in reference.state_dict().items()}
    good = vocab.encode("好")[0]
    reward_fn = lambda ids: (ids[:, 2:] == good).float().mean(1)
    prompts = torch.tensor([vocab.encode(p) for p in ("好书", "很棒", "不错", "差劲")])
    cfg = pref.TuneConfig(method=method, lr=3e-2, steps=25, max_new_tokens=6, beta=0.5, kl_coef=0.0)
    history = pref.tune(policy, reference, reward_fn, prompts, vocab, cfg, progress=False)
    assert len(history["step"]) == 25 and history["kl"][0] == pytest.approx(0.0, abs=1e-5)
    assert np.mean(history["reward"][-5:]) > np.mean(history["reward"][:5]) + 0.1
    assert all(torch.equal(before[k], v) for k, v in reference.state_dict().items())
    assert not any(p.requires_grad for p in reference.parameters())


def test_settings_are_checked():
    with pytest.raises(ValueError, match="method"):
        pref.TuneConfig(method="ppo")
    with pytest.raises(ValueError, match="samples_per_prompt"):
        pref.TuneConfig(samples_per_prompt=1)


def test_diversity_measures_by_hand():
    assert pref.distinct_n(["好好好好"], 1) == 0.25
    assert pref.distinct_n(["好书", "好书"], 2) == 0.5
    assert pref.repetition_rate(["好好好好"], 2) == pytest.approx(2 / 3)
    assert pref.repetition_rate(["一二三四"], 2) == 0.0


def test_classifier_reward_drops_sep_and_reads_a_block(tiny, vocab):
    from course_utils.finetune import GPTClassifier

    torch.manual_seed(0)
    clf = GPTClassifier(copy.deepcopy(tiny), 2).eval()
    ids = torch.tensor([vocab.encode("好书很棒") + [SEP, PAD], vocab.encode("好书很棒") + [PAD, PAD]])
    r = pref.classifier_reward(clf, ids, vocab)
    assert r.shape == (2,) and float(r[0]) == pytest.approx(float(r[1]))
    assert ((0 < r) & (r < 1)).all()


# ---------------------------------------------------------------- the site's tuned policy


def test_site_positive_model_is_chapter_14s():
    """Chapter 14 printed the greedy continuation of 这本书 by its tuned policy as the page
    computes it (int8) under `cpu`; the positive.js the site ships continues it the same way."""
    import json
    import re

    from course_utils import export, sampling
    from course_utils.config import REPO

    model, vocab, meta = export.load_browser(REPO / "book" / "_static" / "models" / "positive.js")
    assert meta["profile"] == "cpu"
    cells = json.loads((REPO / "nbs" / "14_preference_tuning.ipynb").read_text(encoding="utf-8"))["cells"]
    lines = ["".join(o.get("text", "")) for c in cells for o in c.get("outputs", [])]
    found = [m.group(1) for text in lines for m in [re.search(r"greedy after 这本书: (.*)", text)] if m]
    assert found, "chapter 14 has no stored greedy continuation: execute it under cpu"
    out = sampling.generate(model, torch.tensor([vocab.encode("这本书")]), 24, temperature=0, stop_tokens=[SEP])
    assert "这本书" + vocab.decode(out[0, 3:].tolist(), skip_special=True) == found[0].strip()
