//! `Profile`: one batch of samples from one series (service + labels) over one time
//! window, with frames and stacks interned. `ProfileBuilder` makes one from stacks of
//! names; `Limits` says what the server accepts.

use super::state::{StateCounts, ThreadState};
use rustc_hash::FxHashMap as HashMap;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Samples of one stack in one thread state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sample {
    /// Index into `Profile::stacks`.
    pub stack: u32,
    /// Thread state of every sample counted here.
    pub state: ThreadState,
    /// Number of samples (each worth `Profile::period_ns` of thread time).
    pub count: u64,
}

/// A batch of samples with labels and a time window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    /// The service the samples belong to (Pyroscope's application name).
    pub service: String,
    /// `cpu` for on-CPU/wall-clock samples with thread states; other Pyroscope types
    /// (`alloc_space`, ...) are kept under their own name.
    pub profile_type: String,
    /// Free labels: host, version, region, pid, ...
    pub labels: BTreeMap<String, String>,
    /// Window start, Unix milliseconds.
    pub start_ms: i64,
    /// Window end, Unix milliseconds (exclusive).
    pub end_ms: i64,
    /// Sampling period in nanoseconds (1e9 / frequency in Hz).
    pub period_ns: u64,
    /// Interned frame names.
    pub frames: Vec<String>,
    /// Interned stacks: indices into `frames`, root first.
    pub stacks: Vec<Vec<u32>>,
    /// Samples, at most one per (stack, state).
    pub samples: Vec<Sample>,
    /// Units of work (requests handled) in the window, when the sender counts them:
    /// wins are then measured as CPU per unit of work (docs/ops-wins.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub work: Option<u64>,
}

/// Why a profile is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    #[error("service name is empty")]
    EmptyService,
    #[error("invalid service name {0:?}: use letters, digits and . _ - / (at most 128)")]
    BadServiceName(String),
    #[error("invalid label name {0:?}: use letters, digits and _ (at most 64, not starting with a digit)")]
    BadLabelName(String),
    #[error("label {name:?} value is over {max} bytes")]
    LabelValueTooLong { name: String, max: usize },
    #[error("too many labels: {got}, the limit is {max}")]
    TooManyLabels { got: usize, max: usize },
    #[error("stack depth {got} is over the limit of {max} frames")]
    StackTooDeep { got: usize, max: usize },
    #[error("too many distinct stacks: {got}, the limit is {max}")]
    TooManyStacks { got: usize, max: usize },
    #[error("invalid time window: from {start_ms} ms must be before until {end_ms} ms")]
    BadWindow { start_ms: i64, end_ms: i64 },
    #[error("sampling period must be positive")]
    BadPeriod,
    #[error("sample refers to stack {stack} but the profile has {len} stacks")]
    DanglingStack { stack: u32, len: usize },
    #[error("stack refers to frame {frame} but the profile has {len} frames")]
    DanglingFrame { frame: u32, len: usize },
    #[error("malformed folded line {line}: {reason}")]
    BadFolded { line: usize, reason: String },
    #[error("malformed pprof: {0}")]
    BadPprof(String),
    #[error("decompressed body is over the limit of {max} bytes")]
    TooLarge { max: usize },
}

/// What a single profile may hold. Defaults are the server's defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Limits {
    /// Deepest stack accepted, in frames. Default 1024.
    pub max_stack_depth: usize,
    /// Labels per profile, service excluded. Default 32.
    pub max_labels: usize,
    /// Bytes per label value. Default 256.
    pub max_label_value: usize,
    /// Distinct stacks per profile. Default 200,000.
    pub max_stacks: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_stack_depth: 1024, max_labels: 32, max_label_value: 256, max_stacks: 200_000 }
    }
}

/// True if `name` is a valid service name.
pub fn valid_service_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/' | ':'))
}

/// True if `name` is a valid label name (Prometheus rules).
pub fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' => {}
        _ => return false,
    }
    name.len() <= 64 && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Parses a `key=value` label flag (`--label host=a`): the key is trimmed and must be a
/// valid label name, the value is trimmed. None when either rule fails.
pub fn parse_label_flag(text: &str) -> Option<(String, String)> {
    let (k, v) = text.split_once('=')?;
    let k = k.trim();
    valid_label_name(k).then(|| (k.to_string(), v.trim().to_string()))
}

impl Profile {
    /// An empty profile for `service` over `[start_ms, end_ms)` at `period_ns`.
    pub fn empty(service: &str, start_ms: i64, end_ms: i64, period_ns: u64) -> Profile {
        Profile {
            service: service.to_string(),
            profile_type: "cpu".to_string(),
            labels: BTreeMap::new(),
            start_ms,
            end_ms,
            period_ns,
            frames: Vec::new(),
            stacks: Vec::new(),
            samples: Vec::new(),
            work: None,
        }
    }

    /// Sampling frequency in Hz.
    pub fn frequency_hz(&self) -> f64 {
        if self.period_ns == 0 {
            0.0
        } else {
            1e9 / self.period_ns as f64
        }
    }

    /// Total samples, all states.
    pub fn total_samples(&self) -> u64 {
        self.samples.iter().map(|s| s.count).sum()
    }

    /// Total samples per state.
    pub fn state_totals(&self) -> StateCounts {
        let mut out = StateCounts::default();
        for s in &self.samples {
            out[s.state.index()] += s.count;
        }
        out
    }

    /// The frame names of stack `index`, root first.
    pub fn stack_names(&self, index: u32) -> impl Iterator<Item = &str> + '_ {
        self.stacks
            .get(index as usize)
            .into_iter()
            .flatten()
            .map(move |f| self.frames.get(*f as usize).map(String::as_str).unwrap_or("[unknown]"))
    }

    /// Checks the profile is well formed and within `limits`.
    pub fn validate(&self, limits: &Limits) -> Result<(), ModelError> {
        if self.service.is_empty() {
            return Err(ModelError::EmptyService);
        }
        if !valid_service_name(&self.service) {
            return Err(ModelError::BadServiceName(self.service.clone()));
        }
        if self.labels.len() > limits.max_labels {
            return Err(ModelError::TooManyLabels { got: self.labels.len(), max: limits.max_labels });
        }
        for (k, v) in &self.labels {
            if !valid_label_name(k) {
                return Err(ModelError::BadLabelName(k.clone()));
            }
            if v.len() > limits.max_label_value {
                return Err(ModelError::LabelValueTooLong { name: k.clone(), max: limits.max_label_value });
            }
        }
        if self.start_ms >= self.end_ms {
            return Err(ModelError::BadWindow { start_ms: self.start_ms, end_ms: self.end_ms });
        }
        if self.period_ns == 0 {
            return Err(ModelError::BadPeriod);
        }
        if self.stacks.len() > limits.max_stacks {
            return Err(ModelError::TooManyStacks { got: self.stacks.len(), max: limits.max_stacks });
        }
        for stack in &self.stacks {
            if stack.len() > limits.max_stack_depth {
                return Err(ModelError::StackTooDeep { got: stack.len(), max: limits.max_stack_depth });
            }
            if let Some(&frame) = stack.iter().find(|f| **f as usize >= self.frames.len()) {
                return Err(ModelError::DanglingFrame { frame, len: self.frames.len() });
            }
        }
        if let Some(s) = self.samples.iter().find(|s| s.stack as usize >= self.stacks.len()) {
            return Err(ModelError::DanglingStack { stack: s.stack, len: self.stacks.len() });
        }
        Ok(())
    }
}

/// Builds a `Profile` from stacks of frame names, interning as it goes and merging
/// samples of the same (stack, state).
#[derive(Debug)]
pub struct ProfileBuilder {
    profile: Profile,
    frame_ids: HashMap<String, u32>,
    stack_ids: HashMap<Vec<u32>, u32>,
    sample_ids: HashMap<(u32, ThreadState), usize>,
    scratch: Vec<u32>,
}

impl ProfileBuilder {
    /// Starts a profile for `service` over `[start_ms, end_ms)` sampled every `period_ns`.
    pub fn new(service: &str, start_ms: i64, end_ms: i64, period_ns: u64) -> ProfileBuilder {
        ProfileBuilder {
            profile: Profile::empty(service, start_ms, end_ms, period_ns),
            frame_ids: HashMap::default(),
            stack_ids: HashMap::default(),
            sample_ids: HashMap::default(),
            scratch: Vec::new(),
        }
    }

    /// Sets the profile type (default `cpu`).
    pub fn profile_type(mut self, profile_type: &str) -> Self {
        self.profile.profile_type = profile_type.to_string();
        self
    }

    /// Adds or replaces a label.
    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.profile.labels.insert(key.to_string(), value.to_string());
        self
    }

    /// Mutable access to the labels.
    pub fn labels_mut(&mut self) -> &mut BTreeMap<String, String> {
        &mut self.profile.labels
    }

    /// Interns a frame name and returns its index.
    pub fn intern_frame(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.frame_ids.get(name) {
            return id;
        }
        let id = self.profile.frames.len() as u32;
        self.profile.frames.push(name.to_string());
        self.frame_ids.insert(name.to_string(), id);
        id
    }

    /// Interns a stack of frame indices (root first) and returns its index.
    pub fn intern_stack(&mut self, frames: &[u32]) -> u32 {
        if let Some(&id) = self.stack_ids.get(frames) {
            return id;
        }
        let id = self.profile.stacks.len() as u32;
        self.profile.stacks.push(frames.to_vec());
        self.stack_ids.insert(frames.to_vec(), id);
        id
    }

    /// Adds `count` samples of a stack given by frame names, root first.
    pub fn add<S: AsRef<str>>(&mut self, stack_root_first: &[S], state: ThreadState, count: u64) {
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        for name in stack_root_first {
            scratch.push(self.intern_frame(name.as_ref()));
        }
        let stack = self.intern_stack(&scratch);
        self.scratch = scratch;
        self.add_stack(stack, state, count);
    }

    /// Adds `count` samples of an already interned stack.
    pub fn add_stack(&mut self, stack: u32, state: ThreadState, count: u64) {
        if count == 0 {
            return;
        }
        match self.sample_ids.get(&(stack, state)) {
            Some(&i) => self.profile.samples[i].count += count,
            None => {
                self.sample_ids.insert((stack, state), self.profile.samples.len());
                self.profile.samples.push(Sample { stack, state, count });
            }
        }
    }

    /// Adds every sample of `other` (frames re-interned).
    pub fn merge(&mut self, other: &Profile) {
        let frame_map: Vec<u32> = other.frames.iter().map(|f| self.intern_frame(f)).collect();
        let stack_map: Vec<u32> = other
            .stacks
            .iter()
            .map(|s| {
                let ids: Vec<u32> = s.iter().map(|f| frame_map.get(*f as usize).copied().unwrap_or(0)).collect();
                self.intern_stack(&ids)
            })
            .collect();
        for s in &other.samples {
            if let Some(&stack) = stack_map.get(s.stack as usize) {
                self.add_stack(stack, s.state, s.count);
            }
        }
    }

    /// Number of distinct stacks so far.
    pub fn stack_count(&self) -> usize {
        self.profile.stacks.len()
    }

    /// The finished profile.
    pub fn finish(self) -> Profile {
        self.profile
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_interns_and_merges() {
        let mut b = ProfileBuilder::new("svc", 0, 10_000, 10_101_010).label("host", "a");
        b.add(&["main", "work", "hot"], ThreadState::Runnable, 3);
        b.add(&["main", "work", "hot"], ThreadState::Runnable, 2);
        b.add(&["main", "work", "hot"], ThreadState::Blocked, 1);
        b.add(&["main", "idle"], ThreadState::Waiting, 4);
        let p = b.finish();
        assert_eq!(p.frames.len(), 4);
        assert_eq!(p.stacks.len(), 2);
        assert_eq!(p.samples.len(), 3);
        assert_eq!(p.total_samples(), 10);
        assert_eq!(p.state_totals(), [5, 4, 0, 1, 0]);
        assert_eq!(p.stack_names(0).collect::<Vec<_>>(), vec!["main", "work", "hot"]);
        p.validate(&Limits::default()).unwrap();
    }

    #[test]
    fn label_flags() {
        assert_eq!(parse_label_flag("host=a"), Some(("host".into(), "a".into())));
        assert_eq!(parse_label_flag(" region = eu "), Some(("region".into(), "eu".into())));
        assert_eq!(parse_label_flag("version=1=2"), Some(("version".into(), "1=2".into())));
        assert_eq!(parse_label_flag("host"), None);
        assert_eq!(parse_label_flag("=a"), None);
        assert_eq!(parse_label_flag("bad-name=a"), None);
    }

    #[test]
    fn validate_refuses_bad_profiles() {
        let mut b = ProfileBuilder::new("svc", 0, 10, 1);
        b.add(&vec!["f"; 20], ThreadState::Runnable, 1);
        let p = b.finish();
        let small = Limits { max_stack_depth: 10, ..Limits::default() };
        assert_eq!(p.validate(&small), Err(ModelError::StackTooDeep { got: 20, max: 10 }));
        let mut q = p.clone();
        q.labels.insert("bad-name".into(), "x".into());
        assert!(matches!(q.validate(&Limits::default()), Err(ModelError::BadLabelName(_))));
        let mut q = p.clone();
        q.end_ms = q.start_ms;
        assert!(matches!(q.validate(&Limits::default()), Err(ModelError::BadWindow { .. })));
        let mut q = p.clone();
        q.samples[0].stack = 9;
        assert!(matches!(q.validate(&Limits::default()), Err(ModelError::DanglingStack { .. })));
        let q = Profile { service: "a b".into(), ..p };
        assert!(matches!(q.validate(&Limits::default()), Err(ModelError::BadServiceName(_))));
    }
}
