//! Report generation for a large cycle: 20 models × 10 prompts × 5 repetitions, each model with
//! an hour of telemetry at 1 Hz (3600 samples per series), a 2 KB answer per request. The input
//! is the shared report fixture's large cycle (`tests/fixtures/report.rs`, `large`).
//!
//! Prints the wall time of each step the Documentation agent takes (`render_reports`,
//! `check_reports`, `write_atomically`) and the process's peak resident memory (`VmHWM`) before
//! and after, so the memory the rendering itself needs shows.
//!
//! ```sh
//! cargo bench -p threadcycle-documentation --bench render
//! RENDER_BENCH_MODELS=40 RENDER_BENCH_SAMPLES=7200 cargo bench -p threadcycle-documentation --bench render
//! ```

use std::time::Instant;
use threadcycle_documentation::agent::write_atomically;
use threadcycle_documentation::checks::check_reports;
use threadcycle_documentation::render::render_reports;

#[path = "../tests/fixtures/report.rs"]
mod fixture;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// `VmRSS` and `VmHWM` of this process, bytes.
fn memory() -> (u64, u64) {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb = |key: &str| -> u64 {
        s.lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    (kb("VmRSS:"), kb("VmHWM:"))
}

fn mib(b: u64) -> f64 {
    b as f64 / f64::from(1u32 << 20)
}

fn main() {
    let models = env_or("RENDER_BENCH_MODELS", 20);
    let prompts = env_or("RENDER_BENCH_PROMPTS", 10);
    let reps = env_or("RENDER_BENCH_REPS", 5);
    let samples = env_or("RENDER_BENCH_SAMPLES", 3600);
    let rounds = env_or("RENDER_BENCH_ROUNDS", 3).max(1);
    let (rss0, _) = memory();
    let t = Instant::now();
    let inp = fixture::large(models, prompts, reps, samples);
    let build = t.elapsed();
    let series_bytes: usize = inp.telemetry_series.values().map(String::len).sum();
    let answer_bytes: usize = inp.answers.values().map(String::len).sum();
    let (rss_input, hwm_input) = memory();
    println!(
        "report generation: {models} models × {prompts} prompts × {reps} repetitions = {} runs, {samples} telemetry samples per model \
         ({:.1} MiB of series CSV, {:.1} MiB of answers); input built in {:.2} s, {:.1} MiB RSS (was {:.1} MiB)",
        models * prompts * reps,
        mib(series_bytes as u64),
        mib(answer_bytes as u64),
        build.as_secs_f64(),
        mib(rss_input),
        mib(rss0),
    );
    let out = std::env::temp_dir().join(format!("tc-render-bench-{}", std::process::id()));
    let (mut render_s, mut check_s, mut write_s) = (Vec::new(), Vec::new(), Vec::new());
    let mut report_bytes = 0usize;
    let mut files_n = 0usize;
    let mut largest: Vec<(usize, String)> = Vec::new();
    for _ in 0..rounds {
        let t = Instant::now();
        let files = render_reports(&inp);
        render_s.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        let problems = check_reports(&files);
        check_s.push(t.elapsed().as_secs_f64());
        assert!(problems.is_empty(), "the rendered reports have problems: {problems:?}");
        let t = Instant::now();
        write_atomically(&out.join(&inp.cycle), &files).expect("write the reports");
        write_s.push(t.elapsed().as_secs_f64());
        report_bytes = files.iter().map(|f| f.bytes.len()).sum();
        files_n = files.len();
        largest = files.iter().map(|f| (f.bytes.len(), f.path.clone())).collect();
    }
    let _ = std::fs::remove_dir_all(&out);
    let (_, hwm) = memory();
    let stat = |xs: &[f64]| {
        let min = xs.iter().copied().fold(f64::INFINITY, f64::min);
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        format!("{min:.3} s best, {mean:.3} s mean")
    };
    println!("  render_reports:   {} ({rounds} rounds)", stat(&render_s));
    println!("  check_reports:    {}", stat(&check_s));
    println!("  write_atomically: {}", stat(&write_s));
    largest.sort_by(|a, b| b.cmp(a));
    let top: Vec<String> = largest.iter().take(5).map(|(n, p)| format!("{p} {:.2} MiB", mib(*n as u64))).collect();
    println!("  output: {files_n} files, {:.1} MiB; largest: {}", mib(report_bytes as u64), top.join(", "));
    println!(
        "  peak RSS (VmHWM): {:.1} MiB in all; {:.1} MiB after building the input, so rendering added at most {:.1} MiB",
        mib(hwm),
        mib(hwm_input),
        mib(hwm.saturating_sub(hwm_input))
    );
}
