//! The Prometheus text exposition of [`Metrics`], through prometheus-client's
//! encoder (a `Collector` reads the atomics at each scrape).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::histogram::Snapshot;
use super::{FIRST_STATUS, Metrics, Refusal, Series, WakeOutcome};

pub use prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

type Fmt = Result<(), std::fmt::Error>;

/// Reads a router's metrics at each scrape (for a registry of one's own, e.g.
/// `skiff dev` serving both services' metrics on one address).
#[derive(Clone)]
pub struct MetricsCollector(pub Arc<Metrics>);

impl std::fmt::Debug for MetricsCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MetricsCollector")
    }
}

impl Collector for MetricsCollector {
    fn encode(&self, encoder: DescriptorEncoder) -> Fmt {
        write_all(&Rendered::of(&self.0), encoder)
    }
}

pub(super) fn render(m: &Metrics) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Rendered::of(m)));
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry);
    out
}

/// What a scrape reads, taken once.
struct Rendered {
    series: Vec<Arc<Series>>,
    cold_start: Snapshot,
    instances: Option<super::InstanceCounts>,
    unmatched: u64,
    access_log_dropped: u64,
    stats_flush_failures: u64,
    wakes: [u64; WakeOutcome::ALL.len()],
}

impl std::fmt::Debug for Rendered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Rendered")
    }
}

impl Rendered {
    fn of(m: &Metrics) -> Self {
        Self {
            series: m.all_series(),
            cold_start: m.cold_start_duration.snapshot(),
            instances: m.instances.get().and_then(|f| f()),
            unmatched: m.unmatched.load(Ordering::Relaxed),
            access_log_dropped: m.access_log_dropped.load(Ordering::Relaxed),
            stats_flush_failures: m.stats_flush_failures.load(Ordering::Relaxed),
            wakes: std::array::from_fn(|i| m.wakes[i].load(Ordering::Relaxed)),
        }
    }
}

impl Collector for Rendered {
    fn encode(&self, encoder: DescriptorEncoder) -> Fmt {
        write_all(self, encoder)
    }
}

/// Whether the shared series of functions over the cap has seen anything
/// (it is left out until then).
fn active(s: &Series) -> bool {
    s.statuses.iter().any(|c| c.load(Ordering::Relaxed) > 0)
        || s.in_flight.load(Ordering::Relaxed) != 0
        || s.start_failures.load(Ordering::Relaxed) > 0
}

fn write_all(r: &Rendered, mut enc: DescriptorEncoder) -> Fmt {
    let series: Vec<&Series> = r
        .series
        .iter()
        .map(|s| s.as_ref())
        .filter(|s| s.user != super::OTHER || s.function != super::OTHER || active(s))
        .collect();
    let fn_labels = |s: &Series| [("user", s.user.clone()), ("function", s.function.clone())];

    {
        let mut m = enc.encode_descriptor(
            "skiff_requests",
            "Requests answered for a function, by status code (the router's own refusals included).",
            None,
            MetricType::Counter,
        )?;
        for s in &series {
            for (i, c) in s.statuses.iter().enumerate() {
                let n = c.load(Ordering::Relaxed);
                if n == 0 {
                    continue;
                }
                let status = (usize::from(FIRST_STATUS) + i).to_string();
                let labels = [
                    ("user", s.user.as_str()),
                    ("function", s.function.as_str()),
                    ("status", status.as_str()),
                ];
                m.encode_family(&labels)?
                    .encode_counter::<NoLabelSet, u64, u64>(&n, None)?;
            }
        }
    }
    {
        let mut m = enc.encode_descriptor(
            "skiff_request_duration_seconds",
            "Time from a request's arrival to its response head (queueing and cold starts included).",
            None,
            MetricType::Histogram,
        )?;
        for s in &series {
            let h = s.duration.snapshot();
            m.encode_family(&fn_labels(s))?
                .encode_histogram::<NoLabelSet>(h.sum_secs, h.count, &h.buckets, None)?;
        }
    }
    counter_per_function(
        &mut enc,
        &series,
        "skiff_cold_starts",
        "Requests that waited for an instance of their function to start.",
        |s| s.cold_starts.load(Ordering::Relaxed),
    )?;
    {
        let h = &r.cold_start;
        let mut m = enc.encode_descriptor(
            "skiff_cold_start_duration_seconds",
            "How long requests that paid a cold start waited for the instance.",
            None,
            MetricType::Histogram,
        )?;
        m.encode_histogram::<NoLabelSet>(h.sum_secs, h.count, &h.buckets, None)?;
    }
    if let Some(c) = r.instances {
        let mut m = enc.encode_descriptor(
            "skiff_instances",
            "Function instances on this router, by state.",
            None,
            MetricType::Gauge,
        )?;
        for (state, n) in [
            ("starting", c.starting),
            ("ready", c.ready),
            ("draining", c.draining),
        ] {
            m.encode_family(&[("state", state)])?.encode_gauge(&n)?;
        }
    }
    counter_per_function(
        &mut enc,
        &series,
        "skiff_instance_start_failures",
        "Instance starts that failed.",
        |s| s.start_failures.load(Ordering::Relaxed),
    )?;
    {
        let mut m = enc.encode_descriptor(
            "skiff_refusals",
            "Requests the router answered itself instead of the function, by reason.",
            None,
            MetricType::Counter,
        )?;
        for s in &series {
            for r in Refusal::ALL {
                let n = s.refusals[r.index()].load(Ordering::Relaxed);
                if n == 0 {
                    continue;
                }
                let labels = [
                    ("user", s.user.as_str()),
                    ("function", s.function.as_str()),
                    ("reason", r.as_str()),
                ];
                m.encode_family(&labels)?
                    .encode_counter::<NoLabelSet, u64, u64>(&n, None)?;
            }
        }
    }
    counter_per_function(
        &mut enc,
        &series,
        "skiff_request_bytes",
        "Request body bytes passed to functions.",
        |s| s.bytes_in.load(Ordering::Relaxed),
    )?;
    counter_per_function(
        &mut enc,
        &series,
        "skiff_response_bytes",
        "Response body bytes passed back from functions.",
        |s| s.bytes_out.load(Ordering::Relaxed),
    )?;
    {
        let mut m = enc.encode_descriptor(
            "skiff_in_flight_requests",
            "Requests being served (open WebSocket connections included).",
            None,
            MetricType::Gauge,
        )?;
        for s in &series {
            let n = s.in_flight.load(Ordering::Relaxed);
            m.encode_family(&fn_labels(s))?.encode_gauge(&n)?;
        }
    }
    for (name, help, n) in [
        (
            "skiff_unmatched_requests",
            "Requests for no known function (404).",
            r.unmatched,
        ),
        (
            "skiff_access_log_dropped_lines",
            "Access log lines dropped because the writer fell behind.",
            r.access_log_dropped,
        ),
        (
            "skiff_stats_flush_failures",
            "Failed writes of the per-minute statistics to the database.",
            r.stats_flush_failures,
        ),
    ] {
        enc.encode_descriptor(name, help, None, MetricType::Counter)?
            .encode_counter::<NoLabelSet, u64, u64>(&n, None)?;
    }
    if r.wakes.iter().any(|&n| n > 0) {
        let mut m = enc.encode_descriptor(
            "skiff_wakes",
            "Calls to the manager's wake endpoint for a function scaled to zero, by outcome.",
            None,
            MetricType::Counter,
        )?;
        for o in WakeOutcome::ALL {
            let n = r.wakes[o.index()];
            m.encode_family(&[("outcome", o.as_str())])?
                .encode_counter::<NoLabelSet, u64, u64>(&n, None)?;
        }
    }
    {
        let own = r
            .series
            .iter()
            .filter(|s| s.user != super::OTHER || s.function != super::OTHER)
            .count();
        enc.encode_descriptor(
            "skiff_metrics_functions",
            "Functions with series of their own (the rest are counted as user=\"other\").",
            None,
            MetricType::Gauge,
        )?
        .encode_gauge(&(own as u64))?;
    }
    Ok(())
}

fn counter_per_function(
    enc: &mut DescriptorEncoder,
    series: &[&Series],
    name: &str,
    help: &str,
    value: impl Fn(&Series) -> u64,
) -> Fmt {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for s in series {
        let labels = [("user", s.user.as_str()), ("function", s.function.as_str())];
        m.encode_family(&labels)?
            .encode_counter::<NoLabelSet, u64, u64>(&value(s), None)?;
    }
    Ok(())
}
