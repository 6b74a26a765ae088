//! The in-process agent for Rust services, built on pprof-rs (SIGPROF at 99 Hz,
//! framehop unwinding). One call in `main` starts it; the returned `Agent` is a guard:
//! while it lives, a background thread cuts the samples into one profile per upload
//! interval (jittered ±10%), converts it (`convert`) and hands it to the same resilient
//! `upload::Uploader` as the external agent. Dropping it uploads the last window and
//! flushes for a bounded time.
//!
//! In: builder settings. Out: profiles to the server (`cpu`, every sample RUNNABLE).
//! Must not: pull in axum, tokio or the store (feature `inproc` links only `model`
//! and `upload`), block the service's threads, or report thread states it cannot see:
//! pprof-rs is CPU-only (see docs/inproc.md for why wall-clock is left out).

pub mod convert;

use crate::model::profile::{valid_label_name, valid_service_name};
use crate::model::time::now_ms;
use crate::model::ProfileBuilder;
use crate::upload::{jittered, UploadError, UploadOptions, UploadStats, Uploader};
use convert::ConvertOptions;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Why the in-process agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum InprocError {
    #[error("no server URL: call .server(\"http://HOST:PORT\") on the builder")]
    NoServer,
    #[error("no service name: call .service(\"NAME\") on the builder")]
    NoService,
    #[error("invalid service name {0:?}: use letters, digits and . _ - / : (at most 128)")]
    BadService(String),
    #[error("invalid label name {0:?}: use letters, digits and _ (not starting with a digit, at most 64)")]
    BadLabel(String),
    #[error("frequency {0} Hz is out of range: use 1 to 1000 (99 is the default)")]
    BadFrequency(u32),
    #[error("upload interval must be at least 1 s (got {0:?})")]
    BadInterval(Duration),
    #[error(transparent)]
    Upload(#[from] UploadError),
    #[error("pprof-rs could not start the CPU profiler: {0} (only one profiler may run per process: is another hotframe Agent or pprof guard alive?)")]
    Profiler(String),
    #[error("could not start the sampling thread: {0}")]
    Thread(std::io::Error),
}

/// Settings of the in-process agent; `Agent::builder()` makes one.
#[derive(Debug, Clone)]
pub struct AgentBuilder {
    server: Option<String>,
    service: Option<String>,
    labels: BTreeMap<String, String>,
    token: Option<String>,
    frequency: u32,
    upload_interval: Duration,
    spool_dir: Option<PathBuf>,
    flush_timeout: Duration,
    thread_root: bool,
    blocklist: Vec<String>,
}

impl Default for AgentBuilder {
    fn default() -> Self {
        AgentBuilder {
            server: None,
            service: None,
            labels: BTreeMap::new(),
            token: None,
            frequency: 99,
            upload_interval: Duration::from_secs(10),
            spool_dir: None,
            flush_timeout: Duration::from_secs(5),
            thread_root: false,
            blocklist: Vec::new(),
        }
    }
}

impl AgentBuilder {
    /// Server base URL, `http://HOST:PORT` (required; no TLS).
    pub fn server(mut self, url: impl Into<String>) -> Self {
        self.server = Some(url.into());
        self
    }

    /// Service name of every profile (required).
    pub fn service(mut self, name: impl Into<String>) -> Self {
        self.service = Some(name.into());
        self
    }

    /// Adds a label on every profile (e.g. `version`, `region`). `host` and `pid` are
    /// set by default and may be overridden.
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// Bearer token with the `ingest` scope.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Sampling frequency in Hz (default 99, off the beat of 100 Hz timers).
    pub fn frequency(mut self, hz: u32) -> Self {
        self.frequency = hz;
        self
    }

    /// How often a profile is cut and uploaded, jittered ±10% (default 10 s).
    pub fn upload_interval(mut self, interval: Duration) -> Self {
        self.upload_interval = interval;
        self
    }

    /// Directory where profiles wait while the server is unreachable (default: memory
    /// only, 64 profiles).
    pub fn spool_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.spool_dir = Some(dir.into());
        self
    }

    /// How long dropping the agent waits to deliver what is queued (default 5 s).
    pub fn flush_timeout(mut self, timeout: Duration) -> Self {
        self.flush_timeout = timeout;
        self
    }

    /// Put each sample's thread name as the root frame (default off, as in
    /// pyroscope-rs; on, the flame graph splits by thread first).
    pub fn thread_names(mut self, on: bool) -> Self {
        self.thread_root = on;
        self
    }

    /// Libraries whose code is never unwound (pprof-rs's blocklist, matched against
    /// the file name, e.g. `libc`): samples landing there are dropped. Default empty.
    pub fn blocklist<S: AsRef<str>>(mut self, libraries: &[S]) -> Self {
        self.blocklist = libraries.iter().map(|s| s.as_ref().to_string()).collect();
        self
    }

    /// Checks the settings, starts the uploader and the profiler, and returns the
    /// guard. Fails if another pprof-rs profiler runs in this process.
    pub fn start(self) -> Result<Agent, InprocError> {
        let server = self.server.clone().ok_or(InprocError::NoServer)?;
        let service = self.service.clone().ok_or(InprocError::NoService)?;
        if !valid_service_name(&service) {
            return Err(InprocError::BadService(service));
        }
        if let Some(bad) = self.labels.keys().find(|k| !valid_label_name(k)) {
            return Err(InprocError::BadLabel(bad.clone()));
        }
        if !(1..=1000).contains(&self.frequency) {
            return Err(InprocError::BadFrequency(self.frequency));
        }
        if self.upload_interval < Duration::from_secs(1) {
            return Err(InprocError::BadInterval(self.upload_interval));
        }
        let mut upload = UploadOptions::new(&server);
        upload.token = self.token.clone();
        upload.spool_dir = self.spool_dir.clone();
        let uploader = Arc::new(Uploader::start(upload)?);

        let mut labels = BTreeMap::new();
        labels.insert("host".to_string(), crate::host::hostname());
        labels.insert("pid".to_string(), std::process::id().to_string());
        labels.extend(self.labels.clone());

        let stop = Arc::new(StopSignal::default());
        let (ready_tx, ready_rx) = mpsc::channel();
        let work = WorkCounter::default();
        let window = Window { service, labels, settings: self.clone(), work: work.clone() };
        let thread_uploader = Arc::clone(&uploader);
        let thread_stop = Arc::clone(&stop);
        let handle = std::thread::Builder::new()
            .name("hotframe-inproc".into())
            .spawn(move || window.run(&thread_uploader, &thread_stop, ready_tx))
            .map_err(InprocError::Thread)?;
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(message)) => {
                let _ = handle.join();
                return Err(InprocError::Profiler(message));
            }
            Err(_) => return Err(InprocError::Profiler("the sampling thread ended while starting".into())),
        }
        tracing::info!(server = %server, frequency = self.frequency, "hotframe in-process agent started");
        Ok(Agent { stop, thread: Some(handle), uploader, flush_timeout: self.flush_timeout, work })
    }
}

/// A handle on the agent's work counter: `add(n)` counts `n` units of work (requests
/// handled) in the current profile window. Cheap to clone and to call from any thread
/// (one atomic add). Once anything was counted, every profile carries the count of
/// its window (0 included), and the server measures wins as CPU per unit of work.
#[derive(Debug, Clone, Default)]
pub struct WorkCounter {
    state: Arc<WorkState>,
}

#[derive(Debug, Default)]
struct WorkState {
    units: AtomicU64,
    used: AtomicBool,
}

impl WorkCounter {
    /// Counts `n` units of work done now.
    pub fn add(&self, n: u64) {
        self.state.used.store(true, Ordering::Relaxed);
        self.state.units.fetch_add(n, Ordering::Relaxed);
    }

    /// The count since the last take (None if the counter was never used), reset to 0.
    fn take(&self) -> Option<u64> {
        let units = self.state.units.swap(0, Ordering::Relaxed);
        self.state.used.load(Ordering::Relaxed).then_some(units)
    }
}

/// The running in-process agent: a guard. Keep it alive for as long as the service
/// should be profiled; dropping it uploads the last window and flushes.
pub struct Agent {
    stop: Arc<StopSignal>,
    thread: Option<JoinHandle<()>>,
    uploader: Arc<Uploader>,
    flush_timeout: Duration,
    work: WorkCounter,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent").field("stats", &self.stats()).finish()
    }
}

impl Agent {
    /// Settings with defaults: 99 Hz, 10 s upload interval, no thread names.
    pub fn builder() -> AgentBuilder {
        AgentBuilder::default()
    }

    /// Counts `n` units of work (requests handled) now: see `WorkCounter`.
    pub fn add_work(&self, n: u64) {
        self.work.add(n)
    }

    /// A handle on the work counter, for request handlers that do not hold the agent.
    pub fn work_counter(&self) -> WorkCounter {
        self.work.clone()
    }

    /// The uploader's health counters.
    pub fn stats(&self) -> UploadStats {
        self.uploader.stats()
    }

    /// Stops sampling, uploads the last window and waits up to the flush timeout for
    /// delivery; true if everything was delivered.
    pub fn stop(mut self) -> bool {
        self.shutdown()
    }

    fn shutdown(&mut self) -> bool {
        let Some(handle) = self.thread.take() else { return true };
        self.stop.raise();
        let _ = handle.join();
        self.uploader.flush(self.flush_timeout)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if !self.shutdown() {
            tracing::warn!(stats = ?self.uploader.stats(), "hotframe in-process agent stopped with profiles undelivered");
        }
    }
}

/// Tells the sampling thread to finish; waking it at once rather than at the next cut.
#[derive(Default)]
struct StopSignal {
    stopped: Mutex<bool>,
    wake: Condvar,
}

impl StopSignal {
    fn raise(&self) {
        *self.stopped.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.wake.notify_all();
    }

    /// Sleeps until `deadline`; true if stopped meanwhile.
    fn wait_until(&self, deadline: Instant) -> bool {
        let mut stopped = self.stopped.lock().unwrap_or_else(|p| p.into_inner());
        while !*stopped {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            stopped =
                self.wake.wait_timeout(stopped, deadline - now).map(|(g, _)| g).unwrap_or_else(|p| p.into_inner().0);
        }
        true
    }
}

/// Builds pprof-rs's unwinder now, on the calling thread. Call it right after
/// `pprof::ProfilerGuardBuilder::build` succeeded, from a point where no lock is held.
///
/// pprof-rs builds its framehop unwinder lazily inside the first SIGPROF handler, which
/// allocates: if that first signal lands while a thread is inside malloc, the process
/// deadlocks (seen: a `/debug/pprof/profile` endpoint hung with one thread in the handler
/// waiting for the malloc lock and the others spinning on pprof-rs's profiler lock).
/// Taking the first sample here builds it safely. Once per process: later profilers
/// reuse the unwinder.
pub fn prime_unwinder() {
    static UNWINDER_BUILT: std::sync::Once = std::sync::Once::new();
    // SAFETY: raise() only sends SIGPROF to this thread, whose handler pprof-rs installed.
    UNWINDER_BUILT.call_once(|| unsafe {
        libc::raise(libc::SIGPROF);
    });
}

/// The sampling thread's state: what every profile is labelled with.
struct Window {
    service: String,
    labels: BTreeMap<String, String>,
    settings: AgentBuilder,
    work: WorkCounter,
}

impl Window {
    fn start_profiler(&self) -> Result<pprof::ProfilerGuard<'static>, String> {
        let guard = pprof::ProfilerGuardBuilder::default()
            .frequency(self.settings.frequency as i32)
            .blocklist(&self.settings.blocklist)
            .build()
            .map_err(|e| e.to_string())?;
        prime_unwinder();
        Ok(guard)
    }

    /// Cuts a profile every jittered interval until stopped; the last window is cut at
    /// stop. Each cut restarts pprof-rs, whose report only ever grows otherwise.
    fn run(self, uploader: &Uploader, stop: &StopSignal, ready: mpsc::Sender<Result<(), String>>) {
        let mut guard = match self.start_profiler() {
            Ok(g) => g,
            Err(e) => {
                let _ = ready.send(Err(e));
                return;
            }
        };
        let _ = ready.send(Ok(()));
        let mut window_start = now_ms();
        loop {
            let stopped = stop.wait_until(Instant::now() + jittered(self.settings.upload_interval, 0.1));
            // Copy the raw samples (cheap, no symbolization) before restarting, so that
            // the gap without sampling stays short; symbolize afterwards.
            let report = guard.report().build_unresolved();
            let window_end = now_ms().max(window_start + 1);
            drop(guard);
            let next = if stopped { None } else { Some(self.start_profiler()) };
            match report {
                Ok(report) => self.submit(uploader, report, window_start, window_end),
                Err(e) => tracing::warn!("pprof-rs report failed, window dropped: {e}"),
            }
            window_start = window_end;
            guard = match next {
                Some(Ok(g)) => g,
                Some(Err(e)) => {
                    tracing::error!("pprof-rs could not restart, in-process profiling stops: {e}");
                    return;
                }
                None => return,
            };
        }
    }

    fn submit(&self, uploader: &Uploader, report: pprof::UnresolvedReport, start_ms: i64, end_ms: i64) {
        let work = self.work.take();
        if report.data.is_empty() && work.unwrap_or(0) == 0 {
            return;
        }
        let period_ns = 1_000_000_000 / u64::from(self.settings.frequency);
        let mut builder = ProfileBuilder::new(&self.service, start_ms, end_ms, period_ns);
        builder.labels_mut().extend(self.labels.clone());
        let resolved: Vec<(pprof::Frames, isize)> =
            report.data.into_iter().map(|(frames, count)| (pprof::Frames::from(frames), count)).collect();
        let profile = convert::to_profile(
            resolved.iter().map(|(f, c)| (f, *c)),
            builder,
            ConvertOptions { thread_root: self.settings.thread_root },
        );
        let profile = crate::model::Profile { work, ..profile };
        tracing::debug!(
            samples = profile.total_samples(),
            stacks = profile.stacks.len(),
            ?work,
            "in-process profile cut"
        );
        uploader.submit(profile);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_refuses_bad_settings_with_a_hint() {
        let err = |b: AgentBuilder| b.start().err().map(|e| e.to_string()).unwrap_or_default();
        // The documented path, with or without the external agent's feature.
        assert!(err(crate::agent::Agent::builder().service("x")).contains(".server("));
        assert!(err(Agent::builder().server("http://127.0.0.1:1")).contains(".service("));
        assert!(err(Agent::builder().server("http://127.0.0.1:1").service("a b")).contains("invalid service"));
        assert!(err(Agent::builder().server("http://127.0.0.1:1").service("a").label("1x", "v")).contains("label name"));
        assert!(err(Agent::builder().server("http://127.0.0.1:1").service("a").frequency(0)).contains("1 to 1000"));
        assert!(err(Agent::builder().server("https://x").service("a")).contains("no TLS"));
        assert!(err(Agent::builder()
            .server("http://127.0.0.1:1")
            .service("a")
            .upload_interval(Duration::from_millis(10)))
        .contains("at least 1 s"));
    }

    #[test]
    fn the_work_counter_counts_per_window_once_used() {
        let counter = WorkCounter::default();
        assert_eq!(counter.take(), None, "never used: profiles carry no counter");
        let handle = counter.clone();
        handle.add(3);
        counter.add(4);
        assert_eq!(counter.take(), Some(7));
        assert_eq!(counter.take(), Some(0), "used once: an idle window says 0");
    }
}
