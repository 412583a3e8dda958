//! The function's Service: a stable ClusterIP name the router connects to
//! (`skiff_core::naming::service_host`), of both IP families where the
//! cluster has both.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use skiff_core::naming::SERVICE_PORT;

use super::{FunctionSpec, common_metadata};
use crate::kube::labels;
use crate::kube::settings::KubeSettings;

pub fn service(settings: &KubeSettings, spec: &FunctionSpec<'_>) -> Service {
    Service {
        metadata: common_metadata(settings, spec),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            // A ClusterIP of each family the cluster has (one on a
            // single-stack cluster): the runtime listens on both.
            ip_family_policy: Some("PreferDualStack".into()),
            selector: Some(labels::pod_selector(spec.user, spec.function)),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                protocol: Some("TCP".into()),
                port: i32::from(SERVICE_PORT),
                target_port: Some(IntOrString::String("http".into())),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::objects::test_support::spec;

    #[test]
    fn selects_the_function_pods_on_the_service_port() {
        let s = service(&KubeSettings::default(), &spec());
        assert_eq!(
            s.metadata.name.as_deref(),
            Some(skiff_core::naming::object_name("alice", "hello").as_str())
        );
        let spec = s.spec.unwrap();
        assert_eq!(spec.selector, Some(labels::pod_selector("alice", "hello")));
        let port = &spec.ports.unwrap()[0];
        assert_eq!(port.port, 80);
        assert_eq!(port.target_port, Some(IntOrString::String("http".into())));
        assert_eq!(spec.ip_family_policy.as_deref(), Some("PreferDualStack"));
    }
}
