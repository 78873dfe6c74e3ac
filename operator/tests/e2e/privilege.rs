//! Least privilege and isolation of each Shortener, read back from the API server.

use std::collections::BTreeMap;

use base64::Engine;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::api::networking::v1::{
    Ingress, NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Api;

use crate::changes::ready_minimal;
use crate::cluster::{Result, TIMEOUT, eventually, get_opt};
use crate::stack::{example, patch_spec, shortener};
use crate::{Ctx, ensure};

fn secret_value(secret: &Secret, key: &str) -> Result<String> {
    let bytes = secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .ok_or_else(|| format!("Secret has no {key}"))?;
    Ok(String::from_utf8(bytes.0.clone())?)
}

/// Redis asks every client for the generated password; the app gets it by reference, the
/// operator never rewrites it on later passes and never logs it.
pub async fn redis_requires_the_generated_password(ctx: &Ctx) -> Result {
    ready_minimal(ctx).await?;
    let ns = ctx.ns.as_str();
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let secret = secrets.get("links-redis-auth").await?;
    let password = secret_value(&secret, "password")?;
    ensure!(
        password.len() == 32 && password.chars().all(|c| c.is_ascii_alphanumeric()),
        "generated Redis password of unexpected shape ({} characters)",
        password.len()
    );
    ensure!(
        secret_value(&secret, "auth.conf")? == format!("requirepass {password}\n"),
        "auth.conf does not set requirepass to the password"
    );

    // The server's config includes the Secret's setting and keeps protected mode on.
    let config_maps: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), ns);
    let conf = config_maps
        .get("links-redis")
        .await?
        .data
        .and_then(|d| d.get("redis.conf").cloned())
        .unwrap_or_default();
    ensure!(
        conf.contains("protected-mode yes\n")
            && conf.contains("include /etc/redis-auth/auth.conf\n")
            && !conf.contains(&password),
        "redis.conf: {conf}"
    );
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), ns);
    let redis = serde_json::to_value(deployments.get("links-redis").await?)?;
    let pod = &redis["spec"]["template"]["spec"];
    ensure!(
        pod["volumes"].as_array().is_some_and(|v| v
            .iter()
            .any(|v| v["secret"]["secretName"] == "links-redis-auth"))
            && pod["containers"][0]["volumeMounts"]
                .as_array()
                .is_some_and(|m| m.iter().any(|m| m["mountPath"] == "/etc/redis-auth")),
        "the Redis pod does not mount the password: {pod}"
    );

    // The app reads the password from the Secret, never as a literal.
    let app = serde_json::to_value(deployments.get("links").await?)?;
    let env = app["spec"]["template"]["spec"]["containers"][0]["env"].clone();
    let var = |name: &str| {
        env.as_array()
            .and_then(|e| e.iter().find(|v| v["name"] == name))
            .cloned()
            .unwrap_or_default()
    };
    let reference = &var("REDIS_PASSWORD")["valueFrom"]["secretKeyRef"];
    ensure!(
        reference["name"] == "links-redis-auth" && reference["key"] == "password",
        "REDIS_PASSWORD: {}",
        var("REDIS_PASSWORD")
    );
    ensure!(
        var("REDIS_URL")["value"] == "redis://:$(REDIS_PASSWORD)@links-redis:6379",
        "REDIS_URL: {}",
        var("REDIS_URL")
    );
    ensure!(
        !app.to_string().contains(&password),
        "the app Deployment carries the password"
    );

    // A later pass leaves the Secret as it was.
    patch_spec(
        ns,
        "links",
        serde_json::json!({ "app": { "config": { "cacheTtlSeconds": 61 } } }),
    )?;
    let client = &ctx.client;
    eventually("the change reconciled", TIMEOUT, || async move {
        let s = shortener(client, ns, "links")
            .await
            .map_err(|e| e.to_string())?;
        let observed = s
            .data
            .pointer("/status/observedGeneration")
            .and_then(|g| g.as_i64());
        if observed == s.metadata.generation {
            Ok(())
        } else {
            Err(format!("observedGeneration {observed:?}"))
        }
    })
    .await?;
    let again = secrets.get("links-redis-auth").await?;
    ensure!(
        secret_value(&again, "password")? == password
            && again.metadata.resource_version == secret.metadata.resource_version,
        "the generated Secret was rewritten"
    );

    let operators = ctx.suite.operators.lock().await;
    for operator in operators.iter() {
        ensure!(
            !operator.log_tail(usize::MAX).contains(&password),
            "operator {} logged the Redis password",
            operator.identity
        );
    }
    let encoded = base64::engine::general_purpose::STANDARD.encode(&password);
    for operator in operators.iter() {
        ensure!(
            !operator.log_tail(usize::MAX).contains(&encoded),
            "operator {} logged the encoded Redis password",
            operator.identity
        );
    }
    Ok(())
}

/// The Ingress keeps `/metrics` inside the cluster: an Exact path (matched before the `/`
/// prefix by ingress-nginx) to a Service that does not exist, so the controller answers 503.
/// Every example, as the API server stores it (defaults applied), requires the API key.
pub async fn metrics_are_not_routed_and_the_examples_require_the_api_key(ctx: &Ctx) -> Result {
    ready_minimal(ctx).await?;
    let ns = ctx.ns.as_str();
    let ingresses: Api<Ingress> = Api::namespaced(ctx.client.clone(), ns);
    let ingress = serde_json::to_value(ingresses.get("links").await?)?;
    let paths = ingress["spec"]["rules"][0]["http"]["paths"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let metrics = paths
        .iter()
        .find(|p| p["path"] == "/metrics")
        .ok_or_else(|| format!("no /metrics path: {ingress}"))?;
    ensure!(metrics["pathType"] == "Exact", "/metrics: {metrics}");
    let backend = metrics["backend"]["service"]["name"]
        .as_str()
        .unwrap_or_default();
    // The backend is the operator's Service without a selector: it never has endpoints, so
    // every controller answers 503 (a missing Service is dropped by some, see security.md).
    let unrouted = get_opt(&ctx.client, ns, "Service", backend)
        .await?
        .ok_or_else(|| format!("/metrics is routed to Service {backend}, which does not exist"))?;
    ensure!(
        backend != "links" && unrouted.data["spec"].get("selector").is_none(),
        "/metrics is routed to a Service with endpoints: {backend} {}",
        unrouted.data["spec"]
    );
    let root = paths.iter().find(|p| p["path"] == "/");
    ensure!(
        root.is_some_and(
            |p| p["pathType"] == "Prefix" && p["backend"]["service"]["name"] == "links"
        ),
        "/ is not routed to the app: {ingress}"
    );

    let dir = ctx.suite.root.join("manifests/examples");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir)? {
        let file = entry?.file_name().to_string_lossy().to_string();
        if !file.ends_with(".yaml") {
            continue;
        }
        // A fresh name each: the CEL transition rules would compare with `links`.
        let mut object: serde_yaml::Value =
            serde_yaml::from_str(&example(&ctx.suite.root, &file, ns)?)?;
        object["metadata"]["name"] = format!("example-{checked}").into();
        let out = crate::cluster::kubectl_stdin(
            &["apply", "--dry-run=server", "-o", "json", "-f", "-"],
            &serde_yaml::to_string(&object)?,
        )?;
        ensure!(out.success, "{file}: {}", out.stderr);
        let stored: serde_json::Value = serde_json::from_str(&out.stdout)?;
        let spec = &stored["spec"];
        ensure!(
            spec["ingress"]["enabled"] == false || spec["app"]["config"]["authMode"] == "api-key",
            "{file} exposes an Ingress without the API key: {spec}"
        );
        checked += 1;
    }
    ensure!(
        checked >= 3,
        "only {checked} examples found in {}",
        dir.display()
    );
    Ok(())
}

/// A pod as NetworkPolicies see it: its namespace (and that namespace's labels) and labels.
#[derive(Clone, Debug)]
struct Endpoint {
    name: &'static str,
    namespace: String,
    namespace_labels: BTreeMap<String, String>,
    labels: BTreeMap<String, String>,
}

impl Endpoint {
    fn new(name: &'static str, namespace: &str, labels: &[(&str, &str)]) -> Self {
        Self {
            name,
            namespace: namespace.to_string(),
            namespace_labels: BTreeMap::from([(
                "kubernetes.io/metadata.name".to_string(),
                namespace.to_string(),
            )]),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }
}

fn selects(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let by_label = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let by_expression = selector.match_expressions.iter().flatten().all(|e| {
        let values = e.values.clone().unwrap_or_default();
        let value = labels.get(&e.key);
        match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    });
    by_label && by_expression
}

/// Whether `peer`, written in a policy of `policy_namespace`, designates `pod`.
fn peer_matches(peer: &NetworkPolicyPeer, policy_namespace: &str, pod: &Endpoint) -> bool {
    if peer.ip_block.is_some() {
        return false; // Pods are addressed by selectors here; no policy of the stack uses CIDRs.
    }
    let namespace_ok = match &peer.namespace_selector {
        Some(selector) => selects(selector, &pod.namespace_labels),
        None => pod.namespace == policy_namespace,
    };
    let pod_ok = peer
        .pod_selector
        .as_ref()
        .is_none_or(|selector| selects(selector, &pod.labels));
    namespace_ok && pod_ok
}

fn port_matches(ports: Option<&Vec<NetworkPolicyPort>>, port: i32, protocol: &str) -> bool {
    let Some(ports) = ports.filter(|p| !p.is_empty()) else {
        return true;
    };
    ports.iter().any(|p| {
        let same_protocol = p.protocol.as_deref().unwrap_or("TCP") == protocol;
        let same_port = match &p.port {
            None => true,
            Some(IntOrString::Int(n)) => match p.end_port {
                Some(end) => (*n..=end).contains(&port),
                None => *n == port,
            },
            Some(IntOrString::String(_)) => false, // no named ports in the stack's policies
        };
        same_protocol && same_port
    })
}

/// The NetworkPolicy semantics for one flow: allowed when the source's egress (if any policy
/// isolates it for egress) and the destination's ingress (likewise) both admit it.
fn allowed(
    policies: &[NetworkPolicy],
    from: &Endpoint,
    to: &Endpoint,
    port: i32,
    protocol: &str,
) -> bool {
    let isolating = |pod: &Endpoint, direction: &str| -> Vec<&NetworkPolicy> {
        policies
            .iter()
            .filter(|p| p.metadata.namespace.as_deref() == Some(pod.namespace.as_str()))
            .filter(|p| {
                let spec = p.spec.clone().unwrap_or_default();
                let types = spec.policy_types.unwrap_or_else(|| {
                    let mut types = vec!["Ingress".to_string()];
                    if spec.egress.is_some() {
                        types.push("Egress".to_string());
                    }
                    types
                });
                types.iter().any(|t| t == direction)
                    && spec
                        .pod_selector
                        .as_ref()
                        .is_none_or(|s| selects(s, &pod.labels))
            })
            .collect()
    };
    // Whether some isolating policy has a rule whose peers include `peer` on this port (or
    // none isolates).
    let admits = |isolating: Vec<&NetworkPolicy>, rules: fn(&NetworkPolicySpec) -> Rules, peer| {
        isolating.is_empty()
            || isolating.iter().any(|p| {
                let namespace = p.metadata.namespace.as_deref().unwrap_or_default();
                let spec = p.spec.clone().unwrap_or_default();
                rules(&spec).iter().any(|(peers, ports)| {
                    let peers = peers.as_ref().filter(|t| !t.is_empty());
                    peers.is_none_or(|t| t.iter().any(|q| peer_matches(q, namespace, peer)))
                        && port_matches(ports.as_ref(), port, protocol)
                })
            })
    };
    let egress: fn(&NetworkPolicySpec) -> Rules = |spec| {
        let rules = spec.egress.iter().flatten();
        rules.map(|r| (r.to.clone(), r.ports.clone())).collect()
    };
    let ingress: fn(&NetworkPolicySpec) -> Rules = |spec| {
        let rules = spec.ingress.iter().flatten();
        rules.map(|r| (r.from.clone(), r.ports.clone())).collect()
    };
    admits(isolating(from, "Egress"), egress, to) && admits(isolating(to, "Ingress"), ingress, from)
}

/// A policy direction's rules as (peers, ports) pairs.
type Rules = Vec<(
    Option<Vec<NetworkPolicyPeer>>,
    Option<Vec<NetworkPolicyPort>>,
)>;

/// Pod labels of a workload's template, as stored.
async fn template_labels(ctx: &Ctx, kind: &str, name: &str) -> Result<BTreeMap<String, String>> {
    let object = get_opt(&ctx.client, &ctx.ns, kind, name)
        .await?
        .ok_or_else(|| format!("no {kind}/{name}"))?;
    let labels = object
        .data
        .pointer("/spec/template/metadata/labels")
        .cloned()
        .unwrap_or_default();
    Ok(serde_json::from_value(labels)?)
}

/// Each intended flow of the stack is allowed by the NetworkPolicies stored in the namespace
/// and everything else tried is denied; the namespaces are configurable; disabling prunes.
pub async fn network_policies_admit_only_the_stack_flows(ctx: &Ctx) -> Result {
    ready_minimal(ctx).await?;
    let ns = ctx.ns.as_str();
    let mut stack = Vec::new();
    for (name, kind, object) in [
        ("app", "Deployment", "links"),
        ("pgbouncer", "Deployment", "links-pgbouncer"),
        ("redis", "Deployment", "links-redis"),
        ("postgres", "StatefulSet", "links-postgres"),
    ] {
        let mut endpoint = Endpoint::new(name, ns, &[]);
        endpoint.labels = template_labels(ctx, kind, object).await?;
        stack.push(endpoint);
    }
    let [app, pgbouncer, redis, postgres] =
        <[Endpoint; 4]>::try_from(stack).map_err(|_| "four workloads")?;
    let mut role_setup = Endpoint::new("role-setup Job", ns, &[]);
    let job = crate::roles::role_setup_job(ctx).await?;
    role_setup.labels = serde_json::from_value(
        job.data
            .pointer("/spec/template/metadata/labels")
            .cloned()
            .unwrap_or_default(),
    )?;
    let ingress_nginx = Endpoint::new(
        "ingress-nginx",
        "ingress-nginx",
        &[("app.kubernetes.io/name", "ingress-nginx")],
    );
    let prometheus = Endpoint::new(
        "prometheus",
        "monitoring",
        &[("app.kubernetes.io/name", "prometheus")],
    );
    let dns = Endpoint::new("kube-dns", "kube-system", &[("k8s-app", "kube-dns")]);
    let neighbour = Endpoint::new("neighbour", ns, &[("app", "neighbour")]);
    let stranger = Endpoint::new("stranger", "elsewhere", &[("app", "stranger")]);
    let mut other_instance = app.clone();
    other_instance.name = "another Shortener's app";
    other_instance
        .labels
        .insert("app.kubernetes.io/instance".into(), "other".into());

    let policies: Api<NetworkPolicy> = Api::namespaced(ctx.client.clone(), ns);
    let stored = policies.list(&Default::default()).await?.items;
    ensure!(!stored.is_empty(), "no NetworkPolicy in {ns}");

    let flow = |from: &Endpoint, to: &Endpoint, port: i32, protocol: &'static str, want: bool| {
        (from.clone(), to.clone(), port, protocol, want)
    };
    let mut flows = vec![
        // What the stack needs.
        flow(&ingress_nginx, &app, 8080, "TCP", true),
        flow(&prometheus, &app, 8080, "TCP", true),
        flow(&app, &pgbouncer, 6432, "TCP", true),
        flow(&app, &redis, 6379, "TCP", true),
        flow(&app, &postgres, 5432, "TCP", true), // migrations bypass the pooler
        flow(&pgbouncer, &postgres, 5432, "TCP", true),
        flow(&role_setup, &postgres, 5432, "TCP", true),
        // Anything else.
        flow(&role_setup, &redis, 6379, "TCP", false),
        flow(&role_setup, &pgbouncer, 6432, "TCP", false),
        flow(&role_setup, &app, 8080, "TCP", false),
        flow(&role_setup, &stranger, 443, "TCP", false),
        flow(&app, &role_setup, 5432, "TCP", false),
        flow(&ingress_nginx, &app, 9090, "TCP", false),
        flow(&ingress_nginx, &redis, 6379, "TCP", false),
        flow(&ingress_nginx, &postgres, 5432, "TCP", false),
        flow(&prometheus, &postgres, 5432, "TCP", false),
        flow(&neighbour, &app, 8080, "TCP", false),
        flow(&neighbour, &redis, 6379, "TCP", false),
        flow(&neighbour, &pgbouncer, 6432, "TCP", false),
        flow(&neighbour, &postgres, 5432, "TCP", false),
        flow(&stranger, &app, 8080, "TCP", false),
        flow(&other_instance, &redis, 6379, "TCP", false),
        flow(&redis, &app, 8080, "TCP", false),
        flow(&redis, &postgres, 5432, "TCP", false),
        flow(&pgbouncer, &redis, 6379, "TCP", false),
        flow(&postgres, &pgbouncer, 6432, "TCP", false),
        flow(&app, &stranger, 443, "TCP", false),
        flow(&app, &neighbour, 80, "TCP", false),
        flow(&postgres, &stranger, 443, "TCP", false),
        flow(&app, &other_instance, 8080, "TCP", false),
    ];
    for pod in [&app, &pgbouncer, &redis, &postgres, &role_setup] {
        flows.push(flow(pod, &dns, 53, "UDP", true));
        flows.push(flow(pod, &dns, 53, "TCP", true));
        flows.push(flow(pod, &neighbour, 53, "UDP", false));
    }
    let wrong: Vec<String> = flows
        .iter()
        .filter(|(from, to, port, protocol, want)| {
            allowed(&stored, from, to, *port, protocol) != *want
        })
        .map(|(from, to, port, protocol, want)| {
            let verdict = if *want { "denied" } else { "allowed" };
            format!("{} -> {}:{port}/{protocol} {verdict}", from.name, to.name)
        })
        .collect();
    ensure!(wrong.is_empty(), "flows the policies get wrong: {wrong:?}");

    // Re-applying an unchanged policy writes nothing (else each write would trigger a pass).
    let versions = |items: &[NetworkPolicy]| -> Vec<Option<String>> {
        items
            .iter()
            .map(|p| p.metadata.resource_version.clone())
            .collect()
    };
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let later = policies.list(&Default::default()).await?.items;
    ensure!(
        versions(&later) == versions(&stored),
        "the NetworkPolicies keep changing: {:?} then {:?}",
        versions(&stored),
        versions(&later)
    );

    // The ingress controller's namespace is configurable.
    patch_spec(
        ns,
        "links",
        // A merge patch merges maps: the default label is removed explicitly.
        serde_json::json!({ "networkPolicy": { "ingressControllerNamespaceSelector": {
            "kubernetes.io/metadata.name": null,
            "team": "edge",
        } } }),
    )?;
    let mut edge = Endpoint::new("edge ingress", "edge", &[]);
    edge.namespace_labels.insert("team".into(), "edge".into());
    let policies = &policies;
    let (app, edge, ingress_nginx) = (&app, &edge, &ingress_nginx);
    eventually(
        "the edge namespace admitted instead of ingress-nginx",
        TIMEOUT,
        || async move {
            let stored = policies
                .list(&Default::default())
                .await
                .map_err(|e| e.to_string())?
                .items;
            match (
                allowed(&stored, edge, app, 8080, "TCP"),
                allowed(&stored, ingress_nginx, app, 8080, "TCP"),
            ) {
                (true, false) => Ok(()),
                other => Err(format!("(edge, ingress-nginx) -> app allowed: {other:?}")),
            }
        },
    )
    .await?;

    // Disabled: the operator's policies are pruned.
    patch_spec(
        ns,
        "links",
        serde_json::json!({ "networkPolicy": { "enabled": false } }),
    )?;
    eventually("the NetworkPolicies pruned", TIMEOUT, || async move {
        let left = policies
            .list(&Default::default())
            .await
            .map_err(|e| e.to_string())?
            .items;
        if left.is_empty() {
            Ok(())
        } else {
            Err(format!("{} left", left.len()))
        }
    })
    .await?;
    Ok(())
}

/// Annotations that inject raw ingress-nginx configuration are refused before anything is
/// written (the operator runs without `--allow-snippet-annotations`), reported in the status,
/// and the refusal lifts once they are gone.
pub async fn snippet_annotations_are_refused(ctx: &Ctx) -> Result {
    ready_minimal(ctx).await?;
    let ns = ctx.ns.as_str();
    let snippet = "nginx.ingress.kubernetes.io/configuration-snippet";
    let issuer = "cert-manager.io/cluster-issuer";
    patch_spec(
        ns,
        "links",
        serde_json::json!({ "ingress": { "annotations": {
            snippet: "more_set_headers \"X-Owned: yes\";",
            issuer: "letsencrypt",
        } } }),
    )?;
    let degraded =
        crate::stack::wait_condition(&ctx.client, ns, "links", "Degraded", "True").await?;
    let condition = degraded
        .data
        .pointer("/status/conditions")
        .and_then(|c| c.as_array())
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Degraded"))
        .cloned()
        .unwrap_or_default();
    ensure!(
        condition["reason"] == "SnippetAnnotationRefused"
            && condition["message"]
                .as_str()
                .is_some_and(|m| m.contains(snippet)),
        "Degraded: {condition}"
    );
    // Nothing of that generation was applied: not even the harmless annotation.
    let ingresses: Api<Ingress> = Api::namespaced(ctx.client.clone(), ns);
    let annotations = ingresses
        .get("links")
        .await?
        .metadata
        .annotations
        .unwrap_or_default();
    ensure!(
        !annotations.contains_key(snippet) && !annotations.contains_key(issuer),
        "the refused spec reached the Ingress: {annotations:?}"
    );

    patch_spec(
        ns,
        "links",
        serde_json::json!({ "ingress": { "annotations": { snippet: null } } }),
    )?;
    crate::stack::wait_condition(&ctx.client, ns, "links", "Degraded", "False").await?;
    let ingresses = &ingresses;
    eventually("the remaining annotation applied", TIMEOUT, || async move {
        let ingress = ingresses.get("links").await.map_err(|e| e.to_string())?;
        let annotations = ingress.metadata.annotations.unwrap_or_default();
        match (annotations.get(issuer), annotations.get(snippet)) {
            (Some(_), None) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await
}

/// An object made by someone else under a child's name is neither applied over nor adopted:
/// the operator reports it and builds the rest of the stack.
pub async fn an_object_it_did_not_create_is_left_alone(ctx: &Ctx) -> Result {
    let ns = ctx.ns.as_str();
    let config_maps: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), ns);
    let mine: ConfigMap = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "links-config", "namespace": ns },
        "data": { "LISTEN_ADDR": "0.0.0.0:9999", "owner": "someone else" },
    }))?;
    let before = config_maps.create(&Default::default(), &mine).await?;
    // A generated Secret's name too: its key was chosen by someone else.
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let chosen: Secret = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "links-admin", "namespace": ns },
        "stringData": { "api-key": "chosen-by-someone-else" },
    }))?;
    let secret_before = secrets.create(&Default::default(), &chosen).await?;
    crate::stack::provide_volume(&ctx.client, ns, "data-links-postgres-0", "1Gi", None).await?;
    crate::stack::apply(&example(&ctx.suite.root, "minimal.yaml", ns)?)?;

    let degraded =
        crate::stack::wait_condition(&ctx.client, ns, "links", "Degraded", "True").await?;
    let condition = degraded
        .data
        .pointer("/status/conditions")
        .and_then(|c| c.as_array())
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Degraded"))
        .cloned()
        .unwrap_or_default();
    ensure!(
        condition["reason"] == "ObjectNotOwned"
            && condition["message"].as_str().is_some_and(
                |m| m.contains("ConfigMap links-config") && m.contains("Secret links-admin")
            ),
        "Degraded: {condition}"
    );
    // The rest of the stack was applied.
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), ns);
    ensure!(
        deployments.get_opt("links").await?.is_some(),
        "the app Deployment was not applied"
    );
    let after = config_maps.get("links-config").await?;
    let managers: Vec<_> = after
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter_map(|m| m.manager.clone())
        .collect();
    ensure!(
        after.metadata.resource_version == before.metadata.resource_version
            && after.data == before.data
            && after.metadata.owner_references.is_none()
            && !managers.iter().any(|m| m == "shortener-operator"),
        "the ConfigMap was changed: {:?} managers {managers:?}",
        after.data
    );
    let secret_after = secrets.get("links-admin").await?;
    ensure!(
        secret_after.metadata.resource_version == secret_before.metadata.resource_version
            && secret_after.metadata.owner_references.is_none(),
        "the Secret links-admin was changed"
    );
    Ok(())
}

/// The operator chart with `watchNamespaces`: Roles in the watched namespace only, so the
/// ServiceAccount may touch nothing elsewhere; the operator run with them reconciles there.
pub async fn namespaced_install_grants_nothing_outside_its_namespaces(ctx: &Ctx) -> Result {
    let ns = ctx.ns.as_str();
    let chart = ctx.suite.root.join("charts/shortener-operator");
    let chart = chart.to_string_lossy();
    let watch = format!("watchNamespaces={{{ns}}}");
    crate::cluster::must(
        "helm",
        &[
            "install",
            "namespaced",
            &chart,
            "-n",
            ns,
            "--skip-crds",
            "--set",
            "replicaCount=0",
            "--set",
            &watch,
        ],
        None,
    )?;
    let account = format!(
        "system:serviceaccount:{ns}:{}",
        crate::operator::SERVICE_ACCOUNT
    );
    let can = |verb: &str, resource: &str, namespace: Option<&str>| -> Result<String> {
        let mut args = vec!["auth", "can-i", verb, resource, "--as", account.as_str()];
        match namespace {
            Some(namespace) => args.extend(["-n", namespace]),
            None => args.push("-A"),
        }
        Ok(crate::cluster::run("kubectl", &args, None)?
            .stdout
            .trim()
            .to_string())
    };
    let mut wrong = Vec::new();
    for (verb, resource) in [
        ("get", "secrets"),
        ("create", "secrets"),
        ("create", "deployments.apps"),
        ("patch", "deployments.apps"),
        ("create", "serviceaccounts"),
        ("list", "shorteners.shortener.dev"),
        ("patch", "httproutes.gateway.networking.k8s.io"),
        ("watch", "httproutes.gateway.networking.k8s.io"),
    ] {
        if can(verb, resource, Some(ns))? != "yes" {
            wrong.push(format!("may not {verb} {resource} in {ns}"));
        }
    }
    for other in [crate::OPERATOR_NAMESPACE, "default", "kube-system"] {
        for (verb, resource) in [
            ("get", "secrets"),
            ("list", "secrets"),
            ("create", "secrets"),
            ("get", "deployments.apps"),
            ("create", "deployments.apps"),
            ("patch", "deployments.apps"),
            ("create", "serviceaccounts"),
            ("patch", "serviceaccounts"),
            ("list", "shorteners.shortener.dev"),
            ("patch", "httproutes.gateway.networking.k8s.io"),
            ("list", "gateways.gateway.networking.k8s.io"),
        ] {
            if can(verb, resource, Some(other))? != "no" {
                wrong.push(format!("may {verb} {resource} in {other}"));
            }
        }
    }
    for (verb, resource) in [
        ("list", "secrets"),
        ("list", "deployments.apps"),
        ("list", "serviceaccounts"),
        ("list", "httproutes.gateway.networking.k8s.io"),
    ] {
        if can(verb, resource, None)? != "no" {
            wrong.push(format!("may {verb} {resource} in all namespaces"));
        }
    }
    ensure!(wrong.is_empty(), "the namespaced role: {wrong:?}");

    // The operator as that ServiceAccount, watching only this namespace, reconciles in it
    // without a single refused request.
    let kubeconfig = ctx.suite.work.join(format!("{ns}.kubeconfig"));
    crate::operator::service_account_kubeconfig(ns, &kubeconfig)?;
    let mut process = crate::operator::OperatorProcess::start_with(
        "namespaced",
        &kubeconfig,
        ns,
        &ctx.suite.work,
        &["--watch-namespaces", ns],
    )?;
    let result = async {
        ready_minimal(ctx).await?;
        let process = &process;
        let key = format!("{ns}/links");
        let key = &key;
        eventually(
            "the namespaced operator reconciles",
            TIMEOUT,
            || async move {
                let log = process.log_tail(usize::MAX);
                if log.contains("forbidden") {
                    return Err(format!("a request was refused:\n{}", process.log_tail(5)));
                }
                if log.contains("\"reconciled\"") && log.contains(key.as_str()) {
                    Ok(())
                } else {
                    Err(process.log_tail(3))
                }
            },
        )
        .await
    }
    .await;
    let log = process.log_tail(usize::MAX);
    process.stop().await?;
    result?;
    ensure!(!log.contains("forbidden"), "a request was refused: {log}");
    Ok(())
}
