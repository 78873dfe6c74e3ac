//! The ShortLink resource against the service it feeds: its schema and CEL rules admit what
//! the service accepts and refuse what it refuses (codes, reserved words, rules), and the
//! body the sync sends is one the service's own types read.

use kube::CustomResourceExt;
use kube::core::cel::Validator;
use serde_json::{Value, json};
use shortener::domain::{Rule, ShortCode};
use shortener_operator::shortlink::crd::{CODE_PATTERN, RESERVED_CODES};
use shortener_operator::shortlink::sync::declared;
use shortener_operator::shortlink::{ShortLink, ShortLinkSpec};

fn schema() -> Value {
    let crd = serde_json::to_value(ShortLink::crd()).expect("CRD serializes");
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

fn examples() -> Vec<Value> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../manifests/examples/links/go-links.yaml"
    );
    let text = std::fs::read_to_string(path).expect("the example exists");
    text.split("\n---\n")
        .map(|doc| serde_yaml::from_str(doc).expect("example is YAML"))
        .collect()
}

fn link(spec: Value) -> Value {
    json!({
        "apiVersion": "shortener.dev/v1alpha1",
        "kind": "ShortLink",
        "metadata": { "name": "x", "namespace": "default" },
        "spec": spec,
    })
}

fn refusal(new: &Value, old: Option<&Value>) -> String {
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
fn the_reserved_words_are_the_services() {
    assert_eq!(RESERVED_CODES, ShortCode::RESERVED);
}

#[test]
fn the_code_rules_admit_what_the_service_accepts() {
    let pattern = regex::Regex::new(CODE_PATTERN).unwrap();
    let samples = [
        "ab",
        "abc",
        "go-links",
        "Quick_1",
        "a.b",
        "héllo",
        "with space",
        "HEALTH",
        "Urls",
        "v1",
        "v3",
        "metrics",
        "x123456789012345678901234567890yz",
        "x12345678901234567890123456789012",
    ];
    for code in samples {
        let admitted = pattern.is_match(code)
            && refusal(
                &link(json!({ "shortener": "links", "code": code, "target": "https://e.com" })),
                None,
            )
            .is_empty();
        assert_eq!(
            admitted,
            ShortCode::parse(code).is_ok(),
            "{code}: the CRD and the service disagree"
        );
    }
}

#[test]
fn examples_pass_the_schema_and_the_sync_body_reads_as_the_service_reads_it() {
    for object in examples() {
        assert_eq!(refusal(&object, None), "", "{object}");
        assert_eq!(refusal(&object, Some(&object)), "", "{object}");
        let spec: ShortLinkSpec = serde_json::from_value(object["spec"].clone()).unwrap();
        let body = declared(&spec);
        let rules: Vec<Rule> = serde_json::from_value(body["rules"].clone())
            .unwrap_or_else(|e| panic!("the service cannot read the rules: {e}: {body}"));
        assert_eq!(rules.len(), spec.rules.len());
        if let Some(expires) = body["expires_at"].as_str() {
            shortener::domain::timestamp::parse_instant(expires)
                .unwrap_or_else(|e| panic!("the service cannot read the expiry: {e}"));
        }
    }
}

#[test]
fn code_and_shortener_are_immutable_and_rules_need_a_condition() {
    let old = link(json!({ "shortener": "links", "code": "abc", "target": "https://e.com" }));
    let renamed = link(json!({ "shortener": "links", "code": "abd", "target": "https://e.com" }));
    assert!(refusal(&renamed, Some(&old)).contains("code is immutable"));
    let moved = link(json!({ "shortener": "other", "code": "abc", "target": "https://e.com" }));
    assert!(refusal(&moved, Some(&old)).contains("shortener is immutable"));
    let retargeted =
        link(json!({ "shortener": "links", "code": "abc", "target": "https://f.com" }));
    assert_eq!(refusal(&retargeted, Some(&old)), "");
    let bare_rule = link(json!({
        "shortener": "links", "code": "abc", "target": "https://e.com",
        "rules": [{ "target": "https://f.com" }],
    }));
    assert!(refusal(&bare_rule, None).contains("at least one of"));
    let bad_type = link(json!({
        "shortener": "links", "code": "abc", "target": "https://e.com", "redirectType": 303,
    }));
    assert!(refusal(&bad_type, None).contains("redirectType"));
}
