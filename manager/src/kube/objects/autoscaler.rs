//! The function's autoscaling/v2 HorizontalPodAutoscaler. It owns the
//! Deployment's replica count, which is why the Deployment never sets one.
//! Its bounds are the function's min/max instances when it set them, else
//! `SKIFF_K8S_MIN_REPLICAS`/`SKIFF_K8S_MAX_REPLICAS`.

use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec, MetricSpec,
    MetricTarget, ResourceMetricSource,
};
use skiff_core::naming::object_name;

use super::{FunctionSpec, common_metadata};
use crate::kube::settings::KubeSettings;

pub fn autoscaler(settings: &KubeSettings, spec: &FunctionSpec<'_>) -> HorizontalPodAutoscaler {
    let shape = spec.config.shape(settings);
    HorizontalPodAutoscaler {
        metadata: common_metadata(settings, spec),
        spec: Some(HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some("apps/v1".into()),
                kind: "Deployment".into(),
                name: object_name(spec.user, spec.function),
            },
            min_replicas: Some(shape.min_replicas),
            max_replicas: shape.max_replicas,
            metrics: Some(vec![MetricSpec {
                type_: "Resource".into(),
                resource: Some(ResourceMetricSource {
                    name: "cpu".into(),
                    target: MetricTarget {
                        type_: "Utilization".into(),
                        average_utilization: Some(settings.cpu_target_percent),
                        ..MetricTarget::default()
                    },
                }),
                ..MetricSpec::default()
            }]),
            ..HorizontalPodAutoscalerSpec::default()
        }),
        ..HorizontalPodAutoscaler::default()
    }
}

#[cfg(test)]
mod tests {
    use skiff_core::fnconfig::FunctionSettings;

    use super::*;
    use crate::kube::objects::test_support::{configured_with, spec};

    #[test]
    fn the_function_instances_bound_the_autoscaler() {
        let config = configured_with(
            FunctionSettings {
                min_instances: Some(3),
                max_instances: Some(6),
                ..FunctionSettings::default()
            },
            b"x",
        );
        let s = FunctionSpec {
            config: &config,
            ..spec()
        };
        let hpa = autoscaler(&KubeSettings::default(), &s).spec.unwrap();
        assert_eq!((hpa.min_replicas, hpa.max_replicas), (Some(3), 6));
        // min_instances 0 cannot scale a Deployment to zero: one stays.
        let zero = configured_with(
            FunctionSettings {
                min_instances: Some(0),
                max_instances: Some(2),
                ..FunctionSettings::default()
            },
            b"x",
        );
        let s = FunctionSpec {
            config: &zero,
            ..spec()
        };
        let hpa = autoscaler(&KubeSettings::default(), &s).spec.unwrap();
        assert_eq!((hpa.min_replicas, hpa.max_replicas), (Some(1), 2));
    }

    #[test]
    fn scales_the_deployment_on_cpu_within_the_configured_bounds() {
        let settings = KubeSettings {
            min_replicas: 2,
            max_replicas: 9,
            cpu_target_percent: 60,
            ..KubeSettings::default()
        };
        let hpa = autoscaler(&settings, &spec()).spec.unwrap();
        assert_eq!(hpa.scale_target_ref.kind, "Deployment");
        assert_eq!(hpa.scale_target_ref.name, object_name("alice", "hello"));
        assert_eq!((hpa.min_replicas, hpa.max_replicas), (Some(2), 9));
        let metric = &hpa.metrics.unwrap()[0];
        let target = &metric.resource.as_ref().unwrap().target;
        assert_eq!(metric.resource.as_ref().unwrap().name, "cpu");
        assert_eq!(
            (target.type_.as_str(), target.average_utilization),
            ("Utilization", Some(60))
        );
    }
}
