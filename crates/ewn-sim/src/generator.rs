//! The seeded generator: background traffic at a set rate, plus the planted scenarios.
//! Pure: it is given the clock and returns incidents; sending them is [`crate::run`]'s job.
//!
//! # Reproducibility
//!
//! The traffic (which post reports what, when, with which grading) is drawn from a
//! xoshiro256** stream seeded by `seed` alone; identifiers (incident ids, raw subject ids)
//! from a second stream seeded by `seed` and the run's start time. Same seed, same start
//! time and same tick times: the same incidents, byte for byte. A rerun at another time
//! repeats the traffic with fresh identifiers, so it is never rejected as a replay and never
//! correlates with an earlier run's subjects.
//!
//! # Why the background triggers no default rule
//!
//! Each default rule (`ewn_processor::rules::default_rules`), and what the background does
//! about it, at any rate:
//!
//! - `cross_border_movement` (one subject reported by 2+ states within 72 h): every subject
//!   is minted fresh (a counter under the run's salt) and only ever reported by the state
//!   that minted it. The one reuse is a *transit*: a subject enters a state at one crossing
//!   and leaves the same state at another, both reported by that state. One state, so no
//!   cross-border alert. (Pairing an exit with the neighbour's entry of the same person, as
//!   a real border would, *is* cross-border movement, which is why the pairing is in-state.)
//! - `area_burst` (5+ incidents of level MEDIUM+ in one area within 1 h): the level is the
//!   processor's, from the default score weights, so the generator scores each report with
//!   the same `ScoreWeights::default()`. A MEDIUM+ report is admitted only while its area
//!   has at most `count - 2` (3) others within one window before or after it; otherwise it
//!   is downgraded (severity LOW, grading D4), which makes its score LOW for every
//!   background category. Any 1-h window therefore holds at most 4 MEDIUM+ reports of an
//!   area (the last one admitted into a 5-report window would have seen the other 4), at
//!   any rate. The regions the selected scenarios report from get no MEDIUM+ background at
//!   all, so no background report joins or shifts a scenario's alert.
//! - `watchlist_hit`: no background subject carries a watch list and the category is never
//!   WATCHLIST_HIT.
//! - `exit_without_entry` (an exit at a crossing with no entry of the subject within 24 h
//!   either side): the background reports an EXIT only as the second half of a transit,
//!   sent 3-20 s after the subject's ENTRY was sent and happening after it. The entry is
//!   always sent first, so even a processor that runs for days after the simulator stops
//!   finds every exit explained; when a run stops with transits pending, those exits are
//!   simply never sent (an entry alone triggers nothing).
//! - `ftf_returnee`: the category is never FTF_RETURNEE.
//!
//! Background events happened at most 30 s before they are sent, far inside the
//! processor's allowed lateness (300 s), so none is reported as LATE.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet, VecDeque};

use ewn_model::validate::{Limits, validate_incident};
use ewn_model::{
    Category, Direction, Incident, Level, Location, Reporter, SourceReliability, Subject,
    SubjectKind, Tlp,
};
use ewn_processor::ProcessSettings;
use ewn_processor::rules::{GroupBy, default_rules};
use ewn_processor::score::ScoreWeights;
use ewn_trust::BlindingKey;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::network::{self, CROSSINGS, Place, STATES};
use crate::rng::{Rng, splitmix64};
use crate::scenario::{At, KeyKind, Scenario, Step};

/// A background event happened up to this long before it is sent.
pub const BACKGROUND_JITTER_MS: i64 = 30_000;
/// A transit's exit is sent this long (min, max) after its entry.
pub const TRANSIT_DELAY_MS: (i64, i64) = (3_000, 20_000);
/// Share of background entries that become transits (an exit follows).
const TRANSIT_SHARE: f64 = 0.5;
/// Extra age of the prelude exit beyond the absence window and the lateness.
const PRELUDE_MARGIN_MS: i64 = 300_000;

/// What to generate.
#[derive(Clone, Debug, PartialEq)]
pub struct GeneratorConfig {
    pub seed: u64,
    /// Background incidents per second.
    pub rate_per_sec: f64,
    /// The scenarios to plant (each once).
    pub scenarios: Vec<Scenario>,
}

/// Where a generated incident comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Origin {
    Background,
    Scenario(Scenario),
}

/// One generated incident: blinded, valid, not yet signed.
#[derive(Clone, Debug, PartialEq)]
pub struct Generated {
    pub incident: Incident,
    pub origin: Origin,
}

/// A scenario that was sent in full, and the alert it should raise.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Planted {
    pub scenario: String,
    /// The default rule whose alert it should raise.
    pub rule: String,
    /// The alert's key as the processor writes it: `subject:<ref>`, `area:<code>` or
    /// `incident:<id>`.
    pub key: String,
    /// The alert's window start: the earliest event time among its reports. With rule and
    /// key it gives the alert id (`ewn_processor::correlate::alert_id`).
    pub window_start: i64,
    /// The reports of the scenario, all of which the alert should name.
    pub incident_ids: Vec<String>,
}

/// A raw subject as a member state's system knows it, before blinding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RawSubject {
    pub kind: SubjectKind,
    pub id: String,
    pub watchlist: Option<&'static str>,
}

/// What a report says, before ids, times and blinding.
#[derive(Clone, Debug)]
pub(crate) struct Spec {
    pub place: Place,
    pub post: u8,
    pub category: Category,
    pub severity: Level,
    pub reliability: SourceReliability,
    pub credibility: i32,
    pub tlp: Tlp,
    pub direction: Option<Direction>,
    /// Degrees added to the place's latitude and longitude.
    pub offset: (f64, f64),
    pub subjects: Vec<RawSubject>,
    pub summary: &'static str,
}

impl Spec {
    /// A LOW, C3, GREEN report of `category` by post `post` of `place`, no direction.
    pub fn at(place: Place, post: u8, category: Category) -> Spec {
        Spec {
            place,
            post,
            category,
            severity: Level::Low,
            reliability: SourceReliability::C,
            credibility: 3,
            tlp: Tlp::Green,
            direction: None,
            offset: (0.0, 0.0),
            subjects: Vec::new(),
            summary: "",
        }
    }
}

/// The `area_burst` parameters the background stays under.
#[derive(Clone, Copy, Debug)]
struct BurstRule {
    count: usize,
    window_ms: i64,
    min_level: Level,
}

impl BurstRule {
    fn of_defaults() -> BurstRule {
        default_rules()
            .into_iter()
            .find(|r| r.name == "area_burst")
            .map(|r| BurstRule {
                count: r.count as usize,
                window_ms: r.window_ms(),
                min_level: r.filter.min_level.unwrap_or(Level::Low),
            })
            .unwrap_or(BurstRule {
                count: 5,
                window_ms: 3_600_000,
                min_level: Level::Medium,
            })
    }
}

/// How far in the past the prelude (absence) exit is placed: the default absence window,
/// plus the processor's default allowed lateness, plus a margin. The processor then
/// decides the absence as soon as a present-time event passes its partition's watermark.
pub fn prelude_age_ms() -> i64 {
    let window = default_rules()
        .into_iter()
        .find(|r| r.name == "exit_without_entry")
        .map_or(24 * 3_600_000, |r| r.window_ms());
    window + ProcessSettings::default().allowed_lateness_secs as i64 * 1000 + PRELUDE_MARGIN_MS
}

/// Per-area record of the background's MEDIUM+ reports (see the module docs).
struct Budget {
    rule: BurstRule,
    reserved: HashSet<&'static str>,
    seen: HashMap<String, Vec<i64>>,
}

impl Budget {
    /// May a MEDIUM+ report at `t` in `area` go out as it is?
    fn admit(&mut self, area: &str, t: i64) -> bool {
        if self.reserved.contains(area) {
            return false;
        }
        let w = self.rule.window_ms;
        let times = self.seen.entry(area.to_string()).or_default();
        times.retain(|x| *x >= t - 3 * w);
        let near = times.iter().filter(|x| (**x - t).abs() <= w).count();
        if near + 2 > self.rule.count {
            return false;
        }
        times.push(t);
        true
    }
}

/// An exit owed to a transit.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Transit {
    due: i64,
    seq: u64,
    entered_at: i64,
    entry_side: &'static str,
    state: &'static str,
    subjects: Vec<(SubjectKind, String)>,
}

#[derive(Default)]
struct PlantState {
    expected: usize,
    ids: Vec<String>,
    window_start: Option<i64>,
    key: Option<String>,
}

/// The generator. See the module docs.
pub struct Generator {
    blinding: BlindingKey,
    weights: ScoreWeights,
    limits: Limits,
    traffic: Rng,
    ids: Rng,
    salt: u64,
    next_subject: u64,
    rate: f64,
    present_start: Option<i64>,
    /// Background slots of the schedule used (sent, or let go when behind).
    background_slots: u64,
    steps: VecDeque<Step>,
    transits: BinaryHeap<Reverse<Transit>>,
    transit_seq: u64,
    budget: Budget,
    plants: BTreeMap<Scenario, PlantState>,
    sides: Vec<&'static Place>,
}

const CROSSING_SUMMARIES: [(Category, &[&str]); 3] = [
    (
        Category::SuspiciousCrossing,
        &[
            "traveller sent to secondary inspection: inconsistent account of the journey",
            "third crossing this week on a short-stay permit",
            "undeclared cash found during baggage inspection",
            "empty concealed compartment found in the vehicle floor",
        ],
    ),
    (
        Category::DocumentFraud,
        &[
            "passport shows signs of page substitution",
            "entry stamp does not match the issuing post's records",
            "identity card photo does not match the holder",
            "altered vehicle registration certificate",
        ],
    ),
    (
        Category::Other,
        &[
            "undeclared goods in a minibus luggage rack",
            "traveller carrying unlabelled medicines in bulk",
            "driver offered money to skip the inspection lane",
            "cargo manifest does not match the load",
        ],
    ),
];

const DESK_SUMMARIES: [(Category, &[&str]); 2] = [
    (
        Category::DocumentFraud,
        &[
            "forged residence registration presented at a district office",
            "batch of blank visa stickers reported stolen",
            "bank reports an account opened with a counterfeit identity card",
        ],
    ),
    (
        Category::Other,
        &[
            "tip-off about a flat rented by short-stay visitors",
            "unusual money transfers reported by a remittance office",
            "informant reports recruitment talk at a market",
            "online channel advertising forged documents",
        ],
    ),
];

fn summaries(
    table: &[(Category, &'static [&'static str])],
    c: Category,
) -> &'static [&'static str] {
    table
        .iter()
        .find(|(k, _)| *k == c)
        .map_or(&["routine report"], |(_, s)| s)
}

/// A version-4-shaped UUID from the stream.
fn uuid(r: &mut Rng) -> String {
    let a = (r.next_u64() & 0xffff_ffff_ffff_0fff) | 0x4000;
    let b = (r.next_u64() & 0x3fff_ffff_ffff_ffff) | 0x8000_0000_0000_0000;
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xffff,
        b >> 48,
        b & 0xffff_ffff_ffff
    )
}

/// A fresh raw identifier of `kind`: unique within the run (the counter) and across runs
/// (the salt), in a form that survives the kind's normalisation intact.
fn mint(kind: SubjectKind, salt: u64, n: u64) -> String {
    match kind {
        SubjectKind::Person => format!("SIM PERSON {salt:016X} {n}"),
        SubjectKind::Vehicle => format!("SIM{salt:016X}V{n}"),
        SubjectKind::Document => format!("SIM{salt:016X}D{n}"),
        // Normalised to digits only: the salt as 12 digits and the counter as 10.
        SubjectKind::Phone => format!("+{:012}{:010}", salt % 1_000_000_000_000, n),
        SubjectKind::Organisation => format!("SIM ORGANISATION {salt:016X} {n}"),
    }
}

impl Generator {
    /// A generator for a run starting at `start_ms`, blinding with `blinding` (the
    /// network's key, as `ewn publish` uses it).
    pub fn new(config: &GeneratorConfig, blinding: BlindingKey, start_ms: i64) -> Generator {
        let mut salt_state = config.seed ^ (start_ms as u64).rotate_left(32);
        let salt = splitmix64(&mut salt_state);
        let mut next_subject = 0u64;
        let mut scenarios = config.scenarios.clone();
        scenarios.sort();
        scenarios.dedup();
        let mut steps: Vec<Step> = Vec::new();
        let mut plants = BTreeMap::new();
        let mut reserved = HashSet::new();
        for s in scenarios {
            let plan = s.plan(&mut |kind| {
                next_subject += 1;
                mint(kind, salt, next_subject)
            });
            plants.insert(
                s,
                PlantState {
                    expected: plan.len(),
                    ..PlantState::default()
                },
            );
            reserved.extend(s.areas().iter().copied());
            steps.extend(plan);
        }
        // The prelude first, then by send time (stable: a scenario's order is kept).
        steps.sort_by_key(|s| match s.at {
            At::Prelude => i64::MIN,
            At::Present(t) => t,
        });
        Generator {
            blinding,
            weights: ScoreWeights::default(),
            limits: Limits::default(),
            traffic: Rng::new(config.seed),
            ids: Rng::new(salt),
            salt,
            next_subject,
            rate: config.rate_per_sec.max(0.0),
            present_start: None,
            background_slots: 0,
            steps: steps.into(),
            transits: BinaryHeap::new(),
            transit_seq: 0,
            budget: Budget {
                rule: BurstRule::of_defaults(),
                reserved,
                seen: HashMap::new(),
            },
            plants,
            sides: CROSSINGS.iter().flat_map(|c| c.sides.iter()).collect(),
        }
    }

    /// The reports that must go out before any present-time one (the absence scenario's
    /// exit, placed [`prelude_age_ms`] before `now_ms`).
    pub fn prelude(&mut self, now_ms: i64) -> Result<Vec<Generated>> {
        let mut out = Vec::new();
        while self
            .steps
            .front()
            .is_some_and(|s| matches!(s.at, At::Prelude))
        {
            if let Some(step) = self.steps.pop_front() {
                out.push(self.emit_step(&step, now_ms)?);
            }
        }
        Ok(out)
    }

    /// Everything due at `now_ms`: the scenario reports whose time has come and background
    /// reports up to `rate x (now - first tick)`, at most a second's worth at once. The
    /// first call starts the present phase.
    pub fn tick(&mut self, now_ms: i64, out: &mut Vec<Generated>) -> Result<()> {
        let begun = *self.present_start.get_or_insert(now_ms);
        let since = now_ms - begun;
        while let Some(step) = self.steps.front() {
            let due = match step.at {
                At::Prelude => true,
                At::Present(t) => t <= since,
            };
            if !due {
                break;
            }
            if let Some(step) = self.steps.pop_front() {
                out.push(self.emit_step(&step, now_ms)?);
            }
        }
        let owed = (self.rate * since.max(0) as f64 / 1000.0).floor() as u64;
        // More than a second behind (the signer or the broker cannot keep up): let the
        // backlog go rather than build one batch without bound.
        let most = (self.rate.ceil() as u64).max(1);
        if owed > self.background_slots + most {
            self.background_slots = owed - most;
        }
        while self.background_slots < owed {
            out.push(self.background(now_ms)?);
            self.background_slots += 1;
        }
        Ok(())
    }

    /// The scenario reports not sent yet, all at once (the end of a run: a scenario is
    /// always planted in full). Pending transit exits are dropped.
    pub fn finish(&mut self, now_ms: i64, out: &mut Vec<Generated>) -> Result<()> {
        while let Some(step) = self.steps.pop_front() {
            out.push(self.emit_step(&step, now_ms)?);
        }
        self.transits.clear();
        Ok(())
    }

    /// Scenario reports not sent yet.
    pub fn scenario_reports_pending(&self) -> usize {
        self.steps.len()
    }

    /// The scenarios sent in full so far, with the alerts they should raise.
    pub fn planted(&self) -> Vec<Planted> {
        self.plants
            .iter()
            .filter(|(_, p)| p.expected > 0 && p.ids.len() == p.expected)
            .filter_map(|(s, p)| {
                Some(Planted {
                    scenario: s.name().to_string(),
                    rule: s.rule().to_string(),
                    key: p.key.clone()?,
                    window_start: p.window_start?,
                    incident_ids: p.ids.clone(),
                })
            })
            .collect()
    }

    fn mint(&mut self, kind: SubjectKind) -> String {
        self.next_subject += 1;
        mint(kind, self.salt, self.next_subject)
    }

    fn emit_step(&mut self, step: &Step, now_ms: i64) -> Result<Generated> {
        let occurred = match step.at {
            At::Prelude => now_ms - prelude_age_ms(),
            At::Present(_) => now_ms - step.ago_ms,
        };
        let origin = Origin::Scenario(step.scenario);
        let incident = self.materialise(&step.spec, occurred, now_ms, origin)?;
        let plant = self.plants.entry(step.scenario).or_default();
        plant.ids.push(incident.incident_id.clone());
        plant.window_start = Some(plant.window_start.map_or(occurred, |w| w.min(occurred)));
        if plant.key.is_none() {
            plant.key = match step.scenario.key_kind() {
                KeyKind::Subject => incident
                    .subjects
                    .first()
                    .map(|s| format!("{}:{}", GroupBy::Subject.as_str(), s.subject_ref)),
                KeyKind::Area => Some(format!(
                    "{}:{}",
                    GroupBy::Area.as_str(),
                    incident.location.area
                )),
                KeyKind::Incident => Some(format!(
                    "{}:{}",
                    GroupBy::Incident.as_str(),
                    incident.incident_id
                )),
            };
        }
        Ok(Generated { incident, origin })
    }

    /// Severity and Admiralty grading of a background report, and its TLP.
    fn grading(&mut self) -> (Level, SourceReliability, i32, Tlp) {
        let r = &mut self.traffic;
        let severity = [Level::Low, Level::Medium][r.weighted(&[65, 35])];
        let reliability = [
            SourceReliability::B,
            SourceReliability::C,
            SourceReliability::D,
            SourceReliability::E,
        ][r.weighted(&[20, 40, 30, 10])];
        let credibility = [2, 3, 4, 5][r.weighted(&[20, 45, 25, 10])];
        let tlp = [Tlp::Clear, Tlp::Green, Tlp::Amber][r.weighted(&[10, 70, 20])];
        (severity, reliability, credibility, tlp)
    }

    /// One background report: a due transit exit, else a fresh report.
    fn background(&mut self, now_ms: i64) -> Result<Generated> {
        if self
            .transits
            .peek()
            .is_some_and(|Reverse(t)| t.due <= now_ms)
            && let Some(Reverse(t)) = self.transits.pop()
        {
            return self.transit_exit(t, now_ms);
        }
        let occurred = now_ms - self.traffic.between(0, BACKGROUND_JITTER_MS);
        let (severity, reliability, credibility, tlp) = self.grading();
        let kind = self.traffic.weighted(&[60, 25, 15]);
        let (spec, transit) = match kind {
            // An entry at a crossing, perhaps the start of a transit.
            0 => {
                let side = **self.traffic.pick(&self.sides);
                let category = [
                    Category::SuspiciousCrossing,
                    Category::DocumentFraud,
                    Category::Other,
                ][self.traffic.weighted(&[60, 25, 15])];
                let mut subjects = vec![RawSubject {
                    kind: SubjectKind::Person,
                    id: self.mint(SubjectKind::Person),
                    watchlist: None,
                }];
                if self.traffic.chance(0.3) {
                    subjects.push(RawSubject {
                        kind: SubjectKind::Vehicle,
                        id: self.mint(SubjectKind::Vehicle),
                        watchlist: None,
                    });
                }
                let post = 1 + self.traffic.below(side.posts as u64) as u8;
                let summary = *self.traffic.pick(summaries(&CROSSING_SUMMARIES, category));
                let transit = self.traffic.chance(TRANSIT_SHARE);
                (
                    Spec {
                        severity,
                        reliability,
                        credibility,
                        tlp,
                        direction: Some(Direction::Entry),
                        subjects,
                        summary,
                        ..Spec::at(side, post, category)
                    },
                    transit,
                )
            }
            // A report from an inland desk.
            1 => {
                let state = self.traffic.pick(&STATES);
                let desk = *self.traffic.pick(state.desks);
                let category =
                    [Category::DocumentFraud, Category::Other][self.traffic.weighted(&[40, 60])];
                let subject_kind = [
                    SubjectKind::Person,
                    SubjectKind::Phone,
                    SubjectKind::Organisation,
                    SubjectKind::Document,
                ][self.traffic.weighted(&[55, 20, 10, 15])];
                let summary = *self.traffic.pick(summaries(&DESK_SUMMARIES, category));
                (
                    Spec {
                        severity,
                        reliability,
                        credibility,
                        tlp,
                        subjects: vec![RawSubject {
                            kind: subject_kind,
                            id: self.mint(subject_kind),
                            watchlist: None,
                        }],
                        summary,
                        ..Spec::at(desk, 1, category)
                    },
                    false,
                )
            }
            // Something found at a crossing, not tied to a direction.
            _ => {
                let side = **self.traffic.pick(&self.sides);
                let post = 1 + self.traffic.below(side.posts as u64) as u8;
                let summary = *self
                    .traffic
                    .pick(summaries(&CROSSING_SUMMARIES, Category::Other));
                (
                    Spec {
                        severity,
                        reliability,
                        credibility,
                        tlp,
                        subjects: vec![RawSubject {
                            kind: SubjectKind::Vehicle,
                            id: self.mint(SubjectKind::Vehicle),
                            watchlist: None,
                        }],
                        summary,
                        ..Spec::at(side, post, Category::Other)
                    },
                    false,
                )
            }
        };
        let mut incident = self.materialise(&spec, occurred, now_ms, Origin::Background)?;
        self.keep_under_burst(&mut incident)?;
        if transit {
            let delay = self.traffic.between(TRANSIT_DELAY_MS.0, TRANSIT_DELAY_MS.1);
            self.transit_seq += 1;
            self.transits.push(Reverse(Transit {
                due: now_ms + delay,
                seq: self.transit_seq,
                entered_at: occurred,
                entry_side: spec.place.id,
                state: spec.place.state,
                subjects: spec.subjects.into_iter().map(|s| (s.kind, s.id)).collect(),
            }));
        }
        Ok(Generated {
            incident,
            origin: Origin::Background,
        })
    }

    /// The exit of a transit: the same subjects leave the same state at another crossing.
    fn transit_exit(&mut self, t: Transit, now_ms: i64) -> Result<Generated> {
        let others: Vec<&'static Place> = network::sides_in(t.state)
            .into_iter()
            .filter(|s| s.id != t.entry_side)
            .collect();
        let side = match others.as_slice() {
            [] => return Err(Error::Bug(format!("{}: one crossing side only", t.state))),
            list => **self.traffic.pick(list),
        };
        let occurred =
            (now_ms - self.traffic.between(0, BACKGROUND_JITTER_MS)).max(t.entered_at + 1_000);
        let (severity, reliability, credibility, tlp) = self.grading();
        let post = 1 + self.traffic.below(side.posts as u64) as u8;
        let summary = *self
            .traffic
            .pick(summaries(&CROSSING_SUMMARIES, Category::SuspiciousCrossing));
        let spec = Spec {
            severity,
            reliability,
            credibility,
            tlp,
            direction: Some(Direction::Exit),
            subjects: t
                .subjects
                .into_iter()
                .map(|(kind, id)| RawSubject {
                    kind,
                    id,
                    watchlist: None,
                })
                .collect(),
            summary,
            ..Spec::at(side, post, Category::SuspiciousCrossing)
        };
        let mut incident = self.materialise(&spec, occurred, now_ms, Origin::Background)?;
        self.keep_under_burst(&mut incident)?;
        Ok(Generated {
            incident,
            origin: Origin::Background,
        })
    }

    /// Downgrades a MEDIUM+ background report its area has no room for (module docs).
    fn keep_under_burst(&mut self, incident: &mut Incident) -> Result<()> {
        let min = self.budget.rule.min_level;
        if self.weights.score(incident).level < min
            || self
                .budget
                .admit(&incident.location.area, incident.occurred_at)
        {
            return Ok(());
        }
        incident.severity = Level::Low;
        incident.source_reliability = SourceReliability::D;
        incident.info_credibility = 4;
        if self.weights.score(incident).level >= min {
            return Err(Error::Bug(format!(
                "a downgraded {} report still scores {} or more",
                incident.category, min
            )));
        }
        Ok(())
    }

    /// Ids, times, blinding and validation: the incident as the state would sign it.
    fn materialise(
        &mut self,
        spec: &Spec,
        occurred_at: i64,
        reported_at: i64,
        origin: Origin,
    ) -> Result<Incident> {
        let incident_id = uuid(&mut self.ids);
        let mut subjects = Vec::with_capacity(spec.subjects.len());
        for s in &spec.subjects {
            let subject_ref = self
                .blinding
                .blind(s.kind, &s.id)
                .map_err(|e| Error::Bug(format!("blinding a generated {}: {e}", s.kind)))?;
            subjects.push(Subject {
                kind: s.kind,
                subject_ref,
                watchlist: s.watchlist.map(String::from),
            });
        }
        let agency = network::state(spec.place.state)
            .map(|s| s.agency)
            .ok_or_else(|| Error::Bug(format!("unknown state {}", spec.place.state)))?;
        let mut attributes = BTreeMap::from([("source".to_string(), "ewn-simulate".to_string())]);
        if let Origin::Scenario(s) = origin {
            attributes.insert("scenario".into(), s.name().into());
        }
        let place = &spec.place;
        let incident = Incident {
            incident_id,
            occurred_at,
            reported_at,
            reporter: Reporter {
                state: place.state.into(),
                agency: agency.into(),
                post_id: Some(place.post_id(spec.post)),
            },
            category: spec.category,
            severity: spec.severity,
            source_reliability: spec.reliability,
            info_credibility: spec.credibility,
            tlp: spec.tlp,
            location: Location {
                lat: place.lat + spec.offset.0,
                lon: place.lon + spec.offset.1,
                area: place.area.into(),
                crossing: place.crossing.then(|| place.id.to_string()),
            },
            direction: spec.direction,
            subjects,
            summary: spec.summary.into(),
            attributes,
        };
        let problems = validate_incident(&incident, &self.limits);
        if let Some(p) = problems.first() {
            return Err(Error::Bug(format!("generated an invalid incident: {p}")));
        }
        Ok(incident)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeSet, HashMap};
    use std::sync::Arc;

    use ewn_model::{Alert, Evidence, MsgType};
    use ewn_processor::correlate::{Fed, PartitionState, RuleSet, alert_id, event_of};
    use ewn_trust::TrustSettings;

    use super::*;

    const START: i64 = 1_800_000_000_000;
    const TICK: i64 = 50;

    fn config(seed: u64, rate: f64, scenarios: &[Scenario]) -> GeneratorConfig {
        GeneratorConfig {
            seed,
            rate_per_sec: rate,
            scenarios: scenarios.to_vec(),
        }
    }

    /// Drives a generator on a simulated clock: the prelude at `start`, then ticks every
    /// 50 ms for `secs` seconds from 2 s later, then `finish`. Each incident with the time
    /// it was sent.
    fn drive(
        config: &GeneratorConfig,
        start: i64,
        secs: i64,
    ) -> (Vec<(i64, Generated)>, Vec<Planted>) {
        let mut g = Generator::new(config, BlindingKey::from_bytes([7; 32]), start);
        let mut out: Vec<(i64, Generated)> = g
            .prelude(start)
            .unwrap()
            .into_iter()
            .map(|x| (start, x))
            .collect();
        let present = start + 2_000;
        let mut t = present;
        let mut batch = Vec::new();
        while t < present + secs * 1000 {
            g.tick(t, &mut batch).unwrap();
            out.extend(batch.drain(..).map(|x| (t, x)));
            t += TICK;
        }
        g.finish(t, &mut batch).unwrap();
        out.extend(batch.drain(..).map(|x| (t, x)));
        (out, g.planted())
    }

    fn background(out: &[(i64, Generated)]) -> Vec<&(i64, Generated)> {
        out.iter()
            .filter(|(_, g)| g.origin == Origin::Background)
            .collect()
    }

    #[test]
    fn same_seed_same_incidents() {
        let c = config(7, 50.0, &Scenario::ALL);
        let (a, pa) = drive(&c, START, 30);
        let (b, pb) = drive(&c, START, 30);
        assert!(a.len() > 1_500, "{}", a.len());
        assert_eq!(a, b);
        assert_eq!(pa, pb);
        let (other_seed, _) = drive(&config(8, 50.0, &Scenario::ALL), START, 30);
        assert_ne!(a, other_seed);
        // Another start time: the same traffic with fresh identifiers.
        let (later, _) = drive(&c, START + 3_600_000, 30);
        assert_eq!(a.len(), later.len());
        let shape = |i: &Incident| {
            (
                i.category,
                i.location.area.clone(),
                i.direction,
                i.subjects.len(),
            )
        };
        for ((_, x), (_, y)) in a.iter().zip(&later) {
            assert_eq!(shape(&x.incident), shape(&y.incident));
            assert_ne!(x.incident.incident_id, y.incident.incident_id);
            assert_ne!(
                x.incident.subjects.first().map(|s| &s.subject_ref),
                y.incident.subjects.first().map(|s| &s.subject_ref)
            );
        }
    }

    #[test]
    fn the_rate_is_held() {
        let (out, _) = drive(&config(1, 20.0, &[]), START, 60);
        let n = background(&out).len();
        assert!(
            (1_199..=1_200).contains(&n),
            "{n} background reports in 60 s at 20/s"
        );
    }

    /// The background invariants of the module docs, at the default rate and at a rate
    /// that exhausts the per-area budget.
    #[test]
    fn background_invariants_hold() {
        for (rate, secs) in [(DEFAULT_RATE_FOR_TESTS, 600), (400.0, 120)] {
            let (out, _) = drive(&config(3, rate, &Scenario::ALL), START, secs);
            let weights = ScoreWeights::default();
            let rule = BurstRule::of_defaults();
            let mut states_of: HashMap<&str, BTreeSet<&str>> = HashMap::new();
            let mut entries: HashMap<&str, (&str, i64)> = HashMap::new();
            let mut medium: HashMap<&str, Vec<i64>> = HashMap::new();
            let reserved: BTreeSet<&str> = Scenario::ALL
                .iter()
                .flat_map(|s| s.areas())
                .copied()
                .collect();
            let mut exits = 0;
            for (sent, g) in background(&out) {
                let i = &g.incident;
                assert!(i.subjects.iter().all(|s| s.watchlist.is_none()));
                assert!(!matches!(
                    i.category,
                    Category::WatchlistHit | Category::FtfReturnee
                ));
                assert!(i.occurred_at <= i.reported_at && i.reported_at == *sent);
                assert!(i.occurred_at >= sent - BACKGROUND_JITTER_MS - TRANSIT_DELAY_MS.1);
                for s in &i.subjects {
                    states_of
                        .entry(&s.subject_ref)
                        .or_default()
                        .insert(&i.reporter.state);
                }
                match i.direction {
                    Some(Direction::Entry) => {
                        for s in &i.subjects {
                            entries.insert(&s.subject_ref, (&i.reporter.state, i.occurred_at));
                        }
                    }
                    Some(Direction::Exit) => {
                        exits += 1;
                        for s in &i.subjects {
                            let (state, at) = entries
                                .get(s.subject_ref.as_str())
                                .copied()
                                .unwrap_or_else(|| {
                                    panic!("exit {} before its entry", i.incident_id)
                                });
                            assert_eq!(state, i.reporter.state);
                            assert!(at < i.occurred_at && i.occurred_at - at < 24 * 3_600_000);
                        }
                    }
                    None => {}
                }
                if weights.score(i).level >= rule.min_level {
                    assert!(!reserved.contains(i.location.area.as_str()));
                    medium
                        .entry(&i.location.area)
                        .or_default()
                        .push(i.occurred_at);
                }
            }
            assert!(exits > 0, "transits happen");
            for (subject, states) in &states_of {
                assert_eq!(states.len(), 1, "{subject} reported by {states:?}");
            }
            for (area, mut times) in medium {
                times.sort();
                for (k, t) in times.iter().enumerate() {
                    let within = times[k..]
                        .iter()
                        .take_while(|x| **x <= t + rule.window_ms)
                        .count();
                    assert!(
                        within < rule.count,
                        "{area}: {within} MEDIUM+ within an hour at {rate}/s"
                    );
                }
            }
        }
    }

    const DEFAULT_RATE_FOR_TESTS: f64 = crate::run::DEFAULT_RATE;

    #[test]
    fn the_prelude_exit_is_old_enough_to_decide_and_young_enough_to_accept() {
        let (out, planted) = drive(&config(1, 0.0, &[Scenario::VanishedExit]), START, 1);
        assert_eq!(out.len(), 1);
        let i = &out[0].1.incident;
        assert_eq!(i.direction, Some(Direction::Exit));
        let age = i.reported_at - i.occurred_at;
        let lateness = ProcessSettings::default().allowed_lateness_secs as i64 * 1000;
        assert!(age >= 24 * 3_600_000 + lateness + 60_000, "{age}");
        assert!(age < TrustSettings::default().max_age_secs as i64 * 1000);
        assert_eq!(planted.len(), 1);
        assert_eq!(planted[0].window_start, i.occurred_at);
    }

    /// The processor's correlation engine, in memory, with the default rules and weights:
    /// one partition (stricter than several: every event shares one watermark).
    struct Engine {
        rules: Arc<RuleSet>,
        part: PartitionState,
        offset: i64,
        alerts: Vec<Alert>,
        late: usize,
    }

    impl Engine {
        fn new() -> Engine {
            let rules = Arc::new(
                RuleSet::new(default_rules(), ScoreWeights::default()).expect("valid defaults"),
            );
            Engine {
                part: PartitionState::new(rules.clone(), ProcessSettings::default().engine()),
                rules,
                offset: 0,
                alerts: Vec::new(),
                late: 0,
            }
        }

        fn feed(&mut self, i: &Incident, now: i64) {
            let s = self.rules.weights.score(i);
            let e = Arc::new(event_of(
                i,
                s,
                Evidence {
                    incident_id: i.incident_id.clone(),
                    topic: "t".into(),
                    partition: 0,
                    offset: self.offset,
                    key_id: "k".into(),
                    signature: [0; 64],
                    payload_sha256: [0; 32],
                },
            ));
            self.rules.immediate(&e, now, &mut self.alerts);
            for group in self.rules.stateful_groups() {
                let keys: Vec<String> = e.keys(group).into_iter().map(String::from).collect();
                for key in keys {
                    let fed = self
                        .part
                        .feed(group, &key, &e, self.offset, now, &mut self.alerts);
                    self.late += fed.iter().filter(|(_, f)| *f == Fed::Late).count();
                }
            }
            self.offset += 1;
        }

        fn run(out: &[(i64, Generated)]) -> Engine {
            let mut e = Engine::new();
            let mut last = None;
            for (sent, g) in out {
                if last.is_some_and(|l| l != *sent) {
                    e.part.tick(*sent, &mut e.alerts);
                }
                e.feed(&g.incident, *sent);
                last = Some(*sent);
            }
            let end = last.unwrap_or(START);
            e.part.tick(end, &mut e.alerts);
            e
        }

        /// Lets every pending absence be decided, as a processor running on for days would.
        fn decide_everything(&mut self, now: i64) {
            self.part.decide_until(now + 48 * 3_600_000);
            self.part.tick(now, &mut self.alerts);
        }
    }

    /// Alerts in brief, for failure messages.
    fn brief(alerts: &[Alert]) -> Vec<(MsgType, &str, &str)> {
        alerts
            .iter()
            .map(|a| (a.msg_type, a.rule.as_str(), a.key.as_str()))
            .collect()
    }

    #[test]
    fn default_rules_raise_exactly_the_planted_alerts() {
        let (out, planted) = drive(
            &config(11, DEFAULT_RATE_FOR_TESTS, &Scenario::ALL),
            START,
            120,
        );
        assert_eq!(planted.len(), Scenario::ALL.len());
        let mut e = Engine::run(&out);
        assert_eq!(e.late, 0, "nothing is late");
        let check = |alerts: &[Alert]| {
            assert!(
                alerts.iter().all(|a| a.msg_type == MsgType::Alert),
                "no update or cancel: {:?}",
                brief(alerts)
            );
            let got: BTreeSet<(String, String, String, BTreeSet<String>)> = alerts
                .iter()
                .map(|a| {
                    (
                        a.rule.clone(),
                        a.key.clone(),
                        a.alert_id.clone(),
                        a.incident_ids.iter().cloned().collect(),
                    )
                })
                .collect();
            let want: BTreeSet<(String, String, String, BTreeSet<String>)> = planted
                .iter()
                .map(|p| {
                    (
                        p.rule.clone(),
                        p.key.clone(),
                        alert_id(&p.rule, &p.key, p.window_start),
                        p.incident_ids.iter().cloned().collect(),
                    )
                })
                .collect();
            assert_eq!(alerts.len(), planted.len(), "{:#?}", brief(alerts));
            assert_eq!(got, want);
        };
        // Decided while the run is on: the absence too, by the present-time watermark.
        check(&e.alerts);
        let end = out.last().map_or(START, |(t, _)| *t);
        e.decide_everything(end);
        check(&e.alerts);
    }

    #[test]
    fn background_alone_raises_nothing_at_any_rate() {
        for (rate, secs) in [(DEFAULT_RATE_FOR_TESTS, 300), (300.0, 60)] {
            let (out, planted) = drive(&config(5, rate, &[]), START, secs);
            assert!(planted.is_empty());
            let mut e = Engine::run(&out);
            assert_eq!(e.late, 0);
            let end = out.last().map_or(START, |(t, _)| *t);
            e.decide_everything(end);
            assert!(e.alerts.is_empty(), "{rate}/s: {:#?}", brief(&e.alerts));
        }
    }
}
