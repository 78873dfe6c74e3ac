//! Exposure by a Gateway API HTTPRoute: what happens without the Gateway API, what the CEL
//! rules refuse, the route the operator writes and the Gateway's answer it reports (no Gateway
//! controller runs here, so the test writes the route's status as one would), and switching
//! between an Ingress and a route.
//!
//! The Gateway API CRDs are installed by `scripts/gateway-api.sh install` (the version the
//! project tests against) the first time a test needs them, and stay for the rest of the
//! suite, which removes them at the end if it installed them.

use std::sync::atomic::Ordering;

use kube::api::{Api, ApiResource, DynamicObject, PostParams};
use serde_json::{Value, json};

use crate::changes::ready_minimal;
use crate::cluster::{
    Result, TIMEOUT, at, eventually, get_opt, kubectl, kubectl_stdin, resource, run,
    shortener_resource,
};
use crate::install::printed_shorteners;
use crate::stack::{apply, patch_spec, provide_volume, shortener, wait_condition, wait_ready};
use crate::{Ctx, ensure};

/// The CRDs `scripts/gateway-api.sh install` applies (standard channel).
pub const GATEWAY_API_CRDS: [&str; 5] = [
    "gatewayclasses.gateway.networking.k8s.io",
    "gateways.gateway.networking.k8s.io",
    "httproutes.gateway.networking.k8s.io",
    "grpcroutes.gateway.networking.k8s.io",
    "referencegrants.gateway.networking.k8s.io",
];

const BOTH: &str = "expose the Shortener by spec.ingress or by spec.httpRoute, not both";

fn routes(ctx: &Ctx) -> Api<DynamicObject> {
    let ar = resource("gateway.networking.k8s.io/v1", "HTTPRoute", "httproutes");
    Api::namespaced_with(ctx.client.clone(), &ctx.ns, &ar)
}

fn gateway_api_served() -> Result<bool> {
    Ok(run(
        "kubectl",
        &["get", "crd", "httproutes.gateway.networking.k8s.io"],
        None,
    )?
    .success)
}

/// The Gateway API CRDs, installed by the suite unless the cluster has them.
async fn ensure_gateway_api(ctx: &Ctx) -> Result {
    if gateway_api_served()? {
        return Ok(());
    }
    let script = ctx.suite.root.join("scripts/gateway-api.sh");
    let out = run(&script.to_string_lossy(), &["install"], None)?;
    ensure!(
        out.success,
        "scripts/gateway-api.sh install failed: {}",
        out.stderr
    );
    ctx.suite
        .gateway_api_installed_here
        .store(true, Ordering::SeqCst);
    Ok(())
}

/// A Shortener `name` exposed by an HTTPRoute to `parent` (a parentRef), nothing else set.
fn routed_shortener(ns: &str, name: &str, route: Value) -> String {
    json!({
        "apiVersion": "shortener.dev/v1alpha1", "kind": "Shortener",
        "metadata": { "name": name, "namespace": ns },
        "spec": { "httpRoute": route },
    })
    .to_string()
}

/// The Shortener's condition `type_` (status, reason, message), whatever its generation.
async fn condition_of(
    ctx: &Ctx,
    name: &str,
    type_: &str,
) -> Result<Option<(String, String, String)>> {
    let s = shortener(&ctx.client, &ctx.ns, name).await?;
    Ok(at(&s.data, "/status/conditions")
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == type_))
        .map(|c| {
            let text = |k: &str| c[k].as_str().unwrap_or_default().to_string();
            (text("status"), text("reason"), text("message"))
        }))
}

/// Waits until the Shortener's RouteAccepted condition, for its current generation, has
/// `status` and `reason`; returns its message.
async fn wait_route(ctx: &Ctx, status: &str, reason: &str) -> Result<String> {
    wait_condition(&ctx.client, &ctx.ns, "links", "RouteAccepted", status).await?;
    eventually(
        &format!("RouteAccepted {status}/{reason}"),
        TIMEOUT,
        || async move {
            match condition_of(ctx, "links", "RouteAccepted").await {
                Ok(Some((s, r, message))) if s == status && r == reason => Ok(message),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await
}

/// The Route column of `kubectl get shorteners` for `links`.
async fn route_column(ctx: &Ctx, expected: &str) -> Result {
    let ns = ctx.ns.as_str();
    eventually(
        &format!("Route column {expected}"),
        TIMEOUT,
        || async move {
            let rows = printed_shorteners(ns).map_err(|e| e.to_string())?;
            match rows
                .iter()
                .find(|r| r.get("NAME").map(String::as_str) == Some("links"))
            {
                Some(row) if row.get("ROUTE").map(String::as_str) == Some(expected) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await
}

/// Without the Gateway API the Shortener says so (RouteAccepted and Degraded,
/// GatewayAPINotInstalled), creates no Ingress in its stead, and the rest of the stack runs.
pub async fn a_route_without_the_gateway_api_is_reported(ctx: &Ctx) -> Result {
    if gateway_api_served()? {
        eprintln!(
            "    skipped: this cluster serves the Gateway API (installed outside the suite); \
             the missing-API case needs a cluster without it"
        );
        return Ok(());
    }
    provide_volume(&ctx.client, &ctx.ns, "data-links-postgres-0", "1Gi", None).await?;
    apply(&routed_shortener(
        &ctx.ns,
        "links",
        json!({ "parentRefs": [{ "name": "public" }], "hostnames": ["sho.rt"] }),
    ))?;
    let message = wait_route(ctx, "False", "GatewayAPINotInstalled").await?;
    ensure!(
        message.contains("gateway.networking.k8s.io"),
        "the condition does not say what is missing: {message}"
    );
    let degraded = wait_condition(&ctx.client, &ctx.ns, "links", "Degraded", "True").await?;
    ensure!(
        crate::stack::condition(&degraded, "Degraded")
            .map(|(_, r)| r)
            .as_deref()
            == Some("GatewayAPINotInstalled"),
        "Degraded: {}",
        at(&degraded.data, "/status/conditions")
    );
    wait_ready(&ctx.client, &ctx.ns, "links").await?;
    ensure!(
        get_opt(&ctx.client, &ctx.ns, "Ingress", "links")
            .await?
            .is_none(),
        "an Ingress was created for a Shortener that asked for an HTTPRoute"
    );
    route_column(ctx, "GatewayAPINotInstalled").await
}

/// Whether the API server would create this Shortener (a server-side dry run).
async fn admitted(ctx: &Ctx, spec: Value) -> Result<std::result::Result<Value, String>> {
    let ar: ApiResource = shortener_resource();
    let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), &ctx.ns, &ar);
    let mut object = DynamicObject::new("exposure", &ar);
    object.data = json!({ "spec": spec });
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    match api.create(&dry_run, &object).await {
        Ok(created) => Ok(Ok(created.data)),
        Err(kube::Error::Api(status)) if status.code == 422 => Ok(Err(status.message)),
        Err(other) => Err(other.into()),
    }
}

fn merge_patch(ns: &str, name: &str, spec: Value) -> Result<crate::cluster::Output> {
    let patch = json!({ "spec": spec }).to_string();
    crate::cluster::run(
        "kubectl",
        &[
            "-n",
            ns,
            "patch",
            "shortener",
            name,
            "--type=merge",
            "-p",
            &patch,
        ],
        None,
    )
}

pub async fn the_api_server_refuses_an_ingress_and_a_route_together(ctx: &Ctx) -> Result {
    let route = json!({ "parentRefs": [{ "name": "public", "namespace": "infra" }] });
    // Both at once, at creation.
    let both = admitted(
        ctx,
        json!({ "ingress": { "enabled": true }, "httpRoute": route }),
    )
    .await?;
    ensure!(
        both.as_ref().is_err_and(|m| m.contains(BOTH)),
        "an Ingress and a route together: {both:?}"
    );
    // A route alone needs no `ingress.enabled: false`: nothing defaults it to true.
    let alone = admitted(ctx, json!({ "httpRoute": route })).await?;
    match &alone {
        Ok(stored) => ensure!(
            at(stored, "/spec/ingress/enabled").is_null(),
            "ingress.enabled was defaulted: {}",
            at(stored, "/spec/ingress")
        ),
        Err(message) => return Err(format!("a route alone was refused: {message}").into()),
    }
    // An explicit `enabled: false` with a route is fine too.
    let off = admitted(
        ctx,
        json!({ "ingress": { "enabled": false }, "httpRoute": route }),
    )
    .await?;
    ensure!(off.is_ok(), "a route with the Ingress off: {off:?}");
    // And `spec: {}` still defaults to an Ingress of class nginx (the operator reads an unset
    // `enabled` as true without a route).
    let plain = admitted(ctx, json!({})).await?;
    ensure!(
        plain
            .as_ref()
            .is_ok_and(|s| at(s, "/spec/ingress/className") == "nginx"),
        "spec: {{}}: {plain:?}"
    );
    // The route's own fields: at least one parent, hostnames as `ingress.host` (no wildcard,
    // no upper case), ports in range.
    for (what, bad) in [
        ("no parentRefs", json!({ "parentRefs": [] })),
        (
            "a wildcard hostname",
            json!({ "parentRefs": [{ "name": "public" }], "hostnames": ["*.sho.rt"] }),
        ),
        (
            "an upper-case hostname",
            json!({ "parentRefs": [{ "name": "public" }], "hostnames": ["Sho.rt"] }),
        ),
        (
            "port 0",
            json!({ "parentRefs": [{ "name": "public", "port": 0 }] }),
        ),
        (
            "an unknown scheme",
            json!({ "parentRefs": [{ "name": "public" }], "scheme": "ftp" }),
        ),
    ] {
        ensure!(
            admitted(ctx, json!({ "httpRoute": bad })).await?.is_err(),
            "{what} was admitted"
        );
    }

    // A Shortener stored before `httpRoute` existed holds `ingress.enabled: true` (the old
    // default): adding a route alone is refused with the way out, which then works.
    apply(
        &json!({
            "apiVersion": "shortener.dev/v1alpha1", "kind": "Shortener",
            "metadata": { "name": "older", "namespace": ctx.ns },
            "spec": { "ingress": { "enabled": true } },
        })
        .to_string(),
    )?;
    let out = merge_patch(&ctx.ns, "older", json!({ "httpRoute": route }))?;
    ensure!(
        !out.success
            && out.stderr.contains(BOTH)
            && out.stderr.contains("set spec.ingress.enabled to false"),
        "adding a route to an enabled Ingress: {}{}",
        out.stdout,
        out.stderr
    );
    let out = merge_patch(
        &ctx.ns,
        "older",
        json!({ "ingress": { "enabled": false }, "httpRoute": route }),
    )?;
    ensure!(out.success, "switching with enabled: false: {}", out.stderr);
    // And back: turning the Ingress on again while the route is there is refused.
    let out = merge_patch(&ctx.ns, "older", json!({ "ingress": { "enabled": true } }))?;
    ensure!(
        !out.success && out.stderr.contains(BOTH),
        "turning the Ingress on beside the route: {}{}",
        out.stdout,
        out.stderr
    );
    Ok(())
}

/// The route's `status.parents`, written through the status subresource as a Gateway
/// controller would for the route's current generation.
fn answer(ctx: &Ctx, generation: i64, accepted: (&str, &str, &str)) -> Result {
    let (status, reason, message) = accepted;
    let condition = |type_: &str, status: &str, reason: &str, message: &str| {
        json!({
            "type": type_, "status": status, "reason": reason, "message": message,
            "observedGeneration": generation, "lastTransitionTime": "2026-01-01T00:00:00Z",
        })
    };
    let patch = json!({ "status": { "parents": [{
        "parentRef": { "group": "gateway.networking.k8s.io", "kind": "Gateway",
                       "namespace": ctx.ns, "name": "public", "sectionName": "web" },
        "controllerName": "example.net/gateway-controller",
        "conditions": [
            condition("Accepted", status, reason, message),
            condition("ResolvedRefs", "True", "ResolvedRefs", "all references resolved"),
        ],
    }] } })
    .to_string();
    kubectl(&[
        "-n",
        &ctx.ns,
        "patch",
        "httproute",
        "links",
        "--subresource=status",
        "--type=merge",
        "-p",
        &patch,
    ])?;
    Ok(())
}

pub async fn the_route_attaches_to_the_gateway_and_reports_its_answer(ctx: &Ctx) -> Result {
    ensure_gateway_api(ctx).await?;
    let ns = ctx.ns.as_str();
    // The platform team's Gateway (no controller serves its class here).
    let out = kubectl_stdin(
        &["apply", "-f", "-"],
        &json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
            "metadata": { "name": "public", "namespace": ns },
            "spec": {
                "gatewayClassName": "example",
                "listeners": [{ "name": "web", "protocol": "HTTP", "port": 80,
                                "allowedRoutes": { "namespaces": { "from": "Same" } } }],
            },
        })
        .to_string(),
    )?;
    ensure!(out.success, "creating the Gateway: {}", out.stderr);
    provide_volume(&ctx.client, ns, "data-links-postgres-0", "1Gi", None).await?;
    apply(&routed_shortener(
        ns,
        "links",
        json!({
            "parentRefs": [{ "name": "public", "sectionName": "web" }],
            "hostnames": ["sho.rt"],
            "scheme": "http",
        }),
    ))?;

    // The route the operator writes.
    let api = routes(ctx);
    let route = eventually("the HTTPRoute links", TIMEOUT, || {
        let api = api.clone();
        async move {
            api.get_opt("links")
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| "not there".to_string())
        }
    })
    .await?;
    let spec = at(&route.data, "/spec");
    ensure!(
        spec["parentRefs"]
            == json!([{ "group": "gateway.networking.k8s.io", "kind": "Gateway",
                        "namespace": ns, "name": "public", "sectionName": "web" }]),
        "parentRefs: {}",
        spec["parentRefs"]
    );
    ensure!(
        spec["hostnames"] == json!(["sho.rt"]),
        "hostnames: {}",
        spec["hostnames"]
    );
    let rules = spec["rules"].as_array().cloned().unwrap_or_default();
    ensure!(rules.len() == 2, "rules: {}", spec["rules"]);
    ensure!(
        rules[0]["matches"] == json!([{ "path": { "type": "Exact", "value": "/metrics" } }])
            && rules[0]["backendRefs"].as_array().is_none_or(Vec::is_empty),
        "/metrics must match exactly and have no backend: {}",
        rules[0]
    );
    ensure!(
        rules[1]["matches"] == json!([{ "path": { "type": "PathPrefix", "value": "/" } }])
            && rules[1]["backendRefs"][0]["name"] == "links"
            && rules[1]["backendRefs"][0]["port"] == 80
            && rules[1]["backendRefs"][0]["kind"] == "Service",
        "the rest must go to Service links:80: {}",
        rules[1]
    );
    let owners = route.metadata.owner_references.clone().unwrap_or_default();
    ensure!(
        owners
            .iter()
            .any(|o| o.kind == "Shortener" && o.name == "links" && o.controller == Some(true)),
        "the HTTPRoute is not controller-owned by the Shortener: {owners:?}"
    );
    ensure!(
        get_opt(&ctx.client, ns, "Ingress", "links")
            .await?
            .is_none(),
        "an Ingress beside the route"
    );
    let config = get_opt(&ctx.client, ns, "ConfigMap", "links-config")
        .await?
        .ok_or("no links-config")?;
    ensure!(
        at(&config.data, "/data/PUBLIC_BASE_URL") == "http://sho.rt",
        "PUBLIC_BASE_URL: {}",
        at(&config.data, "/data/PUBLIC_BASE_URL")
    );

    // No Gateway controller has answered: pending, not degraded.
    wait_route(ctx, "Unknown", "Pending").await?;
    let ready = wait_ready(&ctx.client, ns, "links").await?;
    ensure!(
        at(&ready.data, "/status/url") == "http://sho.rt",
        "status.url: {}",
        at(&ready.data, "/status/url")
    );
    let generation = route
        .metadata
        .generation
        .ok_or("a route without generation")?;

    // The Gateway refuses it: its reason and words on the Shortener, Degraded.
    answer(
        ctx,
        generation,
        (
            "False",
            "NotAllowedByListeners",
            "no listener of Gateway public admits routes from here",
        ),
    )?;
    let message = wait_route(ctx, "False", "NotAllowedByListeners").await?;
    ensure!(
        message.contains("no listener of Gateway public admits routes from here")
            && message.contains(&format!("Gateway {ns}/public listener web")),
        "RouteAccepted message: {message}"
    );
    let degraded = wait_condition(&ctx.client, ns, "links", "Degraded", "True").await?;
    ensure!(
        crate::stack::condition(&degraded, "Degraded")
            .map(|(_, r)| r)
            .as_deref()
            == Some("RouteNotAccepted"),
        "Degraded: {}",
        at(&degraded.data, "/status/conditions")
    );
    route_column(ctx, "NotAllowedByListeners").await?;

    // Then accepts it.
    answer(ctx, generation, ("True", "Accepted", "accepted"))?;
    wait_route(ctx, "True", "Accepted").await?;
    wait_condition(&ctx.client, ns, "links", "Degraded", "False").await?;
    route_column(ctx, "Accepted").await?;

    // The route is watched: deleted, it is back at once (not at the 5-minute requeue).
    let uid = route.metadata.uid.clone().ok_or("a route without uid")?;
    kubectl(&["-n", ns, "delete", "httproute", "links"])?;
    let uid = &uid;
    eventually("the HTTPRoute re-created", TIMEOUT, || {
        let api = api.clone();
        async move {
            match api.get_opt("links").await.map_err(|e| e.to_string())? {
                Some(route) if route.metadata.uid.as_ref() != Some(uid) => Ok(()),
                other => Err(format!("{:?}", other.map(|r| r.metadata.uid))),
            }
        }
    })
    .await?;
    Ok(())
}

pub async fn switching_between_ingress_and_route_prunes_the_other(ctx: &Ctx) -> Result {
    ensure_gateway_api(ctx).await?;
    ready_minimal(ctx).await?;
    let client = &ctx.client;
    let ns = ctx.ns.as_str();
    ensure!(
        get_opt(client, ns, "Ingress", "links").await?.is_some(),
        "the minimal example has an Ingress"
    );
    let present = |kind: &'static str, wanted: bool| async move {
        eventually(
            &format!("{kind}/links {}", if wanted { "present" } else { "pruned" }),
            TIMEOUT,
            || async move {
                match get_opt(client, ns, kind, "links").await {
                    Ok(found) if found.is_some() == wanted => Ok(()),
                    other => Err(format!("{:?}", other.map(|o| o.is_some()))),
                }
            },
        )
        .await
    };
    // The minimal example was stored without `ingress.enabled`: a route alone switches.
    patch_spec(
        ns,
        "links",
        json!({ "httpRoute": { "parentRefs": [{ "name": "public" }], "hostnames": ["go.sho.rt"] } }),
    )?;
    present("HTTPRoute", true).await?;
    present("Ingress", false).await?;
    wait_route(ctx, "Unknown", "Pending").await?;
    let config = get_opt(client, ns, "ConfigMap", "links-config")
        .await?
        .ok_or("no links-config")?;
    ensure!(
        at(&config.data, "/data/PUBLIC_BASE_URL") == "https://go.sho.rt",
        "PUBLIC_BASE_URL after the switch: {}",
        at(&config.data, "/data/PUBLIC_BASE_URL")
    );

    // Back to the Ingress: the route goes, and so does its condition.
    patch_spec(ns, "links", json!({ "httpRoute": null }))?;
    present("Ingress", true).await?;
    present("HTTPRoute", false).await?;
    wait_ready(client, ns, "links").await?;
    eventually("RouteAccepted removed", TIMEOUT, || async move {
        match condition_of(ctx, "links", "RouteAccepted").await {
            Ok(None) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await?;

    // Neither: only in-cluster.
    patch_spec(ns, "links", json!({ "ingress": { "enabled": false } }))?;
    present("Ingress", false).await?;
    present("HTTPRoute", false).await?;
    Ok(())
}
