"""Write the models the site runs in the reader's browser (`make browser-models`).

    python tools/browser_models.py --profile cpu

Exports, with `course_utils.export.to_browser`, into book/_static/models/: chapter 05's news GPT,
chapter 11's dialogue GPT, and chapter 14's three (the review-adapted GPT of chapter 10 before
tuning, the policy chapter 14 tuned toward positive reviews, and chapter 10's classifier, the
reward model), from the artifact cache (trained first if missing; the tuned policy only exists
once chapter 14 has run). Every precision is measured on the same validation batches (file size,
loss change), and the table the browser appendix includes is written
(book/generated/browser_models.md).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from course_utils import artifacts  # noqa: E402
from course_utils.batches import DatasetBatches, DialogueExamples, LabeledTexts, WindowBatches  # noqa: E402
from course_utils.config import PROFILES, get_profile  # noqa: E402
from course_utils.evaluation import evaluate  # noqa: E402
from course_utils.export import PRECISIONS, browser_file_text, browser_model, head_meta  # noqa: E402
from course_utils.files import atomic_write_text  # noqa: E402
from course_utils.finetune import GPTClassifier  # noqa: E402
from course_utils.model import GPTConfig  # noqa: E402
from course_utils.sampling import generate  # noqa: E402
from course_utils.vocab import Vocab  # noqa: E402

STATIC_MODELS = ROOT / "book" / "_static" / "models"
GENERATED_PAGE = ROOT / "book" / "generated" / "browser_models.md"
# The models the site shows: file name -> what the page says it is.
SITE_MODELS = {
    "news": "the pretrained news GPT of chapter 05",
    "dialogue": "the dialogue GPT of chapter 11 (" + {"reviews": "chapter 10's review-adapted GPT",
                                                      "news": "the news GPT"}[artifacts.DIALOGUE_BASE]
                + " fine-tuned on conversations)",
    "reviews": "chapter 10's review-adapted GPT: chapter 14's policy before tuning",
    "positive": "chapter 14's policy, tuned toward positive reviews",
    "reward": "chapter 10's review classifier (adapted GPT, all layers): chapter 14's reward model",
}
# What each file's prompt check starts from.
PROMPTS = {"news": "中国人民", "dialogue": "你好<sep>", "reviews": "这本书", "positive": "这本书", "reward": "这本书"}


def _build(which: str, profile):
    if which == "news":
        return artifacts.pretrained_lm(profile, device="cpu")
    if which == "dialogue":
        return artifacts.dialogue_lm(profile, device="cpu")
    if which == "reviews":
        return artifacts.review_lm(profile, device="cpu")
    if which == "positive":
        return artifacts.tuned_policy(profile, device="cpu")
    return artifacts.review_classifier(profile)


def _val_loss(model, which: str, vocab: Vocab, profile) -> float:
    """Validation loss on the data the model is judged by: news windows, dialogue replies,
    validation reviews (as text for the language models, as labels for the reward model)."""
    if which == "news":
        val = WindowBatches(artifacts.news_tokens("val"), profile.batch_size, profile.block_size, seed=1)
        return evaluate(model, val, max(50, profile.eval_iters), "cpu")
    if which == "dialogue":
        _, val_dialogues = artifacts.dialogue_splits(vocab)
        val_set = DialogueExamples(val_dialogues, vocab, model.config.block_size, response_only=True)
        return evaluate(model, DatasetBatches(val_set, len(val_set), shuffle=False), 1, "cpu")
    _, val_df, _ = artifacts.sentiment_splits(profile, vocab)
    if which == "reward":
        val_set = LabeledTexts(val_df.text.tolist(), val_df.label.tolist(), vocab, model.config.block_size)
        return evaluate(model, DatasetBatches(val_set, len(val_set), shuffle=False), 1, "cpu")
    val = artifacts.review_windows(val_df.text, vocab, profile.batch_size, profile.block_size, seed=1)
    return evaluate(model, val, max(50, profile.eval_iters), "cpu")


def _exported(model, which: str, option: str):
    """The model as the page computes it in precision `option`."""
    if which != "reward":
        return browser_model(model, option)
    clf = GPTClassifier(browser_model(model.backbone, option), 2, pooling=model.pooling)
    clf.head.load_state_dict(model.head.state_dict())
    return clf.eval()


def export_site_models(profile=None, out_dir=None, precision: str = "int8", page=None,
                       progress: bool = True) -> list[dict]:
    """Export the site's models of `profile` for the site in `precision`.

    Every precision is measured on the same validation batches (file size, loss change), and
    the table is written to `page` (default `book/generated/browser_models.md`, which the
    appendix includes). Returns the table's rows.
    """
    profile = profile or get_profile()
    out_dir = Path(out_dir) if out_dir else STATIC_MODELS
    rows = []
    for which, title in SITE_MODELS.items():
        model, vocab, info = _build(which, profile)
        reference = _val_loss(model, which, vocab, profile)
        gpt = model.backbone if which == "reward" else model
        for option in PRECISIONS:
            exported = _exported(model, which, option)
            loss = reference if option == "float32" else _val_loss(exported, which, vocab, profile)
            prompt = vocab.encode(PROMPTS[which])
            lm = exported.backbone if which == "reward" else exported
            greedy = generate(lm, torch.tensor([prompt]), 40, temperature=0)[0, len(prompt):]
            meta = {"title": title, "profile": profile.name, "val_loss_float32": round(reference, 5),
                    "val_loss": round(loss, 5), "parameters": gpt.num_parameters(),
                    "greedy_check": {"prompt_ids": prompt, "ids": greedy.tolist()}}
            if which == "reward":
                meta["classifier"] = head_meta(model)
            text = browser_file_text(gpt, vocab, name=which, meta=meta, precision=option)
            if option == precision:
                atomic_write_text(out_dir / f"{which}.js", text)
            rows.append({"model": which, "precision": option, "MB": len(text.encode()) / 1e6,
                         "val_loss": loss, "change": loss - reference, "written": option == precision,
                         "parameters": gpt.num_parameters(),
                         "macs_per_token": macs_per_token(gpt.config)})
    write_models_page(rows, profile, page)
    return rows


def macs_per_token(config: GPTConfig, context: int | None = None) -> int:
    """Multiply-adds to read one new token with a KV cache holding `context` positions (default:
    a full block): the block matrices, attention over the cache, and the tied head."""
    d, T = config.d_model, config.block_size if context is None else context
    per_block = 3 * d * d + d * d + 2 * d * config.d_ff + 2 * T * d
    return config.n_layers * per_block + config.vocab_size * d


def _signed(x: float) -> str:
    text = f"{x:+.5f}"
    return "0.00000" if float(text) == 0 else text


def write_models_page(rows: list[dict], profile, page=None) -> Path:
    """The table of exported sizes and validation losses, as Markdown for the appendix."""
    page = Path(page) if page else GENERATED_PAGE
    lines = [f"Measured by `python tools/browser_models.py --profile {profile.name}` "
             "(validation loss on the same batches for every precision: news windows for the news "
             "model, the replies of the held-out conversations for the dialogue model, windows of "
             "the validation reviews for the review models, and the validation reviews' labels, "
             "a classification loss, for the reward model).", "",
             "| model | precision | file | validation loss | change | on the site |",
             "|---|---|---:|---:|---:|:---:|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['precision']} | {r['MB']:.2f} MB | {r['val_loss']:.5f} | "
                     f"{_signed(r['change'])} | {'yes' if r['written'] else ''} |")
    shipped = sum(r["MB"] for r in rows if r["written"])
    size = {(r["model"], r["precision"]): r for r in rows}
    first = rows[0]
    lines += ["", f"Each language model has {first['parameters']:,} parameters and reads a new token with "
              f"{first['macs_per_token']:,} multiply-adds when its context is full. The site ships "
              f"{shipped:.2f} MB of model files in all."]
    for model in dict.fromkeys(r["model"] for r in rows):
        if (model, "int8") in size and (model, "float16") in size:
            i8, f16 = size[model, "int8"], size[model, "float16"]
            lines.append(f"\nFor the {model} model, float16 would make the file "
                         f"{f16['MB'] / i8['MB']:.2f} times as large as int8's, for a validation "
                         f"loss change of {_signed(f16['change'])} nats instead of {_signed(i8['change'])}.")
    atomic_write_text(page, "\n".join(lines) + "\n")
    return page


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python tools/browser_models.py",
        description="Export the GPTs the site runs in the browser, and the "
                    "table of their sizes and validation losses for the browser appendix.")
    parser.add_argument("--profile", choices=list(PROFILES),
                        help="model size (default: $COURSE_PROFILE, else gpu with CUDA, else cpu)")
    parser.add_argument("--out", default=str(STATIC_MODELS), help="folder for the model files (news.js, dialogue.js, ...)")
    parser.add_argument("--precision", choices=PRECISIONS, default="int8")
    args = parser.parse_args(argv)
    try:
        rows = export_site_models(get_profile(args.profile), args.out, args.precision)
    except (ValueError, RuntimeError, FileNotFoundError, artifacts.ArtifactError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for r in rows:
        print(f"{r['model']:>8} {r['precision']:>7}: {r['MB']:5.2f} MB, val loss {r['val_loss']:.4f} "
              f"({r['change']:+.4f} nats){'  <- written' if r['written'] else ''}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
