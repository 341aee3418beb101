//! Who is calling: bearer tokens (kept only as SHA-256 hashes in the tokens file) and
//! console sessions (an HttpOnly, SameSite=Strict cookie minted from a token).
//!
//! Two roles: `admin` manages subscriptions; `desk` is bound to one subscription, reads
//! its live stream and acknowledges the alerts it may see.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, header};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::{Error, Result};
use crate::settings::is_name;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    Admin { name: String },
    Desk { name: String, subscription: String },
}

impl Principal {
    pub fn name(&self) -> &str {
        match self {
            Principal::Admin { name } | Principal::Desk { name, .. } => name,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    #[serde(default)]
    tokens: Vec<TokenEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    name: String,
    role: Role,
    /// Hex SHA-256 of the token.
    sha256: String,
    subscription: Option<String>,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Role {
    Admin,
    Desk,
}

/// The accepted tokens.
#[derive(Default)]
pub struct Tokens {
    entries: Vec<([u8; 32], Principal)>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokens({} entries)", self.entries.len())
    }
}

pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl Tokens {
    /// Reads a tokens file (refused when group or others may read it); reports every
    /// problem at once.
    pub fn load(path: &Path) -> Result<Tokens> {
        let text = ewn_trust::secret::read_secret(path)?;
        Tokens::parse(&text).map_err(|p| {
            Error::Config(
                p.into_iter()
                    .map(|e| format!("{}: {e}", path.display()))
                    .collect(),
            )
        })
    }

    pub fn parse(text: &str) -> std::result::Result<Tokens, Vec<String>> {
        let file: TokensFile = toml::from_str(text).map_err(|e| vec![e.to_string()])?;
        let mut problems = Vec::new();
        let mut entries = Vec::new();
        for (i, t) in file.tokens.into_iter().enumerate() {
            let at = format!("tokens[{i}]");
            if !is_name(&t.name) {
                problems.push(format!("{at}.name: 1-64 characters of A-Z a-z 0-9 - _ ."));
            }
            let mut hash = [0u8; 32];
            if hex::decode_to_slice(&t.sha256, &mut hash).is_err() {
                problems.push(format!("{at}.sha256: 64 hex digits expected"));
            }
            let principal = match (t.role, t.subscription) {
                (Role::Admin, None) => Principal::Admin { name: t.name },
                (Role::Desk, Some(s)) if is_name(&s) => Principal::Desk {
                    name: t.name,
                    subscription: s,
                },
                (Role::Admin, Some(_)) => {
                    problems.push(format!("{at}.subscription: an admin token has none"));
                    continue;
                }
                (Role::Desk, _) => {
                    problems.push(format!(
                        "{at}.subscription: a desk token names its subscription"
                    ));
                    continue;
                }
            };
            entries.push((hash, principal));
        }
        if problems.is_empty() {
            Ok(Tokens { entries })
        } else {
            Err(problems)
        }
    }

    pub fn from_entries(entries: Vec<(String, Principal)>) -> Tokens {
        Tokens {
            entries: entries
                .into_iter()
                .map(|(t, p)| (token_hash(&t), p))
                .collect(),
        }
    }

    pub fn extend(&mut self, entries: Vec<(String, Principal)>) {
        self.entries
            .extend(entries.into_iter().map(|(t, p)| (token_hash(&t), p)));
    }

    /// The principal of a presented token. Compares against every entry in constant time.
    pub fn check(&self, token: &str) -> Option<Principal> {
        let h = token_hash(token);
        let mut found = None;
        for (hash, p) in &self.entries {
            if bool::from(hash.ct_eq(&h)) {
                found = Some(p.clone());
            }
        }
        found
    }
}

pub const COOKIE: &str = "ewn_session";

/// Console sessions, in memory: a restart logs desks out, which is acceptable for a
/// console and keeps session secrets off disk.
pub struct Sessions {
    ttl: Duration,
    map: Mutex<HashMap<String, (Principal, Instant)>>,
}

impl Sessions {
    pub fn new(ttl: Duration) -> Self {
        Sessions {
            ttl,
            map: Mutex::new(HashMap::new()),
        }
    }

    pub fn create(&self, p: Principal) -> String {
        let mut raw = [0u8; 32];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut raw);
        let id = hex::encode(raw);
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        map.retain(|_, (_, at)| now.duration_since(*at) < self.ttl);
        map.insert(id.clone(), (p, now));
        id
    }

    pub fn get(&self, id: &str) -> Option<Principal> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.get(id)
            .filter(|(_, at)| at.elapsed() < self.ttl)
            .map(|(p, _)| p.clone())
    }

    pub fn remove(&self, id: &str) {
        self.map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }

    pub fn cookie(&self, id: &str) -> String {
        format!(
            "{COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}",
            self.ttl.as_secs()
        )
    }
}

/// How the caller authenticated: a cookie calls for CSRF care, a bearer token does not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    Bearer,
    Cookie,
}

pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
}

pub fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| kv.trim().strip_prefix(COOKIE)?.strip_prefix('='))
}

/// The caller, from a bearer token or a session cookie.
pub fn authenticate(
    tokens: &Tokens,
    sessions: &Sessions,
    headers: &HeaderMap,
) -> Option<(Principal, Via)> {
    if let Some(t) = bearer(headers) {
        return tokens.check(t).map(|p| (p, Via::Bearer));
    }
    let id = session_cookie(headers)?;
    sessions.get(id).map(|p| (p, Via::Cookie))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_matched_by_hash_and_problems_named() {
        let file = format!(
            "[[tokens]]\nname='ops'\nrole='admin'\nsha256='{}'\n[[tokens]]\nname='kg'\nrole='desk'\nsubscription='kg-desk'\nsha256='{}'\n",
            hex::encode(token_hash("s3cret-admin")),
            hex::encode(token_hash("s3cret-desk")),
        );
        let t = Tokens::parse(&file).unwrap();
        assert_eq!(
            t.check("s3cret-admin"),
            Some(Principal::Admin { name: "ops".into() })
        );
        assert!(matches!(
            t.check("s3cret-desk"),
            Some(Principal::Desk { .. })
        ));
        assert_eq!(t.check("s3cret"), None);
        let bad = Tokens::parse("[[tokens]]\nname='x y'\nrole='desk'\nsha256='zz'\n").unwrap_err();
        assert_eq!(bad.len(), 3, "{bad:?}");
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, "a=1; ewn_session=abc; b=2".parse().unwrap());
        assert_eq!(session_cookie(&h), Some("abc"));
    }
}
