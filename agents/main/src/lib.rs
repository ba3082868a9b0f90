//! The Main agent: owns each cycle's life — validates the plan, creates the cycle record, hands
//! the plan to the Reader, follows progress, marks completion, cancels — and is the operator's
//! door (request/reply on `tc.svc.main.operator`).

pub mod agent;
pub mod multihost;
pub mod operator;
pub mod placement;
pub mod resume;
pub mod watchdog;
