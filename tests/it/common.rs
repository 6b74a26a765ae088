//! The harness every topic module shares, so that each thing is done one way: child
//! processes killed on drop, `hotframe serve` on a free loopback port, HTTP calls that
//! hand back 4xx/5xx answers, `eventually` polling, golden files and the root check.
//!
//! In: the hotframe binary Cargo built for this test run, paths, closures to poll.
//! Out: running processes and parsed answers; panics that say what was awaited.
//! Must not: sleep to synchronise (poll a condition with `eventually`), wait without a
//! bound, or leave a process behind. It refers to nothing else of the test crate, because
//! `tests/browser/harness.rs` and through it `benches/flame_browser.rs` use it too.

#![allow(dead_code)]

use serde_json::Value;
use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The hotframe binary of this build.
pub const BIN: &str = env!("CARGO_BIN_EXE_hotframe");

/// A fresh temporary directory that is removed when dropped.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("create temp dir")
}

/// Builds the workload `tests/fixtures/workloads/<source>` with `compiler` (`cc`, `c++`)
/// and `flags` into `dir/<name>`; panics with the command when it fails.
pub fn build_workload(compiler: &str, source: &str, flags: &[&str], dir: &Path, name: &str) -> PathBuf {
    let exe = dir.join(name);
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/workloads").join(source);
    let built = Command::new(compiler)
        .args(flags)
        .arg("-o")
        .arg(&exe)
        .arg(&source)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(built, "{compiler} {} failed to build {}", flags.join(" "), source.display());
    exe
}

/// Where Cargo puts the example `name` of this build (target/debug/examples/NAME, beside
/// this test binary's deps/ folder); it may not be built.
pub fn example_path(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let debug = exe.parent().and_then(Path::parent).expect("target/debug");
    debug.join("examples").join(name)
}

/// A loopback address that was free a moment ago (bound, then released), never one
/// this test process handed out before: a port released by one test (a PostgreSQL
/// cluster stopped to test a restart) is often the kernel's next pick for another,
/// which then lost the race when the first started again.
pub fn free_addr() -> SocketAddr {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral loopback port");
        let addr = listener.local_addr().expect("local addr");
        if !given.contains(&addr.port()) {
            given.push(addr.port());
            return addr;
        }
    }
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    free_addr().port()
}

// ---- waiting -----------------------------------------------------------------------

/// What a polled closure returns: ready with a value, or not yet (and why).
pub trait Ready {
    /// The value `eventually` hands back.
    type Value;
    /// `Ok(value)` when ready, else what the last attempt saw.
    fn ready(self) -> Result<Self::Value, String>;
}

impl<T> Ready for Option<T> {
    type Value = T;
    fn ready(self) -> Result<T, String> {
        self.ok_or_else(|| "not yet".to_string())
    }
}

impl<T, E: std::fmt::Display> Ready for Result<T, E> {
    type Value = T;
    fn ready(self) -> Result<T, String> {
        self.map_err(|e| e.to_string())
    }
}

impl Ready for bool {
    type Value = ();
    fn ready(self) -> Result<(), String> {
        if self {
            Ok(())
        } else {
            Err("not yet".to_string())
        }
    }
}

/// Calls `attempt` until it is ready or `within` has passed; `Err` holds what the last
/// attempt saw. Short pauses at first, then up to 250 ms between attempts.
pub fn poll<R: Ready>(within: Duration, mut attempt: impl FnMut() -> R) -> Result<R::Value, String> {
    let deadline = Instant::now() + within;
    let mut pause = Duration::from_millis(5);
    loop {
        match attempt().ready() {
            Ok(value) => return Ok(value),
            Err(last) if Instant::now() >= deadline => return Err(last),
            Err(_) => {}
        }
        std::thread::sleep(pause.min(deadline.saturating_duration_since(Instant::now())));
        pause = (pause * 2).min(Duration::from_millis(250));
    }
}

/// Polls `attempt` until it returns `Some`, `Ok` or `true`, and returns the value; panics
/// after `within` naming `what` was awaited and what the last attempt saw.
pub fn eventually<R: Ready>(what: &str, within: Duration, attempt: impl FnMut() -> R) -> R::Value {
    poll(within, attempt).unwrap_or_else(|last| panic!("timed out after {within:?} waiting for {what} (last: {last})"))
}

// ---- child processes -----------------------------------------------------------------

/// A child process, killed and reaped when dropped, however the test ends.
pub struct ChildGuard(pub Child);

impl ChildGuard {
    /// Spawns `command`.
    pub fn spawn(command: &mut Command) -> ChildGuard {
        let child = command.spawn().unwrap_or_else(|e| panic!("start {:?}: {e}", command.get_program()));
        ChildGuard(child)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    /// Sends `signal` (e.g. `libc::SIGTERM`).
    pub fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill(2) on a child this test started and has not reaped yet.
        assert_eq!(unsafe { libc::kill(self.0.id() as libc::pid_t, signal) }, 0, "kill({}, {signal})", self.0.id());
    }

    /// Waits up to `limit` for the process to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let pid = self.0.id();
        let child = &mut self.0;
        eventually(&format!("process {pid} to exit"), limit, || child.try_wait().expect("try_wait"))
    }

    /// Waits up to `limit` for the process to exit; returns its status and what it wrote
    /// to a piped stderr.
    pub fn wait_output(&mut self, limit: Duration) -> (ExitStatus, String) {
        let status = self.wait_exit(limit);
        let mut err = String::new();
        if let Some(mut stderr) = self.0.stderr.take() {
            stderr.read_to_string(&mut err).expect("read stderr");
        }
        (status, err)
    }

    /// Sends SIGTERM and waits up to `limit` for the exit status.
    pub fn terminate(&mut self, limit: Duration) -> ExitStatus {
        self.signal(libc::SIGTERM);
        self.wait_exit(limit)
    }

    /// SIGKILL, then reaps the process.
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }

    /// The URL of the process's first stdout line `listening on URL` (waits at most 60 s).
    pub fn listening_url(&mut self) -> String {
        let line = self.first_stdout_line(Duration::from_secs(60));
        line.trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("expected `listening on URL` from {}, got {line:?}", self.0.id()))
            .to_string()
    }

    /// The first line of the piped stdout (the rest of stdout is closed).
    fn first_stdout_line(&mut self, limit: Duration) -> String {
        let stdout = self.0.stdout.take().expect("stdout piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        rx.recv_timeout(limit).unwrap_or_else(|_| panic!("process {} wrote no line within {limit:?}", self.0.id()))
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts `command` with stdout piped and returns it with the URL of its first line,
/// `listening on URL` (hotframe serve, the checkout example).
pub fn start_listening(mut command: Command) -> (ChildGuard, String) {
    let mut child = ChildGuard::spawn(command.stdout(Stdio::piped()));
    let url = child.listening_url();
    (child, url)
}

/// A running `hotframe serve` on loopback, killed on drop.
pub struct Server {
    process: ChildGuard,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// The listening port.
    pub port: u16,
    /// The store directory.
    pub data: PathBuf,
}

impl Server {
    /// Starts `hotframe serve` with its store in `data` and `extra` flags, on a free port
    /// (`--listen 127.0.0.1:0` unless `extra` names one), and waits until it answers.
    pub fn start(data: &Path, extra: &[&str]) -> Server {
        let listen: &[&str] = if extra.contains(&"--listen") { &[] } else { &["--listen", "127.0.0.1:0"] };
        let mut command = Command::new(BIN);
        command
            .arg("serve")
            .args(listen)
            .arg("--data")
            .arg(data)
            .args(extra)
            .env("HOTFRAME_LOG", "warn")
            .stderr(Stdio::inherit());
        let (process, url) = start_listening(command);
        let port = url.rsplit(':').next().and_then(|p| p.parse().ok()).unwrap_or_else(|| panic!("no port in {url}"));
        let server = Server { process, url, port, data: data.to_path_buf() };
        let health = server.api("/healthz");
        eventually("hotframe serve to answer /healthz", Duration::from_secs(30), || get(&health).0 == 200);
        server
    }

    /// Starts it on a given loopback port (to come back where a page expects it).
    pub fn start_on(data: &Path, port: u16, extra: &[&str]) -> Server {
        let listen = format!("127.0.0.1:{port}");
        let mut args = vec!["--listen", listen.as_str()];
        args.extend_from_slice(extra);
        Server::start(data, &args)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Stops the server with SIGKILL and reaps it.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Sends SIGTERM and waits up to `limit` for its exit status.
    pub fn terminate(&mut self, limit: Duration) -> ExitStatus {
        self.process.terminate(limit)
    }

    /// The full URL of `path_and_query`.
    pub fn api(&self, path_and_query: &str) -> String {
        format!("{}{path_and_query}", self.url)
    }

    /// GET `path_and_query` as JSON (panics on a non-2xx answer, with its body).
    pub fn get_json(&self, path_and_query: &str) -> Value {
        get_json(&self.api(path_and_query))
    }

    /// PUT JSON to `path`; returns the status.
    pub fn put_json(&self, path: &str, body: &Value) -> u16 {
        let response = http()
            .put(self.api(path))
            .header("Content-Type", "application/json")
            .send(body.to_string())
            .unwrap_or_else(|e| panic!("PUT {path}: {e}"));
        response.status().as_u16()
    }

    /// `POST /ingest` of folded text for `name` (`app.cpu{k=v}`) over [from, until] s at
    /// 100 Hz; panics unless it is accepted.
    pub fn ingest_folded(&self, name: &str, folded: &str, from: u64, until: u64, token: Option<&str>) {
        let mut request = http()
            .post(self.api("/ingest"))
            .query("name", name)
            .query("from", from.to_string())
            .query("until", until.to_string())
            .query("sampleRate", "100")
            .query("format", "folded")
            .header("Content-Type", "text/plain");
        if let Some(token) = token {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        let mut response = request.send(folded).unwrap_or_else(|e| panic!("POST /ingest: {e}"));
        let status = response.status().as_u16();
        let body = response.body_mut().read_to_string().unwrap_or_default();
        assert!((200..300).contains(&status), "ingest of {name} answered {status}: {body}");
    }
}

// ---- HTTP ------------------------------------------------------------------------------

/// An HTTP client that hands back 4xx/5xx answers instead of failing (60 s per call).
pub fn http() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

/// The status and body of an answer (up to 256 MiB); a transport error is status 0.
fn status_and_bytes(answer: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> (u16, Vec<u8>) {
    match answer {
        Ok(mut response) => {
            let status = response.status().as_u16();
            let body = response.body_mut().with_config().limit(256 << 20).read_to_vec().unwrap_or_default();
            (status, body)
        }
        Err(e) => (0, e.to_string().into_bytes()),
    }
}

fn status_and_body(answer: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> (u16, String) {
    let (status, bytes) = status_and_bytes(answer);
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

/// GET `url`: (status, body as bytes); status 0 when nothing answered.
pub fn get_bytes(url: &str) -> (u16, Vec<u8>) {
    status_and_bytes(http().get(url).call())
}

/// GET `url`: (status, body as text); status 0 when nothing answered.
pub fn get(url: &str) -> (u16, String) {
    status_and_body(http().get(url).call())
}

/// POST `body` as `content_type` to `url`: (status, body); status 0 when nothing answered.
pub fn post(url: &str, content_type: &str, body: impl AsRef<[u8]>) -> (u16, String) {
    status_and_body(http().post(url).header("Content-Type", content_type).send(body.as_ref()))
}

/// GET `url` and parse the JSON answer (panics on a non-2xx, with the body).
pub fn get_json(url: &str) -> Value {
    let (status, body) = get(url);
    assert!((200..300).contains(&status), "GET {url}: {status} {body}");
    parse_deep_json(&body)
}

/// Parses JSON that nests deeper than serde_json's default 128 levels (flame graphs
/// of real services do).
pub fn parse_deep_json(text: &str) -> Value {
    use serde::Deserialize;
    let mut de = serde_json::Deserializer::from_str(text);
    de.disable_recursion_limit();
    Value::deserialize(&mut de).unwrap_or_else(|e| panic!("not JSON ({e}): {}", &text[..text.len().min(2000)]))
}

// ---- flame graph answers ---------------------------------------------------------------

/// The flame graph of `service` over the last hour, or None while it has no profile.
pub fn flamegraph(server: &str, service: &str) -> Option<Value> {
    let (status, body) = get(&format!("{server}/api/v1/flamegraph?service={service}&from=now-1h&until=now%2B1m"));
    match status {
        404 => None,
        200 => Some(parse_deep_json(&body)),
        _ => panic!("flame graph of {service}: {status} {body}"),
    }
}

/// Sum of `total` over every node whose name contains `needle` and has no such
/// ancestor (so recursion is not counted twice).
pub fn total_of(node: &Value, needle: &str) -> u64 {
    if node["name"].as_str().is_some_and(|n| n.contains(needle)) {
        return node["total"].as_u64().unwrap_or(0);
    }
    node["children"].as_array().into_iter().flatten().map(|c| total_of(c, needle)).sum()
}

/// Every frame name in a flame graph tree, preorder.
pub fn frame_names(node: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![node];
    while let Some(node) = stack.pop() {
        if let Some(name) = node["name"].as_str() {
            out.push(name.to_string());
        }
        stack.extend(node["children"].as_array().into_iter().flatten().rev());
    }
    out
}

/// Polls the flame graph of `service` until `needle` has at least `min` samples.
pub fn wait_for_frame(server: &str, service: &str, needle: &str, min: u64, limit: Duration) -> Value {
    eventually(&format!("{needle} to reach {min} samples in {service} on {server}"), limit, || {
        match flamegraph(server, service) {
            Some(graph) if total_of(&graph["root"], needle) >= min => Ok(graph),
            Some(graph) => Err(format!("{} samples of {needle}", total_of(&graph["root"], needle))),
            None => Err(format!("no profile of {service} yet")),
        }
    })
}

// ---- preconditions: root, tools ---------------------------------------------------------

/// What to do about a test whose precondition (root, a tool) may be missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    /// It is there: run the test.
    Run,
    /// Missing on a developer machine: say so and skip.
    Skip,
    /// Missing under CI, which must provide it: fail.
    Fail,
}

/// Whether the `CI` variable says this is a CI run (set, and not empty, `0` or `false`).
pub fn ci_says_ci(ci: Option<&str>) -> bool {
    ci.is_some_and(|v| !matches!(v.trim().to_ascii_lowercase().as_str(), "" | "0" | "false"))
}

/// The decision for a precondition that is `met` or not, given the value of `CI`.
pub fn decide(met: bool, ci: Option<&str>) -> Precondition {
    match (met, ci_says_ci(ci)) {
        (true, _) => Precondition::Run,
        (false, false) => Precondition::Skip,
        (false, true) => Precondition::Fail,
    }
}

/// True when `what` is there. Otherwise prints `skipped: ...` with `how` to get it and
/// returns false on a developer machine, and panics under CI (which must provide it).
pub fn require(what: &str, met: bool, how: &str) -> bool {
    let ci = std::env::var("CI").ok();
    match decide(met, ci.as_deref()) {
        Precondition::Run => true,
        Precondition::Skip => {
            eprintln!("skipped: {what} is missing; {how}");
            false
        }
        Precondition::Fail => panic!("{what} is missing although CI={} must provide it: {how}", ci.unwrap_or_default()),
    }
}

/// Whether this process runs as root (effective uid 0).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// For tests that need root (`why`: e.g. "perf_event_open"): true as root; otherwise
/// prints `skipped: needs root (why)` and returns false, or panics when `CI` is set.
pub fn require_root(why: &str) -> bool {
    let ci = std::env::var("CI").ok();
    match decide(is_root(), ci.as_deref()) {
        Precondition::Run => true,
        Precondition::Skip => {
            eprintln!("skipped: needs root ({why}); run `cargo test` as root to include it");
            false
        }
        Precondition::Fail => panic!("needs root ({why}), and CI must run the tests as root"),
    }
}

// ---- golden files ---------------------------------------------------------------------

/// The variable that rewrites golden files instead of comparing with them.
pub const BLESS_VAR: &str = "HOTFRAME_BLESS";

/// `tests/fixtures/golden/NAME`.
pub fn golden_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/golden").join(name)
}

/// Compares `actual` with the golden file `name` (under tests/fixtures/golden/); with
/// `HOTFRAME_BLESS=1` writes it instead. A difference panics with the first lines that
/// differ and the command that accepts the new output; `test` names the test to re-run.
pub fn assert_golden(name: &str, test: &str, actual: &str) {
    let path = golden_path(name);
    if std::env::var(BLESS_VAR).is_ok_and(|v| v == "1") {
        std::fs::create_dir_all(path.parent().expect("golden dir")).expect("create tests/fixtures/golden");
        std::fs::write(&path, actual).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        eprintln!("blessed {}", path.display());
        return;
    }
    let bless = format!("{BLESS_VAR}=1 cargo test --test it {test}");
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("golden file {} unreadable ({e}); create it with `{bless}`", path.display()));
    if expected != actual {
        panic!(
            "output differs from the golden file {}:\n{}\nIf the change is intended, accept it with `{bless}` \
             and review the diff of tests/fixtures/golden/ before committing.",
            path.display(),
            diff_hint(&expected, actual)
        );
    }
}

/// Where `actual` differs from `expected`: from the first differing line on, a few lines
/// compared position by position (`-expected`, `+actual`, context unmarked).
pub fn diff_hint(expected: &str, actual: &str) -> String {
    let (old, new): (Vec<&str>, Vec<&str>) = (expected.lines().collect(), actual.lines().collect());
    let Some(first) = (0..old.len().max(new.len())).find(|&i| old.get(i) != new.get(i)) else {
        return "  (the same lines; they differ only in the final newline)".to_string();
    };
    let mut out = format!("  first difference at line {}:\n", first + 1);
    for i in first.saturating_sub(2)..(first + 8).min(old.len().max(new.len())) {
        match (old.get(i), new.get(i)) {
            (Some(a), Some(b)) if a == b => out.push_str(&format!("   {}\n", clip(a))),
            (a, b) => {
                if let Some(a) = a {
                    out.push_str(&format!("  -{}\n", clip(a)));
                }
                if let Some(b) = b {
                    out.push_str(&format!("  +{}\n", clip(b)));
                }
            }
        }
    }
    out.push_str(&format!("  ({} lines expected, {} lines now)", old.len(), new.len()));
    out
}

fn clip(line: &str) -> String {
    if line.chars().count() > 200 {
        format!("{}…", line.chars().take(200).collect::<String>())
    } else {
        line.to_string()
    }
}
