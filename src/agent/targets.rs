//! Which processes the agent samples: given pids (and their descendants), processes
//! whose name or command line matches a regex (decided by the sampler at each exec and
//! first sample, so processes started later are picked up at once), or a command the
//! agent starts itself.
//!
//! In: the user's choice. Out: a `TargetSpec`. Must not: attach (the agent loop does),
//! or match the agent itself or the shells that started it (`sampler::selection`
//! excludes them).

use regex::Regex;

/// How targets are chosen.
#[derive(Debug, Clone)]
pub enum TargetSpec {
    /// These pids and their descendants; the agent exits when all of them have exited.
    Pids(Vec<u32>),
    /// Every process whose `comm` or command line matches, now and later.
    Name(Regex),
    /// Start this command and sample it and its descendants; the agent exits when they
    /// have all exited.
    Command(Vec<String>),
}
