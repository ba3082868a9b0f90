//! Unit tests of the telemetry module: summaries, downsampling, energy, the recorder, and the
//! sampler against the NVML double and a real Docker engine.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::recorder::{COLUMNS, Reading, Recorder};
use super::*;
use crate::docker::{ContainerSpec, DockerRuntime};
use crate::gpu::{GpuSample, Gpus};

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
pub(super) fn double(script: &str) -> (testkit::nvml_double::Scripted, Arc<Gpus>) {
    let d = testkit::nvml_double::Scripted::new(script);
    let g = Gpus::probe_lib(Some(d.lib().as_os_str()));
    assert!(g.note().is_none(), "the double did not load: {:?}", g.note());
    (d, Arc::new(g))
}

/// Waits until the sampler has taken `n` samples.
pub(super) async fn samples(sampler: &Sampler, n: u32) {
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

#[test]
fn recorder_counts_cpu_package_energy_across_a_wrap_throttle_time_and_the_start_temperature() {
    use super::rapl::RaplZone;
    let zone = |uj: u64| RaplZone {
        zone: "intel-rapl:0".into(),
        name: Some("package-0".into()),
        energy_uj: uj,
        max_uj: 1_000_000_000,
    };
    let mut rec = Recorder::new(8);
    rec.proc_scope = Some("engine pid 7".into());
    // 0.5 s apart: 30 J, then a wrap (70 J to the top + 10 J), then 40 J.
    let counters = [900_000_000, 930_000_000, 10_000_000, 50_000_000];
    let temps = [41, 55, 63, 70];
    for (i, (uj, temp)) in counters.into_iter().zip(temps).enumerate() {
        let mut g = gpu(0, temp, 200.0, None);
        if i >= 2 {
            g.throttle = vec!["SW_THERMAL_SLOWDOWN".into()];
        }
        rec.record(&Reading {
            t_s: i as f64 * 0.5,
            gpus: vec![g],
            gpu_proc_mem: Some(3 << 30),
            rapl: vec![zone(uj)],
            ..Reading::default()
        });
    }
    let s = rec.summary(2.0, 50);
    assert_eq!(s.cpu_energy_j, Some(150.0), "{s:?}");
    assert_eq!(s.cpu_joules_per_token, Some(3.0));
    assert_eq!(s.cpu_energy_source.as_deref(), Some("RAPL intel-rapl:0 (package-0)"));
    // The two intervals that end at a throttled sample.
    assert_eq!(s.throttled_s, Some(1.0));
    assert_eq!((s.gpu_temp_first_c, s.gpu_temp_c.map(|t| t.peak)), (Some(41.0), Some(70.0)));
    assert_eq!(s.gpu_process_mem_bytes.map(|m| m.peak), Some(f64::from(3u32 << 30)));
    assert_eq!(s.gpu_process_scope.as_deref(), Some("engine pid 7"));
    // Without GPUs or counters: no figures, not zeros.
    let mut bare = Recorder::new(8);
    bare.proc_scope = Some("engine pid 7".into());
    bare.record(&Reading { t_s: 0.0, ..Reading::default() });
    bare.record(&Reading { t_s: 1.0, ..Reading::default() });
    let s = bare.summary(1.0, 10);
    assert_eq!((s.cpu_energy_j, s.throttled_s, s.gpu_process_scope, s.gpu_temp_first_c), (None, None, None, None));
}
