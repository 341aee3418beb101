//! EWN's records as a third-party Avro client sees them. fastavro (in the test venv, run by
//! `tests/support/avro_fastavro.py`) follows the specification's fingerprint, as Java does:
//! it must find every EWN schema by the fingerprint in a record's header, agree with
//! `ewn schemas` on every canonical form and fingerprint, and decode every record type to the
//! values EWN encoded. A missing venv fails these tests with the reason; they never skip.

#![allow(clippy::unwrap_used)] // tests fail loudly on anything unexpected

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ewn_model::codec::{HEADER_LEN, fingerprint_hex};
use ewn_model::{AvroRecord, samples, schemas};
use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs the fastavro helper; exit 2 means it could not run at all, never a verdict.
fn fastavro(args: &[&str]) -> Output {
    let python = ewn_testkit::python().unwrap_or_else(|e| panic!("{e}"));
    let out = Command::new(&python)
        .arg(root().join("tests/support/avro_fastavro.py"))
        .args(args)
        .current_dir(root())
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {} ({e}): run `make test-deps`",
                python.display()
            )
        });
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "avro_fastavro.py could not run ({}): run `make test-deps`\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn ewn(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ewn"))
        .args(args)
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// `file -> (fingerprint, canonical form)` as fastavro computes them.
fn fastavro_fingerprints() -> BTreeMap<String, (String, String)> {
    let files: Vec<String> = schemas()
        .iter()
        .map(|s| format!("schemas/{}", s.file))
        .collect();
    let mut args = vec!["fingerprints"];
    args.extend(files.iter().map(String::as_str));
    let out = fastavro(&args);
    assert!(out.status.success());
    stdout(&out)
        .lines()
        .map(|line| {
            let mut parts = line.splitn(3, ' ');
            let (file, fp, form) = (
                parts.next().unwrap(),
                parts.next().unwrap(),
                parts.next().unwrap(),
            );
            (
                format!("schemas/{file}"),
                (fp.to_string(), form.to_string()),
            )
        })
        .collect()
}

#[test]
fn ewn_schemas_agrees_with_fastavro() {
    let expected = fastavro_fingerprints();
    assert_eq!(expected.len(), schemas().len());
    let out = ewn(&["schemas", "--format", "json"]);
    assert!(out.status.success(), "{out:?}");
    let printed: Vec<Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(printed.len(), schemas().len(), "one line per schema");
    for line in &printed {
        let file = line["file"].as_str().unwrap();
        let (fp, form) = &expected[file];
        assert_eq!(line["fingerprint"], fp.as_str(), "{file}");
        assert_eq!(line["canonical_form"], form.as_str(), "{file}");
        let info = schemas()
            .into_iter()
            .find(|s| format!("schemas/{}", s.file) == file)
            .unwrap();
        assert_eq!(line["name"], info.codec.full_name());
        assert_eq!(
            line["legacy_fingerprint"],
            fingerprint_hex(info.codec.legacy_fingerprint())
        );
    }
    // The example: Incident's old fingerprint and the specification's.
    let incident = printed
        .iter()
        .find(|l| l["name"] == "ewn.v1.Incident")
        .unwrap();
    assert_eq!(incident["fingerprint"], "63b89ba68d5a8fd4");
    assert_eq!(incident["legacy_fingerprint"], "bfa513b70d847e14");
    // Subscription v2 (issue 16: `languages`) lists v1, still read.
    let subscription = printed
        .iter()
        .find(|l| l["name"] == "ewn.v1.Subscription")
        .unwrap();
    assert_eq!(subscription["fingerprint"], "ec67a8dc900aac8b");
    assert_eq!(
        subscription["earlier_fingerprints"],
        serde_json::json!(["693fd2c3de0aa255"])
    );
}

#[test]
fn ewn_schemas_prints_for_people_and_selects_by_name() {
    let out = ewn(&["schemas"]);
    assert!(out.status.success(), "{out:?}");
    let text = stdout(&out);
    for info in schemas() {
        let c = info.codec;
        assert!(
            text.contains(&format!("{} (schemas/{})", c.full_name(), info.file)),
            "{text}"
        );
        assert!(text.contains(&fingerprint_hex(c.fingerprint())));
        assert!(text.contains(&fingerprint_hex(c.legacy_fingerprint())));
        assert!(text.contains(c.canonical_form()));
    }

    for name in ["Alert", "ewn.v1.Alert", "Alert.avsc"] {
        let out = ewn(&["schemas", name]);
        assert!(out.status.success(), "{name}: {out:?}");
        let text = stdout(&out);
        assert!(
            text.starts_with("ewn.v1.Alert (schemas/Alert.avsc)\n"),
            "{text}"
        );
        assert_eq!(text.matches("canonical form").count(), 1, "{text}");
    }

    let out = ewn(&["schemas", "Nope"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no schema named `Nope`") && err.contains("Incident"),
        "{err}"
    );
}

/// One encoded sample record of every schema, by file name.
fn records() -> Vec<(&'static str, Vec<u8>, Value)> {
    fn one<T: AvroRecord>(file: &'static str, v: T) -> (&'static str, Vec<u8>, Value) {
        (
            file,
            v.to_avro().unwrap(),
            serde_json::to_value(&v).unwrap(),
        )
    }
    vec![
        one("Incident.avsc", samples::incident()),
        one("SignedIncident.avsc", samples::signed_incident()),
        one("Alert.avsc", samples::alert()),
        one("Rejection.avsc", samples::rejection()),
        one("DeliveryReceipt.avsc", samples::delivery_receipt()),
        one("DeliveryRetry.avsc", samples::delivery_retry()),
        one("Ack.avsc", samples::ack()),
        one("Subscription.avsc", samples::subscription()),
        one("ScoredIncident.avsc", samples::scored_incident()),
        one("Heartbeat.avsc", samples::heartbeat()),
        one("SignedHeartbeat.avsc", samples::signed_heartbeat()),
        one("AuditRecord.avsc", samples::audit_record()),
        one("CaseRequest.avsc", samples::case_request()),
        one("CaseResponse.avsc", samples::case_response()),
    ]
}

#[test]
fn fastavro_reads_every_record_ewn_writes() {
    let records = records();
    assert_eq!(records.len(), schemas().len(), "a sample of every schema");
    let dir = tempfile::tempdir().unwrap();
    let mut args = vec![
        "read".to_string(),
        root().join("schemas").display().to_string(),
    ];
    for (file, bytes, _) in &records {
        let path = dir.path().join(file.replace(".avsc", ".bin"));
        std::fs::write(&path, bytes).unwrap();
        args.push(path.display().to_string());
    }
    // A record as EWN wrote it before: fastavro cannot find its schema. This is the defect
    // the specification's fingerprint fixes (and why readers accept both for a while).
    let (_, incident, _) = &records[0];
    let mut legacy = incident.clone();
    legacy[2..HEADER_LEN].copy_from_slice(&ewn_model::Incident::codec().legacy_fingerprint());
    let legacy_path = dir.path().join("legacy-incident.bin");
    std::fs::write(&legacy_path, &legacy).unwrap();
    args.push(legacy_path.display().to_string());

    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = fastavro(&args);
    let lines: Vec<Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), records.len() + 1, "{}", stdout(&out));
    for ((file, _, expected), line) in records.iter().zip(&lines) {
        assert_eq!(line.get("error"), None, "{file}: {line}");
        let name = format!("ewn.v1.{}", file.trim_end_matches(".avsc"));
        assert_eq!(line["schema"], name.as_str());
        assert_eq!(
            &line["value"], expected,
            "{file}: fastavro decoded other values"
        );
    }
    let last = lines.last().unwrap();
    assert_eq!(
        last["error"], "unknown fingerprint bfa513b70d847e14",
        "{last}"
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "a record it cannot read is a failure"
    );
    // And EWN still reads it.
    assert_eq!(
        ewn_model::Incident::from_avro(&legacy).unwrap(),
        samples::incident()
    );
}
