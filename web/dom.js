// Tiny DOM helpers: build elements without innerHTML (names come from profiles, so
// everything is text, never markup).

/** Creates an element: h('a', {href: '/x', class: 'y', onclick: f}, 'text', child). */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') el.addEventListener(key.slice(2), value);
    else if (key === 'class') el.className = value;
    else if (key === 'dataset') Object.assign(el.dataset, value);
    else if (key === 'style' && typeof value === 'object') Object.assign(el.style, value);
    else if (value === true) el.setAttribute(key, '');
    else el.setAttribute(key, String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === undefined || child === null || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replaces an element's children. */
export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** An inline SVG element (the namespace matters). */
export function svg(tag, attrs) {
  const el = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const [key, value] of Object.entries(attrs || {})) el.setAttribute(key, String(value));
  return el;
}

/**
 * Shows the shared tooltip with `content` (nodes) near the mouse event, or hides it when
 * `content` is null.
 */
export function showTip(content, event) {
  const tip = document.getElementById('tooltip');
  if (!tip) return;
  if (!content || !event) { tip.hidden = true; return; }
  replace(tip, content);
  tip.hidden = false;
  const pad = 14;
  const { innerWidth: vw, innerHeight: vh } = window;
  const r = tip.getBoundingClientRect();
  let x = event.clientX + pad;
  let y = event.clientY + pad;
  if (x + r.width > vw - 4) x = Math.max(4, event.clientX - r.width - pad);
  if (y + r.height > vh - 4) y = Math.max(4, event.clientY - r.height - pad);
  tip.style.left = `${x}px`;
  tip.style.top = `${y}px`;
}
