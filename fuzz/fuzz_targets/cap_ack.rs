//! A CAP 1.2 `Ack` posted to the fan-out.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = ewn_fanout::cap_ack::parse_ack(data);
});
