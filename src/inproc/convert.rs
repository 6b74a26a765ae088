//! pprof-rs report data (stacks of symbols, leaf first, with the sampling thread's
//! name) to `model::Profile` (frames root first, every sample RUNNABLE: pprof-rs only
//! samples threads on a CPU).
//!
//! In: `(pprof::Frames, count)` pairs and the window. Out: a `Profile`. Must not:
//! sample, symbolize or send anything.

use crate::model::{Profile, ProfileBuilder, ThreadState};

/// How stacks are named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvertOptions {
    /// Put the thread's name (or id) as the root frame of every stack, as pyroscope-rs
    /// does with `report_thread_name` and async-profiler with `threads`.
    pub thread_root: bool,
}

/// Drops the `::h0123456789abcdef` hash that legacy Rust mangling leaves on demangled
/// names, so that the same function has one name across builds (and matches the
/// external agent's names).
pub fn strip_rust_hash(name: &str) -> &str {
    if let Some((head, hash)) = name.rsplit_once("::h") {
        if hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return head;
        }
    }
    name
}

/// Builds one profile from pprof-rs report entries. Empty stacks (a sample whose
/// unwinding found nothing) count as `[unknown]` so that CPU time is not lost.
pub fn to_profile<'a>(
    entries: impl IntoIterator<Item = (&'a pprof::Frames, isize)>,
    builder: ProfileBuilder,
    opts: ConvertOptions,
) -> Profile {
    let mut builder = builder;
    let mut names: Vec<String> = Vec::new();
    for (frames, count) in entries {
        let Ok(count) = u64::try_from(count) else { continue };
        names.clear();
        if opts.thread_root {
            names.push(frames.thread_name_or_id());
        }
        // pprof-rs lists frames leaf first, and each frame's inlined symbols innermost
        // first: the reverse of both is root first.
        for symbols in frames.frames.iter().rev() {
            for symbol in symbols.iter().rev() {
                names.push(strip_rust_hash(&symbol.name()).to_string());
            }
        }
        if names.len() == usize::from(opts.thread_root) {
            names.push("[unknown]".to_string());
        }
        builder.add(&names, ThreadState::Runnable, count);
    }
    builder.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use pprof::Symbol;
    use std::time::SystemTime;

    fn symbol(name: &str) -> Symbol {
        Symbol { name: Some(name.as_bytes().to_vec()), addr: None, lineno: None, filename: None }
    }

    fn frames(leaf_first: Vec<Vec<Symbol>>, thread: &str) -> pprof::Frames {
        pprof::Frames {
            frames: leaf_first,
            thread_name: thread.into(),
            thread_id: 7,
            sample_timestamp: SystemTime::now(),
        }
    }

    #[test]
    fn stacks_become_root_first_with_inlined_frames() {
        let a = frames(
            vec![
                vec![symbol("leaf_inlined"), symbol("leaf")],
                vec![symbol("_ZN4main4work17h0123456789abcdefE")],
                vec![symbol("main")],
            ],
            "worker",
        );
        let b = frames(Vec::new(), "");
        let entries = [(&a, 5isize), (&b, 2), (&a, -1)];
        let p = to_profile(
            entries.iter().map(|(f, c)| (*f, *c)),
            ProfileBuilder::new("svc", 0, 1000, 10_101_010),
            ConvertOptions { thread_root: false },
        );
        let folded = crate::model::folded::to_folded(&p, &[]);
        assert_eq!(folded, "[unknown] 2\nmain;main::work;leaf;leaf_inlined 5\n");
        let p = to_profile(
            entries.iter().map(|(f, c)| (*f, *c)),
            ProfileBuilder::new("svc", 0, 1000, 10_101_010),
            ConvertOptions { thread_root: true },
        );
        let folded = crate::model::folded::to_folded(&p, &[]);
        assert_eq!(folded, "7;[unknown] 2\nworker;main;main::work;leaf;leaf_inlined 5\n");
        assert_eq!(p.state_totals(), [7, 0, 0, 0, 0]);
    }

    #[test]
    fn hash_suffix_only_when_it_is_one() {
        assert_eq!(strip_rust_hash("a::b::h0123456789abcdef"), "a::b");
        assert_eq!(strip_rust_hash("a::hello"), "a::hello");
        assert_eq!(strip_rust_hash("a::h0123456789abcdeg"), "a::h0123456789abcdeg");
    }
}
