//! The access log in each function's owner's log: one line per request,
//! `<time> access | <METHOD> <path> <status> <ms>ms cold|warm`, the path as
//! the function saw it and without its query string (queries carry tokens).
//! The router writes it, not the function.
//!
//! The request path only pushes an entry onto a bounded queue behind a
//! mutex held for a push or a swap: no syscall, no formatting, no waiting.
//! A thread of its own drains the queue every [`DRAIN_EVERY`], formats the
//! lines there and writes each function's lines of a drain in one write,
//! through the owner's `LogWriter`, which neutralises them like any log line,
//! so a hostile path (encoded CR/LF, terminal controls) stays one visible
//! line. (A write and a thread wake-up per request cost a third of the
//! router's throughput on a small machine; see BENCHMARKS.md.) When the
//! queue is full, lines are dropped and counted
//! (`skiff_access_log_dropped_lines_total`).
//! Refusals for being over the owner's request rate get no line (a flood of
//! them would rotate the function's own output out of its log); the metrics
//! and stats count them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::Thread;
use std::time::Duration;

use http::Method;
use http::uri::PathAndQuery;

use crate::metrics::Metrics;

/// Where owners' logs are (the process runtime's log files).
pub trait OwnerLogs: Send + Sync + 'static {
    /// Appends `lines` (each time-stamped, ms since the epoch) to function
    /// `function_id`'s log, in stream `stream`. A function that is gone has
    /// no log: the lines are dropped.
    fn append(&self, function_id: i64, stream: &str, lines: &mut dyn Iterator<Item = (i64, &str)>);
}

/// Entries waiting for the writer, at most.
const QUEUE: usize = 16 * 1024;
/// The longest path written; the rest is cut.
const MAX_PATH: usize = 2048;
/// How often the writer drains the queue: lines show up in the log this
/// late at most, and a busy function gets one write per drain.
pub const DRAIN_EVERY: Duration = Duration::from_millis(50);

pub struct Entry {
    pub function_id: i64,
    pub at_millis: i64,
    pub method: Method,
    /// As forwarded; the line shows its path only (queries carry tokens).
    pub path: PathAndQuery,
    pub status: u16,
    pub elapsed: Duration,
    pub cold: bool,
}

impl Entry {
    /// The text of the line (the log adds the time and neutralises it).
    pub fn text(&self) -> String {
        let mut out = String::new();
        self.push_text(&mut out);
        out
    }

    /// Appends [`Entry::text`] to `out` (the writer formats a drain's lines
    /// into one buffer).
    fn push_text(&self, out: &mut String) {
        let path = self.path.path();
        let path = &path[..path.floor_char_boundary(MAX_PATH)];
        for part in [self.method.as_str(), " ", path, " "] {
            out.push_str(part);
        }
        push_u64(out, u64::from(self.status));
        out.push(' ');
        push_millis(out, self.elapsed);
        out.push_str(if self.cold { "ms cold" } else { "ms warm" });
    }
}

/// Appends `d` in milliseconds with one decimal (`12.3`), in integers: float
/// formatting costs more than the rest of an access line, and `core::fmt`
/// with `u128` most of what is left (this runs on the request path for
/// `Server-Timing`).
pub fn push_millis(out: &mut String, d: Duration) {
    let tenths = d
        .as_secs()
        .saturating_mul(10_000)
        .saturating_add(u64::from((d.subsec_micros() + 50) / 100));
    push_u64(out, tenths / 10);
    out.push('.');
    out.push(char::from(b'0' + (tenths % 10) as u8));
}

/// Appends `n` in decimal.
fn push_u64(out: &mut String, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    // Only ASCII digits were written.
    out.extend(digits[at..].iter().map(|&b| char::from(b)));
}

struct Shared {
    queue: Mutex<Vec<Entry>>,
    closed: AtomicBool,
}

impl Shared {
    fn queue(&self) -> std::sync::MutexGuard<'_, Vec<Entry>> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub struct AccessLog {
    shared: Arc<Shared>,
    writer: Thread,
    metrics: Arc<Metrics>,
}

impl AccessLog {
    /// Starts the writer thread; it writes what is queued and ends once the
    /// log is dropped.
    pub fn start(logs: Arc<dyn OwnerLogs>, metrics: Arc<Metrics>) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Vec::new()),
            closed: AtomicBool::new(false),
        });
        let writer = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("skiff-access-log".into())
                .spawn(move || write_all(&shared, logs.as_ref()))?
                .thread()
                .clone()
        };
        Ok(Self {
            shared,
            writer,
            metrics,
        })
    }

    pub fn record(&self, e: Entry) {
        let mut q = self.shared.queue();
        if q.len() < QUEUE {
            q.push(e);
        } else {
            drop(q);
            self.metrics.access_log_dropped();
        }
    }
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::Release);
        self.writer.unpark();
    }
}

fn write_all(shared: &Shared, logs: &dyn OwnerLogs) {
    let mut batch = Vec::new();
    let mut buf = Formatted::default();
    loop {
        std::thread::park_timeout(DRAIN_EVERY);
        let closed = shared.closed.load(Ordering::Acquire);
        std::mem::swap(&mut batch, &mut *shared.queue());
        write_batch(&mut batch, &mut buf, logs);
        if closed {
            return;
        }
    }
}

/// What a drain formats: every line's text in one buffer, and each line's
/// time and end in it. Kept from one drain to the next.
#[derive(Default)]
struct Formatted {
    text: String,
    lines: Vec<(i64, usize)>,
}

/// Writes (and empties) `batch`: each function's lines in one call, in the
/// order they were recorded.
fn write_batch(batch: &mut Vec<Entry>, buf: &mut Formatted, logs: &dyn OwnerLogs) {
    // Stable: a function's lines keep their order.
    batch.sort_by_key(|e| e.function_id);
    for group in batch.chunk_by(|a, b| a.function_id == b.function_id) {
        buf.text.clear();
        buf.lines.clear();
        for e in group {
            e.push_text(&mut buf.text);
            buf.lines.push((e.at_millis, buf.text.len()));
        }
        let mut start = 0;
        let lines = buf.lines.iter().map(|&(at, end)| {
            let line = (at, &buf.text[start..end]);
            start = end;
            line
        });
        logs.append(group[0].function_id, "access", &mut lines.into_iter());
    }
    batch.clear();
    // A burst's memory is not kept for ever.
    if batch.capacity() > QUEUE / 4 {
        *batch = Vec::new();
        *buf = Formatted::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_says_method_path_status_time_and_temperature() {
        let e = Entry {
            function_id: 1,
            at_millis: 0,
            method: Method::POST,
            path: PathAndQuery::from_static("/a/b?token=secret"),
            status: 201,
            elapsed: Duration::from_micros(12_345),
            cold: true,
        };
        assert_eq!(e.text(), "POST /a/b 201 12.3ms cold");
        let long = Entry {
            path: PathAndQuery::try_from(format!("/{}", "é".repeat(MAX_PATH))).unwrap(),
            cold: false,
            ..e
        };
        let text = long.text();
        assert!(
            text.len() < MAX_PATH + 40 && text.ends_with("warm"),
            "{text}"
        );
    }

    #[test]
    fn milliseconds_round_to_a_tenth_and_carry() {
        let ms = |d: Duration| {
            let mut s = String::new();
            push_millis(&mut s, d);
            s
        };
        assert_eq!(ms(Duration::ZERO), "0.0");
        assert_eq!(ms(Duration::from_micros(49)), "0.0");
        assert_eq!(ms(Duration::from_micros(50)), "0.1");
        assert_eq!(ms(Duration::from_micros(999_960)), "1000.0");
        assert_eq!(ms(Duration::from_micros(12_345_678)), "12345.7");
        assert_eq!(ms(Duration::from_secs(3600)), "3600000.0");
        // Saturates instead of overflowing.
        assert_eq!(ms(Duration::MAX), "1844674407370955161.5");
    }

    /// One `append` call: the function and its (time, text) lines.
    type Appended = (i64, Vec<(i64, String)>);

    #[derive(Default)]
    struct Collected(Mutex<Vec<Appended>>);

    impl OwnerLogs for Collected {
        fn append(
            &self,
            function_id: i64,
            stream: &str,
            lines: &mut dyn Iterator<Item = (i64, &str)>,
        ) {
            assert_eq!(stream, "access");
            let lines = lines.map(|(at, l)| (at, l.to_owned())).collect();
            self.0.lock().unwrap().push((function_id, lines));
        }
    }

    fn entry(function_id: i64, at_millis: i64) -> Entry {
        Entry {
            function_id,
            at_millis,
            method: Method::GET,
            path: PathAndQuery::try_from(format!("/{at_millis}")).unwrap(),
            status: 200,
            elapsed: Duration::from_millis(1),
            cold: false,
        }
    }

    #[test]
    fn a_drain_writes_each_functions_lines_at_once_in_order() {
        let logs = Collected::default();
        let mut batch = vec![
            entry(2, 1),
            entry(1, 2),
            entry(2, 3),
            entry(1, 4),
            entry(2, 5),
        ];
        write_batch(&mut batch, &mut Formatted::default(), &logs);
        assert!(batch.is_empty());
        let got = logs.0.into_inner().unwrap();
        let times: Vec<(i64, Vec<i64>)> = got
            .iter()
            .map(|(f, lines)| (*f, lines.iter().map(|(t, _)| *t).collect()))
            .collect();
        assert_eq!(times, vec![(1, vec![2, 4]), (2, vec![1, 3, 5])]);
        assert_eq!(got[0].1[0].1, "GET /2 200 1.0ms warm");
    }

    #[test]
    fn a_full_queue_drops_and_counts() {
        let metrics = Arc::new(Metrics::new(true, 10));
        // No writer: the queue only fills.
        let log = AccessLog {
            shared: Arc::new(Shared {
                queue: Mutex::new(Vec::new()),
                closed: AtomicBool::new(false),
            }),
            writer: std::thread::current(),
            metrics: metrics.clone(),
        };
        for i in 0..QUEUE as i64 + 2 {
            log.record(entry(1, i));
        }
        assert_eq!(log.shared.queue().len(), QUEUE);
        assert!(
            metrics
                .render()
                .contains("skiff_access_log_dropped_lines_total 2")
        );
    }

    #[test]
    fn recorded_lines_reach_the_log_by_the_time_it_is_closed() {
        let logs = Arc::new(Collected::default());
        let log = AccessLog::start(logs.clone(), Arc::new(Metrics::new(true, 10))).unwrap();
        for i in 0..1000 {
            log.record(entry(i % 3, i));
        }
        drop(log);
        let written = || -> usize { logs.0.lock().unwrap().iter().map(|(_, l)| l.len()).sum() };
        for _ in 0..2000 {
            if written() == 1000 {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("{} lines written of 1000", written());
    }
}
