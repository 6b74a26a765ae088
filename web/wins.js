// The Wins page: the ledger of ops wins with the running total saved (the ripple
// effect), per team and per service; one win with its report and send state; and the
// form that records a new win (prefilled from the diff view's query parameters).
// It talks to the server only through api.js, and reads and makes URLs only through
// state.js, like the other pages.

import { api } from './api.js';
import { h, replace } from './dom.js';
import { co2, cores, time, usd } from './format.js';
import { navigate, newWinUrl, winsUrl, winUrl } from './state.js';

// The router (app.js) asks this page where a /wins URL points; state.js knows.
export { winsRoute } from './state.js';

// This page's few styles, kept with it (the report itself carries inline styles).
document.head.append(h('style', {}, `
.wins-head { display: flex; align-items: center; gap: 16px; }
.wins-head .button { border: 1px solid #c9ccd2; border-radius: 5px; padding: 3px 10px; text-decoration: none; background: #fff; }
.wins-total { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 12px 18px; margin: 10px 0; max-width: 760px; }
.wins-total .big { font-size: 30px; font-weight: 700; }
.wins-groups { display: flex; gap: 24px; flex-wrap: wrap; margin-bottom: 12px; }
.wins-group { min-width: 320px; }
.send-sent { color: var(--better); }
.send-failed { color: var(--worse); }
.send-pending { color: #9a6700; }
.win-figure { font-size: 15px; }
.win-report { width: 100%; max-width: 760px; min-height: 400px; border: 1px solid var(--line); border-radius: 6px; background: #f3f4f6; }
.win-form { display: grid; gap: 8px; max-width: 760px; }
.win-form label { display: flex; flex-direction: column; gap: 2px; font-size: 13px; color: var(--muted); }
.win-ranges { display: flex; gap: 12px; flex-wrap: wrap; }
`));

/** Renders the page for `route` into `main`. */
export async function renderWins(main, route) {
  if (route.view === 'win') return renderWin(main, route.id);
  if (route.view === 'new') return renderForm(main, route.params);
  return renderList(main);
}

/** How the server made the two sides comparable (figures.normalization), in words. */
const NORMALIZATION_WORDS = {
  requests: 'per request (Prometheus)',
  counter: 'per unit of work (profiles\u2019 counter)',
  control: 'against the rest of the service',
  none: 'per host, not normalised',
};

function normalizationBadge(figures) {
  const n = figures.normalization || 'none';
  return h('span', { class: n === 'none' ? 'muted not-normalised' : 'normalised', title: figures.normalizationReason || '' },
    NORMALIZATION_WORDS[n] || n);
}

function incomplete(figures) {
  return !!(figures.matching && figures.matching.incomplete && figures.matching.incomplete.length);
}

/** The server's verdict: a win that is not normalised or not comparable is never called significant. */
function verdict(figures) {
  const saving = figures.saving;
  if ((figures.normalization || 'none') === 'none') {
    return h('span', { class: 'muted not-normalised', title: 'cannot be told apart from a change of traffic; kept out of the totals' }, 'per host, not normalised');
  }
  if (incomplete(figures)) return h('span', { class: 'muted', title: figures.matching.incomplete.join('; ') }, 'not comparable');
  if (!saving.significant) return h('span', { class: 'muted', title: 'the 95% range includes zero' }, 'within noise');
  return saving.usdPerYear >= 0 ? h('span', { class: 'better' }, 'significant') : h('span', { class: 'worse' }, 'regression');
}

function sendBadge(send) {
  if (!send) return h('span', { class: 'muted' }, 'no recipients');
  const text = send.status === 'sent' ? `sent ${time(send.sentMs)}`
    : send.status === 'failed' ? `failed after ${send.attempts} attempts`
      : send.attempts ? `pending, ${send.attempts} failed attempts` : 'pending';
  return h('span', { class: `send-${send.status}`, title: send.lastError || '' }, text);
}

function totalsTable(title, groups) {
  const names = Object.keys(groups);
  if (!names.length) return null;
  return h('div', { class: 'wins-group' }, h('h3', {}, title),
    h('table', { class: 'grid' },
      h('thead', {}, h('tr', {}, h('th', {}, ''), h('th', { class: 'num' }, '$ / year'), h('th', { class: 'num' }, 'CO2 / year'), h('th', { class: 'num' }, 'wins'))),
      h('tbody', {}, names.map((n) => h('tr', {},
        h('td', {}, n), h('td', { class: 'num' }, usd(groups[n].usdPerYear)), h('td', { class: 'num' }, co2(groups[n].kgCo2PerYear)),
        h('td', { class: 'num' }, groups[n].wins))))));
}

async function renderList(main) {
  document.title = 'Ops wins · hotframe';
  const ledger = await api.wins();
  const t = ledger.total;
  const rows = ledger.wins.map((w) => h('tr', { class: 'win-row' },
    h('td', {}, h('a', { href: winUrl(w.id), 'data-link': true }, w.title)),
    h('td', {}, w.service), h('td', {}, w.team || ''), h('td', {}, w.shippedBy || ''),
    h('td', {}, time(w.createdMs)),
    h('td', { class: 'num' }, usd(w.figures.saving.usdPerYear)),
    h('td', {}, normalizationBadge(w.figures)),
    h('td', {}, verdict(w.figures)), h('td', {}, sendBadge(w.send))));
  replace(main,
    h('div', { class: 'wins-head' },
      h('h1', {}, 'Ops wins'),
      h('a', { href: newWinUrl(), 'data-link': true, class: 'button', id: 'new-win' }, 'Record a win')),
    h('section', { class: 'wins-total', id: 'wins-total' },
      h('div', { class: 'big' }, `${usd(t.usdPerYear)} / year`),
      h('div', {}, `${co2(t.kgCo2PerYear)} / year · ${cores(t.cores)} · ${t.wins} ${t.wins === 1 ? 'win' : 'wins'}`),
      h('div', { class: 'muted small' }, ledger.note),
      ledger.notNormalised ? h('div', { class: 'muted small', id: 'wins-not-normalised' },
        `${ledger.notNormalised} ${ledger.notNormalised === 1 ? 'win is' : 'wins are'} per host, not normalised: listed, not in the totals.`) : null),
    h('div', { class: 'wins-groups' }, totalsTable('By team', ledger.byTeam), totalsTable('By service', ledger.byService)),
    ledger.wins.length
      ? h('table', { class: 'grid', id: 'wins-table' },
        h('thead', {}, h('tr', {}, ['Win', 'Service', 'Team', 'Shipped by', 'Recorded', '$ / year', 'Compared', '', 'Email']
          .map((c, i) => h('th', { class: i === 5 ? 'num' : '' }, c)))),
        h('tbody', {}, rows))
      : h('p', { class: 'empty' }, 'No wins yet. Compare two ranges in a service\u2019s diff tab, or record one here.'));
}

async function renderWin(main, id) {
  const w = await api.win(id);
  document.title = `${w.title} · hotframe`;
  const s = w.figures.saving;
  const status = h('span', { class: 'status', role: 'status' });
  const frame = h('iframe', { class: 'win-report', title: 'the emailed report', sandbox: 'allow-same-origin' });
  replace(main,
    h('p', {}, h('a', { href: winsUrl(), 'data-link': true }, '← all wins')),
    h('h1', {}, w.title),
    h('p', { class: 'muted' }, `${w.service}${w.team ? ` · team ${w.team}` : ''}${w.shippedBy ? ` · shipped by ${w.shippedBy}` : ''} · ${time(w.createdMs)}`),
    h('p', { class: 'win-figure' }, h('strong', {}, `${usd(s.usdPerYear)} / year`), ` · ${co2(s.kgCo2PerYear)} / year · ${cores(s.cores)} · 95% range ${usd(s.usdLow)} to ${usd(s.usdHigh)} · `, verdict(w.figures)),
    h('p', { class: 'win-normalization' }, 'Compared ', normalizationBadge(w.figures), `: ${w.figures.normalizationReason || ''}`),
    (w.figures.confounders || []).length
      ? h('ul', { class: 'win-confounders' }, w.figures.confounders.map((c) => h('li', { class: 'muted small' }, c)))
      : null,
    h('p', {}, 'Email: ', sendBadge(w.send), w.recipients.length ? ` to ${w.recipients.join(', ')} ` : ' ',
      w.recipients.length ? h('button', { type: 'button', id: 'resend', onclick: () => resend(id, status) }, 'Send again') : null, ' ', status),
    w.send && w.send.lastError && w.send.status !== 'sent' ? h('p', { class: 'muted small' }, `Last error: ${w.send.lastError}`) : null,
    frame);
  // The report is static HTML; the sandbox (no scripts) keeps its styles to itself.
  frame.srcdoc = await api.winReport(id);
  frame.addEventListener('load', () => {
    const doc = frame.contentDocument;
    if (doc && doc.body) frame.style.height = `${doc.documentElement.scrollHeight + 20}px`;
  });
}

async function resend(id, status) {
  status.textContent = 'Queued…';
  try {
    await api.resendWin(id);
    status.textContent = 'Queued; the server sends it and retries on failure.';
  } catch (err) {
    status.textContent = `Could not queue it: ${err.message}`;
  }
}

/** A time field's value as the API's time: digits are Unix s/ms, else `now-…` text. */
function timeArg(text) {
  const t = text.trim();
  return /^\d+$/.test(t) ? Number(t) : t;
}

/** `k=v,k=v` (the diff view's `blabels`/`alabels`) as a label object. */
export function labelsArg(text) {
  const out = {};
  for (const pair of text.split(',')) {
    const i = pair.indexOf('=');
    if (i > 0) out[pair.slice(0, i).trim()] = pair.slice(i + 1).trim();
  }
  return out;
}

async function renderForm(main, params) {
  document.title = 'Record an ops win · hotframe';
  const { services } = await api.services();
  const field = (id, label, value = '', attrs = {}) => {
    const input = h('input', { id, name: id, value, ...attrs });
    return [input, h('label', { for: id }, label, input)];
  };
  const service = h('select', { id: 'win-service' }, services.map((s) => h('option', { value: s.name, selected: s.name === params.get('service') }, s.name)));
  const [title, titleRow] = field('win-title', 'Title', params.get('title') || '', { size: 60, required: true, placeholder: 'Cache compiled regexes' });
  const description = h('textarea', { id: 'win-description', rows: 3, cols: 60 });
  const [bfrom, bfromRow] = field('win-bfrom', 'Before from', params.get('bfrom') || 'now-2d', { size: 16 });
  const [buntil, buntilRow] = field('win-buntil', 'until', params.get('buntil') || 'now-1d', { size: 16 });
  const [afrom, afromRow] = field('win-afrom', 'After from', params.get('afrom') || 'now-1d', { size: 16 });
  const [auntil, auntilRow] = field('win-auntil', 'until', params.get('auntil') || 'now', { size: 16 });
  const [blabels, blabelsRow] = field('win-blabels', 'Before labels (k=v, comma separated)', params.get('blabels') || '', { size: 24 });
  const [alabels, alabelsRow] = field('win-alabels', 'After labels', params.get('alabels') || '', { size: 24 });
  const [frame, frameRow] = field('win-frame', 'Frame (substring or /regex/, optional)', params.get('frame') || '', { size: 40 });
  const [shipped, shippedRow] = field('win-shipped-by', 'Shipped by', '', { size: 20 });
  const [team, teamRow] = field('win-team', 'Team', params.get('team') || '', { size: 20 });
  const [emails, emailsRow] = field('win-emails', 'Extra emails (comma separated)', '', { size: 40 });
  const [requests, requestsRow] = field('win-requests', 'Request counter (PromQL, $__range = the window; optional)', params.get('requests') || '',
    { size: 60, placeholder: 'sum(increase(http_requests_total{job="checkout"}[$__range]))' });
  const include = h('input', { id: 'win-include', type: 'checkbox' });
  const includeRow = h('label', { for: 'win-include' }, include, ' Count in the totals even if not normalised (per host)');
  const status = h('p', { class: 'status', role: 'status' });
  const preview = h('iframe', { class: 'win-report', title: 'report preview', sandbox: 'allow-same-origin', hidden: true });
  const body = (dryRun) => ({
    service: service.value,
    title: title.value,
    description: description.value,
    before: { from: timeArg(bfrom.value), until: timeArg(buntil.value), labels: labelsArg(blabels.value) },
    after: { from: timeArg(afrom.value), until: timeArg(auntil.value), labels: labelsArg(alabels.value) },
    frame: frame.value.trim() || null,
    shippedBy: shipped.value.trim() || null,
    team: team.value.trim() || null,
    emails: emails.value.split(',').map((e) => e.trim()).filter(Boolean),
    requestsQuery: requests.value.trim() || null,
    includeInTotals: include.checked,
    dryRun,
  });
  const submit = async (dryRun) => {
    status.textContent = dryRun ? 'Measuring…' : 'Recording…';
    try {
      const answer = await api.startOpsWin(body(dryRun));
      if (dryRun) {
        const s = answer.figures.saving;
        const n = answer.figures.normalization || 'none';
        status.textContent = `${usd(s.usdPerYear)} / year (95% range ${usd(s.usdLow)} to ${usd(s.usdHigh)})${s.significant ? '' : ' — not significant'} · compared ${NORMALIZATION_WORDS[n] || n}`;
        preview.hidden = false;
        preview.srcdoc = answer.reportHtml;
      } else {
        navigate(winUrl(answer.id));
      }
    } catch (err) {
      status.textContent = err.message;
    }
  };
  replace(main,
    h('p', {}, h('a', { href: winsUrl(), 'data-link': true }, '← all wins')),
    h('h1', {}, 'Record an ops win'),
    h('form', { class: 'win-form', id: 'win-form', onsubmit: (e) => { e.preventDefault(); submit(false); } },
      h('label', { for: 'win-service' }, 'Service', service), titleRow,
      h('label', { for: 'win-description' }, 'What changed', description),
      h('div', { class: 'win-ranges' }, bfromRow, buntilRow, blabelsRow), h('div', { class: 'win-ranges' }, afromRow, auntilRow, alabelsRow),
      frameRow, requestsRow, includeRow, h('div', { class: 'win-ranges' }, shippedRow, teamRow), emailsRow,
      h('div', { class: 'dialog-buttons' },
        h('button', { type: 'button', id: 'win-preview', onclick: () => submit(true) }, 'Preview'),
        h('button', { type: 'submit', id: 'win-record' }, 'Record and email'))),
    status, preview);
  preview.addEventListener('load', () => {
    const doc = preview.contentDocument;
    if (doc && doc.body) preview.style.height = `${doc.documentElement.scrollHeight + 20}px`;
  });
}
