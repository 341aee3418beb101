//! A record value as the processor reads it from `ewn.incidents.<state>`: size bound,
//! single-object header, `SignedIncident` decoding, key lookup, topic state, signature.
#![no_main]

use ewn_fuzz::{NOW_MS, verifier};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = verifier().verify(data, Some("kz"), NOW_MS);
    let _ = verifier().verify(data, None, NOW_MS);
});
