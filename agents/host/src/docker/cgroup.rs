//! The container's memory cgroup as the kernel keeps it: how many processes its OOM killer
//! killed. Docker's `OOMKilled` is set only when PID 1 dies of it; an engine's runner child
//! killed while `ollama serve` lives on shows up only here.

use std::path::{Path, PathBuf};

use super::{DockerError, DockerRuntime};

/// Where the cgroup file systems are mounted.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

impl DockerRuntime {
    /// The `oom_kill` count of the container's memory cgroup; `None` when no cgroup file for it
    /// can be read from here (another host, or a mount namespace without it).
    ///
    /// Looked up through the container's PID 1 (`/proc/<pid>/cgroup`), then at the places the
    /// cgroupfs and systemd drivers use: v2 `memory.events` under `docker/<id>` or
    /// `system.slice/docker-<id>.scope`, v1 `memory.oom_control` under `memory/…`.
    pub async fn oom_kills(&self, id: &str) -> Result<Option<u64>, DockerError> {
        let insp = self.inspect(id).await?;
        let full_id = insp.id.unwrap_or_else(|| id.to_string());
        let pid = insp.state.and_then(|s| s.pid).filter(|p| *p > 0);
        let mut candidates = Vec::new();
        if let Some(pid) = pid
            && let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        {
            candidates.extend(from_proc_cgroup(Path::new(CGROUP_ROOT), &text));
        }
        candidates.extend(driver_paths(Path::new(CGROUP_ROOT), &full_id));
        Ok(candidates.iter().find_map(|p| std::fs::read_to_string(p).ok().and_then(|t| oom_kill_count(&t))))
    }
}

/// The memory-cgroup files named by a `/proc/<pid>/cgroup` listing.
fn from_proc_cgroup(root: &Path, text: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let rel = path.trim_start_matches('/');
        if controllers.is_empty() {
            out.push(root.join(rel).join("memory.events"));
        } else if controllers.split(',').any(|c| c == "memory") {
            out.push(root.join("memory").join(rel).join("memory.oom_control"));
        }
    }
    out
}

/// Where Docker's cgroupfs and systemd drivers put a container's memory cgroup.
fn driver_paths(root: &Path, id: &str) -> Vec<PathBuf> {
    let scope = format!("system.slice/docker-{id}.scope");
    let plain = format!("docker/{id}");
    vec![
        root.join(&scope).join("memory.events"),
        root.join(&plain).join("memory.events"),
        root.join("memory").join(&plain).join("memory.oom_control"),
        root.join("memory").join(&scope).join("memory.oom_control"),
    ]
}

/// The `oom_kill N` line of `memory.events` (v2) or `memory.oom_control` (v1).
fn oom_kill_count(text: &str) -> Option<u64> {
    text.lines().find_map(|l| l.strip_prefix("oom_kill ").and_then(|n| n.trim().parse().ok()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_cgroup_versions_give_the_count() {
        assert_eq!(oom_kill_count("low 0\nhigh 0\nmax 12\noom 3\noom_kill 2\noom_group_kill 0\n"), Some(2));
        assert_eq!(oom_kill_count("oom_kill_disable 0\nunder_oom 0\noom_kill 1\n"), Some(1));
        assert_eq!(oom_kill_count("oom_kill_disable 0\n"), None);
    }

    #[test]
    fn proc_cgroup_names_the_v1_and_v2_files() {
        let root = Path::new("/sys/fs/cgroup");
        let v1 = from_proc_cgroup(root, "5:devices:/docker/abc\n4:memory:/docker/abc\n");
        assert_eq!(v1, vec![PathBuf::from("/sys/fs/cgroup/memory/docker/abc/memory.oom_control")]);
        let v2 = from_proc_cgroup(root, "0::/system.slice/docker-abc.scope\n");
        assert_eq!(v2, vec![PathBuf::from("/sys/fs/cgroup/system.slice/docker-abc.scope/memory.events")]);
    }
}
