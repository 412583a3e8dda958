//! Directory uploads: unpacking a tar.gz, tar or zip body into an empty
//! directory, refusing anything that could reach outside it or exhaust the
//! host. Pure and blocking: the deploy route runs it on a blocking thread.
//!
//! Only regular files and directories are written, with fixed modes (0644 and
//! 0755) and no owner or time from the archive. Names are checked before
//! anything is created; sizes are counted while the data streams, never taken
//! from headers. On any error `dest` is emptied again.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io::{self, Cursor, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// What `pick_entry` looks for at the root when no entry is named, in order.
pub const DEFAULT_ENTRIES: &[&str] = &["main.ts", "index.ts", "mod.ts", "main.js", "index.js"];

/// Longest name of one path component, in bytes (what Linux file systems take).
pub const MAX_COMPONENT_BYTES: usize = 255;
/// Longest path of an entry, in bytes.
pub const MAX_PATH_BYTES: usize = 1024;
/// However well a small upload compresses, it may unpack to this much: the
/// ratio is there to stop bombs, and a tar's own padding already compresses
/// some 50:1.
pub const RATIO_FLOOR_BYTES: u64 = 1024 * 1024;

pub const DEFAULT_MAX_ARCHIVE_BYTES: usize = 10 * 1024 * 1024;
pub const DEFAULT_MAX_ARCHIVE_ENTRIES: u64 = 2000;
pub const DEFAULT_MAX_UNPACKED_BYTES: u64 = 50 * 1024 * 1024;
pub const DEFAULT_MAX_RATIO: u64 = 100;
pub const DEFAULT_MAX_FILE_BYTES: u64 = 10 * 1024 * 1024;
pub const DEFAULT_MAX_DEPTH: usize = 32;

/// macOS Finder's resource-fork shadows: metadata, never code. Skipped so a
/// Finder zip of one folder still has that folder as its single top directory.
const MACOS_METADATA_DIR: &str = "__MACOSX";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveKind {
    TarGz,
    Tar,
    Zip,
}

impl fmt::Display for ArchiveKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::TarGz => "tar.gz",
            Self::Tar => "tar",
            Self::Zip => "zip",
        })
    }
}

/// The archive kind a request's `Content-Type` announces; `None` for anything
/// else (the body is then one module).
pub fn kind_of(content_type: Option<&str>) -> Option<ArchiveKind> {
    let essence = content_type?.split(';').next()?.trim().to_ascii_lowercase();
    match essence.as_str() {
        "application/gzip" | "application/x-gzip" | "application/x-compressed-tar" => {
            Some(ArchiveKind::TarGz)
        }
        "application/x-tar" => Some(ArchiveKind::Tar),
        "application/zip" | "application/x-zip-compressed" => Some(ArchiveKind::Zip),
        _ => None,
    }
}

/// Operator settings of directory uploads (part of the manager's settings).
#[derive(Debug, Clone, clap::Args)]
pub struct ArchiveSettings {
    /// Largest accepted directory upload (tar.gz, tar or zip body), in bytes
    #[arg(long, env = "SKIFF_MAX_ARCHIVE_BYTES", default_value_t = DEFAULT_MAX_ARCHIVE_BYTES)]
    pub max_archive_bytes: usize,
    /// Most entries (files and directories) a directory upload may hold
    #[arg(long, env = "SKIFF_MAX_ARCHIVE_ENTRIES", default_value_t = DEFAULT_MAX_ARCHIVE_ENTRIES)]
    pub max_archive_entries: u64,
    /// Most bytes a directory upload may unpack to (its files' sizes added up)
    #[arg(long, env = "SKIFF_MAX_UNPACKED_BYTES", default_value_t = DEFAULT_MAX_UNPACKED_BYTES)]
    pub max_unpacked_bytes: u64,
}

impl Default for ArchiveSettings {
    /// The flags' declared defaults.
    fn default() -> Self {
        match skiff_core::settings::defaults() {
            Ok(s) => s,
            // Constants of this file; the unit test below parses them.
            Err(e) => unreachable!("the archive settings' defaults do not parse: {e}"),
        }
    }
}

impl ArchiveSettings {
    /// The names of settings that must not be zero, for the config check.
    pub fn zero_settings(&self) -> Vec<&'static str> {
        [
            ("SKIFF_MAX_ARCHIVE_BYTES", self.max_archive_bytes == 0),
            ("SKIFF_MAX_ARCHIVE_ENTRIES", self.max_archive_entries == 0),
            ("SKIFF_MAX_UNPACKED_BYTES", self.max_unpacked_bytes == 0),
        ]
        .into_iter()
        .filter_map(|(name, zero)| zero.then_some(name))
        .collect()
    }

    pub fn limits(&self) -> ArchiveLimits {
        ArchiveLimits {
            max_entries: self.max_archive_entries,
            max_unpacked_bytes: self.max_unpacked_bytes,
            // One file can never be more than all of them.
            max_file_bytes: DEFAULT_MAX_FILE_BYTES.min(self.max_unpacked_bytes),
            ..ArchiveLimits::default()
        }
    }
}

/// What one unpacking may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveLimits {
    /// Entries (files and directories) in the archive.
    pub max_entries: u64,
    /// All files' bytes added up.
    pub max_unpacked_bytes: u64,
    /// Unpacked bytes per byte of the body (above [`RATIO_FLOOR_BYTES`]).
    pub max_ratio: u64,
    /// One file's bytes.
    pub max_file_bytes: u64,
    /// Path components of an entry (`a/b/c.ts` is 3).
    pub max_depth: usize,
}

impl Default for ArchiveLimits {
    fn default() -> Self {
        Self {
            max_entries: DEFAULT_MAX_ARCHIVE_ENTRIES,
            max_unpacked_bytes: DEFAULT_MAX_UNPACKED_BYTES,
            max_ratio: DEFAULT_MAX_RATIO,
            max_file_bytes: DEFAULT_MAX_FILE_BYTES,
            max_depth: DEFAULT_MAX_DEPTH,
        }
    }
}

/// What was written under `dest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unpacked {
    /// Regular files, relative to `dest`, `/`-separated, sorted.
    pub files: Vec<String>,
    /// Their bytes added up.
    pub bytes: u64,
    /// The single top-level directory that was made the root, if there was one
    /// (`tar czf x.tgz myfn/` gives `Some("myfn")`).
    pub unwrapped: Option<String>,
}

/// Why an archive was refused. Each message is for the uploader and names the
/// offending entry; [`ArchiveError::code`] and [`ArchiveError::status`] say
/// how to answer.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("the archive holds no files")]
    Empty,
    #[error("the archive is damaged or not a {kind} archive: {detail}")]
    Corrupt { kind: ArchiveKind, detail: String },
    #[error("archive entry {name:?}: absolute paths are not allowed")]
    AbsolutePath { name: String },
    #[error("archive entry {name:?}: `..` is not allowed in paths")]
    ParentDir { name: String },
    #[error("archive entry {name:?}: backslashes and drive letters are not allowed in paths")]
    WindowsPath { name: String },
    #[error("archive entry {name:?}: control characters (such as NUL) are not allowed in names")]
    ControlChar { name: String },
    #[error("archive entry {name:?}: the name is not valid UTF-8")]
    NotUtf8 { name: String },
    #[error(
        "archive entry {name:?}: the name is too long (at most {MAX_COMPONENT_BYTES} bytes per \
         part and {MAX_PATH_BYTES} in all)"
    )]
    NameTooLong { name: String },
    #[error("archive entry {name:?} is nested more than {max} levels deep")]
    TooDeep { name: String, max: usize },
    #[error("archive entry {name:?} is a {kind}; only regular files and directories are accepted")]
    Link { name: String, kind: &'static str },
    #[error("archive entry {name:?} is a {kind}; only regular files and directories are accepted")]
    Special { name: String, kind: &'static str },
    #[error("archive entry {name:?}: {what} is not supported")]
    Unsupported { name: String, what: String },
    #[error("archive entry {name:?} is encrypted; upload an unencrypted archive")]
    Encrypted { name: String },
    #[error("archive entry {name:?} appears more than once")]
    Duplicate { name: String },
    #[error("the zip's central directory lists the same name more than once")]
    DuplicateInZip,
    #[error("archive entry {name:?} is both a file and a directory")]
    FileAndDir { name: String },
    #[error("the archive has more than {max} entries")]
    TooManyEntries { max: u64 },
    #[error("archive entry {name:?} unpacks to more than {max} bytes, the limit for one file")]
    FileTooLarge { name: String, max: u64 },
    #[error("the archive unpacks to more than {max} bytes (stopped at {name:?})")]
    TooLarge { name: String, max: u64 },
    #[error(
        "the archive unpacks to more than {ratio} times its own size (stopped at {name:?}); \
         compression bombs are refused"
    )]
    RatioExceeded { name: String, ratio: u64 },
    #[error("entry {entry:?} is not a file in the archive{hint}")]
    EntryNotFound { entry: String, hint: String },
    #[error(
        "the archive has no entry point: looked for {} at its root{found}; name one with \
         ?entry=PATH (skiff deploy DIR --entry FILE)",
        DEFAULT_ENTRIES.join(", ")
    )]
    NoDefaultEntry { found: String },
    /// Writing under `dest` failed: the server's fault, not the upload's.
    #[error("unpacking the archive failed: {0}")]
    Io(#[source] io::Error),
}

impl ArchiveError {
    /// The `error.code` of the HTTP answer.
    pub fn code(&self) -> &'static str {
        match self {
            Self::EntryNotFound { .. } | Self::NoDefaultEntry { .. } => "no_entry",
            Self::Io(_) => "internal",
            _ => "bad_archive",
        }
    }

    /// The HTTP status: 400 for everything the upload did, 500 for `Io`.
    pub fn status(&self) -> u16 {
        match self {
            Self::Io(_) => 500,
            _ => 400,
        }
    }
}

/// Unpacks `body` into `dest`, an existing empty directory. When every entry
/// sits under one top-level directory, that directory's contents become the
/// root. On error `dest` is left empty.
pub fn unpack(
    kind: ArchiveKind,
    body: &[u8],
    dest: &Path,
    limits: &ArchiveLimits,
) -> Result<Unpacked, ArchiveError> {
    let is_empty = fs::read_dir(dest)
        .map_err(ArchiveError::Io)?
        .next()
        .is_none();
    if !is_empty {
        return Err(ArchiveError::Io(io::Error::other(format!(
            "{} is not empty",
            dest.display()
        ))));
    }
    let result = unpack_into(kind, body, dest, limits);
    if result.is_err() {
        clear(dest);
    }
    result
}

/// `unpack` without the clean-up (tests look at what an error left behind).
fn unpack_into(
    kind: ArchiveKind,
    body: &[u8],
    dest: &Path,
    limits: &ArchiveLimits,
) -> Result<Unpacked, ArchiveError> {
    let mut w = Writer::new(kind, body.len() as u64, dest, limits);
    match kind {
        ArchiveKind::TarGz => {
            w.tar_stream(flate2::read::MultiGzDecoder::new(body))?;
        }
        ArchiveKind::Tar => w.tar_stream(body)?,
        ArchiveKind::Zip => w.zip(body)?,
    }
    w.finish()
}

/// The module to run: `explicit` (which must name one of `files`), else the
/// first of [`DEFAULT_ENTRIES`] at the root.
pub fn pick_entry(files: &[String], explicit: Option<&str>) -> Result<String, ArchiveError> {
    if let Some(entry) = explicit {
        let not_found = |hint: &str| ArchiveError::EntryNotFound {
            entry: entry.to_owned(),
            hint: hint.to_owned(),
        };
        let mut parts = Vec::new();
        for part in entry.split('/') {
            match part {
                "" | "." => {}
                ".." => return Err(not_found(" (`..` is not allowed)")),
                p => parts.push(p),
            }
        }
        if entry.starts_with('/') || entry.contains('\\') {
            return Err(not_found(" (give a path relative to the archive's root)"));
        }
        let wanted = parts.join("/");
        return match files.iter().find(|f| **f == wanted) {
            Some(f) => Ok(f.clone()),
            None => Err(not_found("")),
        };
    }
    if let Some(found) = DEFAULT_ENTRIES
        .iter()
        .find(|d| files.iter().any(|f| f == *d))
    {
        return Ok((*found).to_owned());
    }
    let root: Vec<&str> = files
        .iter()
        .filter(|f| !f.contains('/'))
        .map(String::as_str)
        .collect();
    let found = match root.len() {
        0 => " (it has no files there)".to_owned(),
        n if n <= 10 => format!(" (it has {})", root.join(", ")),
        n => format!(" (it has {}, and {} more)", root[..10].join(", "), n - 10),
    };
    Err(ArchiveError::NoDefaultEntry { found })
}

/// An entry's name, checked and split into its components (`.` and empty
/// ones dropped). No components: the root itself.
fn clean_path(raw: &[u8], max_depth: usize) -> Result<Vec<String>, ArchiveError> {
    let lossy = || String::from_utf8_lossy(raw).into_owned();
    if raw.iter().any(|b| b.is_ascii_control()) {
        return Err(ArchiveError::ControlChar { name: lossy() });
    }
    let Ok(name) = std::str::from_utf8(raw) else {
        return Err(ArchiveError::NotUtf8 { name: lossy() });
    };
    let named = || name.to_owned();
    if name.len() > MAX_PATH_BYTES {
        return Err(ArchiveError::NameTooLong { name: named() });
    }
    if name.starts_with('/') {
        return Err(ArchiveError::AbsolutePath { name: named() });
    }
    let drive =
        name.len() >= 2 && name.as_bytes()[0].is_ascii_alphabetic() && name.as_bytes()[1] == b':';
    if name.contains('\\') || drive {
        return Err(ArchiveError::WindowsPath { name: named() });
    }
    let mut parts = Vec::new();
    for part in name.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(ArchiveError::ParentDir { name: named() }),
            p if p.len() > MAX_COMPONENT_BYTES => {
                return Err(ArchiveError::NameTooLong { name: named() });
            }
            p => parts.push(p.to_owned()),
        }
    }
    if parts.len() > max_depth {
        return Err(ArchiveError::TooDeep {
            name: named(),
            max: max_depth,
        });
    }
    Ok(parts)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Node {
    File,
    /// `explicit`: the archive had an entry for it (not only files under it).
    Dir {
        explicit: bool,
    },
}

/// Refuses to read more than `left` bytes of `inner`, and remembers that it did.
struct Capped<R> {
    inner: R,
    left: u64,
    hit: bool,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            self.hit = true;
            return Err(io::Error::other("the archive stream is over its limit"));
        }
        let max = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..max])?;
        self.left -= n as u64;
        Ok(n)
    }
}

/// What unpacking has written so far, and the checks against it.
struct Writer<'a> {
    kind: ArchiveKind,
    dest: &'a Path,
    limits: &'a ArchiveLimits,
    /// All files' bytes may not pass this.
    total_cap: u64,
    /// Whether `total_cap` comes from the ratio (which error to give).
    ratio_bound: bool,
    entries: u64,
    bytes: u64,
    nodes: BTreeMap<String, Node>,
}

impl<'a> Writer<'a> {
    fn new(kind: ArchiveKind, body_len: u64, dest: &'a Path, limits: &'a ArchiveLimits) -> Self {
        let by_ratio = limits
            .max_ratio
            .saturating_mul(body_len)
            .max(RATIO_FLOOR_BYTES);
        Self {
            kind,
            dest,
            limits,
            total_cap: by_ratio.min(limits.max_unpacked_bytes),
            ratio_bound: by_ratio < limits.max_unpacked_bytes,
            entries: 0,
            bytes: 0,
            nodes: BTreeMap::new(),
        }
    }

    fn corrupt(&self, detail: impl fmt::Display) -> ArchiveError {
        ArchiveError::Corrupt {
            kind: self.kind,
            detail: detail.to_string(),
        }
    }

    fn count_entry(&mut self) -> Result<(), ArchiveError> {
        self.entries += 1;
        if self.entries > self.limits.max_entries {
            return Err(ArchiveError::TooManyEntries {
                max: self.limits.max_entries,
            });
        }
        Ok(())
    }

    /// Creates the directories above `parts` that do not exist yet.
    fn parents(&mut self, parts: &[String], name: &str) -> Result<(), ArchiveError> {
        for i in 1..parts.len() {
            let path = parts[..i].join("/");
            match self.nodes.get(&path) {
                Some(Node::Dir { .. }) => {}
                Some(Node::File) => {
                    return Err(ArchiveError::FileAndDir {
                        name: name.to_owned(),
                    });
                }
                None => {
                    self.mkdir(&path)?;
                    self.nodes.insert(path, Node::Dir { explicit: false });
                }
            }
        }
        Ok(())
    }

    fn mkdir(&self, rel: &str) -> Result<(), ArchiveError> {
        let path = self.dest.join(rel);
        // `create`, not `create_all`: every level is made here, once; an
        // existing one (never expected) is an error rather than followed.
        fs::DirBuilder::new()
            .mode(0o755)
            .create(&path)
            .map_err(ArchiveError::Io)?;
        // Whatever the process umask is.
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).map_err(ArchiveError::Io)
    }

    fn dir(&mut self, parts: &[String], name: &str) -> Result<(), ArchiveError> {
        if parts.is_empty() {
            return Ok(());
        }
        self.parents(parts, name)?;
        let path = parts.join("/");
        match self.nodes.get(&path) {
            Some(Node::File) => Err(ArchiveError::FileAndDir {
                name: name.to_owned(),
            }),
            Some(Node::Dir { explicit: true }) => Err(ArchiveError::Duplicate {
                name: name.to_owned(),
            }),
            Some(Node::Dir { explicit: false }) => {
                self.nodes.insert(path, Node::Dir { explicit: true });
                Ok(())
            }
            None => {
                self.mkdir(&path)?;
                self.nodes.insert(path, Node::Dir { explicit: true });
                Ok(())
            }
        }
    }

    fn file(&mut self, parts: &[String], name: &str, data: impl Read) -> Result<(), ArchiveError> {
        if parts.is_empty() {
            return Err(ArchiveError::FileAndDir {
                name: name.to_owned(),
            });
        }
        self.parents(parts, name)?;
        let path = parts.join("/");
        match self.nodes.get(&path) {
            Some(Node::File) => {
                return Err(ArchiveError::Duplicate {
                    name: name.to_owned(),
                });
            }
            Some(Node::Dir { .. }) => {
                return Err(ArchiveError::FileAndDir {
                    name: name.to_owned(),
                });
            }
            None => {}
        }
        // O_EXCL: never opens what is already there, a link included.
        let mut out = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(self.dest.join(&path))
            .map_err(ArchiveError::Io)?;
        out.set_permissions(fs::Permissions::from_mode(0o644))
            .map_err(ArchiveError::Io)?;
        self.nodes.insert(path, Node::File);

        let room = self
            .limits
            .max_file_bytes
            .min(self.total_cap.saturating_sub(self.bytes));
        // One byte past the room tells "too big" from "exactly full".
        let mut data = data.take(room.saturating_add(1));
        let mut buf = vec![0u8; 64 * 1024];
        let mut written = 0u64;
        loop {
            let n = match data.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.corrupt(format_args!("reading {name:?}: {e}"))),
            };
            if written + n as u64 > room {
                return Err(self.over_limit(name, written + n as u64));
            }
            out.write_all(&buf[..n]).map_err(ArchiveError::Io)?;
            written += n as u64;
        }
        self.bytes += written;
        Ok(())
    }

    /// The error for a file that would reach `size` bytes, over its room.
    fn over_limit(&self, name: &str, size: u64) -> ArchiveError {
        let name = name.to_owned();
        if size > self.limits.max_file_bytes {
            ArchiveError::FileTooLarge {
                name,
                max: self.limits.max_file_bytes,
            }
        } else if self.ratio_bound {
            ArchiveError::RatioExceeded {
                name,
                ratio: self.limits.max_ratio,
            }
        } else {
            ArchiveError::TooLarge {
                name,
                max: self.total_cap,
            }
        }
    }

    /// A tar stream (decompressed already when it was a tar.gz).
    fn tar_stream(&mut self, stream: impl Read) -> Result<(), ArchiveError> {
        // Headers, long names and padding besides the files' bytes; a record
        // size of up to 1 MiB at the end.
        let overhead = self
            .limits
            .max_entries
            .saturating_add(2)
            .saturating_mul(4096)
            .saturating_add(1024 * 1024);
        let mut capped = Capped {
            inner: stream,
            left: self.total_cap.saturating_add(overhead),
            hit: false,
        };
        let result = self.tar_entries(&mut capped);
        if capped.hit {
            return Err(ArchiveError::TooLarge {
                name: "(the archive's own headers and padding)".into(),
                max: self.total_cap,
            });
        }
        result
    }

    fn tar_entries<R: Read>(&mut self, stream: &mut Capped<R>) -> Result<(), ArchiveError> {
        use tar::EntryType;
        let mut archive = tar::Archive::new(&mut *stream);
        let entries = archive.entries().map_err(|e| self.corrupt(e))?;
        for entry in entries {
            let entry = entry.map_err(|e| self.corrupt(e))?;
            let kind = entry.header().entry_type();
            // `git archive` writes one (a comment with the commit id).
            if kind.is_pax_global_extensions() {
                continue;
            }
            self.count_entry()?;
            let raw = entry.path_bytes().into_owned();
            let lossy = String::from_utf8_lossy(&raw).into_owned();
            let refused = |kind: &'static str, link: bool| {
                if link {
                    ArchiveError::Link {
                        name: lossy.clone(),
                        kind,
                    }
                } else {
                    ArchiveError::Special {
                        name: lossy.clone(),
                        kind,
                    }
                }
            };
            match kind {
                EntryType::Symlink => return Err(refused("symbolic link", true)),
                EntryType::Link => return Err(refused("hard link", true)),
                EntryType::Char => return Err(refused("character device", false)),
                EntryType::Block => return Err(refused("block device", false)),
                EntryType::Fifo => return Err(refused("named pipe (FIFO)", false)),
                EntryType::Regular | EntryType::Continuous | EntryType::Directory => {}
                other => {
                    return Err(ArchiveError::Unsupported {
                        name: lossy,
                        what: format!("a tar entry of type {other:?}"),
                    });
                }
            }
            let parts = clean_path(&raw, self.limits.max_depth)?;
            if parts.first().is_some_and(|p| p == MACOS_METADATA_DIR) {
                continue;
            }
            if kind == EntryType::Directory {
                self.dir(&parts, &lossy)?;
            } else {
                self.file(&parts, &lossy, entry)?;
            }
        }
        // Read to the end so gzip checks its checksum and length.
        io::copy(&mut archive.into_inner(), &mut io::sink()).map_err(|e| self.corrupt(e))?;
        Ok(())
    }

    fn zip(&mut self, body: &[u8]) -> Result<(), ArchiveError> {
        let mut zip = zip::ZipArchive::new(Cursor::new(body)).map_err(|e| self.corrupt(e))?;
        if zip.has_duplicate_names() {
            return Err(ArchiveError::DuplicateInZip);
        }
        if zip.len() as u64 > self.limits.max_entries {
            return Err(ArchiveError::TooManyEntries {
                max: self.limits.max_entries,
            });
        }
        // Local headers that say other than the central directory, entries
        // that overlap (a classic bomb), local headers the directory hides.
        zip.validate_header_consistency()
            .map_err(|e| self.corrupt(e))?;
        for i in 0..zip.len() {
            self.count_entry()?;
            let (raw, mode, is_dir, encrypted) = {
                let e = zip.by_index_data(i).map_err(|e| self.corrupt(e))?;
                (
                    e.name_raw().to_vec(),
                    e.unix_mode(),
                    e.is_dir(),
                    e.encrypted(),
                )
            };
            let lossy = String::from_utf8_lossy(&raw).into_owned();
            if encrypted {
                return Err(ArchiveError::Encrypted { name: lossy });
            }
            const S_IFMT: u32 = 0o170000;
            let is_dir = match mode.map(|m| m & S_IFMT) {
                None | Some(0) | Some(0o100000) => is_dir,
                Some(0o040000) => true,
                Some(0o120000) => {
                    return Err(ArchiveError::Link {
                        name: lossy,
                        kind: "symbolic link",
                    });
                }
                Some(t) => {
                    let kind = match t {
                        0o020000 => "character device",
                        0o060000 => "block device",
                        0o010000 => "named pipe (FIFO)",
                        0o140000 => "socket",
                        _ => "file of unknown type",
                    };
                    return Err(ArchiveError::Special { name: lossy, kind });
                }
            };
            let parts = clean_path(&raw, self.limits.max_depth)?;
            if parts.first().is_some_and(|p| p == MACOS_METADATA_DIR) {
                continue;
            }
            if is_dir {
                self.dir(&parts, &lossy)?;
                continue;
            }
            let kind = self.kind;
            let data = zip.by_index(i).map_err(|e| match e {
                zip::result::ZipError::UnsupportedArchive(what) => ArchiveError::Unsupported {
                    name: lossy.clone(),
                    what: what.to_owned(),
                },
                zip::result::ZipError::CompressionMethodNotSupported(m) => {
                    ArchiveError::Unsupported {
                        name: lossy.clone(),
                        what: format!("compression method {m} (use deflate or none)"),
                    }
                }
                other => ArchiveError::Corrupt {
                    kind,
                    detail: format!("reading {lossy:?}: {other}"),
                },
            })?;
            self.file(&parts, &lossy, data)?;
        }
        Ok(())
    }

    /// Checks there is something, makes a single top directory the root, lists.
    fn finish(self) -> Result<Unpacked, ArchiveError> {
        if !self.nodes.values().any(|n| *n == Node::File) {
            return Err(ArchiveError::Empty);
        }
        let mut tops = self.nodes.keys().filter(|k| !k.contains('/'));
        let unwrapped = match (tops.next(), tops.next()) {
            (Some(top), None) if self.nodes.get(top) != Some(&Node::File) => Some(top.clone()),
            _ => None,
        };
        if let Some(top) = &unwrapped {
            self.unwrap_top(top)?;
        }
        let prefix = unwrapped.as_ref().map(|t| format!("{t}/"));
        let mut files = self
            .nodes
            .iter()
            .filter(|(_, n)| **n == Node::File)
            .map(|(k, _)| match &prefix {
                Some(p) => k.strip_prefix(p.as_str()).unwrap_or(k).to_owned(),
                None => k.clone(),
            })
            .collect::<Vec<_>>();
        files.sort();
        Ok(Unpacked {
            files,
            bytes: self.bytes,
            unwrapped,
        })
    }

    /// Moves the contents of `dest/top` up into `dest`.
    fn unwrap_top(&self, top: &str) -> Result<(), ArchiveError> {
        let children: Vec<&str> = self
            .nodes
            .keys()
            .filter_map(|k| k.strip_prefix(top)?.strip_prefix('/'))
            .filter(|rest| !rest.contains('/'))
            .collect();
        // A name for the moved top that none of its children has.
        let holder = (0u32..)
            .map(|i| format!(".skiff-unwrap-{i}"))
            .find(|h| h != top && !children.contains(&h.as_str()))
            .unwrap_or_default();
        let held = self.dest.join(&holder);
        fs::rename(self.dest.join(top), &held).map_err(ArchiveError::Io)?;
        for child in children {
            fs::rename(held.join(child), self.dest.join(child)).map_err(ArchiveError::Io)?;
        }
        fs::remove_dir(&held).map_err(ArchiveError::Io)
    }
}

/// Removes everything under `dest` (best effort: after a refused archive,
/// the caller discards the directory anyway). Nothing under it is a link: only
/// this module wrote there.
fn clear(dest: &Path) {
    let Ok(children) = fs::read_dir(dest) else {
        return;
    };
    for child in children.flatten() {
        let path = child.path();
        let is_dir = fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir());
        let _ = if is_dir {
            fs::remove_dir_all(&path)
        } else {
            fs::remove_file(&path)
        };
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::io::Write as _;
    use std::os::unix::fs::PermissionsExt as _;

    use tar::EntryType;
    use zip::write::SimpleFileOptions;

    use super::*;

    // ---- building archives, hostile ones included ----

    /// A GNU header with `name` written as is into the name field (≤ 100 bytes),
    /// bypassing the builder's own path checks.
    fn header(name: &[u8], kind: EntryType, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.set_mode(if kind == EntryType::Directory {
            0o755
        } else {
            0o644
        });
        h.set_size(size);
        h.set_entry_type(kind);
        h.set_cksum();
        h
    }

    /// One tar entry: raw name, type, data. Names over 100 bytes go through a
    /// GNU long-name entry, as GNU tar writes them.
    struct E<'a>(&'a [u8], EntryType, &'a [u8]);

    fn tar_of(entries: &[E<'_>]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for E(name, kind, data) in entries {
            let short: &[u8] = if name.len() > 100 {
                let mut long = name.to_vec();
                long.push(0);
                let h = header(b"././@LongLink", EntryType::GNULongName, long.len() as u64);
                b.append(&h, &long[..]).unwrap();
                b"long"
            } else {
                name
            };
            b.append(&header(short, *kind, data.len() as u64), *data)
                .unwrap();
        }
        b.into_inner().unwrap()
    }

    fn gz(bytes: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap()
    }

    fn file<'a>(name: &'a str, data: &'a str) -> E<'a> {
        E(name.as_bytes(), EntryType::Regular, data.as_bytes())
    }

    fn dir(name: &str) -> E<'_> {
        E(name.as_bytes(), EntryType::Directory, b"")
    }

    enum Z<'a> {
        File(&'a str, &'a [u8]),
        Dir(&'a str),
        /// A file entry with these external attributes (unix mode << 16).
        Attrs(&'a str, u32),
        Symlink(&'a str, &'a str),
    }

    fn zip_of(entries: &[Z<'_>]) -> Vec<u8> {
        let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let opts =
            SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
        for e in entries {
            match e {
                Z::File(name, data) => {
                    w.start_file(*name, opts).unwrap();
                    w.write_all(data).unwrap();
                }
                Z::Dir(name) => w.add_directory(*name, opts).unwrap(),
                Z::Attrs(name, attrs) => {
                    w.start_file(*name, opts.external_attributes(*attrs))
                        .unwrap();
                    w.write_all(b"x").unwrap();
                }
                Z::Symlink(name, target) => w.add_symlink(*name, *target, opts).unwrap(),
            }
        }
        w.finish().unwrap().into_inner()
    }

    /// Replaces every occurrence of `from` by `to` (same length) in `bytes`.
    fn patch(bytes: &mut [u8], from: &[u8], to: &[u8]) -> usize {
        assert_eq!(from.len(), to.len());
        let mut n = 0;
        let mut i = 0;
        while i + from.len() <= bytes.len() {
            if &bytes[i..i + from.len()] == from {
                bytes[i..i + from.len()].copy_from_slice(to);
                n += 1;
                i += from.len();
            } else {
                i += 1;
            }
        }
        n
    }

    fn try_unpack(
        kind: ArchiveKind,
        body: &[u8],
    ) -> (tempfile::TempDir, Result<Unpacked, ArchiveError>) {
        try_unpack_with(kind, body, &ArchiveLimits::default())
    }

    fn try_unpack_with(
        kind: ArchiveKind,
        body: &[u8],
        limits: &ArchiveLimits,
    ) -> (tempfile::TempDir, Result<Unpacked, ArchiveError>) {
        let dir = tempfile::tempdir().unwrap();
        let r = unpack(kind, body, dir.path(), limits);
        (dir, r)
    }

    /// The refusal of `body`, after checking it left nothing behind.
    fn refused(kind: ArchiveKind, body: &[u8]) -> ArchiveError {
        refused_with(kind, body, &ArchiveLimits::default())
    }

    fn refused_with(kind: ArchiveKind, body: &[u8], limits: &ArchiveLimits) -> ArchiveError {
        let (dir, r) = try_unpack_with(kind, body, limits);
        let e = r.expect_err("the archive was accepted");
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            0,
            "a refused archive left files behind ({e})"
        );
        assert_eq!(e.status(), 400, "{e}");
        e
    }

    fn tree(root: &Path) -> Vec<String> {
        fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
            for e in fs::read_dir(dir).unwrap() {
                let e = e.unwrap();
                let meta = fs::symlink_metadata(e.path()).unwrap();
                let rel = e.path().strip_prefix(root).unwrap().display().to_string();
                let mode = meta.permissions().mode() & 0o7777;
                if meta.is_dir() {
                    out.push(format!("{rel}/ {mode:o}"));
                    walk(root, &e.path(), out);
                } else {
                    assert!(meta.is_file(), "{rel} is neither file nor directory");
                    out.push(format!("{rel} {mode:o}"));
                }
            }
        }
        let mut out = Vec::new();
        walk(root, root, &mut out);
        out.sort();
        out
    }

    // ---- content types ----

    #[test]
    fn content_types_name_the_archive_kind() {
        use ArchiveKind::*;
        for (ct, kind) in [
            (Some("application/gzip"), Some(TarGz)),
            (Some("Application/X-GZIP; charset=binary"), Some(TarGz)),
            (Some("application/x-compressed-tar"), Some(TarGz)),
            (Some("application/x-tar"), Some(Tar)),
            (Some("application/zip"), Some(Zip)),
            (Some(" application/x-zip-compressed ;q=1"), Some(Zip)),
            (Some("application/typescript"), None),
            (Some("text/plain"), None),
            (Some("application/octet-stream"), None),
            (Some(""), None),
            (None, None),
        ] {
            assert_eq!(kind_of(ct), kind, "{ct:?}");
        }
    }

    // ---- well-formed archives ----

    fn sample_tar() -> Vec<u8> {
        tar_of(&[
            dir("./"),
            file("./main.ts", "export default () => new Response('hi');\n"),
            dir("./lib/"),
            dir("./lib/deep/"),
            file("./lib/deep/util.ts", "export const x = 1;\n"),
            // no directory entry for `data/`: made on the way
            file("./data/words.txt", "a b c"),
            E(b"empty.ts", EntryType::Regular, b""),
        ])
    }

    fn expected_files() -> Vec<String> {
        ["data/words.txt", "empty.ts", "lib/deep/util.ts", "main.ts"]
            .map(String::from)
            .to_vec()
    }

    fn assert_sample_unpacked(dir: &Path, u: &Unpacked) {
        assert_eq!(u.files, expected_files());
        assert_eq!(u.bytes, 41 + 20 + 5);
        assert_eq!(u.unwrapped, None);
        assert_eq!(
            fs::read_to_string(dir.join("lib/deep/util.ts")).unwrap(),
            "export const x = 1;\n"
        );
        assert_eq!(
            tree(dir),
            [
                "data/ 755",
                "data/words.txt 644",
                "empty.ts 644",
                "lib/ 755",
                "lib/deep/ 755",
                "lib/deep/util.ts 644",
                "main.ts 644",
            ]
        );
    }

    #[test]
    fn a_tar_gz_with_nested_directories_round_trips() {
        let (dir, r) = try_unpack(ArchiveKind::TarGz, &gz(&sample_tar()));
        assert_sample_unpacked(dir.path(), &r.unwrap());
    }

    #[test]
    fn a_plain_tar_round_trips() {
        let (dir, r) = try_unpack(ArchiveKind::Tar, &sample_tar());
        assert_sample_unpacked(dir.path(), &r.unwrap());
    }

    #[test]
    fn a_zip_round_trips() {
        let body = zip_of(&[
            Z::File("main.ts", b"export default () => new Response('hi');\n"),
            Z::Dir("lib/"),
            Z::Dir("lib/deep/"),
            Z::File("lib/deep/util.ts", b"export const x = 1;\n"),
            Z::File("data/words.txt", b"a b c"),
            Z::File("empty.ts", b""),
        ]);
        let (dir, r) = try_unpack(ArchiveKind::Zip, &body);
        assert_sample_unpacked(dir.path(), &r.unwrap());
    }

    #[test]
    fn modes_from_the_archive_are_not_kept() {
        let mut h = header(b"main.ts", EntryType::Regular, 2);
        h.set_mode(0o4777);
        h.set_uid(0);
        h.set_mtime(1);
        h.set_cksum();
        let mut b = tar::Builder::new(Vec::new());
        b.append(&h, &b"hi"[..]).unwrap();
        let (dir, r) = try_unpack(ArchiveKind::Tar, &b.into_inner().unwrap());
        r.unwrap();
        assert_eq!(tree(dir.path()), ["main.ts 644"]);
        let mtime = fs::metadata(dir.path().join("main.ts"))
            .unwrap()
            .modified()
            .unwrap();
        assert!(mtime > std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000));
    }

    #[test]
    fn a_single_top_directory_becomes_the_root() {
        // as `tar czf x.tgz myfn/` writes it
        let body = gz(&tar_of(&[
            dir("myfn/"),
            file("myfn/main.ts", "m"),
            dir("myfn/lib/"),
            file("myfn/lib/x.ts", "x"),
            // a child named like the top directory itself
            file("myfn/myfn/y.ts", "y"),
        ]));
        let (dir, r) = try_unpack(ArchiveKind::TarGz, &body);
        let u = r.unwrap();
        assert_eq!(u.unwrapped.as_deref(), Some("myfn"));
        assert_eq!(u.files, ["lib/x.ts", "main.ts", "myfn/y.ts"]);
        assert_eq!(
            tree(dir.path()),
            [
                "lib/ 755",
                "lib/x.ts 644",
                "main.ts 644",
                "myfn/ 755",
                "myfn/y.ts 644"
            ]
        );
        assert_eq!(pick_entry(&u.files, None).unwrap(), "main.ts");

        // also without a directory entry, and in a zip (with Finder's metadata)
        let body = zip_of(&[
            Z::File("myfn/main.ts", b"m"),
            Z::File("__MACOSX/myfn/._main.ts", b"junk"),
        ]);
        let (dir, r) = try_unpack(ArchiveKind::Zip, &body);
        let u = r.unwrap();
        assert_eq!(
            (u.files, u.unwrapped.as_deref()),
            (vec!["main.ts".to_owned()], Some("myfn"))
        );
        assert_eq!(tree(dir.path()), ["main.ts 644"]);

        // two top-level names: nothing moves
        let body = tar_of(&[file("a/main.ts", "m"), file("b/x.ts", "x")]);
        let (_dir, r) = try_unpack(ArchiveKind::Tar, &body);
        let u = r.unwrap();
        assert_eq!((u.files.len(), u.unwrapped), (2, None));
        // a single top-level file is not a directory to unwrap
        let (_dir, r) = try_unpack(ArchiveKind::Tar, &tar_of(&[file("main.ts", "m")]));
        assert_eq!(r.unwrap().unwrapped, None);
    }

    #[test]
    fn git_archive_global_headers_are_skipped() {
        let comment = b"52 comment=0123456789abcdef0123456789abcdef01234567\n";
        let mut h = header(
            b"pax_global_header",
            EntryType::XGlobalHeader,
            comment.len() as u64,
        );
        h.set_cksum();
        let mut b = tar::Builder::new(Vec::new());
        b.append(&h, &comment[..]).unwrap();
        b.append(&header(b"main.ts", EntryType::Regular, 1), &b"m"[..])
            .unwrap();
        let (_dir, r) = try_unpack(ArchiveKind::Tar, &b.into_inner().unwrap());
        assert_eq!(r.unwrap().files, ["main.ts"]);
    }

    // ---- hostile names ----

    #[test]
    fn hostile_names_are_refused() {
        let long_part = "a".repeat(256);
        let long_path = format!("{}/x.ts", ["abcdefghij"; 94].join("/"));
        type Expected = fn(&ArchiveError) -> bool;
        let cases: Vec<(Vec<u8>, Expected)> = vec![
            (b"/etc/passwd".to_vec(), |e| {
                matches!(e, ArchiveError::AbsolutePath { .. })
            }),
            (b"../evil.ts".to_vec(), |e| {
                matches!(e, ArchiveError::ParentDir { .. })
            }),
            (b"a/../../evil.ts".to_vec(), |e| {
                matches!(e, ArchiveError::ParentDir { .. })
            }),
            (b"a/b/..".to_vec(), |e| {
                matches!(e, ArchiveError::ParentDir { .. })
            }),
            (b"C:/evil.ts".to_vec(), |e| {
                matches!(e, ArchiveError::WindowsPath { .. })
            }),
            (b"c:evil.ts".to_vec(), |e| {
                matches!(e, ArchiveError::WindowsPath { .. })
            }),
            (b"..\\evil.ts".to_vec(), |e| {
                matches!(e, ArchiveError::WindowsPath { .. })
            }),
            (b"a\0b.ts".to_vec(), |e| {
                matches!(e, ArchiveError::ControlChar { .. })
            }),
            (b"a\nb.ts".to_vec(), |e| {
                matches!(e, ArchiveError::ControlChar { .. })
            }),
            (b"caf\xe9.ts".to_vec(), |e| {
                matches!(e, ArchiveError::NotUtf8 { .. })
            }),
            (long_part.into_bytes(), |e| {
                matches!(e, ArchiveError::NameTooLong { .. })
            }),
            (long_path.into_bytes(), |e| {
                matches!(e, ArchiveError::NameTooLong { .. })
            }),
        ];
        for (name, expected) in &cases {
            let shown = String::from_utf8_lossy(name);
            // NUL cannot sit in a 100-byte name field: it ends it. A GNU long
            // name carries it.
            let tar_name = if name.contains(&0) {
                [name.as_slice(), &[b'/'; 100]].concat()
            } else {
                name.clone()
            };
            for kind in [ArchiveKind::Tar, ArchiveKind::TarGz] {
                let t = tar_of(&[file("main.ts", "m"), E(&tar_name, EntryType::Regular, b"x")]);
                let body = if kind == ArchiveKind::TarGz {
                    gz(&t)
                } else {
                    t
                };
                let e = refused(kind, &body);
                assert!(expected(&e), "tar {shown:?}: {e:?}");
                assert_eq!(e.code(), "bad_archive");
            }
            if let Ok(zip_name) = std::str::from_utf8(name) {
                let body = zip_of(&[Z::File(zip_name, b"x")]);
                let e = refused(ArchiveKind::Zip, &body);
                assert!(expected(&e), "zip {shown:?}: {e:?}");
            }
        }
        // the message names the entry
        let e = refused(ArchiveKind::Tar, &tar_of(&[file("../evil.ts", "x")]));
        assert!(e.to_string().contains("\"../evil.ts\""), "{e}");
    }

    #[test]
    fn a_non_utf8_zip_name_is_refused() {
        let mut body = zip_of(&[Z::File("cafX.ts", b"x")]);
        assert_eq!(patch(&mut body, b"cafX.ts", b"caf\xe9.ts"), 2);
        let e = refused(ArchiveKind::Zip, &body);
        assert!(matches!(e, ArchiveError::NotUtf8 { .. }), "{e:?}");
    }

    #[test]
    fn too_deep_is_refused() {
        let deep = format!("{}x.ts", "d/".repeat(32));
        let e = refused(ArchiveKind::Tar, &tar_of(&[file(&deep, "x")]));
        assert!(matches!(e, ArchiveError::TooDeep { max: 32, .. }), "{e:?}");
        // 32 levels are fine
        let ok = format!("{}x.ts", "d/".repeat(31));
        let (_dir, r) = try_unpack(ArchiveKind::Tar, &tar_of(&[file(&ok, "x")]));
        r.unwrap();
    }

    // ---- links and special files ----

    #[test]
    fn links_and_devices_in_a_tar_are_refused() {
        for (kind, expected) in [
            (EntryType::Symlink, "symbolic link"),
            (EntryType::Link, "hard link"),
            (EntryType::Char, "character device"),
            (EntryType::Block, "block device"),
            (EntryType::Fifo, "named pipe (FIFO)"),
        ] {
            let mut h = header(b"evil", kind, 0);
            h.set_link_name("/etc/passwd").unwrap();
            h.set_cksum();
            let mut b = tar::Builder::new(Vec::new());
            b.append(&header(b"main.ts", EntryType::Regular, 1), &b"m"[..])
                .unwrap();
            b.append(&h, &b""[..]).unwrap();
            let e = refused(ArchiveKind::Tar, &b.into_inner().unwrap());
            match &e {
                ArchiveError::Link { name, kind } | ArchiveError::Special { name, kind } => {
                    assert_eq!((name.as_str(), *kind), ("evil", expected));
                }
                other => panic!("{other:?}"),
            }
            assert!(e.to_string().contains("evil"), "{e}");
        }
        let e = refused(
            ArchiveKind::Tar,
            // a GNU volume label
            &tar_of(&[E(b"label", EntryType::new(b'V'), b"")]),
        );
        assert!(matches!(e, ArchiveError::Unsupported { .. }), "{e:?}");
    }

    #[test]
    fn links_and_devices_in_a_zip_are_refused() {
        let e = refused(
            ArchiveKind::Zip,
            &zip_of(&[Z::File("main.ts", b"m"), Z::Symlink("evil", "/etc/passwd")]),
        );
        assert!(
            matches!(&e, ArchiveError::Link { name, .. } if name == "evil"),
            "{e:?}"
        );
        for (mode, kind) in [
            (0o020644, "character device"),
            (0o060644, "block device"),
            (0o010644, "named pipe (FIFO)"),
            (0o140644, "socket"),
        ] {
            let e = refused(ArchiveKind::Zip, &zip_of(&[Z::Attrs("dev", mode << 16)]));
            assert!(
                matches!(&e, ArchiveError::Special { kind: k, .. } if *k == kind),
                "{mode:o}: {e:?}"
            );
        }
        // an ordinary mode is fine
        let (_dir, r) = try_unpack(
            ArchiveKind::Zip,
            &zip_of(&[Z::Attrs("main.ts", 0o100755 << 16)]),
        );
        r.unwrap();
    }

    // ---- duplicates and clashes ----

    #[test]
    fn duplicates_and_file_directory_clashes_are_refused() {
        let dup = |entries: &[E<'_>]| refused(ArchiveKind::Tar, &tar_of(entries));
        let e = dup(&[file("a.ts", "1"), file("a.ts", "2")]);
        assert!(matches!(e, ArchiveError::Duplicate { .. }), "{e:?}");
        // the same path spelt two ways
        let e = dup(&[file("lib/a.ts", "1"), file("./lib//a.ts", "2")]);
        assert!(matches!(e, ArchiveError::Duplicate { .. }), "{e:?}");
        let e = dup(&[dir("lib/"), dir("lib/"), file("lib/a.ts", "1")]);
        assert!(matches!(e, ArchiveError::Duplicate { .. }), "{e:?}");
        let e = dup(&[file("a", "1"), file("a/b.ts", "2")]);
        assert!(matches!(e, ArchiveError::FileAndDir { .. }), "{e:?}");
        let e = dup(&[dir("a/"), file("a", "1")]);
        assert!(matches!(e, ArchiveError::FileAndDir { .. }), "{e:?}");
        let e = dup(&[file("a/b.ts", "1"), file("a", "2")]);
        assert!(matches!(e, ArchiveError::FileAndDir { .. }), "{e:?}");
        let e = dup(&[file("a", "1"), dir("a/")]);
        assert!(matches!(e, ArchiveError::FileAndDir { .. }), "{e:?}");
        // a directory entry after files in it is fine
        let (_dir, r) = try_unpack(
            ArchiveKind::Tar,
            &tar_of(&[file("lib/a.ts", "1"), dir("lib/")]),
        );
        r.unwrap();

        let mut body = zip_of(&[Z::File("a.ts", b"1"), Z::File("b.ts", b"2")]);
        assert_eq!(patch(&mut body, b"b.ts", b"a.ts"), 2);
        let e = refused(ArchiveKind::Zip, &body);
        assert!(matches!(e, ArchiveError::DuplicateInZip), "{e:?}");
        let e = refused(
            ArchiveKind::Zip,
            &zip_of(&[Z::File("a.ts", b"1"), Z::File("./a.ts", b"2")]),
        );
        assert!(matches!(e, ArchiveError::Duplicate { .. }), "{e:?}");
    }

    // ---- counts and sizes ----

    #[test]
    fn too_many_entries_are_refused() {
        let limits = ArchiveLimits {
            max_entries: 3,
            ..ArchiveLimits::default()
        };
        let names = ["a.ts", "b.ts", "c.ts", "d.ts"];
        let t: Vec<E<'_>> = names.iter().map(|n| file(n, "x")).collect();
        let e = refused_with(ArchiveKind::TarGz, &gz(&tar_of(&t)), &limits);
        assert!(
            matches!(e, ArchiveError::TooManyEntries { max: 3 }),
            "{e:?}"
        );
        let z: Vec<Z<'_>> = names.iter().map(|n| Z::File(n, b"x")).collect();
        let e = refused_with(ArchiveKind::Zip, &zip_of(&z), &limits);
        assert!(
            matches!(e, ArchiveError::TooManyEntries { max: 3 }),
            "{e:?}"
        );
        let (_dir, r) = try_unpack_with(ArchiveKind::TarGz, &gz(&tar_of(&t[..3])), &limits);
        r.unwrap();
    }

    fn zeros_tar_gz(len: usize) -> Vec<u8> {
        let zeros = vec![0u8; len];
        gz(&tar_of(&[E(b"main.ts", EntryType::Regular, &zeros)]))
    }

    #[test]
    fn a_gzip_bomb_stops_at_the_limit() {
        let limit = 256 * 1024;
        let limits = ArchiveLimits {
            max_unpacked_bytes: limit,
            ..ArchiveLimits::default()
        };
        let body = zeros_tar_gz(4 * 1024 * 1024);
        assert!(body.len() < 16 * 1024, "{}", body.len());
        let dir = tempfile::tempdir().unwrap();
        let e = unpack_into(ArchiveKind::TarGz, &body, dir.path(), &limits).unwrap_err();
        assert!(
            matches!(&e, ArchiveError::TooLarge { name, max } if name == "main.ts" && *max == limit),
            "{e:?}"
        );
        // what was written before the refusal stayed within the limit
        let written = fs::metadata(dir.path().join("main.ts")).unwrap().len();
        assert!(written <= limit, "{written}");
        // and `unpack` removes it
        refused_with(ArchiveKind::TarGz, &body, &limits);

        // the same inside a zip
        let zeros = vec![0u8; 4 * 1024 * 1024];
        let e = refused_with(
            ArchiveKind::Zip,
            &zip_of(&[Z::File("main.ts", &zeros)]),
            &limits,
        );
        assert!(matches!(e, ArchiveError::TooLarge { .. }), "{e:?}");
    }

    #[test]
    fn a_high_ratio_is_refused_above_the_floor() {
        // 2 MiB of zeros: a few KiB compressed, far beyond 100:1
        let e = refused(ArchiveKind::TarGz, &zeros_tar_gz(2 * 1024 * 1024));
        assert!(
            matches!(&e, ArchiveError::RatioExceeded { ratio: 100, .. }),
            "{e:?}"
        );
        assert!(e.to_string().contains("100 times"), "{e}");
        // a small upload compresses as well as it likes
        let (_dir, r) = try_unpack(ArchiveKind::TarGz, &zeros_tar_gz(512 * 1024));
        assert_eq!(r.unwrap().bytes, 512 * 1024);
    }

    #[test]
    fn one_file_over_its_limit_is_refused() {
        let limits = ArchiveLimits {
            max_file_bytes: 1000,
            ..ArchiveLimits::default()
        };
        let big = "x".repeat(1001);
        let e = refused_with(ArchiveKind::Tar, &tar_of(&[file("big.ts", &big)]), &limits);
        assert!(
            matches!(&e, ArchiveError::FileTooLarge { name, max: 1000 } if name == "big.ts"),
            "{e:?}"
        );
        let (_dir, r) = try_unpack_with(
            ArchiveKind::Tar,
            &tar_of(&[file("ok.ts", &big[..1000])]),
            &limits,
        );
        r.unwrap();
    }

    #[test]
    fn padding_that_is_no_file_counts_too() {
        // a directory entry whose header claims 4 MiB of data (of zeros)
        let zeros = vec![0u8; 4 * 1024 * 1024];
        let body = gz(&tar_of(&[
            file("main.ts", "m"),
            E(b"d/", EntryType::Directory, &zeros),
        ]));
        let limits = ArchiveLimits {
            max_unpacked_bytes: 64 * 1024,
            max_entries: 4,
            ..ArchiveLimits::default()
        };
        let e = refused_with(ArchiveKind::TarGz, &body, &limits);
        assert!(matches!(e, ArchiveError::TooLarge { .. }), "{e:?}");
    }

    // ---- damaged archives ----

    #[test]
    fn damaged_archives_are_refused() {
        let good = gz(&sample_tar());
        for body in [
            b"not an archive at all".to_vec(),
            good[..good.len() / 2].to_vec(),
            good[..good.len() - 4].to_vec(),
        ] {
            let e = refused(ArchiveKind::TarGz, &body);
            assert!(matches!(e, ArchiveError::Corrupt { .. }), "{e:?}");
        }
        // a flipped bit in the compressed data
        let mut flipped = good.clone();
        let at = flipped.len() / 2;
        flipped[at] ^= 0x55;
        let e = refused(ArchiveKind::TarGz, &flipped);
        assert!(matches!(e, ArchiveError::Corrupt { .. }), "{e:?}");

        // a header that claims more data than there is
        let mut t = tar_of(&[file("main.ts", "m")]);
        t.truncate(512 + 512);
        let mut h = header(b"more.ts", EntryType::Regular, 1_000_000);
        h.set_cksum();
        t.extend_from_slice(h.as_bytes());
        t.extend_from_slice(&[b'x'; 1024]);
        let e = refused(ArchiveKind::Tar, &t);
        assert!(matches!(e, ArchiveError::Corrupt { .. }), "{e:?}");
        // a bad header checksum
        let mut t = tar_of(&[file("main.ts", "m")]);
        t[0] ^= 1;
        let e = refused(ArchiveKind::Tar, &t);
        assert!(matches!(e, ArchiveError::Corrupt { .. }), "{e:?}");

        let z = zip_of(&[Z::File("main.ts", b"export default 1;")]);
        for body in [b"PK not really".to_vec(), z[..z.len() / 2].to_vec()] {
            let e = refused(ArchiveKind::Zip, &body);
            assert!(matches!(e, ArchiveError::Corrupt { .. }), "{e:?}");
        }
        let e = refused(ArchiveKind::Zip, &good);
        assert!(e.to_string().contains("not a zip archive"), "{e}");
    }

    #[test]
    fn a_zip_whose_local_header_disagrees_with_its_directory_is_refused() {
        let mut body = zip_of(&[Z::File("main.ts", b"export default 1;")]);
        // the first occurrence is the local header's name
        let at = body.windows(7).position(|w| w == b"main.ts").unwrap();
        body[at..at + 7].copy_from_slice(b"evil.ts");
        let e = refused(ArchiveKind::Zip, &body);
        assert!(
            matches!(&e, ArchiveError::Corrupt { detail, .. } if detail.contains("inconsistency")),
            "{e:?}"
        );
    }

    #[test]
    fn encrypted_zip_entries_are_refused() {
        let mut body = zip_of(&[Z::File("main.ts", b"export default 1;")]);
        // general purpose flag bit 0, in the local header (offset 6) and the
        // central directory (offset 8)
        body[6] |= 1;
        let cd = body.windows(4).position(|w| w == b"PK\x01\x02").unwrap();
        body[cd + 8] |= 1;
        let e = refused(ArchiveKind::Zip, &body);
        assert!(
            matches!(&e, ArchiveError::Encrypted { name } if name == "main.ts"),
            "{e:?}"
        );
    }

    #[test]
    fn empty_archives_are_refused() {
        for (kind, body) in [
            (ArchiveKind::Tar, tar_of(&[])),
            (
                ArchiveKind::TarGz,
                gz(&tar_of(&[dir("only/"), dir("only/dirs/")])),
            ),
            (ArchiveKind::Zip, zip_of(&[])),
            (ArchiveKind::Zip, zip_of(&[Z::Dir("d/")])),
        ] {
            let e = refused(kind, &body);
            assert!(matches!(e, ArchiveError::Empty), "{kind}: {e:?}");
        }
    }

    #[test]
    fn the_destination_must_be_empty() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("main.ts"), "old").unwrap();
        let e = unpack(
            ArchiveKind::Tar,
            &tar_of(&[file("main.ts", "new")]),
            dir.path(),
            &ArchiveLimits::default(),
        )
        .unwrap_err();
        assert!(matches!(e, ArchiveError::Io(_)), "{e:?}");
        assert_eq!((e.status(), e.code()), (500, "internal"));
        assert_eq!(
            fs::read_to_string(dir.path().join("main.ts")).unwrap(),
            "old"
        );
    }

    // ---- entry picking ----

    #[test]
    fn the_entry_is_the_named_file_or_the_first_default() {
        let files: Vec<String> = ["index.js", "lib/main.ts", "mod.ts", "server.ts"]
            .map(String::from)
            .to_vec();
        assert_eq!(pick_entry(&files, None).unwrap(), "mod.ts");
        assert_eq!(pick_entry(&files, Some("server.ts")).unwrap(), "server.ts");
        assert_eq!(
            pick_entry(&files, Some("./lib//main.ts")).unwrap(),
            "lib/main.ts"
        );
        for bad in [
            "nope.ts",
            "lib",
            "../server.ts",
            "lib/../server.ts",
            "/server.ts",
            "",
        ] {
            let e = pick_entry(&files, Some(bad)).unwrap_err();
            assert!(
                matches!(e, ArchiveError::EntryNotFound { .. }),
                "{bad}: {e:?}"
            );
            assert_eq!((e.code(), e.status()), ("no_entry", 400));
        }
        let files: Vec<String> = ["a.ts", "lib/main.ts"].map(String::from).to_vec();
        let e = pick_entry(&files, None).unwrap_err();
        assert_eq!(e.code(), "no_entry");
        let msg = e.to_string();
        assert!(
            msg.contains("main.ts, index.ts, mod.ts, main.js, index.js")
                && msg.contains("it has a.ts")
                && msg.contains("?entry="),
            "{msg}"
        );
        // main.ts wins over the others
        let files: Vec<String> = ["index.ts", "main.js", "main.ts"]
            .map(String::from)
            .to_vec();
        assert_eq!(pick_entry(&files, None).unwrap(), "main.ts");
    }

    #[test]
    fn settings_default_to_the_declared_values() {
        let s = ArchiveSettings::default();
        assert_eq!(s.max_archive_bytes, DEFAULT_MAX_ARCHIVE_BYTES);
        assert_eq!(s.limits(), ArchiveLimits::default());
        assert!(s.zero_settings().is_empty());
        let zero = ArchiveSettings {
            max_archive_entries: 0,
            ..s
        };
        assert_eq!(zero.zero_settings(), ["SKIFF_MAX_ARCHIVE_ENTRIES"]);
    }
}
