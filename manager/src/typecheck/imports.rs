//! The import policy, applied to the module graph Deno itself reports for the
//! upload (`deno info --json`, run with no network inside the checker's
//! sandbox), and the import map that gives bare names a meaning.
//!
//! This decides what a deploy may import; it is not what keeps the checker or
//! the resolver from reaching host files or the network — the sandbox and the
//! egress proxy are. A graph entry naming a host file shows up here only as a
//! failed load, because the checker could not read it.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

#[derive(Debug, Deserialize)]
pub struct Graph {
    #[serde(default)]
    pub modules: Vec<Module>,
}

#[derive(Debug, Deserialize)]
pub struct Module {
    pub specifier: String,
    /// Why Deno could not load it (a syntax error, a missing file).
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub dependencies: Vec<Dependency>,
    #[serde(default, rename = "typesDependency")]
    pub types_dependency: Option<TypesDependency>,
}

#[derive(Debug, Deserialize)]
pub struct Dependency {
    pub specifier: String,
    #[serde(default)]
    pub code: Option<Resolved>,
    #[serde(default, rename = "type")]
    pub types: Option<Resolved>,
}

#[derive(Debug, Deserialize)]
pub struct TypesDependency {
    pub specifier: String,
    #[serde(default)]
    pub dependency: Option<Resolved>,
}

#[derive(Debug, Deserialize)]
pub struct Resolved {
    #[serde(default)]
    pub specifier: Option<String>,
    #[serde(default)]
    pub error: Option<String>,
}

/// Most specifiers named in one refusal.
const MAX_LISTED: usize = 10;

/// Node's built-in modules, which a bare import may name without `node:`.
const NODE_BUILTINS: &[&str] = &[
    "assert",
    "assert/strict",
    "async_hooks",
    "buffer",
    "child_process",
    "cluster",
    "console",
    "constants",
    "crypto",
    "dgram",
    "diagnostics_channel",
    "dns",
    "dns/promises",
    "domain",
    "events",
    "fs",
    "fs/promises",
    "http",
    "http2",
    "https",
    "inspector",
    "module",
    "net",
    "os",
    "path",
    "path/posix",
    "path/win32",
    "perf_hooks",
    "process",
    "punycode",
    "querystring",
    "readline",
    "readline/promises",
    "repl",
    "stream",
    "stream/consumers",
    "stream/promises",
    "stream/web",
    "string_decoder",
    "sys",
    "timers",
    "timers/promises",
    "tls",
    "trace_events",
    "tty",
    "url",
    "util",
    "util/types",
    "v8",
    "vm",
    "wasi",
    "worker_threads",
    "zlib",
];

/// Hosts `https:` imports may come from. An entry is `host` (port 443) or
/// `host:port`.
#[derive(Debug, Clone, Default)]
pub struct ImportHosts(Vec<(String, u16)>);

impl ImportHosts {
    pub fn parse(list: &str) -> Self {
        Self(
            list.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| {
                    let s = s.to_ascii_lowercase();
                    match s.rsplit_once(':') {
                        Some((h, p)) if p.parse::<u16>().is_ok() => {
                            (h.to_owned(), p.parse().unwrap_or(443))
                        }
                        _ => (s, 443),
                    }
                })
                .collect(),
        )
    }

    pub fn allows(&self, host: &str, port: u16) -> bool {
        let host = host.to_ascii_lowercase();
        self.0.iter().any(|(h, p)| *h == host && *p == port)
    }

    pub fn entries(&self) -> &[(String, u16)] {
        &self.0
    }
}

/// What the graph of an upload needs and what it may not have.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Findings {
    /// Imports the policy refuses, as the author wrote them, with why.
    pub refused: Vec<String>,
    /// Bare names no import map gave a meaning, with the specifier they get.
    pub bare: BTreeMap<String, String>,
    /// Local imports Deno could not load (a missing file), with its message.
    pub missing: Vec<String>,
    /// Syntax errors in the upload's own files, as Deno reports them.
    pub syntax: Vec<String>,
    /// Whether anything must be downloaded (npm:, jsr:, https:).
    pub remote: bool,
}

/// Applies the policy to `graph`, whose local files live under `src`
/// (a `file://…/` URL ending in `/`).
pub fn inspect(graph: &Graph, src: &str, hosts: &ImportHosts) -> Findings {
    let mut f = Findings::default();
    let mut refused = BTreeSet::new();
    let mut missing = BTreeSet::new();
    for m in graph
        .modules
        .iter()
        .filter(|m| m.specifier.starts_with(src))
    {
        match &m.error {
            Some(e) if e.starts_with("SyntaxError") => {
                f.syntax.push(e.replace(src, ""));
                continue;
            }
            Some(e) => {
                missing.insert(first_line(e).replace(src, ""));
                continue;
            }
            None => {}
        }
        let deps = m
            .dependencies
            .iter()
            .flat_map(|d| {
                [&d.code, &d.types]
                    .into_iter()
                    .flatten()
                    .map(|r| (&d.specifier, r))
            })
            .chain(
                m.types_dependency
                    .iter()
                    .filter_map(|t| t.dependency.as_ref().map(|r| (&t.specifier, r))),
            );
        for (written, r) in deps {
            match (&r.specifier, &r.error) {
                (Some(target), _) => match classify(target, src, hosts) {
                    Verdict::Local => {}
                    Verdict::Remote => f.remote = true,
                    Verdict::Refused(why) => {
                        refused.insert(format!("{written} ({why})"));
                    }
                },
                (None, Some(e)) if e.contains("not a dependency") => match bare_target(written) {
                    Some((key, target)) => {
                        f.bare.insert(key, target);
                    }
                    None => {
                        refused.insert(format!("{written} (not a valid package name)"));
                    }
                },
                (None, Some(e)) => {
                    missing.insert(format!("{written}: {}", first_line(e)));
                }
                (None, None) => {}
            }
        }
    }
    if f.bare.values().any(|t| t.starts_with("npm:")) {
        f.remote = true;
    }
    f.refused = refused.into_iter().take(MAX_LISTED).collect();
    f.missing = missing.into_iter().take(MAX_LISTED).collect();
    f
}

enum Verdict {
    Local,
    Remote,
    Refused(&'static str),
}

fn classify(target: &str, src: &str, hosts: &ImportHosts) -> Verdict {
    if target.starts_with("node:") || target.starts_with(src) || target.starts_with("data:") {
        return Verdict::Local;
    }
    if target.starts_with("npm:") || target.starts_with("jsr:") {
        return Verdict::Remote;
    }
    if target.starts_with("file:") {
        return Verdict::Refused("outside the upload");
    }
    if target.starts_with("http:") {
        return Verdict::Refused("only https: imports are allowed");
    }
    match url::Url::parse(target) {
        Ok(u) if u.scheme() == "https" => {
            let host = u.host_str().unwrap_or("");
            if hosts.allows(host, u.port_or_known_default().unwrap_or(443)) {
                Verdict::Remote
            } else {
                Verdict::Refused("host not in SKIFF_IMPORT_HOSTS")
            }
        }
        _ => Verdict::Refused("unsupported scheme"),
    }
}

/// A bare import's import-map key and target: a Node built-in becomes
/// `node:<name>`; anything else `npm:<package>` (the whole package, so its
/// subpaths resolve too). `None` when it is not a package name.
fn bare_target(written: &str) -> Option<(String, String)> {
    if NODE_BUILTINS.contains(&written) {
        return Some((written.to_owned(), format!("node:{written}")));
    }
    let package = package_name(written)?;
    Some((package.to_owned(), format!("npm:{package}")))
}

/// `@scope/name/sub` → `@scope/name`; `name/sub` → `name`.
pub fn package_name(spec: &str) -> Option<&str> {
    let valid = |s: &str| {
        !s.is_empty()
            && !s.starts_with('.')
            && s.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._~".contains(&b) || b == b'!'
            })
    };
    let mut parts = spec.splitn(3, '/');
    let first = parts.next()?;
    let name = if let Some(scope) = first.strip_prefix('@') {
        let n = parts.next()?;
        if !valid(scope) || !valid(n) {
            return None;
        }
        &spec[..first.len() + 1 + n.len()]
    } else {
        if !valid(first) {
            return None;
        }
        first
    };
    (name.len() <= 214).then_some(name)
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

/// The import map entries of a bare package: the name and its subpaths.
pub fn map_entries(key: &str, target: &str) -> [(String, String); 2] {
    let sub = match target.strip_prefix("npm:") {
        Some(rest) => format!("npm:/{rest}/"),
        None => format!("{target}/"),
    };
    [
        (key.to_owned(), target.to_owned()),
        (format!("{key}/"), sub),
    ]
}

/// Import-map entries from a `package.json`'s dependencies: each registry
/// dependency becomes `npm:<name>@<range>` (others — git, file, workspace —
/// are left out and reported).
pub fn from_package_json(text: &str) -> Result<(BTreeMap<String, String>, Vec<String>), String> {
    let v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("package.json is not valid JSON: {e}"))?;
    let mut map = BTreeMap::new();
    let mut skipped = Vec::new();
    for section in ["dependencies", "devDependencies", "peerDependencies"] {
        let Some(deps) = v.get(section).and_then(|d| d.as_object()) else {
            continue;
        };
        for (name, range) in deps {
            let range = range.as_str().unwrap_or("");
            let registry_range = !range.contains(':') && !range.contains('/');
            match package_name(name) {
                Some(n) if n == name && registry_range => {
                    let target = if range.is_empty() || range == "*" || range == "latest" {
                        format!("npm:{name}")
                    } else {
                        format!("npm:{name}@{range}")
                    };
                    for (k, t) in map_entries(name, &target) {
                        map.entry(k).or_insert(t);
                    }
                }
                _ => skipped.push(format!("{name}@{range}")),
            }
        }
    }
    Ok((map, skipped))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(json: &str) -> Graph {
        serde_json::from_str(json).unwrap()
    }

    const SRC: &str = "file:///s/src/";

    fn hosts() -> ImportHosts {
        ImportHosts::parse("deno.land, localhost:8443")
    }

    #[test]
    fn every_import_kind_is_classified() {
        // Shaped like `deno info --json --no-remote --no-npm` output (Deno 2.9.8).
        let g = graph(
            r#"{"modules":[
              {"specifier":"file:///s/src/main.ts","dependencies":[
                {"specifier":"hono","code":{"error":"Import \"hono\" not a dependency"}},
                {"specifier":"hono/types","type":{"error":"Import \"hono/types\" not a dependency"}},
                {"specifier":"fs","code":{"error":"Import \"fs\" not a dependency"}},
                {"specifier":"@scope/pkg/sub/x.js","code":{"error":"Import \"@scope/pkg/sub/x.js\" not a dependency"}},
                {"specifier":"npm:zod@3","code":{"specifier":"npm:zod@3"}},
                {"specifier":"jsr:@std/assert@1","code":{"specifier":"jsr:@std/assert@1"}},
                {"specifier":"./lib/x.ts","code":{"specifier":"file:///s/src/lib/x.ts"}},
                {"specifier":"node:crypto","code":{"specifier":"node:crypto"}},
                {"specifier":"https://deno.land/x/a/mod.ts","code":{"specifier":"https://deno.land/x/a/mod.ts"}},
                {"specifier":"https://localhost:8443/m.ts","code":{"specifier":"https://localhost:8443/m.ts"}},
                {"specifier":"https://evil.example/m.ts","code":{"specifier":"https://evil.example/m.ts"}},
                {"specifier":"http://127.0.0.1:9/x.ts","code":{"specifier":"http://127.0.0.1:9/x.ts"}},
                {"specifier":"/etc/passwd","code":{"specifier":"file:///etc/passwd"}},
                {"specifier":"../../x.ts","code":{"specifier":"file:///s/x.ts"}},
                {"specifier":"./gone.ts","code":{"specifier":null,"error":"Module not found \"file:///s/src/gone.ts\"."}}
              ]},
              {"specifier":"file:///s/src/lib/x.ts","dependencies":[
                {"specifier":"lodash/fp","code":{"error":"Import \"lodash/fp\" not a dependency"}}]},
              {"specifier":"https://deno.land/x/a/mod.ts","dependencies":[
                {"specifier":"https://evil.example/b.ts","code":{"specifier":"https://evil.example/b.ts"}}]}
            ]}"#,
        );
        let f = inspect(&g, SRC, &hosts());
        assert!(f.remote);
        assert_eq!(
            f.bare,
            BTreeMap::from([
                ("@scope/pkg".into(), "npm:@scope/pkg".into()),
                ("fs".into(), "node:fs".into()),
                ("hono".into(), "npm:hono".into()),
                ("lodash".into(), "npm:lodash".into()),
            ])
        );
        assert_eq!(
            f.refused,
            [
                "../../x.ts (outside the upload)",
                "/etc/passwd (outside the upload)",
                "http://127.0.0.1:9/x.ts (only https: imports are allowed)",
                "https://evil.example/m.ts (host not in SKIFF_IMPORT_HOSTS)",
            ]
        );
        assert_eq!(f.missing.len(), 1, "{:?}", f.missing);
    }

    #[test]
    fn a_graph_of_local_files_and_builtins_needs_no_download() {
        let g = graph(
            r#"{"modules":[{"specifier":"file:///s/src/main.ts","dependencies":[
                {"specifier":"node:crypto","code":{"specifier":"node:crypto"}},
                {"specifier":"./a.ts","code":{"specifier":"file:///s/src/a.ts"}}]}]}"#,
        );
        assert_eq!(inspect(&g, SRC, &hosts()), Findings::default());
    }

    #[test]
    fn package_names() {
        assert_eq!(package_name("hono/jsx"), Some("hono"));
        assert_eq!(package_name("@a/b/c"), Some("@a/b"));
        assert_eq!(package_name("@a"), None);
        assert_eq!(package_name("Hono"), None);
        assert_eq!(package_name("../x"), None);
        assert_eq!(package_name(""), None);
    }

    #[test]
    fn package_json_dependencies_become_npm_mappings() {
        let (map, skipped) = from_package_json(
            r#"{"dependencies":{"hono":"^4.6.0","zod":"*","local":"file:../x","gh":"a/b"},
                "devDependencies":{"@types/node":"20"}}"#,
        )
        .unwrap();
        assert_eq!(map["hono"], "npm:hono@^4.6.0");
        assert_eq!(map["hono/"], "npm:/hono@^4.6.0/");
        assert_eq!(map["zod"], "npm:zod");
        assert_eq!(map["@types/node"], "npm:@types/node@20");
        assert_eq!(skipped, ["gh@a/b", "local@file:../x"]);
        assert!(from_package_json("{").is_err());
    }

    #[test]
    fn import_hosts_take_a_port() {
        let h = hosts();
        assert!(h.allows("DENO.land", 443));
        assert!(!h.allows("deno.land", 8443));
        assert!(h.allows("localhost", 8443));
        assert!(!h.allows("localhost", 443));
    }
}
