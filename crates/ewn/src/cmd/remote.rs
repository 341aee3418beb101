//! What the commands that call a service's HTTP API share (`ewn alerts`, `ewn requests`):
//! the service's base URL, and the bearer token, read from a secret file (mode 0600) or the
//! environment, never from a flag value that lands in shell history, and never printed.

use std::path::Path;

use anyhow::{Context, bail};
use zeroize::Zeroizing;

/// `url` without its trailing slashes, once it is an http or https URL.
pub fn base_url(url: &str) -> anyhow::Result<String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| anyhow::anyhow!("--url `{url}`: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        bail!("--url `{url}`: http or https");
    }
    Ok(url.trim_end_matches('/').to_string())
}

/// The bearer token from `file` (`--token-file`, a secret file), else from the environment
/// variable `env`; `what` names it in errors ("desk token").
pub fn bearer_token(
    file: Option<&Path>,
    env: &str,
    what: &str,
) -> anyhow::Result<Zeroizing<String>> {
    let token = match file {
        Some(path) => Zeroizing::new(
            ewn_trust::secret::read_secret(path)
                .context("--token-file")?
                .trim()
                .to_string(),
        ),
        None => match std::env::var(env) {
            Ok(t) => Zeroizing::new(t.trim().to_string()),
            Err(_) => bail!("no {what}: give --token-file FILE or set {env}"),
        },
    };
    checked(token, what)
}

/// A token a bearer header can carry: not empty, printable ASCII without spaces.
fn checked(token: Zeroizing<String>, what: &str) -> anyhow::Result<Zeroizing<String>> {
    if token.is_empty() {
        bail!("the {what} is empty");
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        bail!("the {what} holds characters a bearer token cannot (spaces or control characters)");
    }
    Ok(token)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_printable_and_not_empty_and_errors_never_show_it() {
        let ok = checked(Zeroizing::new("abc-123_XYZ".into()), "desk token").unwrap();
        assert_eq!(ok.as_str(), "abc-123_XYZ");
        let e = checked(Zeroizing::new(String::new()), "desk token").unwrap_err();
        assert_eq!(e.to_string(), "the desk token is empty");
        let e = checked(Zeroizing::new("sec ret".into()), "token").unwrap_err();
        assert!(
            e.to_string().starts_with("the token holds characters"),
            "{e}"
        );
        assert!(!e.to_string().contains("sec"), "{e}");
    }

    #[test]
    fn base_urls_are_http_without_trailing_slashes() {
        assert_eq!(
            base_url("http://127.0.0.1:8080//").unwrap(),
            "http://127.0.0.1:8080"
        );
        assert!(
            base_url("ftp://x")
                .unwrap_err()
                .to_string()
                .contains("http or https")
        );
        assert!(base_url("nope").is_err());
    }
}
