//! Benchmark of the HTTP layer over the real SQLite store (`cargo bench --bench server`):
//! ingest of 10-second pprof profiles with ~2,000 distinct stacks through the router
//! (body read, gunzip, pprof decode, validation, write), sequential and from 8 concurrent
//! clients, against `store.write` of the same profiles in the same run; and `GET /api/v1/flamegraph` over 1 hour of 20 hosts
//! (aggregate + tree + cost + JSON) against `store.aggregate` alone. Medians of runs.
//!
//! Profiles: a synthetic call tree of 6,000 leaves (depth 8 to 30) with Zipf-like
//! weights; each profile draws 2,000 distinct stacks; 99 Hz, ~8 threads busy (about 8,000
//! samples per 10 s); states by leaf (60% RUNNABLE, 25% WAITING, 15% BLOCKED).

use axum::body::Body;
use axum::http::Request;
use hotframe::model::pprof::{encode, gzip};
use hotframe::model::{Profile, ProfileBuilder, ThreadState};
use hotframe::server::config::ServerConfig;
use hotframe::server::{app, AppState};
use hotframe::store::{ProfileStore, Query, SqliteStore};
use http_body_util::BodyExt;
use std::sync::Arc;
use std::time::Instant;
use tower::ServiceExt;

const HOSTS: usize = 20;
const DISTINCT: usize = 2_000;
const LEAVES: usize = 6_000;
const PROFILE_MS: i64 = 10_000;
const RUNS: usize = 5;
const INGEST_PER_RUN: usize = 100;
const CLIENTS: usize = 8;

struct Tree {
    names: Vec<String>,
    stacks: Vec<(Vec<usize>, ThreadState)>,
    weights: Vec<f64>,
}

fn tree(rng: &mut fastrand::Rng) -> Tree {
    let names: Vec<String> =
        (0..1500).map(|i| format!("service::module{}::Type{}::method_{i}", i % 37, i % 11)).collect();
    let mut stacks = Vec::with_capacity(LEAVES);
    for _ in 0..LEAVES {
        let depth = 8 + rng.usize(..23);
        // Shared prefixes: the first frames come from a few callers, deeper ones spread out.
        let stack: Vec<usize> = (0..depth).map(|d| rng.usize(..(4 + d * 60).min(names.len()))).collect();
        let state = match rng.u8(..100) {
            0..=59 => ThreadState::Runnable,
            60..=84 => ThreadState::Waiting,
            _ => ThreadState::Blocked,
        };
        stacks.push((stack, state));
    }
    let weights = (0..LEAVES).map(|i| 1.0 / (i as f64 + 1.0)).collect();
    Tree { names, stacks, weights }
}

fn profile(t: &Tree, rng: &mut fastrand::Rng, start_ms: i64) -> Profile {
    let total: f64 = t.weights.iter().sum();
    let mut b = ProfileBuilder::new("checkout", start_ms, start_ms + PROFILE_MS, 10_101_010);
    let mut picked = std::collections::HashSet::new();
    while picked.len() < DISTINCT {
        let mut x = rng.f64() * total;
        let mut i = 0;
        while i + 1 < t.weights.len() && x > t.weights[i] {
            x -= t.weights[i];
            i += 1;
        }
        if !picked.insert(i) {
            // Rare stacks fill up the distinct count once the hot ones are taken.
            picked.insert(rng.usize(..LEAVES));
        }
    }
    let mut names: Vec<&str> = Vec::new();
    for i in picked {
        let (stack, state) = &t.stacks[i];
        names.clear();
        names.extend(stack.iter().map(|f| t.names[*f].as_str()));
        b.add(&names, *state, 1 + (t.weights[i] * 40.0) as u64);
    }
    b.finish()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

async fn send(router: &axum::Router, request: Request<Body>) -> (u16, usize) {
    let response = router.clone().oneshot(request).await.expect("router");
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.expect("body").to_bytes();
    (status, body.len())
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let mut rng = fastrand::Rng::with_seed(7);
    let t = tree(&mut rng);
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(SqliteStore::open(dir.path(), Default::default()).expect("store"));
    let router = app(AppState::new(store.clone(), ServerConfig::default()));
    let now = hotframe::model::time::now_ms() / PROFILE_MS * PROFILE_MS;
    let hour_start = now - 3_600_000;

    // 1 hour of 20 hosts, written directly; the timed runs below add to it.
    let templates: Vec<Profile> = (0..8).map(|_| profile(&t, &mut rng, 0)).collect();
    let samples_per_profile = templates.iter().map(|p| p.total_samples()).sum::<u64>() / templates.len() as u64;
    let mut slot = 0usize;
    for i in 0..(3_600_000 / PROFILE_MS) as usize {
        for host in 0..HOSTS {
            let mut p = templates[(i + host) % templates.len()].clone();
            p.start_ms = hour_start + i as i64 * PROFILE_MS;
            p.end_ms = p.start_ms + PROFILE_MS;
            p.labels.insert("host".into(), format!("host-{host}"));
            store.write(&p).expect("write");
            slot += 1;
        }
    }
    println!("setup: {slot} profiles of {DISTINCT} distinct stacks, ~{samples_per_profile} samples each, 1 h x {HOSTS} hosts");

    let mut http_rates = Vec::new();
    let mut store_rates = Vec::new();
    let mut decode_rates = Vec::new();
    let mut concurrent_rates = Vec::new();
    for run in 0..RUNS {
        // Bodies as an agent sends them: gzip pprof, one per profile, built before timing.
        let start = now + (run * INGEST_PER_RUN) as i64 * PROFILE_MS;
        let bodies: Vec<Vec<u8>> = (0..INGEST_PER_RUN)
            .map(|i| {
                let mut p = templates[i % templates.len()].clone();
                p.start_ms = start + i as i64 * PROFILE_MS;
                p.end_ms = p.start_ms + PROFILE_MS;
                gzip(&encode(&p))
            })
            .collect();
        let opts = hotframe::model::pprof::DecodeOptions {
            service: "checkout".into(),
            start_ms: 0,
            end_ms: 1,
            sample_type: None,
            max_bytes: 16 << 20,
        };
        let began = Instant::now();
        for body in &bodies {
            hotframe::model::pprof::decode(body, &opts).expect("decode");
        }
        decode_rates.push(INGEST_PER_RUN as f64 / began.elapsed().as_secs_f64());
        if run == 0 {
            // Where decode time goes: gunzip, protobuf parse, conversion to the model.
            let began = Instant::now();
            let plain: Vec<Vec<u8>> = bodies
                .iter()
                .map(|b| hotframe::model::pprof::decompress_bounded(b, 16 << 20).expect("gunzip").into_owned())
                .collect();
            let gunzip = began.elapsed().as_secs_f64() * 1e3 / INGEST_PER_RUN as f64;
            let began = Instant::now();
            let msgs: Vec<pprof::protos::Profile> =
                plain.iter().map(|b| pprof::protos::Message::decode(b.as_slice()).expect("protobuf")).collect();
            let parse = began.elapsed().as_secs_f64() * 1e3 / INGEST_PER_RUN as f64;
            let began = Instant::now();
            for m in &msgs {
                hotframe::model::pprof::from_proto(m, &opts).expect("from_proto");
            }
            let convert = began.elapsed().as_secs_f64() * 1e3 / INGEST_PER_RUN as f64;
            println!(
                "decode per profile ({} KiB gzip, {} KiB plain): gunzip {gunzip:.2} ms, protobuf {parse:.2} ms, to model {convert:.2} ms",
                bodies[0].len() / 1024,
                plain[0].len() / 1024
            );
        }
        let began = Instant::now();
        runtime.block_on(async {
            for (i, body) in bodies.into_iter().enumerate() {
                let uri = format!("/api/v1/profiles?service=checkout&label.host=host-{}", i % HOSTS);
                let (status, _) = send(&router, Request::post(uri).body(Body::from(body)).expect("request")).await;
                assert_eq!(status, 200);
            }
        });
        http_rates.push(INGEST_PER_RUN as f64 / began.elapsed().as_secs_f64());

        // The same through 8 concurrent clients (under the 16 writes in flight limit).
        let bodies: Vec<Vec<u8>> = (0..INGEST_PER_RUN)
            .map(|i| {
                let mut p = templates[i % templates.len()].clone();
                p.start_ms = start + (2 * INGEST_PER_RUN + i) as i64 * PROFILE_MS;
                p.end_ms = p.start_ms + PROFILE_MS;
                gzip(&encode(&p))
            })
            .collect();
        let began = Instant::now();
        runtime.block_on(async {
            let clients = Arc::new(tokio::sync::Semaphore::new(CLIENTS));
            let mut tasks = Vec::new();
            for (i, body) in bodies.into_iter().enumerate() {
                let permit = clients.clone().acquire_owned().await.expect("semaphore");
                let router = router.clone();
                tasks.push(tokio::spawn(async move {
                    let uri = format!("/api/v1/profiles?service=checkout&label.host=host-{}", i % HOSTS);
                    let (status, _) = send(&router, Request::post(uri).body(Body::from(body)).expect("request")).await;
                    drop(permit);
                    status
                }));
            }
            for t in tasks {
                assert_eq!(t.await.expect("task"), 200);
            }
        });
        concurrent_rates.push(INGEST_PER_RUN as f64 / began.elapsed().as_secs_f64());

        let direct: Vec<Profile> = (0..INGEST_PER_RUN)
            .map(|i| {
                let mut p = templates[i % templates.len()].clone();
                p.start_ms = start + (INGEST_PER_RUN + i) as i64 * PROFILE_MS;
                p.end_ms = p.start_ms + PROFILE_MS;
                p.labels.insert("host".into(), format!("host-{}", i % HOSTS));
                p
            })
            .collect();
        let began = Instant::now();
        for p in &direct {
            store.write(p).expect("write");
        }
        store_rates.push(INGEST_PER_RUN as f64 / began.elapsed().as_secs_f64());
    }
    let (http, direct) = (median(http_rates), median(store_rates));
    println!(
        "ingest via POST /api/v1/profiles (sequential): {http:.0} profiles/s, {:.0} samples/s; store.write alone: {direct:.0} profiles/s; HTTP/store = {:.2}",
        http * samples_per_profile as f64,
        http / direct
    );
    let concurrent = median(concurrent_rates);
    println!(
        "ingest via POST /api/v1/profiles ({CLIENTS} concurrent clients): {concurrent:.0} profiles/s, {:.0} samples/s",
        concurrent * samples_per_profile as f64
    );
    println!("pprof decode alone (gunzip + protobuf + model): {:.0} profiles/s", median(decode_rates));

    let uri = format!("/api/v1/flamegraph?service=checkout&states=all&from={hour_start}&until={now}");
    let query = Query {
        service: "checkout".into(),
        profile_type: "cpu".into(),
        from_ms: hour_start,
        until_ms: now,
        ..Query::default()
    };
    let mut api = Vec::new();
    let mut bytes = 0;
    let mut agg = Vec::new();
    for _ in 0..RUNS {
        let began = Instant::now();
        let (status, len) = runtime.block_on(send(&router, Request::get(&uri).body(Body::empty()).expect("request")));
        assert_eq!(status, 200);
        api.push(began.elapsed().as_secs_f64() * 1e3);
        bytes = len;
        let began = Instant::now();
        store.aggregate(&query).expect("aggregate");
        agg.push(began.elapsed().as_secs_f64() * 1e3);
    }
    let (api, agg) = (median(api), median(agg));
    println!(
        "flamegraph 1 h x {HOSTS} hosts (maxNodes 10000): GET {api:.1} ms ({} KiB JSON); store.aggregate alone {agg:.1} ms; tree+cost+JSON {:.1} ms",
        bytes / 1024,
        api - agg
    );
}
