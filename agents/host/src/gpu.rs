//! NVIDIA GPUs through NVML.
//!
//! NVML is loaded at run time (`libnvidia-ml.so.1`). Without it the probe says so plainly —
//! "no NVIDIA GPU (libnvidia-ml not found)" — and everything else carries on.

use nvml_wrapper::Nvml;
use nvml_wrapper::enum_wrappers::device::{Clock, TemperatureSensor};
use nvml_wrapper::error::NvmlError;
use protocol::results::GpuInfo;

/// One reading of one GPU.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GpuSample {
    /// Index.
    pub index: u32,
    /// VRAM used, bytes.
    pub mem_used: u64,
    /// VRAM total, bytes.
    pub mem_total: u64,
    /// GPU utilisation, %.
    pub util_pct: Option<u32>,
    /// Temperature, °C.
    pub temp_c: Option<u32>,
    /// Power, W.
    pub power_w: Option<f64>,
    /// Energy counter, mJ since driver load.
    pub energy_mj: Option<u64>,
    /// SM clock, MHz.
    pub sm_clock_mhz: Option<u32>,
    /// Memory clock, MHz.
    pub mem_clock_mhz: Option<u32>,
    /// Active throttle reasons, as names.
    pub throttle: Vec<String>,
}

/// Access to the GPUs, or the reason there is none.
pub enum Gpus {
    /// NVML loaded.
    Nvml(Box<Nvml>),
    /// No NVML; the reason in words.
    Unavailable(String),
}

impl Gpus {
    /// Loads NVML; a missing library or driver is not an error, just no GPU.
    pub fn probe() -> Gpus {
        match Nvml::init() {
            Ok(n) => Gpus::Nvml(Box::new(n)),
            Err(NvmlError::LibloadingError(_)) | Err(NvmlError::LibraryNotFound) => {
                Gpus::Unavailable("no NVIDIA GPU (libnvidia-ml not found)".into())
            }
            Err(NvmlError::DriverNotLoaded) => {
                Gpus::Unavailable("no NVIDIA GPU (the NVIDIA driver is not loaded)".into())
            }
            Err(NvmlError::NoPermission) => {
                Gpus::Unavailable("NVIDIA GPU not accessible (no permission for NVML)".into())
            }
            Err(e) => Gpus::Unavailable(format!("NVML failed to initialise: {e}")),
        }
    }

    /// Why there are no GPU figures, if there are none.
    pub fn note(&self) -> Option<&str> {
        match self {
            Gpus::Unavailable(r) => Some(r),
            Gpus::Nvml(_) => None,
        }
    }

    /// Static facts of every GPU (blocking FFI: call from a blocking thread).
    pub fn inventory(&self) -> Result<Vec<GpuInfo>, NvmlError> {
        let Gpus::Nvml(nvml) = self else { return Ok(Vec::new()) };
        let driver = nvml.sys_driver_version().unwrap_or_default();
        let mut out = Vec::new();
        for i in 0..nvml.device_count()? {
            let d = nvml.device_by_index(i)?;
            let mem = d.memory_info()?;
            out.push(GpuInfo {
                index: i,
                name: d.name().unwrap_or_else(|_| "unknown NVIDIA GPU".into()),
                vram_total: mem.total,
                vram_used: mem.used,
                temperature_c: d.temperature(TemperatureSensor::Gpu).ok(),
                power_w: d.power_usage().ok().map(|mw| f64::from(mw) / 1000.0),
                driver: driver.clone(),
                memory_bandwidth_gbs: match (d.memory_bus_width(), d.max_clock_info(Clock::Memory)) {
                    (Ok(bits), Ok(mhz)) => memory_bandwidth_gbs(bits, mhz),
                    _ => None,
                },
            });
        }
        Ok(out)
    }

    /// One sample of every GPU (blocking FFI: call from a blocking thread).
    pub fn sample(&self) -> Result<Vec<GpuSample>, NvmlError> {
        let Gpus::Nvml(nvml) = self else { return Ok(Vec::new()) };
        let mut out = Vec::new();
        for i in 0..nvml.device_count()? {
            let d = nvml.device_by_index(i)?;
            let mem = d.memory_info()?;
            let throttle = d
                .current_throttle_reasons()
                .map(|r| r.iter_names().map(|(n, _)| n.to_string()).collect())
                .unwrap_or_default();
            out.push(GpuSample {
                index: i,
                mem_used: mem.used,
                mem_total: mem.total,
                util_pct: d.utilization_rates().ok().map(|u| u.gpu),
                temp_c: d.temperature(TemperatureSensor::Gpu).ok(),
                power_w: d.power_usage().ok().map(|mw| f64::from(mw) / 1000.0),
                energy_mj: d.total_energy_consumption().ok(),
                sm_clock_mhz: d.clock_info(Clock::SM).ok(),
                mem_clock_mhz: d.clock_info(Clock::Memory).ok(),
                throttle,
            });
        }
        Ok(out)
    }
}

/// Peak memory bandwidth in decimal GB/s from NVML's bus width (bits) and maximum memory clock
/// (MHz): bytes per transfer × clock × 2 transfers per clock. NVML reports GDDR6X and HBM
/// clocks such that this gives the vendor's figure (RTX 4090: 384 bits × 10501 MHz → 1008 GB/s;
/// H100 SXM: 5120 bits × 2619 MHz → 3352 GB/s).
pub fn memory_bandwidth_gbs(bus_width_bits: u32, max_mem_clock_mhz: u32) -> Option<f64> {
    let gbs = f64::from(bus_width_bits) / 8.0 * f64::from(max_mem_clock_mhz) * 1e6 * 2.0 / 1e9;
    (gbs > 0.0).then_some(gbs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bandwidth_from_bus_width_and_memory_clock_matches_vendor_figures() {
        let rtx4090 = memory_bandwidth_gbs(384, 10501).unwrap();
        assert!((rtx4090 - 1008.1).abs() < 0.5, "{rtx4090}");
        let h100 = memory_bandwidth_gbs(5120, 2619).unwrap();
        assert!((h100 - 3352.3).abs() < 0.5, "{h100}");
        assert_eq!(memory_bandwidth_gbs(0, 2619), None);
        assert_eq!(memory_bandwidth_gbs(384, 0), None);
    }

    #[test]
    fn probe_reports_plainly_or_lists_gpus() {
        match Gpus::probe() {
            Gpus::Unavailable(reason) => assert!(reason.contains("GPU"), "{reason}"),
            g @ Gpus::Nvml(_) => {
                let inv = g.inventory().expect("inventory");
                assert!(!inv.is_empty());
                assert!(inv.iter().all(|d| d.vram_total > 0));
            }
        }
    }
}
