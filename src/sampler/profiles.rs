//! What a target's window counts, and the `model::Profile` built from it.
//!
//! In: stacks with their observed state, counted as they are sampled or accounted. Out:
//! at `take_profiles`, one profile per target over `[last take, now)` with names from the
//! symbolizer and each state resolved against those names. Must not: read /proc or perf
//! events; the counts come in already weighed.

use super::prefetch::Prefetch;
use super::selection::ProcessTag;
use super::state::Observed;
use super::{SamplerStats, Stack, Target};
use crate::model::{Profile, ProfileBuilder};
use crate::symbolize::{RawFrame, Symbolizer};
use rustc_hash::FxHashMap;
use std::collections::hash_map::Entry;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Samples by stack and observed state.
type Counts = FxHashMap<(Stack, Observed), u64>;

/// Samples of one target's current window, by stack and observed state. Fx hashing: this
/// map is hit once per sample, and SipHash over a whole stack showed in the agent's
/// profile.
#[derive(Default)]
pub(super) struct StackCounts(Counts);

impl StackCounts {
    /// Samples counted, every stack and state.
    #[cfg(test)]
    pub(super) fn total(&self) -> u64 {
        self.0.values().sum()
    }

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

/// The profiles of every target's window up to `now_ms` (at least one millisecond long),
/// with labels `pid`, `process` (comm) and `exe`; each next window starts where this one
/// ends. A target that was followed and exited within this window is merged with the
/// others of its parent target (or, with none, of its program) that did the same, into
/// one profile labelled with the parent's pid: a fork-per-connection server gives one
/// profile per program per window, not one per connection. A target with a tag (`--all`)
/// goes to the tag's service with its labels; targets of different tags never merge.
pub(super) fn take_profiles(
    targets: &mut FxHashMap<u32, Target>,
    service: &str,
    now_ms: i64,
    period_ns: u64,
    symbolizer: &Symbolizer,
) -> Vec<Profile> {
    let short_lived = |t: &Target| t.exited && t.new_in_window;
    // (label pid, comm, exe, tag) -> (window start, counts)
    type Tag = Option<Arc<ProcessTag>>;
    let mut groups: BTreeMap<(u32, String, String, Tag), (i64, Counts)> = BTreeMap::new();
    let mut first_pid_of_program: BTreeMap<(String, String, Tag), u32> = BTreeMap::new();
    let mut pids: Vec<u32> = targets.keys().copied().collect();
    pids.sort_unstable();
    for pid in pids {
        let label_pid = if targets.get(&pid).is_some_and(short_lived) {
            // The nearest ancestor that is a target with a life of its own.
            let mut current = pid;
            let mut found = None;
            for _ in 0..64 {
                let Some(parent) = targets.get(&current).map(|t| t.parent) else { break };
                match targets.get(&parent) {
                    Some(p) if !short_lived(p) => {
                        found = Some(parent);
                        break;
                    }
                    Some(_) => current = parent,
                    None => break,
                }
            }
            found.unwrap_or(pid)
        } else {
            pid
        };
        let Some(target) = targets.get_mut(&pid) else { continue };
        let counts = name_late_jit_frames(std::mem::take(&mut target.counts).0, &target.image, symbolizer);
        let start = target.window_start_ms;
        target.window_start_ms = now_ms.max(start + 1);
        // A short-lived process without a target parent is grouped by program, under the
        // first pid seen.
        let key_pid = if label_pid == pid && short_lived(target) { 0 } else { label_pid };
        let entry = groups
            .entry((key_pid, target.comm.clone(), target.exe.clone(), target.tag.clone()))
            .or_insert_with(|| (start, FxHashMap::default()));
        entry.0 = entry.0.min(start);
        for (key, n) in counts {
            *entry.1.entry(key).or_insert(0) += n;
        }
        if key_pid == 0 {
            first_pid_of_program.entry((target.comm.clone(), target.exe.clone(), target.tag.clone())).or_insert(pid);
        }
    }
    let mut out = Vec::with_capacity(groups.len());
    for ((key_pid, comm, exe, tag), (start, counts)) in groups {
        let pid = if key_pid == 0 {
            first_pid_of_program.get(&(comm.clone(), exe.clone(), tag.clone())).copied().unwrap_or(0)
        } else {
            key_pid
        };
        let mut profile = build_profile(pid, &comm, &exe, counts, service, start, now_ms, period_ns, symbolizer);
        if let Some(tag) = tag {
            profile.service = tag.service.clone();
            profile.labels.extend(tag.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        out.push(profile);
    }
    out
}

/// The counts with frames of run-time generated code that had no name when sampled (a
/// JVM's perf map is written after attach; a sleeping thread's stack is walked once)
/// named from the process's perf map as it is now.
fn name_late_jit_frames(counts: Counts, image: &super::SharedImage, symbolizer: &Symbolizer) -> Counts {
    if !counts.keys().any(|(stack, _)| stack.iter().any(|f| matches!(f, RawFrame::Unknown(_)))) {
        return counts;
    }
    let mut image = image.lock().unwrap_or_else(|e| e.into_inner());
    let mut out = Counts::default();
    for ((stack, state), n) in counts {
        let stack = if stack.iter().any(|f| matches!(f, RawFrame::Unknown(_))) {
            stack.iter().map(|f| image.late_frame(*f, symbolizer)).collect()
        } else {
            stack
        };
        *out.entry((stack, state)).or_insert(0) += n;
    }
    out
}

/// One profile over `[start, end)` from counted stacks, names resolved now.
#[allow(clippy::too_many_arguments)]
fn build_profile(
    pid: u32,
    comm: &str,
    exe: &str,
    counts: Counts,
    service: &str,
    start: i64,
    now_ms: i64,
    period_ns: u64,
    symbolizer: &Symbolizer,
) -> Profile {
    let end = now_ms.max(start + 1);
    let frames: Vec<RawFrame> = counts.keys().flat_map(|(s, _)| s.iter().copied()).collect();
    symbolizer.resolve(&frames);
    let mut builder = ProfileBuilder::new(service, start, end, period_ns)
        .label("pid", &pid.to_string())
        .label("process", comm)
        .label("exe", exe);
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
