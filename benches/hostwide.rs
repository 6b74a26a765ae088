//! Host-wide agent overhead benchmark (issue 15 point 2): what `hotframe agent --all`
//! costs on a busy host, against `perf record -a` doing the same job.
//!
//! Starts postgres 15 (Debian's `postgresql`, as in `service_overhead`), redis and nginx
//! (Debian's `redis-server`, `nginx`; each on a loopback port, in a temp dir) beside
//! HOTFRAME_BENCH_IDLE (200) processes that wake HOTFRAME_BENCH_IDLE_HZ (25) times a second
//! and sleep again (a host's daemons and their timers: followed, seldom sampled)
//! and, in every run, loads all three at once: `pgbench -C -c 16 -j 2` (a new backend
//! process per transaction), `ab -k -c 50` against nginx (`apache2-utils`) and
//! `redis-benchmark` in a loop (a new client process every 20,000 requests). Profilers:
//! none, `hotframe agent --all` (default and `--cpu-only`), `perf record -a -g` and `perf
//! record -a --call-graph dwarf`, all at 99 Hz, and with HOTFRAME_BASELINE_BIN set the
//! same `agent --all` from that binary (another build, paired with this one in every
//! round), in interleaved rounds in a fresh random order, each started
//! HOTFRAME_BENCH_WARMUP seconds (2) before the load: the agent's start-up (every
//! process's code and first names) falls before the load with a longer warm-up.
//!
//! Prints per run and as medians over rounds: each profiler's CPU during the load (% of
//! one core, utime + stime from /proc/PID/stat), its peak RSS (VmHWM at the end of the
//! load, and ru_maxrss over its whole life, exit flush included), records lost (the
//! agent's last health line; perf's "lost N chunks" warning), the host's context switches
//! per second (/proc/stat `ctxt`), forks per second (`processes`) and live processes,
//! and each load's throughput relative to the same round's unprofiled run (paired).
//!
//! Run as root: `cargo bench --bench hostwide --no-run`, then the binary from
//! target/release/deps with HOTFRAME_BIN set to a copy of target/release/hotframe (a
//! concurrent build cannot replace it). Knobs: HOTFRAME_BENCH_ROUNDS (3),
//! HOTFRAME_BENCH_SECONDS (10), HOTFRAME_BENCH_WARMUP (2), HOTFRAME_BENCH_PROFILERS
//! (comma-separated, of none, agent, cpu-only, baseline, perf-fp, perf-dwarf; all),
//! HOTFRAME_BENCH_PG_CLIENTS (16), HOTFRAME_BENCH_AB_CLIENTS (50), HOTFRAME_BENCH_IDLE
//! (200), HOTFRAME_BENCH_IDLE_HZ (25), HOTFRAME_BIN, HOTFRAME_BASELINE_BIN, PG_BIN (/usr/lib/postgresql/15/bin).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[path = "common/mod.rs"]
mod common;
use common::{
    env_u64, free_port, hotframe_bin as bin, median, on_path, proc_cpu_s, sh, signal, start_postgres, start_server,
    stop_postgres, wait_rss_mib,
};

/// A profiler under comparison, all at 99 Hz, host-wide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Profiler {
    None,
    Agent,
    AgentCpuOnly,
    /// `agent --all` from HOTFRAME_BASELINE_BIN: another build, paired with `Agent` in
    /// every round.
    AgentBaseline,
    PerfFp,
    PerfDwarf,
}

impl Profiler {
    const ALL: [Profiler; 6] = [
        Profiler::None,
        Profiler::Agent,
        Profiler::AgentCpuOnly,
        Profiler::AgentBaseline,
        Profiler::PerfFp,
        Profiler::PerfDwarf,
    ];

    fn name(self) -> &'static str {
        match self {
            Profiler::None => "unprofiled",
            Profiler::Agent => "hotframe agent --all",
            Profiler::AgentCpuOnly => "hotframe agent --all --cpu-only",
            Profiler::AgentBaseline => "agent --all (HOTFRAME_BASELINE_BIN)",
            Profiler::PerfFp => "perf record -a -g",
            Profiler::PerfDwarf => "perf record -a --call-graph dwarf",
        }
    }

    /// Short name for HOTFRAME_BENCH_PROFILERS.
    fn key(self) -> &'static str {
        match self {
            Profiler::None => "none",
            Profiler::Agent => "agent",
            Profiler::AgentCpuOnly => "cpu-only",
            Profiler::AgentBaseline => "baseline",
            Profiler::PerfFp => "perf-fp",
            Profiler::PerfDwarf => "perf-dwarf",
        }
    }

    /// The profilers to run: HOTFRAME_BENCH_PROFILERS (comma-separated keys; all by
    /// default), `baseline` only when HOTFRAME_BASELINE_BIN is set.
    fn chosen() -> Vec<Profiler> {
        let wanted = std::env::var("HOTFRAME_BENCH_PROFILERS").ok();
        let baseline = std::env::var_os("HOTFRAME_BASELINE_BIN").is_some();
        Profiler::ALL
            .into_iter()
            .filter(|p| *p != Profiler::AgentBaseline || baseline)
            .filter(|p| wanted.as_deref().is_none_or(|w| w.split(',').any(|k| k.trim() == p.key())))
            .collect()
    }
}

/// The three loads' throughputs (per second).
#[derive(Debug, Clone, Copy, Default)]
struct Throughput {
    pgbench_tps: f64,
    nginx_rps: f64,
    redis_rps: f64,
}

impl Throughput {
    fn ratios(&self, base: &Throughput) -> [f64; 3] {
        let r = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
        [r(self.pgbench_tps, base.pgbench_tps), r(self.nginx_rps, base.nginx_rps), r(self.redis_rps, base.redis_rps)]
    }
}

/// One run.
#[derive(Debug, Clone, Copy, Default)]
struct Run {
    load: Throughput,
    /// The profiler's CPU during the load, % of one core.
    cpu_pct: f64,
    /// VmHWM at the end of the load, MiB.
    hwm_mib: f64,
    /// ru_maxrss over its whole life (exit flush included), MiB.
    maxrss_mib: f64,
    /// Records lost (the agent) or chunks lost (perf); None if it did not say.
    lost: Option<u64>,
    /// The agent's mean upload size (its last health line's bytes_sent / sent), KiB.
    kib_per_upload: Option<f64>,
    ctxt_per_s: f64,
    forks_per_s: f64,
    processes: usize,
}

struct Bench {
    scratch: tempfile::TempDir,
    pg_port: u16,
    redis_port: u16,
    nginx_port: u16,
    server_url: String,
    seconds: u64,
    warmup: u64,
    /// pgbench clients (each transaction a new backend process).
    pg_clients: u64,
    /// ab's concurrent keep-alive connections.
    ab_clients: u64,
}

/// `ctxt` and `processes` (forks since boot) of /proc/stat.
fn host_counters() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let field = |name: &str| stat.lines().find_map(|l| l.strip_prefix(name)?.trim().parse().ok()).unwrap_or(0);
    (field("ctxt "), field("processes "))
}

/// Processes alive on the host.
fn live_processes() -> usize {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_str().is_some_and(|s| s.bytes().all(|b| b.is_ascii_digit())))
        .count()
}

/// VmHWM of a process, MiB.
fn vm_hwm_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:")?.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

/// The number after the last `key` in `text` (`lost=12`, `lost 3 chunks`).
fn last_number_after(text: &str, key: &str) -> Option<u64> {
    let at = text.rfind(key)? + key.len();
    text[at..].trim_start().split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

impl Bench {
    fn start_nginx(&self) -> Child {
        let dir = self.scratch.path().join("nginx");
        std::fs::create_dir_all(&dir).expect("nginx dir");
        let conf = dir.join("nginx.conf");
        std::fs::write(
            &conf,
            format!(
                "worker_processes 2;\npid {dir}/nginx.pid;\nerror_log {dir}/error.log;\n\
                 events {{ worker_connections 1024; }}\n\
                 http {{\n  access_log off;\n  client_body_temp_path {dir};\n  proxy_temp_path {dir};\n\
                 fastcgi_temp_path {dir};\n  uwsgi_temp_path {dir};\n  scgi_temp_path {dir};\n\
                 server {{ listen 127.0.0.1:{port}; location / {{ return 200 \"hello\\n\"; }} }}\n}}\n",
                dir = dir.display(),
                port = self.nginx_port
            ),
        )
        .expect("nginx.conf");
        Command::new("nginx")
            .arg("-c")
            .arg(&conf)
            .arg("-p")
            .arg(&dir)
            .args(["-g", "daemon off;"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx")
    }

    /// The three loads at once, for `seconds`; samples the live processes half-way.
    fn load(&self) -> (Throughput, usize) {
        let secs = self.seconds;
        let pg_port = self.pg_port.to_string();
        let pg_clients = self.pg_clients.to_string();
        let pgbench = std::thread::spawn(move || {
            let out = sh(Command::new("pgbench")
                .args(["-h", "127.0.0.1", "-p", &pg_port, "-U", "postgres", "-C", "-c", &pg_clients, "-j", "2", "-n"])
                .args(["-T", &secs.to_string(), "postgres"]));
            out.lines().find(|l| l.starts_with("tps")).and_then(|l| l.split_whitespace().nth(2)?.parse().ok())
        });
        let url = format!("http://127.0.0.1:{}/", self.nginx_port);
        let ab_clients = self.ab_clients.to_string();
        let ab = std::thread::spawn(move || {
            let out = sh(Command::new("ab").args(["-q", "-k", "-c", &ab_clients, "-n", "100000000"]).args([
                "-t",
                &secs.to_string(),
                &url,
            ]));
            out.lines()
                .find(|l| l.starts_with("Requests per second:"))
                .and_then(|l| l.split_whitespace().nth(3)?.parse().ok())
        });
        let redis_port = self.redis_port.to_string();
        let redis = std::thread::spawn(move || {
            // A new client process every 20,000 requests, until the deadline.
            let t0 = Instant::now();
            let mut requests = 0u64;
            while t0.elapsed() < Duration::from_secs(secs) {
                let ok = Command::new("redis-benchmark")
                    .args(["-p", &redis_port, "-q", "-t", "get", "-n", "20000"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success());
                if ok {
                    requests += 20_000;
                }
            }
            Some(requests as f64 / t0.elapsed().as_secs_f64())
        });
        // Not synchronisation: the moment the host's process count is sampled.
        std::thread::sleep(Duration::from_secs(secs) / 2);
        let processes = live_processes();
        let throughput = Throughput {
            pgbench_tps: pgbench.join().ok().flatten().unwrap_or(0.0),
            nginx_rps: ab.join().ok().flatten().unwrap_or(0.0),
            redis_rps: redis.join().ok().flatten().unwrap_or(0.0),
        };
        (throughput, processes)
    }

    fn start_profiler(&self, profiler: Profiler, round: usize, log: &Path) -> Option<Child> {
        let perf = |args: &[&str]| {
            let mut cmd = Command::new("perf");
            // No build-id pass at exit (-B -N): it takes minutes over a busy host's data.
            cmd.args(["record", "-a", "-F", "99"]).args(args).args(["-B", "-N", "-o"]);
            cmd.arg(self.scratch.path().join("perf.data"));
            cmd
        };
        let agent = |cpu_only: bool, binary: String| {
            let mut cmd = Command::new(binary);
            cmd.args(["agent", "--all", "--server", &self.server_url, "--upload-interval", "10s", "--spool-dir"])
                .arg(self.scratch.path().join(format!("spool-{round}-{}", profiler.key())))
                .env("HOTFRAME_LOG", "info");
            if cpu_only {
                cmd.arg("--cpu-only");
            }
            cmd
        };
        let mut cmd = match profiler {
            Profiler::None => return None,
            Profiler::Agent => agent(false, bin()),
            Profiler::AgentCpuOnly => agent(true, bin()),
            Profiler::AgentBaseline => agent(false, std::env::var("HOTFRAME_BASELINE_BIN").unwrap_or_else(|_| bin())),
            Profiler::PerfFp => perf(&["-g"]),
            Profiler::PerfDwarf => perf(&["--call-graph", "dwarf"]),
        };
        let stderr = std::fs::File::create(log).expect("profiler log");
        Some(cmd.stdout(Stdio::null()).stderr(stderr).spawn().expect("start profiler"))
    }

    fn run(&self, profiler: Profiler, round: usize) -> Run {
        let log = self.scratch.path().join("profiler.log");
        let mut child = self.start_profiler(profiler, round, &log);
        std::thread::sleep(Duration::from_secs(self.warmup));
        let pid = child.as_ref().map(|c| c.id());
        let cpu0 = pid.map(|p| proc_cpu_s(p, false)).unwrap_or(0.0);
        let (ctxt0, forks0) = host_counters();
        let t0 = Instant::now();
        let (load, processes) = self.load();
        let wall = t0.elapsed().as_secs_f64();
        let (ctxt1, forks1) = host_counters();
        let cpu = pid.map(|p| proc_cpu_s(p, false)).unwrap_or(0.0) - cpu0;
        let mut run = Run {
            load,
            cpu_pct: cpu / wall * 100.0,
            ctxt_per_s: (ctxt1 - ctxt0) as f64 / wall,
            forks_per_s: (forks1 - forks0) as f64 / wall,
            processes,
            ..Run::default()
        };
        if let Some(mut c) = child.take() {
            run.hwm_mib = vm_hwm_mib(c.id());
            signal(c.id(), libc::SIGINT);
            run.maxrss_mib = wait_rss_mib(&mut c);
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            run.lost = match profiler {
                Profiler::Agent | Profiler::AgentCpuOnly | Profiler::AgentBaseline => {
                    let sent = last_number_after(&text, " sent=").filter(|n| *n > 0);
                    run.kib_per_upload =
                        sent.zip(last_number_after(&text, "bytes_sent=")).map(|(n, b)| b as f64 / n as f64 / 1024.0);
                    last_number_after(&text, "lost=")
                }
                _ => Some(last_number_after(&text, "and lost").unwrap_or(0)),
            };
        }
        let _ = std::fs::remove_file(self.scratch.path().join("perf.data"));
        run
    }
}

fn main() {
    let Some(pg_bin) = common::postgres_bench_start("hostwide") else { return };
    let missing: Vec<&str> = [("pgbench", "postgresql"), ("redis-server", "redis-server"), ("nginx", "nginx")]
        .into_iter()
        .chain([("ab", "apache2-utils"), ("perf", "linux-perf")])
        .filter(|(cmd, _)| on_path(cmd).is_none())
        .map(|(_, pkg)| pkg)
        .collect();
    if !pg_bin.join("initdb").exists() || !missing.is_empty() {
        eprintln!("hostwide: needs postgres 15 and {missing:?} (apt-get install); skipped");
        return;
    }
    let scratch = tempfile::tempdir().expect("temp dir");
    let (mut server, server_url) = start_server(&bin(), &scratch.path().join("store"));
    let bench = Bench {
        scratch,
        pg_port: free_port(),
        redis_port: free_port(),
        nginx_port: free_port(),
        server_url,
        seconds: env_u64("HOTFRAME_BENCH_SECONDS", 10),
        warmup: env_u64("HOTFRAME_BENCH_WARMUP", 2),
        pg_clients: env_u64("HOTFRAME_BENCH_PG_CLIENTS", 16),
        ab_clients: env_u64("HOTFRAME_BENCH_AB_CLIENTS", 50),
    };
    let rounds = env_u64("HOTFRAME_BENCH_ROUNDS", 3) as usize;
    let chosen = Profiler::chosen();
    let data = start_postgres(bench.scratch.path(), &pg_bin, bench.pg_port);
    let mut redis = Command::new("redis-server")
        .args(["--port", &bench.redis_port.to_string(), "--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .spawn()
        .expect("start redis");
    let mut nginx = bench.start_nginx();
    // A host's daemons: processes the agent follows that wake on a timer and go back to
    // sleep at once (coreutils' tail polling an empty file), a context switch or two each.
    let idle_hz = env_u64("HOTFRAME_BENCH_IDLE_HZ", 25).max(1);
    let empty = bench.scratch.path().join("empty");
    std::fs::write(&empty, b"").expect("empty file");
    let mut idle: Vec<Child> = (0..env_u64("HOTFRAME_BENCH_IDLE", 200))
        .filter_map(|_| {
            Command::new("tail")
                .args(["---disable-inotify", "-f", "-s", &format!("{:.4}", 1.0 / idle_hz as f64)])
                .arg(&empty)
                .stdout(Stdio::null())
                .spawn()
                .ok()
        })
        .collect();
    println!(
        "== pgbench -C -c {} -j 2 + ab -k -c {} (nginx) + redis-benchmark, all at once, {} daemons waking {idle_hz} \
         times a second ({rounds} rounds of {} s, profilers started {} s before) ==",
        bench.pg_clients,
        bench.ab_clients,
        idle.len(),
        bench.seconds,
        bench.warmup
    );
    let mut runs: Vec<Vec<(Profiler, Run)>> = Vec::new();
    for round in 0..rounds {
        let mut order = chosen.clone();
        fastrand::shuffle(&mut order);
        let mut this = Vec::new();
        for p in order {
            let run = bench.run(p, round);
            println!(
                "round {round}: {:<32} pgbench {:>6.0} tps  nginx {:>7.0} rps  redis {:>7.0} rps  cpu {:>5.2}%  \
                 VmHWM {:>5.1} MiB  maxrss {:>5.1} MiB  lost {:>6}  {:>5} KiB/upload  host {:>6.0} ctxt/s {:>4.0} forks/s {:>4} procs",
                p.name(),
                run.load.pgbench_tps,
                run.load.nginx_rps,
                run.load.redis_rps,
                run.cpu_pct,
                run.hwm_mib,
                run.maxrss_mib,
                run.lost.map(|l| l.to_string()).unwrap_or_else(|| "-".into()),
                run.kib_per_upload.map(|k| format!("{k:.1}")).unwrap_or_else(|| "-".into()),
                run.ctxt_per_s,
                run.forks_per_s,
                run.processes,
            );
            this.push((p, run));
        }
        runs.push(this);
    }
    println!("-- medians over rounds: throughput / the same round's unprofiled run (pgbench, nginx, redis) --");
    for p in chosen.iter().copied() {
        let mut ratios: [Vec<f64>; 3] = Default::default();
        let pick = |f: fn(&Run) -> f64| -> f64 {
            median(runs.iter().flat_map(|r| r.iter().filter(|(q, _)| *q == p).map(|(_, run)| f(run))).collect())
        };
        for round in &runs {
            let base = round.iter().find(|(q, _)| *q == Profiler::None).map(|(_, r)| r.load).unwrap_or_default();
            if let Some((_, r)) = round.iter().find(|(q, _)| *q == p) {
                for (i, ratio) in r.load.ratios(&base).into_iter().enumerate() {
                    ratios[i].push(ratio);
                }
            }
        }
        let [pg, ngx, rd] = ratios.map(median);
        println!(
            "{:<32} throughput {pg:.3} {ngx:.3} {rd:.3}  cpu {:.2}% of a core  VmHWM {:.0} MiB  maxrss {:.0} MiB  \
             lost {:.0}  {:.1} KiB/upload  host {:.0} ctxt/s {:.0} forks/s {:.0} procs",
            p.name(),
            pick(|r| r.cpu_pct),
            pick(|r| r.hwm_mib),
            pick(|r| r.maxrss_mib),
            pick(|r| r.lost.unwrap_or(0) as f64),
            pick(|r| r.kib_per_upload.unwrap_or(0.0)),
            pick(|r| r.ctxt_per_s),
            pick(|r| r.forks_per_s),
            pick(|r| r.processes as f64),
        );
    }
    stop_postgres(&pg_bin, &data);
    for child in idle.iter_mut() {
        let _ = child.kill();
        let _ = child.wait();
    }
    for child in [&mut redis, &mut nginx, &mut server] {
        // SIGTERM: nginx's master stops its workers (a SIGKILL would orphan them).
        signal(child.id(), libc::SIGTERM);
        let _ = child.wait();
    }
}
