/* gpt-demo.js: the live demos on the book's pages, built on gpt.js (load that first).
 *
 *   <div class="gpt-attention" data-model="news" data-text="..." data-layer="0" data-head="all">
 *                                     chapter 03: every head's attention map for the text you type
 *   <div class="gpt-lens" data-model="news" data-text="..." data-k="5">
 *                                     chapter 04: the next token read after each block (a logit lens)
 *   <div class="gpt-explorer" data-model="news" data-prompt="中国人民" ...>  chapter 08's sliders
 *   <div class="gpt-chat" data-model="dialogue" ...>                          chapter 11's chat box
 *   <div class="gpt-compare" data-models="reviews,positive" data-reward="reward" ...>
 *                                     chapter 14: two models side by side, each judged by a reward model
 *
 * Each element's content is what a reader without JavaScript (or in JupyterLab) sees; it is
 * replaced by the demo. Model files are plain scripts next to this one (models/NAME.js), added
 * on demand, so the page works opened from disk (file://) as well as from a web server.
 * Each demo keeps its last result on the element (`el.gptDemo`) for the end-to-end tests.
 */
(function () {
  "use strict";

  const HERE = document.currentScript ? document.currentScript.src : "";
  const G = window.GPTBook;
  const pending = {};

  /* Add models/NAME.js to the page once; resolves when GPT_MODELS[name] is there. */
  function loadModelFile(name) {
    if ((window.GPT_MODELS || {})[name]) return Promise.resolve();
    if (!pending[name]) {
      pending[name] = new Promise((resolve, reject) => {
        const script = document.createElement("script");
        script.src = new URL(`models/${name}.js`, HERE).href;
        script.charset = "utf-8";
        script.onload = () => (window.GPT_MODELS || {})[name] ? resolve()
          : reject(new Error(`models/${name}.js loaded but did not define the model`));
        script.onerror = () => reject(new Error(`could not load models/${name}.js next to gpt-demo.js`));
        document.head.appendChild(script);
      });
    }
    return pending[name];
  }

  async function loadModel(name) {
    await loadModelFile(name);
    return G.model(name);
  }

  /* A tiny element builder: h("div", {class: "x"}, child, "text", ...). */
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v);
    }
    for (const c of children) if (c != null) el.append(c);
    return el;
  }

  function svg(tag, attrs, text) {
    const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
    if (text != null) el.textContent = text;
    return el;
  }

  /* widgets.token_label: specials as <sep>, blanks as visible symbols. */
  function tokenLabel(vocab, id) {
    const tok = vocab.idx2token[id];
    if (id < 3) return tok;
    return { " ": "␣", "\n": "↵", "\t": "⇥", "\u3000": "□" }[tok] || tok;
  }

  function showText(vocab, ids) {                     // <sep> as a line break symbol, other specials dropped
    return ids.map(i => i === G.SEP ? "↵" : i < 3 ? "" : vocab.idx2token[i]).join("");
  }

  /* Run `work` after the current event, once per burst; a failure is shown, never thrown. */
  function later(el, error, work) {
    let scheduled = false;
    return () => {
      if (scheduled) return;
      scheduled = true;
      setTimeout(() => {
        scheduled = false;
        try { work(); } catch (err) { error.textContent = `something went wrong: ${err.message}`; el.dataset.state = "error"; }
      }, 0);
    };
  }

  const STYLE = `
.gpt-demo { border: 1px solid var(--pst-color-border, #ccc); border-radius: 6px; padding: .8em 1em;
  margin: 1em 0; font-size: .95em; }
.gpt-demo .gpt-row { display: flex; flex-wrap: wrap; gap: 1em; align-items: flex-start; }
.gpt-demo label { display: grid; grid-template-columns: 8.5em 12em 3.5em; align-items: center;
  gap: .4em; margin: .15em 0; }
.gpt-demo input[type=text] { width: 100%; box-sizing: border-box; padding: .2em .4em; }
.gpt-demo .gpt-readout { font-variant-numeric: tabular-nums; text-align: right; }
.gpt-demo .gpt-sample { font-size: 1.1em; line-height: 1.6; margin-top: .6em; min-height: 3.2em;
  overflow-wrap: anywhere; }
.gpt-demo .gpt-status { color: var(--pst-color-text-muted, #666); font-size: .85em; min-height: 1.3em; }
.gpt-demo .gpt-error { color: #c00; font-size: .9em; min-height: 1.3em; }
.gpt-demo svg text { fill: var(--pst-color-text-base, #222); font-size: 13px; }
.gpt-demo .gpt-chart-box { width: 100%; max-width: 640px; margin: .4em 0; }
.gpt-demo .gpt-transcript { min-height: 4em; max-height: 22em; overflow-y: auto; margin-bottom: .6em; }
.gpt-demo .gpt-you { color: #1f77b4; font-weight: bold; }
.gpt-demo .gpt-bot { color: #2ca02c; font-weight: bold; }
.gpt-demo button { margin-left: .4em; padding: .2em .8em; }
.gpt-demo .gpt-controls { display: flex; flex-wrap: wrap; gap: .6em; align-items: center; }
.gpt-demo .gpt-controls input[type=text] { flex: 1; min-width: 10em; }
.gpt-demo .gpt-controls input[type=number] { width: 4.5em; }
.gpt-demo .gpt-controls label { display: inline-flex; gap: .3em; margin: 0; }
.gpt-demo .gpt-columns { display: grid; grid-template-columns: repeat(auto-fit, minmax(14em, 1fr)); gap: 1em; }
.gpt-demo .gpt-column { border-top: 1px solid var(--pst-color-border, #ccc); padding-top: .4em; }
.gpt-demo .gpt-column-title { font-weight: bold; }
.gpt-demo .gpt-column-title small { font-weight: normal; color: var(--pst-color-text-muted, #666); }
.gpt-demo .gpt-verdict { display: flex; gap: .5em; align-items: center; font-size: .9em;
  font-variant-numeric: tabular-nums; }
.gpt-demo .gpt-bar { width: 6em; height: .7em; background: #8883; border-radius: 3px; overflow: hidden; }
.gpt-demo .gpt-bar > div { height: 100%; }
.gpt-demo .gpt-positive { color: #2ca02c; }
.gpt-demo .gpt-negative { color: #d62728; }
.gpt-demo svg text { font-family: inherit; }
.gpt-demo select { padding: .15em .3em; }
.gpt-demo .gpt-caption { color: var(--pst-color-text-muted, #666); font-size: .85em; margin: .3em 0; }
.gpt-demo .gpt-maps { display: flex; flex-wrap: wrap; gap: .6em 1.2em; margin: .4em 0; }
.gpt-demo .gpt-maps svg { max-width: 100%; height: auto; }
.gpt-demo .gpt-maps rect[data-q]:hover { stroke: #d62728; stroke-width: 1.5; }
.gpt-demo .gpt-hover { font-size: .9em; min-height: 1.3em; font-variant-numeric: tabular-nums; }
.gpt-demo table.gpt-lens-table { border-collapse: collapse; margin: .4em 0; font-variant-numeric: tabular-nums; }
.gpt-demo .gpt-lens-table th, .gpt-demo .gpt-lens-table td { padding: .2em .7em .2em 0; text-align: left;
  border-bottom: 1px solid var(--pst-color-border, #ddd); vertical-align: top; white-space: nowrap; }
.gpt-demo .gpt-lens-table th small { font-weight: normal; color: var(--pst-color-text-muted, #666); }
.gpt-demo .gpt-lens-table .gpt-token { font-size: 1.15em; }
.gpt-demo .gpt-lens-table .gpt-bar { width: 4em; height: .35em; margin-top: .15em; }
.gpt-demo .gpt-lens-final td, .gpt-demo .gpt-lens-final th { font-weight: bold; }
`;

  function addStyle() {
    if (document.getElementById("gpt-demo-style")) return;
    document.head.append(h("style", { id: "gpt-demo-style" }, STYLE));
  }

  // ------------------------------------------------------------------ the bar chart

  /* Grouped bars over the `n` most likely tokens of the first distribution (widgets.plot_token_bars). */
  function barChart(vocab, dists, n, title) {
    const [first] = Object.values(dists);
    const tokens = G.order(first).slice(0, n);
    const W = 640, H = 230, left = 44, bottom = 40, top = 26, plotW = W - left - 8, plotH = H - top - bottom;
    const ymax = Math.max(1e-9, ...Object.values(dists).flatMap(p => tokens.map(t => p[t])));
    const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, width: "100%", role: "img",
      "aria-label": title, class: "gpt-chart", style: "max-width: 640px" });
    chart.append(svg("text", { x: left, y: 14 }, title));
    for (let k = 0; k <= 4; k++) {                      // y axis: 5 gridlines
      const v = ymax * k / 4, y = top + plotH - plotH * k / 4;
      chart.append(svg("line", { x1: left, x2: left + plotW, y1: y, y2: y, stroke: "#8884" }));
      chart.append(svg("text", { x: left - 4, y: y + 4, "text-anchor": "end" }, v.toFixed(2)));
    }
    const colors = ["#bbbbbb", "#1f77b4"], groups = Object.entries(dists), slot = plotW / tokens.length;
    const bw = slot * 0.8 / groups.length;
    tokens.forEach((t, i) => {
      groups.forEach(([label, p], j) => {
        const hgt = plotH * p[t] / ymax;
        chart.append(svg("rect", { x: left + i * slot + slot * 0.1 + j * bw, y: top + plotH - hgt,
          width: bw, height: hgt, fill: colors[j % colors.length] }, null));
        chart.lastChild.append(svg("title", {}, `${label}: ${tokenLabel(vocab, t)} ${p[t].toFixed(4)}`));
      });
      chart.append(svg("text", { x: left + (i + 0.5) * slot, y: top + plotH + 16, "text-anchor": "middle",
        class: "gpt-token" }, tokenLabel(vocab, t)));
    });
    chart.append(svg("text", { x: left + plotW / 2, y: H - 4, "text-anchor": "middle" },
      "next token (most likely first)"));
    groups.forEach(([label], j) => {                   // legend, top right
      const x = W - 190, y = top + 4 + 16 * j;
      chart.append(svg("rect", { x, y, width: 10, height: 10, fill: colors[j % colors.length] }));
      chart.append(svg("text", { x: x + 14, y: y + 9 }, label));
    });
    return chart;
  }

  // ------------------------------------------------------------------ chapters 03 and 04: a text to look at

  /* Read the text box (half-width ASCII written full-width first, as for a prompt) as
   * interpret.check_text does: the ids, or null after putting the message in `error`. */
  function readText(el, model, entry, error) {
    el.gptLastText = entry.value;
    try {
      const ids = G.checkText(model.vocab, model.vocab.toFullwidth(entry.value), model.config.block_size);
      error.textContent = "";
      return ids;
    } catch (err) {
      error.textContent = err.message;
      el.gptDemo.error = err.message;
      return null;
    }
  }

  /* Redraw while the reader types: `update` 300 ms after the last keystroke (never in the middle
   * of an input-method composition), unless the text is the one read last. Enter and the Update
   * button still redraw at once. */
  function whileTyping(el, entry, update) {
    let timer = null;
    const schedule = () => {
      clearTimeout(timer);
      timer = setTimeout(() => { if (entry.value !== el.gptLastText) update(); }, 300);
    };
    entry.addEventListener("input", e => { if (!e.isComposing) schedule(); });
    entry.addEventListener("compositionend", schedule);
  }

  function range(n) { return Array.from({ length: n }, (_, i) => i); }

  // ------------------------------------------------------------------ chapter 03: attention maps

  const VIRIDIS = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];

  /* A weight in [0, 1] as a colour of viridis, the notebook's colour map (dark: 0, yellow: 1). */
  function viridis(v) {
    const x = Math.min(1, Math.max(0, v)) * (VIRIDIS.length - 1);
    const i = Math.min(Math.floor(x), VIRIDIS.length - 2), f = x - i;
    return `rgb(${VIRIDIS[i].map((a, j) => Math.round(a + (VIRIDIS[i + 1][j] - a) * f)).join(",")})`;
  }

  /* One head's causal map (widgets.AttentionExplorer): a row per query, a column per key, a
   * cell per pair the mask allows (none above the diagonal), the characters on both axes.
   * `size`: the grid's width in pixels; the labels shrink with the cells. */
  function attentionMap(labels, rows, title, size, headIndex) {
    const T = labels.length, cell = size / T, font = Math.max(4, Math.min(14, cell * 0.8));
    const left = font + 8, top = 18 + font + 6, W = left + size + 2, H = top + size + 2;
    const map = svg("svg", { viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img",
      "aria-label": title, class: "gpt-map", "data-head": headIndex });
    map.append(svg("text", { x: left, y: 13 }, title));
    const grid = svg("g", { "shape-rendering": "crispEdges" });
    rows.forEach((row, q) => {
      for (let k = 0; k <= q; k++) {
        const cellRect = svg("rect", { x: left + k * cell, y: top + q * cell, width: cell, height: cell,
          fill: viridis(row[k]), "data-q": q, "data-k": k, "data-w": row[k] });
        cellRect.append(svg("title", {}, `${labels[q]} → ${labels[k]}: ${row[k].toFixed(3)}`));
        grid.append(cellRect);
      }
    });
    map.append(grid);
    const style = `font-size: ${font.toFixed(1)}px`;     // inline: the stylesheet's 13px would win
    labels.forEach((label, i) => {
      const middle = (i + 0.5) * cell;
      map.append(svg("text", { x: left + middle, y: top - 4, "text-anchor": "middle", style, class: "gpt-key" }, label));
      map.append(svg("text", { x: left - 4, y: top + middle, "text-anchor": "end", "dominant-baseline": "central",
        style, class: "gpt-query" }, label));
    });
    return map;
  }

  async function attention(el) {
    const d = el.dataset;
    const entry = h("input", { type: "text", value: d.text || "中国人民的生活水平不断提高", "aria-label": "text" });
    const go = h("button", { type: "button", class: "gpt-update" }, "Update");
    const layer = h("select", { name: "layer", "aria-label": "layer" });
    const head = h("select", { name: "head", "aria-label": "head" });
    const error = h("div", { class: "gpt-error", role: "alert" });
    const maps = h("div", { class: "gpt-maps" });
    const hover = h("div", { class: "gpt-hover" }, "\u00a0");
    const caption = h("div", { class: "gpt-caption" },
      "Row t is what the character at t (the query) reads from itself and the characters before it " +
      "(the keys, in columns); each row sums to 1 and nothing lies above the diagonal, the causal mask. " +
      "Dark is 0, yellow is 1. Look for heads that read the previous character (a bright line just " +
      "below the diagonal), heads that gather at punctuation (a bright column under ， or 。), " +
      "heads that find the same character earlier in the text, and heads that park their weight " +
      "on the first character when nothing else fits.");
    const status = h("div", { class: "gpt-status" }, "loading the model…");
    el.replaceChildren(h("div", { class: "gpt-controls" }, entry, go, h("label", {}, "layer", layer),
      h("label", {}, "head", head)), error, maps, hover, caption, status);
    el.classList.add("gpt-demo");
    el.gptDemo = { renders: 0 };

    const model = await loadModel(d.model || "news");
    const c = model.config, vocab = model.vocab;
    layer.replaceChildren(...range(c.n_layers).map(l => h("option", { value: l }, `layer ${l}`)));
    head.replaceChildren(h("option", { value: "all" }, "all heads"),
      ...range(c.n_heads).map(i => h("option", { value: i }, `head ${i}`)));
    if (Number(d.layer) >= 0 && Number(d.layer) < c.n_layers) layer.value = String(Number(d.layer));
    if (Number(d.head) >= 0 && Number(d.head) < c.n_heads) head.value = String(Number(d.head));

    let shown = null;                                  // the last text read: {ids, labels, maps, plain, ms}

    function read() {
      const ids = readText(el, model, entry, error);
      if (!ids) return false;
      const t0 = performance.now();
      const weights = G.attentionMaps(model, ids);
      shown = { ids, labels: ids.map(i => tokenLabel(vocab, i)), maps: weights, ms: performance.now() - t0,
        plain: weights.map(l => l.map(rows => rows.map(r => Array.from(r)))) };
      return true;
    }

    function draw() {
      if (!shown) return;
      const l = Number(layer.value), which = head.value === "all" ? "all" : Number(head.value);
      const heads = which === "all" ? range(c.n_heads) : [which];
      const T = shown.ids.length;
      const size = which === "all" ? Math.max(200, Math.min(300, 16 * T)) : Math.max(320, Math.min(640, 28 * T));
      maps.replaceChildren(...heads.map(i => attentionMap(shown.labels, shown.maps[l][i], `layer ${l}, head ${i}`, size, i)));
      hover.textContent = "\u00a0";
      status.textContent = `${T} token${T === 1 ? "" : "s"} · ${c.n_layers} layers × ${c.n_heads} heads of ` +
        `weights in ${Math.round(shown.ms)} ms in your browser · point at a cell for its weight`;
      el.gptDemo = { renders: el.gptDemo.renders + 1, ids: shown.ids, layer: l, head: which, maps: shown.plain,
        error: null };
      el.dataset.state = "ready";
    }

    maps.addEventListener("mouseover", e => {
      const cell = e.target.closest && e.target.closest("rect[data-q]");
      if (!cell || !shown) return;
      const q = Number(cell.dataset.q), k = Number(cell.dataset.k), i = cell.closest("svg").dataset.head;
      hover.textContent = `layer ${layer.value}, head ${i}: ${shown.labels[q]} (position ${q}) reads ` +
        `${shown.labels[k]} (position ${k}) with weight ${Number(cell.dataset.w).toFixed(3)}`;
    });
    const update = later(el, error, () => { if (read()) draw(); });
    go.addEventListener("click", update);
    entry.addEventListener("keydown", e => { if (e.key === "Enter" && !e.isComposing) update(); });
    whileTyping(el, entry, update);
    const redraw = later(el, error, draw);
    layer.addEventListener("change", redraw);
    head.addEventListener("change", redraw);
    if (read()) draw();
    el.dataset.state = el.dataset.state || "ready";    // loaded, even if data-text was unreadable
  }

  // ------------------------------------------------------------------ chapter 04: the next-token lens

  async function lensView(el) {
    const d = el.dataset;
    const entry = h("input", { type: "text", value: d.text || "中国人民的生活水平不断", "aria-label": "text" });
    const go = h("button", { type: "button", class: "gpt-update" }, "Update");
    const error = h("div", { class: "gpt-error", role: "alert" });
    const table = h("div", { class: "gpt-lens-box" });
    const caption = h("div", { class: "gpt-caption" },
      "Each row reads the residual stream at the last character after one more block, through the " +
      "final LayerNorm and the output head, as if the model stopped there (a “logit lens”). The last " +
      "row is the model's own prediction. Watch where the guess appears, sharpens or changes its mind.");
    const status = h("div", { class: "gpt-status" }, "loading the model…");
    el.replaceChildren(h("div", { class: "gpt-controls" }, entry, go), error, table, caption, status);
    el.classList.add("gpt-demo");
    el.gptDemo = { renders: 0 };

    const model = await loadModel(d.model || "news");
    const c = model.config, vocab = model.vocab;
    const k = Math.min(c.vocab_size, Math.max(1, Math.floor(Number(d.k) || 5)));

    function render() {
      const ids = readText(el, model, entry, error);
      if (!ids) return;
      const t0 = performance.now();
      const rows = G.lens(model, ids, k);
      const ms = performance.now() - t0, last = rows.length - 1;
      const cellOf = (id, p) => h("td", { title: `${tokenLabel(vocab, id)} ${p.toFixed(4)}` },
        h("span", { class: "gpt-token" }, tokenLabel(vocab, id)), " ", h("span", { class: "gpt-p" }, p.toFixed(2)),
        h("div", { class: "gpt-bar" }, h("div", { style: `width: ${(100 * p).toFixed(1)}%; background: #1f77b4` })));
      table.replaceChildren(h("table", { class: "gpt-lens-table" },
        h("thead", {}, h("tr", {}, h("th", {}, "read after"), ...range(k).map(i => h("th", {}, `#${i + 1}`)))),
        h("tbody", {}, ...rows.map((r, b) => h("tr", b === last ? { class: "gpt-lens-final" } : {},
          h("th", { scope: "row" }, `block ${b}`, b === last ? h("small", {}, " (the model's prediction)") : null),
          ...r.ids.map((id, j) => cellOf(id, r.probs[j])))))));
      status.textContent = `the next token after “${showText(vocab, ids)}” (${ids.length} tokens), the top ${k} ` +
        `after each of ${c.n_layers} blocks · ${Math.round(ms)} ms in your browser`;
      el.gptDemo = { renders: el.gptDemo.renders + 1, ids, rows: rows.map(r => ({ ids: r.ids.slice(), probs: r.probs.slice() })),
        error: null };
      el.dataset.state = "ready";
    }

    const update = later(el, error, render);
    go.addEventListener("click", update);
    entry.addEventListener("keydown", e => { if (e.key === "Enter" && !e.isComposing) update(); });
    whileTyping(el, entry, update);
    render();
    el.dataset.state = el.dataset.state || "ready";    // loaded, even if data-text was unreadable
  }

  // ------------------------------------------------------------------ chapter 08: the explorer

  function slider(name, min, max, step, value, format) {
    const input = h("input", { type: "range", min, max, step, value, name, "aria-label": name });
    const readout = h("span", { class: "gpt-readout" });
    const show = () => { readout.textContent = format(Number(input.value)); };
    input.addEventListener("input", show);
    show();
    return { input, label: h("label", {}, h("span", {}, name), input, readout) };
  }

  async function explorer(el) {
    const d = el.dataset;
    const prompt = h("input", { type: "text", value: d.prompt || "中国", "aria-label": "prompt" });
    const s = {
      temperature: slider("temperature", 0, 2, 0.05, d.temperature || 0.8, v => v === 0 ? "0 (greedy)" : v.toFixed(2)),
      topK: slider("top-k", 0, 100, 1, d.topK || 0, v => v === 0 ? "off" : String(v)),
      topP: slider("top-p", 0.05, 1, 0.01, d.topP || 1, v => v >= 1 ? "off" : v.toFixed(2)),
      length: slider("length", 1, 200, 1, d.length || 60, String),
      seed: slider("seed", 0, 99, 1, d.seed || 0, String),
    };
    const chart = h("div", { class: "gpt-chart-box" });
    const sample = h("div", { class: "gpt-sample" });
    const status = h("div", { class: "gpt-status" }, "loading the model…");
    const error = h("div", { class: "gpt-error", role: "alert" });
    const controls = h("div", {}, h("label", {}, h("span", {}, "prompt"), prompt),
      ...Object.values(s).map(x => x.label));
    el.replaceChildren(controls, error, chart, status, sample);
    el.classList.add("gpt-demo");
    el.gptDemo = { renders: 0 };

    const model = await loadModel(d.model || "news");
    const vocab = model.vocab;

    function settings() {
      const k = Number(s.topK.input.value), p = Number(s.topP.input.value);
      return { temperature: Number(s.temperature.input.value), topK: k === 0 ? null : k, topP: p >= 1 ? null : p };
    }

    function render() {
      let ids;
      try {
        ids = G.encodePrompt(vocab, prompt.value);
      } catch (err) {
        error.textContent = err.message;
        el.dataset.state = "error";
        return;
      }
      error.textContent = "";
      ids = ids.slice(-model.config.block_size);        // crop to the context, as the widget does
      const set = settings();
      const logits = model.forward(ids, true)[ids.length - 1];
      const modelProbs = G.softmax(logits), probs = G.nextTokenProbs(logits, set);
      const kept = probs.reduce((n, p) => n + (p > 0), 0);
      chart.replaceChildren(barChart(vocab, { "model (T=1)": modelProbs, "sampled from": probs }, 20,
        `next token after the prompt: ${kept} token${kept === 1 ? "" : "s"} can be drawn`));
      const n = Number(s.length.input.value), seed = Number(s.seed.input.value);
      const t0 = performance.now();
      const fresh = G.generate(model, ids, n, set, { seed });
      const seconds = (performance.now() - t0) / 1000;
      sample.replaceChildren(h("b", {}, prompt.value), showText(vocab, fresh));
      const rate = fresh.length / Math.max(seconds, 1e-6);
      status.textContent = `temperature=${set.temperature}, top_k=${set.topK ?? "None"}, ` +
        `top_p=${set.topP ?? "None"}, ${fresh.length} new tokens, seed=${seed}` +
        (set.temperature === 0 ? " (greedy: the seed does not matter)" : "") +
        ` · ${Math.round(rate)} tokens/s in your browser`;
      el.gptDemo = { renders: el.gptDemo.renders + 1, ids, logits, probs, fresh, text: showText(vocab, fresh),
        tokensPerSecond: rate, settings: set };
      el.dataset.state = "ready";
    }

    const schedule = later(el, error, render);          // coalesce a burst of slider events
    prompt.addEventListener("input", schedule);
    for (const x of Object.values(s)) x.input.addEventListener("input", schedule);
    render();
  }

  // ------------------------------------------------------------------ chapter 11: the chat box

  async function chat(el) {
    const d = el.dataset;
    const transcript = h("div", { class: "gpt-transcript", "aria-live": "polite" });
    const entry = h("input", { type: "text", placeholder: "说点什么，按回车发送", "aria-label": "message" });
    const send = h("button", { type: "button", class: "gpt-send" }, "发送");
    const clear = h("button", { type: "button", class: "gpt-clear" }, "清空");
    const error = h("div", { class: "gpt-error", role: "alert" });
    const status = h("div", { class: "gpt-status" }, "loading the model…");
    el.replaceChildren(transcript, h("div", { class: "gpt-row" }, h("div", { style: "flex: 1" }, entry), send, clear),
      error, status);
    el.classList.add("gpt-demo");

    const model = await loadModel(d.model || "dialogue");
    const conv = new G.Conversation(model, { maxNewTokens: Number(d.maxNewTokens || 32),
      temperature: Number(d.temperature ?? 0.8), topP: d.topP ? Number(d.topP) : null, seed: Number(d.seed || 0) });
    el.gptDemo = { conversation: conv };

    function draw() {
      transcript.replaceChildren(...conv.turns.map(t => h("div", {},
        h("span", { class: t.speaker === "user" ? "gpt-you" : "gpt-bot" }, t.speaker === "user" ? "你：" : "机："),
        t.text || h("i", {}, "（无回复）"))));
      if (!conv.turns.length) transcript.replaceChildren(h("i", {}, "（还没有对话）"));
      transcript.scrollTop = transcript.scrollHeight;
    }

    function say() {
      try {
        const t0 = performance.now();
        conv.say(entry.value);
        error.textContent = "";
        entry.value = "";
        status.textContent = `reply in ${Math.round(performance.now() - t0)} ms · the model reads ` +
          `${conv.contextIds().length} of at most ${conv.contextBudget} tokens of history`;
      } catch (err) {
        error.textContent = err.message;
      }
      draw();
    }
    send.addEventListener("click", say);
    entry.addEventListener("keydown", e => { if (e.key === "Enter" && !e.isComposing) say(); });
    clear.addEventListener("click", () => { conv.reset(); error.textContent = ""; status.textContent = "cleared"; draw(); });
    status.textContent = `temperature ${conv.settings.temperature}, top-p ${conv.settings.topP ?? "off"}, ` +
      `replies up to ${conv.maxNewTokens} characters`;
    draw();
    el.dataset.state = "ready";
  }

  // ------------------------------------------------------------------ chapter 14: two models side by side

  /* The reward model's verdict on one text: P(positive) as a number, a bar, and a word. */
  function verdict(p) {
    const positive = p > 0.5, color = positive ? "#2ca02c" : "#d62728";
    return h("div", { class: "gpt-verdict", title: "the reward model's P(positive)" },
      h("span", {}, "reward"),
      h("span", { class: "gpt-reward" }, p.toFixed(3)),
      h("div", { class: "gpt-bar" }, h("div", { style: `width: ${(100 * p).toFixed(1)}%; background: ${color}` })),
      h("span", { class: positive ? "gpt-positive" : "gpt-negative" }, positive ? "正面 positive" : "负面 negative"));
  }

  async function compare(el) {
    const d = el.dataset;
    const names = (d.models || "reviews,positive").split(",").map(x => x.trim()).filter(Boolean);
    const length = Number(d.length || 24), temperature = Number(d.temperature ?? 1);
    const prompt = h("input", { type: "text", value: d.prompt || "这本书", "aria-label": "prompt" });
    const go = h("button", { type: "button", class: "gpt-generate" }, "Generate");
    const seed = h("input", { type: "number", min: 0, step: 1, value: d.seed || 0, name: "seed", "aria-label": "seed" });
    const greedy = h("input", { type: "checkbox", name: "greedy", "aria-label": "greedy" });
    const columns = names.map(() => h("div", { class: "gpt-column" }));
    const error = h("div", { class: "gpt-error", role: "alert" });
    const status = h("div", { class: "gpt-status" }, "loading the models…");
    el.replaceChildren(
      h("div", { class: "gpt-controls" }, prompt, go,
        h("label", {}, "seed", seed), h("label", {}, greedy, "greedy")),
      error, h("div", { class: "gpt-columns" }, ...columns), status);
    el.classList.add("gpt-demo");
    el.gptDemo = { renders: 0, results: [] };

    // every model file at once; the reward model too, if there is one
    const models = await Promise.all(names.map(loadModel));
    const reward = d.reward ? await loadModel(d.reward) : null;
    const vocab = models[0].vocab;
    for (const m of models.concat(reward || [])) {    // one vocabulary: the same ids mean the same text
      if (m.vocab.idx2token.join("\n") !== vocab.idx2token.join("\n")) {
        throw new Error(`models "${models[0].name}" and "${m.name}" have different vocabularies`);
      }
    }
    const block = Math.min(...models.map(m => m.config.block_size));
    models.forEach((m, i) => columns[i].replaceChildren(h("div", { class: "gpt-column-title" },
      m.name, " ", h("small", {}, m.meta.title || ""))));

    /* P(positive) of prompt + continuation as chapter 14 scores it: <sep> dropped, the first
     * block_size tokens read (preference.classifier_reward). */
    function score(ids) {
      const text = ids.filter(i => i !== G.SEP).slice(0, reward.config.block_size);
      return G.classify(reward, text)[1];
    }

    function render() {
      let ids;
      try {
        ids = G.encodePrompt(vocab, vocab.toFullwidth(prompt.value));
      } catch (err) {
        error.textContent = err.message;
        el.gptDemo.error = err.message;
        return;
      }
      error.textContent = "";
      ids = ids.slice(-block);                          // crop to the context, as the widget does
      const settings = { temperature: greedy.checked ? 0 : temperature };
      const s = Math.max(0, Math.floor(Number(seed.value) || 0));
      const t0 = performance.now();
      let tokens = 0, generating = 0;                   // generation alone, for tokens/s
      const results = models.map((model, i) => {
        const t1 = performance.now();
        const fresh = G.generate(model, ids, length, settings, { stopTokens: [G.SEP], seed: s });
        generating += performance.now() - t1;
        tokens += fresh.length;
        const text = showText(vocab, fresh);
        const p = reward ? score(ids.concat(fresh)) : null;
        columns[i].replaceChildren(columns[i].firstChild,
          h("div", { class: "gpt-sample" }, h("b", {}, showText(vocab, ids)), text),
          p === null ? null : verdict(p));
        return { model: model.name, ids: fresh, text, reward: p };
      });
      const seconds = (performance.now() - t0) / 1000;
      const rate = tokens / Math.max(generating / 1000, 1e-6);
      status.textContent = (settings.temperature === 0 ? "greedy (the seed does not matter)"
        : `temperature ${settings.temperature}, seed ${s} (the same for both)`) +
        `, up to ${length} new tokens, stopping at <sep>` +
        (reward ? ` · judged by the reward model "${reward.name}": P(positive)` : "") +
        ` · ${Math.round(seconds * 1000)} ms in your browser (${Math.round(rate)} tokens/s)`;
      el.gptDemo = { renders: el.gptDemo.renders + 1, prompt: ids, results, settings, seed: s,
        tokensPerSecond: rate, error: null };
      el.dataset.state = "ready";
    }

    const schedule = later(el, error, render);
    go.addEventListener("click", schedule);
    prompt.addEventListener("keydown", e => { if (e.key === "Enter" && !e.isComposing) schedule(); });
    seed.addEventListener("change", schedule);
    greedy.addEventListener("change", schedule);
    render();
    el.dataset.state = el.dataset.state || "ready";    // loaded, even if data-prompt was unreadable
  }

  // ------------------------------------------------------------------ start

  function start() {
    if (!G) return;
    addStyle();
    const demos = [...document.querySelectorAll(".gpt-attention")].map(el => [el, attention])
      .concat([...document.querySelectorAll(".gpt-lens")].map(el => [el, lensView]))
      .concat([...document.querySelectorAll(".gpt-explorer")].map(el => [el, explorer]))
      .concat([...document.querySelectorAll(".gpt-chat")].map(el => [el, chat]))
      .concat([...document.querySelectorAll(".gpt-compare")].map(el => [el, compare]));
    for (const [el, make] of demos) {
      make(el).catch(err => {
        el.dataset.state = "error";
        const box = el.querySelector(".gpt-error") || el;
        box.textContent = `The live demo could not start: ${err.message}`;
      });
    }
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
