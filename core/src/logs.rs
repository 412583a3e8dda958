//! Bounded per-function logs: the router appends instance output as
//! `<RFC 3339 time> <stream> | <line>`, rotating `<name>.log` to `<name>.log.1`
//! when it passes a size cap, so each function keeps at most about twice the
//! cap on disk. The manager reads the tail for `GET /func/<name>/logs`.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::Mutex;

use crate::layout::Layout;

pub const DEFAULT_MAX_BYTES: u64 = 1024 * 1024;
/// Longer lines are cut, so one runaway print cannot fill the log.
pub const MAX_LINE: usize = 16 * 1024;

pub struct LogWriter {
    path: PathBuf,
    old: PathBuf,
    max_bytes: u64,
    state: Mutex<Option<(File, u64)>>,
}

impl LogWriter {
    pub fn new(layout: &Layout, user: &str, name: &str, max_bytes: u64) -> Self {
        Self {
            path: layout.log_file(user, name),
            old: layout.old_log_file(user, name),
            max_bytes,
            state: Mutex::new(None),
        }
    }

    fn open(&self) -> std::io::Result<(File, u64)> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
            // Logs are for the router and the manager only, not for functions.
            if let Some(logs_root) = dir.parent() {
                use std::os::unix::fs::PermissionsExt;
                let _ = std::fs::set_permissions(logs_root, std::fs::Permissions::from_mode(0o700));
            }
        }
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        let len = f.metadata()?.len();
        Ok((f, len))
    }

    /// Appends one line. Failures (disk full, unwritable dir) drop the line and
    /// are reported to the caller, never retried in a loop.
    pub fn line(&self, stream: &str, text: &str) -> std::io::Result<()> {
        let mut text = text.trim_end_matches(['\r', '\n']);
        if text.len() > MAX_LINE {
            let mut cut = MAX_LINE;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text = &text[..cut];
        }
        let entry = format!(
            "{} {stream} | {text}\n",
            crate::time::rfc3339(crate::time::now_millis())
        );
        let mut guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if guard.is_none() {
            *guard = Some(self.open()?);
        }
        if let Some((_, len)) = guard.as_ref()
            && *len + entry.len() as u64 > self.max_bytes
        {
            *guard = None;
            std::fs::rename(&self.path, &self.old)?;
            *guard = Some(self.open()?);
        }
        if let Some((f, len)) = guard.as_mut() {
            f.write_all(entry.as_bytes())?;
            *len += entry.len() as u64;
        }
        Ok(())
    }
}

/// The last `n` lines of a function's log (older file first), or none.
pub fn tail(layout: &Layout, user: &str, name: &str, n: usize) -> std::io::Result<Vec<String>> {
    let mut text = String::new();
    for p in [layout.old_log_file(user, name), layout.log_file(user, name)] {
        match File::open(&p) {
            Ok(mut f) => {
                // Only the end matters; the cap keeps a request's memory bounded.
                let len = f.metadata()?.len();
                if len > 2 * DEFAULT_MAX_BYTES {
                    f.seek(SeekFrom::Start(len - 2 * DEFAULT_MAX_BYTES))?;
                }
                let mut buf = Vec::new();
                f.read_to_end(&mut buf)?;
                text.push_str(&String::from_utf8_lossy(&buf));
            }
            // No log yet, or the log directory is unusable: nothing to show.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                ) => {}
            Err(e) => return Err(e),
        }
    }
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(n);
    Ok(lines[start..].iter().map(|s| (*s).to_owned()).collect())
}

/// Removes a function's logs (when it is deleted).
pub fn remove(layout: &Layout, user: &str, name: &str) {
    let _ = std::fs::remove_file(layout.log_file(user, name));
    let _ = std::fs::remove_file(layout.old_log_file(user, name));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_and_tails() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        let w = LogWriter::new(&layout, "alice", "f", 2000);
        for i in 0..100 {
            w.line("stdout", &format!("line {i}")).unwrap();
        }
        let cur = std::fs::metadata(layout.log_file("alice", "f"))
            .unwrap()
            .len();
        let old = std::fs::metadata(layout.old_log_file("alice", "f"))
            .unwrap()
            .len();
        assert!(cur <= 2000 && old <= 2000);
        let t = tail(&layout, "alice", "f", 3).unwrap();
        assert_eq!(t.len(), 3);
        assert!(t[2].ends_with("stdout | line 99"), "{t:?}");
        assert!(t[0].ends_with("line 97"));
        w.line("stderr", &"x".repeat(MAX_LINE * 2)).unwrap();
        let t = tail(&layout, "alice", "f", 1).unwrap();
        assert!(t[0].len() < MAX_LINE + 64);
        assert!(tail(&layout, "bob", "f", 5).unwrap().is_empty());
    }
}
