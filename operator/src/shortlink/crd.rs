//! The `ShortLink` custom resource: one link of a Shortener, declared as a Kubernetes object.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A custom code: what the service accepts as one (`[A-Za-z0-9_-]`, 3 to 32 characters).
pub const CODE_PATTERN: &str = "^[A-Za-z0-9_-]{3,32}$";
/// The words the service keeps for its own paths, refused as codes in any letter case.
/// A test checks this list against the service's own.
pub const RESERVED_CODES: &[&str] = &[
    "admin",
    "api",
    "docs",
    "events",
    "favicon.ico",
    "health",
    "healthz",
    "keys",
    "livez",
    "login",
    "logout",
    "metrics",
    "openapi",
    "openapi.json",
    "readyz",
    "robots.txt",
    "shorten",
    "static",
    "status",
    "swagger",
    "urls",
    "users",
    "v1",
    "v2",
];
const URL_PATTERN: &str = "^[Hh][Tt][Tt][Pp][Ss]?://[^/?#]+";

// No `shortener` category: that word is the Shortener's singular, and kubectl would expand
// `kubectl delete shortener NAME` to both kinds and refuse it.
/// One short link served by a Shortener of the same namespace. The operator creates it in the
/// service, keeps it as declared, reports its clicks, and deactivates it when this object is
/// deleted. A code already held by a link made another way is never overwritten.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "shortener.dev",
    version = "v1alpha1",
    kind = "ShortLink",
    plural = "shortlinks",
    shortname = "sl",
    namespaced,
    status = "ShortLinkStatus",
    derive = "PartialEq",
    printcolumn = r#"{"name":"Code","type":"string","jsonPath":".spec.code"}"#,
    printcolumn = r#"{"name":"Target","type":"string","jsonPath":".spec.target"}"#,
    printcolumn = r#"{"name":"Shortener","type":"string","jsonPath":".spec.shortener"}"#,
    printcolumn = r#"{"name":"Clicks","type":"integer","jsonPath":".status.clicks"}"#,
    printcolumn = r#"{"name":"Synced","type":"string","jsonPath":".status.conditions[?(@.type==\"Synced\")].reason"}"#,
    printcolumn = r#"{"name":"URL","type":"string","priority":1,"jsonPath":".status.shortUrl"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(validation = Rule::new("self.code == oldSelf.code").message(
    "code is immutable: declare a new ShortLink for a new code (this one's link is deactivated when it is deleted)"
))]
#[x_kube(validation = Rule::new("self.shortener == oldSelf.shortener").message(
    "shortener is immutable: declare the link again under the other Shortener"
))]
#[serde(rename_all = "camelCase")]
pub struct ShortLinkSpec {
    /// Name of the Shortener, in this namespace, that serves the link.
    #[schemars(length(min = 1, max = 253))]
    pub shortener: String,
    /// The short code: the link answers at the Shortener's URL followed by `/<code>`.
    /// 3 to 32 characters of `[A-Za-z0-9_-]`, case-sensitive, not a word the service keeps
    /// for its own paths (`health`, `urls`, ...).
    #[schemars(regex(pattern = CODE_PATTERN))]
    #[x_kube(validation = reserved_rule())]
    pub code: String,
    /// Where the link redirects: an absolute http(s) URL (the service also refuses targets
    /// in private networks unless it is configured to allow them).
    #[schemars(regex(pattern = URL_PATTERN), length(max = 8192))]
    pub target: String,
    /// A title, kept with the link.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 300))]
    pub title: Option<String>,
    /// Who to ask about this link (a team, a person): shown by `kubectl get -o wide`, kept
    /// in Kubernetes only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub owner: Option<String>,
    /// After this instant the link is gone (410, or its `fallbackUrl`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Time>,
    /// After this many redirects the link is gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_visits: Option<i64>,
    /// Where a gone link redirects instead of answering 410.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = URL_PATTERN), length(max = 8192))]
    pub fallback_url: Option<String>,
    /// The redirect's status: 301, 302 (the default), 307 or 308.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self in [301, 302, 307, 308]")
        .message("redirectType must be 301, 302, 307 or 308"))]
    pub redirect_type: Option<i32>,
    /// Targets chosen by the visitor's device, language or query, in order; the first that
    /// holds wins, else `target`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub rules: Vec<LinkRule>,
    /// Append the visitor's query string to the target.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub forward_query: bool,
}

/// One rule: every condition given must hold (at least one is).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[x_kube(validation = Rule::new("has(self.device) || has(self.language) || has(self.query)")
    .message("a rule needs at least one of device, language, query"))]
pub struct LinkRule {
    /// The visitor's device, from its `User-Agent`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<Device>,
    /// A language tag (`fr`, `pt-BR`) the visitor's `Accept-Language` accepts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub language: Option<String>,
    /// A parameter of the short URL's query: present, and equal to `value` when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<QueryCondition>,
    /// Where the link redirects when the rule holds.
    #[schemars(regex(pattern = URL_PATTERN), length(max = 8192))]
    pub target: String,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Device {
    Ios,
    Android,
    Mobile,
    Desktop,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct QueryCondition {
    #[schemars(length(min = 1, max = 256))]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub value: Option<String>,
}

fn reserved_rule() -> kube::core::Rule {
    let words: Vec<String> = RESERVED_CODES.iter().map(|w| format!("'{w}'")).collect();
    kube::core::Rule::new(format!("!(self.lowerAscii() in [{}])", words.join(", ")))
        .message("code is a word the service keeps for its own paths")
}

/// What the operator last did with the link.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShortLinkStatus {
    /// The `metadata.generation` the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Synced`: whether the service's link is as declared, and if not, why.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// The link's full short URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub short_url: Option<String>,
    /// Redirects counted so far (refreshed every few minutes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clicks: Option<i64>,
    /// The link's id in the service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_id: Option<i64>,
    /// Digest of the declaration last written to the service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synced_digest: Option<String>,
    /// The link's `updated_at` right after that write: a later one means someone changed
    /// the link through the API, and the declaration is written again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_updated_at: Option<String>,
}
