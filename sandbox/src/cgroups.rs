//! One cgroup per sandboxed process, with memory and pids limits: the service
//! creates it before the launch, the launcher joins it before dropping root (so
//! the program never runs outside it), and the guard removes it once the
//! process is gone. cgroup v1 (`memory` and `pids` hierarchies) or v2 when it
//! has both controllers; detected once, absent on hosts that have neither.

use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub enum CgroupRoot {
    V1 { memory: PathBuf, pids: PathBuf },
    V2 { dir: PathBuf },
}

#[derive(Debug, Clone, Copy)]
pub struct CgroupLimits {
    pub memory_bytes: u64,
    pub pids: u64,
}

impl CgroupRoot {
    /// A writable parent group named `name` (e.g. `skiff`, `skiff-checks`) in
    /// the first hierarchy that works, or `None`.
    pub fn detect(name: &str) -> Option<Self> {
        let v1_mem = Path::new("/sys/fs/cgroup/memory");
        let v1_pids = Path::new("/sys/fs/cgroup/pids");
        if v1_mem.join("cgroup.procs").exists() && v1_pids.join("cgroup.procs").exists() {
            let memory = v1_mem.join(name);
            let pids = v1_pids.join(name);
            if std::fs::create_dir_all(&memory).is_ok() && std::fs::create_dir_all(&pids).is_ok() {
                return Some(Self::V1 { memory, pids });
            }
        }
        let v2 = Path::new("/sys/fs/cgroup");
        let controllers =
            std::fs::read_to_string(v2.join("cgroup.controllers")).unwrap_or_default();
        let has = |c: &str| controllers.split_whitespace().any(|x| x == c);
        if has("memory") && has("pids") {
            let dir = v2.join(name);
            let ok = std::fs::create_dir_all(&dir).is_ok()
                && std::fs::write(v2.join("cgroup.subtree_control"), "+memory +pids").is_ok()
                && std::fs::write(dir.join("cgroup.subtree_control"), "+memory +pids").is_ok();
            if ok {
                return Some(Self::V2 { dir });
            }
        }
        None
    }

    /// Creates the leaf group(s) `leaf` with `limits`. Partly created groups are
    /// removed again on error.
    pub fn create(&self, leaf: &str, limits: CgroupLimits) -> std::io::Result<CgroupDirs> {
        let mut made = CgroupDirs { dirs: Vec::new() };
        match self {
            Self::V1 { memory, pids } => {
                let m = memory.join(leaf);
                std::fs::create_dir(&m)?;
                made.dirs.push(m.clone());
                std::fs::write(
                    m.join("memory.limit_in_bytes"),
                    limits.memory_bytes.to_string(),
                )?;
                let p = pids.join(leaf);
                std::fs::create_dir(&p)?;
                made.dirs.push(p.clone());
                std::fs::write(p.join("pids.max"), limits.pids.to_string())?;
            }
            Self::V2 { dir } => {
                let d = dir.join(leaf);
                std::fs::create_dir(&d)?;
                made.dirs.push(d.clone());
                std::fs::write(d.join("memory.max"), limits.memory_bytes.to_string())?;
                std::fs::write(d.join("pids.max"), limits.pids.to_string())?;
            }
        }
        Ok(made)
    }

    /// Removes the empty leaf groups named `<pid>-…` whose process `pid` is
    /// gone (a service killed before it could remove its spares, or the
    /// groups of instances it had when it died), and empty ones named by a bare
    /// number (earlier releases); returns how many. A group still holding a
    /// process cannot be removed (the kernel refuses), so a live one stays.
    pub fn sweep_dead_owners(&self) -> usize {
        let parents: Vec<&Path> = match self {
            Self::V1 { memory, pids } => vec![memory, pids],
            Self::V2 { dir } => vec![dir],
        };
        let mut removed = 0;
        for parent in parents {
            let Ok(entries) = std::fs::read_dir(parent) else {
                continue;
            };
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let gone = match name.split_once('-') {
                    Some((owner, _)) => owner
                        .parse::<u32>()
                        .is_ok_and(|pid| !Path::new(&format!("/proc/{pid}")).exists()),
                    // Named by instance id (earlier releases): empty means unused.
                    None => !name.is_empty() && name.bytes().all(|b| b.is_ascii_digit()),
                };
                if gone && std::fs::remove_dir(e.path()).is_ok() {
                    removed += 1;
                }
            }
        }
        removed
    }

    /// Where a leaf lives (for the self-test report and logs).
    pub fn describe(&self) -> String {
        match self {
            Self::V1 { memory, pids } => {
                format!("cgroup v1: {} and {}", memory.display(), pids.display())
            }
            Self::V2 { dir } => format!("cgroup v2: {}", dir.display()),
        }
    }
}

/// The groups of one process; removed on drop (the kernel refuses while a
/// process is still in them, so drop after the process has exited).
#[derive(Debug)]
pub struct CgroupDirs {
    dirs: Vec<PathBuf>,
}

impl CgroupDirs {
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// Whether the kernel killed a process of this group for memory (v1:
    /// `memory.failcnt` > 0 / v2: `memory.events` oom_kill > 0).
    pub fn hit_memory_limit(&self) -> bool {
        self.dirs.iter().any(|d| {
            let v1 = std::fs::read_to_string(d.join("memory.failcnt"))
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .is_some_and(|n| n > 0);
            let v2 = std::fs::read_to_string(d.join("memory.events"))
                .ok()
                .is_some_and(|s| {
                    s.lines().any(|l| {
                        l.strip_prefix("oom_kill ")
                            .and_then(|n| n.trim().parse::<u64>().ok())
                            .is_some_and(|n| n > 0)
                    })
                });
            v1 || v2
        })
    }
}

impl Drop for CgroupDirs {
    fn drop(&mut self) {
        for d in &self.dirs {
            let _ = std::fs::remove_dir(d);
        }
    }
}

impl CgroupDirs {
    /// Moves the process `pid` into these groups. Done by the caller while the
    /// process starts: a cgroup v1 move waits for an RCU grace period (~15 ms
    /// here) that would otherwise add to every start (see the router's
    /// `--wait-for-go`).
    pub fn add(&self, pid: u32) -> std::io::Result<()> {
        add_to(&self.dirs, pid)
    }
}

/// Moves `pid` into each group dir of `dirs` (see `CgroupDirs::add`).
pub fn add_to(dirs: &[PathBuf], pid: u32) -> std::io::Result<()> {
    let pid = pid.to_string();
    for d in dirs {
        std::fs::write(d.join("cgroup.procs"), &pid)?;
    }
    Ok(())
}
