//! `hotframe serve`: the axum server. `app(state)` builds the router (ingest, queries,
//! settings, metrics, health, viewer); `run_serve` takes a `ServeConfig`, opens the
//! store, starts the jittered maintenance task and serves until SIGINT/SIGTERM.
//!
//! In: HTTP requests, a `ServeConfig` (`cli` merges flags, config and token files).
//! Out: JSON, folded, pprof, SVG, Prometheus text; profiles written to the store. Must
//! not: answer 2xx to an ingest before the store committed it, or run store calls on the
//! async workers.

pub mod config;
pub mod error;
pub mod flame;
pub mod ingest;
pub mod metrics;
pub mod params;
pub mod push;
pub mod query;
mod trim;
pub mod web;
pub mod wins;

use crate::model::Reason;
use crate::store::ProfileStore;
use crate::upload::jittered;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use config::{Scope, ServerConfig};
pub use error::ApiError;
use metrics::Metrics;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// Why `hotframe serve` could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error("cannot open the store at {dir}: {source}")]
    Store { dir: String, source: crate::store::StoreError },
    #[error("cannot listen on {addr}: {source} (is another server running there? pick another --listen)")]
    Bind { addr: String, source: std::io::Error },
    #[error("invalid --listen {0:?}: use host:port, such as 127.0.0.1:4040")]
    Listen(String),
    #[error("server I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The profile store.
    pub store: Arc<dyn ProfileStore>,
    /// Limits, tokens, per-service settings.
    pub config: Arc<ServerConfig>,
    /// The server's own counters.
    pub metrics: Arc<Metrics>,
    /// Sends ops-win reports in the background, one task per win.
    pub outbox: crate::wins::Outbox,
    /// Ingest requests in flight (`limits.max_inflight_writes` permits).
    writes: Arc<Semaphore>,
    /// Ingest bodies being read, before they take a write slot (4 x `max_inflight_writes`).
    body_reads: Arc<Semaphore>,
    /// Store queries in flight (`store.reader_connections` permits).
    reads: Arc<Semaphore>,
}

impl AppState {
    /// State over `store` with `config`.
    pub fn new(store: Arc<dyn ProfileStore>, config: ServerConfig) -> AppState {
        AppState {
            writes: Arc::new(Semaphore::new(config.limits.max_inflight_writes)),
            body_reads: Arc::new(Semaphore::new(config.limits.max_inflight_writes.saturating_mul(4))),
            // One query per reader connection of the store; more wait their turn (bounds memory).
            reads: Arc::new(Semaphore::new(config.store.reader_connections.max(1))),
            outbox: crate::wins::Outbox::new(store.clone(), config.wins.clone()),
            store,
            config: Arc::new(config),
            metrics: Arc::new(Metrics::default()),
        }
    }
}

/// The whole HTTP API (docs/api.md) over `state`.
pub fn app(state: AppState) -> Router {
    let body_limit = state.config.limits.max_body_bytes;
    let api = Router::new()
        .route("/ingest", post(ingest::pyroscope_ingest))
        .route("/push.v1.PusherService/Push", post(ingest::connect_push))
        .route("/api/v1/profiles", post(ingest::native_ingest))
        .route("/api/v1/services", get(query::services))
        .route("/api/v1/flamegraph", get(query::flamegraph))
        .route("/api/v1/timeline", get(query::timeline))
        .route("/api/v1/export", get(query::export))
        .route("/api/v1/instance-types", get(query::instance_types))
        .route("/api/v1/services/{name}/settings", get(query::get_settings).put(query::put_settings))
        .route("/metrics", get(metrics_text))
        .merge(wins::routes())
        // Layers added later wrap earlier ones: `observe` sees what `auth` refused.
        .route_layer(middleware::from_fn_with_state(state.clone(), auth))
        .route_layer(middleware::from_fn_with_state(state.clone(), observe))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state);
    api.route("/healthz", get(|| async { "ok" }))
        .merge(web::routes())
        .fallback(|| async { ApiError::NotFound("no such endpoint; see docs/api.md".into()) })
}

/// `GET /metrics`.
async fn metrics_text(State(state): State<AppState>) -> Response {
    let store = state.store.clone();
    let stats = tokio::task::spawn_blocking(move || store.stats()).await.ok().and_then(Result::ok);
    let text = state.metrics.render(stats.as_ref());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response()
}

/// The scope a request needs, or None for open routes (health, viewer assets).
fn required_scope(method: &Method, path: &str) -> Option<Scope> {
    match path {
        "/healthz" => None,
        "/ingest" | "/push.v1.PusherService/Push" | "/api/v1/profiles" => Some(Scope::Ingest),
        "/metrics" => Some(Scope::Read),
        p if p.starts_with("/api/") => {
            Some(if method == Method::GET || method == Method::HEAD { Scope::Read } else { Scope::Admin })
        }
        _ => None,
    }
}

/// The token of `Authorization: Bearer <t>` (or Basic with the token as password, as
/// Grafana Alloy sends it).
fn presented_token(request: &Request) -> Option<String> {
    let value = request.headers().get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (kind, rest) = value.split_once(' ')?;
    if kind.eq_ignore_ascii_case("bearer") {
        return Some(rest.trim().to_string());
    }
    if kind.eq_ignore_ascii_case("basic") {
        use base64::Engine;
        let decoded = base64::engine::general_purpose::STANDARD.decode(rest.trim()).ok()?;
        let text = String::from_utf8(decoded).ok()?;
        return text.split_once(':').map(|(_, password)| password.to_string());
    }
    None
}

/// Compares without stopping at the first difference, so timing does not leak the token.
fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn auth(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let tokens = &state.config.tokens;
    if tokens.is_empty() {
        return next.run(request).await;
    }
    let Some(scope) = required_scope(request.method(), request.uri().path()) else {
        return next.run(request).await;
    };
    let scope_name = format!("{scope:?}").to_ascii_lowercase();
    let Some(presented) = presented_token(&request) else {
        return ApiError::Unauthorized(format!(
            "this server requires a token: send `Authorization: Bearer <token>` with scope {scope_name}"
        ))
        .into_response();
    };
    match tokens.iter().find(|t| same_secret(&t.token, &presented)) {
        None => ApiError::Unauthorized("the token is not valid on this server".into()).into_response(),
        Some(t) if !t.allows(scope) => {
            ApiError::Forbidden(format!("the token does not have scope {scope_name}, which this request needs"))
                .into_response()
        }
        Some(_) => next.run(request).await,
    }
}

/// Records latency per route and counts refused ingests by reason.
async fn observe(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "other".to_string());
    let ingest = required_scope(request.method(), request.uri().path()) == Some(Scope::Ingest);
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status();
    state.metrics.observe(&route, status.as_u16(), started.elapsed().as_secs_f64());
    if ingest && (status.is_client_error() || status.is_server_error()) {
        let reason = response.extensions().get::<error::RejectReason>().map(|r| r.0).unwrap_or(match status {
            StatusCode::PAYLOAD_TOO_LARGE => Reason::BodyTooLarge,
            _ => Reason::BadRequest,
        });
        state.metrics.rejected(reason);
    }
    response
}

/// How far each wait between maintenance passes is moved (±20%), so that servers
/// started together do not work in lockstep.
const MAINTENANCE_JITTER: f64 = 0.2;

/// Builds rollups and applies retention every `interval` (jittered) until the runtime stops.
async fn maintenance_loop(store: Arc<dyn ProfileStore>, interval: Duration) {
    loop {
        tokio::time::sleep(jittered(interval, MAINTENANCE_JITTER)).await;
        let store = store.clone();
        let started = Instant::now();
        match tokio::task::spawn_blocking(move || store.maintain(crate::model::time::now_ms())).await {
            Ok(Ok(report)) => tracing::info!(
                rollups = report.rollups_written,
                raw_deleted = report.raw_deleted,
                rollups_deleted = report.rollups_deleted,
                ms = started.elapsed().as_millis() as u64,
                "maintenance done"
            ),
            Ok(Err(e)) => tracing::warn!(error = %e, "maintenance failed; retrying at the next pass"),
            Err(e) => tracing::warn!(error = %e, "maintenance task panicked"),
        }
    }
}

/// How often profiles are merged into the service buckets: every profile older than
/// this (plus jitter) is read from a bucket, not raw, by queries.
const COMPACT_INTERVAL: Duration = Duration::from_secs(2);

/// Merges new profiles into the service buckets every `COMPACT_INTERVAL` (jittered).
async fn compaction_loop(store: Arc<dyn ProfileStore>) {
    loop {
        tokio::time::sleep(jittered(COMPACT_INTERVAL, MAINTENANCE_JITTER)).await;
        let store = store.clone();
        match tokio::task::spawn_blocking(move || store.compact()).await {
            Ok(Ok(merged)) => tracing::debug!(merged, "profiles merged into service buckets"),
            Ok(Err(e)) => tracing::warn!(error = %e, "merging into service buckets failed; retrying at the next pass"),
            Err(e) => tracing::warn!(error = %e, "compaction task panicked"),
        }
    }
}

async fn shutdown_signal() {
    crate::signals::stopped().await;
    tracing::info!("shutting down: finishing requests in flight");
}

/// Opens the store: PostgreSQL when `[store] url` (or `--store`) names one, else the
/// embedded SQLite store in `dir`.
fn open_store(dir: &std::path::Path, config: &ServerConfig) -> Result<Arc<dyn ProfileStore>, ServerError> {
    if let Some(url) = &config.store.url {
        let store = crate::store::PostgresStore::open(url, config.store.clone())
            .map_err(|source| ServerError::Store { dir: crate::store::postgres::redacted(url), source })?;
        return Ok(Arc::new(store));
    }
    std::fs::create_dir_all(dir)?;
    let store = crate::store::SqliteStore::open(dir, config.store.clone())
        .map_err(|source| ServerError::Store { dir: dir.display().to_string(), source })?;
    Ok(Arc::new(store))
}

/// What `hotframe serve` runs with: where to listen, where the store lives, and the
/// server's settings (config file, token file and flags already merged by `cli`).
#[derive(Debug, Clone, PartialEq)]
pub struct ServeConfig {
    /// Address to listen on, `host:port`; port 0 picks a free port. Default `127.0.0.1:4040`.
    pub listen: String,
    /// Directory of the embedded store. Default `./hotframe-data`.
    pub data: PathBuf,
    /// Limits, tokens, per-service cost settings, ops-win mail. Default `ServerConfig::default()`.
    pub server: ServerConfig,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            listen: "127.0.0.1:4040".to_string(),
            data: PathBuf::from("./hotframe-data"),
            server: ServerConfig::default(),
        }
    }
}

/// Runs `hotframe serve` until SIGINT/SIGTERM. Prints `listening on http://ADDR` on
/// stdout once the socket is bound (with `listen` 127.0.0.1:0, ADDR has the real port).
pub fn run_serve(serve: ServeConfig) -> Result<(), ServerError> {
    let ServeConfig { listen, data, server: config } = serve;
    crate::signals::install();
    // Host names (`localhost:4040`) resolve here; the first address is used.
    let addr: SocketAddr = std::net::ToSocketAddrs::to_socket_addrs(listen.as_str())
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| ServerError::Listen(listen.clone()))?;
    if !addr.ip().is_loopback() && config.tokens.is_empty() {
        tracing::warn!(%addr, "listening beyond loopback without tokens: anyone who can reach it can read and write profiles");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    // Bind before the store: a port in use must not leave a fresh data directory and a
    // migrated store behind.
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(addr))
        .map_err(|source| ServerError::Bind { addr: addr.to_string(), source })?;
    let store = open_store(&data, &config)?;
    let interval = config.maintenance_interval;
    let state = AppState::new(store.clone(), config);
    let served = runtime.block_on(async move {
        let local = listener.local_addr()?;
        tracing::info!(addr = %local, data = %data.display(), postgres = state.config.store.url.is_some(), "hotframe serving");
        {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "listening on http://{local}");
            let _ = out.flush();
        }
        tokio::spawn(compaction_loop(store.clone()));
        tokio::spawn(maintenance_loop(store, interval));
        tokio::spawn(wins::resume_pending(state.clone()));
        axum::serve(listener, app(state)).with_graceful_shutdown(shutdown_signal()).await?;
        Ok::<(), ServerError>(())
    });
    // A maintenance pass in progress finishes or is abandoned; SQLite keeps the last commit either way.
    runtime.shutdown_timeout(Duration::from_secs(10));
    served
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_by_route() {
        assert_eq!(required_scope(&Method::POST, "/ingest"), Some(Scope::Ingest));
        assert_eq!(required_scope(&Method::GET, "/api/v1/flamegraph"), Some(Scope::Read));
        assert_eq!(required_scope(&Method::PUT, "/api/v1/services/a/settings"), Some(Scope::Admin));
        assert_eq!(required_scope(&Method::GET, "/healthz"), None);
        assert_eq!(required_scope(&Method::GET, "/assets/abc/app.js"), None);
        assert!(same_secret("abc", "abc") && !same_secret("abc", "abd") && !same_secret("abc", "ab"));
        let d = jittered(Duration::from_secs(100), MAINTENANCE_JITTER);
        assert!(d >= Duration::from_secs(80) && d <= Duration::from_secs(120));
    }
}
