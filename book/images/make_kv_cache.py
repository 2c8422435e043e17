"""Draw book/images/kv_cache.png, chapter 08's KV-cache decoding step and sliding window.
Run: python book/images/make_kv_cache.py (rows traced from sampling.generate; style: _style)."""

from __future__ import annotations

from pathlib import Path

import _style as S
import torch

from course_utils import decoding, sampling
from course_utils.model import GPT, GPTConfig

OUT = Path(__file__).with_name("kv_cache.png")
T = 6                 # the step drawn on top: position t = 6, five positions cached
D = 4                 # head_dim cells
C = 2.0               # cell size of K, V, q, k, v
TOY_BLOCK, PROMPT, NEW = 8, 3, 10   # the toy run traced at the bottom
ROWS_SHOWN = [0, 1, 5, 6, 7]        # generation steps drawn (0-based)

CACHED, NEWC, OLD = S.USE, S.MODEL, S.GREY


def trace():
    """(tokens fed, tokens cached before) of every model call of a real `generate` run."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=12, block_size=TOY_BLOCK, d_model=8, n_heads=2, n_layers=1,
                          d_ff=16, dropout=0.0))
    calls = []
    one_token, whole_window = decoding.decode_step, decoding.prefill

    def traced_step(model, token, pos, cache):              # one-token steps
        calls.append((token.size(1), int(pos)))
        return one_token(model, token, pos, cache)

    def traced_prefill(model, window, cache, lengths=None):  # prefills run the whole window
        calls.append((window.size(1), len(cache[0])))
        return whole_window(model, window, cache, lengths)

    decoding.decode_step, decoding.prefill = traced_step, traced_prefill
    try:
        sampling.generate(model, torch.arange(3, 3 + PROMPT)[None], NEW, temperature=0, use_cache=True)
    finally:
        decoding.decode_step, decoding.prefill = one_token, whole_window
    assert len(calls) == NEW
    return calls


def vector(ax, x, top, kind, name, n=D, side="left"):
    S.grid(ax, x, top, 1, n, C, fill=S.colors(kind)[0], edge=S.colors(kind)[1])
    if side == "left":
        S.label(ax, x - 0.6, top - C / 2, name, size=10, ha="right", weight="bold")
    else:
        S.label(ax, x + n * C + 0.6, top - C / 2, name, size=10, ha="left", weight="bold")


def cache_grid(ax, x, top, name):
    S.grid(ax, x, top, T, D, C, fill=lambda r, c: (NEWC if r == T - 1 else CACHED)[0],
           edge="#999")
    S.label(ax, x + D * C / 2, top + 1.3, name, size=10, weight="bold")
    for r, text in [(0, "1"), (T - 2, "t−1"), (T - 1, "t")]:
        S.label(ax, x - 0.5, top - (r + 0.5) * C, text, size=9, ha="right", color=S.MUTED)


def cached_panel(ax):
    S.label(ax, 1, 57.2, "With the KV cache: step t feeds one token", size=11, weight="bold",
            ha="left")
    S.box(ax, 1, 47.5, 13, 6, "data", "new token t", ["out[:, −1:]  (B, 1)"], title_size=10)
    S.arrow(ax, (7.5, 47.2), (7.5, 44.3))
    S.box(ax, 1, 37.3, 13, 6.7, "model", "in block ℓ", ["ln1 → qkv", "for position t only"],
          title_size=10)
    kx, vx, top = 24, 43, 54
    cache_grid(ax, kx, top, "K cache, layer ℓ")
    cache_grid(ax, vx, top, "V cache, layer ℓ")
    S.label(ax, kx + D * C + 1, top - (T - 1) * C / 2, "kept\nfrom\nearlier\nsteps", size=9,
            color=CACHED[1], ha="left")
    # k_t and v_t are appended as row t
    row_t = top - (T - 0.5) * C
    S.arrow(ax, (14.3, 41.6), (19, 41.6), (19, row_t), (kx - 2.0, row_t))
    S.label(ax, 16.6, row_t + 1.7, "k_t", size=10, weight="bold")
    S.arrow(ax, (14.3, 39.0), (40, 39.0), (40, row_t), (vx - 2.0, row_t))
    S.label(ax, 37.6, row_t + 1.7, "v_t", size=10, weight="bold")
    S.label(ax, 16, 36.0, "cache.update(k, v): written in place at row t", size=9,
            color=S.MUTED, ha="left", zorder=5,
            bbox=dict(fc="white", ec="none", pad=0.5))
    # q_t attends over all t keys
    qy = 31.5
    S.arrow(ax, (7.5, 37.0), (7.5, qy + 0.3))
    vector(ax, 3.5, qy, "model", "q_t")
    wx = kx - 2
    S.arrow(ax, (3.5 + D * C + 0.4, qy - C / 2), (wx - 0.4, qy - C / 2))
    S.grid(ax, wx, qy, 1, T, C * 1.2, fill=S.DATA[0], edge=S.DATA[1])
    S.label(ax, wx + T * C * 0.6, qy - C - 1.3, "softmax(q_t·Kᵀ/√d): 1 × t", size=9, va="top")
    S.arrow(ax, (kx + D * C / 2, top - T * C - 0.3), (kx + D * C / 2, qy + 0.3), ls=":",
            color=S.DATA[1])
    S.label(ax, kx + D * C / 2 + 0.6, qy + 1.8, "all t keys", size=9, color=S.DATA[1], ha="left")
    S.arrow(ax, (wx + T * C * 1.2 + 0.4, qy - C / 2), (vx - 0.4, qy - C / 2))
    S.label(ax, (wx + T * C * 1.2 + vx) / 2, qy + 0.7, "× V", size=9.5)
    vector(ax, vx, qy, "use", "", n=D)
    S.arrow(ax, (vx + D * C / 2, top - T * C - 0.3), (vx + D * C / 2, qy + 0.3), ls=":",
            color=S.DATA[1])
    S.label(ax, vx + D * C + 0.6, qy - C / 2, "y_t", size=10, weight="bold", ha="left")
    S.label(ax, 1, 24.6, "→ every block has its own cache → ln_f → lm_head → "
            "one logits vector (B, 1, V)", size=9.5, ha="left")


def recompute_panel(ax):
    x0 = 60
    S.label(ax, x0, 57.2, "Without it: every step recomputes all t", size=11, weight="bold",
            ha="left")
    S.box(ax, x0, 49.5, 37, 5, "data", "all t tokens of the window", ["out[:, start:]  (B, t)"],
          title_size=10)
    c = 1.5
    top = 47.0
    for k, name in enumerate(["Q", "K", "V"]):
        x = x0 + 1 + k * 10
        S.grid(ax, x, top, T, D, c, fill=NEWC[0], edge="#999")
        S.label(ax, x + D * c + 0.5, top - T * c / 2, name, size=10, weight="bold", ha="left")
    S.arrow(ax, (x0 + 18.5, 49.2), (x0 + 18.5, top + 0.3))
    sx = x0 + 1
    stop = top - T * c - 2.3
    S.grid(ax, sx, stop, T, T, c, fill=lambda r, j: S.DATA[0] if j <= r else "white",
           edge="#bbb")
    S.label(ax, sx + T * c + 0.8, stop - T * c / 2, "t × t\nscores", size=9, ha="left")
    lx = x0 + 23
    S.grid(ax, lx, stop, T, 1, c * 2.2, c,
           fill=lambda r, j: S.USE[0] if r == T - 1 else "#f4f4f4", edge="#999")
    S.arrow(ax, (sx + T * c + 6.5, stop - T * c / 2), (lx - 0.4, stop - T * c / 2))
    S.label(ax, lx + c * 2.2 + 0.8, stop - (T - 0.5) * c, "logits[:, −1]: the\nonly row used",
            size=9, ha="left", color=S.USE[1])
    S.label(ax, lx + c * 2.2 + 0.8, stop - 1.6, "logits (B, t, V)\nafter lm_head", size=9, ha="left",
            color=S.MUTED)
    S.label(ax, x0, 24.6, "rows 1..t−1 of K and V: the same as last step", size=9.5,
            ha="left")


def window_strip(ax, calls):
    y0 = 21.5
    S.label(ax, 1, y0 + 0.5, f"When the window is full (toy block_size = {TOY_BLOCK}, prompt of "
            f"{PROMPT}; traced from sampling.generate)", size=10.5, weight="bold",
            ha="left")
    cw, ch = 2.6, 2.4
    x_cells = 27
    for n, i in enumerate(ROWS_SHOWN):
        fed, cached = calls[i]
        length = PROMPT + i                 # tokens in `out` when step i calls the model
        start = length - fed - cached
        top = y0 - 2.0 - n * (ch + 1.0) - (0.8 if n >= 2 else 0)

        def fill(r, c, start=start, length=length, fed=fed):
            if c < start:
                return OLD[0]
            return (NEWC if c >= length - fed else CACHED)[0]

        S.grid(ax, x_cells, top, 1, length, cw, ch, fill=fill,
               text=lambda r, c: str(c + 1), size=9, edge="#999")
        if fed > 1 and i > 0:
            assert fed == TOY_BLOCK // 2
            what = f"{length} > block_size → keep block_size // 2 = {fed}; a prefill rebuilds the cache"
        elif fed > 1:
            what = f"prefill: {fed} prompt tokens, empty cache"
        else:
            what = f"1 new token, {cached} cached"
        S.label(ax, 1, top - ch / 2, f"step {i + 1}", size=9.5, ha="left", weight="bold")
        S.label(ax, 8.5, top - ch / 2, what if len(what) < 30 else "", size=9, ha="left")
        if len(what) >= 30:
            S.label(ax, x_cells + length * cw + 1.0, top - ch / 2, what, size=9, ha="left",
                    color=NEWC[1], weight="bold")
        else:
            S.label(ax, x_cells + length * cw + 1.0, top - ch / 2,
                    f"window {start + 1}..{length}"
                    + (": full" if length - start == TOY_BLOCK else ""), size=9, ha="left",
                    color=S.MUTED)
        if n == 1:
            S.label(ax, x_cells + 4 * cw, top - ch - 0.9, "⋮", size=11, color=S.MUTED)
    legend = [(CACHED, "from the cache"), (NEWC, "fed this step"), (OLD, "outside the window")]
    for k, (kind, text) in enumerate(legend):
        x = 60 + k * 13.5
        ly = y0 - 2.0 - (ch + 1.0)
        S.grid(ax, x, ly - 0.3, 1, 1, 1.8, fill=kind[0], edge="#999")
        S.label(ax, x + 2.4, ly - 1.2, text, size=9, ha="left")


def main(out: Path = OUT) -> Path:
    calls = trace()
    fig, ax = S.canvas(figsize=(10, 5.9))
    ax.axvline(58, 0.42, 0.99, color="#ccc", lw=1)
    cached_panel(ax)
    recompute_panel(ax)
    window_strip(ax, calls)
    return S.save(fig, out)


if __name__ == "__main__":
    print(main())
