//! THE module that talks to the Kubernetes API. Writes are server-side apply
//! (field manager `skiff-manager`, forced: the database is the truth, so the
//! manager takes back any field someone else changed), deletes go by name or by
//! label, and every call is checked against `api_calls::API_CALLS` first and
//! bounded by the configured timeout.

use std::collections::BTreeSet;
use std::fmt::Debug;
use std::future::Future;
use std::time::Duration;

use futures_util::{AsyncReadExt, Stream};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, DeleteParams, ListParams, LogParams, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use skiff_core::naming::{MANAGED_BY, env_secret_name, object_name};

use super::api_calls::{Verb, permitted, permitted_sub};
use super::errors::KubeError;
use super::labels;
use super::objects::FunctionObjects;

/// The field manager named in every apply.
pub const FIELD_MANAGER: &str = MANAGED_BY;

#[derive(Clone)]
pub struct KubeApi {
    client: Client,
    namespace: String,
    timeout: Duration,
}

/// Object kinds this module handles, with what it needs to know of each.
trait Kind:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + Debug
    + Serialize
    + DeserializeOwned
{
}

impl<K> Kind for K where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + Debug
        + Serialize
        + DeserializeOwned
{
}

impl KubeApi {
    pub fn new(client: Client, namespace: &str, timeout: Duration) -> Self {
        Self {
            client,
            namespace: namespace.to_owned(),
            timeout,
        }
    }

    fn api<K: Kind>(&self) -> Api<K> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// Runs one call under the timeout, naming `action` in any error.
    async fn bounded<T>(
        &self,
        action: String,
        call: impl Future<Output = Result<T, kube::Error>>,
    ) -> Result<T, KubeError> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(KubeError::from_kube(action, e)),
            Err(_) => Err(KubeError::Timeout {
                action,
                after: self.timeout,
            }),
        }
    }

    fn describe<K: Kind>(&self, verb: &str, name: &str) -> String {
        format!("{verb} {} {}/{name}", K::kind(&()), self.namespace)
    }

    /// Server-side applies `object`; the object as the API server now holds it.
    async fn apply<K: Kind>(&self, object: &K) -> Result<K, KubeError> {
        permitted::<K>(Verb::Apply)?;
        let name = object.name_any();
        let params = PatchParams::apply(FIELD_MANAGER).force();
        self.bounded(
            self.describe::<K>("applying", &name),
            self.api::<K>().patch(&name, &params, &Patch::Apply(object)),
        )
        .await
    }

    /// Applies every object of one function version, in dependency order, and
    /// stops at the first failure (the next pass starts over; applies are
    /// idempotent). Returns the Deployment's replicas as the server holds
    /// them: the apply never sets them, so a `0` is a scale to zero, whoever
    /// made it and whenever.
    pub async fn apply_function(
        &self,
        objects: &FunctionObjects,
    ) -> Result<Option<i32>, KubeError> {
        self.apply(&objects.network_policy).await?;
        self.apply(&objects.config_map).await?;
        self.apply(&objects.secret).await?;
        self.apply(&objects.service).await?;
        let deployment = self.apply(&objects.deployment).await?;
        self.apply(&objects.autoscaler).await?;
        Ok(deployment.spec.and_then(|s| s.replicas))
    }

    /// Sets the replicas of the function's Deployment through its `scale`
    /// subresource: a merge patch of `spec.replicas` only, so the applied
    /// Deployment (which leaves replicas to the autoscaler) is untouched.
    pub async fn scale(&self, user: &str, function: &str, replicas: i32) -> Result<(), KubeError> {
        permitted_sub::<Deployment>("scale", Verb::Patch)?;
        let name = object_name(user, function);
        let patch = serde_json::json!({"spec": {"replicas": replicas}});
        self.bounded(
            self.describe::<Deployment>(&format!("scaling to {replicas}"), &name),
            self.api::<Deployment>().patch_scale(
                &name,
                &PatchParams::default(),
                &Patch::Merge(&patch),
            ),
        )
        .await
        .map(|_| ())
    }

    /// Deletes the function's code ConfigMaps of every version not in `keep`.
    pub async fn prune_code(
        &self,
        user: &str,
        function: &str,
        keep: &[i64],
    ) -> Result<(), KubeError> {
        permitted::<ConfigMap>(Verb::DeleteCollection)?;
        let selector = labels::stale_code_selector(user, function, keep);
        self.bounded(
            format!("deleting old code ConfigMaps of {user}/{function}"),
            self.api::<ConfigMap>().delete_collection(
                &DeleteParams::background(),
                &ListParams::default().labels(&selector),
            ),
        )
        .await
        .map(|_| ())
    }

    async fn delete_named<K: Kind>(&self, name: &str) -> Result<(), KubeError> {
        permitted::<K>(Verb::Delete)?;
        let done = self
            .bounded(
                self.describe::<K>("deleting", name),
                self.api::<K>().delete(name, &DeleteParams::background()),
            )
            .await;
        match done {
            // Already gone is what we wanted.
            Err(e) if e.code() == Some(404) => Ok(()),
            other => other.map(|_| ()),
        }
    }

    /// Deletes every object of a function. The Deployment goes first so no
    /// new pod starts; the NetworkPolicy last so no pod is ever unfenced, and
    /// so a delete that failed half-way leaves an object the reconcile loop
    /// finds by label (Secrets are never listed).
    pub async fn delete_function(&self, user: &str, function: &str) -> Result<(), KubeError> {
        let name = object_name(user, function);
        self.delete_named::<HorizontalPodAutoscaler>(&name).await?;
        self.delete_named::<Deployment>(&name).await?;
        self.delete_named::<Service>(&name).await?;
        self.delete_named::<Secret>(&env_secret_name(user, function))
            .await?;
        permitted::<ConfigMap>(Verb::DeleteCollection)?;
        let selector = labels::function_selector(user, function);
        self.bounded(
            format!("deleting the code ConfigMaps of {user}/{function}"),
            self.api::<ConfigMap>().delete_collection(
                &DeleteParams::background(),
                &ListParams::default().labels(&selector),
            ),
        )
        .await?;
        self.delete_named::<NetworkPolicy>(&name).await
    }

    async fn owners_of<K: Kind>(
        &self,
        into: &mut BTreeSet<(String, String)>,
    ) -> Result<(), KubeError> {
        permitted::<K>(Verb::List)?;
        let params = ListParams::default().labels(&labels::managed_selector());
        // Metadata only: code ConfigMaps can be a megabyte each.
        let list = self
            .bounded(
                format!("listing {} objects in {}", K::kind(&()), self.namespace),
                self.api::<K>().list_metadata(&params),
            )
            .await?;
        into.extend(list.items.iter().filter_map(|o| labels::owner(o.labels())));
        Ok(())
    }

    /// The (user, function) pairs that own at least one object the manager applied.
    pub async fn managed_functions(&self) -> Result<BTreeSet<(String, String)>, KubeError> {
        let mut owners = BTreeSet::new();
        self.owners_of::<Deployment>(&mut owners).await?;
        self.owners_of::<Service>(&mut owners).await?;
        self.owners_of::<HorizontalPodAutoscaler>(&mut owners)
            .await?;
        self.owners_of::<NetworkPolicy>(&mut owners).await?;
        self.owners_of::<ConfigMap>(&mut owners).await?;
        Ok(owners)
    }

    /// The names of the function's pods (every version's), sorted.
    pub async fn function_pods(
        &self,
        user: &str,
        function: &str,
    ) -> Result<Vec<String>, KubeError> {
        permitted::<Pod>(Verb::List)?;
        let params =
            ListParams::default().labels(&labels::selector(&labels::pod_selector(user, function)));
        let list = self
            .bounded(
                format!(
                    "listing the pods of {user}/{function} in {}",
                    self.namespace
                ),
                self.api::<Pod>().list_metadata(&params),
            )
            .await?;
        let mut names: Vec<String> = list
            .items
            .into_iter()
            .filter_map(|p| p.metadata.name)
            .collect();
        names.sort();
        Ok(names)
    }

    /// The last `lines` lines of one pod's log, each led by its RFC 3339 time,
    /// at most `max_bytes` in all. Not UTF-8 (a function prints what it
    /// likes) is read with U+FFFD in its place.
    pub async fn pod_log(
        &self,
        pod: &str,
        lines: i64,
        max_bytes: i64,
    ) -> Result<String, KubeError> {
        permitted_sub::<Pod>("log", Verb::Get)?;
        let params = LogParams {
            tail_lines: Some(lines),
            limit_bytes: Some(max_bytes),
            timestamps: true,
            ..LogParams::default()
        };
        let action = self.describe::<Pod>("reading the log of", pod);
        let read = async {
            let mut stream = self.api::<Pod>().log_stream(pod, &params).await?;
            let mut bytes = Vec::new();
            stream
                .read_to_end(&mut bytes)
                .await
                .map_err(kube::Error::ReadEvents)?;
            Ok(String::from_utf8_lossy(&bytes).into_owned())
        };
        self.bounded(action, read).await
    }

    /// Every function pod's changes: a list, then a watch, restarted (with
    /// backoff) when it ends or fails. Not bounded by the call timeout: it
    /// runs for the manager's life.
    pub fn watch_pods(
        &self,
    ) -> Result<
        impl Stream<Item = Result<watcher::Event<Pod>, watcher::Error>> + Send + use<>,
        KubeError,
    > {
        permitted::<Pod>(Verb::List)?;
        permitted::<Pod>(Verb::Watch)?;
        let config = watcher::Config::default().labels(&labels::managed_selector());
        Ok(watcher(self.api::<Pod>(), config).default_backoff())
    }
}
