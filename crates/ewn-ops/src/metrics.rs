//! The metrics registry. Each service builds one `prometheus::Registry` and injects it into
//! every crate's metrics struct (no global registry, so parallel tests do not collide).
//!
//! Every family registered through [`Registrar`] (or [`describe`]) is described (name,
//! type, help, label names) to a [`recording`] in progress on the registering thread, which
//! is how `ewn metrics` lists what the services register, for `deploy/check.py`.

use std::collections::BTreeMap;

pub use prometheus::Registry;
use prometheus::core::Collector;
use prometheus::proto::MetricType;
use prometheus::{Encoder, TextEncoder};
use serde::Serialize;

/// The version this binary was built from.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The commit, set once by the binary (`crates/ewn/build.rs` takes it from git). It lives
/// in the leaf crate so a new commit rebuilds only the binary, not every library.
static COMMIT: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Records the commit `ewn_build_info` reports; the first call wins.
pub fn set_commit(commit: &str) {
    let _ = COMMIT.set(commit.to_string());
}

/// The commit `ewn_build_info` reports (`unknown` until [`set_commit`]).
pub fn commit() -> &'static str {
    COMMIT.get().map(String::as_str).unwrap_or("unknown")
}

/// A registry holding the series every service exports: `ewn_build_info` and the
/// `process_*` family (CPU, memory, file descriptors, threads, start time).
pub fn registry() -> Registry {
    let r = Registry::new();
    if let Err(e) = register_common(&r) {
        // Both are fixed families in a fresh registry: a failure is a bug, and the
        // service still runs without them.
        tracing::error!(error = %e, "build and process metrics not registered");
    }
    r
}

fn register_common(r: &Registry) -> prometheus::Result<()> {
    let build = Registrar(r).gauge_vec(
        "ewn_build_info",
        "the version and commit of the running binary (always 1)",
        &["version", "commit"],
    )?;
    build.with_label_values(&[VERSION, commit()]).set(1);
    let process = prometheus::process_collector::ProcessCollector::for_self();
    describe(&process);
    r.register(Box::new(process))
}

/// The description of one metric family, as `ewn metrics` prints it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MetricInfo {
    pub name: String,
    /// `counter`, `gauge`, `histogram`, `summary` or `untyped`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub help: String,
    pub labels: Vec<String>,
}

thread_local! {
    /// The families described on this thread inside [`recording`].
    static RECORDING: std::cell::RefCell<Option<Vec<MetricInfo>>> =
        const { std::cell::RefCell::new(None) };
}

/// Runs `f` and gives, with its result, every family it registered on this thread (through
/// [`Registrar`] or [`describe`]), whatever was registered before.
pub fn recording<R>(f: impl FnOnce() -> R) -> (R, Vec<MetricInfo>) {
    let outer = RECORDING.with(|r| r.borrow_mut().replace(Vec::new()));
    let result = f();
    let seen = RECORDING.with(|r| std::mem::replace(&mut *r.borrow_mut(), outer));
    (result, seen.unwrap_or_default())
}

/// Describes the families of `c` to the recording in progress on this thread, if any.
pub fn describe(c: &dyn Collector) {
    let kinds: BTreeMap<String, &'static str> = c
        .collect()
        .iter()
        .map(|mf| {
            let kind = match mf.get_field_type() {
                MetricType::COUNTER => "counter",
                MetricType::GAUGE => "gauge",
                MetricType::HISTOGRAM => "histogram",
                MetricType::SUMMARY => "summary",
                MetricType::UNTYPED => "untyped",
            };
            (mf.name().to_string(), kind)
        })
        .collect();
    for d in c.desc() {
        let info = MetricInfo {
            name: d.fq_name.clone(),
            kind: kinds.get(&d.fq_name).copied().unwrap_or("untyped"),
            help: d.help.clone(),
            labels: d.variable_labels.clone(),
        };
        RECORDING.with(|r| {
            if let Some(seen) = r.borrow_mut().as_mut() {
                seen.push(info);
            }
        });
    }
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
    /// Registers `c` and describes it (see [`recording`]).
    pub fn add<T: Collector + Clone + 'static>(&self, c: T) -> prometheus::Result<T> {
        self.0.register(Box::new(c.clone()))?;
        describe(&c);
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

    pub fn float_gauge_vec(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> prometheus::Result<prometheus::GaugeVec> {
        self.add(prometheus::GaugeVec::new(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_info_and_process_series_from_the_start_and_in_the_catalogue() {
        let (r, names) = recording(registry);
        let text = render(&r);
        assert!(
            text.contains(&format!(
                "ewn_build_info{{commit=\"{}\",version=\"{VERSION}\"}} 1",
                commit()
            )),
            "{text}"
        );
        assert!(text.contains("process_resident_memory_bytes"), "{text}");
        let build = names.iter().find(|m| m.name == "ewn_build_info").unwrap();
        assert_eq!(build.kind, "gauge");
        assert_eq!(build.labels, ["version", "commit"]);
        let cpu = names
            .iter()
            .find(|m| m.name == "process_cpu_seconds_total")
            .unwrap();
        assert_eq!(cpu.kind, "counter");
    }
}
