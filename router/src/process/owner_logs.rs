//! The owners' log files of this router's functions (`core/src/logs.rs`): one
//! writer per function id, shared by its instances' output and the access
//! log. A deleted function's log is removed and stays gone: a line that
//! arrives after the delete (an access-log entry still queued) is dropped
//! instead of creating the file again.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use skiff_core::layout::Layout;
use skiff_core::logs::{DEFAULT_MAX_BYTES, LogWriter};

use crate::access_log::OwnerLogs;

#[derive(Default)]
struct Writers {
    open: HashMap<i64, Arc<LogWriter>>,
    /// Ids of functions deleted while this router ran (ids are never reused).
    gone: HashSet<i64>,
}

pub struct FunctionLogs {
    layout: Layout,
    writers: Mutex<Writers>,
}

impl FunctionLogs {
    pub fn new(layout: Layout) -> Self {
        Self {
            layout,
            writers: Mutex::default(),
        }
    }

    fn writers(&self) -> std::sync::MutexGuard<'_, Writers> {
        self.writers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Function `function_id`'s log writer.
    pub fn writer(&self, function_id: i64) -> Arc<LogWriter> {
        self.writers()
            .open
            .entry(function_id)
            .or_insert_with(|| {
                Arc::new(LogWriter::new(&self.layout, function_id, DEFAULT_MAX_BYTES))
            })
            .clone()
    }

    /// The function is deleted: no more lines for it (its files are removed
    /// by the caller).
    pub fn forget(&self, function_id: i64) {
        let mut w = self.writers();
        w.open.remove(&function_id);
        w.gone.insert(function_id);
    }
}

impl OwnerLogs for FunctionLogs {
    fn append(&self, function_id: i64, stream: &str, lines: &mut dyn Iterator<Item = (i64, &str)>) {
        let writer = {
            let w = self.writers();
            if w.gone.contains(&function_id) {
                return;
            }
            w.open.get(&function_id).cloned()
        };
        let writer = writer.unwrap_or_else(|| self.writer(function_id));
        // A full disk or an unwritable dir loses the line; the instance's own
        // output pump reports such failures to the operator.
        let _ = writer.lines_at(stream, lines);
    }
}
