//! A whole cycle on the NVML test double (`testkit/nvml-double/`): the GPU path of every agent
//! runs through nvml-wrapper exactly as on a real card, with scripted readings of an RTX 5070 Ti.

use super::support::*;
use protocol::results::{CheckStatus, MetricSummary, ModelStatus};

/// The card: 16 GiB of GDDR7 on 256 bits at 14001 MHz (896 GB/s), idle at 38 °C. Each process
/// reads its own sequences (the Reader's idle readings come first): after three idle reads the
/// card is busy (92 %), draws 250 W (50 J a read on the energy counter), holds its power cap,
/// and from the fifth read it is past the plan's 70 °C for 146 reads (29 s at 5 Hz, longer than
/// a warm-up and a request take here), then falls back to 60 °C, so the Writer's thermal guard
/// pauses between requests and resumes.
fn script() -> String {
    let energy: Vec<String> = (0..250u64).map(|i| (3_000_000 + 50_000 * i).to_string()).collect();
    format!(
        "driver = 580.95.05\n\
         gpu0.name = NVIDIA GeForce RTX 5070 Ti\n\
         gpu0.memory_total = 16GiB\n\
         gpu0.memory_reserved = 0.45GiB\n\
         gpu0.memory_used = 0.3GiB*3, 1.1GiB\n\
         gpu0.bus_width = 256\n\
         gpu0.max_clock_mem = 14001\n\
         gpu0.clock_mem = 13801\n\
         gpu0.max_clock_sm = 3090\n\
         gpu0.clock_sm = 2805\n\
         gpu0.utilization = 3*3, 92\n\
         gpu0.temperature = 38*4, 74*146, 60\n\
         gpu0.power = 28500*3, 250000\n\
         gpu0.energy = {}\n\
         gpu0.throttle = 0x1*3, 0x4\n\
         gpu0.processes = llama-server:1.1GiB\n",
        energy.join(", ")
    )
}

/// A fake RAPL package zone whose counter rises 2 J every 50 ms and wraps at 100 J: the
/// sampler must undo the wraps. Each value is written whole (renamed into place).
fn powercap_feeder(
    root: std::path::PathBuf,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<u64> {
    let zone = root.join("intel-rapl:0");
    std::fs::create_dir_all(&zone).expect("zone");
    std::fs::write(zone.join("name"), "package-0\n").expect("name");
    std::fs::write(zone.join("max_energy_range_uj"), "100000000\n").expect("range");
    std::fs::write(zone.join("energy_uj"), "0\n").expect("counter");
    std::thread::spawn(move || {
        let mut uj: u64 = 0;
        let mut wraps = 0;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            std::thread::sleep(std::time::Duration::from_millis(50));
            uj += 2_000_000;
            if uj > 100_000_000 {
                uj -= 100_000_000;
                wraps += 1;
            }
            let tmp = zone.join("energy_uj.tmp");
            std::fs::write(&tmp, format!("{uj}\n")).expect("counter");
            std::fs::rename(&tmp, zone.join("energy_uj")).expect("counter");
        }
        wraps
    })
}

#[test]
fn the_demo_cycle_on_the_nvml_double_reports_every_gpu_figure() {
    require_parts();
    let _serial = serial();
    let tmp = tempfile::tempdir().expect("tmp");
    let script_path = tmp.path().join("nvml.script");
    std::fs::write(&script_path, script()).expect("script");
    let plan = write_plan(
        tmp.path(),
        "gpu",
        "sample_hz = 5",
        "",
        // Long enough answers that the card is past its limit before the last request starts
        // (the fifth read comes 0.8 s into the sampling), however fast this machine is.
        "[[prompts]]\nid = \"vram\"\ntext = \"Why does VRAM matter for language models?\"\nmax_tokens = 96\n\n\
         [[prompts]]\nid = \"cooling\"\ntext = \"How should a homelab GPU be cooled?\"\nmax_tokens = 96\n\n\
         [criteria]\nmin_gpu_util_pct = 80\nmax_temp_c = 70\nresume_temp_c = 65\nmax_idle_temp_c = 50\n\n\
         [cost]\nelectricity_usd_per_kwh = 0.30\nhardware_usd = 2200\nlifetime_years = 3\nhours_per_day = 8\n\
         rest_of_system_w = 60\ninput_output_ratio = 3\n\
         cloud = [{ name = \"OpenAI GPT-4o mini\", usd_per_mtok_min = 0.6, usd_per_mtok_max = 0.6, input_usd_per_mtok = 0.15, as_of = \"2025-06-01\", source = \"https://openai.com/api/pricing/\" }]\n\n\
         [[claims]]\ntext = \"$2–5 per million tokens\"\nmetric = \"usd_per_mtok\"\nexpected = { min = 2, max = 5 }\n",
    );
    let powercap = tmp.path().join("powercap");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let feeder = powercap_feeder(powercap.clone(), stop.clone());
    let out = tmp.path().join("out");
    let o = threadcycle()
        .env(host::gpu::LIB_ENV, testkit::nvml_double::library())
        .env(testkit::nvml_double::SCRIPT_ENV, &script_path)
        .env(host::telemetry::rapl::ROOT_ENV, &powercap)
        .args(["up"])
        .arg(&plan)
        .arg("--out")
        .arg(&out)
        .output()
        .expect("run");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let wraps = feeder.join().expect("feeder");
    assert!(o.status.success(), "{}", show(&o));
    let dir = cycle_dir(&out);
    let r = results(&dir);

    // Host checks: the card, its free VRAM (the driver's reservation is not free), bandwidth.
    let host = &r.verification.host;
    let gpu = host.gpus.first().unwrap_or_else(|| panic!("no GPU: {host:?}"));
    assert_eq!(gpu.name, "NVIDIA GeForce RTX 5070 Ti", "{host:?}");
    assert!(gpu.memory_bandwidth_gbs.is_some_and(|b| (b - 896.1).abs() < 0.5), "{gpu:?}");
    assert_eq!(gpu.temperature_c, Some(38), "{gpu:?}");
    // In use for the fit: allocations plus the driver's reservation (0.3 + 0.45 GiB).
    assert_eq!(gpu.vram_used, 805_306_368u64, "{gpu:?}");
    let checks = &r.verification.checks;
    let check =
        |name: &str| checks.iter().find(|c| c.name == name).unwrap_or_else(|| panic!("no check {name}: {checks:?}"));
    assert_eq!(check("gpu0.vram").status, CheckStatus::Pass);
    assert!(check("gpu0.vram").measured.starts_with("15.2 GB free of 16.0 GB"), "{:?}", check("gpu0.vram"));
    assert_eq!(check("gpu0.bandwidth").measured, "896 GB/s");
    assert_eq!(check("gpu0.idle_temperature").status, CheckStatus::Pass);

    // Telemetry: GPU figures from the scripted card, energy per token from its counter.
    let model = first_model(&r);
    assert_eq!(model.status, ModelStatus::Measured, "{model:?}");
    let t = model.telemetry.as_ref().unwrap_or_else(|| panic!("no telemetry: {model:?}"));
    let peak = |m: Option<MetricSummary>| m.map(|m| m.peak);
    assert_eq!(peak(t.gpu_util_pct), Some(92.0), "{t:?}");
    assert_eq!(peak(t.gpu_temp_c), Some(74.0), "{t:?}");
    assert_eq!(peak(t.gpu_power_w), Some(250.0), "{t:?}");
    assert_eq!(t.energy_source.as_deref(), Some("nvml energy counter"), "{t:?}");
    let tokens: u64 = model.runs.iter().map(|x| u64::from(x.output_tokens)).sum();
    let energy = t.gpu_energy_j.expect("energy");
    assert!(energy > 0.0 && energy % 50.0 == 0.0, "{t:?}");
    let jpt = t.joules_per_token.expect("J/token");
    assert!((jpt - energy / tokens as f64).abs() < 1e-9, "{t:?}");
    assert_eq!(t.throttle_reasons, ["SW_POWER_CAP"], "{t:?}");
    // VRAM used is NVML's `used` (0.3 GiB idle, 1.1 GiB with the engine), the reservation apart.
    assert_eq!(t.vram_used_bytes.map(|m| m.min), Some(322_122_547.0), "{t:?}");
    assert_eq!(peak(t.vram_used_bytes), Some(1_181_116_006.0), "{t:?}");
    // The engine's own GPU memory: NVML lists the llama-server process the Writer started.
    let csv = std::fs::read_to_string(dir.join("data/telemetry.csv")).expect("telemetry.csv");
    let header: Vec<&str> = csv.lines().next().expect("header").split(',').collect();
    let col = header.iter().position(|h| *h == "gpu_process_mem_bytes").expect("gpu_process_mem_bytes column");
    let last = csv.lines().last().expect("a row").split(',').nth(col).expect("cell").to_string();
    assert_eq!(last, "1181116006", "{csv}");
    // VRAM named by its source: NVML's per-process figure for the engine's pid is the measured
    // peak; llama-server reports no `size_vram` (its own account is the buffer log).
    assert_eq!(t.gpu_process_mem_bytes.map(|m| m.peak), Some(1_181_116_006.0), "{t:?}");
    assert!(t.gpu_process_scope.as_deref().is_some_and(|s| s.starts_with("engine pid ")), "{t:?}");
    assert_eq!((model.peak_vram_bytes, model.engine_vram_bytes), (Some(1_181_116_006), None), "{model:?}");
    // Thermal impact: the first sample's temperature and the seconds throttled (`SW_POWER_CAP`).
    assert!(t.gpu_temp_first_c.is_some(), "{t:?}");
    assert!(t.throttled_s.is_some_and(|s| s > 0.0 && s <= t.duration_s + 1e-9), "{t:?}");
    // CPU package energy from the scripted RAPL counter, its wraps undone: 2 J per 50 ms, so
    // about 40 W over the sampled window (scheduling on a busy machine lowers it).
    let cpu = t.cpu_energy_j.unwrap_or_else(|| panic!("no CPU energy: {t:?}"));
    assert_eq!(t.cpu_energy_source.as_deref(), Some("RAPL intel-rapl:0 (package-0)"), "{t:?}");
    let expected = 40.0 * t.duration_s;
    assert!(cpu >= 0.3 * expected && cpu <= expected + 45.0, "{cpu} J over {} s ({wraps} wraps): {t:?}", t.duration_s);
    assert!(t.cpu_joules_per_token.is_some_and(|j| (j - cpu / tokens as f64).abs() < 1e-9), "{t:?}");
    // The thermal guard paused while the card was over 70 °C and resumed once it fell to 60.
    let pauses = &t.thermal_pauses;
    assert!(!pauses.is_empty() && pauses.iter().all(|p| p.recovered && p.temp_c == 74.0), "{t:?}");
    // Sampling starts after the warm-up: the sampled time is the measured requests and the
    // pauses, not the warm-up request besides (here a request takes seconds).
    let busy_s: f64 =
        model.runs.iter().map(|x| x.e2e_ms).sum::<f64>() / 1000.0 + pauses.iter().map(|p| p.waited_s).sum::<f64>();
    let sampled_s = t.duration_s;
    assert!(sampled_s < busy_s + 1.5, "sampled {sampled_s} s for {busy_s} s of requests and pauses: {t:?}");

    // The reports: GPU criteria evaluated, GPU telemetry, energy, charts.
    let report = std::fs::read_to_string(dir.join("benchmark-report.md")).expect("benchmark report");
    let row = |what: &str| {
        report
            .lines()
            .find(|l| l.starts_with(&format!("| {what}")))
            .unwrap_or_else(|| panic!("no row `{what}`:\n{report}"))
    };
    let util = row("GPU utilisation while generating");
    assert!(util.contains("mean 9") && util.contains("**PASS**"), "{util}");
    let temp = row("Sustained GPU temperature");
    assert!(temp.contains("peak 74.0 °C") && temp.contains("**FAIL**"), "{temp}");
    assert!(temp.contains("1 thermal pause"), "{temp}");
    assert!(report.contains("- Thermal pauses: 1 thermal pause"), "{report}");
    assert!(row("Idle GPU temperature").contains("38 °C"), "{}", row("Idle GPU temperature"));
    assert!(row("GPU utilisation, %").contains("92"), "{report}");
    assert!(row("GPU power, W").contains("250"), "{report}");
    assert!(report.contains("J per generated token"), "{report}");
    assert!(report.contains("`SW_POWER_CAP`"), "{report}");
    assert!(report.contains("- GPU bandwidth: 896 GB/s (NVIDIA GeForce RTX 5070 Ti, from NVML"), "{report}");
    assert!(!report.contains("0 % (no GPU)"), "{report}");
    let by_source = report.split("## VRAM by source").nth(1).unwrap_or_else(|| panic!("no VRAM by source:\n{report}"));
    let vram_row = by_source.lines().find(|l| l.starts_with("| gemma")).unwrap_or_else(|| panic!("{by_source}"));
    assert!(vram_row.contains("1.10 GiB") && vram_row.contains("NVML per process: engine pid"), "{vram_row}");
    assert!(vram_row.contains("engine-reported: GPU buffers in the llama-server log"), "{vram_row}");
    // The business case counts the whole box and says what it measured and what it assumed.
    let business = std::fs::read_to_string(dir.join("business-case.md")).expect("business case");
    for part in [
        "GPU measured by NVML",
        "CPU package measured by RAPL intel-rapl:0 (package-0)",
        "rest of the system assumed at 60 W",
    ] {
        assert!(business.contains(part), "{part}:\n{business}");
    }
    assert!(business.contains("## Cost per million tokens at a 3:1 input:output mix"), "{business}");
    assert!(business.contains("https://openai.com/api/pricing/") && business.contains("2025-06-01"), "{business}");
    let claim = business
        .lines()
        .find(|l| l.starts_with("- \"$2–5 per million tokens\""))
        .unwrap_or_else(|| panic!("no claim line:\n{business}"));
    assert!(claim.contains("**PASS**") || claim.contains("**FAIL**"), "{claim}");
    for chart in ["charts/gpu-temperature.svg", "charts/gpu-power.svg"] {
        assert!(dir.join(chart).is_file(), "{chart} missing");
    }
}
