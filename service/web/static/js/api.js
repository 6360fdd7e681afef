// The API client: every call carries the signed-in key as `Authorization: Bearer …`.
// Paths are relative to the page, so the console works behind a proxy that mounts the API elsewhere.

const KEY = "labelforge.apiKey";

export const session = {
  get key() { return sessionStorage.getItem(KEY); },
  signIn(key) { sessionStorage.setItem(KEY, key); },
  signOut() { sessionStorage.removeItem(KEY); },
};

/** An HTTP error with the API's message; `fields` maps a body path ("labels.yaw_deg") to its message. */
export class ApiError extends Error {
  constructor(status, message, fields = {}) {
    super(message);
    this.status = status;
    this.fields = fields;
  }

  static async from(response) {
    let detail = response.statusText || `HTTP ${response.status}`;
    try { detail = (await response.json()).detail ?? detail; } catch { /* not JSON */ }
    if (!Array.isArray(detail)) return new ApiError(response.status, String(detail));
    const fields = {};
    const lines = detail.map((d) => {
      const path = (d.loc || []).slice(1).filter((p) => !/^(float|int|str|list\[.*\])$/.test(p)).join(".");
      if (path && !(path in fields)) fields[path] = d.msg;
      return d.msg.startsWith(path.split(".").pop() + ":") || !path ? d.msg : `${path}: ${d.msg}`;
    });
    return new ApiError(response.status, [...new Set(lines)].join("\n"), fields);
  }
}

/**
 * fetch with the key; JSON in (`json`) and out. `raw: true` returns the Response (for blobs).
 * A 401 signs the user out and asks for a key again (unless `signOutOn401` is false: the sign-in form).
 */
export async function api(path, { method = "GET", json, body, query, raw = false, signal, signOutOn401 = true } = {}) {
  const headers = new Headers({ Authorization: `Bearer ${session.key || ""}` });
  if (json !== undefined) {
    headers.set("Content-Type", "application/json");
    body = JSON.stringify(json);
  }
  const qs = query ? "?" + new URLSearchParams(query).toString() : "";
  const response = await fetch(path + qs, { method, headers, body, signal });
  if (!response.ok) {
    const error = await ApiError.from(response);
    if (response.status === 401 && signOutOn401) window.dispatchEvent(new CustomEvent("labelforge:unauthorized", { detail: error }));
    throw error;
  }
  if (raw) return response;
  return response.status === 204 ? null : response.json();
}

/** An object URL for an authenticated image or file (an <img src> cannot send the key itself). */
export async function blobUrl(url) {
  const response = await api(url, { raw: true });
  return URL.createObjectURL(await response.blob());
}
