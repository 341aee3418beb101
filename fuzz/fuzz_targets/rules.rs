//! A rules file (`processor.rules_file`, `ewn rules check`): TOML, the rules' checks and
//! their plain-language explanation.
#![no_main]

use ewn_processor::rules::{explain, parse_rules_file, problems};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(rules) = parse_rules_file(text) {
        if problems(&rules).is_empty() {
            for rule in &rules {
                let _ = explain(rule);
            }
        }
    }
});
