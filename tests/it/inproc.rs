//! The in-process agent end to end: the `checkout_service` example (axum + hotframe's
//! in-process agent) sends to a real `hotframe serve`; requests at its slow endpoint
//! make `validate_coupon` hot in the server's flame graph. Also the checkout example's
//! helpers the scrape test shares.

use crate::common::{example_path, flamegraph, get_json, start_listening, tempdir, total_of, ChildGuard, Server};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// The built example `name` (target/debug/examples/NAME, beside this test binary's
/// deps/ folder). `cargo test` builds it; a run of only `--test it` may not.
pub fn example(name: &str) -> PathBuf {
    let path = example_path(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --example {name}` first (plain `cargo test` builds it)",
        path.display()
    );
    path
}

/// The checkout example on a free port; with `server`, its in-process agent sends there
/// every second.
pub fn checkout_service(server: Option<&str>) -> (ChildGuard, String) {
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
    let data = tempdir();
    let serve = Server::start(data.path(), &[]);
    let server = serve.url.as_str();
    let (mut service, service_url) = checkout_service(Some(server));
    let (graph, requests) = drive_until_hot(&service_url, server, "checkout", "validate_coupon", 20);
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
    assert_eq!(checkout["labels"]["pid"][0], service.pid().to_string());

    // Dropping the guard on SIGTERM uploads the last window: a clean exit.
    let status = service.terminate(Duration::from_secs(15));
    assert!(status.success(), "checkout service exited with {status}");
}

#[test]
fn the_examples_pprof_endpoint_answers_409_while_the_agent_runs() {
    let data = tempdir();
    let serve = Server::start(data.path(), &[]);
    let server = serve.url.as_str();
    let (_with_agent, with_agent) = checkout_service(Some(server));
    let (status, body) = crate::common::get(&format!("{with_agent}/debug/pprof/profile?seconds=1"));
    assert_eq!(status, 409, "{body}");
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
    let data = tempdir();
    let serve = Server::start(data.path(), &[]);
    let server = serve.url.as_str();
    // A long interval: what arrives can only come from the final cut at stop().
    let agent = hotframe::agent::Agent::builder()
        .server(server)
        .service("inproc-lib")
        .label("version", "test-1")
        .thread_names(true)
        .upload_interval(Duration::from_secs(600))
        .start()
        .unwrap();
    // pprof-rs allows one profiler per process: a second agent is refused, saying why.
    let second = hotframe::agent::Agent::builder().server(server).service("x").start();
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

    let graph = flamegraph(server, "inproc-lib").expect("the final window arrived");
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
