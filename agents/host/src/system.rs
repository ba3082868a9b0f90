//! The host as Linux shows it: `/proc`, cgroups, free disk.

use std::path::{Path, PathBuf};

/// Memory figures from `/proc/meminfo`, bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MemInfo {
    /// MemTotal.
    pub total: u64,
    /// MemAvailable.
    pub available: u64,
    /// SwapTotal.
    pub swap_total: u64,
    /// SwapFree.
    pub swap_free: u64,
}

/// A host reading failed.
#[derive(Debug, thiserror::Error)]
pub enum SystemError {
    /// A file could not be read.
    #[error("cannot read {path}: {reason}")]
    Read {
        /// Path.
        path: String,
        /// Why.
        reason: String,
    },
    /// A file did not have the expected content.
    #[error("{path} is not as expected: {reason}")]
    Parse {
        /// Path.
        path: String,
        /// Why.
        reason: String,
    },
}

fn read(path: &str) -> Result<String, SystemError> {
    std::fs::read_to_string(path).map_err(|e| SystemError::Read { path: path.into(), reason: e.to_string() })
}

/// Parses `/proc/meminfo` text.
pub fn parse_meminfo(text: &str) -> Result<MemInfo, SystemError> {
    let field = |name: &str| -> Option<u64> {
        text.lines().find_map(|l| {
            let rest = l.strip_prefix(name)?.strip_prefix(':')?;
            let kb: u64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
            kb.checked_mul(1024)
        })
    };
    let need = |name: &str| {
        field(name)
            .ok_or_else(|| SystemError::Parse { path: "/proc/meminfo".into(), reason: format!("no {name} line") })
    };
    Ok(MemInfo {
        total: need("MemTotal")?,
        available: need("MemAvailable")?,
        swap_total: field("SwapTotal").unwrap_or(0),
        swap_free: field("SwapFree").unwrap_or(0),
    })
}

/// Reads `/proc/meminfo`.
pub fn meminfo() -> Result<MemInfo, SystemError> {
    parse_meminfo(&read("/proc/meminfo")?)
}

/// The memory limit of the cgroup this process runs in (v2, then v1); None when unlimited.
pub fn cgroup_memory_limit() -> Option<u64> {
    let v2 = std::fs::read_to_string("/sys/fs/cgroup/memory.max").ok();
    let v1 = || std::fs::read_to_string("/sys/fs/cgroup/memory/memory.limit_in_bytes").ok();
    let text = v2.or_else(v1)?;
    parse_cgroup_limit(&text)
}

/// Parses a cgroup memory limit file; `max` and the v1 "unlimited" sentinel give None.
pub fn parse_cgroup_limit(text: &str) -> Option<u64> {
    let t = text.trim();
    if t == "max" {
        return None;
    }
    let v: u64 = t.parse().ok()?;
    // cgroup v1 reports "unlimited" as a number near i64::MAX rounded to the page size.
    (v < (1 << 62)).then_some(v)
}

/// Free bytes available to unprivileged users on the filesystem holding `path` (or its
/// nearest existing ancestor, so a model store that does not exist yet can be checked).
pub fn disk_free(path: &Path) -> Result<(u64, PathBuf), SystemError> {
    let mut p = path.to_path_buf();
    while !p.exists() {
        match p.parent() {
            Some(parent) if parent != p => p = parent.to_path_buf(),
            _ => break,
        }
    }
    let st = nix::sys::statvfs::statvfs(&p)
        .map_err(|e| SystemError::Read { path: p.display().to_string(), reason: e.to_string() })?;
    Ok(((st.blocks_available() as u64).saturating_mul(st.fragment_size() as u64), p))
}

/// Host name.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// Kernel release.
pub fn kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease").map(|s| s.trim().to_string()).unwrap_or_default()
}

/// CPU model name from `/proc/cpuinfo`.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                l.strip_prefix("model name").and_then(|r| r.split_once(':')).map(|(_, v)| v.trim().to_string())
            })
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

/// Logical CPUs available to this process.
pub fn cpus() -> u32 {
    std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1)
}

/// Resident and peak resident memory of a process, bytes (`VmRSS`, `VmHWM`).
pub fn process_memory(pid: u32) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        text.lines().find_map(|l| {
            let kb: u64 = l.strip_prefix(name)?.trim().trim_end_matches("kB").trim().parse().ok()?;
            Some(kb * 1024)
        })
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// CPU time of a process (user + system), in clock ticks, from `/proc/<pid>/stat`.
pub fn process_cpu_ticks(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Host memory bandwidth as a copy measures it (STREAM's "Copy" convention: bytes read plus bytes
/// written, per second).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RamBandwidth {
    /// Decimal GB/s.
    pub gbs: f64,
    /// Bytes each pass moved (read + written).
    pub bytes_per_pass: u64,
    /// Threads that copied at once.
    pub threads: usize,
    /// Timed passes (the best one counts; an untimed first pass faults the pages in).
    pub passes: u32,
}

impl RamBandwidth {
    /// How it was measured, for reports.
    pub fn describe(&self) -> String {
        format!(
            "measured: parallel copy of {} MiB on {} thread(s), best of {} passes",
            self.bytes_per_pass / 2 / (1 << 20),
            self.threads,
            self.passes
        )
    }
}

/// Measures host memory bandwidth: `threads` threads each copy their own share of `total_bytes`
/// between two buffers, `passes` times after one untimed pass; the fastest pass counts. The copy
/// is the C library's `memcpy`, so the figure does not depend on how this crate was compiled.
/// Buffers far larger than the CPU caches (hundreds of MiB) measure DRAM, not cache.
///
/// None when `total_bytes`, `threads` or `passes` is zero or a pass took no measurable time.
pub fn measure_ram_bandwidth(total_bytes: usize, threads: usize, passes: u32) -> Option<RamBandwidth> {
    if total_bytes == 0 || threads == 0 || passes == 0 {
        return None;
    }
    let chunk = (total_bytes / threads).max(4096);
    let mut pairs: Vec<(Vec<u8>, Vec<u8>)> =
        (0..threads).map(|i| (vec![i as u8 | 1; chunk], vec![0u8; chunk])).collect();
    let mut best = f64::INFINITY;
    for pass in 0..=passes {
        let started = std::time::Instant::now();
        std::thread::scope(|scope| {
            for (src, dst) in pairs.iter_mut() {
                scope.spawn(move || dst.copy_from_slice(src));
            }
        });
        let secs = started.elapsed().as_secs_f64();
        if pass > 0 {
            best = best.min(secs);
        }
    }
    // Keep the copies observable so they cannot be optimised away.
    let checksum: u64 = pairs.iter().map(|(_, d)| u64::from(d[chunk / 2])).sum();
    let moved = 2 * (chunk * threads) as u64;
    (best > 0.0 && best.is_finite() && checksum > 0).then(|| RamBandwidth {
        gbs: moved as f64 / best / 1e9,
        bytes_per_pass: moved,
        threads,
        passes,
    })
}

/// The mount holding a path: file system type, source (for ZFS the `pool/dataset`) and mount point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// `ext4`, `zfs`, `xfs`, `btrfs`, `overlay`, …
    pub fstype: String,
    /// The mount source: a device, or for ZFS the dataset (`tank/models`).
    pub source: String,
    /// Where it is mounted.
    pub mount_point: PathBuf,
}

/// The mount holding `path` (its nearest existing ancestor), from `/proc/self/mountinfo`.
pub fn filesystem_of(path: &Path) -> Option<Mount> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mut p = path.to_path_buf();
    while !p.exists() {
        p = p.parent()?.to_path_buf();
    }
    let p = p.canonicalize().unwrap_or(p);
    mount_of(&text, &p)
}

/// The longest mount point in `mountinfo` that contains `path`.
fn mount_of(mountinfo: &str, path: &Path) -> Option<Mount> {
    mountinfo
        .lines()
        .filter_map(|line| {
            // `id parent major:minor root mount_point options [optional…] - fstype source super_options`
            let (left, right) = line.split_once(" - ")?;
            let mount_point = PathBuf::from(unescape_mount(left.split(' ').nth(4)?));
            let mut r = right.split(' ');
            let fstype = r.next()?.to_string();
            let source = unescape_mount(r.next()?);
            path.starts_with(&mount_point).then_some(Mount { fstype, source, mount_point })
        })
        .max_by_key(|m| m.mount_point.components().count())
}

/// mountinfo writes space, tab, newline and backslash as octal escapes (`\040`).
fn unescape_mount(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            let v = u16::from(b[i + 1] - b'0') * 64 + u16::from(b[i + 2] - b'0') * 8 + u16::from(b[i + 3] - b'0');
            out.push(u8::try_from(v).unwrap_or(b'?'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_mount_holding_a_path_is_found_with_its_zfs_dataset() {
        let info = "22 1 0:21 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n\
                    90 22 0:50 / /tank rw shared:40 - zfs tank rw,xattr\n\
                    91 90 0:51 / /tank/ollama\\040models rw shared:41 - zfs tank/ollama-models rw,xattr\n";
        let m = mount_of(info, Path::new("/tank/ollama models/blobs")).expect("a mount");
        assert_eq!((m.fstype.as_str(), m.source.as_str()), ("zfs", "tank/ollama-models"));
        assert_eq!(m.mount_point, PathBuf::from("/tank/ollama models"));
        assert_eq!(mount_of(info, Path::new("/tankx")).expect("root").fstype, "ext4");
        assert_eq!(mount_of(info, Path::new("/tank/x")).expect("tank").source, "tank");
        assert_eq!(mount_of("garbage\n", Path::new("/")), None);
        // This machine's own root is on some file system.
        assert!(filesystem_of(Path::new("/")).is_some());
    }

    #[test]
    fn ram_bandwidth_is_measured_plausibly() {
        let bw = measure_ram_bandwidth(64 << 20, 2, 3).unwrap();
        // Any machine this runs on moves between 0.1 and 2000 GB/s.
        assert!(bw.gbs > 0.1 && bw.gbs < 2000.0, "{bw:?}");
        assert_eq!(bw.bytes_per_pass, 2 * (64 << 20));
        assert!(bw.describe().contains("64 MiB on 2 thread(s), best of 3"), "{}", bw.describe());
        assert_eq!(measure_ram_bandwidth(0, 2, 3), None);
        assert_eq!(measure_ram_bandwidth(1 << 20, 0, 3), None);
    }

    #[test]
    fn meminfo_parses_and_names_missing_lines() {
        let m = parse_meminfo("MemTotal:       1000 kB\nMemFree: 1 kB\nMemAvailable:    500 kB\nSwapTotal: 0 kB\n")
            .unwrap();
        assert_eq!(m.total, 1_024_000);
        assert_eq!(m.available, 512_000);
        let e = parse_meminfo("MemTotal: 1 kB\n").unwrap_err();
        assert!(e.to_string().contains("MemAvailable"), "{e}");
    }

    #[test]
    fn cgroup_limits() {
        assert_eq!(parse_cgroup_limit("max\n"), None);
        assert_eq!(parse_cgroup_limit("9223372036854771712\n"), None);
        assert_eq!(parse_cgroup_limit("536870912\n"), Some(536_870_912));
        assert_eq!(parse_cgroup_limit("garbage"), None);
    }

    #[test]
    fn real_host_readings_are_plausible() {
        let m = meminfo().unwrap();
        assert!(m.total > 0 && m.available <= m.total);
        let (free, at) = disk_free(Path::new("/definitely/not/here/models")).unwrap();
        assert!(free > 0);
        assert_eq!(at, PathBuf::from("/"));
        let (rss, hwm) = process_memory(std::process::id()).unwrap();
        assert!(rss > 0 && hwm >= rss);
        assert!(process_cpu_ticks(std::process::id()).is_some());
    }
}
