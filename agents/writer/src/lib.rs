//! The Writer agent: deploys each planned model, measures it honestly, tears it down, and hands
//! the results on; a failure becomes an escalation to Debug and a retry with its remedy.

pub mod agent;
pub mod analysis;
pub mod concurrent;
pub mod deploy;
pub mod endpoint;
pub mod measure;
pub mod settings;
pub mod standard;
pub mod thermal;
