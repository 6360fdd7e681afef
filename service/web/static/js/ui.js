// Small DOM helpers: an element builder, formatting, status badges, progress bars, error boxes.

/** h("div.card#main", {onclick}, child, "text", [more]) — tag with optional .classes and #id. */
export function h(spec, attrs = {}, ...children) {
  if (attrs === null || typeof attrs !== "object" || attrs instanceof Node || Array.isArray(attrs)) {
    children.unshift(attrs);
    attrs = {};
  }
  const [, tag, rest] = spec.match(/^([a-z0-9-]+)?(.*)$/i);
  const el = document.createElement(tag || "div");
  for (const m of rest.matchAll(/([.#])([\w-]+)/g)) {
    if (m[1] === ".") el.classList.add(m[2]); else el.id = m[2];
  }
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k in el && typeof v !== "string") el[k] = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

export function clear(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

export function formatBytes(n) {
  if (n == null) return "—";
  const units = ["B", "KB", "MB", "GB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

export function formatSeconds(s) {
  if (s == null) return "—";
  if (s < 60) return `${Math.round(s)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
  return `${Math.floor(s / 3600)} h ${Math.round((s % 3600) / 60)} min`;
}

export function formatTime(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  return d.toLocaleString(undefined, { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

export function formatNumber(v, digits = 2) {
  return typeof v === "number" ? (Number.isInteger(v) ? String(v) : v.toFixed(digits)) : String(v);
}

export const ACTIVE = new Set(["queued", "running"]);

export function badge(status) {
  return h(`span.badge.status-${status}`, { title: `status: ${status}` }, status);
}

/** A labelled progress bar: fraction 0..1 and a caption such as "512 / 2048 samples". */
export function progressBar(fraction, caption, status = "running") {
  const pct = Math.max(0, Math.min(1, fraction || 0)) * 100;
  return h("div.progress", { role: "progressbar", "aria-valuenow": pct.toFixed(0), "aria-valuemin": "0", "aria-valuemax": "100" },
    h(`div.progress-fill.status-${status}`, { style: `width:${pct.toFixed(1)}%` }),
    h("span.progress-caption", caption));
}

export function errorBox(error) {
  return h("div.error-box", { role: "alert" }, String(error?.message || error));
}

export function emptyState(text, ...actions) {
  return h("div.empty", h("p", text), actions);
}

/** Calls `fn` `wait` ms after the last call (typing, dragging a slider). */
export function debounce(fn, wait) {
  let timer;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), wait);
  };
}

/** A bundle <select> (with "untrained" marked); `filter` keeps some bundles only. */
export function bundleSelect(models, value, onchange, filter = () => true) {
  const options = models.filter(filter);
  const select = h("select", { name: "bundle", onchange: (e) => onchange(e.target.value) },
    options.map((m) => h("option", { value: m.name, selected: m.name === value },
      `${m.name} · ${m.layout?.name ?? "?"} · ${m.image_size}px${m.trained === false ? " · untrained" : ""}`)));
  return select;
}
