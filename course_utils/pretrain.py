"""`python -m course_utils.train`: pretrain the char-level GPT on the news corpus (chapter 05)
and cache it. The command line lives here, apart from the loop, because it needs the model
store (`artifacts`), which itself trains with `course_utils.train`.
"""

from __future__ import annotations

import argparse
import sys

from . import amp
from .train import CheckpointError


def main(argv: list[str] | None = None) -> int:
    from . import artifacts
    from .config import get_profile

    parser = argparse.ArgumentParser(
        prog="python -m course_utils.train",
        description="Pretrain the char-level GPT on the news corpus (what chapter 05 does), "
                    "cache it for later chapters, and print its validation loss.")
    parser.add_argument("--profile", choices=["ci", "cpu", "gpu"], help="model size and budget "
                        "(default: $COURSE_PROFILE, else gpu with CUDA, else cpu)")
    parser.add_argument("--steps", type=int, help="override the profile's number of steps")
    parser.add_argument("--force", action="store_true", help="retrain even if a cached model exists")
    parser.add_argument("--precision", default="fp32", choices=amp.PRECISIONS)
    args = parser.parse_args(argv)
    try:
        profile = get_profile(args.profile)
        if args.steps is not None:
            if args.steps < 1:
                parser.error("--steps must be at least 1")
            profile = profile.replace(max_steps=args.steps)
        model, vocab, info = artifacts.pretrained_lm(profile, force=args.force, precision=args.precision)
    except (ValueError, artifacts.ArtifactError, CheckpointError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"profile {profile.name}: {model.num_parameters():,} parameters, "
          f"val loss {info['val_loss']:.3f} (unigram baseline {info['unigram_loss']:.3f}), "
          f"checkpoint {info['path']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
