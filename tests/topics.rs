//! Services check their topics at start and never create them (their principals need no
//! Create ACL): on Tansu, they start when `ewn topics create` made the topics, and fail,
//! naming the topic and what is wrong, when one is missing or misconfigured. The missing
//! topic is still missing afterwards: nothing created it behind the operator's back.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::hooks::*;
use common::{Net, block_on, in_process, start, wait_until};
use ewn_kafka::admin::{check_topics, ensure_topics, list_topics};
use ewn_kafka::{Error as KafkaError, TopicSpec, Topics};
use ewn_model::Tlp;
use ewn_ops::http::Health;
use ewn_testkit::{kafka_settings, unique_prefix};

/// A fan-out's start on `config`: its error, or None when it started (then it is stopped).
fn fanout_start_error(config: ewn_fanout::FanoutConfig) -> Option<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let service = in_process(move |r, s| async move {
        match ewn_fanout::start(config, &r, Arc::new(Health::default()), s).await {
            Ok(running) => {
                tx.send(None).unwrap();
                running.task.await.unwrap()
            }
            Err(e) => {
                tx.send(Some(e.to_string())).unwrap();
                Err(e)
            }
        }
    });
    let outcome = rx.recv_timeout(Duration::from_secs(90)).unwrap();
    if outcome.is_none() {
        service.stop();
    }
    outcome
}

/// The network's topics on a fresh prefix, all but those `skip` names, made as
/// `ewn topics create` makes them (`change` may alter a spec first).
fn network_without(
    name: &str,
    skip: &[&str],
    change: impl Fn(&mut TopicSpec),
) -> ewn_kafka::KafkaSettings {
    let settings = kafka_settings(&unique_prefix(name));
    let topics = Topics::new(&settings.topic_prefix);
    let specs: Vec<TopicSpec> = topics
        .network(&settings.states, settings.partitions, settings.partitions)
        .into_iter()
        .filter(|s| {
            !skip
                .iter()
                .any(|k| s.name == format!("{}{k}", settings.topic_prefix))
        })
        .map(|mut s| {
            change(&mut s);
            s
        })
        .collect();
    block_on(ensure_topics(&settings, &specs)).unwrap();
    settings
}

fn exists(settings: &ewn_kafka::KafkaSettings, topic: &str) -> bool {
    list_topics(settings)
        .unwrap()
        .iter()
        .any(|(n, _)| n == topic)
}

#[test]
fn services_start_when_their_topics_exist() {
    let net = Net::new("topics-ok");
    let notes = block_on(check_topics(
        &net.settings,
        &net.topics().network(
            &net.settings.states,
            net.settings.partitions,
            net.settings.partitions,
        ),
    ))
    .unwrap();
    assert!(notes.iter().all(|n| !n.contains("partitions")), "{notes:?}");
    let p = start(net.config(3600));
    wait_until(
        "the processor's ingest group holds partitions",
        Duration::from_secs(60),
        || p.metric("ewn_kafka_assigned_partitions", "client=\"process-ingest\"") > 0.0,
    );
    let hooks = Hooks::start();
    let subs = vec![webhook_sub(&hooks, "desk", "NCTC-KZ", Tlp::Amber)];
    assert_eq!(fanout_start_error(fanout_config(&net.settings, subs)), None);
    p.stop();
}

#[test]
fn the_processor_names_a_missing_topic_and_does_not_create_it() {
    let settings = network_without("topics-noalerts", &["alerts", "process.rekeyed"], |_| {});
    let net = Net::new("topics-keys");
    let mut config = net.config(3600);
    config.kafka = settings.clone();
    let error = match start(config).outcome() {
        Some(Err(e)) => e.to_string(),
        other => panic!("the processor ran without its topics: {other:?}"),
    };
    for topic in ["alerts", "process.rekeyed"] {
        let name = format!("{}{topic}", settings.topic_prefix);
        assert!(
            error.contains(&format!(
                "{name}: does not exist (create it with `ewn topics create`)"
            )),
            "{error}"
        );
        assert!(!exists(&settings, &name), "{name} was created");
    }
    // Only the missing ones are named.
    assert!(!error.contains("rejected"), "{error}");
}

#[test]
fn the_fanout_names_a_missing_topic_and_does_not_create_it() {
    let settings = network_without("topics-nosubs", &["subscriptions"], |_| {});
    let hooks = Hooks::start();
    let subs = vec![webhook_sub(&hooks, "desk", "NCTC-KZ", Tlp::Amber)];
    let error = fanout_start_error(fanout_config(&settings, subs)).expect("started");
    let name = format!("{}subscriptions", settings.topic_prefix);
    assert!(
        error.contains(&format!("{name}: does not exist")),
        "{error}"
    );
    assert!(!exists(&settings, &name));
}

#[test]
fn too_few_partitions_and_a_wrong_cleanup_policy_are_named() {
    let settings = network_without("topics-wrong", &[], |s| {
        if s.name.ends_with("alerts") {
            s.partitions = 1;
        }
        if s.name.ends_with("subscriptions") {
            s.compacted = false;
        }
    });
    let topics = Topics::new(&settings.topic_prefix);
    let err = block_on(check_topics(
        &settings,
        &topics.for_fanout(settings.partitions),
    ));
    let problems = match err {
        Err(KafkaError::Topics(p)) => p,
        other => panic!("{other:?}"),
    };
    let joined = problems.join("\n");
    assert!(
        joined.contains(&format!(
            "{}: 1 partitions, fewer than the 3 configured",
            topics.alerts()
        )),
        "{joined}"
    );
    assert!(
        joined.contains(&format!(
            "{}: cleanup.policy is `delete`, must be `compact`",
            topics.subscriptions()
        )),
        "{joined}"
    );
}
