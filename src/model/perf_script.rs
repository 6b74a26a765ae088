//! `perf script` text (from `perf record -g`) to samples, so that recorded perf data can
//! be brought into hotframe. Each record is a header line (`comm pid[/tid] [cpu]
//! time: [period] event:`) followed by one indented line per frame, leaf first
//! (`addr symbol+off (dso)`), and a blank line. Every record is one RUNNABLE sample
//! (perf's cpu-clock/cycles samples are on-CPU); unknown symbols keep their module.

use super::profile::ProfileBuilder;
use super::state::ThreadState;

/// Why `perf script` text cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PerfScriptError {
    #[error("line {line}: frame line before any sample header (is this `perf script` output?)")]
    FrameBeforeHeader { line: usize },
    #[error("line {line}: sample header without a `seconds.micros:` timestamp: {text:?}")]
    BadHeader { line: usize, text: String },
    #[error("no samples found: expected `perf script` output of a `perf record` file")]
    Empty,
}

/// What the parse found besides the samples.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct PerfScriptSummary {
    /// Records read (each one sample).
    pub samples: u64,
    /// Timestamp of the first record, seconds (perf's clock, not Unix time).
    pub first_s: f64,
    /// Timestamp of the last record, seconds.
    pub last_s: f64,
}

/// The frame name of one `addr symbol+off (dso)` line.
fn frame_name(line: &str) -> String {
    let line = line.trim();
    // Address first, then the symbol (which may contain spaces), then `(dso)`.
    let rest = line.split_once(char::is_whitespace).map(|(_, r)| r.trim_start()).unwrap_or(line);
    let (symbol, dso) = match rest.rfind(" (") {
        Some(at) if rest.ends_with(')') => (&rest[..at], Some(&rest[at + 2..rest.len() - 1])),
        _ => (rest, None),
    };
    let symbol = match symbol.rfind("+0x") {
        Some(at) if symbol[at + 3..].bytes().all(|b| b.is_ascii_hexdigit()) => &symbol[..at],
        _ => symbol,
    };
    if symbol.is_empty() || symbol == "[unknown]" {
        let module = dso.map(|d| d.rsplit('/').next().unwrap_or(d)).filter(|m| !m.is_empty() && *m != "unknown");
        return match module {
            Some(m) => format!("[unknown] {m}"),
            None => "[unknown]".to_string(),
        };
    }
    symbol.to_string()
}

/// The timestamp of a header line: the token ending in `:` that parses as seconds.
fn header_time(line: &str) -> Option<f64> {
    line.split_whitespace()
        .find_map(|t| t.strip_suffix(':').and_then(|n| n.parse::<f64>().ok()).filter(|_| t.contains('.')))
}

/// Adds every record of `text` to `builder` as one RUNNABLE sample each.
pub fn parse_into(text: &str, builder: &mut ProfileBuilder) -> Result<PerfScriptSummary, PerfScriptError> {
    let mut summary = PerfScriptSummary { samples: 0, first_s: f64::INFINITY, last_s: f64::NEG_INFINITY };
    let mut stack: Vec<String> = Vec::new();
    let mut in_record = false;
    let mut flush = |stack: &mut Vec<String>, summary: &mut PerfScriptSummary| {
        if stack.is_empty() {
            // A record without a call chain (perf record without -g) still counts.
            stack.push("[unknown]".to_string());
        }
        stack.reverse();
        builder.add(stack, ThreadState::Runnable, 1);
        stack.clear();
        summary.samples += 1;
    };
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim_end();
        if line.is_empty() {
            if in_record {
                flush(&mut stack, &mut summary);
                in_record = false;
            }
            continue;
        }
        if line.starts_with('#') && !in_record {
            continue;
        }
        if line.starts_with(char::is_whitespace) {
            if !in_record {
                return Err(PerfScriptError::FrameBeforeHeader { line: n + 1 });
            }
            stack.push(frame_name(line));
            continue;
        }
        if in_record {
            flush(&mut stack, &mut summary);
        }
        let at = header_time(line)
            .ok_or_else(|| PerfScriptError::BadHeader { line: n + 1, text: line.chars().take(120).collect() })?;
        summary.first_s = summary.first_s.min(at);
        summary.last_s = summary.last_s.max(at);
        in_record = true;
    }
    if in_record {
        flush(&mut stack, &mut summary);
    }
    if summary.samples == 0 {
        return Err(PerfScriptError::Empty);
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::folded::to_folded;

    #[test]
    fn records_become_root_first_stacks() {
        let text = "\
busy 4242/4243 [001] 12345.100000:   10101010 cpu-clock:pppH: 
\t    5555555551a0 hot_loop+0x20 (/tmp/busy)
\t    555555555200 main+0x10 (/tmp/busy)
\t    7ffff7c29d90 __libc_start_call_main+0x80 (/usr/lib/x86_64-linux-gnu/libc.so.6)

busy 4242 12345.110000: cpu-clock: 
\t    5555555551a0 hot_loop+0x20 (/tmp/busy)
\t    555555555200 main+0x10 (/tmp/busy)
\t    7ffff7c29d90 __libc_start_call_main+0x80 (/usr/lib/x86_64-linux-gnu/libc.so.6)

busy 4242 [000] 12345.300000: 10101010 cpu-clock: 
\t    7f0000001234 [unknown] (/usr/lib/libfoo.so)
\t    ffffffff81000000 std::vector<int>::push_back(int const&)+0x1a ([kernel.kallsyms])
";
        let mut b = ProfileBuilder::new("busy", 0, 1000, 10_101_010);
        let summary = parse_into(text, &mut b).unwrap();
        assert_eq!(summary.samples, 3);
        assert!((summary.last_s - summary.first_s - 0.2).abs() < 1e-9);
        assert_eq!(
            to_folded(&b.finish(), &[]),
            "__libc_start_call_main;main;hot_loop 2\nstd::vector<int>::push_back(int const&);[unknown] libfoo.so 1\n"
        );
    }

    #[test]
    fn garbage_is_refused_with_the_line() {
        let mut b = ProfileBuilder::new("x", 0, 1000, 1);
        assert_eq!(parse_into("\t 1234 main (/bin/x)\n", &mut b), Err(PerfScriptError::FrameBeforeHeader { line: 1 }));
        assert!(matches!(parse_into("main;work 3\n", &mut b), Err(PerfScriptError::BadHeader { line: 1, .. })));
        assert_eq!(parse_into("# comment only\n\n", &mut b), Err(PerfScriptError::Empty));
    }
}
