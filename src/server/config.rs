//! The server's configuration: the TOML file (`--config`) and the token file
//! (`--token-file`), turned into one `ServerConfig`.
//!
//! In: file contents. Out: limits, store settings, tokens with scopes, per-service cost
//! settings. Must not: open sockets or the store.

use crate::cost::CostSettings;
use crate::model::Limits;
use crate::store::StoreConfig;
use crate::wins::{TeamConfig, WinsConfig, WinsSettings};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

/// A config or token file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("config file {path} is not valid: {message}")]
    Toml { path: String, message: String },
    #[error("token file {path} line {line}: {reason}")]
    TokenLine { path: String, line: usize, reason: String },
    #[error("token #{index} in the config file: {reason}")]
    Token { index: usize, reason: String },
    #[error("cost settings of service {service:?} in the config file: {source}")]
    Service { service: String, source: crate::cost::CostError },
    #[error("limits.{name} = {value} is out of range: use {range}")]
    Limit { name: &'static str, value: u64, range: &'static str },
    #[error("invalid maintenance_interval {0:?}: use a duration such as 5m")]
    Interval(String),
    #[error("ops wins: {0}")]
    Wins(String),
}

/// What a token may do. `Admin` may do everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Send profiles.
    Ingest,
    /// Query profiles, metrics and settings.
    Read,
    /// Change settings (and everything else).
    Admin,
}

impl std::str::FromStr for Scope {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "ingest" => Ok(Scope::Ingest),
            "read" => Ok(Scope::Read),
            "admin" => Ok(Scope::Admin),
            other => Err(format!("unknown scope {other:?}: expected ingest, read or admin")),
        }
    }
}

/// One bearer token and its scopes.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Token {
    /// The secret clients send as `Authorization: Bearer <token>`.
    pub token: String,
    /// What the token may do.
    pub scopes: Vec<Scope>,
}

impl Token {
    /// True if the token may act with `scope` (admin may do everything).
    pub fn allows(&self, scope: Scope) -> bool {
        self.scopes.iter().any(|s| *s == scope || *s == Scope::Admin)
    }
}

/// The server's limits: the profile limits of `model::Limits` plus body sizes and
/// back-pressure. Defaults: 16 MiB bodies, 1024 frames, 32 labels, 16 writes in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerLimits {
    /// Largest request body as sent (compressed). Default 16 MiB.
    pub max_body_bytes: usize,
    /// Largest body after gunzip. Default 16 MiB.
    pub max_decompressed_bytes: usize,
    /// Deepest stack accepted, in frames. Default 1024.
    pub max_stack_depth: usize,
    /// Labels per profile, service excluded. Default 32.
    pub max_labels: usize,
    /// Bytes per label value. Default 256.
    pub max_label_value: usize,
    /// Distinct stacks per profile. Default 200,000.
    pub max_stacks: usize,
    /// Threads one profile may cover: more samples than window x rate x this are
    /// refused as impossible. Default 65,536.
    pub max_threads: u64,
    /// Memory one ingest request may spend decoding (tables and profiles, beyond its
    /// body): with 16 writes in flight, 16 x this bounds the decoders. Default 32 MiB.
    pub max_decode_bytes: usize,
    /// Ingest requests processed at once; more get 429 with Retry-After. Default 16.
    pub max_inflight_writes: usize,
    /// Seconds a client is told to wait (`Retry-After`) when the write queue is full. Default 1.
    pub retry_after_secs: u32,
    /// Seconds an ingest body may take to arrive, so slow clients cannot hold write slots. Default 60.
    pub body_timeout_secs: u64,
    /// Bytes per second an ingest body must average after its first 5 s (else 408), so
    /// that trickling clients are let go early; 0 turns the check off. Default 1024.
    pub min_body_rate: u64,
}

impl Default for ServerLimits {
    fn default() -> Self {
        let model = Limits::default();
        ServerLimits {
            max_body_bytes: 16 << 20,
            max_decompressed_bytes: 16 << 20,
            max_stack_depth: model.max_stack_depth,
            max_labels: model.max_labels,
            max_label_value: model.max_label_value,
            max_stacks: model.max_stacks,
            max_threads: model.max_threads,
            max_decode_bytes: 32 << 20,
            max_inflight_writes: 16,
            retry_after_secs: 1,
            body_timeout_secs: 60,
            min_body_rate: 1024,
        }
    }
}

/// Deepest stack the server accepts at all: the flame graph is built and serialized
/// recursively on a 2 MiB blocking thread.
pub const MAX_STACK_DEPTH_CEILING: usize = 4096;

impl ServerLimits {
    /// Refuses limits that would break the server (zero sizes, absurd depths).
    fn check(&self) -> Result<(), ConfigError> {
        let checks: [(&'static str, u64, u64, u64, &'static str); 10] = [
            ("max_body_bytes", self.max_body_bytes as u64, 1024, 1 << 30, "1024 to 1073741824"),
            ("max_decompressed_bytes", self.max_decompressed_bytes as u64, 1024, 1 << 30, "1024 to 1073741824"),
            ("max_stack_depth", self.max_stack_depth as u64, 1, MAX_STACK_DEPTH_CEILING as u64, "1 to 4096"),
            ("max_stacks", self.max_stacks as u64, 1, u64::MAX, "at least 1"),
            ("max_threads", self.max_threads, 1, 1 << 24, "1 to 16777216"),
            ("max_decode_bytes", self.max_decode_bytes as u64, 1 << 20, 1 << 32, "1048576 to 4294967296"),
            ("max_inflight_writes", self.max_inflight_writes as u64, 1, 4096, "1 to 4096"),
            ("retry_after_secs", self.retry_after_secs as u64, 1, 3600, "1 to 3600"),
            ("body_timeout_secs", self.body_timeout_secs, 1, 3600, "1 to 3600"),
            ("min_body_rate", self.min_body_rate, 0, 1 << 30, "0 to 1073741824"),
        ];
        for (name, value, lo, hi, range) in checks {
            if value < lo || value > hi {
                return Err(ConfigError::Limit { name, value, range });
            }
        }
        Ok(())
    }

    /// The part of the limits a profile is validated against.
    pub fn profile_limits(&self) -> Limits {
        Limits {
            max_stack_depth: self.max_stack_depth,
            max_labels: self.max_labels,
            max_label_value: self.max_label_value,
            max_stacks: self.max_stacks,
            max_threads: self.max_threads,
        }
    }
}

/// The TOML file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct FileConfig {
    limits: ServerLimits,
    store: StoreConfig,
    tokens: Vec<Token>,
    services: BTreeMap<String, CostSettings>,
    maintenance_interval: Option<String>,
    smtp: Option<crate::report::SmtpConfig>,
    teams: BTreeMap<String, TeamConfig>,
    wins: WinsSettings,
    /// Where the request counters of wins are read (`[prometheus] url`).
    prometheus: Option<crate::wins::PrometheusConfig>,
    /// `[[scrape]]` tables belong to `hotframe scrape`, which may read this same file.
    #[allow(dead_code)]
    scrape: Vec<toml::Value>,
}

/// Everything `hotframe serve` is configured with.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    /// Body, profile and back-pressure limits.
    pub limits: ServerLimits,
    /// Store settings (retention, series limit).
    pub store: StoreConfig,
    /// Tokens; empty means no authentication.
    pub tokens: Vec<Token>,
    /// Per-service cost settings from the file; `PUT .../settings` overrides them.
    pub services: BTreeMap<String, CostSettings>,
    /// Mean time between maintenance passes (rollups, retention); each wait is jittered by +-20%.
    pub maintenance_interval: std::time::Duration,
    /// SMTP, teams and retry settings of the ops-wins ledger.
    pub wins: WinsConfig,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            limits: ServerLimits::default(),
            store: StoreConfig::default(),
            tokens: Vec::new(),
            services: BTreeMap::new(),
            maintenance_interval: std::time::Duration::from_secs(300),
            wins: Default::default(),
        }
    }
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.display().to_string(), source })
}

impl ServerConfig {
    /// Parses the TOML config text; `path` only names the file in errors.
    pub fn from_toml(text: &str, path: &str) -> Result<ServerConfig, ConfigError> {
        let file: FileConfig =
            toml::from_str(text).map_err(|e| ConfigError::Toml { path: path.to_string(), message: e.to_string() })?;
        file.limits.check()?;
        for (index, token) in file.tokens.iter().enumerate() {
            check_token(&token.token, &token.scopes)
                .map_err(|reason| ConfigError::Token { index: index + 1, reason })?;
        }
        for (service, settings) in &file.services {
            settings.resolve().map_err(|source| ConfigError::Service { service: service.clone(), source })?;
        }
        let maintenance_interval = match &file.maintenance_interval {
            None => ServerConfig::default().maintenance_interval,
            Some(text) => match crate::model::time::parse_duration_ms(text) {
                Ok(ms) if ms > 0 => std::time::Duration::from_millis(ms as u64),
                _ => return Err(ConfigError::Interval(text.clone())),
            },
        };
        Ok(ServerConfig {
            limits: file.limits,
            store: file.store,
            tokens: file.tokens,
            services: file.services,
            maintenance_interval,
            wins: WinsConfig::new(file.smtp, file.teams, file.wins)
                .and_then(|w| w.with_prometheus(file.prometheus))
                .map_err(ConfigError::Wins)?,
        })
    }

    /// Loads the config file (if any) and appends the tokens of the token file (if any).
    pub fn load(config: Option<&Path>, token_file: Option<&Path>) -> Result<ServerConfig, ConfigError> {
        let mut out = match config {
            Some(path) => ServerConfig::from_toml(&read(path)?, &path.display().to_string())?,
            None => ServerConfig::default(),
        };
        if let Some(path) = token_file {
            out.tokens.extend(parse_token_file(&read(path)?, &path.display().to_string())?);
        }
        Ok(out)
    }
}

fn check_token(token: &str, scopes: &[Scope]) -> Result<(), String> {
    if token.len() < 8 {
        return Err("token is shorter than 8 characters; use a long random string".into());
    }
    if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("token contains whitespace".into());
    }
    if scopes.is_empty() {
        return Err("token has no scope; give it ingest, read and/or admin".into());
    }
    Ok(())
}

/// Parses a token file: one `token scope[,scope]` per line; blank lines and `#` comments
/// are skipped.
pub fn parse_token_file(text: &str, path: &str) -> Result<Vec<Token>, ConfigError> {
    let mut out = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |reason: String| ConfigError::TokenLine { path: path.to_string(), line: n + 1, reason };
        let (token, scopes) =
            line.split_once(char::is_whitespace).ok_or_else(|| bad("expected `token scope[,scope]`".to_string()))?;
        let scopes = scopes
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(str::parse)
            .collect::<Result<Vec<Scope>, String>>()
            .map_err(bad)?;
        check_token(token, &scopes).map_err(bad)?;
        out.push(Token { token: token.to_string(), scopes });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_file_parses() {
        let text = r#"
maintenance_interval = "2m"
[limits]
max_body_bytes = 2000
max_stack_depth = 64
[store]
retention_raw_days = 7
[[tokens]]
token = "secret-ingest-1"
scopes = ["ingest"]
[services.checkout]
instanceType = "m5.large"
fleetHosts = 40
"#;
        let c = ServerConfig::from_toml(text, "x.toml").unwrap();
        assert_eq!(c.limits.max_body_bytes, 2000);
        assert_eq!(c.limits.max_decompressed_bytes, 16 << 20);
        assert_eq!(c.limits.profile_limits().max_stack_depth, 64);
        assert_eq!(c.store.retention_raw_days, 7);
        assert_eq!(c.tokens[0].scopes, vec![Scope::Ingest]);
        assert_eq!(c.services["checkout"].fleet_hosts, Some(40));
        assert_eq!(c.maintenance_interval, std::time::Duration::from_secs(120));
    }

    #[test]
    fn mistakes_are_named() {
        let typo = ServerConfig::from_toml("[limits]\nmax_body = 3\n", "x.toml").unwrap_err();
        assert!(typo.to_string().contains("max_body"), "{typo}");
        let bad_type = ServerConfig::from_toml("[services.a]\ninstanceType = \"z9.huge\"\n", "x.toml").unwrap_err();
        assert!(bad_type.to_string().contains("z9.huge"), "{bad_type}");
        let deep = ServerConfig::from_toml("[limits]\nmax_stack_depth = 100000\n", "x.toml").unwrap_err();
        assert!(deep.to_string().contains("max_stack_depth = 100000"), "{deep}");
        let short = ServerConfig::from_toml("[[tokens]]\ntoken = \"x\"\nscopes = [\"read\"]\n", "x.toml").unwrap_err();
        assert!(short.to_string().contains("shorter"), "{short}");
    }

    #[test]
    fn token_file_lines() {
        let tokens = parse_token_file("# comment\nabcdefgh12 ingest,read\n\nzzzzzzzz99 admin\n", "t").unwrap();
        assert_eq!(tokens.len(), 2);
        assert!(tokens[0].allows(Scope::Read) && !tokens[0].allows(Scope::Admin));
        assert!(tokens[1].allows(Scope::Ingest));
        let err = parse_token_file("abcdefgh12 write\n", "t").unwrap_err();
        assert!(err.to_string().contains("line 1") && err.to_string().contains("write"), "{err}");
    }
}
