//! Rate limits of the account endpoints (`/login`, `/register`), keyed on the
//! real client address.
//!
//! In memory, per manager process: with several manager replicas each one
//! counts on its own (documented in README). Every table is bounded: it holds
//! at most `SKIFF_RATE_LIMIT_MAX_KEYS` keys and, when full, forgets the key
//! whose window started first, so a flood of distinct addresses or usernames
//! costs a fixed amount of memory and never locks anyone out.
//!
//! The login policy (see SECURITY.md):
//! - per client address, all usernames together (`SKIFF_LOGIN_LIMIT_PER_ADDR`):
//!   bounds the password hashing one address can cause;
//! - per (username, client address) pair (`SKIFF_LOGIN_LIMIT_PER_USER_ADDR`):
//!   one address guessing one user's password; it cannot lock the user out
//!   anywhere else;
//! - per username from all addresses (`SKIFF_LOGIN_LIMIT_PER_USER`), a higher
//!   ceiling against guessing from many addresses; a pair that logged in
//!   successfully within `KNOWN_PAIR_TTL` is not held to it, so an attacker
//!   with many addresses can keep a user from logging in only from addresses
//!   the user has not recently used.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use actix_web::http::header::{HeaderMap, HeaderName};
use skiff_core::names::UserName;
use skiff_core::trusted_proxies::TrustedProxies;

use crate::config::ManagerConfig;

/// How long a successful login keeps its (username, address) pair exempt
/// from the per-username ceiling.
pub const KNOWN_PAIR_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// The unit a per-address limit counts: one IPv4 address, or one IPv6 /64
/// (a single host usually holds a whole /64 and can pick any address in it,
/// so counting single IPv6 addresses would give it 2^64 budgets).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientKey {
    V4(Ipv4Addr),
    V6Net64(u64),
    /// No peer address (not a TCP connection): all such requests share one budget.
    Unknown,
}

impl ClientKey {
    pub fn of(ip: Option<IpAddr>) -> Self {
        match ip {
            None => Self::Unknown,
            Some(IpAddr::V4(v4)) => Self::V4(v4),
            Some(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
                Some(v4) => Self::V4(v4),
                None => Self::V6Net64((u128::from(v6) >> 64) as u64),
            },
        }
    }
}

impl fmt::Display for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::V4(v4) => write!(f, "{v4}"),
            Self::V6Net64(net) => {
                let addr = std::net::Ipv6Addr::from(u128::from(*net) << 64);
                write!(f, "{addr}/64")
            }
            Self::Unknown => f.write_str("unknown"),
        }
    }
}

/// The real client address of a request: the TCP peer, or, when the peer is a
/// trusted proxy, the address the proxies recorded in `X-Forwarded-For`.
/// A header value that is not visible ASCII counts as an unparseable hop, which
/// stops the walk at the last trusted hop (never skipped: that would let a bad
/// value hide what the proxy appended after it).
pub fn client_ip(
    peer: Option<SocketAddr>,
    headers: &HeaderMap,
    trusted: &TrustedProxies,
) -> Option<IpAddr> {
    let peer = peer?.ip();
    if !trusted.contains(peer) {
        return Some(trusted.client_ip(peer, std::iter::empty()));
    }
    let forwarded = headers
        .get_all(X_FORWARDED_FOR)
        .map(|v| v.to_str().unwrap_or("?"));
    Some(trusted.client_ip(peer, forwarded))
}

/// Fixed windows, one per key, in a table of bounded size. Keys are kept in
/// the order their window started, so expired keys and (when full) the oldest
/// key are found at the front in constant time.
struct Windows<K, V> {
    window: Duration,
    max_keys: usize,
    slots: HashMap<K, (Instant, V)>,
    /// Window starts, oldest first. An entry whose instant no longer matches
    /// its slot is stale (the key was restarted) and is skipped.
    order: VecDeque<(Instant, K)>,
}

impl<K: Hash + Eq + Clone, V> Windows<K, V> {
    fn new(window: Duration, max_keys: usize) -> Self {
        Self {
            window,
            max_keys: max_keys.max(1),
            slots: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// Drops expired windows and stale order entries from the front.
    fn expire(&mut self, now: Instant) {
        while let Some((start, key)) = self.order.front() {
            match self.slots.get(key) {
                Some((s, _)) if s == start => {
                    if now.duration_since(*start) < self.window {
                        return;
                    }
                    self.slots.remove(key);
                }
                _ => {}
            }
            self.order.pop_front();
        }
    }

    /// Forgets the key whose window started first.
    fn evict_oldest(&mut self) {
        while let Some((start, key)) = self.order.pop_front() {
            if self.slots.get(&key).is_some_and(|(s, _)| *s == start) {
                self.slots.remove(&key);
                return;
            }
        }
    }

    /// The live slot of `key`, started now with `init` when there is none.
    fn slot(&mut self, key: &K, now: Instant, init: impl FnOnce() -> V) -> &mut (Instant, V) {
        self.expire(now);
        if !self.slots.contains_key(key) {
            if self.slots.len() >= self.max_keys {
                self.evict_oldest();
            }
            self.order.push_back((now, key.clone()));
        }
        self.slots
            .entry(key.clone())
            .or_insert_with(|| (now, init()))
    }

    /// Starts a new window for `key`, replacing its old one.
    fn restart(&mut self, key: K, now: Instant, value: V) {
        self.expire(now);
        if !self.slots.contains_key(&key) && self.slots.len() >= self.max_keys {
            self.evict_oldest();
        }
        self.slots.insert(key.clone(), (now, value));
        self.order.push_back((now, key));
        self.compact_if_stale();
    }

    /// Restarts leave stale order entries behind; rebuilding the order when
    /// they outnumber the live keys keeps it bounded by twice the table size.
    fn compact_if_stale(&mut self) {
        if self.order.len() <= 2 * self.max_keys {
            return;
        }
        let slots = &self.slots;
        self.order
            .retain(|(start, key)| slots.get(key).is_some_and(|(s, _)| s == start));
    }

    fn live(&mut self, key: &K, now: Instant) -> Option<&mut (Instant, V)> {
        self.expire(now);
        self.slots.get_mut(key)
    }

    fn len(&self) -> usize {
        self.slots.len()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        // A panic while counting leaves the counts usable.
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// At most `limit` hits per key per window.
pub struct Limiter<K> {
    limit: u32,
    windows: Mutex<Windows<K, u32>>,
}

impl<K: Hash + Eq + Clone> Limiter<K> {
    pub fn new(limit: u32, window: Duration, max_keys: usize) -> Self {
        Self {
            limit,
            windows: Mutex::new(Windows::new(window, max_keys)),
        }
    }

    /// Counts one attempt for `key`. `Err(seconds)` when the limit is reached:
    /// how long until the window ends.
    pub fn hit(&self, key: &K) -> Result<(), u64> {
        let now = Instant::now();
        let mut windows = lock(&self.windows);
        let window = windows.window;
        let (start, count) = windows.slot(key, now, || 0);
        if *count >= self.limit {
            let left = window.saturating_sub(now.duration_since(*start));
            return Err(left.as_secs().max(1));
        }
        *count += 1;
        Ok(())
    }

    /// Zeroes `key`'s count (its window keeps its start, so the table's order holds).
    pub fn forgive(&self, key: &K) {
        let now = Instant::now();
        if let Some((_, count)) = lock(&self.windows).live(key, now) {
            *count = 0;
        }
    }

    /// Keys held now.
    pub fn len(&self) -> usize {
        lock(&self.windows).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Keys remembered for a while after they were last marked.
pub struct RecentSet<K> {
    windows: Mutex<Windows<K, ()>>,
}

impl<K: Hash + Eq + Clone> RecentSet<K> {
    pub fn new(ttl: Duration, max_keys: usize) -> Self {
        Self {
            windows: Mutex::new(Windows::new(ttl, max_keys)),
        }
    }

    pub fn mark(&self, key: K) {
        lock(&self.windows).restart(key, Instant::now(), ());
    }

    pub fn contains(&self, key: &K) -> bool {
        lock(&self.windows).live(key, Instant::now()).is_some()
    }

    pub fn len(&self) -> usize {
        lock(&self.windows).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A username as a limiter key: only valid names are counted per username
/// (no account can have another), so junk names cannot fill those tables.
type UserKey = Box<str>;

/// Every limit of the account endpoints.
pub struct AccountLimits {
    login_by_addr: Limiter<ClientKey>,
    login_by_user_addr: Limiter<(UserKey, ClientKey)>,
    login_by_user: Limiter<UserKey>,
    known_pairs: RecentSet<(UserKey, ClientKey)>,
    register_by_addr: Limiter<ClientKey>,
}

/// How many keys each table holds, for tests and diagnostics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableSizes {
    pub login_by_addr: usize,
    pub login_by_user_addr: usize,
    pub login_by_user: usize,
    pub known_pairs: usize,
    pub register_by_addr: usize,
}

impl TableSizes {
    pub fn largest(&self) -> usize {
        [
            self.login_by_addr,
            self.login_by_user_addr,
            self.login_by_user,
            self.known_pairs,
            self.register_by_addr,
        ]
        .into_iter()
        .max()
        .unwrap_or(0)
    }
}

impl AccountLimits {
    pub fn new(config: &ManagerConfig) -> Self {
        let login_window = Duration::from_secs(config.login_window_secs);
        let keys = config.rate_limit_max_keys;
        Self {
            login_by_addr: Limiter::new(config.login_limit_per_addr, login_window, keys),
            login_by_user_addr: Limiter::new(config.login_limit_per_user_addr, login_window, keys),
            login_by_user: Limiter::new(config.login_limit_per_user, login_window, keys),
            known_pairs: RecentSet::new(KNOWN_PAIR_TTL, keys),
            register_by_addr: Limiter::new(
                config.register_limit_per_addr,
                Duration::from_secs(config.register_window_secs),
                keys,
            ),
        }
    }

    /// Counts one login attempt; `Err(seconds)` when one of the limits refuses it.
    pub fn login_attempt(&self, username: &str, client: ClientKey) -> Result<(), u64> {
        self.login_by_addr.hit(&client)?;
        let Some(user) = user_key(username) else {
            return Ok(());
        };
        let pair = (user.clone(), client);
        self.login_by_user_addr.hit(&pair)?;
        if self.known_pairs.contains(&pair) {
            return Ok(());
        }
        self.login_by_user.hit(&user)
    }

    /// After a correct password: the pair's failed attempts are forgiven and the
    /// pair is exempt from the per-username ceiling for `KNOWN_PAIR_TTL`.
    pub fn login_succeeded(&self, username: &str, client: ClientKey) {
        if let Some(user) = user_key(username) {
            let pair = (user, client);
            self.login_by_user_addr.forgive(&pair);
            self.known_pairs.mark(pair);
        }
    }

    /// Counts one registration attempt from `client`.
    pub fn register_attempt(&self, client: ClientKey) -> Result<(), u64> {
        self.register_by_addr.hit(&client)
    }

    pub fn sizes(&self) -> TableSizes {
        TableSizes {
            login_by_addr: self.login_by_addr.len(),
            login_by_user_addr: self.login_by_user_addr.len(),
            login_by_user: self.login_by_user.len(),
            known_pairs: self.known_pairs.len(),
            register_by_addr: self.register_by_addr.len(),
        }
    }
}

fn user_key(username: &str) -> Option<UserKey> {
    UserName::parse(username).ok().map(|_| username.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_per_key_and_reopens_after_the_window() {
        let l = Limiter::new(2, Duration::from_millis(50), 100);
        assert!(l.hit(&"a").is_ok());
        assert!(l.hit(&"a").is_ok());
        assert!(l.hit(&"a").is_err());
        assert!(l.hit(&"b").is_ok(), "other keys are independent");
        std::thread::sleep(Duration::from_millis(60));
        assert!(l.hit(&"a").is_ok());
        l.forgive(&"a");
        assert!(l.hit(&"a").is_ok());
        assert!(l.hit(&"a").is_ok());
        assert!(l.hit(&"a").is_err());
    }

    #[test]
    fn a_flood_of_distinct_keys_stays_within_the_bound() {
        let l = Limiter::new(1, Duration::from_secs(3600), 1000);
        for i in 0..200_000u32 {
            let _ = l.hit(&ClientKey::V4(Ipv4Addr::from(i)));
        }
        assert_eq!(l.len(), 1000);
        let w = lock(&l.windows);
        assert_eq!(w.order.len(), 1000);
        // The newest keys are the ones kept: the flood evicts itself first.
        assert!(
            w.slots
                .contains_key(&ClientKey::V4(Ipv4Addr::from(199_999)))
        );
        assert!(!w.slots.contains_key(&ClientKey::V4(Ipv4Addr::from(0))));
    }

    #[test]
    fn restarting_keys_keeps_the_order_bounded() {
        let s = RecentSet::new(Duration::from_secs(3600), 10);
        for _ in 0..10_000 {
            for k in 0..5u32 {
                s.mark(k);
            }
        }
        assert_eq!(s.len(), 5);
        assert!(lock(&s.windows).order.len() <= 20);
        for k in 0..5u32 {
            assert!(s.contains(&k));
        }
        assert!(!s.contains(&5));
    }

    #[test]
    fn expired_keys_leave_the_table() {
        let l = Limiter::new(5, Duration::from_millis(20), 1000);
        for i in 0..500u32 {
            let _ = l.hit(&i);
        }
        std::thread::sleep(Duration::from_millis(30));
        let _ = l.hit(&9999);
        assert_eq!(l.len(), 1);
    }

    #[test]
    fn ipv6_clients_count_per_64_and_mapped_ipv4_as_ipv4() {
        let key = |s: &str| ClientKey::of(Some(s.parse().unwrap()));
        assert_eq!(key("2001:db8:1:2::1"), key("2001:db8:1:2:ffff:1:2:3"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("::ffff:192.0.2.7"), key("192.0.2.7"));
        assert_ne!(key("192.0.2.7"), key("192.0.2.8"));
        assert_eq!(key("2001:db8:1:2::9").to_string(), "2001:db8:1:2::/64");
        assert_eq!(ClientKey::of(None).to_string(), "unknown");
    }

    #[test]
    fn forwarded_for_is_read_only_from_trusted_peers() {
        let trusted: TrustedProxies = "10.0.0.0/8".parse().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(
            X_FORWARDED_FOR,
            actix_web::http::header::HeaderValue::from_static("198.51.100.4"),
        );
        let from = |peer: &str| client_ip(Some(peer.parse().unwrap()), &headers, &trusted);
        assert_eq!(from("10.1.1.1:5000"), Some("198.51.100.4".parse().unwrap()));
        assert_eq!(
            from("203.0.113.9:5000"),
            Some("203.0.113.9".parse().unwrap())
        );
        // Not visible ASCII: the walk stops at the proxy.
        headers.insert(
            X_FORWARDED_FOR,
            actix_web::http::header::HeaderValue::from_bytes(b"198.51.100.4\xff").unwrap(),
        );
        let from = |peer: &str| client_ip(Some(peer.parse().unwrap()), &headers, &trusted);
        assert_eq!(from("10.1.1.1:5000"), Some("10.1.1.1".parse().unwrap()));
        assert_eq!(client_ip(None, &headers, &trusted), None);
    }
}
