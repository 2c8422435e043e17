"""Draw book/images/gpt_block.png, chapter 04's GPT: embeddings, N pre-LayerNorm blocks, tied head.
Run: python book/images/make_gpt_block.py (sizes from course_utils.config; style: _style)."""

from __future__ import annotations

from pathlib import Path

import _style as S
from matplotlib.patches import Circle, FancyBboxPatch, Rectangle

from course_utils.config import PROFILES

OUT = Path(__file__).with_name("gpt_block.png")

# the whole model, bottom to top: name -> (x, y, w, h, kind, title, lines)
MODEL = {
    "idx": (13, 1, 20, 4.5, "data", "token ids idx", ["(B, T)"]),
    "tok": (5, 9, 17, 7, "model", "tok_emb 词嵌入", ["V × d", "row i for token i"]),
    "pos": (24, 9, 17, 7, "model", "pos_emb 位置嵌入", ["block_size × d", "row t for position t"]),
    "blocks": (9, 24, 28, 7, "model", "Block × N", ["N = n_layers, same shape each"]),
    "ln_f": (13, 35, 20, 4.5, "model", "ln_f", ["final LayerNorm"]),
    "head": (9, 43, 28, 5.5, "model", "lm_head: Linear d → V", ["no bias; its weight IS tok_emb's"]),
}
HIGHWAY_X = 53.0
# one block, bottom to top: each sublayer leaves the highway at y0, returns at y1 into a "+"
SUBLAYERS = [
    (11.0, 22.5, [("LN1", "LayerNorm", 8), ("attention 多头注意力", "qkv d→3d, H heads, causal;\n"
                                          "proj d→d, dropout", 25)]),
    (29.0, 40.5, [("LN2", "LayerNorm", 8), ("Linear", "fc: d → d_ff", 9.5), ("GELU", "", 6.5),
                  ("Linear", "proj: d_ff → d\n+ dropout", 10.5)]),
]


def model_column(ax):
    for x, y, w, h, kind, title, lines in MODEL.values():
        S.box(ax, x, y, w, h, kind, title, lines, title_size=10, size=9, gap=1.25)
    cx = 23
    S.arrow(ax, (cx, 5.8), (cx, 7.2), (13.5, 7.2), (13.5, 8.6))
    S.label(ax, 4.5, 6.3, "looks up rows", size=9, color=S.MUTED, ha="left")
    plus(ax, cx, 19.8)
    S.arrow(ax, (13.5, 16.4), (13.5, 19.8), (cx - 1.3, 19.8))
    S.arrow(ax, (32.5, 16.4), (32.5, 19.8), (cx + 1.3, 19.8))
    S.arrow(ax, (cx, 21.1), (cx, 23.6))
    S.label(ax, cx + 1, 22.3, "x (B, T, d) + dropout", size=9, color=S.MUTED, ha="left")
    S.arrow(ax, (cx, 31.4), (cx, 34.6))
    S.arrow(ax, (cx, 39.9), (cx, 42.6))
    S.arrow(ax, (cx, 48.9), (cx, 51.2))
    S.label(ax, cx, 52.6, "logits (B, T, V): next-token scores", size=9.5, weight="bold")
    # weight tying: one matrix, used at both ends
    fill, edge = S.TUNE
    ax.plot([3.5, 3.5], [12.5, 45.7], color=edge, ls="--", lw=1.3)
    S.arrow(ax, (3.5, 45.7), (8.6, 45.7), color=edge, lw=1.3)
    S.arrow(ax, (3.5, 12.5), (4.6, 12.5), color=edge, lw=1.3)
    S.label(ax, 2.6, 29, "tied: the same V × d matrix 权重共享", size=9, color=edge, rotation=90)


def plus(ax, x, y, r=1.3, zorder=4):
    ax.add_patch(Circle((x, y), r, fc="white", ec=S.INK, lw=1.3, zorder=zorder))
    S.label(ax, x, y - 0.05, "+", size=12, weight="bold", zorder=zorder + 1)


def block_panel(ax):
    fill, edge = S.MODEL
    ax.add_patch(FancyBboxPatch((43, 1.5), 55.5, 48.5, boxstyle="round,pad=0.3,rounding_size=1.5",
                                fc="#fffaf3", ec=edge, lw=1.3, ls="--", zorder=0))
    # zoom lines from "Block x N"
    bx, by, bw, bh = MODEL["blocks"][:4]
    for y0, y1 in [(by + bh, 38.0), (by, 17.0)]:
        ax.plot([bx + bw + 0.3, 42.7], [y0, y1], color=edge, lw=1.0, ls=":")
    S.label(ax, 97.5, 48.2, "one Block (pre-LayerNorm)", size=10.5, weight="bold", ha="right")
    S.label(ax, 97.5, 46.0, "x + attn(ln1(x)), then x + mlp(ln2(x))", size=9, color=S.MUTED,
            ha="right")
    # the residual stream: a straight highway, bottom to top
    dfill, dedge = S.DATA
    ax.add_patch(Rectangle((HIGHWAY_X - 1.6, 3.5), 3.2, 43.5, fc=dfill, ec="none", zorder=0.5))
    S.arrow(ax, (HIGHWAY_X, 3.0), (HIGHWAY_X, 48.0), color=dedge, lw=2.2, scale=16, zorder=1)
    S.label(ax, HIGHWAY_X - 2.6, 25, "residual stream 残差流  (B, T, d)", size=9.5, color=dedge,
            rotation=90)
    S.label(ax, HIGHWAY_X + 1.2, 3.6, "x in", size=9, color=dedge, ha="left")
    for y0, y1, parts in SUBLAYERS:
        x = HIGHWAY_X + 3.2
        S.arrow(ax, (HIGHWAY_X, y0), (x - 0.4, y0))
        for k, (title, sub, w) in enumerate(parts):
            lines = sub.split("\n") if sub else []
            kind = "grey" if title.startswith("LN") else "model"
            S.box(ax, x, y0 - 3.4, w, 6.8, kind, title, lines, title_size=9.5, size=9, gap=1.2)
            x += w
            if k < len(parts) - 1:
                S.arrow(ax, (x + 0.3, y0), (x + 1.5, y0))
                x += 1.8
        # back into the stream
        S.arrow(ax, (x + 0.3, y0), (x + 1.4, y0), (x + 1.4, y1), (HIGHWAY_X + 1.4, y1))
        plus(ax, HIGHWAY_X, y1)
    S.label(ax, 97.5, 43.8, "the branches only add to x: its shape never changes",
            size=9, color=S.MUTED, ha="right")
    S.label(ax, HIGHWAY_X + 1.2, 47.3, "x out", size=9, color=dedge, ha="left")
    cpu, gpu = PROFILES["cpu"], PROFILES["gpu"]
    S.label(ax, 97.5, 4.2, f"cpu profile: d={cpu.d_model}, H={cpu.n_heads}, d_ff={cpu.d_ff}, "
            f"N={cpu.n_layers}\ngpu profile: d={gpu.d_model}, H={gpu.n_heads}, d_ff={gpu.d_ff}, "
            f"N={gpu.n_layers}", size=9, color=S.MUTED, ha="right")


def main(out: Path = OUT) -> Path:
    fig, ax = S.canvas(figsize=(10, 5.5))
    model_column(ax)
    block_panel(ax)
    return S.save(fig, out)


if __name__ == "__main__":
    print(main())
