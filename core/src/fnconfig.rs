//! A function version's configuration (env, secret names, settings) and the
//! operator's bounds on it: per-function setting defaults and maximums, and the
//! per-user quotas with their per-user overrides.
//!
//! A version is code + configuration: changing any of this creates a version,
//! the same way a deploy does (see `Store::change_config`).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// Largest env value, in bytes (SPEC.md).
pub const MAX_ENV_VALUE_BYTES: usize = 32 * 1024;
/// Largest secret value, in bytes: the same bound as env values.
pub const MAX_SECRET_VALUE_BYTES: usize = MAX_ENV_VALUE_BYTES;
/// Most env vars plus secrets one function may have.
pub const MAX_ENV_ENTRIES: usize = 128;
/// Largest total of env names and values plus secret names, in bytes.
pub const MAX_CONFIG_BYTES: usize = 256 * 1024;

/// Names a function may not use: the platform's own (`SKIFF_`), what Deno and
/// the dynamic loader read (`DENO_`, `LD_`), and the proxy variables, which
/// would let a function route its `fetch` through an address its network
/// rules forbid.
const RESERVED_PREFIXES: &[&str] = &["SKIFF_", "DENO_", "LD_"];
const RESERVED_NAMES: &[&str] = &[
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "GLIBC_TUNABLES",
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("env name {0:?} is invalid: names are [A-Z_][A-Z0-9_]*, 1 to 64 characters")]
    BadName(String),
    #[error("env name {0:?} is reserved (SKIFF_*, DENO_*, LD_*, the proxy variables)")]
    ReservedName(String),
    #[error("the value of {0} is over {MAX_ENV_VALUE_BYTES} bytes")]
    ValueTooLarge(String),
    #[error("{0} is both an env var and a secret; a name is one or the other")]
    NameClash(String),
    #[error("a function may have at most {MAX_ENV_ENTRIES} env vars and secrets")]
    TooManyEntries,
    #[error("the function's env and secret names are over {MAX_CONFIG_BYTES} bytes in all")]
    TooLarge,
    #[error("{field} must be between {min} and {max}, got {got}")]
    OutOfRange {
        field: &'static str,
        min: u64,
        max: u64,
        got: u64,
    },
    #[error("min_instances ({min}) is above max_instances ({max})")]
    MinAboveMax { min: u64, max: u64 },
}

/// Checks an env or secret name.
pub fn check_env_name(name: &str) -> Result<(), ConfigError> {
    let shown = || name.chars().take(80).collect::<String>();
    let mut bytes = name.bytes();
    let first_ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_uppercase() || b == b'_');
    if name.len() > 64
        || !first_ok
        || !bytes.all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(ConfigError::BadName(shown()));
    }
    if RESERVED_PREFIXES.iter().any(|p| name.starts_with(p)) || RESERVED_NAMES.contains(&name) {
        return Err(ConfigError::ReservedName(shown()));
    }
    Ok(())
}

/// Per-function settings. `None` means "the operator's default", so a version
/// stored before an operator changes a default follows the new default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FunctionSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_instances: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_instances: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_secs: Option<u64>,
}

/// Settings with every default filled in: what an instance runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct EffectiveSettings {
    pub memory_mb: u64,
    pub timeout_secs: u64,
    pub concurrency: u64,
    pub min_instances: u64,
    pub max_instances: u64,
    pub idle_timeout_secs: u64,
}

/// The operator's defaults and maximums for per-function settings. Both
/// services flatten this, so they agree on what a function runs with.
#[derive(Debug, Clone, clap::Args)]
pub struct SettingsPolicy {
    /// Memory cgroup limit of each instance, in MiB (a function may set its own up to the maximum)
    #[arg(long, env = "SKIFF_FUNCTION_MEMORY_MB", default_value_t = 256)]
    pub memory_mb: u64,
    /// Largest memory_mb a function may set
    #[arg(long, env = "SKIFF_MAX_FUNCTION_MEMORY_MB", default_value_t = 1024)]
    pub max_memory_mb: u64,
    /// Time a function has to answer (response headers), in seconds
    #[arg(long, env = "SKIFF_REQUEST_TIMEOUT_SECS", default_value_t = 30)]
    pub request_timeout_secs: u64,
    /// Largest timeout_secs a function may set
    #[arg(long, env = "SKIFF_MAX_REQUEST_TIMEOUT_SECS", default_value_t = 300)]
    pub max_request_timeout_secs: u64,
    /// Requests one function may have in flight at once; more wait briefly, then get 429
    #[arg(long, env = "SKIFF_FUNCTION_CONCURRENCY", default_value_t = 256)]
    pub function_concurrency: u64,
    /// Largest concurrency a function may set
    #[arg(long, env = "SKIFF_MAX_FUNCTION_CONCURRENCY", default_value_t = 1024)]
    pub max_function_concurrency: u64,
    /// An instance with no request for this long is stopped, in seconds
    #[arg(long, env = "SKIFF_IDLE_TIMEOUT_SECS", default_value_t = 300)]
    pub idle_timeout_secs: u64,
    /// Largest idle_timeout_secs a function may set
    #[arg(long, env = "SKIFF_MAX_IDLE_TIMEOUT_SECS", default_value_t = 3600)]
    pub max_idle_timeout_secs: u64,
    /// Instances a function runs at least (kept warm)
    #[arg(long, env = "SKIFF_FUNCTION_MIN_INSTANCES", default_value_t = 0)]
    pub min_instances: u64,
    /// Instances a function may run at most
    #[arg(long, env = "SKIFF_FUNCTION_MAX_INSTANCES", default_value_t = 1)]
    pub max_instances: u64,
    /// Largest max_instances (and min_instances) a function may set
    #[arg(long, env = "SKIFF_MAX_FUNCTION_INSTANCES", default_value_t = 8)]
    pub max_max_instances: u64,
}

impl SettingsPolicy {
    /// `s` with the defaults filled in.
    pub fn effective(&self, s: &FunctionSettings) -> EffectiveSettings {
        let max_instances = s.max_instances.unwrap_or(self.max_instances);
        EffectiveSettings {
            memory_mb: s.memory_mb.unwrap_or(self.memory_mb),
            timeout_secs: s.timeout_secs.unwrap_or(self.request_timeout_secs),
            concurrency: s.concurrency.unwrap_or(self.function_concurrency),
            // A default above an explicit max follows the max.
            min_instances: s
                .min_instances
                .unwrap_or(self.min_instances.min(max_instances)),
            max_instances,
            idle_timeout_secs: s.idle_timeout_secs.unwrap_or(self.idle_timeout_secs),
        }
    }

    /// Checks `s` against the maximums.
    pub fn check(&self, s: &FunctionSettings) -> Result<(), ConfigError> {
        let range = |field, v: Option<u64>, min, max| match v {
            Some(got) if got < min || got > max => Err(ConfigError::OutOfRange {
                field,
                min,
                max,
                got,
            }),
            _ => Ok(()),
        };
        range("memory_mb", s.memory_mb, 64, self.max_memory_mb)?;
        range(
            "timeout_secs",
            s.timeout_secs,
            1,
            self.max_request_timeout_secs,
        )?;
        range(
            "concurrency",
            s.concurrency,
            1,
            self.max_function_concurrency,
        )?;
        range("min_instances", s.min_instances, 0, self.max_max_instances)?;
        range("max_instances", s.max_instances, 1, self.max_max_instances)?;
        range(
            "idle_timeout_secs",
            s.idle_timeout_secs,
            1,
            self.max_idle_timeout_secs,
        )?;
        let e = self.effective(s);
        if e.min_instances > e.max_instances {
            return Err(ConfigError::MinAboveMax {
                min: e.min_instances,
                max: e.max_instances,
            });
        }
        Ok(())
    }
}

/// One version's configuration as stored (JSON in `function_versions.config`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FunctionConfig {
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Names only: the values are sealed in `function_secrets`, by reference,
    /// so a rollback restores the names, each with its current value.
    #[serde(default)]
    pub secrets: BTreeSet<String>,
    #[serde(default)]
    pub settings: FunctionSettings,
}

impl FunctionConfig {
    /// Checks every name, value and size rule (not the settings' maximums,
    /// which are the operator's: see `SettingsPolicy::check`).
    pub fn check(&self) -> Result<(), ConfigError> {
        if self.env.len() + self.secrets.len() > MAX_ENV_ENTRIES {
            return Err(ConfigError::TooManyEntries);
        }
        let mut total = 0;
        for (k, v) in &self.env {
            check_env_name(k)?;
            if v.len() > MAX_ENV_VALUE_BYTES {
                return Err(ConfigError::ValueTooLarge(k.clone()));
            }
            if self.secrets.contains(k) {
                return Err(ConfigError::NameClash(k.clone()));
            }
            total += k.len() + v.len();
        }
        for k in &self.secrets {
            check_env_name(k)?;
            total += k.len();
        }
        if total > MAX_CONFIG_BYTES {
            return Err(ConfigError::TooLarge);
        }
        Ok(())
    }

    /// The stored form. A config with nothing set is stored as NULL.
    pub fn to_stored(&self) -> Option<String> {
        if *self == Self::default() {
            None
        } else {
            serde_json::to_string(self).ok()
        }
    }

    pub fn from_stored(text: Option<&str>) -> Result<Self, serde_json::Error> {
        match text {
            None => Ok(Self::default()),
            Some(t) => serde_json::from_str(t),
        }
    }
}

/// The operator's per-user quotas (each can be overridden per user with
/// `skiff-manager user limits`). Flags are `--quota-*`, like the variables:
/// the field names alone would clash with `SettingsPolicy::max_instances` and
/// the manager's `--max-artifact-bytes` when a service flattens them together.
#[derive(Debug, Clone, clap::Args)]
pub struct Quotas {
    /// Functions one user may have
    #[arg(
        id = "quota_functions",
        long = "quota-functions",
        env = "SKIFF_QUOTA_FUNCTIONS",
        default_value_t = 100
    )]
    pub max_functions: u64,
    /// Versions kept per function; older ones are pruned (never the live one)
    #[arg(
        id = "quota_versions",
        long = "quota-versions",
        env = "SKIFF_QUOTA_VERSIONS",
        default_value_t = 20
    )]
    pub max_versions: u64,
    /// Bytes of uploads and artifacts one user may store, over all kept versions
    #[arg(id = "quota_artifact_bytes", long = "quota-artifact-bytes", env = "SKIFF_QUOTA_ARTIFACT_BYTES", default_value_t = 512 * 1024 * 1024)]
    pub max_artifact_bytes: u64,
    /// Requests per second one user's functions may receive at a router (token bucket; burst = 2 s worth)
    #[arg(
        id = "quota_rps",
        long = "quota-rps",
        env = "SKIFF_QUOTA_RPS",
        default_value_t = 1000
    )]
    pub rps: u64,
    /// Instances of one user's functions a router's process runtime may run at once
    #[arg(
        id = "quota_instances",
        long = "quota-instances",
        env = "SKIFF_QUOTA_INSTANCES",
        default_value_t = 16
    )]
    pub max_instances: u64,
}

/// One user's overrides; `None` = the operator's default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserLimits {
    pub max_functions: Option<u64>,
    pub max_versions: Option<u64>,
    pub max_artifact_bytes: Option<u64>,
    pub rps: Option<u64>,
    pub max_instances: Option<u64>,
}

/// A user's quotas with the defaults filled in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct EffectiveQuotas {
    pub max_functions: u64,
    pub max_versions: u64,
    pub max_artifact_bytes: u64,
    pub rps: u64,
    pub max_instances: u64,
}

impl Quotas {
    pub fn effective(&self, o: &UserLimits) -> EffectiveQuotas {
        EffectiveQuotas {
            max_functions: o.max_functions.unwrap_or(self.max_functions),
            // At least one version (the live one) is always kept.
            max_versions: o.max_versions.unwrap_or(self.max_versions).max(1),
            max_artifact_bytes: o.max_artifact_bytes.unwrap_or(self.max_artifact_bytes),
            rps: o.rps.unwrap_or(self.rps),
            max_instances: o.max_instances.unwrap_or(self.max_instances),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn env_names_follow_the_rules() {
        for ok in [
            "A",
            "_X",
            "API_KEY",
            "NODE_ENV",
            "DATABASE_URL2",
            &"A".repeat(64),
        ] {
            assert_eq!(check_env_name(ok), Ok(()), "{ok}");
        }
        for bad in ["", "a", "1A", "A-B", "A B", "É", &"A".repeat(65)] {
            assert!(
                matches!(check_env_name(bad), Err(ConfigError::BadName(_))),
                "{bad}"
            );
        }
        for reserved in [
            "SKIFF_X",
            "DENO_DIR",
            "LD_PRELOAD",
            "HTTPS_PROXY",
            "NO_PROXY",
        ] {
            assert!(
                matches!(check_env_name(reserved), Err(ConfigError::ReservedName(_))),
                "{reserved}"
            );
        }
    }

    #[test]
    fn a_config_checks_sizes_and_clashes() {
        let mut c = FunctionConfig::default();
        c.env.insert("A".into(), "x".repeat(MAX_ENV_VALUE_BYTES));
        assert_eq!(c.check(), Ok(()));
        c.env
            .insert("B".into(), "x".repeat(MAX_ENV_VALUE_BYTES + 1));
        assert_eq!(c.check(), Err(ConfigError::ValueTooLarge("B".into())));
        c.env.remove("B");
        c.secrets.insert("A".into());
        assert_eq!(c.check(), Err(ConfigError::NameClash("A".into())));
        let mut many = FunctionConfig::default();
        for i in 0..=MAX_ENV_ENTRIES {
            many.secrets.insert(format!("S{i}"));
        }
        assert_eq!(many.check(), Err(ConfigError::TooManyEntries));
    }

    #[test]
    fn stored_form_round_trips_and_empty_is_null() {
        assert_eq!(FunctionConfig::default().to_stored(), None);
        assert_eq!(
            FunctionConfig::from_stored(None).unwrap(),
            FunctionConfig::default()
        );
        let mut c = FunctionConfig::default();
        c.env.insert("A".into(), "1".into());
        c.secrets.insert("K".into());
        c.settings.memory_mb = Some(512);
        let text = c.to_stored().unwrap();
        assert_eq!(FunctionConfig::from_stored(Some(&text)).unwrap(), c);
        assert!(FunctionConfig::from_stored(Some("{\"evil\":1}")).is_err());
    }

    #[test]
    fn settings_are_bounded_by_the_policy() {
        let p: SettingsPolicy = crate::settings::defaults().unwrap();
        let e = p.effective(&FunctionSettings::default());
        assert_eq!((e.memory_mb, e.timeout_secs, e.max_instances), (256, 30, 1));
        let over = FunctionSettings {
            memory_mb: Some(p.max_memory_mb + 1),
            ..Default::default()
        };
        assert!(matches!(
            p.check(&over),
            Err(ConfigError::OutOfRange {
                field: "memory_mb",
                ..
            })
        ));
        let inverted = FunctionSettings {
            min_instances: Some(3),
            max_instances: Some(2),
            ..Default::default()
        };
        assert!(matches!(
            p.check(&inverted),
            Err(ConfigError::MinAboveMax { .. })
        ));
        let fine = FunctionSettings {
            min_instances: Some(1),
            max_instances: Some(4),
            timeout_secs: Some(60),
            ..Default::default()
        };
        assert_eq!(p.check(&fine), Ok(()));
    }

    #[test]
    fn quotas_take_overrides() {
        let q: Quotas = crate::settings::defaults().unwrap();
        let e = q.effective(&UserLimits {
            max_functions: Some(2),
            max_versions: Some(0),
            ..Default::default()
        });
        assert_eq!(e.max_functions, 2);
        assert_eq!(e.max_versions, 1);
        assert_eq!(e.rps, q.rps);
    }
}
