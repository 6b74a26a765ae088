//! Code a runtime generated at run time (JIT-compiled and interpreter code in anonymous
//! memory, with no ELF file and no `.eh_frame`), per target process: its names from the
//! runtime's perf map, a JVM asked to write that map, and the role of a JVM's own threads.
//!
//! Unwinding: framehop takes an address outside every module it knows for frame-pointer
//! code (its fallback rule) and goes back to DWARF CFI as soon as a return address lands
//! in a module (docs/runtimes.md); that covers JIT code built with frame pointers (Java
//! with -XX:+PreserveFramePointer, V8). CPython's perf trampolines have no frame pointer:
//! `step_python_trampoline` steps them by their fixed layout.
//!
//! In: code addresses no module holds, the paths of the process's mappings, thread ids.
//! Out: `RawFrame::Named` frames (a method, a stub, `Interpreter`), a root frame
//! `[jvm] <role>` for a JVM's internal threads. A JVM writes its perf map only when asked:
//! `Compiler.perfmap` is sent to it (the attach protocol, `jvm_attach.rs`, else the `jcmd`
//! program; as the JVM's user, on a thread of its own, at most `JCMD_TIMEOUT`) when the JVM
//! is first seen, every 30-60 s (jittered), and sooner when many of its frames have no
//! name; failures are logged once per process and counted.
//! Must not: block the sampling loop on a child process, or read the map more often than
//! `REREAD_EVERY`.

use crate::symbolize::perfmap::{self, PerfMap};
use crate::symbolize::{RawFrame, Symbolizer};
use framehop::x86_64::UnwindRegsX86_64;
use rustc_hash::FxHashMap;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A perf map is read again for an address it does not name at most this often.
const REREAD_EVERY: Duration = Duration::from_millis(200);

/// Mean time between two perf map dumps of a JVM (jittered by ±1/3: 30 to 60 s).
const DUMP_EVERY: Duration = Duration::from_secs(45);

/// Unnamed frames of a JVM that make the next dump come early...
const UNNAMED_FOR_EARLY_DUMP: u64 = 200;

/// ... but not earlier than this after the first one (a JVM compiles most of its hot
/// code in its first seconds, often after attach)...
const FIRST_DUMP_GAP: Duration = Duration::from_secs(5);

/// ... or this after any later one (some frames never get a name: a JVM rewriting a
/// large map every few seconds would cost it and the agent for nothing).
const MIN_DUMP_GAP: Duration = Duration::from_secs(15);

/// A `jcmd` run longer than this is killed.
const JCMD_TIMEOUT: Duration = Duration::from_secs(20);

/// Threads kept in the role cache of one process before it is cleared (tid reuse,
/// thread churn).
const MAX_THREAD_ROLES: usize = 4096;

/// JVM perf map dumps run, since the process started (every sampler).
pub(super) static PERFMAP_DUMPS: AtomicU64 = AtomicU64::new(0);
/// JVM perf map dumps that failed (no jcmd, not a HotSpot JVM, timeout).
pub(super) static PERFMAP_DUMP_FAILURES: AtomicU64 = AtomicU64::new(0);
/// Frames named from a perf map.
pub(super) static JIT_FRAMES_NAMED: AtomicU64 = AtomicU64::new(0);

/// What the `jcmd` thread and the sampler share.
#[derive(Default)]
struct Dump {
    running: AtomicBool,
    /// Finished dumps: a new one means the map was rewritten.
    generation: AtomicU64,
    failure_logged: AtomicBool,
}

/// A JVM target.
struct Jvm {
    dump: Arc<Dump>,
    /// The generation the map was last read at.
    read_generation: u64,
    next_dump: Instant,
    last_dump: Option<Instant>,
    /// Dumps started so far.
    dumps: u32,
    unnamed_since_dump: u64,
    /// tid -> the root frame of an internal thread (None: a Java thread).
    roles: FxHashMap<u32, Option<RawFrame>>,
}

/// The run-time generated code of one process.
pub(super) struct JitCode {
    pid: u32,
    map: Option<PerfMap>,
    last_read: Option<Instant>,
    jvm: Option<Jvm>,
}

impl JitCode {
    pub(super) fn new(pid: u32) -> JitCode {
        JitCode { pid, map: None, last_read: None, jvm: None }
    }

    /// Notes a mapping of the process: `libjvm.so` makes it a JVM, whose perf map is
    /// asked for at once.
    pub(super) fn note_mapping(&mut self, path: &str) {
        if self.jvm.is_none() && path.trim_end_matches(" (deleted)").ends_with("/libjvm.so") {
            tracing::debug!(pid = self.pid, "a JVM: asking it for its perf map");
            self.jvm = Some(Jvm {
                dump: Arc::default(),
                read_generation: 0,
                next_dump: Instant::now(),
                last_dump: None,
                dumps: 0,
                unnamed_since_dump: 0,
                roles: FxHashMap::default(),
            });
        }
    }

    /// Whether `addr` is in a CPython perf trampoline, as the map read so far says.
    pub(super) fn is_python_trampoline(&self, addr: u64) -> bool {
        self.map.as_ref().is_some_and(|m| m.is_python_trampoline(addr))
    }

    /// Whether the perf map, as read so far, names `addr` (no I/O).
    pub(super) fn knows(&self, addr: u64) -> bool {
        self.map.as_ref().is_some_and(|m| m.lookup(addr).is_some())
    }

    /// The frame of code address `addr` outside every module: its perf map name, the map
    /// read again (at most every `REREAD_EVERY`) if it does not name it yet.
    pub(super) fn frame(&mut self, addr: u64, symbolizer: &Symbolizer) -> Option<RawFrame> {
        self.maybe_dump();
        let pid = self.pid;
        let map = self.map.get_or_insert_with(|| PerfMap::new(perfmap::map_path_of(pid)));
        if let Some(jvm) = self.jvm.as_mut() {
            let generation = jvm.dump.generation.load(Ordering::Acquire);
            if generation != jvm.read_generation {
                jvm.read_generation = generation;
                map.reset();
                self.last_read = None;
            }
        }
        if let Some(frame) = map.lookup(addr) {
            JIT_FRAMES_NAMED.fetch_add(1, Ordering::Relaxed);
            return Some(frame);
        }
        if self.last_read.is_none_or(|t| t.elapsed() >= REREAD_EVERY) {
            self.last_read = Some(Instant::now());
            match map.refresh(symbolizer) {
                Ok(n) if n > 0 => tracing::debug!(pid, regions = n, "perf map read"),
                Ok(_) => {}
                Err(err) => tracing::debug!(pid, %err, "perf map"),
            }
            if let Some(frame) = map.lookup(addr) {
                JIT_FRAMES_NAMED.fetch_add(1, Ordering::Relaxed);
                return Some(frame);
            }
        }
        if let Some(jvm) = self.jvm.as_mut() {
            jvm.unnamed_since_dump += 1;
        }
        None
    }

    /// Starts a perf map dump of a JVM when one is due and none runs.
    fn maybe_dump(&mut self) {
        let Some(jvm) = self.jvm.as_mut() else { return };
        let now = Instant::now();
        let gap = if jvm.dumps <= 1 { FIRST_DUMP_GAP } else { MIN_DUMP_GAP };
        let early = jvm.unnamed_since_dump >= UNNAMED_FOR_EARLY_DUMP
            && jvm.last_dump.is_none_or(|t| now.duration_since(t) >= gap);
        if !(now >= jvm.next_dump || early) || jvm.dump.running.swap(true, Ordering::AcqRel) {
            return;
        }
        jvm.last_dump = Some(now);
        jvm.dumps += 1;
        jvm.next_dump = now + crate::upload::jittered(DUMP_EVERY, 1.0 / 3.0);
        jvm.unnamed_since_dump = 0;
        let (pid, dump) = (self.pid, jvm.dump.clone());
        let spawned = std::thread::Builder::new().name("hotframe-jcmd".into()).spawn(move || {
            let result = dump_perf_map(pid);
            PERFMAP_DUMPS.fetch_add(1, Ordering::Relaxed);
            match result {
                Ok(()) => {
                    dump.generation.fetch_add(1, Ordering::AcqRel);
                }
                Err(why) => {
                    PERFMAP_DUMP_FAILURES.fetch_add(1, Ordering::Relaxed);
                    if !dump.failure_logged.swap(true, Ordering::AcqRel) {
                        tracing::warn!(pid, "cannot ask the JVM for its perf map (jcmd {pid} Compiler.perfmap): {why}; its JIT frames stay unnamed");
                    }
                }
            }
            dump.running.store(false, Ordering::Release);
        });
        if spawned.is_err() {
            jvm.dump.running.store(false, Ordering::Release);
        }
    }

    /// The root frame of thread `tid` if it is one of a JVM's own threads (GC, JIT
    /// compiler, VM thread, the launcher's primordial thread), from its name in
    /// /proc/PID/task/TID/comm; None for Java threads and other runtimes.
    pub(super) fn thread_role(&mut self, tid: u32, symbolizer: &Symbolizer) -> Option<RawFrame> {
        let jvm = self.jvm.as_mut()?;
        if let Some(role) = jvm.roles.get(&tid) {
            return *role;
        }
        if jvm.roles.len() >= MAX_THREAD_ROLES {
            jvm.roles.clear();
        }
        let comm = std::fs::read_to_string(format!("/proc/{}/task/{tid}/comm", self.pid)).ok()?;
        let role = jvm_thread_role(comm.trim_end_matches('\n'), tid == self.pid).map(|r| symbolizer.intern(r));
        jvm.roles.insert(tid, role);
        role
    }
}

/// One unwinding step out of a CPython perf trampoline entered by a call (`sub $8,%rsp;
/// call *%rcx`): its caller's return address is above the 8 bytes it reserved, and it
/// leaves `rbp` alone. Ok(None) if that slot holds 0 (end of stack).
pub(super) fn step_python_trampoline<F: FnMut(u64) -> Result<u64, ()>>(
    regs: &mut UnwindRegsX86_64,
    read_stack: &mut F,
) -> Result<Option<u64>, ()> {
    let sp = regs.sp();
    let ret = read_stack(sp.checked_add(8).ok_or(())?)?;
    regs.set_sp(sp.checked_add(16).ok_or(())?);
    Ok((ret != 0).then_some(ret))
}

/// The root frame name of a HotSpot thread named `comm` (15 bytes at most, as the kernel
/// keeps it) that is not a Java thread; `primordial` for the thread whose tid is the pid
/// (the `java` launcher, waiting for the main Java thread).
pub fn jvm_thread_role(comm: &str, primordial: bool) -> Option<&'static str> {
    if primordial {
        return Some("[jvm] launcher");
    }
    const ROLES: &[(&str, &str)] = &[
        ("GC Thread#", "[jvm] GC"),
        ("G1 ", "[jvm] GC"),
        ("ParGC Thread#", "[jvm] GC"),
        ("Z", "[jvm] GC"),
        ("Shenandoah", "[jvm] GC"),
        ("C1 CompilerThre", "[jvm] JIT compiler"),
        ("C2 CompilerThre", "[jvm] JIT compiler"),
        ("Sweeper thread", "[jvm] JIT compiler"),
        ("VM Thread", "[jvm] VM"),
        ("VM Periodic Tas", "[jvm] VM"),
        ("Service Thread", "[jvm] VM"),
        ("Monitor Deflati", "[jvm] VM"),
    ];
    ROLES
        .iter()
        .find(|(prefix, _)| match *prefix {
            // ZGC's threads: ZWorker, ZDirector, ZDriver, ZStat, ZUnmapper...
            "Z" => comm.starts_with('Z') && comm[1..].starts_with(char::is_uppercase),
            prefix => comm.starts_with(prefix),
        })
        .map(|(_, role)| *role)
}

/// Asks the JVM `pid` for its perf map as its user (the attach mechanism accepts only its
/// own user): through the attach protocol (`jvm_attach`), else by running `jcmd PID
/// Compiler.perfmap` (the `jcmd` of the JVM's own JDK if it has one).
fn dump_perf_map(pid: u32) -> Result<(), String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|e| format!("pid {pid}: {e}"))?;
    let id_of = |key: &str| -> Option<u32> {
        // "Uid:\treal\teffective\tsaved\tfs": the effective one.
        status.lines().find_map(|l| l.strip_prefix(key))?.split_whitespace().nth(1)?.parse().ok()
    };
    let (uid, gid) = (id_of("Uid:").ok_or("no Uid in status")?, id_of("Gid:").ok_or("no Gid in status")?);
    // The attach protocol directly first: no second JVM to start.
    let nspid = perfmap::namespaced_pid(&status).unwrap_or(pid);
    match super::jvm_attach::jcmd(pid, nspid, (uid, gid), "Compiler.perfmap", JCMD_TIMEOUT) {
        Ok(_) => return Ok(()),
        Err(why) => tracing::debug!(pid, "attach protocol: {why}; running jcmd"),
    }
    let mut child = Command::new(jcmd_of(pid))
        .arg(pid.to_string())
        .arg("Compiler.perfmap")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .uid(uid)
        .gid(gid)
        .spawn()
        .map_err(|e| format!("cannot run jcmd: {e}"))?;
    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => return Err(format!("jcmd exited with {status}")),
            Ok(None) if started.elapsed() > JCMD_TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("jcmd did not finish within {} s", JCMD_TIMEOUT.as_secs()));
            }
            // A thread of its own waits for a child process: polling is the bounded wait.
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("waiting for jcmd: {e}")),
        }
    }
}

/// `jcmd` beside the JVM's `java` (seen from the host through /proc/PID/root when it is
/// there), else the one on PATH.
fn jcmd_of(pid: u32) -> PathBuf {
    let beside = std::fs::read_link(format!("/proc/{pid}/exe"))
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("jcmd")))
        .map(|jcmd| PathBuf::from(format!("/proc/{pid}/root{}", jcmd.display())));
    beside.filter(|p| p.is_file()).unwrap_or_else(|| PathBuf::from("jcmd"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hotspot_internal_threads_have_roles_and_java_threads_none() {
        assert_eq!(jvm_thread_role("java", true), Some("[jvm] launcher"));
        for (comm, role) in [
            ("GC Thread#0", "[jvm] GC"),
            ("G1 Main Marker", "[jvm] GC"),
            ("G1 Conc#0", "[jvm] GC"),
            ("ZWorker#3", "[jvm] GC"),
            ("C2 CompilerThre", "[jvm] JIT compiler"),
            ("C1 CompilerThre", "[jvm] JIT compiler"),
            ("VM Thread", "[jvm] VM"),
            ("VM Periodic Tas", "[jvm] VM"),
        ] {
            assert_eq!(jvm_thread_role(comm, false), Some(role), "{comm}");
        }
        for java in [
            "java",
            "main",
            "Finalizer",
            "Reference Handl",
            "Signal Dispatch",
            "rt-compute",
            "Zookeeper",
            "http-nio-8080-e",
        ] {
            assert_eq!(jvm_thread_role(java, false), None, "{java}");
        }
    }
}
