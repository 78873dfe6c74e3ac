//! Pruning: once a pass has applied every desired child, delete what this Shortener made
//! earlier that the spec no longer asks for (an Ingress after `ingress.enabled: false` or a
//! switch to an HTTPRoute, the HTTPRoute after a switch back, Redis
//! after `redis.external`, a ServiceMonitor after turning it off). Called by
//! `cluster::ClusterResources::prune`, which holds the record of what the pass applied.
//!
//! Candidates are listed kind by kind with the instance's label selector; one is deleted
//! only if it is also ours (`Instance::owns`) and not among the applied children. An object someone
//! else made, even with the same labels, is never touched. Not pruned: generated Secrets
//! (created once, they hold credentials; listing them would widen the operator's access) and
//! the PostgreSQL data volume, which belongs to the StatefulSet, not to the Shortener (see
//! `StorageSpec::delete_on_removal`).

use std::collections::BTreeSet;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, ListParams, Preconditions, PropagationPolicy,
};

use crate::children::{self, Instance, OptionalApis, object_key};
use crate::error::{Error, Result};

/// Delete the owned children of `instance` whose `Kind/name` is not in `wanted`; returns
/// their `Kind/name`.
pub async fn prune(
    client: &Client,
    instance: &Instance<'_>,
    wanted: &BTreeSet<String>,
    apis: OptionalApis,
) -> Result<Vec<String>> {
    let selector = ListParams::default().labels(&instance.instance_selector());
    let mut pruned = Vec::new();
    for resource in children::prune_order(apis) {
        let api: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), &instance.namespace, &resource);
        let listed = api
            .list_metadata(&selector)
            .await
            .map_err(|source| Error::Prune {
                key: resource.plural.clone(),
                source,
            })?;
        for meta in listed.items.iter().map(|o| &o.metadata) {
            if let Some((name, uid)) = orphan(instance, &resource, meta, wanted) {
                let key = object_key(&resource.kind, &name);
                if delete(&api, &name, uid)
                    .await
                    .map_err(|source| Error::Prune {
                        key: key.clone(),
                        source,
                    })?
                {
                    pruned.push(key);
                }
            }
        }
    }
    Ok(pruned)
}

/// Name and uid of a listed object to delete: ours, not wanted, and not already on its way
/// out.
fn orphan(
    instance: &Instance<'_>,
    resource: &ApiResource,
    meta: &ObjectMeta,
    wanted: &BTreeSet<String>,
) -> Option<(String, String)> {
    let name = meta.name.clone()?;
    let stale = !wanted.contains(&object_key(&resource.kind, &name));
    (instance.owns(meta) && stale && meta.deletion_timestamp.is_none())
        .then_some((name, meta.uid.clone()?))
}

/// Delete one object, but only the very object that was listed (a uid precondition): one
/// recreated under the same name in the meantime is not ours to judge. False when it was gone.
async fn delete(api: &Api<DynamicObject>, name: &str, uid: String) -> Result<bool, kube::Error> {
    let params = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        preconditions: Some(Preconditions {
            uid: Some(uid),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(name, &params).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.is_not_found() || status.is_conflict() => Ok(false),
        Err(error) => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::networking::v1::Ingress;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
    use k8s_openapi::jiff::Timestamp;

    const OWNER: &str = "3f1c9a52-5d8e-4c4b-9a51-0d0e8f1a7b21";

    fn listed(name: &str, owner: Option<&str>) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            uid: Some(format!("uid-of-{name}")),
            owner_references: owner.map(|uid| {
                vec![OwnerReference {
                    uid: uid.into(),
                    ..OwnerReference::default()
                }]
            }),
            ..ObjectMeta::default()
        }
    }

    #[test]
    fn only_owned_objects_the_pass_did_not_apply_are_orphans() {
        let resource = ApiResource::erase::<Ingress>(&());
        let wanted = BTreeSet::from(["Ingress/links".to_string()]);
        let shortener = crate::children::testing::shortener(Default::default());
        let instance = Instance::new(&shortener).unwrap();
        assert_eq!(instance.owner.uid, OWNER);
        let orphan = |meta: &ObjectMeta| orphan(&instance, &resource, meta, &wanted);

        assert_eq!(orphan(&listed("links", Some(OWNER))), None, "still wanted");
        assert_eq!(
            orphan(&listed("links-old", Some(OWNER))),
            Some(("links-old".into(), "uid-of-links-old".into()))
        );
        assert_eq!(
            orphan(&listed("links-old", None)),
            None,
            "made by someone else"
        );
        assert_eq!(
            orphan(&listed("links-old", Some("another-shortener"))),
            None
        );
        let mut leaving = listed("links-old", Some(OWNER));
        leaving.deletion_timestamp = Some(Time(Timestamp::UNIX_EPOCH));
        assert_eq!(orphan(&leaving), None, "already being deleted");
    }
}
