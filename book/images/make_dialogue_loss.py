"""Draw book/images/dialogue_loss.png, chapter 11's dialogue as one sequence, reply-only loss.
Run: python book/images/make_dialogue_loss.py (rows from course_utils.batches; style: _style)."""

from __future__ import annotations

from pathlib import Path

import _style as S

from course_utils.batches import DialogueExamples, encode_dialogue
from course_utils.vocab import PAD, SEP, Vocab

OUT = Path(__file__).with_name("dialogue_loss.png")
TURNS = ["你好", "你好呀", "你叫什么名字？", "我是机器人"]
CW, CH = 4.15, 3.4          # cell width and height
X0 = 12.0                   # left edge of position 0

HIST, REPLY, PADC = S.GREY, S.DATA, ("white", "#bbb")


def example():
    """The last example of this conversation (the reply 我是机器人), as DialogueExamples builds it."""
    vocab = Vocab.build(TURNS)
    ids = encode_dialogue(TURNS, vocab)
    block_size = len(ids)                      # room for every token but the last, plus one <pad>
    data = DialogueExamples([TURNS], vocab, block_size, response_only=True)
    assert len(data) == len(TURNS) - 1        # one example per reply
    seq, n_history = data.examples[-1]
    assert seq == ids                          # nothing cropped: it fits the block
    x, y = data[len(data) - 1]
    return vocab, ids, n_history, x.tolist(), y.tolist()


SHORT = {"<sep>": "sep", "<pad>": "pad"}   # special tokens, shortened to fit a cell


def token_row(ax, top, tokens, kinds, label, sub):
    def fill(r, c):
        return {"hist": HIST, "reply": REPLY, "pad": PADC}[kinds[c]][0]

    def text(r, c):
        return SHORT.get(tokens[c], tokens[c])

    def color(r, c):
        return {"<pad>": "#aaa", "<sep>": S.TUNE[1]}.get(tokens[c], S.INK)

    S.grid(ax, X0, top, 1, len(tokens), CW, CH, fill=fill, text=text, text_color=color, size=9.5,
           edge="#aaa")
    S.label(ax, X0 - 1.0, top - CH / 2 + 0.8, label, size=10, weight="bold", ha="right")
    S.label(ax, X0 - 1.0, top - CH / 2 - 1.0, sub, size=9, color=S.MUTED, ha="right")


def main(out: Path = OUT) -> Path:
    vocab, ids, n_hist, x, y = example()
    n = len(x)
    tok = [vocab.idx2token[i] for i in range(len(vocab))]
    fig, ax = S.canvas(figsize=(10, 4.9))

    # the conversation, turn by turn
    S.label(ax, 1, 47.0, "A conversation 对话, as one sequence: encode_dialogue puts <sep> after "
            "every turn", size=10.5, weight="bold", ha="left")
    pos = 0
    for k, turn in enumerate(TURNS):
        width = (len(turn) + 1) * CW      # the turn and its <sep>
        kind = "data" if k == len(TURNS) - 1 else "grey"
        who = "reply (learned)" if k == len(TURNS) - 1 else ("user" if k % 2 == 0 else "bot")
        S.box(ax, X0 + pos * CW + 0.3, 40.0, width - 0.6, 4.2, kind, turn, [], title_size=10.5,
              rounding=0.8)
        S.label(ax, X0 + pos * CW + width / 2, 38.6, f"turn {k + 1}: {who}", size=9,
                color=S.MUTED)
        pos += len(turn) + 1

    # positions
    for t in range(n):
        S.label(ax, X0 + (t + 0.5) * CW, 34.6, str(t), size=9, color="#999")
    S.label(ax, X0 - 1.0, 34.6, "position", size=9, color="#999", ha="right")

    def kind_x(t):
        if x[t] == PAD:
            return "pad"
        return "hist" if t < n_hist else "reply"

    def kind_y(t):
        if y[t] == PAD:
            return "pad"
        return "reply"

    token_row(ax, 33.0, [tok[i] for i in x], [kind_x(t) for t in range(n)], "x", "inputs")
    token_row(ax, 24.0, [tok[i] for i in y], [kind_y(t) for t in range(n)], "y",
              "targets")
    # the shift: y[t] is the token after x[t]
    for t in (n_hist - 1, n_hist, n_hist + 1):
        S.arrow(ax, (X0 + (t + 1.5) * CW - 0.6, 33.0 - CH - 0.2), (X0 + (t + 0.5) * CW + 0.6,
                24.0 + 0.2), color=S.DATA[1], lw=1.0, scale=9)
    S.label(ax, X0 + (n_hist - 1) * CW - 0.5, 27.7, "shifted by one: y[t] is the token after x[t]",
            size=9, color=S.DATA[1], ha="right")

    # the loss mask
    counted = [v != PAD for v in y]
    for t in range(n):
        S.label(ax, X0 + (t + 0.5) * CW, 18.4, "✓" if counted[t] else "·", size=11 if counted[t]
                else 10, color=S.USE[1] if counted[t] else "#aaa", weight="bold")
    S.label(ax, X0 - 1.0, 18.4, "in the loss", size=10, weight="bold", ha="right")

    # braces under the history and the reply
    def span(a, b, y0, text, color):
        xa, xb = X0 + a * CW + 0.3, X0 + b * CW - 0.3
        ax.plot([xa, xa, xb, xb], [y0 + 0.8, y0, y0, y0 + 0.8], color=color, lw=1.2)
        S.label(ax, (xa + xb) / 2, y0 - 1.6, text, size=9, color=color, va="top")

    first = n_hist - 1      # the first learned target: the reply's first character, read at <sep>
    last = max(t for t in range(n) if counted[t])
    span(0, first, 15.6, f"history: targets set to <pad> ({first} positions, ignored by\n"
         "cross_entropy(ignore_index=<pad>)): seen, not learned", S.MUTED)
    span(first, last + 1, 15.6, f"the reply and its closing <sep>:\n{last - first + 1} targets "
         "learned", S.DATA[1])
    assert y[first] == ids[n_hist] and y[last] == SEP and x[first] == SEP
    S.label(ax, 1, 8.6, f"DialogueExamples(..., response_only=True) makes one example per reply; "
            f"this is the last of {len(TURNS) - 1}: history = turns 1-3\n({n_hist} tokens, "
            "cropped from the left when too long), then the reply.   sep = <sep>, "
            "pad = <pad> (padding: never in the loss)", size=9, color=S.MUTED, ha="left",
            va="top", linespacing=1.4)
    return S.save(fig, out)


if __name__ == "__main__":
    print(main())
