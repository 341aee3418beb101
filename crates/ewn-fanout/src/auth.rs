//! Who is calling: bearer tokens (kept only as SHA-256 hashes in the tokens file) and
//! console sessions (an HttpOnly, SameSite=Strict cookie minted from a token).
//!
//! Three roles: `admin` manages subscriptions; `desk` is bound to one subscription, reads
//! its live stream and acknowledges the alerts it may see; `oversight` reads the delivery
//! receipts and the audit log (`oversight.rs`) at a clearance of its own, and changes
//! nothing.

use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use axum::http::{HeaderMap, header};
use ewn_model::Tlp;
use ewn_ops::tokens::{HashedTokens, parse_hash};
use serde::Deserialize;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::error::{Error, Result};
use crate::settings::is_name;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    Admin {
        name: String,
    },
    Desk {
        name: String,
        subscription: String,
    },
    /// Reads receipts and the audit log; sees alert content only up to `clearance` (at
    /// most AMBER: see [`OVERSIGHT_MAX_CLEARANCE`]).
    Oversight {
        name: String,
        clearance: Tlp,
    },
}

/// The highest clearance an oversight token may hold. AMBER+STRICT and RED content goes
/// only to the agencies an alert names (DESIGN.md, "Fan-out"); an overseer is not one of
/// them, so it sees such alerts as metadata only, whatever its token says. A tokens file
/// that gives an oversight token more is refused rather than silently capped.
pub const OVERSIGHT_MAX_CLEARANCE: Tlp = Tlp::Amber;

impl Principal {
    pub fn name(&self) -> &str {
        match self {
            Principal::Admin { name }
            | Principal::Desk { name, .. }
            | Principal::Oversight { name, .. } => name,
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
    /// An oversight token's clearance (required for that role, refused for the others).
    clearance: Option<Tlp>,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Role {
    Admin,
    Desk,
    Oversight,
}

/// The accepted tokens (hashes compared in constant time: [`ewn_ops::tokens`], shared with
/// the gateway's post tokens).
#[derive(Default)]
pub struct Tokens {
    entries: HashedTokens<Principal>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokens({} entries)", self.entries.len())
    }
}

pub use ewn_ops::tokens::token_hash;

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
            let hash = parse_hash(&t.sha256).unwrap_or_else(|| {
                problems.push(format!("{at}.sha256: 64 hex digits expected"));
                [0u8; 32]
            });
            if t.clearance.is_some() && t.role != Role::Oversight {
                problems.push(format!(
                    "{at}.clearance: only an oversight token has one (a desk's is its subscription's)"
                ));
                continue;
            }
            let principal = match (t.role, t.subscription) {
                (Role::Admin, None) => Principal::Admin { name: t.name },
                (Role::Desk, Some(s)) if is_name(&s) => Principal::Desk {
                    name: t.name,
                    subscription: s,
                },
                (Role::Oversight, None) => match t.clearance {
                    Some(c) if c <= OVERSIGHT_MAX_CLEARANCE => Principal::Oversight {
                        name: t.name,
                        clearance: c,
                    },
                    Some(_) => {
                        problems.push(format!(
                            "{at}.clearance: at most AMBER for an oversight token (AMBER_STRICT \
                             and RED content goes only to the agencies an alert names)"
                        ));
                        continue;
                    }
                    None => {
                        problems.push(format!(
                            "{at}.clearance: an oversight token names its clearance (CLEAR, GREEN or AMBER)"
                        ));
                        continue;
                    }
                },
                (Role::Admin | Role::Oversight, Some(_)) => {
                    problems.push(format!(
                        "{at}.subscription: only a desk token is bound to a subscription"
                    ));
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
            Ok(Tokens {
                entries: HashedTokens::new(entries),
            })
        } else {
            Err(problems)
        }
    }

    pub fn from_entries(entries: Vec<(String, Principal)>) -> Tokens {
        Tokens {
            entries: HashedTokens::new(
                entries
                    .into_iter()
                    .map(|(t, p)| (token_hash(&t), p))
                    .collect(),
            ),
        }
    }

    pub fn extend(&mut self, entries: Vec<(String, Principal)>) {
        for (t, p) in entries {
            self.entries.push(token_hash(&t), p);
        }
    }

    /// The principal of a token known by its hash (a session names its token so).
    pub fn by_hash(&self, h: &[u8; 32]) -> Option<Principal> {
        self.entries.by_hash(h)
    }

    /// The principal of a presented token. Compares against every entry in constant time.
    pub fn check(&self, token: &str) -> Option<Principal> {
        self.entries.check(token)
    }
}

pub const COOKIE: &str = "ewn_session";

/// Console sessions: stateless signed cookies, so a request may land on any instance
/// (`deploy/k8s` runs two) and a restart logs nobody out.
///
/// The cookie is `v1.<expiry secs>.<token hash hex>.<nonce hex>.<tag hex>`, the tag an
/// HMAC-SHA256 under the fan-out key's sessions subkey. It names the token it was minted
/// from by its SHA-256 (what the tokens file holds anyway), and the caller is looked up
/// from it on every request: a token removed from the tokens file ends its sessions. A
/// logout ends the session in the browser and on the instance that served it (a bounded
/// list of revoked tags, `fanout.max_revoked_sessions`; past it the oldest revocation is
/// forgotten, and that session lasts until it expires); on other instances it lasts until it expires
/// (`fanout.session_ttl_secs`), the price of holding no session state, written down in
/// the README.
pub struct Sessions {
    ttl: Duration,
    max_revoked: usize,
    key: zeroize::Zeroizing<[u8; 32]>,
    revoked: Mutex<(
        std::collections::HashSet<String>,
        std::collections::VecDeque<String>,
    )>,
}

impl Sessions {
    pub fn new(key: &crate::keys::FanoutKey, ttl: Duration, max_revoked: usize) -> Self {
        Sessions {
            ttl,
            max_revoked: max_revoked.max(1),
            key: key.subkey(crate::keys::Purpose::Sessions),
            revoked: Mutex::new(Default::default()),
        }
    }

    fn tag(&self, body: &str) -> String {
        let mut mac = <hmac::Hmac<Sha256> as hmac::Mac>::new_from_slice(&*self.key)
            .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
        hmac::Mac::update(&mut mac, body.as_bytes());
        hex::encode(hmac::Mac::finalize(mac).into_bytes())
    }

    fn now_secs() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }

    /// A session for the holder of `token` (already checked).
    pub fn create(&self, token: &str) -> String {
        let mut nonce = [0u8; 16];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut nonce);
        let body = format!(
            "v1.{}.{}.{}",
            Self::now_secs() + self.ttl.as_secs(),
            hex::encode(token_hash(token)),
            hex::encode(nonce)
        );
        let tag = self.tag(&body);
        format!("{body}.{tag}")
    }

    /// The caller a cookie value stands for, if it is genuine, unexpired, not logged out
    /// here, and its token is still accepted.
    pub fn get(&self, tokens: &Tokens, value: &str) -> Option<Principal> {
        if value.len() > 256 {
            return None;
        }
        let (body, tag) = value.rsplit_once('.')?;
        let expected = self.tag(body);
        if !bool::from(expected.as_bytes().ct_eq(tag.as_bytes())) {
            return None;
        }
        let mut parts = body.split('.');
        let (Some("v1"), Some(expiry), Some(hash), Some(_nonce), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return None;
        };
        if expiry.parse::<u64>().ok()? <= Self::now_secs() {
            return None;
        }
        if self
            .revoked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .contains(tag)
        {
            return None;
        }
        let mut h = [0u8; 32];
        hex::decode_to_slice(hash, &mut h).ok()?;
        tokens.by_hash(&h)
    }

    /// Ends a session on this instance (the browser drops the cookie too).
    pub fn remove(&self, value: &str) {
        let Some((_, tag)) = value.rsplit_once('.') else {
            return;
        };
        let mut r = self.revoked.lock().unwrap_or_else(|p| p.into_inner());
        if r.0.insert(tag.to_string()) {
            r.1.push_back(tag.to_string());
            while r.1.len() > self.max_revoked {
                if let Some(old) = r.1.pop_front() {
                    r.0.remove(&old);
                }
            }
        }
    }

    /// Logged-out sessions remembered here.
    pub fn revoked(&self) -> usize {
        self.revoked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .1
            .len()
    }

    pub fn cookie(&self, value: &str) -> String {
        format!(
            "{COOKIE}={value}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}",
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
    if let Some(t) = ewn_ops::tokens::bearer(headers) {
        return tokens.check(t).map(|p| (p, Via::Bearer));
    }
    let value = session_cookie(headers)?;
    sessions.get(tokens, value).map(|p| (p, Via::Cookie))
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
    fn an_oversight_token_names_a_clearance_of_at_most_amber() {
        let h = hex::encode(token_hash("s3cret-oversight"));
        let t = Tokens::parse(&format!(
            "[[tokens]]\nname='ombudsman'\nrole='oversight'\nclearance='GREEN'\nsha256='{h}'\n"
        ))
        .unwrap();
        assert_eq!(
            t.check("s3cret-oversight"),
            Some(Principal::Oversight {
                name: "ombudsman".into(),
                clearance: Tlp::Green
            })
        );
        for (entry, field) in [
            ("role='oversight'", "clearance"),
            ("role='oversight'\nclearance='RED'", "clearance"),
            ("role='oversight'\nclearance='AMBER_STRICT'", "clearance"),
            (
                "role='oversight'\nclearance='AMBER'\nsubscription='x'",
                "subscription",
            ),
            ("role='admin'\nclearance='AMBER'", "clearance"),
            (
                "role='desk'\nsubscription='x'\nclearance='AMBER'",
                "clearance",
            ),
        ] {
            let bad = Tokens::parse(&format!("[[tokens]]\nname='o'\n{entry}\nsha256='{h}'\n"))
                .unwrap_err();
            assert_eq!(bad.len(), 1, "{entry}: {bad:?}");
            assert!(
                bad[0].starts_with(&format!("tokens[0].{field}:")),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn sessions_are_signed_expire_end_with_their_token_and_at_logout() {
        let key = crate::keys::FanoutKey::from_bytes([9; 32]);
        let tokens = Tokens::from_entries(vec![(
            "desk-token".into(),
            Principal::Desk {
                name: "kg".into(),
                subscription: "kg-desk".into(),
            },
        )]);
        let a = Sessions::new(&key, Duration::from_secs(60), 10);
        // Another instance with the same key accepts it: no shared state needed.
        let b = Sessions::new(&key, Duration::from_secs(60), 10);
        let v = a.create("desk-token");
        assert!(matches!(b.get(&tokens, &v), Some(Principal::Desk { .. })));
        // Any change to it is refused.
        for i in 0..v.len() {
            let mut t = v.clone().into_bytes();
            t[i] = if t[i] == b'0' { b'1' } else { b'0' };
            if let Ok(t) = String::from_utf8(t) {
                assert!(a.get(&tokens, &t).is_none(), "byte {i}");
            }
        }
        // Another key's cookie, an expired one, a removed token, a logout.
        let other = Sessions::new(
            &crate::keys::FanoutKey::from_bytes([8; 32]),
            Duration::from_secs(60),
            10,
        );
        assert!(a.get(&tokens, &other.create("desk-token")).is_none());
        let expired = Sessions::new(&key, Duration::from_secs(0), 10);
        assert!(a.get(&tokens, &expired.create("desk-token")).is_none());
        assert!(a.get(&Tokens::default(), &v).is_none());
        a.remove(&v);
        assert!(a.get(&tokens, &v).is_none());
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, "a=1; ewn_session=abc; b=2".parse().unwrap());
        assert_eq!(session_cookie(&h), Some("abc"));
    }
}
