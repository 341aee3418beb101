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
