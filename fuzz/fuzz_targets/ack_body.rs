//! The body of `POST /v1/alerts/{id}/ack`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = ewn_fanout::AckBody::parse(data, "desk".into());
});
