//! Failures of the Kubernetes runtime, phrased for the function's owner and
//! the operator: they end up in `GET /func/<name>` as the runtime error.

use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    /// The API answered with an error status.
    #[error("{action}: {what} ({code} {reason}): {message}{hint}")]
    Api {
        action: String,
        what: &'static str,
        code: u16,
        reason: String,
        message: String,
        hint: &'static str,
    },
    #[error("{action}: the Kubernetes API did not answer within {} s", .after.as_secs_f64())]
    Timeout { action: String, after: Duration },
    /// No usable answer: connection, TLS or decoding failure.
    #[error("{action}: the Kubernetes API call failed: {detail}")]
    Transport { action: String, detail: String },
    /// A bug: the code made a call missing from `api_calls::API_CALLS`.
    #[error("internal error: {call} is not in the manager's list of API calls")]
    NotListed { call: String },
    #[error("reading version {version} from the database: {detail}")]
    Store { version: i64, detail: String },
    #[error(
        "the stored source of version {version} is not UTF-8 text, so it cannot go into a ConfigMap"
    )]
    SourceNotText { version: i64 },
    /// The version has secrets and the manager has no `SKIFF_SECRETS_KEY`.
    #[error("version {version} has secrets, and the manager has no SKIFF_SECRETS_KEY to open them")]
    NoSecretsKey { version: i64 },
    /// A secret did not open; `detail` names it, never its value.
    #[error("opening the secrets of version {version}: {detail}")]
    Secrets { version: i64, detail: String },
}

impl KubeError {
    /// Turns a kube client error into a clear message about `action`.
    pub fn from_kube(action: String, err: kube::Error) -> Self {
        match err {
            kube::Error::Api(status) => {
                let (what, hint) = match status.code {
                    409 => (
                        "conflict",
                        "; another writer changed the object, the manager retries",
                    ),
                    422 => ("Kubernetes found the object invalid", ""),
                    403 => (
                        "forbidden",
                        "; the manager's Role (k8s/rbac.yaml) must grant this call",
                    ),
                    404 => ("not found", "; does the functions namespace exist?"),
                    500..=599 => ("the Kubernetes API failed", "; the manager retries"),
                    _ => ("refused", ""),
                };
                let reason = if status.reason.is_empty() {
                    "Failure".to_owned()
                } else {
                    status.reason.clone()
                };
                Self::Api {
                    action,
                    what,
                    code: status.code,
                    reason,
                    message: status.message.trim().to_owned(),
                    hint,
                }
            }
            other => Self::Transport {
                action,
                detail: other.to_string(),
            },
        }
    }

    /// The HTTP status the API answered with, when it answered.
    pub fn code(&self) -> Option<u16> {
        match self {
            Self::Api { code, .. } => Some(*code),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use kube::core::Status;

    use super::*;

    fn api(code: u16, reason: &str, message: &str) -> KubeError {
        let status = Status::failure(message, reason).with_code(code);
        KubeError::from_kube(
            "applying Deployment ns/x".into(),
            kube::Error::Api(status.boxed()),
        )
    }

    #[test]
    fn each_answer_reads_clearly() {
        let conflict = api(409, "Conflict", "Apply failed with 1 conflict").to_string();
        assert!(
            conflict.starts_with("applying Deployment ns/x: conflict (409 Conflict)"),
            "{conflict}"
        );
        let invalid = api(422, "Invalid", "spec.template: Invalid value").to_string();
        assert!(
            invalid.contains("invalid (422 Invalid): spec.template: Invalid value"),
            "{invalid}"
        );
        let failed = api(500, "InternalError", "etcdserver: request timed out").to_string();
        assert!(
            failed.contains("the Kubernetes API failed (500 InternalError)"),
            "{failed}"
        );
        let t = KubeError::Timeout {
            action: "applying Service ns/x".into(),
            after: Duration::from_millis(1500),
        };
        assert_eq!(
            t.to_string(),
            "applying Service ns/x: the Kubernetes API did not answer within 1.5 s"
        );
    }
}
