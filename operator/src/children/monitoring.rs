//! Prometheus Operator objects and the Grafana dashboard.
//!
//! ServiceMonitor and PrometheusRule have no typed bindings, so they are built as dynamic
//! objects; the reconciler applies them only when their CRDs are served.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use serde_json::{Value, json};

use super::{Child, Component, Instance};
use crate::error::{Error, Result};

pub const MONITORING_GROUP: &str = "monitoring.coreos.com";
pub const MONITORING_VERSION: &str = "monitoring.coreos.com/v1";

pub fn service_monitor_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(MONITORING_GROUP, "v1", "ServiceMonitor"),
        "servicemonitors",
    )
}

pub fn prometheus_rule_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(MONITORING_GROUP, "v1", "PrometheusRule"),
        "prometheusrules",
    )
}

fn monitoring_labels(instance: &Instance<'_>) -> BTreeMap<String, String> {
    let mut labels = instance.spec().monitoring.labels.clone();
    // Our labels win: the selector and ownership depend on them.
    labels.extend(instance.labels(Component::App));
    labels
}

fn dynamic(resource: ApiResource, instance: &Instance<'_>, spec: Value) -> Result<Child> {
    let mut metadata = instance.meta(instance.child_name(Component::App), Component::App);
    metadata.labels = Some(monitoring_labels(instance));
    let object = DynamicObject {
        types: Some(kube::api::TypeMeta {
            api_version: resource.api_version.clone(),
            kind: resource.kind.clone(),
        }),
        metadata,
        data: json!({ "spec": spec }),
    };
    Ok(Child::Dynamic(resource, object))
}

/// Scrapes `/metrics` on every app pod through the app Service's endpoints.
pub fn service_monitor(instance: &Instance<'_>) -> Result<Child> {
    let spec = json!({
        "selector": { "matchLabels": instance.selector_labels(Component::App) },
        "namespaceSelector": { "matchNames": [instance.namespace] },
        "endpoints": [{
            "port": "http",
            "path": "/metrics",
            "interval": "30s",
            "scrapeTimeout": "10s",
        }],
    });
    dynamic(service_monitor_resource(), instance, spec)
}

/// The alerting rules of the whole project (`monitoring/alerts.yaml`), written against the
/// local stack's job names; [`prometheus_rule`] scopes them to one Shortener.
pub const ALERTS_YAML: &str = include_str!("../../../monitoring/alerts.yaml");

/// The Grafana dashboard of the whole project (`monitoring/dashboard.json`).
pub const DASHBOARD_JSON: &str = include_str!("../../../monitoring/dashboard.json");

/// Rule groups of `alerts.yaml` and whether this Shortener has what they watch.
fn group_applies(group: &str, instance: &Instance<'_>) -> bool {
    let spec = instance.spec();
    match group {
        "shortener-database" => spec.database.embedded().is_some(),
        "shortener-backup" => spec
            .database
            .embedded()
            .is_some_and(|postgres| postgres.backup.is_some()),
        "shortener-redis" => spec.redis.external.is_none(),
        // Both watch ingress-nginx's own metrics: with another class (or an HTTPRoute) they
        // would match nothing and never fire.
        "shortener-ingress" => nginx_ingress(instance).is_some(),
        "shortener-tls" => nginx_ingress(instance)
            .is_some_and(|ingress| ingress.host.is_some() && ingress.tls_secret_name.is_some()),
        _ => true,
    }
}

/// The Ingress, when the service is exposed by one that ingress-nginx serves.
fn nginx_ingress<'a>(instance: &Instance<'a>) -> Option<&'a crate::crd::IngressSpec> {
    instance
        .exposure()
        .ingress()
        .filter(|ingress| ingress.is_nginx())
}

/// A string as a PromQL double-quoted literal.
fn promql_string(value: &str) -> String {
    let escaped = value.replace('\\', r"\\").replace('"', r#"\""#);
    format!("\"{escaped}\"")
}

/// How each selector term of `alerts.yaml` (local stack job names) reads for this Shortener:
/// the labels the Prometheus Operator and kube-state-metrics give its targets and objects.
/// `None`: nothing in the cluster carries such labels for it, and the rules using the term
/// are left out (a rule whose selector matches nothing is an alert that can never fire).
/// The table in the header of `alerts.yaml` documents the same mapping.
pub fn rule_scope(instance: &Instance<'_>) -> Vec<(&'static str, Option<String>)> {
    let ns = promql_string(&instance.namespace);
    let name = |component: Component| promql_string(&instance.child_name(component));
    let mut scope = vec![
        (
            r#"job="shortener""#,
            Some(format!("namespace={ns},service={}", name(Component::App))),
        ),
        // The local stack scrapes exporters of PostgreSQL, PgBouncer and Redis; the operator
        // runs none, so no target has these jobs: their health comes from kube-state-metrics
        // (below) and the app's own metrics (`shortener_redis_up`, the pool gauges).
        (r#"job="postgres""#, None),
        (r#"job="pgbouncer""#, None),
        (r#"job="redis""#, None),
        (
            r#"deployment="shortener""#,
            Some(format!(
                "namespace={ns},deployment={}",
                name(Component::App)
            )),
        ),
        (
            r#"deployment="pgbouncer""#,
            Some(format!(
                "namespace={ns},deployment={}",
                name(Component::PgBouncer)
            )),
        ),
        (
            r#"deployment="redis""#,
            Some(format!(
                "namespace={ns},deployment={}",
                name(Component::Redis)
            )),
        ),
        (
            r#"statefulset="postgres""#,
            Some(format!(
                "namespace={ns},statefulset={}",
                name(Component::Postgres)
            )),
        ),
        (
            r#"cronjob="postgres-backup""#,
            Some(format!(
                "namespace={ns},cronjob={}",
                name(Component::Backup)
            )),
        ),
        // The Ingress carries the app's name; ingress-nginx reports the Ingress' namespace as
        // `exported_namespace` or `namespace` depending on its ServiceMonitor, so only the
        // name scopes (identical alerts from two rules are merged by Alertmanager).
        (
            r#"job="ingress-nginx""#,
            Some(format!("ingress={}", name(Component::App))),
        ),
        // The operator serves every Shortener from one Deployment; its metrics are per
        // Shortener by their `name` label (the namespace label depends on honorLabels).
        (
            r#"job="shortener-operator""#,
            Some(format!("name={}", promql_string(&instance.name))),
        ),
    ];
    if let Some(host) = nginx_ingress(instance).and_then(|ingress| ingress.host.as_ref()) {
        scope.push((
            r#"host!="_""#,
            Some(format!("host={}", promql_string(host))),
        ));
    }
    scope
}

/// The expression scoped to the instance, or `None` when it reads a term nothing carries.
fn scoped(expr: &str, scope: &[(&'static str, Option<String>)]) -> Option<String> {
    scope.iter().try_fold(expr.to_owned(), |expr, (from, to)| {
        match (expr.contains(from), to) {
            (false, _) => Some(expr),
            (true, Some(to)) => Some(expr.replace(from, to)),
            (true, None) => None,
        }
    })
}

/// The groups of `alerts.yaml` this Shortener has components for, with every selector
/// scoped to it, so two Shorteners (even in one namespace) do not mix.
pub fn alert_groups(instance: &Instance<'_>) -> Result<Value> {
    let file: Value = serde_yaml::from_str(ALERTS_YAML)?;
    let scope = rule_scope(instance);
    let mut groups = Vec::new();
    for group in file["groups"].as_array().into_iter().flatten() {
        let name = group["name"].as_str().unwrap_or_default();
        if !group_applies(name, instance) {
            continue;
        }
        let mut group = group.clone();
        group["name"] = json!(format!("{name}.{}", instance.name));
        if let Some(rules) = group["rules"].as_array_mut() {
            rules.retain_mut(|rule| {
                let Some(expr) = rule["expr"].as_str().and_then(|e| scoped(e, &scope)) else {
                    return false;
                };
                rule["expr"] = json!(expr);
                true
            });
        }
        groups.push(group);
    }
    Ok(Value::Array(groups))
}

/// The alerts of `monitoring/alerts.yaml`, scoped to this instance.
pub fn prometheus_rule(instance: &Instance<'_>) -> Result<Child> {
    let spec = json!({ "groups": alert_groups(instance)? });
    dynamic(prometheus_rule_resource(), instance, spec)
}

pub fn dashboard_name(instance: &Instance<'_>) -> String {
    format!("{}-dashboard", instance.name)
}

/// Grafana allows 40 characters; a long namespace and name fall back to a digest.
fn dashboard_uid(instance: &Instance<'_>) -> String {
    let readable = format!("shortener-{}-{}", instance.namespace, instance.name);
    if readable.len() <= 40 {
        return readable;
    }
    let key = BTreeMap::from([(instance.namespace.clone(), instance.name.clone())]);
    format!("shortener-{}", &super::config_digest(&key)[..20])
}

/// `monitoring/dashboard.json` with this instance's uid and title, and its namespace and
/// Shortener preselected (the variables still offer every other one).
pub fn dashboard(instance: &Instance<'_>) -> Result<Value> {
    let mut dashboard: Value =
        serde_json::from_str(DASHBOARD_JSON).map_err(|e| Error::Build("dashboard", e))?;
    let ns = &instance.namespace;
    dashboard["uid"] = json!(dashboard_uid(instance));
    dashboard["title"] = json!(format!("Shortener {ns}/{}", instance.name));
    let job = instance.child_name(Component::App);
    for variable in dashboard["templating"]["list"]
        .as_array_mut()
        .into_iter()
        .flatten()
    {
        let value = match variable["name"].as_str() {
            Some("namespace") => ns.clone(),
            Some("job") => job.clone(),
            _ => continue,
        };
        variable["current"] = json!({ "selected": true, "text": value, "value": value });
    }
    Ok(dashboard)
}

/// Grafana dashboard, picked up by the Grafana sidecar through the `grafana_dashboard` label.
pub fn dashboard_config_map(instance: &Instance<'_>) -> Result<ConfigMap> {
    let body = serde_json::to_string_pretty(&dashboard(instance)?)
        .map_err(|e| Error::Build("dashboard", e))?;
    let mut metadata = instance.meta(dashboard_name(instance), Component::Monitoring);
    if let Some(labels) = metadata.labels.as_mut() {
        labels.insert("grafana_dashboard".to_string(), "1".to_string());
    }
    Ok(ConfigMap {
        metadata,
        data: Some(BTreeMap::from([(
            format!("shortener-{}.json", instance.name),
            body,
        )])),
        ..ConfigMap::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::children::testing::{assert_owned, shortener};
    use crate::crd::{ExternalSecretRef, ShortenerSpec};

    #[test]
    fn service_monitor_scrapes_app_metrics_with_extra_labels() {
        let mut spec = ShortenerSpec::default();
        spec.monitoring
            .labels
            .insert("release".into(), "kube-prometheus-stack".into());
        let s = shortener(spec);
        let i = Instance::new(&s).unwrap();
        let child = service_monitor(&i).unwrap();
        assert_eq!(child.kind(), "ServiceMonitor");
        assert_eq!(child.resource().plural, "servicemonitors");
        let v = child.to_value().unwrap();
        assert_eq!(v["apiVersion"], "monitoring.coreos.com/v1");
        assert_eq!(v["metadata"]["labels"]["release"], "kube-prometheus-stack");
        assert_eq!(v["spec"]["endpoints"][0]["path"], "/metrics");
        assert_eq!(v["spec"]["endpoints"][0]["port"], "http");
        assert_eq!(
            v["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"],
            "app"
        );
        assert_owned(child.meta(), "app");
    }

    /// Selectors (`{...}`) of a PromQL expression; braces inside string literals (the
    /// `/{short_code}` route) do not count.
    fn selectors(expr: &str) -> Vec<String> {
        let (mut found, mut current, mut depth, mut quoted, mut escaped) =
            (Vec::new(), String::new(), 0, false, false);
        for c in expr.chars() {
            if quoted {
                quoted = escaped || c != '"';
                escaped = !escaped && c == '\\';
            } else if c == '"' {
                quoted = true;
            } else if c == '{' {
                depth += 1;
                continue;
            } else if c == '}' {
                depth -= 1;
                found.push(std::mem::take(&mut current));
                continue;
            }
            if depth > 0 {
                current.push(c);
            }
        }
        found
    }

    fn rules(groups: &Value) -> Vec<Value> {
        groups
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|g| g["rules"].as_array().unwrap().clone())
            .collect()
    }

    fn group_names(groups: &Value) -> Vec<&str> {
        groups
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["name"].as_str().unwrap())
            .collect()
    }

    /// Every optional group applies: TLS on an nginx Ingress, scheduled backups.
    fn with_tls() -> ShortenerSpec {
        let mut spec = ShortenerSpec::default();
        spec.ingress.host = Some("sho.rt".into());
        spec.ingress.tls_secret_name = Some("sho-rt-tls".into());
        crate::children::testing::with_daily_backups(&mut spec);
        spec
    }

    #[test]
    fn alerts_yaml_has_only_groups_the_operator_knows() {
        let file: Value = serde_yaml::from_str(ALERTS_YAML).unwrap();
        assert_eq!(
            group_names(&file["groups"]),
            vec![
                "shortener",
                "shortener-database",
                "shortener-backup",
                "shortener-redis",
                "shortener-ingress",
                "shortener-tls",
                "shortener-operator"
            ]
        );
    }

    #[test]
    fn prometheus_rule_carries_every_alert_of_alerts_yaml() {
        let s = shortener(with_tls());
        let i = Instance::new(&s).unwrap();
        let v = prometheus_rule(&i).unwrap().to_value().unwrap();
        assert_eq!(v["kind"], "PrometheusRule");
        let groups = &v["spec"]["groups"];
        assert_eq!(
            group_names(groups),
            vec![
                "shortener.links",
                "shortener-database.links",
                "shortener-backup.links",
                "shortener-redis.links",
                "shortener-ingress.links",
                "shortener-tls.links",
                "shortener-operator.links"
            ]
        );
        // Every rule of the file but those on the exporters' jobs, which no target of the
        // cluster carries: a PostgresDown, PgBouncerDown and RedisDown each remain, from
        // kube-state-metrics.
        let file: Value = serde_yaml::from_str(ALERTS_YAML).unwrap();
        let exporters = [r#"job="postgres""#, r#"job="pgbouncer""#, r#"job="redis""#];
        let kept = rules(&file["groups"])
            .into_iter()
            .filter(|r| {
                !exporters
                    .iter()
                    .any(|j| r["expr"].as_str().unwrap().contains(j))
            })
            .count();
        assert_eq!(rules(groups).len(), kept);
        assert_eq!(rules(&file["groups"]).len() - kept, 6);
        for r in rules(groups) {
            let expr = r["expr"].as_str().unwrap();
            for metric in ["pg_up", "pgbouncer_up", "redis_up{"] {
                assert!(!expr.starts_with(metric), "{expr}");
            }
        }
        let mut names: Vec<_> = rules(groups)
            .iter()
            .map(|r| r["alert"].as_str().unwrap().to_string())
            .collect();
        names.dedup();
        for wanted in [
            "ShortenerDown",
            "ShortenerHighErrorRatio",
            "ShortenerHighLatencyP95",
            "ShortenerHighLatencyP99",
            "ShortenerCacheHitRatioLow",
            "ShortenerMemoryHigh",
            "ShortenerDatabasePoolSaturated",
            "ShortenerClickBacklog",
            "ShortenerClicksSpilled",
            "ShortenerClicksDropped",
            "ShortenerRedisDown",
            "PostgresDown",
            "PgBouncerDown",
            "RedisDown",
            "IngressErrors",
            "CertificateExpiringSoon",
            "ShortenerOperatorReconcileFailing",
        ] {
            assert!(names.iter().any(|n| n == wanted), "{wanted} missing");
        }
        for r in rules(groups) {
            let alert = r["alert"].as_str().unwrap();
            let severity = r["labels"]["severity"].as_str().unwrap();
            assert!(
                ["critical", "warning", "info"].contains(&severity),
                "{alert}"
            );
            assert!(r["annotations"]["summary"].is_string(), "{alert}");
            assert!(r["annotations"]["description"].is_string(), "{alert}");
            let runbook = r["annotations"]["runbook_url"].as_str().unwrap();
            assert!(
                runbook.ends_with(&format!("/docs/runbooks/{alert}.md")),
                "{alert}: {runbook}"
            );
        }
    }

    #[test]
    fn prometheus_rule_alerts_are_scoped_to_the_instance() {
        let s = shortener(with_tls());
        let i = Instance::new(&s).unwrap();
        let v = prometheus_rule(&i).unwrap().to_value().unwrap();
        let scoped_by = [
            r#"namespace="web""#,
            r#"ingress="links""#,
            r#"name="links""#,
            r#"host="sho.rt""#,
        ];
        for r in rules(&v["spec"]["groups"]) {
            let expr = r["expr"].as_str().unwrap();
            let found = selectors(expr);
            // No `job` label is left (`cronjob` is kube-state-metrics' own label).
            let job_label = |selector: &String| {
                selector
                    .split(',')
                    .any(|term| term.trim_start().starts_with("job"))
            };
            assert!(!found.iter().any(job_label), "{expr}");
            assert!(!found.is_empty(), "{expr}");
            for selector in found {
                assert!(
                    scoped_by.iter().any(|term| selector.contains(term)),
                    "{}: selector {{{selector}}} is not scoped to the instance",
                    r["alert"]
                );
            }
        }
    }

    #[test]
    fn app_selectors_use_the_service_monitor_labels() {
        let s = shortener(ShortenerSpec::default());
        let i = Instance::new(&s).unwrap();
        let groups = alert_groups(&i).unwrap();
        let down = &rules(&groups)[0];
        assert_eq!(down["alert"], "ShortenerDown");
        assert_eq!(
            down["expr"],
            "sum by (job, namespace) (up{namespace=\"web\",service=\"links\"}) == 0\nor\n\
             label_replace(absent(up{namespace=\"web\",service=\"links\"}), \"job\", \"$1\", \"service\", \"(.+)\")"
        );
        let postgres = rules(&groups)
            .into_iter()
            .find(|r| r["alert"] == "PostgresDown" && r["labels"]["signal"] == "kubernetes")
            .unwrap();
        assert_eq!(
            postgres["expr"],
            r#"kube_statefulset_status_replicas_ready{namespace="web",statefulset="links-postgres"} == 0"#
        );
    }

    #[test]
    fn alert_groups_follow_what_the_instance_runs() {
        let s = shortener(ShortenerSpec::default());
        let i = Instance::new(&s).unwrap();
        assert_eq!(
            group_names(&alert_groups(&i).unwrap()),
            vec![
                "shortener.links",
                "shortener-database.links",
                "shortener-redis.links",
                "shortener-ingress.links",
                "shortener-operator.links"
            ]
        );
        let mut spec = ShortenerSpec::default();
        spec.database.external = Some(ExternalSecretRef {
            secret_name: "pg".into(),
            key: "url".into(),
        });
        spec.redis.external = Some(ExternalSecretRef {
            secret_name: "cache".into(),
            key: "url".into(),
        });
        spec.ingress.enabled = Some(false);
        spec.ingress.host = Some("sho.rt".into());
        spec.ingress.tls_secret_name = Some("sho-rt-tls".into());
        let s = shortener(spec);
        let i = Instance::new(&s).unwrap();
        assert_eq!(
            group_names(&alert_groups(&i).unwrap()),
            vec!["shortener.links", "shortener-operator.links"]
        );
    }

    /// The ingress and certificate alerts read ingress-nginx's metrics: only an nginx-class
    /// Ingress gets them.
    #[test]
    fn ingress_nginx_alerts_only_for_the_nginx_class() {
        let names = |spec: ShortenerSpec| {
            let s = shortener(spec);
            let groups = alert_groups(&Instance::new(&s).unwrap()).unwrap();
            group_names(&groups)
                .into_iter()
                .map(str::to_string)
                .collect::<Vec<_>>()
        };
        let mut nginx = ShortenerSpec::default();
        nginx.ingress.host = Some("sho.rt".into());
        nginx.ingress.tls_secret_name = Some("sho-rt-tls".into());
        let groups = names(nginx.clone());
        assert!(groups.contains(&"shortener-ingress.links".to_string()));
        assert!(groups.contains(&"shortener-tls.links".to_string()));

        let mut traefik = nginx.clone();
        traefik.ingress.class_name = "traefik".into();
        let groups = names(traefik);
        assert!(
            !groups.iter().any(|g| g.starts_with("shortener-ingress")),
            "{groups:?}"
        );
        assert!(
            !groups.iter().any(|g| g.starts_with("shortener-tls")),
            "{groups:?}"
        );

        let routed = ShortenerSpec {
            http_route: Some(crate::crd::HttpRouteSpec {
                parent_refs: vec![crate::crd::GatewayParentRef {
                    name: "public".into(),
                    namespace: None,
                    section_name: None,
                    port: None,
                }],
                hostnames: vec!["sho.rt".into()],
                scheme: crate::crd::PublicScheme::Https,
                annotations: BTreeMap::new(),
            }),
            ..ShortenerSpec::default()
        };
        let groups = names(routed);
        assert!(
            !groups.iter().any(|g| g.starts_with("shortener-ingress")),
            "{groups:?}"
        );
    }

    #[test]
    fn dashboard_is_labelled_for_the_grafana_sidecar_and_valid_json() {
        let s = shortener(ShortenerSpec::default());
        let i = Instance::new(&s).unwrap();
        let cm = dashboard_config_map(&i).unwrap();
        assert_owned(&cm.metadata, "monitoring");
        assert_eq!(
            cm.metadata.labels.as_ref().unwrap()["grafana_dashboard"],
            "1"
        );
        let data = cm.data.unwrap();
        let json: Value = serde_json::from_str(&data["shortener-links.json"]).unwrap();
        let file: Value = serde_json::from_str(DASHBOARD_JSON).unwrap();
        assert_eq!(json["panels"], file["panels"]);
        assert_eq!(json["uid"], "shortener-web-links");
        assert_eq!(json["title"], "Shortener web/links");
        let current = |name: &str| {
            json["templating"]["list"]
                .as_array()
                .unwrap()
                .iter()
                .find(|v| v["name"] == name)
                .unwrap()["current"]["value"]
                .clone()
        };
        assert_eq!(current("namespace"), "web");
        assert_eq!(current("job"), "links");
    }

    #[test]
    fn dashboard_uid_fits_grafana_for_long_names() {
        let mut s = shortener(ShortenerSpec::default());
        s.metadata.namespace = Some("a-rather-long-namespace-for-the-team".into());
        let i = Instance::new(&s).unwrap();
        let uid = dashboard(&i).unwrap()["uid"].as_str().unwrap().to_string();
        assert!(uid.len() <= 40, "{uid}");
        assert!(uid.starts_with("shortener-"));
    }
}
