//! Ops-win reports against a real SMTP server: Python's `aiosmtpd` (installed by
//! .ci/run) listening on loopback, writing every message it accepts to a directory.
//! The tests parse the MIME message and check what a reader would see.

use crate::common::{free_port, poll};
use hotframe::cost::{CostContext, CostSettings};
use hotframe::model::ThreadState;
use hotframe::model::{Aggregate, AggregateSample};
use hotframe::report::{
    self, FramePattern, Mailer, ReportError, RetryPolicy, SendState, SendStatus, Side, SmtpConfig, Win, WinOptions,
};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

/// aiosmtpd handler: each accepted message becomes NNNN.eml plus NNNN.json (envelope).
/// argv: port, directory, options JSON (`{"cert", "key", "mode": "starttls"|"tls",
/// "user", "password"}`, all optional).
const SINK: &str = r#"
import json, logging, os, ssl, sys
if os.environ.get("HOTFRAME_SMTP_SINK_LOG"):
    logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
port, out, opts = int(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
class Sink:
    n = 0
    async def handle_DATA(self, server, session, envelope):
        Sink.n += 1
        base = os.path.join(out, "%04d" % Sink.n)
        with open(base + ".json", "w") as f:
            json.dump({"from": envelope.mail_from, "to": envelope.rcpt_tos}, f)
        with open(base + ".tmp", "wb") as f:
            f.write(envelope.original_content or envelope.content)
        os.rename(base + ".tmp", base + ".eml")
        return "250 Message accepted"
kw = {}
if "cert" in opts:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(opts["cert"], opts["key"])
    if opts.get("mode") == "tls":
        kw["ssl_context"] = ctx
    else:
        kw["tls_context"] = ctx
        kw["require_starttls"] = True
if "user" in opts:
    def check(server, session, envelope, mechanism, data):
        ok = isinstance(data, LoginPassword) and data.login == opts["user"].encode() and data.password == opts["password"].encode()
        return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd answers 535
    # With implicit TLS aiosmtpd does not see the session as TLS; it is encrypted anyway.
    kw.update(authenticator=check, auth_required=True, auth_require_tls=opts.get("mode") == "starttls")
c = Controller(Sink(), hostname="127.0.0.1", port=port, **kw)
c.start()
print("ready", flush=True)
try:
    sys.stdin.read()  # ends when the test closes stdin or dies
finally:
    c.stop()
"#;

/// A running SMTP sink. Dropping it stops the server.
pub struct SmtpSink {
    child: Child,
    stdin: Option<ChildStdin>,
    /// Port it listens on (127.0.0.1).
    pub port: u16,
    /// Directory receiving NNNN.eml and NNNN.json.
    pub dir: PathBuf,
}

/// A message the sink received.
pub struct Received {
    /// The raw RFC 5322 message.
    pub raw: Vec<u8>,
    /// Envelope recipients (RCPT TO).
    pub rcpt_to: Vec<String>,
    /// Envelope sender.
    pub mail_from: String,
}

impl SmtpSink {
    /// Starts a plain sink on `port` writing into `dir`.
    pub fn start(port: u16, dir: &Path) -> SmtpSink {
        SmtpSink::start_with(port, dir, serde_json::json!({}))
    }

    /// Starts a sink with options (TLS certificate and mode, required login).
    pub fn start_with(port: u16, dir: &Path, options: serde_json::Value) -> SmtpSink {
        let mut child = Command::new("python3")
            .args(["-c", SINK, &port.to_string(), dir.to_str().unwrap(), &options.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start python3 (needed for the aiosmtpd SMTP sink)");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready", "the SMTP sink did not start: is aiosmtpd installed? (pip install aiosmtpd)");
        let stdin = child.stdin.take();
        SmtpSink { child, stdin, port, dir: dir.to_path_buf() }
    }

    /// The smtp:// URL of the sink.
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Waits (bounded) until `n` messages have arrived, and returns those that did, in
    /// order (fewer than `n` when `timeout` passed first).
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        let emls = || -> Vec<PathBuf> {
            let mut emls: Vec<PathBuf> = std::fs::read_dir(&self.dir)
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|e| e == "eml"))
                .collect();
            emls.sort();
            emls
        };
        let emls = poll(timeout, || Some(emls()).filter(|e| e.len() >= n)).unwrap_or_else(|_| emls());
        emls.into_iter()
            .map(|p| {
                let env: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(p.with_extension("json")).unwrap()).unwrap();
                Received {
                    raw: std::fs::read(&p).unwrap(),
                    rcpt_to: env["to"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect(),
                    mail_from: env["from"].as_str().unwrap().to_string(),
                }
            })
            .collect()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        // Closing stdin stops the sink; give it 5 s to exit on its own.
        drop(self.stdin.take());
        let child = &mut self.child;
        if poll(Duration::from_secs(5), || matches!(child.try_wait(), Ok(Some(_)))).is_err() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

const PERIOD_NS: u64 = 10_000_000; // 100 Hz

/// An aggregate of on-CPU stacks (root first) with sample counts at 100 Hz, plus five
/// times as many WAITING samples of the same stacks, which must not count.
fn aggregate(stacks: &[(&[&str], u64)], hosts: u32, seconds_per_host: f64) -> Aggregate {
    let mut agg = report::aggregate_of(stacks, ThreadState::Runnable, PERIOD_NS);
    let waiting: Vec<AggregateSample> = agg
        .samples
        .iter()
        .map(|s| AggregateSample { state: ThreadState::Waiting, samples: 5 * s.samples, nanos: 5 * s.nanos, ..*s })
        .collect();
    agg.samples.extend(waiting);
    agg.profiles = hosts as u64;
    agg.first_ms = 1_700_000_000_000;
    agg.last_ms = 1_700_000_600_000;
    for host in 0..hosts {
        let end = agg.first_ms + (seconds_per_host * 1000.0) as i64;
        agg.coverage.add(Some(&format!("host{host}")), agg.first_ms, end);
    }
    agg
}

/// The synthetic pair: 2 hosts profiled 600 s each, fleet of 10, $0.05 per core-hour.
/// Before: regex compile 24,000 samples + work 36,000; after: regex 1,200 + work 36,000.
pub(crate) struct Pair {
    before: Aggregate,
    after: Aggregate,
    ctx: CostContext,
}

pub(crate) fn pair() -> Pair {
    let before = aggregate(
        &[(&["main", "handle", "regex::Regex::new"], 24_000), (&["main", "handle", "checkout::work"], 36_000)],
        2,
        600.0,
    );
    let after = aggregate(
        &[(&["main", "handle", "regex::Regex::new"], 1_200), (&["main", "handle", "checkout::work"], 36_000)],
        2,
        600.0,
    );
    let settings = CostSettings { price_per_core_hour: Some(0.05), fleet_hosts: Some(10), ..Default::default() };
    let ctx = CostContext::new(settings.resolve().unwrap(), 600.0, 2);
    Pair { before, after, ctx }
}

fn figures(p: &Pair, pattern: Option<&str>) -> report::WinFigures {
    let pattern = pattern.map(|t| FramePattern::parse(t).unwrap());
    report::compute(
        Side { aggregate: &p.before, context: &p.ctx, work: None, intervals: &[] },
        Side { aggregate: &p.after, context: &p.ctx, work: None, intervals: &[] },
        pattern.as_ref(),
        &WinOptions::default(),
    )
    .unwrap()
}

pub(crate) fn win(p: &Pair, title: &str) -> Win {
    win_with(p, figures(p, Some("regex::Regex::new")), title)
}

fn win_with(_: &Pair, f: report::WinFigures, title: &str) -> Win {
    Win {
        id: Some(7),
        service: "checkout".to_string(),
        title: title.to_string(),
        description: "Compile the validation regexes once, in a OnceLock, instead of per request.".to_string(),
        shipped_by: Some("ana".to_string()),
        team: Some("payments".to_string()),
        before: report::Selection::Range {
            from_ms: 1_700_000_000_000,
            until_ms: 1_700_000_600_000,
            labels: Default::default(),
        },
        after: report::Selection::Range {
            from_ms: 1_700_086_400_000,
            until_ms: 1_700_087_000_000,
            labels: Default::default(),
        },
        figures: f,
        created_ms: 1_700_090_000_000,
    }
}

fn smtp(url: &str) -> SmtpConfig {
    SmtpConfig {
        url: url.to_string(),
        from: "hotframe <hotframe@example.com>".to_string(),
        username: None,
        password: None,
        timeout_secs: Some(5),
        ca_file: None,
    }
}

#[test]
fn synthetic_pair_matches_hand_computation() {
    let p = pair();
    // By hand: exposure E = 600 s x 2 hosts = 1200 host-s. Before: 60,000 samples x 10 ms
    // = 600 CPU s -> 0.5 cores/host; after: 37,200 x 10 ms = 372 s -> 0.31 cores/host.
    // Saving per host 0.19 cores; fleet of 10 -> 1.9 cores; $ = 1.9 x 8760 x 0.05.
    let cores = (600.0 - 372.0) / 1200.0 * 10.0;
    let usd = cores * 8760.0 * 0.05;
    let co2 = cores * 8760.0 * 7.0 / 1000.0 * 1.7 * 0.379;
    // Variance: n p^2 per side = 60,000 x 1e-4 + 37,200 x 1e-4 = 9.72 s^2.
    let half = 1.96 * (9.72f64).sqrt() / 1200.0 * 10.0;

    let f = figures(&p, None);
    assert!((f.before.cores_per_host - 0.5).abs() < 1e-12, "{}", f.before.cores_per_host);
    assert!((f.after.cores_per_host - 0.31).abs() < 1e-12);
    assert!((f.before.cores - 5.0).abs() < 1e-12);
    assert!((f.saving.cores - cores).abs() < 1e-9, "{} vs {cores}", f.saving.cores);
    assert!((f.saving.usd_per_year - usd).abs() < 1e-6, "{} vs {usd}", f.saving.usd_per_year);
    assert!((f.saving.kg_co2_per_year - co2).abs() < 1e-6);
    assert!((f.saving.cores_high - f.saving.cores - half).abs() < 1e-4, "{}", f.saving.cores_high - f.saving.cores);
    assert!((f.saving.cores - f.saving.cores_low - half).abs() < 1e-4);
    // Without a selection or a request counter the same figures cannot be told apart
    // from a change of traffic: per host, not normalised, never significant (it used to
    // assert `significant`, which a drop of traffic fakes as well).
    assert_eq!(f.normalization, report::Normalization::None);
    assert!(!f.saving.significant);
    assert!(report::render(&win_with(&p, f.clone(), "Whole service"), None, None).subject.contains("not normalised"));
    assert!((f.saving.relative - 0.19 / 0.5).abs() < 1e-9);
    assert_eq!(f.before.cpu_samples, 60_000, "off-CPU samples must not count");

    // With the frame pattern the scope is the regex stacks: 0.2 -> 0.01 cores per host,
    // the same 1.9 cores saved, and the regex frame tops the changed frames.
    let g = figures(&p, Some("regex::Regex::new"));
    // Selected frames are measured against the rest of the service (the control).
    assert_eq!(g.normalization, report::Normalization::Control);
    assert!(g.saving.significant);
    assert!((g.before.scope_cores_per_host - 0.2).abs() < 1e-12);
    assert!((g.after.scope_cores_per_host - 0.01).abs() < 1e-12);
    assert!((g.saving.cores - cores).abs() < 1e-9);
    assert_eq!(g.frames[0].name, "regex::Regex::new");
    assert!((g.frames[0].self_saved_cores - cores).abs() < 1e-9);
    assert!((g.frames[0].self_usd_per_year - usd).abs() < 1e-6);
    assert!(g.frames[0].significant);
    // Callers moved by the same total but did no work themselves; unchanged frames are left out.
    let names: Vec<&str> = g.frames.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, vec!["regex::Regex::new", "handle", "main"]);
    assert_eq!(g.frames[1].self_saved_cores, 0.0);
    assert!((g.frames[1].total_saved_cores - cores).abs() < 1e-9);
    assert!(g.notes.iter().any(|n| n.contains("no request counter")), "{:?}", g.notes);

    // A difference smaller than its noise is not significant.
    let noisy = Pair {
        after: aggregate(
            &[(&["main", "handle", "regex::Regex::new"], 23_900), (&["main", "handle", "checkout::work"], 36_000)],
            2,
            600.0,
        ),
        ..pair()
    };
    let n = figures(&noisy, None);
    assert!(n.saving.cores > 0.0 && !n.saving.significant, "{:?}", n.saving);
    assert!(report::render(&win(&noisy, "Tiny"), None, None).subject.contains("not significant"));
}

fn parse(raw: &[u8]) -> mail_parser::Message<'_> {
    mail_parser::MessageParser::default().parse(raw).expect("a parsable MIME message")
}

#[test]
fn report_email_arrives_with_figures_text_and_inline_png() {
    let dir = tempfile::tempdir().unwrap();
    let sink = SmtpSink::start(free_port(), dir.path());
    let p = pair();
    let w = win(&p, "Cache compiled regexes");
    let png = report::differential_png(&p.before, 1200.0, &p.after, 1200.0, "checkout: before -> after").unwrap();
    let rendered =
        report::render(&w, Some(&format!("cid:{}", report::FLAME_CONTENT_ID)), Some("http://hotframe.local/#/wins/7"));
    let mailer = Mailer::new(&smtp(&sink.url())).unwrap();
    let to =
        vec!["ops-wins@example.com".to_string(), "ana@example.com".to_string(), "ops-wins@example.com".to_string()];
    let message = report::build_message(mailer.from(), &to, &rendered, Some(&png)).unwrap();
    let mut state = SendState::pending(to.clone(), 0);
    report::send_with_retries(&mailer, &message, &RetryPolicy::default(), &mut state, |_| {}).unwrap();
    assert_eq!(state.status, SendStatus::Sent);
    assert_eq!(state.attempts, 1);

    let got = sink.wait_for(1, Duration::from_secs(10));
    assert_eq!(got.len(), 1, "one message expected");
    let m = &got[0];
    let mut rcpt = m.rcpt_to.clone();
    rcpt.sort();
    assert_eq!(rcpt, vec!["ana@example.com", "ops-wins@example.com"], "recipients de-duplicated");
    assert_eq!(m.mail_from, "hotframe@example.com");
    let msg = parse(&m.raw);

    let usd = w.figures.saving.usd_per_year;
    let expected_subject =
        format!("Ops win: Cache compiled regexes in checkout — {}/year", report::format_usd_rounded(usd));
    assert_eq!(msg.subject(), Some(expected_subject.as_str()));
    assert_eq!(msg.header_raw("Auto-Submitted").map(str::trim), Some("auto-generated"));
    let mut to_header: Vec<&str> = msg.to().unwrap().iter().filter_map(|a| a.address()).collect();
    to_header.sort();
    assert_eq!(to_header, vec!["ana@example.com", "ops-wins@example.com"]);

    let text = msg.body_text(0).unwrap();
    let figure = report::format_usd(usd);
    assert!(text.contains(&format!("Saving: {figure} per year")), "text part:\n{text}");
    assert!(text.contains("regex::Regex::new"));
    assert!(text.contains("http://hotframe.local/#/wins/7"));
    let html = msg.body_html(0).unwrap();
    assert!(html.contains(&figure));
    assert!(html.contains(&format!("cid:{}", report::FLAME_CONTENT_ID)));
    assert!(html.contains("Cache compiled regexes"));

    use mail_parser::MimeHeaders;
    let image = msg
        .parts
        .iter()
        .find(|part| part.content_type().is_some_and(|c| c.ctype() == "image" && c.subtype() == Some("png")))
        .expect("an image/png part");
    assert_eq!(image.content_id(), Some(report::FLAME_CONTENT_ID));
    let bytes = image.contents();
    // HOTFRAME_DUMP_REPORT=dir keeps the report for a person to look at.
    if let Ok(dir) = std::env::var("HOTFRAME_DUMP_REPORT") {
        let dir = Path::new(&dir);
        std::fs::write(dir.join("flamegraph.png"), bytes).unwrap();
        std::fs::write(
            dir.join("report.html"),
            html.replace(&format!("cid:{}", report::FLAME_CONTENT_ID), "flamegraph.png"),
        )
        .unwrap();
        std::fs::write(dir.join("report.txt"), text.as_bytes()).unwrap();
    }
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    let mut reader = decoder.read_info().unwrap();
    let (width, height) = (reader.info().width, reader.info().height);
    assert_eq!((width, height), (png.width, png.height));
    assert_eq!(width, 1200);
    assert!(height > 50);
    let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
    let frame = reader.next_frame(&mut pixels).unwrap();
    let pixels = &pixels[..frame.buffer_size()];
    let channels = frame.color_type.samples();
    // The regex frame lost CPU after the change, so it is drawn in blue.
    let blue = pixels.chunks(channels).filter(|px| px[2] as i32 - px[0] as i32 > 60).count();
    assert!(blue > 1000, "expected a blue (less CPU after) frame, found {blue} blue pixels");
    // Text is drawn: dark pixels (frame names, title) exist.
    let dark = pixels.chunks(channels).filter(|px| px[0] < 60 && px[1] < 60 && px[2] < 60).count();
    assert!(dark > 200, "expected drawn text, found {dark} dark pixels");
}

#[test]
fn header_injection_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let sink = SmtpSink::start(free_port(), dir.path());
    let p = pair();
    let w = win(&p, "Cache regexes\r\nBcc: x@evil.example");
    let rendered = report::render(&w, None, None);
    assert!(!rendered.subject.contains('\r') && !rendered.subject.contains('\n'));
    let mailer = Mailer::new(&smtp(&sink.url())).unwrap();

    // A recipient address carrying a header is refused outright.
    let evil = vec!["ops@example.com\r\nBcc: x@evil.example".to_string()];
    let err = report::build_message(mailer.from(), &evil, &rendered, None).unwrap_err();
    assert!(matches!(err, ReportError::BadAddress { .. }), "{err}");

    // Even unsanitised, a subject with CR/LF goes through lettre's typed header encoded.
    let raw_subject = report::RenderedReport { subject: w.title.clone(), ..rendered.clone() };
    for r in [&rendered, &raw_subject] {
        let message = report::build_message(mailer.from(), &["ops@example.com".to_string()], r, None).unwrap();
        mailer.send(&message).unwrap();
    }
    let got = sink.wait_for(2, Duration::from_secs(10));
    assert_eq!(got.len(), 2);
    for m in &got {
        assert_eq!(m.rcpt_to, vec!["ops@example.com"], "no extra envelope recipient");
        let raw = String::from_utf8_lossy(&m.raw);
        assert!(!raw.lines().any(|l| l.to_ascii_lowercase().starts_with("bcc:")), "injected header in:\n{raw}");
        let msg = parse(&m.raw);
        assert!(msg.bcc().is_none());
        let subject = msg.subject().unwrap();
        assert!(subject.contains("Bcc: x@evil.example"), "the text stays in the subject: {subject}");
    }
}

/// Issue 13.6: a title that looks like an RFC 2047 encoded word reaches the inbox as
/// written, not decoded by the mail client ("Hacked!").
#[test]
fn a_title_that_looks_encoded_arrives_literally() {
    let dir = tempfile::tempdir().unwrap();
    let sink = SmtpSink::start(free_port(), dir.path());
    let p = pair();
    let title = "=?utf-8?b?SGFja2VkIQ==?= regexes";
    let rendered = report::render(&win(&p, title), None, None);
    let mailer = Mailer::new(&smtp(&sink.url())).unwrap();
    let message = report::build_message(mailer.from(), &["ops@example.com".to_string()], &rendered, None).unwrap();
    mailer.send(&message).unwrap();
    let got = sink.wait_for(1, Duration::from_secs(10));
    assert_eq!(got.len(), 1);
    let subject = parse(&got[0].raw).subject().unwrap().to_string();
    assert_eq!(subject, rendered.subject, "the subject as rendered");
    assert!(subject.contains(title) && !subject.contains("Hacked"), "{subject}");
}

#[test]
fn smtp_down_fails_clearly_and_a_retry_delivers_once_it_is_back() {
    let port = free_port();
    let mailer = Mailer::new(&smtp(&format!("smtp://127.0.0.1:{port}"))).unwrap();
    let p = pair();
    let rendered = report::render(&win(&p, "Cache compiled regexes"), None, None);
    let to = vec!["ops@example.com".to_string()];
    let message = report::build_message(mailer.from(), &to, &rendered, None).unwrap();

    // Down for good: every attempt fails, the error says where and what to check.
    let policy = RetryPolicy { max_attempts: 3, base_ms: 20, cap_ms: 100 };
    let mut state = SendState::pending(to.clone(), 0);
    let mut seen = Vec::new();
    let err = report::send_with_retries(&mailer, &message, &policy, &mut state, |s| seen.push(s.clone())).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, ReportError::Send { permanent: false, .. }), "{text}");
    assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
    assert!(text.contains("check that the SMTP server is up"), "{text}");
    assert_eq!(state.status, SendStatus::Failed);
    assert_eq!(state.attempts, 3);
    assert_eq!(seen.iter().map(|s| s.attempts).collect::<Vec<_>>(), vec![1, 2, 3]);
    assert_eq!(seen[0].status, SendStatus::Pending);
    assert!(state.last_error.as_deref().unwrap().contains(&format!("127.0.0.1:{port}")));

    // Down, then back: the sink starts after the first failure; the retry delivers.
    let dir = tempfile::tempdir().unwrap();
    let mut sink = None;
    let mut state = SendState::pending(to.clone(), 0);
    let policy = RetryPolicy { max_attempts: 5, base_ms: 50, cap_ms: 200 };
    report::send_with_retries(&mailer, &message, &policy, &mut state, |s| {
        if s.attempts == 1 {
            assert_eq!(s.status, SendStatus::Pending);
            sink = Some(SmtpSink::start(port, dir.path()));
        }
    })
    .unwrap();
    assert_eq!(state.status, SendStatus::Sent);
    assert_eq!(state.attempts, 2);
    let got = sink.as_ref().unwrap().wait_for(1, Duration::from_secs(10));
    assert_eq!(got.len(), 1);
}

/// A self-signed certificate for 127.0.0.1 (openssl), as (cert.pem, key.pem).
fn self_signed(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let status = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1", "-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null())
        .status()
        .expect("run openssl");
    assert!(status.success());
    (cert, key)
}

#[test]
fn starttls_and_tls_with_login_deliver_and_a_wrong_password_is_not_retried() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(dir.path());
    let p = pair();
    let rendered = report::render(&win(&p, "Cache compiled regexes"), None, None);
    let to = vec!["ops@example.com".to_string()];
    let login = |url: String, password: &str, ca: bool| SmtpConfig {
        username: Some("hotframe".to_string()),
        password: Some(password.to_string()),
        ca_file: ca.then(|| cert.clone()),
        ..smtp(&url)
    };

    for (mode, url_of) in [
        ("tls", (|port: u16| format!("smtps://127.0.0.1:{port}")) as fn(u16) -> String),
        ("starttls", |port: u16| format!("smtp://127.0.0.1:{port}?tls=required")),
    ] {
        let inbox = dir.path().join(mode);
        std::fs::create_dir(&inbox).unwrap();
        let options =
            serde_json::json!({"cert": cert, "key": key, "mode": mode, "user": "hotframe", "password": "s3cret"});
        let sink = SmtpSink::start_with(free_port(), &inbox, options);
        let url = url_of(sink.port);

        let mailer = Mailer::new(&login(url.clone(), "s3cret", true)).unwrap();
        let message = report::build_message(mailer.from(), &to, &rendered, None).unwrap();
        mailer.send(&message).unwrap_or_else(|e| panic!("{mode}: {e}"));
        assert_eq!(sink.wait_for(1, Duration::from_secs(10)).len(), 1, "{mode}");

        // The certificate is checked: without the CA it is refused.
        let untrusted = Mailer::new(&login(url.clone(), "s3cret", false)).unwrap();
        let err = untrusted.send(&message).unwrap_err();
        assert!(err.to_string().to_lowercase().contains("certificate"), "{mode}: {err}");

        // A wrong password is a permanent refusal: failed at once, not retried.
        let wrong = Mailer::new(&login(url, "wrong", true)).unwrap();
        let mut state = SendState::pending(to.clone(), 0);
        let policy = RetryPolicy { max_attempts: 3, base_ms: 10, cap_ms: 50 };
        let err = report::send_with_retries(&wrong, &message, &policy, &mut state, |_| {}).unwrap_err();
        assert!(matches!(err, ReportError::Send { permanent: true, .. }), "{mode}: {err}");
        assert_eq!((state.status, state.attempts), (SendStatus::Failed, 1));
        assert_eq!(sink.wait_for(2, Duration::from_millis(300)).len(), 1, "{mode}: nothing more delivered");
    }

    // A CA file with a URL that asks for no TLS is a configuration error.
    let err = Mailer::new(&SmtpConfig { ca_file: Some(cert.clone()), ..smtp("smtp://127.0.0.1:25") }).unwrap_err();
    assert!(matches!(err, ReportError::BadSmtpUrl { .. }), "{err}");
}
