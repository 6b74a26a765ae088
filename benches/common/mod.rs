//! What the benches share: the profilers the overhead benches compare, small environment
//! helpers, and the synthetic service profiles of the store benches (a pool of stacks
//! with Zipf-like weights). Included with `#[path]` (each bench is its own crate).
//!
//! In: environment variables, PATH. Out: values. Must not: start anything.

#![allow(dead_code)]

use hotframe::model::{Profile, ProfileBuilder, ThreadState};
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

/// Median of `v` (not empty).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Function names that look like a Rust/C++ service's.
pub fn frame_names(n: usize, rng: &mut fastrand::Rng) -> Vec<String> {
    let crates =
        ["tokio", "hyper", "serde_json", "checkout", "std", "core", "alloc", "tower", "sqlx", "prost", "h2", "regex"];
    let modules = ["runtime", "task", "io", "ser", "de", "proto", "handler", "pool", "codec", "sync", "raw", "fmt"];
    let types =
        ["Harness<T,S>", "Connection", "Serializer<W,F>", "OrderService", "RawVec<T>", "Mutex<T>", "Encoder", "Pool"];
    let verbs = [
        "poll",
        "call",
        "encode",
        "decode",
        "write_all",
        "lock",
        "parse",
        "handle_request",
        "format_escaped_str",
        "grow",
    ];
    (0..n)
        .map(|i| {
            format!(
                "{}::{}::{}::{}_{}",
                crates[rng.usize(..crates.len())],
                modules[rng.usize(..modules.len())],
                types[rng.usize(..types.len())],
                verbs[rng.usize(..verbs.len())],
                i
            )
        })
        .collect()
}

/// The pool: stacks (root first) of frame indices, with their thread state.
pub struct Pool {
    /// Frame names.
    pub names: Vec<String>,
    /// Stacks (root first) with their state.
    pub stacks: Vec<(Vec<u32>, ThreadState)>,
    /// Cumulative Zipf-like weights over `stacks`.
    cumulative: Vec<f64>,
}

/// A pool of `n` distinct stacks with Zipf-like weights.
pub fn pool(rng: &mut fastrand::Rng, n: usize) -> Pool {
    let names = frame_names(6_000, rng);
    let mut seen = std::collections::HashSet::new();
    let mut stacks = Vec::new();
    while stacks.len() < n {
        // A walk down a call tree: the child at each level is a function of the parent
        // and a small, skewed choice, so stacks share long prefixes.
        let depth = rng.usize(10..=40);
        let mut frame = rng.usize(..3) as u64;
        let mut stack = Vec::with_capacity(depth);
        for _ in 0..depth {
            stack.push((frame % names.len() as u64) as u32);
            let choice = (rng.f64().powi(3) * 6.0) as u64;
            frame = frame.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(choice * 7919 + 1) >> 7;
        }
        if seen.insert(stack.clone()) {
            let state = match rng.u32(..100) {
                0..=54 => ThreadState::Runnable,
                55..=79 => ThreadState::Waiting,
                80..=89 => ThreadState::TimedWaiting,
                90..=94 => ThreadState::Blocked,
                _ => ThreadState::Io,
            };
            stacks.push((stack, state));
        }
    }
    let mut total = 0.0;
    let cumulative = (0..stacks.len())
        .map(|i| {
            total += 1.0 / (i as f64 + 1.0).powf(0.9);
            total
        })
        .collect();
    Pool { names, stacks, cumulative }
}

impl Pool {
    pub fn draw(&self, rng: &mut fastrand::Rng) -> usize {
        let x = rng.f64() * self.cumulative[self.cumulative.len() - 1];
        self.cumulative.partition_point(|&c| c < x).min(self.stacks.len() - 1)
    }

    /// A profile template with `distinct` distinct stacks; counts are the draws times
    /// `scale` (longer windows have proportionally more samples).
    pub fn profile(&self, rng: &mut fastrand::Rng, distinct: usize, scale: u64, len_ms: i64) -> Profile {
        let mut counts = std::collections::HashMap::new();
        while counts.len() < distinct {
            *counts.entry(self.draw(rng)).or_insert(0u64) += 1;
        }
        let mut b = ProfileBuilder::new("checkout", 0, len_ms, 10_101_010)
            .label("version", "1.4.2")
            .label("region", "eu-west-1");
        let mut names: Vec<&str> = Vec::new();
        for (i, n) in counts {
            let (stack, state) = &self.stacks[i];
            names.clear();
            names.extend(stack.iter().map(|f| self.names[*f as usize].as_str()));
            b.add(&names, *state, n * scale);
        }
        b.finish()
    }
}
