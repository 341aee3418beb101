//! Topic names. Every name carries the configured prefix (default `ewn.`).

use serde::{Deserialize, Serialize};

/// The topics of DESIGN.md, by role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TopicKind {
    Incidents,
    Rejected,
    Alerts,
    Deliveries,
    Acks,
    Subscriptions,
}

impl TopicKind {
    pub const ALL: [TopicKind; 6] = [
        TopicKind::Incidents,
        TopicKind::Rejected,
        TopicKind::Alerts,
        TopicKind::Deliveries,
        TopicKind::Acks,
        TopicKind::Subscriptions,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TopicKind::Incidents => "incidents",
            TopicKind::Rejected => "rejected",
            TopicKind::Alerts => "alerts",
            TopicKind::Deliveries => "deliveries",
            TopicKind::Acks => "acks",
            TopicKind::Subscriptions => "subscriptions",
        }
    }
}

impl std::str::FromStr for TopicKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        TopicKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown topic `{s}`: one of incidents, rejected, alerts, deliveries, acks, subscriptions"))
    }
}

/// One topic to create.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: i32,
    pub compacted: bool,
}

#[derive(Clone, Debug)]
pub struct Topics {
    prefix: String,
}

impl Topics {
    pub fn new(prefix: impl Into<String>) -> Self {
        Topics {
            prefix: prefix.into(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `<prefix>incidents.<cc>`, `cc` lower case.
    pub fn incidents(&self, state: &str) -> String {
        format!("{}incidents.{}", self.prefix, state.to_ascii_lowercase())
    }

    /// The member state of an incidents topic name, lower case.
    pub fn state_of<'t>(&self, topic: &'t str) -> Option<&'t str> {
        let state = topic
            .strip_prefix(&self.prefix)?
            .strip_prefix("incidents.")?;
        (state.len() == 2 && state.bytes().all(|b| b.is_ascii_lowercase())).then_some(state)
    }

    /// `<prefix>heartbeats.<cc>`, `cc` lower case: the signed heartbeats of a state's
    /// gateways.
    pub fn heartbeats(&self, state: &str) -> String {
        format!("{}heartbeats.{}", self.prefix, state.to_ascii_lowercase())
    }

    /// The member state of a heartbeats topic name, lower case.
    pub fn heartbeats_state_of<'t>(&self, topic: &'t str) -> Option<&'t str> {
        let state = topic
            .strip_prefix(&self.prefix)?
            .strip_prefix("heartbeats.")?;
        (state.len() == 2 && state.bytes().all(|b| b.is_ascii_lowercase())).then_some(state)
    }

    pub fn is_incidents(&self, topic: &str) -> bool {
        self.state_of(topic).is_some()
    }

    pub fn rejected(&self) -> String {
        format!("{}rejected", self.prefix)
    }

    pub fn alerts(&self) -> String {
        format!("{}alerts", self.prefix)
    }

    pub fn deliveries(&self) -> String {
        format!("{}deliveries", self.prefix)
    }

    /// Webhook deliveries parked after their endpoint failed or hung (the fan-out's own).
    pub fn retries(&self) -> String {
        format!("{}retries", self.prefix)
    }

    pub fn acks(&self) -> String {
        format!("{}acks", self.prefix)
    }

    pub fn subscriptions(&self) -> String {
        format!("{}subscriptions", self.prefix)
    }

    /// The append-only log of administrative acts, each signed by the service that did it.
    pub fn audit(&self) -> String {
        format!("{}audit", self.prefix)
    }

    /// `<prefix>requests.<cc>`, `cc` lower case: case requests to one member state, signed
    /// by the fan-out on behalf of a desk; read by that state's gateway.
    pub fn requests(&self, state: &str) -> String {
        format!("{}requests.{}", self.prefix, state.to_ascii_lowercase())
    }

    /// The states' signed answers to case requests (approved details encrypted to the
    /// requester).
    pub fn responses(&self) -> String {
        format!("{}responses", self.prefix)
    }

    /// The processor's internal repartition topic.
    pub fn rekeyed(&self) -> String {
        format!("{}process.rekeyed", self.prefix)
    }

    /// Does `topic` belong to `kind`? (`Incidents` matches every member state's topic.)
    pub fn matches(&self, kind: TopicKind, topic: &str) -> bool {
        match kind {
            TopicKind::Incidents => self.is_incidents(topic),
            TopicKind::Rejected => topic == self.rejected(),
            TopicKind::Alerts => topic == self.alerts(),
            TopicKind::Deliveries => topic == self.deliveries(),
            TopicKind::Acks => topic == self.acks(),
            TopicKind::Subscriptions => topic == self.subscriptions(),
        }
    }

    /// Every topic of the network for `states`.
    pub fn all(&self, states: &[String], partitions: i32) -> Vec<TopicSpec> {
        let spec = |name, compacted| TopicSpec {
            name,
            partitions,
            compacted,
        };
        let mut v: Vec<TopicSpec> = states
            .iter()
            .flat_map(|s| {
                [
                    spec(self.incidents(s), false),
                    spec(self.heartbeats(s), false),
                    spec(self.requests(s), false),
                ]
            })
            .collect();
        v.push(spec(self.rejected(), false));
        v.push(spec(self.alerts(), false));
        v.push(spec(self.deliveries(), false));
        v.push(spec(self.acks(), false));
        v.push(spec(self.retries(), false));
        v.push(spec(self.subscriptions(), true));
        // Append-only: never compacted, kept for `kafka.retention_ms` like the others.
        v.push(spec(self.audit(), false));
        v.push(spec(self.responses(), false));
        v
    }

    /// Every topic `ewn topics create` makes: [`Topics::all`] and the processor's
    /// repartition topic with `rekeyed_partitions`.
    pub fn network(
        &self,
        states: &[String],
        partitions: i32,
        rekeyed_partitions: i32,
    ) -> Vec<TopicSpec> {
        let mut v = self.all(states, partitions);
        v.push(TopicSpec {
            name: self.rekeyed(),
            partitions: rekeyed_partitions,
            compacted: false,
        });
        v
    }

    /// What the processor reads and writes: every state's incidents and heartbeats,
    /// rejected, alerts and its repartition topic.
    pub fn for_processor(
        &self,
        states: &[String],
        partitions: i32,
        rekeyed_partitions: i32,
    ) -> Vec<TopicSpec> {
        let names: Vec<String> = states
            .iter()
            .flat_map(|s| [self.incidents(s), self.heartbeats(s)])
            .chain([self.rejected(), self.alerts(), self.rekeyed()])
            .collect();
        self.network(states, partitions, rekeyed_partitions)
            .into_iter()
            .filter(|s| names.contains(&s.name))
            .collect()
    }

    /// What the fan-out reads and writes.
    pub fn for_fanout(&self, partitions: i32) -> Vec<TopicSpec> {
        let names = [
            self.alerts(),
            self.deliveries(),
            self.acks(),
            self.retries(),
            self.subscriptions(),
            self.audit(),
        ];
        self.all(&[], partitions)
            .into_iter()
            .filter(|s| names.contains(&s.name))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_states() {
        let t = Topics::new("t1.ewn.");
        assert_eq!(t.incidents("KZ"), "t1.ewn.incidents.kz");
        assert_eq!(t.state_of("t1.ewn.incidents.kg"), Some("kg"));
        assert_eq!(t.state_of("t1.ewn.incidents.kgz"), None);
        assert_eq!(t.state_of("ewn.incidents.kg"), None);
        assert!(t.matches(TopicKind::Alerts, "t1.ewn.alerts"));
        assert_eq!(t.heartbeats("KZ"), "t1.ewn.heartbeats.kz");
        assert_eq!(t.heartbeats_state_of("t1.ewn.heartbeats.kz"), Some("kz"));
        assert_eq!(t.heartbeats_state_of("t1.ewn.incidents.kz"), None);
        assert_eq!(t.state_of("t1.ewn.heartbeats.kz"), None);
        let all = t.all(&["kz".into()], 3);
        assert_eq!(all.len(), 11);
        assert!(all.iter().any(|s| s.name == "t1.ewn.requests.kz"));
        assert!(all.iter().any(|s| s.name == "t1.ewn.responses"));
        assert!(all.iter().any(|s| s.name == "t1.ewn.heartbeats.kz"));
        let network = t.network(&["kz".into()], 3, 6);
        assert_eq!(network.len(), 12);
        assert!(
            network
                .iter()
                .any(|s| s.name == "t1.ewn.process.rekeyed" && s.partitions == 6)
        );
        let p: Vec<String> = t
            .for_processor(&["kz".into()], 3, 6)
            .into_iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(
            p,
            [
                "t1.ewn.incidents.kz",
                "t1.ewn.heartbeats.kz",
                "t1.ewn.rejected",
                "t1.ewn.alerts",
                "t1.ewn.process.rekeyed"
            ]
        );
        assert_eq!(t.for_fanout(3).len(), 6);
        assert!(
            t.for_fanout(3)
                .iter()
                .any(|s| s.name == "t1.ewn.audit" && !s.compacted)
        );
        assert!(t.for_fanout(3).iter().any(|s| s.compacted));
    }
}
