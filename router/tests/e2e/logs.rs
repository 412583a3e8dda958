//! What a function's owner reads at `GET /func/<name>/logs`: each line the
//! function printed is one neutralised line (no forged `<time> <stream> |`
//! prefixes, no terminal controls), and nothing shows the data dir's path.

use std::time::{Duration, Instant};

use skiff_core::logs::{MAX_LINE, is_neutralised};
use skiff_testkit::TestBackend;

use crate::helpers::{Stack, stack};

skiff_testkit::on_both_backends!(multi_thread;
    printed_lines_reach_the_owner_as_one_neutralised_line_each,
    the_owners_log_shows_no_data_dir_path,
);

/// The owner's whole log.
async fn owner_log(s: &Stack, token: &str, name: &str) -> String {
    let r = s.manager.logs(token, name, "?tail=10000").await;
    assert_eq!(r.status(), 200);
    r.text().await.unwrap()
}

/// Reads the owner's log until it contains every one of `markers` (the
/// router writes it as the instance prints); panics after 20 s.
async fn log_with(s: &Stack, token: &str, name: &str, markers: &[&str]) -> String {
    let start = Instant::now();
    loop {
        let log = owner_log(s, token, name).await;
        if markers.iter().all(|m| log.contains(m)) {
            return log;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the log never showed all of {markers:?}:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every line is `<RFC 3339> <stdout|stderr|skiff|access> | <text>` without control
/// or bidi characters (TAB aside).
fn assert_well_formed(log: &str) {
    for line in log.lines() {
        let (time, rest) = line.split_once(' ').expect("a time and a stream");
        chrono::DateTime::parse_from_rfc3339(time)
            .unwrap_or_else(|e| panic!("{e}: {line:?} does not start with a time"));
        assert!(
            ["stdout | ", "stderr | ", "skiff | ", "access | "]
                .iter()
                .any(|p| rest.starts_with(p)),
            "{line:?}"
        );
        assert!(
            !line.chars().any(|c| c != '\t' && is_neutralised(c)),
            "{line:?}"
        );
    }
}

/// The text after the prefix of the one line that contains `marker`.
fn only_line_with<'a>(log: &'a str, stream: &str, marker: &str) -> &'a str {
    let lines: Vec<&str> = log.lines().filter(|l| l.contains(marker)).collect();
    assert_eq!(lines.len(), 1, "{marker}: {lines:?}");
    lines[0]
        .split_once(&format!(" {stream} | "))
        .unwrap_or_else(|| panic!("{marker} is not on {stream}: {:?}", lines[0]))
        .1
}

/// Prints hostile lines on GET /: forged prefixes, terminal controls, bidi
/// overrides, NUL, a lone surrogate, invalid UTF-8, a 10 MB line without a
/// newline, and lines right at the length limit (`LIMIT`) with a multibyte
/// character at the cut.
const PRINTER: &str = r#"const LIMIT = {LIMIT};
const out = (s: string | Uint8Array) => {
  let b = typeof s === "string" ? new TextEncoder().encode(s) : s;
  while (b.length > 0) b = b.subarray(Deno.stdout.writeSync(b));
};
export default (_req: Request) => {
  console.log("L1 ok\r2026-01-01T00:00:00Z skiff | forged by a carriage return");
  console.error("L2 \x1b[2J\x1b[H screen cleared \x1b]0;title\x07");
  console.error("L3 invoice\u202efdp.exe and \u2066isolate\u2069");
  console.log("L4 nul\0byte, backspace\b\b\b, delete\x7f, C1 \u009b2J");
  console.log("L5 lone \ud800 surrogate");
  out(new Uint8Array([0x4c, 0x36, 0x20, 0xff, 0xfe, 0x20, 0x62, 0x61, 0x64, 0x0a]));
  console.error("L7 first\n2026-01-01T00:00:00Z skiff | L7 forged by a newline");
  console.log("L8 line\u2028separator");
  out("L9 " + "y".repeat(10_000_000));
  out("\nL10 after the flood\n");
  out("L11 " + "x".repeat(LIMIT - 5) + "\u00e9\n");
  out("L12 " + "x".repeat(LIMIT - 6) + "\u00e9\n");
  console.log("L13 END");
  return new Response("printed");
};
"#;

async fn printed_lines_reach_the_owner_as_one_neutralised_line_each(b: TestBackend) {
    let s = stack(b).await;
    let t = s.token("alice").await;
    let source = PRINTER.replace("{LIMIT}", &MAX_LINE.to_string());
    // Prints everything once: on the one call that finds it live.
    s.deploy_live(&t, "alice", "printer", &source, "printed")
        .await;
    let log = log_with(&s, &t, "printer", &["L12 ", "L13 END"]).await;
    assert_well_formed(&log);
    let log = log.as_str();

    assert_eq!(
        only_line_with(log, "stdout", "L1 "),
        "L1 ok\\u{d}2026-01-01T00:00:00Z skiff | forged by a carriage return"
    );
    assert_eq!(
        only_line_with(log, "stderr", "L2 "),
        "L2 \\u{1b}[2J\\u{1b}[H screen cleared \\u{1b}]0;title\\u{7}"
    );
    assert_eq!(
        only_line_with(log, "stderr", "L3 "),
        "L3 invoice\\u{202e}fdp.exe and \\u{2066}isolate\\u{2069}"
    );
    assert_eq!(
        only_line_with(log, "stdout", "L4 "),
        "L4 nul\\u{0}byte, backspace\\u{8}\\u{8}\\u{8}, delete\\u{7f}, C1 \\u{9b}2J"
    );
    assert_eq!(
        only_line_with(log, "stdout", "L5 "),
        "L5 lone \u{fffd} surrogate"
    );
    assert_eq!(
        only_line_with(log, "stdout", "L6 "),
        "L6 \u{fffd}\u{fffd} bad"
    );
    // A newline is a new line, but it only ever starts with the router's prefix.
    assert_eq!(only_line_with(log, "stderr", "L7 first"), "L7 first");
    assert_eq!(
        only_line_with(log, "stderr", "L7 forged"),
        "2026-01-01T00:00:00Z skiff | L7 forged by a newline"
    );
    assert_eq!(
        only_line_with(log, "stdout", "L8 "),
        "L8 line\\u{2028}separator"
    );
    // 10 MB without a newline: one line, cut at the limit; the next line follows.
    assert_eq!(
        only_line_with(log, "stdout", "L9 "),
        format!("L9 {}", "y".repeat(MAX_LINE - 3))
    );
    assert_eq!(only_line_with(log, "stdout", "L10 "), "L10 after the flood");
    // One byte over the limit with a two-byte character across the cut: the
    // character goes whole; exactly at the limit: it stays.
    assert_eq!(
        only_line_with(log, "stdout", "L11 "),
        format!("L11 {}", "x".repeat(MAX_LINE - 5))
    );
    assert_eq!(
        only_line_with(log, "stdout", "L12 "),
        format!("L12 {}é", "x".repeat(MAX_LINE - 6))
    );
    // The router read all that and still serves.
    assert_eq!(s.get("alice", "printer", "/").await.status(), 200);
}

/// Throws with a stack, leaks a stray rejection, and prints host paths itself.
const TALKER: &str = r#"function deep(): never {
  throw new Error(`thrown from ${import.meta.url}`);
}
export default (req: Request) => {
  const path = new URL(req.url).pathname;
  if (path === "/throw") deep();
  if (path === "/stray") Promise.reject(new Error("stray rejection"));
  if (path === "/print") console.log(`my cwd ${Deno.cwd()}, my file ${import.meta.filename}`);
  return new Response("talked");
};
"#;

const LOAD_FAILURE: &str = r#"function loadTime(): never {
  throw new Error("fails at load");
}
loadTime();
export default () => new Response("never");
"#;

async fn the_owners_log_shows_no_data_dir_path(b: TestBackend) {
    let s = stack(b).await;
    let t = s.token("alice").await;

    s.deploy_live(&t, "alice", "talker", TALKER, "talked").await;
    let r = s.get("alice", "talker", "/throw").await;
    assert_eq!(r.status(), 500);
    let body = r.text().await.unwrap();
    assert!(body.contains("thrown from fn.js"), "{body}");
    s.get("alice", "talker", "/stray").await;
    s.get("alice", "talker", "/print").await;
    let talker_id = s.function_id("alice", "talker");
    let talker = log_with(
        &s,
        &t,
        "talker",
        &["function error", "stray rejection", "my cwd"],
    )
    .await;

    s.deploy_unbuilt("alice", "broken", LOAD_FAILURE).await;
    let start = Instant::now();
    while s.get("alice", "broken", "/").await.status() != 503 {
        assert!(start.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let broken = log_with(&s, &t, "broken", &["could not start"]).await;

    let data_dir = s.data_dir.to_str().unwrap().to_owned();
    let canonical = std::fs::canonicalize(&s.data_dir).unwrap();
    for (name, log) in [("talker", &talker), ("broken", &broken)] {
        assert_well_formed(log);
        assert!(
            !log.contains(&data_dir),
            "{name}'s log shows {data_dir}:\n{log}"
        );
        assert!(
            !log.contains(canonical.to_str().unwrap()),
            "{name}'s log shows the data dir:\n{log}"
        );
        assert!(
            !log.contains("file:///"),
            "{name}'s log shows a file URL:\n{log}"
        );
    }
    // What the runtime says instead.
    assert!(
        talker.contains("stderr | skiff-runtime: listening\n"),
        "{talker}"
    );
    assert!(
        talker.contains("stderr | skiff-runtime: function error: Error: thrown from fn.js\n"),
        "{talker}"
    );
    assert!(
        // The artifact's source map: the author's file and lines.
        talker.contains("stderr |     at deep (main.ts:2:9)\n"),
        "{talker}"
    );
    assert!(talker.contains("(main.ts:6:"), "{talker}");
    assert!(talker.contains("(<runtime>/main.ts:"), "{talker}");
    assert!(
        talker.contains("unhandled promise rejection: Error: stray rejection"),
        "{talker}"
    );
    // What the function printed itself is hidden by the log writer. (Its
    // working directory is its code dir, read-only.)
    assert!(
        talker.contains(&format!(
            "stdout | my cwd <data-dir>/functions/{talker_id}/v1,"
        )),
        "{talker}"
    );
    assert!(
        talker.contains(&format!(
            "my file <data-dir>/functions/{talker_id}/v1/fn.js"
        )),
        "{talker}"
    );
    assert!(
        broken.contains("skiff-runtime: cannot load function module fn.ts: fails at load"),
        "{broken}"
    );
}
