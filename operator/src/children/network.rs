//! NetworkPolicies isolating each instance: every pod of the instance denies all traffic but
//! DNS, and one policy per component opens exactly the flows the stack needs.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::stack::{HTTP_PORT, PGBOUNCER_PORT, POSTGRES_PORT, REDIS_PORT};
use super::{Component, Instance, MANAGED_BY, cloudnative_pg, match_labels};
use crate::crd::{ApiServerPeer, Exposure, HttpRouteSpec};

/// Where cluster DNS runs (kube-dns or CoreDNS keep this label for compatibility).
fn dns_peer() -> NetworkPolicyPeer {
    let label = |key: &str, value: &str| match_labels(BTreeMap::from([(key.into(), value.into())]));
    NetworkPolicyPeer {
        namespace_selector: Some(label("kubernetes.io/metadata.name", "kube-system")),
        pod_selector: Some(label("k8s-app", "kube-dns")),
        ..Default::default()
    }
}

/// To cluster DNS, which every pod needs.
fn dns() -> NetworkPolicyEgressRule {
    NetworkPolicyEgressRule {
        to: Some(vec![dns_peer()]),
        ports: Some(vec![port("UDP", 53), tcp(53)]),
    }
}

fn port(protocol: &str, port: i32) -> NetworkPolicyPort {
    NetworkPolicyPort {
        protocol: Some(protocol.into()),
        port: Some(IntOrString::Int(port)),
        ..Default::default()
    }
}

fn tcp(number: i32) -> NetworkPolicyPort {
    port("TCP", number)
}

/// The pods of these components.
fn pods(instance: &Instance<'_>, components: &[Component]) -> Vec<NetworkPolicyPeer> {
    let peer = |component: &Component| NetworkPolicyPeer {
        pod_selector: Some(match_labels(instance.selector_labels(*component))),
        ..Default::default()
    };
    components.iter().map(peer).collect()
}

fn namespaces(selector: LabelSelector) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        namespace_selector: Some(selector),
        ..Default::default()
    }
}

/// The namespaces of the route's Gateways, where most implementations run a Gateway's proxies
/// (the default of `networkPolicy.gatewayNamespaceSelector`).
fn gateway_namespaces(instance: &Instance<'_>, route: &HttpRouteSpec) -> NetworkPolicyPeer {
    let names: BTreeSet<&str> = route
        .parent_refs
        .iter()
        .map(|parent| parent.namespace.as_deref().unwrap_or(&instance.namespace))
        .collect();
    namespaces(LabelSelector {
        match_expressions: Some(vec![LabelSelectorRequirement {
            key: "kubernetes.io/metadata.name".into(),
            operator: "In".into(),
            values: Some(names.into_iter().map(String::from).collect()),
        }]),
        ..Default::default()
    })
}

/// Traffic from these peers, on one TCP port.
fn from(peers: Vec<NetworkPolicyPeer>, port: i32) -> NetworkPolicyIngressRule {
    NetworkPolicyIngressRule {
        from: Some(peers),
        ports: Some(vec![tcp(port)]),
    }
}

/// Traffic to these peers, on one TCP port.
fn to(peers: Vec<NetworkPolicyPeer>, port: i32) -> NetworkPolicyEgressRule {
    NetworkPolicyEgressRule {
        to: Some(peers),
        ports: Some(vec![tcp(port)]),
    }
}

fn policy(
    instance: &Instance<'_>,
    name: String,
    component: Component,
    selector: BTreeMap<String, String>,
    ingress: Vec<NetworkPolicyIngressRule>,
    egress: Vec<NetworkPolicyEgressRule>,
) -> NetworkPolicy {
    NetworkPolicy {
        metadata: instance.meta(name, component),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(match_labels(selector)),
            policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
            // No rules is written as no list at all: the API server stores an empty list as
            // absent, and applying `[]` over that would count as a change on every pass.
            ingress: (!ingress.is_empty()).then_some(ingress),
            egress: (!egress.is_empty()).then_some(egress),
        }),
    }
}

/// The policy of one component's pods, named like the component's other children.
fn component_policy(
    instance: &Instance<'_>,
    component: Component,
    ingress: Vec<NetworkPolicyIngressRule>,
    egress: Vec<NetworkPolicyEgressRule>,
) -> NetworkPolicy {
    let name = instance.child_name(component);
    let selector = instance.selector_labels(component);
    policy(instance, name, component, selector, ingress, egress)
}

/// Every policy of the instance, or none when `spec.networkPolicy.enabled` is false.
pub fn policies(instance: &Instance<'_>, operator_namespace: Option<&str>) -> Vec<NetworkPolicy> {
    let spec = instance.spec();
    if !spec.network_policy.enabled {
        return Vec::new();
    }
    let mut all = Vec::new();

    // Default deny for every pod of the instance; DNS is the only flow all of them need.
    let mut instance_pods = instance.selector_labels(Component::App);
    instance_pods.remove("app.kubernetes.io/component");
    all.push(policy(
        instance,
        format!("{}-default-deny", instance.name),
        Component::App,
        instance_pods,
        Vec::new(),
        vec![dns()],
    ));

    // The app: from the ingress controller or the Gateway's proxies, and Prometheus; to the pooler, PostgreSQL (the
    // migrations bypass the pooler) and Redis, or anywhere for external stores and tracing.
    let mut ingress = Vec::new();
    let selectors = &spec.network_policy;
    let labelled = |labels: &BTreeMap<String, String>| namespaces(match_labels(labels.clone()));
    match instance.exposure() {
        Exposure::Ingress(_) => ingress.push(from(
            vec![labelled(&selectors.ingress_controller_namespace_selector)],
            HTTP_PORT,
        )),
        Exposure::HttpRoute(route) => {
            let peer = match &selectors.gateway_namespace_selector {
                Some(labels) => labelled(labels),
                None => gateway_namespaces(instance, route),
            };
            ingress.push(from(vec![peer], HTTP_PORT));
        }
        Exposure::None => {}
    }
    if spec.monitoring.service_monitor {
        ingress.push(from(
            vec![labelled(&selectors.prometheus_namespace_selector)],
            HTTP_PORT,
        ));
    }
    // The operator's pods, which keep the ShortLinks in the service through its API.
    if let Some(namespace) = operator_namespace {
        let operator = NetworkPolicyPeer {
            namespace_selector: Some(match_labels(BTreeMap::from([(
                "kubernetes.io/metadata.name".into(),
                namespace.into(),
            )]))),
            pod_selector: Some(match_labels(BTreeMap::from([(
                "app.kubernetes.io/name".into(),
                MANAGED_BY.into(),
            )]))),
            ..Default::default()
        };
        ingress.push(from(vec![operator], HTTP_PORT));
    }
    let mut egress = Vec::new();
    if spec.database.operated() {
        let (_, pooler_port) = instance.pooler_address();
        egress.push(to(vec![pooler_pods(instance)], pooler_port));
        egress.push(to(pods(instance, &[Component::Postgres]), POSTGRES_PORT));
    }
    if spec.redis.external.is_none() {
        egress.push(to(pods(instance, &[Component::Redis]), REDIS_PORT));
    }
    // An external database or cache lives at an address the operator cannot know.
    if spec.database.external.is_some() || spec.redis.external.is_some() {
        egress.push(NetworkPolicyEgressRule::default());
    } else if let Some(endpoint) = &spec.app.config.tracing.endpoint {
        egress.push(NetworkPolicyEgressRule {
            ports: Some(vec![tcp(endpoint_port(endpoint))]),
            ..Default::default()
        });
    }
    all.push(component_policy(instance, Component::App, ingress, egress));

    if spec.database.embedded().is_some() {
        all.push(component_policy(
            instance,
            Component::PgBouncer,
            vec![from(pods(instance, &[Component::App]), PGBOUNCER_PORT)],
            vec![to(pods(instance, &[Component::Postgres]), POSTGRES_PORT)],
        ));
        let mut clients = vec![Component::PgBouncer, Component::App, Component::RoleSetup];
        // The Jobs that only talk to PostgreSQL: the role setup, and the backups when asked.
        let mut jobs = vec![Component::RoleSetup];
        if spec
            .database
            .postgres
            .as_ref()
            .is_some_and(|p| p.backup.is_some())
        {
            clients.push(Component::Backup);
            jobs.push(Component::Backup);
        }
        all.push(component_policy(
            instance,
            Component::Postgres,
            vec![from(pods(instance, &clients), POSTGRES_PORT)],
            Vec::new(),
        ));
        for job in jobs {
            all.push(component_policy(
                instance,
                job,
                Vec::new(),
                vec![to(pods(instance, &[Component::Postgres]), POSTGRES_PORT)],
            ));
        }
    }
    if spec.database.cloud_native_pg.is_some() {
        all.extend(cloud_native_pg_policies(instance));
    }
    if spec.redis.external.is_none() {
        all.push(component_policy(
            instance,
            Component::Redis,
            vec![from(pods(instance, &[Component::App]), REDIS_PORT)],
            Vec::new(),
        ));
    }
    all
}

/// The pooler's pods: the embedded PgBouncer's, or CloudNativePG's Pooler's (which carry
/// CloudNativePG's labels, not ours).
fn pooler_pods(instance: &Instance<'_>) -> NetworkPolicyPeer {
    let labels = match instance.spec().database.cloud_native_pg {
        Some(_) => cloudnative_pg::pooler_pod_labels(instance),
        None => instance.selector_labels(Component::PgBouncer),
    };
    NetworkPolicyPeer {
        pod_selector: Some(match_labels(labels)),
        ..Default::default()
    }
}

/// CloudNativePG's instance manager (in the instance pods) serves the operator on this port.
const CNPG_INSTANCE_MANAGER_PORT: i32 = 8000;

/// To the Kubernetes API server, which CloudNativePG's instance and pooler pods call.
fn to_api_server(peer: &ApiServerPeer) -> NetworkPolicyEgressRule {
    let blocks = peer.cidrs.iter().map(|cidr| NetworkPolicyPeer {
        ip_block: Some(IPBlock {
            cidr: cidr.clone(),
            except: None,
        }),
        ..Default::default()
    });
    let blocks: Vec<_> = blocks.collect();
    NetworkPolicyEgressRule {
        to: (!blocks.is_empty()).then_some(blocks),
        ports: Some(peer.ports.iter().map(|p| tcp(*p)).collect()),
    }
}

/// The flows of a CloudNativePG Cluster and its Pooler, whose pods carry the PostgreSQL and
/// PgBouncer components' labels: the Pooler takes the app's connections to the primary; the
/// instances take the app's migrations, the role setup, each other's replication and the
/// CloudNativePG operator's calls (its instance manager and PostgreSQL), and both call the
/// API server.
fn cloud_native_pg_policies(instance: &Instance<'_>) -> Vec<NetworkPolicy> {
    let selectors = &instance.spec().network_policy;
    let api_server = to_api_server(&selectors.api_server);
    let operator = namespaces(match_labels(
        selectors.cloud_native_pg_namespace_selector.clone(),
    ));
    let postgres = || pods(instance, &[Component::Postgres]);
    let (_, pooler_port) = instance.pooler_address();
    let mut clients = vec![pooler_pods(instance)];
    clients.extend(pods(
        instance,
        &[Component::App, Component::RoleSetup, Component::Postgres],
    ));
    vec![
        // The Pooler's pods are outside the default deny (their labels are CloudNativePG's):
        // this policy is their only one, DNS included.
        policy(
            instance,
            instance.child_name(Component::PgBouncer),
            Component::PgBouncer,
            cloudnative_pg::pooler_pod_labels(instance),
            vec![from(pods(instance, &[Component::App]), pooler_port)],
            vec![dns(), to(postgres(), POSTGRES_PORT), api_server.clone()],
        ),
        component_policy(
            instance,
            Component::Postgres,
            vec![
                from(clients, POSTGRES_PORT),
                NetworkPolicyIngressRule {
                    from: Some(vec![operator]),
                    ports: Some(vec![tcp(CNPG_INSTANCE_MANAGER_PORT), tcp(POSTGRES_PORT)]),
                },
            ],
            vec![to(postgres(), POSTGRES_PORT), api_server],
        ),
        component_policy(
            instance,
            Component::RoleSetup,
            Vec::new(),
            vec![to(postgres(), POSTGRES_PORT)],
        ),
    ]
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
    use serde_json::{Value, json};

    /// The policies of a default stack, embedded or on CloudNativePG: the same names.
    const EVERY_POLICY: [&str; 6] = [
        "links-default-deny",
        "links",
        "links-pgbouncer",
        "links-postgres",
        "links-postgres-roles",
        "links-redis",
    ];

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
        let all = policies(&i, None);
        assert_eq!(names(&all), EVERY_POLICY);
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
    fn backups_reach_postgres_only_when_asked_for() {
        let mut spec = ShortenerSpec::default();
        crate::children::testing::with_daily_backups(&mut spec);
        let s = shortener(spec);
        let i = Instance::new(&s).unwrap();
        let all = policies(&i, None);
        let names = names(&all);
        assert_eq!(names[names.len() - 2], "links-postgres-backup");
        let by_name = |name: &str| {
            let policy = all
                .iter()
                .find(|p| p.metadata.name.as_deref() == Some(name));
            serde_json::to_value(policy.unwrap()).unwrap()
        };
        let postgres = by_name("links-postgres");
        let clients: Vec<_> = postgres["spec"]["ingress"][0]["from"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["podSelector"]["matchLabels"]["app.kubernetes.io/component"].clone())
            .collect();
        assert!(clients.contains(&json!("postgres-backup")), "{clients:?}");
        let backup = by_name("links-postgres-backup");
        assert!(backup["spec"].get("ingress").is_none());
        assert_eq!(backup["spec"]["egress"][0]["ports"][0]["port"], 5432);
    }

    #[test]
    fn the_operators_pods_may_call_the_app() {
        let s = shortener(ShortenerSpec::default());
        let all = policies(&Instance::new(&s).unwrap(), Some("ops"));
        let app = serde_json::to_value(&all[1]).unwrap();
        let rules = app["spec"]["ingress"].as_array().unwrap();
        let operator = rules.last().unwrap();
        assert_eq!(
            operator["from"],
            json!([{
                "namespaceSelector": { "matchLabels": { "kubernetes.io/metadata.name": "ops" } },
                "podSelector": { "matchLabels": { "app.kubernetes.io/name": "shortener-operator" } },
            }])
        );
        assert_eq!(operator["ports"][0]["port"], 8080);
        // Only the app: nothing else of the stack is the operator's to call.
        for other in &all[2..] {
            assert!(!serde_json::to_string(other).unwrap().contains("\"ops\""));
        }
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
        let all = policies(&i, None);
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
            let all = policies(&Instance::new(&s).unwrap(), None);
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
        let all = policies(&Instance::new(&s).unwrap(), None);
        let app = serde_json::to_value(&all[1]).unwrap();
        let rules = app["spec"]["ingress"].as_array().unwrap();
        assert_eq!(rules.len(), 1);
        assert_eq!(
            rules[0]["from"][0]["namespaceSelector"]["matchLabels"],
            json!({ "kubernetes.io/metadata.name": "monitoring" })
        );
    }

    /// On CloudNativePG: the Pooler's and the instances' flows, the operator's calls on
    /// 8000 and 5432, and the API server for both (any address, or the CIDRs given).
    #[test]
    fn cloud_native_pg_pods_get_their_flows_and_the_api_server() {
        let mut spec = ShortenerSpec::default();
        spec.database.cloud_native_pg = Some(crate::crd::CloudNativePgSpec::default());
        let s = shortener(spec.clone());
        let i = Instance::new(&s).unwrap();
        let all = policies(&i, None);
        assert_eq!(names(&all), EVERY_POLICY);
        let v: Vec<Value> = all
            .iter()
            .map(|p| serde_json::to_value(p).unwrap())
            .collect();
        let component = |p: &Value, key: &str, n: usize| {
            p["spec"][key][n]["to"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
                .clone()
        };
        // The app reaches the Pooler's pods, by CloudNativePG's label, on its port 5432.
        let pooler_pods = json!({ "matchLabels": { "cnpg.io/poolerName": "links-pgbouncer" } });
        assert_eq!(
            v[1]["spec"]["egress"][0]["to"][0]["podSelector"],
            pooler_pods
        );
        assert_eq!(v[1]["spec"]["egress"][0]["ports"][0]["port"], 5432);
        // The Pooler: from the app; to DNS, the instances and the API server.
        let pooler = &v[2]["spec"];
        assert_eq!(pooler["podSelector"], pooler_pods);
        assert_eq!(pooler["ingress"][0]["ports"][0]["port"], 5432);
        assert_eq!(pooler["egress"][0]["ports"][0]["port"], 53);
        assert_eq!(component(&v[2], "egress", 1), "postgres");
        assert_eq!(
            pooler["egress"][2],
            json!({ "ports": [
            { "port": 443, "protocol": "TCP" }, { "port": 6443, "protocol": "TCP" }] })
        );
        // The instances: their clients and each other, the operator's namespace.
        let instances = &v[3]["spec"];
        let clients: Vec<&str> = instances["ingress"][0]["from"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                let labels = &p["podSelector"]["matchLabels"];
                let component = labels["app.kubernetes.io/component"].as_str();
                component.or(labels["cnpg.io/poolerName"].as_str()).unwrap()
            })
            .collect();
        assert_eq!(
            clients,
            ["links-pgbouncer", "app", "postgres-roles", "postgres"]
        );
        assert_eq!(
            instances["ingress"][1]["from"][0]["namespaceSelector"]["matchLabels"],
            json!({ "kubernetes.io/metadata.name": "cnpg-system" })
        );
        assert_eq!(
            instances["ingress"][1]["ports"],
            json!([{ "port": 8000, "protocol": "TCP" }, { "port": 5432, "protocol": "TCP" }])
        );
        assert_eq!(component(&v[3], "egress", 0), "postgres");

        spec.network_policy.api_server.cidrs = vec!["192.0.2.10/32".into()];
        spec.network_policy.api_server.ports = vec![56443];
        let s = shortener(spec);
        let i = Instance::new(&s).unwrap();
        let pooler = serde_json::to_value(&policies(&i, None)[2]).unwrap();
        assert_eq!(
            pooler["spec"]["egress"][2],
            json!({ "to": [{ "ipBlock": { "cidr": "192.0.2.10/32" } }],
                    "ports": [{ "port": 56443, "protocol": "TCP" }] })
        );
    }

    #[test]
    fn disabled_means_no_policies() {
        let mut spec = ShortenerSpec::default();
        spec.network_policy.enabled = false;
        let s = shortener(spec);
        assert!(policies(&Instance::new(&s).unwrap(), None).is_empty());
    }

    #[test]
    fn tracing_endpoint_port_is_opened() {
        assert_eq!(endpoint_port("http://otel-collector.obs:4318"), 4318);
        assert_eq!(endpoint_port("https://otel.example.com/v1"), 443);
        assert_eq!(endpoint_port("http://otel"), 80);
    }
}
