//! What one version's configuration makes of its pods: the env file the
//! runtime reads (env + opened secrets, for the function's Secret), the names
//! Deno may read, a fingerprint for the pod template, and the settings turned
//! into resources and autoscaler bounds.
//!
//! Precedence, in Kubernetes mode: a setting the function set itself (already
//! checked against the operator's maximums when it was set) wins; otherwise
//! memory and replicas follow the `SKIFF_K8S_*` flags, which existing
//! clusters are sized by, and timeout and concurrency follow the operator's
//! per-function defaults (`SettingsPolicy`), shared with the router.

use std::fmt;

use serde_json::{Map, Value};
use skiff_core::fnconfig::{EffectiveSettings, FunctionSettings, SettingsPolicy};

use crate::kube::settings::KubeSettings;

/// The pod's `preStop` pause: the kubelet waits this long before SIGTERM, while
/// the endpoint controller, kube-proxy and the routers' EndpointSlice watch
/// take the stopping pod out of the Service (they learn of it at the same
/// moment as the kubelet).
pub const PRESTOP_SLEEP_SECS: u64 = 5;
/// After SIGTERM the runtime says "not ready" and serves this long more
/// (`--drain-secs`), answering with `connection: close`, for callers that
/// still route here (pooled connections, a slow kube-proxy).
pub const DRAIN_SECS: u64 = skiff_core::naming::POD_DRAIN_SECS;
/// Seconds beyond the pause, the drain and the request timeout, so a request
/// accepted at the end of the drain can still finish.
const DRAIN_MARGIN_SECS: u64 = 5;
/// The shortest grace period (Kubernetes' own default).
const MIN_GRACE_SECS: u64 = 30;

/// One version's configuration, ready to render. Holds plaintext secret
/// values: its `Debug` shows names only, and it is never logged.
#[derive(Clone, PartialEq, Eq)]
pub struct VersionConfig {
    env_json: String,
    names: Vec<String>,
    fingerprint: String,
    explicit: FunctionSettings,
    effective: EffectiveSettings,
}

impl fmt::Debug for VersionConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VersionConfig")
            .field("names", &self.names)
            .field("fingerprint", &self.fingerprint)
            .field("explicit", &self.explicit)
            .finish_non_exhaustive()
    }
}

/// Memory, heap and replica bounds of a function's pods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodShape {
    pub memory_request: String,
    pub memory_limit: String,
    pub heap_mb: u64,
    pub min_replicas: i32,
    pub max_replicas: i32,
    /// The pod's termination grace period: the preStop pause, the drain, the
    /// request timeout and a margin, so a rollout drains requests instead of
    /// cutting them.
    pub grace_secs: i64,
    pub timeout_secs: u64,
    pub concurrency: u64,
}

fn replicas(n: u64) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

impl VersionConfig {
    /// `vars`: the env and opened secrets (`InstanceConfig::open`).
    /// `identity`: bytes that change whenever the configuration does and
    /// reveal no value (the stored config and the sealed secrets); only their
    /// hash is kept.
    pub fn new(
        vars: &[(String, String)],
        settings: FunctionSettings,
        policy: &SettingsPolicy,
        identity: &[u8],
    ) -> Self {
        let object: Map<String, Value> = vars
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        // serde_json's map is sorted, so the file and the names are stable.
        let names = object.keys().cloned().collect();
        Self {
            env_json: Value::Object(object).to_string(),
            names,
            fingerprint: skiff_core::store::sha256_hex(identity),
            explicit: settings,
            effective: policy.effective(&settings),
        }
    }

    /// The `env.json` the runtime reads: a JSON object of name to value.
    pub fn env_json(&self) -> &str {
        &self.env_json
    }

    /// The names the function may read, sorted.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// A hash that changes with the configuration (env, secret names and
    /// sealed values, settings) and with nothing else.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    pub fn settings(&self) -> &FunctionSettings {
        &self.explicit
    }

    /// The function's settings as resources and bounds, under `settings`.
    pub fn shape(&self, settings: &KubeSettings) -> PodShape {
        let (memory_request, memory_limit, heap_mb) = match self.explicit.memory_mb {
            // Request = limit: the memory the function asked for is reserved.
            // Half of it for the V8 heap leaves room for Deno's own memory
            // and off-heap buffers.
            Some(mb) => (format!("{mb}Mi"), format!("{mb}Mi"), (mb / 2).max(16)),
            None => (
                settings.memory_request.clone(),
                settings.memory_limit.clone(),
                u64::from(settings.heap_mb),
            ),
        };
        // The autoscaler needs at least one replica.
        let min_replicas = match self.explicit.min_instances {
            Some(n) => replicas(n).max(1),
            None => settings.min_replicas,
        };
        let max_replicas = match self.explicit.max_instances {
            Some(n) => replicas(n),
            None => settings.max_replicas,
        };
        // One explicit bound moves the other default out of its way.
        let (min_replicas, max_replicas) = if self.explicit.max_instances.is_some() {
            (min_replicas.min(max_replicas).max(1), max_replicas.max(1))
        } else {
            (min_replicas, max_replicas.max(min_replicas))
        };
        // The grace period counts from the start of the preStop pause.
        let grace =
            (PRESTOP_SLEEP_SECS + DRAIN_SECS + self.effective.timeout_secs + DRAIN_MARGIN_SECS)
                .max(MIN_GRACE_SECS);
        PodShape {
            memory_request,
            memory_limit,
            heap_mb,
            min_replicas,
            max_replicas,
            grace_secs: i64::try_from(grace).unwrap_or(i64::MAX),
            timeout_secs: self.effective.timeout_secs,
            concurrency: self.effective.concurrency,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn policy() -> SettingsPolicy {
        skiff_core::settings::defaults().unwrap()
    }

    fn with(settings: FunctionSettings) -> VersionConfig {
        VersionConfig::new(&[], settings, &policy(), b"x")
    }

    #[test]
    fn the_env_file_is_one_sorted_json_object_of_exactly_the_vars() {
        let vars = [
            ("ZED".to_owned(), "z \"quoted\"\n".to_owned()),
            ("API_KEY".to_owned(), "s3cr3t".to_owned()),
        ];
        let c = VersionConfig::new(&vars, FunctionSettings::default(), &policy(), b"id");
        assert_eq!(c.names(), ["API_KEY", "ZED"]);
        let parsed: Value = serde_json::from_str(c.env_json()).unwrap();
        assert_eq!(
            parsed,
            serde_json::json!({"API_KEY": "s3cr3t", "ZED": "z \"quoted\"\n"})
        );
        assert!(!c.env_json().contains('\n'), "one line");
        let empty = with(FunctionSettings::default());
        assert_eq!(empty.env_json(), "{}");
        assert!(empty.names().is_empty());
    }

    #[test]
    fn debug_shows_names_never_values() {
        let vars = [("API_KEY".to_owned(), "s3cr3t-value".to_owned())];
        let c = VersionConfig::new(&vars, FunctionSettings::default(), &policy(), b"id");
        let shown = format!("{c:?}");
        assert!(shown.contains("API_KEY"), "{shown}");
        assert!(!shown.contains("s3cr3t-value"), "{shown}");
    }

    #[test]
    fn the_fingerprint_follows_the_identity_only() {
        let a = VersionConfig::new(&[], FunctionSettings::default(), &policy(), b"one");
        let b = VersionConfig::new(&[], FunctionSettings::default(), &policy(), b"one");
        let c = VersionConfig::new(&[], FunctionSettings::default(), &policy(), b"two");
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert_ne!(a.fingerprint(), c.fingerprint());
        assert_eq!(a.fingerprint().len(), 64);
    }

    #[test]
    fn unset_settings_follow_the_kubernetes_flags() {
        let k = KubeSettings::default();
        let s = with(FunctionSettings::default()).shape(&k);
        assert_eq!(s.memory_limit, k.memory_limit);
        assert_eq!(s.memory_request, k.memory_request);
        assert_eq!(s.heap_mb, u64::from(k.heap_mb));
        assert_eq!((s.min_replicas, s.max_replicas), (1, 5));
        assert_eq!(s.timeout_secs, policy().request_timeout_secs);
        assert_eq!(s.concurrency, policy().function_concurrency);
        assert_eq!(s.grace_secs, 45);
    }

    #[test]
    fn set_settings_win() {
        let k = KubeSettings::default();
        let s = with(FunctionSettings {
            memory_mb: Some(512),
            timeout_secs: Some(120),
            concurrency: Some(4),
            min_instances: Some(2),
            max_instances: Some(3),
            idle_timeout_secs: None,
        })
        .shape(&k);
        assert_eq!(
            (s.memory_request.as_str(), s.memory_limit.as_str()),
            ("512Mi", "512Mi")
        );
        assert_eq!(s.heap_mb, 256);
        assert_eq!((s.min_replicas, s.max_replicas), (2, 3));
        assert_eq!((s.timeout_secs, s.concurrency), (120, 4));
        assert_eq!(s.grace_secs, 135);
    }

    #[test]
    fn replica_bounds_stay_ordered_and_at_least_one() {
        let k = KubeSettings::default(); // 1..5
        let bounds = |min, max| {
            let s = with(FunctionSettings {
                min_instances: min,
                max_instances: max,
                ..FunctionSettings::default()
            })
            .shape(&k);
            (s.min_replicas, s.max_replicas)
        };
        // Scale to zero is not an autoscaler's: 0 keeps one warm.
        assert_eq!(bounds(Some(0), None), (1, 5));
        assert_eq!(bounds(Some(8), None), (8, 8));
        assert_eq!(bounds(None, Some(1)), (1, 1));
        let two = KubeSettings {
            min_replicas: 2,
            ..KubeSettings::default()
        };
        let s = with(FunctionSettings {
            max_instances: Some(1),
            ..FunctionSettings::default()
        })
        .shape(&two);
        assert_eq!((s.min_replicas, s.max_replicas), (1, 1));
    }
}
