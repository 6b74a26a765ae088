// The start page: every service with its CPU cores now, $/year and a 24 h sparkline,
// filtered by a search box; or, with no data yet, how to attach an agent.

import { api } from './api.js';
import { h, replace } from './dom.js';
import { ago, co2, explainNow, num, usd } from './format.js';
import { navigate, serviceUrl, startUrl } from './state.js';
import { sparkline } from './timeline.js';

/** Renders the start page into `main`. */
export async function renderStart(main, route) {
  const data = await api.services();
  const services = (data && data.services) || [];
  if (!services.length) {
    replace(main, emptyState());
    return;
  }
  const search = h('input', {
    type: 'search', id: 'service-search', placeholder: 'Search services…', value: route.q,
    'aria-label': 'search services', autocomplete: 'off',
  });
  const body = h('tbody');
  const fill = () => {
    const q = search.value.trim().toLowerCase();
    const rows = services
      .filter((s) => !q || s.name.toLowerCase().includes(q))
      .sort((a, b) => ((b.now && b.now.usdPerYear) || 0) - ((a.now && a.now.usdPerYear) || 0));
    replace(body, rows.length ? rows.map(row) : h('tr', {}, h('td', { colspan: 6, class: 'muted' }, `No service matches “${search.value}”.`)));
  };
  search.addEventListener('input', () => {
    navigate(startUrl(search.value.trim()), { replace: true, silent: true });
    fill();
  });
  fill();
  const total = services.reduce((sum, s) => sum + ((s.now && s.now.usdPerYear) || 0), 0);
  replace(main,
    h('section', { class: 'start' },
      h('div', { class: 'start-head' },
        h('h1', {}, 'Services'),
        h('span', { class: 'muted' }, `${services.length} service${services.length === 1 ? '' : 's'} · `,
          h('span', { class: 'money', 'data-explain': 'Sum of each service\u2019s $/year estimate over the last 15 minutes' }, `${usd(total)} / year`),
          ' on CPU across them'),
        h('span', { class: 'spacer' }),
        search),
      h('table', { class: 'services grid' },
        h('thead', {}, h('tr', {},
          h('th', {}, 'Service'), h('th', { class: 'num' }, 'CPU cores now'), h('th', { class: 'num' }, '$ / year'),
          h('th', { class: 'num' }, 'CO2 / year'), h('th', {}, 'Last 24 h'), h('th', {}, 'Last profile'))),
        body)));
  search.focus();
}

function row(s) {
  const now = s.now || { cpuCores: 0, usdPerYear: 0, kgCo2PerYear: 0 };
  const href = serviceUrl({ service: s.name, labels: {} });
  const labels = Object.keys(s.labels || {}).join(', ');
  return h('tr', { class: 'service-row', dataset: { service: s.name } },
    h('td', {}, h('a', { href, 'data-link': true, class: 'service-link' }, s.name),
      labels ? h('div', { class: 'muted small' }, `labels: ${labels}`) : null),
    h('td', { class: 'num' }, num(now.cpuCores)),
    h('td', { class: 'num' }, h('span', { class: 'money', 'data-explain': explainNow(now) }, usd(now.usdPerYear))),
    h('td', { class: 'num' }, co2(now.kgCo2PerYear)),
    h('td', {}, sparkline(s.sparkline)),
    h('td', { class: 'muted' }, s.lastMs ? ago(s.lastMs) : '—'));
}

/** What to do when the server holds no profile yet. */
export function emptyState() {
  const origin = location.origin;
  return h('section', { class: 'empty' },
    h('h1', {}, 'No profiles yet'),
    h('p', {}, 'This server has not received any profile. Attach an agent and the services appear here within a minute.'),
    h('h3', {}, 'Any native process, no code change'),
    h('pre', {}, `hotframe agent --server ${origin} --service checkout --pid 1234\nhotframe agent --server ${origin} --service checkout --name checkout-server`),
    h('h3', {}, 'A Rust service, in process'),
    h('pre', {}, `// Cargo.toml: hotframe = { version = "0.1", default-features = false, features = ["inproc"] }\n// main(): start the in-process agent with server = "${origin}"`),
    h('h3', {}, 'A Pyroscope SDK (Python, Go, Java, Ruby, Node, .NET)'),
    h('p', {}, 'Point its server address at ', h('code', {}, origin), '; hotframe accepts /ingest and the Push API unchanged.'),
    h('h3', {}, 'A file from perf, inferno or pprof-rs'),
    h('pre', {}, `hotframe import --server ${origin} --service checkout profile.folded`),
    h('p', {}, h('button', { type: 'button', onclick: () => location.reload() }, 'Check again')));
}
