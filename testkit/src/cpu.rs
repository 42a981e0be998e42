//! A server made slow for real: its processes in a cgroup (the cgroup v1 `cpu` controller,
//! `cpu.cfs_quota_us`) capped at a share of one CPU, as a database host with a small CPU, a
//! noisy neighbour or a long vacuum would be.

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::Node;

/// Where the cgroup v1 `cpu` hierarchy is mounted.
const CGROUPS: &str = "/sys/fs/cgroup/cpu";

/// A cgroup holding one server's processes, capped at a share of a CPU. Its processes go back
/// to the root group, and the group is removed, when it is dropped.
#[derive(Debug)]
pub struct CpuCap {
    dir: PathBuf,
}

impl CpuCap {
    /// Caps `node` (its postmaster, every process it runs now, and every backend it starts
    /// later) at `percent` of one CPU. Needs root and a cgroup v1 `cpu` hierarchy at
    /// `/sys/fs/cgroup/cpu`.
    pub fn new(node: &Node, percent: u32) -> io::Result<CpuCap> {
        let dir = Path::new(CGROUPS).join(format!("rwsplit-cpu-{}", node.port()));
        if !dir.exists() {
            std::fs::create_dir(&dir)
                .map_err(|e| io::Error::new(e.kind(), format!("create {}: {e}", dir.display())))?;
        }
        let cap = CpuCap { dir };
        cap.set(percent)?;
        let pid = std::fs::read_to_string(node.data_dir().join("postmaster.pid"))?;
        let postmaster = pid.lines().next().unwrap_or_default().trim().to_owned();
        // The postmaster and every process it has started; the ones it starts later (each new
        // connection's backend) are born in its group.
        let children = Command::new("pgrep")
            .args(["-P", &postmaster])
            .output()?
            .stdout;
        let children = String::from_utf8_lossy(&children).into_owned();
        for pid in std::iter::once(postmaster.as_str()).chain(children.split_whitespace()) {
            // A process that has just exited cannot move: nothing to cap.
            let _ = std::fs::write(cap.dir.join("cgroup.procs"), pid);
        }
        Ok(cap)
    }

    /// Changes the cap to `percent` of one CPU.
    pub fn set(&self, percent: u32) -> io::Result<()> {
        std::fs::write(self.dir.join("cpu.cfs_period_us"), "100000")?;
        std::fs::write(
            self.dir.join("cpu.cfs_quota_us"),
            (percent * 1000).to_string(),
        )
    }
}

impl Drop for CpuCap {
    fn drop(&mut self) {
        if let Ok(pids) = std::fs::read_to_string(self.dir.join("cgroup.procs")) {
            for pid in pids.split_whitespace() {
                let _ = std::fs::write(Path::new(CGROUPS).join("cgroup.procs"), pid);
            }
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}
