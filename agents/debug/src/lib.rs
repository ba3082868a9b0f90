//! The Debug agent: diagnoses failures from evidence it gathers, proposes ranked remedies,
//! applies the plan's policy, and waits for the operator when the plan says so.

pub mod agent;
pub mod catalogue;
pub mod endpoint;
pub mod tune;
