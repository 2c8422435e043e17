"""Checkers for chapter 09 (int8 quantization)."""

from __future__ import annotations

import torch

from . import checker


def _weights():
    g = torch.Generator().manual_seed(0)
    rows = torch.logspace(-2, 0.5, 12)[:, None]
    return [torch.randn(12, 20, generator=g) * rows, torch.randn(64, generator=g) * 0.05,
            torch.rand(8, 8, generator=g) * 4 - 1]


@checker("Exercise 09.1 (symmetric per-tensor int8)")
def check_quantize_per_tensor(quantize_per_tensor) -> None:
    """`quantize_per_tensor(w) -> (q, scale)`: int8 q in -127..127, w ≈ q * scale."""
    for w in _weights():
        q, scale = quantize_per_tensor(w.clone())
        assert isinstance(q, torch.Tensor) and q.dtype == torch.int8, (
            f"q must be an int8 tensor, got {getattr(q, 'dtype', type(q).__name__)}")
        assert q.shape == w.shape, f"q must have the shape of w {tuple(w.shape)}"
        scale = torch.as_tensor(scale, dtype=torch.float32)
        assert scale.numel() == 1, "per tensor means one scale for the whole tensor"
        expected = w.abs().max() / 127
        assert torch.isclose(scale.flatten()[0], expected, rtol=1e-4), (
            f"scale should be max|w| / 127 = {float(expected):.6g}, got {float(scale):.6g}")
        err = (w - q.float() * scale).abs().max()
        assert err <= scale / 2 * (1 + 1e-4), (
            f"the round-trip error {float(err):.3g} exceeds half a step ({float(scale) / 2:.3g}): "
            f"round (torch.round) rather than truncate")


@checker("Exercise 09.2 (asymmetric int8 with a zero point)")
def check_quantize_asymmetric(quantize_asymmetric) -> None:
    """`quantize_asymmetric(w) -> (q, scale, zero_point)`: uint8 q, w ≈ (q - zero_point) * scale."""
    for w in _weights() + [torch.relu(torch.randn(100))]:
        q, scale, zp = quantize_asymmetric(w.clone())
        assert isinstance(q, torch.Tensor) and q.dtype == torch.uint8, (
            f"q must be a uint8 tensor (codes 0..255), got {getattr(q, 'dtype', type(q).__name__)}")
        scale = float(scale)
        zp = int(zp)
        lo, hi = min(float(w.min()), 0.0), max(float(w.max()), 0.0)
        assert abs(scale - (hi - lo) / 255) <= 1e-4 * scale, (
            f"scale should be (max - min) / 255 over a range that includes 0: "
            f"{(hi - lo) / 255:.6g}, got {scale:.6g}")
        assert 0 <= zp <= 255, f"the zero point must be a uint8 code, got {zp}"
        err = (w - (q.float() - zp) * scale).abs().max()
        assert err <= scale / 2 * (1 + 1e-3), (
            f"the round-trip error {float(err):.3g} exceeds half a step ({scale / 2:.3g})")


@checker("Exercise 09.3 (symmetric per-channel int8)")
def check_quantize_per_channel(quantize_per_channel) -> None:
    """`quantize_per_channel(w) -> (q, scale)` for a (out, in) weight: one scale per row."""
    for w in _weights():
        if w.dim() != 2:
            continue
        q, scale = quantize_per_channel(w.clone())
        assert isinstance(q, torch.Tensor) and q.dtype == torch.int8, "q must be an int8 tensor"
        scale = torch.as_tensor(scale, dtype=torch.float32).reshape(-1)
        assert scale.numel() == w.size(0), (
            f"one scale per output channel (row): expected {w.size(0)} scales, got {scale.numel()} "
            f"(reduce over dim=1, the input features)")
        expected = w.abs().amax(dim=1) / 127
        assert torch.allclose(scale, expected, rtol=1e-4), "each row's scale is max|row| / 127"
        err = (w - q.float() * scale[:, None]).abs()
        assert (err <= scale[:, None] / 2 * (1 + 1e-4)).all(), "round-trip error above half a step"
