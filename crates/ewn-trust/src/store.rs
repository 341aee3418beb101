//! The trust store: which public key may sign for which member state, and when.
//!
//! ```toml
//! [[keys]]
//! key_id = "kz-2026-01"
//! state = "KZ"
//! public_key = "base64 of the 32-byte Ed25519 public key"
//! not_before = "2026-01-01T00:00:00Z"
//! not_after = "2027-01-01T00:00:00Z"
//! revoked_at = "2026-06-01T00:00:00Z"   # optional
//!
//! [[keys]]
//! key_id = "fanout-2026-01"
//! role = "service"          # signs audit records for one service, never an incident
//! service = "fanout"
//! public_key = "..."
//! not_before = "2026-01-01T00:00:00Z"
//! not_after = "2027-01-01T00:00:00Z"
//! ```
//!
//! Every key has a role. `state` (the default, so every store written before roles existed
//! loads unchanged) signs incidents and heartbeats for one member state; `service` signs
//! audit records for one named service (`fanout`, `processor`, `gateway`, `audit`...). A key
//! never serves two roles: the incident verifier finds only state keys ([`TrustStore::get`])
//! and the audit verifier only service keys ([`TrustStore::service_key`]), so a signature
//! made under one role is refused in the other. (An `agency` role, X25519 keys that case
//! replies are encrypted to, is reserved for those replies; a store naming it is refused
//! until they exist.)

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use chrono::{DateTime, SecondsFormat, Utc};
use ewn_model::validate::{is_state_code, printable};
use serde::Deserialize;

use crate::ed25519::PublicKey;
use crate::error::{Error, Result};

/// A trusted public key.
#[derive(Clone, Debug)]
pub struct KeyEntry {
    pub key_id: String,
    /// Upper-case ISO 3166-1 alpha-2 code of the member state the key signs for.
    pub state: String,
    /// Canonically encoded and of prime order: [`PublicKey`] cannot hold anything else.
    pub public_key: PublicKey,
    pub not_before: i64,
    pub not_after: i64,
    pub revoked_at: Option<i64>,
}

/// The role of a key in the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyRole {
    /// Signs incidents and heartbeats for one member state.
    State,
    /// Signs audit records for one named service.
    Service,
    /// An X25519 key case replies are encrypted to, for one requesting agency; signs nothing.
    Agency,
}

impl KeyRole {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyRole::State => "state",
            KeyRole::Service => "service",
            KeyRole::Agency => "agency",
        }
    }

    pub fn parse(s: &str) -> Option<KeyRole> {
        match s {
            "state" => Some(KeyRole::State),
            "service" => Some(KeyRole::Service),
            "agency" => Some(KeyRole::Agency),
            _ => None,
        }
    }
}

/// A trusted public key of a service: it signs that service's audit records, nothing else.
#[derive(Clone, Debug)]
pub struct ServiceKey {
    pub key_id: String,
    /// The service it signs for (`fanout`, `processor`, `gateway`, `audit`...).
    pub service: String,
    pub public_key: PublicKey,
    pub not_before: i64,
    pub not_after: i64,
    pub revoked_at: Option<i64>,
}

impl ServiceKey {
    /// The key-validity rule of incidents, for a record signed at `signed_at` and judged at
    /// `now_ms`: the signing time no later than `now + skew`, not revoked at
    /// `max(now, signing time)`, `not_before <= t < not_after`. Pure: the clock is passed in.
    pub fn judge(
        &self,
        signed_at: i64,
        now_ms: i64,
        skew_ms: i64,
    ) -> std::result::Result<(), String> {
        if signed_at > now_ms.saturating_add(skew_ms) {
            return Err(format!(
                "signed_at is {} ms ahead of this clock (at most {skew_ms} ms)",
                signed_at.saturating_sub(now_ms)
            ));
        }
        if let Some(r) = self.revoked_at
            && r <= now_ms.max(signed_at)
        {
            return Err(format!("key {}: revoked", printable(&self.key_id)));
        }
        if signed_at < self.not_before {
            return Err(format!(
                "key {}: not yet valid at signed_at",
                printable(&self.key_id)
            ));
        }
        if signed_at >= self.not_after {
            return Err(format!(
                "key {}: expired at signed_at",
                printable(&self.key_id)
            ));
        }
        Ok(())
    }

    pub fn public_key_base64(&self) -> String {
        B64.encode(self.public_key.as_bytes())
    }

    fn to_toml(&self) -> String {
        AnyKey::Service(self.clone()).to_toml()
    }
}

/// A requesting agency's X25519 public key: approved case replies are encrypted to it.
#[derive(Clone, Debug)]
pub struct AgencyKey {
    pub key_id: String,
    /// The agency, as its subscriptions and desk tokens name it.
    pub agency: String,
    /// A point of Curve25519 in Montgomery form that is not of small order.
    pub public_key: [u8; 32],
    pub not_before: i64,
    pub not_after: i64,
    pub revoked_at: Option<i64>,
}

impl AgencyKey {
    /// Whether a reply may be encrypted to this key at `now_ms`.
    pub fn usable_at(&self, now_ms: i64) -> std::result::Result<(), String> {
        if self.revoked_at.is_some_and(|r| r <= now_ms) {
            return Err(format!("key {}: revoked", printable(&self.key_id)));
        }
        if now_ms < self.not_before || now_ms >= self.not_after {
            return Err(format!(
                "key {}: not valid at this time",
                printable(&self.key_id)
            ));
        }
        Ok(())
    }

    pub fn public_key_base64(&self) -> String {
        B64.encode(self.public_key)
    }
}

/// Refuses an X25519 public key that is not a point of the curve (a point of the twist) or
/// whose order divides the cofactor: a shared secret with it would be predictable.
pub fn check_x25519_public(bytes: &[u8; 32]) -> std::result::Result<(), &'static str> {
    let point = curve25519_dalek::montgomery::MontgomeryPoint(*bytes);
    // Either sign of the Edwards form has the same order; only the curve check matters.
    match point.to_edwards(0) {
        None => Err("not a point of Curve25519"),
        Some(p) if p.is_small_order() => Err("a small-order point"),
        Some(_) => Ok(()),
    }
}

/// An entry of any role, as the file holds it.
#[derive(Clone, Debug)]
pub enum AnyKey {
    State(KeyEntry),
    Service(ServiceKey),
    Agency(AgencyKey),
}

impl AnyKey {
    pub fn key_id(&self) -> &str {
        match self {
            AnyKey::State(k) => &k.key_id,
            AnyKey::Service(k) => &k.key_id,
            AnyKey::Agency(k) => &k.key_id,
        }
    }

    pub fn role(&self) -> KeyRole {
        match self {
            AnyKey::State(_) => KeyRole::State,
            AnyKey::Service(_) => KeyRole::Service,
            AnyKey::Agency(_) => KeyRole::Agency,
        }
    }

    /// The state, service or agency the key is for.
    pub fn holder(&self) -> &str {
        match self {
            AnyKey::State(k) => &k.state,
            AnyKey::Service(k) => &k.service,
            AnyKey::Agency(k) => &k.agency,
        }
    }

    pub fn public_key_bytes(&self) -> [u8; 32] {
        match self {
            AnyKey::State(k) => k.public_key.to_bytes(),
            AnyKey::Service(k) => k.public_key.to_bytes(),
            AnyKey::Agency(k) => k.public_key,
        }
    }

    pub fn validity(&self) -> (i64, i64) {
        match self {
            AnyKey::State(k) => (k.not_before, k.not_after),
            AnyKey::Service(k) => (k.not_before, k.not_after),
            AnyKey::Agency(k) => (k.not_before, k.not_after),
        }
    }

    pub fn revoked_at(&self) -> Option<i64> {
        match self {
            AnyKey::State(k) => k.revoked_at,
            AnyKey::Service(k) => k.revoked_at,
            AnyKey::Agency(k) => k.revoked_at,
        }
    }

    /// The `[[keys]]` table of the entry, as the store file holds it.
    pub fn to_toml(&self) -> String {
        let role = self.role();
        let holder_key = match role {
            KeyRole::State => "state",
            KeyRole::Service => "service",
            KeyRole::Agency => "agency",
        };
        let (not_before, not_after) = self.validity();
        let mut s = format!("[[keys]]\nkey_id = {}\n", toml_string(self.key_id()));
        if role != KeyRole::State {
            // Role `state` is the default: stores written before roles existed look alike.
            s.push_str(&format!("role = \"{}\"\n", role.as_str()));
        }
        s.push_str(&format!(
            "{holder_key} = {}\npublic_key = \"{}\"\nnot_before = \"{}\"\nnot_after = \"{}\"\n",
            toml_string(self.holder()),
            B64.encode(self.public_key_bytes()),
            rfc3339(not_before),
            rfc3339(not_after),
        ));
        if let Some(r) = self.revoked_at() {
            s.push_str(&format!("revoked_at = \"{}\"\n", rfc3339(r)));
        }
        s
    }
}

#[derive(Debug, Default)]
pub struct TrustStore {
    keys: HashMap<String, KeyEntry>,
    services: HashMap<String, ServiceKey>,
    agencies: HashMap<String, AgencyKey>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileForm {
    #[serde(default)]
    keys: Vec<EntryForm>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryForm {
    key_id: String,
    role: Option<String>,
    state: Option<String>,
    service: Option<String>,
    agency: Option<String>,
    public_key: String,
    not_before: TimeForm,
    not_after: TimeForm,
    revoked_at: Option<TimeForm>,
}

/// Times may be written as TOML datetimes or as RFC 3339 strings.
#[derive(Deserialize)]
#[serde(untagged)]
enum TimeForm {
    Native(toml::value::Datetime),
    Text(String),
}

impl TimeForm {
    fn millis(&self) -> std::result::Result<i64, String> {
        let text = match self {
            TimeForm::Native(d) => d.to_string(),
            TimeForm::Text(s) => s.clone(),
        };
        DateTime::parse_from_rfc3339(&text)
            .map(|t| t.timestamp_millis())
            .map_err(|e| {
                format!(
                    "`{}` is not an RFC 3339 time with offset: {e}",
                    printable(&text)
                )
            })
    }
}

impl TrustStore {
    pub fn load(path: &Path) -> Result<TrustStore> {
        let text = fs::read_to_string(path).map_err(Error::io(path))?;
        TrustStore::parse(&text).map_err(|problems| Error::BadTrustStore {
            path: path.into(),
            problems,
        })
    }

    /// Parses the TOML text, reporting every problem at once.
    pub fn parse(text: &str) -> std::result::Result<TrustStore, String> {
        let form: FileForm = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut problems = Vec::new();
        let mut keys = HashMap::new();
        let mut services: HashMap<String, ServiceKey> = HashMap::new();
        let mut agencies: HashMap<String, AgencyKey> = HashMap::new();
        for (i, e) in form.keys.into_iter().enumerate() {
            let at = format!("keys[{i}] (key_id `{}`)", printable(&e.key_id));
            match entry(e) {
                Ok(entry) => {
                    let id = entry.key_id().to_string();
                    if keys.contains_key(&id)
                        || services.contains_key(&id)
                        || agencies.contains_key(&id)
                    {
                        problems.push(format!("{at}: duplicate key_id"));
                    } else {
                        match entry {
                            AnyKey::State(k) => {
                                keys.insert(id, k);
                            }
                            AnyKey::Service(k) => {
                                services.insert(id, k);
                            }
                            AnyKey::Agency(k) => {
                                agencies.insert(id, k);
                            }
                        }
                    }
                }
                Err(errs) => problems.extend(errs.into_iter().map(|p| format!("{at}: {p}"))),
            }
        }
        if problems.is_empty() {
            Ok(TrustStore {
                keys,
                services,
                agencies,
            })
        } else {
            Err(problems.join("; "))
        }
    }

    /// The state key `key_id`: only keys of role `state` sign incidents and heartbeats.
    pub fn get(&self, key_id: &str) -> Option<&KeyEntry> {
        self.keys.get(key_id)
    }

    /// The service key `key_id`: only keys of role `service` sign audit records.
    pub fn service_key(&self, key_id: &str) -> Option<&ServiceKey> {
        self.services.get(key_id)
    }

    /// The agency key `key_id`: only keys of role `agency` receive case replies.
    pub fn agency_key(&self, key_id: &str) -> Option<&AgencyKey> {
        self.agencies.get(key_id)
    }

    /// The key of `agency` usable at `now_ms` (the newest by `not_before` when several are).
    pub fn agency_key_for(&self, agency: &str, now_ms: i64) -> Option<&AgencyKey> {
        self.agencies
            .values()
            .filter(|k| k.agency == agency && k.usable_at(now_ms).is_ok())
            .max_by(|a, b| (a.not_before, &a.key_id).cmp(&(b.not_before, &b.key_id)))
    }

    /// Every agency key, in no particular order.
    pub fn agency_keys(&self) -> impl Iterator<Item = &AgencyKey> {
        self.agencies.values()
    }

    /// The role of `key_id`, whichever it is.
    pub fn role_of(&self, key_id: &str) -> Option<KeyRole> {
        if self.keys.contains_key(key_id) {
            Some(KeyRole::State)
        } else if self.services.contains_key(key_id) {
            Some(KeyRole::Service)
        } else if self.agencies.contains_key(key_id) {
            Some(KeyRole::Agency)
        } else {
            None
        }
    }

    /// Every key of every role, in no particular order.
    pub fn all(&self) -> impl Iterator<Item = AnyKey> + '_ {
        self.keys
            .values()
            .cloned()
            .map(AnyKey::State)
            .chain(self.services.values().cloned().map(AnyKey::Service))
            .chain(self.agencies.values().cloned().map(AnyKey::Agency))
    }

    /// Every state key, in no particular order.
    pub fn entries(&self) -> impl Iterator<Item = &KeyEntry> {
        self.keys.values()
    }

    /// Every service key, in no particular order.
    pub fn service_keys(&self) -> impl Iterator<Item = &ServiceKey> {
        self.services.values()
    }

    /// How many keys of every role.
    pub fn len(&self) -> usize {
        self.keys.len() + self.services.len() + self.agencies.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn insert(&mut self, entry: KeyEntry) {
        self.keys.insert(entry.key_id.clone(), entry);
    }

    pub fn insert_service(&mut self, entry: ServiceKey) {
        self.services.insert(entry.key_id.clone(), entry);
    }

    /// Appends a service key to the trust store file, as [`TrustStore::append_to_file`].
    pub fn append_service_to_file(path: &Path, entry: &ServiceKey) -> Result<()> {
        Self::append_text(path, &entry.key_id, &entry.to_toml())
    }

    /// Appends a key of any role to the trust store file, as [`TrustStore::append_to_file`].
    pub fn append_any_to_file(path: &Path, entry: &AnyKey) -> Result<()> {
        Self::append_text(path, entry.key_id(), &entry.to_toml())
    }

    /// Appends a key to the trust store file (created if missing), keeping what is there,
    /// comments included. Refuses a key id the store already holds.
    pub fn append_to_file(path: &Path, entry: &KeyEntry) -> Result<()> {
        Self::append_text(path, &entry.key_id, &entry.to_toml())
    }

    fn append_text(path: &Path, key_id: &str, toml: &str) -> Result<()> {
        let existing = match fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => {
                return Err(Error::Io {
                    path: path.into(),
                    source: e,
                });
            }
        };
        let store = TrustStore::parse(&existing).map_err(|problems| Error::BadTrustStore {
            path: path.into(),
            problems,
        })?;
        if store.role_of(key_id).is_some() {
            return Err(Error::DuplicateKey {
                key_id: key_id.to_string(),
            });
        }
        let mut text = existing;
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        if !text.is_empty() {
            text.push('\n');
        }
        text.push_str(toml);
        TrustStore::parse(&text).map_err(|problems| Error::BadTrustStore {
            path: path.into(),
            problems,
        })?;
        write_atomically(path, &text)
    }

    /// Sets `revoked_at` on the key `key_id` in the trust store file, keeping everything
    /// else as written (comments, order, formatting). Refuses an unknown key, a key already
    /// revoked, and a file that does not load (every problem named).
    pub fn revoke_in_file(path: &Path, key_id: &str, revoked_at: i64) -> Result<AnyKey> {
        let text = fs::read_to_string(path).map_err(Error::io(path))?;
        let bad = |problems: String| Error::BadTrustStore {
            path: path.into(),
            problems,
        };
        let store = TrustStore::parse(&text).map_err(bad)?;
        let entry = store.any(key_id).ok_or_else(|| Error::UnknownKey {
            key_id: printable(key_id),
        })?;
        if let Some(at) = entry.revoked_at() {
            return Err(Error::AlreadyRevoked {
                key_id: printable(key_id),
                at: rfc3339(at),
            });
        }
        let mut doc: toml_edit::DocumentMut = text.parse().map_err(|e| bad(format!("{e}")))?;
        let table = doc
            .get_mut("keys")
            .and_then(|k| k.as_array_of_tables_mut())
            .and_then(|keys| {
                keys.iter_mut()
                    .find(|t| t.get("key_id").and_then(|v| v.as_str()) == Some(key_id))
            })
            .ok_or_else(|| {
                bad(format!(
                    "key `{}` is not written as a [[keys]] table; edit the file by hand",
                    printable(key_id)
                ))
            })?;
        table["revoked_at"] = toml_edit::value(rfc3339(revoked_at));
        let new_text = doc.to_string();
        let reloaded = TrustStore::parse(&new_text).map_err(bad)?;
        let revoked = reloaded
            .any(key_id)
            .filter(|e| e.revoked_at().is_some())
            .ok_or_else(|| {
                bad(format!(
                    "key `{}`: revocation not recorded",
                    printable(key_id)
                ))
            })?;
        write_atomically(path, &new_text)?;
        Ok(revoked)
    }

    /// The key `key_id` of either role.
    pub fn any(&self, key_id: &str) -> Option<AnyKey> {
        self.keys
            .get(key_id)
            .cloned()
            .map(AnyKey::State)
            .or_else(|| self.services.get(key_id).cloned().map(AnyKey::Service))
            .or_else(|| self.agencies.get(key_id).cloned().map(AnyKey::Agency))
    }
}

/// Replaces `path` with `text` so that a reader sees the old file or the new one, never a
/// part: a temporary file in the same directory, written and synced, renamed over `path`,
/// then the directory synced. The file keeps its permission bits (a new file gets 0644:
/// a trust store holds public keys only).
pub fn write_atomically(path: &Path, text: &str) -> Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| Error::Io {
            path: path.into(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file name"),
        })?
        .to_string_lossy()
        .into_owned();
    let mode = match fs::metadata(path) {
        Ok(m) => m.permissions().mode() & 0o7777,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0o644,
        Err(e) => {
            return Err(Error::Io {
                path: path.into(),
                source: e,
            });
        }
    };
    let tmp = dir.join(format!(
        ".{name}.tmp-{}-{:x}",
        std::process::id(),
        rand_suffix()
    ));
    let written = (|| {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(text.as_bytes())?;
        // Explicitly, so the umask does not narrow or the 0600 above widen what was there.
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        file.sync_all()
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(Error::Io {
            path: tmp,
            source: e,
        });
    }
    if let Err(e) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(Error::Io {
            path: path.into(),
            source: e,
        });
    }
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(Error::io(dir))
}

fn rand_suffix() -> u64 {
    use rand_core::RngCore;
    rand_core::OsRng.next_u64()
}

fn entry(e: EntryForm) -> std::result::Result<AnyKey, Vec<String>> {
    let mut problems = Vec::new();
    if e.key_id.is_empty() || e.key_id.len() > 64 || e.key_id.chars().any(char::is_control) {
        problems.push("key_id must be 1..64 printable characters".to_string());
    }
    let role = match e.role.as_deref() {
        None => Some(KeyRole::State),
        Some(r) => KeyRole::parse(r).or_else(|| {
            problems.push(format!(
                "role `{}` is not one of state, service, agency",
                printable(r)
            ));
            None
        }),
    };
    // One rule for every role: the holder field of its own role is required, the others'
    // are refused.
    let holders = [
        (KeyRole::State, "state", &e.state),
        (KeyRole::Service, "service", &e.service),
        (KeyRole::Agency, "agency", &e.agency),
    ];
    let mut holder = None;
    if let Some(role) = role {
        for (r, name, value) in holders {
            match (r == role, value) {
                (true, Some(v)) => {
                    if let Err(why) = check_holder(role, v) {
                        problems.push(why);
                    }
                    holder = Some(v.clone());
                }
                (true, None) => problems.push(format!(
                    "{name} is missing (a key of role `{name}` names its {})",
                    match role {
                        KeyRole::State => "member state",
                        KeyRole::Service => "service",
                        KeyRole::Agency => "agency",
                    }
                )),
                (false, Some(_)) => {
                    problems.push(format!("{name} is only for keys of role `{name}`"))
                }
                (false, None) => {}
            }
        }
    }
    let bytes = B64
        .decode(e.public_key.trim())
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok());
    if bytes.is_none() {
        problems.push("public_key is not base64 of 32 bytes".to_string());
    }
    let public_key = match (role, bytes) {
        (Some(KeyRole::Agency), Some(bytes)) => match check_x25519_public(&bytes) {
            Ok(()) => Some(PublicOf::X25519(bytes)),
            Err(why) => {
                problems.push(format!("public_key is refused: {why}"));
                None
            }
        },
        (_, Some(bytes)) => match PublicKey::from_bytes(&bytes) {
            Ok(k) => Some(PublicOf::Ed25519(k)),
            Err(why) => {
                problems.push(format!("public_key is refused: {why}"));
                None
            }
        },
        (_, None) => None,
    };
    let mut time = |name: &str, t: &TimeForm| match t.millis() {
        Ok(ms) => Some(ms),
        Err(p) => {
            problems.push(format!("{name}: {p}"));
            None
        }
    };
    let not_before = time("not_before", &e.not_before);
    let not_after = time("not_after", &e.not_after);
    let revoked_at = e.revoked_at.as_ref().map(|t| time("revoked_at", t));
    if let (Some(b), Some(a)) = (not_before, not_after)
        && a <= b
    {
        problems.push("not_after is not after not_before".to_string());
    }
    match (role, holder, public_key, not_before, not_after, revoked_at) {
        (
            Some(role),
            Some(holder),
            Some(public_key),
            Some(not_before),
            Some(not_after),
            revoked_at,
        ) if problems.is_empty() => {
            let revoked_at = revoked_at.flatten();
            Ok(match (role, public_key) {
                (KeyRole::Agency, PublicOf::X25519(public_key)) => AnyKey::Agency(AgencyKey {
                    key_id: e.key_id,
                    agency: holder,
                    public_key,
                    not_before,
                    not_after,
                    revoked_at,
                }),
                (KeyRole::Service, PublicOf::Ed25519(public_key)) => AnyKey::Service(ServiceKey {
                    key_id: e.key_id,
                    service: holder,
                    public_key,
                    not_before,
                    not_after,
                    revoked_at,
                }),
                (_, PublicOf::Ed25519(public_key)) => AnyKey::State(KeyEntry {
                    key_id: e.key_id,
                    state: holder,
                    public_key,
                    not_before,
                    not_after,
                    revoked_at,
                }),
                (_, PublicOf::X25519(_)) => return Err(vec!["public_key: wrong kind".into()]),
            })
        }
        _ => Err(problems),
    }
}

enum PublicOf {
    Ed25519(PublicKey),
    X25519([u8; 32]),
}

/// Whether `holder` may name what a key of `role` is for; the problem, naming its field.
pub fn check_holder(role: KeyRole, holder: &str) -> std::result::Result<(), String> {
    match role {
        KeyRole::State if !is_state_code(holder) => Err(format!(
            "state `{}` is not an upper-case ISO 3166-1 alpha-2 code",
            printable(holder)
        )),
        KeyRole::Service if !is_service_name(holder) => Err(format!(
            "service `{}` is not 1..32 characters of a-z, 0-9, '-'",
            printable(holder)
        )),
        KeyRole::Agency if !is_agency_name(holder) => Err(format!(
            "agency `{}` is not 1..64 characters of letters, digits, '-', '_', '.'",
            printable(holder)
        )),
        _ => Ok(()),
    }
}

/// An agency name: 1..64 characters of ASCII letters, digits, `-`, `_`, `.`.
pub fn is_agency_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// A service name: 1..32 characters of `a-z`, `0-9`, `-`.
pub fn is_service_name(s: &str) -> bool {
    (1..=32).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn rfc3339(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Secs, true)
}

impl KeyEntry {
    pub fn public_key_base64(&self) -> String {
        B64.encode(self.public_key.as_bytes())
    }

    fn to_toml(&self) -> String {
        AnyKey::State(self.clone()).to_toml()
    }
}

fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::generate;

    fn sample(key_id: &str) -> KeyEntry {
        KeyEntry {
            key_id: key_id.into(),
            state: "KZ".into(),
            public_key: PublicKey::from(&generate()),
            not_before: 1_767_225_600_000,
            not_after: 1_798_761_600_000,
            revoked_at: None,
        }
    }

    #[test]
    fn append_and_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("trust.toml");
        fs::write(&path, "# operator's note\n").unwrap();
        TrustStore::append_to_file(&path, &sample("kz-1")).unwrap();
        let mut revoked = sample("kz-2");
        revoked.revoked_at = Some(1_780_000_000_000);
        TrustStore::append_to_file(&path, &revoked).unwrap();
        assert!(matches!(
            TrustStore::append_to_file(&path, &sample("kz-1")),
            Err(Error::DuplicateKey { .. })
        ));
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("# operator's note\n"));
        let store = TrustStore::load(&path).unwrap();
        assert_eq!(store.len(), 2);
        assert_eq!(
            store.get("kz-2").unwrap().revoked_at,
            Some(1_780_000_000_000)
        );
        assert_eq!(store.get("kz-1").unwrap().not_before, 1_767_225_600_000);
    }

    #[test]
    fn revoke_edits_one_entry_atomically_keeping_comments_and_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("trust.toml");
        fs::write(&path, "# operator's note\n").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        TrustStore::append_to_file(&path, &sample("kz-1")).unwrap();
        TrustStore::append_to_file(&path, &sample("kz-2")).unwrap();
        let revoked = TrustStore::revoke_in_file(&path, "kz-2", 1_780_000_000_000).unwrap();
        assert_eq!(revoked.revoked_at(), Some(1_780_000_000_000));
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("# operator's note\n"), "{text}");
        let store = TrustStore::load(&path).unwrap();
        assert_eq!(store.get("kz-1").unwrap().revoked_at, None);
        assert_eq!(
            store.get("kz-2").unwrap().revoked_at,
            Some(1_780_000_000_000)
        );
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "no temporary file left: {names:?}");
        assert!(matches!(
            TrustStore::revoke_in_file(&path, "kz-2", 1_790_000_000_000),
            Err(Error::AlreadyRevoked { .. })
        ));
        assert!(matches!(
            TrustStore::revoke_in_file(&path, "kz-9", 1_790_000_000_000),
            Err(Error::UnknownKey { .. })
        ));
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            text,
            "refusals change nothing"
        );
    }

    #[test]
    fn roles_default_to_state_and_service_keys_are_kept_apart() {
        let key = sample("x").public_key_base64();
        let text = format!(
            "[[keys]]\nkey_id = \"kz\"\nstate = \"KZ\"\npublic_key = \"{key}\"\nnot_before = 2026-01-01T00:00:00Z\nnot_after = 2027-01-01T00:00:00Z\n\n[[keys]]\nkey_id = \"fo\"\nrole = \"service\"\nservice = \"fanout\"\npublic_key = \"{key}\"\nnot_before = 2026-01-01T00:00:00Z\nnot_after = 2027-01-01T00:00:00Z\n"
        );
        let store = TrustStore::parse(&text).unwrap();
        assert_eq!(store.len(), 2);
        assert_eq!(store.role_of("kz"), Some(KeyRole::State));
        assert_eq!(store.role_of("fo"), Some(KeyRole::Service));
        assert!(store.get("fo").is_none(), "a service key is no state key");
        assert!(
            store.service_key("kz").is_none(),
            "a state key is no service key"
        );
        assert_eq!(store.service_key("fo").unwrap().service, "fanout");
        // Appending and revoking a service key keep its role.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("trust.toml");
        fs::write(&path, &text).unwrap();
        let svc = ServiceKey {
            key_id: "proc".into(),
            service: "processor".into(),
            public_key: PublicKey::from(&generate()),
            not_before: 1_767_225_600_000,
            not_after: 1_798_761_600_000,
            revoked_at: None,
        };
        TrustStore::append_service_to_file(&path, &svc).unwrap();
        assert!(matches!(
            TrustStore::append_service_to_file(&path, &svc),
            Err(Error::DuplicateKey { .. })
        ));
        let revoked = TrustStore::revoke_in_file(&path, "proc", 1_780_000_000_000).unwrap();
        assert_eq!(revoked.role(), KeyRole::Service);
        let store = TrustStore::load(&path).unwrap();
        assert_eq!(
            store.service_key("proc").unwrap().revoked_at,
            Some(1_780_000_000_000)
        );
    }

    #[test]
    fn role_problems_are_named() {
        let key = sample("x").public_key_base64();
        let tail = format!(
            "public_key = \"{key}\"\nnot_before = 2026-01-01T00:00:00Z\nnot_after = 2027-01-01T00:00:00Z\n"
        );
        for (head, expect) in [
            (
                "role = \"desk\"\nstate = \"KZ\"\n",
                "role `desk` is not one of state, service, agency",
            ),
            ("role = \"service\"\n", "service is missing"),
            (
                "role = \"service\"\nservice = \"Fan Out\"\n",
                "service `Fan Out` is not",
            ),
            (
                "role = \"service\"\nservice = \"fanout\"\nstate = \"KZ\"\n",
                "state is only for keys of role `state`",
            ),
            (
                "service = \"fanout\"\nstate = \"KZ\"\n",
                "service is only for keys of role `service`",
            ),
            ("role = \"state\"\n", "state is missing"),
        ] {
            let text = format!("[[keys]]\nkey_id = \"k\"\n{head}{tail}");
            let err = TrustStore::parse(&text).unwrap_err();
            assert!(
                err.contains(&format!("keys[0] (key_id `k`): {expect}")),
                "{err}"
            );
        }
    }

    #[test]
    fn native_toml_datetimes_are_accepted() {
        let key = sample("x").public_key_base64();
        let text = format!(
            "[[keys]]\nkey_id = \"x\"\nstate = \"KG\"\npublic_key = \"{key}\"\nnot_before = 2026-01-01T00:00:00Z\nnot_after = 2027-01-01T00:00:00Z\n"
        );
        assert_eq!(
            TrustStore::parse(&text).unwrap().get("x").unwrap().state,
            "KG"
        );
    }

    #[test]
    fn every_problem_is_named() {
        let text = "[[keys]]\nkey_id = \"bad\"\nstate = \"kz\"\npublic_key = \"AAAA\"\nnot_before = \"yesterday\"\nnot_after = \"2027-01-01T00:00:00Z\"\n";
        let err = TrustStore::parse(text).unwrap_err();
        assert!(err.contains("keys[0] (key_id `bad`): state `kz`"), "{err}");
        assert!(
            err.contains("public_key is not base64 of 32 bytes"),
            "{err}"
        );
        assert!(err.contains("not_before: `yesterday`"), "{err}");
        let unknown = "[[keys]]\nkey_id = \"x\"\nstat = \"KZ\"\n";
        assert!(
            TrustStore::parse(unknown)
                .unwrap_err()
                .contains("unknown field `stat`")
        );
    }

    fn store_with_key(bytes: [u8; 32]) -> String {
        format!(
            "[[keys]]\nkey_id = \"w\"\nstate = \"KZ\"\npublic_key = \"{}\"\nnot_before = \"2026-01-01T00:00:00Z\"\nnot_after = \"2027-01-01T00:00:00Z\"\n",
            B64.encode(bytes)
        )
    }

    #[test]
    fn small_order_keys_are_refused() {
        for t in curve25519_dalek::constants::EIGHT_TORSION {
            let err = TrustStore::parse(&store_with_key(t.compress().to_bytes())).unwrap_err();
            assert!(
                err.contains("keys[0] (key_id `w`): public_key is refused: a small-order point"),
                "{err}"
            );
        }
    }

    #[test]
    fn mixed_order_keys_are_refused() {
        let good = crate::keys::generate().verifying_key().to_edwards();
        for t in &curve25519_dalek::constants::EIGHT_TORSION[1..] {
            let err =
                TrustStore::parse(&store_with_key((good + t).compress().to_bytes())).unwrap_err();
            assert!(
                err.contains("keys[0] (key_id `w`): public_key is refused: a mixed-order point"),
                "{err}"
            );
        }
        assert!(TrustStore::parse(&store_with_key(good.compress().to_bytes())).is_ok());
    }

    #[test]
    fn non_canonical_keys_are_refused() {
        // y = p + 1 encodes the identity a second time; the identity with a sign bit too.
        let mut y_p_plus_1 = [0xff; 32];
        y_p_plus_1[0] = 0xee;
        y_p_plus_1[31] = 0x7f;
        let mut signed_identity = [0u8; 32];
        signed_identity[0] = 1;
        signed_identity[31] = 0x80;
        for bytes in [y_p_plus_1, signed_identity] {
            let err = TrustStore::parse(&store_with_key(bytes)).unwrap_err();
            assert!(
                err.contains("public_key is refused: not the canonical encoding of its point"),
                "{err}"
            );
        }
        // Appending to a file refuses it too, naming the key.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("trust.toml");
        fs::write(&path, store_with_key(y_p_plus_1)).unwrap();
        let err = TrustStore::append_to_file(&path, &sample("kz-1")).unwrap_err();
        assert!(err.to_string().contains("key_id `w`"), "{err}");
    }

    #[test]
    fn agency_keys_are_x25519_and_kept_apart() {
        let public = crate::case::AgencySecret::generate().public_key();
        let entry = AnyKey::Agency(AgencyKey {
            key_id: "rcc-1".into(),
            agency: "RCC".into(),
            public_key: public,
            not_before: 1_767_225_600_000,
            not_after: 1_798_761_600_000,
            revoked_at: None,
        });
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("trust.toml");
        TrustStore::append_any_to_file(&path, &entry).unwrap();
        TrustStore::append_to_file(&path, &sample("kz-1")).unwrap();
        let store = TrustStore::load(&path).unwrap();
        assert_eq!(store.role_of("rcc-1"), Some(KeyRole::Agency));
        assert!(store.get("rcc-1").is_none() && store.service_key("rcc-1").is_none());
        assert!(store.agency_key("kz-1").is_none());
        assert_eq!(store.agency_key("rcc-1").unwrap().public_key, public);
        assert_eq!(
            store
                .agency_key_for("RCC", 1_780_000_000_000)
                .unwrap()
                .key_id,
            "rcc-1"
        );
        assert!(store.agency_key_for("RCC", 1_900_000_000_000).is_none());
        TrustStore::revoke_in_file(&path, "rcc-1", 1_780_000_000_000).unwrap();
        let store = TrustStore::load(&path).unwrap();
        assert!(store.agency_key_for("RCC", 1_780_000_000_001).is_none());
        // A small-order X25519 point (0) and a point of the twist are refused, named.
        let text = |key: [u8; 32]| {
            format!(
                "[[keys]]\nkey_id = \"a\"\nrole = \"agency\"\nagency = \"RCC\"\npublic_key = \"{}\"\nnot_before = 2026-01-01T00:00:00Z\nnot_after = 2027-01-01T00:00:00Z\n",
                B64.encode(key)
            )
        };
        let err = TrustStore::parse(&text([0; 32])).unwrap_err();
        assert!(
            err.contains("public_key is refused: a small-order point"),
            "{err}"
        );
        let mut twist = [0u8; 32];
        twist[0] = 2;
        let err = TrustStore::parse(&text(twist)).unwrap_err();
        assert!(err.contains("public_key is refused"), "{err}");
        let err = TrustStore::parse(&text(public).replace("RCC", "R C")).unwrap_err();
        assert!(err.contains("agency `R C` is not"), "{err}");
        let err =
            TrustStore::parse(&text(public).replace("agency = \"RCC\"\n", "state = \"KZ\"\n"))
                .unwrap_err();
        assert!(err.contains("agency is missing"), "{err}");
        assert!(
            err.contains("state is only for keys of role `state`"),
            "{err}"
        );
    }
}
