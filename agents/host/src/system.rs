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

#[cfg(test)]
mod tests {
    use super::*;

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
