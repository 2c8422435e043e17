"""Int8 quantization from scratch, and the measurements that judge it (chapter 09).

Symmetric and asymmetric (affine) int8, per tensor or per channel; a weight-only
`Int8Linear`/`Int8Embedding` and `quantize_model` to swap them into a GPT (keeping a
tied embedding/head tied); PyTorch's dynamic int8; size on disk and agreement of the logits.
Speed is measured side by side by `course_utils.timing.compare` and `linear_timings`.

Command line: `python -m course_utils.quantize --help` (course_utils/cli/quantize.py).
"""

from __future__ import annotations

import copy
import os
import tempfile
import warnings
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn
from torch.ao.quantization import (
    default_dynamic_qconfig,
    per_channel_dynamic_qconfig,
    quantize_dynamic,
)

QMAX = 127  # symmetric int8 uses -127..127 (dropping -128 keeps the grid symmetric around 0)
UMAX = 255  # asymmetric uses uint8 0..255 and a zero point
# How an Int8Linear multiplies (`quantize_model(..., kernel=...)`); each chapter-09 measured:
# - "float": convert the int8 codes to float at every call, then the same float product as fp32
#   (any device and dtype; saves memory, never time);
# - "int8pack": PyTorch's CPU kernel for float inputs times int8 weights with one scale per
#   output row (`torch._weight_int8pack_mm`, which gpt-fast's weight-only int8 calls on a
#   CPU): no float copy, but on the CPUs this book was measured on it was slower than the float
#   copy, at one token per call and far more so over whole windows;
# - "int_mm": quantize each input row to int8 too, with its own scale, and multiply int8 by int8
#   into int32 with `torch._int_mm` (oneDNN's integer kernels on x86), then rescale: the idea
#   of PyTorch's dynamic int8, in plain tensor operations, so `torch.compile` can fuse the
#   rounding of the inputs into the kernels around it and keep a whole decode step in one
#   graph (torch.ao's packed modules stop a compiled graph).
# Private ops (leading underscore): a kernel this PyTorch lacks falls back to "float".
KERNELS = ("float", "int8pack", "int_mm")
INT8_MM = hasattr(torch, "_weight_int8pack_mm")
INT_MM = hasattr(torch, "_int_mm")


def _kernel_available(kernel: str) -> bool:
    return {"float": True, "int8pack": INT8_MM, "int_mm": INT_MM}[kernel]


def check_kernel(kernel: str) -> str:
    """`kernel`, if it names one of KERNELS; a ValueError listing them otherwise."""
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {', '.join(map(repr, KERNELS))}, got {kernel!r}")
    return kernel


def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 with one scale per row of a (rows, features) float tensor: the dynamic
    quantization of activations (their range is known only at run time). An all-zero row gets a
    tiny scale and zero codes."""
    scale = x.abs().amax(dim=-1, keepdim=True).clamp_min(1e-12) / QMAX
    return (x / scale).round().clamp(-QMAX, QMAX).to(torch.int8), scale


# ---------------------------------------------------------------------------- tensors


def _amax(x: torch.Tensor, axis: int | None, fn) -> torch.Tensor:
    """`fn` (torch.amax/amin) over every dimension except `axis` (all of them if None), kept."""
    if axis is None:
        return fn(x).reshape([1] * x.dim())
    axis = axis % x.dim()
    dims = [d for d in range(x.dim()) if d != axis]
    return fn(x, dim=dims, keepdim=True) if dims else x.clone()


def quantize_symmetric(w: torch.Tensor, axis: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """int8 codes and scale with w ≈ q * scale; scale = max|w| / 127 per tensor or per `axis` slice.

    `axis=0` on a Linear weight (out_features, in_features) gives one scale per output channel.
    """
    w = w.detach().float()
    scale = (_amax(w.abs(), axis, torch.amax) / QMAX).clamp(min=1e-12)
    q = torch.round(w / scale).clamp(-QMAX, QMAX).to(torch.int8)
    return q, scale


def quantize_asymmetric(w: torch.Tensor, axis: int | None = None
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """uint8 codes, scale and zero point with w ≈ (q - zero_point) * scale.

    The grid spans [min(w, 0), max(w, 0)] in 255 steps, so 0 is exactly representable
    (padding and ReLU zeros stay exact) and a one-sided range uses all 256 codes.
    """
    w = w.detach().float()
    lo = _amax(w, axis, torch.amin).clamp(max=0)
    hi = _amax(w, axis, torch.amax).clamp(min=0)
    scale = ((hi - lo) / UMAX).clamp(min=1e-12)
    zero_point = torch.round(-lo / scale).clamp(0, UMAX).to(torch.int32)
    q = (torch.round(w / scale) + zero_point).clamp(0, UMAX).to(torch.uint8)
    return q, scale, zero_point


def dequantize(q: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor | None = None) -> torch.Tensor:
    """Back to float32: (q - zero_point) * scale (zero_point 0 for symmetric codes)."""
    q = q.to(torch.float32)
    if zero_point is not None:
        q = q - zero_point.to(torch.float32)
    return q * scale


def roundtrip(w: torch.Tensor, scheme: str = "symmetric", axis: int | None = None) -> torch.Tensor:
    """`w` quantized and dequantized with `scheme` ('symmetric' or 'asymmetric')."""
    if scheme == "symmetric":
        return dequantize(*quantize_symmetric(w, axis))
    if scheme == "asymmetric":
        return dequantize(*quantize_asymmetric(w, axis))
    raise ValueError(f"scheme must be 'symmetric' or 'asymmetric', got {scheme!r}")


# ---------------------------------------------------------------------------- modules


class Int8Linear(nn.Module):
    """A Linear layer whose weight is stored as int8 codes with one scale per output channel
    (or one for the whole matrix). Weight-only: inputs and arithmetic stay in float.

    y = (x @ q^T) * scale + bias, which equals x @ (q * scale)^T + bias because the scale
    is constant along each output channel (the reason per-channel means per *output* row).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, per_channel: bool = True):
        super().__init__()
        self.in_features, self.out_features, self.per_channel = in_features, out_features, per_channel
        self.register_buffer("weight_int8", torch.zeros(out_features, in_features, dtype=torch.int8))
        self.register_buffer("scale", torch.ones(out_features if per_channel else 1, 1))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        self.kernel = "float"  # how to multiply: one of KERNELS (see there)

    @classmethod
    def from_linear(cls, linear: nn.Linear, per_channel: bool = True) -> Int8Linear:
        layer = cls(linear.in_features, linear.out_features, linear.bias is not None, per_channel)
        q, scale = quantize_symmetric(linear.weight, axis=0 if per_channel else None)
        layer.weight_int8, layer.scale = q, scale.reshape(-1, 1)
        if linear.bias is not None:
            layer.bias = nn.Parameter(linear.bias.detach().float().clone())
        return layer.to(linear.weight.device)

    @classmethod
    def sharing(cls, embedding: Int8Embedding, bias: torch.Tensor | None = None) -> Int8Linear:
        """A head that reads the int8 table of a (tied) embedding: no second copy of the weights."""
        V, d = embedding.weight_int8.shape
        layer = cls(d, V, bias is not None, embedding.per_channel)
        layer.weight_int8, layer.scale = embedding.weight_int8, embedding.scale  # the same tensors
        if bias is not None:
            layer.bias = nn.Parameter(bias.detach().float().clone())
        return layer

    def dequantized_weight(self) -> torch.Tensor:
        return dequantize(self.weight_int8, self.scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        on_cpu = x.dtype == torch.float32 and x.device.type == "cpu"
        if self.kernel == "int_mm" and on_cpu:
            # int8 inputs (one scale per row) times int8 codes, summed exactly in int32 by one
            # kernel, then both scales: y = (xq q^T) * s_x * s_w
            xq, x_scale = quantize_rows(x.reshape(-1, self.in_features))
            y = torch._int_mm(xq, self.weight_int8.t()).to(x.dtype) * (x_scale * self.scale.view(1, -1))
            y = y.view(*x.shape[:-1], self.out_features)
        elif self.kernel == "int8pack" and on_cpu:
            # One kernel multiplies the float inputs by the int8 codes and scales each output
            # row: no float copy of the weight is made at every call.
            scale = self.scale.view(-1).expand(self.out_features).contiguous()  # per tensor too
            y = torch._weight_int8pack_mm(x.reshape(-1, self.in_features).contiguous(),
                                          self.weight_int8, scale)
            y = y.view(*x.shape[:-1], self.out_features)
        else:  # the same product, spelled out: convert the codes to float, multiply, scale
            y = F.linear(x, self.weight_int8.to(x.dtype)) * self.scale.view(-1).to(x.dtype)
        return y if self.bias is None else y + self.bias.to(x.dtype)

    def extra_repr(self) -> str:
        how = {"float": "float copy", "int8pack": "int8 weights", "int_mm": "int8 x int8"}[self.kernel]
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, per_channel={self.per_channel}, kernel={how}")


class Int8Embedding(nn.Module):
    """An embedding table stored as int8 rows, one scale per row (token) or for the whole table."""

    def __init__(self, num_embeddings: int, embedding_dim: int, per_channel: bool = True):
        super().__init__()
        self.per_channel = per_channel
        self.register_buffer("weight_int8", torch.zeros(num_embeddings, embedding_dim, dtype=torch.int8))
        self.register_buffer("scale", torch.ones(num_embeddings if per_channel else 1, 1))

    @classmethod
    def from_embedding(cls, emb: nn.Embedding, per_channel: bool = True) -> Int8Embedding:
        layer = cls(emb.num_embeddings, emb.embedding_dim, per_channel)
        q, scale = quantize_symmetric(emb.weight, axis=0 if per_channel else None)
        layer.weight_int8, layer.scale = q, scale.reshape(-1, 1)
        return layer.to(emb.weight.device)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        scale = self.scale[idx] if self.per_channel else self.scale
        return self.weight_int8[idx].to(scale.dtype) * scale

    def extra_repr(self) -> str:
        V, d = self.weight_int8.shape
        return f"{V}, {d}, per_channel={self.per_channel}"


def _set_module(root: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent_name) if parent_name else root, child, module)


def quantize_model(model: nn.Module, per_channel: bool = True, tie_aware: bool = True,
                   skip: tuple[str, ...] = (), kernel: str = "float") -> nn.Module:
    """A copy of `model` with every nn.Linear (except names in `skip`) swapped for Int8Linear.

    With `tie_aware`, a Linear that shares its weight with an nn.Embedding (GPT's lm_head
    and tok_emb) becomes an Int8Linear reading the int8 table of an Int8Embedding that
    replaces the embedding: tied before, tied after, stored once. Without it the head gets
    its own int8 copy and the embedding stays float32 (the weights are no longer shared).
    `kernel` says how the layers multiply (KERNELS): "float" (the default) converts the codes
    to float at every call; "int8pack" multiplies float inputs by the int8 codes in one kernel
    (the same result); "int_mm" rounds the inputs to int8 too and multiplies integers (a
    slightly different result: 09a measures the loss). A kernel this PyTorch lacks
    falls back to "float". Speed depends on the CPU (09a and bench/generation.py).
    """
    check_kernel(kernel)
    model = copy.deepcopy(model)  # deepcopy keeps tied parameters tied
    embeddings = {id(m.weight): name for name, m in model.named_modules() if isinstance(m, nn.Embedding)}
    linears = [(name, m) for name, m in model.named_modules()
               if isinstance(m, nn.Linear) and name not in skip]
    for name, linear in linears:
        tied_to = embeddings.get(id(linear.weight))
        if tie_aware and tied_to is not None:
            q_emb = Int8Embedding.from_embedding(model.get_submodule(tied_to), per_channel)
            _set_module(model, tied_to, q_emb)
            _set_module(model, name, Int8Linear.sharing(q_emb, linear.bias))
        else:
            _set_module(model, name, Int8Linear.from_linear(linear, per_channel))
    for m in model.modules():
        if isinstance(m, Int8Linear):
            m.kernel = kernel if _kernel_available(kernel) else "float"
    return model


def dynamic_int8(model: nn.Module, per_channel: bool = False, quiet: bool = True,
                 only: Iterable[str] | None = None) -> nn.Module:
    """PyTorch's dynamic int8 (CPU): int8 weights, activations quantized on the fly per batch.

    `only`: the names of the `nn.Linear` modules to quantize (e.g. `["lm_head"]`, the ones
    where the int8 kernel beats fp32: `linear_timings`); default every `nn.Linear`.
    `torch.ao.quantization.quantize_dynamic` still works in torch 2.x but warns that it is
    deprecated in favour of the separate `torchao` package; `quiet` hides those warnings.
    """
    qconfig = per_channel_dynamic_qconfig if per_channel else default_dynamic_qconfig
    spec: dict = {nn.Linear: qconfig}
    if only is not None:
        linears = {name for name, m in model.named_modules() if isinstance(m, nn.Linear)}
        only = list(only)
        unknown = [name for name in only if name not in linears]
        if unknown or not only:
            raise ValueError(f"no nn.Linear named {unknown or only}: choose among "
                             f"{', '.join(sorted(linears))}")
        spec = {name: qconfig for name in only}
    with warnings.catch_warnings():
        if quiet:
            warnings.filterwarnings("ignore", message=r".*(deprecated|torchao).*")
        return quantize_dynamic(copy.deepcopy(model).cpu().eval(), spec, dtype=torch.qint8)


# ---------------------------------------------------------------------------- measurements


def state_dict_bytes(model: nn.Module) -> int:
    """The size on disk of `torch.save(model.state_dict())` (tensors sharing storage count once)."""
    fd, path = tempfile.mkstemp(suffix=".pt")
    os.close(fd)
    try:
        torch.save(model.state_dict(), path)
        return os.path.getsize(path)
    finally:
        os.unlink(path)


def count_modules(model: nn.Module) -> dict[str, int]:
    """How many modules of each type the model has (to see what a swap replaced)."""
    counts: dict[str, int] = {}
    for m in model.modules():
        if not list(m.children()):
            counts[type(m).__name__] = counts.get(type(m).__name__, 0) + 1
    return counts


@torch.no_grad()
def logits_agreement(reference: nn.Module, other: nn.Module, x: torch.Tensor) -> dict[str, float]:
    """How close `other`'s logits are to `reference`'s on the batch `x`: the largest absolute
    difference, the mean KL(reference || other) in nats, and the share of equal argmaxes."""
    a = reference(x)[0].float()
    b = other(x)[0].float()
    kl = F.kl_div(b.log_softmax(-1), a.log_softmax(-1), log_target=True, reduction="none").sum(-1)
    return {"max_abs_diff": float((a - b).abs().max()), "kl": float(kl.mean()),
            "top1_agree": float((a.argmax(-1) == b.argmax(-1)).float().mean())}


if __name__ == "__main__":  # `python -m course_utils.quantize` runs the command line, kept apart
    import runpy

    runpy.run_module("course_utils.cli.quantize", run_name="__main__")
