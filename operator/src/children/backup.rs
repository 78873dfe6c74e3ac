//! Scheduled logical backups of the embedded PostgreSQL.
//!
//! A CronJob runs `pg_dump -Fc` as the superuser against the database's Service and writes
//! `STAMP.dump` (UTC, `20261207T030000Z.dump`: the names sort as the times) into the claim
//! `NAME-backups`: under a temporary name first, read back whole with `pg_restore --list`,
//! then renamed, so a half-written dump is never taken for a backup; then it deletes the
//! oldest dumps beyond `keep`. The claim is created once and never owned by the Shortener:
//! like the data volume, it outlives it, which is what a backup is for.
//!
//! The restore is the role-setup Job's (roles.rs): on a database without the service's
//! schema, the dump's SQL and the role SQL run in one transaction, so the owner role can log
//! in (and migrate) only once every row is back.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{CronJob, CronJobSpec, JobSpec, JobTemplateSpec};
use k8s_openapi::api::core::v1::{
    Container, PersistentVolumeClaim, PersistentVolumeClaimSpec, PersistentVolumeClaimVolumeSource,
    PodSpec, Volume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::stack::{DATABASE_NAME, POSTGRES_PORT, POSTGRES_UID, SUPERUSER};
use super::{
    Component, Instance, ResourceBudget, container, env, pod_spec, pod_template, resources,
    secret_env,
};
use crate::crd::{BackupSpec, PostgresSpec};

/// Where the backups' volume is mounted, in the backup Job and in the role-setup Job.
pub const MOUNT: &str = "/backups";
const VOLUME: &str = "backups";

const BUDGET: ResourceBudget = ResourceBudget {
    cpu_request: "10m",
    memory_request: "32Mi",
    cpu_limit: "500m",
    memory_limit: "256Mi",
};

/// `KEEP` is the number of dumps to keep. `set -eu`: any failed step fails the Job (and
/// leaves the last good backups in place). It first waits (2 minutes at most) for the server
/// to answer: a new pod's traffic may be refused for a moment until the network plugin has
/// programmed the NetworkPolicies for its address (seen: the first connection refused, the
/// next, a second later, admitted).
const SCRIPT: &str = r#"set -eu
umask 077
cd /backups
tries=0
until pg_isready -q; do
  tries=$((tries + 1))
  if [ "$tries" -ge 60 ]; then
    echo "backup: PostgreSQL at $PGHOST:$PGPORT did not answer for 2 minutes" >&2
    exit 1
  fi
  sleep 2
done
rm -f .partial-*
name="$(date -u +%Y%m%dT%H%M%SZ).dump"
started=$(date +%s)
pg_dump -Fc --no-password -f ".partial-$name"
pg_restore --list ".partial-$name" >/dev/null
mv ".partial-$name" "$name"
echo "backup: $name, $(wc -c <"$name") bytes in $(($(date +%s) - started))s"
ls -1 -- *.dump | sort -r | tail -n +$((KEEP + 1)) | while read -r old; do
  rm -f -- "$old"
  echo "backup: removed $old (keeping $KEEP)"
done
"#;

/// The backups' claim of this Shortener: `NAME-backups`.
pub fn claim_name(instance: &Instance<'_>) -> String {
    format!("{}-backups", instance.name)
}

/// The backups' claim: the Shortener's labels and no owner, so garbage collection leaves
/// it (and the operator never prunes it); created once if absent.
pub fn claim(instance: &Instance<'_>, backup: &BackupSpec) -> PersistentVolumeClaim {
    let metadata = ObjectMeta {
        owner_references: None,
        ..instance.meta(claim_name(instance), Component::Backup)
    };
    PersistentVolumeClaim {
        metadata,
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: backup.storage.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".into(),
                    backup.storage.size.clone(),
                )])),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The claim `name` mounted at [`MOUNT`].
pub fn volume(name: String, read_only: bool) -> (Volume, VolumeMount) {
    (
        Volume {
            name: VOLUME.into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: name,
                read_only: Some(read_only),
            }),
            ..Default::default()
        },
        VolumeMount {
            name: VOLUME.into(),
            mount_path: MOUNT.into(),
            read_only: Some(read_only),
            ..Default::default()
        },
    )
}

/// The superuser's connection to the database's Service, as libpq reads it.
pub fn superuser_env(instance: &Instance<'_>) -> Vec<k8s_openapi::api::core::v1::EnvVar> {
    vec![
        env("PGHOST", instance.child_name(Component::Postgres)),
        env("PGPORT", POSTGRES_PORT.to_string()),
        env("PGDATABASE", DATABASE_NAME),
        env("PGUSER", SUPERUSER),
        secret_env("PGPASSWORD", instance.database_secret_name(), "password"),
    ]
}

pub fn cron_job(instance: &Instance<'_>, postgres: &PostgresSpec, backup: &BackupSpec) -> CronJob {
    let (volume, mount) = volume(claim_name(instance), false);
    let mut environment = superuser_env(instance);
    environment.push(env("KEEP", backup.keep.to_string()));
    let dump = Container {
        command: Some(vec!["sh".into(), "-c".into(), SCRIPT.into()]),
        env: Some(environment),
        volume_mounts: Some(vec![mount]),
        ..container("backup", postgres.image(), resources(None, BUDGET))
    };
    let pod = PodSpec {
        restart_policy: Some("Never".into()),
        containers: vec![dump],
        volumes: Some(vec![volume]),
        // The volume's files belong to the database's uid, whatever made the directory.
        ..pod_spec(instance, POSTGRES_UID, Some(POSTGRES_UID))
    };
    CronJob {
        metadata: instance.meta(instance.child_name(Component::Backup), Component::Backup),
        spec: Some(CronJobSpec {
            schedule: backup.schedule.clone(),
            time_zone: backup.time_zone.clone(),
            suspend: Some(backup.suspend),
            // One at a time; a run missed by more than an hour is skipped, not made up.
            concurrency_policy: Some("Forbid".into()),
            starting_deadline_seconds: Some(3600),
            successful_jobs_history_limit: Some(3),
            failed_jobs_history_limit: Some(3),
            job_template: JobTemplateSpec {
                metadata: None,
                spec: Some(JobSpec {
                    backoff_limit: Some(2),
                    template: pod_template(instance, Component::Backup, None, pod),
                    ..Default::default()
                }),
            },
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::children::testing::{assert_owned, shortener};
    use crate::crd::{BackupStorageSpec, ShortenerSpec};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    fn backup() -> BackupSpec {
        BackupSpec {
            schedule: "0 3 * * *".into(),
            time_zone: Some("Europe/Paris".into()),
            keep: 5,
            suspend: false,
            storage: BackupStorageSpec {
                size: Quantity("2Gi".into()),
                storage_class_name: Some("fast".into()),
            },
        }
    }

    #[test]
    fn the_cron_job_dumps_as_the_superuser_into_the_backups_claim() {
        let s = shortener(ShortenerSpec::default());
        let i = Instance::new(&s).unwrap();
        let job = cron_job(&i, &PostgresSpec::default(), &backup());
        assert_owned(&job.metadata, "postgres-backup");
        assert_eq!(job.metadata.name.as_deref(), Some("links-postgres-backup"));
        let spec = job.spec.unwrap();
        assert_eq!(spec.schedule, "0 3 * * *");
        assert_eq!(spec.time_zone.as_deref(), Some("Europe/Paris"));
        assert_eq!(spec.concurrency_policy.as_deref(), Some("Forbid"));
        let pod = spec.job_template.spec.unwrap().template.spec.unwrap();
        let c = &pod.containers[0];
        let env: BTreeMap<_, _> = c
            .env
            .iter()
            .flatten()
            .map(|e| (e.name.as_str(), e))
            .collect();
        assert_eq!(env["KEEP"].value.as_deref(), Some("5"));
        assert_eq!(env["PGUSER"].value.as_deref(), Some("shortener"));
        assert_eq!(env["PGHOST"].value.as_deref(), Some("links-postgres"));
        let secret = env["PGPASSWORD"].value_from.as_ref().unwrap();
        assert_eq!(secret.secret_key_ref.as_ref().unwrap().name, "links-db");
        let claim = pod.volumes.as_ref().unwrap()[0]
            .persistent_volume_claim
            .as_ref()
            .unwrap();
        assert_eq!(claim.claim_name, "links-backups");
        assert_eq!(claim.read_only, Some(false));
        assert_eq!(c.volume_mounts.as_ref().unwrap()[0].mount_path, MOUNT);
        assert_eq!(pod.security_context.unwrap().fs_group, Some(999));
        let script = &c.command.as_ref().unwrap()[2];
        assert!(script.contains("pg_dump -Fc"));
        assert!(script.contains("pg_restore --list"));
    }

    #[test]
    fn the_claim_is_labelled_but_not_owned() {
        let s = shortener(ShortenerSpec::default());
        let i = Instance::new(&s).unwrap();
        let claim = claim(&i, &backup());
        assert_eq!(claim.metadata.name.as_deref(), Some("links-backups"));
        assert_eq!(claim.metadata.owner_references, None);
        assert!(i.keeps_as_backups(&claim.metadata));
        assert!(!i.owns(&claim.metadata));
        let spec = claim.spec.unwrap();
        assert_eq!(spec.storage_class_name.as_deref(), Some("fast"));
        let size = &spec.resources.unwrap().requests.unwrap()["storage"];
        assert_eq!(size.0, "2Gi");
    }
}
