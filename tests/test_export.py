"""course_utils.export: the model files the site's pages run, and book/_static/gpt.js itself.

The JavaScript checks run the page's own gpt.js in Node.js (skipped when `node` is not
installed); e2e/test_browser_model.py runs it in a real browser.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from conftest import tiny_gpt, tiny_lm

from course_utils import export, interpret, preference, sampling
from course_utils.cli import export as cli_export
from course_utils.finetune import GPTClassifier, apply_lora, merge_lora
from course_utils.quantize import quantize_model
from course_utils.vocab import Vocab

pytestmark = pytest.mark.usefixtures("one_thread")
REPO = Path(__file__).resolve().parent.parent
GPT_JS = REPO / "book" / "_static" / "gpt.js"
SITE_MODELS = REPO / "book" / "_static" / "models"   # written by tools/browser_models.py
NODE = shutil.which("node")


@pytest.fixture
def lm():
    return tiny_lm(block_size=16, scale=8.0)


@pytest.mark.parametrize("precision", export.PRECISIONS)
def test_round_trip_gives_the_weights_the_page_uses(lm, tmp_path, precision):
    model, vocab = lm
    path = export.to_browser(model, vocab, tmp_path / "m.js", name="tiny", meta={"title": "t"},
                             precision=precision)
    loaded, loaded_vocab, meta = export.load_browser(path)
    assert loaded_vocab == vocab and meta["precision"] == precision and meta["title"] == "t"
    expected = export.browser_model(model, precision).state_dict()
    for name, value in loaded.state_dict().items():
        assert torch.equal(value, expected[name]), name
    if precision == "float32":
        for name, value in model.state_dict().items():
            assert torch.equal(loaded.state_dict()[name], value), name
    assert loaded.lm_head.weight is loaded.tok_emb.weight
    assert [p.name for p in tmp_path.iterdir()] == ["m.js"]       # no temporary file left


def test_int8_is_chapter_09s_format(lm):
    """The page's int8 weights are exactly quantize_model's (per-row scales, tied table once)."""
    model, _ = lm
    page = export.browser_model(model, "int8").state_dict()
    q = quantize_model(model)
    assert torch.equal(page["tok_emb.weight"], q.lm_head.dequantized_weight())
    assert torch.equal(page["blocks.0.attn.qkv.weight"], q.blocks[0].attn.qkv.dequantized_weight())
    assert torch.equal(page["pos_emb.weight"], model.pos_emb.weight)           # kept float32


def test_file_is_a_plain_script(lm, tmp_path):
    model, vocab = lm
    text = export.to_browser(model, vocab, tmp_path / "m.js", name="tiny").read_text()
    first, second = text.splitlines()
    assert first.startswith("/*") and first.endswith("*/")
    assert second.startswith('(window.GPT_MODELS = window.GPT_MODELS || {})["tiny"] = {')
    assert text.isascii()                                      # \u escapes: any page encoding reads it


def test_refusals_say_what_to_do(lm, tmp_path):
    model, vocab = lm
    with pytest.raises(export.ExportError, match="name must be"):
        export.to_browser(model, vocab, tmp_path / "m.js", name="Bad Name")
    with pytest.raises(export.ExportError, match="export the vocabulary the model was trained with"):
        export.to_browser(model, Vocab.build(["abc"]), tmp_path / "m.js", name="tiny")
    with pytest.raises(export.ExportError, match="precision must be"):
        export.browser_tensors(model, "int4")
    with pytest.raises(export.ExportError, match="expected a course_utils.model.GPT"):
        export.browser_tensors(torch.nn.Linear(2, 2))
    lora = tiny_gpt(len(vocab), 16)
    apply_lora(lora, rank=2)
    with pytest.raises(export.ExportError, match=r"merge_lora\(model\)"):
        export.browser_tensors(lora)
    assert not list(tmp_path.iterdir())


def test_merged_lora_exports_as_the_plain_gpt_it_computes(lm):
    model, vocab = lm
    with torch.no_grad():
        lora = tiny_gpt(len(vocab), 16)
        apply_lora(lora, rank=2)
        for m in lora.modules():
            if hasattr(m, "lora_b"):
                m.lora_b.normal_()
        x = torch.tensor([vocab.encode("你好吗")])
        before = lora(x)[0]
        merge_lora(lora)
        exported = export.browser_model(lora, "float32")
        assert torch.allclose(exported(x)[0], before, atol=1e-5)


def test_damaged_or_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="make browser-models"):
        export.load_browser(tmp_path / "none.js")
    bad = tmp_path / "bad.js"
    bad.write_text("/* x */\nconsole.log(1);\n")
    with pytest.raises(export.ExportError, match="not a model file"):
        export.load_browser(bad)
    bad.write_text('/* x */\n(window.GPT_MODELS = window.GPT_MODELS || {})["x"] = {"a": ;\n')
    with pytest.raises(export.ExportError, match="damaged"):
        export.load_browser(bad)


# ---------------------------------------------------------------------------- a classifier (chapter 14's reward)


def random_classifier(model, seed=0, **kw):
    """A GPTClassifier on `model` whose head gives confident, varied probabilities."""
    clf = GPTClassifier(model, 2, dropout=0.0, **kw)
    with torch.no_grad():
        clf.head.weight.normal_(0, 0.5, generator=torch.Generator().manual_seed(seed))
        clf.head.bias.copy_(torch.tensor([0.3, -0.2]))
    return clf.eval()


def classifier_rows(vocab, block_size):
    texts = ["今天天气很好。", "你好吗？我很好", "好", "今天很好你好吗今天天气很好。你好吗"]
    rows = [vocab.encode(t)[:block_size] for t in texts]
    width = max(map(len, rows))
    return torch.tensor([r + [0] * (width - len(r)) for r in rows])   # <pad> after the text


@pytest.mark.parametrize("precision", ["float32", "int8"])
def test_classifier_head_round_trips(lm, tmp_path, precision):
    """head_meta + browser_classifier: the page's classifier is the original one (float32), or
    its int8-rounded backbone under the same head (int8)."""
    model, vocab = lm
    clf = random_classifier(model)
    head = export.head_meta(clf)
    assert head["pooling"] == "last" and head["labels"] == ["negative", "positive"]
    assert json.loads(json.dumps(head)) == head                   # plain numbers, for the file's meta
    path = export.to_browser(model, vocab, tmp_path / "judge.js", name="judge",
                             meta={"title": "a judge", "classifier": head}, precision=precision)
    back, back_vocab, meta = export.browser_classifier(path)
    assert back_vocab == vocab and meta["title"] == "a judge" and meta["precision"] == precision
    assert torch.equal(back.head.weight, clf.head.weight) and torch.equal(back.head.bias, clf.head.bias)
    x = classifier_rows(vocab, model.config.block_size)
    with torch.no_grad():
        before, after = (torch.softmax(c(x)[0], -1) for c in (clf, back))
    diff = float((after - before).abs().max())
    assert float(before.max() - before.min()) > 0.1                # not a flat 0.5 everywhere
    if precision == "float32":
        assert diff < 1e-6, diff
    else:
        assert 0 < diff < 0.05, diff                                 # int8 weights: close, not equal
        with torch.no_grad():
            page = torch.softmax(export.browser_model(model, "int8").hidden_states(x)
                                 [torch.arange(len(x)), (x != 0).sum(1) - 1] @ clf.head.weight.T
                                 + clf.head.bias, -1)
        assert float((after - page).abs().max()) < 1e-6             # exactly the page's weights
    reward = preference.classifier_reward(back, x, vocab)
    assert torch.allclose(reward, after[:, 1], atol=1e-6)


def test_classifier_refusals(lm, tmp_path):
    model, vocab = lm
    with pytest.raises(export.ExportError, match="pooling='last'"):
        export.head_meta(random_classifier(model, pooling="mean"))
    with pytest.raises(export.ExportError, match="pooling='last'"):
        export.head_meta(random_classifier(model, mask_padding=False))
    path = export.to_browser(model, vocab, tmp_path / "lm.js", name="lm")
    with pytest.raises(export.ExportError, match="not a classifier"):
        export.browser_classifier(path)


# ---------------------------------------------------------------------------- gpt.js in Node.js

NODE_SCRIPT = """
globalThis.window = globalThis;
require(process.argv[2]);
require(process.argv[3]);
const G = globalThis.GPTBook, job = require(process.argv[4]);
const m = G.model("tiny"), out = {logits: m.forward(job.ids).map(r => Array.from(r))};
out.probs = job.settings.map(s => Array.from(G.nextTokenProbs(Float32Array.from(job.last), s)));
out.greedy = G.generate(m, job.ids, job.n, {temperature: 0});
out.context = [[5, 0, 4], [9, 0, 4], [12, 4, 8], [3, 0, 1]].map(([l, s, b]) => G.contextStart(l, s, b));
out.erf = [-4, -2.5, -0.3, 0, 0.7, 3, 5.5].map(G.erf);
out.fullwidth = m.vocab.toFullwidth("你好?,");
out.encode = m.vocab.encode("你<sep>好☃");
try { G.encodePrompt(m.vocab, "  "); } catch (e) { out.empty = e.message; }
try { G.encodePrompt(m.vocab, "☃"); } catch (e) { out.unknown = e.message; }
process.stdout.write(JSON.stringify(out));
"""


def run_node(tmp_path, model, vocab, ids, n, settings, last):
    path = export.to_browser(model, vocab, tmp_path / "tiny.js", name="tiny")
    (tmp_path / "job.json").write_text(json.dumps({"ids": ids, "n": n, "settings": settings, "last": last}))
    (tmp_path / "run.js").write_text(NODE_SCRIPT)
    done = subprocess.run([NODE, str(tmp_path / "run.js"), str(GPT_JS), str(path), str(tmp_path / "job.json")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.skipif(NODE is None, reason="Node.js is not installed (the e2e checks run gpt.js in Chromium)")
def test_gpt_js_computes_what_pytorch_computes(lm, tmp_path):
    model, vocab = lm
    page_model = export.browser_model(model, "int8")
    ids = vocab.encode("今天天气很好。你好吗？我很好")
    with torch.no_grad():
        logits = page_model(torch.tensor([ids]))[0][0]
    settings = [dict(temperature=1.0), dict(temperature=0.7, top_k=5, top_p=0.9),
                dict(temperature=1.5, top_p=0.5), dict(temperature=0)]
    js = [{"temperature": s["temperature"], "topK": s.get("top_k"), "topP": s.get("top_p")} for s in settings]
    out = run_node(tmp_path, model, vocab, ids, 40, js, logits[-1].tolist())

    assert float((torch.tensor(out["logits"]) - logits).abs().max()) < 1e-5
    for s, page_p in zip(settings, out["probs"], strict=True):
        torch_p = sampling.next_token_probs(logits[-1], **s).double()
        page_p = torch.tensor(page_p)
        assert torch.equal(page_p > 0, torch_p > 0), s
        assert float((page_p - torch_p).abs().max()) < 1e-6, s
    greedy = sampling.generate(page_model, torch.tensor([ids]), 40, temperature=0)[0, len(ids):]
    assert out["greedy"] == greedy.tolist()                    # 14 + 40 > block_size 16: slides
    assert out["context"] == [sampling.context_start(*args) for args in
                              [(5, 0, 4), (9, 0, 4), (12, 4, 8), (3, 0, 1)]]
    assert out["erf"] == pytest.approx([float(torch.erf(torch.tensor(x, dtype=torch.float64)))
                                        for x in [-4, -2.5, -0.3, 0, 0.7, 3, 5.5]], abs=1e-14)
    from course_utils.data import to_fullwidth
    assert out["fullwidth"] == to_fullwidth("你好?,", vocab)
    assert out["encode"] == vocab.encode("你<sep>好☃")
    assert "the prompt is empty" in out["empty"] and "is in the vocabulary" in out["unknown"]


CLASSIFY_SCRIPT = """
globalThis.window = globalThis;
require(process.argv[2]);
require(process.argv[3]);
require(process.argv[4]);
const G = globalThis.GPTBook, rows = require(process.argv[5]), m = G.model("judge");
const out = {probs: rows.map(ids => G.classify(m, ids)), features: rows.map(ids => Array.from(m.features(ids)))};
for (const [key, f] of [["lm", () => G.classify(G.model("lm"), rows[0])], ["long", () => G.classify(m, Array(99).fill(3))]]) {
  try { f(); } catch (e) { out[key] = e.message; }
}
process.stdout.write(JSON.stringify(out));
"""


@pytest.mark.skipif(NODE is None, reason="Node.js is not installed (the e2e checks run gpt.js in Chromium)")
def test_gpt_js_classifies_as_pytorch_does(lm, tmp_path):
    """GPTBook.classify and GPT.features against browser_classifier, rows of every length."""
    model, vocab = lm
    path = export.to_browser(model, vocab, tmp_path / "judge.js", name="judge",
                             meta={"classifier": export.head_meta(random_classifier(model))})
    plain = export.to_browser(model, vocab, tmp_path / "lm.js", name="lm")
    clf = export.browser_classifier(path)[0]
    x = classifier_rows(vocab, model.config.block_size)
    rows = [[i for i in r if i != 0] for r in x.tolist()]
    (tmp_path / "rows.json").write_text(json.dumps(rows))
    (tmp_path / "run.js").write_text(CLASSIFY_SCRIPT)
    done = subprocess.run([NODE, str(tmp_path / "run.js"), str(GPT_JS), str(path), str(plain),
                           str(tmp_path / "rows.json")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    with torch.no_grad():
        features, probs = clf.features(x), torch.softmax(clf(x)[0], -1)
    assert float((torch.tensor(out["features"]) - features).abs().max()) < 1e-5
    assert float((torch.tensor(out["probs"], dtype=torch.float64) - probs.double()).abs().max()) < 1e-6
    assert "not a classifier" in out["lm"] and "exceed block_size" in out["long"]


INSIDE_SCRIPT = """
globalThis.window = globalThis;
require(process.argv[2]);
require(process.argv[3]);
const G = globalThis.GPTBook, rows = require(process.argv[4]), m = G.model("deep");
const out = {maps: rows.map(ids => G.attentionMaps(m, ids).map(l => l.map(h => h.map(r => Array.from(r))))),
             lens: rows.map(ids => G.lens(m, ids, 3)),
             last: rows.map(ids => Array.from(G.softmax(m.forward(ids, true)[ids.length - 1]))),
             ids: ["  ", "☃☃", "你好".repeat(9), "你好?"].map(t => {
               try { return G.checkText(m.vocab, m.vocab.toFullwidth(t), m.config.block_size); }
               catch (e) { return e.message; } })};
for (const [key, f] of [["empty", () => G.lens(m, [], 3)], ["long", () => G.attentionMaps(m, Array(17).fill(3))],
                        ["k", () => G.lens(m, [3], 0)]]) {
  try { f(); } catch (e) { out[key] = e.message; }
}
const g = G.generate(m, rows[0], 5, {temperature: 0});     // recording off again: generation as before
out.after = {recording: m.recording, greedy: g};
process.stdout.write(JSON.stringify(out));
"""


@pytest.mark.skipif(NODE is None, reason="Node.js is not installed (the e2e checks run gpt.js in Chromium)")
def test_gpt_js_looks_inside_as_pytorch_does(lm, tmp_path):
    """GPTBook.attentionMaps, lens and checkText against course_utils.interpret (two layers)."""
    from course_utils.data import to_fullwidth

    _, vocab = lm
    deep = tiny_gpt(len(vocab), 16, d_model=16, n_heads=2, n_layers=2, d_ff=32, scale=8.0)
    path = export.to_browser(deep, vocab, tmp_path / "deep.js", name="deep")
    model = export.load_browser(path)[0]                          # the weights the page reads
    rows = [vocab.encode(t) for t in ["今天天气很好。", "好", "你好吗？我很好！人民日报记者报道"]]
    assert len(rows[-1]) == model.config.block_size
    (tmp_path / "rows.json").write_text(json.dumps(rows))
    (tmp_path / "run.js").write_text(INSIDE_SCRIPT)
    done = subprocess.run([NODE, str(tmp_path / "run.js"), str(GPT_JS), str(path), str(tmp_path / "rows.json")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    for ids, maps, lens, last in zip(rows, out["maps"], out["lens"], out["last"], strict=True):
        torch_maps = interpret.attention_maps(model, ids)
        assert float((torch.tensor(maps) - torch_maps).abs().max()) < 1e-6
        probs, tokens = interpret.next_token_lens(model, ids, 3)
        assert [r["ids"] for r in lens] == tokens.tolist()
        assert float((torch.tensor([r["probs"] for r in lens]) - probs.double()).abs().max()) < 1e-6
        assert lens[-1]["probs"] == pytest.approx(sorted(last, reverse=True)[:3], abs=1e-12)  # the model's own
    for text, got in zip(["  ", "☃☃", "你好" * 9, "你好?"], out["ids"], strict=True):
        try:
            expected = interpret.check_text(vocab, to_fullwidth(text, vocab), model.config.block_size)
        except ValueError as err:
            expected = str(err)
        assert got == expected
    assert "give at least one token" in out["empty"] and "exceed block_size" in out["long"]
    assert "k must be a whole number" in out["k"]
    greedy = sampling.generate(model, torch.tensor([rows[0]]), 5, temperature=0)[0, len(rows[0]):]
    assert out["after"] == {"recording": None, "greedy": greedy.tolist()}


# ---------------------------------------------------------------------------- the committed files


def _printed(notebook: str, pattern: str) -> re.Match:
    """The first stored output line of `notebook` that matches `pattern`."""
    cells = json.loads((REPO / "nbs" / notebook).read_text(encoding="utf-8"))["cells"]
    for cell in cells:
        for out in cell.get("outputs", []):
            for line in "".join(out.get("text", "")).splitlines():
                m = re.search(pattern, line)
                if m:
                    return m
    pytest.fail(f"{notebook} has no stored output matching {pattern!r}")


def test_site_news_model_is_chapter_08s():
    """Chapter 08 printed 60 characters of the greedy continuation of 中国人民 under `cpu`;
    the news model the site ships continues it the same way."""
    model, vocab, meta = export.load_browser(SITE_MODELS / "news.js")
    assert meta["profile"] == "cpu"
    printed = _printed("08_sampling.ipynb", r"^penalty 1\.0: .*\| (.*)$").group(1)
    prompt = "中国人民"
    out = sampling.generate(model, torch.tensor([vocab.encode(prompt)]), 80, temperature=0)
    text = prompt + vocab.decode(out[0, len(prompt):].tolist(), skip_special=True)
    assert text[:len(printed)] == printed


def test_site_dialogue_model_is_chapter_11s():
    """Chapter 11's terminal chat replied greedily to 你好 and 你是谁? under `cpu`; the dialogue
    model the site ships gives the same replies."""
    from course_utils.chat import Conversation

    model, vocab, meta = export.load_browser(SITE_MODELS / "dialogue.js")
    assert meta["profile"] == "cpu"
    cells = json.loads((REPO / "nbs" / "11_finetune_dialogue.ipynb").read_text(encoding="utf-8"))["cells"]
    printed = next("".join(o.get("text", "")) for c in cells if "course_utils.chat" in "".join(c["source"])
                   and "subprocess" in "".join(c["source"]) for o in c.get("outputs", []) if "机>" in "".join(o.get("text", "")))
    replies = re.findall(r"机> (.*)", printed)
    # the chapter's reply budget, which its chat box on the site uses too (the chapter asserts so)
    budget = int(re.search(r'class="gpt-chat"[^>]*data-max-new-tokens="(\d+)"',
                           "".join("".join(c["source"]) for c in cells)).group(1))
    conv = Conversation(model, vocab, max_new_tokens=budget, temperature=0)
    assert [conv.say(m) for m in ["你好", "你是谁?"]] == replies


# ---------------------------------------------------------------------------- Hugging Face, ONNX

transformers = pytest.importorskip("transformers")


def ci_gpt(block_size=None, bias=True, seed=0):
    """A random GPT of the `ci` profile's shape, weights scaled so its distributions are peaked."""
    from course_utils.config import get_profile
    from course_utils.model import GPT, GPTConfig

    kw = get_profile("ci").model_kwargs()
    if block_size:
        kw["block_size"] = block_size
    torch.manual_seed(seed)
    model = GPT(GPTConfig(vocab_size=60, **dict(kw, dropout=0.0), bias=bias))
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(6.0 if p.dim() >= 2 else 1.0)
            if p.dim() == 1 and bias:
                p.add_(0.1 * torch.randn_like(p))
    return model.eval()


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    model = ci_gpt()
    vocab = Vocab({**{t: i for i, t in enumerate(("<pad>", "<unk>", "<sep>"))},
                   **{chr(0x4E00 + i): 3 + i for i in range(57)}})
    return model, vocab, export.to_huggingface(model, vocab, tmp_path_factory.mktemp("hf") / "gpt")


def test_huggingface_logits_equal_the_books(hf_dir):
    from transformers import AutoModelForCausalLM

    model, vocab, path = hf_dir
    assert {p.name for p in path.iterdir()} >= {"config.json", "model.safetensors", "tokenizer.json"}
    hf = AutoModelForCausalLM.from_pretrained(path).eval()
    assert type(hf).__name__ == "GPT2LMHeadModel" and hf.config.activation_function == "gelu"
    x = torch.randint(0, 60, (3, model.config.block_size), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        diff = float((hf(x).logits - model(x)[0]).abs().max())
    assert diff < 1e-5, diff


def test_huggingface_tokenizer_reads_text_as_the_vocab_does(hf_dir):
    from transformers import AutoTokenizer

    _, vocab, path = hf_dir
    tok = AutoTokenizer.from_pretrained(path)
    text = "一丁<sep>七万x 丈\n三"
    assert tok(text)["input_ids"] == vocab.encode(text)
    assert tok.decode(vocab.encode("一丁<sep>七")) == "一丁<sep>七"
    assert tok.get_vocab() == vocab.token2idx


def test_greedy_text_is_identical_through_transformers():
    model = ci_gpt(block_size=64, seed=3)
    hf = export.to_gpt2(model)
    prompt = torch.tensor([[5, 9, 17, 4]])
    ours = sampling.generate(model, prompt, 50, temperature=0, stop_tokens=[2])  # <sep> is GPT-2's eos
    theirs = hf.generate(prompt, max_new_tokens=50, do_sample=False, pad_token_id=0,
                         attention_mask=torch.ones_like(prompt))
    assert ours.tolist() == theirs.tolist()


def test_round_trip_gives_identical_state(hf_dir):
    model, vocab, path = hf_dir
    back, back_vocab = export.from_huggingface(path)
    assert back_vocab == vocab and back.config == model.config
    for name, value in model.state_dict().items():
        assert torch.equal(back.state_dict()[name], value), name


def test_bias_free_model_gets_zero_biases():
    model = ci_gpt(bias=False)
    hf = export.to_gpt2(model)
    assert float(hf.transformer.h[0].attn.c_attn.bias.detach().abs().max()) == 0
    x = torch.randint(0, 60, (2, 10), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert float((hf(x).logits - model(x)[0]).abs().max()) < 1e-5


def test_lora_is_refused_until_merged():
    model = ci_gpt()
    apply_lora(model, rank=2)
    with pytest.raises(export.ExportError, match=r"not merged.*merge_lora\(model\)"):
        export.to_gpt2(model)
    merge_lora(model)
    export.to_gpt2(model)                      # merged: accepted


def test_other_gpt2s_are_refused(hf_dir, tmp_path):
    import json as _json
    import shutil as _shutil

    _, _, path = hf_dir
    other = tmp_path / "gelu_new"
    _shutil.copytree(path, other)
    config = _json.loads((other / "config.json").read_text())
    config["activation_function"] = "gelu_new"
    (other / "config.json").write_text(_json.dumps(config))
    with pytest.raises(export.ExportError, match="activation_function='gelu_new'"):
        export.from_huggingface(other)
    with pytest.raises(FileNotFoundError, match="not a Hugging Face checkpoint"):
        export.from_huggingface(tmp_path / "nothing")


def test_onnx_runtime_logits_equal_the_books(tmp_path):
    pytest.importorskip("onnxruntime")
    model = ci_gpt()
    path = export.to_onnx(model, tmp_path / "gpt.onnx", quantize=True)
    session = export.onnx_session(path, threads=1)
    for shape in [(1, 1), (2, 7), (3, model.config.block_size)]:    # dynamic batch and length
        x = torch.randint(0, 60, shape, generator=torch.Generator().manual_seed(sum(shape)))
        (logits,) = session.run(None, {"idx": x.numpy()})
        with torch.no_grad():
            assert float((torch.from_numpy(logits) - model(x)[0]).abs().max()) < 1e-5, shape
    int8 = export.onnx_session(path.with_suffix(".int8.onnx"), threads=1)
    (q,) = int8.run(None, {"idx": x.numpy()})
    assert q.shape == logits.shape and path.with_suffix(".int8.onnx").stat().st_size < path.stat().st_size
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gpt.int8.onnx", "gpt.onnx"]


def test_command_line_exports_and_reports_errors(tmp_path, monkeypatch, capsys):
    from course_utils import config

    monkeypatch.setenv(config.CACHE_ENV, str(tmp_path / "cache"))
    assert cli_export.main(["huggingface", "--profile", "ci", "--out", str(tmp_path / "hf")]) == 0
    assert (tmp_path / "hf" / "model.safetensors").is_file()
    back, _ = export.from_huggingface(tmp_path / "hf")
    assert back.config.d_model == config.get_profile("ci").d_model
    assert cli_export.main(["onnx", "--profile", "ci", "--out", str(tmp_path / "m.onnx")]) == 0
    assert (tmp_path / "m.onnx").is_file() and "wrote" in capsys.readouterr().out
    assert cli_export.main(["onnx", "--profile", "ci", "--out", str(tmp_path / "no" / "such" / "dir" / "m.onnx"),
                        "--model", "news"]) == 0                       # folders are created
    with pytest.raises(SystemExit):
        cli_export.main(["onnx"])                                          # --out is required
    assert "--out" in capsys.readouterr().err
