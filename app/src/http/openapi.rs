//! The OpenAPI 3.1 document served at `/openapi.json`, generated from the
//! handlers' annotations and the request and response types. What an
//! annotation cannot say is added here by modifiers, in one place:
//!
//! - [`Listings`]: the headers every page of a list carries;
//! - [`ManagementApi`]: the bearer key, and the 401 and 429 that every
//!   management operation can answer;
//! - [`ErrorStatuses`]: the 413, 500 and 503 that come from layers, not
//!   handlers;
//! - [`InputRules`]: the rules the parsers enforce (lengths, alphabets,
//!   reserved codes, page bounds), built from the same constants the
//!   parsers use, and the bodies whose rules span fields (the `url` alias,
//!   "at least one field" updates).
//!
//! `app/tests/openapi.rs` walks the result and fails on an undeclared path
//! parameter, a missing error status or a missing security requirement;
//! `scripts/schemathesis.sh` checks it against the running service.

use axum::Json;
use utoipa::OpenApi;
use utoipa::openapi::path::{Operation, Parameter, ParameterIn};
use utoipa::openapi::schema::{
    AllOfBuilder, AnyOfBuilder, KnownFormat, ObjectBuilder, OneOfBuilder, Schema, SchemaFormat,
    SchemaType, Type,
};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, HeaderBuilder, Ref, RefOr, ResponseBuilder};

use super::extract::MAX_JSON_BODY;
use super::users::UPLOAD_LIMIT;
use super::{analytics, events, export, health, import, keys, qr, redirect, urls, users};
use crate::domain::{
    Email, MAX_EVENT_TYPE_CHARS, MAX_TITLE_CHARS, MAX_USERNAME_CHARS, RECORDED_BY_THE_SERVICE,
    ShortCode, TargetUrl,
};
use crate::limits::Class;
use crate::store::Page;

#[derive(OpenApi)]
#[openapi(
    info(title = "shortener", description = "A URL shortener for platform teams. \
        Management endpoints (`/users*`, `/urls*`, `/events*`, `/shorten`, `/keys*`) need \
        `Authorization: Bearer <key>` unless the service runs with AUTH_MODE=open; \
        the redirect and the health endpoints are public. A key without the right gets 403 (scopes: admin, user-bound, read-only). Every error is \
        `{\"error\": \"...\", \"details\"?: {field: [messages]}}`."),
    paths(
        health::health, health::live, health::ready,
        users::list, users::show, users::create, users::update, users::remove, users::bulk,
        urls::list, urls::create, urls::shorten, urls::show, urls::update, urls::remove,
        urls::stats, urls::events, qr::qr, analytics::analytics, import::import,
        events::list, events::create, export::urls, export::events,
        keys::list, keys::create, keys::show, keys::revoke,
        redirect::follow, redirect::unlock,
    ),
    components(schemas(super::error::ErrorBody)),
    modifiers(&OperationIds, &InputRules, &Listings, &ManagementApi, &ErrorStatuses),
)]
pub struct ApiDoc;

/// The OpenAPI document of this API, generated from the handlers.
pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

/// Routes the service serves outside this document; no link can be reached
/// under these names (custom codes equal to them are refused anyway).
const UNDOCUMENTED_ROUTES: &[&str] = &["metrics", "openapi.json"];

/// Characters Rust's `char::is_control` refuses (Unicode category Cc), as
/// a regular-expression class body.
const CONTROL: &str = r"\u0000-\u001F\u007F-\u009F";

/// 1 to `max` characters without control characters, neither the first
/// nor the last blank: what is left of a value once trimmed.
fn text_between_blanks(max: usize) -> String {
    let inner = max - 2;
    format!(r"[^\s{CONTROL}](?:[^{CONTROL}]{{0,{inner}}}[^\s{CONTROL}])?")
}

/// Text that is trimmed, then must be 1 to `max` characters without
/// control characters.
fn trimmed_text(max: usize) -> String {
    format!(r"^\s*{}\s*$", text_between_blanks(max))
}

/// Like [`trimmed_text`], but blank is allowed (and means "none").
fn optional_trimmed_text(max: usize) -> String {
    format!(r"^\s*(?:{})?\s*$", text_between_blanks(max))
}

/// `word` in any letter case, as a regular expression (`api` → `[Aa][Pp][Ii]`).
fn any_case(word: &str) -> String {
    word.chars()
        .map(|c| {
            if c.is_ascii_alphabetic() {
                format!("[{}{}]", c.to_ascii_uppercase(), c.to_ascii_lowercase())
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// A custom short code: [`ShortCode::parse`]'s rules.
fn custom_code_pattern() -> String {
    let reserved: Vec<String> = ShortCode::RESERVED
        .iter()
        .filter(|word| ShortCode::could_be(word))
        .map(|word| any_case(word))
        .collect();
    format!(
        "^(?!(?:{})$)[A-Za-z0-9_-]{{{},{}}}$",
        reserved.join("|"),
        ShortCode::MIN_LEN,
        ShortCode::MAX_LEN
    )
}

/// The email addresses documented as accepted: a conservative subset of
/// what [`Email::parse`] takes (it also takes non-ASCII domains and more
/// labels), bounded so that every match fits [`Email::MAX_LEN`].
fn email_pattern() -> String {
    const LOCAL: usize = 64;
    const LABEL: usize = 60;
    const _: () = assert!(LOCAL + 1 + 3 * LABEL + 2 <= Email::MAX_LEN);
    format!(
        r"^\s*[!-;=?A-~]{{1,{LOCAL}}}@[A-Za-z0-9-]{{1,{LABEL}}}(?:\.[A-Za-z0-9-]{{1,{LABEL}}}){{1,2}}\s*$"
    )
}

/// The targets documented as accepted: a conservative subset of what
/// [`TargetUrl::parse`] and the default target policy take (a domain name
/// whose last label is 2 to 8 letters, so never `localhost` nor an IP
/// address; printable ASCII after it), bounded to fit [`TargetUrl::MAX_LEN`].
fn target_url_pattern() -> String {
    const REST: usize = 3800;
    const _: () = assert!(8 + 4 * 64 + 8 + 5 + 1 + REST <= TargetUrl::MAX_LEN);
    format!(
        r"^\s*[Hh][Tt][Tt][Pp][Ss]?://(?:[A-Za-z0-9-]{{1,63}}\.){{0,3}}[A-Za-z]{{2,8}}(?::[0-9]{{1,4}})?(?:[/?#][!-\[\]-~]{{0,{REST}}})?\s*$"
    )
}

/// Times the parser takes (`timestamp::parse_instant`), as far as a pattern can say: the
/// days of a month stop at 28 here, so that everything the pattern admits is accepted.
const INSTANT_PATTERN: &str = r"^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|1\d|2[0-8])[Tt]([01]\d|2[0-3]):[0-5]\d:[0-5]\d(\.\d{1,9})?([Zz]|[+-]([01]\d|2[0-3]):[0-5]\d)?$";
const INSTANT_RULES: &str = "From this time on the link answers 410 (or redirects to \
    `fallback_url`): RFC 3339 with any offset, or `YYYY-MM-DDTHH:MM:SS` taken as UTC; stored \
    in UTC to the second, between 1970 and 9999 (an earlier time is stored as \
    1970-01-01T00:00:00). `null`: never. (The pattern admits days up to 28; every \
    calendar day is accepted.)";
const FALLBACK_URL_RULES: &str = "Where the link redirects once expired or used up, instead \
    of answering 410: the same rules as `original_url`; `null`: none.";
const TARGET_URL_RULES: &str = "An absolute http(s) URL with a host, at most 4096 \
    characters, trimmed; no whitespace, control or invisible formatting characters, \
    backslashes or credentials. By default targets in private networks (IP literals \
    in loopback, private, link-local ranges, `localhost`) are refused, and a \
    deployment may refuse more domains (DENIED_TARGET_DOMAINS): 400. The pattern \
    documents a subset every deployment accepts.";

/// Unique operation ids, as client generators name their methods after
/// them: the handler's name under its tag (`users_list`, `urls_list`).
struct OperationIds;

impl utoipa::Modify for OperationIds {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for operation in openapi.paths.paths.values_mut().flat_map(operations) {
            let tag = operation.tags.as_ref().and_then(|t| t.first()).cloned();
            if let (Some(tag), Some(id)) = (tag, operation.operation_id.as_mut()) {
                *id = format!("{tag}_{id}");
            }
        }
    }
}

/// The rules the parsers enforce, on the parameters and body fields they
/// apply to.
struct InputRules;

impl utoipa::Modify for InputRules {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let mut routes: Vec<String> = openapi
            .paths
            .paths
            .keys()
            .filter_map(|p| p.strip_prefix('/'))
            .filter(|p| !p.contains(['/', '{']))
            .map(str::to_owned)
            .collect();
        routes.extend(UNDOCUMENTED_ROUTES.iter().map(|r| (*r).to_owned()));
        let routes: Vec<&str> = routes
            .iter()
            .map(String::as_str)
            .filter(|r| ShortCode::could_be(r))
            .collect();
        let redirect_code = format!(
            "^(?!(?:{})$)[A-Za-z0-9_-]{{1,{}}}$",
            routes.join("|"),
            ShortCode::MAX_LEN
        );
        for operation in openapi.paths.paths.values_mut().flat_map(operations) {
            for parameter in operation.parameters.iter_mut().flatten() {
                parameter_rules(parameter, &redirect_code);
            }
        }

        let components = openapi.components.get_or_insert_with(Default::default);
        let schemas = &mut components.schemas;
        let code = custom_code_pattern();
        let title = optional_trimmed_text(MAX_TITLE_CHARS);
        let username = trimmed_text(MAX_USERNAME_CHARS);
        let event_type = format!(
            r"^\s*(?!(?:{})\s*$)[a-z0-9_.-]{{1,{MAX_EVENT_TYPE_CHARS}}}\s*$",
            RECORDED_BY_THE_SERVICE.join("|")
        );
        let rules: [(&str, &str, String, &str); 17] = [
            (
                "CreateKey",
                "name",
                trimmed_text(crate::keys::MAX_NAME_LEN),
                "Trimmed; 1 to 100 characters, no control characters.",
            ),
            (
                "CreateUser",
                "username",
                username.clone(),
                "Trimmed; 1 to 100 characters, no control characters. Not unique.",
            ),
            (
                "CreateUser",
                "email",
                email_pattern(),
                "Trimmed; one `@`, a dotted domain, at most 254 characters. Unique (case-insensitively): 409.",
            ),
            (
                "UpdateUser",
                "username",
                username,
                "As on creation; `null` is the same as leaving it out.",
            ),
            (
                "UpdateUser",
                "email",
                email_pattern(),
                "As on creation; `null` is the same as leaving it out.",
            ),
            (
                "CreateUrl",
                "original_url",
                target_url_pattern(),
                TARGET_URL_RULES,
            ),
            (
                "CreateUrl",
                "title",
                title.clone(),
                "Trimmed; at most 300 characters, no control characters; blank is no title.",
            ),
            (
                "CreateUrl",
                "short_code",
                code.clone(),
                "A custom code: 3 to 32 of `[A-Za-z0-9_-]`, not one of the service's reserved words (any case): 400; taken: 409. Random when absent or `null`.",
            ),
            (
                "UpdateUrl",
                "original_url",
                target_url_pattern(),
                TARGET_URL_RULES,
            ),
            (
                "UpdateUrl",
                "title",
                title,
                "As on creation; `null` clears the title.",
            ),
            (
                "CreateUrl",
                "expires_at",
                INSTANT_PATTERN.to_owned(),
                INSTANT_RULES,
            ),
            (
                "UpdateUrl",
                "expires_at",
                INSTANT_PATTERN.to_owned(),
                INSTANT_RULES,
            ),
            (
                "CreateUrl",
                "fallback_url",
                target_url_pattern(),
                FALLBACK_URL_RULES,
            ),
            (
                "UpdateUrl",
                "fallback_url",
                target_url_pattern(),
                FALLBACK_URL_RULES,
            ),
            (
                "ShortenRequest",
                "url",
                target_url_pattern(),
                TARGET_URL_RULES,
            ),
            (
                "ShortenRequest",
                "short_code",
                code,
                "As `short_code` of `POST /urls`.",
            ),
            (
                "CreateEvent",
                "event_type",
                event_type,
                "Trimmed; 1 to 64 of `[a-z0-9_.-]`; `redirect` events are recorded by the service only (400).",
            ),
        ];
        for (schema, property, pattern, description) in rules {
            if let Some(RefOr::T(Schema::Object(object))) = schemas.get_mut(schema)
                && let Some(RefOr::T(Schema::Object(field))) = object.properties.get_mut(property)
            {
                field.pattern = Some(pattern);
                field.description = Some(description.to_owned());
            }
        }

        // A redirect type is one of the four redirect statuses (`null`: the default, 302).
        for schema in ["CreateUrl", "UpdateUrl", "Url"] {
            if let Some(RefOr::T(Schema::Object(object))) = schemas.get_mut(schema)
                && let Some(RefOr::T(Schema::Object(field))) =
                    object.properties.get_mut("redirect_type")
            {
                let mut statuses: Vec<serde_json::Value> =
                    [301, 302, 307, 308].map(serde_json::Value::from).into();
                if schema != "Url" {
                    statuses.push(serde_json::Value::Null);
                }
                field.enum_values = Some(statuses);
            }
        }

        // The upload has one field, `file`, whose first line names the
        // username and email columns (any case, any order, among others);
        // other fields are refused.
        if let Some(RefOr::T(Schema::Object(object))) = schemas.get_mut("UsersUpload") {
            if let Some(RefOr::T(Schema::Object(file))) = object.properties.get_mut("file") {
                file.pattern = Some(format!(
                    "^{}{}",
                    csv_column("username"),
                    csv_column("email")
                ));
            }
            object.additional_properties = Some(Box::new(
                utoipa::openapi::schema::AdditionalProperties::FreeForm(false),
            ));
        }

        // `POST /urls/import`'s upload has one field, `file`, whose first line names a target
        // and a code column: the pattern states the names this service's own export uses
        // (any case, any order, among others), a subset of those the import takes.
        if let Some(RefOr::T(Schema::Object(object))) = schemas.get_mut("LinksUpload") {
            if let Some(RefOr::T(Schema::Object(file))) = object.properties.get_mut("file") {
                file.pattern = Some(format!(
                    "^{}{}",
                    csv_column("original_url"),
                    csv_column("short_code")
                ));
            }
            object.additional_properties = Some(Box::new(
                utoipa::openapi::schema::AdditionalProperties::FreeForm(false),
            ));
        }

        // Before the bodies are wrapped in `allOf` below.
        link_rules(schemas);

        // `url` is an alias of `original_url`: exactly one of them.
        if let Some(RefOr::T(Schema::Object(object))) = schemas.get_mut("CreateUrl") {
            object.required.retain(|f| f != "original_url");
            if let Some(original) = object.properties.get("original_url").cloned() {
                object.properties.insert("url".into(), original);
            }
        }
        require_one_of(schemas, "CreateUrl", &[&["original_url"], &["url"]], true);
        // An update must change something: at least one field that is not
        // `null` (a `null` title clears it, so it counts).
        require_one_of(
            schemas,
            "UpdateUser",
            &[&["username", "string"], &["email", "string"]],
            false,
        );
        require_one_of(
            schemas,
            "UpdateUrl",
            &[
                &["original_url", "string"],
                &["title"],
                &["is_active", "boolean"],
                &["redirect_type"],
                &["expires_at"],
                &["max_visits"],
                &["fallback_url"],
                &["password"],
                &["rules"],
                &["forward_query", "boolean"],
            ],
            false,
        );
    }
}

/// What `Rules::parse` enforces: at most `MAX_RULES`, each with a condition, a target as
/// `original_url`'s, a language tag, query parts of 1 to `MAX_QUERY_PART` bytes.
fn link_rules(schemas: &mut std::collections::BTreeMap<String, RefOr<Schema>>) {
    for schema in ["CreateUrl", "UpdateUrl"] {
        if let Some(RefOr::T(Schema::Object(object))) = schemas.get_mut(schema)
            && let Some(RefOr::T(Schema::Array(rules))) = object.properties.get_mut("rules")
        {
            rules.max_items = Some(crate::domain::MAX_RULES);
        }
    }
    if let Some(RefOr::T(Schema::Array(rules))) = schemas.get_mut("Rules") {
        rules.max_items = Some(crate::domain::MAX_RULES);
    }
    if let Some(RefOr::T(Schema::Object(rule))) = schemas.get_mut("Rule") {
        if let Some(RefOr::T(Schema::Object(target))) = rule.properties.get_mut("target") {
            target.pattern = Some(target_url_pattern());
        }
        if let Some(RefOr::T(Schema::Object(language))) = rule.properties.get_mut("language") {
            language.pattern = Some("^[A-Za-z]{1,8}(-[A-Za-z0-9]{1,8})*$".to_owned());
        }
        rule.additional_properties = Some(Box::new(
            utoipa::openapi::schema::AdditionalProperties::FreeForm(false),
        ));
    }
    if let Some(RefOr::T(Schema::Object(query))) = schemas.get_mut("QueryCondition") {
        for part in ["name", "value"] {
            if let Some(RefOr::T(Schema::Object(part))) = query.properties.get_mut(part) {
                part.min_length = Some(1);
                part.max_length = Some(crate::domain::link_rules::MAX_QUERY_PART);
            }
        }
        query.additional_properties = Some(Box::new(
            utoipa::openapi::schema::AdditionalProperties::FreeForm(false),
        ));
    }
    require_one_of(
        schemas,
        "Rule",
        &[&["device"], &["language"], &["query"]],
        false,
    );
}

/// A lookahead: the first line of a CSV names column `name` (any case, any place).
fn csv_column(name: &str) -> String {
    format!(
        r"(?=(?:[^\r\n,]*,)*[^\S\r\n]*{}[^\S\r\n]*(?:,|\r?\n|$))",
        any_case(name)
    )
}

fn parameter_rules(parameter: &mut Parameter, redirect_code: &str) {
    let Some(RefOr::T(Schema::Object(schema))) = parameter.schema.as_mut() else {
        return;
    };
    match parameter.name.as_str() {
        "page" => {
            schema.minimum = Some(1.into());
            schema.maximum = Some(utoipa::Number::Int(
                isize::try_from(Page::MAX_OFFSET + 1).unwrap_or(isize::MAX),
            ));
        }
        "per_page" => schema.minimum = Some(1.into()),
        // `GET /urls/{id}/qr`'s, the only operation taking these names.
        "format" => {
            schema.enum_values = Some(qr::QrFormat::NAMES.iter().map(|&n| n.into()).collect());
        }
        "size" => {
            schema.minimum = Some(utoipa::Number::Int(qr::MIN_SIZE as isize));
            schema.maximum = Some(utoipa::Number::Int(qr::MAX_SIZE as isize));
        }
        // `GET /urls/{id}/analytics`'s, the only operation taking these names.
        "granularity" => {
            let names = analytics::Granularity::NAMES.iter().map(|&n| n.into());
            schema.enum_values = Some(names.collect());
        }
        "from" | "to" => schema.pattern = Some(INSTANT_PATTERN.to_owned()),
        // The redirect's path segment; as a list filter (`GET /urls?short_code=`) any text
        // is a value, which no link may have (an empty list).
        "short_code" if matches!(parameter.parameter_in, ParameterIn::Path) => {
            schema.pattern = Some(redirect_code.to_owned());
            schema.min_length = Some(1);
            schema.max_length = Some(ShortCode::MAX_LEN);
        }
        _ => {}
    }
}

/// Adds to `name` the rule that one alternative of `alternatives` holds:
/// each is `[field]` (present) or `[field, type]` (present with that type,
/// so not `null`). `exactly`: one and only one (`oneOf`), else at least one.
fn require_one_of(
    schemas: &mut std::collections::BTreeMap<String, RefOr<Schema>>,
    name: &str,
    alternatives: &[&[&str]],
    exactly: bool,
) {
    let Some(schema) = schemas.remove(name) else {
        return;
    };
    let branches = alternatives.iter().map(|alternative| {
        let mut branch = ObjectBuilder::new();
        if let Some(field) = alternative.first() {
            branch = branch.required(*field);
            let ty = match alternative.get(1) {
                Some(&"string") => Some(Type::String),
                Some(&"boolean") => Some(Type::Boolean),
                _ => None,
            };
            if let Some(ty) = ty {
                branch = branch.property(*field, ObjectBuilder::new().schema_type(ty));
            }
        }
        branch.build()
    });
    let rule: Schema = if exactly {
        branches
            .fold(OneOfBuilder::new(), |b, branch| b.item(branch))
            .build()
            .into()
    } else {
        branches
            .fold(AnyOfBuilder::new(), |b, branch| b.item(branch))
            .build()
            .into()
    };
    let combined = AllOfBuilder::new()
        .schema_type(SchemaType::Type(Type::Object))
        .item(schema)
        .item(rule)
        .build();
    schemas.insert(name.to_owned(), RefOr::T(Schema::AllOf(combined)));
}

fn operations(item: &mut utoipa::openapi::PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.post,
        &mut item.put,
        &mut item.delete,
        &mut item.patch,
        &mut item.head,
    ]
    .into_iter()
    .flatten()
}

/// The operation of `method` in `item`.
fn operation<'a>(
    item: &'a mut utoipa::openapi::PathItem,
    method: &axum::http::Method,
) -> Option<&'a mut Operation> {
    use axum::http::Method;
    match *method {
        Method::GET => item.get.as_mut(),
        Method::POST => item.post.as_mut(),
        Method::PUT => item.put.as_mut(),
        Method::DELETE => item.delete.as_mut(),
        Method::PATCH => item.patch.as_mut(),
        Method::HEAD => item.head.as_mut(),
        _ => None,
    }
}

fn error_response(description: &str, headers: &[(&str, &str)]) -> RefOr<utoipa::openapi::Response> {
    let mut response = ResponseBuilder::new().description(description).content(
        "application/json",
        ContentBuilder::new()
            .schema(Some(Ref::from_schema_name("ErrorBody")))
            .build(),
    );
    for (name, about) in headers {
        response = response.header(
            *name,
            HeaderBuilder::new()
                .schema(ObjectBuilder::new().schema_type(Type::String))
                .description(Some(*about))
                .build(),
        );
    }
    RefOr::T(response.build())
}

/// What [`super::extract::listing`] puts on every page of a list (the
/// operations that take `page`): the total, and whether it is estimated.
struct Listings;

impl utoipa::Modify for Listings {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let header = |schema: ObjectBuilder, about: &str| {
            HeaderBuilder::new()
                .schema(schema)
                .description(Some(about))
                .build()
        };
        let int64 = SchemaFormat::KnownFormat(KnownFormat::Int64);
        let total = header(
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .format(Some(int64)),
            "Rows matching the filters",
        );
        let estimated = header(
            ObjectBuilder::new().schema_type(Type::Boolean),
            "Present (`true`) when the count is an estimate",
        );
        for operation in openapi.paths.paths.values_mut().flat_map(operations) {
            let mut parameters = operation.parameters.iter().flatten();
            if !parameters.any(|p| p.name == "page") {
                continue;
            }
            if let Some(RefOr::T(ok)) = operation.responses.responses.get_mut("200") {
                for (name, header) in [
                    ("X-Total-Count", &total),
                    ("X-Total-Count-Estimated", &estimated),
                ] {
                    ok.headers.insert(name.into(), header.clone());
                }
            }
        }
    }
}

/// The management API (and only it, the operations of the route table
/// [`super::routes::MANAGEMENT`]) needs the bearer key and is rate limited:
/// marks those operations and adds their 401, 403 and 429 (naming the limit
/// each counts against), in one place rather than on every handler.
struct ManagementApi;

impl utoipa::Modify for ManagementApi {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API key (ADMIN_API_KEY bootstraps one). Needed when the service \
                         runs with AUTH_MODE=api-key, the default.",
                    ))
                    .build(),
            ),
        );
        let unauthorized = error_response(
            "Missing or invalid API key (AUTH_MODE=api-key)",
            &[("WWW-Authenticate", "`Bearer realm=\"shortener\"`")],
        );
        let forbidden = error_response(
            "The key is valid but may not do this: a read-only key asked for a change, a \
             key bound to a user asked for someone else's data, or a non-admin key asked \
             for an admin's operation",
            &[],
        );
        let too_many = |class: Class| {
            let limit = match class {
                Class::Create => "creation limit (CREATE_RATE_LIMIT_*)",
                _ => "management limit (RATE_LIMIT_*)",
            };
            error_response(
                &format!(
                    "Over this key's (or, without a known key, this client address's) {limit}"
                ),
                &[("Retry-After", "Seconds to wait")],
            )
        };
        for route in super::routes::MANAGEMENT {
            let Some(operation) = openapi
                .paths
                .paths
                .get_mut(route.path)
                .and_then(|item| operation(item, &route.method))
            else {
                continue;
            };
            operation.security = Some(vec![SecurityRequirement::new(
                "bearer",
                Vec::<String>::new(),
            )]);
            let responses = &mut operation.responses.responses;
            responses.insert("401".into(), unauthorized.clone());
            responses.insert("403".into(), forbidden.clone());
            responses.insert("429".into(), too_many(route.class));
        }
    }
}

/// Statuses that come from the layers around every handler, not from the
/// handlers: a body over the limit (413), a panic (500), the database away
/// or a request over REQUEST_TIMEOUT_SECS (503).
struct ErrorStatuses;

/// Probes that answer without the database, a body or a handler that can
/// fail.
const PROBES: &[&str] = &["/livez", "/readyz"];

impl utoipa::Modify for ErrorStatuses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let too_large =
            |limit: &str| error_response(&format!("The request body is larger than {limit}"), &[]);
        let internal = error_response("An unexpected failure (logged on the server)", &[]);
        let unavailable = error_response(
            "The database is unavailable, or the request took longer than \
             REQUEST_TIMEOUT_SECS; retry shortly",
            &[("Retry-After", "Seconds to wait")],
        );
        for (path, item) in openapi.paths.paths.iter_mut() {
            if PROBES.contains(&path.as_str()) {
                continue;
            }
            let upload = path == "/users/bulk";
            for operation in operations(item) {
                let has_body = operation.request_body.is_some();
                let responses = &mut operation.responses.responses;
                if has_body {
                    let limit = if upload {
                        format!("{} MiB", UPLOAD_LIMIT / (1024 * 1024))
                    } else if path == super::routes::REDIRECT {
                        format!("{} KiB", super::redirect::UNLOCK_BODY_LIMIT / 1024)
                    } else {
                        format!("{} KiB", MAX_JSON_BODY / 1024)
                    };
                    responses.insert("413".into(), too_large(&limit));
                }
                responses
                    .entry("500".into())
                    .or_insert_with(|| internal.clone());
                responses
                    .entry("503".into())
                    .or_insert_with(|| unavailable.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_words_match_in_any_case() {
        assert_eq!(any_case("v1"), "[Vv]1");
        let pattern = custom_code_pattern();
        assert!(pattern.contains("[Hh][Ee][Aa][Ll][Tt][Hh]"), "{pattern}");
        // Words outside the code alphabet cannot be codes anyway.
        assert!(!pattern.contains("ico"), "{pattern}");
    }

    #[test]
    fn text_patterns_bound_the_trimmed_length() {
        assert!(trimmed_text(100).contains("{0,98}"));
        assert!(optional_trimmed_text(300).contains("{0,298}"));
    }

    #[test]
    fn the_redirect_parameter_excludes_the_service_routes() {
        let doc = ApiDoc::openapi();
        let json = serde_json::to_value(&doc).unwrap();
        let params = &json["paths"]["/{short_code}"]["get"]["parameters"];
        let pattern = params[0]["schema"]["pattern"].as_str().unwrap();
        for route in [
            "health", "livez", "readyz", "users", "urls", "events", "shorten", "metrics",
        ] {
            assert!(pattern.contains(route), "{route} missing from {pattern}");
        }
        // The list filter of the same name takes any text (no link has most of them).
        for path in ["/urls", "/urls/export"] {
            let params = json["paths"][path]["get"]["parameters"].as_array().unwrap();
            let filter = params.iter().find(|p| p["name"] == "short_code").unwrap();
            assert_eq!(filter["in"], "query");
            assert!(
                filter["schema"].get("pattern").is_none(),
                "{path}: {filter}"
            );
        }
    }
}
