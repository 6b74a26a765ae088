// Number formats and the explanations every $ figure shows on hover. The cost formula
// lives in src/cost (docs/cost.md): the server sends every figure with the terms it was
// computed from, and here they are only written out, never computed again.

const en = (digits) => new Intl.NumberFormat('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits });
const int = en(0);
const two = en(2);

/** "$315,883" from 100 up, "$12.34" below. */
export function usd(x) {
  if (!Number.isFinite(x)) return '$?';
  const a = Math.abs(x);
  const text = a >= 100 ? int.format(a) : two.format(a);
  return `${x < 0 ? '−' : ''}$${text}`;
}

/** A signed $ change: "+$1,234" or "−$56.00". */
export function usdDelta(x) {
  return `${x > 0 ? '+' : ''}${usd(x)}`;
}

/** A share (0..1) as "56%", "5.3%", "0.42%". */
export function pct(share) {
  if (!Number.isFinite(share)) return '?%';
  const p = share * 100;
  const a = Math.abs(p);
  if (a >= 10) return `${Math.round(p)}%`;
  if (a >= 1) return `${p.toFixed(1)}%`;
  return `${p.toFixed(2)}%`;
}

/** A count with thousands separators. */
export function count(x) { return int.format(x); }

/** A plain number with up to 3 significant digits ("1.9", "0.0123", "1,234"). */
export function num(x) {
  if (!Number.isFinite(x)) return '?';
  const a = Math.abs(x);
  if (a >= 1000) return int.format(x);
  if (a === 0) return '0';
  return String(Number(x.toPrecision(3)));
}

/** Average CPU cores. */
export function cores(x) { return `${num(x)} ${Math.abs(x) === 1 ? 'core' : 'cores'}`; }

/** kg of CO2 per year, in t from 1,000 kg. */
export function co2(kg) {
  if (Math.abs(kg) >= 1000) return `${num(kg / 1000)} t CO2`;
  return `${num(kg)} kg CO2`;
}

/** Thread time as a person says it: "13 years", "25 days", "3 months", "4.2 h". */
export function threadTime(seconds) {
  const units = [['years', 31536000], ['months', 2592000], ['days', 86400], ['h', 3600], ['min', 60], ['s', 1]];
  for (const [name, size] of units) {
    if (seconds >= size) return `${num(seconds / size)} ${name}`;
  }
  return `${num(seconds)} s`;
}

/** A Unix-ms time as local "YYYY-MM-DD HH:MM". */
export function time(ms) {
  const d = new Date(ms);
  const p = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}`;
}

/** How long ago a Unix-ms time was: "3 min ago". */
export function ago(ms) {
  const s = Math.max(0, (Date.now() - ms) / 1000);
  if (s < 90) return `${Math.round(s)} s ago`;
  if (s < 5400) return `${Math.round(s / 60)} min ago`;
  if (s < 129600) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} days ago`;
}

/**
 * The formula of one frame's yearly cost, written out with its numbers. `cpuSamples`
 * is the frame's RUNNABLE sample count S; `cost` is the API's `cost` block.
 */
export function explainCost(label, cpuSamples, est, cost) {
  if (!cost) return `${label}: ${usd(est.usdPerYear)} / year`;
  const F = cost.frequencyHz;
  const W = cost.windowSeconds;
  const H = cost.fleetHosts;
  const Hp = cost.profiledHosts;
  const hours = cost.hoursPerYear || 8760;
  return [
    `${label}`,
    `cores = (S / F) / W × (H / Hp)`,
    `      = (${count(cpuSamples)} on-CPU samples / ${num(F)} Hz) / ${num(W)} s × (${H} fleet hosts / ${Hp} profiled)`,
    `      = ${num(est.cores)}`,
    `$/year = cores × ${count(hours)} h × $${cost.pricePerCoreHour}/core-hour = ${usd(est.usdPerYear)}`,
    `CO2/year = cores × ${count(hours)} h × ${num(cost.wattsPerCore)} W / 1000 × PUE ${cost.pue} × ${cost.kgCo2PerKwh} kg/kWh = ${co2(est.kgCo2PerYear)}`,
    `price: ${cost.priceSource}`,
  ].join('\n');
}

/** The explanation of a service's "now" figure, with the terms the API sends beside it. */
export function explainNow(now) {
  const hours = now.hoursPerYear || 8760;
  return [
    'Last 15 minutes, on-CPU time only',
    `$/year = ${num(now.cpuCores)} cores × ${count(hours)} h × $${Number((now.pricePerCoreHour || 0).toPrecision(4))}/core-hour = ${usd(now.usdPerYear)}`,
    `CO2/year = ${co2(now.kgCo2PerYear)}`,
    'Open the service for the full formula and its price source.',
  ].join('\n');
}
