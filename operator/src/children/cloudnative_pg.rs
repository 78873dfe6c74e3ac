//! CloudNativePG, for `database.cloudNativePG`: the database as a `Cluster` (a primary and
//! streaming replicas, automated failover, the schema owner and the runtime role as managed
//! roles) and its `Pooler` (PgBouncer in transaction mode) in place of the embedded
//! StatefulSet and PgBouncer.
//!
//! Neither kind has typed bindings, so both are dynamic objects, applied only while the
//! cluster serves `postgresql.cnpg.io/v1` (otherwise the status says Degraded). CloudNativePG
//! names its own objects after the Cluster (`NAME-postgres`): the Services `-rw` (the
//! primary), `-ro` and `-r`, the instance pods `-1`, `-2`..., and the superuser's Secret
//! `-superuser`; the Pooler's Deployment and Service take the Pooler's name (`NAME-pgbouncer`).
//! The role-setup Job (`roles.rs`) runs the same SQL as for the embedded database, against
//! the primary as that superuser: grants, default privileges and the runtime role's limits,
//! which managed roles do not cover.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, EnvVar, PodSpec};
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, TypeMeta};
use serde_json::{Value, json};

use super::stack::{APP_ROLE, DATABASE_NAME, OWNER_ROLE, POSTGRES_PORT};
use super::{Child, Component, Instance, env, pgbouncer, secret_env};
use crate::crd::{CloudNativePgSpec, DatabaseStatus};
use crate::status::Workload;

pub const CNPG_GROUP: &str = "postgresql.cnpg.io";
pub const CNPG_VERSION: &str = "postgresql.cnpg.io/v1";

/// The Cluster's `status.phase` once every instance runs and replicates.
pub const HEALTHY_PHASE: &str = "Cluster in healthy state";

/// The port of the Pooler's Service (PgBouncer's `listen_port`, which CloudNativePG fixes).
pub const POOLER_PORT: i32 = 5432;

/// How long the Pooler's PgBouncer waits after a failed login to the primary (a failover
/// under way) before it tries again.
const SERVER_LOGIN_RETRY_SECONDS: u32 = 1;

/// On the Secrets of the managed roles: CloudNativePG applies a changed password at once.
const RELOAD_LABEL: (&str, &str) = ("cnpg.io/reload", "true");

pub fn cluster_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(CNPG_GROUP, "v1", "Cluster"),
        "clusters",
    )
}

pub fn pooler_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(CNPG_GROUP, "v1", "Pooler"),
        "poolers",
    )
}

/// The Cluster's name, the component's.
pub fn cluster_name(instance: &Instance<'_>) -> String {
    instance.child_name(Component::Postgres)
}

/// The Service CloudNativePG keeps on the primary (read-write).
pub fn primary_service(instance: &Instance<'_>) -> String {
    format!("{}-rw", cluster_name(instance))
}

/// The Secret CloudNativePG generates for the `postgres` superuser (`enableSuperuserAccess`).
pub fn superuser_secret_name(instance: &Instance<'_>) -> String {
    format!("{}-superuser", cluster_name(instance))
}

/// The Pooler's name, and so its Deployment's and Service's.
pub fn pooler_name(instance: &Instance<'_>) -> String {
    instance.child_name(Component::PgBouncer)
}

/// The label CloudNativePG puts on the Pooler's pods, which the NetworkPolicies select: it
/// sets the `app.kubernetes.io/*` labels of those pods itself, over the template's.
pub fn pooler_pod_labels(instance: &Instance<'_>) -> BTreeMap<String, String> {
    BTreeMap::from([("cnpg.io/poolerName".to_string(), pooler_name(instance))])
}

/// The superuser's connection to the primary, as libpq reads it: what the role-setup Job
/// runs as (CloudNativePG's Secret holds both the user name and the password).
pub fn superuser_env(instance: &Instance<'_>) -> Vec<EnvVar> {
    let secret = superuser_secret_name(instance);
    vec![
        env("PGHOST", primary_service(instance)),
        env("PGPORT", POSTGRES_PORT.to_string()),
        env("PGDATABASE", DATABASE_NAME),
        secret_env("PGUSER", &secret, "username"),
        secret_env("PGPASSWORD", &secret, "password"),
    ]
}

/// The labels CloudNativePG needs on the Secrets of the roles it manages.
pub fn role_secret_labels() -> BTreeMap<String, String> {
    BTreeMap::from([(RELOAD_LABEL.0.to_string(), RELOAD_LABEL.1.to_string())])
}

fn dynamic(resource: ApiResource, instance: &Instance<'_>, name: String, spec: Value) -> Child {
    let component = match resource.kind.as_str() {
        "Pooler" => Component::PgBouncer,
        _ => Component::Postgres,
    };
    let object = DynamicObject {
        types: Some(TypeMeta {
            api_version: resource.api_version.clone(),
            kind: resource.kind.clone(),
        }),
        metadata: instance.meta(name, component),
        data: json!({ "spec": spec }),
    };
    Child::Dynamic(resource, object)
}

/// The Cluster: `instances` PostgreSQL pods, the service's database owned by the schema
/// owner (`bootstrap.initdb`), both roles managed with their passwords from the operator's
/// Secrets, and the superuser enabled for the role-setup Job. Its pods carry the
/// component's selector labels (`inheritedMetadata`), which the NetworkPolicies select.
pub fn cluster(instance: &Instance<'_>, spec: &CloudNativePgSpec) -> Child {
    let owner_secret = instance.owner_secret_name();
    let runtime_secret = instance.runtime_secret_name();
    let mut storage = json!({ "size": spec.storage.size });
    if let Some(class) = &spec.storage.storage_class_name {
        storage["storageClass"] = json!(class);
    }
    let mut cluster = json!({
        "instances": spec.instances,
        "enableSuperuserAccess": true,
        "storage": storage,
        "smartShutdownTimeout": spec.smart_shutdown_timeout_seconds,
        "bootstrap": { "initdb": {
            "database": DATABASE_NAME,
            "owner": OWNER_ROLE,
            "secret": { "name": owner_secret },
        }},
        "managed": { "roles": [
            {
                "name": OWNER_ROLE,
                "ensure": "present",
                "login": true,
                "passwordSecret": { "name": owner_secret },
            },
            {
                // NOINHERIT, as the role SQL makes it: rows only, through its own grants.
                "name": APP_ROLE,
                "ensure": "present",
                "login": true,
                "inherit": false,
                "passwordSecret": { "name": runtime_secret },
            },
        ]},
    });
    scheduling(instance, &mut cluster);
    if let Some(image) = &spec.image_name {
        cluster["imageName"] = json!(image);
    }
    if let Some(resources) = &spec.resources {
        cluster["resources"] = json!(resources);
    }
    if !spec.parameters.is_empty() {
        cluster["postgresql"] = json!({ "parameters": spec.parameters });
    }
    dynamic(
        cluster_resource(),
        instance,
        cluster_name(instance),
        cluster,
    )
}

/// The PostgreSQL component's pod options (`pods` and `database.cloudNativePG.pods`) in the
/// Cluster's terms, and the selector labels on everything it makes (`inheritedMetadata`,
/// ours over the options'), which the NetworkPolicies select.
fn scheduling(instance: &Instance<'_>, cluster: &mut Value) {
    let options = instance.spec().pod_options(Component::Postgres);
    let mut labels = options.labels.clone();
    labels.extend(instance.selector_labels(Component::Postgres));
    let mut inherited = json!({ "labels": labels });
    if !options.annotations.is_empty() {
        inherited["annotations"] = json!(options.annotations);
    }
    cluster["inheritedMetadata"] = inherited;
    let mut affinity = serde_json::Map::new();
    if let Some(selector) = &options.node_selector {
        affinity.insert("nodeSelector".into(), json!(selector));
    }
    if let Some(tolerations) = &options.tolerations {
        affinity.insert("tolerations".into(), json!(tolerations));
    }
    if let Some(given) = &options.affinity {
        let parts = [
            ("nodeAffinity", json!(given.node_affinity)),
            ("additionalPodAffinity", json!(given.pod_affinity)),
            ("additionalPodAntiAffinity", json!(given.pod_anti_affinity)),
        ];
        for (key, value) in parts {
            if !value.is_null() {
                affinity.insert(key.into(), value);
            }
        }
    }
    if !affinity.is_empty() {
        cluster["affinity"] = Value::Object(affinity);
    }
    // An empty list means "no spread" for our pods; CloudNativePG has no default to turn off.
    if let Some(spread) = options
        .topology_spread_constraints
        .filter(|s| !s.is_empty())
    {
        cluster["topologySpreadConstraints"] = json!(spread);
    }
    if let Some(class) = &options.priority_class_name {
        cluster["priorityClassName"] = json!(class);
    }
    if let Some(secrets) = &options.image_pull_secrets {
        cluster["imagePullSecrets"] = json!(secrets);
    }
}

/// The Pooler's pod template: its container's resources and the PgBouncer component's pod
/// options (`pods` and `pgbouncer.pods`), as for the embedded PgBouncer.
fn pooler_template(instance: &Instance<'_>) -> Value {
    let pool = &instance.spec().pgbouncer;
    let mut pod = PodSpec {
        containers: vec![Container {
            name: "pgbouncer".into(),
            resources: Some(super::resources(pool.resources.as_ref(), pgbouncer::BUDGET)),
            ..Container::default()
        }],
        ..PodSpec::default()
    };
    let (mut labels, mut annotations) = (BTreeMap::new(), BTreeMap::new());
    let options = instance.spec().pod_options(Component::PgBouncer);
    options.apply(&mut pod, &mut labels, &mut annotations, None);
    let mut template = json!({ "spec": pod });
    if !labels.is_empty() {
        template["metadata"]["labels"] = json!(labels);
    }
    if !annotations.is_empty() {
        template["metadata"]["annotations"] = json!(annotations);
    }
    template
}

/// The Pooler: PgBouncer in transaction mode in front of the primary, with the pool
/// settings of `spec.pgbouncer` and the statements sqlx prepares tracked (as the embedded
/// PgBouncer's configuration does). CloudNativePG labels its pods (see [`pooler_pod_labels`]).
pub fn pooler(instance: &Instance<'_>, spec: &CloudNativePgSpec) -> Child {
    let pool = &instance.spec().pgbouncer;
    let pooler = json!({
        "cluster": { "name": cluster_name(instance) },
        "instances": spec.pooler_instances,
        "type": "rw",
        "pgbouncer": {
            "poolMode": pool.pool_mode.as_str(),
            "parameters": {
                "default_pool_size": pool.default_pool_size.to_string(),
                "max_client_conn": pool.max_client_connections.to_string(),
                "max_db_connections": pgbouncer::server_connections(pool).to_string(),
                "max_prepared_statements": "200",
                // After a failover the new primary answers within seconds; PgBouncer's
                // default waits 15 s after a failed server login before trying again.
                "server_login_retry": SERVER_LOGIN_RETRY_SECONDS.to_string(),
            },
        },
        "template": pooler_template(instance),
    });
    dynamic(pooler_resource(), instance, pooler_name(instance), pooler)
}

/// Rollout state of the Cluster or the Pooler, from the status CloudNativePG writes; `None`
/// for any other object.
pub fn workload(object: &DynamicObject) -> Option<Workload> {
    let kind = object.types.as_ref()?.kind.as_str();
    let spec = &object.data["spec"];
    let status = &object.data["status"];
    let number = |value: &Value| value.as_i64().and_then(|n| i32::try_from(n).ok());
    let desired = number(&spec["instances"]).unwrap_or(1);
    let (component, current, ready, healthy) = match kind {
        "Cluster" => (
            Component::Postgres,
            number(&status["instances"]).unwrap_or(0),
            number(&status["readyInstances"]).unwrap_or(0),
            status["phase"].as_str() == Some(HEALTHY_PHASE),
        ),
        "Pooler" => {
            // The Pooler's status counts its pods, not their readiness; "active" is the
            // phase of a Pooler whose Deployment serves.
            let pods = number(&status["instances"]).unwrap_or(0);
            (
                Component::PgBouncer,
                pods,
                pods,
                status["phase"].as_str() == Some("active"),
            )
        }
        _ => return None,
    };
    Some(Workload {
        component: component.as_str().to_string(),
        desired,
        current,
        ready,
        rolled_out: healthy && ready >= desired,
    })
}

/// The Cluster's report for the Shortener's status; `None` for any other object.
pub fn database_status(object: &DynamicObject) -> Option<DatabaseStatus> {
    if object.types.as_ref()?.kind != "Cluster" {
        return None;
    }
    let status = &object.data["status"];
    let text = |key: &str| status[key].as_str().map(String::from);
    let number = |key: &str| status[key].as_i64().and_then(|n| i32::try_from(n).ok());
    Some(DatabaseStatus {
        phase: text("phase"),
        primary: text("currentPrimary"),
        ready_instances: number("readyInstances").unwrap_or(0),
        instances: number("instances").unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::children::testing::{assert_owned, shortener};
    use crate::crd::ShortenerSpec;

    fn cnpg_shortener() -> crate::crd::Shortener {
        let mut spec = ShortenerSpec::default();
        spec.database.cloud_native_pg = Some(CloudNativePgSpec::default());
        shortener(spec)
    }

    fn value(child: &Child) -> Value {
        child.to_value().unwrap()
    }

    #[test]
    fn the_cluster_bootstraps_the_database_owned_by_the_schema_owner_with_both_roles_managed() {
        let s = cnpg_shortener();
        let i = Instance::new(&s).unwrap();
        let child = cluster(&i, &CloudNativePgSpec::default());
        assert_owned(child.meta(), "postgres");
        assert_eq!(child.key(), "Cluster/links-postgres");
        let v = value(&child);
        assert_eq!(v["apiVersion"], "postgresql.cnpg.io/v1");
        let spec = &v["spec"];
        assert_eq!(spec["instances"], 3);
        assert_eq!(spec["enableSuperuserAccess"], true);
        assert_eq!(spec["smartShutdownTimeout"], 10);
        assert_eq!(spec["storage"], json!({ "size": "1Gi" }));
        assert_eq!(
            spec["bootstrap"]["initdb"],
            json!({ "database": "shortener", "owner": "shortener_owner",
                    "secret": { "name": "links-db-owner" } })
        );
        let roles = spec["managed"]["roles"].as_array().unwrap();
        assert_eq!(roles[0]["name"], "shortener_owner");
        assert_eq!(roles[0]["passwordSecret"]["name"], "links-db-owner");
        assert_eq!(roles[1]["name"], "shortener_app");
        assert_eq!(roles[1]["inherit"], false);
        assert_eq!(roles[1]["passwordSecret"]["name"], "links-db-app");
        assert_eq!(
            spec["inheritedMetadata"]["labels"]["app.kubernetes.io/component"],
            "postgres"
        );
        assert!(spec.get("imageName").is_none());
        assert!(spec.get("postgresql").is_none());
    }

    #[test]
    fn the_cluster_passes_image_storage_resources_and_parameters_through() {
        let s = cnpg_shortener();
        let i = Instance::new(&s).unwrap();
        let mut cnpg = CloudNativePgSpec {
            instances: 2,
            image_name: Some("registry.example/postgresql:17.6".into()),
            ..CloudNativePgSpec::default()
        };
        cnpg.storage.storage_class_name = Some("fast".into());
        cnpg.parameters
            .insert("shared_buffers".into(), "64MB".into());
        let v = value(&cluster(&i, &cnpg));
        assert_eq!(v["spec"]["instances"], 2);
        assert_eq!(v["spec"]["imageName"], "registry.example/postgresql:17.6");
        assert_eq!(v["spec"]["storage"]["storageClass"], "fast");
        assert_eq!(
            v["spec"]["postgresql"]["parameters"]["shared_buffers"],
            "64MB"
        );
    }

    /// The pod options reach CloudNativePG's pods in its own terms; our selector labels
    /// stay on top.
    #[test]
    fn pod_options_reach_the_instances_and_the_pooler() {
        use k8s_openapi::api::core::v1::{Affinity, PodAntiAffinity, Toleration};
        let mut spec = ShortenerSpec::default();
        let mut cnpg = CloudNativePgSpec::default();
        cnpg.pods.node_selector = Some(BTreeMap::from([("disk".into(), "ssd".into())]));
        cnpg.pods.labels.insert("team".into(), "db".into());
        cnpg.pods.affinity = Some(Affinity {
            pod_anti_affinity: Some(PodAntiAffinity::default()),
            ..Affinity::default()
        });
        spec.pods.tolerations = Some(vec![Toleration {
            key: Some("dedicated".into()),
            operator: Some("Exists".into()),
            ..Toleration::default()
        }]);
        spec.pods.priority_class_name = Some("critical".into());
        spec.pgbouncer.pods.node_selector = Some(BTreeMap::from([("pool".into(), "yes".into())]));
        spec.database.cloud_native_pg = Some(cnpg.clone());
        let s = shortener(spec);
        let i = Instance::new(&s).unwrap();
        let c = value(&cluster(&i, &cnpg))["spec"].clone();
        assert_eq!(c["affinity"]["nodeSelector"], json!({ "disk": "ssd" }));
        assert_eq!(c["affinity"]["tolerations"][0]["key"], "dedicated");
        assert_eq!(c["affinity"]["additionalPodAntiAffinity"], json!({}));
        assert!(c["affinity"].get("nodeAffinity").is_none());
        assert_eq!(c["priorityClassName"], "critical");
        let labels = &c["inheritedMetadata"]["labels"];
        assert_eq!(labels["team"], "db");
        assert_eq!(labels["app.kubernetes.io/component"], "postgres");
        let p = value(&pooler(&i, &cnpg))["spec"]["template"].clone();
        assert_eq!(p["spec"]["nodeSelector"], json!({ "pool": "yes" }));
        assert_eq!(p["spec"]["tolerations"][0]["key"], "dedicated");
        assert_eq!(p["spec"]["priorityClassName"], "critical");
        // The role-setup Job runs with the instances' options.
        let job = crate::children::roles::cloud_native_pg_job(&i, &cnpg);
        let pod = job.spec.unwrap().template.spec.unwrap();
        assert_eq!(pod.node_selector, cnpg.pods.node_selector);
    }

    #[test]
    fn the_pooler_pools_in_transaction_mode_with_the_pgbouncer_settings() {
        let mut spec = ShortenerSpec::default();
        spec.database.cloud_native_pg = Some(CloudNativePgSpec::default());
        spec.pgbouncer.default_pool_size = 7;
        let s = shortener(spec);
        let i = Instance::new(&s).unwrap();
        let child = pooler(&i, &CloudNativePgSpec::default());
        assert_owned(child.meta(), "pgbouncer");
        assert_eq!(child.key(), "Pooler/links-pgbouncer");
        let v = value(&child);
        let spec = &v["spec"];
        assert_eq!(spec["cluster"]["name"], "links-postgres");
        assert_eq!(spec["type"], "rw");
        assert_eq!(spec["instances"], 2);
        assert_eq!(spec["pgbouncer"]["poolMode"], "transaction");
        let parameters = &spec["pgbouncer"]["parameters"];
        assert_eq!(parameters["default_pool_size"], "7");
        assert_eq!(parameters["max_db_connections"], "12");
        assert_eq!(parameters["max_prepared_statements"], "200");
        assert_eq!(parameters["server_login_retry"], "1");
        assert_eq!(
            spec["template"]["spec"]["containers"][0]["name"],
            "pgbouncer"
        );
    }

    #[test]
    fn readiness_follows_the_cluster_phase_and_ready_instances() {
        let s = cnpg_shortener();
        let i = Instance::new(&s).unwrap();
        let Child::Dynamic(_, mut object) = cluster(&i, &CloudNativePgSpec::default()) else {
            panic!("a Cluster is dynamic");
        };
        object.data["status"] = json!({ "instances": 3, "readyInstances": 2,
                                        "phase": "Waiting for the instances to become active" });
        let waiting = workload(&object).unwrap();
        assert_eq!((waiting.desired, waiting.ready), (3, 2));
        assert!(!waiting.rolled_out);
        object.data["status"] = json!({ "instances": 3, "readyInstances": 3,
                                        "phase": HEALTHY_PHASE, "currentPrimary": "links-postgres-2" });
        assert!(workload(&object).unwrap().rolled_out);
        let reported = database_status(&object).unwrap();
        assert_eq!(reported.primary.as_deref(), Some("links-postgres-2"));
        assert_eq!(reported.phase.as_deref(), Some(HEALTHY_PHASE));
        assert_eq!((reported.ready_instances, reported.instances), (3, 3));
        let Child::Dynamic(_, mut pooler) = pooler(&i, &CloudNativePgSpec::default()) else {
            panic!("a Pooler is dynamic");
        };
        pooler.data["status"] = json!({ "instances": 2, "phase": "active" });
        let pooled = workload(&pooler).unwrap();
        assert_eq!(pooled.component, "pgbouncer");
        assert!(pooled.rolled_out);
    }
}
