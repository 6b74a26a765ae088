//! The cost window W against the kernel: several busy processes of one service (the
//! `duty` workload, which prints the CPU the kernel accounted to it) profiled by the real
//! `hotframe agent --name` into a real `hotframe serve`; the flame graph's cores must be
//! the processes' CPU over wall time within 10%, and the timeline must agree. Run alone:
//! `cargo test --test it cost_window:: -- --nocapture` (prints both figures). They need
//! root for perf_event_open (`common::require_root`).

use crate::agent::agent;
use crate::common::{get_json, require_root, tempdir, ChildGuard, Server};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Wall seconds each workload process runs.
const SECONDS: f64 = 30.0;
/// Timeline step of the per-point comparison, seconds.
const STEP_S: i64 = 10;

/// Builds `tests/fixtures/workloads/duty.c` into `dir`.
fn build_duty(dir: &Path) -> PathBuf {
    crate::common::build_workload("cc", "duty.c", &["-O1", "-g"], dir, "duty")
}

/// `duty DUTY SECONDS TAG`, its report on stdout.
fn start_duty(exe: &Path, duty: f64, tag: &str) -> ChildGuard {
    ChildGuard::spawn(
        Command::new(exe).args([duty.to_string(), SECONDS.to_string(), tag.to_string()]).stdout(Stdio::piped()),
    )
}

/// Waits for every workload; the kernel's figure: the sum of each process's CPU seconds
/// over its wall seconds (its average cores; the workload keeps its rate steady, so this
/// holds over any part of its life the agent observed).
fn kernel_cores(workloads: Vec<ChildGuard>) -> f64 {
    workloads
        .into_iter()
        .map(|mut w| {
            let (status, _) = w.wait_output(Duration::from_secs(120));
            assert!(status.success(), "duty failed: {status}");
            let mut out = String::new();
            std::io::Read::read_to_string(w.0.stdout.as_mut().unwrap(), &mut out).unwrap();
            let figures: Vec<f64> = out.split_whitespace().map(|f| f.parse().unwrap()).collect();
            assert_eq!(figures.len(), 2, "duty printed {out:?}");
            figures[0] / figures[1]
        })
        .sum()
}

fn unix_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

fn unix_s() -> i64 {
    unix_ms() / 1000
}

/// CPU seconds the kernel accounted to `pid` so far (utime + stime of /proc/PID/stat).
fn proc_cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some(ticks as f64 / hz)
}

/// The kernel's CPU seconds of `pids` together, read every 50 ms until stopped: (Unix ms,
/// CPU seconds) pairs, so that any stretch of time has its own kernel figure.
struct KernelClock {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Vec<(i64, f64)>>,
}

impl KernelClock {
    fn start(pids: Vec<u32>) -> KernelClock {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut last = vec![0.0; pids.len()];
            let mut out = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                for (l, pid) in last.iter_mut().zip(&pids) {
                    // An exited process keeps what it had.
                    *l = proc_cpu_seconds(*pid).unwrap_or(*l);
                }
                out.push((unix_ms(), last.iter().sum()));
                std::thread::sleep(Duration::from_millis(50));
            }
            out
        });
        KernelClock { stop, thread }
    }

    fn finish(self) -> Vec<(i64, f64)> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

/// CPU seconds at `t_ms` from the polled series (linear between readings).
fn cpu_at(series: &[(i64, f64)], t_ms: i64) -> f64 {
    let i = series.partition_point(|(t, _)| *t <= t_ms);
    match (series.get(i.wrapping_sub(1)), series.get(i)) {
        (Some(&(t0, c0)), Some(&(t1, c1))) => c0 + (c1 - c0) * (t_ms - t0) as f64 / (t1 - t0).max(1) as f64,
        (Some(&(_, c)), None) | (None, Some(&(_, c))) => c,
        (None, None) => 0.0,
    }
}

/// Stops an agent the way an operator does (SIGTERM: it flushes) and checks it exited well.
fn stop(mut agent: ChildGuard) {
    agent.signal(libc::SIGTERM);
    let (status, stderr) = agent.wait_output(Duration::from_secs(60));
    assert!(status.success(), "agent: {status}\n{stderr}");
}

/// The flame graph's cores and terms, and the timeline's, over `[from_s, until_s)`,
/// against the kernel's figure over the workloads' lives and its CPU `series`.
fn check_against_kernel(url: &str, from_s: i64, until_s: i64, kernel: f64, series: &[(i64, f64)], hosts: u64) {
    let range = format!("service=agent-test&states=cpu&from={from_s}&until={until_s}");
    let fg = get_json(&format!("{url}/api/v1/flamegraph?{range}"));
    let cores = fg["totals"]["cores"].as_f64().unwrap();
    let cost = &fg["cost"];
    let window = cost["windowSeconds"].as_f64().unwrap();
    println!(
        "kernel {kernel:.3} cores, hotframe {cores:.3} cores (W = {window:.1} s, Hp = {}, {} profiles, {:.2} CPU s)",
        cost["profiledHosts"], fg["totals"]["profiles"], fg["totals"]["cpuSeconds"]
    );
    assert_eq!(cost["profiledHosts"].as_u64(), Some(hosts), "{cost}");
    // W is the wall time observed per host, not a sum over processes.
    assert!(window > 0.5 * SECONDS && window < SECONDS + 3.0, "W = {window} s for {SECONDS} s of wall time");
    assert!((cores / kernel - 1.0).abs() <= 0.10, "hotframe {cores} cores, kernel {kernel} cores");

    // One timeline point over the same profiles: the same figure.
    let step = until_s - from_s;
    let one = get_json(&format!("{url}/api/v1/timeline?{range}&step={step}s"));
    let point = one["points"][0]["cores"]["RUNNABLE"].as_f64().unwrap();
    assert!((point - cores).abs() <= 1e-9 * cores, "timeline {point} vs flame graph {cores}");
    // Points of 10 s: each the cores while observed, against the kernel's CPU over the
    // same 10 s (the first and last points, which the processes' start and exit cut, and
    // points under 1 s of CPU, are left out: their own edges weigh too much). A point
    // holds the profiles that start in it, which run up to one upload interval (1 s)
    // past its end: the kernel's 10 s are taken half a second later.
    let tl = get_json(&format!("{url}/api/v1/timeline?{range}&step={STEP_S}s"));
    let points: Vec<(i64, f64)> = tl["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["t"].as_i64().unwrap(), p["cores"]["RUNNABLE"].as_f64().unwrap()))
        .filter(|p| p.1 > 0.0)
        .collect();
    let inner = &points[1..points.len().saturating_sub(1).max(1)];
    let mut compared = 0;
    for &(t, point) in inner {
        let (lo, hi) = (t + 500, t + 500 + STEP_S * 1000);
        let truth = (cpu_at(series, hi) - cpu_at(series, lo)) / STEP_S as f64;
        println!("timeline at {t}: hotframe {point:.3} cores, kernel {truth:.3} cores");
        if truth * STEP_S as f64 >= 1.0 {
            assert!((point / truth - 1.0).abs() <= 0.15, "timeline at {t}: {point} cores, kernel {truth} cores");
            compared += 1;
        }
    }
    assert!(compared >= 1, "no timeline point to compare: {points:?}");
}

/// Per host (`None`: the agent's own host label), `processes` duty workloads at `duty`
/// of a core each under one `agent --name`, into one server; then the checks above.
fn profile_and_check(hosts: &[(Option<&str>, usize, f64)]) {
    if !require_root("perf_event_open") {
        return;
    }
    let data = tempdir();
    let duty_exe = build_duty(data.path());
    let server = Server::start(&data.path().join("store"), &[]);
    let from_s = unix_s() - 60;
    let mut workloads = Vec::new();
    let mut agents = Vec::new();
    for (i, &(host, processes, duty)) in hosts.iter().enumerate() {
        let tag = format!("hfwin-{}-{}", std::process::id(), host.unwrap_or("own"));
        workloads.extend((0..processes).map(|_| start_duty(&duty_exe, duty, &tag)));
        let mut extra = vec!["--name".to_string(), format!("{tag}$")];
        if let Some(host) = host {
            extra.extend(["--label".to_string(), format!("host={host}")]);
        }
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        agents.push(agent(&server.url, &extra, &data.path().join(format!("spool{i}"))));
    }
    let clock = KernelClock::start(workloads.iter().map(ChildGuard::pid).collect());
    let kernel = kernel_cores(workloads);
    let series = clock.finish();
    // The last profiles leave at the next upload after the exits.
    std::thread::sleep(Duration::from_secs(3));
    agents.into_iter().for_each(stop);
    check_against_kernel(&server.url, from_s, unix_s() + 60, kernel, &series, hosts.len() as u64);
}

#[test]
fn three_processes_on_one_host_cost_what_the_kernel_counted() {
    profile_and_check(&[(None, 3, 0.2)]);
}

#[test]
fn a_service_on_two_hosts_costs_what_the_kernel_counted() {
    profile_and_check(&[(Some("hf-a"), 3, 0.15), (Some("hf-b"), 2, 0.15)]);
}
