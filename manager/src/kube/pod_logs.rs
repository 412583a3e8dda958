//! Functions' output in Kubernetes: their pods' logs, read through the API
//! (`apply::KubeApi`, the one I/O module) and shown like the process runtime's
//! log files: the last lines of all the function's pods merged by time, oldest
//! first, `<RFC 3339 time> <pod> | <text>` with the text neutralised.

use chrono::DateTime;
use skiff_core::logs::{MAX_LINE, neutralise_within};
use skiff_core::time::rfc3339;

use super::apply::KubeApi;
use super::errors::KubeError;
use crate::functions::logs::{LogError, LogFuture, LogSource, LoggedFunction};

/// Pods read per request: more than the autoscaler's usual ceiling, and a
/// bound on one request's work.
const MAX_PODS: usize = 16;
/// Bytes read from one pod's log, as the file reader keeps to.
const MAX_BYTES_PER_POD: i64 = 2 * 1024 * 1024;

pub struct PodLogs {
    api: KubeApi,
}

impl PodLogs {
    pub fn new(api: KubeApi) -> Self {
        Self { api }
    }

    async fn read(
        &self,
        function: LoggedFunction<'_>,
        lines: usize,
    ) -> Result<Vec<String>, KubeError> {
        let pods = self
            .api
            .function_pods(function.user.as_str(), function.name.as_str())
            .await?;
        let want = i64::try_from(lines).unwrap_or(i64::MAX);
        let mut logs = Vec::new();
        for pod in pods.into_iter().take(MAX_PODS) {
            match self.api.pod_log(&pod, want, MAX_BYTES_PER_POD).await {
                Ok(text) => logs.push((pod, text)),
                // A pod still starting (400: its container is waiting) or gone
                // since the list (404) has nothing to show.
                Err(e) if matches!(e.code(), Some(400 | 404)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(merge(&logs, lines))
    }
}

impl LogSource for PodLogs {
    fn tail<'a>(&'a self, function: LoggedFunction<'a>, lines: usize) -> LogFuture<'a> {
        Box::pin(async move {
            self.read(function, lines)
                .await
                .map_err(|e| LogError::Unavailable(Box::new(e)))
        })
    }
}

/// The last `n` lines of the pods' logs (`(pod, text)`, each line of `text`
/// led by an RFC 3339 time as the API's `timestamps` gives it), oldest first.
/// A line without a readable time keeps the time of the line before it.
pub fn merge(logs: &[(String, String)], n: usize) -> Vec<String> {
    let mut lines: Vec<(i64, &str, &str)> = Vec::new();
    for (pod, text) in logs {
        let mut last = 0;
        for line in text.lines() {
            let (at, rest) = match line.split_once(' ') {
                Some((time, rest)) => match DateTime::parse_from_rfc3339(time) {
                    Ok(t) => (t.timestamp_millis(), rest),
                    Err(_) => (last, line),
                },
                None => match DateTime::parse_from_rfc3339(line) {
                    Ok(t) => (t.timestamp_millis(), ""),
                    Err(_) => (last, line),
                },
            };
            last = at;
            lines.push((at, pod.as_str(), rest));
        }
    }
    // Stable: one pod's lines keep their order when their times are equal.
    lines.sort_by_key(|(at, _, _)| *at);
    let start = lines.len().saturating_sub(n);
    lines[start..]
        .iter()
        .map(|(at, pod, text)| {
            format!(
                "{} {pod} | {}",
                rfc3339(*at),
                neutralise_within(text, MAX_LINE)
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(pod: &str, text: &str) -> (String, String) {
        (pod.to_owned(), text.to_owned())
    }

    #[test]
    fn merges_pods_by_time_and_keeps_the_last_lines() {
        let logs = [
            log(
                "fn-a",
                "2026-01-01T00:00:01.000000001Z one\n2026-01-01T00:00:03Z three\n",
            ),
            log(
                "fn-b",
                "2026-01-01T00:00:02Z two\n2026-01-01T00:00:04Z four\n",
            ),
        ];
        assert_eq!(
            merge(&logs, 3),
            [
                "2026-01-01T00:00:02.000Z fn-b | two",
                "2026-01-01T00:00:03.000Z fn-a | three",
                "2026-01-01T00:00:04.000Z fn-b | four",
            ]
        );
        assert_eq!(merge(&logs, 100).len(), 4);
        assert!(merge(&[], 10).is_empty());
    }

    #[test]
    fn text_is_neutralised_and_lines_without_a_time_keep_their_place() {
        let logs = [log(
            "p",
            "2026-01-01T00:00:01Z \u{1b}[2Jcleared\nno time here\n",
        )];
        assert_eq!(
            merge(&logs, 10),
            [
                "2026-01-01T00:00:01.000Z p | \\u{1b}[2Jcleared",
                "2026-01-01T00:00:01.000Z p | no time here",
            ]
        );
    }
}
