//! `skiff deploy DIR`: the directory packed as a tar.gz in memory. Regular
//! files only, by relative path; version-control data, dependencies, Skiff's
//! own data and dotfiles (secrets such as `.env`) stay behind. No link is
//! followed: one that points outside the directory stops the deploy, since
//! the user most likely meant its target to go along.
//!
//! Every path is put under one top directory (`<top>/…`, as `tar czf x.tgz
//! myfn/` does). The server makes a single top directory the root, so the
//! function sees exactly the directory's layout, even when that layout is
//! itself one directory (`src/…`, with `--entry src/server.ts`).

use std::fmt::Write as _;
use std::fs;
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, bail};

/// Directories never uploaded (besides every dot-directory).
const SKIPPED_DIRS: &[&str] = &["node_modules"];

pub struct Packed {
    /// The tar.gz body.
    pub body: Vec<u8>,
    /// What went in, relative to the directory, `/`-separated, in archive order.
    pub files: Vec<String>,
    /// Things left out that the user should hear about, one line each.
    pub notices: Vec<String>,
}

/// Packs `dir` with every path under `top/` (a valid function name, so a
/// plain path component).
pub fn pack_dir(dir: &Path, top: &str) -> anyhow::Result<Packed> {
    let root = fs::canonicalize(dir).with_context(|| format!("reading {}", dir.display()))?;
    let mut packer = Packer {
        root: root.clone(),
        top: format!("{top}/"),
        builder: tar::Builder::new(flate2::write::GzEncoder::new(
            Vec::new(),
            flate2::Compression::default(),
        )),
        files: Vec::new(),
        notices: Vec::new(),
    };
    packer.walk(&root, "")?;
    if packer.files.is_empty() {
        bail!("{} has no files to upload", dir.display());
    }
    let body = packer
        .builder
        .into_inner()
        .and_then(|gz| gz.finish())
        .context("packing the directory")?;
    Ok(Packed {
        body,
        files: packer.files,
        notices: packer.notices,
    })
}

struct Packer {
    root: PathBuf,
    top: String,
    builder: tar::Builder<flate2::write::GzEncoder<Vec<u8>>>,
    files: Vec<String>,
    notices: Vec<String>,
}

impl Packer {
    fn walk(&mut self, dir: &Path, prefix: &str) -> anyhow::Result<()> {
        let mut children = fs::read_dir(dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("reading {}", dir.display()))?;
        // The same directory packs to the same bytes.
        children.sort_by_key(|c| c.file_name());
        for child in children {
            let path = child.path();
            let Some(name) = child.file_name().to_str().map(str::to_owned) else {
                bail!(
                    "{} has a name that is not UTF-8; rename it or move it out",
                    path.display()
                );
            };
            let rel = format!("{prefix}{name}");
            // Not followed: a link's own type.
            let meta = fs::symlink_metadata(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            let kind = meta.file_type();
            if name.starts_with(".env") {
                self.notices.push(format!(
                    "skipped {rel}: dotfiles are not uploaded (set the function's environment with `skiff env set`)"
                ));
                continue;
            }
            if name.starts_with('.') || (kind.is_dir() && SKIPPED_DIRS.contains(&name.as_str())) {
                continue;
            }
            if kind.is_symlink() {
                if !self.points_inside(&path) {
                    bail!(
                        "{} is a link to outside {}; links are not followed: copy the file in instead",
                        path.display(),
                        self.root.display()
                    );
                }
                self.notices
                    .push(format!("skipped {rel}: links are not uploaded"));
            } else if kind.is_dir() {
                self.walk(&path, &format!("{rel}/"))?;
            } else if kind.is_file() {
                self.add_file(&path, &rel, meta.len())?;
            } else {
                self.notices
                    .push(format!("skipped {rel}: not a regular file"));
            }
        }
        Ok(())
    }

    fn add_file(&mut self, path: &Path, rel: &str, len: u64) -> anyhow::Result<()> {
        let file = fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(0o644);
        header.set_size(len);
        // No owner or time: the server ignores them, and equal trees give equal bodies.
        header.set_mtime(0);
        // `take`: a file that grows while packed must not overrun its header.
        self.builder
            .append_data(
                &mut header,
                format!("{}{rel}", self.top),
                std::io::Read::take(file, len),
            )
            .with_context(|| format!("packing {}", path.display()))?;
        self.files.push(rel.to_owned());
        Ok(())
    }

    /// Whether the link at `path` resolves under the root (a dangling one is
    /// judged by its text).
    fn points_inside(&self, path: &Path) -> bool {
        if let Ok(target) = fs::canonicalize(path) {
            return target.starts_with(&self.root);
        }
        let Ok(target) = fs::read_link(path) else {
            return false;
        };
        let Some(parent) = path.parent() else {
            return false;
        };
        let mut resolved = PathBuf::new();
        for c in parent.join(target).components() {
            match c {
                Component::ParentDir => {
                    resolved.pop();
                }
                Component::CurDir => {}
                other => resolved.push(other),
            }
        }
        resolved.starts_with(&self.root)
    }
}

/// A function name from a file or directory name: what the server accepts
/// (`[a-z0-9-]`, a letter first, no `-` last, at most 40), or `None`.
pub fn function_name(raw: &str) -> Option<String> {
    let mut name = String::new();
    for c in raw.chars() {
        match c {
            'a'..='z' | '0'..='9' => name.push(c),
            'A'..='Z' => name.push(c.to_ascii_lowercase()),
            '-' | '_' | '.' | ' ' if !name.ends_with('-') => name.push('-'),
            _ => {}
        }
    }
    let name = name.trim_start_matches(|c: char| !c.is_ascii_lowercase());
    let name: String = name.chars().take(40).collect();
    let name = name.trim_end_matches('-');
    (!name.is_empty()).then(|| name.to_owned())
}

/// Percent-encodes a query value (unreserved characters and `/` kept).
pub fn query_value(raw: &str) -> String {
    let mut out = String::new();
    for b in raw.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_made_acceptable() {
        for (raw, name) in [
            ("greet", Some("greet")),
            ("My_Func", Some("my-func")),
            ("hello world.v2", Some("hello-world-v2")),
            ("2fast", Some("fast")),
            ("--x--", Some("x")),
            ("日本", None),
            ("", None),
        ] {
            assert_eq!(function_name(raw).as_deref(), name, "{raw}");
        }
        assert_eq!(function_name(&"a".repeat(50)).map(|n| n.len()), Some(40));
    }

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(query_value("lib/main.ts"), "lib/main.ts");
        assert_eq!(query_value("a b&c=d"), "a%20b%26c%3Dd");
    }
}
