//! CPU package energy from the kernel's RAPL counters (`powercap`): Intel's `intel-rapl:N` and
//! AMD's `amd-rapl:N` zones, one per package, each with a microjoule counter `energy_uj` that
//! wraps at `max_energy_range_uj`.
//!
//! Only the top-level zones are read (`intel-rapl:0`, not its `intel-rapl:0:0` core/uncore/dram
//! subzones, which the package already contains). Since Linux 5.10 `energy_uj` is readable by
//! root only (CVE-2020-8694), so an unprivileged run says so and measures no CPU energy.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Where the powercap tree is read; tests point it at a scripted tree.
pub const ROOT_ENV: &str = "THREADCYCLE_POWERCAP_ROOT";

/// The kernel's powercap tree.
pub const DEFAULT_ROOT: &str = "/sys/class/powercap";

/// One package zone's counter at one read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaplZone {
    /// The zone's directory name (`intel-rapl:0`).
    pub zone: String,
    /// Its `name` file (`package-0`), when readable.
    pub name: Option<String>,
    /// `energy_uj`, µJ.
    pub energy_uj: u64,
    /// `max_energy_range_uj`: the counter runs 0..=this and wraps, µJ.
    pub max_uj: u64,
}

/// The powercap root: `$THREADCYCLE_POWERCAP_ROOT` when set, else `/sys/class/powercap`.
pub fn root() -> PathBuf {
    std::env::var_os(ROOT_ENV).map_or_else(|| PathBuf::from(DEFAULT_ROOT), PathBuf::from)
}

/// Whether a powercap entry is a package zone: `intel-rapl:N` or `amd-rapl:N`, no subzone.
fn is_package(name: &str) -> bool {
    ["intel-rapl:", "amd-rapl:"]
        .iter()
        .any(|p| name.strip_prefix(p).is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())))
}

/// Reads every package zone under `root`; `Ok(empty)` when the host exposes none, `Err` (the
/// file and why) when a zone exists but its counter cannot be read.
pub fn read(root: &Path) -> Result<Vec<RaplZone>, String> {
    let Ok(dir) = std::fs::read_dir(root) else { return Ok(Vec::new()) };
    let mut names: Vec<String> =
        dir.filter_map(|e| e.ok()?.file_name().into_string().ok()).filter(|n| is_package(n)).collect();
    names.sort();
    names.dedup();
    let mut out = Vec::with_capacity(names.len());
    for zone in names {
        let dir = root.join(&zone);
        let number = |file: &str| -> Result<u64, String> {
            let path = dir.join(file);
            let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            text.trim().parse::<u64>().map_err(|_| format!("{}: `{}` is not a number", path.display(), text.trim()))
        };
        let energy_uj = number("energy_uj")?;
        let max_uj = number("max_energy_range_uj")?;
        let name = std::fs::read_to_string(dir.join("name")).ok().map(|s| s.trim().to_string());
        out.push(RaplZone { zone, name, energy_uj, max_uj });
    }
    Ok(out)
}

/// CPU package energy accumulated over successive reads, each zone's wraps undone.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CpuEnergy {
    prev: BTreeMap<String, u64>,
    total_uj: BTreeMap<String, u128>,
    labels: BTreeMap<String, String>,
    reads: u64,
}

impl CpuEnergy {
    /// Adds one read of the zones. A counter below its previous value wrapped once at
    /// `max_energy_range_uj`: the shortest range seen (2³² µJ, about 4.3 kJ) lasts 43 s at
    /// 100 W, far longer than the slowest sampling period, so two wraps between reads do not
    /// happen.
    pub fn add(&mut self, zones: &[RaplZone]) {
        if zones.is_empty() {
            return;
        }
        self.reads += 1;
        for z in zones {
            self.labels.entry(z.zone.clone()).or_insert_with(|| match &z.name {
                Some(n) => format!("{} ({n})", z.zone),
                None => z.zone.clone(),
            });
            let delta = match self.prev.insert(z.zone.clone(), z.energy_uj) {
                None => 0,
                Some(p) if z.energy_uj >= p => z.energy_uj - p,
                // Wrapped: up to the top of the range, then from 0.
                Some(p) => z.max_uj.saturating_sub(p).saturating_add(z.energy_uj),
            };
            *self.total_uj.entry(z.zone.clone()).or_default() += u128::from(delta);
        }
    }

    /// Joules over the reads and the zones they came from; `None` before two reads.
    pub fn result(&self) -> Option<(f64, String)> {
        if self.reads < 2 {
            return None;
        }
        let uj: u128 = self.total_uj.values().sum();
        let zones: Vec<&str> = self.labels.values().map(String::as_str).collect();
        Some((uj as f64 / 1e6, format!("RAPL {}", zones.join(", "))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone(root: &Path, name: &str, label: &str, uj: u64, max: u64) {
        let d = root.join(name);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("name"), format!("{label}\n")).unwrap();
        std::fs::write(d.join("energy_uj"), format!("{uj}\n")).unwrap();
        std::fs::write(d.join("max_energy_range_uj"), format!("{max}\n")).unwrap();
    }

    #[test]
    fn reads_package_zones_only_and_undoes_a_wrap() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let max = 262_143_328_850;
        zone(root, "intel-rapl:0", "package-0", max - 2_000_000, max);
        zone(root, "intel-rapl:0:0", "core", 5, max);
        zone(root, "intel-rapl:1", "package-1", 10_000_000, max);
        std::fs::create_dir_all(root.join("intel-rapl")).unwrap();
        let first = read(root).unwrap();
        assert_eq!(first.iter().map(|z| z.zone.as_str()).collect::<Vec<_>>(), ["intel-rapl:0", "intel-rapl:1"]);
        let mut e = CpuEnergy::default();
        e.add(&first);
        assert_eq!(e.result(), None, "one read is no interval");
        // Package 0 wraps: 2 J to the top, then 3 J from 0; package 1 adds 4 J.
        zone(root, "intel-rapl:0", "package-0", 3_000_000, max);
        zone(root, "intel-rapl:1", "package-1", 14_000_000, max);
        e.add(&read(root).unwrap());
        let (j, src) = e.result().unwrap();
        assert!((j - 9.0).abs() < 1e-9, "{j}");
        assert_eq!(src, "RAPL intel-rapl:0 (package-0), intel-rapl:1 (package-1)");
    }

    #[test]
    fn amd_zones_count_and_a_missing_tree_is_no_error() {
        let dir = tempfile::tempdir().unwrap();
        zone(dir.path(), "amd-rapl:0", "package", 1_000_000, 4_294_967_295);
        let mut e = CpuEnergy::default();
        e.add(&read(dir.path()).unwrap());
        zone(dir.path(), "amd-rapl:0", "package", 61_000_000, 4_294_967_295);
        e.add(&read(dir.path()).unwrap());
        assert_eq!(e.result(), Some((60.0, "RAPL amd-rapl:0 (package)".to_string())));
        assert_eq!(read(&dir.path().join("absent")), Ok(Vec::new()));
        assert!(!is_package("intel-rapl:0:1") && !is_package("intel-rapl:") && is_package("amd-rapl:12"));
    }

    #[test]
    fn an_unreadable_counter_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        zone(dir.path(), "intel-rapl:0", "package-0", 1, 10);
        std::fs::write(dir.path().join("intel-rapl:0/energy_uj"), "denied?\n").unwrap();
        let err = read(dir.path()).unwrap_err();
        assert!(err.contains("intel-rapl:0/energy_uj") && err.contains("not a number"), "{err}");
        std::fs::remove_file(dir.path().join("intel-rapl:0/energy_uj")).unwrap();
        let err = read(dir.path()).unwrap_err();
        assert!(err.contains("intel-rapl:0/energy_uj"), "{err}");
    }
}
