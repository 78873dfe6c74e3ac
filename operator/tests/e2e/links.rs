//! ShortLinks before any service answers: what the API server admits (the service's code
//! rules, immutable code), what the operator says of a link whose Shortener does not exist,
//! and that such a link is deleted at once (its finalizer has no link to deactivate).

use std::time::Duration;

use crate::cluster::{
    Result, TIMEOUT, crd, eventually, kubectl, kubectl_refused, kubectl_stdin, printer_columns,
};
use crate::{Ctx, ensure};

fn manifest(ns: &str, name: &str, code: &str, target: &str) -> String {
    format!(
        "apiVersion: shortener.dev/v1alpha1\nkind: ShortLink\nmetadata:\n  name: {name}\n  \
         namespace: {ns}\nspec:\n  shortener: nowhere\n  code: {code}\n  target: {target}\n"
    )
}

fn apply(yaml: &str) -> Result<crate::cluster::Output> {
    kubectl_stdin(&["apply", "-f", "-"], yaml)
}

pub async fn a_shortlink_is_admitted_as_the_service_would_and_waits_for_its_shortener(
    ctx: &Ctx,
) -> Result {
    let ns = ctx.ns.as_str();
    let columns = printer_columns(&crd("shortlinks.shortener.dev")?);
    ensure!(
        columns
            == [
                "Code",
                "Target",
                "Shortener",
                "Clicks",
                "Synced",
                "URL",
                "Age"
            ],
        "printer columns: {columns:?}"
    );

    // `shortener` still names the Shortener alone (a category of that name on ShortLink
    // would make kubectl refuse `kubectl get shortener NAME`).
    kubectl(&[
        "-n",
        ns,
        "get",
        "shortener",
        "nowhere",
        "--ignore-not-found",
    ])?;

    // Refused by the API server as the service would refuse them.
    for (code, why) in [("Health", "keeps for its own paths"), ("ab", "code")] {
        let out = apply(&manifest(ns, "refused", code, "https://example.com"))?;
        ensure!(
            !out.success && out.stderr.contains(why),
            "code {code:?} was not refused as expected: {} {}",
            out.stdout,
            out.stderr
        );
    }
    let out = apply(&manifest(ns, "refused", "abc", "ftp://example.com"))?;
    ensure!(!out.success, "an ftp target was admitted");

    let out = apply(&manifest(
        ns,
        "orphan",
        "orphan-link",
        "https://example.com/o",
    ))?;
    ensure!(out.success, "kubectl apply: {}", out.stderr);
    let client = &ctx.client;
    let links: kube::Api<shortener_operator::shortlink::ShortLink> =
        kube::Api::namespaced(client.clone(), ns);
    let links = &links;
    eventually("the orphan ShortLink reported", TIMEOUT, || async move {
        let link = links.get("orphan").await.map_err(|e| e.to_string())?;
        let holds_finalizer = link
            .metadata
            .finalizers
            .iter()
            .flatten()
            .any(|f| f == "shortener.dev/shortlink");
        let synced = link
            .status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Synced").cloned());
        match synced {
            Some(c)
                if c.status == "False" && c.reason == "ShortenerNotFound" && holds_finalizer =>
            {
                Ok(())
            }
            other => Err(format!("finalizer: {holds_finalizer}, Synced: {other:?}")),
        }
    })
    .await?;
    let table = kubectl(&["-n", ns, "get", "shortlinks"])?;
    ensure!(
        table.contains("orphan-link") && table.contains("ShortenerNotFound"),
        "kubectl get shortlinks:\n{table}"
    );

    let refused = kubectl_refused(&[
        "-n",
        ns,
        "patch",
        "shortlink/orphan",
        "--type=merge",
        "-p",
        r#"{"spec":{"code":"renamed"}}"#,
    ])?;
    ensure!(refused.contains("code is immutable"), "{refused}");

    // No Shortener, so no link to deactivate: the finalizer lets it go at once.
    kubectl(&[
        "-n",
        ns,
        "delete",
        "shortlink/orphan",
        "--wait=true",
        &format!("--timeout={}s", Duration::from_secs(60).as_secs()),
    ])?;
    Ok(())
}
