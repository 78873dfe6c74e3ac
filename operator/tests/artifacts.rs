//! Checks of the committed artefacts: the generated CRD copies, the example resources
//! (schema and CEL rules) and snapshots of what `render` produces for each example.

use std::path::{Path, PathBuf};

use kube::CustomResourceExt;
use kube::core::cel::Validator;
use serde_json::{Value, json};
use shortener_operator::crd::Shortener;
use shortener_operator::render;
use shortener_operator::shortlink::ShortLink;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("operator/ lives in the repository")
        .to_path_buf()
}

fn read(relative: &str) -> String {
    let path = repo_root().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

const EXAMPLES: [&str; 5] = [
    "minimal",
    "full",
    "external-database",
    "gateway",
    "cloudnative-pg",
];

fn example(name: &str) -> String {
    read(&format!("manifests/examples/{name}.yaml"))
}

fn schema() -> Value {
    let crd = serde_json::to_value(Shortener::crd()).expect("CRD serializes");
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

#[test]
fn committed_crds_match_the_generated_ones() {
    let shortener = serde_yaml::to_string(&Shortener::crd()).unwrap();
    let link = serde_yaml::to_string(&ShortLink::crd()).unwrap();
    let regenerate = "regenerate with `cargo run -p shortener-operator -- crd` (scripts/check-operator.sh --update)";
    assert!(
        read("manifests/crd.yaml") == format!("{shortener}---\n{link}"),
        "manifests/crd.yaml is stale: {regenerate}"
    );
    for (copy, generated) in [
        (
            "charts/shortener-operator/crds/shortener.dev_shorteners.yaml",
            &shortener,
        ),
        (
            "charts/shortener-operator/crds/shortener.dev_shortlinks.yaml",
            &link,
        ),
    ] {
        assert!(read(copy) == *generated, "{copy} is stale: {regenerate}");
    }
}

/// Structural validation as the API server does it, limited to what the CRD uses: types,
/// enums, bounds, required fields and, above all, unknown fields (which the API server would
/// silently drop, hiding typos in the examples).
fn check(schema: &Value, value: &Value, path: &str, errors: &mut Vec<String>) {
    if value.is_null() && schema["nullable"] == json!(true) {
        return;
    }
    if schema["x-kubernetes-int-or-string"] == json!(true) {
        if !(value.is_string() || value.is_i64() || value.is_u64()) {
            errors.push(format!("{path}: expected int or string"));
        }
        return;
    }
    if let Some(allowed) = schema["enum"].as_array()
        && !allowed.contains(value)
    {
        errors.push(format!("{path}: {value} is not one of {allowed:?}"));
    }
    match schema["type"].as_str() {
        Some("object") => {
            let Some(object) = value.as_object() else {
                errors.push(format!("{path}: expected object"));
                return;
            };
            for required in schema["required"].as_array().into_iter().flatten() {
                let key = required.as_str().unwrap_or_default();
                if !object.contains_key(key) {
                    errors.push(format!("{path}.{key}: required"));
                }
            }
            let properties = schema["properties"].as_object();
            for (key, child) in object {
                let child_path = format!("{path}.{key}");
                match properties.and_then(|p| p.get(key)) {
                    Some(child_schema) => check(child_schema, child, &child_path, errors),
                    None if schema["additionalProperties"].is_object() => {
                        check(&schema["additionalProperties"], child, &child_path, errors)
                    }
                    None if schema["x-kubernetes-preserve-unknown-fields"] == json!(true) => {}
                    None => errors.push(format!("{child_path}: unknown field")),
                }
            }
        }
        Some("array") => match value.as_array() {
            Some(items) => {
                for (i, item) in items.iter().enumerate() {
                    check(&schema["items"], item, &format!("{path}[{i}]"), errors);
                }
            }
            None => errors.push(format!("{path}: expected array")),
        },
        Some("string") if !value.is_string() => errors.push(format!("{path}: expected string")),
        Some("boolean") if !value.is_boolean() => errors.push(format!("{path}: expected boolean")),
        Some("integer") => match value.as_f64() {
            Some(n) if value.is_i64() || value.is_u64() => {
                if schema["minimum"].as_f64().is_some_and(|min| n < min)
                    || schema["maximum"].as_f64().is_some_and(|max| n > max)
                {
                    errors.push(format!("{path}: {n} out of range"));
                }
            }
            _ => errors.push(format!("{path}: expected integer")),
        },
        _ => {}
    }
}

fn structural_errors(object: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    let mut body = object.clone();
    // metadata is validated by the API server itself, not by the CRD schema.
    if let Some(map) = body.as_object_mut() {
        map.remove("metadata");
        map.remove("apiVersion");
        map.remove("kind");
    }
    check(&schema(), &body, "", &mut errors);
    errors
}

fn example_json(name: &str) -> Value {
    serde_yaml::from_str(&example(name)).expect("example is YAML")
}

#[test]
fn examples_match_the_crd_schema_and_cel_rules() {
    for name in EXAMPLES {
        let object = example_json(name);
        assert_eq!(object["apiVersion"], "shortener.dev/v1alpha1", "{name}");
        assert_eq!(object["kind"], "Shortener", "{name}");
        let errors = structural_errors(&object);
        assert!(errors.is_empty(), "{name}: {errors:?}");
        Validator::new()
            .validate(&schema(), &object, None)
            .unwrap_or_else(|e| panic!("{name}: {e:?}"));
        // Updating to itself passes the transition rules.
        Validator::new()
            .validate(&schema(), &object, Some(&object))
            .unwrap_or_else(|e| panic!("{name}: {e:?}"));
    }
}

#[test]
fn the_schema_check_catches_typos() {
    let mut object = example_json("minimal");
    object["spec"] = json!({ "app": { "replica": 2 }, "pgbouncer": { "poolMode": "sometimes" } });
    let errors = structural_errors(&object);
    assert!(
        errors
            .iter()
            .any(|e| e.contains(".spec.app.replica: unknown field")),
        "{errors:?}"
    );
    assert!(errors.iter().any(|e| e.contains("poolMode")), "{errors:?}");
    object["spec"] = json!({ "app": { "replicas": 1000 } });
    assert!(!structural_errors(&object).is_empty());
}

fn with_storage(size: &str, class: Option<&str>) -> Value {
    let mut object = example_json("minimal");
    let mut storage = json!({ "size": size });
    if let Some(class) = class {
        storage["storageClassName"] = json!(class);
    }
    object["spec"]["database"] = json!({ "postgres": { "storage": storage } });
    object
}

fn rejection(new: &Value, old: Option<&Value>) -> String {
    match Validator::new().validate(&schema(), new, old) {
        Ok(()) => String::new(),
        Err(errors) => errors
            .as_slice()
            .iter()
            .map(|e| e.message.clone())
            .collect::<Vec<_>>()
            .join("; "),
    }
}

#[test]
fn cel_rules_guard_storage_and_database_changes() {
    let old = with_storage("2Gi", Some("standard"));
    assert_eq!(
        rejection(&with_storage("5Gi", Some("standard")), Some(&old)),
        ""
    );
    assert!(
        rejection(&with_storage("1Gi", Some("standard")), Some(&old))
            .contains("may grow but not shrink")
    );
    assert!(
        rejection(&with_storage("2048Mi", Some("standard")), Some(&old)).is_empty(),
        "equal quantities in other units are not a shrink"
    );
    assert!(
        rejection(&with_storage("2Gi", Some("fast")), Some(&old))
            .contains("storageClassName is immutable")
    );
    assert!(
        rejection(&with_storage("2Gi", None), Some(&old)).contains("storageClassName is immutable")
    );

    let mut both = example_json("minimal");
    both["spec"]["database"] = json!({
        "postgres": {},
        "external": { "secretName": "pg" },
    });
    assert!(rejection(&both, None).contains("at most one of"));
    both["spec"]["database"] = json!({ "postgres": {}, "cloudNativePG": {} });
    assert!(rejection(&both, None).contains("at most one of"));

    let external = example_json("external-database");
    let mut embedded = external.clone();
    embedded["spec"]["database"] = json!({ "postgres": {} });
    assert!(rejection(&embedded, Some(&external)).contains("not supported"));
    let cnpg = example_json("cloudnative-pg");
    embedded["spec"]["database"] = json!({ "postgres": {} });
    assert!(rejection(&embedded, Some(&cnpg)).contains("not supported"));
    assert!(rejection(&cnpg, Some(&embedded)).contains("not supported"));
    assert!(rejection(&cnpg, Some(&cnpg)).is_empty());

    let mut upgraded = with_storage("2Gi", Some("standard"));
    upgraded["spec"]["database"]["postgres"]["version"] = json!("18");
    assert!(rejection(&upgraded, Some(&old)).contains("version is immutable"));
}

fn with_redis(redis: Value) -> Value {
    let mut object = example_json("minimal");
    object["spec"]["redis"] = redis;
    object
}

/// Redis's `maxmemory` must leave a fifth of the default memory limit (96Mi) to Redis itself
/// when `redis.resources` is not set; with resources of their own, it is the user's to size.
#[test]
fn redis_maxmemory_leaves_room_under_the_default_limit() {
    let refused = |redis: Value| rejection(&with_redis(redis), None);
    let message = "at most 80% of the Redis container's default memory limit";
    // 80% of 96Mi is 76.8Mi.
    for admitted in [
        json!({}),
        json!({ "maxMemory": "48mb" }),
        json!({ "maxMemory": "76mb" }),
        json!({ "maxMemory": "78643kb" }),
        json!({ "maxMemory": "80530636b" }),
        // An external Redis: nothing of ours to fit.
        json!({ "maxMemory": "8gb", "external": { "secretName": "redis" } }),
        json!({ "maxMemory": "200mb", "resources": { "limits": { "memory": "256Mi" } } }),
    ] {
        assert_eq!(refused(admitted.clone()), "", "{admitted}");
    }
    for too_big in [
        json!({ "maxMemory": "77mb" }),
        json!({ "maxMemory": "1gb" }),
        json!({ "maxMemory": "80530637b" }),
        json!({ "maxMemory": "78644kb" }),
    ] {
        assert!(refused(too_big.clone()).contains(message), "{too_big}");
    }
}

/// `spec: {}` stands for 1Gi of the default class and PostgreSQL 17: the rules must hold
/// against those defaults too (found on a real API server, where a rule on
/// `database.postgres.storage` is skipped when the old object has no `postgres`).
#[test]
fn cel_rules_guard_the_defaults_of_an_empty_spec() {
    let defaults = example_json("minimal");
    assert!(
        rejection(&with_storage("500Mi", None), Some(&defaults))
            .contains("may grow but not shrink")
    );
    assert!(rejection(&with_storage("1Gi", None), Some(&defaults)).is_empty());
    assert!(rejection(&with_storage("2Gi", None), Some(&defaults)).is_empty());
    assert!(
        rejection(&with_storage("1Gi", Some("fast")), Some(&defaults))
            .contains("storageClassName is immutable")
    );
    let mut upgraded = example_json("minimal");
    upgraded["spec"]["database"] = json!({ "postgres": { "version": "18" } });
    assert!(rejection(&upgraded, Some(&defaults)).contains("version is immutable"));
    let mut same = example_json("minimal");
    same["spec"]["database"] = json!({ "postgres": { "version": "17" } });
    assert!(rejection(&same, Some(&defaults)).is_empty());
}

#[test]
fn render_output_matches_snapshots() {
    for name in EXAMPLES {
        let shortener = render::load(&example(name)).unwrap();
        let output = render::render(&shortener).unwrap();
        insta::assert_snapshot!(format!("render-{name}"), output);
    }
}

#[test]
fn rendered_documents_are_complete_objects() {
    for name in EXAMPLES {
        let shortener = render::load(&example(name)).unwrap();
        let output = render::render(&shortener).unwrap();
        for document in output.split("---\n").filter(|d| !d.trim().is_empty()) {
            let object: Value = serde_yaml::from_str(document).unwrap();
            for key in ["apiVersion", "kind"] {
                assert!(object[key].is_string(), "{name}: {document}");
            }
            assert!(object["metadata"]["name"].is_string());
            assert!(object["metadata"]["namespace"].is_string());
            assert_eq!(
                object["metadata"]["labels"]["app.kubernetes.io/managed-by"],
                "shortener-operator"
            );
        }
    }
}

/// Every field of a CRD's schema as one line (`path: type`, with its default), each allowed
/// enum value and each object's required fields as lines of their own. A change that removes
/// or alters a line breaks stored objects or manifests written for the served version; one
/// that only adds lines (a new optional field, a new allowed value) does not.
fn field_lines(schema: &Value, path: &str, out: &mut std::collections::BTreeSet<String>) {
    let kind = schema["type"].as_str().unwrap_or("any");
    let mut line = format!("{path}: {kind}");
    if let Some(default) = schema.get("default") {
        line.push_str(&format!(" = {default}"));
    }
    out.insert(line);
    for value in schema["enum"].as_array().into_iter().flatten() {
        out.insert(format!("{path} may be {value}"));
    }
    let required: Vec<&str> = schema["required"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if !required.is_empty() {
        out.insert(format!("{path} requires {}", required.join(", ")));
    }
    if let Some(properties) = schema["properties"].as_object() {
        for (name, property) in properties {
            field_lines(property, &format!("{path}.{name}"), out);
        }
    }
    if schema["items"].is_object() {
        field_lines(&schema["items"], &format!("{path}[]"), out);
    }
    if schema["additionalProperties"].is_object() {
        field_lines(&schema["additionalProperties"], &format!("{path}{{}}"), out);
    }
}

/// The compatibility gate of the served version (docs/decisions.md, "The CRDs' versions"):
/// the committed field lists (operator/tests/crd-fields/) must still all hold. New fields
/// are recorded with `UPDATE_CRD_FIELDS=1`; a breaking change is refused unless
/// `CRD_BREAKING_CHANGE` says why (and then it belongs in a new API version).
#[test]
fn crd_changes_are_additive() {
    for (name, crd) in [
        (
            "shorteners",
            serde_json::to_value(Shortener::crd()).unwrap(),
        ),
        (
            "shortlinks",
            serde_json::to_value(ShortLink::crd()).unwrap(),
        ),
    ] {
        let version = &crd["spec"]["versions"][0];
        let mut now = std::collections::BTreeSet::new();
        field_lines(&version["schema"]["openAPIV3Schema"], "$", &mut now);
        let relative = format!(
            "operator/tests/crd-fields/{name}.{}.txt",
            version["name"].as_str().unwrap()
        );
        let committed: std::collections::BTreeSet<String> = read(&relative)
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(String::from)
            .collect();
        let broken: Vec<&String> = committed.difference(&now).collect();
        let added: Vec<&String> = now.difference(&committed).collect();
        let update = std::env::var_os("UPDATE_CRD_FIELDS").is_some();
        let reason = std::env::var("CRD_BREAKING_CHANGE").ok();
        assert!(
            broken.is_empty() || reason.is_some(),
            "{relative}: breaking changes to a served version (removed, retyped, or a new \
             default or requirement): {broken:#?}; a new API version is the way \
             (docs/decisions.md), or set CRD_BREAKING_CHANGE to the reason with UPDATE_CRD_FIELDS=1"
        );
        if update && (!added.is_empty() || !broken.is_empty()) {
            let header = "# Every field of the served version's schema (operator/tests/artifacts.rs, \
                          crd_changes_are_additive): lines may be added, never removed or changed.\n";
            let body: Vec<&str> = now.iter().map(String::as_str).collect();
            std::fs::write(
                repo_root().join(&relative),
                format!("{header}{}\n", body.join("\n")),
            )
            .unwrap();
            continue;
        }
        assert!(
            added.is_empty(),
            "{relative}: new fields, not recorded yet (run the test with UPDATE_CRD_FIELDS=1): {added:#?}"
        );
    }
}
