// The JSON API (docs/api.md), seen from the browser: one place that adds the token,
// turns failures into typed errors the pages can explain, and caches recent answers.

const TOKEN_KEY = 'hotframe.token';
const CACHE_MS = 20000;
const CACHE_ENTRIES = 16;

/** The server answered with an error (`{error, reason}` per docs/api.md). */
export class ApiError extends Error {
  constructor(status, reason, message) {
    super(message);
    this.status = status;
    this.reason = reason;
  }
}

/** The server could not be reached at all (stopped, restarting, network down). */
export class ServerGone extends Error {}

/** The bearer token kept in this browser, if any. */
export function token() {
  try { return localStorage.getItem(TOKEN_KEY) || ''; } catch { return ''; }
}

/** Keeps (or with '' forgets) the bearer token in this browser. */
export function setToken(value) {
  try {
    if (value) localStorage.setItem(TOKEN_KEY, value);
    else localStorage.removeItem(TOKEN_KEY);
  } catch { /* private mode: the token lives for this page only */ }
  memoryToken = value;
  cache.clear();
}

let memoryToken = '';
let authHandler = null;

/** Sets the function asked for a token on 401/403; it resolves true when a new one was given. */
export function onAuthNeeded(handler) { authHandler = handler; }

const cache = new Map();

/** Forgets cached answers (after settings change, or on a manual refresh). */
export function clearCache() { cache.clear(); }

async function errorOf(res) {
  let body = null;
  try { body = await res.json(); } catch { /* not JSON: a proxy or an old server */ }
  const message = (body && body.error) || `the server answered ${res.status} ${res.statusText}`;
  return new ApiError(res.status, (body && body.reason) || `http_${res.status}`, message);
}

/**
 * Calls the API. `as` is 'json' (default), 'text' or 'blob'. GETs of JSON are cached
 * briefly, so switching tabs or zooming does not refetch.
 */
export async function request(path, { method = 'GET', body, as = 'json', cached = true } = {}) {
  const key = `${method} ${path} ${as}`;
  const useCache = cached && method === 'GET' && as === 'json';
  if (useCache) {
    const hit = cache.get(key);
    if (hit && Date.now() - hit.at < CACHE_MS) return hit.value;
  }
  const headers = {};
  const tok = token() || memoryToken;
  if (tok) headers.Authorization = `Bearer ${tok}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let res;
  try {
    res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (err) {
    throw new ServerGone(`cannot reach the hotframe server at ${location.origin} (${err.message})`);
  }
  if (res.status === 502 || res.status === 503 || res.status === 504) {
    throw new ServerGone(`the hotframe server at ${location.origin} is not answering (HTTP ${res.status})`);
  }
  if ((res.status === 401 || res.status === 403) && authHandler) {
    const err = await errorOf(res);
    if (await authHandler(err)) return request(path, { method, body, as, cached });
    throw err;
  }
  if (!res.ok) throw await errorOf(res);
  let value;
  if (as === 'blob') value = await res.blob();
  else if (as === 'text') value = await res.text();
  else value = await res.json();
  if (useCache) {
    if (cache.size >= CACHE_ENTRIES) cache.delete(cache.keys().next().value);
    cache.set(key, { at: Date.now(), value });
  }
  return value;
}

/** Query string for the profile filters (`service`, `from`, `until`, `states`, `type`, `label.k`). */
export function filterQuery(f, extra = {}) {
  const q = new URLSearchParams();
  q.set('service', f.service);
  q.set('from', f.from);
  q.set('until', f.until);
  q.set('states', f.states);
  if (f.type && f.type !== 'cpu') q.set('type', f.type);
  for (const [k, v] of Object.entries(f.labels || {})) q.set(`label.${k}`, v);
  for (const [k, v] of Object.entries(extra)) if (v !== undefined && v !== '') q.set(k, v);
  return q.toString();
}

const UNIT_S = { s: 1, m: 60, h: 3600, d: 86400, w: 604800 };

/**
 * A relative time such as `now-90m` as `{ count, unit, seconds }`, else null. The viewer's
 * one reader of the form; the server's (src/model/time.rs) is the one that counts.
 */
export function relativeTime(text) {
  const rel = /^now-(\d+)([smhdw])$/.exec(text);
  return rel ? { count: Number(rel[1]), unit: rel[2], seconds: Number(rel[1]) * UNIT_S[rel[2]] } : null;
}

/** Seconds of a time as the URL holds it (`now`, `now-1h`, Unix ms or s), or NaN. */
export function seconds(text) {
  if (text === 'now') return Date.now() / 1000;
  const rel = relativeTime(text);
  if (rel) return Date.now() / 1000 - rel.seconds;
  const n = Number(text);
  if (!Number.isFinite(n)) return NaN;
  return n > 1e11 ? n / 1000 : n;
}

/**
 * About 120 buckets, but never under a minute: agents upload a profile every 10 s to a
 * minute, and buckets shorter than a profile would show it as a comb of spikes.
 */
export function timelineStep(from, until) {
  const range = seconds(until) - seconds(from);
  if (!(range > 0)) return undefined;
  return `${Math.max(60, Math.ceil(range / 120))}s`;
}

export const api = {
  services: () => request('/api/v1/services'),
  flamegraph: (f, maxNodes) => request(`/api/v1/flamegraph?${filterQuery(f, { maxNodes })}`),
  timeline: (f) => request(`/api/v1/timeline?${filterQuery(f, { step: timelineStep(f.from, f.until) })}`),
  instanceTypes: () => request('/api/v1/instance-types'),
  settings: (name) => request(`/api/v1/services/${encodeURIComponent(name)}/settings`, { cached: false }),
  putSettings: (name, settings) =>
    request(`/api/v1/services/${encodeURIComponent(name)}/settings`, { method: 'PUT', body: settings }),
  exportBlob: (f, format) => request(`/api/v1/export?${filterQuery(f, { format })}`, { as: 'blob' }),
  /** The ops-wins ledger: every win (newest first) and the running totals. */
  wins: () => request('/api/v1/wins', { cached: false }),
  /** One win with its figures and send state. */
  win: (id) => request(`/api/v1/wins/${id}`, { cached: false }),
  /** Win `id`'s report as emailed, HTML with the flame graph inline. */
  winReport: (id) => request(`/api/v1/wins/${id}/report.html`, { as: 'text', cached: false }),
  /** Queues win `id`'s report to be sent again. */
  resendWin: (id) => request(`/api/v1/wins/${id}/send`, { method: 'POST', body: {} }),
  /** The ops-win hook (the ops-wins issue): a before/after pair for the report. */
  startOpsWin: (win) => request('/api/v1/wins', { method: 'POST', body: win }),
};
