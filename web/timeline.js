// The timeline: CPU cores per thread state over the range, stacked, on a canvas. Drag to
// brush a sub-range (the page then zooms the time range to it).

import { STATE_COLORS } from './flame.js';
import { num, time } from './format.js';

const HEIGHT = 110;
const PAD_LEFT = 44;
const PAD_BOTTOM = 18;

/**
 * Draws `data` (the API's timeline answer) for `states` into `container`.
 * `onBrush(fromMs, untilMs)` is called when a range is dragged.
 */
export function drawTimeline(container, data, states, onBrush) {
  const canvas = document.createElement('canvas');
  canvas.className = 'timeline';
  canvas.setAttribute('role', 'img');
  canvas.setAttribute('aria-label', 'CPU cores per thread state over time; drag to select a range');
  const readout = document.createElement('div');
  readout.className = 'readout muted';
  container.replaceChildren(canvas, readout);
  const points = (data && data.points) || [];
  const from = data ? data.from : 0;
  const until = data ? data.until : 1;
  let brush = null;

  const stackAt = (p) => {
    let sum = 0;
    for (const s of states) sum += (p.cores && p.cores[s]) || 0;
    return sum;
  };
  const maxY = Math.max(1e-9, ...points.map(stackAt));

  function draw() {
    const dpr = window.devicePixelRatio || 1;
    const width = Math.max(200, container.clientWidth);
    canvas.width = Math.round(width * dpr);
    canvas.height = Math.round(HEIGHT * dpr);
    canvas.style.height = `${HEIGHT}px`;
    const ctx = canvas.getContext('2d');
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, width, HEIGHT);
    const plotW = width - PAD_LEFT - 4;
    const plotH = HEIGHT - PAD_BOTTOM - 6;
    const xOf = (t) => PAD_LEFT + ((t - from) / Math.max(1, until - from)) * plotW;
    const yOf = (v) => 6 + plotH - (v / maxY) * plotH;
    const step = data && data.stepMs ? data.stepMs : (until - from) / Math.max(1, points.length);
    // Stacked bars, one per bucket: honest about gaps where no profile arrived.
    for (const p of points) {
      let base = 0;
      const x = xOf(p.t);
      const w = Math.max(1, xOf(p.t + step) - x - 0.5);
      for (const s of states) {
        const v = (p.cores && p.cores[s]) || 0;
        if (v <= 0) continue;
        ctx.fillStyle = STATE_COLORS[s] || '#999';
        ctx.fillRect(x, yOf(base + v), w, yOf(base) - yOf(base + v));
        base += v;
      }
    }
    ctx.fillStyle = '#555';
    ctx.font = '11px system-ui, sans-serif';
    ctx.textBaseline = 'middle';
    ctx.fillText(num(maxY), 4, yOf(maxY) + 4);
    ctx.fillText('0', 4, yOf(0));
    ctx.strokeStyle = '#ccd';
    ctx.beginPath();
    ctx.moveTo(PAD_LEFT, yOf(0) + 0.5);
    ctx.lineTo(PAD_LEFT + plotW, yOf(0) + 0.5);
    ctx.stroke();
    ctx.textBaseline = 'alphabetic';
    for (let k = 0; k <= 4; k++) {
      const t = from + ((until - from) * k) / 4;
      const label = time(t).slice(5);
      const x = Math.min(Math.max(PAD_LEFT, xOf(t) - 30), width - 70);
      ctx.fillText(label, x, HEIGHT - 3);
    }
    if (brush) {
      ctx.fillStyle = 'rgba(40, 90, 200, 0.18)';
      ctx.fillRect(Math.min(brush.a, brush.b), 0, Math.abs(brush.b - brush.a), HEIGHT - PAD_BOTTOM);
    }
    if (!points.length) {
      ctx.fillStyle = '#777';
      ctx.fillText('no samples in this range', PAD_LEFT + 10, HEIGHT / 2);
    }
    canvas.tAt = (x) => from + ((x - PAD_LEFT) / plotW) * (until - from);
  }

  const xOfEvent = (e) => e.clientX - canvas.getBoundingClientRect().left;
  canvas.addEventListener('mousedown', (e) => { brush = { a: xOfEvent(e), b: xOfEvent(e) }; draw(); });
  canvas.addEventListener('mousemove', (e) => {
    const t = canvas.tAt(xOfEvent(e));
    const p = points.find((q) => t >= q.t && t < q.t + (data.stepMs || 1));
    readout.textContent = p
      ? `${time(p.t)}: ${states.map((s) => `${s} ${num((p.cores && p.cores[s]) || 0)}`).join(' · ')} cores`
      : 'drag to select a time range';
    if (brush) { brush.b = xOfEvent(e); draw(); }
  });
  const finish = () => {
    if (!brush) return;
    const a = canvas.tAt(Math.min(brush.a, brush.b));
    const b = canvas.tAt(Math.max(brush.a, brush.b));
    const wide = Math.abs(brush.b - brush.a) > 4;
    brush = null;
    draw();
    if (wide && onBrush) onBrush(Math.max(from, Math.round(a)), Math.min(until, Math.round(b)));
  };
  canvas.addEventListener('mouseup', finish);
  canvas.addEventListener('mouseleave', finish);
  draw();
  let lastWidth = container.clientWidth;
  new ResizeObserver(() => {
    if (!canvas.isConnected || container.clientWidth === lastWidth) return;
    lastWidth = container.clientWidth;
    draw();
  }).observe(container);
  return { redraw: draw };
}

/** A sparkline of values as an inline SVG polyline. */
export function sparkline(values, width = 120, height = 24) {
  const ns = 'http://www.w3.org/2000/svg';
  const svgEl = document.createElementNS(ns, 'svg');
  svgEl.setAttribute('width', width);
  svgEl.setAttribute('height', height);
  svgEl.setAttribute('class', 'sparkline');
  svgEl.setAttribute('role', 'img');
  const vals = values && values.length ? values : [0];
  const max = Math.max(1e-9, ...vals);
  svgEl.setAttribute('aria-label', `CPU cores over 24 h, peak ${num(max)}`);
  const pts = vals.map((v, k) => {
    const x = vals.length === 1 ? width / 2 : (k / (vals.length - 1)) * (width - 2) + 1;
    const y = height - 2 - (v / max) * (height - 4);
    return `${x.toFixed(1)},${y.toFixed(1)}`;
  });
  const area = document.createElementNS(ns, 'polygon');
  area.setAttribute('points', `1,${height - 1} ${pts.join(' ')} ${width - 1},${height - 1}`);
  area.setAttribute('fill', 'rgba(228,87,46,0.18)');
  const line = document.createElementNS(ns, 'polyline');
  line.setAttribute('points', pts.join(' '));
  line.setAttribute('fill', 'none');
  line.setAttribute('stroke', '#e4572e');
  line.setAttribute('stroke-width', '1.5');
  svgEl.append(area, line);
  return svgEl;
}
