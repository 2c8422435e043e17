/* gpt.js: the book's GPT in plain JavaScript, for the pages that run it in your browser.
 *
 * One file, no dependencies, no WebAssembly, no build step. Read it beside
 * course_utils/model.py, attention.py and sampling.py: the sections below follow their order.
 *
 *   1. loading the exported weights        (course_utils/export.py writes them)
 *   2. the vocabulary                      (course_utils/vocab.py, data.to_fullwidth)
 *   3. the building blocks                 (nn.Linear, nn.LayerNorm, exact GELU)
 *   4. the GPT forward pass, one token at a time, with a KV cache
 *   5. the samplers, as operations on logits (temperature, top-k, top-p, one softmax)
 *   6. generation, with the book's context rule (slide by half a block when full)
 *   7. a conversation (course_utils/chat.py): turns joined by <sep>, replies end at <sep>
 *   8. a classifier (course_utils/finetune.py, GPTClassifier): a linear head on the last hidden state
 *   9. inside the model (course_utils/interpret.py): attention maps and a next-token lens
 *
 * Every number is a float64 while it is computed and a float32 when it is stored, so the
 * logits agree with PyTorch's float32 forward pass to about 1e-5 (e2e/test_browser_model.py
 * checks 1e-4; e2e/test_inside_model.py checks section 9's attention weights and lens to 1e-5).
 * Everything hangs off one global, `GPTBook`.
 */
(function (global) {
  "use strict";

  const PAD = 0, UNK = 1, SEP = 2;                   // course_utils.vocab
  const SPECIALS = ["<pad>", "<unk>", "<sep>"];

  // ------------------------------------------------------------------ 1. loading the weights

  // A model file is a plain <script> (fetch() is blocked on pages opened from disk) that sets
  // GPT_MODELS[name] = {config, vocab, meta, tensors}. A tensor is float32 or float16 bytes, or
  // int8 codes with one float32 scale per row (chapter 09's weight-only format), all in base64.

  function base64Bytes(text) {
    const binary = atob(text);
    const bytes = new Uint8Array(binary.length);
    for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
    return bytes;
  }

  function float32s(text) {                            // little-endian, whatever the machine
    const bytes = base64Bytes(text);
    const view = new DataView(bytes.buffer);
    const out = new Float32Array(bytes.length / 4);
    for (let i = 0; i < out.length; i++) out[i] = view.getFloat32(4 * i, true);
    return out;
  }

  function float16s(text) {                            // IEEE half precision, little-endian
    const bytes = base64Bytes(text);
    const view = new DataView(bytes.buffer);
    const out = new Float32Array(bytes.length / 2);
    for (let i = 0; i < out.length; i++) {
      const bits = view.getUint16(2 * i, true);
      const sign = bits & 0x8000 ? -1 : 1, exponent = (bits >> 10) & 0x1f, fraction = bits & 0x3ff;
      out[i] = exponent === 0 ? sign * fraction * 2 ** -24                // subnormal
        : exponent === 31 ? (fraction ? NaN : sign * Infinity)
          : sign * (1 + fraction / 1024) * 2 ** (exponent - 15);
    }
    return out;
  }

  function loadTensor(name, entry) {
    const size = entry.shape.reduce((a, b) => a * b, 1);
    if (entry.dtype === "float32" || entry.dtype === "float16") {
      const values = entry.dtype === "float32" ? float32s(entry.data) : float16s(entry.data);
      if (values.length !== size) throw new Error(`${name}: ${values.length} values, shape says ${size}`);
      return values;
    }
    if (entry.dtype === "int8") {                      // w = q * scale, one scale per row
      const codes = new Int8Array(base64Bytes(entry.data).buffer);
      const scales = float32s(entry.scale);
      const cols = entry.shape[entry.shape.length - 1];
      if (codes.length !== size || scales.length * cols !== size) {
        throw new Error(`${name}: ${codes.length} codes and ${scales.length} scales for shape ${entry.shape}`);
      }
      const w = new Float32Array(size);
      for (let i = 0; i < size; i++) w[i] = codes[i] * scales[Math.floor(i / cols)];
      return w;
    }
    throw new Error(`${name}: unknown dtype ${entry.dtype}`);
  }

  // ------------------------------------------------------------------ 2. the vocabulary

  class Vocab {
    constructor(tokens) {
      this.idx2token = tokens;
      this.token2idx = new Map(tokens.map((t, i) => [t, i]));
    }

    get size() { return this.idx2token.length; }

    /* Characters to ids (unknown ones become <unk>); "<sep>" typed out stays one token. */
    encode(text) {
      const ids = [];
      for (const piece of text.split(/(<pad>|<unk>|<sep>)/)) {
        if (SPECIALS.includes(piece)) { ids.push(SPECIALS.indexOf(piece)); continue; }
        for (const ch of piece) ids.push(this.token2idx.has(ch) ? this.token2idx.get(ch) : UNK);
      }
      return ids;
    }

    /* Ids to text; with skipSpecial, <pad>, <unk> and <sep> are dropped. */
    decode(ids, skipSpecial = false) {
      return ids.filter(i => !(skipSpecial && i < SPECIALS.length))
        .map(i => this.idx2token[i]).join("");
    }

    /* data.to_fullwidth: half-width ASCII the vocabulary lacks becomes its full-width form. */
    toFullwidth(text) {
      let out = "";
      for (const ch of text) {
        const code = ch.codePointAt(0);
        const full = code >= 0x21 && code <= 0x7e ? String.fromCodePoint(code + 0xfee0) : null;
        out += full !== null && !this.token2idx.has(ch) && this.token2idx.has(full) ? full : ch;
      }
      return out;
    }
  }

  // ------------------------------------------------------------------ 3. building blocks

  /* nn.Linear: out[o] = b[o] + sum_i W[o, i] x[i], with W stored (nOut, nIn) row by row.
   * Four partial sums let the CPU overlap the additions (nIn is a multiple of 4 here). */
  function linear(out, x, W, b, nIn, nOut) {
    const n4 = nIn - (nIn % 4);
    for (let o = 0; o < nOut; o++) {
      const row = o * nIn;
      let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
      for (let i = 0; i < n4; i += 4) {
        s0 += W[row + i] * x[i];
        s1 += W[row + i + 1] * x[i + 1];
        s2 += W[row + i + 2] * x[i + 2];
        s3 += W[row + i + 3] * x[i + 3];
      }
      for (let i = n4; i < nIn; i++) s0 += W[row + i] * x[i];
      out[o] = (b ? b[o] : 0) + ((s0 + s1) + (s2 + s3));
    }
  }

  /* nn.LayerNorm: (x - mean) / sqrt(var + eps) * w + b, the variance without Bessel's correction. */
  function layerNorm(out, x, w, b, n, eps) {
    let mean = 0;
    for (let i = 0; i < n; i++) mean += x[i];
    mean /= n;
    let variance = 0;
    for (let i = 0; i < n; i++) variance += (x[i] - mean) * (x[i] - mean);
    const inv = 1 / Math.sqrt(variance / n + eps);
    for (let i = 0; i < n; i++) out[i] = (x[i] - mean) * inv * w[i] + (b ? b[i] : 0);
  }

  /* erf to double precision: its Taylor series near 0, a continued fraction for erfc beyond. */
  function erf(z) {
    const a = Math.abs(z);
    if (a < 3) {
      let term = a, sum = a;
      for (let n = 1; n < 80 && Math.abs(term) > 1e-17 * Math.abs(sum); n++) {
        term *= -a * a / n;
        sum += term / (2 * n + 1);
      }
      return Math.sign(z) * 2 / Math.sqrt(Math.PI) * sum;
    }
    let f = a;                                         // erfc(a) = e^(-a^2)/sqrt(pi) / (a + 1/2/(a + 1/(a + ...)))
    for (let n = 60; n >= 1; n--) f = a + (n / 2) / f;
    return Math.sign(z) * (1 - Math.exp(-a * a) / Math.sqrt(Math.PI) / f);
  }

  /* F.gelu (exact, not the tanh approximation): x * Phi(x). */
  function gelu(x) { return 0.5 * x * (1 + erf(x / Math.SQRT2)); }

  // ------------------------------------------------------------------ 4. the GPT

  class GPT {
    /* `exported`: what a model file put in GPT_MODELS[name]. */
    constructor(exported) {
      const c = exported.config;
      this.name = exported.name;
      this.meta = exported.meta || {};
      this.config = c;
      this.vocab = new Vocab(exported.vocab);
      if (this.vocab.size !== c.vocab_size) {
        throw new Error(`the vocabulary has ${this.vocab.size} tokens, the model ${c.vocab_size}`);
      }
      const w = {};
      for (const [name, entry] of Object.entries(exported.tensors)) w[name] = loadTensor(name, entry);
      this.w = w;
      this.headDim = c.d_model / c.n_heads;
      // working buffers, allocated once
      const d = c.d_model;
      this.x = new Float32Array(d);
      this.h = new Float32Array(d);
      this.qkv = new Float32Array(3 * d);
      this.att = new Float32Array(d);
      this.y = new Float32Array(d);
      this.ff = new Float32Array(c.d_ff);
      this.scores = new Float64Array(c.block_size);
      this.recording = null;                           // set by inspect() only: see there
      this.resetCache();
    }

    /* An empty KV cache: keys and values of every layer for up to block_size positions. */
    resetCache() {
      const c = this.config;
      this.cacheLength = 0;
      this.keys = [], this.values = [];
      for (let l = 0; l < c.n_layers; l++) {
        this.keys.push(new Float32Array(c.block_size * c.d_model));
        this.values.push(new Float32Array(c.block_size * c.d_model));
      }
    }

    /* Feed one token at the next position; returns the logits (vocab_size) of what follows.
     * The same arithmetic as model(idx, cache=cache) for one new token in PyTorch.
     * withLogits = false skips the head (40% of the work here) when only the cache is wanted. */
    step(token, withLogits = true) {
      const c = this.config, d = c.d_model, w = this.w, pos = this.cacheLength;
      if (pos >= c.block_size) throw new Error(`the cache is full (block_size ${c.block_size})`);
      if (!(token >= 0 && token < c.vocab_size)) throw new Error(`token id ${token} is outside the vocabulary`);
      const x = this.x, h = this.h;
      // token + position embeddings
      for (let i = 0; i < d; i++) x[i] = w["tok_emb.weight"][token * d + i] + w["pos_emb.weight"][pos * d + i];
      for (let l = 0; l < c.n_layers; l++) {
        const p = `blocks.${l}.`;
        // x = x + attn(ln1(x))
        layerNorm(h, x, w[p + "ln1.weight"], w[p + "ln1.bias"], d, 1e-5);
        linear(this.qkv, h, w[p + "attn.qkv.weight"], w[p + "attn.qkv.bias"], d, 3 * d);
        this.keys[l].set(this.qkv.subarray(d, 2 * d), pos * d);          // q | k | v
        this.values[l].set(this.qkv.subarray(2 * d), pos * d);
        this.attend(l, pos);
        linear(this.y, this.att, w[p + "attn.proj.weight"], w[p + "attn.proj.bias"], d, d);
        for (let i = 0; i < d; i++) x[i] += this.y[i];
        // x = x + mlp(ln2(x))
        layerNorm(h, x, w[p + "ln2.weight"], w[p + "ln2.bias"], d, 1e-5);
        linear(this.ff, h, w[p + "mlp.fc.weight"], w[p + "mlp.fc.bias"], d, c.d_ff);
        for (let i = 0; i < c.d_ff; i++) this.ff[i] = gelu(this.ff[i]);
        linear(this.y, this.ff, w[p + "mlp.proj.weight"], w[p + "mlp.proj.bias"], c.d_ff, d);
        for (let i = 0; i < d; i++) x[i] += this.y[i];
        if (this.recording) this.recording.stream[l][pos] = Float32Array.from(x);   // after block l
      }
      this.cacheLength = pos + 1;
      if (!withLogits) return null;
      layerNorm(h, x, w["ln_f.weight"], w["ln_f.bias"], d, 1e-5);
      const logits = new Float32Array(c.vocab_size);
      linear(logits, h, w["tok_emb.weight"], null, d, c.vocab_size);     // the tied head
      return logits;
    }

    /* Causal attention of the newest position `pos` over positions 0..pos, head by head:
     * softmax(q k^T / sqrt(head_dim)) v. The causal mask is implicit: later keys are not cached yet. */
    attend(layer, pos) {
      const d = this.config.d_model, hd = this.headDim, scale = 1 / Math.sqrt(hd);
      const keys = this.keys[layer], values = this.values[layer], q = this.qkv, s = this.scores;
      for (let head = 0; head < this.config.n_heads; head++) {
        const off = head * hd;
        let max = -Infinity;
        for (let t = 0; t <= pos; t++) {
          let dot = 0;
          for (let i = 0; i < hd; i++) dot += q[off + i] * keys[t * d + off + i];
          s[t] = dot * scale;
          if (s[t] > max) max = s[t];
        }
        let total = 0;
        for (let t = 0; t <= pos; t++) { s[t] = Math.exp(s[t] - max); total += s[t]; }
        for (let i = 0; i < hd; i++) {
          let sum = 0;
          for (let t = 0; t <= pos; t++) sum += s[t] * values[t * d + off + i];
          this.att[off + i] = sum / total;
        }
        if (this.recording) {                          // inspect(): keep this row of weights
          const row = this.recording.attention[layer][head][pos];
          for (let t = 0; t <= pos; t++) row[t] = s[t] / total;
        }
      }
    }

    /* Refuse what the position table cannot read: no tokens, or more than block_size. */
    checkLength(ids) {
      if (!ids.length) throw new Error("give at least one token");
      if (ids.length > this.config.block_size) {
        throw new Error(`${ids.length} tokens exceed block_size=${this.config.block_size}`);
      }
    }

    /* The logits after every token of `ids` (a fresh cache): an array of Float32Arrays.
     * lastOnly: only the last position's logits (the others are null). */
    forward(ids, lastOnly = false) {
      this.checkLength(ids);
      this.resetCache();
      return ids.map((id, t) => this.step(id, !lastOnly || t === ids.length - 1));
    }

    /* The final LayerNorm's output (d_model floats) at the last position of `ids` (a fresh
     * cache): what GPTClassifier.features pools with pooling="last" for a row without padding.
     * The same steps as forward, without the head; step leaves the residual stream in this.x. */
    features(ids) {
      this.checkLength(ids);
      this.resetCache();
      for (const id of ids) this.step(id, false);
      const w = this.w, out = new Float32Array(this.config.d_model);
      layerNorm(out, this.x, w["ln_f.weight"], w["ln_f.bias"], this.config.d_model, 1e-5);
      return out;
    }

    /* What the forward pass over `ids` (a fresh cache) computes on the way, for section 9:
     *   attention[layer][head][t]: query t's weights over the keys (T floats, 0 above the diagonal)
     *   stream[layer][t]:          the residual stream (d_model floats) after block `layer`
     * While it runs, `this.recording` holds them; step and attend check it once per block and
     * once per head, so ordinary generation (recording null) does no extra work. */
    inspect(ids) {
      this.checkLength(ids);
      const c = this.config, T = ids.length;
      const record = {
        attention: Array.from({ length: c.n_layers }, () =>
          Array.from({ length: c.n_heads }, () => Array.from({ length: T }, () => new Float32Array(T)))),
        stream: Array.from({ length: c.n_layers }, () => new Array(T)),
      };
      this.recording = record;
      try {
        this.resetCache();
        for (const id of ids) this.step(id, false);
      } finally {
        this.recording = null;
      }
      return record;
    }
  }

  // ------------------------------------------------------------------ 5. samplers on logits

  /* Check the settings as sampling.check_settings does; returns an error message or null. */
  function checkSettings(s) {
    if (!(Number.isFinite(s.temperature) && s.temperature >= 0)) return "temperature must be a number >= 0 (0 means greedy)";
    if (s.topK != null && !(Number.isInteger(s.topK) && s.topK >= 1)) return "top-k must be a whole number >= 1, or off";
    if (s.topP != null && !(s.topP > 0 && s.topP <= 1)) return "top-p must be in (0, 1], or off";
    return null;
  }

  /* Token ids by logit, largest first; ties broken by the smaller id. `ids`: only these. */
  function order(logits, ids) {
    ids = ids || Array.from(logits.keys());
    return ids.sort((a, b) => (logits[b] - logits[a]) || (a - b));
  }

  function argmax(logits) {                          // the first largest, as torch.argmax
    let best = 0;
    for (let i = 1; i < logits.length; i++) if (logits[i] > logits[best]) best = i;
    return best;
  }

  /* The k largest logits' ids, in order (a quick select for the k-th value, then a small sort). */
  function topK(logits, k) {
    const values = Float64Array.from(logits).sort();   // ascending; fast on a typed array
    const kth = values[values.length - k];
    const ids = [];
    for (let i = 0; i < logits.length; i++) if (logits[i] >= kth) ids.push(i);
    return order(logits, ids).slice(0, k);
  }

  function softmax(logits) {
    let max = -Infinity;
    for (let i = 0; i < logits.length; i++) if (logits[i] > max) max = logits[i];
    const p = new Float64Array(logits.length);
    let total = 0;
    for (let i = 0; i < logits.length; i++) { p[i] = Math.exp(logits[i] - max); total += p[i]; }
    for (let i = 0; i < p.length; i++) p[i] /= total;
    return p;
  }

  /* sampling.filter_logits: temperature, then top-k, then top-p; dropped tokens get -inf.
   * Temperature 0 is greedy: only the argmax survives. */
  function filterLogits(logits, { temperature = 1, topK: k = null, topP = null } = {}) {
    const err = checkSettings({ temperature, topK: k, topP });
    if (err) throw new Error(err);
    const V = logits.length;
    if (temperature === 0) {
      const z = new Float64Array(V).fill(-Infinity), best = argmax(logits);
      z[best] = logits[best];
      return z;
    }
    let z = new Float64Array(V);
    for (let i = 0; i < V; i++) z[i] = logits[i] / temperature;
    if (k != null && k < V) {
      const kept = new Float64Array(V).fill(-Infinity);
      for (const i of topK(z, k)) kept[i] = z[i];
      z = kept;
    }
    if (topP != null && topP < 1) {
      const p = softmax(z);                           // over what top-k kept
      // Only tokens at least as likely as `floor` can be in the nucleus once the mass below
      // it is under 1 - p: sort just those (a few hundred, not the whole vocabulary).
      let floor = 1e-3, below = Infinity;
      while (below >= 1 - topP && floor > 0) {
        below = 0;
        for (let i = 0; i < V; i++) if (p[i] < floor) below += p[i];
        if (below >= 1 - topP) floor = floor > 1e-30 ? floor / 16 : 0;
      }
      const candidates = [];
      for (let i = 0; i < V; i++) if (p[i] >= floor && z[i] > -Infinity) candidates.push(i);
      const keep = new Uint8Array(V);
      let before = 0;                                 // the mass of the more likely tokens
      for (const i of order(z, candidates)) {
        if (before >= topP) break;                    // the nucleus reached p already
        keep[i] = 1;
        before += p[i];
      }
      for (let i = 0; i < V; i++) if (!keep[i]) z[i] = -Infinity;
    }
    return z;
  }

  /* sampling.next_token_probs: the distribution the sampler draws from (one softmax). */
  function nextTokenProbs(logits, settings) { return softmax(filterLogits(logits, settings)); }

  /* A small seeded generator (mulberry32): the same seed gives the same text in every browser.
   * It is not PyTorch's generator, so sampled text differs from the notebook's; greedy agrees. */
  function randomStream(seed) {
    let a = (seed >>> 0) || 0x9e3779b9;
    return function () {
      a = (a + 0x6d2b79f5) >>> 0;
      let t = a;
      t = Math.imul(t ^ (t >>> 15), t | 1);
      t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
  }

  function sampleNext(logits, settings, random) {
    if (settings.temperature === 0) return argmax(logits);
    const p = nextTokenProbs(logits, settings);
    let u = random(), last = 0;
    for (let i = 0; i < p.length; i++) {
      if (p[i] > 0) { last = i; u -= p[i]; if (u < 0) return i; }
    }
    return last;                                      // rounding left a sliver of mass
  }

  // ------------------------------------------------------------------ 6. generation

  /* Where the window begins: slide forward by half a block whenever it is full. */
  function contextStart(length, start, blockSize) {
    const keep = Math.max(1, Math.floor(blockSize / 2));
    while (length - start > blockSize) start = length - keep > start ? length - keep : start + 1;
    return start;
  }

  /* sampling.generate for one row: extend `ids` by up to maxNewTokens tokens; returns the new ids.
   * Options: stopTokens (stop after emitting one), seed, onToken(id) after each token. */
  function generate(model, ids, maxNewTokens, settings = {}, options = {}) {
    settings = { temperature: 1, topK: null, topP: null, ...settings };
    const err = checkSettings(settings);
    if (err) throw new Error(err);
    if (!ids.length) throw new Error("the prompt is empty: give at least one token");
    const random = randomStream(options.seed || 0);
    const stops = new Set(options.stopTokens || []);
    const block = model.config.block_size;
    const out = ids.slice(), fresh = [];
    let start = 0, cachedFrom = -1, logits = null;
    for (let n = 0; n < maxNewTokens; n++) {
      start = contextStart(out.length, start, block);
      if (cachedFrom !== start) {                     // prefill the window
        model.resetCache();
        const window = out.slice(start);
        window.forEach((id, t) => { logits = model.step(id, t === window.length - 1); });
        cachedFrom = start;
      } else {
        logits = model.step(out[out.length - 1]);
      }
      const next = sampleNext(logits, settings, random);
      out.push(next);
      fresh.push(next);
      if (options.onToken) options.onToken(next);
      if (stops.has(next)) break;
    }
    return fresh;
  }

  const STOP_CHARS = "。？！";

  /* sampling.stop_ids: <sep> and the sentence-ending characters the vocabulary has. */
  function stopIds(vocab) {
    return [SEP].concat(Array.from(STOP_CHARS).filter(c => vocab.token2idx.has(c)).map(c => vocab.token2idx.get(c)));
  }

  /* sampling.encode_prompt: refuse an empty prompt, or one the vocabulary cannot read at all. */
  function encodePrompt(vocab, prompt) {
    if (typeof prompt !== "string" || !prompt.trim()) throw new Error("the prompt is empty: type at least one character");
    const ids = vocab.encode(prompt);
    if (!ids.some(i => i !== UNK)) {
      throw new Error(`no character of the prompt "${prompt.slice(0, 30)}" is in the vocabulary: try Chinese text like the training corpus`);
    }
    return ids;
  }

  // ------------------------------------------------------------------ 7. a conversation

  /* course_utils.chat.Conversation: the history in the training format of chapter 11 (every
   * turn followed by <sep>), cropped from the left so a reply of maxNewTokens still fits. */
  class Conversation {
    constructor(model, { maxNewTokens = 32, temperature = 0.8, topK = null, topP = 0.95, seed = 0 } = {}) {
      this.model = model;
      this.maxNewTokens = maxNewTokens;
      this.settings = { temperature, topK, topP };
      this.seed = seed;
      this.reset();
    }

    reset() { this.turns = []; this.replies = 0; }

    get contextBudget() {
      const block = this.model.config.block_size;
      return Math.max(1, block - Math.min(this.maxNewTokens, Math.floor(block / 2)));
    }

    contextIds() {
      const ids = [];
      for (const turn of this.turns) ids.push(...this.model.vocab.encode(turn.text), SEP);
      return ids.slice(-this.contextBudget);
    }

    /* Add the user's message, generate the reply (up to <sep>), add and return it. */
    say(message) {
      const vocab = this.model.vocab;
      if (typeof message !== "string" || !message.trim()) throw new Error("the message is empty: type at least one character");
      message = vocab.toFullwidth(message.trim().replace(/\n/g, " "));
      if (vocab.encode(message).every(i => i === UNK)) {
        throw new Error(`no character of "${message.slice(0, 30)}" is in the vocabulary: write Chinese text like the training corpus`);
      }
      this.turns.push({ speaker: "user", text: message });
      const ids = generate(this.model, this.contextIds(), this.maxNewTokens, this.settings,
        { stopTokens: [SEP], seed: this.seed + this.replies++ });
      const reply = vocab.decode(ids, true).trim();
      this.turns.push({ speaker: "bot", text: reply });
      return reply;
    }
  }

  // ------------------------------------------------------------------ 8. a classifier

  /* course_utils.finetune.GPTClassifier with pooling="last": the head (num_classes x d_model and
   * a bias, plain numbers in the model file's meta.classifier, written by export.head_meta) reads
   * the hidden state of the last token. Returns the class probabilities (softmax of the head's
   * logits); chapter 14's reward is the second, P(positive). `ids`: at most block_size tokens, no
   * <pad> or <sep> (export.browser_classifier + preference.classifier_reward in PyTorch). */
  function classify(model, ids) {
    const head = model.meta.classifier;
    if (!head) throw new Error(`model "${model.name}" is a language model, not a classifier (its meta has no classifier head)`);
    if (head.pooling !== "last") throw new Error(`the page pools the last token only, not "${head.pooling}"`);
    const d = model.config.d_model;
    if (head.weight.length !== head.bias.length || head.weight.some(row => row.length !== d)) {
      throw new Error(`the classifier head is not ${head.bias.length} x ${d} (d_model)`);
    }
    const h = model.features(ids);
    const logits = new Float32Array(head.bias.length);
    linear(logits, h, Float32Array.from(head.weight.flat()), Float32Array.from(head.bias), d, head.bias.length);
    return Array.from(softmax(logits));
  }

  // ------------------------------------------------------------------ 9. inside the model

  /* interpret.check_text: the ids of `text` for the views below, or an Error that says what to
   * change (empty, unreadable, longer than the block). The pages write half-width ASCII
   * full-width first (vocab.toFullwidth), as for a prompt. */
  function checkText(vocab, text, blockSize) {
    if (typeof text !== "string" || !text.trim()) throw new Error("the text is empty: type at least one character");
    const ids = vocab.encode(text);
    if (ids.every(i => i === UNK)) {
      throw new Error(`no character of '${Array.from(text).slice(0, 30).join("")}' is in the vocabulary: try Chinese text like the corpus`);
    }
    if (ids.length > blockSize) {
      throw new Error(`the text has ${ids.length} tokens, more than the model's block of ${blockSize}: shorten it`);
    }
    return ids;
  }

  /* interpret.attention_maps: [layer][head] -> T rows; row t holds query t's attention weights
   * over keys 0..t (each row sums to 1) and 0 above the diagonal, the causal mask. */
  function attentionMaps(model, ids) {
    return model.inspect(ids).attention;
  }

  /* interpret.next_token_lens at the last position: the residual stream after each block read
   * through the final LayerNorm and the tied head, as if the model stopped there (the "logit
   * lens"). Returns one {ids, probs} per block: the k most likely next tokens, most likely first
   * (ties: the smaller id first). After the last block it is the model's own next-token
   * distribution, the softmax of forward(ids)'s last row. */
  function lens(model, ids, k = 5) {
    const c = model.config, d = c.d_model, w = model.w;
    if (!(Number.isInteger(k) && k >= 1 && k <= c.vocab_size)) {
      throw new Error(`k must be a whole number from 1 to the vocabulary's ${c.vocab_size}, got ${k}`);
    }
    const { stream } = model.inspect(ids);
    const h = new Float32Array(d), logits = new Float32Array(c.vocab_size);
    return stream.map(after => {
      layerNorm(h, after[ids.length - 1], w["ln_f.weight"], w["ln_f.bias"], d, 1e-5);
      linear(logits, h, w["tok_emb.weight"], null, d, c.vocab_size);     // the tied head
      const p = softmax(logits), top = topK(logits, k);
      return { ids: top, probs: top.map(i => p[i]) };
    });
  }

  // ------------------------------------------------------------------ the global

  const loaded = {};

  /* The model a model file registered under `name`, built once. */
  function model(name) {
    if (!loaded[name]) {
      const exported = (global.GPT_MODELS || {})[name];
      if (!exported) throw new Error(`model "${name}" is not loaded (its file in _static/models/ is missing)`);
      loaded[name] = new GPT(exported);
    }
    return loaded[name];
  }

  global.GPTBook = {
    PAD, UNK, SEP, Vocab, GPT, Conversation, model,
    linear, layerNorm, erf, gelu, softmax, order, argmax, topK,
    checkSettings, filterLogits, nextTokenProbs, randomStream, sampleNext,
    contextStart, generate, stopIds, encodePrompt, classify,
    checkText, attentionMaps, lens,
  };
})(typeof window !== "undefined" ? window : globalThis);
