"""The options every benchmark script shares (run_all.py skips files starting with `_`). The
timing itself (the machine, the interleaved loop, the paired ratios) is `course_utils.timing`."""

from __future__ import annotations

import argparse

import torch

from course_utils import config


def make_parser(prog: str, description: str, threads: int = 1):
    """The options every benchmark takes: --profile, --repeats and --threads (`threads` is
    the default; 0 keeps torch's own choice). Add the script's own, then call `setup`."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--profile", choices=list(config.PROFILES),
                        help="model size (default: $COURSE_PROFILE, else gpu with CUDA, else cpu)")
    parser.add_argument("--repeats", type=int, help="interleaved timed repeats (the median is reported)")
    parser.add_argument("--threads", type=int, default=threads,
                        help=f"torch CPU threads while timing (default {threads}; 0 keeps torch's default)")
    return parser


def setup(parser, args, default_repeats: dict, **at_least_one):
    """Check the shared options (and any `name=value` that must be >= 1), set torch's threads;
    returns the profile and the number of repeats. Bad values exit with a usage message."""
    try:
        profile = config.get_profile(args.profile)
    except ValueError as err:
        parser.error(str(err))
    repeats = args.repeats if args.repeats is not None else default_repeats[profile.name]
    for name, value in {"repeats": repeats, **at_least_one}.items():
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    if args.threads < 0:
        parser.error("--threads must be 0 (torch's default) or more")
    if args.threads:
        torch.set_num_threads(args.threads)
    return profile, repeats
