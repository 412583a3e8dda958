//! The monitoring wiring in k8s/: each service's metrics port is declared on
//! its container, its Service and its scrape annotations alike, and is what
//! SKIFF_METRICS_LISTEN binds; no Ingress reaches it and only the monitoring
//! namespace may; the optional ServiceMonitors select those Services' metrics
//! ports; the Grafana dashboard queries only metrics the services export.

use std::collections::BTreeSet;

// YAML read into JSON values: the manifests use only what JSON can hold.
use serde_json::Value;

use crate::manifests::{named, objects, one};
use skiff_manager::metrics::Metrics;

const MANAGER_YAML: &str =
    include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../k8s/manager.yaml"));
const ROUTER_YAML: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../k8s/router.yaml"));
const INGRESS_YAML: &str =
    include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../k8s/ingress.yaml"));
const POLICIES_YAML: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../k8s/network-policies.yaml"
));
const MONITORS_YAML: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../k8s/components/servicemonitor/servicemonitors.yaml"
));
const COMPONENT_YAML: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../k8s/components/servicemonitor/kustomization.yaml"
));
const DASHBOARD: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../k8s/grafana/skiff-dashboard.json"
));

/// The router's metric families (SPEC "Metrics", and router/src/metrics).
const ROUTER_FAMILIES: &[&str] = &[
    "skiff_requests_total",
    "skiff_request_duration_seconds",
    "skiff_cold_starts_total",
    "skiff_cold_start_duration_seconds",
    "skiff_instances",
    "skiff_instance_start_failures_total",
    "skiff_refusals_total",
    "skiff_request_bytes_total",
    "skiff_response_bytes_total",
    "skiff_in_flight_requests",
    "skiff_unmatched_requests_total",
];

/// The service's metrics port, checked to agree everywhere in its manifest.
fn metrics_port(yaml: &str, name: &str, container: &str) -> u64 {
    let objects = objects(yaml);
    let deployment = one(&objects, "Deployment", name);
    let pod = &deployment["spec"]["template"];
    let c = named(&pod["spec"]["containers"], container).expect("the container");
    let port =
        named(&c["ports"], "metrics").expect("a container port named metrics")["containerPort"]
            .as_u64()
            .unwrap();
    assert_eq!(
        named(&c["env"], "SKIFF_METRICS_LISTEN").unwrap()["value"],
        format!("0.0.0.0:{port}"),
        "{name}: the listener binds the declared port"
    );
    let annotations = &pod["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"], "true", "{name}");
    assert_eq!(
        annotations["prometheus.io/port"],
        port.to_string(),
        "{name}"
    );
    assert_eq!(annotations["prometheus.io/path"], "/metrics", "{name}");
    let service = one(&objects, "Service", name);
    let sp = named(&service["spec"]["ports"], "metrics").expect("a Service port named metrics");
    assert_eq!(sp["port"].as_u64(), Some(port), "{name}");
    assert_eq!(sp["targetPort"], "metrics", "{name}");
    port
}

#[test]
fn each_service_declares_its_metrics_port_once_everywhere() {
    assert_eq!(metrics_port(MANAGER_YAML, "skiff-manager", "manager"), 9465);
    assert_eq!(metrics_port(ROUTER_YAML, "skiff-router", "router"), 9464);
}

#[test]
fn no_ingress_reaches_a_metrics_port_and_only_monitoring_may() {
    let metrics = [9464, 9465];
    for ingress in objects(INGRESS_YAML)
        .iter()
        .filter(|o| o["kind"] == "Ingress")
    {
        for rule in ingress["spec"]["rules"].as_array().unwrap() {
            for path in rule["http"]["paths"].as_array().unwrap() {
                let port = &path["backend"]["service"]["port"];
                assert_eq!(port["name"], "http", "{path}");
                assert!(port.get("number").is_none(), "{path}");
            }
        }
    }
    let policies = objects(POLICIES_YAML);
    for name in ["skiff-manager", "skiff-router"] {
        let policy = one(&policies, "NetworkPolicy", name);
        for rule in policy["spec"]["ingress"].as_array().unwrap() {
            let ports: Vec<u64> = rule["ports"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["port"].as_u64().unwrap())
                .collect();
            // A namespace by name, or pods by their app name (the routers,
            // on the manager's wake port: wake_port.rs).
            let from: Vec<&str> = rule["from"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| {
                    f["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
                        .as_str()
                        .or_else(|| {
                            f["podSelector"]["matchLabels"]["app.kubernetes.io/name"].as_str()
                        })
                        .unwrap()
                })
                .collect();
            let to_metrics = ports.iter().any(|p| metrics.contains(p));
            assert!(
                !to_metrics || (from == ["monitoring"] && ports.len() == 1),
                "{name}: a metrics port is open to {from:?}"
            );
        }
    }
}

#[test]
fn the_service_monitors_select_the_services_metrics_ports() {
    let component = &objects(COMPONENT_YAML)[0];
    assert_eq!(component["kind"], "Component");
    assert_eq!(
        component["resources"],
        serde_json::json!(["servicemonitors.yaml"])
    );
    let services: Vec<Value> = [MANAGER_YAML, ROUTER_YAML]
        .iter()
        .flat_map(|y| objects(y))
        .filter(|o| o["kind"] == "Service")
        .collect();
    let monitors = objects(MONITORS_YAML);
    assert_eq!(monitors.len(), 2);
    for m in &monitors {
        assert_eq!(m["apiVersion"], "monitoring.coreos.com/v1");
        assert_eq!(m["kind"], "ServiceMonitor");
        let namespace = &m["metadata"]["namespace"];
        assert_eq!(m["spec"]["namespaceSelector"]["matchNames"][0], *namespace);
        let wanted = m["spec"]["selector"]["matchLabels"].as_object().unwrap();
        let selected: Vec<&Value> = services
            .iter()
            .filter(|s| {
                s["metadata"]["namespace"] == *namespace
                    && wanted
                        .iter()
                        .all(|(k, v)| s["metadata"]["labels"][k.as_str()] == *v)
            })
            .collect();
        assert_eq!(selected.len(), 1, "{m}");
        for endpoint in m["spec"]["endpoints"].as_array().unwrap() {
            assert_eq!(endpoint["port"], "metrics");
            assert_eq!(endpoint["path"], "/metrics");
            assert!(named(&selected[0]["spec"]["ports"], "metrics").is_some());
        }
    }
}

/// Every family name a scrape of the services shows, with a histogram's
/// `_bucket`, `_sum` and `_count` series.
fn exported() -> BTreeSet<String> {
    let manager = Metrics::new(true).encode_text();
    let families = manager
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|t| t.split(' ').next().unwrap().to_owned())
        .chain(ROUTER_FAMILIES.iter().map(|s| (*s).to_owned()));
    families
        .flat_map(|f| {
            ["", "_bucket", "_sum", "_count"]
                .into_iter()
                .map(move |s| format!("{f}{s}"))
        })
        .collect()
}

#[test]
fn the_dashboard_queries_only_exported_metrics_and_has_the_expected_panels() {
    let dashboard: Value = serde_json::from_str(DASHBOARD).unwrap();
    let panels = dashboard["panels"].as_array().unwrap();
    let exported = exported();
    let mut queried = BTreeSet::new();
    for p in panels.iter().filter(|p| p["type"] != "row") {
        for t in p["targets"].as_array().unwrap() {
            let expr = t["expr"].as_str().unwrap();
            let mut rest = expr;
            while let Some(at) = rest.find("skiff_") {
                let name: String = rest[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                    .collect();
                assert!(
                    exported.contains(&name),
                    "panel {:?} queries {name}, which no service exports",
                    p["title"]
                );
                queried.insert(name.clone());
                rest = &rest[at + name.len()..];
            }
        }
    }
    let titles: Vec<String> = panels
        .iter()
        .map(|p| p["title"].as_str().unwrap().to_lowercase())
        .collect();
    for wanted in [
        "requests",
        "errors",
        "latency",
        "cold starts",
        "instances",
        "deploys",
    ] {
        assert!(
            titles.iter().any(|t| t.contains(wanted)),
            "no panel about {wanted}: {titles:?}"
        );
    }
    for spec in [
        "skiff_requests_total",
        "skiff_request_duration_seconds_bucket",
        "skiff_cold_starts_total",
        "skiff_cold_start_duration_seconds_bucket",
        "skiff_instances",
        "skiff_deploys_total",
        "skiff_deploy_duration_seconds_bucket",
    ] {
        assert!(queried.contains(spec), "the dashboard does not use {spec}");
    }
}
