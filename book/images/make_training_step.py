"""Draw book/images/training_step.png, chapter 05's training step and learning-rate schedule.
Run: python book/images/make_training_step.py (curve: train.lr_at, cpu profile; style: _style)."""

from __future__ import annotations

from pathlib import Path

import _style as S

from course_utils.config import get_profile
from course_utils.train import TrainConfig, lr_at

OUT = Path(__file__).with_name("training_step.png")
W, H = 21.5, 8.6
# the order of course_utils.train.train's loop body: top row left to right, then back
STEPS = [
    ("tune", "schedule 学习率", ["lr = lr_at(step, cfg)", "set in every param group"]),
    ("data", "batch 批次", ["x, y = source.get(step)", "(B, T) ids; y = x shifted"]),
    ("model", "1 · forward 前向", ["logits = model(x)", "(B, T, V)"]),
    ("model", "2 · loss 损失", ["cross-entropy against y", "<pad> targets ignored"]),
    ("tune", "3 · backward 反向", ["loss.backward()", "adds into every p.grad"]),
    ("tune", "4 · clip", ["clip_grad_norm_(…, 1.0)", "global norm ‖g‖ ≤ 1"]),
    ("use", "5 · AdamW step", ["optimizer.step()", "decay on matrices only"]),
    ("tune", "6 · zero_grad", ["set_to_none=True", "forget this batch's grads"]),
]
TOP_Y, BOT_Y = 42.5, 26.0
XS = [1 + k * (W + 3.6) for k in range(4)]


def loop(ax):
    where = [(XS[k], TOP_Y) for k in range(4)] + [(XS[3 - k], BOT_Y) for k in range(4)]
    for (x, y), (kind, title, lines) in zip(where, STEPS, strict=True):
        S.box(ax, x, y, W, H, kind, title, lines, title_size=10, size=9, gap=1.3)
    for k in range(3):  # top row, left to right; bottom row, right to left
        S.arrow(ax, (XS[k] + W + 0.5, TOP_Y + H / 2), (XS[k + 1] - 0.5, TOP_Y + H / 2))
        S.arrow(ax, (XS[3 - k] - 0.5, BOT_Y + H / 2), (XS[2 - k] + W + 0.5, BOT_Y + H / 2))
    right = XS[3] + W / 2
    S.arrow(ax, (right, TOP_Y - 0.5), (right, BOT_Y + H + 0.5))
    # the next step
    left = XS[0] + W / 2
    S.arrow(ax, (left, BOT_Y + H + 0.5), (left, TOP_Y - 0.5))
    S.label(ax, left + 1, (TOP_Y + BOT_Y + H) / 2, "step += 1", size=9.5, ha="left",
            weight="bold", color=S.ARROW)
    # gradient accumulation repeats forward, loss and backward per micro-batch
    fill, edge = S.TUNE
    xf = XS[2] + W / 2
    S.arrow(ax, (XS[3] + 2, BOT_Y + H + 0.5), (xf + 3, TOP_Y - 0.5), color=edge, ls="--",
            lw=1.2, connectionstyle="arc3,rad=-0.25")
    S.label(ax, xf - 1, (TOP_Y + BOT_Y + H) / 2, "grad_accum > 1: repeat 1-3\nper micro-batch",
            size=9, color=edge, ha="right")
    S.label(ax, 50, 53.3, "One training step (course_utils.train.train)", size=11, weight="bold")


def schedule_panel(fig, ax):
    profile = get_profile("cpu")
    cfg = TrainConfig.from_profile(profile, progress=False)
    steps = list(range(cfg.max_steps))  # the steps train() runs: 0 .. max_steps - 1
    lrs = [lr_at(s, cfg) for s in steps]
    pax = fig.add_axes([0.075, 0.08, 0.5, 0.27])
    pax.plot(steps, lrs, color=S.TUNE[1], lw=2)
    pax.axvline(cfg.warmup_steps, color=S.MUTED, ls=":", lw=1.2)
    pax.axhline(cfg.lr * cfg.min_lr_ratio, color=S.MUTED, ls="--", lw=1)
    pax.set_xlim(0, cfg.max_steps)
    pax.set_ylim(0, cfg.lr * 1.12)
    pax.set_xlabel("step", fontsize=9)
    pax.set_ylabel("learning rate", fontsize=9)
    pax.tick_params(labelsize=9)
    pax.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    pax.yaxis.get_offset_text().set_fontsize(9)
    pax.set_title(f"lr_at(step, cfg), profile {profile.name}", fontsize=10)
    peak = max(range(len(lrs)), key=lrs.__getitem__)
    pax.annotate(f"warm-up ends: step {cfg.warmup_steps}", (cfg.warmup_steps, lrs[peak]),
                 xytext=(cfg.warmup_steps + 180, cfg.lr * 1.02), fontsize=9, color=S.TEXT,
                 va="center")
    pax.text(cfg.warmup_steps + 180, cfg.lr * cfg.min_lr_ratio * 1.5,
             f"floor: lr × min_lr_ratio = {cfg.lr * cfg.min_lr_ratio:.0e}", fontsize=9,
             ha="left", color=S.TEXT)
    S.label(ax, 61, 15.5, "the schedule", size=10, weight="bold", ha="left")
    S.label(ax, 61, 13.2,
            f"warm-up: lr·(s+1)/W for s < W = {cfg.warmup_steps}\n"
            f"then a half cosine from lr = {cfg.lr:g}\n"
            f"down to lr·{cfg.min_lr_ratio:g} at max_steps = {cfg.max_steps}\n"
            "(TrainConfig.from_profile(get_profile(\"cpu\")))\n\n"
            "big steps while the loss falls fast,\nsmall ones to settle at the end",
            size=9, ha="left", va="top", linespacing=1.35)


def main(out: Path = OUT) -> Path:
    fig, ax = S.canvas(figsize=(10, 5.5))
    loop(ax)
    schedule_panel(fig, ax)
    return S.save(fig, out)


if __name__ == "__main__":
    print(main())
