//! Addresses to function names, with blazesym: demangled Rust and C++ names (cleaned of
//! glibc's internal aliases and symbol versions, `names`), inlined
//! functions as frames of their own (from a module's own DWARF), shared libraries
//! (a library without DWARF of its own is named from the symbol table of its split
//! debug file under /usr/lib/debug/.build-id, e.g. Debian's libc6-dbg, without reading
//! that file's DWARF), kernel symbols from kallsyms.
//!
//! In: `RawFrame`s, i.e. a module registered here plus a file offset (user code), or a
//! kernel address. Out: frame names, outermost first for inlined chains; `[unknown]
//! <module>` where nothing resolves. Results are cached per (module build id or file,
//! offset), so a steady-state profile costs a hash lookup per frame. blazesym runs on a
//! worker thread, so sampling can ask for names ahead of time without waiting.
//! Must not: read process memory, unwind, or know about samples and thread states.

pub mod names;
pub mod perfmap;

pub use names::clean_name;

use blazesym::symbolize::source::{Elf, Kernel, Source};
use blazesym::symbolize::{Input, Symbolized, Symbolizer as Blaze};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};

/// Index of a module registered with `Symbolizer::register_module`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ModuleId(pub u32);

/// How a module is recognised across processes: by GNU build id when it has one,
/// otherwise by file identity (device, inode, path).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ModuleKey {
    /// The ELF `NT_GNU_BUILD_ID` note.
    BuildId(Vec<u8>),
    /// Device (as in /proc/PID/maps), inode and path.
    File(String, u64, String),
}

/// One frame to name, already normalized (return addresses minus one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RawFrame {
    /// User code in a registered module, at `file_offset` in its file.
    User {
        /// The module.
        module: ModuleId,
        /// Offset in the module file.
        file_offset: u64,
    },
    /// A kernel address.
    Kernel(u64),
    /// A user address outside every known module (JIT code, unmapped).
    Unknown(u64),
    /// A name given by the target itself (a runtime's perf map, a thread's role),
    /// interned with `Symbolizer::intern`.
    Named(u32),
}

/// Cache counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SymbolizeStats {
    /// Frames answered from the cache.
    pub cache_hits: u64,
    /// Frames that needed blazesym.
    pub cache_misses: u64,
    /// Distinct cached frames.
    pub cached_frames: u64,
}

struct ModuleFile {
    /// Path blazesym opens.
    path: PathBuf,
    /// Short name for `[unknown] <module>`.
    display: Arc<str>,
}

/// Names of one frame: the function, then the functions inlined into it at that
/// address, outermost first.
pub type FrameNames = Arc<[Arc<str>]>;

/// Kernel frames carry inferno's `_[k]` suffix so flame graphs colour them apart.
const KERNEL_SUFFIX: &str = "_[k]";

#[derive(Default)]
struct Registry {
    modules: Vec<ModuleFile>,
    ids: HashMap<ModuleKey, ModuleId>,
    /// Interned names (`RawFrame::Named`), by name.
    named: HashMap<Arc<str>, u32>,
}

/// What the handle and the worker thread share.
#[derive(Default)]
struct Shared {
    registry: Mutex<Registry>,
    cache: Mutex<HashMap<RawFrame, FrameNames>>,
    hits: AtomicU64,
    misses: AtomicU64,
    /// Modules with more DWARF than this (bytes) are named from their symbol table; 0: no limit.
    dwarf_cap: AtomicU64,
}

enum Request {
    /// Resolve these when there is time (sampling saw new stacks).
    Prefetch(Vec<RawFrame>),
    /// Resolve these and say when done.
    Resolve(Vec<RawFrame>, mpsc::Sender<()>),
}

/// A caching symbolizer shared by every target of a sampler. blazesym is not `Send`
/// and parses debug info slowly on first use, so it lives on a worker thread of its
/// own: the sampling loop only `prefetch`es (never waits), `take_profiles` resolves.
pub struct Symbolizer {
    shared: Arc<Shared>,
    requests: Option<mpsc::Sender<Request>>,
    worker: Option<std::thread::JoinHandle<()>>,
    unknown: FrameNames,
}

impl Default for Symbolizer {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Symbolizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Symbolizer").field("stats", &self.stats()).finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Symbolizer {
    /// A symbolizer with demangling, inlined functions and debug links enabled, and its
    /// worker thread.
    pub fn new() -> Symbolizer {
        let shared = Arc::new(Shared::default());
        let (tx, rx) = mpsc::channel::<Request>();
        let worker_shared = shared.clone();
        let worker = std::thread::Builder::new()
            .name("hotframe-symbolize".into())
            .spawn(move || worker_loop(&worker_shared, rx))
            .map_err(|err| tracing::warn!(%err, "no symbolizer thread: frames stay unnamed"))
            .ok();
        Symbolizer {
            shared,
            requests: worker.as_ref().map(|_| tx),
            worker,
            unknown: Arc::from(vec![Arc::<str>::from("[unknown]")]),
        }
    }

    /// Registers a module file (idempotent per key) and returns its id. `path` must be
    /// openable for as long as frames of the module are symbolized.
    pub fn register_module(&self, key: ModuleKey, path: PathBuf, display: &str) -> ModuleId {
        let mut reg = lock(&self.shared.registry);
        if let Some(&id) = reg.ids.get(&key) {
            return id;
        }
        let id = ModuleId(reg.modules.len() as u32);
        reg.modules.push(ModuleFile { path, display: Arc::from(display) });
        reg.ids.insert(key, id);
        id
    }

    /// The frame of a name the target gave (a perf map entry, a thread role): interned
    /// once, named without blazesym.
    pub fn intern(&self, name: &str) -> RawFrame {
        let mut reg = lock(&self.shared.registry);
        if let Some(&id) = reg.named.get(name) {
            return RawFrame::Named(id);
        }
        let id = reg.named.len() as u32;
        let name: Arc<str> = Arc::from(name);
        reg.named.insert(name.clone(), id);
        drop(reg);
        lock(&self.shared.cache).insert(RawFrame::Named(id), Arc::from(vec![name]));
        RawFrame::Named(id)
    }

    /// From now on, a module whose DWARF sections exceed `max_bytes` is named from its
    /// symbol table (no inlined frames) instead: a host-wide agent meets large debug
    /// builds whose line tables would cost it hundreds of MiB.
    pub fn limit_dwarf(&self, max_bytes: u64) {
        self.shared.dwarf_cap.store(max_bytes.max(1), Ordering::Relaxed);
    }

    /// The short name of a module.
    pub fn module_name(&self, module: ModuleId) -> Option<Arc<str>> {
        lock(&self.shared.registry).modules.get(module.0 as usize).map(|m| m.display.clone())
    }

    /// Cache counters so far.
    pub fn stats(&self) -> SymbolizeStats {
        SymbolizeStats {
            cache_hits: self.shared.hits.load(Ordering::Relaxed),
            cache_misses: self.shared.misses.load(Ordering::Relaxed),
            cached_frames: lock(&self.shared.cache).len() as u64,
        }
    }

    /// Asks the worker to resolve `frames` in the background; never waits.
    pub fn prefetch(&self, frames: Vec<RawFrame>) {
        if let Some(tx) = &self.requests {
            let _ = tx.send(Request::Prefetch(frames));
        }
    }

    /// Resolves every frame of `frames` not in the cache yet and waits until it is done
    /// (one blazesym call per module, so a new profile's misses share the parsing).
    pub fn resolve(&self, frames: &[RawFrame]) {
        let missing: Vec<RawFrame> = {
            let cache = lock(&self.shared.cache);
            frames.iter().filter(|f| !cache.contains_key(f)).copied().collect()
        };
        if missing.is_empty() {
            return;
        }
        if let Some(done) = self.resolve_later(missing) {
            let _ = done.recv();
        }
    }

    /// Asks the worker to resolve `frames`, after everything asked before, without
    /// waiting: the receiver hears (or disconnects) when that is done. None without a
    /// worker.
    pub fn resolve_later(&self, frames: Vec<RawFrame>) -> Option<mpsc::Receiver<()>> {
        let (done_tx, done_rx) = mpsc::channel();
        self.requests.as_ref()?.send(Request::Resolve(frames, done_tx)).ok()?;
        Some(done_rx)
    }

    /// Names of `frame`, outermost first (a function and what is inlined into it).
    pub fn names(&self, frame: RawFrame) -> FrameNames {
        if let Some(names) = lock(&self.shared.cache).get(&frame) {
            self.shared.hits.fetch_add(1, Ordering::Relaxed);
            return names.clone();
        }
        self.resolve(std::slice::from_ref(&frame));
        lock(&self.shared.cache).get(&frame).cloned().unwrap_or_else(|| self.unknown.clone())
    }
}

impl Drop for Symbolizer {
    fn drop(&mut self) {
        // Closing the channel ends the worker after its current request.
        self.requests = None;
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

fn worker_loop(shared: &Shared, rx: mpsc::Receiver<Request>) {
    // blazesym reports inlined functions only together with source locations.
    let blaze = Blaze::builder().enable_code_info(true).enable_inlined_fns(true).enable_demangling(true).build();
    let unknown: FrameNames = Arc::from(vec![Arc::<str>::from("[unknown]")]);
    let mut lookups: HashMap<ModuleId, Lookup> = HashMap::new();
    while let Ok(request) = rx.recv() {
        let (frames, done) = match request {
            Request::Prefetch(frames) => (frames, None),
            Request::Resolve(frames, done) => (frames, Some(done)),
        };
        resolve_on_worker(shared, &blaze, &unknown, &mut lookups, &frames);
        if let Some(done) = done {
            let _ = done.send(());
        }
    }
}

fn resolve_on_worker(
    shared: &Shared,
    blaze: &Blaze,
    unknown: &FrameNames,
    lookups: &mut HashMap<ModuleId, Lookup>,
    frames: &[RawFrame],
) {
    let mut by_module: HashMap<Option<ModuleId>, Vec<u64>> = HashMap::new();
    {
        let mut cache = lock(&shared.cache);
        for frame in frames {
            if cache.contains_key(frame) {
                continue;
            }
            match *frame {
                RawFrame::User { module, file_offset } => by_module.entry(Some(module)).or_default().push(file_offset),
                RawFrame::Kernel(addr) => by_module.entry(None).or_default().push(addr),
                RawFrame::Unknown(_) | RawFrame::Named(_) => {
                    shared.misses.fetch_add(1, Ordering::Relaxed);
                    cache.insert(*frame, unknown.clone());
                }
            }
        }
    }
    for (module, mut addrs) in by_module {
        addrs.sort_unstable();
        addrs.dedup();
        shared.misses.fetch_add(addrs.len() as u64, Ordering::Relaxed);
        let results = match module {
            Some(id) => {
                let file =
                    lock(&shared.registry).modules.get(id.0 as usize).map(|m| (m.path.clone(), m.display.clone()));
                match file {
                    Some((path, display)) => match lookups
                        .entry(id)
                        .or_insert_with(|| lookup_of(&path, shared.dwarf_cap.load(Ordering::Relaxed)))
                    {
                        Lookup::Module => {
                            symbolize_elf(blaze, &path, true, Input::FileOffset(&addrs), addrs.len(), &display)
                        }
                        Lookup::Symtab => {
                            symbolize_elf(blaze, &path, false, Input::FileOffset(&addrs), addrs.len(), &display)
                        }
                        Lookup::DebugSymtab { debug, segments } => {
                            let vaddrs: Vec<u64> = addrs.iter().map(|&off| virtual_address(segments, off)).collect();
                            symbolize_elf(blaze, debug, false, Input::VirtOffset(&vaddrs), addrs.len(), &display)
                        }
                    },
                    None => vec![unknown.clone(); addrs.len()],
                }
            }
            None => symbolize_kernel(blaze, &addrs),
        };
        let mut cache = lock(&shared.cache);
        for (addr, names) in addrs.into_iter().zip(results) {
            let frame = match module {
                Some(module) => RawFrame::User { module, file_offset: addr },
                None => RawFrame::Kernel(addr),
            };
            cache.insert(frame, names);
        }
    }
}

/// Names of `count` addresses (`input`) in the ELF file at `path`, with its DWARF and
/// debug link (`debug_syms`) or its symbol table only; `[unknown] <display>` where
/// nothing resolves.
fn symbolize_elf(
    blaze: &Blaze,
    path: &std::path::Path,
    debug_syms: bool,
    input: Input<&[u64]>,
    count: usize,
    display: &str,
) -> Vec<FrameNames> {
    let unknown: FrameNames = Arc::from(vec![Arc::<str>::from(format!("[unknown] {display}"))]);
    let mut elf = Elf::new(path);
    elf.debug_syms = debug_syms;
    match blaze.symbolize(&Source::Elf(elf), input) {
        Ok(syms) => syms.iter().map(|s| names_of(s, "").unwrap_or_else(|| unknown.clone())).collect(),
        Err(err) => {
            tracing::debug!(path = %path.display(), %err, "symbolization failed");
            vec![unknown; count]
        }
    }
}

/// How a module's names are looked up, decided once per module on the worker.
enum Lookup {
    /// blazesym on the module file: its own DWARF (with inlined functions), else its
    /// debug link, else its symbol table.
    Module,
    /// The module's own symbol table only: its DWARF is over `Symbolizer::limit_dwarf`.
    Symtab,
    /// A library without DWARF of its own whose debug info is a separate file under
    /// /usr/lib/debug/.build-id (Debian's -dbg packages: libc6-dbg): names from that
    /// file's symbol table, at the virtual addresses the module's segments give (the
    /// debug file's own segments have no file offsets). Its DWARF is not read: for libc
    /// that was 16 MiB of the agent's RSS and a fifth of its start-up CPU (compressed
    /// sections to inflate), for inlined frames that system libraries seldom need.
    DebugSymtab {
        /// The separate debug file.
        debug: PathBuf,
        /// (file offset, file size, virtual address) of each loadable segment.
        segments: Vec<(u64, u64, u64)>,
    },
}

/// Where split debug info lives, by GNU build id.
const DEBUG_BUILD_ID_DIR: &str = "/usr/lib/debug/.build-id";

/// How to name `path`'s frames; `dwarf_cap` as in `Shared`.
fn lookup_of(path: &std::path::Path, dwarf_cap: u64) -> Lookup {
    use object::{Object, ObjectSection, ObjectSegment};
    let Ok(file) = std::fs::File::open(path) else { return Lookup::Module };
    // SAFETY: a read-only map of a module file, only parsed (blazesym maps the same files).
    let Ok(map) = (unsafe { memmap2::Mmap::map(&file) }) else { return Lookup::Module };
    let Ok(elf) = object::File::parse(&*map) else { return Lookup::Module };
    if elf.section_by_name(".debug_info").is_some() {
        let dwarf: u64 = elf
            .sections()
            .filter(|s| s.name().is_ok_and(|n| n.starts_with(".debug_") || n.starts_with(".zdebug_")))
            .map(|s| s.size())
            .sum();
        return if dwarf_cap == 0 || dwarf <= dwarf_cap { Lookup::Module } else { Lookup::Symtab };
    }
    let Some(debug) = build_id(&elf).and_then(|id| debug_file_of(&id)) else { return Lookup::Module };
    if !debug.is_file() {
        return Lookup::Module;
    }
    let segments = elf
        .segments()
        .map(|seg| {
            let (offset, size) = seg.file_range();
            (offset, size, seg.address())
        })
        .collect();
    Lookup::DebugSymtab { debug, segments }
}

/// Where the split debug file of the module with GNU build id `id` is installed.
fn debug_file_of(id: &[u8]) -> Option<PathBuf> {
    let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
    (hex.len() > 2).then(|| PathBuf::from(format!("{DEBUG_BUILD_ID_DIR}/{}/{}.debug", &hex[..2], &hex[2..])))
}

/// The virtual address of file offset `off` in a module with these (file offset, file
/// size, virtual address) segments; an offset outside every segment gets an address no
/// symbol covers.
fn virtual_address(segments: &[(u64, u64, u64)], off: u64) -> u64 {
    segments
        .iter()
        .find(|(start, size, _)| off >= *start && off - start < *size)
        .map_or(u64::MAX, |(start, _, vaddr)| off - start + vaddr)
}

fn symbolize_kernel(blaze: &Blaze, addrs: &[u64]) -> Vec<FrameNames> {
    let unknown: FrameNames = Arc::from(vec![Arc::<str>::from(format!("[unknown]{KERNEL_SUFFIX}"))]);
    let src = Source::Kernel(Kernel::default());
    match blaze.symbolize(&src, Input::AbsAddr(addrs)) {
        Ok(syms) => syms.iter().map(|s| names_of(s, KERNEL_SUFFIX).unwrap_or_else(|| unknown.clone())).collect(),
        Err(err) => {
            tracing::debug!(%err, "kernel symbolization failed");
            vec![unknown; addrs.len()]
        }
    }
}

fn names_of(sym: &Symbolized<'_>, suffix: &str) -> Option<FrameNames> {
    let sym = sym.as_sym()?;
    let mut names: Vec<Arc<str>> = Vec::with_capacity(1 + sym.inlined.len());
    names.push(Arc::from(format!("{}{suffix}", clean_name(&sym.name))));
    for inlined in sym.inlined.iter() {
        names.push(Arc::from(format!("{}{suffix}", clean_name(&inlined.name))));
    }
    Some(Arc::from(names))
}

/// The GNU build id of an ELF file's bytes, if it has one.
pub fn build_id(elf: &object::File<'_>) -> Option<Vec<u8>> {
    use object::Object;
    elf.build_id().ok().flatten().map(<[u8]>::to_vec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[inline(never)]
    fn marker_function_for_symbolizer_test() -> u64 {
        std::hint::black_box(42)
    }

    /// Symbolizes a function of this very test binary through its file offset.
    #[test]
    fn names_a_function_of_this_binary_and_caches_it() {
        let addr = marker_function_for_symbolizer_test as *const () as usize as u64;
        let _ = marker_function_for_symbolizer_test();
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let mapping = crate::sampler::procfs::parse_maps(&maps)
            .into_iter()
            .find(|m| m.start <= addr && addr < m.end)
            .expect("mapping of the test function");
        assert_eq!(std::path::Path::new(&mapping.path), exe);
        let s = Symbolizer::new();
        let id = s.register_module(
            ModuleKey::File(mapping.dev_inode.0.clone(), mapping.dev_inode.1, mapping.path.clone()),
            exe,
            "test",
        );
        let frame = RawFrame::User { module: id, file_offset: addr - mapping.start + mapping.offset };
        let names = s.names(frame);
        assert!(names.last().unwrap().contains("marker_function_for_symbolizer_test"), "{names:?}");
        assert!(!names[0].contains("17h"), "demangled without hash: {names:?}");
        let again = s.names(frame);
        assert_eq!(names, again);
        assert_eq!(s.stats().cache_hits, 1);
        assert_eq!(s.stats().cache_misses, 1);
    }

    #[test]
    fn a_module_over_the_dwarf_limit_is_named_from_its_symbol_table() {
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        assert!(matches!(lookup_of(&exe, 0), Lookup::Module), "no limit: its DWARF");
        assert!(matches!(lookup_of(&exe, 1), Lookup::Symtab), "over the limit: its symbol table");
        let addr = marker_function_for_symbolizer_test as *const () as usize as u64;
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let mapping = crate::sampler::procfs::parse_maps(&maps)
            .into_iter()
            .find(|m| m.start <= addr && addr < m.end)
            .expect("mapping of the test function");
        let s = Symbolizer::new();
        s.limit_dwarf(1);
        let id = s.register_module(ModuleKey::File("0:0".into(), 2, mapping.path.clone()), exe, "test");
        let names = s.names(RawFrame::User { module: id, file_offset: addr - mapping.start + mapping.offset });
        assert_eq!(names.len(), 1, "no inlined frames without DWARF: {names:?}");
        assert!(names[0].contains("marker_function_for_symbolizer_test"), "{names:?}");
    }

    /// This process's libc registered with a new symbolizer, and the file offset of the
    /// function `symbol` (as libc's debug file spells it) plus 4, as a return address
    /// inside it would be; None without libc6-dbg (then the debug file must be missing).
    fn libc_function(symbol: &str) -> Option<(Symbolizer, RawFrame)> {
        use object::{Object, ObjectSegment, ObjectSymbol};
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let libc = crate::sampler::procfs::parse_maps(&maps)
            .into_iter()
            .find(|m| m.path.contains("/libc.so"))
            .expect("libc mapped");
        let lookup = lookup_of(std::path::Path::new(&libc.path), 0);
        let Lookup::DebugSymtab { debug, segments } = lookup else {
            // Without libc6-dbg the module path (its own symbols) is the only way.
            let bytes = std::fs::read(&libc.path).unwrap();
            let elf = object::File::parse(&*bytes).unwrap();
            let expected = debug_file_of(&build_id(&elf).unwrap()).unwrap();
            assert!(!expected.exists(), "{} exists but was not used", expected.display());
            return None;
        };
        let debug_bytes = std::fs::read(&debug).unwrap();
        let debug_elf = object::File::parse(&*debug_bytes).unwrap();
        let vaddr = debug_elf
            .symbols()
            .find(|s| s.name() == Ok(symbol))
            .unwrap_or_else(|| panic!("{symbol} in the debug file"))
            .address();
        let lib_bytes = std::fs::read(&libc.path).unwrap();
        let lib_elf = object::File::parse(&*lib_bytes).unwrap();
        assert_eq!(segments.len(), lib_elf.segments().count());
        let offset = lib_elf
            .segments()
            .find(|seg| seg.address() <= vaddr && vaddr < seg.address() + seg.size())
            .map(|seg| vaddr - seg.address() + seg.file_range().0)
            .unwrap_or_else(|| panic!("{symbol} in a segment"));
        let s = Symbolizer::new();
        let id = s.register_module(
            ModuleKey::File(libc.dev_inode.0.clone(), libc.dev_inode.1, libc.path.clone()),
            libc.path.clone().into(),
            "libc.so.6",
        );
        Some((s, RawFrame::User { module: id, file_offset: offset + 4 }))
    }

    #[test]
    fn a_system_library_is_named_from_its_separate_debug_files_symbols() {
        // `start_thread`, a static function that only the full symbol table of libc's
        // debug file (libc6-dbg, installed by .ci/run) names.
        let Some((s, frame)) = libc_function("start_thread") else { return };
        let names = s.names(frame);
        assert_eq!(&*names[0], "start_thread", "{names:?}");
    }

    #[test]
    fn libc_functions_have_their_public_unversioned_names() {
        // The debug file names write `__GI___libc_write` (among its aliases) and sem_post
        // `sem_post@@GLIBC_2.34`; perf shows them so, users know them as write and sem_post.
        for (symbol, shown) in [("__GI___libc_write", "write"), ("sem_post@@GLIBC_2.34", "sem_post")] {
            let Some((s, frame)) = libc_function(symbol) else { return };
            let names = s.names(frame);
            assert_eq!(&*names[0], shown, "{symbol}: {names:?}");
        }
    }

    #[test]
    fn file_offsets_map_to_virtual_addresses_through_the_segments() {
        // A typical PIE layout where data sits one page above its file offset.
        let segments = [(0, 0x1000, 0), (0x1000, 0x5000, 0x1000), (0x6000, 0x800, 0x7000)];
        assert_eq!(virtual_address(&segments, 0x1234), 0x1234);
        assert_eq!(virtual_address(&segments, 0x6010), 0x7010);
        assert_eq!(virtual_address(&segments, 0x6800), u64::MAX, "past the last segment's file size");
    }

    #[test]
    fn unknown_frames_name_their_module() {
        let s = Symbolizer::new();
        let id = s.register_module(
            ModuleKey::File("0:0".into(), 1, "/nonexistent/libgone.so".into()),
            "/nonexistent/libgone.so".into(),
            "libgone.so",
        );
        let names = s.names(RawFrame::User { module: id, file_offset: 0x1234 });
        assert_eq!(&*names[0], "[unknown] libgone.so");
        assert_eq!(&*s.names(RawFrame::Unknown(0x10))[0], "[unknown]");
    }
}
