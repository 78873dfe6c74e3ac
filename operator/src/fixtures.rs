//! A scripted stand-in for the API server, for reconcile tests without a cluster.
//!
//! Each `Scenario` is a fixed sequence of requests the reconciler must make. Every step
//! asserts the exact request (method, path, field manager, body) and answers as the real API
//! server would; what the reconciler wrote (status, events, apply bodies) is recorded for the
//! test to inspect. A request beyond the script fails the test.

use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use kube::api::ApiResource;
use kube::client::Body;
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use tower_test::mock::{Handle, SendResponse};

use crate::children::{self, Credentials, Instance, Observed, OptionalApis, postgres};
use crate::controller::Context;
use crate::crd::{Shortener, ShortenerStatus};
use crate::metrics::Metrics;

type ApiServerHandle = Handle<Request<Body>, Response<Body>>;

pub struct ApiServerVerifier {
    handle: ApiServerHandle,
    recorded: Recorded,
    /// Answer deletes with 403, as without the `delete` verb.
    forbid_deletes: bool,
    /// The context under test allows snippet annotations.
    allow_snippets: bool,
}

/// What the reconciler sent, for assertions beyond the per-request checks.
#[derive(Debug, Default)]
pub struct Recorded {
    pub status: Option<ShortenerStatus>,
    pub events: Vec<(String, String)>,
    pub applied: Vec<Value>,
    pub created_secrets: Vec<Value>,
    pub pvc_patch: Option<Value>,
    /// `Kind/name` of every object deleted, in order.
    pub deleted: Vec<String>,
}

impl Recorded {
    pub fn applied(&self, kind: &str, name: &str) -> &Value {
        self.applied
            .iter()
            .find(|v| v["kind"] == kind && v["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("{kind}/{name} was not applied"))
    }

    pub fn condition(&self, type_: &str) -> (String, String) {
        let status = self.status.as_ref().expect("a status write");
        let c = status
            .conditions
            .iter()
            .find(|c| c.type_ == type_)
            .unwrap_or_else(|| panic!("no {type_} condition in {status:?}"));
        (c.status.clone(), c.reason.clone())
    }

    pub fn event_reasons(&self) -> Vec<&str> {
        self.events
            .iter()
            .map(|(reason, _)| reason.as_str())
            .collect()
    }
}

/// How the workloads look in the fake cluster when the reconciler applies them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Workloads {
    /// Just created: no pods ready.
    Starting,
    /// Every pod ready and up to date.
    Ready,
    /// Someone scaled the app Deployment to one replica by hand.
    AppScaledDown,
}

pub enum Scenario {
    /// Nothing exists: secrets are generated, every child is applied, pods are starting.
    FirstCreation(Shortener),
    /// The stack exists; the pods report ready.
    ExistingStack(Shortener, Workloads),
    /// The Shortener already carries the status this pass computes: applies only, no writes.
    NoOp(Shortener),
    /// The monitoring.coreos.com group is not served.
    MonitoringCrdsMissing(Shortener),
    /// The gateway.networking.k8s.io group is not served.
    GatewayApiMissing(Shortener),
    /// The stack exists; the applied HTTPRoute comes back with this `status.parents`.
    RouteAnswered(Shortener, Value),
    /// spec.paused: only the status is touched.
    Paused(Shortener),
    /// The API server rejects the apply of the given kind.
    ApplyRejected(Shortener, &'static str),
    /// The claim template holds a smaller size than the spec asks for.
    StorageGrown(Shortener, &'static str),
    /// An object of the given kind and name exists without an owner reference.
    ForeignObject(Shortener, &'static str, &'static str),
    /// The spec carries what the operator refuses: only the status is written.
    Refused(Shortener),
    /// As `StorageGrown`, but the cluster refuses to resize the claim.
    StorageGrowthRefused(Shortener, &'static str),
    /// The namespace still holds what the first Shortener (an earlier spec of the second)
    /// applied, plus the given objects made by someone else; the pods report ready.
    SpecShrunk(Box<Shortener>, Shortener, Vec<Value>),
    /// As `SpecShrunk`, but the operator's role may not delete.
    DeleteForbidden(Box<Shortener>, Shortener),
    /// The stack exists and the owned-kind watches have seen every child (the named one,
    /// if any, made by someone else): applies without reads. Fill the context's watch
    /// cache with [`seen_by_the_watches`] first.
    Watched(Shortener, Option<(&'static str, &'static str)>),
}

/// Fills `ctx`'s watch cache as the owned-kind watches would after they listed the stack
/// of `shortener` (the object named by `foreign`, made by someone else).
pub fn seen_by_the_watches(
    ctx: &Context,
    shortener: &Shortener,
    foreign: Option<(&'static str, &'static str)>,
) {
    use kube::api::{DynamicObject, PartialObjectMeta};
    use kube::runtime::reflector::store::Writer;
    use kube::runtime::watcher::Event;

    let instance = Instance::new(shortener).unwrap();
    let observed = Observed {
        apis: OptionalApis::ALL,
        postgres_template_size: Some("1Gi".into()),
        operator_namespace: None,
    };
    let desired = children::desired_state(&instance, &observed, &Credentials::placeholder());
    let mut writers: Vec<(ApiResource, Writer<PartialObjectMeta<DynamicObject>>)> = Vec::new();
    for child in desired.unwrap().children {
        let resource = child.resource();
        let mut meta = child.meta().clone();
        if foreign == Some((child.kind().as_str(), child.name().as_str())) {
            meta.owner_references = None;
        }
        let object = PartialObjectMeta::<DynamicObject> {
            types: Some(kube::core::TypeMeta {
                api_version: resource.api_version.clone(),
                kind: resource.kind.clone(),
            }),
            metadata: meta,
            _phantom: Default::default(),
        };
        let position = match writers.iter().position(|(kind, _)| kind == &resource) {
            Some(i) => i,
            None => {
                let writer = Writer::new(resource.clone());
                ctx.seen.add(resource.clone(), writer.as_reader());
                writers.push((resource.clone(), writer));
                writers.len() - 1
            }
        };
        writers[position]
            .1
            .apply_watcher_event(&Event::Apply(object));
    }
}

struct Plan {
    shortener: Shortener,
    apis: OptionalApis,
    statefulset_size: Option<String>,
    secrets_exist: bool,
    workloads: Workloads,
    reject_kind: Option<&'static str>,
    /// Objects in the namespace besides the desired children, answered to pruning's lists.
    cluster: Vec<Value>,
    forbid_deletes: bool,
    /// Answer the claim's resize with 403, as for a volume that cannot be expanded.
    refuse_resize: bool,
    /// (kind, name) of an object someone else created under a child's name.
    foreign: Option<(&'static str, &'static str)>,
    /// The watch cache knows every child: no read before an apply.
    watched: bool,
    /// `status.parents` of the HTTPRoute as the API server returns it after the apply.
    route_parents: Option<Value>,
}

impl Scenario {
    fn plan(self) -> Plan {
        let base = |shortener: Shortener| Plan {
            shortener,
            apis: OptionalApis::ALL,
            statefulset_size: Some("1Gi".into()),
            secrets_exist: true,
            workloads: Workloads::Ready,
            reject_kind: None,
            cluster: Vec::new(),
            forbid_deletes: false,
            refuse_resize: false,
            foreign: None,
            watched: false,
            route_parents: None,
        };
        match self {
            Self::FirstCreation(s) => Plan {
                statefulset_size: None,
                secrets_exist: false,
                workloads: Workloads::Starting,
                ..base(s)
            },
            Self::ExistingStack(s, workloads) => Plan {
                workloads,
                ..base(s)
            },
            Self::NoOp(s) | Self::Paused(s) | Self::Refused(s) => base(s),
            Self::MonitoringCrdsMissing(s) => Plan {
                apis: OptionalApis {
                    monitoring: false,
                    ..OptionalApis::ALL
                },
                ..base(s)
            },
            Self::GatewayApiMissing(s) => Plan {
                apis: OptionalApis {
                    gateway: false,
                    ..OptionalApis::ALL
                },
                ..base(s)
            },
            Self::RouteAnswered(s, parents) => Plan {
                route_parents: Some(parents),
                ..base(s)
            },
            Self::ApplyRejected(s, kind) => Plan {
                reject_kind: Some(kind),
                ..base(s)
            },
            Self::StorageGrown(s, template_size) => Plan {
                statefulset_size: Some(template_size.into()),
                ..base(s)
            },
            Self::StorageGrowthRefused(s, template_size) => Plan {
                refuse_resize: true,
                ..Self::StorageGrown(s, template_size).plan()
            },
            Self::ForeignObject(s, kind, name) => Plan {
                foreign: Some((kind, name)),
                ..base(s)
            },
            Self::SpecShrunk(before, after, mut cluster) => {
                let instance = Instance::new(&before).unwrap();
                let observed = Observed {
                    apis: OptionalApis::ALL,
                    postgres_template_size: Some("1Gi".into()),
                    operator_namespace: None,
                };
                let earlier =
                    children::desired_state(&instance, &observed, &Credentials::placeholder());
                for child in earlier.unwrap().children {
                    cluster.push(child.to_value().unwrap());
                }
                Plan {
                    cluster,
                    ..base(after)
                }
            }
            Self::Watched(s, foreign) => Plan {
                foreign,
                watched: true,
                ..base(s)
            },
            Self::DeleteForbidden(before, after) => Plan {
                forbid_deletes: true,
                ..Self::SpecShrunk(before, after, Vec::new()).plan()
            },
        }
    }
}

/// Await the verifier, failing the test if the script did not complete in time.
pub async fn finish(handle: tokio::task::JoinHandle<Recorded>) -> Recorded {
    tokio::time::timeout(Duration::from_secs(5), handle)
        .await
        .expect("the reconciler did not make every scripted request in time")
        .expect("scenario assertions passed")
}

fn json_response(code: StatusCode, value: &Value) -> Response<Body> {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(value).unwrap()))
        .unwrap()
}

fn status_error(code: u16, reason: &str, message: &str) -> Response<Body> {
    json_response(
        StatusCode::from_u16(code).unwrap(),
        &json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": message, "reason": reason, "code": code,
        }),
    )
}

async fn body_json(request: Request<Body>) -> Value {
    let bytes = request.into_body().collect_bytes().await.unwrap();
    serde_json::from_slice(&bytes).expect("request body is JSON")
}

fn query_has(request: &Request<Body>, pair: &str) -> bool {
    request
        .uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .any(|p| p == pair)
}

fn collection_path(resource: &ApiResource, namespace: &str) -> String {
    let prefix = if resource.group.is_empty() {
        format!("/api/{}", resource.version)
    } else {
        format!("/apis/{}/{}", resource.group, resource.version)
    };
    format!("{prefix}/namespaces/{namespace}/{}", resource.plural)
}

fn resource_path(resource: &ApiResource, namespace: &str, name: &str) -> String {
    format!("{}/{name}", collection_path(resource, namespace))
}

/// A label selector as it appears in a query string.
fn query_encoded(selector: &str) -> String {
    selector
        .replace('/', "%2F")
        .replace('=', "%3D")
        .replace(',', "%2C")
}

impl ApiServerVerifier {
    /// The discovery of one optional group-version: its resources, or the plain-text 404
    /// kube-apiserver sends for a group it does not serve.
    async fn expect_discovery(&mut self, group_version: &str, served: bool, resources: Value) {
        let (request, send) = self.next().await;
        assert_eq!(request.method(), Method::GET);
        assert_eq!(request.uri().path(), format!("/apis/{group_version}"));
        if served {
            send.send_response(json_response(
                StatusCode::OK,
                &json!({
                    "kind": "APIResourceList", "apiVersion": "v1",
                    "groupVersion": group_version, "resources": resources,
                }),
            ));
        } else {
            send.send_response(
                Response::builder()
                    .status(StatusCode::NOT_FOUND)
                    .header("content-type", "text/plain; charset=utf-8")
                    .body(Body::from(b"404 page not found\n".to_vec()))
                    .unwrap(),
            );
        }
    }

    /// The server-side apply of `child`: answered as stored, or refused as the plan says
    /// (then false: the pass stops there).
    async fn expect_apply(&mut self, plan: &Plan, child: &children::Child, ns: &str) -> bool {
        let (request, send) = self.next().await;
        assert_eq!(
            request.method(),
            Method::PATCH,
            "{} {}",
            child.kind(),
            child.name()
        );
        assert_eq!(
            request.uri().path(),
            resource_path(&child.resource(), ns, &child.name())
        );
        assert!(
            query_has(&request, "fieldManager=shortener-operator"),
            "{}",
            request.uri()
        );
        assert!(query_has(&request, "force=true"), "{}", request.uri());
        assert_eq!(
            request.headers().get("content-type").unwrap(),
            "application/apply-patch+yaml"
        );
        let body = body_json(request).await;
        assert_eq!(
            body,
            child.to_value().unwrap(),
            "{} {}",
            child.kind(),
            child.name()
        );
        self.recorded.applied.push(body.clone());
        if plan.reject_kind == Some(child.kind().as_str()) {
            send.send_response(status_error(
                422,
                "Invalid",
                &format!(
                    "{} \"{}\" is invalid: spec.template.spec.containers[0].image: Required value",
                    child.kind(),
                    child.name()
                ),
            ));
            return false;
        }
        let mut stored = as_stored(body, plan.workloads);
        if let (Some(parents), "HTTPRoute") = (&plan.route_parents, child.kind().as_str()) {
            stored["status"] = json!({ "parents": parents });
        }
        send.send_response(json_response(StatusCode::OK, &stored));
        true
    }

    pub fn run(self, scenario: Scenario) -> tokio::task::JoinHandle<Recorded> {
        tokio::spawn(async move {
            let plan = scenario.plan();
            let mut this = self;
            this.forbid_deletes = plan.forbid_deletes;
            let annotations = &plan.shortener.spec.ingress.annotations;
            let refused = !crate::children::exposure::snippet_annotations(annotations).is_empty()
                && !this.allow_snippets;
            if plan.shortener.spec.paused || refused {
                this = this.handle_status_patch(&plan.shortener).await;
            } else {
                this = this.handle_reconcile(&plan).await;
            }
            this.handle_events_until_quiet(&plan.shortener).await
        })
    }

    async fn next(&mut self) -> (Request<Body>, SendResponse<Response<Body>>) {
        self.handle
            .next_request()
            .await
            .expect("the reconciler stopped before the scripted request")
    }

    async fn handle_reconcile(mut self, plan: &Plan) -> Self {
        let shortener = &plan.shortener;
        let instance = Instance::new(shortener).unwrap();
        let ns = instance.namespace.clone();

        // 1. Discovery of the optional groups.
        self.expect_discovery(
            "monitoring.coreos.com/v1",
            plan.apis.monitoring,
            json!([
                {"name": "servicemonitors", "singularName": "servicemonitor", "namespaced": true, "kind": "ServiceMonitor", "verbs": ["get", "patch"]},
                {"name": "prometheusrules", "singularName": "prometheusrule", "namespaced": true, "kind": "PrometheusRule", "verbs": ["get", "patch"]},
            ]),
        )
        .await;
        self.expect_discovery(
            "gateway.networking.k8s.io/v1",
            plan.apis.gateway,
            json!([
                {"name": "gateways", "singularName": "gateway", "namespaced": true, "kind": "Gateway", "verbs": ["get", "patch"]},
                {"name": "httproutes", "singularName": "httproute", "namespaced": true, "kind": "HTTPRoute", "verbs": ["get", "patch"]},
            ]),
        )
        .await;
        self.expect_discovery(
            "postgresql.cnpg.io/v1",
            plan.apis.cloud_native_pg,
            json!([
                {"name": "clusters", "singularName": "cluster", "namespaced": true, "kind": "Cluster", "verbs": ["get", "patch"]},
                {"name": "poolers", "singularName": "pooler", "namespaced": true, "kind": "Pooler", "verbs": ["get", "patch"]},
            ]),
        )
        .await;

        // 2. The existing StatefulSet, for its immutable claim template.
        let embedded = shortener.spec.database.embedded();
        if let Some(pg) = &embedded {
            let (request, send) = self.next().await;
            assert_eq!(request.method(), Method::GET);
            assert_eq!(
                request.uri().path(),
                format!("/apis/apps/v1/namespaces/{ns}/statefulsets/links-postgres")
            );
            match &plan.statefulset_size {
                Some(size) => {
                    let sts = postgres::stateful_set(&instance, pg, Some(size));
                    send.send_response(json_response(
                        StatusCode::OK,
                        &serde_json::to_value(sts).unwrap(),
                    ));
                }
                None => send.send_response(status_error(
                    404,
                    "NotFound",
                    "statefulsets.apps \"links-postgres\" not found",
                )),
            }
        }

        // 3. Generated Secrets: read, and created only when absent.
        let observed = Observed {
            apis: plan.apis,
            postgres_template_size: plan.statefulset_size.clone(),
            operator_namespace: None,
        };
        let desired =
            children::desired_state(&instance, &observed, &Credentials::placeholder()).unwrap();
        for secret in &desired.secrets {
            let name = secret.name_any();
            let (request, send) = self.next().await;
            assert_eq!(request.method(), Method::GET);
            assert_eq!(
                request.uri().path(),
                format!("/api/v1/namespaces/{ns}/secrets/{name}")
            );
            if plan.secrets_exist {
                let mut existing = serde_json::to_value(secret).unwrap();
                existing["stringData"] = Value::Null;
                existing["data"] = json!({ "password": "ZXhpc3Rpbmc=" });
                send.send_response(json_response(StatusCode::OK, &existing));
                continue;
            }
            send.send_response(status_error(404, "NotFound", "secrets not found"));
            let (request, send) = self.next().await;
            assert_eq!(request.method(), Method::POST);
            assert_eq!(
                request.uri().path(),
                format!("/api/v1/namespaces/{ns}/secrets")
            );
            assert!(query_has(&request, "fieldManager=shortener-operator"));
            let body = body_json(request).await;
            assert_eq!(body["metadata"]["name"], name.as_str());
            // The superuser's Secret stays with a kept volume: no owner (see
            // `Instance::kept_for_it`); every other is the Shortener's.
            if body["metadata"]["annotations"]["shortener.dev/kept-with-claim"].is_null() {
                assert_eq!(body["metadata"]["ownerReferences"][0]["kind"], "Shortener");
            } else {
                assert!(body["metadata"]["ownerReferences"].is_null());
            }
            send.send_response(json_response(StatusCode::CREATED, &body));
            self.recorded.created_secrets.push(body);
        }

        // 4. Server-side apply of every child, in order, each after a read of its metadata
        // unless the watches have seen it: an object of that name the Shortener does not own
        // is left alone.
        for child in &desired.children {
            let foreign = plan.foreign == Some((child.kind().as_str(), child.name().as_str()));
            if plan.watched && foreign {
                continue;
            }
            if plan.watched {
                if !self.expect_apply(plan, child, &ns).await {
                    return self;
                }
                continue;
            }
            let (request, send) = self.next().await;
            assert_eq!(
                request.method(),
                Method::GET,
                "{} {}",
                child.kind(),
                child.name()
            );
            assert_eq!(
                request.uri().path(),
                resource_path(&child.resource(), &ns, &child.name())
            );
            let foreign = plan.foreign == Some((child.kind().as_str(), child.name().as_str()));
            if foreign {
                send.send_response(json_response(
                    StatusCode::OK,
                    &json!({
                        "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
                        "metadata": { "name": child.name(), "namespace": ns, "uid": "made-by-hand" },
                    }),
                ));
                continue;
            }
            if plan.statefulset_size.is_some() {
                // The stack exists: the child is there, owned by the Shortener.
                let metadata = child.to_value().unwrap()["metadata"].clone();
                send.send_response(json_response(
                    StatusCode::OK,
                    &json!({
                        "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
                        "metadata": metadata,
                    }),
                ));
            } else {
                send.send_response(status_error(404, "NotFound", "not found"));
            }
            if !self.expect_apply(plan, child, &ns).await {
                return self;
            }
        }

        // 5. A grown storage size goes straight to the PVC.
        if let (Some(pg), Some(size)) = (&embedded, &plan.statefulset_size)
            && &pg.storage.size.0 != size
        {
            let (request, send) = self.next().await;
            assert_eq!(request.method(), Method::PATCH);
            assert_eq!(
                request.uri().path(),
                format!("/api/v1/namespaces/{ns}/persistentvolumeclaims/data-links-postgres-0")
            );
            assert_eq!(
                request.headers().get("content-type").unwrap(),
                "application/merge-patch+json"
            );
            let body = body_json(request).await;
            if plan.refuse_resize {
                send.send_response(status_error(
                    403,
                    "Forbidden",
                    "persistentvolumeclaims \"data-links-postgres-0\" is forbidden: only dynamically provisioned pvc can be resized",
                ));
            } else {
                send.send_response(json_response(StatusCode::OK, &body));
            }
            self.recorded.pvc_patch = Some(body);
        }

        // 6. Pruning: each managed kind listed by the instance's labels; deletes of what the
        // reconciler judged orphaned come between the lists.
        let mut cluster: Vec<Value> = desired
            .children
            .iter()
            .map(|c| c.to_value().unwrap())
            .collect();
        for object in &plan.cluster {
            let same = |v: &Value| {
                v["kind"] == object["kind"] && v["metadata"]["name"] == object["metadata"]["name"]
            };
            if !cluster.iter().any(same) {
                cluster.push(object.clone());
            }
        }
        for resource in children::prune_order(plan.apis) {
            let Some((request, send)) = self.next_answering_deletes(&ns).await else {
                return self; // A refused delete ends the pass.
            };
            assert_eq!(request.method(), Method::GET);
            assert_eq!(request.uri().path(), collection_path(&resource, &ns));
            let selector = format!(
                "labelSelector={}",
                query_encoded(&instance.instance_selector())
            );
            assert!(query_has(&request, &selector), "{}", request.uri());
            let items: Vec<Value> = cluster
                .iter()
                .filter(|v| v["kind"] == resource.kind.as_str())
                .map(|v| {
                    let mut metadata = v["metadata"].clone();
                    metadata["uid"] = json!(format!("uid-of-{}", metadata["name"].as_str().unwrap()));
                    json!({ "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": metadata })
                })
                .collect();
            send.send_response(json_response(
                StatusCode::OK,
                &json!({
                    "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadataList",
                    "metadata": { "resourceVersion": "7" }, "items": items,
                }),
            ));
        }
        self
    }

    async fn next_answering_deletes(
        &mut self,
        ns: &str,
    ) -> Option<(Request<Body>, SendResponse<Response<Body>>)> {
        loop {
            let (request, send) = self.next().await;
            if request.method() != Method::DELETE {
                return Some((request, send));
            }
            self.answer_delete(ns, request, send).await;
            if self.forbid_deletes {
                return None;
            }
        }
    }

    /// A delete of one listed object: only that very object (uid precondition), its dependents
    /// collected in the background.
    async fn answer_delete(
        &mut self,
        ns: &str,
        request: Request<Body>,
        send: SendResponse<Response<Body>>,
    ) {
        let path = request.uri().path().to_string();
        let kind = children::managed_kinds(OptionalApis::ALL)
            .into_iter()
            .find(|r| path.starts_with(&format!("{}/", collection_path(r, ns))))
            .unwrap_or_else(|| panic!("delete of an unmanaged kind: {path}"))
            .kind;
        let name = path.rsplit('/').next().unwrap().to_string();
        let body = body_json(request).await;
        assert_eq!(body["propagationPolicy"], "Background", "{body}");
        assert_eq!(
            body["preconditions"]["uid"],
            format!("uid-of-{name}"),
            "{body}"
        );
        if self.forbid_deletes {
            let message = format!("{kind} \"{name}\" is forbidden: cannot delete");
            send.send_response(status_error(403, "Forbidden", &message));
            return;
        }
        self.recorded.deleted.push(format!("{kind}/{name}"));
        send.send_response(json_response(
            StatusCode::OK,
            &json!({ "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success" }),
        ));
    }

    /// The status write and the events come last; both are optional in a steady state, so
    /// everything after the applies is accepted in any order until the reconciler is quiet.
    async fn handle_events_until_quiet(mut self, shortener: &Shortener) -> Recorded {
        let ns = shortener.namespace().unwrap();
        loop {
            let next =
                tokio::time::timeout(Duration::from_millis(300), self.handle.next_request()).await;
            let Ok(Some((request, send))) = next else {
                return self.recorded;
            };
            let path = request.uri().path().to_string();
            if request.method() == Method::POST
                && path == format!("/apis/events.k8s.io/v1/namespaces/{ns}/events")
            {
                let body = body_json(request).await;
                assert_eq!(body["regarding"]["kind"], "Shortener");
                assert_eq!(body["reportingController"], "shortener-operator");
                self.recorded.events.push((
                    body["reason"].as_str().unwrap().to_string(),
                    body["type"].as_str().unwrap().to_string(),
                ));
                send.send_response(json_response(StatusCode::CREATED, &body));
            } else if request.method() == Method::DELETE {
                self.answer_delete(&ns, request, send).await;
            } else if request.method() == Method::PATCH && path.ends_with("/status") {
                self = self.answer_status_patch(shortener, request, send).await;
            } else {
                panic!("unexpected request {} {}", request.method(), request.uri());
            }
        }
    }

    async fn handle_status_patch(mut self, shortener: &Shortener) -> Self {
        let (request, send) = self.next().await;
        self = self.answer_status_patch(shortener, request, send).await;
        self
    }

    async fn answer_status_patch(
        mut self,
        shortener: &Shortener,
        request: Request<Body>,
        send: SendResponse<Response<Body>>,
    ) -> Self {
        assert_eq!(request.method(), Method::PATCH);
        assert_eq!(
            request.uri().path(),
            format!(
                "/apis/shortener.dev/v1alpha1/namespaces/{}/shorteners/{}/status",
                shortener.namespace().unwrap(),
                shortener.name_any()
            )
        );
        assert!(query_has(&request, "fieldManager=shortener-operator"));
        assert!(query_has(&request, "force=true"));
        let body = body_json(request).await;
        assert_eq!(body["apiVersion"], "shortener.dev/v1alpha1");
        assert_eq!(body["kind"], "Shortener");
        assert!(
            body.get("spec").is_none(),
            "a status patch must not touch the spec"
        );
        let status: ShortenerStatus = serde_json::from_value(body["status"].clone()).unwrap();
        assert!(
            self.recorded.status.is_none(),
            "status written twice in one pass"
        );
        let mut stored = shortener.clone();
        stored.status = Some(status.clone());
        send.send_response(json_response(
            StatusCode::OK,
            &serde_json::to_value(stored).unwrap(),
        ));
        self.recorded.status = Some(status);
        self
    }
}

/// The object as the API server returns it after an apply: stored metadata plus a status
/// that reflects the scenario's pods.
fn as_stored(mut body: Value, workloads: Workloads) -> Value {
    body["metadata"]["uid"] = json!("0b6f2a8e-2f0d-4a4e-9d51-6f1f1c1e0001");
    body["metadata"]["resourceVersion"] = json!("42");
    body["metadata"]["generation"] = json!(1);
    let kind = body["kind"].as_str().unwrap_or_default().to_string();
    if kind == "Deployment" || kind == "StatefulSet" {
        let desired = body["spec"]["replicas"].as_i64().unwrap_or(1);
        let is_app = body["metadata"]["labels"]["app.kubernetes.io/component"] == "app";
        let (current, ready) = match workloads {
            Workloads::Starting => (desired, 0),
            Workloads::Ready => (desired, desired),
            Workloads::AppScaledDown if is_app => (1, 1),
            Workloads::AppScaledDown => (desired, desired),
        };
        body["status"] = json!({
            "observedGeneration": 1,
            "replicas": current,
            "updatedReplicas": current,
            "readyReplicas": ready,
            "availableReplicas": ready,
        });
    }
    body
}

impl Context {
    /// A context whose client talks to the scripted API server.
    pub fn test() -> (Arc<Self>, ApiServerVerifier) {
        Self::test_allowing_snippets(false)
    }

    /// As `test`, with `--allow-snippet-annotations` set as given.
    pub fn test_allowing_snippets(allow: bool) -> (Arc<Self>, ApiServerVerifier) {
        let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(service, "default");
        let ctx = Self::new(
            client,
            Arc::new(Metrics::new().unwrap()),
            Some("test".into()),
        )
        .allowing_snippet_annotations(allow);
        (
            Arc::new(ctx),
            ApiServerVerifier {
                handle,
                recorded: Recorded::default(),
                forbid_deletes: false,
                allow_snippets: allow,
            },
        )
    }
}
