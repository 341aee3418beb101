//! Alert texts in the desks' languages: one Project Fluent catalogue per language
//! (`crates/ewn-fanout/i18n/<tag>.ftl`, compiled in), from which CAP writes one `info`
//! block per configured language (`fanout.languages`).
//!
//! A catalogue that does not parse, or lacks a message of [`REQUIRED`] or an event name or
//! instruction of a default rule ([`DEFAULT_RULES`]), stops the fan-out at start: a desk
//! must never receive a blank or half-translated warning at send time. A rule outside the
//! default set uses `event-generic` (its name, humanised) and `instruction-generic`.

use ewn_model::{Alert, Level, MsgType};
use fluent_bundle::concurrent::FluentBundle;
use fluent_bundle::{FluentArgs, FluentResource};
use unic_langid::LanguageIdentifier;

/// The catalogues compiled in, by CAP language tag (RFC 3066, as CAP's `language` asks).
const CATALOGUES: [(&str, &str); 2] = [
    ("en-US", include_str!("../i18n/en-US.ftl")),
    ("ru-RU", include_str!("../i18n/ru-RU.ftl")),
];

/// Messages every catalogue must hold.
pub const REQUIRED: [&str; 13] = [
    "level-LOW",
    "level-MEDIUM",
    "level-HIGH",
    "level-CRITICAL",
    "headline",
    "headline-update",
    "headline-cancel",
    "description-summary",
    "description-reasons",
    "description-incidents",
    "description-states",
    "event-generic",
    "instruction-generic",
];

/// The default rules (`ewn_processor::rules::default_rules`), whose event name and
/// instruction every catalogue must hold.
pub const DEFAULT_RULES: [&str; 5] = [
    "cross_border_movement",
    "area_burst",
    "watchlist_hit",
    "exit_without_entry",
    "ftf_returnee",
];

/// The language tags with a compiled-in catalogue.
pub fn available() -> impl Iterator<Item = &'static str> {
    CATALOGUES.iter().map(|(tag, _)| *tag)
}

/// The configured languages' catalogues, checked complete.
pub struct Catalogue {
    bundles: Vec<(String, FluentBundle<FluentResource>)>,
}

impl std::fmt::Debug for Catalogue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.bundles.iter().map(|(tag, _)| tag))
            .finish()
    }
}

impl Catalogue {
    /// Loads and checks the catalogues of `languages` (in that order: the first is the
    /// CAP document's first `info`). Every problem is reported, each naming the language
    /// and the message.
    pub fn load(languages: &[String]) -> Result<Catalogue, Vec<String>> {
        let mut problems = Vec::new();
        let mut bundles = Vec::new();
        if languages.is_empty() {
            problems.push("fanout.languages: at least one language is required".into());
        }
        for (i, tag) in languages.iter().enumerate() {
            if languages[..i].contains(tag) {
                problems.push(format!("fanout.languages: `{tag}` is listed twice"));
                continue;
            }
            let Some((_, source)) = CATALOGUES.iter().find(|(t, _)| t == tag) else {
                problems.push(format!(
                    "fanout.languages: no catalogue for `{tag}` (available: {})",
                    available().collect::<Vec<_>>().join(", ")
                ));
                continue;
            };
            match bundle(tag, source) {
                Ok(b) => {
                    let missing = missing_messages(&b);
                    if missing.is_empty() {
                        bundles.push((tag.clone(), b));
                    } else {
                        problems.push(format!(
                            "catalogue {tag}: missing message(s) {}",
                            missing.join(", ")
                        ));
                    }
                }
                Err(e) => problems.push(format!("catalogue {tag}: {e}")),
            }
        }
        if problems.is_empty() {
            Ok(Catalogue { bundles })
        } else {
            Err(problems)
        }
    }

    /// The configured language tags, in order.
    pub fn languages(&self) -> impl Iterator<Item = &str> {
        self.bundles.iter().map(|(tag, _)| tag.as_str())
    }

    /// The texts of one language. `None` for a tag that is not configured.
    pub fn texts(&self, tag: &str) -> Option<Texts<'_>> {
        self.bundles
            .iter()
            .find(|(t, _)| t == tag)
            .map(|(_, bundle)| Texts { bundle })
    }
}

/// One language's messages, formatted (not escaped: the caller escapes for its format).
pub struct Texts<'a> {
    bundle: &'a FluentBundle<FluentResource>,
}

impl Texts<'_> {
    /// Message `id` with `args` (string values). A message checked at load cannot be
    /// missing; should one be (a bug), its id is returned, never an empty text.
    pub fn get(&self, id: &str, args: &[(&str, &str)]) -> String {
        let Some(pattern) = self.bundle.get_message(id).and_then(|m| m.value()) else {
            return id.to_string();
        };
        let mut fargs = FluentArgs::new();
        for (k, v) in args {
            fargs.set(*k, *v);
        }
        let mut errors = Vec::new();
        self.bundle
            .format_pattern(pattern, Some(&fargs), &mut errors)
            .into_owned()
    }

    /// Whether the catalogue has message `id` (a rule's own event name or instruction).
    pub fn has(&self, id: &str) -> bool {
        self.bundle.has_message(id)
    }

    /// The rule's event name: its own message for a default rule, otherwise the rule's
    /// name humanised (`my_rule` -> "My rule") through `event-generic`.
    pub fn event(&self, rule: &str) -> String {
        let own = format!("event-{rule}");
        if self.has(&own) {
            return self.get(&own, &[]);
        }
        self.get("event-generic", &[("rule", &humanise(rule))])
    }

    pub fn level(&self, level: Level) -> String {
        self.get(&format!("level-{}", level.as_str()), &[])
    }

    /// "HIGH: Cross-border movement (score 61)", prefixed for an update, shortened for a
    /// cancel.
    pub fn headline(&self, alert: &Alert, event: &str) -> String {
        let level = self.level(alert.level);
        let score = alert.score.to_string();
        let args = [
            ("level", level.as_str()),
            ("event", event),
            ("score", score.as_str()),
        ];
        match alert.msg_type {
            MsgType::Alert => self.get("headline", &args),
            MsgType::Update => self.get("headline-update", &args),
            MsgType::Cancel => self.get("headline-cancel", &args),
        }
    }

    /// The description's first line: rule, level and score.
    pub fn summary(&self, alert: &Alert) -> String {
        let level = self.level(alert.level);
        let score = alert.score.to_string();
        self.get(
            "description-summary",
            &[("rule", &alert.rule), ("level", &level), ("score", &score)],
        )
    }

    /// The rule's own instruction, or `instruction-generic`.
    pub fn instruction(&self, rule: &str) -> String {
        let own = format!("instruction-{rule}");
        if self.has(&own) {
            self.get(&own, &[])
        } else {
            self.get("instruction-generic", &[])
        }
    }
}

/// Headline and event text are for a person scanning a list; CAP advises headlines under 160
/// characters, so the rule's part is cut well before.
pub(crate) const EVENT_MAX_CHARS: usize = 80;

/// A rule's name for people: `_` as space, first letter upper case, cut at
/// [`EVENT_MAX_CHARS`] characters; "EWN alert" for a name with nothing printable.
pub(crate) fn humanise(rule: &str) -> String {
    let mut out = String::new();
    let mut written = 0;
    for c in rule.chars().filter(|c| !crate::cap::is_dropped(*c)) {
        if written == EVENT_MAX_CHARS {
            out.push('…');
            return out;
        }
        let c = if c == '_' { ' ' } else { c };
        if written == 0 {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        written += 1;
    }
    if written == 0 {
        out.push_str("EWN alert");
    }
    out
}

fn bundle(tag: &str, source: &str) -> Result<FluentBundle<FluentResource>, String> {
    let lang: LanguageIdentifier = tag
        .parse()
        .map_err(|_| format!("`{tag}` is not a language tag"))?;
    let resource = FluentResource::try_new(source.to_string())
        .map_err(|(_, errors)| format!("does not parse ({} error(s))", errors.len()))?;
    let mut bundle = FluentBundle::new_concurrent(vec![lang]);
    // No Unicode isolation marks around placeables: the texts go into XML and JSON fields
    // whose readers lay them out themselves.
    bundle.set_use_isolating(false);
    bundle
        .add_resource(resource)
        .map_err(|errors| format!("{} duplicate message(s)", errors.len()))?;
    Ok(bundle)
}

fn missing_messages(bundle: &FluentBundle<FluentResource>) -> Vec<String> {
    let rule_messages = DEFAULT_RULES
        .iter()
        .flat_map(|r| [format!("event-{r}"), format!("instruction-{r}")]);
    REQUIRED
        .iter()
        .map(|m| m.to_string())
        .chain(rule_messages)
        .filter(|m| {
            bundle
                .get_message(m)
                .is_none_or(|msg| msg.value().is_none())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn langs(tags: &[&str]) -> Vec<String> {
        tags.iter().map(|t| t.to_string()).collect()
    }

    #[test]
    fn english_and_russian_are_complete() {
        let c = Catalogue::load(&langs(&["en-US", "ru-RU"])).unwrap();
        assert_eq!(c.languages().collect::<Vec<_>>(), ["en-US", "ru-RU"]);
        let ru = c.texts("ru-RU").unwrap();
        assert_eq!(
            ru.get(
                "headline",
                &[
                    ("level", "ВЫСОКИЙ"),
                    ("event", "Выезд без въезда"),
                    ("score", "61")
                ]
            ),
            "ВЫСОКИЙ: Выезд без въезда (оценка 61)"
        );
        assert_eq!(
            c.texts("en-US").unwrap().get("event-watchlist_hit", &[]),
            "Watch-list hit"
        );
    }

    #[test]
    fn unknown_duplicate_and_incomplete_catalogues_are_refused_at_load() {
        let e = Catalogue::load(&langs(&["en-US", "kk-KZ", "en-US"])).unwrap_err();
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e[0].contains("no catalogue for `kk-KZ`"), "{e:?}");
        assert!(e[1].contains("listed twice"), "{e:?}");
        assert!(Catalogue::load(&[]).is_err());
        let partial = bundle("en-US", "headline = x\nlevel-LOW = low\n").unwrap();
        let missing = missing_messages(&partial);
        assert!(missing.contains(&"level-HIGH".to_string()));
        assert!(missing.contains(&"instruction-ftf_returnee".to_string()));
        assert!(!missing.contains(&"headline".to_string()));
    }

    #[test]
    fn every_compiled_catalogue_has_the_same_messages() {
        for (tag, source) in CATALOGUES {
            let b = bundle(tag, source).unwrap();
            assert!(
                missing_messages(&b).is_empty(),
                "{tag}: {:?}",
                missing_messages(&b)
            );
        }
    }
}
