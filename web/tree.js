// Trees as the flame graph and the tables use them: the API's nested nodes flattened in
// preorder into typed arrays (50,000 nodes without 50,000 small objects to walk), plus
// the per-function aggregations (hot frames, sandwich) and the diff of two trees.
// Costs are the server's: node figures are summed, and sample counts are multiplied by
// the per-sample factors of the API's `cost` block; the formula itself lives in
// src/cost (docs/cost.md) and is not computed here.

/**
 * A tree in preorder. For node i: `name[i]`, `parent[i]`, `depth[i]`, `start[i]`
 * (offset inside the root, in weight units), `weight[i]` (drawn width), `end[i]`
 * (first index after its subtree), `total[i]`/`self[i]` (samples of the selected
 * states), `cpu[i]` (RUNNABLE samples), `node[i]` (the source object).
 */
/** A 32-bit FNV-1a hash of `text` (frame colours, short focus URLs). */
export function nameHash(text) {
  let h = 2166136261;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 16777619);
  }
  return h >>> 0;
}

/** Names longer than this travel in the focus URL as a hash. */
const FOCUS_NAME_MAX = 40;

/** One frame of a `focus`: the name itself, or `~` and its hash when long (or holding `;`). */
export function focusPart(name) {
  return name.length <= FOCUS_NAME_MAX && !name.includes(';') && !name.startsWith('~') ? name : `~${nameHash(name).toString(36)}`;
}

export class FlatTree {
  constructor(n) {
    this.n = n;
    this.name = new Array(n);
    this.node = new Array(n);
    this.parent = new Int32Array(n);
    this.depth = new Uint16Array(n);
    this.end = new Int32Array(n);
    this.start = new Float64Array(n);
    this.weight = new Float64Array(n);
    this.total = new Float64Array(n);
    this.self = new Float64Array(n);
    this.cpu = new Float64Array(n);
    this.maxDepth = 0;
  }

  /** Names from the root's child down to `i`, joined by ';' (the URL's `focus`). */
  path(i) {
    const names = [];
    for (let j = i; j > 0; j = this.parent[j]) names.push(this.name[j]);
    return names.reverse().join(';');
  }

  /** The node at a `path` (as made by `path`), or as deep as it matches. */
  find(path) {
    return this.walk(path, (part, name) => part === name);
  }

  /**
   * The URL's `focus` of node `i`: its path with each long name (generics make frames of
   * hundreds of characters) replaced by `~` and a hash of it, so the URL stays short.
   */
  focusKey(i) {
    const parts = [];
    for (let j = i; j > 0; j = this.parent[j]) parts.push(focusPart(this.name[j]));
    return parts.reverse().join(';');
  }

  /** The node a `focus` names (from `focusKey`, or a full path as older URLs hold), or as deep as it matches. */
  findFocus(focus) {
    return this.walk(focus, (part, name) => part === name || (part.startsWith('~') && part === focusPart(name)));
  }

  /** Follows `path`'s parts down from the root while a child's name matches. */
  walk(path, matches) {
    let i = 0;
    if (!path) return 0;
    for (const part of path.split(';')) {
      let j = i + 1;
      let found = -1;
      while (j < this.end[i]) {
        if (matches(part, this.name[j])) { found = j; break; }
        j = this.end[j];
      }
      if (found < 0) return i;
      i = found;
    }
    return i;
  }

  /** Indices of the children of `i`. */
  children(i) {
    const out = [];
    for (let j = i + 1; j < this.end[i]; j = this.end[j]) out.push(j);
    return out;
  }

  /** The node under weight offset `x` at `depth`, or -1. */
  hit(x, depth) {
    let i = 0;
    if (x < this.start[0] || x >= this.start[0] + this.weight[0]) return -1;
    while (this.depth[i] < depth) {
      let next = -1;
      for (let j = i + 1; j < this.end[i]; j = this.end[j]) {
        if (x >= this.start[j] && x < this.start[j] + this.weight[j]) { next = j; break; }
      }
      if (next < 0) return -1;
      i = next;
    }
    return i;
  }
}

const runnable = (n) => (n.states && n.states.RUNNABLE) || 0;

/**
 * Flattens a nested tree ({name, total, self, states, children}). `weightOf(node)` gives
 * the drawn width (default: `total`); children are laid out heaviest first.
 */
export function flatten(root, weightOf = (n) => n.total) {
  let n = 0;
  const stack = [root];
  while (stack.length) {
    const node = stack.pop();
    n++;
    if (node.children) for (const c of node.children) stack.push(c);
  }
  const t = new FlatTree(n);
  // Iterative preorder: each entry is [node, parentIndex, depth, start].
  const work = [[root, -1, 0, 0]];
  let i = 0;
  const open = [];
  while (work.length) {
    const [node, parent, depth, start] = work.pop();
    while (open.length && t.depth[open[open.length - 1]] >= depth) t.end[open.pop()] = i;
    t.name[i] = node.name;
    t.node[i] = node;
    t.parent[i] = parent;
    t.depth[i] = depth;
    t.start[i] = start;
    t.weight[i] = Math.max(0, weightOf(node));
    t.total[i] = node.total || 0;
    t.self[i] = node.self || 0;
    t.cpu[i] = runnable(node);
    if (depth > t.maxDepth) t.maxDepth = depth;
    open.push(i);
    const kids = (node.children || []).slice().sort((a, b) => weightOf(b) - weightOf(a) || (a.name < b.name ? -1 : 1));
    let offset = start;
    const placed = [];
    for (const c of kids) {
      placed.push([c, i, depth + 1, offset]);
      offset += Math.max(0, weightOf(c));
    }
    for (let k = placed.length - 1; k >= 0; k--) work.push(placed[k]);
    i++;
  }
  while (open.length) t.end[open.pop()] = i;
  return t;
}

/**
 * Calls `visit(i, outermost)` for each node in preorder, where `outermost` is false when
 * an ancestor has the same name (so recursion is not counted twice in totals).
 */
export function walkOutermost(t, visit) {
  const onPath = new Map();
  const stack = [];
  for (let i = 0; i < t.n; i++) {
    while (stack.length && t.end[stack[stack.length - 1]] <= i) {
      const j = stack.pop();
      onPath.set(t.name[j], onPath.get(t.name[j]) - 1);
    }
    const name = t.name[i];
    const seen = onPath.get(name) || 0;
    visit(i, seen === 0);
    onPath.set(name, seen + 1);
    stack.push(i);
  }
}

/** Self RUNNABLE samples of node i: its own minus its children's. */
export function selfCpu(t, i) {
  let s = t.cpu[i];
  for (let j = i + 1; j < t.end[i]; j = t.end[j]) s -= t.cpu[j];
  return Math.max(0, s);
}

/**
 * `count` samples priced with a per-sample factor of the API (`cost.perCpuSample`):
 * {cores, usdPerYear, kgCo2PerYear}, each the factor's figure times `count`.
 */
function priced(count, perSample) {
  const f = perSample || {};
  return { cores: count * (f.cores || 0), usdPerYear: count * (f.usdPerYear || 0), kgCo2PerYear: count * (f.kgCo2PerYear || 0) };
}

/**
 * Hot frames: per function name, self and total samples and $/year (total counts each
 * stack once however deep the recursion). Self figures are the self on-CPU samples
 * (`selfCpu`) priced with `perCpuSample` (the API's `cost.perCpuSample`); total
 * figures sum the nodes' own (`totalCpu` their on-CPU samples). Each row has `selfUsd`,
 * `selfCores`, `selfKg`, `totalUsd`, `totalCores`, `totalKg`.
 */
export function hotFrames(t, perCpuSample) {
  const byName = new Map();
  walkOutermost(t, (i, outermost) => {
    if (i === 0) return;
    let row = byName.get(t.name[i]);
    if (!row) {
      row = {
        name: t.name[i], self: 0, total: 0, selfCpu: 0, totalCpu: 0,
        selfUsd: 0, selfCores: 0, selfKg: 0, totalUsd: 0, totalCores: 0, totalKg: 0, heaviest: i,
      };
      byName.set(t.name[i], row);
    }
    row.self += t.self[i];
    row.selfCpu += selfCpu(t, i);
    if (outermost) {
      const n = t.node[i];
      row.total += t.total[i];
      row.totalCpu += t.cpu[i];
      row.totalUsd += n.usdPerYear || 0;
      row.totalCores += n.cores || 0;
      row.totalKg += n.kgCo2PerYear || 0;
    }
    if (t.total[i] > t.total[row.heaviest]) row.heaviest = i;
  });
  const rows = [...byName.values()];
  for (const r of rows) {
    const own = priced(r.selfCpu, perCpuSample);
    r.selfUsd = own.usdPerYear;
    r.selfCores = own.cores;
    r.selfKg = own.kgCo2PerYear;
  }
  return rows;
}

function blank(name) {
  return { name, total: 0, self: 0, states: {}, cores: 0, usdPerYear: 0, kgCo2PerYear: 0, children: [], index: new Map() };
}

function addInto(target, node, share = 1) {
  target.total += node.total * share;
  for (const [s, v] of Object.entries(node.states || {})) target.states[s] = (target.states[s] || 0) + v * share;
  target.cores += (node.cores || 0) * share;
  target.usdPerYear += (node.usdPerYear || 0) * share;
  target.kgCo2PerYear += (node.kgCo2PerYear || 0) * share;
}

function child(parent, name) {
  let c = parent.index.get(name);
  if (!c) {
    c = blank(name);
    parent.index.set(name, c);
    parent.children.push(c);
  }
  return c;
}

function mergeSubtree(target, node) {
  addInto(target, node);
  target.self += node.self || 0;
  for (const c of node.children || []) mergeSubtree(child(target, c.name), c);
}

/**
 * The sandwich of function `fn`: `callers` (fn at the root, its callers below, inverted)
 * and `callees` (every outermost call of fn merged, with what it calls).
 */
export function sandwich(t, fn) {
  const callees = blank(fn);
  const callers = blank(fn);
  walkOutermost(t, (i, outermost) => {
    if (!outermost || t.name[i] !== fn) return;
    const node = t.node[i];
    mergeSubtree(callees, node);
    addInto(callers, node);
    let at = callers;
    for (let j = t.parent[i]; j > 0; j = t.parent[j]) {
      at = child(at, t.name[j]);
      addInto(at, node);
    }
  });
  // Self of the callers tree: what reaches the root through this chain and no further.
  const fixSelf = (n) => {
    let kids = 0;
    for (const c of n.children) { fixSelf(c); kids += c.total; }
    n.self = Math.max(0, n.total - kids);
  };
  fixSelf(callers);
  return { callers, callees };
}

/**
 * Merges a baseline and a comparison tree by call path. Each node gets `base` and `comp`
 * ({total, cpu, rate, usdPerYear, ...}) where rate = samples × the side's
 * `cost.perSample.cores` (the server's (1 / F) / W × (H / Hp)), so windows of
 * different lengths compare as thread counts.
 */
export function diffTrees(baseRoot, baseCost, compRoot, compCost) {
  const rate = (cost) => (cost && cost.perSample && cost.perSample.cores) || 0;
  const rb = rate(baseCost);
  const rc = rate(compCost);
  const side = (n, r) => ({
    total: n ? n.total : 0,
    cpu: n ? runnable(n) : 0,
    rate: n ? n.total * r : 0,
    usdPerYear: n ? n.usdPerYear || 0 : 0,
    cores: n ? n.cores || 0 : 0,
    kgCo2PerYear: n ? n.kgCo2PerYear || 0 : 0,
  });
  const merge = (b, c, name) => {
    const out = { name, base: side(b, rb), comp: side(c, rc), children: [] };
    out.total = out.base.rate + out.comp.rate;
    out.self = 0;
    // Children by name on each side: wide nodes (thousands of callees) stay linear.
    const byName = (n) => new Map(((n && n.children) || []).map((x) => [x.name, x]));
    const bk = byName(b);
    const ck = byName(c);
    const names = new Set([...bk.keys(), ...ck.keys()]);
    let kids = 0;
    for (const nm of names) {
      const m = merge(bk.get(nm), ck.get(nm), nm);
      kids += m.total;
      out.children.push(m);
    }
    out.self = Math.max(0, out.total - kids);
    return out;
  };
  return merge(baseRoot, compRoot, (compRoot || baseRoot).name);
}

/**
 * Per function: $/year before, after and the change (outermost calls only), with each
 * side's on-CPU samples, cores and CO2 (`baseCpu`, `baseCores`, `baseKg`, `comp...`).
 */
export function diffRows(t) {
  const byName = new Map();
  walkOutermost(t, (i, outermost) => {
    if (i === 0 || !outermost) return;
    const n = t.node[i];
    let row = byName.get(n.name);
    if (!row) {
      row = {
        name: n.name, baseUsd: 0, compUsd: 0, baseRate: 0, compRate: 0,
        baseCpu: 0, compCpu: 0, baseCores: 0, compCores: 0, baseKg: 0, compKg: 0, heaviest: i,
      };
      byName.set(n.name, row);
    }
    row.baseUsd += n.base.usdPerYear;
    row.compUsd += n.comp.usdPerYear;
    row.baseRate += n.base.rate;
    row.compRate += n.comp.rate;
    row.baseCpu += n.base.cpu;
    row.compCpu += n.comp.cpu;
    row.baseCores += n.base.cores;
    row.compCores += n.comp.cores;
    row.baseKg += n.base.kgCo2PerYear;
    row.compKg += n.comp.kgCo2PerYear;
    if (t.weight[i] > t.weight[row.heaviest]) row.heaviest = i;
  });
  const rows = [...byName.values()];
  for (const r of rows) r.deltaUsd = r.compUsd - r.baseUsd;
  return rows;
}
