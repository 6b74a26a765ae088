//! Helpers shared by the topic modules.

#![allow(dead_code)]

/// A fresh temporary directory that is removed when dropped.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("create temp dir")
}
