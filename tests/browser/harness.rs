//! Browser test harness shared by `tests/it/browser.rs`, `tests/it/wins.rs` and
//! `benches/flame_browser.rs`: headless Debian Chromium driven over the W3C WebDriver
//! protocol by `/usr/bin/chromedriver`, next to the `Server` of `tests/it/common.rs`
//! (re-exported here), which its includer must declare as the sibling module `common`.
//!
//! In: window sizes, URLs, scripts. Out: a `Browser` that runs scripts, moves and clicks
//! the real mouse, types, and takes screenshots; the viewer's number formats.
//! Must not: leave processes behind (chromedriver is killed on drop) or wait without a bound.
//!
//! The WebDriver client is a few HTTP calls over `ureq` (already a dependency), so the
//! tests need no extra crate.

#![allow(dead_code)]

use super::common::{eventually, free_port, http, poll};
use serde_json::{json, Value};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub use super::common::Server;

/// Where Debian's packages put the browser and its driver (`.ci/run` installs them).
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// Debian's chromedriver.
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// Headless Chromium under chromedriver, with a fresh profile; both end on drop.
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    agent: ureq::Agent,
    _profile: tempfile::TempDir,
}

const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

impl Browser {
    /// Starts chromedriver and a headless Chromium window of `width` x `height`.
    pub fn start(width: u32, height: u32) -> Browser {
        for path in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                Path::new(path).exists(),
                "{path} is missing: install Debian's browser for the viewer tests with \
                 `apt-get install -y chromium chromium-driver` (as .ci/run does)"
            );
        }
        let port = free_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let profile = tempfile::tempdir().expect("browser profile dir");
        let agent = http();
        let base = format!("http://127.0.0.1:{port}");
        let mut browser = Browser { driver, base, session: String::new(), agent, _profile: profile };
        let status_url = format!("{}/status", browser.base);
        let agent = browser.agent.clone();
        eventually("chromedriver to start", Duration::from_secs(20), || {
            agent.get(&status_url).call().is_ok_and(|r| r.status().as_u16() == 200)
        });
        let args = vec![
            "--headless=new".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--disable-background-networking".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-sync".into(),
            "--disable-component-update".into(),
            "--disable-extensions".into(),
            "--hide-scrollbars".into(),
            "--force-device-scale-factor=1".into(),
            format!("--window-size={width},{height}"),
            format!("--user-data-dir={}", browser._profile.path().display()),
        ];
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args,
                // Exports land in the throwaway profile, not in the user's Downloads.
                "prefs": {"download.default_directory": browser._profile.path().join("downloads"),
                          "download.prompt_for_download": false}},
            "timeouts": {"script": 60000, "pageLoad": 60000}
        }}});
        let answer = browser.call("POST", "/session", Some(caps));
        browser.session = answer["sessionId"].as_str().expect("session id").to_string();
        browser
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = if path == "/session" {
            format!("{}/session", self.base)
        } else {
            format!("{}/session/{}{path}", self.base, self.session)
        };
        let response = match method {
            "GET" => self.agent.get(&url).call(),
            "DELETE" => self.agent.delete(&url).call(),
            _ => self
                .agent
                .post(&url)
                .header("Content-Type", "application/json")
                .send(body.unwrap_or_else(|| json!({})).to_string()),
        };
        let mut response = response.unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"));
        let status = response.status().as_u16();
        let text = response.body_mut().with_config().limit(64 << 20).read_to_string().expect("WebDriver answer");
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        assert!(status == 200, "WebDriver {method} {path} answered {status}: {}", &text[..text.len().min(2000)]);
        value["value"].clone()
    }

    /// Opens `url` and waits for the page's load event.
    pub fn goto(&self, url: &str) {
        self.call("POST", "/url", Some(json!({ "url": url })));
    }

    /// The address bar.
    pub fn url(&self) -> String {
        self.call("GET", "/url", None).as_str().unwrap_or_default().to_string()
    }

    /// Runs `script` (a function body; `arguments[i]` are `args`) and returns its value.
    pub fn eval(&self, script: &str, args: Value) -> Value {
        self.call("POST", "/execute/sync", Some(json!({ "script": script, "args": args })))
    }

    /// Runs an async script: its last argument is the callback to call with the result.
    pub fn eval_async(&self, script: &str, args: Value) -> Value {
        self.call("POST", "/execute/async", Some(json!({ "script": script, "args": args })))
    }

    /// Waits until `expression` (JS) is truthy, and returns its value.
    pub fn wait_for(&self, what: &str, expression: &str) -> Value {
        let script = format!("try {{ return ({expression}) || null; }} catch (e) {{ return null; }}");
        let truthy = || Some(self.eval(&script, json!([]))).filter(|v| !v.is_null() && *v != Value::Bool(false));
        poll(Duration::from_secs(30), truthy).unwrap_or_else(|_| {
            let error = self.eval("return window.hotframe && window.hotframe.error", json!([]));
            panic!("timed out waiting for {what} ({expression}); page error: {error}; url {}", self.url());
        })
    }

    /// Waits for the viewer to finish its current navigation (data loaded, drawn).
    pub fn wait_idle(&self) {
        self.wait_for("the viewer to be idle", "window.hotframe && window.hotframe.idle");
    }

    fn pointer(&self, actions: Vec<Value>) {
        let body = json!({"actions": [{"type": "pointer", "id": "mouse", "parameters": {"pointerType": "mouse"}, "actions": actions}]});
        self.call("POST", "/actions", Some(body));
    }

    /// Moves the real mouse to (x, y) in viewport CSS pixels.
    pub fn hover(&self, x: f64, y: f64) {
        self.pointer(vec![json!({"type": "pointerMove", "duration": 0, "x": x.round() as i64, "y": y.round() as i64, "origin": "viewport"})]);
    }

    /// A real left click at (x, y) in viewport CSS pixels.
    pub fn click_at(&self, x: f64, y: f64) {
        self.pointer(vec![
            json!({"type": "pointerMove", "duration": 0, "x": x.round() as i64, "y": y.round() as i64, "origin": "viewport"}),
            json!({"type": "pointerDown", "button": 0}),
            json!({"type": "pointerUp", "button": 0}),
        ]);
    }

    /// A real drag with the left button from (x1, y1) to (x2, y2), viewport CSS pixels.
    pub fn drag(&self, (x1, y1): (f64, f64), (x2, y2): (f64, f64)) {
        let at = |x: f64, y: f64, ms: u64| json!({"type": "pointerMove", "duration": ms, "x": x.round() as i64, "y": y.round() as i64, "origin": "viewport"});
        self.pointer(vec![
            at(x1, y1, 0),
            json!({"type": "pointerDown", "button": 0}),
            at((x1 + x2) / 2.0, (y1 + y2) / 2.0, 50),
            at(x2, y2, 50),
            json!({"type": "pointerUp", "button": 0}),
        ]);
    }

    fn element(&self, css: &str) -> String {
        let found = self.call("POST", "/element", Some(json!({"using": "css selector", "value": css})));
        found[ELEMENT_KEY].as_str().unwrap_or_else(|| panic!("no element {css}")).to_string()
    }

    /// Clicks the element matching `css`.
    pub fn click(&self, css: &str) {
        let id = self.element(css);
        self.call("POST", &format!("/element/{id}/click"), None);
    }

    /// Types `text` into the element matching `css`.
    pub fn type_into(&self, css: &str, text: &str) {
        let id = self.element(css);
        self.call("POST", &format!("/element/{id}/value"), Some(json!({ "text": text })));
    }

    /// Clears the input matching `css`.
    pub fn clear(&self, css: &str) {
        let id = self.element(css);
        self.call("POST", &format!("/element/{id}/clear"), None);
    }

    /// A PNG of the viewport.
    pub fn screenshot(&self) -> Vec<u8> {
        let b64 = self.call("GET", "/screenshot", None);
        base64_decode(b64.as_str().expect("screenshot base64"))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.agent.delete(format!("{}/session/{}", self.base, self.session)).call();
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Standard base64 (WebDriver screenshots), without a crate for one call.
pub fn base64_decode(text: &str) -> Vec<u8> {
    fn value(c: u8) -> Option<u32> {
        match c {
            b'A'..=b'Z' => Some(u32::from(c - b'A')),
            b'a'..=b'z' => Some(u32::from(c - b'a') + 26),
            b'0'..=b'9' => Some(u32::from(c - b'0') + 52),
            b'+' => Some(62),
            b'/' => Some(63),
            _ => None,
        }
    }
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for v in text.bytes().filter_map(value) {
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

/// The viewer's money format (web/format.js `usd`): "$315,883" from 100 up, "$12.34" below.
pub fn usd(x: f64) -> String {
    let a = x.abs();
    let text = if a >= 100.0 { thousands(a.round() as u64) } else { format!("{a:.2}") };
    format!("{}${text}", if x < 0.0 { "−" } else { "" })
}

/// The viewer's share format (web/format.js `pct`).
pub fn pct(share: f64) -> String {
    let p = share * 100.0;
    let a = p.abs();
    if a >= 10.0 {
        format!("{}%", p.round())
    } else if a >= 1.0 {
        format!("{p:.1}%")
    } else {
        format!("{p:.2}%")
    }
}

/// Whole numbers with thousands separators (web/format.js `count`).
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (k, c) in digits.chars().enumerate() {
        if k > 0 && (digits.len() - k) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The node at `path` (names below the root) in an API flame graph answer.
pub fn node_at<'a>(flame: &'a Value, path: &[&str]) -> &'a Value {
    let mut node = &flame["root"];
    for name in path {
        node = node["children"]
            .as_array()
            .and_then(|kids| kids.iter().find(|k| k["name"] == *name))
            .unwrap_or_else(|| panic!("no frame {name} under {} in the API answer", node["name"]));
    }
    node
}
