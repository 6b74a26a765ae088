// The diff tab: a baseline and a comparison (two time ranges, or two values of a label),
// merged by call path into a differential flame graph (red: grew, slower; blue: shrank,
// faster) and a table of the $/year change per function; and the ops-win hook.

import { api, relativeTime, seconds } from './api.js';
import { h, replace } from './dom.js';
import { diffColor, FlameGraph } from './flame.js';
import { explainCost, pct, usd, usdDelta } from './format.js';
import { navigate, newWinUrl, selectedStates, update } from './state.js';
import { diffTable } from './tables.js';
import { diffRows, diffTrees, flatten } from './tree.js';

/** The same-length range just before [from, until], in the URL's own forms. */
export function previousRange(from, until) {
  const rel = relativeTime(from);
  if (rel && until === 'now') return { from: `now-${rel.count * 2}${rel.unit}`, until: from };
  const a = Number(from);
  const b = until === 'now' ? Date.now() : Number(until);
  if (Number.isFinite(a) && Number.isFinite(b) && b > a) return { from: String(a - (b - a)), until: String(a) };
  return { from: 'now-2h', until: 'now-1h' };
}

/**
 * The two time ranges compared when the user named no baseline: the range of the same
 * length just before the selected one when the service has data there; else (a service
 * younger than that) the two halves of its data inside the selected range, so that
 * neither side is empty. `service` is the services list's entry (firstMs, lastMs).
 */
export function defaultRanges(from, until, service) {
  const prev = previousRange(from, until);
  const selected = { before: prev, after: { from, until }, halves: false };
  const first = service && service.firstMs;
  const last = service && service.lastMs;
  if (!first || !last) return selected;
  const ms = (t) => seconds(t) * 1000;
  if (first < ms(prev.until) && last > ms(prev.from)) return selected;
  const lo = Math.max(first, ms(from));
  const hi = Math.min(last, ms(until));
  if (!(hi > lo)) return selected;
  const mid = String(Math.round((lo + hi) / 2));
  return { before: { from: String(Math.floor(lo)), until: mid }, after: { from: mid, until: String(Math.ceil(hi)) }, halves: true };
}

/** The two sides of the diff as API filters, with a human name each. */
export function sides(state, service) {
  const states = selectedStates(state).join(',');
  const base = { service: state.service, states, type: state.type, labels: { ...state.labels } };
  if (state.dmode === 'label') {
    const key = state.dlabel || Object.keys((service && service.labels) || {})[0] || '';
    const values = (service && service.labels && service.labels[key]) || [];
    const a = state.da || values[0] || '';
    const b = state.db || values[1] || values[0] || '';
    return {
      key, a, b,
      before: { ...base, from: state.from, until: state.until, labels: { ...base.labels, [key]: a }, title: `${key}=${a}` },
      after: { ...base, from: state.from, until: state.until, labels: { ...base.labels, [key]: b }, title: `${key}=${b}` },
    };
  }
  const picked = state.bfrom || state.buntil;
  const d = picked ? { after: { from: state.from, until: state.until }, halves: false } : defaultRanges(state.from, state.until, service);
  const prev = picked ? previousRange(state.from, state.until) : d.before;
  const bfrom = state.bfrom || prev.from;
  const buntil = state.buntil || prev.until;
  return {
    halves: d.halves,
    before: { ...base, from: bfrom, until: buntil, title: `${bfrom} → ${buntil}` },
    after: { ...base, from: d.after.from, until: d.after.until, title: `${d.after.from} → ${d.after.until}` },
  };
}

/** The sentence that says which sides of a diff have no samples, or null. */
export function emptySides(s, before, after) {
  const empty = [['before', s.before, before], ['after', s.after, after]]
    .filter(([, , answer]) => !((answer.totals && answer.totals.samples) > 0))
    .map(([name, side]) => `the ${name} side (${side.title})`);
  if (!empty.length) return null;
  const what = empty.join(' and ');
  return `No samples in ${what}: ${empty.length === 2 ? 'they are' : 'it is'} drawn as $0.00. Pick ranges with data (the timeline shows where it is).`;
}

/** Renders the diff tab into `el`. Returns the differential FlameGraph (for tests). */
export async function renderDiff(el, state, service, { tooltip, maxNodes }) {
  const s = sides(state, service);
  const controls = diffControls(state, service, s);
  const holder = h('div', { class: 'graph-holder', id: 'diff-graph' });
  const table = h('div', { class: 'diff-side' });
  const summary = h('p', { class: 'diff-summary' }, 'Loading both sides…');
  const winStatus = h('span', { class: 'status', role: 'status' });
  replace(el, controls, summary, h('div', { class: 'split' }, h('div', { class: 'main-col' }, holder), table));
  const [before, after] = await Promise.all([api.flamegraph(s.before, maxNodes), api.flamegraph(s.after, maxNodes)]);
  const merged = diffTrees(before.root, before.cost, after.root, after.cost);
  const tree = flatten(merged, (n) => n.total);
  const graph = new FlameGraph(holder, { mode: 'diff' });
  graph.setTree(tree, {
    mode: 'diff',
    colorOf: (i) => diffColor(tree.node[i].base.rate, tree.node[i].comp.rate),
    annotate: null,
    onZoom: (i) => graph.zoom(i),
    onHover: (i, e) => tooltip(i >= 0 ? diffTip(tree.node[i], merged) : null, e),
  });
  graph.render();
  const rows = diffRows(tree);
  const change = (after.totals.usdPerYear || 0) - (before.totals.usdPerYear || 0);
  const best = cheapestFrame(tree, rows);
  const empty = emptySides(s, before, after);
  replace(summary,
    empty ? h('span', { class: 'diff-empty worse', role: 'status' }, empty, h('br')) : null,
    h('span', { class: 'swatch', style: { background: diffColor(1, 2) } }), ' grew (slower) ',
    h('span', { class: 'swatch', style: { background: diffColor(2, 1) } }), ' shrank (faster) · ',
    'before ', h('span', { class: 'money', 'data-explain': explainCost(`whole service before (${s.before.title})`, onCpu(before), before.totals, before.cost) },
      `${s.before.title}: ${usd(before.totals.usdPerYear)}/yr`),
    ' · after ', h('span', { class: 'money', 'data-explain': explainCost(`whole service after (${s.after.title})`, onCpu(after), after.totals, after.cost) },
      `${s.after.title}: ${usd(after.totals.usdPerYear)}/yr`), ' · ',
    h('strong', { class: change > 0 ? 'worse' : change < 0 ? 'better' : '' }, `change ${usdDelta(change)} / year`), ' ',
    h('button', {
      type: 'button', id: 'start-ops-win',
      onclick: () => startOpsWin(state, s, before, after, best, winStatus),
    }, 'Start an ops win'), ' ', winStatus);
  replace(table, diffTable(rows, {
    onPick: (r) => graph.zoom(r.heaviest),
    explainBefore: (r) => explainCost(`${r.name} before (${s.before.title})`, r.baseCpu,
      { cores: r.baseCores, usdPerYear: r.baseUsd, kgCo2PerYear: r.baseKg }, before.cost),
    explainAfter: (r) => explainCost(`${r.name} after (${s.after.title})`, r.compCpu,
      { cores: r.compCores, usdPerYear: r.compUsd, kgCo2PerYear: r.compKg }, after.cost),
  }));
  return graph;
}

/** On-CPU (RUNNABLE) samples of a flame-graph answer: S of its totals. */
function onCpu(flame) {
  return (flame.root && flame.root.states && flame.root.states.RUNNABLE) || 0;
}

/**
 * The function whose own code got cheapest: the biggest $ drop that its callees do not
 * explain (main and the handlers above a fix drop as much, but the fix is not theirs).
 */
function cheapestFrame(tree, rows) {
  const delta = (i) => tree.node[i].comp.usdPerYear - tree.node[i].base.usdPerYear;
  const own = (i) => {
    const d = delta(i);
    let kids = 0;
    for (const j of tree.children(i)) kids = Math.min(kids, delta(j));
    return d < 0 && kids > d * 0.8 ? d : 0;
  };
  let best = null;
  for (const r of rows) if (own(r.heaviest) < 0 && (!best || own(r.heaviest) < own(best.heaviest))) best = r;
  return best;
}

function diffTip(n, root) {
  const bshare = root.base.rate ? n.base.rate / root.base.rate : 0;
  const cshare = root.comp.rate ? n.comp.rate / root.comp.rate : 0;
  return [
    h('div', { class: 'tip-name' }, n.name),
    h('div', {}, `before: ${pct(bshare)} · ${usd(n.base.usdPerYear)} / year`),
    h('div', {}, `after: ${pct(cshare)} · ${usd(n.comp.usdPerYear)} / year`),
    h('div', { class: n.comp.usdPerYear > n.base.usdPerYear ? 'worse' : 'better' },
      `change: ${usdDelta(n.comp.usdPerYear - n.base.usdPerYear)} / year`),
  ];
}

function diffControls(state, service, s) {
  const labelKeys = Object.keys((service && service.labels) || {});
  const mode = h('select', { id: 'diff-mode', onchange: (e) => update({ dmode: e.target.value }) },
    h('option', { value: 'range', selected: state.dmode !== 'label' }, 'two time ranges'),
    h('option', { value: 'label', selected: state.dmode === 'label', disabled: !labelKeys.length }, 'two label values'));
  if (state.dmode === 'label') {
    const values = (service.labels && service.labels[s.key]) || [];
    const pick = (id, param, value) => h('select', { id, onchange: (e) => update({ [param]: e.target.value }) },
      values.map((v) => h('option', { value: v, selected: v === value }, v)));
    return h('div', { class: 'diff-controls' }, 'Compare ', mode, ': ',
      h('select', { id: 'diff-label', onchange: (e) => update({ dlabel: e.target.value, da: '', db: '' }) },
        labelKeys.map((k) => h('option', { value: k, selected: k === s.key }, k))),
      ' = ', pick('diff-a', 'da', s.a), ' (before) vs ', pick('diff-b', 'db', s.b), ' (after)');
  }
  const bfrom = h('input', { id: 'diff-bfrom', value: s.before.from, size: 14 });
  const buntil = h('input', { id: 'diff-buntil', value: s.before.until, size: 14 });
  const after = s.halves
    ? [' with ', h('span', { id: 'diff-after' }, s.after.title), ' (after) ']
    : [' with the selected range (after) '];
  return h('form', {
    class: 'diff-controls',
    onsubmit: (e) => { e.preventDefault(); update({ bfrom: bfrom.value.trim(), buntil: buntil.value.trim() }); },
  }, 'Compare ', mode, ': before ', bfrom, ' → ', buntil, ...after,
  h('button', { type: 'submit' }, 'Compare'),
  s.halves ? h('span', { class: 'muted small', id: 'diff-halves' },
    ' · no data before the selected range: the two halves of the data are compared') : null);
}

/**
 * The hook of the ops-wins issue: opens the win form (web/wins.js) prefilled with this
 * diff's before/after selection and the frame that got cheaper; `window.hotframe.hooks.
 * startOpsWin(win)` replaces it when set. Label sides travel as `blabels`/`alabels`
 * (`k=v,k=v`) for a form that knows them.
 */
async function startOpsWin(state, s, before, after, best, status) {
  const win = {
    service: state.service,
    title: best && best.deltaUsd < 0 ? `Faster ${best.name} in ${state.service}` : '',
    bfrom: String(before.from),
    buntil: String(before.until),
    afrom: String(after.from),
    auntil: String(after.until),
    frame: best && best.deltaUsd < 0 ? best.name : '',
    blabels: Object.entries(s.before.labels || {}).map(([k, v]) => `${k}=${v}`).join(','),
    alabels: Object.entries(s.after.labels || {}).map(([k, v]) => `${k}=${v}`).join(','),
  };
  const hook = window.hotframe && window.hotframe.hooks && window.hotframe.hooks.startOpsWin;
  if (hook) {
    try {
      await hook(win);
    } catch (err) {
      status.textContent = `Could not start the ops win: ${err.message}`;
    }
    return;
  }
  navigate(newWinUrl(win));
}
