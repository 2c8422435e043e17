"""Matplotlib set-up (a CJK font so Chinese labels render) and the book's shared plots."""

from __future__ import annotations

import functools
import importlib.util
import warnings
from pathlib import Path

import matplotlib
from matplotlib import font_manager

CJK_FONT = "Noto Sans CJK SC"


@functools.lru_cache(maxsize=1)
def setup(dpi: int = 80) -> str | None:
    """Register the Noto Sans CJK font shipped by `mplfonts` and make it the fallback.

    Returns the CJK font's name, or None (with a warning) when no CJK font is available,
    in which case Chinese characters show as boxes but nothing fails.
    """
    spec = importlib.util.find_spec("mplfonts")
    font = None
    if spec is not None and spec.submodule_search_locations:
        path = Path(next(iter(spec.submodule_search_locations))) / "fonts" / "NotoSansCJKsc-Regular.otf"
        if path.is_file():
            font_manager.fontManager.addfont(str(path))
            font = CJK_FONT
    if font is None:
        warnings.warn("no CJK font found (pip install mplfonts): Chinese labels will show as boxes",
                      stacklevel=2)
    matplotlib.rcParams.update({
        # a list of families: matplotlib falls back glyph by glyph (DejaVu for Latin, Noto for CJK)
        "font.family": ["DejaVu Sans"] + ([font] if font else []),
        "axes.unicode_minus": False,
        "figure.dpi": dpi,
        "savefig.dpi": dpi,
        "axes.grid": True,
        "grid.alpha": 0.3,
        "axes.spines.top": False,
        "axes.spines.right": False,
    })
    return font
