//! The sampler: a Tokio task reading GPUs (NVML), the engine (Docker stats or `/proc`) and the
//! host at a fixed rate, with every blocking read moved onto the blocking pool.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use nvml_wrapper::enums::device::UsedGpuMemory;
use protocol::results::{TelemetrySummary, ThermalPause};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use super::rapl::{self, RaplZone};
use super::recorder::{COLUMNS, EngineReading, Reading, Recorder, SamplerCost, Snapshot};
use super::{MAX_HZ, SERIES_CAP};
use crate::docker::{ContainerStats, DockerError, DockerRuntime};
use crate::gpu::{GpuSample, Gpus};
use crate::system::{self, MemInfo};

/// Clock ticks per second of `/proc/<pid>/stat` CPU times.
///
/// `sysconf(_SC_CLK_TCK)` is 100 on every Linux architecture we run on (x86-64, arm64); reading
/// it needs nix's `feature` module, which the workspace does not enable, so it is assumed.
const CLK_TCK: f64 = 100.0;

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
        rec.proc_scope = match &target {
            EngineTarget::Container { .. } => {
                Some("every process on the GPUs (NVML lists host pids; a container's are not mapped)".into())
            }
            EngineTarget::Process { pid } => Some(format!("engine pid {pid}")),
            EngineTarget::None => Some("every process on the GPUs".into()),
        };
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
    rapl: Result<Vec<RaplZone>, String>,
    at: Instant,
}

/// NVML and `/proc` reads for one tick (blocking: runs on the blocking pool).
fn read_machine(gpus: &Gpus, pid: Option<u32>, container: bool, powercap: &std::path::Path) -> MachineRead {
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
        rapl: rapl::read(powercap),
        at: Instant::now(),
    }
}

/// GPU memory NVML lists for `pid` on every GPU, bytes; `None` without NVML or when the
/// driver does not list the process (blocking: NVML calls).
pub fn process_gpu_memory(gpus: &Gpus, pid: u32) -> Option<u64> {
    gpu_process_memory(gpus, Some(pid))
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
    let mut rapl_noted = false;
    let powercap = Arc::new(rapl::root());
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = tick.tick() => {}
        }
        let began = Instant::now();
        let g = gpus.clone();
        let root = powercap.clone();
        let Ok(read) = tokio::task::spawn_blocking(move || read_machine(&g, pid, container, &root)).await else {
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
        // No powercap tree (a VM, a non-x86 host) is no news: the reports say the CPU was not
        // measured. Counters that exist but cannot be read are worth a note.
        let rapl = read.rapl.unwrap_or_else(|e| {
            if !rapl_noted {
                rapl_noted = true;
                let why = if e.contains("ermission denied") { "; root only since Linux 5.10" } else { "" };
                lock(&shared.rec).note(format!("CPU package energy not measured: RAPL counter unreadable ({e}{why})"));
            }
            Vec::new()
        });
        let reading = Reading {
            rapl,
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
