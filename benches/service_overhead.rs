//! Service overhead benchmark (issues 17 and 11): what each profiler costs a
//! context-switch-heavy service, and whether hotframe counts a fork-per-connection
//! service's CPU like the kernel does.
//!
//! Starts postgres 15 (Debian's `postgresql`: initdb in a temp dir, as user postgres, on
//! a loopback port) and, if `redis-server` is installed, redis. Workloads: pgbench TPC-B
//! `-c 8 -j 2` (persistent connections), pgbench `-C` (a new backend process per
//! transaction), redis-benchmark. Profilers: none, `hotframe agent --name ^postgres`
//! (or `^redis`), the same with `--cpu-only`, `perf record -a -F 99 --call-graph
//! dwarf`, and `samply record -p` (SAMPLY=/path, or on PATH; skipped with a note if absent;
//! redis only: samply 0.13 cannot record every process on Linux, and `-p` takes one).
//! Rounds are interleaved in a fresh random order; each profiler attaches 2 s before
//! the load. Prints per round and as medians: throughput relative to the same round's
//! unprofiled run (paired), each profiler's CPU during the load (% of a core, from
//! /proc/PID/stat) and peak RSS (wait4). For `-C`: CPU seconds of postgres as hotframe
//! counted them (its server's flame graph, samples / 99 Hz), as `perf record -a` sampled
//! them (postgres samples / 99 Hz), and as the kernel accounted them (utime + stime of
//! every postgres process plus the postmaster's cutime + cstime for the exited ones).
//!
//! Run as root: `cargo bench --bench service_overhead`. Knobs: HOTFRAME_BENCH_ROUNDS
//! (3), HOTFRAME_BENCH_SECONDS (10), HOTFRAME_BIN (a copy of the hotframe binary that a
//! concurrent build cannot replace), PG_BIN (/usr/lib/postgresql/15/bin), SAMPLY.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

#[path = "common/mod.rs"]
mod common;
use common::{
    env_u64, free_port, hotframe_bin as bin, median, on_path, proc_cpu_s, sh, signal, start_postgres, start_server,
    stop_postgres, wait_rss_mib, Profiler,
};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Load {
    Pgbench,
    PgbenchConnect,
    Redis,
}

impl Load {
    fn name(self) -> &'static str {
        match self {
            Load::Pgbench => "postgres, pgbench -c 8 -j 2",
            Load::PgbenchConnect => "postgres, pgbench -C -c 8 -j 2",
            Load::Redis => "redis, redis-benchmark",
        }
    }
    fn pattern(self) -> &'static str {
        if self == Load::Redis {
            "^redis-server"
        } else {
            "^postgres"
        }
    }
}

/// One run: throughput and, if profiled, the profiler's cost.
#[derive(Debug, Clone, Copy, Default)]
struct Run {
    throughput: f64,
    cpu_pct: f64,
    rss_mib: f64,
    /// -C only: CPU seconds of postgres (hotframe's flame graph or perf's samples) and
    /// as the kernel accounted them.
    counted_s: Option<f64>,
    kernel_s: f64,
}

struct Bench {
    scratch: tempfile::TempDir,
    pg_bin: PathBuf,
    pg_port: u16,
    redis_port: u16,
    server_url: String,
    seconds: u64,
    samply: Option<PathBuf>,
    /// The redis server's pid, which samply attaches to (it cannot record every process).
    redis_pid: std::cell::Cell<Option<u32>>,
}

/// CPU seconds the kernel accounted to postgres so far: every live postgres process,
/// plus the postmaster's reaped children.
fn postgres_kernel_cpu_s(postmaster: u32) -> f64 {
    let mut total = proc_cpu_s(postmaster, true);
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        if pid == postmaster {
            continue;
        }
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if comm.trim() == "postgres" {
            total += proc_cpu_s(pid, false);
        }
    }
    total
}

fn postmaster_pid(data: &Path) -> u32 {
    std::fs::read_to_string(data.join("postmaster.pid"))
        .ok()
        .and_then(|s| s.lines().next()?.trim().parse().ok())
        .expect("postmaster.pid")
}

impl Bench {
    fn start_postgres(&self) -> PathBuf {
        start_postgres(self.scratch.path(), &self.pg_bin, self.pg_port)
    }

    fn load(&self, load: Load) -> f64 {
        let secs = self.seconds.to_string();
        let out = match load {
            Load::Pgbench | Load::PgbenchConnect => {
                let mut cmd = Command::new("pgbench");
                cmd.args(["-h", "127.0.0.1", "-p", &self.pg_port.to_string(), "-U", "postgres"])
                    .args(["-c", "8", "-j", "2", "-n", "-T", &secs]);
                if load == Load::PgbenchConnect {
                    cmd.arg("-C");
                }
                sh(cmd.arg("postgres"))
            }
            Load::Redis => sh(Command::new("redis-benchmark").args([
                "-p",
                &self.redis_port.to_string(),
                "-q",
                "-t",
                "set,get",
                "-n",
                &(self.seconds * 60_000).to_string(),
            ])),
        };
        match load {
            Load::Redis => {
                // "SET: 75000.00 requests per second, p50=..." after '\r' progress lines.
                let rates: Vec<f64> = out
                    .split(['\r', '\n'])
                    .filter(|l| l.contains("requests per second"))
                    .filter_map(|l| l.split_once(": ")?.1.split_whitespace().next()?.parse().ok())
                    .collect();
                rates.iter().sum::<f64>() / rates.len().max(1) as f64
            }
            _ => out
                .lines()
                .find(|l| l.starts_with("tps"))
                .and_then(|l| l.split_whitespace().nth(2)?.parse().ok())
                .unwrap_or(0.0),
        }
    }

    fn start_profiler(&self, profiler: Profiler, load: Load, service: &str) -> Option<Child> {
        let spool = self.scratch.path().join(format!("spool-{service}"));
        let agent = |cpu_only: bool| {
            let mut cmd = Command::new(bin());
            cmd.args(["agent", "--server", &self.server_url, "--service", service, "--name", load.pattern()])
                .args(["--upload-interval", "10s", "--spool-dir"])
                .arg(&spool)
                .env("HOTFRAME_LOG", "warn");
            if cpu_only {
                cmd.arg("--cpu-only");
            }
            cmd
        };
        let mut cmd = match profiler {
            Profiler::None => return None,
            Profiler::Hotframe => agent(false),
            Profiler::HotframeCpuOnly => agent(true),
            Profiler::Perf => {
                let mut cmd = Command::new("perf");
                // No build-id pass at exit (-B -N): it takes minutes over a busy host's data.
                cmd.args(["record", "-a", "-F", "99", "--call-graph", "dwarf", "-B", "-N", "-o"])
                    .arg(self.scratch.path().join("perf.data"));
                cmd
            }
            Profiler::Samply => {
                // samply 0.13 cannot record every process on Linux ("Profiling all
                // processes is currently not supported"), and `-p` takes one process:
                // it is measured on redis (one process) only.
                let pid = self.redis_pid.get().filter(|_| load == Load::Redis)?;
                let mut cmd = Command::new(self.samply.as_ref()?);
                cmd.args(["record", "-p", &pid.to_string(), "-r", "99", "--save-only", "-o"])
                    .arg(self.scratch.path().join("samply.json"));
                cmd
            }
        };
        Some(cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("start profiler"))
    }

    /// Postgres samples in perf.data over 99 Hz.
    fn perf_postgres_s(&self) -> f64 {
        let out =
            sh(Command::new("perf").args(["script", "-F", "comm", "-i"]).arg(self.scratch.path().join("perf.data")));
        out.lines().filter(|l| l.trim() == "postgres").count() as f64 / 99.0
    }

    /// hotframe's CPU seconds of `service` over the run (its flame graph).
    fn hotframe_s(&self, service: &str) -> f64 {
        let url = format!("{}/api/v1/flamegraph?service={service}&from=now-1h&states=cpu", self.server_url);
        let body = ureq::get(&url).call().ok().and_then(|mut r| r.body_mut().read_to_string().ok()).unwrap_or_default();
        let json: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        json["totals"]["samples"].as_f64().unwrap_or(0.0) / 99.0
    }

    fn run(&self, load: Load, profiler: Profiler, round: usize, postmaster: u32) -> Run {
        let service = format!("bench-{load:?}-{round}-{profiler:?}").to_lowercase();
        let mut child = self.start_profiler(profiler, load, &service);
        std::thread::sleep(Duration::from_secs(2));
        let pid = child.as_ref().map(|c| c.id());
        let cpu0 = pid.map(|p| proc_cpu_s(p, false)).unwrap_or(0.0);
        let kernel0 = postgres_kernel_cpu_s(postmaster);
        let t0 = Instant::now();
        let throughput = self.load(load);
        let wall = t0.elapsed().as_secs_f64();
        let kernel_s = postgres_kernel_cpu_s(postmaster) - kernel0;
        let cpu = pid.map(|p| proc_cpu_s(p, false)).unwrap_or(0.0) - cpu0;
        let mut run = Run { throughput, cpu_pct: cpu / wall * 100.0, kernel_s, ..Run::default() };
        if let Some(mut c) = child.take() {
            signal(c.id(), libc::SIGINT);
            run.rss_mib = wait_rss_mib(&mut c);
        }
        if load == Load::PgbenchConnect {
            run.counted_s = match profiler {
                Profiler::Hotframe | Profiler::HotframeCpuOnly => Some(self.hotframe_s(&service)),
                Profiler::Perf => Some(self.perf_postgres_s()),
                _ => None,
            };
        }
        let _ = std::fs::remove_file(self.scratch.path().join("perf.data"));
        run
    }
}

fn main() {
    let Some(pg_bin) = common::postgres_bench_start("service_overhead") else { return };
    if !pg_bin.join("initdb").exists() || on_path("pgbench").is_none() {
        eprintln!("service_overhead: postgres 15 not installed (apt-get install postgresql); skipped");
        return;
    }
    let samply = std::env::var_os("SAMPLY").map(PathBuf::from).or_else(|| on_path("samply"));
    if samply.is_none() {
        println!("note: samply not found (SAMPLY=/path/to/samply): its column is skipped");
    }
    let perf = on_path("perf").is_some();
    if !perf {
        println!("note: perf not found (apt-get install linux-perf): its column is skipped");
    }
    let scratch = tempfile::tempdir().expect("temp dir");
    let (mut server, server_url) = start_server(&bin(), &scratch.path().join("store"));
    let bench = Bench {
        scratch,
        pg_bin,
        pg_port: free_port(),
        redis_port: free_port(),
        server_url,
        seconds: env_u64("HOTFRAME_BENCH_SECONDS", 10),
        samply,
        redis_pid: std::cell::Cell::new(None),
    };
    let rounds = env_u64("HOTFRAME_BENCH_ROUNDS", 3) as usize;
    let data = bench.start_postgres();
    let postmaster = postmaster_pid(&data);
    let mut redis = on_path("redis-server").map(|r| {
        Command::new(r)
            .args(["--port", &bench.redis_port.to_string(), "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("start redis")
    });
    bench.redis_pid.set(redis.as_ref().map(Child::id));
    if redis.is_none() {
        println!("note: redis-server not found (apt-get install redis-server): the redis load is skipped");
    }
    std::thread::sleep(Duration::from_millis(500));
    let mut profilers = vec![Profiler::None, Profiler::Hotframe, Profiler::HotframeCpuOnly];
    if perf {
        profilers.push(Profiler::Perf);
    }
    if bench.samply.is_some() {
        profilers.push(Profiler::Samply);
    }
    let mut loads = vec![Load::Pgbench, Load::PgbenchConnect];
    if redis.is_some() {
        loads.push(Load::Redis);
    }
    let paranoid = std::fs::read_to_string("/proc/sys/kernel/perf_event_paranoid").unwrap_or_default();
    for load in loads {
        println!("\n== {} ({} rounds of {} s) ==", load.name(), rounds, bench.seconds);
        let mut runs: Vec<Vec<(Profiler, Run)>> = Vec::new();
        for round in 0..rounds {
            let mut order = profilers.clone();
            fastrand::shuffle(&mut order);
            let mut this = Vec::new();
            for p in order {
                if p == Profiler::Samply && load != Load::Redis {
                    // See `start_profiler`: samply records one process.
                    continue;
                }
                if p == Profiler::Samply {
                    let _ = std::fs::write("/proc/sys/kernel/perf_event_paranoid", "1");
                }
                let run = bench.run(load, p, round, postmaster);
                if p == Profiler::Samply {
                    let _ = std::fs::write("/proc/sys/kernel/perf_event_paranoid", paranoid.trim());
                }
                println!(
                    "round {round}: {:<34} throughput {:>10.1}  cpu {:>5.2}% of a core  rss {:>5.1} MiB{}",
                    p.name(),
                    run.throughput,
                    run.cpu_pct,
                    run.rss_mib,
                    run.counted_s
                        .map(|c| format!("  postgres CPU {c:.2} s vs kernel {:.2} s", run.kernel_s))
                        .unwrap_or_default()
                );
                this.push((p, run));
            }
            runs.push(this);
        }
        println!("-- medians: throughput / unprofiled of the same round, profiler CPU, RSS --");
        for &p in profilers.iter().filter(|p| **p != Profiler::None) {
            let mut ratio = Vec::new();
            let mut cpu = Vec::new();
            let mut rss = Vec::new();
            let mut counted = Vec::new();
            for round in &runs {
                let base = round.iter().find(|(q, _)| *q == Profiler::None).map(|(_, r)| r.throughput).unwrap_or(0.0);
                if let Some((_, r)) = round.iter().find(|(q, _)| *q == p) {
                    if base > 0.0 {
                        ratio.push(r.throughput / base);
                    }
                    cpu.push(r.cpu_pct);
                    rss.push(r.rss_mib);
                    if let Some(c) = r.counted_s {
                        counted.push(c / r.kernel_s.max(1e-9));
                    }
                }
            }
            if cpu.is_empty() {
                continue;
            }
            println!(
                "{:<34} throughput {:.3}  cpu {:.2}% of a core  rss {:.0} MiB{}",
                p.name(),
                median(ratio),
                median(cpu),
                median(rss),
                if counted.is_empty() {
                    String::new()
                } else {
                    format!("  postgres CPU / kernel {:.3}", median(counted))
                }
            );
        }
    }
    stop_postgres(&bench.pg_bin, &data);
    if let Some(r) = redis.as_mut() {
        let _ = r.kill();
        let _ = r.wait();
    }
    let _ = server.kill();
    let _ = server.wait();
}
