//! Redis as a pure cache: a Deployment without persistence, so losing it costs only warm-up.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use serde_json::json;

use super::stack::{REDIS_AUTH_CONF_KEY, REDIS_PORT, REDIS_UID};
use super::{
    CONFIG_HASH_ANNOTATION, Component, Instance, ResourceBudget, config_digest, pod_security,
    resources, restricted_container_security, typed,
};
use crate::error::Result;

const AUTH_DIR: &str = "/etc/redis-auth";

/// The limit sits above the default 48mb `maxmemory` to leave room for Redis' own overhead.
pub const BUDGET: ResourceBudget = ResourceBudget {
    cpu_request: "25m",
    memory_request: "64Mi",
    cpu_limit: "250m",
    memory_limit: "96Mi",
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
    super::cluster_ip_service(instance, Component::Redis, "redis", REDIS_PORT)
}

pub fn deployment(instance: &Instance<'_>, config: &ConfigMap) -> Result<Deployment> {
    let spec = &instance.spec().redis;
    let digest = config_digest(&config.data.clone().unwrap_or_default());
    let probe = |period: i32| {
        json!({
            "exec": { "command": ["redis-cli", "ping"] },
            "periodSeconds": period,
            "timeoutSeconds": 2,
            "failureThreshold": 3,
        })
    };
    let value = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": instance.meta(instance.child_name(Component::Redis), Component::Redis),
        "spec": {
            "replicas": 1,
            "revisionHistoryLimit": 5,
            "selector": { "matchLabels": instance.selector_labels(Component::Redis) },
            // A cache has no state worth a surge pod's memory: replace in place.
            "strategy": { "type": "Recreate" },
            "template": {
                "metadata": {
                    "labels": instance.labels(Component::Redis),
                    "annotations": { CONFIG_HASH_ANNOTATION: digest },
                },
                "spec": {
                    "serviceAccountName": instance.child_name(Component::App),
                    "automountServiceAccountToken": false,
                    "securityContext": pod_security(REDIS_UID, Some(REDIS_UID)),
                    "containers": [{
                        "name": "redis",
                        "image": spec.image,
                        "imagePullPolicy": "IfNotPresent",
                        "command": ["redis-server", "/etc/redis/redis.conf"],
                        "ports": [{ "name": "redis", "containerPort": REDIS_PORT, "protocol": "TCP" }],
                        // redis-cli (the probes) reads the password from REDISCLI_AUTH.
                        "env": [{
                            "name": "REDISCLI_AUTH",
                            "valueFrom": { "secretKeyRef": {
                                "name": instance.redis_secret_name(), "key": "password",
                            } },
                        }],
                        "resources": resources(spec.resources.as_ref(), BUDGET),
                        "securityContext": restricted_container_security(true),
                        "readinessProbe": probe(5),
                        "livenessProbe": probe(20),
                        "volumeMounts": [
                            { "name": "config", "mountPath": "/etc/redis", "readOnly": true },
                            { "name": "auth", "mountPath": AUTH_DIR, "readOnly": true },
                            { "name": "data", "mountPath": "/data" },
                        ],
                    }],
                    "volumes": [
                        { "name": "config", "configMap": { "name": config_map_name(instance) } },
                        {
                            "name": "auth",
                            "secret": {
                                "secretName": instance.redis_secret_name(),
                                "items": [{ "key": REDIS_AUTH_CONF_KEY, "path": REDIS_AUTH_CONF_KEY }],
                                // Readable by the redis group (fsGroup), nobody else.
                                "defaultMode": 0o440,
                            },
                        },
                        { "name": "data", "emptyDir": { "sizeLimit": "64Mi" } },
                    ],
                },
            },
        },
    });
    typed("redis Deployment", value)
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
        let d = deployment(&i, &cm).unwrap();
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
