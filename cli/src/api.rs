//! A small blocking client for the manager API. Non-2xx answers become errors
//! carrying the server's `error.message`.

use std::time::Duration;

use anyhow::{Context, anyhow};
use serde_json::Value;
use ureq::Agent;

pub struct Api {
    agent: Agent,
    pub server: String,
    token: Option<String>,
}

pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn json(&self) -> anyhow::Result<Value> {
        serde_json::from_slice(&self.body).context("the server answered something that is not JSON")
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn error_message(status: u16, body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| {
            let code = v["error"]["code"].as_str()?.to_owned();
            let msg = v["error"]["message"].as_str()?.to_owned();
            Some(format!("{msg} ({status} {code})"))
        })
        .unwrap_or_else(|| format!("HTTP {status}: {}", String::from_utf8_lossy(body).trim()))
}

impl Api {
    pub fn new(server: &str, token: Option<String>) -> Self {
        let agent: Agent = Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(120)))
            .build()
            .into();
        Self {
            agent,
            server: server.trim_end_matches('/').to_owned(),
            token,
        }
    }

    fn token(&self) -> anyhow::Result<&str> {
        self.token
            .as_deref()
            .ok_or_else(|| anyhow!("not logged in: run `skiff login` first"))
    }

    /// Sends a request; `auth` adds the saved token. Returns the answer whatever its status.
    pub fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<(&str, Vec<u8>)>,
        auth: bool,
    ) -> anyhow::Result<Answer> {
        let url = format!("{}{}", self.server, path);
        let mut req = ureq::http::Request::builder().method(method).uri(&url);
        if auth {
            req = req.header("Authorization", format!("Bearer {}", self.token()?));
        }
        let (ctype, bytes) = body.unwrap_or(("application/octet-stream", Vec::new()));
        req = req.header("Content-Type", ctype);
        let req = req.body(bytes).context("building the request")?;
        let mut resp = self
            .agent
            .run(req)
            .with_context(|| format!("cannot reach {url}"))?;
        let status = resp.status().as_u16();
        let body = resp
            .body_mut()
            .with_config()
            .limit(512 * 1024 * 1024)
            .read_to_vec()
            .context("reading the answer")?;
        Ok(Answer { status, body })
    }

    /// Like `call`, but a non-2xx answer is an error.
    pub fn ok(
        &self,
        method: &str,
        path: &str,
        body: Option<(&str, Vec<u8>)>,
        auth: bool,
    ) -> anyhow::Result<Answer> {
        let a = self.call(method, path, body, auth)?;
        if (200..300).contains(&a.status) {
            Ok(a)
        } else {
            Err(anyhow!(error_message(a.status, &a.body)))
        }
    }
}
