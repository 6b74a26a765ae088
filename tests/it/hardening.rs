//! Issue 13 (inputs that crash, hang or brick the server) and issue 11 point 3 (inputs
//! that make the cost absurd): each defect found by the adversarial run, as a
//! regression test through the real router or the real binary over HTTP.

use crate::common::tempdir as common_dir;
use crate::server::{base_s, get, open, post, range};
use axum::http::StatusCode;
use hotframe::model::pprof::{encode, to_proto};
use hotframe::model::{ProfileBuilder, ThreadState};
use hotframe::server::config::ServerConfig;
use hotframe::store::{ProfileStore, SqliteStore};

/// Issue 13.1 and issue 11.3: counts, rates and windows that cannot be true are refused
/// with a 400 that says which value and why; nothing is stored.
#[tokio::test]
async fn absurd_counts_rates_and_windows_are_refused() {
    let dir = common_dir();
    let s = open(dir.path(), ServerConfig::default());
    let t = base_s();
    let ok = format!("/ingest?name=keep&from={t}&until={}", t + 10);
    assert_eq!(post(&s.app, &ok, "text/plain", b"main;a 5\n".to_vec()).await.status, StatusCode::OK);

    let mut b = ProfileBuilder::new("evil", t * 1000, t * 1000 + 10_000, 10_000_000);
    b.add(&["main", "a"], ThreadState::Runnable, i64::MAX as u64);
    b.add(&["main", "b"], ThreadState::Blocked, 1);
    let huge_pprof = encode(&b.finish());
    let mut b = ProfileBuilder::new("evil", t * 1000, t * 1000 + 10_000, 1);
    b.add(&["main", "a"], ThreadState::Runnable, 1);
    let ghz_pprof = encode(&b.finish());
    let mut b = ProfileBuilder::new("evil", t * 1000, t * 1000 + 10_000, 10_000_000);
    b.add(&["main", "a"], ThreadState::Runnable, 1);
    let mut in_1970 = to_proto(&b.finish());
    in_1970.time_nanos = 1;
    let in_1970 = prost::Message::encode_to_vec(&in_1970);

    let folded = |params: &str| format!("/ingest?name=evil.cpu&format=folded&{params}");
    let window = format!("from={t}&until={}", t + 10);
    // (what, uri, body, reason, words the message must hold)
    let cases: Vec<(&str, String, Vec<u8>, &str, &str)> = vec![
        ("i64::MAX folded", folded(&window), b"main;a 9223372036854775807\n".to_vec(), "implausible_count", "samples"),
        ("i64::MAX pprof", "/api/v1/profiles?service=evil".into(), huge_pprof, "implausible_count", "threads"),
        ("1 GHz pprof", "/api/v1/profiles?service=evil".into(), ghz_pprof, "bad_sample_rate", "period 1 ns"),
        ("pprof from 1970", "/api/v1/profiles?service=evil".into(), in_1970, "bad_time", "window start"),
        (
            "1e-9 Hz",
            folded(&format!("{window}&sampleRate=1e-9")),
            b"main;a 1\n".to_vec(),
            "bad_sample_rate",
            "sampleRate",
        ),
        ("1 MHz", folded(&format!("{window}&sampleRate=1000000")), b"main;a 1\n".to_vec(), "bad_sample_rate", "100000"),
        ("until=0", folded("until=0"), b"main;a 1\n".to_vec(), "bad_time", "until = 0 ms is before 2000-01-01"),
        (
            "until=i64::MAX",
            folded("until=9223372036854775807"),
            b"main;a 1\n".to_vec(),
            "bad_time",
            "until = 9223372036854775807 ms is more than a day in the future",
        ),
        ("from in 1970", folded(&format!("from=1&until={t}")), b"main;a 1\n".to_vec(), "bad_time", "from = 1000 ms"),
    ];
    let before = s.store.stats().unwrap().profiles;
    for (what, uri, body, reason, words) in cases {
        let a = post(&s.app, &uri, "application/octet-stream", body).await;
        assert_eq!((a.status, a.reason().as_str()), (StatusCode::BAD_REQUEST, reason), "{what}: {}", a.text());
        let message = a.json()["error"].as_str().unwrap_or("").to_string();
        assert!(message.contains(words), "{what}: {message:?} should say {words:?}");
    }
    assert_eq!(s.store.stats().unwrap().profiles, before, "refused profiles were stored");

    let r = range(t - 60, t + 60);
    for (uri, words) in [
        ("/api/v1/flamegraph?service=keep&until=0".to_string(), "until = 0 ms"),
        ("/api/v1/timeline?service=keep&from=0&until=9223372036854775807".to_string(), "from = 0 ms"),
        (format!("/api/v1/timeline?service=keep&from={t}&until=9223372036854775807"), "more than a day"),
        ("/api/v1/flamegraph?service=keep&from=1&until=now".to_string(), "before 2000-01-01"),
        ("/api/v1/export?service=keep&from=now-2000w".to_string(), "from = "),
    ] {
        let a = get(&s.app, &uri).await;
        assert_eq!((a.status, a.reason().as_str()), (StatusCode::BAD_REQUEST, "bad_time"), "{uri}: {}", a.text());
        assert!(a.text().contains(words), "{uri}: {}", a.text());
    }
    assert_eq!(get(&s.app, &format!("/api/v1/timeline?service=keep&{r}")).await.status, StatusCode::OK);
}

/// Issue 13.1: a store that already holds i64::MAX counts (from before the refusal)
/// opens, maintains and answers every query.
#[tokio::test]
async fn a_store_with_absurd_counts_still_serves() {
    let dir = common_dir();
    let t = base_s();
    {
        let store = SqliteStore::open(dir.path(), Default::default()).unwrap();
        for (i, start) in [t * 1000, t * 1000 + 20_000].into_iter().enumerate() {
            let mut b = ProfileBuilder::new("evil", start, start + 10_000, 10_000_000).label("host", "a");
            b.add(&["main", "a"], ThreadState::Runnable, i64::MAX as u64);
            b.add(&["main", "b"], ThreadState::Blocked, 1 + i as u64);
            store.write(&b.finish()).unwrap();
        }
    }
    let conn = rusqlite::Connection::open(dir.path().join("hotframe.db")).unwrap();
    conn.execute("UPDATE profiles SET s_runnable = ?1, s_blocked = 1", [i64::MAX]).unwrap();
    drop(conn);
    let s = open(dir.path(), ServerConfig::default());
    s.store.maintain(hotframe::model::time::now_ms()).expect("maintenance runs");
    let r = range(t - 60, t + 60);
    for uri in [
        format!("/api/v1/flamegraph?service=evil&states=all&{r}"),
        format!("/api/v1/timeline?service=evil&states=all&{r}"),
        format!("/api/v1/export?service=evil&format=folded&{r}"),
        "/api/v1/services".to_string(),
        "/metrics".to_string(),
    ] {
        let a = get(&s.app, &uri).await;
        assert_eq!(a.status, StatusCode::OK, "{uri}: {}", a.text());
    }
}

/// The issue's first pprof attack: one Location holding `lines` inlined Lines,
/// referenced `refs` times by one Sample (a stack of lines x refs frames).
fn inlined_lines_bomb(lines: usize, refs: usize) -> Vec<u8> {
    use pprof::protos;
    let strings = ["", "samples", "count", "f"].map(String::from).to_vec();
    let profile = protos::Profile {
        sample_type: vec![protos::ValueType { ty: 1, unit: 2 }],
        sample: vec![protos::Sample { location_id: vec![1; refs], value: vec![1], label: vec![] }],
        location: vec![protos::Location {
            id: 1,
            line: vec![protos::Line { function_id: 1, line: 0 }; lines],
            ..Default::default()
        }],
        function: vec![protos::Function { id: 1, name: 3, ..Default::default() }],
        string_table: strings,
        ..Default::default()
    };
    prost::Message::encode_to_vec(&profile)
}

/// Peak resident memory of process `pid` (VmHWM), in KiB.
pub(crate) fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/PID/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status")
}

/// Issue 13.2: the pprof attacks of the adversarial run, 16 at a time (one per write
/// slot) against the real server, are refused (400 or 413) while decoding, and the
/// server's peak RSS stays under 512 MiB in all.
#[test]
fn pprof_amplification_attacks_are_refused_within_a_memory_bound() {
    use hotframe::model::pprof::gzip;
    use hotframe::server::push::{LabelPair, PushRequest, RawProfileSeries, RawSample};
    let dir = common_dir();
    let server = crate::common::Server::start(dir.path(), &[]);
    let pid = server.pid();
    // Inflating 16 x 16 MiB in a debug build on a busy machine takes a while.
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(std::time::Duration::from_secs(300)))
        .build()
        .into();
    let t = base_s();
    assert_eq!(
        agent
            .post(&format!("{}/ingest?name=warm&from={t}&until={}", server.url, t + 10))
            .send("main;a 1\n")
            .unwrap()
            .status(),
        200
    );
    let baseline = peak_rss_kib(pid);

    let lines_bomb = inlined_lines_bomb(20_000, 20_000);
    // 16 MiB of empty Sample messages (field 2, length 0), gzip'd.
    let empty_samples = gzip(&[0x12, 0x00].repeat(8 << 20));
    // 16 MiB of empty strings (field 6, length 0): 8 M string table entries.
    let empty_strings = gzip(&[0x32, 0x00].repeat(8 << 20));
    // A Push of 64 raw profiles, each a lines bomb: refused at the first.
    let push = prost::Message::encode_to_vec(&PushRequest {
        series: vec![RawProfileSeries {
            labels: vec![LabelPair { name: "service_name".into(), value: "evil".into() }],
            samples: (0..64).map(|_| RawSample { raw_profile: lines_bomb.clone(), id: String::new() }).collect(),
        }],
    });
    // 16 MiB of empty Push series.
    let empty_series = gzip(&[0x0a, 0x00].repeat(8 << 20));
    let native = server.api("/api/v1/profiles?service=evil");
    let push_url = server.api("/push.v1.PusherService/Push");
    let attacks: Vec<(&str, String, Vec<u8>, &str, u16)> = vec![
        ("inlined lines x references", native.clone(), lines_bomb.clone(), "application/octet-stream", 400),
        ("gzip'd empty samples", native.clone(), empty_samples.clone(), "application/octet-stream", 413),
        ("gzip'd empty strings", native.clone(), empty_strings.clone(), "application/octet-stream", 413),
        ("push of lines bombs", push_url.clone(), push.clone(), "application/proto", 400),
        ("gzip'd empty push series", push_url.clone(), empty_series.clone(), "application/proto", 413),
    ];
    eprintln!(
        "attack bodies: lines bomb {} B, empty samples {} B gzip, empty strings {} B gzip, push {} B, empty series {} B gzip",
        lines_bomb.len(),
        empty_samples.len(),
        empty_strings.len(),
        push.len(),
        empty_series.len()
    );
    let mut overall = baseline;
    for (what, url, body, content_type, status) in attacks {
        // Writing 5 to clear_refs resets the peak (VmHWM) to the current RSS.
        let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
        let before = peak_rss_kib(pid);
        let answers: Vec<(u16, String)> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..16)
                .map(|_| {
                    let (agent, url, body) = (agent.clone(), url.clone(), body.clone());
                    scope.spawn(move || {
                        let mut r = agent.post(&url).content_type(content_type).send(&body[..]).expect("an answer");
                        (r.status().as_u16(), r.body_mut().read_to_string().unwrap_or_default())
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (got, text) in &answers {
            // 429 is fair too: all 16 slots may still be busy with the others.
            assert!(*got == status || *got == 429, "{what}: {got} {text}");
        }
        assert!(answers.iter().any(|(s, _)| *s == status), "{what}: {answers:?}");
        let after = peak_rss_kib(pid);
        eprintln!("{what}: 16 concurrent -> {status}; RSS {} MiB before, peak {} MiB", before / 1024, after / 1024);
        overall = overall.max(after);
    }
    let peak = overall;
    eprintln!("peak RSS: baseline {} MiB, after every attack {} MiB", baseline / 1024, peak / 1024);
    // The stated bound: 16 write slots x limits.max_decode_bytes (32 MiB) = 512 MiB over
    // what the server held before (the compressed bodies of these attacks are small).
    assert!(peak - baseline < 512 * 1024, "peak RSS grew by {} MiB, over 512 MiB", (peak - baseline) / 1024);
    assert_eq!(crate::common::get(&server.api("/healthz")), (200, "ok".to_string()));
}

/// Issue 13.6: label values with NUL/CR/LF or invalid UTF-8 are refused (not turned into
/// U+FFFD), frame names are cut at 4 KiB, empty bodies are refused and profiles without
/// samples are not stored (204).
#[tokio::test]
async fn data_quality_inputs_are_refused_or_cut() {
    use crate::server::{push_request, send};
    use axum::body::Body;
    use axum::http::Request;
    let dir = common_dir();
    let s = open(dir.path(), ServerConfig::default());
    let t = base_s();
    let window = format!("from={t}&until={}", t + 10);
    let folded = "main;a 5\n".as_bytes().to_vec();
    let pprof = encode(&{
        let mut b = ProfileBuilder::new("q", t * 1000, t * 1000 + 10_000, 10_000_000);
        b.add(&["main"], ThreadState::Runnable, 1);
        b.finish()
    });
    let json_push = |value: &str| {
        format!(
            r#"{{"series":[{{"labels":[{{"name":"service_name","value":"q"}},{{"name":"host","value":{}}}],"samples":[{{"rawProfile":"{}"}}]}}]}}"#,
            serde_json::to_string(value).unwrap(),
            hotframe::server::push::base64_encode(&pprof)
        )
        .into_bytes()
    };
    // (what, uri, content type, body, status, reason)
    type Case<'a> = (&'a str, String, &'a str, Vec<u8>, StatusCode, &'a str);
    let cases: Vec<Case> = vec![
        (
            "LF in a label",
            format!("/ingest?name=q.cpu%7Bhost%3Da%0Ab%7D&{window}"),
            "text/plain",
            folded.clone(),
            StatusCode::BAD_REQUEST,
            "bad_labels",
        ),
        (
            "CR in a label",
            format!("/api/v1/profiles?service=q&label.host=a%0Db&{window}"),
            "application/octet-stream",
            pprof.clone(),
            StatusCode::BAD_REQUEST,
            "bad_labels",
        ),
        (
            "NUL in a label",
            format!("/api/v1/profiles?service=q&label.host=a%00b&{window}"),
            "application/octet-stream",
            pprof.clone(),
            StatusCode::BAD_REQUEST,
            "bad_labels",
        ),
        (
            "LF in a Push label",
            "/push.v1.PusherService/Push".into(),
            "application/json",
            json_push("a\nb"),
            StatusCode::BAD_REQUEST,
            "bad_labels",
        ),
        (
            "invalid UTF-8 label",
            format!("/api/v1/profiles?service=q&label.host=%FF&{window}"),
            "application/octet-stream",
            pprof.clone(),
            StatusCode::BAD_REQUEST,
            "bad_query",
        ),
        (
            "invalid UTF-8 in name",
            format!("/ingest?name=q.cpu%7Bhost%3D%C3%28%7D&{window}"),
            "text/plain",
            folded.clone(),
            StatusCode::BAD_REQUEST,
            "bad_query",
        ),
        (
            "empty folded body",
            format!("/ingest?name=q&{window}"),
            "text/plain",
            vec![],
            StatusCode::BAD_REQUEST,
            "empty_body",
        ),
        (
            "empty pprof body",
            "/api/v1/profiles?service=q".into(),
            "application/octet-stream",
            vec![],
            StatusCode::BAD_REQUEST,
            "empty_body",
        ),
        (
            "empty push body",
            "/push.v1.PusherService/Push".into(),
            "application/proto",
            vec![],
            StatusCode::BAD_REQUEST,
            "empty_body",
        ),
    ];
    for (what, uri, content_type, body, status, reason) in cases {
        let a = post(&s.app, &uri, content_type, body).await;
        assert_eq!((a.status, a.reason().as_str()), (status, reason), "{what}: {}", a.text());
    }
    // Invalid UTF-8 inside a Push protobuf label.
    let mut bad_utf8 = push_request("q", pprof.clone());
    bad_utf8.series[0].labels[2].value = "x".into();
    let mut bytes = prost::Message::encode_to_vec(&bad_utf8);
    let at = bytes.windows(1).rposition(|w| w == b"x").unwrap();
    bytes[at] = 0xff;
    let a = post(&s.app, "/push.v1.PusherService/Push", "application/proto", bytes).await;
    assert_eq!((a.status, a.reason().as_str()), (StatusCode::BAD_REQUEST, "bad_push"), "{}", a.text());
    assert_eq!(s.store.stats().unwrap().profiles, 0, "nothing refused was stored");

    // Profiles without samples: 204, nothing stored.
    for (uri, content_type, body) in [
        (format!("/ingest?name=q&{window}"), "text/plain", b"# only a comment\n".to_vec()),
        (
            format!("/api/v1/profiles?service=q&{window}"),
            "application/octet-stream",
            encode(&ProfileBuilder::new("q", t * 1000, t * 1000 + 10_000, 10_000_000).finish()),
        ),
    ] {
        let a = post(&s.app, &uri, content_type, body).await;
        assert_eq!(a.status, StatusCode::NO_CONTENT, "{uri}: {}", a.text());
    }
    assert_eq!(s.store.stats().unwrap().profiles, 0, "empty profiles were stored");

    // A 10 MB frame name is cut to 4 KiB (with a marker); the export stays small.
    let huge = format!("main;{} 3\n", "x".repeat(10 << 20));
    let req = Request::post(format!("/ingest?name=big&{window}")).body(Body::from(huge)).unwrap();
    let a = send(&s.app, req).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let ex = get(&s.app, &format!("/api/v1/export?service=big&format=folded&{}", range(t - 60, t + 60))).await;
    assert!(ex.body.len() < 4200, "export of {} bytes", ex.body.len());
    let line = ex.text();
    let frame = line.trim_end().rsplit_once(' ').unwrap().0.split(';').nth(1).unwrap().to_string();
    assert!(frame.len() <= hotframe::model::profile::MAX_FRAME_NAME, "{}", frame.len());
    assert!(frame.ends_with(hotframe::model::profile::FRAME_CUT_MARKER));
}

/// Issue 13.4: 16 connections that trickle their bodies (one byte every 300 ms) held
/// every write slot, and all other ingest answered 429 for 60 s. Bodies are now read
/// before a write slot is taken, and a body under 1 KiB/s after 5 s is let go (408).
#[test]
fn trickling_bodies_hold_no_write_slot() {
    use std::io::{Read, Write};
    let dir = common_dir();
    let server = crate::common::Server::start(dir.path(), &[]);
    let t = base_s();
    let path = format!("/ingest?name=slow&from={t}&until={}", t + 10);
    let mut slow: Vec<std::net::TcpStream> = (0..16)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(("127.0.0.1", server.port)).expect("connect");
            let head = format!(
                "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/plain\r\nContent-Length: 100000\r\n\r\nm"
            );
            s.write_all(head.as_bytes()).unwrap();
            s
        })
        .collect();
    let started = std::time::Instant::now();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let trickle = std::thread::spawn({
        let mut streams: Vec<_> = slow.iter().map(|s| s.try_clone().unwrap()).collect();
        let stop = stop.clone();
        move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for s in &mut streams {
                    let _ = s.write_all(b"a");
                }
                std::thread::sleep(std::time::Duration::from_millis(300));
            }
        }
    });
    std::thread::sleep(std::time::Duration::from_millis(500));
    for i in 0..3 {
        let (status, body) = crate::common::post(&server.api(&path), "text/plain", format!("main;fast{i} 1\n"));
        assert_eq!(status, 200, "ingest beside 16 trickling bodies: {body}");
    }
    assert!(started.elapsed() < std::time::Duration::from_secs(4), "answered while they trickle");
    // The trickling requests are let go after the grace period, well before 60 s.
    for s in &mut slow {
        s.set_read_timeout(Some(std::time::Duration::from_secs(30))).unwrap();
        let mut answer = [0u8; 64];
        let n = s.read(&mut answer).expect("an answer to the trickling request");
        let head = String::from_utf8_lossy(&answer[..n]);
        assert!(head.starts_with("HTTP/1.1 408"), "{head}");
    }
    let waited = started.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    trickle.join().unwrap();
    assert!(waited < std::time::Duration::from_secs(20), "let go after {waited:?}");
    eprintln!("16 trickling bodies: other ingest 200; trickling ones 408 after {waited:?}");
}

/// Issue 13.6, end to end: `hotframe import` of a folded file without samples is told
/// that nothing was stored (the server answers 204), and the service stays unknown.
#[test]
fn importing_a_profile_without_samples_stores_nothing() {
    let dir = common_dir();
    let server = crate::common::Server::start(&dir.path().join("data"), &[]);
    let file = dir.path().join("empty.folded");
    std::fs::write(&file, "# nothing sampled in this window\n").unwrap();
    let out = std::process::Command::new(crate::common::BIN)
        .args(["import", "--server", &server.url, "--service", "idle", "--from", "now-30s", "--duration", "10s"])
        .arg(&file)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("nothing was stored"), "{stdout}");
    let (status, _) = crate::common::get(&server.api("/api/v1/flamegraph?service=idle"));
    assert_eq!(status, 404, "an idle upload creates no service");
}

/// A tmpfs of `size` mounted for a test, unmounted (lazily) on drop.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(at: &std::path::Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .expect("run mount");
        assert!(status.success(), "mount -t tmpfs failed: {status}");
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Issue 13.5: a full disk answered 500 `internal`. Now ingest answers 507 with
/// Retry-After, /metrics says `hotframe_store_disk_full 1`, reads go on, and writes
/// resume when space comes back.
#[test]
fn a_full_disk_answers_507_keeps_reads_and_recovers() {
    use std::io::Write;
    if !crate::common::require_root("mounting a small tmpfs to fill") {
        return;
    }
    let dir = common_dir();
    let mnt = Tmpfs::mount(&dir.path().join("mnt"), "4m");
    let server = crate::common::Server::start(&mnt.0.join("data"), &[]);
    let t = base_s();
    let ingest = |i: usize| {
        // Distinct long frames, so that each profile adds pages to the database.
        let body: String = (0..40).map(|j| format!("main;f{i}_{j}_{} 1\n", "x".repeat(2000))).collect();
        crate::common::post(&server.api(&format!("/ingest?name=disk&from={t}&until={}", t + 10)), "text/plain", body)
    };
    assert_eq!(ingest(0).0, 200);
    // Fill what is left.
    let filler = mnt.0.join("filler");
    {
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 64 << 10];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
    }
    let mut refused = None;
    for i in 1..200 {
        let (status, body) = ingest(i);
        if status != 200 {
            refused = Some((status, body));
            break;
        }
    }
    let (status, body) = refused.expect("ingest never failed on a full disk");
    assert_eq!(status, 507, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["reason"], "disk_full", "{body}");
    assert!(answer["error"].as_str().unwrap().contains("full"), "{body}");
    let retry = crate::common::http()
        .post(server.api(&format!("/ingest?name=disk&from={t}&until={}", t + 10)))
        .send("main;again 1\n")
        .unwrap();
    assert_eq!(retry.status().as_u16(), 507);
    assert_eq!(retry.headers()["retry-after"], "30");
    let (_, metrics) = crate::common::get(&server.api("/metrics"));
    assert!(metrics.contains("hotframe_store_disk_full 1\n"), "{metrics}");
    assert!(metrics.contains("hotframe_ingest_rejects_total{reason=\"disk_full\"}"), "{metrics}");
    // Reads go on.
    let r = range(t - 60, t + 60);
    let (status, body) = crate::common::get(&server.api(&format!("/api/v1/flamegraph?service=disk&{r}")));
    assert_eq!(status, 200, "{body}");
    assert_eq!(crate::common::get(&server.api("/healthz")), (200, "ok".to_string()));
    // Space comes back: writes resume without a restart.
    std::fs::remove_file(&filler).unwrap();
    assert_eq!(ingest(1000).0, 200);
    let (_, metrics) = crate::common::get(&server.api("/metrics"));
    assert!(metrics.contains("hotframe_store_disk_full 0\n"), "{metrics}");
    drop(server);
}
