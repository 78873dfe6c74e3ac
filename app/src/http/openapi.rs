use axum::Json;
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

use super::{events, health, redirect, urls, users};

#[derive(OpenApi)]
#[openapi(
    info(title = "shortener", description = "A URL shortener for platform teams. \
        Management endpoints need `Authorization: Bearer <key>` unless AUTH_MODE=open."),
    paths(
        health::health,
        users::list, users::show, users::create, users::update, users::remove, users::bulk,
        urls::list, urls::create, urls::shorten, urls::show, urls::update, urls::remove,
        urls::stats, urls::events,
        events::list, events::create,
        redirect::follow,
    ),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The OpenAPI 3 document of this API, generated from the handlers.
pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
