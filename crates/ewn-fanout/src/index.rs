//! The alert index: what the fan-out knows of every episode (an ALERT and the UPDATEs and
//! CANCEL that refer to it), rebuilt at start from `<prefix>alerts` and kept up to date by
//! every instance, so the decisions that depend on an episode do not depend on which
//! instance, or which buffer, happens to hold its messages.
//!
//! It answers three questions:
//! - **How sensitive is this message?** An UPDATE or a CANCEL is as sensitive as the
//!   episode it belongs to. A message is decided on the union of the markings of its
//!   episode's messages up to and including it, in partition order (the highest TLP and
//!   level, every named agency, category, state and area). So a CANCEL goes only to
//!   those entitled to the alert it withdraws, and a later UPDATE that names another
//!   agency or raises the TLP does not open the earlier messages, whose content is what
//!   it is, to anyone new (what it adds applies from that UPDATE on). Feeding the same
//!   message twice (from the group consumer and from the mirror reader) is harmless.
//! - **Who may end the episode?** Acknowledging ends the whole episode's escalation, so
//!   it takes clearance for the whole episode as known: the union over all its messages
//!   ([`AlertIndex::episode_of`]).
//! - **Which episode does an acknowledgement end?** Any message id of an episode names
//!   the episode.
//! - **Is its escalation over?** Once acknowledged or cancelled.
//!
//! Bounded by `fanout.index.max_messages`: past it the oldest episodes are forgotten
//! whole (counted). A follow-up whose episode is not (or no longer) known is decided on
//! its own marking and counted as an orphan; an acknowledgement of a forgotten alert
//! answers 404. Size the bound to hold the longest correlation window at the expected
//! alert rate (README, "The fan-out").

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, RwLock};

use ewn_model::{Alert, Category, Level, MsgType, Tlp};

/// The union of an episode's markings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Marking {
    pub tlp: Tlp,
    pub level: Level,
    pub named_agencies: BTreeSet<String>,
    pub categories: BTreeSet<Category>,
    pub states: BTreeSet<String>,
    pub areas: BTreeSet<String>,
}

impl Marking {
    pub fn of(alert: &Alert) -> Marking {
        Marking {
            tlp: alert.tlp,
            level: alert.level,
            named_agencies: alert.named_agencies.iter().cloned().collect(),
            categories: alert.categories.iter().copied().collect(),
            states: alert.states.iter().cloned().collect(),
            areas: alert.areas.iter().cloned().collect(),
        }
    }

    pub fn absorb(&mut self, other: &Marking) {
        self.tlp = self.tlp.max(other.tlp);
        self.level = self.level.max(other.level);
        self.named_agencies
            .extend(other.named_agencies.iter().cloned());
        self.categories.extend(other.categories.iter().copied());
        self.states.extend(other.states.iter().cloned());
        self.areas.extend(other.areas.iter().cloned());
    }

    /// `alert` carrying this marking: what policy decides on and what a cleared recipient
    /// receives.
    pub fn apply(&self, alert: &Alert) -> Alert {
        let mut a = alert.clone();
        self.apply_in_place(&mut a);
        a
    }

    fn apply_in_place(&self, a: &mut Alert) {
        a.tlp = self.tlp;
        a.level = self.level;
        a.named_agencies = self.named_agencies.iter().cloned().collect();
        a.categories = self.categories.iter().copied().collect();
        a.states = self.states.iter().cloned().collect();
        a.areas = self.areas.iter().cloned().collect();
    }
}

/// The episode a message belongs to: an ALERT is its own; an UPDATE or CANCEL names it
/// first in `references`.
pub fn episode_id(alert: &Alert) -> &str {
    match alert.msg_type {
        MsgType::Alert => &alert.alert_id,
        MsgType::Update | MsgType::Cancel => alert
            .references
            .first()
            .map_or(alert.alert_id.as_str(), String::as_str),
    }
}

struct Episode {
    /// The union over every message known so far.
    marking: Marking,
    /// The union up to the last message (shared with it while nothing changes).
    last: Arc<Marking>,
    /// When the episode's ALERT was created (that of its first known message until the
    /// ALERT is seen).
    created_at: i64,
    rule: String,
    messages: Vec<Arc<str>>,
    cancelled: bool,
    acked_at: Option<i64>,
    /// Its ALERT was seen (an orphan follow-up started it otherwise).
    has_alert: bool,
    /// The incidents its messages carry evidence of (the alerts' bounded samples), at most
    /// `fanout.index.max_episode_incidents`: what a desk may request the details of.
    incidents: std::collections::BTreeMap<String, EpisodeIncident>,
}

/// Most incidents an episode remembers for case requests, by default
/// (`fanout.index.max_episode_incidents`). An alert's evidence is a bounded sample, so an
/// episode reaches it only through many UPDATEs; past it the first incidents are kept, the
/// later ones counted (`ewn_fanout_index_episode_incidents_over_bound_total`) and a request
/// for one refused (403 naming `incident_id`).
pub const MAX_EPISODE_INCIDENTS: usize = 1024;

/// An incident of an episode, as its evidence names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EpisodeIncident {
    /// The incidents topic it was read from (`<prefix>incidents.<cc>`).
    pub topic: String,
    pub payload_sha256: [u8; 32],
}

/// `alert` carrying `prefix` (its episode's union up to it).
fn prefix_of(alert: &Alert, prefix: &Marking) -> Alert {
    let mut a = alert.clone();
    prefix.apply_in_place(&mut a);
    a
}

/// An alert carrying nothing but its identity, to put a marking on.
fn bare(id: &str, rule: &str, created_at: i64) -> Alert {
    Alert {
        alert_id: id.to_string(),
        msg_type: MsgType::Alert,
        references: Vec::new(),
        rule: rule.to_string(),
        level: Level::Low,
        score: 0,
        reasons: Vec::new(),
        key: String::new(),
        window_start: 0,
        window_end: 0,
        incident_ids: Vec::new(),
        states: Vec::new(),
        categories: Vec::new(),
        areas: Vec::new(),
        points: Vec::new(),
        tlp: Tlp::Clear,
        named_agencies: Vec::new(),
        created_at,
        evidence: Vec::new(),
        incident_count: 0,
        incident_digest: Vec::new(),
        limits_reached: Vec::new(),
        refused_count: 0,
    }
}

/// What the index says of one message.
#[derive(Clone, Debug)]
pub struct Known {
    pub episode_id: Arc<str>,
    /// The message as policy sees it: carrying the episode's marking.
    pub view: Alert,
    /// Its episode's ALERT is not known here (forgotten, or beyond the rebuild).
    pub orphan: bool,
}

/// The state of one episode, for the API and escalation.
#[derive(Clone, Debug)]
pub struct EpisodeState {
    pub episode_id: Arc<str>,
    /// The episode's marking on a bare alert (no evidence): enough to decide who may see
    /// and acknowledge it.
    pub view: Alert,
    pub created_at: i64,
    pub cancelled: bool,
    pub acked_at: Option<i64>,
}

impl AlertIndex {
    /// The incident `incident_id` of the episode of `message_id`, if its evidence names it.
    pub fn incident_of(&self, message_id: &str, incident_id: &str) -> Option<EpisodeIncident> {
        let g = self.inner.read().unwrap_or_else(|p| p.into_inner());
        let (ep_id, _) = g.by_message.get(message_id)?;
        g.episodes.get(ep_id)?.incidents.get(incident_id).cloned()
    }
}

#[derive(Default)]
struct Inner {
    episodes: HashMap<Arc<str>, Episode>,
    /// Each message's episode and the union of its episode's markings up to it.
    by_message: HashMap<Arc<str>, (Arc<str>, Arc<Marking>)>,
    /// Episodes in the order they were first seen, for eviction.
    order: VecDeque<Arc<str>>,
    /// Acknowledgements read before the message they name (the acks topic and the
    /// alerts topic are read by different readers), bounded like the index.
    early_acks: HashMap<Arc<str>, i64>,
    early_order: VecDeque<Arc<str>>,
    evicted: u64,
    orphans: u64,
    /// Incidents not remembered: their episode held `max_episode_incidents` already.
    incidents_over_bound: u64,
}

/// Counts for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IndexStats {
    pub episodes: usize,
    pub messages: usize,
    pub evicted: u64,
    pub orphans: u64,
    pub incidents_over_bound: u64,
}

pub struct AlertIndex {
    inner: RwLock<Inner>,
    max_messages: usize,
    max_episode_incidents: usize,
}

impl AlertIndex {
    pub fn new(max_messages: usize) -> AlertIndex {
        AlertIndex {
            inner: RwLock::new(Inner::default()),
            max_messages: max_messages.max(1),
            max_episode_incidents: MAX_EPISODE_INCIDENTS,
        }
    }

    /// The same index remembering at most `max` incidents per episode for case requests.
    pub fn with_max_episode_incidents(mut self, max: usize) -> AlertIndex {
        self.max_episode_incidents = max.max(1);
        self
    }

    /// `fanout.index.max_episode_incidents`, as the gauge shows it.
    pub fn max_episode_incidents(&self) -> usize {
        self.max_episode_incidents
    }

    /// Records a message (idempotent) and returns it as policy sees it.
    pub fn observe(&self, alert: &Alert) -> Known {
        let mut g = self.inner.write().unwrap_or_else(|p| p.into_inner());
        let inner = &mut *g;
        let known = inner.by_message.get(alert.alert_id.as_str()).cloned();
        let fresh = known.is_none();
        let ep_id: Arc<str> = match &known {
            Some((e, _)) => e.clone(),
            None => Arc::from(episode_id(alert)),
        };
        let msg_id: Arc<str> = Arc::from(alert.alert_id.as_str());
        let marking = Marking::of(alert);
        let ep = inner.episodes.entry(ep_id.clone()).or_insert_with(|| {
            inner.order.push_back(ep_id.clone());
            Episode {
                marking: marking.clone(),
                last: Arc::new(marking.clone()),
                created_at: alert.created_at,
                rule: alert.rule.clone(),
                messages: Vec::new(),
                cancelled: false,
                acked_at: None,
                has_alert: false,
                incidents: std::collections::BTreeMap::new(),
            }
        });
        let mut over_bound = 0;
        for e in &alert.evidence {
            if ep.incidents.contains_key(&e.incident_id) {
                continue;
            }
            if ep.incidents.len() >= self.max_episode_incidents {
                over_bound += 1;
                continue;
            }
            ep.incidents.insert(
                e.incident_id.clone(),
                EpisodeIncident {
                    topic: e.topic.clone(),
                    payload_sha256: e.payload_sha256,
                },
            );
        }
        // A message read again (a replay, a rebuild) is not counted twice.
        if fresh {
            inner.incidents_over_bound += over_bound;
        }
        let prefix = match known {
            Some((_, prefix)) => prefix,
            None => {
                ep.marking.absorb(&marking);
                let mut upto = (*ep.last).clone();
                upto.absorb(&marking);
                if upto != *ep.last {
                    ep.last = Arc::new(upto);
                }
                ep.last.clone()
            }
        };
        if alert.msg_type == MsgType::Alert {
            ep.has_alert = true;
            ep.created_at = alert.created_at;
        }
        if alert.msg_type == MsgType::Cancel {
            ep.cancelled = true;
        }
        let orphan = !ep.has_alert;
        let view = prefix_of(alert, &prefix);
        if fresh {
            ep.messages.push(msg_id.clone());
            inner
                .by_message
                .insert(msg_id.clone(), (ep_id.clone(), prefix));
            if let Some(at) = inner.early_acks.remove(&msg_id) {
                let ep = inner.episodes.get_mut(&ep_id);
                if let Some(ep) = ep {
                    ep.acked_at = Some(ep.acked_at.map_or(at, |a| a.min(at)));
                }
            }
            if orphan {
                inner.orphans += 1;
            }
            self.evict(inner, &ep_id);
        }
        Known {
            episode_id: ep_id,
            view,
            orphan,
        }
    }

    /// Forgets the oldest episodes (never `keep`, the one just fed) beyond the bound.
    fn evict(&self, inner: &mut Inner, keep: &Arc<str>) {
        while inner.by_message.len() > self.max_messages {
            let Some(old) = inner.order.pop_front() else {
                return;
            };
            if &old == keep {
                inner.order.push_back(old);
                if inner.order.len() == 1 {
                    return;
                }
                continue;
            }
            if let Some(ep) = inner.episodes.remove(&old) {
                for m in ep.messages {
                    inner.by_message.remove(&m);
                }
                inner.evicted += 1;
            }
        }
    }

    /// `alert` as policy decides on it now (for a decision made again at each attempt):
    /// see the module doc; as it is when its episode is not known.
    pub fn view(&self, alert: &Alert) -> Alert {
        let g = self.inner.read().unwrap_or_else(|p| p.into_inner());
        match g
            .by_message
            .get(alert.alert_id.as_str())
            .and_then(|(e, prefix)| Some((g.episodes.get(e)?, prefix)))
        {
            Some((_, prefix)) => prefix_of(alert, prefix),
            None => alert.clone(),
        }
    }

    /// The episode a message id belongs to.
    pub fn episode_of(&self, message_id: &str) -> Option<EpisodeState> {
        let g = self.inner.read().unwrap_or_else(|p| p.into_inner());
        let (ep_id, ep) = g
            .by_message
            .get(message_id)
            .and_then(|(e, _)| Some((e.clone(), g.episodes.get(e)?)))?;
        let view = prefix_of(&bare(message_id, &ep.rule, ep.created_at), &ep.marking);
        Some(EpisodeState {
            episode_id: ep_id,
            view,
            created_at: ep.created_at,
            cancelled: ep.cancelled,
            acked_at: ep.acked_at,
        })
    }

    /// The ids of every message known of the episode `message_id` belongs to.
    pub fn episode_messages(&self, message_id: &str) -> Option<Vec<Arc<str>>> {
        let g = self.inner.read().unwrap_or_else(|p| p.into_inner());
        g.by_message
            .get(message_id)
            .and_then(|(e, _)| g.episodes.get(e))
            .map(|ep| ep.messages.clone())
    }

    /// Records an acknowledgement of `message_id` (of any message of its episode); the
    /// earliest time wins. One naming a message not seen yet waits for it (bounded).
    pub fn ack(&self, message_id: &str, at: i64) {
        let mut g = self.inner.write().unwrap_or_else(|p| p.into_inner());
        let inner = &mut *g;
        if let Some(ep) = inner
            .by_message
            .get(message_id)
            .and_then(|(e, _)| inner.episodes.get_mut(e))
        {
            ep.acked_at = Some(ep.acked_at.map_or(at, |a| a.min(at)));
            return;
        }
        let id: Arc<str> = Arc::from(message_id);
        if inner.early_acks.insert(id.clone(), at).is_none() {
            inner.early_order.push_back(id);
            while inner.early_order.len() > self.max_messages {
                if let Some(old) = inner.early_order.pop_front() {
                    inner.early_acks.remove(&old);
                }
            }
        }
    }

    /// When the episode of `message_id` was first acknowledged.
    pub fn acked_at(&self, message_id: &str) -> Option<i64> {
        let g = self.inner.read().unwrap_or_else(|p| p.into_inner());
        g.by_message
            .get(message_id)
            .and_then(|(e, _)| g.episodes.get(e))
            .and_then(|ep| ep.acked_at)
            .or_else(|| g.early_acks.get(message_id).copied())
    }

    /// Is the episode's escalation over (acknowledged, or cancelled)?
    pub fn settled(&self, episode_id: &str) -> bool {
        let g = self.inner.read().unwrap_or_else(|p| p.into_inner());
        g.episodes
            .get(episode_id)
            .is_some_and(|ep| ep.cancelled || ep.acked_at.is_some())
    }

    /// When an alert (any message id) was created, for CAP references.
    pub fn created_at(&self, message_id: &str) -> Option<i64> {
        self.episode_of(message_id).map(|e| e.created_at)
    }

    pub fn stats(&self) -> IndexStats {
        let g = self.inner.read().unwrap_or_else(|p| p.into_inner());
        IndexStats {
            episodes: g.episodes.len(),
            messages: g.by_message.len(),
            evicted: g.evicted,
            orphans: g.orphans,
            incidents_over_bound: g.incidents_over_bound,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ewn_model::samples;

    fn msg(id: &str, t: MsgType, refs: &[&str], tlp: Tlp, states: &[&str]) -> Alert {
        let mut a = samples::alert();
        a.alert_id = id.into();
        a.msg_type = t;
        a.references = refs.iter().map(|s| s.to_string()).collect();
        a.tlp = tlp;
        a.states = states.iter().map(|s| s.to_string()).collect();
        a.named_agencies.clear();
        a
    }

    #[test]
    fn a_cancel_carries_the_union_of_its_episode() {
        let idx = AlertIndex::new(100);
        idx.observe(&msg("a", MsgType::Alert, &[], Tlp::Amber, &["KZ"]));
        idx.observe(&msg("u", MsgType::Update, &["a"], Tlp::Green, &["KG"]));
        // The processor builds a CANCEL with no members: no states, CLEAR.
        let k = idx.observe(&msg("c", MsgType::Cancel, &["a"], Tlp::Clear, &[]));
        assert_eq!(&*k.episode_id, "a");
        assert!(!k.orphan);
        assert_eq!(k.view.tlp, Tlp::Amber);
        assert_eq!(k.view.states, ["KG", "KZ"]);
        assert!(idx.settled("a"));
    }

    #[test]
    fn a_message_carries_its_prefix_under_the_episodes_highest_tlp() {
        let idx = AlertIndex::new(100);
        let mut a = msg("a", MsgType::Alert, &[], Tlp::AmberStrict, &["KZ"]);
        a.named_agencies = vec!["KZ-KNB".into()];
        let mut u = msg("u", MsgType::Update, &["a"], Tlp::Red, &["TJ"]);
        u.named_agencies = vec!["TJ-GKNB".into()];
        let c = msg("c", MsgType::Cancel, &["a"], Tlp::Clear, &[]);
        for x in [&a, &u, &c] {
            idx.observe(x);
        }
        // Repeats change nothing.
        for x in [&c, &a, &u] {
            idx.observe(x);
        }
        assert_eq!(idx.stats().messages, 3);
        // The ALERT, decided again later: only its own marking.
        let va = idx.view(&a);
        assert_eq!(va.tlp, Tlp::AmberStrict);
        assert_eq!(va.named_agencies, ["KZ-KNB"]);
        assert_eq!(va.states, ["KZ"]);
        // The CANCEL: everything up to it.
        let vc = idx.view(&c);
        assert_eq!(vc.tlp, Tlp::Red);
        assert_eq!(vc.named_agencies, ["KZ-KNB", "TJ-GKNB"]);
        assert_eq!(vc.states, ["KZ", "TJ"]);
        // Ending the episode takes clearance for all of it.
        let ep = idx.episode_of("a").unwrap().view;
        assert_eq!(ep.tlp, Tlp::Red);
        assert_eq!(ep.named_agencies, ["KZ-KNB", "TJ-GKNB"]);
    }

    #[test]
    fn acknowledging_any_message_acknowledges_the_episode() {
        let idx = AlertIndex::new(100);
        idx.observe(&msg("a", MsgType::Alert, &[], Tlp::Amber, &[]));
        idx.observe(&msg("u", MsgType::Update, &["a"], Tlp::Amber, &[]));
        assert!(!idx.settled("a"));
        idx.ack("u", 5);
        assert!(idx.settled("a"));
        assert_eq!(idx.acked_at("a"), Some(5));
        // An acknowledgement read before its message waits for it.
        idx.ack("b", 7);
        assert_eq!(idx.acked_at("b"), Some(7));
        idx.observe(&msg("b", MsgType::Alert, &[], Tlp::Amber, &[]));
        assert!(idx.settled("b"));
    }

    #[test]
    fn the_oldest_episodes_go_first_and_whole() {
        let idx = AlertIndex::new(4);
        idx.observe(&msg("a", MsgType::Alert, &[], Tlp::Amber, &[]));
        idx.observe(&msg("a1", MsgType::Update, &["a"], Tlp::Amber, &[]));
        idx.observe(&msg("b", MsgType::Alert, &[], Tlp::Amber, &[]));
        idx.observe(&msg("c", MsgType::Alert, &[], Tlp::Amber, &[]));
        idx.observe(&msg("d", MsgType::Alert, &[], Tlp::Amber, &[]));
        let s = idx.stats();
        assert_eq!((s.messages, s.evicted), (3, 1));
        assert!(idx.episode_of("a1").is_none() && idx.episode_of("b").is_some());
        // A follow-up of a forgotten episode is an orphan, decided on its own marking.
        let k = idx.observe(&msg("a2", MsgType::Cancel, &["a"], Tlp::Green, &[]));
        assert!(k.orphan && k.view.tlp == Tlp::Green);
        assert_eq!(idx.stats().orphans, 1);
    }

    /// At `max_episode_incidents` an episode keeps the incidents it holds, counts the others
    /// once (not again when a message is read again), and does not name them to a request.
    #[test]
    fn an_episode_remembers_at_most_its_bound_of_incidents_and_counts_the_rest() {
        use ewn_model::Evidence;
        let idx = AlertIndex::new(100).with_max_episode_incidents(3);
        assert_eq!(idx.max_episode_incidents(), 3);
        let mut a = ewn_model::samples::alert();
        a.msg_type = MsgType::Alert;
        a.references = Vec::new();
        let template = a.evidence[0].clone();
        a.evidence = (0..5)
            .map(|i| Evidence {
                incident_id: format!("inc-{i}"),
                ..template.clone()
            })
            .collect();
        idx.observe(&a);
        let held = |id: &str| idx.incident_of(&a.alert_id, id).is_some();
        assert!(held("inc-0") && held("inc-1") && held("inc-2"));
        assert!(!held("inc-3") && !held("inc-4"));
        assert_eq!(idx.stats().incidents_over_bound, 2);
        idx.observe(&a);
        assert_eq!(idx.stats().incidents_over_bound, 2, "a message read again");
        // An UPDATE naming one held incident and a new one: only the new one is counted.
        let mut u = a.clone();
        u.alert_id = format!("{}-u1", a.alert_id);
        u.msg_type = MsgType::Update;
        u.references = vec![a.alert_id.clone()];
        u.evidence = vec![
            a.evidence[0].clone(),
            Evidence {
                incident_id: "inc-9".into(),
                ..template
            },
        ];
        idx.observe(&u);
        assert_eq!(idx.stats().incidents_over_bound, 3);
        assert!(idx.incident_of(&u.alert_id, "inc-0").is_some());
        assert!(idx.incident_of(&u.alert_id, "inc-9").is_none());
    }
}
