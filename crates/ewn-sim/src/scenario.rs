//! Planted scenarios: short sequences of reports, each crafted to trigger exactly one rule
//! of the default set (`ewn_processor::rules::default_rules`), so a demo or a test knows
//! which alerts to expect.
//!
//! | scenario | rule | what is planted |
//! |---|---|---|
//! | `border_hop` | `cross_border_movement` | a person leaves KZ at Zhibek Zholy and enters UZ at Gisht Kuprik two seconds later (both reports within 2 minutes of event time); KZ writes the name in Russian Cyrillic (`Хабибуллаев Зафар`), UZ in Uzbek Latin, given name first (`Zafar Xabibullayev`): the two blind alike |
//! | `district_burst` | `area_burst` | five MEDIUM-or-higher reports from KG patrols in Batken (KG-B) within 2 minutes |
//! | `watchlist_entry` | `watchlist_hit` | a person on a sanctions list enters UZ at Dustlik; their document number is typed with Cyrillic look-alikes (`СІМ...`), which blind as the Latin |
//! | `vanished_exit` | `exit_without_entry` | a person leaves TJ at Karamyk and is never seen entering anywhere; the exit lies 24 h 10 min in the past, so the 24 h absence window has already elapsed |
//! | `returnee_entry` | `ftf_returnee` | a returning foreign fighter enters KZ at Temirbaba |
//!
//! Each scenario reports from its own region(s) and with its own subjects, which the
//! background never uses, so no scenario feeds another's rule and no background report joins a
//! scenario's alert (see [`crate::generator`] for the background's side of the bargain).
//!
//! Event times. The processor accepts an event only if it is at most
//! `process.allowed_lateness_secs` (300 s by default) behind the newest event of its
//! partition, so present-time scenario reports happened at most 2 minutes before they are
//! sent. The absence rule is decided once a partition's watermark (newest event time minus
//! the lateness) or, on an idle partition, the clock minus the lateness has passed the exit
//! plus 24 h; an exit sent "now" would wait a day. So `vanished_exit` is placed 24 h, plus
//! the 300 s lateness, plus a 300 s margin in the past (well within the 7-day
//! `trust.max_age_secs`) and sent first, in a prelude, before any present-time report: it
//! is then not late on its partition, and the first present-time event there (or the idle
//! clock) decides it within seconds. This needs a processor that is already consuming and
//! has seen no present-time event on that partition: start the processor first, on a
//! fresh network (topic prefix).

use std::fmt;

use ewn_model::{Category, Direction, Level, SourceReliability, SubjectKind, Tlp};

use crate::error::{Error, Result};
use crate::generator::{RawSubject, Spec};
use crate::network::{Place, side_by_id};

/// The border-hop traveller as Kazakhstan's Russian-language documents write him, and as
/// Uzbekistan's Latin ones do (given name first): blinding v2 makes them one ref.
pub const HOP_NAME_KZ: &str = "Хабибуллаев Зафар";
pub const HOP_NAME_UZ: &str = "Zafar Xabibullayev";

/// A document number as a clerk on a Cyrillic keyboard types it: every Latin letter that
/// has a Cyrillic look-alike replaced by it (`SIM` -> `СІМ`). Blinding folds them back.
fn cyrillic_lookalikes(id: &str) -> String {
    id.chars()
        .map(|c| match c {
            'A' => 'А',
            'B' => 'В',
            'C' => 'С',
            'E' => 'Е',
            'H' => 'Н',
            'I' => 'І',
            'K' => 'К',
            'M' => 'М',
            'O' => 'О',
            'P' => 'Р',
            'S' => 'Ѕ',
            'T' => 'Т',
            'X' => 'Х',
            _ => c,
        })
        .collect()
}

/// A planted scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scenario {
    BorderHop,
    DistrictBurst,
    WatchlistEntry,
    VanishedExit,
    ReturneeEntry,
}

impl Scenario {
    pub const ALL: [Scenario; 5] = [
        Scenario::BorderHop,
        Scenario::DistrictBurst,
        Scenario::WatchlistEntry,
        Scenario::VanishedExit,
        Scenario::ReturneeEntry,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::BorderHop => "border_hop",
            Scenario::DistrictBurst => "district_burst",
            Scenario::WatchlistEntry => "watchlist_entry",
            Scenario::VanishedExit => "vanished_exit",
            Scenario::ReturneeEntry => "returnee_entry",
        }
    }

    /// The default rule the scenario triggers (and the only one).
    pub fn rule(self) -> &'static str {
        match self {
            Scenario::BorderHop => "cross_border_movement",
            Scenario::DistrictBurst => "area_burst",
            Scenario::WatchlistEntry => "watchlist_hit",
            Scenario::VanishedExit => "exit_without_entry",
            Scenario::ReturneeEntry => "ftf_returnee",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Scenario::BorderHop => {
                "a person leaves KZ at Zhibek Zholy and enters UZ at Gisht Kuprik: reported by \
                 two states, in Cyrillic and in Latin"
            }
            Scenario::DistrictBurst => "five MEDIUM+ reports from Batken (KG-B) within minutes",
            Scenario::WatchlistEntry => "a sanctions-listed person enters UZ at Dustlik",
            Scenario::VanishedExit => {
                "a person left TJ at Karamyk 24 h ago and never entered anywhere"
            }
            Scenario::ReturneeEntry => "a returning foreign fighter enters KZ at Temirbaba",
        }
    }

    /// Parses `all`, `none`, or a comma-separated list of scenario names.
    pub fn parse_list(text: &str) -> Result<Vec<Scenario>> {
        match text.trim() {
            "all" => return Ok(Scenario::ALL.to_vec()),
            "none" | "" => return Ok(vec![]),
            _ => {}
        }
        let mut out = Vec::new();
        for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let s = Scenario::ALL
                .into_iter()
                .find(|s| s.name() == name)
                .ok_or_else(|| Error::UnknownScenario(name.to_string()))?;
            if !out.contains(&s) {
                out.push(s);
            }
        }
        out.sort();
        Ok(out)
    }

    /// The regions the scenario reports from: the background keeps its MEDIUM+ reports out
    /// of them.
    pub fn areas(self) -> &'static [&'static str] {
        match self {
            Scenario::BorderHop => &["KZ-YUZ", "UZ-TO"],
            Scenario::DistrictBurst => &["KG-B"],
            Scenario::WatchlistEntry => &["UZ-AN"],
            Scenario::VanishedExit => &["TJ-RA"],
            Scenario::ReturneeEntry => &["KZ-MAN"],
        }
    }

    /// How the alert of the scenario is keyed.
    pub(crate) fn key_kind(self) -> KeyKind {
        match self {
            Scenario::BorderHop | Scenario::VanishedExit => KeyKind::Subject,
            Scenario::DistrictBurst => KeyKind::Area,
            Scenario::WatchlistEntry | Scenario::ReturneeEntry => KeyKind::Incident,
        }
    }

    /// The scenario's reports. `subject` mints a fresh raw identifier of a kind.
    pub(crate) fn plan(self, subject: &mut impl FnMut(SubjectKind) -> String) -> Vec<Step> {
        let person = |subject: &mut dyn FnMut(SubjectKind) -> String, watchlist| RawSubject {
            kind: SubjectKind::Person,
            id: subject(SubjectKind::Person),
            watchlist,
        };
        let step = |at, ago_ms, spec| Step {
            scenario: self,
            at,
            ago_ms,
            spec,
        };
        match self {
            Scenario::BorderHop => {
                // One person, two states' spellings; the minted tail keeps them unique.
                let minted = subject(SubjectKind::Person);
                let tail = minted.strip_prefix("SIM PERSON ").unwrap_or(&minted);
                let written = |name: &str| RawSubject {
                    kind: SubjectKind::Person,
                    id: format!("{name} {tail}"),
                    watchlist: None,
                };
                let kz = written(HOP_NAME_KZ);
                let uz = written(HOP_NAME_UZ);
                vec![
                    step(
                        At::Present(1_000),
                        90_000,
                        Spec {
                            direction: Some(Direction::Exit),
                            subjects: vec![kz],
                            summary: "traveller left by road after secondary inspection; \
                                      inconsistent account of the journey",
                            ..Spec::at(crossing("KZ-ZHIBEKZHOLY"), 2, Category::SuspiciousCrossing)
                        },
                    ),
                    step(
                        At::Present(3_000),
                        60_000,
                        Spec {
                            direction: Some(Direction::Entry),
                            severity: Level::Medium,
                            reliability: SourceReliability::B,
                            subjects: vec![uz],
                            summary: "arriving traveller flagged at passport control: \
                                      vague about the purpose of the visit",
                            ..Spec::at(crossing("UZ-GISHTKUPRIK"), 1, Category::SuspiciousCrossing)
                        },
                    ),
                ]
            }
            Scenario::DistrictBurst => {
                let reports: [(Category, Level, &'static str, (f64, f64)); 5] = [
                    (
                        Category::SuspiciousCrossing,
                        Level::Medium,
                        "group of five crossing the border ridge outside any checkpoint",
                        (0.000, 0.000),
                    ),
                    (
                        Category::WeaponsSeizure,
                        Level::High,
                        "two rifles and ammunition found in an abandoned shepherd's hut",
                        (0.012, -0.021),
                    ),
                    (
                        Category::SuspiciousCrossing,
                        Level::Medium,
                        "fresh tracks and discarded foreign SIM cards near the border road",
                        (-0.008, 0.017),
                    ),
                    (
                        Category::DocumentFraud,
                        Level::Medium,
                        "man detained with a forged border-zone permit",
                        (0.021, 0.004),
                    ),
                    (
                        Category::SuspiciousCrossing,
                        Level::High,
                        "armed men seen moving towards the enclave road at dusk",
                        (-0.015, -0.009),
                    ),
                ];
                reports
                    .into_iter()
                    .enumerate()
                    .map(|(k, (category, severity, summary, offset))| {
                        step(
                            At::Present(4_000 + 1_000 * k as i64),
                            120_000 - 20_000 * k as i64,
                            Spec {
                                severity,
                                reliability: SourceReliability::B,
                                credibility: 2,
                                tlp: Tlp::Amber,
                                offset,
                                subjects: vec![person(subject, None)],
                                summary,
                                ..Spec::at(BATKEN_PATROL, 1 + (k % 3) as u8, category)
                            },
                        )
                    })
                    .collect()
            }
            Scenario::WatchlistEntry => vec![step(
                At::Present(2_000),
                20_000,
                Spec {
                    direction: Some(Direction::Entry),
                    severity: Level::High,
                    reliability: SourceReliability::B,
                    credibility: 2,
                    tlp: Tlp::Amber,
                    subjects: vec![
                        person(subject, Some("UNSC-1267")),
                        RawSubject {
                            kind: SubjectKind::Document,
                            id: cyrillic_lookalikes(&subject(SubjectKind::Document)),
                            watchlist: None,
                        },
                    ],
                    summary: "passport control match against a consolidated sanctions list entry",
                    ..Spec::at(crossing("UZ-DUSTLIK"), 3, Category::WatchlistHit)
                },
            )],
            Scenario::VanishedExit => vec![step(
                At::Prelude,
                0,
                Spec {
                    direction: Some(Direction::Exit),
                    subjects: vec![person(subject, None)],
                    summary: "traveller left on foot towards Kyrgyzstan shortly before closing",
                    ..Spec::at(crossing("TJ-KARAMYK"), 1, Category::SuspiciousCrossing)
                },
            )],
            Scenario::ReturneeEntry => vec![step(
                At::Present(5_500),
                45_000,
                Spec {
                    direction: Some(Direction::Entry),
                    severity: Level::High,
                    reliability: SourceReliability::B,
                    credibility: 2,
                    tlp: Tlp::Amber,
                    subjects: vec![person(subject, None)],
                    summary: "returning national identified as a former member of a foreign \
                              armed group",
                    ..Spec::at(crossing("KZ-TEMIRBABA"), 1, Category::FtfReturnee)
                },
            )],
        }
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a scenario's alert is keyed by (the processor's `group:value` key).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum KeyKind {
    /// `subject:<ref>` of the scenario's first subject.
    Subject,
    /// `area:<code>` of its reports.
    Area,
    /// `incident:<id>` of its one report.
    Incident,
}

/// When a step is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum At {
    /// Before any present-time report.
    Prelude,
    /// This many milliseconds after the present phase began.
    Present(i64),
}

/// One report of a scenario.
#[derive(Clone, Debug)]
pub(crate) struct Step {
    pub scenario: Scenario,
    pub at: At,
    /// How long before it is sent the reported event happened (present-time steps).
    pub ago_ms: i64,
    pub spec: Spec,
}

/// Patrols of the KG border service in Batken region, away from any checkpoint.
const BATKEN_PATROL: Place = Place {
    id: "KG-BATKEN-PATROL",
    state: "KG",
    area: "KG-B",
    lat: 40.062,
    lon: 70.819,
    posts: 3,
    crossing: false,
};

fn crossing(id: &str) -> Place {
    side_by_id(id)
        .copied()
        .unwrap_or_else(|| unreachable!("{id} is a crossing side of the network model"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ewn_processor::rules::default_rules;
    use std::collections::BTreeSet;

    #[test]
    fn every_default_rule_has_exactly_one_scenario() {
        let rules: BTreeSet<String> = default_rules().into_iter().map(|r| r.name).collect();
        let targeted: Vec<&str> = Scenario::ALL.iter().map(|s| s.rule()).collect();
        let distinct: BTreeSet<String> = targeted.iter().map(|s| s.to_string()).collect();
        assert_eq!(distinct.len(), targeted.len(), "each scenario its own rule");
        assert_eq!(distinct, rules, "all five default rules are covered");
    }

    #[test]
    fn scenario_areas_are_declared_and_disjoint() {
        let mut n = 0u64;
        let mut mint = |_| {
            n += 1;
            format!("s{n}")
        };
        let mut seen = BTreeSet::new();
        for s in Scenario::ALL {
            for step in s.plan(&mut mint) {
                assert!(s.areas().contains(&step.spec.place.area), "{s}");
            }
            for a in s.areas() {
                assert!(seen.insert(*a), "area {a} used by two scenarios");
            }
        }
    }

    #[test]
    fn hop_is_written_in_two_scripts_and_blinds_alike() {
        let key = ewn_trust::BlindingKey::from_bytes([8; 32]);
        let mut n = 0u64;
        let mut mint = |kind| {
            n += 1;
            match kind {
                SubjectKind::Person => format!("SIM PERSON 00C0FFEE00C0FFEE {n}"),
                _ => format!("SIM00C0FFEE00C0FFEED{n}"),
            }
        };
        let hop = Scenario::BorderHop.plan(&mut mint);
        let (kz, uz) = (&hop[0].spec, &hop[1].spec);
        assert_eq!((kz.place.state, uz.place.state), ("KZ", "UZ"));
        let (a, b) = (&kz.subjects[0].id, &uz.subjects[0].id);
        assert!(
            a.chars().any(|c| ('\u{400}'..='\u{4ff}').contains(&c)),
            "{a}"
        );
        assert!(b.is_ascii(), "{b}");
        assert_eq!(
            key.blind(SubjectKind::Person, a),
            key.blind(SubjectKind::Person, b)
        );
        let watch = Scenario::WatchlistEntry.plan(&mut mint);
        let doc = &watch[0].spec.subjects[1].id;
        assert!(!doc.is_ascii(), "{doc}");
        assert_eq!(
            key.blind(SubjectKind::Document, doc),
            key.blind(SubjectKind::Document, "SIM00C0FFEE00C0FFEED3")
        );
    }

    #[test]
    fn lists_parse() {
        assert_eq!(Scenario::parse_list("all").unwrap(), Scenario::ALL);
        assert!(Scenario::parse_list("none").unwrap().is_empty());
        assert_eq!(
            Scenario::parse_list("vanished_exit, border_hop,border_hop").unwrap(),
            [Scenario::BorderHop, Scenario::VanishedExit]
        );
        let e = Scenario::parse_list("border_hop,nope").unwrap_err();
        assert!(e.to_string().contains("`nope`"), "{e}");
    }
}
