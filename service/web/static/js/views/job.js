// One dataset or labeling job: status and progress (polled until it ends), then its card (contact
// sheet and label histograms, datasets only), its shards with download links, and its manifest.

import { api, blobUrl } from "../api.js";
import { renderMarkdown } from "../markdown.js";
import { ACTIVE, badge, clear, errorBox, formatBytes, formatSeconds, formatTime, h, progressBar } from "../ui.js";

const POLL_MS = 1000;

export function mount(el, kind, id) {
  let stopped = false;
  let timer;
  const urls = [];
  const head = h("div.page-head", h("h1", "…"));
  const status = h("section.card#job-status");
  const card = h("section.card#card", { hidden: true });
  const shards = h("section.card#shards", { hidden: true });
  const manifest = h("section.card#manifest", { hidden: true });
  el.append(h("a.back", { href: "#/jobs" }, "← Jobs"), head, status, card, shards, manifest);

  async function poll() {
    let job;
    try {
      job = await api(`${kind}/${id}`);
    } catch (error) {
      if (!stopped) clear(status, errorBox(error));
      return;
    }
    if (stopped) return;
    showStatus(job);
    if (ACTIVE.has(job.status)) {
      timer = setTimeout(poll, POLL_MS);
    } else if (job.status === "succeeded") {
      await Promise.all([kind === "datasets" ? showCard() : null, showShards(), showManifest()]);
    } else {
      showShards(); // a failed or cancelled job may still have finished shards
    }
  }

  function showStatus(job) {
    const p = job.progress;
    clear(head, h("h1", job.name, " ", badge(job.status)),
      h("button.danger.ghost#delete", { type: "button", onclick: () => remove(job) }, "Delete"));
    clear(status,
      h("dl.facts",
        h("dt", "Kind"), h("dd", job.kind),
        h("dt", "Bundle"), h("dd", job.bundle, h("span.muted.mono", ` ${job.bundle_sha.slice(0, 12)}`)),
        h("dt", "Created"), h("dd", formatTime(job.created_at)),
        h("dt", "Finished"), h("dd", formatTime(job.finished_at)),
        h("dt", "ETA"), h("dd", ACTIVE.has(job.status) ? formatSeconds(p.eta_s) : "—")),
      progressBar(p.fraction, `${p.samples.done} / ${p.samples.total} samples · ${p.shards.done} / ${p.shards.total} shards` +
        (p.redeliveries ? ` · ${p.redeliveries} redelivered` : ""), job.status),
      job.error ? errorBox(job.error) : null,
      p.errors.length && !job.error ? h("ul.errors", p.errors.map((e) => h("li", e))) : null);
  }

  async function showCard() {
    try {
      const doc = await api(`${kind}/${id}/card`);
      const images = {};
      for (const [name, url] of Object.entries(doc.images)) {
        images[name] = await blobUrl(url);
        urls.push(images[name]);
      }
      if (stopped) return;
      card.hidden = false;
      clear(card, h("h2", "Dataset card"), renderMarkdown(doc.markdown, (src) => images[src] || null));
    } catch (error) {
      card.hidden = false;
      clear(card, h("h2", "Dataset card"), errorBox(error));
    }
  }

  async function showShards() {
    const list = await api(`${kind}/${id}/shards`).catch((error) => ({ error }));
    if (stopped) return;
    shards.hidden = false;
    if (list.error) return clear(shards, h("h2", "Shards"), errorBox(list.error));
    const total = list.items.reduce((n, s) => n + s.bytes, 0);
    clear(shards, h("div.card-head", h("h2", "Shards"), h("span.muted", `${list.count} files · ${formatBytes(total)}`)),
      h("table.shards",
        h("thead", h("tr", ["File", "Samples", "Size", "sha256", ""].map((t) => h("th", t)))),
        h("tbody", list.items.map((s) => h("tr",
          h("td.mono", s.file), h("td", s.samples ?? "—"), h("td", formatBytes(s.bytes)),
          h("td.mono.muted", { title: s.sha256 || "" }, (s.sha256 || "").slice(0, 12)),
          h("td", downloadLink(s)))))));
  }

  async function showManifest() {
    try {
      const doc = await api(`${kind}/${id}/manifest`);
      if (stopped) return;
      manifest.hidden = false;
      clear(manifest, h("details", h("summary", h("h2.inline", "Manifest")), h("pre.json", JSON.stringify(doc, null, 2))));
    } catch (error) {
      manifest.hidden = false;
      clear(manifest, h("h2", "Manifest"), errorBox(error));
    }
  }

  async function remove(job) {
    if (!confirm(`Delete ${job.name}? Running work stops and every file of the job is deleted.`)) return;
    try {
      await api(`${kind}/${id}`, { method: "DELETE" });
      location.hash = "#/jobs";
    } catch (error) {
      status.append(errorBox(error));
    }
  }

  poll();
  return () => { stopped = true; clearTimeout(timer); urls.forEach((u) => URL.revokeObjectURL(u)); };
}

/** A presigned URL downloads as is; an API URL needs the key, so it is fetched and saved from a blob. */
function downloadLink(shard) {
  if (shard.presigned) return h("a.button", { href: shard.url, download: shard.file, rel: "noopener" }, "Download");
  return h("button.download", {
    type: "button",
    dataset: { file: shard.file },
    onclick: async (event) => {
      const button = event.currentTarget;
      button.disabled = true;
      try {
        const url = await blobUrl(shard.url);
        const a = h("a", { href: url, download: shard.file, hidden: true });
        document.body.append(a);
        a.click();
        a.remove();
        setTimeout(() => URL.revokeObjectURL(url), 10_000);
      } catch (error) {
        button.after(errorBox(error));
      } finally {
        button.disabled = false;
      }
    },
  }, "Download");
}
