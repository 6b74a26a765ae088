//! Runtimes profiled from outside, with no code change but the one flag each needs
//! (docs/runtimes.md): a JVM (JIT frames named through `jcmd PID Compiler.perfmap`,
//! thread states as Java reads them), Node.js (`--perf-basic-prof`) and Python 3.12+
//! (`-X perf`). Each workload (tests/fixtures/runtimes/) measures itself and writes its
//! figures; the sampler's profile must agree: CPU shares within 5 points, state shares
//! within 8, and at least 95% of stacks reaching the thread's entry. Root (perf_event_open)
//! and the runtimes are needed: skipped without them, failed under CI.

use crate::common::{eventually, require, require_root, ChildGuard};
use hotframe::model::{Profile, ThreadState};
use hotframe::sampler::{Sampler, SamplerEvent, SamplerOptions};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Workloads measure CPU shares: one at a time, and not beside the sampler tests' own
/// (those hold their own lock; a busy host only widens the noise, the bounds hold).
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/runtimes").join(name)
}

fn on_path(program: &str) -> bool {
    Command::new("sh").arg("-c").arg(format!("command -v {program}")).output().is_ok_and(|o| o.status.success())
}

/// (stack names root first, state, count) of every sample of `pid`.
type Samples = Vec<(Vec<String>, ThreadState, u64)>;

/// Starts `command` (a workload writing `out.ready` once running and `out` when done),
/// samples it from ready to exit, and returns its samples and figures.
fn profile_workload(mut command: Command, out: &Path, limit: Duration) -> (Samples, HashMap<String, String>, Sampler) {
    // In the workload's directory: what a runtime writes beside it (V8's isolate logs under
    // --perf-basic-prof) goes away with it.
    if let Some(dir) = out.parent() {
        command.current_dir(dir);
    }
    let mut child = ChildGuard::spawn(&mut command);
    let pid = child.pid();
    let ready = out.with_extension("ready");
    eventually(&format!("{} to appear", ready.display()), Duration::from_secs(60), || ready.exists());
    // 499 Hz: five times the default's samples, so a 5-point bound on a share is several
    // standard deviations of sampling noise even when the shared test machine gives the
    // workload a third of a core.
    let opts = SamplerOptions { frequency_hz: 499, ..SamplerOptions::default() };
    let mut sampler = Sampler::new(opts).expect("sampler (run as root)");
    sampler.attach(pid).expect("attach");
    let t0 = Instant::now();
    let mut profiles: Vec<Profile> = Vec::new();
    loop {
        let events = sampler.poll(Duration::from_millis(50)).expect("poll");
        if events.contains(&SamplerEvent::Exited(pid)) {
            break;
        }
        assert!(t0.elapsed() < limit, "workload {pid} did not exit within {limit:?}");
        if t0.elapsed().as_millis() % 2000 < 50 {
            profiles.extend(sampler.take_profiles("test", hotframe::model::time::now_ms()));
        }
    }
    profiles.extend(sampler.take_profiles("test", hotframe::model::time::now_ms()));
    let status = child.wait_exit(Duration::from_secs(10));
    remove_perf_map(pid);
    assert!(status.success(), "workload failed: {status}");
    let mut samples = Vec::new();
    for p in profiles.iter().filter(|p| p.labels.get("pid") == Some(&pid.to_string())) {
        for s in &p.samples {
            samples.push((p.stack_names(s.stack).map(str::to_string).collect(), s.state, s.count));
        }
    }
    let figures = std::fs::read_to_string(out)
        .expect("workload figures")
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect();
    (samples, figures, sampler)
}

fn number(figures: &HashMap<String, String>, key: &str) -> f64 {
    figures.get(key).and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{key} in {figures:?}"))
}

/// RUNNABLE samples whose stack has a frame containing `needle`.
fn cpu_samples(samples: &Samples, needle: &str) -> u64 {
    samples
        .iter()
        .filter(|(s, st, _)| *st == ThreadState::Runnable && s.iter().any(|f| f.contains(needle)))
        .map(|(_, _, n)| n)
        .sum()
}

/// The share of samples (on and off CPU) whose stack starts at a thread's entry: a
/// thread's `clone3`/`start_thread`, or the main thread's `_start` (unnamed in a stripped
/// executable such as the `java` launcher: then libc's `__libc_start_call_main` below it).
fn rooted_share(samples: &Samples) -> f64 {
    const ENTRIES: &[&str] = &["start_thread", "clone3", "__clone3", "clone", "_start"];
    let (mut rooted, mut all) = (0, 0);
    for (stack, _, n) in samples {
        all += n;
        let mut frames = stack.iter().filter(|f| !f.starts_with("[jvm]"));
        let root = frames.next().map_or("", String::as_str);
        let main = root.starts_with("[unknown]") && frames.next().is_some_and(|f| f == "__libc_start_main_impl");
        if ENTRIES.contains(&root) || main {
            rooted += n;
        }
    }
    rooted as f64 / all.max(1) as f64
}

/// Lines `state;frames count`, biggest first, for a failure message.
fn folded(samples: &Samples, limit: usize) -> String {
    let mut rows: Vec<_> = samples.iter().collect();
    rows.sort_by_key(|(_, _, n)| std::cmp::Reverse(*n));
    rows.iter()
        .take(limit)
        .map(|(s, st, n)| format!("{};{} {n}", st.as_str(), s.join(";")))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Asserts that `needle_a`'s share of the CPU samples of `needle_a` and `needle_b` is the
/// workload's own `a_ns / (a_ns + b_ns)` within 5 points.
fn assert_cpu_split(samples: &Samples, (needle_a, needle_b): (&str, &str), own: f64) {
    let (a, b) = (cpu_samples(samples, needle_a) as f64, cpu_samples(samples, needle_b) as f64);
    assert!(a + b >= 500.0, "too few CPU samples naming {needle_a} / {needle_b}: {a} + {b}\n{}", folded(samples, 40));
    let seen = a / (a + b);
    eprintln!("{needle_a} share {seen:.3} vs the workload's own {own:.3} ({a} + {b} samples)");
    assert!((seen - own).abs() <= 0.05, "{needle_a} share {seen:.3}, the workload measured {own:.3}");
}

/// The JVM workload compiled into `dir`, to run for `seconds` writing `out`, as user
/// `uid` (and its group) if given.
fn java_command(dir: &Path, out: &Path, seconds: &str, uid: Option<u32>) -> Command {
    let compiled =
        Command::new("javac").arg("-d").arg(dir).arg(fixture("Runtimes.java")).status().is_ok_and(|s| s.success());
    assert!(compiled, "javac failed");
    let mut java = Command::new("java");
    // PreserveFramePointer: JIT code keeps rbp, so stacks unwind through it. alpha and beta
    // are not inlined into their caller: an inlined method is its caller's frame in a perf
    // map, as in any perf-map profiler.
    java.args(["-XX:+PreserveFramePointer", "-XX:CompileCommand=quiet"])
        .args(["-XX:CompileCommand=dontinline,Runtimes::alpha", "-XX:CompileCommand=dontinline,Runtimes::beta"])
        .arg("-cp")
        .arg(dir)
        .arg("Runtimes")
        .arg(out)
        .arg(seconds);
    if let Some(uid) = uid {
        use std::os::unix::process::CommandExt;
        java.uid(uid).gid(uid);
    }
    java
}

fn has_jdk() -> bool {
    require(
        "a JDK (java, javac, jcmd)",
        ["java", "javac", "jcmd"].iter().all(|p| on_path(p)),
        "apt-get install openjdk-17-jdk-headless",
    )
}

#[test]
fn java_frames_states_and_stacks_match_what_the_jvm_measured() {
    if !require_root("perf_event_open")
        || !require(
            "a JDK (java, javac, jcmd)",
            ["java", "javac", "jcmd"].iter().all(|p| on_path(p)),
            "apt-get install openjdk-17-jdk-headless",
        )
    {
        return;
    }
    let _serial = serial();
    let dir = crate::common::tempdir();
    let out = dir.path().join("figures");
    let java = java_command(dir.path(), &out, "12", None);
    let (samples, figures, sampler) = profile_workload(java, &out, Duration::from_secs(90));
    let stats = sampler.stats();
    eprintln!("{}\n{stats:?}\n{figures:?}", folded(&samples, 60));

    // 1. JIT frames named as package.Class.method, and the CPU split of the two hot methods.
    assert!(stats.perfmap_dumps >= 1 && stats.jit_frames_named > 0, "{stats:?}");
    let own = number(&figures, "alpha_ns") / (number(&figures, "alpha_ns") + number(&figures, "beta_ns"));
    assert_cpu_split(&samples, ("Runtimes.alpha", "Runtimes.beta"), own);

    // 3. JVM-internal threads carry a root frame; the states of the others as the JVM saw them.
    assert!(samples.iter().any(|(s, _, _)| s[0] == "[jvm] GC"), "no [jvm] GC thread");
    assert!(samples.iter().any(|(s, _, _)| s[0] == "[jvm] JIT compiler"), "no [jvm] JIT compiler thread");
    let mut seen: HashMap<ThreadState, f64> = HashMap::new();
    for (stack, state, n) in &samples {
        if !stack[0].starts_with("[jvm]") {
            *seen.entry(*state).or_default() += *n as f64;
        }
    }
    let seen_total: f64 = seen.values().sum();
    let own_total: f64 = ["RUNNABLE", "WAITING", "TIMED_WAITING", "BLOCKED"]
        .iter()
        .map(|s| figures.get(&format!("state.{s}")).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0))
        .sum();
    for state in [ThreadState::Runnable, ThreadState::Waiting, ThreadState::TimedWaiting, ThreadState::Blocked] {
        let own = figures.get(&format!("state.{}", state.as_str())).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
            / own_total;
        let got = seen.get(&state).copied().unwrap_or(0.0) / seen_total;
        eprintln!("{}: {got:.3} vs the JVM's own {own:.3}", state.as_str());
        assert!((got - own).abs() <= 0.08, "{} share {got:.3}, the JVM measured {own:.3}", state.as_str());
    }
    // The three waiting threads in the state a Java developer expects.
    let state_of = |needle: &str| -> HashMap<ThreadState, u64> {
        let mut out = HashMap::new();
        for (s, st, n) in &samples {
            if s.join(";").contains(needle) && *st != ThreadState::Runnable {
                *out.entry(*st).or_insert(0) += n;
            }
        }
        out
    };
    // wait() parks without a timeout (PlatformEvent::park()); the JDK's Common-Cleaner
    // waits with one (PlatformEvent::park(long)).
    for (needle, state) in [
        ("ObjectMonitor::enter", ThreadState::Blocked),
        ("JVM_Sleep", ThreadState::TimedWaiting),
        ("ObjectMonitor::wait(long, bool, JavaThread*);os::PlatformEvent::park();", ThreadState::Waiting),
        ("ObjectMonitor::wait(long, bool, JavaThread*);os::PlatformEvent::park(long)", ThreadState::TimedWaiting),
    ] {
        let states = state_of(needle);
        assert!(states.len() == 1 && states.contains_key(&state), "{needle}: {states:?}");
    }

    // 2. Stacks reach the thread entry through JIT and interpreter frames.
    let rooted = rooted_share(&samples);
    eprintln!("rooted {rooted:.3}");
    assert!(rooted >= 0.95, "{rooted:.3} of stacks reach a thread entry\n{}", folded(&samples, 60));
}

#[test]
fn a_jvm_of_another_user_is_asked_for_its_perf_map_as_that_user() {
    // The JVM's attach mechanism accepts only its own user: jcmd must run as `nobody` here.
    if !require_root("perf_event_open") || !has_jdk() {
        return;
    }
    let _serial = serial();
    let dir = crate::common::tempdir();
    std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let out = dir.path().join("figures");
    let java = java_command(dir.path(), &out, "10", Some(65534));
    let failures_before = Sampler::new(SamplerOptions::default()).expect("sampler").stats().perfmap_dump_failures;
    let (samples, _figures, sampler) = profile_workload(java, &out, Duration::from_secs(60));
    let stats = sampler.stats();
    assert_eq!(stats.perfmap_dump_failures, failures_before, "{stats:?}");
    assert!(cpu_samples(&samples, "Runtimes.alpha") > 0, "no named JIT frame\n{}", folded(&samples, 20));
}

/// Removes the perf map a runtime left in /tmp (they are never removed by the runtime).
fn remove_perf_map(pid: u32) {
    let _ = std::fs::remove_file(format!("/tmp/perf-{pid}.map"));
}

/// Profiles a workload printing `alpha_ns` / `beta_ns` and checks its split and stacks.
fn check_split_workload(command: Command, out: &Path, (alpha, beta): (&str, &str)) {
    let (samples, figures, sampler) = profile_workload(command, out, Duration::from_secs(90));
    let stats = sampler.stats();
    eprintln!("{}\n{stats:?}\n{figures:?}", folded(&samples, 30));
    assert!(stats.jit_frames_named > 0, "no frame named from the perf map: {stats:?}");
    let own = number(&figures, "alpha_ns") / (number(&figures, "alpha_ns") + number(&figures, "beta_ns"));
    assert_cpu_split(&samples, (alpha, beta), own);
    let rooted = rooted_share(&samples);
    eprintln!("rooted {rooted:.3}");
    assert!(rooted >= 0.95, "{rooted:.3} of stacks reach a thread entry\n{}", folded(&samples, 30));
}

#[test]
fn node_frames_split_and_stacks_match_what_the_script_measured() {
    if !require_root("perf_event_open") || !require("Node.js (node)", on_path("node"), "apt-get install nodejs") {
        return;
    }
    let _serial = serial();
    let dir = crate::common::tempdir();
    let out = dir.path().join("figures");
    let mut node = Command::new("node");
    node.arg("--perf-basic-prof").arg(fixture("split.js")).arg(&out).arg("10");
    check_split_workload(node, &out, ("alpha /", "beta /"));
}

/// A Python >= 3.12 (the first with `-X perf`): `HOTFRAME_PYTHON`, pyenv's versions,
/// python3.13 / python3.12 / python3 on PATH.
fn python_with_perf_support() -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = std::env::var_os("HOTFRAME_PYTHON").map(PathBuf::from).into_iter().collect();
    let pyenv = std::env::var_os("PYENV_ROOT").map_or_else(|| PathBuf::from("/root/.pyenv"), PathBuf::from);
    if let Ok(versions) = std::fs::read_dir(pyenv.join("versions")) {
        let mut found: Vec<PathBuf> = versions.flatten().map(|v| v.path().join("bin/python3")).collect();
        found.sort();
        candidates.extend(found.into_iter().rev());
    }
    candidates.extend(["python3.13", "python3.12", "python3"].map(PathBuf::from));
    candidates.into_iter().find(|python| {
        Command::new(python)
            .args(["-c", "import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)"])
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

#[test]
fn python_frames_split_and_stacks_match_what_the_script_measured() {
    if !require_root("perf_event_open") {
        return;
    }
    // Not every machine has a Python with -X perf (Debian 12's is 3.11): skipped, even
    // under CI, when none is installed; .ci/run uses one where the machine has it.
    let Some(python) = python_with_perf_support() else {
        eprintln!("skipped: no Python >= 3.12 (-X perf) found; set HOTFRAME_PYTHON or install one with pyenv");
        return;
    };
    let _serial = serial();
    let dir = crate::common::tempdir();
    let out = dir.path().join("figures");
    let mut py = Command::new(python);
    py.args(["-X", "perf"]).arg(fixture("split.py")).arg(&out).arg("10");
    check_split_workload(py, &out, ("alpha (", "beta ("));
}
