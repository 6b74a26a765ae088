//! Folded stacks, the text format of FlameGraph and inferno: one line per stack,
//! frames root first separated by `;`, a space, then the sample count. Pyroscope's
//! `lines` format is the same without counts (each line is one sample).

use super::profile::{ModelError, Profile, ProfileBuilder};
use super::state::ThreadState;
use std::collections::BTreeMap;
use std::fmt::Write;

/// Adds every line of folded `text` to `builder` as samples in `state`.
/// Blank lines and `#` comments are skipped; a line without a count is an error.
pub fn parse_folded_into(text: &str, state: ThreadState, builder: &mut ProfileBuilder) -> Result<(), ModelError> {
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim_end_matches('\r').trim();
        if line.is_empty() || line.starts_with('#') {
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
        let frames: Vec<&str> = stack.trim().split(';').filter(|f| !f.is_empty()).collect();
        if frames.is_empty() {
            return Err(ModelError::BadFolded { line: n + 1, reason: "empty stack".to_string() });
        }
        builder.add(&frames, state, count);
    }
    Ok(())
}

/// Adds every line of Pyroscope `lines` text (one stack per line, one sample each).
pub fn parse_lines_into(text: &str, state: ThreadState, builder: &mut ProfileBuilder) -> Result<(), ModelError> {
    for line in text.lines() {
        let line = line.trim_end_matches('\r').trim();
        if line.is_empty() {
            continue;
        }
        let frames: Vec<&str> = line.split(';').filter(|f| !f.is_empty()).collect();
        builder.add(&frames, state, 1);
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
    fn lines_count_one_each() {
        let mut b = ProfileBuilder::new("svc", 0, 1000, 1);
        parse_lines_into("a;b\na;b\na;c\n", ThreadState::Runnable, &mut b).unwrap();
        assert_eq!(to_folded(&b.finish(), &[]), "a;b 2\na;c 1\n");
    }
}
