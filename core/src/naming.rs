//! Kubernetes names of a function's objects: THE one place they are built.
//! The manager names what it applies with these, and the router finds a
//! function's Service with [`service_host`], so the two can never disagree.
//!
//! A user name (3–32) plus a function name (1–40) does not fit a 63-character
//! DNS label, and `fn-<user>-<name>` alone is ambiguous (`a-b`/`c` and
//! `a`/`b-c` would meet), so every name is a readable, truncated prefix plus a
//! hash of the exact pair. Names are at most [`OBJECT_NAME_MAX`] characters,
//! so `<name>-v<version>` (any i64 version) and the ReplicaSet/Pod suffixes
//! Kubernetes adds all stay within 63.

use sha2::{Digest, Sha256};

/// Port of a function's Service; the router connects here.
pub const SERVICE_PORT: u16 = 80;
/// Port the client runtime listens on inside the pod.
pub const CONTAINER_PORT: u16 = 8080;
/// Port of the client runtime's probe listener (`/healthz`, `/ready`).
pub const HEALTH_PORT: u16 = 8081;
/// Seconds a function pod serves on after SIGTERM, not ready, answering with
/// `connection: close` (the runtime's `--drain-secs`). The router keeps an
/// idle pooled connection to a Service for less than this, so none outlives
/// the drain unclosed.
pub const POD_DRAIN_SECS: u64 = 5;

/// Label holding the function's owner: `kubectl get deploy -l skiff.dev/user=alice`.
pub const LABEL_USER: &str = "skiff.dev/user";
/// Label holding the function's name.
pub const LABEL_FUNCTION: &str = "skiff.dev/function";
/// Label holding the function version a ConfigMap or pod carries.
pub const LABEL_VERSION: &str = "skiff.dev/version";
/// `app.kubernetes.io/managed-by` value on everything the manager applies.
pub const MANAGED_BY: &str = "skiff-manager";

/// Longest object name this module returns (before a `-v<N>` suffix).
pub const OBJECT_NAME_MAX: usize = 40;
const PREFIX: &str = "fn-";
/// 10 hex digits = 40 bits: a collision needs about a million functions
/// sharing one truncated prefix before it gets likely.
const HASH_LEN: usize = 10;

/// Keeps only what DNS-1123 allows. Valid Skiff names pass unchanged; this
/// only guards callers that hand in unchecked strings (the hash still tells
/// such inputs apart).
fn dns_safe(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            'a'..='z' | '0'..='9' | '-' => c,
            'A'..='Z' => c.to_ascii_lowercase(),
            _ => '-',
        })
        .collect()
}

fn pair_hash(user: &str, function: &str) -> String {
    // '/' never occurs in a valid name, so the hashed string is unambiguous.
    let digest = Sha256::digest(format!("{user}/{function}").as_bytes());
    let mut hex = hex::encode(digest);
    hex.truncate(HASH_LEN);
    hex
}

/// At most `n` characters of `s`, without a trailing '-'.
fn cut(s: &str, n: usize) -> &str {
    let end = s.char_indices().nth(n).map_or(s.len(), |(i, _)| i);
    s[..end].trim_end_matches('-')
}

/// Name of the function's Deployment, Service, HorizontalPodAutoscaler and
/// NetworkPolicy: `fn-<user>-<function>-<hash>`, each part cut to fit. When
/// both are long the user keeps 12 characters, so the name still shows some
/// of each; the labels carry the full names.
pub fn object_name(user: &str, function: &str) -> String {
    let room = OBJECT_NAME_MAX - PREFIX.len() - 1 - HASH_LEN - 1;
    let (u, f) = (dns_safe(user), dns_safe(function));
    let f_part = cut(&f, room - u.len().min(12));
    let u_part = cut(&u, room - f_part.len());
    format!("{PREFIX}{u_part}-{f_part}-{}", pair_hash(user, function))
}

/// Name of the ConfigMap holding one version's source. Versions are immutable,
/// so each has its own object and a rollout is a switch of the mounted name.
pub fn code_config_map_name(user: &str, function: &str, version: i64) -> String {
    format!("{}-v{version}", object_name(user, function))
}

/// Name of the function's Secret holding its env and opened secrets (one
/// per function, re-applied for each live version, like the Deployment).
pub fn env_secret_name(user: &str, function: &str) -> String {
    format!("{}-env", object_name(user, function))
}

/// Host name of the function's Service inside the cluster:
/// `<object name>.<namespace>.svc`. Resolvable from any pod through the
/// cluster DNS search path, whatever the cluster domain is.
pub fn service_host(namespace: &str, user: &str, function: &str) -> String {
    format!("{}.{namespace}.svc", object_name(user, function))
}

/// `host:port` of the function's Service, what the router connects to.
pub fn service_authority(namespace: &str, user: &str, function: &str) -> String {
    format!("{}:{SERVICE_PORT}", service_host(namespace, user, function))
}

/// Whether `s` is a DNS-1123 label (and so also a DNS-1035 label when it
/// starts with a letter, as every name here does).
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && s.bytes().next().is_some_and(|b| b.is_ascii_lowercase())
        && !s.ends_with('-')
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn short_names_stay_readable() {
        let n = object_name("alice", "hello");
        assert!(n.starts_with("fn-alice-hello-"), "{n}");
        // The example in docs/kubernetes.md is the real name.
        assert_eq!(n, "fn-alice-hello-b2cd876d36");
        let docs = include_str!("../../docs/kubernetes.md");
        assert!(
            docs.contains(&format!("`{n}`")),
            "docs/kubernetes.md names {n}"
        );
        assert!(is_dns_label(&n));
        assert_eq!(object_name("bob", "a").len(), "fn-bob-a-".len() + HASH_LEN);
    }

    #[test]
    fn longest_names_fit_with_any_version() {
        let user = "u".repeat(32);
        let function = "f".repeat(40);
        let n = object_name(&user, &function);
        assert_eq!(n.len(), OBJECT_NAME_MAX);
        assert!(is_dns_label(&n));
        let cm = code_config_map_name(&user, &function, i64::MAX);
        assert!(is_dns_label(&env_secret_name(&user, &function)));
        assert!(cm.len() <= 63, "{cm} is {} long", cm.len());
        assert!(is_dns_label(&cm));
        // A ReplicaSet adds "-<10 chars>", a pod "-<5 chars>" on top.
        assert!(n.len() + 1 + 10 + 1 + 5 <= 63);
    }

    #[test]
    fn a_trailing_dash_is_never_left_at_the_cut() {
        // Cuts that end on a '-' inside the user or the function name.
        for (user, function) in [
            (format!("{}-x", "a".repeat(11)), "f".repeat(40)),
            ("u".repeat(32), format!("{}-b", "f".repeat(13))),
        ] {
            let n = object_name(&user, &function);
            assert!(!n.contains("--"), "{n}");
            assert!(is_dns_label(&n));
        }
    }

    #[test]
    fn long_names_keep_some_of_both_parts() {
        let n = object_name(&"u".repeat(32), &"f".repeat(40));
        assert!(
            n.starts_with(&format!("fn-{}-{}-", "u".repeat(12), "f".repeat(13))),
            "{n}"
        );
        // A short function name leaves the room to the user, and vice versa.
        assert!(
            object_name(&"u".repeat(32), "f").starts_with(&format!("fn-{}-f-", "u".repeat(24)))
        );
        assert!(
            object_name("abc", &"f".repeat(40)).starts_with(&format!("fn-abc-{}-", "f".repeat(22)))
        );
    }

    #[test]
    fn pairs_that_read_the_same_get_different_names() {
        assert_ne!(object_name("abc-d", "e"), object_name("abc", "d-e"));
        let long_user = "a".repeat(32);
        assert_ne!(
            object_name(&long_user, &format!("{}1", "x".repeat(39))),
            object_name(&long_user, &format!("{}2", "x".repeat(39)))
        );
        let names: HashSet<_> = (0..2000)
            .map(|i| object_name(&long_user, &format!("fn{i}")))
            .collect();
        assert_eq!(names.len(), 2000);
    }

    #[test]
    fn service_host_is_the_object_name_in_the_namespace() {
        assert_eq!(
            service_host("skiff-functions", "alice", "hello"),
            format!("{}.skiff-functions.svc", object_name("alice", "hello"))
        );
        assert!(service_authority("ns", "alice", "hello").ends_with(".ns.svc:80"));
    }

    #[test]
    fn unchecked_input_still_gives_a_label() {
        let n = object_name("Bad User", "x/y");
        assert!(is_dns_label(&n), "{n}");
    }
}
