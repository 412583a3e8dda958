//! Settings of the deploy-time checker (`SKIFF_CHECK_*`, `SKIFF_CHECKER_UID`,
//! `SKIFF_SANDBOX`). Each default is declared once, on its flag; `Default`
//! reads the declarations.

use std::path::PathBuf;

pub const DEFAULT_CHECKER_UID: u32 = 199_999;
pub const DEFAULT_CHECK_TIMEOUT_SECS: u64 = 60;
pub const DEFAULT_CHECK_MEMORY_MB: u32 = 1024;
/// The common public module hosts.
pub const DEFAULT_IMPORT_HOSTS: &str = "deno.land,esm.sh,cdn.jsdelivr.net,esm.town";
pub const DEFAULT_MAX_ARTIFACT_BYTES: usize = 20 << 20;
pub const DEFAULT_CHECK_WARM: usize = 2;

#[derive(Debug, Clone, clap::Args)]
pub struct CheckerSettings {
    /// When the manager runs as root: the uid/gid deploy-time checks run as
    /// (never the manager's own; must not be a function's uid)
    #[arg(long, env = "SKIFF_CHECKER_UID", default_value_t = DEFAULT_CHECKER_UID)]
    pub checker_uid: u32,
    /// Wall-clock limit of one deploy-time check, in seconds (CPU is capped a little above)
    #[arg(long, env = "SKIFF_CHECK_TIMEOUT_SECS", default_value_t = DEFAULT_CHECK_TIMEOUT_SECS)]
    pub check_timeout_secs: u64,
    /// Memory limit of one deploy-time check, in MiB (cgroup when available; V8 heap cap always)
    #[arg(long, env = "SKIFF_CHECK_MEMORY_MB", default_value_t = DEFAULT_CHECK_MEMORY_MB)]
    pub check_memory_mb: u32,
    /// Long-lived type checkers kept warm (each ~200 MB, one tenant's deploys only; a spare is
    /// started ahead for the next tenant); 0 = every deploy starts its own `deno check`
    #[arg(long, env = "SKIFF_CHECK_WARM", default_value_t = DEFAULT_CHECK_WARM)]
    pub check_warm: usize,
    /// The sandbox launcher binary [default: `skiff-sandbox` next to this binary, else on PATH]
    #[arg(long, env = "SKIFF_SANDBOX")]
    pub sandbox: Option<PathBuf>,
    /// Send deploy-time checks to a separate checker process (`skiff-manager checker`) at this
    /// Unix socket instead of running them here
    #[arg(long, env = "SKIFF_CHECKER_SOCKET")]
    pub checker_socket: Option<PathBuf>,
    /// Hosts a function may import `https:` modules from at deploy (`host` or `host:port`,
    /// comma-separated)
    #[arg(long, env = "SKIFF_IMPORT_HOSTS", default_value = DEFAULT_IMPORT_HOSTS)]
    pub import_hosts: String,
    /// The npm registry for `npm:` and bare imports at deploy [default: Deno's]
    #[arg(long, env = "SKIFF_NPM_REGISTRY")]
    pub npm_registry: Option<url::Url>,
    /// The JSR registry for `jsr:` imports at deploy [default: Deno's]
    #[arg(long, env = "SKIFF_JSR_URL")]
    pub jsr_url: Option<url::Url>,
    /// Hosts the deploy-time resolver may reach even when they resolve to private or loopback
    /// addresses (an internal registry), comma-separated
    #[arg(long, env = "SKIFF_EGRESS_TRUST", default_value = "")]
    pub egress_trust: String,
    /// A PEM file of extra CA certificates trusted for registries and module hosts
    #[arg(long, env = "SKIFF_IMPORT_CA")]
    pub import_ca: Option<PathBuf>,
    /// Largest bundled function (the artifact stored with a version), in bytes
    #[arg(long, env = "SKIFF_MAX_ARTIFACT_BYTES", default_value_t = DEFAULT_MAX_ARTIFACT_BYTES)]
    pub max_artifact_bytes: usize,
    /// Directory uploads' limits (SKIFF_MAX_ARCHIVE_*, SKIFF_MAX_UNPACKED_BYTES): the checker
    /// unpacks them
    #[command(flatten)]
    pub archive: crate::functions::archive::ArchiveSettings,
}

impl Default for CheckerSettings {
    /// The flags' declared defaults.
    fn default() -> Self {
        match skiff_core::settings::defaults() {
            Ok(s) => s,
            // Constants of this file; the unit test below parses them.
            Err(e) => unreachable!("the checker settings' defaults do not parse: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_what_the_flags_declare() {
        let d = CheckerSettings::default();
        assert_eq!(d.checker_uid, DEFAULT_CHECKER_UID);
        assert_eq!(d.check_timeout_secs, DEFAULT_CHECK_TIMEOUT_SECS);
        assert!(d.sandbox.is_none() && d.checker_socket.is_none());
    }
}
