//! pprof (perftools.profiles protobuf, the `pprof` crate's prost types) to and from
//! `Profile`. Each sample's thread state travels as the string label `thread_state`;
//! samples without it are RUNNABLE. Also: bounded gzip decompression, shared by every
//! decoder so that a compressed bomb is refused rather than inflated.

pub use super::profile::Budget;
use super::profile::{ModelError, Profile, ProfileBuilder};
use super::state::ThreadState;
use super::wire::{self, WireError};
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
    // The gzip trailer says the size (mod 2^32) of the last member: allocate it once, so
    // that growth does not double the memory of a body near the limit.
    let trailer = bytes.len().checked_sub(4).and_then(|i| bytes.get(i..)).and_then(|t| <[u8; 4]>::try_from(t).ok());
    let hint = trailer.map_or(0, |t| u32::from_le_bytes(t) as usize);
    let mut out = Vec::with_capacity(hint.max(bytes.len().saturating_mul(4)).min(max) + 1);
    let mut decoder = flate2::read::MultiGzDecoder::new(bytes).take(max as u64 + 1);
    decoder.read_to_end(&mut out).map_err(|e| ModelError::BadPprof(format!("gzip: {e}")))?;
    if out.len() > max {
        return Err(ModelError::TooLarge { max });
    }
    Ok(std::borrow::Cow::Owned(out))
}

/// Gzips `bytes` (default level).
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    gzip_at(bytes, flate2::Compression::default())
}

/// Gzips `bytes` at `level` (an agent's uploads use `Compression::fast()`).
pub fn gzip_at(bytes: &[u8], level: flate2::Compression) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::with_capacity(bytes.len() / 4 + 64), level);
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

/// What the decoder enforces while it decodes, before it allocates: a small request
/// (one Location with thousands of inlined lines referenced thousands of times, or
/// megabytes of empty Sample messages) must not make it build gigabytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Frames in one stack, inlined lines included. Default 1024 (`Limits::max_stack_depth`).
    pub max_stack_depth: usize,
    /// Distinct stacks. Default 200,000 (`Limits::max_stacks`).
    pub max_stacks: usize,
    /// Sample messages. Default 2,000,000.
    pub max_samples: u64,
    /// Frames expanded over all samples (what the decoding costs in CPU). Default 50,000,000.
    pub max_total_frames: u64,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits::of(&super::profile::Limits::default())
    }
}

impl DecodeLimits {
    /// The decode limits that go with the profile limits `limits`.
    pub fn of(limits: &super::profile::Limits) -> DecodeLimits {
        DecodeLimits {
            max_stack_depth: limits.max_stack_depth,
            max_stacks: limits.max_stacks,
            max_samples: 2_000_000,
            max_total_frames: 50_000_000,
        }
    }
}

/// Budget of `decode` and `from_proto`, for callers without a budget of their own.
pub const DEFAULT_DECODE_BUDGET: usize = 256 << 20;

/// Decodes pprof bytes (plain or gzip) into a `Profile` with the default limits and
/// budget. Labels are left empty.
pub fn decode(bytes: &[u8], opts: &DecodeOptions) -> Result<Profile, ModelError> {
    decode_with(bytes, opts, &DecodeLimits::default(), &mut Budget::new(DEFAULT_DECODE_BUDGET))
}

/// Decodes pprof bytes (plain or gzip) into a `Profile`, enforcing `limits` and
/// charging `budget` as it goes. Labels are left empty.
pub fn decode_with(
    bytes: &[u8],
    opts: &DecodeOptions,
    limits: &DecodeLimits,
    budget: &mut Budget,
) -> Result<Profile, ModelError> {
    let plain = decompress_bounded(bytes, opts.max_bytes)?;
    // An inflated copy counts while it lives; plain input is the caller's to count.
    let inflated = if is_gzip(bytes) { plain.len() } else { 0 };
    budget.charge(inflated)?;
    let decoded = decode_message(&plain, opts, limits, budget);
    budget.release(inflated);
    decoded
}

/// Converts a decoded pprof message into a `Profile` (through its encoding, so that
/// one decoder with one set of limits serves every caller).
pub fn from_proto(msg: &protos::Profile, opts: &DecodeOptions) -> Result<Profile, ModelError> {
    decode_message(&msg.encode_to_vec(), opts, &DecodeLimits::default(), &mut Budget::new(DEFAULT_DECODE_BUDGET))
}

impl From<WireError> for ModelError {
    fn from(e: WireError) -> Self {
        ModelError::BadPprof(e.to_string())
    }
}

fn string_at<'a>(table: &[&'a str], index: i64) -> Result<&'a str, ModelError> {
    usize::try_from(index)
        .ok()
        .and_then(|i| table.get(i))
        .copied()
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
    /// Bytes an entry may cost: up to four dense slots, or a hash map entry.
    const COST: usize = 4 * std::mem::size_of::<Option<T>>() + 32;

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

// Field numbers of perftools.profiles.Profile and its messages.
const P_SAMPLE_TYPE: u32 = 1;
const P_SAMPLE: u32 = 2;
const P_MAPPING: u32 = 3;
const P_LOCATION: u32 = 4;
const P_FUNCTION: u32 = 5;
const P_STRING: u32 = 6;
const P_TIME_NANOS: u32 = 9;
const P_DURATION_NANOS: u32 = 10;
const P_PERIOD_TYPE: u32 = 11;
const P_PERIOD: u32 = 12;

/// Estimated bytes of one entry of the string table (a borrowed `&str`).
const STRING_COST: usize = 16;
/// Estimated bytes of a mapping id -> file name entry.
const MAPPING_COST: usize = 48;
/// Estimated bytes of a (stack, state) total while decoding.
const TOTAL_COST: usize = 48;

/// `(type, unit)` string indices of a ValueType message.
fn value_type(bytes: &[u8]) -> Result<(i64, i64), ModelError> {
    let (mut ty, mut unit) = (0, 0);
    for field in wire::fields(bytes) {
        match field? {
            (1, v) => ty = v.int("ValueType.type")? as i64,
            (2, v) => unit = v.int("ValueType.unit")? as i64,
            _ => {}
        }
    }
    Ok((ty, unit))
}

/// What the first passes over a profile message collect: everything but samples,
/// locations, functions and mappings, which later passes stream, and their counts.
struct Header<'a> {
    strings: Vec<&'a str>,
    sample_types: Vec<(i64, i64)>,
    period_type: Option<(i64, i64)>,
    period: i64,
    time_nanos: i64,
    duration_nanos: i64,
    samples: u64,
    functions: usize,
    locations: usize,
    mappings: usize,
    /// Bytes charged for the tables, given back when the profile is decoded.
    tables: usize,
}

/// Counts the repeated fields first (no allocation), charges the budget for the tables
/// they make, then reads the string table and the scalars into tables of exact size.
fn header<'a>(plain: &'a [u8], limits: &DecodeLimits, budget: &mut Budget) -> Result<Header<'a>, ModelError> {
    let (mut strings, mut sample_types, mut samples, mut functions, mut locations, mut mappings) =
        (0usize, 0usize, 0u64, 0usize, 0usize, 0usize);
    // Refused as soon as the counts alone are over a limit, without reading further.
    let (mut tables, room) = (0usize, budget.remaining());
    for field in wire::fields(plain) {
        tables = tables.saturating_add(match field?.0 {
            P_STRING => {
                strings += 1;
                STRING_COST
            }
            P_SAMPLE_TYPE => {
                sample_types += 1;
                16
            }
            P_SAMPLE => {
                samples += 1;
                if samples > limits.max_samples {
                    return Err(ModelError::TooManySamples { max: limits.max_samples });
                }
                0
            }
            P_FUNCTION => {
                functions += 1;
                IdTable::<u32>::COST
            }
            P_LOCATION => {
                locations += 1;
                IdTable::<(u32, u32)>::COST
            }
            P_MAPPING => {
                mappings += 1;
                MAPPING_COST
            }
            _ => 0,
        });
        if tables > room {
            return Err(ModelError::OverBudget { max: budget.max() });
        }
    }
    budget.charge(tables)?;
    let mut h = Header {
        strings: Vec::with_capacity(strings),
        sample_types: Vec::with_capacity(sample_types),
        period_type: None,
        period: 0,
        time_nanos: 0,
        duration_nanos: 0,
        samples,
        functions,
        locations,
        mappings,
        tables,
    };
    for field in wire::fields(plain) {
        match field? {
            (P_STRING, v) => {
                let s = std::str::from_utf8(v.bytes("string_table")?)
                    .map_err(|_| ModelError::BadPprof("string table entry is not UTF-8".into()))?;
                h.strings.push(s);
            }
            (P_SAMPLE_TYPE, v) => h.sample_types.push(value_type(v.bytes("sample_type")?)?),
            (P_TIME_NANOS, v) => h.time_nanos = v.int("time_nanos")? as i64,
            (P_DURATION_NANOS, v) => h.duration_nanos = v.int("duration_nanos")? as i64,
            (P_PERIOD_TYPE, v) => h.period_type = Some(value_type(v.bytes("period_type")?)?),
            (P_PERIOD, v) => h.period = v.int("period")? as i64,
            _ => {}
        }
    }
    Ok(h)
}

/// Decodes one plain (not gzip) pprof message.
fn decode_message(
    plain: &[u8],
    opts: &DecodeOptions,
    limits: &DecodeLimits,
    budget: &mut Budget,
) -> Result<Profile, ModelError> {
    let start_budget = budget.used();
    let h = header(plain, limits, budget)?;
    let st = &h.strings;
    if h.sample_types.is_empty() && h.samples > 0 {
        return Err(ModelError::BadPprof("no sample_type".into()));
    }
    let mut types = Vec::with_capacity(h.sample_types.len());
    for &(ty, unit) in &h.sample_types {
        types.push((string_at(st, ty)?, string_at(st, unit)?));
    }
    let (value_index, scale, profile_type) = pick_sample_type(&types, opts.sample_type.as_deref())?;
    let work_index = types.iter().position(|(t, u)| *t == WORK_SAMPLE_TYPE && *u == "count");
    let mut work = 0u64;

    let period_ns = match h.period_type {
        Some((_, unit)) if h.period > 0 && string_at(st, unit)? == "nanoseconds" => h.period as u64,
        _ => DEFAULT_PERIOD_NS,
    };
    let (start_ms, end_ms) = if h.time_nanos > 0 && h.duration_nanos > 0 {
        let start = h.time_nanos / 1_000_000;
        (start, start + (h.duration_nanos / 1_000_000).max(1))
    } else if h.time_nanos > 0 {
        let start = h.time_nanos / 1_000_000;
        (start, start + (opts.end_ms - opts.start_ms).max(1))
    } else {
        (opts.start_ms, opts.end_ms)
    };

    let mut builder = ProfileBuilder::new(&opts.service, start_ms, end_ms, period_ns).profile_type(profile_type);
    budget.start_builder();

    // Function id -> frame id, each name interned once; mapping id -> file name.
    let mut function_frames = IdTable::with_capacity(h.functions);
    let mut mappings: FxHashMap<u64, i64> = FxHashMap::with_capacity_and_hasher(h.mappings, Default::default());
    for field in wire::fields(plain) {
        match field? {
            (P_FUNCTION, v) => {
                let (mut id, mut name, mut system_name) = (0, 0, 0);
                for f in wire::fields(v.bytes("function")?) {
                    match f? {
                        (1, v) => id = v.int("Function.id")?,
                        (2, v) => name = v.int("Function.name")? as i64,
                        (3, v) => system_name = v.int("Function.system_name")? as i64,
                        _ => {}
                    }
                }
                let name = string_at(st, name)?;
                let name = if name.is_empty() { string_at(st, system_name)? } else { name };
                let frame = builder.intern_frame(if name.is_empty() { "[unknown]" } else { name });
                budget.charge_growth(&builder)?;
                function_frames.insert(id, frame);
            }
            (P_MAPPING, v) => {
                let (mut id, mut filename) = (0, 0);
                for f in wire::fields(v.bytes("mapping")?) {
                    match f? {
                        (1, v) => id = v.int("Mapping.id")?,
                        (5, v) => filename = v.int("Mapping.filename")? as i64,
                        _ => {}
                    }
                }
                mappings.insert(id, filename);
            }
            _ => {}
        }
    }

    // Location id -> a range of `location_buf` holding its frames, outermost inlined
    // function first (pprof lists them leaf first).
    let mut location_buf: Vec<u32> = Vec::new();
    let mut location_ranges = IdTable::with_capacity(h.locations);
    for field in wire::fields(plain) {
        let (P_LOCATION, v) = field? else { continue };
        let start = location_buf.len();
        let (mut id, mut mapping_id, mut address) = (0, 0, 0);
        for f in wire::fields(v.bytes("location")?) {
            match f? {
                (1, v) => id = v.int("Location.id")?,
                (2, v) => mapping_id = v.int("Location.mapping_id")?,
                (3, v) => address = v.int("Location.address")?,
                (4, v) => {
                    let mut function_id = 0;
                    for l in wire::fields(v.bytes("Location.line")?) {
                        if let (1, v) = l? {
                            function_id = v.int("Line.function_id")?;
                        }
                    }
                    let frame = function_frames
                        .get(function_id)
                        .ok_or_else(|| ModelError::BadPprof(format!("unknown function id {function_id}")))?;
                    budget.charge(4)?;
                    location_buf.push(frame);
                }
                _ => {}
            }
        }
        location_buf[start..].reverse();
        if location_buf.len() == start {
            let module = mappings
                .get(&mapping_id)
                .and_then(|f| string_at(st, *f).ok())
                .map(|f| f.rsplit('/').next().unwrap_or(f))
                .filter(|f| !f.is_empty());
            let name = match module {
                Some(m) => format!("[unknown] {m}+{address:#x}"),
                None => format!("[unknown] {address:#x}"),
            };
            budget.charge(4)?;
            location_buf.push(builder.intern_frame(&name));
            budget.charge_growth(&builder)?;
        }
        let range = u32::try_from(start)
            .ok()
            .zip(u32::try_from(location_buf.len()).ok())
            .ok_or_else(|| ModelError::BadPprof("too many location lines".into()))?;
        location_ranges.insert(id, range);
    }

    let state_key = st.iter().position(|s| *s == THREAD_STATE_LABEL).map(|i| i as i64);
    let mut totals: FxHashMap<(u32, ThreadState), u128> = FxHashMap::default();
    let mut state_names: FxHashMap<i64, ThreadState> = FxHashMap::default();
    let mut ids: Vec<u64> = Vec::new();
    let mut stack: Vec<u32> = Vec::new();
    let mut total_frames = 0u64;
    for field in wire::fields(plain) {
        let (P_SAMPLE, v) = field? else { continue };
        ids.clear();
        let (mut frames, mut values, mut value, mut state_str) = (0usize, 0usize, 0i64, None);
        let mut units = 0i64;
        for f in wire::fields(v.bytes("sample")?) {
            match f? {
                (1, v) => v.each_int::<ModelError>(|id| {
                    let (start, end) = location_ranges
                        .get(id)
                        .ok_or_else(|| ModelError::BadPprof(format!("unknown location id {id}")))?;
                    frames = frames.saturating_add((end - start) as usize);
                    // Past the limit only the count goes on, for the message.
                    if frames <= limits.max_stack_depth {
                        ids.push(id);
                    }
                    Ok(())
                })?,
                (2, v) => v.each_int::<ModelError>(|x| {
                    if values == value_index {
                        value = x as i64;
                    }
                    if Some(values) == work_index {
                        units = x as i64;
                    }
                    values += 1;
                    Ok(())
                })?,
                (3, v) => {
                    let (mut key, mut str) = (0, 0);
                    for l in wire::fields(v.bytes("Sample.label")?) {
                        match l? {
                            (1, v) => key = v.int("Label.key")? as i64,
                            (2, v) => str = v.int("Label.str")? as i64,
                            _ => {}
                        }
                    }
                    if Some(key) == state_key && state_str.is_none() {
                        state_str = Some(str);
                    }
                }
                _ => {}
            }
        }
        if values <= value_index {
            return Err(ModelError::BadPprof(format!("sample has {values} values, expected {}", types.len())));
        }
        if work_index.is_some() {
            work = work.saturating_add(u64::try_from(units).unwrap_or(0));
        }
        if value <= 0 {
            continue;
        }
        if frames > limits.max_stack_depth {
            return Err(ModelError::StackTooDeep { got: frames, max: limits.max_stack_depth });
        }
        total_frames = total_frames.saturating_add(frames as u64);
        if total_frames > limits.max_total_frames {
            return Err(ModelError::TooManyFrames { max: limits.max_total_frames });
        }
        stack.clear();
        for id in ids.iter().rev() {
            if let Some((start, end)) = location_ranges.get(*id) {
                stack.extend_from_slice(&location_buf[start as usize..end as usize]);
            }
        }
        let state = match state_str {
            None => ThreadState::Runnable,
            Some(index) => match state_names.get(&index) {
                Some(s) => *s,
                None => {
                    let s: ThreadState =
                        string_at(st, index)?.parse().map_err(|e| ModelError::BadPprof(format!("{e}")))?;
                    state_names.insert(index, s);
                    s
                }
            },
        };
        let id = builder.intern_stack(&stack);
        if builder.stack_count() > limits.max_stacks {
            return Err(ModelError::TooManyStacks { got: builder.stack_count(), max: limits.max_stacks });
        }
        budget.charge_growth(&builder)?;
        match totals.entry((id, state)) {
            std::collections::hash_map::Entry::Occupied(mut e) => *e.get_mut() += value as u128,
            std::collections::hash_map::Entry::Vacant(e) => {
                budget.charge(TOTAL_COST)?;
                e.insert(value as u128);
            }
        }
    }
    // The tables go; what the profile keeps (frames, stacks, totals) stays charged.
    let tables = h.tables + location_buf.len() * 4;
    budget.release(tables.min(budget.used().saturating_sub(start_budget)));

    let mut entries: Vec<_> = totals.into_iter().collect();
    entries.sort_unstable_by_key(|((stack, state), _)| (*stack, *state));
    for ((stack, state), value) in entries {
        let count = match scale {
            Scale::Count => value,
            Scale::Nanos => (value + period_ns as u128 / 2) / period_ns as u128,
        };
        // Saturate: `Profile::check_plausible` refuses such a count with its reason.
        let count = u64::try_from(count).unwrap_or(u64::MAX);
        builder.add_stack(stack, state, count);
    }
    budget.charge_growth(&builder)?;
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
    fn limits_hold_while_decoding() {
        let mut b = ProfileBuilder::new("svc", 0, 10_000, 10_000_000);
        b.add(&["main", "work"], ThreadState::Runnable, 3);
        let mut msg = to_proto(&b.finish());
        // One location of 2,000 inlined lines, referenced 2,000 times: 4 M frames.
        msg.location[0].line = vec![msg.location[0].line[0].clone(); 2_000];
        msg.sample[0].location_id = vec![1; 2_000];
        let bomb = msg.encode_to_vec();
        let err = decode(&bomb, &opts()).unwrap_err();
        assert_eq!(err, ModelError::StackTooDeep { got: 4_000_000, max: 1024 });
        let empty_samples = [0x12, 0x00].repeat(3_000_000);
        let big = DecodeOptions { max_bytes: 16 << 20, ..opts() };
        assert_eq!(decode(&empty_samples, &big), Err(ModelError::TooManySamples { max: 2_000_000 }));
        let empty_strings = [0x32, 0x00].repeat(100_000);
        let mut budget = Budget::new(1 << 20);
        let err = decode_with(&empty_strings, &opts(), &DecodeLimits::default(), &mut budget).unwrap_err();
        assert_eq!(err, ModelError::OverBudget { max: 1 << 20 });
        // What a decoded profile keeps stays charged; its tables are given back.
        let mut budget = Budget::new(1 << 20);
        let fine = encode(&ProfileBuilder::new("svc", 0, 10_000, 10_000_000).finish());
        decode_with(&gzip(&fine), &opts(), &DecodeLimits::default(), &mut budget).unwrap();
        assert!(budget.used() < 1024, "{budget:?}");
    }

    #[test]
    fn garbage_and_bombs_are_refused() {
        assert!(matches!(decode(b"\xff\xff\xff\xff not protobuf", &opts()), Err(ModelError::BadPprof(_))));
        let bomb = gzip(&vec![0u8; 4 << 20]);
        assert_eq!(decode(&bomb, &opts()), Err(ModelError::TooLarge { max: 1 << 20 }));
    }
}
