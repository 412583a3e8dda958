//! This host's own interface addresses. A sandbox's way out (the deploy-time
//! egress proxy) must never lead back to the host itself, whatever range the
//! address is in: on some networks the host's own address is a public or
//! documentation one that no range rule would catch.

use std::net::IpAddr;

/// Every address of every interface, as the kernel reports them now; empty
/// when they cannot be read (the caller still refuses the fixed ranges).
pub fn own_addresses() -> Vec<IpAddr> {
    #[cfg(target_os = "linux")]
    {
        let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
            return Vec::new();
        };
        let mut out: Vec<IpAddr> = addrs
            .filter_map(|a| {
                let s = a.address?;
                if let Some(v4) = s.as_sockaddr_in() {
                    Some(IpAddr::V4(v4.ip()))
                } else {
                    s.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
                }
            })
            .collect();
        out.sort();
        out.dedup();
        out
    }
    #[cfg(not(target_os = "linux"))]
    Vec::new()
}

#[cfg(test)]
mod tests {
    #[test]
    fn finds_loopback_among_this_hosts_addresses() {
        let own = super::own_addresses();
        assert!(
            own.contains(&std::net::IpAddr::from([127, 0, 0, 1])),
            "{own:?}"
        );
    }
}
