//! Request counters and latency histograms, rendered in the Prometheus text format (0.0.4).
//!
//! Hand-rolled: a handful of series behind one mutex is all this server needs, and it keeps a
//! metrics runtime out of the dependency graph.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::conn::CloseReason;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Default)]
struct Series {
    /// (route, method, status) -> count
    requests: BTreeMap<(String, String, u16), u64>,
    /// (route, method) -> latency
    latency: BTreeMap<(String, String), Histogram>,
    rejected_overload: u64,
    /// reason -> connections closed by the server's connection limits
    closed: BTreeMap<&'static str, u64>,
    /// Server errors not logged because one was logged less than a second before.
    suppressed_logs: u64,
    last_error_log: Option<Instant>,
}

/// Most WARN lines about failed requests per second; the rest are counted and summed up in
/// the next line.
const ERROR_LOGS_PER_SECOND: u32 = 1;

/// Counters shared by all requests.
#[derive(Default)]
pub(crate) struct Metrics {
    series: Mutex<Series>,
}

impl Metrics {
    pub(crate) fn record(&self, route: &str, method: &str, status: u16, elapsed: Duration) {
        let mut series = self.series.lock().unwrap_or_else(|p| p.into_inner());
        *series
            .requests
            .entry((route.to_owned(), method.to_owned(), status))
            .or_default() += 1;
        let histogram = series
            .latency
            .entry((route.to_owned(), method.to_owned()))
            .or_default();
        let seconds = elapsed.as_secs_f64();
        for (slot, bound) in histogram.counts.iter_mut().zip(BUCKETS) {
            if seconds <= bound {
                *slot += 1;
            }
        }
        histogram.count += 1;
        histogram.sum += seconds;
    }

    pub(crate) fn record_closed(&self, reason: CloseReason) {
        *self
            .series
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .closed
            .entry(reason.as_str())
            .or_default() += 1;
    }

    /// Whether a failed request may be logged now; `Some(n)`: yes, and `n` were suppressed
    /// since the last one. Bursts of 5xx (a saturated server answers hundreds of 503s a second)
    /// would otherwise flood the log; the counters have every one of them.
    pub(crate) fn may_log_error(&self) -> Option<u64> {
        let mut series = self.series.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let interval = Duration::from_secs(1) / ERROR_LOGS_PER_SECOND;
        if series
            .last_error_log
            .is_some_and(|last| now.duration_since(last) < interval)
        {
            series.suppressed_logs += 1;
            return None;
        }
        series.last_error_log = Some(now);
        Some(std::mem::take(&mut series.suppressed_logs))
    }

    pub(crate) fn record_overload(&self) {
        self.series
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .rejected_overload += 1;
    }

    /// The text exposition, with the index gauges appended.
    pub(crate) fn render(&self, index: Option<&precedent_index::Stats>) -> String {
        let series = self.series.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = String::new();
        out.push_str(
            "# HELP precedent_http_requests_total HTTP requests by route, method and status.\n",
        );
        out.push_str("# TYPE precedent_http_requests_total counter\n");
        for ((route, method, status), count) in &series.requests {
            let _ = writeln!(
                out,
                "precedent_http_requests_total{{route=\"{}\",method=\"{}\",status=\"{status}\"}} {count}",
                escape(route),
                escape(method)
            );
        }
        out.push_str(
            "# HELP precedent_http_request_duration_seconds Time to produce a response.\n",
        );
        out.push_str("# TYPE precedent_http_request_duration_seconds histogram\n");
        for ((route, method), h) in &series.latency {
            let labels = format!("route=\"{}\",method=\"{}\"", escape(route), escape(method));
            for (bound, count) in BUCKETS.iter().zip(h.counts) {
                let _ = writeln!(
                    out,
                    "precedent_http_request_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {count}"
                );
            }
            let _ = writeln!(
                out,
                "precedent_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "precedent_http_request_duration_seconds_sum{{{labels}}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "precedent_http_request_duration_seconds_count{{{labels}}} {}",
                h.count
            );
        }
        out.push_str("# HELP precedent_http_overloaded_total Requests refused because the server was saturated.\n");
        out.push_str("# TYPE precedent_http_overloaded_total counter\n");
        let _ = writeln!(
            out,
            "precedent_http_overloaded_total {}",
            series.rejected_overload
        );
        out.push_str("# HELP precedent_http_connections_closed_total Connections closed by the server's limits, by reason (header_timeout, idle_timeout, evicted, refused).\n");
        out.push_str("# TYPE precedent_http_connections_closed_total counter\n");
        for reason in ["header_timeout", "idle_timeout", "evicted", "refused"] {
            let _ = writeln!(
                out,
                "precedent_http_connections_closed_total{{reason=\"{reason}\"}} {}",
                series.closed.get(reason).copied().unwrap_or(0)
            );
        }
        if let Some(stats) = index {
            for (name, help, value) in [
                (
                    "precedent_index_generation",
                    "Generation of the index being served.",
                    stats.generation,
                ),
                (
                    "precedent_index_incidents",
                    "Incidents in the index.",
                    stats.incidents,
                ),
                ("precedent_index_steps", "Steps in the index.", stats.steps),
                (
                    "precedent_index_size_bytes",
                    "Bytes on disk of the served index.",
                    stats.size_bytes,
                ),
            ] {
                let _ = writeln!(
                    out,
                    "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
                );
            }
        }
        out
    }
}

fn escape(label: &str) -> String {
    label
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_counts_add_up() {
        let metrics = Metrics::default();
        metrics.record("/v1/search", "POST", 200, Duration::from_millis(3));
        metrics.record("/v1/search", "POST", 400, Duration::from_millis(30));
        let text = metrics.render(None);
        assert!(text.contains(
            "precedent_http_requests_total{route=\"/v1/search\",method=\"POST\",status=\"200\"} 1"
        ));
        assert!(text.contains(
            "precedent_http_request_duration_seconds_bucket{route=\"/v1/search\",method=\"POST\",le=\"0.005\"} 1"
        ));
        assert!(text.contains(
            "precedent_http_request_duration_seconds_bucket{route=\"/v1/search\",method=\"POST\",le=\"0.05\"} 2"
        ));
        assert!(text.contains(
            "precedent_http_request_duration_seconds_count{route=\"/v1/search\",method=\"POST\"} 2"
        ));
    }
}
