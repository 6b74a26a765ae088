//! Which processes of the host are targets: a live set decided from what the per-CPU
//! events report (fork, exec) and what /proc says, never from a periodic list alone.
//!
//! In: the roots the caller attached (`--pid`, `-- CMD`), an optional name pattern
//! (`--name`), and per process its parent, comm and command line. Out: yes or no per
//! process, at its fork, its exec, or the first sample of a process never seen before.
//! Must not: open events or keep per-process state (the `Sampler` holds the set).
//!
//! Rules: a root and every descendant of a root is a target (a fork of a target is a
//! target, through exec too: `sh -c` children, fork-per-connection servers, pre-fork
//! pools); a process whose comm or command line matches the pattern is a target, decided
//! at its first sight and again at each exec (a fork inherits its parent's decision,
//! since it inherits its command line); the agent itself and its ancestors never are.
//! Host-wide (`--all`, `set_all`) every process with a user space is a target but those
//! an `exclude` pattern matches (comm or command line), decided at the same moments.
//! Kernel threads (no command line, no user stack) never are.
//!
//! Also the types through which a host-wide agent names each target (`ProcessTag`,
//! `Tagger`): the sampler calls the tagger when a process becomes a target other than
//! by fork (a fork inherits its parent's tag) and at each exec.

use regex::Regex;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

/// What a host-wide agent names a process: the service its profiles go to and the labels
/// they carry beyond `pid`, `process` and `exe` (`unit`, `container_id`, ...).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProcessTag {
    /// Service of the process's profiles.
    pub service: String,
    /// Labels added to its profiles.
    pub labels: BTreeMap<String, String>,
    /// What the tag was made from that can change without an exec (/proc/PID/cgroup's
    /// text): a periodic check reads only that.
    pub origin: String,
}

/// Names a live process by pid (None when it is gone); called from the sampling thread.
/// With `Some(current)`, the periodic check of a target named `current` (a process moved
/// to another cgroup without an exec): None unless its tag changed.
pub type Tagger = Box<dyn FnMut(u32, Option<&ProcessTag>) -> Option<Arc<ProcessTag>> + Send>;

/// What makes a process a target.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Attached roots (and, through forks, their descendants).
    roots: HashSet<u32>,
    /// Processes whose comm or command line matches are targets.
    pattern: Option<Regex>,
    /// This process and its ancestors: never targets.
    never: HashSet<u32>,
    /// Host-wide: every process is a target but those `exclude` matches.
    all: bool,
    /// Host-wide: processes whose comm or command line matches are not targets.
    exclude: Option<Regex>,
}

/// What is known of a process when it is decided.
#[derive(Debug, Clone, Copy)]
pub struct Seen<'a> {
    /// Its pid.
    pub pid: u32,
    /// Its comm (from /proc or the records).
    pub comm: &'a str,
    /// Its command line with NULs as spaces, if it could be read.
    pub cmdline: Option<&'a str>,
}

impl Selection {
    /// No targets yet; the caller's own process and its ancestors are excluded.
    pub fn new() -> Selection {
        let own = std::process::id();
        let mut never = ancestors_of(own);
        never.insert(own);
        Selection { never, ..Selection::default() }
    }

    /// `pid` and its descendants become targets.
    pub fn add_root(&mut self, pid: u32) {
        self.roots.insert(pid);
    }

    /// Processes matching `pattern` become targets, now and later.
    pub fn set_pattern(&mut self, pattern: Regex) {
        self.pattern = Some(pattern);
    }

    /// Every process becomes a target, now and later, but those `exclude` matches.
    pub fn set_all(&mut self, exclude: Option<Regex>) {
        self.all = true;
        self.exclude = exclude;
    }

    /// Whether a name pattern or `--all` is set (then /proc is scanned for matching
    /// sleepers, and a process is decided at its first sample and at each exec).
    pub fn has_pattern(&self) -> bool {
        self.pattern.is_some() || self.all
    }

    /// Whether deciding needs the command line (a pattern or an exclusion may match it).
    pub fn wants_cmdline(&self) -> bool {
        self.pattern.is_some() || self.exclude.is_some()
    }

    /// Whether `pid` may never be a target (the agent or an ancestor).
    pub fn excluded(&self, pid: u32) -> bool {
        self.never.contains(&pid)
    }

    /// Whether `pid` is an attached root.
    pub fn is_root(&self, pid: u32) -> bool {
        self.roots.contains(&pid)
    }

    /// Whether the name pattern matches `seen`.
    pub fn matches(&self, seen: Seen<'_>) -> bool {
        if self.excluded(seen.pid) {
            return false;
        }
        let hit = |re: &Regex| re.is_match(seen.comm) || seen.cmdline.is_some_and(|c| re.is_match(c));
        if self.all {
            return !self.exclude.as_ref().is_some_and(hit);
        }
        self.pattern.as_ref().is_some_and(hit)
    }

    /// Pids of running processes this selection's pattern (or `--all`) takes, never the
    /// caller or its ancestors (whose command lines contain the pattern too), never
    /// kernel threads.
    pub fn matching_processes(&self) -> Vec<u32> {
        let mut out: Vec<u32> = all_pids()
            .into_iter()
            .filter(|pid| {
                read_seen(*pid).is_some_and(|(comm, cmdline)| {
                    self.matches(Seen { pid: *pid, comm: &comm, cmdline: Some(&cmdline) })
                })
            })
            .collect();
        out.sort_unstable();
        out
    }

    /// A process forked by `parent_is_target`'s parent: a child of a target is one.
    pub fn at_fork(&self, child: u32, parent_is_target: bool) -> bool {
        parent_is_target && !self.excluded(child)
    }

    /// At an exec: a target stays one if it descends from a root, else the pattern decides.
    pub fn at_exec(&self, was_target: bool, by_descent: bool, seen: Seen<'_>) -> bool {
        (was_target && by_descent) || self.matches(seen)
    }
}

/// Reads what `Selection::matches` needs of a live process: comm and command line.
/// None when it is gone, or a kernel thread (empty command line: nothing to sample).
pub fn read_seen(pid: u32) -> Option<(String, String)> {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    if cmdline.is_empty() {
        return None;
    }
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ").trim_end().to_string();
    Some((comm.trim_end().to_string(), cmdline))
}

/// Pids of running processes whose name or command line matches `pattern`, excluding
/// the caller and its ancestors (whose command lines contain the pattern too).
pub fn matching_processes(pattern: &Regex) -> Vec<u32> {
    let mut selection = Selection::new();
    selection.set_pattern(pattern.clone());
    selection.matching_processes()
}

/// Every pid in /proc.
pub fn all_pids() -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok()).collect()
}

/// Every live descendant of `roots` (children, grandchildren, ...), from /proc's parent
/// links; the roots themselves are not included.
pub fn descendants_of(roots: &HashSet<u32>) -> Vec<u32> {
    let parents: Vec<(u32, u32)> = all_pids().into_iter().filter_map(|p| Some((p, parent_of(p)?))).collect();
    let mut found: HashSet<u32> = roots.clone();
    let mut out = Vec::new();
    // A few passes: children listed before their parents are picked up on the next one.
    loop {
        let before = out.len();
        for (pid, parent) in &parents {
            if found.contains(parent) && found.insert(*pid) {
                out.push(*pid);
            }
        }
        if out.len() == before {
            break;
        }
    }
    out.sort_unstable();
    out
}

/// `pid`'s parent, grandparent, ... up to init.
pub fn ancestors_of(pid: u32) -> HashSet<u32> {
    let mut out = HashSet::new();
    let mut current = pid;
    while let Some(parent) = parent_of(current) {
        if parent <= 1 || !out.insert(parent) {
            break;
        }
        current = parent;
    }
    out
}

/// The parent pid of a process, from /proc/PID/stat.
pub fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_child_by_name_but_never_itself() {
        let mut child = std::process::Command::new("sleep").arg("7.25").spawn().unwrap();
        // Until its exec is done the child's command line is this test binary's.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !std::fs::read(format!("/proc/{}/cmdline", child.id())).is_ok_and(|c| c.starts_with(b"sleep\0"))
            && std::time::Instant::now() < deadline
        {
            std::thread::yield_now();
        }
        let found = matching_processes(&Regex::new(r"^sleep 7\.25$").unwrap());
        let own = matching_processes(&Regex::new(&regex::escape(&std::process::id().to_string())).unwrap());
        let below = descendants_of(&HashSet::from([std::process::id()]));
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(found, vec![child.id()]);
        assert!(!own.contains(&std::process::id()));
        assert!(below.contains(&child.id()), "{below:?}");
    }

    #[test]
    fn parent_of_this_process_is_known() {
        assert_eq!(parent_of(std::process::id()), Some(std::os::unix::process::parent_id()));
    }

    #[test]
    fn children_of_targets_are_targets_and_exec_keeps_descent() {
        let mut s = Selection::new();
        s.add_root(4242);
        assert!(s.at_fork(4243, true));
        assert!(!s.at_fork(4244, false));
        let sh = Seen { pid: 4243, comm: "sh", cmdline: Some("sh -c true") };
        assert!(s.at_exec(true, true, sh), "a descendant stays a target through exec");
        s.set_pattern(Regex::new("^postgres").unwrap());
        assert!(!s.at_exec(true, false, sh), "a process matched by name is re-decided at exec");
        let pg = Seen { pid: 4245, comm: "postgres", cmdline: None };
        assert!(s.matches(pg));
        assert!(!s.matches(Seen { pid: std::process::id(), ..pg }), "never the agent itself");
    }

    #[test]
    fn host_wide_takes_everything_but_the_excluded_and_the_agent() {
        let mut s = Selection::new();
        s.set_all(Some(Regex::new("^(sshd|chronyd)").unwrap()));
        assert!(s.has_pattern() && s.wants_cmdline());
        let seen = |pid, comm| Seen { pid, comm, cmdline: Some("x") };
        assert!(s.matches(seen(4242, "nginx")));
        assert!(!s.matches(seen(4243, "sshd")));
        assert!(!s.matches(seen(std::process::id(), "nginx")));
        let sh = Seen { pid: 4244, comm: "sh", cmdline: Some("sh -c true") };
        assert!(s.at_exec(false, false, sh), "a new program is a target from its exec");
        // Live processes: this test's own child is found, kernel threads are not.
        let mut child = std::process::Command::new("sleep").arg("7.5").spawn().unwrap();
        // Until its exec is done (the comm changes before the command line is set), the
        // child is a copy of this process (never a target) or has no command line yet.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while read_seen(child.id()).is_none_or(|(comm, _)| comm != "sleep") {
            assert!(std::time::Instant::now() < deadline, "the child did not exec sleep");
            std::thread::yield_now();
        }
        let all = s.matching_processes();
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(all.contains(&child.id()), "{all:?}");
        assert!(!all.contains(&2), "kthreadd is a kernel thread: {all:?}");
        assert!(!all.contains(&std::process::id()));
    }
}
