"""Draw book/images/attention.png, chapter 03's scaled dot-product attention and its masks.
Run: python book/images/make_attention.py (numbers from course_utils.attention; style: _style)."""

from __future__ import annotations

import math
from pathlib import Path

import _style as S
import torch

from course_utils.attention import attention, causal_mask, padding_mask
from course_utils.vocab import PAD

OUT = Path(__file__).with_name("attention.png")
T, D = 5, 4                 # positions and head_dim of the worked example (one batch row, one head)
SMALL, BIG = 2.4, 4.0       # cell sizes: Q/K/V cells, T x T cells
MASK_T = 4                  # positions of the mask panel
# two sequences of the mask panel: characters, "" = <pad>
SEQS = [["今", "天", "下", "雨"], ["你", "好", "", ""]]


def example():
    """Q, K, V, the masked scores and the weights, computed by course_utils.attention."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 1, T, D, generator=g) for _ in range(3))
    mask = causal_mask(T)
    out, weights = attention(q, k, v, mask)
    scores = (q @ k.transpose(-2, -1) / math.sqrt(D)).masked_fill(~mask, float("-inf"))
    return q[0, 0], k[0, 0], v[0, 0], scores[0, 0], weights[0, 0], out[0, 0], mask


def num(x) -> str:
    """One decimal, without a "-0.0"."""
    text = f"{float(x):.1f}"
    return "0.0" if text == "-0.0" else text


def matrix(ax, x, top, rows, cols, kind, name, shape, cw=SMALL, name_side="top"):
    """A plain coloured matrix (no numbers) with its name and shape."""
    fill, edge = S.colors(kind)
    S.grid(ax, x, top, rows, cols, cw, fill=fill, edge=edge)
    w, h = cols * cw, rows * cw
    if name_side == "top":
        S.label(ax, x + w / 2, top + 3.6, name, size=11, weight="bold")
        S.label(ax, x + w / 2, top + 1.4, shape, size=9, color=S.MUTED)
    else:  # below
        S.label(ax, x + w / 2, top - h - 1.8, name, size=11, weight="bold")
        S.label(ax, x + w / 2, top - h - 4.0, shape, size=9, color=S.MUTED)


def main(out: Path = OUT) -> Path:
    q, k, v, scores, weights, o, mask = example()
    fig, ax = S.canvas(figsize=(10, 5.6))
    top = 49.0

    # ---- Q, K^T
    matrix(ax, 1, top - 3, T, D, "data", "Q", "(B, H, T, head_dim)")
    S.label(ax, 12.2, top - 3 - T * SMALL / 2, "·", size=16)
    matrix(ax, 13.6, top - 4.2, D, T, "data", "Kᵀ", "(B, H, head_dim, T)")

    # ---- scores, masked
    sx = 32.5
    red_fill, red_edge = S.RED
    blue_fill = S.DATA[0]
    S.arrow(ax, (26.8, top - 3 - T * SMALL / 2), (sx - 0.8, top - 3 - T * SMALL / 2))
    S.label(ax, 29.2, top - 3 - T * SMALL / 2 + 2.0, "÷√d_k", size=9.5)
    S.grid(ax, sx, top, T, T, BIG,
           fill=lambda r, c: blue_fill if mask[r, c] else red_fill,
           text=lambda r, c: num(scores[r, c]) if mask[r, c] else "−∞",
           text_color=lambda r, c: S.INK if mask[r, c] else red_edge)
    S.label(ax, sx + T * BIG / 2, top + 3.6, "scores  QKᵀ/√d_k  + mask", size=11, weight="bold")
    S.label(ax, sx + T * BIG / 2, top + 1.4, "(B, H, T_q, T_k): row = query, column = key",
            size=9, color=S.MUTED)
    S.label(ax, 1, top - 17, "above the diagonal: future keys,\n"
            "scores.masked_fill(~mask, −∞)", size=9, color=red_edge, ha="left", va="top")

    # ---- softmax weights
    wx = 59.5
    S.arrow(ax, (sx + T * BIG + 0.8, top - T * BIG / 2), (wx - 0.8, top - T * BIG / 2))
    S.label(ax, (sx + T * BIG + wx) / 2, top - T * BIG / 2 + 2.6, "softmax", size=9.5)
    S.label(ax, (sx + T * BIG + wx) / 2, top - T * BIG / 2 - 2.4, "per row", size=9)
    S.grid(ax, wx, top, T, T, BIG,
           fill=lambda r, c: (0.23, 0.47, 0.72, 0.1 + 0.75 * float(weights[r, c])) if mask[r, c]
           else "white",
           text=lambda r, c: f"{weights[r, c]:.2f}" if mask[r, c] else "0",
           text_color=lambda r, c: ("white" if weights[r, c] > 0.55 else S.INK) if mask[r, c]
           else "#aaa")
    S.label(ax, wx + T * BIG / 2, top + 3.6, "weights 注意力权重", size=11, weight="bold")
    S.label(ax, wx + T * BIG / 2, top + 1.4, "each row sums to 1; exp(−∞) = 0", size=9,
            color=S.MUTED)
    for r in range(T):
        S.label(ax, wx + T * BIG + 0.6, top - (r + 0.5) * BIG, f"Σ={float(weights[r].sum()):.0f}",
                size=9, color=S.MUTED, ha="left")

    # ---- times V, output
    vx = 87.5
    S.label(ax, vx - 1.6, top - T * BIG / 2, "×", size=14)
    matrix(ax, vx, top - T * BIG / 2 + T * SMALL / 2, T, D, "data", "V", "")
    S.label(ax, vx + D * SMALL / 2, top - T * BIG / 2 + T * SMALL / 2 + 1.4, "(…, T, head_dim)",
            size=9, color=S.MUTED)
    ox, otop = vx, 17.0
    S.arrow(ax, (vx + D * SMALL / 2, top - T * BIG / 2 - T * SMALL / 2 - 0.8),
            (vx + D * SMALL / 2, otop + 2.2))
    S.label(ax, vx + D * SMALL / 2 + 1.0, (top - T * BIG / 2 - T * SMALL / 2 + otop) / 2 + 1,
            "weights @ V", size=9, ha="left", rotation=90)
    matrix(ax, ox, otop, T, D, "use", "output", "(B, H, T, head_dim)", name_side="below")
    S.label(ax, ox + D * SMALL, otop - T * SMALL - 7.0, "heads joined →\n(B, T, d_model)", size=9,
            color=S.MUTED, ha="right")

    # ---- the mask panel
    ids = torch.tensor([[3 + i if ch else PAD for i, ch in enumerate(seq)] for seq in SEQS])
    pad = padding_mask(ids, PAD)                  # (B, 1, 1, T_k)
    causal = causal_mask(MASK_T)                  # (T_q, T_k)
    both = causal & pad                           # broadcast: (B, 1, T_q, T_k)
    assert tuple(pad.shape) == (2, 1, 1, MASK_T) and tuple(both.shape) == (2, 1, MASK_T, MASK_T)
    c = 3.2
    ptop = 20.0
    S.box(ax, 0.5, 0.3, 81.5, 26.2, "grey", lw=1.0, rounding=1.2)
    S.label(ax, 2, 24.6, "Masks are boolean: True = may attend (可以看), False → −∞", size=10,
            weight="bold", ha="left")
    keep_fill, keep_edge = S.USE

    def cell_fill(ok):
        return keep_fill if ok else red_fill

    def cell_text(ok):
        return "T" if ok else "F"

    def cell_color(ok):
        return keep_edge if ok else red_edge

    S.grid(ax, 3, ptop, MASK_T, MASK_T, c, fill=lambda r, j: cell_fill(causal[r, j]),
           text=lambda r, j: cell_text(causal[r, j]),
           text_color=lambda r, j: cell_color(causal[r, j]))
    S.label(ax, 3 + MASK_T * c / 2, ptop - MASK_T * c - 1.8, "causal_mask(T_q, T_k)", size=9.5)
    S.label(ax, 3 + MASK_T * c / 2, ptop - MASK_T * c - 4.1, "shape (T_q, T_k)", size=9,
            color=S.MUTED)
    S.label(ax, 18.0, ptop - MASK_T * c / 2, "&", size=14)

    px = 24.5
    for b, seq in enumerate(SEQS):
        y = ptop - b * (c + 2.6)
        S.grid(ax, px, y, 1, MASK_T, c, fill=lambda r, j, b=b: cell_fill(pad[b, 0, 0, j]),
               text=lambda r, j, b=b: cell_text(pad[b, 0, 0, j]),
               text_color=lambda r, j, b=b: cell_color(pad[b, 0, 0, j]))
        for j, ch in enumerate(seq):
            S.label(ax, px + (j + 0.5) * c, y + 1.0, ch or "pad", size=9,
                    color=S.TEXT if ch else S.MUTED)
        S.label(ax, px - 0.6, y - c / 2, f"b={b}", size=9, ha="right", color=S.MUTED)
    S.label(ax, px + MASK_T * c / 2, ptop - 2 * (c + 2.6) - 0.6, "padding_mask(idx)", size=9.5,
            va="top")
    S.label(ax, px + MASK_T * c / 2, ptop - 2 * (c + 2.6) - 3.0, "shape (B, 1, 1, T_k)", size=9,
            color=S.MUTED, va="top")
    S.label(ax, 40.0, ptop - MASK_T * c / 2, "=", size=14)

    bx = 42.5
    for b in range(2):
        x = bx + b * (MASK_T * c + 2.5)
        S.grid(ax, x, ptop, MASK_T, MASK_T, c, fill=lambda r, j, b=b: cell_fill(both[b, 0, r, j]),
               text=lambda r, j, b=b: cell_text(both[b, 0, r, j]),
               text_color=lambda r, j, b=b: cell_color(both[b, 0, r, j]))
        S.label(ax, x + MASK_T * c / 2, ptop + 1.2, f"b={b}", size=9, color=S.MUTED)
    S.label(ax, bx + MASK_T * c + 1.25, ptop - MASK_T * c - 1.8, "broadcast: (B, 1, T_q, T_k)",
            size=9.5)
    S.label(ax, bx + MASK_T * c + 1.25, ptop - MASK_T * c - 4.1,
            "the 1 repeats over the H heads", size=9, color=S.MUTED)
    return S.save(fig, out)


if __name__ == "__main__":
    print(main())
