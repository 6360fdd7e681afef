// New dataset: a form built from DatasetSpec's JSON Schema (GET /schemas/dataset-spec), a live preview
// of the dataset's first samples (POST /preview, debounced, stale requests aborted), the spec as JSON,
// and Create (POST /datasets). Every 422 is pinned to the field its `loc` names.

import { api } from "../api.js";
import { fieldKeys, scalarCaptions } from "../labels.js";
import { buildForm } from "../schema-form.js";
import { clear, debounce, errorBox, h } from "../ui.js";

const PREVIEW_SAMPLES = 8;
const PREVIEW_DEBOUNCE_MS = 400;

export function mount(el) {
  let stopped = false;
  let controller;
  const formHolder = h("div");
  const previewGrid = h("div.tiles#preview", h("p.muted", "Loading…"));
  const previewStatus = h("div.muted#preview-status");
  const previewErrors = h("div#preview-errors");
  const json = h("pre.json#spec-json");
  const createButton = h("button.primary#create", { type: "button" }, "Create dataset");
  const createErrors = h("div#create-errors");
  el.append(
    h("div.page-head", h("h1", "New dataset")),
    h("div.split",
      h("section.card.form-card", h("h2", "Spec"), formHolder),
      h("section.card.preview-card",
        h("div.card-head", h("h2", "Preview"), previewStatus),
        h("p.muted", "The dataset's first samples, generated from the spec as it stands: the same images its first shard will hold."),
        previewErrors, previewGrid,
        h("details", h("summary", "Spec as JSON"), json),
        createErrors,
        h("div.actions", createButton))),
  );

  (async () => {
    let schemaDoc, models;
    try {
      [schemaDoc, models] = await Promise.all([api("schemas/dataset-spec"), api("models")]);
    } catch (error) {
      clear(formHolder, errorBox(error));
      return;
    }
    if (stopped) return;
    const schema = schemaDoc.json_schema;
    const byName = new Map(models.items.map((m) => [m.name, m]));
    const examples = schema.examples || [];
    const exampleFor = (bundle) => {
      const layout = byName.get(bundle)?.layout?.name;
      const ex = examples.find((e) => e.bundle === bundle) || examples.find((e) => byName.get(e.bundle)?.layout?.name === layout);
      return ex ? { ...structuredClone(ex), bundle } : { name: "my-dataset", bundle, count: 1000, shard_size: 500 };
    };
    const first = examples.find((e) => byName.has(e.bundle))?.bundle || models.items[0]?.name;
    let form;
    let bundle;

    const build = (value) => {
      bundle = value.bundle;
      form = buildForm(schema, {
        value,
        hints: {
          options: { bundle: models.items.map((m) => ({ value: m.name, label: `${m.name}${m.trained === false ? " (untrained)" : ""}` })) },
          keys: { labels: () => fieldKeys(byName.get(bundle)?.layout) },
        },
        onChange: changed,
      });
      clear(formHolder, form.el);
      changed();
    };
    const changed = () => {
      const spec = form.get();
      if (spec.bundle !== bundle) return build(exampleFor(spec.bundle));
      json.textContent = JSON.stringify(spec, null, 2);
      previewSoon();
    };
    const previewSoon = debounce(() => preview(form.get()), PREVIEW_DEBOUNCE_MS);

    async function preview(spec) {
      controller?.abort();
      controller = new AbortController();
      previewStatus.textContent = "generating…";
      el.querySelector(".preview-card").classList.add("busy");
      const started = performance.now();
      try {
        const res = await api("preview", { method: "POST", json: spec, query: { samples: PREVIEW_SAMPLES }, signal: controller.signal });
        form.clearErrors();
        clear(previewErrors);
        clear(previewGrid, res.samples.map((s) => h("figure.tile", { dataset: { index: s.index } },
          h("img.pixelated", { src: s.image, alt: `sample ${s.index}`, width: 112, height: 112 }),
          s.sim ? h("img.pixelated.sim", { src: s.sim, alt: `simulator render of sample ${s.index}`, width: 112, height: 112 }) : null,
          h("figcaption", h("span.mono", `#${s.index}`), " ", scalarCaptions(s.fields).join(" · ")))));
        const simNote = res.samples.some((s) => s.sim) ? " · below each: its simulator render" : "";
        previewStatus.textContent = `${res.samples.length} samples · ${res.image_size}px ${res.format} · ${((performance.now() - started) / 1000).toFixed(1)} s${simNote}`;
      } catch (error) {
        if (error.name === "AbortError") return;
        const unplaced = form.showErrors(error.fields || {});
        clear(previewErrors, errorBox(Object.keys(error.fields || {}).length && !unplaced.length ? `Fix the highlighted field: ${error.message}` : error.message));
        previewStatus.textContent = "spec has errors";
      } finally {
        el.querySelector(".preview-card").classList.remove("busy");
      }
    }

    createButton.addEventListener("click", async () => {
      createButton.disabled = true;
      clear(createErrors);
      try {
        const job = await api("datasets", { method: "POST", json: form.get() });
        location.hash = `#/datasets/${job.id}`;
      } catch (error) {
        form.showErrors(error.fields || {});
        clear(createErrors, errorBox(error));
      } finally {
        createButton.disabled = false;
      }
    });

    build(exampleFor(first));
  })();

  return () => { stopped = true; controller?.abort(); };
}
