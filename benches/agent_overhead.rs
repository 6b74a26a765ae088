//! Agent overhead benchmark (issue 3): throughput of a CPU-bound multi-threaded workload
//! (`hotframe demo-workload --mode cpu`) unprofiled, under `hotframe agent` at 99 Hz,
//! under `perf record -F 99 --call-graph dwarf` and under `samply record -r 99`, in
//! interleaved rounds (a fresh random order each round), reporting medians; plus each
//! profiler's own CPU time (per second and per sample; start-up, unwinding,
//! symbolization, aggregation, writing/upload included) and peak RSS, measured with
//! wait4(2) on the profiler process. Then the same for a 20-thread target.
//!
//! Run: `cargo bench --bench agent_overhead` as root (perf_event_open on another
//! process). Knobs: HOTFRAME_BENCH_ROUNDS (default 7), HOTFRAME_BENCH_SECONDS (20),
//! HOTFRAME_BENCH_THREADS (2), HOTFRAME_BENCH_UPLOAD (the agent's `--upload-interval`;
//! default 10s, the agent's own default, so that each round includes uploads at the rate
//! a deployment has), SAMPLY (path to samply; default: `samply` on PATH), HOTFRAME_BIN
//! (the hotframe binary; default: the one cargo built).
//! perf or samply missing: that column is skipped with a note. samply refuses to record
//! at perf_event_paranoid > 1 even as root, so the bench sets it to 1 for samply's runs
//! and restores it right after.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

#[path = "common/mod.rs"]
mod common;
use common::{env_u64, on_path, Profiler};
use std::time::{Duration, Instant};

const BUILT_BIN: &str = env!("CARGO_BIN_EXE_hotframe");

/// The hotframe binary: the one cargo built, or HOTFRAME_BIN (a copy that a concurrent
/// build cannot replace mid-run).
fn bin() -> String {
    std::env::var("HOTFRAME_BIN").unwrap_or_else(|_| BUILT_BIN.to_string())
}
const HZ: f64 = 99.0;

/// One workload run.
#[derive(Debug, Clone, Copy, Default)]
struct Run {
    ops_per_sec: f64,
    seconds: f64,
    /// Workload CPU seconds: on-CPU samples expected = 99 Hz x this.
    target_cpu_s: f64,
    /// Profiler CPU seconds (user + system), whole life.
    cpu_s: f64,
    /// Steady state: profiler CPU seconds from 1.5 s after attach to the end.
    steady_cpu_s: f64,
    /// Steady state: workload CPU seconds over the same window.
    steady_target_cpu_s: f64,
    /// Steady state: window length, seconds.
    steady_s: f64,
    /// Profiler peak RSS, KiB.
    maxrss_kib: u64,
    /// Samples the profiler says it took (hotframe: on-CPU + off-CPU), if it says.
    samples: Option<u64>,
}

struct Setup {
    seconds: u64,
    upload: String,
    server: String,
    samply: Option<PathBuf>,
    perf: bool,
    scratch: tempfile::TempDir,
}

/// wait4 on a child: exit status ignored, rusage returned as (cpu seconds, maxrss KiB).
fn wait_rusage(child: &Child) -> (f64, u64) {
    let mut status = 0;
    // SAFETY: wait4 on our own child with a zeroed rusage we own.
    unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut usage);
        let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        (tv(usage.ru_utime) + tv(usage.ru_stime), usage.ru_maxrss as u64)
    }
}

/// CPU time of every thread of `pid` so far, ns (schedstat: exact, unlike clock ticks).
fn cpu_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return 0 };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

fn has_exited(child: &Child) -> bool {
    // SAFETY: a zeroed siginfo_t we own; WNOHANG|WNOWAIT peeks at our own child
    // without reaping it (wait4 reaps it later, with its rusage).
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::waitid(libc::P_PID, child.id(), &mut info, libc::WEXITED | libc::WNOHANG | libc::WNOWAIT) };
    // SAFETY: si_pid is valid to read after waitid.
    rc == 0 && unsafe { info.si_pid() } != 0
}

/// Sets kernel.perf_event_paranoid for samply's run, restores it when dropped.
struct Paranoid(Option<String>);

impl Paranoid {
    const PATH: &'static str = "/proc/sys/kernel/perf_event_paranoid";
    fn at_most_one() -> Paranoid {
        let old = std::fs::read_to_string(Self::PATH).unwrap_or_default().trim().to_string();
        if old.parse::<i32>().map(|v| v > 1).unwrap_or(false) && std::fs::write(Self::PATH, "1").is_ok() {
            return Paranoid(Some(old));
        }
        Paranoid(None)
    }
}

impl Drop for Paranoid {
    fn drop(&mut self) {
        if let Some(old) = self.0.take() {
            let _ = std::fs::write(Self::PATH, old);
        }
    }
}

// The workload is reaped by `wait_rusage` (wait4, for its CPU time), which clippy cannot see.
#[allow(clippy::zombie_processes)]
fn run_once(setup: &Setup, profiler: Profiler, threads: usize, tag: &str) -> Run {
    let seconds = setup.seconds.to_string() + "s";
    let mut workload = Command::new(bin())
        .args(["demo-workload", "--mode", "cpu", "--threads", &threads.to_string(), "--duration", &seconds, "--report"])
        .env("HOTFRAME_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the workload");
    let pid = workload.id().to_string();
    // Same start-up for every configuration: the workload's threads exist before attach.
    std::thread::sleep(Duration::from_millis(100));
    let _paranoid = (profiler == Profiler::Samply).then(Paranoid::at_most_one);
    let out = setup.scratch.path().join(tag);
    let mut prof = match profiler {
        Profiler::None => None,
        Profiler::Hotframe | Profiler::HotframeCpuOnly => Some(
            Command::new(bin())
                .args([
                    "agent",
                    "--server",
                    &setup.server,
                    "--service",
                    "bench",
                    "--pid",
                    &pid,
                    "--upload-interval",
                    &setup.upload,
                ])
                .args(if profiler == Profiler::HotframeCpuOnly { &["--cpu-only"][..] } else { &[][..] })
                .arg("--spool-dir")
                .arg(&out)
                .env("HOTFRAME_LOG", "info")
                .env("NO_COLOR", "1")
                .stderr(Stdio::piped())
                .stdout(Stdio::null())
                .spawn()
                .expect("start hotframe agent"),
        ),
        Profiler::Perf => Some(
            Command::new("perf")
                .args(["record", "-F", "99", "--call-graph", "dwarf", "-p", &pid, "-o"])
                .arg(&out)
                .stderr(Stdio::piped())
                .stdout(Stdio::null())
                .spawn()
                .expect("start perf"),
        ),
        Profiler::Samply => Some(
            Command::new(setup.samply.as_ref().expect("samply"))
                .args(["record", "-s", "-r", "99", "-p", &pid, "-o"])
                .arg(out.with_extension("json.gz"))
                .stderr(Stdio::piped())
                .stdout(Stdio::null())
                .spawn()
                .expect("start samply"),
        ),
    };
    // Steady state: from 1.5 s after attach (start-up done) to shortly before the end.
    let attached = Instant::now();
    let window_end = attached + Duration::from_secs(setup.seconds) - Duration::from_millis(400);
    std::thread::sleep(Duration::from_millis(1500));
    let prof_pid = prof.as_ref().map(|c| c.id());
    let t0 = Instant::now();
    let (p0, w0) = (prof_pid.map(cpu_ns).unwrap_or(0), cpu_ns(workload.id()));
    std::thread::sleep(window_end.saturating_duration_since(Instant::now()));
    let (p1, w1) = (prof_pid.map(cpu_ns).unwrap_or(0), cpu_ns(workload.id()));
    let steady_s = t0.elapsed().as_secs_f64();

    let mut report = String::new();
    workload.stdout.take().expect("stdout").read_to_string(&mut report).expect("read report");
    let (target_cpu_s, _) = wait_rusage(&workload);
    let parsed: serde_json::Value = serde_json::from_str(report.trim()).unwrap_or_default();
    let mut run = Run {
        ops_per_sec: parsed["opsPerSec"].as_f64().unwrap_or(0.0),
        seconds: parsed["seconds"].as_f64().unwrap_or(0.0),
        target_cpu_s,
        steady_cpu_s: p1.saturating_sub(p0) as f64 / 1e9,
        // 0 when the target was already gone at the window's end (a loaded machine):
        // that run then has no steady-state figure.
        steady_target_cpu_s: if w1 > w0 && w0 > 0 { (w1 - w0) as f64 / 1e9 } else { f64::NAN },
        steady_s,
        ..Run::default()
    };
    if let Some(child) = prof.as_mut() {
        // Each profiler stops by itself when its target exits; give it time to write
        // or upload, then ask politely.
        let deadline = Instant::now() + Duration::from_secs(30);
        while !has_exited(child) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if !has_exited(child) {
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
        }
        let mut stderr = String::new();
        if let Some(mut err) = child.stderr.take() {
            let _ = err.read_to_string(&mut stderr);
        }
        let (cpu_s, maxrss_kib) = wait_rusage(child);
        run.cpu_s = cpu_s;
        run.maxrss_kib = maxrss_kib;
        run.samples = samples_from(profiler, &stderr);
        if run.samples.is_none() && profiler != Profiler::Samply {
            eprintln!(
                "note: could not read a sample count from {}: {}",
                profiler.name(),
                stderr.lines().last().unwrap_or("")
            );
        }
    }
    let _ = std::fs::remove_dir_all(&out);
    let _ = std::fs::remove_file(&out);
    let _ = std::fs::remove_file(out.with_extension("json.gz"));
    run
}

/// The profiler's own sample count: hotframe's last health line (`samples=` on-CPU plus
/// `offcpu_samples=`), perf's "(N samples)".
fn samples_from(profiler: Profiler, stderr: &str) -> Option<u64> {
    let field = |line: &str, key: &str| -> Option<u64> {
        let at = line.find(key)? + key.len();
        line[at..].split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
    };
    match profiler {
        Profiler::Hotframe | Profiler::HotframeCpuOnly => {
            let line = stderr.lines().rev().find(|l| l.contains("health:"))?;
            Some(field(line, " samples=")? + field(line, " offcpu_samples=")?)
        }
        Profiler::Perf => stderr.lines().find_map(|l| {
            let at = l.find(" samples)")?;
            l[..at].rsplit('(').next()?.trim().parse().ok()
        }),
        _ => None,
    }
}

/// Median of the finite values (a run whose steady window could not be read is NaN).
fn median(values: Vec<f64>) -> f64 {
    let mut values: Vec<f64> = values.into_iter().filter(|v| v.is_finite()).collect();
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

fn report(title: &str, results: &[(Profiler, Vec<Run>)]) {
    println!("\n{title}");
    println!(
        "{:<26} {:>4} {:>11} {:>7} {:>8} | {:>9} {:>10} | {:>9} {:>10} {:>10} | {:>9}",
        "configuration",
        "runs",
        "ops/s med",
        "loss %",
        "paired %",
        "life ms/s",
        "life µs/s*",
        "steady ms/s",
        "steady µs/s*",
        "µs/own s.",
        "peak RSS"
    );
    let unprofiled: Option<&Vec<Run>> = results.iter().find(|(p, _)| *p == Profiler::None).map(|(_, r)| r);
    let base = unprofiled.map(|r| median(r.iter().map(|x| x.ops_per_sec).collect()));
    for (profiler, runs) in results {
        if runs.is_empty() {
            continue;
        }
        let ops = median(runs.iter().map(|r| r.ops_per_sec).collect());
        let loss = base.map(|b| format!("{:.2}", (1.0 - ops / b) * 100.0)).unwrap_or_else(|| "-".into());
        if *profiler == Profiler::None {
            println!("{:<26} {:>4} {:>11.1} {:>7} {:>8} |", profiler.name(), runs.len(), ops, "-", "-");
            continue;
        }
        // Each round's run against the same round's unprofiled run (runs are kept in
        // round order), which cancels the machine's drift between rounds.
        let paired = unprofiled
            .map(|base| {
                let losses: Vec<f64> = runs
                    .iter()
                    .zip(base)
                    .filter(|(r, b)| r.ops_per_sec > 0.0 && b.ops_per_sec > 0.0)
                    .map(|(r, b)| (1.0 - r.ops_per_sec / b.ops_per_sec) * 100.0)
                    .collect();
                format!("{:.2}", median(losses))
            })
            .unwrap_or_else(|| "-".into());
        let m = |f: &dyn Fn(&Run) -> f64| median(runs.iter().map(f).collect());
        let life_ms_s = m(&|r| r.cpu_s / r.seconds.max(1e-9) * 1e3);
        // On-CPU samples the target gave: 99 Hz x its CPU seconds.
        let life_us = m(&|r| r.cpu_s * 1e6 / (HZ * r.target_cpu_s.max(1e-9)));
        let steady_ms_s = m(&|r| r.steady_cpu_s / r.steady_s.max(1e-9) * 1e3);
        let steady_us = m(&|r| r.steady_cpu_s * 1e6 / (HZ * r.steady_target_cpu_s));
        let own: Vec<f64> = runs.iter().filter_map(|r| Some(r.cpu_s * 1e6 / r.samples? as f64)).collect();
        let per_own = if own.is_empty() { "-".to_string() } else { format!("{:.1}", median(own)) };
        let rss = runs.iter().map(|r| r.maxrss_kib).max().unwrap_or(0) as f64 / 1024.0;
        println!(
            "{:<26} {:>4} {:>11.1} {:>7} {:>8} | {:>9.2} {:>10.1} | {:>9.2} {:>10.1} {:>10} | {:>5.1} MiB",
            profiler.name(),
            runs.len(),
            ops,
            loss,
            paired,
            life_ms_s,
            life_us,
            steady_ms_s,
            steady_us,
            per_own,
            rss
        );
    }
    println!("life: the profiler's whole life (start-up, unwinding, symbolization, aggregation, writing or");
    println!("uploading); steady: from 1.5 s after attach to the end. * µs of profiler CPU per on-CPU sample");
    println!("(99 Hz x the target's CPU seconds). µs/own s.: per sample the profiler reports (hotframe: on-CPU");
    println!("plus off-CPU wall-clock samples; perf: samples written). loss %: medians against the unprofiled");
    println!("median; paired %: median over rounds of each round's loss against that round's unprofiled run.");
}

fn measure(setup: &Setup, profilers: &[Profiler], threads: usize, rounds: u64) -> Vec<(Profiler, Vec<Run>)> {
    let mut results: Vec<(Profiler, Vec<Run>)> = profilers.iter().map(|p| (*p, Vec::new())).collect();
    for round in 0..rounds {
        let mut order: Vec<usize> = (0..profilers.len()).collect();
        fastrand::shuffle(&mut order);
        for i in order {
            let profiler = profilers[i];
            let run = run_once(setup, profiler, threads, &format!("r{round}-{i}-{threads}"));
            eprintln!(
                "round {} {:<26} {:>8.1} ops/s  cpu {:.3} s  rss {:.1} MiB  samples {:?}",
                round + 1,
                profiler.name(),
                run.ops_per_sec,
                run.cpu_s,
                run.maxrss_kib as f64 / 1024.0,
                run.samples
            );
            results[i].1.push(run);
        }
    }
    results
}

fn main() {
    let rounds = env_u64("HOTFRAME_BENCH_ROUNDS", 7);
    let seconds = env_u64("HOTFRAME_BENCH_SECONDS", 20).max(3);
    let upload = std::env::var("HOTFRAME_BENCH_UPLOAD").unwrap_or_else(|_| "10s".to_string());
    let threads = env_u64("HOTFRAME_BENCH_THREADS", 2) as usize;
    let scratch = tempfile::tempdir().expect("temp dir");
    let samply = std::env::var_os("SAMPLY").map(PathBuf::from).or_else(|| on_path("samply"));
    let perf = on_path("perf").is_some();
    if samply.is_none() {
        eprintln!("note: samply not found (cargo install samply --locked; or SAMPLY=/path/to/samply): skipped");
    }
    if !perf {
        eprintln!("note: perf not found (apt-get install linux-perf): skipped");
    }
    let (mut server, url) = common::start_server(&bin(), &scratch.path().join("store"));
    let setup = Setup { seconds, upload, server: url, samply, perf, scratch };

    let mut profilers = vec![Profiler::None, Profiler::Hotframe, Profiler::HotframeCpuOnly];
    if setup.perf {
        profilers.push(Profiler::Perf);
    }
    if setup.samply.is_some() {
        profilers.push(Profiler::Samply);
    }
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    eprintln!(
        "agent overhead: {rounds} interleaved rounds x {seconds} s, {threads} busy threads, {cpus} CPUs, agent uploads every {}",
        setup.upload
    );
    let results = measure(&setup, &profilers, threads, rounds);
    report(&format!("{threads}-thread CPU-bound target, 99 Hz, {rounds} interleaved rounds of {seconds} s"), &results);

    let many: Vec<Profiler> = profilers
        .iter()
        .copied()
        .filter(|p| matches!(p, Profiler::Hotframe | Profiler::HotframeCpuOnly | Profiler::Samply))
        .collect();
    let big = measure(&setup, &many, 20, 2);
    report(&format!("20-thread CPU-bound target, 99 Hz, 2 rounds of {seconds} s (agent CPU and RSS)"), &big);

    let _ = server.kill();
    let _ = server.wait();
}
