//! `Aggregate`: the profiles of a query merged into one set of stacks, with the wall time
//! they cover per host; and its conversion back to one `Profile` for export and for
//! drawing (folded, pprof, SVG).
//!
//! In: what a store's query merged (frames, stacks, per (stack, state) samples and
//! thread time, the profiles' windows per host). Out: `Aggregate` and `Profile`. Must
//! not: do I/O or know prices (the cost formula and its window `W` live in src/cost,
//! see docs/cost.md).

use super::coverage::Coverage;
use super::pprof::DEFAULT_PERIOD_NS;
use super::profile::{Profile, Sample};
use super::state::ThreadState;
use serde::{Deserialize, Serialize};

/// One merged (stack, state) of an aggregate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AggregateSample {
    /// Index into `Aggregate::stacks`.
    pub stack: u32,
    /// Thread state.
    pub state: ThreadState,
    /// Number of samples.
    pub samples: u64,
    /// Thread time they stand for: sum of samples x sampling period, in ns.
    pub nanos: u64,
}

/// Profiles of a query merged into one set of stacks.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Aggregate {
    /// Frame names.
    pub frames: Vec<String>,
    /// Stacks as frame indices, root first.
    pub stacks: Vec<Vec<u32>>,
    /// At most one entry per (stack, state).
    pub samples: Vec<AggregateSample>,
    /// Profiles merged (raw profiles, or the profiles a rollup stands for).
    pub profiles: u64,
    /// Wall time the merged profiles cover, per `host` label (profiles without one
    /// count as one host): the union of their windows, not the sum.
    pub coverage: Coverage,
    /// Start of the earliest merged profile, Unix ms (0 when empty).
    pub first_ms: i64,
    /// End of the latest merged profile, Unix ms (0 when empty).
    pub last_ms: i64,
}

impl Aggregate {
    /// RUNNABLE thread seconds of the merged samples.
    pub fn cpu_seconds(&self) -> f64 {
        self.samples.iter().filter(|s| s.state.is_cpu()).map(|s| s.nanos as f64).sum::<f64>() / 1e9
    }

    /// The aggregate as one `Profile` over `[from_ms, until_ms)`, restricted to `states`
    /// (all when empty), with sample counts as counts: for folded/pprof/svg export. The
    /// sampling period is the mean period of the selected samples.
    pub fn to_profile(&self, service: &str, states: &[ThreadState], from_ms: i64, until_ms: i64) -> Profile {
        self.to_profile_counting(service, states, from_ms, until_ms, |s| s.samples)
    }

    /// Like `to_profile`, with each entry counted as `count(entry)` (e.g. thread time in
    /// a common unit, so that two aggregates of different windows draw alike); entries
    /// counted 0 are left out.
    pub fn to_profile_counting(
        &self,
        service: &str,
        states: &[ThreadState],
        from_ms: i64,
        until_ms: i64,
        count: impl Fn(&AggregateSample) -> u64,
    ) -> Profile {
        let selected = self.samples.iter().filter(|s| states.is_empty() || states.contains(&s.state));
        let (samples, nanos) = selected.clone().fold((0u64, 0u128), |(c, n), s| (c + s.samples, n + s.nanos as u128));
        let period_ns = if samples > 0 && nanos > 0 {
            ((nanos + samples as u128 / 2) / samples as u128).max(1) as u64
        } else {
            DEFAULT_PERIOD_NS
        };
        let mut profile = Profile::empty(service, from_ms, until_ms.max(from_ms + 1), period_ns);
        profile.frames = self.frames.clone();
        profile.stacks = self.stacks.clone();
        profile.samples = selected
            .map(|s| Sample { stack: s.stack, state: s.state, count: count(s) })
            .filter(|s| s.count > 0)
            .collect();
        profile
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_profile_keeps_selected_states() {
        use ThreadState::*;
        let a = Aggregate {
            frames: vec!["a".into(), "b".into(), "c".into()],
            stacks: vec![vec![0, 1], vec![0, 2]],
            samples: vec![
                AggregateSample { stack: 0, state: Runnable, samples: 3, nanos: 30_000_000 },
                AggregateSample { stack: 1, state: Waiting, samples: 4, nanos: 40_000_000 },
            ],
            ..Default::default()
        };
        let p = a.to_profile("svc", &[Runnable], 0, 1000);
        assert_eq!(p.total_samples(), 3);
        assert_eq!(p.period_ns, 10_000_000);
        assert_eq!(crate::model::folded::to_folded(&p, &[]), "a;b 3\n");
        let weighted = a.to_profile_counting("svc", &[], 0, 1000, |s| s.nanos / 1_000_000);
        assert_eq!(crate::model::folded::to_folded(&weighted, &[]), "a;b 30\na;c 40\n");
    }
}
