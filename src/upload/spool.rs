//! The on-disk spool: envelopes kept in a directory while the server is unreachable,
//! one file each, named by a sequence number so that the oldest is sent (and, over the
//! byte bound, dropped) first. Files are written to a temporary name and renamed, so a
//! crash leaves either a whole file or none; the spool survives an agent restart.
//!
//! File format: one line of JSON (`EnvelopeMeta`), then the gzip pprof body.
//!
//! In: envelopes. Out: envelopes, oldest first. Must not: talk to the network. One
//! process per directory (an advisory lock says so).

use super::transport::{Envelope, EnvelopeMeta};
use super::UploadError;
use std::collections::VecDeque;
use std::fs::{self, File};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

const SUFFIX: &str = ".hfspool";
const TMP_SUFFIX: &str = ".tmp";

/// A bounded directory of envelopes.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    /// (sequence, size in bytes), oldest first.
    files: VecDeque<(u64, u64)>,
    total_bytes: u64,
    next_seq: u64,
    /// Held for the spool's life: its flock keeps a second agent out.
    _lock: File,
}

/// What a `push` did beyond storing the envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PushOutcome {
    /// Envelopes dropped (oldest first, or the new one if alone over the bound).
    pub dropped: u64,
}

impl Spool {
    /// Opens (creating it if needed) the spool in `dir`, bounded to `max_bytes`, and
    /// picks up the files a previous run left.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Spool, UploadError> {
        let io_err = |cause| UploadError::Spool { dir: dir.to_path_buf(), cause };
        fs::create_dir_all(dir).map_err(io_err)?;
        let lock = File::create(dir.join(".lock")).map_err(io_err)?;
        // SAFETY: flock on a file descriptor we own; no memory is shared.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(UploadError::SpoolInUse(dir.to_path_buf()));
        }
        let mut files = Vec::new();
        for entry in fs::read_dir(dir).map_err(io_err)? {
            let entry = entry.map_err(io_err)?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.ends_with(TMP_SUFFIX) {
                // A write interrupted by a crash: never acknowledged as spooled.
                let _ = fs::remove_file(entry.path());
                continue;
            }
            let Some(seq) = name.strip_suffix(SUFFIX).and_then(|s| s.parse::<u64>().ok()) else {
                continue;
            };
            let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
            files.push((seq, size));
        }
        files.sort_unstable();
        let next_seq = files.last().map(|(s, _)| s + 1).unwrap_or(0);
        let total_bytes = files.iter().map(|(_, size)| size).sum();
        Ok(Spool { dir: dir.to_path_buf(), max_bytes, files: files.into(), total_bytes, next_seq, _lock: lock })
    }

    /// Number of envelopes waiting.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// True when nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Bytes on disk.
    pub fn bytes(&self) -> u64 {
        self.total_bytes
    }

    fn path(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{seq:020}{SUFFIX}"))
    }

    /// Stores `envelope` as the newest file, then drops the oldest files until the
    /// spool is within its byte bound.
    pub fn push(&mut self, envelope: &Envelope) -> Result<PushOutcome, UploadError> {
        let io_err = |cause| UploadError::Spool { dir: self.dir.clone(), cause };
        let meta = serde_json::to_vec(&envelope.meta).map_err(|e| io_err(std::io::Error::other(e)))?;
        let size = (meta.len() + 1 + envelope.body.len()) as u64;
        if size > self.max_bytes {
            return Ok(PushOutcome { dropped: 1 });
        }
        let seq = self.next_seq;
        let path = self.path(seq);
        let tmp = path.with_extension(&TMP_SUFFIX[1..]);
        let write = || -> std::io::Result<()> {
            let mut file = File::create(&tmp)?;
            file.write_all(&meta)?;
            file.write_all(b"\n")?;
            file.write_all(&envelope.body)?;
            file.sync_data()?;
            fs::rename(&tmp, &path)
        };
        if let Err(err) = write() {
            let _ = fs::remove_file(&tmp);
            return Err(io_err(err));
        }
        self.next_seq += 1;
        self.files.push_back((seq, size));
        self.total_bytes += size;
        let mut dropped = 0;
        while self.total_bytes > self.max_bytes {
            match self.files.front() {
                Some(&(oldest, _)) => {
                    self.remove(oldest);
                    dropped += 1;
                }
                None => break,
            }
        }
        Ok(PushOutcome { dropped })
    }

    /// The oldest envelope and its sequence number. A file that cannot be read or
    /// parsed is deleted and reported as `Err` so the caller can count it as dropped.
    pub fn oldest(&mut self) -> Option<Result<(u64, Envelope), UploadError>> {
        let &(seq, _) = self.files.front()?;
        let path = self.path(seq);
        let parsed = fs::read(&path)
            .map_err(|cause| UploadError::Spool { dir: self.dir.clone(), cause })
            .and_then(|bytes| parse_file(&bytes).ok_or_else(|| UploadError::CorruptSpoolFile(path.clone())));
        match parsed {
            Ok(envelope) => Some(Ok((seq, envelope))),
            Err(err) => {
                self.remove(seq);
                Some(Err(err))
            }
        }
    }

    /// Deletes envelope `seq` (sent, refused or dropped).
    pub fn remove(&mut self, seq: u64) {
        if let Some(pos) = self.files.iter().position(|(s, _)| *s == seq) {
            if let Some((_, size)) = self.files.remove(pos) {
                self.total_bytes -= size;
            }
            let _ = fs::remove_file(self.path(seq));
        }
    }
}

fn parse_file(bytes: &[u8]) -> Option<Envelope> {
    let newline = bytes.iter().position(|b| *b == b'\n')?;
    let meta: EnvelopeMeta = serde_json::from_slice(&bytes[..newline]).ok()?;
    Some(Envelope { meta, body: bytes[newline + 1..].to_vec() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn envelope(n: u8, size: usize) -> Envelope {
        let mut labels = BTreeMap::new();
        labels.insert("n".to_string(), n.to_string());
        Envelope { meta: EnvelopeMeta { service: "svc".into(), labels }, body: vec![n; size] }
    }

    #[test]
    fn keeps_order_across_reopen_and_drops_oldest_over_bound() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut spool = Spool::open(dir.path(), 10_000).unwrap();
            for n in 0..3 {
                assert_eq!(spool.push(&envelope(n, 1000)).unwrap().dropped, 0);
            }
            assert_eq!(spool.len(), 3);
        }
        let mut spool = Spool::open(dir.path(), 2_500).unwrap();
        assert_eq!(spool.len(), 3, "files survive a restart");
        let outcome = spool.push(&envelope(3, 1000)).unwrap();
        assert_eq!(outcome.dropped, 2);
        assert!(spool.bytes() <= 2_500);
        let (seq, first) = spool.oldest().unwrap().unwrap();
        assert_eq!(first.meta.labels["n"], "2");
        assert_eq!(first.body, vec![2u8; 1000]);
        spool.remove(seq);
        let (_, second) = spool.oldest().unwrap().unwrap();
        assert_eq!(second.meta.labels["n"], "3");
    }

    #[test]
    fn a_second_process_cannot_share_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let _first = Spool::open(dir.path(), 1000).unwrap();
        assert!(matches!(Spool::open(dir.path(), 1000), Err(UploadError::SpoolInUse(_))));
    }

    #[test]
    fn a_corrupt_file_is_dropped_not_sent() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(format!("{:020}{SUFFIX}", 7)), b"not json").unwrap();
        let mut spool = Spool::open(dir.path(), 1000).unwrap();
        assert!(matches!(spool.oldest(), Some(Err(UploadError::CorruptSpoolFile(_)))));
        assert!(spool.is_empty());
    }
}
