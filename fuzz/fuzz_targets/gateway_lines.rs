//! The gateway's (and `ewn publish`'s) JSON-lines input: line reader, JSON, field
//! validation, blinding, the one-state rule.
#![no_main]

use ewn_fuzz::{NOW_MS, blinding};
use ewn_gateway::{LineReader, prepare_line};
use ewn_model::validate::Limits;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    let mut reader = LineReader::new(data);
    let mut state = None;
    while let Ok(Some((n, line))) = reader.next_line() {
        let _ = prepare_line(line, n, blinding(), &limits, NOW_MS, &mut state);
    }
});
