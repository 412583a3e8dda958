//! The fake API server and a runtime wired to it.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};
use skiff_core::names::{FunctionName, UserName};
use skiff_core::naming::{code_config_map_name, env_secret_name, object_name};
use skiff_core::secret::Secret;
use skiff_core::secrets::SecretsKey;
use skiff_core::store::Store;
use skiff_core::tokens::TokenKeys;
use skiff_manager::config::ManagerConfig;
use skiff_manager::kube::api_calls::{API_CALLS, ApiCall, Verb};
use skiff_manager::kube::{KubeRuntime, KubeSettings, SyncOutcome};
use skiff_manager::runtime::SharedRuntime;
use skiff_manager::state::AppState;
use skiff_manager::typecheck::TypeChecker;
use skiff_testkit::{SECRET, TestBackend, TestDb};

pub const NS: &str = "skiff-functions";
pub const HELLO_V1: &str = "export default () => new Response('one');\n";
pub const HELLO_V2: &str = "export default () => new Response('two');\n";

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;
type Responder = tower_test::mock::SendResponse<Response<Body>>;

/// The object kinds a function has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    NetworkPolicy,
    ConfigMap,
    Secret,
    Service,
    Deployment,
    Autoscaler,
}

impl Kind {
    pub fn resource(self) -> &'static str {
        match self {
            Self::ConfigMap => "configmaps",
            Self::Secret => "secrets",
            Self::Service => "services",
            Self::Deployment => "deployments",
            Self::Autoscaler => "horizontalpodautoscalers",
            Self::NetworkPolicy => "networkpolicies",
        }
    }

    pub fn collection(self) -> String {
        let prefix = match self {
            Self::ConfigMap | Self::Secret | Self::Service => "/api/v1".to_owned(),
            Self::Deployment => "/apis/apps/v1".to_owned(),
            Self::Autoscaler => "/apis/autoscaling/v2".to_owned(),
            Self::NetworkPolicy => "/apis/networking.k8s.io/v1".to_owned(),
        };
        format!("{prefix}/namespaces/{NS}/{}", self.resource())
    }

    pub fn api_kind(self) -> &'static str {
        match self {
            Self::ConfigMap => "ConfigMap",
            Self::Secret => "Secret",
            Self::Service => "Service",
            Self::Deployment => "Deployment",
            Self::Autoscaler => "HorizontalPodAutoscaler",
            Self::NetworkPolicy => "NetworkPolicy",
        }
    }
}

/// One request as the fake server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: Method,
    pub path: String,
    pub query: String,
    pub content_type: String,
    pub body: Value,
}

impl Seen {
    /// The API call this request is, by the same (group, resource, verb)
    /// vocabulary as `API_CALLS`.
    pub fn call(&self) -> ApiCall {
        let parts: Vec<&str> = self.path.trim_start_matches('/').split('/').collect();
        // api/v1/namespaces/NS/RES[/NAME] or apis/GROUP/VERSION/namespaces/NS/RES[/NAME]
        let (group, rest) = match parts.first() {
            Some(&"api") => ("", &parts[2..]),
            _ => (parts[1], &parts[3..]),
        };
        assert_eq!(rest[0], "namespaces", "{}", self.path);
        assert_eq!(rest[1], NS, "every call stays in the functions namespace");
        // A subresource (pods/NAME/log) is `resource/subresource`, as RBAC names it.
        let resource = match rest.get(4) {
            Some(sub) => format!("{}/{sub}", rest[2]),
            None => rest[2].to_owned(),
        };
        let named = rest.len() > 3;
        let watch = self.query_value("watch").as_deref() == Some("true");
        let verb = match (&self.method, named) {
            (&Method::PATCH, true) if self.content_type == "application/apply-patch+yaml" => {
                Verb::Apply
            }
            (&Method::PATCH, true) => Verb::Patch,
            (&Method::GET, false) if watch => Verb::Watch,
            (&Method::GET, false) => Verb::List,
            (&Method::GET, true) => Verb::Get,
            (&Method::DELETE, true) => Verb::Delete,
            (&Method::DELETE, false) => Verb::DeleteCollection,
            other => panic!("unexpected call {other:?} {}", self.path),
        };
        let listed = API_CALLS
            .iter()
            .find(|c| c.group == group && c.resource == resource && c.verb == verb);
        *listed.unwrap_or_else(|| panic!("{verb:?} {resource}.{group} is not in API_CALLS"))
    }

    pub fn query_value(&self, key: &str) -> Option<String> {
        self.query.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            (k == key).then(|| percent_decode(v))
        })
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap()
}

/// How the fake server answers one request.
pub enum Reply {
    /// 201 with the applied object (server-side apply created it).
    Created,
    /// 200 with the applied object.
    Ok,
    /// A `Status` failure with this code, reason and message.
    Fail(u16, &'static str, &'static str),
    /// `Status` success (deletes).
    Deleted,
    /// A metadata list of objects owned by these (user, function) pairs.
    List(Vec<(String, String)>),
    /// Never answer (until the test ends).
    Hang,
    /// This status and raw body, as `text/plain` (a pod's log).
    Text(u16, String),
    /// A metadata list of pods with these names.
    Pods(Vec<String>),
    /// 200 with this JSON body.
    Json(Value),
    /// 200 with the applied Deployment as the server holds it at these
    /// replicas (the apply never sets them; a scale did).
    AtReplicas(i32),
}

/// Answers a watch with these events, one JSON object a line, then ends it
/// (the client watches again).
pub fn send_watch_events(send: Responder, events: &[Value]) {
    let mut body = Vec::new();
    for e in events {
        body.extend_from_slice(&serde_json::to_vec(e).unwrap());
        body.push(b'\n');
    }
    let resp = Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .body(Body::from(body))
        .unwrap();
    send.send_response(resp);
}

pub struct FakeApi {
    handle: Handle,
    parked: Vec<Responder>,
    pub seen: Vec<Seen>,
}

fn status_body(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": if code < 400 { "Success" } else { "Failure" },
        "code": code, "reason": reason, "message": message,
    })
}

/// A `PartialObjectMetadataList` (what a metadata-only list answers) of the
/// objects with these `metadata`s.
fn metadata_list(metadata: impl Iterator<Item = Value>) -> Value {
    let items: Vec<Value> = metadata
        .map(|m| json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": m}))
        .collect();
    json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadataList",
           "metadata": {}, "items": items})
}

fn respond(send: Responder, status: u16, body: &Value) {
    let resp = Response::builder()
        .status(StatusCode::from_u16(status).unwrap())
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(body).unwrap()))
        .unwrap();
    send.send_response(resp);
}

impl FakeApi {
    /// The next request, which must come within 15 s (a deploy type-checks
    /// with the real Deno first: seconds on a loaded machine).
    pub async fn next(&mut self) -> (Seen, Responder) {
        let (req, send) = tokio::time::timeout(Duration::from_secs(15), self.handle.next_request())
            .await
            .expect("the runtime made no further API call within 15 s")
            .expect("the client was dropped");
        let (parts, body) = req.into_parts();
        let bytes = body.collect_bytes().await.unwrap();
        let seen = Seen {
            method: parts.method.clone(),
            path: parts.uri.path().to_owned(),
            query: parts.uri.query().unwrap_or_default().to_owned(),
            content_type: parts
                .headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned(),
            body: if bytes.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&bytes).unwrap()
            },
        };
        // Every request must be a listed call.
        seen.call();
        self.seen.push(seen.clone());
        (seen, send)
    }

    /// Answers the next request with `reply` and returns it.
    pub async fn answer(&mut self, reply: Reply) -> Seen {
        let (seen, send) = self.next().await;
        match reply {
            Reply::Created => respond(send, 201, &seen.body),
            Reply::Ok => respond(send, 200, &seen.body),
            Reply::Fail(code, reason, message) => {
                respond(send, code, &status_body(code, reason, message))
            }
            Reply::Deleted => respond(send, 200, &status_body(200, "", "")),
            Reply::List(owners) => {
                let items = owners.iter().map(|(u, f)| {
                    json!({"name": object_name(u, f), "namespace": NS,
                           "labels": {"app.kubernetes.io/managed-by": "skiff-manager",
                                      "skiff.dev/user": u, "skiff.dev/function": f}})
                });
                respond(send, 200, &metadata_list(items))
            }
            Reply::Hang => self.parked.push(send),
            Reply::Text(status, text) => {
                let resp = Response::builder()
                    .status(StatusCode::from_u16(status).unwrap())
                    .header("content-type", "text/plain")
                    .body(Body::from(text.into_bytes()))
                    .unwrap();
                send.send_response(resp);
            }
            Reply::Json(body) => respond(send, 200, &body),
            Reply::AtReplicas(n) => {
                let mut held = seen.body.clone();
                held["spec"]["replicas"] = json!(n);
                respond(send, 200, &held)
            }
            Reply::Pods(names) => {
                let items = names.iter().map(|n| json!({"name": n, "namespace": NS}));
                respond(send, 200, &metadata_list(items))
            }
        }
        seen
    }

    /// Expects a server-side apply of `kind` named `name` and answers it.
    pub async fn expect_apply(&mut self, kind: Kind, name: &str, reply: Reply) -> Seen {
        let seen = self.answer(reply).await;
        assert_eq!(seen.method, Method::PATCH, "{seen:?}");
        assert_eq!(seen.path, format!("{}/{name}", kind.collection()));
        assert_eq!(seen.content_type, "application/apply-patch+yaml");
        assert_eq!(
            seen.query_value("fieldManager").as_deref(),
            Some("skiff-manager")
        );
        assert_eq!(seen.query_value("force").as_deref(), Some("true"));
        assert_eq!(seen.body["kind"], kind.api_kind());
        assert_eq!(seen.body["metadata"]["name"], name);
        assert_eq!(seen.body["metadata"]["namespace"], NS);
        seen
    }

    /// Expects the six applies of one version (NetworkPolicy, code ConfigMap,
    /// env Secret, Service, Deployment, HorizontalPodAutoscaler), then the
    /// prune of old code ConfigMaps; returns the applied bodies in that order.
    pub async fn expect_version(&mut self, user: &str, function: &str, version: i64) -> Vec<Seen> {
        self.expect_version_deployed(user, function, version, Reply::Ok)
            .await
    }

    /// [`Self::expect_version`] with the Deployment's apply answered `deployment`.
    pub async fn expect_version_deployed(
        &mut self,
        user: &str,
        function: &str,
        version: i64,
        deployment: Reply,
    ) -> Vec<Seen> {
        let name = object_name(user, function);
        let mut out = self
            .expect_policy_and_code(user, function, version, Reply::Created)
            .await;
        out.push(self.expect_apply(Kind::Service, &name, Reply::Ok).await);
        out.push(self.expect_apply(Kind::Deployment, &name, deployment).await);
        out.push(self.expect_apply(Kind::Autoscaler, &name, Reply::Ok).await);
        out.push(self.expect_prune(user, function, version).await);
        out
    }

    /// Expects the first three applies of a version: the NetworkPolicy
    /// (answered Ok), the code ConfigMap (answered `code`), then the env
    /// Secret (answered Ok).
    pub async fn expect_policy_and_code(
        &mut self,
        user: &str,
        function: &str,
        version: i64,
        code: Reply,
    ) -> Vec<Seen> {
        let name = object_name(user, function);
        let policy = self
            .expect_apply(Kind::NetworkPolicy, &name, Reply::Ok)
            .await;
        let config_map = code_config_map_name(user, function, version);
        let code = self.expect_apply(Kind::ConfigMap, &config_map, code).await;
        let secret = self
            .expect_apply(Kind::Secret, &env_secret_name(user, function), Reply::Ok)
            .await;
        vec![policy, code, secret]
    }

    /// Expects the deletion of code ConfigMaps older than `version - 1`.
    pub async fn expect_prune(&mut self, user: &str, function: &str, version: i64) -> Seen {
        let seen = self.answer(Reply::Deleted).await;
        assert_eq!(seen.method, Method::DELETE);
        assert_eq!(seen.path, Kind::ConfigMap.collection());
        let keep = if version > 1 {
            format!("{version},{}", version - 1)
        } else {
            "1".to_owned()
        };
        assert_eq!(
            seen.query_value("labelSelector").unwrap(),
            format!(
                "app.kubernetes.io/managed-by=skiff-manager,skiff.dev/user={user},\
                 skiff.dev/function={function},skiff.dev/version notin ({keep})"
            )
        );
        seen
    }

    /// Expects a merge patch of the `scale` of alice's `function`'s
    /// Deployment to `replicas`, and answers it (`fail`: with that status).
    pub async fn expect_scale(&mut self, function: &str, replicas: i32, fail: Option<u16>) -> Seen {
        let name = object_name("alice", function);
        let scale = json!({"apiVersion": "autoscaling/v1", "kind": "Scale",
                           "metadata": {"name": name, "namespace": NS},
                           "spec": {"replicas": replicas}});
        let reply = match fail {
            None => Reply::Json(scale),
            Some(code) => Reply::Fail(code, "InternalError", "etcd is down"),
        };
        let seen = self.answer(reply).await;
        assert_eq!(seen.method, Method::PATCH);
        assert_eq!(
            seen.path,
            format!("{}/{name}/scale", Kind::Deployment.collection())
        );
        assert_eq!(seen.content_type, "application/merge-patch+json");
        assert_eq!(seen.body, json!({"spec": {"replicas": replicas}}));
        assert_eq!(seen.call().verb, Verb::Patch);
        seen
    }

    /// Expects a list of `kind` by the managed-by label, answered with `owners`.
    pub async fn expect_list(&mut self, kind: Kind, owners: Vec<(String, String)>) -> Seen {
        let seen = self.answer(Reply::List(owners)).await;
        assert_eq!(seen.method, Method::GET);
        assert_eq!(seen.path, kind.collection());
        assert_eq!(
            seen.query_value("labelSelector").as_deref(),
            Some("app.kubernetes.io/managed-by=skiff-manager")
        );
        seen
    }

    /// Expects every object of `user`/`function` to be deleted.
    pub async fn expect_delete_all(&mut self, user: &str, function: &str, reply_404: bool) {
        let name = object_name(user, function);
        let gone = || {
            if reply_404 {
                Reply::Fail(404, "NotFound", "not found")
            } else {
                Reply::Deleted
            }
        };
        for kind in [Kind::Autoscaler, Kind::Deployment, Kind::Service] {
            let seen = self.answer(gone()).await;
            assert_eq!(
                (seen.method.clone(), seen.path.clone()),
                (Method::DELETE, format!("{}/{name}", kind.collection()))
            );
        }
        let seen = self.answer(gone()).await;
        assert_eq!(
            (seen.method.clone(), seen.path.clone()),
            (
                Method::DELETE,
                format!(
                    "{}/{}",
                    Kind::Secret.collection(),
                    env_secret_name(user, function)
                )
            )
        );
        let seen = self.answer(Reply::Deleted).await;
        assert_eq!(
            (seen.method.clone(), seen.path.clone()),
            (Method::DELETE, Kind::ConfigMap.collection())
        );
        assert_eq!(
            seen.query_value("labelSelector").unwrap(),
            format!(
                "app.kubernetes.io/managed-by=skiff-manager,skiff.dev/user={user},skiff.dev/function={function}"
            )
        );
        let seen = self.answer(gone()).await;
        assert_eq!(
            (seen.method.clone(), seen.path.clone()),
            (
                Method::DELETE,
                format!("{}/{name}", Kind::NetworkPolicy.collection())
            )
        );
    }

    /// Asserts the runtime makes no further call for a moment.
    pub async fn expect_silence(&mut self) {
        let more =
            tokio::time::timeout(Duration::from_millis(200), self.handle.next_request()).await;
        if let Ok(Some((req, _))) = more {
            panic!("unexpected call {} {}", req.method(), req.uri());
        }
    }

    pub fn calls(&self) -> BTreeSet<ApiCall> {
        self.seen.iter().map(Seen::call).collect()
    }
}

pub struct Env {
    pub runtime: Arc<KubeRuntime>,
    pub store: Store,
    pub api: FakeApi,
    pub user_id: i64,
    _db: TestDb,
}

pub fn settings() -> KubeSettings {
    KubeSettings {
        namespace: NS.into(),
        api_timeout_secs: 2,
        ..KubeSettings::default()
    }
}

/// A runtime on a fresh database holding user `alice`, talking to a fake API.
pub async fn env(backend: TestBackend, settings: KubeSettings) -> Env {
    env_with_key(backend, settings, None).await
}

/// The secrets key tests seal with.
pub fn secrets_key(byte: u8) -> SecretsKey {
    SecretsKey::from_bytes(&[byte; 32]).unwrap()
}

/// [`env`] with the manager's secrets key (`None`: the manager has none).
pub async fn env_with_key(
    backend: TestBackend,
    settings: KubeSettings,
    key: Option<SecretsKey>,
) -> Env {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    let user = store
        .create_user(&UserName::parse("alice").unwrap(), "not-a-real-hash")
        .await
        .unwrap();
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, NS);
    let policy = skiff_core::settings::defaults().unwrap();
    let runtime = Arc::new(
        KubeRuntime::new(client, store.clone(), settings).with_function_config(key, policy),
    );
    Env {
        runtime,
        store,
        api: FakeApi {
            handle,
            parked: Vec::new(),
            seen: Vec::new(),
        },
        user_id: user.id,
        _db: db,
    }
}

impl Env {
    /// Stores a new version of alice's function, as a deploy does.
    pub async fn store_version(&self, function: &str, source: &str) -> i64 {
        self.store
            .deploy(
                self.user_id,
                &UserName::parse("alice").unwrap(),
                &FunctionName::parse(function).unwrap(),
                source.as_bytes(),
            )
            .await
            .unwrap()
            .version
    }

    /// Deletes alice's function from the store, as a delete does.
    pub async fn delete_stored(&self, function: &str) {
        let alice = UserName::parse("alice").unwrap();
        let function = FunctionName::parse(function).unwrap();
        let deleted = self.store.delete_function(self.user_id, &alice, &function);
        assert!(deleted.await.unwrap(), "{function} was stored");
    }

    /// Starts `sync` of alice's function on its own task (the fake API is
    /// driven by the test meanwhile).
    pub fn sync(&self, function: &str, announce: bool) -> tokio::task::JoinHandle<SyncOutcome> {
        let runtime = self.runtime.clone();
        let function = function.to_owned();
        tokio::spawn(async move { runtime.sync("alice", &function, announce).await })
    }

    /// The manager's state on this runtime and store (the checker on the real
    /// Deno, files in `data_dir`), as the HTTP API runs on it.
    pub async fn app_state(&self, data_dir: &Path) -> AppState {
        let deno = skiff_core::deno::locate(None)
            .await
            .map_err(|e| e.to_string());
        let checker = TypeChecker::new(deno, data_dir).unwrap();
        let config = ManagerConfig::new("sqlite://unused", Secret::new(SECRET), data_dir.into());
        let tokens = TokenKeys::new(&Secret::new(SECRET), 3600).unwrap();
        let runtime: SharedRuntime = self.runtime.clone();
        AppState::new(self.store.clone(), tokens, checker, config).with_runtime(Some(runtime))
    }

    /// A token of alice's, as a login gives.
    pub fn token(&self) -> String {
        let now = chrono::Utc::now().timestamp();
        let (token, _) = TokenKeys::new(&Secret::new(SECRET), 3600)
            .unwrap()
            .issue("alice", self.user_id, 0, now)
            .unwrap();
        token
    }

    /// The manager's HTTP API on [`Env::app_state`], as a test service.
    pub async fn http_api(
        &self,
        data_dir: &Path,
    ) -> impl actix_web::dev::Service<
        actix_http::Request,
        Response = actix_web::dev::ServiceResponse,
        Error = actix_web::Error,
    > + use<> {
        let state = actix_web::web::Data::new(self.app_state(data_dir).await);
        let app = actix_web::App::new()
            .app_data(state)
            .configure(skiff_manager::routes::configure);
        actix_web::test::init_service(app).await
    }

    pub async fn state(&self, function: &str) -> Option<skiff_core::store::RuntimeState> {
        self.store
            .runtime_state(self.user_id, &FunctionName::parse(function).unwrap())
            .await
            .unwrap()
    }
}

/// A function pod of alice's `function` at `version`, as the API serves it.
pub fn pod(name: &str, function: &str, version: i64, status: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": name, "namespace": NS, "resourceVersion": "1",
            "labels": {
                "app.kubernetes.io/managed-by": "skiff-manager",
                "skiff.dev/user": "alice", "skiff.dev/function": function,
                "skiff.dev/version": version.to_string(),
            },
        },
        "status": status,
    })
}

/// A pod status whose Ready condition is `ready`.
pub fn pod_ready(ready: bool) -> Value {
    json!({"phase": "Running", "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]})
}

/// A pod status of a runtime in a crash loop that last exited with `message`.
pub fn pod_crashing(message: &str) -> Value {
    json!({
        "phase": "Running",
        "conditions": [{"type": "Ready", "status": "False"}],
        "containerStatuses": [{
            "name": "runtime", "image": "skiff/client-runtime", "imageID": "", "ready": false,
            "restartCount": 4,
            "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 1m20s"}},
            "lastState": {"terminated": {"exitCode": 78, "reason": "Error", "message": message}},
        }],
    })
}

/// A full PodList (what the watch's first listing reads).
pub fn pod_list(pods: Vec<Value>) -> Value {
    json!({"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "1"}, "items": pods})
}

/// A watch event of `kind` (ADDED, MODIFIED, DELETED) for `object`.
pub fn watch_event(kind: &str, object: Value) -> Value {
    json!({"type": kind, "object": object})
}

impl FakeApi {
    /// Expects the pod watch's listing (by the managed-by label) and answers
    /// it with `pods`.
    pub async fn expect_pod_listing(&mut self, pods: Vec<Value>) -> Seen {
        let seen = self.answer(Reply::Json(pod_list(pods))).await;
        assert_eq!(
            (seen.method.clone(), seen.path.clone()),
            (Method::GET, format!("/api/v1/namespaces/{NS}/pods"))
        );
        assert_eq!(seen.call().verb, Verb::List);
        assert_eq!(
            seen.query_value("labelSelector").as_deref(),
            Some("app.kubernetes.io/managed-by=skiff-manager")
        );
        seen
    }

    /// Expects the pod watch's watch request; returns it unanswered.
    pub async fn expect_pod_watch(&mut self) -> Responder {
        let (seen, send) = self.next().await;
        assert_eq!(seen.path, format!("/api/v1/namespaces/{NS}/pods"));
        assert_eq!(seen.call().verb, Verb::Watch, "{seen:?}");
        assert_eq!(
            seen.query_value("labelSelector").as_deref(),
            Some("app.kubernetes.io/managed-by=skiff-manager")
        );
        send
    }
}

impl Env {
    /// Waits (bounded) until alice's `function` has a recorded state that
    /// `done` accepts, and returns it.
    pub async fn state_when(
        &self,
        function: &str,
        done: impl Fn(&skiff_core::store::RuntimeState) -> bool,
    ) -> skiff_core::store::RuntimeState {
        for _ in 0..250 {
            if let Some(s) = self.state(function).await
                && done(&s)
            {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!(
            "state of {function} never came: {:?}",
            self.state(function).await
        );
    }
}
