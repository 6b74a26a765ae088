//! The wall-clock tick: when it comes and what it may spend. Each tick reads every target
//! thread's schedstat (its time since the last tick, split exactly), then observes, within
//! an observation budget, threads that ran since their last observation and spent time
//! off CPU, oldest first; then turns off-CPU time into samples (`accounting.rs`).
//!
//! In: the target threads, the clock. Out: samples in the targets' windows, tick and
//! budget counters. Must not: read the perf rings (the drain does), or let its /proc work
//! grow with context switches: its cost follows the number of threads and the budgets.
//!
//! Pacing: ticks come every sampling period (jittered by ±20%, so they do not beat with
//! the target's own periodic work) as long as reading every thread's schedstat costs at
//! most `SPLIT_BUDGET` of a core; with more threads they come less often (the split is
//! exact over any interval). Observations are capped at `MAX_OBSERVATIONS_PER_SEC` and
//! at `OBSERVE_BUDGET` of a core by their measured cost; a thread not observed keeps its
//! off-CPU time for its next observation (at most `accounting::MAX_STALE`).

use super::accounting::{Seen, ThreadClock, Tick};
use super::procfs::ThreadFiles;
use super::profiles::Tally;
use super::Sampler;
use std::time::{Duration, Instant};

/// Share of one core the schedstat reads of a tick may take (0.2%).
const SPLIT_BUDGET: f64 = 0.002;

/// Share of one core off-CPU observations may take (0.4%).
const OBSERVE_BUDGET: f64 = 0.004;

/// Off-CPU observations per second, at most.
const MAX_OBSERVATIONS_PER_SEC: f64 = 300.0;

/// Longest interval between ticks.
const MAX_TICK: Duration = Duration::from_secs(1);

/// When the next tick is, and the budgets.
pub(super) struct Ticker {
    period: Duration,
    next: Instant,
    last: Instant,
    /// Measured cost of one thread's schedstat read, ns (moving average).
    split_cost_ns: f64,
    /// Measured cost of one observation, ns (moving average).
    observe_cost_ns: f64,
    /// Observations the budget allows now.
    tokens: f64,
    /// Share of `SPLIT_BUDGET` and `OBSERVE_BUDGET` this agent may spend (1, or less host-wide).
    share: f64,
}

impl Ticker {
    pub(super) fn new(period: Duration, now: Instant) -> Ticker {
        Ticker {
            period,
            next: now + period,
            last: now,
            split_cost_ns: 3_000.0,
            observe_cost_ns: 30_000.0,
            tokens: 16.0,
            share: 1.0,
        }
    }

    /// Spends only `share` (0 to 1) of the budgets: a host-wide agent, whose sampling of
    /// every process costs more than a service's, keeps its whole cost under 1% of a core.
    pub(super) fn share_budgets(&mut self, share: f64) {
        self.share = share.clamp(0.01, 1.0);
    }

    /// When the next tick is due.
    pub(super) fn next(&self) -> Instant {
        self.next
    }

    /// Observations allowed per second by the budget and the measured cost.
    fn observe_rate(&self) -> f64 {
        (self.share * OBSERVE_BUDGET * 1e9 / self.observe_cost_ns.max(1.0)).min(MAX_OBSERVATIONS_PER_SEC)
    }

    /// Refills the observation budget for the time since the last tick.
    fn refill(&mut self, now: Instant) {
        let rate = self.observe_rate();
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        // A burst of a quarter of a second of budget, enough for every thread that ran
        // in one busy tick, not enough to hide a budget that cannot keep up.
        self.tokens = (self.tokens + elapsed * rate).min((rate / 4.0).max(4.0));
    }

    /// Takes up to `wanted` observations from the budget.
    fn take(&mut self, wanted: usize) -> usize {
        let n = (self.tokens.floor().max(0.0) as usize).min(wanted);
        self.tokens -= n as f64;
        n
    }

    /// Records the tick's costs and schedules the next one.
    fn done(&mut self, now: Instant, threads: usize, split: Duration, observed: usize, observing: Duration) {
        if threads > 0 {
            let per_thread = split.as_nanos() as f64 / threads as f64;
            self.split_cost_ns = 0.9 * self.split_cost_ns + 0.1 * per_thread;
        }
        if observed > 0 {
            let per = observing.as_nanos() as f64 / observed as f64;
            self.observe_cost_ns = 0.9 * self.observe_cost_ns + 0.1 * per;
        }
        let paced = Duration::from_nanos((threads as f64 * self.split_cost_ns / (self.share * SPLIT_BUDGET)) as u64);
        let interval = paced.clamp(self.period, MAX_TICK);
        self.next = now + jittered(interval, 0.2);
    }
}

/// `base` changed by a random fraction in `[-spread, +spread]`.
fn jittered(base: Duration, spread: f64) -> Duration {
    base.mul_f64(1.0 + spread * (2.0 * fastrand::f64() - 1.0))
}

impl Sampler {
    /// Accounts every target thread up to `now` (wall-clock mode). With `settle`, carried
    /// off-CPU time goes to the last observations now (end of a profile window).
    pub(super) fn tick(&mut self, now: Instant, settle: bool) {
        self.stats.ticks += 1;
        self.ticker.refill(now);
        let tick = Tick { now, period_ns: self.period.as_nanos() as u64, runqueue: self.opts.runqueue };
        let Sampler { threads, targets, prefetch, stats, logged, walker, symbolizer, ticker, .. } = self;
        let started = Instant::now();
        let mut gone: Vec<u32> = Vec::new();
        // Threads that ran since their last observation and spent time off CPU.
        let mut candidates: Vec<(Instant, u32)> = Vec::new();
        for (tid, thread) in threads.iter_mut() {
            if thread.files.is_none() {
                if thread.no_files {
                    continue;
                }
                match ThreadFiles::open(thread.pid, *tid) {
                    Ok(files) => thread.files = Some(files),
                    Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE)) => {
                        thread.no_files = true;
                        stats.uncovered_fd_limit += 1;
                        if !logged.fd_limit {
                            logged.fd_limit = true;
                            tracing::warn!(
                                "the open-file limit is reached: threads followed from now on have no off-CPU \
                                 states (raise it with ulimit -n; see hotframe_agent_uncovered_fd_limit_threads_total)"
                            );
                        }
                        continue;
                    }
                    Err(_) => {
                        gone.push(*tid);
                        continue;
                    }
                }
            }
            let Some(files) = thread.files.as_mut() else { continue };
            let Ok(sched) = files.schedstat() else {
                gone.push(*tid);
                continue;
            };
            let Some(target) = targets.get_mut(&thread.pid) else {
                gone.push(*tid);
                continue;
            };
            let clock = thread.clock.get_or_insert_with(|| ThreadClock::new(sched, now));
            let mut tally = Tally { counts: &mut target.counts, prefetch, stats };
            clock.split(sched, tick, &mut tally);
            if let Some(since) = clock.stale_since().filter(|_| clock.has_offcpu_time(tick.period_ns)) {
                candidates.push((since, *tid));
            }
        }
        let split = started.elapsed();
        let split_threads = threads.len();

        candidates.sort_unstable();
        let allowed = ticker.take(candidates.len());
        stats.observations_deferred += (candidates.len() - allowed) as u64;
        let observing_started = Instant::now();
        let mut running: Vec<u32> = Vec::new();
        for &(_, tid) in &candidates[..allowed] {
            let Some(thread) = threads.get_mut(&tid) else { continue };
            let (Some(files), Some(clock)) = (thread.files.as_mut(), thread.clock.as_mut()) else { continue };
            let Some(target) = targets.get_mut(&thread.pid) else { continue };
            let mut image = target.image.lock().unwrap_or_else(|e| e.into_inner());
            let mut tally = Tally { counts: &mut target.counts, prefetch, stats };
            let seen = clock.observe(files, thread.pid, &mut image, walker, symbolizer, &mut tally);
            drop(image);
            stats.observations += 1;
            match seen {
                Seen::Observed | Seen::Inconsistent => {}
                Seen::Running => running.push(tid),
                Seen::Gone => gone.push(tid),
                Seen::Unreadable => {
                    stats.uncovered_unreadable += 1;
                    if !logged.unreadable {
                        logged.unreadable = true;
                        tracing::warn!(
                            pid = thread.pid,
                            "may not read the memory of a target (ptrace access denied: needs CAP_SYS_PTRACE): \
                             its off-CPU stacks are missing; see hotframe_agent_uncovered_unreadable_total"
                        );
                    }
                }
            }
        }
        let observing = observing_started.elapsed();

        for (tid, thread) in threads.iter_mut() {
            let Some(clock) = thread.clock.as_mut() else { continue };
            let Some(target) = targets.get_mut(&thread.pid) else { continue };
            let mut tally = Tally { counts: &mut target.counts, prefetch, stats };
            clock.count_offcpu(tick, settle || running.contains(tid), &mut tally);
        }
        ticker.done(Instant::now(), split_threads, split, allowed, observing);
        for tid in gone {
            self.drop_thread(tid);
        }
    }
}
