//! One tick's reading of the machine and the recorder that folds readings into the run's
//! summaries, energy, bounded series and latest snapshot (no I/O: testable as is).

use std::collections::BTreeSet;
use std::time::Duration;

use protocol::results::{TelemetrySummary, ThermalPause};

use super::energy::EnergyMeter;
use super::rapl::{CpuEnergy, RaplZone};
use super::series::{Accumulator, Downsampler};
use crate::gpu::GpuSample;
use crate::system::MemInfo;

/// The metrics of one sample, in CSV column order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Metric {
    GpuUtil,
    GpuTemp,
    GpuPower,
    VramUsed,
    VramTotal,
    SmClock,
    MemClock,
    GpuProcMem,
    EngineMem,
    EngineCache,
    EngineCpu,
    HostAvailable,
    HostSwapUsed,
}

/// Number of metrics per sample.
const WIDTH: usize = 13;

/// CSV column names, indexed by `Metric as usize` (the format is shared with the reports).
pub(super) const COLUMNS: [&str; WIDTH] = protocol::results::TELEMETRY_COLUMNS;
/// What the engine used at one sample.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(super) struct EngineReading {
    /// Working set (container usage − page cache) or process RSS, bytes.
    pub(super) mem: Option<u64>,
    /// Container page cache, bytes.
    pub(super) cache: Option<u64>,
    /// CPU, % of one core.
    pub(super) cpu_pct: Option<f64>,
    /// Memory limit, bytes.
    pub(super) limit: Option<u64>,
}

/// Everything read at one tick.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Reading {
    pub(super) t_s: f64,
    pub(super) gpus: Vec<GpuSample>,
    pub(super) gpu_proc_mem: Option<u64>,
    pub(super) engine: EngineReading,
    pub(super) host: Option<MemInfo>,
    /// The CPU package RAPL counters (empty: none readable).
    pub(super) rapl: Vec<RaplZone>,
}

impl Reading {
    /// The metrics of this reading in column order.
    fn values(&self) -> [Option<f64>; WIDTH] {
        let g = &self.gpus;
        let mean = |v: Vec<f64>| (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
        let sum_u64 = |f: fn(&GpuSample) -> u64| (!g.is_empty()).then(|| g.iter().map(f).sum::<u64>() as f64);
        let mut v = [None; WIDTH];
        v[Metric::GpuUtil as usize] = mean(g.iter().filter_map(|s| s.util_pct).map(f64::from).collect());
        v[Metric::GpuTemp as usize] = g.iter().filter_map(|s| s.temp_c).max().map(f64::from);
        v[Metric::GpuPower as usize] = if g.is_empty() { None } else { g.iter().map(|s| s.power_w).sum() };
        v[Metric::VramUsed as usize] = sum_u64(|s| s.mem_used);
        v[Metric::VramTotal as usize] = sum_u64(|s| s.mem_total);
        v[Metric::SmClock as usize] = mean(g.iter().filter_map(|s| s.sm_clock_mhz).map(f64::from).collect());
        v[Metric::MemClock as usize] = mean(g.iter().filter_map(|s| s.mem_clock_mhz).map(f64::from).collect());
        v[Metric::GpuProcMem as usize] = self.gpu_proc_mem.map(|b| b as f64);
        v[Metric::EngineMem as usize] = self.engine.mem.map(|b| b as f64);
        v[Metric::EngineCache as usize] = self.engine.cache.map(|b| b as f64);
        v[Metric::EngineCpu as usize] = self.engine.cpu_pct;
        v[Metric::HostAvailable as usize] = self.host.map(|m| m.available as f64);
        v[Metric::HostSwapUsed as usize] = self.host.map(|m| m.swap_total.saturating_sub(m.swap_free) as f64);
        v
    }
}

/// The latest figures, for the thermal guard and live status.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Snapshot {
    /// Seconds since sampling started.
    pub t_s: f64,
    /// Samples taken so far.
    pub samples: u32,
    /// Temperature of the hottest GPU, °C (`None`: no GPU).
    pub gpu_temp_c: Option<f64>,
    /// GPU utilisation, mean over GPUs, %.
    pub gpu_util_pct: Option<f64>,
    /// Power of all GPUs, W.
    pub gpu_power_w: Option<f64>,
    /// VRAM used on all GPUs, bytes.
    pub vram_used_bytes: Option<u64>,
    /// Engine memory (working set or RSS), bytes; the last known figure.
    pub engine_mem_bytes: Option<u64>,
    /// Engine CPU, % of one core; the last known figure.
    pub engine_cpu_pct: Option<f64>,
    /// Host memory available, bytes.
    pub host_mem_available_bytes: Option<u64>,
}

/// What the sampling itself costs, as the sampler measured it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SamplerCost {
    /// Ticks sampled.
    pub ticks: u64,
    /// Mean wall time of one tick's reads, ms.
    pub mean_ms: f64,
    /// Longest tick, ms.
    pub max_ms: f64,
}

/// Folds readings into summaries, energy and the bounded series (no I/O: testable as is).
#[derive(Debug, Clone)]
pub(super) struct Recorder {
    acc: [Accumulator; WIDTH],
    pub(super) series: Downsampler,
    energy: EnergyMeter,
    cpu_energy: CpuEnergy,
    throttle: BTreeSet<String>,
    /// Seconds between samples at whose end a GPU was throttled.
    throttled_s: f64,
    first_temp: Option<f64>,
    /// Whose GPU memory the process column counts (set by the sampler).
    pub(super) proc_scope: Option<String>,
    notes: Vec<String>,
    pub(super) limit: Option<u64>,
    samples: u32,
    first_t: Option<f64>,
    last_t: f64,
    pub(super) pauses: Vec<ThermalPause>,
    pub(super) latest: Snapshot,
    cost_ticks: u64,
    cost_total: Duration,
    cost_max: Duration,
}

impl Recorder {
    pub(super) fn new(cap: usize) -> Self {
        Self {
            acc: [Accumulator::default(); WIDTH],
            series: Downsampler::new(WIDTH, cap),
            energy: EnergyMeter::default(),
            cpu_energy: CpuEnergy::default(),
            throttle: BTreeSet::new(),
            throttled_s: 0.0,
            first_temp: None,
            proc_scope: None,
            notes: Vec::new(),
            limit: None,
            samples: 0,
            first_t: None,
            last_t: 0.0,
            pauses: Vec::new(),
            latest: Snapshot::default(),
            cost_ticks: 0,
            cost_total: Duration::ZERO,
            cost_max: Duration::ZERO,
        }
    }

    /// Adds a note unless the same text is already there.
    pub(super) fn note(&mut self, text: impl Into<String>) {
        let text = text.into();
        if !self.notes.contains(&text) {
            self.notes.push(text);
        }
    }

    pub(super) fn record(&mut self, r: &Reading) {
        let values = r.values();
        for (acc, v) in self.acc.iter_mut().zip(values) {
            if let Some(v) = v {
                acc.add(v);
            }
        }
        self.series.push(r.t_s, &values);
        self.energy.add(r.t_s, &r.gpus);
        self.cpu_energy.add(&r.rapl);
        for g in &r.gpus {
            self.throttle.extend(g.throttle.iter().cloned());
        }
        // The interval that ends at a throttled sample counts as throttled (none before the first).
        if r.gpus.iter().any(|g| !g.throttle.is_empty()) && self.first_t.is_some() {
            self.throttled_s += (r.t_s - self.last_t).max(0.0);
        }
        if self.first_temp.is_none() && self.samples == 0 {
            self.first_temp = values[Metric::GpuTemp as usize];
        }
        if r.engine.limit.is_some() {
            self.limit = r.engine.limit;
        }
        self.samples = self.samples.saturating_add(1);
        self.first_t.get_or_insert(r.t_s);
        self.last_t = r.t_s;
        let get = |m: Metric| values[m as usize];
        let prev = self.latest;
        self.latest = Snapshot {
            t_s: r.t_s,
            samples: self.samples,
            gpu_temp_c: get(Metric::GpuTemp),
            gpu_util_pct: get(Metric::GpuUtil),
            gpu_power_w: get(Metric::GpuPower),
            vram_used_bytes: get(Metric::VramUsed).map(|b| b as u64),
            // Docker stats arrive about once a second: between them keep the last figure.
            engine_mem_bytes: r.engine.mem.or(prev.engine_mem_bytes),
            engine_cpu_pct: r.engine.cpu_pct.or(prev.engine_cpu_pct),
            host_mem_available_bytes: r.host.map(|m| m.available),
        };
    }

    pub(super) fn record_cost(&mut self, took: Duration) {
        self.cost_ticks += 1;
        self.cost_total += took;
        self.cost_max = self.cost_max.max(took);
    }

    pub(super) fn cost(&self) -> SamplerCost {
        SamplerCost {
            ticks: self.cost_ticks,
            mean_ms: if self.cost_ticks == 0 {
                0.0
            } else {
                self.cost_total.as_secs_f64() * 1000.0 / self.cost_ticks as f64
            },
            max_ms: self.cost_max.as_secs_f64() * 1000.0,
        }
    }

    pub(super) fn summary(&self, hz: f64, output_tokens: u64) -> TelemetrySummary {
        let s = |m: Metric| self.acc[m as usize].summary();
        let energy = self.energy.result();
        let cpu = self.cpu_energy.result();
        let per_token = |j: f64| (output_tokens > 0).then(|| j / output_tokens as f64);
        let gpus_seen = self.acc[Metric::GpuTemp as usize].summary().is_some()
            || self.acc[Metric::VramUsed as usize].summary().is_some();
        let proc_mem = s(Metric::GpuProcMem);
        TelemetrySummary {
            sample_hz: hz,
            samples: self.samples,
            duration_s: self.first_t.map_or(0.0, |t0| self.last_t - t0),
            gpu_util_pct: s(Metric::GpuUtil),
            gpu_temp_c: s(Metric::GpuTemp),
            gpu_power_w: s(Metric::GpuPower),
            vram_used_bytes: s(Metric::VramUsed),
            sm_clock_mhz: s(Metric::SmClock),
            gpu_energy_j: energy.map(|(j, _)| j),
            energy_source: energy.map(|(_, src)| src.to_string()),
            joules_per_token: energy.filter(|_| output_tokens > 0).map(|(j, _)| j / output_tokens as f64),
            throttle_reasons: self.throttle.iter().cloned().collect(),
            engine_mem_bytes: s(Metric::EngineMem),
            engine_cache_bytes: s(Metric::EngineCache),
            engine_mem_limit: self.limit,
            engine_cpu_pct: s(Metric::EngineCpu),
            host_mem_available_bytes: s(Metric::HostAvailable),
            host_swap_used_bytes: s(Metric::HostSwapUsed),
            thermal_pauses: self.pauses.clone(),
            gpu_process_scope: proc_mem.and(self.proc_scope.clone()),
            gpu_process_mem_bytes: proc_mem,
            gpu_temp_first_c: self.first_temp,
            throttled_s: gpus_seen.then_some(self.throttled_s),
            cpu_joules_per_token: cpu.as_ref().and_then(|(j, _)| per_token(*j)),
            cpu_energy_j: cpu.as_ref().map(|(j, _)| *j),
            cpu_energy_source: cpu.map(|(_, src)| src),
            series: None,
            notes: self.notes.clone(),
        }
    }
}
