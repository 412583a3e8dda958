//! What a function is told about who called it.
//!
//! A caller whose TCP peer is not in `SKIFF_TRUSTED_PROXIES` is the client
//! itself, whatever its headers claim: every forwarding header it sent
//! (`X-Forwarded-*`, `Forwarded`, `X-Real-IP` and the other client-address
//! headers proxies and CDNs use, also when spelled with `_`, which CGI-style
//! frameworks read as `-`) is dropped, and the router writes its own
//! `X-Forwarded-For` and `X-Real-IP` (the peer), `X-Forwarded-Proto` (`http`)
//! and `X-Forwarded-Host` (the request's host).
//!
//! A trusted proxy's headers are believed: `X-Forwarded-For` (all its lines,
//! joined) gets the peer appended, `Forwarded` gets `for=<peer>` appended, its
//! `X-Forwarded-Proto`/`-Host` are kept (the router fills in missing ones), and
//! `X-Real-IP` is the real client: walking `X-Forwarded-For` from the right, the
//! first address that is not a trusted proxy. Underscore spellings are dropped
//! even then: a proxy writes the dashed names, so those came from the client.

use std::net::{IpAddr, SocketAddr};

use http::header::{FORWARDED, HOST, HeaderName, HeaderValue};
use http::{HeaderMap, Uri};
use skiff_core::trusted_proxies::TrustedProxies;

// Names as constants: a `&str` name would be parsed and hashed on every request.
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// Every name starting with this is a forwarding header (`-For`, `-Host`,
/// `-Proto`, `-Port`, `-Ssl`, `-Prefix`, `-Server`, …).
const FORWARDED_PREFIX: &[u8] = b"x-forwarded-";
/// The other names proxies and CDNs use to pass on the client or its scheme.
const FORWARDING_NAMES: [&[u8]; 14] = [
    b"forwarded",
    b"x-forwarded",
    b"forwarded-for",
    b"x-real-ip",
    b"x-client-ip",
    b"client-ip",
    b"true-client-ip",
    b"cf-connecting-ip",
    b"fastly-client-ip",
    b"x-cluster-client-ip",
    b"x-original-forwarded-for",
    b"x-originating-ip",
    b"x-url-scheme",
    b"front-end-https",
];

/// A connection's peer, worked out once per connection (the request path only
/// clones it).
#[derive(Clone, Debug)]
pub struct Peer {
    ip: IpAddr,
    /// `ip` as a header value.
    header: HeaderValue,
    /// Whether the peer is a trusted proxy whose forwarding headers are believed.
    trusted: bool,
}

impl Peer {
    pub fn new(addr: SocketAddr, trusted_proxies: &TrustedProxies) -> Self {
        // A dual-stack listener reports IPv4 peers as `::ffff:a.b.c.d`.
        let ip = addr.ip().to_canonical();
        Self {
            ip,
            header: ip_header(ip),
            trusted: trusted_proxies.contains(ip),
        }
    }

    pub fn ip(&self) -> IpAddr {
        self.ip
    }

    pub fn is_trusted(&self) -> bool {
        self.trusted
    }

    /// The real client: the peer itself, or behind a trusted proxy the address
    /// its `X-Forwarded-For` names (see `TrustedProxies::client_ip`).
    pub fn client_ip(&self, headers: &HeaderMap, trusted_proxies: &TrustedProxies) -> IpAddr {
        if !self.trusted {
            return self.ip;
        }
        // A line that is not text cannot be an address the proxy wrote: "?"
        // stops the walk there.
        let lines = headers
            .get_all(X_FORWARDED_FOR)
            .iter()
            .map(|v| v.to_str().unwrap_or("?"));
        trusted_proxies.client_ip(self.ip, lines)
    }
}

fn ip_header(ip: IpAddr) -> HeaderValue {
    // An IP address is always a valid header value; the fallback is unreachable.
    HeaderValue::from_str(&ip.to_string()).unwrap_or(HeaderValue::from_static("unknown"))
}

/// Rewrites the request's forwarding headers for the function. `uri` is the
/// request target as the caller sent it; `client` is what `Peer::client_ip` gave.
pub fn rewrite(headers: &mut HeaderMap, uri: &Uri, peer: &Peer, client: IpAddr) {
    drop_client_forwarding(headers, peer.trusted);
    let host = request_host(uri, headers);
    if peer.trusted {
        if let Some(v) = appended(headers, &X_FORWARDED_FOR, peer.header.as_bytes()) {
            headers.insert(X_FORWARDED_FOR, v);
        }
        if headers.contains_key(FORWARDED)
            && let Some(v) = appended(headers, &FORWARDED, &forwarded_node(peer.ip))
        {
            headers.insert(FORWARDED, v);
        }
        let real = if client == peer.ip {
            peer.header.clone()
        } else {
            ip_header(client)
        };
        headers.insert(X_REAL_IP, real);
        if !headers.contains_key(&X_FORWARDED_PROTO) {
            headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
        }
        if !headers.contains_key(&X_FORWARDED_HOST)
            && let Some(h) = host
        {
            headers.insert(X_FORWARDED_HOST, h);
        }
    } else {
        headers.insert(X_FORWARDED_FOR, peer.header.clone());
        headers.insert(X_REAL_IP, peer.header.clone());
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
        if let Some(h) = host {
            headers.insert(X_FORWARDED_HOST, h);
        }
    }
}

/// Removes the forwarding headers this caller may not set: all of them for an
/// untrusted peer, the underscore spellings for a trusted one. Allocates
/// nothing when there are none (the usual case).
fn drop_client_forwarding(headers: &mut HeaderMap, trusted: bool) {
    while let Some(name) = headers
        .keys()
        .find(|n| is_client_forwarding(n.as_str(), trusted))
        .cloned()
    {
        headers.remove(&name);
    }
}

fn is_client_forwarding(name: &str, trusted: bool) -> bool {
    if trusted && !name.contains('_') {
        return false;
    }
    is_forwarding_name(name.as_bytes())
}

/// Whether `name` (lower case, as hyper gives it) is a forwarding header, in the
/// dashed spelling or with any `-` written as `_`.
pub fn is_forwarding_name(name: &[u8]) -> bool {
    let prefixed = name.len() >= FORWARDED_PREFIX.len()
        && same_name(&name[..FORWARDED_PREFIX.len()], FORWARDED_PREFIX);
    prefixed || FORWARDING_NAMES.iter().any(|known| same_name(name, known))
}

fn same_name(name: &[u8], known: &[u8]) -> bool {
    name.len() == known.len()
        && name
            .iter()
            .zip(known)
            .all(|(&n, &k)| n == k || (n == b'_' && k == b'-'))
}

/// The host the caller asked for: the authority of an absolute-form target,
/// which RFC 9112 says overrides `Host` (so `Host` is set to it too), else the
/// `Host` header.
fn request_host(uri: &Uri, headers: &mut HeaderMap) -> Option<HeaderValue> {
    let Some(authority) = uri.authority() else {
        return headers.get(HOST).cloned();
    };
    // Never pass on user:password@ from the target.
    let host_port = authority
        .as_str()
        .rsplit_once('@')
        .map_or(authority.as_str(), |(_, h)| h);
    let v = HeaderValue::from_str(host_port).ok()?;
    headers.insert(HOST, v.clone());
    Some(v)
}

/// Every line of `name` joined with `, `, then `hop`; `None` if that is not a
/// valid header value (it always is: both parts were valid values).
fn appended(headers: &HeaderMap, name: &HeaderName, hop: &[u8]) -> Option<HeaderValue> {
    let mut joined = Vec::new();
    for line in headers.get_all(name) {
        let line = line.as_bytes().trim_ascii();
        if !line.is_empty() {
            joined.extend_from_slice(line);
            joined.extend_from_slice(b", ");
        }
    }
    joined.extend_from_slice(hop);
    HeaderValue::from_bytes(&joined).ok()
}

/// The peer as an RFC 7239 `for=` element (IPv6 quoted and bracketed).
fn forwarded_node(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v4) => format!("for={v4}").into_bytes(),
        IpAddr::V6(v6) => format!("for=\"[{v6}]\"").into_bytes(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(ip: &str, trusted: &str) -> (Peer, TrustedProxies) {
        let t: TrustedProxies = trusted.parse().unwrap();
        (Peer::new(SocketAddr::new(ip.parse().unwrap(), 1), &t), t)
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn all(h: &HeaderMap, name: &str) -> Vec<String> {
        h.get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    }

    const SPOOFED: [(&str, &str); 12] = [
        ("host", "router.example"),
        ("x-forwarded-for", "6.6.6.6"),
        ("x-forwarded-for", "7.7.7.7"),
        ("x-forwarded-host", "evil.example"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-port", "443"),
        ("forwarded", "for=6.6.6.6;proto=https;host=evil.example"),
        ("x-real-ip", "6.6.6.6"),
        ("x_forwarded_for", "8.8.8.8"),
        ("x-forwarded_host", "evil.example"),
        ("true-client-ip", "6.6.6.6"),
        ("x-kept", "yes"),
    ];

    #[test]
    fn an_untrusted_callers_forwarding_headers_are_replaced() {
        let (p, t) = peer("203.0.113.9", "10.0.0.0/8");
        let mut h = headers(&SPOOFED);
        let client = p.client_ip(&h, &t);
        assert_eq!(client, p.ip());
        rewrite(&mut h, &Uri::from_static("/fn/a/b"), &p, client);
        assert_eq!(all(&h, "x-forwarded-for"), ["203.0.113.9"]);
        assert_eq!(all(&h, "x-real-ip"), ["203.0.113.9"]);
        assert_eq!(all(&h, "x-forwarded-proto"), ["http"]);
        assert_eq!(all(&h, "x-forwarded-host"), ["router.example"]);
        for gone in [
            "forwarded",
            "x-forwarded-port",
            "x_forwarded_for",
            "x-forwarded_host",
            "true-client-ip",
        ] {
            assert!(h.get(gone).is_none(), "{gone} was passed on");
        }
        assert_eq!(all(&h, "x-kept"), ["yes"]);
        assert_eq!(all(&h, "host"), ["router.example"]);
    }

    #[test]
    fn a_trusted_proxys_headers_are_kept_and_appended_to() {
        let (p, t) = peer("10.0.0.2", "10.0.0.0/8");
        let mut h = headers(&SPOOFED);
        let client = p.client_ip(&h, &t);
        assert_eq!(client, "7.7.7.7".parse::<IpAddr>().unwrap());
        rewrite(&mut h, &Uri::from_static("/fn/a/b"), &p, client);
        assert_eq!(all(&h, "x-forwarded-for"), ["6.6.6.6, 7.7.7.7, 10.0.0.2"]);
        assert_eq!(all(&h, "x-real-ip"), ["7.7.7.7"]);
        assert_eq!(all(&h, "x-forwarded-proto"), ["https"]);
        assert_eq!(all(&h, "x-forwarded-host"), ["evil.example"]);
        assert_eq!(all(&h, "x-forwarded-port"), ["443"]);
        assert_eq!(
            all(&h, "forwarded"),
            ["for=6.6.6.6;proto=https;host=evil.example, for=10.0.0.2"]
        );
        assert!(h.get("x_forwarded_for").is_none());
        assert!(h.get("x-forwarded_host").is_none());
        // Nothing forwarded yet: the router's own values.
        let mut h = headers(&[("host", "h")]);
        rewrite(&mut h, &Uri::from_static("/"), &p, p.ip());
        assert_eq!(all(&h, "x-forwarded-for"), ["10.0.0.2"]);
        assert_eq!(all(&h, "x-real-ip"), ["10.0.0.2"]);
        assert_eq!(all(&h, "x-forwarded-proto"), ["http"]);
        assert_eq!(all(&h, "x-forwarded-host"), ["h"]);
        assert!(h.get("forwarded").is_none());
    }

    #[test]
    fn ipv6_and_mapped_peers() {
        let (p, t) = peer("::ffff:10.1.2.3", "10.0.0.0/8");
        assert!(p.is_trusted());
        assert_eq!(p.ip(), "10.1.2.3".parse::<IpAddr>().unwrap());
        let (p, _) = peer("2001:db8::1", "2001:db8::/32");
        let mut h = headers(&[("forwarded", "for=192.0.2.1")]);
        rewrite(&mut h, &Uri::from_static("/"), &p, p.ip());
        assert_eq!(
            all(&h, "forwarded"),
            ["for=192.0.2.1, for=\"[2001:db8::1]\""]
        );
        assert!(!t.is_empty());
    }

    #[test]
    fn an_absolute_form_target_names_the_host() {
        let (p, _) = peer("203.0.113.9", "");
        let mut h = headers(&[("host", "spoofed")]);
        let uri = Uri::from_static("http://user:pw@real.example:8000/fn/a/b");
        rewrite(&mut h, &uri, &p, p.ip());
        assert_eq!(all(&h, "host"), ["real.example:8000"]);
        assert_eq!(all(&h, "x-forwarded-host"), ["real.example:8000"]);
    }

    #[test]
    fn forwarding_names_in_every_spelling() {
        for yes in [
            "x-forwarded-for",
            "x_forwarded_for",
            "x-forwarded_for",
            "x-forwarded-anything",
            "forwarded",
            "x_real_ip",
            "cf-connecting-ip",
            "front_end_https",
        ] {
            assert!(is_forwarding_name(yes.as_bytes()), "{yes}");
        }
        for no in [
            "forwarded-x",
            "x-kept",
            "host",
            "x-forwardedfor",
            "content-length",
        ] {
            assert!(!is_forwarding_name(no.as_bytes()), "{no}");
        }
    }
}
