//! hotframe: a continuous profiler with yearly CPU cost estimation.
//!
//! The pipeline, one way:
//! - external agent: `sampler` (perf_event_open, framehop) -> `symbolize` ->
//!   `model::Profile` -> `upload` -> HTTP (`agent` wires these together)
//! - in-process agent: pprof-rs -> `inproc` -> `model::Profile` -> `upload` -> HTTP
//! - server: `server` ingest -> `store` -> query -> `cost` -> JSON for `web/`
//!
//! Module map: `model` (vocabulary and codecs, no I/O), `cost` (pure pricing),
//! `upload` (resilient uploader), `store` (SQLite), `server` (axum), `client` (CLI
//! commands that talk to a server), `sampler` and `symbolize` (Linux agent), `demo`.

pub mod cost;
pub mod host;
pub mod model;
pub mod upload;

#[cfg(feature = "agent")]
pub mod agent;
#[cfg(all(feature = "server", feature = "agent"))]
pub mod cli;
#[cfg(feature = "server")]
pub mod client;
#[cfg(all(feature = "server", feature = "agent"))]
pub mod demo;
#[cfg(feature = "server")]
pub mod report;
#[cfg(feature = "server")]
pub mod server;
#[cfg(feature = "server")]
pub mod store;
#[cfg(feature = "server")]
pub mod wins;
/// With only the `inproc` feature, `hotframe::agent::Agent` is the in-process agent
/// (with `agent` on too, src/agent re-exports it).
#[cfg(all(feature = "inproc", not(feature = "agent")))]
pub mod agent {
    pub use crate::inproc::{Agent, AgentBuilder, InprocError};
}
#[cfg(feature = "inproc")]
pub mod inproc;
#[cfg(feature = "agent")]
pub mod sampler;
#[cfg(all(feature = "server", feature = "agent"))]
pub mod scrape;
#[cfg(any(feature = "server", feature = "agent"))]
pub mod signals;
#[cfg(feature = "agent")]
pub mod symbolize;
