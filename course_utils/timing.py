"""Timing: what the machine is, how many threads torch uses, and speed measured side by side.

Speed is never one number: it depends on the CPU (its vector instructions decide whether
bf16 or int8 pays), on the threads, and on what else the machine is doing. So every timing
in the book prints the machine once, and compares variants *interleaved*: each round times
every variant once, alternating the order, so a slow patch of a shared machine hits all of
them alike (`time_interleaved`, the one timing loop the book, `bench/` and the tests use).
"""

from __future__ import annotations

import contextlib
import copy
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterable

import pandas as pd
import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile
from tqdm.auto import tqdm

from .evaluation import evaluate
from .export import greedy_decode
from .quantize import dynamic_int8, state_dict_bytes
from .sampling import generate

# ---------------------------------------------------------------------------- the machine

# CPU features that decide which speed-ups exist: bf16 arithmetic (avx512_bf16, AMX) and
# the vector widths int8 and fp32 kernels use.
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


def _cpuinfo_field(name: str) -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith(name):
                    return line.split(":", 1)[1]
    except OSError:
        pass
    return None


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux), or what the platform reports."""
    name = _cpuinfo_field("model name")
    if name is not None:
        return " ".join(name.split())
    return platform.processor() or platform.machine() or "unknown CPU"


def cpu_flags(names=CPU_FLAGS) -> dict[str, bool]:
    """Which of the CPU features `names` this machine has (all False where it cannot tell)."""
    flags = set((_cpuinfo_field("flags") or "").split())
    return {name: name in flags for name in names}


def load_average() -> tuple[float, float, float] | None:
    """The 1, 5 and 15-minute load averages (None where the OS has none)."""
    try:
        return os.getloadavg()
    except (OSError, AttributeError):
        return None


def machine_line() -> str:
    """One line a chapter prints once, in its set-up cell: CPU, cores, threads, load, key flags."""
    load = load_average()
    flags = cpu_flags()
    return (f"{cpu_model()} | {os.cpu_count()} cores | torch threads {torch.get_num_threads()} | "
            f"load average {'n/a' if load is None else ' '.join(f'{x:.2f}' for x in load)} | "
            f"{', '.join(f'{k} {chr(0x2713) if v else chr(0x2717)}' for k, v in flags.items())}")


def machine_info(device: torch.device | str = "cpu") -> dict:
    """What the numbers were measured on, as a dict: printed at the top of every benchmark."""
    device = torch.device(device)
    load = load_average()
    info = {"python": platform.python_version(), "torch": torch.__version__,
            "platform": platform.platform(terse=True), "cpu": cpu_model(),
            "cpu flags": ", ".join(k for k, v in cpu_flags().items() if v) or "none of "
            + "/".join(CPU_FLAGS), "cpu count": os.cpu_count(),
            "load average": "n/a" if load is None else " ".join(f"{x:.2f}" for x in load),
            "torch threads": torch.get_num_threads(), "device": str(device)}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


@contextlib.contextmanager
def num_threads(threads: int | None):
    """Run the block on `threads` CPU threads (torch.set_num_threads), restoring the previous
    setting afterwards; None leaves it as it is."""
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# ---------------------------------------------------------------------------- side by side


def sync(device: torch.device | str) -> None:
    """Wait for queued GPU work, so a timer measures it (a no-op on the CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def time_interleaved(runs: dict[str, Callable[[], object]], repeats: int, *, warmup: int = 1,
                     device: torch.device | str = "cpu", threads: int | None = None,
                     on_round: Callable[[], None] | None = None) -> dict[str, list[float]]:
    """Seconds of each zero-argument callable in `runs`, `repeats` times, alternating the
    order every repeat so that a slow patch of a shared machine hits every variant; `warmup`
    untimed calls of each first (allocator, kernels, caches); on `threads` CPU threads (None:
    the current setting). `on_round()` is called after each timed call (a progress bar)."""
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be a whole number >= 1, got {repeats!r}")
    names = list(runs)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    with num_threads(threads):
        for fn in runs.values():
            for _ in range(warmup):
                fn()
        for r in range(repeats):
            for name in names if r % 2 == 0 else names[::-1]:
                sync(device)
                t0 = time.perf_counter()
                runs[name]()
                sync(device)
                seconds[name].append(time.perf_counter() - t0)
                if on_round is not None:
                    on_round()
    return seconds


def paired_ratio(slow: list[float], fast: list[float]) -> str:
    """How many times faster `fast` ran than `slow`, from seconds timed in the same interleaved
    repeats: the median of the per-repeat ratios slow[i] / fast[i], with their range. A pair is
    timed back to back, so a slow patch of a shared machine hits both of its sides."""
    ratios = sorted(s / f for s, f in zip(slow, fast, strict=True))
    return (f"{statistics.median(ratios):.2f}x" + (f" (per repeat {ratios[0]:.2f}-{ratios[-1]:.2f})"
                                                   if len(ratios) > 1 else ""))


# ---------------------------------------------------------------------------- a model's speed


def tokens_per_second(model, idx, max_new_tokens: int, repeats: int = 3, threads: int | None = None,
                      **settings) -> float:
    """Generation speed: new tokens per second, the best of `repeats` timed runs (after one
    untimed warm-up). Pass `use_cache=False` to time the recomputing path. `threads` sets
    torch's CPU threads for the measurement (restored afterwards); None keeps the current."""
    settings.setdefault("temperature", 0)
    settings.pop("stop_tokens", None)  # time exactly max_new_tokens tokens
    generate(model, idx, min(max_new_tokens, 4), **settings)  # warm-up (compiles, if asked to)
    best = min(time_interleaved({"run": lambda: generate(model, idx, max_new_tokens, **settings)},
                                repeats, warmup=0, threads=threads)["run"])
    return max_new_tokens / max(best, 1e-9)


@torch.no_grad()
def forward_ms(model: nn.Module, x: torch.Tensor, repeats: int = 3, threads: int | None = None,
               warmup: bool = True) -> float:
    """Milliseconds of one forward pass over the batch `x` (best of `repeats`, after a warm-up
    pass unless `warmup` is False), on `threads` CPU threads (None: the current setting)."""
    seconds = time_interleaved({"forward": lambda: model(x)}, repeats, warmup=int(warmup), threads=threads)
    return min(seconds["forward"]) * 1000


def compare(models: dict, *, val_source=None, eval_iters: int = 10, prompt=None, new_tokens: int = 64,
            batch=None, rounds: int = 3, threads: int | None = None, progress: bool = False,
            compiled: bool = False, skip_loss: Iterable[str] = ()) -> pd.DataFrame:
    """Size on disk (MB), milliseconds per generated token (greedy, batch 1, from `prompt`),
    milliseconds per forward pass over `batch` (whole windows at once, as in evaluation or a
    prompt's prefill) and validation loss (on `val_source`) of several models, the timings
    interleaved over `rounds` rounds, each model's best round kept. With `compiled`, generation
    uses the compiled decode step, after one untimed generation per model that compiles it.
    `skip_loss`: names of models whose validation loss is left out (NaN), for one slow to
    evaluate whose loss is checked another way. Returns a DataFrame, one row per model."""
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ValueError(f"rounds must be a whole number >= 1, got {rounds!r}")
    names = list(models)
    skip_loss = set(skip_loss)
    if skip_loss - set(names):
        raise ValueError(f"skip_loss names no model: {sorted(skip_loss - set(names))}; the models are {names}")
    runs = {}
    for name, m in models.items():
        if prompt is not None:
            if compiled:   # compiles the step and the slide's prefill: not timed
                generate(m, prompt, new_tokens, temperature=0, compiled=True)
            runs[name, "ms_per_token"] = (lambda m=m: generate(m, prompt, new_tokens, temperature=0,
                                                               compiled=compiled))
        if batch is not None:
            x = batch.to(next(m.parameters()).device)
            runs[name, "ms_per_batch"] = torch.no_grad()(lambda m=m, x=x: m(x))
    bar = tqdm(total=rounds * len(runs) + (len(names) if val_source is not None else 0),
               desc="measuring", unit="run", disable=not progress)
    seconds = time_interleaved(runs, rounds, threads=threads, on_round=bar.update)
    rows = {}
    for name, m in models.items():
        row = {"size_MB": state_dict_bytes(m) / 1e6}
        for (model_name, column), times in seconds.items():
            if model_name == name:
                row[column] = 1000 * min(times) / (new_tokens if column == "ms_per_token" else 1)
        if val_source is not None:
            row["val_loss"] = (float("nan") if name in skip_loss
                               else evaluate(m, val_source, eval_iters, next(m.parameters()).device))
            bar.update(1)
        rows[name] = row
    bar.close()
    return pd.DataFrame(rows).T


def linear_timings(model: nn.Module, rows: int = 1, repeats: int = 200, rounds: int = 5,
                   threads: int | None = 1) -> list[dict]:
    """Microseconds per call of every distinct `nn.Linear` shape of `model` on `rows` input rows,
    fp32 against PyTorch's dynamic int8 of the same layer (best of `rounds` interleaved rounds
    of `repeats` calls). Returns one dict per shape: `shape` (in, out), `names` (the modules
    with that shape), `fp32_us`, `int8_us`. Where int8 is faster, quantizing pays."""
    shapes: dict[tuple[int, int], tuple[nn.Linear, list[str]]] = {}   # shape -> (a layer, names)
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear):
            shapes.setdefault((m.in_features, m.out_features), (m, []))[1].append(name)
    out = []
    with torch.inference_mode():
        for key, (linear, names) in shapes.items():
            fp32 = copy.deepcopy(linear).cpu().eval()
            int8 = dynamic_int8(nn.Sequential(fp32))
            x = torch.randn(rows, key[0])

            def calls(layer, x=x):
                for _ in range(repeats):
                    layer(x)

            seconds = time_interleaved({"fp32_us": lambda f=fp32: calls(f), "int8_us": lambda q=int8: calls(q)},
                                       rounds, threads=threads)
            out.append({"shape": key, "names": names,
                        **{label: min(s) / repeats * 1e6 for label, s in seconds.items()}})
    return out


def time_decoding(runs: dict, ids: list[int], n: int, block_size: int, rounds: int = 3) -> dict:
    """Tokens per second of greedy decoding for each `last_logits` function in `runs` (chapter
    13: PyTorch against ONNX Runtime), timed side by side, the best round counted. Also returns
    the tokens, so the caller can check that they all agree."""
    outputs = {}

    def decode(name):
        outputs[name] = greedy_decode(runs[name], ids, n, block_size)

    seconds = time_interleaved({name: lambda name=name: decode(name) for name in runs}, rounds)
    return {name: {"tokens_per_s": n / min(seconds[name]), "tokens": outputs[name]} for name in runs}


# ---------------------------------------------------------------------------- where the time goes


def op_table(fn, repeats: int = 5, top: int = 8, per: int = 1, threads: int | None = None) -> pd.DataFrame:
    """Where the time of `fn()` goes, by operator: a DataFrame of the `top` PyTorch operators
    by *self* CPU time (time inside the operator itself, not in the operators it calls), per
    run of `fn` divided by `per` (e.g. the number of tokens `fn` generates), with the share of
    the wall time. A last row, "(outside the operators)", is the rest of the wall time: Python,
    dispatch and the profiler's own bookkeeping, which inflates every profiled run a little.

    One warm-up run comes first; then `repeats` runs under `torch.profiler.profile`, on
    `threads` CPU threads (None: the current setting).
    """
    # Kineto (the profiler's backend) logs a line at every start and stop unless told not to;
    # it reads this when the profiler first starts in a process
    os.environ.setdefault("KINETO_LOG_LEVEL", "6")
    if not callable(fn) or repeats < 1 or per <= 0:
        raise ValueError("op_table needs a callable, repeats >= 1 and per > 0")
    with num_threads(threads):
        fn()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            t0 = time.perf_counter()
            for _ in range(repeats):
                fn()
            wall_us = (time.perf_counter() - t0) * 1e6
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    scale = 1 / (1000 * repeats * per)  # microseconds in total -> milliseconds per unit
    rows = [{"operator": e.key, "calls": e.count / (repeats * per), "self ms": e.self_cpu_time_total * scale,
             "share of wall time": e.self_cpu_time_total / wall_us} for e in events[:top]]
    inside = sum(e.self_cpu_time_total for e in events)
    rest = events[top:]
    rows.append({"operator": f"(the other {len(rest)} operators)",
                 "calls": sum(e.count for e in rest) / (repeats * per),
                 "self ms": sum(e.self_cpu_time_total for e in rest) * scale,
                 "share of wall time": sum(e.self_cpu_time_total for e in rest) / wall_us})
    rows.append({"operator": "(outside the operators)", "calls": float("nan"),
                 "self ms": max(wall_us - inside, 0.0) * scale,
                 "share of wall time": max(wall_us - inside, 0.0) / wall_us})
    return pd.DataFrame(rows).set_index("operator")
