use axum::Json;
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};

use super::{events, health, keys, redirect, urls, users};

#[derive(OpenApi)]
#[openapi(
    info(title = "shortener", description = "A URL shortener for platform teams. \
        Management endpoints need `Authorization: Bearer <key>` unless AUTH_MODE=open."),
    paths(
        health::health, health::live, health::ready,
        users::list, users::show, users::create, users::update, users::remove, users::bulk,
        urls::list, urls::create, urls::shorten, urls::show, urls::update, urls::remove,
        urls::stats, urls::events,
        events::list, events::create,
        keys::list, keys::create, keys::show, keys::revoke,
        redirect::follow,
    ),
    modifiers(&BearerAuth),
)]
pub struct ApiDoc;

/// The management API (and only it) needs the bearer key: marks those
/// operations and adds their 401, in one place rather than on every handler.
struct BearerAuth;

const MANAGEMENT_PREFIXES: &[&str] = &["/users", "/urls", "/events", "/shorten", "/keys"];

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        let unauthorized = ResponseBuilder::new()
            .description("Missing or invalid API key (AUTH_MODE=api-key)")
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorBody")))
                    .build(),
            )
            .build();
        for (path, item) in openapi.paths.paths.iter_mut() {
            if !MANAGEMENT_PREFIXES.iter().any(|p| path.starts_with(p)) {
                continue;
            }
            let operations = [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.delete,
            ];
            for operation in operations.into_iter().flatten() {
                operation.security = Some(vec![SecurityRequirement::new(
                    "bearer",
                    Vec::<String>::new(),
                )]);
                operation
                    .responses
                    .responses
                    .insert("401".into(), RefOr::T(unauthorized.clone()));
            }
        }
    }
}

/// The OpenAPI 3 document of this API, generated from the handlers.
pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
