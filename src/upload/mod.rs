//! The resilient uploader both agents use. Profiles come in through `submit`, which
//! never blocks: a bounded in-memory queue drops its oldest entry (and counts it) when
//! full. One worker thread encodes each profile as gzip pprof and sends it to the
//! server's native ingest, retrying a limited number of times with exponential backoff
//! and full jitter, honouring 429/503 `Retry-After`. While the server stays unreachable,
//! profiles go to a bounded on-disk spool (oldest dropped first) that a restarted agent
//! picks up again; the spool is drained oldest first once the server answers.
//!
//! In: `model::Profile`. Out: HTTP requests, health counters (`UploadStats`). Must not:
//! depend on axum, tokio or the store (the in-process agent links it), or make the
//! caller wait on the network.

pub mod jitter;
pub mod server_url;
pub mod spool;
pub mod transport;

pub use jitter::{full_jitter_backoff, jittered};
pub use server_url::{server_base_url, BadServerUrl};
pub use transport::{Envelope, EnvelopeMeta, SendOutcome};

use crate::model::Profile;
use serde::{Deserialize, Serialize};
use spool::Spool;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Why the uploader could not start or keep a profile.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// The server URL is not http://HOST[:PORT] (uploads have no TLS).
    #[error(transparent)]
    BadServerUrl(#[from] BadServerUrl),
    /// The spool directory cannot be created, read or written.
    #[error("spool directory {dir}: {cause}; pass a writable --spool-dir")]
    Spool { dir: PathBuf, cause: std::io::Error },
    /// Another process holds the spool directory's lock.
    #[error("spool directory {0} is in use by another agent; give each agent its own --spool-dir")]
    SpoolInUse(PathBuf),
    /// A spool file did not parse (deleted, counted as dropped).
    #[error("spool file {0} is unreadable and was deleted")]
    CorruptSpoolFile(PathBuf),
    /// The OS refused a new thread.
    #[error("could not start the upload thread: {0}")]
    Thread(std::io::Error),
}

/// How the uploader behaves. Every field has a default suited to a 10 s upload interval.
#[derive(Debug, Clone)]
pub struct UploadOptions {
    /// Server base URL, e.g. `http://127.0.0.1:4040`. No default.
    pub server: String,
    /// Bearer token sent as `Authorization: Bearer`. Default none.
    pub token: Option<String>,
    /// Profiles held in memory before the oldest is dropped. Default 64.
    pub queue_capacity: usize,
    /// Approximate bytes held in memory before the oldest is dropped. Default 64 MiB.
    pub queue_max_bytes: usize,
    /// Directory of the on-disk spool; None keeps profiles in memory only. Default none.
    pub spool_dir: Option<PathBuf>,
    /// Largest spool size in bytes; the oldest files go first. Default 64 MiB.
    pub spool_max_bytes: u64,
    /// Retries after a failed request before a profile is set aside (spooled or put
    /// back) and the worker waits for the server. Default 3.
    pub retries_per_cycle: u32,
    /// Base of the exponential backoff. Default 500 ms.
    pub backoff_base: Duration,
    /// Longest backoff sleep. Default 30 s.
    pub backoff_cap: Duration,
    /// Longest `Retry-After` honoured (a larger one is cut to this). Default 5 min.
    pub max_retry_after: Duration,
    /// Time to connect. Default 3 s.
    pub connect_timeout: Duration,
    /// Time for a whole request. Default 15 s.
    pub request_timeout: Duration,
}

impl UploadOptions {
    /// Defaults for sending to `server`.
    pub fn new(server: &str) -> UploadOptions {
        UploadOptions {
            server: server.trim_end_matches('/').to_string(),
            token: None,
            queue_capacity: 64,
            queue_max_bytes: 64 << 20,
            spool_dir: None,
            spool_max_bytes: 64 << 20,
            retries_per_cycle: 3,
            backoff_base: Duration::from_millis(500),
            backoff_cap: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(300),
            connect_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(15),
        }
    }
}

/// The uploader's health, a snapshot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UploadStats {
    /// Profiles in the memory queue now (including one being sent).
    pub queued: u64,
    /// Profiles in the on-disk spool now.
    pub spooled: u64,
    /// Bytes in the on-disk spool now.
    pub spool_bytes: u64,
    /// Profiles handed to `submit` since start.
    pub submitted: u64,
    /// Profiles the server acknowledged (2xx).
    pub sent: u64,
    /// Requests that did not succeed (network error or non-2xx), retried or not.
    pub failed: u64,
    /// Profiles the server refused for good (4xx other than 408/429), not retried.
    pub rejected: u64,
    /// Profiles dropped because the queue or the spool was full (oldest first).
    pub dropped: u64,
    /// Compressed bytes the server acknowledged.
    pub bytes_sent: u64,
    /// Retries (requests after the first for the same profile).
    pub retries: u64,
}

#[derive(Default)]
struct Counters {
    queued: AtomicU64,
    spooled: AtomicU64,
    spool_bytes: AtomicU64,
    submitted: AtomicU64,
    sent: AtomicU64,
    failed: AtomicU64,
    rejected: AtomicU64,
    dropped: AtomicU64,
    bytes_sent: AtomicU64,
    retries: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> UploadStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        UploadStats {
            queued: get(&self.queued),
            spooled: get(&self.spooled),
            spool_bytes: get(&self.spool_bytes),
            submitted: get(&self.submitted),
            sent: get(&self.sent),
            failed: get(&self.failed),
            rejected: get(&self.rejected),
            dropped: get(&self.dropped),
            bytes_sent: get(&self.bytes_sent),
            retries: get(&self.retries),
        }
    }
}

/// A queued profile: as submitted, or already encoded (put back after a failed cycle).
enum Pending {
    Profile(Profile),
    Encoded(Envelope),
}

impl Pending {
    /// Approximate bytes held: names, stacks and samples for a profile (the encoded
    /// size is unknown until the worker encodes it), the body for an envelope.
    fn approx_bytes(&self) -> usize {
        match self {
            Pending::Profile(p) => {
                let names: usize = p.frames.iter().map(|f| f.len() + 24).sum();
                let stacks: usize = p.stacks.iter().map(|s| s.len() * 4 + 24).sum();
                names + stacks + p.samples.len() * 24 + 256
            }
            Pending::Encoded(e) => e.body.len() + 256,
        }
    }

    fn into_envelope(self) -> Envelope {
        match self {
            Pending::Profile(profile) => Envelope::from_profile(&profile),
            Pending::Encoded(envelope) => envelope,
        }
    }
}

#[derive(Default)]
struct Queue {
    /// Use `push_back`/`push_front`/`pop_front` so that `bytes` stays in step.
    profiles: VecDeque<Pending>,
    /// Approximate bytes of `profiles`.
    bytes: usize,
    /// The worker holds a profile taken from `profiles` (counts as queued).
    in_flight: bool,
    /// The spool holds envelopes (the worker keeps this in step).
    spool_pending: bool,
    shutdown: bool,
    worker_done: bool,
}

impl Queue {
    fn push_back(&mut self, pending: Pending) {
        self.bytes += pending.approx_bytes();
        self.profiles.push_back(pending);
    }

    fn push_front(&mut self, pending: Pending) {
        self.bytes += pending.approx_bytes();
        self.profiles.push_front(pending);
    }

    fn pop_front(&mut self) -> Option<Pending> {
        let pending = self.profiles.pop_front()?;
        self.bytes = self.bytes.saturating_sub(pending.approx_bytes());
        Some(pending)
    }

    /// Over either bound (the newest entry always stays, whatever its size).
    fn over(&self, capacity: usize, max_bytes: usize) -> bool {
        self.profiles.len() > capacity || (self.bytes > max_bytes && self.profiles.len() > 1)
    }
}

struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
    counters: Counters,
    capacity: usize,
    max_bytes: usize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A panic elsewhere must not stop uploads: the queue stays consistent under
        // every single operation, so a poisoned lock is still usable.
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn publish_queue_depth(&self, queue: &Queue) {
        let depth = queue.profiles.len() as u64 + u64::from(queue.in_flight);
        self.counters.queued.store(depth, Ordering::Relaxed);
    }

    /// Waits until `done` holds or `deadline` passes; returns the guard and whether
    /// `done` held.
    fn wait_until(&self, deadline: Instant, done: impl Fn(&Queue) -> bool) -> (MutexGuard<'_, Queue>, bool) {
        let mut queue = self.lock();
        loop {
            if done(&queue) {
                return (queue, true);
            }
            let now = Instant::now();
            if now >= deadline {
                return (queue, false);
            }
            queue = self.wake.wait_timeout(queue, deadline - now).map(|(g, _)| g).unwrap_or_else(|p| p.into_inner().0);
        }
    }

    /// Sleeps up to `duration`; returns early (true) on shutdown.
    fn sleep_unless_shutdown(&self, duration: Duration) -> bool {
        self.wait_until(Instant::now() + duration, |q| q.shutdown).1
    }
}

/// Sends profiles to a hotframe server from a background thread. Dropping it stops the
/// thread (after `flush`, if the caller wants what is queued delivered).
pub struct Uploader {
    shared: Arc<Shared>,
    worker: Option<JoinHandle<()>>,
}

impl Uploader {
    /// Opens the spool (if any) and starts the upload thread. Profiles spooled by a
    /// previous run are sent first.
    pub fn start(mut opts: UploadOptions) -> Result<Uploader, UploadError> {
        // ureq is built without TLS (keeps the in-process agent light).
        opts.server = server_base_url(&opts.server)?;
        let spool = match &opts.spool_dir {
            Some(dir) => Some(Spool::open(dir, opts.spool_max_bytes)?),
            None => None,
        };
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            counters: Counters::default(),
            capacity: opts.queue_capacity.max(1),
            max_bytes: opts.queue_max_bytes,
        });
        let mut worker = Worker::new(opts, spool, Arc::clone(&shared));
        worker.publish_spool();
        let handle = std::thread::Builder::new()
            .name("hotframe-upload".into())
            .spawn(move || worker.run())
            .map_err(UploadError::Thread)?;
        Ok(Uploader { shared, worker: Some(handle) })
    }

    /// Queues `profile` for upload. Never blocks on the network: when the queue is full
    /// the oldest queued profile is dropped and counted.
    pub fn submit(&self, profile: Profile) {
        let counters = &self.shared.counters;
        counters.submitted.fetch_add(1, Ordering::Relaxed);
        let mut queue = self.shared.lock();
        queue.push_back(Pending::Profile(profile));
        while queue.over(self.shared.capacity, self.shared.max_bytes) {
            queue.pop_front();
            counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
        self.shared.publish_queue_depth(&queue);
        drop(queue);
        self.shared.wake.notify_all();
    }

    /// Waits up to `timeout` for every queued and spooled profile to be delivered;
    /// true if nothing is left. What is left stays in the spool (if any) for the next
    /// run once the uploader is dropped.
    pub fn flush(&self, timeout: Duration) -> bool {
        let (_queue, delivered) = self.shared.wait_until(Instant::now() + timeout, |q| {
            (q.profiles.is_empty() && !q.in_flight && !q.spool_pending) || q.worker_done
        });
        delivered && self.stats().queued == 0 && self.stats().spooled == 0
    }

    /// A snapshot of the health counters.
    pub fn stats(&self) -> UploadStats {
        self.shared.counters.snapshot()
    }
}

impl Drop for Uploader {
    /// Stops the worker: queued profiles go to the spool (if any). Waits at most a few
    /// seconds for a request in flight, then leaves the thread to die with the process.
    fn drop(&mut self) {
        self.shared.lock().shutdown = true;
        self.shared.wake.notify_all();
        let (queue, done) = self.shared.wait_until(Instant::now() + Duration::from_secs(3), |q| q.worker_done);
        drop(queue);
        if !done {
            return;
        }
        if let Some(handle) = self.worker.take() {
            let _ = handle.join();
        }
    }
}

/// Where the envelope being delivered came from.
enum Source {
    Spool(u64),
    Memory,
}

/// How one delivery cycle (first try plus limited retries) ended.
enum CycleOutcome {
    Stored,
    Refused,
    /// The server is unreachable or overloaded; wait at least this long.
    GaveUp(Option<Duration>),
    Shutdown,
}

struct Worker {
    opts: UploadOptions,
    spool: Option<Spool>,
    shared: Arc<Shared>,
    client: ureq::Agent,
    /// Consecutive failed cycles, for the backoff between cycles.
    down_cycles: u32,
}

impl Worker {
    fn new(opts: UploadOptions, spool: Option<Spool>, shared: Arc<Shared>) -> Worker {
        let client = transport::client(opts.connect_timeout, opts.request_timeout);
        Worker { opts, spool, shared, client, down_cycles: 0 }
    }

    fn run(&mut self) {
        while let Some((source, envelope)) = self.next_envelope() {
            match self.deliver(&envelope) {
                CycleOutcome::Stored => {
                    self.down_cycles = 0;
                    self.finish(&source);
                }
                CycleOutcome::Refused => self.finish(&source),
                CycleOutcome::GaveUp(retry_after) => {
                    self.set_aside(source, envelope);
                    let wait = full_jitter_backoff(
                        self.opts.backoff_base,
                        self.opts.retries_per_cycle + self.down_cycles,
                        self.opts.backoff_cap,
                    )
                    .max(retry_after.unwrap_or_default());
                    self.down_cycles = self.down_cycles.saturating_add(1);
                    tracing::debug!(wait_ms = wait.as_millis() as u64, "server unreachable, waiting");
                    if self.shared.sleep_unless_shutdown(wait) {
                        break;
                    }
                }
                CycleOutcome::Shutdown => {
                    self.set_aside(source, envelope);
                    break;
                }
            }
        }
        self.spool_memory_queue();
        let mut queue = self.shared.lock();
        queue.worker_done = true;
        drop(queue);
        self.shared.wake.notify_all();
    }

    /// The next envelope to deliver: the spool's oldest first (it holds older
    /// profiles), then the memory queue. None on shutdown.
    fn next_envelope(&mut self) -> Option<(Source, Envelope)> {
        loop {
            if let Some(spool) = self.spool.as_mut() {
                match spool.oldest() {
                    Some(Ok((seq, envelope))) => {
                        if self.shared.lock().shutdown {
                            return None;
                        }
                        return Some((Source::Spool(seq), envelope));
                    }
                    Some(Err(err)) => {
                        tracing::warn!("{err}");
                        self.shared.counters.dropped.fetch_add(1, Ordering::Relaxed);
                        self.publish_spool();
                        continue;
                    }
                    None => {}
                }
            }
            let mut queue = self.shared.lock();
            loop {
                if queue.shutdown {
                    return None;
                }
                if let Some(pending) = queue.pop_front() {
                    queue.in_flight = true;
                    self.shared.publish_queue_depth(&queue);
                    drop(queue);
                    return Some((Source::Memory, pending.into_envelope()));
                }
                queue = self.shared.wake.wait(queue).unwrap_or_else(|p| p.into_inner());
            }
        }
    }

    /// One delivery cycle: a first request and up to `retries_per_cycle` retries.
    fn deliver(&mut self, envelope: &Envelope) -> CycleOutcome {
        let counters = &self.shared.counters;
        let mut last_retry_after = None;
        for attempt in 0..=self.opts.retries_per_cycle {
            if attempt > 0 {
                let wait = match last_retry_after {
                    // The server said when: honour it, spread a little so that agents
                    // told the same thing do not come back together.
                    Some(after) => after + full_jitter_backoff(self.opts.backoff_base, 0, self.opts.backoff_cap),
                    None => full_jitter_backoff(self.opts.backoff_base, attempt - 1, self.opts.backoff_cap),
                };
                if self.shared.sleep_unless_shutdown(wait) {
                    return CycleOutcome::Shutdown;
                }
                counters.retries.fetch_add(1, Ordering::Relaxed);
            }
            match transport::send(&self.client, &self.opts.server, self.opts.token.as_deref(), envelope) {
                SendOutcome::Stored => {
                    counters.sent.fetch_add(1, Ordering::Relaxed);
                    counters.bytes_sent.fetch_add(envelope.body.len() as u64, Ordering::Relaxed);
                    return CycleOutcome::Stored;
                }
                SendOutcome::Refused { status, reason } => {
                    counters.failed.fetch_add(1, Ordering::Relaxed);
                    counters.rejected.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(status, service = %envelope.meta.service, "profile refused, not retried: {reason}");
                    return CycleOutcome::Refused;
                }
                SendOutcome::Retry { retry_after, reason } => {
                    counters.failed.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(attempt, "upload failed: {reason}");
                    if attempt == self.opts.retries_per_cycle {
                        tracing::warn!(
                            "upload to {} failed {} times, will retry later: {reason}",
                            self.opts.server,
                            attempt + 1
                        );
                    }
                    last_retry_after = retry_after.map(|d| d.min(self.opts.max_retry_after));
                }
            }
        }
        CycleOutcome::GaveUp(last_retry_after)
    }

    /// The envelope from `source` is done with (stored or refused).
    fn finish(&mut self, source: &Source) {
        match source {
            Source::Spool(seq) => {
                if let Some(spool) = self.spool.as_mut() {
                    spool.remove(*seq);
                }
                self.publish_spool();
            }
            Source::Memory => {
                let mut queue = self.shared.lock();
                queue.in_flight = false;
                self.shared.publish_queue_depth(&queue);
            }
        }
        self.shared.wake.notify_all();
    }

    /// The server is down: keep `envelope` (spool it, or put it back at the queue's
    /// front) and move the memory queue to the spool, where it survives a restart.
    fn set_aside(&mut self, source: Source, envelope: Envelope) {
        if let Source::Memory = source {
            if self.spool.is_some() {
                self.spool_envelope(&envelope);
            } else {
                // No spool: the profile keeps its place; the queue bound still holds.
                let mut queue = self.shared.lock();
                let pending = Pending::Encoded(envelope);
                if queue.profiles.len() < self.shared.capacity
                    && queue.bytes + pending.approx_bytes() <= self.shared.max_bytes
                {
                    queue.push_front(pending);
                } else {
                    self.shared.counters.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
            let mut queue = self.shared.lock();
            queue.in_flight = false;
            self.shared.publish_queue_depth(&queue);
        }
        self.spool_memory_queue();
        self.shared.wake.notify_all();
    }

    fn spool_memory_queue(&mut self) {
        if self.spool.is_none() {
            return;
        }
        loop {
            let profile = {
                let mut queue = self.shared.lock();
                let profile = queue.pop_front();
                self.shared.publish_queue_depth(&queue);
                profile
            };
            match profile {
                Some(pending) => self.spool_envelope(&pending.into_envelope()),
                None => break,
            }
        }
    }

    fn spool_envelope(&mut self, envelope: &Envelope) {
        let Some(spool) = self.spool.as_mut() else { return };
        match spool.push(envelope) {
            Ok(outcome) => {
                self.shared.counters.dropped.fetch_add(outcome.dropped, Ordering::Relaxed);
                if outcome.dropped > 0 {
                    tracing::warn!(dropped = outcome.dropped, "spool full: dropped the oldest profiles");
                }
            }
            Err(err) => {
                self.shared.counters.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::warn!("could not spool a profile, dropped it: {err}");
            }
        }
        self.publish_spool();
    }

    fn publish_spool(&self) {
        let (len, bytes) = self.spool.as_ref().map(|s| (s.len() as u64, s.bytes())).unwrap_or((0, 0));
        self.shared.counters.spooled.store(len, Ordering::Relaxed);
        self.shared.counters.spool_bytes.store(bytes, Ordering::Relaxed);
        let mut queue = self.shared.lock();
        queue.spool_pending = len > 0;
    }
}
