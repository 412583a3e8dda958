//! `skiff stats NAME`: a function's calls, errors, cold starts and latency
//! percentiles over a window, with a per-minute chart drawn in the terminal.

use serde_json::Value;

/// Eight heights of a bar, lowest first.
const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
/// Columns the chart may take; a longer series is summed into buckets.
const WIDTH: usize = 60;

/// The human form of a `GET /func/<name>/stats` answer.
pub fn render(name: &str, window: &str, v: &Value) -> String {
    let n = |k: &str| v[k].as_u64().unwrap_or(0);
    let ms = |k: &str| match v[k].as_f64() {
        Some(x) => format!("{x:.1} ms"),
        None => "–".into(),
    };
    let series: Vec<(u64, u64)> = v["series"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|p| {
                    (
                        p["invocations"].as_u64().unwrap_or(0),
                        p["errors"].as_u64().unwrap_or(0),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let (calls, errors) = chart(&series);
    let per = series.len().div_ceil(WIDTH).max(1);
    format!(
        "{name}, last {window}\n\
         invocations  {}\n\
         errors       {}\n\
         cold starts  {}\n\
         latency      p50 {}  p95 {}  p99 {}\n\
         calls        {calls}\n\
         errors       {errors}\n\
         {}",
        n("invocations"),
        n("errors"),
        n("cold_starts"),
        ms("p50_ms"),
        ms("p95_ms"),
        ms("p99_ms"),
        if per == 1 {
            "(one column per minute, oldest on the left)".to_owned()
        } else {
            format!("(one column per {per} minutes, oldest on the left)")
        }
    )
}

/// Two sparklines on one scale (errors are never taller than calls), one
/// column per minute or per group of minutes.
fn chart(series: &[(u64, u64)]) -> (String, String) {
    let per = series.len().div_ceil(WIDTH).max(1);
    let cols: Vec<(u64, u64)> = series
        .chunks(per)
        .map(|c| c.iter().fold((0, 0), |(a, b), (x, y)| (a + x, b + y)))
        .collect();
    let top = cols.iter().map(|c| c.0.max(c.1)).max().unwrap_or(0);
    let bar = |x: u64| {
        if x == 0 {
            ' '
        } else {
            // 1..=top onto the eight heights; any call shows at least the lowest.
            let i = ((x * 8).div_ceil(top.max(1))).clamp(1, 8) - 1;
            BARS[i as usize]
        }
    };
    (
        cols.iter().map(|c| bar(c.0)).collect(),
        cols.iter().map(|c| bar(c.1)).collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_chart_scales_to_the_busiest_minute_and_keeps_quiet_ones_blank() {
        let (calls, errors) = chart(&[(0, 0), (8, 0), (4, 4), (1, 0)]);
        assert_eq!(calls, " █▄▁");
        assert_eq!(errors, "  ▄ ");
    }

    #[test]
    fn a_long_series_is_summed_into_at_most_sixty_columns() {
        let series = vec![(1, 0); 1440];
        let (calls, _) = chart(&series);
        assert_eq!(calls.chars().count(), 60);
    }

    #[test]
    fn the_summary_shows_the_figures_and_a_dash_for_no_latency() {
        let v = json!({"invocations": 12, "errors": 2, "cold_starts": 1, "p50_ms": 3.25,
            "p95_ms": null, "p99_ms": null, "series": [{"t": 0, "invocations": 12, "errors": 2}]});
        let out = render("hello", "1h", &v);
        assert!(out.contains("invocations  12"), "{out}");
        assert!(out.contains("p50 3.2 ms  p95 –"), "{out}");
        assert!(out.contains("calls        █"), "{out}");
    }
}
