//! Pure cost model, the one place its formula lives (docs/cost.md): CPU seconds of a
//! frame over a window -> average cores -> $ and kg CO2 per year, with every input
//! reported so the viewer and the reports can show how a figure was computed without
//! computing it again.
//!
//! In: values (CPU seconds, the wall time observed per host as a `model::Coverage`,
//! `CostSettings`, a `model::Aggregate`). Out: `Estimate`s, the window `W` and hosts
//! `Hp` (`observed_window`, the one place they are computed), the resolved
//! `CostInputs`, and `CostTerms` (the terms and per-sample factors sent with every
//! figure). Must not: read a store, a clock or the network.

pub mod instances;

use crate::model::{Aggregate, Coverage};
use serde::{Deserialize, Serialize};

pub use instances::{InstanceType, INSTANCE_TYPES};

/// Hours in a year, as in the formula.
pub const HOURS_PER_YEAR: f64 = 8760.0;
/// Default price when neither an instance type nor an override is set.
pub const DEFAULT_PRICE_PER_CORE_HOUR: f64 = 0.0425;
/// Default watts per x86 core.
pub const WATTS_PER_X86_CORE: f64 = 7.0;
/// Default watts per arm64 core.
pub const WATTS_PER_ARM_CORE: f64 = 2.8;
/// Default PUE off-cloud.
pub const PUE_OFF_CLOUD: f64 = 1.7;
/// Default grid carbon intensity, kg CO2 per kWh.
pub const KG_CO2_PER_KWH: f64 = 0.379;

/// A service's cost settings, as stored and as sent by `PUT .../settings`. Every field
/// is optional; unset fields fall back to documented defaults.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct CostSettings {
    /// Instance type from the built-in table (e.g. `m5.large`).
    pub instance_type: Option<String>,
    /// Explicit $ per core-hour; wins over `instance_type`.
    pub price_per_core_hour: Option<f64>,
    /// Hosts in the whole fleet; default: the hosts that were profiled.
    pub fleet_hosts: Option<u32>,
    /// Watts per core; default by architecture (7 x86, 2.8 arm64).
    pub watts_per_core: Option<f64>,
    /// Power usage effectiveness; default by provider (1.7 off-cloud).
    pub pue: Option<f64>,
    /// Grid carbon intensity; default 0.379 kg/kWh.
    pub kg_co2_per_kwh: Option<f64>,
}

/// Settings that cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CostError {
    #[error(
        "unknown instance type {0:?}: see GET /api/v1/instance-types for the built-in table, or set pricePerCoreHour"
    )]
    UnknownInstanceType(String),
    #[error("{field} must be a positive finite number, got {value}")]
    NotPositive { field: &'static str, value: f64 },
    #[error("fleetHosts must be at least 1")]
    ZeroFleet,
}

/// The resolved inputs of the formula, reported with every estimate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CostInputs {
    /// $ per core-hour used.
    pub price_per_core_hour: f64,
    /// Where the price comes from (table entry with source and date, override, default).
    pub price_source: String,
    /// Instance type, when the price comes from the table.
    pub instance_type: Option<String>,
    /// Fleet size set by the user (None: the profiled hosts).
    pub fleet_hosts: Option<u32>,
    /// Watts per core used for CO2.
    pub watts_per_core: f64,
    /// PUE used for CO2.
    pub pue: f64,
    /// kg CO2 per kWh used.
    pub kg_co2_per_kwh: f64,
    /// Hours per year (8760).
    pub hours_per_year: f64,
    /// The formula in words.
    pub formula: String,
}

fn positive(field: &'static str, value: Option<f64>) -> Result<Option<f64>, CostError> {
    match value {
        Some(v) if !(v.is_finite() && v > 0.0) => Err(CostError::NotPositive { field, value: v }),
        other => Ok(other),
    }
}

impl CostSettings {
    /// Checks the settings and resolves them to formula inputs.
    pub fn resolve(&self) -> Result<CostInputs, CostError> {
        let override_price = positive("pricePerCoreHour", self.price_per_core_hour)?;
        let watts = positive("wattsPerCore", self.watts_per_core)?;
        let pue = positive("pue", self.pue)?;
        let kg = positive("kgCo2PerKwh", self.kg_co2_per_kwh)?;
        if self.fleet_hosts == Some(0) {
            return Err(CostError::ZeroFleet);
        }
        let instance = match &self.instance_type {
            Some(name) => Some(instances::lookup(name).ok_or_else(|| CostError::UnknownInstanceType(name.clone()))?),
            None => None,
        };
        let (price, source) = match (override_price, instance) {
            (Some(p), _) => (p, format!("override: ${p}/core-hour set for this service")),
            (None, Some(it)) => (
                it.price_per_core_hour(),
                format!(
                    "{} {}: ${}/hour / {} vCPUs, on-demand {} ({} as of {})",
                    it.provider, it.name, it.hourly_usd, it.vcpus, it.region, it.source, it.date
                ),
            ),
            (None, None) => (
                DEFAULT_PRICE_PER_CORE_HOUR,
                "default: $0.0425/core-hour (published average on-demand price per vCPU-hour)".to_string(),
            ),
        };
        let arm = instance.map(|i| i.arch == "arm64").unwrap_or(false);
        let provider_pue = instance.map(|i| i.provider_pue()).unwrap_or(PUE_OFF_CLOUD);
        Ok(CostInputs {
            price_per_core_hour: price,
            price_source: source,
            instance_type: instance.map(|i| i.name.to_string()),
            fleet_hosts: self.fleet_hosts,
            watts_per_core: watts.unwrap_or(if arm { WATTS_PER_ARM_CORE } else { WATTS_PER_X86_CORE }),
            pue: pue.unwrap_or(provider_pue),
            kg_co2_per_kwh: kg.unwrap_or(KG_CO2_PER_KWH),
            hours_per_year: HOURS_PER_YEAR,
            formula: "cores = (S / F) / W * (H / Hp); $/year = cores * 8760 h * price_per_core_hour; \
                      kg CO2/year = cores * 8760 h * watts_per_core / 1000 * PUE * kg_CO2_per_kWh"
                .to_string(),
        })
    }
}

/// Average cores, $ per year and kg CO2 per year of one frame (or of a total).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Estimate {
    /// Average CPU cores kept busy across the fleet.
    pub cores: f64,
    /// Estimated $ per year.
    pub usd_per_year: f64,
    /// Estimated kg CO2 per year.
    pub kg_co2_per_year: f64,
}

/// The window a query covers, which turns CPU seconds into cores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CostContext {
    /// Resolved formula inputs.
    pub inputs: CostInputs,
    /// W: wall seconds covered by the profiles, per profiled host.
    pub window_seconds: f64,
    /// Hp: hosts that sent profiles in the window.
    pub profiled_hosts: u32,
    /// H: fleet hosts used (configured, else Hp).
    pub fleet_hosts: u32,
}

impl CostContext {
    /// A context for a window of `window_seconds` with `profiled_hosts` hosts.
    pub fn new(inputs: CostInputs, window_seconds: f64, profiled_hosts: u32) -> CostContext {
        let hp = profiled_hosts.max(1);
        let fleet = inputs.fleet_hosts.unwrap_or(hp);
        CostContext { inputs, window_seconds, profiled_hosts: hp, fleet_hosts: fleet }
    }

    /// The context of an aggregate: W and Hp of the wall time it covers
    /// (`observed_window`).
    pub fn of_aggregate(inputs: CostInputs, agg: &Aggregate) -> CostContext {
        let w = observed_window(&agg.coverage);
        CostContext::new(inputs, w.window_seconds, w.profiled_hosts)
    }

    /// cores = (S / F) / W * (H / Hp), with `cpu_seconds` = S / F.
    pub fn cores(&self, cpu_seconds: f64) -> f64 {
        cores(cpu_seconds, self.window_seconds, self.fleet_hosts, self.profiled_hosts)
    }

    /// H / Hp: what the profiled hosts are scaled by to stand for the fleet.
    pub fn host_ratio(&self) -> f64 {
        self.fleet_hosts as f64 / self.profiled_hosts as f64
    }

    /// W * Hp: the host-seconds the window covers.
    pub fn host_seconds(&self) -> f64 {
        self.window_seconds * self.profiled_hosts as f64
    }

    /// Cores, $ and CO2 per year for `cpu_seconds` of on-CPU time in the window.
    pub fn estimate(&self, cpu_seconds: f64) -> Estimate {
        estimate_cores(self.cores(cpu_seconds), &self.inputs)
    }

    /// What one sample worth `seconds_per_sample` (1 / F) of thread time stands for.
    pub fn per_sample(&self, seconds_per_sample: f64) -> PerSample {
        let e = self.estimate(seconds_per_sample);
        PerSample {
            thread_seconds: seconds_per_sample * self.host_ratio(),
            cores: e.cores,
            usd_per_year: e.usd_per_year,
            kg_co2_per_year: e.kg_co2_per_year,
        }
    }

    /// The terms of the figures computed over `agg` (its selected states), with the
    /// per-sample factors a client multiplies sample counts by.
    pub fn terms(&self, agg: &Aggregate) -> CostTerms {
        let seconds_per =
            |samples: u64, nanos: u64| if samples > 0 { nanos as f64 / 1e9 / samples as f64 } else { 0.0 };
        let (samples, nanos) = agg.samples.iter().fold((0u64, 0u64), |(c, n), s| (c + s.samples, n + s.nanos));
        let (cpu_samples, cpu_nanos) = agg
            .samples
            .iter()
            .filter(|s| s.state.is_cpu())
            .fold((0u64, 0u64), |(c, n), s| (c + s.samples, n + s.nanos));
        let i = &self.inputs;
        CostTerms {
            price_per_core_hour: i.price_per_core_hour,
            price_source: i.price_source.clone(),
            instance_type: i.instance_type.clone(),
            fleet_hosts: self.fleet_hosts,
            fleet_hosts_configured: i.fleet_hosts.is_some(),
            profiled_hosts: self.profiled_hosts,
            host_ratio: self.host_ratio(),
            window_seconds: self.window_seconds,
            watts_per_core: i.watts_per_core,
            pue: i.pue,
            kg_co2_per_kwh: i.kg_co2_per_kwh,
            hours_per_year: i.hours_per_year,
            frequency_hz: if nanos > 0 { samples as f64 * 1e9 / nanos as f64 } else { 0.0 },
            formula: i.formula.clone(),
            per_sample: self.per_sample(seconds_per(samples, nanos)),
            per_cpu_sample: self.per_sample(seconds_per(cpu_samples, cpu_nanos)),
        }
    }
}

/// W and Hp of what was observed (docs/cost.md).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ObservedWindow {
    /// W: wall seconds per profiled host, the mean over hosts of each host's union of
    /// profile windows (= the sum of the per-host unions / Hp).
    pub window_seconds: f64,
    /// Hp: hosts with any observed time (0 when nothing was observed).
    pub profiled_hosts: u32,
}

/// W and Hp of `coverage`: per host (its `host` label; profiles without one are one
/// host), the union of its profiles' `[start, end)` windows, however many processes,
/// threads, series or agents sent them; W = the sum of those unions / Hp. So
/// (S / F) / (W * Hp) is the service's average cores per observed host, and
/// `cores` = that x H. Every figure's W and Hp come from here.
pub fn observed_window(coverage: &Coverage) -> ObservedWindow {
    let hosts = coverage.hosts();
    if hosts == 0 {
        return ObservedWindow::default();
    }
    let host_seconds: f64 = coverage.per_host().iter().map(|h| h.seconds()).sum();
    ObservedWindow { window_seconds: host_seconds / hosts as f64, profiled_hosts: hosts }
}

/// cores = (S / F) / W * (H / Hp), with `cpu_seconds` = S / F, `window_seconds` = W,
/// `fleet_hosts` = H and `profiled_hosts` = Hp; 0 for an empty window.
pub fn cores(cpu_seconds: f64, window_seconds: f64, fleet_hosts: u32, profiled_hosts: u32) -> f64 {
    if window_seconds <= 0.0 || profiled_hosts == 0 {
        return 0.0;
    }
    cpu_seconds / window_seconds * (fleet_hosts as f64 / profiled_hosts as f64)
}

/// What one sample stands for in a window: the factor a client multiplies a sample
/// count by (the formula stays here; see docs/cost.md).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PerSample {
    /// Fleet thread seconds: (1 / F) * (H / Hp).
    pub thread_seconds: f64,
    /// Average cores: (1 / F) / W * (H / Hp).
    pub cores: f64,
    /// $ per year: cores * 8760 h * price per core-hour.
    pub usd_per_year: f64,
    /// kg CO2 per year: cores * 8760 h * watts / 1000 * PUE * kg CO2 per kWh.
    pub kg_co2_per_year: f64,
}

/// The terms of a set of figures, as sent with them (docs/api.md, `cost` of a flame
/// graph), so that every figure can show how it was computed.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CostTerms {
    /// $ per core-hour used.
    pub price_per_core_hour: f64,
    /// Where the price comes from.
    pub price_source: String,
    /// Instance type, when the price comes from the table.
    pub instance_type: Option<String>,
    /// H: fleet hosts used.
    pub fleet_hosts: u32,
    /// True when H is the service's setting, false when it is Hp.
    pub fleet_hosts_configured: bool,
    /// Hp: hosts that sent profiles in the window.
    pub profiled_hosts: u32,
    /// H / Hp.
    pub host_ratio: f64,
    /// W: wall seconds covered per profiled host.
    pub window_seconds: f64,
    /// Watts per core used for CO2.
    pub watts_per_core: f64,
    /// PUE used for CO2.
    pub pue: f64,
    /// kg CO2 per kWh used.
    pub kg_co2_per_kwh: f64,
    /// Hours per year (8760).
    pub hours_per_year: f64,
    /// F: mean sampling rate of the samples, Hz.
    pub frequency_hz: f64,
    /// The formula in words.
    pub formula: String,
    /// One sample of the selected states at their mean period (1 / F).
    pub per_sample: PerSample,
    /// One on-CPU (RUNNABLE) sample at the mean period of the on-CPU samples: what
    /// prices a frame's self time from its sample count.
    pub per_cpu_sample: PerSample,
}

/// $ and CO2 per year of `cores` average cores.
pub fn estimate_cores(cores: f64, inputs: &CostInputs) -> Estimate {
    let core_hours = cores * inputs.hours_per_year;
    Estimate {
        cores,
        usd_per_year: core_hours * inputs.price_per_core_hour,
        kg_co2_per_year: core_hours * inputs.watts_per_core / 1000.0 * inputs.pue * inputs.kg_co2_per_kwh,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_example() {
        // 4 hosts profiled at 100 Hz for 60 s; a frame has 12,000 samples = 120 CPU s.
        // Fleet of 10 hosts at $0.05/core-hour.
        let settings = CostSettings { price_per_core_hour: Some(0.05), fleet_hosts: Some(10), ..Default::default() };
        let ctx = CostContext::new(settings.resolve().unwrap(), 60.0, 4);
        let e = ctx.estimate(12_000.0 / 100.0);
        // cores = 120 / 60 * 10 / 4 = 5
        assert!((e.cores - 5.0).abs() < 1e-9);
        // $ = 5 * 8760 * 0.05 = 2190
        assert!((e.usd_per_year - 2190.0).abs() < 1e-6);
        // CO2 = 5 * 8760 * 7 / 1000 * 1.7 * 0.379 = 197.55...
        assert!((e.kg_co2_per_year - 5.0 * 8760.0 * 7.0 / 1000.0 * 1.7 * 0.379).abs() < 1e-6);
    }

    #[test]
    fn per_sample_factors_price_a_count_like_the_formula() {
        use crate::model::{AggregateSample, ThreadState};
        // 2 profiled hosts, 60 s each, fleet of 10; 100 Hz on CPU, 50 Hz waiting.
        let settings = CostSettings { price_per_core_hour: Some(0.05), fleet_hosts: Some(10), ..Default::default() };
        let mut agg = Aggregate {
            samples: vec![
                AggregateSample { stack: 0, state: ThreadState::Runnable, samples: 300, nanos: 3_000_000_000 },
                AggregateSample { stack: 0, state: ThreadState::Waiting, samples: 100, nanos: 2_000_000_000 },
            ],
            ..Default::default()
        };
        agg.coverage.add(Some("a"), 0, 60_000);
        agg.coverage.add(Some("b"), 0, 60_000);
        let ctx = CostContext::of_aggregate(settings.resolve().unwrap(), &agg);
        assert_eq!((ctx.window_seconds, ctx.profiled_hosts, ctx.fleet_hosts), (60.0, 2, 10));
        let t = ctx.terms(&agg);
        assert_eq!(t.host_ratio, 5.0);
        assert!((t.frequency_hz - 80.0).abs() < 1e-9);
        // 300 on-CPU samples priced by the factor = the estimate of their 3 CPU seconds.
        let whole = ctx.estimate(agg.cpu_seconds());
        assert!((t.per_cpu_sample.usd_per_year * 300.0 - whole.usd_per_year).abs() < 1e-9);
        assert!((t.per_cpu_sample.cores * 300.0 - whole.cores).abs() < 1e-12);
        assert!((t.per_cpu_sample.kg_co2_per_year * 300.0 - whole.kg_co2_per_year).abs() < 1e-9);
        // One sample of any selected state: 1 / 80 Hz = 12.5 ms, x H / Hp = 62.5 fleet ms.
        assert!((t.per_sample.thread_seconds - 0.0625).abs() < 1e-12);
        assert!((t.per_sample.cores - 0.0125 / 60.0 * 5.0).abs() < 1e-12);
    }

    #[test]
    fn window_is_the_union_per_host_not_the_sum_of_profiles() {
        // 14 processes observed for the same 30 s on one host: W = 30 s, not 420 s.
        let mut one = Coverage::default();
        for _ in 0..14 {
            one.add(Some("db1"), 1_000, 31_000);
        }
        assert_eq!(observed_window(&one), ObservedWindow { window_seconds: 30.0, profiled_hosts: 1 });
        // Two hosts: db1 over [0, 30 s) by two processes overlapping, db2 over two
        // 10 s stretches with a gap; W = (30 + 20) / 2 = 25 s.
        let mut two = Coverage::default();
        two.add(Some("db1"), 0, 20_000);
        two.add(Some("db1"), 10_000, 30_000);
        two.add(Some("db2"), 0, 10_000);
        two.add(Some("db2"), 40_000, 50_000);
        assert_eq!(observed_window(&two), ObservedWindow { window_seconds: 25.0, profiled_hosts: 2 });
        // Profiles without a host label are one host, apart from the named ones.
        two.add(None, 0, 10_000);
        two.add(None, 0, 10_000);
        assert_eq!(observed_window(&two).profiled_hosts, 3);
        assert!((observed_window(&two).window_seconds - 20.0).abs() < 1e-12);
        // Nothing observed: W = 0, and the formula gives 0 cores.
        assert_eq!(observed_window(&Coverage::default()), ObservedWindow::default());
        // The formula on the first case: 14 processes of 0.1 core each = 1.4 cores.
        let ctx = CostContext::of_aggregate(
            CostSettings::default().resolve().unwrap(),
            &Aggregate { coverage: one, ..Default::default() },
        );
        assert!((ctx.cores(42.0) - 1.4).abs() < 1e-12);
    }

    #[test]
    fn instance_type_sets_price_and_defaults() {
        let s = CostSettings { instance_type: Some("m5.large".into()), ..Default::default() };
        let i = s.resolve().unwrap();
        assert!((i.price_per_core_hour - 0.096 / 2.0).abs() < 1e-12);
        assert_eq!(i.pue, 1.135);
        assert!(i.price_source.contains("m5.large"));
        let arm = CostSettings { instance_type: Some("m6g.large".into()), ..Default::default() }.resolve().unwrap();
        assert_eq!(arm.watts_per_core, WATTS_PER_ARM_CORE);
        let d = CostSettings::default().resolve().unwrap();
        assert_eq!(d.price_per_core_hour, DEFAULT_PRICE_PER_CORE_HOUR);
        assert_eq!(d.pue, PUE_OFF_CLOUD);
    }

    #[test]
    fn bad_settings_are_refused() {
        let bad = CostSettings { instance_type: Some("z9.huge".into()), ..Default::default() };
        assert!(matches!(bad.resolve(), Err(CostError::UnknownInstanceType(_))));
        let neg = CostSettings { price_per_core_hour: Some(-1.0), ..Default::default() };
        assert!(matches!(neg.resolve(), Err(CostError::NotPositive { .. })));
        let zero = CostSettings { fleet_hosts: Some(0), ..Default::default() };
        assert_eq!(zero.resolve(), Err(CostError::ZeroFleet));
    }
}
