//! Browser benchmark of the web viewer's flame graph: the real `hotframe serve` holding a
//! profile of 50,000 distinct call-tree nodes, opened in headless Chromium; the page's
//! own code is timed in the page (tests/browser/flame_bench.js) and medians reported.
//!
//! Run: `cargo bench --bench flame_browser` (needs Debian's chromium and chromium-driver).
//! Goal: under 100 ms per frame of interaction (render, zoom, click -> next frame).

#[path = "../tests/it/common.rs"]
mod common;
#[path = "../tests/browser/harness.rs"]
mod harness;

use harness::{Browser, Server};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

const NODES: usize = 50_000;
const BENCH_JS: &str = include_str!("../tests/browser/flame_bench.js");

/// Folded stacks whose call tree has exactly `target` nodes below the root (wide near the
/// root, deep in places, skewed weights like a real service).
fn big_profile(target: usize) -> String {
    let mut rng = fastrand::Rng::with_seed(42);
    let mut prefixes: HashSet<String> = HashSet::new();
    let mut out = String::new();
    while prefixes.len() < target {
        let depth = 3 + rng.usize(0..14);
        let mut stack = String::from("main");
        let mut new_nodes = Vec::new();
        if !prefixes.contains(&stack) {
            new_nodes.push(stack.clone());
        }
        for level in 1..depth {
            // Few choices near the root, many deeper: a realistic fan-out.
            let fan = [6, 8, 10, 12, 14, 16, 20][level.min(6)];
            let pick = (rng.f64().powi(2) * fan as f64) as usize;
            stack.push_str(&format!(";mod{level}::fn{pick}"));
            if !prefixes.contains(&stack) {
                new_nodes.push(stack.clone());
            }
        }
        if prefixes.len() + new_nodes.len() > target {
            continue;
        }
        prefixes.extend(new_nodes);
        let count = 1 + (rng.f64().powi(3) * 400.0) as u64;
        out.push_str(&format!("{stack} {count}\n"));
    }
    out
}

fn ms(v: &Value) -> String {
    format!(
        "median {:>7.2} ms  p90 {:>7.2} ms  max {:>7.2} ms  (n={})",
        v["median"].as_f64().unwrap_or(f64::NAN),
        v["p90"].as_f64().unwrap_or(f64::NAN),
        v["max"].as_f64().unwrap_or(f64::NAN),
        v["n"]
    )
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    xs[xs.len() / 2]
}

fn main() {
    // `cargo test` runs benches once in test mode with `--test`; nothing to do then.
    if std::env::args().any(|a| a == "--test" || a == "--list") {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(&dir.path().join("data"), &[]);
    let folded = big_profile(NODES);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs();
    server.ingest_folded("big.cpu{host=a}", &folded, now - 600, now - 590, None);
    let (from, until) = ((now - 900) * 1000, (now + 60) * 1000);
    let url = format!("{}/service/big?from={from}&until={until}&maxNodes=60000", server.url);
    let browser = Browser::start(1600, 1000);

    // Page load to a drawn graph: fetch, JSON parse, flatten, first render.
    let mut loads = Vec::new();
    for _ in 0..5 {
        browser.goto(&format!("{}/", server.url));
        browser.wait_idle();
        let t0 = Instant::now();
        browser.goto(&url);
        browser.wait_for("the big flame graph", "window.hotframe.idle && window.hotframe.page && window.hotframe.page.flame && window.hotframe.page.flame.drawn.length > 0");
        loads.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| browser.eval_async(BENCH_JS, json!([25]))));
    let result = run.unwrap_or_else(|_| {
        let progress = browser.eval("return window.hotframe.benchProgress;", json!([]));
        panic!("the in-page benchmark did not finish; measured so far: {progress}")
    });
    if let Some(err) = result.get("error") {
        panic!("the in-page benchmark failed: {err}");
    }
    println!(
        "flame_browser: {} nodes (max depth {}) in headless Chromium, 1600x1000",
        result["nodes"], result["maxDepth"]
    );
    println!("  page load -> drawn     median {:>7.2} ms  (n=5; fetch + parse + flatten + draw)", median(loads));
    println!(
        "    of which the API call {:>7.2} ms  ({} bytes of JSON; the server's share, debug or release as built)",
        result["fetch"]["ms"].as_f64().unwrap_or(f64::NAN),
        result["fetch"]["bytes"]
    );
    println!("  flatten JSON tree      {}", ms(&result["flatten"]));
    println!("  full redraw            {}  ({} boxes drawn)", ms(&result["render"]), result["boxesDrawn"]);
    println!("  zoom (sync redraw)     {}", ms(&result["zoom"]));
    println!("  zoom -> next frame     {}", ms(&result["zoomToNextFrame"]));
    println!("  click -> URL -> frame  {}", ms(&result["clickToFrame"]));
    println!("    of which page update {}", ms(&result["clickWork"]));
    println!("  hover (hit + tooltip)  {}", ms(&result["hover"]));
    println!("  search + highlight     {}", ms(&result["search"]));
    let worst = ["render", "zoomToNextFrame", "clickToFrame"]
        .iter()
        .map(|k| result[k]["median"].as_f64().unwrap_or(f64::INFINITY))
        .fold(0.0, f64::max);
    println!(
        "  goal < 100 ms per interaction frame: {} (worst median {worst:.2} ms)",
        if worst < 100.0 { "met" } else { "NOT met" }
    );
}
