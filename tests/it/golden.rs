//! Golden files: outputs that must not change by accident, compared line for line with
//! the files under tests/fixtures/golden/. `HOTFRAME_BLESS=1` rewrites them (see
//! tests/fixtures/README.md); review their diff before committing.
//!
//! In: fixed inputs (the report's synthetic win, `tests/fixtures/perf-busy.folded`).
//! Out: the report's text and HTML, the flame graph JSON of the API, the folded and
//! pprof exports. Must not: pin anything that depends on the clock: the API answers are
//! taken over a window relative to now, so its bounds are replaced by names.

use crate::common::{assert_golden, get, get_bytes, get_json, post, tempdir, Server};
use hotframe::report::{self, FLAME_CONTENT_ID};
use pprof::protos::Message;
use serde_json::Value;
use std::io::Read;
use std::path::Path;

/// The ops-win report of the synthetic win of report.rs (regex compile 24,000 -> 1,200
/// samples on 2 hosts, fleet of 10, $0.05 per core-hour), as the email carries it.
#[test]
fn ops_win_report_text_and_html() {
    let win = crate::report::win(&crate::report::pair(), "Cache compiled regexes");
    let image = format!("cid:{FLAME_CONTENT_ID}");
    let rendered = report::render(&win, Some(&image), Some("http://hotframe.test/wins/7"));
    let test = "golden::ops_win_report_text_and_html";
    assert_golden("report.txt", test, &format!("Subject: {}\n\n{}", rendered.subject, rendered.text));
    assert_golden("report.html", test, &rendered.html);
}

/// A server holding `tests/fixtures/perf-busy.folded` as service `busy` (host h1, 999
/// Hz, 10 s from a whole minute an hour ago), and the query range around it.
fn busy_server(dir: &Path) -> (Server, String) {
    let server = Server::start(&dir.join("data"), &[]);
    let t = (hotframe::model::time::now_ms() / 1000 - 3600) / 60 * 60;
    let folded = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/perf-busy.folded"))
        .expect("perf-busy.folded");
    let ingest = format!("/ingest?name=busy.cpu%7Bhost%3Dh1%7D&from={t}&until={}&sampleRate=999&format=folded", t + 10);
    let (status, body) = post(&server.api(&ingest), "text/plain", folded);
    assert_eq!(status, 200, "{body}");
    let range = format!("from={}&until={}", t - 60, t + 60);
    (server, range)
}

#[test]
fn flamegraph_json_of_an_imported_folded_profile() {
    let dir = tempdir();
    let (server, range) = busy_server(dir.path());
    let mut flame = get_json(&server.api(&format!("/api/v1/flamegraph?service=busy&{range}")));
    // The window is relative to now; what is computed from it is not.
    for (key, name) in [("from", "<an hour ago - 60 s, ms>"), ("until", "<an hour ago + 60 s, ms>")] {
        assert!(flame[key].is_i64(), "{key}: {}", flame[key]);
        flame[key] = Value::String(name.to_string());
    }
    let pretty = serde_json::to_string_pretty(&flame).expect("JSON") + "\n";
    assert_golden("perf-busy.flamegraph.json", "golden::flamegraph_json_of_an_imported_folded_profile", &pretty);
}

#[test]
fn folded_and_pprof_exports_of_an_imported_folded_profile() {
    let dir = tempdir();
    let (server, range) = busy_server(dir.path());
    let test = "golden::folded_and_pprof_exports_of_an_imported_folded_profile";
    let (status, folded) = get(&server.api(&format!("/api/v1/export?service=busy&format=folded&{range}")));
    assert_eq!(status, 200, "{folded}");
    assert_golden("perf-busy.export.folded", test, &folded);

    let (status, bytes) = get_bytes(&server.api(&format!("/api/v1/export?service=busy&format=pprof&{range}")));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&bytes));
    assert_golden("perf-busy.export.pprof.txt", test, &pprof_text(&bytes));
}

/// The decoded profile as text, without what depends on the clock (time_nanos) or on
/// the encoder's choice of ids and string order: value types, period, then one line per
/// sample (frames root first, values, labels), sorted.
fn pprof_text(bytes: &[u8]) -> String {
    let mut raw = Vec::new();
    if bytes.starts_with(&[0x1f, 0x8b]) {
        flate2::read::GzDecoder::new(bytes).read_to_end(&mut raw).expect("gunzip the pprof export");
    } else {
        raw = bytes.to_vec();
    }
    let p = pprof::protos::Profile::decode(&raw[..]).expect("a pprof protobuf");
    let s = |i: i64| p.string_table.get(i as usize).cloned().unwrap_or_else(|| format!("<bad string {i}>"));
    let types =
        |v: &[pprof::protos::ValueType]| v.iter().map(|t| format!("{}/{}", s(t.ty), s(t.unit))).collect::<Vec<_>>();
    let function = |id: u64| {
        p.function.iter().find(|f| f.id == id).map(|f| s(f.name)).unwrap_or_else(|| format!("<function {id}>"))
    };
    let frames = |id: &u64| -> Vec<String> {
        let location = p.location.iter().find(|l| l.id == *id).expect("known location");
        // A location's lines are innermost first (inlined frames): reverse for root first.
        location.line.iter().rev().map(|l| function(l.function_id)).collect()
    };
    let mut samples: Vec<String> =
        p.sample
            .iter()
            .map(|sample| {
                // Sample locations are leaf first.
                let stack: Vec<String> = sample.location_id.iter().rev().flat_map(frames).collect();
                let mut labels: Vec<String> = sample
                    .label
                    .iter()
                    .map(|l| {
                        if l.str != 0 {
                            format!("{}={}", s(l.key), s(l.str))
                        } else {
                            format!("{}={}", s(l.key), l.num)
                        }
                    })
                    .collect();
                labels.sort();
                format!("{} {:?} [{}]", stack.join(";"), sample.value, labels.join(","))
            })
            .collect();
    samples.sort();
    let period = p.period_type.as_ref().map(|t| types(std::slice::from_ref(t)).join("")).unwrap_or_default();
    format!(
        "sample_type: {}\nperiod_type: {period}\nperiod: {}\nduration_nanos: {}\nsamples:\n{}\n",
        types(&p.sample_type).join(" "),
        p.period,
        p.duration_nanos,
        samples.join("\n")
    )
}
