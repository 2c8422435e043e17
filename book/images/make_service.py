"""Draw book/images/service.png, chapter 12's request path through the aiohttp generation service.
Run: python book/images/make_service.py (names, limits and messages from course_utils.serve)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import _style as S
from matplotlib.patches import Rectangle

from course_utils import serve

OUT = Path(__file__).with_name("service.png")
BODY = {"context": "今天", "maxlength": 50, "samples": 3}
BAD = {"context": "今天", "maxlength": 0}
# lanes: name -> (bottom, top, label, gloss)
LANES = {
    "client": (41.0, 53.0, "client", "客户端"),
    "loop": (20.5, 39.5, "event loop", "aiohttp, one thread"),
    "worker": (2.0, 19.0, "worker thread", "ThreadPoolExecutor"),
}
LANE_X = 14.0
MONO = "DejaVu Sans Mono"


def real_behaviour():
    """What parse_request really returns and says, so the figure cannot drift from serve.py."""
    args = serve.parse_request(BODY)
    try:
        serve.parse_request(BAD)
    except serve.BadRequest as err:
        message = str(err)
    else:
        raise AssertionError("the bad example must be refused")
    return args, message


def lanes(ax):
    for k, (lo, hi, title, gloss) in enumerate(LANES.values()):
        ax.add_patch(Rectangle((0.5, lo), 99.3, hi - lo, fc="#fafafa" if k % 2 else "white",
                               ec="#ddd", lw=1, zorder=0))
        S.label(ax, 1.5, (lo + hi) / 2 + 1.2, title, size=10, weight="bold", ha="left")
        S.label(ax, 1.5, (lo + hi) / 2 - 1.3, gloss, size=9, color=S.MUTED, ha="left")


def main(out: Path = OUT) -> Path:
    args, bad_message = real_behaviour()
    fig, ax = S.canvas(figsize=(10, 5.6))
    lanes(ax)

    # the client
    body = [f'"{k}": {v!r},'.replace("'", '"') for k, v in BODY.items()]
    body[0], body[-1] = "{" + body[0], body[-1][:-1] + "}"
    S.box(ax, 15, 42.5, 19.5, 9.5, "data", "POST /generate", body, title_size=10, size=9,
          gap=1.2)
    error = textwrap.wrap(f"“{bad_message}”", 26)
    S.box(ax, 36.5, 42.5, 19, 9.5, "red", '400 {"error": …}', error, title_size=10, size=9,
          gap=1.25)
    S.box(ax, 58.5, 42.5, 17, 9.5, "data", "GET /health", ["answered at once,",
                                                           "mid-generation"],
          title_size=10, size=9)
    S.box(ax, 81, 43, 18, 8.5, "use", "200", ['["…", "…", "…"]', f"{BODY['samples']} continuations"],
          title_size=10, size=9)

    # the event loop
    S.box(ax, 15, 23, 19.5, 14.5, "model", "generate_handler", [
        "await request.json()", "not JSON → 400", "", "parse_request(body):",
        f"context ≤ {serve.MAX_CONTEXT_CHARS} chars,", f"maxlength 1..{serve.MAX_LENGTH},",
        f"samples 1..{serve.MAX_SAMPLES}, settings"], title_size=10, size=9, gap=1.2)
    S.box(ax, 37.5, 23, 18, 14.5, "model", "run_in_executor", [
        "await loop.", "run_in_executor(", "executor, work)", "", "the loop is free", "while it waits"],
          title_size=10, size=9, gap=1.2)
    S.box(ax, 58.5, 28, 17, 6.5, "model", "health_handler", ['{"status": "ok", …}'],
          title_size=10, size=9)
    S.box(ax, 81, 23, 18, 14.5, "model", "json_response", [
        "web.json_response(", "texts)", "", "ValueError from", "complete (no readable",
        "character) → 400"], title_size=10, size=9, gap=1.2)

    # the worker
    call = (f"sampling.complete(model, vocab, prompt={args['prompt']!r}, "
            f"max_new_tokens={args['max_new_tokens']}, num_samples={args['num_samples']}, "
            f"temperature={args['temperature']}, top_k={args['top_k']}, top_p={args['top_p']})")
    S.box(ax, 37.5, 4, 43.5, 13, "tune", "work(): with lock, torch.inference_mode():",
          textwrap.wrap(call, 58) + ["the lock: one generation at a time"],
          title_size=10, size=9, gap=1.3)

    # the path of one request
    S.arrow(ax, (24.75, 42.2), (24.75, 37.8))
    S.arrow(ax, (32, 37.8), (39, 42.2), color=S.RED[1])
    S.label(ax, 37, 39.2, "BadRequest", size=9, color=S.RED[1], ha="left")
    S.arrow(ax, (34.8, 30.5), (37.2, 30.5))
    S.arrow(ax, (46, 22.7), (46, 17.3))
    S.label(ax, 46.8, 20.2, "work", size=9, ha="left", color=S.MUTED)
    S.arrow(ax, (81.3, 10.5), (85, 10.5), (85, 22.7))
    S.label(ax, 86, 20.0, "list of\nstrings", size=9, ha="left", color=S.MUTED)
    S.arrow(ax, (90, 37.8), (90, 42.2))
    # /health, served by the loop while the worker generates
    S.arrow(ax, (64.5, 42.2), (64.5, 34.8))
    S.arrow(ax, (69.5, 34.8), (69.5, 42.2))
    S.label(ax, 99.5, 0.2, "time →", size=9, color=S.MUTED, ha="right", va="bottom")
    S.label(ax, 1.5, 0.2, f"defaults: temperature {args['temperature']}, top_k {args['top_k']}, "
            f"top_p {args['top_p']}", size=9, color=S.MUTED, ha="left", va="bottom")
    return S.save(fig, out)


if __name__ == "__main__":
    print(main())
