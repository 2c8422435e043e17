"""course_utils.model: shapes, causality, parameter counts, initial loss, errors, KV cache, masks."""

from __future__ import annotations

import math

import pytest
import torch

from course_utils.model import GPT, Block, GPTConfig, count_parameters

TOL = dict(atol=1e-5, rtol=1e-5)
SMALL = dict(vocab_size=50, block_size=16, d_model=32, n_heads=4, n_layers=2, d_ff=64, dropout=0.0)


def make(**changes) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(**{**SMALL, **changes})).eval()


def tokens(B=2, T=10, V=50, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, V, (B, T), generator=g)  # no <pad>/<unk>/<sep>


# ------------------------------------------------------------------ shapes and causality


def test_forward_shapes_and_loss():
    model = make()
    idx = tokens()
    logits, loss = model(idx)
    assert logits.shape == (2, 10, 50) and loss is None
    logits, loss = model(idx, idx)
    assert loss.dim() == 0 and torch.isfinite(loss)
    assert model.hidden_states(idx).shape == (2, 10, 32)


@pytest.mark.parametrize("fused", [True, False])
def test_changing_a_later_token_leaves_earlier_logits_unchanged(fused):
    model = make(fused_attention=fused)
    idx = tokens(B=1, T=12)
    t = 7
    changed = idx.clone()
    changed[0, t] = 3 if idx[0, t] != 3 else 4
    with torch.no_grad():
        a, _ = model(idx)
        b, _ = model(changed)
    torch.testing.assert_close(a[:, :t], b[:, :t], atol=0, rtol=0)
    assert (a[:, t:] - b[:, t:]).abs().amax(-1).min() > 0, "every later position should change"


def test_fused_and_unfused_models_agree():
    a, b = make(fused_attention=True), make(fused_attention=False)
    b.load_state_dict(a.state_dict())
    idx = tokens()
    with torch.no_grad():
        torch.testing.assert_close(a(idx)[0], b(idx)[0], **TOL)


def test_head_is_tied_to_the_token_embedding():
    model = make()
    assert model.lm_head.weight is model.tok_emb.weight
    untied = sum(p.numel() for p in model.parameters()) + model.lm_head.weight.numel()
    assert model.num_parameters() == untied - 50 * 32


# ------------------------------------------------------------------ parameter counts

CONFIGS = [
    dict(SMALL),
    dict(SMALL, bias=False),
    dict(vocab_size=4690, block_size=128, d_model=256, n_heads=8, n_layers=6, d_ff=1024),
    dict(vocab_size=4690, block_size=128, d_model=128, n_heads=4, n_layers=4, d_ff=512, bias=False),
    dict(vocab_size=7, block_size=3, d_model=6, n_heads=3, n_layers=1, d_ff=5),
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"d{c['d_model']}L{c['n_layers']}b{int(c.get('bias', True))}")
def test_parameter_count_closed_form(cfg):
    config = GPTConfig(**cfg)
    model = GPT(config)
    real = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    assert model.num_parameters() == real == count_parameters(config)


def test_course_configuration_size():
    # d_model 256, 8 heads, 6 layers, d_ff 1024, the news vocabulary (4690), block 128
    config = GPTConfig(vocab_size=4690, block_size=128, d_model=256, n_heads=8, n_layers=6, d_ff=1024)
    assert count_parameters(config) == 5_972_480


# ------------------------------------------------------------------ initial loss


def test_initial_loss_is_log_vocab_for_random_targets():
    V = 1000
    model = make(vocab_size=V, block_size=64, d_model=64, n_layers=2, d_ff=256)
    g = torch.Generator().manual_seed(1)
    idx = torch.randint(3, V, (8, 64), generator=g)
    targets = torch.randint(3, V, (8, 64), generator=g)
    with torch.no_grad():
        _, loss = model(idx, targets)
        _, loss_copy = model(idx, idx)
    assert abs(loss.item() - math.log(V)) < 0.1
    # tied weights: each position's own token gets a boosted logit, so "predict the input" is easier
    assert loss_copy.item() < loss.item()


def test_pad_targets_are_ignored():
    model = make()
    idx = tokens()
    targets = tokens(seed=1)
    with torch.no_grad():
        padded = targets.clone()
        padded[:, 5:] = 0
        _, part = model(idx, padded)
        logits, _ = model(idx)
    ref = torch.nn.functional.cross_entropy(logits[:, :5].reshape(-1, 50), targets[:, :5].reshape(-1))
    torch.testing.assert_close(part, ref, **TOL)


# ------------------------------------------------------------------ bad inputs


def test_too_long_input_raises():
    model = make()
    with pytest.raises(ValueError, match="block_size=16"):
        model(tokens(T=17))


@pytest.mark.parametrize("bad", [-1, 50, 1000])
def test_out_of_range_token_raises(bad):
    model = make()
    idx = tokens()
    idx[1, 3] = bad
    with pytest.raises(ValueError, match=rf"token id {bad} is outside the vocabulary \(0..49\)"):
        model(idx)


def test_other_bad_inputs_raise():
    model = make()
    with pytest.raises(ValueError, match="batch, time"):
        model(torch.tensor([3, 4, 5]))
    with pytest.raises(ValueError, match="integer"):
        model(torch.rand(1, 4))
    with pytest.raises(ValueError, match="empty"):
        model(torch.zeros(1, 0, dtype=torch.long))
    with pytest.raises(ValueError, match="shape of idx"):
        model(tokens(), tokens()[:, :5])
    with pytest.raises(ValueError, match="attention_mask"):
        model(tokens(), attention_mask=torch.ones(2, 5))


def test_bad_configs_raise():
    with pytest.raises(ValueError, match="divisible"):
        GPTConfig(**{**SMALL, "n_heads": 5})
    with pytest.raises(ValueError, match="positive"):
        GPTConfig(**{**SMALL, "n_layers": 0})
    with pytest.raises(ValueError, match="dropout"):
        GPTConfig(**{**SMALL, "dropout": 1.0})


# ------------------------------------------------------------------ KV cache


@pytest.mark.parametrize("fused", [True, False])
def test_kv_cache_incremental_equals_full(fused):
    model = make(fused_attention=fused)
    idx = tokens(T=12)
    cache = model.new_cache()
    with torch.no_grad():
        full, _ = model(idx)
        first, _ = model(idx[:, :5], cache=cache)  # prefill
        steps = [model(idx[:, t:t + 1], cache=cache)[0] for t in range(5, 12)]
    torch.testing.assert_close(torch.cat([first] + steps, dim=1), full, **TOL)
    assert all(len(c) == 12 for c in cache)


def test_cache_respects_block_size():
    model = make()
    cache = model.new_cache()
    with torch.no_grad():
        model(tokens(T=16), cache=cache)
        with pytest.raises(ValueError, match="16 cached"):
            model(tokens(T=1), cache=cache)
    with pytest.raises(ValueError, match="new_cache"):
        model(tokens(), cache=model.new_cache()[:1])


# ------------------------------------------------------------------ attention_mask


def test_all_ones_attention_mask_changes_nothing():
    model = make()
    idx = tokens()
    with torch.no_grad():
        a, _ = model(idx)
        b, _ = model(idx, attention_mask=torch.ones_like(idx))
        c, _ = model(idx, attention_mask=torch.ones_like(idx, dtype=torch.bool))
    torch.testing.assert_close(a, b, **TOL)
    torch.testing.assert_close(a, c, **TOL)


@pytest.mark.parametrize("fused", [True, False])
def test_right_padding_with_mask_leaves_real_tokens_unchanged(fused):
    model = make(fused_attention=fused)
    lengths = [10, 6, 1]
    rows = [tokens(B=1, T=n, seed=i)[0] for i, n in enumerate(lengths)]
    batch = torch.zeros(3, 10, dtype=torch.long)
    for i, r in enumerate(rows):
        batch[i, :len(r)] = r
    mask = batch != 0
    with torch.no_grad():
        logits, _ = model(batch, attention_mask=mask)
        for i, r in enumerate(rows):
            alone, _ = model(r[None])
            torch.testing.assert_close(logits[i, :len(r)], alone[0], **TOL)
    assert torch.isfinite(logits).all()


def test_block_matches_manual_pre_norm():
    torch.manual_seed(0)
    block = Block(GPTConfig(**SMALL)).eval()
    x = torch.randn(2, 9, 32)
    with torch.no_grad():
        h = x + block.attn(block.ln1(x))
        ref = h + block.mlp(block.ln2(h))
        torch.testing.assert_close(block(x), ref, **TOL)


def test_dropout_only_in_training():
    model = make(dropout=0.5)
    idx = tokens()
    with torch.no_grad():
        a, b = model(idx)[0], model(idx)[0]
        torch.testing.assert_close(a, b, atol=0, rtol=0)
        model.train()
        assert not torch.allclose(model(idx)[0], model(idx)[0])


def test_compiled_training_forward_has_no_graph_break():
    """The input checks read token values (`int(idx.max())`): they run in eager mode only, so a
    compiled forward and loss is one graph."""
    from conftest import tiny_gpt

    model = tiny_gpt(40, 16)
    x = torch.randint(0, 40, (2, 16))
    explanation = torch._dynamo.explain(model)(x, x)
    assert explanation.graph_break_count == 0
    with pytest.raises(ValueError, match="outside the vocabulary"):      # eager keeps the check
        model(torch.full((1, 4), 40))


# ---------------------------------------------------------------------------- the fused head and loss


@pytest.mark.parametrize("chunk", [1, 7, 256])
def test_linear_cross_entropy_matches_the_head_then_cross_entropy(chunk):
    import torch.nn.functional as F

    from course_utils.model import linear_cross_entropy

    torch.manual_seed(0)
    h0, w0 = torch.randn(50, 8, dtype=torch.float64), torch.randn(30, 8, dtype=torch.float64)
    targets = torch.randint(0, 30, (50,))
    targets[::4] = 0                                     # <pad>: ignored
    grads = []
    for fused in (False, True):
        h, w = h0.clone().requires_grad_(), w0.clone().requires_grad_()
        loss = (linear_cross_entropy(h, w, targets, 0, chunk) if fused
                else F.cross_entropy(h @ w.t(), targets, ignore_index=0))
        (3 * loss).backward()                            # a scaled loss scales both gradients
        grads.append((loss.detach(), h.grad, w.grad))
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b)


def test_linear_cross_entropy_with_every_target_ignored_is_zero_and_checks_shapes():
    from course_utils.model import linear_cross_entropy

    h, w = torch.randn(4, 8, requires_grad=True), torch.randn(30, 8, requires_grad=True)
    loss = linear_cross_entropy(h, w, torch.zeros(4, dtype=torch.long))
    loss.backward()
    assert loss.item() == 0 and not h.grad.any() and not w.grad.any()
    for bad in [(torch.randn(2, 4, 8), w, torch.zeros(2, dtype=torch.long)),
                (h, torch.randn(30, 9), torch.zeros(4, dtype=torch.long)),
                (h, w, torch.zeros(5, dtype=torch.long))]:
        with pytest.raises(ValueError, match="wants h"):
            linear_cross_entropy(*bad)


def test_gpt_fused_loss_gives_the_loss_and_gradients_without_logits():
    from conftest import tiny_gpt

    model = tiny_gpt(40, 16, dtype=torch.float64).train()
    x, y = torch.randint(1, 40, (3, 16)), torch.randint(0, 40, (3, 16))
    logits, loss = model(x, y)
    loss.backward()
    want = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    none, fused = model(x, y, fused_loss=True)
    fused.backward()
    assert none is None
    torch.testing.assert_close(fused.float(), loss)      # the plain loss is taken in float32
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, want[n], rtol=1e-5, atol=1e-7)
    with torch.no_grad():                                # evaluation: the plain path, with logits
        assert model(x, y, fused_loss=True)[0] is not None


def test_compiled_fused_loss_has_no_graph_break():
    from conftest import tiny_gpt

    model = tiny_gpt(40, 16).train()
    x = torch.randint(1, 40, (2, 16))
    explanation = torch._dynamo.explain(model)(x, x, fused_loss=True)
    assert explanation.graph_break_count == 0
