//! The figures of a win: CPU before and after, the change per frame, and the saving
//! per year with a 95% range from sampling noise (see the module doc of `report`).
//!
//! In: two `Side`s (an `Aggregate`, its `CostContext`, optional request counts) and an
//! optional `FramePattern`. Out: `WinFigures`, serialisable as the API's JSON.
//! Must not: read a store or a clock.

use super::ReportError;
use crate::cost::{estimate_cores, CostContext, CostInputs};
use crate::model::{Aggregate, AggregateSample, ThreadState};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Two-sided 95% quantile of the standard normal distribution.
const Z95: f64 = 1.959_963_984_540_054;
/// Below this many samples on a side the normal approximation is called rough.
const FEW_SAMPLES: u64 = 30;

/// One side of the comparison.
#[derive(Debug, Clone, Copy)]
pub struct Side<'a> {
    /// The merged profiles of the side (all states; only on-CPU samples are used).
    pub aggregate: &'a Aggregate,
    /// Window, hosts and prices of the side.
    pub context: &'a CostContext,
    /// Requests the profiled hosts served in the window, when the caller knows them.
    pub requests: Option<u64>,
}

/// Options of `compute`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct WinOptions {
    /// Frames listed in `WinFigures::frames`. Default 10.
    pub top_frames: usize,
}

impl Default for WinOptions {
    fn default() -> Self {
        WinOptions { top_frames: 10 }
    }
}

/// Which frames a win is about: a substring of the frame name, or a regular
/// expression written between slashes (`/regex::Regex::new$/`).
#[derive(Debug, Clone)]
pub struct FramePattern {
    text: String,
    regex: Option<regex::Regex>,
}

impl FramePattern {
    /// Parses a pattern: `/.../` is a regular expression, anything else a substring.
    pub fn parse(text: &str) -> Result<FramePattern, ReportError> {
        let regex = match text.strip_prefix('/').and_then(|t| t.strip_suffix('/')) {
            Some(body) => Some(
                regex::RegexBuilder::new(body)
                    // User input: keep the compiled automaton small.
                    .size_limit(1 << 20)
                    .build()
                    .map_err(|e| ReportError::BadPattern { pattern: text.to_string(), reason: e.to_string() })?,
            ),
            None => None,
        };
        Ok(FramePattern { text: text.to_string(), regex })
    }

    /// True when the frame `name` is one the win is about.
    pub fn matches(&self, name: &str) -> bool {
        match &self.regex {
            Some(re) => re.is_match(name),
            None => name.contains(self.text.as_str()),
        }
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// How the two sides were made comparable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Normalisation {
    /// CPU cores per profiled host: a change of traffic per host shows up as a change.
    PerHost,
    /// CPU seconds per request, applied to the after side's request rate.
    PerRequest,
}

/// The figures of one side.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SideFigures {
    /// First merged profile, Unix ms.
    pub first_ms: i64,
    /// Last merged profile, Unix ms.
    pub last_ms: i64,
    /// Profiles merged.
    pub profiles: u64,
    /// Hosts that sent profiles (Hp).
    pub profiled_hosts: u32,
    /// Hosts of the fleet used for the fleet figures (H).
    pub fleet_hosts: u32,
    /// Wall seconds covered per profiled host (W).
    pub window_seconds: f64,
    /// On-CPU samples, whole service.
    pub cpu_samples: u64,
    /// On-CPU seconds, whole service.
    pub cpu_seconds: f64,
    /// Average cores, whole service, across the fleet.
    pub cores: f64,
    /// Average cores per profiled host, whole service.
    pub cores_per_host: f64,
    /// On-CPU samples of the win's scope (stacks through the matched frames, or all).
    pub scope_samples: u64,
    /// Average cores per host of the scope.
    pub scope_cores_per_host: f64,
    /// Average cores of the scope across the fleet.
    pub scope_cores: f64,
    /// Requests served in the window, when known.
    pub requests: Option<u64>,
    /// CPU milliseconds of the scope per request, when requests are known.
    pub cpu_ms_per_request: Option<f64>,
}

/// The saving per year, positive when the after side uses less CPU.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Saving {
    /// Cores saved across the fleet.
    pub cores: f64,
    /// Low end of the 95% range of `cores`.
    pub cores_low: f64,
    /// High end of the 95% range of `cores`.
    pub cores_high: f64,
    /// $ saved per year.
    pub usd_per_year: f64,
    /// Low end of the 95% range of `usd_per_year`.
    pub usd_low: f64,
    /// High end of the 95% range of `usd_per_year`.
    pub usd_high: f64,
    /// kg CO2 saved per year.
    pub kg_co2_per_year: f64,
    /// Low end of the 95% range of `kg_co2_per_year`.
    pub kg_co2_low: f64,
    /// High end of the 95% range of `kg_co2_per_year`.
    pub kg_co2_high: f64,
    /// Saving as a fraction of the scope's before figure (0.25 = 25% less).
    pub relative: f64,
    /// Confidence level of the range (0.95).
    pub confidence: f64,
    /// False when the range includes 0: noise could explain the difference.
    pub significant: bool,
    /// How the range was computed, in words.
    pub method: String,
}

/// How one frame changed, in cores across the fleet (positive = saving).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FrameChange {
    /// Frame name.
    pub name: String,
    /// Self cores per host before.
    pub self_before: f64,
    /// Self cores per host after.
    pub self_after: f64,
    /// Total (inclusive) cores per host before.
    pub total_before: f64,
    /// Total (inclusive) cores per host after.
    pub total_after: f64,
    /// Self cores saved across the fleet.
    pub self_saved_cores: f64,
    /// Total cores saved across the fleet.
    pub total_saved_cores: f64,
    /// $ per year of `self_saved_cores`.
    pub self_usd_per_year: f64,
    /// $ per year of `total_saved_cores`.
    pub total_usd_per_year: f64,
    /// True when the 95% range of the self saving excludes 0.
    pub significant: bool,
}

/// Everything measured about a win.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WinFigures {
    /// The before side.
    pub before: SideFigures,
    /// The after side.
    pub after: SideFigures,
    /// How the sides were made comparable.
    pub normalisation: Normalisation,
    /// The frame pattern the saving is about, if any.
    pub frame_pattern: Option<String>,
    /// What the saving covers, in words.
    pub scope: String,
    /// The saving of the scope.
    pub saving: Saving,
    /// Frames whose own (self) CPU changed most, largest change first; frames that did
    /// not change at all are left out.
    pub frames: Vec<FrameChange>,
    /// Prices and factors used (those of the after side).
    pub cost: CostInputs,
    /// Caveats a reader should know (no request counter, few samples, ...).
    pub notes: Vec<String>,
}

/// A CPU amount as an estimate with its Poisson variance, both in seconds.
#[derive(Debug, Clone, Copy, Default)]
struct Counted {
    samples: u64,
    seconds: f64,
    /// Σ n p^2, seconds squared.
    variance: f64,
}

impl Counted {
    fn add(&mut self, samples: u64, nanos: u64) {
        if samples == 0 {
            return;
        }
        let seconds = nanos as f64 / 1e9;
        self.samples += samples;
        self.seconds += seconds;
        self.variance += seconds * seconds / samples as f64;
    }
}

/// Per-frame CPU of one side.
#[derive(Debug, Clone, Copy, Default)]
struct FrameCpu {
    self_cpu: Counted,
    total_cpu: Counted,
}

/// One side reduced to counts.
struct Tally {
    all: Counted,
    scope: Counted,
    frames: HashMap<String, FrameCpu>,
    matched_frames: usize,
}

fn tally(aggregate: &Aggregate, pattern: Option<&FramePattern>) -> Tally {
    let matched: Vec<bool> = match pattern {
        Some(p) => aggregate.frames.iter().map(|f| p.matches(f)).collect(),
        None => Vec::new(),
    };
    let mut all = Counted::default();
    let mut scope = Counted::default();
    // Indexed by frame id; names are joined only once per distinct frame at the end.
    let mut by_frame = vec![FrameCpu::default(); aggregate.frames.len()];
    // Inclusive time counts a recursive frame once per stack: `seen[f] == stamp` marks
    // frames already counted in the current stack.
    let mut seen = vec![u32::MAX; aggregate.frames.len()];
    for (stamp, sample) in aggregate.samples.iter().filter(|s| s.state.is_cpu()).enumerate() {
        let Some(stack) = aggregate.stacks.get(sample.stack as usize) else { continue };
        all.add(sample.samples, sample.nanos);
        let in_scope = pattern.is_none() || stack.iter().any(|f| matched.get(*f as usize).copied().unwrap_or(false));
        if in_scope {
            scope.add(sample.samples, sample.nanos);
        }
        for &f in stack {
            let Some(mark) = seen.get_mut(f as usize) else { continue };
            if *mark != stamp as u32 {
                *mark = stamp as u32;
                by_frame[f as usize].total_cpu.add(sample.samples, sample.nanos);
            }
        }
        if let Some(cpu) = stack.last().and_then(|f| by_frame.get_mut(*f as usize)) {
            cpu.self_cpu.add(sample.samples, sample.nanos);
        }
    }
    let mut frames: HashMap<String, FrameCpu> = HashMap::new();
    for (name, cpu) in aggregate.frames.iter().zip(by_frame) {
        if cpu.total_cpu.samples > 0 {
            // The same name under two ids (not interned together) adds up.
            let entry = frames.entry(name.clone()).or_default();
            for (into, from) in [(&mut entry.self_cpu, cpu.self_cpu), (&mut entry.total_cpu, cpu.total_cpu)] {
                into.samples += from.samples;
                into.seconds += from.seconds;
                into.variance += from.variance;
            }
        }
    }
    Tally { all, scope, frames, matched_frames: matched.iter().filter(|m| **m).count() }
}

/// Host-seconds a side covers (W * Hp), checked.
fn exposure(side: &Side<'_>, name: &'static str) -> Result<f64, ReportError> {
    let e = side.context.host_seconds();
    if e.is_finite() && e > 0.0 {
        Ok(e)
    } else {
        Err(ReportError::EmptyWindow {
            side: name,
            window_seconds: side.context.window_seconds,
            hosts: side.context.profiled_hosts,
        })
    }
}

/// A per-host difference with its standard error, before minus after.
struct Difference {
    per_host: f64,
    std_err: f64,
}

impl Difference {
    fn per_host(before: &Counted, after: &Counted, e_before: f64, e_after: f64) -> Difference {
        let per_host = before.seconds / e_before - after.seconds / e_after;
        let var = before.variance / (e_before * e_before) + after.variance / (e_after * e_after);
        Difference { per_host, std_err: var.sqrt() }
    }

    fn low(&self) -> f64 {
        self.per_host - Z95 * self.std_err
    }

    fn high(&self) -> f64 {
        self.per_host + Z95 * self.std_err
    }

    fn significant(&self) -> bool {
        self.low() > 0.0 || self.high() < 0.0
    }
}

fn side_figures(side: &Side<'_>, tally: &Tally, e: f64) -> SideFigures {
    let cores_per_host = tally.all.seconds / e;
    let scope_cores_per_host = tally.scope.seconds / e;
    let requests = side.requests.filter(|r| *r > 0);
    SideFigures {
        first_ms: side.aggregate.first_ms,
        last_ms: side.aggregate.last_ms,
        profiles: side.aggregate.profiles,
        profiled_hosts: side.context.profiled_hosts,
        fleet_hosts: side.context.fleet_hosts,
        window_seconds: side.context.window_seconds,
        cpu_samples: tally.all.samples,
        cpu_seconds: tally.all.seconds,
        cores: side.context.cores(tally.all.seconds),
        cores_per_host,
        scope_samples: tally.scope.samples,
        scope_cores_per_host,
        scope_cores: side.context.cores(tally.scope.seconds),
        requests,
        cpu_ms_per_request: requests.map(|r| tally.scope.seconds * 1000.0 / r as f64),
    }
}

/// Computes a win's figures from the before and after sides.
///
/// The saving is that of the frames matching `pattern` (inclusive: every stack that
/// passes through a matching frame), or of the whole service without a pattern. It is
/// normalised per request when both sides carry request counts, else per host, and
/// scaled to the after side's fleet and priced with the after side's cost inputs.
pub fn compute(
    before: Side<'_>,
    after: Side<'_>,
    pattern: Option<&FramePattern>,
    options: &WinOptions,
) -> Result<WinFigures, ReportError> {
    let e_before = exposure(&before, "before")?;
    let e_after = exposure(&after, "after")?;
    let t_before = tally(before.aggregate, pattern);
    let t_after = tally(after.aggregate, pattern);
    if t_before.all.samples == 0 {
        return Err(ReportError::NoSamples { side: "before" });
    }
    if t_after.all.samples == 0 {
        return Err(ReportError::NoSamples { side: "after" });
    }
    if let Some(p) = pattern {
        if t_before.matched_frames == 0 && t_after.matched_frames == 0 {
            return Err(ReportError::PatternMatchesNothing(p.as_str().to_string()));
        }
    }

    let mut notes = Vec::new();
    let fleet = after.context.fleet_hosts as f64;
    let inputs = &after.context.inputs;
    let requests = match (before.requests.filter(|r| *r > 0), after.requests.filter(|r| *r > 0)) {
        (Some(b), Some(a)) => Some((b as f64, a as f64)),
        (None, None) => {
            notes.push(
                "The profiles carry no request counter, so CPU is compared per host, not per request: \
                 a change of traffic per host between the two periods shows up as a change of CPU."
                    .to_string(),
            );
            None
        }
        _ => {
            notes.push("Only one side has a request count, so CPU is compared per host, not per request.".to_string());
            None
        }
    };

    // Per request: scale the request-normalised difference by the after side's request
    // rate per host, which makes it a per-host figure again.
    let (normalisation, diff) = match requests {
        Some((req_b, req_a)) => {
            let rate_after = req_a / e_after;
            let d = Difference::per_host(&t_before.scope, &t_after.scope, req_b, req_a);
            (
                Normalisation::PerRequest,
                Difference { per_host: d.per_host * rate_after, std_err: d.std_err * rate_after },
            )
        }
        None => (Normalisation::PerHost, Difference::per_host(&t_before.scope, &t_after.scope, e_before, e_after)),
    };

    let saved = estimate_cores(diff.per_host * fleet, inputs);
    let low = estimate_cores(diff.low() * fleet, inputs);
    let high = estimate_cores(diff.high() * fleet, inputs);
    let before_scope = match requests {
        Some((req_b, req_a)) => t_before.scope.seconds / req_b * req_a / e_after,
        None => t_before.scope.seconds / e_before,
    };
    let relative = if before_scope > 0.0 { diff.per_host / before_scope } else { 0.0 };

    for (name, t) in [("before", &t_before), ("after", &t_after)] {
        if t.scope.samples < FEW_SAMPLES {
            notes.push(format!(
                "The {name} side has only {} on-CPU samples in scope: the 95% range is a rough approximation; \
                 a longer range gives a firmer figure.",
                t.scope.samples
            ));
        }
    }
    if before.context.fleet_hosts != after.context.fleet_hosts {
        notes.push(format!(
            "The fleet went from {} to {} hosts; the saving is scaled to the after fleet.",
            before.context.fleet_hosts, after.context.fleet_hosts
        ));
    }

    let saving = Saving {
        cores: saved.cores,
        cores_low: low.cores,
        cores_high: high.cores,
        usd_per_year: saved.usd_per_year,
        usd_low: low.usd_per_year,
        usd_high: high.usd_per_year,
        kg_co2_per_year: saved.kg_co2_per_year,
        kg_co2_low: low.kg_co2_per_year,
        kg_co2_high: high.kg_co2_per_year,
        relative,
        confidence: 0.95,
        significant: diff.significant(),
        method: format!(
            "Samples are Poisson counts: the difference of the two {} rates has variance \
             Σn·p²/E² before + after (n samples of period p, E host-seconds{}); the 95% range is \
             difference ± 1.96·σ (normal approximation), scaled to {} fleet hosts and priced like the saving. \
             It covers sampling noise only, not changes of load between the periods.",
            match normalisation {
                Normalisation::PerHost => "per-host",
                Normalisation::PerRequest => "per-request",
            },
            match normalisation {
                Normalisation::PerHost => "",
                Normalisation::PerRequest => ", or requests when normalised per request",
            },
            after.context.fleet_hosts
        ),
    };

    let scope = match pattern {
        Some(p) => format!("stacks through frames matching {:?}", p.as_str()),
        None => "all on-CPU time of the service".to_string(),
    };

    Ok(WinFigures {
        before: side_figures(&before, &t_before, e_before),
        after: side_figures(&after, &t_after, e_after),
        normalisation,
        frame_pattern: pattern.map(|p| p.as_str().to_string()),
        scope,
        saving,
        frames: frame_changes(&t_before, &t_after, e_before, e_after, fleet, inputs, options.top_frames),
        cost: inputs.clone(),
        notes,
    })
}

fn frame_changes(
    before: &Tally,
    after: &Tally,
    e_before: f64,
    e_after: f64,
    fleet: f64,
    inputs: &CostInputs,
    top: usize,
) -> Vec<FrameChange> {
    let empty = FrameCpu::default();
    let mut names: Vec<&String> = before.frames.keys().chain(after.frames.keys()).collect();
    names.sort();
    names.dedup();
    let mut changes: Vec<FrameChange> = names
        .into_iter()
        .map(|name| {
            let b = before.frames.get(name).unwrap_or(&empty);
            let a = after.frames.get(name).unwrap_or(&empty);
            let total = Difference::per_host(&b.total_cpu, &a.total_cpu, e_before, e_after);
            let self_diff = Difference::per_host(&b.self_cpu, &a.self_cpu, e_before, e_after);
            FrameChange {
                name: name.clone(),
                self_before: b.self_cpu.seconds / e_before,
                self_after: a.self_cpu.seconds / e_after,
                total_before: b.total_cpu.seconds / e_before,
                total_after: a.total_cpu.seconds / e_after,
                self_saved_cores: self_diff.per_host * fleet,
                total_saved_cores: total.per_host * fleet,
                self_usd_per_year: estimate_cores(self_diff.per_host * fleet, inputs).usd_per_year,
                total_usd_per_year: estimate_cores(total.per_host * fleet, inputs).usd_per_year,
                significant: self_diff.significant(),
            }
        })
        .filter(|c| c.self_saved_cores != 0.0 || c.total_saved_cores != 0.0)
        .collect();
    // Self change first: the frame that did (or stopped doing) the work ranks above its
    // callers, whose totals moved by the same amount.
    changes.sort_by(|x, y| {
        y.self_saved_cores
            .abs()
            .total_cmp(&x.self_saved_cores.abs())
            .then(y.total_saved_cores.abs().total_cmp(&x.total_saved_cores.abs()))
            .then(x.name.cmp(&y.name))
    });
    changes.truncate(top);
    changes
}

/// An aggregate of stacks given by frame names (root first) with their sample counts,
/// all in `state` at `period_ns`: for tests, benchmarks and examples of this module.
pub fn aggregate_of(stacks: &[(&[&str], u64)], state: ThreadState, period_ns: u64) -> Aggregate {
    let mut agg = Aggregate { profiles: 1, ..Default::default() };
    let mut ids: HashMap<&str, u32> = HashMap::new();
    for (names, count) in stacks {
        let stack = names
            .iter()
            .map(|n| {
                *ids.entry(n).or_insert_with(|| {
                    agg.frames.push(n.to_string());
                    (agg.frames.len() - 1) as u32
                })
            })
            .collect();
        agg.stacks.push(stack);
        let stack = (agg.stacks.len() - 1) as u32;
        agg.samples.push(AggregateSample { stack, state, samples: *count, nanos: count * period_ns });
    }
    agg
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cost::CostSettings;

    fn aggregate(stacks: &[(&[&str], u64)], period_ns: u64) -> Aggregate {
        aggregate_of(stacks, ThreadState::Runnable, period_ns)
    }

    fn ctx(window: f64, hosts: u32) -> CostContext {
        let s = CostSettings { price_per_core_hour: Some(0.05), ..Default::default() };
        CostContext::new(s.resolve().unwrap(), window, hosts)
    }

    /// A Poisson draw (Knuth's method; fine for the means used here).
    fn poisson(rng: &mut fastrand::Rng, mean: f64) -> u64 {
        let limit = (-mean).exp();
        let (mut k, mut p) = (0u64, 1.0f64);
        loop {
            p *= rng.f64();
            if p <= limit {
                return k;
            }
            k += 1;
        }
    }

    /// The 95% range is calibrated: with equal true rates, about 5% of pairs of
    /// Poisson-sampled profiles are called significant; with a real 10% cut, nearly all.
    #[test]
    fn the_range_covers_sampling_noise_as_claimed() {
        let mut rng = fastrand::Rng::with_seed(7);
        let c = ctx(60.0, 1);
        let side = |rng: &mut fastrand::Rng, hot: f64| {
            aggregate(&[(&["main", "hot"], poisson(rng, hot)), (&["main", "cold"], poisson(rng, 300.0))], 10_000_000)
        };
        let trials = 400;
        let mut false_alarms = 0;
        let mut found = 0;
        for _ in 0..trials {
            let (b, a) = (side(&mut rng, 500.0), side(&mut rng, 500.0));
            let same = compute(
                Side { aggregate: &b, context: &c, requests: None },
                Side { aggregate: &a, context: &c, requests: None },
                None,
                &WinOptions::default(),
            )
            .unwrap();
            false_alarms += same.saving.significant as u32;
            let cut = side(&mut rng, 350.0);
            let real = compute(
                Side { aggregate: &b, context: &c, requests: None },
                Side { aggregate: &cut, context: &c, requests: None },
                None,
                &WinOptions::default(),
            )
            .unwrap();
            found += (real.saving.significant && real.saving.cores > 0.0) as u32;
        }
        // Binomial(400, 0.05): 20 expected, sd 4.4; outside [8, 36] means a wrong variance.
        assert!((8..=36).contains(&false_alarms), "{false_alarms} of {trials} equal pairs called significant");
        assert!(found >= trials * 95 / 100, "a 150-sample cut of 800 found only {found} of {trials} times");
    }

    #[test]
    fn pattern_substring_and_regex() {
        let p = FramePattern::parse("regex::").unwrap();
        assert!(p.matches("regex::Regex::new"));
        assert!(!p.matches("serde::de"));
        let r = FramePattern::parse("/^regex::Regex::new$/").unwrap();
        assert!(r.matches("regex::Regex::new"));
        assert!(!r.matches("x::regex::Regex::new"));
        assert!(matches!(FramePattern::parse("/(unclosed/"), Err(ReportError::BadPattern { .. })));
    }

    #[test]
    fn recursive_frames_count_once_in_total() {
        let agg = aggregate(&[(&["main", "f", "f", "f"], 10)], 10_000_000);
        let t = tally(&agg, None);
        assert_eq!(t.frames["f"].total_cpu.samples, 10);
        assert_eq!(t.frames["f"].self_cpu.samples, 10);
        assert_eq!(t.frames["main"].self_cpu.samples, 0);
    }

    #[test]
    fn off_cpu_samples_are_ignored() {
        let mut agg = aggregate(&[(&["main"], 10)], 10_000_000);
        agg.samples.push(AggregateSample {
            stack: 0,
            state: ThreadState::Waiting,
            samples: 1000,
            nanos: 1000 * 10_000_000,
        });
        let t = tally(&agg, None);
        assert_eq!(t.all.samples, 10);
    }

    #[test]
    fn equal_sides_are_not_significant() {
        let agg = aggregate(&[(&["main", "work"], 1000)], 10_000_000);
        let c = ctx(60.0, 1);
        let f = compute(
            Side { aggregate: &agg, context: &c, requests: None },
            Side { aggregate: &agg, context: &c, requests: None },
            None,
            &WinOptions::default(),
        )
        .unwrap();
        assert_eq!(f.saving.cores, 0.0);
        assert!(!f.saving.significant);
        assert!(f.saving.cores_low < 0.0 && f.saving.cores_high > 0.0);
        assert!(f.notes.iter().any(|n| n.contains("no request counter")));
    }

    #[test]
    fn per_request_uses_after_request_rate() {
        // Before: 100 CPU s for 1000 requests; after: 60 CPU s for 1200 requests, over
        // 100 s on one host. Per request: 0.1 s -> 0.05 s; after rate 12 req/s ->
        // saving 0.05 * 12 = 0.6 cores.
        let b = aggregate(&[(&["main"], 10_000)], 10_000_000);
        let a = aggregate(&[(&["main"], 6_000)], 10_000_000);
        let c = ctx(100.0, 1);
        let f = compute(
            Side { aggregate: &b, context: &c, requests: Some(1000) },
            Side { aggregate: &a, context: &c, requests: Some(1200) },
            None,
            &WinOptions::default(),
        )
        .unwrap();
        assert_eq!(f.normalisation, Normalisation::PerRequest);
        assert!((f.saving.cores - 0.6).abs() < 1e-9, "{}", f.saving.cores);
        assert!((f.before.cpu_ms_per_request.unwrap() - 100.0).abs() < 1e-9);
        assert!((f.saving.relative - 0.5).abs() < 1e-9);
    }

    #[test]
    fn empty_sides_are_refused() {
        let agg = aggregate(&[(&["main"], 10)], 10_000_000);
        let empty = Aggregate::default();
        let c = ctx(60.0, 1);
        let err = compute(
            Side { aggregate: &agg, context: &c, requests: None },
            Side { aggregate: &empty, context: &c, requests: None },
            None,
            &WinOptions::default(),
        )
        .unwrap_err();
        assert!(matches!(err, ReportError::NoSamples { side: "after" }));
        let zero = ctx(0.0, 1);
        let err = compute(
            Side { aggregate: &agg, context: &zero, requests: None },
            Side { aggregate: &agg, context: &c, requests: None },
            None,
            &WinOptions::default(),
        )
        .unwrap_err();
        assert!(matches!(err, ReportError::EmptyWindow { side: "before", .. }));
        let p = FramePattern::parse("nothing_like_this").unwrap();
        let err = compute(
            Side { aggregate: &agg, context: &c, requests: None },
            Side { aggregate: &agg, context: &c, requests: None },
            Some(&p),
            &WinOptions::default(),
        )
        .unwrap_err();
        assert!(matches!(err, ReportError::PatternMatchesNothing(_)));
    }
}
