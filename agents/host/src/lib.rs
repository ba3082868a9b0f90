//! Adapters to the machine, shared by Reader, Writer and Debug.
//!
//! Architecture invariant: only this crate touches Docker, NVML, `/proc`, the filesystem's
//! free space, engine processes or engine HTTP. Agents hold policy; this crate holds I/O.

pub mod docker;
pub mod endpoint;
pub mod engine;
pub mod engine_log;
pub mod gpu;
pub mod launch;
pub mod ollama;
pub mod openai;
pub mod process;
pub mod standard;
pub mod system;
pub mod telemetry;
