//! hotframe's integration tests: one binary, one module per topic. They use real
//! parts: a real SQLite file, the real router over HTTP, real processes.

mod agent;
mod browser;
mod cli;
mod common;
mod cost_window;
mod import;
mod inproc;
mod report;
mod sampler;
mod scrape;
mod sdk;
mod server;
mod store;
mod upload;
mod wins;
