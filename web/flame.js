// The flame graph on a canvas (root on top). Drawing walks the preorder arrays and skips
// whole subtrees that are off screen or narrower than a pixel, so the cost of a frame is
// the number of visible boxes, not the size of the tree: 50,000 nodes stay smooth.

import { pct, usd } from './format.js';
import { nameHash } from './tree.js';

const ROW = 18;
const MIN_WIDTH = 0.35;
const FONT = '12px ui-monospace, SFMono-Regular, Menlo, Consolas, monospace';
const BOLD = `bold ${FONT}`;

/** Colours per thread state (legend, Latency view and timeline share them). */
export const STATE_COLORS = {
  RUNNABLE: '#e4572e',
  TIMED_WAITING: '#2a9d8f',
  BLOCKED: '#8e44ad',
  IO: '#3a6ea5',
  WAITING: '#9aa0a6',
};
export const SEARCH_COLOR = '#d63384';
const DIMMED = '#e3e5e8';

/**
 * A long frame name cut to about `max` characters for a label (the breadcrumb): generic
 * arguments become `<…>` first, then module paths before type names go, and last the
 * middle gives way to `…`, keeping the start (crate, type) and the end (the function).
 */
export function shortName(name, max = 48) {
  if (name.length <= max) return name;
  let out = '';
  let depth = 0;
  for (const ch of name) {
    if (ch === '<') {
      // A qualified path (`<T as Trait>::f`) opens at the start or after `::`; keep it.
      const generic = out.length > 0 && !out.endsWith('::') && depth === 0;
      if (depth > 0 || generic) {
        if (depth === 0) out += '<…';
        depth += 1;
        continue;
      }
    } else if (ch === '>' && depth > 0) {
      depth -= 1;
      if (depth === 0) out += '>';
      continue;
    }
    if (depth === 0) out += ch;
  }
  if (out.length <= max) return out;
  // Then the module paths in front of type names: `alloc::vec::Vec` -> `Vec`.
  out = out.replace(/\b(?:[a-z_][a-z0-9_]*::)+(?=[A-Z])/g, '');
  if (out.length <= max) return out;
  const head = Math.floor((max - 1) * 0.4);
  const tail = max - 1 - head;
  return `${out.slice(0, head)}…${out.slice(out.length - tail)}`;
}

/** The classic warm flame colour of a function name (stable across reloads). */
export function warm(name) {
  const h = nameHash(name);
  const r = 205 + (h % 50);
  const g = 80 + ((h >>> 8) % 120);
  const b = 40 + ((h >>> 16) % 45);
  return `rgb(${r},${g},${b})`;
}

/** Red (slower, grew) or blue (faster, shrank), by how much of the frame changed. */
export function diffColor(base, comp) {
  const big = Math.max(base, comp);
  if (big <= 0) return 'rgb(220,220,220)';
  const rel = (comp - base) / big;
  if (Math.abs(rel) < 0.02) return 'rgb(214,214,214)';
  const k = Math.min(1, 0.25 + Math.abs(rel) * 0.75);
  const fade = Math.round(225 - 170 * k);
  return rel > 0 ? `rgb(235,${fade},${fade})` : `rgb(${fade},${fade + 20},240)`;
}

/**
 * A flame graph in `container`. Options: `mode` ('cpu' | 'states' | 'diff'),
 * `states` (drawn in the 'states' mode), `annotate(i)` -> string|null (in-place cost
 * label), `onZoom(i)`, `onHover(i, event)`, `colorOf(i)` (for 'diff').
 */
export class FlameGraph {
  constructor(container, options = {}) {
    this.options = options;
    this.canvas = document.createElement('canvas');
    this.canvas.className = 'flame';
    this.canvas.setAttribute('role', 'img');
    this.canvas.setAttribute('aria-label', 'flame graph');
    container.append(this.canvas);
    this.ctx = this.canvas.getContext('2d', { alpha: false });
    this.tree = null;
    this.focus = 0;
    this.matches = null;
    this.selected = '';
    this.hover = -1;
    this.drawn = [];
    this.labels = [];
    this.lastRenderMs = 0;
    this.canvas.addEventListener('mousemove', (e) => this.onMove(e));
    this.canvas.addEventListener('mouseleave', () => this.setHover(-1, null));
    this.canvas.addEventListener('click', (e) => this.onClick(e));
    this.resizeObserver = new ResizeObserver(() => this.render());
    this.resizeObserver.observe(container);
  }

  /** Shows `tree` (a FlatTree), zoomed on `focus`. */
  setTree(tree, options = {}) {
    Object.assign(this.options, options);
    this.tree = tree;
    this.colors = new Array(tree.n);
    const cache = new Map();
    for (let i = 0; i < tree.n; i++) {
      if (this.options.mode === 'diff' && this.options.colorOf) {
        this.colors[i] = this.options.colorOf(i);
      } else {
        const name = tree.name[i];
        let c = cache.get(name);
        // "[other]" holds the small frames the server pruned (maxNodes): neutral grey.
        if (!c) { c = name === '[other]' ? '#c9ccd2' : warm(name); cache.set(name, c); }
        this.colors[i] = c;
      }
    }
    this.focus = 0;
    this.matches = null;
  }

  /** Zooms on node `i` (0: the whole tree). */
  zoom(i) {
    this.focus = this.tree && i >= 0 && i < this.tree.n ? i : 0;
    this.render();
  }

  /**
   * Highlights the frames whose name contains `query` (case-insensitive; `/re/` for a
   * regular expression). Returns {matched, share}: the samples under matched frames,
   * each stack counted once, and their share of the root.
   */
  search(query) {
    const t = this.tree;
    if (!t || !query) { this.matches = null; this.render(); return { matched: 0, share: 0, frames: 0 }; }
    let test;
    const re = query.match(/^\/(.+)\/$/);
    if (re) {
      try { const r = new RegExp(re[1], 'i'); test = (s) => r.test(s); } catch { test = () => false; }
    } else {
      const q = query.toLowerCase();
      test = (s) => s.toLowerCase().includes(q);
    }
    const m = new Uint8Array(t.n);
    let matched = 0;
    let frames = 0;
    for (let i = 1; i < t.n; ) {
      if (test(t.name[i])) {
        // The whole subtree is under a match: count it once, mark it, skip it.
        matched += t.total[i];
        for (let j = i; j < t.end[i]; j++) if (test(t.name[j])) { m[j] = 1; frames++; }
        i = t.end[i];
      } else i++;
    }
    this.matches = m;
    this.render();
    const root = t.total[0] || 1;
    return { matched, share: matched / root, frames };
  }

  /** Outlines every frame of function `name` (the table's selection). */
  select(name) { this.selected = name || ''; this.render(); }

  onMove(e) {
    const i = this.at(e);
    this.setHover(i, e);
  }

  setHover(i, e) {
    if (i !== this.hover) { this.hover = i; this.render(); }
    if (this.options.onHover) this.options.onHover(i, e);
  }

  onClick(e) {
    const i = this.at(e);
    if (i < 0) return;
    const target = i === this.focus ? this.tree.parent[i] : i;
    if (this.options.onZoom) this.options.onZoom(Math.max(0, target));
    else this.zoom(Math.max(0, target));
  }

  /** The node under a mouse event, or -1. */
  at(e) {
    if (!this.tree) return -1;
    const rect = this.canvas.getBoundingClientRect();
    const x = e.clientX - rect.left;
    const y = e.clientY - rect.top;
    const { x0, scale } = this.view();
    return this.tree.hit(x0 + x / scale, Math.floor(y / ROW));
  }

  view() {
    const t = this.tree;
    const width = this.canvas.clientWidth || 1;
    const x0 = t.start[this.focus];
    const span = t.weight[this.focus] || 1;
    return { x0, span, scale: width / span, width };
  }

  /** The on-screen box of node i in CSS pixels (for tests and the tooltip), or null. */
  box(i) {
    const d = this.drawn.find((b) => b.i === i);
    return d ? { x: d.x, y: d.y, w: d.w, h: ROW - 1 } : null;
  }

  render() {
    const t = this.tree;
    // A graph whose page part was replaced: nothing to draw, and its observer goes quiet.
    if (!t || !this.canvas.isConnected) return;
    const began = performance.now();
    const dpr = window.devicePixelRatio || 1;
    const width = Math.max(1, this.canvas.parentElement ? this.canvas.parentElement.clientWidth : 800);
    const { x0, scale } = { x0: t.start[this.focus], scale: width / (t.weight[this.focus] || 1) };
    // Height: the deepest row with a visible box, found in the same culled walk.
    let rows = 1;
    const visible = [];
    for (let i = 0; i < t.n; ) {
      const x = (t.start[i] - x0) * scale;
      const w = t.weight[i] * scale;
      if (w < MIN_WIDTH || x >= width || x + w <= 0) { i = t.end[i]; continue; }
      visible.push(i);
      if (t.depth[i] + 1 > rows) rows = t.depth[i] + 1;
      i++;
    }
    const height = Math.min(rows * ROW + 2, 30000);
    if (this.canvas.width !== Math.round(width * dpr) || this.canvas.height !== Math.round(height * dpr)) {
      this.canvas.width = Math.round(width * dpr);
      this.canvas.height = Math.round(height * dpr);
      this.canvas.style.height = `${height}px`;
    }
    const ctx = this.ctx;
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.fillStyle = '#fff';
    ctx.fillRect(0, 0, width, height);
    ctx.font = FONT;
    ctx.textBaseline = 'middle';
    if (!this.charWidth) this.charWidth = ctx.measureText('mmmmmmmmmm').width / 10 || 7;
    const focusDepth = t.depth[this.focus];
    const states = this.options.mode === 'states' ? this.options.states || [] : null;
    const drawn = [];
    const labels = [];
    for (const i of visible) {
      let x = (t.start[i] - x0) * scale;
      let w = t.weight[i] * scale;
      if (x < 0) { w += x; x = 0; }
      if (x + w > width) w = width - x;
      const y = t.depth[i] * ROW;
      const boxW = Math.max(w - 0.5, 0.5);
      const matched = this.matches ? this.matches[i] === 1 : false;
      let fill = null;
      if (this.matches && !matched) fill = DIMMED;
      else if (matched) fill = SEARCH_COLOR;
      else if (states && t.node[i].states) this.fillStates(ctx, t.node[i].states, states, x, y, boxW);
      else fill = this.colors[i];
      if (fill) {
        ctx.fillStyle = fill;
        ctx.fillRect(x, y, boxW, ROW - 1);
      }
      if (t.depth[i] < focusDepth) {
        ctx.fillStyle = 'rgba(255,255,255,0.45)';
        ctx.fillRect(x, y, boxW, ROW - 1);
      }
      if (i === this.hover || (this.selected && t.name[i] === this.selected)) {
        ctx.strokeStyle = i === this.hover ? '#111' : '#1f2430';
        ctx.lineWidth = i === this.hover ? 1.5 : 1;
        ctx.strokeRect(x + 0.5, y + 0.5, Math.max(boxW - 1, 0.5), ROW - 2);
      }
      drawn.push({ i, x, y, w: boxW });
      if (w < this.charWidth * 3 + 6) continue;
      const note = this.options.annotate ? this.options.annotate(i) : null;
      const text = this.fit(t.name[i], note, w - 6);
      if (!text) continue;
      ctx.font = note ? BOLD : FONT;
      ctx.fillStyle = matched ? '#fff' : '#111';
      ctx.fillText(text, x + 3, y + ROW / 2);
      if (note) {
        ctx.font = FONT;
        // Only labels that kept their cost count as annotated (a narrow box shows the name).
        if (text.endsWith(note)) labels.push({ i, name: t.name[i], text });
      }
    }
    this.drawn = drawn;
    this.labels = labels;
    this.lastRenderMs = performance.now() - began;
  }

  fillStates(ctx, nodeStates, states, x, y, w) {
    let sum = 0;
    for (const s of states) sum += nodeStates[s] || 0;
    if (sum <= 0 || w < 3) {
      let best = states[0];
      for (const s of states) if ((nodeStates[s] || 0) > (nodeStates[best] || 0)) best = s;
      ctx.fillStyle = STATE_COLORS[best] || '#ccc';
      ctx.fillRect(x, y, w, ROW - 1);
      return;
    }
    let at = x;
    for (const s of states) {
      const part = ((nodeStates[s] || 0) / sum) * w;
      if (part <= 0) continue;
      ctx.fillStyle = STATE_COLORS[s] || '#ccc';
      ctx.fillRect(at, y, part, ROW - 1);
      at += part;
    }
  }

  /** The label that fits in `px`: "name — note" (name shortened first), or the name. */
  fit(name, note, px) {
    const max = Math.floor(px / this.charWidth);
    if (note) {
      const suffix = ` — ${note}`;
      if (name.length + suffix.length <= max) return name + suffix;
      const room = max - suffix.length;
      if (room >= 4) return `${name.slice(0, room - 1)}…${suffix}`;
    }
    if (name.length <= max) return name;
    if (max >= 3) return `${name.slice(0, max - 1)}…`;
    return '';
  }
}

/** The in-place annotation of a frame: "56% — $315,883 / year". */
export function costNote(share, usdPerYear) {
  return `${pct(share)} — ${usd(usdPerYear)} / year`;
}
