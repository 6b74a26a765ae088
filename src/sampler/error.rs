//! The sampler's one error type.
//!
//! In: what failed (an OS error, a missing process, an option out of range). Out:
//! `SamplerError`, whose message says what was wrong and what to do about it. Must not:
//! log or retry; the caller decides.

/// What went wrong while sampling.
#[derive(Debug, thiserror::Error)]
pub enum SamplerError {
    /// The agent may not use perf_event_open or read other processes.
    #[error("{0}")]
    Permission(String),
    /// The target does not exist (message names the pid).
    #[error("{0}")]
    NoSuchProcess(String),
    /// An option is out of range.
    #[error("invalid sampler option: {0}")]
    BadOption(String),
    /// perf_event_open or its ring buffer failed for another reason.
    #[error("perf_event_open on CPU {cpu} failed: {source}{}", perf_hint(.source))]
    Perf {
        /// The CPU whose system-wide event failed.
        cpu: u32,
        /// The OS error.
        source: std::io::Error,
    },
    /// Another OS error.
    #[error("{what}: {source}")]
    Io {
        /// What the sampler was doing.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
}

/// What to do about a perf_event_open or ring-buffer error.
fn perf_hint(err: &std::io::Error) -> &'static str {
    match err.raw_os_error() {
        Some(libc::EMFILE) | Some(libc::ENFILE) => {
            "; the open-file limit is reached (one descriptor per CPU, three per target thread): raise it with ulimit -n"
        }
        Some(libc::ENOMEM) => "; the kernel could not lock ring-buffer memory: raise kernel.perf_event_mlock_kb",
        Some(libc::ENOENT) | Some(libc::EOPNOTSUPP) => {
            "; this kernel has no cpu-clock software event for sampling (CONFIG_PERF_EVENTS)"
        }
        _ => "",
    }
}
