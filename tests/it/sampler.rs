//! The sampler against real processes: a C workload without frame pointers whose
//! threads compute, sleep, wait on a condition variable and contend for a mutex (it
//! measures itself), a Rust release binary without frame pointers, a pid that does not
//! exist and a target that exits. They need root (CI runs them as root); as a normal
//! user they say so and skip (`common::require_root`).

use crate::common::{eventually, require_root, ChildGuard};
use hotframe::model::{Profile, ThreadState};
use hotframe::sampler::{Sampler, SamplerError, SamplerEvent, SamplerOptions, UnwindMode};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const PERF: &str = "perf_event_open";

/// The sampler tests measure proportions of CPU time: run them one at a time so they
/// do not starve each other's workloads on a small CI machine.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/workloads").join(name)
}

fn compile_c(dir: &Path) -> PathBuf {
    let exe = dir.join("states");
    let status = Command::new("cc")
        .args(["-O2", "-fomit-frame-pointer", "-pthread", "-o"])
        .arg(&exe)
        .arg(fixture("states.c"))
        .status()
        .expect("run cc");
    assert!(status.success(), "cc failed");
    exe
}

/// Compiles and starts the C workload for `seconds` (and until its cpu_split thread had
/// `min_cpu_seconds` of CPU, so a busy host still gives enough samples); returns it once all its threads
/// run, with its pid and the path of the figures it writes when done.
fn start_states(dir: &Path, seconds: &str, min_cpu_seconds: &str) -> (ChildGuard, u32, PathBuf) {
    let exe = compile_c(dir);
    let out = dir.join("figures.txt");
    let reaper = ChildGuard::spawn(Command::new(&exe).arg(&out).arg(seconds).arg(min_cpu_seconds));
    let pid = reaper.pid();
    wait_for_file(&out.with_extension("txt.ready"), Duration::from_secs(10));
    (reaper, pid, out)
}

fn wait_for_file(path: &Path, limit: Duration) {
    eventually(&format!("{} to appear", path.display()), limit, || path.exists());
}

/// Waits until process `pid` runs `threads` threads.
fn wait_for_threads(pid: u32, threads: usize, limit: Duration) {
    eventually(&format!("{threads} threads in process {pid}"), limit, || {
        hotframe::sampler::procfs::thread_ids(pid).map(|t| t.len()).unwrap_or(0) >= threads
    });
}

/// Polls until the target exits (or `limit`), then returns everything sampled.
fn sample_until_exit(sampler: &mut Sampler, pid: u32, limit: Duration) -> (Vec<Profile>, Vec<SamplerEvent>) {
    let t0 = Instant::now();
    let mut events = Vec::new();
    let mut profiles = Vec::new();
    loop {
        let got = sampler.poll(Duration::from_millis(50)).expect("poll");
        let exited = got.contains(&SamplerEvent::Exited(pid));
        events.extend(got);
        if exited {
            break;
        }
        assert!(t0.elapsed() < limit, "target {pid} did not exit within {limit:?}");
        // Take profiles now and then, as the agent does, to exercise windowing.
        if t0.elapsed().as_millis() % 1000 < 50 {
            profiles.extend(sampler.take_profiles("test", hotframe::model::time::now_ms()));
        }
    }
    profiles.extend(sampler.take_profiles("test", hotframe::model::time::now_ms()));
    (profiles, events)
}

/// (stack names root first, state, count) of every sample of every profile of `pid`.
fn samples_of(profiles: &[Profile], pid: u32) -> Vec<(Vec<String>, ThreadState, u64)> {
    let mut out = Vec::new();
    for p in profiles.iter().filter(|p| p.labels.get("pid") == Some(&pid.to_string())) {
        for s in &p.samples {
            out.push((p.stack_names(s.stack).map(str::to_string).collect(), s.state, s.count));
        }
    }
    out
}

fn folded(samples: &[(Vec<String>, ThreadState, u64)]) -> String {
    let mut lines: Vec<String> =
        samples.iter().map(|(s, st, n)| format!("{};{} {}", st.as_str(), s.join(";"), n)).collect();
    lines.sort();
    lines.join("\n")
}

fn read_figures(path: &Path) -> HashMap<String, f64> {
    std::fs::read_to_string(path)
        .expect("workload figures")
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim().parse().expect("number")))
        .collect()
}

/// Samples of the thread whose stacks contain `function`, per state.
fn states_of(samples: &[(Vec<String>, ThreadState, u64)], function: &str) -> HashMap<ThreadState, u64> {
    let mut out = HashMap::new();
    for (stack, state, n) in samples {
        if stack.iter().any(|f| f == function) {
            *out.entry(*state).or_insert(0) += n;
        }
    }
    out
}

fn share(map: &HashMap<ThreadState, u64>, state: ThreadState) -> f64 {
    let total: u64 = map.values().sum();
    if total == 0 {
        return 0.0;
    }
    *map.get(&state).unwrap_or(&0) as f64 / total as f64
}

const ROOTS: &[&str] = &["start_thread", "clone3", "__clone3", "clone", "_start", "__libc_start_main", "main"];

#[test]
fn c_workload_shares_states_and_complete_stacks() {
    if !require_root(PERF) {
        return;
    }
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let (_reaper, pid, out) = start_states(dir.path(), "4", "1.5");

    let mut sampler = Sampler::new(SamplerOptions::default()).expect("sampler (run as root)");
    let attached = Instant::now();
    sampler.attach(pid).expect("attach");
    assert_eq!(sampler.targets(), vec![pid]);
    let (profiles, _events) = sample_until_exit(&mut sampler, pid, Duration::from_secs(70));
    let sampled_periods = attached.elapsed().as_secs_f64() * 99.0;
    wait_for_file(&out, Duration::from_secs(5));
    let figures = read_figures(&out);
    let samples = samples_of(&profiles, pid);
    let stats = sampler.stats();
    eprintln!("{}\n{stats:?}\n{figures:?}", folded(&samples));

    // On-CPU shares of hot_a / warm_b against the workload's own CPU clocks.
    let cpu = |f: &str| -> u64 {
        samples
            .iter()
            .filter(|(s, st, _)| *st == ThreadState::Runnable && s.iter().any(|x| x == f))
            .map(|(_, _, n)| n)
            .sum()
    };
    let (a, b) = (cpu("hot_a") as f64, cpu("warm_b") as f64);
    assert!(a + b > 100.0, "too few samples of hot_a/warm_b: {a} + {b}; {stats:?} {figures:?}");
    let own = figures["hot_a_ns"] / (figures["hot_a_ns"] + figures["warm_b_ns"]);
    let seen = a / (a + b);
    eprintln!("hot_a share {seen:.3} vs the workload's own {own:.3} ({a} + {b} samples)");
    assert!((seen - own).abs() <= 0.05, "hot_a share {seen:.3} vs the workload's own {own:.3}");

    // The sleeper: TIMED_WAITING about as much as it measured itself sleeping. RUNNABLE
    // is CPU time (run-queue waits are not counted by default), so compare with its
    // sleep against sleep + CPU: about half on an idle host, still right on a busy one.
    let sleeper = states_of(&samples, "sleeper");
    let own_sleep = figures["sleep_ns"] / (figures["sleep_ns"] + figures["sleeper_cpu_ns"]);
    let tw = share(&sleeper, ThreadState::TimedWaiting);
    eprintln!(
        "sleeper TIMED_WAITING {tw:.3} vs own {own_sleep:.3}; contender {contender_states:?}; waiter {waiter_states:?}",
        contender_states = states_of(&samples, "mutex_contender"),
        waiter_states = states_of(&samples, "condvar_waiter")
    );
    assert!((tw - own_sleep).abs() <= 0.10, "sleeper TIMED_WAITING {tw:.3} vs own {own_sleep:.3}: {sleeper:?}");
    assert!(sleeper.keys().all(|s| matches!(s, ThreadState::Runnable | ThreadState::TimedWaiting)), "{sleeper:?}");

    // The condvar waiter waits; the contender is blocked.
    let waiter = states_of(&samples, "condvar_waiter");
    assert!(share(&waiter, ThreadState::Waiting) >= 0.95, "condvar waiter: {waiter:?}");
    // Every thread is accounted at every tick, and never twice: the waiter, off-CPU all
    // along, has one sample per period; the others (whose run-queue waits are not
    // counted) no more than that.
    let waited: u64 = waiter.values().sum();
    assert!(
        (waited as f64 - sampled_periods).abs() <= 0.1 * sampled_periods,
        "condvar waiter has {waited} samples over {sampled_periods:.0} periods"
    );
    for function in ["sleeper", "mutex_contender", "mutex_holder", "cpu_split"] {
        let total: u64 = states_of(&samples, function).values().sum();
        assert!(
            total as f64 <= 1.1 * sampled_periods,
            "{function} has {total} samples over {sampled_periods:.0} periods"
        );
    }
    let contender = states_of(&samples, "mutex_contender");
    assert!(share(&contender, ThreadState::Blocked) >= 0.75, "mutex contender: {contender:?}");

    // Complete stacks: on-CPU samples reach the thread entry.
    let (mut complete, mut total) = (0u64, 0u64);
    for (stack, state, n) in &samples {
        if *state == ThreadState::Runnable {
            total += n;
            if stack.first().is_some_and(|root| ROOTS.contains(&root.as_str())) {
                complete += n;
            }
        }
    }
    assert!(total > 0);
    let ratio = complete as f64 / total as f64;
    assert!(ratio >= 0.95, "only {ratio:.3} of on-CPU samples reach the thread entry");
}

#[test]
fn rust_release_binary_without_frame_pointers_gives_complete_demangled_stacks() {
    if !require_root(PERF) {
        return;
    }
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("workload");
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_string());
    let status = Command::new(rustc)
        .args(["-C", "opt-level=3", "-C", "force-frame-pointers=no", "--crate-name", "workload", "-o"])
        .arg(&exe)
        .arg(fixture("workload.rs"))
        .status()
        .expect("run rustc");
    assert!(status.success(), "rustc failed");
    let reaper = ChildGuard::spawn(Command::new(&exe).arg("4").stdout(std::process::Stdio::null()));
    let pid = reaper.pid();
    // Its three threads (main, worker, lock waiter) run before attach: the lock waiter's
    // first stack is that of a thread blocked before the sampler came.
    wait_for_threads(pid, 3, Duration::from_secs(10));

    let mut sampler = Sampler::new(SamplerOptions::default()).expect("sampler (run as root)");
    sampler.attach(pid).expect("attach");
    let (profiles, _) = sample_until_exit(&mut sampler, pid, Duration::from_secs(30));
    let samples = samples_of(&profiles, pid);
    eprintln!("{}\n{:?}", folded(&samples), sampler.stats());

    let runnable: Vec<&(Vec<String>, ThreadState, u64)> =
        samples.iter().filter(|(_, st, _)| *st == ThreadState::Runnable).collect();
    let total: u64 = runnable.iter().map(|(_, _, n)| n).sum();
    assert!(total > 50, "too few on-CPU samples: {total}");
    // Names are demangled: no `_ZN...`/`_R...` symbols and no `::h0123...` hashes.
    for (stack, _, _) in &samples {
        for f in stack {
            assert!(!f.starts_with("_ZN") && !f.starts_with("_R"), "mangled frame {f}");
            assert!(f.rsplit("::h").next().is_none_or(|h| h.len() != 16 || !f.contains("::h")), "hash in {f}");
        }
    }
    // The main thread's hot loop sits under workload::main under the process entry.
    let main_hot = runnable.iter().find(|(s, _, _)| {
        let pos = |name: &str| s.iter().position(|f| f == name);
        matches!((pos("workload::main"), pos("workload::hot_loop")), (Some(m), Some(h)) if m < h)
            && ROOTS.contains(&s[0].as_str())
    });
    assert!(main_hot.is_some(), "no complete stack main -> workload::main -> workload::hot_loop");
    // The spawned thread's too, under the thread entry.
    let thread_hot = runnable
        .iter()
        .find(|(s, _, _)| s.iter().any(|f| f == "workload::thread_work") && s.iter().any(|f| f == "start_thread"));
    assert!(thread_hot.is_some(), "no complete stack start_thread -> ... -> workload::thread_work");
    let complete: u64 = runnable.iter().filter(|(s, _, _)| ROOTS.contains(&s[0].as_str())).map(|(_, _, n)| n).sum();
    assert!(complete as f64 >= 0.95 * total as f64, "{complete} of {total} on-CPU samples complete");
    // Off-CPU stacks are complete too, including the first one of a thread that was
    // blocked before attach (its frame pointer is guessed, std has frame pointers).
    let off: Vec<_> = samples.iter().filter(|(_, st, _)| *st != ThreadState::Runnable).collect();
    let off_total: u64 = off.iter().map(|(_, _, n)| n).sum();
    let off_complete: u64 =
        off.iter().filter(|(s, _, _)| s.first().is_some_and(|r| ROOTS.contains(&r.as_str()))).map(|(_, _, n)| n).sum();
    assert!(
        off_total > 0 && off_complete as f64 >= 0.95 * off_total as f64,
        "{off_complete} of {off_total} off-CPU samples complete"
    );
    // The thread waiting for the std Mutex is BLOCKED (lock_contended), not WAITING.
    let waiter = states_of(&samples, "workload::lock_waiter");
    assert!(share(&waiter, ThreadState::Blocked) >= 0.5, "lock waiter: {waiter:?}");
}

#[test]
fn attach_to_a_missing_pid_names_it() {
    if !require_root(PERF) {
        return;
    }
    let _serial = serial();
    let pid_max: u32 = std::fs::read_to_string("/proc/sys/kernel/pid_max").unwrap().trim().parse().unwrap();
    let missing = pid_max + 1;
    let mut sampler = Sampler::new(SamplerOptions::default()).expect("sampler (run as root)");
    match sampler.attach(missing) {
        Err(SamplerError::NoSuchProcess(msg)) => {
            assert_eq!(msg, format!("pid {missing} is not running"))
        }
        other => panic!("expected NoSuchProcess, got {other:?}"),
    }
    assert!(sampler.targets().is_empty());
}

#[test]
fn a_target_that_exits_is_reported_and_its_profile_returned() {
    if !require_root(PERF) {
        return;
    }
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let (mut reaper, pid, _out) = start_states(dir.path(), "1.5", "0");
    let mut sampler = Sampler::new(SamplerOptions::default()).expect("sampler (run as root)");
    sampler.attach(pid).expect("attach");
    // Reap the child as soon as it exits, so it does not linger as a zombie.
    let waiter = std::thread::spawn(move || {
        let _ = reaper.0.wait();
        reaper
    });
    let t0 = Instant::now();
    let mut exited = false;
    while !exited {
        assert!(t0.elapsed() < Duration::from_secs(20), "no Exited event");
        exited = sampler.poll(Duration::from_millis(50)).unwrap().contains(&SamplerEvent::Exited(pid));
    }
    drop(waiter.join());
    assert!(sampler.targets().is_empty(), "an exited target is not listed");
    let profiles = sampler.take_profiles("svc", hotframe::model::time::now_ms());
    let mine: Vec<&Profile> = profiles.iter().filter(|p| p.labels.get("pid") == Some(&pid.to_string())).collect();
    assert_eq!(mine.len(), 1);
    let p = mine[0];
    assert!(p.total_samples() > 20, "samples of the exited target are kept: {}", p.total_samples());
    assert_eq!(p.labels.get("process").map(String::as_str), Some("states"));
    assert!(p.labels.get("exe").is_some_and(|e| e.ends_with("/states")));
    assert_eq!(p.period_ns, 1_000_000_000 / 99);
    p.validate(&hotframe::model::Limits::default()).expect("valid profile");
    // Reported once, then forgotten.
    let again = sampler.take_profiles("svc", hotframe::model::time::now_ms());
    assert!(again.iter().all(|p| p.labels.get("pid") != Some(&pid.to_string())));
}

/// Samples `dd` (nearly all its CPU time is in the kernel, copying) for 1.5 s.
fn sample_dd(opts: SamplerOptions) -> (u32, Vec<(Vec<String>, ThreadState, u64)>) {
    let reaper = ChildGuard::spawn(
        Command::new("dd")
            .args(["if=/dev/zero", "of=/dev/null", "bs=1M", "count=100000000"])
            .stderr(std::process::Stdio::null()),
    );
    let pid = reaper.pid();
    // Attach to dd, not to the test binary before its exec.
    eventually("dd to be exec'd", Duration::from_secs(10), || {
        std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "dd")
    });
    let mut sampler = Sampler::new(opts).expect("sampler (run as root)");
    sampler.attach(pid).expect("attach");
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_millis(1500) {
        sampler.poll(Duration::from_millis(50)).unwrap();
    }
    let profiles = sampler.take_profiles("svc", hotframe::model::time::now_ms());
    (pid, samples_of(&profiles, pid))
}

#[test]
fn cpu_time_in_syscalls_is_sampled_on_the_user_stack_without_kernel_frames() {
    if !require_root(PERF) {
        return;
    }
    let _serial = serial();
    let (_, samples) = sample_dd(SamplerOptions::default());
    let on_cpu: u64 = samples.iter().filter(|(_, st, _)| *st == ThreadState::Runnable).map(|(_, _, n)| n).sum();
    assert!(on_cpu > 10, "dd's kernel time is CPU time: {}", folded(&samples));
    assert!(samples.iter().all(|(s, _, _)| s.iter().all(|f| !f.ends_with("_[k]"))), "{}", folded(&samples));
    // dd is stripped ("[unknown] dd" frames), libc is not: the samples sit on the read
    // and write wrappers, under __libc_start_main.
    let in_syscall: u64 = samples
        .iter()
        .filter(|(s, st, _)| {
            *st == ThreadState::Runnable
                && s.iter().any(|f| f.starts_with("__libc_start_main"))
                && s.last().is_some_and(|f| f.contains("read") || f.contains("write"))
        })
        .map(|(_, _, n)| n)
        .sum();
    assert!(in_syscall as f64 >= 0.8 * on_cpu as f64, "{}", folded(&samples));
}

#[test]
fn kernel_frames_come_in_front_of_the_user_stack() {
    if !require_root(PERF) {
        return;
    }
    let _serial = serial();
    let (_, samples) = sample_dd(SamplerOptions { kernel: true, ..SamplerOptions::default() });
    let with_kernel: Vec<_> = samples
        .iter()
        .filter(|(s, st, _)| *st == ThreadState::Runnable && s.iter().any(|f| f.ends_with("_[k]")))
        .collect();
    assert!(!with_kernel.is_empty(), "no kernel frames: {}", folded(&samples));
    // Root first: user frames (ending at the syscall wrapper), then kernel frames.
    let (stack, _, _) = with_kernel[0];
    let first_k = stack.iter().position(|f| f.ends_with("_[k]")).unwrap();
    assert!(first_k > 0, "user frames before kernel frames: {stack:?}");
    assert!(stack[first_k..].iter().all(|f| f.ends_with("_[k]")), "kernel frames are the leaf end: {stack:?}");
}

#[test]
fn frame_pointer_mode_samples_cheaply() {
    if !require_root(PERF) {
        return;
    }
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let (_reaper, pid, _out) = start_states(dir.path(), "1.5", "0");
    let opts = SamplerOptions { unwind: UnwindMode::FramePointer, ..SamplerOptions::default() };
    let mut sampler = Sampler::new(opts).expect("sampler (run as root)");
    sampler.attach(pid).expect("attach");
    let (profiles, _) = sample_until_exit(&mut sampler, pid, Duration::from_secs(20));
    let samples = samples_of(&profiles, pid);
    // Without frame pointers only the leaf is right: spin, the shared leaf.
    let leaf_spin: u64 = samples
        .iter()
        .filter(|(s, st, _)| *st == ThreadState::Runnable && s.last().is_some_and(|f| f == "spin"))
        .map(|(_, _, n)| n)
        .sum();
    assert!(leaf_spin > 5, "on-CPU samples end in spin: {}", folded(&samples));
    // Off-CPU stacks are still DWARF-unwound.
    let waiter = states_of(&samples, "condvar_waiter");
    assert!(
        share(&waiter, ThreadState::Waiting) >= 0.95,
        "condvar waiter: {waiter:?}\n{}\n{:?}",
        folded(&samples),
        sampler.stats()
    );
}

#[test]
fn a_library_loaded_after_attach_is_unwound_and_named() {
    if !require_root(PERF) {
        return;
    }
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let cc = |args: &[&str]| {
        let ok = Command::new("cc").args(args).status().map(|s| s.success()).unwrap_or(false);
        assert!(ok, "cc {args:?} failed");
    };
    let lib = dir.path().join("libplugin.so");
    let exe = dir.path().join("dlopen");
    let plugin_src = fixture("plugin.c");
    let main_src = fixture("dlopen.c");
    cc(&["-O2", "-fomit-frame-pointer", "-shared", "-fPIC", "-o", lib.to_str().unwrap(), plugin_src.to_str().unwrap()]);
    cc(&["-O2", "-fomit-frame-pointer", "-o", exe.to_str().unwrap(), main_src.to_str().unwrap(), "-ldl"]);
    let out = dir.path().join("run");
    let reaper = ChildGuard::spawn(Command::new(&exe).arg(&out).arg(&lib).arg("2").stdout(std::process::Stdio::null()));
    let pid = reaper.pid();
    wait_for_file(&out.with_extension("ready"), Duration::from_secs(10));
    let mut sampler = Sampler::new(SamplerOptions::default()).expect("sampler (run as root)");
    sampler.attach(pid).expect("attach");
    // Only now does the target map the library.
    std::fs::write(out.with_extension("go"), b"").unwrap();
    let (profiles, _) = sample_until_exit(&mut sampler, pid, Duration::from_secs(30));
    let samples = samples_of(&profiles, pid);
    let in_plugin: u64 = samples
        .iter()
        .filter(|(s, st, _)| *st == ThreadState::Runnable && s.last().is_some_and(|f| f == "plugin_hot"))
        .map(|(_, _, n)| n)
        .sum();
    let complete: u64 = samples
        .iter()
        .filter(|(s, _, _)| {
            s.last().is_some_and(|f| f == "plugin_hot") && s.iter().any(|f| f == "main") && s[0] == "_start"
        })
        .map(|(_, _, n)| n)
        .sum();
    assert!(in_plugin >= 5, "few samples in the dlopened library:\n{}", folded(&samples));
    assert!(complete as f64 >= 0.95 * in_plugin as f64, "{complete} of {in_plugin} complete:\n{}", folded(&samples));
}

/// Run by `without_privileges_the_error_says_what_is_needed` as an unprivileged user.
#[test]
#[ignore = "run as a child by without_privileges_the_error_says_what_is_needed"]
fn unprivileged_child() {
    if std::env::var_os("HOTFRAME_UNPRIVILEGED_CHILD").is_none() {
        return;
    }
    match Sampler::new(SamplerOptions::default()) {
        Err(SamplerError::Permission(msg)) => {
            assert!(msg.contains("CAP_PERFMON") && msg.contains("root"), "{msg}");
            println!("PERMISSION-OK: {msg}");
        }
        other => panic!("expected Permission, got {other:?}"),
    }
}

#[test]
fn without_privileges_the_error_says_what_is_needed() {
    if !require_root("setpriv to nobody") {
        return;
    }
    // A copy of this test binary the unprivileged user can run (the shared build
    // directory may replace the original meanwhile).
    let dir = tempfile::tempdir().unwrap();
    let me = dir.path().join("it");
    std::fs::copy("/proc/self/exe", &me).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&me, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", "--bounding-set=-all"])
        .arg(&me)
        .args(["--ignored", "--exact", "sampler::unprivileged_child", "--nocapture"])
        .env("HOTFRAME_UNPRIVILEGED_CHILD", "1")
        .output()
        .expect("run setpriv");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("PERMISSION-OK"),
        "child: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn cpp_names_are_demangled_and_inlined_functions_are_frames() {
    if !require_root(PERF) {
        return;
    }
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("shop");
    compile("c++", &["-O2", "-g", "-fomit-frame-pointer"], "shop.cpp", &exe);
    // This test is about names, not about attaching mid-exec.
    let samples = sample_from_libc_to_exit(Command::new(&exe).arg("2").stdout(std::process::Stdio::null()));
    let hot: Vec<_> = samples.iter().filter(|(s, _, _)| s.iter().any(|f| f == "shop::Cart::total(int)")).collect();
    assert!(!hot.is_empty(), "no demangled shop::Cart::total(int):\n{}", folded(&samples));
    // The inlined helper is a frame of its own, right under the function it is inlined into.
    let inlined = hot
        .iter()
        .any(|(s, _, _)| s.windows(2).any(|w| w[0] == "shop::Cart::total(int)" && w[1].contains("mix_price")));
    assert!(inlined, "no inlined mix_price frame under Cart::total:\n{}", folded(&samples));
    assert!(hot.iter().all(|(s, _, _)| s[0] == "_start" && s.iter().any(|f| f == "main")), "{}", folded(&samples));
}

/// Compiles fixture `source` with `compiler` and `flags` into `exe`.
fn compile(compiler: &str, flags: &[&str], source: &str, exe: &Path) {
    let ok = Command::new(compiler)
        .args(flags)
        .arg("-o")
        .arg(exe)
        .arg(fixture(source))
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "{compiler} {source} failed");
}

/// Starts `cmd`, waits until the dynamic loader has mapped libc (so that the walk to
/// `_start` does not depend on who wins the race with attach), samples it until it
/// exits, and returns its samples.
fn sample_from_libc_to_exit(cmd: &mut Command) -> Vec<(Vec<String>, ThreadState, u64)> {
    let reaper = ChildGuard::spawn(cmd);
    let pid = reaper.pid();
    eventually("libc mapped executable in the target", Duration::from_secs(10), || {
        std::fs::read_to_string(format!("/proc/{pid}/maps"))
            .unwrap_or_default()
            .lines()
            .any(|l| l.contains("libc.so") && l.contains(" r-xp "))
    });
    let mut sampler = Sampler::new(SamplerOptions::default()).expect("sampler (run as root)");
    sampler.attach(pid).expect("attach");
    let (profiles, _) = sample_until_exit(&mut sampler, pid, Duration::from_secs(30));
    samples_of(&profiles, pid)
}

/// CPU seconds of a process so far (user + system, from /proc/PID/stat, in clock ticks).
fn process_cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let after = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    ticks as f64 / hz
}

/// CPU seconds of a process's threads so far, from their schedstat (nanoseconds).
fn schedstat_seconds(pid: u32) -> f64 {
    let mut ns = 0u64;
    for tid in hotframe::sampler::procfs::thread_ids(pid).unwrap_or_default() {
        if let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/schedstat")) {
            ns += text.split_whitespace().next().and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
        }
    }
    ns as f64 / 1e9
}

#[test]
fn on_cpu_samples_add_up_to_the_cpu_time_of_an_oversubscribed_target() {
    if !require_root(PERF) {
        return;
    }
    // Eight busy threads on this machine's CPUs are preempted all the time, which is when
    // a cpu-clock event's sample count drifts from the CPU time used, low or high
    // (docs/thread-states.md); the wall-clock accounting counts by schedstat instead.
    // RUNNABLE samples x period must match the CPU time the kernel counted for the
    // process over the same window.
    let _serial = serial();
    let reaper = ChildGuard::spawn(
        Command::new(crate::common::BIN)
            .args(["demo-workload", "--mode", "cpu", "--threads", "8", "--duration", "30s"])
            .env("HOTFRAME_LOG", "warn"),
    );
    let pid = reaper.pid();
    wait_for_threads(pid, 9, Duration::from_secs(10));
    let mut sampler = Sampler::new(SamplerOptions::default()).expect("sampler (run as root)");
    sampler.attach(pid).expect("attach");
    // The window is from one take_profiles to the next: each accounts every thread up to
    // its start, then names the frames, which can take seconds (this is the debug build's
    // DWARF), so the kernel's figures are read right before each take.
    let cpu0 = process_cpu_seconds(pid);
    let sched0 = schedstat_seconds(pid);
    let _ = sampler.take_profiles("svc", hotframe::model::time::now_ms());
    let t1 = Instant::now();
    while t1.elapsed() < Duration::from_secs(4) {
        sampler.poll(Duration::from_millis(50)).expect("poll");
    }
    let cpu = process_cpu_seconds(pid) - cpu0;
    let sched = schedstat_seconds(pid) - sched0;
    let window = t1.elapsed().as_secs_f64();
    let profiles = sampler.take_profiles("svc", hotframe::model::time::now_ms());
    eprintln!("window {window:.2} s, schedstat {sched:.2} CPU s, stat {cpu:.2} CPU s");
    let samples = samples_of(&profiles, pid);
    let runnable: u64 = samples.iter().filter(|(_, st, _)| *st == ThreadState::Runnable).map(|(_, _, n)| n).sum();
    let sampled_cpu = runnable as f64 / 99.0;
    let stats = sampler.stats();
    assert!(cpu > 2.0, "the workload used {cpu:.2} CPU seconds in 4 s");
    let ratio = sampled_cpu / cpu;
    eprintln!(
        "sampled {sampled_cpu:.2} CPU s of {cpu:.2}; perf samples {}, lost {}, other processes' {}",
        stats.samples, stats.lost, stats.other_samples
    );
    assert!(
        (0.9..=1.1).contains(&ratio),
        "RUNNABLE samples give {sampled_cpu:.2} CPU s, the kernel counted {cpu:.2} s (ratio {ratio:.3}; \
         perf samples {}, lost {}, other processes' {})",
        stats.samples,
        stats.lost,
        stats.other_samples
    );
}

/// Work done inside a signal handler (postgres's postmaster starts its children from
/// one, so their every stack holds the signal frame): on-CPU and off-CPU stacks go
/// through the kernel's signal frame to `main` and `_start`, as `perf` shows them.
#[test]
fn stacks_through_a_signal_handler_reach_the_root() {
    if !require_root(PERF) {
        return;
    }
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("sighandler");
    compile("cc", &["-O2", "-fomit-frame-pointer"], "sighandler.c", &exe);
    let samples = sample_from_libc_to_exit(Command::new(&exe).arg("3"));
    for (function, state) in
        [("burn_in_handler", ThreadState::Runnable), ("sleep_in_handler", ThreadState::TimedWaiting)]
    {
        let of: Vec<_> = samples.iter().filter(|(s, st, _)| *st == state && s.iter().any(|f| f == function)).collect();
        let total: u64 = of.iter().map(|(_, _, n)| n).sum();
        let rooted: u64 = of
            .iter()
            // `main` is below the handler only when the walk crossed the signal frame.
            .filter(|(s, _, _)| s[0] == "_start" && s.iter().any(|f| f == "main"))
            .map(|(_, _, n)| n)
            .sum();
        assert!(total >= 20, "too few {state:?} samples in {function}:\n{}", folded(&samples));
        assert!(
            rooted as f64 >= 0.99 * total as f64,
            "{function}: {rooted} of {total} {state:?} samples reach _start through the signal frame:\n{}",
            folded(&samples)
        );
    }
}
