//! What the overhead benches share: the profilers they compare and small environment
//! helpers. Included by `benches/agent_overhead.rs` and `benches/service_overhead.rs`
//! with `#[path]` (each bench is its own crate).
//!
//! In: environment variables, PATH. Out: values. Must not: start anything.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// A profiler under comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profiler {
    None,
    Hotframe,
    /// `hotframe agent --cpu-only`: no wall-clock thread states, the like of perf/samply.
    HotframeCpuOnly,
    Perf,
    Samply,
}

impl Profiler {
    pub fn name(self) -> &'static str {
        match self {
            Profiler::None => "unprofiled",
            Profiler::Hotframe => "hotframe agent",
            Profiler::HotframeCpuOnly => "hotframe agent --cpu-only",
            Profiler::Perf => "perf --call-graph dwarf",
            Profiler::Samply => "samply",
        }
    }
}

/// An integer environment variable, or `default`.
pub fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// `name` found on PATH.
pub fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(name)).find(|p| p.is_file())
}
