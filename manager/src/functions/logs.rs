//! Where a function's output is read from: the [`LogSource`] seam. The process
//! runtime's router writes bounded files in the data dir ([`FileLogs`]); in
//! Kubernetes the function's pods hold it (`kube::pod_logs::PodLogs`). Either
//! way the lines come back oldest first and neutralised (`skiff_core::logs`).

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;

use skiff_core::layout::Layout;
use skiff_core::names::{FunctionName, UserName};

pub type LogFuture<'a> = Pin<Box<dyn Future<Output = Result<Vec<String>, LogError>> + Send + 'a>>;

/// The function whose log is read: by id for files, by names for pods.
#[derive(Debug, Clone, Copy)]
pub struct LoggedFunction<'a> {
    pub id: i64,
    pub user: &'a UserName,
    pub name: &'a FunctionName,
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("reading the function's log")]
    Read(#[source] std::io::Error),
    #[error("the log reader task failed")]
    Reader(#[source] tokio::task::JoinError),
    /// Where the log lives cannot be asked right now (the Kubernetes API).
    #[error("the function's log cannot be read right now")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
}

pub trait LogSource: Send + Sync {
    /// At most the last `lines` lines of the function's output, oldest first,
    /// each `<RFC 3339 time> <stream> | <text>` with the text neutralised.
    fn tail<'a>(&'a self, function: LoggedFunction<'a>, lines: usize) -> LogFuture<'a>;
}

pub type SharedLogs = Arc<dyn LogSource>;

/// The process runtime's per-function files in the data dir.
pub struct FileLogs {
    layout: Layout,
}

impl FileLogs {
    pub fn new(data_dir: &Path) -> Self {
        Self {
            layout: Layout::new(data_dir),
        }
    }
}

impl LogSource for FileLogs {
    fn tail<'a>(&'a self, function: LoggedFunction<'a>, lines: usize) -> LogFuture<'a> {
        let layout = self.layout.clone();
        let id = function.id;
        Box::pin(async move {
            // File reads block: off the async workers.
            tokio::task::spawn_blocking(move || skiff_core::logs::tail(&layout, id, lines))
                .await
                .map_err(LogError::Reader)?
                .map_err(LogError::Read)
        })
    }
}
