//! One HTTP exchange with the server's native ingest: an `Envelope` (service, labels,
//! gzip pprof body) goes out as `POST {server}/api/v1/profiles?service=..&label.k=v`,
//! and the answer comes back classified as stored, worth retrying, or refused.
//!
//! In: an envelope and a `ureq::Agent`. Out: `SendOutcome`. Must not: sleep, retry or
//! queue (the worker decides that).

use crate::model::Profile;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// A profile ready to send: where it goes (service, labels) and its gzip pprof body.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    /// Routing metadata, kept as JSON in spool files.
    pub meta: EnvelopeMeta,
    /// gzip-compressed pprof bytes.
    pub body: Vec<u8>,
}

/// Where an envelope goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvelopeMeta {
    /// Service name (`service=` query parameter).
    pub service: String,
    /// Labels sent as `label.<k>=<v>` query parameters.
    pub labels: BTreeMap<String, String>,
}

impl Envelope {
    /// Encodes `profile` as gzip pprof with its service and labels as routing metadata.
    /// gzip at its fastest level: a host-wide agent compresses a profile per process every
    /// interval (docs/agent.md, "Host-wide agent overhead").
    pub fn from_profile(profile: &Profile) -> Envelope {
        let pprof = crate::model::pprof::encode(profile);
        Envelope {
            meta: EnvelopeMeta { service: profile.service.clone(), labels: profile.labels.clone() },
            body: crate::model::pprof::gzip_at(&pprof, flate2::Compression::fast()),
        }
    }
}

/// How one request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendOutcome {
    /// 2xx: the server has stored the profile.
    Stored,
    /// Network error, 429, 408 or 5xx: try again later (after `retry_after` if the
    /// server said so).
    Retry {
        /// The server's `Retry-After`, when it sent one in seconds.
        retry_after: Option<Duration>,
        /// What went wrong, for logs.
        reason: String,
    },
    /// Any other answer (400, 401, 403, 413...): sending the same bytes again would fail
    /// the same way.
    Refused {
        /// HTTP status.
        status: u16,
        /// The server's error message.
        reason: String,
    },
}

/// The most of a 2xx answer read (the server acknowledges a profile in a few bytes).
const ACK_MAX_BYTES: u64 = 64 << 10;

/// Builds the blocking HTTP client used for uploads.
pub fn client(connect_timeout: Duration, request_timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(connect_timeout))
        .timeout_global(Some(request_timeout))
        .user_agent(concat!("hotframe-agent/", env!("CARGO_PKG_VERSION")))
        .build()
        .into()
}

/// Sends one envelope to `server` (base URL) and classifies the answer.
pub fn send(client: &ureq::Agent, server: &str, token: Option<&str>, envelope: &Envelope) -> SendOutcome {
    let url = format!("{}/api/v1/profiles", server.trim_end_matches('/'));
    let mut request = client
        .post(&url)
        .query("service", &envelope.meta.service)
        .header("Content-Type", "application/octet-stream")
        .header("Content-Encoding", "gzip");
    for (k, v) in &envelope.meta.labels {
        request = request.query(format!("label.{k}"), v);
    }
    if let Some(token) = token {
        request = request.header("Authorization", format!("Bearer {token}"));
    }
    let mut response = match request.send(&envelope.body[..]) {
        Ok(response) => response,
        Err(err) => return SendOutcome::Retry { retry_after: None, reason: err.to_string() },
    };
    let status = response.status().as_u16();
    if (200..300).contains(&status) {
        // Read to its end, the connection goes back to the client's pool for the next
        // profile (dropped unread, it was closed: a TCP connect per profile, host-wide
        // hundreds every interval).
        let _ = response.body_mut().with_config().limit(ACK_MAX_BYTES).read_to_vec();
        return SendOutcome::Stored;
    }
    let retry_after = response.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(parse_retry_after);
    let body = response.body_mut().with_config().limit(4096).read_to_string().unwrap_or_default();
    let reason = error_message(status, &body);
    if status == 429 || status == 408 || status >= 500 {
        SendOutcome::Retry { retry_after, reason }
    } else {
        SendOutcome::Refused { status, reason }
    }
}

/// `Retry-After` in delta-seconds (what hotframe's server sends). HTTP dates are not
/// parsed: the caller's own backoff applies then.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let secs: f64 = value.trim().parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(86_400.0)))
}

/// "the server answered 413: profile over 16 MiB", using the JSON `error` field when
/// there is one.
fn error_message(status: u16, body: &str) -> String {
    #[derive(Deserialize)]
    struct ApiError {
        error: String,
    }
    let detail = serde_json::from_str::<ApiError>(body)
        .map(|e| e.error)
        .unwrap_or_else(|_| body.trim().chars().take(200).collect());
    if detail.is_empty() {
        format!("the server answered {status}")
    } else {
        format!("the server answered {status}: {detail}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[test]
    fn retry_after_accepts_seconds_only() {
        assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after(" 0.5 "), Some(Duration::from_millis(500)));
        assert_eq!(parse_retry_after("-1"), None);
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }

    #[test]
    fn error_message_prefers_the_json_error_field() {
        assert_eq!(
            error_message(413, r#"{"error":"profile over 16 MiB","reason":"body_too_large"}"#),
            "the server answered 413: profile over 16 MiB"
        );
        assert_eq!(error_message(500, ""), "the server answered 500");
    }

    /// Answers every request of every connection with 200 and a JSON body (HTTP/1.1,
    /// keep-alive); counts the connections. Beside the real server's tests in
    /// tests/it/upload.rs: only the client's connection reuse is checked here.
    fn counting_http_server() -> (String, Arc<AtomicUsize>) {
        use std::io::{BufRead, BufReader, Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let connections = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&connections);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                counted.fetch_add(1, Ordering::SeqCst);
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    let mut writer = stream;
                    loop {
                        let mut length = 0usize;
                        loop {
                            let mut line = String::new();
                            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                                return;
                            }
                            let lower = line.to_ascii_lowercase();
                            if let Some(v) = lower.strip_prefix("content-length:") {
                                length = v.trim().parse().unwrap();
                            }
                            if line == "\r\n" {
                                break;
                            }
                        }
                        let mut body = vec![0u8; length];
                        reader.read_exact(&mut body).unwrap();
                        let ack = r#"{"stored":1}"#;
                        let answer = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{ack}", ack.len());
                        writer.write_all(answer.as_bytes()).unwrap();
                    }
                });
            }
        });
        (url, connections)
    }

    #[test]
    fn profiles_sent_one_after_another_share_one_connection() {
        let (url, connections) = counting_http_server();
        let client = client(Duration::from_secs(5), Duration::from_secs(5));
        let mut b = crate::model::ProfileBuilder::new("svc", 0, 10_000, 10_000_000);
        b.add(&["main", "work"], crate::model::ThreadState::Runnable, 3);
        let envelope = Envelope::from_profile(&b.finish());
        for _ in 0..5 {
            assert_eq!(send(&client, &url, None, &envelope), SendOutcome::Stored);
        }
        assert_eq!(connections.load(Ordering::SeqCst), 1, "one kept-alive connection for five profiles");
    }
}
