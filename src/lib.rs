//! hotframe: a continuous profiler with yearly CPU cost estimation.
//!
//! The pipeline, one way:
//! - external agent: `sampler` (perf_event_open, framehop) -> `symbolize` ->
//!   `model::Profile` -> `upload` -> HTTP (`agent` wires these together)
//! - in-process agent: pprof-rs -> `inproc` -> `model::Profile` -> `upload` -> HTTP
//! - server: `server` ingest -> `store` -> query -> `cost` -> JSON for `web/`;
//!   ops wins: `server` -> `wins` (measure, ledger, outbox) -> `report` -> email
//!
//! Module map (feature in brackets; the dependency arrows point one way: `model` and
//! `cost` import nothing of the crate but `model`, `store` only `model`, `wins` and
//! `report` take values and a store, `server` wires them together, `cli` stops at `main`):
//! - `model`: vocabulary (Profile, Stack, ThreadState, Aggregate, flame tree) and the
//!   pprof/folded/speedscope/perf-script codecs, no I/O
//! - `cost`: the one home of the cost formula (docs/cost.md), pure
//! - `host`: this machine's host name, the `host` label both agents send (Hp)
//! - `upload`: the resilient uploader both agents use (queue, spool, backoff, jitter)
//! - `signals`: SIGINT/SIGTERM to one stop flag for every long-running command
//! - `store` \[server\]: the ProfileStore trait and its SQLite backend
//! - `wins` \[server\]: ops wins (measure, ledger, outbox)
//! - `report` \[server\]: renders a win (HTML/text email, diff flame graph PNG), SMTP
//! - `server` \[server\]: axum router, ingest, queries, web assets
//! - `client` \[server\]: the CLI commands that talk to a server (export, import, win)
//! - `sampler`, `symbolize`, `agent` \[agent\]: the external Linux agent
//! - `inproc` \[inproc\]: the in-process agent for Rust services (pprof-rs)
//! - `scrape`, `demo`, `cli` \[server + agent\]: pull from pprof endpoints, the demo,
//!   flags turned into each stage's own config

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
