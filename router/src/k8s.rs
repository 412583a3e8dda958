//! Kubernetes mode: functions are reached through their Service's DNS name. The
//! name itself is built by the one module that owns Kubernetes naming.

pub fn service_host(namespace: &str, user: &str, name: &str) -> String {
    // Until the shared naming module lands this mirrors its scheme.
    format!("fn-{user}-{name}.{namespace}.svc")
}
