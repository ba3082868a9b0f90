//! Host profiles: TOML files describing a target machine (VRAM, RAM, memory bandwidths), so fit
//! and speed can be predicted for a box threadcycle is not running on — e.g. "would the plan run
//! on an RTX 5070 Ti with 32 GB?".
//!
//! Units follow how the hardware is sold: `vram_gb`, `ram_gb` and `container_limit_gb` are GiB
//! (a "16 GB" card and a "32 GB" kit hold 16 and 32 GiB; Docker's `--memory 30g` is GiB), and
//! bandwidths are decimal GB/s as vendors quote them.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::fit::{GIB, HostCapacity, MIB};

/// VRAM the driver, CUDA context and a display take before the engine starts; §3.4 assumes
/// 15.6 GiB free on a 16 GiB card.
pub const VRAM_RESERVED: u64 = 410 * MIB;
/// RAM the OS, Docker, NATS and the agents keep for themselves on a dedicated box.
pub const RAM_RESERVED: u64 = 2 * GIB;
/// Largest figure accepted for any size or bandwidth; bigger is a typo.
const MAX_FIGURE: f64 = 1_000_000.0;

/// Why a host profile could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// The file could not be read.
    #[error("cannot read host profile {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The file is not TOML of the expected shape (unknown or missing field, wrong type).
    #[error("host profile {} is not a valid profile: {message}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The TOML parser's explanation, naming the field and line.
        message: String,
    },
    /// A field has a value no machine has.
    #[error("host profile {}: `{field}` {problem}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        problem: String,
    },
}

/// A target machine, as written in `hosts/*.toml`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostProfile {
    /// Short name, e.g. `rtx5070ti-32gb`.
    pub name: String,
    /// GPU product name, for reports.
    #[serde(default)]
    pub gpu_name: Option<String>,
    /// VRAM of the GPU, GiB (0 = no GPU).
    pub vram_gb: f64,
    /// Installed RAM, GiB.
    pub ram_gb: f64,
    /// GPU memory bandwidth, GB/s.
    pub gpu_bandwidth_gbs: f64,
    /// Host memory bandwidth, GB/s.
    pub ram_bandwidth_gbs: f64,
    /// Memory limit of the engine's container, GiB.
    #[serde(default)]
    pub container_limit_gb: Option<f64>,
}

/// Loads and validates a host profile.
pub fn load(path: &Path) -> Result<HostProfile, ProfileError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| ProfileError::Read { path: path.to_path_buf(), source })?;
    parse(&text, path)
}

/// Parses and validates profile text; `path` is only used to name the file in errors.
pub fn parse(text: &str, path: &Path) -> Result<HostProfile, ProfileError> {
    let profile: HostProfile = toml::from_str(text)
        .map_err(|e| ProfileError::Parse { path: path.to_path_buf(), message: e.to_string().trim_end().to_string() })?;
    profile.validate(path)?;
    Ok(profile)
}

impl HostProfile {
    fn validate(&self, path: &Path) -> Result<(), ProfileError> {
        let invalid = |field, problem: String| ProfileError::Invalid { path: path.to_path_buf(), field, problem };
        if self.name.trim().is_empty() {
            return Err(invalid("name", "is empty".into()));
        }
        let figure = |field, v: f64, zero_ok: bool| {
            if !v.is_finite() || !(0.0..=MAX_FIGURE).contains(&v) {
                Err(invalid(field, format!("is {v}; expected a number between 0 and {MAX_FIGURE}")))
            } else if v == 0.0 && !zero_ok {
                Err(invalid(field, "is 0; it must be positive".into()))
            } else {
                Ok(())
            }
        };
        figure("vram_gb", self.vram_gb, true)?;
        figure("ram_gb", self.ram_gb, false)?;
        figure("ram_bandwidth_gbs", self.ram_bandwidth_gbs, false)?;
        // A GPU-less profile has no GPU bandwidth to speak of.
        figure("gpu_bandwidth_gbs", self.gpu_bandwidth_gbs, self.vram_gb == 0.0)?;
        if let Some(limit) = self.container_limit_gb {
            figure("container_limit_gb", limit, false)?;
            if limit > self.ram_gb {
                return Err(invalid(
                    "container_limit_gb",
                    format!("is {limit} GiB, more than the {} GiB of RAM the host has", self.ram_gb),
                ));
            }
        }
        Ok(())
    }

    /// What the profile offers the engine, after what the OS and driver keep for themselves.
    pub fn capacity(&self) -> HostCapacity {
        let bytes = |gib: f64| (gib * GIB as f64) as u64;
        let vram = bytes(self.vram_gb).saturating_sub(VRAM_RESERVED);
        HostCapacity {
            gpus_free_vram: if vram > 0 { vec![vram] } else { Vec::new() },
            ram_available: bytes(self.ram_gb).saturating_sub(RAM_RESERVED),
            container_limit: self.container_limit_gb.map(bytes),
        }
    }

    /// Decode tokens/s the memory bandwidth allows for this split of the weights.
    pub fn roofline_decode_tps(&self, weights_on_gpu_bytes: u64, weights_in_ram_bytes: u64) -> f64 {
        roofline_decode_tps(weights_on_gpu_bytes, weights_in_ram_bytes, self.gpu_bandwidth_gbs, self.ram_bandwidth_gbs)
    }
}

/// Decode tokens/s memory bandwidth allows for this split (see
/// [`protocol::results::roofline_decode_tps`]); 0.0 when nothing is read or a bandwidth needed
/// for the bytes is not positive.
pub fn roofline_decode_tps(
    weights_on_gpu_bytes: u64,
    weights_in_ram_bytes: u64,
    gpu_bw_gbs: f64,
    ram_bw_gbs: f64,
) -> f64 {
    protocol::results::roofline_decode_tps(
        weights_on_gpu_bytes,
        weights_in_ram_bytes,
        Some(gpu_bw_gbs),
        Some(ram_bw_gbs),
    )
    .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../hosts")
    }

    #[test]
    fn shipped_profiles_load() {
        let p = load(&hosts_dir().join("rtx5070ti-32gb.toml")).expect("loads");
        assert_eq!((p.vram_gb, p.ram_gb, p.gpu_bandwidth_gbs), (16.0, 32.0, 896.0));
        let c = p.capacity();
        assert_eq!(c.gpus_free_vram.len(), 1);
        // §3.4 assumes 15.6 GiB free on a 16 GiB card.
        assert!((c.gpus_free_vram[0] as f64 / GIB as f64 - 15.6).abs() < 0.01);
        assert_eq!(c.ram_available, 30 * GIB);

        let p = load(&hosts_dir().join("rtx4090-64gb.toml")).expect("loads");
        assert_eq!((p.vram_gb, p.ram_gb, p.gpu_bandwidth_gbs), (24.0, 64.0, 1008.0));
        assert!(p.gpu_name.is_some());
    }

    #[test]
    fn unknown_field_is_named() {
        let text =
            "name = \"x\"\nvram_gb = 16\nram_gb = 32\ngpu_bandwidth_gbs = 896\nram_bandwidth_gbs = 80\nvram_gib = 3\n";
        let e = parse(text, Path::new("hosts/x.toml")).expect_err("must be refused");
        let msg = e.to_string();
        assert!(msg.contains("hosts/x.toml") && msg.contains("vram_gib"), "{msg}");
    }

    #[test]
    fn missing_field_is_named() {
        let e = parse("name = \"x\"\nvram_gb = 16\n", Path::new("h.toml")).expect_err("must be refused");
        assert!(e.to_string().contains("ram_gb"), "{e}");
    }

    #[test]
    fn bad_values_name_file_and_field() {
        let base = "name = \"x\"\ngpu_bandwidth_gbs = 896\nram_bandwidth_gbs = 80\n";
        for (extra, field) in [
            ("vram_gb = -1\nram_gb = 32\n", "vram_gb"),
            ("vram_gb = 16\nram_gb = 0\n", "ram_gb"),
            ("vram_gb = 16\nram_gb = nan\n", "ram_gb"),
            ("vram_gb = 16\nram_gb = 32\ncontainer_limit_gb = 48\n", "container_limit_gb"),
        ] {
            let e = parse(&format!("{base}{extra}"), Path::new("hosts/bad.toml")).expect_err("must be refused");
            assert!(matches!(&e, ProfileError::Invalid { field: f, .. } if *f == field), "{e}");
            assert!(e.to_string().contains("hosts/bad.toml"), "{e}");
        }
        let e = parse(
            "name = \" \"\nvram_gb = 0\nram_gb = 8\ngpu_bandwidth_gbs = 0\nram_bandwidth_gbs = 50\n",
            Path::new("a"),
        )
        .expect_err("must be refused");
        assert!(e.to_string().contains("`name`"), "{e}");
    }

    #[test]
    fn gpu_less_profile_has_no_gpus() {
        let p = parse("name = \"cpu\"\nvram_gb = 0\nram_gb = 16\ngpu_bandwidth_gbs = 0\nram_bandwidth_gbs = 50\ncontainer_limit_gb = 12\n", Path::new("a"))
            .expect("valid");
        let c = p.capacity();
        assert!(c.gpus_free_vram.is_empty());
        assert_eq!(c.container_limit, Some(12 * GIB));
        assert_eq!(c.ram_limit(), 12 * GIB);
    }

    #[test]
    fn missing_file_is_named() {
        let e = load(Path::new("/nonexistent/host.toml")).expect_err("must be refused");
        assert!(e.to_string().contains("/nonexistent/host.toml"), "{e}");
    }

    #[test]
    fn roofline_adds_the_time_of_each_memory() {
        // 10 GB on a 1000 GB/s GPU: 10 ms per token → 100 tok/s.
        assert!((roofline_decode_tps(10_000_000_000, 0, 1000.0, 80.0) - 100.0).abs() < 1e-9);
        // Plus 8 GB from 80 GB/s RAM: 10 ms + 100 ms → ~9.09 tok/s.
        assert!((roofline_decode_tps(10_000_000_000, 8_000_000_000, 1000.0, 80.0) - 1.0 / 0.11).abs() < 1e-9);
        assert_eq!(roofline_decode_tps(0, 0, 1000.0, 80.0), 0.0);
        assert_eq!(roofline_decode_tps(1, 0, 0.0, 80.0), 0.0);
        assert_eq!(roofline_decode_tps(0, 1, 1000.0, f64::NAN), 0.0);
    }

    #[test]
    fn seventy_b_on_the_16gb_box_is_ram_bound() {
        // §3.4: about 27 of 81 layers on the GPU; decode is bounded by the ~26 GiB read from RAM.
        let p = load(&hosts_dir().join("rtx5070ti-32gb.toml")).expect("loads");
        let m = crate::builtin::lookup("llama3.1:70b").expect("built in");
        let pred = crate::fit::predict(&m, &p.capacity(), &crate::fit::FitInputs::default());
        let tps = p.roofline_decode_tps(pred.weights_on_gpu, pred.weights_in_ram);
        assert!((2.0..4.0).contains(&tps), "{tps:.2} tok/s");
    }
}
