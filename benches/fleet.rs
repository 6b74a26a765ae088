//! Flame graphs at fleet volume (`cargo bench --bench fleet`, issue 14 point 3): one
//! service of `FLEET_HOSTS` hosts (default 20; 1000 is the fleet) x 3 processes,
//! each process a series uploading a 10-second profile of ~2,000 distinct stacks. Times
//! `GET /api/v1/flamegraph` through a real `hotframe serve` process: the stored last hour
//! (the hour before the generated data end, whole minutes, so that the time generation
//! takes at full size does not empty it) and the last 5 minutes, both while a thread
//! posts profiles over HTTP at the fleet's rate (the second reads what it posted: merged
//! minutes and profiles still pending), then the stored 7 days; and the server's memory
//! when `FLEET_CLIENTS` (default 4) of the long queries run at once: first
//! with `[store] service_buckets = false` (the per-series path: rollups and raw
//! profiles), then with the service buckets, on the same data in the same run.
//!
//! The data go straight into the store through `ProfileStore::write` (not over HTTP, to
//! load in minutes): 10-second profiles for the last 65 minutes, as agents send them;
//! before that, back to 7 days + 1 hour ago, one profile per series and `FLEET_COARSE_H`
//! hours (default 1; ~5,000 distinct stacks each: a day's merged tree is alike, at a
//! 360th of the writes or fewer). Then `compact` (until nothing is pending) and
//! `maintain` run, as the server's loops would have.
//! Profiles come from `common::pool` (10,000 stacks, Zipf-like weights).
//!
//! Memory: the server's VmRSS before, VmHWM during (reset through
//! /proc/PID/clear_refs, so root or the same user) and its anonymous RSS (heap) 2 s
//! after the queries over before.
//! Knobs: FLEET_HOSTS, FLEET_RUNS (default 5), FLEET_CLIENTS, FLEET_COARSE_H,
//! FLEET_BASELINE=0 (skip the per-series pass), FLEET_WRITERS (threads writing the
//! data, default 1), FLEET_MAINTAIN=0 (no rollups at generation: only with
//! FLEET_BASELINE=0, the server then builds them while the queries run), FLEET_FEEDERS (ingest threads, default
//! 4), FLEET_DIR (keep the data there and reuse them when they exist: generation is most
//! of the run at full size; the data's end is kept in `FLEET_DIR/generated_until_ms`,
//! for either store).
//!
//! Store: SQLite in FLEET_DIR by default; `FLEET_STORE=postgres://...` runs the same
//! bench on that PostgreSQL database (generated through `PostgresStore::write`, reused
//! when it already holds profiles; the server runs with `--store URL`), and `FLEET_PG=1`
//! (without FLEET_STORE) on a throwaway cluster the bench starts (`tests/it/pg.rs`, as
//! root: the server runs as the postgres user).

#[path = "common/mod.rs"]
mod common;

#[path = "../tests/it/pg.rs"]
#[allow(dead_code)]
mod pg;

use common::{env_u64, median, pool, Pool};
use hotframe::model::Profile;
use hotframe::store::{MaintenanceReport, PostgresStore, ProfileStore, SqliteStore, StoreConfig};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_hotframe");
const MINUTE: i64 = 60_000;
const HOUR: i64 = 3_600_000;
const DAY: i64 = 86_400_000;
const PROCESSES: usize = 3;
const FINE_MS: i64 = 65 * MINUTE;

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Labels of series `i`: host, process, version, region.
fn label(p: &mut Profile, series: usize) {
    let host = series / PROCESSES;
    p.labels.insert("host".into(), format!("ip-10-{}-{}-{}.ec2.internal", host / 65_536, host / 256 % 256, host % 256));
    p.labels.insert("process".into(), format!("worker-{}", series % PROCESSES));
}

fn place(p: &mut Profile, start: i64, len: i64, series: usize) {
    p.start_ms = start;
    p.end_ms = start + len;
    label(p, series);
}

/// Where the bench keeps its data.
enum Store {
    Sqlite(PathBuf),
    Postgres(String),
}

impl Store {
    fn open(&self, series: usize) -> Box<dyn ProfileStore> {
        let config = StoreConfig { max_series_per_service: series + 100, ..StoreConfig::default() };
        match self {
            Store::Sqlite(dir) => Box::new(SqliteStore::open(dir, config).expect("open store")),
            Store::Postgres(url) => Box::new(PostgresStore::open(url, config).expect("open store")),
        }
    }

    /// True when it already holds a generated fleet.
    fn has_data(&self, series: usize) -> bool {
        match self {
            Store::Sqlite(dir) => dir.join("hotframe.db").exists(),
            Store::Postgres(_) => self.open(series).stats().expect("stats").profiles > 0,
        }
    }
}

/// Fills `store` with the fleet ending at `now`; returns the profiles written.
fn generate(
    store: &dyn ProfileStore,
    series: usize,
    coarse_ms: i64,
    now: i64,
    pool: &Pool,
    rng: &mut fastrand::Rng,
) -> u64 {
    let ten_s: Vec<Profile> = (0..32).map(|_| pool.profile(rng, 2_000, 1, 10_000)).collect();
    let long: Vec<Profile> = (0..16).map(|_| pool.profile(rng, 5_000, 100, HOUR)).collect();
    let fine_start = now - FINE_MS;
    let mut coarse_steps = Vec::new();
    let mut t = (now - 7 * DAY - HOUR).div_euclid(coarse_ms) * coarse_ms;
    while t < fine_start {
        let len = coarse_ms.min(fine_start - t);
        coarse_steps.push((t, len, 0));
        t += len;
    }
    // Agents upload at their own phase within the 10 s.
    let fine_steps: Vec<(i64, i64, i64)> =
        (0..).map(|i| fine_start + i * 10_000).take_while(|&t| t < now - 10_000).map(|t| (t, 10_000, 7_919)).collect();
    let writers = env_u64("FLEET_WRITERS", 1).max(1) as usize;
    let began = Instant::now();
    let written = AtomicU64::new(0);
    let write_steps = |steps: &[(i64, i64, i64)], pool: &[Profile], what: &str| {
        std::thread::scope(|scope| {
            for w in 0..writers {
                let written = &written;
                let mut mine: Vec<Profile> = pool.to_vec();
                scope.spawn(move || {
                    for &(t, len, phase) in steps {
                        for s in (w..series).step_by(writers) {
                            let k = mine.len();
                            let p = &mut mine[((t / len.max(1)) as usize + s) % k];
                            place(p, t + (s as i64 * phase) % 10_000, len, s);
                            store.write(p).expect("write");
                            let n = written.fetch_add(1, Ordering::Relaxed) + 1;
                            if n % 20_000 == 0 {
                                eprintln!("  {n} profiles written ({what}), {:.0} s", began.elapsed().as_secs_f64());
                            }
                        }
                    }
                });
            }
        });
    };
    write_steps(&coarse_steps, &long, "coarse");
    let coarse = written.load(Ordering::Relaxed);
    let coarse_s = began.elapsed().as_secs_f64();
    write_steps(&fine_steps, &ten_s, "10-second");
    let n = written.load(Ordering::Relaxed);
    let fine_s = began.elapsed().as_secs_f64() - coarse_s;
    let c = Instant::now();
    let mut merged = 0;
    loop {
        let m = store.compact().expect("compact");
        if m == 0 {
            break;
        }
        merged += m;
        eprintln!("  compact: {merged} profiles merged, {:.0} s", c.elapsed().as_secs_f64());
    }
    let compact_s = c.elapsed().as_secs_f64();
    let m = Instant::now();
    let report = if env_u64("FLEET_MAINTAIN", 1) != 0 {
        store.maintain(now_ms()).expect("maintain")
    } else {
        MaintenanceReport::default()
    };
    println!(
        "generated: {coarse} profiles of {} h in {coarse_s:.0} s, {} 10-second profiles in {fine_s:.0} s ({:.0} profiles/s through ProfileStore::write);",
        coarse_ms / HOUR,
        n - coarse,
        (n - coarse) as f64 / fine_s
    );
    println!(
        "  compact merged {merged} profiles in {compact_s:.1} s ({:.0} profiles/s); maintain {:.1} s ({} rollup rows)",
        merged as f64 / compact_s,
        m.elapsed().as_secs_f64(),
        report.rollups_written
    );
    let stats = store.stats().expect("stats");
    println!("  store: {} MiB on disk, {} series, {} stacks", stats.bytes_on_disk >> 20, stats.series, stats.stacks);
    n
}

/// A running `hotframe serve`.
struct Server {
    child: Child,
    url: String,
}

impl Server {
    fn start(data: &Path, config: &Path, store: &Store) -> Server {
        let mut command = Command::new(BIN);
        command.args(["serve", "--listen", "127.0.0.1:0", "--data"]).arg(data).arg("--config").arg(config);
        if let Store::Postgres(url) = store {
            command.args(["--store", url]);
        }
        let mut child = command
            .env("HOTFRAME_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start hotframe serve");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).expect("read the listening line");
        let url = line.trim().strip_prefix("listening on ").expect("listening on ...").to_string();
        Server { child, url }
    }

    fn status(&self, field: &str) -> u64 {
        let text = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        text.lines()
            .find(|l| l.starts_with(field))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    }

    fn reset_peak(&self) {
        let _ = std::fs::write(format!("/proc/{}/clear_refs", self.child.id()), "5");
    }

    fn stop(mut self) {
        // SAFETY: kill(2) on the pid of a child we started and have not reaped.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

/// One flame graph of `range` (`from=...&until=...`): (ms, profiles merged, samples).
fn flamegraph(url: &str, range: &str) -> (f64, u64, u64) {
    let t = Instant::now();
    let body = ureq::get(&format!("{url}/api/v1/flamegraph?service=checkout&{range}"))
        .call()
        .expect("flamegraph")
        .into_body()
        .read_to_string()
        .expect("body");
    let ms = t.elapsed().as_secs_f64() * 1e3;
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    (ms, v["totals"]["profiles"].as_u64().unwrap_or(0), v["totals"]["samples"].as_u64().unwrap_or(0))
}

/// Posts 10-second profiles of every `lanes`th series from `lane` on at the fleet's rate
/// until stopped (one connection each: `lanes` threads together keep the fleet's rate).
fn ingest(
    url: String,
    series: usize,
    lane: usize,
    lanes: usize,
    bodies: Vec<Vec<u8>>,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
) {
    let per_second = series as f64 / 10.0;
    let began = Instant::now();
    let mut i = lane;
    while !stop.load(Ordering::Relaxed) {
        let due = began + Duration::from_secs_f64(i as f64 / per_second);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait.min(Duration::from_millis(100)));
            continue;
        }
        let s = i % series;
        let host = s / PROCESSES;
        let now = now_ms();
        let u = format!(
            "{url}/api/v1/profiles?service=checkout&label.host=ip-10-{}-{}-{}.ec2.internal&label.process=worker-{}&label.version=1.4.2&label.region=eu-west-1&from={}&until={}",
            host / 65_536,
            host / 256 % 256,
            host % 256,
            s % PROCESSES,
            now - 10_000,
            now
        );
        if ureq::post(&u).send(&bodies[i % bodies.len()][..]).is_ok() {
            sent.fetch_add(1, Ordering::Relaxed);
        }
        i += lanes;
    }
}

/// `clients` flame graphs at once: (RSS before, peak RSS over it per query, anonymous
/// RSS after - before: the heap a query leaves behind; SQLite's mapped database pages
/// are the page cache's, not the server's to give back).
fn memory(server: &Server, range: &str, clients: usize) -> (f64, f64, f64) {
    let before = server.status("VmRSS:");
    let anon_before = server.status("RssAnon:");
    server.reset_peak();
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let url = server.url.clone();
            let range = range.to_string();
            std::thread::spawn(move || flamegraph(&url, &range))
        })
        .collect();
    for t in threads {
        t.join().expect("query thread");
    }
    let peak = server.status("VmHWM:");
    std::thread::sleep(Duration::from_secs(2));
    let anon_after = server.status("RssAnon:");
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    (mib(before), mib(peak.saturating_sub(before)) / clients as f64, mib(anon_after) - mib(anon_before))
}

fn main() {
    let hosts = env_u64("FLEET_HOSTS", 20) as usize;
    let runs = env_u64("FLEET_RUNS", 5).max(1) as usize;
    let clients = env_u64("FLEET_CLIENTS", 4).max(1) as usize;
    let series = hosts * PROCESSES;
    let mut rng = fastrand::Rng::with_seed(14);
    let pool = pool(&mut rng, 10_000);
    let temp = tempfile::tempdir().expect("temp dir");
    let dir: PathBuf = std::env::var_os("FLEET_DIR").map(PathBuf::from).unwrap_or_else(|| temp.path().join("data"));
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "fleet benchmark: {hosts} hosts x {PROCESSES} processes = {series} series, 10-second profiles of ~2,000 distinct stacks \
         ({:.0} profiles/s, {:.0} a minute); {runs} runs, {clients} concurrent clients; load {}",
        series as f64 / 10.0,
        series as f64 * 6.0,
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
    // FLEET_STORE, or a throwaway PostgreSQL cluster with FLEET_PG=1, or SQLite in `dir`.
    let cluster = match std::env::var("FLEET_STORE") {
        Err(_) if env_u64("FLEET_PG", 0) == 1 => Some(pg::PgCluster::start().expect("PostgreSQL for FLEET_PG=1")),
        _ => None,
    };
    let store = match (std::env::var("FLEET_STORE"), &cluster) {
        (Ok(url), _) => Store::Postgres(url),
        (Err(_), Some(c)) => Store::Postgres(c.fresh_database()),
        (Err(_), None) => Store::Sqlite(dir.clone()),
    };
    std::fs::create_dir_all(&dir).expect("data dir");
    match &store {
        Store::Sqlite(dir) => println!("store: SQLite in {}", dir.display()),
        Store::Postgres(url) => println!("store: PostgreSQL {}", hotframe::store::postgres::redacted(url)),
    }
    // Where the generated data end: the queries of the stored hour and week end there
    // (on a whole minute), however long generation took or how old reused data are.
    let end_file = dir.join("generated_until_ms");
    if store.has_data(series) {
        println!("reusing the stored data");
    } else {
        let coarse_ms = env_u64("FLEET_COARSE_H", 1).clamp(1, 24) as i64 * HOUR;
        let now = now_ms();
        generate(&*store.open(series), series, coarse_ms, now, &pool, &mut rng);
        std::fs::write(&end_file, now.to_string()).expect("write generated_until_ms");
    }
    let end = std::fs::read_to_string(&end_file)
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
        .expect("generated_until_ms in FLEET_DIR (the end of the generated data, ms)")
        .div_euclid(MINUTE)
        * MINUTE;
    let baseline = env_u64("FLEET_BASELINE", 1) != 0;
    let lanes = env_u64("FLEET_FEEDERS", 4).max(1) as usize;
    let bodies: Vec<Vec<u8>> = (0..8)
        .map(|_| {
            hotframe::model::pprof::gzip(&hotframe::model::pprof::encode(&pool.profile(&mut rng, 2_000, 1, 10_000)))
        })
        .collect();

    let hour = format!("from={}&until={end}", end - HOUR);
    let week = format!("from={}&until={end}", end - 7 * DAY);
    println!();
    println!(
        "stored hour and week end at {end} ({:.0} min ago); \"last 5 min\" reads what the ingest thread posts meanwhile",
        (now_ms() - end) as f64 / MINUTE as f64
    );
    println!(
        "{:<40} {:>10} {:>10} {:>10} {:>10} {:>11} {:>14} {:>12}",
        "GET /api/v1/flamegraph", "median ms", "min ms", "max ms", "profiles", "ingest/s", "MiB per query", "MiB kept"
    );
    let modes: &[(&str, bool)] =
        if baseline { &[("per series", false), ("service buckets", true)] } else { &[("service buckets", true)] };
    for &(label, buckets) in modes {
        let config = temp.path().join(format!("config-{buckets}.toml"));
        let mut f = std::fs::File::create(&config).expect("config");
        writeln!(f, "[store]\nservice_buckets = {buckets}\nmax_series_per_service = {}", series + 100)
            .expect("write config");
        let server = Server::start(&dir, &config, &store);
        flamegraph(&server.url, &hour); // warm-up: the reader caches fill once

        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let feeders: Vec<_> = (0..lanes)
            .map(|lane| {
                let (url, bodies, stop, sent) = (server.url.clone(), bodies.clone(), stop.clone(), sent.clone());
                std::thread::spawn(move || ingest(url, series, lane, lanes, bodies, stop, sent))
            })
            .collect();
        let began = Instant::now();
        let stored_hour: Vec<(f64, u64, u64)> = (0..runs).map(|_| flamegraph(&server.url, &hour)).collect();
        let (_, mem_hour, kept_hour) = memory(&server, &hour, clients);
        let fresh: Vec<(f64, u64, u64)> = (0..runs).map(|_| flamegraph(&server.url, "from=now-5m")).collect();
        let rate = sent.load(Ordering::Relaxed) as f64 / began.elapsed().as_secs_f64();
        stop.store(true, Ordering::Relaxed);
        for feeder in feeders {
            feeder.join().expect("ingest thread");
        }

        let stored_week: Vec<(f64, u64, u64)> = (0..runs).map(|_| flamegraph(&server.url, &week)).collect();
        let (base, mem_week, kept_week) = memory(&server, &week, clients);
        for (what, rows, rate, mem, kept) in [
            ("stored hour, ingest running", &stored_hour, rate, mem_hour, kept_hour),
            ("last 5 min, ingest running", &fresh, rate, f64::NAN, f64::NAN),
            ("stored 7 days", &stored_week, 0.0, mem_week, kept_week),
        ] {
            let times: Vec<f64> = rows.iter().map(|r| r.0).collect();
            let min = times.iter().cloned().fold(f64::MAX, f64::min);
            let max = times.iter().cloned().fold(0.0, f64::max);
            println!(
                "{:<40} {:>10.0} {:>10.0} {:>10.0} {:>10} {:>11.0} {:>14.1} {:>12.1}",
                format!("{what}, {label}"),
                median(times),
                min,
                max,
                rows.last().map(|r| r.1).unwrap_or(0),
                rate,
                mem,
                kept
            );
        }
        println!("{:<40} server RSS before the concurrent queries: {base:.0} MiB", "");
        server.stop();
    }
    println!();
    println!("MiB per query = (VmHWM during {clients} concurrent queries - VmRSS before) / {clients}; MiB kept = RssAnon (heap) 2 s after - before.");
}
