//! The function's NetworkPolicy: in, only the router's pods on the service
//! port; out, DNS and the internet, never the cluster, private ranges or
//! cloud metadata (169.254.169.254). The kernel-level twin of the Deno
//! `--deny-net` list (`kube::deny_net`), and the only fence for IPv6 ranges.

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use skiff_core::naming::CONTAINER_PORT;

use super::{FunctionSpec, common_metadata};
use crate::kube::labels::{self, Labels};
use crate::kube::settings::KubeSettings;

/// IPv4 ranges a function may not reach: private (RFC 1918), carrier-grade
/// NAT (some clusters' pod ranges), link-local (cloud metadata), loopback and
/// "this network".
pub const PRIVATE_V4: &[&str] = &[
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "169.254.0.0/16",
    "127.0.0.0/8",
    "0.0.0.0/8",
];
/// IPv6 ranges a function may not reach: unique-local, link-local, loopback
/// and IPv4-mapped addresses (which would reach the IPv4 ranges above).
pub const PRIVATE_V6: &[&str] = &["fc00::/7", "fe80::/10", "::1/128", "::ffff:0:0/96"];

/// Label every namespace carries with its own name (Kubernetes ≥ 1.21).
const NAMESPACE_NAME: &str = "kubernetes.io/metadata.name";

fn selector(labels: Labels) -> Option<LabelSelector> {
    Some(LabelSelector {
        match_labels: Some(labels),
        ..LabelSelector::default()
    })
}

fn namespace(name: &str) -> Option<LabelSelector> {
    selector(BTreeMap::from([(
        NAMESPACE_NAME.to_owned(),
        name.to_owned(),
    )]))
}

fn port(protocol: &str, port: i32) -> NetworkPolicyPort {
    NetworkPolicyPort {
        protocol: Some(protocol.into()),
        port: Some(IntOrString::Int(port)),
        ..NetworkPolicyPort::default()
    }
}

fn everything_but(cidr: &str, except: &[&str]) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        ip_block: Some(IPBlock {
            cidr: cidr.into(),
            except: Some(except.iter().map(|s| (*s).to_owned()).collect()),
        }),
        ..NetworkPolicyPeer::default()
    }
}

pub fn network_policy(settings: &KubeSettings, spec: &FunctionSpec<'_>) -> NetworkPolicy {
    let from_router = NetworkPolicyIngressRule {
        from: Some(vec![NetworkPolicyPeer {
            namespace_selector: namespace(&settings.router_namespace),
            pod_selector: selector(labels::router_pods()),
            ..NetworkPolicyPeer::default()
        }]),
        ports: Some(vec![port("TCP", i32::from(CONTAINER_PORT))]),
    };
    let dns = NetworkPolicyEgressRule {
        to: Some(vec![NetworkPolicyPeer {
            namespace_selector: namespace("kube-system"),
            pod_selector: selector(BTreeMap::from([(
                "k8s-app".to_owned(),
                "kube-dns".to_owned(),
            )])),
            ..NetworkPolicyPeer::default()
        }]),
        ports: Some(vec![port("UDP", 53), port("TCP", 53)]),
    };
    let internet = NetworkPolicyEgressRule {
        to: Some(vec![
            everything_but("0.0.0.0/0", PRIVATE_V4),
            everything_but("::/0", PRIVATE_V6),
        ]),
        ports: None,
    };
    NetworkPolicy {
        metadata: common_metadata(settings, spec),
        spec: Some(NetworkPolicySpec {
            pod_selector: selector(labels::pod_selector(spec.user, spec.function)),
            policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
            ingress: Some(vec![from_router]),
            egress: Some(vec![dns, internet]),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::objects::test_support::spec;

    #[test]
    fn fences_exactly_this_function_both_ways() {
        let np = network_policy(&KubeSettings::default(), &spec())
            .spec
            .unwrap();
        assert_eq!(
            np.pod_selector.unwrap().match_labels,
            Some(labels::pod_selector("alice", "hello"))
        );
        assert_eq!(
            np.policy_types,
            Some(vec!["Ingress".to_owned(), "Egress".to_owned()])
        );
    }

    #[test]
    fn lets_in_only_router_pods_from_the_router_namespace() {
        let settings = KubeSettings {
            router_namespace: "platform".into(),
            ..KubeSettings::default()
        };
        let ingress = network_policy(&settings, &spec())
            .spec
            .unwrap()
            .ingress
            .unwrap();
        assert_eq!(ingress.len(), 1);
        let peers = ingress[0].from.clone().unwrap();
        assert_eq!(peers.len(), 1);
        let peer = &peers[0];
        // Both selectors in ONE peer: router pods AND in the router namespace.
        assert_eq!(
            peer.namespace_selector
                .clone()
                .unwrap()
                .match_labels
                .unwrap()[NAMESPACE_NAME],
            "platform"
        );
        assert_eq!(
            peer.pod_selector.clone().unwrap().match_labels,
            Some(labels::router_pods())
        );
        assert!(peer.ip_block.is_none());
        assert_eq!(
            ingress[0].ports.clone().unwrap()[0].port,
            Some(IntOrString::Int(8080))
        );
    }

    #[test]
    fn lets_out_dns_and_the_internet_but_no_private_range() {
        let egress = network_policy(&KubeSettings::default(), &spec())
            .spec
            .unwrap()
            .egress
            .unwrap();
        assert_eq!(egress.len(), 2);
        let dns = &egress[0];
        let ports: Vec<_> = dns
            .ports
            .clone()
            .unwrap()
            .into_iter()
            .map(|p| p.port)
            .collect();
        assert_eq!(
            ports,
            [Some(IntOrString::Int(53)), Some(IntOrString::Int(53))]
        );
        let blocks: Vec<IPBlock> = egress[1]
            .to
            .clone()
            .unwrap()
            .into_iter()
            .map(|p| p.ip_block.unwrap())
            .collect();
        assert_eq!(blocks[0].cidr, "0.0.0.0/0");
        let v4 = blocks[0].except.clone().unwrap();
        for must in [
            "10.0.0.0/8",
            "172.16.0.0/12",
            "192.168.0.0/16",
            "169.254.0.0/16",
        ] {
            assert!(v4.iter().any(|c| c == must), "{must}");
        }
        assert_eq!(blocks[1].cidr, "::/0");
        assert!(
            blocks[1]
                .except
                .clone()
                .unwrap()
                .iter()
                .any(|c| c == "fc00::/7")
        );
    }
}
