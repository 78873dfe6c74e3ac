//! Exposure through a Gateway API HTTPRoute, accepted and served by the node's Gateway
//! (Traefik's Gateway API provider), not only written.

use std::time::Duration;

use kube::api::{Api, DynamicObject};

use crate::cluster::{Result, at, eventually, kubectl, kubectl_stdin, shortener_resource};
use crate::install::serves;
use crate::stack::{FIRST_START, admin_key, check_first_start, wait_shortener_ready};
use crate::traffic::Api as Service;
use crate::{Real, ensure};

const NS: &str = "routed";
const HOST: &str = "go.routed.test";

/// manifests/examples/gateway.yaml pointed at the node's Gateway (`ingress-nginx/public`,
/// listener `http`, Traefik's pods in `ingress-nginx`): Ready, the route Accepted by the
/// Gateway as the Shortener reports it, no Ingress, and the API and redirects served through
/// the Gateway's listener by every app pod.
pub async fn an_httproute_serves_through_the_gateway(real: &'static Real) -> Result {
    let gateway_url = real
        .gateway_url
        .as_deref()
        .ok_or("SHORTENER_GATEWAY_URL is not set: the real node publishes its Gateway there")?;
    crate::stack::fresh_namespace(NS)?;
    let manifest = format!(
        r#"apiVersion: shortener.dev/v1alpha1
kind: Shortener
metadata:
  name: links
  namespace: {NS}
spec:
  httpRoute:
    parentRefs:
      - name: public
        namespace: ingress-nginx
        sectionName: http
    hostnames: [{HOST}]
    scheme: http
  networkPolicy:
    gatewayNamespaceSelector:
      kubernetes.io/metadata.name: ingress-nginx
"#
    );
    let out = kubectl_stdin(&["apply", "-f", "-"], &manifest)?;
    ensure!(out.success, "kubectl apply: {}", out.stderr);
    wait_shortener_ready(&real.client, NS, "links", FIRST_START).await?;
    let shorteners: Api<DynamicObject> =
        Api::namespaced_with(real.client.clone(), NS, &shortener_resource());
    eventually("RouteAccepted=True", Duration::from_secs(120), || async {
        let s = shorteners.get("links").await.map_err(|e| e.to_string())?;
        let conditions = at(&s.data, "/status/conditions");
        let accepted = conditions
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "RouteAccepted" && c["status"] == "True");
        if accepted {
            Ok(())
        } else {
            Err(format!("conditions {conditions}"))
        }
    })
    .await?;
    let ingresses = kubectl(&["-n", NS, "get", "ingresses", "-o", "name"])?;
    ensure!(
        ingresses.trim().is_empty(),
        "an Ingress besides the route: {ingresses}"
    );
    check_first_start(&real.client, NS, "links", 3).await?;
    let key = admin_key(&real.client, NS, "links").await?;
    let api = Service::new(gateway_url, Some(HOST), &key)?;
    serves(real, &api, true, NS, "links", 3).await?;
    kubectl(&[
        "-n",
        NS,
        "delete",
        "shortener",
        "links",
        "--wait=true",
        "--timeout=120s",
    ])?;
    kubectl(&["delete", "namespace", NS, "--wait=false"])?;
    Ok(())
}
