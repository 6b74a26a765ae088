//! Pull mode end to end: `hotframe scrape` (real binary) fetches the checkout example's
//! pprof-rs `/debug/pprof/profile` endpoint, named in a `[[scrape]]` table of a config
//! file that also holds server settings, and forwards to a real `hotframe serve`.

use crate::common::{get_json, tempdir, ChildGuard, Server, BIN};
use crate::inproc::{checkout_service, drive_until_hot};
use std::process::{Command, Stdio};
use std::time::Duration;

#[test]
fn scrape_pulls_pprof_from_the_example_into_the_server() {
    let data = tempdir();
    let serve = Server::start(data.path(), &[]);
    let server = serve.url.as_str();
    let (_service, service_url) = checkout_service(None);
    // pprof-rs resolves its first backtrace of this large debug binary before profiling
    // (seconds): warm it so the scraped windows overlap the load below.
    let (status, warm) = crate::common::get_bytes(&format!("{service_url}/debug/pprof/profile?seconds=1"));
    assert!(status == 200 && !warm.is_empty(), "{status}");
    let config = data.path().join("hotframe.toml");
    std::fs::write(
        &config,
        format!(
            "maintenance_interval = \"5m\"\n\n[[scrape]]\ntarget = \"{service_url}/debug/pprof/profile\"\nservice = \"scraped\"\ninterval = \"2s\"\nlabels = {{ region = \"eu\" }}\n\n[[scrape]]\ntarget = \"http://127.0.0.1:9/debug/pprof/profile\"\nservice = \"down\"\ninterval = \"2s\"\n"
        ),
    )
    .unwrap();
    let mut scraper = ChildGuard::spawn(
        Command::new(BIN)
            .args(["scrape", "--server", server, "--duration", "60s", "--config"])
            .arg(&config)
            .env("HOTFRAME_LOG", "warn")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    );
    let scraping_since = std::time::Instant::now();
    drive_until_hot(&service_url, server, "scraped", "validate_coupon", 10);
    let services = get_json(&format!("{server}/api/v1/services"));
    let scraped = services["services"].as_array().unwrap().iter().find(|s| s["name"] == "scraped").unwrap().clone();
    assert_eq!(scraped["labels"]["region"][0], "eu");
    let instance = service_url.trim_start_matches("http://");
    assert_eq!(scraped["labels"]["instance"][0], instance);
    // SIGTERM ends it with a flush and exit 0 (a fetch in flight is waited for).
    let status = scraper.terminate(Duration::from_secs(30));
    assert!(status.success(), "scrape exited with {status}");
    // The target that refuses connections did not stop the other one, was retried,
    // and was not hammered: full-jitter backoff up to the 2 s interval between tries.
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut scraper.0.stderr.take().unwrap(), &mut stderr).unwrap();
    let failures = stderr.lines().filter(|l| l.contains("127.0.0.1:9/debug/pprof/profile?seconds=2")).count() as u64;
    let elapsed = scraping_since.elapsed().as_secs();
    eprintln!("scrape: {failures} failed fetches of the down target in {elapsed} s");
    assert!(failures >= 2, "the down target was not retried:\n{stderr}");
    assert!(failures <= 2 * elapsed + 5, "{failures} failed fetches in {elapsed} s: no backoff?\n{stderr}");

    // The server's own config loader accepts the file with its [[scrape]] tables: it
    // starts (prints `listening on URL`) and answers.
    let check = Server::start(&data.path().join("other"), &["--config", config.to_str().unwrap()]);
    assert!(check.url.starts_with("http://127.0.0.1:"), "serve with [[scrape]] listens at {}", check.url);
}

#[test]
fn scrape_without_targets_or_with_a_bad_one_says_what_to_do() {
    let run = |args: &[&str]| {
        let out = Command::new(BIN).arg("scrape").args(args).output().unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    assert!(run(&[]).contains("pass --target URL --service NAME"));
    assert!(run(&["--target", "https://x/debug/pprof/profile", "--service", "a"]).contains("no TLS"));
    assert!(run(&["--target", "http://x/debug/pprof/profile"]).contains("needs --service"));
}
