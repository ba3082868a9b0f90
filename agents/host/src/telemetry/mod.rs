//! Telemetry sampled around every benchmark run: GPUs (NVML), the engine (Docker stats or
//! `/proc`) and the host. The latest figures ([`Sampler::latest`]) feed the Writer's thermal guard.
//!
//! The [`Sampler`] runs on the Tokio runtime and moves every blocking call (NVML FFI, `/proc`
//! reads) onto the blocking pool. Peaks and means come from every sample; the time series kept
//! for charts is bounded by a [`Downsampler`], so a run of any length costs the same memory.
//! Without NVML the sampler says why once (the text of [`Gpus::note`](crate::gpu::Gpus::note)) and still samples the
//! engine and the host.

mod energy;
pub mod rapl;
mod recorder;
mod sampler;
mod series;

#[cfg(test)]
mod tests;

pub use energy::EnergyMeter;
pub use recorder::{SamplerCost, Snapshot};
pub use sampler::{EngineTarget, Sampler, process_gpu_memory};
pub use series::{Accumulator, Downsampler, SeriesPoint, summarise};

/// Highest sampling rate the plan may ask for, Hz.
pub const MAX_HZ: f64 = 10.0;

/// Points kept per metric in the time series before adjacent pairs are merged.
pub const SERIES_CAP: usize = 2048;
