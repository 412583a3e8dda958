//! Settings of the Kubernetes runtime. Each is an environment variable
//! `SKIFF_K8S_*` and a flag; they apply to `serve` and to `render`.

use std::time::Duration;

pub const DEFAULT_NAMESPACE: &str = "skiff-functions";
pub const DEFAULT_ROUTER_NAMESPACE: &str = "skiff";
/// Pinned: the manager and the runtime image are released together.
pub const DEFAULT_RUNTIME_IMAGE: &str = "skiff/client-runtime:0.1.0";

/// The shortest idle time: the routers count calls per minute, so a shorter
/// one could scale down a function called a minute ago.
pub const MIN_IDLE_SECS: u64 = 120;

#[derive(Debug, Clone, clap::Args)]
pub struct KubeSettings {
    /// Namespace the function objects live in
    #[arg(long = "k8s-namespace", env = "SKIFF_K8S_NAMESPACE", default_value = DEFAULT_NAMESPACE)]
    pub namespace: String,
    /// Namespace of the router pods (the only ones allowed to reach functions)
    #[arg(long = "k8s-router-namespace", env = "SKIFF_K8S_ROUTER_NAMESPACE", default_value = DEFAULT_ROUTER_NAMESPACE)]
    pub router_namespace: String,
    /// Image of the client runtime (pin a tag or a digest)
    #[arg(long = "k8s-runtime-image", env = "SKIFF_K8S_RUNTIME_IMAGE", default_value = DEFAULT_RUNTIME_IMAGE)]
    pub runtime_image: String,
    /// Fewest replicas the autoscaler keeps per function
    #[arg(
        long = "k8s-min-replicas",
        env = "SKIFF_K8S_MIN_REPLICAS",
        default_value_t = 1
    )]
    pub min_replicas: i32,
    /// Most replicas the autoscaler starts per function
    #[arg(
        long = "k8s-max-replicas",
        env = "SKIFF_K8S_MAX_REPLICAS",
        default_value_t = 5
    )]
    pub max_replicas: i32,
    /// Average CPU use (percent of the request) the autoscaler aims for
    #[arg(
        long = "k8s-cpu-target-percent",
        env = "SKIFF_K8S_CPU_TARGET_PERCENT",
        default_value_t = 70
    )]
    pub cpu_target_percent: i32,
    /// CPU request of a function pod
    #[arg(
        long = "k8s-cpu-request",
        env = "SKIFF_K8S_CPU_REQUEST",
        default_value = "50m"
    )]
    pub cpu_request: String,
    /// CPU limit of a function pod
    #[arg(
        long = "k8s-cpu-limit",
        env = "SKIFF_K8S_CPU_LIMIT",
        default_value = "500m"
    )]
    pub cpu_limit: String,
    /// Memory request of a function pod
    #[arg(
        long = "k8s-memory-request",
        env = "SKIFF_K8S_MEMORY_REQUEST",
        default_value = "96Mi"
    )]
    pub memory_request: String,
    /// Memory limit of a function pod (keep it above the heap cap)
    #[arg(
        long = "k8s-memory-limit",
        env = "SKIFF_K8S_MEMORY_LIMIT",
        default_value = "256Mi"
    )]
    pub memory_limit: String,
    /// V8 heap cap of a function, in MiB
    #[arg(long = "k8s-heap-mb", env = "SKIFF_K8S_HEAP_MB", default_value_t = 128)]
    pub heap_mb: u32,
    /// Size limit of a function pod's temporary directory
    #[arg(
        long = "k8s-tmp-size",
        env = "SKIFF_K8S_TMP_SIZE",
        default_value = "64Mi"
    )]
    pub tmp_size: String,
    /// Seconds between two passes of the reconcile loop
    #[arg(
        long = "k8s-reconcile-secs",
        env = "SKIFF_K8S_RECONCILE_SECS",
        default_value_t = 30
    )]
    pub reconcile_secs: u64,
    /// Seconds one Kubernetes API call may take before it counts as failed
    #[arg(
        long = "k8s-api-timeout-secs",
        env = "SKIFF_K8S_API_TIMEOUT_SECS",
        default_value_t = 10
    )]
    pub api_timeout_secs: u64,
    /// Seconds without a call after which a function is scaled to zero
    /// (0: never; else at least 120, as calls are counted per minute)
    #[arg(
        long = "k8s-idle-secs",
        env = "SKIFF_K8S_IDLE_SECS",
        default_value_t = 0
    )]
    pub idle_secs: u64,
    /// Address of the wake endpoint the routers call for a function at zero
    /// (its own port, never the public API's; fence it to the router pods)
    #[arg(long = "k8s-wake-listen", env = "SKIFF_K8S_WAKE_LISTEN")]
    pub wake_listen: Option<std::net::SocketAddr>,
}

impl Default for KubeSettings {
    /// The flags' declared defaults.
    fn default() -> Self {
        match skiff_core::settings::defaults() {
            Ok(s) => s,
            // Constants of this file; `default_is_valid` parses them.
            Err(e) => unreachable!("the Kubernetes settings' defaults do not parse: {e}"),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{setting}: {reason}")]
pub struct KubeSettingsError {
    pub setting: &'static str,
    pub reason: String,
}

fn bad(setting: &'static str, reason: impl Into<String>) -> KubeSettingsError {
    KubeSettingsError {
        setting,
        reason: reason.into(),
    }
}

fn quantity(setting: &'static str, value: &str) -> Result<(), KubeSettingsError> {
    // Digits with an optional fraction and a unit suffix: enough to catch typos
    // before Kubernetes answers 422 for every function.
    let digits = value.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let ok = !digits.is_empty()
        && digits.chars().all(|c| c.is_ascii_digit() || c == '.')
        && value.len() - digits.len() <= 2;
    if ok {
        Ok(())
    } else {
        Err(bad(
            setting,
            format!("{value:?} is not a Kubernetes quantity such as 500m or 256Mi"),
        ))
    }
}

impl KubeSettings {
    /// Checks what Kubernetes would otherwise refuse on every apply.
    pub fn validate(&self) -> Result<(), KubeSettingsError> {
        for (setting, ns) in [
            ("SKIFF_K8S_NAMESPACE", &self.namespace),
            ("SKIFF_K8S_ROUTER_NAMESPACE", &self.router_namespace),
        ] {
            if !skiff_core::naming::is_dns_label(ns) {
                return Err(bad(
                    setting,
                    format!("{ns:?} is not a valid namespace name"),
                ));
            }
        }
        if self.runtime_image.trim().is_empty() || self.runtime_image.contains(char::is_whitespace)
        {
            return Err(bad("SKIFF_K8S_RUNTIME_IMAGE", "must name an image"));
        }
        if self.min_replicas < 1 {
            return Err(bad("SKIFF_K8S_MIN_REPLICAS", "must be at least 1"));
        }
        if self.max_replicas < self.min_replicas {
            return Err(bad(
                "SKIFF_K8S_MAX_REPLICAS",
                "must be at least SKIFF_K8S_MIN_REPLICAS",
            ));
        }
        if !(1..=1000).contains(&self.cpu_target_percent) {
            return Err(bad(
                "SKIFF_K8S_CPU_TARGET_PERCENT",
                "must be between 1 and 1000",
            ));
        }
        quantity("SKIFF_K8S_CPU_REQUEST", &self.cpu_request)?;
        quantity("SKIFF_K8S_CPU_LIMIT", &self.cpu_limit)?;
        quantity("SKIFF_K8S_MEMORY_REQUEST", &self.memory_request)?;
        quantity("SKIFF_K8S_MEMORY_LIMIT", &self.memory_limit)?;
        quantity("SKIFF_K8S_TMP_SIZE", &self.tmp_size)?;
        if self.heap_mb < 16 {
            return Err(bad("SKIFF_K8S_HEAP_MB", "must be at least 16"));
        }
        if self.reconcile_secs == 0 {
            return Err(bad("SKIFF_K8S_RECONCILE_SECS", "must be greater than zero"));
        }
        if self.api_timeout_secs == 0 {
            return Err(bad(
                "SKIFF_K8S_API_TIMEOUT_SECS",
                "must be greater than zero",
            ));
        }
        if self.idle_secs != 0 && self.idle_secs < MIN_IDLE_SECS {
            return Err(bad(
                "SKIFF_K8S_IDLE_SECS",
                format!("must be 0 (never scale to zero) or at least {MIN_IDLE_SECS}"),
            ));
        }
        Ok(())
    }

    /// How long a function goes without a call before it is scaled to
    /// zero; `None` when it never is.
    pub fn idle_after(&self) -> Option<Duration> {
        (self.idle_secs > 0).then(|| Duration::from_secs(self.idle_secs))
    }

    pub fn api_timeout(&self) -> Duration {
        Duration::from_secs(self.api_timeout_secs)
    }

    pub fn reconcile_interval(&self) -> Duration {
        Duration::from_secs(self.reconcile_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid() {
        assert_eq!(KubeSettings::default().validate(), Ok(()));
        assert_eq!(KubeSettings::default().namespace, DEFAULT_NAMESPACE);
    }

    #[test]
    fn refuses_what_kubernetes_would_refuse() {
        let with = |f: fn(&mut KubeSettings)| {
            let mut s = KubeSettings::default();
            f(&mut s);
            s.validate().map_err(|e| e.setting)
        };
        assert_eq!(
            with(|s| s.namespace = "Bad_NS".into()),
            Err("SKIFF_K8S_NAMESPACE")
        );
        assert_eq!(with(|s| s.max_replicas = 0), Err("SKIFF_K8S_MAX_REPLICAS"));
        assert_eq!(with(|s| s.min_replicas = 0), Err("SKIFF_K8S_MIN_REPLICAS"));
        assert_eq!(
            with(|s| s.cpu_limit = "lots".into()),
            Err("SKIFF_K8S_CPU_LIMIT")
        );
        assert_eq!(
            with(|s| s.memory_limit = "256 Mi".into()),
            Err("SKIFF_K8S_MEMORY_LIMIT")
        );
        assert_eq!(
            with(|s| s.reconcile_secs = 0),
            Err("SKIFF_K8S_RECONCILE_SECS")
        );
        assert_eq!(with(|s| s.cpu_request = "0.25".into()), Ok(()));
        assert_eq!(with(|s| s.idle_secs = 60), Err("SKIFF_K8S_IDLE_SECS"));
        assert_eq!(with(|s| s.idle_secs = 120), Ok(()));
        assert_eq!(KubeSettings::default().idle_after(), None);
    }
}
