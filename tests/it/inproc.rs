//! The in-process agent end to end: the `checkout_service` example (axum + hotframe's
//! in-process agent) sends to a real `hotframe serve`; requests at its slow endpoint
//! make `validate_coupon` hot in the server's flame graph. Also the helpers the other
//! ecosystem tests (scrape, import, SDKs) share: child processes, the server, JSON.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const HOTFRAME: &str = env!("CARGO_BIN_EXE_hotframe");

/// A child process, killed and reaped when dropped.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    /// Sends SIGTERM and waits up to `limit` for the exit status.
    pub fn terminate(&mut self, limit: Duration) -> std::process::ExitStatus {
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "pid {} ignored SIGTERM for {limit:?}", self.0.id());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Starts `command` (stdout piped) and reads its first line, `listening on URL`.
pub fn start_listening(mut command: Command) -> (Proc, String) {
    let mut child = command.stdout(Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("expected `listening on URL`, got {line:?}"));
    let url = url.to_string();
    (Proc(child), url)
}

/// A real `hotframe serve` on a free loopback port with its store in `data`.
pub fn hotframe_serve(data: &Path) -> (Proc, String) {
    let mut cmd = Command::new(HOTFRAME);
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(data)
        .env("HOTFRAME_LOG", "warn")
        .stderr(Stdio::null());
    start_listening(cmd)
}

/// GET `url` and parse the JSON answer (panics on a non-2xx, with the body).
pub fn get_json(url: &str) -> serde_json::Value {
    let mut response = ureq::get(url).config().http_status_as_error(false).build().call().unwrap();
    let status = response.status();
    let body = response.body_mut().read_to_string().unwrap();
    assert!(status.is_success(), "GET {url}: {status} {body}");
    serde_json::from_str(&body).unwrap()
}

/// The flame graph of `service` over the last hour, or None while it has no profile.
pub fn flamegraph(server: &str, service: &str) -> Option<serde_json::Value> {
    let url = format!("{server}/api/v1/flamegraph?service={service}&from=now-1h&until=now%2B1m");
    let mut response = ureq::get(&url).config().http_status_as_error(false).build().call().unwrap();
    if response.status() == 404 {
        return None;
    }
    let body = response.body_mut().read_to_string().unwrap();
    Some(parse_deep_json(&body))
}

/// Parses JSON that nests deeper than serde_json's default 128 levels (flame graphs
/// of real services do).
pub fn parse_deep_json(text: &str) -> serde_json::Value {
    use serde::Deserialize;
    let mut de = serde_json::Deserializer::from_str(text);
    de.disable_recursion_limit();
    serde_json::Value::deserialize(&mut de).unwrap()
}

/// Sum of `total` over every node whose name contains `needle` and has no such
/// ancestor (so recursion is not counted twice).
pub fn total_of(node: &serde_json::Value, needle: &str) -> u64 {
    if node["name"].as_str().is_some_and(|n| n.contains(needle)) {
        return node["total"].as_u64().unwrap_or(0);
    }
    node["children"].as_array().into_iter().flatten().map(|c| total_of(c, needle)).sum()
}

/// Polls the flame graph of `service` until `needle` has at least `min` samples.
pub fn wait_for_frame(server: &str, service: &str, needle: &str, min: u64, limit: Duration) -> serde_json::Value {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(graph) = flamegraph(server, service) {
            if total_of(&graph["root"], needle) >= min {
                return graph;
            }
            assert!(Instant::now() < deadline, "{needle} never reached {min} samples in {service}:\n{graph:#}");
        } else {
            assert!(Instant::now() < deadline, "service {service} never appeared on {server}");
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// The built example `name` (target/debug/examples/NAME, beside this test binary's
/// deps/ folder). `cargo test` builds it; a run of only `--test it` may not.
pub fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let debug = exe.parent().and_then(Path::parent).unwrap();
    let path = debug.join("examples").join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --example {name}` first (plain `cargo test` builds it)",
        path.display()
    );
    path
}

/// The checkout example on a free port; with `server`, its in-process agent sends there
/// every second.
pub fn checkout_service(server: Option<&str>) -> (Proc, String) {
    let mut cmd = Command::new(example("checkout_service"));
    cmd.env("CHECKOUT_LISTEN", "127.0.0.1:0").env("HOTFRAME_UPLOAD_INTERVAL_SECS", "1").env("HOTFRAME_LOG", "warn");
    match server {
        Some(url) => cmd.env("HOTFRAME_SERVER", url),
        None => cmd.env_remove("HOTFRAME_SERVER"),
    };
    start_listening(cmd)
}

/// Sends coupon checks to the checkout service from two threads for `duration`.
pub fn drive_checkout(service_url: &str, duration: Duration) -> u64 {
    let deadline = Instant::now() + duration;
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..2)
            .map(|i| {
                s.spawn(move || {
                    let mut ok = 0u64;
                    while Instant::now() < deadline {
                        let url = format!("{service_url}/checkout?coupon=SAVE{}-ABCD{i}", ok % 100);
                        let mut r = ureq::get(&url).call().unwrap();
                        assert_eq!(r.body_mut().read_to_string().unwrap(), "coupon applied\n");
                        ok += 1;
                    }
                    ok
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).sum()
    })
}

/// Drives the checkout service in 2 s bursts until `needle` has `min` samples in the
/// server's flame graph of `service` (the CPU the service gets depends on the load of
/// the machine, so the time needed does too); returns the graph and the request count.
pub fn drive_until_hot(
    service_url: &str,
    server: &str,
    service: &str,
    needle: &str,
    min: u64,
) -> (serde_json::Value, u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut requests = 0;
    loop {
        requests += drive_checkout(service_url, Duration::from_secs(2));
        if let Some(graph) = flamegraph(server, service) {
            if total_of(&graph["root"], needle) >= min {
                return (graph, requests);
            }
        }
        assert!(
            Instant::now() < deadline,
            "{needle} never reached {min} samples in {service} after {requests} requests"
        );
    }
}

#[test]
fn checkout_example_with_the_in_process_agent_shows_its_hot_function() {
    let data = crate::common::tempdir();
    let (_server, server) = hotframe_serve(data.path());
    let (mut service, service_url) = checkout_service(Some(&server));
    let (graph, requests) = drive_until_hot(&service_url, &server, "checkout", "validate_coupon", 20);
    let root_total = graph["root"]["total"].as_u64().unwrap();
    let hot = total_of(&graph["root"], "validate_coupon");
    eprintln!("checkout: {requests} requests, validate_coupon {hot} of {root_total} samples");
    // The service does nothing but validate coupons: the regex compilation must be
    // most of what the CPU did in it (threshold low enough for a loaded 2-core box).
    assert!(hot * 3 >= root_total, "validate_coupon has {hot} of {root_total} samples:\n{graph:#}");
    assert!(total_of(&graph["root"], "regex") > 0, "no regex frames under the hot function");

    let services = get_json(&format!("{server}/api/v1/services"));
    let checkout = services["services"].as_array().unwrap().iter().find(|s| s["name"] == "checkout").unwrap().clone();
    assert_eq!(checkout["labels"]["version"][0], env!("CARGO_PKG_VERSION"));
    assert_eq!(checkout["labels"]["pid"][0], service.0.id().to_string());

    // Dropping the guard on SIGTERM uploads the last window: a clean exit.
    let status = service.terminate(Duration::from_secs(15));
    assert!(status.success(), "checkout service exited with {status}");
}

#[test]
fn the_examples_pprof_endpoint_answers_409_while_the_agent_runs() {
    let data = crate::common::tempdir();
    let (_server, server) = hotframe_serve(data.path());
    let (_with_agent, with_agent) = checkout_service(Some(&server));
    let r = ureq::get(&format!("{with_agent}/debug/pprof/profile?seconds=1"))
        .config()
        .http_status_as_error(false)
        .build()
        .call()
        .unwrap();
    assert_eq!(r.status(), 409);
}

/// CPU time of the calling thread, seconds.
fn thread_cpu_seconds() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

#[inline(never)]
fn inproc_library_test_spin(until: Instant) -> u64 {
    let mut x = 1u64;
    while Instant::now() < until {
        for _ in 0..10_000 {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
    }
    x
}

#[test]
fn the_agent_guard_in_this_process_uploads_and_flushes_on_stop() {
    let data = crate::common::tempdir();
    let (_server, server) = hotframe_serve(data.path());
    // A long interval: what arrives can only come from the final cut at stop().
    let agent = hotframe::agent::Agent::builder()
        .server(server.as_str())
        .service("inproc-lib")
        .label("version", "test-1")
        .thread_names(true)
        .upload_interval(Duration::from_secs(600))
        .start()
        .unwrap();
    // pprof-rs allows one profiler per process: a second agent is refused, saying why.
    let second = hotframe::agent::Agent::builder().server(server.as_str()).service("x").start();
    let message = second.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(message.contains("only one profiler may run per process"), "{message}");

    let spinner = std::thread::Builder::new()
        .name("inproc-spinner".into())
        .spawn(|| {
            inproc_library_test_spin(Instant::now() + Duration::from_secs(2));
            thread_cpu_seconds()
        })
        .unwrap();
    let spinner_cpu = spinner.join().unwrap();
    assert!(agent.stats().sent == 0, "nothing should be sent before the cut");
    assert!(agent.stop(), "stop() did not deliver the last window");

    let graph = flamegraph(&server, "inproc-lib").expect("the final window arrived");
    let hot = total_of(&graph["root"], "inproc_library_test_spin");
    // ITIMER_PROF samples threads in proportion to the CPU they use, and other tests
    // share this process and the machine: compare with the spinner's own CPU time.
    let expected = spinner_cpu * 99.0;
    assert!(
        hot >= 5 && hot as f64 >= expected * 0.4,
        "{hot} samples of the spinning function for {spinner_cpu:.2} s of CPU at 99 Hz:\n{graph:#}"
    );
    // thread_names(true): the thread's name is the root frame.
    let roots: Vec<&str> =
        graph["root"]["children"].as_array().unwrap().iter().filter_map(|c| c["name"].as_str()).collect();
    assert!(roots.contains(&"inproc-spinner"), "roots: {roots:?}");
    let spinner_root =
        graph["root"]["children"].as_array().unwrap().iter().find(|c| c["name"] == "inproc-spinner").unwrap();
    assert_eq!(
        total_of(spinner_root, "inproc_library_test_spin"),
        hot,
        "the spin samples are not all under their thread"
    );
}
