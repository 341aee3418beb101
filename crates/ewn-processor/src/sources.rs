//! Who has been heard from: the last time each member state and each of its posts sent a
//! heartbeat or a report, and the operational alerts when one goes quiet
//! (`source_silent`) or says its reports are piling up unsent (`source_backlog`).
//!
//! Pure and clock-free: every call is given `now` (epoch ms), so the service passes its
//! injected clock and tests pass theirs.
//!
//! # Time
//!
//! Silence is judged by the processor's clock, since silence is exactly when no event
//! arrives to carry a time. "Heard at" is the signing time of the heartbeat or report
//! (its `signed_at`, or a legacy envelope's `reported_at`), never later than `now`: what a
//! processor rebuilds by re-reading recent heartbeats after a restart is what it saw
//! before, and two processors reading the same heartbeats agree on it (and so on the ids
//! of the alerts). A heartbeat's post entry counts as hearing from the post at
//! `heard_at - last_contact_age_ms` (the gateway's own measure of when the post last
//! reached it); a post listed with no contact since the gateway started is tracked but not
//! heard. A heartbeat always counts as hearing from its state.
//!
//! # Episodes
//!
//! A source is silent once `now - last_seen >= silent_after`; `last_seen` is the processor
//! start for a configured state not heard since (so a state never heard from is silent
//! `silent_after` after start). The ALERT's `window_start` is the last time heard (the
//! processor start when never), `window_end` the moment it became silent; its id is
//! `alert_id("source_silent", key, window_start)` like every rule's. A CANCEL follows when
//! it is heard from again within `silent_after` of `now`. A post's backlog episode starts
//! when a heartbeat reports its oldest unsent report older than `backlog_after`
//! (`window_start` = when, on the gateway's clock, it crossed the threshold) and is
//! cancelled by a heartbeat reporting it at or under the threshold, or nothing waiting.
//!
//! # Bounds
//!
//! States are the configured ones (`kafka.states`): a closed set, tracked from the start.
//! Posts are tracked once a gateway's heartbeat lists them: a gateway serving a post is
//! the promise that the post calls in; a post reporting without a gateway (`ewn publish`)
//! promises no rate, so its reports count for its state and, once a gateway lists it,
//! for the post. Tracked posts are bounded by `process.sources.max_posts`; past it a new post
//! is not tracked (counted in `ewn_processor_source_posts_untracked_total`; its state still
//! is), and those already tracked stay. Nothing is forgotten: a post removed from service
//! stays silent until the processor restarts.

use std::collections::BTreeMap;

use ewn_model::{Alert, Heartbeat, Level, MsgType, ScoreReason, Tlp};
use serde::{Deserialize, Serialize};

use crate::alert::{alert_id, digest_id, incident_digest};

/// The rule names of the operational alerts, as subscriptions name them (`rules = [...]`).
pub const SOURCE_SILENT: &str = "source_silent";
pub const SOURCE_BACKLOG: &str = "source_backlog";
pub const RULES: [&str; 2] = [SOURCE_SILENT, SOURCE_BACKLOG];

/// The `[process.sources]` section.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SourceSettings {
    /// A state or post that sends neither heartbeats nor reports this long is silent.
    pub silent_after_secs: u64,
    /// A post whose oldest unsent report (as its gateway's heartbeat says) is older than
    /// this is backlogged.
    pub backlog_after_secs: u64,
    /// Posts tracked at most; see the module documentation for what happens at the bound.
    pub max_posts: usize,
    /// How often silence is judged.
    pub check_interval_ms: u64,
    /// Heartbeat records re-read per partition at start, to rebuild when each source was
    /// last heard from.
    pub lookback_records: i64,
    /// Level of the operational alerts (subscriptions filter on it with `min_level`).
    pub level: Level,
    /// Their handling mark.
    pub tlp: Tlp,
}

impl Default for SourceSettings {
    fn default() -> Self {
        SourceSettings {
            silent_after_secs: 300,
            backlog_after_secs: 900,
            max_posts: 10_000,
            check_interval_ms: 1000,
            lookback_records: 1000,
            level: Level::Medium,
            tlp: Tlp::Green,
        }
    }
}

impl SourceSettings {
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        for (name, secs) in [
            ("silent_after_secs", self.silent_after_secs),
            ("backlog_after_secs", self.backlog_after_secs),
        ] {
            if !(1..=7 * 24 * 3600).contains(&secs) {
                p.push(format!("process.sources.{name}: 1 s..7 days"));
            }
        }
        if !(1..=1_000_000).contains(&self.max_posts) {
            p.push("process.sources.max_posts: 1..1000000".into());
        }
        if !(10..=60_000).contains(&self.check_interval_ms) {
            p.push("process.sources.check_interval_ms: 10..60000".into());
        }
        if !(0..=1_000_000).contains(&self.lookback_records) {
            p.push("process.sources.lookback_records: 0..1000000".into());
        }
        p
    }

    fn silent_after_ms(&self) -> i64 {
        self.silent_after_secs as i64 * 1000
    }

    fn backlog_after_ms(&self) -> i64 {
        self.backlog_after_secs as i64 * 1000
    }
}

/// An open alert episode.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Episode {
    id: String,
    start: i64,
}

#[derive(Clone, Debug, Default)]
struct Liveness {
    last_seen: Option<i64>,
    silent: Option<Episode>,
}

impl Liveness {
    fn heard(&mut self, at: i64) {
        self.last_seen = Some(self.last_seen.map_or(at, |t| t.max(at)));
    }
}

/// The latest figures a heartbeat gave for a post.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PostFigures {
    /// When the heartbeat was signed (gateway clock).
    pub as_of: i64,
    pub spool_depth: i64,
    pub oldest_unsent_age_ms: Option<i64>,
}

#[derive(Clone, Debug, Default)]
struct Post {
    live: Liveness,
    figures: Option<PostFigures>,
    backlog: Option<Episode>,
}

/// One tracked source, for the metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen<'a> {
    pub state: &'a str,
    pub post: Option<&'a str>,
    /// The last time heard, or the processor start when never (see the module docs).
    pub last_seen_or_start: i64,
    pub figures: Option<PostFigures>,
}

pub struct SourceTracker {
    settings: SourceSettings,
    started_at: i64,
    states: BTreeMap<String, Liveness>,
    posts: BTreeMap<(String, String), Post>,
    untracked: u64,
}

impl SourceTracker {
    /// Tracks the configured `states` (any case) from `now`.
    pub fn new(settings: SourceSettings, states: &[String], now: i64) -> SourceTracker {
        SourceTracker {
            settings,
            started_at: now,
            states: states
                .iter()
                .map(|s| (s.to_ascii_uppercase(), Liveness::default()))
                .collect(),
            posts: BTreeMap::new(),
            untracked: 0,
        }
    }

    pub fn settings(&self) -> &SourceSettings {
        &self.settings
    }

    /// Posts tracked.
    pub fn post_count(&self) -> usize {
        self.posts.len()
    }

    /// New posts not tracked at the bound since the last call.
    pub fn take_untracked(&mut self) -> u64 {
        std::mem::take(&mut self.untracked)
    }

    /// The entry of a post, made if there is room; `None` for a state not configured or
    /// past the bound.
    fn post(&mut self, state: &str, post: &str) -> Option<&mut Post> {
        if !self.states.contains_key(state) {
            return None;
        }
        let key = (state.to_string(), post.to_string());
        if !self.posts.contains_key(&key) {
            if self.posts.len() >= self.settings.max_posts {
                self.untracked += 1;
                return None;
            }
            self.posts.insert(key.clone(), Post::default());
        }
        self.posts.get_mut(&key)
    }

    /// A verified report from `state` (upper case), from `post` when it names one, signed
    /// at `signed_at`. Reports of a state not configured are not tracked; a post is heard
    /// from by its reports once a heartbeat listed it (it is not tracked by reports alone).
    pub fn report(&mut self, state: &str, post: Option<&str>, signed_at: i64, now: i64) {
        let at = signed_at.min(now);
        let Some(s) = self.states.get_mut(state) else {
            return;
        };
        s.heard(at);
        if let Some(post) = post
            && let Some(p) = self.posts.get_mut(&(state.to_string(), post.to_string()))
        {
            p.live.heard(at);
        }
    }

    /// A verified heartbeat, signed at `signed_at`.
    pub fn heartbeat(&mut self, heartbeat: &Heartbeat, signed_at: i64, now: i64) {
        let at = signed_at.min(now);
        let state = heartbeat.state.as_str();
        let Some(s) = self.states.get_mut(state) else {
            return;
        };
        s.heard(at);
        for status in &heartbeat.posts {
            let Some(p) = self.post(state, &status.post_id) else {
                continue;
            };
            if let Some(age) = status.last_contact_age_ms {
                p.live.heard(at.saturating_sub(age));
            }
            // Figures from an older heartbeat (re-read, or reordered) do not overwrite newer.
            if p.figures.is_none_or(|f| f.as_of <= signed_at) {
                p.figures = Some(PostFigures {
                    as_of: signed_at,
                    spool_depth: status.spool_depth,
                    oldest_unsent_age_ms: status.oldest_unsent_age_ms,
                });
            }
        }
    }

    /// Every tracked source: states first, then posts, in order.
    pub fn seen(&self) -> impl Iterator<Item = Seen<'_>> {
        let start = self.started_at;
        self.states
            .iter()
            .map(move |(state, l)| Seen {
                state,
                post: None,
                last_seen_or_start: l.last_seen.unwrap_or(start),
                figures: None,
            })
            .chain(self.posts.iter().map(move |((state, post), p)| Seen {
                state,
                post: Some(post),
                last_seen_or_start: p.live.last_seen.unwrap_or(start),
                figures: p.figures,
            }))
    }

    /// Judges every source at `now` and appends the ALERTs and CANCELs due.
    pub fn tick(&mut self, now: i64, out: &mut Vec<Alert>) {
        let silent_after = self.settings.silent_after_ms();
        let backlog_after = self.settings.backlog_after_ms();
        let (level, tlp, start) = (self.settings.level, self.settings.tlp, self.started_at);
        let make = |rule: &str, key: String, state: &str, head: Head| {
            source_alert(rule, key, state, head, level, tlp, now)
        };
        for (state, live) in &mut self.states {
            let key = format!("state:{state}");
            let what = format!("state {state}");
            judge_silence(live, start, silent_after, now, &key, &what, |k, h| {
                out.push(make(SOURCE_SILENT, k, state, h))
            });
        }
        for ((state, post), p) in &mut self.posts {
            let key = format!("post:{state}:{post}");
            let what = format!("post {post} of {state}");
            judge_silence(
                &mut p.live,
                start,
                silent_after,
                now,
                &key,
                &what,
                |k, h| out.push(make(SOURCE_SILENT, k.clone(), state, h)),
            );
            let over = p.figures.and_then(|f| {
                f.oldest_unsent_age_ms
                    .filter(|age| *age > backlog_after)
                    .map(|age| (f, age))
            });
            match (&p.backlog, over) {
                (None, Some((f, age))) => {
                    let crossed = f.as_of.saturating_sub(age).saturating_add(backlog_after);
                    let id = alert_id(SOURCE_BACKLOG, &key, crossed);
                    out.push(make(
                        SOURCE_BACKLOG,
                        key.clone(),
                        state,
                        Head {
                            msg_type: MsgType::Alert,
                            id: id.clone(),
                            references: vec![],
                            start: crossed,
                            end: f.as_of,
                            factor: "backlog",
                            detail: format!(
                                "{what}: oldest unsent report {} s old at {} ({} waiting; threshold {} s)",
                                age / 1000,
                                rfc3339(f.as_of),
                                f.spool_depth,
                                backlog_after / 1000
                            ),
                        },
                    ));
                    p.backlog = Some(Episode { id, start: crossed });
                }
                (Some(ep), None) => {
                    let f = p.figures.unwrap_or_default();
                    out.push(make(
                        SOURCE_BACKLOG,
                        key.clone(),
                        state,
                        Head {
                            msg_type: MsgType::Cancel,
                            id: digest_id(&[ep.id.as_bytes(), b"cancel"]),
                            references: vec![ep.id.clone()],
                            start: ep.start,
                            end: f.as_of,
                            factor: "backlog",
                            detail: format!(
                                "{what}: backlog cleared at {} ({} waiting)",
                                rfc3339(f.as_of),
                                f.spool_depth
                            ),
                        },
                    ));
                    p.backlog = None;
                }
                _ => {}
            }
        }
    }
}

/// What distinguishes one operational alert message from another.
struct Head {
    msg_type: MsgType,
    id: String,
    references: Vec<String>,
    start: i64,
    end: i64,
    factor: &'static str,
    detail: String,
}

fn judge_silence(
    live: &mut Liveness,
    started_at: i64,
    silent_after: i64,
    now: i64,
    key: &str,
    what: &str,
    mut emit: impl FnMut(String, Head),
) {
    let since = live.last_seen.unwrap_or(started_at);
    let silent = now.saturating_sub(since) >= silent_after;
    match (&live.silent, silent) {
        (None, true) => {
            let id = alert_id(SOURCE_SILENT, key, since);
            let detail = match live.last_seen {
                Some(t) => format!(
                    "{what}: no heartbeat or report since {} ({} s; silent after {} s)",
                    rfc3339(t),
                    now.saturating_sub(t) / 1000,
                    silent_after / 1000
                ),
                None => format!(
                    "{what}: no heartbeat or report since this processor started at {} (silent after {} s)",
                    rfc3339(started_at),
                    silent_after / 1000
                ),
            };
            emit(
                key.to_string(),
                Head {
                    msg_type: MsgType::Alert,
                    id: id.clone(),
                    references: vec![],
                    start: since,
                    end: since.saturating_add(silent_after),
                    factor: "silence",
                    detail,
                },
            );
            live.silent = Some(Episode { id, start: since });
        }
        (Some(ep), false) => {
            emit(
                key.to_string(),
                Head {
                    msg_type: MsgType::Cancel,
                    id: digest_id(&[ep.id.as_bytes(), b"cancel"]),
                    references: vec![ep.id.clone()],
                    start: ep.start,
                    end: since,
                    factor: "silence",
                    detail: format!("{what}: heard from again at {}", rfc3339(since)),
                },
            );
            live.silent = None;
        }
        _ => {}
    }
}

/// An operational alert: no reports behind it, so no evidence, a score of 0 with one
/// reason saying what happened, and the state it concerns.
fn source_alert(
    rule: &str,
    key: String,
    state: &str,
    head: Head,
    level: Level,
    tlp: Tlp,
    now: i64,
) -> Alert {
    Alert {
        alert_id: head.id,
        msg_type: head.msg_type,
        references: head.references,
        rule: rule.to_string(),
        level,
        score: 0,
        reasons: vec![ScoreReason {
            factor: head.factor.to_string(),
            contribution: 0,
            detail: head.detail,
        }],
        key,
        window_start: head.start,
        window_end: head.end,
        incident_ids: vec![],
        states: vec![state.to_string()],
        categories: vec![],
        areas: vec![],
        points: vec![],
        tlp,
        named_agencies: vec![],
        created_at: now,
        evidence: vec![],
        incident_count: 0,
        incident_digest: incident_digest(std::iter::empty()).to_vec(),
        limits_reached: vec![],
        refused_count: 0,
    }
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).map_or_else(
        || format!("{ms} ms"),
        |t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    )
}

#[cfg(test)]
mod tests {
    use ewn_model::{PostStatus, samples};

    use super::*;

    const T0: i64 = 1_790_000_000_000;
    const S: i64 = 1000;

    fn settings() -> SourceSettings {
        SourceSettings {
            silent_after_secs: 60,
            backlog_after_secs: 120,
            max_posts: 3,
            ..SourceSettings::default()
        }
    }

    fn tracker() -> SourceTracker {
        SourceTracker::new(settings(), &["kz".into(), "kg".into()], T0)
    }

    fn tick(t: &mut SourceTracker, now: i64) -> Vec<Alert> {
        let mut out = Vec::new();
        t.tick(now, &mut out);
        out
    }

    fn heartbeat(state: &str, posts: &[(&str, Option<i64>, Option<i64>)]) -> Heartbeat {
        Heartbeat {
            state: state.into(),
            posts: posts
                .iter()
                .map(|(id, contact, oldest)| PostStatus {
                    post_id: (*id).into(),
                    spool_depth: 4,
                    spool_bytes: 400,
                    oldest_unsent_age_ms: *oldest,
                    last_contact_age_ms: *contact,
                })
                .collect(),
            ..samples::heartbeat()
        }
    }

    fn brief(alerts: &[Alert]) -> Vec<(String, MsgType, String)> {
        alerts
            .iter()
            .map(|a| (a.rule.clone(), a.msg_type, a.key.clone()))
            .collect()
    }

    #[test]
    fn a_state_never_heard_from_is_silent_after_the_configured_time_from_start() {
        let mut t = tracker();
        assert!(tick(&mut t, T0 + 59 * S).is_empty());
        t.heartbeat(&heartbeat("KG", &[]), T0 + 30 * S, T0 + 30 * S);
        let out = tick(&mut t, T0 + 60 * S);
        assert_eq!(
            brief(&out),
            [(SOURCE_SILENT.into(), MsgType::Alert, "state:KZ".into())]
        );
        let a = &out[0];
        assert_eq!(a.window_start, T0);
        assert_eq!(a.window_end, T0 + 60 * S);
        assert_eq!(a.alert_id, alert_id(SOURCE_SILENT, "state:KZ", T0));
        assert_eq!(a.states, ["KZ"]);
        assert_eq!(a.score, 0);
        assert!(
            a.reasons[0]
                .detail
                .contains("since this processor started at")
        );
        assert_eq!(a.level, Level::Medium);
        assert_eq!(a.tlp, Tlp::Green);
        // Raised once, not on every tick.
        assert!(tick(&mut t, T0 + 61 * S).is_empty());
        // KG was heard at +30 s: silent at +90 s, naming when it was last heard.
        let out = tick(&mut t, T0 + 90 * S);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].key, "state:KG");
        assert_eq!(out[0].window_start, T0 + 30 * S);
        assert!(
            out[0].reasons[0]
                .detail
                .contains("since 2026-09-21T14:13:50.000Z"),
            "{}",
            out[0].reasons[0].detail
        );
    }

    #[test]
    fn silence_is_cancelled_when_the_source_is_heard_again() {
        let mut t = tracker();
        t.heartbeat(&heartbeat("KZ", &[("P1", Some(0), None)]), T0, T0);
        let out = tick(&mut t, T0 + 60 * S);
        assert_eq!(
            brief(&out),
            [
                (SOURCE_SILENT.into(), MsgType::Alert, "state:KG".into()),
                (SOURCE_SILENT.into(), MsgType::Alert, "state:KZ".into()),
                (SOURCE_SILENT.into(), MsgType::Alert, "post:KZ:P1".into()),
            ]
        );
        let post_alert = out[2].alert_id.clone();
        // A heartbeat that lists P1 as just heard from: the state and the post are back.
        t.heartbeat(
            &heartbeat("KZ", &[("P1", Some(2 * S), None)]),
            T0 + 70 * S,
            T0 + 70 * S,
        );
        let out = tick(&mut t, T0 + 71 * S);
        assert_eq!(
            brief(&out),
            [
                (SOURCE_SILENT.into(), MsgType::Cancel, "state:KZ".into()),
                (SOURCE_SILENT.into(), MsgType::Cancel, "post:KZ:P1".into()),
            ]
        );
        assert_eq!(out[1].references, std::slice::from_ref(&post_alert));
        assert_eq!(
            out[1].alert_id,
            digest_id(&[post_alert.as_bytes(), b"cancel"])
        );
        assert_eq!(out[1].window_end, T0 + 68 * S, "heard at contact time");
        // Silent again later: a new episode, with a new id starting at the last contact.
        // (the state was heard at +70 s by the heartbeat itself: not silent yet)
        let out = tick(&mut t, T0 + 128 * S);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].key, "post:KZ:P1");
        assert_eq!(out[0].window_start, T0 + 68 * S);
        assert_ne!(out[0].alert_id, post_alert);
    }

    #[test]
    fn a_stale_contact_does_not_end_silence_and_is_not_later_than_now() {
        let mut t = tracker();
        t.heartbeat(&heartbeat("KZ", &[("P1", Some(0), None)]), T0, T0);
        assert_eq!(tick(&mut t, T0 + 60 * S).len(), 3);
        // The gateway is up, but last heard from P1 65 s ago: P1 stays silent.
        t.heartbeat(
            &heartbeat("KZ", &[("P1", Some(65 * S), None), ("P2", None, None)]),
            T0 + 70 * S,
            T0 + 70 * S,
        );
        let out = tick(&mut t, T0 + 70 * S);
        // P2 is listed but never heard: silent from the processor start, like a state.
        assert_eq!(
            brief(&out),
            [
                (SOURCE_SILENT.into(), MsgType::Cancel, "state:KZ".into()),
                (SOURCE_SILENT.into(), MsgType::Alert, "post:KZ:P2".into())
            ]
        );
        assert_eq!(out[1].window_start, T0);
        let seen: Vec<_> = t.seen().filter(|s| s.post == Some("P2")).collect();
        assert_eq!(seen[0].last_seen_or_start, T0);
        // A signing time ahead of this clock counts as now.
        t.report("KG", None, T0 + 500 * S, T0 + 80 * S);
        let kg = t.seen().find(|s| s.state == "KG").unwrap();
        assert_eq!(kg.last_seen_or_start, T0 + 80 * S);
    }

    #[test]
    fn backlog_over_the_threshold_raises_and_clears() {
        let mut t = tracker();
        let at = T0 + 10 * S;
        t.heartbeat(&heartbeat("KZ", &[("P1", Some(0), Some(120 * S))]), at, at);
        assert!(
            tick(&mut t, at).is_empty(),
            "at the threshold is not over it"
        );
        let at = T0 + 20 * S;
        t.heartbeat(
            &heartbeat("KZ", &[("P1", Some(0), Some(130 * S + 1))]),
            at,
            at,
        );
        let out = tick(&mut t, at);
        assert_eq!(
            brief(&out),
            [(SOURCE_BACKLOG.into(), MsgType::Alert, "post:KZ:P1".into())]
        );
        assert_eq!(out[0].window_start, at - 130 * S - 1 + 120 * S);
        assert!(
            out[0].reasons[0].detail.contains("130 s old"),
            "{}",
            out[0].reasons[0].detail
        );
        assert!(out[0].reasons[0].detail.contains("4 waiting"));
        let id = out[0].alert_id.clone();
        // Still over: no new alert. An older heartbeat re-read does not clear it.
        let at = T0 + 30 * S;
        t.heartbeat(&heartbeat("KZ", &[("P1", Some(0), Some(140 * S))]), at, at);
        assert!(tick(&mut t, at).is_empty());
        t.heartbeat(&heartbeat("KZ", &[("P1", Some(0), None)]), T0, at);
        assert!(tick(&mut t, at).is_empty());
        // Drained.
        let at = T0 + 40 * S;
        t.heartbeat(&heartbeat("KZ", &[("P1", Some(0), None)]), at, at);
        let out = tick(&mut t, at);
        assert_eq!(
            brief(&out),
            [(SOURCE_BACKLOG.into(), MsgType::Cancel, "post:KZ:P1".into())]
        );
        assert_eq!(out[0].references, [id]);
    }

    #[test]
    fn posts_are_bounded_and_only_configured_states_are_tracked() {
        let mut t = tracker();
        // Reports alone track no post (no gateway promised it calls in).
        t.report("KZ", Some("P9"), T0, T0);
        assert_eq!(t.post_count(), 0);
        let five: Vec<(&str, Option<i64>, Option<i64>)> = ["P1", "P2", "P3", "P4", "P5"]
            .into_iter()
            .map(|p| (p, Some(0), None))
            .collect();
        t.heartbeat(&heartbeat("KZ", &five), T0, T0);
        t.heartbeat(&heartbeat("TJ", &[("T1", Some(0), None)]), T0, T0);
        assert_eq!(t.post_count(), 3);
        assert_eq!(t.take_untracked(), 2);
        assert_eq!(t.take_untracked(), 0);
        // Tracked posts keep being tracked at the bound.
        t.report("KZ", Some("P1"), T0 + 50 * S, T0 + 50 * S);
        let p1 = t.seen().find(|s| s.post == Some("P1")).unwrap();
        assert_eq!(p1.last_seen_or_start, T0 + 50 * S);
        assert!(!t.seen().any(|s| s.state == "TJ"));
        let keys: Vec<String> = tick(&mut t, T0 + 60 * S)
            .into_iter()
            .map(|a| a.key)
            .collect();
        assert_eq!(
            keys,
            ["state:KG", "post:KZ:P2", "post:KZ:P3"],
            "KZ and P1 were heard at +50 s"
        );
    }

    #[test]
    fn settings_are_checked() {
        assert!(SourceSettings::default().problems().is_empty());
        let bad = SourceSettings {
            silent_after_secs: 0,
            max_posts: 0,
            check_interval_ms: 0,
            ..SourceSettings::default()
        };
        assert_eq!(bad.problems().len(), 3);
    }
}
