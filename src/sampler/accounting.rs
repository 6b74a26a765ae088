//! Per-thread time accounting at wall-clock ticks (docs/thread-states.md, "Where samples
//! come from" and "What a tick reads").
//!
//! In: a thread's schedstat at each tick, and, when the tick's budget allows, an
//! observation of it off CPU (/proc state and syscall, its stack read and unwound). Out:
//! off-CPU samples in its process's counts that add up to the time it spent neither on a
//! CPU nor waiting for one (and run-queue samples with `runqueue`), and on-CPU samples
//! in the amount schedstat's CPU time gives, over the stacks the per-CPU events sampled. Must not: open events, decide
//! when ticks happen or which threads are observed (the `Sampler` does).

use super::procfs::{SchedStat, Syscall, ThreadFiles};
use super::profiles::Tally;
use super::stacks::StackWalker;
use super::state::{self, Observed};
use super::unwind::ProcessImage;
use super::Stack;
use crate::model::ThreadState;
use crate::symbolize::Symbolizer;
use std::time::{Duration, Instant};

/// On-CPU and run-queue samples.
pub(super) const RUNNABLE: Observed = Observed { state: ThreadState::Runnable, lock_check: false };

/// Off-CPU time kept for a thread never seen off-CPU yet (it goes to its first
/// off-CPU observation); more is dropped.
const MAX_OFF_CARRY_NS: u64 = 1_000_000_000;

/// A thread that ran since its last observation keeps its off-CPU time for the next one
/// (which sees where it sleeps now) at most this long; past it, the time goes to the last
/// observation, so a budget that cannot keep up delays states but never loses time.
const MAX_STALE: Duration = Duration::from_secs(1);

/// On-CPU stacks held per thread between ticks (a tick comes at least every second, 99
/// samples at 99 Hz); past this they are counted directly.
const MAX_RECENT: usize = 1024;

/// Bound of a thread's on-CPU balance (schedstat CPU time not yet turned into samples)
/// either way: a thread never sampled on a CPU keeps at most this much for when it is.
const MAX_ONCPU_BALANCE_NS: i64 = 1_000_000_000;

/// One tick: when it is, and what holds for every thread it accounts.
#[derive(Debug, Clone, Copy)]
pub(super) struct Tick {
    /// The moment accounted up to.
    pub(super) now: Instant,
    /// The sampling period.
    pub(super) period_ns: u64,
    /// `SamplerOptions::runqueue`.
    pub(super) runqueue: bool,
}

/// Off-CPU state and stack of a thread, valid until it runs again.
#[derive(Clone)]
struct OffCpu {
    stack: Stack,
    state: Observed,
    /// The syscall (with sp/pc) the stack was unwound from: the same again means the same
    /// place (a worker loop going back to sleep), so the stack is reused.
    syscall: Syscall,
    /// The walk reached the thread's root.
    rooted: bool,
}

/// What an observation found.
pub(super) enum Seen {
    /// Off CPU, observed (possibly reusing the previous stack).
    Observed,
    /// On a CPU or runnable now: nothing to observe.
    Running,
    /// The thread moved between the reads twice: nothing consistent to keep.
    Inconsistent,
    /// Its memory cannot be read (ptrace access denied).
    Unreadable,
    /// The thread is gone.
    Gone,
}

/// A thread's time between ticks: what was counted, what is carried to the next tick,
/// and what it was last seen doing.
pub(super) struct ThreadClock {
    /// Schedstat at the last tick.
    sched: SchedStat,
    /// When the thread was last accounted at a tick.
    accounted_at: Instant,
    /// The last off-CPU observation.
    offcpu: Option<OffCpu>,
    /// It ran since `offcpu` was observed (since when), so that may be out of date.
    stale_since: Option<Instant>,
    /// Off-CPU time not yet turned into samples.
    off_carry_ns: u64,
    /// Run-queue time already counted as off-CPU (negative or zero).
    off_debt_ns: i64,
    /// The stack the per-CPU event sampled last.
    last_oncpu: Option<Stack>,
    /// On-CPU stacks sampled since the last tick, not counted yet: the tick counts as
    /// many samples as schedstat's CPU time gives, spread over them.
    recent_oncpu: Vec<Stack>,
    /// On-CPU samples counted directly since the last tick (`recent_oncpu` full).
    sampled_since_sched: u64,
    /// CPU time (schedstat) not yet turned into samples; negative when more was counted
    /// directly than schedstat has seen yet.
    oncpu_balance_ns: i64,
    /// Run-queue time not yet turned into samples.
    runq_carry_ns: u64,
}

impl ThreadClock {
    /// A clock starting `now` from the thread's current schedstat.
    pub(super) fn new(sched: SchedStat, now: Instant) -> ThreadClock {
        ThreadClock {
            sched,
            accounted_at: now,
            offcpu: None,
            stale_since: Some(now),
            off_carry_ns: 0,
            off_debt_ns: 0,
            last_oncpu: None,
            recent_oncpu: Vec::new(),
            sampled_since_sched: 0,
            oncpu_balance_ns: 0,
            runq_carry_ns: 0,
        }
    }

    /// The per-CPU event sampled the thread on `stack`: it waits for the next tick,
    /// which counts it in the amount schedstat gives (or counts now when too many wait).
    pub(super) fn sampled(&mut self, stack: &Stack, tally: &mut Tally<'_>) {
        if self.recent_oncpu.len() < MAX_RECENT {
            self.recent_oncpu.push(stack.clone());
        } else {
            tally.add(stack, RUNNABLE, 1);
            self.sampled_since_sched += 1;
        }
        self.last_oncpu = Some(stack.clone());
    }

    /// The thread is gone: its on-CPU stacks not counted yet count once each (no
    /// schedstat to weigh them any more), and so does the CPU time schedstat gave at
    /// earlier ticks that no sample counted yet (under a period at each tick, carried):
    /// whole periods as samples, the fraction as one sample with that probability, so
    /// that the count is right on average. Left out, that carry cost every thread half a
    /// period on average: 26% of the CPU of `sh -c` children living a few ticks.
    pub(super) fn flush(&self, period_ns: u64, tally: &mut Tally<'_>) {
        for stack in &self.recent_oncpu {
            tally.add(stack, RUNNABLE, 1);
        }
        let carry = self.oncpu_balance_ns.max(0) as u64;
        let period_ns = period_ns.max(1);
        let chance = (carry % period_ns) as f64 / period_ns as f64;
        let n = carry / period_ns + u64::from(fastrand::f64() < chance);
        if n > 0 && self.spread_recent(n, tally) {
            tally.stats.oncpu_topup_samples += n;
        }
    }

    /// On CPU: as many samples as schedstat's exact CPU time gives, spread over the
    /// stacks the per-CPU event sampled since the last tick. The event's count is a
    /// statistical sample of the same time, exact on average, but records lost to a
    /// full ring (a stalled reader) would undercount; its stacks still say where the
    /// time went.
    fn count_oncpu(&mut self, cpu_ns: i64, period_ns: u64, tally: &mut Tally<'_>) {
        let direct_ns = std::mem::take(&mut self.sampled_since_sched).saturating_mul(period_ns) as i64;
        self.oncpu_balance_ns =
            (self.oncpu_balance_ns + cpu_ns - direct_ns).clamp(-MAX_ONCPU_BALANCE_NS, MAX_ONCPU_BALANCE_NS);
        let due = self.oncpu_balance_ns.max(0) as u64 / period_ns;
        let sampled = self.recent_oncpu.len() as u64;
        if due > 0 && self.spread_recent(due, tally) {
            self.oncpu_balance_ns -= (due * period_ns) as i64;
            tally.stats.oncpu_topup_samples += due.saturating_sub(sampled);
            tally.stats.oncpu_dropped_samples += sampled.saturating_sub(due);
        } else {
            tally.stats.oncpu_dropped_samples += sampled;
        }
    }

    /// Counts `n` RUNNABLE samples spread evenly over the stacks the thread was sampled
    /// on since the last tick, else on its last on-CPU stack. False when it was never
    /// sampled on a CPU (nothing counted).
    fn spread_recent(&self, n: u64, tally: &mut Tally<'_>) -> bool {
        let recent = &self.recent_oncpu;
        if !recent.is_empty() {
            let len = recent.len() as u64;
            for i in 0..n {
                tally.add(&recent[(i * len / n) as usize], RUNNABLE, 1);
            }
            true
        } else if let Some(stack) = &self.last_oncpu {
            tally.add(stack, RUNNABLE, n);
            true
        } else {
            false
        }
    }

    /// Whether the last observation may be out of date (it ran since, or there is none),
    /// and since when: the tick observes the oldest first.
    pub(super) fn stale_since(&self) -> Option<Instant> {
        self.stale_since
    }

    /// Whether at least a quarter period of off-CPU time waits to be attributed (an
    /// observation would place it; less is the jitter of a thread that only runs).
    pub(super) fn has_offcpu_time(&self, period_ns: u64) -> bool {
        self.off_carry_ns >= period_ns / 4
    }

    /// The time since the last tick, split with schedstat: CPU time (sampled by the
    /// per-CPU events, not counted here), run-queue delay (RUNNABLE with `runqueue`) and
    /// the rest, off CPU, carried until an observation says where it went.
    pub(super) fn split(&mut self, sched: SchedStat, tick: Tick, tally: &mut Tally<'_>) {
        let elapsed = tick.now.saturating_duration_since(self.accounted_at).as_nanos() as i64;
        self.accounted_at = tick.now;
        let cpu = sched.cpu_ns.saturating_sub(self.sched.cpu_ns) as i64;
        let waited = sched.run_delay_ns.saturating_sub(self.sched.run_delay_ns) as i64;
        let ran = sched.slices != self.sched.slices || cpu > 0;
        self.sched = sched;
        self.count_oncpu(cpu, tick.period_ns, tally);
        self.count_runqueue(waited, tick, tally);
        self.recent_oncpu.clear();
        self.add_offcpu_time(elapsed - cpu - waited);
        if ran && self.stale_since.is_none() {
            self.stale_since = Some(tick.now);
        }
    }

    /// Waiting for a CPU (counted only with `runqueue`): spread over the stacks it was
    /// sampled on since the last tick, so it keeps the on-CPU proportions instead of
    /// piling on one stack.
    fn count_runqueue(&mut self, waited_ns: i64, tick: Tick, tally: &mut Tally<'_>) {
        if !tick.runqueue {
            return;
        }
        self.runq_carry_ns += waited_ns.max(0) as u64;
        let n = self.runq_carry_ns / tick.period_ns;
        if n == 0 {
            return;
        }
        if self.spread_recent(n, tally) {
            tally.stats.runqueue_samples += n;
        }
        self.runq_carry_ns -= n * tick.period_ns;
    }

    /// Adds off-CPU time to the carry. Time a thread spent woken but waiting for a CPU
    /// shows in its run delay only once it ran, after ticks that counted it off-CPU: such
    /// overlap comes back as a negative `off_ns` and is kept as a debt that later off-CPU
    /// time pays first, so nothing is counted twice.
    fn add_offcpu_time(&mut self, off_ns: i64) {
        let off = off_ns + self.off_debt_ns;
        self.off_debt_ns = off.min(0);
        self.off_carry_ns += off.max(0) as u64;
    }

    /// Turns carried off-CPU time into samples of the last observation, unless that is
    /// out of date and a newer one may still come (`settle` false, not stale too long).
    pub(super) fn count_offcpu(&mut self, tick: Tick, settle: bool, tally: &mut Tally<'_>) {
        let Some(offcpu) = &self.offcpu else {
            // Never seen off-CPU yet: keep a little for its first observation.
            self.off_carry_ns = self.off_carry_ns.min(MAX_OFF_CARRY_NS);
            return;
        };
        let waiting = self.stale_since.is_some_and(|t| tick.now.saturating_duration_since(t) < MAX_STALE);
        if waiting && !settle {
            return;
        }
        let samples = self.off_carry_ns / tick.period_ns;
        if samples > 0 {
            tally.add(&offcpu.stack, offcpu.state, samples);
            tally.stats.offcpu_samples += samples;
            if offcpu.rooted {
                tally.stats.offcpu_rooted_samples += samples;
            }
            self.off_carry_ns -= samples * tick.period_ns;
        }
    }

    /// Observes the thread off CPU: its state and syscall from /proc, its stack read and
    /// unwound (or the last one, if it sleeps at the same place). The stack is read
    /// between two schedstat reads: if the thread ran in between, the registers and the
    /// memory may belong to different moments (a leaf of one sleep on the callers of
    /// another), so it is read again, once.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn observe(
        &mut self,
        files: &mut ThreadFiles,
        pid: u32,
        image: &mut ProcessImage,
        walker: &mut StackWalker,
        symbolizer: &Symbolizer,
        tally: &mut Tally<'_>,
    ) -> Seen {
        for _attempt in 0..2 {
            let Ok(before) = files.schedstat() else { return Seen::Gone };
            let Ok(syscall) = files.syscall() else { return Seen::Gone };
            let Some(sp_pc) = syscall.sp_pc() else { return Seen::Running };
            let letter = match files.state() {
                Ok(letter) => letter,
                Err(_) => return Seen::Gone,
            };
            if matches!(letter, 'Z' | 'X' | 'x') {
                return Seen::Gone;
            }
            let Some(state) = state::observe(letter, &syscall) else { return Seen::Running };
            let reuse = self.offcpu.as_ref().filter(|o| o.syscall == syscall).map(|o| (o.stack.clone(), o.rooted));
            let (stack, rooted) = match reuse {
                Some(found) => found,
                None => match walker.offcpu_stack((pid, files.tid()), sp_pc, image, symbolizer, tally.stats) {
                    Ok(found) => found,
                    Err(e) if e.raw_os_error() == Some(libc::EPERM) => return Seen::Unreadable,
                    Err(_) => return Seen::Gone,
                },
            };
            let Ok(after) = files.schedstat() else { return Seen::Gone };
            if after.slices != before.slices {
                continue;
            }
            self.offcpu = Some(OffCpu { stack, state, syscall, rooted });
            self.stale_since = None;
            return Seen::Observed;
        }
        tally.stats.inconsistent_reads += 1;
        Seen::Inconsistent
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampler::prefetch::Prefetch;
    use crate::sampler::profiles::StackCounts;
    use crate::sampler::SamplerStats;
    use crate::symbolize::RawFrame;
    use std::sync::Arc;

    #[test]
    fn cpu_carried_under_a_period_counts_when_the_thread_exits() {
        // 2,000 short-lived threads, each sampled once and using 4 ms of CPU (under one
        // 10 ms period) before its only tick, then gone: 0.4 samples each on average.
        let period_ns = 10_000_000;
        let (mut counts, mut prefetch, mut stats) =
            (StackCounts::default(), Prefetch::default(), SamplerStats::default());
        let stack: Stack = Arc::from(vec![RawFrame::Unknown(0x1234)]);
        let start = Instant::now();
        for _ in 0..2000 {
            let mut tally = Tally { counts: &mut counts, prefetch: &mut prefetch, stats: &mut stats };
            let mut clock = ThreadClock::new(SchedStat::default(), start);
            clock.sampled(&stack, &mut tally);
            let tick = Tick { now: start + Duration::from_millis(10), period_ns, runqueue: false };
            clock.split(SchedStat { cpu_ns: 4_000_000, run_delay_ns: 0, slices: 1 }, tick, &mut tally);
            clock.flush(period_ns, &mut tally);
        }
        // Expected 800, standard deviation about 22.
        let counted = counts.total();
        assert!((720..=880).contains(&counted), "{counted} samples for 2,000 x 0.4 periods of CPU");
    }

    #[test]
    fn run_queue_overlap_is_a_debt_that_later_off_cpu_time_pays_first() {
        let mut clock = ThreadClock::new(SchedStat::default(), Instant::now());
        clock.add_offcpu_time(10);
        assert_eq!((clock.off_carry_ns, clock.off_debt_ns), (10, 0));
        clock.add_offcpu_time(-25);
        assert_eq!((clock.off_carry_ns, clock.off_debt_ns), (10, -25));
        clock.add_offcpu_time(15);
        assert_eq!((clock.off_carry_ns, clock.off_debt_ns), (10, -10));
        clock.add_offcpu_time(30);
        assert_eq!((clock.off_carry_ns, clock.off_debt_ns), (30, 0));
    }
}
