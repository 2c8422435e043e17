"""The model leaves PyTorch: files the book's web pages run (`book/_static/gpt.js` reads them).

A browser model file is a plain `<script>` (pages opened from disk cannot `fetch`) that
registers `GPT_MODELS[name] = {config, vocab, meta, tensors}`. Matrices are stored in
chapter 09's weight-only int8 format (int8 codes, one float32 scale per row); LayerNorms,
biases and the position table stay float32. `browser_model` is the PyTorch GPT holding
exactly the weights a page computes with, so the two can be compared number for number.

Also the bridges of chapter 13: `to_huggingface`/`from_huggingface` (a `transformers` GPT-2 and
back, exactly) and `to_onnx` (ONNX Runtime, with an int8 copy).

Command line: `python -m course_utils.export` (course_utils/cli/export.py); the site's own
models are written by `make browser-models` (tools/browser_models.py).
"""

from __future__ import annotations

import base64
import json
import logging
import re
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from .files import atomic_path, atomic_write_text
from .finetune import GPTClassifier, LoRALinear
from .model import GPT, GPTConfig
from .quantize import quantize_symmetric
from .sampling import context_start
from .vocab import PAD, PAD_TOKEN, SEP, SEP_TOKEN, SPECIALS, UNK_TOKEN, Vocab

BROWSER_FORMAT = "gpt-book/1"
PRECISIONS = ("int8", "float16", "float32")
_TIED = "lm_head.weight"  # the head reads tok_emb.weight: stored once
_HEADER = re.compile(r"^\(window\.GPT_MODELS = window\.GPT_MODELS \|\| \{\}\)\[(\"[a-z0-9_-]+\")\] = ")


class ExportError(ValueError):
    """A model that cannot be exported, or a file that is not an exported model."""


def _b64(array: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(array).tobytes()).decode("ascii")


def plain_state(model: GPT) -> dict[str, torch.Tensor]:
    """The weights under the names of `model.py`, the tied head stored once (as `tok_emb`).

    A GPT whose LoRA adapters are merged (`course_utils.finetune.merge_lora`) is read as the
    plain GPT it computes; unmerged adapters, extra heads or missing weights are refused.
    """
    if not isinstance(model, GPT):
        raise ExportError(f"expected a course_utils.model.GPT, got {type(model).__name__} "
                          "(for a classifier, export its .backbone)")
    lora = [name for name, m in model.named_modules() if isinstance(m, LoRALinear)]
    unmerged = [name for name in lora if not model.get_submodule(name).merged]
    if unmerged:
        raise ExportError(f"{len(unmerged)} LoRA adapters are not merged ({unmerged[0]}, ...): "
                          "merge them into the weights first with "
                          "course_utils.finetune.merge_lora(model)")
    state = {k.replace(".base.", "."): v for k, v in model.state_dict().items() if ".lora_" not in k}
    with torch.device("meta"):
        expected = set(GPT(model.config).state_dict())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise ExportError(f"the model's weights do not match a plain GPT (missing {missing[:3]}, "
                          f"unexpected {unexpected[:3]})")
    if model.lm_head.weight is not model.tok_emb.weight:
        raise ExportError("the head is not tied to the token embedding, as model.py ties it")
    return {k: v for k, v in state.items() if k != _TIED}


def browser_tensors(model: GPT, precision: str = "int8") -> dict[str, dict]:
    """What a model file stores: per tensor its shape, dtype and the arrays (int8 codes and
    per-row scales for matrices, float32 for the rest)."""
    if precision not in PRECISIONS:
        raise ExportError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    out = {}
    for name, t in plain_state(model).items():
        t = t.detach().float().cpu()
        if precision == "int8" and t.dim() == 2 and name != "pos_emb.weight":
            q, scale = quantize_symmetric(t, axis=0)            # one scale per row
            out[name] = {"shape": list(t.shape), "dtype": "int8", "q": q.numpy(),
                         "scale": scale.flatten().numpy().astype("<f4")}
        elif precision == "float16" and t.dim() == 2:
            out[name] = {"shape": list(t.shape), "dtype": "float16", "data": t.half().numpy().astype("<f2")}
        else:
            out[name] = {"shape": list(t.shape), "dtype": "float32", "data": t.numpy().astype("<f4")}
    return out


def _weights_of(tensors: dict[str, dict]) -> dict[str, torch.Tensor]:
    """float32 weights from stored tensors: q * scale in float32, exactly as gpt.js computes."""
    state = {}
    for name, entry in tensors.items():
        if entry["dtype"] == "int8":
            q = torch.from_numpy(np.array(entry["q"], dtype=np.int8).reshape(entry["shape"]))
            scale = torch.from_numpy(np.array(entry["scale"], dtype=np.float32))
            state[name] = q.float() * scale[:, None]
        elif entry["dtype"] == "float16":
            state[name] = torch.from_numpy(np.array(entry["data"], dtype=np.float16)
                                           ).reshape(entry["shape"]).float()
        else:
            state[name] = torch.from_numpy(np.array(entry["data"], dtype=np.float32)
                                           ).reshape(entry["shape"]).clone()
    return state


def _model_from(config: dict, tensors: dict[str, dict]) -> GPT:
    model = GPT(GPTConfig(**config))
    state = _weights_of(tensors)
    state[_TIED] = state["tok_emb.weight"]
    model.load_state_dict(state)
    return model.eval()


def browser_model(model: GPT, precision: str = "int8") -> GPT:
    """A GPT holding exactly the weights the page computes with (int8 rounded, if so exported)."""
    return _model_from(model.config.to_dict(), browser_tensors(model, precision))


def browser_file_text(model: GPT, vocab: Vocab, *, name: str, meta: dict | None = None,
                      precision: str = "int8") -> str:
    """The text of a model file (what `to_browser` writes)."""
    if not re.fullmatch(r"[a-z0-9_-]+", name):
        raise ExportError(f"name must be lower-case letters, digits, '-' or '_', got {name!r}")
    if len(vocab) != model.config.vocab_size:
        raise ExportError(f"the vocabulary has {len(vocab)} tokens, the model {model.config.vocab_size}: "
                          "export the vocabulary the model was trained with")
    tensors = {}
    for key, entry in browser_tensors(model, precision).items():
        stored = {"shape": entry["shape"], "dtype": entry["dtype"]}
        if entry["dtype"] == "int8":
            stored.update(data=_b64(entry["q"]), scale=_b64(entry["scale"]))
        else:
            stored["data"] = _b64(entry["data"])
        tensors[key] = stored
    doc = {"format": BROWSER_FORMAT, "name": name, "config": model.config.to_dict(),
           "vocab": vocab.idx2token, "meta": dict(meta or {}, precision=precision), "tensors": tensors}
    body = json.dumps(doc, ensure_ascii=True, separators=(",", ":"))
    return (f"/* {name}: {(meta or {}).get('title', 'a GPT')}, exported by `python -m "
            f"course_utils.export` for book/_static/gpt.js. Generated: do not edit. */\n"
            f'(window.GPT_MODELS = window.GPT_MODELS || {{}})["{name}"] = {body};\n')


def to_browser(model: GPT, vocab: Vocab, path, *, name: str, meta: dict | None = None,
               precision: str = "int8") -> Path:
    """Write `model` and `vocab` as a model file for the book's pages (atomically); returns the path."""
    path = Path(path)
    atomic_write_text(path, browser_file_text(model, vocab, name=name, meta=meta, precision=precision))
    return path


def load_browser(path) -> tuple[GPT, Vocab, dict]:
    """(model with the page's weights, vocab, meta) from a model file written by `to_browser`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"browser model file {path} does not exist: write the site's "
                                "models with `make browser-models` (tools/browser_models.py)")
    lines = path.read_text(encoding="utf-8").splitlines()
    body = lines[1] if len(lines) >= 2 else ""
    match = _HEADER.match(body)
    if not match or not body.endswith(";"):
        raise ExportError(f"{path} is not a model file written by course_utils.export.to_browser")
    try:
        doc = json.loads(body[match.end():-1])
    except json.JSONDecodeError as err:
        raise ExportError(f"{path}: damaged model file ({err})") from None
    if doc.get("format") != BROWSER_FORMAT:
        raise ExportError(f"{path}: format {doc.get('format')!r}, expected {BROWSER_FORMAT!r}")
    tensors = {}
    for key, entry in doc["tensors"].items():
        raw = base64.b64decode(entry["data"])
        if entry["dtype"] == "int8":
            tensors[key] = dict(entry, q=np.frombuffer(raw, dtype=np.int8),
                                scale=np.frombuffer(base64.b64decode(entry["scale"]), dtype="<f4"))
        elif entry["dtype"] == "float16":
            tensors[key] = dict(entry, data=np.frombuffer(raw, dtype="<f2"))
        else:
            tensors[key] = dict(entry, data=np.frombuffer(raw, dtype="<f4"))
    vocab = Vocab({tok: i for i, tok in enumerate(doc["vocab"])})
    return _model_from(doc["config"], tensors), vocab, doc["meta"]


def head_meta(classifier: GPTClassifier) -> dict:
    """What a model file keeps of a classifier's head, as plain float32 numbers in its `meta`
    (the backbone is the file's GPT): chapter 14's reward model on the page."""
    if classifier.pooling != "last" or not classifier.mask_padding:
        raise ExportError("the page pools the last real token only: export a classifier with pooling='last'")
    return {"pooling": "last", "labels": ["negative", "positive"],
            "weight": classifier.head.weight.detach().float().tolist(),
            "bias": classifier.head.bias.detach().float().tolist()}


def browser_classifier(path) -> tuple[GPTClassifier, Vocab, dict]:
    """(classifier with the page's weights, vocab, meta) from a model file whose meta has a
    `classifier` head (written with `head_meta`)."""
    model, vocab, meta = load_browser(path)
    if "classifier" not in meta:
        raise ExportError(f"{path} holds a language model, not a classifier (no head in its meta)")
    head = meta["classifier"]
    clf = GPTClassifier(model, len(head["bias"]), pooling=head["pooling"])
    with torch.no_grad():
        clf.head.weight.copy_(torch.tensor(head["weight"]))
        clf.head.bias.copy_(torch.tensor(head["bias"]))
    return clf.eval(), vocab, meta


# ---------------------------------------------------------------------------- Hugging Face


class _quiet:
    """Silence the progress bars and advice the exporting libraries print (restored after)."""

    LOGGERS = ("torch.onnx", "torch._dynamo", "torch.export", "onnxscript", "")

    def __enter__(self):
        # heavy: seconds to import, only to export
        from transformers.utils import logging as hf_logging

        self.levels = {name: logging.getLogger(name).level for name in self.LOGGERS}
        for name in self.LOGGERS:
            logging.getLogger(name).setLevel(logging.ERROR)
        self.hf_logging = hf_logging
        self.hf = (hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled())
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        return self

    def __exit__(self, *exc):
        for name, level in self.levels.items():
            logging.getLogger(name).setLevel(level)
        self.hf_logging.set_verbosity(self.hf[0])
        if self.hf[1]:
            self.hf_logging.enable_progress_bar()
        return False


# The book's GPT is GPT-2 in all but size: the same pre-LayerNorm blocks, one fused q|k|v
# projection, learned positions, a tied head. GPT-2's `Conv1D` stores a weight as
# (in_features, out_features), the transpose of nn.Linear's (out_features, in_features).
_HF_BLOCK = {  # ours (after "blocks.i.") -> GPT-2's (after "transformer.h.i."), transposed?
    "ln1.weight": ("ln_1.weight", False), "ln1.bias": ("ln_1.bias", False),
    "attn.qkv.weight": ("attn.c_attn.weight", True), "attn.qkv.bias": ("attn.c_attn.bias", False),
    "attn.proj.weight": ("attn.c_proj.weight", True), "attn.proj.bias": ("attn.c_proj.bias", False),
    "ln2.weight": ("ln_2.weight", False), "ln2.bias": ("ln_2.bias", False),
    "mlp.fc.weight": ("mlp.c_fc.weight", True), "mlp.fc.bias": ("mlp.c_fc.bias", False),
    "mlp.proj.weight": ("mlp.c_proj.weight", True), "mlp.proj.bias": ("mlp.c_proj.bias", False),
}
_HF_TOP = {"tok_emb.weight": "transformer.wte.weight", "pos_emb.weight": "transformer.wpe.weight",
           "ln_f.weight": "transformer.ln_f.weight", "ln_f.bias": "transformer.ln_f.bias"}


def gpt2_name(name: str) -> tuple[str, bool]:
    """GPT-2's name for one of our weights, and whether GPT-2 stores it transposed."""
    if name in _HF_TOP:
        return _HF_TOP[name], False
    _, layer, rest = name.split(".", 2)                          # blocks.{i}.{rest}
    hf, transpose = _HF_BLOCK[rest]
    return f"transformer.h.{layer}.{hf}", transpose


def _with_biases(model: GPT, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """GPT-2 always has biases: a model built with bias=False gets zeros, which compute the same."""
    full = dict(state)
    for name, value in list(state.items()):
        if name.endswith(".weight") and name not in ("tok_emb.weight", "pos_emb.weight"):
            bias = name[: -len("weight")] + "bias"
            if bias not in full:                                   # one bias per output row
                full[bias] = torch.zeros(value.shape[0], dtype=value.dtype)
    return full


def gpt2_config(config: GPTConfig, vocab: Vocab | None = None):
    """The `transformers.GPT2Config` that computes what `config` does."""
    # heavy: seconds to import, only to export
    from transformers import GPT2Config

    return GPT2Config(
        vocab_size=config.vocab_size, n_positions=config.block_size, n_embd=config.d_model,
        n_layer=config.n_layers, n_head=config.n_heads, n_inner=config.d_ff,
        activation_function="gelu",          # exact erf GELU, as F.gelu; GPT-2's own is "gelu_new"
        resid_pdrop=config.dropout, embd_pdrop=config.dropout, attn_pdrop=config.dropout,
        layer_norm_epsilon=1e-5, tie_word_embeddings=True, scale_attn_weights=True,
        bos_token_id=SEP, eos_token_id=SEP, pad_token_id=PAD)


def char_tokenizer(vocab: Vocab):
    """A `transformers` fast tokenizer that reads text exactly as `vocab.encode` does: one token
    per character, `<pad>`/`<unk>`/`<sep>` as single tokens, unknown characters as `<unk>`."""
    # heavy: seconds to import, only to export
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(vocab=dict(vocab.token2idx), unk_token=UNK_TOKEN))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")  # every character
    tok.decoder = decoders.Fuse()                                 # join characters, no spaces
    tok.add_special_tokens(list(SPECIALS))
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token=UNK_TOKEN, pad_token=PAD_TOKEN,
                                   sep_token=SEP_TOKEN, eos_token=SEP_TOKEN, bos_token=SEP_TOKEN,
                                   clean_up_tokenization_spaces=False, model_max_length=10**9)


def to_gpt2(model: GPT):
    """A `transformers.GPT2LMHeadModel` holding `model`'s weights (in eval mode)."""
    # heavy: seconds to import, only to export
    from transformers import GPT2LMHeadModel

    state = _with_biases(model, plain_state(model))
    with _quiet():
        hf = GPT2LMHeadModel(gpt2_config(model.config))
    mapped = {}
    for name, value in state.items():
        hf_name, transpose = gpt2_name(name)
        mapped[hf_name] = (value.t() if transpose else value).detach().float().cpu().contiguous()
    mapped["lm_head.weight"] = mapped["transformer.wte.weight"]
    missing, unexpected = hf.load_state_dict(mapped, strict=False)
    missing = [k for k in missing if not k.endswith((".attn.bias", ".attn.masked_bias"))]
    if missing or unexpected:
        raise ExportError(f"GPT-2 weights not filled: missing {missing[:3]}, unexpected {unexpected[:3]}")
    hf.tie_weights()
    return hf.eval()


def to_huggingface(model: GPT, vocab: Vocab, out_dir) -> Path:
    """Write a `transformers` checkpoint of `model` (config.json + model.safetensors) and its
    character tokenizer to `out_dir`, loadable with `AutoModelForCausalLM.from_pretrained`
    and `AutoTokenizer.from_pretrained`, offline. The folder is written next to `out_dir` and
    renamed into place, so a failed export leaves no half-written checkpoint."""
    if len(vocab) != model.config.vocab_size:
        raise ExportError(f"the vocabulary has {len(vocab)} tokens, the model {model.config.vocab_size}: "
                          "export the vocabulary the model was trained with")
    hf, tokenizer = to_gpt2(model), char_tokenizer(vocab)
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}."))
    try:
        with _quiet():
            hf.save_pretrained(tmp, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def from_huggingface(path) -> tuple[GPT, Vocab]:
    """The book's GPT and Vocab from a folder written by `to_huggingface` (or any GPT-2
    checkpoint the book's GPT can express: exact GELU, LayerNorm epsilon 1e-5, a tied head)."""
    # heavy: seconds to import, only to read a Hugging Face checkpoint
    from transformers import AutoTokenizer, GPT2LMHeadModel

    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} has no config.json: not a Hugging Face checkpoint folder")
    with _quiet():
        hf = GPT2LMHeadModel.from_pretrained(path)
    c = hf.config
    problems = [f"{k}={getattr(c, k)!r} (the book's GPT needs {v!r})" for k, v in
                {"activation_function": "gelu", "layer_norm_epsilon": 1e-5,
                 "tie_word_embeddings": True}.items() if getattr(c, k) != v]
    if problems:
        raise ExportError(f"{path}: this GPT-2 cannot be expressed by the book's GPT: {'; '.join(problems)}")
    config = GPTConfig(vocab_size=c.vocab_size, block_size=c.n_positions, d_model=c.n_embd,
                       n_heads=c.n_head, n_layers=c.n_layer, d_ff=c.n_inner or 4 * c.n_embd,
                       dropout=c.resid_pdrop)
    model = GPT(config)
    hf_state = hf.state_dict()
    state = {}
    for name in plain_state(model):
        hf_name, transpose = gpt2_name(name)
        value = hf_state[hf_name]
        state[name] = value.t().contiguous() if transpose else value.clone()
    state[_TIED] = state["tok_emb.weight"]
    model.load_state_dict(state)
    with _quiet():
        vocab = Vocab(AutoTokenizer.from_pretrained(path).get_vocab())
    return model.eval(), vocab


# ---------------------------------------------------------------------------- ONNX


class _LogitsOnly(torch.nn.Module):
    """The forward pass ONNX sees: token ids (batch, time) in, logits (batch, time, vocab) out."""

    def __init__(self, model: GPT):
        super().__init__()
        self.model = model

    def forward(self, idx):
        return self.model(idx)[0]


def to_onnx(model: GPT, path, *, quantize: bool = False) -> Path:
    """Export the forward pass to ONNX (dynamic batch, length 1..block_size), check it with
    `onnx.checker`; with `quantize`, also write `<name>.int8.onnx` (ONNX Runtime's dynamic
    int8 quantizer) next to it. Returns the path of the fp32 model."""
    # heavy: only to export to ONNX
    import onnx

    exportable = browser_model(model, "float32")          # a plain GPT: merged LoRA, no extras
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    T = min(8, model.config.block_size)
    example = torch.zeros(2, T, dtype=torch.long)
    batch, time_ = torch.export.Dim("batch", min=1), torch.export.Dim("time", min=1, max=model.config.block_size)
    with atomic_path(path, suffix=".onnx") as tmp:
        with warnings.catch_warnings(), _quiet():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(_LogitsOnly(exportable).eval(), (example,), dynamo=True,
                                        input_names=["idx"], output_names=["logits"],
                                        dynamic_shapes={"idx": {0: batch, 1: time_}},
                                        external_data=False, verbose=False)
        program.save(tmp)
        onnx.checker.check_model(onnx.load(tmp), full_check=True)
    if quantize:
        quantize_onnx(path, path.with_suffix(".int8.onnx"))
    return path


def quantize_onnx(src, dst) -> Path:
    """ONNX Runtime's dynamic int8 quantization of an exported model (weights int8 per tensor,
    activations quantized on the fly), written atomically."""
    # heavy: only to quantize ONNX
    from onnxruntime.quantization import QuantType, quantize_dynamic

    dst = Path(dst)
    with atomic_path(dst, suffix=".onnx") as tmp, _quiet():
        quantize_dynamic(str(src), str(tmp), weight_type=QuantType.QInt8)
    return dst


def onnx_session(path, threads: int | None = None):
    """An ONNX Runtime inference session on the CPU (`threads` intra-op threads, None: its default)."""
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnx_logits(session):
    """A function (ids) -> logits of the last position, running an ONNX Runtime session."""
    def last_logits(ids: list[int]) -> np.ndarray:
        return session.run(None, {"idx": np.asarray([ids], dtype=np.int64)})[0][0, -1]
    return last_logits


def torch_logits(model: GPT):
    """A function (ids) -> logits of the last position, running `model` (the whole window)."""
    @torch.no_grad()
    def last_logits(ids: list[int]) -> np.ndarray:
        return model(torch.tensor([ids]))[0][0, -1].float().numpy()
    return last_logits


def greedy_decode(last_logits, ids: list[int], n: int, block_size: int) -> list[int]:
    """`n` greedy tokens after `ids` with any forward function (no KV cache: each step runs
    the whole window), sliding the window by half a block as `sampling.generate` does."""
    ids, start = list(ids), 0
    for _ in range(n):
        start = context_start(len(ids), start, block_size)
        ids.append(int(np.argmax(last_logits(ids[start:]))))
    return ids


if __name__ == "__main__":  # `python -m course_utils.export` runs the command line, kept apart
    import runpy

    runpy.run_module("course_utils.cli.export", run_name="__main__")
