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
//! every period without switch events) each thread's time since its last tick is split with schedstat into CPU time, run-queue
//! delay and off-CPU time; off-CPU time is counted in the state `state::observe` gives
//! from /proc (state, syscall with arguments, user sp/pc) and a sched_switch record
//! (frame pointer, state it left in), with the stack read by process_vm_readv and
//! unwound; observations are reused until the thread runs again. Run-queue delay is
//! counted RUNNABLE only with `SamplerOptions::runqueue`. Names come from
//! `crate::symbolize` at `take_profiles`. See docs/thread-states.md.
//!
//! Must not: touch the network, block longer than `poll`'s `max_wait`, or stop the
//! target (no ptrace).

pub mod perf;
pub mod procfs;
pub mod state;
pub mod unwind;

use crate::model::{Profile, ProfileBuilder, ThreadState};
use crate::symbolize::{RawFrame, Symbolizer};
use linux_perf_event_reader::{EventRecord, SampleRecord};
use perf::{EventConfig, PerfEvent};
use procfs::{SchedStat, Syscall, ThreadFiles};
use rustc_hash::{FxHashMap, FxHashSet};
use serde::{Deserialize, Serialize};
use state::Observed;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use unwind::{FileCache, ProcessImage, WalkEnd};

/// How user stacks of on-CPU samples are walked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnwindMode {
    /// Copy the user stack and unwind it with DWARF CFI (`.eh_frame`): complete stacks
    /// for binaries built without frame pointers. Default.
    Dwarf,
    /// The kernel's frame-pointer callchain: cheaper, complete only for code built with
    /// frame pointers.
    FramePointer,
}

/// What and how to sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SamplerOptions {
    /// Samples per second per thread (on-CPU and wall-clock ticks). Default 99.
    pub frequency_hz: u32,
    /// Unwinding of on-CPU samples. Default `Dwarf`.
    pub unwind: UnwindMode,
    /// Put kernel frames (suffixed `_[k]`) in front of on-CPU user stacks. Default false.
    pub kernel: bool,
    /// Also sample threads that are off-CPU, with their state. Default true.
    pub wall_clock: bool,
    /// Bytes of user stack copied per sample for DWARF unwinding. Default 32 KiB.
    pub stack_bytes: u32,
    /// Also count time spent runnable but waiting for a CPU (schedstat run delay) as
    /// RUNNABLE, spread over the thread's recent on-CPU stacks. A wall-clock view, but
    /// RUNNABLE then no longer equals CPU time, which inflates cost estimates on a
    /// saturated host. Default false.
    pub runqueue: bool,
}

impl Default for SamplerOptions {
    fn default() -> Self {
        SamplerOptions {
            frequency_hz: 99,
            unwind: UnwindMode::Dwarf,
            kernel: false,
            wall_clock: true,
            stack_bytes: 32 * 1024,
            runqueue: false,
        }
    }
}

/// What went wrong while sampling.
#[derive(Debug, thiserror::Error)]
pub enum SamplerError {
    /// The agent may not use perf_event_open or read other processes.
    #[error("{0}")]
    Permission(String),
    /// The target does not exist (message names the pid).
    #[error("{0}")]
    NoSuchProcess(String),
    /// An option is out of range.
    #[error("invalid sampler option: {0}")]
    BadOption(String),
    /// perf_event_open or its ring buffer failed for another reason.
    #[error("perf_event_open on pid {pid} (thread {tid}) failed: {source}{}", perf_hint(.source))]
    Perf {
        /// The target.
        pid: u32,
        /// The thread.
        tid: u32,
        /// The OS error.
        source: std::io::Error,
    },
    /// Another OS error.
    #[error("{what}: {source}")]
    Io {
        /// What the sampler was doing.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
}

/// What to do about a perf_event_open or ring-buffer error.
fn perf_hint(err: &std::io::Error) -> &'static str {
    match err.raw_os_error() {
        Some(libc::EMFILE) | Some(libc::ENFILE) => {
            "; the open-file limit is reached (five descriptors per thread): raise it with ulimit -n"
        }
        Some(libc::ENOMEM) => "; the kernel could not lock ring-buffer memory: raise kernel.perf_event_mlock_kb",
        Some(libc::ENOENT) | Some(libc::EOPNOTSUPP) => {
            "; this kernel has no cpu-clock software event for sampling (CONFIG_PERF_EVENTS)"
        }
        _ => "",
    }
}

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

struct Thread {
    pid: u32,
    event: Option<PerfEvent>,
    /// sched_switch event: user registers each time the thread leaves a CPU.
    switch: Option<PerfEvent>,
    /// The last of those registers: ip, sp, bp.
    switch_out: Option<perf::SwitchOut>,
    files: Option<ThreadFiles>,
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
    last_oncpu: Option<Stack>,
    /// Wall-clock mode: on-CPU stacks sampled since the last tick, not counted yet; the
    /// tick counts as many samples as schedstat's CPU time gives, spread over them.
    recent_oncpu: Vec<Stack>,
    runq_carry_ns: u64,
    /// On-CPU samples counted directly since the last tick that read schedstat
    /// (`recent_oncpu` full).
    sampled_since_sched: u64,
    /// CPU time (schedstat) not yet turned into samples; negative when more was counted
    /// directly than schedstat has seen yet.
    oncpu_balance_ns: i64,
}

struct Target {
    comm: String,
    exe: String,
    image: ProcessImage,
    /// Fx hashing: this map is hit once per sample, and SipHash over a whole stack
    /// showed in the agent's profile.
    counts: FxHashMap<(Stack, Observed), u64>,
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
    files: FileCache,
    symbolizer: Symbolizer,
    stats: SamplerStats,
    /// No tick before this (one period after the last).
    next_tick: Instant,
    /// A tick at the latest by this, even if no thread went to sleep.
    idle_tick: Instant,
    /// Next /proc rescan of targets' threads and liveness.
    next_rescan: Instant,
    scratch_addrs: Vec<u64>,
    scratch_stack: Vec<u8>,
    scratch_fds: Vec<libc::pollfd>,
    prefetch: Prefetch,
    pending_events: Vec<SamplerEvent>,
    pending_threads: Vec<(u32, u32)>,
    dirty_images: HashSet<u32>,
}

/// On-CPU and run-queue samples.
const RUNNABLE: Observed = Observed { state: ThreadState::Runnable, lock_check: false };

/// Off-CPU time kept for a thread never seen off-CPU yet (it goes to its first
/// off-CPU observation); more is dropped.
const MAX_OFF_CARRY_NS: u64 = 1_000_000_000;

/// Bytes of a sleeping thread's stack read first (see `offcpu_stack`).
const FIRST_STACK_READ: usize = 4096;

/// On-CPU stacks held per thread between ticks (a tick comes at least every 500 ms, 50
/// samples at 99 Hz); past this they are counted directly.
const MAX_RECENT: usize = 1024;

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

/// Bound of a thread's on-CPU balance (schedstat CPU time not yet turned into samples)
/// either way: a thread never sampled on a CPU keeps at most this much for when it is.
const MAX_ONCPU_BALANCE_NS: i64 = 1_000_000_000;

impl Sampler {
    /// A sampler with no targets. Fails with `Permission` when perf_event_open is not
    /// allowed (not root, no CAP_PERFMON / CAP_SYS_ADMIN).
    pub fn new(opts: SamplerOptions) -> Result<Sampler, SamplerError> {
        if opts.frequency_hz == 0 || opts.frequency_hz > 10_000 {
            return Err(SamplerError::BadOption(format!(
                "frequency {} Hz is out of range: use 1 to 10000 (99 is a good default)",
                opts.frequency_hz
            )));
        }
        if opts.unwind == UnwindMode::Dwarf && !(512..=65_528).contains(&opts.stack_bytes) {
            return Err(SamplerError::BadOption(format!(
                "stack copy of {} bytes is out of range: use 512 to 65528 (32768 is the default)",
                opts.stack_bytes
            )));
        }
        check_permissions()?;
        raise_fd_limit();
        let period_ns = 1_000_000_000 / opts.frequency_hz as u64;
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
            files: FileCache::default(),
            symbolizer: Symbolizer::new(),
            stats: SamplerStats::default(),
            next_tick: now + Duration::from_nanos(period_ns),
            idle_tick: now + IDLE_TICK,
            next_rescan: now + RESCAN_INTERVAL,
            scratch_addrs: Vec::with_capacity(unwind::MAX_FRAMES),
            scratch_stack: Vec::new(),
            scratch_fds: Vec::new(),
            prefetch: Prefetch::default(),
            pending_events: Vec::new(),
            pending_threads: Vec::new(),
            dirty_images: HashSet::new(),
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
        image.refresh(&mut self.files, &self.symbolizer).map_err(|e| match e.kind() {
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
                counts: FxHashMap::default(),
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
                return Err(SamplerError::Permission(permission_message(&e)))
            }
            Err(e) => return Err(SamplerError::Perf { pid, tid, source: e }),
        };
        let switch = self.switch_tracepoint.and_then(|tp| match PerfEvent::open_switch(tid, tp.id) {
            Ok(e) => Some(e),
            Err(err) => {
                tracing::debug!(tid, %err, "no sched_switch event for thread");
                None
            }
        });
        let mut files = if self.opts.wall_clock { ThreadFiles::open(pid, tid).ok() } else { None };
        let sched = files.as_mut().and_then(|f| f.schedstat().ok()).unwrap_or_default();
        self.threads.insert(
            tid,
            Thread {
                pid,
                event: Some(event),
                switch,
                switch_out: None,
                files,
                sched,
                accounted_at: Instant::now(),
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
            },
        );
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
        let mut tids: Vec<(u32, u32)> = std::mem::take(&mut self.pending_threads);
        tids.dedup();
        for (pid, tid) in tids {
            if self.targets.get(&pid).is_some_and(|t| !t.exited) && self.follow_thread(pid, tid)? {
                self.pending_events.push(SamplerEvent::ThreadFollowed { pid, tid });
            }
        }
        for pid in std::mem::take(&mut self.dirty_images) {
            if let Some(t) = self.targets.get_mut(&pid) {
                let _ = t.image.refresh(&mut self.files, &self.symbolizer);
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
        Ok(std::mem::take(&mut self.pending_events))
    }

    /// Waits for a ring buffer past its watermark, a thread exit, with `switches` a
    /// thread going to sleep, or `timeout`. Returns whether a thread went to sleep.
    fn wait_for_data(&mut self, timeout: Duration, switches: bool) -> bool {
        if timeout.is_zero() {
            return false;
        }
        let fds = &mut self.scratch_fds;
        fds.clear();
        fds.extend(self.threads.values().filter_map(|t| t.event.as_ref()).map(|e| libc::pollfd {
            fd: e.raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }));
        let events = fds.len();
        if switches {
            fds.extend(self.threads.values().filter_map(|t| t.switch.as_ref()).map(|e| libc::pollfd {
                fd: e.raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            }));
        }
        if fds.is_empty() {
            std::thread::sleep(timeout);
            return false;
        }
        let ts = libc::timespec {
            tv_sec: timeout.as_secs().min(i32::MAX as u64) as libc::time_t,
            tv_nsec: timeout.subsec_nanos() as libc::c_long,
        };
        // SAFETY: fds is a valid array of pollfd for its length; ts outlives the call.
        unsafe { libc::ppoll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, &ts, std::ptr::null()) };
        let slept = fds[events..].iter().any(|f| f.revents & libc::POLLIN != 0);
        // A thread's event reports POLLHUP once the thread exited: drop it after a last drain.
        let hung: HashSet<i32> =
            fds[..events].iter().filter(|f| f.revents & libc::POLLHUP != 0).map(|f| f.fd).collect();
        if !hung.is_empty() {
            let gone: Vec<u32> = self
                .threads
                .iter()
                .filter(|(_, t)| t.event.as_ref().is_some_and(|e| hung.contains(&e.raw_fd())))
                .map(|(tid, _)| *tid)
                .collect();
            for tid in gone {
                self.drain_thread(tid);
                self.remove_thread(tid);
            }
            self.stats.threads_active = self.threads.len() as u64;
            // Perhaps the whole process exited: find out now.
            self.next_rescan = Instant::now();
        }
        slept
    }

    fn drain_all(&mut self) {
        let tids: Vec<u32> = self.threads.keys().copied().collect();
        for tid in tids {
            self.drain_thread(tid);
        }
    }

    fn drain_thread(&mut self, tid: u32) {
        let Sampler {
            threads,
            targets,
            files,
            symbolizer,
            stats,
            scratch_addrs,
            prefetch,
            pending_events,
            pending_threads,
            dirty_images,
            opts,
            switch_tracepoint,
            ..
        } = self;
        let switch_tp = switch_tracepoint.as_ref();
        let Some(thread) = threads.get_mut(&tid) else { return };
        let pid = thread.pid;
        if let Some(switch) = thread.switch.as_mut() {
            if drain_switch(switch, switch_tp, &mut thread.switch_out) > 0 {
                thread.active = true;
                thread.switched = true;
            }
        }
        let Some(event) = thread.event.as_mut() else { return };
        let Some(target) = targets.get_mut(&pid) else { return };
        let mut last_stack: Option<Stack> = None;
        let wall_clock = thread.files.is_some();
        let recent = &mut thread.recent_oncpu;
        let sampled = &mut thread.sampled_since_sched;
        event.drain(|record| match record {
            EventRecord::Sample(sample) => {
                if let Some(stack) = sample_stack(&sample, opts, target, files, symbolizer, stats, scratch_addrs) {
                    stats.samples += 1;
                    if wall_clock && recent.len() < MAX_RECENT {
                        // Counted at the next tick, in the amount schedstat gives.
                        recent.push(stack.clone());
                    } else {
                        count(&mut target.counts, prefetch, &stack, RUNNABLE, 1);
                        *sampled += 1;
                    }
                    last_stack = Some(stack);
                }
            }
            EventRecord::Fork(f) if f.pid as u32 == pid && f.tid != f.ptid => pending_threads.push((pid, f.tid as u32)),
            EventRecord::Mmap2(m) if m.pid as u32 == pid && m.protection & libc::PROT_EXEC as u32 != 0 => {
                dirty_images.insert(pid);
            }
            EventRecord::Mmap(m) if m.pid as u32 == pid && m.is_executable => {
                dirty_images.insert(pid);
            }
            EventRecord::Lost(l) => {
                stats.lost += l.count;
                pending_events.push(SamplerEvent::Lost { pid, count: l.count });
            }
            _ => {}
        });
        if let Some(stack) = last_stack {
            thread.active = true;
            thread.last_oncpu = Some(stack);
            // It ran: whatever it was waiting for is over.
            thread.offcpu_valid = false;
        }
    }

    /// Accounts every thread up to `now` (wall-clock mode only).
    fn tick(&mut self, now: Instant) {
        if !self.opts.wall_clock {
            return;
        }
        self.stats.ticks += 1;
        self.next_tick = now + self.period;
        self.idle_tick = now + IDLE_TICK;
        let tids: Vec<u32> = self.threads.keys().copied().collect();
        for tid in tids {
            if !self.account_thread(tid, now) {
                self.remove_thread(tid);
            }
        }
        self.stats.threads_active = self.threads.len() as u64;
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
                    self.pending_events.push(SamplerEvent::ThreadFollowed { pid, tid });
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
            for stack in &thread.recent_oncpu {
                count(&mut target.counts, &mut self.prefetch, stack, RUNNABLE, 1);
            }
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
                self.pending_events.push(SamplerEvent::Exited(pid));
            }
        }
    }

    /// Accounts one thread at a tick: the time since its last tick is split exactly
    /// (schedstat) into on CPU (already sampled by perf), waiting for a CPU (RUNNABLE)
    /// and off CPU, and the off-CPU part goes to the state and stack seen at this tick,
    /// or the last ones seen if it is running now. Returns false if the thread is gone.
    fn account_thread(&mut self, tid: u32, now: Instant) -> bool {
        let period_ns = self.period.as_nanos() as u64;
        let Sampler {
            threads,
            targets,
            files,
            symbolizer,
            stats,
            scratch_addrs,
            scratch_stack,
            opts,
            switch_tracepoint,
            prefetch,
            ..
        } = self;
        let switch_tp = switch_tracepoint.as_ref();
        let Some(thread) = threads.get_mut(&tid) else { return false };
        let Some(target) = targets.get_mut(&thread.pid) else { return false };
        let Some(proc_files) = thread.files.as_mut() else { return true };
        let elapsed = now.saturating_duration_since(thread.accounted_at).as_nanos() as i64;
        thread.accounted_at = now;
        if let Some(switch) = thread.switch.as_mut() {
            if drain_switch(switch, switch_tp, &mut thread.switch_out) > 0 {
                thread.active = true;
                thread.switched = true;
            }
            // Neither left a CPU nor was sampled on one since the last tick: still where
            // it was seen sleeping, no need to read /proc. (If it was woken and runs right
            // now, the next tick's schedstat corrects the count through the debt.)
            if !thread.active && thread.offcpu_valid {
                add_offcpu_time(&mut thread.off_debt_ns, &mut thread.off_carry_ns, elapsed);
                count_offcpu(thread, target, prefetch, stats, period_ns);
                return true;
            }
        }
        let switched = std::mem::take(&mut thread.switched);
        thread.active = false;
        let Ok(sched) = proc_files.schedstat() else { return false };
        let cpu = sched.cpu_ns.saturating_sub(thread.sched.cpu_ns) as i64;
        let waited = sched.run_delay_ns.saturating_sub(thread.sched.run_delay_ns) as i64;
        thread.sched = sched;
        let ran = cpu > 0;

        // On CPU: as many samples as schedstat's exact CPU time gives, spread over the
        // stacks the perf event sampled since the last tick. A cpu-clock event's own
        // count is off when threads get preempted a lot, low or high
        // (docs/thread-states.md, "On-CPU time"); its stacks still say where the time went.
        let direct_ns = std::mem::take(&mut thread.sampled_since_sched).saturating_mul(period_ns) as i64;
        thread.oncpu_balance_ns =
            (thread.oncpu_balance_ns + cpu - direct_ns).clamp(-MAX_ONCPU_BALANCE_NS, MAX_ONCPU_BALANCE_NS);
        let due = thread.oncpu_balance_ns.max(0) as u64 / period_ns;
        let sampled = thread.recent_oncpu.len() as u64;
        if due > 0 && spread_recent(&thread.recent_oncpu, thread.last_oncpu.as_ref(), target, prefetch, due) {
            thread.oncpu_balance_ns -= (due * period_ns) as i64;
            stats.oncpu_topup_samples += due.saturating_sub(sampled);
            stats.oncpu_dropped_samples += sampled.saturating_sub(due);
        } else {
            stats.oncpu_dropped_samples += sampled;
        }

        // Waiting for a CPU: spread over the stacks it was sampled on since the last
        // tick, so it keeps the on-CPU proportions instead of piling on one stack.
        if opts.runqueue {
            thread.runq_carry_ns += waited as u64;
        }
        let runq = thread.runq_carry_ns / period_ns;
        if runq > 0 {
            if spread_recent(&thread.recent_oncpu, thread.last_oncpu.as_ref(), target, prefetch, runq) {
                stats.runqueue_samples += runq;
            }
            thread.runq_carry_ns -= runq * period_ns;
        }
        thread.recent_oncpu.clear();

        // Off CPU: what is left.
        add_offcpu_time(&mut thread.off_debt_ns, &mut thread.off_carry_ns, elapsed - cpu - waited);

        if ran {
            thread.offcpu_valid = false;
        }
        // With switch records: on a CPU since the last tick and not off it since, or last
        // switched out by preemption, means runnable now: nothing to read.
        let runnable = thread.switch.is_some()
            && ((ran && !switched) || (switched && thread.switch_out.is_some_and(|o| o.state == Some('R'))));
        if runnable {
            count_offcpu(thread, target, prefetch, stats, period_ns);
            return true;
        }
        if !thread.offcpu_valid {
            // Back to sleep where it slept last time (a worker loop): the last switch-out
            // has the registers of the last observation, so reuse it with the state the
            // record gives, without reading /proc (the syscall is assumed the same).
            if let (Some(out), Some(prev)) = (thread.switch_out, thread.offcpu.as_mut()) {
                let same_place = prev.key.0.sp_pc() == Some((out.sp, out.ip)) && prev.key.1 == out.bp;
                if let (true, Some(letter)) = (same_place, out.state.filter(|l| *l != 'R')) {
                    if let Some(state) = state::observe(letter, &prev.key.0) {
                        prev.state = state;
                        thread.offcpu_valid = true;
                    }
                }
            }
        }
        if !thread.offcpu_valid {
            // `syscall` waits until the thread is off its CPU (or says "running"), and the
            // sched_switch record of that switch-out is written before: read it after.
            let Ok(syscall) = proc_files.syscall() else { return false };
            if let Some(switch) = thread.switch.as_mut() {
                drain_switch(switch, switch_tp, &mut thread.switch_out);
            }
            let matching = match (thread.switch_out, syscall.sp_pc()) {
                (Some(out), Some((sp, pc))) if out.sp == sp && out.ip == pc => Some(out),
                _ => None,
            };
            // The switch record says how it left the CPU (S, D, ...), which spares a
            // read of /proc/.../stat; without one, read it.
            let letter = match (&syscall, matching.and_then(|o| o.state)) {
                (Syscall::Running, _) => 'R',
                (_, Some(letter)) => letter,
                (_, None) => match proc_files.state() {
                    Ok(letter) => letter,
                    Err(_) => return false,
                },
            };
            if matches!(letter, 'Z' | 'X' | 'x') {
                return false;
            }
            if let (Some(state), true) = (state::observe(letter, &syscall), syscall != Syscall::Running) {
                let bp = matching.map(|o| o.bp);
                let key = (syscall, bp.unwrap_or(u64::MAX));
                let stack = match &thread.offcpu {
                    Some(prev) if prev.key == key && bp.is_some() => prev.stack.clone(),
                    _ => offcpu_stack(
                        thread.pid,
                        &syscall,
                        bp,
                        opts,
                        target,
                        files,
                        symbolizer,
                        stats,
                        scratch_addrs,
                        scratch_stack,
                    ),
                };
                thread.offcpu = Some(OffCpu { stack, state, key });
                thread.offcpu_valid = true;
            }
        }
        count_offcpu(thread, target, prefetch, stats, period_ns);
        true
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
            let counts = std::mem::take(&mut target.counts);
            let start = target.window_start_ms;
            let end = now_ms.max(start + 1);
            target.window_start_ms = end;
            let frames: Vec<RawFrame> = counts.keys().flat_map(|(s, _)| s.iter().copied()).collect();
            self.symbolizer.resolve(&frames);
            let mut builder = ProfileBuilder::new(service, start, end, period_ns)
                .label("pid", &pid.to_string())
                .label("process", &target.comm)
                .label("exe", &target.exe);
            let mut names: Vec<Arc<str>> = Vec::new();
            for ((stack, state), count) in counts {
                names.clear();
                for frame in stack.iter().rev() {
                    names.extend(self.symbolizer.names(*frame).iter().cloned());
                }
                builder.add(&names, state.resolve(&names), count);
            }
            out.push(builder.finish());
            if target.exited {
                self.targets.remove(&pid);
            }
        }
        out
    }
}

/// Counts `n` RUNNABLE samples spread evenly over the stacks the thread was sampled on
/// since the last tick (each about n / len times, keeping their proportions), else on
/// its last on-CPU stack. False when it was never sampled on a CPU (nothing counted).
fn spread_recent(
    recent: &[Stack],
    last_oncpu: Option<&Stack>,
    target: &mut Target,
    prefetch: &mut Prefetch,
    n: u64,
) -> bool {
    if !recent.is_empty() {
        let len = recent.len() as u64;
        for i in 0..n {
            count(&mut target.counts, prefetch, &recent[(i * len / n) as usize], RUNNABLE, 1);
        }
        true
    } else if let Some(stack) = last_oncpu {
        count(&mut target.counts, prefetch, stack, RUNNABLE, n);
        true
    } else {
        false
    }
}

/// Adds off-CPU time to a thread's carry. Time a thread spent woken but waiting for a
/// CPU shows in its run delay only once it ran, after ticks that (not reading /proc)
/// counted it off-CPU: such overlap comes back as a negative `off_ns` and is kept as a
/// debt that later off-CPU time pays first, so nothing is counted twice.
fn add_offcpu_time(debt_ns: &mut i64, carry_ns: &mut u64, off_ns: i64) {
    let off = off_ns + *debt_ns;
    *debt_ns = off.min(0);
    *carry_ns += off.max(0) as u64;
}

/// Turns a thread's carried off-CPU time into samples of its last off-CPU observation.
fn count_offcpu(
    thread: &mut Thread,
    target: &mut Target,
    prefetch: &mut Prefetch,
    stats: &mut SamplerStats,
    period_ns: u64,
) {
    let Some(offcpu) = &thread.offcpu else {
        // Never seen off-CPU yet: keep a little for its first observation.
        thread.off_carry_ns = thread.off_carry_ns.min(MAX_OFF_CARRY_NS);
        return;
    };
    let samples = thread.off_carry_ns / period_ns;
    if samples > 0 {
        count(&mut target.counts, prefetch, &offcpu.stack, offcpu.state, samples);
        stats.offcpu_samples += samples;
        thread.off_carry_ns -= samples * period_ns;
    }
}

/// Adds `n` samples; a stack seen for the first time in this window is handed to the
/// symbolizer's worker, so names are ready by `take_profiles`.
fn count(
    counts: &mut FxHashMap<(Stack, Observed), u64>,
    prefetch: &mut Prefetch,
    stack: &Stack,
    state: Observed,
    n: u64,
) {
    match counts.entry((stack.clone(), state)) {
        std::collections::hash_map::Entry::Occupied(mut e) => *e.get_mut() += n,
        std::collections::hash_map::Entry::Vacant(e) => {
            prefetch.add(stack);
            e.insert(n);
        }
    }
}

/// Frames to hand to the symbolizer's worker: each frame once in the sampler's life,
/// sent in one batch at most every `PREFETCH_EVERY` (a message per new stack woke the
/// worker for nothing but cache hits; and each blazesym call stats the module file,
/// which was a third of the worker's time with a batch per `poll`).
#[derive(Default)]
struct Prefetch {
    seen: FxHashSet<RawFrame>,
    pending: Vec<RawFrame>,
    last_sent: Option<Instant>,
}

/// Longest a new frame waits before it goes to the symbolizer's worker (sooner when
/// `PREFETCH_BATCH` frames are waiting); `take_profiles` resolves whatever is left.
const PREFETCH_EVERY: Duration = Duration::from_secs(1);
const PREFETCH_BATCH: usize = 4096;

/// Distinct frames remembered by `Prefetch`; past this it forgets them all (and sends
/// frames again, which the symbolizer's cache answers), so memory stays bounded.
const MAX_PREFETCHED_FRAMES: usize = 1 << 20;

impl Prefetch {
    fn add(&mut self, stack: &[RawFrame]) {
        if self.seen.len() > MAX_PREFETCHED_FRAMES {
            self.seen.clear();
        }
        for frame in stack {
            if self.seen.insert(*frame) {
                self.pending.push(*frame);
            }
        }
    }

    fn send(&mut self, symbolizer: &Symbolizer) {
        let now = Instant::now();
        let due = self.last_sent.is_none_or(|t| now.duration_since(t) >= PREFETCH_EVERY);
        if !self.pending.is_empty() && (due || self.pending.len() >= PREFETCH_BATCH) {
            symbolizer.prefetch(std::mem::take(&mut self.pending));
            self.last_sent = Some(now);
        }
    }
}

/// Keeps the last sched_switch record of a thread (user registers, state).
fn drain_switch(
    switch: &mut PerfEvent,
    tp: Option<&perf::SwitchTracepoint>,
    last: &mut Option<perf::SwitchOut>,
) -> usize {
    switch.drain_last_sample(|record| {
        if let EventRecord::Sample(s) = record {
            if let Some(out) = tp.and_then(|tp| tp.parse(&s)) {
                *last = Some(out);
            }
        }
    })
}

/// The stack of one perf sample, leaf first: kernel frames (if asked), then user frames
/// unwound with DWARF or taken from the frame-pointer callchain.
fn sample_stack(
    sample: &SampleRecord<'_>,
    opts: &SamplerOptions,
    target: &mut Target,
    files: &mut FileCache,
    symbolizer: &Symbolizer,
    stats: &mut SamplerStats,
    addrs: &mut Vec<u64>,
) -> Option<Stack> {
    let mut frames: Vec<RawFrame> = Vec::with_capacity(64);
    let mut user_chain: Vec<u64> = Vec::new();
    if let Some(chain) = &sample.callchain {
        let mut mode = 0u64;
        let mut first_in_mode = true;
        for i in 0..chain.len() {
            let Some(addr) = chain.get(i) else { break };
            if addr >= perf_event_open_sys::bindings::PERF_CONTEXT_MAX {
                mode = addr;
                first_in_mode = true;
                continue;
            }
            let lookup = if first_in_mode { addr } else { addr.saturating_sub(1) };
            first_in_mode = false;
            if mode == perf_event_open_sys::bindings::PERF_CONTEXT_KERNEL {
                if opts.kernel {
                    frames.push(RawFrame::Kernel(lookup));
                }
            } else if mode == perf_event_open_sys::bindings::PERF_CONTEXT_USER {
                user_chain.push(lookup);
            }
        }
    }
    addrs.clear();
    let end = match opts.unwind {
        UnwindMode::Dwarf => {
            let regs = sample.user_regs.as_ref()?;
            let (ip, sp, bp) = (regs.get(perf::REG_IP)?, regs.get(perf::REG_SP)?, regs.get(perf::REG_BP).unwrap_or(0));
            let (stack_data, _dyn_size) = sample.user_stack.as_ref()?;
            let bytes = stack_data.as_slice();
            target.image.refresh_if_unknown(ip, files, symbolizer);
            target.image.unwind(ip, sp, bp, &bytes, addrs)
        }
        UnwindMode::FramePointer => {
            addrs.extend_from_slice(&user_chain);
            WalkEnd::Complete
        }
    };
    count_walk(stats, end, addrs.len());
    target.image.frames_of_walk(addrs, files, symbolizer, &mut frames);
    if frames.is_empty() {
        return None;
    }
    Some(Arc::from(frames))
}

/// The user stack of a thread that is off-CPU, from the user sp/pc the kernel saved at
/// syscall entry and a copy of its stack memory. /proc does not give the frame pointer:
/// `bp` comes from the thread's last sched_switch record when that record matches (same
/// sp and pc); otherwise it is guessed (see `ProcessImage::unwind_unknown_bp` and
/// docs/thread-states.md).
#[allow(clippy::too_many_arguments)]
fn offcpu_stack(
    pid: u32,
    syscall: &Syscall,
    bp: Option<u64>,
    opts: &SamplerOptions,
    target: &mut Target,
    files: &mut FileCache,
    symbolizer: &Symbolizer,
    stats: &mut SamplerStats,
    addrs: &mut Vec<u64>,
    buf: &mut Vec<u8>,
) -> Stack {
    addrs.clear();
    let Some((sp, pc)) = syscall.sp_pc() else {
        return Arc::from(Vec::new());
    };
    target.image.refresh_if_unknown(pc, files, symbolizer);
    // Most sleeping stacks are shallow: read one page-sized chunk first, the whole
    // `stack_bytes` only if the walk ran out of it.
    let full = opts.stack_bytes.max(FIRST_STACK_READ as u32) as usize;
    let mut end = WalkEnd::Truncated;
    for len in [FIRST_STACK_READ, full] {
        addrs.clear();
        let got = procfs::read_memory(pid, sp, len, buf);
        end = match bp {
            Some(bp) => target.image.unwind(pc, sp, bp, buf, addrs),
            None => target.image.unwind_unknown_bp(pc, sp, buf, addrs),
        };
        if end == WalkEnd::Complete || got < len || len == full {
            break;
        }
    }
    count_walk(stats, end, addrs.len());
    let mut frames = Vec::with_capacity(addrs.len());
    target.image.frames_of_walk(addrs, files, symbolizer, &mut frames);
    Arc::from(frames)
}

/// Counts a walk that stopped early: a failure if nothing past the first frame came out.
fn count_walk(stats: &mut SamplerStats, end: WalkEnd, frames: usize) {
    if end == WalkEnd::Truncated {
        if frames <= 1 {
            stats.unwind_failures += 1;
        } else {
            stats.truncated += 1;
        }
    }
}

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;

fn permission_message(err: &dyn std::fmt::Display) -> String {
    let paranoid = std::fs::read_to_string("/proc/sys/kernel/perf_event_paranoid")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".to_string());
    format!(
        "hotframe agent needs root or CAP_PERFMON / CAP_SYS_ADMIN to sample other processes \
         (kernel.perf_event_paranoid = {paranoid}; perf_event_open said: {err}); run it with sudo, \
         or grant the capabilities: setcap cap_perfmon,cap_sys_ptrace+ep $(which hotframe)"
    )
}

/// Refuses early, with a message that says what to do, when the agent lacks privileges.
fn check_permissions() -> Result<(), SamplerError> {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let caps = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("CapEff:").and_then(|v| u64::from_str_radix(v.trim(), 16).ok()))
        })
        .unwrap_or(0);
    let has = |cap: u32| caps & (1u64 << cap) != 0;
    if !root && !has(CAP_PERFMON) && !has(CAP_SYS_ADMIN) {
        return Err(SamplerError::Permission(permission_message(&"not attempted: the agent is not root")));
    }
    match perf::probe() {
        Ok(()) => Ok(()),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EACCES) | Some(libc::EPERM)) => {
            Err(SamplerError::Permission(permission_message(&e)))
        }
        Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => Err(SamplerError::Permission(
            "perf_event_open is not available in this kernel or container (ENOSYS); \
             allow it in the seccomp profile or run the agent on the host"
                .to_string(),
        )),
        Err(e) => Err(SamplerError::Io { what: "probing perf_event_open".into(), source: e }),
    }
}

/// Five descriptors per thread (two perf events, three /proc files) add up: raise the
/// soft limit to the hard one.
fn raise_fd_limit() {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: plain getrlimit/setrlimit on a stack struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
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

    #[test]
    fn options_out_of_range_are_refused_with_the_range() {
        let err = Sampler::new(SamplerOptions { frequency_hz: 0, ..SamplerOptions::default() }).err();
        assert!(matches!(&err, Some(SamplerError::BadOption(m)) if m.contains("1 to 10000")), "{err:?}");
        let err = Sampler::new(SamplerOptions { stack_bytes: 100, ..SamplerOptions::default() }).err();
        assert!(matches!(&err, Some(SamplerError::BadOption(m)) if m.contains("512 to 65528")), "{err:?}");
    }
}
