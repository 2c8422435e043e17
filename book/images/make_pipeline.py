"""Draw book/images/pipeline.png, the book's road map.
Run: python book/images/make_pipeline.py (style shared with the other figures: _style.py)."""

from __future__ import annotations

from pathlib import Path

import _style as S

OUT = Path(__file__).with_name("pipeline.png")

# name: (x, y, width, kind, title, lines, tag) in diagram units (0..100 x 0..53)
BOXES = {
    "text": (1, 38, 17, "data", "Chinese text", ["news 人民日报 1998", "dialogues, reviews"],
             "00 · course_utils.data"),
    "vocab": (21, 38, 17, "data", "Vocabulary 词表", ["<pad> <unk> <sep>", "+ characters ⇄ ids"],
              "01 · course_utils.vocab"),
    "dataset": (41, 38, 17, "data", "Dataset 数据集", ["(x, y) shifted by one", "batches of windows"],
                "02 · course_utils.batches"),
    "gpt": (61, 38, 17, "model", "GPT", ["attention 注意力", "Transformer blocks"],
            "03-04 · attention, model"),
    "pretrain": (81, 38, 17, "model", "Pretraining 预训练", ["next-character loss", "on news; DDP, AMP"],
                 "05-07 · train"),
    "sampling": (21, 21, 17, "use", "Sampling 采样", ["temperature, top-k/p", "KV cache"],
                 "08 · sampling"),
    "quantize": (41, 21, 17, "use", "Quantization 量化", ["int8 weights", "size, speed, loss"],
                 "09 · quantize"),
    "serve": (61, 21, 17, "use", "Serving", ["a web service that", "batches, streams"],
              "12 · serve"),
    "export": (81, 21, 15.5, "use", "Export", ["Hugging Face GPT-2", "ONNX, the browser"],
               "13 · export"),
    "dialogue": (21, 3, 35, "tune", "Task 1 · dialogue 对话",
                 ["turns joined by <sep>, loss on the reply", "then talk to it"],
                 "11 · batches, chat"),
    "sentiment": (60, 3, 35, "tune", "Task 2 · sentiment 情感分类",
                  ["classifier head, freezing, LoRA", "vs TF-IDF and naive Bayes baselines"],
                  "10 · finetune"),
}
HEIGHT = 12


def main(out: Path = OUT) -> Path:
    # the axes of the original layout: 8.5 x 4.3 inches for 100 x 53 units
    fig, ax = S.canvas(figsize=(8.5, 4.3), xlim=(0, 100), ylim=(0, 53), equal=False)
    for x, y, w, kind, title, lines, tag in BOXES.values():
        S.box(ax, x, y, w, HEIGHT, kind, title, lines, tag, size=8.5, tag_size=7.5, gap=1.6,
              rounding=1.2, dy=-1)
    top = 38 + HEIGHT / 2
    for a, b in [("text", "vocab"), ("vocab", "dataset"), ("dataset", "gpt"), ("gpt", "pretrain")]:
        xa = BOXES[a][0] + BOXES[a][2] + 0.4
        S.arrow(ax, (xa, top), (BOXES[b][0] - 0.4, top))
    # pretraining feeds the "use it" row and the fine-tuning row
    S.arrow(ax, (88.75, 37.6), (88.75, 35.5), (29.5, 35.5), (29.5, 33.4))
    for x in (49.5, 69.5, 88.75):
        S.arrow(ax, (x, 35.5), (x, 33.4))
    S.arrow(ax, (97.4, 37.6), (97.4, 17.8), (38.5, 17.8), (38.5, 15.4))
    S.arrow(ax, (77.5, 17.8), (77.5, 15.4))
    for y, text in [(51.5, "BUILD THE MODEL"), (34.4, "USE IT"), (16.8, "FINE-TUNE IT 微调")]:
        S.label(ax, 1, y, text, color="#777", weight="bold", ha="left")
    return S.save(fig, out, dpi=110)


if __name__ == "__main__":
    print(main())
