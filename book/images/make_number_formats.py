"""Draw book/images/number_formats.png, chapter 07's bit layouts of fp32, bf16 and fp16.
Run: python book/images/make_number_formats.py (bits: torch's own encodings of one number,
read back with view(int); ranges: torch.finfo; dtypes: course_utils.amp; style: _style)."""

from __future__ import annotations

import math
from pathlib import Path

import _style as S
import torch

from course_utils.amp import DTYPES

OUT = Path(__file__).with_name("number_formats.png")
X = math.pi                           # the one real number stored in every format
LAYOUT = {"fp32": (8, 23), "bf16": (8, 7), "fp16": (5, 10)}   # exponent, mantissa bits
FIELDS = {"sign": S.RED, "exponent": S.DATA, "mantissa": S.MODEL}
CW, CH = 2.0, 2.7                     # one bit cell
X0 = 7.5                              # where the cells start
ROW_Y = {"fp32": 30.5, "bf16": 19.0, "fp16": 7.5}   # top of each row's cells
RIGHT = X0 + 32 * CW + 2.0            # the text column


def bits_of(name: str) -> str:
    """The stored bits of X in format `name`, as torch holds them (view as a same-size int)."""
    dtype = DTYPES[name]
    value = torch.tensor(X, dtype=dtype)
    width = torch.finfo(dtype).bits
    as_int = value.view(torch.int32 if width == 32 else torch.int16).item()
    return format(as_int & (2**width - 1), f"0{width}b")


def field_of(i: int, exponent_bits: int) -> str:
    return "sign" if i == 0 else "exponent" if i <= exponent_bits else "mantissa"


def row(ax, name: str):
    e_bits, m_bits = LAYOUT[name]
    bits = bits_of(name)
    info = torch.finfo(DTYPES[name])
    assert len(bits) == 1 + e_bits + m_bits == info.bits and 2.0 ** -m_bits == info.eps
    top = ROW_Y[name]
    S.grid(ax, X0, top, 1, len(bits), CW, CH, fill=lambda r, c: S.colors(FIELDS[field_of(c, e_bits)])[0],
           text=lambda r, c: bits[c], size=9, edge="#aaa")
    # the fields: a bracket and a label above each
    spans = {"sign": (0, 1), "exponent": (1, 1 + e_bits), "mantissa": (1 + e_bits, len(bits))}
    for field, (a, b) in spans.items():
        x_a, x_b = X0 + a * CW + 0.15, X0 + b * CW - 0.15
        edge = S.colors(FIELDS[field])[1]
        ax.plot([x_a, x_a, x_b, x_b], [top + 0.5, top + 0.9, top + 0.9, top + 0.5], color=edge, lw=1.2)
        text = "s" if field == "sign" else f"{field} · {b - a} bits"
        S.label(ax, (x_a + x_b) / 2, top + 1.9, text, size=8.5, color=edge)
    S.label(ax, X0 - 1.0, top - CH / 2, name, size=11, weight="bold", ha="right")
    # what those bits mean: (-1)^s · 1.m · 2^(e - bias)
    bias = 2 ** (e_bits - 1) - 1
    e = int(bits[1: 1 + e_bits], 2)
    significand = 1 + int(bits[1 + e_bits:], 2) / 2**m_bits
    stored = torch.tensor(X, dtype=DTYPES[name]).item()
    assert (-1) ** int(bits[0]) * significand * 2.0 ** (e - bias) == stored
    S.label(ax, RIGHT, top - 0.4, f"stores {stored:.9g}", size=10, ha="left", weight="bold")
    S.label(ax, RIGHT, top - 2.7, f"= {'-' if bits[0] == '1' else '+'}{significand:.9g} × 2^({e} − {bias})",
            size=9, ha="left")
    S.label(ax, X0, top - CH - 1.4,
            f"torch.finfo: max {info.max:.3g} · smallest normal {info.tiny:.3g} · "
            f"eps = 2^−{m_bits} = {info.eps:.3g}", size=8.5, ha="left", color=S.MUTED)


def main() -> Path:
    fig, ax = S.canvas(figsize=(10, 3.8), width=100)
    S.label(ax, 50, 35.6, f"x = π ≈ {X:.9f} in three formats (bits read back from torch)",
            size=11.5, weight="bold")
    for name in LAYOUT:
        row(ax, name)
    S.label(ax, X0 + 16 * CW + 0.8, ROW_Y["bf16"] - CH / 2, "bf16: fp32's first 16 bits, rounded",
            size=8.5, ha="left", color=S.MUTED, style="italic")
    fig.set_dpi(S.DPI)  # measure the trimmed box at the dpi it is saved at (text widths differ)
    return S.save(fig, OUT)


if __name__ == "__main__":
    print(main())
