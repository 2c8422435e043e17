# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: tags,-all
#     notebook_metadata_filter: kernelspec,jupytext,-jupytext.text_representation.jupytext_version
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 13 · The model leaves PyTorch: Hugging Face and ONNX
#
# Everything so far ran inside this book's own code. The models you will meet next live in
# two other worlds: Hugging Face `transformers`, where most pretrained language models are
# published and fine-tuned, and ONNX (Open Neural Network Exchange), the file format that
# ships a model to servers, phones and browsers without Python. This chapter moves our GPT
# into both and proves, number for number, that nothing changed on the way: the book's GPT
# *is* a GPT-2, smaller and with a character vocabulary.
#
# **Learning goals**
#
# - map every weight of `course_utils.model.GPT` to `transformers`' `GPT2LMHeadModel`,
#   including the transposed `Conv1D` layout, the tied head and the exact GELU;
# - give a character vocabulary a `transformers` tokenizer, and generate the same greedy text
#   with `model.generate` and `pipeline("text-generation")`;
# - export the forward pass to ONNX with dynamic shapes, run it with ONNX Runtime, quantize
#   it to int8, and measure size, speed and accuracy against PyTorch;
# - know what changes for a real GPT-2 (BPE, 1,024 positions, `gelu_new`).

# %%
from course_utils import config, plots, timing

plots.setup()                # CJK font for Chinese labels
profile = config.get_profile()
print(config.summary(profile))
print(timing.machine_line())   # section 7 times PyTorch against ONNX Runtime
config.seed_everything(0)

# %% [markdown]
# ## 1. The model, and where its files go
#
# The pretrained news GPT of chapter 05, from the cache (or trained now if it is missing).
# Everything this chapter writes goes to a folder in the git-ignored cache. Nothing is
# downloaded: `transformers` and ONNX Runtime only read the files we write.

# %%
import os

os.environ["HF_HUB_OFFLINE"] = "1"              # belt and braces: never ask the Hub for anything

import numpy as np
import pandas as pd
import torch
from transformers.utils import logging as hf_logging

from course_utils import artifacts, data, export, sampling
from course_utils.vocab import UNK

hf_logging.set_verbosity_error()                  # no progress bars or advice from transformers
hf_logging.disable_progress_bar()

model, vocab, info = artifacts.pretrained_lm(profile, device="cpu")
out_dir = config.cache_dir() / f"export_{profile.name}"
print(f"{model.num_parameters():,} parameters, block_size {model.config.block_size}, "
      f"vocabulary {len(vocab):,}; files go to {out_dir.relative_to(config.cache_dir().parent)}")

# %% [markdown]
# ## 2. The book's GPT is a GPT-2
#
# Put `course_utils/model.py` beside `transformers`' `modeling_gpt2.py` and the blocks line
# up: token and learned position embeddings, pre-LayerNorm blocks with one fused
# query|key|value projection, a two-layer MLP, a final LayerNorm, a head tied to the token
# embedding. Only the names differ, and one layout: GPT-2 was written with `Conv1D`
# layers, which store a weight as *(in_features, out_features)*, the transpose of
# `nn.Linear`'s *(out_features, in_features)*.
#
# ![Two columns of tensor names and shapes: our GPT's on the left, GPT2LMHeadModel's on the right, an arrow from each of ours to its GPT-2 twin; the four weight matrices of a block (qkv, attention proj, mlp fc, mlp proj) go through a red arrow marked .t() and have their shapes reversed on the GPT-2 side](../book/images/gpt2_map.png)
#
# *Every tensor of our GPT (embeddings, block 0, final LayerNorm) and the `GPT2LMHeadModel` tensor
# it becomes, as `export.gpt2_name` maps them; drawn by `book/images/make_gpt2_map.py` from a GPT
# of the `cpu` profile's shape.*
#
# The same map, computed from the model in memory:

# %%
hf = export.to_gpt2(model)
ours, theirs = model.state_dict(), hf.state_dict()
rows = []
for name in export.plain_state(model):
    hf_name, transposed = export.gpt2_name(name)
    if name.startswith("blocks.") and not name.startswith("blocks.0."):
        continue                                  # every block maps alike: show block 0
    rows.append({"ours": name, "shape": tuple(ours[name].shape), "GPT-2": hf_name,
                 "GPT-2 shape": tuple(theirs[hf_name].shape), "transposed": transposed})
pd.DataFrame(rows)

# %% [markdown]
# `export.to_gpt2` fills a `GPT2LMHeadModel` from that map. Its configuration says what
# the names cannot: `n_positions = block_size`, `n_inner = d_ff`,
# `activation_function="gelu"` (the exact GELU that `F.gelu` computes; GPT-2's own default,
# `gelu_new`, is the tanh approximation), LayerNorm epsilon `1e-5`, and the tied head.

# %%
c = hf.config
print({k: getattr(c, k) for k in ("n_positions", "n_embd", "n_layer", "n_head", "n_inner",
                                  "activation_function", "layer_norm_epsilon", "tie_word_embeddings")})
assert hf.lm_head.weight.data_ptr() == hf.transformer.wte.weight.data_ptr()   # tied: stored once
x = torch.tensor([vocab.encode("中国人民的友好合作")])
with torch.no_grad():
    diff = float((hf(x).logits - model(x)[0]).abs().max())
print(f"largest logit difference, GPT2LMHeadModel vs the book's GPT: {diff:.1e}")
assert diff < 1e-4

# %% [markdown]
# ## 3. A checkpoint `transformers` can load, and a tokenizer for characters
#
# `export.to_huggingface` writes what `from_pretrained` reads: `config.json`, the weights as
# `model.safetensors` (a plain tensor format: no pickled Python, unlike a `.pt` file), and a
# tokenizer. Ours is the `tokenizers` library's `WordLevel` model over the book's vocabulary,
# with a pre-tokenizer that splits text into single characters, `<pad>`, `<unk>` and `<sep>`
# as special tokens, and a decoder that joins characters without spaces.

# %%
from transformers import AutoModelForCausalLM, AutoTokenizer

hf_dir = export.to_huggingface(model, vocab, out_dir / "huggingface")
for f in sorted(hf_dir.iterdir()):
    print(f"{f.name:24s} {f.stat().st_size / 1e6:7.3f} MB")
hf_model = AutoModelForCausalLM.from_pretrained(hf_dir).eval()
tokenizer = AutoTokenizer.from_pretrained(hf_dir)
print(type(hf_model).__name__, type(tokenizer).__name__)

# %%
text = "今天上午<sep>你好，Python！"
print("tokenizer :", tokenizer(text)["input_ids"])
print("vocab     :", vocab.encode(text))
assert tokenizer(text)["input_ids"] == vocab.encode(text)
assert tokenizer.decode(vocab.encode("中国人民<sep>")) == "中国人民<sep>"
print("one by one :", " ".join(f"{c}={vocab.encode(c)[0]}" for c in "你好，Python！!"))
fixed = data.to_fullwidth("Python!", vocab)
print("to_fullwidth('Python!'):", fixed, vocab.encode(fixed))
assert vocab.encode("！") != [UNK] and vocab.encode("!") == [UNK] and UNK not in vocab.encode(fixed)

# %% [markdown]
# The six Latin letters of `Python` are `<unk>` (id 1) in both tokenizers (the assert
# compared every id). The 1998 news corpus writes Latin letters, digits and punctuation only in
# their full-width forms: the text's `，` and `！` *are* those forms, so they have ids of their
# own, while a half-width `!` would be `<unk>` too. Chapter 01's `data.to_fullwidth` maps
# half-width characters to the full-width twins the vocabulary has (the last line). Now the
# logits, on random token ids of every length up to `block_size`:

# %%
g = torch.Generator().manual_seed(0)
worst = 0.0
for T in (1, 7, model.config.block_size):
    ids = torch.randint(0, len(vocab), (4, T), generator=g)
    with torch.no_grad():
        worst = max(worst, float((hf_model(ids).logits - model(ids)[0]).abs().max()))
print(f"largest logit difference over 3 shapes: {worst:.1e}")
assert worst < 1e-4

# %% [markdown]
# ## 4. The same greedy text three ways
#
# Greedy decoding has no randomness, so the book's `sampling.generate`, `transformers`'
# `model.generate` and its high-level `pipeline` must all write the same characters. The
# exported configuration names `<sep>` as GPT-2's end-of-sequence token, so `transformers`
# stops there; the book's `generate` stops there when told to (`stop_tokens`). We stay inside
# one context window: `transformers` cannot go past `n_positions` (section 8).

# %%
from transformers import pipeline

from course_utils.vocab import SEP

prompt = "中国人民"
n_new = min(50, model.config.block_size - len(prompt))
ids = torch.tensor([vocab.encode(prompt)])
book = sampling.generate(model, ids, n_new, temperature=0, stop_tokens=[SEP])
theirs = hf_model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n_new,
                           do_sample=False, pad_token_id=0)
generator = pipeline("text-generation", model=hf_model, tokenizer=tokenizer, device="cpu")
piped = generator(prompt, max_new_tokens=n_new, do_sample=False)[0]["generated_text"]
print("course_utils:", vocab.decode(book[0].tolist()))
print("generate    :", vocab.decode(theirs[0].tolist()))
print("pipeline    :", piped, "(special tokens dropped)")
assert torch.equal(book, theirs) and piped == vocab.decode(book[0].tolist(), skip_special=True)

# %% [markdown]
# And back: `export.from_huggingface` reads the folder into the book's `GPT` and `Vocab`.
# The round trip is exact, bit for bit.

# %%
back, back_vocab = export.from_huggingface(hf_dir)
same = all(torch.equal(back.state_dict()[k], v) for k, v in model.state_dict().items())
print(f"round trip: {len(model.state_dict())} tensors identical: {same}; vocabulary identical: "
      f"{back_vocab == vocab}")
assert same and back_vocab == vocab

# %% [markdown]
# ## 5. What the exporter refuses
#
# A model fine-tuned with LoRA (chapter 10) carries two extra matrices per wrapped layer.
# GPT-2 has no place for them, so `export` refuses until they are merged into the weights,
# which computes the same function (chapter 10 checked that):

# %%
import copy

from course_utils.finetune import apply_lora, merge_lora

adapted = copy.deepcopy(model)
apply_lora(adapted, rank=4)
try:
    export.to_huggingface(adapted, vocab, out_dir / "lora")
except export.ExportError as err:
    print("ExportError:", err)
merge_lora(adapted)
print("after merge_lora:", export.to_huggingface(adapted, vocab, out_dir / "lora").name, "written")

# %% [markdown]
# ## 6. ONNX: the forward pass as a file
#
# An ONNX file holds the computation graph and the weights; ONNX Runtime runs it from C++,
# C#, Java, JavaScript or Python, on CPUs, GPUs and phones. `export.to_onnx` traces the
# forward pass with `torch.onnx.export(..., dynamo=True)` (the exporter of PyTorch 2.x), with
# a dynamic batch size and a dynamic length from 1 to `block_size`, then runs
# `onnx.checker`. One thing had to change in `model.py` for this: its input check reads the
# token ids (`int(idx.max())`), which a traced graph cannot do, so it runs in eager mode only.
# `quantize=True` also writes an int8 copy made by ONNX Runtime's dynamic quantizer.

# %%
import onnx

onnx_path = export.to_onnx(model, out_dir / "gpt.onnx", quantize=True)
graph = onnx.load(onnx_path).graph
print(f"{onnx_path.name}: {len(graph.node)} nodes; input {graph.input[0].name} "
      f"{[d.dim_param or d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]}, "
      f"output {graph.output[0].name}")
session = export.onnx_session(onnx_path)
worst = 0.0
for T in (1, 7, model.config.block_size):
    ids = torch.randint(0, len(vocab), (3, T), generator=g)
    (logits,) = session.run(None, {"idx": ids.numpy()})
    with torch.no_grad():
        worst = max(worst, float(np.abs(logits - model(ids)[0].numpy()).max()))
print(f"ONNX Runtime vs PyTorch, largest logit difference over 3 shapes: {worst:.1e}")
assert worst < 1e-4

# %% [markdown]
# ## 7. Size, speed and accuracy
#
# Our ONNX graph has no KV cache: every step runs the whole window. To compare like with
# like, PyTorch decodes the same way here (`torch_logits` runs the window too); the last row
# is the book's cached `generate` for reference. Greedy decoding, batch 1, timed side by
# side (each round times every variant once; the best round counts), after a warm-up.

# %%
from course_utils.quantize import state_dict_bytes

threads = torch.get_num_threads()
int8_path = onnx_path.with_suffix(".int8.onnx")
runs = {"PyTorch (window)": export.torch_logits(model),
        "ONNX Runtime fp32": export.onnx_logits(export.onnx_session(onnx_path, threads)),
        "ONNX Runtime int8": export.onnx_logits(export.onnx_session(int8_path, threads))}
start_ids, n_tok = vocab.encode("中国人民"), 48
timed = timing.time_decoding(runs, start_ids, n_tok, model.config.block_size)
cached = timing.tokens_per_second(model, torch.tensor([start_ids]), n_tok, repeats=3)
sizes = {"PyTorch (window)": state_dict_bytes(model), "ONNX Runtime fp32": onnx_path.stat().st_size,
         "ONNX Runtime int8": int8_path.stat().st_size}
table = pd.DataFrame({name: {"tokens/s": r["tokens_per_s"], "MB on disk": sizes[name] / 1e6,
                             "same tokens as PyTorch": r["tokens"] == timed["PyTorch (window)"]["tokens"]}
                      for name, r in timed.items()}).T
table.loc["PyTorch generate (KV cache)"] = [cached, sizes["PyTorch (window)"] / 1e6, True]
print(f"torch threads: {threads}; ONNX Runtime intra-op threads: {threads} (machine line: top)")
table.round(2)

# %%
speed, size = table["tokens/s"], table["MB on disk"]
print(f"ONNX Runtime int8: x{speed['ONNX Runtime int8'] / speed['ONNX Runtime fp32']:.2f} the speed of fp32, "
      f"{size['ONNX Runtime int8'] / size['ONNX Runtime fp32']:.2f} of its size")
assert table.loc["ONNX Runtime fp32", "same tokens as PyTorch"]
ort = speed["ONNX Runtime fp32"] / speed["PyTorch (window)"]
config.claim(f"on the same windows ONNX Runtime fp32 decodes x{ort:.2f} as fast as PyTorch", ort > 1)

# %% [markdown]
# These are one run's numbers on the CPU of the machine line at the top of the notebook. ONNX
# Runtime executes the graph without Python between the operations; for a model this small,
# where each PyTorch step is mostly overhead (08a), that is why it decodes the same windows
# faster (the claim). The int8 file is smaller because every weight matrix, the shared embedding
# and head included, is stored in 8 bits: ONNX Runtime's dynamic quantization turns the matrix
# products into `MatMulInteger` nodes and quantizes the activations on the fly. Whether that is
# faster depends on the CPU's int8 instructions and on the model's size: quantizing the
# activations adds work at every step, which the cheaper products of a model this small need not
# earn back (the line under the table prints the ratio here). The [benchmarks
# appendix](../book/benchmarks.md) has the same comparison from `bench/export.py`, including a
# batch of whole windows, on a quiet machine.
#
# Size and speed are half of the story; an int8 model is also a *different* model. One greedy
# text (the table's last column) says little either way, so we measure the int8 graph against
# PyTorch on the news validation windows (chapter 05's): the largest change of a logit, how
# often the most likely next character is the same, and the validation loss; then the
# greedy continuations of eight prompts taken from the validation text.

# %%
import torch.nn.functional as F

x_val, y_val = artifacts.news_val_windows(32, model.config.block_size).get(0)   # 32 windows
with torch.no_grad():
    reference = model(x_val)[0]
rows, top1 = {}, {}
for name, path in (("ONNX Runtime fp32", onnx_path), ("ONNX Runtime int8", int8_path)):
    logits = torch.from_numpy(export.onnx_session(path).run(None, {"idx": x_val.numpy()})[0])
    top1[name] = logits.argmax(-1)
    rows[name] = {"max |logit - PyTorch|": float((logits - reference).abs().max()),
                  "same top-1 character": float((logits.argmax(-1) == reference.argmax(-1)).float().mean()),
                  "val loss": float(F.cross_entropy(logits.flatten(0, 1), y_val.flatten()))}
rows["PyTorch"] = {"max |logit - PyTorch|": 0.0, "same top-1 character": 1.0,
                   "val loss": float(F.cross_entropy(reference.flatten(0, 1), y_val.flatten()))}
accuracy = pd.DataFrame(rows).T
top2 = reference.softmax(-1).topk(2, dim=-1).values
margin = top2[..., 0] - top2[..., 1]                 # how clear PyTorch's first choice is
flipped = top1["ONNX Runtime int8"] != reference.argmax(-1)
flip_margin = float(margin[flipped].median()) if flipped.any() else float("nan")
print(f"{x_val.numel():,} positions of the news validation windows; PyTorch's top-1 minus top-2 "
      f"probability: median {margin.median():.3f} over all, {flip_margin:.3f} over "
      f"the {int(flipped.sum())} positions where int8 picks another character")
accuracy.round(4)

# %%
val_tokens = artifacts.news_tokens("val")
prompts = [val_tokens[k * 5003: k * 5003 + 8].astype("int64").tolist() for k in range(8)]
int8_step = export.onnx_logits(export.onnx_session(int8_path))
first_diff = []
for p in prompts:
    a = export.greedy_decode(export.torch_logits(model), p, 48, model.config.block_size)[len(p):]
    b = export.greedy_decode(int8_step, p, 48, model.config.block_size)[len(p):]
    first_diff.append(next((i for i, (u, v) in enumerate(zip(a, b, strict=True)) if u != v), None))
same = sum(d is None for d in first_diff)
parted = sorted(d for d in first_diff if d is not None)
print(f"greedy, 48 characters after each of {len(prompts)} prompts: {same} identical"
      + (f"; the others part at character {parted}" if parted else ""))
i8, f32 = accuracy.loc["ONNX Runtime int8"], accuracy.loc["ONNX Runtime fp32"]
loss_gap = i8["val loss"] - accuracy.loc["PyTorch", "val loss"]
config.claim(f"int8 moves the logits by up to {i8['max |logit - PyTorch|']:.2f}, far more than the fp32 "
             f"export ({f32['max |logit - PyTorch|']:.0e}), yet keeps the top-1 character at "
             f"{i8['same top-1 character']:.1%} of positions and the validation loss within 0.01 "
             f"({loss_gap:+.4f})", i8["max |logit - PyTorch|"] > 100 * f32["max |logit - PyTorch|"]
             and i8["same top-1 character"] > 0.9 and abs(loss_gap) < 0.01)
config.claim(f"the positions where int8 picks another character are near-ties (median margin "
             f"{flip_margin:.3f} against {margin.median():.3f} over all)",
             flip_margin < margin.median() / 5)
config.claim(f"int8 changes some greedy texts ({len(prompts) - same} of {len(prompts)} differ)",
             same < len(prompts))

# %% [markdown]
# What the claims above rest on: a weight stored in 8 bits is off by up to half a step of its
# tensor's scale, the activations quantized on the fly add their own rounding, and these errors,
# summed over the `d_model` or `d_ff` inputs of every output, move each logit a little (the fp32
# export, which only reorders float32 arithmetic, moves them far less: the first claim). A small
# move swaps the top two characters only where they were nearly tied, and that is where the
# flips are (the second claim), so most positions keep their most likely character. The
# validation loss reads the probability of the true next character, which such small moves
# barely change, so it hardly changes either (the first claim). Greedy decoding must still pick
# one of two near-tied characters, though, and once a text has picked another, every later step
# reads a different history: the two texts go their own ways from there (where each parted is
# printed above). Compare quantized models by their loss and agreement on held-out text, not by
# one sample.
#
# ## 8. What changes for a real GPT-2
#
# The mapping is the same for OpenAI's GPT-2; the numbers are not. GPT-2 small reads byte-level
# BPE tokens (a vocabulary of 50,257 subwords, not 4,690 characters), has 1,024 positions,
# `n_embd` 768, 12 layers of 12 heads, and the tanh GELU (`gelu_new`). Its parameter count,
# from the book's own formula:

# %%
from course_utils.model import GPTConfig, count_parameters

gpt2_small = GPTConfig(vocab_size=50257, block_size=1024, d_model=768, n_heads=12, n_layers=12,
                       d_ff=3072)
print(f"GPT-2 small: {count_parameters(gpt2_small):,} parameters "
      f"({count_parameters(gpt2_small) / model.num_parameters():.0f} times this chapter's model)")
print(f"of which the token embedding: {50257 * 768 / count_parameters(gpt2_small):.0%}")

# %% [markdown]
# Two differences bite in practice. **The position limit**: GPT-2 has learned positions
# only up to `n_positions`. The book's `generate` slides its window; `transformers` stops
# with an error instead:

# %%
too_long = torch.randint(3, len(vocab), (1, model.config.block_size + 1), generator=g)
try:
    hf_model(too_long)
except (IndexError, RuntimeError, ValueError) as err:
    print(f"{type(err).__name__}: {str(err).splitlines()[0][:120]}")
print("the book's model:", end=" ")
try:
    model(too_long)
except ValueError as err:
    print(err)

# %% [markdown]
# **The activation**: `gelu` is $x\,\Phi(x)$ with the normal distribution's exact CDF;
# `gelu_new` replaces $\Phi$ by a tanh formula. How far apart are they, and what does
# running our model with the wrong one do to its logits?

# %%
from transformers.activations import ACT2FN

wrong = export.to_gpt2(model)
for block in wrong.transformer.h:
    block.mlp.act = ACT2FN["gelu_new"]            # what activation_function="gelu_new" would load
grid = torch.linspace(-6, 6, 1201)
gap = float((torch.nn.functional.gelu(grid) - ACT2FN["gelu_new"](grid)).abs().max())
x = torch.tensor([vocab.encode("中国人民的友好合作关系")])
with torch.no_grad():
    drift = float((wrong(x).logits - model(x)[0]).abs().max())
print(f"largest |gelu - gelu_new| on [-6, 6]: {gap:.1e}; largest logit change on our model: {drift:.1e}")

# %% [markdown]
# > **Pitfalls.**
# > - **The Conv1D transpose.** GPT-2's `c_attn`, `c_proj`, `c_fc` store (in, out). Copying
# >   an `nn.Linear` weight without `.t()` fails loudly for `c_attn` (a shape error) but
# >   *silently* for the square `attn.c_proj`: check logits, not just that loading worked.
# > - **gelu vs gelu_new.** `activation_function` must name the function the model was
# >   trained with; `F.gelu` is `"gelu"`.
# > - **Tied weights.** The head and the token embedding are one matrix. `save_pretrained`
# >   stores it once and `tie_word_embeddings=True` ties it again on loading; an export that
# >   copies both would double the file and let them drift apart in fine-tuning.
# > - **The position limit.** `n_positions` is a hard limit for `transformers` and for the
# >   exported ONNX graph (its length dimension goes up to `block_size`); slide or crop.
# > - **Data-dependent Python in `forward`.** `int(t.max())` or `.item()` cannot be traced:
# >   keep such checks out of exported or compiled code paths.
# > - **LoRA adapters** must be merged before export (section 5).
# > - **Judging int8 by one sample.** A quantized model's greedy text can match on one prompt and
# >   part on the next: compare the loss and the top-1 agreement on held-out text (section 7).
#
# ## Exercises

# %% [markdown]
# **Exercise 13.1 (Conv1D from nn.Linear).** Write `linear_to_conv1d(linear)` that returns a
# `transformers.pytorch_utils.Conv1D(nf=out_features, nx=in_features)` computing exactly
# what the `nn.Linear` computes.

# %%
from transformers.pytorch_utils import Conv1D

from course_utils.exercises import ch13


def linear_to_conv1d(linear):
    raise NotImplementedError


_ = ch13.check_linear_to_conv1d(linear_to_conv1d)

# %% tags=["hide-cell"]
# Solution
def linear_to_conv1d(linear):
    conv = Conv1D(linear.out_features, linear.in_features)
    with torch.no_grad():
        conv.weight.copy_(linear.weight.t())           # (out, in) -> (in, out)
        conv.bias.copy_(linear.bias)
    return conv


_ = ch13.check_linear_to_conv1d(linear_to_conv1d)

# %% [markdown]
# **Exercise 13.2 (GPT-2's parameter count).** Write `gpt2_parameters(vocab_size, n_positions,
# n_embd, n_layer)`: the number of parameters of a `GPT2LMHeadModel` with `n_inner = 4 n_embd`
# and a tied head, without building one.

# %%
def gpt2_parameters(vocab_size, n_positions, n_embd, n_layer):
    raise NotImplementedError


_ = ch13.check_gpt2_parameters(gpt2_parameters)

# %% tags=["hide-cell"]
# Solution
def gpt2_parameters(vocab_size, n_positions, n_embd, n_layer):
    d = n_embd
    block = 2 * (2 * d) + (3 * d * d + 3 * d) + (d * d + d) + (4 * d * d + 4 * d) + (4 * d * d + d)
    return vocab_size * d + n_positions * d + n_layer * block + 2 * d


_ = ch13.check_gpt2_parameters(gpt2_parameters)

# %% [markdown]
# **Exercise 13.3 (greedy decoding with ONNX Runtime).** Write `onnx_greedy(session, ids, n)`
# that appends `n` greedy tokens to the list `ids` with an ONNX Runtime session of an exported
# GPT (input `"idx"`, int64, shape (1, T); output logits (1, T, V)), feeding the whole text
# each step, and returns the list. The text stays within `block_size`.

# %%
def onnx_greedy(session, ids, n):
    raise NotImplementedError


_ = ch13.check_onnx_greedy(onnx_greedy)

# %% tags=["hide-cell"]
# Solution
def onnx_greedy(session, ids, n):
    for _ in range(n):
        (logits,) = session.run(None, {"idx": np.array([ids], dtype=np.int64)})
        ids.append(int(logits[0, -1].argmax()))
    return ids


_ = ch13.check_onnx_greedy(onnx_greedy)

# %% [markdown]
# ## Summary
#
# - The book's GPT maps weight for weight onto `transformers`' `GPT2LMHeadModel`: transpose
#   the `Conv1D` layers, tie the head, use the exact `gelu`, set `n_positions = block_size`.
#   Logits agree to float32 rounding, greedy text is identical through `generate` and
#   `pipeline`, and the round trip back is exact.
# - A character vocabulary becomes a `WordLevel` tokenizer with a split-every-character
#   pre-tokenizer; `AutoTokenizer` loads it offline.
# - ONNX Runtime runs the exported graph with the same logits, up to float32 rounding. Its int8
#   copy is smaller and a slightly different model: its validation loss is almost the same, but
#   close calls between two characters flip, and a greedy text that meets one goes its own way
#   from there. Measure speed on your own CPU, int8's above all: the table above is one
#   machine's.
# - Exporting needs a forward pass without data-dependent Python, LoRA merged, and respect
#   for the position limit.
#
# This is the last chapter. The appendices measure the book's speed claims side by side
# ([benchmarks](../book/benchmarks.md)), time every chapter, and show the GPT running in
# your browser ([the GPT in your browser](../book/browser.md)), the third place this model
# now runs outside PyTorch.
