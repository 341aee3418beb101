//! Bearer tokens kept only as SHA-256 hashes, compared in constant time: the fan-out's
//! desk and admin tokens and the gateway's post tokens use the same rule, so a token file
//! that leaks gives no token away and no caller learns from timing which entry it nearly hit.

use axum::http::{HeaderMap, header};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The SHA-256 of a presented token, as a tokens file holds it (in hex).
pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Parses the 64 hex digits of a tokens file entry.
pub fn parse_hash(hex_digits: &str) -> Option<[u8; 32]> {
    let mut hash = [0u8; 32];
    hex::decode_to_slice(hex_digits, &mut hash).ok()?;
    Some(hash)
}

/// The token a request presents as `Authorization: Bearer <token>`.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Accepted token hashes, each naming who holds it.
#[derive(Clone)]
pub struct HashedTokens<P> {
    entries: Vec<([u8; 32], P)>,
}

impl<P> Default for HashedTokens<P> {
    fn default() -> Self {
        HashedTokens {
            entries: Vec::new(),
        }
    }
}

impl<P> std::fmt::Debug for HashedTokens<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HashedTokens({} entries)", self.entries.len())
    }
}

impl<P: Clone> HashedTokens<P> {
    pub fn new(entries: Vec<([u8; 32], P)>) -> Self {
        HashedTokens { entries }
    }

    pub fn push(&mut self, hash: [u8; 32], who: P) {
        self.entries.push((hash, who));
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn holders(&self) -> impl Iterator<Item = &P> {
        self.entries.iter().map(|(_, p)| p)
    }

    /// The holder of a token known by its hash. Every entry is compared, in constant time,
    /// whichever matches.
    pub fn by_hash(&self, h: &[u8; 32]) -> Option<P> {
        let mut found = None;
        for (hash, p) in &self.entries {
            if bool::from(hash.ct_eq(h)) {
                found = Some(p.clone());
            }
        }
        found
    }

    /// The holder of a presented token.
    pub fn check(&self, token: &str) -> Option<P> {
        self.by_hash(&token_hash(token))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_hashed_token_is_accepted() {
        let t = HashedTokens::new(vec![(token_hash("right"), "post-1")]);
        assert_eq!(t.check("right"), Some("post-1"));
        assert_eq!(t.check("wrong"), None);
        assert_eq!(t.check(""), None);
        let h = hex::encode(token_hash("right"));
        assert_eq!(parse_hash(&h), Some(token_hash("right")));
        assert_eq!(parse_hash("zz"), None);
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            "Bearer right".parse().unwrap_or_else(|_| unreachable!()),
        );
        assert_eq!(bearer(&headers), Some("right"));
        headers.insert(
            header::AUTHORIZATION,
            "Basic right".parse().unwrap_or_else(|_| unreachable!()),
        );
        assert_eq!(bearer(&headers), None);
    }
}
