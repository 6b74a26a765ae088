//! What the benches share: the profilers the overhead benches compare, small environment
//! and /proc helpers, starting the services they load (hotframe's server, postgres), and
//! the synthetic service profiles of the store benches (a pool of stacks with Zipf-like
//! weights). Included with `#[path]` (each bench is its own crate).
//!
//! In: environment variables, PATH, /proc. Out: values, started children. Must not:
//! measure anything itself (each bench decides what and when).

#![allow(dead_code)]

use hotframe::model::{Profile, ProfileBuilder, ThreadState};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A profiler under comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profiler {
    None,
    Hotframe,
    /// `hotframe agent --cpu-only`: no wall-clock thread states, the like of perf/samply.
    HotframeCpuOnly,
    Perf,
    Samply,
}

impl Profiler {
    pub fn name(self) -> &'static str {
        match self {
            Profiler::None => "unprofiled",
            Profiler::Hotframe => "hotframe agent",
            Profiler::HotframeCpuOnly => "hotframe agent --cpu-only",
            Profiler::Perf => "perf --call-graph dwarf",
            Profiler::Samply => "samply",
        }
    }
}

/// An integer environment variable, or `default`.
pub fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// `name` found on PATH.
pub fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(name)).find(|p| p.is_file())
}

/// Function names that look like a Rust/C++ service's.
pub fn frame_names(n: usize, rng: &mut fastrand::Rng) -> Vec<String> {
    let crates =
        ["tokio", "hyper", "serde_json", "checkout", "std", "core", "alloc", "tower", "sqlx", "prost", "h2", "regex"];
    let modules = ["runtime", "task", "io", "ser", "de", "proto", "handler", "pool", "codec", "sync", "raw", "fmt"];
    let types =
        ["Harness<T,S>", "Connection", "Serializer<W,F>", "OrderService", "RawVec<T>", "Mutex<T>", "Encoder", "Pool"];
    let verbs = [
        "poll",
        "call",
        "encode",
        "decode",
        "write_all",
        "lock",
        "parse",
        "handle_request",
        "format_escaped_str",
        "grow",
    ];
    (0..n)
        .map(|i| {
            format!(
                "{}::{}::{}::{}_{}",
                crates[rng.usize(..crates.len())],
                modules[rng.usize(..modules.len())],
                types[rng.usize(..types.len())],
                verbs[rng.usize(..verbs.len())],
                i
            )
        })
        .collect()
}

/// The pool: stacks (root first) of frame indices, with their thread state.
pub struct Pool {
    /// Frame names.
    pub names: Vec<String>,
    /// Stacks (root first) with their state.
    pub stacks: Vec<(Vec<u32>, ThreadState)>,
    /// Cumulative Zipf-like weights over `stacks`.
    cumulative: Vec<f64>,
}

/// A pool of `n` distinct stacks with Zipf-like weights.
pub fn pool(rng: &mut fastrand::Rng, n: usize) -> Pool {
    let names = frame_names(6_000, rng);
    let mut seen = std::collections::HashSet::new();
    let mut stacks = Vec::new();
    while stacks.len() < n {
        // A walk down a call tree: the child at each level is a function of the parent
        // and a small, skewed choice, so stacks share long prefixes.
        let depth = rng.usize(10..=40);
        let mut frame = rng.usize(..3) as u64;
        let mut stack = Vec::with_capacity(depth);
        for _ in 0..depth {
            stack.push((frame % names.len() as u64) as u32);
            let choice = (rng.f64().powi(3) * 6.0) as u64;
            frame = frame.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(choice * 7919 + 1) >> 7;
        }
        if seen.insert(stack.clone()) {
            let state = match rng.u32(..100) {
                0..=54 => ThreadState::Runnable,
                55..=79 => ThreadState::Waiting,
                80..=89 => ThreadState::TimedWaiting,
                90..=94 => ThreadState::Blocked,
                _ => ThreadState::Io,
            };
            stacks.push((stack, state));
        }
    }
    let mut total = 0.0;
    let cumulative = (0..stacks.len())
        .map(|i| {
            total += 1.0 / (i as f64 + 1.0).powf(0.9);
            total
        })
        .collect();
    Pool { names, stacks, cumulative }
}

impl Pool {
    pub fn draw(&self, rng: &mut fastrand::Rng) -> usize {
        let x = rng.f64() * self.cumulative[self.cumulative.len() - 1];
        self.cumulative.partition_point(|&c| c < x).min(self.stacks.len() - 1)
    }

    /// A profile template with `distinct` distinct stacks; counts are the draws times
    /// `scale` (longer windows have proportionally more samples).
    pub fn profile(&self, rng: &mut fastrand::Rng, distinct: usize, scale: u64, len_ms: i64) -> Profile {
        let mut counts = std::collections::HashMap::new();
        while counts.len() < distinct {
            *counts.entry(self.draw(rng)).or_insert(0u64) += 1;
        }
        let mut b = ProfileBuilder::new("checkout", 0, len_ms, 10_101_010)
            .label("version", "1.4.2")
            .label("region", "eu-west-1");
        let mut names: Vec<&str> = Vec::new();
        for (i, n) in counts {
            let (stack, state) = &self.stacks[i];
            names.clear();
            names.extend(stack.iter().map(|f| self.names[*f as usize].as_str()));
            b.add(&names, *state, n * scale);
        }
        b.finish()
    }
}
/// A free loopback TCP port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

/// Whether this process runs as root (what `tests/it/pg.rs` asks of its harness, like
/// `require`, `tempdir` and `eventually`: benches include that file with `#[path]`).
pub fn is_root() -> bool {
    // SAFETY: geteuid(2) has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// `met`, saying `skipped: ...` when not.
pub fn require(what: &str, met: bool, how: &str) -> bool {
    if !met {
        println!("skipped: {what} is missing; {how}");
    }
    met
}

/// A temporary directory.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

/// Polls `ready` until it holds; panics after `within`.
pub fn eventually(what: &str, within: std::time::Duration, mut ready: impl FnMut() -> bool) {
    let began = std::time::Instant::now();
    while !ready() {
        assert!(began.elapsed() < within, "{what}: not within {within:?}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// The median (the upper one of an even count); 0 for none.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// Runs a command, its stdout as text (stderr dropped).
pub fn sh(cmd: &mut Command) -> String {
    let out = cmd.stderr(Stdio::null()).output().expect("run command");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// utime + stime (+ cutime + cstime with `children`) of a process, seconds (0 if gone).
pub fn proc_cpu_s(pid: u32, children: bool) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0.0 };
    let Some(close) = stat.rfind(')') else { return 0.0 };
    let f: Vec<u64> = stat[close + 2..].split_whitespace().map(|x| x.parse().unwrap_or(0)).collect();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let ticks = f.get(11).unwrap_or(&0) + f.get(12).unwrap_or(&0);
    let child_ticks = if children { f.get(13).unwrap_or(&0) + f.get(14).unwrap_or(&0) } else { 0 };
    (ticks + child_ticks) as f64 / hz
}

/// Waits for a child; its peak RSS (ru_maxrss), MiB.
pub fn wait_rss_mib(child: &mut Child) -> f64 {
    let mut status = 0;
    // SAFETY: wait4 on our own child with a zeroed rusage we own.
    unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut usage);
        usage.ru_maxrss as f64 / 1024.0
    }
}

/// Sends `sig` to a process we started.
pub fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) on a child we started.
    unsafe { libc::kill(pid as libc::pid_t, sig) };
}

/// Starts `hotframe serve` on a loopback port with its store in `data`: the child and
/// its base URL.
pub fn start_server(bin: &str, data: &Path) -> (Child, String) {
    let mut server = Command::new(bin)
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(data)
        .env("HOTFRAME_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start hotframe serve");
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(server.stdout.take().expect("server stdout")), &mut line)
        .expect("server address");
    let url = line.trim().trim_start_matches("listening on ").to_string();
    (server, url)
}

/// Starts postgres (`pg_bin`'s initdb and pg_ctl, as user postgres) in `scratch`/pg on
/// loopback `port`, with pgbench's tables at scale 10; its data directory.
pub fn start_postgres(scratch: &Path, pg_bin: &Path, port: u16) -> PathBuf {
    let dir = scratch.join("pg");
    std::fs::create_dir_all(&dir).expect("pg dir");
    sh(Command::new("chown").arg("postgres").arg(&dir));
    let data = dir.join("data");
    let as_pg = |args: &str| {
        sh(Command::new("su").args(["postgres", "-s", "/bin/sh", "-c", args]));
    };
    as_pg(&format!("{}/initdb -D {} -A trust -U postgres", pg_bin.display(), data.display()));
    as_pg(&format!(
        "{}/pg_ctl -D {} -l {}/log -o '-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=100' -w start",
        pg_bin.display(),
        data.display(),
        dir.display(),
        port,
        dir.display()
    ));
    sh(Command::new("pgbench")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "postgres"])
        .args(["-i", "-s", "10", "postgres"]));
    data
}

/// Stops the postgres of `data`.
pub fn stop_postgres(pg_bin: &Path, data: &Path) {
    let stop = format!("{}/pg_ctl -D {} -m fast stop", pg_bin.display(), data.display());
    sh(Command::new("su").args(["postgres", "-s", "/bin/sh", "-c", &stop]));
}

/// The start of a bench that loads postgres: None (said why) when listing or not root,
/// else postgres' bin directory (PG_BIN, default /usr/lib/postgresql/15/bin).
pub fn postgres_bench_start(bench: &str) -> Option<PathBuf> {
    if std::env::args().any(|a| a == "--list") {
        return None;
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("{bench}: needs root (perf_event_open system-wide, su postgres); skipped");
        return None;
    }
    Some(PathBuf::from(std::env::var("PG_BIN").unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".into())))
}

/// The hotframe binary to run: HOTFRAME_BIN (a copy a concurrent build cannot replace),
/// else the one cargo built.
pub fn hotframe_bin() -> String {
    std::env::var("HOTFRAME_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_hotframe").to_string())
}
