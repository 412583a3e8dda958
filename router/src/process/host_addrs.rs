//! This host's own addresses, added to every instance's `--deny-net`: a service
//! bound to `0.0.0.0` (the manager and router by default) is reachable through
//! the host's public or private interface address, not only through loopback.
//! Read from /proc (no external command), IPv4 from the routing table's local
//! entries, IPv6 from the interface list.

use std::net::Ipv6Addr;

fn ipv4_locals(fib_trie: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut last: Option<&str> = None;
    for line in fib_trie.lines() {
        let t = line.trim();
        if let Some(ip) = t.strip_prefix("|-- ") {
            last = Some(ip);
        } else if t.starts_with("/32 host LOCAL")
            && let Some(ip) = last
        {
            out.push(ip.to_owned());
        }
    }
    out
}

fn ipv6_locals(if_inet6: &str) -> Vec<String> {
    if_inet6
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter_map(|hex| u128::from_str_radix(hex, 16).ok())
        .map(|n| format!("[{}]", Ipv6Addr::from(n)))
        .collect()
}

/// Every address of this host, in `--deny-net` syntax, without duplicates.
pub fn host_addresses() -> Vec<String> {
    let mut all = ipv4_locals(&std::fs::read_to_string("/proc/net/fib_trie").unwrap_or_default());
    all.extend(ipv6_locals(
        &std::fs::read_to_string("/proc/net/if_inet6").unwrap_or_default(),
    ));
    all.sort();
    all.dedup();
    all
}

/// `configured` plus this host's addresses.
pub fn with_host_addresses(configured: &str) -> String {
    let mut list: Vec<String> = configured
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    let host = host_addresses();
    if host.is_empty() {
        tracing::warn!(
            "could not read this host's addresses; only SKIFF_FUNCTION_DENY_NET applies"
        );
    }
    for a in host {
        if !list.contains(&a) {
            list.push(a);
        }
    }
    list.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_local_ipv4_and_all_ipv6() {
        let fib = "Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 0.0.0.0\n        /0 universe UNICAST\n     +-- 127.0.0.0/8 2 0 2\n           |-- 127.0.0.1\n              /32 host LOCAL\n     |-- 192.0.2.0\n        /24 link UNICAST\n     |-- 192.0.2.2\n        /32 host LOCAL\n";
        assert_eq!(ipv4_locals(fib), ["127.0.0.1", "192.0.2.2"]);
        let v6 = "fd000000000000000000000000000002 04 40 00 82     eth0\n00000000000000000000000000000001 01 80 10 80       lo\n";
        assert_eq!(ipv6_locals(v6), ["[fd00::2]", "[::1]"]);
        let joined = with_host_addresses("127.0.0.0/8, [::1]");
        assert!(joined.starts_with("127.0.0.0/8,[::1]"));
    }
}
