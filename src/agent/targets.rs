//! Which processes the agent samples: given pids (and their descendants), processes
//! whose name or command line matches a regex (decided by the sampler at each exec and
//! first sample, so processes started later are picked up at once), a command the
//! agent starts itself, or every process of the host (`--all`).
//!
//! In: the user's choice. Out: a `TargetSpec`. Must not: attach (the agent loop does),
//! or match the agent itself or the shells that started it (`sampler::selection`
//! excludes them).
//!
//! Also the name a target's profiles carry as their `process` label (`process_label`).
//!

use regex::Regex;

/// How targets are chosen.
#[derive(Debug, Clone)]
pub enum TargetSpec {
    /// These pids and their descendants; the agent exits when all of them have exited.
    Pids(Vec<u32>),
    /// Every process whose `comm` or command line matches, now and later.
    Name(Regex),
    /// Every process of the host (`--all`) but those `exclude` matches, each named by
    /// `rules`, its cgroup or its program (`super::services`).
    All {
        /// Processes left out (comm or command line).
        exclude: Option<Regex>,
        /// The config file's service rules.
        rules: Vec<super::services::ServiceRule>,
    },
    /// Start this command and sample it and its descendants; the agent exits when they
    /// have all exited.
    Command(Vec<String>),
}

/// The `process` label of `pid`: the name it was started as (`process_name` of its comm,
/// argv[0] and executable); None when the process is gone.
pub fn process_label(pid: u32) -> Option<String> {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let argv0 = cmdline.split(|b| *b == 0).next().map(String::from_utf8_lossy).unwrap_or_default();
    let exe =
        std::fs::read_link(format!("/proc/{pid}/exe")).map(|p| p.to_string_lossy().into_owned()).unwrap_or_default();
    Some(process_name(comm.trim_end_matches('\n'), &argv0, &exe))
}

/// Longest `comm` the kernel keeps (TASK_COMM_LEN minus the NUL).
const COMM_MAX: usize = 15;

/// The name a process goes by, from its `comm`, its argv[0] (which a process may rewrite
/// as a title, `redis-server *:6379`, `nginx: worker process`: the first word counts) and
/// the path of its executable. Usually `comm`; the name in argv[0] where the kernel named
/// the process after the file a symlink points to (started with fexecve, as systemd's
/// executor does: `redis-server` -> `redis-check-rdb`, or after a descriptor number on
/// kernels before 6.14) or cut `comm` to 15 bytes. A name the process gave itself
/// (prctl PR_SET_NAME) stays.
pub fn process_name(comm: &str, argv0: &str, exe: &str) -> String {
    let first_word = argv0.split_whitespace().next().unwrap_or("");
    let started = first_word.rsplit('/').next().unwrap_or("").trim_end_matches(':').trim_start_matches('-');
    let exe_name = exe.trim_end_matches(" (deleted)").rsplit('/').next().unwrap_or("");
    if started.is_empty() || started == comm {
        return if comm.is_empty() { exe_name.to_string() } else { comm.to_string() };
    }
    let cut = |name: &str| name.char_indices().nth(COMM_MAX).map_or(name.len(), |(i, _)| i);
    let truncated = comm.len() == COMM_MAX && started.starts_with(comm);
    let named_after_file = comm == &exe_name[..cut(exe_name)] && started != exe_name;
    let named_after_fd = !comm.is_empty() && comm.bytes().all(|b| b.is_ascii_digit());
    if comm.is_empty() || truncated || named_after_file || named_after_fd {
        started.to_string()
    } else {
        comm.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_names_are_what_the_process_was_started_as() {
        // Debian's redis-server is a symlink to redis-check-rdb; started with fexecve the
        // kernel names it after the file (cut to 15 bytes), or after the descriptor.
        let exe = "/usr/bin/redis-check-rdb";
        assert_eq!(process_name("redis-check-rdb", "redis-server *:6379", exe), "redis-server");
        assert_eq!(process_name("3", "/usr/bin/redis-server", exe), "redis-server");
        assert_eq!(process_name("redis-server", "redis-server *:6379", exe), "redis-server");
        // Long names cut by the kernel come back whole.
        let exe = "/usr/lib/jvm/bin/elasticsearch-server";
        assert_eq!(process_name("elasticsearch-s", "/opt/es/elasticsearch-server", exe), "elasticsearch-server");
        // Titles, login shells and interpreters keep comm.
        assert_eq!(
            process_name("postgres", "postgres: checkpointer ", "/usr/lib/postgresql/15/bin/postgres"),
            "postgres"
        );
        assert_eq!(process_name("nginx", "nginx: worker process", "/usr/sbin/nginx"), "nginx");
        assert_eq!(process_name("bash", "-bash", "/usr/bin/bash"), "bash");
        assert_eq!(process_name("python3", "/usr/bin/python3", "/usr/bin/python3.11"), "python3");
        // A name the process gave itself stays; so does busybox's applet name.
        assert_eq!(process_name("worker-7", "/srv/app", "/srv/app"), "worker-7");
        assert_eq!(process_name("ls", "ls", "/bin/busybox"), "ls");
        assert_eq!(process_name("", "", "/srv/app (deleted)"), "app");
    }

    #[test]
    fn a_process_started_through_a_symlink_keeps_the_symlinks_name() {
        use std::os::unix::process::CommandExt;
        let dir = tempfile::tempdir().unwrap();
        let sleep = std::fs::canonicalize("/bin/sleep").unwrap();
        let link = dir.path().join("redis-server");
        std::os::unix::fs::symlink(&sleep, &link).unwrap();
        // By path, as a shell starts it: the kernel names it after the link already.
        let mut by_path = std::process::Command::new(&link).arg("5").spawn().unwrap();
        // By descriptor (fexecve, as systemd's executor starts services): the kernel names
        // it after the file the link points to (or the descriptor's number).
        let file = std::fs::File::open(&link).unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
        let argv: Vec<std::ffi::CString> =
            ["redis-server", "5"].iter().map(|a| std::ffi::CString::new(*a).unwrap()).collect();
        let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
        argv_ptrs.push(std::ptr::null());
        let envp: [*const libc::c_char; 1] = [std::ptr::null()];
        // Addresses, since raw pointers may not cross into the closure.
        let (argv_at, envp_at) = (argv_ptrs.as_ptr() as usize, envp.as_ptr() as usize);
        let mut command = std::process::Command::new(&link);
        // SAFETY: fexecve is async-signal safe; the argument arrays outlive the spawn.
        unsafe {
            command.pre_exec(move || {
                libc::fexecve(fd, argv_at as *const *const libc::c_char, envp_at as *const *const libc::c_char);
                Err(std::io::Error::last_os_error())
            });
        }
        let mut by_fd = command.spawn().unwrap();
        let labels = [process_label(by_path.id()), process_label(by_fd.id())];
        let comm_by_fd = std::fs::read_to_string(format!("/proc/{}/comm", by_fd.id())).unwrap_or_default();
        for child in [&mut by_path, &mut by_fd] {
            child.kill().unwrap();
            child.wait().unwrap();
        }
        assert_eq!(
            labels,
            [Some("redis-server".to_string()), Some("redis-server".to_string())],
            "comm by fd: {comm_by_fd}"
        );
    }
}
