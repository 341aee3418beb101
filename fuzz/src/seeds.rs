//! Writes the seed corpora, one directory a target under `$EWN_FUZZ_SEEDS`, from the files
//! the project already holds (`schemas/examples`, `deploy/config`) and the samples the tests
//! use. `make fuzz` runs it before the targets (`cargo fuzz run seeds -- -runs=1`); the
//! corpora are not committed. A libFuzzer binary like the targets, not a plain `main`: built
//! with the fuzzer's coverage flags, a binary must link libFuzzer, which defines the
//! coverage symbols.
#![no_main]

use std::fs;
use std::path::{Path, PathBuf};

use ewn_fuzz::{NOW_MS, blinding, signer};
use ewn_gateway::parse_incident;
use ewn_model::validate::Limits;
use ewn_model::{AvroRecord, samples};

const ACK: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">
  <identifier>kg-desk-ack-1</identifier>
  <sender>desk@gknb.kg.example</sender>
  <sent>2026-11-22T03:00:00+00:00</sent>
  <status>Actual</status>
  <msgType>Ack</msgType>
  <scope>Restricted</scope>
  <restriction>TLP:AMBER</restriction>
  <references>ewn@rcc.example,a1b2,2026-11-22T02:59:00+00:00 ewn@rcc.example,c%2Cd,2026-11-22T02:59:30+00:00</references>
  <note>seen &amp; passed to the duty officer</note>
</alert>"#;

libfuzzer_sys::fuzz_target!(|_data: &[u8]| {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let out = std::env::var_os("EWN_FUZZ_SEEDS").map_or_else(
            || Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus"),
            PathBuf::from,
        );
        write_seeds(out);
    });
});

fn write_seeds(out: PathBuf) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let read = |p: &str| fs::read_to_string(root.join(p)).expect(p);
    let mut seeds = Seeds { out, n: 0 };

    let valid = read("schemas/examples/valid.jsonl");
    let invalid = read("schemas/examples/invalid.jsonl");
    seeds.put("gateway_lines", valid.as_bytes());
    seeds.put("gateway_lines", invalid.as_bytes());
    for line in valid.lines().chain(invalid.lines()) {
        seeds.put("gateway_lines", line.as_bytes());
    }

    // The valid examples and the sample incident, as payloads and as signed envelopes.
    let mut incidents = vec![samples::incident()];
    for (i, line) in valid.lines().enumerate() {
        if let Ok(incident) = parse_incident(line, i + 1, blinding(), &Limits::default(), NOW_MS) {
            incidents.push(incident);
        }
    }
    let mut signer = signer();
    for incident in &incidents {
        let payload = incident.to_avro().expect("sample encodes");
        seeds.put("incident", &payload);
        let envelope = signer.sign_payload(payload, NOW_MS);
        seeds.put("envelope", &envelope.to_avro().expect("envelope encodes"));
    }
    seeds.put(
        "envelope",
        &samples::signed_incident()
            .to_avro()
            .expect("sample encodes"),
    );

    seeds.put("cap_ack", ACK.as_bytes());
    seeds.put(
        "cap_ack",
        ACK.replace("<msgType>Ack", "<msgType>Alert").as_bytes(),
    );

    for body in [
        r#"{"id":"kg-desk","agency":"KG-GKNB","clearance":"AMBER","min_level":"MEDIUM","format":"json","webhook":{"url":"https://desk.example/hook","secret":"0123456789abcdef0123456789abcdef"}}"#,
        r#"{"id":"kz-desk","agency":"KZ-KNB","clearance":"RED","format":"cap","webhook":{"url":"http://127.0.0.1:9/h","secret":"s"},"states":["KZ"],"categories":["SMUGGLING"]}"#,
        r#"{"id":"x","agency":"X","clearance":"CLEAR"}"#,
    ] {
        seeds.put("subscription_body", body.as_bytes());
    }
    for body in [
        "",
        "{}",
        r#"{"actor":"duty officer","note":"seen\npassed on"}"#,
    ] {
        seeds.put("ack_body", body.as_bytes());
    }

    seeds.put(
        "trust_store",
        read("deploy/config/trust.example.toml").as_bytes(),
    );
    let key = ewn_trust::KeyEntry {
        key_id: "kz-2026-01".into(),
        state: "KZ".into(),
        public_key: signer.public_key(),
        not_before: 0,
        not_after: 0,
        revoked_at: None,
    };
    seeds.put(
        "trust_store",
        format!(
            "[[keys]]\nkey_id = \"kz-2026-01\"\nstate = \"KZ\"\npublic_key = \"{}\"\n\
             not_before = \"2026-01-01T00:00:00Z\"\nnot_after = \"2027-01-01T00:00:00Z\"\n\
             revoked_at = \"2026-06-01T00:00:00Z\"\n",
            key.public_key_base64()
        )
        .as_bytes(),
    );
    seeds.put("rules", read("deploy/config/rules.default.toml").as_bytes());
    seeds.put(
        "rules",
        read("deploy/config/rules.default.test.toml").as_bytes(),
    );
    seeds.put("config", read("deploy/config/ewn.example.toml").as_bytes());
    for cursor in ["", "0:5", "0:5,1:7,2:0", "3:9223372036854775807"] {
        seeds.put("sse_cursor", cursor.as_bytes());
    }
    eprintln!("{} seed files under {}", seeds.n, seeds.out.display());
}

struct Seeds {
    out: PathBuf,
    n: usize,
}

impl Seeds {
    fn put(&mut self, target: &str, bytes: &[u8]) {
        let dir = self.out.join(target);
        fs::create_dir_all(&dir).expect("corpus dir");
        fs::write(dir.join(format!("seed-{:04}", self.n)), bytes).expect("seed file");
        self.n += 1;
    }
}
