//! `hotframe agent` end to end: the real binary's `serve`, `agent` and `demo-workload`
//! as separate processes, talking HTTP on loopback, sampling with perf_event_open. They
//! need root: as a normal user they say so and skip (`common::require_root`); under CI
//! they fail instead.

use crate::common::{
    build_workload, eventually, frame_names, free_addr, get, get_json, parse_deep_json, poll, require_root, tempdir,
    ChildGuard, Server, BIN,
};
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const PERF: &str = "perf_event_open";

/// The bundled workload (`parse_json` is its hot function) for `seconds`.
fn workload(duration: &str) -> ChildGuard {
    ChildGuard::spawn(
        Command::new(BIN)
            .args(["demo-workload", "--mode", "service", "--threads", "1", "--duration", duration])
            .stdout(Stdio::null()),
    )
}

/// Waits until the service workload runs all its threads: main, one handler, flusher,
/// job waiter, cache owner and reader.
fn wait_for_workload_threads(work: &ChildGuard) {
    let task = format!("/proc/{}/task", work.pid());
    eventually("the workload's 6 threads", Duration::from_secs(20), || {
        std::fs::read_dir(&task).map(|d| d.count()).unwrap_or(0) >= 6
    });
}

/// `hotframe agent` of service `agent-test` uploading every second (unless `extra` says), stderr piped.
pub(crate) fn agent(server: &str, extra: &[&str], spool: &Path) -> ChildGuard {
    ChildGuard::spawn(
        Command::new(BIN)
            .args(["agent", "--server", server, "--service", "agent-test"])
            .args(if extra.contains(&"--upload-interval") { &[][..] } else { &["--upload-interval", "1s"][..] })
            .arg("--spool-dir")
            .arg(spool)
            .args(extra)
            .env("HOTFRAME_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    )
}

/// The value of `key=N` in the agent's last health line.
fn last_health(stderr: &str, key: &str) -> u64 {
    let line =
        stderr.lines().rev().find(|l| l.contains("health:")).unwrap_or_else(|| panic!("no health line in:\n{stderr}"));
    let wanted = format!(" {key}=");
    let at = line.find(&wanted).unwrap_or_else(|| panic!("no {key} in {line}")) + wanted.len();
    line[at..].split(|c: char| !c.is_ascii_digit()).next().unwrap().parse().unwrap()
}

/// One value from the agent's Prometheus page, if it answers.
pub(crate) fn metric(addr: &str, name: &str) -> Option<f64> {
    let (status, text) = get(&format!("http://{addr}/metrics"));
    (status == 200).then_some(())?;
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[test]
fn agent_by_pid_finds_the_hot_function_then_exits_cleanly_when_the_target_does() {
    if !require_root(PERF) {
        return;
    }
    let data = tempdir();
    let server = Server::start(&data.path().join("store"), &[]);
    let url = server.url.clone();
    let work = workload("8s");
    let pid = work.pid().to_string();
    // Let the workload start its threads (the agent follows later ones too, but this
    // keeps the test about the agent, not about thread start-up on a loaded machine).
    wait_for_workload_threads(&work);
    let mut agent = agent(&url, &["--pid", &pid, "--label", "region=test-1"], &data.path().join("spool"));
    let (status, stderr) = agent.wait_output(Duration::from_secs(60));
    assert!(status.success(), "agent failed: {status}\n{stderr}");
    assert!(stderr.contains("every target has exited"), "{stderr}");
    assert!(stderr.contains("all profiles delivered"), "{stderr}");
    assert_eq!(last_health(&stderr, "dropped"), 0, "{stderr}");

    let flame = get_json(&format!("{url}/api/v1/flamegraph?service=agent-test&from=now-10m&states=cpu"));
    let names = frame_names(&flame["root"]);
    assert!(
        names.iter().any(|n| n.ends_with("parse_json")),
        "no parse_json among {} frames; totals {}\nagent:\n{stderr}",
        names.len(),
        flame["totals"]
    );
    assert!(flame["totals"]["samples"].as_u64().unwrap() > 50, "{}", flame["totals"]);

    let services = get_json(&format!("{url}/api/v1/services"));
    let service = services["services"].as_array().unwrap().iter().find(|s| s["name"] == "agent-test").unwrap().clone();
    let labels = &service["labels"];
    assert_eq!(labels["pid"][0], pid.as_str(), "{labels}");
    assert_eq!(labels["region"][0], "test-1", "{labels}");
    assert!(labels["host"][0].as_str().is_some_and(|h| !h.is_empty()), "{labels}");
    assert!(labels["process"][0].as_str().is_some(), "{labels}");
    // Sleeping, waiting and lock-blocked threads are in the profile too.
    let all = get_json(&format!("{url}/api/v1/flamegraph?service=agent-test&from=now-10m&states=all"));
    let by_state = &all["totals"]["byState"];
    for state in ["TIMED_WAITING", "WAITING", "BLOCKED"] {
        assert!(by_state[state].as_u64().unwrap_or(0) > 0, "no {state} samples: {by_state}");
    }
}

#[test]
fn a_pid_that_does_not_exist_is_a_one_line_error() {
    // Without privileges the agent stops earlier, saying it needs them.
    if !require_root(PERF) {
        return;
    }
    let spool = tempdir();
    // Pids above pid_max cannot exist.
    let mut agent = agent("http://127.0.0.1:9", &["--pid", "4194399"], spool.path());
    let (status, stderr) = agent.wait_output(Duration::from_secs(20));
    assert!(!status.success());
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors, vec!["error: pid 4194399 is not running"], "stderr:\n{stderr}");
    assert!(!stderr.contains("NoSuchProcess") && !stderr.contains("{"), "debug dump in:\n{stderr}");
}

#[test]
fn a_name_that_matches_nothing_is_said_at_start() {
    // Issue 18: `--name` matching nothing used to leave only `targets=0` in the health line.
    if !require_root(PERF) {
        return;
    }
    let spool = tempdir();
    let mut agent =
        agent("http://127.0.0.1:9", &["--name", "^no-such-process-4f1c$", "--duration", "2s"], spool.path());
    let (status, stderr) = agent.wait_output(Duration::from_secs(30));
    assert!(status.success(), "{status}\n{stderr}");
    let said: Vec<&str> = stderr.lines().filter(|l| l.contains("no process matches --name")).collect();
    assert_eq!(said.len(), 1, "said once at start (the repeat comes after 30 s):\n{stderr}");
    assert!(said[0].contains("^no-such-process-4f1c$") && said[0].contains("waiting for one"), "{}", said[0]);
}

/// Polls the agent's metrics until `name` reaches `at_least` (bounded by `limit`);
/// returns the last value read.
fn wait_metric(addr: &str, name: &str, at_least: f64, limit: Duration) -> f64 {
    let read = || metric(addr, name).unwrap_or(0.0);
    poll(limit, || Some(read()).filter(|v| *v >= at_least)).unwrap_or_else(|_| read())
}

#[test]
fn profiles_taken_while_the_server_is_down_arrive_once_it_is_up() {
    if !require_root(PERF) {
        return;
    }
    let data = tempdir();
    let addr = free_addr().to_string();
    let url = format!("http://{addr}");
    let mut work = workload("120s");
    let pid = work.pid().to_string();
    let metrics = free_addr().to_string();
    let mut agent = agent(
        &url,
        &["--pid", &pid, "--flush-timeout", "30s", "--metrics-listen", &metrics],
        &data.path().join("spool"),
    );
    // Nothing listens until the agent has failed to upload twice (its own metrics say).
    let failed = wait_metric(&metrics, "hotframe_agent_upload_failed_total", 2.0, Duration::from_secs(40));
    assert!(failed >= 2.0, "the agent did not try to upload within 40 s");
    let spooled = wait_metric(&metrics, "hotframe_agent_upload_spooled", 1.0, Duration::from_secs(20));
    assert!(spooled >= 1.0, "profiles taken while the server is down go to the spool");
    let server_up_ms = hotframe::model::time::now_ms();
    let _server = Server::start(&data.path().join("store"), &["--listen", &addr]);
    // Two more profiles after the server came up, then the target ends.
    let sent = wait_metric(&metrics, "hotframe_agent_upload_sent_total", spooled + 2.0, Duration::from_secs(60));
    assert!(sent >= spooled + 2.0, "only {sent} profiles sent after the server came up");
    work.kill();
    let (status, stderr) = agent.wait_output(Duration::from_secs(90));
    assert!(status.success(), "agent failed: {status}\n{stderr}");
    assert!(stderr.contains("all profiles delivered"), "{stderr}");
    let sent = last_health(&stderr, "sent");
    assert_eq!(last_health(&stderr, "dropped"), 0, "{stderr}");
    let flame = get_json(&format!("{url}/api/v1/flamegraph?service=agent-test&from=now-10m&states=all"));
    assert_eq!(flame["totals"]["profiles"].as_u64(), Some(sent), "every profile the agent sent is stored once");
    // Samples from before the server came up are there.
    let timeline = get_json(&format!("{url}/api/v1/timeline?service=agent-test&from=now-10m&states=all&step=1s"));
    let first_ms = timeline["points"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["cores"].as_object().is_some_and(|c| c.values().any(|v| v.as_f64().unwrap_or(0.0) > 0.0)))
        .map(|p| p["t"].as_i64().unwrap())
        .min()
        .expect("samples stored");
    assert!(first_ms < server_up_ms - 1000, "oldest samples at {first_ms}, server up at {server_up_ms}");
}

#[test]
fn agent_by_name_picks_up_a_process_started_later() {
    if !require_root(PERF) {
        return;
    }
    let data = tempdir();
    let server = Server::start(&data.path().join("store"), &[]);
    let url = server.url.clone();
    let metrics = free_addr().to_string();
    let mut agent = agent(
        &url,
        &["--name", r"demo-workload .*--duration 3\.217s", "--metrics-listen", &metrics],
        &data.path().join("spool"),
    );
    // Past the agent's first scan of /proc: its first health snapshot (resident memory
    // is 0 until then) is taken after the scan that starts the sampling loop.
    eventually("the agent's first health snapshot", Duration::from_secs(20), || {
        metric(&metrics, "hotframe_agent_resident_memory_bytes").is_some_and(|rss| rss > 0.0)
    });
    assert_eq!(metric(&metrics, "hotframe_agent_targets"), Some(0.0), "nothing matches yet");
    let mut work = workload("3.217s");
    let pid = work.pid().to_string();
    let attached = wait_metric(&metrics, "hotframe_agent_targets", 1.0, Duration::from_secs(30));
    assert_eq!(attached, 1.0, "the process started later was not picked up");
    work.wait_output(Duration::from_secs(60));
    wait_metric(&metrics, "hotframe_agent_upload_sent_total", 1.0, Duration::from_secs(30));
    agent.signal(libc::SIGTERM);
    let (status, stderr) = agent.wait_output(Duration::from_secs(60));
    assert!(status.success(), "{stderr}");
    assert!(stderr.contains("attached to a process matching --name"), "{stderr}");
    let services = get_json(&format!("{url}/api/v1/services"));
    let service = services["services"].as_array().unwrap().iter().find(|s| s["name"] == "agent-test").cloned();
    let service = service.unwrap_or_else(|| panic!("no profiles stored:\n{stderr}"));
    assert_eq!(
        service["labels"]["pid"].as_array().unwrap(),
        &vec![serde_json::json!(pid)],
        "only the workload, not the agent"
    );
}

#[test]
fn sigterm_makes_the_agent_flush_and_exit_zero() {
    if !require_root(PERF) {
        return;
    }
    let data = tempdir();
    let server = Server::start(&data.path().join("store"), &[]);
    let url = server.url.clone();
    let work = workload("60s");
    let pid = work.pid().to_string();
    let metrics = free_addr().to_string();
    // An upload interval longer than the run: only the final flush can deliver.
    let mut agent = agent(
        &url,
        &["--pid", &pid, "--upload-interval", "1h", "--metrics-listen", &metrics],
        &data.path().join("spool"),
    );
    // Stop once the agent holds well over the 100 samples asked for below.
    eventually("300 samples taken by the agent", Duration::from_secs(60), || {
        let on = metric(&metrics, "hotframe_agent_samples_total").unwrap_or(0.0);
        let off = metric(&metrics, "hotframe_agent_offcpu_samples_total").unwrap_or(0.0);
        on + off >= 300.0
    });
    agent.signal(libc::SIGTERM);
    let (status, stderr) = agent.wait_output(Duration::from_secs(30));
    assert!(status.success(), "{status}\n{stderr}");
    assert!(stderr.contains("stop requested"), "{stderr}");
    assert_eq!(last_health(&stderr, "sent"), 1, "{stderr}");
    let flame = get_json(&format!("{url}/api/v1/flamegraph?service=agent-test&from=now-10m&states=all"));
    assert!(flame["totals"]["samples"].as_u64().unwrap() > 100, "{}", flame["totals"]);
}

#[test]
fn demo_serves_the_workload_profile_until_ctrl_c() {
    if !require_root(PERF) {
        return;
    }
    let mut demo = ChildGuard::spawn(
        Command::new(BIN)
            .args(["demo", "--listen", "127.0.0.1:0", "--duration", "60s"])
            .env("HOTFRAME_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    let mut stdout = BufReader::new(demo.0.stdout.take().unwrap());
    let mut url = None;
    for _ in 0..40 {
        let mut line = String::new();
        if stdout.read_line(&mut line).unwrap() == 0 {
            break;
        }
        if let Some(rest) = line.trim().strip_prefix("Open ") {
            url = rest.split_whitespace().next().map(str::to_string);
            break;
        }
    }
    let page = url.expect("demo prints the URL to open");
    let base = page.split("/service/").next().unwrap().to_string();
    assert!(page.ends_with("/service/demo"), "{page}");
    // 404 until the first profile of the service is stored.
    let flame = format!("{base}/api/v1/flamegraph?service=demo&from=now-10m&states=cpu");
    eventually("parse_json in the demo's flame graph", Duration::from_secs(30), || {
        let (status, body) = get(&flame);
        status == 200 && frame_names(&parse_deep_json(&body)["root"]).iter().any(|n| n.ends_with("parse_json"))
    });
    assert_eq!(get(&page).0, 200, "the printed URL opens");
    demo.signal(libc::SIGINT);
    let (status, stderr) = demo.wait_output(Duration::from_secs(30));
    assert!(status.success(), "{status}\n{stderr}");
}

#[test]
fn without_privileges_the_agent_says_what_it_needs() {
    if !require_root("setuid to nobody") {
        return;
    }
    use std::os::unix::process::CommandExt;
    let mut command = Command::new(BIN);
    command
        .args([
            "agent",
            "--server",
            "http://127.0.0.1:9",
            "--service",
            "agent-test",
            "--pid",
            "1",
            "--spool-dir",
            "/nonexistent",
        ])
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: setgroups/setgid/setuid in the forked child before exec; dropping from
    // root to `nobody` also drops every capability.
    unsafe {
        command.pre_exec(|| {
            if libc::setgroups(0, std::ptr::null()) != 0 || libc::setgid(65534) != 0 || libc::setuid(65534) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut agent = ChildGuard::spawn(&mut command);
    let (status, stderr) = agent.wait_output(Duration::from_secs(20));
    assert!(!status.success());
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains("root or CAP_PERFMON"), "{stderr}");
}

#[test]
fn agent_starts_a_command_profiles_it_and_exits_when_it_does() {
    if !require_root(PERF) {
        return;
    }
    let data = tempdir();
    let server = Server::start(&data.path().join("store"), &[]);
    let url = server.url.clone();
    let mut agent = agent(
        &url,
        &["--", BIN, "demo-workload", "--mode", "cpu", "--threads", "1", "--duration", "3s"],
        &data.path().join("spool"),
    );
    let (status, stderr) = agent.wait_output(Duration::from_secs(60));
    assert!(status.success(), "{status}\n{stderr}");
    assert!(stderr.contains("command exited"), "{stderr}");
    assert!(stderr.contains("all profiles delivered"), "{stderr}");
    let flame = get_json(&format!("{url}/api/v1/flamegraph?service=agent-test&from=now-10m&states=cpu"));
    let names = frame_names(&flame["root"]);
    assert!(names.iter().any(|n| n.ends_with("parse_json")), "totals {}\n{stderr}", flame["totals"]);
    // The agent attached while the dynamic loader was still mapping libc: stacks must
    // still reach the thread entry (`_start`, `clone3`), not stop at an unknown address.
    let roots = flame["root"]["children"].as_array().cloned().unwrap_or_default();
    let total: f64 = roots.iter().map(|c| c["total"].as_f64().unwrap_or(0.0)).sum();
    let unknown: f64 = roots
        .iter()
        .filter(|c| c["name"].as_str().unwrap_or("").starts_with("[unknown]"))
        .map(|c| c["total"].as_f64().unwrap_or(0.0))
        .sum();
    assert!(total > 0.0 && unknown <= 0.2 * total, "{unknown} of {total} samples stop at an unknown root: {roots:?}");
}

#[test]
fn a_started_command_gets_complete_stacks_through_its_libraries() {
    // `agent -- CMD` attaches while the dynamic loader may still be mapping libc. A C++
    // program without frame pointers whose hot code is called from libc's start code:
    // its stacks must reach `_start` once libc is known, not stop at `[unknown]`.
    if !require_root(PERF) {
        return;
    }
    let data = tempdir();
    let exe = build_workload("c++", "shop.cpp", &["-O2", "-g", "-fomit-frame-pointer"], data.path(), "shop");
    let server = Server::start(&data.path().join("store"), &[]);
    let url = server.url.clone();
    let mut agent = agent(&url, &["--", exe.to_str().unwrap(), "2"], &data.path().join("spool"));
    let (status, stderr) = agent.wait_output(Duration::from_secs(60));
    assert!(status.success(), "{status}\n{stderr}");
    let flame = get_json(&format!("{url}/api/v1/flamegraph?service=agent-test&from=now-10m&states=cpu"));
    let roots = flame["root"]["children"].as_array().cloned().unwrap_or_default();
    let total: f64 = roots.iter().map(|c| c["total"].as_f64().unwrap_or(0.0)).sum();
    let entry: f64 =
        roots.iter().filter(|c| c["name"].as_str() == Some("_start")).map(|c| c["total"].as_f64().unwrap_or(0.0)).sum();
    assert!(total >= 50.0, "too few samples ({total}): {roots:?}\n{stderr}");
    assert!(entry >= 0.8 * total, "only {entry} of {total} samples reach _start: {roots:?}");
}

/// The kernel's accounting of the fork workload, as it wrote it (`key=value` lines).
fn read_truth(path: &Path) -> std::collections::HashMap<String, f64> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .filter_map(|l| l.split_once('='))
        .filter_map(|(k, v)| Some((k.to_string(), v.trim().parse().ok()?)))
        .collect()
}

/// Runs tests/fixtures/workloads/forker.c (long-lived workers, a short-lived child every
/// 30 ms, a `sh -c` child every 400 ms) under the agent chosen by `target_args` (`{pid}`
/// replaced by the workload's pid), from the agent's attach to the workload's end.
/// Returns the server's CPU flame graph, its service labels, the workload's own
/// accounting and the agent's stderr. `name` is the program's name (its comm): each test
/// its own, since tests run side by side and `--name` sees the whole host.
fn profile_forker(
    name: &str,
    target_args: &[&str],
) -> (serde_json::Value, serde_json::Value, HashMap<String, f64>, String) {
    let data = crate::common::tempdir();
    let exe = build_workload("cc", "forker.c", &["-O2", "-fomit-frame-pointer"], data.path(), name);
    let server = Server::start(&data.path().join("store"), &[]);
    let url = server.url.clone();
    let truth = data.path().join("truth");
    let work = ChildGuard::spawn(Command::new(&exe).arg(&truth).args([FORKER_SECONDS, "2"]));
    let ready = truth.with_extension("ready");
    eventually("the workload to start", Duration::from_secs(10), || ready.exists());
    let pid = work.pid().to_string();
    let args: Vec<String> = target_args.iter().map(|a| a.replace("{pid}", &pid)).collect();
    let metrics = free_addr().to_string();
    let mut extra: Vec<&str> = args.iter().map(String::as_str).collect();
    extra.extend(["--metrics-listen", &metrics]);
    let mut agent = agent(&url, &extra, &data.path().join("spool"));
    let attached = wait_metric(&metrics, "hotframe_agent_targets", 1.0, Duration::from_secs(30));
    assert!(attached >= 1.0, "the agent did not find the workload");
    std::fs::write(truth.with_extension("go"), b"").unwrap();
    let mut work = work;
    let (status, _) = work.wait_output(Duration::from_secs(60));
    assert!(status.success(), "workload: {status}");
    // SIGTERM (or, with --pid, the targets' exit) makes the agent upload its current
    // window and flush before it exits 0: every sample of the run is on the server then.
    agent.signal(libc::SIGTERM);
    let (status, stderr) = agent.wait_output(Duration::from_secs(60));
    assert!(status.success(), "{status}\n{stderr}");
    let flame = get_json(&format!("{url}/api/v1/flamegraph?service=agent-test&from=now-10m&states=cpu"));
    let services = get_json(&format!("{url}/api/v1/services"));
    let labels = services["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "agent-test")
        .map(|s| s["labels"].clone())
        .unwrap_or_default();
    (flame, labels, read_truth(&truth), stderr)
}

/// CPU seconds in a CPU flame graph: samples over the 99 Hz rate.
fn flame_cpu_seconds(flame: &serde_json::Value) -> f64 {
    flame["totals"]["samples"].as_f64().unwrap_or(0.0) / 99.0
}

/// How long the fork workload works: about 0.65 cores for 10 s is ~640 samples at 99 Hz,
/// enough that the ±10% bound is not crossed by sampling noise alone (4 s gave ~200
/// samples, a 7% standard deviation, and failed about one CI run in five).
const FORKER_SECONDS: &str = "10";

/// The flame graph's CPU seconds are within ±10% of `kernel` (what the workload's
/// getrusage counted for the processes the test expects in the service).
pub(crate) fn assert_cpu_matches_kernel(
    flame: &serde_json::Value,
    kernel: f64,
    truth: &HashMap<String, f64>,
    stderr: &str,
) {
    let seen = flame_cpu_seconds(flame);
    eprintln!("hotframe {seen:.3} CPU s, kernel {kernel:.3}, {truth:?}");
    assert!(
        (seen / kernel - 1.0).abs() <= 0.10,
        "hotframe counted {seen:.3} CPU s, the kernel {kernel:.3}: {truth:?}\n{}\n{stderr}",
        flame["totals"]
    );
}

#[test]
fn by_pid_every_descendant_counts_and_cpu_seconds_match_the_kernel() {
    let (flame, labels, truth, stderr) = profile_forker("forker-pid", &["--pid", "{pid}"]);
    assert_cpu_matches_kernel(&flame, truth["cpu_s"], &truth, &stderr);
    // The fork-per-connection children and the sh -c children are under the service.
    let names = frame_names(&flame["root"]);
    assert!(names.iter().any(|n| n == "child_burn"), "no short-lived child's frames: {names:?}");
    assert!(names.iter().any(|n| n == "worker_burn"), "no worker's frames: {names:?}");
    let processes: Vec<&str> = labels["process"].as_array().into_iter().flatten().filter_map(|v| v.as_str()).collect();
    assert!(processes.contains(&"sh"), "no sh -c child among {processes:?}");
}

// The `sh -c` children exec away from the name: from their exec record on, their
// samples are not the service's (they were, while the exited target was still kept for
// its late samples: 2.06 CPU s against the kernel's 1.87 without sh). Passes with two
// busy loops beside it (the CPUs shared, as in CI's parallel tests).
#[test]
fn by_name_short_lived_workers_count_and_cpu_seconds_match_the_kernel() {
    // `sh -c` children exec into another program: not matched by the name, so not counted.
    let (flame, _, truth, stderr) = profile_forker("forker-name", &["--name", "^forker-name$"]);
    assert_cpu_matches_kernel(&flame, truth["cpu_s"] - truth["sh_cpu_s"], &truth, &stderr);
    let names = frame_names(&flame["root"]);
    assert!(names.iter().any(|n| n == "child_burn"), "no short-lived child's frames: {names:?}");
}

/// The fork workload on two hosts (two agents labelled `host=hf-a` and `host=hf-b`
/// into one server, the first attached by `--pid`, the second by `--name`): the
/// service's CPU seconds are what the kernel accounted to both workloads and their
/// children (±10%; with `--name`, without the `sh -c` children, which exec into a
/// program the name does not match); its cores are that CPU
/// over the wall time observed per host, bounded by the test's own clock (at least
/// from each agent's attach to its workload's end, at most from the agents' start to
/// their exit), ±10%; one timeline point over the range gives the same cores; and W
/// counts each host's wall time once, whatever the number of processes.
#[test]
fn fork_workload_on_two_hosts_by_pid_and_by_name_costs_its_kernel_cpu_over_the_wall_time() {
    if !require_root(PERF) {
        return;
    }
    let data = tempdir();
    let server = Server::start(&data.path().join("store"), &[]);
    let url = server.url.clone();
    let from_s = hotframe::model::time::now_ms() / 1000 - 60;
    let hosts = ["hf-a", "hf-b"];
    let mut works = Vec::new();
    for host in hosts {
        let name = format!("forker-{host}");
        let exe = build_workload("cc", "forker.c", &["-O2", "-fomit-frame-pointer"], data.path(), &name);
        let truth = data.path().join(format!("truth-{host}"));
        let work = ChildGuard::spawn(Command::new(&exe).arg(&truth).args([FORKER_SECONDS, "2"]));
        let ready = truth.with_extension("ready");
        eventually("the workload to start", Duration::from_secs(10), || ready.exists());
        works.push((work, truth));
    }
    let started = std::time::Instant::now();
    let mut agents = Vec::new();
    for (host, (work, _)) in hosts.iter().zip(&works) {
        let metrics = free_addr().to_string();
        let label = format!("host={host}");
        let pid = work.pid().to_string();
        let pattern = format!("^forker-{host}$");
        let target = if *host == "hf-a" { ["--pid", &pid] } else { ["--name", &pattern] };
        let extra = [target[0], target[1], "--label", &label, "--metrics-listen", &metrics];
        agents.push(agent(&url, &extra, &data.path().join(format!("spool-{host}"))));
        let attached = wait_metric(&metrics, "hotframe_agent_targets", 1.0, Duration::from_secs(30));
        assert!(attached >= 1.0, "the agent of {host} did not find its workload");
    }
    let attached = started.elapsed();
    for (_, truth) in &works {
        std::fs::write(truth.with_extension("go"), b"").unwrap();
    }
    let mut kernel_cpu = 0.0;
    for (host, (mut work, truth)) in hosts.iter().zip(works) {
        let (status, _) = work.wait_output(Duration::from_secs(60));
        assert!(status.success(), "workload: {status}");
        let truth = read_truth(&truth);
        kernel_cpu += if *host == "hf-a" { truth["cpu_s"] } else { truth["cpu_s"] - truth["sh_cpu_s"] };
    }
    let worked = started.elapsed() - attached;
    // With --pid the agent uploads, flushes and exits once its workload has exited;
    // with --name it runs until stopped.
    for (host, mut agent) in hosts.iter().zip(agents) {
        if *host != "hf-a" {
            agent.signal(libc::SIGTERM);
        }
        let (status, stderr) = agent.wait_output(Duration::from_secs(60));
        assert!(status.success(), "{status}\n{stderr}");
    }
    let observed_at_most = started.elapsed();

    let range = format!("service=agent-test&states=cpu&from={from_s}&until={}", from_s + 600);
    let flame = get_json(&format!("{url}/api/v1/flamegraph?{range}"));
    assert_cpu_matches_kernel(&flame, kernel_cpu, &HashMap::new(), "");
    let cores = flame["totals"]["cores"].as_f64().unwrap();
    let (lo, hi) = (kernel_cpu / observed_at_most.as_secs_f64(), kernel_cpu / worked.as_secs_f64());
    eprintln!("hotframe {cores:.3} cores; kernel CPU over the wall time observed: {lo:.3} to {hi:.3} cores");
    assert!(cores >= 0.9 * lo && cores <= 1.1 * hi, "hotframe {cores} cores, kernel {lo:.3} to {hi:.3}");
    let cost = &flame["cost"];
    assert_eq!(cost["profiledHosts"].as_u64(), Some(2), "{cost}");
    let window = cost["windowSeconds"].as_f64().unwrap();
    assert!(
        window >= 0.9 * worked.as_secs_f64() && window <= 1.1 * observed_at_most.as_secs_f64(),
        "W = {window} s, the test observed {worked:?} to {observed_at_most:?} per host"
    );
    let one = get_json(&format!("{url}/api/v1/timeline?{range}&step=600s"));
    let point = one["points"][0]["cores"]["RUNNABLE"].as_f64().unwrap();
    assert!((point - cores).abs() <= 1e-9 * cores, "timeline {point} vs flame graph {cores}");
}
