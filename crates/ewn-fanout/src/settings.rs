//! The `[fanout]` configuration section and the `[[subscriptions]]` of the configuration
//! file.

use std::net::SocketAddr;
use std::path::PathBuf;

use ewn_model::{Category, Channel, EscalationStep, Format, Level, Subscription, Tlp};
use ewn_ops::http::{AdminSettings, HttpLimits};
use serde::{Deserialize, Serialize};

use crate::destination::DestinationPolicy;
use crate::webhook::WebhookSecret;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FanoutSettings {
    /// The desk-facing API: subscriptions (admin), acknowledgements, the live stream and
    /// the console.
    pub listen: SocketAddr,
    /// `/metrics` and `/healthz`.
    pub admin: AdminSettings,
    /// Limits of the desk-facing API's HTTP server.
    pub http: HttpLimits,
    /// Consumer group; empty: `<topic_prefix>fanout`. Instances sharing it share the work.
    pub group_id: String,
    /// Name of this instance in logs; empty: `fanout-<pid>`.
    pub instance_id: String,
    /// The CAP `<sender>` of every rendered alert.
    pub sender: String,
    /// The languages of a CAP alert's `info` blocks, in order (`ewn_fanout::i18n`): each
    /// needs a complete compiled-in catalogue, checked at start.
    pub languages: Vec<String>,
    /// A TOML file of `[[tokens]]` (name, role, sha256 of the token, subscription for a
    /// desk); mode 0600. Without it every authenticated endpoint answers 401.
    pub tokens_file: Option<PathBuf>,
    /// The fan-out key (64 hex digits, mode 0600), the same on every instance: it seals
    /// webhook secrets on the subscriptions topic, signs console sessions and keys the
    /// identifiers redacted recipients get. Required.
    pub key_file: Option<PathBuf>,
    pub batch_max: usize,
    pub batch_wait_ms: u64,
    /// Alerts read but not yet terminal for every recipient; reading pauses beyond it.
    pub max_pending_alerts: usize,
    pub webhook: WebhookSettings,
    pub escalation: EscalationSettings,
    pub stream: StreamSettings,
    pub index: IndexSettings,
    /// Receipts per partition of `<prefix>deliveries` read at start, so a replay after a
    /// crash skips what was already delivered.
    pub receipts_lookback: i64,
    /// How long a console session lasts.
    pub session_ttl_secs: u64,
    /// Logged-out console sessions each instance remembers; past it the oldest is
    /// forgotten (that session then lasts until `session_ttl_secs` ends it).
    pub max_revoked_sessions: usize,
    /// Subscriptions held. Past it a new subscription is refused: the admin API answers
    /// 507 and a record for a new id on `<prefix>subscriptions` is not applied (counted as
    /// `over_capacity`); changes to held ones still apply. It also bounds the endpoint
    /// workers (one per webhook subscription), and with `max_pending_alerts` the
    /// deliveries in flight and parked (at most one per pending alert and subscription).
    pub max_subscriptions: usize,
    pub audit: AuditSettings,
    pub oversight: OversightSettings,
}

impl Default for FanoutSettings {
    fn default() -> Self {
        FanoutSettings {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin: AdminSettings {
                listen: SocketAddr::from(([127, 0, 0, 1], 9102)),
                metrics_token_file: None,
            },
            http: HttpLimits::default(),
            group_id: String::new(),
            instance_id: String::new(),
            sender: "ewn@rcc.ewn.invalid".into(),
            languages: vec!["en-US".into(), "ru-RU".into()],
            tokens_file: None,
            key_file: None,
            batch_max: 500,
            batch_wait_ms: 20,
            max_pending_alerts: 10_000,
            webhook: WebhookSettings::default(),
            escalation: EscalationSettings::default(),
            stream: StreamSettings::default(),
            index: IndexSettings::default(),
            receipts_lookback: 100_000,
            session_ttl_secs: 12 * 3600,
            max_revoked_sessions: 10_000,
            max_subscriptions: 10_000,
            audit: AuditSettings::default(),
            oversight: OversightSettings::default(),
        }
    }
}

/// The `[fanout.oversight]` section: the oversight role's read-only endpoints
/// (`/api/v1/oversight/...`), which read `<prefix>deliveries`, `<prefix>acks` and
/// `<prefix>audit` on demand (see `oversight.rs` for why no index is kept).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OversightSettings {
    /// Records in one page; `?limit=` may ask for fewer, never more.
    pub max_page: usize,
    /// How long one read may take. Past it the page holds what was read, says
    /// `"complete": false` and carries the cursor to go on from.
    pub read_timeout_ms: u64,
    /// Reads served at once (each holds a consumer and a blocking thread); past it a read
    /// is answered 429 with `Retry-After`.
    pub max_concurrent_reads: usize,
}

impl Default for OversightSettings {
    fn default() -> Self {
        OversightSettings {
            max_page: 200,
            read_timeout_ms: 10_000,
            max_concurrent_reads: 2,
        }
    }
}

/// The `[fanout.audit]` section: the audit log of administrative acts on `<prefix>audit`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditSettings {
    /// The fan-out's own Ed25519 key (PKCS#8 PEM, mode 0600), in the trust store with role
    /// `service` and service `fanout`. Unset: no audit records are written.
    pub signing_key_file: Option<PathBuf>,
    /// Its id in the trust store.
    pub key_id: String,
    /// Records waiting to be signed and written; past it a new record is dropped and counted
    /// (`ewn_fanout_audit_records_total{outcome="dropped"}`): the act itself still happens,
    /// an audit record never delays a subscription change or an acknowledgement.
    pub queue_max: usize,
}

impl Default for AuditSettings {
    fn default() -> Self {
        AuditSettings {
            signing_key_file: None,
            key_id: String::new(),
            queue_max: 1024,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookSettings {
    /// One attempt's limit, connection included.
    pub timeout_ms: u64,
    /// Attempts before a delivery becomes a dead letter.
    pub max_attempts: u32,
    /// First retry delay; each further one doubles, with full jitter, up to the maximum.
    pub initial_backoff_ms: u64,
    pub max_backoff_ms: u64,
    /// The `User-Agent` of every attempt.
    pub user_agent: String,
    /// Hosts (as written in URLs: names, IPv4 literals, `[IPv6]` literals) whose webhooks
    /// may use plain `http`; every other webhook must be `https`. Default: none.
    pub allow_http_hosts: Vec<String>,
    /// CIDR blocks (or single addresses) of loopback, link-local, private, shared or
    /// reserved addresses that webhooks may still connect to, e.g. `["10.20.0.0/16"]` for a
    /// desk network. Default: none (only public addresses). See `destination.rs`.
    pub allow_private_cidrs: Vec<String>,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        WebhookSettings {
            timeout_ms: 10_000,
            max_attempts: 12,
            initial_backoff_ms: 500,
            max_backoff_ms: 60_000,
            user_agent: concat!("ewn-fanout/", env!("CARGO_PKG_VERSION")).into(),
            allow_http_hosts: Vec::new(),
            allow_private_cidrs: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EscalationSettings {
    /// Alerts at or above this level escalate when no primary recipient acknowledges.
    pub min_level: Level,
    /// How often pending escalations are checked.
    pub tick_ms: u64,
}

impl Default for EscalationSettings {
    fn default() -> Self {
        EscalationSettings {
            min_level: Level::High,
            tick_ms: 500,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamSettings {
    /// Alerts per partition kept for `Last-Event-ID` resume and the console's history.
    pub buffer_alerts: usize,
    /// An SSE comment this often keeps idle connections and proxies alive.
    pub keepalive_secs: u64,
    /// Concurrent stream connections per subscription.
    pub max_clients_per_subscription: usize,
}

impl Default for StreamSettings {
    fn default() -> Self {
        StreamSettings {
            buffer_alerts: 2_000,
            keepalive_secs: 15,
            max_clients_per_subscription: 8,
        }
    }
}

/// The alert index: every episode's marking, acknowledgement and cancellation, rebuilt
/// from `<prefix>alerts` at start.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IndexSettings {
    /// Alert messages held; past it the oldest episodes are forgotten whole (counted).
    pub max_messages: usize,
    /// Records per partition of `<prefix>alerts` read at start to rebuild it.
    pub rebuild_lookback: i64,
    /// Incidents an episode remembers for case requests (from its messages' evidence);
    /// past it the later ones are counted and a request for one is refused.
    pub max_episode_incidents: usize,
}

impl Default for IndexSettings {
    fn default() -> Self {
        IndexSettings {
            max_messages: 500_000,
            rebuild_lookback: 100_000,
            max_episode_incidents: crate::index::MAX_EPISODE_INCIDENTS,
        }
    }
}

impl FanoutSettings {
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.audit.queue_max == 0 {
            p.push("fanout.audit.queue_max: must be at least 1".into());
        }
        if !(1..=65_536).contains(&self.index.max_episode_incidents) {
            p.push("fanout.index.max_episode_incidents: 1 to 65536".into());
        }
        let o = &self.oversight;
        if o.max_page == 0 || o.max_page > 10_000 {
            p.push("fanout.oversight.max_page: 1 to 10000".into());
        }
        if o.read_timeout_ms == 0 {
            p.push("fanout.oversight.read_timeout_ms: must be positive".into());
        }
        if o.max_concurrent_reads == 0 {
            p.push("fanout.oversight.max_concurrent_reads: must be at least 1".into());
        }
        if self.audit.signing_key_file.is_some() && self.audit.key_id.is_empty() {
            p.push("fanout.audit.key_id: needed with fanout.audit.signing_key_file".into());
        }
        let w = &self.webhook;
        if w.timeout_ms == 0 {
            p.push("fanout.webhook.timeout_ms: must be positive".into());
        }
        if w.max_attempts == 0 {
            p.push("fanout.webhook.max_attempts: must be at least 1".into());
        }
        if w.initial_backoff_ms == 0 || w.max_backoff_ms < w.initial_backoff_ms {
            p.push("fanout.webhook: need 0 < initial_backoff_ms <= max_backoff_ms".into());
        }
        p.extend(DestinationPolicy::problems(w));
        if self.batch_max == 0 {
            p.push("fanout.batch_max: must be at least 1".into());
        }
        if self.max_subscriptions == 0 {
            p.push("fanout.max_subscriptions: must be at least 1".into());
        }
        if self.max_revoked_sessions == 0 {
            p.push("fanout.max_revoked_sessions: must be at least 1".into());
        }
        if self.max_pending_alerts == 0 {
            p.push("fanout.max_pending_alerts: must be at least 1".into());
        }
        if self.stream.buffer_alerts == 0 {
            p.push("fanout.stream.buffer_alerts: must be at least 1".into());
        }
        p.extend(self.http.problems("fanout.http"));
        if self.index.max_messages == 0 {
            p.push("fanout.index.max_messages: must be at least 1".into());
        }
        if self.index.rebuild_lookback < 0 {
            p.push("fanout.index.rebuild_lookback: must not be negative".into());
        }
        if self.escalation.tick_ms == 0 {
            p.push("fanout.escalation.tick_ms: must be positive".into());
        }
        if self.sender.is_empty() || self.sender.contains([' ', ',', '<', '&']) {
            p.push("fanout.sender: must be non-empty, without spaces, commas, < or &".into());
        }
        if let Err(problems) = crate::i18n::Catalogue::load(&self.languages) {
            p.extend(problems);
        }
        p
    }
}

/// `format = "json" | "cap"` as people write it in a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum FormatName {
    #[default]
    Json,
    Cap,
}

/// `channel = "webhook" | "stream" | "console"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelName {
    Webhook,
    Stream,
    Console,
}

/// `Debug` leaves the secret out.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub url: String,
    /// `whsec_` + base64 of the key. Prefer `secret_file` outside tests and demos.
    #[serde(default, skip_serializing)]
    pub secret: Option<String>,
    /// A file (mode 0600) holding the `whsec_` secret.
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("url", &self.url)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("secret_file", &self.secret_file)
            .finish()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepConfig {
    pub after_secs: i64,
    pub targets: Vec<String>,
}

/// One `[[subscriptions]]` entry, and the body of the admin API.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionConfig {
    pub id: String,
    pub agency: String,
    /// The highest TLP this subscriber may receive.
    pub clearance: Tlp,
    #[serde(default = "lowest_level")]
    pub min_level: Level,
    #[serde(default)]
    pub categories: Vec<Category>,
    #[serde(default)]
    pub states: Vec<String>,
    #[serde(default)]
    pub areas: Vec<String>,
    #[serde(default)]
    pub rules: Vec<String>,
    #[serde(default)]
    pub format: FormatName,
    /// Default: `webhook` when a webhook is given, else `stream`.
    #[serde(default)]
    pub channel: Option<ChannelName>,
    #[serde(default)]
    pub webhook: Option<WebhookConfig>,
    /// Receive a redacted form of alerts above the clearance instead of nothing.
    #[serde(default)]
    pub redacted: bool,
    #[serde(default)]
    pub escalation: Vec<StepConfig>,
    /// The languages (BCP 47 tags, each one of `fanout.languages`) a JSON body carries the
    /// alert's headline, description and instruction in; empty: the first of
    /// `fanout.languages`. CAP carries every configured language whatever this says.
    #[serde(default)]
    pub languages: Vec<String>,
}

fn lowest_level() -> Level {
    Level::Low
}

/// Ids and agency names: short, printable, safe in a URL path, a header and a log line.
pub fn is_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

impl SubscriptionConfig {
    /// A subscription to every alert its clearance allows, in JSON, by signed webhook.
    pub fn webhook(id: &str, agency: &str, clearance: Tlp, url: String, secret: String) -> Self {
        SubscriptionConfig {
            id: id.into(),
            agency: agency.into(),
            clearance,
            min_level: Level::Low,
            categories: vec![],
            states: vec![],
            areas: vec![],
            rules: vec![],
            format: FormatName::Json,
            channel: None,
            webhook: Some(WebhookConfig {
                url,
                secret: Some(secret),
                secret_file: None,
            }),
            redacted: false,
            escalation: vec![],
            languages: vec![],
        }
    }

    /// Every problem, each naming `at` (e.g. `subscriptions[2]`) and the field. The
    /// webhook URL is checked against the destination policy of `webhook`.
    pub fn problems(&self, at: &str, webhook: &WebhookSettings) -> Vec<String> {
        let mut p = Vec::new();
        if !is_name(&self.id) {
            p.push(format!(
                "{at}.id: 1-64 characters of A-Z a-z 0-9 - _ . expected"
            ));
        }
        if !is_name(&self.agency) {
            p.push(format!(
                "{at}.agency: 1-64 characters of A-Z a-z 0-9 - _ . expected"
            ));
        }
        for s in &self.states {
            if s.len() != 2 || !s.bytes().all(|b| b.is_ascii_uppercase()) {
                p.push(format!(
                    "{at}.states: `{}` is not an upper-case ISO 3166-1 alpha-2 code",
                    ewn_model::validate::printable(s)
                ));
            }
        }
        for (i, s) in self.areas.iter().chain(&self.rules).enumerate() {
            if s.is_empty() || s.len() > 64 || s.chars().any(char::is_control) {
                p.push(format!("{at}.areas/rules[{i}]: 1-64 printable characters"));
            }
        }
        let channel = self.channel();
        match (&self.webhook, channel) {
            (None, Channel::Webhook) => p.push(format!("{at}.webhook: channel webhook needs one")),
            (Some(_), Channel::Stream | Channel::Console) => p.push(format!(
                "{at}.webhook: given, but the channel is {}",
                channel.as_str().to_ascii_lowercase()
            )),
            (Some(w), Channel::Webhook) => {
                if let Err(e) = DestinationPolicy::new(webhook).check_url(&w.url) {
                    p.push(format!("{at}.webhook.url: {e}"));
                }
                match (&w.secret, &w.secret_file) {
                    (Some(s), None) => {
                        if let Err(e) = WebhookSecret::parse(s) {
                            p.push(format!("{at}.webhook.secret: {e}"));
                        }
                    }
                    (None, Some(_)) => {}
                    _ => p.push(format!(
                        "{at}.webhook: exactly one of secret and secret_file expected"
                    )),
                }
            }
            (None, _) => {}
        }
        for (i, step) in self.escalation.iter().enumerate() {
            if step.after_secs <= 0 {
                p.push(format!("{at}.escalation[{i}].after_secs: must be positive"));
            }
            if i > 0 && step.after_secs <= self.escalation[i - 1].after_secs {
                p.push(format!(
                    "{at}.escalation[{i}].after_secs: steps must come later one after another"
                ));
            }
            if step.targets.is_empty() || step.targets.iter().any(|t| !is_name(t)) {
                p.push(format!(
                    "{at}.escalation[{i}].targets: subscription ids expected"
                ));
            }
        }
        p
    }

    /// Each requested language that the fan-out does not serve (`configured` is
    /// `fanout.languages`), naming the field; a tag is echoed only when it is a short
    /// printable language tag, so a hostile body is never reflected.
    pub fn language_problems(&self, at: &str, configured: &[String]) -> Vec<String> {
        let mut p = Vec::new();
        if self.languages.len() > configured.len() {
            p.push(format!(
                "{at}.languages: at most {} languages (those of fanout.languages)",
                configured.len()
            ));
        }
        for (i, tag) in self.languages.iter().enumerate() {
            let shown = if tag.len() <= 35
                && !tag.is_empty()
                && tag.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            {
                format!("`{tag}`")
            } else {
                "the tag".to_string()
            };
            if self.languages[..i].contains(tag) {
                p.push(format!("{at}.languages[{i}]: {shown} is listed twice"));
            } else if !configured.contains(tag) {
                p.push(format!(
                    "{at}.languages[{i}]: {shown} is not one of fanout.languages ({})",
                    configured.join(", ")
                ));
            }
        }
        p
    }

    pub fn channel(&self) -> Channel {
        match self.channel {
            Some(ChannelName::Webhook) => Channel::Webhook,
            Some(ChannelName::Stream) => Channel::Stream,
            Some(ChannelName::Console) => Channel::Console,
            None if self.webhook.is_some() => Channel::Webhook,
            None => Channel::Stream,
        }
    }

    /// The wire record, with the webhook secret read from its file when given there.
    pub fn to_record(&self, now_ms: i64) -> Result<Subscription, String> {
        let secret = match &self.webhook {
            Some(WebhookConfig {
                secret: Some(s), ..
            }) => Some(s.clone()),
            Some(WebhookConfig {
                secret_file: Some(path),
                ..
            }) => {
                let s = ewn_trust::secret::read_secret(path)
                    .map_err(|e| format!("subscription {}: {e}", self.id))?;
                let s = s.trim().to_string();
                WebhookSecret::parse(&s)
                    .map_err(|e| format!("subscription {}: {}: {e}", self.id, path.display()))?;
                Some(s)
            }
            _ => None,
        };
        Ok(Subscription {
            id: self.id.clone(),
            agency: self.agency.clone(),
            clearance: self.clearance,
            min_level: self.min_level,
            categories: self.categories.clone(),
            states: self.states.clone(),
            areas: self.areas.clone(),
            rules: self.rules.clone(),
            format: match self.format {
                FormatName::Json => Format::Json,
                FormatName::Cap => Format::Cap,
            },
            channel: self.channel(),
            webhook_url: self.webhook.as_ref().map(|w| w.url.clone()),
            webhook_secret: secret,
            redacted_above_clearance: self.redacted,
            escalation: self
                .escalation
                .iter()
                .map(|s| EscalationStep {
                    after_secs: s.after_secs,
                    targets: s.targets.clone(),
                })
                .collect(),
            updated_at: now_ms,
            disabled_at: None,
            disabled_reason: None,
            languages: self.languages.clone(),
        })
    }
}

/// What the admin API shows of a subscription: everything but the secret.
#[derive(Clone, Debug, Serialize)]
pub struct SubscriptionView<'a> {
    pub id: &'a str,
    pub agency: &'a str,
    pub clearance: Tlp,
    pub min_level: Level,
    pub categories: &'a [Category],
    pub states: &'a [String],
    pub areas: &'a [String],
    pub rules: &'a [String],
    pub format: Format,
    pub channel: Channel,
    pub webhook_url: Option<&'a str>,
    pub webhook_secret_set: bool,
    pub redacted: bool,
    pub escalation: &'a [EscalationStep],
    pub updated_at: i64,
    pub disabled_at: Option<i64>,
    pub disabled_reason: Option<&'a str>,
    pub languages: &'a [String],
}

impl<'a> From<&'a Subscription> for SubscriptionView<'a> {
    fn from(s: &'a Subscription) -> Self {
        SubscriptionView {
            id: &s.id,
            agency: &s.agency,
            clearance: s.clearance,
            min_level: s.min_level,
            categories: &s.categories,
            states: &s.states,
            areas: &s.areas,
            rules: &s.rules,
            format: s.format,
            channel: s.channel,
            webhook_url: s.webhook_url.as_deref(),
            webhook_secret_set: s.webhook_secret.is_some(),
            redacted: s.redacted_above_clearance,
            escalation: &s.escalation,
            updated_at: s.updated_at,
            disabled_at: s.disabled_at,
            disabled_reason: s.disabled_reason.as_deref(),
            languages: &s.languages,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> SubscriptionConfig {
        toml::from_str(text).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn the_issue_example_parses_and_validates() {
        let s = parse(
            r#"
id = "kg-desk"
agency = "KG-GKNB"
clearance = "AMBER"
min_level = "MEDIUM"
categories = []
states = []
areas = []
format = "json"
webhook = { url = "http://127.0.0.1:9999/hook", secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw" }
"#,
        );
        let loopback = WebhookSettings {
            allow_http_hosts: vec!["127.0.0.1".into()],
            allow_private_cidrs: vec!["127.0.0.1/32".into()],
            ..WebhookSettings::default()
        };
        assert!(s.problems("subscriptions[0]", &loopback).is_empty());
        // The default policy refuses it twice: http, and a loopback address.
        let p = s
            .problems("subscriptions[0]", &WebhookSettings::default())
            .join("\n");
        assert!(
            p.contains("subscriptions[0].webhook.url: http is allowed only"),
            "{p}"
        );
        let s = SubscriptionConfig {
            webhook: Some(WebhookConfig {
                url: "https://127.0.0.1:9999/hook".into(),
                ..s.webhook.clone().unwrap()
            }),
            ..s
        };
        let p = s
            .problems("subscriptions[0]", &WebhookSettings::default())
            .join("\n");
        assert!(
            p.contains("subscriptions[0].webhook.url: `127.0.0.1` is a loopback"),
            "{p}"
        );
        let r = s.to_record(1).unwrap();
        assert_eq!(r.channel, Channel::Webhook);
        assert_eq!(r.format, Format::Json);
        assert_eq!(r.min_level, Level::Medium);
    }

    #[test]
    fn problems_name_the_field() {
        let s = parse(
            r#"
id = "kg desk"
agency = "KG"
clearance = "RED"
states = ["kg"]
webhook = { url = "ftp://x/", secret = "nope" }
escalation = [{ after_secs = 0, targets = [] }]
"#,
        );
        let p = s
            .problems("subscriptions[1]", &WebhookSettings::default())
            .join("\n");
        for needle in [
            "subscriptions[1].id",
            "subscriptions[1].states",
            "subscriptions[1].webhook.url",
            "subscriptions[1].webhook.secret",
            "subscriptions[1].escalation[0].after_secs",
            "subscriptions[1].escalation[0].targets",
        ] {
            assert!(p.contains(needle), "{needle} missing from:\n{p}");
        }
    }

    #[test]
    fn requested_languages_must_be_configured() {
        let configured = vec!["en-US".to_string(), "ru-RU".to_string()];
        let mut s = parse("id='a'\nagency='b'\nclearance='GREEN'\nlanguages=['ru-RU']\n");
        assert!(s.language_problems("body", &configured).is_empty());
        assert_eq!(s.to_record(0).unwrap().languages, ["ru-RU"]);
        s.languages = vec!["kk-KZ".into(), "ru-RU".into(), "ru-RU".into()];
        let p = s.language_problems("body", &configured);
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(p[0].starts_with("body.languages: at most 2"), "{p:?}");
        assert!(
            p[1].starts_with("body.languages[0]: `kk-KZ` is not one of fanout.languages"),
            "{p:?}"
        );
        assert!(
            p[2].contains("body.languages[2]: `ru-RU` is listed twice"),
            "{p:?}"
        );
        // A hostile tag is named by its position, never echoed.
        s.languages = vec!["<script>x</script>".into()];
        let p = s.language_problems("body", &configured).join("\n");
        assert!(p.contains("body.languages[0]: the tag is not one"), "{p}");
        assert!(!p.contains("script"), "{p}");
        // Absent: empty, the first configured language.
        let none = parse("id='a'\nagency='b'\nclearance='GREEN'\n");
        assert!(none.languages.is_empty());
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let s = parse(
            "id='a'\nagency='b'\nclearance='GREEN'\nwebhook={url='http://h/x', secret='whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw'}\n",
        );
        let record = s.to_record(0).unwrap();
        for text in [format!("{s:?}"), format!("{record:?}")] {
            assert!(!text.contains("MfKQ9r8G"), "{text}");
            assert!(text.contains("<redacted>"), "{text}");
        }
    }

    #[test]
    fn unknown_keys_are_refused() {
        let e = toml::from_str::<SubscriptionConfig>(
            "id='a'\nagency='b'\nclearance='GREEN'\ncolour='red'\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("colour"), "{e}");
    }
}
