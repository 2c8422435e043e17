"""The exercise checkers of chapter 05: ✓ for a right answer, ✗ for a wrong one,
"not attempted" for a stub, and never an exception."""

from __future__ import annotations

import math

import pytest
import torch

from course_utils.exercises import ch05


def _stub(*args, **kwargs):
    raise NotImplementedError


# ------------------------------------------------------------ right answers


def lr_schedule(step, max_steps, lr, warmup_steps, min_lr_ratio):
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, max_steps - warmup_steps))
    min_lr = lr * min_lr_ratio
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * progress))


def accumulate_step(model, optimizer, x, y, n_micro):
    n_real = int((y != 0).sum())
    total = 0.0
    for xb, yb in zip(x.chunk(n_micro), y.chunk(n_micro), strict=True):
        share = int((yb != 0).sum()) / n_real
        _, loss = model(xb, yb)
        (loss * share).backward()
        total += loss.item() * share
    optimizer.step()
    optimizer.zero_grad()
    return total


@torch.no_grad()
def mean_loss(model, batches):
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for x, y in batches:
        _, loss = model(x, y)
        n = int((y != 0).sum())
        total, count = total + loss.item() * n, count + n
    model.train(was_training)
    return total / count


# ------------------------------------------------------------ wrong answers (typical mistakes)


def lr_schedule_no_floor(step, max_steps, lr, warmup_steps, min_lr_ratio):
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, max_steps - warmup_steps))
    return 0.5 * lr * (1 + math.cos(math.pi * progress))  # decays to 0, ignoring min_lr_ratio


def accumulate_step_unweighted(model, optimizer, x, y, n_micro):
    total = 0.0
    for xb, yb in zip(x.chunk(n_micro), y.chunk(n_micro), strict=True):
        _, loss = model(xb, yb)
        (loss / n_micro).backward()  # ignores how many real targets each micro-batch has
        total += loss.item() / n_micro
    optimizer.step()
    optimizer.zero_grad()
    return total


def accumulate_step_zeroing_inside(model, optimizer, x, y, n_micro):
    n_real = int((y != 0).sum())
    total = 0.0
    for xb, yb in zip(x.chunk(n_micro), y.chunk(n_micro), strict=True):
        optimizer.zero_grad()  # throws away the previous micro-batches' gradients
        share = int((yb != 0).sum()) / n_real
        _, loss = model(xb, yb)
        (loss * share).backward()
        total += loss.item() * share
    optimizer.step()
    optimizer.zero_grad()
    return total


@torch.no_grad()
def mean_loss_of_means(model, batches):
    was_training = model.training
    model.eval()
    losses = [model(x, y)[1].item() for x, y in batches]
    model.train(was_training)
    return sum(losses) / len(losses)  # every batch weighs the same


@torch.no_grad()
def mean_loss_train_mode(model, batches):
    total, count = 0.0, 0
    for x, y in batches:  # dropout stays on
        _, loss = model(x, y)
        n = int((y != 0).sum())
        total, count = total + loss.item() * n, count + n
    return total / count


@torch.no_grad()
def mean_loss_no_restore(model, batches):
    model.eval()
    total, count = 0.0, 0
    for x, y in batches:
        _, loss = model(x, y)
        n = int((y != 0).sum())
        total, count = total + loss.item() * n, count + n
    return total / count  # the model is left in evaluation mode


CASES = [
    (ch05.check_lr_schedule, lr_schedule, lr_schedule_no_floor),
    (ch05.check_accumulate_step, accumulate_step, accumulate_step_unweighted),
    (ch05.check_accumulate_step, accumulate_step, accumulate_step_zeroing_inside),
    (ch05.check_mean_loss, mean_loss, mean_loss_of_means),
    (ch05.check_mean_loss, mean_loss, mean_loss_train_mode),
    (ch05.check_mean_loss, mean_loss, mean_loss_no_restore),
]
IDS = ["lr_schedule", "accumulate_unweighted", "accumulate_zero_inside", "mean_of_means",
       "mean_loss_train_mode", "mean_loss_no_restore"]
CHECKS = [ch05.check_lr_schedule, ch05.check_accumulate_step, ch05.check_mean_loss]


@pytest.mark.parametrize("check, right, wrong", CASES, ids=IDS)
def test_right_answer_gets_a_tick(check, right, wrong, capsys):
    ok = check(right)
    out = capsys.readouterr().out
    assert ok is True and out.startswith("✓"), out


@pytest.mark.parametrize("check, right, wrong", CASES, ids=IDS)
def test_wrong_answer_gets_a_cross_and_a_hint(check, right, wrong, capsys):
    ok = check(wrong)
    out = capsys.readouterr().out
    assert ok is False and out.startswith("✗") and len(out) > 40, out


@pytest.mark.parametrize("check", CHECKS)
def test_stub_is_not_attempted(check, capsys):
    ok = check(_stub)
    out = capsys.readouterr().out
    assert ok is False and out.startswith("…") and "not attempted" in out, out


@pytest.mark.parametrize("check", CHECKS)
def test_a_crashing_answer_is_reported_not_raised(check, capsys):
    def crash(*args, **kwargs):
        raise KeyError("oops")

    ok = check(crash)
    out = capsys.readouterr().out
    assert ok is False and "KeyError" in out, out


def test_a_tensor_result_is_accepted(capsys):
    def as_tensor(model, optimizer, x, y, n_micro):
        return torch.tensor(accumulate_step(model, optimizer, x, y, n_micro))

    assert ch05.check_accumulate_step(as_tensor)
