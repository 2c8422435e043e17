"""Mixed precision: the autocast context and loss scaler the training loop uses.

`precision` is "fp32" (off), "bf16" (CPU or CUDA) or "fp16" (CUDA only, with a GradScaler).
"""

from __future__ import annotations

import contextlib

import torch

PRECISIONS = ("fp32", "bf16", "fp16")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(precision: str, device: torch.device | str) -> str:
    device = torch.device(device)
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("precision 'fp16' needs a CUDA device (its GradScaler is CUDA-only here); "
                         "use 'bf16' on the CPU")
    return precision


def autocast(device: torch.device | str, precision: str = "fp32"):
    """`torch.autocast` for `precision` on `device` (a no-op context for fp32)."""
    device = torch.device(device)
    check_precision(precision, device)
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=DTYPES[precision])


def grad_scaler(device: torch.device | str, precision: str = "fp32") -> torch.amp.GradScaler:
    """A `torch.amp.GradScaler`, enabled only for fp16 (bf16 has fp32's range: no scaling)."""
    device = torch.device(device)
    return torch.amp.GradScaler(device.type, enabled=(precision == "fp16"))
