//! A target process's code as the unwinder and symbolizer see it: its executable
//! mappings (from /proc/PID/maps), each file's unwind sections (`.eh_frame`,
//! `.eh_frame_hdr`, `.debug_frame`) handed to framehop, and address normalization to
//! (module, file offset) frames.
//!
//! In: a pid; registers plus a copy of user stack bytes (perf samples, or the stack of
//! a sleeping thread read with process_vm_readv). Out: frame addresses leaf first, and
//! `RawFrame`s for the symbolizer. Must not: name functions or classify states.

use super::jit::JitCode;
use super::procfs::{self, Mapping};
use crate::symbolize::{ModuleId, ModuleKey, RawFrame, Symbolizer};
use framehop::x86_64::{CacheX86_64, UnwindRegsX86_64, UnwinderX86_64};
use framehop::{ExplicitModuleSectionInfo, FrameAddress, Module, Unwinder};
use object::{Object, ObjectSection, ObjectSegment, SegmentFlags};
use std::collections::HashMap;
use std::ops::Deref;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A frame pointer no frame can have (odd, below any stack): see `unwind_without_bp`.
const IMPOSSIBLE_BP: u64 = 1;

/// Deepest stack kept, in frames.
pub const MAX_FRAMES: usize = 512;

/// A whole ELF file's bytes: the file mapped read-only (only the pages the unwinder
/// reads are ever loaded, and they are the page cache's, not copies), or a copy (the
/// vdso, read from the target's memory).
pub enum FileBytes {
    /// A read-only private mapping of the file, and the file (its code is read with
    /// pread, not through the mapping: code pages touched at return addresses, each
    /// with the kernel's fault-around, added tens of MiB to the agent's RSS).
    Mapped(memmap2::Mmap, std::fs::File),
    /// Bytes read from elsewhere.
    Copied(Vec<u8>),
}

impl Deref for FileBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            FileBytes::Mapped(map, _) => map,
            FileBytes::Copied(bytes) => bytes,
        }
    }
}

/// Shared, immutable section bytes: a range of one file's bytes (one mapping per file,
/// whatever the number of targets).
#[derive(Clone)]
pub struct Bytes {
    file: Arc<FileBytes>,
    range: std::ops::Range<usize>,
}

impl Default for Bytes {
    fn default() -> Bytes {
        Bytes { file: Arc::new(FileBytes::Copied(Vec::new())), range: 0..0 }
    }
}

impl Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.file.get(self.range.clone()).unwrap_or_default()
    }
}

/// What one ELF file contributes, parsed once per file.
pub struct ElfUnwindInfo {
    eh_frame: Option<(std::ops::Range<u64>, Bytes)>,
    eh_frame_hdr: Option<(std::ops::Range<u64>, Bytes)>,
    debug_frame: Option<Bytes>,
    text_svma: Option<std::ops::Range<u64>>,
    got_svma: Option<std::ops::Range<u64>>,
    /// PT_LOAD segments: (p_vaddr, p_offset, p_filesz, executable).
    segments: Vec<(u64, u64, u64, bool)>,
    build_id: Option<Vec<u8>>,
    /// The file's bytes: code is read from them to recognise a signal-return trampoline
    /// (see `SIGRETURN_CODE`) when a walk reaches one, instead of searching all the code
    /// of every file at parse time (host-wide, a compiler's 100 MiB library each time a
    /// new one started: a third of the agent's CPU).
    file: Arc<FileBytes>,
    /// Stated addresses checked so far: whether each is a trampoline (one read each).
    sigreturn_checked: std::sync::Mutex<rustc_hash::FxHashMap<u64, bool>>,
}

/// The x86-64 signal-return trampoline (`mov $15, %rax; syscall`: `rt_sigreturn`),
/// glibc's and musl's `__restore_rt`. A signal handler returns into it; its frame is the
/// kernel's signal frame, whose unwind rule (a DWARF expression) framehop does not run.
const SIGRETURN_CODE: [u8; 9] = [0x48, 0xc7, 0xc0, 0x0f, 0x00, 0x00, 0x00, 0x0f, 0x05];

/// Where the interrupted registers lie in the signal frame, from the `sp` the handler
/// returns with (`struct ucontext`: flags, link, a 24-byte `stack_t`, then
/// `struct sigcontext` with r8..r15, rdi, rsi, rbp, rbx, rdx, rax, rcx, rsp, rip).
const UCONTEXT_RBP: u64 = 40 + 10 * 8;
const UCONTEXT_RSP: u64 = 40 + 15 * 8;
const UCONTEXT_RIP: u64 = 40 + 16 * 8;

impl ElfUnwindInfo {
    /// Parses the unwind sections and load segments of an ELF image; the sections stay
    /// ranges of `bytes`.
    pub fn parse(bytes: Arc<FileBytes>) -> Option<ElfUnwindInfo> {
        let data: &[u8] = &bytes;
        let file = object::File::parse(data).ok()?;
        let section = |name: &str| {
            let s = file.section_by_name(name)?;
            let within = s.data().ok()?;
            // A section's data is a slice of `data` (compressed sections included).
            let start = (within.as_ptr() as usize).checked_sub(data.as_ptr() as usize)?;
            let range = start..start.checked_add(within.len())?;
            data.get(range.clone())?;
            Some((s.address()..s.address() + s.size(), Bytes { file: Arc::clone(&bytes), range }))
        };
        let range = |name: &str| file.section_by_name(name).map(|s| s.address()..s.address() + s.size());
        let segments = file
            .segments()
            .map(|seg| {
                let (offset, size) = seg.file_range();
                let exec = match seg.flags() {
                    SegmentFlags::Elf { p_flags } => p_flags & object::elf::PF_X != 0,
                    _ => false,
                };
                (seg.address(), offset, size, exec)
            })
            .collect::<Vec<_>>();
        Some(ElfUnwindInfo {
            eh_frame: section(".eh_frame"),
            eh_frame_hdr: section(".eh_frame_hdr"),
            debug_frame: section(".debug_frame").map(|(_, b)| b),
            text_svma: range(".text"),
            got_svma: range(".got"),
            segments,
            build_id: crate::symbolize::build_id(&file),
            file: Arc::clone(&bytes),
            sigreturn_checked: Default::default(),
        })
    }

    /// Whether the code at stated address `svma` is a signal-return trampoline.
    fn is_sigreturn_at(&self, svma: u64) -> bool {
        let Some(&(vaddr, offset, _, _)) =
            self.segments.iter().find(|&&(vaddr, _, size, exec)| exec && svma.wrapping_sub(vaddr) < size)
        else {
            return false;
        };
        let Ok(at) = usize::try_from(offset + (svma - vaddr)) else { return false };
        let mut checked = self.sigreturn_checked.lock().unwrap_or_else(|e| e.into_inner());
        *checked.entry(svma).or_insert_with(|| match &*self.file {
            FileBytes::Mapped(_, file) => {
                let mut code = [0u8; SIGRETURN_CODE.len()];
                std::os::unix::fs::FileExt::read_exact_at(file, &mut code, at as u64).is_ok() && code == SIGRETURN_CODE
            }
            FileBytes::Copied(bytes) => {
                bytes.get(at..at.saturating_add(SIGRETURN_CODE.len())) == Some(&SIGRETURN_CODE[..])
            }
        })
    }

    /// The load bias (actual minus stated address) of a mapping of this file at `start`
    /// with file offset `offset`. rust-lld puts read-only data and code in one file page,
    /// so pick the executable segment whose page-aligned file range holds `offset`.
    pub fn load_bias(&self, start: u64, offset: u64) -> Option<u64> {
        let page = super::perf::page_size() as u64;
        let holds = |&&(_, p_offset, p_filesz, _): &&(u64, u64, u64, bool)| {
            (p_offset & !(page - 1)) <= offset && offset < p_offset + p_filesz.max(1)
        };
        let seg = self.segments.iter().filter(|s| s.3).find(holds).or_else(|| self.segments.iter().find(holds))?;
        let (p_vaddr, p_offset, _, _) = *seg;
        let svma_of_start = (p_vaddr + offset).checked_sub(p_offset)?;
        Some(start.wrapping_sub(svma_of_start))
    }

    fn section_info(&self) -> ExplicitModuleSectionInfo<Bytes> {
        ExplicitModuleSectionInfo {
            base_svma: 0,
            text_svma: self.text_svma.clone(),
            got_svma: self.got_svma.clone(),
            eh_frame_svma: self.eh_frame.as_ref().map(|(r, _)| r.clone()),
            eh_frame: self.eh_frame.as_ref().map(|(_, b)| b.clone()),
            eh_frame_hdr_svma: self.eh_frame_hdr.as_ref().map(|(r, _)| r.clone()),
            eh_frame_hdr: self.eh_frame_hdr.as_ref().map(|(_, b)| b.clone()),
            debug_frame: self.debug_frame.clone(),
            stubs_svma: None,
            stub_helper_svma: None,
            text: None,
            unwind_info: None,
            text_segment_svma: None,
            text_segment: None,
        }
    }
}

/// Files parsed so far, shared by every target (libc is parsed once).
#[derive(Default)]
pub struct FileCache {
    files: HashMap<(String, u64, String), Option<Arc<ElfUnwindInfo>>>,
}

impl FileCache {
    /// Forgets files no live image maps any more (host-wide, every binary a compiler or
    /// a test run ever mapped would stay otherwise); they are parsed again if mapped.
    pub fn prune(&mut self) {
        self.files.retain(|_, info| info.as_ref().is_some_and(|i| Arc::strong_count(i) > 1));
    }

    fn get(&mut self, pid: u32, m: &Mapping, open_path: &std::path::Path) -> Option<Arc<ElfUnwindInfo>> {
        let key = (m.dev_inode.0.clone(), m.dev_inode.1, m.path.clone());
        if let Some(info) = self.files.get(&key) {
            return info.clone();
        }
        let info = if m.path == "[vdso]" {
            let mut buf = Vec::new();
            let _ = procfs::read_memory(pid, m.start, (m.end - m.start) as usize, &mut buf);
            ElfUnwindInfo::parse(Arc::new(FileBytes::Copied(buf))).map(Arc::new)
        } else {
            let parsed = std::fs::File::open(open_path).ok().and_then(|f| {
                // SAFETY: read-only private mapping of a file we only read; a concurrent
                // truncation could fault, the same risk every profiler takes (a rebuilt
                // binary is a new file: the old one's pages stay valid).
                let map = unsafe { memmap2::Mmap::map(&f) }.ok()?;
                ElfUnwindInfo::parse(Arc::new(FileBytes::Mapped(map, f)))
            });
            parsed.map(Arc::new)
        };
        if info.is_none() {
            tracing::debug!(path = %m.path, "no unwind information");
        }
        // The vdso differs per kernel only, but is cheap: do not cache across pids.
        if m.path != "[vdso]" {
            self.files.insert(key, info.clone());
        }
        info
    }
}

/// One executable mapping of the target, normalized.
#[derive(Clone)]
pub(super) struct MappedModule {
    start: u64,
    end: u64,
    offset: u64,
    module: ModuleId,
    /// The file's unwind information and its load bias, if parsed.
    info: Option<(Arc<ElfUnwindInfo>, u64)>,
}

impl MappedModule {
    /// The start of the function holding `addr` (an address in this mapping), from the
    /// `.eh_frame_hdr` search table: the highest FDE start at or below it.
    pub(super) fn function_start(&self, addr: u64) -> Option<u64> {
        let (info, bias) = self.info.as_ref()?;
        let (range, hdr) = info.eh_frame_hdr.as_ref()?;
        let svma = addr.wrapping_sub(*bias);
        super::bp_guess::fde_start(hdr, range.start, svma).map(|start| start.wrapping_add(*bias))
    }
}

/// How a stack walk ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalkEnd {
    /// The unwinder found the root (a frame with no return address).
    Complete,
    /// It stopped early (unreadable stack, no unwind rule): the stack is a suffix.
    Truncated,
}

/// The code of one target process.
pub struct ProcessImage {
    pid: u32,
    unwinder: UnwinderX86_64<Bytes>,
    cache: CacheX86_64,
    mappings: Vec<MappedModule>,
    loaded: Vec<Mapping>,
    last_refresh: Option<Instant>,
    /// Least time between two re-reads for unknown addresses: doubles while re-reading
    /// finds nothing new (a walk ending on garbage asked again and again), back to
    /// `REFRESH_EVERY` when it finds something.
    refresh_every: Duration,
    /// Code the process generated at run time (perf map names, a JVM's threads).
    jit: JitCode,
}

/// Re-reading /proc/PID/maps because of an unknown address happens at most this often...
const REFRESH_EVERY: Duration = Duration::from_millis(200);

/// ... and, while it keeps finding nothing new, at least this often.
const REFRESH_EVERY_MAX: Duration = Duration::from_secs(10);

impl ProcessImage {
    /// An image with no modules yet; call `refresh`.
    pub fn new(pid: u32) -> ProcessImage {
        ProcessImage {
            pid,
            unwinder: UnwinderX86_64::new(),
            cache: CacheX86_64::new(),
            mappings: Vec::new(),
            loaded: Vec::new(),
            last_refresh: None,
            refresh_every: REFRESH_EVERY,
            jit: JitCode::new(pid),
        }
    }

    /// The process whose /proc files and memory this image reads (for a forked child
    /// sharing its parent's image, the parent).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Whether no module is known yet (a process that just exec'd).
    pub fn is_empty(&self) -> bool {
        self.loaded.is_empty()
    }

    /// Re-reads /proc/PID/maps: adds new executable mappings, drops vanished ones. True
    /// if anything changed.
    pub fn refresh(&mut self, files: &mut FileCache, symbolizer: &Symbolizer) -> std::io::Result<bool> {
        self.last_refresh = Some(Instant::now());
        let now = procfs::executable_mappings(self.pid)?;
        if now == self.loaded {
            return Ok(false);
        }
        for old in &self.loaded {
            if !now.contains(old) {
                self.unwinder.remove_module(old.start);
                self.mappings.retain(|m| m.start != old.start);
            }
        }
        for m in &now {
            if !self.loaded.contains(m) {
                self.insert(m, files, symbolizer);
            }
        }
        self.mappings.sort_by_key(|m| m.start);
        self.loaded = now;
        Ok(true)
    }

    /// Adds one executable mapping announced by an mmap record, replacing whatever it
    /// overlaps (a MAP_FIXED mapping over an older one): no /proc read, so the code of a
    /// process that has exited by the time its records are read is still known.
    pub fn add_mapping(&mut self, m: Mapping, files: &mut FileCache, symbolizer: &Symbolizer) {
        if self.loaded.contains(&m) {
            return;
        }
        let overlapped: Vec<u64> =
            self.loaded.iter().filter(|o| o.start < m.end && m.start < o.end).map(|o| o.start).collect();
        for start in overlapped {
            self.unwinder.remove_module(start);
            self.mappings.retain(|x| x.start != start);
            self.loaded.retain(|x| x.start != start);
        }
        self.insert(&m, files, symbolizer);
        self.mappings.sort_by_key(|x| x.start);
        self.loaded.push(m);
    }

    /// A private copy of this image for `pid` (same modules): a forked child shares its
    /// parent's image until one of them maps new code.
    pub fn copy_for(&self, pid: u32, files: &mut FileCache, symbolizer: &Symbolizer) -> ProcessImage {
        let mut copy = ProcessImage::new(pid);
        for m in &self.loaded {
            copy.insert(m, files, symbolizer);
        }
        copy.mappings.sort_by_key(|x| x.start);
        copy.loaded = self.loaded.clone();
        copy.last_refresh = self.last_refresh;
        copy
    }

    /// Registers one mapping with the symbolizer and the unwinder (not in `loaded`).
    fn insert(&mut self, m: &Mapping, files: &mut FileCache, symbolizer: &Symbolizer) {
        self.jit.note_mapping(&m.path);
        let open_path = self.open_path(m);
        let info = files.get(self.pid, m, &open_path);
        let key = match info.as_ref().and_then(|i| i.build_id.clone()) {
            Some(id) => ModuleKey::BuildId(id),
            None => ModuleKey::File(m.dev_inode.0.clone(), m.dev_inode.1, m.path.clone()),
        };
        let display = m.path.rsplit('/').next().unwrap_or(&m.path).trim_end_matches(" (deleted)");
        let module = symbolizer.register_module(key, open_path, display);
        let mut with_bias = None;
        if let Some(info) = info {
            let bias = if m.path == "[vdso]" { info.load_bias(m.start, 0) } else { info.load_bias(m.start, m.offset) };
            match bias {
                Some(bias) => {
                    with_bias = Some((info.clone(), bias));
                    self.unwinder.add_module(Module::new(m.path.clone(), m.start..m.end, bias, info.section_info()))
                }
                None => tracing::debug!(path = %m.path, "no load segment for mapping"),
            }
        }
        self.mappings.push(MappedModule { start: m.start, end: m.end, offset: m.offset, module, info: with_bias });
    }

    /// Re-reads the maps if `addr` is unknown and the last refresh is old enough.
    pub fn refresh_if_unknown(&mut self, addr: u64, files: &mut FileCache, symbolizer: &Symbolizer) {
        if self.find(addr).is_some() || self.jit.knows(addr) {
            return;
        }
        if self.last_refresh.is_some_and(|t| t.elapsed() < self.refresh_every) {
            return;
        }
        match self.refresh(files, symbolizer) {
            Ok(false) => self.refresh_every = (self.refresh_every * 2).min(REFRESH_EVERY_MAX),
            Ok(true) => self.refresh_every = REFRESH_EVERY,
            Err(err) => tracing::debug!(pid = self.pid, %err, "cannot re-read maps"),
        }
    }

    /// Appends the frames of a walk to `out`, re-reading the maps first if any address
    /// is unknown (rate-limited like `refresh_if_unknown`). A walk can end on a caller's
    /// return address in a library mapped after attach (a command started by the agent,
    /// attached while the dynamic loader runs): the leaf alone would never ask for it.
    pub fn frames_of_walk(
        &mut self,
        addrs: &[u64],
        files: &mut FileCache,
        symbolizer: &Symbolizer,
        out: &mut Vec<RawFrame>,
    ) {
        if let Some(&addr) = addrs.iter().find(|a| self.find(**a).is_none() && !self.jit.knows(**a)) {
            self.refresh_if_unknown(addr, files, symbolizer);
        }
        for &addr in addrs {
            let frame = match self.normalize(addr) {
                RawFrame::Unknown(_) => self.jit.frame(addr, symbolizer).unwrap_or(RawFrame::Unknown(addr)),
                frame => frame,
            };
            out.push(frame);
        }
    }

    /// `frame` or, for an address that had no name when sampled, its perf map name now.
    pub fn late_frame(&mut self, frame: RawFrame, symbolizer: &Symbolizer) -> RawFrame {
        match frame {
            RawFrame::Unknown(addr) if self.find(addr).is_none() => self.jit.frame(addr, symbolizer).unwrap_or(frame),
            frame => frame,
        }
    }

    /// The root frame of a runtime's own thread (`[jvm] GC`), if `tid` is one.
    pub fn thread_role(&mut self, tid: u32, symbolizer: &Symbolizer) -> Option<RawFrame> {
        self.jit.thread_role(tid, symbolizer)
    }

    /// The path the symbolizer and parser open: the mapped file itself if it is still the
    /// same file (same inode), otherwise the process's own handle on it.
    fn open_path(&self, m: &Mapping) -> PathBuf {
        let plain = PathBuf::from(&m.path);
        if std::fs::metadata(&plain).map(|md| md.ino() == m.dev_inode.1).unwrap_or(false) {
            return plain;
        }
        PathBuf::from(format!("/proc/{}/map_files/{:x}-{:x}", self.pid, m.start, m.end))
    }

    pub(super) fn find(&self, addr: u64) -> Option<&MappedModule> {
        let i = self.mappings.partition_point(|m| m.start <= addr);
        let m = self.mappings.get(i.checked_sub(1)?)?;
        (addr < m.end).then_some(m)
    }

    /// The frame for a code address (already minus one for return addresses).
    pub fn normalize(&self, addr: u64) -> RawFrame {
        match self.find(addr) {
            Some(m) => RawFrame::User { module: m.module, file_offset: addr - m.start + m.offset },
            None => RawFrame::Unknown(addr),
        }
    }

    /// Unwinds a thread whose frame pointer is unknown (an off-CPU thread: /proc gives
    /// only `sp` and `pc`) by DWARF CFI alone. framehop takes `bp = 0` in an `rbp`-based
    /// frame for the end of the stack, so the walk starts with an impossible `bp`
    /// instead: reaching such a frame then fails, and a complete walk is a real one (code
    /// without frame pointers never needs `bp`). A signal frame restores the exact `bp`.
    pub fn unwind_without_bp(&mut self, ip: u64, sp: u64, stack: &[u8], out: &mut Vec<u64>) -> WalkEnd {
        self.unwind(ip, sp, IMPOSSIBLE_BP, stack, out)
    }

    /// Unwinds from `ip`/`sp`/`bp` over `stack` (bytes copied from address `sp`), pushing
    /// lookup addresses (return addresses minus one) leaf first into `out`. A signal
    /// handler's frame continues in the code the signal interrupted, with the registers
    /// the kernel saved in the signal frame (`rbp` included: exact, never guessed).
    pub fn unwind(&mut self, ip: u64, sp: u64, bp: u64, stack: &[u8], out: &mut Vec<u64>) -> WalkEnd {
        let mut read_stack = |addr: u64| -> Result<u64, ()> {
            let off = addr.checked_sub(sp).ok_or(())? as usize;
            let bytes = stack.get(off..off.checked_add(8).ok_or(())?).ok_or(())?;
            let mut word = [0u8; 8];
            word.copy_from_slice(bytes);
            Ok(u64::from_le_bytes(word))
        };
        let mut regs = UnwindRegsX86_64::new(ip, sp, bp);
        let mut address = FrameAddress::InstructionPointer(ip);
        // Whether `address` is a signal-return trampoline (decided once, when found).
        let mut in_trampoline = false;
        out.push(ip);
        loop {
            if out.len() >= MAX_FRAMES {
                return WalkEnd::Truncated;
            }
            if std::mem::take(&mut in_trampoline) {
                // The handler returned to the trampoline with `sp` at the ucontext.
                let mut at = |off: u64| regs.sp().checked_add(off).ok_or(()).and_then(&mut read_stack);
                let (Ok(rip), Ok(rsp), Ok(rbp)) = (at(UCONTEXT_RIP), at(UCONTEXT_RSP), at(UCONTEXT_RBP)) else {
                    return WalkEnd::Truncated;
                };
                // The interrupted instruction is not a return address: no minus one.
                regs = UnwindRegsX86_64::new(rip, rsp, rbp);
                address = FrameAddress::InstructionPointer(rip);
                out.push(rip);
                continue;
            }
            let lookup = address.address_for_lookup();
            // framehop's step, except out of a CPython perf trampoline (see `jit`).
            let next = if address.is_return_address() && self.jit.is_python_trampoline(lookup) {
                super::jit::step_python_trampoline(&mut regs, &mut read_stack)
            } else {
                self.unwinder.unwind_frame(address, &mut regs, &mut self.cache, &mut read_stack).map_err(|_| ())
            };
            match next {
                Ok(Some(ret)) => match FrameAddress::from_return_address(ret) {
                    Some(next) => {
                        address = next;
                        in_trampoline = self.is_sigreturn(ret);
                        // The trampoline is named by its own address (the byte before
                        // it belongs to another function).
                        out.push(if in_trampoline { ret } else { next.address_for_lookup() });
                    }
                    None => return WalkEnd::Truncated,
                },
                Ok(None) => return WalkEnd::Complete,
                Err(()) => return WalkEnd::Truncated,
            }
        }
    }

    /// Whether `addr` is the first instruction of a signal-return trampoline.
    fn is_sigreturn(&self, addr: u64) -> bool {
        let Some((info, bias)) = self.find(addr).and_then(|m| m.info.as_ref()) else { return false };
        info.is_sigreturn_at(addr.wrapping_sub(*bias))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file of `bytes` with these load segments and no unwind sections.
    fn segments_only(segments: Vec<(u64, u64, u64, bool)>, bytes: Vec<u8>) -> ElfUnwindInfo {
        ElfUnwindInfo {
            eh_frame: None,
            eh_frame_hdr: None,
            debug_frame: None,
            text_svma: None,
            got_svma: None,
            segments,
            build_id: None,
            file: Arc::new(FileBytes::Copied(bytes)),
            sigreturn_checked: Default::default(),
        }
    }

    #[test]
    fn load_bias_picks_the_executable_segment_sharing_a_page() {
        // rust-lld layout: read-only segment at offset 0, code at file offset 0x1230 in
        // the same page but at vaddr 0x2230.
        let info = segments_only(vec![(0, 0, 0x1230, false), (0x2230, 0x1230, 0x5000, true)], Vec::new());
        // The kernel maps the code segment from page offset 0x1000 at 0x5555_0000_2000.
        let bias = info.load_bias(0x5555_0000_2000, 0x1000).unwrap();
        // File offset 0x1230 (vaddr 0x2230) lands at start + 0x230.
        assert_eq!(0x2230 + bias, 0x5555_0000_2230);
    }

    #[test]
    fn a_signal_return_trampoline_is_recognised_from_the_file_bytes() {
        // Code segment at file offset 0x100, stated address 0x1100; the trampoline at
        // file offset 0x180, and the same bytes in a segment that is not executable.
        let mut file = vec![0u8; 0x400];
        file[0x180..0x189].copy_from_slice(&SIGRETURN_CODE);
        file[0x310..0x319].copy_from_slice(&SIGRETURN_CODE);
        let segments = vec![(0x1100, 0x100, 0x100, true), (0x2300, 0x300, 0x100, false)];
        // The same bytes as a file on disk: read with pread there.
        let mut on_disk = tempfile::tempfile().unwrap();
        std::io::Write::write_all(&mut on_disk, &file).unwrap();
        // SAFETY: a private temp file nothing else writes.
        let map = unsafe { memmap2::Mmap::map(&on_disk) }.unwrap();
        let mapped = ElfUnwindInfo {
            file: Arc::new(FileBytes::Mapped(map, on_disk)),
            ..segments_only(segments.clone(), Vec::new())
        };
        for info in [segments_only(segments, file), mapped] {
            for _ in 0..2 {
                assert!(info.is_sigreturn_at(0x1180));
                assert!(!info.is_sigreturn_at(0x1181), "one byte off");
                assert!(!info.is_sigreturn_at(0x1080), "below the code");
                assert!(!info.is_sigreturn_at(0x2310), "not executable");
            }
        }
    }
}
