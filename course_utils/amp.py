"""Mixed precision (chapter 07): the autocast context and loss scaler the training loop uses,
and the small tools the chapter measures with (format table, underflow, activation bytes).

`precision` is "fp32" (off), "bf16" (CPU or CUDA) or "fp16" (CUDA only, with a GradScaler).
The modern spelling is `torch.amp.autocast(device_type, ...)` / `torch.amp.GradScaler(device)`;
`torch.cuda.amp.*` is the deprecated one.
"""

from __future__ import annotations

import contextlib
from collections import Counter

import pandas as pd
import torch
from torch import nn

PRECISIONS = ("fp32", "bf16", "fp16")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(precision: str, device: torch.device | str) -> str:
    """Return `precision` if `device` can train in it, else raise a ValueError that says why."""
    device = torch.device(device)
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("precision 'fp16' needs a CUDA device (its GradScaler is CUDA-only here); "
                         "use 'bf16' on the CPU")
    if (precision == "bf16" and device.type == "cuda" and torch.cuda.is_available()
            and not torch.cuda.is_bf16_supported()):
        raise ValueError("this GPU has no bf16 support (it needs an Ampere or newer card): "
                         "use 'fp16', which brings its GradScaler")
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


# ---------------------------------------------------------------------------- the formats


def format_table():
    """One row per precision: bits, range and resolution, from `torch.finfo`."""
    rows = []
    for name, dtype in DTYPES.items():
        info = torch.finfo(dtype)
        mantissa = -round(torch.log2(torch.tensor(info.eps, dtype=torch.float64)).item())
        rows.append({"precision": name, "bits": info.bits,
                     "exponent bits": info.bits - 1 - mantissa, "mantissa bits": mantissa,
                     "max": info.max, "smallest normal": info.tiny,
                     "smallest subnormal": info.tiny * info.eps, "eps": info.eps,
                     "decimal digits": info.resolution})
    return pd.DataFrame(rows).set_index("precision")


def underflow_fraction(values: torch.Tensor, dtype: torch.dtype = torch.float16) -> float:
    """The share of the non-zero `values` that become exactly 0 when cast to `dtype`."""
    nonzero = values[values != 0]
    if nonzero.numel() == 0:
        return 0.0
    return float((nonzero.to(dtype) == 0).float().mean())


def scale_roundtrip(values: torch.Tensor, scale: float, dtype: torch.dtype = torch.float16):
    """Loss scaling by hand: multiply by `scale`, store in `dtype`, divide by `scale` in fp32.

    This is what a GradScaler does to every gradient: values too small for fp16 survive
    if `scale` lifts them into its range; values that `scale` pushes past fp16's maximum
    become inf (the GradScaler then skips the step and lowers the scale).
    """
    return (values.float() * scale).to(dtype).float() / scale


# ---------------------------------------------------------------------------- measuring


def output_dtypes(model: nn.Module, *inputs, device="cpu", precision: str = "fp32") -> Counter:
    """Run `model(*inputs)` under `autocast(device, precision)` and count, per module type,
    the dtype of its output: e.g. {("Linear", torch.bfloat16): 9, ("LayerNorm", torch.float32): 5}."""
    seen: Counter = Counter()

    def hook(module, _inputs, output):
        if isinstance(output, torch.Tensor):
            seen[(type(module).__name__, output.dtype)] += 1

    handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
    try:
        with torch.no_grad(), autocast(device, precision):
            model(*inputs)
    finally:
        for h in handles:
            h.remove()
    return seen


def saved_activation_bytes(fn) -> int:
    """Bytes of the tensors autograd saves for the backward pass while `fn()` runs.

    This is the activation memory of training, measured the same way on any device
    (parameters themselves are counted once per use, as autograd sees them).
    """
    total = 0
    seen: set = set()

    def pack(t: torch.Tensor):
        nonlocal total
        key = (t.data_ptr(), t.dtype, tuple(t.shape), t.stride())
        if key not in seen and not isinstance(t, nn.Parameter):
            seen.add(key)
            total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return total


__all__ = ["PRECISIONS", "DTYPES", "check_precision", "autocast", "grad_scaler", "format_table",
           "underflow_fraction", "scale_roundtrip", "output_dtypes", "saved_activation_bytes"]
