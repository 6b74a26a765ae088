//! The ops-wins ledger end to end: the real `hotframe serve` binary with its SQLite
//! store, profiles ingested over HTTP, wins created through the API and the `hotframe
//! win` CLI, and the reports received by a real SMTP server (aiosmtpd, see report.rs).

use crate::common::{eventually, free_port, http as agent, Server, BIN};
use crate::harness;
use crate::report::{Received, SmtpSink};
use hotframe::report::{format_usd, format_usd_rounded};
use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// (status, JSON body) of a request.
fn call(request: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> (u16, Value) {
    let mut response = request.expect("the server answers");
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

pub fn post_json(url: &str, body: &Value) -> (u16, Value) {
    call(agent().post(url).header("Content-Type", "application/json").send(body.to_string().as_bytes()))
}

fn get_json(url: &str) -> (u16, Value) {
    call(agent().get(url).call())
}

/// Unix seconds of the start of the before range: a whole hour, 5 hours ago.
fn base_s() -> i64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    (now - 5 * 3600) / 3600 * 3600
}

/// Ingests one 600 s profile per host (a, b) at 100 Hz starting at `t`: `regex` samples
/// of regex::Regex::new and 36,000 of checkout::work, plus off-CPU noise.
fn ingest(url: &str, t: i64, regex: u64) {
    for host in ["a", "b"] {
        ingest_labelled(url, t, regex, &format!("host={host}"));
    }
}

/// One 600 s profile of checkout with `labels` (`k=v,k=v`) starting at `t`.
fn ingest_labelled(url: &str, t: i64, regex: u64, labels: &str) {
    ingest_profile(url, labels, t, t + 600, regex, 36_000);
}

/// One profile of checkout at 100 Hz over `[from, until)` with `labels`: `regex`
/// samples of regex::Regex::new and `work` of checkout::work.
fn ingest_profile(url: &str, labels: &str, from: i64, until: i64, regex: u64, work: u64) {
    let folded = format!("main;handle;regex::Regex::new {regex}\nmain;handle;checkout::work {work}\n");
    let (status, body) = call(
        agent()
            .post(&format!("{url}/ingest"))
            .query("name", format!("checkout{{{labels}}}"))
            .query("from", from.to_string())
            .query("until", until.to_string())
            .query("sampleRate", "100")
            .send(folded.as_bytes()),
    );
    assert_eq!(status, 200, "{body}");
}

/// A server with checkout's before (t0) and after (t0 + 3600) profiles, priced at
/// $0.05 per core-hour on a fleet of 10 hosts.
fn seeded(data: &Path, config: &Path, extra: &[&str]) -> (Server, i64) {
    let mut args = vec!["--config", config.to_str().unwrap()];
    args.extend_from_slice(extra);
    let server = Server::start(data, &args);
    let t0 = seed(&server.url);
    (server, t0)
}

/// Seeds the server at `url` as `seeded` does; returns t0.
pub fn seed(url: &str) -> i64 {
    let t0 = base_s();
    ingest(url, t0, 24_000);
    ingest(url, t0 + 3600, 1_200);
    let (status, body) = call(
        agent()
            .put(&format!("{url}/api/v1/services/checkout/settings"))
            .header("Content-Type", "application/json")
            .send(r#"{"pricePerCoreHour": 0.05, "fleetHosts": 10}"#.as_bytes()),
    );
    assert_eq!(status, 200, "{body}");
    t0
}

pub fn write_config(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("hotframe.toml");
    std::fs::write(
        &path,
        r#"
[teams.payments]
ops_win_list = ["ops-wins@example.com", "payments-leads@example.com"]

[wins]
public_url = "http://hotframe.test"

[wins.retry]
max_attempts = 1000
base_ms = 100
cap_ms = 400
"#,
    )
    .unwrap();
    path
}

pub fn new_win(t0: i64, title: &str) -> Value {
    json!({
        "service": "checkout",
        "title": title,
        "description": "Compile the validation regexes once instead of per request.",
        "before": {"from": t0, "until": t0 + 600},
        "after": {"from": t0 + 3600, "until": t0 + 4200},
        "frame": "regex::Regex::new",
        "shippedBy": "ana",
        "team": "payments",
        "emails": ["ana@example.com"],
    })
}

/// Polls win `id` until its send status is `status` (bounded), and returns it.
pub fn wait_status(url: &str, id: i64, status: &str, timeout: Duration) -> Value {
    eventually(&format!("win {id} to be {status}"), timeout, || {
        let (code, win) = get_json(&format!("{url}/api/v1/wins/{id}"));
        assert_eq!(code, 200, "{win}");
        if win["send"]["status"] == status {
            Ok(win)
        } else {
            Err(win.to_string())
        }
    })
}

fn parse(m: &Received) -> mail_parser::Message<'_> {
    mail_parser::MessageParser::default().parse(&m.raw).expect("a MIME message")
}

#[test]
fn cli_records_a_win_and_the_team_receives_the_report() {
    let dir = tempfile::tempdir().unwrap();
    let inbox = dir.path().join("inbox");
    std::fs::create_dir(&inbox).unwrap();
    let sink = SmtpSink::start(free_port(), &inbox);
    let config = write_config(dir.path());
    let (server, t0) = seeded(
        &dir.path().join("data"),
        &config,
        &["--smtp-url", &sink.url(), "--mail-from", "hotframe <hotframe@example.com>"],
    );

    let out = Command::new(BIN)
        .args(["win", "--server", &server.url, "--service", "checkout", "--title", "Cache compiled regexes"])
        .args(["--before", &format!("{t0}..{}", t0 + 600), "--after", &format!("{}..{}", t0 + 3600, t0 + 4200)])
        .args([
            "--frame",
            "regex::Regex::new",
            "--team",
            "payments",
            "--email",
            "ana@example.com",
            "--shipped-by",
            "ana",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {}", String::from_utf8_lossy(&out.stderr));
    // A selected frame with no request counter is measured against the rest of the service.
    assert!(stdout.contains("normalised: control ("), "the CLI names the normalisation: {stdout}");

    // By hand: per host, regex::Regex::new went from 24,000 to 1,200 samples of 10 ms in
    // 600 s: 0.4 -> 0.02 cores; x 10 hosts = 3.8 cores; x 8760 h x $0.05 = $1,664.40.
    let cores = (24_000.0 - 1_200.0) * 0.01 / 600.0 * 10.0;
    let usd = cores * 8760.0 * 0.05;
    let (_, list) = get_json(&format!("{}/api/v1/wins", server.url));
    let win = &list["wins"][0];
    let id = win["id"].as_i64().unwrap();
    let api_usd = win["figures"]["saving"]["usdPerYear"].as_f64().unwrap();
    assert!((api_usd - usd).abs() < 1e-6, "API says {api_usd}, by hand {usd}");
    assert!((win["figures"]["saving"]["cores"].as_f64().unwrap() - cores).abs() < 1e-9);
    assert_eq!(win["figures"]["saving"]["significant"], true);
    assert_eq!(win["figures"]["frames"][0]["name"], "regex::Regex::new");
    assert!((list["total"]["usdPerYear"].as_f64().unwrap() - api_usd).abs() < 1e-9);
    assert!((list["byTeam"]["payments"]["usdPerYear"].as_f64().unwrap() - api_usd).abs() < 1e-9);
    assert_eq!(list["byService"]["checkout"]["wins"], 1);
    assert!(stdout.contains(&format!("{} per year", format_usd(usd))), "{stdout}");
    assert!(stdout.contains(&format!("win {id}: http://hotframe.test/wins/{id}")), "{stdout}");

    let sent = wait_status(&server.url, id, "sent", Duration::from_secs(20));
    assert_eq!(sent["send"]["status"], "sent", "{sent}");
    assert_eq!(sent["send"]["attempts"], 1);
    let got = sink.wait_for(1, Duration::from_secs(10));
    assert_eq!(got.len(), 1);
    let mut rcpt = got[0].rcpt_to.clone();
    rcpt.sort();
    assert_eq!(rcpt, vec!["ana@example.com", "ops-wins@example.com", "payments-leads@example.com"]);
    let msg = parse(&got[0]);
    assert_eq!(
        msg.subject(),
        Some(format!("Ops win: Cache compiled regexes in checkout — {}/year", format_usd_rounded(api_usd)).as_str())
    );
    let text = msg.body_text(0).unwrap();
    assert!(text.contains(&format!("Saving: {} per year", format_usd(api_usd))), "{text}");
    assert!(text.contains(&format!("http://hotframe.test/wins/{id}")), "{text}");
    use mail_parser::MimeHeaders;
    let png = msg
        .parts
        .iter()
        .find(|p| p.content_type().is_some_and(|c| c.ctype() == "image" && c.subtype() == Some("png")))
        .expect("the flame graph");
    let decoder = png::Decoder::new(std::io::Cursor::new(png.contents()));
    let info = decoder.read_info().unwrap().info().clone();
    assert_eq!(info.width, 1200);
    assert!(info.height > 50);

    // The report page and the image are served too.
    let (status, html) = call(agent().get(&format!("{}/api/v1/wins/{id}/report.html", server.url)).call());
    assert_eq!(status, 200);
    let html = html.as_str().unwrap().to_string();
    assert!(html.contains("data:image/png;base64,") && html.contains(&format_usd(api_usd)));

    // The image alone, and sending again (same recipients, a second email).
    let mut png_answer = agent().get(&format!("{}/api/v1/wins/{id}/flamegraph.png", server.url)).call().unwrap();
    assert_eq!(png_answer.headers()["content-type"], "image/png");
    let png_bytes = png_answer.body_mut().with_config().limit(16 << 20).read_to_vec().unwrap();
    assert_eq!(&png_bytes[..8], b"\x89PNG\r\n\x1a\n");
    let (status, again) = post_json(&format!("{}/api/v1/wins/{id}/send", server.url), &json!({}));
    assert_eq!(status, 202, "{again}");
    assert_eq!(again["send"]["status"], "pending");
    let got = sink.wait_for(2, Duration::from_secs(10));
    assert_eq!(got.len(), 2, "sent again");
    assert_eq!(wait_status(&server.url, id, "sent", Duration::from_secs(10))["send"]["attempts"], 1);

    // A title carrying a header is sent as text: no extra recipient, no Bcc header.
    let (status, evil) = post_json(&format!("{}/api/v1/wins", server.url), &new_win(t0, "Evil\r\nBcc: x@evil.example"));
    assert_eq!(status, 201, "{evil}");
    let got = sink.wait_for(3, Duration::from_secs(10));
    assert_eq!(got.len(), 3);
    assert!(!got[2].rcpt_to.iter().any(|r| r.contains("evil")), "{:?}", got[2].rcpt_to);
    assert!(parse(&got[2]).bcc().is_none());
    assert!(parse(&got[2]).subject().unwrap().starts_with("Ops win: Evil Bcc: x@evil.example in checkout"));

    // A dry run with --out writes the report and stores nothing.
    let report = dir.path().join("report.html");
    let out = Command::new(BIN)
        .args(["win", "--server", &server.url, "--service", "checkout", "--title", "Try"])
        .args(["--before", &format!("{t0}..{}", t0 + 600), "--after", "version=2"])
        .args(["--dry-run", "--out"])
        .arg(&report)
        .output()
        .unwrap();
    // No profile carries version=2: a clear error, nothing written.
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("after selection has no profiles"), "{stderr}");
    let out = Command::new(BIN)
        .args(["win", "--server", &server.url, "--service", "checkout", "--title", "Try"])
        .args(["--before", &format!("{t0}..{}", t0 + 600), "--after", &format!("{}..{}", t0 + 3600, t0 + 4200)])
        .args(["--dry-run", "--out"])
        .arg(&report)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("dry run"));
    assert!(std::fs::read_to_string(&report).unwrap().contains("Try"));
    let (_, list) = get_json(&format!("{}/api/v1/wins", server.url));
    assert_eq!(list["wins"].as_array().unwrap().len(), 2, "a dry run stores nothing");
}

#[test]
fn bad_input_gets_a_clear_4xx() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let (server, t0) = seeded(&dir.path().join("data"), &config, &[]);
    let url = format!("{}/api/v1/wins", server.url);
    let case = |patch: Value| {
        let mut body = new_win(t0, "Cache compiled regexes");
        for (k, v) in patch.as_object().unwrap() {
            body[k] = v.clone();
        }
        post_json(&url, &body)
    };
    let expect = |(status, body): (u16, Value), want: u16, reason: &str, words: &str| {
        assert_eq!(status, want, "{body}");
        assert_eq!(body["reason"], reason, "{body}");
        assert!(body["error"].as_str().unwrap().contains(words), "{body}");
    };
    expect(case(json!({"service": "nope"})), 404, "not_found", "unknown service");
    expect(case(json!({"before": {"from": t0, "until": t0}})), 400, "empty_range", "before range is empty");
    expect(
        case(json!({"after": {"from": t0 + 300, "until": t0 + 900}})),
        400,
        "after_not_later",
        "after range must start",
    );
    expect(
        case(json!({"before": {"from": t0 - 7200, "until": t0 - 3600}})),
        400,
        "no_samples",
        "before selection has no profiles",
    );
    expect(case(json!({"title": "  "})), 400, "bad_title", "title is empty");
    expect(
        case(json!({"emails": ["ops@example.com\r\nBcc: x@evil.example"]})),
        400,
        "bad_email",
        "invalid email address",
    );
    expect(case(json!({"frame": "/(unclosed/"})), 400, "bad_frame", "not a valid regular expression");
    expect(case(json!({"frame": "no_such_frame"})), 400, "bad_frame", "matches no frame");
    expect(case(json!({"before": {"label": "version"}})), 400, "bad_selection", "label and value");
    let (status, body) =
        call(agent().post(&url).header("Content-Type", "application/json").send(&b"{\"service\": 3}"[..]));
    assert_eq!((status, body["reason"].as_str()), (400, Some("bad_json")), "{body}");
    expect(case(json!({"states": ["WAITING"]})), 400, "bad_states", "include RUNNABLE");
    let (status, body) = get_json(&format!("{url}/999"));
    assert_eq!(status, 404, "{body}");
    let (_, list) = get_json(&url);
    assert_eq!(list["wins"].as_array().unwrap().len(), 0, "nothing stored by refused requests");

    // The diff view's "Start an ops win": per-side labels, states, ranges in ms.
    let from_diff = json!({
        "service": "checkout", "title": "Faster regex::Regex::new in checkout",
        "before": {"from": t0 * 1000, "until": (t0 + 600) * 1000, "labels": {"host": "a"}},
        "after": {"from": (t0 + 3600) * 1000, "until": (t0 + 4200) * 1000, "labels": {"host": "a"}},
        "states": ["RUNNABLE", "BLOCKED"], "frame": "regex::Regex::new",
    });
    let (status, win) = post_json(&url, &from_diff);
    assert_eq!(status, 201, "{win}");
    assert_eq!(win["before"]["labels"]["host"], "a");
    assert_eq!(win["figures"]["before"]["profiledHosts"], 1, "only host a: {win}");
    // Host a alone: 0.4 -> 0.02 cores of the regex frame, on the fleet of 10.
    let usd = (24_000.0 - 1_200.0) * 0.01 / 600.0 * 10.0 * 8760.0 * 0.05;
    assert!((win["figures"]["saving"]["usdPerYear"].as_f64().unwrap() - usd).abs() < 1e-6, "{win}");
    assert_eq!(win["url"], format!("http://hotframe.test/wins/{}", win["id"]));

    // Two versions on one host: a label selection on each side.
    ingest_labelled(&server.url, t0 + 7200, 24_000, "host=c,version=1.4");
    ingest_labelled(&server.url, t0 + 7800, 1_200, "host=c,version=1.5");
    let by_version = json!({
        "service": "checkout", "title": "Regex cache in 1.5", "frame": "regex::Regex::new",
        "before": {"label": "version", "value": "1.4"}, "after": {"label": "version", "value": "1.5"},
    });
    let (status, win) = post_json(&url, &by_version);
    assert_eq!(status, 201, "{win}");
    assert_eq!(win["before"]["kind"], "label", "{win}");
    assert_eq!(win["figures"]["after"]["profiles"], 1, "{win}");
    assert!((win["figures"]["saving"]["usdPerYear"].as_f64().unwrap() - usd).abs() < 1e-6, "{win}");
    expect(
        post_json(
            &url,
            &json!({"service": "checkout", "title": "x", "before": {"label": "version", "value": "1.4"},
        "after": {"label": "version", "value": "1.4"}}),
        ),
        400,
        "after_not_later",
        "same profiles",
    );

    // Without an SMTP server the win is kept, and says why it was not sent.
    let (status, win) = post_json(&url, &new_win(t0, "Cache compiled regexes"));
    assert_eq!(status, 201, "{win}");
    let id = win["id"].as_i64().unwrap();
    let win = eventually("a send error on the win", Duration::from_secs(10), || {
        let (_, w) = get_json(&format!("{url}/{id}"));
        if w["send"]["lastError"].is_string() {
            Ok(w)
        } else {
            Err(w.to_string())
        }
    });
    assert_eq!(win["send"]["status"], "pending", "{win}");
    assert!(win["send"]["lastError"].as_str().unwrap().contains("--smtp-url"), "{win}");
}

#[test]
fn smtp_down_keeps_the_win_pending_and_it_is_sent_when_smtp_is_back_even_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let inbox = dir.path().join("inbox");
    std::fs::create_dir(&inbox).unwrap();
    let port = free_port();
    let smtp_url = format!("smtp://127.0.0.1:{port}");
    let config = write_config(dir.path());
    let data = dir.path().join("data");
    let flags = ["--smtp-url", smtp_url.as_str(), "--mail-from", "hotframe@example.com"];
    let (server, t0) = seeded(&data, &config, &flags);
    let url = format!("{}/api/v1/wins", server.url);

    // 1. SMTP is down: the win is stored, its send pending with the error; then the
    //    SMTP server starts and a retry delivers it, without any request.
    let (status, win) = post_json(&url, &new_win(t0, "First win"));
    assert_eq!(status, 201, "{win}");
    let first = win["id"].as_i64().unwrap();
    let pending = eventually("two send attempts", Duration::from_secs(20), || {
        let (_, w) = get_json(&format!("{url}/{first}"));
        if w["send"]["attempts"].as_u64().unwrap_or(0) >= 2 {
            Ok(w)
        } else {
            Err(w.to_string())
        }
    });
    assert_eq!(pending["send"]["status"], "pending", "{pending}");
    assert!(pending["send"]["attempts"].as_u64().unwrap() >= 2, "retried: {pending}");
    assert!(pending["send"]["lastError"].as_str().unwrap().contains(&format!("127.0.0.1:{port}")), "{pending}");
    let sink = SmtpSink::start(port, &inbox);
    let sent = wait_status(&server.url, first, "sent", Duration::from_secs(30));
    assert_eq!(sent["send"]["status"], "sent", "{sent}");
    let got = sink.wait_for(1, Duration::from_secs(10));
    assert_eq!(got.len(), 1);
    assert!(parse(&got[0]).subject().unwrap().starts_with("Ops win: First win in checkout"));
    drop(sink);

    // 2. SMTP down again: a second win is pending when the server is killed (-9).
    let (status, win) = post_json(&url, &new_win(t0, "Second win"));
    assert_eq!(status, 201, "{win}");
    let second = win["id"].as_i64().unwrap();
    let pending = wait_status(&server.url, second, "pending", Duration::from_secs(5));
    assert_eq!(pending["send"]["status"], "pending");
    drop(server); // SIGKILL

    // 3. SMTP back, server restarted on the same store: the pending send goes out.
    let inbox = dir.path().join("inbox2");
    std::fs::create_dir(&inbox).unwrap();
    let sink = SmtpSink::start(port, &inbox);
    let mut args = vec!["--config", config.to_str().unwrap()];
    args.extend_from_slice(&flags);
    let server = Server::start(&data, &args);
    let sent = wait_status(&server.url, second, "sent", Duration::from_secs(30));
    assert_eq!(sent["send"]["status"], "sent", "{sent}");
    let got = sink.wait_for(1, Duration::from_secs(10));
    assert_eq!(got.len(), 1, "only the pending report is sent again");
    assert!(parse(&got[0]).subject().unwrap().starts_with("Ops win: Second win in checkout"));
    let (_, first_again) = get_json(&format!("{}/api/v1/wins/{first}", server.url));
    assert_eq!(first_again["send"]["status"], "sent");
    assert_eq!(first_again["title"], "First win", "the ledger survived the kill");
}

#[test]
fn the_wins_page_previews_records_and_lists_a_win() {
    let dir = tempfile::tempdir().unwrap();
    let inbox = dir.path().join("inbox");
    std::fs::create_dir(&inbox).unwrap();
    let sink = SmtpSink::start(free_port(), &inbox);
    let config = write_config(dir.path());
    let (server, t0) = seeded(&dir.path().join("data"), &config, &["--smtp-url", &sink.url()]);
    let usd = (24_000.0 - 1_200.0) * 0.01 / 600.0 * 10.0 * 8760.0 * 0.05;
    let browser = harness::Browser::start(1200, 1400);

    // The form as the diff view opens it: sides, frame and title in the query string.
    let query = format!(
        "service=checkout&title=Cache%20compiled%20regexes&bfrom={}&buntil={}&afrom={}&auntil={}&frame=regex::Regex::new&blabels=host%3Da&alabels=host%3Da",
        t0 * 1000,
        (t0 + 600) * 1000,
        (t0 + 3600) * 1000,
        (t0 + 4200) * 1000
    );
    browser.goto(&format!("{}/wins/new?{query}", server.url));
    browser.wait_for("the win form", "document.getElementById('win-form')");
    browser.type_into("#win-team", "payments");
    browser.click("#win-preview");
    let preview = browser.wait_for("the preview", "document.querySelector('p.status').textContent.includes('/ year') && document.querySelector('p.status').textContent");
    assert!(preview.as_str().unwrap().starts_with(&format!("{} / year", harness::usd(usd))), "{preview}");
    browser.wait_for(
        "the report preview",
        "document.querySelector('iframe.win-report').srcdoc.includes('Cache compiled regexes')",
    );
    let (_, list) = get_json(&format!("{}/api/v1/wins", server.url));
    assert_eq!(list["wins"].as_array().unwrap().len(), 0, "a preview stores nothing");

    browser.click("#win-record");
    let path = browser.wait_for("the win page", "/^\\/wins\\/\\d+$/.test(location.pathname) && location.pathname");
    let id: i64 = path.as_str().unwrap().trim_start_matches("/wins/").parse().unwrap();
    browser.wait_for("the report", "document.querySelector('iframe.win-report') && document.querySelector('iframe.win-report').srcdoc.includes('Ops win')");
    let win = wait_status(&server.url, id, "sent", Duration::from_secs(20));
    assert_eq!(win["send"]["status"], "sent", "{win}");
    assert_eq!(win["before"]["labels"]["host"], "a");
    assert!((win["figures"]["saving"]["usdPerYear"].as_f64().unwrap() - usd).abs() < 1e-6, "{win}");
    let got = sink.wait_for(1, Duration::from_secs(10));
    let mut rcpt = got[0].rcpt_to.clone();
    rcpt.sort();
    assert_eq!(rcpt, vec!["ops-wins@example.com", "payments-leads@example.com"]);

    // The ledger: the running total is the API's, and the win is listed.
    browser.goto(&format!("{}/wins", server.url));
    let total = browser.wait_for(
        "the total",
        "document.getElementById('wins-total') && document.getElementById('wins-total').textContent",
    );
    assert!(total.as_str().unwrap().contains(&format!("{} / year", harness::usd(usd))), "{total}");
    let row = browser.wait_for("the win row", "document.querySelector('#wins-table tr.win-row') && document.querySelector('#wins-table tr.win-row').textContent");
    assert!(
        row.as_str().unwrap().contains("Cache compiled regexes") && row.as_str().unwrap().contains("sent"),
        "{row}"
    );
}

#[test]
fn tokens_guard_the_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, "reader-token-1 read\nadmin-token-1 admin\ningest-token-1 ingest\n").unwrap();
    let server = Server::start(&dir.path().join("data"), &["--token-file", tokens.to_str().unwrap()]);
    let url = format!("{}/api/v1/wins", server.url);
    let with = |token: &str| format!("Bearer {token}");
    let (status, _) = get_json(&url);
    assert_eq!(status, 401, "no token");
    let (status, body) = call(agent().get(&url).header("Authorization", with("reader-token-1")).call());
    assert_eq!(status, 200, "{body}");
    let (status, body) = call(agent().get(&format!("{url}/1/report.html")).call());
    assert_eq!(status, 401, "reports need a token too: {body}");
    let post = |token: &str| {
        call(
            agent()
                .post(&url)
                .header("Authorization", with(token))
                .header("Content-Type", "application/json")
                .send(new_win(0, "x").to_string().as_bytes()),
        )
    };
    assert_eq!(post("reader-token-1").0, 403, "recording a win needs admin");
    // Admin passes auth and reaches the handler (no such service here).
    assert_eq!(post("admin-token-1").0, 404);
    // The CLI sends its --token.
    let out = Command::new(BIN)
        .args([
            "win",
            "--server",
            &server.url,
            "--service",
            "checkout",
            "--title",
            "x",
            "--before",
            "now-2h..now-1h",
            "--after",
            "now-1h..now",
        ])
        .args(["--token", "reader-token-1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("403"), "{}", String::from_utf8_lossy(&out.stderr));
}

/// A real Prometheus (Debian's `prometheus`, installed by .ci/run) on a loopback port
/// with its own storage, holding `http_requests_total{job="checkout"}` backfilled with
/// `promtool tsdb create-blocks-from openmetrics`: `rate(t)` requests per second at
/// Unix second `t`, sampled every 15 s over `[from, until)`.
struct Prometheus {
    _process: crate::common::ChildGuard,
    url: String,
}

impl Prometheus {
    fn start(dir: &Path, from: i64, until: i64, rate: impl Fn(i64) -> f64) -> Prometheus {
        let mut om = String::from("# HELP http_requests Requests handled.\n# TYPE http_requests counter\n");
        let mut total = 0.0;
        let mut t = from;
        while t < until {
            om.push_str(&format!("http_requests_total{{job=\"checkout\"}} {total} {t}\n"));
            total += rate(t) * 15.0;
            t += 15;
        }
        om.push_str("# EOF\n");
        let input = dir.join("requests.om");
        std::fs::write(&input, om).unwrap();
        let storage = dir.join("prometheus");
        let out = Command::new("promtool")
            .args(["tsdb", "create-blocks-from", "openmetrics"])
            .arg(&input)
            .arg(&storage)
            .output()
            .expect("promtool (Debian package prometheus; .ci/run installs it)");
        assert!(out.status.success(), "promtool: {}", String::from_utf8_lossy(&out.stderr));
        let config = dir.join("prometheus.yml");
        std::fs::write(&config, "global:\n  scrape_interval: 15s\nscrape_configs: []\n").unwrap();
        let port = free_port();
        let process = crate::common::ChildGuard::spawn(
            Command::new("prometheus")
                .arg(format!("--config.file={}", config.display()))
                .arg(format!("--storage.tsdb.path={}", storage.display()))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null()),
        );
        let url = format!("http://127.0.0.1:{port}");
        eventually("Prometheus to be ready", Duration::from_secs(60), || {
            agent().get(&format!("{url}/-/ready")).call().is_ok_and(|r| r.status() == 200)
        });
        Prometheus { _process: process, url }
    }
}

/// 10 s profiles of checkout on hosts a and b over `[from, until)`: per profile `regex`
/// samples of regex::Regex::new and `work` of checkout::work.
fn ingest_steady(url: &str, from: i64, until: i64, regex: u64, work: u64) {
    for host in ["a", "b"] {
        for t in (from..until).step_by(10) {
            ingest_profile(url, &format!("host={host}"), t, t + 10, regex, work);
        }
    }
}

/// Ground truth against a real Prometheus: regex::Regex::new halved per request while
/// traffic rose 30% is a 50% saving per request (and against the control); a later
/// drop of all traffic to 70% is no significant win in any mode; the figures name
/// the normalisation and the work per side, and Prometheus down is a clear 502.
#[test]
fn a_prometheus_request_counter_normalises_wins() {
    let dir = crate::common::tempdir();
    let t0 = base_s();
    // 20 requests/s before, 26 after the change (t0 + 1800), 18.2 from t0 + 5400.
    let rate = |t: i64| {
        if t < t0 + 1800 {
            20.0
        } else if t < t0 + 5400 {
            26.0
        } else {
            18.2
        }
    };
    let prometheus = Prometheus::start(dir.path(), t0 - 600, t0 + 8400, rate);
    let config = dir.path().join("hotframe.toml");
    std::fs::write(&config, format!("[prometheus]\nurl = \"{}\"\ntimeout_seconds = 5\n", prometheus.url)).unwrap();
    let server = Server::start(&dir.path().join("data"), &["--config", config.to_str().unwrap()]);
    // Per 10 s profile and host: 10 requests/s/host; regex 2 samples per request before,
    // 1 after; checkout::work 4 per request throughout.
    ingest_steady(&server.url, t0, t0 + 600, 200, 400);
    ingest_steady(&server.url, t0 + 3600, t0 + 4200, 130, 520);
    ingest_steady(&server.url, t0 + 7200, t0 + 7800, 91, 364);
    let query = r#"sum(increase(http_requests_total{job="checkout"}[$__range]))"#;
    let win = |before: i64, after: i64, frame: Option<&str>, requests: Option<&str>| {
        let (status, body) = post_json(
            &format!("{}/api/v1/wins", server.url),
            &json!({
                "service": "checkout",
                "title": "Cache compiled regexes",
                "before": {"from": before, "until": before + 600},
                "after": {"from": after, "until": after + 600},
                "frame": frame,
                "requestsQuery": requests,
                "dryRun": true,
            }),
        );
        assert_eq!(status, 200, "{body}");
        body["figures"].clone()
    };

    let f = win(t0, t0 + 3600, Some("regex::Regex::new"), Some(query));
    assert_eq!(f["normalization"], "requests", "{f}");
    let relative = f["saving"]["relative"].as_f64().unwrap();
    assert!((relative - 0.5).abs() < 0.1, "relative {relative}: {f}");
    assert_eq!(f["saving"]["significant"], true, "{f}");
    let work_before = f["before"]["work"].as_f64().unwrap();
    assert!((work_before - 12_000.0).abs() < 1_200.0, "requests before {work_before}");
    assert!((f["after"]["work"].as_f64().unwrap() - 15_600.0).abs() < 1_560.0, "{f}");
    assert_eq!(f["before"]["intervals"], 8, "{f}");
    assert_eq!(f["matching"]["incomplete"], json!([]), "{f}");
    // Whole service per request: the regex half of the before CPU, a third less.
    let whole = win(t0, t0 + 3600, None, Some(query));
    assert_eq!(whole["normalization"], "requests");
    assert_eq!(whole["saving"]["significant"], true);
    // The control gives the same answer without Prometheus.
    let control = win(t0, t0 + 3600, Some("regex::Regex::new"), None);
    assert_eq!(control["normalization"], "control", "{control}");
    assert!((control["saving"]["relative"].as_f64().unwrap() - 0.5).abs() < 0.1, "{control}");

    // A pure drop of traffic (every frame and the requests x0.7): no win in any mode.
    for (frame, requests, mode) in [
        (Some("regex::Regex::new"), Some(query), "requests"),
        (None, Some(query), "requests"),
        (Some("regex::Regex::new"), None, "control"),
        (None, None, "none"),
    ] {
        let f = win(t0 + 3600, t0 + 7200, frame, requests);
        assert_eq!(f["normalization"], mode, "{f}");
        assert_eq!(f["saving"]["significant"], false, "{mode} {frame:?}: {}", f["saving"]);
    }
    let none = win(t0 + 3600, t0 + 7200, None, None);
    assert!(none["saving"]["relative"].as_f64().unwrap() > 0.25, "per host, the drop looks like a saving: {none}");
    assert!(none["normalizationReason"].as_str().unwrap().contains("cannot be told apart from a change of traffic"));

    // A recorded win that is not normalised is listed but kept out of the totals.
    let (status, body) = post_json(
        &format!("{}/api/v1/wins", server.url),
        &json!({
            "service": "checkout",
            "title": "Traffic went down",
            "before": {"from": t0 + 3600, "until": t0 + 4200},
            "after": {"from": t0 + 7200, "until": t0 + 7800},
        }),
    );
    assert_eq!(status, 201, "{body}");
    let (_, list) = get_json(&format!("{}/api/v1/wins", server.url));
    assert_eq!(list["total"]["wins"], 0, "{list}");
    assert_eq!(list["notNormalised"], 1, "{list}");

    // Prometheus gone: a clear 502, nothing recorded.
    drop(prometheus);
    let (status, body) = post_json(
        &format!("{}/api/v1/wins", server.url),
        &json!({
            "service": "checkout",
            "title": "t",
            "before": {"from": t0, "until": t0 + 600},
            "after": {"from": t0 + 3600, "until": t0 + 4200},
            "requestsQuery": query,
        }),
    );
    assert_eq!(status, 502, "{body}");
    assert!(body["error"].as_str().unwrap().contains("unreachable"), "{body}");
}

/// Issue 13.3: with the SMTP relay down, "Send again" on a win whose report is still
/// being retried answered never and hung the whole server (a guard dropped under the
/// lock its drop takes). Now both sends answer at once, the second says it is already
/// sending, /healthz answers and SIGTERM stops the server.
#[test]
fn send_again_while_sending_answers_at_once_and_the_server_stays_up() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let flags = ["--smtp-url", "smtp://127.0.0.1:1", "--mail-from", "hotframe@example.com"];
    let (mut server, t0) = seeded(&dir.path().join("data"), &config, &flags);
    let url = format!("{}/api/v1/wins", server.url);
    let (status, win) = post_json(&url, &new_win(t0, "Double click"));
    assert_eq!(status, 201, "{win}");
    let id = win["id"].as_i64().unwrap();
    eventually("a failed attempt", Duration::from_secs(20), || {
        let (_, w) = get_json(&format!("{url}/{id}"));
        w["send"]["attempts"].as_u64().unwrap_or(0) >= 1
    });
    let quick = |what: &str, started: std::time::Instant| {
        assert!(started.elapsed() < Duration::from_secs(5), "{what} took {:?}", started.elapsed());
    };
    for round in 0..2 {
        let started = std::time::Instant::now();
        let (status, again) = post_json(&format!("{url}/{id}/send"), &json!({}));
        quick("send again", started);
        assert_eq!(status, 202, "{again}");
        assert_eq!(again["send"]["status"], "pending", "{again}");
        assert_eq!(again["alreadySending"], true, "round {round}: the first task still retries: {again}");
    }
    let started = std::time::Instant::now();
    assert_eq!(crate::common::get(&server.api("/healthz")), (200, "ok".to_string()));
    let (status, _) = get_json(&url);
    assert_eq!(status, 200);
    quick("/healthz and the list", started);
    let (_, w) = get_json(&format!("{url}/{id}"));
    assert!(w["send"]["attempts"].as_u64().unwrap() >= 1, "the retries went on: {w}");
    let exit = server.terminate(Duration::from_secs(20));
    assert!(exit.success(), "exit status after SIGTERM: {exit}");
}
