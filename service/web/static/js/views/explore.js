// Sliders over yaw, pitch and the leading shape components: each change renders the generator's image
// at a fixed z (POST /render; debounced, at most one request in flight, the latest values win), beside
// the simulator's render of the same labels.

import { api } from "../api.js";
import { bundleSelect, clear, debounce, errorBox, h } from "../ui.js";

const DEBOUNCE_MS = 80;
const LEADING = { shape: 6 }; // sliders per vector field; others get DEFAULT_LEADING
const DEFAULT_LEADING = 3;

export function mount(el) {
  let stopped = false;
  let models = [];
  let bundle;
  let sliders = [];
  let inFlight = false;
  let pending = false;
  const picker = h("span");
  const seed = h("input#seed", { type: "number", min: "0", step: "1", value: "0", "aria-label": "seed", onchange: () => renderSoon() });
  const controls = h("div.sliders#sliders");
  const generated = h("img.pixelated.big#generated", { alt: "generator output" });
  const simulated = h("img.pixelated.big#simulated", { alt: "simulator output" });
  const status = h("div.muted#render-status");
  const problem = h("div");
  el.append(
    h("div.page-head", h("h1", "Explore"),
      h("div.inline-controls", h("label.inline", "Bundle ", picker), h("label.inline", "Seed (z) ", seed),
        h("button.ghost#reset", { type: "button", onclick: () => { sliders.forEach((s) => s.reset()); renderSoon(); } }, "Reset"))),
    h("p.muted", "Move a slider: the generator redraws the image at a fixed noise z (the seed's sample 0); unset fields sit at the prior's centre."),
    problem,
    h("div.explore",
      h("section.card", h("h2", "Labels"), controls),
      h("section.card.outputs",
        h("div.output-pair",
          h("figure", generated, h("figcaption", "Generator G(z, l)")),
          h("figure", simulated, h("figcaption", "Simulator S(l)"))),
        status)));

  api("models").then((res) => {
    if (stopped) return;
    models = res.items;
    const faces = models.find((m) => m.layout?.name === "faces");
    choose((faces || models[0])?.name);
  }).catch((error) => clear(problem, errorBox(error)));

  function choose(name) {
    bundle = models.find((m) => m.name === name);
    clear(picker, bundleSelect(models, name, choose));
    sliders = buildSliders(bundle?.layout);
    clear(controls, sliders.map((s) => s.el));
    render();
  }

  function buildSliders(layout) {
    const out = [];
    const fields = [...(layout?.fields || [])].sort((a, b) => (a.size > 1) - (b.size > 1));
    for (const f of fields) {
      if (f.kind === "categorical") out.push(slider(f.name, 0, f.size - 1, 1, 0, f.unit));
      else if (f.size === 1) out.push(slider(f.name, f.offset - 3 * f.scale, f.offset + 3 * f.scale, f.scale / 30, f.offset, f.unit));
      else for (let i = 0; i < Math.min(LEADING[f.name] ?? DEFAULT_LEADING, f.size); i++) out.push(slider(`${f.name}[${i}]`, -3, 3, 0.05, 0, f.unit));
    }
    return out;
  }

  function slider(key, min, max, step, centre, unit) {
    const value = h("output.mono");
    const input = h("input", { type: "range", min: String(min), max: String(max), step: String(step), value: String(centre), name: key,
      "aria-label": key, oninput: () => { show(); renderSoon(); } });
    const show = () => {
      const v = Number(input.value);
      value.textContent = unit === "deg" ? `${v.toFixed(1)}°` : unit === "class" ? String(v) : `${v.toFixed(2)} ${unit}`;
    };
    show();
    return {
      key,
      el: h("label.slider", { dataset: { key } }, h("span.mono", key), input, value),
      get: () => Number(input.value),
      reset: () => { input.value = String(centre); show(); },
    };
  }

  const renderSoon = debounce(() => render(), DEBOUNCE_MS);

  async function render() {
    if (!bundle) return;
    if (inFlight) { pending = true; return; }
    inFlight = true;
    pending = false;
    const body = { bundle: bundle.name, seed: Number(seed.value) || 0, labels: Object.fromEntries(sliders.map((s) => [s.key, s.get()])) };
    const started = performance.now();
    try {
      const res = await api("render", { method: "POST", json: body });
      if (stopped) return;
      generated.src = res.image;
      simulated.src = res.simulator;
      clear(problem);
      status.textContent = `${res.bundle}${bundle.trained === false ? " (untrained placeholder)" : ""} · seed ${res.seed} · ${Math.round(performance.now() - started)} ms`;
      el.querySelector(".outputs").dataset.rendered = JSON.stringify(body.labels);
    } catch (error) {
      if (!stopped) clear(problem, errorBox(error));
    } finally {
      inFlight = false;
      if (pending && !stopped) render();
    }
  }

  return () => { stopped = true; };
}
