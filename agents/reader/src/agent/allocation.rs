//! The allocation test: whether a container under the plan's memory limit can really allocate
//! the amount the plan says is allocatable.

use super::{GIB, check};
use protocol::plan::{Plan, Runtime};
use protocol::results::{Check, CheckStatus};
use std::time::Duration;

/// Whether a container under the plan's largest memory limit can really allocate `gb`: a
/// short-lived container has `dd` read that much from /dev/zero into one buffer with
/// `iflag=fullblock` (one `read()` returns at most about 2 GiB on Linux, so without it a 25 GB
/// block is only 2 GiB touched), then prints its cgroup's peak memory. The check passes only when
/// dd reports the whole block read and the cgroup's peak is at least the amount.
pub(super) async fn allocation_check(d: &host::docker::DockerRuntime, plan: &Plan, gb: f64) -> Check {
    let image = plan.host.allocation_image.clone().unwrap_or_else(|| "busybox:latest".into());
    let threshold = Some(format!("{gb} GB allocatable"));
    if !d.image_present(&image).await.unwrap_or(false) {
        return check(
            "memory.allocatable",
            CheckStatus::Unavailable,
            "not tested".into(),
            threshold,
            format!(
                "the allocation test needs an image with `sh`, `dd` and `cat` present locally ({image}); set host.allocation_image"
            ),
        );
    }
    let planned = plan
        .models
        .iter()
        .filter(|m| m.runtime == Runtime::Docker)
        .filter_map(|m| m.memory_limit_gb)
        .fold(0.0_f64, f64::max);
    // The planned limit is what must hold the test amount; with no planned limit, a little over it.
    let limit_gb = if planned > 0.0 { planned } else { gb + 0.25 };
    let mib = (gb * 1024.0).round() as u64;
    let mut spec = host::docker::ContainerSpec::new(format!("tc-alloc-{}", std::process::id()), &image, 9);
    spec.cmd = vec!["sh".into(), "-c".into(), allocation_script(mib)];
    spec.memory_limit_bytes = Some((limit_gb * GIB) as u64);
    spec.labels.insert("threadcycle.purpose".into(), "allocation-test".into());
    let ran = match d.run(&spec).await {
        Ok(c) => {
            let code = d.wait_exit(&c.id, Duration::from_secs(600)).await;
            let oom = d.state(&c.id).await.map(|s| s.oom_killed).unwrap_or(false);
            let log = d.log_tail(&c.id, 20).await.unwrap_or_default();
            let _ = d.remove(&c.id).await;
            code.map(|code| (code, oom, log)).map_err(|e| e.to_string())
        }
        // It finished before it could be inspected: the error carries its exit and its log.
        Err(host::docker::DockerError::Exited { exit_code, oom_killed, log_tail, .. }) => {
            let _ = d.remove_labeled(&[("threadcycle.purpose", "allocation-test")]).await;
            Ok((exit_code, oom_killed, log_tail))
        }
        Err(e) => {
            let _ = d.remove_labeled(&[("threadcycle.purpose", "allocation-test")]).await;
            Err(e.to_string())
        }
    };
    match ran.and_then(|(code, oom, log)| allocation_outcome(code, oom, &log, mib)) {
        Ok(peak) => check(
            "memory.allocatable",
            CheckStatus::Pass,
            format!("{gb} GB allocated in a container limited to {limit_gb} GB"),
            threshold,
            format!(
                "dd read one {mib} MiB block in full in {image}; the container's cgroup peaked at {:.2} GiB",
                peak as f64 / GIB
            ),
        ),
        Err(why) => check(
            "memory.allocatable",
            CheckStatus::Fail,
            format!("could not allocate {gb} GB under a {limit_gb} GB limit"),
            threshold,
            why,
        ),
    }
}

/// The allocation container's command: fill one `mib` MiB buffer, then print the cgroup's peak
/// (cgroup v2 `memory.peak`, else v1 `memory.max_usage_in_bytes`) after a marker.
pub(super) fn allocation_script(mib: u64) -> String {
    format!(
        "dd if=/dev/zero of=/dev/null bs={mib}M count=1 iflag=fullblock 2>&1 && \
         echo \"{ALLOC_PEAK} $(cat /sys/fs/cgroup/memory.peak 2>/dev/null || cat /sys/fs/cgroup/memory/memory.max_usage_in_bytes 2>/dev/null)\""
    )
}

/// The marker before the peak in the allocation container's output.
pub(super) const ALLOC_PEAK: &str = "tc-alloc-peak";

/// Judges the allocation container from its exit, OOM flag and output: the cgroup's peak in bytes
/// when dd read its whole block and the peak covers it, else why not.
pub(super) fn allocation_outcome(code: Option<i64>, oom: bool, log: &[String], mib: u64) -> Result<u64, String> {
    let tail = || log.iter().rev().take(3).rev().cloned().collect::<Vec<_>>().join(" | ");
    if oom || code == Some(137) {
        return Err(format!(
            "the container was killed by the OOM killer (exit {code:?}) before {mib} MiB were touched"
        ));
    }
    if code != Some(0) {
        return Err(format!("the container exited ({code:?}): {}", tail()));
    }
    // dd counts full and partial blocks as `full+partial records in`.
    let full = log.iter().any(|l| l.trim() == "1+0 records in");
    if !full {
        return Err(format!("dd did not read its {mib} MiB block in full: {}", tail()));
    }
    let peak = log
        .iter()
        .find_map(|l| l.trim().strip_prefix(ALLOC_PEAK))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .ok_or_else(|| format!("the container did not report its cgroup's peak memory: {}", tail()))?;
    if peak < mib << 20 {
        return Err(format!(
            "the container's cgroup peaked at {peak} bytes, under the {} bytes dd should have touched",
            mib << 20
        ));
    }
    Ok(peak)
}
