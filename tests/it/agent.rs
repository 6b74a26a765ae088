//! `hotframe agent` end to end: the real binary's `serve`, `agent` and `demo-workload`
//! as separate processes, talking HTTP on loopback, sampling with perf_event_open (the
//! tests run as root, as in CI).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_hotframe");

/// A child process killed when the test ends, however it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Running {
    fn pid(&self) -> u32 {
        self.0.id()
    }

    /// Waits up to `limit` for the process to exit; returns its status and stderr.
    fn wait_output(&mut self, limit: Duration) -> (ExitStatus, String) {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                let mut err = String::new();
                if let Some(mut stderr) = self.0.stderr.take() {
                    stderr.read_to_string(&mut err).unwrap();
                }
                return (status, err);
            }
            assert!(Instant::now() < deadline, "process {} did not exit within {limit:?}", self.0.id());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// `hotframe serve` on `listen` with its store in `data`; returns it and its base URL.
fn serve(listen: &str, data: &Path) -> (Running, String) {
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", listen, "--data"])
        .arg(data)
        .env("HOTFRAME_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let url = line.trim().strip_prefix("listening on ").unwrap_or_else(|| panic!("server said {line:?}")).to_string();
    (Running(child), url)
}

/// The bundled workload (`parse_json` is its hot function) for `seconds`.
fn workload(duration: &str) -> Running {
    Running(
        Command::new(BIN)
            .args(["demo-workload", "--mode", "service", "--threads", "1", "--duration", duration])
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

fn agent(server: &str, extra: &[&str], spool: &Path) -> Running {
    Running(
        Command::new(BIN)
            .args(["agent", "--server", server, "--service", "agent-test"])
            .args(if extra.contains(&"--upload-interval") { &[][..] } else { &["--upload-interval", "1s"][..] })
            .arg("--spool-dir")
            .arg(spool)
            .args(extra)
            .env("HOTFRAME_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    )
}

fn get_json(url: &str) -> serde_json::Value {
    let body = ureq::get(url).call().unwrap().body_mut().read_to_string().unwrap();
    serde_json::from_str(&body).unwrap()
}

/// Every frame name in a flame graph tree.
fn frame_names(node: &serde_json::Value, out: &mut Vec<String>) {
    if let Some(name) = node["name"].as_str() {
        out.push(name.to_string());
    }
    for child in node["children"].as_array().into_iter().flatten() {
        frame_names(child, out);
    }
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
fn metric(addr: &str, name: &str) -> Option<f64> {
    let mut response = ureq::get(&format!("http://{addr}/metrics")).call().ok()?;
    let text = response.body_mut().read_to_string().ok()?;
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

fn free_port_addr() -> String {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string()
}

#[test]
fn agent_by_pid_finds_the_hot_function_then_exits_cleanly_when_the_target_does() {
    let data = crate::common::tempdir();
    let (_server, url) = serve("127.0.0.1:0", &data.path().join("store"));
    let work = workload("8s");
    let pid = work.pid().to_string();
    // Let the workload start its threads (the agent follows later ones too, but this
    // keeps the test about the agent, not about thread start-up on a loaded machine).
    std::thread::sleep(Duration::from_millis(500));
    let mut agent = agent(&url, &["--pid", &pid, "--label", "region=test-1"], &data.path().join("spool"));
    let (status, stderr) = agent.wait_output(Duration::from_secs(60));
    assert!(status.success(), "agent failed: {status}\n{stderr}");
    assert!(stderr.contains("every target has exited"), "{stderr}");
    assert!(stderr.contains("all profiles delivered"), "{stderr}");
    assert_eq!(last_health(&stderr, "dropped"), 0, "{stderr}");

    let flame = get_json(&format!("{url}/api/v1/flamegraph?service=agent-test&from=now-10m&states=cpu"));
    let mut names = Vec::new();
    frame_names(&flame["root"], &mut names);
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
    let spool = crate::common::tempdir();
    // Pids above pid_max cannot exist.
    let mut agent = agent("http://127.0.0.1:9", &["--pid", "4194399"], spool.path());
    let (status, stderr) = agent.wait_output(Duration::from_secs(20));
    assert!(!status.success());
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors, vec!["error: pid 4194399 is not running"], "stderr:\n{stderr}");
    assert!(!stderr.contains("NoSuchProcess") && !stderr.contains("{"), "debug dump in:\n{stderr}");
}

/// Polls the agent's metrics until `name` reaches `at_least` (bounded by `limit`).
fn wait_metric(addr: &str, name: &str, at_least: f64, limit: Duration) -> f64 {
    let deadline = Instant::now() + limit;
    loop {
        let value = metric(addr, name).unwrap_or(0.0);
        if value >= at_least || Instant::now() >= deadline {
            return value;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn profiles_taken_while_the_server_is_down_arrive_once_it_is_up() {
    let data = crate::common::tempdir();
    let addr = free_port_addr();
    let url = format!("http://{addr}");
    let mut work = workload("120s");
    let pid = work.pid().to_string();
    let metrics = free_port_addr();
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
    let (_server, _) = serve(&addr, &data.path().join("store"));
    // Two more profiles after the server came up, then the target ends.
    let sent = wait_metric(&metrics, "hotframe_agent_upload_sent_total", spooled + 2.0, Duration::from_secs(60));
    assert!(sent >= spooled + 2.0, "only {sent} profiles sent after the server came up");
    work.0.kill().unwrap();
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
    let data = crate::common::tempdir();
    let (_server, url) = serve("127.0.0.1:0", &data.path().join("store"));
    let metrics = free_port_addr();
    let mut agent = agent(
        &url,
        &["--name", r"demo-workload .*--duration 3\.217s", "--metrics-listen", &metrics],
        &data.path().join("spool"),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while metric(&metrics, "hotframe_agent_targets").is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    // Past the agent's first scan of /proc.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(metric(&metrics, "hotframe_agent_targets"), Some(0.0), "nothing matches yet");
    let mut work = workload("3.217s");
    let pid = work.pid().to_string();
    let attached = wait_metric(&metrics, "hotframe_agent_targets", 1.0, Duration::from_secs(30));
    assert_eq!(attached, 1.0, "the process started later was not picked up");
    work.wait_output(Duration::from_secs(60));
    wait_metric(&metrics, "hotframe_agent_upload_sent_total", 1.0, Duration::from_secs(30));
    signal(agent.pid(), libc::SIGTERM);
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

fn signal(pid: u32, signal: libc::c_int) {
    // SAFETY: kill(2) on a child this test started.
    assert_eq!(unsafe { libc::kill(pid as libc::pid_t, signal) }, 0);
}

#[test]
fn sigterm_makes_the_agent_flush_and_exit_zero() {
    let data = crate::common::tempdir();
    let (_server, url) = serve("127.0.0.1:0", &data.path().join("store"));
    let work = workload("60s");
    let pid = work.pid().to_string();
    // An upload interval longer than the run: only the final flush can deliver.
    let mut agent = agent(&url, &["--pid", &pid, "--upload-interval", "1h"], &data.path().join("spool"));
    std::thread::sleep(Duration::from_secs(3));
    signal(agent.pid(), libc::SIGTERM);
    let (status, stderr) = agent.wait_output(Duration::from_secs(30));
    assert!(status.success(), "{status}\n{stderr}");
    assert!(stderr.contains("stop requested"), "{stderr}");
    assert_eq!(last_health(&stderr, "sent"), 1, "{stderr}");
    let flame = get_json(&format!("{url}/api/v1/flamegraph?service=agent-test&from=now-10m&states=all"));
    assert!(flame["totals"]["samples"].as_u64().unwrap() > 100, "{}", flame["totals"]);
}

#[test]
fn demo_serves_the_workload_profile_until_ctrl_c() {
    let mut demo = Running(
        Command::new(BIN)
            .args(["demo", "--listen", "127.0.0.1:0", "--duration", "60s"])
            .env("HOTFRAME_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
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
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut found = false;
    while !found && Instant::now() < deadline {
        std::thread::sleep(Duration::from_secs(1));
        // 404 until the first profile of the service is stored.
        let Ok(mut response) =
            ureq::get(&format!("{base}/api/v1/flamegraph?service=demo&from=now-10m&states=cpu")).call()
        else {
            continue;
        };
        let flame: serde_json::Value = serde_json::from_str(&response.body_mut().read_to_string().unwrap()).unwrap();
        let mut names = Vec::new();
        frame_names(&flame["root"], &mut names);
        found = names.iter().any(|n| n.ends_with("parse_json"));
    }
    assert!(found, "parse_json never showed up in the demo's flame graph");
    assert_eq!(ureq::get(&page).call().unwrap().status().as_u16(), 200, "the printed URL opens");
    signal(demo.pid(), libc::SIGINT);
    let (status, stderr) = demo.wait_output(Duration::from_secs(30));
    assert!(status.success(), "{status}\n{stderr}");
}

#[test]
fn without_privileges_the_agent_says_what_it_needs() {
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
    let mut agent = Running(command.spawn().unwrap());
    let (status, stderr) = agent.wait_output(Duration::from_secs(20));
    assert!(!status.success());
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains("root or CAP_PERFMON"), "{stderr}");
}

#[test]
fn agent_starts_a_command_profiles_it_and_exits_when_it_does() {
    let data = crate::common::tempdir();
    let (_server, url) = serve("127.0.0.1:0", &data.path().join("store"));
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
    let mut names = Vec::new();
    frame_names(&flame["root"], &mut names);
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
    let data = crate::common::tempdir();
    let exe = data.path().join("shop");
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/workloads/shop.cpp");
    let built = Command::new("c++")
        .args(["-O2", "-g", "-fomit-frame-pointer", "-o"])
        .arg(&exe)
        .arg(&source)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(built, "c++ failed to build {}", source.display());
    let (_server, url) = serve("127.0.0.1:0", &data.path().join("store"));
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
    let exe = data.path().join(name);
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/workloads/forker.c");
    let built = Command::new("cc")
        .args(["-O2", "-fomit-frame-pointer", "-o"])
        .arg(&exe)
        .arg(&source)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(built, "cc failed to build {}", source.display());
    let (_server, url) = serve("127.0.0.1:0", &data.path().join("store"));
    let truth = data.path().join("truth");
    let mut work = Running(Command::new(&exe).arg(&truth).args(["4", "2"]).spawn().unwrap());
    let ready = truth.with_extension("ready");
    let t0 = Instant::now();
    while !ready.exists() {
        assert!(t0.elapsed() < Duration::from_secs(10), "the workload did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
    let pid = work.pid().to_string();
    let args: Vec<String> = target_args.iter().map(|a| a.replace("{pid}", &pid)).collect();
    let metrics = free_port_addr();
    let mut extra: Vec<&str> = args.iter().map(String::as_str).collect();
    extra.extend(["--metrics-listen", &metrics]);
    let mut agent = agent(&url, &extra, &data.path().join("spool"));
    let attached = wait_metric(&metrics, "hotframe_agent_targets", 1.0, Duration::from_secs(30));
    assert!(attached >= 1.0, "the agent did not find the workload");
    std::fs::write(truth.with_extension("go"), b"").unwrap();
    let (status, _) = work.wait_output(Duration::from_secs(60));
    assert!(status.success(), "workload: {status}");
    // Every profile of the run uploaded (1 s interval), then a clean stop.
    std::thread::sleep(Duration::from_millis(2500));
    if agent.0.try_wait().unwrap().is_none() {
        signal(agent.pid(), libc::SIGTERM);
    }
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

#[test]
fn by_pid_every_descendant_counts_and_cpu_seconds_match_the_kernel() {
    let (flame, labels, truth, stderr) = profile_forker("forker-pid", &["--pid", "{pid}"]);
    let (seen, kernel) = (flame_cpu_seconds(&flame), truth["cpu_s"]);
    eprintln!("hotframe {seen:.3} CPU s, kernel {kernel:.3} (sh -c {:.3}), {truth:?}", truth["sh_cpu_s"]);
    assert!(
        (seen / kernel - 1.0).abs() <= 0.10,
        "hotframe counted {seen:.3} CPU s, the kernel {kernel:.3}: {truth:?}\n{}\n{stderr}",
        flame["totals"]
    );
    // The fork-per-connection children and the sh -c children are under the service.
    let mut names = Vec::new();
    frame_names(&flame["root"], &mut names);
    assert!(names.iter().any(|n| n == "child_burn"), "no short-lived child's frames: {names:?}");
    assert!(names.iter().any(|n| n == "worker_burn"), "no worker's frames: {names:?}");
    let processes: Vec<&str> = labels["process"].as_array().into_iter().flatten().filter_map(|v| v.as_str()).collect();
    assert!(processes.contains(&"sh"), "no sh -c child among {processes:?}");
}

#[test]
fn by_name_short_lived_workers_count_and_cpu_seconds_match_the_kernel() {
    // `sh -c` children exec into another program: not matched by the name, so not counted.
    let (flame, _, truth, stderr) = profile_forker("forker-name", &["--name", "^forker-name$"]);
    let (seen, kernel) = (flame_cpu_seconds(&flame), truth["cpu_s"] - truth["sh_cpu_s"]);
    eprintln!("hotframe {seen:.3} CPU s, kernel {kernel:.3} without sh -c, {truth:?}");
    assert!(
        (seen / kernel - 1.0).abs() <= 0.10,
        "hotframe counted {seen:.3} CPU s, the kernel {kernel:.3}: {truth:?}\n{}\n{stderr}",
        flame["totals"]
    );
    let mut names = Vec::new();
    frame_names(&flame["root"], &mut names);
    assert!(names.iter().any(|n| n == "child_burn"), "no short-lived child's frames: {names:?}");
}
