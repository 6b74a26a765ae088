// Cost settings of a service: instance type from the built-in table or an explicit
// $/core-hour, and the fleet size; the formula is shown with the numbers, and a change
// is stored (PUT) and applied at once: the figures are the server's, computed again by
// it with the new settings (the formula lives in src/cost, docs/cost.md).

import { api, ApiError, clearCache } from './api.js';
import { h, replace } from './dom.js';
import { num } from './format.js';

/**
 * Fills `el` with the settings form of `service`. `cost` is the flame graph's cost
 * block (what the figures on screen used); `onApplied(note)` reloads the page's data
 * and draws this form again with `note` as its status line.
 */
export async function renderSettings(el, service, cost, onApplied, note = '') {
  replace(el, h('p', { class: 'muted' }, 'Loading cost settings…'));
  const [current, table] = await Promise.all([api.settings(service), api.instanceTypes()]);
  const settings = (current && current.settings) || {};
  const types = (table && table.instanceTypes) || [];
  const status = h('p', { class: 'status', role: 'status' }, note);
  const instance = h('select', { id: 'cost-instance', name: 'instanceType' },
    h('option', { value: '' }, '— none: use the price below, or the default —'),
    groupBy(types, (t) => t.provider).map(([provider, list]) =>
      h('optgroup', { label: provider }, list.map((t) =>
        h('option', { value: t.name, selected: t.name === settings.instanceType },
          `${t.name} (${t.region}, ${t.vcpus} vCPU ${t.arch}, $${t.hourlyUsd}/h = $${num(t.pricePerCoreHour)}/core-h)`)))));
  const price = h('input', {
    id: 'cost-price', name: 'pricePerCoreHour', type: 'number', min: '0', step: 'any',
    placeholder: 'e.g. 0.0425', value: settings.pricePerCoreHour ?? '',
  });
  const fleet = h('input', {
    id: 'cost-fleet', name: 'fleetHosts', type: 'number', min: '1', step: '1',
    placeholder: cost ? `${cost.profiledHosts} (profiled hosts)` : 'profiled hosts', value: settings.fleetHosts ?? '',
  });
  // CO2 inputs: empty means the documented default for the instance's architecture/provider.
  const co2Input = (id, key, placeholder) => h('input', {
    id, name: key, type: 'number', min: '0', step: 'any', size: 8, placeholder, value: settings[key] ?? '',
  });
  const watts = co2Input('cost-watts', 'wattsPerCore', cost ? String(cost.wattsPerCore) : '7');
  const pue = co2Input('cost-pue', 'pue', cost ? String(cost.pue) : '1.7');
  const grid = co2Input('cost-grid', 'kgCo2PerKwh', cost ? String(cost.kgCo2PerKwh) : '0.379');
  const optional = (input) => (input.value === '' ? null : Number(input.value));
  let sent = JSON.stringify(settings);
  const apply = async () => {
    const body = {
      ...settings,
      instanceType: instance.value || null,
      pricePerCoreHour: price.value === '' ? null : Number(price.value),
      fleetHosts: fleet.value === '' ? null : Math.round(Number(fleet.value)),
      wattsPerCore: optional(watts),
      pue: optional(pue),
      kgCo2PerKwh: optional(grid),
    };
    // Enter fires both 'change' and 'submit': store a given set of values once.
    if (JSON.stringify(body) === sent) return;
    sent = JSON.stringify(body);
    status.textContent = 'Saving…';
    status.className = 'status';
    try {
      await api.putSettings(service, body);
      clearCache();
      status.textContent = 'Saved; the figures on this page now use it.';
      await onApplied(status.textContent);
    } catch (err) {
      sent = '';
      status.className = 'status error';
      status.textContent = err instanceof ApiError && err.status === 403
        ? 'Changing cost settings needs a token with the admin scope.'
        : `Not saved: ${err.message}`;
    }
  };
  for (const input of [instance, price, fleet, watts, pue, grid]) input.addEventListener('change', apply);
  replace(el,
    h('form', { class: 'settings', onsubmit: (e) => { e.preventDefault(); apply(); } },
      h('label', {}, 'Instance type ', instance),
      h('label', {}, 'or $ per core-hour ', price, h('span', { class: 'muted small' }, ' (wins over the instance type)')),
      h('label', {}, 'Fleet size (hosts) ', fleet),
      h('details', { open: settings.wattsPerCore != null || settings.pue != null || settings.kgCo2PerKwh != null },
        h('summary', {}, 'CO2 inputs (defaults by architecture and provider)'),
        h('label', {}, 'Watts per core ', watts), ' ', h('label', {}, 'PUE ', pue), ' ',
        h('label', {}, 'kg CO2 per kWh ', grid)),
      status),
    formula(cost));
}

/** The formula with the numbers the page used. */
export function formula(cost) {
  if (!cost) return h('p', { class: 'muted' }, 'No data in this range: the formula appears with the first profile.');
  return h('div', { class: 'formula' },
    h('pre', {}, [
      'cores(frame)     = (S / F) / W × (H / Hp)',
      `                 = (S / ${num(cost.frequencyHz)} Hz) / ${num(cost.windowSeconds)} s × (${cost.fleetHosts} / ${cost.profiledHosts} = ×${num(cost.hostRatio)})`,
      `cost(frame)/year = cores × ${cost.hoursPerYear || 8760} h × $${cost.pricePerCoreHour}/core-hour`,
      `co2(frame)/year  = cores × ${cost.hoursPerYear || 8760} h × ${cost.wattsPerCore} W / 1000 × PUE ${cost.pue} × ${cost.kgCo2PerKwh} kg CO2/kWh`,
      '',
      'S: on-CPU (RUNNABLE) samples of the frame; F: sampling rate; W: wall seconds profiled',
      'per host; H: fleet hosts; Hp: hosts that sent profiles in the range.',
    ].join('\n')),
    h('p', { class: 'muted small' }, `Price: ${cost.priceSource}`));
}

function groupBy(list, keyOf) {
  const map = new Map();
  for (const item of list) {
    const k = keyOf(item);
    if (!map.has(k)) map.set(k, []);
    map.get(k).push(item);
  }
  return [...map.entries()];
}
