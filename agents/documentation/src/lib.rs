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
