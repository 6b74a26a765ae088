//! A program profiled by the Pyroscope Rust SDK (the `pyroscope` crate, pprof-rs
//! backend), unchanged, pointed at hotframe: proof that hotframe ingests what the SDK
//! sends (Connect `push.v1.PusherService/Push`, gzip pprof). Built only with the
//! `sdk-pyroscope` feature (`.ci/run` builds it for tests/it/sdk.rs).
//!
//! `pyroscope_sdk SERVER_URL SECONDS`: burns CPU in `pyroscope_sdk_hot_spin` for
//! SECONDS, then stops the SDK's agent (which sends the last report) and exits.

use pyroscope::backend::{pprof_backend, BackendConfig, PprofConfig};
use pyroscope::pyroscope::PyroscopeAgentBuilder;
use std::time::{Duration, Instant};

#[inline(never)]
fn pyroscope_sdk_hot_spin(until: Instant) -> u64 {
    let mut x = 1u64;
    while Instant::now() < until {
        for _ in 0..10_000 {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407));
        }
    }
    x
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let server = args.next().ok_or("usage: pyroscope_sdk SERVER_URL SECONDS")?;
    let seconds: u64 = args.next().ok_or("usage: pyroscope_sdk SERVER_URL SECONDS")?.parse()?;
    let agent = PyroscopeAgentBuilder::new(
        &server,
        "pyro-rs",
        100,
        "pyroscope-rs",
        "hotframe-sdk-test",
        pprof_backend(PprofConfig { sample_rate: 100 }, BackendConfig::default()),
    )
    .tags(vec![("env", "sdk-test")])
    .build()?;
    let running = agent.start()?;
    let x = pyroscope_sdk_hot_spin(Instant::now() + Duration::from_secs(seconds));
    let ready = running.stop()?;
    ready.shutdown();
    println!("done {x}");
    Ok(())
}
