//! Hand edits of children are reverted.

use kube::ResourceExt;

use crate::changes::ready_minimal;
use crate::cluster::{Result, TIMEOUT, at, delete, eventually, get_opt, kubectl};
use crate::stack::{assert_children, rendered_children, shortener, wait_deployment};
use crate::{Ctx, ensure};

pub async fn deleted_service_and_edited_deployment_are_restored(ctx: &Ctx) -> Result {
    ready_minimal(ctx).await?;
    let client = &ctx.client;
    let ns = ctx.ns.as_str();

    let old_uid = get_opt(client, ns, "Service", "links")
        .await?
        .and_then(|s| s.uid())
        .ok_or("no Service links")?;
    delete(client, ns, "Service", "links").await?;
    let old_uid = &old_uid;
    eventually("Service links re-created", TIMEOUT, || async move {
        match get_opt(client, ns, "Service", "links")
            .await
            .map_err(|e| e.to_string())?
        {
            Some(s) if s.uid().as_ref() != Some(old_uid) => Ok(()),
            Some(_) => Err("still the deleted object".into()),
            None => Err("absent".into()),
        }
    })
    .await?;

    kubectl(&["-n", ns, "scale", "deployment/links", "--replicas=1"])?;
    kubectl(&[
        "-n",
        ns,
        "set",
        "image",
        "deployment/links",
        "shortener=nginx:hand-edited",
    ])?;
    let deployment = wait_deployment(client, ns, "links", 3).await?;
    let client2 = client;
    eventually("the app image put back", TIMEOUT, || async move {
        let d = get_opt(client2, ns, "Deployment", "links")
            .await
            .map_err(|e| e.to_string())?
            .ok_or("no Deployment")?;
        let image = at(
            &serde_json::to_value(&d).map_err(|e| e.to_string())?,
            "/spec/template/spec/containers/0/image",
        )
        .clone();
        if image == "shortener:0.1.0" {
            Ok(())
        } else {
            Err(image.to_string())
        }
    })
    .await?;
    ensure!(
        at(&deployment, "/spec/replicas") == 3,
        "replicas {}",
        at(&deployment, "/spec/replicas")
    );

    // Everything still there and owned.
    let stored = shortener(client, ns, "links").await?;
    let expected = rendered_children(&serde_yaml::to_string(&stored)?, &ctx.suite.work)?;
    assert_children(client, ns, "links", &expected).await
}
