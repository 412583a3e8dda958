//! Raw HTTP/1.1 on a socket, for requests no client library would send, from a
//! chosen loopback source address (all of 127/8 is loopback on Linux, so each
//! test client can be its own "address").

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// A connection to `to` from `127.0.0.<octet>`.
pub async fn connect_from(octet: u8, to: SocketAddr) -> TcpStream {
    let sock = TcpSocket::new_v4().unwrap();
    sock.bind(SocketAddr::from(([127, 0, 0, octet], 0)))
        .unwrap();
    sock.connect(to).await.unwrap()
}

/// A response as read off the wire (informational `1xx` heads skipped).
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    /// Head and whatever of the body arrived, as text.
    pub text: String,
    /// Whether the server closed the connection (false: still open when we
    /// stopped waiting).
    pub closed: bool,
}

impl Answer {
    pub fn from_bytes(buf: &[u8]) -> Self {
        let mut text = String::from_utf8_lossy(buf).into_owned();
        while status_of(&text).is_some_and(|s| (100..200).contains(&s) && s != 101) {
            match text.find("\r\n\r\n") {
                Some(i) => text = text[i + 4..].to_owned(),
                None => break,
            }
        }
        Self {
            status: status_of(&text).unwrap_or(0),
            text,
            closed: false,
        }
    }

    fn has_whole_head_and_sized_body(&self) -> bool {
        let Some((_, body)) = self.text.split_once("\r\n\r\n") else {
            return false;
        };
        let length = self
            .header("content-length")
            .and_then(|l| l.parse::<usize>().ok());
        length.is_none_or(|n| body.len() >= n)
    }

    pub fn header(&self, name: &str) -> Option<String> {
        let head = self.text.split("\r\n\r\n").next()?;
        head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    }

    /// The body as JSON (the router's errors and the echo functions' answers).
    pub fn json(&self) -> Value {
        let body = self.text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        let start = body.find('{').unwrap_or(0);
        let end = body.rfind('}').map_or(body.len(), |i| i + 1);
        serde_json::from_str(&body[start..end])
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }

    pub fn error_code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

fn status_of(text: &str) -> Option<u16> {
    text.starts_with("HTTP/")
        .then(|| text.split_whitespace().nth(1)?.parse().ok())
        .flatten()
}

/// Sends `raw` from `127.0.0.<octet>` and reads until the server closes (or 20 s).
pub async fn exchange_from(octet: u8, to: SocketAddr, raw: &[u8]) -> Answer {
    let mut c = connect_from(octet, to).await;
    c.write_all(raw).await.unwrap();
    read_to_close(&mut c, Duration::from_secs(20)).await
}

/// What a test ever keeps of one answer. A client that reads an endless
/// stream the server failed to cut off would otherwise grow without bound
/// (a CI run died of that: SIGKILL while reading at loopback speed).
pub const READ_CAP: usize = 16 * 1024 * 1024;

/// Reads until the server closes the connection (a reset counts), `within`
/// passes or [`READ_CAP`] bytes have come; only the first counts as `closed`.
pub async fn read_to_close(c: &mut TcpStream, within: Duration) -> Answer {
    let mut buf = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    let mut chunk = vec![0u8; 64 * 1024];
    let mut closed = false;
    while buf.len() < READ_CAP {
        match tokio::time::timeout_at(deadline, c.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => break,
        }
    }
    let mut answer = Answer::from_bytes(&buf);
    answer.closed = closed;
    answer
}

/// Reads until a final response head has arrived (or `within` passes) and
/// returns it, with the whole body when it has a `Content-Length`; the rest of
/// a streamed body is left unread.
pub async fn read_head(c: &mut TcpStream, within: Duration) -> Option<Answer> {
    let mut buf = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let answer = Answer::from_bytes(&buf);
        if answer.status >= 101 && answer.has_whole_head_and_sized_body() {
            return Some(answer);
        }
        let mut chunk = [0u8; 4096];
        match tokio::time::timeout_at(deadline, c.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return None,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// A request with `Connection: close` and the given extra header lines.
pub fn request(method: &str, path: &str, headers: &[&str], body: &[u8]) -> Vec<u8> {
    let mut r = format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
    for h in headers {
        r.push_str(h);
        r.push_str("\r\n");
    }
    if !body.is_empty() {
        r.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    r.push_str("\r\n");
    [r.into_bytes(), body.to_vec()].concat()
}
