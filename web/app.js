// The viewer's entry: routes the URL to the start page or a service page, explains
// failures (server gone: a message and a retry; 401: ask for a token), and shows the
// formula behind any $ figure on hover. Test and benchmark hooks live on `window.hotframe`.

import { ApiError, clearCache, onAuthNeeded, ServerGone, setToken, token } from './api.js';
import { h, replace, showTip } from './dom.js';
import { ServicePage } from './service.js';
import { renderStart } from './start.js';
import { renderWins, winsRoute } from './wins.js';
import { current, navigate, onNavigate } from './state.js';

const main = document.getElementById('app');
const banner = document.getElementById('banner');
const crumbs = document.getElementById('crumbs');
const tokenButton = document.getElementById('token-button');

const hooks = {};
/** What tests and the benchmark read: the pages, the graphs, and whether we are idle. */
window.hotframe = { idle: false, renders: 0, error: null, hooks, page: null };
window.addEventListener('error', (e) => { (window.hotframe.jsErrors ||= []).push(String(e.message)); });
window.addEventListener('unhandledrejection', (e) => { (window.hotframe.jsErrors ||= []).push(String(e.reason)); });

let page = null;
let generation = 0;
let retryTimer = null;

async function render() {
  const mine = ++generation;
  const route = current();
  window.hotframe.idle = false;
  clearTimeout(retryTimer);
  try {
    if (route.page === 'service') {
      replace(crumbs, h('a', { href: '/', 'data-link': true }, 'services'), ' › ', route.service);
      document.title = `${route.service} · hotframe`;
      if (!(page instanceof ServicePage) || page.name !== route.service) {
        page = new ServicePage(main);
        page.name = route.service;
        replace(main, h('p', { class: 'muted' }, `Loading ${route.service}…`));
      }
      window.hotframe.page = page;
      await page.show(route);
    } else if (route.page === 'wins') {
      replace(crumbs);
      document.title = 'Ops wins · hotframe';
      page = null;
      await renderWins(main, winsRoute(route.path, route.search));
    } else {
      replace(crumbs);
      document.title = 'hotframe';
      page = null;
      await renderStart(main, route);
    }
    if (mine !== generation) return;
    banner.hidden = true;
    window.hotframe.error = null;
  } catch (err) {
    if (mine !== generation) return;
    failed(err);
  } finally {
    if (mine === generation) {
      window.hotframe.idle = true;
      window.hotframe.renders++;
    }
  }
}

/** Explains a failure; for a server that is gone, retries on its own with backoff. */
function failed(err) {
  console.error(err);
  window.hotframe.error = err.message;
  page = null;
  if (err instanceof ServerGone) {
    const attempt = (failed.attempts = (failed.attempts || 0) + 1);
    // Full jitter, capped, as the agents do: many open tabs must not retry in step.
    const delay = Math.random() * Math.min(30000, 1000 * 2 ** attempt);
    showBanner(`The hotframe server is not answering: ${err.message}. This page retries on its own; what it showed last stays below.`);
    // Nothing shown yet: say what we wait for instead of an endless "Loading…".
    if (main.querySelector('p.muted') && main.children.length === 1) {
      replace(main, h('section', { class: 'empty' }, h('h1', {}, 'Waiting for the server'),
        h('p', {}, `No answer from ${location.origin}. If you stopped it, start it again with `, h('code', {}, 'hotframe serve'),
          '; the viewer reconnects by itself.')));
    }
    retryTimer = setTimeout(() => { clearCache(); render(); }, delay + 1000);
    return;
  }
  failed.attempts = 0;
  if (err instanceof ApiError && err.status === 404) {
    replace(main, h('section', { class: 'empty' }, h('h1', {}, 'Not found'), h('p', {}, err.message),
      h('p', {}, h('a', { href: '/', 'data-link': true }, 'All services'))));
    return;
  }
  if (err instanceof ApiError && (err.status === 401 || err.status === 403)) {
    replace(main, h('section', { class: 'empty' }, h('h1', {}, 'A token is needed'), h('p', {}, err.message),
      h('button', { type: 'button', onclick: () => askToken(err).then((ok) => ok && render()) }, 'Enter a token')));
    return;
  }
  showBanner(`Something went wrong: ${err.message}`);
}

function showBanner(text) {
  replace(banner, h('span', {}, text), ' ',
    h('button', { type: 'button', id: 'retry', onclick: () => { clearCache(); render(); } }, 'Retry now'));
  banner.hidden = false;
}

let asking = null;
/** Asks for a bearer token (one dialog at a time); resolves true when one was given. */
function askToken(err) {
  if (asking) return asking;
  asking = new Promise((resolve) => {
    const input = h('input', { type: 'password', id: 'token-input', autocomplete: 'off', placeholder: 'token', size: 40 });
    const dialog = h('dialog', { class: 'token-dialog' },
      h('form', { method: 'dialog' },
        h('h2', {}, 'This server needs a token'),
        h('p', {}, err && err.status === 403
          ? 'Your token is valid but lacks the scope this needs (read, or admin for settings).'
          : 'Paste a token from the server\u2019s token file (scope read; admin to change cost settings). It is kept in this browser only.'),
        err ? h('p', { class: 'muted small' }, err.message) : null,
        input,
        h('div', { class: 'dialog-buttons' },
          h('button', { value: 'cancel', type: 'submit', formnovalidate: true }, 'Cancel'),
          h('button', { value: 'ok', type: 'submit', id: 'token-ok' }, 'Use this token'))));
    document.body.append(dialog);
    dialog.addEventListener('close', () => {
      const ok = dialog.returnValue === 'ok' && input.value.trim() !== '';
      if (ok) setToken(input.value.trim());
      tokenButton.hidden = !token();
      dialog.remove();
      asking = null;
      resolve(ok);
    });
    dialog.showModal();
    input.focus();
  });
  return asking;
}

onAuthNeeded(askToken);
tokenButton.hidden = !token();
tokenButton.addEventListener('click', () => askToken(null).then((ok) => ok && render()));

// In-page links navigate without a reload.
document.addEventListener('click', (e) => {
  const a = e.target.closest && e.target.closest('a[data-link]');
  if (!a || e.ctrlKey || e.metaKey || e.shiftKey || e.button !== 0) return;
  e.preventDefault();
  navigate(a.getAttribute('href'));
});

// Any element with data-explain shows its formula on hover.
document.addEventListener('mouseover', (e) => {
  const el = e.target.closest && e.target.closest('[data-explain]');
  if (el) showTip(h('pre', { class: 'tip-formula' }, el.dataset.explain), e);
});
document.addEventListener('mouseout', (e) => {
  const el = e.target.closest && e.target.closest('[data-explain]');
  if (el && !el.contains(e.relatedTarget)) showTip(null);
});

onNavigate(render);
render();
