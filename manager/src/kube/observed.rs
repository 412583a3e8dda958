//! A function's runtime state as its pods show it (pure; the pod watch in
//! `state_watch` feeds it). `ready` needs a pod of the live version whose
//! Ready condition is true (the runtime's `/ready` answered: the module loaded
//! and the listener is up); `error` names what keeps the pods of the live
//! version from running; anything else is `pending`.

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use skiff_core::naming::LABEL_VERSION;
use skiff_core::store::RuntimePhase;

/// Container waiting reasons that do not go away by waiting: the kubelet
/// backs off restarting a crashing runtime, cannot pull the image, or cannot
/// build the container from its spec.
const STUCK_REASONS: &[&str] = &[
    "CrashLoopBackOff",
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
];

/// Longest reason kept (the store cuts at 2000 characters anyway).
const MAX_REASON: usize = 500;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub phase: RuntimePhase,
    pub error: Option<String>,
}

impl Observed {
    pub fn pending() -> Self {
        Self {
            phase: RuntimePhase::Pending,
            error: None,
        }
    }
}

fn of_version(pod: &Pod, version: i64) -> bool {
    let labelled = pod
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(LABEL_VERSION))
        .is_some_and(|v| *v == version.to_string());
    // A pod being deleted (a scale-down, a rollout) no longer counts.
    labelled && pod.metadata.deletion_timestamp.is_none()
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn one_line(s: &str) -> String {
    let line: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    match line.char_indices().nth(MAX_REASON) {
        Some((at, _)) => format!("{}…", &line[..at]),
        None => line,
    }
}

/// Why this container cannot run, if it is stuck. The runtime's own last
/// words (its load error: the container's termination message, taken from
/// its log's tail) say more than the kubelet's reason, so they come along.
fn stuck(c: &ContainerStatus) -> Option<String> {
    let waiting = c.state.as_ref()?.waiting.as_ref()?;
    let reason = waiting.reason.as_deref()?;
    if !STUCK_REASONS.contains(&reason) {
        return None;
    }
    let last_words = c
        .last_state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .map(|t| {
            let message = t.message.as_deref().map(str::trim).unwrap_or_default();
            match message {
                "" => format!("exit code {}", t.exit_code),
                m => format!("exit code {}: {m}", t.exit_code),
            }
        })
        .or_else(|| waiting.message.clone());
    Some(one_line(&match last_words {
        Some(w) => format!("{reason}: {w}"),
        None => reason.to_owned(),
    }))
}

/// The state of the function whose live version is `version`, from `pods`
/// (all of the function's pods, any version).
pub fn observe<'a>(pods: impl IntoIterator<Item = &'a Pod>, version: i64) -> Observed {
    let live: Vec<&Pod> = pods
        .into_iter()
        .filter(|p| of_version(p, version))
        .collect();
    if live.iter().any(|p| is_ready(p)) {
        return Observed {
            phase: RuntimePhase::Ready,
            error: None,
        };
    }
    let mut reasons: Vec<String> = live
        .iter()
        .filter_map(|p| p.status.as_ref())
        .flat_map(|s| s.container_statuses.iter().flatten())
        .filter_map(stuck)
        .collect();
    reasons.sort();
    reasons.dedup();
    match reasons.into_iter().next() {
        Some(reason) => Observed {
            phase: RuntimePhase::Error,
            error: Some(reason),
        },
        None => Observed::pending(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(version: i64, status: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": format!("p{version}"), "labels": {"skiff.dev/version": version.to_string()}},
            "status": status,
        }))
        .unwrap()
    }

    fn ready(version: i64) -> Pod {
        pod(
            version,
            json!({"conditions": [{"type": "Ready", "status": "True"}]}),
        )
    }

    fn crashing(version: i64, message: &str) -> Pod {
        pod(
            version,
            json!({
                "conditions": [{"type": "Ready", "status": "False"}],
                "containerStatuses": [{
                    "name": "runtime", "image": "i", "imageID": "", "ready": false, "restartCount": 3,
                    "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s"}},
                    "lastState": {"terminated": {"exitCode": 78, "message": message}},
                }],
            }),
        )
    }

    #[test]
    fn no_pod_is_pending_and_a_ready_pod_of_the_live_version_is_ready() {
        assert_eq!(observe([], 2), Observed::pending());
        // The old version's pod serves, but the live version is not up yet.
        assert_eq!(observe([&ready(1)], 2), Observed::pending());
        let both = [ready(1), ready(2)];
        assert_eq!(observe(&both, 2).phase, RuntimePhase::Ready);
        let starting = pod(2, json!({"phase": "Pending"}));
        assert_eq!(observe([&starting], 2), Observed::pending());
    }

    #[test]
    fn a_crash_loop_is_an_error_with_the_runtimes_last_words() {
        let p = crashing(
            3,
            "skiff-runtime: cannot load function module /code/fn.js: SyntaxError\n  at line 1",
        );
        let o = observe([&p], 3);
        assert_eq!(o.phase, RuntimePhase::Error);
        assert_eq!(
            o.error.as_deref(),
            Some(
                "CrashLoopBackOff: exit code 78: skiff-runtime: cannot load function module \
                 /code/fn.js: SyntaxError at line 1"
            )
        );
        // One ready pod of the version outweighs a crashing sibling.
        assert_eq!(observe([&p, &ready(3)], 3).phase, RuntimePhase::Ready);
        // A crashing pod of an older version says nothing of the live one.
        assert_eq!(observe([&p], 4), Observed::pending());
    }

    #[test]
    fn image_pull_failures_are_errors_and_a_plain_wait_is_not() {
        let pull = pod(
            1,
            json!({"containerStatuses": [{
                "name": "runtime", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image \"skiff/client-runtime:9\""}},
            }]}),
        );
        assert_eq!(
            observe([&pull], 1).error.as_deref(),
            Some("ImagePullBackOff: Back-off pulling image \"skiff/client-runtime:9\"")
        );
        let creating = pod(
            1,
            json!({"containerStatuses": [{
                "name": "runtime", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"waiting": {"reason": "ContainerCreating"}},
            }]}),
        );
        assert_eq!(observe([&creating], 1), Observed::pending());
    }

    #[test]
    fn a_terminating_pod_does_not_count_and_long_reasons_are_cut() {
        let mut going = ready(1);
        going.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ));
        assert_eq!(observe([&going], 1), Observed::pending());
        let long = crashing(1, &"x".repeat(5000));
        let error = observe([&long], 1).error.unwrap();
        assert_eq!(error.chars().count(), MAX_REASON + 1);
    }
}
