//! Sending a report: the MIME message (plain text + HTML with the flame graph as an
//! inline PNG), SMTP through lettre (plain, STARTTLS or TLS, optional auth), and retry
//! with exponential backoff and full jitter.
//!
//! In: a `RenderedReport`, the PNG, recipient addresses, an `SmtpConfig`, a
//! `RetryPolicy`. Out: a sent message, or a `ReportError`; each attempt updates a
//! `SendState` that the caller keeps (and stores, so a pending send survives a
//! restart). Must not: put user text into a header other than through lettre's typed
//! headers (which encode CR/LF instead of passing them through); addresses with
//! control characters are refused.

use super::flame::Png;
use super::render::{one_line, RenderedReport, FLAME_CONTENT_ID};
use super::ReportError;
use lettre::message::{header::ContentType, Attachment, Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{Message, SmtpTransport, Transport};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Where and as whom mail is sent.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct SmtpConfig {
    /// `smtp://host:port` (plain), `smtp://host:587?tls=required` (STARTTLS),
    /// `smtp://host?tls=opportunistic`, or `smtps://host:465` (TLS).
    pub url: String,
    /// The From address, e.g. `hotframe <hotframe@example.com>`.
    pub from: String,
    /// SMTP user name, when the server needs authentication.
    #[serde(default)]
    pub username: Option<String>,
    /// SMTP password (used only with `username`).
    #[serde(default)]
    pub password: Option<String>,
    /// Connect and command timeout, seconds. Default 20.
    #[serde(default)]
    pub timeout_secs: Option<u64>,
    /// PEM file of a CA (or a self-signed server certificate) to trust for TLS, for an
    /// internal relay; the public web roots are trusted as well.
    #[serde(default)]
    pub ca_file: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for SmtpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpConfig")
            .field("url", &redact(&self.url))
            .field("from", &self.from)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("timeout_secs", &self.timeout_secs)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

/// The URL with any `user:password@` replaced, for logs and errors.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***@{}", &url[..s], &url[at + 1..]),
        _ => url.to_string(),
    }
}

/// Parses one address (`a@b.c` or `Name <a@b.c>`), refusing control characters so
/// that nothing after a line break can be taken for a header.
pub fn parse_mailbox(address: &str) -> Result<Mailbox, ReportError> {
    let bad = |reason: &str| ReportError::BadAddress { address: address.to_string(), reason: reason.to_string() };
    if address.chars().any(char::is_control) {
        return Err(bad("it contains a line break or another control character"));
    }
    let trimmed = address.trim();
    if trimmed.is_empty() {
        return Err(bad("it is empty"));
    }
    let mailbox: Mailbox = trimmed.parse().map_err(|e| bad(&format!("{e}; write it as name@example.com")))?;
    // lettre's parser ignores trailing text; refuse it rather than drop it silently.
    let email: &str = mailbox.email.as_ref();
    if !trimmed.contains(email) || trimmed.split_whitespace().filter(|w| w.contains('@')).count() > 1 {
        return Err(bad("it holds more than one address; give each address separately"));
    }
    Ok(mailbox)
}

/// `Auto-Submitted: auto-generated` (RFC 3834): out-of-office replies from a whole
/// ops-win list must not answer a report.
#[derive(Debug, Clone, Copy)]
struct AutoSubmitted;

impl lettre::message::header::Header for AutoSubmitted {
    fn name() -> lettre::message::header::HeaderName {
        lettre::message::header::HeaderName::new_from_ascii_str("Auto-Submitted")
    }

    fn parse(_: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(AutoSubmitted)
    }

    fn display(&self) -> lettre::message::header::HeaderValue {
        lettre::message::header::HeaderValue::new(Self::name(), "auto-generated".to_string())
    }
}

/// The Subject, shown literally by mail clients: lettre encodes only non-ASCII text, so
/// an ASCII title that looks like an RFC 2047 encoded word (`=?utf-8?b?...?=`) would
/// reach clients as is, and they would decode it. Such a subject is sent as base64
/// encoded words itself.
#[derive(Clone)]
struct LiteralSubject(String);

impl lettre::message::header::Header for LiteralSubject {
    fn name() -> lettre::message::header::HeaderName {
        lettre::message::header::HeaderName::new_from_ascii_str("Subject")
    }

    fn parse(s: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(LiteralSubject(s.to_string()))
    }

    fn display(&self) -> lettre::message::header::HeaderValue {
        use lettre::message::header::HeaderValue;
        if !self.0.contains("=?") {
            return HeaderValue::new(Self::name(), self.0.clone());
        }
        HeaderValue::dangerous_new_pre_encoded(Self::name(), self.0.clone(), encoded_words(&self.0))
    }
}

/// `text` as RFC 2047 base64 encoded words of at most 75 characters, folded.
fn encoded_words(text: &str) -> String {
    use base64::Engine;
    // 45 bytes of text make 60 of base64: `=?utf-8?b?` + 60 + `?=` stays under 75.
    let mut words = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let mut end = rest.len().min(45);
        while !rest.is_char_boundary(end) {
            end -= 1;
        }
        let (chunk, tail) = rest.split_at(end);
        words.push(format!("=?utf-8?b?{}?=", base64::engine::general_purpose::STANDARD.encode(chunk)));
        rest = tail;
    }
    words.join("\r\n ")
}

/// Builds the email: `multipart/alternative` of the plain text and a
/// `multipart/related` HTML part whose `cid:` image is the flame graph PNG.
/// Recipients are de-duplicated; at least one is needed.
pub fn build_message(
    from: &Mailbox,
    to: &[String],
    report: &RenderedReport,
    png: Option<&Png>,
) -> Result<Message, ReportError> {
    let mut recipients: Vec<Mailbox> = Vec::new();
    for address in to {
        let mailbox = parse_mailbox(address)?;
        if !recipients.iter().any(|m| m.email == mailbox.email) {
            recipients.push(mailbox);
        }
    }
    if recipients.is_empty() {
        return Err(ReportError::NoRecipients);
    }
    let mut builder =
        Message::builder().from(from.clone()).header(LiteralSubject(one_line(&report.subject))).header(AutoSubmitted);
    for mailbox in recipients {
        builder = builder.to(mailbox);
    }
    let html = SinglePart::html(report.html.clone());
    let body = match png {
        Some(png) => {
            let content_type =
                ContentType::parse("image/png").map_err(|e| ReportError::Message(format!("content type: {e}")))?;
            MultiPart::related()
                .singlepart(html)
                .singlepart(Attachment::new_inline(FLAME_CONTENT_ID.to_string()).body(png.bytes.clone(), content_type))
        }
        None => MultiPart::related().singlepart(html),
    };
    builder
        .multipart(MultiPart::alternative().singlepart(SinglePart::plain(report.text.clone())).multipart(body))
        .map_err(|e| ReportError::Message(e.to_string()))
}

/// An SMTP client for one configuration.
pub struct Mailer {
    transport: SmtpTransport,
    from: Mailbox,
    url: String,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer").field("url", &self.url).field("from", &self.from.to_string()).finish()
    }
}

impl Mailer {
    /// Checks the configuration and builds the client (no connection is made yet).
    pub fn new(config: &SmtpConfig) -> Result<Mailer, ReportError> {
        let url = redact(&config.url);
        let bad = |reason: String| ReportError::BadSmtpUrl { url: url.clone(), reason };
        if !(config.url.starts_with("smtp://") || config.url.starts_with("smtps://")) {
            return Err(bad("the scheme must be smtp:// or smtps://".to_string()));
        }
        let from = parse_mailbox(&config.from)?;
        let mut builder = SmtpTransport::from_url(&config.url).map_err(|e| bad(e.to_string()))?;
        if let Some(path) = &config.ca_file {
            builder = builder.tls(tls_with_ca(&config.url, path).map_err(bad)?);
        }
        if let Some(user) = &config.username {
            builder = builder.credentials(Credentials::new(user.clone(), config.password.clone().unwrap_or_default()));
        }
        let timeout = Duration::from_secs(config.timeout_secs.unwrap_or(20).max(1));
        Ok(Mailer { transport: builder.timeout(Some(timeout)).build(), from, url })
    }

    /// The From mailbox.
    pub fn from(&self) -> &Mailbox {
        &self.from
    }

    /// One delivery attempt.
    pub fn send(&self, message: &Message) -> Result<(), ReportError> {
        match self.transport.send(message) {
            Ok(_) => Ok(()),
            Err(e) => {
                Err(ReportError::Send { url: self.url.clone(), reason: error_chain(&e), permanent: e.is_permanent() })
            }
        }
    }
}

/// The TLS mode the URL asks for, trusting the CA in `path` besides the web roots.
fn tls_with_ca(url: &str, path: &std::path::Path) -> Result<Tls, String> {
    let (scheme, rest) = url.split_once("://").ok_or("no scheme")?;
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = match host_port.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host_port.split(':').next().unwrap_or_default(),
    };
    let tls_param = rest.split_once('?').and_then(|(_, q)| q.split('&').find_map(|kv| kv.strip_prefix("tls=")));
    let pem = std::fs::read(path).map_err(|e| format!("cannot read ca_file {}: {e}", path.display()))?;
    let cert =
        Certificate::from_pem(&pem).map_err(|e| format!("ca_file {} is not a PEM certificate: {e}", path.display()))?;
    let params = TlsParameters::builder(host.to_string())
        .add_root_certificate(cert)
        .build_rustls()
        .map_err(|e| format!("TLS set-up: {e}"))?;
    match (scheme, tls_param) {
        ("smtps", _) => Ok(Tls::Wrapper(params)),
        ("smtp", Some("required")) => Ok(Tls::Required(params)),
        ("smtp", Some("opportunistic")) => Ok(Tls::Opportunistic(params)),
        _ => Err("ca_file is set but the URL asks for no TLS; add ?tls=required or use smtps://".to_string()),
    }
}

/// The error and its sources on one line (lettre puts the OS reason in a source).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// How failed sends are retried: at most `max_attempts` attempts, waiting
/// `random(0, min(cap, base * 2^n))` before retry `n` (full jitter). In the config
/// file: `[wins.retry] max_attempts = 12, base_ms = 2000, cap_ms = 600000` (about 20 minutes
/// of outage on average before a send is given up).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryPolicy {
    /// Attempts in all, the first included. Default 12.
    pub max_attempts: u32,
    /// Backoff base, milliseconds. Default 2,000.
    pub base_ms: u64,
    /// Longest wait between attempts, milliseconds. Default 600,000 (10 minutes).
    pub cap_ms: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy { max_attempts: 12, base_ms: 2_000, cap_ms: 600_000 }
    }
}

impl RetryPolicy {
    /// The wait before retry number `retry` (0 for the first retry).
    pub fn backoff(&self, retry: u32) -> Duration {
        crate::upload::full_jitter_backoff(
            Duration::from_millis(self.base_ms),
            retry,
            Duration::from_millis(self.cap_ms),
        )
    }
}

/// Where a send stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum SendStatus {
    /// Not sent yet; an attempt is due at `next_attempt_ms`.
    Pending,
    /// Accepted by the SMTP server.
    Sent,
    /// Given up: attempts exhausted or refused permanently; see `last_error`.
    Failed,
}

/// The state of one win's send, kept by the caller.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SendState {
    /// Pending, sent or failed.
    pub status: SendStatus,
    /// Addresses the report goes to.
    pub recipients: Vec<String>,
    /// Attempts made so far.
    pub attempts: u32,
    /// The last failure, in words.
    pub last_error: Option<String>,
    /// When the last attempt was made, Unix ms.
    pub last_attempt_ms: Option<i64>,
    /// When the next attempt is due, Unix ms (pending only).
    pub next_attempt_ms: Option<i64>,
    /// When the server accepted the message, Unix ms.
    pub sent_ms: Option<i64>,
}

impl SendState {
    /// A send that is due now.
    pub fn pending(recipients: Vec<String>, now_ms: i64) -> SendState {
        SendState {
            status: SendStatus::Pending,
            recipients,
            attempts: 0,
            last_error: None,
            last_attempt_ms: None,
            next_attempt_ms: Some(now_ms),
            sent_ms: None,
        }
    }

    /// True when the send is pending and its next attempt is due at `now_ms`.
    pub fn is_due(&self, now_ms: i64) -> bool {
        self.status == SendStatus::Pending && self.next_attempt_ms.is_none_or(|t| t <= now_ms)
    }

    /// Records an attempt's outcome. Returns the wait before the next attempt when
    /// one is scheduled, `None` when the send is done (sent, or failed for good).
    pub fn record(&mut self, outcome: &Result<(), ReportError>, now_ms: i64, policy: &RetryPolicy) -> Option<Duration> {
        self.attempts += 1;
        self.last_attempt_ms = Some(now_ms);
        match outcome {
            Ok(()) => {
                self.status = SendStatus::Sent;
                self.sent_ms = Some(now_ms);
                self.next_attempt_ms = None;
                None
            }
            Err(e) => {
                self.last_error = Some(e.to_string());
                let permanent = matches!(
                    e,
                    ReportError::Send { permanent: true, .. }
                        | ReportError::BadAddress { .. }
                        | ReportError::NoRecipients
                        | ReportError::Message(_)
                        | ReportError::BadSmtpUrl { .. }
                );
                if permanent || self.attempts >= policy.max_attempts {
                    self.status = SendStatus::Failed;
                    self.next_attempt_ms = None;
                    None
                } else {
                    let wait = policy.backoff(self.attempts - 1);
                    self.next_attempt_ms = Some(now_ms + wait.as_millis() as i64);
                    Some(wait)
                }
            }
        }
    }
}

/// Sends `message`, retrying by `policy` until it is sent or the send fails for good.
/// `after_attempt` sees the state after every attempt (to store it). Blocks while it
/// waits: call it from a blocking thread.
pub fn send_with_retries(
    mailer: &Mailer,
    message: &Message,
    policy: &RetryPolicy,
    state: &mut SendState,
    mut after_attempt: impl FnMut(&SendState),
) -> Result<(), ReportError> {
    loop {
        let outcome = mailer.send(message);
        let wait = state.record(&outcome, crate::model::time::now_ms(), policy);
        after_attempt(state);
        match (outcome, wait) {
            (Ok(()), _) => return Ok(()),
            (Err(e), None) => {
                tracing::warn!(attempts = state.attempts, error = %e, "ops-win email failed for good");
                return Err(e);
            }
            (Err(e), Some(wait)) => {
                tracing::info!(attempts = state.attempts, wait_ms = wait.as_millis() as u64, error = %e, "ops-win email failed; retrying");
                std::thread::sleep(wait);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subject_that_looks_encoded_arrives_literally() {
        let from = parse_mailbox("hotframe@example.com").unwrap();
        for subject in [
            "Ops win: =?utf-8?b?SGFja2VkIQ==?= in checkout",
            "=?iso-8859-1?q?caf=E9?= é and a title long enough to need more than one encoded word here",
            "Ops win: plain title — $1,200/year",
        ] {
            let report = RenderedReport { subject: subject.to_string(), html: "<p>x</p>".into(), text: "x".into() };
            let raw = build_message(&from, &["ops@example.com".to_string()], &report, None).unwrap().formatted();
            let parsed = mail_parser::MessageParser::default().parse(&raw).unwrap();
            assert_eq!(parsed.subject(), Some(subject), "{}", String::from_utf8_lossy(&raw[..300.min(raw.len())]));
        }
    }

    #[test]
    fn urls_are_redacted() {
        assert_eq!(redact("smtp://bob:secret@mail.example.com:587"), "smtp://***@mail.example.com:587");
        assert_eq!(redact("smtp://mail:25"), "smtp://mail:25");
    }

    #[test]
    fn addresses_with_line_breaks_or_two_addresses_are_refused() {
        assert!(parse_mailbox("ops@example.com").is_ok());
        assert!(parse_mailbox("Ops Wins <ops@example.com>").is_ok());
        assert!(matches!(parse_mailbox("ops@example.com\r\nBcc: x@evil"), Err(ReportError::BadAddress { .. })));
        assert!(matches!(parse_mailbox("ops@example.com x@evil.com"), Err(ReportError::BadAddress { .. })));
        assert!(matches!(parse_mailbox("not an address"), Err(ReportError::BadAddress { .. })));
        assert!(matches!(parse_mailbox(""), Err(ReportError::BadAddress { .. })));
    }

    #[test]
    fn bad_smtp_urls_are_refused() {
        let c = |url: &str| SmtpConfig {
            url: url.to_string(),
            from: "hotframe@example.com".to_string(),
            username: None,
            password: None,
            timeout_secs: None,
            ca_file: None,
        };
        assert!(Mailer::new(&c("smtp://127.0.0.1:2525")).is_ok());
        assert!(Mailer::new(&c("smtps://127.0.0.1:465")).is_ok());
        assert!(Mailer::new(&c("smtp://127.0.0.1:587?tls=required")).is_ok());
        let err = Mailer::new(&c("http://127.0.0.1")).unwrap_err();
        assert!(err.to_string().contains("smtp://"), "{err}");
        assert!(matches!(Mailer::new(&c("smtp://127.0.0.1?tls=maybe")), Err(ReportError::BadSmtpUrl { .. })));
    }

    #[test]
    fn state_retries_then_gives_up() {
        let policy = RetryPolicy { max_attempts: 3, base_ms: 100, cap_ms: 1_000 };
        let mut s = SendState::pending(vec!["a@b.c".into()], 0);
        assert!(s.is_due(0));
        let down = || Err(ReportError::Send { url: "smtp://x".into(), reason: "refused".into(), permanent: false });
        let wait = s.record(&down(), 10, &policy).unwrap();
        assert!(wait <= Duration::from_millis(100));
        assert_eq!(s.status, SendStatus::Pending);
        assert!(s.next_attempt_ms.unwrap() >= 10);
        let wait = s.record(&down(), 20, &policy).unwrap();
        assert!(wait <= Duration::from_millis(200));
        assert_eq!(s.record(&down(), 30, &policy), None);
        assert_eq!(s.status, SendStatus::Failed);
        assert_eq!(s.attempts, 3);
        assert!(s.last_error.as_deref().unwrap().contains("refused"));
        assert!(!s.is_due(1_000_000));

        let mut p = SendState::pending(vec![], 0);
        let refused = Err(ReportError::Send { url: "smtp://x".into(), reason: "550".into(), permanent: true });
        assert_eq!(p.record(&refused, 1, &policy), None);
        assert_eq!(p.status, SendStatus::Failed);

        let mut ok = SendState::pending(vec![], 0);
        assert_eq!(ok.record(&Ok(()), 5, &policy), None);
        assert_eq!((ok.status, ok.sent_ms), (SendStatus::Sent, Some(5)));
    }
}
