"""Checkers for chapter 13 (the model leaves PyTorch: Hugging Face and ONNX)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from ..export import onnx_session, to_onnx
from ..model import GPT, GPTConfig
from ..sampling import generate
from . import checker


def _tiny_gpt(block_size: int = 16, vocab_size: int = 30, seed: int = 0):
    torch.manual_seed(seed)
    model = GPT(GPTConfig(vocab_size=vocab_size, block_size=block_size, d_model=16, n_heads=2,
                          n_layers=1, d_ff=32, dropout=0.0))
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.mul_(8.0)
    return model.eval()


@checker("Exercise 13.1 (Conv1D from nn.Linear)")
def check_linear_to_conv1d(linear_to_conv1d) -> None:
    # heavy: seconds to import, only for this exercise
    from transformers.pytorch_utils import Conv1D

    torch.manual_seed(0)
    linear = torch.nn.Linear(6, 10)
    conv = linear_to_conv1d(linear)
    assert isinstance(conv, Conv1D), f"return a transformers Conv1D, got {type(conv).__name__}"
    assert tuple(conv.weight.shape) == (6, 10), (
        f"Conv1D stores its weight as (in_features, out_features) = (6, 10); yours is "
        f"{tuple(conv.weight.shape)}")
    x = torch.randn(3, 4, 6)
    with torch.no_grad():
        diff = float((conv(x) - linear(x)).abs().max())
    assert diff < 1e-6, f"the Conv1D computes something else (largest difference {diff:.2e})"


@checker("Exercise 13.2 (GPT-2's parameter count)")
def check_gpt2_parameters(gpt2_parameters) -> None:
    # heavy: seconds to import, only for this exercise
    from transformers import GPT2Config, GPT2LMHeadModel

    for kw in (dict(n_embd=768, n_layer=12, n_head=12, n_positions=1024, vocab_size=50257),
               dict(n_embd=64, n_layer=3, n_head=4, n_positions=128, vocab_size=500)):
        got = gpt2_parameters(kw["vocab_size"], kw["n_positions"], kw["n_embd"], kw["n_layer"])
        if kw["n_embd"] == 768:
            want = 124_439_808                              # GPT-2 small, tied head counted once
        else:
            with torch.device("meta"):
                config = GPT2Config(**kw, bos_token_id=0, eos_token_id=0)
                want = sum(p.numel() for p in GPT2LMHeadModel(config).parameters())
        assert got == want, f"{kw}: got {got:,}, expected {want:,} (d_ff = 4 d_model; the head is tied)"


@checker("Exercise 13.3 (greedy decoding with ONNX Runtime)")
def check_onnx_greedy(onnx_greedy) -> None:
    model = _tiny_gpt(block_size=8, seed=2)                   # its greedy tokens depend on the context
    with tempfile.TemporaryDirectory() as tmp:
        session = onnx_session(to_onnx(model, Path(tmp) / "tiny.onnx"), threads=1)
        for prompt, n in (([4, 7, 1], 5), ([5, 9], 6)):       # the whole text fits in block_size
            want = generate(model, torch.tensor([prompt]), n, temperature=0)[0].tolist()
            got = [int(t) for t in onnx_greedy(session, list(prompt), n)]
            assert got == want, f"prompt {prompt}, {n} tokens: got {got}, expected {want}"
