//! The external agent's sampling core (Linux, x86_64): sample a live set of target
//! processes with no code change, from their first sample to their exit, whatever their
//! number and lifetime, at a cost that follows the samples, not the context switches.
//!
//! In: roots (`attach`: a process and its descendants) and/or a name pattern
//! (`select_matching`). Out: `model::Profile`s (one per target process per
//! `take_profiles`; processes that lived and died inside one window are merged per
//! parent and program) whose samples carry a thread state, plus `SamplerEvent`s and
//! `SamplerStats`.
//!
//! How: one system-wide cpu-clock event per online CPU samples whatever runs there
//! (user registers plus a user-stack copy, unwound with framehop from `.eh_frame`, or a
//! frame-pointer callchain); samples of processes that are not targets are dropped after
//! their header. The same events carry the host's fork, exit, exec and mmap records,
//! read in time order across CPUs, which keep the target set (`selection.rs`) and each
//! target's code (`unwind.rs`; a forked child shares its parent's image) up to date.
//! On-CPU samples are RUNNABLE. In wall-clock mode a jittered tick, paced so that its
//! /proc reads stay within a budget, splits each target thread's time with schedstat
//! and, within an observation budget, observes threads that are off CPU (state, syscall,
//! stack read with process_vm_readv and unwound); off-CPU time goes to the latest
//! observation (`accounting.rs`). No per-thread perf event exists. Names come from
//! `crate::symbolize` at `take_profiles`. See docs/agent.md and docs/thread-states.md.
//!
//! Files: this one holds `Sampler` (attach, poll, take_profiles) and the types it
//! reports; `options.rs` the options; `error.rs` `SamplerError`; `privileges.rs` the
//! capability checks; `selection.rs` which processes are targets; `drain.rs` waiting on
//! and reading the per-CPU rings (samples, fork, exit, exec, mmap); `ticks.rs` the
//! wall-clock tick and its budgets; `accounting.rs` one thread's time; `stacks.rs`
//! stacks from samples and from sleeping threads; `profiles.rs` the counted stacks and
//! the profiles built from them; `prefetch.rs` batches of frames for the symbolizer.
//! Below them: `perf.rs` (events and ring buffers), `procfs.rs` (/proc), `unwind.rs`
//! (framehop), `state.rs` (the thread-state rules).
//!
//! Must not: touch the network, block longer than `poll`'s `max_wait`, or stop the
//! target (no ptrace).

mod accounting;
mod bp_guess;
mod drain;
mod error;
mod jit;
mod jvm_attach;
mod options;
pub mod perf;
mod prefetch;
mod privileges;
pub mod procfs;
mod profiles;
pub mod runtime_state;
pub mod selection;
mod stacks;
pub mod state;
mod ticks;
pub mod unwind;

pub use error::SamplerError;
pub use options::{SamplerOptions, UnwindMode};

use crate::model::Profile;
use crate::symbolize::{RawFrame, Symbolizer};
use accounting::ThreadClock;
use perf::{EventConfig, PerfEvent, RecordRef};
use prefetch::Prefetch;
use procfs::ThreadFiles;
use profiles::StackCounts;
use rustc_hash::{FxHashMap, FxHashSet};
use selection::{ProcessTag, Selection, Tagger};
use serde::{Deserialize, Serialize};
use stacks::StackWalker;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use ticks::Ticker;
use unwind::ProcessImage;

/// Something that happened to the targets during `poll`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SamplerEvent {
    /// A target process exited; its last samples are still in the next `take_profiles`.
    Exited(u32),
    /// A thread of a target is now sampled too.
    ThreadFollowed {
        /// The target.
        pid: u32,
        /// The new thread.
        tid: u32,
    },
    /// A process became a target.
    ProcessFollowed {
        /// The process.
        pid: u32,
        /// Why.
        why: Why,
    },
    /// The kernel dropped records (samples, forks, exits) because a ring buffer was full.
    Lost {
        /// Records dropped.
        count: u64,
    },
}

/// Why a process is a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Why {
    /// Attached by the caller (`--pid`, `-- CMD`).
    Attached,
    /// A descendant of a target (fork), found by its fork record or in /proc.
    Child,
    /// Its comm or command line matches the name pattern.
    Matched,
}

/// The sampler's own health counters, since `Sampler::new`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct SamplerStats {
    /// On-CPU samples of targets.
    pub samples: u64,
    /// Samples of other processes, dropped after their header.
    pub other_samples: u64,
    /// Wall-clock samples of threads off-CPU (WAITING, TIMED_WAITING, BLOCKED, IO).
    pub offcpu_samples: u64,
    /// Off-CPU samples whose stack reached the thread's root.
    pub offcpu_rooted_samples: u64,
    /// RUNNABLE samples for time spent waiting for a CPU (schedstat run delay).
    pub runqueue_samples: u64,
    /// Wall-clock mode counts on-CPU samples by schedstat's CPU time, over the stacks
    /// the per-CPU events sampled: samples added for CPU time no sample was read for
    /// (records lost to a full ring)...
    pub oncpu_topup_samples: u64,
    /// ... and samples left out because more were read than the CPU time gives.
    pub oncpu_dropped_samples: u64,
    /// Records the kernel dropped (ring buffer full): samples, forks, exits, mmaps.
    pub lost: u64,
    /// Stacks that could not be unwound past the first frame.
    pub unwind_failures: u64,
    /// Stacks that stopped before the thread's root frame.
    pub truncated: u64,
    /// Processes that became targets since the start, including those that exited.
    pub processes_followed: u64,
    /// Threads of targets followed since the start, including those that exited.
    pub threads_followed: u64,
    /// Threads of targets alive right now.
    pub threads_active: u64,
    /// Wall-clock ticks done.
    pub ticks: u64,
    /// Off-CPU observations made (state, syscall, stack).
    pub observations: u64,
    /// Observations put off to a later tick by the observation budget.
    pub observations_deferred: u64,
    /// Observations given up because the thread kept running between the reads.
    pub inconsistent_reads: u64,
    /// Threads whose /proc files could not be opened for lack of file descriptors.
    pub uncovered_fd_limit: u64,
    /// Observations refused because the process's memory may not be read (ptrace).
    pub uncovered_unreadable: u64,
    /// CPUs whose sampling event could not be opened.
    pub uncovered_cpus: u64,
    /// Frames named from the symbolization cache.
    pub symbol_cache_hits: u64,
    /// Frames that needed blazesym.
    pub symbol_cache_misses: u64,
    /// Frames of run-time generated code named from a runtime's perf map (every sampler
    /// of this process).
    pub jit_frames_named: u64,
    /// `jcmd PID Compiler.perfmap` runs asking a JVM for its perf map (every sampler).
    pub perfmap_dumps: u64,
    /// Those that failed (no jcmd, timeout, not HotSpot).
    pub perfmap_dump_failures: u64,
}

impl SamplerStats {
    /// Share of off-CPU samples whose stack reached the thread's root (1 when none yet).
    pub fn offcpu_rooted_ratio(&self) -> f64 {
        if self.offcpu_samples == 0 {
            1.0
        } else {
            self.offcpu_rooted_samples as f64 / self.offcpu_samples as f64
        }
    }
}

/// A stack, leaf first.
type Stack = Arc<[RawFrame]>;

/// A process's code, shared by a parent and the children it forked until one of them
/// maps new code or execs.
type SharedImage = Arc<Mutex<ProcessImage>>;

/// One sampled thread of a target (wall-clock mode): its /proc files and accounting.
struct Thread {
    pid: u32,
    /// schedstat, syscall and stat, kept open; opened at the first tick that finds the
    /// thread alive (a thread that lives less than one tick costs no open).
    files: Option<ThreadFiles>,
    /// Its files could not be opened for lack of descriptors: no off-CPU states.
    no_files: bool,
    /// Started at its first tick.
    clock: Option<ThreadClock>,
}

/// One target process.
struct Target {
    comm: String,
    exe: String,
    image: SharedImage,
    counts: StackCounts,
    window_start_ms: i64,
    /// Its parent (merging short-lived processes into their parent's group).
    parent: u32,
    /// Target because it descends from a root (stays one through exec).
    by_descent: bool,
    /// Followed after the last `take_profiles`: if it also exited, its whole life is in
    /// this window.
    new_in_window: bool,
    exited: bool,
    /// Exec'd into a program that is not a target (`--name`): its counts so far are kept,
    /// its later samples are another program's and are not.
    left: bool,
    /// Service and labels from the agent's tagger (`--all`); None: the caller's service.
    tag: Option<Arc<ProcessTag>>,
}

/// Causes of incomplete coverage, each logged once.
#[derive(Default)]
struct Logged {
    lost: bool,
    fd_limit: bool,
    unreadable: bool,
}

/// Samples a set of target processes; see the module documentation.
pub struct Sampler {
    opts: SamplerOptions,
    period: Duration,
    cpus: Vec<PerfEvent>,
    selection: Selection,
    targets: FxHashMap<u32, Target>,
    /// Processes known not to be targets (until their exit or exec).
    others: FxHashSet<u32>,
    threads: FxHashMap<u32, Thread>,
    walker: StackWalker,
    symbolizer: Symbolizer,
    stats: SamplerStats,
    ticker: Ticker,
    /// Next /proc check of targets' threads and liveness.
    next_rescan: Instant,
    /// Next /proc scan for matching processes or descendants missed by the records.
    next_discovery: Instant,
    discovery_every: Duration,
    scratch_fds: Vec<libc::pollfd>,
    scratch_refs: Vec<RecordRef>,
    prefetch: Prefetch,
    pending: Vec<SamplerEvent>,
    logged: Logged,
    /// Names each new target's service (host-wide agent); None: one service for all.
    tagger: Option<Tagger>,
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

/// Host-wide, a module with more DWARF than this is named from its symbol table: the
/// host's large debug builds (a compiler, a test binary) cost hundreds of MiB of line
/// tables otherwise (issue 15: 503 MiB). Services' own binaries are seldom above it.
const HOSTWIDE_DWARF_MAX_BYTES: u64 = 16 << 20;

/// Host-wide, the tick spends this share of its budgets (0.1% of a core on schedstat
/// reads, 0.2% on off-CPU observations): sampling every process costs 0.8% already
/// (benches/hostwide.rs, `--cpu-only`). Off-CPU time stays exact; its stacks are
/// observed less often.
const HOSTWIDE_TICK_SHARE: f64 = 0.5;

/// Threads and liveness of every target are re-read from /proc this often, as a
/// backstop to fork and exit records (lost when a ring overflows).
const RESCAN_INTERVAL: Duration = Duration::from_secs(2);

/// The same for a host-wide agent while no records are lost.
const HOSTWIDE_RESCAN_INTERVAL: Duration = Duration::from_secs(20);

/// /proc is scanned for matching processes (or descendants of roots) this often, as a
/// backstop to exec and fork records.
const DISCOVERY_INTERVAL: Duration = Duration::from_secs(10);

impl Sampler {
    /// A sampler with no targets, its per-CPU events open. Fails with `Permission` when
    /// system-wide perf_event_open is not allowed (not root, no CAP_PERFMON /
    /// CAP_SYS_ADMIN).
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
        let online = perf::online_cpus()
            .map_err(|source| SamplerError::Io { what: "reading the online CPUs".into(), source })?;
        let mut cpus = Vec::with_capacity(online.len());
        let mut stats = SamplerStats::default();
        let mut first_error = None;
        for cpu in online {
            match PerfEvent::open_cpu(cpu, &config) {
                Ok(event) => cpus.push(event),
                Err(e) if matches!(e.raw_os_error(), Some(libc::EACCES) | Some(libc::EPERM)) => {
                    return Err(SamplerError::Permission(privileges::permission_message(&e)))
                }
                Err(e) => {
                    tracing::warn!(cpu, "cannot sample CPU {cpu}: {e}; what runs there is not covered");
                    stats.uncovered_cpus += 1;
                    first_error.get_or_insert((cpu, e));
                }
            }
        }
        if cpus.is_empty() {
            let (cpu, source) = first_error.unwrap_or((0, std::io::Error::from(std::io::ErrorKind::NotFound)));
            return Err(SamplerError::Perf { cpu, source });
        }
        let now = Instant::now();
        Ok(Sampler {
            opts,
            period: Duration::from_nanos(period_ns),
            cpus,
            selection: Selection::new(),
            targets: FxHashMap::default(),
            others: FxHashSet::default(),
            threads: FxHashMap::default(),
            walker: StackWalker::new(opts),
            symbolizer: Symbolizer::new(),
            stats,
            ticker: Ticker::new(Duration::from_nanos(period_ns), now),
            next_rescan: now + RESCAN_INTERVAL,
            next_discovery: now + DISCOVERY_INTERVAL,
            discovery_every: DISCOVERY_INTERVAL,
            scratch_fds: Vec::new(),
            scratch_refs: Vec::new(),
            prefetch: Prefetch::default(),
            pending: Vec::new(),
            logged: Logged::default(),
            tagger: None,
        })
    }

    /// The options in use.
    pub fn options(&self) -> SamplerOptions {
        self.opts
    }

    /// Starts sampling `pid` and every descendant it has or will have.
    pub fn attach(&mut self, pid: u32) -> Result<(), SamplerError> {
        if self.targets.get(&pid).is_some_and(|t| !t.exited) {
            self.selection.add_root(pid);
            return Ok(());
        }
        let gone = || SamplerError::NoSuchProcess(format!("pid {pid} is not running"));
        if !procfs::is_alive(pid) {
            return Err(gone());
        }
        self.selection.add_root(pid);
        let mut image = ProcessImage::new(pid);
        image.refresh(&mut self.walker.files, &self.symbolizer).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => gone(),
            _ => SamplerError::Io { what: format!("reading /proc/{pid}/maps"), source: e },
        })?;
        let parent = selection::parent_of(pid).unwrap_or(0);
        self.follow(pid, parent, true, Arc::new(Mutex::new(image)), Why::Attached);
        if !self.follow_threads_in_proc(pid) {
            self.targets.remove(&pid);
            return Err(gone());
        }
        // Descendants that exist already; later ones come with their fork records.
        let roots = std::iter::once(pid).collect();
        for child in selection::descendants_of(&roots) {
            self.follow_existing(child, true, Why::Child);
        }
        tracing::info!(pid, "attached");
        Ok(())
    }

    /// Samples every process whose comm or command line matches `pattern`, now and
    /// later (decided at each exec and at the first sample of a process never seen),
    /// never the caller or its ancestors. `/proc` is also scanned every `rescan` for
    /// matches the records did not show.
    pub fn select_matching(&mut self, pattern: regex::Regex, rescan: Duration) {
        self.selection.set_pattern(pattern);
        self.start_discovery(rescan);
    }

    /// Samples every process of the host (with a user space) but those `exclude` matches
    /// by comm or command line, now and later, never the caller or its ancestors;
    /// `tagger` names each one's service and labels (a fork inherits its parent's, an
    /// exec and the /proc scan every `rescan` name it again).
    pub fn select_all(&mut self, exclude: Option<regex::Regex>, rescan: Duration, tagger: Tagger) {
        self.selection.set_all(exclude);
        self.symbolizer.limit_dwarf(HOSTWIDE_DWARF_MAX_BYTES);
        self.ticker.share_budgets(HOSTWIDE_TICK_SHARE);
        self.tagger = Some(tagger);
        self.start_discovery(rescan);
    }

    /// Decides every process again (earlier decisions were made without the pattern),
    /// now and every `rescan` from /proc.
    fn start_discovery(&mut self, rescan: Duration) {
        self.discovery_every = rescan.max(Duration::from_millis(100));
        // Earlier decisions were made without the pattern.
        self.others.clear();
        self.discover();
    }

    /// Stops sampling `pid` and forgets what was accumulated for it.
    pub fn detach(&mut self, pid: u32) {
        self.threads.retain(|_, t| t.pid != pid);
        self.targets.remove(&pid);
        self.others.insert(pid);
        self.stats.threads_active = self.threads.len() as u64;
    }

    /// Target processes that are still alive.
    pub fn targets(&self) -> Vec<u32> {
        let mut out: Vec<u32> = self.targets.iter().filter(|(_, t)| !t.exited).map(|(p, _)| *p).collect();
        out.sort_unstable();
        out
    }

    /// Counters since `new`.
    pub fn stats(&self) -> SamplerStats {
        let sym = self.symbolizer.stats();
        let jit = |counter: &std::sync::atomic::AtomicU64| counter.load(std::sync::atomic::Ordering::Relaxed);
        SamplerStats {
            symbol_cache_hits: sym.cache_hits,
            symbol_cache_misses: sym.cache_misses,
            jit_frames_named: jit(&jit::JIT_FRAMES_NAMED),
            perfmap_dumps: jit(&jit::PERFMAP_DUMPS),
            perfmap_dump_failures: jit(&jit::PERFMAP_DUMP_FAILURES),
            ..self.stats
        }
    }

    /// Makes `pid` a target with `image`.
    fn follow(&mut self, pid: u32, parent: u32, by_descent: bool, image: SharedImage, why: Why) {
        self.others.remove(&pid);
        // What an earlier life of this pid counted in this window (it exec'd away from
        // the pattern and back, or the pid was reused) is kept, not overwritten.
        let (counts, window_start_ms) = match self.targets.remove(&pid) {
            Some(earlier) => (earlier.counts, earlier.window_start_ms),
            None => (StackCounts::default(), crate::model::time::now_ms()),
        };
        // A fork shares its parent's image and inherits its tag, comm and exe (a rename
        // comes as a comm record): no /proc read for each of a busy host's forks.
        // Anything else is read and named now.
        let (comm, exe, tag) = match self.targets.get(&parent) {
            Some(p) if Arc::ptr_eq(&p.image, &image) => (p.comm.clone(), p.exe.clone(), p.tag.clone()),
            parent => {
                let inherited = parent.map(|p| (p.comm.clone(), p.exe.clone())).unwrap_or_default();
                let tag = self.tagger.as_mut().and_then(|tagger| tagger(pid, None));
                (procfs::comm(pid).unwrap_or(inherited.0), procfs::exe(pid).unwrap_or(inherited.1), tag)
            }
        };
        self.targets.insert(
            pid,
            Target {
                comm,
                exe,
                image,
                counts,
                window_start_ms,
                parent,
                by_descent,
                new_in_window: why != Why::Attached,
                exited: false,
                left: false,
                tag,
            },
        );
        self.stats.processes_followed += 1;
        match why {
            Why::Child => tracing::debug!(pid, parent, "following a child of a target"),
            // Host-wide, every new process is one: not worth a line each.
            Why::Matched if self.tagger.is_some() => tracing::debug!(pid, "following process"),
            _ => tracing::info!(pid, ?why, "following process"),
        }
        self.pending.push(SamplerEvent::ProcessFollowed { pid, why });
    }

    /// Makes a process that exists already a target: its code from /proc, its threads.
    fn follow_existing(&mut self, pid: u32, by_descent: bool, why: Why) {
        if self.targets.get(&pid).is_some_and(|t| !t.exited) || self.selection.excluded(pid) {
            return;
        }
        let mut image = ProcessImage::new(pid);
        if image.refresh(&mut self.walker.files, &self.symbolizer).is_err() {
            return;
        }
        let parent = selection::parent_of(pid).unwrap_or(0);
        self.follow(pid, parent, by_descent, Arc::new(Mutex::new(image)), why);
        self.follow_threads_in_proc(pid);
    }

    /// Follows the threads /proc lists for target `pid` (wall-clock mode). False if the
    /// process is gone.
    fn follow_threads_in_proc(&mut self, pid: u32) -> bool {
        let Ok(tids) = procfs::thread_ids(pid) else { return false };
        if tids.is_empty() {
            return false;
        }
        for tid in tids {
            self.follow_thread(pid, tid);
        }
        true
    }

    /// Starts accounting thread `tid` of target `pid` (wall-clock mode only); its files
    /// are opened at the next tick.
    fn follow_thread(&mut self, pid: u32, tid: u32) {
        if !self.opts.wall_clock || self.threads.contains_key(&tid) {
            return;
        }
        self.threads.insert(tid, Thread { pid, files: None, no_files: false, clock: None });
        self.stats.threads_followed += 1;
        self.stats.threads_active = self.threads.len() as u64;
    }

    /// Waits up to `max_wait` (less if a tick or rescan is due first, or a ring buffer
    /// fills past its watermark), then reads every ring buffer in time order, keeps the
    /// target set and images up to date, unwinds and counts the targets' samples, and at
    /// a tick accounts for their threads' time. Returns what happened to the targets.
    pub fn poll(&mut self, max_wait: Duration) -> Result<Vec<SamplerEvent>, SamplerError> {
        let now = Instant::now();
        let mut wake = self.next_rescan.min(now + max_wait);
        if self.opts.wall_clock {
            wake = wake.min(self.ticker.next());
        }
        self.wait_for_data(wake.saturating_duration_since(now));
        self.drain_all();
        let now = Instant::now();
        if self.opts.wall_clock && now >= self.ticker.next() {
            self.tick(now, false);
        }
        self.prefetch.send(&self.symbolizer);
        if now >= self.next_rescan {
            // Host-wide the fork and exit records say it all unless some were lost (the
            // drain then brings the rescan forward): a rescan reads every process.
            self.next_rescan = now + if self.tagger.is_some() { HOSTWIDE_RESCAN_INTERVAL } else { RESCAN_INTERVAL };
            self.rescan();
        }
        if now >= self.next_discovery {
            self.next_discovery = now + crate::upload::jittered(self.discovery_every, 0.2);
            self.discover();
        }
        Ok(std::mem::take(&mut self.pending))
    }

    /// Checks liveness of every target and picks up threads no record announced.
    fn rescan(&mut self) {
        let pids: Vec<u32> = self.targets.iter().filter(|(_, t)| !t.exited).map(|(p, _)| *p).collect();
        // Threads known per process, counted once (host-wide: hundreds of processes).
        let mut known: FxHashMap<u32, usize> = FxHashMap::default();
        for thread in self.threads.values() {
            *known.entry(thread.pid).or_default() += 1;
        }
        for pid in pids {
            if !procfs::is_alive(pid) {
                self.mark_exited(pid);
                continue;
            }
            if self.opts.wall_clock {
                let tids = procfs::thread_ids(pid).unwrap_or_default();
                if tids.len() != known.get(&pid).copied().unwrap_or(0) {
                    for tid in tids {
                        if !self.threads.contains_key(&tid) {
                            self.follow_thread(pid, tid);
                            self.pending.push(SamplerEvent::ThreadFollowed { pid, tid });
                        }
                    }
                }
            }
        }
    }

    /// Scans /proc for processes the records did not show: matches of the name pattern,
    /// descendants of targets.
    fn discover(&mut self) {
        if let Some(tagger) = self.tagger.as_mut() {
            // A process moved to another cgroup without an exec is renamed here (one
            // /proc read per target unless it moved).
            for (pid, target) in self.targets.iter_mut().filter(|(_, t)| !t.exited) {
                if let Some(tag) = tagger(*pid, target.tag.as_deref()) {
                    target.tag = Some(tag);
                }
            }
        }
        if self.tagger.is_some() {
            // Host-wide every process is a target unless excluded: only pids never
            // decided need reading (was: every process's comm, command line and parent).
            for pid in selection::all_pids() {
                if self.targets.get(&pid).is_none_or(|t| t.exited) && !self.others.contains(&pid) {
                    self.decide_first_sight(pid);
                }
            }
            return;
        }
        if self.selection.has_pattern() {
            for pid in self.selection.matching_processes() {
                if self.targets.get(&pid).is_none_or(|t| t.exited) {
                    self.follow_existing(pid, false, Why::Matched);
                }
            }
        }
        let live: std::collections::HashSet<u32> = self.targets().into_iter().collect();
        if !live.is_empty() {
            for pid in selection::descendants_of(&live) {
                if !self.targets.contains_key(&pid) {
                    let by_descent =
                        selection::parent_of(pid).and_then(|p| self.targets.get(&p)).is_some_and(|p| p.by_descent);
                    self.follow_existing(pid, by_descent, Why::Child);
                }
            }
        }
    }

    /// Forgets a thread that is gone; its on-CPU stacks not counted yet count once each.
    fn drop_thread(&mut self, tid: u32) {
        let Some(thread) = self.threads.remove(&tid) else { return };
        self.stats.threads_active = self.threads.len() as u64;
        let (Some(clock), Some(target)) = (thread.clock.as_ref(), self.targets.get_mut(&thread.pid)) else { return };
        let mut tally =
            profiles::Tally { counts: &mut target.counts, prefetch: &mut self.prefetch, stats: &mut self.stats };
        clock.flush(self.period.as_nanos() as u64, &mut tally);
    }

    /// A target process exited: its threads are forgotten, its counts kept for the next
    /// `take_profiles`.
    fn mark_exited(&mut self, pid: u32) {
        let gone: Vec<u32> = self.threads.iter().filter(|(_, t)| t.pid == pid).map(|(tid, _)| *tid).collect();
        for tid in gone {
            self.drop_thread(tid);
        }
        if let Some(t) = self.targets.get_mut(&pid) {
            if !t.exited {
                t.exited = true;
                // Host-wide, processes come and go all the time: not worth a line each.
                if self.selection.is_root(pid) || (!t.new_in_window && self.tagger.is_none()) {
                    tracing::info!(pid, "target exited");
                } else {
                    tracing::debug!(pid, "target exited");
                }
                self.pending.push(SamplerEvent::Exited(pid));
            }
        }
    }

    /// Profiles of what was accumulated since the last call, over `[last take, now_ms)`;
    /// labels `pid`, `process` (comm) and `exe`. One per target process, except that
    /// processes whose whole life fell in this window (short-lived workers, `sh -c`
    /// children) are merged per (parent target, comm, exe), labelled with the parent's
    /// pid, so that a fork-per-connection server gives a few profiles, not thousands.
    /// Targets that exited are returned one last time, then forgotten. Profiles may be
    /// empty.
    pub fn take_profiles(&mut self, service: &str, now_ms: i64) -> Vec<Profile> {
        let period_ns = self.period.as_nanos() as u64;
        self.drain_all();
        if self.opts.wall_clock {
            self.tick(Instant::now(), true);
        }
        self.name_window_draining();
        let out = profiles::take_profiles(&mut self.targets, service, now_ms, period_ns, &self.symbolizer);
        self.targets.retain(|_, t| !t.exited);
        self.walker.files.prune();
        for t in self.targets.values_mut() {
            t.new_in_window = false;
        }
        out
    }
}

/// How often the rings are read while the symbolizer names a window's frames.
const DRAIN_WHILE_NAMING: Duration = Duration::from_millis(100);

impl Sampler {
    /// Has the symbolizer's worker name every frame counted so far, reading the rings
    /// while it works: a ring holds about 0.6 s of a busy CPU, and naming a large binary
    /// for the first time takes longer (host-wide, `take_profiles` waiting on it lost
    /// records). Frames the drains bring are sent again, a few rounds at most; what is
    /// left `take_profiles` names itself.
    fn name_window_draining(&mut self) {
        for _ in 0..3 {
            self.prefetch.flush(&self.symbolizer);
            let Some(done) = self.symbolizer.resolve_later(Vec::new()) else { return };
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = done.recv_timeout(DRAIN_WHILE_NAMING) {
                self.drain_all();
            }
            if !self.prefetch.has_pending() {
                return;
            }
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
}
