"""course_utils.finetune: freezing counts, LoRA, pooling with/without the padding mask,
the response-only dialogue loss, metrics, embeddings and bad arguments."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from course_utils import finetune
from course_utils.batches import DialogueExamples, LabeledTexts
from course_utils.data import to_fullwidth
from course_utils.model import GPT, GPTConfig, count_parameters
from course_utils.vocab import PAD, SEP, Vocab

CFG = dict(vocab_size=40, block_size=16, d_model=16, n_heads=2, n_layers=3, d_ff=24, dropout=0.0)


def tiny_gpt(seed: int = 0, **changes) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(**{**CFG, **changes}))


def classifier(seed: int = 0, num_classes: int = 3, **kwargs) -> finetune.GPTClassifier:
    model = finetune.GPTClassifier(tiny_gpt(seed), num_classes=num_classes, dropout=0.0, **kwargs)
    torch.manual_seed(seed + 1)
    with torch.no_grad():  # a non-zero head, so that features reach the logits
        model.head.weight.normal_()
    return model


def closed_form(config: GPTConfig, num_classes: int) -> dict[str, int]:
    """Trainable parameters of each strategy, from the configuration alone."""
    d, f = config.d_model, config.d_ff
    head = d * num_classes + num_classes
    layer_norm = 2 * d
    block = 2 * layer_norm + (d * 3 * d + 3 * d) + (d * d + d) + (d * f + f) + (f * d + d)
    return {"head": head, "last_block": block + layer_norm + head,
            "all": count_parameters(config) + head}


# ------------------------------------------------------------ freezing


@pytest.mark.parametrize("strategy", finetune.STRATEGIES)
@pytest.mark.parametrize("num_classes", [2, 5])
def test_freeze_gives_the_closed_form_count(strategy, num_classes):
    model = classifier(num_classes=num_classes)
    n = finetune.freeze(model, strategy)
    assert n == closed_form(model.config, num_classes)[strategy]
    assert n == finetune.count_trainable(model)


def test_last_block_trains_exactly_the_last_block_whatever_the_depth():
    for n_layers in (1, 2, 4):
        model = finetune.GPTClassifier(tiny_gpt(n_layers=n_layers), 2)
        finetune.freeze(model, "last_block")
        names = {n for n, p in model.named_parameters() if p.requires_grad}
        last = f"backbone.blocks.{n_layers - 1}."
        assert names == {n for n, _ in model.named_parameters()
                         if n.startswith((last, "backbone.ln_f.", "head."))}


def test_frozen_parameters_get_no_gradient():
    model = classifier()
    finetune.freeze(model, "last_block")
    x = torch.randint(3, CFG["vocab_size"], (4, 10))
    _, loss = model(x, torch.tensor([0, 1, 2, 1]))
    loss.backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None, name


def test_refreezing_switches_strategy():
    model = classifier()
    finetune.freeze(model, "all")
    assert finetune.freeze(model, "head") == closed_form(model.config, 3)["head"]


# ------------------------------------------------------------ LoRA


def test_lora_at_initialisation_leaves_outputs_unchanged():
    model = classifier()
    x = torch.randint(3, CFG["vocab_size"], (3, 12))
    before, _ = model(x)
    wrapped = finetune.apply_lora(model, rank=4, alpha=8)
    assert len(wrapped) == 2 * CFG["n_layers"]
    after, _ = model(x)
    torch.testing.assert_close(after, before, rtol=0, atol=0)


@pytest.mark.parametrize("targets", [("attn.qkv", "attn.proj"), ("mlp.fc", "mlp.proj"),
                                     ("attn.qkv", "attn.proj", "mlp.fc", "mlp.proj")])
@pytest.mark.parametrize("rank", [1, 4])
def test_lora_trainable_count(targets, rank):
    model = classifier(num_classes=2)
    wrapped = finetune.apply_lora(model, rank=rank, targets=targets)
    d, f = CFG["d_model"], CFG["d_ff"]
    shapes = {"attn.qkv": (d, 3 * d), "attn.proj": (d, d), "mlp.fc": (d, f), "mlp.proj": (f, d)}
    per_block = sum(rank * (shapes[t][0] + shapes[t][1]) for t in targets)
    assert len(wrapped) == len(targets) * CFG["n_layers"]
    assert finetune.count_trainable(model) == CFG["n_layers"] * per_block + d * 2 + 2


def test_lora_merged_and_unmerged_outputs_agree():
    model = classifier()
    finetune.apply_lora(model, rank=4, alpha=8)
    torch.manual_seed(3)
    for layer in model.modules():
        if isinstance(layer, finetune.LoRALinear):
            with torch.no_grad():
                layer.lora_b.normal_(std=0.5)  # as if trained: B A is no longer zero
    x = torch.randint(3, CFG["vocab_size"], (3, 12))
    unmerged, _ = model(x)
    base_before = model.backbone.blocks[0].attn.qkv.base.weight.clone()
    assert finetune.merge_lora(model) == 2 * CFG["n_layers"]
    merged, _ = model(x)
    torch.testing.assert_close(merged, unmerged, rtol=1e-5, atol=1e-5)
    assert not torch.equal(model.backbone.blocks[0].attn.qkv.base.weight, base_before)
    for layer in model.modules():
        if isinstance(layer, finetune.LoRALinear):
            layer.unmerge()
    torch.testing.assert_close(model.backbone.blocks[0].attn.qkv.base.weight, base_before,
                               rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(model(x)[0], unmerged, rtol=1e-5, atol=1e-5)


def test_lora_trains_only_a_and_b():
    model = classifier()
    finetune.apply_lora(model, rank=2)
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert names and all(n.endswith(("lora_a", "lora_b")) or n.startswith("head.") for n in names)


# ------------------------------------------------------------ pooling and the padding mask


def padded_batch():
    """Row 0 fills all 12 positions; rows 1 and 2 are right-padded."""
    torch.manual_seed(5)
    x = torch.randint(3, CFG["vocab_size"], (3, 12))
    x[1, 7:] = PAD
    x[2, 3:] = PAD
    return x


@pytest.mark.parametrize("how", finetune.POOLINGS)
def test_padding_mask_changes_only_padded_rows(how):
    x = padded_batch()
    masked = classifier(pooling=how, mask_padding=True)
    unmasked = classifier(pooling=how, mask_padding=False)  # same seed: same weights
    with torch.no_grad():
        a, b = masked.features(x), unmasked.features(x)
    torch.testing.assert_close(a[0], b[0], rtol=0, atol=0)  # no padding: identical
    for row in (1, 2):
        assert not torch.allclose(a[row], b[row], atol=1e-4)


def test_pool_picks_the_last_real_token_and_the_mean_of_real_tokens():
    x = padded_batch()
    hidden = torch.randn(3, 12, 4)
    last = finetune.pool(hidden, x, "last")
    for row, n in enumerate((12, 7, 3)):
        torch.testing.assert_close(last[row], hidden[row, n - 1])
        torch.testing.assert_close(finetune.pool(hidden, x, "mean")[row], hidden[row, :n].mean(0))
    torch.testing.assert_close(finetune.pool(hidden, x, "last", mask_padding=False), hidden[:, -1])
    torch.testing.assert_close(finetune.pool(hidden, x, "mean", mask_padding=False), hidden.mean(1))


def test_padded_features_equal_unpadded_features_with_the_mask():
    """With the mask, adding padding to a text does not change its features."""
    model = classifier()
    x = padded_batch()
    with torch.no_grad():
        full = model.features(x)
        alone = model.features(x[1:2, :7])
    torch.testing.assert_close(full[1:2], alone, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------ the response-only dialogue loss

DIALOGUES = [["你好", "你好呀，很高兴认识你"], ["今天天气怎么样", "很好", "我们去公园吧", "好的"]]


@pytest.fixture(scope="module")
def dialogue_vocab() -> Vocab:
    return Vocab.build("".join(t for d in DIALOGUES for t in d))


def test_response_only_targets_are_pad_inside_the_history(dialogue_vocab):
    full = DialogueExamples(DIALOGUES, dialogue_vocab, block_size=24, response_only=False)
    resp = DialogueExamples(DIALOGUES, dialogue_vocab, block_size=24, response_only=True)
    assert len(full) == len(resp) == 1 + 3
    for i in range(len(resp)):
        ids, n_history = resp.examples[i]
        (x, y_full), (x2, y) = full[i], resp[i]
        assert torch.equal(x, x2)
        assert (y[: n_history - 1] == PAD).all()          # history: not learned
        assert torch.equal(y[n_history - 1:], y_full[n_history - 1:])  # reply: learned
        assert int(x[n_history - 1]) == SEP                # the <sep> before the reply...
        assert int(y[n_history - 1]) == ids[n_history]    # ...predicts its first character
        assert int(y[len(ids) - 2]) == SEP                 # and the reply ends with <sep>


def test_the_response_only_loss_ignores_history_targets(dialogue_vocab):
    resp = DialogueExamples(DIALOGUES, dialogue_vocab, block_size=24, response_only=True)
    model = tiny_gpt(vocab_size=len(dialogue_vocab), block_size=24)
    x, y = (torch.stack(t) for t in zip(*(resp[i] for i in range(len(resp))), strict=True))
    _, loss = model(x, y)
    # the same loss by hand: cross-entropy averaged over reply positions only
    logits, _ = model(x)
    reply = y != PAD
    by_hand = F.cross_entropy(logits[reply], y[reply])
    torch.testing.assert_close(loss, by_hand)
    # whatever the model predicts inside a history, the loss does not change
    noisy = logits.clone()
    for i in range(len(resp)):
        noisy[i, : resp.examples[i][1] - 1] += 10 * torch.randn_like(noisy[i, : resp.examples[i][1] - 1])
    torch.testing.assert_close(F.cross_entropy(noisy[reply], y[reply]), by_hand)
    torch.testing.assert_close(
        F.cross_entropy(noisy.view(-1, noisy.size(-1)), y.view(-1), ignore_index=PAD), loss)
    # while the full-conversation targets (response_only=False) would learn the history too
    full = DialogueExamples(DIALOGUES, dialogue_vocab, block_size=24, response_only=False)
    y_full = torch.stack([full[i][1] for i in range(len(full))])
    assert (y_full != PAD).sum() > reply.sum()
    assert not torch.isclose(model(x, y_full)[1], loss)
    # gradients reach no logit inside a history
    logits = logits.detach().requires_grad_(True)
    F.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1), ignore_index=PAD).backward()
    for i in range(len(resp)):
        n_history = resp.examples[i][1]
        assert logits.grad[i, : n_history - 1].abs().sum() == 0
        assert logits.grad[i, n_history - 1].abs().sum() > 0


# ------------------------------------------------------------ metrics, features, embeddings


def test_classification_report():
    report = finetune.classification_report([0, 1, 1, 0, 1], [0, 1, 0, 0, 1])
    assert report["accuracy"] == pytest.approx(0.8)
    assert report["confusion"].tolist() == [[2, 1], [0, 2]]
    assert report["f1"] == pytest.approx((0.8 + 0.8) / 2)


def test_predict_and_pooled_features_agree_with_the_head():
    vocab = Vocab.build("好差很一般不错的书")
    model = finetune.GPTClassifier(tiny_gpt(vocab_size=len(vocab)), 2)
    data = LabeledTexts(["很好", "很差", "一般", "不错的书"], [1, 0, 0, 1], vocab, max_len=6)
    feats, labels = finetune.pooled_features(model, data, batch_size=3)
    assert feats.shape == (4, CFG["d_model"]) and labels.tolist() == [1, 0, 0, 1]
    pred, true = finetune.predict(model, data, batch_size=3)
    assert pred.tolist() == model.head(feats).argmax(-1).tolist() and true.tolist() == [1, 0, 0, 1]


@pytest.mark.parametrize(("n", "window", "stride", "starts"), [
    (3, 4, 4, [0]), (4, 4, 2, [0]), (10, 4, 4, [0, 4, 6]), (10, 4, 2, [0, 2, 4, 6]), (9, 4, 3, [0, 3, 5])])
def test_window_starts_cover_the_text_with_full_windows(n, window, stride, starts):
    assert finetune.window_starts(n, window, stride) == starts
    read = {s + k for s in starts for k in range(window) if s + k < n}
    assert read == set(range(n))                                  # every token is read
    assert all(s + window <= max(n, window) for s in starts)      # no window runs past the end


def test_predict_windows_averages_the_windows_and_leaves_short_texts_alone():
    vocab = Vocab.build("好差很一般不错的书评")
    clf = finetune.GPTClassifier(tiny_gpt(vocab_size=len(vocab)), 2, dropout=0.0).eval()
    with torch.no_grad():                               # a non-zero head, so that windows differ
        clf.head.weight.normal_()
    texts = ["很好", "很差的书很一般不错的书评好", "一般不错"]
    for average in ("logits", "probs"):
        pred, scores = finetune.predict_windows(clf, texts, vocab, window=6, stride=3, average=average)
        assert scores.shape == (3, 2) and pred.tolist() == scores.argmax(-1).tolist()
        ids = vocab.encode(texts[1])                               # 13 tokens: windows at 0, 3, 6, 7
        by_hand = []
        for s in (0, 3, 6, 7):
            x = torch.full((1, 6), PAD)
            x[0, : len(ids[s: s + 6])] = torch.tensor(ids[s: s + 6])
            logits = clf(x)[0][0]
            by_hand.append(logits if average == "logits" else logits.softmax(-1))
        torch.testing.assert_close(scores[1], torch.stack(by_hand).mean(0))
    plain, _ = finetune.predict(clf, LabeledTexts(texts, [1, 0, 0], vocab, max_len=6))
    one_window, logits = finetune.predict_windows(clf, texts, vocab, window=6)
    assert one_window[[0, 2]].tolist() == plain[[0, 2]].tolist()  # at most `window` tokens: one window
    with torch.no_grad():
        torch.testing.assert_close(logits[0], clf(LabeledTexts(texts[:1], [1], vocab, 6)[0][0][None])[0][0])
    with pytest.raises(ValueError, match="average"):
        finetune.predict_windows(clf, texts, vocab, average="max")
    with pytest.raises(ValueError, match="stride"):
        finetune.predict_windows(clf, texts, vocab, window=4, stride=5)
    with pytest.raises(ValueError, match="empty"):
        finetune.predict_windows(clf, ["很好", ""], vocab)
    with pytest.raises(ValueError, match="no texts"):
        finetune.predict_windows(clf, [], vocab)


def test_embed_is_normalised_and_centering_uses_the_mean():
    vocab = Vocab.build("今天天气很好我们去公园散步吧")
    model = tiny_gpt(vocab_size=len(vocab))
    texts = ["今天天气很好", "我们去公园", "散步吧", "很好"]
    raw = finetune.embed(model, vocab, texts, normalize=False)
    emb = finetune.embed(model, vocab, texts)
    torch.testing.assert_close(emb, F.normalize(raw, dim=-1))
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(4))
    centered = finetune.embed(model, vocab, texts, center=True)
    torch.testing.assert_close(centered, F.normalize(raw - raw.mean(0), dim=-1))
    mu = raw[:2].mean(0)
    torch.testing.assert_close(finetune.embed(model, vocab, texts, center=mu),
                               F.normalize(raw - mu, dim=-1))
    with pytest.raises(ValueError, match="center"):
        finetune.embed(model, vocab, texts, center=torch.zeros(3))


def test_to_fullwidth():
    assert to_fullwidth("AMD芯片,很好!价格289 ok?~") == "ＡＭＤ芯片，很好！价格２８９ ｏｋ？～"


# ------------------------------------------------------------ bad arguments


def test_bad_strategy_or_pooling_raises_value_error():
    model = classifier()
    with pytest.raises(ValueError, match="strategy"):
        finetune.freeze(model, "layers.5")
    with pytest.raises(ValueError, match="pooling"):
        finetune.GPTClassifier(tiny_gpt(), pooling="max")
    with pytest.raises(ValueError, match="pooling"):
        finetune.pool(torch.zeros(1, 2, 3), torch.ones(1, 2, dtype=torch.long), "first")
    with pytest.raises(ValueError, match="rank"):
        finetune.LoRALinear(torch.nn.Linear(4, 4), rank=0)
    with pytest.raises(ValueError, match="no linear layer"):
        finetune.apply_lora(classifier(), targets=("attn.nonexistent",))


# ------------------------------------------------------------ how sure are we? (chapter 10)


def test_wilson_interval_matches_the_formula_and_known_values():
    lo, hi = finetune.wilson_interval(85, 100)
    assert (round(lo, 4), round(hi, 4)) == (0.7672, 0.9069)          # a textbook example
    z, n, p = 1.959964, 1736, 1418 / 1736
    center = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * (p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5
    assert finetune.wilson_interval(1418, 1736) == pytest.approx((center - half, center + half))
    assert finetune.wilson_interval(0, 10)[0] == 0 and finetune.wilson_interval(10, 10)[1] == pytest.approx(1)
    with pytest.raises(ValueError, match="correct <= n"):
        finetune.wilson_interval(11, 10)


def test_mcnemar_is_scipys_exact_binomial_test():
    scipy_stats = pytest.importorskip("scipy.stats")
    rng = torch.Generator().manual_seed(0)
    true = torch.randint(0, 2, (500,), generator=rng).numpy()
    for flip_a, flip_b in [(0.10, 0.15), (0.2, 0.2), (0.05, 0.3)]:
        a = true ^ (torch.rand(500, generator=rng).numpy() < flip_a)
        b = true ^ (torch.rand(500, generator=rng).numpy() < flip_b)
        result = finetune.mcnemar(a, b, true)
        a_only = int(((a == true) & (b != true)).sum())
        b_only = int(((a != true) & (b == true)).sum())
        assert (result["a_only"], result["b_only"]) == (a_only, b_only)
        expected = scipy_stats.binomtest(a_only, a_only + b_only, 0.5).pvalue
        assert result["p_value"] == pytest.approx(expected, rel=1e-9)
    assert finetune.mcnemar([1, 0], [1, 0], [1, 1])["p_value"] == 1.0    # never disagree
    with pytest.raises(ValueError, match="same test items"):
        finetune.mcnemar([1, 0], [1], [1, 0])


def test_bootstrap_interval_brackets_the_estimate_and_narrows_with_more_data():
    rng = torch.Generator().manual_seed(1)
    true = torch.randint(0, 2, (2000,), generator=rng).numpy()
    pred = true ^ (torch.rand(2000, generator=rng).numpy() < 0.2)
    small = finetune.bootstrap_interval(pred[:200], true[:200], "accuracy", n_boot=300)
    large = finetune.bootstrap_interval(pred, true, "accuracy", n_boot=300)
    assert small[0] <= float((pred[:200] == true[:200]).mean()) <= small[1]
    assert large[0] <= float((pred == true).mean()) <= large[1]
    assert large[1] - large[0] < small[1] - small[0]
    report = finetune.score(pred, true, n_boot=200)
    assert report["f1_ci"][0] <= report["f1"] <= report["f1_ci"][1]
    with pytest.raises(ValueError, match="metric"):
        finetune.bootstrap_interval(pred, true, "auc")


# ------------------------------------------------------------ training only what changes


def _labelled(vocab, n=24):
    texts = ["很好", "很差", "一般", "不错的书", "好书", "差评"] * (n // 6)
    labels = [1, 0, 0, 1, 1, 0] * (n // 6)
    return LabeledTexts(texts, labels, vocab, max_len=6)


def test_frozen_pass_feeds_head_and_top_the_classifiers_own_numbers():
    vocab = Vocab.build("好差很一般不错的书评")
    clf = finetune.GPTClassifier(tiny_gpt(vocab_size=len(vocab), block_size=6), 2, dropout=0.0).eval()
    data = _labelled(vocab)
    block_inputs, pooled = finetune.frozen_pass(clf.backbone, data, [("last", True), ("mean", False)],
                                                batch_size=5, progress=False)
    assert block_inputs.shape == (len(data), 6, CFG["d_model"])
    x = torch.stack([data[i][0] for i in range(len(data))])
    with torch.no_grad():
        assert torch.allclose(pooled["last", True], clf.features(x), atol=1e-6)
        head_logits = finetune.HeadOnFeatures(clf)(pooled["last", True])[0]
        top_logits = finetune.TopOfGPT(clf, block_inputs, x)(torch.arange(len(data)))[0]
        full = clf(x)[0]
    assert torch.allclose(head_logits, full, atol=1e-5) and torch.allclose(top_logits, full, atol=1e-5)


def test_train_best_keeps_the_lowest_validation_loss(one_thread):
    from torch.utils.data import TensorDataset

    from course_utils.train import TrainConfig

    torch.manual_seed(0)
    feats = torch.randn(64, CFG["d_model"])
    labels = (feats[:, 0] > 0).long()
    clf = finetune.GPTClassifier(tiny_gpt(), 2, dropout=0.0)
    cfg = TrainConfig(max_steps=30, lr=0.05, warmup_steps=1, eval_interval=5, eval_iters=2, progress=False)
    result, best_step = finetune.train_best(finetune.HeadOnFeatures(clf), TensorDataset(feats[:48], labels[:48]),
                                            TensorDataset(feats[48:], labels[48:]), cfg, batch_size=8)
    history = result.history
    assert best_step == history["eval_step"][history["val_loss"].index(min(history["val_loss"]))]
    with torch.no_grad():
        acc = float((clf.head(feats[48:]).argmax(-1) == labels[48:]).float().mean())
    assert acc > 0.7                                          # a separable toy problem is learned
    assert cfg.checkpoint_dir is None                         # the temporary run folder is gone


# ------------------------------------------------------------ domain adaptation (chapter 10)


def _normal(text: str) -> str:
    from course_utils.data import to_fullwidth as full

    return " ".join(full(text).split())


def test_sentiment_splits_share_no_text_after_normalisation():
    from course_utils import artifacts, config

    fit, val, test = artifacts.sentiment_splits(config.get_profile("cpu"))
    texts = {name: {_normal(t) for t in df.review} for name, df in
             [("fit", fit), ("val", val), ("test", test)]}
    assert not texts["fit"] & texts["test"] and not texts["val"] & texts["test"]
    # deduplication is by exact text, so a review typed once half-width and once full-width can
    # sit in fit and validation: harmless for choosing steps, and rare
    assert len(texts["fit"] & texts["val"]) <= len(val) // 1000
    assert len(fit) + len(val) + len(test) > 17000


def test_review_lm_adapts_on_fit_reviews_only(tmp_path, monkeypatch, one_thread):
    """The language model is trained (and validated) on review text; no test review is ever
    part of what it reads, compared by exact text after normalisation."""
    from course_utils import artifacts, config

    monkeypatch.setenv(config.CACHE_ENV, str(tmp_path))
    profile = config.get_profile("ci")
    seen = {}
    real = artifacts.review_windows

    def spy(texts, vocab, batch_size, block_size, seed):
        seen[seed] = list(texts)
        return real(texts, vocab, batch_size, block_size, seed)

    monkeypatch.setattr(artifacts, "review_windows", spy)
    model, vocab, info = artifacts.review_lm(profile, progress=False)
    fit, val, test = artifacts.sentiment_splits(profile, vocab)
    read_in_training = {_normal(t) for t in seen[0]}
    assert read_in_training == {_normal(t) for t in fit.text}
    assert not read_in_training & {_normal(t) for t in test.review}
    assert not read_in_training & {_normal(t) for t in val.review}
    assert {_normal(t) for t in seen[1]} == {_normal(t) for t in val.text}    # validation reviews
    assert info["after"]["reviews"] < info["before"]["reviews"]              # it learned reviews
    assert artifacts.review_path(profile).is_file()
    again = artifacts.review_lm(profile, progress=False)                    # cached: no retraining
    assert again[2]["best_step"] == info["best_step"]
