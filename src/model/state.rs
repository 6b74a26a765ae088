//! Thread states (see docs/thread-states.md): what a thread was doing when it was sampled.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// What a thread was doing at a sample. Only `Runnable` samples cost CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ThreadState {
    /// On a CPU, or runnable and waiting for one (`R`).
    Runnable = 0,
    /// Sleeping with no timeout (futex wait, `epoll_wait(-1)`, blocking read).
    Waiting = 1,
    /// Sleeping with a timeout (`nanosleep`, futex/epoll with a timeout).
    TimedWaiting = 2,
    /// Waiting for a lock another thread holds (mutex/rwlock contention).
    Blocked = 3,
    /// Uninterruptible sleep (`D`), usually disk or page-fault I/O.
    Io = 4,
}

/// Sample counts indexed by `ThreadState::index()`.
pub type StateCounts = [u64; 5];

impl ThreadState {
    /// Every state, in index order.
    pub const ALL: [ThreadState; 5] =
        [ThreadState::Runnable, ThreadState::Waiting, ThreadState::TimedWaiting, ThreadState::Blocked, ThreadState::Io];

    /// The wire name: `RUNNABLE`, `WAITING`, `TIMED_WAITING`, `BLOCKED`, `IO`.
    pub fn as_str(self) -> &'static str {
        match self {
            ThreadState::Runnable => "RUNNABLE",
            ThreadState::Waiting => "WAITING",
            ThreadState::TimedWaiting => "TIMED_WAITING",
            ThreadState::Blocked => "BLOCKED",
            ThreadState::Io => "IO",
        }
    }

    /// Position in `ALL` and in a `StateCounts` array.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The state at `index`, if any.
    pub fn from_index(index: usize) -> Option<ThreadState> {
        ThreadState::ALL.get(index).copied()
    }

    /// True for the states that cost CPU (on-CPU samples).
    pub fn is_cpu(self) -> bool {
        self == ThreadState::Runnable
    }

    /// The states of a view: `cpu` (RUNNABLE), `latency` (all but WAITING), `all`.
    pub fn view(name: &str) -> Option<Vec<ThreadState>> {
        match name.to_ascii_lowercase().as_str() {
            "cpu" => Some(vec![ThreadState::Runnable]),
            "latency" => {
                Some(vec![ThreadState::Runnable, ThreadState::TimedWaiting, ThreadState::Blocked, ThreadState::Io])
            }
            "all" | "wall" => Some(ThreadState::ALL.to_vec()),
            _ => None,
        }
    }

    /// Parses a comma-separated list of states or view names (`RUNNABLE,BLOCKED`, `cpu`).
    pub fn parse_list(text: &str) -> Result<Vec<ThreadState>, UnknownState> {
        let mut out: Vec<ThreadState> = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let states = match ThreadState::view(part) {
                Some(v) => v,
                None => vec![part.parse()?],
            };
            for s in states {
                if !out.contains(&s) {
                    out.push(s);
                }
            }
        }
        out.sort();
        Ok(out)
    }
}

impl fmt::Display for ThreadState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A thread-state name that is not one of the five.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown thread state {0:?}: expected RUNNABLE, WAITING, TIMED_WAITING, BLOCKED, IO, or a view (cpu, latency, all)"
)]
pub struct UnknownState(pub String);

impl FromStr for ThreadState {
    type Err = UnknownState;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let norm = s.trim().to_ascii_uppercase().replace(['-', ' '], "_");
        Ok(match norm.as_str() {
            "RUNNABLE" | "RUNNING" | "R" | "ON_CPU" | "NATIVE" => ThreadState::Runnable,
            "WAITING" | "S" | "SLEEPING" => ThreadState::Waiting,
            "TIMED_WAITING" | "TIMEDWAITING" => ThreadState::TimedWaiting,
            "BLOCKED" => ThreadState::Blocked,
            "IO" | "D" | "DISK" => ThreadState::Io,
            _ => return Err(UnknownState(s.to_string())),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for s in ThreadState::ALL {
            assert_eq!(s.as_str().parse::<ThreadState>(), Ok(s));
            assert_eq!(ThreadState::from_index(s.index()), Some(s));
        }
        assert!("sleepy".parse::<ThreadState>().is_err());
    }

    #[test]
    fn lists_and_views() {
        assert_eq!(ThreadState::parse_list("cpu").unwrap(), vec![ThreadState::Runnable]);
        assert_eq!(
            ThreadState::parse_list("BLOCKED, runnable,BLOCKED").unwrap(),
            vec![ThreadState::Runnable, ThreadState::Blocked]
        );
        assert!(!ThreadState::parse_list("latency").unwrap().contains(&ThreadState::Waiting));
        assert!(ThreadState::parse_list("RUNNABLE,nope").is_err());
    }
}
