//! The router's complete, in-memory view of which functions exist and which
//! version of each is live. It is loaded from the database at start and kept in
//! step by polling the change feed in the background, so the request path only
//! ever reads memory: a hit and a miss (404) both cost one hash lookup, and no
//! request, however hostile, makes the router query the database.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};

use skiff_core::fnconfig::FunctionSettings;
use skiff_core::names::{FunctionName, UserName};
use skiff_core::store::{LiveFunction, Store};

use crate::metrics::{FunctionMetrics, Metrics};
use crate::user_limits::UserLimitsTable;

/// One live function as the data plane sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionRef {
    pub user: UserName,
    pub name: FunctionName,
    pub function_id: i64,
    pub version: i64,
    /// Of the module the data plane runs (see `LiveFunction`).
    pub sha256: String,
    pub bundled: bool,
    /// The version's own settings (`None` fields: the operator's defaults).
    pub settings: FunctionSettings,
    /// Grows by one each time this router sees a function's live version
    /// change. Version numbers do not order what is live (a rollback makes an
    /// older number live again); this does, so the runtime always starts and
    /// serves what was made live last. Set by the directory.
    pub generation: i64,
    pub metrics: MetricsSlot,
}

/// A function's metrics handle, resolved on its first request and kept with
/// the directory entry, so later requests do not look it up again. Not part
/// of what the entry is: equal whatever it holds.
#[derive(Default, Clone)]
pub struct MetricsSlot(OnceLock<Arc<FunctionMetrics>>);

impl PartialEq for MetricsSlot {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for MetricsSlot {}

impl std::fmt::Debug for MetricsSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MetricsSlot")
    }
}

impl FunctionRef {
    /// This function's metrics handle in `m`.
    pub fn metrics(&self, m: &Metrics) -> &Arc<FunctionMetrics> {
        self.metrics
            .0
            .get_or_init(|| m.function(self.function_id, self.user.as_str(), self.name.as_str()))
    }

    /// The same live version, settings and code (the generation aside).
    fn same_as(&self, o: &Self) -> bool {
        self.user == o.user
            && self.name == o.name
            && self.function_id == o.function_id
            && self.version == o.version
            && self.sha256 == o.sha256
            && self.bundled == o.bundled
            && self.settings == o.settings
    }
}

type Map = HashMap<UserName, HashMap<FunctionName, Arc<FunctionRef>>>;

#[derive(Default)]
pub struct Directory {
    map: RwLock<Map>,
    generations: AtomicI64,
}

/// What a sync changed, for the runtime to act on (pre-start or stop instances).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Update {
    /// New or redeployed: this is now live.
    Live(Arc<FunctionRef>),
    /// Deleted; `function_id` is the one that was live.
    Gone {
        user: UserName,
        name: FunctionName,
        function_id: i64,
    },
}

/// A row of the store as the data plane holds it. Names are validated again:
/// a row that does not hold valid names (written by hand, say) is not served.
fn fref(user: &str, name: &str, live: LiveFunction) -> Option<Arc<FunctionRef>> {
    match (UserName::parse(user), FunctionName::parse(name)) {
        (Ok(user), Ok(name)) => Some(Arc::new(FunctionRef {
            user,
            name,
            function_id: live.function_id,
            version: live.version,
            sha256: live.sha256,
            bundled: live.bundled,
            settings: live.settings,
            generation: 0,
            metrics: Default::default(),
        })),
        _ => {
            tracing::warn!(user = %user.escape_debug(), function = %name.escape_debug(),
                "a function row with an invalid name is not served");
            None
        }
    }
}

impl Directory {
    pub fn lookup(&self, user: &str, name: &str) -> Option<Arc<FunctionRef>> {
        let map = self.map.read().unwrap_or_else(|p| p.into_inner());
        map.get(user)?.get(name).cloned()
    }

    /// Whether `user` has a live function.
    pub fn has_user(&self, user: &str) -> bool {
        let map = self.map.read().unwrap_or_else(|p| p.into_inner());
        map.contains_key(user)
    }

    pub fn len(&self) -> usize {
        let map = self.map.read().unwrap_or_else(|p| p.into_inner());
        map.values().map(HashMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The ids of every live function (to sweep what is not live).
    pub fn live_ids(&self) -> std::collections::HashSet<i64> {
        let map = self.map.read().unwrap_or_else(|p| p.into_inner());
        map.values()
            .flat_map(HashMap::values)
            .map(|f| f.function_id)
            .collect()
    }

    /// `f` as the directory keeps it: the entry it replaces when nothing
    /// changed, else with the next generation.
    fn stamp(&self, old: Option<&Arc<FunctionRef>>, f: Arc<FunctionRef>) -> Arc<FunctionRef> {
        match old {
            Some(o) if o.same_as(&f) => o.clone(),
            _ => {
                let mut f = Arc::unwrap_or_clone(f);
                f.generation = self.generations.fetch_add(1, Ordering::Relaxed) + 1;
                Arc::new(f)
            }
        }
    }

    fn set(&self, user: &str, name: &str, f: Option<Arc<FunctionRef>>) -> Vec<Update> {
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        let f = f.map(|f| {
            let old = map.get(user).and_then(|n| n.get(name));
            self.stamp(old, f)
        });
        let old = match &f {
            Some(f) => map
                .entry(f.user.clone())
                .or_default()
                .insert(f.name.clone(), f.clone()),
            None => {
                let names = map.get_mut(user);
                let old = names.and_then(|n| n.remove(name));
                if map.get(user).is_some_and(HashMap::is_empty) {
                    map.remove(user);
                }
                old
            }
        };
        changes(old, f)
    }

    /// Replaces the whole map with `all`, returning what differs.
    pub(crate) fn replace_all(&self, all: Vec<(String, String, LiveFunction)>) -> Vec<Update> {
        let mut fresh: Map = HashMap::new();
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        for (user, name, live) in all {
            if let Some(f) = fref(&user, &name, live) {
                let f = self.stamp(map.get(&f.user).and_then(|n| n.get(&f.name)), f);
                fresh
                    .entry(f.user.clone())
                    .or_default()
                    .insert(f.name.clone(), f);
            }
        }
        let mut updates = Vec::new();
        for (user, names) in map.iter() {
            for (name, old) in names {
                if fresh.get(user).and_then(|n| n.get(name)).is_none() {
                    updates.extend(changes(Some(old.clone()), None));
                }
            }
        }
        for (user, names) in &fresh {
            for (name, f) in names {
                let old = map.get(user).and_then(|n| n.get(name)).cloned();
                updates.extend(changes(old, Some(f.clone())));
            }
        }
        *map = fresh;
        updates
    }
}

/// What replacing `old` by `new` under one name means for the runtime. A name
/// whose id changed was deleted and created again (perhaps within one poll):
/// that is the old function gone and a new one live, never a redeploy of the
/// old one, so the old function's instances and files go with it.
fn changes(old: Option<Arc<FunctionRef>>, new: Option<Arc<FunctionRef>>) -> Vec<Update> {
    let gone = |o: &FunctionRef| Update::Gone {
        user: o.user.clone(),
        name: o.name.clone(),
        function_id: o.function_id,
    };
    match (old, new) {
        (None, None) => Vec::new(),
        (Some(o), None) => vec![gone(&o)],
        (None, Some(n)) => vec![Update::Live(n)],
        (Some(o), Some(n)) if o == n => Vec::new(),
        (Some(o), Some(n)) if o.function_id != n.function_id => {
            vec![gone(&o), Update::Live(n)]
        }
        (Some(_), Some(n)) => vec![Update::Live(n)],
    }
}

/// How far back each poll looks again: on MySQL, a change row with a lower id can
/// commit after one with a higher id, so ids just below the cursor are re-read
/// (and skipped when already seen).
const REREAD_IDS: i64 = 64;
/// A full reload also happens this often, as a safety net.
const FULL_RELOAD_EVERY: Duration = Duration::from_secs(60);
/// Change rows older than this are pruned by the routers.
const KEEP_CHANGES: Duration = Duration::from_secs(3600);

/// Keeps a `Directory` in step with the database.
pub struct Syncer {
    store: Store,
    directory: Arc<Directory>,
    cursor: i64,
    seen: BTreeSet<i64>,
    last_full: Instant,
    last_prune: Instant,
    failing: bool,
    /// `(low, count, newest)` of the change window as it was before the last
    /// read from `low`: while it is unchanged, nothing new has committed.
    read_window: Option<(i64, i64, i64)>,
    /// Reloaded with every full reload and on a user-limits change row.
    user_limits: Option<Arc<UserLimitsTable>>,
}

impl Syncer {
    /// Loads everything. Returns the syncer, ready to poll.
    pub async fn load(
        store: Store,
        directory: Arc<Directory>,
    ) -> anyhow::Result<(Self, Vec<Update>)> {
        let mut s = Self {
            store,
            directory,
            cursor: 0,
            seen: BTreeSet::new(),
            last_full: Instant::now(),
            last_prune: Instant::now(),
            failing: false,
            read_window: None,
            user_limits: None,
        };
        let updates = s.full_reload().await?;
        Ok((s, updates))
    }

    /// Keeps `table` in step with the users' limits from now on (loading it now).
    pub async fn keep_user_limits(&mut self, table: Arc<UserLimitsTable>) -> anyhow::Result<()> {
        table.reload_all(&self.store).await?;
        self.user_limits = Some(table);
        Ok(())
    }

    async fn full_reload(&mut self) -> anyhow::Result<Vec<Update>> {
        if let Some(t) = &self.user_limits {
            t.reload_all(&self.store).await?;
        }
        // The cursor is read first: a change made during the snapshot is then
        // polled again, which is harmless since applying a change is idempotent.
        let cursor = self.store.last_change_id().await?;
        let all = self.store.all_live_functions().await?;
        self.cursor = cursor;
        self.seen.clear();
        self.read_window = None;
        self.last_full = Instant::now();
        Ok(self.directory.replace_all(all))
    }

    /// One poll. Errors leave the directory as it was (the router keeps serving
    /// what it knows) and make the next successful poll a full reload.
    pub async fn poll(&mut self) -> Vec<Update> {
        match self.try_poll().await {
            Ok(u) => {
                if self.failing {
                    tracing::info!("database reachable again; directory resynchronised");
                }
                self.failing = false;
                u
            }
            Err(e) => {
                if !self.failing {
                    tracing::warn!(
                        error = format!("{e:#}"),
                        "cannot poll the change feed; serving the functions already known"
                    );
                }
                self.failing = true;
                Vec::new()
            }
        }
    }

    async fn try_poll(&mut self) -> anyhow::Result<Vec<Update>> {
        if self.failing || self.last_full.elapsed() >= FULL_RELOAD_EVERY {
            return self.full_reload().await;
        }
        if self.last_prune.elapsed() >= Duration::from_secs(600) {
            self.last_prune = Instant::now();
            let cutoff = skiff_core::time::now_millis() - KEEP_CHANGES.as_millis() as i64;
            let _ = self.store.prune_changes(cutoff).await;
        }
        let low = (self.cursor - REREAD_IDS).max(0);
        // Most polls find nothing new: ask for the window's size first, and read
        // the rows only when it moved (reading and decoding 64 rows each poll
        // cost ~0.7 M instructions).
        let (count, newest) = self.store.change_window(low).await?;
        if self.read_window == Some((low, count, newest)) {
            return Ok(Vec::new());
        }
        let changes = self.store.changes_since(low, 10_000).await?;
        self.read_window = Some((low, count, newest));
        let mut touched = BTreeSet::new();
        let mut limits_changed = false;
        for c in changes {
            if c.id <= low || !self.seen.insert(c.id) {
                continue;
            }
            self.cursor = self.cursor.max(c.id);
            // An empty function name: that user's limits changed.
            if c.function.is_empty() {
                limits_changed = true;
            } else {
                touched.insert((c.user, c.function));
            }
        }
        if limits_changed && let Some(t) = &self.user_limits {
            t.reload_all(&self.store).await?;
        }
        let floor = self.cursor - REREAD_IDS;
        self.seen.retain(|id| *id > floor);
        let mut updates = Vec::new();
        for (user, name) in touched {
            let live = self.store.live_function(&user, &name).await?;
            let f = live.and_then(|l| fref(&user, &name, l));
            updates.extend(self.directory.set(&user, &name, f));
        }
        Ok(updates)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(id: i64, v: i64) -> LiveFunction {
        LiveFunction {
            settings: Default::default(),
            function_id: id,
            version: v,
            sha256: format!("h{v}"),
            bundled: true,
        }
    }

    #[test]
    fn replace_all_reports_new_changed_and_gone() {
        let d = Directory::default();
        let u = d.replace_all(vec![
            ("alice".into(), "a".into(), live(1, 1)),
            ("alice".into(), "b".into(), live(2, 1)),
        ]);
        assert_eq!(u.len(), 2);
        assert_eq!(d.lookup("alice", "a").unwrap().version, 1);
        let u = d.replace_all(vec![
            ("alice".into(), "a".into(), live(1, 2)),
            ("bob".into(), "c".into(), live(3, 1)),
        ]);
        assert_eq!(u.len(), 3, "{u:?}");
        assert!(u.contains(&Update::Gone {
            user: UserName::parse("alice").unwrap(),
            name: FunctionName::parse("b").unwrap(),
            function_id: 2
        }));
        assert!(d.lookup("alice", "b").is_none());
        assert_eq!(d.lookup("alice", "a").unwrap().version, 2);
        assert_eq!(d.len(), 2);
    }

    /// A rollback makes an older version number live: the generation still
    /// grows, so the runtime knows it is the newest thing to run.
    #[test]
    fn every_change_of_the_live_version_gets_a_newer_generation() {
        let d = Directory::default();
        let mut last = 0;
        for v in [1, 2, 1, 2, 1] {
            let u = d.set("alice", "a", fref("alice", "a", live(1, v)));
            let f = d.lookup("alice", "a").unwrap();
            assert_eq!(u, vec![Update::Live(f.clone())]);
            assert_eq!(f.version, v);
            assert!(f.generation > last);
            last = f.generation;
        }
        // A full reload of the same thing keeps the generation.
        assert!(
            d.replace_all(vec![("alice".into(), "a".into(), live(1, 1))])
                .is_empty()
        );
        assert_eq!(d.lookup("alice", "a").unwrap().generation, last);
    }

    #[test]
    fn set_is_idempotent() {
        let d = Directory::default();
        let f = fref("alice", "a", live(1, 1)).unwrap();
        assert_eq!(d.set("alice", "a", Some(f.clone())).len(), 1);
        assert!(d.set("alice", "a", Some(f)).is_empty());
        assert_eq!(d.set("alice", "a", None).len(), 1);
        assert!(d.set("alice", "a", None).is_empty());
        assert!(d.is_empty());
    }

    /// Deleted and created again between two polls: the same name, a new id.
    /// The old function must go (instances, code, logs), not be "redeployed".
    #[test]
    fn a_name_with_a_new_id_is_the_old_function_gone_and_a_new_one_live() {
        let d = Directory::default();
        d.set("alice", "a", fref("alice", "a", live(1, 3)));
        let u = d.set("alice", "a", fref("alice", "a", live(9, 1)));
        assert_eq!(u.len(), 2, "{u:?}");
        assert_eq!(
            u[0],
            Update::Gone {
                user: UserName::parse("alice").unwrap(),
                name: FunctionName::parse("a").unwrap(),
                function_id: 1
            }
        );
        assert!(matches!(&u[1], Update::Live(f) if f.function_id == 9 && f.version == 1));
        let u = d.replace_all(vec![("alice".into(), "a".into(), live(10, 1))]);
        assert_eq!(u.len(), 2, "{u:?}");
        assert!(matches!(&u[0], Update::Gone { function_id: 9, .. }));
        assert_eq!(d.live_ids(), [10].into_iter().collect());
    }
}
