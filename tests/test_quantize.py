"""Int8 quantization: round-trip bounds, per-channel vs per-tensor, Int8Linear, swapped models."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_gpt
from torch import nn

from course_utils import quantize
from course_utils.decoding import explain_decode_step
from course_utils.model import GPT

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def gpt() -> GPT:
    return tiny_gpt(vocab_size=60, block_size=16)


@pytest.mark.parametrize("axis", [None, 0, 1])
def test_symmetric_roundtrip_error_is_at_most_half_a_step(axis):
    torch.manual_seed(0)
    w = torch.randn(24, 40) * torch.logspace(-2, 1, 24)[:, None]
    q, scale = quantize.quantize_symmetric(w, axis=axis)
    assert q.dtype == torch.int8 and int(q.abs().max()) <= 127
    expected_shape = {None: (1, 1), 0: (24, 1), 1: (1, 40)}[axis]
    assert scale.shape == expected_shape
    err = (w - quantize.dequantize(q, scale)).abs()
    assert (err <= scale / 2 + 1e-6 * scale).all()
    assert int(q.abs().max()) == 127  # the largest weight uses the end of the grid


@pytest.mark.parametrize("axis", [None, 0])
def test_asymmetric_roundtrip_error_is_at_most_half_a_step(axis):
    torch.manual_seed(1)
    w = torch.rand(16, 30) * 3 + 0.5  # one-sided, like activations after a ReLU
    q, scale, zp = quantize.quantize_asymmetric(w, axis=axis)
    assert q.dtype == torch.uint8
    err = (w - quantize.dequantize(q, scale, zp)).abs()
    assert (err <= scale / 2 + 1e-6 * scale).all()
    zero = quantize.dequantize(zp.to(torch.uint8), scale, zp)
    assert torch.equal(zero, torch.zeros_like(zero))  # zero is exactly representable


def test_asymmetric_beats_symmetric_on_one_sided_data():
    torch.manual_seed(2)
    x = torch.relu(torch.randn(1000))  # half zeros, half positive
    sym = (x - quantize.roundtrip(x, "symmetric")).pow(2).mean()
    asym = (x - quantize.roundtrip(x, "asymmetric")).pow(2).mean()
    assert asym < sym / 2


def test_per_channel_beats_per_tensor_on_rows_with_different_ranges():
    torch.manual_seed(3)
    w = torch.randn(32, 64) * torch.logspace(-3, 0, 32)[:, None]  # row ranges span 1000x
    per_tensor = (w - quantize.roundtrip(w, axis=None)).pow(2).mean(dim=1)
    per_channel = (w - quantize.roundtrip(w, axis=0)).pow(2).mean(dim=1)
    assert per_channel.mean() < per_tensor.mean() / 4
    assert (per_channel <= per_tensor + 1e-12).all()


def test_bad_scheme_raises():
    with pytest.raises(ValueError, match="scheme"):
        quantize.roundtrip(torch.ones(3), "int4")


@pytest.mark.parametrize("per_channel", [True, False])
@pytest.mark.parametrize("bias", [True, False])
def test_int8_linear_is_close_to_linear(per_channel, bias):
    torch.manual_seed(4)
    linear = nn.Linear(48, 20, bias=bias)
    q = quantize.Int8Linear.from_linear(linear, per_channel=per_channel)
    x = torch.randn(3, 7, 48)
    with torch.no_grad():
        ref, out = linear(x), q(x)
    assert out.shape == ref.shape
    rel = (out - ref).norm() / ref.norm()
    assert rel < 0.02
    assert q.weight_int8.dtype == torch.int8
    assert torch.allclose(q.dequantized_weight(), linear.weight, atol=float(q.scale.max()) / 2 + 1e-6)
    # the shortcut y = (x q^T) * scale equals using the dequantized weight
    expected = nn.functional.linear(x, q.dequantized_weight(), q.bias)
    assert torch.allclose(out, expected, atol=1e-5)


@pytest.mark.parametrize("per_channel", [True, False])
def test_int8_kernel_and_spelled_out_product_agree(per_channel):
    torch.manual_seed(5)
    q = quantize.Int8Linear.from_linear(nn.Linear(64, 40), per_channel=per_channel)
    x = torch.randn(2, 5, 64)[:, ::2]  # not contiguous: the kernel path copies it
    with torch.no_grad():
        q.kernel = "int8pack"
        fast = q(x)
        q.kernel = "float"
        slow = q(x)
    assert fast.shape == slow.shape == (2, 3, 40)
    assert torch.allclose(fast, slow, atol=1e-4, rtol=1e-5)
    assert "kernel=float copy" in repr(q)
    assert quantize.Int8Linear(4, 2).kernel == "float"          # asked for, never by default


def test_quantize_rows_one_scale_per_row():
    x = torch.tensor([[0.5, -1.0, 0.25], [0.0, 0.0, 0.0], [3.0, 1.5, -3.0]])
    q, scale = quantize.quantize_rows(x)
    assert q.dtype == torch.int8 and scale.shape == (3, 1)
    assert q[0].tolist() == [64, -127, 32] and q[1].tolist() == [0, 0, 0]   # round(0.5 * 127) = 64
    assert q[2].abs().max() == 127                                         # each row uses the range
    assert torch.allclose(q * scale, x, atol=float(scale.max()) / 2)


@pytest.mark.skipif(not quantize.INT_MM, reason="torch._int_mm missing in this PyTorch")
@pytest.mark.parametrize("per_channel", [True, False])
def test_int_mm_kernel_multiplies_the_rounded_inputs_exactly(per_channel):
    torch.manual_seed(6)
    q = quantize.Int8Linear.from_linear(nn.Linear(64, 40), per_channel=per_channel)
    q.kernel = "int_mm"
    x = torch.randn(2, 5, 64)[:, ::2]
    with torch.no_grad():
        y = q(x)
        # the same arithmetic spelled out in float: round x per row, multiply, rescale
        xq, xs = quantize.quantize_rows(x.reshape(-1, 64))
        expected = (xq.double() @ q.weight_int8.double().t() * xs.double() * q.scale.view(1, -1).double()
                    + q.bias.double()).view(2, 3, 40)
        exact = x @ q.dequantized_weight().t() + q.bias
    assert y.shape == (2, 3, 40) and y.dtype == torch.float32
    assert torch.allclose(y.double(), expected, atol=1e-5)
    assert float((y - exact).norm() / exact.norm()) < 0.02           # rounding the inputs costs little
    assert "kernel=int8 x int8" in repr(q)


def test_quantize_model_kernel_switch(gpt):
    spelled = quantize.quantize_model(gpt)                      # the default: the float copy
    fast = quantize.quantize_model(gpt, kernel="int8pack")
    layers = [m for m in spelled.modules() if isinstance(m, quantize.Int8Linear)]
    assert layers and all(m.kernel == "float" for m in layers)
    assert all(m.kernel == ("int8pack" if quantize.INT8_MM else "float")
               for m in fast.modules() if isinstance(m, quantize.Int8Linear))
    x = torch.randint(0, 60, (2, 16))
    with torch.no_grad():
        assert torch.allclose(spelled(x)[0], fast(x)[0], atol=1e-4)
        if quantize.INT_MM:   # integer inputs too: close, not equal
            agree = quantize.logits_agreement(spelled, quantize.quantize_model(gpt, kernel="int_mm"), x)
            assert agree["top1_agree"] > 0.9 and agree["kl"] < 1e-2
    with pytest.raises(ValueError, match="kernel must be one of 'float', 'int8pack', 'int_mm'"):
        quantize.quantize_model(gpt, kernel=True)


@pytest.mark.parametrize("kernel", ["float", "int_mm"])
def test_compiled_int8_decode_step_has_no_graph_break(gpt, kernel):
    explanation = explain_decode_step(quantize.quantize_model(gpt, kernel=kernel).eval())
    assert explanation.graph_break_count == 0 and explanation.graph_count == 1


def test_swapped_model_logits_are_close_to_fp32(gpt):
    qmodel = quantize.quantize_model(gpt)
    counts = quantize.count_modules(qmodel)
    assert counts.get("Linear", 0) == 0
    assert counts["Int8Linear"] == 2 * 4 + 1  # qkv, proj, fc, proj per block, and the head
    assert counts["Int8Embedding"] == 1  # the tied token embedding
    x = torch.randint(0, 60, (4, 16))
    agree = quantize.logits_agreement(gpt, qmodel, x)
    assert agree["top1_agree"] > 0.9 and agree["kl"] < 1e-2
    assert isinstance(gpt.lm_head, nn.Linear)  # the original is untouched


def test_tied_head_stays_tied_and_is_stored_once(gpt):
    tied = quantize.quantize_model(gpt, tie_aware=True)
    assert tied.lm_head.weight_int8 is tied.tok_emb.weight_int8
    naive = quantize.quantize_model(gpt, tie_aware=False)
    assert isinstance(naive.tok_emb, nn.Embedding)
    fp32 = quantize.state_dict_bytes(gpt)
    assert quantize.state_dict_bytes(tied) < quantize.state_dict_bytes(naive) < fp32
    assert quantize.state_dict_bytes(tied) < 0.5 * fp32  # biases, LayerNorms, file overhead stay


def test_quantized_model_generates(gpt):
    from course_utils.sampling import generate

    qmodel = quantize.quantize_model(gpt)
    out = generate(qmodel, torch.tensor([[1, 2, 3]]), 20, temperature=0)
    assert out.shape == (1, 23)


def test_dynamic_quantization_runs(gpt):
    qmodel = quantize.dynamic_int8(gpt)
    dynamic_linear = torch.ao.nn.quantized.dynamic.Linear
    assert sum(isinstance(m, dynamic_linear) for m in qmodel.modules()) == 2 * 4 + 1
    assert not any(type(m) is nn.Linear for m in qmodel.modules())
    x = torch.randint(0, 60, (2, 16))
    agree = quantize.logits_agreement(gpt, qmodel, x)
    assert agree["top1_agree"] > 0.8
    assert quantize.state_dict_bytes(qmodel) < quantize.state_dict_bytes(gpt)


def test_dynamic_quantization_of_chosen_layers_only(gpt):
    dynamic_linear = torch.ao.nn.quantized.dynamic.Linear
    qmodel = quantize.dynamic_int8(gpt, only=["lm_head", "blocks.0.mlp.fc"])
    quantized = {name for name, m in qmodel.named_modules() if isinstance(m, dynamic_linear)}
    assert quantized == {"lm_head", "blocks.0.mlp.fc"}
    assert type(qmodel.blocks[0].attn.qkv) is nn.Linear and type(gpt.lm_head) is nn.Linear  # a copy
    x = torch.randint(0, 60, (2, 16))
    assert quantize.logits_agreement(gpt, qmodel, x)["top1_agree"] > 0.8
    for bad in (["lm_head", "blocks.9.mlp.fc"], ["tok_emb"], []):
        with pytest.raises(ValueError, match="no nn.Linear named"):
            quantize.dynamic_int8(gpt, only=bad)
