//! The services' own log, set up once for every binary: `RUST_LOG` filters
//! (default `info`), `SKIFF_LOG_FORMAT` chooses human text (the default) or
//! one JSON object per line for a log pipeline.
//!
//! Either way a field that quotes a function's text stays on its line and
//! cannot drive a terminal: text fields go through [`crate::logs::neutral_fields`];
//! JSON escapes the C0 controls itself, and [`JsonLines`] escapes the rest of
//! what [`crate::logs::is_neutralised`] names (DEL, C1, bidi controls).

use std::io::Write;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use crate::logs::is_neutralised;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event
    #[default]
    Text,
    /// One JSON object per line (`timestamp`, `level`, `fields`, `spans`)
    Json,
}

/// The log settings of a binary (flattened into its command line).
#[derive(Debug, Clone, clap::Args)]
pub struct LogArgs {
    /// Format of this service's own log: `text` or `json` (one object per line)
    #[arg(long, env = "SKIFF_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

/// Installs the process's log subscriber (a second call does nothing).
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    let _ = match format {
        LogFormat::Text => builder
            // Fields may quote a function's output: one line each, no terminal controls.
            .fmt_fields(crate::logs::neutral_fields())
            .try_init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(JsonLines(std::io::stdout))
            .try_init(),
    };
}

/// Writes JSON lines with every character [`is_neutralised`] names as a
/// `\uXXXX` escape. Inside a JSON string that is the same character to a
/// parser, and such characters only ever occur inside strings.
#[derive(Clone, Copy)]
pub struct JsonLines<M>(pub M);

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for JsonLines<M> {
    type Writer = EscapingWriter<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        EscapingWriter(self.0.make_writer())
    }
}

pub struct EscapingWriter<W>(W);

impl<W: Write> Write for EscapingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // The formatter hands over whole events, which are UTF-8.
        match std::str::from_utf8(buf) {
            Ok(text) if text.chars().any(is_neutralised) => {
                self.0.write_all(escape_json(text).as_bytes())?;
                Ok(buf.len())
            }
            _ => self.0.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// `text` (JSON) with each neutralised character as `\uXXXX` (surrogate
/// pairs are never needed: they are all in the Basic Multilingual Plane).
fn escape_json(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        // The line's own end stays a newline; serde_json escapes the others.
        if c != '\n' && is_neutralised(c) {
            out.push_str(&format!("\\u{:04x}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

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
    fn json_lines_are_one_object_each_and_hold_no_terminal_control() {
        let out = Captured::default();
        let writer = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_writer(JsonLines(move || writer.clone()))
            .finish();
        let hostile = "boom\r\n{\"level\":\"ERROR\"}\x1b[2J\u{9b}\u{202e}\u{7f}";
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(error = %hostile, "start failed");
        });
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 1, "{text:?}");
        let line = text.lines().next().unwrap();
        assert!(!line.chars().any(is_neutralised), "{line:?}");
        let event: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(event["level"], "WARN");
        assert_eq!(event["fields"]["message"], "start failed");
        // The parser gets the text back exactly.
        assert_eq!(event["fields"]["error"], hostile);
    }

    #[test]
    fn the_format_is_text_unless_asked() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            log: LogArgs,
        }
        let cli = Cli::try_parse_from(["x"]).unwrap();
        assert_eq!(cli.log.log_format, LogFormat::Text);
        let cli = Cli::try_parse_from(["x", "--log-format", "json"]).unwrap();
        assert_eq!(cli.log.log_format, LogFormat::Json);
        assert!(Cli::try_parse_from(["x", "--log-format", "xml"]).is_err());
    }
}
