//! How the host-wide agent (`agent --all`) names each process's service, first rule that
//! matches: the config file's `[[agent.services]]` table (`match_exe`, `match_cmdline`,
//! `match_unit`, `service`); the systemd unit of its cgroup (`nginx.service` -> `nginx`);
//! its container (the Kubernetes container name where the kubelet shows it, else the
//! program's name, with label `container_id`); else the program's name.
//!
//! In: the agent's TOML config file, and per process /proc/PID/{cgroup,exe,cmdline}.
//! Out: a `ProcessTag` (service plus `unit` or `container_id`, `pod_uid`, `namespace`,
//! `pod`, `container` labels as they apply) for the sampler's tagger. Must not: block
//! (only /proc and two kubelet directories are read), or fail on what /proc says.

use super::cgroup::{self, KubeletDirs};
use crate::sampler::selection::{ProcessTag, Tagger};
use regex::Regex;
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Why the agent's config file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    /// The file cannot be read.
    #[error("cannot read the agent config {path}: {cause}")]
    Read { path: PathBuf, cause: std::io::Error },
    /// The file is not valid TOML or has unknown keys.
    #[error("invalid agent config {path}: {reason}")]
    Parse { path: PathBuf, reason: String },
    /// A rule's pattern does not compile, or a rule is incomplete.
    #[error("invalid agent config {path}: [[agent.services]] rule {index}: {reason}")]
    Rule { path: PathBuf, index: usize, reason: String },
}

/// The agent's config file (`--config FILE`, TOML).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// The `[agent]` table.
    #[serde(default)]
    pub agent: AgentSection,
}

/// The `[agent]` table.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSection {
    /// Processes left out of `--all` (comm or command line); `--exclude` overrides it.
    pub exclude: Option<String>,
    /// Service rules, first match wins.
    #[serde(default)]
    pub services: Vec<RuleText>,
}

/// One `[[agent.services]]` rule as written: every `match_*` given must match.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleText {
    /// Regex on the executable's path (`/usr/sbin/nginx`).
    pub match_exe: Option<String>,
    /// Regex on the command line (arguments separated by spaces).
    pub match_cmdline: Option<String>,
    /// Regex on the systemd unit (`nginx.service`).
    pub match_unit: Option<String>,
    /// The service the matching processes' profiles go to.
    pub service: String,
}

/// A checked rule.
#[derive(Debug, Clone)]
pub struct ServiceRule {
    exe: Option<Regex>,
    cmdline: Option<Regex>,
    unit: Option<Regex>,
    service: String,
}

/// What a rule is matched against.
#[derive(Debug, Clone, Copy)]
pub struct ProcessFacts<'a> {
    /// Path of the executable.
    pub exe: &'a str,
    /// Command line, NULs as spaces.
    pub cmdline: &'a str,
    /// The systemd unit, if any.
    pub unit: Option<&'a str>,
}

impl ServiceRule {
    /// Whether every pattern the rule has matches.
    pub fn matches(&self, facts: ProcessFacts<'_>) -> bool {
        self.exe.as_ref().is_none_or(|re| re.is_match(facts.exe))
            && self.cmdline.as_ref().is_none_or(|re| re.is_match(facts.cmdline))
            && self.unit.as_ref().is_none_or(|re| facts.unit.is_some_and(|u| re.is_match(u)))
    }
}

/// Loads and checks `path`: the exclusion pattern (as written) and the rules.
pub fn load(path: &Path) -> Result<(Option<String>, Vec<ServiceRule>), ConfigFileError> {
    let text =
        std::fs::read_to_string(path).map_err(|cause| ConfigFileError::Read { path: path.to_path_buf(), cause })?;
    let file: ConfigFile = toml::from_str(&text)
        .map_err(|e| ConfigFileError::Parse { path: path.to_path_buf(), reason: e.to_string() })?;
    let rules = check_rules(&file.agent.services).map_err(|(index, reason)| ConfigFileError::Rule {
        path: path.to_path_buf(),
        index: index + 1,
        reason,
    })?;
    Ok((file.agent.exclude, rules))
}

/// Checks rules: a valid service name, at least one pattern, patterns that compile.
/// Errors name the rule (from 0) and what is wrong.
pub fn check_rules(texts: &[RuleText]) -> Result<Vec<ServiceRule>, (usize, String)> {
    let compile = |i: usize, key: &str, text: &Option<String>| -> Result<Option<Regex>, (usize, String)> {
        text.as_deref().map(|t| Regex::new(t).map_err(|e| (i, format!("{key} {t:?}: {e}")))).transpose()
    };
    texts
        .iter()
        .enumerate()
        .map(|(i, t)| {
            if !crate::model::profile::valid_service_name(&t.service) {
                return Err((
                    i,
                    format!("invalid service name {:?}: letters, digits and . _ - / : (at most 128)", t.service),
                ));
            }
            let rule = ServiceRule {
                exe: compile(i, "match_exe", &t.match_exe)?,
                cmdline: compile(i, "match_cmdline", &t.match_cmdline)?,
                unit: compile(i, "match_unit", &t.match_unit)?,
                service: t.service.clone(),
            };
            if rule.exe.is_none() && rule.cmdline.is_none() && rule.unit.is_none() {
                return Err((i, "give at least one of match_exe, match_cmdline, match_unit".into()));
            }
            Ok(rule)
        })
        .collect()
}

/// Names processes from the rules, their cgroup and their program.
#[derive(Debug, Clone)]
pub struct ServiceNamer {
    /// The config file's rules, first match wins.
    pub rules: Vec<ServiceRule>,
    /// Where /proc is (tests point it elsewhere).
    pub proc_root: PathBuf,
    /// The kubelet's directories.
    pub kubelet: KubeletDirs,
    /// Tags already made, shared by every process with the same name and labels.
    interned: HashMap<ProcessTag, Arc<ProcessTag>>,
}

impl ServiceNamer {
    /// A namer with these rules, reading the host's /proc and kubelet directories.
    pub fn new(rules: Vec<ServiceRule>) -> ServiceNamer {
        ServiceNamer { rules, proc_root: "/proc".into(), kubelet: KubeletDirs::default(), interned: HashMap::new() }
    }

    /// The tag of live process `pid`; None when it is gone.
    pub fn tag(&mut self, pid: u32) -> Option<Arc<ProcessTag>> {
        let dir = self.proc_root.join(pid.to_string());
        let cgroups = std::fs::read_to_string(dir.join("cgroup")).unwrap_or_default();
        self.tag_in(pid, cgroups)
    }

    /// The tag of `pid` if it moved to another cgroup since it was named `current`
    /// (one /proc read when it did not); None when it did not or is gone.
    pub fn retag(&mut self, pid: u32, current: &ProcessTag) -> Option<Arc<ProcessTag>> {
        let cgroups = std::fs::read_to_string(self.proc_root.join(pid.to_string()).join("cgroup")).ok()?;
        if cgroups == current.origin {
            return None;
        }
        self.tag_in(pid, cgroups)
    }

    /// The tag of `pid`, whose /proc/PID/cgroup reads `cgroups`.
    fn tag_in(&mut self, pid: u32, cgroups: String) -> Option<Arc<ProcessTag>> {
        let dir = self.proc_root.join(pid.to_string());
        let exe = std::fs::read_link(dir.join("exe")).ok()?.to_string_lossy().into_owned();
        let origin = cgroup::parse(&cgroups);
        let mut labels = BTreeMap::new();
        let mut service = None;
        if !self.rules.is_empty() {
            let raw = std::fs::read(dir.join("cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ").trim_end().to_string();
            let facts = ProcessFacts { exe: &exe, cmdline: &cmdline, unit: origin.unit.as_deref() };
            service = self.rules.iter().find(|r| r.matches(facts)).map(|r| r.service.clone());
        }
        if let Some(unit) = &origin.unit {
            labels.insert("unit".to_string(), unit.clone());
            service = service.or_else(|| origin.unit_service().map(str::to_string));
        }
        if let Some(id) = &origin.container_id {
            labels.insert("container_id".to_string(), id.clone());
            let names = self.kubelet.names(Some(id), origin.pod_uid.as_deref());
            for (key, value) in [("namespace", &names.namespace), ("pod", &names.pod), ("container", &names.container)]
            {
                if let Some(value) = value {
                    labels.insert(key.to_string(), value.clone());
                }
            }
            service = service.or(names.container);
        }
        if let Some(uid) = &origin.pod_uid {
            labels.insert("pod_uid".to_string(), uid.clone());
        }
        let service = service
            .or_else(|| super::targets::process_label(pid))
            .filter(|s| crate::model::profile::valid_service_name(s))
            .unwrap_or_else(|| program_service(&exe));
        let tag = ProcessTag { service, labels, origin: cgroups };
        Some(Arc::clone(self.interned.entry(tag.clone()).or_insert_with(|| Arc::new(tag))))
    }

    /// The sampler's tagger.
    pub fn into_tagger(mut self) -> Tagger {
        Box::new(move |pid, current| match current {
            Some(current) => self.retag(pid, current),
            None => self.tag(pid),
        })
    }
}

/// A service name from an executable's path: its file name, with characters a service
/// name may not hold replaced by `_` (`unknown` when nothing is left).
pub(crate) fn program_service(exe: &str) -> String {
    let name = exe.trim_end_matches(" (deleted)").rsplit('/').next().unwrap_or("");
    let clean: String = name
        .chars()
        .take(128)
        .map(|c| if c.is_ascii_alphanumeric() || "._-/:".contains(c) { c } else { '_' })
        .collect();
    if clean.is_empty() {
        "unknown".to_string()
    } else {
        clean
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(toml_text: &str) -> Result<Vec<ServiceRule>, String> {
        let file: ConfigFile = toml::from_str(toml_text).map_err(|e| e.to_string())?;
        check_rules(&file.agent.services).map_err(|(i, r)| format!("{i}: {r}"))
    }

    #[test]
    fn first_rule_that_matches_wins() {
        let rules = rules(
            r#"
            [[agent.services]]
            match_unit = '^postgresql@.*\.service$'
            service = "postgres"
            [[agent.services]]
            match_exe = "/nginx$"
            match_cmdline = "-c /etc/shop"
            service = "shop-web"
            [[agent.services]]
            match_exe = "/nginx$"
            service = "web"
            "#,
        )
        .unwrap();
        let first = |facts| rules.iter().find(|r| r.matches(facts)).map(|r| r.service.as_str());
        let nginx = ProcessFacts { exe: "/usr/sbin/nginx", cmdline: "nginx -c /etc/shop/nginx.conf", unit: None };
        assert_eq!(first(nginx), Some("shop-web"));
        assert_eq!(first(ProcessFacts { cmdline: "nginx", ..nginx }), Some("web"));
        let pg = ProcessFacts {
            exe: "/usr/lib/postgresql/15/bin/postgres",
            cmdline: "",
            unit: Some("postgresql@15-main.service"),
        };
        assert_eq!(first(pg), Some("postgres"));
        assert_eq!(first(ProcessFacts { unit: None, ..pg }), None);
    }

    #[test]
    fn bad_rules_are_refused_with_the_reason() {
        let err = rules("[[agent.services]]\nservice = \"x\"\n").unwrap_err();
        assert!(err.contains("at least one of match_exe"), "{err}");
        let err = rules("[[agent.services]]\nmatch_exe = \"(\"\nservice = \"x\"\n").unwrap_err();
        assert!(err.contains("match_exe \"(\""), "{err}");
        let err = rules("[[agent.services]]\nmatch_exe = \"x\"\nservice = \"a b\"\n").unwrap_err();
        assert!(err.contains("invalid service name"), "{err}");
        let err = rules("[[agent.services]]\nmatch_exe = \"x\"\nservice = \"a\"\nmatch_comm = \"y\"\n").unwrap_err();
        assert!(err.contains("match_comm"), "unknown keys are refused: {err}");
    }

    #[test]
    fn names_a_live_process_from_its_program_when_nothing_else_says() {
        let mut child = std::process::Command::new("sleep").arg("7.75").spawn().unwrap();
        let mut namer = ServiceNamer::new(Vec::new());
        let tag = namer.tag(child.id());
        let again = namer.tag(child.id());
        child.kill().unwrap();
        child.wait().unwrap();
        let tag = tag.unwrap();
        // This test's own cgroup may be a unit's (a CI runner under systemd): then the unit names it.
        if tag.labels.contains_key("unit") || tag.labels.contains_key("container_id") {
            return;
        }
        assert_eq!(tag.service, "sleep");
        assert!(Arc::ptr_eq(&tag, &again.unwrap()), "one shared tag per name and labels");
        assert_eq!(namer.tag(u32::MAX), None, "a process that is gone names nothing");
        assert_eq!(program_service("/opt/my app/srv (deleted)"), "srv");
        assert_eq!(program_service("/opt/x/na me"), "na_me");
    }

    #[test]
    fn a_target_is_named_again_only_when_its_cgroup_changed() {
        let mut child = std::process::Command::new("sleep").arg("7.25").spawn().unwrap();
        let mut namer = ServiceNamer::new(Vec::new());
        let tag = namer.tag(child.id()).unwrap();
        let unchanged = namer.retag(child.id(), &tag);
        let elsewhere = ProcessTag { origin: "0::/system.slice/other.service\n".into(), ..(*tag).clone() };
        let moved = namer.retag(child.id(), &elsewhere);
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(unchanged, None, "same cgroup: not named again");
        assert!(moved.is_some_and(|t| Arc::ptr_eq(&t, &tag)), "named again from the cgroup it is in");
        assert_eq!(namer.retag(u32::MAX, &tag), None, "a process that is gone names nothing");
    }
}
