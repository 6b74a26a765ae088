//! `hotframe win`: records an ops win through `POST /api/v1/wins` (or only computes it
//! with `--dry-run`), prints the saving and the win's URL, and writes the report's HTML
//! with `--out`.
//!
//! In: a `WinConfig` (`cli` builds it from the flags). Out: a few lines on stdout, the report file. Must not: compute
//! figures itself (the server owns the profiles and the cost settings) or hide the
//! server's error message.

use super::{agent, authorized, endpoint, finish, label_pairs, server_url, ClientError, DEFAULT_SERVER};
use crate::model::time::parse_time;
use crate::report::format_usd;
use serde_json::{json, Value};
use std::io::Write;
use std::path::PathBuf;

/// What `hotframe win` records.
#[derive(Debug, Clone, PartialEq)]
pub struct WinConfig {
    /// Server base URL. Default `DEFAULT_SERVER`.
    pub server: String,
    /// Service the win is about. No default (empty).
    pub service: String,
    /// Before: `FROM..UNTIL` (Unix s/ms, `now-2d`, ...) or `LABEL=VALUE`. No default (empty).
    pub before: String,
    /// After: `FROM..UNTIL` or `LABEL=VALUE`. No default (empty).
    pub after: String,
    /// One line: what was done. No default (empty).
    pub title: String,
    /// What changed and why. Default empty.
    pub description: String,
    /// Frames the win is about: a substring of the name, or `/regex/`. Default all.
    pub frame: Option<String>,
    /// Label filters `k=v` on both sides. Default none.
    pub labels: Vec<String>,
    /// Who shipped it. Default none.
    pub shipped_by: Option<String>,
    /// Team credited (its ops_win_list gets the report). Default none.
    pub team: Option<String>,
    /// Extra recipients. Default none.
    pub emails: Vec<String>,
    /// PromQL counting the work of each window (`$__range` = the side's length). Default none.
    pub requests_query: Option<String>,
    /// Count the win in the totals even if not normalised per unit of work. Default false.
    pub include_in_totals: bool,
    /// Compute and show the report without storing or sending it. Default false.
    pub dry_run: bool,
    /// Write the report's HTML here. Default none.
    pub out: Option<PathBuf>,
    /// Bearer token (admin scope when the server has tokens). Default none.
    pub token: Option<String>,
}

impl Default for WinConfig {
    fn default() -> Self {
        WinConfig {
            server: DEFAULT_SERVER.to_string(),
            service: String::new(),
            before: String::new(),
            after: String::new(),
            title: String::new(),
            description: String::new(),
            frame: None,
            labels: Vec::new(),
            shipped_by: None,
            team: None,
            emails: Vec::new(),
            requests_query: None,
            include_in_totals: false,
            dry_run: false,
            out: None,
            token: None,
        }
    }
}

/// A `--before` / `--after` value as the API's selection object.
fn selection(flag: &str, text: &str) -> Result<Value, ClientError> {
    if let Some((from, until)) = text.split_once("..") {
        // Checked here so a typo fails before any network traffic; the server reads them
        // again against its own clock.
        parse_time(from)?;
        parse_time(until)?;
        return Ok(json!({ "from": from.trim(), "until": until.trim() }));
    }
    if let Some((label, value)) = text.split_once('=') {
        if !label.trim().is_empty() && !value.trim().is_empty() {
            return Ok(json!({ "label": label.trim(), "value": value.trim() }));
        }
    }
    Err(ClientError::Args(format!(
        "--{flag} {text:?}: give FROM..UNTIL (e.g. now-2d..now-1d, or Unix times) or LABEL=VALUE (e.g. version=1.4)"
    )))
}

/// The request body of `config`.
fn body(config: &WinConfig) -> Result<Value, ClientError> {
    let labels: serde_json::Map<String, Value> =
        label_pairs(&config.labels)?.into_iter().map(|(k, v)| (k, Value::String(v))).collect();
    Ok(json!({
        "service": config.service,
        "title": config.title,
        "description": config.description,
        "before": selection("before", &config.before)?,
        "after": selection("after", &config.after)?,
        "frame": config.frame,
        "labels": labels,
        "shippedBy": config.shipped_by,
        "team": config.team,
        "emails": config.emails,
        "requestsQuery": config.requests_query,
        "includeInTotals": config.include_in_totals,
        "dryRun": config.dry_run,
    }))
}

fn number(v: &Value, path: &[&str]) -> f64 {
    path.iter().try_fold(v, |v, k| v.get(k)).and_then(Value::as_f64).unwrap_or(0.0)
}

/// What `hotframe win` prints about the server's answer.
fn summary(server: &str, win: &Value, dry_run: bool) -> String {
    let saving = &win["figures"]["saving"];
    let mut out = format!(
        "{}: {} per year, {:.0} kg CO2 per year ({:.3} cores); 95% range {} to {}{}\n",
        win["title"].as_str().unwrap_or("win"),
        format_usd(number(saving, &["usdPerYear"])),
        number(saving, &["kgCo2PerYear"]),
        number(saving, &["cores"]),
        format_usd(number(saving, &["usdLow"])),
        format_usd(number(saving, &["usdHigh"])),
        if saving["significant"].as_bool().unwrap_or(false) {
            ""
        } else {
            " — NOT significant (sampling noise, the variation between intervals or a change of traffic could explain it)"
        },
    );
    if let Some(normalization) = win["figures"]["normalization"].as_str() {
        out.push_str(&format!(
            "normalised: {normalization} ({})\n",
            win["figures"]["normalizationReason"].as_str().unwrap_or("no reason given")
        ));
    }
    out.push_str(&format!(
        "CPU cores per host: {:.3} -> {:.3} ({})\n",
        number(win, &["figures", "before", "coresPerHost"]),
        number(win, &["figures", "after", "coresPerHost"]),
        win["figures"]["scope"].as_str().unwrap_or(""),
    ));
    if dry_run {
        out.push_str("dry run: nothing was stored or sent\n");
        return out;
    }
    if let Some(url) = win["url"].as_str() {
        let url = if url.starts_with('/') { endpoint(server, url) } else { url.to_string() };
        out.push_str(&format!("win {}: {url}\n", win["id"]));
    }
    let recipients: Vec<&str> = win["recipients"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    if recipients.is_empty() {
        out.push_str("no email: the team has no ops_win_list and no --email was given\n");
    } else {
        out.push_str(&format!(
            "report queued for {} (the server sends it and retries on failure)\n",
            recipients.join(", ")
        ));
    }
    out
}

/// Runs `hotframe win`.
pub fn run(config: WinConfig) -> Result<(), ClientError> {
    let server = server_url(&config.server)?;
    let body = body(&config)?;
    let url = endpoint(&server, "/api/v1/wins");
    let request = authorized(agent().post(&url).header("Content-Type", "application/json"), &config.token);
    let answer = finish(&url, request.send(body.to_string().as_bytes()))?;
    let win: Value = serde_json::from_slice(&answer).map_err(|e| ClientError::Answer(e.to_string()))?;
    if let Some(path) = &config.out {
        let html = match win["reportHtml"].as_str() {
            Some(html) => html.as_bytes().to_vec(),
            None => {
                let id = win["id"].as_i64().ok_or_else(|| ClientError::Answer("the answer has no win id".into()))?;
                let report = endpoint(&server, &format!("/api/v1/wins/{id}/report.html"));
                finish(&report, authorized(agent().get(&report), &config.token).call())?
            }
        };
        std::fs::write(path, html).map_err(|source| ClientError::Write { path: path.display().to_string(), source })?;
    }
    let mut out = std::io::stdout().lock();
    out.write_all(summary(&server, &win, config.dry_run).as_bytes())
        .and_then(|_| out.flush())
        .map_err(|source| ClientError::Write { path: "stdout".into(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selections_parse() {
        assert_eq!(selection("before", "now-2d..now-1d").unwrap(), json!({"from": "now-2d", "until": "now-1d"}));
        assert_eq!(selection("after", "version=1.5").unwrap(), json!({"label": "version", "value": "1.5"}));
        let err = selection("before", "yesterday").unwrap_err().to_string();
        assert!(err.contains("--before") && err.contains("FROM..UNTIL"), "{err}");
        assert!(selection("before", "now-1x..now").is_err());
        assert!(selection("before", "=1.5").is_err());
    }

    #[test]
    fn summary_says_what_matters() {
        let win = json!({
            "id": 3, "title": "Cache regexes", "url": "/wins/3", "recipients": ["ops@example.com"],
            "figures": {"saving": {"usdPerYear": 41312.4, "kgCo2PerYear": 1200.0, "cores": 9.4, "usdLow": 40000.0, "usdHigh": 42000.0, "significant": true},
                        "before": {"coresPerHost": 0.5}, "after": {"coresPerHost": 0.31}, "scope": "all on-CPU time of the service"}
        });
        let text = summary("http://127.0.0.1:4040/", &win, false);
        assert!(text.contains("$41,312 per year"), "{text}");
        assert!(text.contains("win 3: http://127.0.0.1:4040/wins/3"), "{text}");
        assert!(text.contains("ops@example.com"), "{text}");
        assert!(!text.contains("NOT significant"));
        assert!(summary("http://x", &win, true).contains("dry run"));
    }
}
