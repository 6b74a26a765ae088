//! CLI commands that talk to a running server over blocking HTTP (ureq): `export` prints
//! a service's merged profile, `import` sends a folded or pprof file.
//!
//! In: an `ExportConfig` / `ImportConfig` (`cli` builds them from the flags), files. Out: folded text, pprof or SVG on
//! stdout (or a file), a one-line summary of what was sent. Must not: retry silently or
//! hide the server's error message.

pub mod win;

use crate::model::folded::parse_folded_into;
use crate::model::pprof::{encode, gzip, is_gzip};
use crate::model::time::{now_ms, parse_duration_ms, parse_time, BadTime};
use crate::model::{ModelError, ProfileBuilder, ThreadState};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Largest file `import` reads (the server refuses more than its body limit anyway).
const MAX_IMPORT_BYTES: u64 = 256 << 20;

/// The server `hotframe export`, `import` and `win` talk to unless told otherwise.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:4040";

/// What `hotframe export` asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportConfig {
    /// Server base URL. Default `DEFAULT_SERVER`.
    pub server: String,
    /// Service to export. No default (empty).
    pub service: String,
    /// Range start (Unix s/ms, `now-5m`, ...). Default `now-1h`.
    pub from: String,
    /// Range end. Default `now`.
    pub until: String,
    /// States or view: `RUNNABLE,BLOCKED`, `cpu`, `latency`, `all`. Default `cpu`.
    pub states: String,
    /// Label filters `k=v`. Default none.
    pub labels: Vec<String>,
    /// `folded`, `pprof`, `svg` or `speedscope`. Default `folded`.
    pub format: String,
    /// Write here instead of stdout. Default stdout.
    pub out: Option<PathBuf>,
    /// Bearer token. Default none.
    pub token: Option<String>,
}

impl Default for ExportConfig {
    fn default() -> Self {
        ExportConfig {
            server: DEFAULT_SERVER.to_string(),
            service: String::new(),
            from: "now-1h".to_string(),
            until: "now".to_string(),
            states: "cpu".to_string(),
            labels: Vec::new(),
            format: "folded".to_string(),
            out: None,
            token: None,
        }
    }
}

/// What `hotframe import` sends.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportConfig {
    /// Server base URL. Default `DEFAULT_SERVER`.
    pub server: String,
    /// Service the profile belongs to. No default (empty).
    pub service: String,
    /// `folded`, `pprof`, `perf-script`, `speedscope`, or `auto` (by content). Default `auto`.
    pub format: String,
    /// Labels `k=v`. Default none.
    pub labels: Vec<String>,
    /// Window start for files that carry no time; None means now minus `duration`. Default none.
    pub from: Option<String>,
    /// Window length for files that carry no time. Default `10s`.
    pub duration: String,
    /// Sampling frequency of folded files, Hz. Default 99.
    pub sample_rate: u32,
    /// Bearer token. Default none.
    pub token: Option<String>,
    /// The file to send (`-` for stdin). Default `-`.
    pub file: PathBuf,
}

impl Default for ImportConfig {
    fn default() -> Self {
        ImportConfig {
            server: DEFAULT_SERVER.to_string(),
            service: String::new(),
            format: "auto".to_string(),
            labels: Vec::new(),
            from: None,
            duration: "10s".to_string(),
            sample_rate: 99,
            token: None,
            file: PathBuf::from("-"),
        }
    }
}

/// What went wrong talking to the server.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Server(#[from] crate::upload::BadServerUrl),
    #[error("cannot reach {url}: {source}")]
    Http { url: String, source: Box<ureq::Error> },
    #[error("the server answered {status}: {message}")]
    Status { status: u16, message: String },
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: String, source: std::io::Error },
    #[error("{0}")]
    Args(String),
    #[error("{path}: {source}")]
    Parse { path: String, source: ModelError },
    #[error("{path} is not valid {format}: {message}")]
    Format { path: String, format: &'static str, message: String },
    #[error(transparent)]
    Time(#[from] BadTime),
    #[error("the server's answer is not what this client expects: {0}")]
    Answer(String),
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(120)))
        .build()
        .into()
}

/// The checked `--server` base URL (one check for every command: `upload::server_base_url`).
fn server_url(server: &str) -> Result<String, ClientError> {
    Ok(crate::upload::server_base_url(server)?)
}

fn endpoint(server: &str, path: &str) -> String {
    format!("{}{}", server.trim_end_matches('/'), path)
}

/// Parses repeated `k=v` flags.
fn label_pairs(labels: &[String]) -> Result<Vec<(String, String)>, ClientError> {
    labels
        .iter()
        .map(|l| {
            crate::model::profile::parse_label_flag(l).ok_or_else(|| {
                ClientError::Args(format!("--label {l:?} is not `key=value` with a key of letters, digits and _"))
            })
        })
        .collect()
}

/// Reads the body of an answer, turning a non-2xx into `ClientError::Status` with the
/// server's own message.
fn finish(url: &str, result: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Result<Vec<u8>, ClientError> {
    let mut response = result.map_err(|source| ClientError::Http { url: url.to_string(), source: Box::new(source) })?;
    let status = response.status().as_u16();
    let body = response
        .body_mut()
        .with_config()
        .limit(1 << 30)
        .read_to_vec()
        .map_err(|source| ClientError::Http { url: url.to_string(), source: Box::new(source) })?;
    if (200..300).contains(&status) {
        return Ok(body);
    }
    let text = String::from_utf8_lossy(&body);
    let message = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
        .unwrap_or_else(|| text.trim().to_string());
    Err(ClientError::Status { status, message })
}

fn authorized<B>(request: ureq::RequestBuilder<B>, token: &Option<String>) -> ureq::RequestBuilder<B> {
    match token {
        Some(t) => request.header("Authorization", format!("Bearer {t}")),
        None => request,
    }
}

/// Runs `hotframe export`: GET /api/v1/export and write the body to stdout or `--out`.
pub fn export(config: ExportConfig) -> Result<(), ClientError> {
    let server = server_url(&config.server)?;
    let format = config.format.to_ascii_lowercase();
    if !matches!(format.as_str(), "folded" | "pprof" | "svg" | "speedscope") {
        return Err(ClientError::Args(format!("--format {format:?}: use folded, pprof, svg or speedscope")));
    }
    ThreadState::parse_list(&config.states).map_err(|e| ClientError::Args(format!("--states: {e}")))?;
    // Check the times here so a typo gets a message before any network traffic.
    parse_time(&config.from)?;
    parse_time(&config.until)?;
    let url = endpoint(&server, "/api/v1/export");
    let mut request = agent()
        .get(&url)
        .query("service", &config.service)
        .query("from", &config.from)
        .query("until", &config.until)
        .query("states", &config.states)
        .query("format", &format);
    for (k, v) in label_pairs(&config.labels)? {
        request = request.query(format!("label.{k}"), v);
    }
    let body = finish(&url, authorized(request, &config.token).call())?;
    match &config.out {
        Some(path) => std::fs::write(path, &body)
            .map_err(|source| ClientError::Write { path: path.display().to_string(), source }),
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(&body)
                .and_then(|_| out.flush())
                .map_err(|source| ClientError::Write { path: "stdout".into(), source })
        }
    }
}

fn read_input(path: &Path) -> Result<Vec<u8>, ClientError> {
    let name = path.display().to_string();
    let err = |source| ClientError::Read { path: name.clone(), source };
    let mut bytes = Vec::new();
    if path == Path::new("-") {
        std::io::stdin().lock().take(MAX_IMPORT_BYTES).read_to_end(&mut bytes).map_err(err)?;
    } else {
        std::fs::File::open(path).and_then(|f| f.take(MAX_IMPORT_BYTES).read_to_end(&mut bytes)).map_err(err)?;
    }
    Ok(bytes)
}

/// The format `--format auto` picks: pprof for binary, speedscope for its JSON, perf-script
/// for text whose records have indented frame lines, else folded.
pub fn detect_format(bytes: &[u8]) -> &'static str {
    if looks_like_pprof(bytes) {
        return "pprof";
    }
    let head = String::from_utf8_lossy(&bytes[..bytes.len().min(4096)]);
    if head.trim_start().starts_with('{') && head.contains("speedscope") {
        "speedscope"
    } else if head.lines().any(|l| l.starts_with('\t') || l.starts_with("    ")) {
        "perf-script"
    } else {
        "folded"
    }
}

/// True if the bytes look like pprof (gzip, or binary protobuf) rather than folded text.
pub fn looks_like_pprof(bytes: &[u8]) -> bool {
    is_gzip(bytes) || bytes.contains(&0) || std::str::from_utf8(bytes).is_err()
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct IngestAnswer {
    profile_id: i64,
    samples: u64,
}

/// Runs `hotframe import`: folded files become a pprof with the given window and rate;
/// pprof files are sent as they are. Prints what was sent and what the server stored.
pub fn import(config: ImportConfig) -> Result<(), ClientError> {
    let server = server_url(&config.server)?;
    let path: &PathBuf = &config.file;
    let bytes = read_input(path)?;
    if bytes.is_empty() {
        return Err(ClientError::Args(format!("{} is empty", path.display())));
    }
    let format = match config.format.to_ascii_lowercase().as_str() {
        "auto" => detect_format(&bytes),
        "pprof" => "pprof",
        "folded" => "folded",
        "perf-script" | "perf" => "perf-script",
        "speedscope" => "speedscope",
        other => {
            return Err(ClientError::Args(format!(
                "--format {other:?}: use folded, pprof, perf-script, speedscope or auto"
            )))
        }
    };
    let duration_ms = parse_duration_ms(&config.duration)?;
    if duration_ms <= 0 {
        return Err(ClientError::Args(format!("--duration {:?} must be positive", config.duration)));
    }
    let from_ms = match &config.from {
        Some(t) => parse_time(t)?,
        None => now_ms() - duration_ms,
    };
    let until_ms = from_ms + duration_ms;
    if config.sample_rate == 0 {
        return Err(ClientError::Args("--sample-rate must be at least 1 Hz".into()));
    }

    let (body, what) = if format != "pprof" {
        let text = std::str::from_utf8(&bytes)
            .map_err(|e| ClientError::Args(format!("{}: not UTF-8 text: {e}", path.display())))?;
        let period_ns = 1_000_000_000 / config.sample_rate as u64;
        let mut builder = ProfileBuilder::new(&config.service, from_ms, until_ms, period_ns);
        let parse_error = |message: String| ClientError::Format { path: path.display().to_string(), format, message };
        let mut profile = match format {
            "perf-script" => {
                let summary = crate::model::perf_script::parse_into(text, &mut builder)
                    .map_err(|e| parse_error(e.to_string()))?;
                let mut profile = builder.finish();
                // The recording's own length is the window (perf's clock is not Unix time).
                let span_ms = (((summary.last_s - summary.first_s) * 1000.0).ceil() as i64).max(1000);
                profile.start_ms = config.from.as_ref().map(|_| from_ms).unwrap_or_else(|| now_ms() - span_ms);
                profile.end_ms = profile.start_ms + span_ms;
                profile
            }
            "speedscope" => {
                crate::model::speedscope::parse_into(&bytes, period_ns, &mut builder)
                    .map_err(|e| parse_error(e.to_string()))?;
                builder.finish()
            }
            _ => {
                parse_folded_into(text, ThreadState::Runnable, &mut builder)
                    .map_err(|source| ClientError::Parse { path: path.display().to_string(), source })?;
                builder.finish()
            }
        };
        profile.labels.clear();
        let what = format!(
            "{format}: {} stacks, {} samples at {} Hz",
            profile.stacks.len(),
            profile.total_samples(),
            config.sample_rate
        );
        (gzip(&encode(&profile)), what)
    } else {
        let what = format!("pprof, {} bytes", bytes.len());
        (bytes, what)
    };

    let url = endpoint(&server, "/api/v1/profiles");
    let mut request = agent()
        .post(&url)
        .query("service", &config.service)
        .query("from", from_ms.to_string())
        .query("until", until_ms.to_string());
    for (k, v) in label_pairs(&config.labels)? {
        request = request.query(format!("label.{k}"), v);
    }
    let request = authorized(request, &config.token).content_type("application/octet-stream");
    let answer = finish(&url, request.send(&body[..]))?;
    if answer.is_empty() {
        // 204: the server stores no profile without samples.
        println!("sent {} ({what}) to {url}: it holds no samples, so nothing was stored", path.display());
        return Ok(());
    }
    let stored: IngestAnswer = serde_json::from_slice(&answer).map_err(|e| ClientError::Answer(e.to_string()))?;
    println!(
        "sent {} ({what}) to {url} for service {}: stored as profile {} with {} samples",
        path.display(),
        config.service,
        stored.profile_id,
        stored.samples
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_formats_and_labels() {
        assert!(!looks_like_pprof(b"main;work 3\n"));
        assert!(looks_like_pprof(&gzip(b"main;work 3\n")));
        assert!(looks_like_pprof(&[0x0a, 0x00, 0xff]));
        assert_eq!(detect_format(b"main;work 3\n"), "folded");
        assert_eq!(detect_format(b"busy 1 1.0: cpu-clock:\n\t 1234 main (/bin/busy)\n"), "perf-script");
        assert_eq!(detect_format(br#"{"$schema":"https://www.speedscope.app/file-format-schema.json"}"#), "speedscope");
        assert_eq!(label_pairs(&["host=a".into()]).unwrap(), vec![("host".into(), "a".into())]);
        assert!(label_pairs(&["host".into()]).is_err());
        assert_eq!(endpoint("http://x:1/", "/api"), "http://x:1/api");
    }
}
