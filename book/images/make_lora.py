"""Draw book/images/lora.png, chapter 10's LoRA layer: frozen W beside a trainable low-rank B A.
Run: python book/images/make_lora.py (counts from finetune.LoRALinear; style: _style)."""

from __future__ import annotations

from pathlib import Path

import _style as S
import torch
from matplotlib.patches import Circle, FancyBboxPatch, Rectangle, Wedge
from torch import nn

from course_utils.finetune import LoRALinear

OUT = Path(__file__).with_name("lora.png")
D_IN = D_OUT = 128
RANK, ALPHA = 8, 16.0
UNIT = 20.0 / 128   # page units per matrix row/column: W (128 x 128) is 20 units wide


def counts():
    """Trainable and frozen parameter counts of a real LoRALinear around a 128 x 128 Linear."""
    torch.manual_seed(0)
    layer = LoRALinear(nn.Linear(D_IN, D_OUT), rank=RANK, alpha=ALPHA)
    frozen = {n: p.numel() for n, p in layer.named_parameters() if not p.requires_grad}
    trained = {n: p.numel() for n, p in layer.named_parameters() if p.requires_grad}
    assert tuple(layer.lora_a.shape) == (RANK, D_IN) and tuple(layer.lora_b.shape) == (D_OUT, RANK)
    assert not layer.lora_b.any(), "B must start at zero"
    x = torch.randn(3, D_IN)
    assert torch.equal(layer(x), layer.base(x)), "at initialisation the layer equals the base"
    return frozen, trained, layer.scale


def padlock(ax, x, y, s=1.0, color="#777"):
    """A small padlock (the frozen weight), bottom-left corner at (x, y)."""
    ax.add_patch(Wedge((x + 1.1 * s, y + 1.6 * s), 0.75 * s, 0, 180, width=0.28 * s, fc=color,
                       ec=color, zorder=6))
    ax.add_patch(Rectangle((x + 0.35 * s, y + 0.2 * s), 1.5 * s, 1.45 * s, fc=color, ec=color,
                           zorder=6))
    ax.add_patch(Circle((x + 1.1 * s, y + 0.95 * s), 0.2 * s, fc="white", ec="none", zorder=7))


def matrix(ax, x, y, rows, cols, kind, hatch=None):
    fill, edge = S.colors(kind)
    w, h = cols * UNIT, rows * UNIT
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="square,pad=0", fc=fill, ec=edge, lw=1.6,
                                hatch=hatch, zorder=3))
    return w, h


def main(out: Path = OUT) -> Path:
    frozen, trained, scale = counts()
    n_w = frozen["base.weight"]
    n_frozen = sum(frozen.values())
    n_a, n_b = trained["lora_a"], trained["lora_b"]
    fig, ax = S.canvas(figsize=(10, 5.2))

    # x, a column vector of d_in
    xv_x, mid = 3.0, 26.0
    matrix(ax, xv_x, mid - 10, D_IN, RANK / 2, "data")
    S.label(ax, xv_x + 0.3, mid + 11.5, "x", size=12, weight="bold")
    S.label(ax, xv_x + 0.3, mid - 12, f"d_in\n= {D_IN}", size=9, color=S.MUTED, va="top")

    # the frozen path: W x
    wx, wy = 16.0, 28.0
    ww, wh = matrix(ax, wx, wy, D_OUT, D_IN, "grey", hatch="..")
    padlock(ax, wx + ww - 3.4, wy + wh - 3.6, s=1.3)
    S.label(ax, wx + ww / 2, wy + wh + 4.0, "W  (frozen 冻结)", size=11, weight="bold")
    S.label(ax, wx + ww / 2, wy + wh + 1.6, f"d_out × d_in = {D_OUT} × {D_IN}", size=9,
            color=S.MUTED)
    S.label(ax, wx + ww / 2, wy - 1.0, f"the pretrained layer, requires_grad = False:\n"
            f"{n_w:,} weights (+ {n_frozen - n_w} bias)", size=9, color=S.MUTED, va="top")

    # the trainable path: B (A x) * alpha / r
    ax_, ay = 16.0, 10.0
    aw, ah = matrix(ax, ax_, ay, RANK, D_IN, "tune")
    S.label(ax, ax_ + aw / 2, ay + ah + 2.2, f"A  (r × d_in = {RANK} × {D_IN})", size=10.5,
            weight="bold")
    S.label(ax, ax_ + aw / 2, ay - 1.8, "random at start (Kaiming)", size=9, color=S.MUTED)
    bx, by = 45.0, 2.0
    bw, bh = matrix(ax, bx, by, D_OUT, RANK, "tune")
    for k in range(0, D_OUT, 16):  # B starts at zero
        S.label(ax, bx + bw / 2, by + bh - (k + 8) * UNIT, "0", size=9, color=S.TUNE[1])
    S.label(ax, bx + bw + 1.0, by + bh - 1.5, f"B  (d_out × r = {D_OUT} × {RANK})", size=10.5,
            weight="bold", ha="left")
    S.label(ax, bx + bw + 1.0, by + bh - 4.2, "zeros at start: B A x = 0,", size=9, ha="left",
            color=S.TUNE[1])
    S.label(ax, bx + bw + 1.0, by + bh - 6.6, "so training starts exactly", size=9, ha="left",
            color=S.TUNE[1])
    S.label(ax, bx + bw + 1.0, by + bh - 9.0, "at the pretrained model", size=9, ha="left",
            color=S.TUNE[1])

    # wiring: x -> W, x -> A -> (r numbers) -> B -> scale -> +
    xr = xv_x + RANK / 2 * UNIT + 0.4
    S.arrow(ax, (xr, mid), (11, mid), (11, wy + wh / 2), (wx - 0.4, wy + wh / 2))
    S.arrow(ax, (11, mid), (11, ay + ah / 2), (ax_ - 0.4, ay + ah / 2))
    S.arrow(ax, (ax_ + aw + 0.4, ay + ah / 2), (bx - 0.4, ay + ah / 2))
    S.label(ax, (ax_ + aw + bx) / 2 - 0.2, ay - 0.6, f"A x:\n{RANK} numbers", size=9,
            color=S.TUNE[1], va="top")
    plus_x, plus_y = 88.0, wy + wh / 2
    S.arrow(ax, (wx + ww + 0.4, plus_y), (plus_x - 1.4, plus_y))
    S.label(ax, (wx + ww + plus_x) / 2, plus_y + 1.8, "W x + b", size=10)
    sx, sy = plus_x - 5.5, 8.0
    S.box(ax, sx, sy, 11, 5.2, "tune", f"× α / r = {scale:g}", [f"α = {ALPHA:g}, r = {RANK}"],
          title_size=9.5, size=9, rounding=0.8)
    S.arrow(ax, (bx + bw + 0.4, sy + 2.6), (sx - 0.5, sy + 2.6))
    S.arrow(ax, (plus_x, sy + 5.6), (plus_x, plus_y - 1.4))
    ax.add_patch(Circle((plus_x, plus_y), 1.4, fc="white", ec=S.INK, lw=1.3, zorder=5))
    S.label(ax, plus_x, plus_y - 0.05, "+", size=12, weight="bold", zorder=6)
    S.arrow(ax, (plus_x + 1.4, plus_y), (plus_x + 5, plus_y))
    S.label(ax, plus_x + 5.5, plus_y, "y", size=12, weight="bold", ha="left")
    S.label(ax, 99, 51.0, "y = W x + b + (α / r) · B A x", size=11, weight="bold", ha="right")
    S.label(ax, 99, 48.3, "LoRA 低秩适配 (course_utils.finetune.LoRALinear)", size=9,
            color=S.MUTED, ha="right")

    # the parameter count
    n_train = n_a + n_b
    S.box(ax, 58, 22.5, 24, 10, "use", "trainable 可训练", [
        f"A: {RANK} × {D_IN} = {n_a:,}",
        f"B: {D_OUT} × {RANK} = {n_b:,}",
        f"{n_train:,} = {n_train / n_w:.1%} of W's {n_w:,}",
    ], title_size=10, size=9, rounding=0.8)
    S.label(ax, 99, 1.5, "after training, merge(): W ← W + (α / r) B A, one matmul again",
            size=9, color=S.MUTED, ha="right")
    return S.save(fig, out)


if __name__ == "__main__":
    print(main())
