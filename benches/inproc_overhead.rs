//! What the in-process agent costs the service it runs in: throughput of a CPU-bound
//! loop on two threads without an agent and with `hotframe::agent::Agent` at 99 Hz
//! (1 s upload interval, so cutting and symbolizing a window happen several times per
//! round), in interleaved rounds; prints medians and the ratio.
//!
//! The uploads go to a port that refuses connections, so the figure is sampling,
//! restarting, symbolizing and queueing, not HTTP (which runs on the uploader's own
//! thread). `cargo bench --bench inproc_overhead` (HOTFRAME_BENCH_ROUNDS, default 5).

use std::time::{Duration, Instant};

#[inline(never)]
fn work_unit(seed: u64) -> u64 {
    let mut x = seed;
    for _ in 0..10_000 {
        x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407));
    }
    x
}

/// Work units per second over `round` on `threads` threads.
fn throughput(threads: usize, round: Duration) -> f64 {
    let until = Instant::now() + round;
    let started = Instant::now();
    let done: u64 = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    let mut n = 0u64;
                    let mut x = t as u64;
                    while Instant::now() < until {
                        x = work_unit(x);
                        n += 1;
                    }
                    std::hint::black_box(x);
                    n
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or(0)).sum()
    });
    done as f64 / started.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let rounds: usize = std::env::var("HOTFRAME_BENCH_ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(5);
    let round = Duration::from_secs(3);
    let threads = 2;
    // Port 9 (discard) refuses on loopback: uploads fail fast and stay queued.
    let server = "http://127.0.0.1:9";
    let mut without = Vec::new();
    let mut with = Vec::new();
    let mut sent_samples = 0u64;
    for _ in 0..rounds {
        without.push(throughput(threads, round));
        let agent = hotframe::agent::Agent::builder()
            .server(server)
            .service("bench")
            .upload_interval(Duration::from_secs(1))
            .flush_timeout(Duration::from_millis(1))
            .start()
            .expect("start the in-process agent");
        with.push(throughput(threads, round));
        sent_samples += agent.stats().submitted;
        drop(agent);
    }
    let (a, b) = (median(without), median(with));
    println!("inproc_overhead: {threads} threads, {rounds} rounds of {round:?}, 99 Hz, 1 s cuts");
    println!("  without agent: {a:>12.0} work units/s (median)");
    println!("  with agent:    {b:>12.0} work units/s (median), {sent_samples} profiles cut");
    println!("  ratio with/without: {:.4} (overhead {:.2}%)", b / a, (1.0 - b / a) * 100.0);
}
