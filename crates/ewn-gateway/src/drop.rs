//! File-drop intake, for posts whose terminals can only write files.
//!
//! `gateway.drop.dir` holds one subdirectory per post, named by its post id. A terminal
//! writes a file under a name that does not end in `.jsonl` (or starts with a dot) and
//! renames it to `*.jsonl` when complete: a rename is atomic, so the gateway only ever
//! sees whole files. Every `poll_interval_ms` the gateway takes each `*.jsonl` file (in name
//! order), checks and signs its lines exactly as the HTTP intake does, spools the valid
//! ones, and moves the file to `done/` (every line accepted) or `rejected/` (some line was
//! not), with `<name>.report.json` beside it: line by line what was accepted and what was
//! rejected and why. The valid lines of a rejected file are accepted all the same, as
//! `ewn publish` does; resend only the rejected lines, fixed.
//!
//! Crash safety: the file's identity (post, name, size, modification time) and its report
//! are stored in the spool in the same transaction as its lines, so a file whose lines were
//! spooled but which was not yet moved is only moved on the next pass, never spooled again.
//! A file that does not fit in the spool's budget stays where it is and is tried again.

use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, UNIX_EPOCH};

use ewn_ops::http::Health;
use serde_json::json;

use crate::error::{Error, Result};
use crate::intake::{Appended, Intake, SpoolWriter, is_post_id};
use crate::metrics::GatewayMetrics;
use crate::spool::Spool;

pub struct FileDrop {
    pub dir: PathBuf,
    pub interval: Duration,
    pub intake: Arc<Intake>,
    pub writer: SpoolWriter,
    pub spool: Spool,
    pub metrics: GatewayMetrics,
    pub health: Arc<Health>,
    pub shutdown: Arc<AtomicBool>,
    /// Larger files are rejected whole, unread.
    pub max_file_bytes: u64,
}

/// The post subdirectories of a drop directory (created if missing).
pub fn posts(dir: &Path) -> Result<Vec<String>> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|source| Error::Io {
        path: dir.to_path_buf(),
        source,
    })? {
        let Ok(entry) = entry else { continue };
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.file_type().is_ok_and(|t| t.is_dir()) && is_post_id(&name) {
            out.push(name);
        }
    }
    out.sort();
    Ok(out)
}

impl FileDrop {
    pub fn run(mut self) {
        let _span = tracing::info_span!("gateway", stage = "file_drop").entered();
        while !self.shutdown.load(Ordering::Relaxed) {
            self.health.beat("file_drop");
            if let Err(e) = self.scan() {
                tracing::warn!(error = %e, "file-drop scan failed");
            }
            let next = Instant::now() + self.interval;
            while Instant::now() < next && !self.shutdown.load(Ordering::Relaxed) {
                std::thread::sleep(
                    next.saturating_duration_since(Instant::now())
                        .min(Duration::from_millis(100)),
                );
            }
        }
    }

    /// One pass over every post's directory.
    pub fn scan(&mut self) -> Result<()> {
        for post in posts(&self.dir)? {
            let dir = self.dir.join(&post);
            let mut files: Vec<String> = match std::fs::read_dir(&dir) {
                Ok(entries) => entries
                    .filter_map(|e| e.ok())
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.ends_with(".jsonl") && !n.starts_with('.'))
                    .collect(),
                Err(_) => continue,
            };
            files.sort();
            for name in files {
                if self.shutdown.load(Ordering::Relaxed) {
                    return Ok(());
                }
                if let Err(e) = self.take(&post, &dir, &name) {
                    tracing::warn!(error = %e, post = %post, "a dropped file could not be handled");
                }
            }
        }
        Ok(())
    }

    fn take(&mut self, post: &str, dir: &Path, name: &str) -> Result<()> {
        let path = dir.join(name);
        let io = |source| Error::Io {
            path: path.clone(),
            source,
        };
        let meta = std::fs::metadata(&path).map_err(io)?;
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        let marker = format!("{post}/{name}:{}:{mtime}", meta.len());
        let report = match self.spool.drop_report(&marker)? {
            Some(report) => report,
            None => {
                let (report, records, mut prepared) = if meta.len() > self.max_file_bytes {
                    let report = json!({
                        "file": name, "post": post, "accepted": 0, "rejected": 0,
                        "error": format!("the file is larger than {} bytes and was not read: split it", self.max_file_bytes),
                    });
                    (report, Vec::new(), None)
                } else {
                    let file = std::fs::File::open(&path).map_err(io)?;
                    let mut prepared = self
                        .intake
                        .prepare_reader(post, BufReader::with_capacity(256 * 1024, file))?;
                    let records = std::mem::take(&mut prepared.records);
                    (report_of(name, post, &prepared), records, Some(prepared))
                };
                let n = records.len() as u64;
                let invalid = report["rejected"].as_u64().unwrap_or(0);
                let text = serde_json::to_string_pretty(&report).unwrap_or_default();
                match self.writer.append_blocking(
                    post,
                    records,
                    Some((marker.clone(), text.clone())),
                ) {
                    Appended::Stored(fates) => {
                        let m = &self.metrics.intake;
                        match prepared.as_mut() {
                            // The report beside the file says which lines were sent before
                            // (the copy kept with the marker, for a crash, does not).
                            Some(p) => {
                                p.settle(&fates);
                                let (accepted, duplicate, rejected) = p.counts();
                                m.with_label_values(&["file", "accepted"]).inc_by(accepted);
                                m.with_label_values(&["file", "duplicate"])
                                    .inc_by(duplicate);
                                m.with_label_values(&["file", "invalid"]).inc_by(rejected);
                                serde_json::to_string_pretty(&report_of(name, post, p))
                                    .unwrap_or_default()
                            }
                            None => {
                                m.with_label_values(&["file", "accepted"]).inc_by(n);
                                m.with_label_values(&["file", "invalid"]).inc_by(invalid);
                                text
                            }
                        }
                    }
                    Appended::Full(reason) => {
                        self.metrics
                            .intake
                            .with_label_values(&["file", "spool_full"])
                            .inc_by(n);
                        tracing::warn!(post, %reason, "a dropped file waits for room in the spool");
                        return Ok(());
                    }
                    Appended::Failed(reason) => {
                        self.metrics
                            .intake
                            .with_label_values(&["file", "error"])
                            .inc_by(n);
                        return Err(Error::Stopped(reason));
                    }
                }
            }
        };
        let clean = serde_json::from_str::<serde_json::Value>(&report)
            .is_ok_and(|r| r["rejected"].as_u64() == Some(0) && r.get("error").is_none());
        let outcome = if clean { "done" } else { "rejected" };
        let to_dir = dir.join(outcome);
        std::fs::create_dir_all(&to_dir).map_err(|source| Error::Io {
            path: to_dir.clone(),
            source,
        })?;
        let mut target = to_dir.join(name);
        if target.exists() {
            target = to_dir.join(format!(
                "{}-{name}",
                chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ")
            ));
        }
        let target_name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let report_path = to_dir.join(format!("{target_name}.report.json"));
        let tmp = to_dir.join(format!(".{target_name}.report.json.tmp"));
        std::fs::write(&tmp, report.as_bytes()).map_err(|source| Error::Io {
            path: tmp.clone(),
            source,
        })?;
        std::fs::rename(&tmp, &report_path).map_err(|source| Error::Io {
            path: report_path.clone(),
            source,
        })?;
        std::fs::rename(&path, &target).map_err(io)?;
        self.spool.forget_drop(&marker)?;
        self.metrics.drop_files.with_label_values(&[outcome]).inc();
        tracing::info!(post, outcome, "dropped file handled");
        Ok(())
    }
}

/// The report written beside a dropped file: its lines' counts and results.
fn report_of(name: &str, post: &str, p: &crate::intake::Prepared) -> serde_json::Value {
    let (accepted, duplicate, rejected) = p.counts();
    json!({
        "file": name, "post": post, "accepted": accepted, "duplicate": duplicate,
        "rejected": rejected, "results": p.results,
    })
}
