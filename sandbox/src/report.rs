//! What this host enforces, as found by running the launcher's self-test (a
//! throw-away process that applies every layer to itself and then tries to get
//! past each one). The services run it at start, log what is missing, and only
//! ask the launcher for layers that work; `--check-sandbox` prints it.

use std::fmt;

use serde::{Deserialize, Serialize};

/// One layer's outcome.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Layer {
    pub name: String,
    /// Applied, and the check that tries to get past it was refused.
    pub enforced: bool,
    /// How it was checked, or why it is missing.
    pub detail: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct HostReport {
    pub layers: Vec<Layer>,
}

/// Layer names, shared by the self-test and the services.
pub mod names {
    pub const IDENTITY: &str = "identity";
    pub const NO_NEW_PRIVS: &str = "no_new_privs";
    pub const DIE_WITH_PARENT: &str = "die_with_parent";
    pub const SESSION: &str = "session";
    pub const RLIMITS: &str = "rlimits";
    pub const NAMESPACES: &str = "namespaces";
    pub const PRIVATE_TMP: &str = "private_tmp";
    pub const NO_NETWORK: &str = "no_network";
    /// `lo` can be brought up in the empty namespace, for `--net-forward`.
    pub const NET_FORWARD: &str = "net_forward";
    pub const LANDLOCK_FILES: &str = "landlock_files";
    pub const LANDLOCK_TCP_BIND: &str = "landlock_tcp_bind";
    pub const LANDLOCK_ABSTRACT_UNIX: &str = "landlock_abstract_unix";
    pub const LANDLOCK_SIGNALS: &str = "landlock_signals";
    pub const SECCOMP: &str = "seccomp";
    /// Provided by the services, not the launcher.
    pub const CGROUPS: &str = "cgroups";
}

impl HostReport {
    pub fn layer(&self, name: &str) -> Option<&Layer> {
        self.layers.iter().find(|l| l.name == name)
    }

    pub fn enforces(&self, name: &str) -> bool {
        self.layer(name).is_some_and(|l| l.enforced)
    }

    /// The layers that are not enforced here.
    pub fn missing(&self) -> impl Iterator<Item = &Layer> {
        self.layers.iter().filter(|l| !l.enforced)
    }

    /// A report for a host where the launcher could not even run.
    pub fn unavailable(why: &str) -> Self {
        Self {
            layers: vec![Layer {
                name: "launcher".into(),
                enforced: false,
                detail: why.to_owned(),
            }],
        }
    }
}

impl fmt::Display for HostReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let width = self.layers.iter().map(|l| l.name.len()).max().unwrap_or(0);
        for l in &self.layers {
            let mark = if l.enforced { "enforced" } else { "MISSING " };
            writeln!(f, "{:width$}  {mark}  {}", l.name, l.detail)?;
        }
        Ok(())
    }
}

/// Runs the launcher's self-test (as the identity `ids` the service will use)
/// and reads its report. A launcher that cannot run gives a report saying so.
pub fn probe(launcher: &std::path::Path, ids: Option<(u32, u32)>) -> HostReport {
    let mut cmd = std::process::Command::new(launcher);
    cmd.arg("--self-test").env_clear();
    if let Some((uid, gid)) = ids {
        cmd.args(["--uid", &uid.to_string(), "--gid", &gid.to_string()]);
    }
    match cmd.output() {
        Ok(out) if out.status.success() => {
            serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
                HostReport::unavailable(&format!("unreadable self-test report: {e}"))
            })
        }
        Ok(out) => HostReport::unavailable(&format!(
            "the self-test failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => HostReport::unavailable(&format!("cannot run {}: {e}", launcher.display())),
    }
}

impl HostReport {
    /// Adds a layer the service itself provides (e.g. cgroups).
    pub fn add(&mut self, name: &str, enforced: bool, detail: impl Into<String>) {
        self.layers.push(Layer {
            name: name.to_owned(),
            enforced,
            detail: detail.into(),
        });
    }
}
