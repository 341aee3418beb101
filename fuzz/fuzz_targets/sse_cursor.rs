//! The SSE stream's `Last-Event-ID` cursor (`partition:offset,...`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = ewn_fanout::stream::parse_cursor(text);
});
