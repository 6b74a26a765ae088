//! Waiting on the threads' perf events and reading what they wrote: on-CPU samples
//! (unwound into stacks), sched_switch records, and fork, mmap and lost records that
//! `poll` acts on afterwards.
//!
//! In: the per-thread ring buffers. Out: stacks handed to each thread's `ThreadClock`,
//! and `Pending` work for `poll`. Must not: read /proc (ticks do) or block past the
//! timeout it is given.

use super::perf::{PerfEvent, SwitchOut, SwitchTracepoint};
use super::profiles::Tally;
use super::{Sampler, SamplerEvent, Stack};
use linux_perf_event_reader::EventRecord;
use std::collections::HashSet;
use std::time::{Duration, Instant};

/// A thread's sched_switch event: user registers each time it leaves a CPU.
pub(super) struct SwitchRecords {
    event: PerfEvent,
    tracepoint: SwitchTracepoint,
    /// The last of those records: ip, sp, bp and the state it left in.
    pub(super) last: Option<SwitchOut>,
}

impl SwitchRecords {
    /// Opens the event on `tid`.
    pub(super) fn open(tid: u32, tracepoint: SwitchTracepoint) -> std::io::Result<SwitchRecords> {
        Ok(SwitchRecords { event: PerfEvent::open_switch(tid, tracepoint.id)?, tracepoint, last: None })
    }

    /// Keeps the newest record in `last`. True if any arrived since the last call.
    pub(super) fn drain(&mut self) -> bool {
        let (tp, last) = (&self.tracepoint, &mut self.last);
        self.event.drain_last_sample(|record| {
            if let EventRecord::Sample(s) = record {
                if let Some(out) = tp.parse(&s) {
                    *last = Some(out);
                }
            }
        }) > 0
    }
}

/// What the records of a drain left for `poll` to do.
#[derive(Default)]
pub(super) struct Pending {
    /// Events for the caller of `poll`.
    pub(super) events: Vec<SamplerEvent>,
    /// Threads announced by fork records: (pid, tid).
    pub(super) threads: Vec<(u32, u32)>,
    /// Targets that mapped new code: their image is re-read.
    pub(super) dirty_images: HashSet<u32>,
}

impl Sampler {
    /// Waits for a ring buffer past its watermark, a thread exit, with `switches` a
    /// thread going to sleep, or `timeout`. Returns whether a thread went to sleep.
    pub(super) fn wait_for_data(&mut self, timeout: Duration, switches: bool) -> bool {
        if timeout.is_zero() {
            return false;
        }
        let fds = &mut self.scratch_fds;
        fds.clear();
        fds.extend(self.threads.values().map(|t| libc::pollfd {
            fd: t.event.raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }));
        let events = fds.len();
        if switches {
            fds.extend(self.threads.values().filter_map(|t| t.switch.as_ref()).map(|s| libc::pollfd {
                fd: s.event.raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            }));
        }
        if fds.is_empty() {
            std::thread::sleep(timeout);
            return false;
        }
        let ts = libc::timespec {
            tv_sec: timeout.as_secs().min(i32::MAX as u64) as libc::time_t,
            tv_nsec: timeout.subsec_nanos() as libc::c_long,
        };
        // SAFETY: fds is a valid array of pollfd for its length; ts outlives the call.
        unsafe { libc::ppoll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, &ts, std::ptr::null()) };
        let slept = fds[events..].iter().any(|f| f.revents & libc::POLLIN != 0);
        // A thread's event reports POLLHUP once the thread exited: drop it after a last drain.
        let hung: HashSet<i32> =
            fds[..events].iter().filter(|f| f.revents & libc::POLLHUP != 0).map(|f| f.fd).collect();
        if !hung.is_empty() {
            let gone: Vec<u32> =
                self.threads.iter().filter(|(_, t)| hung.contains(&t.event.raw_fd())).map(|(tid, _)| *tid).collect();
            for tid in gone {
                self.drain_thread(tid);
                self.remove_thread(tid);
            }
            self.stats.threads_active = self.threads.len() as u64;
            // Perhaps the whole process exited: find out now.
            self.next_rescan = Instant::now();
        }
        slept
    }

    /// Reads every thread's ring buffers.
    pub(super) fn drain_all(&mut self) {
        let tids: Vec<u32> = self.threads.keys().copied().collect();
        for tid in tids {
            self.drain_thread(tid);
        }
    }

    /// Reads one thread's ring buffers: its last switch record, its on-CPU samples
    /// (unwound, then held for the next tick or counted), and fork, mmap and lost records.
    pub(super) fn drain_thread(&mut self, tid: u32) {
        let Some(thread) = self.threads.get_mut(&tid) else { return };
        let pid = thread.pid;
        if thread.switch.as_mut().is_some_and(|s| s.drain()) {
            thread.clock.switched_out();
        }
        let Some(target) = self.targets.get_mut(&pid) else { return };
        let (walker, symbolizer, pending) = (&mut self.walker, &self.symbolizer, &mut self.pending);
        let image = &mut target.image;
        let mut tally = Tally { counts: &mut target.counts, prefetch: &mut self.prefetch, stats: &mut self.stats };
        let mut last_stack: Option<Stack> = None;
        let wall_clock = thread.files.is_some();
        let clock = &mut thread.clock;
        thread.event.drain(|record| match record {
            EventRecord::Sample(sample) => {
                if let Some(stack) = walker.sample_stack(&sample, image, symbolizer, tally.stats) {
                    tally.stats.samples += 1;
                    clock.sampled(&stack, wall_clock, &mut tally);
                    last_stack = Some(stack);
                }
            }
            EventRecord::Fork(f) if f.pid as u32 == pid && f.tid != f.ptid => pending.threads.push((pid, f.tid as u32)),
            EventRecord::Mmap2(m) if m.pid as u32 == pid && m.protection & libc::PROT_EXEC as u32 != 0 => {
                pending.dirty_images.insert(pid);
            }
            EventRecord::Mmap(m) if m.pid as u32 == pid && m.is_executable => {
                pending.dirty_images.insert(pid);
            }
            EventRecord::Lost(l) => {
                tally.stats.lost += l.count;
                pending.events.push(SamplerEvent::Lost { pid, count: l.count });
            }
            _ => {}
        });
        if let Some(stack) = last_stack {
            thread.clock.ran_on(stack);
        }
    }
}
