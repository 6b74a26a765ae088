//! `Coverage`: when a service was observed, per host, as merged `[start, end)` intervals
//! of wall time (the union of its profiles' windows, whatever the number of processes,
//! threads, series or agents that sent them).
//!
//! In: profile windows (or intervals a rollup kept) with the `host` label they came
//! with. Out: per host, sorted disjoint intervals and their length in seconds. Must
//! not: decide what the cost window `W` is (that is `cost::observed_window`, which
//! reads this), do I/O or read a clock.

use serde::{Deserialize, Serialize};

/// The observed wall time of one host: sorted intervals that neither overlap nor touch.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostCoverage {
    /// The `host` label; `None` for profiles without one (together they are one host).
    pub host: Option<String>,
    /// `[start, end)` in Unix ms, ascending, disjoint and not touching.
    pub intervals: Vec<[i64; 2]>,
}

impl HostCoverage {
    /// Wall seconds covered: the length of the union.
    pub fn seconds(&self) -> f64 {
        self.intervals.iter().map(|[s, e]| (e - s) as f64).sum::<f64>() / 1000.0
    }
}

/// Observed wall time per host, hosts sorted (`None` first).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Coverage {
    hosts: Vec<HostCoverage>,
}

impl Coverage {
    /// Adds `[start_ms, end_ms)` on `host`; empty or reversed intervals add nothing.
    pub fn add(&mut self, host: Option<&str>, start_ms: i64, end_ms: i64) {
        if end_ms <= start_ms {
            return;
        }
        let i = match self.hosts.binary_search_by(|h| h.host.as_deref().cmp(&host)) {
            Ok(i) => i,
            Err(i) => {
                self.hosts.insert(i, HostCoverage { host: host.map(str::to_string), intervals: Vec::new() });
                i
            }
        };
        add_interval(&mut self.hosts[i].intervals, start_ms, end_ms);
    }

    /// Adds every interval of `other`.
    pub fn extend(&mut self, other: &Coverage) {
        for h in &other.hosts {
            for &[s, e] in &h.intervals {
                self.add(h.host.as_deref(), s, e);
            }
        }
    }

    /// Per host, in host order.
    pub fn per_host(&self) -> &[HostCoverage] {
        &self.hosts
    }

    /// Hosts with any observed time (Hp).
    pub fn hosts(&self) -> u32 {
        self.hosts.len() as u32
    }

    /// True when nothing was observed.
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }
}

/// Inserts `[start, end)` into sorted disjoint non-touching `intervals`, merging what it
/// overlaps or touches. Appending in time order (the usual case) costs O(log n).
pub fn add_interval(intervals: &mut Vec<[i64; 2]>, start: i64, end: i64) {
    if end <= start {
        return;
    }
    // First interval that ends at or after `start` (it touches or overlaps, or lies after).
    let lo = intervals.partition_point(|iv| iv[1] < start);
    // Past the last interval that starts at or before `end`.
    let hi = intervals.partition_point(|iv| iv[0] <= end);
    if lo == hi {
        intervals.insert(lo, [start, end]);
    } else {
        let merged = [start.min(intervals[lo][0]), end.max(intervals[hi - 1][1])];
        intervals[lo] = merged;
        intervals.drain(lo + 1..hi);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn union(list: &[(i64, i64)]) -> Vec<[i64; 2]> {
        let mut v = Vec::new();
        for &(s, e) in list {
            add_interval(&mut v, s, e);
        }
        v
    }

    #[test]
    fn overlaps_merge_gaps_stay() {
        // Fourteen processes over the same 30 s: one interval of 30 s, not 420 s.
        let same: Vec<(i64, i64)> = (0..14).map(|_| (1_000, 31_000)).collect();
        assert_eq!(union(&same), vec![[1_000, 31_000]]);
        // Overlapping, touching, contained, out of order, and a gap.
        assert_eq!(
            union(&[(50, 60), (0, 10), (10, 20), (15, 30), (70, 80), (12, 14), (40, 45)]),
            vec![[0, 30], [40, 45], [50, 60], [70, 80]]
        );
        // One interval bridging several.
        assert_eq!(union(&[(0, 10), (20, 30), (40, 50), (5, 45)]), vec![[0, 50]]);
        // Empty and reversed intervals add nothing.
        assert_eq!(union(&[(5, 5), (9, 3)]), Vec::<[i64; 2]>::new());
    }

    #[test]
    fn hosts_are_counted_apart() {
        let mut c = Coverage::default();
        // Host a: two processes, [0, 10 s) and [5 s, 20 s): 20 s. Host b: [0, 10 s) and
        // [30 s, 40 s) with a gap: 20 s. No host label: one more host, 5 s.
        c.add(Some("a"), 0, 10_000);
        c.add(Some("b"), 0, 10_000);
        c.add(Some("a"), 5_000, 20_000);
        c.add(Some("b"), 30_000, 40_000);
        c.add(None, 0, 5_000);
        c.add(None, 1_000, 2_000);
        assert_eq!(c.hosts(), 3);
        let seconds: Vec<(Option<&str>, f64)> = c.per_host().iter().map(|h| (h.host.as_deref(), h.seconds())).collect();
        assert_eq!(seconds, vec![(None, 5.0), (Some("a"), 20.0), (Some("b"), 20.0)]);
        let mut d = Coverage::default();
        d.extend(&c);
        d.extend(&c);
        assert_eq!(d, c);
        assert!(Coverage::default().is_empty());
    }
}
