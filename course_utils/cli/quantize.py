"""`python -m course_utils.quantize`: the pretrained GPT in int8, measured side by side with fp32
(chapter 09): size on disk, milliseconds per generated token and per window, validation loss."""

from __future__ import annotations

import argparse

import torch

from .. import artifacts
from ..batches import WindowBatches
from ..config import PROFILES, get_profile
from ..quantize import dynamic_int8, quantize_model
from ..timing import compare, machine_line
from . import PROFILE_HELP


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m course_utils.quantize",
        description="Quantize the pretrained model of a profile (from-scratch int8 and PyTorch's "
                    "dynamic int8) and print size on disk, ms per generated token and val loss.")
    parser.add_argument("--profile", choices=list(PROFILES), help=PROFILE_HELP)
    parser.add_argument("--new-tokens", type=int, default=64, help="tokens generated per timing run")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for the timing (0: torch's default)")
    args = parser.parse_args(argv)
    if args.new_tokens < 1 or args.threads < 0:
        parser.error("--new-tokens must be at least 1 and --threads at least 0")
    try:
        profile = get_profile(args.profile)
    except ValueError as err:
        parser.error(str(err))
    model, vocab, _ = artifacts.pretrained_lm(profile, device="cpu")
    val = WindowBatches(artifacts.news_tokens("val"), profile.batch_size, profile.block_size, seed=1)
    prompt = torch.tensor([vocab.encode("中国")])
    models = {"fp32": model, "int8 from scratch (per channel)": quantize_model(model),
              "int8 dynamic (torch.ao)": dynamic_int8(model)}
    table = compare(models, val_source=val, eval_iters=profile.eval_iters, prompt=prompt,
                    new_tokens=args.new_tokens, batch=val.get(0)[0], threads=args.threads or None)
    print(machine_line())
    print(table.round(3).to_string())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
