//! The workload `hotframe demo` profiles, run as `hotframe demo-workload` (a hidden
//! subcommand of the same binary, so the demo needs nothing else installed).
//!
//! `service` mode looks like a small service: request handlers whose time goes mostly
//! to `parse_json`, a flusher that sleeps with a timeout, a worker waiting on a
//! condition variable, and two threads fighting over one mutex. `cpu` mode runs only
//! CPU-bound workers and, with `--report`, prints the work done per second, which the
//! overhead benchmark compares with and without profilers.
//!
//! In: a `WorkloadConfig` (`cli` builds it from the flags). Out: CPU load, and a JSON
//! line on stdout with `report`. Must not: touch the network or the disk.

use serde::Serialize;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Why the workload could not run.
#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    /// The --mode is unknown.
    #[error("unknown workload mode {0:?}: use `service` or `cpu`")]
    BadMode(String),
    /// The --duration does not parse.
    #[error("invalid --duration: {0}")]
    BadDuration(crate::model::time::BadTime),
    /// The OS refused a new thread.
    #[error("could not start a workload thread: {0}")]
    Thread(std::io::Error),
}

/// Which threads the workload runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WorkloadMode {
    /// Request handlers dominated by `parse_json`, plus threads that sleep, wait and
    /// contend for a lock; handlers pause briefly to leave the demo some CPU.
    #[default]
    Service,
    /// Only CPU-bound workers, at full speed (for benchmarks).
    Cpu,
}

impl std::str::FromStr for WorkloadMode {
    type Err = WorkloadError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "service" => Ok(WorkloadMode::Service),
            "cpu" => Ok(WorkloadMode::Cpu),
            other => Err(WorkloadError::BadMode(other.to_string())),
        }
    }
}

/// What `hotframe demo-workload` runs.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkloadConfig {
    /// Which threads run. Default `Service`.
    pub mode: WorkloadMode,
    /// CPU-bound worker threads (at least 1 runs). Default 2.
    pub threads: usize,
    /// Stop after this long; None runs until SIGINT/SIGTERM. Default none.
    pub duration: Option<Duration>,
    /// Print the work done per second as JSON on stdout at the end. Default false.
    pub report: bool,
}

impl Default for WorkloadConfig {
    fn default() -> Self {
        WorkloadConfig { mode: WorkloadMode::Service, threads: 2, duration: None, report: false }
    }
}

/// What `report` prints.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadReport {
    /// Requests (documents parsed) per second, all CPU workers together.
    pub ops_per_sec: f64,
    /// CPU-bound worker threads.
    pub threads: usize,
    /// Wall seconds measured.
    pub seconds: f64,
}

/// How often the main thread looks for a stop request while the workers run.
const STOP_POLL: Duration = Duration::from_millis(100);

/// The request body every handler parses: big enough that parsing dominates.
fn request_document(seed: u64) -> String {
    let mut doc = String::from("{\"items\":[");
    for i in 0..64 {
        if i > 0 {
            doc.push(',');
        }
        doc.push_str(&format!(
            "{{\"id\":{},\"name\":\"item-{}\",\"price\":{}.{:02},\"tags\":[\"a\",\"b\\\"c\"],\"ok\":true}}",
            seed + i,
            i,
            i * 3,
            i % 100
        ));
    }
    doc.push_str("]}");
    doc
}

/// The demo's hot function: a JSON tokenizer that checksums what it sees.
#[inline(never)]
pub fn parse_json(doc: &[u8]) -> u64 {
    let mut sum = 0u64;
    let mut depth = 0u32;
    let mut in_string = false;
    let mut escaped = false;
    let mut number = 0u64;
    for &b in doc {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            sum = sum.wrapping_mul(31).wrapping_add(b as u64);
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => depth += 1,
            b'}' | b']' => depth = depth.saturating_sub(1),
            b'0'..=b'9' => number = number.wrapping_mul(10).wrapping_add((b - b'0') as u64),
            _ => {
                sum ^= number.rotate_left(depth);
                number = 0;
            }
        }
    }
    sum
}

#[inline(never)]
fn compute_checksum(doc: &[u8]) -> u64 {
    doc.chunks(8).fold(0xcbf29ce484222325u64, |h, c| (h ^ c[0] as u64).wrapping_mul(0x100000001b3))
}

#[inline(never)]
fn render_response(parsed: u64, checksum: u64) -> String {
    format!("{{\"status\":\"ok\",\"parsed\":{parsed},\"checksum\":{checksum}}}")
}

/// One request: parse (most of the time), checksum, render.
#[inline(never)]
fn handle_request(doc: &[u8]) -> usize {
    let mut parsed = 0;
    for _ in 0..4 {
        parsed ^= parse_json(black_box(doc));
    }
    let checksum = compute_checksum(doc);
    render_response(parsed, checksum).len()
}

#[inline(never)]
fn request_loop(stop: &AtomicBool, done: &AtomicU64, throttle: bool) {
    let doc = request_document(fastrand::u64(0..1000));
    let mut local = 0u64;
    while !stop.load(Ordering::Relaxed) {
        black_box(handle_request(doc.as_bytes()));
        local += 1;
        if local % 64 == 0 {
            done.fetch_add(64, Ordering::Relaxed);
            if throttle {
                // Leave the demo's server and agent some CPU on a small machine.
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    }
    done.fetch_add(local % 64, Ordering::Relaxed);
}

#[inline(never)]
fn background_flush(stop: &AtomicBool) {
    let doc = request_document(7);
    while !stop.load(Ordering::Relaxed) {
        black_box(compute_checksum(doc.as_bytes()));
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[inline(never)]
fn wait_for_jobs(stop: &AtomicBool, jobs: &(Mutex<u64>, Condvar)) {
    let (lock, cvar) = jobs;
    let mut pending = lock.lock().unwrap_or_else(|p| p.into_inner());
    while !stop.load(Ordering::Relaxed) {
        pending = cvar.wait(pending).unwrap_or_else(|p| p.into_inner());
        *pending = 0;
    }
}

#[inline(never)]
fn update_cache(stop: &AtomicBool, cache: &Mutex<Vec<u64>>, hold: Duration, pause: Duration) {
    let doc = request_document(11);
    while !stop.load(Ordering::Relaxed) {
        {
            let mut entries = cache.lock().unwrap_or_else(|p| p.into_inner());
            let until = Instant::now() + hold;
            while Instant::now() < until {
                entries.push(parse_json(doc.as_bytes()));
                entries.truncate(16);
            }
        }
        std::thread::sleep(pause);
    }
}

/// Runs the workload until `config.duration` passes or SIGINT/SIGTERM arrives.
pub fn run(config: WorkloadConfig) -> Result<(), WorkloadError> {
    let service = config.mode == WorkloadMode::Service;
    crate::signals::install();
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let jobs = Arc::new((Mutex::new(0u64), Condvar::new()));
    let cache = Arc::new(Mutex::new(Vec::new()));
    let mut threads = Vec::new();
    let mut spawn = |name: &str, body: Box<dyn FnOnce() + Send>| -> Result<(), WorkloadError> {
        let handle = std::thread::Builder::new().name(name.to_string()).spawn(body).map_err(WorkloadError::Thread)?;
        threads.push(handle);
        Ok(())
    };
    for i in 0..config.threads.max(1) {
        let (stop, done) = (Arc::clone(&stop), Arc::clone(&done));
        spawn(&format!("handler-{i}"), Box::new(move || request_loop(&stop, &done, service)))?;
    }
    if service {
        let s = Arc::clone(&stop);
        spawn("flusher", Box::new(move || background_flush(&s)))?;
        let (s, j) = (Arc::clone(&stop), Arc::clone(&jobs));
        spawn("job-waiter", Box::new(move || wait_for_jobs(&s, &j)))?;
        let (s, c) = (Arc::clone(&stop), Arc::clone(&cache));
        spawn(
            "cache-owner",
            Box::new(move || update_cache(&s, &c, Duration::from_millis(40), Duration::from_millis(5))),
        )?;
        let (s, c) = (Arc::clone(&stop), Arc::clone(&cache));
        spawn(
            "cache-reader",
            Box::new(move || update_cache(&s, &c, Duration::from_micros(200), Duration::from_millis(1))),
        )?;
    }
    let started = Instant::now();
    let until = config.duration.map(|d| started + d);
    while !crate::signals::stop_requested() {
        let now = Instant::now();
        let left = match until {
            Some(until) if now >= until => break,
            Some(until) => until - now,
            None => STOP_POLL,
        };
        std::thread::sleep(left.min(STOP_POLL));
    }
    let seconds = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    {
        // Holding the lock orders this wake-up after the waiter's check of `stop`.
        let _pending = jobs.0.lock().unwrap_or_else(|p| p.into_inner());
        jobs.1.notify_all();
    }
    for handle in threads {
        let _ = handle.join();
    }
    let ops = done.load(Ordering::Relaxed);
    if config.report {
        let report =
            WorkloadReport { ops_per_sec: ops as f64 / seconds.max(1e-9), threads: config.threads.max(1), seconds };
        println!("{}", serde_json::to_string(&report).unwrap_or_default());
    }
    Ok(())
}
