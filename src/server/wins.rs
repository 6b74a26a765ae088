//! Ops wins over HTTP: `POST /api/v1/wins` measures a win from the stored profiles and
//! keeps it in the ledger, `GET /api/v1/wins` lists the ledger with the total saved
//! (per team and per service), `GET /api/v1/wins/{id}` shows one win with its send
//! state, `.../report.html` and `.../flamegraph.png` show its report, and
//! `POST .../send` sends it again. The email goes out in the background (`outbox`).
//!
//! In: JSON bodies and ids. Out: JSON, HTML, PNG. Must not: send mail on the request
//! path, or answer 201 before the win is committed to the store.

pub mod outbox;

use super::error::ApiError;
use super::query::{cost_context, ensure_known, resolved, with_store};
use super::AppState;
use crate::model::time::{now_ms, parse_time_at};
use crate::model::ThreadState;
use crate::report::{self, FramePattern, Png, ReportError, Selection, SendState, Side, Win, WinOptions};
use crate::store::{ProfileStore, Query as StoreQuery, ServiceInfo};
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub use outbox::{resume_pending, TeamConfig, WinsConfig, WinsSettings};

/// Longest title accepted, in characters.
const MAX_TITLE: usize = 200;
/// Longest description accepted, in characters.
const MAX_DESCRIPTION: usize = 10_000;
/// Most extra email addresses per win.
const MAX_EMAILS: usize = 50;

/// The routes of the ledger; merged into the API router (auth and metrics apply).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/wins", get(list).post(create))
        .route("/api/v1/wins/{id}", get(show))
        .route("/api/v1/wins/{id}/report.html", get(report_html))
        .route("/api/v1/wins/{id}/flamegraph.png", get(flamegraph_png))
        .route("/api/v1/wins/{id}/send", post(resend))
}

impl From<ReportError> for ApiError {
    fn from(e: ReportError) -> Self {
        let reason = match &e {
            ReportError::NoSamples { .. } => "no_samples",
            ReportError::EmptyWindow { .. } => "empty_range",
            ReportError::BadPattern { .. } | ReportError::PatternMatchesNothing(_) => "bad_frame",
            ReportError::BadAddress { .. } | ReportError::NoRecipients => "bad_email",
            ReportError::Flame(_)
            | ReportError::Message(_)
            | ReportError::BadSmtpUrl { .. }
            | ReportError::Send { .. } => return ApiError::Internal(e.to_string()),
        };
        ApiError::bad(reason, e.to_string())
    }
}

/// A point in time as sent: Unix seconds or ms as a number, or text (`now-2h`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum TimeArg {
    /// Unix seconds (under 1e11) or milliseconds.
    Number(i64),
    /// Anything `model::time::parse_time_at` reads.
    Text(String),
}

impl TimeArg {
    fn at(&self, now: i64) -> Result<i64, ApiError> {
        match self {
            TimeArg::Number(n) => Ok(parse_time_at(&n.to_string(), now)?),
            TimeArg::Text(t) => Ok(parse_time_at(t, now)?),
        }
    }
}

/// A before or after selection as sent: a range (`from`, `until`), or a label value
/// (`label`, `value`) within an optional range (default: all the service's history).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelectionSpec {
    /// Range start.
    pub from: Option<TimeArg>,
    /// Range end.
    pub until: Option<TimeArg>,
    /// Label name, for a label selection.
    pub label: Option<String>,
    /// Label value, for a label selection.
    pub value: Option<String>,
    /// Label filters of this side only (the diff view sends them).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// The body of `POST /api/v1/wins`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewWin {
    /// Service the win is about.
    pub service: String,
    /// One line: what was done.
    pub title: String,
    /// What changed and why.
    #[serde(default)]
    pub description: String,
    /// The before selection.
    pub before: SelectionSpec,
    /// The after selection.
    pub after: SelectionSpec,
    /// Frames the win is about: a substring, or `/regex/`.
    #[serde(default)]
    pub frame: Option<String>,
    /// Label filters applied to both sides (e.g. `region`).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Who shipped it.
    #[serde(default)]
    pub shipped_by: Option<String>,
    /// Team credited; its `ops_win_list` receives the report.
    #[serde(default)]
    pub team: Option<String>,
    /// Extra recipients.
    #[serde(default)]
    pub emails: Vec<String>,
    /// Compute and render only: nothing is stored or sent.
    #[serde(default)]
    pub dry_run: bool,
    /// Thread states the sender was looking at; a win is measured on on-CPU samples,
    /// so this must include RUNNABLE when given.
    #[serde(default)]
    pub states: Option<Vec<ThreadState>>,
}

/// A win as kept in the ledger (the store holds it as JSON).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredWin {
    /// The win and its figures.
    #[serde(flatten)]
    pub win: Win,
    /// Frame pattern given, if any.
    pub frame: Option<String>,
    /// Label filters applied to both sides.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Everyone the report goes to (team list + extra addresses).
    pub recipients: Vec<String>,
    /// The email's state; None when there is nobody to send to.
    pub send: Option<SendState>,
    /// The differential flame graph, PNG as base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flame_png: Option<String>,
    /// Why there is no flame graph, if there is none.
    #[serde(default)]
    pub flame_error: Option<String>,
}

impl StoredWin {
    fn png(&self) -> Option<Png> {
        let bytes = base64::engine::general_purpose::STANDARD.decode(self.flame_png.as_deref()?).ok()?;
        let (width, height) = png_size(&bytes)?;
        Some(Png { bytes, width, height })
    }

    /// The report, with the image at `image_src` when there is one.
    fn rendered(&self, image_src: Option<&str>, config: &WinsConfig) -> report::RenderedReport {
        let url = self.win.id.map(|id| config.viewer_url(id));
        report::render(&self.win, image_src.filter(|_| self.flame_png.is_some()), url.as_deref())
    }

    /// The JSON answer: the record without the image, plus links.
    fn answer(&self, config: &WinsConfig) -> serde_json::Value {
        let mut value = serde_json::to_value(self).unwrap_or_default();
        if let (Some(map), Some(id)) = (value.as_object_mut(), self.win.id) {
            map.remove("flamePng");
            map.insert("url".into(), config.viewer_url(id).into());
            map.insert("reportUrl".into(), format!("/api/v1/wins/{id}/report.html").into());
            map.insert("flamegraphUrl".into(), format!("/api/v1/wins/{id}/flamegraph.png").into());
        }
        value
    }
}

/// Width and height from a PNG's IHDR chunk.
fn png_size(bytes: &[u8]) -> Option<(u32, u32)> {
    if bytes.len() < 24 || &bytes[..8] != b"\x89PNG\r\n\x1a\n" {
        return None;
    }
    let word = |at: usize| bytes.get(at..at + 4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
    Some((word(16)?, word(20)?))
}

fn bad(reason: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::bad(reason, message)
}

/// Checks the text fields; returns the trimmed title.
fn check_text(new: &NewWin) -> Result<(), ApiError> {
    let title = new.title.trim();
    if title.is_empty() {
        return Err(bad("bad_title", "title is empty: say in one line what was done, e.g. \"Cache compiled regexes\""));
    }
    if title.chars().count() > MAX_TITLE {
        return Err(bad("bad_title", format!("title is over {MAX_TITLE} characters: keep it to one line")));
    }
    if new.description.chars().count() > MAX_DESCRIPTION {
        return Err(bad("bad_description", format!("description is over {MAX_DESCRIPTION} characters")));
    }
    if new.emails.len() > MAX_EMAILS {
        return Err(bad("bad_email", format!("{} extra addresses: at most {MAX_EMAILS}", new.emails.len())));
    }
    for address in &new.emails {
        report::parse_mailbox(address)?;
    }
    for (field, value) in [("shippedBy", &new.shipped_by), ("team", &new.team)] {
        if value.as_deref().is_some_and(|v| v.chars().count() > MAX_TITLE || v.chars().any(char::is_control)) {
            return Err(bad("bad_text", format!("{field} must be one short line")));
        }
    }
    Ok(())
}

/// Resolves a selection spec against the service's history.
fn selection(spec: &SelectionSpec, side: &str, info: &ServiceInfo, now: i64) -> Result<Selection, ApiError> {
    let from_ms = spec.from.as_ref().map(|t| t.at(now)).transpose()?;
    let until_ms = spec.until.as_ref().map(|t| t.at(now)).transpose()?;
    let range = |from: Option<i64>, until: Option<i64>| -> Result<(i64, i64), ApiError> {
        let (from, until) = (from.unwrap_or(info.first_ms), until.unwrap_or(info.last_ms + 1));
        if from >= until {
            return Err(bad(
                "empty_range",
                format!("the {side} range is empty: from ({from} ms) must be before until ({until} ms)"),
            ));
        }
        Ok((from, until))
    };
    let labels = spec.labels.clone();
    if let Some(name) = labels.keys().chain(spec.label.iter()).find(|n| !crate::model::profile::valid_label_name(n)) {
        return Err(bad("bad_labels", format!("{side}: {name:?} is not a label name")));
    }
    match (&spec.label, &spec.value) {
        (Some(name), Some(value)) => {
            let (from_ms, until_ms) = range(from_ms, until_ms)?;
            Ok(Selection::Label { name: name.clone(), value: value.clone(), from_ms, until_ms, labels })
        }
        (None, None) => {
            if from_ms.is_none() || until_ms.is_none() {
                return Err(bad(
                    "empty_range",
                    format!("the {side} selection needs from and until (a time range), or label and value"),
                ));
            }
            let (from_ms, until_ms) = range(from_ms, until_ms)?;
            Ok(Selection::Range { from_ms, until_ms, labels })
        }
        _ => Err(bad("bad_selection", format!("{side}: give both label and value, or neither"))),
    }
}

fn store_query(service: &str, labels: &BTreeMap<String, String>, sel: &Selection) -> StoreQuery {
    let mut labels = labels.clone();
    labels.extend(sel.labels());
    StoreQuery {
        service: service.to_string(),
        profile_type: "cpu".to_string(),
        labels,
        from_ms: sel.from_ms(),
        until_ms: sel.until_ms(),
        states: vec![ThreadState::Runnable],
    }
}

/// Measures the win from the store: figures and the flame graph (or why there is none).
fn measure(
    state: &AppState,
    store: &dyn ProfileStore,
    new: &NewWin,
    now: i64,
) -> Result<(Win, Option<Png>, Option<String>), ApiError> {
    ensure_known(store, &new.service)?;
    let info = store
        .services()?
        .into_iter()
        .find(|s| s.name == new.service)
        .ok_or_else(|| ApiError::NotFound(format!("unknown service {:?}", new.service)))?;
    let before = selection(&new.before, "before", &info, now)?;
    let after = selection(&new.after, "after", &info, now)?;
    match (&before, &after) {
        (
            Selection::Range { until_ms: b_until, labels: b_labels, .. },
            Selection::Range { from_ms: a_from, labels: a_labels, .. },
        ) if a_from < b_until && b_labels == a_labels => {
            return Err(bad(
                "after_not_later",
                format!(
                    "the after range must start when the before range ends or later: after starts at {a_from} ms, before ends at {b_until} ms"
                ),
            ));
        }
        _ if before == after => {
            return Err(bad(
                "after_not_later",
                "before and after select the same profiles: compare two ranges or two label values",
            ));
        }
        _ => {}
    }
    let pattern = new.frame.as_deref().filter(|f| !f.trim().is_empty()).map(FramePattern::parse).transpose()?;
    let agg_before = store.aggregate(&store_query(&new.service, &new.labels, &before))?;
    let agg_after = store.aggregate(&store_query(&new.service, &new.labels, &after))?;
    for (side, agg) in [("before", &agg_before), ("after", &agg_after)] {
        if agg.profiles == 0 {
            return Err(bad(
                "no_samples",
                format!("the {side} selection has no profiles of {:?}: pick a range or label value in which it was profiled", new.service),
            ));
        }
    }
    let inputs = resolved(state, store, &new.service)?;
    let ctx_before = cost_context(inputs.clone(), &agg_before);
    let ctx_after = cost_context(inputs, &agg_after);
    let figures = report::compute(
        Side { aggregate: &agg_before, context: &ctx_before, requests: None },
        Side { aggregate: &agg_after, context: &ctx_after, requests: None },
        pattern.as_ref(),
        &WinOptions::default(),
    )?;
    let exposure = |c: &crate::cost::CostContext| c.window_seconds * c.profiled_hosts as f64;
    let title = format!("{}: {} → {}", new.service, before.describe(), after.describe());
    let (png, flame_error) =
        match report::differential_png(&agg_before, exposure(&ctx_before), &agg_after, exposure(&ctx_after), &title) {
            Ok(png) => (Some(png), None),
            Err(e) => {
                tracing::warn!(error = %e, "win without a flame graph");
                (None, Some(e.to_string()))
            }
        };
    let win = Win {
        id: None,
        service: new.service.clone(),
        title: new.title.trim().to_string(),
        description: new.description.trim().to_string(),
        shipped_by: new.shipped_by.clone().filter(|s| !s.trim().is_empty()),
        team: new.team.clone().filter(|s| !s.trim().is_empty()),
        before,
        after,
        figures,
        created_ms: now,
    };
    Ok((win, png, flame_error))
}

/// `POST /api/v1/wins`.
async fn create(State(state): State<AppState>, body: axum::body::Bytes) -> Result<Response, ApiError> {
    let new: NewWin = serde_json::from_slice(&body)
        .map_err(|e| bad("bad_json", format!("the body is not a win: {e}; see docs/api.md (POST /api/v1/wins)")))?;
    check_text(&new)?;
    if new.states.as_ref().is_some_and(|s| !s.contains(&ThreadState::Runnable)) {
        return Err(bad(
            "bad_states",
            "a win is measured on on-CPU samples: states must include RUNNABLE (or be left out)",
        ));
    }
    let st = state.clone();
    let (record, id) = with_store(&state, move |store| {
        let now = now_ms();
        let (win, png, flame_error) = measure(&st, store, &new, now)?;
        let mut recipients = st.config.wins.team_list(win.team.as_deref());
        for e in &new.emails {
            if !recipients.iter().any(|r| r.eq_ignore_ascii_case(e.trim())) {
                recipients.push(e.trim().to_string());
            }
        }
        let send = (!recipients.is_empty()).then(|| SendState::pending(recipients.clone(), now));
        let mut record = StoredWin {
            win,
            frame: new.frame.clone(),
            labels: new.labels.clone(),
            recipients,
            send,
            flame_png: png.map(|p| base64::engine::general_purpose::STANDARD.encode(p.bytes)),
            flame_error,
        };
        if new.dry_run {
            return Ok((record, None));
        }
        let json = serde_json::to_string(&record).map_err(|e| ApiError::Internal(e.to_string()))?;
        let id = store.create_win(&json)?;
        record.win.id = Some(id);
        Ok((record, Some(id)))
    })
    .await?;
    let config = &state.config.wins;
    match id {
        None => {
            let mut answer = record.answer(config);
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
                outbox::spawn_send(state.clone(), id);
            }
            let mut response = (StatusCode::CREATED, Json(record.answer(config))).into_response();
            if let Ok(location) = HeaderValue::from_str(&format!("/api/v1/wins/{id}")) {
                response.headers_mut().insert(header::LOCATION, location);
            }
            Ok(response)
        }
    }
}

fn data_url(record: &StoredWin) -> String {
    format!("data:image/png;base64,{}", record.flame_png.as_deref().unwrap_or_default())
}

/// Loads win `id` or answers 404.
pub(crate) fn load(store: &dyn ProfileStore, id: i64) -> Result<StoredWin, ApiError> {
    let json =
        store.win(id)?.ok_or_else(|| ApiError::NotFound(format!("no win {id}: GET /api/v1/wins lists the ledger")))?;
    let mut record: StoredWin =
        serde_json::from_str(&json).map_err(|e| ApiError::Internal(format!("stored win {id} does not parse: {e}")))?;
    record.win.id = Some(id);
    Ok(record)
}

/// Saves win `id`.
pub(crate) fn save(store: &dyn ProfileStore, id: i64, record: &StoredWin) -> Result<(), ApiError> {
    let json = serde_json::to_string(record).map_err(|e| ApiError::Internal(e.to_string()))?;
    if store.update_win(id, &json)? {
        Ok(())
    } else {
        Err(ApiError::NotFound(format!("no win {id}")))
    }
}

async fn load_async(state: &AppState, id: i64) -> Result<StoredWin, ApiError> {
    with_store(state, move |store| load(store, id)).await
}

/// `GET /api/v1/wins/{id}`.
async fn show(State(state): State<AppState>, Path(id): Path<i64>) -> Result<Response, ApiError> {
    let record = load_async(&state, id).await?;
    Ok(Json(record.answer(&state.config.wins)).into_response())
}

/// `GET /api/v1/wins/{id}/report.html`: the email's HTML, the image inline as data.
async fn report_html(State(state): State<AppState>, Path(id): Path<i64>) -> Result<Response, ApiError> {
    let record = load_async(&state, id).await?;
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
    let record = load_async(&state, id).await?;
    match record.png() {
        Some(png) => Ok(([(header::CONTENT_TYPE, HeaderValue::from_static("image/png"))], png.bytes).into_response()),
        None => Err(ApiError::NotFound(format!(
            "win {id} has no flame graph: {}",
            record.flame_error.as_deref().unwrap_or("it was not rendered")
        ))),
    }
}

/// `POST /api/v1/wins/{id}/send`: sends the report again (to the same recipients).
async fn resend(State(state): State<AppState>, Path(id): Path<i64>) -> Result<Response, ApiError> {
    let record = with_store(&state, move |store| {
        let mut record = load(store, id)?;
        if record.recipients.is_empty() {
            return Err(bad(
                "bad_email",
                format!("win {id} has no recipients: its team has no ops_win_list and no emails were given"),
            ));
        }
        record.send = Some(SendState::pending(record.recipients.clone(), now_ms()));
        save(store, id, &record)?;
        Ok(record)
    })
    .await?;
    outbox::spawn_send(state.clone(), id);
    Ok((StatusCode::ACCEPTED, Json(record.answer(&state.config.wins))).into_response())
}

/// Sums of significant savings.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
struct Total {
    usd_per_year: f64,
    kg_co2_per_year: f64,
    cores: f64,
    wins: u64,
}

impl Total {
    fn add(&mut self, w: &Win) {
        let s = &w.figures.saving;
        self.usd_per_year += s.usd_per_year;
        self.kg_co2_per_year += s.kg_co2_per_year;
        self.cores += s.cores;
        self.wins += 1;
    }
}

/// `GET /api/v1/wins`: every win (newest first) and the running totals.
async fn list(State(state): State<AppState>) -> Result<Response, ApiError> {
    let rows = with_store(&state, |store| Ok(store.wins()?)).await?;
    let config = &state.config.wins;
    let mut total = Total::default();
    let mut by_team: BTreeMap<String, Total> = BTreeMap::new();
    let mut by_service: BTreeMap<String, Total> = BTreeMap::new();
    let mut wins = Vec::with_capacity(rows.len());
    let mut not_counted = 0u64;
    for (id, json) in rows.into_iter().rev() {
        let mut record: StoredWin = match serde_json::from_str(&json) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(win = id, error = %e, "stored win does not parse; left out of the list");
                continue;
            }
        };
        record.win.id = Some(id);
        let s = &record.win.figures.saving;
        // The ripple effect counts only savings that noise cannot explain.
        if s.significant && s.usd_per_year > 0.0 {
            total.add(&record.win);
            by_team.entry(record.win.team.clone().unwrap_or_else(|| "(no team)".into())).or_default().add(&record.win);
            by_service.entry(record.win.service.clone()).or_default().add(&record.win);
        } else {
            not_counted += 1;
        }
        record.win.figures.frames.truncate(3);
        wins.push(record.answer(config));
    }
    Ok(Json(serde_json::json!({
        "wins": wins,
        "total": total,
        "byTeam": by_team,
        "byService": by_service,
        "notCounted": not_counted,
        "note": "Totals count wins whose saving is positive and significant at 95%; the others are listed but not counted.",
    }))
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn png_size_reads_ihdr() {
        let png = report::svg_to_png(r#"<svg xmlns="http://www.w3.org/2000/svg" width="30" height="20"><rect width="30" height="20" fill="red"/></svg>"#)
            .unwrap();
        assert_eq!(png_size(&png.bytes), Some((30, 20)));
        assert_eq!(png_size(b"GIF89a"), None);
    }

    #[test]
    fn selections_are_checked() {
        let info = ServiceInfo {
            name: "s".into(),
            profile_types: vec![],
            labels: BTreeMap::new(),
            first_ms: 1_000,
            last_ms: 9_000,
            profiles: 1,
        };
        let spec = |from: Option<i64>, until: Option<i64>, label: Option<&str>, value: Option<&str>| SelectionSpec {
            from: from.map(TimeArg::Number),
            until: until.map(TimeArg::Number),
            label: label.map(String::from),
            value: value.map(String::from),
            labels: BTreeMap::new(),
        };
        let now = 10_000_000_000_000;
        assert_eq!(
            selection(&spec(Some(1_700_000_000), Some(1_700_000_060), None, None), "before", &info, now).unwrap(),
            Selection::Range { from_ms: 1_700_000_000_000, until_ms: 1_700_000_060_000, labels: BTreeMap::new() }
        );
        let label = selection(&spec(None, None, Some("version"), Some("1.4")), "after", &info, now).unwrap();
        assert_eq!(
            label,
            Selection::Label {
                name: "version".into(),
                value: "1.4".into(),
                from_ms: 1_000,
                until_ms: 9_001,
                labels: BTreeMap::new()
            }
        );
        let empty =
            selection(&spec(Some(1_700_000_060), Some(1_700_000_000), None, None), "before", &info, now).unwrap_err();
        assert!(empty.to_string().contains("before range is empty"), "{empty}");
        assert!(selection(&spec(None, None, None, None), "after", &info, now).is_err());
        assert!(selection(&spec(None, None, Some("version"), None), "after", &info, now).is_err());
        assert!(selection(&spec(None, None, Some("bad label"), Some("x")), "after", &info, now).is_err());
    }
}
