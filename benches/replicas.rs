//! Ingest throughput of `hotframe serve` replicas on one PostgreSQL (`cargo bench --bench
//! replicas`): 1, 2 and 3 replica processes share a database of a throwaway cluster the
//! bench starts itself; and, as the peer in the same run, one replica on its embedded
//! SQLite store. Real processes over real HTTP: clients POST gzip pprof bodies of 10 s
//! profiles with 2,000 distinct stacks (~8,000 samples) to `/api/v1/profiles`; a 429
//! is counted and sent again after a short pause. Reports profiles/s in all and per
//! replica, the share answered 429 and the median latency of accepted writes; medians of
//! `RUNS` runs of `HOTFRAME_BENCH_SECS` (default 8) seconds each.
//!
//! Clients: `HOTFRAME_BENCH_CLIENTS` (default 32) per replica. Everything (clients,
//! replicas, PostgreSQL) shares this machine's cores, so the totals say what one such
//! machine sustains, and the per-replica figures how the database divides it.

#[path = "../tests/it/pg.rs"]
#[allow(dead_code)]
mod pg;

#[path = "common/mod.rs"]
mod common;

use hotframe::model::pprof::{encode, gzip};
use hotframe::model::{ProfileBuilder, ThreadState};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const DISTINCT: usize = 2_000;
const PROFILE_MS: i64 = 10_000;
const RUNS: usize = 3;
/// Distinct bodies each client cycles through.
const BODIES: usize = 8;

/// A replica process, killed when dropped.
struct Replica {
    child: Child,
    url: String,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_replica(store: &[&str], data: &std::path::Path) -> Replica {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hotframe"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(data)
        .args(store)
        .env("HOTFRAME_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start hotframe serve");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("first line");
    let url = line.trim().strip_prefix("listening on ").unwrap_or_else(|| panic!("unexpected {line:?}")).to_string();
    Replica { child, url }
}

/// Gzip pprof bodies of 10 s profiles with `DISTINCT` stacks drawn from a pool of 6,000
/// (depth 8 to 30, 1,500 frame names), counts skewed towards the first stacks.
fn bodies(seed: u64) -> Vec<Vec<u8>> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let names: Vec<String> = (0..1500).map(|i| format!("shop::layer{}::Handler{}::call_{i}", i % 29, i % 13)).collect();
    let pool: Vec<Vec<usize>> = (0..6_000)
        .map(|_| (0..8 + rng.usize(..23)).map(|d| rng.usize(..(3 + d * 50).min(names.len()))).collect())
        .collect();
    (0..BODIES)
        .map(|_| {
            let mut b = ProfileBuilder::new("shop", 0, PROFILE_MS, 10_101_010);
            let mut frames: Vec<&str> = Vec::new();
            for pick in rng.choose_multiple(0..pool.len(), DISTINCT) {
                frames.clear();
                frames.extend(pool[pick].iter().map(|&f| names[f].as_str()));
                let state = if pick % 5 == 0 { ThreadState::Waiting } else { ThreadState::Runnable };
                b.add(&frames, state, 1 + (6_000 / (pick + 1)).min(40) as u64);
            }
            gzip(&encode(&b.finish()))
        })
        .collect()
}

/// What the clients of one run saw.
#[derive(Default)]
struct Tally {
    accepted: u64,
    busy: u64,
    other: u64,
    latencies_ms: Vec<f64>,
}

/// `clients` threads per replica POST for `secs` seconds; returns the tally.
fn drive(replicas: &[Replica], clients: usize, secs: u64, bodies: &Arc<Vec<Vec<u8>>>, run: usize) -> Tally {
    let tally = Arc::new(Mutex::new(Tally::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into();
    let threads: Vec<_> = (0..clients * replicas.len())
        .map(|c| {
            let (url, tally, stop, bodies, agent) =
                (replicas[c % replicas.len()].url.clone(), tally.clone(), stop.clone(), bodies.clone(), agent.clone());
            std::thread::spawn(move || {
                let mut n = 0usize;
                let base = hotframe::model::time::now_ms() / PROFILE_MS * PROFILE_MS - 3_600_000;
                while !stop.load(Ordering::Relaxed) {
                    let from_ms = base + ((run * 100_000 + n) as i64 % 300) * PROFILE_MS;
                    let uri = format!(
                        "{url}/api/v1/profiles?service=shop&label.host=host-{c}&from={}&until={}",
                        from_ms,
                        from_ms + PROFILE_MS
                    );
                    let began = Instant::now();
                    let status = agent
                        .post(&uri)
                        .header("Content-Type", "application/octet-stream")
                        .send(&bodies[n % bodies.len()][..])
                        .map(|r| r.status().as_u16())
                        .unwrap_or(0);
                    let ms = began.elapsed().as_secs_f64() * 1e3;
                    let mut t = tally.lock().expect("tally");
                    match status {
                        200 => {
                            t.accepted += 1;
                            t.latencies_ms.push(ms);
                        }
                        429 | 503 => t.busy += 1,
                        _ => t.other += 1,
                    }
                    drop(t);
                    if status != 200 {
                        std::thread::sleep(Duration::from_millis(20 + fastrand::u64(..30)));
                    }
                    n += 1;
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(secs));
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().expect("client");
    }
    Arc::try_unwrap(tally).ok().expect("clients done").into_inner().expect("tally")
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn main() {
    let secs = common::env_u64("HOTFRAME_BENCH_SECS", 8);
    let clients = common::env_u64("HOTFRAME_BENCH_CLIENTS", 32) as usize;
    let Some(cluster) = pg::PgCluster::start() else { return };
    let bodies = Arc::new(bodies(11));
    println!(
        "{} bodies of {DISTINCT} stacks, {} KiB gzip each; {clients} clients per replica; {RUNS} runs of {secs} s",
        bodies.len(),
        bodies[0].len() / 1024
    );
    println!(
        "{:<22} {:>8} {:>12} {:>14} {:>9} {:>12}",
        "store", "replicas", "profiles/s", "per replica", "429/503", "p50 ms"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let configs: [(&str, usize); 4] = [("sqlite", 1), ("postgres", 1), ("postgres", 2), ("postgres", 3)];
    for (store, n) in configs {
        let url = cluster.fresh_database();
        let mut rates = Vec::new();
        let mut busy = Vec::new();
        let mut p50 = Vec::new();
        for run in 0..RUNS {
            let data = dir.path().join(format!("{store}-{n}-{run}"));
            let replicas: Vec<Replica> = (0..n)
                .map(|i| {
                    let flags: Vec<&str> = if store == "postgres" { vec!["--store", &url] } else { vec![] };
                    start_replica(&flags, &data.join(i.to_string()))
                })
                .collect();
            let t = drive(&replicas, clients, secs, &bodies, run);
            assert_eq!(t.other, 0, "unexpected answers");
            rates.push(t.accepted as f64 / secs as f64);
            busy.push(t.busy as f64 / (t.accepted + t.busy).max(1) as f64 * 100.0);
            p50.push(median(t.latencies_ms));
        }
        let rate = median(rates);
        println!(
            "{:<22} {:>8} {:>12.0} {:>14.0} {:>8.1}% {:>12.0}",
            store,
            n,
            rate,
            rate / n as f64,
            median(busy),
            median(p50)
        );
    }
}
