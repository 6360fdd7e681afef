// Datasets and labeling jobs with live progress: the lists are polled, and every job that is still
// queued or running (or whose status changed) is polled for its progress in samples and shards.

import { api } from "../api.js";
import { ACTIVE, badge, clear, emptyState, errorBox, formatSeconds, formatTime, h, progressBar } from "../ui.js";

const POLL_MS = 1500;
const KINDS = [
  { kind: "datasets", title: "Datasets", empty: "No datasets yet." },
  { kind: "labeling-jobs", title: "Labeling jobs", empty: "No labeling jobs yet. Start one with POST /labeling-jobs (a tar or zip of photos)." },
];

export function mount(el) {
  const details = new Map(); // job id → last status (with progress)
  const bodies = Object.fromEntries(KINDS.map(({ kind }) => [kind, h("div.table-wrap", { dataset: { kind } }, h("p.muted", "Loading…"))]));
  const problem = h("div");
  el.append(
    h("div.page-head", h("h1", "Jobs"), h("a.button.primary", { href: "#/new" }, "New dataset")),
    problem,
    ...KINDS.map(({ kind, title }) => h("section.card", h("h2", title), bodies[kind])),
  );

  let stopped = false;
  let timer;
  async function refresh() {
    try {
      for (const { kind, empty } of KINDS) {
        const list = await api(kind, { query: { limit: 50 } });
        const stale = list.items.filter((j) => ACTIVE.has(j.status) || details.get(j.id)?.status !== j.status);
        await Promise.all(stale.map(async (j) => details.set(j.id, await api(`${kind}/${j.id}`))));
        if (stopped) return;
        clear(bodies[kind], list.items.length ? table(kind, list.items, details) : emptyState(empty));
      }
      clear(problem);
    } catch (error) {
      if (!stopped) clear(problem, errorBox(error));
    }
    if (!stopped) timer = setTimeout(refresh, POLL_MS);
  }
  refresh();
  return () => { stopped = true; clearTimeout(timer); };
}

function table(kind, items, details) {
  return h("table.jobs",
    h("thead", h("tr", ["Name", "Bundle", "Status", "Progress", "ETA", "Created"].map((t) => h("th", t)))),
    h("tbody", items.map((job) => {
      const d = details.get(job.id);
      const p = d?.progress;
      const caption = p ? `${p.samples.done} / ${p.samples.total} samples · ${p.shards.done} / ${p.shards.total} shards` : "…";
      return h("tr", { dataset: { jobId: job.id, status: d?.status || job.status } },
        h("td", h("a", { href: `#/${kind}/${job.id}` }, job.name), h("div.muted.mono", job.id.slice(0, 8))),
        h("td", job.bundle),
        h("td", badge(d?.status || job.status)),
        h("td.progress-cell", progressBar(p?.fraction, caption, d?.status || job.status),
          d?.error ? h("div.field-error", d.error) : null),
        h("td", ACTIVE.has(d?.status) ? formatSeconds(p?.eta_s) : "—"),
        h("td", formatTime(job.created_at)));
    })));
}
