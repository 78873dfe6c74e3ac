//! Redis as a pure cache: a Deployment without persistence, so losing it costs only warm-up.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentStrategy};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, ExecAction, KeyToPath, PodSpec, Probe,
    SecretVolumeSource, Service, Volume, VolumeMount,
};

use super::stack::{REDIS_AUTH_CONF_KEY, REDIS_PORT, REDIS_UID};
use super::{
    Component, Instance, ResourceBudget, component_deployment, container, container_port,
    empty_dir, mount, pod_spec, resources, secret_env,
};

const AUTH_DIR: &str = "/etc/redis-auth";

/// The limit sits above the default 48mb `maxmemory` to leave room for Redis' own overhead
/// (the CRD admits a `maxmemory` up to 80% of it).
pub const BUDGET: ResourceBudget = ResourceBudget {
    cpu_request: "25m",
    memory_request: "64Mi",
    cpu_limit: "250m",
    memory_limit: crate::crd::DEFAULT_REDIS_MEMORY_LIMIT,
};

pub fn config_map_name(instance: &Instance<'_>) -> String {
    instance.child_name(Component::Redis)
}

/// `redis.conf`: a pure cache, evicting any key under memory pressure (every entry can be
/// rebuilt from PostgreSQL) and never writing to disk. Every client must authenticate: the
/// password comes from the generated Secret's `auth.conf`, included here, and protected mode
/// stays on as a second lock should that include ever be missing.
pub fn config_map(instance: &Instance<'_>) -> ConfigMap {
    let spec = &instance.spec().redis;
    let conf = format!(
        "port {REDIS_PORT}\n\
         maxmemory {}\n\
         maxmemory-policy allkeys-lru\n\
         save \"\"\n\
         appendonly no\n\
         protected-mode yes\n\
         include {AUTH_DIR}/{REDIS_AUTH_CONF_KEY}\n",
        spec.max_memory
    );
    ConfigMap {
        metadata: instance.meta(config_map_name(instance), Component::Redis),
        data: Some(BTreeMap::from([("redis.conf".to_string(), conf)])),
        ..ConfigMap::default()
    }
}

pub fn service(instance: &Instance<'_>) -> Service {
    super::component_service(instance, Component::Redis, "redis", REDIS_PORT, false)
}

pub fn deployment(instance: &Instance<'_>, config: &ConfigMap) -> Deployment {
    let spec = &instance.spec().redis;
    let probe = |period: i32| {
        Some(Probe {
            exec: Some(ExecAction {
                command: Some(vec!["redis-cli".into(), "ping".into()]),
            }),
            period_seconds: Some(period),
            timeout_seconds: Some(2),
            failure_threshold: Some(3),
            ..Default::default()
        })
    };
    let read_only = |name: &str, path: &str| VolumeMount {
        read_only: Some(true),
        ..mount(name, path)
    };
    let server = Container {
        command: Some(vec!["redis-server".into(), "/etc/redis/redis.conf".into()]),
        ports: Some(vec![container_port("redis", REDIS_PORT)]),
        // redis-cli (the probes) reads the password from REDISCLI_AUTH.
        env: Some(vec![secret_env(
            "REDISCLI_AUTH",
            instance.redis_secret_name(),
            "password",
        )]),
        readiness_probe: probe(5),
        liveness_probe: probe(20),
        volume_mounts: Some(vec![
            read_only("config", "/etc/redis"),
            read_only("auth", AUTH_DIR),
            mount("data", "/data"),
        ]),
        ..container(
            "redis",
            &spec.image,
            resources(spec.resources.as_ref(), BUDGET),
        )
    };
    let volumes = vec![
        Volume {
            name: "config".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: config_map_name(instance),
                ..Default::default()
            }),
            ..Default::default()
        },
        Volume {
            name: "auth".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(instance.redis_secret_name()),
                items: Some(vec![KeyToPath {
                    key: REDIS_AUTH_CONF_KEY.into(),
                    path: REDIS_AUTH_CONF_KEY.into(),
                    ..Default::default()
                }]),
                // Readable by the redis group (fsGroup), nobody else.
                default_mode: Some(0o440),
                ..Default::default()
            }),
            ..Default::default()
        },
        empty_dir("data", "64Mi"),
    ];
    let pod = PodSpec {
        containers: vec![server],
        volumes: Some(volumes),
        ..pod_spec(instance, REDIS_UID, Some(REDIS_UID))
    };
    // A cache has no state worth a surge pod's memory: replace in place.
    let strategy = DeploymentStrategy {
        type_: Some("Recreate".into()),
        ..Default::default()
    };
    component_deployment(instance, Component::Redis, Some(1), strategy, config, pod)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::children::testing::{assert_hardened, assert_owned, shortener};
    use crate::crd::ShortenerSpec;

    #[test]
    fn deployment_runs_an_evicting_cache_without_persistence() {
        let mut spec = ShortenerSpec::default();
        spec.redis.max_memory = "100mb".into();
        let s = shortener(spec);
        let i = Instance::new(&s).unwrap();
        let cm = config_map(&i);
        assert_owned(&cm.metadata, "redis");
        let conf = cm.data.clone().unwrap()["redis.conf"].clone();
        assert!(conf.contains("maxmemory 100mb\n"), "{conf}");
        assert!(conf.contains("maxmemory-policy allkeys-lru\n"));
        assert!(conf.contains("appendonly no\n"));
        assert!(conf.contains("save \"\"\n"));
        assert!(conf.contains("protected-mode yes\n"), "{conf}");
        assert!(
            conf.contains("include /etc/redis-auth/auth.conf\n"),
            "{conf}"
        );
        assert!(!conf.contains("requirepass"), "no password in a ConfigMap");
        let d = deployment(&i, &cm);
        assert_owned(&d.metadata, "redis");
        let pod = d.spec.unwrap().template.spec.unwrap();
        assert_eq!(
            pod.containers[0].command.clone().unwrap(),
            vec!["redis-server", "/etc/redis/redis.conf"]
        );
        let pod = serde_json::to_value(&pod).unwrap();
        assert_hardened(&pod);
        let auth = &pod["volumes"][1];
        assert_eq!(auth["secret"]["secretName"], "links-redis-auth");
        assert_eq!(auth["secret"]["items"][0]["key"], "auth.conf");
        assert_eq!(
            pod["containers"][0]["env"][0]["valueFrom"]["secretKeyRef"]["name"],
            "links-redis-auth"
        );
    }

    #[test]
    fn service_exposes_the_redis_port() {
        let s = shortener(ShortenerSpec::default());
        let i = Instance::new(&s).unwrap();
        let svc = service(&i);
        assert_owned(&svc.metadata, "redis");
        let spec = svc.spec.unwrap();
        assert_eq!(spec.ports.unwrap()[0].port, 6379);
        assert_eq!(spec.selector.unwrap(), i.selector_labels(Component::Redis));
    }
}
