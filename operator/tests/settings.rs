//! A Shortener the API server admits never yields a service that refuses to start.
//!
//! Every bound, choice and pattern of the generated schema of `spec.app.config`, and
//! every example resource, is rendered by the operator into the app's ConfigMap and
//! parsed by the service's own parser (`ServeConfig::from_variables`, which refuses
//! unknown variables as well as bad values). Values are taken from the schema the API
//! server enforces, not from the settings description it is generated from, so a
//! schema that drifted from the service fails here. (That the API server refuses what
//! lies beyond these bounds is the end-to-end suite's `settings` test.)

use std::collections::BTreeSet;
use std::path::Path;

use kube::CustomResourceExt;
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::TestRunner;
use serde_json::{Value, json};
use shortener::config::ServeConfig;
use shortener_operator::children::{Instance, app};
use shortener_operator::crd::Shortener;
use shortener_operator::render;
use shortener_settings::{Format, Kind, Setting};

fn config_schema() -> Value {
    let crd = serde_json::to_value(Shortener::crd()).expect("the CRD serialises");
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
        ["app"]["properties"]["config"]
        .clone()
}

/// Every leaf of an object schema, by dotted path.
fn leaves(schema: &Value, prefix: &str, out: &mut Vec<(String, Value)>) {
    for (name, child) in schema["properties"].as_object().into_iter().flatten() {
        let path = format!("{prefix}{name}");
        if child["type"] == "object" {
            leaves(child, &format!("{path}."), out);
        } else {
            out.push((path, child.clone()));
        }
    }
}

/// `count` strings matching a schema's `pattern` (anchors aside), deterministically.
fn matching(pattern: &str, count: usize) -> Vec<String> {
    let inner = pattern.trim_start_matches('^').trim_end_matches('$');
    let strategy = proptest::string::string_regex(inner).expect("the pattern is a regex");
    let mut runner = TestRunner::deterministic();
    (0..count)
        .map(|_| {
            strategy
                .new_tree(&mut runner)
                .expect("a value is generated")
                .current()
        })
        .collect()
}

/// Values of one string schema: its default, what its pattern matches, and the
/// described examples of its format.
fn strings(schema: &Value, format: Option<Format>) -> Vec<Value> {
    let mut values: Vec<Value> = schema.get("default").into_iter().cloned().collect();
    if let Some(pattern) = schema["pattern"].as_str() {
        values.extend(matching(pattern, 64).into_iter().map(Value::from));
    }
    match format {
        Some(Format::Pattern { examples, .. }) => values.extend(examples.iter().map(|e| json!(e))),
        Some(Format::Network) => values.extend(
            [
                "10.0.0.0/8",
                "10.1.2.3/8",
                "192.0.2.1",
                "fd00::/8",
                "2001:db8::1",
            ]
            .iter()
            .map(|e| json!(e)),
        ),
        _ => {}
    }
    values
}

/// The values the schema admits at its edges.
fn edge_values(schema: &Value, setting: &Setting) -> Vec<Value> {
    let mut values: Vec<Value> = schema.get("default").into_iter().cloned().collect();
    match schema["type"].as_str() {
        Some(kind @ ("integer" | "number")) => {
            let (Some(min), Some(max)) = (schema["minimum"].as_f64(), schema["maximum"].as_f64())
            else {
                panic!("{}: every number is bounded", setting.env);
            };
            // The CRD's bounds are JSON numbers of any kind; an integer field takes integers.
            let number = |bound: f64| match kind {
                "integer" => json!(bound as i64),
                _ => json!(bound),
            };
            values.extend([number(min), number(max)]);
        }
        Some("boolean") => values.extend([json!(true), json!(false)]),
        Some("string") => match schema["enum"].as_array() {
            Some(choices) => values.extend(choices.iter().cloned()),
            None => {
                let format = match setting.kind {
                    Kind::Text { format, .. } => Some(format),
                    _ => None,
                };
                assert!(
                    format != Some(Format::Any),
                    "{}: free text the service may refuse",
                    setting.env
                );
                values.extend(strings(schema, format));
            }
        },
        Some("array") => {
            let Kind::List { item } = setting.kind else {
                panic!("{} is a list in the schema only", setting.env);
            };
            assert!(schema["maxItems"].is_number(), "{}", setting.env);
            let items = strings(&schema["items"], Some(item));
            values.push(json!([]));
            values.extend(items.iter().map(|item| json!([item])));
            values.push(Value::Array(items));
        }
        other => panic!("{}: unexpected schema type {other:?}", setting.env),
    }
    values
}

/// The app's ConfigMap for `manifest`, as the operator renders it.
fn config_map_of(manifest: &Value) -> Vec<(String, String)> {
    let yaml = serde_yaml::to_string(manifest).expect("YAML");
    let shortener = render::load(&yaml).expect("the operator reads the Shortener");
    let instance = Instance::new(&shortener).expect("an instance");
    app::config_map(&instance)
        .data
        .unwrap_or_default()
        .into_iter()
        .collect()
}

fn service_parses(variables: &[(String, String)]) -> Result<ServeConfig, String> {
    ServeConfig::from_variables(variables.iter().map(|(k, v)| (k.as_str(), v.as_str())))
}

fn with_field(path: &str, value: &Value) -> Value {
    let mut manifest = json!({
        "apiVersion": "shortener.dev/v1alpha1",
        "kind": "Shortener",
        "metadata": { "name": "bounds" },
        "spec": { "app": { "config": {} } },
    });
    let mut node = &mut manifest["spec"]["app"]["config"];
    let steps: Vec<&str> = path.split('.').collect();
    for step in &steps[..steps.len() - 1] {
        node = &mut node[*step];
    }
    node[steps[steps.len() - 1]] = value.clone();
    // The trace settings are written only with an endpoint: give them one.
    if path.starts_with("tracing.") && path != "tracing.endpoint" {
        manifest["spec"]["app"]["config"]["tracing"]["endpoint"] = json!("http://collector:4318");
    }
    manifest
}

#[test]
fn every_field_of_the_schema_is_a_described_setting_and_back() {
    let mut found = Vec::new();
    leaves(&config_schema(), "", &mut found);
    let paths: BTreeSet<&str> = found.iter().map(|(p, _)| p.as_str()).collect();
    for path in &paths {
        assert!(
            Setting::by_field(path).is_some(),
            "spec.app.config.{path} is not in the settings description"
        );
    }
    for setting in shortener_settings::ALL {
        if let Some(path) = setting.field() {
            assert!(paths.contains(path), "{} has no field {path}", setting.env);
            assert!(
                !matches!(setting.kind, Kind::Secret | Kind::Replaced { .. }),
                "{} must not be a field",
                setting.env
            );
        }
    }
}

#[test]
fn every_value_the_schema_admits_at_its_edges_starts_the_service() {
    let mut found = Vec::new();
    leaves(&config_schema(), "", &mut found);
    let mut tried = 0;
    for (path, schema) in &found {
        let setting = Setting::by_field(path).expect("a described setting");
        for value in edge_values(schema, setting) {
            let variables = config_map_of(&with_field(path, &value));
            let empty = value.as_array().is_some_and(Vec::is_empty);
            assert!(
                empty || variables.iter().any(|(k, _)| k == setting.env),
                "{path} = {value} is not in the ConfigMap"
            );
            if let Err(problem) = service_parses(&variables) {
                panic!("spec.app.config.{path} = {value}: the service refuses it: {problem}");
            }
            tried += 1;
        }
    }
    assert!(tried > 100, "only {tried} values tried");
}

#[test]
fn every_example_and_the_empty_spec_start_the_service() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/examples");
    // The Shorteners: `links/` holds ShortLink examples (tests/shortlink.rs reads them).
    let mut manifests: Vec<Value> = std::fs::read_dir(&examples)
        .expect("the examples are readable")
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.is_file())
        .map(|path| {
            let text = std::fs::read_to_string(&path).expect("an example is readable");
            serde_yaml::from_str(&text).expect("an example is YAML")
        })
        .collect();
    assert!(manifests.len() >= 3);
    manifests.push(with_field("authMode", &json!("api-key")));
    for manifest in manifests {
        let variables = config_map_of(&manifest);
        service_parses(&variables).unwrap_or_else(|problem| {
            panic!("{}: {problem}", manifest["metadata"]["name"]);
        });
    }
}

/// The Ingress host becomes the service's `PUBLIC_BASE_URL`: every host the schema admits
/// is one the service's URL parser takes, with and without TLS.
#[test]
fn every_ingress_host_the_schema_admits_starts_the_service() {
    let crd = serde_json::to_value(Shortener::crd()).expect("the CRD serialises");
    let host = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
        ["ingress"]["properties"]["host"];
    let pattern = host["pattern"].as_str().expect("the host has a pattern");
    let mut hosts = matching(pattern, 64);
    hosts.extend(["sho.rt", "links.example.com", "a-b.c-d.io"].map(String::from));
    for host in hosts {
        for tls in [None, Some("tls")] {
            let mut manifest = with_field("authMode", &json!("api-key"));
            manifest["spec"]["ingress"] = json!({ "host": host, "tlsSecretName": tls });
            let variables = config_map_of(&manifest);
            assert!(variables.iter().any(|(k, _)| k == "PUBLIC_BASE_URL"));
            if let Err(problem) = service_parses(&variables) {
                panic!("ingress.host = {host}: the service refuses it: {problem}");
            }
        }
    }
}

/// The HTTPRoute's first hostname becomes `PUBLIC_BASE_URL` the same way: every hostname the
/// schema admits is one the service's URL parser takes, in either scheme.
#[test]
fn every_route_hostname_the_schema_admits_starts_the_service() {
    let crd = serde_json::to_value(Shortener::crd()).expect("the CRD serialises");
    let hostnames = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
        ["properties"]["httpRoute"]["properties"]["hostnames"];
    let pattern = hostnames["items"]["pattern"]
        .as_str()
        .expect("the hostnames have a pattern");
    let mut hosts = matching(pattern, 64);
    hosts.extend(["sho.rt", "links.example.com", "a-b.c-d.io"].map(String::from));
    for host in hosts {
        for scheme in ["https", "http"] {
            let mut manifest = with_field("authMode", &json!("api-key"));
            manifest["spec"]["httpRoute"] = json!({
                "parentRefs": [{ "name": "public" }],
                "hostnames": [host],
                "scheme": scheme,
            });
            let variables = config_map_of(&manifest);
            assert!(
                variables
                    .iter()
                    .any(|(k, v)| k == "PUBLIC_BASE_URL" && v == &format!("{scheme}://{host}"))
            );
            if let Err(problem) = service_parses(&variables) {
                panic!("httpRoute.hostnames = [{host}]: the service refuses it: {problem}");
            }
        }
    }
}

#[test]
fn the_typed_choices_of_the_crd_are_the_described_ones() {
    use shortener_operator::crd::AuthMode;
    let Kind::Choice { choices, default } = shortener_settings::AUTH_MODE.kind else {
        panic!("AUTH_MODE is a choice");
    };
    let typed: Vec<&str> = [AuthMode::ApiKey, AuthMode::Open]
        .iter()
        .map(|m| m.as_str())
        .collect();
    assert_eq!(typed, choices);
    assert_eq!(AuthMode::default().as_str(), default);
}
