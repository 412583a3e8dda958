//! How a service tells whoever started it that it listens, and on which port:
//! with `--ready-file PATH` (`SKIFF_READY_FILE`) it writes the bound port there
//! once the listener is bound, atomically (a temp file renamed into place), so
//! a test or a supervisor can bind port 0 and read the port without parsing logs.

use std::path::Path;

/// Writes `port` followed by a newline to `path`, replacing it atomically.
pub fn announce(path: &Path, port: u16) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    std::fs::write(&tmp, format!("{port}\n"))?;
    std::fs::rename(&tmp, path)
}

/// The port a ready file holds, once it exists and is complete.
pub fn read(path: &Path) -> Option<u16> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announces_and_reads_a_port() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("ready");
        assert_eq!(read(&f), None);
        announce(&f, 4321).unwrap();
        assert_eq!(read(&f), Some(4321));
        announce(&f, 80).unwrap();
        assert_eq!(read(&f), Some(80));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
