"""Draw book/images/vocab.png, chapter 01's vocabulary: a dialogue turn pair from text to ids.
Run: python book/images/make_vocab.py (ids from course_utils.vocab.Vocab.encode on the news
vocabulary, the turns from course_utils.data; style: _style)."""

from __future__ import annotations

from pathlib import Path

import _style as S

from course_utils import data
from course_utils.batches import encode_dialogue
from course_utils.vocab import SEP, SEP_TOKEN, SPECIALS, UNK, UNK_TOKEN, Vocab

OUT = Path(__file__).with_name("vocab.png")
TURNS = ["你好吗?", "我还不错，你呢?"]   # the opening of a conversation in the dialogue corpus
CW, CH = 5.6, 4.2                       # token cell width and height
X0 = 13.0                               # left edge of the first token cell
SEP_C, UNK_C = S.TUNE, S.RED


def encoded():
    """The news vocabulary, where the turns sit in the corpus, their tokens and their ids."""
    vocab = Vocab.build(data.load_news())      # = artifacts.news_vocab(), as chapter 01 checks
    where = next(i for i, d in enumerate(data.load_dialogues()) if list(d[:2]) == TURNS)
    text = "".join(turn + SEP_TOKEN for turn in TURNS)
    ids = vocab.encode(text)
    assert ids == encode_dialogue(TURNS, vocab)  # the dialogue examples encode it the same way
    tokens = [c for turn in TURNS for c in [*turn, SEP_TOKEN]]
    assert len(tokens) == len(ids)
    return vocab, where, tokens, ids


def kind(i):
    return SEP_C if i == SEP else UNK_C if i == UNK else S.DATA


def vocab_strip(ax, vocab, ids, top, fix, right=99.0):
    """The lookup table idx2token, in one row: the specials, the first character, every id the
    example uses (and the fix's id), the last one; the gaps between them shown as …"""
    shown = sorted({0, 1, 2, 3, len(vocab) - 1, *ids, *fix})
    cells, prev = [], -1
    for i in shown:
        if i > prev + 1:
            cells.append(None)                  # a gap in the ids
        cells.append(i)
        prev = i
    unit = (right - 1.0) / sum(0.5 if i is None else 1.0 for i in cells)
    x, h = 1.0, CH * 0.9
    for i in cells:
        w = unit * (0.5 if i is None else 1.0)
        if i is None:
            S.label(ax, x + w / 2, top - h, "…", size=10, color=S.MUTED)
        else:
            tok = vocab.idx2token[i]
            fill, edge = (S.USE if i in fix else kind(i) if i in ids or i < 3 else S.GREY)
            if i == 0:
                fill, edge = S.GREY
            for row, (text, size, color) in enumerate([(str(i), 8, S.MUTED),
                                                        (tok, 10 if len(tok) == 1 else 7, S.INK)]):
                S.grid(ax, x, top - row * h, 1, 1, w, h, fill=fill, edge=edge,
                       text=lambda r, c, t=text: t, size=size, text_color=color)
        x += w


def regions(vocab):
    """Where the sorted characters change script: symbols, CJK punctuation, ideographs,
    full-width forms (U+3000, U+4E00 and U+FF00 are where those blocks begin)."""
    tokens = vocab.idx2token

    def first(code):
        return next(i for i in range(len(SPECIALS), len(tokens)) if ord(tokens[i]) >= code)

    p, a, b, n = first(0x3000), first(0x4E00), first(0xFF00), len(tokens)
    assert len(SPECIALS) < p < a < b < n
    return (f"ids 3–{a - 1}: symbols and CJK punctuation ({tokens[3]} {tokens[4]} … "
            f"{tokens[p]} {tokens[p + 1]} …), "
            f"{a}–{b - 1}: ideographs ({tokens[a]} … {tokens[b - 1]}), "
            f"{b}–{n - 1}: full-width forms ({tokens[b]} … {tokens[n - 1]})")


def main(out: Path = OUT) -> Path:
    vocab, where, tokens, ids = encoded()
    n = len(tokens)
    fig, ax = S.canvas(figsize=(10, 5.6))
    S.label(ax, 1, 54.5, f"Text to ids with the news vocabulary ({len(vocab):,} tokens): "
            "Vocab.encode", size=11, weight="bold", ha="left")

    # the two turns
    pos = 0
    for k, turn in enumerate(TURNS):
        width = (len(turn) + 1) * CW
        S.box(ax, X0 + pos * CW + 0.3, 46.0, width - 0.6, 4.0, "grey" if k == 0 else "data",
              "", [turn], size=11.5, rounding=0.8)
        S.label(ax, X0 + pos * CW + width / 2, 44.4, f"turn {k + 1}: " + ("user" if k == 0 else
                "reply"), size=9, color=S.MUTED)
        pos += len(turn) + 1
    S.label(ax, X0 - 1.0, 48.0, f"dialogue {where}", size=9.5, weight="bold", ha="right")
    S.label(ax, X0 - 1.0, 46.2, "(data.load_dialogues)", size=8, color=S.MUTED, ha="right")

    # tokens, then ids
    def fill(r, c):
        return kind(ids[c])[0]

    tok_top, id_top = 41.5, 33.5
    S.grid(ax, X0, tok_top, 1, n, CW, CH, fill=fill, text=lambda r, c: tokens[c],
           text_color=lambda r, c: SEP_C[1] if ids[c] == SEP else S.INK,
           size=10.5, edge="#aaa")
    S.grid(ax, X0, id_top, 1, n, CW, CH, fill=fill, text=lambda r, c: str(ids[c]), size=9,
           text_color=lambda r, c: {SEP: SEP_C[1], UNK: UNK_C[1]}.get(ids[c], S.INK), edge="#aaa")
    S.label(ax, X0 - 1.0, tok_top - CH / 2, "tokens", size=10, weight="bold", ha="right")
    S.label(ax, X0 - 1.0, id_top - CH / 2 + 0.8, "ids", size=10, weight="bold", ha="right")
    S.label(ax, X0 - 1.0, id_top - CH / 2 - 1.0, "Vocab.encode", size=8.5, color=S.MUTED,
            ha="right")
    for c in range(n):
        cx = X0 + (c + 0.5) * CW
        S.arrow(ax, (cx, tok_top - CH - 0.4), (cx, id_top + 0.4), color=kind(ids[c])[1],
                lw=1.0, scale=8)

    # what the colours say
    unk_at = [c for c in range(n) if ids[c] == UNK]
    sep_at = [c for c in range(n) if ids[c] == SEP]
    assert unk_at and all(tokens[c] == "?" for c in unk_at) and "?" not in vocab
    ux = X0 + (unk_at[-1] + 0.5) * CW
    S.label(ax, ux + 3.2, id_top - CH - 1.6, f"half-width ? is not in the news: {UNK_TOKEN} = "
            f"{UNK}", size=9, color=UNK_C[1], ha="right", va="top")
    sx = X0 + (sep_at[0] + 0.5) * CW
    S.label(ax, sx - 1.2, id_top - CH - 1.6, f"the text {SEP_TOKEN} is one token: {SEP}",
            size=9, color=SEP_C[1], ha="right", va="top")
    back = vocab.decode(ids)
    S.label(ax, X0, id_top - CH - 5.3, f"decode(ids) = {back}:  both ? came back as {UNK_TOKEN}",
            size=9, color=S.TEXT, ha="left", va="top")

    # the lookup table itself
    strip_top = 16.5
    S.label(ax, 1, strip_top + 2.0, f"the vocabulary, id → token: {', '.join(SPECIALS)} at 0, 1, "
            "2, then every character of the news, sorted by code point", size=9.5, weight="bold",
            ha="left")
    fixed = data.to_fullwidth("?", vocab)
    fix = vocab.encode(fixed)
    assert fixed != "?" and fix != [UNK]
    vocab_strip(ax, vocab, ids, strip_top, fix)
    bottom = strip_top - 2 * CH * 0.9
    S.label(ax, 1, bottom - 1.2, regions(vocab), size=8.5, color=S.MUTED, ha="left", va="top")
    S.label(ax, 1, bottom - 4.4, f"green: data.to_fullwidth maps ? to its full-width twin "
            f"{fixed} (id {fix[0]}), which the news does use", size=9, color=S.USE[1], ha="left",
            va="top")
    return S.save(fig, out)


if __name__ == "__main__":
    print(main())
