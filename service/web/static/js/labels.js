// Label fields as people read them: "yaw 12.5°", "digit 7", "thickness 0.09".

import { formatNumber } from "./ui.js";

/** Short captions for the scalar fields of a sample's labels (vector fields are left to bar charts). */
export function scalarCaptions(fields, max = 3) {
  return Object.entries(fields)
    .filter(([, v]) => typeof v === "number")
    .slice(0, max)
    .map(([name, v]) => (name.endsWith("_deg") ? `${name.slice(0, -4)} ${v.toFixed(1)}°` : `${name} ${formatNumber(v)}`));
}

/** Field names a spec or render request may use for a layout: scalars, vectors and their first slots. */
export function fieldKeys(layout, slots = 3) {
  const keys = [];
  for (const f of layout?.fields || []) {
    keys.push(f.name);
    if (f.kind === "continuous" && f.size > 1) for (let i = 0; i < Math.min(slots, f.size); i++) keys.push(`${f.name}[${i}]`);
  }
  return keys;
}
