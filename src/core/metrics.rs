//! The metrics registry behind `GET /metrics` (Prometheus text format).
//! Counters are atomics so the hot path never takes a lock; labelled request
//! counters use a short mutex (never held across an await).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds of the forwarding-lag histogram, seconds.
const LAG_BUCKETS: [f64; 10] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 1.0,
];

/// Every metric of one replica.
#[derive(Default)]
pub struct Metrics {
    pub connections: AtomicI64,
    pub connections_total: AtomicU64,
    pub subscriptions: AtomicI64,
    pub notifications_received: AtomicU64,
    pub pushes_forwarded: AtomicU64,
    pub slow_consumers_closed: AtomicU64,
    pub resyncs: AtomicU64,
    pub listener_reconnects: AtomicU64,
    pub expired_holds_swept: AtomicU64,
    /// Seat changes (hold, release, book, cancel) the seat writer ran.
    pub seat_changes: AtomicU64,
    /// Transactions they ran in (one per batch).
    pub seat_transactions: AtomicU64,
    requests: Mutex<BTreeMap<(String, &'static str), u64>>,
    lag_buckets: [AtomicU64; LAG_BUCKETS.len()],
    lag_count: AtomicU64,
    lag_sum_ns: AtomicU64,
}

impl Metrics {
    /// Counts one answered request; `outcome` is "ok" or an error code.
    pub fn request(&self, kind: &str, outcome: &'static str) {
        if let Ok(mut m) = self.requests.lock() {
            // Label cardinality is bounded by the caller (unknown types are
            // reported as "unknown").
            *m.entry((kind.to_owned(), outcome)).or_insert(0) += 1;
        }
    }

    /// Records how long a notification took from arrival to being queued
    /// on every subscriber's socket.
    pub fn forwarding_lag(&self, d: Duration) {
        let s = d.as_secs_f64();
        for (i, le) in LAG_BUCKETS.iter().enumerate() {
            if s <= *le {
                self.lag_buckets[i].fetch_add(1, Relaxed);
            }
        }
        self.lag_count.fetch_add(1, Relaxed);
        self.lag_sum_ns
            .fetch_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX), Relaxed);
    }

    /// The Prometheus exposition; `extra` lines (pool gauges) are appended.
    pub fn render(&self, extra: &[(&str, &str, f64)]) -> String {
        let mut out = String::with_capacity(4096);
        let g = |out: &mut String, name: &str, help: &str, kind: &str, v: f64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
            );
        };
        let gauge = |v: &AtomicI64| (v.load(Relaxed) as f64, "gauge");
        let counter = |v: &AtomicU64| (v.load(Relaxed) as f64, "counter");
        let singles = [
            (
                "marquee_connections",
                "Open WebSocket connections.",
                gauge(&self.connections),
            ),
            (
                "marquee_connections_total",
                "WebSocket connections accepted.",
                counter(&self.connections_total),
            ),
            (
                "marquee_subscriptions",
                "Active hall subscriptions.",
                gauge(&self.subscriptions),
            ),
            (
                "marquee_notifications_received_total",
                "NOTIFY messages received on the LISTEN connection.",
                counter(&self.notifications_received),
            ),
            (
                "marquee_pushes_forwarded_total",
                "hall_update and hall_snapshot pushes queued to sockets.",
                counter(&self.pushes_forwarded),
            ),
            (
                "marquee_slow_consumers_closed_total",
                "Sockets closed with 1013 because their send queue was full.",
                counter(&self.slow_consumers_closed),
            ),
            (
                "marquee_resyncs_total",
                "Screenings re-sent as hall_snapshot.",
                counter(&self.resyncs),
            ),
            (
                "marquee_listener_reconnects_total",
                "Times the LISTEN connection was re-established.",
                counter(&self.listener_reconnects),
            ),
            (
                "marquee_expired_holds_swept_total",
                "Expired holds freed by this replica's sweep.",
                counter(&self.expired_holds_swept),
            ),
            (
                "marquee_seat_changes_total",
                "Hold, release, book and cancel requests run by the seat writer.",
                counter(&self.seat_changes),
            ),
            (
                "marquee_seat_transactions_total",
                "Transactions the seat writer ran them in (several changes that arrived together share one).",
                counter(&self.seat_transactions),
            ),
        ];
        for (name, help, (v, kind)) in singles {
            g(&mut out, name, help, kind, v);
        }
        let _ = writeln!(out, "# HELP marquee_requests_total Requests answered, by type and outcome.\n# TYPE marquee_requests_total counter");
        if let Ok(m) = self.requests.lock() {
            for ((kind, outcome), n) in m.iter() {
                let _ = writeln!(
                    out,
                    "marquee_requests_total{{type=\"{kind}\",outcome=\"{outcome}\"}} {n}"
                );
            }
        }
        let _ = writeln!(out, "# HELP marquee_forwarding_lag_seconds Time from a notification's arrival to its pushes being queued.\n# TYPE marquee_forwarding_lag_seconds histogram");
        for (i, le) in LAG_BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "marquee_forwarding_lag_seconds_bucket{{le=\"{le}\"}} {}",
                self.lag_buckets[i].load(Relaxed)
            );
        }
        let count = self.lag_count.load(Relaxed);
        let _ = writeln!(
            out,
            "marquee_forwarding_lag_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            out,
            "marquee_forwarding_lag_seconds_sum {}",
            self.lag_sum_ns.load(Relaxed) as f64 / 1e9
        );
        let _ = writeln!(out, "marquee_forwarding_lag_seconds_count {count}");
        for (name, help, v) in extra {
            g(&mut out, name, help, "gauge", *v);
        }
        out
    }
}
