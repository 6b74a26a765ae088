//! Whether this process may sample others, checked once before anything is opened, and
//! the open-file limit raised for the many descriptors sampling takes.
//!
//! In: the process's own uid, capabilities and a probe perf_event_open. Out: `Ok`, or a
//! `Permission` error that says what to run or grant. Must not: open events on targets.

use super::{perf, SamplerError};

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;

/// The message of a refused perf_event_open: what the kernel allows and how to grant it.
pub(super) fn permission_message(err: &dyn std::fmt::Display) -> String {
    let paranoid = std::fs::read_to_string("/proc/sys/kernel/perf_event_paranoid")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".to_string());
    format!(
        "hotframe agent needs root or CAP_PERFMON / CAP_SYS_ADMIN to sample other processes \
         (kernel.perf_event_paranoid = {paranoid}; perf_event_open said: {err}); run it with sudo, \
         or grant the capabilities: setcap cap_perfmon,cap_sys_ptrace+ep $(which hotframe)"
    )
}

/// Refuses early, with a message that says what to do, when the agent lacks privileges.
pub(super) fn check_permissions() -> Result<(), SamplerError> {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let caps = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("CapEff:").and_then(|v| u64::from_str_radix(v.trim(), 16).ok()))
        })
        .unwrap_or(0);
    let has = |cap: u32| caps & (1u64 << cap) != 0;
    if !root && !has(CAP_PERFMON) && !has(CAP_SYS_ADMIN) {
        return Err(SamplerError::Permission(permission_message(&"not attempted: the agent is not root")));
    }
    match perf::probe() {
        Ok(()) => Ok(()),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EACCES) | Some(libc::EPERM)) => {
            Err(SamplerError::Permission(permission_message(&e)))
        }
        Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => Err(SamplerError::Permission(
            "perf_event_open is not available in this kernel or container (ENOSYS); \
             allow it in the seccomp profile or run the agent on the host"
                .to_string(),
        )),
        Err(e) => Err(SamplerError::Io { what: "probing perf_event_open".into(), source: e }),
    }
}

/// Five descriptors per thread (two perf events, three /proc files) add up: raise the
/// soft limit to the hard one.
pub(super) fn raise_fd_limit() {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: plain getrlimit/setrlimit on a stack struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}
