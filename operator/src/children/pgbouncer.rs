//! PgBouncer: pools the app's many short connections onto a few PostgreSQL backends.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapProjection, Container, KeyToPath, PodSpec, Probe, ProjectedVolumeSource,
    SecretProjection, Service, TCPSocketAction, Volume, VolumeMount, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::stack::{DATABASE_NAME, PGBOUNCER_ADMIN, PGBOUNCER_PORT, PGBOUNCER_UID, POSTGRES_PORT};
use super::{
    Component, Instance, ResourceBudget, component_deployment, container, container_port,
    empty_dir, mount, pod_spec, resources, surge_first,
};

pub const BUDGET: ResourceBudget = ResourceBudget {
    cpu_request: "25m",
    memory_request: "32Mi",
    cpu_limit: "250m",
    memory_limit: "64Mi",
};

/// Server connections PgBouncer may open to the database in all: the pool and a few for admin
/// sessions. The embedded PostgreSQL's `max_connections` is sized from it.
pub fn server_connections(spec: &crate::crd::PgBouncerSpec) -> u32 {
    spec.default_pool_size + 5
}

pub fn config_map_name(instance: &Instance<'_>) -> String {
    instance.child_name(Component::PgBouncer)
}

/// `pgbouncer.ini`. The passwords live in `userlist.txt`, which comes from the runtime role's
/// Secret: the service's role and the console's own admin, the only user allowed there.
pub fn config_map(instance: &Instance<'_>) -> ConfigMap {
    let spec = &instance.spec().pgbouncer;
    let ini = format!(
        "[databases]\n\
         {DATABASE_NAME} = host={host} port={pg_port} dbname={DATABASE_NAME}\n\
         \n\
         [pgbouncer]\n\
         listen_addr = 0.0.0.0\n\
         listen_port = {PGBOUNCER_PORT}\n\
         unix_socket_dir =\n\
         auth_type = scram-sha-256\n\
         auth_file = /etc/pgbouncer/userlist.txt\n\
         pool_mode = {pool_mode}\n\
         default_pool_size = {pool_size}\n\
         max_client_conn = {max_clients}\n\
         max_db_connections = {max_db}\n\
         ; sqlx prepares statements; PgBouncer tracks them so transaction pooling stays correct.\n\
         max_prepared_statements = 200\n\
         server_reset_query = DISCARD ALL\n\
         ignore_startup_parameters = extra_float_digits,options\n\
         admin_users = {PGBOUNCER_ADMIN}\n\
         stats_users = {PGBOUNCER_ADMIN}\n\
         log_connections = 0\n\
         log_disconnections = 0\n",
        host = instance.child_name(Component::Postgres),
        pg_port = POSTGRES_PORT,
        pool_mode = spec.pool_mode.as_str(),
        pool_size = spec.default_pool_size,
        max_clients = spec.max_client_connections,
        max_db = server_connections(spec),
    );
    ConfigMap {
        metadata: instance.meta(config_map_name(instance), Component::PgBouncer),
        data: Some(BTreeMap::from([("pgbouncer.ini".to_string(), ini)])),
        ..ConfigMap::default()
    }
}

pub fn service(instance: &Instance<'_>) -> Service {
    super::component_service(
        instance,
        Component::PgBouncer,
        "pgbouncer",
        PGBOUNCER_PORT,
        false,
    )
}

pub fn deployment(instance: &Instance<'_>, config: &ConfigMap) -> Deployment {
    let spec = &instance.spec().pgbouncer;
    let probe = |period: i32| {
        Some(Probe {
            tcp_socket: Some(TCPSocketAction {
                port: IntOrString::String("pgbouncer".into()),
                ..Default::default()
            }),
            period_seconds: Some(period),
            timeout_seconds: Some(2),
            failure_threshold: Some(3),
            ..Default::default()
        })
    };
    let file = |key: &str| {
        Some(vec![KeyToPath {
            key: key.into(),
            path: key.into(),
            ..Default::default()
        }])
    };
    let pooler = Container {
        // Skip the image's entrypoint, which writes a config from env vars.
        command: Some(vec![
            "pgbouncer".into(),
            "/etc/pgbouncer/pgbouncer.ini".into(),
        ]),
        ports: Some(vec![container_port("pgbouncer", PGBOUNCER_PORT)]),
        readiness_probe: probe(5),
        liveness_probe: probe(20),
        volume_mounts: Some(vec![
            VolumeMount {
                read_only: Some(true),
                ..mount("config", "/etc/pgbouncer")
            },
            mount("tmp", "/tmp"),
        ]),
        ..container(
            "pgbouncer",
            &spec.image,
            resources(spec.resources.as_ref(), BUDGET),
        )
    };
    let config_volume = Volume {
        name: "config".into(),
        projected: Some(ProjectedVolumeSource {
            sources: Some(vec![
                VolumeProjection {
                    config_map: Some(ConfigMapProjection {
                        name: config_map_name(instance),
                        items: file("pgbouncer.ini"),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                VolumeProjection {
                    secret: Some(SecretProjection {
                        name: instance.runtime_secret_name(),
                        items: file("userlist.txt"),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            ]),
            default_mode: Some(0o440),
        }),
        ..Default::default()
    };
    let pod = PodSpec {
        containers: vec![pooler],
        volumes: Some(vec![config_volume, empty_dir("tmp", "16Mi")]),
        // fsGroup: the projected config and userlist are root's, mode 0440; the pooler
        // (uid 70) reads them as their group.
        ..pod_spec(instance, PGBOUNCER_UID, Some(PGBOUNCER_UID))
    };
    let component = Component::PgBouncer;
    component_deployment(instance, component, Some(1), surge_first(), config, pod)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::children::testing::{assert_hardened, assert_owned, pod_of, shortener};
    use crate::crd::{PoolMode, ShortenerSpec};

    #[test]
    fn config_defaults_to_transaction_pooling_against_postgres() {
        let s = shortener(ShortenerSpec::default());
        let i = Instance::new(&s).unwrap();
        let cm = config_map(&i);
        assert_owned(&cm.metadata, "pgbouncer");
        let ini = &cm.data.unwrap()["pgbouncer.ini"];
        assert!(ini.contains("pool_mode = transaction\n"), "{ini}");
        assert!(ini.contains("shortener = host=links-postgres port=5432 dbname=shortener\n"));
        assert!(ini.contains("default_pool_size = 20\n"));
        assert!(ini.contains("max_client_conn = 200\n"));
        assert!(ini.contains("listen_port = 6432\n"));
        assert!(!ini.contains("password"), "no credentials in a ConfigMap");
        // The console is the pooler's own admin's; the service's role has no rights there.
        assert!(ini.contains("admin_users = pgbouncer_admin\n"));
        assert!(ini.contains("stats_users = pgbouncer_admin\n"));
        assert!(!ini.contains("shortener_app"));
    }

    #[test]
    fn config_follows_pool_settings() {
        let mut spec = ShortenerSpec::default();
        spec.pgbouncer.pool_mode = PoolMode::Transaction;
        spec.pgbouncer.default_pool_size = 7;
        spec.pgbouncer.max_client_connections = 50;
        let s = shortener(spec);
        let i = Instance::new(&s).unwrap();
        let ini = config_map(&i).data.unwrap()["pgbouncer.ini"].clone();
        assert!(ini.contains("pool_mode = transaction\n"));
        assert!(ini.contains("default_pool_size = 7\n"));
        assert!(ini.contains("max_db_connections = 12\n"));
        assert!(ini.contains("max_client_conn = 50\n"));
    }

    #[test]
    fn deployment_mounts_config_and_userlist_read_only() {
        let s = shortener(ShortenerSpec::default());
        let i = Instance::new(&s).unwrap();
        let d = deployment(&i, &config_map(&i));
        assert_owned(&d.metadata, "pgbouncer");
        let pod = d.spec.unwrap().template.spec.unwrap();
        let sources = pod.volumes.as_ref().unwrap()[0]
            .projected
            .as_ref()
            .unwrap()
            .sources
            .clone()
            .unwrap();
        assert_eq!(
            sources[0].config_map.as_ref().unwrap().name,
            "links-pgbouncer"
        );
        assert_eq!(sources[1].secret.as_ref().unwrap().name, "links-db-app");
        assert_hardened(&serde_json::to_value(&pod).unwrap());
    }

    /// The projected files are root's and not world-readable: the pooler reads them through
    /// the pod's fsGroup (found on the real node: without it PgBouncer could not open its
    /// pgbouncer.ini, "Permission denied").
    #[test]
    fn the_pooler_can_read_its_config_through_its_group() {
        let s = shortener(ShortenerSpec::default());
        let i = Instance::new(&s).unwrap();
        let pod = pod_of(deployment(&i, &config_map(&i)));
        let config = pod.volumes.as_ref().unwrap()[0].projected.as_ref().unwrap();
        let mode = config.default_mode.unwrap();
        assert_eq!(
            mode & 0o004,
            0,
            "the userlist holds passwords: not world-readable"
        );
        assert_eq!(mode & 0o040, 0o040, "readable by the group");
        let security = pod.security_context.unwrap();
        assert_eq!(security.run_as_user, Some(PGBOUNCER_UID));
        assert_eq!(security.fs_group, Some(PGBOUNCER_UID));
    }

    #[test]
    fn service_targets_the_pooler_port() {
        let s = shortener(ShortenerSpec::default());
        let i = Instance::new(&s).unwrap();
        let svc = service(&i);
        assert_owned(&svc.metadata, "pgbouncer");
        assert_eq!(svc.spec.unwrap().ports.unwrap()[0].port, 6432);
    }
}
