//! Embedded PostgreSQL: a one-replica StatefulSet with a persistent volume and a headless Service.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
};
use k8s_openapi::api::core::v1::{
    Container, ExecAction, PersistentVolumeClaim, PersistentVolumeClaimSpec, PodSpec, Probe,
    Service, VolumeResourceRequirements,
};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::stack::{DATABASE_NAME, POSTGRES_PORT, POSTGRES_UID, SUPERUSER};
use super::{
    Component, Instance, ResourceBudget, container, container_port, empty_dir, env, match_labels,
    mount, pod_spec, pod_template, resources, secret_env,
};
use crate::crd::PostgresSpec;

pub const DATA_VOLUME: &str = "data";

pub const BUDGET: ResourceBudget = ResourceBudget {
    cpu_request: "100m",
    memory_request: "256Mi",
    cpu_limit: "1",
    memory_limit: "512Mi",
};

/// Name of the PVC the StatefulSet creates for its only replica.
/// Connections made to PostgreSQL directly, not through PgBouncer: the app's `migrate` init
/// containers (one per starting replica; a rollout of a scaled-out Deployment starts several),
/// the role-setup Job, and an operator's `psql`. The superuser's own reserve (3) is on top.
const DIRECT_CONNECTIONS: u32 = 20;

/// `max_connections` of the embedded PostgreSQL: never below PostgreSQL's default (100), and
/// always above what PgBouncer may open plus the direct connections, so a large
/// `pgbouncer.defaultPoolSize` does not make PostgreSQL refuse the pool ("too many clients").
pub fn max_connections(instance: &Instance<'_>) -> u32 {
    let pooled = super::pgbouncer::server_connections(&instance.spec().pgbouncer);
    (pooled + DIRECT_CONNECTIONS + 3).max(100)
}

pub fn claim_name(instance: &Instance<'_>) -> String {
    format!(
        "{DATA_VOLUME}-{}-0",
        instance.child_name(Component::Postgres)
    )
}

pub fn headless_service(instance: &Instance<'_>) -> Service {
    // Headless: the StatefulSet's stable DNS name, and no kube-proxy hop.
    super::component_service(
        instance,
        Component::Postgres,
        "postgres",
        POSTGRES_PORT,
        true,
    )
}

/// The StatefulSet. `storage_size` is what goes into the volumeClaimTemplate: the API server
/// forbids changing it after creation, so the reconciler passes the size the existing object
/// was created with and grows the PVC itself.
pub fn stateful_set(
    instance: &Instance<'_>,
    postgres: &PostgresSpec,
    storage_size: Option<&str>,
) -> StatefulSet {
    let name = instance.child_name(Component::Postgres);
    let probe = |period: i32, failures: i32| {
        let command = [
            "pg_isready",
            "-h",
            "127.0.0.1",
            "-U",
            SUPERUSER,
            "-d",
            DATABASE_NAME,
        ];
        Some(Probe {
            exec: Some(ExecAction {
                command: Some(command.map(String::from).to_vec()),
            }),
            period_seconds: Some(period),
            timeout_seconds: Some(5),
            failure_threshold: Some(failures),
            ..Default::default()
        })
    };
    let server = Container {
        // The image's entrypoint passes these to `postgres`.
        args: Some(vec![
            "postgres".into(),
            "-c".into(),
            format!("max_connections={}", max_connections(instance)),
        ]),
        ports: Some(vec![container_port("postgres", POSTGRES_PORT)]),
        env: Some(vec![
            env("POSTGRES_USER", SUPERUSER),
            env("POSTGRES_DB", DATABASE_NAME),
            secret_env(
                "POSTGRES_PASSWORD",
                instance.database_secret_name(),
                "password",
            ),
            // A subdirectory, because the volume root may hold lost+found, which initdb
            // refuses.
            env("PGDATA", "/var/lib/postgresql/data/pgdata"),
        ]),
        // Up to 5 minutes for a first initdb or a crash recovery before liveness applies.
        startup_probe: probe(5, 60),
        readiness_probe: probe(10, 3),
        liveness_probe: probe(20, 6),
        volume_mounts: Some(vec![
            mount(DATA_VOLUME, "/var/lib/postgresql/data"),
            // Writable paths the server needs despite the read-only root.
            mount("run", "/var/run/postgresql"),
            mount("tmp", "/tmp"),
        ]),
        ..container(
            "postgres",
            postgres.image(),
            resources(postgres.resources.as_ref(), BUDGET),
        )
    };
    let pod = PodSpec {
        termination_grace_period_seconds: Some(60),
        containers: vec![server],
        volumes: Some(vec![empty_dir("run", "16Mi"), empty_dir("tmp", "256Mi")]),
        ..pod_spec(instance, POSTGRES_UID, Some(POSTGRES_UID))
    };
    let size = storage_size.unwrap_or(&postgres.storage.size.0);
    // Links outlive the stack unless the spec asks otherwise: with `Delete` the StatefulSet
    // owns its claim, so garbage collection takes the data with it.
    let when_deleted = if postgres.storage.delete_on_removal {
        "Delete"
    } else {
        "Retain"
    };
    let claim = PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(DATA_VOLUME.into()),
            labels: Some(instance.labels(Component::Postgres)),
            ..Default::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_string(),
                    Quantity(size.into()),
                )])),
                ..Default::default()
            }),
            storage_class_name: postgres.storage.storage_class_name.clone(),
            ..Default::default()
        }),
        ..Default::default()
    };
    StatefulSet {
        metadata: instance.meta(name.clone(), Component::Postgres),
        spec: Some(StatefulSetSpec {
            service_name: Some(name),
            replicas: Some(1),
            selector: match_labels(instance.selector_labels(Component::Postgres)),
            persistent_volume_claim_retention_policy: Some(
                StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_deleted: Some(when_deleted.into()),
                    when_scaled: Some("Retain".into()),
                },
            ),
            template: pod_template(instance, Component::Postgres, None, pod),
            volume_claim_templates: Some(vec![claim]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The only PostgreSQL pod may not be evicted, unless `spec.maintenanceWindow.inProgress`:
/// a drain of its node waits for that window (docs/operator.md, "Node drains").
pub fn pod_disruption_budget(instance: &Instance<'_>) -> PodDisruptionBudget {
    let evictable = instance.spec().maintenance_window.in_progress;
    super::pod_disruption_budget(instance, Component::Postgres, i32::from(evictable))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::children::testing::{assert_hardened, assert_owned, shortener};
    use crate::crd::ShortenerSpec;

    /// PostgreSQL accepts every connection PgBouncer may open plus the direct ones, whatever
    /// pool size the schema admits (1 to 1000); the default pool keeps PostgreSQL's default.
    #[test]
    fn max_connections_covers_the_pooler_and_the_direct_connections() {
        for pool in [1, 20, 90, 1000] {
            let mut spec = ShortenerSpec::default();
            spec.pgbouncer.default_pool_size = pool;
            let s = shortener(spec);
            let i = Instance::new(&s).unwrap();
            let max = max_connections(&i);
            let pooled = crate::children::pgbouncer::server_connections(&i.spec().pgbouncer);
            assert!(max >= pooled + DIRECT_CONNECTIONS + 3, "pool {pool}: {max}");
            assert!(max >= 100, "pool {pool}: {max}");
            let pg = PostgresSpec::default();
            let sts = stateful_set(&i, &pg, None);
            let args = sts.spec.unwrap().template.spec.unwrap().containers[0]
                .args
                .clone()
                .unwrap();
            assert_eq!(args, ["postgres", "-c", &format!("max_connections={max}")]);
        }
        let s = shortener(ShortenerSpec::default());
        assert_eq!(max_connections(&Instance::new(&s).unwrap()), 100);
    }

    #[test]
    fn stateful_set_persists_data_with_a_claim_template() {
        let mut spec = ShortenerSpec::default();
        let mut pg = PostgresSpec::default();
        pg.storage.storage_class_name = Some("fast".into());
        spec.database.postgres = Some(pg.clone());
        let s = shortener(spec);
        let i = Instance::new(&s).unwrap();
        let sts = stateful_set(&i, &pg, None);
        assert_owned(&sts.metadata, "postgres");
        let spec = sts.spec.unwrap();
        assert_eq!(spec.service_name.as_deref(), Some("links-postgres"));
        assert_eq!(spec.replicas, Some(1));
        let claim = &spec.volume_claim_templates.unwrap()[0];
        assert_eq!(claim.metadata.name.as_deref(), Some("data"));
        let claim_spec = claim.spec.as_ref().unwrap();
        assert_eq!(claim_spec.storage_class_name.as_deref(), Some("fast"));
        assert_eq!(
            claim_spec
                .resources
                .as_ref()
                .unwrap()
                .requests
                .as_ref()
                .unwrap()["storage"]
                .0,
            "1Gi"
        );
        let pod = spec.template.spec.unwrap();
        assert_eq!(pod.security_context.as_ref().unwrap().fs_group, Some(999));
        let c = &pod.containers[0];
        assert_eq!(c.image.as_deref(), Some("postgres:17"));
        let mounts: Vec<_> = c
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .map(|m| m.mount_path.as_str())
            .collect();
        assert!(mounts.contains(&"/var/run/postgresql"));
        assert_hardened(&serde_json::to_value(&pod).unwrap());
        assert_eq!(claim_name(&i), "data-links-postgres-0");
    }

    #[test]
    fn existing_claim_size_is_kept_in_the_template() {
        let s = shortener(ShortenerSpec::default());
        let i = Instance::new(&s).unwrap();
        let mut pg = PostgresSpec::default();
        pg.storage.size.0 = "5Gi".into();
        let sts = stateful_set(&i, &pg, Some("1Gi"));
        let claim = &sts.spec.unwrap().volume_claim_templates.unwrap()[0];
        let size = &claim
            .spec
            .as_ref()
            .unwrap()
            .resources
            .as_ref()
            .unwrap()
            .requests
            .as_ref()
            .unwrap()["storage"];
        assert_eq!(size.0, "1Gi");
    }

    #[test]
    fn the_data_volume_is_kept_unless_the_spec_asks_to_delete_it() {
        let s = shortener(ShortenerSpec::default());
        let i = Instance::new(&s).unwrap();
        let when_deleted = |pg: &PostgresSpec| {
            let spec = stateful_set(&i, pg, None).spec.unwrap();
            let policy = spec.persistent_volume_claim_retention_policy.unwrap();
            assert_eq!(policy.when_scaled.as_deref(), Some("Retain"));
            policy.when_deleted.unwrap()
        };
        let mut pg = PostgresSpec::default();
        assert_eq!(when_deleted(&pg), "Retain");
        pg.storage.delete_on_removal = true;
        assert_eq!(when_deleted(&pg), "Delete");
    }

    #[test]
    fn image_override_wins_over_version() {
        let pg = PostgresSpec {
            image: Some("registry.local/postgres:17.5".into()),
            ..PostgresSpec::default()
        };
        assert_eq!(pg.image(), "registry.local/postgres:17.5");
    }

    #[test]
    fn eviction_is_refused_unless_a_maintenance_window_is_in_progress() {
        let max_unavailable = |spec: ShortenerSpec| {
            let s = shortener(spec);
            let i = Instance::new(&s).unwrap();
            let pdb = pod_disruption_budget(&i);
            assert_owned(&pdb.metadata, "postgres");
            let spec = pdb.spec.unwrap();
            let selector = spec.selector.unwrap().match_labels.unwrap();
            assert_eq!(selector, i.selector_labels(Component::Postgres));
            assert_eq!(spec.min_available, None);
            spec.max_unavailable.unwrap()
        };
        use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
        let mut spec = ShortenerSpec::default();
        assert_eq!(max_unavailable(spec.clone()), IntOrString::Int(0));
        spec.maintenance_window.in_progress = true;
        assert_eq!(max_unavailable(spec), IntOrString::Int(1));
    }

    #[test]
    fn headless_service_has_no_cluster_ip() {
        let s = shortener(ShortenerSpec::default());
        let i = Instance::new(&s).unwrap();
        let svc = headless_service(&i);
        assert_owned(&svc.metadata, "postgres");
        let spec = svc.spec.unwrap();
        assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
        assert_eq!(spec.ports.unwrap()[0].port, 5432);
    }
}
