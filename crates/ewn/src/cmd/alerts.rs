//! `ewn alerts list|show|ack`: a desk's alerts from the terminal, through the fan-out's own
//! API with the desk's token, so the fan-out's rules decide everything: which alerts the
//! desk sees and in which form (its clearance, redaction: the live stream's `event_for`),
//! and who may acknowledge (`POST /api/v1/alerts/{id}/ack`). `list` and `show` read the
//! live stream's backlog (`?history=N`, up to the fan-out's comment marking its end);
//! `--follow` keeps reading, resuming with `Last-Event-ID` when the stream ends.
//!
//! The token comes from a file (mode 0600) or `EWN_DESK_TOKEN`, never from a flag that
//! lands in shell history, and is never printed or logged.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use chrono::DateTime;
use serde_json::{Value, json};

use crate::cmd::remote::{base_url, bearer_token};
use crate::cmd::trust::print_table;

/// The environment variable a desk token may come from.
pub const TOKEN_ENV: &str = "EWN_DESK_TOKEN";

/// The most alerts the fan-out sends as backlog.
const MAX_HISTORY: usize = 500;

#[derive(clap::Args, Debug)]
#[command(after_help = "\
The desk token comes from --token-file (mode 0600) or the EWN_DESK_TOKEN environment \
variable; it is never taken as a flag value, printed or logged.

Examples:
  ewn alerts --url https://fanout.example:8080 --token-file ~/.ewn/desk.token list
  EWN_DESK_TOKEN=$(pass ewn/desk) ewn alerts list --level HIGH --since 6h --format table
  ewn alerts list --follow --format json | jq -r .alert_id
  ewn alerts show 3f9c0d...
  ewn alerts ack 3f9c0d... --note 'border post informed'

Exit codes: 0 done, 1 nothing matched (show: no such alert visible to this desk; ack: \
refused), 2 it could not run (no token, fan-out unreachable, token refused, bad input).")]
pub struct Args {
    /// Base URL of the fan-out's API (fanout.listen).
    #[arg(
        long,
        global = true,
        value_name = "URL",
        default_value = "http://127.0.0.1:8080"
    )]
    pub url: String,
    /// File holding the desk's bearer token (mode 0600).
    #[arg(long, global = true, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Sub,
}

#[derive(clap::Subcommand, Debug)]
pub enum Sub {
    /// List the alerts this desk may see, from the live stream's backlog; --follow keeps
    /// printing new ones.
    #[command(after_help = "\
Filters combine (all must hold). --level is a minimum. --since takes an RFC 3339 time or \
a duration back from now (90s, 30m, 6h, 2d) and compares the alert's created_at.

Examples:
  ewn alerts list --format table
  ewn alerts list --level HIGH --rule cross_border_movement --state KG
  ewn alerts list --unacked --since 2h
  ewn alerts list --follow --history 0

Exit codes: 0 listed (none matching is not an error), 2 it could not run.")]
    List {
        #[command(flatten)]
        filter: Filter,
        /// How many of the most recent alerts to ask the fan-out for (at most 500).
        #[arg(long, value_name = "N", default_value_t = MAX_HISTORY)]
        history: usize,
        /// Keep reading the live stream and print new alerts as they arrive (Ctrl-C stops).
        #[arg(long)]
        follow: bool,
        /// `table` for people, `json` one object a line, `pretty` the same indented.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Print one alert in full, as this desk may see it (its reasons and evidence).
    #[command(after_help = "\
Examples:
  ewn alerts show 3f9c0d...
  ewn alerts show 3f9c0d... --format json | jq .reasons

Exit codes: 0 shown, 1 no such alert among the last 500 this desk may see, 2 it could not \
run.")]
    Show {
        alert_id: String,
        /// `pretty` (indented JSON), or `json` on one line.
        #[arg(long, value_enum, default_value_t = Format::Pretty)]
        format: Format,
    },
    /// Acknowledge an alert (and so its episode); only a recipient cleared for it in full
    /// may. Prints the fan-out's answer.
    #[command(after_help = "\
Examples:
  ewn alerts ack 3f9c0d...
  ewn alerts ack 3f9c0d... --actor 'duty officer 2' --note 'border post informed'

Exit codes: 0 acknowledged, 1 refused by the fan-out (not an alert this desk may \
acknowledge), 2 it could not run.")]
    Ack {
        alert_id: String,
        /// Who acknowledges (default: the desk's name).
        #[arg(long)]
        actor: Option<String>,
        /// A note kept with the acknowledgement (at most 1000 characters).
        #[arg(long)]
        note: Option<String>,
    },
}

#[derive(clap::Args, Debug, Default, Clone)]
pub struct Filter {
    /// Only alerts at or above this level (LOW, MEDIUM, HIGH, CRITICAL).
    #[arg(long, value_name = "LEVEL", value_parser = parse_level)]
    pub level: Option<usize>,
    /// Only alerts of this rule (repeatable).
    #[arg(long, value_name = "RULE")]
    pub rule: Vec<String>,
    /// Only alerts naming this member state (ISO 3166-1 alpha-2).
    #[arg(long, value_name = "CC")]
    pub state: Option<String>,
    /// Only alerts created at or after this time (RFC 3339, or 90s, 30m, 6h, 2d ago).
    #[arg(long, value_name = "WHEN", value_parser = crate::cmd::parse_since)]
    pub since: Option<i64>,
    /// Only alerts already acknowledged.
    #[arg(long, conflicts_with = "unacked")]
    pub acked: bool,
    /// Only alerts not yet acknowledged.
    #[arg(long)]
    pub unacked: bool,
    /// Only messages of this type (ALERT, UPDATE, CANCEL).
    #[arg(long, value_name = "TYPE", value_parser = parse_msg_type)]
    pub msg_type: Option<String>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
    Pretty,
}

const LEVELS: [&str; 4] = ["LOW", "MEDIUM", "HIGH", "CRITICAL"];

fn parse_level(s: &str) -> Result<usize, String> {
    let up = s.to_ascii_uppercase();
    LEVELS
        .iter()
        .position(|l| *l == up)
        .ok_or_else(|| format!("`{s}`: one of LOW, MEDIUM, HIGH, CRITICAL"))
}

fn parse_msg_type(s: &str) -> Result<String, String> {
    let up = s.to_ascii_uppercase();
    match up.as_str() {
        "ALERT" | "UPDATE" | "CANCEL" => Ok(up),
        _ => Err(format!("`{s}`: one of ALERT, UPDATE, CANCEL")),
    }
}

impl Filter {
    fn matches(&self, a: &Value) -> bool {
        let level_ok = self.level.is_none_or(|min| {
            a["level"]
                .as_str()
                .and_then(|l| LEVELS.iter().position(|x| *x == l))
                .is_some_and(|l| l >= min)
        });
        let rule_ok =
            self.rule.is_empty() || self.rule.iter().any(|r| a["rule"].as_str() == Some(r));
        let state_ok = self.state.as_deref().is_none_or(|s| {
            a["states"]
                .as_array()
                .is_some_and(|states| states.iter().any(|x| x.as_str() == Some(s)))
        });
        let since_ok = self.since.is_none_or(|since| {
            a["created_at"]
                .as_str()
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .is_some_and(|t| t.timestamp_millis() >= since)
        });
        let acked = a["acked"].as_bool().unwrap_or(false);
        let ack_ok = (!self.acked || acked) && (!self.unacked || !acked);
        let type_ok = self
            .msg_type
            .as_deref()
            .is_none_or(|t| a["msg_type"].as_str() == Some(t));
        level_ok && rule_ok && state_ok && since_ok && ack_ok && type_ok
    }
}

/// What an error answer says: its `error` field, or its status.
async fn refusal(r: reqwest::Response) -> String {
    let status = r.status();
    let body = r.text().await.unwrap_or_default();
    let why = serde_json::from_str::<Value>(&body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_string))
        .unwrap_or_default();
    format!("{status}{}{why}", if why.is_empty() { "" } else { ": " })
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let base = base_url(&args.url)?;
    // The desk token: `--token-file` (a secret file, mode 0600) or `EWN_DESK_TOKEN`.
    let token = bearer_token(args.token_file.as_deref(), TOKEN_ENV, "desk token")?;
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .build()?;
    match args.command {
        Sub::List {
            filter,
            history,
            follow,
            format,
        } => {
            if history > MAX_HISTORY {
                bail!("--history {history}: at most {MAX_HISTORY}");
            }
            if let Some(s) = &filter.state
                && !ewn_model::validate::is_state_code(&s.to_ascii_uppercase())
            {
                bail!("--state `{s}` is not an ISO 3166-1 alpha-2 code");
            }
            let filter = Filter {
                state: filter.state.map(|s| s.to_ascii_uppercase()),
                ..filter
            };
            list(&client, &base, &token, &filter, history, follow, format).await
        }
        Sub::Show { alert_id, format } => {
            let mut found = None;
            let mut stream = Stream::open(&client, &base, &token, MAX_HISTORY, None).await?;
            while let Some(item) = stream.next().await? {
                match item {
                    Item::Alert(a) if a["alert_id"].as_str() == Some(alert_id.as_str()) => {
                        found = Some(a)
                    }
                    Item::Alert(_) | Item::Gap => {}
                    Item::BacklogEnd => break,
                }
            }
            match found {
                Some(a) => {
                    print_alert(&a, format);
                    Ok(ExitCode::SUCCESS)
                }
                None => {
                    eprintln!(
                        "no alert `{}` among the last {MAX_HISTORY} this desk may see",
                        ewn_model::validate::printable(&alert_id)
                    );
                    Ok(ExitCode::from(1))
                }
            }
        }
        Sub::Ack {
            alert_id,
            actor,
            note,
        } => ack(&client, &base, &token, &alert_id, actor, note).await,
    }
}

async fn ack(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    alert_id: &str,
    actor: Option<String>,
    note: Option<String>,
) -> anyhow::Result<ExitCode> {
    if alert_id.is_empty()
        || alert_id.len() > 128
        || !alert_id.bytes().all(|b| b.is_ascii_graphic())
    {
        bail!("alert id: 1..128 printable ASCII characters");
    }
    let mut url = reqwest::Url::parse(base)?;
    url.path_segments_mut()
        .map_err(|()| anyhow::anyhow!("--url `{base}` cannot take a path"))?
        .extend(["api", "v1", "alerts", alert_id, "ack"]);
    let mut body = serde_json::Map::new();
    if let Some(a) = actor {
        body.insert("actor".into(), json!(a));
    }
    if let Some(n) = note {
        body.insert("note".into(), json!(n));
    }
    let r = client
        .post(url)
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(Value::Object(body).to_string())
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .with_context(|| format!("cannot reach the fan-out at {base}"))?;
    let status = r.status();
    if status.is_success() {
        let answer: Value = r.json().await.context("the fan-out's answer")?;
        println!(
            "{}",
            json!({"status": status.as_u16(), "alert_id": answer["alert_id"], "acked_at": answer["acked_at"]})
        );
        return Ok(ExitCode::SUCCESS);
    }
    let why = refusal(r).await;
    match status.as_u16() {
        401 => bail!("the fan-out refused the token: {why}"),
        403 | 404 => {
            eprintln!("not acknowledged: {why}");
            Ok(ExitCode::from(1))
        }
        _ => bail!("not acknowledged: {why}"),
    }
}

#[allow(clippy::too_many_arguments)]
async fn list(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    filter: &Filter,
    history: usize,
    follow: bool,
    format: Format,
) -> anyhow::Result<ExitCode> {
    let mut stream = Stream::open(client, base, token, history, None).await?;
    let mut backlog = Vec::new();
    // The backlog first, gathered so a table can size its columns.
    while let Some(item) = stream.next().await? {
        match item {
            Item::Alert(a) => {
                if filter.matches(&a) {
                    backlog.push(a);
                }
            }
            Item::Gap => eprintln!("warning: the fan-out no longer holds some earlier alerts"),
            Item::BacklogEnd => break,
        }
    }
    match format {
        Format::Table => {
            let rows: Vec<[String; 8]> = backlog.iter().map(row).collect();
            print_table(&HEADER, &rows);
        }
        _ => backlog.iter().for_each(|a| print_alert(a, format)),
    }
    if !follow {
        return Ok(ExitCode::SUCCESS);
    }
    loop {
        match stream.next().await {
            Ok(Some(Item::Alert(a))) => {
                if filter.matches(&a) {
                    match format {
                        Format::Table => print_table(&HEADER, &[row(&a)]),
                        _ => print_alert(&a, format),
                    }
                }
            }
            Ok(Some(Item::Gap)) => {
                eprintln!("warning: the fan-out no longer holds some alerts since the last one")
            }
            Ok(Some(Item::BacklogEnd)) => {}
            // The server ended the stream (a restart, or a reader too slow): resume after
            // the last event seen, as an EventSource does.
            Ok(None) | Err(_) => {
                let last = stream.parser.last_event_id.clone();
                tokio::time::sleep(Duration::from_secs(1)).await;
                match Stream::open(client, base, token, 0, last.clone()).await {
                    Ok(s) => stream = s,
                    // A token or desk refused is final; anything else is retried.
                    Err(e) if e.is::<Refused>() => return Err(e),
                    Err(e) => {
                        eprintln!("warning: reconnecting: {e:#}");
                        stream.parser.last_event_id = last;
                    }
                }
            }
        }
    }
}

const HEADER: [&str; 8] = [
    "ALERT_ID",
    "TYPE",
    "LEVEL",
    "SCORE",
    "RULE",
    "STATES",
    "CREATED_AT",
    "ACKED",
];

fn row(a: &Value) -> [String; 8] {
    let s = |k: &str| a[k].as_str().unwrap_or("-").to_string();
    let states: Vec<&str> = a["states"]
        .as_array()
        .map(|v| v.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    [
        s("alert_id"),
        s("msg_type"),
        s("level"),
        a["score"].to_string(),
        s("rule"),
        if states.is_empty() {
            "-".to_string()
        } else {
            states.join(",")
        },
        s("created_at"),
        match a["acked"].as_bool() {
            Some(true) => "yes".to_string(),
            _ => "no".to_string(),
        },
    ]
}

fn print_alert(a: &Value, format: Format) {
    match format {
        Format::Json => println!("{a}"),
        Format::Pretty | Format::Table => {
            println!("{}", serde_json::to_string_pretty(a).unwrap_or_default())
        }
    }
}

/// The fan-out refused the token or the desk: retrying will not help.
#[derive(Debug)]
struct Refused(String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

/// One thing read from the stream.
enum Item {
    Alert(Value),
    Gap,
    BacklogEnd,
}

/// A server-sent-events reader over one response.
struct Stream {
    response: reqwest::Response,
    buf: Vec<u8>,
    parser: Parser,
}

/// The event-stream format, line by line (WHATWG HTML, "server-sent events").
#[derive(Default)]
struct Parser {
    event: String,
    data: String,
    id: Option<String>,
    /// The id of the last complete event, for `Last-Event-ID` on reconnecting.
    last_event_id: Option<String>,
}

impl Stream {
    async fn open(
        client: &reqwest::Client,
        base: &str,
        token: &str,
        history: usize,
        last_event_id: Option<String>,
    ) -> anyhow::Result<Stream> {
        let mut req = client
            .get(format!("{base}/api/v1/stream?history={history}"))
            .bearer_auth(token)
            .header("accept", "text/event-stream");
        if let Some(id) = &last_event_id {
            req = req.header("last-event-id", id.as_str());
        }
        let response = req
            .send()
            .await
            .with_context(|| format!("cannot reach the fan-out at {base}"))?;
        let status = response.status();
        if !status.is_success() {
            let why = refusal(response).await;
            match status.as_u16() {
                401 => return Err(Refused(format!("the fan-out refused the token: {why}")).into()),
                403 => return Err(Refused(format!("the fan-out refused this desk: {why}")).into()),
                _ => bail!("the fan-out's stream answered {why}"),
            }
        }
        Ok(Stream {
            response,
            buf: Vec::new(),
            parser: Parser {
                last_event_id,
                ..Parser::default()
            },
        })
    }

    /// The next alert, gap or backlog end; `None` when the server ended the stream.
    async fn next(&mut self) -> anyhow::Result<Option<Item>> {
        loop {
            while let Some(end) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=end).collect();
                let line = String::from_utf8_lossy(&line);
                let line = line.trim_end_matches(['\n', '\r']);
                if let Some(item) = self.parser.line(line)? {
                    return Ok(Some(item));
                }
            }
            match self.response.chunk().await.context("reading the stream")? {
                Some(bytes) => self.buf.extend_from_slice(&bytes),
                None => return Ok(None),
            }
        }
    }
}

impl Parser {
    /// One line of the event-stream format; an item when a line completes one.
    fn line(&mut self, line: &str) -> anyhow::Result<Option<Item>> {
        if line.is_empty() {
            let event = std::mem::take(&mut self.event);
            let data = std::mem::take(&mut self.data);
            if let Some(id) = self.id.take() {
                self.last_event_id = Some(id);
            }
            return Ok(match event.as_str() {
                "alert" => Some(Item::Alert(
                    serde_json::from_str(&data).context("an alert event that is not JSON")?,
                )),
                "gap" => Some(Item::Gap),
                _ => None,
            });
        }
        if let Some(comment) = line.strip_prefix(':') {
            return Ok((comment.trim() == ewn_fanout::BACKLOG_END).then_some(Item::BacklogEnd));
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => self.event = value.to_string(),
            "data" => {
                if !self.data.is_empty() {
                    self.data.push('\n');
                }
                self.data.push_str(value);
            }
            "id" => self.id = Some(value.to_string()),
            _ => {}
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_are_named() {
        assert!(parse_level("medium").is_ok_and(|l| l == 1));
        assert!(parse_level("urgent").is_err());
    }

    #[test]
    fn filters_combine() {
        let a = json!({"alert_id": "a", "msg_type": "ALERT", "level": "HIGH", "rule": "r1",
                       "states": ["KG", "KZ"], "created_at": "2027-01-01T00:00:00.000Z",
                       "acked": false});
        assert!(Filter::default().matches(&a));
        let f = Filter {
            level: Some(2),
            rule: vec!["r1".into()],
            state: Some("KG".into()),
            since: Some(1_798_761_600_000),
            unacked: true,
            ..Filter::default()
        };
        assert!(f.matches(&a));
        for wrong in [
            Filter {
                level: Some(3),
                ..Filter::default()
            },
            Filter {
                rule: vec!["r2".into()],
                ..Filter::default()
            },
            Filter {
                state: Some("TJ".into()),
                ..Filter::default()
            },
            Filter {
                since: Some(1_798_761_600_001),
                ..Filter::default()
            },
            Filter {
                acked: true,
                ..Filter::default()
            },
            Filter {
                msg_type: Some("CANCEL".into()),
                ..Filter::default()
            },
        ] {
            assert!(!wrong.matches(&a), "{wrong:?}");
        }
    }

    #[test]
    fn the_event_stream_is_parsed_with_ids_and_the_backlog_marker() {
        let mut s = Parser::default();
        assert!(s.line("event: alert").unwrap().is_none());
        assert!(s.line("id: 0:5").unwrap().is_none());
        assert!(s.line("data: {\"alert_id\":\"x\"}").unwrap().is_none());
        assert!(matches!(s.line("").unwrap(), Some(Item::Alert(a)) if a["alert_id"] == "x"));
        assert_eq!(s.last_event_id.as_deref(), Some("0:5"));
        assert!(s.line(":").unwrap().is_none(), "keep-alive");
        assert!(matches!(
            s.line(": backlog-end").unwrap(),
            Some(Item::BacklogEnd)
        ));
    }
}
