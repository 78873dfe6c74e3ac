//! The HTTP service: Deployment, Service, ConfigMap, ServiceAccount, PodDisruptionBudget (its
//! Ingress or HTTPRoute: `exposure.rs`).

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapEnvSource, Container, EnvFromSource, EnvVar, EnvVarSource, HTTPGetAction,
    Lifecycle, LifecycleHandler, ObjectFieldSelector, PodSpec, Probe, Service, ServiceAccount,
    SleepAction,
};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::stack::{
    APP_ROLE, APP_UID, DATABASE_NAME, HTTP_PORT, OWNER_ROLE, POSTGRES_PORT, REDIS_PORT,
};
use super::{
    Component, Instance, ResourceBudget, component_deployment, container, container_port,
    empty_dir, mount, pod_spec, resources, secret_env, surge_first,
};
use crate::crd::AuthMode;

/// Three of these fit the 1 vCPU / 1 GiB budget next to the data stores.
pub const BUDGET: ResourceBudget = ResourceBudget {
    cpu_request: "50m",
    memory_request: "64Mi",
    cpu_limit: "500m",
    memory_limit: "128Mi",
};

pub fn service_account(instance: &Instance<'_>) -> ServiceAccount {
    ServiceAccount {
        metadata: instance.meta(instance.child_name(Component::App), Component::App),
        // None of the stack's pods talk to the Kubernetes API.
        automount_service_account_token: Some(false),
        ..ServiceAccount::default()
    }
}

/// The service's DATA_DIR in the container (the root filesystem is read-only).
const DATA_DIR: &str = "/var/lib/shortener";
/// How long `shortener serve` waits at start for its database before it listens (the
/// service's `CONNECT_PATIENCE`). The startup probe allows longer, so the liveness probe
/// does not restart a replica that is still waiting, say for a PgBouncer being replaced.
const SERVE_CONNECT_PATIENCE_SECS: i32 = 60;
const STARTUP_PROBE_PERIOD_SECS: i32 = 5;
/// How long a terminating app pod keeps serving before SIGTERM: long enough for endpoint
/// removal to reach kube-proxy and the Ingress controller or Gateway (a rollout through
/// Traefik on the real node failed requests without it).
pub const DRAIN_SECS: u32 = 5;
/// Then, after SIGTERM, how long it keeps serving while `/readyz` fails: the readiness probe
/// sees it within [`READINESS_PERIOD_SECS`] × [`READINESS_FAILURES`], and the endpoint turns
/// not `serving`, which every controller acts on (Traefik v3.6 keeps sending to `serving`
/// terminating endpoints until then).
pub const SERVE_DRAIN_SECS: u32 = 10;
const READINESS_PERIOD_SECS: i32 = 2;
const READINESS_FAILURES: i32 = 2;

pub fn config_map_name(instance: &Instance<'_>) -> String {
    format!("{}-config", instance.name)
}

/// Non-secret settings of the service, consumed as environment variables.
pub fn config_map(instance: &Instance<'_>) -> ConfigMap {
    let spec = instance.spec();
    // Every setting of spec.app.config, by the settings description.
    let mut data = spec.app.config.variables();
    data.extend([
        ("LISTEN_ADDR".to_string(), format!("0.0.0.0:{HTTP_PORT}")),
        ("RUST_LOG".to_string(), spec.app.log_level.clone()),
        ("LOG_FORMAT".to_string(), "json".to_string()),
        // After SIGTERM the replica answers /readyz with 503 and keeps serving, for the
        // controllers that route to terminating endpoints until they are not `serving`.
        (
            "SHUTDOWN_DRAIN_SECS".to_string(),
            SERVE_DRAIN_SECS.to_string(),
        ),
        // The click spill file: clicks of redirects answered while the
        // database is away, kept across container restarts (an emptyDir
        // lives as long as the pod).
        ("DATA_DIR".to_string(), DATA_DIR.to_string()),
    ]);
    // Only a public host makes a meaningful base for returned short links; without one the
    // app falls back to the request's Host header.
    if let Some(base) = instance.public_base_url() {
        data.insert("PUBLIC_BASE_URL".to_string(), base);
    }
    // Behind an Ingress or a Gateway every request comes from their proxies, whose
    // X-Forwarded-For names the client. Only those proxies (and Prometheus) may reach
    // the pods while the NetworkPolicies are on, so the pod networks (private ranges)
    // are trusted then, and only then, unless the Shortener names the proxies itself.
    if instance.exposure().is_proxied()
        && spec.network_policy.enabled
        && spec.app.config.trusted_proxies.is_none()
    {
        data.insert(
            "TRUSTED_PROXIES".to_string(),
            "10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,100.64.0.0/10,fc00::/7".to_string(),
        );
    }
    if spec.app.config.tracing.endpoint.is_some() {
        data.insert("OTEL_SERVICE_NAME".to_string(), instance.name.to_string());
    }
    ConfigMap {
        metadata: instance.meta(config_map_name(instance), Component::App),
        data: Some(data),
        ..ConfigMap::default()
    }
}

/// Environment that cannot live in the ConfigMap because it carries credentials.
fn credential_env(instance: &Instance<'_>) -> Vec<EnvVar> {
    let spec = instance.spec();
    let mut env = Vec::new();
    match &spec.database.external {
        Some(external) => {
            env.push(secret_env(
                "DATABASE_URL",
                &external.secret_name,
                &external.key,
            ));
            // One URL for both: the service migrates at start over it (an external
            // database's roles are its administrator's; see docs/operator.md).
            env.push(secret_env(
                "MIGRATION_DATABASE_URL",
                &external.secret_name,
                &external.key,
            ));
        }
        None => {
            // The passwords are referenced, never copied: $(APP_DB_PASSWORD) is expanded by
            // the kubelet, so the URL with the secret never appears in the Deployment.
            // Requests run as the runtime role (rows only), through the pooler.
            env.push(secret_env(
                "APP_DB_PASSWORD",
                instance.runtime_secret_name(),
                "password",
            ));
            let (pooler, port) = instance.pooler_address();
            env.push(super::env(
                "DATABASE_URL",
                format!("postgres://{APP_ROLE}:$(APP_DB_PASSWORD)@{pooler}:{port}/{DATABASE_NAME}"),
            ));
            // The migrations run before, in the init container, as the schema owner: this
            // container has no credential that can change the schema, and checks the schema
            // instead of migrating it.
            env.push(super::env("MIGRATE_ON_START", "false"));
        }
    }
    match &spec.redis.external {
        Some(external) => env.push(secret_env(
            "REDIS_URL",
            &external.secret_name,
            &external.key,
        )),
        None => {
            // As for the database: the password is referenced and expanded by the kubelet.
            env.push(secret_env(
                "REDIS_PASSWORD",
                instance.redis_secret_name(),
                "password",
            ));
            env.push(super::env(
                "REDIS_URL",
                format!(
                    "redis://:$(REDIS_PASSWORD)@{}:{}",
                    instance.child_name(Component::Redis),
                    REDIS_PORT
                ),
            ));
        }
    }
    if spec.app.config.auth_mode() == AuthMode::ApiKey {
        env.push(secret_env(
            "ADMIN_API_KEY",
            instance.admin_secret_name(),
            "api-key",
        ));
    }
    if spec.app.config.tracing.endpoint.is_some() {
        // Which pod a span came from, from the downward API.
        for (name, field) in [
            ("POD_NAME", "metadata.name"),
            ("POD_NAMESPACE", "metadata.namespace"),
        ] {
            env.push(EnvVar {
                name: name.into(),
                value_from: Some(EnvVarSource {
                    field_ref: Some(ObjectFieldSelector {
                        field_path: field.into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            });
        }
        env.push(super::env(
            "OTEL_RESOURCE_ATTRIBUTES",
            "k8s.pod.name=$(POD_NAME),k8s.namespace.name=$(POD_NAMESPACE)",
        ));
    }
    env
}

/// How long the init container waits for PostgreSQL and the owner role (a new instance runs
/// initdb, then the role-setup Job); past it, it exits and the kubelet starts it again.
const MIGRATE_WAIT_SECS: u32 = 300;

/// The init container of the embedded database: `shortener migrate` as the schema owner,
/// straight to PostgreSQL (migrations take a session advisory lock and run DDL, which a
/// transaction-mode pooler cannot carry). The only container that sees the owner's password.
/// `None` for an external database, whose URL the service migrates over at start.
fn migrate_container(instance: &Instance<'_>) -> Option<Container> {
    let spec = instance.spec();
    if spec.database.external.is_some() {
        return None;
    }
    let primary = instance.primary_host();
    let env = vec![
        // Referenced, never copied: the kubelet expands $(OWNER_DB_PASSWORD).
        secret_env(
            "OWNER_DB_PASSWORD",
            instance.owner_secret_name(),
            "password",
        ),
        super::env(
            "MIGRATION_DATABASE_URL",
            format!(
                "postgres://{OWNER_ROLE}:$(OWNER_DB_PASSWORD)@{primary}:{POSTGRES_PORT}/{DATABASE_NAME}"
            ),
        ),
        // The role-setup Job may not have created the owner yet: a refused login
        // is waited out, like a server that is still starting.
        super::env("MIGRATE_WAIT_FOR_ROLE", "true"),
        super::env("MIGRATE_WAIT_SECS", MIGRATE_WAIT_SECS.to_string()),
        super::env("RUST_LOG", &spec.app.log_level),
    ];
    let resources = resources(spec.app.resources.as_ref(), BUDGET);
    Some(Container {
        args: Some(vec!["migrate".into()]),
        env: Some(env),
        ..container("migrate", &spec.app.image, resources)
    })
}

pub fn deployment(instance: &Instance<'_>, config: &ConfigMap) -> Deployment {
    let spec = instance.spec();
    // The probes do not depend on the database or Redis (/health does): a
    // replica with a warm cache keeps serving redirects through a database
    // outage, and restarting it would fix nothing.
    let probe = |path: &str, period: i32, failures: i32| {
        Some(Probe {
            http_get: Some(HTTPGetAction {
                path: Some(path.into()),
                port: IntOrString::String("http".into()),
                ..Default::default()
            }),
            period_seconds: Some(period),
            timeout_seconds: Some(2),
            failure_threshold: Some(failures),
            ..Default::default()
        })
    };
    let serve = Container {
        args: Some(vec!["serve".into()]),
        ports: Some(vec![container_port("http", HTTP_PORT)]),
        env_from: Some(vec![EnvFromSource {
            config_map_ref: Some(ConfigMapEnvSource {
                name: config_map_name(instance),
                ..Default::default()
            }),
            ..Default::default()
        }]),
        env: Some(credential_env(instance)),
        startup_probe: probe(
            "/livez",
            STARTUP_PROBE_PERIOD_SECS,
            SERVE_CONNECT_PATIENCE_SECS / STARTUP_PROBE_PERIOD_SECS + 6,
        ),
        readiness_probe: probe("/readyz", READINESS_PERIOD_SECS, READINESS_FAILURES),
        liveness_probe: probe("/livez", 10, 3),
        // A terminating pod keeps serving while the Ingress controller or Gateway and
        // kube-proxy take it out of their endpoints; only then does SIGTERM stop its listener
        // (no shell needed: the kubelet sleeps).
        lifecycle: Some(Lifecycle {
            pre_stop: Some(LifecycleHandler {
                sleep: Some(SleepAction {
                    seconds: i64::from(DRAIN_SECS),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        volume_mounts: Some(vec![mount("tmp", "/tmp"), mount("data", DATA_DIR)]),
        ..container(
            "shortener",
            &spec.app.image,
            resources(spec.app.resources.as_ref(), BUDGET),
        )
    };
    let pod = PodSpec {
        init_containers: migrate_container(instance).map(|migrate| vec![migrate]),
        // The drains before and after SIGTERM, the service's own grace for in-flight
        // requests, plus time to flush clicks and exit.
        termination_grace_period_seconds: Some(i64::from(
            DRAIN_SECS + SERVE_DRAIN_SECS + spec.app.config.shutdown_grace_seconds() + 10,
        )),
        // Spread over nodes and zones: `pods::default_spread`, unless the Shortener says.
        containers: vec![serve],
        volumes: Some(vec![
            empty_dir("tmp", "64Mi"),
            // Room for the spill file at its default bound (CLICK_SPILL_MAX_BYTES, 64 MiB)
            // and its rewrite.
            empty_dir("data", "160Mi"),
        ]),
        ..pod_spec(instance, APP_UID, None)
    };
    component_deployment(
        instance,
        Component::App,
        // An autoscaler's count is not overwritten (see `cluster::hand_over_replicas`).
        spec.app.autoscaling.is_none().then_some(spec.app.replicas),
        surge_first(),
        config,
        pod,
    )
}

pub fn service(instance: &Instance<'_>) -> Service {
    super::component_service(instance, Component::App, "http", 80, false)
}

/// One pod at a time may be evicted: drains proceed, the other replicas serve (with a single
/// replica a drain means a short outage: raise `app.replicas` to avoid it).
pub fn pod_disruption_budget(instance: &Instance<'_>) -> PodDisruptionBudget {
    super::pod_disruption_budget(instance, Component::App, 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::children::CONFIG_HASH_ANNOTATION;
    use crate::children::testing::{assert_hardened, assert_owned, pod_of, shortener};
    use crate::crd::{ExternalSecretRef, ShortenerSpec};
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    use serde_json::json;

    fn env_names(d: &Deployment) -> Vec<String> {
        let pod = d.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        pod.containers[0]
            .env
            .as_ref()
            .unwrap()
            .iter()
            .map(|e| e.name.clone())
            .collect()
    }

    /// Found on the real node: with PgBouncer down, `serve` waits up to 60 s for the database
    /// before it listens, and the liveness probe (3 x 10 s) restarted every replica first,
    /// into CrashLoopBackOff. Liveness starts only once the startup probe has passed, and that
    /// one allows more than the service's own patience.
    #[test]
    fn liveness_waits_out_the_services_start_up_patience() {
        let s = shortener(ShortenerSpec::default());
        let i = Instance::new(&s).unwrap();
        let pod = pod_of(deployment(&i, &config_map(&i)));
        let c = &pod.containers[0];
        let startup = c.startup_probe.as_ref().expect("a startup probe");
        let allowed = startup.period_seconds.unwrap() * startup.failure_threshold.unwrap();
        assert!(allowed > SERVE_CONNECT_PATIENCE_SECS, "{allowed} s");
        let path =
            |p: &k8s_openapi::api::core::v1::Probe| p.http_get.as_ref().unwrap().path.clone();
        assert_eq!(path(startup), path(c.liveness_probe.as_ref().unwrap()));
    }

    /// Found on the real node: a rollout through Traefik failed requests (502, reset
    /// connections) because SIGTERM closed the listener while the controller still sent to
    /// the pod. The kubelet now sleeps before SIGTERM, and the grace period covers the sleep,
    /// the service's own grace and the flush.
    #[test]
    fn a_terminating_pod_drains_before_sigterm_within_its_grace_period() {
        let s = shortener(ShortenerSpec::default());
        let i = Instance::new(&s).unwrap();
        let d = deployment(&i, &config_map(&i));
        let pod = d.spec.unwrap().template.spec.unwrap();
        let sleep = pod.containers[0]
            .lifecycle
            .as_ref()
            .and_then(|l| l.pre_stop.as_ref())
            .and_then(|h| h.sleep.as_ref())
            .expect("a preStop sleep")
            .seconds;
        assert!(sleep >= 5, "drain of {sleep} s");
        let grace = pod.termination_grace_period_seconds.unwrap();
        let service_grace = i64::from(s.spec.app.config.shutdown_grace_seconds());
        // After SIGTERM the service drains too, and the readiness probe must see it fail
        // well within that drain.
        let cm = config_map(&i);
        let drain: i64 = cm.data.as_ref().unwrap()["SHUTDOWN_DRAIN_SECS"]
            .parse()
            .unwrap();
        let readiness = pod.containers[0].readiness_probe.as_ref().unwrap();
        let seen_within =
            i64::from(readiness.period_seconds.unwrap() * readiness.failure_threshold.unwrap());
        assert!(
            drain >= seen_within + 5,
            "drain {drain} s, readiness {seen_within} s"
        );
        assert!(grace > sleep + drain + service_grace, "grace {grace} s");
    }

    #[test]
    fn deployment_defaults_to_three_replicas_with_a_safe_rollout() {
        let s = shortener(ShortenerSpec::default());
        let i = Instance::new(&s).unwrap();
        let d = deployment(&i, &config_map(&i));
        assert_owned(&d.metadata, "app");
        let spec = d.spec.as_ref().unwrap();
        assert_eq!(spec.replicas, Some(3));
        let rolling = spec
            .strategy
            .as_ref()
            .unwrap()
            .rolling_update
            .as_ref()
            .unwrap();
        assert_eq!(rolling.max_unavailable, Some(IntOrString::Int(0)));
        let pod = spec.template.spec.as_ref().unwrap();
        let spread = pod.topology_spread_constraints.as_ref().unwrap();
        assert_eq!(spread[0].topology_key, "kubernetes.io/hostname");
        assert_eq!(spread[0].when_unsatisfiable, "ScheduleAnyway");
        let c = &pod.containers[0];
        assert_eq!(c.args, Some(vec!["serve".to_string()]));
        let readiness = c
            .readiness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap();
        assert_eq!(readiness.path.as_deref(), Some("/readyz"));
        let liveness = c
            .liveness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap();
        assert_eq!(liveness.path.as_deref(), Some("/livez"));
        assert_eq!(
            c.security_context
                .as_ref()
                .unwrap()
                .read_only_root_filesystem,
            Some(true)
        );
        assert_hardened(&serde_json::to_value(pod).unwrap());
    }

    /// `(name, secret name)` of each variable of `container` read from a Secret.
    fn secret_refs(container: &k8s_openapi::api::core::v1::Container) -> Vec<(String, String)> {
        let env = container.env.clone().unwrap_or_default();
        env.iter()
            .filter_map(|e| {
                let r = e.value_from.as_ref()?.secret_key_ref.as_ref()?;
                Some((e.name.clone(), r.name.clone()))
            })
            .collect()
    }

    fn value_of(container: &k8s_openapi::api::core::v1::Container, name: &str) -> Option<String> {
        let env = container.env.as_ref()?;
        env.iter().find(|e| e.name == name)?.value.clone()
    }

    #[test]
    fn the_owner_secret_reaches_only_the_init_container_that_migrates() {
        let s = shortener(ShortenerSpec::default());
        let i = Instance::new(&s).unwrap();
        let d = deployment(&i, &config_map(&i));
        let pod = d.spec.unwrap().template.spec.unwrap();

        // The init container: `shortener migrate` as the owner, straight to PostgreSQL,
        // waiting for the role-setup Job's roles.
        let init = pod.init_containers.clone().unwrap();
        assert_eq!(init.len(), 1);
        let migrate = &init[0];
        assert_eq!(migrate.args, Some(vec!["migrate".to_string()]));
        assert_eq!(migrate.image, pod.containers[0].image);
        assert_eq!(
            value_of(migrate, "MIGRATION_DATABASE_URL").as_deref(),
            Some("postgres://shortener_owner:$(OWNER_DB_PASSWORD)@links-postgres:5432/shortener")
        );
        assert_eq!(
            value_of(migrate, "MIGRATE_WAIT_FOR_ROLE").as_deref(),
            Some("true")
        );
        assert_eq!(
            secret_refs(migrate),
            vec![(
                "OWNER_DB_PASSWORD".to_string(),
                "links-db-owner".to_string()
            )]
        );
        let names: Vec<_> = migrate
            .env
            .iter()
            .flatten()
            .map(|e| e.name.as_str())
            .collect();
        let pos = |n: &str| names.iter().position(|x| *x == n).unwrap();
        assert!(pos("OWNER_DB_PASSWORD") < pos("MIGRATION_DATABASE_URL"));
        assert_hardened(&serde_json::to_value(&pod).unwrap());

        // The serving container: the runtime role through the pooler, no migration.
        let serving = &pod.containers[0];
        assert_eq!(
            value_of(serving, "DATABASE_URL").as_deref(),
            Some("postgres://shortener_app:$(APP_DB_PASSWORD)@links-pgbouncer:6432/shortener")
        );
        assert_eq!(
            value_of(serving, "MIGRATE_ON_START").as_deref(),
            Some("false")
        );
        assert_eq!(value_of(serving, "MIGRATION_DATABASE_URL"), None);
        let secrets: Vec<_> = secret_refs(serving).into_iter().map(|(_, s)| s).collect();
        assert!(secrets.contains(&"links-db-app".to_string()), "{secrets:?}");
        // Neither the owner's Secret nor the superuser's, in any form.
        let serving_text = serde_json::to_string(serving).unwrap();
        assert!(!serving_text.contains("links-db-owner"), "{serving_text}");
        assert!(!serving_text.contains("\"links-db\""), "{serving_text}");
        assert!(!serving_text.contains("shortener_owner"), "{serving_text}");
        let names = env_names(&deployment(&i, &config_map(&i)));
        let pos = |n: &str| names.iter().position(|x| x == n).unwrap();
        assert!(pos("APP_DB_PASSWORD") < pos("DATABASE_URL"));
        assert!(names.contains(&"ADMIN_API_KEY".to_string()));
    }

    /// On CloudNativePG the migrations go to the Cluster's primary Service and the requests
    /// through its Pooler, with the same roles and Secrets.
    #[test]
    fn on_cloud_native_pg_the_pod_migrates_on_the_primary_and_serves_through_the_pooler() {
        let mut spec = ShortenerSpec::default();
        spec.database.cloud_native_pg = Some(crate::crd::CloudNativePgSpec::default());
        let s = shortener(spec);
        let i = Instance::new(&s).unwrap();
        let pod = deployment(&i, &config_map(&i))
            .spec
            .unwrap()
            .template
            .spec
            .unwrap();
        let migrate = &pod.init_containers.as_ref().unwrap()[0];
        assert_eq!(
            value_of(migrate, "MIGRATION_DATABASE_URL").as_deref(),
            Some(
                "postgres://shortener_owner:$(OWNER_DB_PASSWORD)@links-postgres-rw:5432/shortener"
            )
        );
        assert_eq!(
            value_of(&pod.containers[0], "DATABASE_URL").as_deref(),
            Some("postgres://shortener_app:$(APP_DB_PASSWORD)@links-pgbouncer:5432/shortener")
        );
    }

    #[test]
    fn an_external_database_is_migrated_by_the_service_at_start() {
        let mut spec = ShortenerSpec::default();
        spec.database.external = Some(ExternalSecretRef {
            secret_name: "pg".into(),
            key: "dsn".into(),
        });
        let s = shortener(spec);
        let i = Instance::new(&s).unwrap();
        let d = deployment(&i, &config_map(&i));
        let pod = d.spec.unwrap().template.spec.unwrap();
        assert!(pod.init_containers.is_none());
        let serving = &pod.containers[0];
        assert_eq!(
            value_of(serving, "MIGRATE_ON_START"),
            None,
            "the default: true"
        );
        let refs = secret_refs(serving);
        assert!(refs.contains(&("MIGRATION_DATABASE_URL".into(), "pg".into())));
    }

    #[test]
    fn redis_url_carries_the_generated_password_by_reference() {
        let s = shortener(ShortenerSpec::default());
        let i = Instance::new(&s).unwrap();
        let cm = config_map(&i);
        assert!(!cm.data.clone().unwrap().contains_key("REDIS_URL"));
        let d = deployment(&i, &cm);
        let pod = d.spec.unwrap().template.spec.unwrap();
        let env = pod.containers[0].env.clone().unwrap();
        let find = |name: &str| env.iter().find(|e| e.name == name).unwrap();
        let password = find("REDIS_PASSWORD");
        assert_eq!(password.value, None, "never a literal");
        let source = password
            .value_from
            .as_ref()
            .unwrap()
            .secret_key_ref
            .as_ref();
        let source = source.unwrap();
        assert_eq!(
            (source.name.as_str(), source.key.as_str()),
            ("links-redis-auth", "password")
        );
        assert_eq!(
            find("REDIS_URL").value.as_deref(),
            Some("redis://:$(REDIS_PASSWORD)@links-redis:6379")
        );
        let names = env_names(&deployment(&i, &cm));
        let pos = |n: &str| names.iter().position(|x| x == n).unwrap();
        assert!(pos("REDIS_PASSWORD") < pos("REDIS_URL"));
    }

    #[test]
    fn open_mode_with_external_stores_reads_urls_from_secrets() {
        let mut spec = ShortenerSpec::default();
        spec.app.config.auth_mode = Some(AuthMode::Open);
        spec.database.external = Some(ExternalSecretRef {
            secret_name: "pg".into(),
            key: "dsn".into(),
        });
        spec.redis.external = Some(ExternalSecretRef {
            secret_name: "cache".into(),
            key: "url".into(),
        });
        let s = shortener(spec);
        let i = Instance::new(&s).unwrap();
        let cm = config_map(&i);
        let d = deployment(&i, &cm);
        assert_eq!(
            env_names(&d),
            vec!["DATABASE_URL", "MIGRATION_DATABASE_URL", "REDIS_URL"]
        );
        let pod = d.spec.unwrap().template.spec.unwrap();
        let env = pod.containers[0].env.clone().unwrap();
        let source = env[0]
            .value_from
            .as_ref()
            .unwrap()
            .secret_key_ref
            .as_ref()
            .unwrap();
        assert_eq!((source.name.as_str(), source.key.as_str()), ("pg", "dsn"));
        assert!(!cm.data.unwrap().contains_key("REDIS_URL"));
    }

    #[test]
    fn tracing_is_off_by_default_and_wired_when_an_endpoint_is_set() {
        let s = shortener(ShortenerSpec::default());
        let i = Instance::new(&s).unwrap();
        let cm = config_map(&i);
        let data = cm.data.clone().unwrap();
        assert!(data.keys().all(|k| !k.starts_with("OTEL_")), "{data:?}");
        let d = deployment(&i, &cm);
        assert!(!env_names(&d).contains(&"OTEL_RESOURCE_ATTRIBUTES".to_string()));

        let mut spec = ShortenerSpec::default();
        spec.app.config.tracing.endpoint = Some("http://otel-collector.obs:4318".into());
        spec.app.config.tracing.sample_ratio = Some(0.25);
        let s = shortener(spec);
        let i = Instance::new(&s).unwrap();
        let cm = config_map(&i);
        let data = cm.data.clone().unwrap();
        assert_eq!(
            data["OTEL_EXPORTER_OTLP_ENDPOINT"],
            "http://otel-collector.obs:4318"
        );
        assert_eq!(data["OTEL_TRACES_SAMPLER_ARG"], "0.25");
        assert_eq!(data["OTEL_SERVICE_NAME"], "links");
        let d = deployment(&i, &cm);
        let names = env_names(&d);
        let pos = |n: &str| names.iter().position(|x| x == n).unwrap();
        // $(POD_NAME) expands only from variables defined before it.
        assert!(pos("POD_NAME") < pos("OTEL_RESOURCE_ATTRIBUTES"));
        assert!(pos("POD_NAMESPACE") < pos("OTEL_RESOURCE_ATTRIBUTES"));
    }

    #[test]
    fn config_map_carries_app_settings_and_change_rolls_pods() {
        let mut spec = ShortenerSpec::default();
        let s = shortener(spec.clone());
        let i = Instance::new(&s).unwrap();
        let cm = config_map(&i);
        let data = cm.data.clone().unwrap();
        assert_eq!(data["AUTH_MODE"], "api-key");
        assert_eq!(data["CACHE_TTL_SECONDS"], "300");
        assert_eq!(data["LISTEN_ADDR"], "0.0.0.0:8080");
        let before = deployment(&i, &cm);

        spec.app.config.cache_ttl_seconds = Some(60);
        let s2 = shortener(spec);
        let i2 = Instance::new(&s2).unwrap();
        let after = deployment(&i2, &config_map(&i2));
        let hash = |d: &Deployment| {
            d.spec
                .as_ref()
                .unwrap()
                .template
                .metadata
                .as_ref()
                .unwrap()
                .annotations
                .as_ref()
                .unwrap()[CONFIG_HASH_ANNOTATION]
                .clone()
        };
        assert_ne!(hash(&before), hash(&after));
    }

    #[test]
    fn custom_resources_replace_the_default_budget() {
        let mut spec = ShortenerSpec::default();
        spec.app.resources = Some(
            serde_json::from_value(json!({
                "requests": {"cpu": "200m", "memory": "256Mi"},
                "limits": {"cpu": "1", "memory": "512Mi"},
            }))
            .unwrap(),
        );
        let s = shortener(spec);
        let i = Instance::new(&s).unwrap();
        let d = deployment(&i, &config_map(&i));
        let res = d.spec.unwrap().template.spec.unwrap().containers[0]
            .resources
            .clone()
            .unwrap();
        assert_eq!(res.requests.unwrap()["cpu"].0, "200m");
    }

    #[test]
    fn service_and_pdb_select_app_pods() {
        let s = shortener(ShortenerSpec::default());
        let i = Instance::new(&s).unwrap();
        let svc = service(&i);
        assert_owned(&svc.metadata, "app");
        let svc_spec = svc.spec.unwrap();
        assert_eq!(
            svc_spec.selector.unwrap(),
            i.selector_labels(Component::App)
        );
        assert_eq!(
            svc_spec.ports.unwrap()[0].target_port,
            Some(IntOrString::String("http".into()))
        );
        let pdb = pod_disruption_budget(&i);
        let pdb_spec = pdb.spec.unwrap();
        assert_eq!(pdb_spec.max_unavailable, Some(IntOrString::Int(1)));
        assert_eq!(
            pdb_spec.selector.unwrap().match_labels.unwrap(),
            i.selector_labels(Component::App)
        );
    }

    #[test]
    fn service_account_does_not_mount_a_token() {
        let s = shortener(ShortenerSpec::default());
        let i = Instance::new(&s).unwrap();
        let sa = service_account(&i);
        assert_owned(&sa.metadata, "app");
        assert_eq!(sa.automount_service_account_token, Some(false));
    }
}
