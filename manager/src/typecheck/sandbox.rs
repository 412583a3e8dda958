//! The deploy-time checker's sandbox. `deno info` and `deno check` of a
//! tenant's source run only through the launcher: as their own uid (as root),
//! in an empty network namespace with a private `/tmp`, with Landlock allowing
//! their scratch dir, the checker's Deno cache and the Deno binary (plus the
//! system's shared libraries) and nothing else — not the manager's secret
//! file, not the database, not `/proc` of the manager — under seccomp, with
//! CPU, memory and process caps, dying with the manager.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use skiff_sandbox::cgroups::{CgroupDirs, CgroupLimits, CgroupRoot};
use skiff_sandbox::report::names;
use skiff_sandbox::{HostReport, Limits, Policy};

use super::settings::CheckerSettings;

/// The checker's own `/tmp` (Deno may write temporary files there).
const CHECK_TMP_BYTES: u64 = 16 << 20;
/// Threads of one `deno check` (V8 and Tokio workers) with room to spare.
const CHECK_PIDS: u64 = 128;

pub struct CheckerSandbox {
    pub launcher: PathBuf,
    pub report: HostReport,
    /// The checker's uid/gid, when the manager is root and can switch.
    ids: Option<(u32, u32)>,
    cgroups: Option<CgroupRoot>,
    pub memory_bytes: u64,
    pub cpu_secs: u64,
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

impl CheckerSandbox {
    /// Finds the launcher and asks it what this host enforces, as the checker's
    /// identity. Without the launcher the manager does not start.
    pub fn detect(settings: &CheckerSettings) -> anyhow::Result<Self> {
        let launcher = skiff_sandbox::locate::locate(settings.sandbox.as_deref())?;
        let root = is_root();
        let ids = root.then_some((settings.checker_uid, settings.checker_uid));
        if ids.is_some_and(|(u, _)| u == 0) {
            anyhow::bail!("SKIFF_CHECKER_UID must not be 0");
        }
        let cgroups = if root {
            CgroupRoot::detect("skiff-checks")
        } else {
            None
        };
        let mut report = skiff_sandbox::report::probe(&launcher, ids);
        match &cgroups {
            Some(c) => report.add(
                names::CGROUPS,
                true,
                format!("memory and pids limits per check ({})", c.describe()),
            ),
            None => report.add(
                names::CGROUPS,
                false,
                "no writable memory+pids cgroups: a check's memory is bounded by the V8 heap cap only",
            ),
        }
        for l in report.missing() {
            tracing::warn!(layer = %l.name, "deploy-time checker sandbox layer missing on this host: {}", l.detail);
        }
        Ok(Self {
            launcher,
            report,
            ids,
            cgroups,
            memory_bytes: u64::from(settings.check_memory_mb) * 1024 * 1024,
            cpu_secs: settings.check_timeout_secs + 5,
        })
    }

    /// Deno where the checker's uid can run it (copied under the data dir
    /// when it is not); as a message when that fails.
    pub fn runnable(&self, deno: &Path, data_dir: &Path) -> Result<PathBuf, String> {
        if self.ids.is_none() {
            return Ok(deno.to_owned());
        }
        self.open_path_to(data_dir)
            .and_then(|()| skiff_sandbox::locate::runnable_by_others(deno, data_dir))
            .map_err(|e| format!("cannot make Deno runnable for the checker's uid: {e}"))
    }

    /// Hands the scratch dir and everything in it to the checker's uid, so it
    /// can read (and Deno can write) there and nowhere else of the manager's.
    pub fn own_scratch(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        if let Some((uid, gid)) = self.ids {
            for entry in std::fs::read_dir(dir)? {
                std::os::unix::fs::chown(entry?.path(), Some(uid), Some(gid))?;
            }
            std::os::unix::fs::chown(dir, Some(uid), Some(gid))?;
        }
        Ok(())
    }

    /// The checker's Deno cache, created and owned by the checker's uid.
    pub fn prepare_deno_dir(&self, dir: &Path) -> std::io::Result<()> {
        // `dl/` holds Deno's bundler: it must exist for the bundle step's
        // Landlock exec rule.
        std::fs::create_dir_all(dir.join("dl"))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        if let Some((uid, gid)) = self.ids {
            chown_tree(dir, uid, gid)?;
        }
        Ok(())
    }

    /// Makes the directories above `dir` traversable by the checker's uid.
    pub fn open_path_to(&self, dir: &Path) -> std::io::Result<()> {
        if self.ids.is_none() {
            return Ok(());
        }
        for a in std::fs::canonicalize(dir)?.ancestors().skip(1) {
            let mode = std::fs::metadata(a)?.permissions().mode();
            if mode & 0o001 == 0 {
                std::fs::set_permissions(
                    a,
                    std::fs::Permissions::from_mode((mode | 0o001) & 0o7777),
                )?;
            }
        }
        Ok(())
    }

    /// A cgroup for one check, if the host has them.
    pub fn cgroup(&self, leaf: &str) -> Option<CgroupDirs> {
        let root = self.cgroups.as_ref()?;
        root.create(
            leaf,
            CgroupLimits {
                memory_bytes: self.memory_bytes,
                pids: CHECK_PIDS,
            },
        )
        .map_err(|e| tracing::warn!(error = %e, "could not create a check's cgroup"))
        .ok()
    }

    /// The launcher policy of one `deno info` / `deno check` run.
    pub fn policy(
        &self,
        scratch: &Path,
        deno_dir: &Path,
        deno: &Path,
        cgroups: Vec<PathBuf>,
    ) -> Policy {
        let r = &self.report;
        let landlock = r.enforces(names::LANDLOCK_FILES);
        let namespaces = r.enforces(names::NAMESPACES);
        let private_tmp = namespaces
            && r.enforces(names::PRIVATE_TMP)
            && ![scratch, deno_dir, deno]
                .iter()
                .any(|p| p.starts_with("/tmp"));
        Policy {
            uid: self.ids.map(|(u, _)| u),
            gid: self.ids.map(|(_, g)| g),
            read: Vec::new(),
            exec: vec![deno.to_owned()],
            write: vec![scratch.to_owned(), deno_dir.to_owned()],
            system_files: true,
            landlock,
            deny_tcp_bind: landlock && r.enforces(names::LANDLOCK_TCP_BIND),
            tcp_bind_ports: Vec::new(),
            best_effort: false,
            seccomp: r.enforces(names::SECCOMP),
            // A checker binds nothing.
            restrict_bind: true,
            bind_lengths: Vec::new(),
            namespaces,
            private_tmp: private_tmp.then_some(CHECK_TMP_BYTES),
            no_network: namespaces && r.enforces(names::NO_NETWORK),
            net_forward: None,
            hide: Vec::new(),
            cgroups,
            limits: Limits {
                nofile: Some(256),
                nproc: self.ids.map(|_| CHECK_PIDS),
                cpu_secs: Some(self.cpu_secs),
                fsize: Some(64 << 20),
            },
            chdir: Some(scratch.to_owned()),
        }
    }

    /// The launcher policy of the resolve step (`deno install` fetching
    /// `npm:`, `jsr:` and `https:` imports): the checker's policy, in its own
    /// empty network namespace whose one reachable endpoint is
    /// 127.0.0.1:`port`, relayed to the egress proxy's Unix socket `socket`
    /// (run Deno with `HTTP_PROXY`/`HTTPS_PROXY=http://127.0.0.1:<port>`).
    /// `ca_file` (`DENO_CERT`) is made readable. A host without the empty
    /// namespace gets no resolve step at all: an error, never open network.
    #[allow(clippy::too_many_arguments)]
    pub fn resolve_policy(
        &self,
        scratch: &Path,
        deno_dir: &Path,
        deno: &Path,
        cgroups: Vec<PathBuf>,
        port: u16,
        socket: &Path,
        ca_file: Option<&Path>,
    ) -> Result<Policy, String> {
        let r = &self.report;
        for layer in [names::NAMESPACES, names::NO_NETWORK, names::NET_FORWARD] {
            if !r.enforces(layer) {
                return Err(format!(
                    "dependency resolution needs the sandbox's {layer} layer, which this host lacks"
                ));
            }
        }
        let mut p = self.policy(scratch, deno_dir, deno, cgroups);
        // The socket must stay visible to the forwarder: no private /tmp over it.
        if socket.starts_with("/tmp") {
            p.private_tmp = None;
        }
        p.no_network = true;
        p.net_forward = Some((port, socket.to_owned()));
        p.read.extend(ca_file.map(Path::to_owned));
        Ok(p)
    }

    /// Hands the egress proxy's socket to the checker's uid (the forwarder
    /// connects to it as that uid) and lets that uid traverse the
    /// directories above it.
    pub fn own_egress_socket(&self, socket: &Path) -> std::io::Result<()> {
        if let Some((uid, gid)) = self.ids {
            std::os::unix::fs::chown(socket, Some(uid), Some(gid))?;
            self.open_path_to(socket)?;
        }
        Ok(())
    }

    /// `--check-sandbox`: what this host enforces for deploy-time checks.
    pub fn describe(&self) -> String {
        format!(
            "deploy-time checks on this host (launcher {}):\n{}",
            self.launcher.display(),
            self.report
        )
    }
}

fn chown_tree(dir: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    std::os::unix::fs::chown(dir, Some(uid), Some(gid))?;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            chown_tree(&entry.path(), uid, gid)?;
        } else {
            std::os::unix::fs::lchown(entry.path(), Some(uid), Some(gid))?;
        }
    }
    Ok(())
}
