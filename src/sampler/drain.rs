//! Waiting on the per-CPU events and reading what they wrote, in time order across
//! CPUs: samples (of targets: unwound and counted; of other processes: dropped after the
//! header), and the host's fork, exit, exec, comm, mmap and lost records, which keep the
//! target set, their threads and their code up to date.
//!
//! In: the per-CPU ring buffers. Out: counts in each target's window, target and thread
//! changes, `SamplerEvent`s. Must not: read /proc except to decide a process seen for the
//! first time (and its code), or block past the timeout it is given.

use super::accounting::RUNNABLE;
use super::procfs::Mapping;
use super::profiles::Tally;
use super::selection::{self, Seen};
use super::{Sampler, SamplerEvent, SharedImage, Why};
use crate::symbolize::RawFrame;
use linux_perf_event_reader::{EventRecord, Mmap2FileId, RecordType};
use std::sync::{Arc, Mutex};
use std::time::Duration;

impl Sampler {
    /// Waits for a ring buffer past its watermark or `timeout`.
    pub(super) fn wait_for_data(&mut self, timeout: Duration) {
        if timeout.is_zero() {
            return;
        }
        let fds = &mut self.scratch_fds;
        fds.clear();
        fds.extend(self.cpus.iter().map(|e| libc::pollfd { fd: e.raw_fd(), events: libc::POLLIN, revents: 0 }));
        let ts = libc::timespec {
            tv_sec: timeout.as_secs().min(i32::MAX as u64) as libc::time_t,
            tv_nsec: timeout.subsec_nanos() as libc::c_long,
        };
        // SAFETY: fds is a valid array of pollfd for its length; ts outlives the call.
        unsafe { libc::ppoll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, &ts, std::ptr::null()) };
    }

    /// Reads every ring, handles the records in time order, then frees the rings.
    pub(super) fn drain_all(&mut self) {
        let cpus = std::mem::take(&mut self.cpus);
        let mut refs = std::mem::take(&mut self.scratch_refs);
        refs.clear();
        // Every ring up to one moment: what is newer waits for the next drain.
        let cut = super::perf::monotonic_ns();
        let heads: Vec<u64> = cpus.iter().enumerate().map(|(i, e)| e.scan(i as u32, cut, &mut refs)).collect();
        // A fork on one CPU comes before its child's first sample on another.
        refs.sort_by_key(|r| r.time);
        for r in &refs {
            if r.kind == RecordType::SAMPLE.0 {
                self.on_sample(&cpus, r);
                continue;
            }
            let Ok(record) = cpus[r.ring as usize].raw(r).parse() else { continue };
            match record {
                EventRecord::Fork(f) => self.on_fork(f.pid as u32, f.ppid as u32, f.tid as u32),
                EventRecord::Exit(e) => self.on_exit(e.pid as u32, e.tid as u32),
                EventRecord::Comm(c) => {
                    let name = String::from_utf8_lossy(&c.name.as_slice()).into_owned();
                    self.on_comm(c.pid as u32, c.tid as u32, name, c.is_execve);
                }
                EventRecord::Mmap2(m)
                    if m.protection & libc::PROT_EXEC as u32 != 0 && self.targets.contains_key(&(m.pid as u32)) =>
                {
                    let dev_inode = match &m.file_id {
                        Mmap2FileId::InodeAndVersion(f) => (format!("{:02x}:{:02x}", f.major, f.minor), f.inode),
                        Mmap2FileId::BuildId(_) => (String::new(), 0),
                    };
                    let path = String::from_utf8_lossy(&m.path.as_slice()).into_owned();
                    let mapping =
                        Mapping { start: m.address, end: m.address + m.length, offset: m.page_offset, dev_inode, path };
                    self.on_exec_mapping(m.pid as u32, mapping);
                }
                EventRecord::Lost(l) => {
                    self.stats.lost += l.count;
                    // Forks or exits may be among them: check the targets soon.
                    self.next_rescan = self.next_rescan.min(std::time::Instant::now() + super::RESCAN_INTERVAL);
                    if !self.logged.lost {
                        self.logged.lost = true;
                        tracing::warn!(
                            count = l.count,
                            "the kernel dropped records (ring buffer full): samples, forks or exits are missing; \
                             see hotframe_agent_samples_lost_total"
                        );
                    }
                    self.pending.push(SamplerEvent::Lost { count: l.count });
                }
                _ => {}
            }
        }
        self.cpus = cpus;
        for (event, head) in self.cpus.iter_mut().zip(heads) {
            event.consume(head);
        }
        self.scratch_refs = refs;
    }

    /// Whether `pid` is a target, deciding a process seen for the first time. A target
    /// whose exit record was read still is until `take_profiles`: the kernel writes that
    /// record before the task is done exiting (closing files, the last switch), and a
    /// fifth of a short-lived postgres backend's samples came after it.
    /// A target that exec'd into a program the pattern does not match is not: the
    /// samples after its exec record are that program's (`sh -c` children of `--name`).
    fn is_target(&mut self, pid: u32) -> bool {
        if let Some(target) = self.targets.get(&pid) {
            return !target.left;
        }
        if self.others.contains(&pid) {
            return false;
        }
        self.decide_first_sight(pid)
    }

    /// A process never seen in a record (it existed before the sampler, or its fork
    /// record was lost): a target if the name pattern matches or an ancestor is one.
    pub(super) fn decide_first_sight(&mut self, pid: u32) -> bool {
        if pid == 0 || self.selection.excluded(pid) {
            self.others.insert(pid);
            return false;
        }
        let matched = self.selection.has_pattern()
            && selection::read_seen(pid).is_some_and(|(comm, cmdline)| {
                self.selection.matches(Seen { pid, comm: &comm, cmdline: Some(&cmdline) })
            });
        let ancestor = if matched { None } else { self.target_ancestor(pid) };
        // Under a target matched by name (not by descent) only a fork that still runs the
        // same program is one: a child that exec'd elsewhere is decided by the pattern.
        let ancestor = ancestor.filter(|a| {
            self.targets.get(a).is_some_and(|t| t.by_descent || super::procfs::exe(pid).is_some_and(|e| e == t.exe))
        });
        if !matched && ancestor.is_none() {
            self.others.insert(pid);
            return false;
        }
        let by_descent = ancestor.is_some_and(|a| self.targets.get(&a).is_some_and(|t| t.by_descent));
        self.follow_existing(pid, by_descent, if matched { Why::Matched } else { Why::Child });
        self.targets.get(&pid).is_some_and(|t| !t.exited)
    }

    /// The nearest live target among `pid`'s ancestors (/proc parent links), if any.
    fn target_ancestor(&self, pid: u32) -> Option<u32> {
        let mut current = pid;
        for _ in 0..64 {
            let parent = selection::parent_of(current)?;
            if self.targets.get(&parent).is_some_and(|t| !t.exited) {
                return Some(parent);
            }
            if parent <= 1 || self.others.contains(&parent) {
                return None;
            }
            current = parent;
        }
        None
    }

    /// A sample: dropped unless its process is a target; else unwound and counted.
    fn on_sample(&mut self, cpus: &[super::PerfEvent], r: &super::RecordRef) {
        if r.pid <= 0 {
            return;
        }
        let (pid, tid) = (r.pid as u32, r.tid as u32);
        if !self.is_target(pid) {
            self.stats.other_samples += 1;
            return;
        }
        let Ok(EventRecord::Sample(sample)) = cpus[r.ring as usize].raw(r).parse() else { return };
        let Some(target) = self.targets.get_mut(&pid) else { return };
        let mut image = target.image.lock().unwrap_or_else(|e| e.into_inner());
        if image.is_empty() && image.pid() == pid {
            // Exec'd with no mmap record read yet (or lost): ask /proc while it lives.
            let _ = image.refresh(&mut self.walker.files, &self.symbolizer);
        }
        let stack = self.walker.sample_stack(&sample, &mut image, &self.symbolizer, &mut self.stats);
        drop(image);
        // No user stack (a process tearing down its address space at exit, in the
        // kernel): the CPU time is still the target's, on an `[unknown]` frame.
        let stack = stack.unwrap_or_else(|| Arc::from(vec![RawFrame::Unknown(0)]));
        self.stats.samples += 1;
        let mut tally = Tally { counts: &mut target.counts, prefetch: &mut self.prefetch, stats: &mut self.stats };
        match self.threads.get_mut(&tid).and_then(|t| t.clock.as_mut()) {
            Some(clock) => clock.sampled(&stack, &mut tally),
            None => tally.add(&stack, RUNNABLE, 1),
        }
    }

    /// A fork record: a new thread (`pid == ppid`) or a new process `pid` of `ppid`.
    fn on_fork(&mut self, pid: u32, ppid: u32, tid: u32) {
        if pid == ppid {
            if self.targets.get(&pid).is_some_and(|t| !t.exited) {
                self.follow_thread(pid, tid);
                self.pending.push(SamplerEvent::ThreadFollowed { pid, tid });
            }
            return;
        }
        let parent = self.targets.get(&ppid).filter(|t| !t.exited);
        let parent_is_target = parent.is_some();
        if self.selection.at_fork(pid, parent_is_target) {
            let Some(parent) = parent else { return };
            // Same address space at fork: share the parent's image until either maps code.
            let image = Arc::clone(&parent.image);
            let by_descent = parent.by_descent;
            self.follow(pid, ppid, by_descent, image, Why::Child);
            self.follow_thread(pid, tid);
        } else if self.others.contains(&ppid) && !self.selection.has_pattern() {
            // A child of a process that is not a target is none either (with a name
            // pattern it may still match after an exec, decided then).
            self.others.insert(pid);
        }
    }

    /// An exit record: a thread ends; the process with it when it is the main thread.
    fn on_exit(&mut self, pid: u32, tid: u32) {
        self.drop_thread(tid);
        if tid == pid {
            self.others.remove(&pid);
            if self.targets.contains_key(&pid) {
                self.mark_exited(pid);
            }
        }
    }

    /// A comm record: a rename, or with `exec` a new program, which may make the process
    /// a target (the name pattern) or stop it being one.
    fn on_comm(&mut self, pid: u32, tid: u32, comm: String, exec: bool) {
        if !exec {
            if tid == pid {
                if let Some(t) = self.targets.get_mut(&pid) {
                    t.comm = comm;
                }
            }
            return;
        }
        let (was_target, by_descent) = match self.targets.get(&pid).filter(|t| !t.exited) {
            Some(t) => (true, t.by_descent),
            None => (false, false),
        };
        let cmdline = if self.selection.wants_cmdline() { selection::read_seen(pid).map(|(_, c)| c) } else { None };
        let seen = Seen { pid, comm: &comm, cmdline: cmdline.as_deref() };
        let now_target = self.selection.at_exec(was_target, by_descent, seen);
        match (was_target, now_target) {
            (true, true) => {
                let tag = self.tagger.as_mut().and_then(|tagger| tagger(pid, None));
                let Some(t) = self.targets.get_mut(&pid) else { return };
                // A new program may run in another cgroup (systemd, runc move it first).
                if tag.is_some() {
                    t.tag = tag;
                }
                // A new program: a new address space, its code from the mmap records
                // that follow (or /proc at its first sample).
                t.image = Arc::new(Mutex::new(super::ProcessImage::new(pid)));
                t.comm = comm;
                if let Some(exe) = super::procfs::exe(pid) {
                    t.exe = exe;
                }
                // Its other threads are gone with the exec.
                let gone: Vec<u32> =
                    self.threads.iter().filter(|(id, th)| th.pid == pid && **id != pid).map(|(id, _)| *id).collect();
                for tid in gone {
                    self.drop_thread(tid);
                }
            }
            (false, true) => {
                let parent = selection::parent_of(pid).unwrap_or(0);
                let image: SharedImage = Arc::new(Mutex::new(super::ProcessImage::new(pid)));
                self.follow(pid, parent, false, image, Why::Matched);
                if let Some(t) = self.targets.get_mut(&pid) {
                    t.comm = comm;
                }
                self.follow_threads_in_proc(pid);
            }
            (true, false) => {
                // Matched by name, and no longer: its samples so far are kept, its later
                // ones are not counted (`is_target`).
                self.mark_exited(pid);
                if let Some(t) = self.targets.get_mut(&pid) {
                    t.left = true;
                }
                self.others.insert(pid);
            }
            (false, false) => {
                self.others.insert(pid);
            }
        }
    }

    /// A target mapped code: its image learns of it (a private copy first if it is
    /// shared with a parent or children).
    fn on_exec_mapping(&mut self, pid: u32, mapping: Mapping) {
        if mapping.path.is_empty() || (mapping.path.starts_with('[') && mapping.path != "[vdso]") {
            return;
        }
        let Some(target) = self.targets.get_mut(&pid) else { return };
        if Arc::strong_count(&target.image) > 1 {
            let copy = {
                let shared = target.image.lock().unwrap_or_else(|e| e.into_inner());
                shared.copy_for(pid, &mut self.walker.files, &self.symbolizer)
            };
            target.image = Arc::new(Mutex::new(copy));
        }
        let mut image = target.image.lock().unwrap_or_else(|e| e.into_inner());
        image.add_mapping(mapping, &mut self.walker.files, &self.symbolizer);
    }
}
