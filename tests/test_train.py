"""course_utils.train: schedule, optimizer groups, exact resume, checkpoints that survive crashes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from course_utils import train as T
from course_utils.batches import DatasetBatches, PaddedLines, WindowBatches
from course_utils.checkpoints import CheckpointManager, load_checkpoint
from course_utils.model import GPT, GPTConfig
from course_utils.vocab import Vocab

V = 50


def tiny_model(seed: int = 0, **kw) -> GPT:
    torch.manual_seed(seed)
    cfg = dict(vocab_size=V, block_size=16, d_model=16, n_heads=2, n_layers=2, d_ff=32, dropout=0.1)
    cfg.update(kw)
    return GPT(GPTConfig(**cfg))


@pytest.fixture
def tokens():
    # a random "sentence" of 97 tokens repeated: there is something to learn (its bigrams)
    return np.tile(np.random.default_rng(0).integers(3, V, size=97), 50).astype(np.uint16)


def run(tokens, steps=10, stop_at=None, resume_from=None, ckpt_dir=None, dropout=0.1, **cfg_kw):
    model = tiny_model(dropout=dropout)
    settings = dict(max_steps=steps, lr=3e-3, warmup_steps=2, eval_interval=5, eval_iters=2,
                    log_interval=1, progress=False, checkpoint_dir=ckpt_dir)
    cfg = T.TrainConfig(**{**settings, **cfg_kw})
    src = WindowBatches(tokens, batch_size=4, block_size=16, seed=0)
    val = WindowBatches(tokens, batch_size=4, block_size=16, seed=1)
    return T.train(model, src, cfg, val_source=val, stop_at=stop_at, resume_from=resume_from)


def test_lr_schedule_warms_up_then_decays_to_min():
    cfg = T.TrainConfig(max_steps=100, lr=1.0, warmup_steps=10, min_lr_ratio=0.1, progress=False)
    lrs = [T.lr_at(s, cfg) for s in range(101)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[10:-1], lrs[11:], strict=True))  # monotone decay after warm-up
    assert lrs[100] == pytest.approx(0.1)


def test_no_decay_for_biases_and_layernorms():
    model = tiny_model()
    opt = T.configure_optimizer(model, T.TrainConfig(progress=False))
    decay, no_decay = opt.param_groups
    assert all(p.dim() >= 2 for p in decay["params"]) and all(p.dim() < 2 for p in no_decay["params"])
    assert no_decay["weight_decay"] == 0.0
    n = sum(p.numel() for g in opt.param_groups for p in g["params"])
    assert n == model.num_parameters()  # the tied head is counted once


def test_training_reduces_loss(tokens):
    res = run(tokens, steps=30)
    assert res.history["loss"][-1] < res.history["loss"][0] - 0.3


def test_batch_of_a_step_is_a_function_of_the_step(tokens):
    src = WindowBatches(tokens, 4, 16, seed=0)
    assert torch.equal(src.get(7)[0], src.get(7)[0])
    assert not torch.equal(src.get(7)[0], src.get(8)[0])
    # two ranks split the global batch
    x0, _ = src.get(3, rank=0, world_size=2)
    x1, _ = src.get(3, rank=1, world_size=2)
    assert torch.equal(torch.cat([x0, x1]), src.get(3)[0])


def test_dataset_batches_reshuffle_each_epoch():
    vocab = Vocab.build(["abcdefghijklmnopqrstuvwxyz"])
    lines = ["abcdefghijklmnopq"[: 16 + i % 2] + "xyz"[i % 3] for i in range(40)]
    src = DatasetBatches(PaddedLines(lines, vocab, min_len=16, max_len=20), batch_size=8, seed=0)
    epoch0 = np.concatenate([src.indices(s) for s in range(5)])
    epoch1 = np.concatenate([src.indices(s) for s in range(5, 10)])
    assert sorted(epoch0) == sorted(epoch1) == list(range(40))
    assert not np.array_equal(epoch0, epoch1)


def test_gradient_accumulation_equals_one_big_batch(tokens):
    # without dropout (whose random masks depend on the micro-batch shapes)
    a = run(tokens, steps=4, grad_accum=1, eval_interval=100, dropout=0.0)
    b = run(tokens, steps=4, grad_accum=2, eval_interval=100, dropout=0.0)
    for (n, p), q in zip(a.model.named_parameters(), b.model.parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-5), n


def test_resumed_run_equals_uninterrupted_run(tokens, tmp_path):
    full = run(tokens, steps=12, ckpt_dir=str(tmp_path / "a"))
    part = run(tokens, steps=12, stop_at=5, ckpt_dir=str(tmp_path / "b"))
    assert part.step == 5 and part.checkpoint is not None
    resumed = run(tokens, steps=12, resume_from=tmp_path / "b", ckpt_dir=str(tmp_path / "b"))
    assert resumed.history["step"] == full.history["step"]
    np.testing.assert_allclose(resumed.history["loss"], full.history["loss"], atol=1e-6, rtol=0)
    np.testing.assert_allclose(resumed.history["val_loss"], full.history["val_loss"], atol=1e-6, rtol=0)
    for p, q in zip(full.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-6)


def test_keep_last_n_and_best(tokens, tmp_path):
    run(tokens, steps=12, ckpt_dir=str(tmp_path), checkpoint_interval=1, keep_last=3)
    mgr = CheckpointManager(tmp_path)
    assert mgr.steps() == [10, 11, 12]
    assert mgr.best_path.is_file()
    best = load_checkpoint(mgr.best_path)
    assert best["history"]["val_loss"][-1] == min(best["history"]["val_loss"])


def test_bad_train_config_is_rejected():
    with pytest.raises(ValueError, match="max_steps"):
        T.TrainConfig(max_steps=0)
    with pytest.raises(ValueError, match="precision"):
        T.TrainConfig(precision="fp8")


def test_fp16_on_cpu_is_refused_with_a_hint(tokens):
    with pytest.raises(ValueError, match="bf16"):
        run(tokens, steps=1, precision="fp16")


def test_fused_loss_trains_like_the_plain_loss(tokens):
    plain = run(tokens, steps=12, dropout=0.0)
    fused = run(tokens, steps=12, dropout=0.0, fused_loss=True)
    # the same arithmetic up to float rounding: the curves agree to rounding, step by step
    np.testing.assert_allclose(fused.history["loss"], plain.history["loss"], rtol=1e-4)
    np.testing.assert_allclose(fused.history["val_loss"], plain.history["val_loss"], rtol=1e-4)


def test_fused_loss_is_refused_where_it_cannot_apply(tokens):
    from course_utils.finetune import GPTClassifier

    with pytest.raises(ValueError, match="fused_loss.*precision"):
        T.TrainConfig(fused_loss=True, precision="bf16")
    cfg = T.TrainConfig(max_steps=1, fused_loss=True, progress=False)
    src = DatasetBatches(torch.utils.data.TensorDataset(torch.randint(1, V, (8, 16)),
                                                          torch.randint(0, 2, (8,))), 4)
    with pytest.raises(ValueError, match="needs the GPT language model"):
        T.train(GPTClassifier(tiny_model(), 2), src, cfg)


def test_profile_speedups_reach_the_train_config():
    from course_utils import config

    cpu, ci, gpu = (config.PROFILES[n] for n in ("cpu", "ci", "gpu"))
    fast = T.TrainConfig.from_profile(cpu)
    assert (fast.fused_loss, fast.fused_adamw, fast.compiled) == (True, True, True)
    assert not any(ci.lm_speedups().values()) and not any(gpu.lm_speedups().values())
    bf16 = T.TrainConfig.from_profile(cpu, precision="bf16")   # the fused loss is fp32 only
    assert (bf16.fused_loss, bf16.compiled) == (False, True)
    plain = T.TrainConfig.from_profile(cpu, fused_loss=False, compiled=False)  # overrides win
    assert (plain.fused_loss, plain.compiled, plain.fused_adamw) == (False, False, True)
    short = T.TrainConfig.from_profile(cpu, max_steps=config.COMPILE_MIN_STEPS - 1)
    assert (short.fused_loss, short.compiled) == (True, False)  # compiling would not pay back
    assert T.configure_optimizer(tiny_model(), fast).defaults["fused"] is True


def test_compile_without_a_compiler_trains_eagerly_and_says_so(tokens, monkeypatch, capsys):
    monkeypatch.setattr(T, "compiler_available", lambda: "no C++ compiler (test)")
    eager = run(tokens, steps=4, dropout=0.0)
    fallback = run(tokens, steps=4, dropout=0.0, compiled=True, fused_adamw=True)
    assert "torch.compile is not available here (no C++ compiler (test)): training without it" \
        in capsys.readouterr().out
    np.testing.assert_allclose(fallback.history["loss"], eager.history["loss"], rtol=1e-4)
