//! SIGINT/SIGTERM to one stop flag that every long-running command reads (`serve`,
//! `agent`, `scrape`, `demo`, `demo-workload`), so that a stop request leads to a flush
//! and a clean exit instead of a killed process. One flag per process: the demo's
//! in-process server and agent stop on the same Ctrl-C.
//!
//! In: signals. Out: `stop_requested()` for loops, `stopped()` for async code. Must not:
//! do anything in the handler beyond an atomic store (async-signal safety), or know
//! about the CLI.

use std::sync::atomic::{AtomicBool, Ordering};
#[cfg(feature = "server")]
use std::time::Duration;

static STOP: AtomicBool = AtomicBool::new(false);

/// How often `stopped()` looks at the flag: the handler can only store, not wake a task.
#[cfg(feature = "server")]
const ASYNC_POLL: Duration = Duration::from_millis(100);

extern "C" fn on_signal(_signal: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Routes SIGINT and SIGTERM to the stop flag (idempotent).
pub fn install() {
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: a sigaction with a handler that only stores to an atomic; the struct is
        // zeroed then filled, as sigaction(2) expects.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
    }
}

/// True once SIGINT or SIGTERM arrived (after `install`).
pub fn stop_requested() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// Resolves once SIGINT or SIGTERM arrived (after `install`), for async code such as a
/// server's graceful shutdown.
#[cfg(feature = "server")]
pub async fn stopped() {
    while !stop_requested() {
        tokio::time::sleep(ASYNC_POLL).await;
    }
}
