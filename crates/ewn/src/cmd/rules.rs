//! `ewn rules check FILE` validates a rules file and explains each rule in words;
//! `ewn rules test FILE` runs rule fixtures (incidents in, expected alerts out) through the
//! real scoring and correlation engine, as `promtool test rules` does for Prometheus.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use ewn_model::validate::Limits;
use ewn_model::{Alert, Incident, Level, MsgType};
use ewn_processor::correlate::EngineSettings;
use ewn_processor::rules::{RuleConfig, default_rules, explain, parse_rules_file, problems};
use ewn_processor::score::ScoreWeights;
use ewn_trust::BlindingKey;
use serde::Deserialize;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub command: Sub,
}

#[derive(clap::Subcommand, Debug)]
pub enum Sub {
    /// Validate a rules file (`[[rules]]` tables, as `process.rules_file` names) and explain
    /// each rule in words.
    #[command(after_help = "\
Examples:
  ewn rules check deploy/config/rules.default.toml
  ewn rules check my-rules.toml --quiet && echo valid

Exit codes: 0 valid, 1 the file has problems (each printed, naming the rule and field), \
2 the file cannot be read.")]
    Check {
        file: PathBuf,
        /// Print nothing when the file is valid.
        #[arg(long)]
        quiet: bool,
    },
    /// Run rule fixtures: each case's incidents (the JSON-lines input of `ewn publish`,
    /// with `reported_at`) through the real engine, its alerts against the expected ones.
    #[command(after_help = "\
A fixtures file (TOML):

  rules_file = \"rules.default.toml\"   # relative to this file; omitted: the built-in rules
  lateness_secs = 300                  # the engine's allowed lateness (default 300)

  [[cases]]
  name = \"one subject seen in two states\"
  incidents = '''
  {\"incident_id\": \"...\", \"reported_at\": \"2026-11-20T08:00:00Z\", ...}
  {...}
  '''                                  # or incidents_file = \"case.jsonl\"
  [[cases.expect]]
  rule = \"cross_border_movement\"
  msg_type = \"ALERT\"                   # default ALERT
  count = 1                            # default 1: exactly this many
  level = \"HIGH\"                       # optional
  states = [\"KG\", \"KZ\"]                # optional: exactly these states

Every (rule, message type) a case raises must be expected, unless the case sets \
`other_alerts = \"ignore\"`. Subjects are blinded with a fixed test key, so the same raw id \
is the same subject across a case. Incidents arrive in the order given, at their \
`reported_at`; at the end the clock moves past every window.

Examples:
  ewn rules test deploy/config/rules.default.test.toml

Exit codes: 0 every case passed, 1 a case failed (each difference printed), 2 the \
fixtures or the rules cannot be read.")]
    Test { file: PathBuf },
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        Sub::Check { file, quiet } => check(&file, quiet),
        Sub::Test { file } => test(&file),
    }
}

fn read_rules(file: &Path) -> anyhow::Result<Vec<RuleConfig>> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    parse_rules_file(&text).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))
}

fn check(file: &Path, quiet: bool) -> anyhow::Result<ExitCode> {
    let rules = read_rules(file)?;
    let found = problems(&rules);
    if !found.is_empty() {
        for p in &found {
            println!("{}: {p}", file.display());
        }
        return Ok(ExitCode::from(1));
    }
    if !quiet {
        for r in &rules {
            println!("{}\n", explain(r));
        }
        println!("{}: {} rules, valid", file.display(), rules.len());
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Fixtures {
    rules_file: Option<PathBuf>,
    #[serde(default = "default_lateness")]
    lateness_secs: u64,
    cases: Vec<Case>,
}

fn default_lateness() -> u64 {
    300
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    incidents: Option<String>,
    incidents_file: Option<PathBuf>,
    #[serde(default)]
    expect: Vec<Expect>,
    #[serde(default)]
    other_alerts: Others,
}

#[derive(Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum Others {
    #[default]
    Fail,
    Ignore,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    rule: String,
    #[serde(default = "alert_type")]
    msg_type: MsgType,
    #[serde(default = "one")]
    count: usize,
    level: Option<Level>,
    states: Option<Vec<String>>,
}

fn alert_type() -> MsgType {
    MsgType::Alert
}

fn one() -> usize {
    1
}

impl Expect {
    fn matches(&self, a: &Alert) -> bool {
        a.rule == self.rule
            && a.msg_type == self.msg_type
            && self.level.is_none_or(|l| a.level == l)
            && self.states.as_ref().is_none_or(|s| {
                let mut want = s.clone();
                want.sort();
                let mut got = a.states.clone();
                got.sort();
                want == got
            })
    }

    fn describe(&self) -> String {
        let mut d = format!("{} {}", self.rule, self.msg_type.as_str());
        if let Some(l) = self.level {
            d.push_str(&format!(" level {}", l.as_str()));
        }
        if let Some(s) = &self.states {
            d.push_str(&format!(" states {s:?}"));
        }
        d
    }
}

/// The fixed blinding key of fixtures: refs are only compared within a run.
const FIXTURE_BLINDING: [u8; 32] = [0x5e; 32];

/// A case's incidents, parsed and validated as `ewn publish` does.
fn incidents_of(case: &Case, base: &Path) -> anyhow::Result<Vec<Incident>> {
    let text = match (&case.incidents, &case.incidents_file) {
        (Some(t), None) => t.clone(),
        (None, Some(f)) => {
            let path = base.join(f);
            std::fs::read_to_string(&path)
                .with_context(|| format!("case `{}`: cannot read {}", case.name, path.display()))?
        }
        _ => bail!(
            "case `{}`: give exactly one of `incidents` and `incidents_file`",
            case.name
        ),
    };
    let blinding = BlindingKey::from_bytes(FIXTURE_BLINDING);
    let limits = Limits::default();
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line_no = n + 1;
        if line.trim().is_empty() {
            continue;
        }
        let raw: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("case `{}`, line {line_no}: not JSON", case.name))?;
        if raw.get("reported_at").is_none() {
            bail!(
                "case `{}`, line {line_no}: `reported_at` is required in fixtures (it is \
                 when the engine sees the incident)",
                case.name
            );
        }
        match ewn_gateway::parse_incident(line, line_no, &blinding, &limits, 0) {
            Ok(i) => out.push(i),
            Err(errors) => {
                let why: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
                bail!("case `{}`: {}", case.name, why.join("; "));
            }
        }
    }
    Ok(out)
}

fn test(file: &Path) -> anyhow::Result<ExitCode> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let fixtures: Fixtures =
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    let base = file.parent().unwrap_or(Path::new("."));
    let rules = match &fixtures.rules_file {
        Some(r) => read_rules(&base.join(r))?,
        None => default_rules(),
    };
    let found = problems(&rules);
    if !found.is_empty() {
        bail!("the rules under test have problems: {}", found.join("; "));
    }
    let settings = EngineSettings::with_lateness(fixtures.lateness_secs as i64 * 1000);
    let mut failed = 0;
    for case in &fixtures.cases {
        let incidents = incidents_of(case, base)?;
        let alerts = ewn_processor::offline::run(
            rules.clone(),
            ScoreWeights::default(),
            settings.clone(),
            &incidents,
        )
        .map_err(|p| anyhow::anyhow!("the rules under test: {}", p.join("; ")))?;
        let differences = compare(case, &alerts);
        if differences.is_empty() {
            println!("ok      {} ({} alerts)", case.name, alerts.len());
        } else {
            failed += 1;
            println!("FAILED  {}", case.name);
            for d in differences {
                println!("        {d}");
            }
        }
    }
    println!(
        "{} cases, {} passed, {failed} failed",
        fixtures.cases.len(),
        fixtures.cases.len() - failed
    );
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// What differs between a case's expectations and the alerts raised.
fn compare(case: &Case, alerts: &[Alert]) -> Vec<String> {
    let mut out = Vec::new();
    for e in &case.expect {
        let got = alerts.iter().filter(|a| e.matches(a)).count();
        if got != e.count {
            out.push(format!(
                "expected {} x {}, got {got}",
                e.count,
                e.describe()
            ));
        }
    }
    if case.other_alerts == Others::Fail {
        let mut unexpected: BTreeMap<(String, &str), usize> = BTreeMap::new();
        for a in alerts {
            if !case
                .expect
                .iter()
                .any(|e| e.rule == a.rule && e.msg_type == a.msg_type)
            {
                *unexpected
                    .entry((a.rule.clone(), a.msg_type.as_str()))
                    .or_default() += 1;
            }
        }
        for ((rule, msg_type), n) in unexpected {
            out.push(format!("unexpected: {n} x {rule} {msg_type}"));
        }
    }
    out
}
