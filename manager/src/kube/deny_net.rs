//! The `--deny-net` list of a function pod (client-runtime's `{deny_net}`).

/// Addresses a function's Deno process may not connect to in Kubernetes mode.
///
/// Why it differs from the process runtime's list:
/// - The runtime binds `[::]` (service and probe ports; `0.0.0.0` where the
///   kernel has no IPv6), and Deno checks a bind address against `--deny-net`
///   too, so `0.0.0.0/8` and `[::]` must NOT be listed or the runtime exits 71. Fetching `0.0.0.0` from a pod reaches
///   only the pod's own listeners (the pod has its own network namespace and
///   one container), so leaving it open exposes nothing.
/// - Nothing here is bound by the runtime, so the pod network's private
///   ranges can be denied: they hold the platform's services and other
///   functions' pods. The NetworkPolicy enforces the same (plus IPv6 ranges,
///   which Deno's `--deny-net` cannot express: it accepts only single
///   bracketed IPv6 addresses) in the kernel; this list is defence in depth.
/// - 169.254.0.0/16 covers cloud metadata endpoints (169.254.169.254).
pub fn kubernetes_deny_net() -> &'static [&'static str] {
    &[
        "127.0.0.0/8",
        "[::1]",
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",
        "169.254.0.0/16",
    ]
}

/// The list as `SKIFF_DENY_NET` takes it.
pub fn deny_net_value() -> String {
    kubernetes_deny_net().join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_denies_the_bind_address_and_has_no_ipv6_cidr() {
        for entry in kubernetes_deny_net() {
            assert!(
                !entry.starts_with("0."),
                "{entry} would deny binding 0.0.0.0"
            );
            assert_ne!(*entry, "[::]");
            if entry.starts_with('[') {
                assert!(!entry.contains('/'), "Deno rejects IPv6 CIDRs: {entry}");
            }
            assert!(!entry.contains(',') && !entry.contains(' '));
        }
        let v = deny_net_value();
        assert!(v.contains("169.254.0.0/16") && v.contains("10.0.0.0/8"));
    }
}
