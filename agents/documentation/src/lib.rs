//! The Documentation agent: turns results into the reports a lab would publish.
//!
//! Architecture invariant: rendering (`render`, `charts`, `html`, `compare`) is a pure function
//! of the results — no clock, no I/O — so the same results give the same bytes.

pub mod agent;
pub mod charts;
pub mod checks;
pub mod claims;
pub mod compare;
pub mod html;
pub mod markdown;
pub mod merge;
pub mod render;

/// The crate under the name its integration tests and bench use, so the shared fixture resolves
/// the same everywhere.
#[cfg(test)]
extern crate self as threadcycle_documentation;

/// The one report fixture, shared with `tests/browser.rs` and `benches/render.rs`.
#[cfg(test)]
#[path = "../tests/fixtures/report.rs"]
mod fixture;
