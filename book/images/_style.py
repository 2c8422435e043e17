"""The shared look of the book's diagrams: palette, fonts, boxes, arrows, cell grids, saving.

Every `make_NAME.py` next to this file imports it (`import _style as S`) and draws with it.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display needed; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.axis import Axis  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Rectangle  # noqa: E402
from matplotlib.spines import Spine  # noqa: E402
from matplotlib.text import Text  # noqa: E402
from matplotlib.transforms import Bbox  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run from anywhere: `python book/images/make_X.py`
    sys.path.insert(0, str(ROOT))

from course_utils import plots  # noqa: E402

# fill, edge: the road map's four families, plus neutral grey and a warning red
DATA = ("#e8f1fb", "#3b78b8")    # text, tokens, batches: blue
MODEL = ("#fdf0e0", "#c77a1a")   # the network and its parts: orange
USE = ("#e9f6ea", "#3f8f46")     # using the model (sampling, serving, what is kept): green
TUNE = ("#f3eafa", "#8150a8")    # training and fine-tuning: purple
GREY = ("#f1f1f1", "#8a8a8a")    # frozen, ignored, padding
RED = ("#fdecea", "#c0392b")     # masked, errors
COLORS = {"data": DATA, "model": MODEL, "use": USE, "tune": TUNE, "grey": GREY, "red": RED}

INK, TEXT, MUTED, ARROW = "#222", "#333", "#666", "#555"
DPI = 150


def colors(kind) -> tuple[str, str]:
    """(fill, edge) for a family name or an explicit pair."""
    return COLORS[kind] if isinstance(kind, str) else tuple(kind)


def setup() -> None:
    """Quiet font warnings (there is no bold CJK face: fine), register the CJK font."""
    logging.getLogger("matplotlib.font_manager").setLevel(logging.ERROR)
    plots.setup()


def canvas(figsize=(10, 5), width: float = 100.0, xlim=None, ylim=None, equal: bool = True):
    """A figure with one axis-less axes in diagram units: x in 0..width, y scaled alike.

    With `equal` one unit is the same length across and up, so square cells look square.
    """
    setup()
    fig, ax = plt.subplots(figsize=figsize)
    fig.subplots_adjust(0, 0, 1, 1)
    ax.set_xlim(*(xlim or (0, width)))
    ax.set_ylim(*(ylim or (0, width * figsize[1] / figsize[0])))
    if equal:
        ax.set_aspect("equal")
    ax.axis("off")
    return fig, ax


def box(ax, x, y, w, h, kind="model", title="", lines: Sequence[str] = (), tag: str = "", *,
        title_size=10.5, size=9.0, tag_size=8.0, gap=1.3, pad=0.3, rounding=1.0, lw=1.5,
        ls="-", dy=0.0, title_color=INK, text_color=TEXT, zorder=2):
    """A rounded box: a bold title over smaller lines, centred; an italic tag at the bottom.

    Line spacing is in points, so the text block looks the same whatever the axes' scale.
    `dy` (points) nudges the text block up or down.
    """
    fill, edge = colors(kind)
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle=f"round,pad={pad},rounding_size={rounding}",
                                fc=fill, ec=edge, lw=lw, ls=ls, zorder=zorder))
    stack = ([(title, title_size, "bold", title_color)] if title else []) + \
        [(line, size, "normal", text_color) for line in lines]
    heights = [s * gap for _, s, _, _ in stack]
    top = sum(heights) / 2 + dy + (tag_size * 0.7 if tag else 0)
    cx, cy = x + w / 2, y + h / 2
    for (text, s, weight, color), hgt in zip(stack, heights, strict=True):
        top -= hgt / 2
        ax.annotate(text, (cx, cy), xytext=(0, top), textcoords="offset points", ha="center",
                    va="center", fontsize=s, weight=weight, color=color, zorder=zorder + 1)
        top -= hgt / 2
    if tag:
        ax.annotate(tag, (cx, y), xytext=(0, tag_size * 0.9), textcoords="offset points",
                    ha="center", va="center", fontsize=tag_size, color=MUTED, style="italic",
                    zorder=zorder + 1)


def arrow(ax, *points, color=ARROW, style="-|>", lw=1.4, ls="-", scale=12, zorder=3, **kw):
    """An arrow along a polyline: straight segments, a head on the last one.

    `style="<|-|>"` with two points gives a double-headed arrow; extra keywords go to
    FancyArrowPatch (e.g. `connectionstyle="arc3,rad=0.3"` for a curve).
    """
    for (x0, y0), (x1, y1) in zip(points[:-2], points[1:-1], strict=True):
        ax.plot([x0, x1], [y0, y1], color=color, lw=lw, ls=ls, zorder=zorder,
                solid_capstyle="butt")
    ax.add_patch(FancyArrowPatch(points[-2], points[-1], arrowstyle=style, mutation_scale=scale,
                                 color=color, lw=lw, ls=ls, shrinkA=0, shrinkB=0, zorder=zorder,
                                 **kw))


def label(ax, x, y, text, size=9.0, color=TEXT, ha="center", va="center", **kw):
    """Plain text in diagram units (a thin wrapper, so every script uses the same defaults)."""
    return ax.text(x, y, text, fontsize=size, color=color, ha=ha, va=va, **kw)


def grid(ax, x, y, n_rows, n_cols, cw, ch=None, fill: Callable[[int, int], str] | str = "white",
         text: Callable[[int, int], str] | None = None, edge="#999", size=9.0, lw=0.8,
         text_color: Callable[[int, int], str] | str = INK, zorder=2):
    """A grid of cells with its top-left corner at (x, y): row r, column c is at
    (x + c cw, y - (r + 1) ch). `fill`/`text` may be functions of (r, c)."""
    ch = cw if ch is None else ch
    for r in range(n_rows):
        for c in range(n_cols):
            fc = fill(r, c) if callable(fill) else fill
            ax.add_patch(Rectangle((x + c * cw, y - (r + 1) * ch), cw, ch, fc=fc, ec=edge, lw=lw,
                                   zorder=zorder))
            if text is not None:
                t = text(r, c)
                if t:
                    tc = text_color(r, c) if callable(text_color) else text_color
                    ax.text(x + (c + 0.5) * cw, y - (r + 0.5) * ch, t, ha="center", va="center",
                            fontsize=size, color=tc, zorder=zorder + 1)
    ax.add_patch(Rectangle((x, y - n_rows * ch), n_cols * cw, n_rows * ch, fc="none", ec=INK,
                           lw=1.1, zorder=zorder + 1))


def content_bbox(fig, pad: float = 0.08) -> Bbox:
    """What the figure actually draws, in inches, plus `pad`: the axis-less diagram axes
    themselves do not count (matplotlib's "tight" box keeps their empty margins)."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    boxes = []
    for ax in fig.axes:
        if ax.axison:
            boxes.append(ax.get_tightbbox(renderer))
            continue
        for artist in ax.get_children():
            if (artist is ax.patch or isinstance(artist, (Spine, Axis)) or not artist.get_visible()
                    or (isinstance(artist, Text) and not artist.get_text())):
                continue
            bb = artist.get_tightbbox(renderer)
            if bb is not None and bb.width > 0 and bb.height > 0:
                boxes.append(bb)
    box = Bbox.union(boxes).transformed(fig.dpi_scale_trans.inverted())
    return Bbox.from_extents(box.x0 - pad, box.y0 - pad, box.x1 + pad, box.y1 + pad)


def save(fig, out: Path, dpi: int = DPI) -> Path:
    """Write the PNG on white, trimmed to what is drawn, and close the figure."""
    fig.savefig(out, dpi=dpi, bbox_inches=content_bbox(fig), facecolor="white")
    plt.close(fig)
    return out
