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
    Ok(Child { resource, object })
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

/// Alerts scoped to this instance's Service, so two Shorteners in one namespace do not mix.
pub fn prometheus_rule(instance: &Instance<'_>) -> Result<Child> {
    let ns = &instance.namespace;
    let svc = instance.child_name(Component::App);
    let sel = format!(r#"namespace="{ns}",service="{svc}""#);
    let deployment = format!(r#"namespace="{ns}",deployment="{svc}""#);
    let rule = |alert: &str, expr: String, for_: &str, severity: &str, summary: &str| {
        json!({
            "alert": alert,
            "expr": expr,
            "for": for_,
            "labels": { "severity": severity },
            "annotations": {
                "summary": summary,
                "description": format!("{summary} (Shortener {ns}/{})", instance.name),
            },
        })
    };
    let spec = json!({
        "groups": [{
            "name": format!("shortener.{}", instance.name),
            "rules": [
                rule(
                    "ShortenerDown",
                    format!("sum(up{{{sel}}}) == 0 or absent(up{{{sel}}})"),
                    "5m",
                    "critical",
                    "No shortener replica is being scraped successfully",
                ),
                rule(
                    "ShortenerHighErrorRate",
                    format!(
                        r#"sum(rate(shortener_http_requests_total{{{sel},status=~"5.."}}[5m])) / clamp_min(sum(rate(shortener_http_requests_total{{{sel}}}[5m])), 1e-9) > 0.05"#
                    ),
                    "10m",
                    "warning",
                    "More than 5% of shortener requests fail with a 5xx status",
                ),
                rule(
                    "ShortenerHighLatency",
                    format!(
                        "histogram_quantile(0.99, sum by (le) (rate(shortener_http_request_duration_seconds_bucket{{{sel}}}[5m]))) > 0.5"
                    ),
                    "10m",
                    "warning",
                    "99th percentile shortener latency is above 500ms",
                ),
                rule(
                    "ShortenerReplicasUnavailable",
                    format!(
                        "kube_deployment_status_replicas_available{{{deployment}}} < kube_deployment_spec_replicas{{{deployment}}}"
                    ),
                    "15m",
                    "warning",
                    "Fewer shortener replicas are available than desired",
                ),
            ],
        }],
    });
    dynamic(prometheus_rule_resource(), instance, spec)
}

pub fn dashboard_name(instance: &Instance<'_>) -> String {
    format!("{}-dashboard", instance.name)
}

/// Grafana dashboard, picked up by the Grafana sidecar through the `grafana_dashboard` label.
pub fn dashboard_config_map(instance: &Instance<'_>) -> Result<ConfigMap> {
    let ns = &instance.namespace;
    let svc = instance.child_name(Component::App);
    let sel = format!(r#"namespace="{ns}",service="{svc}""#);
    let panel = |id: u32, title: &str, expr: String, unit: &str, x: u32, y: u32| {
        json!({
            "id": id,
            "type": "timeseries",
            "title": title,
            "datasource": { "type": "prometheus", "uid": "${datasource}" },
            "gridPos": { "h": 8, "w": 12, "x": x, "y": y },
            "fieldConfig": { "defaults": { "unit": unit }, "overrides": [] },
            "targets": [{ "refId": "A", "expr": expr }],
        })
    };
    let dashboard = json!({
        "uid": format!("shortener-{ns}-{}", instance.name),
        "title": format!("Shortener {ns}/{}", instance.name),
        "tags": ["shortener"],
        "timezone": "browser",
        "schemaVersion": 39,
        "refresh": "30s",
        "time": { "from": "now-6h", "to": "now" },
        "templating": { "list": [{
            "name": "datasource",
            "type": "datasource",
            "query": "prometheus",
        }]},
        "panels": [
            panel(1, "Requests per second by status",
                format!("sum by (status) (rate(shortener_http_requests_total{{{sel}}}[5m]))"), "reqps", 0, 0),
            panel(2, "5xx ratio",
                format!(r#"sum(rate(shortener_http_requests_total{{{sel},status=~"5.."}}[5m])) / clamp_min(sum(rate(shortener_http_requests_total{{{sel}}}[5m])), 1e-9)"#), "percentunit", 12, 0),
            panel(3, "Latency p50 / p99",
                format!("histogram_quantile(0.99, sum by (le) (rate(shortener_http_request_duration_seconds_bucket{{{sel}}}[5m])))"), "s", 0, 8),
            panel(4, "Redirects by outcome",
                format!("sum by (outcome) (rate(shortener_redirects_total{{{sel}}}[5m]))"), "reqps", 12, 8),
            panel(5, "Replicas up",
                format!("sum(up{{{sel}}})"), "short", 0, 16),
            panel(6, "Links created per minute",
                format!("sum(rate(shortener_urls_created_total{{{sel}}}[5m])) * 60"), "short", 12, 16),
        ],
    });
    let body =
        serde_json::to_string_pretty(&dashboard).map_err(|e| Error::Build("dashboard", e))?;
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
    use crate::crd::ShortenerSpec;

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
        assert_eq!(child.resource.plural, "servicemonitors");
        let v = child.to_value().unwrap();
        assert_eq!(v["apiVersion"], "monitoring.coreos.com/v1");
        assert_eq!(v["metadata"]["labels"]["release"], "kube-prometheus-stack");
        assert_eq!(v["spec"]["endpoints"][0]["path"], "/metrics");
        assert_eq!(v["spec"]["endpoints"][0]["port"], "http");
        assert_eq!(
            v["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"],
            "app"
        );
        assert_owned(&child.object.metadata, "app");
    }

    #[test]
    fn prometheus_rule_alerts_are_scoped_to_the_instance() {
        let s = shortener(ShortenerSpec::default());
        let i = Instance::new(&s).unwrap();
        let child = prometheus_rule(&i).unwrap();
        let v = child.to_value().unwrap();
        let rules = v["spec"]["groups"][0]["rules"].as_array().unwrap();
        let names: Vec<_> = rules.iter().map(|r| r["alert"].as_str().unwrap()).collect();
        assert_eq!(
            names,
            vec![
                "ShortenerDown",
                "ShortenerHighErrorRate",
                "ShortenerHighLatency",
                "ShortenerReplicasUnavailable"
            ]
        );
        for r in rules {
            let expr = r["expr"].as_str().unwrap();
            assert!(expr.contains(r#"namespace="web""#), "{expr}");
            assert!(r["labels"]["severity"].is_string());
        }
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
        assert_eq!(json["panels"].as_array().unwrap().len(), 6);
        assert_eq!(json["uid"], "shortener-web-links");
    }
}
