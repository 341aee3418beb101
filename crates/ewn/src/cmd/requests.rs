//! `ewn requests`: case requests end to end. A desk asks the fan-out (`create`); the
//! originating state's operators list, approve or decline at their gateway (`list`,
//! `approve`, `decline`); the requesting agency opens the reply with its X25519 key
//! (`open`), which alone can read it. `keygen` makes that key.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ewn_model::validate::printable;
use ewn_model::{AvroRecord, CaseDecision, CaseResponse};
use ewn_trust::TrustStore;
use ewn_trust::case::{AgencySecret, SealedAnswer, verify_response_bytes};
use serde_json::{Value, json};

use crate::cli::Global;
use crate::cmd::now_ms;
use crate::cmd::remote::{base_url, bearer_token};

/// The environment variable a desk token may come from (as `ewn alerts`).
pub const DESK_TOKEN_ENV: &str = crate::cmd::alerts::TOKEN_ENV;
/// The environment variable a gateway operator's token may come from.
pub const OPERATOR_TOKEN_ENV: &str = "EWN_OPERATOR_TOKEN";

#[derive(clap::Args, Debug)]
#[command(after_help = "\
Tokens come from --token-file (mode 0600) or the environment (EWN_DESK_TOKEN for create, \
EWN_OPERATOR_TOKEN for list/approve/decline); never from a flag value.

Examples:
  ewn requests keygen --secret-out rcc.key --public-out rcc.pub
  ewn trust add --trust-store trust.toml --key-id rcc-2027 --role agency --agency RCC --public-key rcc.pub
  ewn requests create --url http://127.0.0.1:8080 --token-file desk.token ALERT_ID \\
      --incident 3f2b1c4d-... --justification 'watch-list hit' --legal-basis 'Art. 7'
  ewn requests list --url http://127.0.0.1:8090 --token-file operator.token
  ewn requests approve --url http://127.0.0.1:8090 --token-file operator.token REQUEST_ID
  ewn requests decline --url http://127.0.0.1:8090 --token-file operator.token REQUEST_ID --reason 'no legal basis'
  ewn requests open REQUEST_ID --alert ALERT_ID --incident 3f2b1c4d-... --key rcc.key --trust-store trust.toml

Exit codes: 0 done, 1 refused (the service said no; open: declined, or not for this key), \
2 it could not run.")]
pub struct Args {
    #[command(subcommand)]
    pub command: Sub,
}

#[derive(clap::Args, Debug)]
pub struct Remote {
    /// Base URL of the service (create: the fan-out's API; list/approve/decline: the
    /// gateway's listener).
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// File holding the bearer token (mode 0600).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
}

#[derive(clap::Subcommand, Debug)]
pub enum Sub {
    /// Make an agency's X25519 key pair: the secret (mode 0600) opens replies, the public
    /// half goes in the trust store (`ewn trust add --role agency`).
    Keygen {
        #[arg(long, value_name = "FILE")]
        secret_out: PathBuf,
        #[arg(long, value_name = "FILE")]
        public_out: PathBuf,
    },
    /// As a desk: ask the originating state for the details of one incident of an alert
    /// this desk received.
    Create {
        #[command(flatten)]
        remote: Remote,
        alert_id: String,
        /// The incident (its id, as the alert's evidence names it).
        #[arg(long, value_name = "UUID")]
        incident: String,
        #[arg(long)]
        justification: String,
        #[arg(long)]
        legal_basis: String,
    },
    /// As a gateway operator: the requests waiting for a decision (--all: every one held).
    List {
        #[command(flatten)]
        remote: Remote,
        #[arg(long)]
        all: bool,
    },
    /// As a gateway operator: send the raw details, encrypted to the requesting agency.
    Approve {
        #[command(flatten)]
        remote: Remote,
        request_id: String,
    },
    /// As a gateway operator: refuse, with a reason the requester reads.
    Decline {
        #[command(flatten)]
        remote: Remote,
        request_id: String,
        #[arg(long)]
        reason: String,
    },
    /// As the requesting agency: verify the state's signature on the reply and decrypt it.
    /// RESPONSE is a file holding the CaseResponse record (raw, hex or base64), or a
    /// request id to look for on `<prefix>responses`. The reply names neither the alert nor
    /// the incident (every desk reads that topic): give them as `create` answered them; the
    /// sealed answer opens only for those.
    Open {
        response: String,
        /// The alert the request was about (`alert_id` of `create`'s answer).
        #[arg(long, value_name = "ALERT_ID")]
        alert: String,
        /// The incident asked for (`incident_id` of `create`'s answer).
        #[arg(long, value_name = "UUID")]
        incident: String,
        /// The agency's X25519 secret key (`ewn requests keygen`).
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// Trust store holding the state's key (trust.trust_store).
        #[arg(long, value_name = "FILE")]
        trust_store: Option<PathBuf>,
        /// How long to wait for the reply on the topic.
        #[arg(long, value_name = "SECS", default_value_t = 30)]
        wait_secs: u64,
        /// Log the opening as an audit record (`case_opened`) on `<prefix>audit`, signed
        /// with this key (PKCS#8 PEM; a trust-store key of role `service`, service `desk`).
        #[arg(long, value_name = "FILE", requires = "audit_key_id")]
        audit_signing_key: Option<PathBuf>,
        /// The key id of --audit-signing-key.
        #[arg(long, value_name = "ID", requires = "audit_signing_key")]
        audit_key_id: Option<String>,
    },
}

fn path_part(s: &str, what: &str) -> anyhow::Result<String> {
    if s.is_empty()
        || s.len() > 128
        || !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    {
        bail!("{what}: 1..128 characters of A-Z a-z 0-9 - _ .");
    }
    Ok(s.to_string())
}

/// One call to a service's API: what `ewn requests` sends, and `ewn demo` too.
#[derive(Debug, Clone)]
pub struct Call {
    pub method: reqwest::Method,
    pub path: String,
    pub body: Option<Value>,
}

/// `create`: a desk's request at the fan-out, about one incident of an alert it received.
pub fn create_call(
    alert_id: &str,
    incident: &str,
    justification: &str,
    legal_basis: &str,
) -> anyhow::Result<Call> {
    let alert = path_part(alert_id, "ALERT_ID")?;
    Ok(Call {
        method: reqwest::Method::POST,
        path: format!("/api/v1/alerts/{alert}/requests"),
        body: Some(json!({
            "incident_id": incident,
            "justification": justification,
            "legal_basis": legal_basis,
        })),
    })
}

/// `list`: the requests a gateway holds (pending ones, or every one with `all`).
pub fn list_call(all: bool) -> Call {
    Call {
        method: reqwest::Method::GET,
        path: format!("/api/v1/requests{}", if all { "?all=true" } else { "" }),
        body: None,
    }
}

/// `approve`: an operator's approval at the gateway.
pub fn approve_call(request_id: &str) -> anyhow::Result<Call> {
    let id = path_part(request_id, "REQUEST_ID")?;
    Ok(Call {
        method: reqwest::Method::POST,
        path: format!("/api/v1/requests/{id}/approve"),
        body: None,
    })
}

/// `decline`: an operator's refusal at the gateway, with its reason.
pub fn decline_call(request_id: &str, reason: &str) -> anyhow::Result<Call> {
    let id = path_part(request_id, "REQUEST_ID")?;
    Ok(Call {
        method: reqwest::Method::POST,
        path: format!("/api/v1/requests/{id}/decline"),
        body: Some(json!({ "reason": reason })),
    })
}

/// Sends `call` to the service at `url` with bearer `token`: the status and the JSON
/// answer (`Null` when the body is not JSON). A refused token is an error.
pub async fn send(
    url: &str,
    token: &str,
    call: Call,
) -> anyhow::Result<(reqwest::StatusCode, Value)> {
    let base = base_url(url)?;
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(60))
        .build()?;
    let mut req = client
        .request(call.method, format!("{base}{}", call.path))
        .bearer_auth(token);
    if let Some(b) = call.body {
        req = req.json(&b);
    }
    let resp = req
        .send()
        .await
        .with_context(|| format!("{base}: unreachable"))?;
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    if status == reqwest::StatusCode::UNAUTHORIZED {
        bail!("{status}: the token was refused")
    }
    Ok((status, value))
}

/// Sends one request; prints the JSON answer; 0 on success, 1 when refused.
async fn call(remote: &Remote, env: &str, call: Call) -> anyhow::Result<ExitCode> {
    let token = bearer_token(remote.token_file.as_deref(), env, "token")?;
    let (status, value) = send(&remote.url, &token, call).await?;
    if status.is_success() {
        println!("{value}");
        Ok(ExitCode::SUCCESS)
    } else {
        let why = value["reason"]
            .as_str()
            .or(value["error"].as_str())
            .unwrap_or("");
        eprintln!("refused: {status}: {why}");
        Ok(ExitCode::from(1))
    }
}

pub async fn run(global: &Global, args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        Sub::Keygen {
            secret_out,
            public_out,
        } => {
            let key = AgencySecret::generate();
            key.save(&secret_out)?;
            std::fs::write(&public_out, format!("{}\n", B64.encode(key.public_key())))
                .with_context(|| format!("{}", public_out.display()))?;
            println!(
                "wrote the agency's secret key to {} (mode 0600) and its public key to {}",
                secret_out.display(),
                public_out.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Sub::Create {
            remote,
            alert_id,
            incident,
            justification,
            legal_basis,
        } => {
            let c = create_call(&alert_id, &incident, &justification, &legal_basis)?;
            call(&remote, DESK_TOKEN_ENV, c).await
        }
        Sub::List { remote, all } => call(&remote, OPERATOR_TOKEN_ENV, list_call(all)).await,
        Sub::Approve { remote, request_id } => {
            call(&remote, OPERATOR_TOKEN_ENV, approve_call(&request_id)?).await
        }
        Sub::Decline {
            remote,
            request_id,
            reason,
        } => {
            call(
                &remote,
                OPERATOR_TOKEN_ENV,
                decline_call(&request_id, &reason)?,
            )
            .await
        }
        Sub::Open {
            response,
            alert,
            incident,
            key,
            trust_store,
            wait_secs,
            audit_signing_key,
            audit_key_id,
        } => {
            let extra = trust_store
                .as_ref()
                .map(|p| ("trust.trust_store".to_string(), p.display().to_string()));
            let settings = global.settings(extra.into_iter().collect())?;
            let Some(store_path) = settings.trust.trust_store.clone() else {
                bail!(
                    "--trust-store FILE (or trust.trust_store) is needed to check the state's signature"
                );
            };
            let store = TrustStore::load(&store_path)?;
            let secret = AgencySecret::load(&key).context("--key")?;
            let auditor = match (audit_signing_key, audit_key_id) {
                (Some(path), Some(id)) => Some(ewn_trust::audit::AuditSigner::new(
                    id,
                    "desk",
                    ewn_trust::keys::load_signing_key(&path).context("--audit-signing-key")?,
                )),
                _ => None,
            };
            let bytes = tokio::task::block_in_place(|| {
                find_response(&settings.kafka, &response, Duration::from_secs(wait_secs))
            })?;
            let (out, reply) = open_reply(&store, &secret, &bytes, &alert, &incident)?;
            println!("{out}");
            let code = match reply.decision {
                CaseDecision::Approve => ExitCode::SUCCESS,
                CaseDecision::Decline => ExitCode::from(1),
            };
            if let Some(signer) = auditor
                && code == ExitCode::SUCCESS
            {
                log_opened(&settings.kafka, &signer, &reply, &bytes).await?;
            }
            Ok(code)
        }
    }
}

/// The reply's record as the topic holds it: from a file, or from `<prefix>responses` by
/// request id (waiting for it). Blocking: it reads the topic.
pub fn find_response(
    kafka: &ewn_kafka::KafkaSettings,
    response: &str,
    wait: Duration,
) -> anyhow::Result<Vec<u8>> {
    let path = Path::new(response);
    if path.is_file() {
        let bytes = std::fs::read(path).with_context(|| format!("{response}: cannot read"))?;
        let bytes = if bytes.starts_with(&[0xc3, 0x01]) {
            bytes
        } else {
            let text = String::from_utf8_lossy(&bytes).trim().to_string();
            hex::decode(&text)
                .ok()
                .or_else(|| B64.decode(&text).ok())
                .ok_or_else(|| {
                    anyhow::anyhow!("{response}: neither a record nor its hex or base64")
                })?
        };
        CaseResponse::from_avro(&bytes)
            .map_err(|e| anyhow::anyhow!("{response}: not a CaseResponse record: {e}"))?;
        return Ok(bytes);
    }
    let topic = ewn_kafka::Topics::new(&kafka.topic_prefix).responses();
    let deadline = std::time::Instant::now() + wait;
    loop {
        let records = crate::cmd::audit::read_all(
            kafka,
            "case responses",
            |t| t == topic,
            Duration::from_secs(30),
        )?;
        // The last answer to the request, if the state answered more than once.
        let found = records.iter().rev().find(|r| {
            CaseResponse::from_avro(&r.value).is_ok_and(|reply| reply.request_id == response)
        });
        if let Some(r) = found {
            return Ok(r.value.clone());
        }
        if std::time::Instant::now() >= deadline {
            bail!("no reply to request {} on {topic} yet", printable(response));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Writes the `case_opened` audit record of an opened reply and waits for the broker.
async fn log_opened(
    kafka: &ewn_kafka::KafkaSettings,
    signer: &ewn_trust::audit::AuditSigner,
    reply: &CaseResponse,
    bytes: &[u8],
) -> anyhow::Result<()> {
    use sha2::Digest;
    let now = now_ms();
    let record = ewn_model::AuditRecord {
        record_id: hex::encode(sha2::Sha256::digest(
            format!("{}/{}/{now}", reply.request_id, signer.key_id()).as_bytes(),
        ))[..32]
            .to_string(),
        service: String::new(),
        instance_id: "ewn-requests-open".into(),
        actor: reply.agency.clone(),
        action: "case_opened".into(),
        // The request, not the alert or incident: the audit log is read at any clearance.
        object: reply.request_id.clone(),
        at: now,
        before_sha256: None,
        after_sha256: Some(hex::encode(sha2::Sha256::digest(bytes))),
        detail: Some(format!(
            "request {} state {}",
            reply.request_id, reply.state
        )),
        key_id: String::new(),
        signed_at: 0,
        signature: [0; 64],
    };
    let value = ewn_trust::audit::sign_record(signer, record, now)?.to_avro()?;
    let producer = ewn_kafka::ConfirmingProducer::new(kafka, "requests-open", (), None)?;
    let topic = ewn_kafka::Topics::new(&kafka.topic_prefix).audit();
    producer
        .send_async(&topic, Some(reply.request_id.as_bytes()), Some(&value))
        .await?
        .await
        .map_err(|e| anyhow::anyhow!("the case_opened audit record was not confirmed: {e}"))?;
    eprintln!("logged case_opened on {topic}");
    Ok(())
}

/// Verifies the reply's record (whichever schema version wrote it) and opens its sealed
/// answer for the alert and incident its request named; returns what to print (one JSON
/// object: decision, reason or details) and the reply. `ewn demo` opens its reply so too.
pub fn open_reply(
    store: &TrustStore,
    secret: &AgencySecret,
    bytes: &[u8],
    alert_id: &str,
    incident_id: &str,
) -> anyhow::Result<(Value, CaseResponse)> {
    let (reply, key) = verify_response_bytes(store, bytes, now_ms(), 60_000)
        .map_err(|why| anyhow::anyhow!("the reply's signature is refused: {why}"))?;
    let mut out = json!({
        "request_id": reply.request_id,
        "alert_id": alert_id,
        "incident_id": incident_id,
        "state": reply.state,
        "signed_by": key.key_id,
        "decision": reply.decision.as_str(),
        "decided_by": reply.decided_by,
    });
    if reply.ciphertext.is_none() && reply.decision == CaseDecision::Decline {
        // Declined to an agency the state held no key of (or written by version 1 of the
        // schema, whose clear reason the current one no longer reads): no reason to show.
        out["reason"] = Value::Null;
        return Ok((out, reply));
    }
    let answer = SealedAnswer::open(secret, &reply, alert_id, incident_id)
        .map_err(|why| anyhow::anyhow!("{why}"))?;
    match reply.decision {
        CaseDecision::Decline => out["reason"] = json!(answer.reason),
        CaseDecision::Approve => out["details"] = json!(answer.details),
    }
    Ok((out, reply))
}
