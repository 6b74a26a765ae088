//! A small checkout service profiled by hotframe's in-process agent.
//!
//! `GET /checkout?coupon=SAVE10-AB12` is slow on purpose: `validate_coupon` compiles
//! its regex on every request instead of once (the classic ops win). `GET /health`
//! answers at once. `GET /debug/pprof/profile?seconds=N` serves a pprof-rs CPU profile
//! for pull-mode scraping (`hotframe scrape`); it answers 409 while the in-process
//! agent runs, as pprof-rs allows one profiler per process.
//!
//! ```text
//! HOTFRAME_SERVER=http://127.0.0.1:4040 cargo run --example checkout_service
//! ```
//! Environment: `HOTFRAME_SERVER` (start the agent; unset: no agent), `CHECKOUT_LISTEN`
//! (default 127.0.0.1:8080; `:0` picks a port), `HOTFRAME_UPLOAD_INTERVAL_SECS`
//! (default 10). It prints `listening on http://ADDR` on stdout once it accepts.

use axum::extract::Query;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::collections::HashMap;
use std::time::Duration;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("HOTFRAME_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();

    // The one call a service adds to `main`: the guard profiles until it is dropped.
    let _agent = match std::env::var("HOTFRAME_SERVER") {
        Ok(server) => {
            let interval: u64 =
                std::env::var("HOTFRAME_UPLOAD_INTERVAL_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(10);
            Some(
                hotframe::agent::Agent::builder()
                    .server(server)
                    .service("checkout")
                    .label("version", env!("CARGO_PKG_VERSION"))
                    .upload_interval(Duration::from_secs(interval))
                    .start()?,
            )
        }
        Err(_) => None,
    };
    let agent_running = _agent.is_some();
    if let Some(agent) = &_agent {
        // Each checkout is one unit of work: wins are then measured as CPU per request.
        let _ = REQUESTS.set(agent.work_counter());
    }

    let app = Router::new()
        .route("/checkout", get(checkout))
        .route("/health", get(|| async { "ok" }))
        .route("/debug/pprof/profile", get(move |q: Query<HashMap<String, String>>| pprof_profile(q, agent_running)));
    let listen = std::env::var("CHECKOUT_LISTEN").unwrap_or_else(|_| "127.0.0.1:8080".into());
    let listen = if listen.starts_with(':') { format!("127.0.0.1{listen}") } else { listen };
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).with_graceful_shutdown(shutdown()).await?;
    // `_agent` drops here: the last window is uploaded and flushed.
    Ok(())
}

async fn shutdown() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// The agent's request counter, when the agent runs.
static REQUESTS: std::sync::OnceLock<hotframe::inproc::WorkCounter> = std::sync::OnceLock::new();

async fn checkout(Query(params): Query<HashMap<String, String>>) -> Response {
    if let Some(requests) = REQUESTS.get() {
        requests.add(1);
    }
    let coupon = params.get("coupon").cloned().unwrap_or_default();
    // CPU-bound work belongs off the async workers.
    match tokio::task::spawn_blocking(move || validate_coupon(&coupon)).await {
        Ok(true) => (StatusCode::OK, "coupon applied\n").into_response(),
        Ok(false) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid coupon\n").into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// The slow path: the regex is compiled on every call (the fix is a `LazyLock`).
#[inline(never)]
fn validate_coupon(code: &str) -> bool {
    match regex::Regex::new(r"^(?:SAVE|FREE|VIP)\d{1,3}-[\w]{4,12}(?:-[\w]{2,8}){0,3}$") {
        Ok(re) => re.is_match(code),
        Err(_) => false,
    }
}

/// `/debug/pprof/profile?seconds=N`: a CPU profile over N seconds (default 30, at most
/// 300), gzip pprof as Go's net/http/pprof serves it.
async fn pprof_profile(Query(params): Query<HashMap<String, String>>, agent_running: bool) -> Response {
    if agent_running {
        return (StatusCode::CONFLICT, "the in-process agent owns the profiler\n").into_response();
    }
    let seconds: u64 = match params.get("seconds").map(|s| s.parse()) {
        None => 30,
        Some(Ok(s)) if (1..=300).contains(&s) => s,
        Some(_) => return (StatusCode::BAD_REQUEST, "seconds must be 1..=300\n").into_response(),
    };
    let result = tokio::task::spawn_blocking(move || -> Result<Vec<u8>, String> {
        let guard = pprof::ProfilerGuardBuilder::default().frequency(99).build().map_err(|e| e.to_string())?;
        hotframe::inproc::prime_unwinder();
        std::thread::sleep(Duration::from_secs(seconds));
        let report = guard.report().build().map_err(|e| e.to_string())?;
        let profile = report.pprof().map_err(|e| e.to_string())?;
        use pprof::protos::Message;
        Ok(hotframe::model::pprof::gzip(&profile.encode_to_vec()))
    })
    .await;
    match result {
        Ok(Ok(body)) => ([("content-type", "application/octet-stream")], body).into_response(),
        Ok(Err(e)) => (StatusCode::CONFLICT, format!("profiler busy: {e}\n")).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}
