// Browser-side half of benches/flame_browser.rs: run by WebDriver's execute/async on a
// service page that shows a large flame graph; the last argument is WebDriver's
// callback. Times the real code paths (no mocks) and answers medians in ms.
const done = arguments[arguments.length - 1];
window.hotframe.benchProgress = { started: performance.now() };
const rounds = arguments[0] || 25;

const frame = () => new Promise((resolve) => requestAnimationFrame(() => resolve()));
const median = (xs) => { const s = xs.slice().sort((a, b) => a - b); return s[Math.floor(s.length / 2)]; };
const p90 = (xs) => { const s = xs.slice().sort((a, b) => a - b); return s[Math.floor(s.length * 0.9)]; };
const stats = (xs) => ({ median: median(xs), p90: p90(xs), max: Math.max(...xs), n: xs.length });

async function run() {
  const page = window.hotframe.page;
  const flame = page.flame;
  const base = document.querySelector('script[type=module]').src.replace(/app\.js$/, '');
  window.hotframe.benchProgress.base = base;
  const treeModule = await import(`${base}tree.js`);
  window.hotframe.benchProgress.imported = true;
  const tree = flame.tree;
  const out = { nodes: tree.n, maxDepth: tree.maxDepth };
  window.hotframe.benchProgress = out;

  // The page load's flame graph request: server query + transfer (the rest is the page).
  const fetchEntry = performance.getEntriesByType('resource').filter((e) => e.name.includes('/api/v1/flamegraph')).pop();
  out.fetch = fetchEntry ? { ms: fetchEntry.responseEnd - fetchEntry.startTime, bytes: fetchEntry.decodedBodySize } : null;

  // Flattening the API's JSON tree into the typed arrays.
  const flat = [];
  for (let k = 0; k < 7; k++) {
    const t0 = performance.now();
    treeModule.flatten(page.data.flame.root);
    flat.push(performance.now() - t0);
  }
  out.flatten = stats(flat);

  // A full redraw of the whole tree (what a resize or a colour change costs).
  const full = [];
  flame.zoom(0);
  for (let k = 0; k < rounds; k++) {
    const t0 = performance.now();
    flame.render();
    full.push(performance.now() - t0);
  }
  out.render = stats(full);
  out.boxesDrawn = flame.drawn.length;

  // Zoom: nodes with at least 0.05% of the samples, spread over the tree.
  const candidates = [];
  for (let i = 1; i < tree.n; i++) if (tree.weight[i] >= tree.weight[0] * 0.0005 && tree.depth[i] >= 2) candidates.push(i);
  const picks = [];
  for (let k = 0; k < rounds && candidates.length; k++) picks.push(candidates[Math.floor((k * 7919) % candidates.length)]);
  const zoomSync = [];
  const zoomFrame = [];
  for (const i of picks) {
    await frame();
    const t0 = performance.now();
    flame.zoom(i);
    zoomSync.push(performance.now() - t0);
    await frame();
    zoomFrame.push(performance.now() - t0);
    flame.zoom(0);
  }
  out.zoom = stats(zoomSync);
  out.zoomToNextFrame = stats(zoomFrame);

  // The whole interaction: a click event on the canvas -> URL -> page update -> redraw.
  const clicks = [];
  const clickWork = [];
  const home0 = location.pathname + location.search;
  for (let k = 0; k < Math.min(10, picks.length); k++) {
    const home = page.flame;
    home.zoom(0);
    await frame();
    const i = picks[k];
    const b = home.box(i);
    if (!b) continue;
    const r = home.canvas.getBoundingClientRect();
    const t0 = performance.now();
    home.canvas.dispatchEvent(new MouseEvent('click', { clientX: r.left + b.x + Math.min(b.w / 2, 5), clientY: r.top + b.y + b.h / 2, bubbles: true }));
    while (!window.hotframe.idle) await new Promise((res) => setTimeout(res, 0));
    const t1 = performance.now();
    await frame();
    clicks.push(performance.now() - t0);
    clickWork.push(t1 - t0);
    // Back to the unzoomed URL the way the app navigates (history.back() could leave the page).
    history.pushState(null, '', home0);
    window.dispatchEvent(new PopStateEvent('popstate'));
    while (!window.hotframe.idle) await new Promise((res) => setTimeout(res, 0));
  }
  out.clickToFrame = stats(clicks);
  out.clickWork = stats(clickWork);

  // Hover: hit test, outline redraw and tooltip.
  const hovers = [];
  const r = flame.canvas.getBoundingClientRect();
  for (let k = 0; k < rounds; k++) {
    const t0 = performance.now();
    flame.canvas.dispatchEvent(new MouseEvent('mousemove', { clientX: r.left + 10 + ((k * 97) % Math.max(1, r.width - 20)), clientY: r.top + 5 + (k % 12) * 18, bubbles: true }));
    hovers.push(performance.now() - t0);
  }
  out.hover = stats(hovers);

  // Search over every node, with highlight redraw.
  const searches = [];
  for (let k = 0; k < 9; k++) {
    const t0 = performance.now();
    flame.search(`fn${k}`);
    searches.push(performance.now() - t0);
  }
  flame.search('');
  out.search = stats(searches);
  return out;
}

run().then(done, (err) => done({ error: String(err && err.stack || err) }));
