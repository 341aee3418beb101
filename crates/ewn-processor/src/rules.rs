//! Correlation rules, from configuration (`[[process.rules]]`) or the built-in default set.
//!
//! Every rule has a filter, a group-by field, a window, a level and a cooldown. Kinds:
//! - `threshold`: at least `count` matching incidents per key within `window_secs`;
//! - `distinct`: at least `count` distinct values of `distinct` per key within the window;
//! - `sequence`: an incident matching `first`, then (strictly later in event time) one
//!   matching `then`, per key within the window;
//! - `absence`: an incident matching `first` and none matching `then` per key within the
//!   window after it (and before it, with `lookback`), decided once the watermark has
//!   passed the window's end.
//!
//! Once a rule fires for a key, incidents within `cooldown_secs` of the window start join
//! that alert as `UPDATE`s instead of raising new alerts.

use std::collections::HashSet;

use ewn_model::{Category, Direction, Level};
use serde::{Deserialize, Serialize};

use crate::event::Event;
pub use crate::event::{DistinctField, GroupBy};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleKind {
    Threshold,
    Distinct,
    Sequence,
    Absence,
}

/// Which incidents a rule (or one side of a sequence/absence rule) looks at. Empty lists
/// match everything; all given conditions must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Filter {
    pub categories: Vec<Category>,
    pub states: Vec<String>,
    pub areas: Vec<String>,
    pub min_score: i32,
    pub min_level: Option<Level>,
    pub direction: Option<Direction>,
    /// Only incidents at a border crossing.
    pub at_crossing: bool,
    /// Only watch-list hits (a listed subject, or category WATCHLIST_HIT).
    pub watchlist_hit: bool,
}

impl Filter {
    pub fn matches(&self, e: &Event) -> bool {
        (self.categories.is_empty() || self.categories.contains(&e.category))
            && (self.states.is_empty()
                || self.states.iter().any(|s| s.eq_ignore_ascii_case(&e.state)))
            && (self.areas.is_empty() || self.areas.iter().any(|a| **a == *e.area))
            && e.score >= self.min_score
            && self.min_level.is_none_or(|l| e.level >= l)
            && self.direction.is_none_or(|d| e.direction == Some(d))
            && (!self.at_crossing || e.crossing.is_some())
            && (!self.watchlist_hit || e.watchlist_hit)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    pub name: String,
    pub kind: RuleKind,
    #[serde(default)]
    pub filter: Filter,
    pub group_by: GroupBy,
    /// The window; 0 for immediate (`group_by = "incident"`) rules.
    pub window_secs: u64,
    /// `threshold` and `distinct`: how many incidents (or distinct values).
    #[serde(default = "one")]
    pub count: u32,
    /// `distinct`: the field whose distinct values are counted.
    #[serde(default)]
    pub distinct: Option<DistinctField>,
    /// `sequence` and `absence`: the first incident.
    #[serde(default)]
    pub first: Option<Filter>,
    /// `sequence`: what must follow; `absence`: what must not.
    #[serde(default)]
    pub then: Option<Filter>,
    /// `absence`: a `then` incident up to `window_secs` *before* `first` also counts (an
    /// exit is explained by an entry before it as well as after it).
    #[serde(default)]
    pub lookback: bool,
    /// The lowest level of the rule's alerts (a higher score can raise it).
    pub level: Level,
    /// How long after the window start new evidence updates the alert; default the window.
    #[serde(default)]
    pub cooldown_secs: Option<u64>,
    /// For AMBER_STRICT and RED alerts: the only agencies that may receive them.
    #[serde(default)]
    pub named_agencies: Vec<String>,
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn one() -> u32 {
    1
}

fn yes() -> bool {
    true
}

impl RuleConfig {
    /// A rule matching everything, `count` 1, cooldown equal to the window, enabled; set
    /// the rest with struct update syntax.
    pub fn new(
        name: &str,
        kind: RuleKind,
        group_by: GroupBy,
        window_secs: u64,
        level: Level,
    ) -> RuleConfig {
        RuleConfig {
            name: name.into(),
            kind,
            filter: Filter::default(),
            group_by,
            window_secs,
            count: 1,
            distinct: None,
            first: None,
            then: None,
            lookback: false,
            level,
            cooldown_secs: None,
            named_agencies: vec![],
            enabled: true,
        }
    }

    pub fn window_ms(&self) -> i64 {
        self.window_secs as i64 * 1000
    }

    pub fn cooldown_ms(&self) -> i64 {
        self.cooldown_secs
            .unwrap_or(self.window_secs)
            .max(self.window_secs) as i64
            * 1000
    }

    /// Every problem of the rule, each naming `process.rules[i]` and the key.
    pub fn problems(&self, i: usize) -> Vec<String> {
        let at = format!("process.rules[{i}] ({})", self.name);
        let mut p = Vec::new();
        let ok_name = !self.name.is_empty()
            && self.name.len() <= 64
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !ok_name {
            p.push(format!("{at}.name: 1..64 of a-z, 0-9 and _"));
        }
        if (self.group_by == GroupBy::Incident) != (self.window_secs == 0) {
            p.push(format!(
                "{at}: group_by = \"incident\" goes with window_secs = 0, and only with it"
            ));
        }
        if self.group_by == GroupBy::Incident && self.kind != RuleKind::Threshold {
            p.push(format!(
                "{at}.kind: immediate (group_by = \"incident\") rules are thresholds"
            ));
        }
        if self.count == 0 {
            p.push(format!("{at}.count: must be at least 1"));
        }
        if let Some(c) = self.cooldown_secs
            && c < self.window_secs
        {
            p.push(format!(
                "{at}.cooldown_secs: may not be shorter than window_secs"
            ));
        }
        match self.kind {
            RuleKind::Distinct if self.distinct.is_none() => {
                p.push(format!("{at}.distinct: needed by a distinct rule"))
            }
            RuleKind::Sequence | RuleKind::Absence
                if self.first.is_none() || self.then.is_none() =>
            {
                p.push(
                    format!("{at}: a {:?} rule needs both `first` and `then`", self.kind)
                        .to_lowercase(),
                )
            }
            _ => {}
        }
        if self.kind != RuleKind::Distinct && self.distinct.is_some() {
            p.push(format!("{at}.distinct: only for distinct rules"));
        }
        if self.window_secs > 30 * 24 * 3600 {
            p.push(format!("{at}.window_secs: at most 30 days"));
        }
        if self.cooldown_secs.is_some_and(|c| c > 30 * 24 * 3600) {
            p.push(format!("{at}.cooldown_secs: at most 30 days"));
        }
        p
    }
}

/// What must hold for a rule to fire, by kind: only the options of that kind exist, so a
/// rule that passed [`RuleConfig::problems`] cannot be inconsistent at run time.
#[derive(Clone, Debug, PartialEq)]
pub enum Condition {
    /// At least `count` matching incidents per key within the window.
    Threshold { count: usize },
    /// At least `count` distinct values of `field` per key within the window.
    Distinct { count: usize, field: DistinctField },
    /// An incident matching `first`, then one matching `then` strictly later, within the window.
    Sequence { first: Filter, then: Filter },
    /// An incident matching `first` and none matching `then` within the window after it
    /// (and before it, with `lookback`).
    Absence {
        first: Filter,
        then: Filter,
        lookback: bool,
    },
}

/// A checked rule: its configuration (kept for reload comparison and names) and the typed
/// condition, window and cooldown the engine runs on.
#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    pub config: RuleConfig,
    pub condition: Condition,
    /// Window and cooldown in ms (cooldown >= window).
    pub window: i64,
    pub cooldown: i64,
}

impl TryFrom<RuleConfig> for Rule {
    /// Every problem, each naming the rule and key.
    type Error = Vec<String>;

    fn try_from(config: RuleConfig) -> Result<Rule, Vec<String>> {
        let problems = config.problems(0);
        if !problems.is_empty() {
            return Err(problems);
        }
        let count = config.count as usize;
        let pair = || (config.first.clone(), config.then.clone());
        let condition = match (config.kind, config.distinct, pair()) {
            (RuleKind::Threshold, _, _) => Condition::Threshold { count },
            (RuleKind::Distinct, Some(field), _) => Condition::Distinct { count, field },
            (RuleKind::Sequence, _, (Some(first), Some(then))) => {
                Condition::Sequence { first, then }
            }
            (RuleKind::Absence, _, (Some(first), Some(then))) => Condition::Absence {
                first,
                then,
                lookback: config.lookback,
            },
            _ => return Err(vec![format!("rule {}: inconsistent options", config.name)]),
        };
        Ok(Rule {
            window: config.window_ms(),
            cooldown: config.cooldown_ms(),
            condition,
            config,
        })
    }
}

impl Rule {
    pub fn name(&self) -> &str {
        &self.config.name
    }

    pub fn group_by(&self) -> GroupBy {
        self.config.group_by
    }

    /// The key an alert of this rule carries: `group:value` (`subject:<ref>`, `incident:<id>`).
    pub fn alert_key(&self, value: &str) -> String {
        format!("{}:{value}", self.group_by().as_str())
    }

    /// The first side of a sequence or absence rule.
    pub fn is_first(&self, e: &Event) -> bool {
        match &self.condition {
            Condition::Sequence { first, .. } | Condition::Absence { first, .. } => {
                first.matches(e)
            }
            _ => false,
        }
    }

    /// The second side of a sequence or absence rule.
    pub fn is_then(&self, e: &Event) -> bool {
        match &self.condition {
            Condition::Sequence { then, .. } | Condition::Absence { then, .. } => then.matches(e),
            _ => false,
        }
    }

    /// Does the event belong in this rule's state at all?
    pub fn admits(&self, e: &Event) -> bool {
        self.config.filter.matches(e)
            && match self.condition {
                Condition::Sequence { .. } | Condition::Absence { .. } => {
                    self.is_first(e) || self.is_then(e)
                }
                _ => true,
            }
    }

    /// Is an admitted event evidence of an episode it falls in? (An absence's members are
    /// its `first` incidents; a sequence's either side.)
    pub fn is_member(&self, e: &Event) -> bool {
        match self.condition {
            Condition::Absence { .. } => self.is_first(e),
            _ => true,
        }
    }

    /// How far behind the watermark a key's events must be kept.
    pub fn horizon(&self) -> i64 {
        // A lookback absence is explained by a `then` up to a window *before* its `first`:
        // that far back must stay held too.
        let back = match self.condition {
            Condition::Absence { lookback: true, .. } => self.window,
            _ => 0,
        };
        self.cooldown + self.window + back
    }
}

/// Checks a rule set: each rule, and that names are unique.
/// A rules file: `[[rules]]` tables, as `process.rules_file` names.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    rules: Vec<RuleConfig>,
}

/// The rules of a rules file's text; the error names the table and field at fault.
pub fn parse_rules_file(text: &str) -> Result<Vec<RuleConfig>, String> {
    toml::from_str::<RulesFile>(text)
        .map(|f| f.rules)
        .map_err(|e| e.to_string())
}

/// A duration in the largest whole unit (`72 h`, `90 min`, `45 s`).
fn span(secs: u64) -> String {
    match secs {
        0 => "0 s".into(),
        s if s % 86_400 == 0 && s >= 7 * 86_400 => format!("{} days", s / 86_400),
        s if s % 3_600 == 0 => format!("{} h", s / 3_600),
        s if s % 60 == 0 => format!("{} min", s / 60),
        s => format!("{s} s"),
    }
}

/// A filter in words ("incidents" when it matches everything).
fn filter_words(f: &Filter) -> String {
    let mut parts: Vec<String> = Vec::new();
    if f.watchlist_hit {
        parts.push("watch-list hits".into());
    }
    if let Some(d) = f.direction {
        parts.push(format!("{} reports", d.as_str().to_lowercase()));
    }
    if f.at_crossing {
        parts.push("at a border crossing".into());
    }
    if !f.categories.is_empty() {
        let c: Vec<&str> = f.categories.iter().map(|c| c.as_str()).collect();
        parts.push(format!("of category {}", c.join(" or ")));
    }
    if let Some(l) = f.min_level {
        parts.push(format!("of level {} or above", l.as_str()));
    }
    if f.min_score > 0 {
        parts.push(format!("scoring {} or more", f.min_score));
    }
    if !f.states.is_empty() {
        parts.push(format!("from {}", f.states.join(" or ")));
    }
    if !f.areas.is_empty() {
        parts.push(format!("in area {}", f.areas.join(" or ")));
    }
    if parts.is_empty() {
        "incidents".into()
    } else {
        format!("incidents ({})", parts.join(", "))
    }
}

/// What a rule does, in a sentence or two (for `ewn rules check`).
pub fn explain(r: &RuleConfig) -> String {
    let per = match r.group_by {
        GroupBy::Incident => String::new(),
        g => format!(" for the same {}", g.as_str()),
    };
    let within = span(r.window_secs);
    let what = filter_words(&r.filter);
    let first = r.first.as_ref().map_or_else(|| what.clone(), filter_words);
    let then = r.then.as_ref().map_or_else(|| what.clone(), filter_words);
    let body = match r.kind {
        RuleKind::Threshold if r.group_by == GroupBy::Incident => {
            format!("each of the {what}, at once")
        }
        RuleKind::Threshold => format!("{} or more {what}{per} within {within}", r.count),
        RuleKind::Distinct => format!(
            "{what} from {} or more distinct {}{per} within {within}",
            r.count,
            r.distinct.map_or("values", |d| match d {
                DistinctField::State => "states",
                DistinctField::Area => "areas",
                DistinctField::Crossing => "crossings",
                DistinctField::Category => "categories",
                DistinctField::Agency => "agencies",
            }),
        ),
        RuleKind::Sequence => {
            format!("{first}, then (later in event time) {then}{per} within {within}")
        }
        RuleKind::Absence => format!(
            "{first} with no {then}{per} within {within} after it{}; decided once event \
             time has passed the window",
            if r.lookback { " (or before it)" } else { "" }
        ),
    };
    let cooldown = r.cooldown_secs.unwrap_or(r.window_secs);
    let mut text = format!(
        "{} ({}, {}): an alert on {body}.",
        r.name,
        match r.kind {
            RuleKind::Threshold => "threshold",
            RuleKind::Distinct => "distinct",
            RuleKind::Sequence => "sequence",
            RuleKind::Absence => "absence",
        },
        r.level.as_str()
    );
    if r.group_by != GroupBy::Incident && cooldown > 0 {
        text.push_str(&format!(
            " Later evidence within {} of the window start updates it (UPDATE).",
            span(cooldown)
        ));
    }
    if !r.named_agencies.is_empty() {
        text.push_str(&format!(
            " AMBER+STRICT and RED alerts only to {}.",
            r.named_agencies.join(", ")
        ));
    }
    if !r.enabled {
        text.push_str(" Disabled.");
    }
    text
}

pub fn problems(rules: &[RuleConfig]) -> Vec<String> {
    let mut p: Vec<String> = rules
        .iter()
        .enumerate()
        .flat_map(|(i, r)| r.problems(i))
        .collect();
    let mut seen = HashSet::new();
    for r in rules {
        if !seen.insert(&r.name) {
            p.push(format!(
                "process.rules: the name `{}` is used twice",
                r.name
            ));
        }
    }
    p
}

/// The default rule set (also written out in `deploy/config/rules.default.toml`).
pub fn default_rules() -> Vec<RuleConfig> {
    let base = RuleConfig::new;
    vec![
        // The same subject reported by two or more states within 72 h.
        RuleConfig {
            count: 2,
            distinct: Some(DistinctField::State),
            ..base(
                "cross_border_movement",
                RuleKind::Distinct,
                GroupBy::Subject,
                72 * 3600,
                Level::High,
            )
        },
        // Five or more incidents of level MEDIUM or above in one area within 1 h.
        RuleConfig {
            count: 5,
            filter: Filter {
                min_level: Some(Level::Medium),
                ..Filter::default()
            },
            ..base(
                "area_burst",
                RuleKind::Threshold,
                GroupBy::Area,
                3600,
                Level::High,
            )
        },
        // Any watch-list hit, at once.
        RuleConfig {
            filter: Filter {
                watchlist_hit: true,
                ..Filter::default()
            },
            ..base(
                "watchlist_hit",
                RuleKind::Threshold,
                GroupBy::Incident,
                0,
                Level::High,
            )
        },
        // An exit at a crossing with no entry anywhere within 24 h.
        RuleConfig {
            first: Some(Filter {
                direction: Some(Direction::Exit),
                at_crossing: true,
                ..Filter::default()
            }),
            then: Some(Filter {
                direction: Some(Direction::Entry),
                ..Filter::default()
            }),
            lookback: true,
            ..base(
                "exit_without_entry",
                RuleKind::Absence,
                GroupBy::Subject,
                24 * 3600,
                Level::Medium,
            )
        },
        // A foreign-terrorist-fighter returnee sighting: HIGH at least.
        RuleConfig {
            filter: Filter {
                categories: vec![Category::FtfReturnee],
                ..Filter::default()
            },
            ..base(
                "ftf_returnee",
                RuleKind::Threshold,
                GroupBy::Incident,
                0,
                Level::High,
            )
        },
    ]
}

/// An example `sequence` rule outside the default set, for tests and examples of the kind:
/// a weapons seizure, then a suspicious crossing of the same subject, within an hour.
pub fn seizure_then_crossing() -> RuleConfig {
    RuleConfig {
        first: Some(Filter {
            categories: vec![Category::WeaponsSeizure],
            ..Filter::default()
        }),
        then: Some(Filter {
            categories: vec![Category::SuspiciousCrossing],
            ..Filter::default()
        }),
        ..RuleConfig::new(
            "seizure_then_crossing",
            RuleKind::Sequence,
            GroupBy::Subject,
            3600,
            Level::High,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert_eq!(problems(&default_rules()), Vec::<String>::new());
    }

    #[test]
    fn default_rules_file_matches_the_built_in_set() {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct File {
            rules: Vec<RuleConfig>,
        }
        let text = include_str!("../../../deploy/config/rules.default.toml");
        let file: File = toml::from_str(text).unwrap();
        assert_eq!(file.rules, default_rules());
    }

    #[test]
    fn problems_name_rule_and_key() {
        let mut r = default_rules();
        r[0].distinct = None;
        r[1].count = 0;
        r[2].window_secs = 60;
        r.push(r[3].clone());
        let p = problems(&r).join("\n");
        assert!(
            p.contains("process.rules[0] (cross_border_movement).distinct"),
            "{p}"
        );
        assert!(p.contains("process.rules[1] (area_burst).count"), "{p}");
        assert!(
            p.contains("process.rules[2] (watchlist_hit): group_by"),
            "{p}"
        );
        assert!(p.contains("`exit_without_entry` is used twice"), "{p}");
    }
}
