//! Ingest endpoints: Pyroscope's `POST /ingest`, Pyroscope's Connect
//! `POST /push.v1.PusherService/Push`, and the native `POST /api/v1/profiles`.
//!
//! In: request bodies (folded, lines, pprof; raw, multipart or gzip). Out: validated
//! `model::Profile`s written to the store; 2xx only after `store.write` returned.
//! Must not: inflate more than the decompressed limit, touch the store before the whole
//! request is decoded and validated, or hold more than `max_inflight_writes` requests.

use super::error::{ApiError, Reason};
use super::params::Params;
use super::push::{read_series, PushError, Series};
use super::AppState;
use crate::model::folded::{parse_text_bounded, TextFormat};
use crate::model::pprof::{decode_with, decompress_bounded, is_gzip, Budget, DecodeLimits, DecodeOptions};
use crate::model::profile::{MAX_RATE_HZ, MIN_RATE_HZ};
use crate::model::time::now_ms;
use crate::model::{Limits, ModelError, Profile, ProfileBuilder, ThreadState};
use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Multipart, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use http_body_util::BodyExt;
use serde::Serialize;
use std::borrow::Cow;
use std::collections::BTreeMap;

/// Window assumed for a profile that carries no time: the last 10 seconds.
const DEFAULT_WINDOW_MS: i64 = 10_000;

/// Answer of `/ingest` and `/api/v1/profiles`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IngestAnswer {
    /// Id of the stored profile.
    pub profile_id: i64,
    /// Samples stored.
    pub samples: u64,
}

/// How long a body may take before its average rate must reach `limits.min_body_rate`.
const BODY_RATE_GRACE: std::time::Duration = std::time::Duration::from_secs(5);
/// How often a body that sends nothing is looked at.
const BODY_TICK: std::time::Duration = std::time::Duration::from_millis(250);

/// Reads the whole body before the request takes a write slot, so that clients that
/// trickle their bodies hold no slot: at most `4 x max_inflight_writes` bodies are read
/// at once (more: 429), each under `limits.body_timeout_secs` in all and, after the
/// first 5 s, at an average of at least `limits.min_body_rate` bytes per second (else
/// 408); more than `limits.max_body_bytes` is refused without buffering it.
async fn read_body(state: &AppState, headers: &HeaderMap, mut body: Body) -> Result<Bytes, ApiError> {
    let limits = &state.config.limits;
    let max = limits.max_body_bytes;
    let too_large = |size: String| {
        ApiError::TooLarge(format!(
            "request body {size}is over the limit of {max} bytes (limits.max_body_bytes); send smaller profiles"
        ))
    };
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if let Some(len) = declared.filter(|len| *len > max as u64) {
        return Err(too_large(format!("of {len} bytes ")));
    }
    let _reading = state
        .body_reads
        .clone()
        .try_acquire_owned()
        .map_err(|_| ApiError::Busy { retry_after_secs: limits.retry_after_secs })?;
    let timeout = std::time::Duration::from_secs(limits.body_timeout_secs);
    let started = tokio::time::Instant::now();
    let mut out = Vec::with_capacity(declared.map_or(0, |len| len as usize).min(1 << 20));
    loop {
        let elapsed = started.elapsed();
        if elapsed >= timeout {
            return Err(ApiError::Timeout(format!(
                "the request body did not arrive within {} s (limits.body_timeout_secs)",
                timeout.as_secs()
            )));
        }
        let rate = out.len() as f64 / elapsed.as_secs_f64();
        if elapsed >= BODY_RATE_GRACE && rate < limits.min_body_rate as f64 {
            return Err(ApiError::Timeout(format!(
                "the request body arrived at {rate:.0} bytes/s, under the minimum of {} bytes/s (limits.min_body_rate)",
                limits.min_body_rate
            )));
        }
        match tokio::time::timeout(BODY_TICK.min(timeout - elapsed), body.frame()).await {
            Err(_) => continue,
            Ok(None) => return Ok(Bytes::from(out)),
            Ok(Some(Err(e))) => {
                return Err(ApiError::bad(Reason::BadBody, format!("could not read the request body: {e}")))
            }
            Ok(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    if out.len() + data.len() > max {
                        return Err(too_large(String::new()));
                    }
                    out.extend_from_slice(&data);
                }
            }
        }
    }
}

/// Checks `Content-Encoding`: true when it declares gzip; other encodings are 415.
fn declared_gzip(headers: &HeaderMap) -> Result<bool, ApiError> {
    let encoding =
        headers.get(header::CONTENT_ENCODING).and_then(|v| v.to_str().ok()).unwrap_or("").trim().to_ascii_lowercase();
    match encoding.as_str() {
        "" | "identity" => Ok(false),
        "gzip" | "x-gzip" => Ok(true),
        other => Err(ApiError::UnsupportedMediaType(format!(
            "Content-Encoding {other:?} is not supported; send gzip or plain bodies"
        ))),
    }
}

/// Gunzips the body when it is gzip (by header or magic bytes), inflating at most `max` bytes.
fn gunzip(max: usize, declared_gzip: bool, bytes: &[u8]) -> Result<Cow<'_, [u8]>, ApiError> {
    if declared_gzip && !is_gzip(bytes) {
        return Err(ApiError::bad(Reason::BadGzip, "Content-Encoding is gzip but the body is not gzip data"));
    }
    decompress_bounded(bytes, max).map_err(|e| match e {
        ModelError::TooLarge { .. } => ApiError::TooLarge(format!(
            "decompressed body is over the limit of {max} bytes (limits.max_decompressed_bytes); send smaller profiles"
        )),
        other => ApiError::bad(
            Reason::BadGzip,
            format!("body is not valid gzip: {}", other.to_string().trim_start_matches("malformed pprof: ")),
        ),
    })
}

fn content_type(headers: &HeaderMap) -> String {
    headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_ascii_lowercase()
}

/// Takes one of the bounded write slots, or answers 429.
fn write_slot(state: &AppState) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
    state
        .writes
        .clone()
        .try_acquire_owned()
        .map_err(|_| ApiError::Busy { retry_after_secs: state.config.limits.retry_after_secs })
}

/// Profiles decoded from one request, each with the bytes it arrived in.
type Decoded = Vec<(Profile, u64)>;

/// What the profiles of one request are decoded under and checked against, each as
/// soon as it is decoded: the profile limits, the decoder's limits and the request's
/// memory budget (`limits.max_decode_bytes`).
pub(crate) struct Admission {
    limits: Limits,
    decode: DecodeLimits,
    /// The request's decode memory budget.
    pub(crate) budget: Budget,
    now: i64,
}

impl Admission {
    fn new(state: &AppState) -> Admission {
        let limits = state.config.limits.profile_limits();
        Admission {
            decode: DecodeLimits::of(&limits),
            limits,
            budget: Budget::new(state.config.limits.max_decode_bytes),
            now: now_ms(),
        }
    }

    /// Decodes one pprof under the limits and the budget.
    fn pprof(&mut self, bytes: &[u8], opts: &DecodeOptions) -> Result<Profile, ModelError> {
        decode_with(bytes, opts, &self.decode, &mut self.budget)
    }

    /// The request body inflated (the compressed copy dropped), charged to the budget.
    fn body(&mut self, max: usize, gzipped: bool, raw: Bytes) -> Result<Bytes, ApiError> {
        let inflated = match gunzip(max, gzipped, &raw)? {
            Cow::Borrowed(_) => None,
            Cow::Owned(plain) => Some(Bytes::from(plain)),
        };
        let plain = inflated.unwrap_or(raw);
        if plain.is_empty() {
            return Err(ApiError::bad(Reason::EmptyBody, "the request body is empty: send a profile"));
        }
        self.budget.charge(plain.len())?;
        Ok(plain)
    }

    /// Refuses a profile that is malformed, over the limits or implausible.
    fn admit(&self, p: &Profile) -> Result<(), ApiError> {
        p.validate(&self.limits)?;
        p.check_plausible(&self.limits, self.now)?;
        Ok(())
    }
}

/// Runs `decode` on the blocking pool (decoding a large pprof takes milliseconds of
/// CPU), then writes the profiles in order; returns after the last commit. `decode`
/// admits each profile as it decodes it, so nothing is written unless every profile
/// decoded and was admitted.
async fn decode_and_store<F>(state: &AppState, decode: F) -> Result<Vec<crate::store::WriteReceipt>, ApiError>
where
    F: FnOnce(&mut Admission) -> Result<Decoded, ApiError> + Send + 'static,
{
    let mut admission = Admission::new(state);
    let store = state.store.clone();
    let metrics = state.metrics.clone();
    tokio::task::spawn_blocking(move || {
        let profiles = decode(&mut admission)?;
        let mut out = Vec::with_capacity(profiles.len());
        // A profile without samples says nothing (and would count as observed time): it is
        // not stored, and the answer says so (204, or a Push answered as usual).
        for (p, bytes) in profiles.iter().filter(|(p, _)| p.total_samples() > 0) {
            let receipt = match store.write(p) {
                Err(e @ crate::store::StoreError::DiskFull(_)) => {
                    metrics.disk_full(true);
                    return Err(e.into());
                }
                other => other?,
            };
            metrics.disk_full(false);
            metrics.ingested(*bytes, receipt.samples);
            out.push(receipt);
        }
        Ok(out)
    })
    .await?
}

/// Decodes and stores one profile and answers with its id, or 204 No Content when it
/// holds no samples (nothing is stored).
async fn store_one<F>(state: &AppState, received: u64, decode: F) -> Result<Response, ApiError>
where
    F: FnOnce(&mut Admission) -> Result<Profile, ApiError> + Send + 'static,
{
    let receipts = decode_and_store(state, move |admission| {
        let profile = decode(admission)?;
        admission.admit(&profile)?;
        Ok(vec![(profile, received)])
    })
    .await?;
    Ok(match receipts.first() {
        Some(r) => Json(IngestAnswer { profile_id: r.profile_id, samples: r.samples }).into_response(),
        None => StatusCode::NO_CONTENT.into_response(),
    })
}

/// `from`/`until` of an ingest: `until` defaults to now, `from` to `until` - 10 s.
fn ingest_window(params: &Params) -> Result<(i64, i64), ApiError> {
    let now = now_ms();
    let until = params.time_in_range("until", "now", now)?;
    let from = match params.get("from") {
        Some(_) => params.time_in_range("from", "now", now)?,
        None => until - DEFAULT_WINDOW_MS,
    };
    Ok((from, until))
}

/// What Pyroscope's `name` parameter says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppName {
    /// The service (application name without the type suffix).
    pub service: String,
    /// Profile type stored (`cpu` for cpu/itimer/wall/samples).
    pub profile_type: String,
    /// The pprof sample type to read, None for the CPU one.
    pub sample_type: Option<String>,
    /// Labels from the braces, reserved `__` ones dropped.
    pub labels: BTreeMap<String, String>,
}

/// A label name as Pyroscope SDKs send it, made a valid hotframe (Prometheus) name the
/// way Prometheus translates OpenTelemetry attributes: the SDKs add `otel.scope.name`,
/// `process.runtime.name`... so a dot becomes `_` (`otel_scope_name`). Other invalid
/// names are still refused.
pub(crate) fn sdk_label_name(name: &str) -> String {
    name.replace('.', "_")
}

/// Splits Pyroscope's `name` (`app.cpu{k=v,...}`) into service, profile type, the pprof
/// sample type to read, and labels.
pub fn parse_app_name(name: &str) -> Result<AppName, ApiError> {
    let name = name.trim();
    let (head, labels_text) = match name.find('{') {
        Some(i) => {
            let rest = &name[i + 1..];
            let inner = rest.strip_suffix('}').ok_or_else(|| {
                ApiError::bad(
                    Reason::BadLabels,
                    format!("name {name:?}: labels must end with `}}`, as in app.cpu{{host=a,env=prod}}"),
                )
            })?;
            (&name[..i], inner)
        }
        None => (name, ""),
    };
    let mut labels = BTreeMap::new();
    for part in labels_text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').ok_or_else(|| {
            ApiError::bad(Reason::BadLabels, format!("name {name:?}: label {part:?} is not `key=value`"))
        })?;
        let (k, v) = (k.trim(), v.trim().trim_matches('"'));
        // Reserved labels (`__name__`, `__session_id__`, ...) describe the upload, not the series.
        if k == "service_name" || k.starts_with("__") {
            continue;
        }
        let k = sdk_label_name(k);
        if !crate::model::profile::valid_label_name(&k) {
            return Err(ModelError::BadLabelName(k).into());
        }
        labels.insert(k, v.to_string());
    }
    const TYPES: [&str; 16] = [
        "cpu",
        "itimer",
        "wall",
        "samples",
        "alloc_objects",
        "alloc_space",
        "inuse_objects",
        "inuse_space",
        "goroutines",
        "mutex_count",
        "mutex_duration",
        "block_count",
        "block_duration",
        "lock_count",
        "lock_duration",
        "exceptions",
    ];
    let (service, suffix) = match head.rsplit_once('.') {
        Some((svc, ty)) if TYPES.contains(&ty) => (svc, ty),
        _ => (head, "cpu"),
    };
    if service.is_empty() {
        return Err(ApiError::bad(
            Reason::BadService,
            "query parameter `name` is required, as in name=app.cpu{host=a}",
        ));
    }
    let (profile_type, sample_type) = match suffix {
        "cpu" | "itimer" | "wall" | "samples" => ("cpu", None),
        other => (other, Some(other.to_string())),
    };
    Ok(AppName { service: service.to_string(), profile_type: profile_type.to_string(), sample_type, labels })
}

/// Which body format `/ingest` got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyFormat {
    /// No `format`: folded if the body is text, else pprof.
    Guess,
    Folded,
    Lines,
    Pprof,
}

fn text(bytes: &[u8], what: Reason) -> Result<&str, ApiError> {
    std::str::from_utf8(bytes).map_err(|e| {
        ApiError::bad(what, format!("body is not UTF-8 text ({e}); send folded stacks or use format=pprof"))
    })
}

/// `POST /ingest`, Pyroscope's HTTP API.
pub async fn pyroscope_ingest(
    State(state): State<AppState>,
    params: Params,
    request: Request,
) -> Result<Response, ApiError> {
    let AppName { service, profile_type, sample_type, labels } =
        parse_app_name(params.require("name", Reason::BadService)?)?;
    let (from, until) = ingest_window(&params)?;
    let rate = params.positive("sampleRate", 100.0, Reason::BadSampleRate)?;
    if !(MIN_RATE_HZ..=MAX_RATE_HZ).contains(&rate) {
        return Err(ApiError::bad(
            Reason::BadSampleRate,
            format!(
                "sampleRate={rate} Hz is outside {MIN_RATE_HZ} Hz to {MAX_RATE_HZ} Hz; send the profiler's real rate"
            ),
        ));
    }
    let period_ns = (1e9 / rate).round().max(1.0) as u64;
    let format = match params.get("format").map(str::to_ascii_lowercase).as_deref() {
        None => None,
        Some("folded") => Some(BodyFormat::Folded),
        Some("lines") => Some(BodyFormat::Lines),
        Some("pprof") => Some(BodyFormat::Pprof),
        Some(other) => {
            return Err(ApiError::bad(
                Reason::BadFormat,
                format!("format={other:?} is not supported; use folded, lines or pprof"),
            ))
        }
    };

    let (mut parts, body) = request.into_parts();
    let gzip_declared = declared_gzip(&parts.headers)?;
    let raw = read_body(&state, &parts.headers, body).await?;
    let _slot = write_slot(&state)?;
    let received = raw.len() as u64;
    let max = state.config.limits.max_decompressed_bytes;
    let (payload, gzipped, format) = if content_type(&parts.headers).starts_with("multipart/form-data") {
        // The multipart parser is async, so a (rare) gzip-encoded form is inflated here.
        let plain = gunzip(max, gzip_declared, &raw)?.into_owned();
        parts.headers.remove(header::CONTENT_ENCODING);
        parts.headers.remove(header::CONTENT_LENGTH);
        let profile = multipart_profile(Request::from_parts(parts, Body::from(plain))).await?;
        (profile, false, format.unwrap_or(BodyFormat::Pprof))
    } else {
        (raw, gzip_declared, format.unwrap_or(BodyFormat::Guess))
    };
    let opts = decode_options(&state, &service, from, until, sample_type);
    store_one(&state, received, move |admission| {
        let plain = admission.body(max, gzipped, payload)?;
        let format = match format {
            BodyFormat::Guess if std::str::from_utf8(&plain).is_ok() && !plain.contains(&0) => BodyFormat::Folded,
            BodyFormat::Guess => BodyFormat::Pprof,
            known => known,
        };
        let mut profile = match format {
            BodyFormat::Pprof => admission.pprof(&plain, &opts)?,
            _ => {
                let mut b = ProfileBuilder::new(&service, from, until, period_ns).profile_type(&profile_type);
                let (body, kind) = if format == BodyFormat::Lines {
                    (text(&plain, Reason::BadLines)?, TextFormat::Lines)
                } else {
                    (text(&plain, Reason::BadFolded)?, TextFormat::Folded)
                };
                let (depth, budget) = (admission.limits.max_stack_depth, &mut admission.budget);
                parse_text_bounded(body, kind, ThreadState::Runnable, &mut b, depth, budget)?;
                b.finish()
            }
        };
        profile.labels = labels;
        Ok(profile)
    })
    .await
}

fn decode_options(
    state: &AppState,
    service: &str,
    from: i64,
    until: i64,
    sample_type: Option<String>,
) -> DecodeOptions {
    DecodeOptions {
        service: service.to_string(),
        start_ms: from,
        end_ms: until,
        sample_type,
        max_bytes: state.config.limits.max_decompressed_bytes,
    }
}

/// The `profile` field of a multipart body (other fields, such as
/// `sample_type_config`, are ignored).
async fn multipart_profile(request: Request) -> Result<Bytes, ApiError> {
    let bad = |e: axum::extract::multipart::MultipartError| {
        ApiError::bad(Reason::BadMultipart, format!("multipart body: {}", e.body_text()))
    };
    let mut form = Multipart::from_request(request, &())
        .await
        .map_err(|e| ApiError::bad(Reason::BadMultipart, format!("multipart body: {}", e.body_text())))?;
    while let Some(field) = form.next_field().await.map_err(bad)? {
        if field.name() == Some("profile") {
            return field.bytes().await.map_err(bad);
        }
    }
    Err(ApiError::bad(Reason::BadMultipart, "multipart body has no `profile` field"))
}

/// `POST /api/v1/profiles`: pprof with `thread_state` sample labels.
pub async fn native_ingest(
    State(state): State<AppState>,
    params: Params,
    request: Request,
) -> Result<Response, ApiError> {
    let service = params.require("service", Reason::BadService)?.to_string();
    let labels = params.labels();
    let (from, until) = ingest_window(&params)?;
    let (parts, body) = request.into_parts();
    let gzipped = declared_gzip(&parts.headers)?;
    let raw = read_body(&state, &parts.headers, body).await?;
    let _slot = write_slot(&state)?;
    let max = state.config.limits.max_decompressed_bytes;
    let opts = decode_options(&state, &service, from, until, None);
    store_one(&state, raw.len() as u64, move |admission| {
        let plain = admission.body(max, gzipped, raw)?;
        let mut profile = admission.pprof(&plain, &opts)?;
        profile.labels = labels;
        Ok(profile)
    })
    .await
}

/// Turns the series of a Push request into profiles, decoding and admitting each raw
/// profile before the next; refuses the whole request on the first error.
fn push_profiles(max_bytes: usize, admission: &mut Admission, request: Vec<Series>) -> Result<Decoded, ApiError> {
    let now = now_ms();
    let mut out = Vec::new();
    for (i, series) in request.into_iter().enumerate() {
        let mut service = None;
        let mut labels = BTreeMap::new();
        for (name, value) in series.labels {
            match name.as_str() {
                "service_name" => service = Some(value),
                // Reserved labels (`__name__`, `__delta__`, ...) describe the profile, not the series.
                n if n.starts_with("__") => {}
                n => {
                    labels.insert(sdk_label_name(n), value);
                }
            }
        }
        let service = service.filter(|s| !s.is_empty()).ok_or_else(|| {
            ApiError::bad(Reason::BadService, format!("series #{} has no `service_name` label", i + 1))
        })?;
        for raw in series.raw_profiles {
            let opts = DecodeOptions {
                service: service.clone(),
                start_ms: now - DEFAULT_WINDOW_MS,
                end_ms: now,
                sample_type: None,
                max_bytes,
            };
            let mut profile = admission.pprof(&raw, &opts)?;
            profile.labels = labels.clone();
            admission.admit(&profile)?;
            out.push((profile, raw.len() as u64));
        }
    }
    if out.is_empty() {
        return Err(ApiError::bad(Reason::EmptyPush, "push request holds no profiles"));
    }
    Ok(out)
}

/// `POST /push.v1.PusherService/Push`, Pyroscope's Connect API (protobuf or JSON).
pub async fn connect_push(State(state): State<AppState>, request: Request) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    let kind = content_type(&parts.headers);
    let json = kind.starts_with("application/json");
    if kind.starts_with("application/grpc") {
        return Err(ApiError::UnsupportedMediaType(
            "gRPC framing is not supported; send Connect unary requests (application/proto or application/json)".into(),
        ));
    }
    if !(json || kind.is_empty() || kind.contains("proto")) {
        return Err(ApiError::UnsupportedMediaType(format!(
            "Content-Type {kind:?} is not supported; use application/proto or application/json"
        )));
    }
    let gzipped = declared_gzip(&parts.headers)?;
    let raw = read_body(&state, &parts.headers, body).await?;
    let _slot = write_slot(&state)?;
    let max = state.config.limits.max_decompressed_bytes;
    decode_and_store(&state, move |admission| {
        let plain = admission.body(max, gzipped, raw)?;
        let series = read_series(&plain, json, &mut admission.budget).map_err(|e| match e {
            PushError::Budget(e) => ApiError::from(e),
            malformed => ApiError::bad(Reason::BadPush, malformed.to_string()),
        })?;
        push_profiles(max, admission, series)
    })
    .await?;
    // PushResponse is an empty message.
    let (content_type, body) =
        if json { ("application/json", Body::from("{}")) } else { ("application/proto", Body::empty()) };
    Ok((StatusCode::OK, [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))], body).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sdk_label_names_become_valid() {
        let parsed = parse_app_name("app{otel.scope.name=com.grafana.pyroscope/nodejs,env=x}").unwrap();
        assert_eq!(parsed.labels.get("otel_scope_name").map(String::as_str), Some("com.grafana.pyroscope/nodejs"));
        assert_eq!(sdk_label_name("process.runtime.version"), "process_runtime_version");
    }

    #[test]
    fn app_names() {
        let AppName { service: svc, profile_type: ty, sample_type: st, labels } =
            parse_app_name("my.app.cpu{host=a, env=\"prod\",__session_id__=9}").unwrap();
        assert_eq!(labels.len(), 2, "reserved labels are dropped");
        assert_eq!((svc.as_str(), ty.as_str(), st), ("my.app", "cpu", None));
        assert_eq!(labels["env"], "prod");
        let AppName { service: svc, profile_type: ty, sample_type: st, .. } =
            parse_app_name("shop.alloc_space").unwrap();
        assert_eq!((svc.as_str(), ty.as_str(), st.as_deref()), ("shop", "alloc_space", Some("alloc_space")));
        let AppName { service: svc, profile_type: ty, .. } = parse_app_name("plain").unwrap();
        assert_eq!((svc.as_str(), ty.as_str()), ("plain", "cpu"));
        assert_eq!(parse_app_name("a.cpu{host}").unwrap_err().reason(), Reason::BadLabels);
        assert_eq!(parse_app_name("a.cpu{host=a").unwrap_err().reason(), Reason::BadLabels);
        assert_eq!(parse_app_name("a.cpu{bad-key=a}").unwrap_err().reason(), Reason::BadLabels);
        assert_eq!(parse_app_name(".cpu").unwrap_err().reason(), Reason::BadService);
    }
}
