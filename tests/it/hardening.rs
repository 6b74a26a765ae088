//! Issue 13 (inputs that crash, hang or brick the server) and issue 11 point 3 (inputs
//! that make the cost absurd): each defect found by the adversarial run, as a
//! regression test through the real router or the real binary over HTTP.

use crate::server::{base_s, common_dir, get, open, post, range};
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
