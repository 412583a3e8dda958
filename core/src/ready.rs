//! How a service tells whoever started it that it listens, and on which port:
//! with `--ready-file PATH` (`SKIFF_READY_FILE`) it writes the bound port there
//! once the listener is bound, atomically (a temp file renamed into place), so
//! a test or a supervisor can bind port 0 and read the port without parsing logs.
//!
//! A process that listens on more than one port (`skiff dev`: a manager and a
//! router) writes one `name port` line per listener instead
//! ([`announce_named`], read back with [`read_named`]), all in one rename, so a
//! reader sees either no file or every port.

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

/// Writes one `name port` line per listener to `path`, replacing it atomically.
pub fn announce_named(path: &Path, ports: &[(&str, u16)]) -> std::io::Result<()> {
    let text: String = ports.iter().map(|(n, p)| format!("{n} {p}\n")).collect();
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

/// The port of listener `name` in a ready file written by [`announce_named`].
pub fn read_named(path: &Path, name: &str) -> Option<u16> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().find_map(|line| {
        let (n, p) = line.split_once(' ')?;
        if n == name {
            p.trim().parse().ok()
        } else {
            None
        }
    })
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

    #[test]
    fn announces_and_reads_named_ports() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("ready");
        assert_eq!(read_named(&f, "router"), None);
        announce_named(&f, &[("manager", 8080), ("router", 8000)]).unwrap();
        assert_eq!(read_named(&f, "manager"), Some(8080));
        assert_eq!(read_named(&f, "router"), Some(8000));
        assert_eq!(read_named(&f, "other"), None);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
