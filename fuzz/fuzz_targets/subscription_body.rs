//! A subscription body of `POST/PUT /v1/subscriptions`: JSON, the checks before it is
//! stored, and the record it becomes.
#![no_main]

use ewn_fanout::SubscriptionConfig;
use ewn_fanout::settings::WebhookSettings;
use ewn_fuzz::NOW_MS;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(config) = ewn_fanout::parse_body::<SubscriptionConfig>(data) else {
        return;
    };
    if config
        .problems("body", &WebhookSettings::default())
        .is_empty()
    {
        let _ = config.to_record(NOW_MS);
    }
});
