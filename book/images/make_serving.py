"""Draw book/images/serving.png, chapter 12's service: a request's path from the HTTP handler to
the worker thread's BatchEngine and back as server-sent events.
Run: python book/images/make_serving.py (limits read from course_utils.serve; the slots filled
by a real course_utils.batching.BatchEngine; style: _style)."""

from __future__ import annotations

from pathlib import Path

import _style as S
import torch
from matplotlib.patches import FancyBboxPatch

from course_utils import serve
from course_utils.batching import BatchEngine, Group
from course_utils.model import GPT, GPTConfig

OUT = Path(__file__).with_name("serving.png")
SAMPLES = [16, 3, 16, 1, 8, 16, 6, 2]     # the requests that arrive, in order: samples each
QUEUE_SHOWN = 10                       # places of the queue drawn (of serve.MAX_QUEUE)
SLOT_COLS = 8                          # the engine's slots drawn as rows of 8


def engine_state():
    """Admit the requests in arrival order into a BatchEngine of serve.MAX_ROWS slots, as the
    service's worker does (first come, while their rows fit): (slot -> request, waiting)."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=12, block_size=16, d_model=8, n_heads=2, n_layers=1, d_ff=16,
                          dropout=0.0)).eval()
    engine = BatchEngine(model, serve.MAX_ROWS)
    groups = [Group([3, 4, 5], n, 8, seed=k) for k, n in enumerate(SAMPLES)]
    waiting = list(range(len(groups)))
    while waiting and engine.fits(groups[waiting[0]]):
        engine.add(groups[waiting.pop(0)])
    slots = {row: k for k, g in enumerate(groups) if g.rows for row in g.rows}
    return slots, waiting, engine


def region(ax, x, y, w, h, title, sub):
    """A thread's region: a dashed frame, its name at the top left."""
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.3,rounding_size=1.2",
                                fc="#fafafa", ec=S.MUTED, lw=1.2, ls="--", zorder=1))
    S.label(ax, x + 1.0, y + h - 1.6, title, size=10, weight="bold", ha="left")
    S.label(ax, x + 1.0, y + h - 3.6, sub, size=8.3, color=S.MUTED, ha="left")


def main(out: Path = OUT) -> Path:
    slots, waiting, engine = engine_state()
    fig, ax = S.canvas(figsize=(10, 5.9), xlim=(0, 100), ylim=(0, 59))
    palette = [S.DATA, ("#eef3d2", "#6f8a10"), S.USE, S.TUNE, ("#e3e7f8", "#4a5ab0"), ("#fff6d5", "#b08a00"), ("#e0f4f4", "#2a8a8a"),
               ("#fde8f3", "#b0407a")]

    # the client
    S.box(ax, 0.8, 33, 15.5, 15, "data", "client", ["POST /generate", '{"context": "新华社北京",',
          '"maxlength": 40,', '"samples": 3,', '"stream": true}'], size=8.2, gap=1.45)
    S.box(ax, 0.8, 4.5, 15.5, 15, "data", "what comes back", ['data: {"pieces": […]}', "one event per step",
          "…", "event: done", '{"texts": […]}'], size=8.2, gap=1.45)

    # the event loop: handler, validation, queue, waiting for events
    region(ax, 19.5, 2.5, 40, 54, "event loop (aiohttp, one thread)", "never computes: /health answers at once")
    S.box(ax, 21.5, 39.5, 36, 10.5, "use", "generate_handler: parse_request", [
        f"context: text, at most {serve.MAX_CONTEXT_CHARS} characters",
        f"maxlength 1…{serve.MAX_LENGTH}, samples 1…{serve.MAX_SAMPLES}, sampler settings",
        "anything else → 400 and a message"], size=8.2, gap=1.4)
    S.box(ax, 21.5, 24, 36, 11, "use", "Worker.submit: the queue", [""] * 2 + [
        f"at most MAX_QUEUE = {serve.MAX_QUEUE} waiting; one more →",
        f"503 at once, Retry-After: {serve.RETRY_AFTER_S} s"], size=8.2, gap=1.4)
    cw = 2.6
    for i in range(QUEUE_SHOWN):                       # the queue's places, the waiting first
        k = waiting[i] if i < len(waiting) else None
        fill = palette[k % len(palette)][0] if k is not None else "white"
        edge = palette[k % len(palette)][1] if k is not None else "#aaa"
        ax.add_patch(FancyBboxPatch((26 + i * cw, 29.6), cw - 0.4, 2.2, boxstyle="square,pad=0",
                                    fc=fill, ec=edge, lw=1.0, zorder=3))
        if k is not None:
            S.label(ax, 26 + i * cw + (cw - 0.4) / 2, 30.7, str(k + 1), size=7, zorder=4)
    S.label(ax, 26 + QUEUE_SHOWN * cw + 0.4, 30.7, f"… {serve.MAX_QUEUE}", size=8, color=S.MUTED,
            ha="left")
    S.box(ax, 21.5, 5, 36, 14, "use", "the handler awaits its job's events", [
        f"TIME_LIMIT_S = {serve.TIME_LIMIT_S:g} s, queueing included → 504",
        f"client gone (checked every {serve.POLL_S} s) → its rows freed",
        "stream: each event written as it comes;",
        "otherwise one JSON list at the end"], size=8.2, gap=1.4)

    # the worker thread and its engine
    region(ax, 62.5, 2.5, 37, 54, 'worker thread "generate"', "the only thread that touches the model")
    S.box(ax, 64.5, 21.5, 33, 27.5, "model", "", [], lw=1.3)
    S.label(ax, 81, 46.6, f"BatchEngine: MAX_ROWS = {serve.MAX_ROWS} slots", size=9.5, weight="bold")
    S.label(ax, 81, 44.4, "KV-cache rows, one per sample", size=8.2, color=S.MUTED)
    rows = (serve.MAX_ROWS + SLOT_COLS - 1) // SLOT_COLS
    sx, top, sw = 81 - SLOT_COLS * 3.2 / 2, 42.6, 3.2

    def fill(r, c):
        k = slots.get(r * SLOT_COLS + c)
        return "white" if k is None else palette[k % len(palette)][0]

    def text(r, c):
        k = slots.get(r * SLOT_COLS + c)
        return "" if k is None else str(k + 1)

    S.grid(ax, sx, top, rows, SLOT_COLS, sw, 2.1, fill=fill, text=text, size=7, edge="#999")
    S.label(ax, 81, 24.2, f"{engine.rows_in_use()} of {engine.max_rows} slots in use by requests "
            f"1-{len(engine.groups)}; request {waiting[0] + 1}\n({SAMPLES[waiting[0]]} samples) waits "
            "in the queue until its rows fit", size=8.2, color=S.MUTED)
    S.box(ax, 64.5, 5, 33, 13, "model", "each step()", [
        "admit queued jobs whose rows fit;", "prefill the new ones; ONE decode_step",
        "for all rows, each request drawing with", "its own generator; the finished leave"],
        size=8.2, gap=1.4)
    S.arrow(ax, (81, 20.9), (81, 18.6), style="<|-|>")

    # the path: in, down, across to the worker, and back as events
    S.arrow(ax, (16.6, 44.5), (21.2, 44.5))
    S.arrow(ax, (39.5, 39.2), (39.5, 35.4))
    S.label(ax, 40.3, 37.3, "Job", size=8.3, color=S.MUTED, ha="left")
    S.arrow(ax, (57.8, 29.5), (64.2, 29.5))
    S.label(ax, 61.0, 31.0, "admit", size=8, color=S.MUTED, bbox=dict(fc="white", ec="none", pad=0.6))
    S.arrow(ax, (64.2, 11.5), (57.8, 11.5))
    S.label(ax, 61.0, 13.0, "emit", size=8, color=S.MUTED, bbox=dict(fc="white", ec="none", pad=0.6))
    S.arrow(ax, (21.2, 12), (16.6, 12))
    S.label(ax, 18.9, 13.4, "SSE", size=8, color=S.MUTED)
    return S.save(fig, out)


if __name__ == "__main__":
    print(main())
