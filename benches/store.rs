//! Benchmark of the embedded store (`cargo bench --bench store`): ingest rate, flame
//! graph aggregates over 1 hour and 7 days of 20 hosts, and bytes on disk per sample.
//! Prints medians over several runs. Sizes are scaled so that it finishes in a few
//! minutes on a 2-core machine; the output says how each data set was simulated.
//!
//! Profiles come from a fixed pool of 10,000 stacks, 10 to 40 frames deep, grown as a
//! call tree with shared prefixes (like a real service); a profile draws its stacks
//! with Zipf-like weights, so a few are hot and most are rare. Each stack has one
//! thread state chosen by its leaf (55% RUNNABLE, 25% WAITING, 10% TIMED_WAITING, 5%
//! BLOCKED, 5% IO).

#[path = "common/mod.rs"]
mod common;

use common::{median, pool, Pool};
use hotframe::model::Profile;
use hotframe::store::{Durability, ProfileStore, Query, SqliteStore, StoreConfig};
use std::time::{Duration, Instant};

const HOUR: i64 = 3_600_000;
const DAY: i64 = 86_400_000;
/// "Now" of the simulation: 2026-11-20 13:37:00 UTC (mid-hour, like a user's now).
const NOW: i64 = 1_795_700_220_000;
const HOSTS: usize = 20;
const RUNS: usize = 5;
const POOL_STACKS: usize = 10_000;

/// Sets a template's window and host for one write (no clone per write).
fn place(p: &mut Profile, start: i64, len: i64, host: usize) {
    p.start_ms = start;
    p.end_ms = start + len;
    p.labels.insert("host".into(), format!("ip-10-0-{}-{}.ec2.internal", host / 8, host));
}

/// CPU time of this thread: the machine is shared, so wall time alone depends on what
/// else runs.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec into the valid pointer it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn query(from: i64, until: i64) -> Query {
    Query { service: "checkout".into(), profile_type: "cpu".into(), from_ms: from, until_ms: until, ..Query::default() }
}

/// Median and first (cold cache) time of `RUNS` aggregates; also the samples merged.
fn time_aggregate(store: &SqliteStore, q: &Query) -> (f64, f64, f64, u64, usize) {
    let mut times = Vec::new();
    let mut cpu = Vec::new();
    let mut samples = 0;
    let mut stacks = 0;
    for _ in 0..RUNS {
        let t = Instant::now();
        let c = thread_cpu();
        let a = store.aggregate(q).expect("aggregate");
        times.push(ms(t.elapsed()));
        cpu.push(ms(thread_cpu() - c));
        samples = a.samples.iter().map(|s| s.samples).sum();
        stacks = a.stacks.len();
    }
    (median(times.clone()), times[0], median(cpu), samples, stacks)
}

/// `HOTFRAME_BENCH=a,c` runs only those parts (all by default).
fn wanted(part: &str) -> bool {
    std::env::var("HOTFRAME_BENCH").map(|v| v.split(',').any(|p| p.trim() == part)).unwrap_or(true)
}

fn main() {
    let mut rng = fastrand::Rng::with_seed(42);
    let pool = pool(&mut rng, POOL_STACKS);
    let mut ten_s: Vec<Profile> = (0..32).map(|_| pool.profile(&mut rng, 2_000, 1, 10_000)).collect();
    let avg_depth = pool.stacks.iter().map(|s| s.0.len()).sum::<usize>() as f64 / pool.stacks.len() as f64;
    let per_profile = ten_s.iter().map(|p| p.total_samples()).sum::<u64>() as f64 / ten_s.len() as f64;
    let entries = ten_s.iter().map(|p| p.samples.len()).sum::<usize>() as f64 / ten_s.len() as f64;
    println!(
        "store benchmark: pool of {POOL_STACKS} stacks (mean depth {avg_depth:.1}), {} frame names",
        pool.names.len()
    );
    println!(
        "10-second profile: ~2,000 distinct stacks, {entries:.0} (stack, state) entries, {per_profile:.0} samples on average"
    );
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "load average at start (the machine is shared): {}",
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
    println!();

    if wanted("a") {
        ingest(&mut ten_s);
    }
    if wanted("b") {
        aggregates(&pool, &mut rng, &mut ten_s);
    }
    if wanted("c") {
        disk(&mut ten_s);
    }
}

/// (a) ingest of 10-second profiles.
fn ingest(ten_s: &mut [Profile]) {
    println!("(a) ingest of 10-second profiles, one writer, {RUNS} runs");
    println!("{:<34} {:>12} {:>14} {:>10} {:>14}", "durability", "profiles/s", "samples/s", "ms/write", "cpu ms/write");
    for (durability, label, per_run) in [
        (Durability::Os, "os (synchronous=NORMAL, default)", 1_000),
        (Durability::Disk, "disk (synchronous=FULL)", 200),
    ] {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(dir.path(), StoreConfig { durability, ..StoreConfig::default() }).expect("open");
        // Warm-up: the first profiles intern the pool; a running server has done that.
        let mut t = NOW - DAY;
        for (i, p) in ten_s.iter_mut().enumerate() {
            place(p, t, 10_000, i % HOSTS);
            store.write(p).expect("write");
            t += 500;
        }
        let mut rates = Vec::new();
        let mut sample_rates = Vec::new();
        let mut cpu = Vec::new();
        for _ in 0..RUNS {
            let mut samples = 0;
            let start = Instant::now();
            let cpu_start = thread_cpu();
            for i in 0..per_run {
                let p = &mut ten_s[i % 32];
                place(p, t, 10_000, i % HOSTS);
                samples += store.write(p).expect("write").samples;
                t += 500;
            }
            let secs = start.elapsed().as_secs_f64();
            cpu.push(ms(thread_cpu() - cpu_start) / per_run as f64);
            rates.push(per_run as f64 / secs);
            sample_rates.push(samples as f64 / secs);
        }
        let r = median(rates);
        println!("{label:<34} {r:>12.0} {:>14.0} {:>10.2} {:>14.2}", median(sample_rates), 1e3 / r, median(cpu));
    }
    println!();
}

/// (b) aggregates over 7 days of 20 hosts.
fn aggregates(pool: &Pool, rng: &mut fastrand::Rng, ten_s: &mut [Profile]) {
    let coarse_len = 10 * 60_000;
    let mut coarse: Vec<Profile> = (0..16).map(|_| pool.profile(rng, 5_000, 8, coarse_len)).collect();
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(dir.path(), StoreConfig::default()).expect("open");
    // The hours a query ending now reads raw get 10-second profiles, as agents send
    // them; the hours in between, which queries read from rollups, get 10-minute ones
    // (their rollups are alike, and it takes minutes instead of an hour to load).
    let start = NOW - 7 * DAY - 2 * HOUR - (NOW - 7 * DAY - 2 * HOUR).rem_euclid(HOUR);
    let edge_old = NOW - 7 * DAY - (NOW - 7 * DAY).rem_euclid(HOUR);
    let edge_new = NOW - NOW.rem_euclid(HOUR) - HOUR;
    let fine = |t: i64| (edge_old..edge_old + HOUR).contains(&t) || t >= edge_new;
    let t0 = Instant::now();
    let (mut n, mut n_fine) = (0usize, 0usize);
    let mut t = start;
    while t < NOW {
        let len = if fine(t) { 10_000 } else { coarse_len };
        for host in 0..HOSTS {
            let p = if fine(t) {
                n_fine += 1;
                &mut ten_s[(n + host) % ten_s.len()]
            } else {
                &mut coarse[(n + host) % 16]
            };
            place(p, t + host as i64 * 50, len, host);
            store.write(p).expect("write");
            n += 1;
        }
        t += len;
    }
    let ingest_s = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let report = store.maintain(NOW).expect("maintain");
    let maintain_s = t1.elapsed().as_secs_f64();
    println!("(b) aggregates: 7 days + 2 h of {HOSTS} hosts, {n} profiles. The hours that queries ending now read raw");
    println!(
        "    (the hour 7 days ago and the last 1.6 h) hold {n_fine} 10-second profiles as agents send them; the hours between,"
    );
    println!(
        "    read from rollups, are simulated with {} 10-minute profiles (~5,000 distinct stacks each); ingest {ingest_s:.0} s,",
        n - n_fine
    );
    println!(
        "    maintain {maintain_s:.1} s ({} rollup rows); {RUNS} runs, cold = first run on a fresh reader cache",
        report.rollups_written
    );
    println!(
        "{:<44} {:>10} {:>10} {:>10} {:>12} {:>8}",
        "query", "median ms", "cold ms", "cpu ms", "samples", "stacks"
    );
    let aligned_now = NOW - NOW.rem_euclid(HOUR);
    for (label, q) in [
        ("1 hour, now-1h..now (raw edges)", query(NOW - HOUR, NOW)),
        ("1 hour, whole hour (hourly rollups)", query(aligned_now - HOUR, aligned_now)),
        ("7 days, now-7d..now (rollups + raw edges)", query(NOW - 7 * DAY, NOW)),
        ("7 days, whole hours (rollups only)", query(aligned_now - 7 * DAY, aligned_now)),
    ] {
        let (med, cold, cpu, samples, stacks) = time_aggregate(&store, &q);
        println!("{label:<44} {med:>10.1} {cold:>10.1} {cpu:>10.1} {samples:>12} {stacks:>8}");
    }
    for (label, q) in [
        ("timeline 7 days hourly, from now-7d (raw)", query(NOW - 7 * DAY, NOW)),
        ("timeline 7 days hourly, from a whole hour", query(NOW - 7 * DAY, NOW).widened_to(HOUR)),
    ] {
        let mut times = Vec::new();
        for _ in 0..RUNS {
            let t = Instant::now();
            store.timeline(&q, HOUR).expect("timeline");
            times.push(ms(t.elapsed()));
        }
        println!("{label:<44} {:>10.1} {:>10.1}", median(times.clone()), times[0]);
    }
    println!();
}

/// (c) bytes on disk per sample after a simulated day.
fn disk(ten_s: &mut [Profile]) {
    let hosts_c = 4;
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(dir.path(), StoreConfig::default()).expect("open");
    let day_start = NOW - NOW.rem_euclid(DAY) - DAY;
    let mut t = day_start;
    let mut n = 0usize;
    while t < day_start + DAY {
        for host in 0..hosts_c {
            let p = &mut ten_s[(n + host) % 32];
            place(p, t + host as i64 * 100, 10_000, host);
            store.write(p).expect("write");
            n += 1;
        }
        t += 10_000;
    }
    let raw = store.stats().expect("stats");
    store.maintain(NOW).expect("maintain");
    let after = store.stats().expect("stats");
    println!(
        "(c) disk after a simulated day: {hosts_c} hosts x 8,640 10-second profiles = {n} profiles, {} samples",
        raw.samples
    );
    println!("{:<44} {:>14} {:>14}", "", "bytes on disk", "bytes/sample");
    println!(
        "{:<44} {:>14} {:>14.3}",
        "raw profiles (db + wal)",
        raw.bytes_on_disk,
        raw.bytes_on_disk as f64 / raw.samples as f64
    );
    println!(
        "{:<44} {:>14} {:>14.3}",
        "after maintain (+ rollups, kept uncompressed)",
        after.bytes_on_disk,
        after.bytes_on_disk as f64 / after.samples as f64
    );
    println!("{:<44} {:>14.0}", "bytes per raw profile", raw.bytes_on_disk as f64 / n as f64);
}
