"""Draw book/images/ddp.png, chapter 06's picture of one data-parallel training step.
Run: python book/images/make_ddp.py (style shared with the other figures: _style.py)."""

from __future__ import annotations

from pathlib import Path

import _style as S

W, H = 20, 8
RANK_X = {0: 6, 1: 74}  # left edge of each rank's column
OUT = Path(__file__).with_name("ddp.png")


def box(ax, x, y, kind, title, sub="", w=W, h=H):
    S.box(ax, x, y, w, h, kind, title, [sub] if sub else [], title_size=10, size=8.3, gap=1.6)


def main(out: Path = OUT) -> Path:
    # the axes of the original layout: 8.5 x 4.2 inches for 100 x 56 units
    fig, ax = S.canvas(figsize=(8.5, 4.16), xlim=(0, 100), ylim=(0, 56), equal=False)
    box(ax, 30, 46, "data", "global batch: B windows", "WindowBatches.get(step)", w=40, h=7)
    for r, x in RANK_X.items():
        half = "first" if r == 0 else "second"
        box(ax, x, 33, "data", f"rank {r}: B/2 windows", f"the {half} half of the batch")
        box(ax, x, 20, "model", f"GPT replica (rank {r})", "forward + backward")
        box(ax, x, 7, "tune", f"local gradient g{r}", "mean over its tokens")
        S.arrow(ax, (x + W / 2, 32.6), (x + W / 2, 28.4))
        S.arrow(ax, (x + W / 2, 19.6), (x + W / 2, 15.4))
        S.label(ax, x + W / 2, 1.5, "AdamW step: identical on every rank", size=8.5,
                color=S.ARROW, style="italic", va="baseline")
    S.arrow(ax, (42, 45.6), (RANK_X[0] + W / 2 + 2, 41.4))
    S.arrow(ax, (58, 45.6), (RANK_X[1] + W / 2 - 2, 41.4))
    box(ax, 36, 8, "use", "all-reduce (mean)", "every rank gets (g0 + g1) / 2", w=28, h=12)
    S.arrow(ax, (RANK_X[0] + W + 0.4, 11), (35.6, 13), style="<|-|>")
    S.arrow(ax, (RANK_X[1] - 0.4, 11), (64.4, 13), style="<|-|>")
    S.label(ax, 50, 24.5, "same initial weights (broadcast from rank 0)\n"
            "→ same gradient → same update → replicas stay identical", size=8.8)
    S.label(ax, 50, 3.5, "overlapped with backward: DDP sends gradient buckets while later layers\n"
            "are still being differentiated (gloo on CPU, NCCL between GPUs)", size=7.8,
            color=S.MUTED)
    return S.save(fig, out, dpi=110)


if __name__ == "__main__":
    print(main())
