//! Router configuration: each setting an environment variable and a flag,
//! declared once with its default in `RouterSettings`; [`RouterConfig::new`]
//! (for `skiff dev` and tests) takes the same declared defaults.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::builder::BoolishValueParser;
use skiff_core::fnconfig::{FunctionSettings, Quotas, SettingsPolicy};
pub use skiff_core::runtime_kind::RuntimeKind;
use skiff_core::secret::Secret;
use skiff_core::secrets::SecretsKey;
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
    /// The per-function settings' defaults and maximums (request timeout,
    /// concurrency, idle timeout, memory, instances), shared with the manager.
    #[command(flatten)]
    pub policy: SettingsPolicy,
    /// 32-byte key (hex or base64) that opens function secrets; required with the process runtime
    #[arg(long, env = "SKIFF_SECRETS_KEY", hide_env_values = true)]
    pub secrets_key: Option<Secret>,
    /// Largest request body passed to a function, in bytes
    #[arg(long, env = "SKIFF_MAX_BODY_BYTES", default_value_t = 128 * 1024 * 1024)]
    pub max_body_bytes: u64,
    /// How long a request waits for a free slot before 429, in milliseconds
    #[arg(long, env = "SKIFF_QUEUE_WAIT_MS", default_value_t = 1000)]
    pub queue_wait_ms: u64,
    /// Time an instance has to become ready, in seconds
    #[arg(long, env = "SKIFF_START_TIMEOUT_SECS", default_value_t = 10)]
    pub start_timeout_secs: u64,
    /// V8 heap cap of each instance, in MiB (a function that sets its own
    /// memory_mb gets half of it, at least 32)
    #[arg(long, env = "SKIFF_FUNCTION_HEAP_MB", default_value_t = 128)]
    pub heap_mb: u32,
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
    /// The manager's wake endpoint (`http://host:port`, its
    /// SKIFF_K8S_WAKE_LISTEN), called for a function scaled to zero
    /// (kubernetes runtime) [default: none, functions at zero are not woken]
    #[arg(long, env = "SKIFF_K8S_WAKE_URL", default_value = "")]
    pub k8s_wake_url: WakeUrl,
    /// How long a request to a function being woken is held for it, in
    /// seconds (bounded by the request's timeout); then 503 with Retry-After
    #[arg(long, env = "SKIFF_K8S_WAKE_WAIT_SECS", default_value_t = 30)]
    pub k8s_wake_wait_secs: u64,
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
    /// Address of the Prometheus /metrics listener, its own and never the public
    /// port (the metrics name every tenant's functions); "off" for none
    #[arg(long, env = "SKIFF_METRICS_LISTEN", default_value = "127.0.0.1:9464")]
    pub metrics_listen: MetricsListen,
    /// Most (user, function) pairs with metric series of their own; requests
    /// to others are counted as user="other",function="other"
    #[arg(long, env = "SKIFF_METRICS_MAX_FUNCTIONS", default_value_t = 2000)]
    pub metrics_max_functions: usize,
    /// Record per-request metrics, the owners' per-minute stats and access log
    /// (false: none of them; to measure what they cost)
    #[arg(long, env = "SKIFF_REQUEST_METRICS", value_parser = BoolishValueParser::new(), action = clap::ArgAction::Set, default_value = "true")]
    pub request_metrics: bool,
    /// Write a line per request to the function's owner's log (process runtime)
    #[arg(long, env = "SKIFF_ACCESS_LOG", value_parser = BoolishValueParser::new(), action = clap::ArgAction::Set, default_value = "true")]
    pub access_log: bool,
    /// Add `Server-Timing: cold;dur=…, fn;dur=…` to responses of functions
    #[arg(long, env = "SKIFF_SERVER_TIMING", value_parser = BoolishValueParser::new(), action = clap::ArgAction::Set, default_value = "true")]
    pub server_timing: bool,
    /// How often this router writes its per-minute stats to the database, in milliseconds
    #[arg(long, env = "SKIFF_STATS_FLUSH_MS", default_value_t = 10_000)]
    pub stats_flush_ms: u64,
    /// Origins of the web console (comma-separated `scheme://host[:port]`) that
    /// may read functions' answers without credentials, for its "try it" panel [default: none]
    #[arg(long, env = "SKIFF_CONSOLE_ORIGINS", default_value = "")]
    pub console_origins: crate::console_cors::ConsoleOrigins,
}

/// Where the metrics listener binds, or nowhere (`off`, `none`, `false` or
/// empty).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricsListen(pub Option<SocketAddr>);

impl std::str::FromStr for MetricsListen {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "" | "off" | "none" | "false" => Ok(Self(None)),
            a => a
                .parse()
                .map(|a| Self(Some(a)))
                .map_err(|_| format!("{a:?} is not an address (IP:PORT) or \"off\"")),
        }
    }
}

/// The manager's wake endpoint: `http://host:port` (a trailing `/` is
/// dropped), or none (empty, `off`, `none`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WakeUrl(pub Option<String>);

impl std::str::FromStr for WakeUrl {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if matches!(s, "" | "off" | "none") {
            return Ok(Self(None));
        }
        let bad = || format!("{s:?} is not an http://host:port URL or \"off\"");
        let uri: http::Uri = s.parse().map_err(|_| bad())?;
        let plain = uri.scheme_str() == Some("http")
            && uri.authority().is_some_and(|a| !a.host().is_empty())
            && matches!(uri.path(), "" | "/")
            && uri.query().is_none();
        if !plain {
            return Err(bad());
        }
        Ok(Self(Some(s.trim_end_matches('/').to_owned())))
    }
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
    pub memory_mb: u64,
    /// The per-function settings' defaults and maximums; the four fields
    /// above (timeout, concurrency, idle timeout, memory) are its defaults,
    /// kept as durations so tests can use sub-second values.
    pub policy: SettingsPolicy,
    /// Opens function secrets (process runtime); never printed.
    pub secrets_key: Option<SecretsKey>,
    pub deny_net: String,
    pub function_user: Option<String>,
    pub function_uid_base: u32,
    /// The launcher binary (`None`: found next to this binary or on PATH).
    pub sandbox: Option<PathBuf>,
    pub function_tmp_mb: u32,
    pub poll_interval: Duration,
    pub k8s_namespace: String,
    /// The manager's wake endpoint (`None`: functions at zero are not woken).
    pub k8s_wake_url: Option<String>,
    pub k8s_wake_wait: Duration,
    /// Tests without a cluster only, never a setting: every Service is
    /// reached at this address (a stand-in for kube-proxy and the DNS).
    pub k8s_connect_to: Option<SocketAddr>,
    pub trusted_proxies: TrustedProxies,
    pub body_read_timeout: Duration,
    pub response_write_timeout: Duration,
    pub client_share_percent: u8,
    /// Idle timeout and maximum lifetime of an upgraded (WebSocket) connection.
    pub ws_idle: Duration,
    pub ws_max: Duration,
    /// The operator's per-user quotas (overridden per user from the store).
    pub quotas: Quotas,
    /// The metrics listener's address; `None`: no listener.
    pub metrics_listen: Option<SocketAddr>,
    pub metrics_max_functions: usize,
    /// Whether requests are counted (metrics, stats, access log).
    pub request_metrics: bool,
    pub access_log: bool,
    pub server_timing: bool,
    pub stats_flush: Duration,
    pub console_origins: crate::console_cors::ConsoleOrigins,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("SKIFF_DATABASE_URL is required (mysql://user:pass@host:port/db or sqlite://path)")]
    MissingDatabaseUrl,
    #[error("{0} must be greater than zero")]
    NotPositive(&'static str),
    #[error("SKIFF_FUNCTION_DENY_NET must not be empty")]
    EmptyDenyNet,
    #[error(
        "SKIFF_SECRETS_KEY is required with the process runtime (32 bytes as hex or base64; the manager uses the same key)"
    )]
    MissingSecretsKey,
    #[error("SKIFF_SECRETS_KEY: {0}")]
    BadSecretsKey(skiff_core::secrets::SecretsError),
}

impl RouterSettings {
    /// Validates; returns the database URL separately since only `main` needs it.
    pub fn into_config(self) -> Result<(Secret, RouterConfig), ConfigError> {
        let url = self
            .database_url
            .clone()
            .ok_or(ConfigError::MissingDatabaseUrl)?;
        for (name, v) in [
            (
                "SKIFF_REQUEST_TIMEOUT_SECS",
                self.policy.request_timeout_secs,
            ),
            ("SKIFF_MAX_BODY_BYTES", self.max_body_bytes),
            ("SKIFF_IDLE_TIMEOUT_SECS", self.policy.idle_timeout_secs),
            ("SKIFF_START_TIMEOUT_SECS", self.start_timeout_secs),
            ("SKIFF_POLL_INTERVAL_MS", self.poll_interval_ms),
            (
                "SKIFF_FUNCTION_CONCURRENCY",
                self.policy.function_concurrency,
            ),
            ("SKIFF_FUNCTION_HEAP_MB", u64::from(self.heap_mb)),
            ("SKIFF_BODY_READ_TIMEOUT_SECS", self.body_read_timeout_secs),
            (
                "SKIFF_RESPONSE_WRITE_TIMEOUT_SECS",
                self.response_write_timeout_secs,
            ),
            ("SKIFF_WS_IDLE_SECS", self.ws_idle_secs),
            ("SKIFF_WS_MAX_SECS", self.ws_max_secs),
            ("SKIFF_STATS_FLUSH_MS", self.stats_flush_ms),
            ("SKIFF_K8S_WAKE_WAIT_SECS", self.k8s_wake_wait_secs),
        ] {
            if v == 0 {
                return Err(ConfigError::NotPositive(name));
            }
        }
        if self.deny_net.trim().is_empty() {
            return Err(ConfigError::EmptyDenyNet);
        }
        let key = match &self.secrets_key {
            Some(k) => Some(SecretsKey::parse(k.expose()).map_err(ConfigError::BadSecretsKey)?),
            None if self.runtime == RuntimeKind::Process => {
                return Err(ConfigError::MissingSecretsKey);
            }
            None => None,
        };
        let mut cfg = self.build();
        cfg.secrets_key = key;
        Ok((url, cfg))
    }

    /// The configuration these settings describe, unchecked.
    fn build(self) -> RouterConfig {
        RouterConfig {
            runtime: self.runtime,
            listen: self.listen,
            data_dir: self.data_dir,
            deno: self.deno,
            request_timeout: Duration::from_secs(self.policy.request_timeout_secs),
            max_body_bytes: self.max_body_bytes,
            function_concurrency: usize::try_from(self.policy.function_concurrency)
                .unwrap_or(usize::MAX),
            queue_wait: Duration::from_millis(self.queue_wait_ms),
            idle_timeout: Duration::from_secs(self.policy.idle_timeout_secs),
            start_timeout: Duration::from_secs(self.start_timeout_secs),
            heap_mb: self.heap_mb,
            memory_mb: self.policy.memory_mb,
            policy: self.policy,
            // Parsed (and required) by `into_config`.
            secrets_key: None,
            deny_net: self.deny_net,
            function_user: self.function_user,
            function_uid_base: self.function_uid_base,
            sandbox: self.sandbox,
            function_tmp_mb: self.function_tmp_mb,
            poll_interval: Duration::from_millis(self.poll_interval_ms),
            k8s_namespace: self.k8s_namespace,
            k8s_wake_url: self.k8s_wake_url.0,
            k8s_wake_wait: Duration::from_secs(self.k8s_wake_wait_secs),
            k8s_connect_to: None,
            trusted_proxies: self.trusted_proxies,
            body_read_timeout: Duration::from_secs(self.body_read_timeout_secs),
            response_write_timeout: Duration::from_secs(self.response_write_timeout_secs),
            client_share_percent: self.client_share_percent,
            ws_idle: Duration::from_secs(self.ws_idle_secs),
            ws_max: Duration::from_secs(self.ws_max_secs),
            quotas: self.quotas,
            metrics_listen: self.metrics_listen.0,
            metrics_max_functions: self.metrics_max_functions,
            request_metrics: self.request_metrics,
            access_log: self.access_log,
            server_timing: self.server_timing,
            stats_flush: Duration::from_millis(self.stats_flush_ms),
            console_origins: self.console_origins,
        }
    }
}

/// What one function version runs with: its settings, the operator's
/// defaults where it sets none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Effective {
    pub timeout: Duration,
    pub concurrency: usize,
    pub idle_timeout: Duration,
    pub memory_mb: u64,
    pub heap_mb: u32,
    pub min_instances: u64,
    pub max_instances: u64,
}

/// The operator's defaults for per-function settings, as the request path and
/// the process runtime need them (cheap to copy).
#[derive(Debug, Clone, Copy)]
pub struct FunctionDefaults {
    timeout: Duration,
    concurrency: usize,
    idle_timeout: Duration,
    memory_mb: u64,
    heap_mb: u32,
    min_instances: u64,
    max_instances: u64,
}

/// The smallest V8 heap a function gets, in MiB.
const MIN_HEAP_MB: u64 = 32;

impl FunctionDefaults {
    pub fn effective(&self, s: &FunctionSettings) -> Effective {
        let max_instances = s.max_instances.unwrap_or(self.max_instances).max(1);
        Effective {
            timeout: s.timeout_secs.map_or(self.timeout, Duration::from_secs),
            concurrency: s.concurrency.map_or(self.concurrency, |c| {
                usize::try_from(c).unwrap_or(usize::MAX).max(1)
            }),
            idle_timeout: s
                .idle_timeout_secs
                .map_or(self.idle_timeout, Duration::from_secs),
            memory_mb: s.memory_mb.unwrap_or(self.memory_mb),
            // A function that chose its memory gets half of it as V8 heap: the
            // rest is Deno itself (~35 MB), buffers and native allocations,
            // which the cgroup counts too. Otherwise the operator's heap cap.
            heap_mb: s.memory_mb.map_or(self.heap_mb, |m| {
                u32::try_from((m / 2).max(MIN_HEAP_MB)).unwrap_or(u32::MAX)
            }),
            min_instances: s
                .min_instances
                .unwrap_or(self.min_instances)
                .min(max_instances),
            max_instances,
        }
    }
}

impl RouterConfig {
    pub fn function_defaults(&self) -> FunctionDefaults {
        FunctionDefaults {
            timeout: self.request_timeout,
            concurrency: self.function_concurrency,
            idle_timeout: self.idle_timeout,
            memory_mb: self.memory_mb,
            heap_mb: self.heap_mb,
            min_instances: self.policy.min_instances,
            max_instances: self.policy.max_instances,
        }
    }

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

    const TEST_KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    fn parse(args: &[&str]) -> Result<RouterConfig, String> {
        let argv = [
            &[
                "skiff-router",
                "--database-url",
                "sqlite://x",
                "--secrets-key",
                TEST_KEY,
            ],
            args,
        ]
        .concat();
        let cli = Cli::try_parse_from(argv).map_err(|e| e.to_string())?;
        cli.settings
            .into_config()
            .map(|(_, c)| c)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn the_process_runtime_needs_the_secrets_key_and_never_prints_it() {
        let cli = Cli::try_parse_from(["skiff-router", "--database-url", "sqlite://x"]).unwrap();
        let e = cli.settings.into_config().err().map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.contains("SKIFF_SECRETS_KEY")));
        let c = parse(&[]).unwrap();
        assert!(c.secrets_key.is_some());
        assert!(!format!("{c:?}").contains(TEST_KEY));
        let cli = Cli::try_parse_from([
            "skiff-router",
            "--database-url",
            "sqlite://x",
            "--runtime",
            "kubernetes",
        ])
        .unwrap();
        assert!(
            cli.settings.into_config().is_ok(),
            "kubernetes needs no key"
        );
    }

    #[test]
    fn a_function_s_settings_override_the_defaults() {
        let d = parse(&[]).unwrap().function_defaults();
        let e = d.effective(&FunctionSettings::default());
        assert_eq!(e.timeout, Duration::from_secs(30));
        assert_eq!(e.concurrency, 256);
        assert_eq!((e.memory_mb, e.heap_mb), (256, 128));
        assert_eq!((e.min_instances, e.max_instances), (0, 1));
        let e = d.effective(&FunctionSettings {
            memory_mb: Some(512),
            timeout_secs: Some(2),
            concurrency: Some(3),
            min_instances: Some(1),
            max_instances: Some(4),
            idle_timeout_secs: Some(9),
        });
        assert_eq!(e.timeout, Duration::from_secs(2));
        assert_eq!(e.concurrency, 3);
        assert_eq!(e.idle_timeout, Duration::from_secs(9));
        assert_eq!((e.memory_mb, e.heap_mb), (512, 256));
        assert_eq!((e.min_instances, e.max_instances), (1, 4));
    }

    #[test]
    fn observability_settings() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.metrics_listen, Some("127.0.0.1:9464".parse().unwrap()));
        assert_eq!(c.metrics_max_functions, 2000);
        assert!(c.request_metrics && c.access_log && c.server_timing);
        assert_eq!(c.stats_flush, Duration::from_secs(10));
        for off in ["off", "", "none"] {
            assert_eq!(
                parse(&["--metrics-listen", off]).unwrap().metrics_listen,
                None
            );
        }
        let c = parse(&[
            "--metrics-listen",
            "0.0.0.0:9100",
            "--server-timing",
            "false",
            "--request-metrics",
            "off",
            "--access-log",
            "no",
            "--metrics-max-functions",
            "5",
        ])
        .unwrap();
        assert_eq!(c.metrics_listen, Some("0.0.0.0:9100".parse().unwrap()));
        assert!(!c.server_timing && !c.request_metrics && !c.access_log);
        assert_eq!(c.metrics_max_functions, 5);
    }

    #[test]
    fn the_wake_url_is_off_unless_set() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.k8s_wake_url, None);
        assert_eq!(c.k8s_wake_wait, Duration::from_secs(30));
        assert_eq!(c.k8s_connect_to, None);
        let c = parse(&[
            "--runtime",
            "kubernetes",
            "--k8s-wake-url",
            "http://skiff-manager-wake.skiff.svc:9466/",
            "--k8s-wake-wait-secs",
            "5",
        ])
        .unwrap();
        assert_eq!(
            c.k8s_wake_url.as_deref(),
            Some("http://skiff-manager-wake.skiff.svc:9466")
        );
        assert_eq!(c.k8s_wake_wait, Duration::from_secs(5));
        assert_eq!(
            parse(&["--k8s-wake-url", "off"]).unwrap().k8s_wake_url,
            None
        );
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
                    secrets_key: None,
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
            "--quota-rps",
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
            &["--secrets-key", "too short"][..],
            &["--trusted-proxies", "10.0.0.0/33"],
            &["--trusted-proxies", "everyone"],
            &["--client-share-percent", "0"],
            &["--client-share-percent", "101"],
            &["--body-read-timeout-secs", "0"],
            &["--response-write-timeout-secs", "0"],
            &["--ws-idle-secs", "0"],
            &["--ws-max-secs", "0"],
            &["--stats-flush-ms", "0"],
            &["--metrics-listen", "everywhere"],
            &["--k8s-wake-url", "https://manager:9466"],
            &["--k8s-wake-url", "http://manager:9466/wake"],
            &["--k8s-wake-url", "manager:9466"],
            &["--k8s-wake-wait-secs", "0"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
