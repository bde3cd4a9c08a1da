//! Prometheus metrics in the text exposition format (`GET /metrics`).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

/// Upper bounds of the latency histogram's buckets, in seconds.
const LATENCY_BUCKETS: [f64; 12] = [
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
/// Upper bounds of the real-time-factor histogram's buckets.
const RTF_BUCKETS: [f64; 8] = [0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0];

#[derive(Default)]
struct Histogram {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, bounds: &[f64], v: f64) {
        if self.counts.is_empty() {
            self.counts = vec![0; bounds.len()];
        }
        for (c, b) in self.counts.iter_mut().zip(bounds) {
            if v <= *b {
                *c += 1;
            }
        }
        self.sum += v;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str, bounds: &[f64]) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (i, b) in bounds.iter().enumerate() {
            let c = self.counts.get(i).copied().unwrap_or(0);
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {c}");
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum);
        let _ = writeln!(out, "{name}_count{braces} {}", self.count);
    }
}

#[derive(Default)]
struct Inner {
    /// (protocol/endpoint, outcome) -> requests.
    requests: BTreeMap<(&'static str, String), u64>,
    latency: BTreeMap<&'static str, Histogram>,
    rtf: Histogram,
    audio_seconds: f64,
    compute_seconds: f64,
    busy: u64,
}

/// Counters shared by every connection.
#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

impl Metrics {
    /// A finished request on `endpoint` with `outcome` (an HTTP status, or `ok`/`error` for
    /// Wyoming and WebSocket), taking `seconds`.
    pub fn request(&self, endpoint: &'static str, outcome: impl ToString, seconds: f64) {
        let mut m = self.lock();
        *m.requests
            .entry((endpoint, outcome.to_string()))
            .or_default() += 1;
        m.latency
            .entry(endpoint)
            .or_default()
            .observe(&LATENCY_BUCKETS, seconds);
    }

    /// Audio transcribed and the compute it took.
    pub fn transcribed(&self, audio_seconds: f64, compute_seconds: f64) {
        let mut m = self.lock();
        m.audio_seconds += audio_seconds;
        m.compute_seconds += compute_seconds;
        if audio_seconds > 0.0 {
            m.rtf.observe(&RTF_BUCKETS, compute_seconds / audio_seconds);
        }
    }

    /// A request turned away because the queue was full.
    pub fn busy(&self) {
        self.lock().busy += 1;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The exposition text; `in_flight` and `max_concurrent` are sampled by the caller.
    pub fn render(&self, in_flight: usize, max_concurrent: usize) -> String {
        let m = self.lock();
        let mut out = String::new();
        out.push_str("# HELP w2v_requests_total Requests finished, by endpoint and outcome.\n");
        out.push_str("# TYPE w2v_requests_total counter\n");
        for ((endpoint, outcome), n) in &m.requests {
            let _ = writeln!(
                out,
                "w2v_requests_total{{endpoint=\"{endpoint}\",outcome=\"{outcome}\"}} {n}"
            );
        }
        out.push_str(
            "# HELP w2v_request_duration_seconds Request latency, from arrival to answer.\n",
        );
        out.push_str("# TYPE w2v_request_duration_seconds histogram\n");
        for (endpoint, h) in &m.latency {
            h.render(
                &mut out,
                "w2v_request_duration_seconds",
                &format!("endpoint=\"{endpoint}\""),
                &LATENCY_BUCKETS,
            );
        }
        out.push_str(
            "# HELP w2v_real_time_factor Compute seconds per audio second, per transcription.\n",
        );
        out.push_str("# TYPE w2v_real_time_factor histogram\n");
        m.rtf
            .render(&mut out, "w2v_real_time_factor", "", &RTF_BUCKETS);
        for (name, help, kind, value) in [
            (
                "w2v_audio_seconds_total",
                "Audio transcribed, in seconds.",
                "counter",
                m.audio_seconds,
            ),
            (
                "w2v_compute_seconds_total",
                "Model compute spent, in seconds.",
                "counter",
                m.compute_seconds,
            ),
            (
                "w2v_busy_rejections_total",
                "Requests answered busy because the queue was full.",
                "counter",
                m.busy as f64,
            ),
            (
                "w2v_in_flight",
                "Jobs running or waiting for a recognizer.",
                "gauge",
                in_flight as f64,
            ),
            (
                "w2v_max_concurrent",
                "Recognizers (jobs that run at once).",
                "gauge",
                max_concurrent as f64,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_format() {
        let m = Metrics::default();
        m.request("transcriptions", 200, 0.3);
        m.request("transcriptions", 200, 0.02);
        m.request("wyoming", "ok", 1.5);
        m.transcribed(3.0, 0.3);
        m.busy();
        let text = m.render(1, 2);
        assert!(text.contains("w2v_requests_total{endpoint=\"transcriptions\",outcome=\"200\"} 2"));
        assert!(text.contains(
            "w2v_request_duration_seconds_bucket{endpoint=\"transcriptions\",le=\"0.025\"} 1"
        ));
        assert!(text.contains(
            "w2v_request_duration_seconds_bucket{endpoint=\"transcriptions\",le=\"+Inf\"} 2"
        ));
        assert!(text.contains("w2v_request_duration_seconds_count{endpoint=\"wyoming\"} 1"));
        assert!(text.contains("w2v_real_time_factor_bucket{le=\"0.1\"} 1"));
        assert!(text.contains("w2v_busy_rejections_total 1"));
        assert!(text.contains("w2v_in_flight 1"));
        // Every sample line is `name{labels} value` or `name value`.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let value = line.rsplit(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }
}
