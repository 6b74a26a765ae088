//! Which processes the agent samples: given pids, processes whose name or command line
//! matches a regex (found by scanning /proc, again and again, so that processes started
//! later are picked up), or a command the agent starts itself.
//!
//! In: the user's choice. Out: pids. Must not: attach (the agent loop does), or match
//! the agent itself or the shells that started it.

use regex::Regex;
use std::collections::HashSet;

/// How targets are chosen.
#[derive(Debug, Clone)]
pub enum TargetSpec {
    /// These pids; the agent exits when all of them have exited.
    Pids(Vec<u32>),
    /// Every process whose `comm` or command line matches, now and later.
    Name(Regex),
    /// Start this command and sample it; the agent exits when it exits.
    Command(Vec<String>),
}

/// Pids of running processes whose name or command line matches `pattern`, excluding
/// the agent and its ancestors (whose command lines contain the pattern too).
pub fn matching_processes(pattern: &Regex) -> Vec<u32> {
    let own = std::process::id();
    let ancestors = ancestors_of(own);
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    let mut out: Vec<u32> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != own && !ancestors.contains(pid))
        .filter(|pid| process_matches(*pid, pattern))
        .collect();
    out.sort_unstable();
    out
}

fn process_matches(pid: u32, pattern: &Regex) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else { return false };
    if cmdline.is_empty() {
        // Kernel threads and zombies: nothing to sample.
        return false;
    }
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    let cmdline: String = String::from_utf8_lossy(&cmdline).replace('\0', " ").trim_end().to_string();
    pattern.is_match(comm.trim_end()) || pattern.is_match(&cmdline)
}

/// `pid`'s parent, grandparent, ... up to init.
fn ancestors_of(pid: u32) -> HashSet<u32> {
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

fn parent_of(pid: u32) -> Option<u32> {
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
        let found = matching_processes(&Regex::new(r"^sleep 7\.25$").unwrap());
        let own = matching_processes(&Regex::new(&regex::escape(&std::process::id().to_string())).unwrap());
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(found, vec![child.id()]);
        assert!(!own.contains(&std::process::id()));
    }

    #[test]
    fn parent_of_this_process_is_known() {
        assert_eq!(parent_of(std::process::id()), Some(std::os::unix::process::parent_id()));
    }
}
