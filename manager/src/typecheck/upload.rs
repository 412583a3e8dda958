//! An upload laid out for a build: its files under `<scratch>/src/`, the entry
//! chosen, and the generated Deno config (`skiff.json`) that merges the
//! upload's own `deno.json` imports and `package.json` dependencies with the
//! import map entries the build adds for bare names.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::CheckError;
use super::imports;
use crate::functions::archive::{self, ArchiveKind, ArchiveLimits};

/// What the body of `POST /func` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UploadKind {
    /// One module, raw.
    Module,
    TarGz,
    Tar,
    Zip,
}

impl UploadKind {
    /// The kind a `Content-Type` names; anything not an archive is a module.
    pub fn from_content_type(ct: Option<&str>) -> Self {
        match archive::kind_of(ct) {
            Some(ArchiveKind::TarGz) => Self::TarGz,
            Some(ArchiveKind::Tar) => Self::Tar,
            Some(ArchiveKind::Zip) => Self::Zip,
            None => Self::Module,
        }
    }

    /// How the store records it (`function_versions.source_type`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Module => "file",
            Self::TarGz => "tar.gz",
            Self::Tar => "tar",
            Self::Zip => "zip",
        }
    }

    pub fn from_stored(s: &str) -> Self {
        match s {
            "tar.gz" => Self::TarGz,
            "tar" => Self::Tar,
            "zip" => Self::Zip,
            _ => Self::Module,
        }
    }

    /// The `Content-Type` the upload is given back with.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Module => "application/typescript; charset=utf-8",
            Self::TarGz => "application/gzip",
            Self::Tar => "application/x-tar",
            Self::Zip => "application/zip",
        }
    }
}

/// Extensions a single module may be named with (`?entry=hello.js`).
const MODULE_EXTENSIONS: &[&str] = &[".ts", ".mts", ".tsx", ".js", ".mjs", ".jsx"];

pub struct Project {
    /// Relative to `src/`, `/`-separated.
    pub entry: String,
    pub strict: bool,
    /// The upload's own mappings (deno.json imports over package.json deps).
    imports: BTreeMap<String, String>,
    scopes: Option<Value>,
    compiler_options: Map<String, Value>,
}

impl Project {
    /// Writes the upload under `root/src` and the build's own files beside it.
    pub fn lay_out(
        root: &Path,
        req: super::BuildRequest,
        limits: &ArchiveLimits,
    ) -> Result<Self, CheckError> {
        let src = root.join("src");
        std::fs::create_dir_all(&src).context("creating the upload dir")?;
        let entry = match req.kind {
            UploadKind::Module => {
                if req.body.iter().all(u8::is_ascii_whitespace) {
                    return Err(CheckError::BadUpload {
                        code: "empty_source",
                        message: "the request body must be the function's source".into(),
                    });
                }
                if std::str::from_utf8(&req.body).is_err() {
                    return Err(CheckError::BadUpload {
                        code: "invalid_source",
                        message: "the source is not valid UTF-8".into(),
                    });
                }
                let name = module_name(req.entry.as_deref())?;
                std::fs::write(src.join(&name), &req.body).context("writing the module")?;
                name
            }
            kind => {
                let kind = match kind {
                    UploadKind::TarGz => ArchiveKind::TarGz,
                    UploadKind::Tar => ArchiveKind::Tar,
                    _ => ArchiveKind::Zip,
                };
                let unpacked = archive::unpack(kind, &req.body, &src, limits).map_err(|e| {
                    CheckError::BadUpload {
                        code: e.code(),
                        message: e.to_string(),
                    }
                })?;
                // `tar czf x.tgz myfn/` and `?entry=myfn/main.ts`: the entry as
                // the author sees it, inside the directory that became the root.
                let entry = match (&unpacked.unwrapped, req.entry.as_deref()) {
                    (Some(top), Some(e)) => Some(
                        e.trim_start_matches("./")
                            .strip_prefix(&format!("{top}/"))
                            .unwrap_or(e)
                            .to_owned(),
                    ),
                    (_, e) => e.map(str::to_owned),
                };
                archive::pick_entry(&unpacked.files, entry.as_deref()).map_err(|e| {
                    CheckError::BadUpload {
                        code: e.code(),
                        message: e.to_string(),
                    }
                })?
            }
        };
        super::build::own_files(root).context("writing the build's files")?;
        let mut project = Self {
            entry,
            strict: req.strict,
            imports: BTreeMap::new(),
            scopes: None,
            compiler_options: Map::new(),
        };
        project.read_package_json(&src)?;
        project.read_deno_json(&src)?;
        if src.join("deno.lock").is_file() {
            std::fs::copy(src.join("deno.lock"), root.join("deno.lock"))
                .context("copying the upload's lock file")?;
        }
        Ok(project)
    }

    fn read_package_json(&mut self, src: &Path) -> Result<(), CheckError> {
        let Ok(text) = std::fs::read_to_string(src.join("package.json")) else {
            return Ok(());
        };
        let (map, _skipped) =
            imports::from_package_json(&text).map_err(|m| CheckError::BadUpload {
                code: "invalid_config",
                message: m,
            })?;
        self.imports.extend(map);
        Ok(())
    }

    fn read_deno_json(&mut self, src: &Path) -> Result<(), CheckError> {
        let (name, text) = match ["deno.json", "deno.jsonc"]
            .iter()
            .find_map(|n| std::fs::read_to_string(src.join(n)).ok().map(|t| (*n, t)))
        {
            Some(found) => found,
            None => return Ok(()),
        };
        let value: Value =
            serde_json::from_str(&strip_jsonc(&text)).map_err(|e| CheckError::BadUpload {
                code: "invalid_config",
                message: format!("{name} is not valid JSON: {e}"),
            })?;
        if let Some(map) = value.get("imports").and_then(Value::as_object) {
            for (k, v) in map {
                if let Some(t) = v.as_str() {
                    self.imports.insert(k.clone(), relocate(t));
                }
            }
        }
        if let Some(scopes) = value.get("scopes").and_then(Value::as_object) {
            let mut out = Map::new();
            for (scope, map) in scopes {
                let mut m = Map::new();
                for (k, v) in map.as_object().into_iter().flatten() {
                    if let Some(t) = v.as_str() {
                        m.insert(k.clone(), Value::String(relocate(t)));
                    }
                }
                out.insert(relocate(scope), Value::Object(m));
            }
            self.scopes = Some(Value::Object(out));
        }
        if let Some(opts) = value.get("compilerOptions").and_then(Value::as_object) {
            self.compiler_options = opts.clone();
        }
        Ok(())
    }

    /// Writes `skiff.json`: the upload's mappings, then `extra` for names
    /// they leave open, and the ambient types of legacy handlers.
    /// Whether the upload brought mappings or compiler options of its own.
    pub fn has_own_config(&self) -> bool {
        !self.imports.is_empty() || self.scopes.is_some() || !self.compiler_options.is_empty()
    }

    pub fn write_config(
        &self,
        root: &Path,
        extra: &BTreeMap<String, String>,
    ) -> Result<(), CheckError> {
        let mut imports: Map<String, Value> = Map::new();
        for (k, v) in extra.iter().chain(self.imports.iter()) {
            imports.insert(k.clone(), Value::String(v.clone()));
        }
        let mut options = self.compiler_options.clone();
        let mut types: Vec<Value> = options
            .get("types")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(|t| Value::String(relocate(t)))
                    .collect()
            })
            .unwrap_or_default();
        types.push(Value::String("./skiff-env.d.ts".into()));
        options.insert("types".into(), Value::Array(types));
        let mut config = Map::new();
        config.insert("compilerOptions".into(), Value::Object(options));
        config.insert("imports".into(), Value::Object(imports));
        if let Some(s) = &self.scopes {
            config.insert("scopes".into(), s.clone());
        }
        config.insert("nodeModulesDir".into(), Value::String("none".into()));
        let text = serde_json::to_vec_pretty(&Value::Object(config)).context("the config")?;
        std::fs::write(super::build::config_path(root), text).context("writing the config")?;
        Ok(())
    }
}

/// The single module's file name: `?entry=` when it is a plain module file
/// name, else `main.ts`.
fn module_name(entry: Option<&str>) -> Result<String, CheckError> {
    let Some(e) = entry else {
        return Ok("main.ts".into());
    };
    let plain = !e.is_empty()
        && e.len() <= 100
        && !e.starts_with('.')
        && e.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if plain && MODULE_EXTENSIONS.iter().any(|x| e.ends_with(x)) {
        Ok(e.to_owned())
    } else {
        Err(CheckError::BadUpload {
            code: "invalid_entry",
            message: format!(
                "entry {e:?} must be a module file name such as main.ts or index.js \
                 (letters, digits, - _ . and one of {})",
                MODULE_EXTENSIONS.join(" ")
            ),
        })
    }
}

/// A target relative to the upload's root, made relative to the config's dir.
fn relocate(target: &str) -> String {
    match target.strip_prefix("./") {
        Some(rest) => format!("./src/{rest}"),
        None if target.starts_with("../") => format!("./src/{target}"),
        None => target.to_owned(),
    }
}

/// JSON with comments and trailing commas (deno.jsonc) as plain JSON. Only
/// makes a config readable; it guards nothing.
fn strip_jsonc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    let mut in_string = false;
    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            if c == '\\' {
                if let Some(n) = chars.next() {
                    out.push(n);
                }
            } else if c == '"' {
                in_string = false;
            }
            continue;
        }
        match (c, chars.peek()) {
            ('"', _) => {
                in_string = true;
                out.push(c);
            }
            ('/', Some('/')) => {
                for n in chars.by_ref() {
                    if n == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            ('/', Some('*')) => {
                chars.next();
                let mut prev = ' ';
                for n in chars.by_ref() {
                    if prev == '*' && n == '/' {
                        break;
                    }
                    prev = n;
                }
            }
            (',', _) => {
                // A trailing comma: the next non-space is a closer.
                let rest: String = chars.clone().take_while(|n| n.is_whitespace()).collect();
                let next = chars.clone().nth(rest.chars().count());
                if !matches!(next, Some('}' | ']')) {
                    out.push(',');
                }
            }
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonc_reads_as_json() {
        let v: Value = serde_json::from_str(&strip_jsonc(
            "{ // c\n \"imports\": { \"a\": \"npm:a\", /* x */ \"b\": \"./b//c.ts\", },\n}",
        ))
        .unwrap();
        assert_eq!(v["imports"]["b"], "./b//c.ts");
        assert_eq!(v["imports"]["a"], "npm:a");
    }

    #[test]
    fn module_names() {
        assert_eq!(module_name(None).unwrap(), "main.ts");
        assert_eq!(module_name(Some("hello.js")).unwrap(), "hello.js");
        for bad in ["../x.ts", "a/b.ts", ".x.ts", "x.sh", ""] {
            assert!(module_name(Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn relative_targets_move_under_src() {
        assert_eq!(relocate("./lib/"), "./src/lib/");
        assert_eq!(relocate("npm:hono@4"), "npm:hono@4");
        assert_eq!(relocate("../x"), "./src/../x");
    }
}
