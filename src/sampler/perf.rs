//! One `perf_event_open` cpu-clock event per thread, with its memory-mapped ring buffer.
//!
//! In: a thread id and what each sample must carry (user registers and a copy of the
//! user stack, or a frame-pointer callchain, optionally kernel frames). Out: parsed
//! records (`linux_perf_event_reader::EventRecord`) handed to a callback, oldest first,
//! wrap-around handled. Must not: unwind, symbolize or classify; it only moves bytes.

use linux_perf_event_reader::{
    Endianness, EventRecord, PerfEventAttr, RawData, RawEventRecord, RecordParseInfo, RecordType,
};
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
/// copy in every record (dyn_size only says how much of it is valid). The sampler is
/// woken when a ring is three quarters full, so fewer wake-ups (each costs a context
/// switch and a pass over every ring), and the last quarter (at least 6 records; 7 with
/// the default 32 KiB copies in 1 MiB, 70 ms of a busy thread at 99 Hz) rides out a late
/// poller; anything beyond is counted as lost.
const RING_RECORDS: usize = 24;

/// Ring pages of a switch event: 56-byte records, drained every tick, so 8 pages hold
/// the switches of a thread that leaves its CPU 50,000 times a second.
const SWITCH_RING_PAGES: usize = 8;

/// Data pages per ring buffer (a power of two, plus one metadata page).
fn ring_pages(config: &EventConfig) -> usize {
    let per_record = if config.dwarf { config.stack_bytes as usize + 512 } else { 2048 };
    (per_record * RING_RECORDS).div_ceil(page_size()).next_power_of_two().clamp(8, 512)
}

/// What every sample of an event carries.
#[derive(Debug, Clone, Copy)]
pub struct EventConfig {
    /// Sampling period in nanoseconds of thread CPU time.
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

/// An open, mapped, enabled cpu-clock event on one thread.
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
    /// Opens, maps and enables a cpu-clock sampling event on thread `tid`.
    pub fn open(tid: u32, config: &EventConfig) -> io::Result<PerfEvent> {
        Self::open_attr(tid, make_attr(config), ring_pages(config))
    }

    /// Opens, maps and enables an event that fires each time thread `tid` leaves a CPU
    /// (the `sched:sched_switch` tracepoint, id `tracepoint_id`), recording its user
    /// registers (the frame pointer the off-CPU stack walk needs) and the tracepoint's
    /// fields (the state it left in). No stack copy: about 120 bytes per switch.
    pub fn open_switch(tid: u32, tracepoint_id: u64) -> io::Result<PerfEvent> {
        let mut attr = sys::bindings::perf_event_attr {
            type_: sys::bindings::PERF_TYPE_TRACEPOINT,
            size: std::mem::size_of::<sys::bindings::perf_event_attr>() as u32,
            config: tracepoint_id,
            ..Default::default()
        };
        attr.__bindgen_anon_1.sample_period = 1;
        attr.sample_type = (sys::bindings::PERF_SAMPLE_TID
            | sys::bindings::PERF_SAMPLE_RAW
            | sys::bindings::PERF_SAMPLE_REGS_USER) as u64;
        attr.sample_regs_user = USER_REGS_MASK;
        attr.set_disabled(1);
        attr.set_sample_id_all(1);
        // Wake a poller at each record: with the filter below a record means the thread
        // went to sleep, which is when the sampler has something to observe. The sampler
        // watches these fds at most once per period, so this cannot wake it more often.
        attr.__bindgen_anon_2.wakeup_events = 1;
        let event = Self::open_attr(tid, attr, SWITCH_RING_PAGES)?;
        // Preemptions (prev_state 0 or TASK_REPORT_MAX) leave a thread runnable, which
        // the on-CPU samples already cover: record only switch-outs into a sleep. Without
        // the filter (an old kernel) every switch is recorded, which is correct but
        // wakes the sampler more.
        let mut filter = *b"prev_state & 255\0";
        // SAFETY: SET_FILTER on our own perf fd with a NUL-terminated string that
        // outlives the call.
        if unsafe { sys::ioctls::SET_FILTER(event.fd.as_raw_fd(), filter.as_mut_ptr() as *mut libc::c_char) } < 0 {
            tracing::debug!(tid, err = %io::Error::last_os_error(), "sched_switch filter refused: every switch is recorded");
        }
        Ok(event)
    }

    fn open_attr(tid: u32, mut attr: sys::bindings::perf_event_attr, pages: usize) -> io::Result<PerfEvent> {
        let parse_info = parse_info_of(&attr)?;
        // SAFETY: attr is fully initialised (zeroed then filled) and outlives the call.
        let fd =
            unsafe { sys::perf_event_open(&mut attr, tid as i32, -1, -1, sys::bindings::PERF_FLAG_FD_CLOEXEC as _) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd was just returned by the kernel and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let page = page_size();
        let map_len = page * (pages + 1);
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
        let mut event =
            PerfEvent { fd, base: base as *mut u8, map_len, data_offset: page, data_size: page * pages, parse_info };
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

    /// Hands every record written since the last call to `f`, oldest first, then
    /// frees their space in the ring. Returns the number of records.
    pub fn drain(&mut self, f: impl FnMut(EventRecord<'_>)) -> usize {
        self.drain_where(false, f)
    }

    /// Like `drain`, but parses only the newest sample record (a thread's last
    /// switch-out is all the sampler needs of its switch events). Returns the number of
    /// records freed.
    pub fn drain_last_sample(&mut self, f: impl FnMut(EventRecord<'_>)) -> usize {
        self.drain_where(true, f)
    }

    fn drain_where(&mut self, last_sample_only: bool, mut f: impl FnMut(EventRecord<'_>)) -> usize {
        let meta = self.base as *mut sys::bindings::perf_event_mmap_page;
        // SAFETY: meta is the mapped control page; head is written by the kernel, so read
        // it volatile and fence before reading the data it covers.
        let head = unsafe { std::ptr::read_volatile(&(*meta).data_head) };
        fence(Ordering::Acquire);
        // SAFETY: tail is ours to read and write.
        let mut tail = unsafe { std::ptr::read_volatile(&(*meta).data_tail) };
        // SAFETY: the data area is data_size bytes at data_offset inside the mapping.
        let data = unsafe { std::slice::from_raw_parts(self.base.add(self.data_offset), self.data_size) };
        let size = self.data_size as u64;
        let mut count = 0;
        // (type, misc, body position, body length) of the newest sample, when deferred.
        let mut last: Option<(u32, u16, u64, usize)> = None;
        while tail + 8 <= head {
            let header = read_wrapped(data, tail % size, 8);
            let header = header.as_slice();
            let record_type = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
            let misc = u16::from_le_bytes([header[4], header[5]]);
            let record_size = u16::from_le_bytes([header[6], header[7]]) as u64;
            if record_size < 8 || tail + record_size > head {
                // A corrupt header would loop forever; drop everything that is there.
                tail = head;
                break;
            }
            let body_start = (tail + 8) % size;
            let body_len = (record_size - 8) as usize;
            if last_sample_only && record_type == RecordType::SAMPLE.0 {
                last = Some((record_type, misc, body_start, body_len));
            } else {
                let body = read_wrapped(data, body_start, body_len);
                let raw = RawEventRecord::new(RecordType(record_type), misc, body, self.parse_info);
                if let Ok(record) = raw.parse() {
                    f(record);
                }
            }
            count += 1;
            tail += record_size;
        }
        if let Some((record_type, misc, body_start, body_len)) = last {
            let body = read_wrapped(data, body_start, body_len);
            if let Ok(record) = RawEventRecord::new(RecordType(record_type), misc, body, self.parse_info).parse() {
                f(record);
            }
        }
        fence(Ordering::Release);
        // SAFETY: publishing the new tail lets the kernel reuse the space.
        unsafe { std::ptr::write_volatile(&mut (*meta).data_tail, tail) };
        count
    }
}

impl Drop for PerfEvent {
    fn drop(&mut self) {
        // SAFETY: base/map_len are the mapping made in `open`; fd closes itself.
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
    attr.set_sample_id_all(1);
    // Fork records tell us about new threads, mmap2 records about new libraries; they
    // come from the thread that made them, and every thread has an event.
    attr.set_task(1);
    attr.set_mmap(1);
    attr.set_mmap2(1);
    attr.set_comm(1);
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

/// How a thread left its CPU, from a sched_switch record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SwitchOut {
    /// User instruction pointer (at syscall entry or interruption).
    pub ip: u64,
    /// User stack pointer.
    pub sp: u64,
    /// User frame pointer.
    pub bp: u64,
    /// The /proc-style state letter it left in (`S`, `D`, `R` when preempted, ...), if
    /// the record carried it.
    pub state: Option<char>,
}

/// The `sched:sched_switch` tracepoint: its id and where `prev_state` sits in its records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SwitchTracepoint {
    /// Tracepoint id (perf `config`).
    pub id: u64,
    /// Byte offset of the 8-byte `prev_state` field in the raw record.
    pub prev_state_offset: usize,
}

impl SwitchTracepoint {
    /// Reads a sched_switch sample.
    pub fn parse(&self, sample: &linux_perf_event_reader::SampleRecord<'_>) -> Option<SwitchOut> {
        let regs = sample.user_regs.as_ref()?;
        let state = sample.raw.as_ref().and_then(|raw| {
            let bytes = raw.as_slice();
            let b = bytes.get(self.prev_state_offset..self.prev_state_offset + 8)?;
            Some(prev_state_letter(i64::from_le_bytes(b.try_into().ok()?)))
        });
        Some(SwitchOut { ip: regs.get(REG_IP)?, sp: regs.get(REG_SP)?, bp: regs.get(REG_BP).unwrap_or(0), state })
    }
}

/// The state letter of a sched_switch `prev_state` (include/trace/events/sched.h): the
/// lowest set bit of the report mask, `R` for 0 or a preemption (TASK_REPORT_MAX).
pub fn prev_state_letter(prev_state: i64) -> char {
    const LETTERS: [char; 8] = ['S', 'D', 'T', 't', 'X', 'Z', 'P', 'I'];
    let bits = prev_state & 0xff;
    if prev_state & 0x100 != 0 || bits == 0 {
        return 'R';
    }
    LETTERS[bits.trailing_zeros() as usize]
}

/// The `sched:sched_switch` tracepoint, mounting tracefs if nobody did.
pub fn sched_switch_tracepoint() -> io::Result<SwitchTracepoint> {
    const ROOTS: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];
    let read = || ROOTS.iter().find_map(|root| parse_switch_format(root));
    if let Some(tp) = read() {
        return Ok(tp);
    }
    let target = c"/sys/kernel/tracing";
    // SAFETY: plain mount(2) of tracefs with constant C strings.
    let rc = unsafe { libc::mount(c"nodev".as_ptr(), target.as_ptr(), c"tracefs".as_ptr(), 0, std::ptr::null()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    tracing::info!("mounted tracefs on /sys/kernel/tracing for the sched_switch tracepoint");
    read().ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no sched:sched_switch tracepoint in tracefs"))
}

fn parse_switch_format(root: &str) -> Option<SwitchTracepoint> {
    let dir = format!("{root}/events/sched/sched_switch");
    let id = std::fs::read_to_string(format!("{dir}/id")).ok()?.trim().parse().ok()?;
    let format = std::fs::read_to_string(format!("{dir}/format")).ok()?;
    // "field:long prev_state;	offset:32;	size:8;	signed:1;"
    let line = format.lines().find(|l| l.contains(" prev_state;"))?;
    let offset = line.split(';').find_map(|part| part.trim().strip_prefix("offset:"))?.parse().ok()?;
    Some(SwitchTracepoint { id, prev_state_offset: offset })
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

/// Opens and closes a cpu-clock event on the calling thread: the cheapest way to learn
/// whether perf_event_open is allowed at all here.
pub fn probe() -> io::Result<()> {
    let config = EventConfig { period_ns: 10_000_000, dwarf: false, stack_bytes: 0, callchain: false, kernel: false };
    let mut attr = make_attr(&config);
    // SAFETY: as in `open`; the fd is closed right away.
    let fd = unsafe { sys::perf_event_open(&mut attr, 0, -1, -1, sys::bindings::PERF_FLAG_FD_CLOEXEC as _) };
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
    fn prev_state_letters() {
        assert_eq!(prev_state_letter(0), 'R');
        assert_eq!(prev_state_letter(0x100), 'R');
        assert_eq!(prev_state_letter(0x101), 'R');
        assert_eq!(prev_state_letter(1), 'S');
        assert_eq!(prev_state_letter(2), 'D');
        assert_eq!(prev_state_letter(0x80), 'I');
    }

    #[test]
    fn ring_size_fits_the_stack_copies() {
        let dwarf = EventConfig { period_ns: 1, dwarf: true, stack_bytes: 32 * 1024, callchain: false, kernel: false };
        assert!(ring_pages(&dwarf) * page_size() >= 24 * (32 * 1024 + 512));
        assert!(ring_pages(&dwarf).is_power_of_two());
        let fp = EventConfig { dwarf: false, ..dwarf };
        assert!(ring_pages(&fp) < ring_pages(&dwarf));
    }
}
