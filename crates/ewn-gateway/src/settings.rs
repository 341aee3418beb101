//! The `[gateway]` configuration section.

use std::net::SocketAddr;
use std::path::PathBuf;

use ewn_ops::http::{AdminSettings, HttpLimits};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewaySettings {
    /// The posts' intake: `POST /api/v1/incidents`.
    pub listen: SocketAddr,
    /// `/metrics` and `/healthz`.
    pub admin: AdminSettings,
    /// Limits of the intake's HTTP server.
    pub http: HttpLimits,
    /// The member state this gateway signs for (ISO 3166-1 alpha-2). Required.
    pub state: String,
    /// The signing key (PKCS#8 PEM, mode 0600), watched: a replaced file is picked up
    /// without a restart. A line `key_id = <id>` before the PEM block names the key; without
    /// it, `key_id` below does. Required.
    pub signing_key_file: Option<PathBuf>,
    /// The key id of a signing key file that does not name its own.
    pub key_id: String,
    /// How often the signing key file is checked for a replacement.
    pub key_reload_interval_ms: u64,
    /// The network blinding key (mode 0600). Required.
    pub blinding_key_file: Option<PathBuf>,
    /// A TOML file of `[[tokens]]` (name, post_id, sha256 of the token); mode 0600.
    /// Required: a post without a token cannot post.
    pub tokens_file: Option<PathBuf>,
    /// Largest request body accepted; larger ones get 413 unread.
    pub max_body_bytes: usize,
    pub spool: SpoolSettings,
    pub forward: ForwardSettings,
    pub drop: DropSettings,
    /// This gateway's id in its heartbeats (their record key); empty: `<state>-gateway`.
    pub id: String,
    pub heartbeat: crate::heartbeat::HeartbeatSettings,
    /// The raw details of signed reports, kept locally for case requests.
    pub details: crate::cases::DetailsSettings,
    /// Case requests from desks: read, listed, approved or declined by operators.
    pub requests: crate::requests::RequestsSettings,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpoolSettings {
    /// The SQLite database of the spool (created with its WAL beside it). Required.
    pub path: Option<PathBuf>,
    /// Signed records (key + value bytes) the spool may hold; past it intake answers 507.
    pub max_bytes: u64,
    /// Records the spool may hold; past it intake answers 507.
    pub max_records: u64,
    /// `true`: concurrent requests share one synced commit (group commit); `false`: each
    /// request is its own synced transaction. Either way nothing is answered 202 before
    /// its records are on disk.
    pub group_commit: bool,
    /// Most requests one group commit takes.
    pub group_max_requests: usize,
    /// How long an accepted report's id (and payload digest) is remembered: a report sent
    /// again within it (the post's answer was lost) is answered `duplicate` and not signed
    /// or sent again, so the topic never holds two envelopes of it. Past it, or past
    /// `remember_max_ids` (the oldest forgotten first), it would be accepted again (and the
    /// processor's replay guard rejects the second as `duplicate`).
    pub remember_secs: u64,
    pub remember_max_ids: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ForwardSettings {
    /// Records of one post sent but not yet confirmed, at most.
    pub window_per_post: usize,
    /// Records one post may send in its turn of the round robin.
    pub quantum: usize,
    /// First wait after the broker failed a record; doubles up to `max_backoff_ms`.
    pub initial_backoff_ms: u64,
    pub max_backoff_ms: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DropSettings {
    /// The watched directory: one subdirectory per post (named by its post id) where the
    /// post's terminal renames complete `*.jsonl` files into place. None: no file intake.
    pub dir: Option<PathBuf>,
    pub poll_interval_ms: u64,
}

impl Default for GatewaySettings {
    fn default() -> Self {
        GatewaySettings {
            listen: SocketAddr::from(([127, 0, 0, 1], 8090)),
            admin: AdminSettings {
                listen: SocketAddr::from(([127, 0, 0, 1], 9103)),
                metrics_token_file: None,
            },
            http: HttpLimits::default(),
            state: String::new(),
            signing_key_file: None,
            key_id: String::new(),
            key_reload_interval_ms: 1_000,
            blinding_key_file: None,
            tokens_file: None,
            max_body_bytes: 8 << 20,
            spool: SpoolSettings::default(),
            forward: ForwardSettings::default(),
            drop: DropSettings::default(),
            id: String::new(),
            heartbeat: crate::heartbeat::HeartbeatSettings::default(),
            details: crate::cases::DetailsSettings::default(),
            requests: crate::requests::RequestsSettings::default(),
        }
    }
}

impl Default for SpoolSettings {
    fn default() -> Self {
        SpoolSettings {
            path: None,
            max_bytes: 1 << 30,
            max_records: 1_000_000,
            group_commit: true,
            group_max_requests: 256,
            remember_secs: 7 * 86_400,
            remember_max_ids: 1_000_000,
        }
    }
}

impl Default for ForwardSettings {
    fn default() -> Self {
        ForwardSettings {
            window_per_post: 1_000,
            quantum: 200,
            initial_backoff_ms: 500,
            max_backoff_ms: 30_000,
        }
    }
}

impl Default for DropSettings {
    fn default() -> Self {
        DropSettings {
            dir: None,
            poll_interval_ms: 1_000,
        }
    }
}

impl GatewaySettings {
    /// Every problem of the section, each naming its key. `running`: the keys only the
    /// service needs (files, state) are required too.
    /// The id heartbeats carry.
    pub fn gateway_id(&self) -> String {
        if self.id.is_empty() {
            format!("{}-gateway", self.state.to_ascii_lowercase())
        } else {
            self.id.clone()
        }
    }

    pub fn problems(&self, running: bool) -> Vec<String> {
        let mut p = self.http.problems("gateway.http");
        if running {
            if !ewn_model::validate::is_state_code(&self.state) {
                p.push("gateway.state: an upper-case ISO 3166-1 alpha-2 code is required".into());
            }
            for (key, v) in [
                ("gateway.signing_key_file", &self.signing_key_file),
                ("gateway.blinding_key_file", &self.blinding_key_file),
                ("gateway.tokens_file", &self.tokens_file),
                ("gateway.spool.path", &self.spool.path),
            ] {
                if v.is_none() {
                    p.push(format!("{key}: is required"));
                }
            }
        }
        p.extend(self.heartbeat.problems());
        p.extend(self.details.problems());
        p.extend(self.requests.problems(self.details.path.as_deref()));
        if !self.id.is_empty() && !crate::intake::is_post_id(&self.id) {
            p.push("gateway.id: letters, digits, `-`, `_` and `.`, at most 64".into());
        }
        if self.key_reload_interval_ms == 0 {
            p.push("gateway.key_reload_interval_ms: must be positive".into());
        }
        if self.max_body_bytes < 1024 {
            p.push("gateway.max_body_bytes: must be at least 1024".into());
        }
        if self.spool.max_bytes == 0 || self.spool.max_records == 0 {
            p.push("gateway.spool: max_bytes and max_records must be positive".into());
        }
        if self.spool.remember_secs == 0 || self.spool.remember_max_ids == 0 {
            p.push("gateway.spool: remember_secs and remember_max_ids must be positive".into());
        }
        if self.spool.group_max_requests == 0 {
            p.push("gateway.spool.group_max_requests: must be at least 1".into());
        }
        if self.forward.window_per_post == 0 || self.forward.quantum == 0 {
            p.push("gateway.forward: window_per_post and quantum must be at least 1".into());
        }
        if self.forward.initial_backoff_ms == 0
            || self.forward.max_backoff_ms < self.forward.initial_backoff_ms
        {
            p.push("gateway.forward: 0 < initial_backoff_ms <= max_backoff_ms is required".into());
        }
        if self.drop.poll_interval_ms == 0 {
            p.push("gateway.drop.poll_interval_ms: must be positive".into());
        }
        p
    }
}
