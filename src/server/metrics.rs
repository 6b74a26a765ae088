//! The server's own health as Prometheus text: ingested profiles, bytes and samples,
//! rejects by reason, a request latency histogram per route, store size.
//!
//! In: counts from handlers and the request middleware. Out: the text exposition
//! format. Must not: grow without bound (routes are the matched patterns, reasons are
//! static codes).

use crate::store::StoreStats;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Upper bounds of the latency buckets, seconds.
const LATENCY_BUCKETS: [f64; 12] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

#[derive(Debug, Default, Clone)]
struct Histogram {
    buckets: [u64; LATENCY_BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// Counters shared by every request.
#[derive(Debug, Default)]
pub struct Metrics {
    profiles: AtomicU64,
    bytes: AtomicU64,
    samples: AtomicU64,
    rejects: Mutex<BTreeMap<crate::model::Reason, u64>>,
    /// 1 while the last write found the store's disk full.
    disk_full: std::sync::atomic::AtomicBool,
    latency: Mutex<BTreeMap<(String, u16), Histogram>>,
}

impl Metrics {
    /// Counts one stored profile of `bytes` body bytes and `samples` samples.
    pub fn ingested(&self, bytes: u64, samples: u64) {
        self.profiles.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        self.samples.fetch_add(samples, Ordering::Relaxed);
    }

    /// Counts one refused ingest request.
    pub fn rejected(&self, reason: crate::model::Reason) {
        if let Ok(mut map) = self.rejects.lock() {
            *map.entry(reason).or_default() += 1;
        }
    }

    /// Records one request on `route` (the matched pattern) answered with `status`.
    pub fn observe(&self, route: &str, status: u16, seconds: f64) {
        let Ok(mut map) = self.latency.lock() else { return };
        let h = map.entry((route.to_string(), status)).or_default();
        h.count += 1;
        h.sum += seconds;
        for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
            if seconds <= *bound {
                h.buckets[i] += 1;
            }
        }
    }

    /// Records whether the last write found the disk full; logs the changes.
    pub fn disk_full(&self, full: bool) {
        let was = self.disk_full.swap(full, Ordering::Relaxed);
        match (was, full) {
            (false, true) => tracing::error!("the store's disk is full: ingest answers 507 until space is freed"),
            (true, false) => tracing::warn!("the store's disk has space again: ingest resumed"),
            _ => {}
        }
    }

    /// Profiles stored since start.
    pub fn profiles_ingested(&self) -> u64 {
        self.profiles.load(Ordering::Relaxed)
    }

    /// The exposition text; `store` is None when its stats could not be read.
    pub fn render(&self, store: Option<&StoreStats>) -> String {
        let mut out = String::new();
        let counter = |out: &mut String, name: &str, help: &str, value: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}");
        };
        counter(
            &mut out,
            "hotframe_ingested_profiles_total",
            "Profiles stored.",
            self.profiles.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "hotframe_ingested_bytes_total",
            "Request body bytes of stored profiles.",
            self.bytes.load(Ordering::Relaxed),
        );
        counter(&mut out, "hotframe_ingested_samples_total", "Samples stored.", self.samples.load(Ordering::Relaxed));
        let _ = writeln!(
            out,
            "# HELP hotframe_store_disk_full 1 while the store's disk is full (the last write found no space).\n\
             # TYPE hotframe_store_disk_full gauge\nhotframe_store_disk_full {}",
            u8::from(self.disk_full.load(Ordering::Relaxed))
        );

        let _ = writeln!(out, "# HELP hotframe_ingest_rejects_total Ingest requests refused, by reason.");
        let _ = writeln!(out, "# TYPE hotframe_ingest_rejects_total counter");
        if let Ok(map) = self.rejects.lock() {
            for (reason, n) in map.iter() {
                let _ = writeln!(out, "hotframe_ingest_rejects_total{{reason=\"{reason}\"}} {n}");
            }
        }

        let name = "hotframe_http_request_duration_seconds";
        let _ = writeln!(out, "# HELP {name} HTTP request latency by route and status.\n# TYPE {name} histogram");
        if let Ok(map) = self.latency.lock() {
            for ((route, status), h) in map.iter() {
                let route = escape(route);
                for (bound, n) in LATENCY_BUCKETS.iter().zip(h.buckets.iter()) {
                    let _ = writeln!(out, "{name}_bucket{{route=\"{route}\",status=\"{status}\",le=\"{bound}\"}} {n}");
                }
                let _ = writeln!(out, "{name}_bucket{{route=\"{route}\",status=\"{status}\",le=\"+Inf\"}} {}", h.count);
                let _ = writeln!(out, "{name}_sum{{route=\"{route}\",status=\"{status}\"}} {}", h.sum);
                let _ = writeln!(out, "{name}_count{{route=\"{route}\",status=\"{status}\"}} {}", h.count);
            }
        }

        if let Some(s) = store {
            let gauge = |out: &mut String, name: &str, help: &str, value: u64| {
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}");
            };
            gauge(&mut out, "hotframe_store_bytes", "Bytes of the database files.", s.bytes_on_disk);
            gauge(&mut out, "hotframe_store_profiles", "Raw profiles kept.", s.profiles);
            gauge(&mut out, "hotframe_store_samples", "Samples in raw profiles kept.", s.samples);
            gauge(&mut out, "hotframe_store_series", "Series kept.", s.series);
            gauge(&mut out, "hotframe_store_stacks", "Interned stacks.", s.stacks);
            gauge(&mut out, "hotframe_store_frames", "Interned frames.", s.frames);
        }
        out
    }
}

fn escape(label: &str) -> String {
    label.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Reason;

    #[test]
    fn text_format() {
        let m = Metrics::default();
        m.ingested(100, 7);
        m.ingested(50, 3);
        m.rejected(Reason::BadFolded);
        m.rejected(Reason::BadFolded);
        m.observe("/ingest", 200, 0.003);
        m.observe("/ingest", 200, 0.2);
        let text = m.render(Some(&StoreStats { bytes_on_disk: 4096, ..Default::default() }));
        assert!(text.contains("hotframe_ingested_profiles_total 2\n"), "{text}");
        assert!(text.contains("hotframe_ingested_bytes_total 150\n"));
        assert!(text.contains("hotframe_ingested_samples_total 10\n"));
        assert!(text.contains("hotframe_ingest_rejects_total{reason=\"bad_folded\"} 2\n"));
        assert!(text.contains("route=\"/ingest\",status=\"200\",le=\"0.005\"} 1\n"));
        assert!(text.contains("route=\"/ingest\",status=\"200\",le=\"+Inf\"} 2\n"));
        assert!(text.contains("hotframe_store_bytes 4096\n"));
    }
}
