//! hotframe's integration tests: one binary, one module per topic. They use real
//! parts: a real SQLite file, the real router over HTTP, real processes. `common` is the
//! shared harness (processes, server, HTTP, `eventually`, golden files, the root check).

// A test's helpers may unwrap like its #[test] functions: a panic here is a failed test.
#![allow(clippy::unwrap_used)]

mod agent;
mod browser;
mod cli;
mod common;
mod cost_window;
mod golden;
mod hardening;
#[path = "../browser/harness.rs"]
mod harness;
mod hostwide;
mod import;
mod inproc;
mod pg;
mod replicas;
mod report;
mod runtimes;
mod sampler;
mod scrape;
mod sdk;
mod selftest;
mod server;
mod store;
mod upload;
mod wins;
