//! `loadgen`: the small HTTP/1.1 load generator of the Skiff benchmarks.
//!
//! Every target is `http://host:port/path` on this machine; every run is bounded
//! in requests and time and stops by itself. Results are printed as one JSON
//! object on stdout.
//!
//! ```text
//! loadgen rate  --url URL --rate R --duration S [--connections C] [--warmup S]
//! loadgen burst --url URL [--url URL ...] [--timeout S]
//! ```
//!
//! `rate` is open-loop: request `i` is due at `start + i / R`. `C` keep-alive
//! connections take the due requests; when all are busy the next one goes out
//! late (the lag is reported, so a generator that could not keep up is seen).
//! Latency is measured per request from the moment it is written to the moment
//! the whole response body has been read.
//!
//! `burst` opens one connection per URL first, then sends every request at the
//! same instant; each latency is measured from that instant.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// A request gets this long, then counts as an error (timeout).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone)]
struct Target {
    addr: String,
    path: String,
}

fn parse_url(u: &str) -> Result<Target, String> {
    let rest = u
        .strip_prefix("http://")
        .ok_or_else(|| format!("only http:// URLs: {u}"))?;
    let (addr, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if addr.is_empty() {
        return Err(format!("no host in {u}"));
    }
    Ok(Target {
        addr: addr.to_owned(),
        path: path.to_owned(),
    })
}

type Sender = http1::SendRequest<Empty<Bytes>>;

async fn connect(t: &Target) -> Result<Sender, String> {
    let s = TcpStream::connect(&t.addr)
        .await
        .map_err(|e| format!("connect {}: {e}", t.addr))?;
    let _ = s.set_nodelay(true);
    let (sender, conn) = http1::handshake(TokioIo::new(s))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// One GET; returns the status once the whole body has been read.
async fn get(sender: &mut Sender, t: &Target) -> Result<u16, String> {
    let exchange = async {
        sender.ready().await.map_err(|e| e.to_string())?;
        let req = hyper::Request::get(t.path.as_str())
            .header(hyper::header::HOST, t.addr.as_str())
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        resp.into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?;
        Ok(status)
    };
    match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
        Ok(r) => r,
        Err(_) => Err("timeout".to_owned()),
    }
}

/// Percentiles of `v` (nanoseconds) in milliseconds; sorts `v`.
fn summary_ms(v: &mut [u64]) -> Value {
    if v.is_empty() {
        return Value::Null;
    }
    v.sort_unstable();
    let pick = |q: f64| {
        // Nearest rank.
        let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
        v[rank - 1] as f64 / 1e6
    };
    let mean = v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64 / 1e6;
    json!({
        "count": v.len(),
        "min": v[0] as f64 / 1e6,
        "mean": mean,
        "p50": pick(0.50),
        "p90": pick(0.90),
        "p95": pick(0.95),
        "p99": pick(0.99),
        "p999": pick(0.999),
        "max": v[v.len() - 1] as f64 / 1e6,
    })
}

#[derive(Default)]
struct Tally {
    latencies: Vec<u64>,
    lags: Vec<u64>,
    ok: u64,
    non_2xx: u64,
    errors: u64,
    first_error: Option<String>,
}

impl Tally {
    fn merge(&mut self, o: Tally) {
        self.latencies.extend(o.latencies);
        self.lags.extend(o.lags);
        self.ok += o.ok;
        self.non_2xx += o.non_2xx;
        self.errors += o.errors;
        if self.first_error.is_none() {
            self.first_error = o.first_error;
        }
    }
}

struct Schedule {
    start: Instant,
    period_ns: f64,
    total: u64,
    next: AtomicU64,
}

async fn rate_worker(t: Arc<Target>, sched: Arc<Schedule>) -> Tally {
    let mut tally = Tally::default();
    let mut sender: Option<Sender> = None;
    loop {
        let i = sched.next.fetch_add(1, Ordering::Relaxed);
        if i >= sched.total {
            break;
        }
        let due = sched.start + Duration::from_nanos((i as f64 * sched.period_ns) as u64);
        tokio::time::sleep_until(due).await;
        if sender.is_none() {
            match connect(&t).await {
                Ok(s) => sender = Some(s),
                Err(e) => {
                    tally.errors += 1;
                    tally.first_error.get_or_insert(e);
                    continue;
                }
            }
        }
        let Some(s) = sender.as_mut() else { continue };
        let sent = Instant::now();
        let result = get(s, &t).await;
        let done = Instant::now();
        tally
            .lags
            .push(sent.saturating_duration_since(due).as_nanos() as u64);
        match result {
            Ok(status) => {
                tally.latencies.push((done - sent).as_nanos() as u64);
                if (200..300).contains(&status) {
                    tally.ok += 1;
                } else {
                    tally.non_2xx += 1;
                }
            }
            Err(e) => {
                tally.errors += 1;
                tally.first_error.get_or_insert(e);
                sender = None;
            }
        }
    }
    tally
}

async fn run_rate(t: &Target, rate: f64, secs: f64, conns: usize) -> (Tally, f64) {
    let total = (rate * secs).round().max(1.0) as u64;
    let sched = Arc::new(Schedule {
        start: Instant::now() + Duration::from_millis(20),
        period_ns: 1e9 / rate,
        total,
        next: AtomicU64::new(0),
    });
    let t = Arc::new(t.clone());
    let workers: Vec<_> = (0..conns)
        .map(|_| tokio::spawn(rate_worker(t.clone(), sched.clone())))
        .collect();
    let mut tally = Tally::default();
    for w in workers {
        if let Ok(x) = w.await {
            tally.merge(x);
        }
    }
    let elapsed = sched.start.elapsed().as_secs_f64();
    (tally, elapsed)
}

async fn cmd_rate(a: &Args) -> Result<Value, String> {
    let url = a.one("--url")?;
    let t = parse_url(&url)?;
    let rate: f64 = a.num("--rate", None)?;
    let secs: f64 = a.num("--duration", None)?;
    let conns: usize = a.num("--connections", Some(16.0))? as usize;
    let warmup: f64 = a.num("--warmup", Some(0.0))?;
    let valid = (0.0..=100_000.0).contains(&rate) && rate > 0.0 && secs > 0.0 && secs <= 600.0;
    if !valid || conns == 0 {
        return Err("need 0 < rate <= 100000, 0 < duration <= 600, connections > 0".into());
    }
    if warmup > 0.0 {
        let _ = run_rate(&t, rate, warmup.min(60.0), conns).await;
    }
    let (mut tally, elapsed) = run_rate(&t, rate, secs, conns).await;
    let requests = tally.ok + tally.non_2xx + tally.errors;
    Ok(json!({
        "mode": "rate",
        "url": url,
        "target_rate": rate,
        "duration_s": secs,
        "connections": conns,
        "requests": requests,
        "ok": tally.ok,
        "non_2xx": tally.non_2xx,
        "errors": tally.errors,
        "first_error": tally.first_error,
        "achieved_rate": requests as f64 / elapsed,
        "latency_ms": summary_ms(&mut tally.latencies),
        "send_lag_ms": summary_ms(&mut tally.lags),
    }))
}

async fn cmd_burst(a: &Args) -> Result<Value, String> {
    let urls = a.all("--url");
    if urls.is_empty() || urls.len() > 10_000 {
        return Err("burst needs 1 to 10000 --url".into());
    }
    let targets = urls
        .iter()
        .map(|u| parse_url(u))
        .collect::<Result<Vec<_>, _>>()?;
    let mut senders = Vec::with_capacity(targets.len());
    for t in &targets {
        senders.push(connect(t).await?);
    }
    let (go_tx, go_rx) = tokio::sync::watch::channel::<Option<Instant>>(None);
    let mut tasks = Vec::new();
    for (t, mut s) in targets.into_iter().zip(senders) {
        let mut rx = go_rx.clone();
        tasks.push(tokio::spawn(async move {
            let start = match rx.wait_for(Option::is_some).await {
                Ok(v) => (*v).unwrap_or_else(Instant::now),
                Err(_) => Instant::now(),
            };
            let r = get(&mut s, &t).await;
            (t.path, r, start.elapsed())
        }));
    }
    // Let every task reach its wait, then release them all at once.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let _ = go_tx.send(Some(Instant::now()));
    let mut tally = Tally::default();
    let mut each = Vec::new();
    for task in tasks {
        let Ok((path, r, took)) = task.await else {
            tally.errors += 1;
            continue;
        };
        let ms = took.as_secs_f64() * 1e3;
        match r {
            Ok(status) => {
                tally.latencies.push(took.as_nanos() as u64);
                if (200..300).contains(&status) {
                    tally.ok += 1;
                } else {
                    tally.non_2xx += 1;
                }
                each.push(json!({"path": path, "status": status, "ms": ms}));
            }
            Err(e) => {
                tally.errors += 1;
                tally.first_error.get_or_insert(e.clone());
                each.push(json!({"path": path, "error": e, "ms": ms}));
            }
        }
    }
    Ok(json!({
        "mode": "burst",
        "requests": urls.len(),
        "ok": tally.ok,
        "non_2xx": tally.non_2xx,
        "errors": tally.errors,
        "first_error": tally.first_error,
        "latency_ms": summary_ms(&mut tally.latencies),
        "each": each,
    }))
}

/// `--name value` pairs; a name may repeat.
struct Args(Vec<(String, String)>);

impl Args {
    fn parse(raw: &[String]) -> Result<Self, String> {
        let mut out = Vec::new();
        let mut it = raw.iter();
        while let Some(k) = it.next() {
            if !k.starts_with("--") {
                return Err(format!("unexpected argument {k}"));
            }
            let v = it.next().ok_or_else(|| format!("{k} needs a value"))?;
            out.push((k.clone(), v.clone()));
        }
        Ok(Self(out))
    }

    fn all(&self, k: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .collect()
    }

    fn one(&self, k: &str) -> Result<String, String> {
        self.all(k).pop().ok_or_else(|| format!("missing {k}"))
    }

    fn num(&self, k: &str, default: Option<f64>) -> Result<f64, String> {
        match (self.all(k).pop(), default) {
            (Some(v), _) => v.parse().map_err(|_| format!("{k}: not a number: {v}")),
            (None, Some(d)) => Ok(d),
            (None, None) => Err(format!("missing {k}")),
        }
    }
}

const USAGE: &str = "usage:\n  loadgen rate  --url URL --rate R --duration S [--connections C] [--warmup S]\n  loadgen burst --url URL [--url URL ...]";

fn main() {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    let Some((cmd, rest)) = raw.split_first() else {
        eprintln!("{USAGE}");
        std::process::exit(64);
    };
    let args = match Args::parse(rest) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("loadgen: {e}\n{USAGE}");
            std::process::exit(64);
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("loadgen: cannot start the runtime: {e}");
            std::process::exit(70);
        }
    };
    let result = rt.block_on(async {
        match cmd.as_str() {
            "rate" => cmd_rate(&args).await,
            "burst" => cmd_burst(&args).await,
            _ => Err(format!("unknown command {cmd}")),
        }
    });
    match result {
        Ok(v) => println!("{v}"),
        Err(e) => {
            eprintln!("loadgen: {e}");
            std::process::exit(1);
        }
    }
}
