//! The Reader agent: verifies the host and predicts, before anything is downloaded, whether each
//! planned model fits.

pub mod agent;
pub mod builtin;
pub mod fit;
pub mod gguf;
pub mod profile;
pub mod store;
