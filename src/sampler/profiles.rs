//! What a target's window counts, and the `model::Profile` built from it.
//!
//! In: stacks with their observed state, counted as they are sampled or accounted. Out:
//! at `take_profiles`, one profile per target over `[last take, now)` with names from the
//! symbolizer and each state resolved against those names. Must not: read /proc or perf
//! events; the counts come in already weighed.

use super::prefetch::Prefetch;
use super::state::Observed;
use super::{SamplerStats, Stack, Target};
use crate::model::{Profile, ProfileBuilder};
use crate::symbolize::{RawFrame, Symbolizer};
use rustc_hash::FxHashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;

/// Samples of one target's current window, by stack and observed state. Fx hashing: this
/// map is hit once per sample, and SipHash over a whole stack showed in the agent's
/// profile.
#[derive(Default)]
pub(super) struct StackCounts(FxHashMap<(Stack, Observed), u64>);

impl StackCounts {
    /// Adds `n` samples; a stack seen for the first time in this window is handed to the
    /// symbolizer's worker, so names are ready by `take_profiles`.
    pub(super) fn add(&mut self, prefetch: &mut Prefetch, stack: &Stack, state: Observed, n: u64) {
        match self.0.entry((stack.clone(), state)) {
            Entry::Occupied(mut e) => *e.get_mut() += n,
            Entry::Vacant(e) => {
                prefetch.add(stack);
                e.insert(n);
            }
        }
    }
}

/// Where a thread's samples go: its target's counts, the prefetch for stacks new to
/// them, and the sampler's counters.
pub(super) struct Tally<'a> {
    /// The target's window.
    pub(super) counts: &'a mut StackCounts,
    /// The sampler's symbolizer prefetch.
    pub(super) prefetch: &'a mut Prefetch,
    /// The sampler's counters.
    pub(super) stats: &'a mut SamplerStats,
}

impl Tally<'_> {
    /// Adds `n` samples of `stack` in `state`.
    pub(super) fn add(&mut self, stack: &Stack, state: Observed, n: u64) {
        self.counts.add(self.prefetch, stack, state, n);
    }
}

/// The profile of `target`'s window up to `now_ms` (at least one millisecond long), with
/// labels `pid`, `process` (comm) and `exe`; the next window starts where this one ends.
pub(super) fn take_profile(
    pid: u32,
    target: &mut Target,
    service: &str,
    now_ms: i64,
    period_ns: u64,
    symbolizer: &Symbolizer,
) -> Profile {
    let counts = std::mem::take(&mut target.counts).0;
    let start = target.window_start_ms;
    let end = now_ms.max(start + 1);
    target.window_start_ms = end;
    let frames: Vec<RawFrame> = counts.keys().flat_map(|(s, _)| s.iter().copied()).collect();
    symbolizer.resolve(&frames);
    let mut builder = ProfileBuilder::new(service, start, end, period_ns)
        .label("pid", &pid.to_string())
        .label("process", &target.comm)
        .label("exe", &target.exe);
    let mut names: Vec<Arc<str>> = Vec::new();
    for ((stack, state), count) in counts {
        names.clear();
        for frame in stack.iter().rev() {
            names.extend(symbolizer.names(*frame).iter().cloned());
        }
        builder.add(&names, state.resolve(&names), count);
    }
    builder.finish()
}
