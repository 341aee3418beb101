//! The live stream's source: every instance reads all partitions of `<prefix>alerts` (not
//! through the consumer group) into a bounded buffer, and each connected desk gets what
//! its subscription may see.
//!
//! Event ids are cursors, not counters: `0:17,1:4,2:9` means "every alert up to offset 17
//! of partition 0, 4 of partition 1 and 9 of partition 2 has been considered for you". So
//! `Last-Event-ID` resumes exactly on any instance and after a restart: the missed alerts
//! are the buffered ones beyond the cursor. When the buffer no longer reaches back to the
//! cursor the client is told (`event: gap`) rather than silently short-changed.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, RwLock};

use ewn_model::Alert;
use tokio::sync::broadcast;

/// One alert as the stream saw it.
#[derive(Debug)]
pub struct HubEvent {
    /// Arrival order in this instance, to join the backlog and the live feed without a
    /// gap or a repeat.
    pub seq: u64,
    pub partition: i32,
    pub offset: i64,
    /// The cursor after this event.
    pub cursor: String,
    pub alert: Arc<Alert>,
    /// For one subscription only (an escalation reaching its stream), not buffered.
    pub target: Option<String>,
}

struct State {
    events: VecDeque<Arc<HubEvent>>,
    cursor: BTreeMap<i32, i64>,
    /// The first offset of each partition the buffer still holds.
    floor: BTreeMap<i32, i64>,
    next_seq: u64,
}

pub struct Hub {
    state: RwLock<State>,
    tx: broadcast::Sender<Arc<HubEvent>>,
    capacity: usize,
}

/// Parses a cursor; `None` for anything malformed (treated as no cursor).
pub fn parse_cursor(text: &str) -> Option<BTreeMap<i32, i64>> {
    if text.len() > 4096 {
        return None;
    }
    let mut m = BTreeMap::new();
    for part in text.split(',').filter(|p| !p.is_empty()) {
        let (p, o) = part.split_once(':')?;
        let p: i32 = p.parse().ok()?;
        let o: i64 = o.parse().ok()?;
        if p < 0 || o < 0 || m.insert(p, o).is_some() {
            return None;
        }
    }
    Some(m)
}

fn format_cursor(c: &BTreeMap<i32, i64>) -> String {
    let mut s = String::with_capacity(c.len() * 8);
    for (i, (p, o)) in c.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&p.to_string());
        s.push(':');
        s.push_str(&o.to_string());
    }
    s
}

/// What a (re)connecting client is owed from the buffer.
pub struct Backlog {
    pub events: Vec<Arc<HubEvent>>,
    /// The highest sequence number the backlog accounts for; live events at or below it
    /// are skipped.
    pub upto_seq: u64,
    /// Partitions whose missed alerts are partly gone from the buffer.
    pub gap: Vec<i32>,
}

impl Hub {
    pub fn new(capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(4096);
        Hub {
            state: RwLock::new(State {
                events: VecDeque::with_capacity(capacity.min(65_536)),
                cursor: BTreeMap::new(),
                floor: BTreeMap::new(),
                next_seq: 1,
            }),
            tx,
            capacity,
        }
    }

    /// The buffered message with this id, if the buffer still holds it (a scan of at most
    /// `fanout.stream.buffer_alerts`: for the oversight API, not a hot path).
    pub fn find(&self, alert_id: &str) -> Option<Arc<Alert>> {
        let s = self.state.read().unwrap_or_else(|p| p.into_inner());
        s.events
            .iter()
            .rev()
            .find(|e| e.alert.alert_id == alert_id)
            .map(|e| e.alert.clone())
    }

    /// Adds an alert read from `partition` at `offset`; ignores offsets already seen (a
    /// re-read after a reconnect).
    pub fn push(&self, partition: i32, offset: i64, alert: Alert) {
        let mut s = self.state.write().unwrap_or_else(|p| p.into_inner());
        if s.cursor.get(&partition).is_some_and(|&c| offset <= c) {
            return;
        }
        s.cursor.insert(partition, offset);
        s.floor.entry(partition).or_insert(offset);
        let event = Arc::new(HubEvent {
            seq: s.next_seq,
            partition,
            offset,
            cursor: format_cursor(&s.cursor),
            alert: Arc::new(alert),
            target: None,
        });
        s.next_seq += 1;
        s.events.push_back(event.clone());
        while s.events.len() > self.capacity {
            if let Some(old) = s.events.pop_front() {
                s.floor.insert(old.partition, old.offset + 1);
            }
        }
        drop(s);
        // No receiver is fine: nobody is connected.
        let _ = self.tx.send(event);
    }

    /// Shows `alert` once more, on the live stream of `target` only (an escalation step
    /// named it). Not buffered: a client that resumes later finds the alert in the
    /// buffer, where the escalation now lets it see it.
    pub fn notify(&self, alert: Arc<Alert>, target: &str) {
        let mut s = self.state.write().unwrap_or_else(|p| p.into_inner());
        let event = Arc::new(HubEvent {
            seq: s.next_seq,
            partition: -1,
            offset: -1,
            cursor: format_cursor(&s.cursor),
            alert,
            target: Some(target.to_string()),
        });
        s.next_seq += 1;
        drop(s);
        let _ = self.tx.send(event);
    }

    /// Marks a partition as read up to `next` (exclusive) even when nothing was buffered
    /// from it, so a fresh client's cursor covers it.
    pub fn start_partition(&self, partition: i32, next: i64) {
        let mut s = self.state.write().unwrap_or_else(|p| p.into_inner());
        if next > 0 {
            s.cursor.entry(partition).or_insert(next - 1);
        }
        s.floor.entry(partition).or_insert(next);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<HubEvent>> {
        self.tx.subscribe()
    }

    /// The buffered events after `cursor` (all of the last `history` when there is none).
    pub fn backlog(&self, cursor: Option<&BTreeMap<i32, i64>>, history: usize) -> Backlog {
        let s = self.state.read().unwrap_or_else(|p| p.into_inner());
        let upto_seq = s.next_seq - 1;
        match cursor {
            None => {
                let skip = s.events.len().saturating_sub(history);
                Backlog {
                    events: s.events.iter().skip(skip).cloned().collect(),
                    upto_seq,
                    gap: Vec::new(),
                }
            }
            Some(c) => {
                let seen = |p: i32| c.get(&p).copied().unwrap_or(-1);
                let events = s
                    .events
                    .iter()
                    .filter(|e| e.offset > seen(e.partition))
                    .cloned()
                    .collect();
                let gap = s
                    .floor
                    .iter()
                    .filter(|(p, floor)| {
                        **floor > seen(**p) + 1
                            && s.cursor.get(p).is_some_and(|&last| last > seen(**p))
                    })
                    .map(|(p, _)| *p)
                    .collect();
                Backlog {
                    events,
                    upto_seq,
                    gap,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ewn_model::samples;

    fn alert(id: &str) -> Alert {
        let mut a = samples::alert();
        a.alert_id = id.into();
        a
    }

    #[test]
    fn a_cursor_resumes_exactly_after_what_was_seen() {
        let hub = Hub::new(100);
        hub.push(0, 0, alert("a"));
        hub.push(1, 0, alert("b"));
        hub.push(0, 1, alert("c"));
        let all = hub.backlog(None, 100).events;
        let cursor = parse_cursor(&all[1].cursor).unwrap();
        hub.push(1, 1, alert("d"));
        let missed: Vec<String> = hub
            .backlog(Some(&cursor), 0)
            .events
            .iter()
            .map(|e| e.alert.alert_id.clone())
            .collect();
        assert_eq!(missed, ["c", "d"]);
    }

    #[test]
    fn an_evicted_past_is_reported_as_a_gap() {
        let hub = Hub::new(2);
        for o in 0..5 {
            hub.push(0, o, alert(&format!("a{o}")));
        }
        let b = hub.backlog(Some(&parse_cursor("0:0").unwrap()), 0);
        assert_eq!(b.gap, [0]);
        assert_eq!(b.events.len(), 2);
        let b = hub.backlog(Some(&parse_cursor("0:2").unwrap()), 0);
        assert!(b.gap.is_empty());
    }

    #[test]
    fn malformed_cursors_are_refused() {
        for bad in ["x", "0:", ":1", "0:1,0:2", "-1:3", "0:-4", "0:1:2"] {
            assert!(parse_cursor(bad).is_none(), "{bad}");
        }
        assert_eq!(parse_cursor("").unwrap().len(), 0);
    }
}
