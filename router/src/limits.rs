//! Per-function in-flight limits and each client's share of them: what keeps
//! one function, or one client of it, from taking the router from the rest.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::RouterError;

/// A client always gets at least this many of a function's slots (or all of
/// them, when the function has fewer), so a small limit still allows parallelism.
const MIN_CLIENT_SLOTS: usize = 4;

/// Per-function in-flight limits: up to the function's concurrency `max`
/// requests run, the rest wait up to `wait` for a slot and then get 429. One
/// client address may hold at most its share of them, counting those waiting,
/// so a client that pins its requests (slow reads, slow uploads) cannot take a
/// function from everyone else.
pub struct Limits {
    client_percent: u8,
    wait: Duration,
    by_function: Mutex<HashMap<i64, Arc<FunctionLimit>>>,
}

struct FunctionLimit {
    max: usize,
    per_client: usize,
    slots: Arc<Semaphore>,
    /// Requests in flight or queued per client key; an entry goes at zero, so
    /// the map holds at most `max` entries however many clients come and go.
    clients: Mutex<HashMap<IpAddr, usize>>,
}

/// A request's right to run: its slot and its place in its client's share.
pub struct Admission {
    _slot: OwnedSemaphorePermit,
    _client: Option<ClientShare>,
}

struct ClientShare {
    limit: Arc<FunctionLimit>,
    key: IpAddr,
}

impl ClientShare {
    fn take(limit: &Arc<FunctionLimit>, key: IpAddr, cap: usize) -> Result<Self, RouterError> {
        let mut clients = limit.clients.lock().unwrap_or_else(|p| p.into_inner());
        let held = clients.entry(key).or_insert(0);
        if *held >= cap {
            return Err(RouterError::ClientBusy(cap));
        }
        *held += 1;
        Ok(Self {
            limit: limit.clone(),
            key,
        })
    }
}

impl Drop for ClientShare {
    fn drop(&mut self) {
        let mut clients = self.limit.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(held) = clients.get_mut(&self.key) {
            *held = held.saturating_sub(1);
            if *held == 0 {
                clients.remove(&self.key);
            }
        }
    }
}

/// What a client's share is counted under: an IPv4 address, or an IPv6
/// address's /64 (one subscriber routinely holds a whole /64, so counting single
/// IPv6 addresses would be no limit at all).
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
        v4 => v4,
    }
}

/// How many of `max` slots one client may hold: `percent` of them, at least
/// `MIN_CLIENT_SLOTS`, at most all.
pub fn client_share(max: usize, percent: u8) -> usize {
    (max.saturating_mul(usize::from(percent)) / 100)
        .max(MIN_CLIENT_SLOTS)
        .min(max)
}

impl Limits {
    pub fn new(client_percent: u8, wait: Duration) -> Self {
        Self {
            client_percent,
            wait,
            by_function: Mutex::new(HashMap::new()),
        }
    }

    /// A slot for one request of `client` (its address as `client_key` gives
    /// it) to a function whose live version allows `max` at once.
    pub async fn acquire(
        &self,
        function_id: i64,
        max: usize,
        client: IpAddr,
    ) -> Result<Admission, RouterError> {
        let limit = {
            let mut m = self.by_function.lock().unwrap_or_else(|p| p.into_inner());
            let fresh = || {
                Arc::new(FunctionLimit {
                    max,
                    per_client: client_share(max, self.client_percent),
                    slots: Arc::new(Semaphore::new(max)),
                    clients: Mutex::new(HashMap::new()),
                })
            };
            let entry = m.entry(function_id).or_insert_with(fresh);
            // A new version with another concurrency: new slots from now on;
            // requests admitted under the old limit finish under it.
            if entry.max != max {
                *entry = fresh();
            }
            entry.clone()
        };
        // Taken before queueing: a client over its share must not hold places
        // in the queue ahead of its neighbours either.
        let share = if limit.per_client < limit.max {
            Some(ClientShare::take(&limit, client, limit.per_client)?)
        } else {
            None
        };
        let slot = match limit.slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                match tokio::time::timeout(self.wait, limit.slots.clone().acquire_owned()).await {
                    Ok(Ok(p)) => p,
                    _ => return Err(RouterError::Busy),
                }
            }
        };
        Ok(Admission {
            _slot: slot,
            _client: share,
        })
    }

    pub fn forget(&self, function_id: i64) {
        self.by_function
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&function_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_client_gets_a_share_with_a_floor() {
        assert_eq!(client_share(256, 25), 64);
        assert_eq!(client_share(8, 25), 4, "the floor");
        assert_eq!(client_share(2, 25), 2, "never more than the limit");
        assert_eq!(client_share(256, 100), 256);
        assert_eq!(client_share(usize::MAX, 100), usize::MAX / 100);
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_64() {
        assert_eq!(client_key(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_eq!(
            client_key(ip("2001:db8:1:2:ffff::9")),
            client_key(ip("2001:db8:1:2::1"))
        );
        assert_ne!(
            client_key(ip("2001:db8:1:3::1")),
            client_key(ip("2001:db8:1:2::1"))
        );
        assert_eq!(client_key(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(client_key(ip("192.0.2.7")), ip("192.0.2.7"));
    }

    #[tokio::test]
    async fn one_client_cannot_take_a_function_from_its_neighbours() {
        const N: usize = 8;
        let limits = Limits::new(25, Duration::from_millis(10));
        let greedy = ip("192.0.2.1");
        let mut held = Vec::new();
        for _ in 0..4 {
            held.push(limits.acquire(1, N, greedy).await.unwrap());
        }
        assert!(matches!(
            limits.acquire(1, N, greedy).await,
            Err(RouterError::ClientBusy(4))
        ));
        // Another function, another neighbour: unaffected.
        let _other_fn = limits.acquire(2, N, greedy).await.unwrap();
        let mut neighbours = Vec::new();
        for _ in 0..4 {
            neighbours.push(limits.acquire(1, N, ip("192.0.2.2")).await.unwrap());
        }
        // The function is full now: everyone waits, then gets the general 429.
        assert!(matches!(
            limits.acquire(1, N, ip("192.0.2.3")).await,
            Err(RouterError::Busy)
        ));
        held.pop();
        let again = limits.acquire(1, N, greedy).await.unwrap();
        drop((again, held, neighbours));
        let f = limits.by_function.lock().unwrap().get(&1).cloned().unwrap();
        assert!(
            f.clients.lock().unwrap().is_empty(),
            "counts go back to nothing"
        );
        assert_eq!(f.slots.available_permits(), 8);
    }

    #[tokio::test]
    async fn a_client_waiting_for_a_slot_holds_a_place_in_its_share() {
        const N: usize = 16;
        let limits = Limits::new(25, Duration::from_millis(50));
        let mut others = Vec::new();
        for i in 0..12 {
            others.push(
                limits
                    .acquire(1, N, ip(&format!("192.0.2.{}", 10 + i)))
                    .await
                    .unwrap(),
            );
        }
        let mut mine = Vec::new();
        for _ in 0..4 {
            mine.push(limits.acquire(1, N, ip("192.0.2.1")).await.unwrap());
        }
        // full; a fifth of mine is refused at once, not queued
        assert!(matches!(
            limits.acquire(1, N, ip("192.0.2.1")).await,
            Err(RouterError::ClientBusy(4))
        ));
    }
}
