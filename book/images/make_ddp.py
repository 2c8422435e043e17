"""Draw book/images/ddp.png, chapter 06's picture of one data-parallel training step
(run: python book/images/make_ddp.py)."""

from __future__ import annotations

import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
logging.getLogger("matplotlib.font_manager").setLevel(logging.ERROR)
import matplotlib.pyplot as plt
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

from course_utils import plots

DATA, MODEL, GRAD, COMM = ("#e8f1fb", "#3b78b8"), ("#fdf0e0", "#c77a1a"), \
    ("#f3eafa", "#8150a8"), ("#e9f6ea", "#3f8f46")
W, H = 20, 8


def box(ax, x, y, colors, title, sub="", w=W, h=H):
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.3,rounding_size=1.0",
                                fc=colors[0], ec=colors[1], lw=1.5))
    ax.text(x + w / 2, y + h / 2 + (1.3 if sub else 0), title, ha="center", va="center",
            fontsize=10, weight="bold")
    if sub:
        ax.text(x + w / 2, y + h / 2 - 1.6, sub, ha="center", va="center", fontsize=8.3, color="#333")


def arrow(ax, a, b, color="#555", style="-|>"):
    ax.add_patch(FancyArrowPatch(a, b, arrowstyle=style, mutation_scale=12, color=color, lw=1.4,
                                 shrinkA=0, shrinkB=0))


def main(out: Path = Path(__file__).with_name("ddp.png")) -> Path:
    plots.setup()
    fig, ax = plt.subplots(figsize=(11, 5.4))
    ax.set_xlim(0, 100)
    ax.set_ylim(0, 56)
    ax.axis("off")
    box(ax, 30, 46, DATA, "global batch: B windows", "WindowBatches.get(step)", w=40, h=7)
    cols = {0: 6, 1: 74}
    for r, x in cols.items():
        half = "first" if r == 0 else "second"
        box(ax, x, 33, DATA, f"rank {r}: B/2 windows", f"the {half} half of the batch")
        box(ax, x, 20, MODEL, f"GPT replica (rank {r})", "forward + backward")
        box(ax, x, 7, GRAD, f"local gradient g{r}", "mean over its tokens")
        arrow(ax, (x + W / 2, 32.6), (x + W / 2, 28.4))
        arrow(ax, (x + W / 2, 19.6), (x + W / 2, 15.4))
        ax.text(x + W / 2, 1.5, "AdamW step: identical on every rank", ha="center", fontsize=8.5,
                color="#555", style="italic")
    arrow(ax, (42, 45.6), (cols[0] + W / 2 + 2, 41.4))
    arrow(ax, (58, 45.6), (cols[1] + W / 2 - 2, 41.4))
    box(ax, 36, 8, COMM, "all-reduce (mean)", "every rank gets (g0 + g1) / 2", w=28, h=12)
    arrow(ax, (cols[0] + W + 0.4, 11), (35.6, 13), style="<|-|>")
    arrow(ax, (cols[1] - 0.4, 11), (64.4, 13), style="<|-|>")
    ax.text(50, 24.5, "same initial weights (broadcast from rank 0)\n"
            "→ same gradient → same update → replicas stay identical",
            ha="center", va="center", fontsize=8.8, color="#333")
    ax.text(50, 3.5, "overlapped with backward: DDP sends gradient buckets while later layers\n"
            "are still being differentiated (gloo on CPU, NCCL between GPUs)",
            ha="center", va="center", fontsize=7.8, color="#666")
    fig.savefig(out, dpi=110, bbox_inches="tight", facecolor="white")
    plt.close(fig)
    return out


if __name__ == "__main__":
    print(main())
