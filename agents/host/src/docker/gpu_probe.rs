//! The seed's GPU-in-container check, `docker run --rm --gpus all <cuda image> nvidia-smi`,
//! through the engine API: a short-lived container that requests every GPU the way a model's
//! container does (`DeviceRequests: [{Driver: "", Count: -1, Capabilities: [["gpu"]]}]`) and runs
//! `nvidia-smi` with a query, so what it sees (device, driver, memory) or exactly why it sees
//! nothing is known before any model is deployed.

use std::time::Duration;

use protocol::plan::GpuRequest;

use super::{ContainerSpec, DockerError, DockerRuntime, ERROR_LOG_LINES};

/// The query the probe container runs; one CSV line per GPU it can see.
pub const GPU_QUERY: [&str; 3] =
    ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader,nounits"];

/// The label the probe's containers carry (`threadcycle.purpose=gpu-probe`).
pub const GPU_PROBE_PURPOSE: &str = "gpu-probe";

/// How long the probe container may run before it is given up on.
const PROBE_TIMEOUT: Duration = Duration::from_secs(120);

/// One GPU as `nvidia-smi` inside the container reported it.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerGpu {
    /// The device name (`NVIDIA GeForce RTX 4090`).
    pub name: String,
    /// The driver version the container sees (`550.54.14`).
    pub driver: String,
    /// Total memory, MiB (`nvidia-smi` reports MiB with `nounits`).
    pub memory_mib: u64,
}

/// What the probe container found.
#[derive(Debug, Clone, PartialEq)]
pub enum GpuProbe {
    /// The container saw these GPUs.
    Seen(Vec<ContainerGpu>),
    /// Docker has no device driver for a GPU request: no NVIDIA runtime or CDI is configured.
    NoRuntime(String),
    /// The runtime or `nvidia-smi` could not reach the kernel driver (not loaded, or absent).
    DriverNotLoaded(String),
    /// The kernel driver and the user-space library differ (the driver was upgraded and the
    /// old module is still loaded).
    VersionMismatch(String),
    /// The driver answered but has no device to give.
    NoDevice(String),
    /// The probe's image is not on the host and could not be pulled.
    ImageUnavailable {
        /// The image reference.
        image: String,
        /// Why the pull failed (names `docker pull`).
        why: String,
    },
    /// Anything else, in the engine's or the container's words.
    Other(String),
}

impl GpuProbe {
    /// Classes a failure from the engine's refusal to start the container, or from what the
    /// container printed: the engine's and NVIDIA's own words, matched case-insensitively.
    pub fn classify_failure(text: &str) -> GpuProbe {
        let t = text.to_lowercase();
        let quoted = text.trim().to_string();
        if t.contains("could not select device driver") {
            // dockerd: no registered device driver takes `capabilities: [[gpu]]`.
            GpuProbe::NoRuntime(quoted)
        } else if t.contains("version mismatch") {
            // `Failed to initialize NVML: Driver/library version mismatch` (nvidia-smi), or
            // `nvml error: driver/library version mismatch` (nvidia-container-cli).
            GpuProbe::VersionMismatch(quoted)
        } else if t.contains("couldn't communicate with the nvidia driver")
            || t.contains("driver not loaded")
            || t.contains("libnvidia-ml.so.1: cannot open shared object file")
        {
            GpuProbe::DriverNotLoaded(quoted)
        } else if t.contains("no devices were found") || t.contains("no cuda-capable device") {
            GpuProbe::NoDevice(quoted)
        } else {
            GpuProbe::Other(quoted)
        }
    }

    /// Reads the container's output: its GPUs when every non-empty line is a query row (and
    /// there is at least one), else the failure its output names.
    pub fn from_output(exit_code: Option<i64>, lines: &[String]) -> GpuProbe {
        let rows: Vec<&str> = lines.iter().map(|l| l.trim()).filter(|l| !l.is_empty()).collect();
        let parsed: Option<Vec<ContainerGpu>> = rows.iter().map(|r| parse_row(r)).collect();
        match parsed {
            Some(gpus) if exit_code == Some(0) && !gpus.is_empty() => GpuProbe::Seen(gpus),
            _ if rows.is_empty() => GpuProbe::Other(format!(
                "nvidia-smi printed nothing in the container (exit {})",
                exit_code.map_or_else(|| "code unknown".to_string(), |c| c.to_string())
            )),
            _ => GpuProbe::classify_failure(&rows.join(" | ")),
        }
    }

    /// What to do about it, in the operator's terms (empty when the GPU was seen).
    pub fn fix(&self) -> String {
        match self {
            GpuProbe::Seen(_) => String::new(),
            GpuProbe::NoRuntime(_) => "no NVIDIA runtime or CDI spec is configured in Docker: install \
                nvidia-container-toolkit, run `sudo nvidia-ctk runtime configure --runtime=docker`, then \
                `sudo systemctl restart docker`"
                .into(),
            GpuProbe::DriverNotLoaded(_) => "the NVIDIA kernel driver is not loaded: check `nvidia-smi` on the \
                host; install the driver or load it (`sudo modprobe nvidia`), then re-verify"
                .into(),
            GpuProbe::VersionMismatch(_) => "the NVIDIA kernel module and its user-space library differ (the \
                driver was updated without a reboot): reboot, or reinstall the driver so both match"
                .into(),
            GpuProbe::NoDevice(_) => "the driver sees no GPU: check that the card is seated and powered and \
                that `nvidia-smi` on the host lists it"
                .into(),
            GpuProbe::ImageUnavailable { image, .. } => format!(
                "the probe image is not on this host: run `docker pull {image}` where a registry is reachable \
                 (or `docker load` a saved copy), or set host.gpu_check_image to a CUDA image that is present"
            ),
            GpuProbe::Other(_) => "run `docker run --rm --gpus all <cuda image> nvidia-smi` by hand to see \
                the whole error"
                .into(),
        }
    }

    /// What went wrong, in words (empty when the GPU was seen).
    pub fn reason(&self) -> String {
        match self {
            GpuProbe::Seen(_) => String::new(),
            GpuProbe::NoRuntime(q) => format!("no NVIDIA runtime: Docker cannot give a container a GPU ({q})"),
            GpuProbe::DriverNotLoaded(q) => format!("NVIDIA driver not reachable from the container ({q})"),
            GpuProbe::VersionMismatch(q) => format!("NVIDIA driver/library version mismatch ({q})"),
            GpuProbe::NoDevice(q) => format!("no GPU device in the container ({q})"),
            GpuProbe::ImageUnavailable { why, .. } => format!("the probe could not run: {why}"),
            GpuProbe::Other(q) => format!("the GPU probe container failed: {q}"),
        }
    }
}

/// One `name, driver_version, memory.total` row; `None` when it is not one.
pub fn parse_row(row: &str) -> Option<ContainerGpu> {
    // Split from the right: the name is the only field that could hold a comma.
    let mut parts = row.rsplitn(3, ',').map(str::trim);
    let memory = parts.next()?;
    let driver = parts.next()?;
    let name = parts.next()?;
    let memory_mib = memory.parse::<u64>().ok()?;
    let driver_ok = !driver.is_empty() && driver.chars().all(|c| c.is_ascii_digit() || c == '.');
    (driver_ok && !name.is_empty()).then(|| ContainerGpu { name: name.into(), driver: driver.into(), memory_mib })
}

impl DockerRuntime {
    /// Runs the GPU probe in `image` (pulled first when it is not on the host) and removes its
    /// container. Never fails: every way it can go wrong is a [`GpuProbe`] that says why.
    pub async fn probe_gpu(&self, image: &str) -> GpuProbe {
        match self.image_present(image).await {
            Ok(true) => {}
            Ok(false) => {
                if let Err(e) = self.pull_image(image, |_, _, _| {}).await {
                    return GpuProbe::ImageUnavailable { image: image.into(), why: e.to_string() };
                }
            }
            Err(e) => return GpuProbe::Other(e.to_string()),
        }
        let mut spec = ContainerSpec::new(format!("tc-gpu-probe-{}", std::process::id()), image, 9);
        spec.cmd = GPU_QUERY.iter().map(|s| s.to_string()).collect();
        spec.gpus = GpuRequest::All;
        // What `--gpus all` gives a CUDA image: nvidia-smi is mounted in with the `utility` capability.
        spec.env.insert("NVIDIA_DRIVER_CAPABILITIES".into(), "compute,utility".into());
        spec.labels.insert("threadcycle.purpose".into(), GPU_PROBE_PURPOSE.into());
        let outcome = self.run_probe(&spec).await;
        let _ = self.remove_labeled(&[("threadcycle.purpose", GPU_PROBE_PURPOSE)]).await;
        outcome
    }

    async fn run_probe(&self, spec: &ContainerSpec) -> GpuProbe {
        let id = match self.create(spec).await {
            Ok(id) => id,
            Err(DockerError::ImageMissing { image }) => {
                let why = format!("image `{image}` is not present on this host");
                return GpuProbe::ImageUnavailable { image, why };
            }
            Err(e) => return GpuProbe::classify_failure(&e.to_string()),
        };
        // The engine refuses to start a GPU request it cannot serve (no device driver, or the
        // NVIDIA hook failing): that refusal is the finding.
        if let Err(e) = self.docker.start_container(&id, None).await {
            return GpuProbe::classify_failure(&super::error::engine_message(&e));
        }
        let code = match self.wait_exit(&id, PROBE_TIMEOUT).await {
            Ok(Some(code)) => Some(code),
            Ok(None) => {
                return GpuProbe::Other(format!(
                    "nvidia-smi did not finish within {} s in the probe container",
                    PROBE_TIMEOUT.as_secs()
                ));
            }
            Err(e) => return GpuProbe::Other(e.to_string()),
        };
        match self.log_tail(&id, ERROR_LOG_LINES).await {
            Ok(lines) => GpuProbe::from_output(code, &lines),
            Err(e) => GpuProbe::Other(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(s: &str) -> Vec<String> {
        s.lines().map(str::to_string).collect()
    }

    #[test]
    fn query_rows_become_gpus() {
        let out = lines("NVIDIA GeForce RTX 4090, 550.54.14, 24564\nNVIDIA RTX A6000, 550.54.14, 49140\n");
        assert_eq!(
            GpuProbe::from_output(Some(0), &out),
            GpuProbe::Seen(vec![
                ContainerGpu { name: "NVIDIA GeForce RTX 4090".into(), driver: "550.54.14".into(), memory_mib: 24564 },
                ContainerGpu { name: "NVIDIA RTX A6000".into(), driver: "550.54.14".into(), memory_mib: 49140 },
            ])
        );
        // A name with a comma in it stays whole; a row that is not a query row is no GPU.
        assert_eq!(parse_row("Odd, Card, 580.95.05, 16303").map(|g| g.name), Some("Odd, Card".into()));
        assert_eq!(parse_row("NVIDIA-SMI has failed"), None);
        assert_eq!(parse_row("Tesla T4, [N/A], 15360"), None);
    }

    #[test]
    fn nvidia_and_docker_errors_are_classed_with_their_fix() {
        let no_rt =
            GpuProbe::classify_failure(r#"could not select device driver "" with capabilities: [[gpu]] (HTTP 500)"#);
        assert!(matches!(no_rt, GpuProbe::NoRuntime(_)), "{no_rt:?}");
        assert!(no_rt.reason().contains("no NVIDIA runtime") && no_rt.fix().contains("nvidia-ctk runtime configure"));
        let smi = "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. Make sure that the latest NVIDIA driver is installed and running.";
        let not_loaded = GpuProbe::from_output(Some(9), &lines(smi));
        assert!(matches!(not_loaded, GpuProbe::DriverNotLoaded(_)), "{not_loaded:?}");
        assert!(not_loaded.fix().contains("modprobe nvidia"));
        let hook = "OCI runtime create failed: nvidia-container-cli: initialization error: nvml error: driver not loaded: unknown";
        assert!(matches!(GpuProbe::classify_failure(hook), GpuProbe::DriverNotLoaded(_)));
        let mismatch = GpuProbe::from_output(
            Some(18),
            &lines("Failed to initialize NVML: Driver/library version mismatch\nNVML library version: 550.120"),
        );
        assert!(matches!(mismatch, GpuProbe::VersionMismatch(_)), "{mismatch:?}");
        assert!(mismatch.fix().contains("reboot"));
        assert!(matches!(GpuProbe::from_output(Some(6), &lines("No devices were found")), GpuProbe::NoDevice(_)));
        // Nothing printed, or an exit other than 0 with rows: not a GPU sighting.
        assert!(matches!(GpuProbe::from_output(Some(0), &[]), GpuProbe::Other(_)));
        assert!(matches!(GpuProbe::from_output(Some(1), &lines("Tesla T4, 535.1, 15360")), GpuProbe::Other(_)));
        let missing = GpuProbe::ImageUnavailable {
            image: "nvidia/cuda:12.4.1-base-ubuntu22.04".into(),
            why: "no such host".into(),
        };
        assert!(missing.fix().contains("`docker pull nvidia/cuda:12.4.1-base-ubuntu22.04`"));
    }
}
