//! OS-level confinement of instances, on top of Deno's permissions. What the host
//! offers is detected once at start; whatever is missing is said in the log.
//!
//! - Identity: as root, each function runs as its own uid/gid (`BASE + function id`),
//!   so functions cannot read each other's files even outside Deno; or, with
//!   `SKIFF_FUNCTION_USER`, all as that one user. Not root: as the router's user.
//! - `prlimit`: open files, core dumps, and (as root) processes per uid.
//! - cgroups: memory and pids limits per instance (v1 controllers, or v2 when it
//!   has them).
//! - A clean environment (set where the command is built).

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::config::RouterConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Identity {
    /// Not root: instances run as the router's own user.
    Inherit,
    Shared {
        uid: u32,
        gid: u32,
    },
    PerFunction {
        base: u32,
    },
}

#[derive(Debug, Clone)]
enum Cgroups {
    V1 { memory: PathBuf, pids: PathBuf },
    V2 { dir: PathBuf },
}

#[derive(Debug, Clone)]
pub struct Sandbox {
    pub identity: Identity,
    pub prlimit: Option<PathBuf>,
    cgroups: Option<Cgroups>,
    memory_bytes: u64,
    pub deno: PathBuf,
}

fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

fn lookup_user(name: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.first() == Some(&name) && f.len() > 3)
            .then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
            .flatten()
    })
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// True when every directory above `p` and `p` itself let others in.
fn reachable_by_others(p: &Path) -> bool {
    p.ancestors().all(|a| {
        std::fs::metadata(a)
            .map(|m| m.permissions().mode() & 0o001 != 0)
            .unwrap_or(false)
    })
}

/// Lets other users traverse (not list) every directory above and at `dir`.
fn open_for_traversal(dir: &Path) -> std::io::Result<()> {
    for a in dir.ancestors() {
        let m = std::fs::metadata(a)?;
        let mode = m.permissions().mode();
        if mode & 0o001 == 0 {
            std::fs::set_permissions(a, std::fs::Permissions::from_mode((mode | 0o001) & 0o7777))?;
        }
    }
    Ok(())
}

fn detect_cgroups() -> Option<Cgroups> {
    let v1_mem = Path::new("/sys/fs/cgroup/memory");
    let v1_pids = Path::new("/sys/fs/cgroup/pids");
    if v1_mem.join("cgroup.procs").exists() && v1_pids.join("cgroup.procs").exists() {
        let memory = v1_mem.join("skiff");
        let pids = v1_pids.join("skiff");
        if std::fs::create_dir_all(&memory).is_ok() && std::fs::create_dir_all(&pids).is_ok() {
            return Some(Cgroups::V1 { memory, pids });
        }
    }
    let v2 = Path::new("/sys/fs/cgroup");
    let controllers = std::fs::read_to_string(v2.join("cgroup.controllers")).unwrap_or_default();
    if controllers.split_whitespace().any(|c| c == "memory")
        && controllers.split_whitespace().any(|c| c == "pids")
    {
        let dir = v2.join("skiff");
        let ok = std::fs::create_dir_all(&dir).is_ok()
            && std::fs::write(v2.join("cgroup.subtree_control"), "+memory +pids").is_ok()
            && std::fs::write(dir.join("cgroup.subtree_control"), "+memory +pids").is_ok();
        if ok {
            return Some(Cgroups::V2 { dir });
        }
    }
    None
}

impl Sandbox {
    /// Detects what the host allows and prepares the data dir and Deno binary so
    /// the function identities can use them.
    pub fn detect(cfg: &RouterConfig, deno: PathBuf) -> anyhow::Result<Self> {
        let root = effective_uid() == Some(0);
        let identity = match (root, &cfg.function_user) {
            (false, Some(u)) => {
                tracing::warn!(user = %u, "SKIFF_FUNCTION_USER is ignored: the router is not root");
                Identity::Inherit
            }
            (false, None) => {
                tracing::warn!(
                    "not running as root: instances run as the router's own user (Deno permissions still apply)"
                );
                Identity::Inherit
            }
            (true, Some(u)) => {
                let (uid, gid) = lookup_user(u)
                    .ok_or_else(|| anyhow::anyhow!("SKIFF_FUNCTION_USER {u} does not exist"))?;
                if uid == 0 {
                    anyhow::bail!("SKIFF_FUNCTION_USER must not be root");
                }
                Identity::Shared { uid, gid }
            }
            (true, None) => Identity::PerFunction {
                base: cfg.function_uid_base,
            },
        };
        let prlimit = find_on_path("prlimit");
        if prlimit.is_none() {
            tracing::warn!("prlimit not found: no per-instance limits on open files and processes");
        }
        let cgroups = if root { detect_cgroups() } else { None };
        match &cgroups {
            Some(c) => tracing::info!(cgroups = ?c, "per-instance memory and pids cgroups"),
            None => tracing::warn!(
                "no writable memory+pids cgroups: instance memory is bounded only by the V8 heap cap"
            ),
        }
        std::fs::create_dir_all(&cfg.data_dir)?;
        let mut deno = deno;
        if identity != Identity::Inherit {
            open_for_traversal(&std::fs::canonicalize(&cfg.data_dir)?)?;
            if !reachable_by_others(&deno) {
                // e.g. under /root (mode 0700): function users could not execute it.
                let bin = cfg.data_dir.join("bin");
                std::fs::create_dir_all(&bin)?;
                std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755))?;
                let copy = bin.join("deno");
                let same = std::fs::metadata(&copy)
                    .and_then(|c| std::fs::metadata(&deno).map(|o| o.size() == c.size()))
                    .unwrap_or(false);
                if !same {
                    let tmp = bin.join("deno.tmp");
                    std::fs::copy(&deno, &tmp)?;
                    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))?;
                    std::fs::rename(&tmp, &copy)?;
                }
                tracing::info!(copy = %copy.display(), "copied Deno where function users can run it");
                deno = copy;
            }
        }
        Ok(Self {
            identity,
            prlimit,
            cgroups,
            memory_bytes: u64::from(cfg.memory_mb) * 1024 * 1024,
            deno,
        })
    }

    /// The uid/gid a function's instances run as, if not the router's own.
    pub fn ids_for(&self, function_id: i64) -> Option<(u32, u32)> {
        match self.identity {
            Identity::Inherit => None,
            Identity::Shared { uid, gid } => Some((uid, gid)),
            Identity::PerFunction { base } => {
                let id = base.saturating_add(u32::try_from(function_id).unwrap_or(u32::MAX - base));
                Some((id, id))
            }
        }
    }

    /// prlimit arguments, placed before the Deno binary.
    pub fn prlimit_args(&self) -> Option<(PathBuf, Vec<String>)> {
        let p = self.prlimit.clone()?;
        let mut args = vec!["--nofile=1024".to_owned(), "--core=0".to_owned()];
        match self.identity {
            // RLIMIT_NPROC counts every thread of the uid: per function, a tight cap.
            Identity::PerFunction { .. } => args.push("--nproc=256".into()),
            Identity::Shared { .. } => args.push("--nproc=16384".into()),
            Identity::Inherit => {}
        }
        args.push("--".into());
        Some((p, args))
    }

    /// Puts a started instance into its own cgroups. The returned guard removes
    /// them once the process is gone.
    pub fn enter_cgroups(&self, instance: u64, pid: u32) -> Option<CgroupGuard> {
        let dirs = match self.cgroups.as_ref()? {
            Cgroups::V1 { memory, pids } => {
                let m = memory.join(instance.to_string());
                let p = pids.join(instance.to_string());
                let ok = std::fs::create_dir(&m).is_ok()
                    && std::fs::write(
                        m.join("memory.limit_in_bytes"),
                        self.memory_bytes.to_string(),
                    )
                    .is_ok()
                    && std::fs::write(m.join("cgroup.procs"), pid.to_string()).is_ok()
                    && std::fs::create_dir(&p).is_ok()
                    && std::fs::write(p.join("pids.max"), "256").is_ok()
                    && std::fs::write(p.join("cgroup.procs"), pid.to_string()).is_ok();
                if !ok {
                    tracing::warn!(instance, "could not place the instance in its cgroups");
                }
                vec![m, p]
            }
            Cgroups::V2 { dir } => {
                let d = dir.join(instance.to_string());
                let ok = std::fs::create_dir(&d).is_ok()
                    && std::fs::write(d.join("memory.max"), self.memory_bytes.to_string()).is_ok()
                    && std::fs::write(d.join("pids.max"), "256").is_ok()
                    && std::fs::write(d.join("cgroup.procs"), pid.to_string()).is_ok();
                if !ok {
                    tracing::warn!(instance, "could not place the instance in its cgroup");
                }
                vec![d]
            }
        };
        Some(CgroupGuard { dirs })
    }
}

pub struct CgroupGuard {
    dirs: Vec<PathBuf>,
}

impl Drop for CgroupGuard {
    fn drop(&mut self) {
        for d in &self.dirs {
            let _ = std::fs::remove_dir(d);
        }
    }
}
