//! NetworkPolicies isolating each instance: every pod of the instance denies all traffic but
//! DNS, and one policy per component opens exactly the flows the stack needs.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde_json::{Value, json};

use super::stack::{HTTP_PORT, PGBOUNCER_PORT, POSTGRES_PORT, REDIS_PORT};
use super::{Component, Instance, typed};
use crate::crd::{Exposure, HttpRouteSpec};
use crate::error::Result;

/// Where cluster DNS runs (kube-dns or CoreDNS keep this label for compatibility).
fn dns_peer() -> Value {
    json!({
        "namespaceSelector": { "matchLabels": { "kubernetes.io/metadata.name": "kube-system" } },
        "podSelector": { "matchLabels": { "k8s-app": "kube-dns" } },
    })
}

fn tcp(port: i32) -> Value {
    json!({ "protocol": "TCP", "port": port })
}

fn pods(instance: &Instance<'_>, component: Component) -> Value {
    json!({ "podSelector": { "matchLabels": instance.selector_labels(component) } })
}

fn namespaces(labels: &BTreeMap<String, String>) -> Value {
    json!({ "namespaceSelector": { "matchLabels": labels } })
}

/// The namespaces of the route's Gateways, where most implementations run a Gateway's proxies
/// (the default of `networkPolicy.gatewayNamespaceSelector`).
fn gateway_namespaces(instance: &Instance<'_>, route: &HttpRouteSpec) -> Value {
    let names: BTreeSet<&str> = route
        .parent_refs
        .iter()
        .map(|parent| parent.namespace.as_deref().unwrap_or(&instance.namespace))
        .collect();
    json!({ "namespaceSelector": { "matchExpressions": [{
        "key": "kubernetes.io/metadata.name",
        "operator": "In",
        "values": names,
    }] } })
}

fn policy(
    instance: &Instance<'_>,
    name: String,
    component: Component,
    selector: BTreeMap<String, String>,
    ingress: Vec<Value>,
    egress: Vec<Value>,
) -> Result<NetworkPolicy> {
    let mut spec = json!({
        "podSelector": { "matchLabels": selector },
        "policyTypes": ["Ingress", "Egress"],
    });
    // No rules is written as no list at all: the API server stores an empty list as absent,
    // and applying `[]` over that would count as a change on every pass.
    if !ingress.is_empty() {
        spec["ingress"] = json!(ingress);
    }
    if !egress.is_empty() {
        spec["egress"] = json!(egress);
    }
    typed(
        "NetworkPolicy",
        json!({
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": instance.meta(name, component),
            "spec": spec,
        }),
    )
}

/// The policy of one component's pods, named like the component's other children.
fn component_policy(
    instance: &Instance<'_>,
    component: Component,
    ingress: Vec<Value>,
    egress: Vec<Value>,
) -> Result<NetworkPolicy> {
    let name = instance.child_name(component);
    let selector = instance.selector_labels(component);
    policy(instance, name, component, selector, ingress, egress)
}

/// One rule: from (or to) these components' pods, on one TCP port.
fn between(instance: &Instance<'_>, direction: &str, peers: &[Component], port: i32) -> Value {
    let peers: Vec<Value> = peers.iter().map(|c| pods(instance, *c)).collect();
    json!({ direction: peers, "ports": [tcp(port)] })
}

/// Every policy of the instance, or none when `spec.networkPolicy.enabled` is false.
pub fn policies(instance: &Instance<'_>) -> Result<Vec<NetworkPolicy>> {
    let spec = instance.spec();
    if !spec.network_policy.enabled {
        return Ok(Vec::new());
    }
    let mut all = Vec::new();

    // Default deny for every pod of the instance; DNS is the only flow all of them need.
    let mut instance_pods = instance.selector_labels(Component::App);
    instance_pods.remove("app.kubernetes.io/component");
    let dns = json!({
        "to": [dns_peer()],
        "ports": [{ "protocol": "UDP", "port": 53 }, tcp(53)],
    });
    all.push(policy(
        instance,
        format!("{}-default-deny", instance.name),
        Component::App,
        instance_pods,
        Vec::new(),
        vec![dns],
    )?);

    // The app: from the ingress controller or the Gateway's proxies, and Prometheus; to the pooler, PostgreSQL (the
    // migrations bypass the pooler) and Redis, or anywhere for external stores and tracing.
    let mut ingress = Vec::new();
    let selectors = &spec.network_policy;
    match instance.exposure() {
        Exposure::Ingress(_) => ingress.push(json!({
            "from": [namespaces(&selectors.ingress_controller_namespace_selector)],
            "ports": [tcp(HTTP_PORT)],
        })),
        Exposure::HttpRoute(route) => {
            let from = match &selectors.gateway_namespace_selector {
                Some(labels) => namespaces(labels),
                None => gateway_namespaces(instance, route),
            };
            ingress.push(json!({ "from": [from], "ports": [tcp(HTTP_PORT)] }));
        }
        Exposure::None => {}
    }
    if spec.monitoring.service_monitor {
        ingress.push(json!({
            "from": [namespaces(&spec.network_policy.prometheus_namespace_selector)],
            "ports": [tcp(HTTP_PORT)],
        }));
    }
    let mut egress = Vec::new();
    if spec.database.external.is_none() {
        egress.push(between(
            instance,
            "to",
            &[Component::PgBouncer],
            PGBOUNCER_PORT,
        ));
        egress.push(between(
            instance,
            "to",
            &[Component::Postgres],
            POSTGRES_PORT,
        ));
    }
    if spec.redis.external.is_none() {
        egress.push(between(instance, "to", &[Component::Redis], REDIS_PORT));
    }
    // An external database or cache lives at an address the operator cannot know.
    if spec.database.external.is_some() || spec.redis.external.is_some() {
        egress.push(json!({}));
    } else if let Some(endpoint) = &spec.app.config.tracing.endpoint {
        egress.push(json!({ "ports": [tcp(endpoint_port(endpoint))] }));
    }
    all.push(component_policy(instance, Component::App, ingress, egress)?);

    if spec.database.embedded().is_some() {
        all.push(component_policy(
            instance,
            Component::PgBouncer,
            vec![between(instance, "from", &[Component::App], PGBOUNCER_PORT)],
            vec![between(
                instance,
                "to",
                &[Component::Postgres],
                POSTGRES_PORT,
            )],
        )?);
        all.push(component_policy(
            instance,
            Component::Postgres,
            vec![between(
                instance,
                "from",
                &[Component::PgBouncer, Component::App, Component::RoleSetup],
                POSTGRES_PORT,
            )],
            Vec::new(),
        )?);
        // The role-setup Job: to PostgreSQL only.
        all.push(component_policy(
            instance,
            Component::RoleSetup,
            Vec::new(),
            vec![between(
                instance,
                "to",
                &[Component::Postgres],
                POSTGRES_PORT,
            )],
        )?);
    }
    if spec.redis.external.is_none() {
        all.push(component_policy(
            instance,
            Component::Redis,
            vec![between(instance, "from", &[Component::App], REDIS_PORT)],
            Vec::new(),
        )?);
    }
    Ok(all)
}

/// The port of an OTLP endpoint URL, or the scheme's default.
fn endpoint_port(endpoint: &str) -> i32 {
    let (scheme, rest) = endpoint.split_once("://").unwrap_or(("http", endpoint));
    let authority = rest.split('/').next().unwrap_or_default();
    let port = authority.rsplit_once(':').and_then(|(_, p)| p.parse().ok());
    port.unwrap_or(if scheme == "https" { 443 } else { 80 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::children::testing::{assert_owned, shortener};
    use crate::crd::{ExternalSecretRef, ShortenerSpec};

    fn names(policies: &[NetworkPolicy]) -> Vec<String> {
        let names = policies
            .iter()
            .map(|p| p.metadata.name.clone().unwrap_or_default());
        names.collect()
    }

    #[test]
    fn every_component_gets_a_policy_behind_a_default_deny() {
        let s = shortener(ShortenerSpec::default());
        let i = Instance::new(&s).unwrap();
        let all = policies(&i).unwrap();
        assert_eq!(
            names(&all),
            vec![
                "links-default-deny",
                "links",
                "links-pgbouncer",
                "links-postgres",
                "links-postgres-roles",
                "links-redis"
            ]
        );
        for p in &all {
            let v = serde_json::to_value(p).unwrap();
            assert_eq!(v["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
        }
        assert_owned(&all[0].metadata, "app");
        let deny = serde_json::to_value(&all[0]).unwrap();
        assert!(deny["spec"].get("ingress").is_none(), "{deny}");
        assert_eq!(deny["spec"]["egress"][0]["ports"][0]["port"], 53);
        let app = serde_json::to_value(&all[1]).unwrap();
        assert_eq!(
            app["spec"]["ingress"][0]["from"][0]["namespaceSelector"]["matchLabels"],
            json!({ "kubernetes.io/metadata.name": "ingress-nginx" })
        );
        assert_eq!(
            app["spec"]["ingress"][1]["from"][0]["namespaceSelector"]["matchLabels"],
            json!({ "kubernetes.io/metadata.name": "monitoring" })
        );
    }

    #[test]
    fn external_stores_drop_their_policies_and_open_the_app_egress() {
        let mut spec = ShortenerSpec::default();
        spec.database.external = Some(ExternalSecretRef {
            secret_name: "pg".into(),
            key: "dsn".into(),
        });
        spec.redis.external = Some(ExternalSecretRef {
            secret_name: "cache".into(),
            key: "url".into(),
        });
        let s = shortener(spec);
        let i = Instance::new(&s).unwrap();
        let all = policies(&i).unwrap();
        assert_eq!(names(&all), vec!["links-default-deny", "links"]);
        let app = serde_json::to_value(&all[1]).unwrap();
        assert_eq!(app["spec"]["egress"], json!([{}]));
    }

    #[test]
    fn behind_a_route_the_app_admits_the_gateways_namespaces() {
        use crate::crd::{GatewayParentRef, HttpRouteSpec, PublicScheme};
        let parent = |name: &str, namespace: Option<&str>| GatewayParentRef {
            name: name.into(),
            namespace: namespace.map(str::to_string),
            section_name: None,
            port: None,
        };
        let mut spec = ShortenerSpec {
            http_route: Some(HttpRouteSpec {
                parent_refs: vec![
                    parent("public", Some("infra")),
                    parent("local", None),
                    parent("other-listener", Some("infra")),
                ],
                hostnames: vec![],
                scheme: PublicScheme::Https,
                annotations: BTreeMap::new(),
            }),
            ..ShortenerSpec::default()
        };
        let app = |spec: &ShortenerSpec| {
            let s = shortener(spec.clone());
            let all = policies(&Instance::new(&s).unwrap()).unwrap();
            serde_json::to_value(&all[1]).unwrap()
        };
        let v = app(&spec);
        assert_eq!(
            v["spec"]["ingress"][0]["from"][0]["namespaceSelector"],
            json!({ "matchExpressions": [{
                "key": "kubernetes.io/metadata.name", "operator": "In", "values": ["infra", "web"],
            }] })
        );
        // Not the ingress controller's namespace any more.
        assert!(!v.to_string().contains("ingress-nginx"), "{v}");
        assert_eq!(v["spec"]["ingress"][0]["ports"][0]["port"], 8080);

        spec.network_policy.gateway_namespace_selector = Some(BTreeMap::from([(
            "kubernetes.io/metadata.name".to_string(),
            "envoy-gateway-system".to_string(),
        )]));
        let v = app(&spec);
        assert_eq!(
            v["spec"]["ingress"][0]["from"][0]["namespaceSelector"]["matchLabels"],
            json!({ "kubernetes.io/metadata.name": "envoy-gateway-system" })
        );
    }

    #[test]
    fn without_exposure_only_prometheus_reaches_the_app() {
        let mut spec = ShortenerSpec::default();
        spec.ingress.enabled = Some(false);
        let s = shortener(spec);
        let all = policies(&Instance::new(&s).unwrap()).unwrap();
        let app = serde_json::to_value(&all[1]).unwrap();
        let rules = app["spec"]["ingress"].as_array().unwrap();
        assert_eq!(rules.len(), 1);
        assert_eq!(
            rules[0]["from"][0]["namespaceSelector"]["matchLabels"],
            json!({ "kubernetes.io/metadata.name": "monitoring" })
        );
    }

    #[test]
    fn disabled_means_no_policies() {
        let mut spec = ShortenerSpec::default();
        spec.network_policy.enabled = false;
        let s = shortener(spec);
        assert!(policies(&Instance::new(&s).unwrap()).unwrap().is_empty());
    }

    #[test]
    fn tracing_endpoint_port_is_opened() {
        assert_eq!(endpoint_port("http://otel-collector.obs:4318"), 4318);
        assert_eq!(endpoint_port("https://otel.example.com/v1"), 443);
        assert_eq!(endpoint_port("http://otel"), 80);
    }
}
