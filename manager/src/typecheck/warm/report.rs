//! A warm check's diagnostics as the deploy answer's warnings, in the form
//! `deno check` prints them (so an author sees the same text whichever
//! checker ran): `TS<code> [ERROR]: <message>`, the source line with the
//! range underlined, and `at <file>:<line>:<column>`.

use std::path::Path;

use serde_json::Value;

use super::FileDiagnostics;

/// The type errors among a document's diagnostics: the TypeScript source's
/// errors only (not hints such as "declared but never read", which
/// `deno check` does not report, nor other sources).
pub fn errors(items: &[Value]) -> impl Iterator<Item = &Value> {
    items.iter().filter(|d| {
        d.get("source").and_then(Value::as_str) == Some("deno-ts")
            && d.get("severity").and_then(Value::as_u64) == Some(1)
    })
}

/// The warnings of a warm check, files in graph order, each file's by
/// position; `src` is the upload's root (paths are shown relative to it).
pub fn warnings_from(files: &[FileDiagnostics], src: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for f in files {
        let shown = f
            .path
            .strip_prefix(src)
            .unwrap_or(&f.path)
            .to_string_lossy()
            .into_owned();
        let mut errs: Vec<&Value> = errors(&f.items).collect();
        errs.sort_by_key(|d| (position(d, "line"), position(d, "character")));
        for d in errs {
            super::super::build::push_warning(&mut out, format_one(d, &f.text, &shown));
        }
    }
    out
}

fn position(d: &Value, field: &str) -> u64 {
    d.pointer(&format!("/range/start/{field}"))
        .and_then(Value::as_u64)
        .unwrap_or(0)
}

fn format_one(d: &Value, text: &str, shown: &str) -> String {
    let code = match d.get("code") {
        Some(Value::Number(n)) => format!("TS{n}"),
        Some(Value::String(s)) => s.clone(),
        _ => "TS".into(),
    };
    let message = d.get("message").and_then(Value::as_str).unwrap_or("");
    let line_no = position(d, "line") as usize;
    let start = position(d, "character") as usize;
    let end_line = d
        .pointer("/range/end/line")
        .and_then(Value::as_u64)
        .unwrap_or(line_no as u64) as usize;
    let line = text.lines().nth(line_no).unwrap_or("");
    // Columns and underline in UTF-16 units, the protocol's and `deno check`'s.
    let start_col = start;
    let end_col = if end_line == line_no {
        d.pointer("/range/end/character")
            .and_then(Value::as_u64)
            .unwrap_or(start as u64) as usize
    } else {
        line.encode_utf16().count()
    };
    // As Deno draws it: a caret under one character, a tilde under each of more.
    let width = end_col.saturating_sub(start_col);
    let underline = if width <= 1 {
        "^".to_owned()
    } else {
        "~".repeat(width)
    };
    format!(
        "{code} [ERROR]: {message}\n{line}\n{}{underline}\n    at {shown}:{}:{}",
        " ".repeat(start_col),
        line_no + 1,
        start_col + 1
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn diag(line: u64, from: u64, to: u64, severity: u64, code: u64, msg: &str) -> Value {
        json!({
            "range": { "start": { "line": line, "character": from }, "end": { "line": line, "character": to } },
            "severity": severity, "code": code, "source": "deno-ts", "message": msg,
        })
    }

    #[test]
    fn errors_read_like_deno_checks_and_hints_are_left_out() {
        let src = Path::new("/b/src");
        let files = vec![FileDiagnostics {
            path: src.join("lib/a.ts"),
            text: "let x = 1;\nconst a: number = 'é';\n".into(),
            items: vec![
                diag(
                    1,
                    6,
                    7,
                    1,
                    2322,
                    "Type 'string' is not assignable to type 'number'.",
                ),
                diag(
                    0,
                    4,
                    5,
                    4,
                    6133,
                    "'x' is declared but its value is never read.",
                ),
                diag(0, 4, 5, 1, 7005, "first by position"),
            ],
        }];
        let w = warnings_from(&files, src);
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].starts_with("TS7005 [ERROR]: first by position"));
        assert_eq!(
            w[1],
            "TS2322 [ERROR]: Type 'string' is not assignable to type 'number'.\n\
             const a: number = 'é';\n      ^\n    at lib/a.ts:2:7"
        );
    }

    #[test]
    fn columns_count_utf16_units_as_deno_check_does() {
        let src = Path::new("/b/src");
        let files = vec![FileDiagnostics {
            path: src.join("main.ts"),
            text: "const s = \"😀\" + 1 * \"2\";\n".into(),
            // "😀" is two UTF-16 units: `"2"` starts at unit 21
            items: vec![diag(0, 21, 24, 1, 2363, "rhs")],
        }];
        let w = warnings_from(&files, src);
        assert!(
            w[0].ends_with(&format!("\n{}~~~\n    at main.ts:1:22", " ".repeat(21))),
            "{w:?}"
        );
    }
}
