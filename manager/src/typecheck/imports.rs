//! Finds every module a TypeScript source would load at type-check time.
//!
//! A function is one self-contained file: it may import Node's built-ins
//! (`node:…`) and nothing else. This is checked here, before `deno check` runs,
//! because the checker reads whatever local file an import names, and its
//! diagnostics could show a host file's content to the uploader.
//!
//! The scan is lexical: it skips comments, strings, template literals (with their
//! `${…}` code) and regular expressions, then looks for the few token patterns that
//! name a module: `import "x"`, `import(…"x")`, `… from "x"`, `require("x")`, plus the
//! comment directives `/// <reference path|types=…>`, `@deno-types`, `@ts-types`
//! and `@jsxImportSource`.

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str { value: String, escaped: bool },
    Template,
    Punct(char),
    Other,
}

/// Keywords after which a `/` starts a regular expression, not a division.
const REGEX_AFTER: &[&str] = &[
    "return",
    "typeof",
    "case",
    "do",
    "else",
    "in",
    "of",
    "new",
    "delete",
    "void",
    "throw",
    "yield",
    "await",
    "instanceof",
];

struct Lexer<'a> {
    s: &'a [char],
    i: usize,
    toks: Vec<Tok>,
    /// One entry per open `{`: true when it is a template's `${`.
    braces: Vec<bool>,
    forbidden: Vec<String>,
}

impl Lexer<'_> {
    fn peek(&self, k: usize) -> Option<char> {
        self.s.get(self.i + k).copied()
    }

    fn regex_allowed(&self) -> bool {
        match self.toks.last() {
            None => true,
            Some(Tok::Punct(c)) => !matches!(c, ')' | ']' | '}'),
            Some(Tok::Ident(w)) => REGEX_AFTER.contains(&w.as_str()),
            _ => false,
        }
    }

    fn comment(&mut self, text: &str, triple_slash: bool) {
        if triple_slash && text.contains("<reference") {
            for attr in ["path", "types"] {
                if text.contains(&format!("{attr}=")) {
                    self.forbidden
                        .push(format!("/// <reference {attr}=…> ({})", text.trim()));
                }
            }
        }
        for pragma in ["@deno-types", "@ts-types", "@jsxImportSource"] {
            if text.contains(pragma) {
                self.forbidden.push(format!("{pragma} comment"));
            }
        }
    }

    fn string(&mut self, quote: char) {
        let mut value = String::new();
        let mut escaped = false;
        self.i += 1;
        while let Some(c) = self.peek(0) {
            self.i += 1;
            match c {
                '\\' => {
                    escaped = true;
                    if let Some(n) = self.peek(0) {
                        value.push(n);
                        self.i += 1;
                    }
                }
                c if c == quote => break,
                '\n' => break,
                c => value.push(c),
            }
        }
        self.toks.push(Tok::Str { value, escaped });
    }

    /// Scans template text up to its end or to a `${`.
    fn template_text(&mut self) {
        while let Some(c) = self.peek(0) {
            match c {
                '\\' => self.i += 2,
                '`' => {
                    self.i += 1;
                    self.toks.push(Tok::Template);
                    return;
                }
                '$' if self.peek(1) == Some('{') => {
                    self.i += 2;
                    self.braces.push(true);
                    self.toks.push(Tok::Template);
                    self.toks.push(Tok::Punct('('));
                    return;
                }
                _ => self.i += 1,
            }
        }
    }

    fn regex(&mut self) {
        self.i += 1;
        let mut in_class = false;
        while let Some(c) = self.peek(0) {
            self.i += 1;
            match c {
                '\\' => self.i += 1,
                '[' => in_class = true,
                ']' => in_class = false,
                '/' if !in_class => break,
                '\n' => break,
                _ => {}
            }
        }
        while self.peek(0).is_some_and(|c| c.is_alphanumeric()) {
            self.i += 1;
        }
        self.toks.push(Tok::Other);
    }

    fn run(&mut self) {
        while let Some(c) = self.peek(0) {
            match c {
                c if c.is_whitespace() => self.i += 1,
                '/' if self.peek(1) == Some('/') => {
                    let start = self.i + 2;
                    while self.peek(0).is_some_and(|c| c != '\n') {
                        self.i += 1;
                    }
                    let text: String = self.s[start..self.i].iter().collect();
                    let triple = text.starts_with('/');
                    self.comment(&text, triple);
                }
                '/' if self.peek(1) == Some('*') => {
                    let start = self.i + 2;
                    self.i += 2;
                    while self.i < self.s.len()
                        && !(self.peek(0) == Some('*') && self.peek(1) == Some('/'))
                    {
                        self.i += 1;
                    }
                    let end = self.i.min(self.s.len());
                    let text: String = self.s[start..end].iter().collect();
                    self.i += 2;
                    self.comment(&text, false);
                }
                '\'' | '"' => self.string(c),
                '`' => {
                    self.i += 1;
                    self.template_text();
                }
                '{' => {
                    self.i += 1;
                    self.braces.push(false);
                    self.toks.push(Tok::Punct('{'));
                }
                '}' => {
                    self.i += 1;
                    if self.braces.pop() == Some(true) {
                        self.toks.push(Tok::Punct(')'));
                        self.template_text();
                    } else {
                        self.toks.push(Tok::Punct('}'));
                    }
                }
                '/' if self.regex_allowed() => self.regex(),
                c if c.is_alphabetic() || c == '_' || c == '$' => {
                    let start = self.i;
                    while self
                        .peek(0)
                        .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$')
                    {
                        self.i += 1;
                    }
                    self.toks
                        .push(Tok::Ident(self.s[start..self.i].iter().collect()));
                }
                c if c.is_ascii_digit() => {
                    while self
                        .peek(0)
                        .is_some_and(|c| c.is_alphanumeric() || c == '.' || c == '_')
                    {
                        self.i += 1;
                    }
                    self.toks.push(Tok::Other);
                }
                c => {
                    self.i += 1;
                    self.toks.push(Tok::Punct(c));
                }
            }
        }
    }
}

fn allowed(spec: &str, escaped: bool) -> bool {
    !escaped
        && spec.strip_prefix("node:").is_some_and(|rest| {
            !rest.is_empty()
                && rest
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '/'))
        })
}

/// Returns every import or directive the source may not use; empty when the
/// source only imports `node:` built-ins (or nothing).
pub fn forbidden_imports(source: &str) -> Vec<String> {
    let chars: Vec<char> = source.chars().collect();
    let mut lx = Lexer {
        s: &chars,
        i: 0,
        toks: Vec::new(),
        braces: Vec::new(),
        forbidden: Vec::new(),
    };
    lx.run();
    let toks = &lx.toks;
    let mut out = lx.forbidden;
    let ident = |i: usize, w: &str| matches!(toks.get(i), Some(Tok::Ident(x)) if x == w);
    let punct = |i: usize, p: char| matches!(toks.get(i), Some(Tok::Punct(x)) if *x == p);
    let mut check = |i: usize| match toks.get(i) {
        Some(Tok::Str { value, escaped }) if !allowed(value, *escaped) => {
            out.push(format!("{value:?}"));
        }
        Some(Tok::Template) => out.push("a template-literal import".into()),
        _ => {}
    };
    for i in 0..toks.len() {
        if ident(i, "import") || ident(i, "from") {
            check(i + 1);
        }
        if (ident(i, "import") || ident(i, "require")) && punct(i + 1, '(') {
            check(i + 2);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::forbidden_imports as f;

    #[test]
    fn plain_functions_and_node_builtins_pass() {
        assert!(f("export default (req: Request) => new Response('hi')").is_empty());
        assert!(f("import { Buffer } from 'node:buffer';\nexport default {}").is_empty());
        assert!(f("import * as p from \"node:path\"; const m = import.meta.url;").is_empty());
        // look-alikes inside strings, comments, templates and regexes are not imports
        assert!(
            f(
                r#"const s = "import x from '/etc/passwd'"; // import "/etc/shadow"
/* from "../x" */ const t = `from "../y" ${1 + 2} import("z")`;
const r = /from "a"/g; const d = 4 / 2 / 1;
export default () => new Response(s + t + r + d)"#
            )
            .is_empty()
        );
    }

    #[test]
    fn every_way_of_loading_a_file_is_found() {
        let cases = [
            "import x from '/etc/passwd'",
            "import '../other/fn.ts'",
            "import type { T } from './t.ts'",
            "export * from 'https://example.com/x.ts'",
            "export { a } from \"npm:left-pad\"",
            "const m = await import('jsr:@std/path')",
            "type M = typeof import('./m.ts')",
            "import x = require('./x')",
            "/// <reference path=\"/etc/secret.d.ts\" />",
            "/// <reference types=\"./x\" />",
            "// @deno-types=\"./x.d.ts\"\nimport y from 'node:fs'",
            "const t = `${await import('/x.ts')}`",
            "import data from '/srv/config.json' with { type: 'json' }",
            "import x from 'node:../../etc/passwd'",
            "import x from 'node\\u003a/fs'",
            "const m = import(`/etc/${name}`)",
        ];
        for src in cases {
            assert!(!f(src).is_empty(), "not caught: {src}");
        }
    }

    #[test]
    fn lib_references_are_fine() {
        assert!(f("/// <reference lib=\"deno.ns\" />\nexport default 1").is_empty());
    }
}
