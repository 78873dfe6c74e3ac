//! The API server enforces the service's own ranges on `spec.app.config`: every
//! described setting's bounds, choices and formats are admitted at their edges and
//! refused just beyond them (server-side dry runs: nothing is stored). That what it
//! admits the service parses is `operator/tests/settings.rs`.

use kube::Api;
use kube::api::{ApiResource, DynamicObject, PostParams};
use kube::core::GroupVersionKind;
use serde_json::{Value, json};
use shortener_settings::{Format, Kind};

use crate::cluster::Result;
use crate::{Ctx, ensure};

/// Whether the API server would create a Shortener with `config` (and `pgbouncer`).
async fn admitted(api: &Api<DynamicObject>, ar: &ApiResource, spec: Value) -> Result<bool> {
    let mut object = DynamicObject::new("bounds", ar);
    object.data = json!({ "spec": spec });
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    match api.create(&dry_run, &object).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 422 => Ok(false),
        Err(other) => Err(other.into()),
    }
}

/// `{ "app": { "config": { a: { b: value } } } }` for the path `a.b`.
fn config_at(path: &str, value: Value) -> Value {
    let config = path
        .rsplit('.')
        .fold(value, |inner, step| json!({ step: inner }));
    json!({ "app": { "config": config } })
}

/// Values the schema must admit, and values it must refuse, for one setting.
fn cases(kind: Kind) -> (Vec<Value>, Vec<Value>) {
    match kind {
        Kind::Integer { min, max, .. } => {
            let mut refused = vec![json!(max + 1), json!("1")];
            refused.push(if min > 0 { json!(min - 1) } else { json!(-1) });
            (vec![json!(min), json!(max)], refused)
        }
        Kind::Ratio { .. } => (
            vec![json!(0), json!(0.5), json!(1)],
            vec![json!(-0.1), json!(1.5)],
        ),
        Kind::Flag { .. } => (vec![json!(true), json!(false)], vec![json!("yes")]),
        Kind::Choice { choices, .. } => (
            choices.iter().map(|c| json!(c)).collect(),
            vec![json!("none-of-these")],
        ),
        Kind::Text { format, .. } => {
            let (good, bad) = format_cases(format);
            (good, bad)
        }
        Kind::List { item } => {
            let (good, bad) = format_cases(item);
            (
                vec![json!([]), Value::Array(good)],
                bad.into_iter().map(|b| json!([b])).collect(),
            )
        }
        Kind::Secret | Kind::Replaced { .. } => (vec![], vec![]),
    }
}

fn format_cases(format: Format) -> (Vec<Value>, Vec<Value>) {
    match format {
        Format::Any => (vec![], vec![]),
        Format::Pattern { examples, .. } => (
            examples.iter().map(|e| json!(e)).collect(),
            vec![json!("has space"), json!("a,b"), json!("")],
        ),
        Format::Network => (
            vec![json!("10.0.0.0/8"), json!("192.0.2.1"), json!("fd00::/8")],
            vec![
                json!("10.0.0.0/33"),
                json!("ingress-nginx"),
                json!("10.0.0.0/8,192.0.2.1"),
            ],
        ),
    }
}

pub async fn the_api_server_admits_exactly_the_described_ranges(ctx: &Ctx) -> Result {
    let ar = ApiResource::from_gvk(&GroupVersionKind::gvk(
        "shortener.dev",
        "v1alpha1",
        "Shortener",
    ));
    let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), &ctx.ns, &ar);
    let mut checked = 0;
    for setting in shortener_settings::ALL {
        let Some(path) = setting.field() else {
            continue;
        };
        let (good, bad) = cases(setting.kind);
        for value in good {
            ensure!(
                admitted(&api, &ar, config_at(path, value.clone())).await?,
                "spec.app.config.{path} = {value} ({}) was refused",
                setting.env
            );
            checked += 1;
        }
        for value in bad {
            ensure!(
                !admitted(&api, &ar, config_at(path, value.clone())).await?,
                "spec.app.config.{path} = {value} ({}) was admitted",
                setting.env
            );
            checked += 1;
        }
    }
    // The service runs under transaction pooling only (docs/decisions.md).
    for (mode, expected) in [
        ("transaction", true),
        ("session", false),
        ("statement", false),
    ] {
        let spec = json!({ "pgbouncer": { "poolMode": mode } });
        ensure!(
            admitted(&api, &ar, spec).await? == expected,
            "pgbouncer.poolMode {mode}: expected admitted = {expected}"
        );
    }
    ensure!(checked > 100, "only {checked} values checked");
    Ok(())
}
