//! PgBouncer: pools the app's many short connections onto a few PostgreSQL backends.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use serde_json::json;

use super::stack::{DATABASE_NAME, PGBOUNCER_ADMIN, PGBOUNCER_PORT, PGBOUNCER_UID, POSTGRES_PORT};
use super::{
    CONFIG_HASH_ANNOTATION, Component, Instance, ResourceBudget, config_digest, pod_security,
    resources, restricted_container_security, typed,
};
use crate::error::Result;

pub const BUDGET: ResourceBudget = ResourceBudget {
    cpu_request: "25m",
    memory_request: "32Mi",
    cpu_limit: "250m",
    memory_limit: "64Mi",
};

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
        // Headroom above the pool for admin sessions, well under PostgreSQL's default 100.
        max_db = spec.default_pool_size + 5,
    );
    ConfigMap {
        metadata: instance.meta(config_map_name(instance), Component::PgBouncer),
        data: Some(BTreeMap::from([("pgbouncer.ini".to_string(), ini)])),
        ..ConfigMap::default()
    }
}

pub fn service(instance: &Instance<'_>) -> Service {
    super::cluster_ip_service(instance, Component::PgBouncer, "pgbouncer", PGBOUNCER_PORT)
}

pub fn deployment(instance: &Instance<'_>, config: &ConfigMap) -> Result<Deployment> {
    let spec = &instance.spec().pgbouncer;
    let digest = config_digest(&config.data.clone().unwrap_or_default());
    let probe = |period: i32| {
        json!({
            "tcpSocket": { "port": "pgbouncer" },
            "periodSeconds": period,
            "timeoutSeconds": 2,
            "failureThreshold": 3,
        })
    };
    let value = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": instance.meta(instance.child_name(Component::PgBouncer), Component::PgBouncer),
        "spec": {
            "replicas": 1,
            "revisionHistoryLimit": 5,
            "selector": { "matchLabels": instance.selector_labels(Component::PgBouncer) },
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": { "maxUnavailable": 0, "maxSurge": 1 },
            },
            "template": {
                "metadata": {
                    "labels": instance.labels(Component::PgBouncer),
                    "annotations": { CONFIG_HASH_ANNOTATION: digest },
                },
                "spec": {
                    "serviceAccountName": instance.child_name(Component::App),
                    "automountServiceAccountToken": false,
                    // fsGroup: the projected config and userlist are root's, mode 0440; the
                    // pooler (uid 70) reads them as their group.
                    "securityContext": pod_security(PGBOUNCER_UID, Some(PGBOUNCER_UID)),
                    "containers": [{
                        "name": "pgbouncer",
                        "image": spec.image,
                        "imagePullPolicy": "IfNotPresent",
                        // Skip the image's entrypoint, which writes a config from env vars.
                        "command": ["pgbouncer", "/etc/pgbouncer/pgbouncer.ini"],
                        "ports": [{ "name": "pgbouncer", "containerPort": PGBOUNCER_PORT, "protocol": "TCP" }],
                        "resources": resources(spec.resources.as_ref(), BUDGET),
                        "securityContext": restricted_container_security(true),
                        "readinessProbe": probe(5),
                        "livenessProbe": probe(20),
                        "volumeMounts": [
                            { "name": "config", "mountPath": "/etc/pgbouncer", "readOnly": true },
                            { "name": "tmp", "mountPath": "/tmp" },
                        ],
                    }],
                    "volumes": [
                        {
                            "name": "config",
                            "projected": {
                                "sources": [
                                    { "configMap": { "name": config_map_name(instance), "items": [{ "key": "pgbouncer.ini", "path": "pgbouncer.ini" }] } },
                                    { "secret": { "name": instance.runtime_secret_name(), "items": [{ "key": "userlist.txt", "path": "userlist.txt" }] } },
                                ],
                                "defaultMode": 0o440,
                            },
                        },
                        { "name": "tmp", "emptyDir": { "sizeLimit": "16Mi" } },
                    ],
                },
            },
        },
    });
    typed("pgbouncer Deployment", value)
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
        let d = deployment(&i, &config_map(&i)).unwrap();
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
        let pod = pod_of(deployment(&i, &config_map(&i)).unwrap());
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
