//! Sampler costs, measured against real processes (run as root):
//!
//! 1. per-sample cost of DWARF unwinding and of unwinding + symbolization (p50/p99),
//!    cold (first pass: unwind info and debug info parsed) and warm (steady state),
//!    on perf samples (registers + 32 KiB stack copies) recorded from a C workload
//!    without frame pointers;
//! 2. a 20-thread target (each thread computes 1-4 ms, sleeps 1 ms) sampled by `Sampler`
//!    at 99 Hz for 10 s after a 2 s warm-up, three rounds: samples taken and lost, the
//!    sampler's own CPU time (process CPU: sampling thread and symbolizer thread) per
//!    second and per sample, peak RSS.
//!
//! `cargo bench --bench sampler` (CARGO_TARGET_DIR shared). Prints medians; asserts
//! nothing.

use hotframe::sampler::perf::{self, EventConfig, PerfEvent, REG_BP, REG_IP, REG_SP};
use hotframe::sampler::unwind::{FileCache, ProcessImage};
use hotframe::sampler::{Sampler, SamplerOptions};
use hotframe::symbolize::Symbolizer;
use linux_perf_event_reader::EventRecord;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

struct Reaper(Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn compile(dir: &Path, name: &str) -> PathBuf {
    let exe = dir.join(name);
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/workloads/{name}.c"));
    let ok = Command::new("cc")
        .args(["-O2", "-fomit-frame-pointer", "-pthread", "-o"])
        .arg(&exe)
        .arg(src)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "cc failed for {name}");
    exe
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

struct Recorded {
    ip: u64,
    sp: u64,
    bp: u64,
    stack: Vec<u8>,
}

/// Records raw perf samples of every thread of `pid` for `secs`.
fn record(pid: u32, secs: f64) -> Vec<Recorded> {
    let config = EventConfig {
        period_ns: 1_000_000_000 / 99,
        dwarf: true,
        stack_bytes: 32 * 1024,
        callchain: false,
        kernel: false,
    };
    let mut events: Vec<PerfEvent> = perf::online_cpus()
        .expect("the online CPUs")
        .into_iter()
        .filter_map(|cpu| PerfEvent::open_cpu(cpu, &config).ok())
        .collect();
    let mut refs = Vec::new();
    let mut out = Vec::new();
    let t0 = Instant::now();
    while t0.elapsed().as_secs_f64() < secs {
        std::thread::sleep(Duration::from_millis(10));
        for (i, e) in events.iter_mut().enumerate() {
            refs.clear();
            let head = e.scan(i as u32, u64::MAX, &mut refs);
            for r in refs.iter().filter(|r| r.pid == pid as i32) {
                if let Ok(EventRecord::Sample(s)) = e.raw(r).parse() {
                    if let (Some(regs), Some((stack, _))) = (s.user_regs.as_ref(), s.user_stack.as_ref()) {
                        if let (Some(ip), Some(sp)) = (regs.get(REG_IP), regs.get(REG_SP)) {
                            let bp = regs.get(REG_BP).unwrap_or(0);
                            out.push(Recorded { ip, sp, bp, stack: stack.as_slice().into_owned() });
                        }
                    }
                }
            }
            e.consume(head);
        }
    }
    out
}

fn unwind_costs(dir: &Path) {
    let exe = compile(dir, "states");
    let out = dir.join("figures.txt");
    let child = Command::new(&exe).arg(&out).arg("4").spawn().expect("start states");
    let pid = child.id();
    let _reaper = Reaper(child);
    while !out.with_extension("txt.ready").exists() {
        std::thread::sleep(Duration::from_millis(10));
    }
    let samples = record(pid, 2.5);
    let symbolizer = Symbolizer::new();
    let mut files = FileCache::default();
    let mut image = ProcessImage::new(pid);
    image.refresh(&mut files, &symbolizer).expect("maps");
    let mut addrs = Vec::new();
    for pass in ["cold", "warm", "warm"] {
        let (mut unwind_ns, mut full_ns, mut frames) = (Vec::new(), Vec::new(), 0usize);
        for s in &samples {
            let t0 = Instant::now();
            addrs.clear();
            image.unwind(s.ip, s.sp, s.bp, &s.stack, &mut addrs);
            let t1 = Instant::now();
            for a in &addrs {
                let names = symbolizer.names(image.normalize(*a));
                frames += names.len();
            }
            let t2 = Instant::now();
            unwind_ns.push((t1 - t0).as_nanos() as u64);
            full_ns.push((t2 - t0).as_nanos() as u64);
        }
        unwind_ns.sort_unstable();
        full_ns.sort_unstable();
        println!(
            "per-sample ({pass}, {} samples, {:.1} frames each): unwind p50 {:.1} µs p99 {:.1} µs; unwind + symbolize p50 {:.1} µs p99 {:.1} µs",
            samples.len(),
            frames as f64 / samples.len().max(1) as f64,
            percentile(&unwind_ns, 0.5) as f64 / 1e3,
            percentile(&unwind_ns, 0.99) as f64 / 1e3,
            percentile(&full_ns, 0.5) as f64 / 1e3,
            percentile(&full_ns, 0.99) as f64 / 1e3,
        );
    }
    let st = symbolizer.stats();
    println!("symbolizer: {} hits, {} misses, {} cached frames", st.cache_hits, st.cache_misses, st.cached_frames);
}

fn process_cpu_ns() -> u64 {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage fills the struct we own.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as u64 * 1_000_000_000 + t.tv_usec as u64 * 1000;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:").map(|v| v.trim().trim_end_matches(" kB").parse().unwrap_or(0)))
        })
        .unwrap_or(0)
}

fn many_threads(dir: &Path) {
    let exe = compile(dir, "busy");
    let (mut cpu_per_s, mut cpu_per_sample, mut lost_ratio, mut rates) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..3 {
        let child = Command::new(&exe).args(["20", "15"]).spawn().expect("start busy");
        let pid = child.id();
        let _reaper = Reaper(child);
        std::thread::sleep(Duration::from_millis(300));
        let mut sampler = Sampler::new(SamplerOptions::default()).expect("sampler (run as root)");
        sampler.attach(pid).expect("attach");
        // Steady state only: attach, the first unwind-info and debug-info parsing and the
        // first profile are paid once and left out.
        let warm = Instant::now();
        while warm.elapsed() < Duration::from_secs(2) {
            sampler.poll(Duration::from_millis(100)).expect("poll");
        }
        sampler.take_profiles("bench", hotframe::model::time::now_ms());
        let before = sampler.stats();
        let cpu0 = process_cpu_ns();
        let t0 = Instant::now();
        let mut next_take = Instant::now() + Duration::from_secs(2);
        let mut stacks = 0;
        while t0.elapsed() < Duration::from_secs(10) {
            sampler.poll(Duration::from_millis(100)).expect("poll");
            if Instant::now() >= next_take {
                stacks += sampler
                    .take_profiles("bench", hotframe::model::time::now_ms())
                    .iter()
                    .map(|p| p.stacks.len())
                    .sum::<usize>();
                next_take += Duration::from_secs(2);
            }
        }
        stacks += sampler
            .take_profiles("bench", hotframe::model::time::now_ms())
            .iter()
            .map(|p| p.stacks.len())
            .sum::<usize>();
        let wall = t0.elapsed().as_secs_f64();
        let cpu = (process_cpu_ns() - cpu0) as f64;
        let after = sampler.stats();
        let st = hotframe::sampler::SamplerStats {
            samples: after.samples - before.samples,
            offcpu_samples: after.offcpu_samples - before.offcpu_samples,
            lost: after.lost - before.lost,
            truncated: after.truncated - before.truncated,
            unwind_failures: after.unwind_failures - before.unwind_failures,
            ..after
        };
        let all = (st.samples + st.offcpu_samples) as f64;
        println!(
            "round {round}: {:.1} s, {} on-CPU + {} off-CPU samples, {} lost, {} threads, {} stacks, sampler CPU {:.2} ms/s ({:.1} µs per sample), {} truncated, {} unwind failures",
            wall, st.samples, st.offcpu_samples, st.lost, st.threads_followed, stacks, cpu / wall / 1e6, cpu / all / 1e3, st.truncated, st.unwind_failures
        );
        cpu_per_s.push(cpu / wall / 1e6);
        cpu_per_sample.push(cpu / all / 1e3);
        lost_ratio.push(st.lost as f64 / (st.samples + st.lost).max(1) as f64 * 100.0);
        rates.push(st.samples as f64 / wall);
    }
    println!(
        "20 threads at 99 Hz, medians of 3: {:.0} on-CPU samples/s, lost {:.2}%, sampler CPU {:.2} ms/s ({:.2}% of a core), {:.1} µs per sample (on- and off-CPU, symbolization included), peak RSS {} MiB",
        median(rates),
        median(lost_ratio),
        median(cpu_per_s.clone()),
        median(cpu_per_s) / 10.0,
        median(cpu_per_sample),
        peak_rss_kib() / 1024
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    many_threads(dir.path());
    unwind_costs(dir.path());
}
