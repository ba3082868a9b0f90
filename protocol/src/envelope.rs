//! The envelope every handoff travels in, and its validation.

use crate::ids::{CycleId, Role};
use crate::messages::{
    BenchmarkResults, CyclePlan, Escalation, Offloaded, OperatorDecision, ReportsPublished, TroubleshootingLog,
    VerificationReport,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The schema version this build writes and the newest it reads.
pub const SCHEMA_VERSION: u32 = 1;

/// A package could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    /// Not JSON, or not an envelope.
    #[error("not a threadcycle envelope: {0}")]
    Malformed(String),
    /// Written by a newer threadcycle.
    #[error("schema version {found} is newer than this build understands ({supported}); upgrade threadcycle")]
    NewerSchema {
        /// Version in the package.
        found: u32,
        /// Newest this build reads.
        supported: u32,
    },
    /// A kind this build does not know.
    #[error("unknown package kind `{0}`")]
    UnknownKind(String),
    /// The payload did not match its kind.
    #[error("payload of kind `{kind}` is invalid: {error}")]
    BadPayload {
        /// Declared kind.
        kind: String,
        /// What serde said.
        error: String,
    },
}

/// A typed handoff package.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "payload", rename_all = "snake_case")]
pub enum Payload {
    /// Main → Reader.
    CyclePlan(Box<CyclePlan>),
    /// Reader → Writer.
    VerificationReport(Box<VerificationReport>),
    /// Writer → Documentation.
    BenchmarkResults(Box<BenchmarkResults>),
    /// Any → Debug.
    Escalation(Box<Escalation>),
    /// Main → Debug.
    OperatorDecision(OperatorDecision),
    /// Debug → Documentation.
    TroubleshootingLog(Box<TroubleshootingLog>),
    /// Documentation → Main.
    ReportsPublished(ReportsPublished),
    /// Writer → Debug: the tuning search so far; Debug proposes the next candidate.
    TuneRequest(Box<crate::tune::TuneRequest>),
    /// A payload kept in the object store.
    Offloaded(Offloaded),
}

impl Payload {
    /// Every kind this build knows, as written on the wire.
    pub const KINDS: [&'static str; 9] = [
        "cycle_plan",
        "verification_report",
        "benchmark_results",
        "escalation",
        "operator_decision",
        "troubleshooting_log",
        "reports_published",
        "offloaded",
        "tune_request",
    ];

    /// The kind as written on the wire.
    pub fn kind(&self) -> &'static str {
        match self {
            Payload::CyclePlan(_) => "cycle_plan",
            Payload::VerificationReport(_) => "verification_report",
            Payload::BenchmarkResults(_) => "benchmark_results",
            Payload::Escalation(_) => "escalation",
            Payload::OperatorDecision(_) => "operator_decision",
            Payload::TroubleshootingLog(_) => "troubleshooting_log",
            Payload::ReportsPublished(_) => "reports_published",
            Payload::Offloaded(_) => "offloaded",
            Payload::TuneRequest(_) => "tune_request",
        }
    }
}

/// A handoff package with its routing and causality.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Schema version.
    pub schema: u32,
    /// Package id (UUID v7); also the JetStream message id.
    pub id: Uuid,
    /// The cycle it belongs to.
    pub cycle: CycleId,
    /// Sender.
    pub from: Role,
    /// Receiver.
    pub to: Role,
    /// When it was sent.
    pub sent_at: DateTime<Utc>,
    /// The package this one answers.
    pub causation: Option<Uuid>,
    /// Kind and content.
    #[serde(flatten)]
    pub payload: Payload,
}

#[derive(Deserialize)]
struct RawEnvelope {
    schema: u32,
    kind: String,
    payload: serde_json::Value,
    #[serde(flatten)]
    rest: serde_json::Map<String, serde_json::Value>,
}

impl Envelope {
    /// A new package with a fresh UUID v7.
    pub fn new(cycle: CycleId, from: Role, to: Role, causation: Option<Uuid>, payload: Payload) -> Self {
        Self { schema: SCHEMA_VERSION, id: Uuid::now_v7(), cycle, from, to, sent_at: Utc::now(), causation, payload }
    }

    /// The envelope as JSON bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serialising plain data with string keys cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Decodes a package, refusing newer schemas and unknown kinds by name.
    pub fn from_bytes(bytes: &[u8]) -> Result<Envelope, EnvelopeError> {
        let raw: RawEnvelope = serde_json::from_slice(bytes).map_err(|e| EnvelopeError::Malformed(e.to_string()))?;
        if raw.schema > SCHEMA_VERSION {
            return Err(EnvelopeError::NewerSchema { found: raw.schema, supported: SCHEMA_VERSION });
        }
        if raw.schema == 0 {
            return Err(EnvelopeError::Malformed("schema version 0 is not valid".into()));
        }
        if !Payload::KINDS.contains(&raw.kind.as_str()) {
            return Err(EnvelopeError::UnknownKind(raw.kind.chars().take(64).collect()));
        }
        let mut obj = raw.rest;
        obj.insert("schema".into(), raw.schema.into());
        obj.insert("kind".into(), raw.kind.clone().into());
        obj.insert("payload".into(), raw.payload);
        serde_json::from_value(serde_json::Value::Object(obj))
            .map_err(|e| EnvelopeError::BadPayload { kind: raw.kind, error: e.to_string() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::ReportsPublished;

    fn sample() -> Envelope {
        Envelope::new(
            CycleId::parse("c1").expect("valid"),
            Role::Documentation,
            Role::Main,
            None,
            Payload::ReportsPublished(ReportsPublished {
                dir: "d".into(),
                files: vec!["a.md".into()],
                measured: 1,
                not_measured: 0,
                aborted: None,
            }),
        )
    }

    #[test]
    fn round_trips() {
        let e = sample();
        assert_eq!(Envelope::from_bytes(&e.to_bytes()).expect("decodes"), e);
    }

    #[test]
    fn newer_schema_is_refused_by_name() {
        let mut v: serde_json::Value = serde_json::from_slice(&sample().to_bytes()).expect("json");
        v["schema"] = 2.into();
        let err = Envelope::from_bytes(v.to_string().as_bytes()).unwrap_err();
        assert!(matches!(err, EnvelopeError::NewerSchema { found: 2, supported: 1 }), "{err}");
        assert!(err.to_string().contains("schema version 2 is newer"));
    }

    #[test]
    fn unknown_kind_is_refused_by_name() {
        let mut v: serde_json::Value = serde_json::from_slice(&sample().to_bytes()).expect("json");
        v["kind"] = "launch_missiles".into();
        let err = Envelope::from_bytes(v.to_string().as_bytes()).unwrap_err();
        assert_eq!(err.to_string(), "unknown package kind `launch_missiles`");
    }

    #[test]
    fn bad_payload_names_the_kind() {
        let mut v: serde_json::Value = serde_json::from_slice(&sample().to_bytes()).expect("json");
        v["payload"]["measured"] = "many".into();
        let err = Envelope::from_bytes(v.to_string().as_bytes()).unwrap_err();
        assert!(err.to_string().starts_with("payload of kind `reports_published` is invalid"), "{err}");
    }

    proptest::proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = Envelope::from_bytes(&bytes);
        }

        #[test]
        fn dir_and_files_round_trip(dir in ".{0,40}", files in proptest::collection::vec(".{0,20}", 0..4)) {
            let mut e = sample();
            e.payload = Payload::ReportsPublished(ReportsPublished { dir, files, measured: 0, not_measured: 2, aborted: None });
            proptest::prop_assert_eq!(Envelope::from_bytes(&e.to_bytes()).expect("decodes"), e);
        }
    }
}
