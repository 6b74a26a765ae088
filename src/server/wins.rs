//! Ops wins over HTTP: `POST /api/v1/wins` measures a win from the stored profiles and
//! keeps it in the ledger, `GET /api/v1/wins` lists the ledger with the total saved
//! (per team and per service), `GET /api/v1/wins/{id}` shows one win with its send
//! state, `.../report.html` and `.../flamegraph.png` show its report, and
//! `POST .../send` sends it again. The work is `crate::wins`'s; these handlers parse the
//! request, price the sides with the service's cost settings, and map `WinsError`s to
//! answers.
//!
//! In: JSON bodies and ids. Out: JSON, HTML, PNG. Must not: send mail on the request
//! path (`wins::Outbox` does, in the background), or answer 201 before the win is
//! committed to the store.

use super::error::{ApiError, Reason};
use super::query::{cost_context, resolved, with_store};
use super::AppState;
use crate::model::time::now_ms;
use crate::report::ReportError;
use crate::wins::{self, ledger, NewWin, StoredWin, WinsConfig, WinsError};
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

/// The routes of the ledger; merged into the API router (auth and metrics apply).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/wins", get(list).post(create))
        .route("/api/v1/wins/{id}", get(show))
        .route("/api/v1/wins/{id}/report.html", get(report_html))
        .route("/api/v1/wins/{id}/flamegraph.png", get(flamegraph_png))
        .route("/api/v1/wins/{id}/send", post(resend))
}

/// Starts a send task for every win whose report is still pending (after a restart).
pub async fn resume_pending(state: AppState) {
    state.outbox.resume_pending().await
}

impl From<ReportError> for ApiError {
    fn from(e: ReportError) -> Self {
        let reason = match &e {
            ReportError::NoSamples { .. } => Reason::NoSamples,
            ReportError::EmptyWindow { .. } => Reason::EmptyRange,
            ReportError::BadPattern { .. } | ReportError::PatternMatchesNothing(_) => Reason::BadFrame,
            ReportError::BadAddress { .. } | ReportError::NoRecipients => Reason::BadEmail,
            ReportError::Flame(_)
            | ReportError::Message(_)
            | ReportError::BadSmtpUrl { .. }
            | ReportError::Send { .. } => return ApiError::Internal(e.to_string()),
        };
        ApiError::bad(reason, e.to_string())
    }
}

impl From<WinsError> for ApiError {
    fn from(e: WinsError) -> Self {
        match e {
            WinsError::Invalid { reason, message } => ApiError::bad(reason, message),
            WinsError::NotFound(message) => ApiError::NotFound(message),
            WinsError::Time(e) => e.into(),
            WinsError::Store(e) => e.into(),
            WinsError::Report(e) => e.into(),
            WinsError::Corrupt(message) => ApiError::Internal(message),
            WinsError::Prometheus(message) => ApiError::Upstream(message),
        }
    }
}

/// The JSON answer of a win: the record without the image, plus links.
fn answer(record: &StoredWin, config: &WinsConfig) -> serde_json::Value {
    let mut value = serde_json::to_value(record).unwrap_or_default();
    if let (Some(map), Some(id)) = (value.as_object_mut(), record.win.id) {
        map.remove("flamePng");
        map.insert("url".into(), config.viewer_url(id).into());
        map.insert("reportUrl".into(), format!("/api/v1/wins/{id}/report.html").into());
        map.insert("flamegraphUrl".into(), format!("/api/v1/wins/{id}/flamegraph.png").into());
    }
    value
}

fn data_url(record: &StoredWin) -> String {
    format!("data:image/png;base64,{}", record.flame_png.as_deref().unwrap_or_default())
}

/// `POST /api/v1/wins`.
async fn create(State(state): State<AppState>, body: axum::body::Bytes) -> Result<Response, ApiError> {
    let new: NewWin = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad(Reason::BadJson, format!("the body is not a win: {e}; see docs/api.md (POST /api/v1/wins)"))
    })?;
    wins::check_request(&new)?;
    let st = state.clone();
    let record = with_store(&state, move |store| {
        // The sides are priced with the service's settings: stored ones, else the config file's.
        let price = |before: &_, after: &_| -> Result<_, ApiError> {
            let inputs = resolved(&st, store, &new.service)?;
            Ok((cost_context(inputs.clone(), before), cost_context(inputs, after)))
        };
        wins::record(store, &st.config.wins, &new, now_ms(), price)
    })
    .await?;
    let config = &state.config.wins;
    match record.win.id {
        None => {
            let mut answer = answer(&record, config);
            let html = record.rendered(Some(&data_url(&record)), config).html;
            if let Some(map) = answer.as_object_mut() {
                map.insert("dryRun".into(), true.into());
                map.insert("reportHtml".into(), html.into());
            }
            Ok((StatusCode::OK, Json(answer)).into_response())
        }
        Some(id) => {
            tracing::info!(win = id, service = %record.win.service, usd_per_year = record.win.figures.saving.usd_per_year, "ops win recorded");
            if record.send.is_some() {
                state.outbox.send(id);
            }
            let mut response = (StatusCode::CREATED, Json(answer(&record, config))).into_response();
            if let Ok(location) = HeaderValue::from_str(&format!("/api/v1/wins/{id}")) {
                response.headers_mut().insert(header::LOCATION, location);
            }
            Ok(response)
        }
    }
}

async fn load(state: &AppState, id: i64) -> Result<StoredWin, ApiError> {
    with_store(state, move |store| Ok(ledger::load(store, id)?)).await
}

/// `GET /api/v1/wins/{id}`.
async fn show(State(state): State<AppState>, Path(id): Path<i64>) -> Result<Response, ApiError> {
    let record = load(&state, id).await?;
    Ok(Json(answer(&record, &state.config.wins)).into_response())
}

/// `GET /api/v1/wins/{id}/report.html`: the email's HTML, the image inline as data.
async fn report_html(State(state): State<AppState>, Path(id): Path<i64>) -> Result<Response, ApiError> {
    let record = load(&state, id).await?;
    let html = record.rendered(Some(&data_url(&record)), &state.config.wins).html;
    let headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8")),
        // The report is static: no script, images only from itself.
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'none'; img-src data:; style-src 'unsafe-inline'"),
        ),
        (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
    ];
    Ok((headers, html).into_response())
}

/// `GET /api/v1/wins/{id}/flamegraph.png`.
async fn flamegraph_png(State(state): State<AppState>, Path(id): Path<i64>) -> Result<Response, ApiError> {
    let record = load(&state, id).await?;
    match record.png() {
        Some(png) => Ok(([(header::CONTENT_TYPE, HeaderValue::from_static("image/png"))], png.bytes).into_response()),
        None => Err(ApiError::NotFound(format!(
            "win {id} has no flame graph: {}",
            record.flame_error.as_deref().unwrap_or("it was not rendered")
        ))),
    }
}

/// `POST /api/v1/wins/{id}/send`: sends the report again (to the same recipients).
/// While a send of the win is still pending (a task tries, or waits to retry), a second
/// one (a double click on "Send again") answers at once, 202 with `alreadySending`, and
/// changes nothing: the retries go on where they were.
async fn resend(State(state): State<AppState>, Path(id): Path<i64>) -> Result<Response, ApiError> {
    if state.outbox.is_sending(id) {
        let record = load(&state, id).await?;
        if record.send.as_ref().is_some_and(|s| s.status == crate::report::SendStatus::Pending) {
            let mut answer = answer(&record, &state.config.wins);
            if let Some(map) = answer.as_object_mut() {
                map.insert("alreadySending".into(), true.into());
            }
            return Ok((StatusCode::ACCEPTED, Json(answer)).into_response());
        }
    }
    let record = with_store(&state, move |store| Ok(ledger::requeue(store, id, now_ms())?)).await?;
    state.outbox.send(id);
    Ok((StatusCode::ACCEPTED, Json(answer(&record, &state.config.wins))).into_response())
}

/// `GET /api/v1/wins`: every win (newest first) and the running totals.
async fn list(State(state): State<AppState>) -> Result<Response, ApiError> {
    let listing = with_store(&state, |store| Ok(ledger::list(store)?)).await?;
    let config = &state.config.wins;
    let wins: Vec<serde_json::Value> = listing.wins.iter().map(|record| answer(record, config)).collect();
    Ok(Json(serde_json::json!({
        "wins": wins,
        "total": listing.total,
        "byTeam": listing.by_team,
        "byService": listing.by_service,
        "notCounted": listing.not_counted,
        "notNormalised": listing.not_normalised,
        "note": "Totals count wins whose saving is positive, normalised (per request, per unit of work, or against the rest of the service) and significant at 95%; wins per host, not normalised, count only when included explicitly; the others are listed but not counted.",
    }))
    .into_response())
}
