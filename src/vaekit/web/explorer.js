// The explorer page: every number comes from the server's /api/<run>/... answers; nothing is fetched
// from anywhere else. One section per run (two runs are shown side by side).
"use strict";

const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                 "#bcbd22", "#17becf"];
const statusLine = document.getElementById("status");
const LEGEND_CLASSES = 20;  // more classes than this: the legend names the first and last, not every one

// Up to ten classes take the palette; more are spread over the hue circle by class number, so no
// two classes share a colour the way palette % 10 made every eleventh one.
function classColour(k, top) {
  return top < PALETTE.length ? PALETTE[k] : `hsl(${Math.round((300 * k) / top)}, 75%, 42%)`;
}

function setStatus(text, isError) {
  statusLine.textContent = text;
  statusLine.className = isError ? "error" : "";
}

async function call(path, body) {
  const init = body === undefined ? {} :
    {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)};
  const response = await fetch(path, init);
  const answer = await response.json();
  if (!response.ok) throw new Error(answer.error || response.statusText);
  return answer;
}

// Shows an image (PNG data URL) or a vector (line plot) inside element el.
function show(el, payload, size) {
  el.replaceChildren();
  if (payload.png) {
    const img = document.createElement("img");
    img.src = payload.png;
    if (size) { img.style.width = size + "px"; img.style.height = size + "px"; }
    el.appendChild(img);
    return;
  }
  const values = payload.values, canvas = document.createElement("canvas");
  canvas.width = size || 140; canvas.height = Math.round((size || 140) * 0.7);
  const ctx = canvas.getContext("2d");
  const lo = Math.min(...values), hi = Math.max(...values), span = (hi - lo) || 1;
  ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, canvas.width, canvas.height);
  ctx.strokeStyle = "#1f77b4"; ctx.beginPath();
  values.forEach((v, i) => {
    const x = 2 + (canvas.width - 4) * i / Math.max(1, values.length - 1);
    const y = canvas.height - 2 - (canvas.height - 4) * (v - lo) / span;
    i ? ctx.lineTo(x, y) : ctx.moveTo(x, y);
  });
  ctx.stroke();
  el.appendChild(canvas);
}

// Runs fn at most once at a time; while one call is in flight only the latest request waits.
function latestOnly(fn) {
  let busy = false, pending = null;
  return async function run(...args) {
    if (busy) { pending = args; return; }
    busy = true;
    try { await fn(...args); } catch (e) { setStatus(e.message, true); }
    busy = false;
    if (pending) { const next = pending; pending = null; run(...next); }
  };
}

class RunSection {
  constructor(index, info, root) {
    this.index = index; this.info = info; this.root = root;
    this.q = (sel) => root.querySelector(sel);
    this.api = (name, body) => call(`/api/${index}/${name}`, body);
    this.seed = 0;
    this.label = info.classes ? info.default_label : undefined;  // a conditional model decodes as this class
  }

  // The request body with the chosen class, for a conditional model.
  withLabel(body) { return this.label === undefined ? body : {...body, label: this.label}; }

  startClasses() {
    if (!this.info.classes) return;
    const pick = this.q(".class-pick"), names = this.info.class_names;
    pick.replaceChildren(...Array.from({length: this.info.classes}, (_, k) => {
      const option = document.createElement("option");
      option.value = k; option.textContent = names && names[k] !== undefined ? `${k}: ${names[k]}` : String(k);
      return option;
    }));
    pick.value = this.label;
    this.q(".class-row").hidden = false;
    pick.addEventListener("change", () => {
      this.label = parseInt(pick.value, 10);
      this.seed = Math.max(0, this.seed - 1);
      Promise.all([this.redecode && this.redecode(), this.more && this.more()]).catch((e) => setStatus(e.message, true));
    });
  }

  async start() {
    const info = this.info, layers = info.layers.length > 1 ? `, layers ${info.layers.join("+")} (top layer shown)` : "";
    this.q(".title").textContent = info.name;
    this.q(".meta").textContent = `${info.preset || "custom"} · ${info.model} · ${info.dataset} · ` +
      `latent ${info.latent_dim}${layers} · ${info.epochs} epochs`;
    this.q(".note").textContent = info.note || "";
    this.root.dataset.testid = `run-${this.index}`;
    this.startClasses();
    await Promise.all([this.startMap(), this.startCurves(), this.startSamples()]);
    this.startInterpolation();
    await this.choose(0);
  }

  async startMap() {
    const map = await this.api("map");
    this.points = map.xy; this.labels = map.labels; this.bounds = map.bounds;
    this.topLabel = map.labels ? Math.max(...map.labels) : 0;
    this.q(".axes").textContent = `(${map.axes})`;
    const canvas = this.q(".map");
    this.drawMap();
    const decodeAt = latestOnly(async (u, v) => {
      const answer = await this.api("decode_map", this.withLabel({u, v}));
      show(this.q(".decoded"), answer);
      this.q(".decoded-caption").textContent = `decoded at (${u.toFixed(2)}, ${v.toFixed(2)})`;
    });
    const toMap = (ev) => {
      const r = canvas.getBoundingClientRect(), [x0, x1, y0, y1] = this.bounds;
      const px = (ev.clientX - r.left) * canvas.width / r.width, py = (ev.clientY - r.top) * canvas.height / r.height;
      return [px, py, x0 + (x1 - x0) * px / canvas.width, y1 - (y1 - y0) * py / canvas.height];
    };
    canvas.addEventListener("mousemove", (ev) => { const [, , u, v] = toMap(ev); decodeAt(u, v); });
    await decodeAt((this.bounds[0] + this.bounds[1]) / 2, (this.bounds[2] + this.bounds[3]) / 2);
    canvas.addEventListener("click", (ev) => {
      const [px, py, u, v] = toMap(ev);
      this.pin = [px, py];
      decodeAt(u, v);
      this.choose(this.nearest(px, py));
    });
    if (map.labels) {
      const names = this.info.class_names, seen = [...new Set(map.labels)].sort((a, b) => a - b);
      const item = (k) => {
        const span = document.createElement("span");
        span.innerHTML = `<i style="background:${classColour(k, this.topLabel)}"></i>`;
        span.append(names && names[k] !== undefined ? names[k] : String(k));
        return span;
      };
      const many = seen.length > LEGEND_CLASSES;
      const between = document.createElement("span");
      between.textContent = `... (${seen.length} classes, coloured in order)`;
      this.q(".legend").replaceChildren(...(many ? [item(seen[0]), between, item(seen[seen.length - 1])] : seen.map(item)));
    }
  }

  toCanvas([u, v]) {
    const c = this.q(".map"), [x0, x1, y0, y1] = this.bounds;
    return [(u - x0) / (x1 - x0) * c.width, (y1 - v) / (y1 - y0) * c.height];
  }

  nearest(px, py) {
    let best = 0, bestD = Infinity;
    this.points.forEach((p, i) => {
      const [x, y] = this.toCanvas(p), d = (x - px) ** 2 + (y - py) ** 2;
      if (d < bestD) { bestD = d; best = i; }
    });
    return best;
  }

  drawMap() {
    const canvas = this.q(".map"), ctx = canvas.getContext("2d");
    ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, canvas.width, canvas.height);
    this.points.forEach((p, i) => {
      const [x, y] = this.toCanvas(p);
      ctx.fillStyle = this.labels ? classColour(this.labels[i], this.topLabel) : "#1f77b4";
      ctx.globalAlpha = 0.6; ctx.fillRect(x - 1.5, y - 1.5, 3, 3);
    });
    ctx.globalAlpha = 1;
    if (this.chosen !== undefined) {
      const [x, y] = this.toCanvas(this.points[this.chosen]);
      ctx.strokeStyle = "#000"; ctx.lineWidth = 2; ctx.beginPath(); ctx.arc(x, y, 6, 0, 2 * Math.PI); ctx.stroke();
    }
    if (this.pin) {
      const [x, y] = this.pin;
      ctx.strokeStyle = "#d00"; ctx.lineWidth = 2; ctx.beginPath();
      ctx.moveTo(x - 6, y); ctx.lineTo(x + 6, y); ctx.moveTo(x, y - 6); ctx.lineTo(x, y + 6); ctx.stroke();
    }
  }

  // Picks example i: its input, its code, and one slider per dimension (most KL first).
  async choose(i) {
    const ex = await this.api("example", {index: i});
    this.chosen = i; this.code = ex.code.slice();
    if (this.info.classes && ex.label !== null) { this.label = ex.label; this.q(".class-pick").value = ex.label; }
    this.drawMap();
    const label = ex.label === null ? "" : `, label ${this.info.class_names ? this.info.class_names[ex.label] : ex.label}`;
    this.q(".example-name").textContent = `(test example ${i}${label})`;
    show(this.q(".example-input"), ex.input);
    show(this.q(".slider-out"), ex.decoded);
    const decode = latestOnly(async () =>
      show(this.q(".slider-out"), await this.api("decode", this.withLabel({code: this.code}))));
    this.redecode = decode;
    const rows = [];
    this.info.dims_by_kl.forEach((d, k) => {
      const name = document.createElement("span"), value = document.createElement("span");
      const slider = document.createElement("input");
      const kl = this.info.kl ? ` (KL ${this.info.kl[k].toFixed(2)})` : "";
      name.textContent = `z${d + 1}${kl}`;
      Object.assign(slider, {type: "range", min: ex.code[d] - 4, max: ex.code[d] + 4, step: 0.01, value: ex.code[d]});
      slider.dataset.dim = d;
      value.textContent = ex.code[d].toFixed(2);
      slider.addEventListener("input", () => {
        this.code[d] = parseFloat(slider.value);
        value.textContent = this.code[d].toFixed(2);
        decode();
      });
      rows.push(name, slider, value);
    });
    this.q(".sliders").replaceChildren(...rows);
  }

  startInterpolation() {
    const max = this.info.examples - 1;
    this.q(".interp-a").max = max; this.q(".interp-b").max = max;
    this.q(".interp-go").addEventListener("click", async () => {
      try {
        const answer = await this.api("interpolate", {
          a: parseInt(this.q(".interp-a").value, 10), b: parseInt(this.q(".interp-b").value, 10),
          steps: parseInt(this.q(".interp-steps").value, 10), mode: this.q(".interp-mode").value});
        this.strip(".interp-out", answer.steps);
      } catch (e) { setStatus(e.message, true); }
    });
  }

  async startSamples() {
    const title = this.q(".samples-panel h3"), pick = this.q(".sampler");
    const titles = {
      prior: this.info.variational ? "Samples from the prior"
        : "Decoded draws from N(0, I) (an autoencoder has no prior)",  // an AE's codes follow no known distribution
      gmm: `Samples from a ${this.info.gmm_components}-component Gaussian mixture fitted to the training codes`,
    };
    if (this.info.samplers.includes("gmm")) {
      this.q(".sampler-choice").hidden = false;
      if (!this.info.variational) pick.value = "gmm";  // an AE's only meaningful samples
      pick.addEventListener("change", () => { this.seed = 0; more().catch((e) => setStatus(e.message, true)); });
    }
    const more = async () => {
      title.textContent = titles[pick.value];
      const answer = await this.api("samples", this.withLabel({n: 16, seed: this.seed, sampler: pick.value}));
      this.q(".seed").textContent = `seed ${this.seed}`;
      this.strip(".samples-out", answer.samples);
      this.seed += 1;
    };
    this.more = more;
    this.q(".more").addEventListener("click", () => more().catch((e) => setStatus(e.message, true)));
    await more();
  }

  strip(sel, payloads) {
    const el = this.q(sel);
    el.replaceChildren(...payloads.map((p) => { const box = document.createElement("span"); show(box, p, 64); return box; }));
  }

  async startCurves() {
    const {history, metrics, problem} = await this.api("curves");
    if (problem) setStatus(problem, true);
    const canvas = this.q(".curves"), ctx = canvas.getContext("2d");
    ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, canvas.width, canvas.height);
    const series = [["train_loss", "#1f77b4"], ["test_loss", "#d62728"]];
    const all = history.flatMap((r) => series.map(([k]) => r[k])).filter((v) => Number.isFinite(v));
    if (all.length) {
      const lo = Math.min(...all), hi = Math.max(...all), span = (hi - lo) || 1, n = history.length;
      const X = (i) => 40 + (canvas.width - 50) * (n > 1 ? i / (n - 1) : 0.5);
      const Y = (v) => canvas.height - 25 - (canvas.height - 40) * (v - lo) / span;
      ctx.strokeStyle = "#999"; ctx.strokeRect(40, 15, canvas.width - 50, canvas.height - 40);
      ctx.fillStyle = "#444"; ctx.font = "11px sans-serif";
      ctx.fillText(hi.toFixed(1), 2, 20); ctx.fillText(lo.toFixed(1), 2, canvas.height - 25);
      ctx.fillText(`epoch 1 … ${history[n - 1].epoch}`, 45, canvas.height - 8);
      series.forEach(([key, colour], s) => {
        ctx.strokeStyle = colour; ctx.beginPath();
        history.forEach((r, i) => { const v = r[key]; if (Number.isFinite(v)) i ? ctx.lineTo(X(i), Y(v)) : ctx.moveTo(X(i), Y(v)); });
        ctx.stroke();
        ctx.fillStyle = colour; ctx.fillText(key.replace("_", " "), canvas.width - 170 + 80 * s, 12);
      });
    }
    const rows = [];
    const add = (name, v) => { if (typeof v === "number") rows.push(`<tr><td>${name}</td><td>${v.toFixed(3)}</td></tr>`); };
    if (metrics) {
      ["loss", "recon", "kl", "nll_iwae", "bits_per_dim", "active_units"].forEach((k) => add(k, metrics[k]));
    } else if (history.length) {
      const last = history[history.length - 1];
      const keys = this.info.variational ? ["test_loss", "test_recon", "test_kl"] : ["test_recon"];
      keys.forEach((k) => add(`${k} (epoch ${last.epoch})`, last[k]));
    }
    this.q(".metrics").innerHTML = rows.join("") || "<tr><td>no metrics yet</td></tr>";
  }
}

async function main() {
  try {
    const runs = await call("/api/runs");
    const template = document.getElementById("run-template"), main = document.getElementById("runs");
    const sections = runs.map((info, i) => {
      const root = template.content.firstElementChild.cloneNode(true);
      main.appendChild(root);
      return new RunSection(i, info, root);
    });
    await Promise.all(sections.map((s) => s.start()));
    setStatus(runs.length > 1 ? `${runs.length} runs side by side` : "ready");
    document.body.dataset.ready = "1";
  } catch (e) {
    setStatus(e.message, true);
  }
}

main();
