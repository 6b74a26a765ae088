// The hot-frames table (top functions by self and by total, sortable, with $/year) and
// the sandwich view (callers and callees of one function).

import { h, replace } from './dom.js';
import { count, pct, usd, usdDelta } from './format.js';

const COLUMNS = [
  ['name', 'Function'],
  ['self', 'Self'],
  ['total', 'Total'],
  ['selfUsd', 'Self $/yr'],
  ['totalUsd', 'Total $/yr'],
];

/**
 * Column headers and hover texts for the selected `states`: with states beyond RUNNABLE
 * (Latency, Custom) the shares count time in every selected state while $ counts only
 * on-CPU time, and the headers say which is which.
 */
function columns(states) {
  const offCpu = (states || []).some((s) => s !== 'RUNNABLE');
  if (!offCpu) return { columns: COLUMNS, titles: {}, note: null };
  const shares = `share of the samples in ${states.join(', ')}`;
  const cpu = 'on-CPU (RUNNABLE) samples only: waiting costs no CPU';
  return {
    columns: [['name', 'Function'], ['self', 'Self % (states)'], ['total', 'Total % (states)'],
      ['selfUsd', 'Self $/yr (CPU)'], ['totalUsd', 'Total $/yr (CPU)']],
    titles: { self: shares, total: shares, selfUsd: cpu, totalUsd: cpu },
    note: `% counts time in ${states.join(', ')}; $/yr counts on-CPU (RUNNABLE) time only.`,
  };
}

/**
 * The hot-frames table. `rows` from tree.hotFrames; `rootTotal` for the shares;
 * `states` the selected thread states (the headers say what % and $ count);
 * `sort` a column key; `explain(row, which)` the hover text of a $ cell;
 * `onSort(key)`, `onPick(row)`, `onSandwich(row)`.
 */
export function hotTable(rows, { rootTotal, states, sort, selected, explain, onSort, onPick, onSandwich, limit = 200 }) {
  const cols = columns(states);
  const key = COLUMNS.some(([k]) => k === sort) ? sort : 'self';
  const sorted = rows.slice().sort((a, b) =>
    key === 'name' ? a.name.localeCompare(b.name) : b[key] - a[key] || a.name.localeCompare(b.name));
  const head = h('tr', {}, cols.columns.map(([k, label]) =>
    h('th', { class: k === 'name' ? '' : 'num', title: cols.titles[k] || null, 'aria-sort': k === key ? (k === 'name' ? 'ascending' : 'descending') : null },
      h('button', { type: 'button', class: 'sort', dataset: { sort: k }, onclick: () => onSort(k) }, label, k === key ? ' ▾' : ''))),
  h('th', {}, ''));
  const body = sorted.slice(0, limit).map((r) =>
    h('tr', {
      class: `hot-row${r.name === selected ? ' selected' : ''}`, dataset: { name: r.name }, title: r.name, tabindex: 0,
      onclick: () => onPick(r), onkeydown: (e) => { if (e.key === 'Enter') onPick(r); },
    },
      h('td', { class: 'fn' }, r.name),
      h('td', { class: 'num' }, pct(r.self / rootTotal)),
      h('td', { class: 'num' }, pct(r.total / rootTotal)),
      h('td', { class: 'num' }, h('span', { class: 'money', 'data-explain': explain(r, 'self') }, usd(r.selfUsd))),
      h('td', { class: 'num' }, h('span', { class: 'money', 'data-explain': explain(r, 'total') }, usd(r.totalUsd))),
      h('td', {}, h('button', {
        type: 'button', class: 'link sandwich-btn', title: `Sandwich view of ${r.name}: its callers and callees`,
        'aria-label': `sandwich view of ${r.name}`,
        onclick: (e) => { e.stopPropagation(); onSandwich(r); },
      }, '◫'))));
  const more = sorted.length > limit ? h('p', { class: 'muted small' }, `${count(sorted.length - limit)} more functions not shown; search to narrow.`) : null;
  return h('div', { class: 'hot-frames' },
    cols.note ? h('p', { class: 'muted small', id: 'hot-note' }, cols.note) : null,
    h('table', { class: 'grid hot' }, h('thead', {}, head), h('tbody', {}, body)), more);
}

/** The diff table: $/year before, after and the change per function, biggest change first. */
export function diffTable(rows, { onPick, explainBefore, explainAfter, limit = 200 }) {
  const sorted = rows.slice().sort((a, b) => Math.abs(b.deltaUsd) - Math.abs(a.deltaUsd) || a.name.localeCompare(b.name));
  return h('table', { class: 'grid diff-table' },
    h('thead', {}, h('tr', {}, h('th', {}, 'Function'), h('th', { class: 'num' }, 'Before $/yr'),
      h('th', { class: 'num' }, 'After $/yr'), h('th', { class: 'num' }, 'Change $/yr'))),
    h('tbody', {}, sorted.slice(0, limit).map((r) =>
      h('tr', { class: 'diff-row', dataset: { name: r.name }, onclick: () => onPick(r) },
        h('td', { class: 'fn' }, r.name),
        h('td', { class: 'num' }, h('span', { class: 'money', 'data-explain': explainBefore(r) }, usd(r.baseUsd))),
        h('td', { class: 'num' }, h('span', { class: 'money', 'data-explain': explainAfter(r) }, usd(r.compUsd))),
        h('td', { class: `num ${r.deltaUsd > 0 ? 'worse' : r.deltaUsd < 0 ? 'better' : ''}` },
          h('span', { class: 'money', 'data-explain': `change = after − before = ${usd(r.compUsd)} − ${usd(r.baseUsd)} = ${usdDelta(r.deltaUsd)} / year\n(each side: its own window, hosts and cost settings)` },
            usdDelta(r.deltaUsd)))))));
}

/** Fills `el` with the sandwich view's frame: title, and two graph holders. */
export function sandwichFrame(el, fn, onClose) {
  const callers = h('div', { class: 'graph-holder', id: 'sandwich-callers' });
  const callees = h('div', { class: 'graph-holder', id: 'sandwich-callees' });
  replace(el,
    h('div', { class: 'sandwich-head' },
      h('h3', {}, 'Sandwich: ', h('code', {}, fn)),
      h('button', { type: 'button', class: 'link', onclick: onClose }, 'close')),
    h('h4', {}, 'Callers (who calls it, inverted: the function on top)'), callers,
    h('h4', {}, 'Callees (what it calls)'), callees);
  return { callers, callees };
}
