//! Private mount and IPC namespaces (and an empty network namespace on
//! request), with a private size-capped tmpfs on `/tmp`. As root the process
//! simply unshares them; otherwise it first enters a user namespace that maps
//! only its own uid and gid, which unprivileged users may create on most hosts.

use std::net::TcpListener;
use std::path::{Path, PathBuf};

use nix::mount::{MsFlags, mount};
use nix::sched::{CloneFlags, unshare};
use nix::unistd::{Gid, Uid};

use crate::policy::Policy;

#[derive(Debug, thiserror::Error)]
pub enum NamespaceError {
    #[error("unshare({what}): {errno}")]
    Unshare {
        what: &'static str,
        errno: nix::Error,
    },
    #[error("writing {file}: {error}")]
    Map {
        file: &'static str,
        error: std::io::Error,
    },
    #[error("making mounts private: {0}")]
    Private(nix::Error),
    #[error("mounting a tmpfs on /tmp: {0}")]
    Tmp(nix::Error),
    #[error("hiding {dir}: {errno}")]
    Hide { dir: PathBuf, errno: nix::Error },
    #[error("{needed} lies under {covered}, which the sandbox replaces with an empty tmpfs")]
    Covered { needed: PathBuf, covered: PathBuf },
    #[error("{0}")]
    Forward(#[from] super::forward::ForwardError),
}

/// Every path the program needs must stay visible: refuse a policy that would
/// cover one with a private tmpfs (e.g. a data dir under `/tmp`) rather than
/// start a program that cannot see its own files.
fn check_not_covered(p: &Policy, covered: &[PathBuf]) -> Result<(), NamespaceError> {
    let forward_dir = p
        .net_forward
        .as_ref()
        .and_then(|(_, s)| s.parent())
        .map(Path::to_owned);
    let needed = p
        .read
        .iter()
        .chain(&p.exec)
        .chain(&p.write)
        .chain(&p.chdir)
        .chain(&forward_dir);
    for n in needed {
        let n = std::fs::canonicalize(n).unwrap_or_else(|_| n.clone());
        for c in covered {
            if n.starts_with(c) && n != *c {
                return Err(NamespaceError::Covered {
                    needed: n,
                    covered: c.clone(),
                });
            }
        }
    }
    Ok(())
}

/// What was set up, for the self-test report.
pub struct Entered {
    pub user_namespace: bool,
    /// With `net_forward`: the port bound inside the new namespace, for the
    /// forwarder.
    pub forward: Option<TcpListener>,
}

pub fn enter(p: &Policy) -> Result<Entered, NamespaceError> {
    let hidden: Vec<PathBuf> = p
        .hide
        .iter()
        .filter(|d| d.is_dir())
        .map(|d| std::fs::canonicalize(d).unwrap_or_else(|_| d.clone()))
        .collect();
    let mut covered = hidden.clone();
    if p.private_tmp.is_some() {
        covered.push(std::fs::canonicalize("/tmp").unwrap_or_else(|_| "/tmp".into()));
    }
    check_not_covered(p, &covered)?;
    if p.net_forward.is_some() && !p.no_network {
        return Err(super::forward::ForwardError::NeedsEmptyNamespace.into());
    }
    let root = Uid::effective().is_root();
    let (uid, gid) = (Uid::current(), Gid::current());
    let mut flags = CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWIPC;
    if p.no_network {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    if !root {
        flags |= CloneFlags::CLONE_NEWUSER;
    }
    unshare(flags).map_err(|errno| NamespaceError::Unshare {
        what: if root {
            "mount, ipc"
        } else {
            "user, mount, ipc"
        },
        errno,
    })?;
    if !root {
        // Map only ourselves: inside, the process is still this uid, not root.
        for (file, text) in [
            ("/proc/self/setgroups", "deny".to_owned()),
            ("/proc/self/uid_map", format!("{uid} {uid} 1")),
            ("/proc/self/gid_map", format!("{gid} {gid} 1")),
        ] {
            std::fs::write(file, text).map_err(|error| NamespaceError::Map { file, error })?;
        }
    }
    // Nothing mounted here propagates back to the host, and host mounts made
    // later do not appear here.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(NamespaceError::Private)?;
    if let Some(bytes) = p.private_tmp {
        mount(
            Some("tmpfs"),
            "/tmp",
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            Some(format!("size={bytes},mode=1777").as_str()),
        )
        .map_err(NamespaceError::Tmp)?;
    }
    for dir in &hidden {
        hide(dir)?;
    }
    let forward = match &p.net_forward {
        Some((port, _)) => Some(super::forward::listen(*port)?),
        None => None,
    };
    Ok(Entered {
        user_namespace: !root,
        forward,
    })
}

/// Covers `dir` with an empty, read-only tmpfs.
fn hide(dir: &Path) -> Result<(), NamespaceError> {
    mount(
        Some("tmpfs"),
        dir,
        Some("tmpfs"),
        MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("size=4k,mode=755"),
    )
    .map_err(|errno| NamespaceError::Hide {
        dir: dir.to_owned(),
        errno,
    })
}
