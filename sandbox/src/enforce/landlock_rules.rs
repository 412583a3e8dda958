//! Landlock: the filesystem paths a process may use, no TCP bind, and the
//! scopes that keep it from connecting to abstract Unix sockets or signalling
//! processes outside its own sandbox.

use std::path::{Path, PathBuf};

use landlock::{
    ABI, Access, AccessFs, AccessNet, BitFlags, CompatLevel, Compatible, NetPort, PathBeneath,
    PathFd, Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetError, RulesetStatus, Scope,
};

use crate::policy::Policy;
use crate::system_paths;

/// The feature set this launcher was written and tested against (ABI 6:
/// filesystem incl. truncate and device ioctls, TCP bind/connect, the
/// abstract-socket and signal scopes). Older kernels get what they support;
/// newer ABIs add nothing we rely on.
const TESTED: ABI = ABI::V6;

#[derive(Debug, thiserror::Error)]
pub enum LandlockError {
    #[error("{0}")]
    Ruleset(#[from] RulesetError),
    #[error("cannot open {path} for a rule: {error}")]
    Path { path: PathBuf, error: String },
    #[error("Landlock is not enforced by this kernel")]
    NotEnforced,
}

fn read_access() -> BitFlags<AccessFs> {
    AccessFs::ReadFile | AccessFs::ReadDir
}

fn exec_access() -> BitFlags<AccessFs> {
    read_access() | AccessFs::Execute
}

/// A rule for `path`; the rights a file cannot have are dropped for files.
fn rule(path: &Path, access: BitFlags<AccessFs>) -> Result<PathBeneath<PathFd>, LandlockError> {
    let fd = PathFd::new(path).map_err(|e| LandlockError::Path {
        path: path.to_owned(),
        error: e.to_string(),
    })?;
    let access = if path.is_dir() {
        access
    } else {
        access & AccessFs::from_file(TESTED)
    };
    Ok(PathBeneath::new(fd, access))
}

/// What was enforced, for the self-test report.
pub struct Enforced {
    pub status: RulesetStatus,
}

/// Restricts the calling thread (and what it execs) to the policy's paths.
pub fn restrict(p: &Policy) -> Result<Enforced, LandlockError> {
    let mut rules: Vec<PathBeneath<PathFd>> = Vec::new();
    for d in &p.read {
        rules.push(rule(d, read_access())?);
    }
    for d in &p.exec {
        rules.push(rule(d, exec_access())?);
    }
    for d in &p.write {
        rules.push(rule(d, AccessFs::from_all(TESTED))?);
    }
    if p.private_tmp.is_some() && p.namespaces {
        // Its own tmpfs, mounted before this: the program's to use.
        rules.push(rule(Path::new("/tmp"), AccessFs::from_all(TESTED))?);
    }
    if p.system_files {
        for d in system_paths::existing(system_paths::LIBRARIES) {
            rules.push(rule(&d, exec_access())?);
        }
        for d in system_paths::existing(system_paths::READ_ONLY) {
            rules.push(rule(&d, read_access())?);
        }
        for d in system_paths::existing(system_paths::DEVICES) {
            rules.push(rule(&d, read_access() | AccessFs::WriteFile)?);
        }
        // The process's own /proc entries (its memory map, limits, status):
        // the pid stays the same across exec, so this is the program's own.
        let own = PathBuf::from(format!("/proc/{}", std::process::id()));
        if own.exists() {
            rules.push(rule(&own, read_access())?);
        }
    }
    let mut ruleset = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(AccessFs::from_all(TESTED))?;
    if p.deny_tcp_bind {
        // Handled with no rule: every bind refused; connects stay free.
        ruleset = ruleset.handle_access(AccessNet::BindTcp)?;
    }
    let mut created = ruleset
        .scope(Scope::from_all(TESTED))?
        .create()?
        .add_rules(rules.into_iter().map(Ok::<_, RulesetError>))?;
    if p.deny_tcp_bind {
        for port in &p.tcp_bind_ports {
            created = created.add_rule(NetPort::new(*port, AccessNet::BindTcp))?;
        }
    }
    let status = created.restrict_self()?;
    if status.ruleset == RulesetStatus::NotEnforced {
        return Err(LandlockError::NotEnforced);
    }
    Ok(Enforced {
        status: status.ruleset,
    })
}
