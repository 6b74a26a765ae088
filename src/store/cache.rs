//! A bounded in-memory cache with two generations, so that the server's memory stays
//! bounded whatever the stored volume: entries go into the young generation; when it
//! is full it becomes the old one and the previous old one is dropped. A hit in the old
//! generation moves the entry back to the young one, so hot entries survive (an
//! approximation of LRU with no per-entry bookkeeping).
//!
//! In: keys and values. Out: values. Must not: grow past `capacity` entries.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};

/// A map of at most `capacity` entries that forgets the least recently used ones.
#[derive(Debug)]
pub struct GenCache<K, V, S> {
    young: HashMap<K, V, S>,
    old: HashMap<K, V, S>,
    half: usize,
}

impl<K: Hash + Eq, V: Clone, S: BuildHasher + Default> GenCache<K, V, S> {
    /// A cache holding at most `capacity` entries (at least 2).
    pub fn new(capacity: usize) -> Self {
        GenCache { young: HashMap::default(), old: HashMap::default(), half: (capacity / 2).max(1) }
    }

    /// The value of `key`, if cached.
    pub fn get(&mut self, key: &K) -> Option<V>
    where
        K: Clone,
    {
        if let Some(v) = self.young.get(key) {
            return Some(v.clone());
        }
        let v = self.old.remove(key)?;
        self.insert(key.clone(), v.clone());
        Some(v)
    }

    /// Caches `value` under `key`.
    pub fn insert(&mut self, key: K, value: V) {
        if self.young.len() >= self.half {
            self.old = std::mem::take(&mut self.young);
        }
        self.young.insert(key, value);
    }

    /// Forgets everything (after a rolled-back transaction, so no cached id points to
    /// a row that was never committed).
    pub fn clear(&mut self) {
        self.young.clear();
        self.old.clear();
    }

    /// Entries held now.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.young.len() + self.old.len()
    }

    /// True when nothing is cached.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::hash_map::RandomState;

    #[test]
    fn stays_bounded_and_keeps_hot_entries() {
        let mut c: GenCache<u32, u32, RandomState> = GenCache::new(10);
        for i in 0..1000 {
            c.insert(i, i * 2);
            // Touching 0 every round keeps it alive however many others come.
            assert_eq!(c.get(&0), Some(0), "round {i}");
            assert!(c.len() <= 10, "len {} at {i}", c.len());
        }
        assert_eq!(c.get(&0), Some(0));
        assert_eq!(c.get(&1), None);
        assert_eq!(c.get(&999), Some(1998));
        c.clear();
        assert!(c.is_empty());
    }
}
