//! Each function's runtime state from its pods, watched: every function pod
//! the watch reports is kept here, and a change re-records the state of the
//! function it belongs to (`KubeRuntime::record_observed`, which decides with
//! `observed::observe`). Until the watch's first listing is in, nothing is
//! known, and a function is `pending`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::runtime::watcher::Event;

use super::controller::KubeRuntime;
use super::labels;
use super::observed::{Observed, observe};

type Owner = (String, String);

/// The function pods the watch has reported, by function then pod name.
#[derive(Default)]
pub struct PodsSeen {
    /// The first listing is complete.
    synced: bool,
    pods: BTreeMap<Owner, BTreeMap<String, Pod>>,
    /// A listing in progress (the watch restarted): replaces `pods` when done.
    relisting: Option<BTreeMap<Owner, BTreeMap<String, Pod>>>,
}

fn insert(into: &mut BTreeMap<Owner, BTreeMap<String, Pod>>, pod: Pod) -> Option<Owner> {
    let owner = labels::owner(pod.labels())?;
    into.entry(owner.clone())
        .or_default()
        .insert(pod.name_any(), pod);
    Some(owner)
}

impl PodsSeen {
    /// Takes one event in; returns the functions whose pods changed.
    pub fn take(&mut self, event: Event<Pod>) -> BTreeSet<Owner> {
        let mut changed = BTreeSet::new();
        match event {
            Event::Init => self.relisting = Some(BTreeMap::new()),
            Event::InitApply(pod) => {
                if let Some(listing) = self.relisting.as_mut() {
                    insert(listing, pod);
                }
            }
            Event::InitDone => {
                let listing = self.relisting.take().unwrap_or_default();
                changed.extend(self.pods.keys().cloned());
                changed.extend(listing.keys().cloned());
                self.pods = listing;
                self.synced = true;
            }
            Event::Apply(pod) => changed.extend(insert(&mut self.pods, pod)),
            Event::Delete(pod) => {
                if let Some(owner) = labels::owner(pod.labels()) {
                    if let Some(pods) = self.pods.get_mut(&owner) {
                        pods.remove(&pod.name_any());
                        if pods.is_empty() {
                            self.pods.remove(&owner);
                        }
                    }
                    changed.insert(owner);
                }
            }
        }
        changed
    }

    /// Whether `user`/`function` has a pod that is not stopping (one
    /// starting or ready); `None` until the first listing is in. Stopping
    /// pods do not count: after a scale to zero they linger for their drain.
    pub fn has_pods(&self, user: &str, function: &str) -> Option<bool> {
        self.synced.then(|| {
            self.pods
                .get(&(user.to_owned(), function.to_owned()))
                .is_some_and(|pods| {
                    pods.values()
                        .any(|p| p.metadata.deletion_timestamp.is_none())
                })
        })
    }

    /// The state of `user`/`function` at `version`, as far as known.
    pub fn observe(&self, user: &str, function: &str, version: i64) -> Observed {
        if !self.synced {
            return Observed::pending();
        }
        match self.pods.get(&(user.to_owned(), function.to_owned())) {
            Some(pods) => observe(pods.values(), version),
            None => Observed::pending(),
        }
    }
}

/// Watches the function pods for the manager's life (the watch restarts
/// itself, with backoff, after an error or an end).
pub async fn run(runtime: Arc<KubeRuntime>) {
    let events = match runtime.api().watch_pods() {
        Ok(events) => events,
        Err(e) => {
            tracing::error!(error = %e, "cannot watch function pods; runtime states stay pending");
            return;
        }
    };
    let mut events = std::pin::pin!(events);
    while let Some(event) = events.next().await {
        match event {
            Ok(event) => {
                let changed = runtime.pods_seen(|seen| seen.take(event));
                for (user, function) in changed {
                    runtime.record_observed(&user, &function).await;
                }
            }
            Err(e) => tracing::warn!(error = %e, "watching function pods failed; retrying"),
        }
    }
}

pub fn spawn(runtime: Arc<KubeRuntime>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(run(runtime))
}
