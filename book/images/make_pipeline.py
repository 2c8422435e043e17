"""Draw book/images/pipeline.png, the book's road map (run: python book/images/make_pipeline.py)."""

from __future__ import annotations

import logging
from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

from course_utils import plots

OUT = Path(__file__).with_name("pipeline.png")

COLORS = {  # fill, edge
    "data": ("#e8f1fb", "#3b78b8"),
    "model": ("#fdf0e0", "#c77a1a"),
    "use": ("#e9f6ea", "#3f8f46"),
    "tune": ("#f3eafa", "#8150a8"),
}

# name: (x, y, width, kind, title, lines, tag) in axes units (0..100 x 0..50)
BOXES = {
    "text": (1, 38, 17, "data", "Chinese text", ["news 人民日报 1998", "dialogues, reviews"],
             "00 · course_utils.data"),
    "vocab": (21, 38, 17, "data", "Vocabulary 词表", ["<pad> <unk> <sep>", "+ characters ⇄ ids"],
              "01 · course_utils.vocab"),
    "dataset": (41, 38, 17, "data", "Dataset 数据集", ["(x, y) shifted by one", "batches of windows"],
                "02 · course_utils.datasets"),
    "gpt": (61, 38, 17, "model", "GPT", ["attention 注意力", "Transformer blocks"],
            "03-04 · attention, model"),
    "pretrain": (81, 38, 18, "model", "Pretraining 预训练", ["next-character loss", "on news; DDP, AMP"],
                 "course_utils.train"),
    "sampling": (21, 21, 22, "use", "Sampling 采样", ["temperature, top-k, top-p", "KV cache"],
                 "course_utils.sampling"),
    "quantize": (47, 21, 22, "use", "Quantization 量化", ["int8 weights", "size, speed, quality"],
                 "course_utils.quantize"),
    "serve": (73, 21, 22, "use", "Serving", ["an aiohttp web service", "generate over HTTP"],
              "course_utils.serve"),
    "dialogue": (21, 3, 35, "tune", "Task 1 · dialogue 对话",
                 ["turns joined by <sep>, loss on the reply", "then talk to it"],
                 "course_utils.finetune, chat"),
    "sentiment": (60, 3, 35, "tune", "Task 2 · sentiment 情感分类",
                  ["classifier head, freezing, LoRA", "vs TF-IDF and naive Bayes baselines"],
                  "course_utils.finetune"),
}
HEIGHT = 12


def box(ax, x, y, w, kind, title, lines, tag):
    fill, edge = COLORS[kind]
    ax.add_patch(FancyBboxPatch((x, y), w, HEIGHT, boxstyle="round,pad=0.3,rounding_size=1.2",
                                fc=fill, ec=edge, lw=1.5))
    cx = x + w / 2
    ax.text(cx, y + HEIGHT - 2.3, title, ha="center", va="center", fontsize=10.5, weight="bold")
    for k, line in enumerate(lines):
        ax.text(cx, y + HEIGHT - 5.3 - 2.6 * k, line, ha="center", va="center", fontsize=8.5,
                color="#333")
    ax.text(cx, y + 1.2, tag, ha="center", va="center", fontsize=7.5, color="#666",
            style="italic")


def arrow(ax, points):
    for (x0, y0), (x1, y1) in zip(points[:-2], points[1:-1], strict=True):
        ax.plot([x0, x1], [y0, y1], color="#555", lw=1.4)
    ax.add_patch(FancyArrowPatch(points[-2], points[-1], arrowstyle="-|>", mutation_scale=12,
                                 color="#555", lw=1.4, shrinkA=0, shrinkB=0))


def main(out: Path = OUT) -> Path:
    plt.switch_backend("Agg")
    logging.getLogger("matplotlib.font_manager").setLevel(logging.ERROR)  # no bold CJK: fine
    plots.setup()
    fig, ax = plt.subplots(figsize=(11, 5.6))
    ax.set_xlim(0, 100)
    ax.set_ylim(0, 53)
    ax.axis("off")
    for spec in BOXES.values():
        box(ax, *spec)
    top = 38 + HEIGHT / 2
    for a, b in [("text", "vocab"), ("vocab", "dataset"), ("dataset", "gpt"), ("gpt", "pretrain")]:
        xa = BOXES[a][0] + BOXES[a][2] + 0.4
        arrow(ax, [(xa, top), (BOXES[b][0] - 0.4, top)])
    # pretraining feeds the "use it" row and the fine-tuning row
    arrow(ax, [(88, 37.6), (88, 35.5), (32, 35.5), (32, 33.4)])
    arrow(ax, [(58, 35.5), (58, 33.4)])
    arrow(ax, [(84, 35.5), (84, 33.4)])
    arrow(ax, [(97, 37.6), (97, 17.8), (38.5, 17.8), (38.5, 15.4)])
    arrow(ax, [(77.5, 17.8), (77.5, 15.4)])
    for y, label in [(51.5, "BUILD THE MODEL"), (34.4, "USE IT"), (16.8, "FINE-TUNE IT 微调")]:
        ax.text(1, y, label, fontsize=9, color="#777", weight="bold", va="center")
    fig.savefig(out, dpi=110, bbox_inches="tight", facecolor="white")
    plt.close(fig)
    return out


if __name__ == "__main__":
    print(main())
