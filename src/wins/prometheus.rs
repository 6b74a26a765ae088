//! The request counter of a win, from Prometheus: a PromQL expression in which
//! `$__range` stands for the length of a window (`sum(increase(http_requests_total{job=
//! "checkout"}[$__range]))`), evaluated at the window's end through the HTTP API
//! (`GET /api/v1/query`), with bounded timeouts.
//!
//! In: the `[prometheus]` settings, an expression, a window. Out: the number of
//! requests, or an error that says what to check. Must not: retry, cache, or return a
//! number for an expression that selected no series (that is a typo, not zero work).

use super::WinsError;
use crate::model::Reason;
use serde::Deserialize;
use std::time::Duration;

/// The `[prometheus]` section of the config file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrometheusConfig {
    /// Base URL of the Prometheus server, `http://HOST:PORT` (no TLS).
    pub url: String,
    /// Whole time a query may take, seconds. Default 10.
    #[serde(default = "default_timeout")]
    pub timeout_seconds: f64,
}

fn default_timeout() -> f64 {
    10.0
}

impl PrometheusConfig {
    /// Checks the URL and the timeout.
    pub fn check(&self) -> Result<(), String> {
        if !self.url.starts_with("http://") {
            return Err(format!("[prometheus] url {:?} must start with http:// (this client speaks no TLS)", self.url));
        }
        if !(self.timeout_seconds > 0.0 && self.timeout_seconds <= 300.0) {
            return Err(format!("[prometheus] timeout_seconds {} must be in (0, 300]", self.timeout_seconds));
        }
        Ok(())
    }
}

/// A blocking client of one Prometheus server.
#[derive(Debug, Clone)]
pub struct Prometheus {
    base: String,
    agent: ureq::Agent,
}

#[derive(Deserialize)]
struct Answer {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Data {
    result_type: String,
    result: serde_json::Value,
}

fn failed(message: String) -> WinsError {
    WinsError::Prometheus(message)
}

/// `$__range` as a PromQL duration: whole seconds when it is, else milliseconds.
pub fn range_literal(range_ms: i64) -> String {
    let ms = range_ms.max(1);
    if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// The number in a `[time, "value"]` pair.
fn sample_value(pair: &serde_json::Value) -> Option<f64> {
    let v: f64 = pair.get(1)?.as_str()?.parse().ok()?;
    v.is_finite().then_some(v)
}

impl Prometheus {
    /// A client of `config.url`.
    pub fn new(config: &PrometheusConfig) -> Prometheus {
        let timeout = Duration::from_secs_f64(config.timeout_seconds);
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(timeout.min(Duration::from_secs(5))))
            .timeout_global(Some(timeout))
            .user_agent(concat!("hotframe/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Prometheus { base: config.url.trim_end_matches('/').to_string(), agent }
    }

    /// The value of `expr` over the window `[from_ms, until_ms)`: `$__range` replaced
    /// by its length, evaluated at `until_ms`; a vector's samples are summed.
    pub fn window_value(&self, expr: &str, from_ms: i64, until_ms: i64) -> Result<f64, WinsError> {
        let query = expr.replace("$__range", &range_literal(until_ms - from_ms));
        let url = format!("{}/api/v1/query", self.base);
        let time = format!("{:.3}", until_ms as f64 / 1000.0);
        let mut response =
            self.agent.get(&url).query("query", &query).query("time", &time).call().map_err(|e| {
                failed(format!("Prometheus at {} is unreachable: {e}; check [prometheus] url", self.base))
            })?;
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .with_config()
            .limit(4 << 20)
            .read_to_string()
            .map_err(|e| failed(format!("reading Prometheus's answer failed: {e}")))?;
        let answer: Answer = serde_json::from_str(&body).map_err(|_| {
            failed(format!("Prometheus at {} answered {status} with something that is not its API's JSON", self.base))
        })?;
        if answer.status != "success" {
            return Err(WinsError::invalid(
                Reason::BadRequestsQuery,
                format!(
                    "Prometheus refused the request counter {query:?}: {}",
                    answer.error.unwrap_or_else(|| format!("status {status}"))
                ),
            ));
        }
        let data = answer.data.ok_or_else(|| failed("Prometheus answered success without data".into()))?;
        let value = match data.result_type.as_str() {
            "scalar" => sample_value(&data.result),
            "vector" => {
                let series = data.result.as_array().map(Vec::as_slice).unwrap_or_default();
                if series.is_empty() {
                    return Err(WinsError::invalid(
                        Reason::BadRequestsQuery,
                        format!(
                            "the request counter {query:?} selected no series at {time}: check the metric name and labels in Prometheus"
                        ),
                    ));
                }
                series.iter().map(|s| s.get("value").and_then(sample_value)).sum::<Option<f64>>()
            }
            other => {
                return Err(WinsError::invalid(
                    Reason::BadRequestsQuery,
                    format!("the request counter must give a number or an instant vector, not a {other}: wrap it in sum(increase(...[$__range]))"),
                ))
            }
        };
        value.ok_or_else(|| failed(format!("Prometheus's answer to {query:?} holds no number")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_literals_and_config_checks() {
        assert_eq!(range_literal(600_000), "600s");
        assert_eq!(range_literal(1_500), "1500ms");
        let ok = PrometheusConfig { url: "http://127.0.0.1:9090".into(), timeout_seconds: 10.0 };
        assert!(ok.check().is_ok());
        assert!(PrometheusConfig { url: "https://x".into(), ..ok.clone() }.check().unwrap_err().contains("http://"));
        assert!(PrometheusConfig { timeout_seconds: 0.0, ..ok }.check().is_err());
    }

    #[test]
    fn an_unreachable_prometheus_is_a_clear_error() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let p = Prometheus::new(&PrometheusConfig { url: format!("http://127.0.0.1:{port}"), timeout_seconds: 2.0 });
        let err = p.window_value("sum(increase(x[$__range]))", 0, 60_000).unwrap_err();
        assert!(matches!(err, WinsError::Prometheus(_)), "{err}");
        assert!(err.to_string().contains("unreachable"), "{err}");
    }
}
