"""Helpers shared by the benchmark scripts (run_all.py skips files starting with `_`)."""

from __future__ import annotations

import os
import platform
import time

import torch


def machine_info(device: torch.device | str = "cpu") -> dict:
    """What the numbers were measured on: printed at the top of every benchmark."""
    device = torch.device(device)
    info = {"python": platform.python_version(), "torch": torch.__version__,
            "platform": platform.platform(terse=True), "cpu count": os.cpu_count(),
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
