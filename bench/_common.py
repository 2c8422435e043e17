"""Helpers shared by the benchmark scripts (run_all.py skips files starting with `_`)."""

from __future__ import annotations

import os
import platform
import statistics
import time

import torch


def machine_info(device: torch.device | str = "cpu") -> dict:
    """What the numbers were measured on: printed at the top of every benchmark."""
    from course_utils import config

    device = torch.device(device)
    load = config.load_average()
    info = {"python": platform.python_version(), "torch": torch.__version__,
            "platform": platform.platform(terse=True), "cpu": config.cpu_model(),
            "cpu flags": ", ".join(k for k, v in config.cpu_flags().items() if v) or "none of "
            + "/".join(config.CPU_FLAGS), "cpu count": os.cpu_count(),
            "load average": "n/a" if load is None else " ".join(f"{x:.2f}" for x in load),
            "torch threads": torch.get_num_threads(), "device": str(device)}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def sync(device: torch.device | str) -> None:
    """Wait for queued GPU work, so a timer measures it (a no-op on the CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def time_interleaved(runs: dict, repeats: int, device: torch.device | str = "cpu",
                     warmup: int = 1) -> dict[str, list[float]]:
    """Seconds of each zero-argument callable in `runs`, `repeats` times, alternating the
    order every repeat so that a slow patch of a shared machine hits every variant; `warmup`
    untimed calls of each first (allocator, kernels, caches)."""
    for fn in runs.values():
        for _ in range(warmup):
            fn()
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for r in range(repeats):
        for name in (list(runs) if r % 2 == 0 else list(runs)[::-1]):
            sync(device)
            t0 = time.perf_counter()
            runs[name]()
            sync(device)
            seconds[name].append(time.perf_counter() - t0)
    return seconds


def paired_ratio(slow: list[float], fast: list[float]) -> str:
    """How many times faster `fast` ran than `slow`, from seconds timed in the same interleaved
    repeats: the median of the per-repeat ratios slow[i] / fast[i], with their range. A pair is
    timed back to back, so a slow patch of a shared machine hits both of its sides."""
    ratios = sorted(s / f for s, f in zip(slow, fast, strict=True))
    return (f"{statistics.median(ratios):.2f}x" + (f" (per repeat {ratios[0]:.2f}-{ratios[-1]:.2f})"
                                                   if len(ratios) > 1 else ""))


def make_parser(prog: str, description: str, threads: int = 1):
    """The options every benchmark takes: --profile, --repeats and --threads (`threads` is
    the default; 0 keeps torch's own choice). Add the script's own, then call `setup`."""
    import argparse

    from course_utils import config

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
    from course_utils import config

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
