//! Two replicas: one Lease holder reconciles; when it dies the standby takes over.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::changes::ready_minimal;
use crate::cluster::{Result, TIMEOUT, eventually};
use crate::operator::lease;
use crate::stack::{patch_spec, wait_deployment};
use crate::{Ctx, OPERATOR_NAMESPACE, ensure};

/// Takeover may take the lease duration after the last renewal, plus the standby's retry
/// and the API round trips: this much on top.
const TAKEOVER_SLACK: Duration = Duration::from_secs(10);

/// (holder, which replicas report `shortener_operator_leader 1`)
async fn leadership(ctx: &Ctx) -> std::result::Result<(String, Vec<String>), String> {
    let holder = lease(&ctx.client, OPERATOR_NAMESPACE)
        .await
        .map_err(|e| e.to_string())?
        .and_then(|(holder, _)| holder)
        .ok_or("the Lease has no holder")?;
    let mut leaders = Vec::new();
    for process in ctx.suite.operators.lock().await.iter_mut() {
        if process.exited().map_err(|e| e.to_string())? {
            continue;
        }
        if process.is_leader().await.map_err(|e| e.to_string())? {
            leaders.push(process.identity.clone());
        }
    }
    Ok((holder, leaders))
}

pub async fn standby_takes_over_when_the_leader_dies(ctx: &Ctx) -> Result {
    ready_minimal(ctx).await?;
    let standby = "e2e-1";
    ctx.suite.start_operator(standby).await?;

    // Exactly one leader, and it is the Lease holder.
    let (leader, _) = eventually(
        "exactly one leader, the Lease holder",
        TIMEOUT,
        || async move {
            let (holder, leaders) = leadership(ctx).await?;
            if leaders == [holder.clone()] {
                Ok((holder, leaders))
            } else {
                Err(format!("holder {holder}, leaders {leaders:?}"))
            }
        },
    )
    .await?;
    let survivor = if leader == standby { "e2e-0" } else { standby }.to_string();
    let (_, duration) = lease(&ctx.client, OPERATOR_NAMESPACE)
        .await?
        .ok_or("no Lease")?;
    ensure!(duration > 0, "Lease without a duration");

    // SIGKILL: the Lease is not released, so the standby must wait for it to expire.
    {
        let mut operators = ctx.suite.operators.lock().await;
        let process = operators
            .iter_mut()
            .find(|p| p.identity == leader)
            .ok_or("the leader is not one of ours")?;
        process.kill()?;
        operators.retain(|p| p.identity != leader);
    }
    let killed = Instant::now();
    let bound = Duration::from_secs(u64::try_from(duration)?) + TAKEOVER_SLACK;
    let survivor_ref = &survivor;
    eventually(
        &format!("{survivor} to take over"),
        bound + TIMEOUT,
        || async move {
            let (holder, leaders) = leadership(ctx).await?;
            if &holder == survivor_ref && leaders == [survivor_ref.clone()] {
                Ok(())
            } else {
                Err(format!("holder {holder}, leaders {leaders:?}"))
            }
        },
    )
    .await?;
    let took = killed.elapsed();
    println!(
        "    takeover after {:.1}s (lease duration {duration}s)",
        took.as_secs_f64()
    );
    ensure!(
        took <= bound,
        "takeover took {took:?}, more than the lease duration {duration}s + {TAKEOVER_SLACK:?}"
    );

    // The new leader reconciles.
    patch_spec(&ctx.ns, "links", json!({ "app": { "replicas": 2 } }))?;
    wait_deployment(&ctx.client, &ctx.ns, "links", 2).await?;
    Ok(())
}
