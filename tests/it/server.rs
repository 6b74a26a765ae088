//! The HTTP API through the real router (`tower::ServiceExt::oneshot`) over a real
//! SQLite store in a temporary directory, and the real binary for `kill -9`.

use crate::common::{self, eventually, http, ChildGuard, BIN};
use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, Request, StatusCode};
use axum::Router;
use hotframe::model::pprof::{encode, gzip, DecodeOptions};
use hotframe::model::{Profile, ProfileBuilder, ThreadState};
use hotframe::server::config::ServerConfig;
use hotframe::server::push::{base64_encode, LabelPair, PushRequest, RawProfileSeries, RawSample};
use hotframe::server::{app, AppState};
use hotframe::store::{ProfileStore, SqliteStore, StoreStats};
use http_body_util::BodyExt;
use serde_json::Value;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceExt;

/// A whole minute an hour ago, in Unix seconds: recent enough for retention (which is
/// relative to now), and old enough that relative defaults do not matter.
pub(crate) fn base_s() -> i64 {
    (hotframe::model::time::now_ms() / 1000 - 3600) / 60 * 60
}

pub(crate) struct Server {
    pub(crate) app: Router,
    pub(crate) store: Arc<SqliteStore>,
}

pub(crate) fn open(dir: &Path, config: ServerConfig) -> Server {
    let store = Arc::new(SqliteStore::open(dir, config.store.clone()).expect("open store"));
    let state = AppState::new(store.clone(), config);
    Server { app: app(state), store }
}

pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

impl Answer {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub(crate) fn reason(&self) -> String {
        self.json()["reason"].as_str().unwrap_or("").to_string()
    }
}

pub(crate) async fn send(app: &Router, request: Request<Body>) -> Answer {
    let response = app.clone().oneshot(request).await.expect("router answers");
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.expect("body").to_bytes();
    Answer { status, headers, body }
}

pub(crate) async fn get(app: &Router, uri: &str) -> Answer {
    send(app, Request::get(uri).body(Body::empty()).unwrap()).await
}

pub(crate) async fn post(app: &Router, uri: &str, content_type: &str, body: Vec<u8>) -> Answer {
    send(app, Request::post(uri).header(header::CONTENT_TYPE, content_type).body(Body::from(body)).unwrap()).await
}

fn stats(store: &SqliteStore) -> StoreStats {
    let mut s = store.stats().expect("stats");
    // File sizes move with WAL checkpoints; the content counters are what must not change.
    s.bytes_on_disk = 0;
    s
}

pub(crate) fn sample_profile(service: &str, start_ms: i64, host: &str) -> Profile {
    let mut b = ProfileBuilder::new(service, start_ms, start_ms + 10_000, 10_000_000).label("host", host);
    b.add(&["main", "work", "hot"], ThreadState::Runnable, 70);
    b.add(&["main", "work", "warm"], ThreadState::Runnable, 30);
    b.add(&["main", "lock"], ThreadState::Blocked, 12);
    b.add(&["main", "sleep"], ThreadState::TimedWaiting, 5);
    b.add(&["main", "idle"], ThreadState::Waiting, 40);
    b.finish()
}

fn child<'a>(node: &'a Value, name: &str) -> &'a Value {
    node["children"]
        .as_array()
        .and_then(|c| c.iter().find(|n| n["name"] == name))
        .unwrap_or_else(|| panic!("no child {name:?} in {}", node["name"]))
}

pub(crate) fn range(from_s: i64, until_s: i64) -> String {
    format!("from={from_s}&until={until_s}")
}

#[tokio::test]
async fn folded_ingest_round_trips() {
    let dir = common_dir();
    let s = open(dir.path(), ServerConfig::default());
    let t = base_s();
    let folded = "main;work;hot 70\nmain;work;warm 30\nmain;io 5\n";
    let uri = format!(
        "/ingest?name=shop.cpu%7Bhost%3Da%2Cversion%3D1.4%7D&from={t}&until={}&sampleRate=100&format=folded",
        t + 10
    );
    let a = post(&s.app, &uri, "text/plain", folded.into()).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!(a.json()["samples"], 105);

    let fg = get(&s.app, &format!("/api/v1/flamegraph?service=shop&{}", range(t - 60, t + 60))).await;
    assert_eq!(fg.status, StatusCode::OK, "{}", fg.text());
    let fg = fg.json();
    assert_eq!(fg["root"]["total"], 105);
    assert_eq!(child(child(&fg["root"], "main"), "work")["total"], 100);
    assert_eq!(child(child(child(&fg["root"], "main"), "work"), "hot")["self"], 70);
    assert_eq!(fg["totals"]["byState"]["RUNNABLE"], 105);

    let ex = get(&s.app, &format!("/api/v1/export?service=shop&format=folded&{}", range(t - 60, t + 60))).await;
    assert_eq!(ex.status, StatusCode::OK);
    assert_eq!(ex.text(), "main;io 5\nmain;work;hot 70\nmain;work;warm 30\n");

    let filtered =
        get(&s.app, &format!("/api/v1/flamegraph?service=shop&label.host=b&{}", range(t - 60, t + 60))).await;
    assert_eq!(filtered.json()["root"]["total"], 0, "a label filter that matches nothing keeps nothing");

    let services = get(&s.app, "/api/v1/services").await.json();
    let shop = &services["services"][0];
    assert_eq!(shop["name"], "shop");
    assert_eq!(shop["labels"]["version"][0], "1.4");
    assert_eq!(shop["sparkline"].as_array().unwrap().len(), 24);
    assert!(shop["sparkline"].as_array().unwrap().iter().any(|v| v.as_f64().unwrap() > 0.0), "{shop}");
}

#[tokio::test]
async fn lines_and_gzip_bodies() {
    let dir = common_dir();
    let s = open(dir.path(), ServerConfig::default());
    let t = base_s();
    let uri = format!("/ingest?name=lines.cpu&from={t}&until={}&format=lines", t + 10);
    let body = gzip(b"a;b\na;b\na;c\n");
    let req = Request::post(&uri).header(header::CONTENT_ENCODING, "gzip").body(Body::from(body)).unwrap();
    let a = send(&s.app, req).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let ex = get(&s.app, &format!("/api/v1/export?service=lines&{}", range(t - 60, t + 60))).await;
    assert_eq!(ex.text(), "a;b 2\na;c 1\n");
}

#[tokio::test]
async fn native_pprof_keeps_thread_states() {
    let dir = common_dir();
    let s = open(dir.path(), ServerConfig::default());
    let t = base_s();
    let p = sample_profile("api", t * 1000, "h1");
    let a = post(
        &s.app,
        "/api/v1/profiles?service=api&label.host=h1&label.region=eu",
        "application/octet-stream",
        gzip(&encode(&p)),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!(a.json()["samples"], p.total_samples());

    let fg = get(&s.app, &format!("/api/v1/flamegraph?service=api&states=all&{}", range(t - 60, t + 60))).await.json();
    let by_state = &fg["totals"]["byState"];
    for state in ThreadState::ALL {
        assert_eq!(by_state[state.as_str()], p.state_totals()[state.index()], "{state}");
    }
    let lock = child(child(&fg["root"], "main"), "lock");
    assert_eq!(lock["states"]["BLOCKED"], 12);
    assert_eq!(lock["cores"], 0.0, "BLOCKED time costs no CPU");

    let cpu = get(&s.app, &format!("/api/v1/flamegraph?service=api&{}", range(t - 60, t + 60))).await.json();
    assert_eq!(cpu["states"], serde_json::json!(["RUNNABLE"]));
    assert_eq!(cpu["root"]["total"], 100);

    let ex =
        get(&s.app, &format!("/api/v1/export?service=api&format=pprof&states=all&{}", range(t - 60, t + 60))).await;
    assert_eq!(ex.status, StatusCode::OK);
    let opts = DecodeOptions { service: "api".into(), start_ms: 0, end_ms: 1, sample_type: None, max_bytes: 1 << 24 };
    let back = hotframe::model::pprof::decode(&ex.body, &opts).expect("exported pprof decodes");
    assert_eq!(back.state_totals(), p.state_totals());

    let svg = get(&s.app, &format!("/api/v1/export?service=api&format=svg&{}", range(t - 60, t + 60))).await;
    assert_eq!(svg.headers[header::CONTENT_TYPE], "image/svg+xml");
    assert!(svg.text().contains("<svg") && svg.text().contains("hot"), "{}", &svg.text()[..200.min(svg.body.len())]);
}

fn multipart(boundary: &str, fields: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, bytes) in fields {
        out.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        out.extend_from_slice(bytes);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    out
}

#[tokio::test]
async fn pyroscope_multipart_pprof() {
    let dir = common_dir();
    let s = open(dir.path(), ServerConfig::default());
    let t = base_s();
    let p = sample_profile("goapp", t * 1000, "x");
    let body = multipart(
        "XyZ123",
        &[("profile", &gzip(&encode(&p))), ("sample_type_config", br#"{"cpu":{"units":"samples"}}"#)],
    );
    let uri = format!("/ingest?name=goapp.cpu%7Benv%3Dprod%7D&from={t}&until={}&spyName=gospy&format=pprof", t + 10);
    let a = post(&s.app, &uri, "multipart/form-data; boundary=XyZ123", body).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let fg =
        get(&s.app, &format!("/api/v1/flamegraph?service=goapp&states=all&label.env=prod&{}", range(t - 60, t + 60)))
            .await
            .json();
    assert_eq!(fg["root"]["total"], p.total_samples());

    let none = multipart("B", &[("other", b"x")]);
    let a = post(&s.app, &uri, "multipart/form-data; boundary=B", none).await;
    assert_eq!((a.status, a.reason().as_str()), (StatusCode::BAD_REQUEST, "bad_multipart"));
}

pub(crate) fn push_request(service: &str, raw: Vec<u8>) -> PushRequest {
    let pair = |n: &str, v: &str| LabelPair { name: n.into(), value: v.into() };
    PushRequest {
        series: vec![RawProfileSeries {
            labels: vec![pair("service_name", service), pair("__name__", "process_cpu"), pair("host", "pod-1")],
            samples: vec![RawSample { raw_profile: raw, id: "00000000-0000-0000-0000-000000000001".into() }],
        }],
    }
}

#[tokio::test]
async fn connect_push_protobuf_and_json() {
    let dir = common_dir();
    let s = open(dir.path(), ServerConfig::default());
    let t = base_s();
    let p = sample_profile("ignored", t * 1000, "x");
    let raw = gzip(&encode(&p));

    let proto = prost::Message::encode_to_vec(&push_request("pushed", raw.clone()));
    let req = Request::post("/push.v1.PusherService/Push")
        .header(header::CONTENT_TYPE, "application/proto")
        .header(header::CONTENT_ENCODING, "gzip")
        .body(Body::from(gzip(&proto)))
        .unwrap();
    let a = send(&s.app, req).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());

    let json = serde_json::json!({"series": [{
        "labels": [{"name": "service_name", "value": "pushed"}, {"name": "host", "value": "pod-2"}],
        "samples": [{"rawProfile": base64_encode(&raw), "ID": "2"}]}]});
    let a = post(&s.app, "/push.v1.PusherService/Push", "application/json", json.to_string().into_bytes()).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!(a.json(), serde_json::json!({}));

    let fg =
        get(&s.app, &format!("/api/v1/flamegraph?service=pushed&states=all&{}", range(t - 60, t + 60))).await.json();
    assert_eq!(fg["root"]["total"], 2 * p.total_samples());
    assert_eq!(fg["cost"]["profiledHosts"], 2);
    let one = get(
        &s.app,
        &format!("/api/v1/flamegraph?service=pushed&states=all&label.host=pod-2&{}", range(t - 60, t + 60)),
    )
    .await
    .json();
    assert_eq!(one["root"]["total"], p.total_samples());
}

/// CPU time consumed by the calling thread.
fn thread_cpu_time() -> std::time::Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    std::time::Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Spins until this thread has used `cpu` of CPU time (the machine may be busy with
/// other tests, so wall time says little), or `wall_limit` passed.
#[inline(never)]
fn busy_loop_for_profiler(cpu: std::time::Duration, wall_limit: std::time::Duration) -> u64 {
    let (start_cpu, start_wall) = (thread_cpu_time(), std::time::Instant::now());
    let mut x: u64 = 1;
    while thread_cpu_time() - start_cpu < cpu && start_wall.elapsed() < wall_limit {
        for i in 0..10_000u64 {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(i));
        }
    }
    x
}

#[tokio::test]
async fn pprof_rs_profile_imports_with_its_totals() {
    let dir = common_dir();
    let s = open(dir.path(), ServerConfig::default());
    let guard = pprof::ProfilerGuardBuilder::default().frequency(500).build().expect("start pprof-rs");
    // The test binary is multi-threaded and allocating: build pprof-rs's unwinder here,
    // not in a signal handler that may interrupt malloc (see inproc::prime_unwinder).
    hotframe::inproc::prime_unwinder();
    let busy = std::time::Duration::from_millis(1500);
    std::hint::black_box(busy_loop_for_profiler(busy, std::time::Duration::from_secs(30)));
    let report = guard.report().build().expect("pprof-rs report");
    drop(guard);
    let proto = report.pprof().expect("pprof-rs encodes");
    let samples_index = proto
        .sample_type
        .iter()
        .position(|vt| proto.string_table[vt.ty as usize] == "samples")
        .expect("pprof-rs writes a samples value");
    let expected: i64 = proto.sample.iter().map(|s| s.value[samples_index]).sum();
    assert!(expected > 50, "pprof-rs took only {expected} samples");

    let bytes = pprof::protos::Message::encode_to_vec(&proto);
    let a = post(&s.app, "/api/v1/profiles?service=pprofrs", "application/octet-stream", bytes).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!(a.json()["samples"], expected);
    let now = hotframe::model::time::now_ms() / 1000;
    let r = range(now - 600, now + 60);
    // pprof-rs stacks are deeper than serde_json's default nesting limit, so the
    // flamegraph is checked as text and the totals through the folded export.
    let fg = get(&s.app, &format!("/api/v1/flamegraph?service=pprofrs&states=all&{r}")).await;
    assert_eq!(fg.status, StatusCode::OK);
    assert!(fg.text().contains(&format!("\"totals\":{{\"samples\":{expected},")), "{}", &fg.text()[..300]);
    let folded = get(&s.app, &format!("/api/v1/export?service=pprofrs&states=all&{r}")).await.text();
    let sum: i64 = folded.lines().map(|l| l.rsplit_once(' ').unwrap().1.parse::<i64>().unwrap()).sum();
    assert_eq!(sum, expected);
    assert!(folded.contains("busy_loop_for_profiler"), "the busy loop is in the exported stacks");
}

#[tokio::test]
async fn flamegraph_cost_matches_a_hand_computation() {
    let dir = common_dir();
    let s = open(dir.path(), ServerConfig::default());
    let t = base_s() * 1000;
    // Two hosts, one 60 s profile each at 100 Hz.
    for (host, hot, cold) in [("a", 3000u64, 1000u64), ("b", 3000, 0)] {
        let mut b = ProfileBuilder::new("pay", t, t + 60_000, 10_000_000).label("host", host);
        b.add(&["main", "hot"], ThreadState::Runnable, hot);
        b.add(&["main", "cold"], ThreadState::Runnable, cold);
        b.add(&["main", "lock"], ThreadState::Blocked, 500);
        let uri = format!("/api/v1/profiles?service=pay&label.host={host}");
        let a = post(&s.app, &uri, "application/octet-stream", encode(&b.finish())).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    }
    let settings = r#"{"pricePerCoreHour": 0.05, "fleetHosts": 10}"#;
    let put = send(
        &s.app,
        Request::put("/api/v1/services/pay/settings")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(settings))
            .unwrap(),
    )
    .await;
    assert_eq!(put.status, StatusCode::OK, "{}", put.text());

    let r = range(t / 1000 - 60, t / 1000 + 120);
    let fg = get(&s.app, &format!("/api/v1/flamegraph?service=pay&states=all&{r}")).await.json();
    // By hand: W = 120 profile-seconds / 2 hosts = 60 s; Hp = 2; H = 10.
    // hot: 6000 samples / 100 Hz = 60 CPU s; cores = 60 / 60 * 10 / 2 = 5.
    let hot = child(child(&fg["root"], "main"), "hot");
    let close = |v: &Value, want: f64| (v.as_f64().unwrap() - want).abs() < 1e-6 * want.max(1.0);
    assert!(close(&hot["cores"], 5.0), "{hot}");
    assert!(close(&hot["usdPerYear"], 5.0 * 8760.0 * 0.05), "{hot}");
    assert!(close(&hot["kgCo2PerYear"], 5.0 * 8760.0 * 7.0 / 1000.0 * 1.7 * 0.379), "{hot}");
    // cold: 1000 samples = 10 CPU s -> 10 / 60 * 5 = 0.8333 cores.
    assert!(close(&child(child(&fg["root"], "main"), "cold")["cores"], 10.0 / 60.0 * 5.0));
    // lock is BLOCKED: no CPU cost, but its samples count.
    let lock = child(child(&fg["root"], "main"), "lock");
    assert_eq!((lock["total"].as_u64(), lock["cores"].as_f64()), (Some(1000), Some(0.0)));
    // The root: 70 CPU s -> 70 / 60 * 5 cores.
    assert!(close(&fg["totals"]["cores"], 70.0 / 60.0 * 5.0), "{}", fg["totals"]);
    assert!(close(&fg["root"]["cores"], 70.0 / 60.0 * 5.0));
    let cost = &fg["cost"];
    assert_eq!((cost["fleetHosts"].as_u64(), cost["profiledHosts"].as_u64()), (Some(10), Some(2)));
    assert!(close(&cost["windowSeconds"], 60.0) && close(&cost["frequencyHz"], 100.0), "{cost}");
    assert!(cost["priceSource"].as_str().unwrap().contains("override"));

    let got = get(&s.app, "/api/v1/services/pay/settings").await.json();
    assert_eq!(got["settings"]["fleetHosts"], 10);
    assert_eq!(got["resolved"]["pricePerCoreHour"], 0.05);

    // Timeline: the profiles sit in one 60 s bucket; 70 CPU s / 60 s * 10 / 2 = 5.83 cores RUNNABLE.
    let tl = get(
        &s.app,
        &format!("/api/v1/timeline?service=pay&states=all&step=60s&from={}&until={}", t / 1000, t / 1000 + 120),
    )
    .await;
    assert_eq!(tl.status, StatusCode::OK, "{}", tl.text());
    let tl = tl.json();
    assert_eq!(tl["stepMs"], 60_000);
    let points = tl["points"].as_array().unwrap();
    assert_eq!(points.len(), 2);
    assert!(close(&points[0]["cores"]["RUNNABLE"], 70.0 / 60.0 * 5.0), "{}", points[0]);
    assert!(close(&points[0]["cores"]["BLOCKED"], 10.0 / 60.0 * 5.0), "{}", points[0]);
    assert_eq!(points[1]["cores"]["RUNNABLE"], 0.0);
}

#[tokio::test]
async fn many_processes_on_a_host_share_one_window() {
    let dir = common_dir();
    let s = open(dir.path(), ServerConfig::default());
    let t = base_s() * 1000;
    // Host db1: 14 processes (one series each) over the same 30 s, 300 samples at 100 Hz
    // each (0.1 core). Host db2: 2 processes over the same 30 s, 600 samples each (0.2
    // core). W = 30 s on each host, not 420 s: 42 + 12 CPU s over 2 x 30 host-s = 0.9
    // cores per host; x H = 2 hosts: 1.8 cores.
    for (host, processes, samples) in [("db1", 14, 300u64), ("db2", 2, 600)] {
        for pid in 0..processes {
            let mut b = ProfileBuilder::new("pg", t, t + 30_000, 10_000_000).label("host", host);
            b.add(&["postgres", "exec"], ThreadState::Runnable, samples);
            let uri = format!("/api/v1/profiles?service=pg&label.host={host}&label.pid={pid}");
            let a = post(&s.app, &uri, "application/octet-stream", encode(&b.finish())).await;
            assert_eq!(a.status, StatusCode::OK, "{}", a.text());
        }
    }
    let r = range(t / 1000 - 60, t / 1000 + 120);
    let fg = get(&s.app, &format!("/api/v1/flamegraph?service=pg&{r}")).await.json();
    let close = |v: &Value, want: f64| (v.as_f64().unwrap() - want).abs() < 1e-9 * want.max(1.0);
    assert!(close(&fg["cost"]["windowSeconds"], 30.0), "{}", fg["cost"]);
    assert_eq!(fg["cost"]["profiledHosts"], 2);
    assert!(close(&fg["totals"]["cores"], 1.8), "{}", fg["totals"]);
    // The timeline agrees, however its points are cut.
    for step in ["180s", "60s", "10s"] {
        let tl = get(&s.app, &format!("/api/v1/timeline?service=pg&step={step}&{r}")).await.json();
        let points: Vec<f64> = tl["points"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["cores"]["RUNNABLE"].as_f64().unwrap())
            .filter(|c| *c > 0.0)
            .collect();
        assert_eq!(points.len(), 1, "{step}: {tl}");
        assert!((points[0] - 1.8).abs() < 1e-9, "{step}: {points:?}");
    }
    // One host alone: its own W and Hp.
    let one = get(&s.app, &format!("/api/v1/flamegraph?service=pg&label.host=db1&{r}")).await.json();
    assert!(close(&one["cost"]["windowSeconds"], 30.0) && close(&one["totals"]["cores"], 1.4), "{}", one["totals"]);
}

#[tokio::test]
async fn max_nodes_prunes_into_other() {
    let dir = common_dir();
    let s = open(dir.path(), ServerConfig::default());
    let t = base_s();
    let folded: String = (0..200).map(|i| format!("main;f{i};g{i} {}\n", i + 1)).collect();
    let uri = format!("/ingest?name=wide&from={t}&until={}", t + 10);
    assert_eq!(post(&s.app, &uri, "text/plain", folded.into()).await.status, StatusCode::OK);
    let fg =
        get(&s.app, &format!("/api/v1/flamegraph?service=wide&maxNodes=50&{}", range(t - 60, t + 60))).await.json();
    assert!(fg["nodes"].as_u64().unwrap() <= 50, "{}", fg["nodes"]);
    assert!(fg["prunedNodes"].as_u64().unwrap() > 0);
    let main = child(&fg["root"], "main");
    assert_eq!(main["total"], (1..=200).sum::<u64>());
    let sum: u64 = main["children"].as_array().unwrap().iter().map(|c| c["total"].as_u64().unwrap()).sum();
    assert_eq!(sum, main["total"].as_u64().unwrap(), "pruned children are kept as [other]");
    assert!(child(main, "[other]")["total"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn bad_input_gets_its_4xx_and_leaves_the_store_unchanged() {
    let dir = common_dir();
    let s = open(dir.path(), ServerConfig::default());
    let t = base_s();
    let ok = format!("/ingest?name=keep&from={t}&until={}", t + 10);
    assert_eq!(post(&s.app, &ok, "text/plain", b"main;a 5\n".to_vec()).await.status, StatusCode::OK);
    let before = stats(&s.store);
    let services_before = get(&s.app, "/api/v1/services").await.json()["services"].as_array().unwrap().len();

    let deep: String = (0..1100).map(|i| format!("f{i};")).collect::<String>() + "leaf 1\n";
    let many_labels: String = (0..40).map(|i| format!("k{i}=v")).collect::<Vec<_>>().join(",");
    let bomb = gzip(&vec![0u8; 64 << 20]);
    assert!(bomb.len() < 1 << 20, "the bomb is small when compressed");
    let no_service_push = prost::Message::encode_to_vec(&PushRequest {
        series: vec![RawProfileSeries {
            labels: vec![],
            samples: vec![RawSample { raw_profile: encode(&sample_profile("x", 0, "h")), id: String::new() }],
        }],
    });
    let garbage_push = prost::Message::encode_to_vec(&push_request("bad", b"\xff\xfe not a profile".to_vec()));
    // (what, uri, content type, body, status, reason)
    type Case<'a> = (&'a str, String, &'a str, Vec<u8>, StatusCode, &'a str);
    let cases: Vec<Case> = vec![
        (
            "garbage pprof",
            "/api/v1/profiles?service=keep".into(),
            "application/octet-stream",
            b"\x0a\xff\xff\xff\xff garbage".to_vec(),
            StatusCode::BAD_REQUEST,
            "bad_pprof",
        ),
        (
            "bad folded",
            ok.clone(),
            "text/plain",
            b"main;a 5\nmain;b five\n".to_vec(),
            StatusCode::BAD_REQUEST,
            "bad_folded",
        ),
        (
            "gzip bomb",
            "/api/v1/profiles?service=keep".into(),
            "application/octet-stream",
            bomb.clone(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
        ),
        ("gzip bomb folded", ok.clone(), "text/plain", bomb, StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
        (
            "oversized body",
            ok.clone(),
            "text/plain",
            vec![b'a'; (16 << 20) + 1],
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
        ),
        (
            "bad label name",
            format!("/ingest?name=keep%7Bbad-key%3D1%7D&from={t}&until={}", t + 10),
            "text/plain",
            b"main;a 5\n".to_vec(),
            StatusCode::BAD_REQUEST,
            "bad_labels",
        ),
        (
            "too many labels",
            format!("/ingest?name=keep%7B{many_labels}%7D&from={t}&until={}", t + 10),
            "text/plain",
            b"main;a 5\n".to_vec(),
            StatusCode::BAD_REQUEST,
            "bad_labels",
        ),
        (
            "unclosed labels",
            format!("/ingest?name=keep%7Bhost%3Da&from={t}&until={}", t + 10),
            "text/plain",
            b"main;a 5\n".to_vec(),
            StatusCode::BAD_REQUEST,
            "bad_labels",
        ),
        ("too deep stack", ok.clone(), "text/plain", deep.into_bytes(), StatusCode::BAD_REQUEST, "stack_too_deep"),
        (
            "bad ingest time",
            format!("/ingest?name=keep&from=soon&until={t}"),
            "text/plain",
            b"main;a 5\n".to_vec(),
            StatusCode::BAD_REQUEST,
            "bad_time",
        ),
        (
            "reversed window",
            format!("/ingest?name=keep&from={}&until={t}", t + 10),
            "text/plain",
            b"main;a 5\n".to_vec(),
            StatusCode::BAD_REQUEST,
            "bad_time",
        ),
        (
            "zero sample rate",
            format!("{ok}&sampleRate=0"),
            "text/plain",
            b"main;a 5\n".to_vec(),
            StatusCode::BAD_REQUEST,
            "bad_sample_rate",
        ),
        (
            "bad service name",
            format!("/ingest?name=no%20spaces&from={t}&until={}", t + 10),
            "text/plain",
            b"main;a 5\n".to_vec(),
            StatusCode::BAD_REQUEST,
            "bad_service",
        ),
        (
            "missing service",
            "/api/v1/profiles".into(),
            "application/octet-stream",
            encode(&sample_profile("x", 0, "h")),
            StatusCode::BAD_REQUEST,
            "bad_service",
        ),
        (
            "push garbage protobuf",
            "/push.v1.PusherService/Push".into(),
            "application/proto",
            b"\xff\xff\xff".to_vec(),
            StatusCode::BAD_REQUEST,
            "bad_push",
        ),
        (
            "push garbage profile",
            "/push.v1.PusherService/Push".into(),
            "application/proto",
            garbage_push,
            StatusCode::BAD_REQUEST,
            "bad_pprof",
        ),
        (
            "push without service",
            "/push.v1.PusherService/Push".into(),
            "application/proto",
            no_service_push,
            StatusCode::BAD_REQUEST,
            "bad_service",
        ),
        (
            "push bad json",
            "/push.v1.PusherService/Push".into(),
            "application/json",
            br#"{"series": [{"samples": [{"rawProfile": "***"}]}]}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "bad_push",
        ),
        (
            "push grpc",
            "/push.v1.PusherService/Push".into(),
            "application/grpc",
            b"".to_vec(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
    ];
    for (what, uri, content_type, body, status, reason) in cases {
        let a = post(&s.app, &uri, content_type, body).await;
        assert_eq!((a.status, a.reason().as_str()), (status, reason), "{what}: {}", a.text());
        assert!(!a.json()["error"].as_str().unwrap_or("").is_empty(), "{what} says what was wrong");
    }

    // A body that claims gzip but is not.
    let req = Request::post(&ok).header(header::CONTENT_ENCODING, "gzip").body(Body::from("main;a 5\n")).unwrap();
    let a = send(&s.app, req).await;
    assert_eq!((a.status, a.reason().as_str()), (StatusCode::BAD_REQUEST, "bad_gzip"));
    // A declared Content-Length over the limit is refused before reading.
    let req =
        Request::post(&ok).header(header::CONTENT_LENGTH, (64u64 << 20).to_string()).body(Body::from("x")).unwrap();
    assert_eq!(send(&s.app, req).await.status, StatusCode::PAYLOAD_TOO_LARGE);

    // Queries.
    let r = range(t - 60, t + 60);
    let q404 = get(&s.app, &format!("/api/v1/flamegraph?service=nosuch&{r}")).await;
    assert_eq!(q404.status, StatusCode::NOT_FOUND);
    assert!(q404.json()["error"].as_str().unwrap().contains("nosuch"));
    assert_eq!(get(&s.app, &format!("/api/v1/timeline?service=nosuch&{r}")).await.status, StatusCode::NOT_FOUND);
    assert_eq!(get(&s.app, &format!("/api/v1/export?service=nosuch&{r}")).await.status, StatusCode::NOT_FOUND);
    for (uri, reason) in [
        ("/api/v1/flamegraph?service=keep&from=yesterday".to_string(), "bad_time"),
        (format!("/api/v1/flamegraph?service=keep&from={}&until={}", t + 10, t), "bad_time"),
        (format!("/api/v1/flamegraph?service=keep&states=SLEEPY&{r}"), "bad_states"),
        (format!("/api/v1/flamegraph?service=keep&maxNodes=0&{r}"), "bad_max_nodes"),
        (format!("/api/v1/flamegraph?{r}"), "bad_service"),
        (format!("/api/v1/export?service=keep&format=png&{r}"), "bad_format"),
        (format!("/api/v1/timeline?service=keep&step=1ms&{r}"), "bad_step"),
    ] {
        let a = get(&s.app, &uri).await;
        assert_eq!((a.status, a.reason()), (StatusCode::BAD_REQUEST, reason.to_string()), "{uri}: {}", a.text());
    }
    // Settings.
    for body in [
        r#"{"instanceType": "z9.huge"}"#,
        r#"{"pricePerCoreHour": -1}"#,
        r#"{"fleetHosts": 0}"#,
        r#"{"price": 1}"#,
        "nope",
    ] {
        let req = Request::put("/api/v1/services/keep/settings").body(Body::from(body)).unwrap();
        let a = send(&s.app, req).await;
        assert_eq!((a.status, a.reason().as_str()), (StatusCode::BAD_REQUEST, "bad_settings"), "{body}: {}", a.text());
    }
    assert_eq!(
        get(&s.app, "/api/v1/services/keep/settings").await.json()["settings"],
        serde_json::json!({
            "instanceType": null, "pricePerCoreHour": null, "fleetHosts": null, "wattsPerCore": null, "pue": null, "kgCo2PerKwh": null
        })
    );

    assert_eq!(stats(&s.store), before, "refused requests changed the store");
    assert_eq!(get(&s.app, "/api/v1/services").await.json()["services"].as_array().unwrap().len(), services_before);

    let metrics = get(&s.app, "/metrics").await.text();
    assert!(metrics.contains("hotframe_ingest_rejects_total{reason=\"bad_folded\"} 1"), "{metrics}");
    assert!(metrics.contains("hotframe_ingest_rejects_total{reason=\"body_too_large\"} 4"), "{metrics}");
    assert!(metrics.contains("hotframe_ingested_profiles_total 1\n"), "{metrics}");
    assert!(
        metrics
            .contains("hotframe_http_request_duration_seconds_bucket{route=\"/ingest\",status=\"200\",le=\"+Inf\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("hotframe_store_profiles 1\n"), "{metrics}");
}

#[tokio::test]
async fn series_over_the_limit_are_refused() {
    let dir = common_dir();
    let mut config = ServerConfig::default();
    config.store.max_series_per_service = 2;
    let s = open(dir.path(), config);
    let t = base_s();
    for (host, status) in
        [("a", StatusCode::OK), ("b", StatusCode::OK), ("a", StatusCode::OK), ("c", StatusCode::BAD_REQUEST)]
    {
        let uri = format!("/ingest?name=card.cpu%7Bhost%3D{host}%7D&from={t}&until={}", t + 10);
        let a = post(&s.app, &uri, "text/plain", b"main;a 1\n".to_vec()).await;
        assert_eq!(a.status, status, "host {host}: {}", a.text());
        if status != StatusCode::OK {
            assert_eq!(a.reason(), "series_limit");
            assert!(a.json()["error"].as_str().unwrap().contains("max_series_per_service"));
        }
    }
    assert_eq!(s.store.stats().unwrap().profiles, 3);
}

fn token_config() -> ServerConfig {
    let text = r#"
[[tokens]]
token = "ingest-token-123"
scopes = ["ingest"]
[[tokens]]
token = "read-token-456"
scopes = ["read"]
[[tokens]]
token = "admin-token-789"
scopes = ["admin"]
"#;
    ServerConfig::from_toml(text, "test.toml").unwrap()
}

async fn with_token(app: &Router, method: &str, uri: &str, token: Option<&str>, body: &str) -> StatusCode {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    send(app, req.body(Body::from(body.to_string())).unwrap()).await.status
}

#[tokio::test]
async fn tokens_and_scopes() {
    let dir = common_dir();
    let s = open(dir.path(), token_config());
    let t = base_s();
    let ingest = format!("/ingest?name=sec&from={t}&until={}", t + 10);
    let query = format!("/api/v1/flamegraph?service=sec&{}", range(t - 60, t + 60));
    let settings = "/api/v1/services/sec/settings";
    let folded = "main;a 3\n";
    assert_eq!(with_token(&s.app, "POST", &ingest, None, folded).await, StatusCode::UNAUTHORIZED);
    assert_eq!(with_token(&s.app, "POST", &ingest, Some("wrong-token-000"), folded).await, StatusCode::UNAUTHORIZED);
    assert_eq!(with_token(&s.app, "POST", &ingest, Some("read-token-456"), folded).await, StatusCode::FORBIDDEN);
    assert_eq!(with_token(&s.app, "POST", &ingest, Some("ingest-token-123"), folded).await, StatusCode::OK);
    assert_eq!(with_token(&s.app, "GET", &query, None, "").await, StatusCode::UNAUTHORIZED);
    assert_eq!(with_token(&s.app, "GET", &query, Some("ingest-token-123"), "").await, StatusCode::FORBIDDEN);
    assert_eq!(with_token(&s.app, "GET", &query, Some("read-token-456"), "").await, StatusCode::OK);
    assert_eq!(with_token(&s.app, "GET", &query, Some("admin-token-789"), "").await, StatusCode::OK);
    assert_eq!(with_token(&s.app, "GET", "/metrics", None, "").await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        with_token(&s.app, "PUT", settings, Some("read-token-456"), r#"{"fleetHosts": 3}"#).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        with_token(&s.app, "PUT", settings, Some("admin-token-789"), r#"{"fleetHosts": 3}"#).await,
        StatusCode::OK
    );
    assert_eq!(with_token(&s.app, "GET", "/healthz", None, "").await, StatusCode::OK);
    assert_eq!(
        with_token(&s.app, "GET", "/", None, "").await,
        StatusCode::OK,
        "the viewer page loads, then asks for a token"
    );
    // Grafana Alloy style: basic auth with the token as password.
    let basic = format!("Basic {}", base64_encode(b"user:read-token-456"));
    let req = Request::get(&query).header(header::AUTHORIZATION, basic).body(Body::empty()).unwrap();
    assert_eq!(send(&s.app, req).await.status, StatusCode::OK);
    let a = send(&s.app, Request::get(&query).body(Body::empty()).unwrap()).await;
    assert_eq!(a.headers[header::WWW_AUTHENTICATE], "Bearer");
    assert_eq!(a.reason(), "unauthorized");
    assert_eq!(s.store.stats().unwrap().profiles, 1, "only the authorized ingest was stored");
}

#[tokio::test]
async fn restart_keeps_profiles_and_settings() {
    let dir = common_dir();
    let t = base_s();
    let r = range(t - 60, t + 60);
    let (before, settings_before) = {
        let s = open(dir.path(), ServerConfig::default());
        for host in ["a", "b", "c"] {
            let p = sample_profile("keep", t * 1000, host);
            let a = post(
                &s.app,
                &format!("/api/v1/profiles?service=keep&label.host={host}"),
                "application/octet-stream",
                encode(&p),
            )
            .await;
            assert_eq!(a.status, StatusCode::OK);
        }
        let req =
            Request::put("/api/v1/services/keep/settings").body(Body::from(r#"{"instanceType": "m5.large"}"#)).unwrap();
        assert_eq!(send(&s.app, req).await.status, StatusCode::OK);
        let fg = get(&s.app, &format!("/api/v1/flamegraph?service=keep&states=all&{r}")).await.json();
        (fg, get(&s.app, "/api/v1/services/keep/settings").await.json())
    };
    let s = open(dir.path(), ServerConfig::default());
    let after = get(&s.app, &format!("/api/v1/flamegraph?service=keep&states=all&{r}")).await.json();
    assert_eq!(after["root"], before["root"]);
    assert_eq!(after["totals"], before["totals"]);
    assert_eq!(after["root"]["total"], 3 * sample_profile("keep", 0, "x").total_samples());
    assert_eq!(get(&s.app, "/api/v1/services/keep/settings").await.json(), settings_before);
    assert_eq!(settings_before["resolved"]["instanceType"], "m5.large");
}

/// A store whose writes wait at a gate, to fill the write queue on purpose.
struct GatedStore {
    inner: SqliteStore,
    entered: std::sync::mpsc::SyncSender<()>,
    release: std::sync::Mutex<std::sync::mpsc::Receiver<()>>,
}

impl ProfileStore for GatedStore {
    fn write(&self, profile: &Profile) -> Result<hotframe::store::WriteReceipt, hotframe::store::StoreError> {
        let _ = self.entered.send(());
        let _ = self.release.lock().unwrap().recv_timeout(std::time::Duration::from_secs(30));
        self.inner.write(profile)
    }
    fn services(&self) -> Result<Vec<hotframe::store::ServiceInfo>, hotframe::store::StoreError> {
        self.inner.services()
    }
    fn aggregate(&self, q: &hotframe::store::Query) -> Result<hotframe::model::Aggregate, hotframe::store::StoreError> {
        self.inner.aggregate(q)
    }
    fn timeline(
        &self,
        q: &hotframe::store::Query,
        step: i64,
    ) -> Result<Vec<hotframe::store::TimelinePoint>, hotframe::store::StoreError> {
        self.inner.timeline(q, step)
    }
    fn settings(&self, service: &str) -> Result<Option<String>, hotframe::store::StoreError> {
        self.inner.settings(service)
    }
    fn put_settings(&self, service: &str, json: &str) -> Result<(), hotframe::store::StoreError> {
        self.inner.put_settings(service, json)
    }
    fn maintain(&self, now_ms: i64) -> Result<hotframe::store::MaintenanceReport, hotframe::store::StoreError> {
        self.inner.maintain(now_ms)
    }
    fn stats(&self) -> Result<StoreStats, hotframe::store::StoreError> {
        self.inner.stats()
    }
    fn create_win(&self, json: &str) -> Result<i64, hotframe::store::StoreError> {
        self.inner.create_win(json)
    }
    fn win(&self, id: i64) -> Result<Option<String>, hotframe::store::StoreError> {
        self.inner.win(id)
    }
    fn wins(&self) -> Result<Vec<(i64, String)>, hotframe::store::StoreError> {
        self.inner.wins()
    }
    fn update_win(&self, id: i64, json: &str) -> Result<bool, hotframe::store::StoreError> {
        self.inner.update_win(id, json)
    }
    fn work(&self, q: &hotframe::store::Query) -> Result<hotframe::store::WorkTotal, hotframe::store::StoreError> {
        self.inner.work(q)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_write_queue_answers_429_with_retry_after() {
    let dir = common_dir();
    let (entered_tx, entered_rx) = std::sync::mpsc::sync_channel(4);
    let (release_tx, release_rx) = std::sync::mpsc::channel();
    let store = GatedStore {
        inner: SqliteStore::open(dir.path(), Default::default()).unwrap(),
        entered: entered_tx,
        release: std::sync::Mutex::new(release_rx),
    };
    let mut config = ServerConfig::default();
    config.limits.max_inflight_writes = 1;
    config.limits.retry_after_secs = 7;
    let router = app(AppState::new(Arc::new(store), config));
    let t = base_s();
    let uri = format!("/ingest?name=slow&from={t}&until={}", t + 10);
    let first = tokio::spawn({
        let (router, uri) = (router.clone(), uri.clone());
        async move { post(&router, &uri, "text/plain", b"main;a 1\n".to_vec()).await.status }
    });
    tokio::task::spawn_blocking(move || entered_rx.recv_timeout(std::time::Duration::from_secs(30)))
        .await
        .unwrap()
        .expect("the first write reached the store");
    let second = post(&router, &uri, "text/plain", b"main;a 1\n".to_vec()).await;
    assert_eq!(second.status, StatusCode::TOO_MANY_REQUESTS, "{}", second.text());
    assert_eq!(second.headers[header::RETRY_AFTER], "7");
    release_tx.send(()).unwrap();
    assert_eq!(first.await.unwrap(), StatusCode::OK);
    release_tx.send(()).unwrap();
    let third = post(&router, &uri, "text/plain", b"main;a 1\n".to_vec()).await;
    assert_eq!(third.status, StatusCode::OK, "the slot is free again");
}

#[tokio::test]
async fn stalled_bodies_time_out_and_free_their_slot() {
    let dir = common_dir();
    let mut config = ServerConfig::default();
    config.limits.body_timeout_secs = 1;
    config.limits.max_inflight_writes = 1;
    let s = open(dir.path(), config);
    let t = base_s();
    let uri = format!("/ingest?name=slow&from={t}&until={}", t + 10);
    // A client that sends a few bytes and then nothing, keeping the connection open.
    let (mut sender, stalled) = http_body_util::channel::Channel::<Bytes, std::io::Error>::new(1);
    sender.send_data(Bytes::from_static(b"main;a")).await.unwrap();
    let req = Request::post(&uri).body(Body::new(stalled)).unwrap();
    let a = send(&s.app, req).await;
    drop(sender);
    assert_eq!((a.status, a.reason().as_str()), (StatusCode::REQUEST_TIMEOUT, "body_timeout"), "{}", a.text());
    assert_eq!(post(&s.app, &uri, "text/plain", b"main;a 1\n".to_vec()).await.status, StatusCode::OK);
}

#[tokio::test]
async fn instance_types_and_health() {
    let dir = common_dir();
    let s = open(dir.path(), ServerConfig::default());
    let it = get(&s.app, "/api/v1/instance-types").await.json();
    let rows = it["instanceTypes"].as_array().unwrap();
    let m5 = rows.iter().find(|r| r["name"] == "m5.large").expect("m5.large in the table");
    let per_core = m5["hourlyUsd"].as_f64().unwrap() / m5["vcpus"].as_f64().unwrap();
    assert!((m5["pricePerCoreHour"].as_f64().unwrap() - per_core).abs() < 1e-12);
    assert!(!m5["source"].as_str().unwrap().is_empty());
    assert_eq!(get(&s.app, "/healthz").await.text(), "ok");
    // Settings can be prepared before a service sends its first profile.
    let req = Request::put("/api/v1/services/future-svc/settings")
        .body(Body::from(r#"{"instanceType": "m5.large", "fleetHosts": 12}"#))
        .unwrap();
    let put = send(&s.app, req).await;
    assert_eq!(put.status, StatusCode::OK, "{}", put.text());
    let got = get(&s.app, "/api/v1/services/future-svc/settings").await.json();
    assert_eq!(
        (got["settings"]["fleetHosts"].as_u64(), got["resolved"]["instanceType"].as_str()),
        (Some(12), Some("m5.large"))
    );
    assert!((got["resolved"]["pricePerCoreHour"].as_f64().unwrap() - per_core).abs() < 1e-12);
    assert_eq!(get(&s.app, "/api/v1/services/bad%20name/settings").await.status, StatusCode::BAD_REQUEST);
    assert_eq!(get(&s.app, "/api/v1/nothing").await.status, StatusCode::NOT_FOUND);
}

pub(crate) fn common_dir() -> tempfile::TempDir {
    crate::common::tempdir()
}

// ---- the real binary -------------------------------------------------------------

#[test]
fn kill_9_loses_no_acknowledged_profile() {
    let dir = common_dir();
    let mut server = common::Server::start(dir.path(), &[]);
    let agent = http();
    let t = base_s();
    let url = server.url.clone();
    let writer = std::thread::spawn({
        let agent = agent.clone();
        move || {
            let mut acknowledged = Vec::new();
            for i in 0..5000u64 {
                let body = format!("main;p{i} {}\n", i + 1);
                let uri = format!("{url}/ingest?name=crash&from={t}&until={}", t + 10);
                match agent.post(&uri).send(body.as_bytes()) {
                    Ok(r) if r.status() == 200 => acknowledged.push(i),
                    Ok(r) => panic!("unexpected status {}", r.status()),
                    Err(_) => break,
                }
            }
            acknowledged
        }
    });
    // Let a stream of ingests run, then kill -9 in the middle of it.
    let metrics = server.api("/metrics");
    eventually("40 profiles stored before the kill", Duration::from_secs(30), || {
        let (_, page) = common::get(&metrics);
        let stored = page
            .lines()
            .find_map(|l| l.strip_prefix("hotframe_ingested_profiles_total "))
            .and_then(|n| n.trim().parse::<u64>().ok())
            .unwrap_or(0);
        if stored >= 40 {
            Ok(())
        } else {
            Err(format!("{stored} stored"))
        }
    });
    server.kill();
    let acknowledged = writer.join().unwrap();
    assert!(acknowledged.len() >= 40, "only {} ingests were acknowledged before the kill", acknowledged.len());

    let restarted = common::Server::start(dir.path(), &[]);
    let uri = format!("{}/api/v1/export?service=crash&from={}&until={}", restarted.url, t - 60, t + 60);
    let folded = agent.get(&uri).call().unwrap().body_mut().read_to_string().unwrap();
    let stored: std::collections::HashMap<String, u64> =
        folded.lines().filter_map(|l| l.rsplit_once(' ').map(|(s, c)| (s.to_string(), c.parse().unwrap()))).collect();
    for i in &acknowledged {
        assert_eq!(stored.get(&format!("main;p{i}")), Some(&(i + 1)), "acknowledged profile {i} was lost");
    }
}

#[test]
fn sigterm_stops_cleanly_and_keeps_data() {
    let dir = common_dir();
    let mut server = common::Server::start(dir.path(), &[]);
    let agent = http();
    let t = base_s();
    let uri = format!("{}/ingest?name=term&from={t}&until={}", server.url, t + 10);
    assert_eq!(agent.post(&uri).send("main;a 7\n").unwrap().status(), 200);
    let index = agent.get(&format!("{}/", server.url)).call().unwrap();
    assert!(index.headers()["content-type"].to_str().unwrap().starts_with("text/html"), "the viewer is served at /");

    // Within 20 s of SIGTERM.
    let status = server.terminate(Duration::from_secs(20));
    assert!(status.success(), "exit status after SIGTERM: {status}");

    let restarted = common::Server::start(dir.path(), &[]);
    let uri = format!("{}/api/v1/export?service=term&from={}&until={}", restarted.url, t - 60, t + 60);
    assert_eq!(agent.get(&uri).call().unwrap().body_mut().read_to_string().unwrap(), "main;a 7\n");
}

#[test]
fn config_file_mistakes_stop_the_server_with_a_message() {
    let dir = common_dir();
    let config = dir.path().join("hotframe.toml");
    std::fs::write(&config, "[limits]\nmax_body = 10\n").unwrap();
    let out = std::process::Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(dir.path().join("data"))
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("hotframe.toml") && stderr.contains("max_body"), "{stderr}");

    let out = std::process::Command::new(BIN)
        .args(["serve", "--listen", "no-port-here", "--data"])
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("invalid --listen \"no-port-here\""), "{stderr}");

    // A valid file with a small body limit is applied; host names resolve.
    std::fs::write(&config, "[limits]\nmax_body_bytes = 1024\n[services.small]\nfleetHosts = 3\n").unwrap();
    let server = common::Server::start(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap(), "--listen", "localhost:0"],
    );
    let agent = http();
    let t = base_s();
    let uri = format!("{}/ingest?name=small&from={t}&until={}", server.url, t + 10);
    let big = "main;a 1\n".repeat(200);
    assert_eq!(agent.post(&uri).send(big.as_str()).unwrap().status(), 413);
    assert_eq!(agent.post(&uri).send("main;a 1\n").unwrap().status(), 200);
    let settings = agent
        .get(&format!("{}/api/v1/services/small/settings", server.url))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    assert!(settings.contains("\"fleetHosts\":3"), "{settings}");
}

#[test]
fn maintenance_runs_on_its_jittered_timer() {
    use std::io::BufRead;
    let dir = common_dir();
    let config = dir.path().join("hotframe.toml");
    std::fs::write(&config, "maintenance_interval = \"300ms\"\n").unwrap();
    let mut child = ChildGuard::spawn(
        std::process::Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(dir.path().join("data"))
            .arg("--config")
            .arg(&config)
            .env("HOTFRAME_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped()),
    );
    let stderr = std::io::BufReader::new(child.0.stderr.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let passes = stderr.lines().map_while(Result::ok).filter(|l| l.contains("maintenance done")).take(2).count();
        let _ = tx.send(passes);
    });
    let passes = rx.recv_timeout(Duration::from_secs(20)).unwrap_or(0);
    child.kill();
    assert_eq!(passes, 2, "two maintenance passes within 20 s at a 300 ms interval");
}
