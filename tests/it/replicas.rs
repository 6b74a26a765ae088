//! Several `hotframe serve` replicas on one real PostgreSQL (a throwaway cluster, see
//! `pg`): ingest through one and query through the other; `kill -9` of a replica in the
//! middle of ingest loses no acknowledged profile; PostgreSQL restarted under load makes
//! the replicas answer 503 with `Retry-After` meanwhile, and they recover by themselves;
//! an ops win's report is emailed once although two replicas run the outbox. And, on
//! the stores themselves: migrations when replicas start together, maintenance in one
//! replica at a time, retention by whole partitions.

use crate::common::{eventually, free_port, http, Server};
use crate::pg::{wait_ready, PgCluster};
use crate::report::SmtpSink;
use hotframe::store::{PostgresStore, ProfileStore, Query, StoreConfig};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Unix seconds, a whole minute, an hour ago (inside every default retention).
fn base_s() -> u64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    (now - 3600) / 60 * 60
}

/// A replica on `url` (its --data directory is unused but must exist).
fn replica(dir: &std::path::Path, name: &str, url: &str, extra: &[&str]) -> Server {
    let mut args = vec!["--store", url];
    args.extend_from_slice(extra);
    Server::start(&dir.join(name), &args)
}

/// `POST /ingest` of folded text; returns the status and the `Retry-After` header.
fn ingest(server: &str, service: &str, folded: &str, from: u64) -> (u16, Option<String>) {
    let response = http()
        .post(format!("{server}/ingest"))
        .query("name", format!("{service}{{host=h1}}"))
        .query("from", from.to_string())
        .query("until", (from + 10).to_string())
        .query("sampleRate", "100")
        .query("format", "folded")
        .header("Content-Type", "text/plain")
        .send(folded);
    match response {
        Ok(r) => (r.status().as_u16(), r.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(String::from)),
        Err(_) => (0, None),
    }
}

/// `folded` export of `service` over the last two hours: stack -> samples.
fn exported(server: &str, service: &str) -> BTreeMap<String, u64> {
    let mut response = http()
        .get(format!("{server}/api/v1/export"))
        .query("service", service)
        .query("from", "now-2h")
        .query("until", "now")
        .call()
        .expect("export answers");
    assert_eq!(response.status().as_u16(), 200);
    let text = response.body_mut().read_to_string().unwrap();
    text.lines()
        .filter_map(|l| l.rsplit_once(' '))
        .map(|(stack, n)| (stack.to_string(), n.parse::<u64>().unwrap()))
        .collect()
}

/// Profiles of `service` the server lists.
fn stored_profiles(server: &str, service: &str) -> u64 {
    let services = crate::common::get_json(&format!("{server}/api/v1/services"));
    services
        .as_array()
        .or_else(|| services["services"].as_array())
        .and_then(|all| all.iter().find(|s| s["name"] == service))
        .and_then(|s| s["profiles"].as_u64())
        .unwrap_or(0)
}

#[test]
fn ingest_through_one_replica_and_query_through_the_other() {
    let Some(pg) = PgCluster::start() else { return };
    let url = pg.fresh_database();
    let dir = crate::common::tempdir();
    let (a, b) = (replica(dir.path(), "a", &url, &[]), replica(dir.path(), "b", &url, &[]));
    let t = base_s();
    assert_eq!(ingest(&a.url, "shop", "main;checkout 70\nmain;render 30\n", t).0, 200);
    assert_eq!(ingest(&b.url, "shop", "main;checkout 5\n", t + 10).0, 200);
    for server in [&a, &b] {
        let folded = exported(&server.url, "shop");
        assert_eq!(folded.get("main;checkout"), Some(&75), "{folded:?}");
        assert_eq!(folded.get("main;render"), Some(&30), "{folded:?}");
        assert_eq!(stored_profiles(&server.url, "shop"), 2);
    }
}

#[test]
fn kill_9_of_a_replica_during_ingest_loses_no_acknowledged_profile() {
    let Some(pg) = PgCluster::start() else { return };
    let url = pg.fresh_database();
    let dir = crate::common::tempdir();
    let (mut a, b) = (replica(dir.path(), "a", &url, &[]), replica(dir.path(), "b", &url, &[]));
    let t = base_s();
    // Four clients send profiles with a stack of their own (`unique_<n>`, n + 1 samples)
    // to replica a and note each one acknowledged.
    let acked: Arc<Mutex<Vec<u64>>> = Arc::default();
    let next = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (server, acked, next) = (a.url.clone(), acked.clone(), next.clone());
            std::thread::spawn(move || loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let folded = format!("main;work 50\nmain;unique_{n} {}\n", n + 1);
                match ingest(&server, "shop", &folded, t + n % 3000) {
                    (200, _) => acked.lock().unwrap().push(n),
                    _ => return, // the replica is gone
                }
            })
        })
        .collect();
    eventually("200 acknowledged profiles", Duration::from_secs(60), || acked.lock().unwrap().len() >= 200);
    a.kill();
    for c in clients {
        c.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    let folded = exported(&b.url, "shop");
    for n in &acked {
        assert_eq!(folded.get(&format!("main;unique_{n}")), Some(&(n + 1)), "acknowledged profile {n} is lost");
    }
    assert!(stored_profiles(&b.url, "shop") >= acked.len() as u64);
}

#[test]
fn postgres_restarted_under_load_gives_503_then_the_replicas_recover_by_themselves() {
    let Some(pg) = PgCluster::start() else { return };
    let url = pg.fresh_database();
    let dir = crate::common::tempdir();
    let replicas = [replica(dir.path(), "a", &url, &[]), replica(dir.path(), "b", &url, &[])];
    let t = base_s();
    let stop = Arc::new(AtomicBool::new(false));
    // status -> count, and one Retry-After of a 503, per replica.
    type Seen = Arc<Mutex<(BTreeMap<u16, u64>, Option<String>)>>;
    let seen: Vec<Seen> = (0..2).map(|_| Seen::default()).collect();
    let acked = Arc::new(AtomicU64::new(0));
    let load: Vec<_> = (0..4)
        .map(|i| {
            let (server, seen, stop, acked) =
                (replicas[i % 2].url.clone(), seen[i % 2].clone(), stop.clone(), acked.clone());
            std::thread::spawn(move || {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let (status, retry_after) = ingest(&server, "shop", "main;work 10\n", t + n % 3000);
                    let mut s = seen.lock().unwrap();
                    *s.0.entry(status).or_insert(0) += 1;
                    if status == 200 {
                        acked.fetch_add(1, Ordering::Relaxed);
                    }
                    if status == 503 && s.1.is_none() {
                        s.1 = retry_after;
                    }
                }
            })
        })
        .collect();
    eventually("ingest through both replicas", Duration::from_secs(30), || {
        seen.iter().all(|s| s.lock().unwrap().0.get(&200).copied().unwrap_or(0) >= 20)
    });
    pg.stop_server("fast");
    eventually("both replicas answer 503 with Retry-After", Duration::from_secs(30), || {
        seen.iter().all(|s| s.lock().unwrap().1.is_some())
    });
    // A query meanwhile: 503 too, with the reason.
    let mut r = http().get(format!("{}/api/v1/services", replicas[0].url)).call().unwrap();
    assert_eq!(r.status().as_u16(), 503);
    assert!(r.headers().get("retry-after").is_some());
    let body: Value = serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
    assert_eq!(body["reason"], "store_unavailable", "{body}");
    let before_restart: Vec<u64> = seen.iter().map(|s| s.lock().unwrap().0.get(&200).copied().unwrap_or(0)).collect();
    pg.start_server();
    wait_ready(&pg);
    eventually("both replicas ingest again, without a restart", Duration::from_secs(60), || {
        seen.iter().zip(&before_restart).all(|(s, b)| s.lock().unwrap().0.get(&200).copied().unwrap_or(0) > b + 20)
    });
    stop.store(true, Ordering::Relaxed);
    for l in load {
        l.join().unwrap();
    }
    for (s, r) in seen.iter().zip(&replicas) {
        let s = s.lock().unwrap();
        let retry: u64 = s.1.as_deref().unwrap().parse().expect("Retry-After in seconds");
        assert!((1..=60).contains(&retry), "Retry-After {retry}");
        assert!(s.0.keys().all(|k| [200, 503].contains(k)), "only 200 and 503 from {}: {:?}", r.url, s.0);
    }
    // Every acknowledged profile is stored (a commit whose answer was lost may add more).
    let stored = stored_profiles(&replicas[1].url, "shop");
    assert!(
        stored >= acked.load(Ordering::Relaxed),
        "stored {stored} < acknowledged {}",
        acked.load(Ordering::Relaxed)
    );
}

#[test]
fn an_ops_win_report_is_emailed_once_with_two_replicas_running_the_outbox() {
    let Some(pg) = PgCluster::start() else { return };
    let url = pg.fresh_database();
    let dir = crate::common::tempdir();
    let config = crate::wins::write_config(dir.path());
    let port = free_port();
    let smtp_url = format!("smtp://127.0.0.1:{port}");
    let flags = ["--config", config.to_str().unwrap(), "--smtp-url", &smtp_url, "--mail-from", "hotframe@example.com"];
    // SMTP down: replica a takes the wins, their sends pending and retried every few
    // hundred ms; replica b starts then and resumes the same pending sends.
    let mut a = replica(dir.path(), "a", &url, &flags);
    let t0 = crate::wins::seed(&a.url);
    let wins: Vec<i64> = (0..4)
        .map(|i| {
            let (status, win) = crate::wins::post_json(
                &format!("{}/api/v1/wins", a.url),
                &crate::wins::new_win(t0, &format!("Win {i}")),
            );
            assert_eq!(status, 201, "{win}");
            win["id"].as_i64().unwrap()
        })
        .collect();
    for id in &wins {
        crate::wins::wait_status(&a.url, *id, "pending", Duration::from_secs(10));
    }
    let mut b = replica(dir.path(), "b", &url, &flags);
    let inbox = dir.path().join("inbox");
    std::fs::create_dir(&inbox).unwrap();
    let sink = SmtpSink::start(port, &inbox);
    for id in &wins {
        crate::wins::wait_status(&b.url, *id, "sent", Duration::from_secs(60));
    }
    // Both replicas stop gracefully, so a send in flight would have arrived.
    a.terminate(Duration::from_secs(30));
    b.terminate(Duration::from_secs(30));
    let got = sink.wait_for(wins.len(), Duration::from_secs(10));
    let mut subjects: Vec<String> = got
        .iter()
        .map(|m| {
            let parsed = mail_parser::MessageParser::default().parse(&m.raw).unwrap();
            parsed.subject().unwrap_or_default().to_string()
        })
        .collect();
    subjects.sort();
    assert_eq!(subjects.len(), wins.len(), "one email per win, not one per replica: {subjects:#?}");
    subjects.dedup();
    assert_eq!(subjects.len(), wins.len(), "{subjects:#?}");
}

/// Stores on one fresh database of the shared cluster, opened at once from `n` threads
/// as replicas starting together do.
fn open_together(url: &str, n: usize) -> Vec<PostgresStore> {
    let barrier = Arc::new(std::sync::Barrier::new(n));
    let threads: Vec<_> = (0..n)
        .map(|_| {
            let (url, barrier) = (url.to_string(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                PostgresStore::open(&url, StoreConfig::default())
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap().expect("every replica opens")).collect()
}

#[test]
fn migrations_are_safe_when_replicas_start_together() {
    let Some(pg) = crate::pg::shared() else { return };
    let url = pg.fresh_database();
    let stores = open_together(&url, 4);
    let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let version: String = client.query_one("SELECT value FROM meta WHERE key = 'schema_version'", &[]).unwrap().get(0);
    assert_eq!(version, "2", "the first schema and the service buckets");
    // Every replica writes and reads through the one schema.
    let t = hotframe::model::time::now_ms() - 3_600_000;
    for (i, s) in stores.iter().enumerate() {
        let mut b = hotframe::model::ProfileBuilder::new("svc", t, t + 10_000, 10_000_000);
        b.add(&["main", "shared_frame"], hotframe::model::ThreadState::Runnable, 1 + i as u64);
        s.write(&b.finish()).unwrap();
    }
    let q = Query { service: "svc".into(), from_ms: t, until_ms: t + 1, ..Query::default() };
    let agg = stores[3].aggregate(&q).unwrap();
    assert_eq!((agg.profiles, agg.samples.len(), agg.frames.len()), (4, 1, 2), "one interned stack: {agg:?}");
    assert_eq!(agg.samples[0].samples, 1 + 2 + 3 + 4);
}

#[test]
fn maintenance_runs_in_one_replica_at_a_time_and_retention_drops_whole_partitions() {
    let Some(pg) = crate::pg::shared() else { return };
    let url = pg.fresh_database();
    let config = StoreConfig { retention_raw_days: 2, ..StoreConfig::default() };
    let (a, b) = (PostgresStore::open(&url, config.clone()).unwrap(), PostgresStore::open(&url, config).unwrap());
    let now = hotframe::model::time::now_ms();
    let day = 86_400_000;
    for (i, start) in [now - 5 * day, now - 3_600_000].into_iter().enumerate() {
        let mut p = hotframe::model::ProfileBuilder::new("svc", start, start + 10_000, 10_000_000);
        p.add(&["main", "work"], hotframe::model::ThreadState::Runnable, 5 + i as u64);
        a.write(&p.finish()).unwrap();
    }
    let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let partitions = |client: &mut postgres::Client| -> Vec<String> {
        let rows = client
            .query(
                "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                 WHERE i.inhparent = 'profiles'::regclass ORDER BY 1",
                &[],
            )
            .unwrap();
        rows.iter().map(|r| r.get(0)).collect()
    };
    let old_day = (now - 5 * day).div_euclid(day);
    let old = format!("profiles_d{old_day}");
    assert!(partitions(&mut client).contains(&old), "{:?}", partitions(&mut client));

    // Another replica holds the maintenance lock: this one does nothing, at once.
    let mut holder = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    holder.execute("SELECT pg_advisory_lock(1752458866, 2)", &[]).unwrap();
    assert_eq!(b.maintain(now).unwrap(), Default::default());
    assert!(partitions(&mut client).contains(&old));
    holder.execute("SELECT pg_advisory_unlock(1752458866, 2)", &[]).unwrap();

    // Two replicas at once: the work is done once.
    let (ra, rb) = std::thread::scope(|s| {
        let ra = s.spawn(|| a.maintain(now).unwrap());
        let rb = s.spawn(|| b.maintain(now).unwrap());
        (ra.join().unwrap(), rb.join().unwrap())
    });
    assert_eq!(ra.raw_deleted + rb.raw_deleted, 1, "{ra:?} {rb:?}");
    assert_eq!(a.maintain(now).unwrap().raw_deleted, 0);
    let left = partitions(&mut client);
    assert!(!left.contains(&old), "the old day's partition is dropped: {left:?}");
    let today = format!("profiles_d{}", now.div_euclid(day));
    let tomorrow = format!("profiles_d{}", now.div_euclid(day) + 1);
    assert!(left.contains(&today) && left.contains(&tomorrow), "made ahead: {left:?}");
    let exists: bool = client.query_one("SELECT to_regclass($1) IS NOT NULL", &[&old]).unwrap().get(0);
    assert!(!exists, "dropped, not left detached");
    let stats = b.stats().unwrap();
    assert_eq!((stats.profiles, stats.samples), (1, 6));
    // The old profile lives on in its rollups.
    let q = Query { service: "svc".into(), from_ms: now - 6 * day, until_ms: now, ..Query::default() };
    assert_eq!(b.aggregate(&q).unwrap().profiles, 2);
}
