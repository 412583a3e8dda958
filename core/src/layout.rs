//! The layout of `SKIFF_DATA_DIR`, shared by the router (which writes it) and the
//! manager (which reads logs from it):
//!
//! ```text
//! <data>/functions/<user>/<name>/v<version>/   code of one version (fn.ts + runtime files)
//! <data>/instances/<id>/                        one running instance's temp dir and socket
//! <data>/logs/<user>/<name>.log (+ .log.1)      recent output of the function's instances
//! ```
//! Callers pass validated names only, so no component can be `..` or contain `/`.

use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn function_dir(&self, user: &str, name: &str) -> PathBuf {
        self.root.join("functions").join(user).join(name)
    }

    pub fn version_dir(&self, user: &str, name: &str, version: i64) -> PathBuf {
        self.function_dir(user, name).join(format!("v{version}"))
    }

    pub fn instances_dir(&self) -> PathBuf {
        self.root.join("instances")
    }

    pub fn log_file(&self, user: &str, name: &str) -> PathBuf {
        self.root
            .join("logs")
            .join(user)
            .join(format!("{name}.log"))
    }

    /// The rotated predecessor of `log_file`.
    pub fn old_log_file(&self, user: &str, name: &str) -> PathBuf {
        self.root
            .join("logs")
            .join(user)
            .join(format!("{name}.log.1"))
    }
}
