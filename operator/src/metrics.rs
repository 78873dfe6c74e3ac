//! Operator metrics, served on `/metrics` in the Prometheus text format.

use std::time::Instant;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub reconciliations: IntCounterVec,
    pub failures: IntCounterVec,
    pub duration: HistogramVec,
    pub leader: IntGauge,
    link_passes: IntCounterVec,
    link_requests: IntCounterVec,
    link_status_writes: IntCounter,
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let reconciliations = IntCounterVec::new(
            Opts::new(
                "shortener_operator_reconciliations_total",
                "Reconciliations started, by Shortener",
            ),
            &["namespace", "name"],
        )?;
        let failures = IntCounterVec::new(
            Opts::new(
                "shortener_operator_reconcile_failures_total",
                "Reconciliations that failed, by Shortener and error kind",
            ),
            &["namespace", "name", "error"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "shortener_operator_reconcile_duration_seconds",
                "Time spent in one reconciliation",
            )
            .buckets(vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
            &["result"],
        )?;
        let leader = IntGauge::new(
            "shortener_operator_leader",
            "1 while this replica holds the leader lease",
        )?;
        registry.register(Box::new(reconciliations.clone()))?;
        registry.register(Box::new(failures.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(leader.clone()))?;
        let link_passes = IntCounterVec::new(
            Opts::new(
                "shortener_operator_link_reconciliations_total",
                "ShortLink passes, by the Shortener of the link and result",
            ),
            &["namespace", "name", "result"],
        )?;
        let link_requests = IntCounterVec::new(
            Opts::new(
                "shortener_operator_link_requests_total",
                "Requests the ShortLink sync sent to the services' APIs, by method and answer \
                 (an HTTP status, or `error` when none came)",
            ),
            &["method", "status"],
        )?;
        let link_status_writes = IntCounter::new(
            "shortener_operator_link_status_writes_total",
            "ShortLink status updates written to the Kubernetes API",
        )?;
        registry.register(Box::new(link_passes.clone()))?;
        registry.register(Box::new(link_requests.clone()))?;
        registry.register(Box::new(link_status_writes.clone()))?;
        Ok(Self {
            registry,
            reconciliations,
            failures,
            duration,
            leader,
            link_passes,
            link_requests,
            link_status_writes,
        })
    }

    /// Count a reconciliation and time it; the result label is set when the timer finishes.
    pub fn start(&self, namespace: &str, name: &str) -> ReconcileTimer {
        self.reconciliations
            .with_label_values(&[namespace, name])
            .inc();
        ReconcileTimer {
            started: Instant::now(),
            duration: self.duration.clone(),
        }
    }

    pub fn record_failure(&self, namespace: &str, name: &str, error: &str) {
        self.failures
            .with_label_values(&[namespace, name, error])
            .inc();
    }

    /// A pass over a ShortLink of Shortener `namespace/name`.
    pub fn link_pass(&self, namespace: &str, name: &str, result: &str) {
        self.link_passes
            .with_label_values(&[namespace, name, result])
            .inc();
    }

    pub fn link_request(&self, method: &str, status: &str) {
        self.link_requests
            .with_label_values(&[method, status])
            .inc();
    }

    pub fn link_status_write(&self) {
        self.link_status_writes.inc();
    }

    pub fn encode(&self) -> Result<String, prometheus::Error> {
        let mut buffer = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buffer)?;
        String::from_utf8(buffer).map_err(|e| prometheus::Error::Msg(e.to_string()))
    }
}

pub struct ReconcileTimer {
    started: Instant,
    duration: HistogramVec,
}

impl ReconcileTimer {
    pub fn finish(self, success: bool) {
        let result = if success { "success" } else { "error" };
        self.duration
            .with_label_values(&[result])
            .observe(self.started.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_exposed_in_text_format() {
        let m = Metrics::new().unwrap();
        m.start("web", "links").finish(true);
        m.record_failure("web", "links", "apply");
        let text = m.encode().unwrap();
        assert!(text.contains(
            r#"shortener_operator_reconciliations_total{name="links",namespace="web"} 1"#
        ));
        assert!(text.contains(
            r#"shortener_operator_reconcile_failures_total{error="apply",name="links",namespace="web"} 1"#
        ));
        assert!(text.contains(
            r#"shortener_operator_reconcile_duration_seconds_count{result="success"} 1"#
        ));
    }
}
