//! The agent's own health: one snapshot type, rendered as a log line and as Prometheus
//! text, served at `--metrics-listen` by a tiny std HTTP server (one thread, one
//! request per connection; no axum so the agent stays light).
//!
//! In: sampler and uploader counters. Out: text. Must not: block the sampling loop (the
//! loop only swaps in a new snapshot).

use crate::sampler::SamplerStats;
use crate::upload::UploadStats;
use serde::Serialize;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Everything the agent reports about itself.
#[derive(Debug, Clone, Copy, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentHealth {
    /// Processes sampled now.
    pub targets: u64,
    /// Sampler counters.
    pub sampler: SamplerStats,
    /// Uploader counters.
    pub upload: UploadStats,
    /// CPU seconds the agent itself used (user + system).
    pub cpu_seconds: f64,
    /// Resident memory of the agent, bytes.
    pub rss_bytes: u64,
}

impl AgentHealth {
    /// One log line with what an operator looks at first.
    pub fn log_line(&self) -> String {
        let (s, u) = (&self.sampler, &self.upload);
        format!(
            "targets={} processes_followed={} threads={} samples={} other_samples={} offcpu_samples={} offcpu_rooted={:.3} \
             observations={} deferred={} lost={} uncovered_fd={} uncovered_unreadable={} uncovered_cpus={} unwind_failures={} truncated={} \
             queue={} spooled={} sent={} failed={} dropped={} bytes_sent={} retries={} cpu_s={:.2} rss_mib={:.1}",
            self.targets,
            s.processes_followed,
            s.threads_active,
            s.samples,
            s.other_samples,
            s.offcpu_samples,
            s.offcpu_rooted_ratio(),
            s.observations,
            s.observations_deferred,
            s.lost,
            s.uncovered_fd_limit,
            s.uncovered_unreadable,
            s.uncovered_cpus,
            s.unwind_failures,
            s.truncated,
            u.queued,
            u.spooled,
            u.sent,
            u.failed,
            u.dropped,
            u.bytes_sent,
            u.retries,
            self.cpu_seconds,
            self.rss_bytes as f64 / (1 << 20) as f64
        )
    }

    /// Prometheus text exposition format.
    pub fn prometheus(&self) -> String {
        let (s, u) = (&self.sampler, &self.upload);
        let rows: [(&str, &str, &str, f64); 37] = [
            ("hotframe_agent_targets", "gauge", "Processes sampled now.", self.targets as f64),
            (
                "hotframe_agent_processes_followed_total",
                "counter",
                "Processes that became targets (children and short-lived ones included).",
                s.processes_followed as f64,
            ),
            ("hotframe_agent_threads", "gauge", "Threads sampled now.", s.threads_active as f64),
            ("hotframe_agent_samples_total", "counter", "On-CPU samples of targets.", s.samples as f64),
            (
                "hotframe_agent_other_samples_total",
                "counter",
                "Samples of other processes, dropped after their header.",
                s.other_samples as f64,
            ),
            (
                "hotframe_agent_offcpu_samples_total",
                "counter",
                "Wall-clock samples of off-CPU threads.",
                s.offcpu_samples as f64,
            ),
            (
                "hotframe_agent_oncpu_topup_samples_total",
                "counter",
                "On-CPU samples added for CPU time (schedstat) no sample was read for.",
                s.oncpu_topup_samples as f64,
            ),
            (
                "hotframe_agent_oncpu_dropped_samples_total",
                "counter",
                "On-CPU samples left out beyond the CPU time (schedstat).",
                s.oncpu_dropped_samples as f64,
            ),
            (
                "hotframe_agent_offcpu_stacks_rooted_ratio",
                "gauge",
                "Share of off-CPU samples whose stack reaches the thread's root.",
                s.offcpu_rooted_ratio(),
            ),
            ("hotframe_agent_observations_total", "counter", "Off-CPU observations made.", s.observations as f64),
            (
                "hotframe_agent_observations_deferred_total",
                "counter",
                "Off-CPU observations put off by the observation budget.",
                s.observations_deferred as f64,
            ),
            (
                "hotframe_agent_inconsistent_reads_total",
                "counter",
                "Off-CPU observations given up: the thread kept running between the reads.",
                s.inconsistent_reads as f64,
            ),
            (
                "hotframe_agent_uncovered_lost_records_total",
                "counter",
                "Records (samples, forks, exits) the kernel dropped: ring buffer full.",
                s.lost as f64,
            ),
            (
                "hotframe_agent_uncovered_fd_limit_threads_total",
                "counter",
                "Threads without off-CPU states: the open-file limit was reached.",
                s.uncovered_fd_limit as f64,
            ),
            (
                "hotframe_agent_uncovered_unreadable_total",
                "counter",
                "Off-CPU observations refused: ptrace access to the target denied.",
                s.uncovered_unreadable as f64,
            ),
            (
                "hotframe_agent_uncovered_cpus",
                "gauge",
                "CPUs whose sampling event could not be opened.",
                s.uncovered_cpus as f64,
            ),
            (
                "hotframe_agent_runqueue_samples_total",
                "counter",
                "RUNNABLE samples for run-queue wait.",
                s.runqueue_samples as f64,
            ),
            ("hotframe_agent_samples_lost_total", "counter", "Samples the kernel dropped.", s.lost as f64),
            (
                "hotframe_agent_jit_frames_named_total",
                "counter",
                "Frames named from a runtime's perf map.",
                s.jit_frames_named as f64,
            ),
            (
                "hotframe_agent_perfmap_dumps_total",
                "counter",
                "jcmd Compiler.perfmap runs asking a JVM for its perf map.",
                s.perfmap_dumps as f64,
            ),
            (
                "hotframe_agent_perfmap_dump_failures_total",
                "counter",
                "jcmd Compiler.perfmap runs that failed (no jcmd, timeout, not HotSpot).",
                s.perfmap_dump_failures as f64,
            ),
            (
                "hotframe_agent_unwind_failures_total",
                "counter",
                "Stacks not unwound past the first frame.",
                s.unwind_failures as f64,
            ),
            (
                "hotframe_agent_truncated_stacks_total",
                "counter",
                "Stacks that stopped before the thread root.",
                s.truncated as f64,
            ),
            (
                "hotframe_agent_symbol_cache_hits_total",
                "counter",
                "Frames named from the cache.",
                s.symbol_cache_hits as f64,
            ),
            (
                "hotframe_agent_symbol_cache_misses_total",
                "counter",
                "Frames that needed symbolization.",
                s.symbol_cache_misses as f64,
            ),
            ("hotframe_agent_upload_queue_depth", "gauge", "Profiles waiting in memory.", u.queued as f64),
            ("hotframe_agent_upload_spooled", "gauge", "Profiles waiting in the on-disk spool.", u.spooled as f64),
            ("hotframe_agent_upload_spool_bytes", "gauge", "Bytes in the on-disk spool.", u.spool_bytes as f64),
            ("hotframe_agent_upload_sent_total", "counter", "Profiles the server acknowledged.", u.sent as f64),
            ("hotframe_agent_upload_failed_total", "counter", "Upload requests that failed.", u.failed as f64),
            ("hotframe_agent_upload_rejected_total", "counter", "Profiles the server refused.", u.rejected as f64),
            (
                "hotframe_agent_upload_dropped_total",
                "counter",
                "Profiles dropped by a full queue or spool.",
                u.dropped as f64,
            ),
            ("hotframe_agent_upload_bytes_total", "counter", "Compressed bytes acknowledged.", u.bytes_sent as f64),
            ("hotframe_agent_upload_retries_total", "counter", "Upload retries.", u.retries as f64),
            ("hotframe_agent_ticks_total", "counter", "Wall-clock ticks.", s.ticks as f64),
            ("hotframe_agent_cpu_seconds_total", "counter", "CPU time the agent used.", self.cpu_seconds),
            ("hotframe_agent_resident_memory_bytes", "gauge", "Resident memory of the agent.", self.rss_bytes as f64),
        ];
        let mut out = String::with_capacity(4096);
        for (name, kind, help, value) in rows {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
        }
        out
    }
}

/// The agent's own CPU seconds and resident bytes, from getrusage and /proc/self/statm.
pub fn own_usage() -> (f64, u64) {
    // SAFETY: getrusage fills a zeroed struct we own.
    let cpu = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        tv(usage.ru_utime) + tv(usage.ru_stime)
    };
    let rss_pages: u64 = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u64;
    (cpu, rss_pages * page)
}

/// Serves the latest `AgentHealth` as Prometheus text until dropped.
pub struct MetricsServer {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
    /// The address actually bound (useful with port 0).
    pub addr: std::net::SocketAddr,
}

impl MetricsServer {
    /// Binds `addr` and serves `health` from a background thread.
    pub fn start(addr: &str, health: Arc<Mutex<AgentHealth>>) -> std::io::Result<MetricsServer> {
        let listener = TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let bound = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = Arc::clone(&stop);
        let handle = std::thread::Builder::new().name("hotframe-metrics".into()).spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut stream, _)) => {
                        let _ = stream.set_nonblocking(false);
                        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                        let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
                        // The request itself does not matter: every path answers metrics.
                        let mut request = [0u8; 2048];
                        let _ = stream.read(&mut request);
                        let body = health.lock().map(|h| h.prometheus()).unwrap_or_default();
                        let _ = write!(
                            stream,
                            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        );
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        })?;
        Ok(MetricsServer { stop, handle: Some(handle), addr: bound })
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}
