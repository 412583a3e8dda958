//! The layout of `SKIFF_DATA_DIR`, shared by the router (which writes it) and the
//! manager (which reads logs from it). Everything is keyed by the function's
//! database id, never by its name: ids are never reused, so a function deleted
//! and created again under the same name can never meet the old one's files.
//!
//! ```text
//! <data>/functions/<id>/v<version>/   code of one version (fn.ts, .sha256, .deno/)
//! <data>/instances/<n>/               one running instance's temp dir and sockets
//! <data>/logs/<id>.log (+ .log.1)     recent output of the function's instances
//! ```

use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    /// The file name of a version's module in its version dir: a deploy-built
    /// artifact is JavaScript; a source stored before artifacts existed is
    /// TypeScript.
    pub fn module_file(bundled: bool) -> &'static str {
        if bundled { "fn.js" } else { "fn.ts" }
    }

    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where every function's code lives.
    pub fn functions_dir(&self) -> PathBuf {
        self.root.join("functions")
    }

    pub fn function_dir(&self, function_id: i64) -> PathBuf {
        self.functions_dir().join(function_id.to_string())
    }

    pub fn version_dir(&self, function_id: i64, version: i64) -> PathBuf {
        self.function_dir(function_id).join(format!("v{version}"))
    }

    pub fn instances_dir(&self) -> PathBuf {
        self.root.join("instances")
    }

    pub fn logs_dir(&self) -> PathBuf {
        self.root.join("logs")
    }

    pub fn log_file(&self, function_id: i64) -> PathBuf {
        self.logs_dir().join(format!("{function_id}.log"))
    }

    /// The rotated predecessor of `log_file`.
    pub fn old_log_file(&self, function_id: i64) -> PathBuf {
        self.logs_dir().join(format!("{function_id}.log.1"))
    }

    /// The function a `functions/` entry or a `logs/` file belongs to, if the
    /// name is one this layout makes (used to sweep what is no longer live).
    pub fn owner_id(file_name: &str) -> Option<i64> {
        let id = file_name
            .strip_suffix(".log.1")
            .or_else(|| file_name.strip_suffix(".log"))
            .unwrap_or(file_name);
        id.parse::<i64>().ok().filter(|i| *i > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_keyed_by_id_and_name_their_owner() {
        let l = Layout::new("/d");
        assert_eq!(l.version_dir(7, 2), PathBuf::from("/d/functions/7/v2"));
        assert_eq!(l.log_file(7), PathBuf::from("/d/logs/7.log"));
        assert_eq!(l.old_log_file(7), PathBuf::from("/d/logs/7.log.1"));
        for name in ["7", "7.log", "7.log.1"] {
            assert_eq!(Layout::owner_id(name), Some(7), "{name}");
        }
        for name in ["alice", ".tmp-1", "-1", "0", "7.txt", ""] {
            assert_eq!(Layout::owner_id(name), None, "{name}");
        }
    }
}
