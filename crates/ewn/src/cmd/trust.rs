//! `ewn trust`: read and change the trust store safely, and check a key or a signed record
//! against it. Changes go through `ewn_trust::store` (every key vetted by the one Ed25519
//! rule, whole-file atomic replacement keeping the file's mode), so the CLI never writes a
//! store the services would refuse to load.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use chrono::{DateTime, Duration};
use ewn_model::validate::printable;
use ewn_trust::{
    AgencyKey, AnyKey, KeyEntry, KeyRole, PublicKey, ServiceKey, SigningTime, TrustStore, Verifier,
    VerifyPolicy, judge_signing_time, keys,
};
use serde_json::{Value, json};

use crate::cli::Global;
use crate::cmd::now_ms;
use crate::view::rfc3339;

#[derive(clap::Args, Debug)]
#[command(after_help = "\
The trust store is `--trust-store FILE`, or `trust.trust_store` of the configuration.

Examples:
  ewn trust list --trust-store trust.toml
  ewn trust add --trust-store trust.toml --key-id kg-2027-01 --state KG --public-key kg.pem
  ewn trust add --trust-store trust.toml --key-id fanout-2027-01 --role service \
      --service fanout --public-key fanout.pem
  ewn trust revoke --trust-store trust.toml kg-2026-01 --at 2026-11-30T12:00:00Z
  ewn trust check --trust-store trust.toml kg-2027-01 --at 2027-03-01T00:00:00Z
  ewn trust check --trust-store trust.toml --record signed-incident.hex

Exit codes: 0 done (check: valid), 1 check: not valid, 2 it could not run (bad input, a \
store that does not load, a refused key, a duplicate key id).")]
pub struct Args {
    /// Trust store file (trust.trust_store).
    #[arg(long, global = true, value_name = "FILE")]
    pub trust_store: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Sub,
}

#[derive(clap::Subcommand, Debug)]
pub enum Sub {
    /// List every key: id, role, the state or service it signs for, validity, revocation,
    /// status now.
    #[command(after_help = "\
Examples:
  ewn trust list --trust-store trust.toml
  ewn trust list --trust-store trust.toml --format json | jq -r 'select(.status==\"valid\").key_id'

Exit codes: 0 listed, 2 the store cannot be read or does not load.")]
    List {
        /// `table` for people, `json` for one object a line.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        /// Judge each key's status at this time (RFC 3339) instead of now.
        #[arg(long, value_name = "TIME", value_parser = parse_time)]
        at: Option<i64>,
    },
    /// Add a member state's public key (role `state`, the default), a service's (role
    /// `service`: it signs that service's audit records, never an incident) or a requesting
    /// agency's X25519 key (role `agency`: case replies are encrypted to it) with its
    /// validity window (the file is created if missing). Weak keys (small-order, mixed-order, non-canonical) and a key id or public
    /// key the store already holds are refused.
    #[command(after_help = "\
The public key file may be the private key `ewn keygen --secret-out` wrote (PKCS#8 PEM, \
mode 0600: only its public half is used), a public key PEM (`openssl pkey -pubout`), or \
the base64 (or hex) of the 32-byte key on one line.

Examples:
  ewn trust add --trust-store trust.toml --key-id kg-2027-01 --state KG --public-key kg.pem
  ewn trust add --trust-store trust.toml --key-id tj-2027-01 --state TJ --public-key tj.pub \\
      --not-before 2027-01-01T00:00:00Z --not-after 2028-01-01T00:00:00Z
  ewn trust add --trust-store trust.toml --key-id rcc-2027 --role agency --agency RCC \\
      --public-key rcc.pub

Exit codes: 0 added, 2 refused (bad key, duplicate id, bad times) or the store cannot be \
written; the store is unchanged.")]
    Add {
        /// Identifier of the key (1..64 printable characters), as the signer puts it in
        /// each envelope.
        #[arg(long)]
        key_id: String,
        /// `state`: the key signs incidents and heartbeats for --state; `service`: it signs
        /// audit records for --service; `agency`: case replies are encrypted to it for
        /// --agency.
        #[arg(long, value_enum, default_value_t = Role::State)]
        role: Role,
        /// Member state the key signs for (ISO 3166-1 alpha-2); role `state` only.
        #[arg(long, value_name = "CC", required_if_eq("role", "state"))]
        state: Option<String>,
        /// Service the key signs for (`fanout`, `processor`, `gateway`, `audit`...); role
        /// `service` only.
        #[arg(
            long,
            value_name = "NAME",
            required_if_eq("role", "service"),
            conflicts_with = "state"
        )]
        service: Option<String>,
        /// Agency the key receives case replies for (as its subscriptions name it); role
        /// `agency` only. Its public key is X25519 (`ewn requests keygen`), not Ed25519.
        #[arg(
            long,
            value_name = "NAME",
            required_if_eq("role", "agency"),
            conflicts_with_all = ["state", "service"]
        )]
        agency: Option<String>,
        /// File holding the public key (see below).
        #[arg(long, value_name = "FILE")]
        public_key: PathBuf,
        /// Start of validity (RFC 3339 or `now`); default now.
        #[arg(long, value_name = "TIME", value_parser = parse_time)]
        not_before: Option<i64>,
        /// End of validity (RFC 3339), exclusive.
        #[arg(long, value_name = "TIME", value_parser = parse_time, conflicts_with = "valid_days")]
        not_after: Option<i64>,
        /// Length of validity in days when --not-after is not given.
        #[arg(long, value_name = "DAYS")]
        valid_days: Option<i64>,
    },
    /// Revoke a key from a time on: every record it signed is refused once that time has
    /// passed (a revoked key is treated as compromised).
    #[command(after_help = "\
Examples:
  ewn trust revoke --trust-store trust.toml kg-2026-01
  ewn trust revoke --trust-store trust.toml kg-2026-01 --at 2026-11-30T12:00:00Z

Exit codes: 0 revoked, 2 no such key, already revoked, or the store cannot be written; \
the store is unchanged.")]
    Revoke {
        key_id: String,
        /// Revocation time (RFC 3339 or `now`, kept to the second); default now.
        #[arg(long, value_name = "TIME", value_parser = parse_time)]
        at: Option<i64>,
    },
    /// Check a key (is a signature it makes at a time accepted?) or a signed incident
    /// record (does it verify against the store, as the processor and `ewn tail` judge it?).
    #[command(after_help = "\
A record file holds one SignedIncident record value: the raw bytes (C3 01 ...), or their \
hex or base64 on one line.

Examples:
  ewn trust check --trust-store trust.toml kg-2027-01
  ewn trust check --trust-store trust.toml kg-2027-01 --at 2027-03-01T00:00:00Z
  ewn trust check --trust-store trust.toml --record incident.bin --format json

Exit codes: 0 valid, 1 not valid (the reason printed), 2 it could not run.")]
    Check {
        /// The key id to check.
        #[arg(required_unless_present = "record", conflicts_with = "record")]
        key_id: Option<String>,
        /// A SignedIncident record file (raw, hex or base64) to verify instead.
        #[arg(long, value_name = "FILE")]
        record: Option<PathBuf>,
        /// Judge at this time (RFC 3339) instead of now: for a key, the signing time and
        /// the verifier's clock; for a record, the verifier's clock.
        #[arg(long, value_name = "TIME", value_parser = parse_time)]
        at: Option<i64>,
        /// `table` (text) for people, `json` for one object.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
}

/// An RFC 3339 time, or `now`, as epoch milliseconds.
fn parse_time(s: &str) -> Result<i64, String> {
    if s == "now" {
        return Ok(now_ms());
    }
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.timestamp_millis())
        .map_err(|e| format!("`{s}` is not an RFC 3339 time (e.g. 2027-01-01T00:00:00Z): {e}"))
}

pub fn run(global: &Global, args: Args) -> anyhow::Result<ExitCode> {
    let extra = args
        .trust_store
        .as_ref()
        .map(|p| ("trust.trust_store".to_string(), p.display().to_string()));
    let settings = global.settings(extra.into_iter().collect())?;
    let Some(path) = settings.trust.trust_store.clone() else {
        bail!("--trust-store FILE (or trust.trust_store) is needed");
    };
    match args.command {
        Sub::List { format, at } => list(&path, format, at.unwrap_or_else(now_ms)),
        Sub::Add {
            key_id,
            role,
            state,
            service,
            agency,
            public_key,
            not_before,
            not_after,
            valid_days,
        } => {
            // One path for every role: the holder flag of the role is required, the
            // others' refused.
            let holder = match (role, state, service, agency) {
                (Role::State, Some(h), None, None)
                | (Role::Service, None, Some(h), None)
                | (Role::Agency, None, None, Some(h)) => h,
                (role, ..) => {
                    let flag = role.holder_flag();
                    bail!(
                        "--role {} takes {flag} only (not the other roles' flags)",
                        role.key_role().as_str()
                    )
                }
            };
            add(
                &path,
                key_id,
                role.key_role(),
                holder,
                &public_key,
                Validity {
                    not_before,
                    not_after,
                    valid_days,
                },
            )
        }
        Sub::Revoke { key_id, at } => {
            let at = at.unwrap_or_else(now_ms);
            let entry = TrustStore::revoke_in_file(&path, &key_id, at)?;
            let signs_for = match &entry {
                AnyKey::State(k) => k.state.clone(),
                other => format!("{} {}", other.role().as_str(), other.holder()),
            };
            println!(
                "revoked key {} ({signs_for}) at {} in {}",
                entry.key_id(),
                rfc3339(entry.revoked_at().unwrap_or(at)),
                path.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Sub::Check {
            key_id,
            record,
            at,
            format,
        } => {
            let store = TrustStore::load(&path)?;
            let at = at.unwrap_or_else(now_ms);
            match (key_id, record) {
                (Some(key_id), None) => check_key(&store, &key_id, at, format),
                (None, Some(record)) => {
                    let policy = VerifyPolicy {
                        max_record_bytes: settings.trust.max_record_bytes,
                        limits: settings.limits,
                        signing_skew_ms: settings.trust.signing_skew_ms(),
                        ..VerifyPolicy::default()
                    };
                    check_record(store, policy, &record, at, format)
                }
                _ => bail!("give a KEY_ID or --record FILE"),
            }
        }
    }
}

/// A key's status at `at`: `valid`, or the closed-set reason code it would be refused with.
fn status(entry: &KeyEntry, at: i64) -> Result<(), (String, String)> {
    judge_signing_time(entry, SigningTime { at, legacy: false }, at, 0)
        .map_err(|(reason, detail)| (reason.code().to_string(), detail))
}

/// What every key of every role shows: its owner under the role's own field (`state`,
/// `service`, `agency`), its validity, and its status at the time asked (`valid`, or why
/// not, with the detail).
struct KeyView<'a> {
    role: KeyRole,
    owner: &'a str,
    key_id: &'a str,
    public_key: String,
    not_before: i64,
    not_after: i64,
    revoked_at: Option<i64>,
    status: Result<(), (String, String)>,
}

impl KeyView<'_> {
    fn json(&self) -> Value {
        let (status, detail) = match &self.status {
            Ok(()) => ("valid", None),
            Err((code, detail)) => (code.as_str(), Some(detail)),
        };
        let mut v = json!({
            "key_id": self.key_id,
            "role": self.role.as_str(),
            "public_key": self.public_key,
            "not_before": rfc3339(self.not_before),
            "not_after": rfc3339(self.not_after),
            "revoked_at": self.revoked_at.map(rfc3339),
            "status": status,
            "detail": detail,
        });
        let owner_field = match self.role {
            KeyRole::State => "state",
            KeyRole::Service => "service",
            KeyRole::Agency => "agency",
        };
        v[owner_field] = json!(self.owner);
        v
    }

    /// One line for `ewn trust check`: the key, its owner, and whether it is valid at `at`
    /// (for what, and from when to when), or why not. A state key's refusal carries its
    /// reason code (the verifiers' closed set); the other roles have none but `not_valid`.
    fn sentence(&self, at: i64) -> String {
        let (owner, purpose) = match self.role {
            KeyRole::State => (self.owner.to_string(), ""),
            KeyRole::Service => (format!("service {}", self.owner), " for audit records"),
            KeyRole::Agency => (format!("agency {}", self.owner), " for case replies"),
        };
        let key = format!("key {} ({owner})", self.key_id);
        match &self.status {
            Ok(()) => format!(
                "{key}: valid at {}{purpose} (valid {} to {})",
                rfc3339(at),
                rfc3339(self.not_before),
                rfc3339(self.not_after)
            ),
            Err((code, detail)) if self.role == KeyRole::State => {
                format!("{key}: NOT VALID at {}: {code}: {detail}", rfc3339(at))
            }
            Err((_, detail)) => format!("{key}: NOT VALID at {}: {detail}", rfc3339(at)),
        }
    }
}

/// The view of the key `key_id` of whichever role holds it.
fn key_view<'a>(store: &'a TrustStore, key_id: &str, at: i64) -> Option<KeyView<'a>> {
    store
        .service_key(key_id)
        .map(|e| service_view(e, at))
        .or_else(|| store.agency_key(key_id).map(|e| agency_view(e, at)))
        .or_else(|| store.get(key_id).map(|e| entry_view(e, at)))
}

fn entry_view(entry: &KeyEntry, at: i64) -> KeyView<'_> {
    KeyView {
        role: KeyRole::State,
        owner: &entry.state,
        key_id: &entry.key_id,
        public_key: entry.public_key_base64(),
        not_before: entry.not_before,
        not_after: entry.not_after,
        revoked_at: entry.revoked_at,
        status: status(entry, at),
    }
}

fn service_view(entry: &ServiceKey, at: i64) -> KeyView<'_> {
    KeyView {
        role: KeyRole::Service,
        owner: &entry.service,
        key_id: &entry.key_id,
        public_key: entry.public_key_base64(),
        not_before: entry.not_before,
        not_after: entry.not_after,
        revoked_at: entry.revoked_at,
        status: entry
            .judge(at, at, 0)
            .map_err(|detail| ("not_valid".to_string(), detail)),
    }
}

fn agency_view(entry: &AgencyKey, at: i64) -> KeyView<'_> {
    KeyView {
        role: KeyRole::Agency,
        owner: &entry.agency,
        key_id: &entry.key_id,
        public_key: entry.public_key_base64(),
        not_before: entry.not_before,
        not_after: entry.not_after,
        revoked_at: entry.revoked_at,
        status: entry
            .usable_at(at)
            .map_err(|detail| ("not_valid".to_string(), detail)),
    }
}

fn list(path: &Path, format: Format, at: i64) -> anyhow::Result<ExitCode> {
    let store = TrustStore::load(path)?;
    let mut rows: Vec<Value> = store
        .entries()
        .map(|e| entry_view(e, at))
        .chain(store.service_keys().map(|e| service_view(e, at)))
        .chain(store.agency_keys().map(|e| agency_view(e, at)))
        .map(|v| v.json())
        .collect();
    rows.sort_by(|a, b| a["key_id"].as_str().cmp(&b["key_id"].as_str()));
    match format {
        Format::Json => {
            for row in rows {
                println!("{row}");
            }
        }
        Format::Table => {
            let cells: Vec<[String; 7]> = rows
                .iter()
                .map(|r| {
                    let s = |k: &str| r[k].as_str().unwrap_or("-").to_string();
                    [
                        s("key_id"),
                        s("role"),
                        r["state"]
                            .as_str()
                            .or(r["service"].as_str())
                            .or(r["agency"].as_str())
                            .unwrap_or("-")
                            .to_string(),
                        s("not_before"),
                        s("not_after"),
                        s("revoked_at"),
                        s("status"),
                    ]
                })
                .collect();
            print_table(
                &[
                    "KEY_ID",
                    "ROLE",
                    "FOR",
                    "NOT_BEFORE",
                    "NOT_AFTER",
                    "REVOKED_AT",
                    "STATUS",
                ],
                &cells,
            );
            println!(
                "{} keys in {} (status at {})",
                rows.len(),
                path.display(),
                rfc3339(at)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints left-aligned columns separated by two spaces.
pub fn print_table<const N: usize>(header: &[&str; N], rows: &[[String; N]]) {
    let mut widths = header.map(str::len);
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let parts: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", parts.join("  ").trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    State,
    Service,
    Agency,
}

impl Role {
    fn key_role(self) -> KeyRole {
        match self {
            Role::State => KeyRole::State,
            Role::Service => KeyRole::Service,
            Role::Agency => KeyRole::Agency,
        }
    }

    fn holder_flag(self) -> &'static str {
        match self {
            Role::State => "--state CC",
            Role::Service => "--service NAME",
            Role::Agency => "--agency NAME",
        }
    }
}

struct Validity {
    not_before: Option<i64>,
    not_after: Option<i64>,
    valid_days: Option<i64>,
}

fn add(
    path: &Path,
    key_id: String,
    role: KeyRole,
    holder: String,
    public_key: &Path,
    validity: Validity,
) -> anyhow::Result<ExitCode> {
    let Validity {
        not_before,
        not_after,
        valid_days,
    } = validity;
    let holder = match role {
        KeyRole::State => holder.to_ascii_uppercase(),
        _ => holder,
    };
    ewn_trust::store::check_holder(role, &holder).map_err(|why| anyhow::anyhow!("--{why}"))?;
    let bytes = read_public_key(public_key, role)?;
    let refused = |why: String| {
        anyhow::anyhow!(
            "--public-key {}: the key is refused: {why}",
            public_key.display()
        )
    };
    let not_before = not_before.unwrap_or_else(now_ms);
    let not_after = match (not_after, valid_days) {
        (Some(t), _) => t,
        (None, Some(d)) if d < 1 => bail!("--valid-days must be at least 1"),
        (None, d) => not_before.saturating_add(Duration::days(d.unwrap_or(365)).num_milliseconds()),
    };
    if not_after <= not_before {
        bail!(
            "--not-after {} is not after --not-before {}",
            rfc3339(not_after),
            rfc3339(not_before)
        );
    }
    let entry = match role {
        KeyRole::Agency => {
            ewn_trust::store::check_x25519_public(&bytes).map_err(|w| refused(w.to_string()))?;
            AnyKey::Agency(AgencyKey {
                key_id: key_id.clone(),
                agency: holder,
                public_key: bytes,
                not_before,
                not_after,
                revoked_at: None,
            })
        }
        KeyRole::State | KeyRole::Service => {
            let key = PublicKey::from_bytes(&bytes).map_err(|w| refused(w.to_string()))?;
            if role == KeyRole::State {
                AnyKey::State(KeyEntry {
                    key_id: key_id.clone(),
                    state: holder,
                    public_key: key,
                    not_before,
                    not_after,
                    revoked_at: None,
                })
            } else {
                AnyKey::Service(ServiceKey {
                    key_id: key_id.clone(),
                    service: holder,
                    public_key: key,
                    not_before,
                    not_after,
                    revoked_at: None,
                })
            }
        }
    };
    match TrustStore::load(path) {
        Ok(store) => {
            if let Some(same) = store
                .all()
                .find(|e| e.public_key_bytes() == bytes)
                .map(|e| e.key_id().to_string())
            {
                bail!(
                    "{}: this public key is already trusted as `{same}`; one key, one id, one role",
                    path.display(),
                );
            }
        }
        Err(ewn_trust::Error::Io { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e.into()),
    }
    TrustStore::append_any_to_file(path, &entry).with_context(|| format!("{}", path.display()))?;
    let shown = match &entry {
        AnyKey::State(k) => k.state.clone(),
        other => format!("{} {}", other.role().as_str(), other.holder()),
    };
    println!(
        "added key {key_id} ({shown}), valid {} to {}, to {}",
        rfc3339(not_before),
        rfc3339(not_after),
        path.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// The DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410): the 32 key bytes follow.
const SPKI_ED25519_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// The 32 bytes of a public key from a PKCS#8 private key PEM (its public half), a public
/// key PEM, or base64 or hex text. Not yet vetted: the caller checks it.
fn read_public_key(path: &Path, role: KeyRole) -> anyhow::Result<[u8; 32]> {
    let name = path.display();
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("--public-key {name}: cannot read it as text"))?;
    let text = text.trim();
    if text.starts_with("ewn-agency-x25519-secret") {
        if role != KeyRole::Agency {
            bail!("--public-key {name}: an agency (X25519) key; only --role agency takes it");
        }
        let key = ewn_trust::case::AgencySecret::load(path).context("--public-key")?;
        return Ok(key.public_key());
    }
    if role == KeyRole::Agency && text.starts_with("-----BEGIN") {
        bail!(
            "--public-key {name}: an Ed25519 PEM key; an agency key is X25519 (ewn requests keygen writes one)"
        );
    }
    if text.starts_with("-----BEGIN PRIVATE KEY-----") {
        let key = keys::load_signing_key(path).context("--public-key")?;
        return Ok(PublicKey::from(&key).to_bytes());
    }
    if let Some(body) = text
        .strip_prefix("-----BEGIN PUBLIC KEY-----")
        .and_then(|t| t.strip_suffix("-----END PUBLIC KEY-----"))
    {
        let der: String = body.split_whitespace().collect();
        let der = B64
            .decode(der)
            .map_err(|e| anyhow::anyhow!("--public-key {name}: PEM body is not base64: {e}"))?;
        return der
            .strip_prefix(&SPKI_ED25519_PREFIX)
            .and_then(|k| <[u8; 32]>::try_from(k).ok())
            .ok_or_else(|| anyhow::anyhow!("--public-key {name}: not an Ed25519 public key PEM"));
    }
    if text.starts_with("-----BEGIN") {
        bail!("--public-key {name}: a PEM file, but neither PRIVATE KEY (PKCS#8) nor PUBLIC KEY");
    }
    let bytes = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        hex::decode(text).ok()
    } else {
        B64.decode(text).ok()
    };
    bytes
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .ok_or_else(|| {
            anyhow::anyhow!("--public-key {name}: not a PEM key, nor base64 or hex of 32 bytes")
        })
}

fn check_key(
    store: &TrustStore,
    key_id: &str,
    at: i64,
    format: Format,
) -> anyhow::Result<ExitCode> {
    let Some(view) = key_view(store, key_id, at) else {
        let out = json!({"key_id": printable(key_id), "valid": false, "reason": "unknown_key",
                         "detail": "not in the trust store", "at": rfc3339(at)});
        emit(
            format,
            &out,
            &format!(
                "key {}: NOT VALID at {}: not in the trust store",
                printable(key_id),
                rfc3339(at)
            ),
        );
        return Ok(ExitCode::from(1));
    };
    let mut out = view.json();
    out["at"] = json!(rfc3339(at));
    out["valid"] = json!(view.status.is_ok());
    emit(format, &out, &view.sentence(at));
    Ok(ExitCode::from(u8::from(view.status.is_err())))
}

fn emit(format: Format, json: &Value, text: &str) {
    match format {
        Format::Json => println!("{json}"),
        Format::Table => println!("{text}"),
    }
}

/// A record value from a file: raw single-object bytes, or their hex or base64.
fn read_record(path: &Path) -> anyhow::Result<Vec<u8>> {
    let bytes =
        std::fs::read(path).with_context(|| format!("--record {}: cannot read", path.display()))?;
    if bytes.starts_with(&[0xc3, 0x01]) {
        return Ok(bytes);
    }
    let text = std::str::from_utf8(&bytes).map(str::trim).map_err(|_| {
        anyhow::anyhow!(
            "--record {}: neither a record (C3 01 ...) nor text",
            path.display()
        )
    })?;
    let decoded = if text.len() % 2 == 0 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        hex::decode(text).ok()
    } else {
        B64.decode(text).ok()
    };
    match decoded {
        Some(d) if d.starts_with(&[0xc3, 0x01]) => Ok(d),
        _ => bail!(
            "--record {}: not a single-object-encoded record (raw, hex or base64 of bytes starting C3 01)",
            path.display()
        ),
    }
}

fn check_record(
    store: TrustStore,
    policy: VerifyPolicy,
    path: &Path,
    at: i64,
    format: Format,
) -> anyhow::Result<ExitCode> {
    let value = read_record(path)?;
    let verifier = Verifier::new(Arc::new(store), policy);
    match verifier.verify(&value, None, at) {
        Ok(ok) => {
            let out = json!({
                "valid": true,
                "key_id": ok.envelope.key_id,
                "state": ok.incident.reporter.state,
                "incident_id": ok.incident.incident_id,
                "signed_at": ok.envelope.signed_at.map(rfc3339),
                "at": rfc3339(at),
            });
            let text = format!(
                "record {}: valid: signed by {} ({}){}",
                ok.incident.incident_id,
                ok.envelope.key_id,
                ok.incident.reporter.state,
                ok.envelope
                    .signed_at
                    .map(|t| format!(" at {}", rfc3339(t)))
                    .unwrap_or_default()
            );
            emit(format, &out, &text);
            Ok(ExitCode::SUCCESS)
        }
        Err(rejected) => {
            let out = json!({
                "valid": false,
                "reason": rejected.reason.code(),
                "detail": rejected.detail,
                "key_id": rejected.key_id,
                "incident_id": rejected.incident_id,
                "at": rfc3339(at),
            });
            let text = format!(
                "record: NOT VALID: {}: {}",
                rejected.reason.code(),
                rejected.detail
            );
            emit(format, &out, &text);
            Ok(ExitCode::from(1))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_agency_key_is_x25519_and_an_ed25519_key_is_not_one() {
        let dir = tempfile::tempdir().unwrap();
        let pem = dir.path().join("kz.pem");
        keys::save_signing_key(&pem, &keys::generate()).unwrap();
        let err = read_public_key(&pem, KeyRole::Agency)
            .unwrap_err()
            .to_string();
        assert!(err.contains("an agency key is X25519"), "{err}");
        let secret = dir.path().join("rcc.key");
        let agency = ewn_trust::case::AgencySecret::generate();
        agency.save(&secret).unwrap();
        assert_eq!(
            read_public_key(&secret, KeyRole::Agency).unwrap(),
            agency.public_key()
        );
        let err = read_public_key(&secret, KeyRole::State)
            .unwrap_err()
            .to_string();
        assert!(err.contains("only --role agency takes it"), "{err}");
    }

    #[test]
    fn times_parse_or_say_what_is_wrong() {
        assert_eq!(parse_time("2027-01-01T00:00:00Z"), Ok(1_798_761_600_000));
        let err = parse_time("tomorrow").unwrap_err();
        assert!(err.contains("`tomorrow` is not an RFC 3339 time"), "{err}");
    }
}
