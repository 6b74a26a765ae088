//! The web viewer in a real browser: headless Debian Chromium (over chromedriver) against
//! the real `hotframe serve` binary holding profiles ingested over HTTP. Every figure the
//! page shows is compared with what the JSON API computed for the same range.

use crate::common::http;
use crate::harness::{self, node_at, pct, usd, Browser, Server};
use hotframe::model::{ProfileBuilder, ThreadState};
use serde_json::{json, Value};
use std::time::{SystemTime, UNIX_EPOCH};

/// A checkout service profile: `parse_json` is the hot frame; `regressed` doubles its
/// JSON work (version 1.5) and halves the rendering.
fn checkout_profile(regressed: bool, seed: u64) -> String {
    let mut rng = fastrand::Rng::with_seed(seed);
    let json = if regressed { 6000 } else { 3000 };
    let render = if regressed { 450 } else { 900 };
    let mut out = format!(
        "main;server::run;handler::checkout;parse_json;serde_json::de::from_str {json}\n\
         main;server::run;handler::checkout;db::query;postgres::Client::query 1200\n\
         main;server::run;handler::checkout;render;template::render_html {render}\n\
         main;server::run;handler::health 150\n\
         main;gc::collect;gc::mark 400\n"
    );
    for i in 0..80 {
        out.push_str(&format!(
            "main;server::run;handler::checkout;misc::step{i};misc::leaf{} {}\n",
            i % 9,
            5 + rng.u32(0..40)
        ));
    }
    out
}

fn now_s() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs()
}

/// Off-CPU stacks of host `c`, whose agent samples every thread state.
const OFF_CPU: [(&str, ThreadState, u64); 4] = [
    ("main;server::run;handler::checkout;cache::lock;mutex_lock", ThreadState::Blocked, 900),
    ("main;server::run;handler::checkout;db::query;socket_read", ThreadState::Io, 500),
    ("main;scheduler::tick;nanosleep", ThreadState::TimedWaiting, 700),
    ("main;worker::idle;futex_wait", ThreadState::Waiting, 4000),
];

/// Host `c`'s profile as the native agent sends it: pprof with `thread_state` labels.
fn ingest_with_states(server: &Server, folded: &str, version: &str, from: u64, token: Option<&str>) {
    let mut builder = ProfileBuilder::new("checkout", (from * 1000) as i64, ((from + 60) * 1000) as i64, 10_000_000);
    for line in folded.lines() {
        let (stack, count) = line.rsplit_once(' ').expect("folded line");
        let frames: Vec<&str> = stack.split(';').collect();
        builder.add(&frames, ThreadState::Runnable, count.parse().expect("count"));
    }
    for (stack, state, count) in OFF_CPU {
        builder.add(&stack.split(';').collect::<Vec<_>>(), state, count);
    }
    let body = hotframe::model::pprof::encode(&builder.finish());
    let mut request = http()
        .post(format!("{}/api/v1/profiles", server.url))
        .query("service", "checkout")
        .query("label.host", "c")
        .query("label.version", version)
        .header("Content-Type", "application/octet-stream");
    if let Some(token) = token {
        request = request.header("Authorization", format!("Bearer {token}"));
    }
    let mut response = request.send(&body[..]).expect("POST /api/v1/profiles");
    let status = response.status().as_u16();
    assert_eq!(status, 200, "native ingest: {}", response.body_mut().read_to_string().unwrap_or_default());
}

/// Ingests one 60-second profile per host and minute over the last 40 minutes: version
/// 1.4, then 1.5 from minute 20. Hosts `a` and `b` send folded text (on-CPU only) to the
/// Pyroscope endpoint; host `c` sends pprof with thread states.
fn load(server: &Server, token: Option<&str>) -> (u64, u64) {
    let now = now_s();
    let first = now - 40 * 60;
    for k in 0..40u64 {
        let from = first + k * 60;
        let regressed = k >= 20;
        let version = if regressed { "1.5" } else { "1.4" };
        for host in ["a", "b"] {
            let name = format!("checkout.cpu{{host={host},version={version}}}");
            server.ingest_folded(
                &name,
                &checkout_profile(regressed, k * 7 + host.len() as u64),
                from,
                from + 60,
                token,
            );
        }
        ingest_with_states(server, &checkout_profile(regressed, k * 7 + 3), version, from, token);
    }
    // Range of the page, in ms: every profile, with a margin either side.
    server.ingest_folded(
        "checkout.alloc_objects{host=a,version=1.5}",
        "main;alloc::buffer 500\n",
        now - 300,
        now - 290,
        token,
    );
    server.ingest_folded(
        "search.cpu{host=a}",
        "main;search::query;index::lookup 300\nmain;search::rank 100\n",
        now - 300,
        now - 290,
        token,
    );
    ((first - 120) * 1000, (now + 120) * 1000)
}

/// The script arguments naming a frame: which graph of the page, and the frame's path.
fn js_box(graph: &str, path: &str) -> Value {
    json!([graph, path])
}

/// The on-screen box of the frame at `path` in `graph` ("flame" or "diffFlame").
const BOX: &str = "const f = window.hotframe.page[arguments[0]]; if (!f || !f.tree) return null;
  const t = f.tree; const i = t.find(arguments[1]); if (t.path(i) !== arguments[1]) return null;
  const b = f.box(i); if (!b) return null; const r = f.canvas.getBoundingClientRect();
  return {x: r.left + b.x, y: r.top + b.y, w: b.w, h: b.h, width: r.width, cx: r.left + b.x + Math.min(b.w / 2, 60), cy: r.top + b.y + b.h / 2};";

/// The colour drawn at the top-left corner inside the box of `path` (away from its text).
const PIXEL: &str = "const f = window.hotframe.page[arguments[0]]; const t = f.tree; const i = t.find(arguments[1]);
  const b = f.box(i); const dpr = window.devicePixelRatio || 1;
  const d = f.canvas.getContext('2d').getImageData(Math.floor((b.x + 1) * dpr), Math.floor((b.y + 1) * dpr), 1, 1).data;
  return [d[0], d[1], d[2]];";

fn frame_box(browser: &Browser, graph: &str, path: &str) -> Value {
    let expression = format!("(function() {{ {BOX} }}).apply(null, {})", js_box(graph, path));
    browser.wait_for(&format!("frame {path} drawn in {graph}"), &expression)
}

fn pixel(browser: &Browser, graph: &str, path: &str) -> [u8; 3] {
    let v = browser.eval(PIXEL, js_box(graph, path));
    let c: Vec<u8> = v.as_array().expect("rgb").iter().map(|x| x.as_u64().unwrap_or(0) as u8).collect();
    [c[0], c[1], c[2]]
}

fn text(browser: &Browser, css: &str) -> String {
    browser
        .eval("const e = document.querySelector(arguments[0]); return e ? e.textContent : null;", json!([css]))
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn location_has(browser: &Browser, needle: &str) -> bool {
    browser.eval("return decodeURIComponent(location.search).includes(arguments[0]);", json!([needle])) == json!(true)
}

fn total(node: &Value) -> f64 {
    node["total"].as_f64().unwrap_or(0.0)
}

/// Samples under frames whose name contains `needle`, each stack counted once.
fn matched(node: &Value, needle: &str) -> f64 {
    if node["name"].as_str().unwrap_or_default().contains(needle) {
        return total(node);
    }
    node["children"].as_array().map(|k| k.iter().map(|c| matched(c, needle)).sum()).unwrap_or(0.0)
}

fn no_js_errors(browser: &Browser) {
    let errors = browser.eval("return window.hotframe.jsErrors || [];", json!([]));
    assert_eq!(errors, json!([]), "the page threw");
}

const PARSE: &str = "main;server::run;handler::checkout;parse_json";
const PARSE_PATH: [&str; 4] = ["main", "server::run", "handler::checkout", "parse_json"];

/// A real server on a free port holding `load`'s profiles, and a browser.
struct Fixture {
    dir: tempfile::TempDir,
    port: u16,
    server: Server,
    browser: Browser,
    /// The page range (ms) covering every profile.
    from: u64,
    until: u64,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(&dir.path().join("data"), &[]);
    let port = server.port;
    let (from, until) = load(&server, None);
    let browser = Browser::start(1400, 1000);
    Fixture { dir, port, server, browser, from, until }
}

/// Start page, flame graph, annotations, tooltip, search, tables, sandwich, export,
/// pruning, timeline brush, zoom and the URL round trip: each figure against the API.
#[test]
fn viewer_in_chromium_against_the_real_server() {
    let Fixture { dir: _dir, port: _, server, browser, from, until } = fixture();
    let base = server.url.clone();

    // Start page: the service, with the $/year the API computed for "now".
    browser.goto(&format!("{base}/"));
    browser.wait_for("the service row", "document.querySelector('tr[data-service=\"checkout\"]')");
    let services = server.get_json("/api/v1/services");
    let checkout = services["services"]
        .as_array()
        .expect("services")
        .iter()
        .find(|s| s["name"] == "checkout")
        .expect("checkout listed");
    let now_usd = checkout["now"]["usdPerYear"].as_f64().expect("now.usdPerYear");
    let row = text(&browser, "tr[data-service=\"checkout\"]");
    assert!(row.contains(&usd(now_usd)), "start page row {row:?} lacks {}", usd(now_usd));
    assert!(
        browser
            .eval("return !!document.querySelector('tr[data-service=\"checkout\"] svg.sparkline polyline')", json!([]))
            == json!(true)
    );
    browser.type_into("#service-search", "chec");
    browser.wait_for("the search to filter", "document.querySelectorAll('tr.service-row').length === 1");
    assert!(location_has(&browser, "q=chec"));
    assert_eq!(text(&browser, "tr.service-row .service-link"), "checkout");

    // Service page: the flame graph is drawn, annotated with the API's $/year.
    let query = format!("from={from}&until={until}");
    browser.goto(&format!("{base}/service/checkout?{query}"));
    browser.wait_idle();
    let api = server.get_json(&format!("/api/v1/flamegraph?service=checkout&{query}&states=RUNNABLE&maxNodes=10000"));
    let parse = node_at(&api, &PARSE_PATH);
    let parse_usd = parse["usdPerYear"].as_f64().expect("usdPerYear");
    let share = total(parse) / total(&api["root"]);
    let parse_box = frame_box(&browser, "flame", PARSE);
    let drawn = pixel(&browser, "flame", PARSE);
    assert!(drawn != [255, 255, 255], "parse_json box is blank");
    let expected_note = format!("parse_json — {} — {} / year", pct(share), usd(parse_usd));
    let labels = browser.eval("return window.hotframe.page.flame.labels.map((l) => l.text);", json!([]));
    assert!(
        labels.as_array().expect("labels").iter().any(|l| l == &json!(expected_note)),
        "no annotation {expected_note:?} among {labels}"
    );
    let small =
        labels.as_array().unwrap().iter().any(|l| l.as_str().unwrap_or_default().starts_with("handler::health"));
    assert!(!small, "a frame under the 5% threshold was annotated: {labels}");
    // The threshold is the user's: off (no cost labels), then 20% (parse_json, ~51%, has one).
    browser.click("#annot option[value='101']");
    browser.wait_for("no annotations", "window.hotframe.page.flame.labels.length === 0");
    browser.click("#annot option[value='20']");
    browser.wait_for(
        "the 20% threshold",
        "window.hotframe.page.flame.labels.some((l) => l.text.startsWith('parse_json — '))",
    );
    assert!(location_has(&browser, "annot=20"));
    browser.click("#annot option[value='5']");
    browser.wait_for("the default threshold", "!location.search.includes('annot=')");

    // The service's $/year explains itself on hover, with the API's numbers.
    let el = browser.eval("const r = document.getElementById('total-usd').getBoundingClientRect(); return [r.left + r.width / 2, r.top + r.height / 2];", json!([]));
    browser.hover(el[0].as_f64().unwrap(), el[1].as_f64().unwrap());
    browser.wait_for("the $ explanation", "!document.getElementById('tooltip').hidden");
    let why = text(&browser, "#tooltip");
    let cost = &api["cost"];
    for needle in [
        usd(api["totals"]["usdPerYear"].as_f64().unwrap()),
        format!("× 8,760 h × ${}/core-hour", cost["pricePerCoreHour"].as_f64().unwrap()),
        format!("/ {} s ×", harness::thousands(cost["windowSeconds"].as_f64().unwrap() as u64)),
    ] {
        assert!(why.contains(&needle), "explanation {why:?} lacks {needle:?}");
    }

    // Tooltip under the real mouse: full name, $/year, CO2 and the formula.
    browser.hover(parse_box["cx"].as_f64().unwrap(), parse_box["cy"].as_f64().unwrap());
    browser.wait_for("the tooltip", "!document.getElementById('tooltip').hidden");
    let tip = text(&browser, "#tooltip");
    for needle in ["parse_json", &usd(parse_usd), "CO2", "cores = (S / F) / W × (H / Hp)", "RUNNABLE 100%"] {
        assert!(tip.contains(needle), "tooltip {tip:?} lacks {needle:?}");
    }

    // Search: matched frames in the highlight colour, others dimmed, the share shown.
    browser.hover(5.0, 5.0);
    browser.type_into("#flame-search", "postgres");
    browser.wait_for("the search in the URL", "location.search.includes('q=postgres')");
    let expected_share = pct(matched(&api["root"], "postgres") / total(&api["root"]));
    let line = browser.wait_for("the matched share", "document.getElementById('match-share').textContent");
    assert!(line.as_str().unwrap().contains(&expected_share), "match line {line} lacks {expected_share}");
    let pg = "main;server::run;handler::checkout;db::query;postgres::Client::query";
    assert_eq!(pixel(&browser, "flame", pg), [214, 51, 132], "postgres frame not highlighted");
    assert_eq!(pixel(&browser, "flame", PARSE), [227, 229, 232], "non-matching frame not dimmed");

    // Another profile type from a Pyroscope SDK: picked from the page, kept in the URL.
    browser.goto(&format!("{base}/service/checkout?{query}"));
    browser.wait_idle();
    browser.click("#profile-type option[value=alloc_objects]");
    browser.wait_for(
        "the alloc profile",
        "location.search.includes('type=alloc_objects') && window.hotframe.idle && window.hotframe.page.flame",
    );
    let alloc = browser
        .eval("const t = window.hotframe.page.flame.tree; return t.path(t.find('main;alloc::buffer'));", json!([]));
    assert_eq!(alloc, json!("main;alloc::buffer"), "alloc profile not shown");

    // The hot-frames table: a row click focuses that function's heaviest frame.
    browser.goto(&format!("{base}/service/checkout?{query}"));
    browser.wait_idle();
    browser.click("tr.hot-row[data-name='postgres::Client::query']");
    browser.wait_for("fn in the URL", "location.search.includes('fn=postgres')");
    let focus = browser.eval("const f = window.hotframe.page.flame; return f.tree.path(f.focus);", json!([]));
    assert_eq!(focus, json!("main;server::run;handler::checkout;db::query;postgres::Client::query"));
    assert!(
        browser.eval("return document.querySelector('tr.hot-row.selected').dataset.name;", json!([]))
            == json!("postgres::Client::query")
    );
    // Its $ cells explain themselves with the frame's own on-CPU samples and the API's figures.
    let explain = |col: u32| {
        let cell = format!("tr.hot-row[data-name='parse_json'] td:nth-child({col}) .money");
        let js = format!("return document.querySelector(\"{cell}\").dataset.explain;");
        browser.eval(&js, json!([])).as_str().unwrap_or_default().to_string()
    };
    let (self_why, total_why) = (explain(4), explain(5));
    let runnable = parse["states"]["RUNNABLE"].as_u64().unwrap_or(0);
    let on_cpu = format!("({} on-CPU samples /", harness::thousands(runnable));
    assert!(total_why.contains(&on_cpu) && total_why.contains(&usd(parse_usd)), "total $ explanation: {total_why}");
    assert!(self_why.contains("self (its own code)") && self_why.contains("cores = (S / F)"), "self $: {self_why}");

    // Sandwich of parse_json: its callers inverted, its callees below.
    browser.click("tr.hot-row[data-name='parse_json'] .sandwich-btn");
    browser.wait_for(
        "the sandwich",
        "document.querySelectorAll('#sandwich-callers canvas, #sandwich-callees canvas').length === 2",
    );
    assert!(location_has(&browser, "tab=sandwich") && location_has(&browser, "fn=parse_json"));

    // Export: the folded text the browser fetched is the API's.
    browser.click("#export-folded");
    let size = browser.wait_for("the export", "window.hotframe.lastExport && window.hotframe.lastExport.size");
    let mut response = http()
        .get(format!("{base}/api/v1/export?service=checkout&{query}&states=RUNNABLE&format=folded"))
        .call()
        .expect("export");
    let folded = response.body_mut().read_to_string().expect("folded");
    assert_eq!(size, json!(folded.len()), "exported folded size");

    // Huge trees are pruned by the server: the page says so.
    browser.goto(&format!("{base}/service/checkout?{query}&maxNodes=25"));
    browser.wait_idle();
    let pruned = server.get_json(&format!("/api/v1/flamegraph?service=checkout&{query}&states=RUNNABLE&maxNodes=25"))
        ["prunedNodes"]
        .clone();
    let note = browser.wait_for(
        "the pruning note",
        "document.getElementById('pruned') && document.getElementById('pruned').textContent",
    );
    assert!(note.as_str().unwrap().contains(&format!("{pruned} small ones")), "pruning note {note} vs {pruned}");
    let other = browser.eval(
        "const t = window.hotframe.page.flame.tree; let best = -1;
         for (let i = 0; i < t.n; i++) if (t.name[i] === '[other]' && (best < 0 || t.weight[i] > t.weight[best])) best = i;
         return best < 0 ? null : t.path(best);",
        json!([]),
    );
    let other = other.as_str().expect("an [other] frame in the pruned tree").to_string();
    assert_eq!(pixel(&browser, "flame", &other), [201, 204, 210], "[other] is not drawn grey");

    // Brushing the timeline narrows the range to what was dragged.
    let tl = browser.eval("const r = document.querySelector('canvas.timeline').getBoundingClientRect(); return [r.left, r.top, r.width, r.height];", json!([]));
    let (left, top, width) = (tl[0].as_f64().unwrap(), tl[1].as_f64().unwrap(), tl[2].as_f64().unwrap());
    browser.drag((left + width * 0.5, top + 40.0), (left + width * 0.8, top + 40.0));
    browser.wait_for("the brushed range", &format!("!location.search.includes('from={from}') && window.hotframe.idle"));
    let (f2, u2) = {
        let v = browser.eval(
            "const p = new URLSearchParams(location.search); return [Number(p.get('from')), Number(p.get('until'))];",
            json!([]),
        );
        (v[0].as_f64().unwrap(), v[1].as_f64().unwrap())
    };
    let span = (until - from) as f64;
    assert!(
        f2 > from as f64 + span * 0.3 && u2 < until as f64 - span * 0.05 && u2 > f2,
        "brushed {f2}..{u2} of {from}..{until}"
    );

    // A click zooms: parse_json fills the width, the breadcrumb and the URL follow.
    browser.goto(&format!("{base}/service/checkout?{query}"));
    browser.wait_idle();
    let b = frame_box(&browser, "flame", PARSE);
    assert!(b["w"].as_f64().unwrap() < b["width"].as_f64().unwrap() * 0.9, "not zoomed yet: {b}");
    browser.click_at(b["cx"].as_f64().unwrap(), b["cy"].as_f64().unwrap());
    browser.wait_for(
        "the zoom in the URL",
        "decodeURIComponent(location.search).includes('focus=main;server::run;handler::checkout;parse_json')",
    );
    let zoomed = frame_box(&browser, "flame", PARSE);
    assert!(
        zoomed["w"].as_f64().unwrap() >= zoomed["width"].as_f64().unwrap() - 2.0,
        "zoomed frame does not fill the width: {zoomed} (before {b})"
    );
    assert_eq!(text(&browser, ".breadcrumb .crumb.current"), "parse_json");
    // Escape zooms out one level; the breadcrumb's parent takes it back there too.
    browser
        .eval("document.body.dispatchEvent(new KeyboardEvent('keydown', {key: 'Escape', bubbles: true}));", json!([]));
    browser.wait_for(
        "the zoom out",
        "document.querySelector('.breadcrumb .crumb.current').textContent === 'handler::checkout'",
    );
    browser.click_at(b["cx"].as_f64().unwrap(), b["cy"].as_f64().unwrap());
    browser
        .wait_for("the zoom back", "document.querySelector('.breadcrumb .crumb.current').textContent === 'parse_json'");

    // The URL holds the whole state: zoom, search, view, sort, label filter.
    browser.type_into("#flame-search", "serde");
    browser.wait_for("q=serde", "location.search.includes('q=serde')");
    browser.click(".view-btn[data-view=latency]");
    browser.wait_for("view=latency", "location.search.includes('view=latency') && window.hotframe.idle");
    browser.click("select[data-label=host] option[value=a]");
    browser.wait_for(
        "label.host=a",
        "location.search.includes('label.host=a') && window.hotframe.idle && window.hotframe.page.flame",
    );
    browser.click("button.sort[data-sort=total]");
    browser.wait_for("sort=total", "location.search.includes('sort=total')");
    let shared = browser.url();
    browser.goto(&format!("{base}/"));
    browser.wait_idle();
    browser.goto(&shared);
    browser.wait_idle();
    let restored = browser.eval(
        "const p = window.hotframe.page; const f = p.flame;
         return {url: location.href, focus: f.tree.path(f.focus), q: document.getElementById('flame-search').value,
                 view: document.querySelector('.view-btn.active').dataset.view,
                 host: document.querySelector('select[data-label=host]').value,
                 sorted: document.querySelector('th[aria-sort] button').dataset.sort,
                 match: document.getElementById('match-share').textContent};",
        json!([]),
    );
    assert_eq!(restored["url"], json!(shared));
    assert_eq!(restored["focus"], json!(PARSE), "{restored}");
    assert_eq!(restored["q"], json!("serde"));
    assert_eq!(restored["view"], json!("latency"));
    assert_eq!(restored["host"], json!("a"));
    assert_eq!(restored["sorted"], json!("total"));
    assert!(restored["match"].as_str().unwrap().contains("frames match"), "{restored}");

    no_js_errors(&browser);
}

/// Diff (two label values, two ranges) and the ops-win hook, the Latency and Custom
/// views, cost settings, the screenshot, and the server going away and coming back.
#[test]
fn viewer_diff_views_settings_and_outage() {
    let Fixture { dir, port, mut server, browser, from, until } = fixture();
    let base = server.url.clone();
    let query = format!("from={from}&until={until}");

    // Diff of version 1.4 against 1.5: the doubled JSON work is red, the halved
    // rendering blue, and the table shows the API's $/year change.
    browser.goto(&format!("{base}/service/checkout?{query}&tab=diff&dmode=label&dlabel=version&da=1.4&db=1.5"));
    browser.wait_idle();
    frame_box(&browser, "diffFlame", PARSE);
    let [r, g, bl] = pixel(&browser, "diffFlame", PARSE);
    assert!(r > 200 && (r as i32) - (bl as i32) > 60 && g < 200, "regressed parse_json is not red: {:?}", [r, g, bl]);
    let render = "main;server::run;handler::checkout;render";
    let [r, _, bl] = pixel(&browser, "diffFlame", render);
    assert!((bl as i32) - (r as i32) > 60, "faster render is not blue: {:?}", [r, bl]);
    let side = |v: &str| {
        server.get_json(&format!("/api/v1/flamegraph?service=checkout&{query}&states=RUNNABLE&label.version={v}"))
    };
    let (before, after) = (side("1.4"), side("1.5"));
    let change = node_at(&after, &PARSE_PATH)["usdPerYear"].as_f64().unwrap()
        - node_at(&before, &PARSE_PATH)["usdPerYear"].as_f64().unwrap();
    let cell = text(&browser, "tr.diff-row[data-name=\"parse_json\"] td:last-child");
    assert_eq!(cell, format!("+{}", usd(change)), "diff table change for parse_json");
    let why = browser.eval(
        "return document.querySelector('tr.diff-row[data-name=\"parse_json\"] td:nth-child(2) .money').dataset.explain;",
        json!([]),
    );
    let why = why.as_str().unwrap_or_default();
    let b = node_at(&before, &PARSE_PATH);
    let on_cpu = format!("({} on-CPU samples /", harness::thousands(b["states"]["RUNNABLE"].as_u64().unwrap_or(0)));
    assert!(why.contains(&on_cpu) && why.contains(&usd(b["usdPerYear"].as_f64().unwrap())), "before $: {why}");
    // "Start an ops win" opens the win form with this diff's sides and the frame that got cheaper.
    browser.click("#start-ops-win");
    browser.wait_for("the win form", "location.pathname === '/wins/new'");
    assert!(location_has(&browser, "frame=template::render_html"), "{}", browser.url());
    assert!(
        location_has(&browser, "blabels=version=1.4") && location_has(&browser, "alabels=version=1.5"),
        "{}",
        browser.url()
    );
    assert!(location_has(&browser, &format!("bfrom={}", before["from"])), "{}", browser.url());

    // The same regression as two time ranges: before the 1.5 rollout, and after.
    let mid = (from + until) / 2;
    browser.goto(&format!("{base}/service/checkout?from={mid}&until={until}&tab=diff&bfrom={from}&buntil={mid}"));
    browser.wait_idle();
    frame_box(&browser, "diffFlame", PARSE);
    let [r, _, bl] = pixel(&browser, "diffFlame", PARSE);
    assert!(r > 200 && (r as i32) - (bl as i32) > 60, "regressed parse_json (ranges) is not red: {:?}", [r, bl]);

    // Latency view: frames coloured by thread state, waiting left out.
    browser.goto(&format!("{base}/service/checkout?{query}&view=latency"));
    browser.wait_idle();
    let blocked = "main;server::run;handler::checkout;cache::lock;mutex_lock";
    frame_box(&browser, "flame", blocked);
    assert_eq!(pixel(&browser, "flame", blocked), [142, 68, 173], "BLOCKED frame not in the BLOCKED colour");
    assert_eq!(
        pixel(&browser, "flame", "main;server::run;handler::checkout;db::query;socket_read"),
        [58, 110, 165],
        "IO colour"
    );
    assert_eq!(pixel(&browser, "flame", PARSE), [228, 87, 46], "RUNNABLE colour");
    let idle = browser.eval(
        "return window.hotframe.page.flame.tree.path(window.hotframe.page.flame.tree.find('main;worker::idle'));",
        json!([]),
    );
    assert_eq!(idle, json!("main"), "WAITING stacks must not be in the Latency view");
    let legend = text(&browser, ".legend");
    assert!(legend.contains("BLOCKED: ") && !legend.contains("BLOCKED: 0 s"), "legend: {legend}");

    // Custom states: start from the Latency set, then leave IO out.
    browser.click(".view-btn[data-view=custom]");
    browser.wait_for(
        "the state boxes",
        "location.search.includes('view=custom') && document.querySelector('.state-boxes input[value=IO]')",
    );
    browser.click(".state-boxes input[value=IO]");
    browser.wait_for("IO left out", "location.search.includes('states=RUNNABLE%2CTIMED_WAITING%2CBLOCKED') && window.hotframe.idle && window.hotframe.page.flame");
    let io = browser.eval("const t = window.hotframe.page.flame.tree; return t.path(t.find('main;server::run;handler::checkout;db::query;socket_read'));", json!([]));
    assert_eq!(io, json!("main;server::run;handler::checkout;db::query"), "IO frame still drawn without IO");
    frame_box(&browser, "flame", blocked);

    // Cost settings: a fleet of 10 hosts applies at once to every figure.
    browser.goto(&format!("{base}/service/checkout?{query}&tab=cost"));
    browser.wait_for("the settings form", "document.getElementById('cost-fleet')");
    browser.type_into("#cost-fleet", "10\n");
    let status = browser.wait_for(
        "the settings to be saved",
        "(function () { const s = document.querySelector('.settings .status'); const t = s ? s.textContent : '';
           return t && t !== 'Saving…' ? t : null; })()",
    );
    assert!(status.as_str().unwrap().starts_with("Saved"), "settings status: {status}");
    let api10 = server.get_json(&format!("/api/v1/flamegraph?service=checkout&{query}&states=RUNNABLE"));
    assert_eq!(api10["cost"]["fleetHosts"], json!(10));
    let total_usd = usd(api10["totals"]["usdPerYear"].as_f64().unwrap());
    browser.wait_for(
        "the new total",
        &format!("document.getElementById('total-usd').textContent.includes('{total_usd}')"),
    );
    browser.wait_for(
        "the formula with the fleet",
        "document.querySelector('.formula').textContent.includes('(10 / 3 = ×3.33)')",
    );
    // An instance type from the built-in table sets the price, shown with its source.
    let types = server.get_json("/api/v1/instance-types");
    let pick = &types["instanceTypes"][0];
    let name = pick["name"].as_str().expect("instance name");
    browser.click(&format!("#cost-instance option[value='{name}']"));
    browser.wait_for(
        "the instance price",
        &format!(
            "document.querySelector('.formula').textContent.includes('${}/core-hour')",
            pick["pricePerCoreHour"].as_f64().unwrap()
        ),
    );
    let priced = server.get_json(&format!("/api/v1/flamegraph?service=checkout&{query}&states=RUNNABLE"));
    assert_eq!(priced["cost"]["instanceType"], json!(name));
    let total_usd = usd(priced["totals"]["usdPerYear"].as_f64().unwrap());
    browser.wait_for(
        "the repriced total",
        &format!("document.getElementById('total-usd').textContent.includes('{total_usd}')"),
    );
    assert!(text(&browser, ".formula").contains(name), "price source not shown: {}", text(&browser, ".formula"));
    // CO2 inputs: a PUE override reaches the formula and the API.
    browser.eval("document.querySelector('.settings details').open = true;", json!([]));
    browser.type_into("#cost-pue", "1.1\n");
    browser.wait_for("the PUE in the formula", "document.querySelector('.formula').textContent.includes('PUE 1.1 ')");
    assert_eq!(server.get_json("/api/v1/services/checkout/settings")["settings"]["pue"], json!(1.1));
    no_js_errors(&browser);

    // Screenshot of the service page, the tooltip open on the hot frame.
    browser.goto(&format!("{base}/service/checkout?{query}"));
    browser.wait_idle();
    let b = frame_box(&browser, "flame", PARSE);
    browser.hover(b["cx"].as_f64().unwrap(), b["cy"].as_f64().unwrap());
    browser.wait_for("the tooltip", "!document.getElementById('tooltip').hidden");
    let png = browser.screenshot();
    assert!(png.starts_with(b"\x89PNG"), "screenshot is not a PNG");
    let out = if std::env::var_os("HOTFRAME_UPDATE_SCREENSHOT").is_some() {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/screenshot.png")
    } else {
        dir.path().join("screenshot.png")
    };
    std::fs::write(&out, &png).expect("write screenshot");

    // The server goes away: a clear message; back again: retry shows the data.
    server.kill();
    browser.click(".range-btn[data-range='15m']");
    browser.wait_for("the server-gone banner", "!document.getElementById('banner').hidden");
    let banner = text(&browser, "#banner");
    assert!(banner.contains("not answering"), "banner: {banner}");
    let server = Server::start_on(&dir.path().join("data"), port, &[]);
    // Clicked in the page: the banner may be redrawn by an automatic retry meanwhile.
    browser.eval("const b = document.getElementById('retry'); if (b) b.click();", json!([]));
    browser.wait_for("the banner to go", "document.getElementById('banner').hidden && window.hotframe.idle && window.hotframe.page && window.hotframe.page.flame");
    drop(server);
    no_js_errors(&browser);
}

#[test]
fn viewer_asks_for_a_token_and_keeps_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, "s3cret-read read,ingest\ns3cret-admin admin\n").expect("token file");
    let server = Server::start(&dir.path().join("data"), &["--token-file", tokens.to_str().unwrap()]);
    load(&server, Some("s3cret-read"));
    let browser = Browser::start(1200, 800);
    browser.goto(&format!("{}/", server.url));
    browser.wait_for("the token dialog", "document.getElementById('token-input')");
    browser.type_into("#token-input", "s3cret-read");
    browser.click("#token-ok");
    browser.wait_for("the service list", "document.querySelector('tr[data-service=\"checkout\"]')");
    let kept = browser.eval("return localStorage.getItem('hotframe.token');", json!([]));
    assert_eq!(kept, json!("s3cret-read"));
    // A reload uses the kept token without asking.
    browser.goto(&format!("{}/", server.url));
    browser.wait_for("the service list", "document.querySelector('tr[data-service=\"checkout\"]')");
    assert_eq!(browser.eval("return !!document.getElementById('token-input');", json!([])), json!(false));

    // Cost settings need the admin scope: the read token gets 403, the viewer asks for
    // another token, and with the admin one the change is stored.
    browser.goto(&format!("{}/service/checkout?tab=cost&from=now-1h", server.url));
    browser.wait_for("the settings form", "document.getElementById('cost-fleet')");
    browser.type_into("#cost-fleet", "7\n");
    browser.wait_for("the token dialog for admin", "document.getElementById('token-input')");
    let ask = text(&browser, ".token-dialog");
    assert!(ask.contains("scope"), "dialog does not explain the scope: {ask}");
    browser.type_into("#token-input", "s3cret-admin");
    browser.click("#token-ok");
    browser.wait_for(
        "the formula with 7 hosts",
        "document.querySelector('.formula') && document.querySelector('.formula').textContent.includes('(7 / 3')",
    );
    let mut response = http()
        .get(format!("{}/api/v1/services/checkout/settings", server.url))
        .header("Authorization", "Bearer s3cret-admin")
        .call()
        .expect("GET settings");
    let body: Value = serde_json::from_str(&response.body_mut().read_to_string().unwrap()).unwrap();
    assert_eq!(body["settings"]["fleetHosts"], json!(7));
    no_js_errors(&browser);
}

#[test]
fn viewer_explains_how_to_attach_an_agent_when_empty() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(&dir.path().join("data"), &[]);
    let browser = Browser::start(1200, 800);
    browser.goto(&format!("{}/", server.url));
    browser.wait_idle();
    let page = text(&browser, "main");
    for needle in [
        "No profiles yet",
        &format!("hotframe agent --server {} --service checkout --pid 1234", server.url),
        "hotframe import",
    ] {
        assert!(page.contains(needle), "empty page lacks {needle:?}: {page}");
    }
    // An unknown service says so instead of drawing an empty graph.
    browser.goto(&format!("{}/service/nope", server.url));
    browser.wait_idle();
    let page = text(&browser, "main");
    assert!(page.contains("No samples") || page.contains("Not found"), "unknown service page: {page}");
    no_js_errors(&browser);
}

/// The page's own tree code (web/tree.js), loaded as the browser loads it, on trees whose
/// aggregates are computed by hand here: recursion counted once, self $, sandwich, diff.
#[test]
fn tree_aggregates_match_hand_computation() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(&dir.path().join("data"), &[]);
    let browser = Browser::start(800, 600);
    browser.goto(&format!("{}/", server.url));
    browser.wait_idle();
    let got = browser.eval_async(
        "const done = arguments[arguments.length - 1];
         const base = document.querySelector('script[type=module]').src.replace(/app\\.js$/, '');
         import(base + 'tree.js').then((m) => {
           const node = (name, total, usd, children = []) => ({ name, total, usdPerYear: usd, cores: 0, kgCo2PerYear: 0,
             self: total - children.reduce((a, c) => a + c.total, 0), states: { RUNNABLE: total }, children });
           // all -> a(10) -> b(6) -> a(4) -> c(4); a -> c(3): a is recursive, c has two callers.
           const root = node('all', 10, 100, [node('a', 10, 100, [node('b', 6, 60, [node('a', 4, 40, [node('c', 4, 40)])]), node('c', 3, 30)])]);
           const t = m.flatten(root);
           const hot = Object.fromEntries(m.hotFrames(t, { usdPerYear: 10 }).map((r) => [r.name, r]));
           const sw = m.sandwich(t, 'c');
           const shape = (n) => [n.name, n.total, n.children.map(shape)];
           // The API's per-sample factor: (1 / F) / W × (H / Hp) at 100 Hz on one host.
           const cost = (w) => ({ perSample: { cores: 1 / 100 / w } });
           const before = node('all', 1000, 0, [node('f', 500, 0)]);
           const after = node('all', 4000, 0, [node('f', 3000, 0), node('g', 1000, 0)]);
           const d = m.flatten(m.diffTrees(before, cost(10), after, cost(20)));
           const rows = Object.fromEntries(m.diffRows(d).map((r) => [r.name, [r.baseRate, r.compRate]]));
           done({ names: t.name, end: Array.from(t.end), start: Array.from(t.start),
             a: [hot.a.self, hot.a.total, hot.a.totalUsd], c: [hot.c.self, hot.c.total, hot.c.selfUsd],
             callers: shape(sw.callers), callees: shape(sw.callees), path: t.path(4), find: t.find('a;b;a;c'),
             partial: t.find('a;nope'), hit: [t.hit(9.5, 1), t.hit(9.5, 2), t.hit(2, 4), t.hit(7, 4), t.hit(7, 2), t.hit(10, 0)],
             diffWeights: Array.from(d.weight), diffNames: d.name, rows });
         }, (e) => done({ error: String(e) }));",
        json!([]),
    );
    assert!(got.get("error").is_none(), "{got}");
    assert_eq!(got["names"], json!(["all", "a", "b", "a", "c", "c"]), "preorder, heaviest child first");
    assert_eq!(got["end"], json!([6, 6, 5, 5, 5, 6]));
    assert_eq!(got["start"], json!([0, 0, 0, 0, 0, 6]));
    // a: self 1 (10 - 6 - 3), total 10 counted once although a calls itself under b.
    assert_eq!(got["a"], json!([1, 10, 100]));
    // c: self 4 + 3, $ = 7 on-CPU samples x $10.
    assert_eq!(got["c"], json!([7, 7, 70]));
    // Callers of c: a (7 = 4 + 3), and under it b -> a for the 4 reached through b.
    assert_eq!(got["callers"], json!(["c", 7, [["a", 7, [["b", 4, [["a", 4, []]]]]]]]));
    assert_eq!(got["callees"], json!(["c", 7, []]));
    assert_eq!(got["path"], json!("a;b;a;c"));
    assert_eq!(got["find"], json!(4));
    assert_eq!(got["partial"], json!(1), "an unknown path stops at its deepest known frame");
    // Hit tests: (x, depth) -> node; c under a spans [6, 9) at depth 2; x = 10 is past the end.
    assert_eq!(got["hit"], json!([1, -1, 4, -1, 5, -1]));
    // Rates: before 1/(100 x 10) per sample, after 1/(100 x 20): all 1 -> 2, f 0.5 -> 1.5, g 0 -> 0.5.
    assert_eq!(got["diffNames"], json!(["all", "f", "g"]));
    assert_eq!(got["diffWeights"], json!([3, 2, 0.5]));
    assert_eq!(got["rows"], json!({"f": [0.5, 1.5], "g": [0, 0.5]}));
}

#[test]
fn formats_match_the_viewer() {
    assert_eq!(usd(315_883.4), "$315,883");
    assert_eq!(usd(12.345), "$12.35");
    assert_eq!(usd(-1234.0), "−$1,234");
    assert_eq!(pct(0.5555), "56%");
    assert_eq!(pct(0.0534), "5.3%");
    assert_eq!(harness::base64_decode("aGVsbG8="), b"hello");
}

/// A service younger than the page's range (issue 18, item 5): the Diff tab's default
/// sides both hold data (the two halves of the data, said so beside the controls), and a
/// baseline without data is named as empty instead of silently drawing $0.00.
#[test]
fn diff_defaults_to_sides_with_data_and_names_an_empty_side() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(&dir.path().join("data"), &[]);
    let now = now_s();
    for k in 0..8u64 {
        let from = now - 600 + k * 60;
        server.ingest_folded("fresh.cpu{host=a}", &checkout_profile(k >= 4, k), from, from + 60, None);
    }
    let browser = Browser::start(1200, 800);
    browser.goto(&format!("{}/service/fresh?tab=diff", server.url));
    browser.wait_idle();
    frame_box(&browser, "diffFlame", PARSE);
    let rates = browser.eval(
        "const t = window.hotframe.page.diffFlame.tree; return [t.node[0].base.rate, t.node[0].comp.rate];",
        json!([]),
    );
    assert!(
        rates[0].as_f64().unwrap_or(0.0) > 0.0 && rates[1].as_f64().unwrap_or(0.0) > 0.0,
        "a default side is empty: {rates}"
    );
    assert!(text(&browser, "#diff-halves").contains("two halves"), "the halves are not explained");
    assert_eq!(text(&browser, ".diff-empty"), "", "no side is empty");
    // The second half runs version 1.5's doubled JSON work.
    let [r, _, bl] = pixel(&browser, "diffFlame", PARSE);
    assert!(r > 200 && (r as i32) - (bl as i32) > 60, "regressed parse_json (halves) is not red: {:?}", [r, bl]);

    // A baseline the user picked where there is no data: said, not just drawn as $0.00.
    browser.goto(&format!("{}/service/fresh?tab=diff&bfrom=now-3h&buntil=now-2h", server.url));
    browser.wait_idle();
    let empty = browser.wait_for("the empty-side note", "(document.querySelector('.diff-empty') || {}).textContent");
    let empty = empty.as_str().unwrap_or_default();
    assert!(
        empty.contains("No samples in the before side (now-3h → now-2h)") && !empty.contains("after side"),
        "{empty}"
    );
    assert!(text(&browser, ".diff-controls").contains("with the selected range (after)"));
    no_js_errors(&browser);
}

/// Deep zooms into long generic frames (issue 18, item 6): the breadcrumb stays a line or
/// two with each name cut short (full on hover) and the middle folded, the focus URL
/// stays short, and an older link with the full names still opens the same frame.
#[test]
fn breadcrumb_abbreviates_long_frames_and_the_focus_url_stays_short() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(&dir.path().join("data"), &[]);
    let names: Vec<String> = (0..24)
        .map(|k| {
            format!(
                "<alloc::vec::Vec<hotframe::model::Frame<std::collections::HashMap<alloc::string::String, u64>>> \
                 as core::iter::traits::collect::Extend<&T>>::extend_{k}::{{{{closure}}}}"
            )
        })
        .collect();
    let deep = format!("main;{}", names.join(";"));
    let now = now_s();
    server.ingest_folded(
        "generic.cpu{host=a}",
        &format!("{deep};leaf 500\nmain;other 100\n"),
        now - 300,
        now - 240,
        None,
    );
    let browser = Browser::start(1200, 800);

    // An older link: the whole path of names in `focus`.
    browser.goto(&format!("{}/service/generic", server.url));
    browser.wait_idle();
    browser.eval(
        "history.pushState(null, '', '/service/generic?' + new URLSearchParams({focus: arguments[0]})); \
         window.dispatchEvent(new PopStateEvent('popstate'));",
        json!([format!("{deep};leaf")]),
    );
    browser.wait_for(
        "the old focus link",
        "window.hotframe.idle && window.hotframe.page.flame && window.hotframe.page.flame.tree.name[window.hotframe.page.flame.focus] === 'leaf'",
    );
    let crumbs = browser.eval(
        "const b = document.querySelector('.breadcrumb');
         return {height: b.getBoundingClientRect().height,
                 texts: [...b.querySelectorAll('.crumb')].map((c) => c.textContent),
                 titles: [...b.querySelectorAll('.crumb')].map((c) => c.title)};",
        json!([]),
    );
    assert!(crumbs["height"].as_f64().unwrap() < 60.0, "breadcrumb too tall: {crumbs}");
    let texts: Vec<&str> = crumbs["texts"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
    assert!(texts.iter().all(|t| t.chars().count() <= 48), "{texts:?}");
    assert_eq!(texts.first(), Some(&"all"));
    assert_eq!(texts.last(), Some(&"leaf"));
    assert!(texts.iter().any(|t| t.starts_with('…')), "the middle is not folded: {texts:?}");
    let titles = crumbs["titles"].as_array().unwrap();
    assert_eq!(titles[titles.len() - 2], json!(names[23]), "full name on hover");
    assert_eq!(texts[texts.len() - 2], "<Vec<…> as Extend<…>>::extend_23::{{closure}}", "{texts:?}");

    // A crumb zooms out to that frame; the URL says so in a few hundred characters.
    browser.eval("const c = [...document.querySelectorAll('.breadcrumb .crumb')]; c[c.length - 2].click();", json!([]));
    browser
        .wait_for("the zoom out", "document.querySelector('.breadcrumb .crumb.current').title.includes('extend_23')");
    let focus = browser.eval("return new URLSearchParams(location.search).get('focus');", json!([]));
    let focus = focus.as_str().unwrap_or_default().to_string();
    assert!(focus.len() < 400 && focus.contains('~'), "focus URL: {} chars: {focus}", focus.len());
    let shared = browser.url();
    assert!(shared.len() < 600, "{} chars: {shared}", shared.len());
    browser.goto(&format!("{}/", server.url));
    browser.wait_idle();
    browser.goto(&shared);
    browser.wait_idle();
    let path = browser.eval("const f = window.hotframe.page.flame; return f.tree.path(f.focus);", json!([]));
    assert_eq!(path, json!(deep), "the short focus opens the same frame");

    // `…` opens the folded middle.
    browser.click(".breadcrumb .crumb.more");
    let all = browser.eval("return document.querySelectorAll('.breadcrumb .crumb').length;", json!([]));
    assert_eq!(all, json!(names.len() + 2), "all, main and every extend frame");
    no_js_errors(&browser);
}

/// The Latency view's hot frames (issue 18, item 7): the shares count every selected
/// state while $ counts on-CPU time only, and the headers and a note say which is which;
/// the CPU view keeps its plain headers.
#[test]
fn latency_hot_frames_say_what_the_shares_and_dollars_count() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(&dir.path().join("data"), &[]);
    let from = now_s() - 300;
    ingest_with_states(&server, &checkout_profile(false, 1), "1.4", from, None);
    let browser = Browser::start(1400, 1000);
    let headers = "return [...document.querySelectorAll('table.hot th button.sort')].map((b) => b.textContent.replace(' ▾', ''));";

    browser.goto(&format!("{}/service/checkout?view=latency", server.url));
    browser.wait_idle();
    browser.wait_for("the hot frames", "document.querySelector('tr.hot-row')");
    assert_eq!(
        browser.eval(headers, json!([])),
        json!(["Function", "Self % (states)", "Total % (states)", "Self $/yr (CPU)", "Total $/yr (CPU)"])
    );
    let note = text(&browser, "#hot-note");
    assert!(
        note.contains("RUNNABLE, TIMED_WAITING, BLOCKED, IO") && note.contains("on-CPU (RUNNABLE) time only"),
        "{note}"
    );
    // A frame that only ever blocks: a share of the latency, no CPU dollars.
    let lock = "tr.hot-row[data-name='mutex_lock']";
    assert_ne!(text(&browser, &format!("{lock} td:nth-child(2)")), "0.0%");
    assert_eq!(text(&browser, &format!("{lock} td:nth-child(4)")), usd(0.0));

    browser.goto(&format!("{}/service/checkout", server.url));
    browser.wait_idle();
    browser.wait_for("the hot frames", "document.querySelector('tr.hot-row')");
    assert_eq!(browser.eval(headers, json!([])), json!(["Function", "Self", "Total", "Self $/yr", "Total $/yr"]));
    assert_eq!(text(&browser, "#hot-note"), "");
    no_js_errors(&browser);
}
