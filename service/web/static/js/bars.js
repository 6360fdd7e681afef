// Signed horizontal bars centred on zero, for coefficients in σ units (shape[0] = +1.3 σ …).

import { h } from "./ui.js";

/** rows: [[label, value]]; `range` is the value at a full half-bar (values beyond it are clipped, shown). */
export function coefficientBars(rows, range = 3, unit = "σ") {
  return h("div.bars", rows.map(([label, value]) => {
    const frac = Math.max(-1, Math.min(1, value / range)) * 50;
    const style = frac >= 0 ? `left:50%;width:${frac.toFixed(2)}%` : `left:${(50 + frac).toFixed(2)}%;width:${(-frac).toFixed(2)}%`;
    return h("div.bar-row", { dataset: { label } },
      h("span.bar-label.mono", label),
      h("span.bar-track", h("span.bar-zero"), h(`span.bar-fill.${value >= 0 ? "pos" : "neg"}`, { style })),
      h("span.bar-value.mono", `${value >= 0 ? "+" : "−"}${Math.abs(value).toFixed(2)} ${unit}`));
  }));
}
