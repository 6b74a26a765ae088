//! The shared harness's own checks (tests/it/common.rs): the skip-or-fail decision for
//! missing preconditions such as root, `eventually`, and the golden files' diff hint.

use crate::common::{decide, diff_hint, eventually, Precondition};
use std::time::Duration;

#[test]
fn a_missing_precondition_skips_on_a_developer_machine_and_fails_in_ci() {
    assert_eq!(decide(true, None), Precondition::Run);
    assert_eq!(decide(true, Some("true")), Precondition::Run);
    assert_eq!(decide(false, None), Precondition::Skip);
    assert_eq!(decide(false, Some("")), Precondition::Skip);
    assert_eq!(decide(false, Some("false")), Precondition::Skip);
    assert_eq!(decide(false, Some("0")), Precondition::Skip);
    assert_eq!(decide(false, Some("true")), Precondition::Fail);
    assert_eq!(decide(false, Some("1")), Precondition::Fail);
}

#[test]
fn eventually_returns_the_first_ready_value_and_names_what_timed_out() {
    let mut calls = 0;
    let got = eventually("the third call", Duration::from_secs(5), || {
        calls += 1;
        (calls >= 3).then_some(calls)
    });
    assert_eq!(got, 3);
    let err: Result<(), String> = Err("still 2 of 3".into());
    let panic = std::panic::catch_unwind(|| eventually("three things", Duration::from_millis(30), || err.clone()))
        .expect_err("times out");
    let message = panic.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(message.contains("waiting for three things") && message.contains("still 2 of 3"), "{message}");
}

#[test]
fn the_diff_hint_shows_the_first_changed_line() {
    let hint = diff_hint("a\nb\nc\nd\n", "a\nb\nX\nd\n");
    assert!(hint.contains("line 3") && hint.contains("  -c") && hint.contains("  +X"), "{hint}");
    assert!(diff_hint("a\n", "a").contains("final newline"));
}
