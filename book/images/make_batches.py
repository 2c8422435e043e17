"""Draw book/images/batches.png, chapter 02's two ways to cut text into (x, y) examples:
the course's padded lines against packed windows, on three real short lines of the news.
Run: python book/images/make_batches.py (rows from course_utils.batches; style: _style)."""

from __future__ import annotations

from pathlib import Path

import _style as S
import torch

from course_utils import data
from course_utils.batches import (
    PackedWindows,
    PaddedLines,
    non_pad_fraction,
    pack_documents,
    split_documents,
)
from course_utils.vocab import PAD, SEP, Vocab

OUT = Path(__file__).with_name("batches.png")
LINES = ["天气趋势分析", "钱其琛访问德班", "北京举行新年音乐会"]   # short paragraphs of the news
MAX_LEN = 11             # the course: lines of 16-64 characters, padded to 63; here 11 -> 10
BLOCK = MAX_LEN - 1      # the packed windows get the same length, to compare
CW, CH = 3.5, 3.1        # cell width and height
GAP = 2.4                # between an x row and its y row (room for the shift arrows)
PITCH = 2 * CH + GAP + 3.6
SHORT = {"<sep>": "sep", "<pad>": "pad"}


def examples():
    """Both styles on the same lines, as course_utils.batches builds them."""
    news = data.load_news()
    vocab = Vocab.build(news)                  # = artifacts.news_vocab()
    train, _ = split_documents(news, val_fraction=0.1, seed=0)  # = artifacts.news_splits()
    assert all(line in train for line in LINES)
    padded = PaddedLines(LINES, vocab, min_len=2, max_len=MAX_LEN)
    assert padded.lines == LINES and padded.seq_len == BLOCK
    stream = pack_documents(LINES, vocab).tolist()
    windows = PackedWindows(pack_documents(LINES, vocab), BLOCK, num_samples=len(LINES), seed=0)
    starts = []
    for i in range(len(windows)):              # where each window sits in the stream
        x, y = windows[i]
        chunk = x.tolist() + y.tolist()[-1:]
        found = [s for s in range(len(stream) - BLOCK) if stream[s : s + BLOCK + 1] == chunk]
        assert len(found) == 1
        starts.append(found[0])
    full = len(pack_documents(train, vocab))
    return vocab, [padded[i] for i in range(len(padded))], [windows[i] for i in range(len(windows))], \
        stream, starts, full


def tokens(vocab, ids):
    return [SHORT.get(vocab.idx2token[i], vocab.idx2token[i]) for i in ids]


def fill_of(i, target=False):
    if i == PAD:
        return S.GREY[0]
    return S.TUNE[0] if i == SEP else (S.USE[0] if target else S.DATA[0])


def color_of(i):
    return {PAD: "#aaa", SEP: S.TUNE[1]}.get(i, S.INK)


def row(ax, x0, top, ids, vocab, label, target=False):
    toks = tokens(vocab, ids)
    S.grid(ax, x0, top, 1, len(ids), CW, CH, fill=lambda r, c: fill_of(ids[c], target),
           text=lambda r, c: toks[c], size=9.5 if not target else 9.5,
           text_color=lambda r, c: color_of(ids[c]), edge="#aaa")
    S.label(ax, x0 - 0.8, top - CH / 2, label, size=9.5, weight="bold", ha="right")


def pairs(ax, x0, top, items, vocab, title, arrows):
    """x over y for each example; the shift drawn on the first; the targets that count."""
    S.label(ax, x0 - 4.5, top + 3.0, title, size=10, weight="bold", ha="left")
    for k, (x, y) in enumerate(items):
        t = top - k * PITCH
        row(ax, x0, t, x.tolist(), vocab, "x")
        row(ax, x0, t - CH - GAP, y.tolist(), vocab, "y", target=True)
        counted = int((y != PAD).sum())
        S.label(ax, x0 + BLOCK * CW + 0.8, t - 1.5 * CH - GAP, f"{counted}/{BLOCK}", size=9,
                color=S.USE[1] if counted == BLOCK else S.MUTED, ha="left", weight="bold")
        if k == 0:
            for c in arrows:        # y[c] is x[c + 1]: the target is the next token
                assert y[c] == x[c + 1]
                S.arrow(ax, (x0 + (c + 1.5) * CW - 0.4, t - CH - 0.2),
                        (x0 + (c + 0.5) * CW + 0.4, t - CH - GAP + 0.2), color=S.DATA[1], lw=1.0,
                        scale=8)
            S.label(ax, x0 + (max(arrows) + 2) * CW, t - CH - GAP / 2, "y[t] = x[t+1]: the next "
                    "token", size=8.5, color=S.DATA[1], ha="left")
    S.label(ax, x0 + BLOCK * CW + 0.8, top + 0.6, "in the\nloss", size=8, color=S.MUTED,
            ha="left", va="bottom", linespacing=1.0)


def main(out: Path = OUT) -> Path:
    vocab, padded, packed, stream, starts, full = examples()
    fig, ax = S.canvas(figsize=(10, 7.2))
    S.label(ax, 1, 70.5, "The same three lines of the news, cut into (x, y) examples two ways",
            size=11, weight="bold", ha="left")

    # the packed stream and where the random windows fall
    x0s = 10.0
    top = 63.0
    S.label(ax, 1, top + 1.2, f"pack_documents joins the lines with <sep> into one stream "
            f"({len(stream)} tokens here; all the training paragraphs make {full:,}).\nPackedWindows cuts "
            f"windows of block_size + 1 = {BLOCK + 1} tokens at random offsets: x is a window's "
            f"first {BLOCK} tokens, y its last {BLOCK}.", size=9, ha="left", va="bottom",
            linespacing=1.4)
    ids = stream
    toks = tokens(vocab, ids)
    S.grid(ax, x0s, top, 1, len(ids), CW, CH, fill=lambda r, c: fill_of(ids[c]),
           text=lambda r, c: toks[c], size=9.5, text_color=lambda r, c: color_of(ids[c]),
           edge="#aaa")
    S.label(ax, x0s - 0.8, top - CH / 2, "stream", size=9.5, weight="bold", ha="right")
    for k, s in enumerate(starts):
        yk = top - CH - 1.3 - 1.5 * k
        xa, xb = x0s + s * CW + 0.4, x0s + (s + BLOCK + 1) * CW - 0.4
        ax.plot([xa, xb], [yk, yk], color=S.USE[1], lw=2.2, solid_capstyle="butt")
        ax.plot([xa, xa], [yk, yk + 0.5], [xb, xb], [yk, yk + 0.5], color=S.USE[1], lw=1.2)
        S.label(ax, xb + 0.8, yk, f"window {k}: start {s}", size=8,
                color=S.USE[1], ha="left")

    # the two styles side by side
    top = 47.0
    pairs(ax, 6.0, top, padded, vocab, "① padded (the course): PaddedLines", (0, 1, 2))
    pairs(ax, 56.0, top, packed, vocab, "② packed (nanoGPT): PackedWindows",
          (0, 1, 2))
    bottom = top - len(padded) * PITCH + 1.0
    ys = [y for _, y in padded]
    yp = [y for _, y in packed]
    f_pad, f_pack = non_pad_fraction(torch.stack(ys)), non_pad_fraction(torch.stack(yp))
    n_pad = sum(int((y == PAD).sum()) for y in ys)
    S.label(ax, 1, bottom, f"non_pad_fraction(y) = {f_pad:.0%}: the {n_pad} grey <pad> targets "
            "are computed,\nthen ignored by the loss (ignore_index=<pad>); lines of other\nlengths "
            "are dropped (the course kept 16-64 characters)", size=8.5, color=S.TEXT, ha="left",
            va="top", linespacing=1.35)
    S.label(ax, 51, bottom, f"non_pad_fraction(y) = {f_pack:.0%}: every target is text; a window "
            "may start\nmid-line and cross a <sep>, which marks where a line ends;\nno line is "
            "dropped", size=8.5, color=S.TEXT, ha="left", va="top", linespacing=1.35)
    return S.save(fig, out)


if __name__ == "__main__":
    print(main())
