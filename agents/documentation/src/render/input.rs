//! What the reports are made from and what they are made of: the cycle's results in, files
//! out. The crate's public face for rendering; re-exported by [`crate::render`].

use protocol::messages::BenchmarkResults;
use protocol::results::EscalationRecord;
use std::collections::BTreeMap;

/// Everything the reports are made from.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportInput {
    /// The cycle id.
    pub cycle: String,
    /// The Writer's results, with the Reader's verification inside.
    pub results: BenchmarkResults,
    /// Debug's record of every escalation in the cycle.
    pub troubleshooting: Vec<EscalationRecord>,
    /// Full answers by object-store key (may be empty; excerpts are used then).
    pub answers: BTreeMap<String, String>,
    /// Each model's sampled telemetry series (the CSV that `telemetry.series` points to), by
    /// model name; may be empty, and then the charts over time are left out.
    pub telemetry_series: BTreeMap<String, String>,
}

/// One file of the report folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportFile {
    /// Path relative to the report folder, with `/` separators.
    pub path: String,
    /// Content.
    pub bytes: Vec<u8>,
}
