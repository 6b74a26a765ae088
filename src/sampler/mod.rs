//! The external agent's sampling core (Linux, x86_64): attach to running processes
//! with no code change and account for every thread at every tick.
//!
//! In: pids. Out: `model::Profile`s (one per target per `take_profiles`) whose samples
//! carry a thread state, plus `SamplerEvent`s (target exited, thread followed, samples
//! lost) and `SamplerStats`.
//!
//! How: on-CPU samples come from one perf_event_open cpu-clock event per thread (user
//! registers plus a user-stack copy, unwound with framehop from `.eh_frame`, or a
//! frame-pointer callchain); they are RUNNABLE. At every wall-clock tick (one period
//! after a thread went to sleep, told by its sched_switch record, else every 500 ms;
//! every period without switch events) each thread's time since its last tick is split
//! with schedstat into CPU time, run-queue delay and off-CPU time; off-CPU time is
//! counted in the state `state::observe` gives from /proc (state, syscall with
//! arguments, user sp/pc) and a sched_switch record (frame pointer, state it left in),
//! with the stack read by process_vm_readv and unwound; observations are reused until
//! the thread runs again. Run-queue delay is counted RUNNABLE only with
//! `SamplerOptions::runqueue`. Names come from `crate::symbolize` at `take_profiles`.
//! See docs/thread-states.md.
//!
//! Files: this one holds `Sampler` (attach, poll, ticks, take_profiles) and the types it
//! reports; `options.rs` the options and their defaults; `error.rs` `SamplerError`;
//! `privileges.rs` the capability checks; `drain.rs` waiting on and reading the perf
//! events; `stacks.rs` stacks from samples and from sleeping threads; `accounting.rs`
//! the per-thread time accounting at ticks; `profiles.rs` the counted stacks and the
//! profiles built from them; `prefetch.rs` batches of frames for the symbolizer. Below
//! them: `perf.rs` (events and ring buffers), `procfs.rs` (/proc), `unwind.rs`
//! (framehop), `state.rs` (the thread-state rules).
//!
//! Must not: touch the network, block longer than `poll`'s `max_wait`, or stop the
//! target (no ptrace).

mod accounting;
mod drain;
mod error;
mod options;
pub mod perf;
mod prefetch;
mod privileges;
pub mod procfs;
mod profiles;
mod stacks;
pub mod state;
pub mod unwind;

pub use error::SamplerError;
pub use options::{SamplerOptions, UnwindMode};

use crate::model::Profile;
use crate::symbolize::{RawFrame, Symbolizer};
use accounting::{ThreadClock, Tick};
use drain::{Pending, SwitchRecords};
use perf::{EventConfig, PerfEvent};
use prefetch::Prefetch;
use procfs::ThreadFiles;
use profiles::{StackCounts, Tally};
use serde::{Deserialize, Serialize};
use stacks::StackWalker;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use unwind::ProcessImage;

/// Something that happened to the targets during `poll`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SamplerEvent {
    /// The target process exited; its last samples are still in the next `take_profiles`.
    Exited(u32),
    /// A thread of a target is now sampled too.
    ThreadFollowed {
        /// The target.
        pid: u32,
        /// The new thread.
        tid: u32,
    },
    /// The kernel dropped samples of a target because its ring buffer was full.
    Lost {
        /// The target.
        pid: u32,
        /// Samples dropped.
        count: u64,
    },
}

/// The sampler's own health counters, since `Sampler::new`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SamplerStats {
    /// On-CPU samples taken from perf events.
    pub samples: u64,
    /// Wall-clock samples of threads off-CPU (WAITING, TIMED_WAITING, BLOCKED, IO).
    pub offcpu_samples: u64,
    /// RUNNABLE samples for time spent waiting for a CPU (schedstat run delay).
    pub runqueue_samples: u64,
    /// Wall-clock mode counts on-CPU samples by schedstat's CPU time, over the stacks
    /// the perf event sampled: samples added for CPU time the event did not sample...
    pub oncpu_topup_samples: u64,
    /// ... and perf samples left out because the event sampled more than the CPU time.
    pub oncpu_dropped_samples: u64,
    /// Samples the kernel dropped (ring buffer full).
    pub lost: u64,
    /// Stacks that could not be unwound past the first frame.
    pub unwind_failures: u64,
    /// Stacks that stopped before the thread's root frame.
    pub truncated: u64,
    /// Threads sampled since the start, including those that exited.
    pub threads_followed: u64,
    /// Threads sampled right now.
    pub threads_active: u64,
    /// Wall-clock ticks done.
    pub ticks: u64,
    /// Frames named from the symbolization cache.
    pub symbol_cache_hits: u64,
    /// Frames that needed blazesym.
    pub symbol_cache_misses: u64,
}

/// A stack, leaf first.
type Stack = Arc<[RawFrame]>;

/// One sampled thread: its events, its /proc files and its accounting.
struct Thread {
    pid: u32,
    /// The cpu-clock event: on-CPU samples, and fork, mmap and lost records.
    event: PerfEvent,
    /// sched_switch records, when the tracepoint exists.
    switch: Option<SwitchRecords>,
    /// Wall-clock mode: schedstat, syscall and stat, kept open.
    files: Option<ThreadFiles>,
    clock: ThreadClock,
}

/// One target process.
struct Target {
    comm: String,
    exe: String,
    image: ProcessImage,
    counts: StackCounts,
    window_start_ms: i64,
    exited: bool,
}

/// Samples a set of target processes; see the module documentation.
pub struct Sampler {
    opts: SamplerOptions,
    config: EventConfig,
    period: Duration,
    switch_tracepoint: Option<perf::SwitchTracepoint>,
    targets: HashMap<u32, Target>,
    threads: HashMap<u32, Thread>,
    walker: StackWalker,
    symbolizer: Symbolizer,
    stats: SamplerStats,
    /// No tick before this (one period after the last).
    next_tick: Instant,
    /// A tick at the latest by this, even if no thread went to sleep.
    idle_tick: Instant,
    /// Next /proc rescan of targets' threads and liveness.
    next_rescan: Instant,
    scratch_fds: Vec<libc::pollfd>,
    prefetch: Prefetch,
    pending: Pending,
}

impl std::fmt::Debug for Sampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sampler")
            .field("opts", &self.opts)
            .field("targets", &self.targets())
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// Threads and liveness of every target are re-read from /proc this often, as a
/// backstop to fork records and thread exits (a rescan also follows every thread exit
/// at once, so a target that exits is reported promptly).
const RESCAN_INTERVAL: Duration = Duration::from_secs(2);

/// Longest time between two wall-clock ticks. A tick is due one period after the last
/// when a thread went to sleep since (its switch record wakes the sampler); threads that
/// run (perf samples) or keep sleeping where they were seen (time accounted exactly at
/// the next tick) need none, so without sleeps the sampler ticks only this often.
const IDLE_TICK: Duration = Duration::from_millis(500);

impl Sampler {
    /// A sampler with no targets. Fails with `Permission` when perf_event_open is not
    /// allowed (not root, no CAP_PERFMON / CAP_SYS_ADMIN).
    pub fn new(opts: SamplerOptions) -> Result<Sampler, SamplerError> {
        opts.check()?;
        privileges::check_permissions()?;
        privileges::raise_fd_limit();
        let period_ns = opts.period_ns();
        let config = EventConfig {
            period_ns,
            dwarf: opts.unwind == UnwindMode::Dwarf,
            stack_bytes: opts.stack_bytes,
            callchain: opts.unwind == UnwindMode::FramePointer,
            kernel: opts.kernel,
        };
        let switch_tracepoint = if opts.wall_clock {
            match perf::sched_switch_tracepoint() {
                Ok(id) => Some(id),
                Err(err) => {
                    tracing::warn!(%err, "no sched_switch tracepoint: off-CPU stacks of frame-pointer code may be truncated");
                    None
                }
            }
        } else {
            None
        };
        let now = Instant::now();
        Ok(Sampler {
            opts,
            config,
            switch_tracepoint,
            period: Duration::from_nanos(period_ns),
            targets: HashMap::new(),
            threads: HashMap::new(),
            walker: StackWalker::new(opts),
            symbolizer: Symbolizer::new(),
            stats: SamplerStats::default(),
            next_tick: now + Duration::from_nanos(period_ns),
            idle_tick: now + IDLE_TICK,
            next_rescan: now + RESCAN_INTERVAL,
            scratch_fds: Vec::new(),
            prefetch: Prefetch::default(),
            pending: Pending::default(),
        })
    }

    /// The options in use.
    pub fn options(&self) -> SamplerOptions {
        self.opts
    }

    /// Starts sampling every thread of `pid` (threads created later are followed).
    pub fn attach(&mut self, pid: u32) -> Result<(), SamplerError> {
        if self.targets.get(&pid).is_some_and(|t| !t.exited) {
            return Ok(());
        }
        let gone = || SamplerError::NoSuchProcess(format!("pid {pid} is not running"));
        if !procfs::is_alive(pid) {
            return Err(gone());
        }
        let tids = procfs::thread_ids(pid).map_err(|_| gone())?;
        let mut image = ProcessImage::new(pid);
        image.refresh(&mut self.walker.files, &self.symbolizer).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => gone(),
            _ => SamplerError::Io { what: format!("reading /proc/{pid}/maps"), source: e },
        })?;
        // No symbol warm-up here: modules are opened by the symbolizer's worker when a
        // sample first lands in them (the prefetch batches), so modules never sampled
        // cost neither parsing nor memory.
        self.targets.insert(
            pid,
            Target {
                comm: procfs::comm(pid).unwrap_or_default(),
                exe: procfs::exe(pid).unwrap_or_default(),
                image,
                counts: StackCounts::default(),
                window_start_ms: crate::model::time::now_ms(),
                exited: false,
            },
        );
        let mut opened = 0;
        for tid in tids {
            match self.follow_thread(pid, tid) {
                Ok(true) => opened += 1,
                Ok(false) => {}
                Err(e) => {
                    self.detach(pid);
                    return Err(e);
                }
            }
        }
        if opened == 0 {
            self.targets.remove(&pid);
            return Err(gone());
        }
        tracing::info!(pid, threads = opened, "attached");
        Ok(())
    }

    /// Stops sampling `pid` and forgets what was accumulated for it.
    pub fn detach(&mut self, pid: u32) {
        self.threads.retain(|_, t| t.pid != pid);
        self.targets.remove(&pid);
        self.stats.threads_active = self.threads.len() as u64;
    }

    /// Attached pids that are still alive.
    pub fn targets(&self) -> Vec<u32> {
        let mut out: Vec<u32> = self.targets.iter().filter(|(_, t)| !t.exited).map(|(p, _)| *p).collect();
        out.sort_unstable();
        out
    }

    /// Counters since `new`.
    pub fn stats(&self) -> SamplerStats {
        let sym = self.symbolizer.stats();
        SamplerStats { symbol_cache_hits: sym.cache_hits, symbol_cache_misses: sym.cache_misses, ..self.stats }
    }

    /// Opens the event and /proc files of one thread. Ok(false) if it is already gone.
    fn follow_thread(&mut self, pid: u32, tid: u32) -> Result<bool, SamplerError> {
        if self.threads.contains_key(&tid) {
            return Ok(true);
        }
        let event = match PerfEvent::open(tid, &self.config) {
            Ok(e) => e,
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Ok(false),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EACCES) | Some(libc::EPERM)) => {
                return Err(SamplerError::Permission(privileges::permission_message(&e)))
            }
            Err(e) => return Err(SamplerError::Perf { pid, tid, source: e }),
        };
        let switch = self.switch_tracepoint.and_then(|tp| match SwitchRecords::open(tid, tp) {
            Ok(s) => Some(s),
            Err(err) => {
                tracing::debug!(tid, %err, "no sched_switch event for thread");
                None
            }
        });
        let mut files = if self.opts.wall_clock { ThreadFiles::open(pid, tid).ok() } else { None };
        let sched = files.as_mut().and_then(|f| f.schedstat().ok()).unwrap_or_default();
        let clock = ThreadClock::new(sched, Instant::now());
        self.threads.insert(tid, Thread { pid, event, switch, files, clock });
        self.stats.threads_followed += 1;
        self.stats.threads_active = self.threads.len() as u64;
        Ok(true)
    }

    /// Waits up to `max_wait` (less if a tick or rescan is due first, or a ring buffer
    /// fills past its watermark), then reads every ring buffer, unwinds and accumulates
    /// the samples, and at a tick accounts for the threads that are off-CPU. Returns
    /// what happened to the targets.
    ///
    /// Wake-ups are few on purpose: on-CPU samples wait in their ring until it is half
    /// full; in wall-clock mode a tick comes one period after the last only if a thread
    /// went to sleep since (its filtered sched_switch record wakes the poll), else after
    /// `IDLE_TICK`; with `wall_clock` off there are no ticks at all.
    pub fn poll(&mut self, max_wait: Duration) -> Result<Vec<SamplerEvent>, SamplerError> {
        let now = Instant::now();
        let mut wake = self.next_rescan.min(now + max_wait);
        // Switch records are watched only once a tick may follow, so they cannot wake
        // the sampler more than once per period.
        let watch_switches = self.opts.wall_clock && now >= self.next_tick;
        // A thread without a switch event (no tracefs) cannot say it went to sleep: tick
        // every period then, as the only way to see where it sleeps.
        let every_period = self.opts.wall_clock && self.threads.values().any(|t| t.switch.is_none());
        if self.opts.wall_clock {
            wake = wake.min(if watch_switches && !every_period { self.idle_tick } else { self.next_tick });
        }
        let slept = self.wait_for_data(wake.saturating_duration_since(now), watch_switches);
        self.drain_all();
        let mut tids: Vec<(u32, u32)> = std::mem::take(&mut self.pending.threads);
        tids.dedup();
        for (pid, tid) in tids {
            if self.targets.get(&pid).is_some_and(|t| !t.exited) && self.follow_thread(pid, tid)? {
                self.pending.events.push(SamplerEvent::ThreadFollowed { pid, tid });
            }
        }
        for pid in std::mem::take(&mut self.pending.dirty_images) {
            if let Some(t) = self.targets.get_mut(&pid) {
                let _ = t.image.refresh(&mut self.walker.files, &self.symbolizer);
            }
        }
        let now = Instant::now();
        if self.opts.wall_clock && now >= self.next_tick && (slept || every_period || now >= self.idle_tick) {
            self.tick(now);
        }
        self.prefetch.send(&self.symbolizer);
        if now >= self.next_rescan || self.threads.is_empty() {
            self.next_rescan = now + RESCAN_INTERVAL;
            self.rescan()?;
        }
        Ok(std::mem::take(&mut self.pending.events))
    }

    /// Accounts every thread up to `now` (wall-clock mode only).
    fn tick(&mut self, now: Instant) {
        if !self.opts.wall_clock {
            return;
        }
        self.stats.ticks += 1;
        self.next_tick = now + self.period;
        self.idle_tick = now + IDLE_TICK;
        let tick = Tick { now, period_ns: self.period.as_nanos() as u64, runqueue: self.opts.runqueue };
        let tids: Vec<u32> = self.threads.keys().copied().collect();
        for tid in tids {
            if !self.account_thread(tid, tick) {
                self.remove_thread(tid);
            }
        }
        self.stats.threads_active = self.threads.len() as u64;
    }

    /// Accounts one thread at a tick (see `accounting::account_thread`). False if the
    /// thread or its target is gone.
    fn account_thread(&mut self, tid: u32, tick: Tick) -> bool {
        let Some(thread) = self.threads.get_mut(&tid) else { return false };
        let Some(target) = self.targets.get_mut(&thread.pid) else { return false };
        let mut tally = Tally { counts: &mut target.counts, prefetch: &mut self.prefetch, stats: &mut self.stats };
        accounting::account_thread(thread, tick, &mut target.image, &mut self.walker, &self.symbolizer, &mut tally)
    }

    /// Checks liveness of every target and picks up threads no fork record announced.
    fn rescan(&mut self) -> Result<(), SamplerError> {
        let pids: Vec<u32> = self.targets.iter().filter(|(_, t)| !t.exited).map(|(p, _)| *p).collect();
        for pid in pids {
            let alive = procfs::is_alive(pid);
            let tids = if alive { procfs::thread_ids(pid).unwrap_or_default() } else { Vec::new() };
            if tids.is_empty() {
                self.mark_exited(pid);
                continue;
            }
            for tid in tids {
                if !self.threads.contains_key(&tid) && self.follow_thread(pid, tid)? {
                    self.pending.events.push(SamplerEvent::ThreadFollowed { pid, tid });
                }
            }
        }
        Ok(())
    }

    /// Forgets a thread that is gone; its on-CPU stacks not counted yet count once each
    /// (no schedstat to weigh them any more).
    fn remove_thread(&mut self, tid: u32) {
        let Some(thread) = self.threads.remove(&tid) else { return };
        if let Some(target) = self.targets.get_mut(&thread.pid) {
            let mut tally = Tally { counts: &mut target.counts, prefetch: &mut self.prefetch, stats: &mut self.stats };
            thread.clock.flush(&mut tally);
        }
    }

    fn mark_exited(&mut self, pid: u32) {
        self.drain_all();
        let gone: Vec<u32> = self.threads.iter().filter(|(_, t)| t.pid == pid).map(|(tid, _)| *tid).collect();
        for tid in gone {
            self.remove_thread(tid);
        }
        self.stats.threads_active = self.threads.len() as u64;
        if let Some(t) = self.targets.get_mut(&pid) {
            if !t.exited {
                t.exited = true;
                tracing::info!(pid, "target exited");
                self.pending.events.push(SamplerEvent::Exited(pid));
            }
        }
    }

    /// One profile per target with what was accumulated since the last call, over
    /// `[last take, now_ms)`; labels `pid`, `process` (comm) and `exe`. Targets that
    /// exited are returned one last time, then forgotten. Profiles may be empty.
    pub fn take_profiles(&mut self, service: &str, now_ms: i64) -> Vec<Profile> {
        let period_ns = self.period.as_nanos() as u64;
        // Ticks are sparse when nothing goes to sleep: account everything up to now so
        // that the window is complete.
        self.drain_all();
        self.tick(Instant::now());
        let mut out = Vec::new();
        let mut pids: Vec<u32> = self.targets.keys().copied().collect();
        pids.sort_unstable();
        for pid in pids {
            let Some(target) = self.targets.get_mut(&pid) else { continue };
            out.push(profiles::take_profile(pid, target, service, now_ms, period_ns, &self.symbolizer));
            if target.exited {
                self.targets.remove(&pid);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The agent moves the sampler to its own thread.
    #[test]
    fn sampler_is_send() {
        fn assert_send<T: Send>() {}
        assert_send::<Sampler>();
    }
}
