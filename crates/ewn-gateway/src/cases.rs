//! The gateway's case store: the raw details of the reports it signed, kept locally (never
//! on Kafka) for case requests, and the requests it received with their outcome.
//!
//! One SQLite file (`gateway.details.path`, mode 0600, WAL, full syncs) of two tables:
//!
//! - `details`: per incident id, the report's line as the post sent it (raw identifiers
//!   before blinding), written by the spool writer once the report is synced to the spool.
//!   Erased when older than `gateway.details.retention_secs` ([`CaseStore::erase_expired`],
//!   run every `erase_interval_secs` by the clock the gateway is given). Bounded by
//!   `max_reports` and `max_bytes`: a report that would pass either bound erases the oldest
//!   details first (counted `ewn_gateway_details_erased_total{reason="bound"}`); intake is
//!   never refused for its details, since a report must never be lost for a courtesy.
//! - `requests`: each verified case request (its signed record), `pending` until an
//!   operator approves or declines it. At most `gateway.requests.max_pending` wait; past it
//!   a new request is not stored and is counted `over_bound` (the requester sees no answer
//!   and may ask again once the queue drains).

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use ewn_model::{AvroRecord, CaseRequest};
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::metrics::GatewayMetrics;

/// `[gateway.details]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetailsSettings {
    /// The SQLite file of raw details and case requests. None: no details are kept and case
    /// requests are not read.
    pub path: Option<PathBuf>,
    /// How long the raw details of a signed report are kept, then erased.
    pub retention_secs: u64,
    /// Most reports whose details are kept; past it the oldest are erased first.
    pub max_reports: u64,
    /// Most bytes of details kept; past it the oldest are erased first.
    pub max_bytes: u64,
    /// How often expired details are erased.
    pub erase_interval_secs: u64,
}

impl Default for DetailsSettings {
    fn default() -> Self {
        DetailsSettings {
            path: None,
            retention_secs: 30 * 86_400,
            max_reports: 1_000_000,
            max_bytes: 1 << 30,
            erase_interval_secs: 60,
        }
    }
}

impl DetailsSettings {
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.retention_secs == 0 {
            p.push("gateway.details.retention_secs: must be positive".into());
        }
        if self.max_reports == 0 || self.max_bytes == 0 {
            p.push("gateway.details: max_reports and max_bytes must be positive".into());
        }
        if self.erase_interval_secs == 0 {
            p.push("gateway.details.erase_interval_secs: must be positive".into());
        }
        p
    }
}

/// A request as the store holds it.
#[derive(Clone, Debug)]
pub struct StoredRequest {
    pub request: CaseRequest,
    pub received_ms: i64,
    /// `pending`, `approved` or `declined`.
    pub status: String,
    pub decided_ms: Option<i64>,
}

/// What became of a request offered to the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Offered {
    Stored,
    /// Already held (the topic delivered it again): unchanged.
    Known,
    /// `max_pending` requests wait already.
    OverBound,
}

pub struct CaseStore {
    conn: Mutex<Connection>,
    path: PathBuf,
    settings: DetailsSettings,
    max_pending: u64,
    metrics: GatewayMetrics,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS details (
    incident_id TEXT PRIMARY KEY,
    stored_ms INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    body BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS details_by_time ON details (stored_ms);
CREATE TABLE IF NOT EXISTS requests (
    request_id TEXT PRIMARY KEY,
    record BLOB NOT NULL,
    received_ms INTEGER NOT NULL,
    status TEXT NOT NULL,
    decided_ms INTEGER
);
CREATE INDEX IF NOT EXISTS requests_by_status ON requests (status, received_ms);
";

impl CaseStore {
    pub fn open(
        path: &Path,
        settings: DetailsSettings,
        max_pending: u64,
        metrics: GatewayMetrics,
    ) -> Result<CaseStore> {
        // Raw identifiers: owner-only, like a secret. secure_delete: erased details are
        // overwritten in the file, not only unlinked.
        let conn = crate::spool::open_private(path, "PRAGMA secure_delete = ON;", SCHEMA)?;
        metrics
            .details_bound_reports
            .set(settings.max_reports as i64);
        metrics.details_bound_bytes.set(settings.max_bytes as i64);
        metrics.case_requests_bound.set(max_pending as i64);
        let store = CaseStore {
            conn: Mutex::new(conn),
            path: path.to_path_buf(),
            settings,
            max_pending,
            metrics,
        };
        store.refresh_gauges()?;
        Ok(store)
    }

    fn err(&self) -> impl Fn(rusqlite::Error) -> Error + '_ {
        |e| Error::Spool {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn refresh_gauges(&self) -> Result<()> {
        let conn = self.conn();
        let (n, bytes): (i64, i64) = conn
            .query_row(
                "SELECT COUNT(*), COALESCE(SUM(bytes), 0) FROM details",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(self.err())?;
        let pending: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM requests WHERE status = 'pending'",
                [],
                |r| r.get(0),
            )
            .map_err(self.err())?;
        self.metrics.details_reports.set(n);
        self.metrics.details_bytes.set(bytes);
        self.metrics.case_requests_pending.set(pending);
        Ok(())
    }

    /// Keeps the raw details of reports just synced to the spool: (incident id, raw line).
    /// Past a bound, the oldest details are erased first.
    pub fn keep(&self, reports: &[(&str, &[u8])], now_ms: i64) -> Result<()> {
        if reports.is_empty() {
            return Ok(());
        }
        let bound_erased = {
            let mut conn = self.conn();
            let tx = conn.transaction().map_err(self.err())?;
            {
                let mut put = tx
                    .prepare_cached(
                        "INSERT OR REPLACE INTO details (incident_id, stored_ms, bytes, body)
                         VALUES (?1, ?2, ?3, ?4)",
                    )
                    .map_err(self.err())?;
                for (id, body) in reports {
                    put.execute(params![id, now_ms, body.len() as i64, body])
                        .map_err(self.err())?;
                }
            }
            // The bounds: erase the oldest until both hold.
            let mut erased = tx
                .execute(
                    "DELETE FROM details WHERE incident_id IN
                     (SELECT incident_id FROM details ORDER BY stored_ms DESC, incident_id
                      LIMIT -1 OFFSET ?1)",
                    params![self.settings.max_reports as i64],
                )
                .map_err(self.err())?;
            loop {
                let bytes: i64 = tx
                    .query_row("SELECT COALESCE(SUM(bytes), 0) FROM details", [], |r| {
                        r.get(0)
                    })
                    .map_err(self.err())?;
                if bytes as u64 <= self.settings.max_bytes {
                    break;
                }
                let n = tx
                    .execute(
                        "DELETE FROM details WHERE incident_id =
                         (SELECT incident_id FROM details ORDER BY stored_ms, incident_id LIMIT 1)",
                        [],
                    )
                    .map_err(self.err())?;
                if n == 0 {
                    break;
                }
                erased += n;
            }
            tx.commit().map_err(self.err())?;
            erased
        };
        if bound_erased > 0 {
            self.metrics
                .details_erased
                .with_label_values(&["bound"])
                .inc_by(bound_erased as u64);
            tracing::warn!(
                erased = bound_erased,
                "gateway.details bound reached: the oldest raw details were erased early"
            );
        }
        self.refresh_gauges()
    }

    /// Erases details older than the retention, judged at `now_ms`. Returns how many.
    pub fn erase_expired(&self, now_ms: i64) -> Result<usize> {
        let before =
            now_ms.saturating_sub((self.settings.retention_secs as i64).saturating_mul(1000));
        let n = self
            .conn()
            .execute("DELETE FROM details WHERE stored_ms < ?1", params![before])
            .map_err(self.err())?;
        if n > 0 {
            self.metrics
                .details_erased
                .with_label_values(&["retention"])
                .inc_by(n as u64);
        }
        self.refresh_gauges()?;
        Ok(n)
    }

    /// The raw details of `incident_id`, if still held.
    pub fn details(&self, incident_id: &str) -> Result<Option<Zeroizing<Vec<u8>>>> {
        let body: Option<Vec<u8>> = self
            .conn()
            .query_row(
                "SELECT body FROM details WHERE incident_id = ?1",
                params![incident_id],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.err())?;
        Ok(body.map(Zeroizing::new))
    }

    /// Stores a verified request as pending (once: a request delivered again is unchanged).
    pub fn offer(&self, request: &CaseRequest, now_ms: i64) -> Result<Offered> {
        let record = request.to_avro()?;
        let offered = {
            let conn = self.conn();
            let known: bool = conn
                .query_row(
                    "SELECT 1 FROM requests WHERE request_id = ?1",
                    params![request.request_id],
                    |_| Ok(true),
                )
                .optional()
                .map_err(self.err())?
                .unwrap_or(false);
            let pending: i64 = conn
                .query_row(
                    "SELECT COUNT(*) FROM requests WHERE status = 'pending'",
                    [],
                    |r| r.get(0),
                )
                .map_err(self.err())?;
            if known {
                Offered::Known
            } else if pending as u64 >= self.max_pending {
                Offered::OverBound
            } else {
                conn.execute(
                    "INSERT INTO requests (request_id, record, received_ms, status)
                     VALUES (?1, ?2, ?3, 'pending')",
                    params![request.request_id, record, now_ms],
                )
                .map_err(self.err())?;
                Offered::Stored
            }
        };
        self.refresh_gauges()?;
        Ok(offered)
    }

    /// Requests, the pending first (oldest first), then the decided (newest first); at most
    /// `limit`.
    pub fn list(&self, pending_only: bool, limit: usize) -> Result<Vec<StoredRequest>> {
        let conn = self.conn();
        let sql = if pending_only {
            "SELECT record, received_ms, status, decided_ms FROM requests
             WHERE status = 'pending' ORDER BY received_ms, request_id LIMIT ?1"
        } else {
            "SELECT record, received_ms, status, decided_ms FROM requests
             ORDER BY status != 'pending', CASE WHEN status = 'pending' THEN received_ms
             ELSE -decided_ms END, request_id LIMIT ?1"
        };
        let mut stmt = conn.prepare(sql).map_err(self.err())?;
        let rows = stmt
            .query_map(params![limit as i64], |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, Option<i64>>(3)?,
                ))
            })
            .map_err(self.err())?;
        let mut out = Vec::new();
        for row in rows {
            let (record, received_ms, status, decided_ms) = row.map_err(self.err())?;
            out.push(StoredRequest {
                request: CaseRequest::from_avro(&record)?,
                received_ms,
                status,
                decided_ms,
            });
        }
        Ok(out)
    }

    pub fn get(&self, request_id: &str) -> Result<Option<StoredRequest>> {
        let row: Option<(Vec<u8>, i64, String, Option<i64>)> = self
            .conn()
            .query_row(
                "SELECT record, received_ms, status, decided_ms FROM requests
                 WHERE request_id = ?1",
                params![request_id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()
            .map_err(self.err())?;
        row.map(|(record, received_ms, status, decided_ms)| {
            Ok(StoredRequest {
                request: CaseRequest::from_avro(&record)?,
                received_ms,
                status,
                decided_ms,
            })
        })
        .transpose()
    }

    /// Marks a pending request decided; false when it was not pending (decided meanwhile).
    pub fn decide(&self, request_id: &str, approved: bool, now_ms: i64) -> Result<bool> {
        let n = self
            .conn()
            .execute(
                "UPDATE requests SET status = ?2, decided_ms = ?3
                 WHERE request_id = ?1 AND status = 'pending'",
                params![
                    request_id,
                    if approved { "approved" } else { "declined" },
                    now_ms
                ],
            )
            .map_err(self.err())?;
        self.refresh_gauges()?;
        Ok(n == 1)
    }

    /// Puts a request back to pending (its answer could not be sent).
    pub fn reopen(&self, request_id: &str) -> Result<()> {
        self.conn()
            .execute(
                "UPDATE requests SET status = 'pending', decided_ms = NULL WHERE request_id = ?1",
                params![request_id],
            )
            .map_err(self.err())?;
        self.refresh_gauges()
    }

    pub fn erase_interval(&self) -> Duration {
        Duration::from_secs(self.settings.erase_interval_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(dir: &Path, settings: DetailsSettings) -> (CaseStore, GatewayMetrics) {
        let registry = prometheus::Registry::new();
        let metrics = GatewayMetrics::register(&registry, []).unwrap();
        (
            CaseStore::open(&dir.join("cases.db"), settings, 2, metrics.clone()).unwrap(),
            metrics,
        )
    }

    #[test]
    fn details_are_erased_after_the_retention_by_the_clock_given() {
        let dir = tempfile::tempdir().unwrap();
        let settings = DetailsSettings {
            retention_secs: 60,
            ..DetailsSettings::default()
        };
        let (store, metrics) = store(dir.path(), settings);
        let t0 = 1_790_000_000_000;
        store.keep(&[("a", b"raw a")], t0).unwrap();
        store.keep(&[("b", b"raw b")], t0 + 30_000).unwrap();
        assert_eq!(store.erase_expired(t0 + 59_999).unwrap(), 0);
        assert_eq!(&store.details("a").unwrap().unwrap()[..], b"raw a");
        assert_eq!(store.erase_expired(t0 + 60_001).unwrap(), 1);
        assert!(store.details("a").unwrap().is_none());
        assert!(store.details("b").unwrap().is_some());
        assert_eq!(metrics.details_reports.get(), 1);
        assert_eq!(
            metrics
                .details_erased
                .with_label_values(&["retention"])
                .get(),
            1
        );
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(dir.path().join("cases.db"))
                .unwrap()
                .permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn past_a_bound_the_oldest_details_go_first() {
        let dir = tempfile::tempdir().unwrap();
        let settings = DetailsSettings {
            max_reports: 2,
            max_bytes: 10,
            ..DetailsSettings::default()
        };
        let (store, metrics) = store(dir.path(), settings);
        store.keep(&[("a", b"1234")], 1).unwrap();
        store.keep(&[("b", b"1234")], 2).unwrap();
        store.keep(&[("c", b"1234")], 3).unwrap();
        assert!(store.details("a").unwrap().is_none());
        assert!(store.details("c").unwrap().is_some());
        store.keep(&[("d", b"12345678")], 4).unwrap();
        assert!(store.details("b").unwrap().is_none());
        assert!(store.details("c").unwrap().is_none(), "10 bytes at most");
        assert!(store.details("d").unwrap().is_some());
        assert_eq!(metrics.details_bytes.get(), 8);
        assert_eq!(
            metrics.details_erased.with_label_values(&["bound"]).get(),
            3
        );
        assert_eq!(metrics.details_bound_reports.get(), 2);
    }

    #[test]
    fn requests_are_held_once_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let (store, metrics) = store(dir.path(), DetailsSettings::default());
        let mut r = ewn_model::samples::case_request();
        assert_eq!(store.offer(&r, 1).unwrap(), Offered::Stored);
        assert_eq!(store.offer(&r, 2).unwrap(), Offered::Known);
        r.request_id = "r2".into();
        assert_eq!(store.offer(&r, 3).unwrap(), Offered::Stored);
        r.request_id = "r3".into();
        assert_eq!(store.offer(&r, 4).unwrap(), Offered::OverBound);
        assert_eq!(metrics.case_requests_pending.get(), 2);
        assert!(store.decide("r2", false, 5).unwrap());
        assert!(!store.decide("r2", true, 6).unwrap(), "decided once");
        assert_eq!(store.list(true, 10).unwrap().len(), 1);
        let all = store.list(false, 10).unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].status, "pending");
        assert_eq!(all[1].status, "declined");
        assert_eq!(store.get("r2").unwrap().unwrap().decided_ms, Some(5));
    }
}
