"""Checkers for chapter 14 (preference tuning).

Each checker runs the learner's function on small cases whose answers come from
`course_utils.preference`, and prints ✓ or ✗ with a hint.
"""

from __future__ import annotations

import torch

from .. import preference
from . import checker


@checker("Exercise 14.1 (the leave-one-out baseline)")
def check_leave_one_out(leave_one_out) -> None:
    """`leave_one_out(scores, k) -> advantages`: each score minus the mean of the other k - 1
    scores of its group (rows grouped k at a time)."""
    g = torch.Generator().manual_seed(0)
    for k, groups in ((2, 3), (4, 2), (5, 1)):
        scores = torch.rand(k * groups, generator=g)
        want = preference.leave_one_out(scores, k)
        got = torch.as_tensor(leave_one_out(scores.clone(), k), dtype=torch.float32)
        assert got.shape == want.shape, f"k={k}: return one advantage per score {tuple(want.shape)}, got {tuple(got.shape)}"
        assert torch.allclose(got, want, atol=1e-6), (
            f"k={k}, scores {scores.tolist()}: want {want.tolist()}, got {got.tolist()}. The baseline of a "
            f"score leaves the score itself out: (sum of its group - itself) / (k - 1)")
    same = torch.full((4,), 0.7)
    assert torch.allclose(torch.as_tensor(leave_one_out(same, 4), dtype=torch.float32), torch.zeros(4), atol=1e-6), (
        "equal scores carry no signal: every advantage should be 0")


@checker("Exercise 14.2 (the DPO loss)")
def check_dpo_loss(dpo_loss) -> None:
    """`dpo_loss(logp_chosen, logp_rejected, ref_chosen, ref_rejected, beta) -> loss` (a scalar:
    the mean over pairs)."""
    g = torch.Generator().manual_seed(1)
    for beta in (0.1, 0.5, 2.0):
        lc, lr, rc, rr = (-10 * torch.rand(6, generator=g) for _ in range(4))
        want = preference.dpo_loss(lc, lr, rc, rr, beta)[0]
        got = torch.as_tensor(dpo_loss(lc, lr, rc, rr, beta), dtype=torch.float32)
        assert got.numel() == 1, "return the mean over the pairs: one number"
        assert torch.allclose(got.float(), want, atol=1e-5), (
            f"beta={beta}: want {float(want):.5f}, got {float(got):.5f}. The margin is "
            f"beta * ((logp_chosen - ref_chosen) - (logp_rejected - ref_rejected)); the loss is "
            f"-log sigmoid(margin), averaged")
    zero = torch.zeros(3)
    assert abs(float(torch.as_tensor(dpo_loss(zero, zero, zero, zero, 0.1))) - 0.693147) < 1e-5, (
        "a policy equal to its reference has margin 0 and loss log 2 = 0.6931")


@checker("Exercise 14.3 (the exact KL of two next-token distributions)")
def check_kl(kl) -> None:
    """`kl(p_logits, q_logits) -> KL(p || q)` for two logit vectors (one number, in nats)."""
    g = torch.Generator().manual_seed(2)
    for n in (3, 10, 50):
        p, q = torch.randn(n, generator=g), 2 * torch.randn(n, generator=g)
        logp, logq = torch.log_softmax(p, -1), torch.log_softmax(q, -1)
        want = float((logp.exp() * (logp - logq)).sum())
        got = float(kl(p, q))
        assert abs(got - want) < 1e-5, (
            f"{n} tokens: want {want:.5f}, got {got:.5f}. Turn the logits into log-probabilities with "
            f"log_softmax first; KL(p || q) = sum p * (log p - log q), weighted by p, not by q")
    p = torch.randn(7, generator=g)
    assert abs(float(kl(p, p + 3.0))) < 1e-6, "logits shifted by a constant give the same distribution: KL 0"
