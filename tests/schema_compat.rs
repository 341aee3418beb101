//! Every schema stays backward compatible with each of its previously committed versions:
//! a reader on the current schema can read what any earlier version wrote.

#![allow(clippy::unwrap_used)] // tests fail loudly on anything unexpected

use std::path::Path;
use std::process::Command;

use apache_avro::Schema;
use apache_avro::schema_compatibility::SchemaCompatibility;

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

fn git(args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(root())
        .output()
        .expect("git must be installed for this test");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn current_schemas_read_every_committed_version() {
    let inside = git(&["rev-parse", "--is-inside-work-tree"]);
    assert_eq!(
        inside.trim(),
        "true",
        "this check needs the git history of schemas/"
    );
    let mut checked = 0;
    for entry in std::fs::read_dir(root().join("schemas")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "avsc") {
            continue;
        }
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        let current = Schema::parse_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let rel = format!("schemas/{name}");
        for commit in git(&["log", "--format=%H", "--", &rel]).lines() {
            let old_text = git(&["show", &format!("{commit}:{rel}")]);
            let old =
                Schema::parse_str(&old_text).unwrap_or_else(|e| panic!("{rel}@{commit}: {e}"));
            if let Err(e) = SchemaCompatibility::can_read(&old, &current) {
                panic!("{rel} cannot read data written by its version at {commit}: {e}");
            }
            checked += 1;
        }
    }
    assert!(
        checked >= 7,
        "every schema has at least one committed version (checked {checked})"
    );
}

#[test]
fn the_check_catches_an_incompatible_change() {
    let old = Schema::parse_str(include_str!("../schemas/Ack.avsc")).unwrap();
    let mut json: serde_json::Value =
        serde_json::from_str(include_str!("../schemas/Ack.avsc")).unwrap();
    json["fields"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"name": "priority", "type": "int"}));
    let new = Schema::parse_str(&json.to_string()).unwrap();
    assert!(
        SchemaCompatibility::can_read(&old, &new).is_err(),
        "a field without a default breaks old data"
    );
    json["fields"].as_array_mut().unwrap().pop();
    json["fields"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"name": "priority", "type": "int", "default": 0}));
    let new = Schema::parse_str(&json.to_string()).unwrap();
    assert!(
        SchemaCompatibility::can_read(&old, &new).is_ok(),
        "a field with a default is compatible"
    );
}
