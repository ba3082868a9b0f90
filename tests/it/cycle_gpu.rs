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
        "[[prompts]]\nid = \"vram\"\ntext = \"Why does VRAM matter for language models?\"\n\n\
         [[prompts]]\nid = \"cooling\"\ntext = \"How should a homelab GPU be cooled?\"\n\n\
         [criteria]\nmin_gpu_util_pct = 80\nmax_temp_c = 70\nresume_temp_c = 65\nmax_idle_temp_c = 50\n",
    );
    let out = tmp.path().join("out");
    let o = threadcycle()
        .env(host::gpu::LIB_ENV, testkit::nvml_double::library())
        .env(testkit::nvml_double::SCRIPT_ENV, &script_path)
        .args(["up"])
        .arg(&plan)
        .arg("--out")
        .arg(&out)
        .output()
        .expect("run");
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
    for chart in ["charts/gpu-temperature.svg", "charts/gpu-power.svg"] {
        assert!(dir.join(chart).is_file(), "{chart} missing");
    }
}
