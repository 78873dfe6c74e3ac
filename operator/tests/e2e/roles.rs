//! Database roles and node drains, read back from the API server: each role's credentials,
//! who uses which, the role-setup Job and its SQL, and the PodDisruptionBudgets as the
//! eviction subresource applies them (kwok reports the pods Ready, so the controller
//! manager's disruption controller computes the budgets' status as on a real cluster).

use std::collections::BTreeSet;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, ResourceQuota, Secret};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Api;
use kube::api::{DynamicObject, EvictParams, ListParams};
use serde_json::{Value, json};

use crate::changes::ready_minimal;
use crate::cluster::{Result, TIMEOUT, api_of, at, eventually, kubectl};
use crate::stack::{patch_spec, wait_ready};
use crate::{Ctx, ensure};

const ROLES_SQL: &str = include_str!("../../sql/roles.sql");
const ROLE_SETUP: &str =
    "app.kubernetes.io/instance=links,app.kubernetes.io/component=postgres-roles";

fn string_data(secret: &Secret) -> Result<std::collections::BTreeMap<String, String>> {
    let mut out = std::collections::BTreeMap::new();
    for (key, value) in secret.data.iter().flatten() {
        out.insert(key.clone(), String::from_utf8(value.0.clone())?);
    }
    Ok(out)
}

async fn role_setup_jobs(ctx: &Ctx) -> Result<Vec<DynamicObject>> {
    let jobs = api_of(&ctx.client, &ctx.ns, "Job")?;
    Ok(jobs
        .list(&ListParams::default().labels(ROLE_SETUP))
        .await?
        .items)
}

/// The instance's only role-setup Job.
pub async fn role_setup_job(ctx: &Ctx) -> Result<DynamicObject> {
    let mut jobs = role_setup_jobs(ctx).await?;
    ensure!(jobs.len() == 1, "{} role-setup Jobs", jobs.len());
    Ok(jobs.remove(0))
}

fn env_var(container: &Value, name: &str) -> Value {
    container["env"]
        .as_array()
        .and_then(|e| e.iter().find(|v| v["name"] == name))
        .cloned()
        .unwrap_or_default()
}

fn secret_ref(var: &Value) -> (String, String) {
    let r = &var["valueFrom"]["secretKeyRef"];
    (
        r["name"].as_str().unwrap_or_default().to_string(),
        r["key"].as_str().unwrap_or_default().to_string(),
    )
}

/// Superuser, schema owner, runtime role and PgBouncer's console admin each have a generated
/// password of their own; the app serves as the runtime role through the pooler, and only its
/// init container, which migrates, has the owner's; the pooler's userlist holds the runtime role and its
/// admin only; the role-setup Job runs the repository's role SQL as the superuser, and a new
/// timeout is a new Job, the old one pruned.
pub async fn each_database_role_has_its_own_credentials_and_the_setup_job_runs_the_sql(
    ctx: &Ctx,
) -> Result {
    ready_minimal(ctx).await?;
    let ns = ctx.ns.as_str();
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let superuser = string_data(&secrets.get("links-db").await?)?;
    let owner = string_data(&secrets.get("links-db-owner").await?)?;
    let runtime = string_data(&secrets.get("links-db-app").await?)?;
    ensure!(
        superuser["username"] == "shortener"
            && owner["username"] == "shortener_owner"
            && runtime["username"] == "shortener_app"
            && runtime["pgbouncer-admin-username"] == "pgbouncer_admin",
        "role names: {} {} {} {}",
        superuser["username"],
        owner["username"],
        runtime["username"],
        runtime["pgbouncer-admin-username"]
    );
    let passwords: BTreeSet<&String> = [
        &superuser["password"],
        &owner["password"],
        &runtime["password"],
        &runtime["pgbouncer-admin-password"],
    ]
    .into_iter()
    .collect();
    ensure!(
        passwords.len() == 4 && passwords.iter().all(|p| p.len() == 32),
        "the four passwords are not four distinct generated ones"
    );
    ensure!(
        runtime["userlist.txt"]
            == format!(
                "\"shortener_app\" \"{}\"\n\"pgbouncer_admin\" \"{}\"\n",
                runtime["password"], runtime["pgbouncer-admin-password"]
            ),
        "PgBouncer's userlist holds more or other than the runtime role and its admin"
    );

    // The app: requests as the runtime role through the pooler with migrate-on-start off;
    // the migrations in the init container, as the owner straight to PostgreSQL; the owner's
    // Secret referenced by the init container only, the superuser's nowhere.
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), ns);
    let app = serde_json::to_value(deployments.get("links").await?)?;
    let pod = &app["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    ensure!(
        env_var(container, "DATABASE_URL")["value"]
            == "postgres://shortener_app:$(APP_DB_PASSWORD)@links-pgbouncer:6432/shortener"
            && secret_ref(&env_var(container, "APP_DB_PASSWORD"))
                == ("links-db-app".into(), "password".into())
            && env_var(container, "MIGRATE_ON_START")["value"] == "false",
        "serving container: DATABASE_URL {} from {}, MIGRATE_ON_START {}",
        env_var(container, "DATABASE_URL"),
        env_var(container, "APP_DB_PASSWORD"),
        env_var(container, "MIGRATE_ON_START")
    );
    let serving = container.to_string();
    ensure!(
        !serving.contains("links-db-owner")
            && !serving.contains("shortener_owner")
            && env_var(container, "MIGRATION_DATABASE_URL").is_null(),
        "the serving container can reach the owner's credentials: {serving}"
    );
    let init = pod["initContainers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    ensure!(
        init.len() == 1 && init[0]["args"] == json!(["migrate"]),
        "init containers: {init:?}"
    );
    let migrate = &init[0];
    ensure!(
        env_var(migrate, "MIGRATION_DATABASE_URL")["value"]
            == "postgres://shortener_owner:$(OWNER_DB_PASSWORD)@links-postgres:5432/shortener"
            && secret_ref(&env_var(migrate, "OWNER_DB_PASSWORD"))
                == ("links-db-owner".into(), "password".into())
            && env_var(migrate, "MIGRATE_WAIT_FOR_ROLE")["value"] == "true",
        "init container: {migrate}"
    );
    let owner_refs = app.to_string().matches("\"links-db-owner\"").count();
    ensure!(
        owner_refs == 1,
        "the owner's Secret is referenced {owner_refs} times in the app Deployment"
    );
    let app_text = app.to_string();
    ensure!(
        !app_text.contains("\"links-db\"") && passwords.iter().all(|p| !app_text.contains(*p)),
        "the app Deployment refers to the superuser's Secret or carries a password"
    );

    // PgBouncer: the console is its admin's, the userlist comes from the runtime Secret.
    let config_maps: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), ns);
    let ini = config_maps
        .get("links-pgbouncer")
        .await?
        .data
        .and_then(|d| d.get("pgbouncer.ini").cloned())
        .unwrap_or_default();
    ensure!(
        ini.contains("admin_users = pgbouncer_admin\n")
            && ini.contains("stats_users = pgbouncer_admin\n")
            && !ini.contains("shortener_app"),
        "pgbouncer.ini: {ini}"
    );
    let pgbouncer = serde_json::to_value(deployments.get("links-pgbouncer").await?)?;
    let sources = &pgbouncer["spec"]["template"]["spec"]["volumes"][0]["projected"]["sources"];
    ensure!(
        sources
            .as_array()
            .is_some_and(|s| s.iter().any(|s| s["secret"]["name"] == "links-db-app")),
        "PgBouncer's userlist source: {sources}"
    );

    // The Job: the repository's SQL, as the superuser, with the roles' passwords by
    // reference, owned by the Shortener.
    let job = role_setup_job(ctx).await?;
    let container = at(&job.data, "/spec/template/spec/containers/0").clone();
    ensure!(
        env_var(&container, "ROLES_SQL")["value"] == ROLES_SQL,
        "the Job does not run sql/roles.sql"
    );
    ensure!(
        env_var(&container, "PGUSER")["value"] == "shortener"
            && env_var(&container, "PGHOST")["value"] == "links-postgres"
            && secret_ref(&env_var(&container, "PGPASSWORD"))
                == ("links-db".into(), "password".into())
            && secret_ref(&env_var(&container, "OWNER_PASSWORD"))
                == ("links-db-owner".into(), "password".into())
            && secret_ref(&env_var(&container, "APP_PASSWORD"))
                == ("links-db-app".into(), "password".into()),
        "the Job's connection: {container}"
    );
    let options = env_var(&container, "PGOPTIONS")["value"].clone();
    let options = options.as_str().unwrap_or_default();
    ensure!(
        options.contains("-c shortener.statement_timeout=10s")
            && options.contains("-c shortener.idle_in_transaction_session_timeout=30s")
            && options.contains("-c shortener.app_password=$(APP_PASSWORD)"),
        "PGOPTIONS: {options}"
    );
    let owners = job.metadata.owner_references.clone().unwrap_or_default();
    ensure!(
        owners.len() == 1 && owners[0].kind == "Shortener" && owners[0].controller == Some(true),
        "the Job's owners: {owners:?}"
    );
    let first = job.metadata.name.clone().unwrap_or_default();

    // A new timeout: a new Job runs the SQL with it, the old one is pruned.
    patch_spec(
        ns,
        "links",
        json!({ "database": { "postgres": { "runtimeRole": { "statementTimeoutSeconds": 4 } } } }),
    )?;
    let first = &first;
    eventually(
        "a new role-setup Job replacing the old",
        TIMEOUT,
        || async move {
            let jobs = role_setup_jobs(ctx).await.map_err(|e| e.to_string())?;
            let names: Vec<_> = jobs
                .iter()
                .filter_map(|j| j.metadata.name.clone())
                .collect();
            match jobs.as_slice() {
                [job] if job.metadata.name.as_ref() != Some(first) => {
                    let container = at(&job.data, "/spec/template/spec/containers/0");
                    let options = env_var(container, "PGOPTIONS")["value"].to_string();
                    if options.contains("statement_timeout=4s") {
                        Ok(())
                    } else {
                        Err(format!("new Job's PGOPTIONS: {options}"))
                    }
                }
                _ => Err(format!("role-setup Jobs: {names:?}")),
            }
        },
    )
    .await?;
    Ok(())
}

async fn pdb(ctx: &Ctx, name: &str) -> Result<PodDisruptionBudget> {
    let api: Api<PodDisruptionBudget> = Api::namespaced(ctx.client.clone(), &ctx.ns);
    Ok(api.get(name).await?)
}

/// Waits until the disruption controller has computed `name`'s status for its current spec
/// with `allowed` disruptions.
async fn wait_disruptions_allowed(ctx: &Ctx, name: &str, allowed: i32) -> Result {
    eventually(
        &format!("PodDisruptionBudget {name} allowing {allowed}"),
        TIMEOUT,
        || async move {
            let pdb = pdb(ctx, name).await.map_err(|e| e.to_string())?;
            let status = pdb.status.clone().unwrap_or_default();
            let current = status.observed_generation == pdb.metadata.generation;
            if current && status.current_healthy == 1 && status.disruptions_allowed == allowed {
                Ok(())
            } else {
                Err(format!("{status:?}"))
            }
        },
    )
    .await
}

/// The one pod of a component.
async fn pod_of(ctx: &Ctx, component: &str) -> Result<String> {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ctx.ns);
    let selector =
        format!("app.kubernetes.io/instance=links,app.kubernetes.io/component={component}");
    let list = pods.list(&ListParams::default().labels(&selector)).await?;
    let live: Vec<_> = list
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    ensure!(live.len() == 1, "{component} pods: {live:?}");
    Ok(live[0].clone())
}

/// The eviction subresource's answer: Ok when the pod was evicted, the API's code otherwise.
/// Asked once: kube's default client retries a 429 (a budget's refusal) for minutes.
async fn evict(ctx: &Ctx, pod: &str) -> Result<std::result::Result<(), u16>> {
    let mut config = kube::Config::infer().await?;
    config.default_retry = false;
    let client = kube::Client::try_from(config)?;
    let pods: Api<Pod> = Api::namespaced(client, &ctx.ns);
    match pods.evict(pod, &EvictParams::default()).await {
        Ok(_) => Ok(Ok(())),
        Err(kube::Error::Api(status)) => Ok(Err(status.code)),
        Err(other) => Err(other.into()),
    }
}

/// The budgets as the operator writes them, applied by the eviction API: the PostgreSQL pod
/// is not evicted (429) until `maintenanceWindow.inProgress`; PgBouncer's and Redis' single
/// pods are (they hold no data and come back elsewhere in seconds); the app's pods one at a
/// time.
pub async fn postgres_eviction_waits_for_a_maintenance_window(ctx: &Ctx) -> Result {
    ready_minimal(ctx).await?;
    for (name, component, max_unavailable) in [
        ("links", "app", 1),
        ("links-postgres", "postgres", 0),
        ("links-pgbouncer", "pgbouncer", 1),
        ("links-redis", "redis", 1),
    ] {
        let spec = pdb(ctx, name).await?.spec.unwrap_or_default();
        let selector = spec
            .selector
            .and_then(|s| s.match_labels)
            .unwrap_or_default();
        ensure!(
            spec.max_unavailable == Some(IntOrString::Int(max_unavailable))
                && spec.min_available.is_none()
                && selector
                    .get("app.kubernetes.io/component")
                    .map(String::as_str)
                    == Some(component)
                && selector
                    .get("app.kubernetes.io/instance")
                    .map(String::as_str)
                    == Some("links"),
            "PodDisruptionBudget {name}: maxUnavailable {:?}, selector {selector:?}",
            spec.max_unavailable
        );
    }

    wait_disruptions_allowed(ctx, "links-postgres", 0).await?;
    let postgres = pod_of(ctx, "postgres").await?;
    let answer = evict(ctx, &postgres).await?;
    ensure!(
        answer == Err(429),
        "evicting {postgres} outside a maintenance window: {answer:?}, want 429"
    );

    wait_disruptions_allowed(ctx, "links-redis", 1).await?;
    let redis = pod_of(ctx, "redis").await?;
    let answer = evict(ctx, &redis).await?;
    ensure!(answer == Ok(()), "evicting {redis}: {answer:?}");
    wait_disruptions_allowed(ctx, "links-pgbouncer", 1).await?;
    let pgbouncer = pod_of(ctx, "pgbouncer").await?;
    let answer = evict(ctx, &pgbouncer).await?;
    ensure!(answer == Ok(()), "evicting {pgbouncer}: {answer:?}");

    // The maintenance window: one eviction allowed, the StatefulSet brings the pod back.
    patch_spec(
        ns(ctx),
        "links",
        json!({ "maintenanceWindow": { "inProgress": true } }),
    )?;
    wait_disruptions_allowed(ctx, "links-postgres", 1).await?;
    let answer = evict(ctx, &postgres).await?;
    ensure!(
        answer == Ok(()),
        "evicting {postgres} in a maintenance window: {answer:?}"
    );
    wait_ready(&ctx.client, &ctx.ns, "links").await?;

    // Closed again: the budget blocks again.
    patch_spec(
        ns(ctx),
        "links",
        json!({ "maintenanceWindow": { "inProgress": false } }),
    )?;
    wait_disruptions_allowed(ctx, "links-postgres", 0).await?;
    let postgres = eventually("the PostgreSQL pod back", TIMEOUT, || async move {
        pod_of(ctx, "postgres").await.map_err(|e| e.to_string())
    })
    .await?;
    let answer = evict(ctx, &postgres).await?;
    ensure!(
        answer == Err(429),
        "evicting {postgres} after the window: {answer:?}, want 429"
    );
    Ok(())
}

fn ns(ctx: &Ctx) -> &str {
    &ctx.ns
}

/// Waits for the role-setup Job named other than `old` and returns its name.
async fn new_role_setup_job(ctx: &Ctx, old: &str) -> Result<String> {
    eventually("a new role-setup Job", TIMEOUT, || async move {
        let jobs = role_setup_jobs(ctx).await.map_err(|e| e.to_string())?;
        let names: Vec<String> = jobs
            .iter()
            .filter_map(|j| j.metadata.name.clone())
            .collect();
        match names.as_slice() {
            [name] if name != old => Ok(name.clone()),
            _ => Err(format!("role-setup Jobs: {names:?}")),
        }
    })
    .await
}

/// The Degraded condition's (status, reason, message).
async fn degraded(ctx: &Ctx) -> Result<(String, String, String)> {
    let s = crate::stack::shortener(&ctx.client, &ctx.ns, "links").await?;
    let condition = at(&s.data, "/status/conditions")
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Degraded"))
        .cloned()
        .unwrap_or_default();
    let text = |key: &str| condition[key].as_str().unwrap_or_default().to_string();
    Ok((text("status"), text("reason"), text("message")))
}

/// A role-setup Job that failed is reported (Degraded, RoleSetupFailed, naming the Job) until,
/// the cause fixed and the Job deleted as the runbook says, the Job the operator creates again
/// succeeds. kwok completes every Job pod it runs, so the failure is made as follows: a
/// ResourceQuota leaves no room for the new Job's pod (the Job controller cannot create it),
/// and the Job's status subresource is then set as the Job controller sets it once
/// `backoffLimit` is used up (FailureTarget and Failed, BackoffLimitExceeded); a finished Job
/// is left alone by the Job controller from then on.
pub async fn a_failed_role_setup_job_is_reported_until_it_succeeds(ctx: &Ctx) -> Result {
    ready_minimal(ctx).await?;
    let ns = ctx.ns.as_str();
    let first = role_setup_job(ctx).await?.metadata.name.unwrap_or_default();

    // No room for another pod in the namespace.
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let running = pods
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .filter(|p| {
            let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
            !matches!(phase, Some("Succeeded" | "Failed"))
        })
        .count();
    let quota: ResourceQuota = serde_json::from_value(json!({
        "metadata": { "name": "no-more-pods", "namespace": ns },
        "spec": { "hard": { "pods": running.to_string() } },
    }))?;
    let quotas: Api<ResourceQuota> = Api::namespaced(ctx.client.clone(), ns);
    quotas
        .create(&kube::api::PostParams::default(), &quota)
        .await?;
    let quotas = &quotas;
    eventually("the quota's usage computed", TIMEOUT, || async move {
        let quota = quotas
            .get("no-more-pods")
            .await
            .map_err(|e| e.to_string())?;
        let status = quota.status.unwrap_or_default();
        if status.used.is_some_and(|used| used.contains_key("pods")) {
            Ok(())
        } else {
            Err(format!("status: {:?}", status.hard))
        }
    })
    .await?;

    // A new revision of the role SQL's settings: a new Job, whose pod cannot be created.
    patch_spec(
        ns,
        "links",
        json!({ "database": { "postgres": { "runtimeRole": { "statementTimeoutSeconds": 7 } } } }),
    )?;
    let job = new_role_setup_job(ctx, &first).await?;
    let jobs = api_of(&ctx.client, ns, "Job")?;
    let (jobs, job) = (&jobs, job.as_str());
    let started = eventually("the new Job started", TIMEOUT, || async move {
        let j = jobs.get(job).await.map_err(|e| e.to_string())?;
        let start = at(&j.data, "/status/startTime");
        let active = at(&j.data, "/status/active").as_i64().unwrap_or(0);
        match start.as_str() {
            Some(start) if active == 0 => Ok(start.to_string()),
            _ => Err(format!("status: {}", at(&j.data, "/status"))),
        }
    })
    .await?;
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let failed = json!({ "status": {
        "startTime": started,
        "active": 0,
        "failed": 7,
        "terminating": 0,
        "conditions": [
            { "type": "FailureTarget", "status": "True", "reason": "BackoffLimitExceeded",
              "message": "Job has reached the specified backoff limit",
              "lastProbeTime": now, "lastTransitionTime": now },
            { "type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
              "message": "Job has reached the specified backoff limit",
              "lastProbeTime": now, "lastTransitionTime": now },
        ],
    } });
    kubectl(&[
        "patch",
        "job",
        job,
        "-n",
        ns,
        "--subresource=status",
        "--type=merge",
        "-p",
        &failed.to_string(),
    ])?;

    let reported = eventually("Degraded RoleSetupFailed", TIMEOUT, || async move {
        let (status, reason, message) = degraded(ctx).await.map_err(|e| e.to_string())?;
        if status == "True" && reason == "RoleSetupFailed" {
            Ok(message)
        } else {
            Err(format!("Degraded {status} {reason}: {message}"))
        }
    })
    .await?;
    ensure!(
        reported.contains(job) && reported.contains("BackoffLimitExceeded"),
        "Degraded message: {reported}"
    );

    // The runbook: fix the cause (here, the quota), delete the Job; the operator creates it
    // again, kwok runs its pod to completion, and the condition clears.
    quotas
        .delete("no-more-pods", &kube::api::DeleteParams::default())
        .await?;
    jobs.delete(job, &kube::api::DeleteParams::background())
        .await?;
    eventually("Degraded cleared", TIMEOUT, || async move {
        let (status, reason, message) = degraded(ctx).await.map_err(|e| e.to_string())?;
        let j = jobs.get(job).await.map_err(|e| e.to_string())?;
        let complete = at(&j.data, "/status/conditions")
            .as_array()
            .is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["type"] == "Complete" && c["status"] == "True")
            });
        if status == "False" && complete {
            Ok(())
        } else {
            Err(format!(
                "Job complete {complete}; Degraded {status} {reason}: {message}"
            ))
        }
    })
    .await?;
    Ok(())
}
