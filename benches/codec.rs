//! pprof decode cost, the CPU floor of every ingest: a 10-second profile with ~2,000
//! distinct stacks (depth 10-40, frames from a pool of realistic names) encoded as our
//! agents send it (gzip pprof), decoded into `model::Profile`. Reports medians of the
//! full decode and of its parts (gunzip, protobuf parse alone as the floor).
//!
//! Run: `cargo bench --bench codec`.

use hotframe::model::pprof::{decode, decompress_bounded, encode, gzip, DecodeOptions};
use hotframe::model::{ProfileBuilder, ThreadState};
use std::time::Instant;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let mut rng = fastrand::Rng::with_seed(7);
    let pool: Vec<String> =
        (0..3000).map(|i| format!("crate_{}::module_{}::function_name_{i}", i % 17, i % 113)).collect();
    let mut b = ProfileBuilder::new("bench", 1_700_000_000_000, 1_700_000_010_000, 10_101_010);
    while b.stack_count() < 2000 {
        let depth = rng.usize(10..=40);
        let stack: Vec<&str> = (0..depth).map(|d| pool[(d * 97 + rng.usize(0..40)) % pool.len()].as_str()).collect();
        let state = ThreadState::ALL[rng.usize(0..5)];
        b.add(&stack, state, rng.u64(1..20));
    }
    let profile = b.finish();
    let plain = encode(&profile);
    let body = gzip(&plain);
    let opts =
        DecodeOptions { service: "bench".into(), start_ms: 0, end_ms: 10_000, sample_type: None, max_bytes: 16 << 20 };
    let rounds = 15;
    let per_round = 50;
    let (mut full, mut gunzip, mut parse) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        let t = Instant::now();
        for _ in 0..per_round {
            let p = decode(&body, &opts).expect("decode");
            std::hint::black_box(p);
        }
        full.push(t.elapsed().as_secs_f64() * 1e3 / per_round as f64);
        let t = Instant::now();
        for _ in 0..per_round {
            std::hint::black_box(decompress_bounded(&body, 16 << 20).expect("gunzip"));
        }
        gunzip.push(t.elapsed().as_secs_f64() * 1e3 / per_round as f64);
        let t = Instant::now();
        for _ in 0..per_round {
            let m: pprof::protos::Profile = pprof::protos::Message::decode(plain.as_slice()).expect("parse");
            std::hint::black_box(m);
        }
        parse.push(t.elapsed().as_secs_f64() * 1e3 / per_round as f64);
    }
    let (f, g, p) = (median(full), median(gunzip), median(parse));
    println!(
        "profile: {} stacks, {} samples, {} KiB gzip, {} KiB plain",
        profile.stacks.len(),
        profile.total_samples(),
        body.len() / 1024,
        plain.len() / 1024
    );
    println!("median of {rounds} rounds x {per_round} decodes:");
    println!("  full decode   {f:.3} ms/profile  ({:.0} profiles/s on one core)", 1e3 / f);
    println!("  gunzip        {g:.3} ms");
    println!("  prost parse   {p:.3} ms  (the floor: protobuf parse alone)");
    println!("  to model      {:.3} ms  (full - gunzip - parse)", f - g - p);
    println!("  full / parse  {:.2}x", f / p);
}
