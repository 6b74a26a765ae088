//! pprof (perftools.profiles protobuf, the `pprof` crate's prost types) to and from
//! `Profile`. Each sample's thread state travels as the string label `thread_state`;
//! samples without it are RUNNABLE. Also: bounded gzip decompression, shared by every
//! decoder so that a compressed bomb is refused rather than inflated.

use super::profile::{ModelError, Profile, ProfileBuilder};
use super::state::ThreadState;
use pprof::protos::{self, Message};
use rustc_hash::FxHashMap;
use std::collections::HashMap;
use std::io::Read;

/// The per-sample label that carries the thread state.
pub const THREAD_STATE_LABEL: &str = "thread_state";

/// The sample type (unit `count`) that carries the units of work done in the window
/// (requests handled): summed over all samples into `Profile::work`. The encoder puts
/// it on one sample without locations; docs/api.md.
pub const WORK_SAMPLE_TYPE: &str = "requests";

/// Default sampling period when a pprof does not say: 100 Hz.
pub const DEFAULT_PERIOD_NS: u64 = 10_000_000;

/// True if `bytes` start with the gzip magic number.
pub fn is_gzip(bytes: &[u8]) -> bool {
    bytes.len() >= 2 && bytes[0] == 0x1f && bytes[1] == 0x8b
}

/// Gunzips `bytes` if they are gzip, refusing output over `max` bytes; returns plain
/// input unchanged (and refuses it too when over `max`).
pub fn decompress_bounded(bytes: &[u8], max: usize) -> Result<std::borrow::Cow<'_, [u8]>, ModelError> {
    if !is_gzip(bytes) {
        if bytes.len() > max {
            return Err(ModelError::TooLarge { max });
        }
        return Ok(std::borrow::Cow::Borrowed(bytes));
    }
    let mut out = Vec::with_capacity(bytes.len().saturating_mul(4).min(max));
    let mut decoder = flate2::read::MultiGzDecoder::new(bytes).take(max as u64 + 1);
    decoder.read_to_end(&mut out).map_err(|e| ModelError::BadPprof(format!("gzip: {e}")))?;
    if out.len() > max {
        return Err(ModelError::TooLarge { max });
    }
    Ok(std::borrow::Cow::Owned(out))
}

/// Gzips `bytes` (default level).
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc =
        flate2::write::GzEncoder::new(Vec::with_capacity(bytes.len() / 4 + 64), flate2::Compression::default());
    // Writing into a Vec cannot fail.
    let _ = enc.write_all(bytes);
    enc.finish().unwrap_or_default()
}

/// What the decoder needs beyond the pprof bytes.
#[derive(Debug, Clone)]
pub struct DecodeOptions {
    /// Service the profile belongs to.
    pub service: String,
    /// Window used when the pprof has no `time_nanos`/`duration_nanos`.
    pub start_ms: i64,
    /// See `start_ms`.
    pub end_ms: i64,
    /// Sample type to read (`cpu`, `samples`, `alloc_space`...); None picks the CPU one.
    pub sample_type: Option<String>,
    /// Decompressed size limit.
    pub max_bytes: usize,
}

/// Decodes pprof bytes (plain or gzip) into a `Profile`. Labels are left empty.
pub fn decode(bytes: &[u8], opts: &DecodeOptions) -> Result<Profile, ModelError> {
    let plain = decompress_bounded(bytes, opts.max_bytes)?;
    let msg = protos::Profile::decode(plain.as_ref()).map_err(|e| ModelError::BadPprof(e.to_string()))?;
    from_proto(&msg, opts)
}

fn string_at(table: &[String], index: i64) -> Result<&str, ModelError> {
    usize::try_from(index)
        .ok()
        .and_then(|i| table.get(i))
        .map(String::as_str)
        .ok_or_else(|| ModelError::BadPprof(format!("string index {index} out of range")))
}

/// pprof ids (function, location) to values: a plain vector when the ids are small and
/// dense, as every encoder we know writes them (1..=n), a hash map otherwise.
struct IdTable<T: Copy> {
    dense: Vec<Option<T>>,
    sparse: FxHashMap<u64, T>,
    limit: u64,
}

impl<T: Copy> IdTable<T> {
    fn with_capacity(n: usize) -> IdTable<T> {
        IdTable { dense: Vec::with_capacity(n + 1), sparse: FxHashMap::default(), limit: 4 * n as u64 + 16 }
    }

    fn insert(&mut self, id: u64, value: T) {
        if id < self.limit {
            let i = id as usize;
            if self.dense.len() <= i {
                self.dense.resize(i + 1, None);
            }
            self.dense[i] = Some(value);
        } else {
            self.sparse.insert(id, value);
        }
    }

    fn get(&self, id: u64) -> Option<T> {
        if id < self.limit {
            self.dense.get(id as usize).copied().flatten()
        } else {
            self.sparse.get(&id).copied()
        }
    }
}

/// How one sample value becomes a sample count.
enum Scale {
    Count,
    Nanos,
}

/// Converts a decoded pprof message into a `Profile`.
pub fn from_proto(msg: &protos::Profile, opts: &DecodeOptions) -> Result<Profile, ModelError> {
    let st = &msg.string_table;
    if msg.sample_type.is_empty() && !msg.sample.is_empty() {
        return Err(ModelError::BadPprof("no sample_type".into()));
    }
    let mut types = Vec::with_capacity(msg.sample_type.len());
    for vt in &msg.sample_type {
        types.push((string_at(st, vt.ty)?, string_at(st, vt.unit)?));
    }
    let (value_index, scale, profile_type) = pick_sample_type(&types, opts.sample_type.as_deref())?;
    let work_index = types.iter().position(|(t, u)| *t == WORK_SAMPLE_TYPE && *u == "count");
    let mut work = 0u64;

    let period_ns = match &msg.period_type {
        Some(pt) if msg.period > 0 && string_at(st, pt.unit)? == "nanoseconds" => msg.period as u64,
        _ => DEFAULT_PERIOD_NS,
    };
    let (start_ms, end_ms) = if msg.time_nanos > 0 && msg.duration_nanos > 0 {
        let start = msg.time_nanos / 1_000_000;
        (start, start + (msg.duration_nanos / 1_000_000).max(1))
    } else if msg.time_nanos > 0 {
        let start = msg.time_nanos / 1_000_000;
        (start, start + (opts.end_ms - opts.start_ms).max(1))
    } else {
        (opts.start_ms, opts.end_ms)
    };

    let mut builder = ProfileBuilder::new(&opts.service, start_ms, end_ms, period_ns).profile_type(profile_type);

    // Function id -> frame id, each name interned once.
    let mut function_frames = IdTable::with_capacity(msg.function.len());
    for f in &msg.function {
        let name = string_at(st, f.name)?;
        let name = if name.is_empty() { string_at(st, f.system_name)? } else { name };
        let frame = builder.intern_frame(if name.is_empty() { "[unknown]" } else { name });
        function_frames.insert(f.id, frame);
    }
    let mappings: FxHashMap<u64, &protos::Mapping> = msg.mapping.iter().map(|m| (m.id, m)).collect();

    // Location id -> a range of `location_buf` holding its frames, outermost inlined
    // function first (pprof lists them leaf first).
    let mut location_buf: Vec<u32> = Vec::with_capacity(msg.location.len() * 2);
    let mut location_ranges = IdTable::with_capacity(msg.location.len());
    for loc in &msg.location {
        let start = location_buf.len() as u32;
        for line in loc.line.iter().rev() {
            let frame = function_frames
                .get(line.function_id)
                .ok_or_else(|| ModelError::BadPprof(format!("unknown function id {}", line.function_id)))?;
            location_buf.push(frame);
        }
        if loc.line.is_empty() {
            let module = mappings
                .get(&loc.mapping_id)
                .and_then(|m| string_at(st, m.filename).ok())
                .map(|f| f.rsplit('/').next().unwrap_or(f))
                .filter(|f| !f.is_empty());
            let name = match module {
                Some(m) => format!("[unknown] {m}+{:#x}", loc.address),
                None => format!("[unknown] {:#x}", loc.address),
            };
            location_buf.push(builder.intern_frame(&name));
        }
        location_ranges.insert(loc.id, (start, location_buf.len() as u32));
    }

    let state_key = st.iter().position(|s| s == THREAD_STATE_LABEL).map(|i| i as i64);
    let mut totals: FxHashMap<(u32, ThreadState), u128> = FxHashMap::default();
    let mut state_names: FxHashMap<i64, ThreadState> = FxHashMap::default();
    let mut stack = Vec::new();
    for sample in &msg.sample {
        let value = *sample.value.get(value_index).ok_or_else(|| {
            ModelError::BadPprof(format!("sample has {} values, expected {}", sample.value.len(), types.len()))
        })?;
        if let Some(w) = work_index.and_then(|i| sample.value.get(i)) {
            work = work.saturating_add(u64::try_from(*w).unwrap_or(0));
        }
        if value <= 0 {
            continue;
        }
        stack.clear();
        for id in sample.location_id.iter().rev() {
            let (start, end) =
                location_ranges.get(*id).ok_or_else(|| ModelError::BadPprof(format!("unknown location id {id}")))?;
            stack.extend_from_slice(&location_buf[start as usize..end as usize]);
        }
        let mut state = ThreadState::Runnable;
        if let Some(key) = state_key {
            if let Some(label) = sample.label.iter().find(|l| l.key == key) {
                state = match state_names.get(&label.str) {
                    Some(s) => *s,
                    None => {
                        let s: ThreadState =
                            string_at(st, label.str)?.parse().map_err(|e| ModelError::BadPprof(format!("{e}")))?;
                        state_names.insert(label.str, s);
                        s
                    }
                };
            }
        }
        let id = builder.intern_stack(&stack);
        *totals.entry((id, state)).or_default() += value as u128;
    }
    let mut entries: Vec<_> = totals.into_iter().collect();
    entries.sort_unstable_by_key(|((stack, state), _)| (*stack, *state));
    for ((stack, state), value) in entries {
        let count = match scale {
            Scale::Count => value as u64,
            Scale::Nanos => ((value + period_ns as u128 / 2) / period_ns as u128) as u64,
        };
        builder.add_stack(stack, state, count);
    }
    let mut profile = builder.finish();
    profile.work = work_index.map(|_| work);
    Ok(profile)
}

/// Chooses which sample value to read: the requested type, else a CPU/wall count, else
/// CPU nanoseconds, else the first. Returns (index, scale, profile type name).
fn pick_sample_type<'a>(
    types: &[(&'a str, &'a str)],
    wanted: Option<&str>,
) -> Result<(usize, Scale, &'a str), ModelError> {
    let scale_of = |unit: &str| if unit == "nanoseconds" { Scale::Nanos } else { Scale::Count };
    let cpu_like = |ty: &str| matches!(ty, "cpu" | "samples" | "wall" | "itimer");
    if let Some(w) = wanted {
        if let Some(i) = types.iter().position(|(t, _)| *t == w) {
            let (t, u) = types[i];
            return Ok((i, scale_of(u), if cpu_like(t) { "cpu" } else { t }));
        }
        if !cpu_like(w) {
            return Err(ModelError::BadPprof(format!("sample type {w:?} not in profile")));
        }
    }
    if types.is_empty() {
        return Ok((0, Scale::Count, "cpu"));
    }
    if let Some(i) = types.iter().position(|(t, u)| cpu_like(t) && *u == "count") {
        return Ok((i, Scale::Count, "cpu"));
    }
    if let Some(i) = types.iter().position(|(t, u)| cpu_like(t) && *u == "nanoseconds") {
        return Ok((i, Scale::Nanos, "cpu"));
    }
    let (t, u) = types[0];
    Ok((0, scale_of(u), t))
}

/// Encodes a `Profile` as a pprof message: sample types `samples/count` and
/// `cpu/nanoseconds`, one function and location per frame, state as a label.
pub fn to_proto(profile: &Profile) -> protos::Profile {
    let mut strings: Vec<String> = vec![String::new()];
    let mut string_ids: HashMap<String, i64> = HashMap::new();
    let mut intern = |s: &str, strings: &mut Vec<String>| -> i64 {
        if let Some(&id) = string_ids.get(s) {
            return id;
        }
        let id = strings.len() as i64;
        strings.push(s.to_string());
        string_ids.insert(s.to_string(), id);
        id
    };
    let samples_t = intern("samples", &mut strings);
    let count_u = intern("count", &mut strings);
    let cpu_t = intern(if profile.profile_type == "cpu" { "cpu" } else { &profile.profile_type }, &mut strings);
    let ns_u = intern("nanoseconds", &mut strings);
    let state_k = intern(THREAD_STATE_LABEL, &mut strings);
    let state_v: Vec<i64> = ThreadState::ALL.iter().map(|s| intern(s.as_str(), &mut strings)).collect();

    let function: Vec<protos::Function> = profile
        .frames
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let n = intern(name, &mut strings);
            protos::Function { id: i as u64 + 1, name: n, system_name: n, filename: 0, start_line: 0 }
        })
        .collect();
    let location: Vec<protos::Location> = (0..profile.frames.len())
        .map(|i| protos::Location {
            id: i as u64 + 1,
            mapping_id: 0,
            address: 0,
            line: vec![protos::Line { function_id: i as u64 + 1, line: 0 }],
            is_folded: false,
        })
        .collect();
    let mut sample_type =
        vec![protos::ValueType { ty: samples_t, unit: count_u }, protos::ValueType { ty: cpu_t, unit: ns_u }];
    // The work counter is a third value, 0 on every stack and carried by one sample
    // without locations.
    let work_t = profile.work.map(|_| intern(WORK_SAMPLE_TYPE, &mut strings));
    if let Some(ty) = work_t {
        sample_type.push(protos::ValueType { ty, unit: count_u });
    }
    let mut sample: Vec<protos::Sample> = profile
        .samples
        .iter()
        .map(|s| {
            let mut value = vec![s.count as i64, (s.count as i64).saturating_mul(profile.period_ns as i64)];
            if work_t.is_some() {
                value.push(0);
            }
            protos::Sample {
                location_id: profile
                    .stacks
                    .get(s.stack as usize)
                    .map(|st| st.iter().rev().map(|f| *f as u64 + 1).collect())
                    .unwrap_or_default(),
                value,
                label: vec![protos::Label { key: state_k, str: state_v[s.state.index()], num: 0, num_unit: 0 }],
            }
        })
        .collect();
    if let Some(work) = profile.work {
        sample.push(protos::Sample {
            location_id: Vec::new(),
            value: vec![0, 0, work.min(i64::MAX as u64) as i64],
            label: Vec::new(),
        });
    }
    protos::Profile {
        sample_type,
        sample,
        mapping: Vec::new(),
        location,
        function,
        string_table: strings,
        drop_frames: 0,
        keep_frames: 0,
        time_nanos: profile.start_ms.saturating_mul(1_000_000),
        duration_nanos: (profile.end_ms - profile.start_ms).saturating_mul(1_000_000),
        period_type: Some(protos::ValueType { ty: cpu_t, unit: ns_u }),
        period: profile.period_ns as i64,
        comment: Vec::new(),
        default_sample_type: 0,
    }
}

/// Encodes a `Profile` as pprof protobuf bytes (not compressed).
pub fn encode(profile: &Profile) -> Vec<u8> {
    to_proto(profile).encode_to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> DecodeOptions {
        DecodeOptions { service: "svc".into(), start_ms: 0, end_ms: 10_000, sample_type: None, max_bytes: 1 << 20 }
    }

    #[test]
    fn pprof_round_trip_keeps_states() {
        let mut b = ProfileBuilder::new("svc", 1_000, 11_000, 10_101_010);
        b.add(&["main", "work", "hot"], ThreadState::Runnable, 70);
        b.add(&["main", "work", "warm"], ThreadState::Runnable, 30);
        b.add(&["main", "lock"], ThreadState::Blocked, 12);
        b.add(&["main", "sleep"], ThreadState::TimedWaiting, 5);
        let p = b.finish();
        let back = decode(&gzip(&encode(&p)), &opts()).unwrap();
        assert_eq!(back.start_ms, 1_000);
        assert_eq!(back.end_ms, 11_000);
        assert_eq!(back.period_ns, 10_101_010);
        assert_eq!(back.state_totals(), p.state_totals());
        assert_eq!(super::super::folded::to_folded(&back, &[]), super::super::folded::to_folded(&p, &[]));
        assert_eq!(back.work, None);
    }

    #[test]
    fn the_work_counter_travels_as_a_requests_sample_type() {
        let mut b = ProfileBuilder::new("svc", 1_000, 11_000, 10_000_000);
        b.add(&["main", "work"], ThreadState::Runnable, 70);
        let mut p = b.finish();
        p.work = Some(1234);
        let back = decode(&encode(&p), &opts()).unwrap();
        assert_eq!(back.work, Some(1234));
        assert_eq!(back.total_samples(), 70, "the work sample adds no CPU sample");
        p.work = Some(0);
        assert_eq!(decode(&encode(&p), &opts()).unwrap().work, Some(0), "a counter that counted nothing is kept");
    }

    #[test]
    fn nanosecond_values_become_counts() {
        let mut p = ProfileBuilder::new("svc", 0, 10_000, 10_000_000);
        p.add(&["a", "b"], ThreadState::Runnable, 7);
        let mut msg = to_proto(&p.finish());
        // Keep only the cpu/nanoseconds value, as Go's runtime/pprof without `samples`.
        msg.sample_type.remove(0);
        for s in &mut msg.sample {
            s.value.remove(0);
        }
        let back = from_proto(&msg, &opts()).unwrap();
        assert_eq!(back.total_samples(), 7);
    }

    #[test]
    fn garbage_and_bombs_are_refused() {
        assert!(matches!(decode(b"\xff\xff\xff\xff not protobuf", &opts()), Err(ModelError::BadPprof(_))));
        let bomb = gzip(&vec![0u8; 4 << 20]);
        assert_eq!(decode(&bomb, &opts()), Err(ModelError::TooLarge { max: 1 << 20 }));
    }
}
