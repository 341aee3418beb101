//! The metrics registry. Each service builds one `prometheus::Registry` and injects it into
//! every crate's metrics struct (no global registry, so parallel tests do not collide).

use prometheus::{Encoder, Registry, TextEncoder};

/// A registry with the process-wide `ewn_` namespace left to each metric's own name.
pub fn registry() -> Registry {
    Registry::new()
}

/// The registry in Prometheus text format.
pub fn render(registry: &Registry) -> String {
    let mut out = Vec::new();
    // Encoding into a Vec cannot fail for the text encoder except on invalid metric
    // families, which registration already rejects.
    let _ = TextEncoder::new().encode(&registry.gather(), &mut out);
    String::from_utf8(out).unwrap_or_default()
}

/// Creates metrics and registers them in one step, for each crate's `metrics.rs`.
pub struct Registrar<'a>(pub &'a Registry);

impl Registrar<'_> {
    fn add<T: prometheus::core::Collector + Clone + 'static>(&self, c: T) -> prometheus::Result<T> {
        self.0.register(Box::new(c.clone()))?;
        Ok(c)
    }

    pub fn counter(&self, name: &str, help: &str) -> prometheus::Result<prometheus::IntCounter> {
        self.add(prometheus::IntCounter::new(name, help)?)
    }

    pub fn counter_vec(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> prometheus::Result<prometheus::IntCounterVec> {
        self.add(prometheus::IntCounterVec::new(
            prometheus::Opts::new(name, help),
            labels,
        )?)
    }

    pub fn gauge(&self, name: &str, help: &str) -> prometheus::Result<prometheus::IntGauge> {
        self.add(prometheus::IntGauge::new(name, help)?)
    }

    pub fn gauge_vec(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> prometheus::Result<prometheus::IntGaugeVec> {
        self.add(prometheus::IntGaugeVec::new(
            prometheus::Opts::new(name, help),
            labels,
        )?)
    }

    pub fn histogram(
        &self,
        name: &str,
        help: &str,
        buckets: &[f64],
    ) -> prometheus::Result<prometheus::Histogram> {
        self.add(prometheus::Histogram::with_opts(
            prometheus::HistogramOpts::new(name, help).buckets(buckets.to_vec()),
        )?)
    }

    pub fn histogram_vec(
        &self,
        name: &str,
        help: &str,
        buckets: &[f64],
        labels: &[&str],
    ) -> prometheus::Result<prometheus::HistogramVec> {
        self.add(prometheus::HistogramVec::new(
            prometheus::HistogramOpts::new(name, help).buckets(buckets.to_vec()),
            labels,
        )?)
    }
}
