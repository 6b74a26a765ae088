//! Stacks from registers and stack bytes: a perf sample's (kernel frames, then user
//! frames unwound with DWARF or from the frame-pointer callchain) and a sleeping
//! thread's (sp/pc from /proc, its stack memory read with process_vm_readv).
//!
//! In: a perf sample or a thread's syscall registers, and the target's `ProcessImage`.
//! Out: a `Stack` of `RawFrame`s, leaf first, and the walk's failures in
//! `SamplerStats`. Must not: name frames or decide states.

use super::bp_guess::BpGuess;
use super::procfs;
use super::unwind::{self, FileCache, ProcessImage, WalkEnd};
use super::{perf, SamplerOptions, SamplerStats, Stack, UnwindMode};
use crate::symbolize::{RawFrame, Symbolizer};
use linux_perf_event_reader::SampleRecord;
use std::sync::Arc;

/// Bytes of a sleeping thread's stack read first (see `offcpu_stack`).
const FIRST_STACK_READ: usize = 4096;

/// What walking any target's stacks needs: the options, the cache of parsed module files
/// and scratch buffers reused from walk to walk.
pub(super) struct StackWalker {
    opts: SamplerOptions,
    /// Module files with their unwind sections, shared by every target.
    pub(super) files: FileCache,
    addrs: Vec<u64>,
    stack: Vec<u8>,
}

impl StackWalker {
    pub(super) fn new(opts: SamplerOptions) -> StackWalker {
        StackWalker {
            opts,
            files: FileCache::default(),
            addrs: Vec::with_capacity(unwind::MAX_FRAMES),
            stack: Vec::new(),
        }
    }

    /// The stack of one perf sample, leaf first: kernel frames (if asked), then user
    /// frames unwound with DWARF or taken from the frame-pointer callchain.
    pub(super) fn sample_stack(
        &mut self,
        sample: &SampleRecord<'_>,
        image: &mut ProcessImage,
        symbolizer: &Symbolizer,
        stats: &mut SamplerStats,
    ) -> Option<Stack> {
        let mut frames: Vec<RawFrame> = Vec::with_capacity(64);
        let mut user_chain: Vec<u64> = Vec::new();
        if let Some(chain) = &sample.callchain {
            let mut mode = 0u64;
            let mut first_in_mode = true;
            for i in 0..chain.len() {
                let Some(addr) = chain.get(i) else { break };
                if addr >= perf_event_open_sys::bindings::PERF_CONTEXT_MAX {
                    mode = addr;
                    first_in_mode = true;
                    continue;
                }
                let lookup = if first_in_mode { addr } else { addr.saturating_sub(1) };
                first_in_mode = false;
                if mode == perf_event_open_sys::bindings::PERF_CONTEXT_KERNEL {
                    if self.opts.kernel {
                        frames.push(RawFrame::Kernel(lookup));
                    }
                } else if mode == perf_event_open_sys::bindings::PERF_CONTEXT_USER {
                    user_chain.push(lookup);
                }
            }
        }
        let addrs = &mut self.addrs;
        addrs.clear();
        let end = match self.opts.unwind {
            UnwindMode::Dwarf => {
                let regs = sample.user_regs.as_ref()?;
                let (ip, sp, bp) =
                    (regs.get(perf::REG_IP)?, regs.get(perf::REG_SP)?, regs.get(perf::REG_BP).unwrap_or(0));
                let (stack_data, _dyn_size) = sample.user_stack.as_ref()?;
                let bytes = stack_data.as_slice();
                image.refresh_if_unknown(ip, &mut self.files, symbolizer);
                image.unwind(ip, sp, bp, &bytes, addrs)
            }
            UnwindMode::FramePointer => {
                addrs.extend_from_slice(&user_chain);
                WalkEnd::Complete
            }
        };
        count_walk(stats, end, addrs.len());
        image.frames_of_walk(addrs, &mut self.files, symbolizer, &mut frames);
        if frames.is_empty() {
            return None;
        }
        if let Some(tid) = sample.tid {
            frames.extend(image.thread_role(tid as u32, symbolizer));
        }
        Some(Arc::from(frames))
    }

    /// The user stack of a thread that is off-CPU, from the user `sp`/`pc` the kernel
    /// saved at syscall entry and a copy of its stack memory, and whether the walk
    /// reached the thread's root. /proc does not give the frame pointer: the walk uses
    /// DWARF CFI alone first and guesses `bp` only for frame-pointer frames (see
    /// `ProcessImage::guess_bp` and docs/thread-states.md); the flag says the
    /// walk reached the root without an unchecked guess. Err when the memory
    /// cannot be read (EPERM: ptrace access denied; ESRCH: gone).
    pub(super) fn offcpu_stack(
        &mut self,
        (pid, tid): (u32, u32),
        (sp, pc): (u64, u64),
        image: &mut ProcessImage,
        symbolizer: &Symbolizer,
        stats: &mut SamplerStats,
    ) -> std::io::Result<(Stack, bool)> {
        let (addrs, buf) = (&mut self.addrs, &mut self.stack);
        image.refresh_if_unknown(pc, &mut self.files, symbolizer);
        // Most sleeping stacks are shallow: read one page-sized chunk first, the whole
        // `stack_bytes` only if the walk ran out of it.
        let full = self.opts.stack_bytes.max(FIRST_STACK_READ as u32) as usize;
        let mut end = WalkEnd::Truncated;
        for len in [FIRST_STACK_READ, full] {
            addrs.clear();
            let got = procfs::read_memory(pid, sp, len, buf)?;
            end = image.unwind_without_bp(pc, sp, buf, addrs);
            if end == WalkEnd::Complete || got < len || len == full {
                break;
            }
        }
        // Guess `bp` only on the whole read: a walk that ran out of the first chunk (a
        // signal frame lies deep) would otherwise take a wrong guess that happens to end.
        let mut guess = BpGuess::None;
        if end == WalkEnd::Truncated {
            (end, guess) = image.guess_bp(pid, pc, sp, buf, addrs);
        }
        count_walk(stats, end, addrs.len());
        let mut frames = Vec::with_capacity(addrs.len());
        image.frames_of_walk(addrs, &mut self.files, symbolizer, &mut frames);
        frames.extend(image.thread_role(tid, symbolizer));
        // Rooted only when the walk reached the root by DWARF CFI, signal frames and
        // call-checked frame pointers: a walk completed from an unchecked guess may have
        // stopped on a zero it took for the end.
        Ok((Arc::from(frames), end == WalkEnd::Complete && guess != BpGuess::Unchecked))
    }
}

/// Counts a walk that stopped early: a failure if nothing past the first frame came out.
fn count_walk(stats: &mut SamplerStats, end: WalkEnd, frames: usize) {
    if end == WalkEnd::Truncated {
        if frames <= 1 {
            stats.unwind_failures += 1;
        } else {
            stats.truncated += 1;
        }
    }
}
