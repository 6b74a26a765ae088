//! The frame pointer of a thread that is off CPU. `/proc/PID/task/TID/syscall` gives
//! the user `sp` and `pc` saved at syscall entry but not `rbp`; a DWARF walk stops at the
//! first function whose CFI computes its frame from `rbp` (postgres' `WaitEventSetWait`,
//! Rust's std built with frame pointers). This module finds that `rbp` on the stack.
//!
//! In: the walk that stopped, the stack bytes, the target's code (read through
//! `process_vm_readv`) and `.eh_frame_hdr` function starts. Out: a complete walk and how
//! sure it is (`BpGuess`). Must not: read more than a few words of the target per
//! candidate, or call a walk complete from a candidate it did not try.
//!
//! The stuck function's prologue saved its caller's `rbp` at `rbp` and the return address
//! into its caller right above. A candidate slot is *checked* when the instruction before
//! the return address above it calls exactly the stuck function (a direct `call rel32`,
//! or `call *[rip + rel32]` through the GOT, as Rust and `-fno-plt` code call other
//! crates): stale return addresses left in a frame's locals are calls *from* it, not
//! *to* it, and the return address of a frame further up calls another function.

use super::procfs;
use super::unwind::{ProcessImage, WalkEnd};

/// Unchecked frame-pointer guesses tried after the checked ones, at most.
const MAX_UNCHECKED_GUESSES: usize = 8;

/// How far above the stuck frame's return address checked candidates are looked for
/// (the frame's locals and saved registers).
const CHECKED_SPAN: usize = 8192;

/// How `guess_bp` found the frame pointer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BpGuess {
    /// Not guessed (no walk completed from a guess).
    None,
    /// From a slot whose return address follows a call to the stuck function.
    Checked,
    /// From the lowest plausible slot whose walk completed: may be wrong.
    Unchecked,
}

impl ProcessImage {
    /// After `unwind_without_bp` stopped at a frame that needs `bp` (`out` holds that
    /// walk), finds `bp` on the stack (see the module header): checked candidates
    /// first, lowest first, then at most 8 unchecked ones; the first walk that reaches
    /// the root wins, else the first, truncated walk is kept. Call it on the whole stack
    /// read, not a first chunk: a walk that merely ran out of bytes must read more.
    /// `pid` is the thread's process, whose code is read.
    pub fn guess_bp(&mut self, pid: u32, ip: u64, sp: u64, stack: &[u8], out: &mut Vec<u64>) -> (WalkEnd, BpGuess) {
        let first: Vec<u64> = out.clone();
        let word = |off: usize| -> Option<u64> {
            let b = stack.get(off..off.checked_add(8)?)?;
            Some(u64::from_le_bytes(b.try_into().ok()?))
        };
        // Look above the slot holding the stuck frame's return address, not from the
        // leaf's `sp`: the slots of the deeper frames hold return addresses that look
        // just as plausible.
        let (start, stuck_pc) = match first.as_slice() {
            [_, .., last] => {
                let ret = last.wrapping_add(1);
                let at = (0..stack.len() / 8).map(|i| i * 8).find(|o| word(*o) == Some(ret)).map_or(0, |o| o + 8);
                (at, ret)
            }
            _ => (0, ip),
        };
        let candidates: Vec<(usize, u64)> = (start..stack.len().saturating_sub(15))
            .step_by(8)
            .filter_map(|off| Some((off, word(off + 8)?)))
            .filter(|(_, ret)| self.find(ret.wrapping_sub(1)).is_some())
            .collect();
        if let Some(function) = self.find(stuck_pc.wrapping_sub(1)).and_then(|m| m.function_start(stuck_pc - 1)) {
            let mut code = Vec::new();
            for &(off, ret) in candidates.iter().take_while(|(off, _)| *off < start + CHECKED_SPAN) {
                if call_target(pid, ret, &mut code) != Some(function) {
                    continue;
                }
                out.clear();
                if self.unwind(ip, sp, sp + off as u64, stack, out) == WalkEnd::Complete {
                    return (WalkEnd::Complete, BpGuess::Checked);
                }
            }
        }
        for &(off, _) in candidates.iter().take(MAX_UNCHECKED_GUESSES) {
            // The saved `rbp` itself is not checked: the caller of a frame-pointer frame
            // may be code without frame pointers, whose `rbp` holds any value.
            out.clear();
            if self.unwind(ip, sp, sp + off as u64, stack, out) == WalkEnd::Complete {
                return (WalkEnd::Complete, BpGuess::Unchecked);
            }
        }
        out.clear();
        out.extend_from_slice(&first);
        (WalkEnd::Truncated, BpGuess::None)
    }
}

/// The function the call instruction ending at `ret` in process `pid` calls: `e8 rel32`
/// (direct) or `ff 15 rel32` (`call *[rip + rel32]`, through a GOT slot read from the
/// target). None for any other instruction or an unreadable address.
fn call_target(pid: u32, ret: u64, code: &mut Vec<u8>) -> Option<u64> {
    procfs::read_memory(pid, ret.checked_sub(6)?, 6, code).ok().filter(|n| *n == 6)?;
    let rel = i32::from_le_bytes([code[2], code[3], code[4], code[5]]) as i64 as u64;
    match (code[0], code[1]) {
        (_, 0xe8) => Some(ret.wrapping_add(rel)),
        (0xff, 0x15) => {
            procfs::read_memory(pid, ret.wrapping_add(rel), 8, code).ok().filter(|n| *n == 8)?;
            Some(u64::from_le_bytes(code[..8].try_into().ok()?))
        }
        _ => None,
    }
}

/// The start (stated address) of the FDE covering `svma`, from an `.eh_frame_hdr` at
/// stated address `hdr_svma`: its binary-search table, in the encoding every toolchain
/// writes (`DW_EH_PE_datarel | DW_EH_PE_sdata4`, 0x3b). None for another encoding.
pub(super) fn fde_start(hdr: &[u8], hdr_svma: u64, svma: u64) -> Option<u64> {
    let (&version, &ptr_enc, &count_enc, &table_enc) = (hdr.first()?, hdr.get(1)?, hdr.get(2)?, hdr.get(3)?);
    // eh_frame_ptr as sdata4/udata4 relative to pc (0x1b) or absolute (0x03), count udata4.
    if version != 1 || !matches!(ptr_enc, 0x1b | 0x03) || count_enc != 0x03 || table_enc != 0x3b {
        return None;
    }
    let count = u32::from_le_bytes(hdr.get(8..12)?.try_into().ok()?) as usize;
    let table = hdr.get(12..12usize.checked_add(count.checked_mul(8)?)?)?;
    let entry = |i: usize| -> u64 {
        let b = &table[i * 8..i * 8 + 4];
        hdr_svma.wrapping_add(i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i64 as u64)
    };
    // Binary search for the number of entries whose start is at or below `svma`.
    let (mut lo, mut hi) = (0, count);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if entry(mid) <= svma {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo.checked_sub(1).map(entry)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hdr(starts: &[i32]) -> Vec<u8> {
        let mut h = vec![1, 0x1b, 0x03, 0x3b, 0, 0, 0, 0];
        h.extend_from_slice(&(starts.len() as u32).to_le_bytes());
        for s in starts {
            h.extend_from_slice(&s.to_le_bytes());
            h.extend_from_slice(&0i32.to_le_bytes());
        }
        h
    }

    #[test]
    fn fde_start_is_the_highest_start_at_or_below() {
        // Table entries are relative to the header's own address (0x1000).
        let h = hdr(&[-0x800, -0x400, 0x100]);
        assert_eq!(fde_start(&h, 0x1000, 0x700), None);
        assert_eq!(fde_start(&h, 0x1000, 0x800), Some(0x800));
        assert_eq!(fde_start(&h, 0x1000, 0xbff), Some(0x800));
        assert_eq!(fde_start(&h, 0x1000, 0xc00), Some(0xc00));
        assert_eq!(fde_start(&h, 0x1000, 0x2000), Some(0x1100));
    }

    #[test]
    fn fde_start_refuses_other_encodings_and_short_tables() {
        let mut h = hdr(&[0x10]);
        h[3] = 0x1b;
        assert_eq!(fde_start(&h, 0, 0x20), None);
        let mut h = hdr(&[0x10, 0x20]);
        h.truncate(16);
        assert_eq!(fde_start(&h, 0, 0x20), None);
        assert_eq!(fde_start(&[], 0, 0x20), None);
    }
}
