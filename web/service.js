// The service page: range picker, label filters, view (CPU / Latency / Custom states),
// timeline, and the tabs (flame graph with the hot-frames table beside it, sandwich,
// diff, cost settings). Everything it shows follows from the URL (state.js).

import { api } from './api.js';
import { h, replace, showTip } from './dom.js';
import { renderDiff } from './diff.js';
import { costNote, FlameGraph, shortName, STATE_COLORS } from './flame.js';
import { co2, count, cores, explainCost, pct, threadTime, time, usd } from './format.js';
import { renderSettings } from './settings.js';
import { selectedStates, STATES, update } from './state.js';
import { hotTable, sandwichFrame } from './tables.js';
import { drawTimeline } from './timeline.js';
import { flatten, hotFrames, sandwich } from './tree.js';

const RANGES = [['15m', 'now-15m'], ['1h', 'now-1h'], ['24h', 'now-24h'], ['7d', 'now-7d']];
/** Crumbs a zoom path shows before the middle ones fold into `…`. */
const CRUMBS_SHOWN = 10;
const TABS = [['flame', 'Flame graph'], ['sandwich', 'Sandwich'], ['diff', 'Diff'], ['cost', 'Cost settings']];

/** Filters for the API from a page state. */
function filters(state) {
  return { service: state.service, from: state.from, until: state.until, states: selectedStates(state).join(','), type: state.type, labels: state.labels };
}

let escapeListening = false;

/**
 * One document listener for Escape, installed with the first service page and sent to
 * whichever page is current (a listener per page would pile up, one per visit).
 */
function listenForEscape() {
  if (escapeListening) return;
  escapeListening = true;
  document.addEventListener('keydown', (e) => {
    if (e.key !== 'Escape') return;
    if (e.target && /^(INPUT|SELECT|TEXTAREA)$/.test(e.target.tagName)) return;
    const page = window.hotframe && window.hotframe.page;
    if (page instanceof ServicePage) page.zoomOut();
  });
}

/** One service's page; `show(state)` is called on every navigation within it. */
export class ServicePage {
  constructor(main) {
    this.main = main;
    this.dataKey = null;
    this.data = null;
    this.flame = null;
    listenForEscape();
  }

  /** Escape zooms out one level, as the breadcrumb does. */
  zoomOut() {
    if (!this.flame || !this.state || !this.state.focus) return;
    const tree = this.data.tree;
    update({ focus: tree.focusKey(tree.parent[tree.findFocus(this.state.focus)] || 0) });
  }

  async show(state) {
    const seq = (this.seq = (this.seq || 0) + 1);
    this.state = state;
    // The view is in the key although Latency and Custom may select the same states: the
    // controls (state boxes) are drawn with the data.
    const key = JSON.stringify([state.service, state.from, state.until, state.view, selectedStates(state), state.type, state.labels, state.maxNodes]);
    if (key !== this.dataKey) {
      this.main.classList.add('busy');
      const f = filters(state);
      let answers;
      try {
        answers = await Promise.all([api.services(), api.flamegraph(f, state.maxNodes), api.timeline(f)]);
      } finally {
        this.main.classList.remove('busy');
      }
      const [services, flame, timeline] = answers;
      // A newer navigation (or a settings change) started meanwhile: it draws the page.
      if (seq !== this.seq) return;
      this.dataKey = key;
      this.service = ((services && services.services) || []).find((s) => s.name === state.service) || null;
      this.data = { flame, timeline, tree: flatten(flame.root) };
      this.layout();
    }
    this.syncControls();
    await this.showTab();
  }

  /** Rebuilds the page around fresh data. */
  layout() {
    const state = this.state;
    const { flame, timeline } = this.data;
    this.flame = null;
    this.tabBody = h('section', { class: 'tab-body' });
    this.timelineHolder = h('div', { class: 'timeline-holder' });
    replace(this.main,
      h('div', { class: 'service-head' },
        h('h1', {}, state.service),
        this.totalsLine(flame),
        h('span', { class: 'spacer' }),
        this.exportButtons()),
      h('div', { class: 'controls' }, this.rangePicker(), this.viewPicker(), this.labelFilters()),
      this.timelineHolder,
      this.legend(flame),
      h('nav', { class: 'tabs', role: 'tablist' }, TABS.map(([id, label]) =>
        h('button', { type: 'button', role: 'tab', class: 'tab', id: `tab-${id}`, dataset: { tab: id }, onclick: () => update({ tab: id }) }, label))),
      this.tabBody);
    drawTimeline(this.timelineHolder, timeline, selectedStates(state), (a, b) => update({ from: String(a), until: String(b) }));
    this.tabKey = null;
  }

  totalsLine(flame) {
    const t = flame.totals || {};
    if (!t.samples) return h('span', { class: 'muted' }, 'no samples in this range');
    return h('span', { class: 'totals' },
      `${cores(t.cores)} on CPU · `,
      h('span', { class: 'money', id: 'total-usd', 'data-explain': explainCost('Whole service, this range', this.data.tree.cpu[0], t, flame.cost) }, `${usd(t.usdPerYear)} / year`),
      ` · ${co2(t.kgCo2PerYear)} / year · ${count(t.samples)} samples`);
  }

  exportButtons() {
    const state = this.state;
    const note = h('span', { class: 'small', id: 'export-status', role: 'status' });
    // A fetch, not a plain link: the bearer token must go with the request.
    const save = async (format, ext) => {
      note.textContent = `exporting ${format}…`;
      try {
        const blob = await api.exportBlob(filters(state), format);
        window.hotframe.lastExport = { format, size: blob.size, type: blob.type };
        const a = h('a', { href: URL.createObjectURL(blob), download: `${state.service}.${ext}` });
        document.body.append(a);
        a.click();
        a.remove();
        setTimeout(() => URL.revokeObjectURL(a.href), 10000);
        note.textContent = '';
      } catch (err) {
        note.textContent = `export failed: ${err.message}`;
      }
    };
    return h('div', { class: 'exports' }, note, 'Export: ',
      h('button', { type: 'button', id: 'export-svg', onclick: () => save('svg', 'svg') }, 'SVG'),
      h('button', { type: 'button', id: 'export-folded', onclick: () => save('folded', 'folded.txt') }, 'folded'),
      h('button', { type: 'button', id: 'export-pprof', onclick: () => save('pprof', 'pb.gz') }, 'pprof'));
  }

  rangePicker() {
    const state = this.state;
    const isoLocal = (t) => {
      const ms = /^\d+$/.test(t) ? Number(t) : null;
      return ms ? time(ms).replace(' ', 'T') : '';
    };
    const from = h('input', { type: 'datetime-local', id: 'range-from', value: isoLocal(state.from) });
    const until = h('input', { type: 'datetime-local', id: 'range-until', value: isoLocal(state.until) });
    const custom = /^\d+$/.test(state.from);
    return h('div', { class: 'range', role: 'group', 'aria-label': 'time range' },
      RANGES.map(([label, value]) => h('button', {
        type: 'button', class: `range-btn${state.from === value && state.until === 'now' ? ' active' : ''}`, dataset: { range: label },
        onclick: () => update({ from: value, until: 'now' }),
      }, label)),
      h('details', { class: 'custom-range' },
        h('summary', {}, custom ? `${time(Number(state.from))} → ${/^\d+$/.test(state.until) ? time(Number(state.until)) : state.until}` : 'custom'),
        h('form', {
          onsubmit: (e) => {
            e.preventDefault();
            const a = Date.parse(from.value);
            const b = until.value ? Date.parse(until.value) : Date.now();
            if (Number.isFinite(a) && Number.isFinite(b) && b > a) update({ from: String(a), until: String(b) });
          },
        }, from, ' → ', until, h('button', { type: 'submit' }, 'Apply'))));
  }

  viewPicker() {
    const state = this.state;
    const views = [['cpu', 'CPU'], ['latency', 'Latency'], ['custom', 'Custom states']];
    const chosen = selectedStates(state);
    return h('div', { class: 'views', role: 'group', 'aria-label': 'view' },
      views.map(([id, label]) => h('button', {
        type: 'button', class: `view-btn${state.view === id ? ' active' : ''}`, dataset: { view: id },
        onclick: () => update({ view: id, states: id === 'custom' ? chosen.join(',') : undefined }),
      }, label)),
      state.view === 'custom' ? h('span', { class: 'state-boxes' }, STATES.map((s) => h('label', {},
        h('input', {
          type: 'checkbox', value: s, checked: chosen.includes(s),
          onchange: (e) => {
            const next = STATES.filter((x) => (x === s ? e.target.checked : chosen.includes(x)));
            if (next.length) update({ states: next.join(',') });
          },
        }), h('span', { class: 'swatch', style: { background: STATE_COLORS[s] } }), s))) : null);
  }

  labelFilters() {
    const state = this.state;
    const labels = (this.service && this.service.labels) || {};
    const keys = Object.keys(labels).sort();
    const types = (this.service && this.service.profileTypes) || [];
    // Pyroscope SDKs may send other profile types (alloc, ...); cost is CPU-only.
    const typePicker = types.length > 1 || (types.length === 1 && types[0] !== state.type)
      ? h('label', {}, 'profile ', h('select', { id: 'profile-type', onchange: (e) => update({ type: e.target.value }) },
        [...new Set([...types, state.type])].map((t) => h('option', { value: t, selected: t === state.type }, t))))
      : null;
    if (!keys.length) return typePicker;
    return h('div', { class: 'labels', role: 'group', 'aria-label': 'label filters' }, typePicker,
      keys.map((k) => h('label', {}, `${k} `,
        h('select', {
          dataset: { label: k },
          onchange: (e) => {
            const next = { ...state.labels };
            if (e.target.value) next[k] = e.target.value;
            else delete next[k];
            update({ labels: next });
          },
        },
        h('option', { value: '' }, 'any'),
        labels[k].map((v) => h('option', { value: v, selected: state.labels[k] === v }, v))))));
  }

  /** Thread time per state over the range, like "RUNNABLE: 13 years". */
  legend(flame) {
    const by = (flame.totals && flame.totals.byState) || {};
    const c = flame.cost;
    // Fleet thread seconds per sample, (1 / F) × (H / Hp), as the server computed it.
    const factor = (c && c.perSample && c.perSample.threadSeconds) || 0;
    const chosen = selectedStates(this.state);
    // The API counts only the selected states; the others say so rather than "0 s".
    return h('div', { class: 'legend' }, STATES.map((s) => {
      const on = chosen.includes(s);
      return h('span', {
        class: `legend-item${on ? '' : ' off'}`,
        title: on ? `${count(by[s] || 0)} samples × 1/${c ? c.frequencyHz : '?'} Hz × fleet/profiled hosts` : `${s} is not part of this view`,
      }, h('span', { class: 'swatch', style: { background: STATE_COLORS[s] } }), on ? `${s}: ${threadTime((by[s] || 0) * factor)}` : `${s}: not in view`);
    }));
  }

  syncControls() {
    for (const b of this.main.querySelectorAll('.tab')) {
      const on = b.dataset.tab === this.state.tab;
      b.classList.toggle('active', on);
      b.setAttribute('aria-selected', on ? 'true' : 'false');
    }
  }

  async showTab() {
    const state = this.state;
    const tabKey = JSON.stringify([state.tab, state.tab === 'diff' ? [state.dmode, state.bfrom, state.buntil, state.dlabel, state.da, state.db] : 0,
      state.tab === 'sandwich' ? state.fn : 0]);
    if (tabKey !== this.tabKey) {
      this.tabKey = tabKey;
      if (state.tab !== 'cost') this.settingsNote = '';
      this.flame = null;
      this.diffFlame = null;
      if (state.tab === 'diff') {
        this.diffFlame = await renderDiff(this.tabBody, state, this.service, { tooltip: showTip, maxNodes: state.maxNodes });
        return;
      }
      if (state.tab === 'cost') {
        await renderSettings(this.tabBody, state.service, this.data.flame.cost, async (note) => {
          this.dataKey = null;
          this.settingsNote = note;
          await this.show(this.state);
        }, this.settingsNote || '');
        return;
      }
      if (state.tab === 'sandwich') { this.showSandwich(); return; }
      this.buildFlameTab();
    }
    if (state.tab === 'flame' || state.tab === '') this.refreshFlame();
  }

  /** Tooltip content of node i of `tree`, with the formula of its $ figure. */
  tip(tree, i) {
    const n = tree.node[i];
    const { flame } = this.data;
    const root = tree.total[0] || 1;
    const states = Object.entries(n.states || {}).filter(([, v]) => v > 0);
    const sum = states.reduce((a, [, v]) => a + v, 0) || 1;
    const est = { cores: n.cores || 0, usdPerYear: n.usdPerYear || 0, kgCo2PerYear: n.kgCo2PerYear || 0 };
    return [
      h('div', { class: 'tip-name' }, n.name),
      h('div', {}, `total ${pct(tree.total[i] / root)} · self ${pct(tree.self[i] / root)} · ${count(tree.total[i])} samples`),
      h('div', { class: 'tip-cost' }, `${cores(est.cores)} · ${usd(est.usdPerYear)} / year · ${co2(est.kgCo2PerYear)} / year`),
      states.length ? h('div', { class: 'tip-states' }, states.map(([s, v]) =>
        h('span', {}, h('span', { class: 'swatch', style: { background: STATE_COLORS[s] || '#ccc' } }), `${s} ${pct(v / sum)}`))) : null,
      h('pre', { class: 'tip-formula' }, explainCost('How the $ is computed:', tree.cpu[i], est, flame.cost)),
    ];
  }

  buildFlameTab() {
    const state = this.state;
    const { flame, tree } = this.data;
    if (!flame.totals || !flame.totals.samples) {
      replace(this.tabBody, h('div', { class: 'empty' },
        h('h2', {}, 'No samples in this range'),
        h('p', {}, `Nothing was recorded for ${state.service} with these filters between ${state.from} and ${state.until}. `,
          'Try a longer range, another view (the CPU view shows only on-CPU samples), or fewer label filters.')));
      return;
    }
    this.crumbs = h('nav', { class: 'breadcrumb', 'aria-label': 'zoom path' });
    this.search = h('input', {
      type: 'search', id: 'flame-search', placeholder: 'Search frames (text or /regex/)', value: state.q, autocomplete: 'off',
      oninput: (e) => update({ q: e.target.value }, { replace: true }),
    });
    this.matchLine = h('span', { class: 'match', id: 'match-share' });
    const holder = h('div', { class: 'graph-holder', id: 'flame-graph' });
    this.tableHolder = h('div', { class: 'side' });
    const pruned = flame.prunedNodes
      ? h('span', { class: 'muted small', id: 'pruned' }, `${count(flame.nodes)} nodes shown, ${count(flame.prunedNodes)} small ones merged into [other] · `,
        h('button', { type: 'button', class: 'link', onclick: () => update({ maxNodes: String(Math.min(200000, Number(state.maxNodes) * 5)) }) }, 'show more'))
      : null;
    const annot = h('label', { class: 'small muted', title: 'Frames at or above this share carry their yearly cost in place' }, '$ labels from ',
      h('select', { id: 'annot', onchange: (e) => update({ annot: e.target.value }) },
        ['1', '2', '5', '10', '20', '101'].map((v) => h('option', { value: v, selected: v === state.annot }, v === '101' ? 'off' : `${v}%`))));
    replace(this.tabBody,
      h('div', { class: 'flame-bar' }, this.crumbs, h('span', { class: 'spacer' }), annot, this.search, this.matchLine),
      pruned,
      h('div', { class: 'split' }, h('div', { class: 'main-col' }, holder), this.tableHolder));
    const threshold = () => Number(this.state.annot) / 100;
    const rootTotal = tree.total[0] || 1;
    this.flame = new FlameGraph(holder);
    this.flame.setTree(tree, {
      mode: state.view === 'cpu' ? 'cpu' : 'states',
      states: selectedStates(state),
      annotate: (i) => (i > 0 && tree.total[i] / rootTotal >= threshold() ? costNote(tree.total[i] / rootTotal, tree.node[i].usdPerYear || 0) : null),
      onZoom: (i) => update({ focus: tree.focusKey(i) }),
      onHover: (i, e) => showTip(i >= 0 ? this.tip(tree, i) : null, e),
    });
    this.flameState = {};
    this.hot = hotFrames(tree, flame.cost && flame.cost.perCpuSample);
  }

  refreshFlame() {
    if (!this.flame) return;
    const state = this.state;
    const tree = this.data.tree;
    const seen = this.flameState;
    if (seen.focus !== state.focus) {
      const i = tree.findFocus(state.focus);
      this.flame.zoom(i);
      this.breadcrumb(tree, i);
    }
    if (seen.q !== state.q) {
      const r = this.flame.search(state.q);
      if (this.search.value !== state.q) this.search.value = state.q;
      const { flame } = this.data;
      replace(this.matchLine, state.q
        ? [`${count(r.frames)} frames match · `, h('strong', {}, `${pct(r.share)}`), ' of samples',
          state.view === 'cpu' ? ` · ≈ ${usd(r.share * (flame.totals.usdPerYear || 0))} / year` : '']
        : '');
    }
    if (seen.annot !== undefined && seen.annot !== state.annot) {
      // Back/forward may change it without the select: keep the control in step.
      const select = this.tabBody.querySelector('#annot');
      if (select && select.value !== state.annot) select.value = state.annot;
      this.flame.render();
    }
    if (seen.fn !== state.fn || seen.sort !== state.sort) {
      this.flame.select(state.fn);
      this.renderTable();
    }
    this.flameState = { focus: state.focus, q: state.q, fn: state.fn, sort: state.sort, annot: state.annot };
  }

  /**
   * The zoom path: each frame's name cut short (the full name on hover); a deep zoom
   * shows its outermost and innermost frames, and `…` opens the ones between.
   */
  breadcrumb(tree, i, open = false) {
    const chain = [];
    for (let j = i; j >= 0; j = tree.parent[j]) chain.push(j);
    chain.reverse();
    const hidden = !open && chain.length > CRUMBS_SHOWN ? chain.slice(2, chain.length - (CRUMBS_SHOWN - 3)) : [];
    const shown = hidden.length ? [...chain.slice(0, 2), -1, ...chain.slice(chain.length - (CRUMBS_SHOWN - 3))] : chain;
    replace(this.crumbs, shown.map((j, k) => [
      k ? h('span', { class: 'sep' }, '›') : null,
      j < 0
        ? h('button', {
          type: 'button', class: 'crumb more', title: `${hidden.length} more frames: show them`,
          onclick: () => this.breadcrumb(tree, i, true),
        }, `… ${hidden.length} …`)
        : this.crumb(tree, j, j === i),
    ]));
  }

  crumb(tree, j, current) {
    return h('button', {
      type: 'button', class: `crumb${current ? ' current' : ''}`, title: j === 0 ? null : tree.name[j],
      onclick: () => update({ focus: tree.focusKey(j) }),
    }, j === 0 ? 'all' : shortName(tree.name[j]));
  }

  renderTable() {
    const state = this.state;
    const tree = this.data.tree;
    const { flame } = this.data;
    const explain = (r, which) => (which === 'self'
      ? explainCost(`${r.name}, self (its own code)`, r.selfCpu,
        { cores: r.selfCores, usdPerYear: r.selfUsd, kgCo2PerYear: r.selfKg }, flame.cost)
      : explainCost(`${r.name}, total (with what it calls)`, r.totalCpu,
        { cores: r.totalCores, usdPerYear: r.totalUsd, kgCo2PerYear: r.totalKg }, flame.cost));
    replace(this.tableHolder, h('h3', {}, 'Hot frames'), hotTable(this.hot, {
      rootTotal: tree.total[0] || 1,
      states: selectedStates(state),
      sort: state.sort,
      selected: state.fn,
      explain,
      onSort: (k) => update({ sort: k }, { replace: true }),
      onPick: (r) => update({ fn: r.name, focus: tree.focusKey(r.heaviest) }),
      onSandwich: (r) => update({ tab: 'sandwich', fn: r.name }),
    }));
  }

  showSandwich() {
    const state = this.state;
    const tree = this.data.tree;
    let fn = state.fn;
    if (!fn) {
      const top = hotFrames(tree, null).sort((a, b) => b.self - a.self)[0];
      fn = top ? top.name : '';
    }
    if (!fn) { replace(this.tabBody, h('p', { class: 'muted' }, 'No frames in this range.')); return; }
    const { callers, callees } = sandwich(tree, fn);
    const holders = sandwichFrame(this.tabBody, fn, () => update({ tab: 'flame' }));
    for (const [holder, root] of [[holders.callers, callers], [holders.callees, callees]]) {
      const sub = flatten(root);
      const graph = new FlameGraph(holder);
      graph.setTree(sub, {
        mode: state.view === 'cpu' ? 'cpu' : 'states',
        states: selectedStates(state),
        annotate: null,
        onHover: (i, e) => showTip(i >= 0 ? this.tip(sub, i) : null, e),
      });
      graph.render();
    }
  }
}

