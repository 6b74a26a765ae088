//! The store conformance suite: every case runs against both backends, a real SQLite
//! file in a temporary directory and a real PostgreSQL database in a throwaway cluster
//! (`pg`): round trips, rollups against raw data, retention, reopening, limits,
//! corruption, concurrent queries. Cases that are about SQLite's file itself (an older
//! schema, a crash of the writing process) run on SQLite only; the replica tests
//! (`replicas`) cover PostgreSQL's.
//!
//! A case is `fn name(b: &Backend)`; `conformance!` makes the tests
//! `store::name::sqlite` and `store::name::postgres`.
//!
//! The crash test needs a second process. It re-runs this test binary with
//! `--exact store::crash_child --nocapture --ignored` and the environment variable
//! `HOTFRAME_CRASH_CHILD_DIR`; `crash_child` is `#[ignore]` and does nothing without
//! that variable, so a normal `cargo test` never runs it as a test of its own.

use hotframe::model::{Profile, ProfileBuilder, ThreadState};
use hotframe::store::{PostgresStore, ProfileStore, Query, SqliteStore, StoreConfig, StoreError};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;

const HOUR: i64 = 3_600_000;
const DAY: i64 = 86_400_000;
/// A fixed "now": 2026-11-20 13:37:00 UTC, not aligned to anything.
const NOW: i64 = 1_795_700_220_000;

/// A profile of `service` on `host` over `[start, start + len)` with samples drawn
/// from a small pool of stacks; `seed` varies the counts.
fn profile(service: &str, host: &str, version: &str, start: i64, len: i64, period_ns: u64, seed: u64) -> Profile {
    let mut b =
        ProfileBuilder::new(service, start, start + len, period_ns).label("host", host).label("version", version);
    let mut rng = fastrand::Rng::with_seed(seed);
    let leaves = ["parse", "encode", "hash", "lock_wait", "read_disk", "sleep"];
    for i in 0..20 {
        let leaf = leaves[i % leaves.len()];
        let depth = 2 + i % 5;
        let mut stack: Vec<String> = vec!["main".into()];
        stack.extend((0..depth).map(|d| format!("layer{d}::handle_{}", (i + d) % 7)));
        stack.push(leaf.to_string());
        let state = ThreadState::ALL[rng.usize(..5)];
        b.add(&stack, state, rng.u64(1..50));
    }
    b.finish()
}

/// (folded stack, state) -> samples of a profile, merging as the store must.
fn folded(p: &Profile) -> BTreeMap<(String, ThreadState), u64> {
    let mut out = BTreeMap::new();
    for s in &p.samples {
        let key = (p.stack_names(s.stack).collect::<Vec<_>>().join(";"), s.state);
        *out.entry(key).or_insert(0) += s.count;
    }
    out
}

/// The same for an aggregate, with nanos.
fn folded_agg(a: &hotframe::model::Aggregate) -> BTreeMap<(String, ThreadState), (u64, u64)> {
    let mut out = BTreeMap::new();
    for s in &a.samples {
        let names: Vec<&str> = a.stacks[s.stack as usize].iter().map(|f| a.frames[*f as usize].as_str()).collect();
        let e = out.entry((names.join(";"), s.state)).or_insert((0, 0));
        e.0 += s.samples;
        e.1 += s.nanos;
    }
    out
}

/// What an aggregate of `profiles` must be, computed here independently of the store.
fn expected(profiles: &[&Profile], states: &[ThreadState]) -> BTreeMap<(String, ThreadState), (u64, u64)> {
    let mut out = BTreeMap::new();
    for p in profiles {
        for ((stack, state), n) in folded(p) {
            if states.is_empty() || states.contains(&state) {
                let e = out.entry((stack, state)).or_insert((0, 0));
                e.0 += n;
                e.1 += n * p.period_ns;
            }
        }
    }
    out
}

fn query(service: &str, from: i64, until: i64) -> Query {
    Query { service: service.into(), profile_type: "cpu".into(), from_ms: from, until_ms: until, ..Query::default() }
}

fn open(dir: &Path) -> SqliteStore {
    SqliteStore::open(dir, StoreConfig::default()).expect("open store")
}

/// Where a conformance case keeps its store.
pub enum Backend {
    Sqlite(tempfile::TempDir),
    Postgres(String),
}

/// A store of either backend.
pub enum AnyStore {
    Sqlite(SqliteStore),
    Postgres(PostgresStore),
}

impl std::ops::Deref for AnyStore {
    type Target = dyn ProfileStore;
    fn deref(&self) -> &Self::Target {
        match self {
            AnyStore::Sqlite(s) => s,
            AnyStore::Postgres(s) => s,
        }
    }
}

impl AnyStore {
    /// One raw profile as written (an inherent method of both stores).
    fn profile(&self, id: i64) -> Result<Option<Profile>, StoreError> {
        match self {
            AnyStore::Sqlite(s) => s.profile(id),
            AnyStore::Postgres(s) => s.profile(id),
        }
    }
}

impl Backend {
    fn sqlite() -> Backend {
        Backend::Sqlite(crate::common::tempdir())
    }

    /// A fresh database in the shared cluster, or None (skipped) without PostgreSQL.
    fn postgres() -> Option<Backend> {
        Some(Backend::Postgres(crate::pg::shared()?.fresh_database()))
    }

    fn open(&self) -> AnyStore {
        self.open_with(StoreConfig::default()).expect("open store")
    }

    fn open_with(&self, config: StoreConfig) -> Result<AnyStore, StoreError> {
        Ok(match self {
            Backend::Sqlite(dir) => AnyStore::Sqlite(SqliteStore::open(dir.path(), config)?),
            Backend::Postgres(url) => AnyStore::Postgres(PostgresStore::open(url, config)?),
        })
    }

    /// Another empty store of the same backend (a new directory or database).
    fn fresh(&self) -> Backend {
        match self {
            Backend::Sqlite(_) => Backend::sqlite(),
            Backend::Postgres(_) => Backend::postgres().expect("the cluster is running"),
        }
    }

    /// The one integer `sql` (both dialects) selects, behind the store's back.
    fn count(&self, sql: &str) -> i64 {
        match self {
            Backend::Sqlite(dir) => rusqlite::Connection::open(dir.path().join("hotframe.db"))
                .unwrap()
                .query_row(sql, [], |r| r.get(0))
                .unwrap(),
            Backend::Postgres(url) => {
                postgres::Client::connect(url, postgres::NoTls).unwrap().query_one(sql, &[]).unwrap().get(0)
            }
        }
    }

    /// Turns the store back into one from before the service buckets.
    fn drop_buckets(&self) {
        let version = match self {
            Backend::Sqlite(_) => 4,
            Backend::Postgres(_) => 1,
        };
        self.exec("DROP TABLE service_buckets");
        self.exec("DROP TABLE bucket_pending");
        self.exec("DELETE FROM meta WHERE key = 'bucket_floor_ms'");
        self.exec(&format!("UPDATE meta SET value = '{version}' WHERE key = 'schema_version'"));
    }

    /// Runs `sql` (written so that both dialects take it) behind the store's back;
    /// returns the rows it changed.
    fn exec(&self, sql: &str) -> u64 {
        match self {
            Backend::Sqlite(dir) => {
                rusqlite::Connection::open(dir.path().join("hotframe.db")).unwrap().execute(sql, []).unwrap() as u64
            }
            Backend::Postgres(url) => {
                postgres::Client::connect(url, postgres::NoTls).unwrap().execute(sql, &[]).unwrap()
            }
        }
    }
}

/// `conformance!(case, ...)`: for each `fn case(b: &Backend)`, a module `case` with the
/// tests `sqlite` and `postgres`.
macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        $(mod $case {
            #[test]
            fn sqlite() {
                super::$case(&super::Backend::sqlite());
            }
            #[test]
            fn postgres() {
                if let Some(b) = super::Backend::postgres() {
                    super::$case(&b);
                }
            }
        })*
    };
}

conformance!(
    write_then_aggregate_round_trip,
    timeline_buckets_per_state,
    rollups_give_the_same_answers_as_raw_data,
    coverage_is_the_union_per_host_across_processes_and_rollups,
    retention_deletes_old_raw_data_and_old_rollups,
    reopening_keeps_everything,
    settings_must_be_json,
    series_limit_per_service,
    bad_profiles_are_refused_and_leave_nothing,
    corrupt_data_is_an_error_not_a_panic,
    queries_run_while_writes_go_on,
    wins_and_work_round_trip,
    a_newer_schema_is_refused,
    service_buckets_give_the_same_answers,
);

/// A store that answers from per-series data only (rollups and raw profiles), for the
/// tests that check the rollups by deleting raw rows behind the store's back: the
/// service buckets hold those rows too (see `service_buckets_give_the_same_answers`).
fn open_per_series(dir: &Path) -> SqliteStore {
    SqliteStore::open(dir, StoreConfig { service_buckets: false, ..StoreConfig::default() }).expect("open store")
}

#[test]
fn store_is_send_and_sync() {
    fn check<T: Send + Sync + 'static>() {}
    check::<SqliteStore>();
    check::<PostgresStore>();
}

fn write_then_aggregate_round_trip(b: &Backend) {
    let store = b.open();
    let t0 = NOW - HOUR;
    let a1 = profile("checkout", "a", "1.0", t0, 10_000, 10_000_000, 1);
    let a2 = profile("checkout", "a", "1.1", t0 + 10_000, 10_000, 10_000_000, 2);
    let b1 = profile("checkout", "b", "1.0", t0, 10_000, 20_000_000, 3);
    let other = profile("billing", "a", "1.0", t0, 10_000, 10_000_000, 4);
    let mut ids = Vec::new();
    for p in [&a1, &a2, &b1, &other] {
        let r = store.write(p).unwrap();
        assert_eq!(r.samples, p.total_samples());
        ids.push(r.profile_id);
    }

    // Everything of one service.
    let all = store.aggregate(&query("checkout", t0, t0 + HOUR)).unwrap();
    assert_eq!(folded_agg(&all), expected(&[&a1, &a2, &b1], &[]));
    assert_eq!(all.profiles, 3);
    // Host a: two profiles back to back (20 s); host b: one (10 s). 30 s in all.
    let seconds: Vec<(Option<&str>, f64)> =
        all.coverage.per_host().iter().map(|h| (h.host.as_deref(), h.seconds())).collect();
    assert_eq!(seconds, [(Some("a"), 20.0), (Some("b"), 10.0)]);
    assert_eq!(all.coverage.hosts(), 2);
    assert_eq!((all.first_ms, all.last_ms), (t0, t0 + 20_000));
    let total: u64 = all.samples.iter().map(|s| s.samples).sum();
    assert_eq!(total, a1.total_samples() + a2.total_samples() + b1.total_samples());

    // Label filters.
    let mut q = query("checkout", t0, t0 + HOUR);
    q.labels.insert("host".into(), "a".into());
    let only_a = store.aggregate(&q).unwrap();
    assert_eq!(folded_agg(&only_a), expected(&[&a1, &a2], &[]));
    assert_eq!(only_a.coverage.hosts(), 1);
    q.labels.insert("version".into(), "1.1".into());
    assert_eq!(folded_agg(&store.aggregate(&q).unwrap()), expected(&[&a2], &[]));
    q.labels.insert("version".into(), "9".into());
    let none = store.aggregate(&q).unwrap();
    assert!(none.samples.is_empty());
    assert_eq!(none.profiles, 0);

    // States filter.
    let mut q = query("checkout", t0, t0 + HOUR);
    q.states = vec![ThreadState::Runnable, ThreadState::Blocked];
    assert_eq!(folded_agg(&store.aggregate(&q).unwrap()), expected(&[&a1, &a2, &b1], &q.states));

    // The range is [from, until) on profile starts.
    let late = store.aggregate(&query("checkout", t0 + 10_000, t0 + HOUR)).unwrap();
    assert_eq!(folded_agg(&late), expected(&[&a2], &[]));
    let early = store.aggregate(&query("checkout", t0, t0 + 10_000)).unwrap();
    assert_eq!(folded_agg(&early), expected(&[&a1, &b1], &[]));

    // A single profile reads back as written.
    let back = store.profile(ids[1]).unwrap().expect("profile 2 is stored");
    assert_eq!(folded(&back), folded(&a2));
    assert_eq!(
        (back.service.as_str(), &back.labels, back.start_ms, back.end_ms),
        ("checkout", &a2.labels, a2.start_ms, a2.end_ms)
    );
    assert!(store.profile(99_999).unwrap().is_none());

    // Services and stats.
    let services = store.services().unwrap();
    let names: Vec<&str> = services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["billing", "checkout"]);
    let checkout = &services[1];
    assert_eq!(checkout.profiles, 3);
    assert_eq!(checkout.labels["host"], ["a", "b"]);
    assert_eq!(checkout.labels["version"], ["1.0", "1.1"]);
    assert_eq!((checkout.first_ms, checkout.last_ms), (t0, t0 + 20_000));
    let stats = store.stats().unwrap();
    assert_eq!(stats.profiles, 4);
    assert_eq!(stats.samples, [&a1, &a2, &b1, &other].iter().map(|p| p.total_samples()).sum::<u64>());
    assert_eq!(stats.series, 4);
    assert!(stats.bytes_on_disk > 0);
    assert_eq!(stats.stacks, 20, "every profile draws from one pool of 20 stacks");
}

fn timeline_buckets_per_state(b: &Backend) {
    let store = b.open();
    let t0 = NOW - HOUR;
    let p1 = profile("svc", "a", "1", t0, 10_000, 10_000_000, 7);
    let p2 = profile("svc", "b", "1", t0 + 60_000, 10_000, 10_000_000, 8);
    store.write(&p1).unwrap();
    store.write(&p2).unwrap();
    let points = store.timeline(&query("svc", t0, t0 + 120_000), 60_000).unwrap();
    assert_eq!(points.len(), 2);
    for (point, p) in points.iter().zip([&p1, &p2]) {
        assert_eq!(point.samples, p.state_totals());
        assert_eq!(point.nanos, p.state_totals().map(|n| n * 10_000_000));
        assert_eq!(point.coverage.hosts(), 1);
        assert_eq!(point.coverage.per_host()[0].seconds(), 10.0);
    }
    assert!(matches!(store.timeline(&query("svc", 0, NOW), 1), Err(StoreError::Invalid(_))));
    assert!(matches!(store.timeline(&query("svc", 0, NOW), 0), Err(StoreError::Invalid(_))));
}

/// Three hosts over three days and a bit, two sampling periods, at awkward times.
fn write_days(store: &dyn ProfileStore) -> Vec<Profile> {
    let mut all = Vec::new();
    let mut seed = 100;
    let mut t = NOW - 3 * DAY - 5 * HOUR - 17 * 60_000;
    while t < NOW - 10 * 60_000 {
        for (h, host) in ["a", "b", "c"].iter().enumerate() {
            seed += 1;
            let period = if h == 2 { 20_000_000 } else { 10_000_000 };
            let p =
                profile("svc", host, if seed % 2 == 0 { "1" } else { "2" }, t + h as i64 * 1_000, 60_000, period, seed);
            store.write(&p).unwrap();
            all.push(p);
        }
        t += 37 * 60_000;
    }
    all
}

fn rollups_give_the_same_answers_as_raw_data(b: &Backend) {
    // Per-series data only: raw rows are deleted behind the store's back below, and
    // the service buckets hold them too.
    let store = b.open_with(StoreConfig { service_buckets: false, ..StoreConfig::default() }).expect("open store");
    let written = write_days(&*store);
    let mut ranges = vec![
        (NOW - 4 * DAY, NOW),                                             // everything
        (NOW - 3 * DAY + 7 * 60_000, NOW - 2 * HOUR + 1),                 // unaligned edges
        (NOW - NOW.rem_euclid(DAY) - 2 * DAY, NOW - NOW.rem_euclid(DAY)), // two whole days
        (NOW - 5 * HOUR, NOW - 2 * HOUR),                                 // hours of today
    ];
    ranges.push((ranges[2].0 + HOUR, ranges[2].1 - HOUR)); // whole hours only
    ranges.push((NOW - 3 * HOUR - 53 * 60_000, NOW - 3 * HOUR - 7 * 60_000)); // 10-minute buckets
    let mut filtered = query("svc", 0, 0);
    filtered.labels.insert("host".into(), "c".into());
    filtered.states = vec![ThreadState::Runnable, ThreadState::Io];
    let queries: Vec<Query> = ranges
        .iter()
        .flat_map(|&(from, until)| {
            [query("svc", from, until), Query { from_ms: from, until_ms: until, ..filtered.clone() }]
        })
        .collect();
    let before: Vec<_> = queries.iter().map(|q| store.aggregate(q).unwrap()).collect();
    let aligned = query("svc", ranges[2].0, NOW);
    let timelines = |store: &dyn ProfileStore| {
        [
            store.timeline(&queries[0], HOUR).unwrap(),
            store.timeline(&aligned, 10 * 60_000).unwrap(),
            store.timeline(&aligned, DAY).unwrap(),
        ]
    };
    let timeline_before = timelines(&*store);

    // The raw answers are right to begin with.
    let (from, until) = ranges[1];
    let inside: Vec<&Profile> = written.iter().filter(|p| p.start_ms >= from && p.start_ms < until).collect();
    assert_eq!(folded_agg(&before[2]), expected(&inside, &[]));
    assert_eq!(before[2].profiles, inside.len() as u64);

    let report = store.maintain(NOW).unwrap();
    assert!(report.rollups_written > 0, "{report:?}");
    assert_eq!(report.raw_deleted, 0);
    for (q, b) in queries.iter().zip(&before) {
        assert_eq!(&store.aggregate(q).unwrap(), b, "query {q:?}");
    }
    assert_eq!(timelines(&*store), timeline_before);
    assert_eq!(store.timeline(&queries[0], 7 * 60_000).unwrap().len(), (4 * DAY / (7 * 60_000) + 1) as usize);

    // Idempotent: nothing left to do, same answers.
    assert_eq!(store.maintain(NOW).unwrap().rollups_written, 0);
    assert_eq!(store.aggregate(&queries[0]).unwrap(), before[0]);

    // Late data for a rolled-up hour counts at once (the stale rollups of its hour and
    // day are not used), and the same after the next maintain rebuilds them.
    let day_start = ranges[2].0;
    let late = profile("svc", "a", "1", day_start + 31 * 60_000, 60_000, 10_000_000, 9_999);
    store.write(&late).unwrap();
    let mut want = folded_agg(&before[4]);
    for (k, v) in expected(&[&late], &[]) {
        let e = want.entry(k).or_insert((0, 0));
        e.0 += v.0;
        e.1 += v.1;
    }
    let with_late = store.aggregate(&queries[4]).unwrap();
    assert_eq!(with_late.profiles, before[4].profiles + 1);
    assert_eq!(folded_agg(&with_late), want);
    let report = store.maintain(NOW).unwrap();
    assert_eq!(report.rollups_written, 4, "one bucket of each level: {report:?}");
    assert_eq!(store.aggregate(&queries[4]).unwrap(), with_late);

    // The rollups are really used: with the raw rows of those whole days gone behind
    // the store's back, a query over them is unchanged.
    let edge = query("svc", day_start + 30 * 60_000 + 1, day_start + 2 * DAY);
    let edge_before = store.aggregate(&edge).unwrap();
    let gone =
        b.exec(&format!("DELETE FROM profiles WHERE start_ms >= {day_start} AND start_ms < {}", day_start + 2 * DAY));
    assert!(gone > 0);
    assert_eq!(store.aggregate(&queries[4]).unwrap(), with_late);
    // ... while a range with a raw edge (up to the next 10 minutes, with the late
    // profile) now misses what was deleted there.
    assert!(store.aggregate(&edge).unwrap().profiles < edge_before.profiles);
}

/// Per host, the wall time an aggregate covers: (host, seconds).
fn coverage_of(agg: &hotframe::model::Aggregate) -> Vec<(Option<String>, f64)> {
    agg.coverage.per_host().iter().map(|h| (h.host.clone(), h.seconds())).collect()
}

fn coverage_is_the_union_per_host_across_processes_and_rollups(b: &Backend) {
    // Per-series data only (see rollups_give_the_same_answers_as_raw_data).
    let store = b.open_with(StoreConfig { service_buckets: false, ..StoreConfig::default() }).expect("open store");
    let day = NOW - NOW.rem_euclid(DAY) - 2 * DAY;
    let t0 = day + 3 * HOUR;
    // Host a: three processes (three series): p1 over [0, 60 s) and p2 over [5 s, 65 s)
    // in 10 s profiles, p3 over [0, 30 s) and [40 s, 60 s). Union: 65 s, not 170 s.
    // Host b: one process over [0, 20 s) and [30 s, 40 s): 30 s.
    let mut seed = 0;
    let mut write = |host: &str, process: &str, starts: &[i64]| {
        for &start in starts {
            seed += 1;
            store.write(&profile("svc", host, process, t0 + start, 10_000, 10_000_000, seed)).unwrap();
        }
    };
    write("a", "p1", &[0, 10_000, 20_000, 30_000, 40_000, 50_000]);
    write("a", "p2", &[5_000, 15_000, 25_000, 35_000, 45_000, 55_000]);
    write("a", "p3", &[0, 10_000, 20_000, 40_000, 50_000]);
    write("b", "p1", &[0, 10_000, 30_000]);
    let whole_day = query("svc", day, day + DAY);
    let raw = store.aggregate(&whole_day).unwrap();
    assert_eq!(raw.profiles, 20);
    assert_eq!(coverage_of(&raw), [(Some("a".to_string()), 65.0), (Some("b".to_string()), 30.0)]);
    assert_eq!(raw.coverage.per_host()[1].intervals, [[t0, t0 + 20_000], [t0 + 30_000, t0 + 40_000]]);
    let w = hotframe::cost::observed_window(&raw.coverage);
    assert_eq!((w.window_seconds, w.profiled_hosts), (47.5, 2));
    // The timeline's point holds the same coverage.
    let points = store.timeline(&whole_day, DAY).unwrap();
    assert_eq!(points[0].coverage, raw.coverage);

    // Rollups keep the intervals: the same answer from the daily rollup alone.
    assert!(store.maintain(NOW).unwrap().rollups_written > 0);
    b.exec("DELETE FROM profiles");
    assert_eq!(store.aggregate(&whole_day).unwrap(), raw);
    assert_eq!(store.timeline(&whole_day, DAY).unwrap(), points);
    drop(store);
    let Backend::Sqlite(dir) = b else { return };
    let conn = rusqlite::Connection::open(dir.path().join("hotframe.db")).unwrap();

    // A store whose rollups were built before they kept intervals (schema 2): each
    // rollup counts as one stretch from its first start, as long as the shorter of its
    // summed profile lengths and its extent. Here that gives the same seconds per host.
    conn.execute_batch(
        "ALTER TABLE rollups DROP COLUMN coverage; UPDATE meta SET value = '2' WHERE key = 'schema_version';",
    )
    .unwrap();
    drop(conn);
    let store = open_per_series(dir.path());
    let old = store.aggregate(&whole_day).unwrap();
    assert_eq!(coverage_of(&old), coverage_of(&raw));
    assert_eq!(old.coverage.per_host()[1].intervals, [[t0, t0 + 30_000]]);
}

fn retention_deletes_old_raw_data_and_old_rollups(b: &Backend) {
    let config = StoreConfig { retention_raw_days: 30, retention_rollup_days: 60, ..StoreConfig::default() };
    let store = b.open_with(config).unwrap();
    let old = profile("svc", "a", "1", NOW - 40 * DAY, 10_000, 10_000_000, 1);
    let ancient = profile("svc", "a", "1", NOW - 90 * DAY, 10_000, 10_000_000, 2);
    let recent = profile("svc", "a", "1", NOW - DAY, 10_000, 10_000_000, 3);
    let ids: Vec<i64> = [&old, &ancient, &recent].iter().map(|p| store.write(p).unwrap().profile_id).collect();
    // A pass long ago rolls up the ancient profile while its raw data was young.
    let then = store.maintain(ancient.start_ms + 2 * DAY).unwrap();
    assert_eq!((then.rollups_written, then.raw_deleted), (4, 0), "10 min, 1 h, 6 h, 1 day: {then:?}");
    let report = store.maintain(NOW).unwrap();
    assert_eq!(report.raw_deleted, 2, "{report:?}");
    assert_eq!(report.rollups_deleted, 4, "the 90-day-old 10 min, 1 h, 6 h, 1 day: {report:?}");
    assert!(store.profile(ids[0]).unwrap().is_none());
    assert!(store.profile(ids[1]).unwrap().is_none());
    assert!(store.profile(ids[2]).unwrap().is_some());
    let stats = store.stats().unwrap();
    assert_eq!(stats.profiles, 1);
    assert_eq!(stats.samples, recent.total_samples());
    // The 40-day-old data lives on in its daily rollup; the 90-day-old is gone.
    let day = NOW - 40 * DAY - (NOW - 40 * DAY).rem_euclid(DAY);
    assert_eq!(folded_agg(&store.aggregate(&query("svc", day, day + DAY)).unwrap()), expected(&[&old], &[]));
    let day = NOW - 90 * DAY - (NOW - 90 * DAY).rem_euclid(DAY);
    assert_eq!(store.aggregate(&query("svc", day, day + DAY)).unwrap().profiles, 0);
    assert_eq!(store.maintain(NOW).unwrap(), Default::default());
}

fn reopening_keeps_everything(b: &Backend) {
    let (before, services, stats) = {
        let store = b.open();
        write_days(&*store);
        store.maintain(NOW).unwrap();
        store.put_settings("svc", r#"{"instance_type":"m6i.large","fleet_hosts":40}"#).unwrap();
        (store.aggregate(&query("svc", NOW - 4 * DAY, NOW)).unwrap(), store.services().unwrap(), store.stats().unwrap())
    };
    let store = b.open();
    assert_eq!(store.aggregate(&query("svc", NOW - 4 * DAY, NOW)).unwrap(), before);
    assert_eq!(store.services().unwrap(), services);
    assert_eq!(store.settings("svc").unwrap().as_deref(), Some(r#"{"instance_type":"m6i.large","fleet_hosts":40}"#));
    assert_eq!(store.settings("other").unwrap(), None);
    let again = store.stats().unwrap();
    assert_eq!(
        (again.profiles, again.samples, again.series, again.stacks),
        (stats.profiles, stats.samples, stats.series, stats.stacks)
    );
    // Writing after reopening reuses interned stacks.
    store.write(&profile("svc", "a", "1", NOW - 60_000, 10_000, 10_000_000, 5)).unwrap();
    assert_eq!(store.stats().unwrap().stacks, stats.stacks);
}

fn settings_must_be_json(b: &Backend) {
    let store = b.open();
    assert!(matches!(store.put_settings("svc", "{nope"), Err(StoreError::Invalid(_))));
    store.put_settings("svc", "{}").unwrap();
    store.put_settings("svc", r#"{"a":1}"#).unwrap();
    assert_eq!(store.settings("svc").unwrap().as_deref(), Some(r#"{"a":1}"#));
}

fn series_limit_per_service(b: &Backend) {
    let store = b.open_with(StoreConfig { max_series_per_service: 2, ..StoreConfig::default() }).unwrap();
    store.write(&profile("svc", "a", "1", NOW, 1_000, 1_000_000, 1)).unwrap();
    store.write(&profile("svc", "b", "1", NOW, 1_000, 1_000_000, 2)).unwrap();
    let err = store.write(&profile("svc", "c", "1", NOW, 1_000, 1_000_000, 3)).unwrap_err();
    assert!(matches!(&err, StoreError::TooManySeries { service, max: 2 } if service == "svc"), "{err}");
    assert!(err.to_string().contains("max_series_per_service"));
    // Existing series and other services still take writes; the refused one left nothing.
    store.write(&profile("svc", "a", "1", NOW + 1_000, 1_000, 1_000_000, 4)).unwrap();
    store.write(&profile("other", "c", "1", NOW, 1_000, 1_000_000, 5)).unwrap();
    let stats = store.stats().unwrap();
    assert_eq!((stats.profiles, stats.series), (4, 3));
}

fn bad_profiles_are_refused_and_leave_nothing(b: &Backend) {
    let store = b.open();
    let mut p = profile("svc", "a", "1", NOW, 1_000, 1_000_000, 1);
    p.end_ms = p.start_ms;
    assert!(matches!(store.write(&p), Err(StoreError::Invalid(_))));
    let mut p = profile("svc", "a", "1", NOW, 1_000, 1_000_000, 1);
    p.samples[0].stack = 10_000;
    assert!(matches!(store.write(&p), Err(StoreError::Invalid(_))));
    assert_eq!(store.stats().unwrap().profiles, 0);
    assert!(store.services().unwrap().is_empty());
}

fn corrupt_data_is_an_error_not_a_panic(b: &Backend) {
    let store = b.open();
    let id = store.write(&profile("svc", "a", "1", NOW - HOUR, 10_000, 10_000_000, 1)).unwrap().profile_id;
    let q = query("svc", NOW - DAY, NOW);
    // Hex blob literals both dialects read: X'..' in SQLite, '\x..'::bytea in PostgreSQL.
    let blob = |hex: &str| match b {
        Backend::Sqlite(_) => format!("X'{hex}'"),
        Backend::Postgres(_) => format!("'\\x{hex}'::bytea"),
    };
    for garbage in ["01ffffff", "", "07616263", "01"] {
        b.exec(&format!("UPDATE profiles SET samples_blob = {} WHERE id = {id}", blob(garbage)));
        assert!(matches!(store.aggregate(&q), Err(StoreError::Corrupt(_))), "{garbage:?}");
        assert!(matches!(store.profile(id), Err(StoreError::Corrupt(_))), "{garbage:?}");
    }
    // A stack whose frame list points nowhere.
    let id = {
        b.exec("DELETE FROM profiles");
        store.write(&profile("svc", "a", "1", NOW - HOUR, 10_000, 10_000_000, 2)).unwrap().profile_id
    };
    b.exec(&format!("UPDATE stacks SET frame_ids = {}", blob("ffffff7f")));
    let fresh = b.open(); // no cached stacks
    let err = fresh.aggregate(&q).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err}");
    assert!(matches!(fresh.profile(id), Err(StoreError::Corrupt(_))));
    // Labels that are not JSON.
    b.exec("UPDATE series SET labels = 'nope'");
    assert!(matches!(fresh.services(), Err(StoreError::Corrupt(_))));
}

/// Issue 13 point 1: rows with absurd counts (i64::MAX samples, from a server that did
/// not refuse them yet, or written by hand) must not stop the store from opening,
/// maintaining (rollups and retention) or answering: every sum saturates.
#[test]
fn absurd_counts_in_the_file_still_open_maintain_and_query() {
    let dir = crate::common::tempdir();
    let huge = i64::MAX as u64;
    {
        let store = open(dir.path());
        for (i, start) in [NOW - 2 * HOUR, NOW - 2 * HOUR + 20_000, NOW - HOUR].into_iter().enumerate() {
            let mut b = ProfileBuilder::new("evil", start, start + 10_000, 10_000_000).label("host", "a");
            b.add(&["main", "a"], ThreadState::Runnable, huge);
            b.add(&["main", "b"], ThreadState::Blocked, 1 + i as u64);
            store.write(&b.finish()).unwrap();
        }
        store.write(&profile("evil", "a", "1", NOW - HOUR, 10_000, 10_000_000, 3)).unwrap();
    }
    // What the issue's pprof left behind: RUNNABLE = i64::MAX and BLOCKED = 1 in the columns.
    let conn = rusqlite::Connection::open(dir.path().join("hotframe.db")).unwrap();
    conn.execute("UPDATE profiles SET s_runnable = ?1, s_blocked = 1", [i64::MAX]).unwrap();
    drop(conn);

    let store = SqliteStore::open(dir.path(), StoreConfig::default()).expect("a store with absurd counts opens");
    assert_eq!(store.stats().unwrap().samples, u64::MAX, "the counter saturates");
    let q = query("evil", NOW - DAY, NOW);
    let raw = store.aggregate(&q).expect("aggregate over absurd counts");
    let raw_a = folded_agg(&raw)[&("main;a".to_string(), ThreadState::Runnable)];
    assert_eq!(raw_a.0, u64::MAX, "samples saturate");
    assert_eq!(raw_a.1, u64::MAX, "nanos saturate");
    store.timeline(&q, HOUR).expect("timeline over absurd counts");
    let report = store.maintain(NOW).expect("maintenance over absurd counts");
    assert!(report.rollups_written > 0, "{report:?}");
    assert_eq!(store.aggregate(&q).expect("aggregate from rollups").samples, raw.samples);
    let later = store.maintain(NOW + 40 * DAY).expect("retention over absurd counts");
    assert_eq!(later.raw_deleted, 4, "{later:?}");
    assert_eq!(store.stats().unwrap().profiles, 0);
    drop(store);
    SqliteStore::open(dir.path(), StoreConfig::default()).expect("and it opens again");
}

fn a_newer_schema_is_refused(b: &Backend) {
    drop(b.open());
    b.exec("UPDATE meta SET value = '999' WHERE key = 'schema_version'");
    let err = b.open_with(StoreConfig::default()).err().expect("refused");
    assert!(err.to_string().contains("999"), "{err}");
}

fn queries_run_while_writes_go_on(b: &Backend) {
    let store = std::sync::Arc::new(b.open());
    let writer = {
        let store = store.clone();
        std::thread::spawn(move || {
            for i in 0..200 {
                store.write(&profile("svc", "a", "1", NOW - HOUR + i * 1_000, 1_000, 1_000_000, i as u64)).unwrap();
            }
        })
    };
    let mut last = 0;
    for _ in 0..50 {
        let a = store.aggregate(&query("svc", NOW - DAY, NOW)).unwrap();
        assert!(a.profiles >= last, "a snapshot never goes back");
        last = a.profiles;
    }
    writer.join().unwrap();
    assert_eq!(store.aggregate(&query("svc", NOW - DAY, NOW)).unwrap().profiles, 200);
}

/// Environment variable that turns `crash_child` on and names its data directory.
const CRASH_ENV: &str = "HOTFRAME_CRASH_CHILD_DIR";

/// The child of `kill_9_loses_no_acknowledged_profile`: writes profiles in a loop and
/// prints `ack <id> <samples>` after each `write` returned. Does nothing unless run by
/// that test (see the module doc).
#[test]
#[ignore = "run as a child process by kill_9_loses_no_acknowledged_profile"]
fn crash_child() {
    let Ok(dir) = std::env::var(CRASH_ENV) else { return };
    let store = open(Path::new(&dir));
    let mut out = std::io::stdout().lock();
    for i in 0..100_000u64 {
        let mut p = profile("svc", "a", "1", NOW + i as i64 * 1_000, 1_000, 10_000_000, i);
        // A stack unique to this profile, so that its samples can be told apart.
        let mut b = ProfileBuilder::new("svc", 0, 1, 1);
        b.merge(&p);
        b.add(&["main", &format!("unique_{i}")], ThreadState::Runnable, i + 1);
        let merged = b.finish();
        p.frames = merged.frames;
        p.stacks = merged.stacks;
        p.samples = merged.samples;
        let r = store.write(&p).unwrap();
        writeln!(out, "ack {} {} {}", r.profile_id, r.samples, i).unwrap();
        out.flush().unwrap();
    }
}

#[test]
fn kill_9_loses_no_acknowledged_profile() {
    let dir = crate::common::tempdir();
    let exe = std::env::current_exe().unwrap();
    let mut child = std::process::Command::new(exe)
        .args(["--exact", "store::crash_child", "--nocapture", "--ignored"])
        .env(CRASH_ENV, dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut acks: Vec<(i64, u64, u64)> = Vec::new();
    let stdout = child.stdout.take().unwrap();
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        let mut parts = line.split_whitespace();
        if parts.next() != Some("ack") {
            continue; // the test harness's own lines
        }
        let nums: Vec<u64> = parts.map(|p| p.parse().unwrap()).collect();
        acks.push((nums[0] as i64, nums[1], nums[2]));
        if acks.len() == 300 {
            child.kill().unwrap(); // SIGKILL on Unix: no destructor, no flush, no checkpoint
            break;
        }
    }
    child.wait().unwrap();
    assert_eq!(acks.len(), 300, "the child stopped early");

    let store = open(dir.path());
    for &(id, samples, i) in &acks {
        let p = store.profile(id).unwrap().unwrap_or_else(|| panic!("acknowledged profile {id} (#{i}) is lost"));
        assert_eq!(p.total_samples(), samples, "profile {id}");
        let unique = format!("main;unique_{i}");
        assert_eq!(folded(&p).get(&(unique, ThreadState::Runnable)), Some(&(i + 1)), "profile {id}");
    }
    assert!(store.stats().unwrap().profiles >= 300);
}

/// The ops-wins ledger and the work counter, which the server keeps in the store too;
/// a claimed send is the claimant's until it is released or its lease runs out.
fn wins_and_work_round_trip(b: &Backend) {
    let store = b.open();
    assert!(store.wins().unwrap().is_empty());
    let a = store.create_win(r#"{"title":"a"}"#).unwrap();
    let c = store.create_win(r#"{"title":"c"}"#).unwrap();
    assert_ne!(a, c);
    assert_eq!(store.win(a).unwrap().as_deref(), Some(r#"{"title":"a"}"#));
    assert_eq!(store.win(c + 100).unwrap(), None);
    assert!(store.update_win(a, r#"{"title":"a2"}"#).unwrap());
    assert!(!store.update_win(c + 100, "{}").unwrap());
    assert!(matches!(store.create_win("not json"), Err(StoreError::Invalid(_))));
    assert!(store.claim_win_send(a, "one", NOW, 60_000).unwrap());
    assert!(store.claim_win_send(a, "one", NOW + 1, 60_000).unwrap(), "a holder may claim again");
    if let Backend::Postgres(_) = b {
        // Shared by several servers: the claim excludes the others until released or expired.
        assert!(!store.claim_win_send(a, "two", NOW + 2, 60_000).unwrap());
        assert!(store.claim_win_send(c, "two", NOW + 2, 60_000).unwrap(), "claims are per win");
        assert!(store.claim_win_send(a, "two", NOW + 60_001, 60_000).unwrap(), "an expired claim is free");
        store.release_win_send(a, "one").unwrap();
        assert!(!store.claim_win_send(a, "one", NOW + 60_002, 60_000).unwrap(), "only the holder releases");
        store.release_win_send(a, "two").unwrap();
    }
    assert!(store.claim_win_send(a, "one", NOW + 60_003, 60_000).unwrap());
    drop(store);
    let store = b.open();
    let all = store.wins().unwrap();
    assert_eq!(all, vec![(a, r#"{"title":"a2"}"#.to_string()), (c, r#"{"title":"c"}"#.to_string())]);

    for (i, (host, work)) in [("a", Some(10)), ("a", Some(20)), ("b", Some(5)), ("b", None)].into_iter().enumerate() {
        let mut p = profile("svc", host, "1", NOW - HOUR + i as i64 * 10_000, 10_000, 10_000_000, i as u64);
        p.work = work;
        store.write(&p).unwrap();
    }
    let total = |host: Option<&str>, from, until| {
        let mut q = query("svc", from, until);
        if let Some(h) = host {
            q.labels.insert("host".into(), h.into());
        }
        let w = store.work(&q).unwrap();
        (w.units, w.profiles)
    };
    assert_eq!(total(None, 0, NOW), (35, 3));
    assert_eq!(total(Some("a"), 0, NOW), (30, 2));
    assert_eq!(total(None, NOW - HOUR + 10_000, NOW - HOUR + 20_000), (20, 1));
}

/// Issue 14: the service buckets (every series of a service merged per minute, ...,
/// day) give the same aggregates as the per-series path, before and after `compact`,
/// with late data, ragged edges, the open minute, retention and a store migrated from
/// before the buckets; and they are really read (raw rows deleted behind the store's
/// back do not change a bucketed answer).
fn service_buckets_give_the_same_answers(b: &Backend) {
    let store = b.open();
    let per_series = b.open_with(StoreConfig { service_buckets: false, ..StoreConfig::default() }).unwrap();
    let written = write_days(&*store);
    // The open minute: a profile that started 5 s before "now".
    let newest = profile("svc", "b", "1", NOW - 5_000, 10_000, 10_000_000, 7_777);
    store.write(&newest).unwrap();
    let day = NOW - NOW.rem_euclid(DAY);
    let mut ranges = vec![
        (NOW - 4 * DAY, NOW),                                 // everything, ragged start
        (NOW - 3 * DAY + 7 * 60_000 + 1, NOW - 2 * HOUR + 1), // ragged both ends
        (day - 2 * DAY, day),                                 // two whole days
        (NOW - 5 * HOUR, NOW - 2 * HOUR),                     // whole minutes
        (NOW - HOUR, NOW),                                    // the last hour, with the open minute
        (NOW - 2 * 60_000 - 1, NOW - 2 * 60_000 + 1),         // inside one minute
    ];
    // Edges that cut through a profile's minute (write_days starts at xx:xx:00, +1 s, +2 s).
    let t = written[30].start_ms;
    ranges.push((t + 1_000, t + 60_000 * 74));
    ranges.push((t - 60_000 * 40, t + 2_000));
    let queries: Vec<Query> = ranges
        .iter()
        .flat_map(|&(from, until)| {
            [
                query("svc", from, until),
                Query { states: vec![ThreadState::Runnable, ThreadState::Io], ..query("svc", from, until) },
            ]
        })
        .collect();
    let check = |when: &str| check_same(&*store, &*per_series, &queries, when);
    // Everything pending: read raw.
    check("before compact");
    let everything: Vec<&Profile> = written.iter().chain([&newest]).collect();
    assert_eq!(folded_agg(&store.aggregate(&queries[0]).unwrap()), expected(&everything, &[]));
    let merged = store.compact().unwrap();
    assert_eq!(merged, everything.len() as u64);
    assert_eq!(store.compact().unwrap(), 0, "nothing left to merge");
    check("after compact");
    store.maintain(NOW).unwrap();
    check("after compact and rollups");

    // Late data for an old minute, pending then merged.
    let late = profile("svc", "c", "2", day - DAY + 31 * 60_000 + 500, 60_000, 20_000_000, 9_999);
    store.write(&late).unwrap();
    // ... and one in a merged minute that a ragged edge cuts (that edge is read raw).
    store.write(&profile("svc", "a", "1", t + 1_500, 10_000, 10_000_000, 9_998)).unwrap();
    check("late, pending");
    assert_eq!(store.compact().unwrap(), 2);
    check("late, merged");
    assert_eq!(store.aggregate(&queries[4]).unwrap().profiles, per_series.aggregate(&queries[4]).unwrap().profiles);

    // The buckets are read: with the raw rows of two whole days gone behind the
    // store's back, the bucketed answer stays and the per-series one (raw before
    // maintain rebuilt the 10-minute rollups of the late minute) changes.
    let whole_days = queries[4].clone();
    let before = store.aggregate(&whole_days).unwrap();
    let timeline_before = store.timeline(&whole_days, HOUR).unwrap();
    let gone = b.exec(&format!("DELETE FROM profiles WHERE start_ms >= {} AND start_ms < {day}", day - 2 * DAY));
    assert!(gone > 0);
    assert_eq!(store.aggregate(&whole_days).unwrap(), before);
    assert_ne!(per_series.aggregate(&whole_days).unwrap(), before);
    assert_eq!(store.timeline(&whole_days, HOUR).unwrap(), timeline_before);
    assert_ne!(per_series.timeline(&whole_days, HOUR).unwrap(), timeline_before);
    drop((store, per_series));

    // A store from before the buckets (SQLite schema 4, PostgreSQL 1): its profiles are queued by the
    // migration, read raw until merged, and the same afterwards.
    let b = b.fresh();
    drop(b.open());
    b.drop_buckets();
    let old = b.open_with(StoreConfig { service_buckets: false, ..StoreConfig::default() }).unwrap();
    write_days(&*old);
    drop(old);
    b.drop_buckets();
    let store = b.open();
    let per_series = b.open_with(StoreConfig { service_buckets: false, ..StoreConfig::default() }).unwrap();
    check_same(&*store, &*per_series, &queries, "migrated, pending");
    assert!(store.compact().unwrap() > 0);
    check_same(&*store, &*per_series, &queries, "migrated, merged");

    // Retention raises the floor: ranges before it are answered per series.
    store.maintain(NOW + 29 * DAY + 12 * HOUR).unwrap();
    check_same(&*store, &*per_series, &queries, "after retention");
    let left = b.count(&format!("SELECT COUNT(*) FROM service_buckets WHERE bucket_ms < {}", NOW - 2 * DAY));
    assert_eq!(left, 0, "buckets before the floor are dropped");
    let floor = b.count("SELECT CAST(value AS BIGINT) FROM meta WHERE key = 'bucket_floor_ms'");
    assert!(floor > NOW - DAY && floor <= NOW, "the floor is where raw retention ends: {floor}");
}

/// Same aggregates, and same timelines in steps that cut minutes (a seventh of the
/// range) and in whole minutes or hours.
fn check_same(store: &dyn ProfileStore, per_series: &dyn ProfileStore, queries: &[Query], when: &str) {
    for q in queries {
        assert_eq!(store.aggregate(q).unwrap(), per_series.aggregate(q).unwrap(), "{when}: {q:?}");
        let span = q.until_ms - q.from_ms;
        for step in [(span / 7).max(1), if span <= 6 * HOUR { 60_000 } else { HOUR }] {
            let timeline = store.timeline(q, step).unwrap();
            assert_eq!(
                timeline,
                per_series.timeline(q, step).unwrap(),
                "{when}: timeline in steps of {step} ms of {q:?}"
            );
        }
    }
}

/// Issue 14 on PostgreSQL: two replicas (two `PostgresStore`s on one database) compact
/// side by side, first while profiles are written through both, then a backlog that
/// both start on at once: every profile is merged exactly once (the counts returned add
/// up, every level's buckets hold each profile once), and the bucketed aggregates equal
/// the per-series ones and the written profiles' own sums.
#[test]
fn replicas_compact_side_by_side() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let Some(b) = Backend::postgres() else { return };
    let replicas = [b.open(), b.open()];
    let per_series = b.open_with(StoreConfig { service_buckets: false, ..StoreConfig::default() }).unwrap();
    let base = NOW - 10 * 60_000;
    // Profiles over 4 minutes of 6 hosts: every batch adds to the same bucket rows.
    let make =
        |i: u64| profile("svc", &format!("h{}", i % 6), "1", base + (i as i64 * 997) % 240_000, 10_000, 10_000_000, i);
    let merged = AtomicU64::new(0);
    let writing = AtomicBool::new(true);
    let written: Vec<Profile> = std::thread::scope(|s| {
        let compactors: Vec<_> = replicas
            .iter()
            .map(|r| {
                let (merged, writing) = (&merged, &writing);
                s.spawn(move || {
                    while writing.load(Ordering::Acquire) {
                        merged.fetch_add(r.compact().unwrap(), Ordering::Relaxed);
                        std::thread::yield_now();
                    }
                })
            })
            .collect();
        let writers: Vec<_> = replicas
            .iter()
            .enumerate()
            .map(|(w, r)| {
                s.spawn(move || {
                    (0..150u64)
                        .map(|i| {
                            let p = make(w as u64 * 1_000 + i);
                            r.write(&p).unwrap();
                            p
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let all: Vec<Profile> = writers.into_iter().flat_map(|h| h.join().unwrap()).collect();
        writing.store(false, Ordering::Release);
        compactors.into_iter().for_each(|h| h.join().unwrap());
        all
    });
    let mut written = written;
    // A backlog of 1,000 (two batches): both replicas start compacting it at once.
    for i in 0..1_000u64 {
        let p = make(10_000 + i);
        replicas[(i % 2) as usize].write(&p).unwrap();
        written.push(p);
    }
    let start = std::sync::Barrier::new(2);
    let split: Vec<u64> = std::thread::scope(|s| {
        let handles: Vec<_> = replicas
            .iter()
            .map(|r| {
                let start = &start;
                s.spawn(move || {
                    start.wait();
                    r.compact().unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let total = merged.load(Ordering::Relaxed) + split.iter().sum::<u64>() + replicas[0].compact().unwrap();
    assert_eq!(total, written.len() as u64, "each profile merged once (backlog split {split:?})");
    assert_eq!(b.count("SELECT COUNT(*) FROM bucket_pending"), 0);
    for level in [60_000, 600_000, HOUR, 6 * HOUR, DAY] {
        let held = b.count(&format!("SELECT SUM(profiles)::int8 FROM service_buckets WHERE resolution_ms = {level}"));
        assert_eq!(held, written.len() as i64, "profiles in the buckets of {level} ms");
    }
    let all: Vec<&Profile> = written.iter().collect();
    for (from, until) in [(NOW - HOUR, NOW), (base + 30_000, base + 200_001), (base - DAY, NOW + DAY)] {
        for r in &replicas {
            let q = query("svc", from, until);
            let agg = r.aggregate(&q).unwrap();
            assert_eq!(agg, per_series.aggregate(&q).unwrap(), "{from}..{until}");
            let inside: Vec<&Profile> =
                all.iter().copied().filter(|p| p.start_ms >= from && p.start_ms < until).collect();
            assert_eq!(folded_agg(&agg), expected(&inside, &[]), "{from}..{until}");
            assert_eq!(agg.profiles, inside.len() as u64);
        }
    }
}
