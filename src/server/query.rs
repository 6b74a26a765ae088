//! Query endpoints: services, flamegraph, timeline, export (folded, pprof, svg),
//! instance types and per-service cost settings.
//!
//! In: query strings and settings JSON. Out: JSON (docs/api.md), folded text, gzip
//! pprof or SVG. Must not: write profiles; every store call runs on the blocking pool,
//! at most one per store reader connection at once, so memory stays bounded.

use super::error::{ApiError, Reason};
use super::flame::{self, FlameNode};
use super::params::Params;
use super::AppState;
use crate::cost::{self, CostContext, CostInputs, CostSettings, CostTerms, INSTANCE_TYPES};
use crate::model::time::{now_ms, parse_duration_ms};
use crate::model::Aggregate;
use crate::model::ThreadState;
use crate::store::{ProfileStore, Query as StoreQuery, TimelinePoint};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use std::collections::BTreeMap;

/// A minute, ms.
const MINUTE_MS: i64 = 60_000;
/// Default node budget of a flame graph.
const DEFAULT_MAX_NODES: usize = 10_000;
/// Most buckets a timeline may have.
const MAX_TIMELINE_POINTS: i64 = 5_000;
/// Window of a service's `now` figure.
const NOW_WINDOW_MS: i64 = 15 * 60_000;
/// Buckets of the 24-hour sparkline.
const SPARKLINE_BUCKETS: i64 = 24;

/// Runs `f` with the store on the blocking pool, after waiting for a query slot.
pub async fn with_store<T, F>(state: &AppState, f: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&dyn ProfileStore) -> Result<T, ApiError> + Send + 'static,
{
    let slot = state
        .reads
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| ApiError::Internal("the server is shutting down".into()))?;
    let store = state.store.clone();
    let (reads, all) = (state.reads.clone(), state.config.store.reader_connections.max(1));
    tokio::task::spawn_blocking(move || {
        let out = f(store.as_ref());
        drop(slot);
        // The last read in flight gives the merge maps' memory back (see `trim`).
        if reads.available_permits() == all {
            super::trim::release_free_memory();
        }
        out
    })
    .await?
}

/// The service's cost settings: stored ones (`PUT`), else the config file's, else defaults.
fn settings_of(state: &AppState, store: &dyn ProfileStore, service: &str) -> Result<CostSettings, ApiError> {
    match store.settings(service)? {
        Some(json) => serde_json::from_str(&json)
            .map_err(|e| ApiError::Internal(format!("stored settings of {service:?} do not parse: {e}"))),
        None => Ok(state.config.services.get(service).cloned().unwrap_or_default()),
    }
}

pub(crate) fn resolved(state: &AppState, store: &dyn ProfileStore, service: &str) -> Result<CostInputs, ApiError> {
    Ok(settings_of(state, store, service)?.resolve()?)
}

/// The filters shared by flamegraph, timeline and export.
struct Selection {
    query: StoreQuery,
    states: Vec<ThreadState>,
}

fn selection(params: &Params, now: i64) -> Result<Selection, ApiError> {
    let service = params.require("service", Reason::BadService)?.to_string();
    let from_ms = params.time_in_range("from", "now-1h", now)?;
    let until_ms = params.time_in_range("until", "now", now)?;
    if from_ms >= until_ms {
        return Err(ApiError::bad(
            Reason::BadTime,
            format!("from ({from_ms} ms) must be before until ({until_ms} ms)"),
        ));
    }
    let states = ThreadState::parse_list(params.get("states").unwrap_or("cpu"))?;
    if states.is_empty() {
        return Err(ApiError::bad(
            Reason::BadStates,
            "states is empty: give states such as RUNNABLE,BLOCKED or a view (cpu, latency, all)",
        ));
    }
    let query = StoreQuery {
        service,
        profile_type: params.get("type").unwrap_or("cpu").to_string(),
        labels: params.labels(),
        from_ms,
        until_ms,
        states: states.clone(),
    };
    Ok(Selection { query, states })
}

/// 404 unless the service has ever sent a profile.
pub(crate) fn ensure_known(store: &dyn ProfileStore, service: &str) -> Result<(), ApiError> {
    if store.services()?.iter().any(|s| s.name == service) {
        Ok(())
    } else {
        Err(crate::store::StoreError::UnknownService(service.to_string()).into())
    }
}

/// Merges the selection; an empty result for a service never seen is a 404.
fn aggregate_known(store: &dyn ProfileStore, query: &StoreQuery) -> Result<Aggregate, ApiError> {
    let agg = store.aggregate(query)?;
    if agg.profiles == 0 {
        ensure_known(store, &query.service)?;
    }
    Ok(agg)
}

/// W and Hp of an aggregate: wall seconds per profiled host, and the hosts.
pub(crate) fn cost_context(inputs: CostInputs, agg: &Aggregate) -> CostContext {
    CostContext::of_aggregate(inputs, agg)
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Totals {
    samples: u64,
    cpu_seconds: f64,
    cores: f64,
    usd_per_year: f64,
    kg_co2_per_year: f64,
    by_state: BTreeMap<&'static str, u64>,
    profiles: u64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct FlamegraphAnswer {
    service: String,
    profile_type: String,
    from: i64,
    until: i64,
    states: Vec<ThreadState>,
    labels: BTreeMap<String, String>,
    totals: Totals,
    cost: CostTerms,
    nodes: usize,
    pruned_nodes: usize,
    root: FlameNode,
}

/// A relative start ("the last hour") begins at a whole minute: the store then reads
/// merged minutes instead of the raw profiles of a ragged first minute (at fleet
/// volume, thousands). The answer's `from` says where it began.
fn minute_aligned(mut sel: Selection, params: &Params) -> Selection {
    if params.get("from").is_none_or(|f| f.trim_start().starts_with("now")) {
        sel.query.from_ms = sel.query.from_ms.div_euclid(MINUTE_MS) * MINUTE_MS;
    }
    sel
}

/// The timeline's step when none is asked: about 120 points, and whole minutes from a
/// range of half an hour on, so that each point is made of whole merged minutes (see
/// `store::buckets`) rather than of raw profiles.
fn default_step(range_ms: i64) -> i64 {
    let step = (range_ms / 120).max(1000);
    if range_ms >= 30 * MINUTE_MS {
        (step + MINUTE_MS - 1).div_euclid(MINUTE_MS) * MINUTE_MS
    } else {
        step
    }
}

/// `GET /api/v1/flamegraph`.
pub async fn flamegraph(State(state): State<AppState>, params: Params) -> Result<Response, ApiError> {
    let sel = minute_aligned(selection(&params, now_ms())?, &params);
    let max_nodes = params.positive("maxNodes", DEFAULT_MAX_NODES as f64, Reason::BadMaxNodes)? as usize;
    let st = state.clone();
    let answer = with_store(&state, move |store| {
        let agg = aggregate_known(store, &sel.query)?;
        let ctx = cost_context(resolved(&st, store, &sel.query.service)?, &agg);
        let tree = flame::build(&agg, &sel.states, max_nodes, &ctx);
        let total = ctx.estimate(tree.cpu_seconds);
        let q = sel.query;
        Ok(FlamegraphAnswer {
            totals: Totals {
                samples: tree.root.total,
                cpu_seconds: tree.cpu_seconds,
                cores: total.cores,
                usd_per_year: total.usd_per_year,
                kg_co2_per_year: total.kg_co2_per_year,
                by_state: ThreadState::ALL.iter().map(|s| (s.as_str(), tree.by_state[s.index()])).collect(),
                profiles: agg.profiles,
            },
            cost: ctx.terms(&agg),
            service: q.service,
            profile_type: q.profile_type,
            from: q.from_ms,
            until: q.until_ms,
            states: sel.states,
            labels: q.labels,
            nodes: tree.nodes,
            pruned_nodes: tree.pruned_nodes,
            root: tree.root,
        })
    })
    .await?;
    Ok(Json(answer).into_response())
}

#[derive(Debug, Serialize)]
struct TimelinePointAnswer {
    t: i64,
    cores: BTreeMap<&'static str, f64>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct TimelineAnswer {
    service: String,
    from: i64,
    until: i64,
    step_ms: i64,
    states: Vec<ThreadState>,
    points: Vec<TimelinePointAnswer>,
}

/// Cores per state of one bucket: the cost model's cores with the W and Hp of the
/// profiles in it (`cost::observed_window`, as for the flame graph of the same profiles).
fn bucket_cores(point: &TimelinePoint, fleet: Option<u32>) -> [f64; 5] {
    let mut out = [0.0; 5];
    let window = cost::observed_window(&point.coverage);
    if window.profiled_hosts == 0 {
        return out;
    }
    let fleet = fleet.unwrap_or(window.profiled_hosts);
    for (o, n) in out.iter_mut().zip(point.nanos) {
        *o = cost::cores(n as f64 / 1e9, window.window_seconds, fleet, window.profiled_hosts);
    }
    out
}

/// Spreads store points over `count` buckets of `step_ms` from `from_ms`, zero-filled.
fn bucketed(points: &[TimelinePoint], from_ms: i64, step_ms: i64, count: i64, fleet: Option<u32>) -> Vec<[f64; 5]> {
    let mut out = vec![[0.0; 5]; count.max(0) as usize];
    for p in points {
        let i = (p.t_ms - from_ms).div_euclid(step_ms.max(1));
        if let Some(slot) = usize::try_from(i).ok().and_then(|i| out.get_mut(i)) {
            for (acc, v) in slot.iter_mut().zip(bucket_cores(p, fleet)) {
                *acc += v;
            }
        }
    }
    out
}

/// `GET /api/v1/timeline`.
pub async fn timeline(State(state): State<AppState>, params: Params) -> Result<Response, ApiError> {
    let sel = minute_aligned(selection(&params, now_ms())?, &params);
    let range = sel.query.until_ms - sel.query.from_ms;
    let step_ms = match params.get("step") {
        Some(text) => parse_duration_ms(text).ok().filter(|s| *s > 0).ok_or_else(|| {
            ApiError::bad(Reason::BadStep, format!("step={text:?} must be a positive duration such as 60s"))
        })?,
        None => default_step(range),
    };
    let count = (range + step_ms - 1) / step_ms;
    if count > MAX_TIMELINE_POINTS {
        return Err(ApiError::bad(
            Reason::BadStep,
            format!("step {step_ms} ms makes {count} points; the limit is {MAX_TIMELINE_POINTS}, use a larger step"),
        ));
    }
    let st = state.clone();
    let answer = with_store(&state, move |store| {
        let points = store.timeline(&sel.query, step_ms)?;
        if points.iter().all(|p| p.samples.iter().all(|s| *s == 0)) {
            ensure_known(store, &sel.query.service)?;
        }
        let fleet = settings_of(&st, store, &sel.query.service)?.fleet_hosts;
        let q = sel.query;
        let rows = bucketed(&points, q.from_ms, step_ms, count, fleet);
        let points = rows
            .iter()
            .enumerate()
            .map(|(i, cores)| TimelinePointAnswer {
                t: q.from_ms + i as i64 * step_ms,
                cores: sel.states.iter().map(|s| (s.as_str(), cores[s.index()])).collect(),
            })
            .collect();
        Ok(TimelineAnswer {
            service: q.service,
            from: q.from_ms,
            until: q.until_ms,
            step_ms,
            states: sel.states,
            points,
        })
    })
    .await?;
    Ok(Json(answer).into_response())
}

/// `GET /api/v1/export?format=folded|pprof|svg|speedscope`.
pub async fn export(State(state): State<AppState>, params: Params) -> Result<Response, ApiError> {
    let sel = selection(&params, now_ms())?;
    let format = params.get("format").unwrap_or("folded").to_ascii_lowercase();
    if !matches!(format.as_str(), "folded" | "pprof" | "svg" | "speedscope") {
        return Err(ApiError::bad(
            Reason::BadFormat,
            format!("format={format:?} is not supported; use folded, pprof, svg or speedscope"),
        ));
    }
    let profile = with_store(&state, move |store| {
        let agg = aggregate_known(store, &sel.query)?;
        let q = &sel.query;
        Ok(agg.to_profile(&q.service, &sel.states, q.from_ms, q.until_ms))
    })
    .await?;
    let folded = || crate::model::folded::to_folded(&profile, &[]);
    let (content_type, body): (&'static str, Vec<u8>) = match format.as_str() {
        "folded" => ("text/plain; charset=utf-8", folded().into_bytes()),
        "pprof" => ("application/octet-stream", crate::model::pprof::gzip(&crate::model::pprof::encode(&profile))),
        "speedscope" => ("application/json", crate::model::speedscope::encode(&profile)),
        _ => {
            let text = folded();
            let title = format!("{} ({})", profile.service, params.get("states").unwrap_or("cpu"));
            let svg = tokio::task::spawn_blocking(move || render_svg(&text, &title)).await??;
            ("image/svg+xml", svg)
        }
    };
    let mut response = body.into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if format == "pprof" {
        response
            .headers_mut()
            .insert(header::CONTENT_DISPOSITION, HeaderValue::from_static("attachment; filename=\"profile.pb.gz\""));
    }
    Ok(response)
}

/// An inferno flame graph of folded `text`; an empty profile gives a small SVG that says so.
fn render_svg(text: &str, title: &str) -> Result<Vec<u8>, ApiError> {
    if text.is_empty() {
        let svg = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"600\" height=\"60\"><text x=\"10\" y=\"35\">{}: no samples in this range</text></svg>",
            escape_xml(title)
        );
        return Ok(svg.into_bytes());
    }
    let mut options = inferno::flamegraph::Options::default();
    options.title = title.to_string();
    options.count_name = "samples".to_string();
    let mut out = Vec::new();
    inferno::flamegraph::from_lines(&mut options, text.lines(), &mut out)
        .map_err(|e| ApiError::Internal(format!("flame graph rendering failed: {e}")))?;
    Ok(out)
}

fn escape_xml(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct NowCost {
    cpu_cores: f64,
    usd_per_year: f64,
    kg_co2_per_year: f64,
    /// The terms the viewer writes out beside the figure (it does not recompute it).
    price_per_core_hour: f64,
    hours_per_year: f64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ServiceAnswer {
    name: String,
    profile_types: Vec<String>,
    labels: BTreeMap<String, Vec<String>>,
    first_ms: i64,
    last_ms: i64,
    profiles: u64,
    now: NowCost,
    sparkline: Vec<f64>,
}

#[derive(Debug, Serialize)]
struct ServicesAnswer {
    services: Vec<ServiceAnswer>,
}

/// `GET /api/v1/services`: every service with its `now` cost (last 15 min) and a
/// 24-bucket sparkline of CPU cores over the last 24 h.
pub async fn services(State(state): State<AppState>) -> Result<Response, ApiError> {
    let st = state.clone();
    let now = now_ms();
    // Both windows start on a whole minute, so that they read merged minutes.
    let minute = now.div_euclid(MINUTE_MS) * MINUTE_MS;
    let answer = with_store(&state, move |store| {
        let mut out = Vec::new();
        for info in store.services()? {
            // One service's unreadable settings must not hide the whole list.
            let settings = settings_of(&st, store, &info.name).unwrap_or_else(|e| {
                tracing::warn!(service = %info.name, error = %e, "using default cost settings");
                CostSettings::default()
            });
            // Settings that no longer resolve (e.g. an instance type removed from the table) fall back to defaults.
            let inputs = settings.resolve().or_else(|_| CostSettings::default().resolve())?;
            let mut query = StoreQuery {
                service: info.name.clone(),
                profile_type: "cpu".into(),
                labels: BTreeMap::new(),
                from_ms: minute - NOW_WINDOW_MS,
                until_ms: now,
                states: vec![ThreadState::Runnable],
            };
            let agg = store.aggregate(&query)?;
            let price_per_core_hour = inputs.price_per_core_hour;
            let hours_per_year = inputs.hours_per_year;
            let estimate = cost_context(inputs, &agg).estimate(agg.cpu_seconds());
            let step = 24 * 3_600_000 / SPARKLINE_BUCKETS;
            query.from_ms = minute - SPARKLINE_BUCKETS * step;
            let points = store.timeline(&query, step)?;
            let sparkline = bucketed(&points, query.from_ms, step, SPARKLINE_BUCKETS, settings.fleet_hosts)
                .iter()
                .map(|c| c[ThreadState::Runnable.index()])
                .collect();
            out.push(ServiceAnswer {
                name: info.name,
                profile_types: info.profile_types,
                labels: info.labels,
                first_ms: info.first_ms,
                last_ms: info.last_ms,
                profiles: info.profiles,
                now: NowCost {
                    cpu_cores: estimate.cores,
                    usd_per_year: estimate.usd_per_year,
                    kg_co2_per_year: estimate.kg_co2_per_year,
                    price_per_core_hour,
                    hours_per_year,
                },
                sparkline,
            });
        }
        Ok(ServicesAnswer { services: out })
    })
    .await?;
    Ok(Json(answer).into_response())
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct InstanceRow {
    #[serde(flatten)]
    instance: &'static crate::cost::InstanceType,
    price_per_core_hour: f64,
}

/// `GET /api/v1/instance-types`.
pub async fn instance_types() -> Response {
    let rows: Vec<InstanceRow> = INSTANCE_TYPES
        .iter()
        .map(|i| InstanceRow { instance: i, price_per_core_hour: i.price_per_core_hour() })
        .collect();
    Json(serde_json::json!({ "instanceTypes": rows })).into_response()
}

#[derive(Debug, Serialize)]
struct SettingsAnswer {
    settings: CostSettings,
    resolved: CostInputs,
}

fn check_service_name(name: &str) -> Result<(), ApiError> {
    if crate::model::profile::valid_service_name(name) {
        Ok(())
    } else {
        Err(crate::model::ModelError::BadServiceName(name.to_string()).into())
    }
}

/// `GET /api/v1/services/{name}/settings`: stored settings (else the config file's, else
/// defaults) and what they resolve to. Any valid name answers, so that settings can be
/// prepared before a service sends its first profile.
pub async fn get_settings(State(state): State<AppState>, Path(name): Path<String>) -> Result<Response, ApiError> {
    check_service_name(&name)?;
    let st = state.clone();
    let answer = with_store(&state, move |store| {
        let settings = settings_of(&st, store, &name)?;
        let resolved = settings.resolve()?;
        Ok(SettingsAnswer { settings, resolved })
    })
    .await?;
    Ok(Json(answer).into_response())
}

/// `PUT /api/v1/services/{name}/settings`: validates and stores the settings.
pub async fn put_settings(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    check_service_name(&name)?;
    let settings: CostSettings =
        serde_json::from_slice(&body).map_err(|e| ApiError::bad(Reason::BadSettings, format!("settings JSON: {e}")))?;
    let resolved = settings.resolve()?;
    let json = serde_json::to_string(&settings).map_err(|e| ApiError::Internal(e.to_string()))?;
    with_store(&state, move |store| Ok(store.put_settings(&name, &json)?)).await?;
    Ok(Json(SettingsAnswer { settings, resolved }).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_scale_by_fleet() {
        let mut p = TimelinePoint {
            t_ms: 60_000,
            samples: [100, 0, 0, 0, 0],
            nanos: [30_000_000_000, 0, 0, 0, 0],
            coverage: Default::default(),
        };
        p.coverage.add(Some("a"), 60_000, 120_000);
        p.coverage.add(Some("b"), 60_000, 120_000);
        let rows = bucketed(&[p.clone()], 0, 60_000, 3, Some(10));
        // 30 thread seconds over a 60 s bucket = 0.5 cores on 2 hosts; x 10/2 for the fleet.
        assert_eq!(rows[0], [0.0; 5]);
        assert!((rows[1][0] - 2.5).abs() < 1e-12);
        assert_eq!(rows.len(), 3);
        // Three processes per host over the same minute: still 60 s of wall time per host.
        for host in ["a", "b"] {
            p.coverage.add(Some(host), 60_000, 120_000);
            p.coverage.add(Some(host), 60_000, 120_000);
        }
        assert!((bucketed(&[p.clone()], 0, 60_000, 3, Some(10))[1][0] - 2.5).abs() < 1e-12);
        // Observed for 30 s of the bucket only: the cores while observed, as in the flame graph.
        p.coverage = Default::default();
        p.coverage.add(Some("a"), 60_000, 90_000);
        p.coverage.add(Some("b"), 60_000, 90_000);
        assert!((bucketed(&[p], 0, 60_000, 3, Some(10))[1][0] - 5.0).abs() < 1e-12);
    }

    #[test]
    fn default_steps_are_whole_minutes_from_half_an_hour() {
        assert_eq!(default_step(60_000), 1000);
        assert_eq!(default_step(15 * 60_000), 7_500);
        assert_eq!(default_step(3_600_000), 60_000);
        assert_eq!(default_step(7 * 86_400_000), 84 * 60_000);
        assert_eq!(default_step(7 * 86_400_000 + 120_000), 85 * 60_000);
    }

    #[test]
    fn selection_checks_its_inputs() {
        let p = |pairs: &[(&str, &str)]| Params(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
        let now = 1_700_000_000_000;
        let ok = selection(&p(&[("service", "a"), ("from", "now-5m"), ("label.host", "h")]), now).unwrap();
        assert_eq!(ok.query.from_ms, now - 300_000);
        assert_eq!(ok.states, vec![ThreadState::Runnable]);
        assert_eq!(ok.query.labels["host"], "h");
        let reason = |r: Result<Selection, ApiError>| r.err().map(|e| e.reason());
        assert_eq!(reason(selection(&p(&[("from", "now-5m")]), now)), Some(Reason::BadService));
        assert_eq!(reason(selection(&p(&[("service", "a"), ("from", "yesterday")]), now)), Some(Reason::BadTime));
        assert_eq!(
            reason(selection(&p(&[("service", "a"), ("from", "now"), ("until", "now-1h")]), now)),
            Some(Reason::BadTime)
        );
        assert_eq!(reason(selection(&p(&[("service", "a"), ("states", "SLEEPY")]), now)), Some(Reason::BadStates));
    }
}
