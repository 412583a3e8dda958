//! Manager configuration: every setting is an environment variable and a flag
//! (README.md, "Configuration"), declared once with its default in
//! `ManagerSettings` (what clap parses). `ManagerConfig` is the validated form the
//! application runs on; `skiff dev` and tests start from [`ManagerConfig::new`],
//! which takes the same declared defaults.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::builder::BoolishValueParser;
pub use skiff_core::fnconfig::{Quotas, SettingsPolicy};
pub use skiff_core::runtime_kind::RuntimeKind;
use skiff_core::secret::Secret;
use skiff_core::secrets::{SecretsError, SecretsKey};
use skiff_core::tokens::MIN_SECRET_BYTES;
use skiff_core::trusted_proxies::TrustedProxies;

use crate::kube::settings::{KubeSettings, KubeSettingsError};
pub use crate::metrics::MetricsListen;
use crate::typecheck::settings::CheckerSettings;

#[derive(Debug, Clone, clap::Args)]
pub struct ManagerSettings {
    /// mysql://user:pass@host:port/db or sqlite://path
    #[arg(long, env = "SKIFF_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<Secret>,
    /// HMAC secret for tokens, at least 32 bytes
    #[arg(long, env = "SKIFF_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<Secret>,
    /// 32-byte key (64 hex digits or base64) sealing function secrets at rest
    #[arg(long, env = "SKIFF_SECRETS_KEY", hide_env_values = true)]
    pub secrets_key: Option<Secret>,
    /// Where function instances run
    #[arg(long, env = "SKIFF_RUNTIME", value_enum, default_value = "process")]
    pub runtime: RuntimeKind,
    /// Base URL of the router as users reach it
    #[arg(
        long,
        env = "SKIFF_PUBLIC_URL",
        default_value = "http://localhost:8000"
    )]
    pub public_url: String,
    /// Whether POST /register is open
    #[arg(long, env = "SKIFF_ALLOW_SIGNUP", value_parser = BoolishValueParser::new(), default_value = "false")]
    pub allow_signup: bool,
    /// Path of the Deno binary [default: found on PATH]
    #[arg(long, env = "SKIFF_DENO")]
    pub deno: Option<PathBuf>,
    /// Address to bind
    #[arg(long, env = "SKIFF_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// Address of the Prometheus /metrics listener (its own port, never the API's), or `off`
    #[arg(long, env = "SKIFF_METRICS_LISTEN", default_value = "127.0.0.1:9465")]
    pub metrics_listen: MetricsListen,
    /// Where function files, instance temp dirs and logs live
    #[arg(long, env = "SKIFF_DATA_DIR", default_value = "./.skiff")]
    pub data_dir: PathBuf,
    /// Largest accepted function source, in bytes
    #[arg(long, env = "SKIFF_MAX_SOURCE_BYTES", default_value_t = 1024 * 1024)]
    pub max_source_bytes: usize,
    /// Lifetime of a login token, in seconds
    #[arg(long, env = "SKIFF_TOKEN_TTL_SECS", default_value_t = 24 * 3600)]
    pub token_ttl_secs: i64,
    /// Login attempts allowed per username from all addresses per window
    /// (not counted for an address the user recently logged in from)
    #[arg(long, env = "SKIFF_LOGIN_LIMIT_PER_USER", default_value_t = 100)]
    pub login_limit_per_user: u32,
    /// Login attempts allowed per username from one client address per window
    #[arg(long, env = "SKIFF_LOGIN_LIMIT_PER_USER_ADDR", default_value_t = 10)]
    pub login_limit_per_user_addr: u32,
    /// Login attempts allowed per client address per window
    #[arg(long, env = "SKIFF_LOGIN_LIMIT_PER_ADDR", default_value_t = 30)]
    pub login_limit_per_addr: u32,
    /// Length of the login rate-limit window, in seconds
    #[arg(long, env = "SKIFF_LOGIN_WINDOW_SECS", default_value_t = 60)]
    pub login_window_secs: u64,
    /// Registrations allowed per client address per window
    #[arg(long, env = "SKIFF_REGISTER_LIMIT_PER_ADDR", default_value_t = 10)]
    pub register_limit_per_addr: u32,
    /// Length of the registration rate-limit window, in seconds
    #[arg(long, env = "SKIFF_REGISTER_WINDOW_SECS", default_value_t = 3600)]
    pub register_window_secs: u64,
    /// Keys each rate-limit table holds at most (over it, the oldest is forgotten)
    #[arg(long, env = "SKIFF_RATE_LIMIT_MAX_KEYS", default_value_t = 20_000)]
    pub rate_limit_max_keys: usize,
    /// CIDRs of proxies whose X-Forwarded-For is believed (comma-separated) [default: none]
    #[arg(long, env = "SKIFF_TRUSTED_PROXIES", default_value = "")]
    pub trusted_proxies: TrustedProxies,
    /// Routers' private listeners (host:port, comma-separated) told of each
    /// deploy and delete, so they serve it at once instead of at their next
    /// poll (process runtime) [default: none; routers poll]
    #[arg(long, env = "SKIFF_ROUTER_NOTIFY", default_value = "")]
    pub router_notify: crate::router_notify::RouterAddrs,
    /// Kubernetes runtime settings (SKIFF_K8S_*), used when SKIFF_RUNTIME=kubernetes
    #[command(flatten)]
    pub kubernetes: KubeSettings,
    /// The deploy-time checker's sandbox and limits
    #[command(flatten)]
    pub checker: CheckerSettings,
    /// Per-function setting defaults and maximums (shared with the router)
    #[command(flatten)]
    pub policy: SettingsPolicy,
    /// Per-user quotas (overridden per user with `skiff-manager user limits`)
    #[command(flatten)]
    pub quotas: Quotas,
}

#[derive(Debug, Clone)]
pub struct ManagerConfig {
    pub database_url: Secret,
    pub jwt_secret: Secret,
    pub runtime: RuntimeKind,
    pub public_url: String,
    pub allow_signup: bool,
    pub deno: Option<PathBuf>,
    pub listen: SocketAddr,
    /// Where `GET /metrics` is served; `None`: nowhere (the metrics are
    /// still kept, for an embedder such as `skiff dev` to serve).
    pub metrics_listen: Option<SocketAddr>,
    pub data_dir: PathBuf,
    pub max_source_bytes: usize,
    pub token_ttl_secs: i64,
    pub login_limit_per_user: u32,
    pub login_limit_per_user_addr: u32,
    pub login_limit_per_addr: u32,
    pub login_window_secs: u64,
    pub register_limit_per_addr: u32,
    pub register_window_secs: u64,
    pub rate_limit_max_keys: usize,
    /// Peers whose `X-Forwarded-For` names the real client (rate limits, logs).
    pub trusted_proxies: TrustedProxies,
    /// Routers told of deploys and deletes (`SKIFF_ROUTER_NOTIFY`).
    pub router_notify: crate::router_notify::RouterAddrs,
    pub kubernetes: KubeSettings,
    pub checker: CheckerSettings,
    /// Seals and opens function secrets; checked against the database at start.
    pub secrets_key: SecretsKey,
    pub policy: SettingsPolicy,
    pub quotas: Quotas,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("SKIFF_DATABASE_URL is required (mysql://user:pass@host:port/db or sqlite://path)")]
    MissingDatabaseUrl,
    #[error("SKIFF_JWT_SECRET is required and must be at least {MIN_SECRET_BYTES} bytes")]
    BadJwtSecret,
    #[error(
        "SKIFF_SECRETS_KEY is required: 32 bytes as 64 hex digits or base64 \
         (e.g. the output of `openssl rand -hex 32`)"
    )]
    MissingSecretsKey,
    /// Never echoes the key.
    #[error(transparent)]
    BadSecretsKey(#[from] SecretsError),
    #[error("{default_name} ({default}) is above {max_name} ({max})")]
    DefaultAboveMax {
        default_name: &'static str,
        default: u64,
        max_name: &'static str,
        max: u64,
    },
    #[error("SKIFF_PUBLIC_URL must start with http:// or https://")]
    BadPublicUrl,
    #[error("{0} must be greater than zero")]
    NotPositive(&'static str),
    #[error(transparent)]
    Kubernetes(#[from] KubeSettingsError),
}

impl ManagerSettings {
    /// Every setting at its declared default (the environment is not read).
    pub fn defaults() -> Self {
        match skiff_core::settings::defaults() {
            Ok(s) => s,
            // The defaults are constants of this file; a unit test parses them.
            Err(e) => unreachable!("the manager's declared defaults do not parse: {e}"),
        }
    }

    pub fn into_config(self) -> Result<ManagerConfig, ConfigError> {
        let database_url = self
            .database_url
            .clone()
            .ok_or(ConfigError::MissingDatabaseUrl)?;
        let jwt_secret = self
            .jwt_secret
            .clone()
            .filter(|s| s.expose().len() >= MIN_SECRET_BYTES)
            .ok_or(ConfigError::BadJwtSecret)?;
        let secrets_key = SecretsKey::parse(
            self.secrets_key
                .as_ref()
                .ok_or(ConfigError::MissingSecretsKey)?
                .expose(),
        )?;
        check_policy(&self.policy)?;
        for (name, zero) in [
            ("SKIFF_MAX_SOURCE_BYTES", self.max_source_bytes == 0),
            ("SKIFF_TOKEN_TTL_SECS", self.token_ttl_secs <= 0),
            ("SKIFF_LOGIN_WINDOW_SECS", self.login_window_secs == 0),
            ("SKIFF_REGISTER_WINDOW_SECS", self.register_window_secs == 0),
            ("SKIFF_RATE_LIMIT_MAX_KEYS", self.rate_limit_max_keys == 0),
        ] {
            if zero {
                return Err(ConfigError::NotPositive(name));
            }
        }
        if let Some(name) = self.checker.archive.zero_settings().first() {
            return Err(ConfigError::NotPositive(name));
        }
        if self.runtime == RuntimeKind::Kubernetes {
            self.kubernetes.validate()?;
        }
        let public_url = normalise_public_url(&self.public_url)?;
        Ok(self.build(database_url, jwt_secret, public_url, secrets_key))
    }

    /// The configuration these settings describe, unchecked.
    fn build(
        self,
        database_url: Secret,
        jwt_secret: Secret,
        public_url: String,
        secrets_key: SecretsKey,
    ) -> ManagerConfig {
        ManagerConfig {
            secrets_key,
            policy: self.policy,
            quotas: self.quotas,
            database_url,
            jwt_secret,
            runtime: self.runtime,
            public_url,
            allow_signup: self.allow_signup,
            deno: self.deno,
            listen: self.listen,
            metrics_listen: self.metrics_listen.0,
            data_dir: self.data_dir,
            max_source_bytes: self.max_source_bytes,
            token_ttl_secs: self.token_ttl_secs,
            login_limit_per_user: self.login_limit_per_user,
            login_limit_per_user_addr: self.login_limit_per_user_addr,
            login_limit_per_addr: self.login_limit_per_addr,
            login_window_secs: self.login_window_secs,
            register_limit_per_addr: self.register_limit_per_addr,
            register_window_secs: self.register_window_secs,
            rate_limit_max_keys: self.rate_limit_max_keys,
            trusted_proxies: self.trusted_proxies,
            router_notify: self.router_notify,
            kubernetes: self.kubernetes,
            checker: self.checker,
        }
    }
}

/// An operator default above its own maximum would make every function that
/// keeps the default run with a value no function may choose.
fn check_policy(p: &SettingsPolicy) -> Result<(), ConfigError> {
    for (default_name, default, max_name, max) in [
        (
            "SKIFF_FUNCTION_MEMORY_MB",
            p.memory_mb,
            "SKIFF_MAX_FUNCTION_MEMORY_MB",
            p.max_memory_mb,
        ),
        (
            "SKIFF_REQUEST_TIMEOUT_SECS",
            p.request_timeout_secs,
            "SKIFF_MAX_REQUEST_TIMEOUT_SECS",
            p.max_request_timeout_secs,
        ),
        (
            "SKIFF_FUNCTION_CONCURRENCY",
            p.function_concurrency,
            "SKIFF_MAX_FUNCTION_CONCURRENCY",
            p.max_function_concurrency,
        ),
        (
            "SKIFF_IDLE_TIMEOUT_SECS",
            p.idle_timeout_secs,
            "SKIFF_MAX_IDLE_TIMEOUT_SECS",
            p.max_idle_timeout_secs,
        ),
        (
            "SKIFF_FUNCTION_MAX_INSTANCES",
            p.max_instances,
            "SKIFF_MAX_FUNCTION_INSTANCES",
            p.max_max_instances,
        ),
        (
            "SKIFF_FUNCTION_MIN_INSTANCES",
            p.min_instances,
            "SKIFF_FUNCTION_MAX_INSTANCES",
            p.max_instances,
        ),
    ] {
        if default > max {
            return Err(ConfigError::DefaultAboveMax {
                default_name,
                default,
                max_name,
                max,
            });
        }
    }
    for (name, value) in [
        ("SKIFF_FUNCTION_MEMORY_MB", p.memory_mb),
        ("SKIFF_REQUEST_TIMEOUT_SECS", p.request_timeout_secs),
        ("SKIFF_FUNCTION_CONCURRENCY", p.function_concurrency),
        ("SKIFF_IDLE_TIMEOUT_SECS", p.idle_timeout_secs),
        ("SKIFF_FUNCTION_MAX_INSTANCES", p.max_instances),
    ] {
        if value == 0 {
            return Err(ConfigError::NotPositive(name));
        }
    }
    Ok(())
}

pub fn normalise_public_url(url: &str) -> Result<String, ConfigError> {
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(ConfigError::BadPublicUrl);
    }
    Ok(url.trim_end_matches('/').to_owned())
}

impl ManagerConfig {
    /// The declared defaults (as `skiff-manager` with no flag and no
    /// environment), for embedding (`skiff dev`, tests), but no metrics
    /// listener: several embedded managers would meet on its fixed port, and
    /// `skiff dev` serves the metrics itself. The secrets key is a
    /// fresh random one: whoever embeds the manager with a database that
    /// outlives the process sets `secrets_key` (as `skiff dev` does), or the
    /// next start refuses the database (`WrongSecretsKey`), loudly.
    pub fn new(database_url: &str, jwt_secret: Secret, data_dir: PathBuf) -> Self {
        let settings = ManagerSettings {
            data_dir,
            ..ManagerSettings::defaults()
        };
        let public_url = settings.public_url.clone();
        let mut config = settings.build(
            Secret::new(database_url),
            jwt_secret,
            public_url,
            random_secrets_key(),
        );
        config.metrics_listen = None;
        config
    }

    /// The public URL of a function.
    pub fn function_url(&self, user: &str, name: &str) -> String {
        format!("{}/fn/{user}/{name}", self.public_url)
    }
}

fn random_secrets_key() -> SecretsKey {
    match SecretsKey::parse(&SecretsKey::generate_hex()) {
        Ok(k) => k,
        // 64 hex digits always parse.
        Err(e) => unreachable!("a generated secrets key does not parse: {e}"),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        settings: ManagerSettings,
    }

    const SECRET: &str = "a-secret-of-at-least-thirty-two-bytes";
    const KEY: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn new_is_the_command_line_without_flags() {
        let parsed = Cli::try_parse_from(["skiff-manager", "--database-url", "sqlite://x"])
            .unwrap()
            .settings;
        let parsed = ManagerSettings {
            jwt_secret: Some(Secret::new(SECRET)),
            secrets_key: Some(Secret::new(KEY)),
            // Not read from this process's environment (tests may set it).
            deno: None,
            ..parsed
        };
        let mut from_flags = parsed.into_config().unwrap();
        assert_eq!(
            from_flags.metrics_listen,
            Some("127.0.0.1:9465".parse().unwrap())
        );
        // The one difference: an embedder opts into the metrics listener.
        from_flags.metrics_listen = None;
        let embedded = ManagerConfig::new("sqlite://x", Secret::new(SECRET), "./.skiff".into());
        assert_eq!(format!("{from_flags:?}"), format!("{embedded:?}"));
        assert_eq!(embedded.public_url, "http://localhost:8000");
        assert_eq!(embedded.runtime, RuntimeKind::Process);
        assert!(embedded.trusted_proxies.is_empty());
    }

    #[test]
    fn refuses_zero_limits_and_bad_urls() {
        let with = |f: fn(&mut ManagerSettings)| {
            let mut s = ManagerSettings {
                database_url: Some(Secret::new("sqlite://x")),
                jwt_secret: Some(Secret::new(SECRET)),
                secrets_key: Some(Secret::new(KEY)),
                ..ManagerSettings::defaults()
            };
            f(&mut s);
            s.into_config().map(|_| ()).map_err(|e| e.to_string())
        };
        assert!(with(|_| {}).is_ok());
        assert!(with(|s| s.max_source_bytes = 0).is_err());
        assert!(with(|s| s.checker.archive.max_unpacked_bytes = 0).is_err());
        assert!(with(|s| s.token_ttl_secs = -1).is_err());
        assert!(with(|s| s.public_url = "ftp://x".into()).is_err());
        assert!(with(|s| s.jwt_secret = Some(Secret::new("short"))).is_err());
        assert!(with(|s| s.database_url = None).is_err());
        assert!(with(|s| s.policy.memory_mb = s.policy.max_memory_mb + 1).is_err());
        assert!(with(|s| s.policy.max_instances = 0).is_err());
    }

    #[test]
    fn the_secrets_key_is_required_and_never_echoed() {
        let with = |key: Option<&str>| {
            ManagerSettings {
                database_url: Some(Secret::new("sqlite://x")),
                jwt_secret: Some(Secret::new(SECRET)),
                secrets_key: key.map(Secret::new),
                ..ManagerSettings::defaults()
            }
            .into_config()
            .map(|_| ())
            .map_err(|e| e.to_string())
        };
        assert!(with(Some(KEY)).is_ok());
        let missing = with(None).unwrap_err();
        assert!(
            missing.contains("SKIFF_SECRETS_KEY is required"),
            "{missing}"
        );
        let bad = with(Some("not-a-key-but-a-password-typed-here")).unwrap_err();
        assert!(bad.contains("SKIFF_SECRETS_KEY must be 32 bytes"), "{bad}");
        assert!(!bad.contains("password-typed-here"), "{bad}");
    }
}
