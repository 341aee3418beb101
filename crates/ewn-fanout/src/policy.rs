//! Who may receive what: subscription filters and clearance, decided at push time for
//! every channel (webhook, stream, console) by the same function.
//!
//! Clearance (TLP 2.0): an alert goes in full only to a subscriber cleared for its TLP,
//! and an `AMBER_STRICT` or `RED` alert only to the agencies it names, whatever their
//! clearance. A subscriber that asked for it gets a redacted form of what it may not see
//! in full; everyone else gets nothing (counted as withheld).

use ewn_model::{Alert, Level, ScoreReason, Subscription, Tlp};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::keys::{FanoutKey, Purpose};

/// The identifiers a redacted recipient gets in place of alert ids: a keyed hash of the
/// subscription and the alert id. Stable for one subscription (an UPDATE or CANCEL can be
/// matched to the alert it follows) and unlinkable across subscriptions; without the
/// fan-out key nobody can test a guessed rule, key and window against it, which the
/// alert id (a plain hash of them) would allow.
pub struct RedactedIds {
    key: Zeroizing<[u8; 32]>,
}

impl RedactedIds {
    pub fn new(key: &FanoutKey) -> RedactedIds {
        RedactedIds {
            key: key.subkey(Purpose::RedactedIds),
        }
    }

    pub fn id(&self, subscription_id: &str, alert_id: &str) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&*self.key)
            .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
        mac.update(subscription_id.as_bytes());
        mac.update(b"\0");
        mac.update(alert_id.as_bytes());
        format!("r_{}", hex::encode(&mac.finalize().into_bytes()[..16]))
    }
}

/// The form a recipient gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Form {
    Full,
    Redacted,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Deliver(Form),
    /// Matches the filters but is above the clearance, with no redacted form asked for.
    Withheld,
    /// Outside the subscription's filters, or the subscription is disabled.
    NotSubscribed,
}

/// Do the subscription's filters select the alert? (Empty filter lists select all.)
pub fn selects(sub: &Subscription, alert: &Alert) -> bool {
    alert.level >= sub.min_level
        && (sub.categories.is_empty()
            || alert.categories.iter().any(|c| sub.categories.contains(c)))
        && (sub.states.is_empty() || alert.states.iter().any(|s| sub.states.contains(s)))
        && (sub.areas.is_empty() || alert.areas.iter().any(|a| sub.areas.contains(a)))
        && (sub.rules.is_empty() || sub.rules.contains(&alert.rule))
}

/// May the subscriber see the alert in full?
pub fn cleared(sub: &Subscription, alert: &Alert) -> bool {
    alert.tlp <= sub.clearance
        && (alert.tlp < Tlp::AmberStrict || alert.named_agencies.contains(&sub.agency))
}

pub fn decide(sub: &Subscription, alert: &Alert) -> Decision {
    if selects(sub, alert) {
        decide_named(sub, alert)
    } else {
        Decision::NotSubscribed
    }
}

/// For a recipient named by an escalation step: its filters do not apply (it was named
/// for this), its clearance does.
pub fn decide_named(sub: &Subscription, alert: &Alert) -> Decision {
    if sub.disabled_at.is_some() {
        Decision::NotSubscribed
    } else if cleared(sub, alert) {
        Decision::Deliver(Form::Full)
    } else if sub.redacted_above_clearance {
        Decision::Deliver(Form::Redacted)
    } else {
        Decision::Withheld
    }
}

/// The marking of a redacted form: the subscriber's clearance, but never a mark that is
/// reserved to named recipients.
pub fn redacted_tlp(sub: &Subscription) -> Tlp {
    sub.clearance.min(Tlp::Amber)
}

/// The redacted form: that a warning exists, its rule, level, score, categories and time
/// window, and nothing that identifies a subject, a place, a report or a reporting state.
/// Its ids (`alert_id`, `references`) are the recipient's own (`ids`), never alert ids.
pub fn redact(alert: &Alert, tlp: Tlp, ids: impl Fn(&str) -> String) -> Alert {
    Alert {
        alert_id: ids(&alert.alert_id),
        msg_type: alert.msg_type,
        references: alert.references.iter().map(|r| ids(r)).collect(),
        rule: alert.rule.clone(),
        level: alert.level,
        score: alert.score,
        // One reason carrying the whole score keeps "reasons add up to the score" true.
        reasons: vec![ScoreReason {
            factor: "redacted".into(),
            contribution: alert.score,
            detail: "details withheld above your clearance; ask the regional coordination centre"
                .into(),
        }],
        key: String::new(),
        window_start: alert.window_start,
        window_end: alert.window_end,
        incident_ids: Vec::new(),
        states: Vec::new(),
        categories: alert.categories.clone(),
        areas: Vec::new(),
        points: Vec::new(),
        tlp,
        named_agencies: Vec::new(),
        created_at: alert.created_at,
        evidence: Vec::new(),
        // The digest commits to the incident ids: linkable, so withheld with them.
        incident_count: 0,
        incident_digest: Vec::new(),
        limits_reached: Vec::new(),
        refused_count: 0,
    }
}

/// What a recipient gets under `form`, marked as it may see it. `alert` is the message
/// as policy decided on it (carrying its episode's marking).
pub fn shape(sub: &Subscription, alert: &Alert, form: Form, ids: &RedactedIds) -> (Alert, bool) {
    match form {
        Form::Full => (alert.clone(), false),
        Form::Redacted => (
            redact(alert, redacted_tlp(sub), |id| ids.id(&sub.id, id)),
            true,
        ),
    }
}

/// May `sub` acknowledge an alert? Only a recipient of it in full: selected by its
/// filters (or named by an escalation step that reached it, `escalated_to`) and cleared
/// for it. A redacted, withheld or unselected desk must not end another's escalation.
pub fn may_acknowledge(sub: &Subscription, view: &Alert, escalated_to: bool) -> bool {
    let d = if escalated_to {
        decide_named(sub, view)
    } else {
        decide(sub, view)
    };
    d == Decision::Deliver(Form::Full)
}

/// Escalation applies to alerts at or above `min_level`.
pub fn escalates(alert: &Alert, min_level: Level) -> bool {
    alert.level >= min_level && alert.msg_type != ewn_model::MsgType::Cancel
}

#[cfg(test)]
mod tests {
    use super::*;
    use ewn_model::samples;

    #[test]
    fn strict_marks_go_only_to_named_agencies() {
        let mut sub = samples::subscription();
        sub.clearance = Tlp::Red;
        sub.categories.clear();
        sub.states.clear();
        let mut alert = samples::alert();
        alert.level = Level::Critical;
        alert.tlp = Tlp::Red;
        alert.named_agencies = vec!["KZ-KNB".into()];
        sub.redacted_above_clearance = false;
        assert_eq!(decide(&sub, &alert), Decision::Withheld);
        alert.named_agencies.push(sub.agency.clone());
        assert_eq!(decide(&sub, &alert), Decision::Deliver(Form::Full));
    }

    use proptest::prelude::*;

    const TLPS: [Tlp; 5] = [
        Tlp::Clear,
        Tlp::Green,
        Tlp::Amber,
        Tlp::AmberStrict,
        Tlp::Red,
    ];
    const LEVELS: [Level; 4] = [Level::Low, Level::Medium, Level::High, Level::Critical];
    const CATS: [ewn_model::Category; 3] = [
        ewn_model::Category::WatchlistHit,
        ewn_model::Category::FtfReturnee,
        ewn_model::Category::Other,
    ];
    const NAMES: [&str; 3] = ["A", "B", "C"];

    fn pick<T: Clone>(all: &[T], mask: u8) -> Vec<T> {
        all.iter()
            .enumerate()
            .filter(|(i, _)| mask & (1 << i) != 0)
            .map(|(_, x)| x.clone())
            .collect()
    }

    /// DESIGN.md's rule, spelled out by position in the TLP and level scales rather than
    /// through the enums' ordering.
    fn oracle(s: &Subscription, a: &Alert) -> Option<bool> {
        let pos = |t: Tlp| TLPS.iter().position(|x| *x == t).unwrap_or(9);
        let lpos = |l: Level| LEVELS.iter().position(|x| *x == l).unwrap_or(9);
        let meets = |f: &[String], v: &[String]| f.is_empty() || f.iter().any(|x| v.contains(x));
        let selected = lpos(a.level) >= lpos(s.min_level)
            && (s.categories.is_empty() || s.categories.iter().any(|c| a.categories.contains(c)))
            && meets(&s.states, &a.states)
            && meets(&s.areas, &a.areas)
            && (s.rules.is_empty() || s.rules.contains(&a.rule));
        if !selected || s.disabled_at.is_some() {
            return None;
        }
        let named_only = pos(a.tlp) >= 3;
        if pos(a.tlp) <= pos(s.clearance) && (!named_only || a.named_agencies.contains(&s.agency)) {
            Some(false)
        } else if s.redacted_above_clearance {
            Some(true)
        } else {
            None
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]
        #[test]
        fn decisions_follow_the_clearance_rule_and_the_filters(
            clearance in 0..5usize, min_level in 0..4usize, sub_masks in any::<[u8; 5]>(),
            agency in 0..3usize, redacted in any::<bool>(), disabled in any::<bool>(),
            tlp in 0..5usize, level in 0..4usize, alert_masks in any::<[u8; 5]>(),
        ) {
            let mut s = samples::subscription();
            s.agency = NAMES[agency].into();
            s.clearance = TLPS[clearance];
            s.min_level = LEVELS[min_level];
            s.categories = pick(&CATS, sub_masks[0]);
            s.states = pick(&NAMES.map(String::from), sub_masks[1]);
            s.areas = pick(&NAMES.map(String::from), sub_masks[2]);
            s.rules = pick(&NAMES.map(String::from), sub_masks[3] & 1);
            s.redacted_above_clearance = redacted;
            s.disabled_at = disabled.then_some(1);
            let mut a = samples::alert();
            a.tlp = TLPS[tlp];
            a.level = LEVELS[level];
            a.categories = pick(&CATS, alert_masks[0]);
            a.states = pick(&NAMES.map(String::from), alert_masks[1]);
            a.areas = pick(&NAMES.map(String::from), alert_masks[2]);
            a.rule = NAMES[(alert_masks[3] % 3) as usize].into();
            a.named_agencies = pick(&NAMES.map(String::from), alert_masks[4]);
            let got = match decide(&s, &a) {
                Decision::Deliver(Form::Full) => Some(false),
                Decision::Deliver(Form::Redacted) => Some(true),
                Decision::Withheld | Decision::NotSubscribed => None,
            };
            prop_assert_eq!(got, oracle(&s, &a));
            if let Decision::Deliver(form) = decide(&s, &a) {
                let ids = RedactedIds::new(&FanoutKey::from_bytes([3; 32]));
                let (shaped, _) = shape(&s, &a, form, &ids);
                // What is handed over is never marked above the recipient's clearance.
                prop_assert!(shaped.tlp <= s.clearance);
            }
        }
    }

    #[test]
    fn the_redacted_form_keeps_no_identifying_field() {
        let alert = samples::alert();
        let ids = RedactedIds::new(&FanoutKey::from_bytes([3; 32]));
        let r = redact(&alert, Tlp::Green, |id| ids.id("s", id));
        assert_ne!(r.alert_id, alert.alert_id);
        assert_eq!(r.alert_id, ids.id("s", &alert.alert_id));
        assert_ne!(r.alert_id, ids.id("t", &alert.alert_id));
        assert!(r.references.iter().all(|x| x.starts_with("r_")));
        assert!(r.key.is_empty() && r.incident_ids.is_empty() && r.evidence.is_empty());
        assert!(r.states.is_empty() && r.areas.is_empty() && r.points.is_empty());
        // The digest commits to the incident ids: a holder of candidate ids could test them.
        assert!(!alert.incident_digest.is_empty());
        assert!(r.incident_digest.is_empty() && r.incident_count == 0);
        assert!(r.limits_reached.is_empty() && r.refused_count == 0);
        assert_eq!(
            r.reasons.iter().map(|x| x.contribution).sum::<i32>(),
            r.score
        );
        assert_eq!(r.tlp, Tlp::Green);
    }
}
