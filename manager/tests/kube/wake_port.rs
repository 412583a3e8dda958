//! The wake wiring in k8s/: the manager's wake port is declared on its
//! container, on the Service skiff-manager-wake and in what
//! SKIFF_K8S_WAKE_LISTEN binds; the routers' SKIFF_K8S_WAKE_URL names that
//! Service and port; no Ingress reaches it; only router pods may (a wake
//! starts a pod of a function).

use serde_json::Value;

use crate::manifests::{named, objects, one};

const MANAGER_YAML: &str =
    include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../k8s/manager.yaml"));
const ROUTER_YAML: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../k8s/router.yaml"));
const INGRESS_YAML: &str =
    include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../k8s/ingress.yaml"));
const POLICIES_YAML: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../k8s/network-policies.yaml"
));

fn container<'a>(objects: &'a [Value], deployment: &str, name: &str) -> &'a Value {
    let d = one(objects, "Deployment", deployment);
    named(&d["spec"]["template"]["spec"]["containers"], name).expect("the container")
}

#[test]
fn the_routers_reach_the_managers_wake_port_and_nobody_else_does() {
    let manager = objects(MANAGER_YAML);
    let c = container(&manager, "skiff-manager", "manager");
    let port = named(&c["ports"], "wake").expect("a container port named wake")["containerPort"]
        .as_u64()
        .unwrap();
    assert_eq!(
        named(&c["env"], "SKIFF_K8S_WAKE_LISTEN").unwrap()["value"],
        format!("0.0.0.0:{port}"),
        "the listener binds the declared port"
    );
    let service = one(&manager, "Service", "skiff-manager-wake");
    assert_eq!(
        service["spec"]["selector"]["app.kubernetes.io/name"],
        "skiff-manager"
    );
    let sp = named(&service["spec"]["ports"], "wake").expect("a Service port named wake");
    assert_eq!(sp["targetPort"], "wake");
    let service_port = sp["port"].as_u64().unwrap();
    // The manager's own Service does not carry it.
    let main = one(&manager, "Service", "skiff-manager");
    assert!(named(&main["spec"]["ports"], "wake").is_none());

    let router = objects(ROUTER_YAML);
    let r = container(&router, "skiff-router", "router");
    assert_eq!(
        named(&r["env"], "SKIFF_K8S_WAKE_URL").unwrap()["value"],
        format!("http://skiff-manager-wake.skiff.svc:{service_port}")
    );

    for ingress in objects(INGRESS_YAML)
        .iter()
        .filter(|o| o["kind"] == "Ingress")
    {
        assert!(
            !ingress.to_string().contains("skiff-manager-wake"),
            "{ingress}"
        );
    }
    let policies = objects(POLICIES_YAML);
    let policy = one(&policies, "NetworkPolicy", "skiff-manager");
    let to_wake: Vec<&Value> = policy["spec"]["ingress"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|rule| {
            rule["ports"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["port"].as_u64() == Some(port))
        })
        .collect();
    assert_eq!(to_wake.len(), 1, "one rule opens the wake port");
    let rule = to_wake[0];
    assert_eq!(rule["ports"].as_array().unwrap().len(), 1, "{rule}");
    assert_eq!(
        rule["from"],
        serde_json::json!([{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "skiff-router"}}}]),
        "router pods of this namespace only"
    );
}
