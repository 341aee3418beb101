//! The durable spool: every report the gateway answered 202 for is here, signed, until the
//! broker confirmed it.
//!
//! It is SQLite (through `rusqlite`, with SQLite compiled in, `bundled`) in WAL mode with
//! `synchronous = FULL`, not a home-made log, because:
//! - SQLite is among the best-kept and most-tested pieces of software there is; its
//!   crash-safety (atomic commit, torn-write and power-loss testing) is documented and
//!   exercised far beyond what a log written here could be;
//! - in WAL mode with `synchronous = FULL` a commit returns only after the WAL is fsynced,
//!   so "answered 202" implies "on disk", and a crash at any point leaves either the whole
//!   transaction or none of it;
//! - WAL lets the forwarder read (and delete what the broker confirmed) while intake
//!   appends, each through its own connection;
//! - `bundled` pins the SQLite version to the one `rusqlite` was tested with, whatever the
//!   host has installed.
//!
//! `redb` would serve too; SQLite won for its track record, and because an operator can
//! open the spool with the `sqlite3` shell to see what is waiting.
//!
//! One table, `reports`, in acceptance order (`seq`); one index by (post, seq) for the
//! forwarder's per-post reads. A second table, `drops`, remembers file-drop files whose
//! lines were spooled (in the same transaction), so a crash between spooling a file and
//! moving it never spools it twice.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};

use crate::error::{Error, Result};

/// One signed record to spool.
#[derive(Clone, Debug)]
pub struct SpoolRecord {
    /// The report's incident id and the SHA-256 of its payload: a report sent again is
    /// recognised by them (see [`Fate`]).
    pub incident_id: String,
    pub digest: [u8; 32],
    pub topic: String,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    /// The report as the post sent it (raw identifiers), for the case store: never written
    /// to the spool, dropped once the spool writer handed it over ([`crate::cases`]).
    pub details: Option<RawDetails>,
}

/// A report's raw line; `Debug` never shows it, and its memory is wiped when dropped.
#[derive(Clone)]
pub struct RawDetails(pub zeroize::Zeroizing<Vec<u8>>);

impl std::fmt::Debug for RawDetails {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RawDetails({} bytes)", self.0.len())
    }
}

impl SpoolRecord {
    pub fn bytes(&self) -> u64 {
        (self.key.len() + self.value.len()) as u64
    }
}

/// One spooled record, as the forwarder reads it.
#[derive(Clone, Debug)]
pub struct Stored {
    pub seq: i64,
    pub topic: String,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub accepted_ms: i64,
}

/// What one post has waiting.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PostDepth {
    pub records: u64,
    pub bytes: u64,
}

/// The spool's contents in numbers, shared by intake (which adds) and the forwarder (which
/// removes); the budget is judged against it.
#[derive(Debug, Default)]
pub struct Depth {
    pub posts: BTreeMap<String, PostDepth>,
    pub records: u64,
    pub bytes: u64,
}

impl Depth {
    fn add(&mut self, post: &str, records: u64, bytes: u64) {
        let d = self.posts.entry(post.to_string()).or_default();
        d.records += records;
        d.bytes += bytes;
        self.records += records;
        self.bytes += bytes;
    }

    fn sub(&mut self, post: &str, records: u64, bytes: u64) {
        let d = self.posts.entry(post.to_string()).or_default();
        d.records = d.records.saturating_sub(records);
        d.bytes = d.bytes.saturating_sub(bytes);
        self.records = self.records.saturating_sub(records);
        self.bytes = self.bytes.saturating_sub(bytes);
    }
}

pub type SharedDepth = Arc<Mutex<Depth>>;

/// What became of one record handed to [`Spool::append`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    /// Stored, to be forwarded.
    Stored,
    /// The same report (same incident id and payload) was accepted at `accepted_ms`: not
    /// stored again.
    Duplicate { accepted_ms: i64 },
    /// Another report with this incident id was accepted at `accepted_ms`: refused.
    Conflict { accepted_ms: i64 },
}

/// One connection to the spool. Intake and the forwarder each open their own.
pub struct Spool {
    conn: Connection,
    path: PathBuf,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS reports (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    post TEXT NOT NULL,
    topic TEXT NOT NULL,
    key BLOB NOT NULL,
    value BLOB NOT NULL,
    accepted_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS reports_by_post ON reports (post, seq);
CREATE TABLE IF NOT EXISTS accepted (
    incident_id TEXT PRIMARY KEY,
    digest BLOB NOT NULL,
    accepted_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS accepted_by_time ON accepted (accepted_ms);
CREATE TABLE IF NOT EXISTS drops (
    name TEXT PRIMARY KEY,
    report TEXT NOT NULL
);
";

/// Opens (creating it and its directory if need be) one of the gateway's SQLite files (the
/// spool, the case store): mode 0600, WAL with full syncs, a 30 s busy timeout (intake, the
/// forwarder and the case desk write through separate connections: one waits for the
/// other's short transaction rather than failing), then the file's own `pragmas` and its
/// `schema`.
pub(crate) fn open_private(path: &Path, pragmas: &str, schema: &str) -> Result<Connection> {
    let err = |e: rusqlite::Error| Error::Spool {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let io = |dir: &Path| {
        let dir = dir.to_path_buf();
        move |source| Error::Io { path: dir, source }
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
    }
    let conn = Connection::open(path).map_err(err)?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io(path))?;
    }
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(err)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(Error::Spool {
            path: path.to_path_buf(),
            message: format!("cannot switch to WAL mode (journal_mode is {mode})"),
        });
    }
    conn.execute_batch("PRAGMA synchronous = FULL;")
        .map_err(err)?;
    conn.execute_batch(pragmas).map_err(err)?;
    conn.busy_timeout(Duration::from_secs(30)).map_err(err)?;
    conn.execute_batch(schema).map_err(err)?;
    Ok(conn)
}

impl Spool {
    /// Opens (creating if need be) the spool at `path`, in WAL mode with full syncs.
    pub fn open(path: &Path) -> Result<Spool> {
        // Raw details never reach the spool (only blinded, signed records), but what waits
        // there is still the state's: owner-only, as the case store.
        let conn = open_private(path, "PRAGMA foreign_keys = OFF;", SCHEMA)?;
        Ok(Spool {
            conn,
            path: path.to_path_buf(),
        })
    }

    fn err(&self) -> impl Fn(rusqlite::Error) -> Error + '_ {
        |e| Error::Spool {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }

    /// What the spool holds, per post.
    pub fn depth(&self) -> Result<Depth> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT post, COUNT(*), COALESCE(SUM(LENGTH(key) + LENGTH(value)), 0)
                 FROM reports GROUP BY post",
            )
            .map_err(self.err())?;
        let mut depth = Depth::default();
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })
            .map_err(self.err())?;
        for row in rows {
            let (post, n, bytes) = row.map_err(self.err())?;
            depth.add(&post, n as u64, bytes as u64);
        }
        Ok(depth)
    }

    /// The acceptance time of each post's oldest waiting record.
    pub fn oldest(&self) -> Result<BTreeMap<String, i64>> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT r.post, r.accepted_ms FROM reports r
                 JOIN (SELECT post, MIN(seq) AS seq FROM reports GROUP BY post) h
                 ON r.seq = h.seq",
            )
            .map_err(self.err())?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
            .map_err(self.err())?;
        rows.collect::<rusqlite::Result<_>>().map_err(self.err())
    }

    /// Appends each batch (post, records) and, when given, a file-drop marker, in one
    /// synced transaction: when this returns `Ok`, all of it is on disk. A record whose
    /// incident id was accepted before (and not yet forgotten, [`Spool::forget_accepted`])
    /// is not stored again: the same payload is a [`Fate::Duplicate`] (its first signed
    /// record stands, so a resend never puts a second envelope on the topic), another
    /// payload a [`Fate::Conflict`]. The fates come back per batch, per record.
    pub fn append(
        &mut self,
        batches: &[(&str, &[SpoolRecord])],
        accepted_ms: i64,
        markers: &[(&str, &str)],
    ) -> Result<Vec<Vec<Fate>>> {
        let path = self.path.clone();
        let err = |e: rusqlite::Error| Error::Spool {
            path: path.clone(),
            message: e.to_string(),
        };
        // IMMEDIATE: the write lock first (waiting out the forwarder's deletes), since the
        // duplicate check reads before it writes; a deferred transaction whose snapshot went
        // stale meanwhile could not be upgraded ("database is locked").
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(err)?;
        let mut fates = Vec::with_capacity(batches.len());
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO reports (post, topic, key, value, accepted_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .map_err(err)?;
            let mut seen = tx
                .prepare_cached("SELECT digest, accepted_ms FROM accepted WHERE incident_id = ?1")
                .map_err(err)?;
            let mut remember = tx
                .prepare_cached(
                    "INSERT INTO accepted (incident_id, digest, accepted_ms) VALUES (?1, ?2, ?3)",
                )
                .map_err(err)?;
            for (post, records) in batches {
                let mut batch = Vec::with_capacity(records.len());
                for r in records.iter() {
                    let before: Option<(Vec<u8>, i64)> = seen
                        .query_row(params![r.incident_id], |row| Ok((row.get(0)?, row.get(1)?)))
                        .optional()
                        .map_err(err)?;
                    let fate = match before {
                        Some((digest, at)) if digest == r.digest => {
                            Fate::Duplicate { accepted_ms: at }
                        }
                        Some((_, at)) => Fate::Conflict { accepted_ms: at },
                        None => {
                            insert
                                .execute(params![post, r.topic, r.key, r.value, accepted_ms])
                                .map_err(err)?;
                            remember
                                .execute(params![r.incident_id, &r.digest[..], accepted_ms])
                                .map_err(err)?;
                            Fate::Stored
                        }
                    };
                    batch.push(fate);
                }
                fates.push(batch);
            }
            let mut mark = tx
                .prepare_cached("INSERT OR REPLACE INTO drops (name, report) VALUES (?1, ?2)")
                .map_err(err)?;
            for (name, report) in markers {
                mark.execute(params![name, report]).map_err(err)?;
            }
        }
        tx.commit().map_err(err)?;
        Ok(fates)
    }

    /// Forgets accepted ids older than `before_ms`, and the oldest beyond `keep`: a report
    /// sent again after that is accepted (and signed) again. Returns how many it forgot.
    pub fn forget_accepted(&self, before_ms: i64, keep: u64) -> Result<usize> {
        let old = self
            .conn
            .execute(
                "DELETE FROM accepted WHERE accepted_ms < ?1",
                params![before_ms],
            )
            .map_err(self.err())?;
        let over = self
            .conn
            .execute(
                "DELETE FROM accepted WHERE incident_id IN
                 (SELECT incident_id FROM accepted ORDER BY accepted_ms DESC LIMIT -1 OFFSET ?1)",
                params![keep as i64],
            )
            .map_err(self.err())?;
        Ok(old + over)
    }

    /// Accepted ids remembered.
    pub fn accepted_ids(&self) -> Result<u64> {
        self.conn
            .query_row("SELECT COUNT(*) FROM accepted", [], |r| r.get::<_, i64>(0))
            .map(|n| n as u64)
            .map_err(self.err())
    }

    /// Up to `limit` records of `post` after `after_seq`, oldest first.
    pub fn next(&self, post: &str, after_seq: i64, limit: usize) -> Result<Vec<Stored>> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT seq, topic, key, value, accepted_ms FROM reports
                 WHERE post = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
            )
            .map_err(self.err())?;
        let rows = stmt
            .query_map(params![post, after_seq, limit as i64], |r| {
                Ok(Stored {
                    seq: r.get(0)?,
                    topic: r.get(1)?,
                    key: r.get(2)?,
                    value: r.get(3)?,
                    accepted_ms: r.get(4)?,
                })
            })
            .map_err(self.err())?;
        rows.collect::<rusqlite::Result<_>>().map_err(self.err())
    }

    /// Removes the records the broker confirmed, in one transaction.
    pub fn remove(&mut self, seqs: &[i64]) -> Result<()> {
        if seqs.is_empty() {
            return Ok(());
        }
        let path = self.path.clone();
        let err = |e: rusqlite::Error| Error::Spool {
            path: path.clone(),
            message: e.to_string(),
        };
        let tx = self.conn.transaction().map_err(err)?;
        {
            let mut delete = tx
                .prepare_cached("DELETE FROM reports WHERE seq = ?1")
                .map_err(err)?;
            for seq in seqs {
                delete.execute(params![seq]).map_err(err)?;
            }
        }
        tx.commit().map_err(err)
    }

    /// The report of a file-drop file already spooled, if any.
    pub fn drop_report(&self, name: &str) -> Result<Option<String>> {
        self.conn
            .query_row("SELECT report FROM drops WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .optional()
            .map_err(self.err())
    }

    /// Forgets a file-drop marker once its file has been moved away.
    pub fn forget_drop(&mut self, name: &str) -> Result<()> {
        self.conn
            .execute("DELETE FROM drops WHERE name = ?1", [name])
            .map(|_| ())
            .map_err(self.err())
    }
}

/// The shared numbers, after an append of `records` bytes for `post`.
pub fn count_in(depth: &SharedDepth, post: &str, records: u64, bytes: u64) {
    depth
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .add(post, records, bytes);
}

/// The shared numbers, after the forwarder removed what the broker confirmed.
pub fn count_out(depth: &SharedDepth, post: &str, records: u64, bytes: u64) {
    depth
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .sub(post, records, bytes);
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn rec(n: u8) -> SpoolRecord {
        SpoolRecord {
            incident_id: format!("id-{n}"),
            digest: [n; 32],
            topic: "t".into(),
            key: vec![n],
            value: vec![n; 10],
            details: None,
        }
    }

    #[test]
    fn a_report_sent_again_is_a_duplicate_and_another_with_its_id_a_conflict() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(&dir.path().join("spool.db")).unwrap();
        let fates = s.append(&[("a", &[rec(1), rec(2)])], 5, &[]).unwrap();
        assert_eq!(fates, [vec![Fate::Stored, Fate::Stored]]);
        // The same report again (another post, even), and another report under id-2.
        let mut other = rec(2);
        other.digest = [9; 32];
        let fates = s
            .append(&[("b", &[rec(1)]), ("a", &[other, rec(3)])], 7, &[])
            .unwrap();
        assert_eq!(
            fates,
            [
                vec![Fate::Duplicate { accepted_ms: 5 }],
                vec![Fate::Conflict { accepted_ms: 5 }, Fate::Stored]
            ]
        );
        assert_eq!(s.depth().unwrap().records, 3, "nothing stored twice");
        // Within one request too.
        let fates = s.append(&[("a", &[rec(4), rec(4)])], 8, &[]).unwrap();
        assert_eq!(
            fates,
            [vec![Fate::Stored, Fate::Duplicate { accepted_ms: 8 }]]
        );
        assert_eq!(s.accepted_ids().unwrap(), 4);
        // Forgotten by age, then by count (the oldest first): accepted again after.
        assert_eq!(s.forget_accepted(6, 100).unwrap(), 2);
        assert_eq!(s.forget_accepted(0, 1).unwrap(), 1);
        assert_eq!(s.accepted_ids().unwrap(), 1);
        let fates = s.append(&[("a", &[rec(1)])], 9, &[]).unwrap();
        assert_eq!(fates, [vec![Fate::Stored]]);
    }

    #[test]
    fn records_survive_reopening_and_leave_only_when_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool.db");
        {
            let mut s = Spool::open(&path).unwrap();
            s.append(
                &[("a", &[rec(1), rec(2)]), ("b", &[rec(3)])],
                5,
                &[("f", "{}")],
            )
            .unwrap();
            s.append(&[("a", &[rec(4)])], 6, &[]).unwrap();
        }
        let mut s = Spool::open(&path).unwrap();
        let d = s.depth().unwrap();
        assert_eq!(d.records, 4);
        assert_eq!(d.bytes, 44);
        assert_eq!(
            d.posts["a"],
            PostDepth {
                records: 3,
                bytes: 33
            }
        );
        let a = s.next("a", 0, 10).unwrap();
        assert_eq!(
            a.iter().map(|r| r.key[0]).collect::<Vec<_>>(),
            vec![1, 2, 4]
        );
        assert_eq!(s.next("a", a[0].seq, 1).unwrap()[0].key, vec![2]);
        s.remove(&[a[0].seq]).unwrap();
        assert_eq!(
            s.oldest().unwrap(),
            BTreeMap::from([("a".into(), 5), ("b".into(), 5)])
        );
        s.remove(&[a[1].seq]).unwrap();
        assert_eq!(s.oldest().unwrap()["a"], 6);
        assert_eq!(s.depth().unwrap().records, 2);
        assert_eq!(s.drop_report("f").unwrap().as_deref(), Some("{}"));
        s.forget_drop("f").unwrap();
        assert_eq!(s.drop_report("f").unwrap(), None);
        let mode: String = s
            .conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let sync: i64 = s
            .conn
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap();
        assert_eq!(sync, 2, "synchronous = FULL");
    }
}
