//! `SKIFF_TRUSTED_PROXIES`: the CIDRs whose forwarding headers are believed.
//!
//! Both services use this to find the real client address behind an ingress:
//! the router to decide whether a caller's `X-Forwarded-*` headers are kept, the
//! manager to key its rate limits. A peer outside the list is the client itself,
//! whatever headers it sends.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// One `addr/prefix` (or a bare address, meaning the whole address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => mask_eq(
                u128::from(u32::from(net)),
                u128::from(u32::from(ip)),
                32,
                self.prefix,
            ),
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                mask_eq(u128::from(net), u128::from(ip), 128, self.prefix)
            }
            _ => false,
        }
    }
}

fn mask_eq(a: u128, b: u128, bits: u8, prefix: u8) -> bool {
    if prefix == 0 {
        return true;
    }
    let shift = u32::from(bits - prefix);
    (a >> shift) == (b >> shift)
}

/// An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, how a dual-stack listener
/// reports IPv4 peers) is compared as the IPv4 address it carries.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid CIDR {0:?}: expected an IP address, optionally with /prefix")]
pub struct CidrError(String);

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || CidrError(s.to_owned());
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr = canonical(
            addr.trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<IpAddr>()
                .map_err(|_| err())?,
        );
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(err)?
            }
            Some(_) => return Err(err()),
        };
        Ok(Self { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// The list from `SKIFF_TRUSTED_PROXIES` (comma- or space-separated). Empty by
/// default: no forwarding header is believed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<Cidr>);

impl TrustedProxies {
    pub fn none() -> Self {
        Self::default()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|c| c.contains(ip))
    }

    /// The real client address: the peer itself unless it is a trusted proxy;
    /// then, walking `X-Forwarded-For` from the right (the entry the nearest
    /// proxy wrote), the first address that is not a trusted proxy. A header a
    /// client wrote itself sits to the left of what the trusted proxies
    /// appended, so it is never reached while an untrusted hop is found first.
    /// Unparseable entries stop the walk at the last trusted hop seen.
    pub fn client_ip<'a>(
        &self,
        peer: IpAddr,
        forwarded_for: impl IntoIterator<Item = &'a str>,
    ) -> IpAddr {
        let peer = canonical(peer);
        if !self.contains(peer) {
            return peer;
        }
        let hops: Vec<&str> = forwarded_for
            .into_iter()
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .collect();
        let mut client = peer;
        for hop in hops.iter().rev() {
            let Some(ip) = parse_hop(hop) else {
                return client;
            };
            client = ip;
            if !self.contains(ip) {
                return ip;
            }
        }
        client
    }
}

/// An `X-Forwarded-For` entry: an address, maybe with a port (`1.2.3.4:5`,
/// `[::1]:5`).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    if let Ok(sa) = hop.parse::<std::net::SocketAddr>() {
        return Some(canonical(sa.ip()));
    }
    hop.trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
        .ok()
        .map(canonical)
}

impl FromStr for TrustedProxies {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.split(|c: char| c == ',' || c.is_whitespace())
            .filter(|p| !p.is_empty())
            .map(Cidr::from_str)
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }
}

impl fmt::Display for TrustedProxies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(Cidr::to_string).collect();
        f.write_str(&parts.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_lists_and_refuses_nonsense() {
        let t: TrustedProxies = "10.0.0.0/8, 192.168.1.1 fd00::/8,[::1]".parse().unwrap();
        assert!(t.contains(ip("10.9.8.7")));
        assert!(t.contains(ip("192.168.1.1")));
        assert!(!t.contains(ip("192.168.1.2")));
        assert!(t.contains(ip("fd12::1")));
        assert!(t.contains(ip("::1")));
        assert!(t.contains(ip("::ffff:10.1.1.1")), "mapped IPv4 is IPv4");
        assert!("".parse::<TrustedProxies>().unwrap().is_empty());
        for bad in [
            "10.0.0.0/33",
            "x",
            "10.0.0.0/",
            "10.0.0.0/-1",
            "::/129",
            "1.2.3.4/8/9",
        ] {
            assert!(bad.parse::<TrustedProxies>().is_err(), "{bad}");
        }
        let all: TrustedProxies = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("203.0.113.9")));
        assert!(
            !all.contains(ip("::2")),
            "an IPv4 range holds no IPv6 address"
        );
    }

    #[test]
    fn client_ip_believes_only_trusted_hops() {
        let t: TrustedProxies = "10.0.0.0/8".parse().unwrap();
        // Direct client: its own header is ignored.
        assert_eq!(
            t.client_ip(ip("203.0.113.5"), ["1.1.1.1"]),
            ip("203.0.113.5")
        );
        // Behind the ingress: the address the ingress appended.
        assert_eq!(
            t.client_ip(ip("10.0.0.2"), ["203.0.113.5"]),
            ip("203.0.113.5")
        );
        // A client-written entry to the left is not reached.
        assert_eq!(
            t.client_ip(ip("10.0.0.2"), ["6.6.6.6, 203.0.113.5"]),
            ip("203.0.113.5")
        );
        // Two trusted hops, header split over two lines.
        assert_eq!(
            t.client_ip(ip("10.0.0.2"), ["6.6.6.6, 198.51.100.7", "10.0.0.9"]),
            ip("198.51.100.7")
        );
        // Garbage to the right of trusted hops: the last trusted hop is the client.
        assert_eq!(t.client_ip(ip("10.0.0.2"), ["evil"]), ip("10.0.0.2"));
        assert_eq!(
            t.client_ip(ip("10.0.0.2"), Vec::<&str>::new()),
            ip("10.0.0.2")
        );
        // Ports and brackets.
        assert_eq!(
            t.client_ip(ip("10.0.0.2"), ["[2001:db8::1]:443"]),
            ip("2001:db8::1")
        );
        assert_eq!(
            t.client_ip(ip("10.0.0.2"), ["203.0.113.5:1234"]),
            ip("203.0.113.5")
        );
    }
}
