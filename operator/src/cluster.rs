//! The requests of a reconcile pass: the facts the desired state depends on, the generated
//! Secrets, the children ([`ClusterResources`]: apply what is ours, remember it, prune the
//! rest), volume growth and the status write.

use std::fmt::Debug;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use std::sync::RwLock;

use kube::api::{
    Api, ApiResource, DynamicObject, PartialObjectMeta, Patch, PatchParams, PostParams,
};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::children::{
    Child, Component, DesiredState, FIELD_MANAGER, Instance, Observed, OptionalApis,
    cloudnative_pg, monitoring, on_child, postgres,
};
use crate::crd::{API_VERSION, Shortener, ShortenerStatus};
use crate::error::{Error, Result};
use crate::gateway_api;
use crate::prune;
use crate::status::Refusal;

/// Facts from the cluster the desired state depends on.
pub async fn observe(client: &Client, instance: &Instance<'_>) -> Result<Observed> {
    let apis = served_apis(client).await?;
    let mut postgres_template_size = None;
    if instance.spec().database.embedded().is_some() {
        let api: Api<StatefulSet> = Api::namespaced(client.clone(), &instance.namespace);
        let name = instance.child_name(Component::Postgres);
        if let Some(existing) = api.get_opt(&name).await.map_err(Error::Kube)? {
            postgres_template_size = existing
                .spec
                .and_then(|s| s.volume_claim_templates)
                .and_then(|t| t.into_iter().next())
                .and_then(|t| t.spec)
                .and_then(|s| s.resources)
                .and_then(|r| r.requests)
                .and_then(|r| r.get("storage").map(|q| q.0.clone()));
        }
    }
    Ok(Observed {
        apis,
        postgres_template_size,
        operator_namespace: None,
    })
}

/// Which optional APIs the cluster serves, by discovery of each group-version: the one owner
/// of that question (see `OptionalApis`). A CRD installed or removed later is seen by the next
/// pass.
pub async fn served_apis(client: &Client) -> Result<OptionalApis> {
    let monitoring = serves(
        client,
        monitoring::MONITORING_VERSION,
        &["servicemonitors", "prometheusrules"],
    )
    .await?;
    let gateway = serves(client, gateway_api::GATEWAY_VERSION, &["httproutes"]).await?;
    let cloud_native_pg = serves(
        client,
        cloudnative_pg::CNPG_VERSION,
        &["clusters", "poolers"],
    )
    .await?;
    Ok(OptionalApis {
        monitoring,
        gateway,
        cloud_native_pg,
    })
}

/// Whether `group_version` serves every one of `plurals`; a 404 means its CRDs are not
/// installed.
async fn serves(client: &Client, group_version: &str, plurals: &[&str]) -> Result<bool> {
    match client.list_api_group_resources(group_version).await {
        Ok(list) => {
            let served = |plural: &&str| list.resources.iter().any(|r| r.name == *plural);
            Ok(plurals.iter().all(served))
        }
        // The real API server answers an unserved group with a plain-text `404 page not
        // found`, not a Status object, so only the code is there to match (kube's
        // `is_not_found` wants the `NotFound` reason).
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(false),
        Err(error) => Err(Error::Kube(error)),
    }
}

/// Create generated Secrets that do not exist yet; existing ones are never touched, since
/// their values are already baked into the database and clients (a superuser's Secret kept
/// with the volume by an earlier Shortener of this name is one). Returns the created names,
/// and a refusal for each other existing one this Shortener does not own: its credentials
/// were chosen by someone else (the pods still read it; the status says so).
pub async fn ensure_secrets(
    client: &Client,
    instance: &Instance<'_>,
    desired: &DesiredState,
) -> Result<(Vec<String>, Vec<Refusal>)> {
    create_absent(
        client,
        instance,
        &desired.secrets,
        |meta| instance.owns(meta) || instance.kept_for_it(meta),
        "the operator neither generated nor changed it",
    )
    .await
}

/// Create the backups' claim if it does not exist yet. An existing one is never changed
/// nor deleted (it holds the backups); one an earlier Shortener of this name left is
/// reused, any other is still mounted, and the status says it is not the operator's.
pub async fn ensure_claims(
    client: &Client,
    instance: &Instance<'_>,
    desired: &DesiredState,
) -> Result<(Vec<String>, Vec<Refusal>)> {
    create_absent(
        client,
        instance,
        &desired.claims,
        |meta| instance.keeps_as_backups(meta),
        "the backups are written to it as it is",
    )
    .await
}

/// Create each object that does not exist yet, leaving existing ones as they are; refuse
/// (in the status) those that exist and are not `ours`.
async fn create_absent<K>(
    client: &Client,
    instance: &Instance<'_>,
    objects: &[K],
    ours: impl Fn(&ObjectMeta) -> bool,
    left_as_is: &str,
) -> Result<(Vec<String>, Vec<Refusal>)>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Debug
        + Serialize
        + DeserializeOwned,
{
    let api: Api<K> = Api::namespaced(client.clone(), &instance.namespace);
    let mut created = Vec::new();
    let mut refusals = Vec::new();
    for object in objects {
        let name = object.name_any();
        if let Some(existing) = api.get_opt(&name).await.map_err(Error::Kube)? {
            if !ours(existing.meta()) {
                refusals.push(Refusal {
                    reason: "ObjectNotOwned",
                    message: format!(
                        "{} {name} already exists and was not created by this Shortener; \
                         {left_as_is}",
                        K::kind(&())
                    ),
                });
            }
            continue;
        }
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.to_string()),
            ..PostParams::default()
        };
        match api.create(&params, object).await {
            Ok(_) => created.push(name),
            // Another writer won the race; theirs stays.
            Err(kube::Error::Api(status)) if status.is_already_exists() => {}
            Err(error) => return Err(Error::Kube(error)),
        }
    }
    Ok((created, refusals))
}

/// The owner of "apply, remember, prune, is it ours" for one pass over one Shortener's
/// children: each child is applied unless an object of its name exists that is not ours
/// (then it is refused, never taken over); what was applied is remembered; [`Self::prune`]
/// then deletes what is ours but was not applied.
pub struct ClusterResources<'a> {
    client: &'a Client,
    instance: &'a Instance<'a>,
    seen: &'a SeenChildren,
    applied: Vec<Child>,
    refusals: Vec<Refusal>,
}

/// What a pass wrote: the stored children, the pruned `Kind/name`s, and what the cluster
/// refused without stopping the pass.
pub struct Written {
    pub applied: Vec<Child>,
    pub pruned: Vec<String>,
    pub refusals: Vec<Refusal>,
}

impl<'a> ClusterResources<'a> {
    pub fn new(client: &'a Client, instance: &'a Instance<'a>, seen: &'a SeenChildren) -> Self {
        Self {
            client,
            instance,
            seen,
            applied: Vec::new(),
            refusals: Vec::new(),
        }
    }

    /// Server-side apply `child`, unless an object of its name is not ours. The watch cache
    /// answers that for every child it has seen (every pass after the first); a GET only
    /// for the others.
    pub async fn apply(&mut self, child: &Child) -> Result<()> {
        let refusal = match self.seen.of(self.instance, child) {
            Seen::Ours => None,
            Seen::NotOurs => Some(not_ours(child)),
            Seen::Unknown => foreign_object(self.client, self.instance, child).await?,
        };
        match refusal {
            Some(refusal) => self.refusals.push(refusal),
            None => {
                let stored = apply(self.client, &self.instance.namespace, child).await?;
                self.applied.push(stored);
            }
        }
        Ok(())
    }

    /// Something the cluster refused that does not stop the pass.
    pub fn refused(&mut self, refusal: Option<Refusal>) {
        self.refusals.extend(refusal);
    }

    /// Delete what is ours but was not applied in this pass (call only once every apply
    /// succeeded: a child that failed would otherwise look unwanted).
    pub async fn prune(self, apis: OptionalApis) -> Result<Written> {
        let wanted = self.applied.iter().map(Child::key).collect();
        let pruned = prune::prune(self.client, self.instance, &wanted, apis).await?;
        Ok(Written {
            applied: self.applied,
            pruned,
            refusals: self.refusals,
        })
    }
}

/// An object of the child's name that is not ours, reported instead of applied: a forced
/// server-side apply would take it over.
async fn foreign_object(
    client: &Client,
    instance: &Instance<'_>,
    child: &Child,
) -> Result<Option<Refusal>> {
    let resource = child.resource();
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), &instance.namespace, &resource);
    let existing = api
        .get_metadata_opt(&child.name())
        .await
        .map_err(|source| Error::Apply {
            kind: child.kind(),
            name: child.name(),
            source,
        })?;
    let Some(existing) = existing else {
        return Ok(None);
    };
    if instance.owns(&existing.metadata) {
        return Ok(None);
    }
    Ok(Some(not_ours(child)))
}

/// The refusal of a child whose name an object not ours already has.
fn not_ours(child: &Child) -> Refusal {
    Refusal {
        reason: "ObjectNotOwned",
        message: format!(
            "{} {} already exists and was not created by this Shortener (no owner reference to \
             it); the operator leaves it untouched: delete or rename it to let the operator \
             create its own",
            child.kind(),
            child.name()
        ),
    }
}

/// Server-side apply one child; returns the object as stored, status included.
async fn apply(client: &Client, namespace: &str, child: &Child) -> Result<Child> {
    on_child!(child,
        object => patch(&Api::namespaced(client.clone(), namespace), object).await.map(Child::from),
        (resource, object) => {
            let api = Api::namespaced_with(client.clone(), namespace, resource);
            patch(&api, object).await.map(|stored| Child::Dynamic(resource.clone(), stored))
        }
    )
    .map_err(|source| Error::Apply {
        kind: child.kind(),
        name: child.name(),
        source,
    })
}

async fn patch<K>(api: &Api<K>, object: &K) -> Result<K, kube::Error>
where
    K: Resource + Clone + DeserializeOwned + Serialize + Debug,
{
    let params = PatchParams::apply(FIELD_MANAGER).force();
    api.patch(&object.name_any(), &params, &Patch::Apply(object))
        .await
}

/// The field manager that holds the app's replica count while an autoscaler takes it over
/// ([`hand_over_replicas`]).
pub const HANDOVER_MANAGER: &str = "shortener-operator-handover";

/// With `spec.app.autoscaling` set, the operator's apply leaves out the app Deployment's
/// `replicas`. A field its only owner drops is reset to its default (1 replica), so on the
/// first pass after autoscaling is turned on, while the operator's apply still owns the
/// count, a second field manager applies the current count first: the operator's apply then
/// releases only its share, the count stays, and the autoscaler changes it from there. No
/// request while the operator does not own the count (every later pass: one GET).
pub async fn hand_over_replicas(client: &Client, instance: &Instance<'_>) -> Result<()> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), &instance.namespace);
    let name = instance.child_name(Component::App);
    let Some(live) = api.get_opt(&name).await.map_err(Error::Kube)? else {
        return Ok(());
    };
    if !instance.owns(&live.metadata) || !applies_replicas(&live.metadata) {
        return Ok(());
    }
    let Some(replicas) = live.spec.as_ref().and_then(|s| s.replicas) else {
        return Ok(());
    };
    let keep = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": { "name": name },
        "spec": { "replicas": replicas },
    });
    api.patch(
        &name,
        &PatchParams::apply(HANDOVER_MANAGER),
        &Patch::Apply(&keep),
    )
    .await
    .map_err(|source| Error::Apply {
        kind: "Deployment".into(),
        name: name.clone(),
        source,
    })?;
    Ok(())
}

/// Whether the operator's server-side apply owns `spec.replicas` of the object.
fn applies_replicas(meta: &ObjectMeta) -> bool {
    meta.managed_fields.iter().flatten().any(|entry| {
        entry.manager.as_deref() == Some(FIELD_MANAGER)
            && entry.operation.as_deref() == Some("Apply")
            && entry
                .fields_v1
                .as_ref()
                .is_some_and(|fields| fields.0["f:spec"].get("f:replicas").is_some())
    })
}

/// Volume claim templates are immutable, so a larger `storage.size` is applied to the PVC
/// directly (the StorageClass must allow expansion). CEL on the CRD already forbids shrinking.
/// A resize the cluster refuses (a class without expansion, a static volume) is returned as a
/// refusal to report, not an error: the rest of the pass does not depend on it.
pub async fn grow_postgres_volume(
    client: &Client,
    instance: &Instance<'_>,
    observed: &Observed,
    wanted: &str,
) -> Result<Option<Refusal>> {
    let Some(current) = observed.postgres_template_size.as_deref() else {
        return Ok(None);
    };
    if current == wanted {
        return Ok(None);
    }
    let api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &instance.namespace);
    let patch = json!({ "spec": { "resources": { "requests": { "storage": wanted } } } });
    let claim = postgres::claim_name(instance);
    match api
        .patch(&claim, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(None),
        // The pod (and so its claim) may not exist yet; the next pass retries.
        Err(kube::Error::Api(status)) if status.is_not_found() => Ok(None),
        // Forbidden (admission) or Invalid: retrying the same patch cannot succeed.
        Err(kube::Error::Api(status)) if matches!(status.code, 403 | 422) => Ok(Some(Refusal {
            reason: "VolumeResizeRefused",
            message: format!(
                "the cluster refused to grow PersistentVolumeClaim {claim} from {current} to {wanted}: {}; \
                 the StorageClass must allow volume expansion",
                status.message
            ),
        })),
        Err(error) => Err(Error::Kube(error)),
    }
}

/// Write the status only when it changed, so a steady state costs no writes (and no watch
/// events that would trigger yet another reconcile).
pub async fn write_status(
    api: &Api<Shortener>,
    name: &str,
    old: &ShortenerStatus,
    new: &ShortenerStatus,
) -> Result<()> {
    if old == new {
        return Ok(());
    }
    let patch = Patch::Apply(json!({
        "apiVersion": API_VERSION,
        "kind": "Shortener",
        "status": new,
    }));
    api.patch_status(name, &PatchParams::apply(FIELD_MANAGER).force(), &patch)
        .await
        .map_err(Error::Kube)?;
    Ok(())
}

/// What the owned-kind watches have seen of the children: one store per kind (and per
/// watched namespace). The controller's own watches fill them, so a pass learns whether an
/// object of a child's name exists, and whose it is, without a request of its own.
#[derive(Default)]
pub struct SeenChildren {
    stores: RwLock<Vec<(ApiResource, Store<PartialObjectMeta<DynamicObject>>)>>,
}

/// Whether an object of a child's name is ours, as far as the watches know.
#[derive(Debug, PartialEq, Eq)]
pub enum Seen {
    Ours,
    NotOurs,
    /// Not in the watch cache: absent, made without the operator's label, or not seen yet.
    Unknown,
}

impl SeenChildren {
    /// Keeps a watch's store of `kind`.
    pub fn add(&self, kind: ApiResource, store: Store<PartialObjectMeta<DynamicObject>>) {
        if let Ok(mut stores) = self.stores.write() {
            stores.push((kind, store));
        }
    }

    /// What the watches know of `child`.
    pub fn of(&self, instance: &Instance<'_>, child: &Child) -> Seen {
        let Ok(stores) = self.stores.read() else {
            return Seen::Unknown;
        };
        let resource = child.resource();
        let key = ObjectRef::new_with(&child.name(), resource.clone()).within(&instance.namespace);
        let found = stores
            .iter()
            .filter(|(kind, _)| kind == &resource)
            .find_map(|(_, store)| store.get(&key));
        match found {
            Some(meta) if instance.owns(&meta.metadata) => Seen::Ours,
            Some(_) => Seen::NotOurs,
            None => Seen::Unknown,
        }
    }
}
