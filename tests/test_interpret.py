"""course_utils.interpret: the attention maps and the next-token lens agree with the model."""

import pytest
import torch

from course_utils import interpret
from course_utils.attention import MultiHeadAttention
from course_utils.model import GPT, GPTConfig
from course_utils.vocab import Vocab


@pytest.fixture(scope="module")
def setup():
    vocab = Vocab.build(["中国人民的生活水平不断提高，经济发展"])
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=len(vocab), block_size=16, d_model=16, n_heads=2, n_layers=3,
                          d_ff=32, dropout=0.0)).eval()
    return model, vocab


def test_attention_maps_are_causal_distributions_that_reproduce_each_block(setup):
    model, vocab = setup
    ids = vocab.encode("中国人民的生活")
    maps = interpret.attention_maps(model, ids)
    T = len(ids)
    assert maps.shape == (3, 2, T, T)
    assert torch.allclose(maps.sum(-1), torch.ones(3, 2, T), atol=1e-6)
    assert (maps.triu(1) == 0).all()
    # the weights times the values, projected, are what the first block's attention adds
    block = model.blocks[0]
    h = block.ln1(model.tok_emb(torch.tensor([ids])) + model.pos_emb(torch.arange(T)))
    _, _, v = block.attn.qkv(h).split(16, dim=2)
    v = v.view(1, T, 2, 8).transpose(1, 2)
    y = (maps[0].unsqueeze(0) @ v).transpose(1, 2).reshape(1, T, 16)
    assert torch.allclose(block.attn.proj(y), block.attn(h), atol=1e-6)
    assert isinstance(block.attn, MultiHeadAttention)


def test_the_last_block_of_the_lens_is_the_models_prediction(setup):
    model, vocab = setup
    ids = vocab.encode("经济发展")
    probs, tokens = interpret.next_token_lens(model, ids, k=4)
    assert probs.shape == tokens.shape == (3, 4)
    own = torch.softmax(model(torch.tensor([ids]))[0][0, -1], -1).topk(4)
    assert torch.equal(tokens[-1], own.indices) and torch.allclose(probs[-1], own.values, atol=1e-6)
    assert (probs[:, :-1] >= probs[:, 1:]).all()


def test_bad_text_gets_a_clear_message(setup):
    _, vocab = setup
    with pytest.raises(ValueError, match="empty"):
        interpret.check_text(vocab, "  ", 16)
    with pytest.raises(ValueError, match="vocabulary"):
        interpret.check_text(vocab, "☃☃", 16)
    with pytest.raises(ValueError, match="block"):
        interpret.check_text(vocab, "中国" * 9, 16)
    assert interpret.check_text(vocab, "中国", 16) == vocab.encode("中国")


def test_a_model_in_training_mode_is_read_without_dropout_and_left_in_training_mode(setup):
    _, vocab = setup
    torch.manual_seed(0)
    noisy = GPT(GPTConfig(vocab_size=len(vocab), block_size=16, d_model=16, n_heads=2, n_layers=2,
                          d_ff=32, dropout=0.5))
    ids = vocab.encode("中国人民的生活")
    noisy.train()
    maps, stream = interpret.attention_maps(noisy, ids), interpret.residual_stream(noisy, ids)
    assert noisy.training
    noisy.eval()
    assert torch.equal(maps, interpret.attention_maps(noisy, ids))
    assert torch.equal(stream, interpret.residual_stream(noisy, ids))
    assert not noisy.training
