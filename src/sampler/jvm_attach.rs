//! HotSpot's dynamic attach protocol, the one `jcmd` speaks, spoken directly: one
//! diagnostic command sent to a running JVM without starting a second JVM for `jcmd`
//! (about 0.2 s of CPU each time).
//!
//! In: the JVM's pid (as the host sees it and as its own namespace does), its user and
//! group, a command (`Compiler.perfmap`). Out: the JVM's answer, or why it failed (the
//! caller then falls back to the `jcmd` program). How: if the JVM's socket
//! (`/tmp/.java_pidNSPID` in its root) is not there yet, an `.attach_pidNSPID` file is
//! created in its working directory (else its /tmp) and the JVM gets SIGQUIT, which with
//! that file present starts its attach listener instead of printing a thread dump; then
//! the request `1\0jcmd\0COMMAND\0\0\0` goes over the socket, and the first line of the
//! answer is the status. The JVM accepts only its own user as peer: the calling thread
//! (one of its own, which ends after) switches its effective ids with the raw syscalls,
//! which change that thread alone. Must not: send SIGQUIT without the attach file in
//! place (that would print a thread dump in the target's output), wait longer than the
//! given time, or be called on a thread that goes on running other work with the ids
//! switched.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Runs `command` in the JVM `pid` (NSPID `nspid` in its own pid namespace) as `uid`/`gid`
/// within `timeout`; the JVM's output on success.
pub(super) fn jcmd(
    pid: u32,
    nspid: u32,
    (uid, gid): (u32, u32),
    command: &str,
    timeout: Duration,
) -> Result<String, String> {
    let ids = EffectiveIds::switch_to(uid, gid)?;
    let result = attach_and_send(pid, nspid, command, timeout);
    drop(ids);
    result
}

fn attach_and_send(pid: u32, nspid: u32, command: &str, timeout: Duration) -> Result<String, String> {
    let started = Instant::now();
    let socket = PathBuf::from(format!("/proc/{pid}/root/tmp/.java_pid{nspid}"));
    if !socket.exists() {
        let candidates =
            [format!("/proc/{pid}/cwd/.attach_pid{nspid}"), format!("/proc/{pid}/root/tmp/.attach_pid{nspid}")];
        let attach_file = candidates
            .iter()
            .map(PathBuf::from)
            .find(|path| std::fs::File::create(path).is_ok())
            .ok_or_else(|| format!("cannot create an attach file ({})", candidates.join(" or ")))?;
        // SAFETY: kill(2) with a pid and a signal number; no memory involved.
        let sent = unsafe { libc::kill(pid as libc::pid_t, libc::SIGQUIT) } == 0;
        let mut listening = false;
        while sent && started.elapsed() < timeout {
            if socket.exists() {
                listening = true;
                break;
            }
            // A thread of its own waits for the JVM to start its listener: polling is the
            // bounded wait (the JVM gives no other sign).
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = std::fs::remove_file(&attach_file);
        if !sent {
            return Err(format!("cannot signal pid {pid}: {}", std::io::Error::last_os_error()));
        }
        if !listening {
            return Err(format!("the JVM did not open {} within {} s", socket.display(), timeout.as_secs()));
        }
    }
    let left = timeout.saturating_sub(started.elapsed()).max(Duration::from_millis(100));
    let mut stream = UnixStream::connect(&socket).map_err(|e| format!("connect {}: {e}", socket.display()))?;
    stream.set_read_timeout(Some(left)).map_err(|e| e.to_string())?;
    stream.set_write_timeout(Some(left)).map_err(|e| e.to_string())?;
    // Protocol version 1, command "jcmd", three arguments (the diagnostic command, two empty).
    let request = format!("1\0jcmd\0{command}\0\0\0");
    stream.write_all(request.as_bytes()).map_err(|e| format!("send: {e}"))?;
    let mut answer = Vec::new();
    stream.take(1 << 20).read_to_end(&mut answer).map_err(|e| format!("read: {e}"))?;
    let answer = String::from_utf8_lossy(&answer);
    let (status, output) = answer.split_once('\n').unwrap_or((&answer, ""));
    match status.trim() {
        // A diagnostic command that throws still answers 0, with the exception as output.
        "0" if !output.contains("Exception") => Ok(output.to_string()),
        "0" => Err(output.lines().next().unwrap_or("").to_string()),
        other => Err(format!("the JVM answered {other}: {}", output.lines().next().unwrap_or(""))),
    }
}

/// The calling thread's effective uid and gid, switched (only if they differ from root)
/// and switched back when dropped. Linux keeps credentials per thread; the raw syscalls
/// change this thread's alone (glibc's wrappers would change every thread's).
struct EffectiveIds {
    /// The ids to go back to, if switched.
    previous: Option<(u32, u32)>,
}

impl EffectiveIds {
    fn switch_to(uid: u32, gid: u32) -> Result<EffectiveIds, String> {
        // SAFETY: geteuid/getegid have no preconditions (the raw calls read this thread's ids).
        let previous = unsafe { (libc::syscall(libc::SYS_geteuid) as u32, libc::syscall(libc::SYS_getegid) as u32) };
        if previous == (uid, gid) {
            return Ok(EffectiveIds { previous: None });
        }
        let keep = u32::MAX; // -1: leave that id as it is
                             // SAFETY: raw setresgid/setresuid with plain integers, on this thread only.
        unsafe {
            if libc::syscall(libc::SYS_setresgid, keep, gid, keep) != 0 {
                return Err(format!("cannot take gid {gid}: {}", std::io::Error::last_os_error()));
            }
            if libc::syscall(libc::SYS_setresuid, keep, uid, keep) != 0 {
                let err = std::io::Error::last_os_error();
                libc::syscall(libc::SYS_setresgid, keep, previous.1, keep);
                return Err(format!("cannot take uid {uid}: {err}"));
            }
        }
        Ok(EffectiveIds { previous: Some(previous) })
    }
}

impl Drop for EffectiveIds {
    fn drop(&mut self) {
        if let Some((uid, gid)) = self.previous {
            let keep = u32::MAX;
            // SAFETY: back to the previous ids (still the saved ones), on this thread only.
            unsafe {
                libc::syscall(libc::SYS_setresuid, keep, uid, keep);
                libc::syscall(libc::SYS_setresgid, keep, gid, keep);
            }
        }
    }
}
