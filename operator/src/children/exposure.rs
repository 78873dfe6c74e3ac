//! How the service is reached from outside the cluster: an Ingress of any class, or a
//! Gateway API HTTPRoute attached to the platform team's Gateways. Both route every path to
//! the app Service but the private ones (`/metrics`), which the Ingress's controller or the
//! Gateway answers itself.

use std::collections::BTreeMap;

use super::{Component, Instance, service_port};
use crate::crd::{HttpRouteSpec, IngressSpec};
use crate::gateway_api::{
    GATEWAY_GROUP, HTTPBackendRef, HTTPPathMatch, HTTPRoute, HTTPRouteMatch, HTTPRouteRule,
    HTTPRouteSpec, ParentReference,
};
use k8s_openapi::api::core::v1::{Service, ServiceSpec};
use k8s_openapi::api::networking::v1::{
    self as networking, HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend,
    IngressRule, IngressServiceBackend, IngressTLS, ServiceBackendPort,
};

/// Annotations of `spec.ingress.annotations` that inject raw configuration into the ingress
/// controller (ingress-nginx `configuration-snippet`, `server-snippet`, `auth-snippet`,
/// `stream-snippet`, `modsecurity-snippet`; NGINX Inc.'s `server-snippets`, `location-snippets`):
/// whoever may edit a Shortener could otherwise read other tenants' traffic or the controller's
/// secrets (CVE-2021-25742, CVE-2025-1974).
pub fn snippet_annotations(annotations: &BTreeMap<String, String>) -> Vec<String> {
    let is_snippet = |key: &str| {
        let name = key.rsplit('/').next().unwrap_or(key).to_ascii_lowercase();
        name.ends_with("snippet") || name.ends_with("snippets")
    };
    let keys = annotations.keys().filter(|k| is_snippet(k));
    keys.cloned().collect()
}

/// Paths the app serves on its public port that must not leave the cluster.
pub const PRIVATE_PATHS: [&str; 1] = ["/metrics"];

/// The Service the private paths are routed to by the Ingress: the operator's own, without a
/// selector, so it never has endpoints and every controller answers 503 without reaching the
/// app. It used to be left uncreated, which ingress-nginx also answers with 503, but Traefik's
/// ingress-nginx provider drops a path whose Service does not exist and sent `/metrics` to the
/// app through the `/` rule (seen on the real node); and a Service of that name anyone made
/// would have received the path.
pub fn unrouted_service_name(instance: &Instance<'_>) -> String {
    format!("{}-unrouted", instance.name)
}

pub fn unrouted_service(instance: &Instance<'_>) -> Service {
    Service {
        metadata: instance.meta(unrouted_service_name(instance), Component::App),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            ports: Some(vec![service_port("http", 80)]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Short codes live at the root, so the public routes cannot be listed: everything under `/`
/// goes to the app, except the private paths, routed as `Exact` to a backend that does not
/// exist. ingress-nginx renders an Exact path as `location = /metrics`, which nginx matches
/// before any prefix, after decoding `%XX` and merging slashes, whatever the query string.
pub fn ingress(instance: &Instance<'_>, spec: &IngressSpec) -> Ingress {
    let mut metadata = instance.meta(instance.child_name(Component::App), Component::App);
    if !spec.annotations.is_empty() {
        metadata.annotations = Some(spec.annotations.clone());
    }
    let path =
        |path: &str, path_type: &str, service: String, port: ServiceBackendPort| HTTPIngressPath {
            path: Some(path.into()),
            path_type: path_type.into(),
            backend: IngressBackend {
                service: Some(IngressServiceBackend {
                    name: service,
                    port: Some(port),
                }),
                ..Default::default()
            },
        };
    let unrouted = ServiceBackendPort {
        number: Some(80),
        ..Default::default()
    };
    let mut paths: Vec<HTTPIngressPath> = PRIVATE_PATHS
        .iter()
        .map(|p| {
            path(
                p,
                "Exact",
                unrouted_service_name(instance),
                unrouted.clone(),
            )
        })
        .collect();
    let app = ServiceBackendPort {
        name: Some("http".into()),
        ..Default::default()
    };
    paths.push(path(
        "/",
        "Prefix",
        instance.child_name(Component::App),
        app,
    ));
    let tls = spec.tls_secret_name.as_ref().map(|secret| {
        vec![IngressTLS {
            secret_name: Some(secret.clone()),
            hosts: spec.host.clone().map(|host| vec![host]),
        }]
    });
    Ingress {
        metadata,
        spec: Some(networking::IngressSpec {
            ingress_class_name: Some(spec.class_name.clone()),
            rules: Some(vec![IngressRule {
                host: spec.host.clone(),
                http: Some(HTTPIngressRuleValue { paths }),
            }]),
            tls,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The app Service's port the routes send to (the Service maps it to the pods' `http`).
pub const APP_SERVICE_PORT: i32 = 80;

/// The HTTPRoute: the private paths as `Exact` matches of a rule without backends, so the
/// Gateway answers them itself (500: "a rule with no backendRefs and no filters", which
/// leaves the route's `ResolvedRefs` True, unlike a backend that does not exist); everything
/// else by a `PathPrefix /` rule to the app Service. The Gateway API gives an `Exact` match
/// precedence over every prefix match whatever the order of the rules, and matches paths
/// element by element, so `/metrics/` or `/metrics?x` are no way around it: the first goes
/// to the app, which serves no such path, the second is `/metrics` (queries are not part of
/// a path match).
pub fn http_route(instance: &Instance<'_>, spec: &HttpRouteSpec) -> HTTPRoute {
    let mut metadata = instance.meta(instance.child_name(Component::App), Component::App);
    if !spec.annotations.is_empty() {
        metadata.annotations = Some(spec.annotations.clone());
    }
    let parent_refs = spec
        .parent_refs
        .iter()
        .map(|parent| ParentReference {
            group: Some(GATEWAY_GROUP.into()),
            kind: Some("Gateway".into()),
            namespace: Some(
                parent
                    .namespace
                    .clone()
                    .unwrap_or_else(|| instance.namespace.clone()),
            ),
            name: parent.name.clone(),
            section_name: parent.section_name.clone(),
            port: parent.port,
        })
        .collect();
    let path = |type_: &str, value: &str| HTTPRouteMatch {
        path: Some(HTTPPathMatch {
            type_: Some(type_.into()),
            value: Some(value.into()),
        }),
    };
    let private = HTTPRouteRule {
        matches: PRIVATE_PATHS.iter().map(|p| path("Exact", p)).collect(),
        backend_refs: Vec::new(),
    };
    let app = HTTPRouteRule {
        matches: vec![path("PathPrefix", "/")],
        backend_refs: vec![HTTPBackendRef {
            name: instance.child_name(Component::App),
            port: Some(APP_SERVICE_PORT),
        }],
    };
    HTTPRoute {
        metadata,
        spec: HTTPRouteSpec {
            parent_refs,
            hostnames: spec.hostnames.clone(),
            rules: vec![private, app],
        },
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::children::testing::{assert_owned, shortener};
    use crate::crd::{GatewayParentRef, PublicScheme, ShortenerSpec};
    use serde_json::json;

    fn ingress_of(s: &crate::crd::Shortener) -> Ingress {
        let i = Instance::new(s).unwrap();
        let spec = i.exposure().ingress().expect("an Ingress exposure");
        ingress(&i, spec)
    }

    #[test]
    fn ingress_uses_nginx_class_host_and_tls() {
        let mut spec = ShortenerSpec::default();
        let s = shortener(spec.clone());
        let ing = ingress_of(&s).spec.unwrap();
        assert_eq!(ing.ingress_class_name.as_deref(), Some("nginx"));
        assert!(ing.tls.is_none());
        assert!(ing.rules.as_ref().unwrap()[0].host.is_none());

        spec.ingress.host = Some("sho.rt".into());
        spec.ingress.tls_secret_name = Some("sho-rt-tls".into());
        spec.ingress.annotations.insert(
            "cert-manager.io/cluster-issuer".into(),
            "letsencrypt".into(),
        );
        let s = shortener(spec);
        let full = ingress_of(&s);
        assert_eq!(
            full.metadata.annotations.unwrap()["cert-manager.io/cluster-issuer"],
            "letsencrypt"
        );
        let ing = full.spec.unwrap();
        assert_eq!(ing.rules.unwrap()[0].host.as_deref(), Some("sho.rt"));
        let tls = &ing.tls.unwrap()[0];
        assert_eq!(tls.secret_name.as_deref(), Some("sho-rt-tls"));
        assert_eq!(tls.hosts, Some(vec!["sho.rt".to_string()]));
    }

    #[test]
    fn ingress_routes_everything_but_metrics_to_the_app() {
        let s = shortener(ShortenerSpec::default());
        let i = Instance::new(&s).unwrap();
        let ing = serde_json::to_value(ingress_of(&s)).unwrap();
        let paths = &ing["spec"]["rules"][0]["http"]["paths"];
        assert_eq!(paths[0]["path"], "/metrics");
        assert_eq!(paths[0]["pathType"], "Exact");
        assert_eq!(paths[0]["backend"]["service"]["name"], "links-unrouted");
        assert_eq!(paths[1]["path"], "/");
        assert_eq!(paths[1]["pathType"], "Prefix");
        assert_eq!(paths[1]["backend"]["service"]["name"], "links");
        // The deny backend is a child without a selector: it never has endpoints.
        let state = crate::children::desired_state(
            &i,
            &crate::children::Observed::default(),
            &crate::children::Credentials::placeholder(),
        )
        .unwrap();
        let unrouted = state.children.iter().find(|c| c.name() == "links-unrouted");
        let crate::children::Child::Service(unrouted) = unrouted.expect("the unrouted Service")
        else {
            panic!("links-unrouted is not a Service");
        };
        assert_eq!(unrouted.spec.as_ref().unwrap().selector, None);
    }

    #[test]
    fn snippet_annotations_are_recognised_whatever_the_prefix() {
        let annotations: BTreeMap<String, String> = [
            "nginx.ingress.kubernetes.io/configuration-snippet",
            "nginx.ingress.kubernetes.io/server-snippet",
            "nginx.ingress.kubernetes.io/auth-snippet",
            "nginx.org/location-snippets",
            "cert-manager.io/cluster-issuer",
            "nginx.ingress.kubernetes.io/proxy-body-size",
        ]
        .into_iter()
        .map(|k| (k.to_string(), "x".to_string()))
        .collect();
        assert_eq!(
            snippet_annotations(&annotations),
            vec![
                "nginx.ingress.kubernetes.io/auth-snippet",
                "nginx.ingress.kubernetes.io/configuration-snippet",
                "nginx.ingress.kubernetes.io/server-snippet",
                "nginx.org/location-snippets",
            ]
        );
    }

    fn route_spec() -> HttpRouteSpec {
        HttpRouteSpec {
            parent_refs: vec![
                GatewayParentRef {
                    name: "public".into(),
                    namespace: Some("infra".into()),
                    section_name: Some("https".into()),
                    port: None,
                },
                GatewayParentRef {
                    name: "internal".into(),
                    namespace: None,
                    section_name: None,
                    port: Some(8443),
                },
            ],
            hostnames: vec!["sho.rt".into(), "www.sho.rt".into()],
            scheme: PublicScheme::Https,
            annotations: BTreeMap::from([(
                "external-dns.alpha.kubernetes.io/ttl".to_string(),
                "60".to_string(),
            )]),
        }
    }

    #[test]
    fn the_route_attaches_to_the_named_gateways_with_the_hostnames() {
        let spec = ShortenerSpec {
            http_route: Some(route_spec()),
            ..ShortenerSpec::default()
        };
        let s = shortener(spec);
        let i = Instance::new(&s).unwrap();
        let route = http_route(&i, i.exposure().http_route().unwrap());
        assert_owned(&route.metadata, "app");
        assert_eq!(route.metadata.name.as_deref(), Some("links"));
        assert_eq!(
            route.metadata.annotations.as_ref().unwrap()["external-dns.alpha.kubernetes.io/ttl"],
            "60"
        );
        let v = serde_json::to_value(&route).unwrap();
        assert_eq!(v["apiVersion"], "gateway.networking.k8s.io/v1");
        assert_eq!(
            v["spec"]["parentRefs"],
            json!([
                { "group": "gateway.networking.k8s.io", "kind": "Gateway", "namespace": "infra",
                  "name": "public", "sectionName": "https" },
                { "group": "gateway.networking.k8s.io", "kind": "Gateway", "namespace": "web",
                  "name": "internal", "port": 8443 },
            ])
        );
        assert_eq!(v["spec"]["hostnames"], json!(["sho.rt", "www.sho.rt"]));
        assert_eq!(i.public_base_url().as_deref(), Some("https://sho.rt"));

        // No hostnames: the route takes every host its listeners accept.
        let mut bare = route_spec();
        bare.hostnames.clear();
        bare.scheme = PublicScheme::Http;
        let s = shortener(ShortenerSpec {
            http_route: Some(bare),
            ..ShortenerSpec::default()
        });
        let i = Instance::new(&s).unwrap();
        let v = serde_json::to_value(http_route(&i, i.exposure().http_route().unwrap())).unwrap();
        assert!(v["spec"].get("hostnames").is_none(), "{v}");
        assert_eq!(i.public_base_url(), None);
        assert_eq!(i.public_url(), "http://links.web.svc.cluster.local");
    }

    /// Mirrors the Ingress: `/metrics` is an Exact match the Gateway answers itself (a rule
    /// without backends), the rest a prefix match to the app Service.
    #[test]
    fn the_route_sends_everything_but_metrics_to_the_app() {
        let s = shortener(ShortenerSpec {
            http_route: Some(route_spec()),
            ..ShortenerSpec::default()
        });
        let i = Instance::new(&s).unwrap();
        let v = serde_json::to_value(http_route(&i, i.exposure().http_route().unwrap())).unwrap();
        assert_eq!(
            v["spec"]["rules"],
            json!([
                { "matches": [{ "path": { "type": "Exact", "value": "/metrics" } }] },
                {
                    "matches": [{ "path": { "type": "PathPrefix", "value": "/" } }],
                    "backendRefs": [{ "name": "links", "port": 80 }],
                },
            ])
        );
        // The app Service's port 80 is the one the route names.
        let service = serde_json::to_value(crate::children::app::service(&i)).unwrap();
        assert_eq!(service["spec"]["ports"][0]["port"], APP_SERVICE_PORT);
    }
}
