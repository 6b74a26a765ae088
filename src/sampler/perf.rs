//! One `perf_event_open` cpu-clock sampling event per online CPU (system-wide), with its
//! memory-mapped ring buffer, and the host's fork, exit, comm/exec and mmap records.
//!
//! In: a CPU number and what each sample must carry (user registers and a copy of the
//! user stack, or a frame-pointer callchain, optionally kernel frames). Out: the records
//! written since the last read, as `RecordRef`s (type, pid, tid, time) that the caller
//! orders across CPUs and parses only if it wants them, wrap-around handled. Must not:
//! unwind, symbolize, decide targets or classify; it only moves bytes.

use linux_perf_event_reader::{Endianness, PerfEventAttr, RawData, RawEventRecord, RecordParseInfo, RecordType};
use perf_event_open_sys as sys;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{fence, Ordering};

/// x86_64 perf register indices (asm/perf_regs.h): BP, SP, IP.
pub const REG_BP: u64 = 6;
/// Stack pointer register index.
pub const REG_SP: u64 = 7;
/// Instruction pointer register index.
pub const REG_IP: u64 = 8;
const USER_REGS_MASK: u64 = (1 << REG_BP) | (1 << REG_SP) | (1 << REG_IP);

/// Stack-copy records a ring must hold at least: the kernel reserves the whole requested
/// copy in every record (dyn_size only says how much of it is valid). One ring per CPU
/// takes the samples of everything that runs there (99 a second when busy, 3.3 MB/s
/// with 32 KiB copies): 60 records (2 MiB) are 0.6 s of a busy CPU, enough to ride out
/// a `take_profiles` naming a large binary; anything beyond is counted lost.
const RING_RECORDS: usize = 60;

/// Data pages per ring buffer (a power of two, plus one metadata page).
fn ring_pages(config: &EventConfig) -> usize {
    let per_record = if config.dwarf { config.stack_bytes as usize + 512 } else { 2048 };
    (per_record * RING_RECORDS).div_ceil(page_size()).next_power_of_two().clamp(8, 512)
}

/// What every sample of an event carries.
#[derive(Debug, Clone, Copy)]
pub struct EventConfig {
    /// Sampling period in nanoseconds of CPU time.
    pub period_ns: u64,
    /// Copy registers and `stack_bytes` of user stack for DWARF unwinding.
    pub dwarf: bool,
    /// Bytes of user stack to copy per sample (rounded down to a multiple of 8).
    pub stack_bytes: u32,
    /// Ask for a callchain (frame pointers for user frames, kernel frames if `kernel`).
    pub callchain: bool,
    /// Sample kernel mode too, and put kernel frames in the callchain.
    pub kernel: bool,
}

/// A record waiting in a ring: where it is and what the sampler needs to order and
/// filter it without parsing its body.
#[derive(Debug, Clone, Copy)]
pub struct RecordRef {
    /// Index of the ring (the caller's numbering).
    pub ring: u32,
    /// PERF_RECORD_* type.
    pub kind: u32,
    misc: u16,
    /// Position of the body (after the 8-byte header), absolute.
    pos: u64,
    len: u32,
    /// Kernel timestamp (perf clock), 0 if the record has none.
    pub time: u64,
    /// Process id (samples: of the sampled thread), -1 if unknown.
    pub pid: i32,
    /// Thread id, -1 if unknown.
    pub tid: i32,
}

/// An open, mapped, enabled cpu-clock event on one CPU.
pub struct PerfEvent {
    fd: OwnedFd,
    base: *mut u8,
    map_len: usize,
    data_offset: usize,
    data_size: usize,
    parse_info: RecordParseInfo,
}

// The mapping belongs to this struct alone; the kernel writes the data area and only the
// head/tail protocol below touches it.
unsafe impl Send for PerfEvent {}

impl PerfEvent {
    /// Opens, maps and enables a system-wide cpu-clock sampling event on `cpu`, with the
    /// side records (fork, exit, comm with exec, executable mmap) of every task there.
    pub fn open_cpu(cpu: u32, config: &EventConfig) -> io::Result<PerfEvent> {
        let mut attr = make_attr(config);
        let parse_info = parse_info_of(&attr)?;
        // SAFETY: attr is fully initialised (zeroed then filled) and outlives the call.
        let fd =
            unsafe { sys::perf_event_open(&mut attr, -1, cpu as i32, -1, sys::bindings::PERF_FLAG_FD_CLOEXEC as _) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd was just returned by the kernel and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let page = page_size();
        let map_len = page * (ring_pages(config) + 1);
        // SAFETY: mapping a perf fd read-write shared is the documented protocol.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let mut event = PerfEvent {
            fd,
            base: base as *mut u8,
            map_len,
            data_offset: page,
            data_size: page * ring_pages(config),
            parse_info,
        };
        // SAFETY: base points to a mapped perf_event_mmap_page.
        unsafe {
            let meta = &*(base as *const sys::bindings::perf_event_mmap_page);
            if meta.data_size != 0 {
                event.data_offset = meta.data_offset as usize;
                event.data_size = meta.data_size as usize;
            }
        }
        // SAFETY: ENABLE on our own perf fd.
        if unsafe { sys::ioctls::ENABLE(event.fd.as_raw_fd(), 0) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(event)
    }

    /// The event's file descriptor, for `poll(2)`.
    pub fn raw_fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }

    fn data(&self) -> &[u8] {
        // SAFETY: the data area is data_size bytes at data_offset inside the mapping.
        unsafe { std::slice::from_raw_parts(self.base.add(self.data_offset), self.data_size) }
    }

    /// Appends a `RecordRef` for every record written since the last `consume` and
    /// stamped at or before `cut` (CLOCK_MONOTONIC ns), oldest first, and returns the
    /// position to pass to `consume` once they are handled (the kernel does not
    /// overwrite them before). Records after `cut` wait for the next scan: every ring is
    /// then complete up to `cut`, so a fork read from one CPU's ring is never missed by
    /// its child's first sample read from another's.
    pub fn scan(&self, ring: u32, cut: u64, out: &mut Vec<RecordRef>) -> u64 {
        let meta = self.base as *mut sys::bindings::perf_event_mmap_page;
        // SAFETY: meta is the mapped control page; head is written by the kernel, so read
        // it volatile and fence before reading the data it covers.
        let head = unsafe { std::ptr::read_volatile(&(*meta).data_head) };
        fence(Ordering::Acquire);
        // SAFETY: tail is ours to read.
        let mut tail = unsafe { std::ptr::read_volatile(&(*meta).data_tail) };
        let data = self.data();
        let size = self.data_size as u64;
        while tail + 8 <= head {
            let header = read_wrapped(data, tail % size, 8);
            let header = header.as_slice();
            let kind = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
            let misc = u16::from_le_bytes([header[4], header[5]]);
            let record_size = u16::from_le_bytes([header[6], header[7]]) as u64;
            if record_size < 8 || tail + record_size > head {
                // A corrupt header would loop forever: give up on what is there.
                return head;
            }
            let mut r =
                RecordRef { ring, kind, misc, pos: tail + 8, len: (record_size - 8) as u32, time: 0, pid: -1, tid: -1 };
            if RecordType(kind).is_builtin_type() {
                if let Ok(common) = self.raw(&r).common_data() {
                    r.time = common.timestamp.unwrap_or(0);
                    r.pid = common.pid.unwrap_or(-1);
                    r.tid = common.tid.unwrap_or(-1);
                }
            }
            if r.time > cut {
                return tail;
            }
            out.push(r);
            tail += record_size;
        }
        tail
    }

    /// The record `r` (from this event's `scan`), unparsed.
    pub fn raw(&self, r: &RecordRef) -> RawEventRecord<'_> {
        let body = read_wrapped(self.data(), r.pos % self.data_size as u64, r.len as usize);
        RawEventRecord::new(RecordType(r.kind), r.misc, body, self.parse_info)
    }

    /// Frees the ring up to `pos` (returned by `scan`).
    pub fn consume(&mut self, pos: u64) {
        let meta = self.base as *mut sys::bindings::perf_event_mmap_page;
        fence(Ordering::Release);
        // SAFETY: publishing the new tail lets the kernel reuse the space.
        unsafe { std::ptr::write_volatile(&mut (*meta).data_tail, pos) };
    }
}

impl Drop for PerfEvent {
    fn drop(&mut self) {
        // SAFETY: base/map_len are the mapping made in `open_cpu`; fd closes itself.
        unsafe {
            libc::munmap(self.base as *mut libc::c_void, self.map_len);
        }
    }
}

/// A view of `len` bytes at `start` in the ring, split in two where it wraps.
fn read_wrapped(data: &[u8], start: u64, len: usize) -> RawData<'_> {
    let start = start as usize;
    if start + len <= data.len() {
        RawData::Single(&data[start..start + len])
    } else {
        let first = &data[start..];
        let rest = len - first.len();
        RawData::Split(first, &data[..rest.min(data.len())])
    }
}

fn make_attr(config: &EventConfig) -> sys::bindings::perf_event_attr {
    let mut attr = sys::bindings::perf_event_attr {
        type_: sys::bindings::PERF_TYPE_SOFTWARE,
        size: std::mem::size_of::<sys::bindings::perf_event_attr>() as u32,
        config: sys::bindings::PERF_COUNT_SW_CPU_CLOCK as u64,
        ..Default::default()
    };
    attr.__bindgen_anon_1.sample_period = config.period_ns.max(10_000);
    let mut sample_type =
        sys::bindings::PERF_SAMPLE_IP | sys::bindings::PERF_SAMPLE_TID | sys::bindings::PERF_SAMPLE_TIME;
    if config.dwarf {
        sample_type |= sys::bindings::PERF_SAMPLE_REGS_USER | sys::bindings::PERF_SAMPLE_STACK_USER;
        attr.sample_regs_user = USER_REGS_MASK;
        attr.sample_stack_user = config.stack_bytes & !7;
    }
    if config.callchain || config.kernel {
        sample_type |= sys::bindings::PERF_SAMPLE_CALLCHAIN;
        if !config.callchain {
            // DWARF mode with --kernel: the user part comes from our own unwinding.
            attr.set_exclude_callchain_user(1);
        }
        if !config.kernel {
            attr.set_exclude_callchain_kernel(1);
        }
    }
    attr.sample_type = sample_type as u64;
    attr.set_disabled(1);
    // Kernel mode is sampled even without --kernel: time in syscalls is the thread's CPU
    // time too, and the user registers and stack are those at kernel entry, so such
    // samples land on the user stack that made the syscall.
    attr.set_exclude_kernel(0);
    attr.set_exclude_hv(1);
    // An idle CPU writes no record (the timer still ticks).
    attr.set_exclude_idle(1);
    attr.set_sample_id_all(1);
    // Timestamps on CLOCK_MONOTONIC, so that a scan can cut every ring at one moment.
    attr.set_use_clockid(1);
    attr.clockid = libc::CLOCK_MONOTONIC;
    // Side records of every task on this CPU: fork and exit (new threads and processes,
    // the end of each), comm with exec (a new program), executable mmaps (new code). A
    // per-CPU event receives those that happen on its CPU, so every CPU's event asks.
    attr.set_task(1);
    attr.set_mmap(1);
    attr.set_mmap2(1);
    attr.set_comm(1);
    attr.set_comm_exec(1);
    attr.set_watermark(1);
    attr.__bindgen_anon_2.wakeup_watermark = (page_size() * ring_pages(config) * 3 / 4) as u32;
    attr
}

/// The record parser's view of `attr`, built by parsing its bytes like a perf.data reader.
fn parse_info_of(attr: &sys::bindings::perf_event_attr) -> io::Result<RecordParseInfo> {
    // SAFETY: perf_event_attr is plain old data; we only read its bytes.
    let bytes = unsafe {
        std::slice::from_raw_parts(attr as *const _ as *const u8, std::mem::size_of::<sys::bindings::perf_event_attr>())
    };
    let (parsed, _) = PerfEventAttr::parse::<_, byteorder::LittleEndian>(bytes)?;
    Ok(RecordParseInfo::new(&parsed, Endianness::LittleEndian))
}

/// The online CPUs, from /sys/devices/system/cpu/online ("0-3,5").
pub fn online_cpus() -> io::Result<Vec<u32>> {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/online")?;
    parse_cpu_list(&text).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("cpu list {text:?}")))
}

fn parse_cpu_list(text: &str) -> Option<Vec<u32>> {
    let mut out = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => out.extend(a.parse::<u32>().ok()?..=b.parse::<u32>().ok()?),
            None => out.push(part.parse().ok()?),
        }
    }
    (!out.is_empty()).then_some(out)
}

/// Now on CLOCK_MONOTONIC, in nanoseconds (the clock of the records' timestamps).
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime fills a timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The system page size.
pub fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 {
        n as usize
    } else {
        4096
    }
}

/// Opens and closes a system-wide cpu-clock event on CPU 0: the cheapest way to learn
/// whether this process may sample the whole host (root, CAP_PERFMON or CAP_SYS_ADMIN,
/// or kernel.perf_event_paranoid <= 0).
pub fn probe() -> io::Result<()> {
    let config = EventConfig { period_ns: 10_000_000, dwarf: false, stack_bytes: 0, callchain: false, kernel: false };
    let mut attr = make_attr(&config);
    let cpu = online_cpus().ok().and_then(|c| c.first().copied()).unwrap_or(0);
    // SAFETY: as in `open_cpu`; the fd is closed right away.
    let fd = unsafe { sys::perf_event_open(&mut attr, -1, cpu as i32, -1, sys::bindings::PERF_FLAG_FD_CLOEXEC as _) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: we own fd.
    drop(unsafe { OwnedFd::from_raw_fd(fd) });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_size_fits_the_stack_copies() {
        let dwarf = EventConfig { period_ns: 1, dwarf: true, stack_bytes: 32 * 1024, callchain: false, kernel: false };
        assert!(ring_pages(&dwarf) * page_size() >= RING_RECORDS * (32 * 1024 + 512));
        assert!(ring_pages(&dwarf).is_power_of_two());
        let fp = EventConfig { dwarf: false, ..dwarf };
        assert!(ring_pages(&fp) < ring_pages(&dwarf));
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0-1\n"), Some(vec![0, 1]));
        assert_eq!(parse_cpu_list("0,2-3,7"), Some(vec![0, 2, 3, 7]));
        assert_eq!(parse_cpu_list("x"), None);
    }
}
