//! Telemetry sampled around every benchmark run: GPUs (NVML), the engine (Docker stats or
//! `/proc`) and the host. The latest figures ([`Sampler::latest`]) feed the Writer's thermal guard.
//!
//! The [`Sampler`] runs on the Tokio runtime and moves every blocking call (NVML FFI, `/proc`
//! reads) onto the blocking pool. Peaks and means come from every sample; the time series kept
//! for charts is bounded by a [`Downsampler`], so a run of any length costs the same memory.
//! Without NVML the sampler says why once (the text of [`Gpus::note`]) and still samples the
//! engine and the host.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use nvml_wrapper::enums::device::UsedGpuMemory;
use protocol::results::{MetricSummary, TelemetrySummary, ThermalPause};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use crate::docker::{ContainerStats, DockerError, DockerRuntime};
use crate::gpu::{GpuSample, Gpus};
use crate::system::{self, MemInfo};

/// Highest sampling rate the plan may ask for, Hz.
pub const MAX_HZ: f64 = 10.0;

/// Points kept per metric in the time series before adjacent pairs are merged.
pub const SERIES_CAP: usize = 2048;

/// Clock ticks per second of `/proc/<pid>/stat` CPU times.
///
/// `sysconf(_SC_CLK_TCK)` is 100 on every Linux architecture we run on (x86-64, arm64); reading
/// it needs nix's `feature` module, which the workspace does not enable, so it is assumed.
const CLK_TCK: f64 = 100.0;

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
const COLUMNS: [&str; WIDTH] = protocol::results::TELEMETRY_COLUMNS;

// ---------------------------------------------------------------------------------------------
// Summaries
// ---------------------------------------------------------------------------------------------

/// Running peak, mean and minimum of one figure, fed one sample at a time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Accumulator {
    n: u64,
    sum: f64,
    min: f64,
    max: f64,
}

impl Default for Accumulator {
    fn default() -> Self {
        Self { n: 0, sum: 0.0, min: f64::INFINITY, max: f64::NEG_INFINITY }
    }
}

impl Accumulator {
    /// Adds one sample; NaN and infinities are ignored (a broken reading, not a figure).
    pub fn add(&mut self, v: f64) {
        if !v.is_finite() {
            return;
        }
        self.n += 1;
        self.sum += v;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
    }

    /// Peak, mean and minimum so far; `None` before the first sample.
    pub fn summary(&self) -> Option<MetricSummary> {
        (self.n > 0).then(|| MetricSummary {
            peak: self.max,
            mean: self.sum / self.n as f64,
            min: self.min,
            samples: u32::try_from(self.n).unwrap_or(u32::MAX),
        })
    }
}

/// Peak, mean and minimum of a recorded series; `None` when it holds no finite sample.
pub fn summarise(samples: &[f64]) -> Option<MetricSummary> {
    let mut acc = Accumulator::default();
    samples.iter().for_each(|&v| acc.add(v));
    acc.summary()
}

// ---------------------------------------------------------------------------------------------
// Downsampling
// ---------------------------------------------------------------------------------------------

/// One cell of the series: the samples merged into it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Cell {
    n: u32,
    sum: f64,
    max: f64,
}

impl Cell {
    fn add(&mut self, v: f64) {
        self.max = if self.n == 0 { v } else { self.max.max(v) };
        self.sum += v;
        self.n += 1;
    }

    fn merge(self, o: Cell) -> Cell {
        match (self.n, o.n) {
            (0, _) => o,
            (_, 0) => self,
            _ => Cell { n: self.n + o.n, sum: self.sum + o.sum, max: self.max.max(o.max) },
        }
    }
}

/// One point of a downsampled series.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesPoint {
    /// Seconds since sampling started, of the first sample merged into this point.
    pub t_s: f64,
    /// Raw samples merged into this point.
    pub samples: u64,
    /// Mean of each column over those samples (`None`: no reading).
    pub mean: Vec<Option<f64>>,
    /// Highest value of each column over those samples.
    pub max: Vec<Option<f64>>,
}

/// A time series of fixed width holding at most `cap` points: when full, adjacent pairs merge
/// (mean and max kept) and each later point covers twice as many samples.
#[derive(Debug, Clone)]
pub struct Downsampler {
    width: usize,
    cap: usize,
    /// Raw samples per completed point.
    stride: u64,
    times: Vec<f64>,
    counts: Vec<u64>,
    /// `times.len() * width` cells, row after row.
    cells: Vec<Cell>,
    pending_t: f64,
    pending_n: u64,
    pending: Vec<Cell>,
}

impl Downsampler {
    /// A series of `width` columns keeping at most `cap` points (`cap` is raised to an even
    /// number of at least 2 so pairs always merge).
    pub fn new(width: usize, cap: usize) -> Self {
        let cap = cap.max(2).next_multiple_of(2);
        Self {
            width,
            cap,
            stride: 1,
            times: Vec::with_capacity(cap),
            counts: Vec::with_capacity(cap),
            cells: Vec::with_capacity(cap * width),
            pending_t: 0.0,
            pending_n: 0,
            pending: vec![Cell::default(); width],
        }
    }

    /// Adds one sample taken `t_s` seconds in; missing columns are `None`.
    pub fn push(&mut self, t_s: f64, values: &[Option<f64>]) {
        if self.pending_n == 0 {
            self.pending_t = t_s;
        }
        for (cell, v) in self.pending.iter_mut().zip(values) {
            if let Some(v) = v.filter(|v| v.is_finite()) {
                cell.add(v);
            }
        }
        self.pending_n += 1;
        if self.pending_n < self.stride {
            return;
        }
        self.times.push(self.pending_t);
        self.counts.push(self.pending_n);
        self.cells.append(&mut self.pending);
        self.pending = vec![Cell::default(); self.width];
        self.pending_n = 0;
        if self.times.len() >= self.cap {
            self.halve();
        }
    }

    /// Merges adjacent pairs of points, halving the resolution of everything kept so far.
    fn halve(&mut self) {
        let w = self.width;
        let pairs = self.times.len() / 2;
        for i in 0..pairs {
            let (a, b) = (2 * i, 2 * i + 1);
            self.times[i] = self.times[a];
            self.counts[i] = self.counts[a] + self.counts[b];
            for c in 0..w {
                self.cells[i * w + c] = self.cells[a * w + c].merge(self.cells[b * w + c]);
            }
        }
        self.times.truncate(pairs);
        self.counts.truncate(pairs);
        self.cells.truncate(pairs * w);
        self.stride *= 2;
    }

    /// Points held now, the partly filled last one included.
    pub fn len(&self) -> usize {
        self.times.len() + usize::from(self.pending_n > 0)
    }

    /// Whether no sample was pushed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Raw samples each completed point now covers.
    pub fn stride(&self) -> u64 {
        self.stride
    }

    /// The series, oldest point first, the partly filled last one included.
    pub fn points(&self) -> Vec<SeriesPoint> {
        let w = self.width;
        let row = |t_s: f64, samples: u64, cells: &[Cell]| SeriesPoint {
            t_s,
            samples,
            mean: cells.iter().map(|c| (c.n > 0).then(|| c.sum / f64::from(c.n))).collect(),
            max: cells.iter().map(|c| (c.n > 0).then_some(c.max)).collect(),
        };
        let mut out: Vec<SeriesPoint> = (0..self.times.len())
            .map(|i| row(self.times[i], self.counts[i], &self.cells[i * w..(i + 1) * w]))
            .collect();
        if self.pending_n > 0 {
            out.push(row(self.pending_t, self.pending_n, &self.pending));
        }
        out
    }

    /// The series as CSV: `t_s,samples`, then for each column its mean and `<name>_max`.
    pub fn to_csv(&self, names: &[&str]) -> String {
        let mut csv = String::from("t_s,samples");
        for n in names {
            let _ = write!(csv, ",{n},{n}_max");
        }
        csv.push('\n');
        for p in self.points() {
            let _ = write!(csv, "{:.3},{}", p.t_s, p.samples);
            for (mean, max) in p.mean.iter().zip(&p.max) {
                csv.push(',');
                csv.push_str(&mean.map(csv_number).unwrap_or_default());
                csv.push(',');
                csv.push_str(&max.map(csv_number).unwrap_or_default());
            }
            csv.push('\n');
        }
        csv
    }
}

/// A number for the CSV: whole numbers without decimals (bytes), others to 3 places.
fn csv_number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

// ---------------------------------------------------------------------------------------------
// Energy
// ---------------------------------------------------------------------------------------------

/// GPU energy over a run: the NVML energy counter when every sample had it, else the
/// trapezoid integral of total power.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EnergyMeter {
    first_mj: BTreeMap<u32, u64>,
    last_mj: BTreeMap<u32, u64>,
    /// False once a sample lacked a counter or a counter went backwards (driver reload).
    counter_ok: bool,
    samples: u64,
    integral_j: f64,
    integral_ok: bool,
    prev_power: Option<(f64, f64)>,
}

impl EnergyMeter {
    /// Source names recorded in [`TelemetrySummary::energy_source`].
    pub const COUNTER: &str = "nvml energy counter";
    /// See [`EnergyMeter::COUNTER`].
    pub const INTEGRAL: &str = "power integral";

    /// Adds the GPUs' readings taken `t_s` seconds in (nothing to add without GPUs).
    pub fn add(&mut self, t_s: f64, gpus: &[GpuSample]) {
        if gpus.is_empty() {
            return;
        }
        if self.samples == 0 {
            self.counter_ok = true;
            self.integral_ok = true;
        }
        self.samples += 1;
        for g in gpus {
            match g.energy_mj {
                Some(mj) => {
                    self.first_mj.entry(g.index).or_insert(mj);
                    let prev = self.last_mj.insert(g.index, mj);
                    if prev.is_some_and(|p| mj < p) {
                        self.counter_ok = false;
                    }
                }
                None => self.counter_ok = false,
            }
        }
        let power: Option<f64> = gpus.iter().map(|g| g.power_w).sum();
        match power {
            Some(w) => {
                if let Some((t0, w0)) = self.prev_power {
                    self.integral_j += (t_s - t0).max(0.0) * (w0 + w) / 2.0;
                }
                self.prev_power = Some((t_s, w));
            }
            None => self.integral_ok = false,
        }
    }

    /// Joules over the samples and where the figure came from; `None` without two GPU samples.
    pub fn result(&self) -> Option<(f64, &'static str)> {
        if self.samples < 2 {
            return None;
        }
        if self.counter_ok {
            let mj: u64 = self
                .last_mj
                .iter()
                .map(|(i, last)| last.saturating_sub(self.first_mj.get(i).copied().unwrap_or(*last)))
                .sum();
            return Some((mj as f64 / 1000.0, Self::COUNTER));
        }
        self.integral_ok.then_some((self.integral_j, Self::INTEGRAL))
    }
}

// ---------------------------------------------------------------------------------------------
// One sample, and what the run has seen so far
// ---------------------------------------------------------------------------------------------

/// What the engine used at one sample.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct EngineReading {
    /// Working set (container usage − page cache) or process RSS, bytes.
    mem: Option<u64>,
    /// Container page cache, bytes.
    cache: Option<u64>,
    /// CPU, % of one core.
    cpu_pct: Option<f64>,
    /// Memory limit, bytes.
    limit: Option<u64>,
}

/// Everything read at one tick.
#[derive(Debug, Clone, Default, PartialEq)]
struct Reading {
    t_s: f64,
    gpus: Vec<GpuSample>,
    gpu_proc_mem: Option<u64>,
    engine: EngineReading,
    host: Option<MemInfo>,
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
struct Recorder {
    acc: [Accumulator; WIDTH],
    series: Downsampler,
    energy: EnergyMeter,
    throttle: BTreeSet<String>,
    notes: Vec<String>,
    limit: Option<u64>,
    samples: u32,
    first_t: Option<f64>,
    last_t: f64,
    pauses: Vec<ThermalPause>,
    latest: Snapshot,
    cost_ticks: u64,
    cost_total: Duration,
    cost_max: Duration,
}

impl Recorder {
    fn new(cap: usize) -> Self {
        Self {
            acc: [Accumulator::default(); WIDTH],
            series: Downsampler::new(WIDTH, cap),
            energy: EnergyMeter::default(),
            throttle: BTreeSet::new(),
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
    fn note(&mut self, text: impl Into<String>) {
        let text = text.into();
        if !self.notes.contains(&text) {
            self.notes.push(text);
        }
    }

    fn record(&mut self, r: &Reading) {
        let values = r.values();
        for (acc, v) in self.acc.iter_mut().zip(values) {
            if let Some(v) = v {
                acc.add(v);
            }
        }
        self.series.push(r.t_s, &values);
        self.energy.add(r.t_s, &r.gpus);
        for g in &r.gpus {
            self.throttle.extend(g.throttle.iter().cloned());
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

    fn record_cost(&mut self, took: Duration) {
        self.cost_ticks += 1;
        self.cost_total += took;
        self.cost_max = self.cost_max.max(took);
    }

    fn cost(&self) -> SamplerCost {
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

    fn summary(&self, hz: f64, output_tokens: u64) -> TelemetrySummary {
        let s = |m: Metric| self.acc[m as usize].summary();
        let energy = self.energy.result();
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
            series: None,
            notes: self.notes.clone(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The sampler
// ---------------------------------------------------------------------------------------------

/// Where the engine's memory and CPU figures come from.
#[derive(Debug, Clone)]
pub enum EngineTarget {
    /// A container: the Docker stats stream (about one sample a second).
    Container {
        /// The engine.
        docker: DockerRuntime,
        /// Container id or name.
        id: String,
    },
    /// A host process: `/proc/<pid>` (RSS, CPU ticks).
    Process {
        /// Its pid.
        pid: u32,
    },
    /// No engine figures (e.g. the Reader's idle baseline).
    None,
}

/// The newest Docker stats sample and how many have arrived.
#[derive(Debug, Default)]
struct ContainerFeed {
    latest: Option<ContainerStats>,
    /// Whether `latest` carries a CPU figure (the stream's first sample has none).
    cpu_valid: bool,
    seq: u64,
}

/// State shared by the sampler's tasks and its handle.
#[derive(Debug)]
struct Shared {
    rec: Mutex<Recorder>,
    container: Mutex<ContainerFeed>,
}

/// Locks a mutex; a panicked sampler task leaves figures that are still worth reading.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Samples GPUs, the engine and the host at a fixed rate until [`Sampler::finish`].
#[derive(Debug)]
pub struct Sampler {
    shared: Arc<Shared>,
    hz: f64,
    started: Instant,
    stop: Option<oneshot::Sender<()>>,
    sampling: Option<JoinHandle<()>>,
    stats: Option<JoinHandle<()>>,
}

impl Sampler {
    /// Starts sampling `target` at `hz` (clamped to (0, 10]; 1 when invalid) with [`SERIES_CAP`]
    /// points of series. Must be called inside a Tokio runtime.
    pub fn start(target: EngineTarget, hz: f64, gpus: Arc<Gpus>) -> Sampler {
        Self::start_with_cap(target, hz, gpus, SERIES_CAP)
    }

    /// [`Sampler::start`] keeping at most `cap` series points.
    pub fn start_with_cap(target: EngineTarget, hz: f64, gpus: Arc<Gpus>, cap: usize) -> Sampler {
        let hz = if hz.is_finite() && hz > 0.0 { hz.min(MAX_HZ) } else { 1.0 };
        let mut rec = Recorder::new(cap);
        if let Some(why) = gpus.note() {
            rec.note(why);
        }
        let shared = Arc::new(Shared { rec: Mutex::new(rec), container: Mutex::new(ContainerFeed::default()) });
        let started = Instant::now();
        let (stop_tx, stop_rx) = oneshot::channel();
        let (pid, stats) = match target {
            EngineTarget::Container { docker, id } => {
                let stream = docker.stats_stream(&id);
                let task = tokio::spawn(feed_container(shared.clone(), id, stream));
                (None, Some(task))
            }
            EngineTarget::Process { pid } => (Some(pid), None),
            EngineTarget::None => (None, None),
        };
        let period = Duration::from_secs_f64(1.0 / hz);
        let container = stats.is_some();
        let sampling = tokio::spawn(sample_loop(shared.clone(), gpus, pid, container, period, started, stop_rx));
        Sampler { shared, hz, started, stop: Some(stop_tx), sampling: Some(sampling), stats }
    }

    /// Samples per second actually used.
    pub fn hz(&self) -> f64 {
        self.hz
    }

    /// Seconds since sampling started.
    pub fn elapsed_s(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// The latest figures (all `None` before the first sample).
    pub fn latest(&self) -> Snapshot {
        lock(&self.shared.rec).latest
    }

    /// Waits until the first sample is in, at most `limit`, so that a check made right after
    /// [`Sampler::start`] (the thermal guard's first) sees figures.
    pub async fn first_sample(&self, limit: Duration) {
        let began = Instant::now();
        while self.latest().samples == 0 && began.elapsed() < limit {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// What sampling has cost so far (wall time of each tick's reads).
    pub fn cost(&self) -> SamplerCost {
        lock(&self.shared.rec).cost()
    }

    /// Records a thermal pause so it appears in the summary's `thermal_pauses`.
    pub fn record_pause(&self, pause: ThermalPause) {
        lock(&self.shared.rec).pauses.push(pause);
    }

    /// Stops sampling and returns the run's summary (its `series` left for the caller to fill
    /// once the CSV is stored) and the series as CSV: `t_s,samples`, then each metric's mean and
    /// `_max`. `joules_per_token` is the GPU energy over the sampled window / `output_tokens`.
    pub async fn finish(mut self, output_tokens: u64) -> (TelemetrySummary, String) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.stats.take() {
            task.abort();
        }
        // Let an in-flight sample land rather than cutting it off.
        if let Some(task) = self.sampling.take()
            && let Err(e) = task.await
        {
            lock(&self.shared.rec).note(format!("the telemetry sampler stopped early: {e}"));
        }
        let rec = lock(&self.shared.rec);
        (rec.summary(self.hz, output_tokens), rec.series.to_csv(&COLUMNS))
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        // A sampler dropped without `finish` (an error path) must not sample forever.
        for task in [self.sampling.take(), self.stats.take()].into_iter().flatten() {
            task.abort();
        }
    }
}

/// Keeps the newest Docker stats sample in `shared` until the stream ends or fails.
async fn feed_container(
    shared: Arc<Shared>,
    id: String,
    stream: impl Stream<Item = Result<ContainerStats, DockerError>>,
) {
    let mut stream = std::pin::pin!(stream);
    let mut first = true;
    while let Some(item) = stream.next().await {
        match item {
            Ok(stats) => {
                let mut feed = lock(&shared.container);
                feed.latest = Some(stats);
                // The first sample has no previous CPU reading to compare with: its 0 % is not a figure.
                feed.cpu_valid = !first;
                feed.seq += 1;
                first = false;
            }
            Err(e) => {
                lock(&shared.rec).note(format!("container stats unavailable: {e}"));
                return;
            }
        }
    }
    lock(&shared.rec).note(format!("container `{id}` stopped sending stats before the run finished"));
}

/// What one blocking read of the machine returns.
struct MachineRead {
    gpus: Result<Vec<GpuSample>, String>,
    gpu_proc_mem: Option<u64>,
    host: Option<MemInfo>,
    proc_mem: Option<u64>,
    proc_ticks: Option<u64>,
    at: Instant,
}

/// NVML and `/proc` reads for one tick (blocking: runs on the blocking pool).
fn read_machine(gpus: &Gpus, pid: Option<u32>, container: bool) -> MachineRead {
    let gpu_samples = gpus.sample().map_err(|e| e.to_string());
    // A container's processes are not mapped to pids here: count every process on the GPUs.
    let proc_filter = if container { None } else { pid };
    let gpu_proc_mem = match &gpu_samples {
        Ok(s) if !s.is_empty() => gpu_process_memory(gpus, proc_filter),
        _ => None,
    };
    MachineRead {
        gpus: gpu_samples,
        gpu_proc_mem,
        host: system::meminfo().ok(),
        proc_mem: pid.and_then(system::process_memory).map(|(rss, _)| rss),
        proc_ticks: pid.and_then(system::process_cpu_ticks),
        at: Instant::now(),
    }
}

/// VRAM used by GPU processes (only `pid` when given), bytes; `None` when NVML lists none.
fn gpu_process_memory(gpus: &Gpus, pid: Option<u32>) -> Option<u64> {
    let Gpus::Nvml(nvml) = gpus else { return None };
    let mut seen = BTreeMap::new();
    for i in 0..nvml.device_count().ok()? {
        let Ok(d) = nvml.device_by_index(i) else {
            continue;
        };
        let compute = d.running_compute_processes().unwrap_or_default();
        let graphics = d.running_graphics_processes().unwrap_or_default();
        for p in compute.into_iter().chain(graphics) {
            if pid.is_some_and(|want| p.pid != want) {
                continue;
            }
            if let UsedGpuMemory::Used(bytes) = p.used_gpu_memory {
                // A process doing compute and graphics is listed twice: count it once per GPU.
                seen.insert((i, p.pid), bytes);
            }
        }
    }
    (!seen.is_empty()).then(|| seen.values().sum())
}

/// The sampling loop: one reading per period until told to stop.
async fn sample_loop(
    shared: Arc<Shared>,
    gpus: Arc<Gpus>,
    pid: Option<u32>,
    container: bool,
    period: Duration,
    started: Instant,
    mut stop: oneshot::Receiver<()>,
) {
    let mut tick = tokio::time::interval(period);
    // After a slow NVML call, skip missed ticks instead of bursting to catch up.
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut prev_ticks: Option<(Instant, u64)> = None;
    let mut seen_seq = 0;
    let mut nvml_failed = false;
    let mut process_gone = false;
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = tick.tick() => {}
        }
        let began = Instant::now();
        let g = gpus.clone();
        let Ok(read) = tokio::task::spawn_blocking(move || read_machine(&g, pid, container)).await else {
            continue;
        };
        let mut engine = EngineReading::default();
        if let Some(pid) = pid {
            engine.mem = read.proc_mem;
            if let (Some(now), Some((t0, ticks0))) = (read.proc_ticks, prev_ticks) {
                let dt = read.at.duration_since(t0).as_secs_f64();
                if dt > 0.0 {
                    engine.cpu_pct = Some(now.saturating_sub(ticks0) as f64 / CLK_TCK / dt * 100.0);
                }
            }
            prev_ticks = read.proc_ticks.map(|t| (read.at, t));
            if read.proc_mem.is_none() && !process_gone {
                process_gone = true;
                lock(&shared.rec).note(format!("engine process {pid} is not in /proc (it exited?)"));
            }
        }
        if container {
            let feed = lock(&shared.container);
            // Only a new Docker sample counts: repeating the last one would skew means at 10 Hz.
            if feed.seq != seen_seq
                && let Some(s) = feed.latest
            {
                seen_seq = feed.seq;
                engine.mem = Some(s.mem_working_set);
                engine.cache = Some(s.mem_cache);
                engine.cpu_pct = feed.cpu_valid.then_some(s.cpu_percent);
                engine.limit = (s.mem_limit > 0).then_some(s.mem_limit);
            }
        }
        let gpus_now = match read.gpus {
            Ok(s) => s,
            Err(e) => {
                if !nvml_failed {
                    nvml_failed = true;
                    lock(&shared.rec).note(format!("NVML sample failed: {e}"));
                }
                Vec::new()
            }
        };
        let reading = Reading {
            t_s: read.at.duration_since(started).as_secs_f64(),
            gpus: gpus_now,
            gpu_proc_mem: read.gpu_proc_mem,
            engine,
            host: read.host,
        };
        let mut rec = lock(&shared.rec);
        rec.record(&reading);
        rec.record_cost(began.elapsed());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::docker::ContainerSpec;

    const NO_NVML: &str = "no NVIDIA GPU (libnvidia-ml not found)";

    fn gpu(index: u32, temp: u32, power_w: f64, energy_mj: Option<u64>) -> GpuSample {
        GpuSample {
            index,
            mem_used: 1 << 30,
            mem_free: 23 << 30,
            mem_total: 24 << 30,
            util_pct: Some(90),
            temp_c: Some(temp),
            power_w: Some(power_w),
            energy_mj,
            sm_clock_mhz: Some(1800),
            mem_clock_mhz: Some(9000),
            throttle: Vec::new(),
        }
    }

    #[test]
    fn downsampling_keeps_peaks_exact_and_memory_bounded_over_100k_samples() {
        const N: u64 = 100_000;
        let mut ds = Downsampler::new(2, SERIES_CAP);
        let mut all = Vec::new();
        for i in 0..N {
            let mut v = (i as f64 * 0.01).sin() * 10.0 + 50.0;
            if i == 77_777 {
                v = 1_000.0; // one spike: a mean-only downsampler would lose it
            }
            all.push(v);
            // The second column is missing on odd samples (a 1 Hz source in a 2 Hz series).
            ds.push(i as f64 * 0.1, &[Some(v), (i % 2 == 0).then_some(i as f64)]);
            assert!(ds.len() <= SERIES_CAP, "{} points after {i} samples", ds.len());
        }
        let points = ds.points();
        assert!(points.len() > SERIES_CAP / 4, "too coarse: {}", points.len());
        assert_eq!(points.iter().map(|p| p.samples).sum::<u64>(), N);
        assert!(ds.stride() >= N / SERIES_CAP as u64);
        let peak = points.iter().filter_map(|p| p.max[0]).fold(f64::MIN, f64::max);
        assert_eq!(peak, 1_000.0);
        assert_eq!(points.iter().filter_map(|p| p.max[1]).fold(f64::MIN, f64::max), 99_998.0);
        // Times are ascending and start at the first sample.
        assert_eq!(points[0].t_s, 0.0);
        assert!(points.windows(2).all(|w| w[0].t_s < w[1].t_s));
        // The weighted mean of the points is the mean of every sample.
        let weighted: f64 = points.iter().map(|p| p.mean[0].unwrap() * p.samples as f64).sum();
        let exact = summarise(&all).unwrap();
        assert!((weighted / N as f64 - exact.mean).abs() < 1e-9);
        assert_eq!(exact.peak, 1_000.0);
        assert_eq!(exact.samples, N as u32);
    }

    #[test]
    fn recorder_summary_uses_all_samples_not_the_downsampled_series() {
        let mut rec = Recorder::new(8);
        for i in 0..1_000u32 {
            let temp = if i == 501 { 83 } else { 60 + i % 5 };
            rec.record(&Reading { t_s: f64::from(i), gpus: vec![gpu(0, temp, 100.0, None)], ..Reading::default() });
        }
        assert!(rec.series.len() <= 8);
        let s = rec.summary(1.0, 0);
        let t = s.gpu_temp_c.unwrap();
        assert_eq!((t.peak, t.min, t.samples), (83.0, 60.0, 1_000));
        assert_eq!(s.samples, 1_000);
        assert_eq!(s.duration_s, 999.0);
        let csv = rec.series.to_csv(&COLUMNS);
        assert!(csv.starts_with("t_s,samples,gpu_util_pct,gpu_util_pct_max,gpu_temp_c,gpu_temp_c_max,"));
        assert!(csv.contains(",83,"), "the peak survives in a _max column:\n{csv}");
        assert!(csv.lines().count() <= 9);
    }

    #[test]
    fn summary_of_a_recorded_series() {
        // GPU temperature of a short recorded run, °C, at 1 Hz (one reading lost as NaN).
        let recorded = [41.0, 44.0, 52.0, 61.0, 66.0, 68.0, f64::NAN, 67.0, 63.0, 58.0];
        let s = summarise(&recorded).unwrap();
        assert_eq!(s.peak, 68.0);
        assert_eq!(s.min, 41.0);
        assert_eq!(s.samples, 9);
        assert!((s.mean - 520.0 / 9.0).abs() < 1e-12, "{}", s.mean);
        assert_eq!(summarise(&[]), None);
        assert_eq!(summarise(&[f64::NAN]), None);
    }

    #[test]
    fn energy_from_counter_and_from_power_integral() {
        // Two GPUs at 200 W and 100 W for 10 s, sampled at 1 Hz (11 samples).
        let mut counter = EnergyMeter::default();
        let mut integral = EnergyMeter::default();
        for s in 0..=10u64 {
            let t = s as f64;
            counter.add(
                t,
                &[gpu(0, 60, 200.0, Some(5_000_000 + 200_000 * s)), gpu(1, 60, 100.0, Some(9_000_000 + 100_000 * s))],
            );
            integral.add(t, &[gpu(0, 60, 200.0, None), gpu(1, 60, 100.0, None)]);
        }
        assert_eq!(counter.result(), Some((3_000.0, EnergyMeter::COUNTER)));
        let (j, src) = integral.result().unwrap();
        assert_eq!(src, EnergyMeter::INTEGRAL);
        assert!((j - 3_000.0).abs() < 1e-9, "{j}");

        // A ramp 0 → 100 W over 10 s: the trapezoid integral is exact for linear power.
        let mut ramp = EnergyMeter::default();
        for s in 0..=10 {
            ramp.add(f64::from(s), &[gpu(0, 60, f64::from(s) * 10.0, None)]);
        }
        assert_eq!(ramp.result(), Some((500.0, EnergyMeter::INTEGRAL)));

        // A counter that goes backwards (driver reload) is not trusted.
        let mut reset = EnergyMeter::default();
        reset.add(0.0, &[gpu(0, 60, 100.0, Some(1_000_000))]);
        reset.add(1.0, &[gpu(0, 60, 100.0, Some(10))]);
        assert_eq!(reset.result(), Some((100.0, EnergyMeter::INTEGRAL)));

        // No GPU: no energy at all.
        let mut none = EnergyMeter::default();
        none.add(0.0, &[]);
        none.add(1.0, &[]);
        assert_eq!(none.result(), None);

        // Through the recorder: J/token, and the throttle reasons as a union.
        let mut rec = Recorder::new(64);
        for s in 0..=10u64 {
            let mut g = gpu(0, 60, 200.0, Some(200_000 * s));
            if s == 3 {
                g.throttle = vec!["SW_POWER_CAP".into()];
            }
            if s == 7 {
                g.throttle = vec!["HW_SLOWDOWN".into(), "SW_POWER_CAP".into()];
            }
            rec.record(&Reading { t_s: s as f64, gpus: vec![g], ..Reading::default() });
        }
        let s = rec.summary(1.0, 400);
        assert_eq!(s.gpu_energy_j, Some(2_000.0));
        assert_eq!(s.energy_source.as_deref(), Some(EnergyMeter::COUNTER));
        assert_eq!(s.joules_per_token, Some(5.0));
        assert_eq!(s.throttle_reasons, vec!["HW_SLOWDOWN", "SW_POWER_CAP"]);
        assert_eq!(rec.summary(1.0, 0).joules_per_token, None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn without_nvml_the_note_appears_once_and_the_process_and_host_are_sampled() {
        let gpus = Arc::new(Gpus::Unavailable(NO_NVML.into()));
        let sampler = Sampler::start(EngineTarget::Process { pid: std::process::id() }, 5.0, gpus);
        // Burn some CPU so the process's CPU figure has something to show.
        let spin = Instant::now();
        let mut x = 0u64;
        while spin.elapsed() < Duration::from_millis(300) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        tokio::time::sleep(Duration::from_millis(1_300)).await;
        let latest = sampler.latest();
        assert_eq!(latest.gpu_temp_c, None);
        assert!(latest.engine_mem_bytes.unwrap() > 0);
        let (s, csv) = sampler.finish(100).await;

        assert_eq!(s.notes.iter().filter(|n| *n == NO_NVML).count(), 1, "{:?}", s.notes);
        assert_eq!(s.notes.len(), 1, "{:?}", s.notes);
        assert!(s.samples >= 5, "{} samples", s.samples);
        let rss = s.engine_mem_bytes.unwrap();
        assert!(rss.peak > 0.0 && rss.min > 0.0, "{rss:?}");
        assert!(s.engine_cpu_pct.unwrap().peak > 0.0, "{:?}", s.engine_cpu_pct);
        assert!(s.host_mem_available_bytes.unwrap().min > 0.0);
        assert!(s.host_swap_used_bytes.is_some());
        assert_eq!(s.engine_mem_limit, None);
        assert_eq!((s.gpu_temp_c, s.gpu_power_w, s.gpu_energy_j, s.joules_per_token), (None, None, None, None));
        assert!(s.thermal_pauses.is_empty());
        assert_eq!(csv.lines().count(), s.samples as usize + 1, "{csv}");
    }

    /// The NVML double with `script`, loaded as `host::gpu` loads NVML.
    fn double(script: &str) -> (testkit::nvml_double::Scripted, Arc<Gpus>) {
        let d = testkit::nvml_double::Scripted::new(script);
        let g = Gpus::probe_lib(Some(d.lib().as_os_str()));
        assert!(g.note().is_none(), "the double did not load: {:?}", g.note());
        (d, Arc::new(g))
    }

    /// Waits until the sampler has taken `n` samples.
    async fn samples(sampler: &Sampler, n: u32) {
        let began = Instant::now();
        while sampler.latest().samples < n {
            assert!(began.elapsed() < Duration::from_secs(20), "only {} samples", sampler.latest().samples);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn on_the_double_gpu_columns_energy_counter_and_process_memory_are_recorded() {
        let me = std::process::id();
        let script = format!(
            "driver = 580.95.05\ngpu0.name = NVIDIA GeForce RTX 5070 Ti\ngpu0.memory_total = 16GiB\n\
             gpu0.memory_used = 2GiB, 9GiB*3, 9.5GiB\ngpu0.utilization = 0, 85, 97\ngpu0.temperature = 40, 55, 61\n\
             gpu0.power = 30000, 240000, 285000\ngpu0.energy = 5000000, 5020000, 5040000, 5060000, 5080000\n\
             gpu0.clock_sm = 2805\ngpu0.clock_mem = 13801\ngpu0.throttle = 0x1, 0x4, 0x0\n\
             gpu0.processes = {me}:7.5GiB 1:1GiB\n"
        );
        let (_d, gpus) = double(&script);
        let sampler = Sampler::start(EngineTarget::Process { pid: me }, 10.0, gpus);
        samples(&sampler, 6).await;
        let latest = sampler.latest();
        assert_eq!((latest.gpu_temp_c, latest.gpu_util_pct, latest.gpu_power_w), (Some(61.0), Some(97.0), Some(285.0)));
        let (s, csv) = sampler.finish(40).await;

        assert!(s.notes.is_empty(), "{:?}", s.notes);
        let temp = s.gpu_temp_c.unwrap();
        assert_eq!((temp.peak, temp.min), (61.0, 40.0));
        let power = s.gpu_power_w.unwrap();
        assert_eq!((power.peak, power.min), (285.0, 30.0));
        let vram = s.vram_used_bytes.unwrap();
        assert_eq!((vram.peak, vram.min), (9.5 * GIB, 2.0 * GIB));
        assert_eq!(s.sm_clock_mhz.unwrap().peak, 2805.0);
        // Four steps of 20 J on the counter (the sequence then holds): 80 J for 40 tokens.
        assert_eq!(s.gpu_energy_j, Some(80.0));
        assert_eq!(s.energy_source.as_deref(), Some(EnergyMeter::COUNTER));
        assert_eq!(s.joules_per_token, Some(2.0));
        assert_eq!(s.throttle_reasons, vec!["SW_POWER_CAP"], "GPU_IDLE is not a throttle reason");

        // The series carries every GPU column; the engine's own GPU memory is its pid's only.
        let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
        let last: Vec<&str> = csv.lines().last().unwrap().split(',').collect();
        let col = |name: &str| last[header.iter().position(|h| *h == name).unwrap()];
        assert_eq!(col("gpu_process_mem_bytes"), (15u64 << 29).to_string(), "{csv}");
        assert_eq!(col("vram_total_bytes"), (16u64 << 30).to_string());
        assert_eq!((col("gpu_util_pct"), col("gpu_temp_c"), col("mem_clock_mhz")), ("97", "61", "13801"));
    }

    const GIB: f64 = (1u64 << 30) as f64;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn on_the_double_an_energy_counter_reset_falls_back_to_the_power_integral() {
        // The driver reloads mid-run: the counter restarts near zero.
        let (_d, gpus) = double(
            "gpu0.memory_total = 16GiB\ngpu0.power = 100000\n\
             gpu0.energy = 9000000, 9010000, 9020000, 150, 10150, 20150\n",
        );
        let sampler = Sampler::start(EngineTarget::None, 10.0, gpus);
        samples(&sampler, 8).await;
        let (s, _) = sampler.finish(10).await;
        let (j, src) = (s.gpu_energy_j.unwrap(), s.energy_source.unwrap());
        assert_eq!(src, EnergyMeter::INTEGRAL, "a counter that went backwards is not trusted");
        // 100 W held: the integral is 100 W × the sampled time, not 9,000 J of counter.
        assert!((j - 100.0 * s.duration_s).abs() < 1e-6, "{j} J over {} s", s.duration_s);
        assert!(j > 0.0, "{j}");
    }

    /// Connect, or fail telling how to start the engine.
    async fn engine() -> DockerRuntime {
        match DockerRuntime::connect().await {
            Ok(d) => d,
            Err(e) => panic!("this test needs a running Docker engine: {e}\n  run `scripts/start-dockerd.sh` first"),
        }
    }

    /// Removes the container when dropped, even when the test panics.
    struct Cleanup(String);

    impl Drop for Cleanup {
        fn drop(&mut self) {
            let name = std::mem::take(&mut self.0);
            // Drop cannot await: remove from a thread with its own runtime.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                rt.block_on(async {
                    if let Ok(d) = DockerRuntime::connect().await {
                        let _ = d.remove(&name).await;
                    }
                });
            })
            .join();
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn real_docker_stats_of_a_running_container_stay_within_its_limit() {
        const IMAGE: &str = "threadcycle/crasher:test";
        const LIMIT: u64 = 64 << 20;
        let docker = engine().await;
        assert!(
            docker.image_present(IMAGE).await.unwrap(),
            "image {IMAGE} is missing: run `scripts/build-test-images.sh crasher` first"
        );
        let name = format!("tc-test-telemetry-{}", std::process::id());
        let _cleanup = Cleanup(name.clone());
        let mut spec = ContainerSpec::new(&name, IMAGE, 8080);
        // An 8 MiB shell variable held while sleeping (`echo` after `sleep` keeps busybox's shell
        // from exec-ing `sleep` and freeing it), plus 16 MiB of file data for the page cache.
        let script =
            r#"x=$(head -c 8388608 /dev/zero | tr "\0" a); head -c 16777216 /dev/zero > /tmp/f; sleep 60; echo ${#x}"#;
        spec.cmd = vec!["sh".into(), "-c".into(), script.into()];
        spec.memory_limit_bytes = Some(LIMIT);
        spec.labels.insert("threadcycle.test".into(), "telemetry-rs".into());
        let running = docker.run(&spec).await.unwrap();

        let gpus = Arc::new(Gpus::Unavailable(NO_NVML.into()));
        let target = EngineTarget::Container { docker: docker.clone(), id: running.id.clone() };
        let sampler = Sampler::start(target, 2.0, gpus);
        tokio::time::sleep(Duration::from_millis(4_500)).await;
        assert!(sampler.latest().engine_mem_bytes.is_some_and(|b| b > 0));
        let (s, csv) = sampler.finish(0).await;

        assert_eq!(s.engine_mem_limit, Some(LIMIT));
        let mem = s.engine_mem_bytes.unwrap();
        assert!(mem.samples >= 2, "{mem:?}");
        assert!(mem.min > 0.0 && mem.peak <= LIMIT as f64, "{mem:?}");
        assert!(mem.peak >= (4 << 20) as f64, "the 8 MiB variable shows: {mem:?}");
        let cache = s.engine_cache_bytes.unwrap();
        assert!(mem.peak + cache.peak <= LIMIT as f64, "usage within the limit: {mem:?} {cache:?}");
        assert!(s.engine_cpu_pct.is_some(), "a CPU figure after the first stats sample");
        // 2 Hz samples but Docker reports about once a second: fewer engine figures than ticks.
        assert!(s.samples > mem.samples, "{} ticks, {} docker samples", s.samples, mem.samples);
        assert_eq!(s.notes, vec![NO_NVML.to_string()]);
        assert!(csv.lines().nth(1).is_some());
    }
}
