//! The machine's host name: the `host` label both agents (external and in-process) put
//! on every profile. The server counts distinct `host` values per service as `Hp` in the
//! cost formula, so the two agents on one machine must name it the same way.
//!
//! In: the kernel's host name (UTS namespace). Out: a non-empty string. Must not: fail
//! (a host without a name is `unknown`).

/// The machine's host name, for the `host` label; `unknown` when it has none.
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into our buffer.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let name = if rc == 0 {
        let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end]).trim().to_string()
    } else {
        String::new()
    };
    if name.is_empty() {
        "unknown".to_string()
    } else {
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_host_like_the_kernel_does() {
        let name = hostname();
        assert!(!name.is_empty());
        // /proc gives the same UTS name the in-process agent used to read.
        let proc_name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        if !proc_name.trim().is_empty() {
            assert_eq!(name, proc_name.trim());
        }
    }
}
