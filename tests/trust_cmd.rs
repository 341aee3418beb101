//! `ewn trust` end to end through the binary: add a key `ewn keygen` made, list it, check
//! it and a record it signed, revoke it; writes are atomic and keep the file's mode; weak
//! keys and duplicate ids are refused with the store left byte for byte as it was.

#![allow(clippy::unwrap_used)] // tests fail loudly on anything unexpected

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ewn_model::{AvroRecord, Category};
use ewn_trust::{IncidentSigner, keys};

fn ewn(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ewn"))
        .args(args)
        // A configuration from the environment must not choose the store under test.
        .env_remove("EWN__TRUST__TRUST_STORE")
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap()
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// `ewn keygen` for `state`: the secret PEM, with its entry in a scratch store.
fn keygen(dir: &Path, state: &str, key_id: &str) -> std::path::PathBuf {
    let pem = dir.join(format!("{key_id}.pem"));
    let scratch = dir.join(format!("{key_id}-scratch.toml"));
    let out = ewn(&[
        "keygen",
        "--state",
        state,
        "--key-id",
        key_id,
        "--secret-out",
        p(&pem),
        "--trust-store",
        p(&scratch),
    ]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    pem
}

fn list_json(store: &Path, at: Option<&str>) -> Vec<serde_json::Value> {
    let mut args = vec![
        "trust",
        "list",
        "--trust-store",
        p(store),
        "--format",
        "json",
    ];
    if let Some(at) = at {
        args.extend(["--at", at]);
    }
    let out = ewn(&args);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Files in `dir` other than those named: a temporary file left behind shows here.
fn others(dir: &Path, known: &[&str]) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !known.contains(&n.as_str()))
        .collect()
}

#[test]
fn add_list_check_revoke_keep_the_file_and_its_mode() {
    let dir = tempfile::tempdir().unwrap();
    let pem = keygen(dir.path(), "KG", "kg-2027-01");
    let store = dir.path().join("trust.toml");
    std::fs::write(&store, "# network trust store: edit with `ewn trust`\n").unwrap();
    std::fs::set_permissions(&store, std::fs::Permissions::from_mode(0o640)).unwrap();
    let known = [
        "trust.toml",
        "kg-2027-01.pem",
        "kg-2027-01-scratch.toml",
        "record.hex",
        "record.b64",
        "tj.pub",
    ];

    let out = ewn(&[
        "trust",
        "add",
        "--trust-store",
        p(&store),
        "--key-id",
        "kg-2027-01",
        "--state",
        "kg",
        "--public-key",
        p(&pem),
        "--not-before",
        "2026-01-01T00:00:00Z",
        "--not-after",
        "2030-01-01T00:00:00Z",
    ]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stdout(&out).contains("added key kg-2027-01 (KG)"),
        "{}",
        stdout(&out)
    );

    // A second key as a public key PEM (SubjectPublicKeyInfo, as `openssl pkey -pubout`).
    let tj = keys::generate();
    let mut der = vec![
        0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
    ];
    der.extend_from_slice(&tj.verifying_key().to_bytes());
    let tj_pub = dir.path().join("tj.pub");
    std::fs::write(
        &tj_pub,
        format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            B64.encode(&der)
        ),
    )
    .unwrap();
    let out = ewn(&[
        "trust",
        "add",
        "--trust-store",
        p(&store),
        "--key-id",
        "tj-2027-01",
        "--state",
        "TJ",
        "--public-key",
        p(&tj_pub),
        "--valid-days",
        "30",
    ]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));

    let text = std::fs::read_to_string(&store).unwrap();
    assert!(
        text.starts_with("# network trust store"),
        "comment kept: {text}"
    );
    let mode = std::fs::metadata(&store).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o640, "mode kept");
    assert!(
        others(dir.path(), &known).is_empty(),
        "{:?}",
        others(dir.path(), &known)
    );

    let rows = list_json(&store, None);
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["key_id"], "kg-2027-01");
    assert_eq!(rows[0]["state"], "KG");
    assert_eq!(rows[0]["not_before"], "2026-01-01T00:00:00.000Z");
    assert_eq!(rows[0]["not_after"], "2030-01-01T00:00:00.000Z");
    assert_eq!(rows[0]["revoked_at"], serde_json::Value::Null);
    assert_eq!(rows[0]["status"], "valid");
    assert_eq!(rows[1]["key_id"], "tj-2027-01");
    assert_eq!(
        rows[1]["public_key"],
        B64.encode(tj.verifying_key().to_bytes())
    );
    let table = ewn(&["trust", "list", "--trust-store", p(&store)]);
    assert_eq!(code(&table), 0);
    let table = stdout(&table);
    assert!(
        table.lines().next().unwrap().starts_with("KEY_ID"),
        "{table}"
    );
    assert!(table.contains("2 keys in"), "{table}");

    // Check the key: valid now, not before its window.
    let out = ewn(&["trust", "check", "--trust-store", p(&store), "kg-2027-01"]);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("valid at"), "{}", stdout(&out));
    let out = ewn(&[
        "trust",
        "check",
        "--trust-store",
        p(&store),
        "kg-2027-01",
        "--at",
        "2025-06-01T00:00:00Z",
    ]);
    assert_eq!(code(&out), 1);
    assert!(
        stdout(&out).contains("key_not_yet_valid"),
        "{}",
        stdout(&out)
    );
    let out = ewn(&["trust", "check", "--trust-store", p(&store), "nobody"]);
    assert_eq!(code(&out), 1);
    assert!(
        stdout(&out).contains("not in the trust store"),
        "{}",
        stdout(&out)
    );

    // A record the key signed, as hex and as base64: verified against the store.
    let mut signer = IncidentSigner::new("kg-2027-01", keys::load_signing_key(&pem).unwrap());
    let now = common::now_ms();
    let incident = common::incident(1, "KG", now - 60_000, Category::WatchlistHit, &["x"]);
    let signed = signer.sign(&incident, now - 1_000).unwrap();
    let bytes = signed.to_avro().unwrap();
    let hex_file = dir.path().join("record.hex");
    std::fs::write(&hex_file, hex::encode(&bytes)).unwrap();
    let b64_file = dir.path().join("record.b64");
    std::fs::write(&b64_file, B64.encode(&bytes)).unwrap();
    for file in [&hex_file, &b64_file] {
        let out = ewn(&[
            "trust",
            "check",
            "--trust-store",
            p(&store),
            "--record",
            p(file),
            "--format",
            "json",
        ]);
        assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
        let v: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
        assert_eq!(v["valid"], true);
        assert_eq!(v["key_id"], "kg-2027-01");
        assert_eq!(v["incident_id"], incident.incident_id);
    }

    // Revoke it, one minute ago: the key and the record it signed are refused now.
    let revoked_at = chrono::DateTime::from_timestamp(now / 1000 - 60, 0).unwrap();
    let revoked_at = revoked_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let out = ewn(&[
        "trust",
        "revoke",
        "--trust-store",
        p(&store),
        "kg-2027-01",
        "--at",
        &revoked_at,
    ]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stdout(&out).contains("revoked key kg-2027-01"),
        "{}",
        stdout(&out)
    );
    let text = std::fs::read_to_string(&store).unwrap();
    assert!(
        text.starts_with("# network trust store"),
        "comment kept: {text}"
    );
    assert!(
        text.contains(&format!("revoked_at = \"{revoked_at}\"")),
        "{text}"
    );
    let mode = std::fs::metadata(&store).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o640, "mode kept by revoke");
    assert!(
        others(dir.path(), &known).is_empty(),
        "{:?}",
        others(dir.path(), &known)
    );

    let rows = list_json(&store, None);
    assert_eq!(rows[0]["status"], "key_revoked");
    assert_eq!(rows[1]["status"], "valid", "the other key is untouched");
    let out = ewn(&["trust", "check", "--trust-store", p(&store), "kg-2027-01"]);
    assert_eq!(code(&out), 1);
    assert!(stdout(&out).contains("NOT VALID") && stdout(&out).contains("key_revoked"));
    let out = ewn(&[
        "trust",
        "check",
        "--trust-store",
        p(&store),
        "--record",
        p(&hex_file),
    ]);
    assert_eq!(code(&out), 1, "{}", stdout(&out));
    assert!(stdout(&out).contains("key_revoked"), "{}", stdout(&out));

    // Revoking twice, or a key the store does not hold, is refused.
    let out = ewn(&["trust", "revoke", "--trust-store", p(&store), "kg-2027-01"]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("already revoked"), "{}", stderr(&out));
    let out = ewn(&["trust", "revoke", "--trust-store", p(&store), "nobody"]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("no key `nobody`"), "{}", stderr(&out));
}

#[test]
fn weak_keys_duplicate_ids_and_bad_input_are_refused_and_the_store_is_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let pem = keygen(dir.path(), "KZ", "kz-1");
    let store = dir.path().join("trust.toml");
    let add = |key_id: &str, file: &Path, extra: &[&str]| {
        let mut args = vec![
            "trust",
            "add",
            "--trust-store",
            p(&store),
            "--key-id",
            key_id,
            "--state",
            "KZ",
            "--public-key",
            p(file),
        ];
        args.extend(extra);
        ewn(&args)
    };
    let out = add("kz-1", &pem, &[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let before = std::fs::read(&store).unwrap();

    // The identity point (order 1) and a point of order 4: small-order keys.
    let mut identity = [0u8; 32];
    identity[0] = 1;
    let order4 = [0u8; 32];
    for (i, bytes) in [identity, order4].into_iter().enumerate() {
        let weak = dir.path().join(format!("weak{i}.b64"));
        std::fs::write(&weak, B64.encode(bytes)).unwrap();
        let out = add("kz-weak", &weak, &[]);
        assert_eq!(code(&out), 2, "{}", stdout(&out));
        assert!(
            stderr(&out).contains("the key is refused: a small-order point"),
            "{}",
            stderr(&out)
        );
    }
    // A non-canonical encoding (y = p + 1), as hex.
    let mut y_p_plus_1 = [0xff; 32];
    y_p_plus_1[0] = 0xee;
    y_p_plus_1[31] = 0x7f;
    let nc = dir.path().join("nc.hex");
    std::fs::write(&nc, hex::encode(y_p_plus_1)).unwrap();
    let out = add("kz-nc", &nc, &[]);
    assert_eq!(code(&out), 2);
    assert!(
        stderr(&out).contains("not the canonical encoding"),
        "{}",
        stderr(&out)
    );

    // The same key id again (with a fresh key), and the same key under another id.
    let other = keygen(dir.path(), "KZ", "kz-2");
    let out = add("kz-1", &other, &[]);
    assert_eq!(code(&out), 2);
    assert!(
        stderr(&out).contains("trust store already holds key `kz-1`"),
        "{}",
        stderr(&out)
    );
    let out = add("kz-1-again", &pem, &[]);
    assert_eq!(code(&out), 2);
    assert!(
        stderr(&out).contains("already trusted as `kz-1`"),
        "{}",
        stderr(&out)
    );

    // Bad input names what is wrong.
    let out = add("kz-3", &other, &["--not-before", "yesterday"]);
    assert_eq!(code(&out), 2);
    assert!(
        stderr(&out).contains("`yesterday` is not an RFC 3339 time"),
        "{}",
        stderr(&out)
    );
    let out = add(
        "kz-3",
        &other,
        &[
            "--not-before",
            "2027-01-01T00:00:00Z",
            "--not-after",
            "2026-01-01T00:00:00Z",
        ],
    );
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("--not-after"), "{}", stderr(&out));
    let garbage = dir.path().join("garbage.txt");
    std::fs::write(&garbage, "not a key").unwrap();
    let out = add("kz-3", &garbage, &[]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("not a PEM key, nor base64 or hex of 32 bytes"));
    // An insecure private key file is refused rather than read.
    std::fs::set_permissions(&other, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = add("kz-3", &other, &[]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("chmod 600"), "{}", stderr(&out));
    let out = ewn(&[
        "trust",
        "add",
        "--trust-store",
        p(&store),
        "--key-id",
        "x",
        "--state",
        "K1",
        "--public-key",
        p(&pem),
    ]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("--state `K1`"), "{}", stderr(&out));

    assert_eq!(
        std::fs::read(&store).unwrap(),
        before,
        "the store is unchanged"
    );
    let rows = list_json(&store, None);
    assert_eq!(rows.len(), 1);

    // A store that does not load is named with its problem, not rewritten.
    std::fs::write(&store, "[[keys]]\nkey_id = \"w\"\n").unwrap();
    let out = add("kz-3", &pem, &[]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("missing field"), "{}", stderr(&out));
}
