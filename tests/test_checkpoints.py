"""course_utils.checkpoints: atomic saves, safe loads, clear errors on a mismatch, round trips.
(Resuming a run exactly is tested with the loop, in test_train.py, and with the artifact cache's
runs, in test_artifacts.py.)"""

from __future__ import annotations

import pytest
import torch

from course_utils import checkpoints
from course_utils.model import GPT, GPTConfig
from course_utils.vocab import Vocab


def tiny_model(seed: int = 0, **kw) -> GPT:
    torch.manual_seed(seed)
    cfg = dict(vocab_size=50, block_size=16, d_model=16, n_heads=2, n_layers=2, d_ff=32, dropout=0.1)
    cfg.update(kw)
    return GPT(GPTConfig(**cfg))


def test_failed_save_leaves_previous_checkpoint_loadable(tmp_path, monkeypatch):
    model = tiny_model()
    path = tmp_path / "model.pt"
    checkpoints.atomic_save(checkpoints.make_checkpoint(model, step=1), path)

    def broken_save(obj, f, *args, **kwargs):
        with open(f, "wb") as fh:
            fh.write(b"PK\x03\x04 half a checkpoint")  # some bytes, then the disk "fills up"
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError):
        checkpoints.atomic_save(checkpoints.make_checkpoint(model, step=2), path)
    monkeypatch.undo()
    assert checkpoints.load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]  # no temp file left behind


def test_mismatched_vocab_or_config_says_which(tmp_path):
    vocab = Vocab.build(["abc"])
    model = tiny_model(vocab_size=len(vocab))
    path = checkpoints.atomic_save(checkpoints.make_checkpoint(model, vocab=vocab), tmp_path / "m.pt")
    ckpt = checkpoints.load_checkpoint(path)
    with pytest.raises(checkpoints.CheckpointError, match="different vocabulary"):
        checkpoints.check_compatible(ckpt, vocab=Vocab.build(["abd"]))
    with pytest.raises(checkpoints.CheckpointError, match="d_model"):
        checkpoints.check_compatible(ckpt, GPTConfig(vocab_size=len(vocab), block_size=16, d_model=32,
                                           n_heads=2, n_layers=2, d_ff=32, dropout=0.1))
    checkpoints.check_compatible(ckpt, model.config, vocab)  # the matching pair passes


def test_unreadable_checkpoint_gives_clear_error(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(checkpoints.CheckpointError, match="not a readable checkpoint"):
        checkpoints.load_checkpoint(bad)
    with pytest.raises(checkpoints.CheckpointError, match="does not exist"):
        checkpoints.load_checkpoint(tmp_path / "missing.pt")


def test_model_round_trip_through_checkpoint(tmp_path):
    vocab = Vocab.build(["abcdef"])
    model = tiny_model(vocab_size=len(vocab)).eval()
    path = checkpoints.atomic_save(checkpoints.make_checkpoint(model, vocab=vocab), tmp_path / "m.pt")
    loaded, loaded_vocab, _ = checkpoints.model_from_checkpoint(path)
    x = torch.tensor([[3, 4, 5]])
    assert torch.equal(model(x)[0], loaded(x)[0]) and loaded_vocab == vocab
