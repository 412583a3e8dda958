//! Runs one `Machine` per function: the only owner of instance state. Every
//! change happens under one lock, by feeding the machine an event; the actions
//! it returns are carried out after the lock is released. Requests that must
//! wait for a start wait on the function's change signal, not on a timer.
//!
//! The machine's "versions" are the directory's generations
//! (`FunctionRef::generation`), which order what was made live, rollbacks
//! included; the spawner starts the real version the reference names.
//!
//! Generic over the `Spawner`, so the whole driver (concurrent requests, exits,
//! deploys, deletes) is tested with fake instances and no Deno.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::machine::{Action, Actions, Machine, Member, State, Want};
use crate::config::FunctionDefaults;
use crate::directory::{FunctionRef, Update};
use crate::error::StartError;
use crate::runtime::BoxFuture;
use crate::user_limits::UserLimitsTable;

/// The Close reasons upgraded connections get when their instance goes.
pub const REDEPLOYED: &str = "function redeployed";
pub const DELETED: &str = "function deleted";

/// An instance as the driver manages it.
pub trait Managed: Send + Sync + 'static {
    fn id(&self) -> u64;
    fn alive(&self) -> bool;
    fn in_flight(&self) -> usize;
    fn idle_for(&self) -> Duration;
    /// Stops the process now; `wait_exit` resolves once it is gone.
    fn kill(&self);
    /// Asks upgraded (WebSocket) connections held on it to close, saying `why`.
    fn close_upgraded(&self, why: &'static str);
    fn wait_exit(&self) -> BoxFuture<'_, ()>;
    /// Waits for in-flight requests to end (at most `grace`), then stops.
    fn drain_and_stop(self: Arc<Self>, grace: Duration) -> BoxFuture<'static, ()>;
}

/// What starts instances and owns their files: the seam between the state
/// machine and the operating system.
pub trait Spawner: Send + Sync + 'static {
    type Instance: Managed;
    fn spawn(&self, f: Arc<FunctionRef>) -> BoxFuture<'_, Result<Arc<Self::Instance>, StartError>>;
    /// The function is deleted: remove its code and logs.
    fn remove_function(&self, function_id: i64) -> BoxFuture<'_, ()>;
}

/// An instance in a machine (compared by id).
pub struct Inst<T>(pub Arc<T>);

impl<T> Clone for Inst<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<T: Managed> Member for Inst<T> {
    fn id(&self) -> u64 {
        self.0.id()
    }
}

impl<T> std::fmt::Debug for Inst<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Inst")
    }
}

struct Entry<T> {
    machine: Machine<Inst<T>>,
    /// The newest reference seen: what a start starts.
    newest: Arc<FunctionRef>,
    /// Bumped on every transition; waiting requests watch it.
    changed: watch::Sender<u64>,
}

impl<T: Managed> Entry<T> {
    fn new(f: Arc<FunctionRef>) -> Self {
        Self {
            machine: Machine::default(),
            newest: f,
            changed: watch::Sender::new(0),
        }
    }

    fn see(&mut self, f: &Arc<FunctionRef>) {
        if f.generation > self.newest.generation {
            self.newest = f.clone();
        }
    }

    fn bump(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }
}

pub struct Settings {
    /// What a function's own settings fall back to (idle timeout, min_instances).
    pub defaults: FunctionDefaults,
    /// Running instances per user.
    pub user_limits: Arc<UserLimitsTable>,
    /// How long a replaced instance may finish its requests.
    pub drain_grace: Duration,
    /// How long in-flight requests of a deleted function may finish.
    pub delete_grace: Duration,
    /// The longest a request waits for a start (the start has its own timeout).
    pub start_wait: Duration,
}

pub struct Functions<S: Spawner> {
    spawner: S,
    settings: Settings,
    table: Mutex<HashMap<i64, Entry<S::Instance>>>,
    me: Weak<Self>,
}

impl<S: Spawner> Functions<S> {
    pub fn new(spawner: S, settings: Settings) -> Arc<Self> {
        Arc::new_cyclic(|me| Self {
            spawner,
            settings,
            table: Mutex::new(HashMap::new()),
            me: me.clone(),
        })
    }

    pub fn spawner(&self) -> &S {
        &self.spawner
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Entry<S::Instance>>> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An instance of `f`'s live version for one request, `take`n (leased)
    /// under the lock so a drain never misses it; starts one if needed.
    pub async fn acquire<L>(
        &self,
        f: &Arc<FunctionRef>,
        take: impl Fn(&Arc<S::Instance>) -> L,
    ) -> Result<L, StartError> {
        self.acquire_timed(f, take).await.map(|(l, _)| l)
    }

    /// [`Functions::acquire`], also saying how long the request waited for
    /// a start (`None`: an instance was serving, a warm request).
    pub async fn acquire_timed<L>(
        &self,
        f: &Arc<FunctionRef>,
        take: impl Fn(&Arc<S::Instance>) -> L,
    ) -> Result<(L, Option<Duration>), StartError> {
        let began = tokio::time::Instant::now();
        let deadline = began + self.settings.start_wait;
        let mut waited = false;
        loop {
            let (answer, actions, newest, mut changed) = {
                let mut table = self.table();
                let e = table
                    .entry(f.function_id)
                    .or_insert_with(|| Entry::new(f.clone()));
                e.see(f);
                // An instance that died before its exit was processed.
                if let Some(i) = e.machine.serving()
                    && !i.0.alive()
                {
                    let id = i.0.id();
                    e.machine.exited(id);
                }
                let (answer, actions) = e.machine.want(f.generation, Instant::now());
                if let Want::Use(i) = &answer {
                    return Ok((take(&i.0), waited.then(|| began.elapsed())));
                }
                (answer, actions, e.newest.clone(), e.changed.subscribe())
            };
            self.perform(&newest, actions);
            match answer {
                Want::Fail(e) => return Err(e),
                Want::Use(_) | Want::Wait => {}
            }
            waited = true;
            match tokio::time::timeout_at(deadline, changed.changed()).await {
                Ok(Ok(())) => {}
                // The entry cannot go while the router runs; treat as a lost start.
                Ok(Err(_)) | Err(_) => return Err(StartError::Timeout),
            }
        }
    }

    /// Carries out a machine's actions (never under the lock).
    fn perform(&self, f: &Arc<FunctionRef>, actions: Actions<Inst<S::Instance>>) {
        let Some(me) = self.me.upgrade() else {
            return;
        };
        let id = f.function_id;
        for action in actions {
            match action {
                Action::Spawn { version } => {
                    if let Err(e) = self.admit(f) {
                        self.finish_start(f, version, Err(e));
                        continue;
                    }
                    let me = me.clone();
                    let f = f.clone();
                    tokio::spawn(async move {
                        let result = me.spawner.spawn(f.clone()).await;
                        me.finish_start(&f, version, result);
                    });
                }
                Action::Drain(i) => {
                    let me = me.clone();
                    let timeout = self.settings.defaults.effective(&f.settings).timeout;
                    let grace = self
                        .settings
                        .drain_grace
                        .max(timeout + Duration::from_secs(5));
                    tokio::spawn(async move {
                        let iid = i.0.id();
                        i.0.drain_and_stop(grace).await;
                        me.event(id, |m| {
                            m.drained(iid);
                            Vec::new()
                        });
                    });
                }
                Action::Stop(i) => i.0.kill(),
                Action::RemoveAll { stop } => {
                    let me = me.clone();
                    let grace = self.settings.delete_grace;
                    tokio::spawn(async move {
                        // Long-lived connections close at once; requests get the grace.
                        let stops: Vec<_> = stop
                            .into_iter()
                            .map(|i| {
                                i.0.close_upgraded(DELETED);
                                tokio::spawn(i.0.drain_and_stop(grace))
                            })
                            .collect();
                        for s in stops {
                            let _ = s.await;
                        }
                        me.spawner.remove_function(id).await;
                    });
                }
            }
        }
    }

    fn finish_start(
        &self,
        f: &Arc<FunctionRef>,
        version: i64,
        result: Result<Arc<S::Instance>, StartError>,
    ) {
        let watch_exit = result.as_ref().ok().cloned();
        self.event(f.function_id, |m| match result {
            Ok(i) => m.started(version, Inst(i)),
            Err(e) => m.start_failed(version, e, Instant::now()),
        });
        if let (Some(i), Some(me)) = (watch_exit, self.me.upgrade()) {
            let fid = f.function_id;
            tokio::spawn(async move {
                i.wait_exit().await;
                let iid = i.id();
                drop(i);
                me.event(fid, |m| m.exited(iid));
            });
        }
    }

    /// The user's instance quota before a start of `f`: under it, go; at it,
    /// the user's least recently used idle instance (of another function, not
    /// kept warm) is stopped to make room; none idle: `Quota`. A function
    /// replacing its own instance (a new version) takes no extra room.
    fn admit(&self, f: &Arc<FunctionRef>) -> Result<(), StartError> {
        let limit = self.settings.user_limits.max_instances(f.user.as_str());
        let victim = {
            let table = self.table();
            let mut running = 0u64;
            let mut lru: Option<(Duration, i64, u64)> = None;
            for (fid, e) in table.iter() {
                if *fid == f.function_id || e.newest.user != f.user {
                    continue;
                }
                if matches!(e.machine.state(), State::Starting { .. }) {
                    running += 1;
                }
                let Some(i) = e.machine.serving() else {
                    continue;
                };
                running += 1;
                let warm = self
                    .settings
                    .defaults
                    .effective(&e.newest.settings)
                    .min_instances
                    > 0;
                if !warm && i.0.in_flight() == 0 && !e.machine.is_replacing() {
                    let idle = i.0.idle_for();
                    if lru.is_none_or(|(d, _, _)| idle > d) {
                        lru = Some((idle, *fid, i.0.id()));
                    }
                }
            }
            if running < limit {
                return Ok(());
            }
            lru
        };
        match victim {
            Some((_, fid, iid)) => {
                tracing::debug!(user = %f.user, function = %f.name, "instance quota reached: stopping the user's least recently used idle instance");
                // Leases are taken under the lock: checked again there.
                self.event(fid, |m| {
                    if m.serving().is_some_and(|i| i.0.in_flight() == 0) {
                        m.idle(iid)
                    } else {
                        Vec::new()
                    }
                });
                Ok(())
            }
            None => Err(StartError::Quota(limit)),
        }
    }

    /// Feeds one event to a function's machine, wakes its waiters, and
    /// carries out what follows.
    fn event(
        &self,
        function_id: i64,
        on: impl FnOnce(&mut Machine<Inst<S::Instance>>) -> Actions<Inst<S::Instance>>,
    ) {
        let (newest, actions) = {
            let mut table = self.table();
            let Some(e) = table.get_mut(&function_id) else {
                return;
            };
            let actions = on(&mut e.machine);
            e.bump();
            (e.newest.clone(), actions)
        };
        self.perform(&newest, actions);
    }

    /// A directory change.
    pub fn apply(&self, update: &Update) {
        match update {
            Update::Live(f) => {
                let warm = self.settings.defaults.effective(&f.settings).min_instances > 0;
                let known = {
                    let mut table = self.table();
                    match table.get_mut(&f.function_id) {
                        Some(e) => {
                            e.see(f);
                            true
                        }
                        None if warm => {
                            table.insert(f.function_id, Entry::new(f.clone()));
                            true
                        }
                        None => false,
                    }
                };
                if known {
                    let v = f.generation;
                    self.event(f.function_id, |m| m.deployed(v));
                }
                if warm {
                    self.keep_warm(f.function_id);
                }
            }
            Update::Gone {
                user,
                name,
                function_id,
            } => {
                // Kept as `Gone` (ids are never reused): a request that raced
                // the delete must not start it again.
                self.table().entry(*function_id).or_insert_with(|| {
                    Entry::new(Arc::new(FunctionRef {
                        user: user.clone(),
                        name: name.clone(),
                        function_id: *function_id,
                        version: 0,
                        sha256: String::new(),
                        bundled: true,
                        settings: Default::default(),
                        generation: 0,
                        metrics: Default::default(),
                    }))
                });
                self.event(*function_id, Machine::deleted);
            }
        }
    }

    /// The serving instance `instance` of `function_id` stopped answering.
    pub fn unresponsive(&self, function_id: i64, instance: u64) {
        self.event(function_id, |m| m.unresponsive(instance));
    }

    /// Starts an instance of a function kept warm (min_instances ≥ 1) when
    /// it has none (nor a start under way).
    fn keep_warm(&self, function_id: i64) {
        let (newest, actions) = {
            let mut table = self.table();
            let Some(e) = table.get_mut(&function_id) else {
                return;
            };
            if e.machine.is_gone() {
                return;
            }
            if let Some(i) = e.machine.serving()
                && !i.0.alive()
            {
                let id = i.0.id();
                e.machine.exited(id);
            }
            let (_, actions) = e.machine.want(e.newest.generation, Instant::now());
            e.bump();
            (e.newest.clone(), actions)
        };
        self.perform(&newest, actions);
    }

    /// Stops serving instances idle for longer than their function's idle
    /// timeout (never those of a function kept warm, which are started
    /// again here if they are gone).
    pub fn reap_idle(&self) {
        let mut warm = Vec::new();
        let idle: Vec<(i64, u64)> = {
            let table = self.table();
            table
                .iter()
                .filter_map(|(fid, e)| {
                    let s = self.settings.defaults.effective(&e.newest.settings);
                    if s.min_instances > 0 && !e.machine.is_gone() {
                        if e.machine.serving().is_none_or(|i| !i.0.alive()) {
                            warm.push(*fid);
                        }
                        return None;
                    }
                    let i = e.machine.serving()?;
                    let idle = i.0.in_flight() == 0 && i.0.idle_for() >= s.idle_timeout;
                    (idle || !i.0.alive()).then(|| (*fid, i.0.id()))
                })
                .collect()
        };
        for (fid, iid) in idle {
            self.event(fid, |m| m.idle(iid));
        }
        for fid in warm {
            self.keep_warm(fid);
        }
    }

    /// The instances taking requests now (for tests, operators and metrics).
    pub fn running(&self) -> Vec<Arc<S::Instance>> {
        self.table()
            .values()
            .filter_map(|e| e.machine.serving().map(|i| i.0.clone()))
            .filter(|i| i.alive())
            .collect()
    }

    /// Instances by state: (starting, ready, draining).
    pub fn instance_counts(&self) -> (u64, u64, u64) {
        let table = self.table();
        let (mut starting, mut ready, mut draining) = (0, 0, 0);
        for e in table.values() {
            match e.machine.state() {
                State::Starting { .. } => starting += 1,
                State::Replacing { .. } => {
                    starting += 1;
                    ready += 1;
                }
                State::Ready { .. } => ready += 1,
                State::Idle | State::Failed { .. } | State::Gone => {}
            }
            draining += e.machine.draining().len() as u64;
        }
        (starting, ready, draining)
    }

    /// Stops every instance and waits for them to exit.
    pub async fn shutdown(&self) {
        let all: Vec<Arc<S::Instance>> = {
            let mut table = self.table();
            let all = table
                .values()
                .flat_map(|e| e.machine.all_instances())
                .map(|i| i.0)
                .collect();
            table.clear();
            all
        };
        for i in &all {
            i.kill();
        }
        for i in all {
            let _ = tokio::time::timeout(Duration::from_secs(5), i.wait_exit()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

    use tokio::sync::{Notify, oneshot};

    use super::*;

    /// A fake instance: alive until killed.
    struct Fake {
        id: u64,
        version: i64,
        alive: AtomicBool,
        in_flight: AtomicUsize,
        exited: Notify,
    }

    impl Managed for Fake {
        fn id(&self) -> u64 {
            self.id
        }
        fn alive(&self) -> bool {
            self.alive.load(Ordering::Acquire)
        }
        fn in_flight(&self) -> usize {
            self.in_flight.load(Ordering::Acquire)
        }
        fn idle_for(&self) -> Duration {
            Duration::from_secs(3600)
        }
        fn kill(&self) {
            self.alive.store(false, Ordering::Release);
            self.exited.notify_waiters();
        }
        fn close_upgraded(&self, _why: &'static str) {}
        fn wait_exit(&self) -> BoxFuture<'_, ()> {
            Box::pin(async move {
                let n = self.exited.notified();
                tokio::pin!(n);
                n.as_mut().enable();
                if self.alive() {
                    n.await;
                }
            })
        }
        fn drain_and_stop(self: Arc<Self>, _grace: Duration) -> BoxFuture<'static, ()> {
            Box::pin(async move { self.kill() })
        }
    }

    /// Starts fake instances; a start can be held until the test releases it.
    #[derive(Default)]
    struct FakeSpawner {
        next: AtomicU64,
        spawned: AtomicUsize,
        hold: Mutex<Option<oneshot::Receiver<Result<(), StartError>>>>,
        removed: Mutex<Vec<i64>>,
    }

    impl Spawner for FakeSpawner {
        type Instance = Fake;
        fn spawn(&self, f: Arc<FunctionRef>) -> BoxFuture<'_, Result<Arc<Fake>, StartError>> {
            self.spawned.fetch_add(1, Ordering::SeqCst);
            let hold = self.hold.lock().unwrap().take();
            Box::pin(async move {
                if let Some(h) = hold {
                    h.await.map_err(|_| StartError::Timeout)??;
                }
                Ok(Arc::new(Fake {
                    id: self.next.fetch_add(1, Ordering::SeqCst) + 1,
                    version: f.version,
                    alive: AtomicBool::new(true),
                    in_flight: AtomicUsize::new(0),
                    exited: Notify::new(),
                }))
            })
        }
        fn remove_function(&self, function_id: i64) -> BoxFuture<'_, ()> {
            self.removed.lock().unwrap().push(function_id);
            Box::pin(async {})
        }
    }

    fn f(id: i64, version: i64) -> Arc<FunctionRef> {
        Arc::new(FunctionRef {
            user: skiff_core::names::UserName::parse("alice").unwrap(),
            name: skiff_core::names::FunctionName::parse("f").unwrap(),
            function_id: id,
            version,
            sha256: String::new(),
            bundled: true,
            settings: Default::default(),
            // Tests deploy versions in order: the generation follows them.
            generation: version,
            metrics: Default::default(),
        })
    }

    fn functions() -> Arc<Functions<FakeSpawner>> {
        Functions::new(
            FakeSpawner::default(),
            Settings {
                defaults: crate::config::RouterConfig::new(std::env::temp_dir())
                    .function_defaults(),
                user_limits: Arc::new(UserLimitsTable::new(
                    crate::config::RouterConfig::new(std::env::temp_dir()).quotas,
                )),
                drain_grace: Duration::from_secs(1),
                delete_grace: Duration::from_secs(1),
                start_wait: Duration::from_secs(5),
            },
        )
    }

    fn hold(fs: &Functions<FakeSpawner>) -> oneshot::Sender<Result<(), StartError>> {
        let (tx, rx) = oneshot::channel();
        *fs.spawner.hold.lock().unwrap() = Some(rx);
        tx
    }

    async fn settle() {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn concurrent_first_requests_share_one_start() {
        let fs = functions();
        let go = hold(&fs);
        let calls: Vec<_> = (0..8)
            .map(|_| {
                let fs = fs.clone();
                tokio::spawn(async move { fs.acquire(&f(1, 1), |i| i.id).await })
            })
            .collect();
        settle().await;
        go.send(Ok(())).unwrap();
        for c in calls {
            assert_eq!(c.await.unwrap(), Ok(1));
        }
        assert_eq!(fs.spawner.spawned.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_crashed_instance_is_replaced_on_the_next_request() {
        let fs = functions();
        let first = fs.acquire(&f(1, 1), Arc::clone).await.unwrap();
        first.kill();
        settle().await;
        let second = fs.acquire(&f(1, 1), Arc::clone).await.unwrap();
        assert_ne!(first.id, second.id);
        assert!(second.alive());
    }

    #[tokio::test]
    async fn a_failed_start_fails_fast_for_the_next_requests() {
        let fs = functions();
        let go = hold(&fs);
        let call = {
            let fs = fs.clone();
            tokio::spawn(async move { fs.acquire(&f(1, 1), |i| i.id).await })
        };
        settle().await;
        go.send(Err(StartError::Exited("exit code 1".into())))
            .unwrap();
        let failed = Err(StartError::Exited("exit code 1".into()));
        assert_eq!(call.await.unwrap(), failed);
        assert_eq!(fs.acquire(&f(1, 1), |i| i.id).await, failed);
        assert_eq!(fs.spawner.spawned.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_deploy_prestarts_the_new_version_and_drains_the_old() {
        let fs = functions();
        let old = fs.acquire(&f(1, 1), Arc::clone).await.unwrap();
        fs.apply(&Update::Live(f(1, 2)));
        settle().await;
        let new = fs.acquire(&f(1, 2), Arc::clone).await.unwrap();
        assert_eq!(new.version, 2);
        settle().await;
        assert!(!old.alive(), "the old instance is drained and stopped");
        assert_eq!(fs.running().len(), 1);
    }

    #[tokio::test]
    async fn a_delete_while_starting_stops_it_and_removes_its_files() {
        let fs = functions();
        let go = hold(&fs);
        let call = {
            let fs = fs.clone();
            tokio::spawn(async move { fs.acquire(&f(1, 1), |i| i.clone()).await })
        };
        settle().await;
        fs.apply(&Update::Gone {
            user: skiff_core::names::UserName::parse("alice").unwrap(),
            name: skiff_core::names::FunctionName::parse("f").unwrap(),
            function_id: 1,
        });
        go.send(Ok(())).unwrap();
        assert_eq!(call.await.unwrap().err(), Some(StartError::Gone));
        settle().await;
        assert!(fs.running().is_empty());
        assert!(fs.spawner.removed.lock().unwrap().contains(&1));
        // and a late request does not bring it back
        assert_eq!(fs.acquire(&f(1, 1), |i| i.id).await, Err(StartError::Gone));
        assert_eq!(fs.spawner.spawned.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_name_recreated_under_a_new_id_is_a_separate_function() {
        let fs = functions();
        let old = fs.acquire(&f(1, 1), Arc::clone).await.unwrap();
        fs.apply(&Update::Gone {
            user: skiff_core::names::UserName::parse("alice").unwrap(),
            name: skiff_core::names::FunctionName::parse("f").unwrap(),
            function_id: 1,
        });
        fs.apply(&Update::Live(f(2, 1)));
        let new = fs.acquire(&f(2, 1), Arc::clone).await.unwrap();
        settle().await;
        assert!(!old.alive());
        assert!(new.alive());
        assert_eq!(fs.spawner.removed.lock().unwrap().as_slice(), &[1]);
    }
}
