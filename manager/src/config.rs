//! Manager configuration: every setting is an environment variable and a flag
//! (README.md, "Configuration"). `ManagerSettings` is what clap parses; `ManagerConfig`
//! is the validated form the application runs on (`skiff dev` builds one directly).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::builder::BoolishValueParser;
use skiff_core::secret::Secret;
use skiff_core::tokens::MIN_SECRET_BYTES;
use skiff_core::trusted_proxies::TrustedProxies;

use crate::kube::settings::{KubeSettings, KubeSettingsError};
use crate::typecheck::settings::CheckerSettings;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RuntimeKind {
    Process,
    Kubernetes,
}

#[derive(Debug, Clone, clap::Args)]
pub struct ManagerSettings {
    /// mysql://user:pass@host:port/db or sqlite://path
    #[arg(long, env = "SKIFF_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<Secret>,
    /// HMAC secret for tokens, at least 32 bytes
    #[arg(long, env = "SKIFF_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<Secret>,
    /// Where function instances run
    #[arg(long, env = "SKIFF_RUNTIME", value_enum, default_value = "process")]
    pub runtime: RuntimeKind,
    /// Base URL of the router as users reach it [default: http://localhost:8000]
    #[arg(long, env = "SKIFF_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Whether POST /register is open
    #[arg(long, env = "SKIFF_ALLOW_SIGNUP", value_parser = BoolishValueParser::new(), default_value = "false")]
    pub allow_signup: bool,
    /// Path of the Deno binary [default: found on PATH]
    #[arg(long, env = "SKIFF_DENO")]
    pub deno: Option<PathBuf>,
    /// Address to bind
    #[arg(long, env = "SKIFF_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
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
    #[arg(long, env = "SKIFF_TRUSTED_PROXIES")]
    pub trusted_proxies: Option<TrustedProxies>,
    /// Kubernetes runtime settings (SKIFF_K8S_*), used when SKIFF_RUNTIME=kubernetes
    #[command(flatten)]
    pub kubernetes: KubeSettings,
    /// The deploy-time checker's sandbox and limits
    #[command(flatten)]
    pub checker: CheckerSettings,
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
    pub kubernetes: KubeSettings,
    pub checker: CheckerSettings,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("SKIFF_DATABASE_URL is required (mysql://user:pass@host:port/db or sqlite://path)")]
    MissingDatabaseUrl,
    #[error("SKIFF_JWT_SECRET is required and must be at least {MIN_SECRET_BYTES} bytes")]
    BadJwtSecret,
    #[error("SKIFF_PUBLIC_URL must start with http:// or https://")]
    BadPublicUrl,
    #[error("{0} must be greater than zero")]
    NotPositive(&'static str),
    #[error(transparent)]
    Kubernetes(#[from] KubeSettingsError),
}

impl ManagerSettings {
    pub fn into_config(self) -> Result<ManagerConfig, ConfigError> {
        let database_url = self.database_url.ok_or(ConfigError::MissingDatabaseUrl)?;
        let jwt_secret = self
            .jwt_secret
            .filter(|s| s.expose().len() >= MIN_SECRET_BYTES)
            .ok_or(ConfigError::BadJwtSecret)?;
        let public_url = normalise_public_url(
            self.public_url
                .as_deref()
                .unwrap_or("http://localhost:8000"),
        )?;
        if self.max_source_bytes == 0 {
            return Err(ConfigError::NotPositive("SKIFF_MAX_SOURCE_BYTES"));
        }
        if self.token_ttl_secs <= 0 {
            return Err(ConfigError::NotPositive("SKIFF_TOKEN_TTL_SECS"));
        }
        if self.login_window_secs == 0 {
            return Err(ConfigError::NotPositive("SKIFF_LOGIN_WINDOW_SECS"));
        }
        if self.register_window_secs == 0 {
            return Err(ConfigError::NotPositive("SKIFF_REGISTER_WINDOW_SECS"));
        }
        if self.rate_limit_max_keys == 0 {
            return Err(ConfigError::NotPositive("SKIFF_RATE_LIMIT_MAX_KEYS"));
        }
        if self.runtime == RuntimeKind::Kubernetes {
            self.kubernetes.validate()?;
        }
        Ok(ManagerConfig {
            database_url,
            jwt_secret,
            runtime: self.runtime,
            public_url,
            allow_signup: self.allow_signup,
            deno: self.deno,
            listen: self.listen,
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
            trusted_proxies: self.trusted_proxies.unwrap_or_default(),
            kubernetes: self.kubernetes,
            checker: self.checker,
        })
    }
}

pub fn normalise_public_url(url: &str) -> Result<String, ConfigError> {
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(ConfigError::BadPublicUrl);
    }
    Ok(url.trim_end_matches('/').to_owned())
}

impl ManagerConfig {
    /// A configuration with the documented defaults, for embedding (`skiff dev`, tests).
    pub fn new(database_url: &str, jwt_secret: Secret, data_dir: PathBuf) -> Self {
        Self {
            database_url: Secret::new(database_url),
            jwt_secret,
            runtime: RuntimeKind::Process,
            public_url: "http://localhost:8000".into(),
            allow_signup: false,
            deno: None,
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            data_dir,
            max_source_bytes: 1024 * 1024,
            token_ttl_secs: 24 * 3600,
            login_limit_per_user: 100,
            login_limit_per_user_addr: 10,
            login_limit_per_addr: 30,
            login_window_secs: 60,
            register_limit_per_addr: 10,
            register_window_secs: 3600,
            rate_limit_max_keys: 20_000,
            trusted_proxies: TrustedProxies::none(),
            kubernetes: KubeSettings::default(),
            checker: CheckerSettings::default(),
        }
    }

    /// The public URL of a function.
    pub fn function_url(&self, user: &str, name: &str) -> String {
        format!("{}/fn/{user}/{name}", self.public_url)
    }
}
