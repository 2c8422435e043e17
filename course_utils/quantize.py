"""Int8 quantization from scratch, and the measurements that judge it (chapter 09).

Symmetric and asymmetric (affine) int8, per tensor or per channel; a weight-only
`Int8Linear`/`Int8Embedding` and `quantize_model` to swap them into a GPT (keeping a
tied embedding/head tied); PyTorch's dynamic int8; size on disk, speed and loss.

Command line: `python -m course_utils.quantize --help`.
"""

from __future__ import annotations

import argparse
import copy
import os
import tempfile
import warnings
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

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
    slightly different result: chapter 09 measures the loss). A kernel this PyTorch lacks
    falls back to "float". Speed depends on the CPU (chapter 09 and bench/generation.py).
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
    from torch.ao.quantization import (
        default_dynamic_qconfig,
        per_channel_dynamic_qconfig,
        quantize_dynamic,
    )

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


def linear_timings(model: nn.Module, rows: int = 1, repeats: int = 200, rounds: int = 5,
                   threads: int | None = 1) -> list[dict]:
    """Microseconds per call of every distinct `nn.Linear` shape of `model` on `rows` input rows,
    fp32 against PyTorch's dynamic int8 of the same layer (best of `rounds` interleaved rounds
    of `repeats` calls). Returns one dict per shape: `shape` (in, out), `names` (the modules
    with that shape), `fp32_us`, `int8_us`. Where int8 is faster, quantizing pays."""
    import time

    from .measure import num_threads

    shapes: dict[tuple[int, int], tuple[nn.Linear, list[str]]] = {}   # shape -> (a layer, names)
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear):
            shapes.setdefault((m.in_features, m.out_features), (m, []))[1].append(name)
    out = []
    with num_threads(threads), torch.inference_mode():
        for key, (linear, names) in shapes.items():
            fp32 = copy.deepcopy(linear).cpu().eval()
            int8 = dynamic_int8(nn.Sequential(fp32))
            x = torch.randn(rows, key[0])
            best = {"fp32_us": float("inf"), "int8_us": float("inf")}
            for _ in range(rounds):
                for label, layer in (("fp32_us", fp32), ("int8_us", int8)):
                    layer(x)
                    t0 = time.perf_counter()
                    for _ in range(repeats):
                        layer(x)
                    best[label] = min(best[label], (time.perf_counter() - t0) / repeats * 1e6)
            out.append({"shape": key, "names": names, **best})
    return out


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


@torch.no_grad()
def forward_ms(model: nn.Module, x: torch.Tensor, repeats: int = 3, threads: int | None = None,
               warmup: bool = True) -> float:
    """Milliseconds of one forward pass over the batch `x` (best of `repeats`, after a warm-up
    pass unless `warmup` is False), on `threads` CPU threads (None: the current setting)."""
    import time

    from .measure import num_threads

    with num_threads(threads):
        if warmup:
            model(x)
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            model(x)
            best = min(best, time.perf_counter() - t0)
    return best * 1000


def measure(model: nn.Module, *, val_source=None, eval_iters: int = 10, prompt=None,
            new_tokens: int = 64, batch=None, repeats: int = 3,
            threads: int | None = None) -> dict[str, float]:
    """Size on disk (MB); milliseconds per generated token (greedy with the KV cache, batch 1,
    from `prompt`); milliseconds per forward pass over `batch` (whole windows at once, as in
    evaluation or a prompt's prefill); validation loss (`course_utils.measure.evaluate` on
    `val_source`). Timings are the best of `repeats` on `threads` CPU threads."""
    from .measure import evaluate
    from .sampling import tokens_per_second

    device = next(model.parameters()).device
    row = {"size_MB": state_dict_bytes(model) / 1e6}
    if prompt is not None:
        row["ms_per_token"] = 1000 / tokens_per_second(model, prompt, new_tokens, repeats=repeats,
                                                       threads=threads)
    if batch is not None:
        row["ms_per_batch"] = forward_ms(model, batch.to(device), repeats, threads)
    if val_source is not None:
        row["val_loss"] = evaluate(model, val_source, eval_iters, device)
    return row


def compare(models: dict, *, val_source=None, eval_iters: int = 10, prompt=None, new_tokens: int = 64,
            batch=None, rounds: int = 3, threads: int | None = None, progress: bool = False,
            compile: bool = False, skip_loss: Iterable[str] = ()):
    """`measure` for several models, with the timings interleaved: in each of `rounds` rounds
    every model is timed once (the order alternates), and each model's best round is kept,
    so a slow patch of a shared machine hits all of them alike. With `compile`, generation
    uses the compiled decode step (`generate(..., compile=True)`), after one untimed
    generation per model that compiles it. `skip_loss`: names of models whose validation loss
    is left out (NaN), for one slow to evaluate whose loss is checked another way. Returns a
    DataFrame."""
    import pandas as pd

    from .measure import evaluate
    from .sampling import tokens_per_second

    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ValueError(f"rounds must be a whole number >= 1, got {rounds!r}")
    names = list(models)
    skip_loss = set(skip_loss)
    if skip_loss - set(names):
        raise ValueError(f"skip_loss names no model: {sorted(skip_loss - set(names))}; the models are {names}")
    times: dict[str, dict[str, list[float]]] = {n: {"ms_per_token": [], "ms_per_batch": []} for n in names}
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=rounds * len(names) + (len(names) if val_source is not None else 0),
                   desc="measuring", unit="run")
    if compile and prompt is not None:
        from .sampling import generate

        for m in models.values():   # compiles the step and the slide's prefill: not timed
            generate(m, prompt, new_tokens, temperature=0, compile=True)
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            m = models[name]
            if prompt is not None:
                rate = tokens_per_second(m, prompt, new_tokens, repeats=1, threads=threads, compile=compile)
                times[name]["ms_per_token"].append(1000 / rate)
            if batch is not None:
                device = next(m.parameters()).device
                # the first round warms each model up; later rounds time it warm, without
                # another untimed pass (a slow model's warm-up would cost as much as its timing)
                times[name]["ms_per_batch"].append(forward_ms(m, batch.to(device), 1, threads, warmup=r == 0))
            if progress:
                bar.update(1)
    rows = {}
    for name in names:
        m = models[name]
        row = {"size_MB": state_dict_bytes(m) / 1e6}
        row.update({k: min(v) for k, v in times[name].items() if v})
        if val_source is not None:
            row["val_loss"] = (float("nan") if name in skip_loss
                               else evaluate(m, val_source, eval_iters, next(m.parameters()).device))
            if progress:
                bar.update(1)
        rows[name] = row
    if progress:
        bar.close()
    return pd.DataFrame(rows).T


# ---------------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    from . import artifacts
    from .config import get_profile
    from .datasets import WindowBatches

    parser = argparse.ArgumentParser(
        prog="python -m course_utils.quantize",
        description="Quantize the pretrained model of a profile (from-scratch int8 and PyTorch's "
                    "dynamic int8) and print size on disk, ms per generated token and val loss.")
    parser.add_argument("--profile", choices=["ci", "cpu", "gpu"],
                        help="model size (default: $COURSE_PROFILE, else gpu with CUDA, else cpu)")
    parser.add_argument("--new-tokens", type=int, default=64, help="tokens generated per timing run")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for the timing (0: torch's default)")
    args = parser.parse_args(argv)
    profile = get_profile(args.profile)
    model, vocab, _ = artifacts.pretrained_lm(profile, device="cpu")
    val = WindowBatches(artifacts.news_tokens("val"), profile.batch_size, profile.block_size, seed=1)
    prompt = torch.tensor([vocab.encode("中国")])
    models = {"fp32": model, "int8 from scratch (per channel)": quantize_model(model),
              "int8 dynamic (torch.ao)": dynamic_int8(model)}
    table = compare(models, val_source=val, eval_iters=profile.eval_iters, prompt=prompt,
                    new_tokens=args.new_tokens, batch=val.get(0)[0], threads=args.threads or None)
    print(table.round(3).to_string())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
