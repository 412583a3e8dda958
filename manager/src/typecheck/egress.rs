//! The deploy-time egress proxy: the only network the dependency-resolution
//! step (`deno install` under the launcher) has. The step runs in an empty
//! network namespace whose one reachable endpoint, 127.0.0.1:PORT, the
//! launcher relays to this proxy's Unix socket (`--net-forward`); Deno sends
//! every download there because `HTTP_PROXY`/`HTTPS_PROXY` say so, and
//! anything that ignored them would find no route at all.
//!
//! The proxy speaks HTTP/1.1: `CONNECT host:port` (a tunnel; TLS stays end to
//! end between Deno and the registry) and absolute-form `GET http://…` (plain
//! HTTP registries). For each request it checks the destination against the
//! allowed (host, port) pairs, resolves the name itself, refuses if ANY
//! address is private, loopback, link-local, CGNAT, unspecified, multicast,
//! unique-local, reserved, or one of this host's own (unless the operator
//! trusts that host), and then connects to exactly the addresses it vetted,
//! so a second lookup cannot rebind the name. A refusal is answered `403`
//! with a one-line reason and recorded for the deploy's error message.

use std::collections::{BTreeSet, HashSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixListener, UnixStream};
use tokio::time::Instant;

/// A request head (or a response head we rewrite) larger than this is refused.
const MAX_HEAD: usize = 16 * 1024;
/// Connecting to one vetted address, and resolving a name.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The socket file's name inside the caller's directory.
pub const SOCKET_NAME: &str = "egress.sock";

/// Why an address may not be reached from the resolve step, or `None`. The
/// documentation ranges (192.0.2/24, 198.51.100/24, 203.0.113/24, 2001:db8::/32)
/// are NOT refused: on some networks (these machines, CI) public registries
/// resolve into them. This host's own addresses are checked separately
/// (`EgressPolicy`), whatever range they are in.
pub fn forbidden(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => forbidden_v6(v6),
    }
}

fn in_v4(ip: Ipv4Addr, net: [u8; 4], bits: u32) -> bool {
    let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
    u32::from(ip) & mask == u32::from(Ipv4Addr::from(net)) & mask
}

fn forbidden_v4(ip: Ipv4Addr) -> Option<&'static str> {
    const RANGES: [([u8; 4], u32, &str); 12] = [
        ([0, 0, 0, 0], 8, "unspecified (\"this network\")"),
        ([10, 0, 0, 0], 8, "private"),
        ([100, 64, 0, 0], 10, "shared (CGNAT)"),
        ([127, 0, 0, 0], 8, "loopback"),
        ([169, 254, 0, 0], 16, "link-local"),
        ([172, 16, 0, 0], 12, "private"),
        ([192, 0, 0, 0], 24, "IETF protocol-assignment"),
        ([192, 168, 0, 0], 16, "private"),
        ([198, 18, 0, 0], 15, "benchmarking"),
        ([224, 0, 0, 0], 4, "multicast"),
        ([240, 0, 0, 0], 4, "reserved"),
        ([255, 255, 255, 255], 32, "broadcast"),
    ];
    RANGES
        .iter()
        .find(|(net, bits, _)| in_v4(ip, *net, *bits))
        .map(|(_, _, why)| *why)
}

fn forbidden_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    // Forms that carry an IPv4 address: judged by that address.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return forbidden_v4(v4);
    }
    let embedded = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    if s[..6] == [0, 0, 0, 0, 0, 0] && !ip.is_unspecified() && !ip.is_loopback() {
        // IPv4-compatible (::a.b.c.d), deprecated.
        return Some("IPv4-compatible (deprecated)");
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        // NAT64: the gateway would connect to the embedded IPv4 address.
        return forbidden_v4(embedded(s[6], s[7]));
    }
    if s[0] == 0x2002 {
        // 6to4: the embedded IPv4 address is the relay's destination.
        return forbidden_v4(embedded(s[1], s[2])).map(|_| "6to4 of a forbidden IPv4");
    }
    let first = s[0];
    if ip.is_unspecified() {
        Some("unspecified")
    } else if ip.is_loopback() {
        Some("loopback")
    } else if first & 0xfe00 == 0xfc00 {
        Some("unique-local")
    } else if first & 0xffc0 == 0xfe80 {
        Some("link-local")
    } else if first & 0xffc0 == 0xfec0 {
        Some("site-local (deprecated)")
    } else if first & 0xff00 == 0xff00 {
        Some("multicast")
    } else if s[..4] == [0x100, 0, 0, 0] {
        Some("discard-only")
    } else if s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1 {
        Some("local-use NAT64")
    } else if s[0] == 0x2001 && s[1] == 0 {
        Some("Teredo tunnelling")
    } else {
        None
    }
}

/// Limits of one deploy's resolve step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressLimits {
    /// Bytes relayed in both directions over all connections.
    pub max_bytes: u64,
    /// Requests (CONNECT or GET) accepted in total.
    pub max_connections: u32,
    /// From the proxy's start; every connection ends then.
    pub max_time: Duration,
}

impl Default for EgressLimits {
    fn default() -> Self {
        Self {
            max_bytes: 512 << 20,
            max_connections: 512,
            max_time: Duration::from_secs(120),
        }
    }
}

/// Where the resolve step may go.
#[derive(Debug, Clone, Default)]
pub struct EgressPolicy {
    allowed: HashSet<(String, u16)>,
    trusted: HashSet<String>,
    own: Vec<IpAddr>,
    pub limits: EgressLimits,
}

/// Lower case, no trailing dot, no IPv6 brackets: the form names are
/// compared in.
fn normalize_host(host: &str) -> String {
    let h = host.trim().trim_end_matches('.').to_ascii_lowercase();
    match h.strip_prefix('[').and_then(|x| x.strip_suffix(']')) {
        Some(inner) => inner.to_owned(),
        None => h,
    }
}

impl EgressPolicy {
    /// Nothing allowed yet; this host's own addresses read now.
    pub fn new(limits: EgressLimits) -> Self {
        Self {
            own: skiff_sandbox::host_addresses::own_addresses(),
            limits,
            ..Self::default()
        }
    }

    pub fn allow(&mut self, host: &str, port: u16) -> &mut Self {
        self.allowed.insert((normalize_host(host), port));
        self
    }

    /// A module host (`SKIFF_IMPORT_HOSTS`): `https` on 443, or `host:port`.
    pub fn allow_host(&mut self, host: &str) -> Result<&mut Self, String> {
        let (h, port) = split_authority(host, 443)?;
        Ok(self.allow(&h, port))
    }

    /// A registry URL (`SKIFF_NPM_REGISTRY`, `SKIFF_JSR_URL`): its host and
    /// port (80/443 by scheme when not written).
    pub fn allow_url(&mut self, url: &str) -> Result<&mut Self, String> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| format!("{url:?} is not a URL"))?;
        let default = match scheme.to_ascii_lowercase().as_str() {
            "https" => 443,
            "http" => 80,
            other => return Err(format!("{url:?}: unsupported scheme {other:?}")),
        };
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        if authority.contains('@') {
            return Err(format!("{url:?}: credentials in a registry URL"));
        }
        let (h, port) = split_authority(authority, default)?;
        Ok(self.allow(&h, port))
    }

    /// `SKIFF_EGRESS_TRUST`: a host that may resolve to private or loopback
    /// addresses (an internal registry). It must still be allowed.
    pub fn trust(&mut self, host: &str) -> &mut Self {
        self.trusted.insert(normalize_host(host));
        self
    }

    pub fn is_allowed(&self, host: &str, port: u16) -> bool {
        self.allowed.contains(&(normalize_host(host), port))
    }

    /// Why `ip` may not be reached for `host`, or `None`.
    fn refuse_address(&self, host: &str, ip: IpAddr) -> Option<String> {
        if self.trusted.contains(host) {
            return None;
        }
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        if let Some(why) = forbidden(ip) {
            return Some(format!("resolves to a {why} address ({ip})"));
        }
        if self.own.contains(&ip) {
            return Some(format!("resolves to this host's own address ({ip})"));
        }
        None
    }
}

/// `host[:port]` or `[v6][:port]`.
fn split_authority(authority: &str, default_port: u16) -> Result<(String, u16), String> {
    let bad = || format!("{authority:?} is not host[:port]");
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (h, after) = rest.split_once(']').ok_or_else(bad)?;
        match after.strip_prefix(':') {
            Some(p) => (h, Some(p)),
            None if after.is_empty() => (h, None),
            None => return Err(bad()),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') => (h, Some(p)),
            Some(_) => return Err(bad()),
            None => (authority, None),
        }
    };
    let port = match port {
        Some(p) => p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(bad)?,
        None => default_port,
    };
    let host = normalize_host(host);
    if host.is_empty()
        || !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'))
    {
        return Err(bad());
    }
    Ok((host, port))
}

/// What kind of refusal: the pipeline maps `NotAllowed` and
/// `ForbiddenAddress` to `import_not_allowed`, the rest to
/// `dependency_unavailable`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalKind {
    NotAllowed,
    ForbiddenAddress,
    Unresolvable,
    Limit,
    BadRequest,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub host: String,
    pub port: u16,
    pub kind: RefusalKind,
    /// One line, e.g. "resolves to a loopback address (127.0.0.1)".
    pub reason: String,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{} {}", self.host, self.port, self.reason)
    }
}

struct Shared {
    policy: EgressPolicy,
    deadline: Instant,
    refusals: Mutex<Vec<Refusal>>,
    fetched: Mutex<BTreeSet<String>>,
    bytes: AtomicU64,
    connections: AtomicU32,
    over_bytes: AtomicBool,
}

impl Shared {
    fn refuse(&self, host: &str, port: u16, kind: RefusalKind, reason: String) -> Refusal {
        let r = Refusal {
            host: host.to_owned(),
            port,
            kind,
            reason,
        };
        if let Ok(mut v) = self.refusals.lock() {
            // A retrying client must not grow the list without bound.
            if v.len() < 256 && !v.contains(&r) {
                v.push(r.clone());
            }
        }
        r
    }

    /// Counts `n` relayed bytes; false once the deploy's budget is spent.
    fn spend(&self, n: usize) -> bool {
        let total = self.bytes.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
        total <= self.policy.limits.max_bytes
    }
}

/// One deploy's proxy, serving on `<dir>/egress.sock` until dropped.
pub struct EgressProxy {
    socket: PathBuf,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl EgressProxy {
    /// Binds `<dir>/egress.sock` (mode 0600: the caller hands it to the
    /// resolve step's uid) and starts serving.
    pub fn start(dir: &Path, policy: EgressPolicy) -> std::io::Result<Self> {
        use std::os::unix::fs::PermissionsExt;
        let socket = dir.join(SOCKET_NAME);
        match std::fs::remove_file(&socket) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let listener = UnixListener::bind(&socket)?;
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))?;
        let shared = Arc::new(Shared {
            deadline: Instant::now() + policy.limits.max_time,
            policy,
            refusals: Mutex::new(Vec::new()),
            fetched: Mutex::new(BTreeSet::new()),
            bytes: AtomicU64::new(0),
            connections: AtomicU32::new(0),
            over_bytes: AtomicBool::new(false),
        });
        let task = tokio::spawn(serve(listener, shared.clone()));
        Ok(Self {
            socket,
            shared,
            task,
        })
    }

    pub fn socket_path(&self) -> &Path {
        &self.socket
    }

    /// Every refusal so far, in order, without repeats.
    pub fn refusals(&self) -> Vec<Refusal> {
        self.shared
            .refusals
            .lock()
            .map(|v| v.clone())
            .unwrap_or_default()
    }

    /// Every `host:port` a connection was made to.
    pub fn fetched(&self) -> Vec<String> {
        self.shared
            .fetched
            .lock()
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Bytes relayed so far, both directions.
    pub fn bytes(&self) -> u64 {
        self.shared.bytes.load(Ordering::Relaxed)
    }
}

impl Drop for EgressProxy {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.socket);
    }
}

async fn serve(listener: UnixListener, shared: Arc<Shared>) {
    // Connections are tasks of this set: aborting the accept loop (dropping
    // the proxy) ends them all.
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let shared = shared.clone();
                    conns.spawn(async move {
                        let deadline = shared.deadline;
                        if tokio::time::timeout_at(deadline, handle(stream, &shared)).await.is_err() {
                            let secs = shared.policy.limits.max_time.as_secs();
                            shared.refuse(
                                "*",
                                0,
                                RefusalKind::Limit,
                                format!("over the time limit of {secs} s per deploy"),
                            );
                        }
                    });
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// A parsed request head.
struct Head {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
}

fn parse_head(raw: &[u8]) -> Option<Head> {
    let text = std::str::from_utf8(raw).ok()?;
    let mut lines = text.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let (method, target, version) = (first.next()?, first.next()?, first.next()?);
    if first.next().is_some() || !version.starts_with("HTTP/1.") {
        return None;
    }
    let mut headers = Vec::new();
    for line in lines.filter(|l| !l.is_empty()) {
        let (k, v) = line.split_once(':')?;
        if k.is_empty() || k.contains(' ') {
            return None;
        }
        headers.push((k.to_owned(), v.trim().to_owned()));
    }
    Some(Head {
        method: method.to_owned(),
        target: target.to_owned(),
        headers,
    })
}

/// Reads up to the end of a head (`\r\n\r\n`); returns the head and what
/// came after it. `None` on EOF or a head over `MAX_HEAD`.
async fn read_head<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<Option<(Vec<u8>, Vec<u8>)>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(end + 4);
            buf.truncate(end);
            return Ok(Some((buf, rest)));
        }
        if buf.len() > MAX_HEAD {
            return Ok(None);
        }
        let n = r.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn answer(stream: &mut UnixStream, status: &str, reason: &str) {
    let body = format!("{reason}\n");
    let msg = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(msg.as_bytes()).await;
    let _ = stream.shutdown().await;
}

async fn refuse(stream: &mut UnixStream, status: &str, r: Refusal) {
    answer(stream, status, &format!("skiff egress: {r}")).await;
}

async fn handle(mut client: UnixStream, shared: &Shared) {
    let Ok(Some((raw, rest))) = read_head(&mut client).await else {
        answer(
            &mut client,
            "400 Bad Request",
            "skiff egress: unreadable request",
        )
        .await;
        return;
    };
    let Some(head) = parse_head(&raw) else {
        answer(
            &mut client,
            "400 Bad Request",
            "skiff egress: malformed request",
        )
        .await;
        return;
    };
    let (host, port, path) = if head.method == "CONNECT" {
        match split_authority(&head.target, 0) {
            Ok((h, p)) if p != 0 => (h, p, None),
            _ => {
                answer(
                    &mut client,
                    "400 Bad Request",
                    "skiff egress: CONNECT needs host:port",
                )
                .await;
                return;
            }
        }
    } else if matches!(head.method.as_str(), "GET" | "HEAD") {
        let Some(rest_of_url) = head
            .target
            .get(..7)
            .filter(|s| s.eq_ignore_ascii_case("http://"))
            .map(|_| &head.target[7..])
        else {
            answer(
                &mut client,
                "400 Bad Request",
                "skiff egress: only absolute http:// URLs (use CONNECT for https)",
            )
            .await;
            return;
        };
        let split = rest_of_url.find(['/', '?']).unwrap_or(rest_of_url.len());
        let (authority, path) = rest_of_url.split_at(split);
        let path = if path.starts_with('/') {
            path.to_owned()
        } else {
            format!("/{path}")
        };
        match split_authority(authority, 80) {
            Ok((h, p)) if !authority.contains('@') => (h, p, Some(path)),
            _ => {
                answer(&mut client, "400 Bad Request", "skiff egress: bad URL").await;
                return;
            }
        }
    } else {
        answer(
            &mut client,
            "405 Method Not Allowed",
            "skiff egress: only CONNECT, GET and HEAD",
        )
        .await;
        return;
    };
    if path.is_some()
        && head.headers.iter().any(|(k, v)| {
            k.eq_ignore_ascii_case("transfer-encoding")
                || (k.eq_ignore_ascii_case("content-length") && v != "0")
        })
    {
        answer(
            &mut client,
            "400 Bad Request",
            "skiff egress: no request bodies",
        )
        .await;
        return;
    }

    let upstream = match open(shared, &host, port).await {
        Ok(u) => u,
        Err(r) => {
            let status = if r.kind == RefusalKind::Unresolvable {
                "502 Bad Gateway"
            } else {
                "403 Forbidden"
            };
            refuse(&mut client, status, r).await;
            return;
        }
    };
    match path {
        None => tunnel(client, upstream, rest, shared, &host, port).await,
        Some(path) => forward_get(client, upstream, &head, &host, port, &path, shared).await,
    }
}

/// The policy, then the lookup, then a connection to a vetted address.
async fn open(shared: &Shared, host: &str, port: u16) -> Result<TcpStream, Refusal> {
    let refuse = |kind, reason: String| shared.refuse(host, port, kind, reason);
    if !shared.policy.is_allowed(host, port) {
        return Err(refuse(
            RefusalKind::NotAllowed,
            "is not an allowed host".into(),
        ));
    }
    let n = shared.connections.fetch_add(1, Ordering::Relaxed);
    if n >= shared.policy.limits.max_connections {
        return Err(refuse(
            RefusalKind::Limit,
            format!(
                "over the limit of {} connections per deploy",
                shared.policy.limits.max_connections
            ),
        ));
    }
    if shared.over_bytes.load(Ordering::Relaxed) {
        return Err(refuse(RefusalKind::Limit, byte_limit(shared)));
    }
    let addrs: Vec<SocketAddr> =
        match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::lookup_host((host, port))).await {
            Ok(Ok(a)) => a.collect(),
            Ok(Err(e)) => {
                return Err(refuse(
                    RefusalKind::Unresolvable,
                    format!("does not resolve ({e})"),
                ));
            }
            Err(_) => return Err(refuse(RefusalKind::Unresolvable, "lookup timed out".into())),
        };
    if addrs.is_empty() {
        return Err(refuse(RefusalKind::Unresolvable, "has no address".into()));
    }
    // Any bad address refuses the name: a name that mixes a public and a
    // private address is an attack, not a registry.
    for a in &addrs {
        if let Some(why) = shared.policy.refuse_address(host, a.ip()) {
            return Err(refuse(RefusalKind::ForbiddenAddress, why));
        }
    }
    let mut last = String::from("no address answered");
    for a in &addrs {
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(a)).await {
            Ok(Ok(s)) => {
                if let Ok(mut f) = shared.fetched.lock() {
                    f.insert(format!("{host}:{port}"));
                }
                return Ok(s);
            }
            Ok(Err(e)) => last = format!("connecting to {a}: {e}"),
            Err(_) => last = format!("connecting to {a}: timed out"),
        }
    }
    Err(refuse(RefusalKind::Unresolvable, last))
}

fn byte_limit(shared: &Shared) -> String {
    format!(
        "over the limit of {} bytes downloaded per deploy",
        shared.policy.limits.max_bytes
    )
}

/// Copies `r` to `w` counting against the budget; shuts `w` down at EOF.
async fn pump<R, W>(
    mut r: R,
    mut w: W,
    shared: &Shared,
    host: &str,
    port: u16,
) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            let _ = w.shutdown().await;
            return Ok(());
        }
        if !shared.spend(n) {
            shared.over_bytes.store(true, Ordering::Relaxed);
            shared.refuse(host, port, RefusalKind::Limit, byte_limit(shared));
            return Err(std::io::Error::other("byte limit"));
        }
        w.write_all(&buf[..n]).await?;
    }
}

async fn tunnel(
    mut client: UnixStream,
    mut upstream: TcpStream,
    early: Vec<u8>,
    shared: &Shared,
    host: &str,
    port: u16,
) {
    if client
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .await
        .is_err()
    {
        return;
    }
    if !early.is_empty()
        && (!shared.spend(early.len()) || upstream.write_all(&early).await.is_err())
    {
        return;
    }
    let (cr, cw) = client.split();
    let (ur, uw) = upstream.split();
    let _ = tokio::try_join!(
        pump(cr, uw, shared, host, port),
        pump(ur, cw, shared, host, port)
    );
}

/// Hop-by-hop and proxy headers, never forwarded.
fn hop_by_hop(name: &str) -> bool {
    [
        "connection",
        "proxy-connection",
        "keep-alive",
        "proxy-authorization",
        "proxy-authenticate",
        "te",
        "trailer",
        "upgrade",
        "host",
    ]
    .iter()
    .any(|h| name.eq_ignore_ascii_case(h))
}

async fn forward_get(
    mut client: UnixStream,
    mut upstream: TcpStream,
    head: &Head,
    host: &str,
    port: u16,
    path: &str,
    shared: &Shared,
) {
    let host_header = match (host.contains(':'), port) {
        (true, 80) => format!("[{host}]"),
        (true, p) => format!("[{host}]:{p}"),
        (false, 80) => host.to_owned(),
        (false, p) => format!("{host}:{p}"),
    };
    let mut req = format!("{} {path} HTTP/1.1\r\nHost: {host_header}\r\n", head.method);
    for (k, v) in head.headers.iter().filter(|(k, _)| !hop_by_hop(k)) {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    // One request per connection: the response ends at EOF.
    req.push_str("Connection: close\r\n\r\n");
    if !shared.spend(req.len()) || upstream.write_all(req.as_bytes()).await.is_err() {
        return;
    }
    // The response head says `Connection: close` too, so the client does not
    // put this connection back in its pool.
    let Ok(Some((raw, rest))) = read_head(&mut upstream).await else {
        answer(
            &mut client,
            "502 Bad Gateway",
            "skiff egress: no response head",
        )
        .await;
        return;
    };
    let Ok(text) = String::from_utf8(raw) else {
        answer(
            &mut client,
            "502 Bad Gateway",
            "skiff egress: bad response head",
        )
        .await;
        return;
    };
    let mut out = String::with_capacity(text.len() + 32);
    for (i, line) in text.split("\r\n").enumerate() {
        let name = line.split(':').next().unwrap_or_default();
        if i > 0
            && (name.eq_ignore_ascii_case("connection") || name.eq_ignore_ascii_case("keep-alive"))
        {
            continue;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str("Connection: close\r\n\r\n");
    if !shared.spend(out.len() + rest.len()) {
        shared.over_bytes.store(true, Ordering::Relaxed);
        shared.refuse(host, port, RefusalKind::Limit, byte_limit(shared));
        return;
    }
    if client.write_all(out.as_bytes()).await.is_err() || client.write_all(&rest).await.is_err() {
        return;
    }
    let (ur, _uw) = upstream.split();
    let _ = pump(ur, &mut client, shared, host, port).await;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use tokio::net::TcpListener;

    fn v4(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn classifies_ipv4_and_ipv6_ranges() {
        for (ip, why) in [
            ("0.0.0.0", "unspecified"),
            ("0.1.2.3", "unspecified"),
            ("10.1.2.3", "private"),
            ("100.64.0.1", "CGNAT"),
            ("100.127.255.254", "CGNAT"),
            ("127.0.0.1", "loopback"),
            ("127.255.0.9", "loopback"),
            ("169.254.169.254", "link-local"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.0.0.8", "IETF"),
            ("192.168.1.1", "private"),
            ("198.18.0.1", "benchmarking"),
            ("198.19.255.1", "benchmarking"),
            ("224.0.0.251", "multicast"),
            ("239.255.255.250", "multicast"),
            ("240.0.0.1", "reserved"),
            ("255.255.255.255", "reserved"),
            ("::", "unspecified"),
            ("::1", "loopback"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:10.0.0.1", "private"),
            ("::ffff:169.254.169.254", "link-local"),
            ("::127.0.0.1", "IPv4-compatible"),
            ("64:ff9b::a00:1", "private"),
            ("2002:7f00:1::", "6to4"),
            ("fc00::1", "unique-local"),
            ("fd00::2", "unique-local"),
            ("fe80::1", "link-local"),
            ("febf::1", "link-local"),
            ("fec0::1", "site-local"),
            ("ff02::1", "multicast"),
            ("100::1", "discard"),
            ("2001::1", "Teredo"),
        ] {
            let got = forbidden(v4(ip));
            assert!(
                got.is_some_and(|g| g.contains(why)),
                "{ip}: expected {why:?}, got {got:?}"
            );
        }
        // Public and documentation addresses pass: here and in CI the
        // registries resolve into the documentation ranges.
        for ip in [
            "1.1.1.1",
            "8.8.8.8",
            "100.63.255.255",
            "100.128.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.0.1.1",
            "192.0.2.2",
            "192.169.0.1",
            "198.17.255.255",
            "198.20.0.0",
            "198.51.100.7",
            "203.0.113.10",
            "223.255.255.255",
            "2606:4700::1111",
            "2001:db8::1",
            "::ffff:203.0.113.10",
            "64:ff9b::808:808",
        ] {
            assert_eq!(forbidden(v4(ip)), None, "{ip}");
        }
    }

    #[test]
    fn this_hosts_own_addresses_are_refused_whatever_their_range() {
        let mut p = EgressPolicy::new(EgressLimits::default());
        assert!(p.own.contains(&v4("127.0.0.1")), "{:?}", p.own);
        p.own = vec![v4("192.0.2.2")];
        let why = p.refuse_address("registry.test", v4("192.0.2.2")).unwrap();
        assert!(why.contains("this host's own address"), "{why}");
        let why = p
            .refuse_address("registry.test", v4("::ffff:192.0.2.2"))
            .unwrap();
        assert!(why.contains("own address"), "{why}");
        assert_eq!(p.refuse_address("registry.test", v4("192.0.2.3")), None);
        // Trusted hosts may resolve anywhere.
        p.trust("Registry.Test.");
        assert_eq!(p.refuse_address("registry.test", v4("192.0.2.2")), None);
        assert_eq!(p.refuse_address("registry.test", v4("10.0.0.1")), None);
    }

    #[test]
    fn policies_are_built_from_urls_and_hosts() {
        let mut p = EgressPolicy::default();
        p.allow_url("http://LOCALHOST:4873/").unwrap();
        p.allow_url("https://npm.example.test/some/path").unwrap();
        p.allow_url("http://[::1]:8080").unwrap();
        p.allow_host("deno.example.test").unwrap();
        p.allow_host("mods.example.test:8443").unwrap();
        for (h, port) in [
            ("localhost", 4873),
            ("npm.example.test", 443),
            ("::1", 8080),
            ("[::1]", 8080),
            ("deno.example.test", 443),
            ("DENO.example.test.", 443),
            ("mods.example.test", 8443),
        ] {
            assert!(p.is_allowed(h, port), "{h}:{port}");
        }
        for (h, port) in [
            ("localhost", 80),
            ("deno.example.test", 80),
            ("mods.example.test", 443),
            ("other.test", 443),
        ] {
            assert!(!p.is_allowed(h, port), "{h}:{port}");
        }
        for bad in [
            "ftp://x.test/",
            "x.test",
            "http://u:p@x.test/",
            "http://x.test:0/",
            "http://x.test:99999/",
        ] {
            assert!(p.allow_url(bad).is_err(), "{bad}");
        }
        assert!(p.allow_host("a b").is_err());
    }

    /// A loopback HTTP server: `/mod.ts` a small module, `/big` 1 MiB.
    async fn origin() -> u16 {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = l.accept().await else {
                    continue;
                };
                tokio::spawn(async move {
                    let Ok(Some((head, _))) = read_head(&mut s).await else {
                        return;
                    };
                    let head = String::from_utf8_lossy(&head).into_owned();
                    let body: Vec<u8> = if head.starts_with("GET /big ") {
                        vec![b'x'; 1 << 20]
                    } else if head.starts_with("GET /mod.ts ") {
                        b"export const answer = 42;\n".to_vec()
                    } else {
                        let _ = s
                            .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                            .await;
                        return;
                    };
                    let h = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/typescript\r\nContent-Length: {}\r\nConnection: keep-alive\r\n\r\n",
                        body.len()
                    );
                    let _ = s.write_all(h.as_bytes()).await;
                    let _ = s.write_all(&body).await;
                });
            }
        });
        port
    }

    fn proxy(policy: EgressPolicy) -> (tempfile::TempDir, EgressProxy) {
        let dir = tempfile::tempdir().unwrap();
        let p = EgressProxy::start(dir.path(), policy).unwrap();
        (dir, p)
    }

    /// Sends `request` to the proxy and reads until it closes.
    async fn ask(p: &EgressProxy, request: &str) -> String {
        let mut s = UnixStream::connect(p.socket_path()).await.unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out).await;
        String::from_utf8_lossy(&out).into_owned()
    }

    /// CONNECT, then one GET through the tunnel.
    async fn through_tunnel(p: &EgressProxy, authority: &str, path: &str) -> String {
        ask(
            p,
            &format!(
                "CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n\
                 GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
            ),
        )
        .await
    }

    fn localhost_policy(port: u16, trusted: bool) -> EgressPolicy {
        let mut p = EgressPolicy::new(EgressLimits::default());
        p.allow("localhost", port);
        p.allow("127.0.0.1", port);
        if trusted {
            p.trust("localhost");
        }
        p
    }

    #[tokio::test]
    async fn an_allowed_trusted_host_is_reached_through_connect_and_get() {
        let port = origin().await;
        let (_d, p) = proxy(localhost_policy(port, true));
        let out = through_tunnel(&p, &format!("localhost:{port}"), "/mod.ts").await;
        assert!(
            out.starts_with("HTTP/1.1 200 Connection established\r\n\r\nHTTP/1.1 200 OK"),
            "{out}"
        );
        assert!(out.ends_with("export const answer = 42;\n"), "{out}");

        let out = ask(
            &p,
            &format!("GET http://localhost:{port}/mod.ts HTTP/1.1\r\nHost: localhost:{port}\r\nProxy-Connection: keep-alive\r\n\r\n"),
        )
        .await;
        assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
        assert!(out.contains("\r\nConnection: close\r\n"), "{out}");
        assert!(!out.contains("keep-alive"), "{out}");
        assert!(out.ends_with("export const answer = 42;\n"), "{out}");
        assert!(p.refusals().is_empty(), "{:?}", p.refusals());
        assert_eq!(p.fetched(), [format!("localhost:{port}")]);
    }

    #[tokio::test]
    async fn a_host_not_allowed_is_refused_and_recorded() {
        let port = origin().await;
        let (_d, p) = proxy(localhost_policy(port, true));
        for request in [
            format!(
                "CONNECT localhost:{} HTTP/1.1\r\n\r\n",
                port.wrapping_add(1)
            ),
            "CONNECT metadata.example.test:443 HTTP/1.1\r\n\r\n".to_owned(),
            "GET http://metadata.example.test/latest HTTP/1.1\r\n\r\n".to_owned(),
        ] {
            let out = ask(&p, &request).await;
            assert!(out.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{out}");
            assert!(out.contains("is not an allowed host"), "{out}");
        }
        let r = p.refusals();
        assert_eq!(r.len(), 3, "{r:?}");
        assert_eq!(r[1].host, "metadata.example.test");
        assert_eq!(r[1].port, 443);
        assert_eq!(r[1].kind, RefusalKind::NotAllowed);
        assert_eq!(r[2].port, 80);
        assert!(p.fetched().is_empty());
    }

    #[tokio::test]
    async fn an_allowed_name_resolving_to_loopback_is_refused_unless_trusted() {
        let port = origin().await;
        let (_d, p) = proxy(localhost_policy(port, false));
        let out = through_tunnel(&p, &format!("localhost:{port}"), "/mod.ts").await;
        assert!(out.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{out}");
        assert!(out.contains("resolves to a loopback address"), "{out}");
        let out = ask(
            &p,
            &format!("GET http://localhost:{port}/mod.ts HTTP/1.1\r\n\r\n"),
        )
        .await;
        assert!(out.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{out}");
        let r = p.refusals();
        assert_eq!(r[0].host, "localhost");
        assert_eq!(r[0].kind, RefusalKind::ForbiddenAddress);
        assert!(
            r[0].reason.starts_with("resolves to a loopback address"),
            "{r:?}"
        );
        assert!(p.fetched().is_empty());
    }

    #[tokio::test]
    async fn literal_private_addresses_are_refused_in_every_spelling() {
        let port = origin().await;
        let mut policy = EgressPolicy::new(EgressLimits::default());
        for h in [
            "127.0.0.1",
            "::ffff:127.0.0.1",
            "::1",
            "10.0.0.1",
            "169.254.169.254",
            "0.0.0.0",
            "2130706433",
            "127.1",
        ] {
            policy.allow(h, port);
        }
        let (_d, p) = proxy(policy);
        for authority in [
            format!("127.0.0.1:{port}"),
            format!("[::ffff:127.0.0.1]:{port}"),
            format!("[::1]:{port}"),
            format!("10.0.0.1:{port}"),
            format!("169.254.169.254:{port}"),
            format!("0.0.0.0:{port}"),
            format!("2130706433:{port}"),
            format!("127.1:{port}"),
        ] {
            let out = through_tunnel(&p, &authority, "/mod.ts").await;
            assert!(
                out.starts_with("HTTP/1.1 403 Forbidden\r\n"),
                "{authority}: {out}"
            );
            assert!(out.contains("resolves to a"), "{authority}: {out}");
            assert!(!out.contains("answer"), "{authority}: {out}");
        }
        assert!(p.fetched().is_empty(), "{:?}", p.fetched());
    }

    #[tokio::test]
    async fn the_byte_limit_cuts_a_large_download() {
        let port = origin().await;
        let mut policy = localhost_policy(port, true);
        policy.limits.max_bytes = 64 * 1024;
        let (_d, p) = proxy(policy);
        let out = through_tunnel(&p, &format!("localhost:{port}"), "/big").await;
        assert!(
            out.contains("HTTP/1.1 200 OK"),
            "{}",
            &out[..out.len().min(200)]
        );
        assert!(
            out.len() < 100 * 1024,
            "got {} bytes past a 64 KiB limit",
            out.len()
        );
        let r = p.refusals();
        assert!(
            r.iter()
                .any(|r| r.kind == RefusalKind::Limit && r.reason.contains("65536 bytes")),
            "{r:?}"
        );
        // Later requests of the deploy are refused outright.
        let out = through_tunnel(&p, &format!("localhost:{port}"), "/mod.ts").await;
        assert!(out.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{out}");
    }

    #[tokio::test]
    async fn the_connection_limit_holds() {
        let port = origin().await;
        let mut policy = localhost_policy(port, true);
        policy.limits.max_connections = 2;
        let (_d, p) = proxy(policy);
        for _ in 0..2 {
            let out = through_tunnel(&p, &format!("localhost:{port}"), "/mod.ts").await;
            assert!(out.ends_with("answer = 42;\n"), "{out}");
        }
        let out = through_tunnel(&p, &format!("localhost:{port}"), "/mod.ts").await;
        assert!(out.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{out}");
        assert!(out.contains("connections"), "{out}");
    }

    #[tokio::test]
    async fn garbage_and_other_methods_get_clear_errors() {
        let (_d, p) = proxy(EgressPolicy::new(EgressLimits::default()));
        let out = ask(&p, "hello\r\n\r\n").await;
        assert!(out.starts_with("HTTP/1.1 400 "), "{out}");
        let out = ask(&p, "POST http://x.test/ HTTP/1.1\r\n\r\n").await;
        assert!(out.starts_with("HTTP/1.1 405 "), "{out}");
        let out = ask(&p, "GET https://x.test/ HTTP/1.1\r\n\r\n").await;
        assert!(out.starts_with("HTTP/1.1 400 "), "{out}");
        let out = ask(&p, "GET http://u@x.test/ HTTP/1.1\r\n\r\n").await;
        assert!(out.starts_with("HTTP/1.1 400 "), "{out}");
        let out = ask(&p, "CONNECT x.test HTTP/1.1\r\n\r\n").await;
        assert!(out.starts_with("HTTP/1.1 400 "), "{out}");
    }

    /// `deno cache` of a module importing `http://localhost:PORT/mod.ts`,
    /// run as the resolve step runs: the real launcher, an empty network
    /// namespace whose only way out is the forwarded port, the proxy behind it.
    async fn resolve_under_the_launcher(
        base: &Path,
        case: &str,
        policy: EgressPolicy,
        import: &str,
    ) -> (std::process::Output, EgressProxy) {
        use super::super::sandbox::CheckerSandbox;
        use super::super::settings::CheckerSettings;
        const PORT: u16 = 3128;
        let deno = skiff_core::deno::locate(None)
            .await
            .expect("Deno for the tests");
        let sandbox = CheckerSandbox::detect(&CheckerSettings::default())
            .expect("the sandbox launcher (cargo build -p skiff-sandbox)");
        let deno = sandbox.runnable(&deno, base).unwrap();
        let scratch = base.join(format!("{case}-scratch"));
        let deno_dir = base.join(format!("{case}-deno"));
        let egress_dir = base.join(format!("{case}-egress"));
        std::fs::create_dir_all(&scratch).unwrap();
        std::fs::create_dir_all(&egress_dir).unwrap();
        std::fs::write(
            scratch.join("main.ts"),
            format!("import {{ answer }} from \"{import}\";\nconsole.log(answer);\n"),
        )
        .unwrap();
        sandbox.own_scratch(&scratch).unwrap();
        sandbox.open_path_to(&scratch).unwrap();
        sandbox.prepare_deno_dir(&deno_dir).unwrap();
        let proxy = EgressProxy::start(&egress_dir, policy).unwrap();
        sandbox.own_egress_socket(proxy.socket_path()).unwrap();
        let launch = sandbox
            .resolve_policy(
                &scratch,
                &deno_dir,
                &deno,
                Vec::new(),
                PORT,
                proxy.socket_path(),
                None,
            )
            .unwrap();
        let proxy_url = format!("http://127.0.0.1:{PORT}");
        // Deno's own import gate, as the pipeline would pass it; the proxy
        // decides independently.
        let authority = import.split('/').nth(2).unwrap_or_default();
        let allow_import = format!("--allow-import={authority}");
        let out = tokio::process::Command::new(&sandbox.launcher)
            .args(launch.to_args(&deno, ["cache", "--no-config", &allow_import, "main.ts"]))
            .current_dir(&scratch)
            .env_clear()
            .env("DENO_DIR", &deno_dir)
            .env("HOME", &scratch)
            .env("NO_COLOR", "1")
            .env("DENO_NO_UPDATE_CHECK", "1")
            .env("HTTP_PROXY", &proxy_url)
            .env("HTTPS_PROXY", &proxy_url)
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(Duration::from_secs(120), out)
            .await
            .expect("deno cache finished")
            .unwrap();
        (out, proxy)
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn deno_under_the_launcher_resolves_only_through_the_proxy() {
        let base = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        let port = origin().await;
        let import = format!("http://localhost:{port}/mod.ts");

        let (out, proxy) = resolve_under_the_launcher(
            base.path(),
            "allowed",
            localhost_policy(port, true),
            &import,
        )
        .await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert_eq!(proxy.fetched(), [format!("localhost:{port}")]);
        assert!(proxy.refusals().is_empty(), "{:?}", proxy.refusals());

        // The host not allowed: the download fails, and the refusal names it.
        let mut other = EgressPolicy::new(EgressLimits::default());
        other.allow("registry.example.test", 443);
        let (out, proxy) = resolve_under_the_launcher(base.path(), "refused", other, &import).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{stderr}");
        assert!(stderr.contains(&import), "{stderr}");
        let r = proxy.refusals();
        assert!(
            r.iter().any(|r| r.host == "localhost"
                && r.port == port
                && r.kind == RefusalKind::NotAllowed),
            "{r:?}"
        );
        assert!(proxy.fetched().is_empty());
    }
}
