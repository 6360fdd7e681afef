// A form built from a JSON Schema (as pydantic writes it): objects, enums, numbers with bounds,
// optional values (anyOf with null), maps with a key pattern (label distributions), tagged unions
// (oneOf of single-key objects), arrays of numbers or of enum values. The server stays the judge:
// the form sends what the user typed, and `showErrors` pins each 422 message to the field it names.

import { h } from "./ui.js";

/**
 * buildForm(schema, { value, hints, onChange }) → { el, get(), showErrors(fields), clearErrors() }
 * hints: { options: {path: [values]}, keys: {path: () => [suggested keys]} } for fields the schema
 * leaves open (the bundle name, label field names).
 */
export function buildForm(schema, { value = {}, hints = {}, onChange = () => {} } = {}) {
  const ctx = { defs: schema.$defs || {}, hints, onChange, slots: [], uid: 0 };
  const root = node(schema, [], value, ctx, { top: true });
  const el = h("div.schema-form", root.el);
  el.addEventListener("input", () => onChange());
  el.addEventListener("change", () => onChange());
  return {
    el,
    get: () => root.get() ?? {},
    clearErrors: () => clearErrors(ctx),
    showErrors(fields) {
      clearErrors(ctx);
      const unplaced = [];
      for (const [path, msg] of Object.entries(fields)) {
        const target = ctx.slots
          .map((s) => ({ ...s, p: s.path() }))
          .filter((s) => path === s.p || path.startsWith(s.p + ".") || (s.p === "" && path))
          .sort((a, b) => b.p.length - a.p.length)[0];
        if (target && target.p !== "") {
          target.slot.textContent = msg;
          target.slot.closest(".field")?.classList.add("invalid");
        } else unplaced.push(msg);
      }
      return unplaced;
    },
  };
}

function clearErrors(ctx) {
  for (const s of ctx.slots) {
    s.slot.textContent = "";
    s.slot.closest(".field")?.classList.remove("invalid");
  }
}

function deref(schema, ctx) {
  if (!schema?.$ref) return schema || {};
  const name = schema.$ref.split("/").pop();
  const { $ref, ...rest } = schema;
  return { ...ctx.defs[name], ...rest };
}

const humanize = (key) => String(key).replace(/_/g, " ").replace(/^./, (c) => c.toUpperCase());
const title = (s, key) => s.title || (key ? humanize(key) : "");

/** Description text with `code` spans. */
function help(text) {
  return h("div.help", text.split("`").map((part, i) => (i % 2 ? h("code", part) : part)));
}
const pathOf = (path) => path.join(".");

/** One schema node → { el, get } (get() → value, or undefined when left empty). */
function node(raw, path, value, ctx, opts = {}) {
  const s = deref(raw, ctx);
  const variants = (s.anyOf || []).map((v) => deref(v, ctx));
  const nonNull = variants.filter((v) => v.type !== "null");
  if (s.anyOf && nonNull.length === 1) return node({ ...nonNull[0], default: s.default, title: s.title, description: s.description }, path, value, ctx, { ...opts, optional: true });
  if (s.anyOf && nonNull.every((v) => v.type === "number" || v.type === "integer" || v.type === "array")) return numberOrList(s, path, value, ctx);
  if (s.oneOf) return tagged(s, path, value, ctx);
  if (s.enum) return enumSelect(s, path, value, ctx, opts);
  if (s.type === "object" && (s.patternProperties || s.additionalProperties && typeof s.additionalProperties === "object")) return mapEditor(s, path, value, ctx);
  if (s.type === "object") return objectForm(s, path, value, ctx, opts);
  if (s.type === "array" && s.items?.enum) return checkboxes(s, path, value, ctx);
  if (s.type === "array") return numberList(s, path, value, ctx, opts);
  if (s.type === "integer" || s.type === "number") return numberInput(s, path, value, ctx, opts);
  if (s.type === "boolean") return checkbox(s, path, value, ctx);
  return textInput(s, path, value, ctx);
}

function field(s, path, ctx, control, key) {
  const slot = h("div.field-error", { role: "status" });
  ctx.slots.push({ path: () => pathOf(path), slot });
  const id = `f${++ctx.uid}`;
  control.id ||= id;
  const required = s.required ? h("span.req", { title: "required" }, "*") : null;
  return h("div.field", { dataset: { path: pathOf(path) } },
    h("label", { for: control.id }, title(s, key), required),
    control,
    s.description ? help(s.description) : null,
    slot);
}

function objectForm(s, path, value, ctx, opts) {
  const required = new Set(s.required || []);
  const children = Object.entries(s.properties || {}).map(([key, sub]) => {
    const child = node(sub, [...path, key], value?.[key], ctx, { key, required: required.has(key) });
    return { key, child };
  });
  const body = children.map(({ child }) => child.el);
  const el = opts.top ? h("div.form-grid", body)
    : h("fieldset.group", { dataset: { path: pathOf(path) } }, h("legend", opts.key ? humanize(opts.key) : title(s)), h("div.form-grid", body));
  if (!opts.top) {
    const slot = h("div.field-error", { role: "status" });
    ctx.slots.push({ path: () => pathOf(path), slot });
    el.append(slot);
  }
  return {
    el,
    get() {
      const out = {};
      for (const { key, child } of children) {
        const v = child.get();
        if (v !== undefined) out[key] = v;
      }
      return Object.keys(out).length || opts.top ? out : undefined;
    },
  };
}

function inputValue(value, s) {
  const v = value !== undefined ? value : s.default;
  return v === undefined || v === null ? "" : String(v);
}

function numberInput(s, path, value, ctx, opts) {
  const input = h("input", {
    type: "number", name: pathOf(path), value: inputValue(value, s),
    min: s.minimum ?? (s.exclusiveMinimum !== undefined && s.exclusiveMinimum > -1e15 ? s.exclusiveMinimum : undefined),
    max: s.maximum !== undefined && s.maximum < 1e15 ? s.maximum : undefined,
    step: s.type === "integer" ? "1" : "any",
    placeholder: opts.optional ? "default" : "",
    required: opts.required || undefined,
  });
  return {
    el: field({ ...s, required: opts.required }, path, ctx, input, opts.key),
    get: () => (input.value.trim() === "" ? undefined : Number(input.value)),
  };
}

function textInput(s, path, value, ctx, opts = {}) {
  const listId = ctx.hints.options?.[pathOf(path)] ? `dl${++ctx.uid}` : undefined;
  const options = ctx.hints.options?.[pathOf(path)];
  const control = options
    ? h("select", { name: pathOf(path) }, options.map((o) => h("option", { value: o.value ?? o, selected: (o.value ?? o) === value }, o.label ?? o)))
    : h("input", { type: "text", name: pathOf(path), value: inputValue(value, s), pattern: s.pattern, list: listId, spellcheck: "false", autocomplete: "off" });
  return { el: field(s, path, ctx, control, opts.key ?? path.at(-1)), get: () => (control.value === "" ? undefined : control.value) };
}

function enumSelect(s, path, value, ctx, opts) {
  const current = value ?? s.default;
  const select = h("select", { name: pathOf(path) },
    s.enum.map((v) => h("option", { value: v, selected: v === current }, String(v))));
  return { el: field(s, path, ctx, select, opts.key), get: () => select.value };
}

function checkbox(s, path, value, ctx) {
  const input = h("input", { type: "checkbox", name: pathOf(path), checked: Boolean(value ?? s.default) });
  return { el: field(s, path, ctx, input, path.at(-1)), get: () => input.checked };
}

function checkboxes(s, path, value, ctx) {
  const chosen = new Set(value || s.default || []);
  const boxes = s.items.enum.map((v) => ({ v, input: h("input", { type: "checkbox", value: v, name: `${pathOf(path)}.${v}`, checked: chosen.has(v) }) }));
  const group = h("div.checks", boxes.map(({ v, input }) => h("label.check", input, String(v))));
  return {
    el: field(s, path, ctx, group, path.at(-1)),
    get() {
      const picked = boxes.filter((b) => b.input.checked).map((b) => b.v);
      return picked.length ? picked : undefined;
    },
  };
}

/** "1, 2.5, -3" → [1, 2.5, -3]; anything unparsable is sent as typed, for the server to name. */
function parseList(text) {
  const parts = text.split(/[\s,;]+/).filter(Boolean);
  const nums = parts.map(Number);
  return nums.every((n) => Number.isFinite(n)) ? nums : text;
}

function numberList(s, path, value, ctx, opts) {
  const input = h("input", { type: "text", name: pathOf(path), value: Array.isArray(value) ? value.join(", ") : "", placeholder: "e.g. 0, 1, 2", spellcheck: "false" });
  return {
    el: field(s, path, ctx, input, opts.key),
    get: () => (input.value.trim() === "" ? undefined : parseList(input.value)),
  };
}

/** A number, or a comma list for a vector field (`fixed`). */
function numberOrList(s, path, value, ctx) {
  const input = h("input", { type: "text", name: pathOf(path), value: Array.isArray(value) ? value.join(", ") : inputValue(value, s), placeholder: "a number, or one per slot: 0, 1.5, …", spellcheck: "false" });
  return {
    el: field(s, path, ctx, input, path.at(-1)),
    get() {
      const text = input.value.trim();
      if (text === "") return undefined;
      const list = parseList(text);
      return Array.isArray(list) && list.length === 1 && !/[,;]/.test(text) ? list[0] : list;
    },
  };
}

/** oneOf of single-key objects ({fixed: …} | {normal: {…}} …): a kind selector and that kind's form. */
function tagged(s, path, value, ctx) {
  const variants = s.oneOf.map((v) => deref(v, ctx)).map((v) => ({ key: Object.keys(v.properties)[0], schema: v }));
  let current = variants.find((v) => value && v.key in value) || variants[0];
  const holder = h("div.variant-body");
  let child;
  const render = (initial) => {
    child = node(current.schema.properties[current.key], [...path, current.key], initial, ctx, { key: current.key });
    holder.replaceChildren(child.el);
  };
  const select = h("select.kind", { "aria-label": "distribution", onchange: (e) => { current = variants.find((v) => v.key === e.target.value); render(undefined); } },
    variants.map((v) => h("option", { value: v.key, selected: v === current }, v.key)));
  render(value?.[current.key]);
  return { el: h("div.variant", select, holder), get: () => ({ [current.key]: child.get() ?? {} }) };
}

/** A map with a key pattern: one row per key (key input with suggestions, value form, remove). */
function mapEditor(s, path, value, ctx) {
  const valueSchema = s.patternProperties ? Object.values(s.patternProperties)[0] : s.additionalProperties;
  const listId = `keys${++ctx.uid}`;
  const datalist = h("datalist", { id: listId });
  const rows = h("div.map-rows");
  const entries = [];
  const refreshKeys = () => {
    const keys = ctx.hints.keys?.[pathOf(path)]?.() || [];
    datalist.replaceChildren(...keys.map((k) => h("option", { value: k })));
  };
  const addRow = (key = "", v = undefined) => {
    const keyInput = h("input.map-key", { type: "text", value: key, list: listId, placeholder: "field, e.g. yaw_deg or shape[3]", "aria-label": "field name", spellcheck: "false", autocomplete: "off" });
    const entry = { keyInput };
    const slot = h("div.field-error", { role: "status" });
    ctx.slots.push({ path: () => (entries.includes(entry) ? pathOf([...path, keyInput.value.trim()]) : "\u0000"), slot });
    entry.child = node(valueSchema, [...path, key], v, { ...ctx, slots: ctx.slots }, {});
    const remove = h("button.ghost.icon", { type: "button", title: "remove", "aria-label": "remove field",
      onclick: () => { entries.splice(entries.indexOf(entry), 1); row.remove(); ctx.onChange(); } }, "×");
    const row = h("div.map-row.field", keyInput, entry.child.el, remove, slot);
    entries.push(entry);
    rows.append(row);
  };
  for (const [k, v] of Object.entries(value || {})) addRow(k, v);
  const add = h("button.ghost", { type: "button", onclick: () => { refreshKeys(); addRow(); ctx.onChange(); } }, "+ add field");
  refreshKeys();
  const el = h("fieldset.group.map", { dataset: { path: pathOf(path) } }, h("legend", title(s, path.at(-1))),
    s.description ? help(s.description) : null, datalist, rows, add);
  el.addEventListener("focusin", refreshKeys);
  return {
    el,
    get() {
      const out = {};
      for (const e of entries) {
        const k = e.keyInput.value.trim();
        if (k) out[k] = e.child.get();
      }
      return Object.keys(out).length ? out : undefined;
    },
  };
}
