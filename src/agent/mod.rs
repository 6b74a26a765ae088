//! `hotframe agent`: attaches the sampler to running processes (by pid, by name, or a
//! command it starts), turns what it samples into one profile per process per upload
//! interval (jittered), labels it (`host`, `pid`, `process`, `exe`, the user's labels)
//! and hands it to the resilient uploader. Logs its own health every interval and
//! serves it at `--metrics-listen`.
//!
//! In: an `AgentConfig` (`cli` builds it from the flags). Out: profiles to the server,
//! health lines, an exit status. Must not: wait on the network in the sampling loop
//! (`Uploader::submit` never blocks), or know about the CLI.

pub mod cgroup;
pub mod metrics;
pub mod services;
pub mod targets;

/// The in-process agent for Rust services (`hotframe::agent::Agent::builder()`).
#[cfg(feature = "inproc")]
pub use crate::inproc::{Agent, AgentBuilder, InprocError};

use crate::model::time::{now_ms, BadTime};
use crate::sampler::{Sampler, SamplerError, SamplerEvent, SamplerOptions, Why};
use crate::signals;
use crate::upload::{jittered, UploadError, UploadOptions, Uploader};
use metrics::{AgentHealth, MetricsServer};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use targets::TargetSpec;

/// Why the agent stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// Sampling could not start (privileges, missing pid, perf_event_open).
    #[error(transparent)]
    Sampler(#[from] SamplerError),
    /// The uploader could not start (spool directory).
    #[error(transparent)]
    Upload(#[from] UploadError),
    /// None of --pid, --name, --all, -- COMMAND was given.
    #[error("choose what to profile: --pid PID (repeatable), --name REGEX, --all, or -- COMMAND ARGS")]
    NoTarget,
    /// --service is needed (all modes but --all).
    #[error("give --service NAME (only --all names services itself)")]
    NoService,
    /// --exclude or --config's rules without --all.
    #[error("{0} only applies to --all")]
    OnlyWithAll(&'static str),
    /// The --config file cannot be used.
    #[error(transparent)]
    ConfigFile(#[from] services::ConfigFileError),
    /// The --server URL is not usable.
    #[error("invalid --server {0:?}: use an http:// base URL such as http://127.0.0.1:4040 (no TLS in the agent: put a TLS proxy in front if needed)")]
    BadServer(String),
    /// More than one of --pid, --name, --all, -- COMMAND was given.
    #[error("give only one of --pid, --name, --all and -- COMMAND")]
    ConflictingTargets,
    /// The --name or --exclude pattern does not compile.
    #[error("invalid {flag} regex {pattern:?}: {reason}")]
    BadRegex { flag: &'static str, pattern: String, reason: String },
    /// A --label is not key=value with a valid key.
    #[error("invalid label {0:?}: use --label key=value, key of letters, digits and _")]
    BadLabel(String),
    /// The --service name is not valid.
    #[error("invalid service name {0:?}: use letters, digits and . _ - / : (at most 128)")]
    BadService(String),
    /// The --unwind mode is unknown.
    #[error("invalid --unwind {0:?}: use dwarf or fp")]
    BadUnwind(String),
    /// A duration flag does not parse.
    #[error("invalid {flag}: {cause}")]
    BadDuration { flag: &'static str, cause: BadTime },
    /// A duration flag is zero or negative.
    #[error("{flag} must be positive")]
    NonPositive { flag: &'static str },
    /// The command after -- could not be started.
    #[error("could not start {command:?}: {cause}")]
    Spawn { command: String, cause: std::io::Error },
    /// The --metrics-listen address cannot be bound.
    #[error("could not listen on --metrics-listen {addr}: {cause}")]
    MetricsListen { addr: String, cause: std::io::Error },
}

/// Everything the agent needs, checked.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Where profiles go and how.
    pub upload: UploadOptions,
    /// Service name on every profile.
    pub service: String,
    /// What to sample.
    pub targets: TargetSpec,
    /// How to sample.
    pub sampler: SamplerOptions,
    /// Labels added to every profile (`host` included).
    pub labels: BTreeMap<String, String>,
    /// Nominal upload interval (each one jittered by ±10%).
    pub upload_interval: Duration,
    /// How often `--name` rescans /proc as a backstop to exec records (jittered by ±20%).
    pub rescan_interval: Duration,
    /// Stop after this long, if set.
    pub duration: Option<Duration>,
    /// Time given to deliver what is queued at exit.
    pub flush_timeout: Duration,
    /// `--metrics-listen` address.
    pub metrics_listen: Option<String>,
}

/// Where the spool goes when none is given: per service, under /var/tmp (kept across
/// reboots) or the temp dir.
fn default_spool_dir(service: &str) -> PathBuf {
    let base = if std::path::Path::new("/var/tmp").is_dir() { PathBuf::from("/var/tmp") } else { std::env::temp_dir() };
    let safe: String =
        service.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
    base.join("hotframe-spool").join(safe)
}

impl AgentConfig {
    /// Sends `service`'s profiles of `targets` to `server` with the defaults of `hotframe
    /// agent`: 99 Hz DWARF wall-clock sampling, the `host` label, uploads every 10 s, a
    /// 64 MiB spool in `default_spool_dir`, 10 s to flush at exit, no time limit.
    pub fn new(server: &str, service: &str, targets: TargetSpec) -> AgentConfig {
        let mut upload = UploadOptions::new(server);
        upload.spool_dir = Some(default_spool_dir(service));
        upload.spool_max_bytes = 64 << 20;
        AgentConfig {
            upload,
            service: service.to_string(),
            targets,
            sampler: SamplerOptions::default(),
            labels: BTreeMap::from([("host".to_string(), crate::host::hostname())]),
            upload_interval: Duration::from_secs(10),
            rescan_interval: Duration::from_secs(10),
            duration: None,
            flush_timeout: Duration::from_secs(10),
            metrics_listen: None,
        }
    }
}

/// Runs `hotframe agent` until the targets exit, `config.duration` passes, or SIGINT/SIGTERM.
pub fn run(config: AgentConfig) -> Result<(), AgentError> {
    signals::install();
    run_config(config, &AtomicBool::new(false))
}

/// Runs the agent with a checked config until the targets exit, `config.duration`
/// passes, SIGINT/SIGTERM arrives, or `stop` is set (for callers in the same process).
pub fn run_config(config: AgentConfig, stop: &AtomicBool) -> Result<(), AgentError> {
    // Sampler first: without privileges, nothing else is worth starting.
    let mut sampler = Sampler::new(config.sampler)?;
    let mut child = None;
    match &config.targets {
        TargetSpec::Pids(pids) => {
            for pid in pids {
                sampler.attach(*pid)?;
            }
        }
        TargetSpec::Command(command) => {
            let mut spawned = std::process::Command::new(&command[0])
                .args(&command[1..])
                .spawn()
                .map_err(|cause| AgentError::Spawn { command: command.join(" "), cause })?;
            if let Err(err) = sampler.attach(spawned.id()) {
                // Not profiled means not wanted: do not leave it running unobserved.
                let _ = spawned.kill();
                let _ = spawned.wait();
                return Err(err.into());
            }
            child = Some(spawned);
        }
        TargetSpec::Name(pattern) => sampler.select_matching(pattern.clone(), config.rescan_interval),
        TargetSpec::All { exclude, rules } => {
            let namer = services::ServiceNamer::new(rules.clone());
            sampler.select_all(exclude.clone(), config.rescan_interval, namer.into_tagger());
            tracing::info!(targets = sampler.targets().len(), "sampling every process of the host");
        }
    }
    let uploader = Uploader::start(config.upload.clone())?;
    let health = Arc::new(Mutex::new(AgentHealth::default()));
    let _metrics = match &config.metrics_listen {
        Some(addr) => {
            let server = MetricsServer::start(addr, Arc::clone(&health))
                .map_err(|cause| AgentError::MetricsListen { addr: addr.clone(), cause })?;
            tracing::info!("agent metrics at http://{}/metrics", server.addr);
            Some(server)
        }
        None => None,
    };
    let mut agent = ExternalAgent {
        config,
        sampler,
        uploader,
        health,
        child,
        last_snapshot: Instant::now(),
        process_names: ProcessNames::default(),
    };
    let outcome = agent.sample_until_done(stop);
    agent.finish();
    outcome
}

/// The `process` label of each process named in the last upload round: pid -> (its
/// `comm` then, the name). A process keeps its name while its `comm` stays (one /proc
/// read per profile instead of four; host-wide, hundreds every interval).
type ProcessNames = rustc_hash::FxHashMap<u32, (String, String)>;

/// Sets the `process` label to the name the process was started as
/// (`targets::process_label`: `redis-server`, not the name of the file a symlink points
/// to), while the process still runs with the `comm` the sampler labelled it with; a
/// profile of exited or merged short-lived processes keeps the sampler's `comm`. `known`
/// holds the names of the last round, `named` gets this round's.
fn name_process(labels: &mut BTreeMap<String, String>, known: &ProcessNames, named: &mut ProcessNames) {
    let Some(pid) = labels.get("pid").and_then(|p| p.parse::<u32>().ok()) else { return };
    let Some(labelled) = labels.get("process") else { return };
    let Ok(comm) = std::fs::read_to_string(format!("/proc/{pid}/comm")) else { return };
    let comm = comm.trim_end_matches('\n');
    if comm != labelled {
        return;
    }
    let name = match known.get(&pid).filter(|(then, _)| then == comm) {
        Some((_, name)) => Some(name.clone()),
        None => targets::process_label(pid),
    };
    if let Some(name) = name {
        named.insert(pid, (comm.to_string(), name.clone()));
        labels.insert("process".to_string(), name);
    }
}

struct ExternalAgent {
    config: AgentConfig,
    sampler: Sampler,
    uploader: Uploader,
    health: Arc<Mutex<AgentHealth>>,
    child: Option<std::process::Child>,
    /// When the metrics snapshot was last refreshed.
    last_snapshot: Instant,
    /// The `process` labels of the last upload round.
    process_names: ProcessNames,
}

/// How often the agent repeats that `--name` still matches nothing.
const NO_MATCH_REPEAT: Duration = Duration::from_secs(30);

/// Says, at start and then every ~30 s (jittered) while it stays so, that `--name`
/// matches no process: otherwise the only clue is `targets=0` in the health line.
#[derive(Debug, Default)]
struct NoMatchNotice {
    /// When to say it next; None while some process matches.
    next: Option<Instant>,
    /// Whether it was said since the last match.
    said: bool,
}

impl NoMatchNotice {
    /// Says it if it is time; true when it was said now.
    fn check(&mut self, pattern: &str, nothing_matches: bool, now: Instant) -> bool {
        if !nothing_matches {
            *self = NoMatchNotice::default();
            return false;
        }
        if self.next.is_some_and(|next| now < next) {
            return false;
        }
        if self.said {
            tracing::warn!("still no process matches --name {pattern:?}; waiting for one");
        } else {
            tracing::warn!("no process matches --name {pattern:?}; waiting for one (its comm or command line)");
        }
        self.said = true;
        self.next = Some(now + jittered(NO_MATCH_REPEAT, 0.2));
        true
    }
}

/// Why the sampling loop ended without an error.
enum Ending {
    TargetsExited,
    Duration,
    Signal,
}

impl ExternalAgent {
    fn sample_until_done(&mut self, stop: &AtomicBool) -> Result<(), AgentError> {
        let started = Instant::now();
        let mut next_upload = started + jittered(self.config.upload_interval, 0.1);
        let exits_with_targets = matches!(self.config.targets, TargetSpec::Pids(_) | TargetSpec::Command(_));
        let mut poll_errors = 0u64;
        let mut no_match = NoMatchNotice::default();
        let ending = loop {
            if signals::stop_requested() || stop.load(Ordering::Relaxed) {
                break Ending::Signal;
            }
            if self.config.duration.is_some_and(|d| started.elapsed() >= d) {
                break Ending::Duration;
            }
            let now = Instant::now();
            let wait = next_upload.saturating_duration_since(now).min(Duration::from_millis(500));
            match self.sampler.poll(wait) {
                Ok(events) => self.handle_events(&events),
                Err(err) => {
                    // A persistent failure would repeat every tick: log the first of each run.
                    poll_errors += 1;
                    if poll_errors == 1 || poll_errors % 1000 == 0 {
                        tracing::warn!(errors = poll_errors, "sampling: {err}");
                    }
                }
            }
            self.reap_child();
            if let TargetSpec::Name(pattern) = &self.config.targets {
                let _ = no_match.check(pattern.as_str(), self.sampler.targets().is_empty(), Instant::now());
            }
            if Instant::now() >= next_upload {
                self.upload_profiles();
                self.report_health(true);
                next_upload = Instant::now() + jittered(self.config.upload_interval, 0.1);
            } else {
                self.report_health(false);
            }
            if exits_with_targets && self.sampler.targets().is_empty() {
                break Ending::TargetsExited;
            }
        };
        match ending {
            Ending::TargetsExited => tracing::info!("every target has exited; flushing and stopping"),
            Ending::Duration => tracing::info!("--duration reached; flushing and stopping"),
            Ending::Signal => tracing::info!("stop requested; flushing and stopping"),
        }
        Ok(())
    }

    fn handle_events(&mut self, events: &[SamplerEvent]) {
        for event in events {
            match event {
                SamplerEvent::Exited(pid) => tracing::debug!(pid, "target exited"),
                SamplerEvent::Lost { count } => tracing::debug!(count, "records lost"),
                SamplerEvent::ThreadFollowed { pid, tid } => tracing::debug!(pid, tid, "following new thread"),
                SamplerEvent::ProcessFollowed { pid, why: Why::Matched }
                    if matches!(self.config.targets, TargetSpec::Name(_)) =>
                {
                    tracing::info!(pid, "attached to a process matching --name")
                }
                SamplerEvent::ProcessFollowed { pid, why } => tracing::debug!(pid, ?why, "following process"),
            }
        }
    }

    /// Reaps the command the agent started, so that its exit is seen (no zombie).
    fn reap_child(&mut self) {
        if let Some(child) = self.child.as_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                tracing::info!(pid = child.id(), "command exited: {status}");
                self.child = None;
            }
        }
    }

    /// Takes one profile per target from the sampler and queues the non-empty ones.
    fn upload_profiles(&mut self) {
        let mut named = ProcessNames::default();
        for mut profile in self.sampler.take_profiles(&self.config.service, now_ms()) {
            if profile.total_samples() == 0 {
                continue;
            }
            name_process(&mut profile.labels, &self.process_names, &mut named);
            if matches!(self.config.targets, TargetSpec::All { .. }) && profile.service == self.config.service {
                // Gone before it could be named: its program names it.
                let exe = profile.labels.get("exe").map(String::as_str).unwrap_or("");
                profile.service = services::program_service(exe);
            }
            for (k, v) in &self.config.labels {
                profile.labels.insert(k.clone(), v.clone());
            }
            self.uploader.submit(profile);
        }
        self.process_names = named;
    }

    /// Refreshes the snapshot `--metrics-listen` serves; logs it when `log` is set.
    fn report_health(&mut self, log: bool) {
        // The metrics page needs a fresh snapshot about once a second, not every tick.
        let stale = self.config.metrics_listen.is_some() && self.last_snapshot.elapsed() >= Duration::from_secs(1);
        if !log && !stale {
            return;
        }
        self.last_snapshot = Instant::now();
        let (cpu_seconds, rss_bytes) = metrics::own_usage();
        let snapshot = AgentHealth {
            targets: self.sampler.targets().len() as u64,
            sampler: self.sampler.stats(),
            upload: self.uploader.stats(),
            cpu_seconds,
            rss_bytes,
        };
        if log {
            tracing::info!("health: {}", snapshot.log_line());
        }
        if let Ok(mut shared) = self.health.lock() {
            *shared = snapshot;
        }
    }

    /// Last profiles, then a bounded flush; what is left stays in the spool.
    fn finish(&mut self) {
        self.upload_profiles();
        if self.uploader.flush(self.config.flush_timeout) {
            tracing::info!("all profiles delivered");
        } else {
            let stats = self.uploader.stats();
            tracing::warn!(
                "server did not take everything within {:?}: {} profile(s) kept in the spool {} for the next run",
                self.config.flush_timeout,
                stats.spooled + stats.queued,
                self.config.upload.spool_dir.as_ref().map(|d| d.display().to_string()).unwrap_or_default()
            );
        }
        self.report_health(true);
        if let Some(child) = self.child.as_mut() {
            // Started by us and still running (stopped by signal or --duration): stop it.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_match_is_said_at_start_then_again_while_it_lasts_and_again_after_a_match() {
        let mut notice = NoMatchNotice::default();
        let t0 = Instant::now();
        assert!(notice.check("^x$", true, t0), "said at start");
        assert!(!notice.check("^x$", true, t0 + Duration::from_secs(1)), "not on every tick");
        assert!(notice.check("^x$", true, t0 + NO_MATCH_REPEAT * 2), "said again while nothing matches");
        assert!(!notice.check("^x$", false, t0 + NO_MATCH_REPEAT * 3), "silent while something matches");
        assert!(notice.check("^x$", true, t0 + NO_MATCH_REPEAT * 3), "said as soon as the matches are gone");
    }
}
