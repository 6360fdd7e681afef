// The few markdown constructs a dataset card uses (headings, paragraphs, tables, images, `code`,
// *emphasis*, **strong**), rendered as DOM nodes — never as HTML strings, so card text cannot inject markup.

import { h } from "./ui.js";

/** markdown → a <div>; `images(src)` maps an image reference (e.g. "card.png") to a URL or null. */
export function renderMarkdown(text, images = () => null) {
  const out = h("div.markdown");
  const lines = text.split("\n");
  for (let i = 0; i < lines.length;) {
    const line = lines[i];
    const heading = line.match(/^(#{1,4})\s+(.*)$/);
    if (heading) {
      out.append(h(`h${heading[1].length + 1}`, inline(heading[2])));
      i++;
    } else if (line.startsWith("|")) {
      const rows = [];
      while (i < lines.length && lines[i].startsWith("|")) rows.push(lines[i++]);
      out.append(table(rows));
    } else if (/^!\[[^\]]*\]\([^)]+\)\s*$/.test(line)) {
      const [, alt, src] = line.match(/^!\[([^\]]*)\]\(([^)]+)\)/);
      const url = images(src);
      if (url) out.append(h("figure", h("img", { src: url, alt }), h("figcaption", alt)));
      i++;
    } else if (line.trim() === "") {
      i++;
    } else {
      const para = [];
      while (i < lines.length && lines[i].trim() !== "" && !/^(#|\||!\[)/.test(lines[i])) para.push(lines[i++]);
      out.append(h("p", inline(para.join(" "))));
    }
  }
  return out;
}

function cells(row) {
  return row.replace(/^\|/, "").replace(/\|\s*$/, "").split("|").map((c) => c.trim());
}

function table(rows) {
  const [head, sep, ...body] = rows;
  const isSep = sep && /^\|?\s*:?-+/.test(sep);
  const bodyRows = isSep ? body : [sep, ...body].filter(Boolean);
  return h("div.table-wrap", h("table",
    h("thead", h("tr", cells(head).map((c) => h("th", inline(c))))),
    h("tbody", bodyRows.map((r) => h("tr", cells(r).map((c) => h("td", inline(c))))))));
}

/** `code`, **strong**, *em* → nodes; everything else stays text. */
function inline(text) {
  const nodes = [];
  const re = /`([^`]+)`|\*\*([^*]+)\*\*|\*([^*]+)\*/g;
  let last = 0;
  for (const m of text.matchAll(re)) {
    if (m.index > last) nodes.push(text.slice(last, m.index));
    if (m[1] !== undefined) nodes.push(h("code", m[1]));
    else if (m[2] !== undefined) nodes.push(h("strong", m[2]));
    else nodes.push(h("em", m[3]));
    last = m.index + m[0].length;
  }
  if (last < text.length) nodes.push(text.slice(last));
  return nodes;
}
