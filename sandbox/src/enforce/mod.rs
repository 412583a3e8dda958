//! Applies a `Policy` to the calling process, in the one order that works:
//! things that need root first (cgroups, namespaces, mounts), then the identity
//! switch, then what must survive it (parent-death signal, no_new_privs), then
//! the layers that restrict what is left (Landlock, seccomp). The launcher is
//! single-threaded, so every per-thread setting holds for the program it execs.

pub mod forward;
pub mod landlock_rules;
pub mod namespaces;
pub mod seccomp;

use std::path::PathBuf;

use nix::sys::prctl;
use nix::sys::resource::{Resource, setrlimit};
use nix::sys::signal::Signal;
use nix::unistd::{
    Gid, Pid, Uid, getpid, getppid, getsid, setgroups, setresgid, setresuid, setsid,
};

use crate::policy::Policy;

/// A step that failed, and why: the launcher prints this and exits 125.
#[derive(Debug, thiserror::Error)]
pub enum EnforceError {
    #[error("new session: {0}")]
    Session(nix::Error),
    #[error("joining cgroup {dir}: {error}")]
    Cgroup { dir: PathBuf, error: std::io::Error },
    #[error("resource limit {what}: {errno}")]
    Limit {
        what: &'static str,
        errno: nix::Error,
    },
    #[error("namespaces: {0}")]
    Namespaces(#[from] namespaces::NamespaceError),
    #[error("switching to uid {uid}: {errno}")]
    Identity { uid: u32, errno: nix::Error },
    #[error("parent-death signal: {0}")]
    DeathSignal(nix::Error),
    #[error("the parent exited before the sandbox was ready")]
    Orphaned,
    #[error("no_new_privs: {0}")]
    NoNewPrivs(nix::Error),
    #[error("working directory {dir}: {error}")]
    Chdir { dir: PathBuf, error: std::io::Error },
    #[error("Landlock: {0}")]
    Landlock(#[from] landlock_rules::LandlockError),
    #[error("seccomp: {0}")]
    Seccomp(#[from] seccomp::SeccompError),
    #[error("net forward: {0}")]
    Forward(#[from] forward::ForwardError),
}

/// What was applied (the self-test reports it).
#[derive(Debug, Default)]
pub struct Applied {
    pub user_namespace: bool,
    pub landlock: Option<String>,
}

/// Resource limits: always no core dumps (a dump of a function would land in
/// the host's core pattern with the function's memory).
fn limits(p: &Policy) -> Result<(), EnforceError> {
    let l = &p.limits;
    let mut set: Vec<(&'static str, Resource, u64)> = vec![("core", Resource::RLIMIT_CORE, 0)];
    for (what, res, v) in [
        ("nofile", Resource::RLIMIT_NOFILE, l.nofile),
        ("nproc", Resource::RLIMIT_NPROC, l.nproc),
        ("cpu", Resource::RLIMIT_CPU, l.cpu_secs),
        ("fsize", Resource::RLIMIT_FSIZE, l.fsize),
    ] {
        if let Some(v) = v {
            set.push((what, res, v));
        }
    }
    for (what, res, v) in set {
        setrlimit(res, v, v).map_err(|errno| EnforceError::Limit { what, errno })?;
    }
    Ok(())
}

fn join_cgroups(p: &Policy) -> Result<(), EnforceError> {
    let pid = std::process::id().to_string();
    for dir in &p.cgroups {
        std::fs::write(dir.join("cgroup.procs"), &pid).map_err(|error| EnforceError::Cgroup {
            dir: dir.clone(),
            error,
        })?;
    }
    Ok(())
}

fn switch_identity(p: &Policy) -> Result<(), EnforceError> {
    let Some(uid) = p.uid else {
        return Ok(());
    };
    let gid = p.gid.unwrap_or(uid);
    let err = |errno| EnforceError::Identity { uid, errno };
    setgroups(&[]).map_err(err)?;
    let g = Gid::from_raw(gid);
    setresgid(g, g, g).map_err(err)?;
    let u = Uid::from_raw(uid);
    setresuid(u, u, u).map_err(err)?;
    Ok(())
}

/// Dies with the parent, whatever the program does later. Set after the
/// identity switch (a credential change clears it), then checked: a parent that
/// died before this line would otherwise never signal us.
fn die_with_parent(parent: Pid) -> Result<(), EnforceError> {
    prctl::set_pdeathsig(Signal::SIGKILL).map_err(EnforceError::DeathSignal)?;
    if getppid() != parent {
        return Err(EnforceError::Orphaned);
    }
    Ok(())
}

/// Applies the whole policy to this process. On success the caller `exec`s.
pub fn apply(p: &Policy) -> Result<Applied, EnforceError> {
    let parent = getppid();
    let mut applied = Applied::default();
    if p.net_forward.is_some() && !(p.namespaces && p.no_network) {
        return Err(forward::ForwardError::NeedsEmptyNamespace.into());
    }
    let mut forward_listener = None;
    // Own session and process group: the caller can kill the group, and the
    // program cannot reach the caller's terminal. (A container's first
    // process already leads its session.)
    if let Err(e) = setsid()
        && getsid(None).ok() != Some(getpid())
    {
        return Err(EnforceError::Session(e));
    }
    join_cgroups(p)?;
    limits(p)?;
    if p.namespaces {
        match namespaces::enter(p) {
            Ok(e) => {
                applied.user_namespace = e.user_namespace;
                forward_listener = e.forward;
            }
            Err(e) => skip_or_fail(p, e.into())?,
        }
    }
    switch_identity(p)?;
    die_with_parent(parent)?;
    prctl::set_no_new_privs().map_err(EnforceError::NoNewPrivs)?;
    if let Some(dir) = &p.chdir {
        std::env::set_current_dir(dir).map_err(|error| EnforceError::Chdir {
            dir: dir.clone(),
            error,
        })?;
    }
    // Before the program's own Landlock domain, which would not let the
    // launcher run itself again; the forwarder confines itself.
    if let (Some(listener), Some((_, sock))) = (forward_listener, &p.net_forward) {
        forward::spawn(listener, sock, p)?;
    }
    if p.landlock {
        match landlock_rules::restrict(p) {
            Ok(e) => applied.landlock = Some(format!("{:?}", e.status)),
            Err(e) => skip_or_fail(p, e.into())?,
        }
    }
    if p.seccomp
        && let Err(e) = seccomp::install(p.restrict_bind.then_some(p.bind_lengths.as_slice()))
    {
        skip_or_fail(p, e.into())?;
    }
    Ok(applied)
}

/// With `best_effort`, a layer the host refuses is said on stderr and
/// skipped; otherwise the launch fails.
fn skip_or_fail(p: &Policy, e: EnforceError) -> Result<(), EnforceError> {
    if p.best_effort {
        eprintln!("skiff-sandbox: warning: layer skipped: {e}");
        Ok(())
    } else {
        Err(e)
    }
}
