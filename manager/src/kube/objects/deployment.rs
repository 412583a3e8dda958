//! The function's Deployment: the client-runtime image running one version's
//! module, hardened to the Pod Security "restricted" profile. It never sets
//! `replicas`: the HorizontalPodAutoscaler owns that field, and an apply that
//! set it would fight the autoscaler on every reconcile.
//!
//! The function's env and secrets reach the runtime as a file from the
//! function's Secret ([`ENV_FILE`]), never through the container's `env:`;
//! the container's env carries only their names (`SKIFF_ENV_NAMES`), from
//! which run.sh grants Deno `--allow-env`.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, EnvVar,
    HTTPGetAction, KeyToPath, Lifecycle, LifecycleHandler, PodSecurityContext, PodSpec,
    PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile, SecretVolumeSource,
    SecurityContext, SleepAction, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use skiff_core::naming::{CONTAINER_PORT, HEALTH_PORT, code_config_map_name, env_secret_name};

use super::config::{DRAIN_SECS, PRESTOP_SLEEP_SECS, PodShape};
use super::secret::ENV_FILE_KEY;
use super::{FunctionSpec, common_metadata};
use crate::kube::deny_net::deny_net_value;
use crate::kube::labels;
use crate::kube::settings::KubeSettings;

/// client-runtime/run.sh inside the image (Dockerfiles/client-runtime.Dockerfile):
/// it builds the Deno command line from deno-flags.txt, the one definition
/// shared with the process runtime.
pub const RUN_SH: &str = "/opt/skiff/client-runtime/run.sh";
/// The version's ConfigMap, mounted read-only: Deno's `{code_dir}`.
pub const CODE_DIR: &str = "/code";
/// The instance's writable directory: Deno's `{tmp_dir}`.
pub const TMP_DIR: &str = "/tmp";
/// Deno's own cache (transpiled main.ts). Kept apart from TMP_DIR so the
/// function, which may write TMP_DIR, cannot touch the runtime's cache.
pub const DENO_DIR: &str = "/deno-dir";
/// The unprivileged user of the image; above 10000 so it maps to no host user.
pub const RUNTIME_UID: i64 = 10001;
/// The function's Secret, mounted read-only.
pub const ENV_DIR: &str = "/var/run/skiff/env";
/// The env file the runtime reads (`--env-file`): `ENV_DIR/env.json`.
pub const ENV_FILE: &str = "/var/run/skiff/env/env.json";
/// Pod-template annotation holding the configuration's fingerprint: a new
/// configuration rolls the pods even if nothing else in the template changed.
pub const CONFIG_HASH_ANNOTATION: &str = "skiff.dev/config-hash";
/// The settings the router enforces, recorded on the pods for operators.
pub const TIMEOUT_ANNOTATION: &str = "skiff.dev/timeout-secs";
pub const CONCURRENCY_ANNOTATION: &str = "skiff.dev/concurrency";
/// Secret files: owned by root, group = the pod's fsGroup (the runtime's
/// group), readable by that group only. Kubelet adds group read for the
/// fsGroup anyway; saying it here makes the rendered mode the real one.
const ENV_FILE_MODE: i32 = 0o440;

const CONTAINER: &str = "runtime";

fn quantity(s: &str) -> Quantity {
    Quantity(s.to_owned())
}

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..EnvVar::default()
    }
}

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: Some(read_only),
        ..VolumeMount::default()
    }
}

fn http_probe(path: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("health".into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(2),
        failure_threshold: Some(failures),
        ..Probe::default()
    }
}

fn seccomp() -> SeccompProfile {
    SeccompProfile {
        type_: "RuntimeDefault".into(),
        ..SeccompProfile::default()
    }
}

fn container(settings: &KubeSettings, spec: &FunctionSpec<'_>, shape: &PodShape) -> Container {
    let module = format!("{CODE_DIR}/{}", spec.module_file);
    Container {
        name: CONTAINER.into(),
        image: Some(settings.runtime_image.clone()),
        image_pull_policy: Some("IfNotPresent".into()),
        command: Some(vec![RUN_SH.into()]),
        args: Some(vec![
            "--module".into(),
            module,
            // Every address of both families: IPv4-only, IPv6-only and
            // dual-stack clusters alike (the runtime binds 0.0.0.0 where the
            // kernel has no IPv6); its probe port does the same.
            "--listen".into(),
            format!("tcp:[::]:{CONTAINER_PORT}"),
            "--health-port".into(),
            HEALTH_PORT.to_string(),
            "--env-file".into(),
            ENV_FILE.into(),
            "--drain-secs".into(),
            DRAIN_SECS.to_string(),
        ]),
        env: Some(vec![
            env("SKIFF_CODE_DIR", CODE_DIR),
            env("SKIFF_TMP_DIR", TMP_DIR),
            env("SKIFF_HEAP_MB", shape.heap_mb.to_string()),
            // run.sh: --allow-read of the file (and the launcher's read-only
            // rule), --allow-env of the names, --deny-env when there are none.
            env("SKIFF_ENV_FILE", ENV_FILE),
            env("SKIFF_ENV_NAMES", spec.config.names().join(",")),
            env("SKIFF_DENY_NET", deny_net_value()),
            env("DENO_DIR", DENO_DIR),
            env("NO_COLOR", "1"),
            // The image's launcher (SKIFF_SANDBOX) lets the runtime listen on
            // these TCP ports and no others.
            env(
                "SKIFF_BIND_PORTS",
                format!("{CONTAINER_PORT},{HEALTH_PORT}"),
            ),
        ]),
        ports: Some(vec![
            ContainerPort {
                name: Some("http".into()),
                container_port: i32::from(CONTAINER_PORT),
                protocol: Some("TCP".into()),
                ..ContainerPort::default()
            },
            ContainerPort {
                name: Some("health".into()),
                container_port: i32::from(HEALTH_PORT),
                protocol: Some("TCP".into()),
                ..ContainerPort::default()
            },
        ]),
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".to_owned(), quantity(&settings.cpu_request)),
                ("memory".to_owned(), quantity(&shape.memory_request)),
            ])),
            limits: Some(BTreeMap::from([
                ("cpu".to_owned(), quantity(&settings.cpu_limit)),
                ("memory".to_owned(), quantity(&shape.memory_limit)),
            ])),
            ..ResourceRequirements::default()
        }),
        // `/ready` answers 200 only once the module loaded and the main
        // listener is up; `/healthz` from process start.
        readiness_probe: Some(http_probe("/ready", 2, 3)),
        // A runtime that exits (a module that fails to load) leaves its last
        // log line in the pod's status, where the manager reads the reason.
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        // A stopping pod leaves the Service while it is still serving: the
        // kubelet pauses before SIGTERM (the kubelet's own sleep, nothing run
        // in the container), then the runtime drains (`--drain-secs`).
        lifecycle: Some(Lifecycle {
            pre_stop: Some(LifecycleHandler {
                sleep: Some(SleepAction {
                    seconds: i64::try_from(PRESTOP_SLEEP_SECS).unwrap_or(i64::MAX),
                }),
                ..LifecycleHandler::default()
            }),
            ..Lifecycle::default()
        }),
        liveness_probe: Some(Probe {
            initial_delay_seconds: Some(5),
            ..http_probe("/healthz", 10, 3)
        }),
        security_context: Some(SecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(RUNTIME_UID),
            run_as_group: Some(RUNTIME_UID),
            read_only_root_filesystem: Some(true),
            allow_privilege_escalation: Some(false),
            privileged: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Capabilities::default()
            }),
            seccomp_profile: Some(seccomp()),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(vec![
            mount("code", CODE_DIR, true),
            mount("tmp", TMP_DIR, false),
            mount("deno-dir", DENO_DIR, false),
            mount("env", ENV_DIR, true),
        ]),
        ..Container::default()
    }
}

fn volumes(settings: &KubeSettings, spec: &FunctionSpec<'_>) -> Vec<Volume> {
    let empty_dir = |size: &str| EmptyDirVolumeSource {
        size_limit: Some(quantity(size)),
        ..EmptyDirVolumeSource::default()
    };
    vec![
        Volume {
            name: "code".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: code_config_map_name(spec.user, spec.function, spec.version),
                items: Some(vec![KeyToPath {
                    key: spec.module_file.into(),
                    path: spec.module_file.into(),
                    ..KeyToPath::default()
                }]),
                default_mode: Some(0o444),
                optional: Some(false),
            }),
            ..Volume::default()
        },
        Volume {
            name: "tmp".into(),
            empty_dir: Some(empty_dir(&settings.tmp_size)),
            ..Volume::default()
        },
        Volume {
            name: "deno-dir".into(),
            empty_dir: Some(empty_dir("64Mi")),
            ..Volume::default()
        },
        Volume {
            name: "env".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(env_secret_name(spec.user, spec.function)),
                items: Some(vec![KeyToPath {
                    key: ENV_FILE_KEY.into(),
                    path: ENV_FILE_KEY.into(),
                    ..KeyToPath::default()
                }]),
                default_mode: Some(ENV_FILE_MODE),
                optional: Some(false),
            }),
            ..Volume::default()
        },
    ]
}

/// Pod-template annotations: the configuration's fingerprint and the
/// settings the router enforces.
fn pod_annotations(spec: &FunctionSpec<'_>, shape: &PodShape) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            CONFIG_HASH_ANNOTATION.to_owned(),
            spec.config.fingerprint().to_owned(),
        ),
        (
            TIMEOUT_ANNOTATION.to_owned(),
            shape.timeout_secs.to_string(),
        ),
        (
            CONCURRENCY_ANNOTATION.to_owned(),
            shape.concurrency.to_string(),
        ),
    ])
}

pub fn deployment(settings: &KubeSettings, spec: &FunctionSpec<'_>) -> Deployment {
    let shape = spec.config.shape(settings);
    let mut meta = common_metadata(settings, spec);
    meta.annotations = checkov_skips(settings);
    Deployment {
        metadata: meta,
        spec: Some(DeploymentSpec {
            // No `replicas`: see the module comment.
            replicas: None,
            selector: LabelSelector {
                match_labels: Some(labels::pod_selector(spec.user, spec.function)),
                ..LabelSelector::default()
            },
            // One new pod at a time, none removed before its successor is ready.
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::Int(1)),
                    max_unavailable: Some(IntOrString::Int(0)),
                }),
            }),
            revision_history_limit: Some(2),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels::versioned(spec.user, spec.function, spec.version)),
                    annotations: Some(pod_annotations(spec, &shape)),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    automount_service_account_token: Some(false),
                    // Service env vars would list the platform's services.
                    enable_service_links: Some(false),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(RUNTIME_UID),
                        run_as_group: Some(RUNTIME_UID),
                        fs_group: Some(RUNTIME_UID),
                        seccomp_profile: Some(seccomp()),
                        ..PodSecurityContext::default()
                    }),
                    termination_grace_period_seconds: Some(shape.grace_secs),
                    containers: vec![container(settings, spec, &shape)],
                    volumes: Some(volumes(settings, spec)),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}

/// Policy checks (checkov) this Deployment knowingly does not meet, each with
/// its reason, where the policy scanner reads them.
fn checkov_skips(settings: &KubeSettings) -> Option<BTreeMap<String, String>> {
    let mut skips = vec![
        "CKV_K8S_15=the runtime image is pinned and public; pulling it again on every \
         function pod start would only slow scale-up",
    ];
    if !settings.runtime_image.contains("@sha256:") {
        skips.push(
            "CKV_K8S_43=pinned by tag; set SKIFF_K8S_RUNTIME_IMAGE to name@sha256:digest to pin a digest",
        );
    }
    Some(
        skips
            .into_iter()
            .enumerate()
            .map(|(i, s)| (format!("checkov.io/skip{}", i + 1), s.to_owned()))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::objects::VersionConfig;
    use crate::kube::objects::test_support::{configured, configured_with, longest, spec};
    use skiff_core::fnconfig::FunctionSettings;

    fn pod(d: &Deployment) -> PodSpec {
        d.spec.clone().unwrap().template.spec.unwrap()
    }

    #[test]
    fn never_sets_replicas_even_when_serialized() {
        let d = deployment(&KubeSettings::default(), &spec());
        assert_eq!(d.spec.as_ref().unwrap().replicas, None);
        let json = serde_json::to_value(&d).unwrap();
        assert!(json["spec"].get("replicas").is_none(), "{json}");
        assert_eq!(json["apiVersion"], "apps/v1");
        assert_eq!(json["kind"], "Deployment");
    }

    #[test]
    fn meets_the_restricted_pod_security_profile() {
        let p = pod(&deployment(&KubeSettings::default(), &spec()));
        assert_eq!(p.automount_service_account_token, Some(false));
        let psc = p.security_context.unwrap();
        assert_eq!(psc.run_as_non_root, Some(true));
        assert_eq!(psc.seccomp_profile.unwrap().type_, "RuntimeDefault");
        assert_eq!(p.containers.len(), 1);
        let sc = p.containers[0].security_context.clone().unwrap();
        assert_eq!(sc.run_as_non_root, Some(true));
        assert!(sc.run_as_user.unwrap() > 10000);
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(sc.privileged, Some(false));
        let caps = sc.capabilities.unwrap();
        assert_eq!(caps.drop, Some(vec!["ALL".to_owned()]));
        assert_eq!(caps.add, None);
        assert_eq!(sc.seccomp_profile.unwrap().type_, "RuntimeDefault");
        // Restricted allows these volume types: configMap, secret, emptyDir.
        for v in p.volumes.unwrap() {
            assert!(
                v.config_map.is_some() || v.empty_dir.is_some() || v.secret.is_some(),
                "{}",
                v.name
            );
        }
    }

    #[test]
    fn has_requests_limits_and_probes_on_the_health_port() {
        let c = pod(&deployment(&KubeSettings::default(), &spec())).containers[0].clone();
        let r = c.resources.unwrap();
        for map in [r.requests.unwrap(), r.limits.unwrap()] {
            assert!(map.contains_key("cpu") && map.contains_key("memory"));
        }
        let ready = c.readiness_probe.unwrap().http_get.unwrap();
        assert_eq!(ready.path.as_deref(), Some("/ready"));
        assert_eq!(ready.port, IntOrString::String("health".into()));
        let live = c.liveness_probe.unwrap().http_get.unwrap();
        assert_eq!(live.path.as_deref(), Some("/healthz"));
        let health = c
            .ports
            .unwrap()
            .into_iter()
            .find(|p| p.name.as_deref() == Some("health"));
        assert_eq!(health.map(|p| p.container_port), Some(8081));
    }

    #[test]
    fn runs_run_sh_on_the_mounted_module_with_the_kubernetes_deny_list() {
        let settings = KubeSettings::default();
        let p = pod(&deployment(&settings, &spec()));
        let c = &p.containers[0];
        assert_eq!(c.command, Some(vec![RUN_SH.to_owned()]));
        assert_eq!(
            c.args.clone().unwrap(),
            [
                "--module",
                "/code/fn.js",
                "--listen",
                "tcp:[::]:8080",
                "--health-port",
                "8081",
                "--env-file",
                "/var/run/skiff/env/env.json",
                "--drain-secs",
                "5"
            ]
        );
        assert_eq!(c.image.as_deref(), Some(settings.runtime_image.as_str()));
        let env: BTreeMap<_, _> = c
            .env
            .clone()
            .unwrap()
            .into_iter()
            .map(|e| (e.name, e.value.unwrap_or_default()))
            .collect();
        assert_eq!(env["SKIFF_CODE_DIR"], CODE_DIR);
        assert_eq!(env["SKIFF_TMP_DIR"], TMP_DIR);
        assert_eq!(
            env["SKIFF_BIND_PORTS"],
            format!("{CONTAINER_PORT},{HEALTH_PORT}")
        );
        assert_eq!(env["SKIFF_HEAP_MB"], "128");
        assert_eq!(env["SKIFF_DENY_NET"], deny_net_value());
        let mounts = c.volume_mounts.clone().unwrap();
        let code = mounts.iter().find(|m| m.name == "code").unwrap();
        assert_eq!(
            (code.mount_path.as_str(), code.read_only),
            (CODE_DIR, Some(true))
        );
        let tmp = mounts.iter().find(|m| m.name == "tmp").unwrap();
        assert_eq!(tmp.mount_path, TMP_DIR);
        let vols = p.volumes.unwrap();
        let cm = vols
            .iter()
            .find(|v| v.name == "code")
            .unwrap()
            .config_map
            .clone()
            .unwrap();
        assert_eq!(cm.name, code_config_map_name("alice", "hello", 3));
        let tmp = vols.iter().find(|v| v.name == "tmp").unwrap();
        assert!(tmp.empty_dir.as_ref().unwrap().size_limit.is_some());
    }

    #[test]
    fn labels_and_selector_find_the_pods() {
        let d = deployment(&KubeSettings::default(), &spec());
        let l = d.metadata.labels.clone().unwrap();
        assert_eq!(l["skiff.dev/user"], "alice");
        assert_eq!(l["skiff.dev/function"], "hello");
        assert_eq!(l["app.kubernetes.io/managed-by"], "skiff-manager");
        assert_eq!(l["app.kubernetes.io/name"], "skiff-function");
        let s = d.spec.unwrap();
        let selector = s.selector.match_labels.unwrap();
        let pod_labels = s.template.metadata.unwrap().labels.unwrap();
        assert!(selector.iter().all(|(k, v)| pod_labels.get(k) == Some(v)));
        assert_eq!(pod_labels["skiff.dev/user"], "alice");
        assert_eq!(pod_labels["skiff.dev/version"], "3");
    }

    #[test]
    fn a_new_version_changes_only_the_code_and_version() {
        let settings = KubeSettings::default();
        let v3 = serde_json::to_value(deployment(&settings, &spec())).unwrap();
        let v4 = serde_json::to_value(deployment(
            &settings,
            &FunctionSpec {
                version: 4,
                ..spec()
            },
        ))
        .unwrap();
        assert_eq!(v3["metadata"], v4["metadata"]);
        assert_eq!(v3["spec"]["selector"], v4["spec"]["selector"]);
        assert_ne!(v3["spec"]["template"], v4["spec"]["template"]);
        assert_eq!(
            v4["spec"]["template"]["spec"]["volumes"][0]["configMap"]["name"],
            code_config_map_name("alice", "hello", 4)
        );
    }

    #[test]
    fn the_longest_names_give_valid_object_names() {
        let (user, function) = longest();
        let s = FunctionSpec {
            user: &user,
            function: &function,
            ..spec()
        };
        let d = deployment(&KubeSettings::default(), &s);
        let name = d.metadata.name.unwrap();
        assert!(
            skiff_core::naming::is_dns_label(&name) && name.len() <= 40,
            "{name}"
        );
        let labels = d.metadata.labels.unwrap();
        assert_eq!(labels["skiff.dev/user"], user);
        assert_eq!(labels["skiff.dev/function"], function);
    }

    fn env_of(c: &Container) -> BTreeMap<String, String> {
        c.env
            .clone()
            .unwrap()
            .into_iter()
            .map(|e| (e.name, e.value.unwrap_or_default()))
            .collect()
    }

    #[test]
    fn env_values_reach_the_pod_only_as_the_mounted_secret_file() {
        let config = configured();
        let d = deployment(
            &KubeSettings::default(),
            &FunctionSpec {
                config: &config,
                ..spec()
            },
        );
        // Nowhere in the Deployment: not in env, args, annotations.
        let text = serde_json::to_string(&d).unwrap();
        assert!(!text.contains("s3cr3t-value"), "{text}");
        assert!(!text.contains("plain-env-value"), "{text}");
        let p = pod(&d);
        let c = &p.containers[0];
        assert!(c.env_from.is_none());
        assert!(c.env.iter().flatten().all(|e| e.value_from.is_none()));
        let env = env_of(c);
        assert_eq!(env["SKIFF_ENV_NAMES"], "API_KEY,GREETING");
        assert_eq!(env["SKIFF_ENV_FILE"], ENV_FILE);
        assert!(!env.contains_key("API_KEY") && !env.contains_key("GREETING"));
        let args = c.args.clone().unwrap();
        let at = args.iter().position(|a| a == "--env-file").unwrap();
        assert_eq!(args[at + 1], ENV_FILE);
        assert_eq!(ENV_FILE, format!("{ENV_DIR}/{ENV_FILE_KEY}"));

        let mount = c
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| m.name == "env")
            .unwrap();
        assert_eq!(
            (mount.mount_path.as_str(), mount.read_only),
            (ENV_DIR, Some(true))
        );
        let volume = p.volumes.unwrap().into_iter().find(|v| v.name == "env");
        let secret = volume.unwrap().secret.unwrap();
        assert_eq!(secret.secret_name, Some(env_secret_name("alice", "hello")));
        assert_eq!(secret.default_mode, Some(0o440));
        assert_eq!(secret.optional, Some(false));
        let items = secret.items.unwrap();
        assert_eq!(
            (items[0].key.as_str(), items[0].path.as_str()),
            ("env.json", "env.json")
        );
        // Group-readable by the runtime: the pod's fsGroup is its group.
        let psc = p.security_context.unwrap();
        assert_eq!(psc.fs_group, Some(RUNTIME_UID));
        assert_eq!(
            c.security_context.as_ref().unwrap().run_as_group,
            Some(RUNTIME_UID)
        );
    }

    #[test]
    fn no_env_means_no_names() {
        let c = pod(&deployment(&KubeSettings::default(), &spec())).containers[0].clone();
        assert_eq!(env_of(&c)["SKIFF_ENV_NAMES"], "");
    }

    fn annotations(d: &Deployment) -> BTreeMap<String, String> {
        d.spec
            .clone()
            .unwrap()
            .template
            .metadata
            .unwrap()
            .annotations
            .unwrap()
    }

    #[test]
    fn the_config_hash_changes_with_the_config_and_only_with_it() {
        let settings = KubeSettings::default();
        let one = configured_with(FunctionSettings::default(), b"config one");
        let same = configured_with(FunctionSettings::default(), b"config one");
        let other = configured_with(FunctionSettings::default(), b"config two");
        let hash = |config: &VersionConfig, version| {
            let d = deployment(
                &settings,
                &FunctionSpec {
                    config,
                    version,
                    ..spec()
                },
            );
            annotations(&d)[CONFIG_HASH_ANNOTATION].clone()
        };
        assert_eq!(hash(&one, 3), hash(&same, 3));
        // A new version with the same configuration (a code deploy) keeps it.
        assert_eq!(hash(&one, 3), hash(&one, 4));
        assert_ne!(hash(&one, 3), hash(&other, 3));
        assert_eq!(hash(&one, 3), one.fingerprint());
    }

    #[test]
    fn settings_become_memory_heap_grace_and_annotations() {
        let config = configured_with(
            FunctionSettings {
                memory_mb: Some(384),
                timeout_secs: Some(90),
                concurrency: Some(7),
                ..FunctionSettings::default()
            },
            b"x",
        );
        let d = deployment(
            &KubeSettings::default(),
            &FunctionSpec {
                config: &config,
                ..spec()
            },
        );
        let p = pod(&d);
        let c = &p.containers[0];
        let r = c.resources.clone().unwrap();
        assert_eq!(r.limits.unwrap()["memory"], Quantity("384Mi".into()));
        assert_eq!(r.requests.unwrap()["memory"], Quantity("384Mi".into()));
        assert_eq!(env_of(c)["SKIFF_HEAP_MB"], "192");
        assert_eq!(p.termination_grace_period_seconds, Some(105));
        let a = annotations(&d);
        assert_eq!(a[TIMEOUT_ANNOTATION], "90");
        assert_eq!(a[CONCURRENCY_ANNOTATION], "7");

        // Unset: the Kubernetes flags.
        let defaults = KubeSettings::default();
        let p = pod(&deployment(&defaults, &spec()));
        let r = p.containers[0].resources.clone().unwrap();
        assert_eq!(r.limits.unwrap()["memory"], Quantity(defaults.memory_limit));
        assert_eq!(
            r.requests.unwrap()["memory"],
            Quantity(defaults.memory_request)
        );
        assert_eq!(p.termination_grace_period_seconds, Some(45));
    }

    #[test]
    fn a_stopping_pod_pauses_then_drains_within_its_grace_period() {
        let p = pod(&deployment(&KubeSettings::default(), &spec()));
        let c = &p.containers[0];
        let pre_stop = c.lifecycle.clone().unwrap().pre_stop.unwrap();
        assert_eq!(pre_stop.sleep.map(|s| s.seconds), Some(5));
        assert_eq!(
            c.termination_message_policy.as_deref(),
            Some("FallbackToLogsOnError")
        );
        assert!(pre_stop.exec.is_none() && pre_stop.http_get.is_none());
        let args = c.args.clone().unwrap();
        let at = args.iter().position(|a| a == "--drain-secs").unwrap();
        let drain: i64 = args[at + 1].parse().unwrap();
        // Pause + drain + the request timeout fit in the grace period, which
        // the kubelet counts from the start of the pause.
        let timeout: i64 = annotations(&deployment(&KubeSettings::default(), &spec()))
            [TIMEOUT_ANNOTATION]
            .parse()
            .unwrap();
        assert!(p.termination_grace_period_seconds.unwrap() > 5 + drain + timeout);
        // Not ready after SIGTERM: the readiness probe notices within
        // its period, long before the drain ends.
        let ready = c.readiness_probe.clone().unwrap();
        assert!(i64::from(ready.period_seconds.unwrap()) < drain);
    }

    #[test]
    fn a_digest_pinned_image_needs_no_digest_skip() {
        let pinned = KubeSettings {
            runtime_image: "skiff/client-runtime@sha256:0123".into(),
            ..KubeSettings::default()
        };
        let skips = checkov_skips(&pinned).unwrap();
        assert!(skips.values().all(|v| !v.starts_with("CKV_K8S_43")));
        let tagged = checkov_skips(&KubeSettings::default()).unwrap();
        assert!(tagged.values().any(|v| v.starts_with("CKV_K8S_43")));
    }
}
