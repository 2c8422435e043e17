"""Draw book/images/int8.png, chapter 09's symmetric int8 and asymmetric uint8 number lines.
Run: python book/images/make_int8.py (codes from course_utils.quantize; style: _style)."""

from __future__ import annotations

from pathlib import Path

import _style as S
import torch
from matplotlib.patches import Rectangle

from course_utils.quantize import QMAX, UMAX, dequantize, quantize_asymmetric, quantize_symmetric

OUT = Path(__file__).with_name("int8.png")
# a small, lopsided example tensor (most of it positive, as after a GELU), with an exact 0
WEIGHTS = torch.tensor([-0.42, -0.17, 0.0, 0.29, 0.58, 0.83, 1.0])
LO, HI = -1.08, 1.08          # the value range drawn
X0, X1 = 4.0, 60.0            # ... and where it goes on the page
POINT = S.MODEL[1]


def xof(v: float) -> float:
    return X0 + (v - LO) / (HI - LO) * (X1 - X0)


def schemes():
    q, s = quantize_symmetric(WEIGHTS)
    qa, sa, za = quantize_asymmetric(WEIGHTS)
    sym = dict(name="symmetric int8", fn="quantize_symmetric", q=q, scale=float(s), zero=0,
               back=dequantize(q, s), lo=-QMAX, hi=QMAX, kind="data",
               rule=[f"scale = max|w| / {QMAX} = {float(WEIGHTS.abs().max()):g} / {QMAX} = "
                     f"{float(s):.5f}, no zero point",
                     f"q = round(w / scale) ∈ [−{QMAX}, {QMAX}];  ŵ = q · scale"])
    asym = dict(name="asymmetric uint8", fn="quantize_asymmetric", q=qa, scale=float(sa),
                zero=int(za), back=dequantize(qa, sa, za), lo=0, hi=UMAX, kind="tune",
                rule=[f"scale = (max − min) / {UMAX} = {float(sa):.5f}, range widened to hold 0",
                      f"z = round(−min / scale) = {int(za)};  q = round(w / scale) + z ∈ [0, {UMAX}]"
                      ";  ŵ = (q − z) · scale"])
    return sym, asym


def panel(ax, y, sc):
    """One scheme: its grid on the number line, the example weights, and the round trip."""
    fill, edge = S.colors(sc["kind"])
    S.label(ax, 1, y + 21.0, f"{sc['name']}  ({sc['fn']})", size=10.5, weight="bold", ha="left")
    for k, rule in enumerate(sc["rule"]):
        S.label(ax, 1, y + 18.6 - 2.2 * k, rule, size=9, ha="left", color=S.TEXT)
    line_y = y + 7.6
    # the representable range: codes lo..hi, value (code - zero) * scale
    v_lo = (sc["lo"] - sc["zero"]) * sc["scale"]
    v_hi = (sc["hi"] - sc["zero"]) * sc["scale"]
    ax.add_patch(Rectangle((xof(v_lo), line_y - 1.0), xof(v_hi) - xof(v_lo), 2.0, fc=fill, ec=edge,
                           lw=1.0, zorder=1))
    ax.plot([X0 - 1, X1 + 1], [line_y, line_y], color=S.INK, lw=1.0, zorder=2)
    used = (float(WEIGHTS.min()), float(WEIGHTS.max()))
    if used[0] - v_lo > 0.1:  # part of the grid that no weight uses
        ax.add_patch(Rectangle((xof(v_lo), line_y - 1.0), xof(used[0]) - xof(v_lo), 2.0, fc="none",
                               ec=S.RED[1], hatch="////", lw=0, zorder=1.5))
        n_unused = int(sc["q"].min()) - sc["lo"]  # codes lo .. min(q) - 1
        S.label(ax, (xof(v_lo) + xof(used[0])) / 2, line_y + 2.3,
                f"{n_unused} codes never used", size=9, color=S.RED[1])
    # code landmarks under the line
    marks = sorted({sc["lo"], sc["hi"], sc["zero"]} | ({-64, 64} if sc["lo"] < 0 else {128}))
    for code in marks:
        v = (code - sc["zero"]) * sc["scale"]
        ax.plot([xof(v)] * 2, [line_y - 1.0, line_y - 1.8], color=S.INK, lw=1)
        bold = code == sc["zero"]
        S.label(ax, xof(v), line_y - 3.0, f"{code}" + (" = z" if bold and sc["zero"] else ""),
                size=9, color=edge if bold else S.MUTED, weight="bold" if bold else "normal")
    S.label(ax, X0 - 1.5, line_y - 3.0, "code", size=9, color=S.MUTED, ha="right")
    S.label(ax, X0 - 1.5, line_y + 0.0, "w", size=9, color=S.MUTED, ha="right")
    # value ticks above? only 0 and ±1, small
    for v in (-1.0, 0.0, 1.0):
        S.label(ax, xof(v), line_y - 5.2, f"{v:+.1f}" if v else "0.0", size=9, color="#999")
    S.label(ax, X0 - 1.5, line_y - 5.2, "value", size=9, color="#999", ha="right")
    # the example weights
    for k, w in enumerate(WEIGHTS.tolist()):
        x = xof(w)
        ax.plot([x], [line_y], "o", ms=5, color=POINT, zorder=4)
        ax.plot([x, x], [line_y + 0.3, line_y + 3.4 + 1.9 * (k % 2)], color=POINT, lw=0.8)
        S.label(ax, x, line_y + 4.2 + 1.9 * (k % 2), f"{w:g}", size=9, color=POINT)
    # the round trip, as a table
    tx, ty = 66, y + 15.6
    heads = ["w", "code q", "back: ŵ", "error ŵ − w"]
    cols = [66.5, 75, 84.5, 95]
    for c, h in zip(cols, heads, strict=True):
        S.label(ax, c, ty, h, size=9, weight="bold", ha="center")
    ax.plot([tx - 0.5, 99.5], [ty - 1.1, ty - 1.1], color="#bbb", lw=0.8)
    for k, (w, q, b) in enumerate(zip(WEIGHTS.tolist(), sc["q"].tolist(), sc["back"].tolist(),
                                      strict=True)):
        yy = ty - 2.4 - 1.95 * k
        err = b - w
        zero = w == 0.0
        vals = [f"{w:g}", f"{q}", f"{b:.4f}", "0 (exact)" if zero else f"{err:+.4f}"]
        for c, text in zip(cols, vals, strict=True):
            S.label(ax, c, yy, text, size=9, family="DejaVu Sans Mono",
                    color=edge if zero else S.INK, weight="bold" if zero else "normal")
    S.label(ax, 82.5, y - 0.4, f"|error| ≤ scale / 2 = {sc['scale'] / 2:.4f}", size=9,
            color=S.MUTED)


def main(out: Path = OUT) -> Path:
    sym, asym = schemes()
    # the claims the figure makes, checked on the real codes
    assert int(sym["q"][WEIGHTS == 0]) == 0 and float(asym["back"][WEIGHTS == 0]) == 0.0
    for sc in (sym, asym):
        assert float((sc["back"] - WEIGHTS).abs().max()) <= sc["scale"] / 2 * (1 + 1e-5)
    fig, ax = S.canvas(figsize=(10, 5.6))
    panel(ax, 29.0, sym)
    panel(ax, 1.8, asym)
    ax.plot([1, 99], [26.6, 26.6], color="#ddd", lw=1)
    return S.save(fig, out)


if __name__ == "__main__":
    print(main())
