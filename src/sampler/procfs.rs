//! What the sampler reads from /proc: a process's threads, comm, exe and executable
//! mappings, and per thread its scheduler state, CPU time, run-queue delay and the
//! syscall it is blocked in (with the user `sp`/`pc` at syscall entry).
//!
//! In: pids and tids. Out: plain values. Must not: keep state beyond the open file
//! descriptors of `ThreadFiles` (kept open so each tick costs one `pread` per file).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// The thread ids of `pid` (from /proc/PID/task), or an error if the process is gone.
pub fn thread_ids(pid: u32) -> io::Result<Vec<u32>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let entry = entry?;
        if let Some(tid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) {
            out.push(tid);
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// True while /proc/PID exists and is not a zombie.
pub fn is_alive(pid: u32) -> bool {
    match std::fs::read(format!("/proc/{pid}/stat")) {
        Ok(bytes) => !matches!(parse_stat_state(&bytes), Some('Z') | Some('X') | None),
        Err(_) => false,
    }
}

/// The command name (`comm`) of a process or thread.
pub fn comm(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).ok().map(|s| s.trim_end().to_string())
}

/// The executable path of a process.
pub fn exe(pid: u32) -> Option<String> {
    std::fs::read_link(format!("/proc/{pid}/exe")).ok().map(|p| p.to_string_lossy().into_owned())
}

/// The state letter of a /proc/.../stat line (`R`, `S`, `D`, `Z`, `T`, ...).
pub fn parse_stat_state(stat: &[u8]) -> Option<char> {
    // The comm field may contain spaces and parentheses: the state follows the last ')'.
    let close = stat.iter().rposition(|&b| b == b')')?;
    stat.get(close + 2).map(|&b| b as char)
}

/// One executable file mapping of /proc/PID/maps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    /// First address.
    pub start: u64,
    /// One past the last address.
    pub end: u64,
    /// File offset of `start`.
    pub offset: u64,
    /// Device (major:minor as in maps) and inode, to tell files apart.
    pub dev_inode: (String, u64),
    /// Path of the file, or a pseudo name like `[vdso]`.
    pub path: String,
}

/// The executable mappings of `pid` (`r-xp` or `--xp`), files and `[vdso]`.
pub fn executable_mappings(pid: u32) -> io::Result<Vec<Mapping>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/maps"))?;
    Ok(parse_maps(&text))
}

/// Parses the text of /proc/PID/maps, keeping executable mappings only.
pub fn parse_maps(text: &str) -> Vec<Mapping> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut fields = line.splitn(6, ' ');
        let (Some(range), Some(perms), Some(offset), Some(dev), Some(inode)) =
            (fields.next(), fields.next(), fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        if perms.as_bytes().get(2) != Some(&b'x') {
            continue;
        }
        let path = fields.next().unwrap_or("").trim_start().to_string();
        if path.is_empty() || (path.starts_with('[') && path != "[vdso]") {
            continue;
        }
        let Some((start, end)) = range.split_once('-') else { continue };
        let (Ok(start), Ok(end), Ok(offset)) =
            (u64::from_str_radix(start, 16), u64::from_str_radix(end, 16), u64::from_str_radix(offset, 16))
        else {
            continue;
        };
        out.push(Mapping { start, end, offset, dev_inode: (dev.to_string(), inode.parse().unwrap_or(0)), path });
    }
    out
}

/// Scheduler figures of a thread from /proc/.../schedstat.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SchedStat {
    /// Nanoseconds spent on a CPU.
    pub cpu_ns: u64,
    /// Nanoseconds spent runnable, waiting for a CPU.
    pub run_delay_ns: u64,
    /// Times it was put on a CPU: unchanged means it has not run since.
    pub slices: u64,
}

/// The syscall a sleeping thread is in, from /proc/.../syscall.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Syscall {
    /// The thread is running (the kernel cannot tell).
    Running,
    /// Not in a syscall (e.g. sleeping on a page fault): user sp and pc.
    NotInSyscall {
        /// User stack pointer.
        sp: u64,
        /// User instruction pointer.
        pc: u64,
    },
    /// Blocked in syscall `nr` with its six arguments, user sp and pc.
    In {
        /// Syscall number (x86_64).
        nr: i64,
        /// The six arguments.
        args: [u64; 6],
        /// User stack pointer at syscall entry.
        sp: u64,
        /// User instruction pointer (return address of the syscall instruction).
        pc: u64,
    },
}

impl Syscall {
    /// User sp and pc, when the thread is not running.
    pub fn sp_pc(&self) -> Option<(u64, u64)> {
        match *self {
            Syscall::Running => None,
            Syscall::NotInSyscall { sp, pc } | Syscall::In { sp, pc, .. } => Some((sp, pc)),
        }
    }
}

/// Parses /proc/.../syscall text.
pub fn parse_syscall(text: &str) -> Option<Syscall> {
    let text = text.trim();
    if text == "running" {
        return Some(Syscall::Running);
    }
    let fields: Vec<&str> = text.split_ascii_whitespace().collect();
    let nr: i64 = fields.first()?.parse().ok()?;
    let hex = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok();
    if fields.len() == 3 {
        return Some(Syscall::NotInSyscall { sp: hex(fields[1])?, pc: hex(fields[2])? });
    }
    if fields.len() != 9 {
        return None;
    }
    let mut args = [0u64; 6];
    for (i, a) in args.iter_mut().enumerate() {
        *a = hex(fields[1 + i])?;
    }
    Some(Syscall::In { nr, args, sp: hex(fields[7])?, pc: hex(fields[8])? })
}

/// Open /proc files of one thread, read with `pread` at every tick.
pub struct ThreadFiles {
    tid: u32,
    stat: File,
    schedstat: File,
    syscall: File,
    buf: Vec<u8>,
}

impl ThreadFiles {
    /// The thread.
    pub fn tid(&self) -> u32 {
        self.tid
    }

    /// Opens the files of thread `tid` of process `pid`.
    pub fn open(pid: u32, tid: u32) -> io::Result<ThreadFiles> {
        let base = format!("/proc/{pid}/task/{tid}");
        Ok(ThreadFiles {
            tid,
            stat: File::open(format!("{base}/stat"))?,
            schedstat: File::open(format!("{base}/schedstat"))?,
            syscall: File::open(format!("{base}/syscall"))?,
            buf: vec![0; 1024],
        })
    }

    fn read(file: &File, buf: &mut [u8]) -> io::Result<usize> {
        let n = file.read_at(buf, 0)?;
        if n == 0 {
            // An exited thread's files read empty.
            return Err(io::Error::new(io::ErrorKind::NotFound, "thread exited"));
        }
        Ok(n)
    }

    /// CPU time and run-queue delay so far.
    pub fn schedstat(&mut self) -> io::Result<SchedStat> {
        let n = Self::read(&self.schedstat, &mut self.buf)?;
        let text = std::str::from_utf8(&self.buf[..n]).unwrap_or("");
        let mut it = text.split_ascii_whitespace().map(|f| f.parse::<u64>().unwrap_or(0));
        Ok(SchedStat {
            cpu_ns: it.next().unwrap_or(0),
            run_delay_ns: it.next().unwrap_or(0),
            slices: it.next().unwrap_or(0),
        })
    }

    /// The state letter (`R`, `S`, `D`, ...).
    pub fn state(&mut self) -> io::Result<char> {
        let n = Self::read(&self.stat, &mut self.buf)?;
        parse_stat_state(&self.buf[..n]).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "malformed stat"))
    }

    /// The syscall the thread is blocked in.
    pub fn syscall(&mut self) -> io::Result<Syscall> {
        let n = Self::read(&self.syscall, &mut self.buf)?;
        let text = std::str::from_utf8(&self.buf[..n]).unwrap_or("");
        parse_syscall(text).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "malformed syscall"))
    }
}

/// Reads `len` bytes of another process's memory at `addr` into `out` (cleared first);
/// returns how many bytes were read (short reads stop at an unmapped page), or the error
/// (EPERM: ptrace access to that process is denied).
pub fn read_memory(pid: u32, addr: u64, len: usize, out: &mut Vec<u8>) -> io::Result<usize> {
    out.clear();
    out.resize(len, 0);
    let local = libc::iovec { iov_base: out.as_mut_ptr() as *mut libc::c_void, iov_len: len };
    let remote = libc::iovec { iov_base: addr as *mut libc::c_void, iov_len: len };
    // SAFETY: local points to `len` writable bytes; the kernel checks the remote range.
    let n = unsafe { libc::process_vm_readv(pid as i32, &local, 1, &remote, 1, 0) };
    if n < 0 {
        out.clear();
        return Err(io::Error::last_os_error());
    }
    out.truncate(n as usize);
    Ok(n as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_syscall_lines() {
        assert_eq!(parse_syscall("running\n"), Some(Syscall::Running));
        assert_eq!(
            parse_syscall("-1 0x7ffc1000 0x401000\n"),
            Some(Syscall::NotInSyscall { sp: 0x7ffc1000, pc: 0x401000 })
        );
        let s = parse_syscall("202 0x55d0 0x80 0x0 0x7f00 0x0 0xffffffff 0x7f10 0x7f20\n").unwrap();
        assert_eq!(s, Syscall::In { nr: 202, args: [0x55d0, 0x80, 0, 0x7f00, 0, 0xffffffff], sp: 0x7f10, pc: 0x7f20 });
        assert_eq!(parse_syscall("garbage"), None);
    }

    #[test]
    fn parses_state_after_comm_with_parens() {
        assert_eq!(parse_stat_state(b"42 (a) b) S 1 2 3"), Some('S'));
        assert_eq!(parse_stat_state(b"42 (x) D 1"), Some('D'));
        assert_eq!(parse_stat_state(b"garbage"), None);
    }

    #[test]
    fn keeps_only_executable_mappings() {
        let maps = "\
55d0a000-55d0b000 r--p 00000000 fe:01 123 /usr/bin/x
55d0b000-55d0c000 r-xp 00001000 fe:01 123 /usr/bin/x
7ffd000-7ffe000 r-xp 00000000 00:00 0 [vdso]
7fff000-7fff100 rw-p 00000000 00:00 0 [stack]
7f00000-7f01000 r-xp 00000000 00:00 0
7f10000-7f11000 r-xp 00002000 fe:01 77 /lib/with space.so
";
        let m = parse_maps(maps);
        assert_eq!(m.len(), 3);
        assert_eq!(m[0].start, 0x55d0b000);
        assert_eq!(m[0].offset, 0x1000);
        assert_eq!(m[0].dev_inode, ("fe:01".to_string(), 123));
        assert_eq!(m[1].path, "[vdso]");
        assert_eq!(m[2].path, "/lib/with space.so");
    }

    #[test]
    fn reads_own_threads_and_state() {
        let me = std::process::id();
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() } as u32;
        assert!(thread_ids(me).unwrap().contains(&tid));
        assert!(is_alive(me));
        let mut files = ThreadFiles::open(me, tid).unwrap();
        assert_eq!(files.state().unwrap(), 'R');
        assert!(files.schedstat().unwrap().cpu_ns > 0);
    }
}
