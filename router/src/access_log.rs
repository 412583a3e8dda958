//! The access log in each function's owner's log: one line per request,
//! `<time> access | <METHOD> <path> <status> <ms>ms cold|warm`, the path as
//! the function saw it and without its query string (queries carry tokens).
//! The router writes it, not the function.
//!
//! The request path only hands an entry to a bounded queue (never waits);
//! a thread of its own writes the lines, through the owner's `LogWriter`,
//! which neutralises them like any log line, so a hostile path (encoded
//! CR/LF, terminal controls) stays one visible line. When the writer falls
//! behind, lines are dropped and counted (`skiff_access_log_dropped_lines_total`).
//! Refusals for being over the owner's request rate get no line (a flood of
//! them would rotate the function's own output out of its log); the metrics
//! and stats count them.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::Duration;

use http::Method;

use crate::metrics::Metrics;

/// Where owners' logs are (the process runtime's log files).
pub trait OwnerLogs: Send + Sync + 'static {
    /// Appends `line` to function `function_id`'s log, time-stamped `at_millis`.
    /// A function that is gone has no log: the line is dropped.
    fn append(&self, function_id: i64, at_millis: i64, stream: &str, line: &str);
}

/// Entries waiting for the writer, at most.
const QUEUE: usize = 16 * 1024;
/// The longest path written; the rest is cut.
const MAX_PATH: usize = 2048;

pub struct Entry {
    pub function_id: i64,
    pub at_millis: i64,
    pub method: Method,
    pub path: String,
    pub status: u16,
    pub elapsed: Duration,
    pub cold: bool,
}

impl Entry {
    /// The text of the line (the log adds the time and neutralises it).
    pub fn text(&self) -> String {
        let path = &self.path[..self.path.floor_char_boundary(MAX_PATH)];
        format!(
            "{} {} {} {:.1}ms {}",
            self.method,
            path,
            self.status,
            self.elapsed.as_secs_f64() * 1e3,
            if self.cold { "cold" } else { "warm" }
        )
    }
}

pub struct AccessLog {
    tx: SyncSender<Entry>,
    metrics: Arc<Metrics>,
}

impl AccessLog {
    /// Starts the writer thread; it ends once the log is dropped.
    pub fn start(logs: Arc<dyn OwnerLogs>, metrics: Arc<Metrics>) -> std::io::Result<Self> {
        let (tx, rx) = sync_channel(QUEUE);
        std::thread::Builder::new()
            .name("skiff-access-log".into())
            .spawn(move || write_all(rx, logs))?;
        Ok(Self { tx, metrics })
    }

    pub fn record(&self, e: Entry) {
        match self.tx.try_send(e) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.metrics.access_log_dropped()
            }
        }
    }
}

fn write_all(rx: Receiver<Entry>, logs: Arc<dyn OwnerLogs>) {
    while let Ok(e) = rx.recv() {
        logs.append(e.function_id, e.at_millis, "access", &e.text());
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
            path: "/a/b".into(),
            status: 201,
            elapsed: Duration::from_micros(12_345),
            cold: true,
        };
        assert_eq!(e.text(), "POST /a/b 201 12.3ms cold");
        let long = Entry {
            path: format!("/{}", "é".repeat(MAX_PATH)),
            cold: false,
            ..e
        };
        let text = long.text();
        assert!(
            text.len() < MAX_PATH + 40 && text.ends_with("warm"),
            "{text}"
        );
    }
}
