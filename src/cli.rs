//! Command-line interface (clap derive). Each subcommand's flags live here, and here
//! they become the owning module's config (`ServeConfig`, `AgentConfig`, ...), checked;
//! `main` runs that module with it.
//!
//! In: argv. Out: one module's config, or that module's error naming the bad flag. Must
//! not: run anything (beyond reading the files a flag names), or be imported by the
//! modules it configures.

use crate::agent::targets::TargetSpec;
use crate::agent::{AgentConfig, AgentError};
use crate::client::win::WinConfig;
use crate::client::{ExportConfig, ImportConfig};
use crate::demo::workload::{WorkloadConfig, WorkloadError};
use crate::demo::{DemoConfig, DemoError};
use crate::model::profile::{parse_label_flag, valid_service_name};
use crate::model::time::parse_duration_ms;
use crate::sampler::{SamplerOptions, UnwindMode};
use crate::scrape::{ScrapeConfig, ScrapeError, Target};
use crate::server::config::{ConfigError, ServerConfig};
use crate::server::{ServeConfig, ServerError};
use crate::upload::{server_base_url, UploadError, UploadOptions};
use clap::{Args, Parser, Subcommand};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// hotframe: continuous profiling with yearly CPU cost on every hot frame.
#[derive(Debug, Parser)]
#[command(name = "hotframe", version, about, propagate_version = true)]
pub struct Cli {
    /// Log filter (tracing EnvFilter syntax), e.g. `info`, `hotframe=debug`.
    #[arg(long, global = true, env = "HOTFRAME_LOG", default_value = "info")]
    pub log: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server: ingest, store, query API and web viewer.
    Serve(ServeArgs),
    /// Attach to running processes (by PID, by name, or a command to start) and send profiles.
    Agent(AgentArgs),
    /// Print a service's merged profile (folded stacks by default).
    Export(ExportArgs),
    /// Send a folded or pprof file to a server.
    Import(ImportArgs),
    /// Pull mode: fetch pprof from /debug/pprof/profile endpoints and send it to a server.
    Scrape(ScrapeArgs),
    /// Start a server, a demo workload and an agent attached to it; print the URL.
    Demo(DemoArgs),
    /// Record an ops win: measure before/after from the profiles, keep it, email the report.
    Win(WinArgs),
    /// The workload `hotframe demo` profiles (also used by tests and benchmarks).
    #[command(hide = true)]
    DemoWorkload(DemoWorkloadArgs),
}

/// `hotframe serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on (loopback by default; use 0.0.0.0:4040 with tokens to expose).
    #[arg(long, default_value = "127.0.0.1:4040")]
    pub listen: String,
    /// Directory of the embedded store.
    #[arg(long, default_value = "./hotframe-data")]
    pub data: PathBuf,
    /// Keep profiles in a shared PostgreSQL database instead (postgres://user@host/db);
    /// overrides [store] url in the config file. Several servers may share one.
    #[arg(long, env = "HOTFRAME_STORE")]
    pub store: Option<String>,
    /// TOML config file (limits, retention, tokens, per-service cost settings).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// File with one `token scope[,scope]` per line (scopes: ingest, read, admin).
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// SMTP server for ops-win reports: smtp://host:port, smtp://host:587?tls=required
    /// (STARTTLS) or smtps://host:465; overrides [smtp] url in the config file.
    #[arg(long, env = "HOTFRAME_SMTP_URL")]
    pub smtp_url: Option<String>,
    /// From address of ops-win reports, e.g. "hotframe <hotframe@example.com>".
    #[arg(long)]
    pub mail_from: Option<String>,
    /// This server's URL as readers reach it, for links in reports (e.g. https://hotframe.example.com).
    #[arg(long)]
    pub public_url: Option<String>,
}

/// `hotframe agent`.
#[derive(Debug, Clone, Args)]
pub struct AgentArgs {
    /// Server base URL, e.g. http://127.0.0.1:4040.
    #[arg(long, env = "HOTFRAME_SERVER")]
    pub server: String,
    /// Service name the profiles belong to (with --all, each process's service is named
    /// from the config's rules, its systemd unit, its container or its program).
    #[arg(long, required_unless_present = "all")]
    pub service: Option<String>,
    /// Process to attach to (repeatable).
    #[arg(long = "pid")]
    pub pids: Vec<u32>,
    /// Attach to every process whose name or command line matches, now and later.
    #[arg(long)]
    pub name: Option<String>,
    /// Sample every process of the host (but the agent itself, kernel threads and
    /// --exclude), each under its own service.
    #[arg(long)]
    pub all: bool,
    /// With --all: leave out processes whose name or command line matches this regex.
    #[arg(long)]
    pub exclude: Option<String>,
    /// Agent config file (TOML): `[agent] exclude` and `[[agent.services]]` naming rules.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Sampling frequency, Hz.
    #[arg(long, default_value_t = 99)]
    pub frequency: u32,
    /// How often a profile is uploaded (jittered), e.g. 10s.
    #[arg(long, default_value = "10s")]
    pub upload_interval: String,
    /// Extra label `k=v` on every profile (repeatable).
    #[arg(long = "label")]
    pub labels: Vec<String>,
    /// Unwinding: `dwarf` (complete stacks without frame pointers) or `fp` (cheaper).
    #[arg(long, default_value = "dwarf")]
    pub unwind: String,
    /// Include kernel frames.
    #[arg(long)]
    pub kernel: bool,
    /// Sample on-CPU only (no wall-clock thread states).
    #[arg(long)]
    pub cpu_only: bool,
    /// Bearer token for the server.
    #[arg(long, env = "HOTFRAME_TOKEN")]
    pub token: Option<String>,
    /// Directory for the on-disk spool used while the server is unreachable (default
    /// /var/tmp/hotframe-spool/SERVICE; one agent per directory).
    #[arg(long)]
    pub spool_dir: Option<PathBuf>,
    /// Largest on-disk spool, in MiB.
    #[arg(long, default_value_t = 64)]
    pub spool_max_mib: u64,
    /// Address to serve the agent's own Prometheus metrics on, e.g. 127.0.0.1:4041.
    #[arg(long)]
    pub metrics_listen: Option<String>,
    /// Stop (flush, exit 0) after this long, e.g. 60s (default: run until the targets
    /// exit or SIGINT/SIGTERM).
    #[arg(long)]
    pub duration: Option<String>,
    /// On exit, how long to keep trying to deliver what is queued (the rest stays in the
    /// spool for the next run).
    #[arg(long, default_value = "10s")]
    pub flush_timeout: String,
    /// Command to start and profile (after `--`).
    #[arg(last = true)]
    pub command: Vec<String>,
}

/// `hotframe export`.
#[derive(Debug, Clone, Args)]
pub struct ExportArgs {
    /// Server base URL.
    #[arg(long, env = "HOTFRAME_SERVER", default_value = "http://127.0.0.1:4040")]
    pub server: String,
    /// Service to export.
    #[arg(long)]
    pub service: String,
    /// Range start (Unix s/ms, `now-5m`, ...).
    #[arg(long, default_value = "now-1h")]
    pub from: String,
    /// Range end.
    #[arg(long, default_value = "now")]
    pub until: String,
    /// States or view: RUNNABLE,BLOCKED / cpu / latency / all.
    #[arg(long, default_value = "cpu")]
    pub states: String,
    /// Label filter `k=v` (repeatable).
    #[arg(long = "label")]
    pub labels: Vec<String>,
    /// folded, pprof, svg or speedscope.
    #[arg(long, default_value = "folded")]
    pub format: String,
    /// Write here instead of stdout.
    #[arg(long, short)]
    pub out: Option<PathBuf>,
    /// Bearer token.
    #[arg(long, env = "HOTFRAME_TOKEN")]
    pub token: Option<String>,
}

/// `hotframe import`.
#[derive(Debug, Clone, Args)]
pub struct ImportArgs {
    /// Server base URL.
    #[arg(long, env = "HOTFRAME_SERVER", default_value = "http://127.0.0.1:4040")]
    pub server: String,
    /// Service the profile belongs to.
    #[arg(long)]
    pub service: String,
    /// folded, pprof, perf-script (`perf script` output of `perf record -g`; the window
    /// is the recording's length), speedscope, or auto (by content).
    #[arg(long, default_value = "auto")]
    pub format: String,
    /// Label `k=v` (repeatable).
    #[arg(long = "label")]
    pub labels: Vec<String>,
    /// Window start for files that carry no time (default: now minus `--duration`).
    #[arg(long)]
    pub from: Option<String>,
    /// Window length for files that carry no time.
    #[arg(long, default_value = "10s")]
    pub duration: String,
    /// Sampling frequency of folded files, Hz.
    #[arg(long, default_value_t = 99)]
    pub sample_rate: u32,
    /// Bearer token.
    #[arg(long, env = "HOTFRAME_TOKEN")]
    pub token: Option<String>,
    /// The file to send (`-` for stdin).
    pub file: PathBuf,
}

/// `hotframe scrape`.
#[derive(Debug, Clone, Args)]
pub struct ScrapeArgs {
    /// Server base URL the profiles go to.
    #[arg(long, env = "HOTFRAME_SERVER", default_value = "http://127.0.0.1:4040")]
    pub server: String,
    /// pprof endpoint, e.g. http://host:6060/debug/pprof/profile?seconds=10 (without
    /// `seconds=`, the interval's length is asked for).
    #[arg(long)]
    pub target: Option<String>,
    /// Service of the target's profiles.
    #[arg(long)]
    pub service: Option<String>,
    /// Time between fetches (jittered by ±10%), and the default of `[[scrape]]` tables.
    #[arg(long, default_value = "10s")]
    pub interval: String,
    /// Label `k=v` on the target's profiles (repeatable); `instance` (host:port) is added.
    #[arg(long = "label")]
    pub labels: Vec<String>,
    /// TOML file with `[[scrape]]` tables (target, service, interval, labels); may be
    /// the server's config file.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Stop (and flush) after this long, e.g. 60s (default: until SIGINT/SIGTERM).
    #[arg(long)]
    pub duration: Option<String>,
    /// Bearer token with the ingest scope.
    #[arg(long, env = "HOTFRAME_TOKEN")]
    pub token: Option<String>,
    /// Directory for the on-disk spool used while the server is unreachable.
    #[arg(long)]
    pub spool_dir: Option<PathBuf>,
}

/// `hotframe demo`.
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Address for the demo server.
    #[arg(long, default_value = "127.0.0.1:4040")]
    pub listen: String,
    /// Store directory (default: a fresh temporary directory).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Stop after this long (default: run until Ctrl-C).
    #[arg(long)]
    pub duration: Option<String>,
}

/// `hotframe demo-workload` (hidden).
#[derive(Debug, Clone, Args)]
pub struct DemoWorkloadArgs {
    /// `service`: request handlers dominated by `parse_json`, plus threads that sleep,
    /// wait and contend for a lock; `cpu`: only CPU-bound workers (for benchmarks).
    #[arg(long, default_value = "service")]
    pub mode: String,
    /// CPU-bound worker threads.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Stop after this long (default: run until killed).
    #[arg(long)]
    pub duration: Option<String>,
    /// Print the work done per second as JSON on stdout at the end.
    #[arg(long)]
    pub report: bool,
}

/// `hotframe win`.
#[derive(Debug, Clone, Args)]
pub struct WinArgs {
    /// Server base URL.
    #[arg(long, env = "HOTFRAME_SERVER", default_value = "http://127.0.0.1:4040")]
    pub server: String,
    /// Service the win is about.
    #[arg(long)]
    pub service: String,
    /// Before: FROM..UNTIL (Unix s/ms, now-2d, ...) or LABEL=VALUE (e.g. version=1.4).
    #[arg(long)]
    pub before: String,
    /// After: FROM..UNTIL or LABEL=VALUE.
    #[arg(long)]
    pub after: String,
    /// One line: what was done, e.g. "Cache compiled regexes".
    #[arg(long)]
    pub title: String,
    /// What changed and why.
    #[arg(long, default_value = "")]
    pub description: String,
    /// Frames the win is about: a substring of the name, or /regex/.
    #[arg(long)]
    pub frame: Option<String>,
    /// Label filter `k=v` on both sides (repeatable).
    #[arg(long = "label")]
    pub labels: Vec<String>,
    /// Who shipped it.
    #[arg(long)]
    pub shipped_by: Option<String>,
    /// Team credited (its ops_win_list gets the report).
    #[arg(long)]
    pub team: Option<String>,
    /// Extra recipient (repeatable).
    #[arg(long = "email")]
    pub emails: Vec<String>,
    /// PromQL counting the work done in each window (`$__range` is each side's length),
    /// e.g. 'sum(increase(http_requests_total{job="checkout"}[$__range]))'; needs
    /// `[prometheus] url` in the server's config.
    #[arg(long)]
    pub requests_query: Option<String>,
    /// Count the win in the ledger's totals even if it is not normalised per unit of work.
    #[arg(long)]
    pub include_in_totals: bool,
    /// Compute and show the report without storing or sending it.
    #[arg(long)]
    pub dry_run: bool,
    /// Write the report's HTML here.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Bearer token (admin scope when the server has tokens).
    #[arg(long, env = "HOTFRAME_TOKEN")]
    pub token: Option<String>,
}

/// A positive duration flag (`10s`, `1m`, ...).
fn positive_duration(flag: &'static str, text: &str) -> Result<Duration, AgentError> {
    let ms = parse_duration_ms(text).map_err(|cause| AgentError::BadDuration { flag, cause })?;
    if ms <= 0 {
        return Err(AgentError::NonPositive { flag });
    }
    Ok(Duration::from_millis(ms as u64))
}

impl ServeArgs {
    /// Loads the config and token files and applies the flags on top.
    pub fn into_config(self) -> Result<ServeConfig, ServerError> {
        let mut server = ServerConfig::load(self.config.as_deref(), self.token_file.as_deref())?;
        server.wins = server
            .wins
            .with_flags(self.smtp_url.as_deref(), self.mail_from.as_deref(), self.public_url.as_deref())
            .map_err(ConfigError::Wins)?;
        if let Some(url) = self.store {
            server.store.url = Some(url);
        }
        Ok(ServeConfig { listen: self.listen, data: self.data, server })
    }
}

impl AgentArgs {
    /// Checks the flags and turns them into the agent's config.
    pub fn into_config(self) -> Result<AgentConfig, AgentError> {
        let service = match self.service {
            Some(service) if !valid_service_name(&service) => return Err(AgentError::BadService(service)),
            Some(service) => service,
            None if self.all => "all".to_string(),
            None => return Err(AgentError::NoService),
        };
        let server = server_base_url(&self.server).map_err(UploadError::from)?;
        let regex = |flag: &'static str, pattern: &String| {
            regex::Regex::new(pattern).map_err(|e| AgentError::BadRegex {
                flag,
                pattern: pattern.clone(),
                reason: e.to_string(),
            })
        };
        let (file_exclude, rules) = match &self.config {
            Some(path) => crate::agent::services::load(path)?,
            None => (None, Vec::new()),
        };
        if !self.all {
            if self.exclude.is_some() || file_exclude.is_some() {
                return Err(AgentError::OnlyWithAll("--exclude"));
            }
            if !rules.is_empty() {
                return Err(AgentError::OnlyWithAll("[[agent.services]] in --config"));
            }
        }
        let chosen = [!self.pids.is_empty(), self.name.is_some(), !self.command.is_empty(), self.all];
        let targets = match chosen.iter().filter(|c| **c).count() {
            0 => return Err(AgentError::NoTarget),
            1 => {
                if self.all {
                    let exclude = self.exclude.or(file_exclude).map(|p| regex("--exclude", &p)).transpose()?;
                    TargetSpec::All { exclude, rules }
                } else if let Some(pattern) = &self.name {
                    TargetSpec::Name(regex("--name", pattern)?)
                } else if !self.pids.is_empty() {
                    TargetSpec::Pids(self.pids.clone())
                } else {
                    TargetSpec::Command(self.command.clone())
                }
            }
            _ => return Err(AgentError::ConflictingTargets),
        };
        let unwind = match self.unwind.as_str() {
            "dwarf" => UnwindMode::Dwarf,
            "fp" | "frame-pointer" => UnwindMode::FramePointer,
            other => return Err(AgentError::BadUnwind(other.to_string())),
        };
        let mut config = AgentConfig::new(&server, &service, targets);
        config.sampler = SamplerOptions {
            frequency_hz: self.frequency,
            unwind,
            kernel: self.kernel,
            wall_clock: !self.cpu_only,
            ..SamplerOptions::default()
        };
        for text in &self.labels {
            let (k, v) = parse_label_flag(text).ok_or_else(|| AgentError::BadLabel(text.clone()))?;
            config.labels.insert(k, v);
        }
        config.upload.token = self.token;
        if let Some(dir) = self.spool_dir {
            config.upload.spool_dir = Some(dir);
        }
        config.upload.spool_max_bytes = self.spool_max_mib.saturating_mul(1 << 20);
        config.upload_interval = positive_duration("--upload-interval", &self.upload_interval)?;
        config.duration = self.duration.as_deref().map(|d| positive_duration("--duration", d)).transpose()?;
        config.flush_timeout = positive_duration("--flush-timeout", &self.flush_timeout)?;
        config.metrics_listen = self.metrics_listen;
        Ok(config)
    }
}

impl ExportArgs {
    /// The export's config (the client checks the values before any traffic).
    pub fn into_config(self) -> ExportConfig {
        ExportConfig {
            server: self.server,
            service: self.service,
            from: self.from,
            until: self.until,
            states: self.states,
            labels: self.labels,
            format: self.format,
            out: self.out,
            token: self.token,
        }
    }
}

impl ImportArgs {
    /// The import's config (the client checks the values before any traffic).
    pub fn into_config(self) -> ImportConfig {
        ImportConfig {
            server: self.server,
            service: self.service,
            format: self.format,
            labels: self.labels,
            from: self.from,
            duration: self.duration,
            sample_rate: self.sample_rate,
            token: self.token,
            file: self.file,
        }
    }
}

impl ScrapeArgs {
    /// Checks the flags; the config file's tables are read when scraping starts.
    pub fn into_config(self) -> Result<ScrapeConfig, ScrapeError> {
        let interval = crate::scrape::duration("--interval", &self.interval)?;
        let target = match (&self.target, &self.service) {
            (Some(url), Some(service)) => {
                let labels = self
                    .labels
                    .iter()
                    .map(|p| parse_label_flag(p).ok_or_else(|| ScrapeError::BadLabel(p.clone())))
                    .collect::<Result<BTreeMap<_, _>, _>>()?;
                Some(Target::new(url, service, interval, labels)?)
            }
            (None, None) => None,
            _ => return Err(ScrapeError::HalfTarget),
        };
        let duration = self.duration.as_deref().map(|d| crate::scrape::duration("--duration", d)).transpose()?;
        let mut upload = UploadOptions::new(&server_base_url(&self.server).map_err(UploadError::from)?);
        upload.token = self.token;
        upload.spool_dir = self.spool_dir;
        Ok(ScrapeConfig { upload, target, config_file: self.config, default_interval: interval, duration })
    }
}

impl DemoArgs {
    /// Checks the flags and turns them into the demo's config.
    pub fn into_config(self) -> Result<DemoConfig, DemoError> {
        let duration = self.duration.as_deref().map(|d| positive_duration("--duration", d)).transpose()?;
        Ok(DemoConfig { listen: self.listen, data: self.data, duration })
    }
}

impl DemoWorkloadArgs {
    /// Checks the flags and turns them into the workload's config.
    pub fn into_config(self) -> Result<WorkloadConfig, WorkloadError> {
        let duration = match &self.duration {
            Some(text) => {
                Some(Duration::from_millis(parse_duration_ms(text).map_err(WorkloadError::BadDuration)?.max(0) as u64))
            }
            None => None,
        };
        Ok(WorkloadConfig { mode: self.mode.parse()?, threads: self.threads, duration, report: self.report })
    }
}

impl WinArgs {
    /// The win's config (the client checks the selections before any traffic).
    pub fn into_config(self) -> WinConfig {
        WinConfig {
            server: self.server,
            service: self.service,
            before: self.before,
            after: self.after,
            title: self.title,
            description: self.description,
            frame: self.frame,
            labels: self.labels,
            shipped_by: self.shipped_by,
            team: self.team,
            emails: self.emails,
            requests_query: self.requests_query,
            include_in_totals: self.include_in_totals,
            dry_run: self.dry_run,
            out: self.out,
            token: self.token,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(args: &[&str]) -> Result<AgentConfig, AgentError> {
        let mut argv = vec!["hotframe", "agent"];
        argv.extend_from_slice(args);
        match Cli::try_parse_from(argv).expect("flags parse").command {
            Command::Agent(agent) => agent.into_config(),
            _ => unreachable!(),
        }
    }

    #[test]
    fn flags_become_a_checked_config() {
        let c = config(&[
            "--server",
            "http://h:1/",
            "--service",
            "svc",
            "--pid",
            "7",
            "--label",
            "region=eu",
            "--unwind",
            "fp",
        ])
        .unwrap();
        assert!(matches!(c.targets, TargetSpec::Pids(ref p) if p == &[7]));
        assert_eq!(c.labels["region"], "eu");
        assert!(!c.labels["host"].is_empty());
        assert_eq!(c.sampler.unwind, UnwindMode::FramePointer);
        assert_eq!(c.upload.server, "http://h:1");
        assert_eq!(c.upload_interval, Duration::from_secs(10));
        assert!(c.upload.spool_dir.unwrap().ends_with("hotframe-spool/svc"));
    }

    #[test]
    fn bad_flags_say_what_to_do() {
        let base = ["--server", "http://h:1", "--service", "svc"];
        let with = |extra: &[&str]| {
            let mut v = base.to_vec();
            v.extend_from_slice(extra);
            config(&v).unwrap_err().to_string()
        };
        assert!(with(&[]).contains("--pid PID"));
        assert!(with(&["--pid", "1", "--name", "x"]).contains("only one"));
        assert!(with(&["--name", "("]).contains("invalid --name regex"));
        assert!(with(&["--pid", "1", "--label", "no-equals"]).contains("key=value"));
        assert!(with(&["--pid", "1", "--label", "1bad=x"]).contains("invalid label"));
        assert!(with(&["--pid", "1", "--upload-interval", "0s"]).contains("must be positive"));
        assert!(with(&["--pid", "1", "--unwind", "lbr"]).contains("dwarf or fp"));
        let https = config(&["--server", "https://h", "--service", "svc", "--pid", "1"]).unwrap_err().to_string();
        assert!(https.contains("no TLS"), "{https}");
    }
}
