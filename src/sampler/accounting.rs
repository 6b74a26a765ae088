//! Per-thread time accounting at wall-clock ticks (docs/thread-states.md, "Where samples
//! come from" and "What a tick reads").
//!
//! In: a thread's schedstat, its last sched_switch record, /proc syscall and state, and
//! the on-CPU stacks perf sampled since its last tick. Out: samples in its target's
//! counts that add up to the time that passed: RUNNABLE for CPU time (and run-queue
//! delay with `runqueue`), the observed off-CPU state and stack for the rest. Must not:
//! open or close events, or decide when ticks happen (the `Sampler` does).

use super::drain::SwitchRecords;
use super::perf::SwitchOut;
use super::procfs::{SchedStat, Syscall, ThreadFiles};
use super::profiles::Tally;
use super::stacks::StackWalker;
use super::state::{self, Observed};
use super::unwind::ProcessImage;
use super::{Stack, Thread};
use crate::model::ThreadState;
use crate::symbolize::Symbolizer;
use std::time::Instant;

/// On-CPU and run-queue samples.
pub(super) const RUNNABLE: Observed = Observed { state: ThreadState::Runnable, lock_check: false };

/// Off-CPU time kept for a thread never seen off-CPU yet (it goes to its first
/// off-CPU observation); more is dropped.
const MAX_OFF_CARRY_NS: u64 = 1_000_000_000;

/// On-CPU stacks held per thread between ticks (a tick comes at least every 500 ms, 50
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
    /// What the stack was unwound from: syscall (with sp/pc) and frame pointer. The same
    /// again means the same place (a worker loop going back to sleep), so the stack is
    /// reused without reading memory or unwinding.
    key: (Syscall, u64),
}

/// A thread's time between ticks: what was counted, what is carried to the next tick,
/// and what it was last seen doing.
pub(super) struct ThreadClock {
    /// Schedstat at the last tick that read it.
    sched: SchedStat,
    /// When the thread was last accounted at a tick.
    accounted_at: Instant,
    /// The last off-CPU observation.
    offcpu: Option<OffCpu>,
    /// Whether `offcpu` still holds (the thread has not run since).
    offcpu_valid: bool,
    /// Off-CPU time not yet turned into samples.
    off_carry_ns: u64,
    /// Run-queue time already counted as off-CPU (negative or zero).
    off_debt_ns: i64,
    /// A sched_switch record or an on-CPU sample arrived since the last tick.
    active: bool,
    /// A sched_switch record arrived since the last tick.
    switched: bool,
    /// The stack perf sampled last.
    last_oncpu: Option<Stack>,
    /// Wall-clock mode: on-CPU stacks sampled since the last tick, not counted yet; the
    /// tick counts as many samples as schedstat's CPU time gives, spread over them.
    recent_oncpu: Vec<Stack>,
    /// Run-queue time not yet turned into samples.
    runq_carry_ns: u64,
    /// On-CPU samples counted directly since the last tick that read schedstat
    /// (`recent_oncpu` full).
    sampled_since_sched: u64,
    /// CPU time (schedstat) not yet turned into samples; negative when more was counted
    /// directly than schedstat has seen yet.
    oncpu_balance_ns: i64,
}

impl ThreadClock {
    /// A clock starting `now` from the thread's current schedstat.
    pub(super) fn new(sched: SchedStat, now: Instant) -> ThreadClock {
        ThreadClock {
            sched,
            accounted_at: now,
            offcpu: None,
            offcpu_valid: false,
            off_carry_ns: 0,
            off_debt_ns: 0,
            active: true,
            switched: false,
            last_oncpu: None,
            recent_oncpu: Vec::new(),
            runq_carry_ns: 0,
            sampled_since_sched: 0,
            oncpu_balance_ns: 0,
        }
    }

    /// A sched_switch record arrived: the thread left a CPU since the last tick.
    pub(super) fn switched_out(&mut self) {
        self.active = true;
        self.switched = true;
    }

    /// An on-CPU stack perf sampled. In wall-clock mode it waits for the next tick, which
    /// counts it in the amount schedstat gives; else (or when too many wait) it counts now.
    pub(super) fn sampled(&mut self, stack: &Stack, wall_clock: bool, tally: &mut Tally<'_>) {
        if wall_clock && self.recent_oncpu.len() < MAX_RECENT {
            self.recent_oncpu.push(stack.clone());
        } else {
            tally.add(stack, RUNNABLE, 1);
            self.sampled_since_sched += 1;
        }
    }

    /// The thread ran, last on `stack`: whatever it was waiting for is over.
    pub(super) fn ran_on(&mut self, stack: Stack) {
        self.active = true;
        self.last_oncpu = Some(stack);
        self.offcpu_valid = false;
    }

    /// The thread is gone: its on-CPU stacks not counted yet count once each (no
    /// schedstat to weigh them any more).
    pub(super) fn flush(&self, tally: &mut Tally<'_>) {
        for stack in &self.recent_oncpu {
            tally.add(stack, RUNNABLE, 1);
        }
    }

    /// Nanoseconds since the last tick, which becomes `now`.
    fn advance(&mut self, now: Instant) -> i64 {
        let elapsed = now.saturating_duration_since(self.accounted_at).as_nanos() as i64;
        self.accounted_at = now;
        elapsed
    }

    /// CPU time and run-queue delay since the last schedstat read.
    fn sched_delta(&mut self, sched: SchedStat) -> (i64, i64) {
        let cpu = sched.cpu_ns.saturating_sub(self.sched.cpu_ns) as i64;
        let waited = sched.run_delay_ns.saturating_sub(self.sched.run_delay_ns) as i64;
        self.sched = sched;
        (cpu, waited)
    }

    /// On CPU: as many samples as schedstat's exact CPU time gives, spread over the
    /// stacks the perf event sampled since the last tick. A cpu-clock event's own count
    /// is off when threads get preempted a lot, low or high (docs/thread-states.md,
    /// "On-CPU time"); its stacks still say where the time went.
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

    /// Waiting for a CPU (counted only with `runqueue`): spread over the stacks it was
    /// sampled on since the last tick, so it keeps the on-CPU proportions instead of
    /// piling on one stack.
    fn count_runqueue(&mut self, waited_ns: i64, tick: Tick, tally: &mut Tally<'_>) {
        if tick.runqueue {
            self.runq_carry_ns += waited_ns as u64;
        }
        let runq = self.runq_carry_ns / tick.period_ns;
        if runq > 0 {
            if self.spread_recent(runq, tally) {
                tally.stats.runqueue_samples += runq;
            }
            self.runq_carry_ns -= runq * tick.period_ns;
        }
    }

    /// Counts `n` RUNNABLE samples spread evenly over the stacks the thread was sampled
    /// on since the last tick (each about n / len times, keeping their proportions), else
    /// on its last on-CPU stack. False when it was never sampled on a CPU (nothing
    /// counted).
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

    /// Adds off-CPU time to the carry. Time a thread spent woken but waiting for a CPU
    /// shows in its run delay only once it ran, after ticks that (not reading /proc)
    /// counted it off-CPU: such overlap comes back as a negative `off_ns` and is kept as
    /// a debt that later off-CPU time pays first, so nothing is counted twice.
    fn add_offcpu_time(&mut self, off_ns: i64) {
        let off = off_ns + self.off_debt_ns;
        self.off_debt_ns = off.min(0);
        self.off_carry_ns += off.max(0) as u64;
    }

    /// Turns carried off-CPU time into samples of the last off-CPU observation.
    fn count_offcpu(&mut self, period_ns: u64, tally: &mut Tally<'_>) {
        let Some(offcpu) = &self.offcpu else {
            // Never seen off-CPU yet: keep a little for its first observation.
            self.off_carry_ns = self.off_carry_ns.min(MAX_OFF_CARRY_NS);
            return;
        };
        let samples = self.off_carry_ns / period_ns;
        if samples > 0 {
            tally.add(&offcpu.stack, offcpu.state, samples);
            tally.stats.offcpu_samples += samples;
            self.off_carry_ns -= samples * period_ns;
        }
    }

    /// Back to sleep where it slept last time (a worker loop): the last switch-out has
    /// the registers of the last observation, so it is reused with the state the record
    /// gives, without reading /proc (the syscall is assumed the same).
    fn reobserve_from_switch(&mut self, out: Option<SwitchOut>) {
        if let (Some(out), Some(prev)) = (out, self.offcpu.as_mut()) {
            let same_place = prev.key.0.sp_pc() == Some((out.sp, out.ip)) && prev.key.1 == out.bp;
            if let (true, Some(letter)) = (same_place, out.state.filter(|l| *l != 'R')) {
                if let Some(state) = state::observe(letter, &prev.key.0) {
                    prev.state = state;
                    self.offcpu_valid = true;
                }
            }
        }
    }

    /// The stack of the last observation if it was unwound from the same place (and a
    /// known frame pointer), so it needs no reading or unwinding again.
    fn same_stack(&self, key: &(Syscall, u64), bp: Option<u64>) -> Option<Stack> {
        match &self.offcpu {
            Some(prev) if prev.key == *key && bp.is_some() => Some(prev.stack.clone()),
            _ => None,
        }
    }
}

/// Accounts one thread at a tick: the time since its last tick is split exactly
/// (schedstat) into on CPU (already sampled by perf), waiting for a CPU (RUNNABLE) and
/// off CPU, and the off-CPU part goes to the state and stack seen at this tick, or the
/// last ones seen if it is running now. Returns false if the thread is gone.
pub(super) fn account_thread(
    thread: &mut Thread,
    tick: Tick,
    image: &mut ProcessImage,
    walker: &mut StackWalker,
    symbolizer: &Symbolizer,
    tally: &mut Tally<'_>,
) -> bool {
    let Some(proc_files) = thread.files.as_mut() else { return true };
    let clock = &mut thread.clock;
    let elapsed = clock.advance(tick.now);
    if let Some(switch) = thread.switch.as_mut() {
        if switch.drain() {
            clock.switched_out();
        }
        // Neither left a CPU nor was sampled on one since the last tick: still where it
        // was seen sleeping, no need to read /proc. (If it was woken and runs right now,
        // the next tick's schedstat corrects the count through the debt.)
        if !clock.active && clock.offcpu_valid {
            clock.add_offcpu_time(elapsed);
            clock.count_offcpu(tick.period_ns, tally);
            return true;
        }
    }
    let switched = std::mem::take(&mut clock.switched);
    clock.active = false;
    let Ok(sched) = proc_files.schedstat() else { return false };
    let (cpu, waited) = clock.sched_delta(sched);
    let ran = cpu > 0;
    clock.count_oncpu(cpu, tick.period_ns, tally);
    clock.count_runqueue(waited, tick, tally);
    clock.recent_oncpu.clear();
    // Off CPU: what is left.
    clock.add_offcpu_time(elapsed - cpu - waited);

    if ran {
        clock.offcpu_valid = false;
    }
    // With switch records: on a CPU since the last tick and not off it since, or last
    // switched out by preemption, means runnable now: nothing to read.
    let runnable = thread
        .switch
        .as_ref()
        .is_some_and(|s| (ran && !switched) || (switched && s.last.is_some_and(|o| o.state == Some('R'))));
    if runnable {
        clock.count_offcpu(tick.period_ns, tally);
        return true;
    }
    if !clock.offcpu_valid {
        clock.reobserve_from_switch(thread.switch.as_ref().and_then(|s| s.last));
    }
    if !clock.offcpu_valid {
        let Ok(seen) = read_offcpu(proc_files, thread.switch.as_mut()) else { return false };
        if let Some((state, syscall, bp)) = seen {
            let key = (syscall, bp.unwrap_or(u64::MAX));
            let stack = match clock.same_stack(&key, bp) {
                Some(stack) => stack,
                None => walker.offcpu_stack(thread.pid, &syscall, bp, image, symbolizer, tally.stats),
            };
            clock.offcpu = Some(OffCpu { stack, state, key });
            clock.offcpu_valid = true;
        }
    }
    clock.count_offcpu(tick.period_ns, tally);
    true
}

/// The thread has exited (or become a zombie) while being read.
struct Gone;

/// What /proc and the last switch record say about a thread that is off its CPU: its
/// state, its syscall and the frame pointer of the matching switch record, if any. None
/// when it is running or its state says nothing off-CPU.
fn read_offcpu(
    proc_files: &mut ThreadFiles,
    switch: Option<&mut SwitchRecords>,
) -> Result<Option<(Observed, Syscall, Option<u64>)>, Gone> {
    // `syscall` waits until the thread is off its CPU (or says "running"), and the
    // sched_switch record of that switch-out is written before: read it after.
    let syscall = proc_files.syscall().map_err(|_| Gone)?;
    let last = switch.and_then(|s| {
        s.drain();
        s.last
    });
    let matching = match (last, syscall.sp_pc()) {
        (Some(out), Some((sp, pc))) if out.sp == sp && out.ip == pc => Some(out),
        _ => None,
    };
    // The switch record says how it left the CPU (S, D, ...), which spares a read of
    // /proc/.../stat; without one, read it.
    let letter = match (&syscall, matching.and_then(|o| o.state)) {
        (Syscall::Running, _) => 'R',
        (_, Some(letter)) => letter,
        (_, None) => proc_files.state().map_err(|_| Gone)?,
    };
    if matches!(letter, 'Z' | 'X' | 'x') {
        return Err(Gone);
    }
    if syscall == Syscall::Running {
        return Ok(None);
    }
    Ok(state::observe(letter, &syscall).map(|state| (state, syscall, matching.map(|o| o.bp))))
}

#[cfg(test)]
mod tests {
    use super::*;

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
