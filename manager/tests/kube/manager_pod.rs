//! The manager's own pod (k8s/manager.yaml): deploy-time checks run in a
//! container of their own, as another uid, and nothing of the manager's
//! secrets, service-account token or processes reaches that container.

// YAML read into JSON values: the manifests use only what JSON can hold.
use serde_json::Value;

const MANAGER_YAML: &str =
    include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../k8s/manager.yaml"));

fn deployment() -> Value {
    serde_saphyr::from_multiple::<Value>(MANAGER_YAML)
        .unwrap()
        .into_iter()
        .find(|v| v["kind"] == "Deployment")
        .expect("a Deployment in k8s/manager.yaml")
}

fn container<'a>(pod: &'a Value, name: &str) -> &'a Value {
    pod["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}

fn mounts(c: &Value) -> Vec<(String, String)> {
    c["volumeMounts"]
        .as_array()
        .map(|m| {
            m.iter()
                .map(|m| {
                    (
                        m["name"].as_str().unwrap().to_owned(),
                        m["mountPath"].as_str().unwrap().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn env<'a>(c: &'a Value, name: &str) -> Option<&'a Value> {
    c["env"].as_array()?.iter().find(|e| e["name"] == name)
}

#[test]
fn checks_run_in_their_own_container_as_another_uid_without_the_managers_secrets() {
    let d = deployment();
    let pod = &d["spec"]["template"]["spec"];
    let manager = container(pod, "manager");
    let checker = container(pod, "checker");

    let uid = |c: &Value| c["securityContext"]["runAsUser"].as_i64().unwrap();
    assert_ne!(
        uid(manager),
        uid(checker),
        "the checker must not be the manager's uid"
    );
    assert!(uid(checker) > 0);
    assert_eq!(
        checker["securityContext"]["runAsNonRoot"],
        Value::Bool(true)
    );
    assert_eq!(
        checker["securityContext"]["allowPrivilegeEscalation"],
        Value::Bool(false)
    );

    // No secret of any kind in the checker's environment.
    assert!(checker["envFrom"].is_null());
    for e in checker["env"].as_array().unwrap() {
        assert!(
            e["valueFrom"].is_null(),
            "checker env from a reference: {e:?}"
        );
        let name = e["name"].as_str().unwrap();
        assert!(
            ![
                "SKIFF_JWT_SECRET",
                "SKIFF_DATABASE_URL",
                "SKIFF_SECRETS_KEY"
            ]
            .contains(&name),
            "{name} in the checker"
        );
    }
    // The manager has them, and points at the checker's socket.
    assert!(env(manager, "SKIFF_JWT_SECRET").is_some());
    // The secrets key comes from the generated Secret, never from the manifest.
    let key = env(manager, "SKIFF_SECRETS_KEY").unwrap();
    assert!(key["value"].is_null());
    assert_eq!(key["valueFrom"]["secretKeyRef"]["key"], "SKIFF_SECRETS_KEY");
    let socket = env(manager, "SKIFF_CHECKER_SOCKET").unwrap()["value"]
        .as_str()
        .unwrap();
    let args: Vec<&str> = checker["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(args, ["checker", "--listen", socket]);

    // The token is mounted into the manager only; no shared process namespace.
    assert_eq!(pod["automountServiceAccountToken"], Value::Bool(false));
    assert!(
        pod["shareProcessNamespace"].is_null()
            || pod["shareProcessNamespace"] == Value::Bool(false)
    );
    let token_path = "/var/run/secrets/kubernetes.io/serviceaccount";
    assert!(mounts(manager).iter().any(|(_, p)| p == token_path));
    assert!(mounts(checker).iter().all(|(_, p)| p != token_path));

    // The only volume the two share is the socket's directory.
    let m: Vec<String> = mounts(manager).into_iter().map(|(n, _)| n).collect();
    let shared: Vec<(String, String)> = mounts(checker)
        .into_iter()
        .filter(|(n, _)| m.contains(n))
        .collect();
    let socket_dir = std::path::Path::new(socket)
        .parent()
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(shared.len(), 1, "{shared:?}");
    assert_eq!(shared[0].1, socket_dir);
}
