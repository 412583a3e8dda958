//! Router configuration: each setting an environment variable and a flag,
//! declared once with its default in `RouterSettings`; [`RouterConfig::new`]
//! (for `skiff dev` and tests) takes the same declared defaults.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use skiff_core::fnconfig::Quotas;
pub use skiff_core::runtime_kind::RuntimeKind;
use skiff_core::secret::Secret;
use skiff_core::trusted_proxies::TrustedProxies;

/// Loopback, "this host", link-local (cloud metadata) and the private ranges:
/// a function must not reach the platform's own services or its neighbours
/// directly. `0.0.0.0/8` and `[::]` matter: Deno's loopback check does not catch
/// `0.0.0.0`. Deno rejects IPv6 CIDRs, so only single IPv6 addresses are listed.
pub const DEFAULT_DENY_NET: &str = "127.0.0.0/8,0.0.0.0/8,[::],[::1],169.254.0.0/16,\
10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,100.64.0.0/10,[fd00:ec2::254]";

#[derive(Debug, Clone, clap::Args)]
pub struct RouterSettings {
    /// mysql://user:pass@host:port/db or sqlite://path
    #[arg(long, env = "SKIFF_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<Secret>,
    /// Where function instances run
    #[arg(long, env = "SKIFF_RUNTIME", value_enum, default_value = "process")]
    pub runtime: RuntimeKind,
    /// Address to bind
    #[arg(long, env = "SKIFF_LISTEN", default_value = "0.0.0.0:8000")]
    pub listen: SocketAddr,
    /// Where function files, instance temp dirs and logs live
    #[arg(long, env = "SKIFF_DATA_DIR", default_value = "./.skiff")]
    pub data_dir: PathBuf,
    /// Path of the Deno binary [default: found on PATH]
    #[arg(long, env = "SKIFF_DENO")]
    pub deno: Option<PathBuf>,
    /// Time a function has to answer (response headers), in seconds
    #[arg(long, env = "SKIFF_REQUEST_TIMEOUT_SECS", default_value_t = 30)]
    pub request_timeout_secs: u64,
    /// Largest request body passed to a function, in bytes
    #[arg(long, env = "SKIFF_MAX_BODY_BYTES", default_value_t = 128 * 1024 * 1024)]
    pub max_body_bytes: u64,
    /// Requests one function may have in flight at once; more wait briefly, then get 429
    #[arg(long, env = "SKIFF_FUNCTION_CONCURRENCY", default_value_t = 256)]
    pub function_concurrency: usize,
    /// How long a request waits for a free slot before 429, in milliseconds
    #[arg(long, env = "SKIFF_QUEUE_WAIT_MS", default_value_t = 1000)]
    pub queue_wait_ms: u64,
    /// An instance with no request for this long is stopped, in seconds
    #[arg(long, env = "SKIFF_IDLE_TIMEOUT_SECS", default_value_t = 300)]
    pub idle_timeout_secs: u64,
    /// Time an instance has to become ready, in seconds
    #[arg(long, env = "SKIFF_START_TIMEOUT_SECS", default_value_t = 10)]
    pub start_timeout_secs: u64,
    /// V8 heap cap of each instance, in MiB
    #[arg(long, env = "SKIFF_FUNCTION_HEAP_MB", default_value_t = 128)]
    pub heap_mb: u32,
    /// Memory cgroup limit of each instance, in MiB (when the host has memory cgroups)
    #[arg(long, env = "SKIFF_FUNCTION_MEMORY_MB", default_value_t = 256)]
    pub memory_mb: u32,
    /// Hosts and CIDRs functions may not reach (Deno --deny-net syntax)
    #[arg(long, env = "SKIFF_FUNCTION_DENY_NET", default_value = DEFAULT_DENY_NET)]
    pub deny_net: String,
    /// When running as root: run every instance as this user instead of a uid per function
    #[arg(long, env = "SKIFF_FUNCTION_USER")]
    pub function_user: Option<String>,
    /// When running as root without SKIFF_FUNCTION_USER: function N runs as uid/gid BASE+N
    #[arg(long, env = "SKIFF_FUNCTION_UID_BASE", default_value_t = 200_000)]
    pub function_uid_base: u32,
    /// The sandbox launcher binary [default: `skiff-sandbox` next to this binary, else on PATH]
    #[arg(long, env = "SKIFF_SANDBOX")]
    pub sandbox: Option<PathBuf>,
    /// Size of each instance's private /tmp (a tmpfs), in MiB
    #[arg(long, env = "SKIFF_FUNCTION_TMP_MB", default_value_t = 64)]
    pub function_tmp_mb: u32,
    /// How often the change feed is polled, in milliseconds
    #[arg(long, env = "SKIFF_POLL_INTERVAL_MS", default_value_t = 100)]
    pub poll_interval_ms: u64,
    /// Namespace of the function Services (kubernetes runtime)
    #[arg(long, env = "SKIFF_K8S_NAMESPACE", default_value = "skiff-functions")]
    pub k8s_namespace: String,
    /// Peers (CIDRs, comma-separated) whose X-Forwarded-*/Forwarded headers are
    /// believed and appended to; every other caller's are replaced [default: none]
    #[arg(long, env = "SKIFF_TRUSTED_PROXIES", default_value = "")]
    pub trusted_proxies: TrustedProxies,
    /// A request whose body makes no progress for this long ends (408), in seconds
    #[arg(long, env = "SKIFF_BODY_READ_TIMEOUT_SECS", default_value_t = 15)]
    pub body_read_timeout_secs: u64,
    /// A client that reads none of its response for this long is disconnected, in seconds
    #[arg(long, env = "SKIFF_RESPONSE_WRITE_TIMEOUT_SECS", default_value_t = 15)]
    pub response_write_timeout_secs: u64,
    /// Share of a function's concurrency one client address may hold, in percent
    /// (at least 4 requests); over it: 429 rate_limited
    #[arg(long, env = "SKIFF_CLIENT_SHARE_PERCENT", default_value_t = 50,
          value_parser = clap::value_parser!(u8).range(1..=100))]
    pub client_share_percent: u8,
    /// A WebSocket connection with no byte either way for this long is closed
    /// (Close 1001), in seconds
    #[arg(long, env = "SKIFF_WS_IDLE_SECS", default_value_t = 300)]
    pub ws_idle_secs: u64,
    /// The longest a WebSocket connection stays open (then Close 1001), in seconds
    #[arg(long, env = "SKIFF_WS_MAX_SECS", default_value_t = 3600)]
    pub ws_max_secs: u64,
    /// Worker threads of the router [default: half the CPUs with the process
    /// runtime, whose function instances share the machine; all with kubernetes]
    #[arg(long, env = "SKIFF_ROUTER_THREADS")]
    pub threads: Option<usize>,
    /// Per-user quotas; the router applies `rps` (the others are the
    /// manager's, and the process runtime's instances)
    #[command(flatten)]
    pub quotas: Quotas,
}

impl RouterSettings {
    /// The settings the sandbox depends on, without the database (for
    /// `--check-sandbox`).
    pub fn sandbox_config(&self) -> RouterConfig {
        self.clone().build()
    }

    /// Every setting at its declared default (the environment is not read).
    pub fn defaults() -> Self {
        match skiff_core::settings::defaults() {
            Ok(s) => s,
            // The defaults are constants of this file; a unit test parses them.
            Err(e) => unreachable!("the router's declared defaults do not parse: {e}"),
        }
    }

    /// How many worker threads to run. With the process runtime every function
    /// instance runs on this machine too: a router thread per CPU then competes
    /// with them and wakes across threads more often (measured on 2 CPUs under
    /// load: one thread used ~15 % less CPU per request than two, with about the
    /// same throughput and a lower p50/p99 at a fixed rate; see BENCHMARKS.md).
    pub fn worker_threads(&self) -> usize {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        match (self.threads, self.runtime) {
            (Some(n), _) => n.max(1),
            (None, RuntimeKind::Process) => (cpus / 2).max(1),
            (None, RuntimeKind::Kubernetes) => cpus,
        }
    }
}

#[derive(Debug, Clone)]
pub struct RouterConfig {
    pub runtime: RuntimeKind,
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub deno: Option<PathBuf>,
    pub request_timeout: Duration,
    pub max_body_bytes: u64,
    pub function_concurrency: usize,
    pub queue_wait: Duration,
    pub idle_timeout: Duration,
    pub start_timeout: Duration,
    pub heap_mb: u32,
    pub memory_mb: u32,
    pub deny_net: String,
    pub function_user: Option<String>,
    pub function_uid_base: u32,
    /// The launcher binary (`None`: found next to this binary or on PATH).
    pub sandbox: Option<PathBuf>,
    pub function_tmp_mb: u32,
    pub poll_interval: Duration,
    pub k8s_namespace: String,
    pub trusted_proxies: TrustedProxies,
    pub body_read_timeout: Duration,
    pub response_write_timeout: Duration,
    pub client_share_percent: u8,
    /// Idle timeout and maximum lifetime of an upgraded (WebSocket) connection.
    pub ws_idle: Duration,
    pub ws_max: Duration,
    /// The operator's per-user quotas (overridden per user from the store).
    pub quotas: Quotas,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("SKIFF_DATABASE_URL is required (mysql://user:pass@host:port/db or sqlite://path)")]
    MissingDatabaseUrl,
    #[error("{0} must be greater than zero")]
    NotPositive(&'static str),
    #[error("SKIFF_FUNCTION_DENY_NET must not be empty")]
    EmptyDenyNet,
}

impl RouterSettings {
    /// Validates; returns the database URL separately since only `main` needs it.
    pub fn into_config(self) -> Result<(Secret, RouterConfig), ConfigError> {
        let url = self
            .database_url
            .clone()
            .ok_or(ConfigError::MissingDatabaseUrl)?;
        for (name, v) in [
            ("SKIFF_REQUEST_TIMEOUT_SECS", self.request_timeout_secs),
            ("SKIFF_MAX_BODY_BYTES", self.max_body_bytes),
            ("SKIFF_IDLE_TIMEOUT_SECS", self.idle_timeout_secs),
            ("SKIFF_START_TIMEOUT_SECS", self.start_timeout_secs),
            ("SKIFF_POLL_INTERVAL_MS", self.poll_interval_ms),
            (
                "SKIFF_FUNCTION_CONCURRENCY",
                self.function_concurrency as u64,
            ),
            ("SKIFF_FUNCTION_HEAP_MB", u64::from(self.heap_mb)),
            ("SKIFF_BODY_READ_TIMEOUT_SECS", self.body_read_timeout_secs),
            (
                "SKIFF_RESPONSE_WRITE_TIMEOUT_SECS",
                self.response_write_timeout_secs,
            ),
            ("SKIFF_WS_IDLE_SECS", self.ws_idle_secs),
            ("SKIFF_WS_MAX_SECS", self.ws_max_secs),
        ] {
            if v == 0 {
                return Err(ConfigError::NotPositive(name));
            }
        }
        if self.deny_net.trim().is_empty() {
            return Err(ConfigError::EmptyDenyNet);
        }
        Ok((url, self.build()))
    }

    /// The configuration these settings describe, unchecked.
    fn build(self) -> RouterConfig {
        RouterConfig {
            runtime: self.runtime,
            listen: self.listen,
            data_dir: self.data_dir,
            deno: self.deno,
            request_timeout: Duration::from_secs(self.request_timeout_secs),
            max_body_bytes: self.max_body_bytes,
            function_concurrency: self.function_concurrency,
            queue_wait: Duration::from_millis(self.queue_wait_ms),
            idle_timeout: Duration::from_secs(self.idle_timeout_secs),
            start_timeout: Duration::from_secs(self.start_timeout_secs),
            heap_mb: self.heap_mb,
            memory_mb: self.memory_mb,
            deny_net: self.deny_net,
            function_user: self.function_user,
            function_uid_base: self.function_uid_base,
            sandbox: self.sandbox,
            function_tmp_mb: self.function_tmp_mb,
            poll_interval: Duration::from_millis(self.poll_interval_ms),
            k8s_namespace: self.k8s_namespace,
            trusted_proxies: self.trusted_proxies,
            body_read_timeout: Duration::from_secs(self.body_read_timeout_secs),
            response_write_timeout: Duration::from_secs(self.response_write_timeout_secs),
            client_share_percent: self.client_share_percent,
            ws_idle: Duration::from_secs(self.ws_idle_secs),
            ws_max: Duration::from_secs(self.ws_max_secs),
            quotas: self.quotas,
        }
    }
}

impl RouterConfig {
    /// The declared defaults (as `skiff-router` with no flag and no
    /// environment), for embedding (`skiff dev`, tests).
    pub fn new(data_dir: PathBuf) -> Self {
        RouterSettings {
            data_dir,
            ..RouterSettings::defaults()
        }
        .build()
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        settings: RouterSettings,
    }

    fn parse(args: &[&str]) -> Result<RouterConfig, String> {
        let argv = [&["skiff-router", "--database-url", "sqlite://x"], args].concat();
        let cli = Cli::try_parse_from(argv).map_err(|e| e.to_string())?;
        cli.settings
            .into_config()
            .map(|(_, c)| c)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn request_path_hardening_settings() {
        let c = parse(&[]).unwrap();
        assert!(c.trusted_proxies.is_empty(), "nobody is trusted by default");
        assert_eq!(c.body_read_timeout, Duration::from_secs(15));
        assert_eq!(c.response_write_timeout, Duration::from_secs(15));
        assert_eq!(c.client_share_percent, 50);
        assert_eq!(c.ws_idle, Duration::from_secs(300));
        assert_eq!(c.ws_max, Duration::from_secs(3600));
        assert_eq!(c.quotas.rps, 1000);
        let defaults = RouterConfig::new(PathBuf::from("./.skiff"));
        assert_eq!(
            format!("{defaults:?}"),
            format!(
                "{:?}",
                RouterConfig {
                    // Not read from this process's environment (tests may set it).
                    deno: None,
                    ..c.clone()
                }
            ),
            "new() is the command line without flags"
        );

        let c = parse(&[
            "--trusted-proxies",
            "10.0.0.0/8, fc00::/7",
            "--body-read-timeout-secs",
            "3",
            "--client-share-percent",
            "100",
            "--ws-idle-secs",
            "7",
            "--ws-max-secs",
            "60",
            "--rps",
            "7",
        ])
        .unwrap();
        assert!(c.trusted_proxies.contains("10.1.2.3".parse().unwrap()));
        assert!(c.trusted_proxies.contains("fd00::1".parse().unwrap()));
        assert!(!c.trusted_proxies.contains("192.0.2.1".parse().unwrap()));
        assert_eq!(c.body_read_timeout, Duration::from_secs(3));
        assert_eq!(c.ws_idle, Duration::from_secs(7));
        assert_eq!(c.ws_max, Duration::from_secs(60));
        assert_eq!(c.quotas.rps, 7);

        for bad in [
            &["--trusted-proxies", "10.0.0.0/33"][..],
            &["--trusted-proxies", "everyone"],
            &["--client-share-percent", "0"],
            &["--client-share-percent", "101"],
            &["--body-read-timeout-secs", "0"],
            &["--response-write-timeout-secs", "0"],
            &["--ws-idle-secs", "0"],
            &["--ws-max-secs", "0"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
