// Drop a photo: POST /predict?render=true with the file, then the photo beside the simulator's render
// of the predicted labels, yaw and pitch, and the leading shape/texture coefficients as bars.

import { api } from "../api.js";
import { coefficientBars } from "../bars.js";
import { scalarCaptions } from "../labels.js";
import { bundleSelect, clear, errorBox, formatNumber, h } from "../ui.js";

const LEADING = 10; // coefficients shown per vector field

export function mount(el) {
  let stopped = false;
  let photoUrl;
  let bundle;
  let models = [];
  const picker = h("span");
  const fileInput = h("input#photo-input", { type: "file", accept: "image/png,image/jpeg,image/webp,image/bmp", hidden: true,
    onchange: (e) => e.target.files[0] && run(e.target.files[0]) });
  const zone = h("div.dropzone#dropzone", { tabindex: "0", role: "button", "aria-label": "drop a photo or choose a file",
    onclick: () => fileInput.click(),
    onkeydown: (e) => (e.key === "Enter" || e.key === " ") && fileInput.click(),
    ondragover: (e) => { e.preventDefault(); zone.classList.add("over"); },
    ondragleave: () => zone.classList.remove("over"),
    ondrop: (e) => {
      e.preventDefault();
      zone.classList.remove("over");
      const file = [...(e.dataTransfer?.files || [])].find((f) => f.type.startsWith("image/")) || e.dataTransfer?.files?.[0];
      if (file) run(file);
    } },
  h("div.drop-icon", { "aria-hidden": "true" }, "⤓"),
  h("strong", "Drop a photo here"), h("span.muted", "or click to choose a PNG, JPEG, WebP or BMP file"), fileInput);
  const result = h("div#predict-result");
  el.append(
    h("div.page-head", h("h1", "Predict"), h("label.inline", "Bundle ", picker)),
    h("p.muted", "The predictor reads label coefficients out of a photo; the simulator then renders what it read."),
    zone, result);

  api("models").then((res) => {
    if (stopped) return;
    models = res.items;
    const faces = models.find((m) => m.layout?.name === "faces");
    bundle = (faces || models[0])?.name;
    clear(picker, bundleSelect(models, bundle, (v) => { bundle = v; }));
  }).catch((error) => clear(result, errorBox(error)));

  async function run(file) {
    if (photoUrl) URL.revokeObjectURL(photoUrl);
    photoUrl = URL.createObjectURL(file);
    clear(result, h("p.muted", `Reading ${file.name}…`));
    const form = new FormData();
    form.append("files", file, file.name);
    try {
      const res = await api("predict", { method: "POST", body: form, query: { render: "true", ...(bundle ? { bundle } : {}) } });
      if (!stopped) show(res, res.predictions[0], file);
    } catch (error) {
      if (!stopped) clear(result, errorBox(error));
    }
  }

  function show(res, p, file) {
    const vectors = Object.entries(p.fields).filter(([, v]) => Array.isArray(v));
    const scalars = Object.entries(p.fields).filter(([, v]) => !Array.isArray(v));
    clear(result, h("div.predict-grid",
      h("figure.panel", h("img.photo#photo", { src: photoUrl, alt: file.name }), h("figcaption", file.name)),
      h("figure.panel", p.render_png_base64
        ? h("img.pixelated#render", { src: `data:image/png;base64,${p.render_png_base64}`, alt: "simulator render of the prediction" })
        : h("p.muted", "no render"), h("figcaption", "Simulator render of the prediction")),
      h("section.panel.readout",
        h("div.angles", scalars.map(([name, v]) => h("div.angle", { dataset: { field: name } },
          h("span.angle-value", name.endsWith("_deg") ? `${v.toFixed(1)}°` : formatNumber(v)),
          h("span.angle-name", name.replace(/_deg$/, ""))))),
        vectors.map(([name, values]) => h("div.vector", h("h3", `${name}: leading ${Math.min(LEADING, values.length)} of ${values.length}`),
          coefficientBars(values.slice(0, LEADING).map((v, i) => [`${name}[${i}]`, v])))),
        h("p.muted.small", `${res.bundle} · ${res.bundle_sha.slice(0, 12)} · ${scalarCaptions(p.fields).join(" · ")}`,
          models.find((m) => m.name === res.bundle)?.trained === false ? " · untrained placeholder bundle: the numbers mean nothing yet" : ""))));
  }

  return () => { stopped = true; if (photoUrl) URL.revokeObjectURL(photoUrl); };
}
