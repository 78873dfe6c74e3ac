//! Monitoring as platform teams run it: the node's Prometheus Operator turns the
//! ServiceMonitors and the PrometheusRule the operator made into a real Prometheus's scrape
//! jobs and rules, and kube-state-metrics describes the objects
//! (`scripts/cluster-monitoring.sh`). Proves that the app pods are scraped as the
//! ServiceMonitor says, through the Shortener's NetworkPolicy, that the rules load and
//! evaluate, and that no selector of any rule matches nothing: such a rule is an alert that
//! can never fire.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use kube::ResourceExt;
use regex::Regex;
use serde_json::Value;

use crate::cluster::{Result, at, eventually, get_opt};
use crate::stack::{is_ready, pods};
use crate::{OPERATOR_NAMESPACE, Real, ensure};

/// The chart's metrics Service, which its ServiceMonitor selects.
const OPERATOR_METRICS: &str = "shortener-operator-metrics";

/// The minimal example's Shortener, which the earlier tests applied and sent traffic to.
const NS: &str = "default";
const NAME: &str = "links";

/// A scrape every 30 s (the ServiceMonitor's interval), an evaluation every 15 s, service
/// discovery and the config reloader before both: minutes on a busy machine, not seconds.
const PATIENCE: Duration = Duration::from_secs(240);

/// Selectors that rightly match nothing here, each with the reason: (metric, a matcher of the
/// selector, why). A rule about a failure has nothing to select on a healthy stack until that
/// failure; a few watch parts this node does not run.
const EXPECTED_EMPTY: &[(&str, &str, &str)] = &[
    (
        "shortener_http_requests_total",
        r#"status=~"5..""#,
        "a 5xx answer",
    ),
    (
        "shortener_http_requests_total",
        r#"status="503""#,
        "a 503, while the database is away",
    ),
    (
        "shortener_operator_reconcile_failures_total",
        "name=",
        "a failed reconciliation",
    ),
    (
        "shortener_operator_link_reconciliations_total",
        r#"result="error""#,
        "a failed ShortLink pass",
    ),
    (
        "nginx_ingress_controller_requests",
        "ingress=",
        "ingress-nginx's own metric: this node serves the class nginx with Traefik",
    ),
];

/// Prometheus's HTTP API.
struct Prometheus {
    http: reqwest::Client,
    base: String,
}

impl Prometheus {
    fn new(real: &Real) -> Result<Self> {
        let base = real.prometheus_url.clone().ok_or(
            "SHORTENER_PROMETHEUS_URL is not set: eval \"$(scripts/cluster.sh env)\" with the real node up",
        )?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?;
        Ok(Self { http, base })
    }

    /// The `data` of an API answer, or why there is none.
    async fn data(&self, path: &str, query: &[(&str, &str)]) -> std::result::Result<Value, String> {
        let url = format!("{}{path}", self.base);
        let response = self
            .http
            .get(&url)
            .query(query)
            .send()
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        let status = response.status();
        let body: Value = response
            .json()
            .await
            .map_err(|e| format!("GET {url}: {status}, not JSON: {e}"))?;
        if at(&body, "/status") != "success" {
            return Err(format!("GET {url}: {status} {body}"));
        }
        Ok(body["data"].clone())
    }

    /// The series of an instant query.
    async fn query(&self, promql: &str) -> std::result::Result<Vec<Value>, String> {
        let data = self.data("/api/v1/query", &[("query", promql)]).await?;
        Ok(data["result"].as_array().cloned().unwrap_or_default())
    }

    /// The active targets whose labels include all of `labels`: (labels, health, lastError).
    async fn targets(&self, labels: &[(&str, &str)]) -> std::result::Result<Vec<Value>, String> {
        let data = self.data("/api/v1/targets", &[("state", "active")]).await?;
        Ok(data["activeTargets"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|t| labels.iter().all(|(k, v)| t["labels"][k] == *v))
            .cloned()
            .collect())
    }
}

/// Every app pod is a target of the job the ServiceMonitor makes (its Service's name, on the
/// endpoint port and path it names) and is up; so are the operator (the chart's
/// ServiceMonitor) and kube-state-metrics, which reports the app's Deployment.
pub async fn the_stack_is_scraped_as_its_service_monitors_say(real: &'static Real) -> Result {
    let prometheus = Prometheus::new(real)?;
    let monitor = get_opt(&real.client, NS, "ServiceMonitor", NAME)
        .await?
        .ok_or("the operator made no ServiceMonitor although the node serves its CRD")?;
    let endpoint = at(&monitor.data, "/spec/endpoints/0");
    let (port, path) = (
        endpoint["port"].as_str().unwrap_or_default(),
        endpoint["path"].as_str().unwrap_or("/metrics"),
    );
    let app: BTreeSet<String> = pods(&real.client, NS, NAME, "app")
        .await?
        .iter()
        .filter(|p| is_ready(p))
        .map(|p| p.name_any())
        .collect();
    ensure!(app.len() == 3, "{} app pods Ready, want 3", app.len());
    let scraped = eventually("every app pod scraped, up", PATIENCE, || async {
        let targets = prometheus
            .targets(&[("namespace", NS), ("service", NAME)])
            .await?;
        let mut up = BTreeSet::new();
        for target in &targets {
            let pod = target["labels"]["pod"].as_str().unwrap_or_default();
            let url = target["scrapeUrl"].as_str().unwrap_or_default();
            if target["labels"]["job"] != NAME || target["labels"]["endpoint"] != port {
                return Err(format!("target {url} has labels {}", target["labels"]));
            }
            if !url.ends_with(path) {
                return Err(format!("target {url} does not scrape {path}"));
            }
            match target["health"].as_str() {
                Some("up") => {
                    up.insert(pod.to_string());
                }
                health => {
                    return Err(format!(
                        "{pod}: {health:?} {}",
                        target["lastError"].as_str().unwrap_or_default()
                    ));
                }
            }
        }
        if up == app {
            Ok(targets.len())
        } else {
            Err(format!("up: {up:?}, app pods: {app:?}"))
        }
    })
    .await?;
    println!("    {scraped} app pods scraped as job {NAME:?} on port {port:?} {path}, all up");
    for (what, labels) in [
        (
            "the operator",
            [
                ("namespace", OPERATOR_NAMESPACE),
                ("service", OPERATOR_METRICS),
            ],
        ),
        (
            "kube-state-metrics",
            [
                ("namespace", "monitoring"),
                ("service", "kube-state-metrics"),
            ],
        ),
    ] {
        eventually(&format!("{what} scraped, up"), PATIENCE, || async {
            let targets = prometheus.targets(&labels).await?;
            match targets.first() {
                Some(t) if t["health"] == "up" => Ok(()),
                Some(t) => Err(format!("{}: {}", t["health"], t["lastError"])),
                None => Err("no target".to_string()),
            }
        })
        .await?;
    }
    let available = format!(
        r#"kube_deployment_status_replicas_available{{namespace="{NS}",deployment="{NAME}"}}"#
    );
    eventually(
        "kube-state-metrics reports the app's Deployment",
        PATIENCE,
        || async {
            let series = prometheus.query(&available).await?;
            match series.first().and_then(|s| s["value"][1].as_str()) {
                Some("3") => Ok(()),
                other => Err(format!("{available} = {other:?}")),
            }
        },
    )
    .await?;
    println!("    the operator and kube-state-metrics scraped, up; {available} = 3");
    Ok(())
}

/// The PrometheusRule's groups are loaded and every rule evaluates; every selector of every
/// rule matches series of the running stack, except those listed in [`EXPECTED_EMPTY`].
pub async fn every_rule_loads_and_selects_series(real: &'static Real) -> Result {
    let prometheus = Prometheus::new(real)?;
    let rule = get_opt(&real.client, NS, "PrometheusRule", NAME)
        .await?
        .ok_or("the operator made no PrometheusRule although the node serves its CRD")?;
    let mut expected: BTreeMap<String, usize> = BTreeMap::new();
    let mut exprs: Vec<(String, String)> = Vec::new();
    for group in at(&rule.data, "/spec/groups")
        .as_array()
        .into_iter()
        .flatten()
    {
        let rules = group["rules"].as_array().cloned().unwrap_or_default();
        let name = group["name"].as_str().unwrap_or_default().to_string();
        expected.insert(name, rules.len());
        for r in rules {
            let alert = r["alert"].as_str().or(r["record"].as_str()).unwrap_or("?");
            exprs.push((
                alert.to_string(),
                r["expr"].as_str().unwrap_or_default().to_string(),
            ));
        }
    }
    ensure!(!exprs.is_empty(), "the PrometheusRule has no rules");
    // A request without the API key, as a scanner sends: the 401 rule's selector then has a
    // series to match (the earlier tests made the redirect and management series).
    let refused = reqwest::Client::new()
        .get(format!("{}/urls", real.ingress_url))
        .send()
        .await?
        .status();
    ensure!(
        refused == reqwest::StatusCode::UNAUTHORIZED,
        "GET /urls without a key through the Ingress answered {refused}"
    );
    let loaded = eventually(
        "every group loaded, every rule evaluated",
        PATIENCE,
        || async {
            let data = prometheus.data("/api/v1/rules", &[]).await?;
            let mut seen = 0;
            for group in data["groups"].as_array().into_iter().flatten() {
                let name = group["name"].as_str().unwrap_or_default();
                let Some(want) = expected.get(name) else {
                    continue;
                };
                let rules = group["rules"].as_array().cloned().unwrap_or_default();
                if rules.len() != *want {
                    return Err(format!(
                        "group {name}: {} rules loaded, {want} in the object",
                        rules.len()
                    ));
                }
                for r in &rules {
                    if r["health"] != "ok" {
                        return Err(format!(
                            "{} in {name}: health {} {}",
                            r["name"], r["health"], r["lastError"]
                        ));
                    }
                }
                seen += 1;
            }
            if seen == expected.len() {
                Ok(seen)
            } else {
                Err(format!("{seen} of the groups {:?} loaded", expected.keys()))
            }
        },
    )
    .await?;
    println!(
        "    {loaded} groups, {} rules loaded and evaluated",
        exprs.len()
    );

    let mut selectors: BTreeMap<String, String> = BTreeMap::new();
    for (alert, expr) in &exprs {
        for selector in selectors_of(expr) {
            selectors.entry(selector).or_insert_with(|| alert.clone());
        }
    }
    let waiting: BTreeMap<String, String> = selectors
        .iter()
        .filter(|(selector, _)| expected_empty(selector).is_none())
        .map(|(s, a)| (s.clone(), a.clone()))
        .collect();
    let empty = eventually(
        "every selector of every rule matches series",
        PATIENCE,
        || async {
            let mut empty = Vec::new();
            for (selector, alert) in &waiting {
                if prometheus
                    .query(&format!("count({selector})"))
                    .await?
                    .is_empty()
                {
                    empty.push(format!("{selector} ({alert})"));
                }
            }
            if empty.is_empty() {
                Ok(())
            } else {
                Err(empty.join("; "))
            }
        },
    )
    .await;
    for (selector, alert) in &selectors {
        if let Some(why) = expected_empty(selector) {
            let now = prometheus.query(&format!("count({selector})")).await?;
            println!(
                "    {selector} ({alert}): {} ({why})",
                if now.is_empty() {
                    "no series"
                } else {
                    "has series"
                }
            );
        }
    }
    empty?;
    println!(
        "    {} selectors of {} rules all match series",
        waiting.len(),
        exprs.len()
    );
    Ok(())
}

/// Why a selector may match nothing here, if it is one of [`EXPECTED_EMPTY`].
fn expected_empty(selector: &str) -> Option<&'static str> {
    EXPECTED_EMPTY
        .iter()
        .find(|(metric, matcher, _)| {
            selector.starts_with(&format!("{metric}{{")) && selector.contains(matcher)
        })
        .map(|(_, _, event)| *event)
}

/// Every `metric{matchers}` of a PromQL expression.
fn selectors_of(expr: &str) -> Vec<String> {
    #[allow(clippy::unwrap_used)] // a constant pattern
    let pattern =
        Regex::new(r#"(^|[^\w:.])([a-zA-Z_:][\w:]*\{(?:[^}"]|"(?:[^"\\]|\\.)*")*\})"#).unwrap();
    pattern
        .captures_iter(expr)
        .map(|c| c[2].to_string())
        .collect()
}
