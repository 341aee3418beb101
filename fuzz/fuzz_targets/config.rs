//! The configuration file (`--config`): TOML layered over the defaults, then every
//! start-up check.
#![no_main]

use std::path::Path;

use ewn::settings::{LIST_KEYS, Settings};
use ewn_ops::config::{Layers, load_str};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let layers = Layers {
        list_keys: LIST_KEYS,
        ..Default::default()
    };
    if let Ok(settings) = load_str::<Settings>(Path::new("fuzz.toml"), text, &layers) {
        let _ = settings.problems();
    }
});
