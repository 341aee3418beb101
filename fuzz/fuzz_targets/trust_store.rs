//! The TOML trust store every verifier loads and reloads.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(store) = ewn_trust::TrustStore::parse(text) {
        for entry in store.entries() {
            let _ = entry.public_key_base64();
        }
    }
});
