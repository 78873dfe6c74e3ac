//! The OpenAPI document a client generator builds on: every path parameter
//! declared, every status an operation can answer documented, the bearer key
//! on every management operation and on nothing public.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::Value;
use shortener::http::ApiDoc;
use utoipa::OpenApi;

fn document() -> Value {
    serde_json::to_value(ApiDoc::openapi()).unwrap()
}

const METHODS: [&str; 6] = ["get", "put", "post", "delete", "patch", "head"];
/// The operations anyone may call; every other one must be in the
/// management route table (so a new route cannot be public by omission).
const PUBLIC: [(&str, &str); 5] = [
    ("get", "/health"),
    ("get", "/livez"),
    ("get", "/readyz"),
    ("get", "/{short_code}"),
    // A protected link's password form.
    ("post", "/{short_code}"),
];

fn is_management(path: &str, method: &str) -> bool {
    shortener::http::routes::MANAGEMENT
        .iter()
        .any(|r| r.path == path && r.method.as_str().eq_ignore_ascii_case(method))
}
const PROBES: [&str; 2] = ["/livez", "/readyz"];

/// Every operation as (path, method, operation).
fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut all = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in METHODS {
            if let Some(op) = item.get(method) {
                all.push((path.clone(), method.to_owned(), op.clone()));
            }
        }
    }
    assert!(all.len() >= 20, "only {} operations", all.len());
    all
}

fn statuses(op: &Value) -> Vec<String> {
    op["responses"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect()
}

#[test]
fn every_path_template_parameter_is_declared() {
    let doc = document();
    for (path, method, op) in operations(&doc) {
        let declared: Vec<&str> = op["parameters"]
            .as_array()
            .map(|ps| {
                ps.iter()
                    .filter(|p| p["in"] == "path")
                    .map(|p| p["name"].as_str().unwrap())
                    .collect()
            })
            .unwrap_or_default();
        let in_template: Vec<&str> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
            .collect();
        let mut a = declared.clone();
        let mut b = in_template.clone();
        a.sort_unstable();
        b.sort_unstable();
        assert_eq!(a, b, "{method} {path}: path parameters");
        for p in op["parameters"].as_array().into_iter().flatten() {
            if p["in"] == "path" {
                assert_eq!(p["required"], true, "{method} {path}: {p}");
                assert!(p["schema"].is_object(), "{method} {path}: {p}");
            }
        }
    }
}

#[test]
fn every_operation_documents_its_errors() {
    let doc = document();
    for (path, method, op) in operations(&doc) {
        let statuses = statuses(&op);
        let has = |s: &str| statuses.iter().any(|x| x == s);
        assert!(
            statuses
                .iter()
                .any(|s| s.starts_with('2') || s.starts_with('3')),
            "{method} {path}: no success status"
        );
        if PROBES.contains(&path.as_str()) {
            continue;
        }
        for s in ["500", "503"] {
            assert!(has(s), "{method} {path}: no {s}");
        }
        if path.contains("{id}") || path == "/{short_code}" {
            assert!(has("404"), "{method} {path}: no 404");
        }
        if op.get("requestBody").is_some() {
            assert!(has("400"), "{method} {path}: a body but no 400");
            assert!(has("413"), "{method} {path}: a body but no 413");
        }
        if op["parameters"]
            .as_array()
            .is_some_and(|ps| ps.iter().any(|p| p["name"] == "page"))
        {
            assert!(has("400"), "{method} {path}: paging but no 400");
        }
        // Every error response is the one error body.
        for (status, response) in op["responses"].as_object().unwrap() {
            if status.starts_with('4') || (status.starts_with('5') && path != "/health") {
                assert_eq!(
                    response["content"]["application/json"]["schema"]["$ref"],
                    "#/components/schemas/ErrorBody",
                    "{method} {path} {status}"
                );
            }
        }
    }
}

#[test]
fn management_operations_need_the_key_and_public_ones_do_not() {
    let doc = document();
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    for (path, method, op) in operations(&doc) {
        let management = is_management(&path, &method);
        assert!(
            management || PUBLIC.contains(&(method.as_str(), path.as_str())),
            "{method} {path} is neither public nor in the management route table"
        );
        let statuses = statuses(&op);
        if management {
            assert_eq!(
                op["security"],
                serde_json::json!([{"bearer": []}]),
                "{method} {path}"
            );
            for s in ["401", "429"] {
                assert!(statuses.contains(&s.to_owned()), "{method} {path}: no {s}");
            }
            let unauthorized = &op["responses"]["401"]["headers"];
            assert!(
                unauthorized.get("WWW-Authenticate").is_some(),
                "{method} {path}"
            );
        } else {
            assert!(op.get("security").is_none(), "{method} {path} is public");
            // A public operation's 401 is never the key's: only a protected link's.
            if statuses.contains(&"401".to_owned()) {
                assert_eq!(path, "/{short_code}", "{method} {path}");
                let challenge = &op["responses"]["401"]["headers"]["WWW-Authenticate"];
                assert!(
                    challenge["description"]
                        .as_str()
                        .is_some_and(|d| d.contains("Link-Password")),
                    "{method} {path}"
                );
            }
        }
    }
}

#[test]
fn every_management_route_is_documented_with_its_limit() {
    let doc = document();
    for route in shortener::http::routes::MANAGEMENT {
        let method = route.method.as_str().to_ascii_lowercase();
        let op = &doc["paths"][route.path][&method];
        assert!(op.is_object(), "{method} {} is not documented", route.path);
        let too_many = op["responses"]["429"]["description"].as_str().unwrap();
        let limit = match route.class {
            shortener::limits::Class::Create => "creation limit",
            _ => "management limit",
        };
        assert!(
            too_many.contains(limit),
            "{method} {}: {too_many}",
            route.path
        );
    }
}

#[test]
fn operation_ids_are_unique() {
    let doc = document();
    let mut ids: Vec<String> = operations(&doc)
        .iter()
        .map(|(_, _, op)| op["operationId"].as_str().unwrap().to_owned())
        .collect();
    let count = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), count, "{ids:?}");
}

#[test]
fn paging_and_bodies_carry_the_parsers_rules() {
    let doc = document();
    let params = doc["paths"]["/users"]["get"]["parameters"]
        .as_array()
        .unwrap();
    let param = |name: &str| params.iter().find(|p| p["name"] == name).unwrap();
    assert_eq!(param("page")["schema"]["minimum"], 1);
    assert_eq!(param("page")["schema"]["maximum"], 10_001);
    assert_eq!(param("per_page")["schema"]["minimum"], 1);
    assert!(param("after_id")["schema"].is_object());

    let schemas = &doc["components"]["schemas"];
    let create_user = &schemas["CreateUser"];
    assert_eq!(
        create_user["required"],
        serde_json::json!(["username", "email"])
    );
    assert!(create_user["properties"]["username"]["pattern"].is_string());
    // `url` is an alias of `original_url`: exactly one of them.
    let create_url = &schemas["CreateUrl"]["allOf"];
    assert!(create_url[0]["properties"]["url"]["pattern"].is_string());
    assert_eq!(
        create_url[1]["oneOf"],
        serde_json::json!([
            {"type": "object", "required": ["original_url"]},
            {"type": "object", "required": ["url"]}
        ])
    );
    // An update names at least one field.
    assert!(schemas["UpdateUser"]["allOf"][1]["anyOf"].is_array());
    assert!(schemas["UpdateUrl"]["allOf"][1]["anyOf"].is_array());
    // `details` is an object.
    let details = &schemas["CreateEvent"]["properties"]["details"]["type"];
    assert_eq!(details, &serde_json::json!(["object", "null"]));
    assert_eq!(schemas["UsersUpload"]["additionalProperties"], false);
}
