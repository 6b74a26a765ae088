//! Folded stacks, the text format of FlameGraph and inferno: one line per stack,
//! frames root first separated by `;`, a space, then the sample count. Pyroscope's
//! `lines` format is the same without counts (each line is one sample).

use super::profile::{Budget, ModelError, Profile, ProfileBuilder};
use super::state::ThreadState;
use std::collections::BTreeMap;
use std::fmt::Write;

/// Adds every line of folded `text` to `builder` as samples in `state`.
/// Blank lines and `#` comments are skipped; a line without a count is an error.
pub fn parse_folded_into(text: &str, state: ThreadState, builder: &mut ProfileBuilder) -> Result<(), ModelError> {
    parse_text_bounded(text, TextFormat::Folded, state, builder, usize::MAX, &mut Budget::new(usize::MAX))
}

/// Adds every line of Pyroscope `lines` text (one stack per line, one sample each).
pub fn parse_lines_into(text: &str, state: ThreadState, builder: &mut ProfileBuilder) -> Result<(), ModelError> {
    parse_text_bounded(text, TextFormat::Lines, state, builder, usize::MAX, &mut Budget::new(usize::MAX))
}

/// The two text formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextFormat {
    /// `frame;frame;... COUNT` per line, `#` comments.
    Folded,
    /// `frame;frame;...` per line, one sample each.
    Lines,
}

/// `parse_folded_into` / `parse_lines_into` for untrusted text: a stack deeper than
/// `max_depth` frames is refused before it is built, and what the builder keeps is
/// charged to `budget`, so that a body cannot make the parser hold many times its size.
pub fn parse_text_bounded(
    text: &str,
    format: TextFormat,
    state: ThreadState,
    builder: &mut ProfileBuilder,
    max_depth: usize,
    budget: &mut Budget,
) -> Result<(), ModelError> {
    budget.start_builder();
    let mut frames = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim_end_matches('\r').trim();
        if line.is_empty() || (format == TextFormat::Folded && line.starts_with('#')) {
            continue;
        }
        if format == TextFormat::Lines {
            split_frames(line, max_depth, &mut frames)?;
            builder.add(&frames, state, 1);
            budget.charge_growth(builder)?;
            continue;
        }
        let (stack, count) = line.rsplit_once(' ').ok_or_else(|| ModelError::BadFolded {
            line: n + 1,
            reason: "expected `frame;frame;... COUNT`".to_string(),
        })?;
        let count: u64 = count.trim().parse().map_err(|_| ModelError::BadFolded {
            line: n + 1,
            reason: format!("count {count:?} is not a non-negative integer"),
        })?;
        split_frames(stack.trim(), max_depth, &mut frames)?;
        if frames.is_empty() {
            return Err(ModelError::BadFolded { line: n + 1, reason: "empty stack".to_string() });
        }
        builder.add(&frames, state, count);
        budget.charge_growth(builder)?;
    }
    Ok(())
}

/// The non-empty `;`-separated frames of `stack` into `out`, refusing more than
/// `max_depth` before collecting them.
fn split_frames<'a>(stack: &'a str, max_depth: usize, out: &mut Vec<&'a str>) -> Result<(), ModelError> {
    out.clear();
    let mut frames = stack.split(';').filter(|f| !f.is_empty());
    for frame in frames.by_ref() {
        if out.len() == max_depth {
            return Err(ModelError::StackTooDeep { got: max_depth + 1 + frames.count(), max: max_depth });
        }
        out.push(frame);
    }
    Ok(())
}
/// Writes `profile` as folded text, keeping only samples whose state is in `states`
/// (all states when empty). Stacks are merged across states and sorted, so the output
/// is stable.
pub fn to_folded(profile: &Profile, states: &[ThreadState]) -> String {
    let mut merged: BTreeMap<String, u64> = BTreeMap::new();
    for s in &profile.samples {
        if !states.is_empty() && !states.contains(&s.state) {
            continue;
        }
        let key = profile.stack_names(s.stack).map(sanitize).collect::<Vec<_>>().join(";");
        *merged.entry(key).or_default() += s.count;
    }
    let mut out = String::new();
    for (stack, count) in merged {
        if count > 0 {
            let _ = writeln!(out, "{stack} {count}");
        }
    }
    out
}

/// A frame name that cannot break the folded syntax (no `;` or newline).
fn sanitize(name: &str) -> std::borrow::Cow<'_, str> {
    if name.contains([';', '\n', '\r']) {
        std::borrow::Cow::Owned(name.replace(';', ":").replace(['\n', '\r'], " "))
    } else {
        std::borrow::Cow::Borrowed(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folded_round_trip() {
        let text = "main;work;hot 70\nmain;work;warm 30\n# comment\n\nmain;a b c 1\n";
        let mut b = ProfileBuilder::new("svc", 0, 1000, 10_000_000);
        parse_folded_into(text, ThreadState::Runnable, &mut b).unwrap();
        let p = b.finish();
        assert_eq!(p.total_samples(), 101);
        assert_eq!(to_folded(&p, &[]), "main;a b c 1\nmain;work;hot 70\nmain;work;warm 30\n");
        assert_eq!(to_folded(&p, &[ThreadState::Blocked]), "");
    }

    #[test]
    fn folded_errors_name_the_line() {
        let mut b = ProfileBuilder::new("svc", 0, 1000, 1);
        let err = parse_folded_into("a;b 1\na;b x\n", ThreadState::Runnable, &mut b).unwrap_err();
        assert_eq!(err, ModelError::BadFolded { line: 2, reason: "count \"x\" is not a non-negative integer".into() });
        assert!(parse_folded_into("nocount\n", ThreadState::Runnable, &mut b).is_err());
    }

    #[test]
    fn bounded_parsing_refuses_before_building() {
        let deep = format!("{} 1\n", "a;".repeat(1_000_000));
        let mut b = ProfileBuilder::new("svc", 0, 1000, 1);
        let folded = |text: &str, b: &mut ProfileBuilder, depth: usize, budget: usize| {
            parse_text_bounded(text, TextFormat::Folded, ThreadState::Runnable, b, depth, &mut Budget::new(budget))
        };
        let err = folded(&deep, &mut b, 1024, 1 << 20);
        assert_eq!(err, Err(ModelError::StackTooDeep { got: 1_000_000, max: 1024 }));
        assert_eq!(b.held_bytes(), 0, "nothing was built");
        let wide: String = (0..10_000).map(|i| format!("main;f{i} 1\n")).collect();
        let err = folded(&wide, &mut b, 1024, 64 << 10);
        assert_eq!(err, Err(ModelError::OverBudget { max: 64 << 10 }));
        let lines = TextFormat::Lines;
        let err = parse_text_bounded(&wide, lines, ThreadState::Runnable, &mut b, 1, &mut Budget::new(1 << 30));
        assert!(matches!(err, Err(ModelError::StackTooDeep { max: 1, .. })));
    }

    #[test]
    fn lines_count_one_each() {
        let mut b = ProfileBuilder::new("svc", 0, 1000, 1);
        parse_lines_into("a;b\na;b\na;c\n", ThreadState::Runnable, &mut b).unwrap();
        assert_eq!(to_folded(&b.finish(), &[]), "a;b 2\na;c 1\n");
    }
}
