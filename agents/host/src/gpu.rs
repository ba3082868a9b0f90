//! NVIDIA GPUs through NVML.
//!
//! NVML is loaded at run time: `libnvidia-ml.so.1` from the loader's path, or the library named by
//! [`LIB_ENV`] (`THREADCYCLE_NVML_LIB`), e.g. the scripted test double built from
//! `testkit/nvml-double/`. Without it the probe says so plainly — "no NVIDIA GPU
//! (libnvidia-ml not found)" — and everything else carries on.

use std::ffi::OsStr;

use nvml_wrapper::Nvml;
use nvml_wrapper::bitmasks::device::ThrottleReasons;
use nvml_wrapper::enum_wrappers::device::{Clock, TemperatureSensor};
use nvml_wrapper::error::NvmlError;
use protocol::results::GpuInfo;

/// One reading of one GPU.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GpuSample {
    /// Index.
    pub index: u32,
    /// VRAM allocated (NVML's `used`, as `nvidia-smi` shows it; the driver's reservation is not
    /// in it), bytes.
    pub mem_used: u64,
    /// VRAM free for new allocations, bytes (less than `mem_total − mem_used` by the reservation).
    pub mem_free: u64,
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

/// Environment variable naming the NVML library to load instead of `libnvidia-ml.so.1` (a path,
/// or a name the dynamic loader finds).
pub const LIB_ENV: &str = "THREADCYCLE_NVML_LIB";

impl Gpus {
    /// Loads NVML (the library named by [`LIB_ENV`] when set); a missing library or driver is not
    /// an error, just no GPU.
    pub fn probe() -> Gpus {
        let lib = std::env::var_os(LIB_ENV).filter(|v| !v.is_empty());
        Self::probe_lib(lib.as_deref())
    }

    /// Loads NVML from `lib` (`None`: `libnvidia-ml.so.1` from the loader's path).
    pub fn probe_lib(lib: Option<&OsStr>) -> Gpus {
        let init = match lib {
            Some(path) => Nvml::builder().lib_path(path).init(),
            None => Nvml::init(),
        };
        match init {
            Ok(n) => Gpus::Nvml(Box::new(n)),
            Err(NvmlError::LibloadingError(e)) => Gpus::Unavailable(match lib {
                Some(path) => format!(
                    "no NVIDIA GPU (the NVML library {} named by {LIB_ENV} could not be loaded: {e})",
                    path.to_string_lossy()
                ),
                None => "no NVIDIA GPU (libnvidia-ml not found)".into(),
            }),
            Err(NvmlError::LibraryNotFound) => Gpus::Unavailable("no NVIDIA GPU (libnvidia-ml not found)".into()),
            Err(NvmlError::FailedToLoadSymbol(e)) => Gpus::Unavailable(format!("NVML library lacks nvmlInit_v2: {e}")),
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
                vram_used: not_free(&mem),
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
            let throttle = d.current_throttle_reasons().map(throttle_names).unwrap_or_default();
            out.push(GpuSample {
                index: i,
                mem_used: mem.used,
                mem_free: mem.free,
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

/// VRAM that new allocations cannot have: `total − free`. NVML's v2 `used` leaves out the
/// driver's reservation (hundreds of MiB on a GeForce card), so `total − used` would overstate
/// what is free and the fit would place layers in memory that is not there.
fn not_free(mem: &nvml_wrapper::struct_wrappers::device::MemoryInfo) -> u64 {
    mem.total.saturating_sub(mem.free)
}

/// The reasons clocks are held down, by name. `GPU_IDLE` is left out: NVML sets it whenever the
/// GPU has nothing to do (between requests, before the first), which slows nothing down.
pub fn throttle_names(reasons: ThrottleReasons) -> Vec<String> {
    (reasons - ThrottleReasons::GPU_IDLE).iter_names().map(|(n, _)| n.to_string()).collect()
}

/// Peak memory bandwidth in decimal GB/s from NVML's bus width (bits) and maximum memory clock
/// (MHz): bytes per transfer × clock × 2 transfers per clock. NVML reports GDDR6X, GDDR7 and
/// HBM clocks such that this gives the vendor's figure with no memory-type factor: RTX 4090:
/// 384 bits × 10501 MHz → 1008 GB/s; H100 SXM: 5120 bits × 2619 MHz → 3352 GB/s; an H200 read
/// 6016 bits × 3201 MHz → 4814 GB/s. GDDR7 is reported at half its data rate like GDDR6X: an
/// RTX 5090 at its stock 28 Gbps shows 14001 MHz (NVIDIA/open-gpu-kernel-modules#1266), so a
/// 28 Gbps RTX 5070 Ti gives 256 bits × 14001 MHz → 896 GB/s.
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
    fn bandwidth_of_an_h200_and_of_gddr7_needs_no_memory_type_factor() {
        // The H200 reading from a real machine.
        let h200 = memory_bandwidth_gbs(6016, 3201).unwrap();
        assert!((h200 - 4814.4).abs() < 0.5, "{h200}");
        // GDDR7 at 28 Gbps shows 14001 MHz (RTX 5090): 512 bits → 1792 GB/s, 256 bits → 896.
        let rtx5090 = memory_bandwidth_gbs(512, 14001).unwrap();
        assert!((rtx5090 - 1792.1).abs() < 0.5, "{rtx5090}");
        let rtx5070ti = memory_bandwidth_gbs(256, 14001).unwrap();
        assert!((rtx5070ti - 896.1).abs() < 0.5, "{rtx5070ti}");
    }

    const GIB: u64 = 1 << 30;

    fn double(script: &str) -> (testkit::nvml_double::Scripted, Gpus) {
        let d = testkit::nvml_double::Scripted::new(script);
        let g = Gpus::probe_lib(Some(d.lib().as_os_str()));
        assert!(g.note().is_none(), "the double did not load: {:?}", g.note());
        (d, g)
    }

    #[test]
    fn double_h200_inventory_through_nvml_wrapper() {
        let (_d, g) = double(testkit::nvml_double::H200);
        let inv = g.inventory().unwrap();
        assert_eq!(inv.len(), 1);
        let h = &inv[0];
        assert_eq!((h.index, h.name.as_str(), h.driver.as_str()), (0, "NVIDIA H200", "570.133.20"));
        let bw = h.memory_bandwidth_gbs.unwrap();
        assert!((bw - 4814.4).abs() < 0.5, "{bw}");
        assert!((h.vram_total as f64 / 1e9 - 141.0).abs() < 0.1, "{}", h.vram_total);
        // Used counts the driver's reservation: 60 + 0.5 GiB.
        assert_eq!(h.vram_used, 60 * GIB + GIB / 2);
        assert_eq!((h.temperature_c, h.power_w), (Some(45), Some(650.0)));
    }

    #[test]
    fn double_rtx_5070_ti_at_15_5_of_16_gib_and_its_refusals() {
        let (_d, g) = double(testkit::nvml_double::RTX_5070_TI);
        let inv = g.inventory().unwrap();
        let card = &inv[0];
        assert_eq!(card.vram_total, 16 * GIB);
        // 15.05 GiB used + 0.45 GiB reserved: 0.5 GiB free, not the 0.95 that `total − used` gives.
        let free = card.vram_total - card.vram_used;
        assert!((free as f64 / GIB as f64 - 0.5).abs() < 1e-6, "{free}");
        let bw = card.memory_bandwidth_gbs.unwrap();
        assert!((bw - 896.1).abs() < 0.5, "GDDR7 bandwidth {bw}");
        let s = &g.sample().unwrap()[0];
        assert_eq!(s.energy_mj, None, "no permission for the energy counter");
        assert_eq!((s.power_w, s.temp_c, s.util_pct), (Some(28.5), Some(38), Some(3)));
        assert_eq!((s.mem_clock_mhz, s.sm_clock_mhz), (Some(13801), Some(2805)));
        assert!(s.throttle.is_empty(), "an idle GPU is not throttled: {:?}", s.throttle);
        assert_eq!((s.mem_used + s.mem_free, s.mem_free), (16 * GIB - 483_183_821, GIB / 2));
    }

    #[test]
    fn double_two_gpus_one_refusing_some_calls() {
        let (_d, g) = double(testkit::nvml_double::TWO_GPUS);
        let inv = g.inventory().unwrap();
        assert_eq!(
            inv.iter().map(|d| d.name.as_str()).collect::<Vec<_>>(),
            ["NVIDIA GeForce RTX 4090", "NVIDIA GeForce RTX 3090"]
        );
        assert!((inv[0].memory_bandwidth_gbs.unwrap() - 1008.1).abs() < 0.5);
        assert_eq!(inv[1].memory_bandwidth_gbs, None, "bus width not supported");
        assert_eq!(inv[1].power_w, None, "power: no permission");
        let s = g.sample().unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].util_pct, s[0].energy_mj, s[0].power_w), (Some(0), Some(1_000_000), Some(30.0)));
        assert_eq!((s[1].util_pct, s[1].power_w, s[1].energy_mj, s[1].sm_clock_mhz), (None, None, None, None));
        assert!(s[1].throttle.is_empty());
        assert_eq!((s[1].temp_c, s[1].mem_used, s[1].mem_free), (Some(50), 2 * GIB, 22 * GIB));
    }

    #[test]
    fn double_sequences_advance_per_read_and_name_throttle_reasons() {
        let (_d, g) = double(
            "gpu0.memory_total = 16GiB\ngpu0.temperature = 60, 72*2, 64\n\
             gpu0.throttle = 0x1, 0x5, 0x60, 0x0\ngpu0.power = 100000, unknown, 120000\n",
        );
        let reads: Vec<GpuSample> = (0..5).map(|_| g.sample().unwrap().remove(0)).collect();
        let temps: Vec<_> = reads.iter().map(|s| s.temp_c).collect();
        assert_eq!(temps, [Some(60), Some(72), Some(72), Some(64), Some(64)]);
        let throttle: Vec<_> = reads.iter().map(|s| s.throttle.join("+")).collect();
        assert_eq!(throttle, ["", "SW_POWER_CAP", "SW_THERMAL_SLOWDOWN+HW_THERMAL_SLOWDOWN", "", ""]);
        let power: Vec<_> = reads.iter().map(|s| s.power_w).collect();
        assert_eq!(power, [Some(100.0), None, Some(120.0), Some(120.0), Some(120.0)]);
        // Not scripted: not supported, as a GeForce driver answers.
        assert_eq!((reads[0].util_pct, reads[0].mem_clock_mhz), (None, None));
    }

    #[test]
    fn double_of_an_older_driver_lacking_symbols_leaves_those_figures_out() {
        use testkit::nvml_double::{H200, Scripted, old_driver_library};
        let d = Scripted::of(&old_driver_library(), &format!("{H200}gpu0.energy = 1000\n"));
        let g = Gpus::probe_lib(Some(d.lib().as_os_str()));
        assert!(g.note().is_none(), "{:?}", g.note());
        let Gpus::Nvml(nvml) = &g else { unreachable!() };
        let dev = nvml.device_by_index(0).unwrap();
        assert!(matches!(dev.total_energy_consumption(), Err(NvmlError::FailedToLoadSymbol(_))));
        let inv = g.inventory().unwrap();
        assert_eq!((inv[0].name.as_str(), inv[0].memory_bandwidth_gbs), ("NVIDIA H200", None));
        let s = &g.sample().unwrap()[0];
        assert_eq!((s.energy_mj, s.power_w), (None, Some(650.0)));
        // Dropping it calls nvmlShutdown, which nvml-wrapper requires (it panics without one).
        drop(g);
    }

    #[test]
    fn double_init_refusals_and_a_missing_library_say_why() {
        let d = testkit::nvml_double::Scripted::new("init = no_permission\n");
        let g = Gpus::probe_lib(Some(d.lib().as_os_str()));
        assert_eq!(g.note(), Some("NVIDIA GPU not accessible (no permission for NVML)"));
        let d = testkit::nvml_double::Scripted::new("init = driver_not_loaded\n");
        let g = Gpus::probe_lib(Some(d.lib().as_os_str()));
        assert_eq!(g.note(), Some("no NVIDIA GPU (the NVIDIA driver is not loaded)"));
        let g = Gpus::probe_lib(Some(OsStr::new("/nonexistent/libnvidia-ml.so.1")));
        let note = g.note().unwrap();
        assert!(
            note.starts_with(
                "no NVIDIA GPU (the NVML library /nonexistent/libnvidia-ml.so.1 named by THREADCYCLE_NVML_LIB"
            ),
            "{note}"
        );
        assert!(g.inventory().unwrap().is_empty() && g.sample().unwrap().is_empty());
        // No GPUs at all: NVML loads and lists none.
        let (_d, g) = double("count = 0\n");
        assert!(g.inventory().unwrap().is_empty());
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
