"""Shared test helpers: one torch thread for tiny models, small random GPTs, script loading."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from course_utils.model import GPT, GPTConfig
from course_utils.vocab import Vocab

# A line of news-like and dialogue-like text: the vocabulary of the tiny test models.
TEXT = "今天天气很好。你好吗？我很好！人民日报记者报道，中国经济发展。"


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run fastest on one thread (and a busy CI machine does not oversubscribe).
    Use with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_gpt(vocab_size: int = 40, block_size: int = 16, *, d_model: int = 32, n_heads: int = 4,
             n_layers: int = 2, d_ff: int = 64, seed: int = 0, scale: float = 1.0,
             dtype=torch.float32) -> GPT:
    """A random GPT in eval mode. `scale` > 1 multiplies its weight matrices, so its
    next-token distributions are peaked (untrained 0.02-std weights give near-uniform
    logits, where greedy ties are fragile and sampler settings look alike)."""
    torch.manual_seed(seed)
    model = GPT(GPTConfig(vocab_size=vocab_size, block_size=block_size, d_model=d_model,
                          n_heads=n_heads, n_layers=n_layers, d_ff=d_ff, dropout=0.0))
    if scale != 1.0:
        with torch.no_grad():
            for p in model.parameters():
                if p.dim() >= 2:
                    p.mul_(scale)
    return model.to(dtype).eval()


def tiny_lm(block_size: int = 16, scale: float = 1.0) -> tuple[GPT, Vocab]:
    """A one-layer random GPT over the characters of TEXT, and that vocabulary."""
    vocab = Vocab.build([TEXT])
    return tiny_gpt(len(vocab), block_size, d_model=16, n_heads=2, n_layers=1, d_ff=32,
                    scale=scale), vocab


def load_script(path, name: str | None = None):
    """Import a script that is not in a package (bench/*.py, tools/*.py) as a module."""
    path = Path(path)
    spec = importlib.util.spec_from_file_location(name or f"script_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
