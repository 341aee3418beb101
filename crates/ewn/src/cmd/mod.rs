pub mod keygen;
pub mod publish;
pub mod tail;
pub mod topics;

/// Milliseconds since the Unix epoch, from the system clock.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
