//! `hotframe import` and `hotframe export` as real processes against a real
//! `hotframe serve` on a free loopback port.

use crate::common::{Server, BIN};
use hotframe::model::pprof::{encode, gzip};
use hotframe::model::{ProfileBuilder, ThreadState};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn hotframe(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("HOTFRAME_LOG", "warn")
        .env_remove("HOTFRAME_SERVER")
        .env_remove("HOTFRAME_TOKEN")
        .output()
        .expect("run hotframe")
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stdout.clone()).expect("UTF-8 output")
}

fn folded_map(text: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let (stack, count) = line.rsplit_once(' ').expect("folded line");
        *out.entry(stack.to_string()).or_default() += count.parse::<u64>().expect("count");
    }
    out
}

/// A whole minute an hour ago, Unix seconds.
fn base_s() -> i64 {
    (hotframe::model::time::now_ms() / 1000 - 3600) / 60 * 60
}

#[test]
fn perf_fixture_imports_and_exports_unchanged() {
    let dir = crate::common::tempdir();
    let server = Server::start(dir.path(), &[]);
    let t = base_s();
    let file = fixture("perf-busy.folded");
    let from = t.to_string();
    let said = ok(&hotframe(&[
        "import",
        "--server",
        &server.url,
        "--service",
        "busy",
        "--from",
        &from,
        "--duration",
        "10s",
        "--sample-rate",
        "999",
        "--label",
        "host=h1",
        file.to_str().unwrap(),
    ]));
    let expected = folded_map(&std::fs::read_to_string(&file).unwrap());
    let total: u64 = expected.values().sum();
    assert!(said.contains("folded") && said.contains(&format!("{total} samples")), "{said}");

    let (from, until) = ((t - 60).to_string(), (t + 60).to_string());
    let exported = ok(&hotframe(&[
        "export",
        "--server",
        &server.url,
        "--service",
        "busy",
        "--from",
        &from,
        "--until",
        &until,
        "--format",
        "folded",
    ]));
    assert_eq!(folded_map(&exported), expected);
    // Root first, `;`-separated, a space, the count; sorted like inferno's output.
    assert!(exported.lines().all(|l| l.starts_with("busy;__libc_start_call_main;main;")), "{exported}");

    // The same file from stdin (`-`) under another service.
    let mut child = Command::new(BIN)
        .args(["import", "--server", &server.url, "--service", "piped", "--from", &t.to_string(), "-"])
        .env("HOTFRAME_LOG", "warn")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run hotframe import -");
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), &std::fs::read(&file).unwrap()).unwrap();
    let said = ok(&child.wait_with_output().unwrap());
    assert!(said.contains(&format!("{total} samples")), "{said}");
    let piped =
        ok(&hotframe(&["export", "--server", &server.url, "--service", "piped", "--from", &from, "--until", &until]));
    assert_eq!(folded_map(&piped), expected);

    let filtered = ok(&hotframe(&[
        "export",
        "--server",
        &server.url,
        "--service",
        "busy",
        "--from",
        &from,
        "--until",
        &until,
        "--label",
        "host=h2",
    ]));
    assert_eq!(filtered, "", "a label filter that matches nothing exports nothing");

    let svg = dir.path().join("busy.svg");
    ok(&hotframe(&[
        "export",
        "--server",
        &server.url,
        "--service",
        "busy",
        "--from",
        &from,
        "--until",
        &until,
        "--format",
        "svg",
        "--out",
        svg.to_str().unwrap(),
    ]));
    let svg = std::fs::read_to_string(svg).unwrap();
    assert!(svg.contains("<svg") && svg.contains("hot_inner"));
}

#[test]
fn pprof_file_is_detected_and_keeps_states() {
    let dir = crate::common::tempdir();
    let server = Server::start(dir.path(), &[]);
    let t = base_s() * 1000;
    let mut b = ProfileBuilder::new("ignored", t, t + 10_000, 10_000_000);
    b.add(&["main", "serve", "parse"], ThreadState::Runnable, 40);
    b.add(&["main", "serve", "lock"], ThreadState::Blocked, 9);
    b.add(&["main", "poll"], ThreadState::Waiting, 100);
    let file = dir.path().join("profile.pb.gz");
    std::fs::write(&file, gzip(&encode(&b.finish()))).unwrap();
    let said = ok(&hotframe(&["import", "--server", &server.url, "--service", "api", file.to_str().unwrap()]));
    assert!(said.contains("pprof") && said.contains("149 samples"), "{said}");

    let (from, until) = ((t / 1000 - 60).to_string(), (t / 1000 + 60).to_string());
    let export = |states: &str| {
        ok(&hotframe(&[
            "export",
            "--server",
            &server.url,
            "--service",
            "api",
            "--from",
            &from,
            "--until",
            &until,
            "--states",
            states,
        ]))
    };
    assert_eq!(export("cpu"), "main;serve;parse 40\n");
    assert_eq!(export("RUNNABLE,BLOCKED"), "main;serve;lock 9\nmain;serve;parse 40\n");
    assert_eq!(folded_map(&export("all")).values().sum::<u64>(), 149);
}

#[test]
fn errors_are_readable_and_tokens_are_sent() {
    let dir = crate::common::tempdir();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, "# test tokens\ncli-ingest-0001 ingest\ncli-read-00002 read\n").unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, &["--token-file", tokens.to_str().unwrap()]);
    let file = fixture("perf-busy.folded");
    let file = file.to_str().unwrap();

    let refused = hotframe(&["import", "--server", &server.url, "--service", "s", file]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("401") && stderr.contains("token"), "{stderr}");

    ok(&hotframe(&["import", "--server", &server.url, "--service", "s", "--token", "cli-ingest-0001", file]));
    let wrong_scope = hotframe(&["export", "--server", &server.url, "--service", "s", "--token", "cli-ingest-0001"]);
    assert!(String::from_utf8_lossy(&wrong_scope.stderr).contains("403"));
    let exported = ok(&hotframe(&[
        "export",
        "--server",
        &server.url,
        "--service",
        "s",
        "--token",
        "cli-read-00002",
        "--from",
        "now-1h",
    ]));
    assert_eq!(folded_map(&exported).values().sum::<u64>(), 675);

    let unknown = hotframe(&["export", "--server", &server.url, "--service", "nosuch", "--token", "cli-read-00002"]);
    let stderr = String::from_utf8_lossy(&unknown.stderr);
    assert!(!unknown.status.success() && stderr.contains("404") && stderr.contains("nosuch"), "{stderr}");

    let bad_time = hotframe(&["export", "--server", &server.url, "--service", "s", "--from", "yesterday"]);
    assert!(String::from_utf8_lossy(&bad_time.stderr).contains("invalid time \"yesterday\""));

    let bad = dir.path().join("bad.folded");
    std::fs::write(&bad, "main;a 1\nmain;b lots\n").unwrap();
    let bad_file = hotframe(&[
        "import",
        "--server",
        &server.url,
        "--service",
        "s",
        "--token",
        "cli-ingest-0001",
        bad.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&bad_file.stderr);
    assert!(stderr.contains("line 2"), "{stderr}");

    let missing = hotframe(&["import", "--server", &server.url, "--service", "s", "/nonexistent/file"]);
    assert!(String::from_utf8_lossy(&missing.stderr).contains("cannot read /nonexistent/file"));

    let down = hotframe(&["export", "--server", "http://127.0.0.1:9", "--service", "s"]);
    assert!(String::from_utf8_lossy(&down.stderr).contains("cannot reach"));
}

/// Every client command checks `--server` the same way before any traffic, and the error
/// chain names each cause once (issue 18, item 2).
#[test]
fn server_url_mistakes_read_the_same_in_every_command_and_causes_are_not_repeated() {
    let dir = crate::common::tempdir();
    let file = fixture("perf-busy.folded");
    let file = file.to_str().unwrap();
    let spool = dir.path().join("spool");
    let spool = spool.to_str().unwrap();
    let commands: [&[&str]; 5] = [
        &["export", "--service", "s"],
        &["import", "--service", "s", file],
        &["win", "--service", "s", "--before", "now-2h..now-1h", "--after", "now-1h..now", "--title", "t"],
        &["scrape", "--service", "s", "--target", "http://127.0.0.1:9/debug/pprof/profile", "--duration", "1s"],
        &["agent", "--service", "s", "--pid", "1", "--spool-dir", spool],
    ];
    for args in commands {
        let mut argv = args.to_vec();
        argv.extend_from_slice(&["--server", "127.0.0.1:4040"]);
        let out = hotframe(&argv);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}: {stderr}");
        assert_eq!(
            stderr.trim(),
            "error: invalid --server \"127.0.0.1:4040\": no scheme; use an http:// base URL such as \
             http://127.0.0.1:4040 (no TLS: put a TLS proxy in front if needed)",
            "{args:?}"
        );
    }

    let down = hotframe(&["export", "--server", "http://127.0.0.1:9", "--service", "s"]);
    let stderr = String::from_utf8_lossy(&down.stderr);
    assert!(stderr.contains("cannot reach http://127.0.0.1:9/api/v1/export"), "{stderr}");
    assert_eq!(stderr.matches("Connection refused").count(), 1, "{stderr}");
}

/// `hotframe demo` without the privileges to sample says so before it starts anything or
/// prints its "demo is running" banner (issue 18, item 3).
#[test]
fn demo_without_privileges_fails_before_its_banner() {
    let mut command = if crate::common::is_root() {
        // As nobody, whose capabilities setpriv drops with the uid change.
        let setpriv = Command::new("setpriv").arg("--version").output().is_ok_and(|o| o.status.success());
        if !crate::common::require("setpriv (util-linux)", setpriv, "install util-linux to run the demo as nobody") {
            return;
        }
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", BIN]);
        c
    } else {
        Command::new(BIN)
    };
    let out = command
        .args(["demo", "--listen", "127.0.0.1:0", "--duration", "5s"])
        .env("HOTFRAME_LOG", "warn")
        .output()
        .expect("run hotframe demo");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains("CAP_PERFMON") && stderr.contains("setcap"), "{stderr}");
    assert!(!stdout.contains("demo is running") && !stdout.contains("Open http"), "{stdout}");
}

/// `hotframe serve` on a port in use fails before it creates the data directory or
/// migrates a store there (issue 18, item 4).
#[test]
fn serve_on_a_port_in_use_leaves_no_data_directory() {
    let dir = crate::common::tempdir();
    let data = dir.path().join("data");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    let addr = taken.local_addr().expect("local addr").to_string();
    let out = hotframe(&["serve", "--listen", &addr, "--data", data.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains(&addr) && stderr.contains("in use"), "{stderr}");
    assert!(!data.exists(), "serve created {} before failing to bind", data.display());
}
