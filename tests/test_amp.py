"""course_utils.amp: precision checks, autocast dtypes, when the GradScaler is on, the
loss-scaling round trip and the measuring helpers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from course_utils import amp


def test_precisions_and_dtypes():
    assert amp.PRECISIONS == ("fp32", "bf16", "fp16")
    assert amp.DTYPES["bf16"] is torch.bfloat16 and amp.DTYPES["fp16"] is torch.float16


@pytest.mark.parametrize("bad", ["fp8", "float16", "", "FP32"])
def test_unknown_precision_is_refused(bad):
    with pytest.raises(ValueError, match="precision must be one of"):
        amp.check_precision(bad, "cpu")


def test_fp16_needs_cuda():
    with pytest.raises(ValueError, match="needs a CUDA device.*bf16"):
        amp.check_precision("fp16", "cpu")
    assert amp.check_precision("bf16", "cpu") == "bf16"
    assert amp.check_precision("fp32", "cpu") == "fp32"


def test_autocast_on_cpu_bf16_runs_linear_in_bf16_and_keeps_weights_fp32():
    layer, ln = nn.Linear(8, 4), nn.LayerNorm(8)
    x = torch.randn(2, 8)
    with amp.autocast("cpu", "bf16"):
        y = layer(x)
        z = ln(x)
    assert y.dtype == torch.bfloat16  # matmuls are on autocast's lower-precision list
    assert z.dtype == torch.float32   # LayerNorm is not: an fp32 input stays fp32
    assert layer.weight.dtype == torch.float32
    with amp.autocast("cpu", "fp32"):
        assert layer(x).dtype == torch.float32
    with pytest.raises(ValueError):
        amp.autocast("cpu", "fp16")


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_scaler_is_disabled_without_fp16(precision):
    scaler = amp.grad_scaler("cpu", precision)
    assert not scaler.is_enabled()
    loss = torch.tensor(2.0)
    assert scaler.scale(loss) is loss  # a disabled scaler passes the loss through


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fp16 training needs CUDA")
def test_scaler_is_enabled_for_fp16_on_cuda():
    assert amp.grad_scaler("cuda", "fp16").is_enabled()
    with amp.autocast("cuda", "fp16"):
        y = nn.Linear(8, 4).cuda()(torch.randn(2, 8, device="cuda"))
    assert y.dtype == torch.float16


def test_underflow_and_scaling_round_trip():
    tiny = torch.tensor([1e-8, 2e-8, 1e-6, 0.0, 0.5])
    assert amp.underflow_fraction(tiny, torch.float16) == pytest.approx(0.5)  # 1e-8, 2e-8 of 4
    assert amp.underflow_fraction(tiny, torch.bfloat16) == 0.0
    back = amp.scale_roundtrip(tiny, 2.0**16)
    assert (back[:3] != 0).all()
    assert torch.allclose(back, tiny, rtol=1e-3, atol=0)
    assert torch.isinf(amp.scale_roundtrip(torch.tensor([1.0]), 2.0**17)).all()  # overflow


def test_format_table_matches_finfo():
    table = amp.format_table()
    assert list(table.index) == ["fp32", "bf16", "fp16"]
    assert table.loc["fp16", "max"] == 65504.0
    assert table.loc["bf16", "mantissa bits"] == 7 and table.loc["fp16", "exponent bits"] == 5
    assert table.loc["fp16", "smallest subnormal"] == pytest.approx(2.0**-24)


def test_output_dtypes_and_saved_bytes():
    model = nn.Sequential(nn.LayerNorm(8), nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 2))
    x = torch.randn(4, 8)
    seen = amp.output_dtypes(model, x, device="cpu", precision="bf16")
    assert seen[("Linear", torch.bfloat16)] == 2 and seen[("LayerNorm", torch.float32)] == 1
    assert amp.output_dtypes(model, x, precision="fp32")[("Linear", torch.float32)] == 2

    def step(precision):
        def run():
            with amp.autocast("cpu", precision):
                model(x).float().sum()
        return run

    full, half = amp.saved_activation_bytes(step("fp32")), amp.saved_activation_bytes(step("bf16"))
    assert full > 0 and half < full
