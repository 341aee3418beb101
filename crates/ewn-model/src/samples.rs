//! Fully populated sample values, for tests and benches of this and other crates.

use std::collections::BTreeMap;

use crate::types::*;

pub fn incident() -> Incident {
    Incident {
        incident_id: "7d0e7c1e-5b2a-4a57-9f6c-2f1d8b0c9a11".into(),
        occurred_at: 1_790_000_000_000,
        reported_at: 1_790_000_060_000,
        reporter: Reporter {
            state: "KZ".into(),
            agency: "KZ-KNB".into(),
            post_id: Some("KZ-ZHARKENT-03".into()),
        },
        category: Category::SuspiciousCrossing,
        severity: Level::High,
        source_reliability: SourceReliability::B,
        info_credibility: 2,
        tlp: Tlp::Amber,
        location: Location {
            lat: 44.1667,
            lon: 80.0,
            area: "KZ-ZHT".into(),
            crossing: Some("KZ-KHORGOS".into()),
        },
        direction: Some(Direction::Exit),
        subjects: vec![Subject {
            kind: SubjectKind::Person,
            subject_ref: "a".repeat(64),
            watchlist: Some("UNSC-1267".into()),
        }],
        summary: "Subject crossed on foot at dusk with two companions".into(),
        attributes: BTreeMap::from([("shift".to_string(), "night".to_string())]),
    }
}

pub fn signed_incident() -> SignedIncident {
    SignedIncident {
        key_id: "kz-2026-01".into(),
        signature: [7; 64],
        payload: vec![1, 2, 3],
        signed_at: Some(1_790_000_060_000),
    }
}

pub fn alert() -> Alert {
    Alert {
        alert_id: "0123456789abcdef0123456789abcdef".into(),
        msg_type: MsgType::Update,
        references: vec!["fedcba9876543210fedcba9876543210".into()],
        rule: "cross_border_movement".into(),
        level: Level::High,
        score: 71,
        reasons: vec![ScoreReason {
            factor: "category".into(),
            contribution: 71,
            detail: "SUSPICIOUS_CROSSING".into(),
        }],
        key: "a".repeat(64),
        window_start: 1_790_000_000_000,
        window_end: 1_790_259_200_000,
        incident_ids: vec!["7d0e7c1e-5b2a-4a57-9f6c-2f1d8b0c9a11".into()],
        states: vec!["KZ".into(), "KG".into()],
        categories: vec![Category::SuspiciousCrossing],
        areas: vec!["KZ-ZHT".into()],
        points: vec![GeoPoint {
            lat: 44.1667,
            lon: 80.0,
        }],
        tlp: Tlp::AmberStrict,
        named_agencies: vec!["KG-GKNB".into()],
        created_at: 1_790_000_100_000,
        evidence: vec![Evidence {
            incident_id: "7d0e7c1e-5b2a-4a57-9f6c-2f1d8b0c9a11".into(),
            topic: "ewn.incidents.kz".into(),
            partition: 2,
            offset: 12345,
            key_id: "kz-2026-01".into(),
            signature: [9; 64],
            payload_sha256: [4; 32],
        }],
        incident_count: 1,
        incident_digest: vec![5; 32],
        limits_reached: vec![],
        refused_count: 0,
    }
}

pub fn rejection() -> Rejection {
    Rejection {
        reason: RejectReason::BadSignature,
        detail: "key kz-2026-01: signature does not verify".into(),
        topic: "ewn.incidents.kz".into(),
        partition: 0,
        offset: 42,
        key_id: Some("kz-2026-01".into()),
        incident_id: None,
        record_size: 512,
        record_sha256: [1; 32],
        rejected_at: 1_790_000_100_000,
        rejected_by: "process-1".into(),
    }
}

pub fn delivery_retry() -> DeliveryRetry {
    DeliveryRetry {
        subscription_id: "kg-desk".into(),
        escalation_step: 0,
        attempts: 1,
        first_attempt_at: 1_760_000_000_000,
        parked_at: 1_760_000_010_000,
        last_error: Some("timed out after 10000 ms".into()),
        alert: vec![0xC3, 0x01, 1, 2, 3],
        mac: vec![0; 32],
    }
}

pub fn delivery_receipt() -> DeliveryReceipt {
    DeliveryReceipt {
        alert_id: "0123456789abcdef0123456789abcdef".into(),
        subscription_id: "kg-desk".into(),
        agency: "KG-GKNB".into(),
        channel: Channel::Webhook,
        format: Format::Cap,
        outcome: DeliveryOutcome::Delivered,
        tlp: Tlp::Amber,
        redacted: false,
        escalation_step: 0,
        webhook_id: Some("msg_0123456789abcdef".into()),
        attempts: 2,
        status_code: Some(204),
        error: None,
        first_attempt_at: 1_790_000_100_000,
        completed_at: 1_790_000_101_000,
    }
}

pub fn ack() -> Ack {
    Ack {
        alert_id: "0123456789abcdef0123456789abcdef".into(),
        agency: "KG-GKNB".into(),
        subscription_id: Some("kg-desk".into()),
        actor: "duty-officer-2".into(),
        via: AckVia::Console,
        note: Some("units dispatched".into()),
        acked_at: 1_790_000_200_000,
    }
}

pub fn subscription() -> Subscription {
    Subscription {
        id: "kg-desk".into(),
        agency: "KG-GKNB".into(),
        clearance: Tlp::Amber,
        min_level: Level::Medium,
        categories: vec![Category::WatchlistHit, Category::FtfReturnee],
        states: vec!["KG".into()],
        areas: vec![],
        rules: vec![],
        format: Format::Json,
        channel: Channel::Webhook,
        webhook_url: Some("http://127.0.0.1:9999/hook".into()),
        webhook_secret: Some("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into()),
        redacted_above_clearance: true,
        escalation: vec![EscalationStep {
            after_secs: 300,
            targets: vec!["kg-duty".into()],
        }],
        updated_at: 1_790_000_000_000,
        disabled_at: None,
        disabled_reason: None,
        languages: vec![],
    }
}

pub fn scored_incident() -> ScoredIncident {
    let a = alert();
    ScoredIncident {
        group: "subject".into(),
        group_key: "a".repeat(64),
        incident_id: "7d0e7c1e-5b2a-4a57-9f6c-2f1d8b0c9a11".into(),
        occurred_at: 1_790_000_000_000,
        reported_at: 1_790_000_060_000,
        state: "KZ".into(),
        agency: "KZ-KNB".into(),
        area: "KZ-ZHT".into(),
        crossing: Some("KZ-KHORGOS".into()),
        category: Category::SuspiciousCrossing,
        direction: Some(Direction::Exit),
        watchlist_hit: true,
        subjects: vec!["a".repeat(64)],
        score: 71,
        level: Level::High,
        reasons: a.reasons.clone(),
        tlp: Tlp::Amber,
        lat: 44.1667,
        lon: 80.0,
        evidence: a.evidence[0].clone(),
        post_id: Some("KZ-KHORGOS-01".into()),
    }
}

pub fn heartbeat() -> Heartbeat {
    Heartbeat {
        state: "KZ".into(),
        gateway_id: "kz-national-1".into(),
        instance_id: "0b9d2f4e6a8c1e3f".into(),
        sequence: 42,
        sent_at: 1_790_000_060_000,
        interval_ms: 30_000,
        posts: vec![
            PostStatus {
                post_id: "KZ-KHORGOS-01".into(),
                spool_depth: 3,
                spool_bytes: 2_400,
                oldest_unsent_age_ms: Some(95_000),
                last_contact_age_ms: Some(4_000),
            },
            PostStatus {
                post_id: "KZ-ZHARKENT-03".into(),
                spool_depth: 0,
                spool_bytes: 0,
                oldest_unsent_age_ms: None,
                last_contact_age_ms: None,
            },
        ],
    }
}

pub fn signed_heartbeat() -> SignedHeartbeat {
    SignedHeartbeat {
        key_id: "kz-2026-01".into(),
        signature: [7; 64],
        payload: vec![0xC3, 0x01, 1, 2, 3],
        signed_at: 1_790_000_060_000,
    }
}

pub fn audit_record() -> AuditRecord {
    AuditRecord {
        record_id: "6f1c2a9e-0b7d-4f3e-9a51-2c8d4e6f7a10".into(),
        service: "fanout".into(),
        instance_id: "fanout-a".into(),
        actor: "ops-admin".into(),
        action: "subscription_changed".into(),
        object: "kz-desk".into(),
        at: 1_767_268_800_000,
        before_sha256: Some("ab".repeat(32)),
        after_sha256: Some("cd".repeat(32)),
        detail: None,
        key_id: "fanout-2026-01".into(),
        signed_at: 1_767_268_800_001,
        signature: [9; 64],
    }
}

pub fn case_request() -> CaseRequest {
    CaseRequest {
        request_id: "0b8e7f2a-51c4-4d7e-9f3a-6a1b2c3d4e5f".into(),
        alert_id: "a1b2c3d4e5f60718".into(),
        incident_id: "3f2b1c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d".into(),
        incident_sha256: "ef".repeat(32),
        state: "KZ".into(),
        agency: "RCC".into(),
        subscription_id: "rcc-desk".into(),
        requester: "rcc-desk".into(),
        justification: "watch-list hit on a returning suspect".into(),
        legal_basis: "Art. 7 regional agreement".into(),
        requested_at: 1_767_268_800_000,
        key_id: "fanout-2026-01".into(),
        signed_at: 1_767_268_800_001,
        signature: [5; 64],
    }
}

pub fn case_response() -> CaseResponse {
    CaseResponse {
        request_id: "0b8e7f2a-51c4-4d7e-9f3a-6a1b2c3d4e5f".into(),
        state: "KZ".into(),
        agency: "RCC".into(),
        decision: CaseDecision::Approve,
        recipient_key_id: Some("rcc-2026".into()),
        encapsulated_key: Some(vec![1; 32]),
        ciphertext: Some(vec![2; 48]),
        decided_by: "kz-duty-officer".into(),
        decided_at: 1_767_268_900_000,
        key_id: "kz-2026-01".into(),
        signed_at: 1_767_268_900_001,
        signature: [6; 64],
    }
}
