//! Names of JIT and interpreter code from a runtime's perf map (`/tmp/perf-PID.map`, the
//! format perf reads): one `START SIZE NAME` line per code region, addresses in hex. The
//! JVM writes it when asked (`jcmd PID Compiler.perfmap`, rewritten whole each time),
//! Node.js with `--perf-basic-prof` and Python 3.12+ with `-X perf` append to it as they
//! compile. See docs/runtimes.md.
//!
//! In: the path of a map (`map_path_of`: through /proc/PID/root with the pid the process
//! has in its own namespace, so a containerised runtime's map is found too), read again
//! as it grows: only appended bytes are parsed, a rewritten (shorter or replaced) file is
//! read from the start. Out: for a code address, the frame of the latest region that
//! covers it, named as the runtime's users write it (`cleaned_name`: `com.foo.Bar.method`
//! for Java), interned in the `Symbolizer`. Must not: run a program, block on anything
//! but the file, or read more than `MAX_MAP_BYTES` of one map.

use super::{RawFrame, Symbolizer};
use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The most bytes of one map that are parsed; beyond it new regions stay unnamed (a
/// runtime compiling without end, e.g. eval in a loop, cannot make the agent grow
/// without bound).
pub const MAX_MAP_BYTES: u64 = 64 << 20;

/// The most regions kept for one process.
pub const MAX_REGIONS: usize = 1 << 20;

/// A line longer than this is not a perf map line (skipped).
const MAX_LINE: usize = 4096;

/// Errors reading a perf map.
#[derive(Debug, thiserror::Error)]
pub enum PerfMapError {
    /// The file could not be opened or read.
    #[error("cannot read the perf map {path}: {source}")]
    Io {
        /// The map.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// The perf map of process `pid` as seen from here: `/proc/PID/root/tmp/perf-NSPID.map`,
/// where NSPID is the pid in the process's own pid namespace (the last `NSpid` field of
/// /proc/PID/status; the same as `pid` outside containers).
pub fn map_path_of(pid: u32) -> PathBuf {
    let nspid = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| namespaced_pid(&status))
        .unwrap_or(pid);
    PathBuf::from(format!("/proc/{pid}/root/tmp/perf-{nspid}.map"))
}

/// The innermost pid namespace's pid from the text of /proc/PID/status (`NSpid:\t4242\t7`).
pub fn namespaced_pid(status: &str) -> Option<u32> {
    let line = status.lines().find_map(|l| l.strip_prefix("NSpid:"))?;
    line.split_whitespace().last()?.parse().ok()
}

/// One line of a perf map: (start, size, raw name). Hex with or without `0x`.
pub fn parse_line(line: &str) -> Option<(u64, u64, &str)> {
    let line = line.trim_end_matches(['\r', '\n']);
    let (start, rest) = line.split_once(' ')?;
    let (size, name) = rest.split_once(' ')?;
    let hex = |s: &str| u64::from_str_radix(s.trim_start_matches("0x").trim_start_matches("0X"), 16).ok();
    let (start, size) = (hex(start)?, hex(size)?);
    let name = name.trim();
    (size > 0 && !name.is_empty() && start.checked_add(size).is_some()).then_some((start, size, name))
}

/// A perf map name as the runtime's users write it:
/// - JDK 17 `Compiler.perfmap`: `void java.lang.Thread.sleep(long)` -> `java.lang.Thread.sleep`;
///   older agents' `Lcom/foo/Bar;::method` and `com.foo.Bar::method` -> `com.foo.Bar.method`;
/// - Node.js: `LazyCompile:*fib /app/x.js:3:13` or `JS:~fib file:///app/x.js:3:13` ->
///   `fib /app/x.js:3:13` (the `*`/`~` optimisation markers dropped);
/// - Python: `py::fib:/app/x.py` -> `fib (/app/x.py)`;
/// - anything else (stubs, `Interpreter`, builtins) unchanged.
pub fn cleaned_name(raw: &str) -> String {
    if let Some(rest) = raw.strip_prefix("py::") {
        return match rest.split_once(':') {
            Some((func, file)) if !func.is_empty() => format!("{func} ({file})"),
            _ => rest.to_string(),
        };
    }
    for prefix in ["LazyCompile:", "Function:", "JS:", "Eval:", "Script:"] {
        if let Some(rest) = raw.strip_prefix(prefix) {
            let rest = rest.trim_start_matches(['*', '~', '^', '+']);
            return rest.replace("file://", "");
        }
    }
    if let Some(java) = java_method(raw) {
        return java;
    }
    raw.to_string()
}

/// `package.Class.method` of a JVM perf map name, if it is one.
fn java_method(raw: &str) -> Option<String> {
    // `Lcom/foo/Bar;::method` and `com.foo.Bar::method` (perf-map-agent, older JDKs).
    if let Some((class, method)) = raw.split_once("::") {
        let class = class.strip_prefix('L').and_then(|c| c.strip_suffix(';')).unwrap_or(class);
        let method = method.split(['(', ' ']).next().unwrap_or(method);
        if !class.is_empty() && !method.is_empty() && !class.contains(' ') {
            return Some(format!("{}.{method}", class.replace('/', ".")));
        }
        return None;
    }
    // JDK 17: `RETURN_TYPE package.Class.method(ARGS)`.
    let open = raw.find('(')?;
    if !raw.ends_with(')') {
        return None;
    }
    let head = &raw[..open];
    let (ret, qualified) = head.rsplit_once(' ')?;
    let looks_like_type = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_alphanumeric() || "._$[]<>".contains(c));
    (looks_like_type(ret) && qualified.contains('.') && looks_like_type(qualified)).then(|| qualified.to_string())
}

/// The code regions of one process's perf map, read as the map grows.
pub struct PerfMap {
    path: PathBuf,
    /// start -> (end, frame, Python trampoline): non-overlapping; a later region replaces
    /// what it overlaps (the runtime reused that code memory).
    regions: BTreeMap<u64, (u64, RawFrame, bool)>,
    /// Bytes parsed so far (complete lines only).
    offset: u64,
    /// Identity of the file read (device, inode): another file means read from the start.
    identity: Option<(u64, u64)>,
    /// Regions left out because of `MAX_REGIONS` or `MAX_MAP_BYTES`.
    skipped: u64,
}

impl PerfMap {
    /// A map not read yet.
    pub fn new(path: PathBuf) -> PerfMap {
        PerfMap { path, regions: BTreeMap::new(), offset: 0, identity: None, skipped: 0 }
    }

    /// The file this map reads.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Regions known.
    pub fn len(&self) -> usize {
        self.regions.len()
    }

    /// Whether no region is known.
    pub fn is_empty(&self) -> bool {
        self.regions.is_empty()
    }

    /// Regions left out because of the size bounds.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// Forgets what was read, so the next `refresh` reads the whole file (a JVM rewrote it).
    pub fn reset(&mut self) {
        self.regions.clear();
        self.offset = 0;
        self.identity = None;
    }

    /// Reads what was appended since the last call (the whole file if it was replaced or
    /// shrank), naming new regions in `symbolizer`. Returns the regions added; a missing
    /// file is no error (the runtime has not written it yet): zero.
    pub fn refresh(&mut self, symbolizer: &Symbolizer) -> Result<usize, PerfMapError> {
        let path = self.path.clone();
        let io = |source| PerfMapError::Io { path: path.clone(), source };
        let mut file = match std::fs::File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(io(e)),
        };
        let meta = file.metadata().map_err(io)?;
        let identity = Some((meta.dev(), meta.ino()));
        if identity != self.identity || meta.len() < self.offset {
            self.reset();
            self.identity = identity;
        }
        let end = meta.len().min(MAX_MAP_BYTES);
        if end <= self.offset {
            if meta.len() > MAX_MAP_BYTES && self.skipped == 0 {
                tracing::warn!(path = %self.path.display(), "perf map over {MAX_MAP_BYTES} bytes: newer code stays unnamed");
                self.skipped = 1;
            }
            return Ok(0);
        }
        file.seek(SeekFrom::Start(self.offset)).map_err(io)?;
        let mut buf = Vec::with_capacity((end - self.offset) as usize);
        file.take(end - self.offset).read_to_end(&mut buf).map_err(io)?;
        // Only complete lines: a line being written is read next time.
        let complete = buf.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        self.offset += complete as u64;
        let mut added = 0;
        for line in buf[..complete].split(|&b| b == b'\n') {
            if line.is_empty() || line.len() > MAX_LINE {
                continue;
            }
            let Ok(line) = std::str::from_utf8(line) else { continue };
            let Some((start, size, raw)) = parse_line(line) else { continue };
            if self.regions.len() >= MAX_REGIONS {
                self.skipped += 1;
                continue;
            }
            let frame = symbolizer.intern(&cleaned_name(raw));
            self.insert(start, start + size, frame, raw.starts_with("py::"));
            added += 1;
        }
        Ok(added)
    }

    fn insert(&mut self, start: u64, end: u64, frame: RawFrame, python: bool) {
        // Regions this one overlaps are gone: the runtime reused their memory. They are
        // sorted and disjoint, so walking down from `end` the overlaps come first.
        let overlapped: Vec<u64> =
            self.regions.range(..end).rev().take_while(|(_, (e, _, _))| *e > start).map(|(s, _)| *s).collect();
        for s in overlapped {
            self.regions.remove(&s);
        }
        self.regions.insert(start, (end, frame, python));
    }

    fn region(&self, addr: u64) -> Option<&(u64, RawFrame, bool)> {
        let (_, region) = self.regions.range(..=addr).next_back()?;
        (addr < region.0).then_some(region)
    }

    /// The frame of the region holding `addr`, if any.
    pub fn lookup(&self, addr: u64) -> Option<RawFrame> {
        self.region(addr).map(|r| r.1)
    }

    /// Whether `addr` is in one of CPython's perf trampolines (`py::` entries of `-X perf`):
    /// copies of `sub $8,%rsp; call *%rcx; add $8,%rsp; ret`, with neither a frame pointer
    /// nor unwind information.
    pub fn is_python_trampoline(&self, addr: u64) -> bool {
        self.region(addr).is_some_and(|r| r.2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn lines_of_each_runtime_parse() {
        assert_eq!(
            parse_line("0x00007f3c94ecd3a0 0x00000000000001f8 long Runtimes.alpha(long)\n"),
            Some((0x7f3c94ecd3a0, 0x1f8, "long Runtimes.alpha(long)"))
        );
        assert_eq!(
            parse_line("3c1e6a04240 3c LazyCompile:*fib /x.js:1:13"),
            Some((0x3c1e6a04240, 0x3c, "LazyCompile:*fib /x.js:1:13"))
        );
        assert_eq!(parse_line("7f0 b py::f:/a.py"), Some((0x7f0, 0xb, "py::f:/a.py")));
        for bad in ["", "zz 10 x", "10 0 empty", "10 20", "ffffffffffffffff 10 wraps", "10 20 "] {
            assert_eq!(parse_line(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn names_read_as_their_runtimes_users_write_them() {
        assert_eq!(cleaned_name("void java.lang.Thread.sleep(long)"), "java.lang.Thread.sleep");
        assert_eq!(cleaned_name("long Runtimes.alpha(long)"), "Runtimes.alpha");
        assert_eq!(
            cleaned_name("java.lang.Object java.lang.invoke.MethodHandle.linkToStatic(java.lang.Object, java.lang.invoke.MemberName)"),
            "java.lang.invoke.MethodHandle.linkToStatic"
        );
        assert_eq!(cleaned_name("void com.foo.Outer$Inner.<init>()"), "com.foo.Outer$Inner.<init>");
        assert_eq!(cleaned_name("Lcom/foo/Bar;::handle"), "com.foo.Bar.handle");
        assert_eq!(cleaned_name("com.foo.Bar::handle"), "com.foo.Bar.handle");
        assert_eq!(cleaned_name("LazyCompile:*fib /app/x.js:3:13"), "fib /app/x.js:3:13");
        assert_eq!(cleaned_name("JS:~work file:///app/x.js:9:1"), "work /app/x.js:9:1");
        assert_eq!(cleaned_name("py::fib:/app/x.py"), "fib (/app/x.py)");
        for same in
            ["Interpreter", "StubRoutines (1)", "handle_exception Runtime1 stub", "Builtin:ArgumentsAdaptorTrampoline"]
        {
            assert_eq!(cleaned_name(same), same);
        }
    }

    #[test]
    fn the_namespaced_pid_is_the_last_nspid_field() {
        assert_eq!(namespaced_pid("Name:\tjava\nNSpid:\t4242\t7\nNStgid:\t4242\t7\n"), Some(7));
        assert_eq!(namespaced_pid("Name:\tjava\nNSpid:\t4242\n"), Some(4242));
        assert_eq!(namespaced_pid("Name:\tjava\n"), None);
    }

    #[test]
    fn a_growing_map_is_parsed_once_and_a_rewritten_one_from_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("perf-1.map");
        let s = Symbolizer::new();
        let mut map = PerfMap::new(path.clone());
        assert_eq!(map.refresh(&s).unwrap(), 0, "no file yet");
        let mut f = std::fs::File::create(&path).unwrap();
        write!(f, "1000 100 py::a:/a.py\n2000 100 py::b:/b.py\n3000 10 py::half").unwrap();
        f.flush().unwrap();
        assert_eq!(map.refresh(&s).unwrap(), 2, "the unfinished line waits");
        let name = |m: &PerfMap, a| m.lookup(a).map(|f| s.names(f)[0].to_string());
        assert_eq!(name(&map, 0x1050).as_deref(), Some("a (/a.py)"));
        assert_eq!(name(&map, 0x1100), None, "end is exclusive");
        assert_eq!(name(&map, 0xfff), None);
        writeln!(f, ":/c.py\n1080 100 py::d:/d.py").unwrap();
        f.flush().unwrap();
        assert_eq!(map.refresh(&s).unwrap(), 2);
        assert_eq!(name(&map, 0x3005).as_deref(), Some("half (/c.py)"));
        // The later region replaced the one it overlaps.
        assert_eq!(name(&map, 0x1050), None);
        assert_eq!(name(&map, 0x1090).as_deref(), Some("d (/d.py)"));
        assert_eq!(map.refresh(&s).unwrap(), 0, "nothing new");
        // A JVM rewrites its map: shorter file, read again from the start.
        std::fs::write(&path, "5000 10 void A.b()\n").unwrap();
        assert_eq!(map.refresh(&s).unwrap(), 1);
        assert_eq!(map.len(), 1);
        assert_eq!(name(&map, 0x5000).as_deref(), Some("A.b"));
    }

    #[test]
    fn overlapping_regions_leave_the_latest() {
        let s = Symbolizer::new();
        let mut map = PerfMap::new(PathBuf::from("/nonexistent"));
        let (a, b, c) = (s.intern("a"), s.intern("b"), s.intern("c"));
        map.insert(0x100, 0x200, a, false);
        map.insert(0x300, 0x400, b, true);
        map.insert(0x180, 0x380, c, false);
        assert!(!map.is_python_trampoline(0x200));
        assert_eq!(map.len(), 1);
        assert_eq!(map.lookup(0x100), None);
        assert_eq!(map.lookup(0x200), Some(c));
        assert_eq!(map.lookup(0x390), None);
        assert_eq!(s.intern("a"), a, "interned once");
    }
}
