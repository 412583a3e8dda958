//! The calls a user makes to the management API, and a call of a function
//! through the router, over HTTP like any client.

use serde_json::{Value, json};

/// The password of every user the tests register (unless they say another).
pub const PASSWORD: &str = "correct horse battery";

/// A client of one manager's API at `base` (`http://127.0.0.1:<port>`).
#[derive(Clone)]
pub struct ApiClient {
    pub base: String,
    pub http: reqwest::Client,
}

impl ApiClient {
    pub fn new(base: impl Into<String>) -> ApiClient {
        Self::with_http(base, reqwest::Client::new())
    }

    /// With a client of the caller's (timeouts, redirects, local address).
    pub fn with_http(base: impl Into<String>, http: reqwest::Client) -> ApiClient {
        ApiClient {
            base: base.into(),
            http,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> reqwest::Response {
        self.http
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// `POST /register` with [`PASSWORD`].
    pub async fn register(&self, user: &str) -> reqwest::Response {
        self.register_as(user, PASSWORD).await
    }

    pub async fn register_as(&self, user: &str, password: &str) -> reqwest::Response {
        self.post_json(
            "/register",
            &json!({"username": user, "password": password}),
        )
        .await
    }

    pub async fn login(&self, user: &str, password: &str) -> reqwest::Response {
        self.post_json("/login", &json!({"username": user, "password": password}))
            .await
    }

    /// Registers `user` (201) with [`PASSWORD`] and returns a fresh token.
    pub async fn token(&self, user: &str) -> String {
        self.token_as(user, PASSWORD).await
    }

    /// Registers `user` (201) with `password` and returns a fresh token.
    pub async fn token_as(&self, user: &str, password: &str) -> String {
        let r = self.register_as(user, password).await;
        assert_eq!(r.status(), 201, "register {user}");
        self.login_token_as(user, password).await
    }

    /// Logs a registered `user` in (200) with [`PASSWORD`]: a fresh token.
    pub async fn login_token(&self, user: &str) -> String {
        self.login_token_as(user, PASSWORD).await
    }

    async fn login_token_as(&self, user: &str, password: &str) -> String {
        let r = self.login(user, password).await;
        assert_eq!(r.status(), 200, "login {user}");
        r.json::<Value>().await.unwrap()["token"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// `POST /func?name=…`; an error when the manager does not answer.
    pub async fn try_deploy(
        &self,
        token: &str,
        name: &str,
        source: &str,
    ) -> reqwest::Result<reqwest::Response> {
        self.http
            .post(self.url(&format!("/func?name={name}")))
            .bearer_auth(token)
            .body(source.to_owned())
            .send()
            .await
    }

    pub async fn deploy(&self, token: &str, name: &str, source: &str) -> reqwest::Response {
        self.try_deploy(token, name, source).await.unwrap()
    }

    /// Deploys, asserts success and returns the new version number.
    pub async fn deploy_ok(&self, token: &str, name: &str, source: &str) -> i64 {
        let r = self.deploy(token, name, source).await;
        let status = r.status();
        let body: Value = r.json().await.unwrap();
        assert!(status.is_success(), "deploy {name}: {status} {body}");
        body["version"].as_i64().unwrap()
    }

    /// `GET path` with the token; an error when the manager does not answer.
    pub async fn try_get(&self, token: &str, path: &str) -> reqwest::Result<reqwest::Response> {
        self.http
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
    }

    pub async fn get(&self, token: &str, path: &str) -> reqwest::Response {
        self.try_get(token, path).await.unwrap()
    }

    /// `GET /func/<name>`.
    pub async fn function(&self, token: &str, name: &str) -> reqwest::Response {
        self.get(token, &format!("/func/{name}")).await
    }

    /// `GET /func/<name>/logs` with an optional query (`"?tail=1"`, or `""`).
    pub async fn logs(&self, token: &str, name: &str, query: &str) -> reqwest::Response {
        self.get(token, &format!("/func/{name}/logs{query}")).await
    }

    pub async fn delete(&self, token: &str, path: &str) -> reqwest::Response {
        self.http
            .delete(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    /// `DELETE /func/<name>`, asserting 204.
    pub async fn delete_function(&self, token: &str, name: &str) {
        let r = self.delete(token, &format!("/func/{name}")).await;
        assert_eq!(r.status(), 204, "delete {name}");
    }

    /// `GET <router>/fn/<user>/<name><rest>`: a call of the function.
    pub async fn call(
        &self,
        router: &str,
        user: &str,
        name: &str,
        rest: &str,
    ) -> reqwest::Response {
        self.http
            .get(format!("{router}/fn/{user}/{name}{rest}"))
            .send()
            .await
            .unwrap()
    }
}

/// `(status, error code)` of an answer; the code is empty on success.
pub async fn status_and_code(r: reqwest::Response) -> (u16, String) {
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    let code = body["error"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    (status, code)
}
