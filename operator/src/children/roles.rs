//! Database roles of the embedded PostgreSQL, set up by a Job.
//!
//! The superuser (`POSTGRES_USER`, whose password is in the `-db` Secret) stays what the
//! image makes it and serves only this Job. The Job runs `sql/roles.sql`, the file the
//! service's tests apply to a real PostgreSQL, which creates or brings back two roles: the
//! schema owner, which runs the migrations, and the runtime role the service's requests use.
//!
//! A Job rather than `docker-entrypoint-initdb.d`, which runs only on an empty data
//! directory and so would never reach an instance created before the roles existed. Its name
//! carries a digest of the SQL and its settings: a new version of either is a new Job (whose
//! pod template is immutable anyway), and the old one is pruned.

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{Container, EnvVar, PodSpec};

use super::stack::{APP_ROLE, OWNER_ROLE, POSTGRES_UID};
use super::{
    Component, Instance, ResourceBudget, backup, cloudnative_pg, config_digest, container, env,
    pod_spec, pod_template, resources, secret_env,
};
use crate::crd::{CloudNativePgSpec, PostgresSpec, RuntimeRoleSpec};

/// Idempotent; inputs as session settings (see the file's header).
pub const ROLES_SQL: &str = include_str!("../../sql/roles.sql");

const BUDGET: ResourceBudget = ResourceBudget {
    cpu_request: "10m",
    memory_request: "16Mi",
    cpu_limit: "100m",
    memory_limit: "64Mi",
};

/// Waits for the server (a new instance's first start runs initdb first), then runs the SQL
/// in one transaction (`psql -1`), stopping at the first error.
const SCRIPT: &str = "until pg_isready -q; do sleep 2; done; \
                      printf '%s' \"$ROLES_SQL\" | psql -X -1 -v ON_ERROR_STOP=1 -f -";

/// With `restore` set: on a database without the service's schema (no `_sqlx_migrations`),
/// the backup's SQL (`pg_restore --no-owner --no-acl`: objects and rows, owned by the
/// superuser) then the role SQL (which hands everything to the owner and grants the runtime
/// role) run in one transaction, so a new owner role logs in only once every row is back,
/// and a failed restore leaves an empty database. A `pg_restore` that fails mid-way makes
/// the transaction fail too (the `RAISE`, or the broken COPY stream before it). On a
/// database that has the schema, nothing is restored: only the roles are set.
const RESTORE_SCRIPT: &str = r#"set -eu
until pg_isready -q; do sleep 2; done
empty=$(psql -XtAc "SELECT to_regclass('public._sqlx_migrations') IS NULL")
if [ "$empty" = t ]; then
  file=$RESTORE_BACKUP
  if [ "$file" = latest ]; then
    file=$(cd /backups && ls -1 -- *.dump 2>/dev/null | sort | tail -n 1)
  fi
  if [ -z "$file" ] || [ ! -f "/backups/$file" ]; then
    echo "restore: no backup $RESTORE_BACKUP in /backups" >&2
    exit 1
  fi
  echo "restore: $file into the empty database"
  started=$(date +%s)
  {
    pg_restore --no-owner --no-acl -f - "/backups/$file" ||
      echo "DO \$\$ BEGIN RAISE EXCEPTION 'restore: pg_restore could not read $file'; END \$\$;"
    printf 'RESET search_path;
%s
' "$ROLES_SQL"
  } | psql -X -1 -q -v ON_ERROR_STOP=1 -o /dev/null -f -
  echo "restore: $file restored in $(($(date +%s) - started))s"
else
  echo "restore: the database already has the service's schema; nothing restored"
  printf '%s' "$ROLES_SQL" | psql -X -1 -v ON_ERROR_STOP=1 -f -
fi
"#;

/// The settings the SQL reads, as `(name, value)`; passwords as `$(VAR)` references the
/// kubelet expands from the Secrets, so the Job's spec holds none.
fn settings(role: &RuntimeRoleSpec) -> Vec<(&'static str, String)> {
    vec![
        ("shortener.owner_role", OWNER_ROLE.to_string()),
        ("shortener.owner_password", "$(OWNER_PASSWORD)".to_string()),
        ("shortener.app_role", APP_ROLE.to_string()),
        ("shortener.app_password", "$(APP_PASSWORD)".to_string()),
        (
            "shortener.statement_timeout",
            format!("{}s", role.statement_timeout_seconds),
        ),
        (
            "shortener.idle_in_transaction_session_timeout",
            format!("{}s", role.idle_in_transaction_timeout_seconds),
        ),
    ]
}

/// `PGOPTIONS`: each setting as `-c name=value` (values are alphanumeric: no escaping).
fn pg_options(role: &RuntimeRoleSpec) -> String {
    settings(role)
        .iter()
        .map(|(name, value)| format!("-c {name}={value}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The role-setup Job's name: the component's, with a short digest of everything the Job
/// does and how its pod runs (the SQL, its settings, the image, the pod options). A Job's
/// pod template is immutable, so any change of it is a new Job (the old one is pruned).
pub fn job_name(instance: &Instance<'_>, postgres: &PostgresSpec) -> String {
    job(instance, postgres).metadata.name.unwrap_or_default()
}

/// The Job of the embedded database: as its superuser, against its Service.
pub fn job(instance: &Instance<'_>, postgres: &PostgresSpec) -> Job {
    let mut pod = pod(
        instance,
        postgres.image(),
        &postgres.runtime_role,
        backup::superuser_env(instance),
    );
    if let Some(restore) = &postgres.restore {
        let claim = restore
            .claim_name
            .clone()
            .unwrap_or_else(|| backup::claim_name(instance));
        let (volume, mount) = backup::volume(claim, true);
        let setup = &mut pod.containers[0];
        setup.command = Some(vec!["sh".into(), "-c".into(), RESTORE_SCRIPT.into()]);
        setup
            .env
            .get_or_insert_default()
            .push(env("RESTORE_BACKUP", restore.backup.clone()));
        setup.volume_mounts = Some(vec![mount]);
        pod.volumes = Some(vec![volume]);
    }
    named_job(instance, pod)
}

/// The Job of a CloudNativePG Cluster: as the superuser CloudNativePG generates, against the
/// primary's Service, with the Cluster's image (for `psql`), else the embedded database's.
pub fn cloud_native_pg_job(instance: &Instance<'_>, cnpg: &CloudNativePgSpec) -> Job {
    let image = (cnpg.image_name.clone()).unwrap_or_else(|| PostgresSpec::default().image());
    let connection = cloudnative_pg::superuser_env(instance);
    named_job(
        instance,
        pod(instance, image, &cnpg.runtime_role, connection),
    )
}

/// The pod that runs the role SQL over `connection` (libpq's environment).
fn pod(
    instance: &Instance<'_>,
    image: String,
    role: &RuntimeRoleSpec,
    connection: Vec<EnvVar>,
) -> PodSpec {
    let setup = Container {
        command: Some(vec!["sh".into(), "-c".into(), SCRIPT.into()]),
        env: Some(
            connection
                .into_iter()
                .chain([
                    secret_env("OWNER_PASSWORD", instance.owner_secret_name(), "password"),
                    secret_env("APP_PASSWORD", instance.runtime_secret_name(), "password"),
                    env("PGOPTIONS", pg_options(role)),
                    env("ROLES_SQL", ROLES_SQL),
                ])
                .collect(),
        ),
        ..container("roles", image, resources(None, BUDGET))
    };
    PodSpec {
        restart_policy: Some("Never".into()),
        containers: vec![setup],
        ..pod_spec(instance, POSTGRES_UID, None)
    }
}

/// The Job around `pod`, named with a digest of its spec.
fn named_job(instance: &Instance<'_>, pod: PodSpec) -> Job {
    let spec = JobSpec {
        // psql failures (a wrong password, an SQL error) are retried a few times, then
        // the Job is Failed and stays so, visible, until deleted (the next pass then
        // creates it again). Waiting for the server is not a failure: no deadline.
        backoff_limit: Some(6),
        template: pod_template(instance, Component::RoleSetup, None, pod),
        ..Default::default()
    };
    // Serializing a typed spec cannot fail; an empty digest input would still name a Job.
    let rendered = serde_json::to_string(&spec).unwrap_or_default();
    let digest = config_digest(&std::collections::BTreeMap::from([(
        "spec".into(),
        rendered,
    )]));
    let name = format!(
        "{}-{}",
        instance.child_name(Component::RoleSetup),
        &digest[..10]
    );
    Job {
        metadata: instance.meta(name, Component::RoleSetup),
        spec: Some(spec),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::children::testing::{assert_owned, shortener};
    use crate::crd::ShortenerSpec;
    use serde_json::Value;

    fn env(job: &Job) -> std::collections::BTreeMap<String, Value> {
        let pod = job.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        pod.containers[0]
            .env
            .iter()
            .flatten()
            .map(|e| (e.name.clone(), serde_json::to_value(e).unwrap()))
            .collect()
    }

    #[test]
    fn the_job_runs_the_role_sql_as_the_superuser_with_the_roles_passwords() {
        let s = shortener(ShortenerSpec::default());
        let i = Instance::new(&s).unwrap();
        let pg = PostgresSpec::default();
        let job = job(&i, &pg);
        assert_owned(&job.metadata, "postgres-roles");
        assert_eq!(job.metadata.name, Some(job_name(&i, &pg)));
        assert!(job_name(&i, &pg).starts_with("links-postgres-roles-"));
        let env = env(&job);
        assert_eq!(env["ROLES_SQL"]["value"], ROLES_SQL);
        assert_eq!(env["PGUSER"]["value"], "shortener");
        assert_eq!(env["PGHOST"]["value"], "links-postgres");
        let secret = |name: &str| env[name]["valueFrom"]["secretKeyRef"]["name"].clone();
        assert_eq!(secret("PGPASSWORD"), "links-db");
        assert_eq!(secret("OWNER_PASSWORD"), "links-db-owner");
        assert_eq!(secret("APP_PASSWORD"), "links-db-app");
        let options = env["PGOPTIONS"]["value"].as_str().unwrap();
        assert!(options.contains("-c shortener.app_role=shortener_app"));
        assert!(options.contains("-c shortener.owner_role=shortener_owner"));
        assert!(options.contains("-c shortener.app_password=$(APP_PASSWORD)"));
        assert!(options.contains("-c shortener.statement_timeout=10s"));
        assert!(options.contains("-c shortener.idle_in_transaction_session_timeout=30s"));
        let pod = job.spec.unwrap().template.spec.unwrap();
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
        assert_eq!(pod.automount_service_account_token, Some(false));
    }

    /// On CloudNativePG the same SQL runs as the superuser CloudNativePG generates, against
    /// the primary, with the Cluster's limits for the runtime role.
    #[test]
    fn on_cloud_native_pg_the_job_runs_as_its_superuser_against_the_primary() {
        let mut spec = ShortenerSpec::default();
        let mut cnpg = CloudNativePgSpec::default();
        cnpg.runtime_role.statement_timeout_seconds = 3;
        spec.database.cloud_native_pg = Some(cnpg.clone());
        let s = shortener(spec);
        let i = Instance::new(&s).unwrap();
        let job = cloud_native_pg_job(&i, &cnpg);
        assert_owned(&job.metadata, "postgres-roles");
        let env = env(&job);
        assert_eq!(env["PGHOST"]["value"], "links-postgres-rw");
        let secret = |name: &str| env[name]["valueFrom"]["secretKeyRef"].clone();
        assert_eq!(secret("PGUSER")["name"], "links-postgres-superuser");
        assert_eq!(secret("PGUSER")["key"], "username");
        assert_eq!(secret("PGPASSWORD")["name"], "links-postgres-superuser");
        assert_eq!(env["ROLES_SQL"]["value"], ROLES_SQL);
        let options = env["PGOPTIONS"]["value"].as_str().unwrap();
        assert!(options.contains("-c shortener.statement_timeout=3s"));
        let pod = job.spec.unwrap().template.spec.unwrap();
        assert_eq!(pod.containers[0].image.as_deref(), Some("postgres:17"));
    }

    /// Every input the SQL reads is given, and nothing it does not read.
    #[test]
    fn settings_match_what_the_sql_reads() {
        let mut read: Vec<&str> = ROLES_SQL
            .split("current_setting('")
            .skip(1)
            .filter_map(|rest| rest.split('\'').next())
            .collect();
        read.sort();
        let mut given: Vec<&str> = settings(&RuntimeRoleSpec::default())
            .iter()
            .map(|(name, _)| *name)
            .collect();
        given.sort();
        assert_eq!(read, given);
    }

    #[test]
    fn a_new_timeout_is_a_new_job() {
        let s = shortener(ShortenerSpec::default());
        let i = Instance::new(&s).unwrap();
        let mut pg = PostgresSpec::default();
        let before = job_name(&i, &pg);
        assert_eq!(before, job_name(&i, &pg.clone()));
        pg.runtime_role.statement_timeout_seconds = 5;
        let after = job_name(&i, &pg);
        assert_ne!(before, after);
        let job = job(&i, &pg);
        let options = env(&job)["PGOPTIONS"]["value"].clone();
        assert!(options.as_str().unwrap().contains("statement_timeout=5s"));
    }

    /// A Job's pod template is immutable: new pod options are a new Job, not a refused apply.
    #[test]
    fn new_pod_options_are_a_new_job() {
        let plain = shortener(ShortenerSpec::default());
        let mut spec = ShortenerSpec::default();
        spec.pods.labels.insert("team".into(), "platform".into());
        let labelled = shortener(spec);
        let pg = PostgresSpec::default();
        assert_ne!(
            job_name(&Instance::new(&plain).unwrap(), &pg),
            job_name(&Instance::new(&labelled).unwrap(), &pg)
        );
    }

    /// With `restore`, the Job mounts the backups' claim read-only and runs the restore
    /// script, which restores only into a database without the service's schema.
    #[test]
    fn a_restore_mounts_the_backups_and_is_a_new_job() {
        use crate::crd::RestoreSpec;
        let s = shortener(ShortenerSpec::default());
        let i = Instance::new(&s).unwrap();
        let plain = PostgresSpec::default();
        let restoring = PostgresSpec {
            restore: Some(RestoreSpec {
                claim_name: None,
                backup: "latest".into(),
            }),
            ..PostgresSpec::default()
        };
        assert_ne!(job_name(&i, &plain), job_name(&i, &restoring));
        let job = job(&i, &restoring);
        assert_eq!(env(&job)["RESTORE_BACKUP"]["value"], "latest");
        let pod = job.spec.unwrap().template.spec.unwrap();
        let claim = pod.volumes.as_ref().unwrap()[0]
            .persistent_volume_claim
            .clone()
            .unwrap();
        assert_eq!(claim.claim_name, "links-backups");
        assert_eq!(claim.read_only, Some(true));
        let script = &pod.containers[0].command.as_ref().unwrap()[2];
        assert!(script.contains("to_regclass('public._sqlx_migrations') IS NULL"));
        assert!(script.contains("pg_restore --no-owner --no-acl -f -"));
        assert!(script.contains("psql -X -1"));
        let named = PostgresSpec {
            restore: Some(RestoreSpec {
                claim_name: Some("old-backups".into()),
                backup: "20261207T030000Z.dump".into(),
            }),
            ..PostgresSpec::default()
        };
        let pod = super::job(&i, &named).spec.unwrap().template.spec.unwrap();
        let volume = &pod.volumes.as_ref().unwrap()[0];
        let claim = volume.persistent_volume_claim.as_ref().unwrap();
        assert_eq!(claim.claim_name, "old-backups");
    }
}
