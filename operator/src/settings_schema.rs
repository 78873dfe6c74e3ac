//! The schema of a Shortener's `spec.app.config`, from the settings description
//! the service's own parser uses (crate `shortener-settings`): each field's bounds,
//! choices, pattern, default and description are the service's, so the API server
//! admits only values the service starts with. The types in `crd.rs` only name the
//! fields; a test there proves that every field is a described setting and every
//! described setting a field.

use schemars::Schema;
use serde_json::{Map, Value, json};
use shortener_settings::{Format, Kind, Setting};

/// Most entries a list setting takes (each is one comma-separated item of a variable).
const MAX_LIST_ITEMS: u64 = 256;
/// Longest item of a list, and of a pattern-checked text (a DNS name is at most 253).
const MAX_TEXT_LENGTH: u64 = 2048;
/// Longest IP address or CIDR network (an IPv6 address with a prefix length).
const MAX_NETWORK_LENGTH: u64 = 43;

pub fn app_config(schema: &mut Schema) {
    describe(schema, "");
}
pub fn cache(schema: &mut Schema) {
    describe(schema, "cache.");
}
pub fn redis(schema: &mut Schema) {
    describe(schema, "redis.");
}
pub fn clicks(schema: &mut Schema) {
    describe(schema, "clicks.");
}
pub fn rate_limit(schema: &mut Schema) {
    describe(schema, "rateLimit.");
}
pub fn tracing(schema: &mut Schema) {
    describe(schema, "tracing.");
}

/// Gives each property of an object schema whose path (after `prefix`) is a
/// described setting that setting's rules; the other properties are groups of
/// settings, which default to an empty object so that the API server fills in
/// their fields' defaults.
fn describe(schema: &mut Schema, prefix: &str) {
    let Some(properties) = schema.get_mut("properties").and_then(Value::as_object_mut) else {
        return;
    };
    for (name, property) in properties.iter_mut() {
        let Some(property) = property.as_object_mut() else {
            continue;
        };
        match Setting::by_field(&format!("{prefix}{name}")) {
            Some(setting) => describe_field(property, setting),
            None => {
                property.insert("default".into(), json!({}));
            }
        }
    }
}

fn describe_field(field: &mut Map<String, Value>, setting: &Setting) {
    // Kubernetes knows the integer formats int32 and int64 only, and warns about
    // schemars' unsigned ones on every write of the CRD; the bounds say it instead.
    field.remove("format");
    field.insert(
        "description".into(),
        json!(format!("{} (`{}`)", setting.help, setting.env)),
    );
    match setting.kind {
        Kind::Integer { min, max, default } => {
            field.insert("minimum".into(), json!(min));
            field.insert("maximum".into(), json!(max));
            field.insert("default".into(), json!(default));
        }
        Kind::Ratio { default } => {
            field.insert("minimum".into(), json!(0.0));
            field.insert("maximum".into(), json!(1.0));
            field.insert("default".into(), json!(default));
        }
        Kind::Flag { default } => {
            field.insert("default".into(), json!(default));
        }
        Kind::Choice { choices, default } => {
            field.insert("enum".into(), json!(choices));
            field.insert("default".into(), json!(default));
        }
        Kind::Text { default, format } => {
            if let Some(default) = default {
                field.insert("default".into(), json!(default));
            }
            text_rules(field, format);
        }
        Kind::List { item } => {
            field.insert("maxItems".into(), json!(MAX_LIST_ITEMS));
            let mut items = Map::from_iter([("type".to_string(), json!("string"))]);
            text_rules(&mut items, item);
            field.insert("items".into(), Value::Object(items));
        }
        // Neither is a field of a Shortener (a test keeps it so).
        Kind::Secret | Kind::Replaced { .. } => {}
    }
}

fn text_rules(text: &mut Map<String, Value>, format: Format) {
    match format {
        Format::Any => {}
        Format::Pattern { regex, .. } => {
            text.insert("pattern".into(), json!(regex));
            text.insert("maxLength".into(), json!(MAX_TEXT_LENGTH));
        }
        Format::Network => {
            text.insert("maxLength".into(), json!(MAX_NETWORK_LENGTH));
            text.insert(
                "x-kubernetes-validations".into(),
                json!([{
                    "rule": "isIP(self) || isCIDR(self)",
                    "message": "must be an IP address or a CIDR network such as 10.0.0.0/8",
                }]),
            );
        }
    }
}

/// A configuration as JSON, to read fields by their path.
pub fn as_json<T: serde::Serialize>(config: &T) -> Value {
    // Structs of numbers, strings and lists: serialising them cannot fail.
    serde_json::to_value(config).expect("a Shortener's app config serialises")
}

/// A field's value as its environment variable carries it (a list comma-separated);
/// none for an empty list, which is the service's default (an empty variable is not a
/// value its parsers take).
pub fn variable_value(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::Array(items) if items.is_empty() => None,
        Value::String(text) => Some(text.clone()),
        Value::Array(items) => Some(
            items
                .iter()
                .filter_map(variable_value)
                .collect::<Vec<_>>()
                .join(","),
        ),
        other => Some(other.to_string()),
    }
}
