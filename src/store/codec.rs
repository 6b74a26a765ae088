//! Byte formats of the store: varints, the sample blob of a profile or rollup, the
//! frame-id list of an interned stack, a rollup's coverage intervals, and the stable
//! 64-bit hashes used to look up frames and stacks.
//!
//! In: (stack id, state, count) entries, frame ids or `[start, end)` intervals. Out:
//! bytes, and back. Must not:
//! touch the database; decoding must never panic or allocate without bound on
//! corrupt input (it returns `StoreError::Corrupt`).
//!
//! Sample blob: one format byte, then the entry stream `varint(n)` followed by `n`
//! pairs `varint(key delta), varint(count)`, where `key = stack_id << 3 | state index`,
//! keys strictly ascending and the first delta taken from 0. Format 1: the stream is
//! raw-deflated (raw profiles: sorting makes deltas small, deflate squeezes the rest).
//! Format 2: the stream as is (rollups, which are few but read by every long query,
//! so they skip the inflate).

use super::StoreError;
use crate::model::ThreadState;
use flate2::read::DeflateDecoder;
use flate2::write::DeflateEncoder;
use flate2::Compression;
use std::io::{Read, Write};

/// First byte of a deflated sample blob.
const FORMAT_DEFLATE: u8 = 1;
/// First byte of a plain sample blob.
const FORMAT_PLAIN: u8 = 2;

/// A corrupt blob cannot make us inflate more than this (a sane blob of a 200,000-stack
/// profile is a few MiB).
const MAX_INFLATED: u64 = 256 << 20;

/// Appends `v` as an LEB128 varint.
pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads a varint at `*pos`, advancing it; `None` if truncated or over 64 bits.
pub fn get_varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v: u64 = 0;
    let mut shift = 0u32;
    loop {
        let b = *buf.get(*pos)?;
        *pos += 1;
        if shift == 63 && b > 1 {
            return None;
        }
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
        shift += 7;
        if shift > 63 {
            return None;
        }
    }
}

/// The merge key of a (stack, state): sorts by stack, then state.
pub fn entry_key(stack_id: i64, state: ThreadState) -> u64 {
    ((stack_id as u64) << 3) | state.index() as u64
}

/// Splits a merge key back into (stack id, state).
pub fn split_key(key: u64) -> Result<(i64, ThreadState), StoreError> {
    let state = ThreadState::from_index((key & 7) as usize)
        .ok_or_else(|| StoreError::Corrupt(format!("sample entry has thread state index {}", key & 7)))?;
    Ok(((key >> 3) as i64, state))
}

/// Sorts entries `(key, count)` by key and merges the counts of equal keys (saturating),
/// as `encode_entries` needs them.
pub fn sort_and_merge(entries: &mut Vec<(u64, u64)>) {
    entries.sort_unstable_by_key(|e| e.0);
    entries.dedup_by(|later, kept| {
        if later.0 == kept.0 {
            kept.1 = kept.1.saturating_add(later.1);
            true
        } else {
            false
        }
    });
}

/// Encodes entries `(key, count)` that are sorted by key with no duplicates, deflated
/// at `level` (0-9), or plain with `None`.
pub fn encode_entries(entries: &[(u64, u64)], level: Option<u32>) -> Result<Vec<u8>, StoreError> {
    let mut plain = Vec::with_capacity(entries.len() * 3 + 8);
    plain.push(FORMAT_PLAIN);
    put_varint(&mut plain, entries.len() as u64);
    let mut prev = 0u64;
    for &(key, count) in entries {
        put_varint(&mut plain, key.wrapping_sub(prev));
        put_varint(&mut plain, count);
        prev = key;
    }
    let Some(level) = level else { return Ok(plain) };
    let mut out = Vec::with_capacity(plain.len() / 2 + 16);
    out.push(FORMAT_DEFLATE);
    let mut enc = DeflateEncoder::new(out, Compression::new(level));
    enc.write_all(&plain[1..])?;
    Ok(enc.finish()?)
}

/// Calls `visit(key, count)` for every entry of a sample blob, in key order.
/// `scratch` is reused between calls for inflating.
pub fn decode_entries(blob: &[u8], scratch: &mut Vec<u8>, mut visit: impl FnMut(u64, u64)) -> Result<(), StoreError> {
    let buf: &[u8] = match blob.first() {
        Some(&FORMAT_PLAIN) => &blob[1..],
        Some(&FORMAT_DEFLATE) => {
            scratch.clear();
            DeflateDecoder::new(&blob[1..])
                .take(MAX_INFLATED)
                .read_to_end(scratch)
                .map_err(|e| StoreError::Corrupt(format!("sample blob does not inflate: {e}")))?;
            scratch
        }
        Some(other) => return Err(StoreError::Corrupt(format!("sample blob has unknown format byte {other}"))),
        None => return Err(StoreError::Corrupt("sample blob is empty".into())),
    };
    let truncated = || StoreError::Corrupt("sample blob is truncated".into());
    let mut pos = 0;
    let n = get_varint(buf, &mut pos).ok_or_else(truncated)?;
    let mut key = 0u64;
    for i in 0..n {
        let delta = get_varint(buf, &mut pos).ok_or_else(truncated)?;
        let count = get_varint(buf, &mut pos).ok_or_else(truncated)?;
        if i > 0 && delta == 0 {
            return Err(StoreError::Corrupt("sample blob repeats an entry".into()));
        }
        key = key.checked_add(delta).ok_or_else(|| StoreError::Corrupt("sample blob key overflows".into()))?;
        if key & 7 >= ThreadState::ALL.len() as u64 {
            return Err(StoreError::Corrupt(format!("sample entry has thread state index {}", key & 7)));
        }
        visit(key, count);
    }
    if pos != buf.len() {
        return Err(StoreError::Corrupt(format!("sample blob has {} trailing bytes", buf.len() - pos)));
    }
    Ok(())
}

/// Encodes a stack's global frame ids (root first).
pub fn encode_frame_ids(ids: &[i64], out: &mut Vec<u8>) {
    out.clear();
    for &id in ids {
        put_varint(out, id as u64);
    }
}

/// Decodes a stack's frame ids.
pub fn decode_frame_ids(bytes: &[u8], out: &mut Vec<i64>) -> Result<(), StoreError> {
    out.clear();
    let mut pos = 0;
    while pos < bytes.len() {
        let id =
            get_varint(bytes, &mut pos).ok_or_else(|| StoreError::Corrupt("stack frame list is truncated".into()))?;
        out.push(id as i64);
    }
    Ok(())
}

/// Encodes sorted disjoint `[start, end)` intervals (ms): `varint(n)`, then per interval
/// `varint(zigzag(start - previous end))` (the first from 0) and `varint(end - start)`.
pub fn encode_intervals(intervals: &[[i64; 2]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + intervals.len() * 4);
    put_varint(&mut out, intervals.len() as u64);
    let mut prev = 0i64;
    for &[start, end] in intervals {
        let gap = start.wrapping_sub(prev);
        put_varint(&mut out, ((gap << 1) ^ (gap >> 63)) as u64);
        put_varint(&mut out, end.wrapping_sub(start) as u64);
        prev = end;
    }
    out
}

/// Calls `visit(start, end)` for every interval of `encode_intervals`' bytes, in order.
pub fn decode_intervals(bytes: &[u8], mut visit: impl FnMut(i64, i64)) -> Result<(), StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("coverage intervals are {what}"));
    let mut pos = 0;
    let n = get_varint(bytes, &mut pos).ok_or_else(|| corrupt("truncated"))?;
    let mut prev = 0i64;
    for _ in 0..n {
        let zigzag = get_varint(bytes, &mut pos).ok_or_else(|| corrupt("truncated"))?;
        let len = get_varint(bytes, &mut pos).ok_or_else(|| corrupt("truncated"))?;
        let gap = (zigzag >> 1) as i64 ^ -((zigzag & 1) as i64);
        let start = prev.checked_add(gap).ok_or_else(|| corrupt("out of range"))?;
        let end = i64::try_from(len).ok().and_then(|l| start.checked_add(l)).ok_or_else(|| corrupt("out of range"))?;
        visit(start, end);
        prev = end;
    }
    if pos != bytes.len() {
        return Err(corrupt("followed by trailing bytes"));
    }
    Ok(())
}

/// A stable 64-bit hash (the values are stored in the database, so it must never
/// change between builds; `std`'s hasher makes no such promise). Word-at-a-time
/// multiply-xorshift with a splitmix64 finish; `seed` gives independent hashes.
pub fn hash64(bytes: &[u8], seed: u64) -> u64 {
    hash64_pair(bytes, seed, seed).0
}

/// `(hash64(bytes, a), hash64(bytes, b))` in one pass: the two multiply chains are
/// independent, so the CPU runs them side by side.
pub fn hash64_pair(bytes: &[u8], a: u64, b: u64) -> (u64, u64) {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    let len = (bytes.len() as u64).wrapping_mul(K);
    let (mut h, mut g) = (a ^ len, b ^ len);
    let mut chunks = bytes.chunks_exact(8);
    let mut mix = |w: u64| {
        h = (h ^ w).wrapping_mul(K);
        h ^= h >> 29;
        g = (g ^ w).wrapping_mul(K);
        g ^= g >> 29;
    };
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        mix(u64::from_le_bytes(w));
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut w = [0u8; 8];
        w[..rest.len()].copy_from_slice(rest);
        mix(u64::from_le_bytes(w));
    }
    (splitmix(h), splitmix(g))
}

/// splitmix64's finaliser: spreads every input bit over the output.
fn splitmix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Seed of the hash stored in the database.
pub const SEED_STORED: u64 = 0x6f74_6672_616d_6531;
/// Seed of the second hash the in-memory caches keep to tell collisions apart.
pub const SEED_CHECK: u64 = 0x2545_f491_4f6c_dd1d;

/// A `Hasher` for integer keys that are already well spread or small: one multiply.
/// The merge maps of a query see millions of inserts; SipHash would dominate.
#[derive(Default, Clone, Copy)]
pub struct IntHasher(u64);

impl std::hash::Hasher for IntHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0 = hash64(bytes, self.0);
    }
    fn write_u64(&mut self, v: u64) {
        let m = (v ^ self.0).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 = m ^ (m >> 32);
    }
    fn write_i64(&mut self, v: i64) {
        self.write_u64(v as u64)
    }
    fn write_u32(&mut self, v: u32) {
        self.write_u64(u64::from(v))
    }
    fn write_usize(&mut self, v: usize) {
        self.write_u64(v as u64)
    }
}

/// `HashMap` with `IntHasher`.
pub type IntMap<K, V> = std::collections::HashMap<K, V, std::hash::BuildHasherDefault<IntHasher>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_and_refuse_garbage() {
        let mut buf = Vec::new();
        for v in [0, 1, 127, 128, 300, u64::from(u32::MAX), u64::MAX] {
            buf.clear();
            put_varint(&mut buf, v);
            let mut pos = 0;
            assert_eq!(get_varint(&buf, &mut pos), Some(v));
            assert_eq!(pos, buf.len());
        }
        assert_eq!(get_varint(&[0x80, 0x80], &mut 0), None);
        assert_eq!(get_varint(&[0xff; 11], &mut 0), None);
    }

    #[test]
    fn entries_round_trip() {
        let entries: Vec<(u64, u64)> = vec![
            (entry_key(3, ThreadState::Runnable), 5),
            (entry_key(3, ThreadState::Io), 1),
            (entry_key(900, ThreadState::Waiting), u64::MAX),
        ];
        for level in [Some(6), None] {
            let blob = encode_entries(&entries, level).unwrap();
            let mut got = Vec::new();
            decode_entries(&blob, &mut Vec::new(), |k, c| got.push((k, c))).unwrap();
            assert_eq!(got, entries, "{level:?}");
        }
        assert_eq!(split_key(entries[1].0).unwrap(), (3, ThreadState::Io));
    }

    #[test]
    fn corrupt_blobs_are_errors() {
        let blob = encode_entries(&[(entry_key(7, ThreadState::Blocked), 2)], Some(6)).unwrap();
        let plain =
            encode_entries(&[(entry_key(7, ThreadState::Blocked), 2), (entry_key(9, ThreadState::Io), 1)], None)
                .unwrap();
        let mut scratch = Vec::new();
        let bad_state = vec![2u8, 1, 7, 1];
        let repeated = vec![2u8, 2, 8, 1, 0, 1];
        for bad in [
            vec![],
            vec![9u8, 1, 2],
            vec![1u8, 0xff, 0xff, 0xff],
            blob[..blob.len() - 1].to_vec(),
            plain[..plain.len() - 1].to_vec(),
            [&plain[..], &[0]].concat(),
            bad_state,
            repeated,
        ] {
            assert!(matches!(decode_entries(&bad, &mut scratch, |_, _| {}), Err(StoreError::Corrupt(_))), "{bad:?}");
        }
    }

    #[test]
    fn intervals_round_trip_and_refuse_garbage() {
        let intervals = vec![[-5_000, -1_000], [1_700_000_000_000, 1_700_000_010_000], [1_700_000_020_000, i64::MAX]];
        let bytes = encode_intervals(&intervals);
        let mut got = Vec::new();
        decode_intervals(&bytes, |s, e| got.push([s, e])).unwrap();
        assert_eq!(got, intervals);
        decode_intervals(&encode_intervals(&[]), |_, _| panic!("no interval")).unwrap();
        // Two intervals whose second start overflows i64.
        let mut overflow = vec![2u8];
        for v in [0u64, i64::MAX as u64, 2, 1] {
            put_varint(&mut overflow, v);
        }
        for bad in [vec![], vec![1u8], vec![1u8, 2], [&bytes[..], &[0]].concat(), overflow] {
            assert!(matches!(decode_intervals(&bad, |_, _| {}), Err(StoreError::Corrupt(_))), "{bad:?}");
        }
    }

    #[test]
    fn hash_is_stable_and_seeded() {
        // Stored in databases: a change here breaks every existing store.
        assert_eq!(hash64(b"main", SEED_STORED), hash64(b"main", SEED_STORED));
        assert_ne!(hash64(b"main", SEED_STORED), hash64(b"main", SEED_CHECK));
        assert_ne!(hash64(b"", SEED_STORED), hash64(&[0], SEED_STORED));
        assert_eq!(hash64(b"hotframe frame name", SEED_STORED), 0x892b_165e_e3c2_89a7);
        let text = b"a longer name that spans several words::and_a_tail";
        assert_eq!(hash64_pair(text, SEED_STORED, SEED_CHECK), (hash64(text, SEED_STORED), hash64(text, SEED_CHECK)));
    }
}
