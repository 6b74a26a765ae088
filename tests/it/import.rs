//! Import and export with real tools and files: `perf record -g` + `perf script` of a
//! small C program imported with `hotframe import --format perf-script`; speedscope
//! export and re-import through the CLI; the pprof export checked against the rules
//! Go's profile package (`go tool pprof`) enforces when it parses a file.

use crate::common::{flamegraph, require, tempdir, total_of, Server, BIN};
use pprof::protos::Message;
use std::collections::HashSet;
use std::io::Read;
use std::path::Path;
use std::process::Command;

const BUSY_C: &str = r#"
#include <stdlib.h>
volatile unsigned long sink;
__attribute__((noinline)) unsigned long spin_hot_loop(unsigned long n) {
    unsigned long x = 1;
    for (unsigned long i = 0; i < n; i++) x = x * 6364136223846793005UL + 1442695040888963407UL;
    return x;
}
__attribute__((noinline)) void do_work(void) { sink += spin_hot_loop(150000000UL); }
int main(void) { do_work(); return 0; }
"#;

fn hotframe(args: &[&str]) -> String {
    let out = Command::new(BIN).args(args).output().unwrap();
    assert!(out.status.success(), "hotframe {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Imports folded text for `service` through the CLI.
fn import_folded(server: &str, service: &str, dir: &Path, text: &str) {
    let file = dir.join(format!("{service}.folded"));
    std::fs::write(&file, text).unwrap();
    hotframe(&[
        "import",
        "--server",
        server,
        "--service",
        service,
        "--from",
        "now-30s",
        "--duration",
        "10s",
        file.to_str().unwrap(),
    ]);
}

#[test]
fn perf_record_data_comes_in_through_perf_script() {
    let perf = Command::new("perf").arg("--version").output().is_ok();
    if !require("`perf`", perf, "apt-get install linux-perf (CI installs it)") {
        return;
    }
    let dir = tempdir();
    let src = dir.path().join("busy.c");
    let exe = dir.path().join("busy");
    std::fs::write(&src, BUSY_C).unwrap();
    let cc =
        Command::new("cc").args(["-O0", "-g", "-fno-omit-frame-pointer", "-o"]).arg(&exe).arg(&src).status().unwrap();
    assert!(cc.success());
    let data = dir.path().join("perf.data");
    let record = Command::new("perf")
        .args(["record", "-F", "499", "-g", "-q", "-o"])
        .arg(&data)
        .arg("--")
        .arg(&exe)
        .output()
        .unwrap();
    assert!(record.status.success(), "perf record failed: {}", String::from_utf8_lossy(&record.stderr));
    let script = Command::new("perf").args(["script", "-i"]).arg(&data).output().unwrap();
    assert!(script.status.success(), "perf script failed: {}", String::from_utf8_lossy(&script.stderr));
    let text = dir.path().join("busy.perf.txt");
    std::fs::write(&text, &script.stdout).unwrap();

    let serve = Server::start(&dir.path().join("store"), &[]);
    let server = serve.url.as_str();
    let said = hotframe(&[
        "import",
        "--server",
        server,
        "--service",
        "perfdemo",
        "--format",
        "perf-script",
        text.to_str().unwrap(),
    ]);
    assert!(said.contains("perf-script"), "{said}");
    // auto-detection picks perf-script too
    let said = hotframe(&["import", "--server", server, "--service", "perfauto", text.to_str().unwrap()]);
    assert!(said.contains("perf-script"), "{said}");

    let graph = flamegraph(server, "perfdemo").expect("perfdemo stored");
    let total = graph["root"]["total"].as_u64().unwrap();
    let hot = total_of(&graph["root"], "spin_hot_loop");
    assert!(total > 50, "only {total} samples from perf");
    assert!(hot * 2 > total, "spin_hot_loop has {hot} of {total} samples");
    assert!(total_of(&graph["root"], "do_work") >= hot, "do_work is not the caller of spin_hot_loop");
}

#[test]
fn speedscope_export_and_import_round_trip_through_the_cli() {
    let dir = tempdir();
    let serve = Server::start(&dir.path().join("store"), &[]);
    let server = serve.url.as_str();
    import_folded(server, "orig", dir.path(), "main;handle;parse_json 70\nmain;handle;render 20\nmain;idle 10\n");
    let file = dir.path().join("orig.speedscope.json");
    hotframe(&[
        "export",
        "--server",
        server,
        "--service",
        "orig",
        "--format",
        "speedscope",
        "--out",
        file.to_str().unwrap(),
    ]);
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(json["$schema"], "https://www.speedscope.app/file-format-schema.json");
    let profile = &json["profiles"][0];
    assert_eq!(profile["type"], "sampled");
    let weights: f64 = profile["weights"].as_array().unwrap().iter().map(|w| w.as_f64().unwrap()).sum();
    assert_eq!(weights, 100.0);
    // every frame index is in range, as speedscope requires
    let frames = json["shared"]["frames"].as_array().unwrap().len();
    assert!(profile["samples"].as_array().unwrap().iter().flat_map(|s| s.as_array().unwrap()).all(|i| (i
        .as_u64()
        .unwrap()
        as usize)
        < frames));

    hotframe(&["import", "--server", server, "--service", "copy", "--from", "now-30s", file.to_str().unwrap()]);
    let export = |service: &str| hotframe(&["export", "--server", server, "--service", service]);
    assert_eq!(export("copy"), export("orig"));
    assert!(export("copy").contains("main;handle;parse_json 70"));
}

/// What Go's profile package checks when it parses (profile.Parse + CheckValid).
fn check_go_pprof_rules(p: &pprof::protos::Profile) {
    let strings = p.string_table.len() as i64;
    assert_eq!(p.string_table.first().map(String::as_str), Some(""), "string_table[0] must be empty");
    let in_range = |i: i64, what: &str| assert!((0..strings).contains(&i), "{what}: string index {i} out of range");
    for vt in p.sample_type.iter().chain(p.period_type.iter()) {
        in_range(vt.ty, "value type");
        in_range(vt.unit, "value unit");
    }
    let unique = |ids: Vec<u64>, what: &str| -> HashSet<u64> {
        let set: HashSet<u64> = ids.iter().copied().collect();
        assert_eq!(set.len(), ids.len(), "duplicate {what} ids");
        assert!(!set.contains(&0), "{what} with reserved id 0");
        set
    };
    let mappings = unique(p.mapping.iter().map(|m| m.id).collect(), "mapping");
    let functions = unique(p.function.iter().map(|f| f.id).collect(), "function");
    let locations = unique(p.location.iter().map(|l| l.id).collect(), "location");
    for m in &p.mapping {
        in_range(m.filename, "mapping filename");
        in_range(m.build_id, "mapping build id");
    }
    for f in &p.function {
        in_range(f.name, "function name");
        in_range(f.system_name, "function system name");
        in_range(f.filename, "function file");
    }
    for l in &p.location {
        assert!(
            l.mapping_id == 0 || mappings.contains(&l.mapping_id),
            "location {} has unknown mapping {}",
            l.id,
            l.mapping_id
        );
        assert!(!l.line.is_empty() || l.address != 0, "location {} has neither lines nor address", l.id);
        for line in &l.line {
            assert!(
                functions.contains(&line.function_id),
                "location {} has a line with unknown function {}",
                l.id,
                line.function_id
            );
        }
    }
    assert!(!p.sample.is_empty());
    for s in &p.sample {
        assert_eq!(s.value.len(), p.sample_type.len(), "sample value count differs from sample types");
        for id in &s.location_id {
            assert!(locations.contains(id), "sample refers to unknown location {id}");
        }
        for label in &s.label {
            in_range(label.key, "label key");
            in_range(label.str, "label value");
        }
    }
}

#[test]
fn pprof_export_follows_the_rules_go_tool_pprof_checks() {
    let dir = tempdir();
    let serve = Server::start(&dir.path().join("store"), &[]);
    let server = serve.url.as_str();
    import_folded(server, "gopp", dir.path(), "main;a;b 5\nmain;a;c 3\nmain;d 2\n");
    let file = dir.path().join("gopp.pb.gz");
    hotframe(&[
        "export",
        "--server",
        server,
        "--service",
        "gopp",
        "--format",
        "pprof",
        "--out",
        file.to_str().unwrap(),
    ]);
    let gz = std::fs::read(&file).unwrap();
    assert_eq!(&gz[..2], &[0x1f, 0x8b], "go tool pprof expects gzip or raw protobuf; we send gzip");
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(&gz[..]).read_to_end(&mut raw).unwrap();
    let profile = pprof::protos::Profile::decode(&raw[..]).unwrap();
    check_go_pprof_rules(&profile);
    let name = |id: u64| {
        let f = profile.function.iter().find(|f| f.id == id).unwrap();
        profile.string_table[f.name as usize].clone()
    };
    // the leaf of the heaviest sample is `b`, as in the input
    let heaviest = profile.sample.iter().max_by_key(|s| s.value[0]).unwrap();
    let leaf = profile.location.iter().find(|l| l.id == heaviest.location_id[0]).unwrap();
    assert_eq!(name(leaf.line[0].function_id), "b");
    assert_eq!(heaviest.value[0], 5);

    // And Go's own reader: `go tool pprof -top` (Debian golang-go, installed by .ci/run).
    let tmp_home = dir.path().join("gohome");
    let out = std::process::Command::new("go")
        .args(["tool", "pprof", "-top", "-sample_index=samples"])
        .arg(&file)
        .env("HOME", &tmp_home)
        .env("GOCACHE", tmp_home.join("cache"))
        .output();
    match out {
        Ok(out) => {
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "go tool pprof failed: {}\n{text}", String::from_utf8_lossy(&out.stderr));
            assert!(text.contains("Total samples = 10"), "go tool pprof read other totals:\n{text}");
            let flat_of = |f: &str| {
                text.lines()
                    .find(|l| l.split_whitespace().last() == Some(f))
                    .and_then(|l| l.split_whitespace().next().map(str::to_string))
            };
            assert_eq!(flat_of("b").as_deref(), Some("5"), "{text}");
            assert_eq!(flat_of("c").as_deref(), Some("3"), "{text}");
            assert_eq!(flat_of("d").as_deref(), Some("2"), "{text}");
        }
        Err(e) => {
            require("`go` for go tool pprof", false, &format!("apt-get install golang-go (CI installs it): {e}"));
        }
    }
}
