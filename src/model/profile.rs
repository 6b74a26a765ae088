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
    #[error("label {name:?} value holds NUL, CR or LF, which no label value may")]
    BadLabelValue { name: String },
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
    #[error(
        "decoding the profile needs more than {max} bytes of memory (limits.max_decode_bytes); send smaller profiles"
    )]
    OverBudget { max: usize },
    #[error("the profile has more than {max} samples; send smaller profiles")]
    TooManySamples { max: u64 },
    #[error("the profile's stacks hold more than {max} frames in all; send smaller profiles")]
    TooManyFrames { max: u64 },
    #[error(transparent)]
    TimeOutOfRange(#[from] super::time::OutOfRange),
    #[error(
        "sampling rate {:.3} Hz (period {period_ns} ns) is outside {MIN_RATE_HZ} Hz to {MAX_RATE_HZ} Hz: \
         check sampleRate, or the pprof period and period_type",
        1e9 / *period_ns as f64
    )]
    RateOutOfRange { period_ns: u64 },
    #[error(
        "{got} samples cannot be true for a window of {window_ms} ms at {:.3} Hz: that is more than \
         {max_threads} threads sampled all the time (limits.max_threads); check the counts",
        1e9 / *period_ns as f64
    )]
    ImplausibleCount { got: u64, window_ms: i64, period_ns: u64, max_threads: u64 },
    #[error("{got} {profile_type} is over {max}, which no profile can hold; check the values")]
    ImplausibleValue { got: u64, profile_type: String, max: u64 },
}

/// Lowest sampling rate accepted, Hz: below it one sample stands for minutes of CPU.
pub const MIN_RATE_HZ: f64 = 0.1;
/// Highest sampling rate accepted, Hz (perf and pprof-rs stay far below it).
pub const MAX_RATE_HZ: f64 = 100_000.0;
/// Largest total a non-CPU profile (bytes, objects...) may hold: 2^53, the largest
/// integer a double and the viewer represent exactly.
pub const MAX_VALUE_TOTAL: u64 = 1 << 53;

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
    /// Threads a profile may cover: bounds its sample count to window x rate x this.
    /// Default 65,536.
    pub max_threads: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_stack_depth: 1024, max_labels: 32, max_label_value: 256, max_stacks: 200_000, max_threads: 65_536 }
    }
}

/// Longest frame name kept, in bytes. A longer one (a 10 MB "symbol") is cut at a
/// character boundary and ends with `FRAME_CUT_MARKER`, as pprof viewers shorten long
/// C++ names: the profile stays usable and the store and exports stay small.
pub const MAX_FRAME_NAME: usize = 4096;

/// What ends a frame name cut at `MAX_FRAME_NAME`.
pub const FRAME_CUT_MARKER: &str = "…[cut]";

/// `name`, cut to `MAX_FRAME_NAME` bytes (marker included) when longer.
pub fn capped_frame_name(name: &str) -> std::borrow::Cow<'_, str> {
    if name.len() <= MAX_FRAME_NAME {
        return std::borrow::Cow::Borrowed(name);
    }
    let mut end = MAX_FRAME_NAME - FRAME_CUT_MARKER.len();
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    std::borrow::Cow::Owned(format!("{}{FRAME_CUT_MARKER}", &name[..end]))
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

    /// Total samples, all states (saturating).
    pub fn total_samples(&self) -> u64 {
        self.samples.iter().fold(0u64, |a, s| a.saturating_add(s.count))
    }

    /// Total samples per state (saturating).
    pub fn state_totals(&self) -> StateCounts {
        let mut out = StateCounts::default();
        for s in &self.samples {
            let t = &mut out[s.state.index()];
            *t = t.saturating_add(s.count);
        }
        out
    }

    /// Checks what `validate` cannot know without the clock, and what a sane client
    /// never sends: the window within [2000-01-01, now + 1 day], the sampling rate
    /// within [`MIN_RATE_HZ`, `MAX_RATE_HZ`], and a sample count that the window, rate
    /// and `limits.max_threads` allow (so that sums over the store cannot overflow and
    /// one request cannot make a service cost millions).
    pub fn check_plausible(&self, limits: &Limits, now_ms: i64) -> Result<(), ModelError> {
        super::time::check_range("window start", self.start_ms, now_ms)?;
        super::time::check_range("window end", self.end_ms, now_ms)?;
        let min_period = (1e9 / MAX_RATE_HZ) as u64;
        let max_period = (1e9 / MIN_RATE_HZ) as u64;
        if self.period_ns < min_period || self.period_ns > max_period {
            return Err(ModelError::RateOutOfRange { period_ns: self.period_ns });
        }
        let got = self.total_samples();
        if self.profile_type != "cpu" {
            if got > MAX_VALUE_TOTAL {
                return Err(ModelError::ImplausibleValue {
                    got,
                    profile_type: self.profile_type.clone(),
                    max: MAX_VALUE_TOTAL,
                });
            }
            return Ok(());
        }
        let window_ms = self.end_ms.saturating_sub(self.start_ms).max(0);
        // One sample per thread per period, plus one for a period cut by the window's edges.
        let per_thread = (window_ms as u128 * 1_000_000).div_ceil(self.period_ns as u128) + 1;
        if u128::from(got) > per_thread * u128::from(limits.max_threads) {
            return Err(ModelError::ImplausibleCount {
                got,
                window_ms,
                period_ns: self.period_ns,
                max_threads: limits.max_threads,
            });
        }
        Ok(())
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
            if v.contains(['\0', '\r', '\n']) {
                return Err(ModelError::BadLabelValue { name: k.clone() });
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

/// Memory one request may spend on decoding: string, function and location tables
/// while a profile decodes, and the profiles it keeps. Charges are estimates that err
/// high (heap bytes plus container overhead); a request over its budget is refused.
#[derive(Debug, Clone)]
pub struct Budget {
    used: usize,
    max: usize,
    /// `ProfileBuilder::held_bytes` of the builder being charged, when last charged.
    builder_seen: usize,
}

impl Budget {
    /// A budget of `max` bytes.
    pub fn new(max: usize) -> Budget {
        Budget { used: 0, max, builder_seen: 0 }
    }

    /// Takes `bytes` from the budget, or refuses.
    pub fn charge(&mut self, bytes: usize) -> Result<(), ModelError> {
        self.used = self.used.saturating_add(bytes);
        if self.used > self.max {
            return Err(ModelError::OverBudget { max: self.max });
        }
        Ok(())
    }

    /// Gives back `bytes` (tables dropped after a profile decoded).
    pub fn release(&mut self, bytes: usize) {
        self.used = self.used.saturating_sub(bytes);
    }

    /// Starts charging a new builder with `charge_growth`.
    pub fn start_builder(&mut self) {
        self.builder_seen = 0;
    }

    /// Charges what `builder` took since the last call (or `start_builder`).
    pub fn charge_growth(&mut self, builder: &ProfileBuilder) -> Result<(), ModelError> {
        let held = builder.held_bytes();
        let grown = held.saturating_sub(self.builder_seen);
        self.builder_seen = held;
        self.charge(grown)
    }

    /// Bytes left.
    pub fn remaining(&self) -> usize {
        self.max.saturating_sub(self.used)
    }

    /// The budget's size.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Bytes charged so far.
    pub fn used(&self) -> usize {
        self.used
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
    /// Estimated heap bytes held (see `held_bytes`).
    held: usize,
}

/// Estimated bytes of a new interned frame beyond its name (kept twice: list and index).
const FRAME_COST: usize = 96;
/// Estimated bytes of a new interned stack beyond its frame ids (kept twice).
const STACK_COST: usize = 96;
/// Estimated bytes of a new (stack, state) sample and its index entry.
const SAMPLE_COST: usize = 64;

impl ProfileBuilder {
    /// Starts a profile for `service` over `[start_ms, end_ms)` sampled every `period_ns`.
    pub fn new(service: &str, start_ms: i64, end_ms: i64, period_ns: u64) -> ProfileBuilder {
        ProfileBuilder {
            profile: Profile::empty(service, start_ms, end_ms, period_ns),
            frame_ids: HashMap::default(),
            stack_ids: HashMap::default(),
            sample_ids: HashMap::default(),
            scratch: Vec::new(),
            held: 0,
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

    /// Interns a frame name (cut to `MAX_FRAME_NAME`) and returns its index.
    pub fn intern_frame(&mut self, name: &str) -> u32 {
        let name = &*capped_frame_name(name);
        if let Some(&id) = self.frame_ids.get(name) {
            return id;
        }
        let id = self.profile.frames.len() as u32;
        self.held = self.held.saturating_add(FRAME_COST + 2 * name.len());
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
        self.held = self.held.saturating_add(STACK_COST + 8 * frames.len());
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
            Some(&i) => {
                let c = &mut self.profile.samples[i].count;
                *c = c.saturating_add(count);
            }
            None => {
                self.held = self.held.saturating_add(SAMPLE_COST);
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

    /// Estimated heap bytes the builder holds (frames, stacks, samples and their
    /// indexes), for decoders that charge a `Budget` as they build.
    pub fn held_bytes(&self) -> usize {
        self.held
    }

    /// Number of distinct frames so far.
    pub fn frame_count(&self) -> usize {
        self.profile.frames.len()
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

    #[test]
    fn label_values_and_frame_names() {
        let mut b = ProfileBuilder::new("svc", 0, 10, 1);
        for bad in ["a\nb", "a\rb", "a\0b"] {
            let mut p = ProfileBuilder::new("svc", 0, 10, 1).label("host", bad).finish();
            assert_eq!(p.validate(&Limits::default()), Err(ModelError::BadLabelValue { name: "host".into() }));
            p.labels.insert("host".into(), "a\tb é".into());
            assert_eq!(p.validate(&Limits::default()), Ok(()));
        }
        let long = "é".repeat(10_000);
        b.add(&[format!("{long}x")], ThreadState::Runnable, 1);
        b.add(&[format!("{long}y")], ThreadState::Runnable, 1);
        let p = b.finish();
        assert_eq!(p.frames.len(), 1, "names equal up to the cut are one frame");
        assert!(
            p.frames[0].len() <= MAX_FRAME_NAME && p.frames[0].ends_with(FRAME_CUT_MARKER),
            "{}",
            p.frames[0].len()
        );
        assert_eq!(capped_frame_name("short"), "short");
    }

    #[test]
    fn implausible_profiles_are_refused() {
        let now = 1_700_000_000_000;
        let limits = Limits { max_threads: 4, ..Limits::default() };
        let profile = |start_ms: i64, period_ns: u64, count: u64| {
            let mut b = ProfileBuilder::new("svc", start_ms, start_ms + 10_000, period_ns);
            b.add(&["main"], ThreadState::Runnable, count);
            b.add(&["main"], ThreadState::Runnable, count);
            b.finish()
        };
        // 10 s at 100 Hz on 4 threads: at most 4 x 1001 samples.
        assert_eq!(profile(now - 10_000, 10_000_000, 2002).check_plausible(&limits, now), Ok(()));
        assert!(matches!(
            profile(now - 10_000, 10_000_000, 2003).check_plausible(&limits, now),
            Err(ModelError::ImplausibleCount { got: 4006, .. })
        ));
        let max = profile(now - 10_000, 10_000_000, u64::MAX);
        assert_eq!(max.total_samples(), u64::MAX, "sums saturate");
        assert!(max.check_plausible(&limits, now).is_err());
        let slow = profile(now - 10_000, 1_000_000_000_000_000_000, 1).check_plausible(&limits, now).unwrap_err();
        assert_eq!(slow, ModelError::RateOutOfRange { period_ns: 1_000_000_000_000_000_000 });
        assert!(slow.to_string().starts_with("sampling rate 0.000 Hz"), "{slow}");
        assert!(profile(now - 10_000, 1_000, 1).check_plausible(&limits, now).is_err(), "1 MHz");
        assert!(matches!(profile(0, 10_000_000, 1).check_plausible(&limits, now), Err(ModelError::TimeOutOfRange(_))));
        let mut bytes = profile(now - 10_000, 10_000_000, 1 << 40);
        bytes.profile_type = "alloc_space".into();
        assert_eq!(bytes.check_plausible(&limits, now), Ok(()), "bytes are not samples");
        bytes.samples[0].count = u64::MAX;
        assert!(matches!(bytes.check_plausible(&limits, now), Err(ModelError::ImplausibleValue { .. })));
    }
}
