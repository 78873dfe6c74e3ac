//! The part of the Gateway API's `HTTPRoute` (gateway.networking.k8s.io/v1) the operator
//! writes and reads back. k8s-openapi has no Gateway API types, and the bindings crate made for
//! them is built against an older kube and k8s-openapi (docs/decisions.md). The shapes follow
//! the v1 standard channel; a field not listed here is neither written nor read.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use kube::api::{ApiResource, GroupVersionKind};
use serde::{Deserialize, Serialize};

pub const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";
pub const GATEWAY_VERSION: &str = "gateway.networking.k8s.io/v1";

/// The HTTPRoute's resource, for discovery, watches and pruning.
pub fn http_route_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(GATEWAY_GROUP, "v1", "HTTPRoute"),
        "httproutes",
    )
}

/// What the operator sets of an HTTPRoute's spec.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "gateway.networking.k8s.io",
    version = "v1",
    kind = "HTTPRoute",
    plural = "httproutes",
    namespaced,
    status = "HTTPRouteStatus",
    schema = "disabled",
    derive = "PartialEq",
    derive = "Default"
)]
#[serde(rename_all = "camelCase")]
pub struct HTTPRouteSpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parent_refs: Vec<ParentReference>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hostnames: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<HTTPRouteRule>,
}

/// A parent of the route: a Gateway, or one of its listeners.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ParentReference {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
}

impl ParentReference {
    /// Whether `other` names the same parent, reading an unset group, kind or namespace as
    /// the Gateway API defaults them (a Gateway in `route_namespace`).
    pub fn same_parent(&self, other: &Self, route_namespace: &str) -> bool {
        let group = |p: &Self| p.group.clone().unwrap_or_else(|| GATEWAY_GROUP.into());
        let kind = |p: &Self| p.kind.clone().unwrap_or_else(|| "Gateway".into());
        let namespace = |p: &Self| {
            p.namespace
                .clone()
                .unwrap_or_else(|| route_namespace.into())
        };
        group(self) == group(other)
            && kind(self) == kind(other)
            && namespace(self) == namespace(other)
            && self.name == other.name
            && self.section_name == other.section_name
            && self.port == other.port
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct HTTPRouteRule {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<HTTPRouteMatch>,
    /// No backend at all: the Gateway answers the request itself (500), which is what the
    /// operator wants for the paths that must not leave the cluster.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backend_refs: Vec<HTTPBackendRef>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct HTTPRouteMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<HTTPPathMatch>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct HTTPPathMatch {
    /// `Exact` or `PathPrefix`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// A Service in the route's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct HTTPBackendRef {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
}

/// What the Gateway controllers report, one entry per parent they manage.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct HTTPRouteStatus {
    #[serde(default)]
    pub parents: Vec<RouteParentStatus>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RouteParentStatus {
    pub parent_ref: ParentReference,
    #[serde(default)]
    pub controller_name: String,
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::Resource;

    #[test]
    fn the_typed_route_and_the_resource_agree() {
        let typed = ApiResource::erase::<HTTPRoute>(&());
        assert_eq!(typed, http_route_resource());
        assert_eq!(HTTPRoute::api_version(&()), GATEWAY_VERSION);
    }

    #[test]
    fn parents_compare_with_the_api_defaults() {
        let written = ParentReference {
            group: Some(GATEWAY_GROUP.into()),
            kind: Some("Gateway".into()),
            namespace: Some("infra".into()),
            name: "public".into(),
            section_name: Some("https".into()),
            port: None,
        };
        let reported = ParentReference {
            group: None,
            kind: None,
            ..written.clone()
        };
        assert!(written.same_parent(&reported, "web"));
        let other_listener = ParentReference {
            section_name: Some("http".into()),
            ..written.clone()
        };
        assert!(!written.same_parent(&other_listener, "web"));
        let local = ParentReference {
            namespace: None,
            ..written.clone()
        };
        assert!(local.same_parent(&written, "infra"));
        assert!(!local.same_parent(&written, "web"));
    }
}
