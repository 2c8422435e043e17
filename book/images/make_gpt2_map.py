"""Draw book/images/gpt2_map.png, chapter 13's map of our GPT's tensors onto GPT2LMHeadModel's.
Run: python book/images/make_gpt2_map.py (names and shapes from course_utils.model.GPT at the cpu
profile's sizes, mapped by course_utils.export.gpt2_name and filled by export.to_gpt2; style: _style)."""

from __future__ import annotations

from pathlib import Path

import _style as S

from course_utils import data, export
from course_utils.config import get_profile
from course_utils.model import GPT, GPTConfig
from course_utils.vocab import Vocab

OUT = Path(__file__).with_name("gpt2_map.png")
ROW = 3.1                     # height of one tensor's row
LEFT, RIGHT = 1.0, 57.0       # left edges of our column and GPT-2's
COL_W = 42.0
MONO = dict(family="monospace")


def tensors():
    """(our name, our shape, GPT-2's name, GPT-2's shape, transposed) for the embeddings, block 0
    and the final LayerNorm of the cpu profile's GPT on the news vocabulary; and the sizes."""
    profile = get_profile("cpu")
    vocab = Vocab.build(data.load_news())          # = artifacts.news_vocab(), as chapter 01 checks
    config = GPTConfig(vocab_size=len(vocab), **dict(profile.model_kwargs(), dropout=0.0))
    model = GPT(config).eval()
    hf = export.to_gpt2(model).state_dict()
    rows = []
    for name, value in export.plain_state(model).items():
        if name.startswith("blocks.") and not name.startswith("blocks.0."):
            continue                                # every block maps alike: block 0 stands for all
        hf_name, transposed = export.gpt2_name(name)
        assert tuple(hf[hf_name].shape) == (tuple(value.shape)[::-1] if transposed else tuple(value.shape))
        rows.append((name, tuple(value.shape), hf_name, tuple(hf[hf_name].shape), transposed))
    assert hf["lm_head.weight"].data_ptr() == hf["transformer.wte.weight"].data_ptr()   # tied
    return rows, config


def shape_text(shape) -> str:
    return "(" + ", ".join(f"{n:,}" for n in shape) + ("," if len(shape) == 1 else "") + ")"


def group_box(ax, top, n, kind, text):
    """A pale band behind `n` rows on both sides, its name above it."""
    fill, edge = S.colors(kind)
    h = n * ROW + 1.0
    for x in (LEFT - 0.6, RIGHT - 0.6):
        S.box(ax, x, top - h + 0.3, COL_W + 1.2, h, (fill, edge), lw=0.9, rounding=0.6, pad=0.1)
    S.label(ax, 50.0, top + 1.5, text, size=8.8, color=edge, style="italic")


def main(out: Path = OUT) -> Path:
    rows, config = tensors()
    fig, ax = S.canvas(figsize=(10, 7.6))
    top = 73.0
    S.label(ax, LEFT + COL_W / 2, top + 2.6, "course_utils.model.GPT", size=11, weight="bold")
    S.label(ax, RIGHT + COL_W / 2, top + 2.6, "transformers GPT2LMHeadModel", size=11, weight="bold")
    S.label(ax, LEFT + COL_W / 2, top + 0.4, "nn.Linear weights: (out_features, in_features)",
            size=8.5, color=S.MUTED)
    S.label(ax, RIGHT + COL_W / 2, top + 0.4, "Conv1D weights: (in_features, out_features)",
            size=8.5, color=S.MUTED)

    groups = [(2, "model", "the embeddings"),
              (len(rows) - 4, "tune", f"block 0: every block maps alike, blocks.i → transformer.h.i "
               f"for i = 0 … {config.n_layers - 1}"),
              (2, "model", "the final LayerNorm")]
    y, start = top - 3.6, 0
    for n, kind, text in groups:
        group_box(ax, y, n, kind, text)
        for k in range(start, start + n):
            ours, shape, theirs, hf_shape, transposed = rows[k]
            cy = y - (k - start + 0.5) * ROW
            S.label(ax, LEFT + 0.6, cy, ours, size=8.6, ha="left", **MONO)
            S.label(ax, LEFT + COL_W - 0.6, cy, shape_text(shape), size=8.6, ha="right", **MONO)
            S.label(ax, RIGHT + 0.6, cy, theirs, size=8.6, ha="left", **MONO)
            S.label(ax, RIGHT + COL_W - 0.6, cy, shape_text(hf_shape), size=8.6, ha="right",
                    weight="bold" if transposed else "normal",
                    color=S.RED[1] if transposed else S.INK, **MONO)
            if transposed:
                S.arrow(ax, (LEFT + COL_W + 0.9, cy), (RIGHT - 0.9, cy), color=S.RED[1], lw=1.3)
                S.label(ax, 50.0, cy + 0.9, ".t()", size=8.5, color=S.RED[1], weight="bold", **MONO)
            else:
                S.arrow(ax, (LEFT + COL_W + 0.9, cy), (RIGHT - 0.9, cy), color=S.ARROW, lw=0.9)
        y -= n * ROW + 4.2
        start += n

    n_t = sum(r[4] for r in rows)
    square = [r[0].split(".", 2)[2] for r in rows if r[4] and r[1][0] == r[1][1]]
    S.label(ax, LEFT, y + 2.2,
            f"{len(rows)} tensors shown (block 0 of {config.n_layers}). Red: the {n_t} Conv1D weights "
            "GPT-2 stores transposed (export.gpt2_name says which), copied with .t();\n"
            f"the square {', '.join(square)} would load without it, silently wrong. The head: ours "
            "is tok_emb.weight used again; GPT-2's lm_head.weight\nis transformer.wte.weight, tied "
            "again on loading (tie_word_embeddings=True): stored once in both. cpu profile: "
            f"V = {config.vocab_size:,}, block_size = {config.block_size}, d = {config.d_model}, "
            f"d_ff = {config.d_ff}.",
            size=8.5, color=S.MUTED, ha="left", va="top", linespacing=1.45)
    return S.save(fig, out)


if __name__ == "__main__":
    print(main())
