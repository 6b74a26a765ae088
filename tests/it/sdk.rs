//! Pyroscope SDKs from the registries, unchanged, sending to a real `hotframe serve`:
//! the Rust SDK (`pyroscope` crate, pprof-rs backend; Connect Push) through
//! examples/pyroscope_sdk.rs, and the Node.js SDK (`@pyroscope/nodejs`; `/ingest` with
//! pprof) through tests/sdk/pyroscope_node.js. Each program's hot function must show
//! up in hotframe under its name. `.ci/run` builds the example and runs `npm ci`; on a
//! developer machine without them, the tests say what to run and skip.

use crate::common::{example_path, get_json, require, tempdir, total_of, wait_for_frame, ChildGuard, Server};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Runs an SDK-profiled program to completion (bounded), asserting it exits 0.
fn run_to_end(mut command: Command, limit: Duration) {
    let status = ChildGuard::spawn(&mut command).wait_exit(limit);
    assert!(status.success(), "{command:?} exited with {status}");
}

fn check_series(server: &str, service: &str, hot: &str) {
    let graph = wait_for_frame(server, service, hot, 10, Duration::from_secs(20));
    let total = graph["root"]["total"].as_u64().unwrap();
    let hot_total = total_of(&graph["root"], hot);
    assert!(hot_total * 4 >= total, "{hot} has {hot_total} of {total} samples in {service}");
    let services = get_json(&format!("{server}/api/v1/services"));
    let entry = services["services"].as_array().unwrap().iter().find(|s| s["name"] == service).unwrap().clone();
    assert_eq!(entry["labels"]["env"][0], "sdk-test", "the SDK's tags are labels: {entry}");
    // SDKs add OpenTelemetry-style dotted labels; hotframe keeps them with `_`.
    assert!(entry["labels"]["otel_scope_name"][0].as_str().is_some_and(|s| s.contains("pyroscope")), "{entry}");
}

#[test]
fn the_pyroscope_rust_sdk_sends_to_hotframe() {
    let example = example_path("pyroscope_sdk");
    if !require(
        "examples/pyroscope_sdk",
        example.exists(),
        "run `cargo build --example pyroscope_sdk --features sdk-pyroscope`",
    ) {
        return;
    }
    let data = tempdir();
    let serve = Server::start(data.path(), &[]);
    let server = serve.url.as_str();
    let mut cmd = Command::new(&example);
    cmd.args([server, "4"]).stdout(std::process::Stdio::null());
    run_to_end(cmd, Duration::from_secs(60));
    check_series(server, "pyro-rs", "pyroscope_sdk_hot_spin");
}

#[test]
fn the_pyroscope_nodejs_sdk_sends_to_hotframe() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk");
    let node_ok = Command::new("node").arg("--version").output().is_ok_and(|o| o.status.success());
    if !require("node", node_ok, "apt-get install nodejs npm") {
        return;
    }
    let installed = dir.join("node_modules/@pyroscope/nodejs").exists();
    if !require("@pyroscope/nodejs", installed, "run `npm ci` in tests/sdk") {
        return;
    }
    let data = tempdir();
    let serve = Server::start(data.path(), &[]);
    let server = serve.url.as_str();
    let mut cmd = Command::new("node");
    cmd.current_dir(&dir).args(["pyroscope_node.js", server, "4"]).stdout(std::process::Stdio::null());
    run_to_end(cmd, Duration::from_secs(60));
    check_series(server, "pyro-node", "nodeHotSpin");
}
