//! The operating-system sandbox of instances, on top of Deno's permissions:
//! every instance starts through the launcher (`skiff-sandbox`), which applies
//! the `Policy` built here. What the host offers is found once at start by the
//! launcher's self-test; each missing layer is said in the log, and only the
//! layers that work are asked for.
//!
//! - Identity: as root, each function runs as its own uid/gid (`BASE + function
//!   id`), or all as `SKIFF_FUNCTION_USER`. Not root: as the router's user.
//! - Landlock: its code dir, its Deno cache, its instance dir, the runtime and
//!   the Deno binary, and the system's shared libraries — nothing else; no TCP
//!   bind; no connecting to abstract sockets or signalling outside itself.
//! - seccomp: a deny list of kernel interfaces no function needs, and `bind`
//!   only with the lengths of its own socket path and IPv4/IPv6 addresses.
//! - Namespaces: private mounts with a private `/tmp` (tmpfs) and an empty
//!   `/run` and `/dev/shm`; a private IPC namespace.
//! - rlimits, and a memory+pids cgroup per instance that it joins before it runs.
//! - Dies with the router (parent-death signal), in its own session.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use skiff_sandbox::cgroups::{CgroupDirs, CgroupLimits, CgroupRoot};
use skiff_sandbox::report::names;
use skiff_sandbox::{HostReport, Limits, Policy};

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

/// Unix socket paths are padded to this many bytes, the most `sun_path` holds
/// with its terminating NUL, so that the seccomp filter can allow `bind` for
/// exactly this length (see `skiff_sandbox::enforce::seccomp`).
pub const SOCKET_PATH_LEN: usize = 107;
/// `bind` address lengths of an IPv4 and an IPv6 socket (UDP for resolvers).
const INET_ADDR_LENS: [u32; 2] = [16, 28];
/// Host directories covered by an empty tmpfs inside an instance: host
/// services' sockets and shared memory live there.
const HIDDEN: [&str; 3] = ["/run", "/var/run", "/dev/shm"];

#[derive(Debug)]
pub struct Sandbox {
    pub identity: Identity,
    pub launcher: PathBuf,
    pub report: HostReport,
    cgroups: Option<CgroupRoot>,
    memory_bytes: u64,
    /// Size of the private /tmp, when instances get one.
    private_tmp: Option<u64>,
    hidden: Vec<PathBuf>,
    pub deno: PathBuf,
    /// Cgroups made ahead of need, so a start only joins one.
    spare: std::sync::Mutex<Vec<CgroupDirs>>,
    next_cgroup: std::sync::atomic::AtomicU64,
    /// This sandbox among those of this process.
    number: u64,
}

static SANDBOXES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Cgroups kept ready: making a v1 memory cgroup costs ~5–10 ms of RCU waits
/// and some CPU, better spent before a start than during one.
const SPARE_CGROUPS: usize = 2;

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

fn identity(cfg: &RouterConfig, root: bool) -> anyhow::Result<Identity> {
    Ok(match (root, &cfg.function_user) {
        (false, Some(u)) => {
            tracing::warn!(user = %u, "SKIFF_FUNCTION_USER is ignored: the router is not root");
            Identity::Inherit
        }
        (false, None) => Identity::Inherit,
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
    })
}

/// The layers this host enforces for instances, with the launcher's self-test
/// run as a function identity would be, plus the router's own cgroups.
pub fn host_report(
    launcher: &Path,
    identity: Identity,
    cgroups: Option<&CgroupRoot>,
) -> HostReport {
    let probe_ids = match identity {
        Identity::Inherit => None,
        Identity::Shared { uid, gid } => Some((uid, gid)),
        Identity::PerFunction { base } => Some((base, base)),
    };
    let mut report = skiff_sandbox::report::probe(launcher, probe_ids);
    match cgroups {
        Some(c) => report.add(
            names::CGROUPS,
            true,
            format!("memory and pids limits per instance ({})", c.describe()),
        ),
        None => report.add(
            names::CGROUPS,
            false,
            "no writable memory+pids cgroups (needs root and cgroup v1, or v2 with both controllers): \
             memory is bounded only by the V8 heap cap",
        ),
    }
    report
}

/// Logs each layer this host lacks, once, at start.
pub fn warn_missing(report: &HostReport, who: &str) {
    for l in report.missing() {
        tracing::warn!(layer = %l.name, "{who} sandbox layer missing on this host: {}", l.detail);
    }
}

/// `skiff-router --check-sandbox`: what this host enforces for instances,
/// found exactly as at start, as text.
pub fn check(cfg: &RouterConfig) -> anyhow::Result<String> {
    let launcher = skiff_sandbox::locate::locate(cfg.sandbox.as_deref())?;
    let root = effective_uid() == Some(0);
    let identity = identity(cfg, root)?;
    let cgroups = if root {
        CgroupRoot::detect("skiff")
    } else {
        None
    };
    let report = host_report(&launcher, identity, cgroups.as_ref());
    Ok(format!(
        "function instances on this host (launcher {}):\n{report}",
        launcher.display()
    ))
}

impl Sandbox {
    /// Finds the launcher, asks it what this host enforces, and prepares the
    /// data dir and Deno binary so the function identities can use them.
    pub fn detect(cfg: &RouterConfig, deno: PathBuf) -> anyhow::Result<Self> {
        let launcher = skiff_sandbox::locate::locate(cfg.sandbox.as_deref())?;
        let root = effective_uid() == Some(0);
        let identity = identity(cfg, root)?;
        let cgroups = if root {
            CgroupRoot::detect("skiff")
        } else {
            None
        };
        if let Some(c) = &cgroups {
            let swept = c.sweep_dead_owners();
            if swept > 0 {
                tracing::info!(swept, "removed cgroups left by routers that are gone");
            }
        }
        let report = host_report(&launcher, identity, cgroups.as_ref());
        warn_missing(&report, "instance");
        std::fs::create_dir_all(&cfg.data_dir)?;
        let data_dir = std::fs::canonicalize(&cfg.data_dir)?;
        let mut deno = deno;
        if identity != Identity::Inherit {
            open_for_traversal(&data_dir)?;
            let runnable = skiff_sandbox::locate::runnable_by_others(&deno, &data_dir)?;
            if runnable != deno {
                tracing::info!(copy = %runnable.display(), "copied Deno where function users can run it");
            }
            deno = runnable;
        }
        let namespaces = report.enforces(names::NAMESPACES);
        // A private /tmp would cover a data dir (or Deno) under /tmp, which the
        // instance needs to see: then instances get none.
        let under_tmp = [data_dir.as_path(), deno.as_path()]
            .iter()
            .any(|p| p.starts_with("/tmp"));
        let private_tmp = (namespaces && report.enforces(names::PRIVATE_TMP) && !under_tmp)
            .then_some(u64::from(cfg.function_tmp_mb) * 1024 * 1024);
        if namespaces && under_tmp {
            tracing::warn!(
                data_dir = %data_dir.display(),
                "the data dir or Deno is under /tmp: instances get no private /tmp"
            );
        }
        let hidden = if namespaces {
            HIDDEN
                .iter()
                .map(PathBuf::from)
                .filter(|h| h.is_dir() && !h.is_symlink())
                .filter(|h| !data_dir.starts_with(h) && !deno.starts_with(h))
                .collect()
        } else {
            Vec::new()
        };
        Ok(Self {
            identity,
            launcher,
            report,
            cgroups,
            memory_bytes: cfg.memory_mb.saturating_mul(1024 * 1024),
            private_tmp,
            hidden,
            deno,
            spare: std::sync::Mutex::new(Vec::new()),
            next_cgroup: std::sync::atomic::AtomicU64::new(0),
            number: SANDBOXES.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
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

    /// Whether instances get a private writable `/tmp`.
    pub fn private_tmp(&self) -> bool {
        self.private_tmp.is_some()
    }

    /// Whether instances get a cgroup (root, and the host has writable ones).
    pub fn has_cgroups(&self) -> bool {
        self.cgroups.is_some()
    }

    /// A cgroup for one instance limited to `memory_mb`: a spare one when
    /// that is the default limit (spares are made with it), else a new one
    /// (blocking: cgroupfs writes wait for RCU grace periods).
    pub fn cgroup_for(&self, memory_mb: u64) -> std::io::Result<CgroupDirs> {
        let bytes = memory_mb.saturating_mul(1024 * 1024);
        if bytes == self.memory_bytes
            && let Some(c) = self.spare.lock().unwrap_or_else(|p| p.into_inner()).pop()
        {
            return Ok(c);
        }
        self.new_cgroup(bytes)
    }

    /// Makes spare cgroups until there are `SPARE_CGROUPS` (blocking).
    pub fn refill_cgroups(&self) {
        if !self.has_cgroups() {
            return;
        }
        loop {
            if self.spare.lock().unwrap_or_else(|p| p.into_inner()).len() >= SPARE_CGROUPS {
                return;
            }
            match self.new_cgroup(self.memory_bytes) {
                Ok(c) => self.spare.lock().unwrap_or_else(|p| p.into_inner()).push(c),
                Err(e) => {
                    tracing::warn!(error = %e, "could not make a spare cgroup");
                    return;
                }
            }
        }
    }

    /// Removes the spare cgroups (at shutdown: nothing of ours is left).
    pub fn drop_spare_cgroups(&self) {
        self.spare.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    fn new_cgroup(&self, memory_bytes: u64) -> std::io::Result<CgroupDirs> {
        let root = self.cgroups.as_ref().ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::Unsupported, "no cgroups on this host")
        })?;
        let n = self
            .next_cgroup
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // `<pid>-…`: a router that died is known by its pid (`sweep_dead_owners`);
        // several routers in one process (tests) each have their own number.
        root.create(
            &format!("{}-{}-{n}", std::process::id(), self.number),
            CgroupLimits {
                memory_bytes,
                pids: 256,
            },
        )
    }

    /// The launcher policy of one instance.
    pub fn policy(&self, p: &InstancePaths<'_>, function_id: i64) -> Policy {
        let ids = self.ids_for(function_id);
        let landlock = self.report.enforces(names::LANDLOCK_FILES);
        let seccomp = self.report.enforces(names::SECCOMP);
        let namespaces = self.report.enforces(names::NAMESPACES);
        let socket_len = u32::try_from(p.socket_path_len + 3).unwrap_or(u32::MAX);
        Policy {
            uid: ids.map(|(u, _)| u),
            gid: ids.map(|(_, g)| g),
            read: vec![
                p.code_dir.to_owned(),
                p.main.to_owned(),
                // V8 seeds from it; an endless file is no bomb here (no import).
                PathBuf::from("/dev/urandom"),
            ],
            exec: vec![self.deno.clone()],
            write: vec![p.instance_dir.to_owned(), p.deno_dir.to_owned()],
            system_files: true,
            landlock,
            deny_tcp_bind: landlock && self.report.enforces(names::LANDLOCK_TCP_BIND),
            tcp_bind_ports: Vec::new(),
            best_effort: false,
            seccomp,
            restrict_bind: seccomp,
            bind_lengths: INET_ADDR_LENS.into_iter().chain([socket_len]).collect(),
            namespaces,
            private_tmp: self.private_tmp,
            no_network: false,
            net_forward: None,
            hide: self.hidden.clone(),
            // Joined by the router while Deno starts (see `instance::spawn`).
            cgroups: Vec::new(),
            limits: Limits {
                nofile: Some(1024),
                // RLIMIT_NPROC counts every thread of the uid: per function, a tight cap.
                nproc: match self.identity {
                    Identity::PerFunction { .. } => Some(256),
                    Identity::Shared { .. } => Some(16_384),
                    Identity::Inherit => None,
                },
                cpu_secs: None,
                fsize: None,
            },
            // Not the instance dir: a relative path (like an abstract socket
            // name "\0x") then resolves into a dir Deno lets it write.
            chdir: Some(p.code_dir.to_owned()),
        }
    }
}

/// The paths an instance is built from.
pub struct InstancePaths<'a> {
    pub code_dir: &'a Path,
    pub deno_dir: &'a Path,
    pub instance_dir: &'a Path,
    pub main: &'a Path,
    /// Length of its (padded) socket paths.
    pub socket_path_len: usize,
}

/// `dir/<tag>` padded with `_` to `SOCKET_PATH_LEN` bytes (or unpadded when
/// `dir` is already too long for that).
pub fn socket_path(dir: &Path, tag: char) -> PathBuf {
    let base = dir.as_os_str().len() + 1;
    let pad = SOCKET_PATH_LEN.saturating_sub(base + 1);
    let mut name = String::with_capacity(pad + 1);
    name.push(tag);
    name.extend(std::iter::repeat_n('_', pad));
    dir.join(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_paths_are_padded_to_the_one_allowed_length() {
        let dir = Path::new("/var/lib/skiff/instances/1234567");
        let s = socket_path(dir, 's');
        let h = socket_path(dir, 'h');
        assert_eq!(s.as_os_str().len(), SOCKET_PATH_LEN);
        assert_eq!(h.as_os_str().len(), SOCKET_PATH_LEN);
        assert_ne!(s, h);
        assert!(s.starts_with(dir));
        // Too long to pad: left as it is (still distinct, still under dir).
        let long = PathBuf::from(format!("/{}", "d".repeat(120)));
        assert_eq!(socket_path(&long, 's'), long.join("s"));
    }
}
