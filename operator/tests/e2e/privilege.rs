//! Least privilege and isolation of each Shortener, read back from the API server.

use base64::Engine;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::api::networking::v1::Ingress;
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
    ensure!(
        backend != "links"
            && get_opt(&ctx.client, ns, "Service", backend)
                .await?
                .is_none(),
        "/metrics is routed to an existing Service {backend}"
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
