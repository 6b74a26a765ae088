// The page state lives in the URL, so any view can be shared as a link. This module is
// the only one that reads or changes the URL's path and query.

/** Defaults; a parameter equal to its default is left out of the URL. */
export const DEFAULTS = Object.freeze({
  from: 'now-1h',
  until: 'now',
  view: 'cpu',
  states: 'RUNNABLE,TIMED_WAITING,BLOCKED,IO',
  tab: 'flame',
  // The zoomed frame: its path of names joined by ';', each long name as `~` and a hash
  // (FlatTree.focusKey); full-name paths of older links still open (FlatTree.findFocus).
  focus: '',
  q: '',
  fn: '',
  sort: 'self',
  maxNodes: '10000',
  type: 'cpu',
  annot: '5',
  dmode: 'range',
  bfrom: '',
  buntil: '',
  dlabel: '',
  da: '',
  db: '',
});

export const STATES = ['RUNNABLE', 'WAITING', 'TIMED_WAITING', 'BLOCKED', 'IO'];
export const VIEWS = {
  cpu: ['RUNNABLE'],
  latency: ['RUNNABLE', 'TIMED_WAITING', 'BLOCKED', 'IO'],
};

/** Where we are: {page: 'start', q} or {page: 'service', service, ...state}. */
export function current() {
  const params = new URLSearchParams(location.search);
  const path = location.pathname;
  if (path === '/wins' || path.startsWith('/wins/')) return { page: 'wins', path, search: location.search };
  const m = path.match(/^\/service\/([^/]+)/);
  if (!m) return { page: 'start', q: params.get('q') || '' };
  const state = { page: 'service', service: decodeURIComponent(m[1]), labels: {} };
  for (const [key, def] of Object.entries(DEFAULTS)) state[key] = params.get(key) ?? def;
  for (const [key, value] of params) {
    if (key.startsWith('label.')) state.labels[key.slice(6)] = value;
  }
  return state;
}

/** The states a service state selects: the view's, or the custom list. */
export function selectedStates(state) {
  if (state.view === 'custom') {
    const list = state.states.split(',').filter((s) => STATES.includes(s));
    return list.length ? list : VIEWS.cpu;
  }
  return VIEWS[state.view] || VIEWS.cpu;
}

/** The URL of a service state (only non-default parameters). */
export function serviceUrl(state) {
  const params = new URLSearchParams();
  for (const [key, def] of Object.entries(DEFAULTS)) {
    const value = state[key];
    if (value !== undefined && value !== null && String(value) !== def) params.set(key, String(value));
  }
  for (const [k, v] of Object.entries(state.labels || {})) if (v !== '') params.set(`label.${k}`, v);
  const qs = params.toString();
  return `/service/${encodeURIComponent(state.service)}${qs ? `?${qs}` : ''}`;
}

/** The start page's URL. */
export function startUrl(q) {
  return q ? `/?q=${encodeURIComponent(q)}` : '/';
}

/** Where a /wins URL points: {view: 'list'} | {view: 'new', params} | {view: 'win', id}. */
export function winsRoute(pathname, search) {
  const m = pathname.match(/^\/wins\/(\d+)\/?$/);
  if (m) return { view: 'win', id: Number(m[1]) };
  if (/^\/wins\/new\/?$/.test(pathname)) return { view: 'new', params: new URLSearchParams(search) };
  return { view: 'list' };
}

/** The ops-wins ledger's URL. */
export function winsUrl() {
  return '/wins';
}

/** The URL of win `id`'s page. */
export function winUrl(id) {
  return `/wins/${id}`;
}

/** The URL of the form that records a win, prefilled with the non-empty `fields`. */
export function newWinUrl(fields = {}) {
  const params = new URLSearchParams();
  for (const [k, v] of Object.entries(fields)) if (v) params.set(k, v);
  const qs = params.toString();
  return `/wins/new${qs ? `?${qs}` : ''}`;
}

const listeners = [];

/** Calls `fn` on every navigation (link, back/forward, `navigate`). */
export function onNavigate(fn) { listeners.push(fn); }

/**
 * Goes to `url`; `replace` keeps history short for typing and dragging; `silent` only
 * records the state in the URL (the caller already shows it).
 */
export function navigate(url, { replace = false, silent = false } = {}) {
  if (url === location.pathname + location.search) return;
  if (replace) history.replaceState(null, '', url);
  else history.pushState(null, '', url);
  if (!silent) for (const fn of listeners) fn();
}

/** A new service state with `changes` applied, and navigation to it. */
export function update(changes, options) {
  const next = { ...current(), ...changes };
  navigate(serviceUrl(next), options);
}

window.addEventListener('popstate', () => { for (const fn of listeners) fn(); });
