//! Backup and restore of the embedded database on the real node: the backup CronJob's
//! `pg_dump` onto its own volume, the data destroyed (the Shortener and its data volume
//! deleted), and a new Shortener restoring the backup before the service first connects:
//! every row of every table that holds links, users, keys and clicks is back, compared row
//! by row, and the links redirect with their clicks still counted.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::Api;

use crate::cluster::{Result, eventually, kubectl, kubectl_stdin};
use crate::stack::{FIRST_START, RECOVERY, admin_key, patch_links, psql, wait_shortener_ready};
use crate::traffic::Api as Service;
use crate::{Real, ensure};

/// The tables of the service's data: everything but the click writers' own bookkeeping
/// (which batches each replica has written), which a new replica starts afresh.
const TABLES: &[&str] = &[
    "users",
    "api_keys",
    "urls",
    "events",
    "redirect_counts",
    "click_rollups",
    "visitor_days",
    "visitor_salts",
    "_sqlx_migrations",
];

const BACKUP: &str = r#"{"schedule":"0 3 * * *","keep":3,"storage":{"size":"1Gi"}}"#;

/// Every row of each table, as text, in a stable order. `keys_up_to`: only the API keys of
/// ids up to this one (the new Shortener's service adds the bootstrap row of its own admin
/// key, a new Secret's: checked apart).
fn rows(keys_up_to: Option<i64>) -> Result<BTreeMap<&'static str, Vec<String>>> {
    let mut all = BTreeMap::new();
    for table in TABLES {
        let filter = match (*table, keys_up_to) {
            ("api_keys", Some(id)) => format!(" WHERE t.id <= {id}"),
            _ => String::new(),
        };
        let text = psql(
            "default",
            "links",
            &format!("SELECT t::text FROM public.{table} t{filter} ORDER BY 1"),
        )?;
        all.insert(*table, text.lines().map(String::from).collect());
    }
    Ok(all)
}

fn job_logs(name: &str) -> Result<String> {
    kubectl(&["-n", "default", "logs", &format!("job/{name}")])
}

async fn job_complete(real: &Real, name: &str, timeout: Duration) -> Result {
    let jobs: Api<Job> = Api::namespaced(real.client.clone(), "default");
    let failed = eventually(&format!("Job {name} finished"), timeout, || async {
        let job = jobs.get(name).await.map_err(|e| e.to_string())?;
        let conditions = job.status.and_then(|s| s.conditions).unwrap_or_default();
        let holds = |kind: &str| {
            conditions
                .iter()
                .any(|c| c.type_ == kind && c.status == "True")
        };
        if holds("Complete") {
            Ok(false)
        } else if holds("Failed") {
            Ok(true)
        } else {
            Err("running".to_string())
        }
    })
    .await?;
    ensure!(
        !failed,
        "Job {name} failed: {}",
        job_logs(name).unwrap_or_default()
    );
    Ok(())
}

/// `default/links` gets a backup schedule; a backup is taken now as the runbook says
/// (`kubectl create job --from=cronjob/...`); the Shortener and its data volume are deleted;
/// the Shortener made again with `restore: latest` is Ready with every row back (compared
/// table by table, row by row), and a link made before still redirects and counts on.
pub async fn a_backup_restores_every_row_after_the_data_is_lost(real: &'static Real) -> Result {
    patch_links(&format!(
        r#"{{"spec":{{"database":{{"postgres":{{"backup":{BACKUP}}}}}}}}}"#
    ))?;
    eventually("the backup CronJob", RECOVERY, || async {
        kubectl(&["-n", "default", "get", "cronjob/links-postgres-backup"])
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
    .await?;
    let key = admin_key(&real.client, "default", "links").await?;
    let before_api = Service::new(&real.ingress_url, None, &key)?;
    let user = before_api.create_user("backup").await?;
    let link = before_api
        .create_link(user, "https://example.com/backup")
        .await?;
    for _ in 0..3 {
        before_api.follow(&link.code).await?;
    }
    let clicks = before_api.counted(&link, 3).await?;

    // Nothing is sent from here on: the rows now are the rows the backup must hold.
    let before = rows(None)?;
    let last_key: i64 = psql(
        "default",
        "links",
        "SELECT coalesce(max(id), 0) FROM api_keys",
    )?
    .parse()?;
    let size = psql("default", "links", "SELECT pg_database_size('shortener')")?;
    let at = Instant::now();
    kubectl(&[
        "-n",
        "default",
        "create",
        "job",
        "--from=cronjob/links-postgres-backup",
        "links-backup-now",
    ])?;
    job_complete(real, "links-backup-now", RECOVERY).await?;
    let backup_took = at.elapsed();
    let backup_log = job_logs("links-backup-now")?;
    ensure!(
        backup_log.contains(".dump,"),
        "the backup Job said: {backup_log}"
    );
    // The CronJob controller records the run it owns; the operator shows it in the status.
    let shorteners = kube::Api::<kube::api::DynamicObject>::namespaced_with(
        real.client.clone(),
        "default",
        &crate::cluster::shortener_resource(),
    );
    let last_backup = eventually("status.lastBackup of default/links", RECOVERY, || async {
        let links = shorteners.get("links").await.map_err(|e| e.to_string())?;
        match crate::cluster::at(&links.data, "/status/lastBackup").as_str() {
            Some(at) => Ok(at.to_string()),
            None => Err("not set".to_string()),
        }
    })
    .await?;

    // The data is lost: the Shortener and its data volume deleted (the backups' volume and
    // the superuser's Secret stay, as they are meant to).
    crate::stack::delete_links()?;
    kubectl(&[
        "-n",
        "default",
        "delete",
        "pvc",
        "data-links-postgres-0",
        "--wait=true",
        "--timeout=120s",
    ])?;
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(real.client.clone(), "default");
    ensure!(
        claims.get_opt("links-backups").await?.is_some(),
        "the backups' claim went with the Shortener"
    );

    let at = Instant::now();
    let manifest = format!(
        r#"apiVersion: shortener.dev/v1alpha1
kind: Shortener
metadata:
  name: links
  namespace: default
spec:
  database:
    postgres:
      backup: {BACKUP}
      restore: {{ backup: latest }}
"#
    );
    let out = kubectl_stdin(&["apply", "-f", "-"], &manifest)?;
    ensure!(out.success, "kubectl apply: {}", out.stderr);
    wait_shortener_ready(&real.client, "default", "links", FIRST_START).await?;
    let restore_took = at.elapsed();
    let after = rows(Some(last_key))?;
    let new_keys = psql(
        "default",
        "links",
        &format!(
            "SELECT count(*) FILTER (WHERE NOT bootstrap), count(*) FROM api_keys WHERE id > {last_key}"
        ),
    )?;
    ensure!(
        new_keys == "0|1",
        "after the restore, API keys other than the new admin key's bootstrap row (not bootstrap|all): {new_keys}"
    );
    for table in TABLES {
        let (was, is) = (&before[table], &after[table]);
        if was != is {
            let (was_set, is_set): (BTreeSet<_>, BTreeSet<_>) =
                (was.iter().collect(), is.iter().collect());
            let missing: Vec<_> = was_set.difference(&is_set).take(3).collect();
            let extra: Vec<_> = is_set.difference(&was_set).take(3).collect();
            return Err(format!(
                "{table}: {} rows before the backup, {} after the restore; missing {missing:?}, extra {extra:?}",
                was.len(),
                is.len()
            )
            .into());
        }
    }
    let jobs: Api<Job> = Api::namespaced(real.client.clone(), "default");
    let role_jobs = jobs
        .list(
            &kube::api::ListParams::default().labels(
                "app.kubernetes.io/instance=links,app.kubernetes.io/component=postgres-roles",
            ),
        )
        .await?;
    let restore_log = role_jobs
        .items
        .iter()
        .filter_map(|j| j.metadata.name.as_deref())
        .filter_map(|name| job_logs(name).ok())
        .collect::<Vec<_>>()
        .join("\n");
    ensure!(
        restore_log.contains("restored in"),
        "the role-setup Job did not restore: {restore_log}"
    );

    // The service on the restored data: the link redirects, its earlier clicks counted.
    let key = admin_key(&real.client, "default", "links").await?;
    let api = Service::new(&real.ingress_url, None, &key)?;
    api.wait_serving().await?;
    api.redirects_and_counts_on(&link, clicks, "after the restore")
        .await?;
    let counts: Vec<String> = TABLES
        .iter()
        .map(|t| format!("{t} {}", before[t].len()))
        .collect();
    println!(
        "    backup of a {} MB database in {:.0}s ({}; status.lastBackup {last_backup}); data volume deleted; restored and Ready {:.0}s after the apply; every row equal: {}",
        size.parse::<f64>().unwrap_or(0.0) / 1e6,
        backup_took.as_secs_f64(),
        backup_log.trim(),
        restore_took.as_secs_f64(),
        counts.join(", ")
    );
    for line in restore_log.lines().filter(|l| l.starts_with("restore:")) {
        println!("      {line}");
    }
    Ok(())
}
