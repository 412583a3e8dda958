//! The Language Server Protocol, as much of it as a warm checker speaks to
//! `deno lsp`: framed JSON-RPC over the process's stdin/stdout, one request
//! at a time (a worker is leased to one build at a time), with the server's
//! own requests answered inline and its notifications dropped. Diagnostics
//! are pulled (`textDocument/diagnostic`), so each answer is complete: no
//! guessing when pushed diagnostics have settled.

use anyhow::{Context, bail};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{ChildStdin, ChildStdout};

/// A frame larger than this ends the worker: diagnostics of a hostile source
/// must not make the manager buffer without bound.
const MAX_FRAME: usize = 16 << 20;
/// Header lines are short; a longer one is not the protocol.
const MAX_HEADER_LINE: usize = 1024;

/// Deno's settings as the server asks for them: on, no lint (deploys are
/// checked, not linted).
fn deno_settings() -> Value {
    json!({ "enable": true, "lint": false, "unstable": [] })
}

pub struct Conn {
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    next_id: u64,
}

impl Conn {
    pub fn new(stdin: ChildStdin, stdout: ChildStdout) -> Self {
        Self {
            stdin,
            stdout: BufReader::new(stdout),
            next_id: 1,
        }
    }

    /// `initialize` + `initialized` for a workspace rooted at `root_uri`,
    /// asking for pull diagnostics.
    pub async fn initialize(&mut self, root_uri: &str) -> anyhow::Result<()> {
        let params = json!({
            "processId": std::process::id(),
            "rootUri": root_uri,
            "workspaceFolders": [{ "uri": root_uri, "name": "warm" }],
            "capabilities": {
                "textDocument": { "diagnostic": { "dynamicRegistration": false } },
                "workspace": { "configuration": true, "workspaceFolders": true },
            },
            "initializationOptions": deno_settings(),
        });
        let answer = self.request("initialize", params).await?;
        if answer.pointer("/capabilities/diagnosticProvider").is_none() {
            bail!("deno lsp offers no pull diagnostics");
        }
        self.notify("initialized", json!({})).await
    }

    pub async fn open(&mut self, uri: &str, language: &str, text: &str) -> anyhow::Result<()> {
        self.notify(
            "textDocument/didOpen",
            json!({ "textDocument": { "uri": uri, "languageId": language, "version": 1, "text": text } }),
        )
        .await
    }

    pub async fn close(&mut self, uri: &str) -> anyhow::Result<()> {
        self.notify(
            "textDocument/didClose",
            json!({ "textDocument": { "uri": uri } }),
        )
        .await
    }

    /// The document's diagnostics, all sources, as the server reports them.
    pub async fn diagnostics(&mut self, uri: &str) -> anyhow::Result<Vec<Value>> {
        let answer = self
            .request(
                "textDocument/diagnostic",
                json!({ "textDocument": { "uri": uri } }),
            )
            .await?;
        match answer.get("items") {
            Some(Value::Array(items)) => Ok(items.clone()),
            _ => bail!("a diagnostic report without items"),
        }
    }

    /// `shutdown` then `exit`; the caller kills the process if it lingers.
    pub async fn shutdown(&mut self) -> anyhow::Result<()> {
        self.request("shutdown", Value::Null).await?;
        self.notify("exit", Value::Null).await
    }

    async fn request(&mut self, method: &str, params: Value) -> anyhow::Result<Value> {
        let id = self.next_id;
        self.next_id += 1;
        self.write(&json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params }))
            .await?;
        loop {
            let msg = self.read().await?;
            match (msg.get("id"), msg.get("method")) {
                // The server's own request: answer and keep waiting.
                (Some(req_id), Some(Value::String(m))) => {
                    let result = server_request_result(m, msg.get("params"));
                    let reply = json!({ "jsonrpc": "2.0", "id": req_id, "result": result });
                    self.write(&reply).await?;
                }
                (Some(got), None) if got.as_u64() == Some(id) => {
                    if let Some(e) = msg.get("error") {
                        bail!("deno lsp refused {method}: {e}");
                    }
                    return Ok(msg.get("result").cloned().unwrap_or(Value::Null));
                }
                // A notification, or an answer to nothing we wait for.
                _ => {}
            }
        }
    }

    async fn notify(&mut self, method: &str, params: Value) -> anyhow::Result<()> {
        self.write(&json!({ "jsonrpc": "2.0", "method": method, "params": params }))
            .await
    }

    async fn write(&mut self, msg: &Value) -> anyhow::Result<()> {
        let body = serde_json::to_vec(msg).context("encoding a message")?;
        let mut frame = format!("Content-Length: {}\r\n\r\n", body.len()).into_bytes();
        frame.extend_from_slice(&body);
        self.stdin
            .write_all(&frame)
            .await
            .context("writing to deno lsp")?;
        self.stdin.flush().await.context("writing to deno lsp")
    }

    async fn read(&mut self) -> anyhow::Result<Value> {
        let mut length: Option<usize> = None;
        loop {
            let mut line = Vec::new();
            let n = (&mut self.stdout)
                .take(MAX_HEADER_LINE as u64)
                .read_until(b'\n', &mut line)
                .await
                .context("reading from deno lsp")?;
            if n == 0 {
                bail!("deno lsp closed its output");
            }
            if line.last() != Some(&b'\n') {
                bail!("deno lsp sent an overlong header line");
            }
            let line = String::from_utf8_lossy(&line);
            let line = line.trim();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':')
                && k.trim().eq_ignore_ascii_case("content-length")
            {
                length = Some(v.trim().parse().context("a bad Content-Length")?);
            }
        }
        let Some(len) = length else {
            bail!("a frame without Content-Length");
        };
        if len > MAX_FRAME {
            bail!("deno lsp sent a {len}-byte frame, over the {MAX_FRAME}-byte limit");
        }
        let mut body = vec![0; len];
        self.stdout
            .read_exact(&mut body)
            .await
            .context("reading a frame")?;
        serde_json::from_slice(&body).context("a frame that is not JSON")
    }
}

/// What the client answers to the server's requests: Deno's settings for
/// each configuration item asked, nothing for the rest (progress tokens,
/// capability registrations).
fn server_request_result(method: &str, params: Option<&Value>) -> Value {
    match method {
        "workspace/configuration" => {
            let n = params
                .and_then(|p| p.get("items"))
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            Value::Array(vec![deno_settings(); n])
        }
        _ => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_configuration_item_gets_denos_settings() {
        let params = json!({ "items": [{ "section": "deno" }, { "section": "typescript" }] });
        let r = server_request_result("workspace/configuration", Some(&params));
        assert_eq!(r.as_array().map(Vec::len), Some(2));
        assert_eq!(r[0]["enable"], true);
        assert_eq!(r[1]["lint"], false);
        assert_eq!(
            server_request_result("window/workDoneProgress/create", None),
            Value::Null
        );
    }
}
