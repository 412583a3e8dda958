//! Placeholder until the archive unpacker lands (same API).

use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveKind {
    TarGz,
    Tar,
    Zip,
}

pub fn kind_of(content_type: Option<&str>) -> Option<ArchiveKind> {
    let ct = content_type?.split(';').next()?.trim().to_ascii_lowercase();
    match ct.as_str() {
        "application/gzip" | "application/x-gzip" | "application/x-compressed-tar" => {
            Some(ArchiveKind::TarGz)
        }
        "application/x-tar" => Some(ArchiveKind::Tar),
        "application/zip" | "application/x-zip-compressed" => Some(ArchiveKind::Zip),
        _ => None,
    }
}

#[derive(Debug, Clone, Default)]
pub struct ArchiveLimits {}

pub struct Unpacked {
    pub files: Vec<String>,
    pub bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("archives are not supported yet")]
    Unsupported,
}

impl ArchiveError {
    pub fn code(&self) -> &'static str {
        "bad_archive"
    }
}

pub fn unpack(
    _kind: ArchiveKind,
    _body: &[u8],
    _dest: &Path,
    _limits: &ArchiveLimits,
) -> Result<Unpacked, ArchiveError> {
    Err(ArchiveError::Unsupported)
}

pub fn pick_entry(_files: &[String], _explicit: Option<&str>) -> Result<String, ArchiveError> {
    Err(ArchiveError::Unsupported)
}
