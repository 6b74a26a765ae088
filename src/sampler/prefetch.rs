//! Frames handed to the symbolizer's worker ahead of `take_profiles`, in batches.
//!
//! In: each stack the first time a target's window counts it. Out: batches of frames
//! never sent before, to `Symbolizer::prefetch`. Must not: wait for the worker or name
//! anything itself; `take_profiles` resolves whatever is still missing.

use crate::symbolize::{RawFrame, Symbolizer};
use rustc_hash::FxHashSet;
use std::time::{Duration, Instant};

/// Longest a new frame waits before it goes to the symbolizer's worker (sooner when
/// `PREFETCH_BATCH` frames are waiting); `take_profiles` resolves whatever is left.
const PREFETCH_EVERY: Duration = Duration::from_secs(1);
const PREFETCH_BATCH: usize = 4096;

/// Distinct frames remembered by `Prefetch`; past this it forgets them all (and sends
/// frames again, which the symbolizer's cache answers), so memory stays bounded.
const MAX_PREFETCHED_FRAMES: usize = 1 << 20;

/// Frames to hand to the symbolizer's worker: each frame once in the sampler's life,
/// sent in one batch at most every `PREFETCH_EVERY` (a message per new stack woke the
/// worker for nothing but cache hits; and each blazesym call stats the module file,
/// which was a third of the worker's time with a batch per `poll`).
#[derive(Default)]
pub(super) struct Prefetch {
    seen: FxHashSet<RawFrame>,
    pending: Vec<RawFrame>,
    last_sent: Option<Instant>,
}

impl Prefetch {
    /// Queues the frames of `stack` not queued before.
    pub(super) fn add(&mut self, stack: &[RawFrame]) {
        if self.seen.len() > MAX_PREFETCHED_FRAMES {
            self.seen.clear();
        }
        for frame in stack {
            if self.seen.insert(*frame) {
                self.pending.push(*frame);
            }
        }
    }

    /// Sends the queued frames if a batch is due (time or size).
    pub(super) fn send(&mut self, symbolizer: &Symbolizer) {
        let now = Instant::now();
        let due = self.last_sent.is_none_or(|t| now.duration_since(t) >= PREFETCH_EVERY);
        if due || self.pending.len() >= PREFETCH_BATCH {
            self.flush(symbolizer);
        }
    }

    /// Sends the queued frames now.
    pub(super) fn flush(&mut self, symbolizer: &Symbolizer) {
        if !self.pending.is_empty() {
            symbolizer.prefetch(std::mem::take(&mut self.pending));
            self.last_sent = Some(Instant::now());
        }
    }

    /// Frames are queued, not sent yet.
    pub(super) fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }
}
