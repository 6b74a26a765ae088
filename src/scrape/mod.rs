//! Pull mode, `hotframe scrape`: fetches CPU profiles from services that serve pprof
//! at `/debug/pprof/profile?seconds=N` (Go's net/http/pprof, pprof-rs endpoints), one
//! thread per target on a jittered schedule, and forwards each profile through the
//! resilient `upload::Uploader` to a hotframe server (a separate process from `serve`,
//! so one scraper can feed a remote server and keeps its spool while it is down).
//!
//! In: a `ScrapeConfig` (`cli` builds it from the flags) and the `[[scrape]]` tables of
//! its TOML file. Out: profiles to the
//! server, one warning per failed fetch. Must not: hammer a failing target (full-jitter
//! backoff), scrape all targets in lock step, or block a fetch on the upload.

use crate::model::pprof::{decode, DecodeOptions};
use crate::model::profile::{valid_label_name, valid_service_name};
use crate::model::time::{now_ms, parse_duration_ms, BadTime};
use crate::model::{ModelError, Profile};
use crate::upload::{full_jitter_backoff, jittered, UploadError, UploadOptions, Uploader};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Largest pprof body accepted from a target (decompressed), like the server's limit.
const MAX_PROFILE_BYTES: usize = 16 << 20;

/// Why scraping could not start, or one fetch failed.
#[derive(Debug, thiserror::Error)]
pub enum ScrapeError {
    #[error("nothing to scrape: pass --target URL --service NAME, or --config FILE with [[scrape]] tables")]
    NoTargets,
    #[error("--target needs --service (and --service needs --target)")]
    HalfTarget,
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Toml { path: PathBuf, message: String },
    #[error("target {0:?}: use an http:// URL such as http://127.0.0.1:6060/debug/pprof/profile?seconds=10 (no TLS)")]
    BadTarget(String),
    #[error("invalid service name {0:?}: use letters, digits and . _ - / : (at most 128)")]
    BadService(String),
    #[error("invalid label {0:?}: use key=value, key of letters, digits and _")]
    BadLabel(String),
    #[error("invalid {what}: {cause}")]
    BadDuration { what: String, cause: BadTime },
    #[error("{what} must be between 1 s and 1 h")]
    DurationRange { what: String },
    #[error(transparent)]
    Upload(#[from] UploadError),
    #[error("{url}: {message}")]
    Fetch { url: String, message: String },
    #[error("{url} answered {status}: {body}")]
    Status { url: String, status: u16, body: String },
    #[error("{url} sent something that is not a pprof profile: {source}")]
    Decode { url: String, source: ModelError },
}

/// One `[[scrape]]` table as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScrapeTable {
    /// The pprof endpoint, e.g. `http://10.0.0.5:6060/debug/pprof/profile?seconds=10`.
    pub target: String,
    /// Service the profiles belong to.
    pub service: String,
    /// Time between fetches (jittered ±10%), default `10s`.
    #[serde(default)]
    pub interval: Option<String>,
    /// Labels added to every profile of this target.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// The part of a config file `scrape` reads: other keys (the server's) are ignored.
#[derive(Debug, Default, Deserialize)]
struct ScrapeFile {
    #[serde(default)]
    scrape: Vec<ScrapeTable>,
}

/// One checked target.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// The URL fetched, with `seconds=` always present.
    pub url: String,
    /// Profile length asked for (the URL's `seconds`).
    pub seconds: u64,
    /// Service of every profile.
    pub service: String,
    /// Labels of every profile (`instance` = host:port unless given).
    pub labels: BTreeMap<String, String>,
    /// Nominal time between fetch starts.
    pub interval: Duration,
}

/// A scrape duration (`--interval`, `--duration`, a table's `interval`): 1 s to 1 h.
pub fn duration(what: &str, text: &str) -> Result<Duration, ScrapeError> {
    let ms = parse_duration_ms(text).map_err(|cause| ScrapeError::BadDuration { what: what.to_string(), cause })?;
    if !(1_000..=3_600_000).contains(&ms) {
        return Err(ScrapeError::DurationRange { what: what.to_string() });
    }
    Ok(Duration::from_millis(ms as u64))
}

impl Target {
    /// Checks a target. A URL without `seconds=` gets the interval's length in whole
    /// seconds, so that back-to-back profiles cover the time without gaps.
    pub fn new(
        url: &str,
        service: &str,
        interval: Duration,
        labels: BTreeMap<String, String>,
    ) -> Result<Target, ScrapeError> {
        let rest = url
            .strip_prefix("http://")
            .filter(|r| !r.is_empty())
            .ok_or_else(|| ScrapeError::BadTarget(url.to_string()))?;
        let authority = rest.split(['/', '?']).next().unwrap_or_default();
        if authority.is_empty() {
            return Err(ScrapeError::BadTarget(url.to_string()));
        }
        if !valid_service_name(service) {
            return Err(ScrapeError::BadService(service.to_string()));
        }
        if let Some(bad) = labels.keys().find(|k| !valid_label_name(k)) {
            return Err(ScrapeError::BadLabel(bad.clone()));
        }
        let query = url.split_once('?').map(|(_, q)| q).unwrap_or("");
        let given = query.split('&').find_map(|kv| kv.strip_prefix("seconds=")).map(|s| s.parse::<u64>());
        let (url, seconds) = match given {
            Some(Ok(s)) if s >= 1 => (url.to_string(), s),
            Some(_) => return Err(ScrapeError::BadTarget(url.to_string())),
            None => {
                let s = interval.as_secs().max(1);
                let sep = if url.contains('?') { '&' } else { '?' };
                (format!("{url}{sep}seconds={s}"), s)
            }
        };
        let mut all = BTreeMap::from([("instance".to_string(), authority.to_string())]);
        all.extend(labels);
        Ok(Target { url, seconds, service: service.to_string(), labels: all, interval })
    }
}

/// The targets of a config file's `[[scrape]]` tables; `default_interval` for those
/// without one.
pub fn targets_from_toml(text: &str, path: &Path, default_interval: Duration) -> Result<Vec<Target>, ScrapeError> {
    let file: ScrapeFile =
        toml::from_str(text).map_err(|e| ScrapeError::Toml { path: path.to_path_buf(), message: e.to_string() })?;
    file.scrape
        .into_iter()
        .map(|t| {
            let interval = match &t.interval {
                Some(text) => duration(&format!("interval of {}", t.target), text)?,
                None => default_interval,
            };
            Target::new(&t.target, &t.service, interval, t.labels)
        })
        .collect()
}

/// What `hotframe scrape` runs with.
#[derive(Debug, Clone)]
pub struct ScrapeConfig {
    /// Where the profiles go (server, token, spool). Default `http://127.0.0.1:4040`, no spool.
    pub upload: UploadOptions,
    /// The target given on the command line, if any. Default none.
    pub target: Option<Target>,
    /// TOML file with `[[scrape]]` tables, read when scraping starts. Default none.
    pub config_file: Option<PathBuf>,
    /// Time between fetches of tables that give none. Default 10 s.
    pub default_interval: Duration,
    /// Stop (and flush) after this long; None runs until SIGINT/SIGTERM. Default none.
    pub duration: Option<Duration>,
}

impl Default for ScrapeConfig {
    fn default() -> Self {
        ScrapeConfig {
            upload: UploadOptions::new("http://127.0.0.1:4040"),
            target: None,
            config_file: None,
            default_interval: Duration::from_secs(10),
            duration: None,
        }
    }
}

impl ScrapeConfig {
    /// Every target: the command line's, then the config file's tables.
    pub fn targets(&self) -> Result<Vec<Target>, ScrapeError> {
        let mut targets: Vec<Target> = self.target.iter().cloned().collect();
        if let Some(path) = &self.config_file {
            let text =
                std::fs::read_to_string(path).map_err(|source| ScrapeError::Read { path: path.clone(), source })?;
            targets.extend(targets_from_toml(&text, path, self.default_interval)?);
        }
        if targets.is_empty() {
            return Err(ScrapeError::NoTargets);
        }
        Ok(targets)
    }
}

/// Fetches one profile from `target` (blocking for about `seconds`).
pub fn fetch(client: &ureq::Agent, target: &Target) -> Result<Profile, ScrapeError> {
    let started = now_ms();
    let fail = |message: String| ScrapeError::Fetch { url: target.url.clone(), message };
    let mut response = client
        .get(&target.url)
        .config()
        .timeout_global(Some(Duration::from_secs(target.seconds + 30)))
        .build()
        .call()
        .map_err(|e| fail(e.to_string()))?;
    let status = response.status().as_u16();
    let body = response
        .body_mut()
        .with_config()
        .limit(MAX_PROFILE_BYTES as u64)
        .read_to_vec()
        .map_err(|e| fail(e.to_string()))?;
    if !(200..300).contains(&status) {
        let text = String::from_utf8_lossy(&body[..body.len().min(300)]).trim().to_string();
        return Err(ScrapeError::Status { url: target.url.clone(), status, body: text });
    }
    let opts = DecodeOptions {
        service: target.service.clone(),
        start_ms: started,
        end_ms: started + (target.seconds as i64 * 1000).max(1),
        sample_type: None,
        max_bytes: MAX_PROFILE_BYTES,
    };
    let mut profile = decode(&body, &opts).map_err(|source| ScrapeError::Decode { url: target.url.clone(), source })?;
    profile.labels = target.labels.clone();
    Ok(profile)
}

/// Scrapes `target` until `stop()` says so: the first fetch after a random part of the
/// interval (so targets spread out), then every jittered interval; after failures,
/// full-jitter backoff capped at the interval.
pub fn scrape_loop(target: &Target, uploader: &Uploader, stop: &dyn Fn() -> bool) {
    let client: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(3)))
        .user_agent(concat!("hotframe-scrape/", env!("CARGO_PKG_VERSION")))
        .build()
        .into();
    let mut next = Instant::now() + target.interval.mul_f64(fastrand::f64() * 0.2);
    let mut failures = 0u32;
    loop {
        while Instant::now() < next {
            if stop() {
                return;
            }
            std::thread::sleep((next - Instant::now()).min(Duration::from_millis(100)));
        }
        let started = Instant::now();
        match fetch(&client, target) {
            Ok(profile) => {
                failures = 0;
                tracing::debug!(url = %target.url, samples = profile.total_samples(), "scraped");
                uploader.submit(profile);
                next = started + jittered(target.interval, 0.1);
            }
            Err(err) => {
                failures = failures.saturating_add(1);
                tracing::warn!("{err}");
                let backoff = full_jitter_backoff(Duration::from_secs(1), failures - 1, target.interval);
                next = (started + backoff).max(Instant::now() + Duration::from_millis(100));
            }
        }
        if stop() {
            return;
        }
    }
}

/// Runs `hotframe scrape` until SIGINT/SIGTERM or `config.duration`, then flushes.
pub fn run(config: ScrapeConfig) -> Result<(), ScrapeError> {
    let targets = config.targets()?;
    let stop_after = config.duration;
    let server = config.upload.server.clone();
    let uploader = Arc::new(Uploader::start(config.upload)?);
    crate::signals::install();
    let started = Instant::now();
    let stop = move || crate::signals::stop_requested() || stop_after.is_some_and(|d| started.elapsed() >= d);
    tracing::info!(targets = targets.len(), server = %server, "scraping");
    std::thread::scope(|s| {
        for target in &targets {
            let uploader = Arc::clone(&uploader);
            let stop = &stop;
            s.spawn(move || scrape_loop(target, &uploader, stop));
        }
    });
    let delivered = uploader.flush(Duration::from_secs(10));
    let stats = uploader.stats();
    tracing::info!(sent = stats.sent, failed = stats.failed, dropped = stats.dropped, delivered, "scrape stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_get_seconds_and_instance() {
        let t =
            Target::new("http://10.0.0.5:6060/debug/pprof/profile", "api", Duration::from_secs(15), BTreeMap::new())
                .unwrap();
        assert_eq!(t.url, "http://10.0.0.5:6060/debug/pprof/profile?seconds=15");
        assert_eq!(t.seconds, 15);
        assert_eq!(t.labels["instance"], "10.0.0.5:6060");
        let t = Target::new(
            "http://h:1/p?debug=0&seconds=3",
            "api",
            Duration::from_secs(15),
            BTreeMap::from([("instance".into(), "x".into())]),
        )
        .unwrap();
        assert_eq!(
            (t.url.as_str(), t.seconds, t.labels["instance"].as_str()),
            ("http://h:1/p?debug=0&seconds=3", 3, "x")
        );
        assert!(matches!(
            Target::new("https://h/p", "a", Duration::from_secs(1), BTreeMap::new()),
            Err(ScrapeError::BadTarget(_))
        ));
        assert!(matches!(
            Target::new("http://h/p?seconds=x", "a", Duration::from_secs(1), BTreeMap::new()),
            Err(ScrapeError::BadTarget(_))
        ));
        assert!(matches!(
            Target::new("http://h/p", "a b", Duration::from_secs(1), BTreeMap::new()),
            Err(ScrapeError::BadService(_))
        ));
    }

    #[test]
    fn config_tables_and_ignored_server_keys() {
        let text = r#"
maintenance_interval = "5m"
[limits]
max_body_bytes = 1

[[scrape]]
target = "http://a:6060/debug/pprof/profile?seconds=10"
service = "api"
interval = "10s"
labels = { region = "eu" }

[[scrape]]
target = "http://b:6060/debug/pprof/profile"
service = "worker"
"#;
        let targets = targets_from_toml(text, Path::new("x.toml"), Duration::from_secs(30)).unwrap();
        assert_eq!(targets.len(), 2);
        assert_eq!(targets[0].labels["region"], "eu");
        assert_eq!(targets[1].url, "http://b:6060/debug/pprof/profile?seconds=30");
        let err =
            targets_from_toml("[[scrape]]\ntarget = \"http://a/\"\n", Path::new("x.toml"), Duration::from_secs(1))
                .unwrap_err();
        assert!(err.to_string().contains("service"), "{err}");
        let err = targets_from_toml(
            "[[scrape]]\ntarget=\"http://a/\"\nservice=\"s\"\ninterval=\"0s\"\n",
            Path::new("x"),
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert!(err.to_string().contains("between 1 s and 1 h"), "{err}");
    }
}
