//! Bounded per-function logs: the router appends instance output as
//! `<RFC 3339 time> <stream> | <line>` (streams `stdout`, `stderr`, `skiff`
//! for the router's own notes, `access` for its access log), rotating
//! `<name>.log` to `<name>.log.1` when it passes a size cap, so each function
//! keeps at most about twice the cap on disk. The manager reads the tail for `GET /func/<name>/logs`.
//!
//! A line's text comes from a function, so it is *neutralised* when written
//! and again when read: every control character — C0 (except TAB), DEL, C1,
//! the Unicode bidi controls (U+061C, U+200E/F, U+202A–E, U+2066–9) and the
//! line/paragraph separators U+2028/9 — is written as the visible text
//! `\u{<hex>}` (ESC → `\u{1b}`, CR → `\u{d}`, RLO → `\u{202e}`). So one
//! printed line is one log line: it cannot start a forged `<time> <stream> |`
//! line, move an operator's cursor, clear a terminal or reorder what is shown.
//! The escaping is for display and not reversible (a printed backslash stays
//! as it is). Invalid UTF-8 becomes U+FFFD. The data dir's path (as a path or
//! a percent-encoded `file:` URL) is shown as `<data-dir>`.

use std::borrow::Cow;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::layout::Layout;

pub const DEFAULT_MAX_BYTES: u64 = 1024 * 1024;
/// Longer lines are cut, so one runaway print cannot fill the log.
pub const MAX_LINE: usize = 16 * 1024;

/// What a log shows instead of the data dir's path.
pub const DATA_DIR_SHOWN: &str = "<data-dir>";

/// Whether `c` is shown as `\u{<hex>}` text rather than as itself.
pub fn is_neutralised(c: char) -> bool {
    matches!(c,
        '\u{0}'..='\u{8}' | '\u{a}'..='\u{1f}' // C0 controls but TAB
        | '\u{7f}'..='\u{9f}'                   // DEL, C1 controls (CSI is U+009B)
        | '\u{61c}' | '\u{200e}' | '\u{200f}'     // bidi marks
        | '\u{2028}'..='\u{202e}'               // line/paragraph separators, bidi embeddings and overrides
        | '\u{2066}'..='\u{2069}') // bidi isolates
}

/// `text` with every [`is_neutralised`] character written as `\u{<hex>}`.
pub fn neutralise(text: &str) -> Cow<'_, str> {
    neutralise_within(text, usize::MAX)
}

/// [`neutralise`], cut to at most `max` bytes, never inside a character or
/// inside an escape.
pub fn neutralise_within(text: &str, max: usize) -> Cow<'_, str> {
    if !text.chars().any(is_neutralised) {
        return Cow::Borrowed(&text[..text.floor_char_boundary(max)]);
    }
    let mut out = String::with_capacity(text.len().min(max));
    for c in text.chars() {
        if is_neutralised(c) {
            let escaped = c.escape_unicode();
            if out.len() + escaped.len() > max {
                break;
            }
            out.extend(escaped);
        } else {
            if out.len() + c.len_utf8() > max {
                break;
            }
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// The spellings of the data dir's path that a log must not show.
#[derive(Debug, Clone, Default)]
struct HostPaths {
    /// Longest first, so a longer spelling is not half-replaced by a shorter one.
    needles: Vec<String>,
}

impl HostPaths {
    fn of(root: &Path) -> Self {
        let mut needles: Vec<String> = Vec::new();
        let spellings = [
            std::path::absolute(root).ok(),
            std::fs::canonicalize(root).ok(),
        ];
        for path in spellings.iter().flatten() {
            let Some(text) = path.to_str() else { continue };
            let text = text.trim_end_matches('/');
            // "/" (or nothing) would hide every path, not the data dir's.
            if text.len() < 2 {
                continue;
            }
            for n in [text.to_owned(), url_encoded_path(text)] {
                if !needles.contains(&n) {
                    needles.push(n);
                }
            }
        }
        needles.sort_by_key(|n| std::cmp::Reverse(n.len()));
        Self { needles }
    }

    fn hide<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut out = Cow::Borrowed(text);
        for needle in &self.needles {
            if out.contains(needle.as_str()) {
                out = Cow::Owned(replace_path(&out, needle));
            }
        }
        out
    }
}

/// `text` with `dir` replaced by [`DATA_DIR_SHOWN`] where it is a whole path
/// prefix (`/srv/d/x`, `/srv/d`), not part of a longer name (`/srv/d2`).
fn replace_path(text: &str, dir: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(dir) {
        let after = &rest[at + dir.len()..];
        let whole = after
            .chars()
            .next()
            .is_none_or(|c| !(c.is_alphanumeric() || c == '-' || c == '_'));
        out.push_str(&rest[..at]);
        out.push_str(if whole { DATA_DIR_SHOWN } else { dir });
        rest = after;
    }
    out.push_str(rest);
    out
}

/// `path` as it appears in a `file:` URL: what the WHATWG path
/// percent-encode set escapes, and `%` itself.
fn url_encoded_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        let escape = !(0x20..0x7f).contains(&b)
            || matches!(
                b,
                b' ' | b'"' | b'#' | b'%' | b'<' | b'>' | b'?' | b'`' | b'{' | b'}'
            );
        if escape {
            out.push_str(&format!("%{b:02X}"));
        } else {
            out.push(char::from(b));
        }
    }
    out
}

/// Text as the owner sees it: host paths hidden, controls neutralised, at
/// most `max` bytes.
fn shown(hidden: &HostPaths, text: &str, max: usize) -> String {
    neutralise_within(&hidden.hide(text), max).into_owned()
}

/// Room for a stored line's `<time> <stream> | ` prefix.
const PREFIX_ROOM: usize = 64;

/// A field formatter for `tracing_subscriber::fmt` that neutralises every
/// field like a log line, so a function's text that reaches a service's own
/// log (a start failure quotes the instance's last stderr lines) stays one
/// line and cannot drive the operator's terminal.
pub fn neutral_fields()
-> impl for<'w> tracing_subscriber::fmt::FormatFields<'w> + Send + Sync + 'static {
    use tracing_subscriber::field::MakeExt;
    tracing_subscriber::fmt::format::debug_fn(|w, field, value| {
        let text = format!("{value:?}");
        let text = neutralise(&text);
        if field.name() == "message" {
            write!(w, "{text}")
        } else {
            write!(w, "{}={text}", field.name())
        }
    })
    .delimited(" ")
}

pub struct LogWriter {
    path: PathBuf,
    old: PathBuf,
    max_bytes: u64,
    hidden: HostPaths,
    state: Mutex<Option<(File, u64)>>,
}

impl LogWriter {
    pub fn new(layout: &Layout, function_id: i64, max_bytes: u64) -> Self {
        Self {
            path: layout.log_file(function_id),
            old: layout.old_log_file(function_id),
            max_bytes,
            hidden: HostPaths::of(layout.root()),
            state: Mutex::new(None),
        }
    }

    fn open(&self) -> std::io::Result<(File, u64)> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
            // Logs are for the router and the manager only, not for functions.
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
        }
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        let len = f.metadata()?.len();
        Ok((f, len))
    }

    /// Appends one line (neutralised, host paths hidden, cut to [`MAX_LINE`]
    /// bytes). Failures (disk full, unwritable dir) drop the line and are
    /// reported to the caller, never retried in a loop.
    pub fn line(&self, stream: &str, text: &str) -> std::io::Result<()> {
        self.line_at(crate::time::now_millis(), stream, text)
    }

    /// [`LogWriter::line`] with the time it happened (ms since the epoch),
    /// for a line written a little after the fact.
    pub fn line_at(&self, at_millis: i64, stream: &str, text: &str) -> std::io::Result<()> {
        self.lines_at(stream, [(at_millis, text)])
    }

    /// Appends several lines of one stream, each with its time, in as few
    /// writes as the rotation allows (one, mostly): the router's access log
    /// writes a batch per function per drain, not a write per request.
    pub fn lines_at<'a>(
        &self,
        stream: &str,
        lines: impl IntoIterator<Item = (i64, &'a str)>,
    ) -> std::io::Result<()> {
        let mut stamps = crate::time::Rfc3339Stamps::default();
        let lines = lines.into_iter();
        // Room for the usual short lines without growing the buffer often.
        let mut buf = String::with_capacity(lines.size_hint().0.saturating_mul(96).min(1 << 20));
        let mut guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if guard.is_none() {
            *guard = Some(self.open()?);
        }
        for (at_millis, text) in lines {
            let text = shown(&self.hidden, text.trim_end_matches(['\r', '\n']), MAX_LINE);
            let start = buf.len();
            stamps.push(&mut buf, at_millis);
            for part in [" ", stream, " | ", &text, "\n"] {
                buf.push_str(part);
            }
            // The file would pass its cap with this line: what came before
            // goes to the current file, then it is rotated.
            if let Some((f, len)) = guard.as_mut()
                && *len + buf.len() as u64 > self.max_bytes
            {
                f.write_all(&buf.as_bytes()[..start])?;
                buf.drain(..start);
                *guard = None;
                std::fs::rename(&self.path, &self.old)?;
                *guard = Some(self.open()?);
            }
        }
        if let Some((f, len)) = guard.as_mut()
            && !buf.is_empty()
        {
            f.write_all(buf.as_bytes())?;
            *len += buf.len() as u64;
        }
        Ok(())
    }

    /// [`LogWriter::line`] for raw output: invalid UTF-8 becomes U+FFFD.
    pub fn line_bytes(&self, stream: &str, bytes: &[u8]) -> std::io::Result<()> {
        self.line(stream, &String::from_utf8_lossy(bytes))
    }
}

/// The last `n` lines of a function's log (older file first), or none;
/// neutralised again, in case a line was written by an older version.
///
/// Reads the files backwards, only as far as the `n` lines reach (at most
/// twice the cap per file): a request for the last 100 lines of a full log
/// costs those lines, not the megabytes before them.
pub fn tail(layout: &Layout, function_id: i64, n: usize) -> std::io::Result<Vec<String>> {
    let mut parts: Vec<Vec<u8>> = Vec::with_capacity(2);
    let mut want = n;
    for p in [
        layout.log_file(function_id),
        layout.old_log_file(function_id),
    ] {
        if want == 0 {
            break;
        }
        match File::open(&p) {
            Ok(mut f) => {
                let (bytes, whole) = last_lines(&mut f, want, 2 * DEFAULT_MAX_BYTES)?;
                let got = bytes.iter().filter(|&&b| b == b'\n').count();
                parts.push(bytes);
                // Only a file read to its start lets the older one continue it.
                if !whole {
                    break;
                }
                want = want.saturating_sub(got);
            }
            // No log yet, or the log directory is unusable: nothing to show.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                ) => {}
            Err(e) => return Err(e),
        }
    }
    let bytes: Vec<u8> = parts.into_iter().rev().flatten().collect();
    let text = String::from_utf8_lossy(&bytes);
    let hidden = HostPaths::of(layout.root());
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(n);
    Ok(lines[start..]
        .iter()
        .map(|s| shown(&hidden, s, MAX_LINE + PREFIX_ROOM))
        .collect())
}

/// The end of `f` holding its last `n` lines (fewer if the file has fewer, or
/// if they reach further back than `limit` bytes), without a cut first line,
/// and whether it starts at the file's start.
fn last_lines(f: &mut File, n: usize, limit: u64) -> std::io::Result<(Vec<u8>, bool)> {
    const CHUNK: u64 = 64 * 1024;
    let len = f.metadata()?.len();
    let floor = len.saturating_sub(limit);
    let mut at = len;
    // Chunks read so far, the last one first.
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    let mut ends = 0;
    // A last line without its `\n` counts as a line too.
    let mut last_byte_seen = false;
    // `n` lines are in hand once `n` line ends precede the last line's end,
    // plus one more to know where the first of them starts.
    while at > floor {
        let from = at.saturating_sub(CHUNK).max(floor);
        let mut chunk = vec![0; usize::try_from(at - from).unwrap_or(0)];
        f.seek(SeekFrom::Start(from))?;
        f.read_exact(&mut chunk)?;
        at = from;
        let skip_last = !last_byte_seen && chunk.last() == Some(&b'\n');
        last_byte_seen = true;
        let counted = if skip_last {
            &chunk[..chunk.len() - 1]
        } else {
            &chunk[..]
        };
        ends += counted.iter().filter(|&&b| b == b'\n').count();
        chunks.push(chunk);
        if ends >= n {
            break;
        }
    }
    let mut bytes: Vec<u8> = chunks.into_iter().rev().flatten().collect();
    let whole = at == 0;
    if !whole {
        // The first line may be cut: drop it, and any lines beyond `n`.
        let cut = bytes
            .iter()
            .position(|&b| b == b'\n')
            .map_or(bytes.len(), |i| i + 1);
        bytes.drain(..cut);
    }
    Ok((bytes, whole))
}

/// Removes a function's logs (when it is deleted).
pub fn remove(layout: &Layout, function_id: i64) {
    let _ = std::fs::remove_file(layout.log_file(function_id));
    let _ = std::fs::remove_file(layout.old_log_file(function_id));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `tail` answered before it read backwards: both files whole.
    fn tail_by_reading_everything(layout: &Layout, id: i64, n: usize) -> Vec<String> {
        let mut text = String::new();
        for p in [layout.old_log_file(id), layout.log_file(id)] {
            if let Ok(b) = std::fs::read(p) {
                text.push_str(&String::from_utf8_lossy(&b));
            }
        }
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    #[test]
    fn the_tail_read_backwards_is_the_tail_of_the_whole_log() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        std::fs::create_dir_all(layout.logs_dir()).unwrap();
        // Lines of many lengths (some past a 64 KiB chunk) and multi-byte
        // text, so chunk edges fall inside lines and inside characters.
        let mut lines = Vec::new();
        for i in 0..6000usize {
            let len = (i * 7919) % 300 + if i % 997 == 0 { 70_000 } else { 0 };
            lines.push(format!("{i} {}", "é".repeat(len / 2)));
        }
        let old: String = lines[..2500].iter().map(|l| format!("{l}\n")).collect();
        let cur: String = lines[2500..].iter().map(|l| format!("{l}\n")).collect();
        let counts = [
            0, 1, 2, 3, 99, 100, 2000, 3499, 3500, 3501, 5999, 6000, 10_000,
        ];
        for (old, cur) in [
            (Some(old.as_str()), cur.clone()),
            (None, cur.clone()),
            // A last line without its line end (a writer stopped mid-line).
            (Some(old.as_str()), cur.trim_end().to_string()),
            (Some(old.as_str()), String::new()),
        ] {
            match old {
                Some(o) => std::fs::write(layout.old_log_file(1), o).unwrap(),
                None => {
                    let _ = std::fs::remove_file(layout.old_log_file(1));
                }
            }
            std::fs::write(layout.log_file(1), &cur).unwrap();
            for n in counts {
                let want = tail_by_reading_everything(&layout, 1, n);
                let got = tail(&layout, 1, n).unwrap();
                assert_eq!(got.len(), want.len(), "n={n}");
                // `tail` neutralises: compare the line numbers they start with.
                let first = |v: &[String]| {
                    v.iter()
                        .map(|l| l.split(' ').next().unwrap().to_owned())
                        .collect::<Vec<_>>()
                };
                assert_eq!(first(&got), first(&want), "n={n}");
            }
        }
        // Beyond twice the cap, the start of a file is not read.
        let huge: String = (0..40_000)
            .map(|i| format!("{i} {}\n", "x".repeat(60)))
            .collect();
        std::fs::write(layout.log_file(1), &huge).unwrap();
        let got = tail(&layout, 1, 100_000).unwrap();
        assert!(got.len() < 40_000 && got.len() > 30_000, "{}", got.len());
        // The first line shown is whole, and the lines run on to the last.
        assert_eq!(got[0], format!("{} {}", 40_000 - got.len(), "x".repeat(60)));
        assert_eq!(got.last().unwrap().split(' ').next(), Some("39999"));
    }

    #[test]
    fn rotates_and_tails() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        let w = LogWriter::new(&layout, 1, 2000);
        for i in 0..100 {
            w.line("stdout", &format!("line {i}")).unwrap();
        }
        let cur = std::fs::metadata(layout.log_file(1)).unwrap().len();
        let old = std::fs::metadata(layout.old_log_file(1)).unwrap().len();
        assert!(cur <= 2000 && old <= 2000);
        let t = tail(&layout, 1, 3).unwrap();
        assert_eq!(t.len(), 3);
        assert!(t[2].ends_with("stdout | line 99"), "{t:?}");
        assert!(t[0].ends_with("line 97"));
        w.line("stderr", &"x".repeat(MAX_LINE * 2)).unwrap();
        let t = tail(&layout, 1, 1).unwrap();
        assert!(t[0].len() < MAX_LINE + 64);
        assert!(tail(&layout, 2, 5).unwrap().is_empty());
    }

    #[test]
    fn a_batch_is_stamped_and_rotated_like_single_lines() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        let w = LogWriter::new(&layout, 1, 2000);
        let texts: Vec<String> = (0..100).map(|i| format!("GET /{i}")).collect();
        let base = 1_767_225_600_000;
        w.lines_at(
            "access",
            texts
                .iter()
                .enumerate()
                .map(|(i, t)| (base + 7 * i as i64, t.as_str())),
        )
        .unwrap();
        let cur = std::fs::read_to_string(layout.log_file(1)).unwrap();
        let old = std::fs::read_to_string(layout.old_log_file(1)).unwrap();
        assert!(cur.len() <= 2000 && old.len() <= 2000);
        // Nothing lost at the cut: the old file ends where the current begins.
        let all: Vec<&str> = old.lines().chain(cur.lines()).collect();
        let last = texts.len() - all.len();
        for (i, line) in all.iter().enumerate() {
            let n = last + i;
            let stamp = crate::time::rfc3339(base + 7 * n as i64);
            assert_eq!(*line, format!("{stamp} access | GET /{n}"));
        }
        assert!(old.lines().count() > 10, "{old}");
    }

    /// The stored lines of alice's function `f`, as bytes.
    fn raw_log(layout: &Layout) -> Vec<u8> {
        std::fs::read(layout.log_file(1)).unwrap()
    }

    /// Every line of `log` is `<RFC 3339> <stream> | <text>` with no control
    /// character but TAB, and no bidi control.
    fn assert_only_clean_lines(log: &str, expected_lines: usize) {
        assert_eq!(log.lines().count(), expected_lines, "{log:?}");
        for line in log.lines() {
            let (time, rest) = line.split_once(' ').unwrap();
            chrono::DateTime::parse_from_rfc3339(time).expect("a timestamp first");
            assert!(
                rest.starts_with("stderr | ") || rest.starts_with("stdout | "),
                "{line:?}"
            );
            let bad = line.chars().find(|c| *c != '\t' && is_neutralised(*c));
            assert_eq!(bad, None, "{line:?}");
        }
    }

    #[test]
    fn hostile_lines_stay_one_visible_line_each() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        let w = LogWriter::new(&layout, 1, DEFAULT_MAX_BYTES);
        let hostile: &[(&str, &str)] = &[
            (
                "ok\r2026-01-01T00:00:00Z stderr | fake",
                "ok\\u{d}2026-01-01T00:00:00Z stderr | fake",
            ),
            (
                "first\n2026-01-01T00:00:00Z skiff | forged",
                "first\\u{a}2026-01-01T00:00:00Z skiff | forged",
            ),
            ("\x1b[2J\x1b[Hcleared", "\\u{1b}[2J\\u{1b}[Hcleared"),
            ("\u{9b}2J C1 CSI", "\\u{9b}2J C1 CSI"),
            ("invoice\u{202e}fdp.exe", "invoice\\u{202e}fdp.exe"),
            (
                "a\u{2066}b\u{2069}c\u{200f}",
                "a\\u{2066}b\\u{2069}c\\u{200f}",
            ),
            ("nul\0byte", "nul\\u{0}byte"),
            (
                "secret\x08\x08\x08\x08\x08\x08public",
                "secret\\u{8}\\u{8}\\u{8}\\u{8}\\u{8}\\u{8}public",
            ),
            (
                "bell\x07 del\x7f vt\x0b ff\x0c",
                "bell\\u{7} del\\u{7f} vt\\u{b} ff\\u{c}",
            ),
            (
                "line\u{2028}separator\u{2029}",
                "line\\u{2028}separator\\u{2029}",
            ),
            (
                "tab\tstays, \\u{1b} typed by hand stays",
                "tab\tstays, \\u{1b} typed by hand stays",
            ),
            ("crlf at the end\r\n", "crlf at the end"),
        ];
        for (line, _) in hostile {
            w.line("stderr", line).unwrap();
        }
        let log = String::from_utf8(raw_log(&layout)).unwrap();
        assert_only_clean_lines(&log, hostile.len());
        let shown = tail(&layout, 1, 100).unwrap();
        assert_eq!(shown.len(), hostile.len());
        for ((_, expected), got) in hostile.iter().zip(&shown) {
            let text = got.split_once(" stderr | ").unwrap().1;
            assert_eq!(text, *expected);
        }
    }

    #[test]
    fn invalid_utf8_and_lone_surrogates_become_replacement_characters() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        let w = LogWriter::new(&layout, 1, DEFAULT_MAX_BYTES);
        w.line_bytes("stdout", b"bad \xff\xfe bytes").unwrap();
        // A UTF-16 lone surrogate as a JS engine might encode it (CESU-8).
        w.line_bytes("stdout", b"lone \xed\xa0\x80 surrogate")
            .unwrap();
        w.line_bytes("stdout", b"overlong \xc0\xaf slash").unwrap();
        // A C1 control spelled as raw Latin-1 is not a character at all.
        w.line_bytes("stdout", b"latin1 \x9b2J").unwrap();
        let log = String::from_utf8(raw_log(&layout)).expect("the log is UTF-8");
        assert_only_clean_lines(&log, 4);
        let shown = tail(&layout, 1, 4).unwrap();
        assert!(
            shown[0].ends_with("| bad \u{fffd}\u{fffd} bytes"),
            "{shown:?}"
        );
        assert!(shown[1].ends_with("| lone \u{fffd}\u{fffd}\u{fffd} surrogate"));
        assert!(shown[2].ends_with("| overlong \u{fffd}\u{fffd} slash"));
        assert!(shown[3].ends_with("| latin1 \u{fffd}2J"));
    }

    #[test]
    fn lines_are_cut_at_the_limit_on_a_character_or_escape_boundary() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        let w = LogWriter::new(&layout, 1, 16 * DEFAULT_MAX_BYTES);
        let text_of = |line: &str| line.split_once(" | ").unwrap().1.to_owned();
        // Exactly at the limit, ending in a two-byte character: kept whole.
        let exact = format!("{}é", "x".repeat(MAX_LINE - 2));
        // One byte over, the two-byte character straddling the cut: dropped whole.
        let over = format!("{}é", "x".repeat(MAX_LINE - 1));
        // A four-byte character straddling the cut.
        let emoji = format!("{}🦀", "x".repeat(MAX_LINE - 2));
        // An escape that would not fit: not half-written.
        let escape = format!("{}\x1b[2J", "x".repeat(MAX_LINE - 3));
        // Only escapes: six bytes each, whole ones only.
        let escapes = "\x1b".repeat(MAX_LINE);
        for line in [&exact, &over, &emoji, &escape, &escapes] {
            w.line("stdout", line).unwrap();
        }
        let log = String::from_utf8(raw_log(&layout)).unwrap();
        assert_only_clean_lines(&log, 5);
        let shown: Vec<String> = tail(&layout, 1, 5)
            .unwrap()
            .iter()
            .map(|l| text_of(l))
            .collect();
        assert_eq!(shown[0], exact);
        assert_eq!(shown[1], "x".repeat(MAX_LINE - 1));
        assert_eq!(shown[2], "x".repeat(MAX_LINE - 2));
        assert_eq!(shown[3], "x".repeat(MAX_LINE - 3));
        assert_eq!(shown[4], "\\u{1b}".repeat(MAX_LINE / 6));
        assert!(shown.iter().all(|t| t.len() <= MAX_LINE));
    }

    #[test]
    fn the_data_dir_is_hidden_as_a_path_and_as_a_file_url() {
        let tmp = tempfile::tempdir().unwrap();
        let real = tmp.path().join("data dir %41");
        std::fs::create_dir(&real).unwrap();
        // The service may be given the data dir through a symlink.
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let layout = Layout::new(&link);
        let w = LogWriter::new(&layout, 1, DEFAULT_MAX_BYTES);
        let real_s = real.to_str().unwrap();
        let link_s = link.to_str().unwrap();
        let real_url = format!("file://{}", url_encoded_path(real_s));
        assert!(real_url.ends_with("/data%20dir%20%2541"), "{real_url}");
        w.line(
            "stderr",
            &format!("at {real_url}/functions/alice/f/v1/fn.ts:3:5"),
        )
        .unwrap();
        w.line(
            "stderr",
            &format!("listening on unix:{link_s}/instances/7/s"),
        )
        .unwrap();
        w.line(
            "stderr",
            &format!("cannot open {real_s}/logs/bob/x.log or {real_s}"),
        )
        .unwrap();
        w.line("stderr", &format!("a sibling: {real_s}2/x"))
            .unwrap();
        let shown = tail(&layout, 1, 10).unwrap();
        let log = String::from_utf8(raw_log(&layout)).unwrap();
        let without_sibling = |t: &str| t.lines().take(3).collect::<Vec<_>>().join("\n") + "\n";
        for text in [without_sibling(&log), without_sibling(&shown.join("\n"))] {
            assert!(
                text.contains("at file://<data-dir>/functions/alice/f/v1/fn.ts:3:5"),
                "{text}"
            );
            assert!(
                text.contains("listening on unix:<data-dir>/instances/7/s"),
                "{text}"
            );
            assert!(
                text.contains("cannot open <data-dir>/logs/bob/x.log or <data-dir>\n"),
                "{text}"
            );
            assert!(
                !text.contains("data dir") && !text.contains("data%20dir"),
                "{text}"
            );
            assert!(!text.contains(link_s), "{text}");
        }
        // Not the data dir: a longer name that starts like it.
        assert!(
            shown[3].ends_with(&format!("a sibling: {real_s}2/x")),
            "{shown:?}"
        );
    }

    #[test]
    fn lines_written_before_neutralising_are_neutralised_when_read() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        let file = layout.log_file(1);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(
            &file,
            "2026-01-01T00:00:00.000Z stdout | a\x1b[2Jb\rc\u{202e}d\n",
        )
        .unwrap();
        let shown = tail(&layout, 1, 10).unwrap();
        assert_eq!(
            shown,
            ["2026-01-01T00:00:00.000Z stdout | a\\u{1b}[2Jb\\u{d}c\\u{202e}d"]
        );
    }

    /// A `MakeWriter` that collects a subscriber's output.
    #[derive(Clone, Default)]
    struct Captured(std::sync::Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn tracing_output_quoting_a_function_stays_one_neutralised_line() {
        let out = Captured::default();
        let writer = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .fmt_fields(neutral_fields())
            .finish();
        let stderr_tail = "exit code 1: boom\r\n2026-01-01T00:00:00Z  INFO forged\x1b[2J\u{202e}";
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(user = "alice", error = %stderr_tail, "start failed");
            tracing::info!(path = stderr_tail, "a string field");
        });
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 2, "{text:?}");
        for line in text.lines() {
            assert!(!line.chars().any(is_neutralised), "{line:?}");
        }
        assert!(
            text.contains(
                "start failed user=\"alice\" error=exit code 1: boom\\u{d}\\u{a}2026-01-01T00:00:00Z  INFO forged\\u{1b}[2J\\u{202e}"
            ),
            "{text:?}"
        );
    }
}
