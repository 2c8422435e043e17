"""Views inside the model: the attention maps of every head, and a next-token lens (chapters 03, 04).

- `attention_maps(model, ids)`: for one text, each layer's causal attention weights, head by
  head: row t says how much position t reads from each position up to t.
- `next_token_lens(model, ids, k)`: the residual stream after each block, read through the final
  LayerNorm and the tied head as if the model stopped there (the "logit lens"): the top k next
  tokens per block. After the last block it is the model's own prediction.

The book's site computes the same two views in the reader's browser (`book/_static/gpt.js`);
the end-to-end tests check that both agree.
"""

from __future__ import annotations

import torch

from .model import GPT
from .vocab import UNK, Vocab


def check_text(vocab: Vocab, text: str, block_size: int) -> list[int]:
    """The ids of `text` for the views: a clear ValueError for an empty text, one the vocabulary
    cannot read at all, or one longer than the block."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("the text is empty: type at least one character")
    ids = vocab.encode(text)
    if all(i == UNK for i in ids):
        raise ValueError(f"no character of {text[:30]!r} is in the vocabulary: try Chinese text like the corpus")
    if len(ids) > block_size:
        raise ValueError(f"the text has {len(ids)} tokens, more than the model's block of {block_size}: shorten it")
    return ids


def _caught(model: GPT, ids: list[int], modules, pick) -> list[torch.Tensor]:
    """Run `model` on `ids` (in eval mode) and return `pick(output)` of each of `modules`, in
    the order they ran, caught by forward hooks that are removed again."""
    was_training = model.training
    model.eval()
    caught = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: caught.append(pick(out))) for m in modules]
    try:
        model(torch.tensor([ids]))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return caught


@torch.no_grad()
def attention_maps(model: GPT, ids: list[int]) -> torch.Tensor:
    """(n_layers, n_heads, T, T): the attention weights of every head of every layer for `ids`.
    Each block's attention is asked for its weights (`return_weights=True`) on the very input it
    gets in the forward pass (its first LayerNorm's output, caught by a hook)."""
    was_training = model.training
    model.eval()                                   # no dropout in the weights either
    try:
        inputs = _caught(model, ids, [block.ln1 for block in model.blocks], lambda out: out)
        maps = [block.attn(x, return_weights=True)[1][0] for block, x in zip(model.blocks, inputs, strict=True)]
    finally:
        model.train(was_training)
    return torch.stack(maps)


@torch.no_grad()
def residual_stream(model: GPT, ids: list[int]) -> torch.Tensor:
    """(n_layers, T, d_model): the residual stream after each block."""
    return torch.stack(_caught(model, ids, model.blocks, lambda out: out[0]))


@torch.no_grad()
def next_token_lens(model: GPT, ids: list[int], k: int = 5, position: int = -1) -> tuple[torch.Tensor, torch.Tensor]:
    """(probabilities (n_layers, k), token ids (n_layers, k)): the top k next tokens at `position`
    read from the residual stream after each block through `ln_f` and the tied head. The last row
    is the model's own next-token distribution."""
    stream = residual_stream(model, ids)[:, position]
    probs = torch.softmax(model.lm_head(model.ln_f(stream)).float(), dim=-1)
    top = probs.topk(k, dim=-1)
    return top.values, top.indices
