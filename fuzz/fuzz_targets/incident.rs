//! The signed payload: the input is signed with a trusted key, so every byte reaches the
//! `Incident` decoder, the field bounds and the time checks the processor applies after
//! the signature verified.
#![no_main]

use ewn_fuzz::{NOW_MS, signer, verifier};
use ewn_model::AvroRecord;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let envelope = signer().sign_payload(data.to_vec(), NOW_MS);
    let Ok(value) = envelope.to_avro() else {
        return;
    };
    let _ = verifier().verify(&value, Some("kz"), NOW_MS);
});
