"""Checkers for chapter 05 (training).

Each checker runs the learner's function on small cases whose answers come from
`course_utils.train` (or from the same computation done the plain way) and prints ✓ or ✗
with a hint.
"""

from __future__ import annotations

import torch

from ..evaluation import EVAL_OFFSET, evaluate
from ..model import GPT, GPTConfig
from ..train import TrainConfig, lr_at
from . import checker


def _tiny_gpt(seed: int = 0, **changes):
    torch.manual_seed(seed)
    cfg = dict(vocab_size=20, block_size=8, d_model=16, n_heads=2, n_layers=2, d_ff=32, dropout=0.0)
    cfg.update(changes)
    return GPT(GPTConfig(**cfg))


def _padded_batch(seed: int, rows: int = 6, width: int = 8):
    """(x, y) of token ids 3..19 whose rows end in very different amounts of `<pad>` (0)."""

    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(3, 20, (rows, width), generator=gen)
    y = torch.randint(3, 20, (rows, width), generator=gen)
    for r in range(rows):
        keep = 1 + (r * 3 + seed) % width  # 1..width real targets in this row
        x[r, keep:] = 0
        y[r, keep:] = 0
    return x, y


@checker("Exercise 05.1 (warm-up + cosine schedule)")
def check_lr_schedule(lr_schedule) -> None:
    """`lr_schedule(step, max_steps, lr, warmup_steps, min_lr_ratio) -> float`."""

    settings = [(100, 1.0, 10, 0.1), (50, 3e-3, 5, 0.0), (20, 2e-3, 0, 0.5), (1000, 1e-4, 100, 0.1)]
    for max_steps, lr, warmup, ratio in settings:
        cfg = TrainConfig(max_steps=max_steps, lr=lr, warmup_steps=warmup, min_lr_ratio=ratio,
                          progress=False)
        steps = {0, 1, warmup - 1, warmup, warmup + 1, max_steps // 2, max_steps - 1, max_steps}
        for step in sorted(s for s in steps if s >= 0):
            expected = lr_at(step, cfg)
            got = float(lr_schedule(step, max_steps, lr, warmup, ratio))
            assert abs(got - expected) <= 1e-9 + 1e-6 * lr, (
                f"lr_schedule({step}, max_steps={max_steps}, lr={lr}, warmup_steps={warmup}, "
                f"min_lr_ratio={ratio}) returned {got:.6g}, expected {expected:.6g}. Warm-up: "
                f"lr * (step + 1) / warmup_steps while step < warmup_steps; then a half cosine "
                f"from lr down to lr * min_lr_ratio, reached at step max_steps"
            )


@checker("Exercise 05.2 (gradient accumulation)")
def check_accumulate_step(accumulate_step) -> None:
    """`accumulate_step(model, optimizer, x, y, n_micro) -> float`: one optimizer step on the
    batch (x, y) computed in `n_micro` micro-batches; equal to one step on the whole batch."""

    for n_micro in (2, 3):
        ref, mine = _tiny_gpt(), _tiny_gpt()
        # plain SGD: the size of the gradient shows in the update (Adam would hide a scale)
        ref_opt = torch.optim.SGD(ref.parameters(), lr=0.5)
        my_opt = torch.optim.SGD(mine.parameters(), lr=0.5)
        for i in range(2):
            x, y = _padded_batch(seed=10 * n_micro + i)
            _, loss = ref(x, y)  # the whole batch at once: the reference
            expected = loss.item()
            loss.backward()
            ref_opt.step()
            ref_opt.zero_grad(set_to_none=True)

            got = accumulate_step(mine, my_opt, x.clone(), y.clone(), n_micro)
            assert got is not None, "return the loss of the whole batch as a float"
            got = got.item() if isinstance(got, torch.Tensor) else float(got)
            assert abs(got - expected) < 1e-5, (
                f"n_micro={n_micro}, step {i + 1}: you returned loss {got:.5f}, the whole batch "
                f"has {expected:.5f}. Weight each micro-batch loss by its share of the real "
                f"(non-<pad>) targets, not by 1/n_micro: the rows hold different numbers of them"
            )
            for (name, p), q in zip(ref.named_parameters(), mine.parameters(), strict=True):
                assert torch.allclose(p, q, atol=1e-6), (
                    f"n_micro={n_micro}, step {i + 1}: {name} differs from one step on the whole "
                    f"batch. Call backward() on each micro-batch loss times its share of real "
                    f"targets, zero the gradients only after optimizer.step(), never between "
                    f"micro-batches"
                )
            assert all(p.grad is None or not p.grad.any() for p in mine.parameters()), (
                "gradients are left over after your step: call optimizer.zero_grad() after it"
            )


@checker("Exercise 05.3 (the mean loss over evaluation batches)")
def check_mean_loss(mean_loss) -> None:
    """`mean_loss(model, batches) -> float`: the loss per real target over a list of (x, y)
    batches, in evaluation mode, leaving the model in the mode it was in."""

    class ListSource:  # train.evaluate reads batch i at step EVAL_OFFSET + i
        def __init__(self, batches):
            self.batches = batches

        def get(self, step, rank=0, world_size=1):
            return self.batches[step - EVAL_OFFSET]

    model = _tiny_gpt(dropout=0.3)  # dropout on: evaluation mode matters
    batches = [_padded_batch(seed=s, rows=r) for s, r in ((1, 6), (2, 2), (3, 5))]
    model.train()
    expected = evaluate(model, ListSource(batches), len(batches), "cpu")
    got = mean_loss(model, [(x.clone(), y.clone()) for x, y in batches])
    assert got is not None, "return the mean loss as a float"
    got = float(got)
    assert model.training, ("the model was in training mode and your function left it in "
                            "evaluation mode: call model.train() again at the end (or restore "
                            "the mode it had)")
    assert abs(got - expected) < 1e-5, (
        f"you returned {got:.5f}, expected {expected:.5f}. Use model.eval() (no dropout) and "
        f"torch.no_grad(); weight each batch's loss by its number of real (non-<pad>) targets "
        f"and divide by the total, rather than averaging the per-batch means"
    )
    model.eval()
    got = float(mean_loss(model, batches))
    assert not model.training, "a model in evaluation mode must stay in evaluation mode"
    assert abs(got - expected) < 1e-5, f"in evaluation mode you returned {got:.5f}, expected {expected:.5f}"
