//! Profiling a JVM from outside (issue 16): the CPU the profiler spends per on-CPU sample
//! of a Java target (tests/fixtures/runtimes/Runtimes.java, `-XX:+PreserveFramePointer`:
//! one thread computing, four waiting, plus the JVM's own threads), for
//! - `hotframe agent --pid` (wall-clock, the default: every thread's state too), which
//!   asks the JVM for its perf map with jcmd and names JIT frames from it, uploading to a
//!   local server every 10 s;
//! - `hotframe agent --pid --cpu-only`;
//! - `perf record -F 99 -g -p PID` (frame-pointer call chains), then `perf script` naming
//!   the frames from the same perf map (`jcmd PID Compiler.perfmap` run before the JVM
//!   exits, its CPU counted with perf's),
//!
//! in interleaved rounds (a fresh random order each round), medians. Profiler CPU is
//! measured with wait4(2) on the profiler (and jcmd/perf script) processes, whole life;
//! per on-CPU sample = that CPU / (99 x the target's CPU seconds).
//!
//! Run: `cargo bench --bench runtimes` as root, with java, javac, jcmd and perf; a missing
//! one is named and the bench exits 0. Knobs: HOTFRAME_BENCH_ROUNDS (default 3),
//! HOTFRAME_BENCH_SECONDS (15), HOTFRAME_BIN (the hotframe binary; default: cargo's).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[path = "common/mod.rs"]
mod common;
use common::{env_u64, on_path};

const BUILT_BIN: &str = env!("CARGO_BIN_EXE_hotframe");
const HZ: f64 = 99.0;

fn bin() -> String {
    std::env::var("HOTFRAME_BIN").unwrap_or_else(|_| BUILT_BIN.to_string())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Profiler {
    Agent,
    AgentCpuOnly,
    PerfFp,
}

impl Profiler {
    fn name(self) -> &'static str {
        match self {
            Profiler::Agent => "hotframe agent (wall-clock)",
            Profiler::AgentCpuOnly => "hotframe agent --cpu-only",
            Profiler::PerfFp => "perf record -g + perf script",
        }
    }
}

/// One round of one profiler.
#[derive(Debug, Clone, Copy, Default)]
struct Run {
    /// Target CPU seconds over its life.
    target_cpu_s: f64,
    /// Profiler CPU seconds: the agent; perf record + jcmd + perf script.
    cpu_s: f64,
    /// Of which perf script (naming), seconds.
    naming_s: f64,
}

/// wait4 on a child: its CPU seconds (user + system).
fn wait_cpu(child: &Child) -> f64 {
    let mut status = 0;
    // SAFETY: wait4 on our own child with a zeroed rusage we own.
    unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut usage);
        let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        tv(usage.ru_utime) + tv(usage.ru_stime)
    }
}

/// The CPU seconds a command takes (run to its end, output discarded).
// Reaped by `wait_cpu` (wait4, for its CPU time), which clippy cannot see.
#[allow(clippy::zombie_processes)]
fn cpu_of(command: &mut Command) -> f64 {
    let child = command.stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("start a helper command");
    wait_cpu(&child)
}

// The workload is reaped by `wait_cpu` (wait4, for its CPU time), which clippy cannot see.
#[allow(clippy::zombie_processes)]
fn run_once(classes: &Path, server: &str, seconds: u64, profiler: Profiler, scratch: &Path) -> Run {
    let out = scratch.join("figures");
    let _ = std::fs::remove_file(out.with_extension("ready"));
    let workload = Command::new("java")
        .args(["-XX:+PreserveFramePointer", "-XX:CompileCommand=quiet"])
        .args(["-XX:CompileCommand=dontinline,Runtimes::alpha", "-XX:CompileCommand=dontinline,Runtimes::beta"])
        .arg("-cp")
        .arg(classes)
        .arg("Runtimes")
        .arg(&out)
        .arg(seconds.to_string())
        .stdout(Stdio::null())
        .spawn()
        .expect("start java");
    let pid = workload.id();
    let ready = Instant::now();
    while !out.with_extension("ready").exists() {
        assert!(ready.elapsed() < Duration::from_secs(60), "the JVM did not get ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    let spool = scratch.join("spool");
    let mut prof = match profiler {
        Profiler::Agent | Profiler::AgentCpuOnly => Command::new(bin())
            .args(["agent", "--server", server, "--service", "bench-java", "--pid", &pid.to_string()])
            .args(if profiler == Profiler::AgentCpuOnly { &["--cpu-only"][..] } else { &[][..] })
            .arg("--spool-dir")
            .arg(&spool)
            .env("HOTFRAME_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start hotframe agent"),
        Profiler::PerfFp => Command::new("perf")
            .args(["record", "-F", "99", "-g", "-p", &pid.to_string(), "-o"])
            .arg(scratch.join("perf.data"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start perf"),
    };
    let mut run = Run::default();
    if profiler == Profiler::PerfFp {
        // The same perf map the agent gets, asked for before the JVM exits.
        std::thread::sleep(Duration::from_secs(seconds.saturating_sub(2)));
        run.cpu_s += cpu_of(Command::new("jcmd").arg(pid.to_string()).arg("Compiler.perfmap"));
    }
    run.target_cpu_s = wait_cpu(&workload);
    // Both profilers stop when their target exits; perf is also asked politely.
    let deadline = Instant::now() + Duration::from_secs(30);
    let exited = |child: &Child| {
        // SAFETY: a zeroed siginfo_t we own; WNOWAIT peeks without reaping.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let rc =
            unsafe { libc::waitid(libc::P_PID, child.id(), &mut info, libc::WEXITED | libc::WNOHANG | libc::WNOWAIT) };
        // SAFETY: si_pid is valid to read after waitid.
        rc == 0 && unsafe { info.si_pid() } != 0
    };
    while !exited(&prof) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    if !exited(&prof) {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(prof.id() as libc::pid_t, libc::SIGINT) };
    }
    let mut stderr = String::new();
    if let Some(mut err) = prof.stderr.take() {
        let _ = err.read_to_string(&mut stderr);
    }
    run.cpu_s += wait_cpu(&prof);
    match profiler {
        Profiler::PerfFp => {
            let script = scratch.join("perf.script");
            let naming = cpu_of(Command::new("sh").arg("-c").arg(format!(
                "perf script -i {} > {}",
                scratch.join("perf.data").display(),
                script.display()
            )));
            run.naming_s = naming;
            run.cpu_s += naming;
            let _ = std::fs::remove_file(script);
            let _ = std::fs::remove_file(scratch.join("perf.data"));
        }
        _ => {
            let line = stderr.lines().rev().find(|l| l.contains("health:")).unwrap_or("");
            if line.is_empty() {
                eprintln!("note: no health line from the agent: {}", stderr.lines().last().unwrap_or(""));
            }
        }
    }
    let _ = std::fs::remove_dir_all(&spool);
    let _ = std::fs::remove_file(format!("/tmp/perf-{pid}.map"));
    run
}

fn median(mut values: Vec<f64>) -> f64 {
    values.retain(|v| v.is_finite());
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

fn main() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("runtimes bench: needs root (perf_event_open on another process); skipped");
        return;
    }
    let missing: Vec<&str> = ["java", "javac", "jcmd", "perf"].into_iter().filter(|p| on_path(p).is_none()).collect();
    if !missing.is_empty() {
        eprintln!("runtimes bench: {} not found (openjdk-17-jdk-headless, linux-perf); skipped", missing.join(", "));
        return;
    }
    let rounds = env_u64("HOTFRAME_BENCH_ROUNDS", 3);
    let seconds = env_u64("HOTFRAME_BENCH_SECONDS", 15).max(5);
    let scratch = tempfile::tempdir().expect("temp dir");
    let source: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/runtimes/Runtimes.java");
    let classes = scratch.path().join("classes");
    let compiled = Command::new("javac").arg("-d").arg(&classes).arg(&source).status().is_ok_and(|s| s.success());
    assert!(compiled, "javac {} failed", source.display());
    let (mut server, url) = common::start_server(&bin(), &scratch.path().join("store"));

    let profilers = [Profiler::Agent, Profiler::AgentCpuOnly, Profiler::PerfFp];
    let mut results: Vec<Vec<Run>> = vec![Vec::new(); profilers.len()];
    eprintln!("runtimes bench: {rounds} interleaved rounds x {seconds} s, Java target, 99 Hz");
    for round in 0..rounds {
        let mut order: Vec<usize> = (0..profilers.len()).collect();
        fastrand::shuffle(&mut order);
        for i in order {
            let run = run_once(&classes, &url, seconds, profilers[i], scratch.path());
            eprintln!(
                "round {} {:<30} profiler cpu {:.3} s (naming {:.3} s), target cpu {:.2} s, {:.1} µs per on-CPU sample",
                round + 1,
                profilers[i].name(),
                run.cpu_s,
                run.naming_s,
                run.target_cpu_s,
                run.cpu_s / (HZ * run.target_cpu_s) * 1e6
            );
            results[i].push(run);
        }
    }
    let per_sample = |runs: &[Run]| median(runs.iter().map(|r| r.cpu_s / (HZ * r.target_cpu_s) * 1e6).collect());
    let perf = per_sample(&results[2]);
    println!("\nJava target, 99 Hz, {rounds} interleaved rounds of {seconds} s, medians (whole life)");
    println!("| profiler | µs per on-CPU sample | vs perf -g + script | profiler CPU s |");
    println!("|---|---|---|---|");
    for (profiler, runs) in profilers.iter().zip(&results) {
        let us = per_sample(runs);
        println!(
            "| {} | {us:.1} | {:.2}x | {:.3} |",
            profiler.name(),
            us / perf,
            median(runs.iter().map(|r| r.cpu_s).collect())
        );
    }
    let _ = server.kill();
    let _ = server.wait();
}
