//! Every route of the management API, written once: its method, its path,
//! the rate limit it counts against, and its handler. The router is built
//! from this table (each route behind the key check, then its own limit),
//! the OpenAPI document marks exactly these operations as needing the key
//! and names their limit, and the tests walk the same table. A route added
//! anywhere else is public, and the OpenAPI test says so.

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::Method;
use axum::middleware;
use axum::routing::{MethodFilter, MethodRouter, on};

use super::state::AppState;
use super::users::UPLOAD_LIMIT;
use super::{analytics, auth, events, export, import, keys, limit, qr, urls, users};
use crate::limits::Class;
use crate::limits::Class::{Create, Management};

/// The redirect's route: every path of one segment that no other route takes.
pub const REDIRECT: &str = "/{short_code}";

/// One operation of the management API.
pub struct ManagementRoute {
    pub method: Method,
    pub path: &'static str,
    /// The limit its requests spend.
    pub class: Class,
    handler: fn(MethodFilter) -> MethodRouter<AppState>,
}

const fn route(
    method: Method,
    path: &'static str,
    class: Class,
    handler: fn(MethodFilter) -> MethodRouter<AppState>,
) -> ManagementRoute {
    ManagementRoute {
        method,
        path,
        class,
        handler,
    }
}

/// The management API. Creations count against the stricter creation limit.
pub const MANAGEMENT: &[ManagementRoute] = &[
    route(Method::GET, "/users", Management, |m| on(m, users::list)),
    route(Method::POST, "/users", Create, |m| on(m, users::create)),
    route(Method::POST, "/users/bulk", Create, |m| {
        on(m, users::bulk).layer(DefaultBodyLimit::max(UPLOAD_LIMIT))
    }),
    route(Method::GET, "/users/{id}", Management, |m| {
        on(m, users::show)
    }),
    route(Method::PUT, "/users/{id}", Management, |m| {
        on(m, users::update)
    }),
    route(Method::DELETE, "/users/{id}", Management, |m| {
        on(m, users::remove)
    }),
    route(Method::GET, "/urls", Management, |m| on(m, urls::list)),
    route(Method::POST, "/urls", Create, |m| on(m, urls::create)),
    route(Method::POST, "/shorten", Create, |m| on(m, urls::shorten)),
    route(Method::GET, "/urls/export", Management, |m| {
        on(m, export::urls)
    }),
    route(Method::POST, "/urls/import", Create, |m| {
        on(m, import::import).layer(DefaultBodyLimit::max(UPLOAD_LIMIT))
    }),
    route(Method::GET, "/urls/{id}", Management, |m| on(m, urls::show)),
    route(Method::PUT, "/urls/{id}", Management, |m| {
        on(m, urls::update)
    }),
    route(Method::DELETE, "/urls/{id}", Management, |m| {
        on(m, urls::remove)
    }),
    route(Method::GET, "/urls/{id}/stats", Management, |m| {
        on(m, urls::stats)
    }),
    route(Method::GET, "/urls/{id}/events", Management, |m| {
        on(m, urls::events)
    }),
    route(Method::GET, "/urls/{id}/qr", Management, |m| on(m, qr::qr)),
    route(Method::GET, "/urls/{id}/analytics", Management, |m| {
        on(m, analytics::analytics)
    }),
    route(Method::GET, "/events", Management, |m| on(m, events::list)),
    route(Method::GET, "/events/export", Management, |m| {
        on(m, export::events)
    }),
    route(Method::POST, "/events", Management, |m| {
        on(m, events::create)
    }),
    route(Method::GET, "/keys", Management, |m| on(m, keys::list)),
    route(Method::POST, "/keys", Management, |m| on(m, keys::create)),
    route(Method::GET, "/keys/{id}", Management, |m| on(m, keys::show)),
    route(Method::DELETE, "/keys/{id}", Management, |m| {
        on(m, keys::revoke)
    }),
];

impl ManagementRoute {
    /// The route behind the key check (outer), then its limit: per key once
    /// the key is known (per client address in open mode); the key check
    /// itself limits key lookups per client address. Route layers, so that
    /// a method the path does not serve is still a plain 405.
    fn served(&self, state: &AppState) -> MethodRouter<AppState> {
        // The table is constant, and its test allows only these methods.
        let filter = MethodFilter::try_from(self.method.clone())
            .expect("management routes use GET, POST, PUT or DELETE");
        (self.handler)(filter)
            .route_layer(middleware::from_fn_with_state(
                (state.clone(), self.class),
                limit::limit,
            ))
            .route_layer(middleware::from_fn_with_state(
                state.clone(),
                auth::require_key,
            ))
    }
}

/// The management API's router.
pub fn management(state: &AppState) -> Router<AppState> {
    MANAGEMENT.iter().fold(Router::new(), |router, route| {
        router.route(route.path, route.served(state))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_operation_is_listed_once_and_only_creations_count_as_such() {
        for (i, a) in MANAGEMENT.iter().enumerate() {
            for b in &MANAGEMENT[i + 1..] {
                assert!(a.method != b.method || a.path != b.path, "{}", a.path);
            }
            if a.class == Class::Create {
                assert_eq!(a.method, Method::POST, "{}", a.path);
            }
            assert!(
                matches!(
                    a.method,
                    Method::GET | Method::POST | Method::PUT | Method::DELETE
                ),
                "{} {}",
                a.method,
                a.path
            );
        }
    }
}
