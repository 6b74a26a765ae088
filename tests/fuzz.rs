//! Fuzzing of the three ingest decoders (pprof, folded, Push) without libFuzzer or a
//! nightly toolchain: seeds of each format are mutated at random (bit flips, byte
//! edits, cuts, and slices copied and repeated, which is how the amplification bombs of
//! issue 13 look) and decoded for a bounded time. Each input must decode or be refused
//! without a panic, within a time bound, and within an allocation bound measured by a
//! counting global allocator (this binary runs one thread, so the counters are its own).
//!
//! `HOTFRAME_FUZZ_SECS` sets the seconds per decoder (default 2; `.ci/run` gives more),
//! `HOTFRAME_FUZZ_SEED` the first seed (default: from the clock, printed on failure).

use hotframe::model::folded::{parse_text_bounded, TextFormat};
use hotframe::model::pprof::{decode_with, encode, gzip, to_proto, Budget, DecodeLimits, DecodeOptions};
use hotframe::model::{ProfileBuilder, ThreadState};
use hotframe::server::push::{base64_encode, read_series, LabelPair, PushRequest, RawProfileSeries, RawSample};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The system allocator, counting the bytes in use and their peak.
struct Counting;

static IN_USE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to `System` unchanged; only counters are added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's layout.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = IN_USE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` with this layout.
        unsafe { System.dealloc(ptr, layout) };
        IN_USE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from `System` with this layout.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                let now = IN_USE.fetch_add(new_size - layout.size(), Ordering::Relaxed) + new_size - layout.size();
                PEAK.fetch_max(now, Ordering::Relaxed);
            } else {
                IN_USE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Runs `f` and returns its result with the bytes it allocated at its peak.
fn measured<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = IN_USE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let out = f();
    (out, PEAK.load(Ordering::Relaxed).saturating_sub(base))
}

/// Decompressed size limit of the fuzzed decoders.
const MAX_BYTES: usize = 1 << 20;
/// Decode budget of the fuzzed decoders.
const BUDGET: usize = 4 << 20;
/// Longest a single input may take (a debug build on a busy machine).
const MAX_TIME: Duration = Duration::from_secs(2);

fn opts() -> DecodeOptions {
    DecodeOptions {
        service: "fuzz".into(),
        start_ms: 1_700_000_000_000,
        end_ms: 1_700_000_010_000,
        sample_type: None,
        max_bytes: MAX_BYTES,
    }
}

fn seed_profile() -> hotframe::model::Profile {
    let mut b = ProfileBuilder::new("fuzz", 1_700_000_000_000, 1_700_000_010_000, 10_000_000);
    b.add(&["main", "work", "hot"], ThreadState::Runnable, 70);
    b.add(&["main", "work", "warm"], ThreadState::Runnable, 30);
    b.add(&["main", "lock"], ThreadState::Blocked, 12);
    b.add(&["main", "sleep"], ThreadState::TimedWaiting, 5);
    b.finish()
}

fn pprof_seeds() -> Vec<Vec<u8>> {
    let p = seed_profile();
    let mut inlined = to_proto(&p);
    let line = inlined.location[1].line[0].clone();
    inlined.location[0].line.push(line);
    vec![encode(&p), gzip(&encode(&p)), prost::Message::encode_to_vec(&inlined)]
}

fn folded_seeds() -> Vec<Vec<u8>> {
    vec![
        b"main;work;hot 70\nmain;work;warm 30\n# comment\n\nmain;a b c 1\n".to_vec(),
        b"a;b;c;d;e;f 9223372036854775807\r\nx 1\n".to_vec(),
    ]
}

fn push_seeds() -> Vec<Vec<u8>> {
    let raw = encode(&seed_profile());
    let request = PushRequest {
        series: vec![RawProfileSeries {
            labels: vec![
                LabelPair { name: "service_name".into(), value: "fuzz".into() },
                LabelPair { name: "__name__".into(), value: "process_cpu".into() },
            ],
            samples: vec![RawSample { raw_profile: gzip(&raw), id: "1".into() }],
        }],
    };
    let json = format!(
        r#"{{"series":[{{"labels":[{{"name":"service_name","value":"fuzz"}}],"samples":[{{"rawProfile":"{}","ID":"1"}}]}}]}}"#,
        base64_encode(&raw)
    );
    vec![prost::Message::encode_to_vec(&request), json.into_bytes()]
}

/// One random change of `input`; a few of them copy a slice and repeat it many times.
fn mutate(rng: &mut fastrand::Rng, input: &mut Vec<u8>, seeds: &[Vec<u8>]) {
    if input.is_empty() {
        input.push(rng.u8(..));
        return;
    }
    let at = rng.usize(..input.len());
    match rng.u8(..9) {
        0 => input[at] ^= 1 << rng.u8(..8),
        1 => input[at] = rng.u8(..),
        2 => input.insert(at, rng.u8(..)),
        3 => {
            let end = (at + rng.usize(1..16)).min(input.len());
            input.drain(at..end);
        }
        4 => input.truncate(at),
        5 => {
            // A slice repeated: repeated fields, long varint runs, nested bombs.
            let end = (at + rng.usize(1..64)).min(input.len());
            let slice = input[at..end].to_vec();
            let times = rng.usize(1..(256 << 10) / slice.len().max(1)).min(1 << 16);
            let to = rng.usize(..=input.len());
            let tail = input.split_off(to);
            for _ in 0..times {
                input.extend_from_slice(&slice);
            }
            input.extend_from_slice(&tail);
        }
        6 => {
            let other = &seeds[rng.usize(..seeds.len())];
            let from = rng.usize(..other.len());
            let to = rng.usize(from..=other.len());
            input.splice(at..at, other[from..to].iter().copied());
        }
        7 => input[at] = [0x00, 0x7f, 0x80, 0xff][rng.usize(..4)],
        _ => {
            if input.len() < 4 << 20 {
                *input = gzip(input);
            }
        }
    }
    if input.len() > 4 << 20 {
        input.truncate(4 << 20);
    }
}

/// Fuzzes `decode` for `secs` seconds from `seeds`; each input must finish within
/// `MAX_TIME` and allocate at most `bound(input length)` bytes at its peak.
fn fuzz(name: &str, secs: u64, seed: u64, seeds: &[Vec<u8>], bound: impl Fn(usize) -> usize, decode: impl Fn(&[u8])) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let deadline = Instant::now() + Duration::from_secs(secs);
    let (mut runs, mut worst_bytes, mut worst_time) = (0u64, 0usize, Duration::ZERO);
    while Instant::now() < deadline {
        let mut input = seeds[rng.usize(..seeds.len())].clone();
        for _ in 0..rng.usize(1..6) {
            mutate(&mut rng, &mut input, seeds);
        }
        let started = Instant::now();
        let ((), bytes) = measured(|| decode(&input));
        let took = started.elapsed();
        let limit = bound(input.len());
        if bytes > limit || took > MAX_TIME {
            let path = std::env::temp_dir().join(format!("hotframe-fuzz-{name}-{seed}.bin"));
            let _ = std::fs::write(&path, &input);
            panic!(
                "{name}: an input of {} bytes took {took:?} and {bytes} bytes (limit {limit}); saved to {} (HOTFRAME_FUZZ_SEED={seed})",
                input.len(),
                path.display()
            );
        }
        worst_bytes = worst_bytes.max(bytes);
        worst_time = worst_time.max(took);
        runs += 1;
    }
    println!("fuzz {name}: {runs} inputs in {secs} s, worst {worst_bytes} bytes allocated, worst {worst_time:?}");
}

fn main() {
    let secs: u64 = std::env::var("HOTFRAME_FUZZ_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(2);
    let seed: u64 = std::env::var("HOTFRAME_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1)
    });
    // `cargo test -- --list` and name filters follow the harness convention: `cargo test
    // store::` does not fuzz, `cargo test fuzz` does.
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        println!("fuzz: test");
        return;
    }
    if args.iter().any(|a| !a.starts_with('-') && !"fuzz".contains(a.as_str())) {
        return;
    }
    println!("fuzz seed {seed} (HOTFRAME_FUZZ_SEED), {secs} s per decoder (HOTFRAME_FUZZ_SECS)");
    let limits = DecodeLimits::default();
    // Inflated input (at most MAX_BYTES) plus the budget, plus what decoding a valid
    // profile of that size keeps beyond its charges (a generous constant).
    let pprof_bound = |_: usize| 2 * MAX_BYTES + BUDGET + (8 << 20);
    fuzz("pprof", secs, seed, &pprof_seeds(), pprof_bound, |input| {
        let _ = decode_with(input, &opts(), &limits, &mut Budget::new(BUDGET));
    });
    // Folded and lines text as the server parses it: depth 1024, under the budget.
    fuzz(
        "folded",
        secs,
        seed.wrapping_add(1),
        &folded_seeds(),
        |n| 2 * n + BUDGET + (1 << 20),
        |input| {
            if let Ok(text) = std::str::from_utf8(input) {
                for format in [TextFormat::Folded, TextFormat::Lines] {
                    let mut b = ProfileBuilder::new("fuzz", 0, 10_000, 10_000_000);
                    let mut budget = Budget::new(BUDGET);
                    let _ = parse_text_bounded(text, format, ThreadState::Runnable, &mut b, 1024, &mut budget);
                }
            }
        },
    );
    fuzz(
        "push",
        secs,
        seed.wrapping_add(2),
        &push_seeds(),
        |n| 4 * n + 2 * MAX_BYTES + BUDGET + (8 << 20),
        |input| {
            let mut budget = Budget::new(BUDGET);
            let json = input.first() == Some(&b'{');
            if let Ok(series) = read_series(input, json, &mut budget) {
                for raw in series.iter().flat_map(|s| s.raw_profiles.iter()) {
                    if decode_with(raw, &opts(), &limits, &mut budget).is_err() {
                        break;
                    }
                }
            }
        },
    );
}
