//! The import policy, applied to the module graph Deno itself reports
//! (`deno info --json`, run inside the checker's sandbox). This decides what a
//! deploy may import; it is not what keeps the checker from reading host files
//! — the sandbox is (a graph entry that names a host file shows up here only as
//! a failed load, because the checker could not read it).

use std::collections::BTreeSet;

use serde::Deserialize;

#[derive(Debug, Deserialize)]
pub struct Graph {
    #[serde(default)]
    pub modules: Vec<Module>,
}

#[derive(Debug, Deserialize)]
pub struct Module {
    pub specifier: String,
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
}

/// Most specifiers named in one refusal.
const MAX_LISTED: usize = 10;

/// The specifiers the policy refuses: today a function is one file that may
/// import Node's built-ins (`node:…`) only. `own` are the files of the check
/// itself (the module, the ambient types, the handler check), as `file:` URLs.
pub fn disallowed(graph: &Graph, own: &[String]) -> Vec<String> {
    let allowed =
        |resolved: &str| resolved.starts_with("node:") || own.iter().any(|o| o == resolved);
    // As the author wrote them: that is what they can find and fix.
    let mut written = BTreeSet::new();
    // Every resolved target some dependency names.
    let mut named = BTreeSet::new();
    for m in &graph.modules {
        for d in &m.dependencies {
            for t in [&d.code, &d.types]
                .into_iter()
                .flatten()
                .filter_map(|r| r.specifier.as_deref())
            {
                named.insert(t.to_owned());
                if !allowed(t) {
                    written.insert(d.specifier.clone());
                }
            }
        }
        if let Some(t) = &m.types_dependency {
            let resolved = t.dependency.as_ref().and_then(|r| r.specifier.as_deref());
            if let Some(r) = resolved {
                named.insert(r.to_owned());
            }
            if resolved.is_none_or(|r| !allowed(r)) {
                written.insert(t.specifier.clone());
            }
        }
    }
    // A module nobody named (a root, or a reference Deno resolved itself).
    let unnamed = graph
        .modules
        .iter()
        .map(|m| &m.specifier)
        .filter(|s| !allowed(s) && !named.contains(*s))
        .cloned();
    written
        .into_iter()
        .chain(unnamed)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .take(MAX_LISTED)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(json: &str) -> Graph {
        serde_json::from_str(json).unwrap()
    }

    const OWN: &str = "file:///s/fn.ts";

    #[test]
    fn node_builtins_pass_and_everything_else_is_named_as_written() {
        // Shaped like `deno info --json` output (Deno 2.9.8), trimmed.
        let g = graph(
            r#"{"roots":["file:///s/fn.ts"],"modules":[
              {"kind":"esm","specifier":"file:///s/fn.ts","dependencies":[
                {"specifier":"node:fs","code":{"specifier":"node:fs"},"type":{"specifier":"file:///etc/secret"}},
                {"specifier":"/etc/passwd","code":{"specifier":"file:///etc/passwd"}},
                {"specifier":"./other.ts","code":{"specifier":"file:///s/other.ts"}},
                {"specifier":"npm:hono@4","code":{"specifier":"npm:hono@4"}},
                {"specifier":"https://example.com/m.ts","code":{"specifier":"https://example.com/m.ts"}},
                {"specifier":"node:path","code":{"specifier":"node:path"}}
              ]},
              {"specifier":"file:///etc/passwd","error":"Import 'file:///etc/passwd' failed."},
              {"specifier":"file:///s/other.ts","kind":"esm","dependencies":[]},
              {"specifier":"npm:hono@4","error":"npm specifiers were requested"},
              {"specifier":"node:fs","kind":"node"}
            ]}"#,
        );
        let refused = disallowed(&g, &[OWN.to_owned()]);
        assert_eq!(
            refused,
            [
                "./other.ts",
                "/etc/passwd",
                "https://example.com/m.ts",
                "node:fs",
                "npm:hono@4"
            ]
        );
    }

    #[test]
    fn a_clean_graph_passes() {
        let g = graph(
            r#"{"modules":[{"specifier":"file:///s/fn.ts","dependencies":[
                {"specifier":"node:crypto","code":{"specifier":"node:crypto"}}]},
               {"specifier":"node:crypto","kind":"node"}]}"#,
        );
        assert!(disallowed(&g, &[OWN.to_owned()]).is_empty());
    }

    #[test]
    fn types_dependencies_count() {
        let g = graph(
            r#"{"modules":[{"specifier":"file:///s/fn.ts","dependencies":[],
                "typesDependency":{"specifier":"/root/x.d.ts","dependency":{"specifier":"file:///root/x.d.ts"}}},
                {"specifier":"file:///root/x.d.ts","error":"failed"}]}"#,
        );
        assert_eq!(disallowed(&g, &[OWN.to_owned()]), ["/root/x.d.ts"]);
    }
}
