//! The management API's rate limit, as middleware: which class a request
//! counts against, whose allowance it spends, and the 429 of a refusal.

use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;

use super::AppState;
use super::auth::Caller;
use super::error::rejection;
use crate::limits::{Class, Subject};

/// Creations: the stricter [`Class::Create`] quota.
fn class_of(req: &Request) -> Class {
    let creation = req.method() == Method::POST
        && req.extensions().get::<MatchedPath>().is_some_and(|path| {
            matches!(
                path.as_str(),
                "/urls" | "/shorten" | "/users" | "/users/bulk"
            )
        });
    if creation {
        Class::Create
    } else {
        Class::Management
    }
}

/// Limits the management API: [`Class::Create`] for creations,
/// [`Class::Management`] for the rest, per the key of the [`Caller`] the key
/// check found, else (open mode) per client address. Allowed responses
/// carry the `RateLimit-*` headers too.
pub async fn limit(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let rate = &state.rate_limit;
    let class = class_of(&req);
    let key = req.extensions().get::<Caller>().and_then(|c| c.key_id);
    let subject = match key {
        Some(id) => Subject::Key(id),
        None => Subject::Client(state.proxies.client_of(&req)),
    };
    let decision = rate.check(class, &subject).await;
    if let Some(refused) = rejection(&decision) {
        return refused;
    }
    let mut response = next.run(req).await;
    decision.set_headers(response.headers_mut());
    response
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;

    use super::*;
    use crate::limits::Decision;

    #[test]
    fn a_refusal_is_a_429_with_the_ietf_headers() {
        let allowed = Decision::unlimited();
        assert!(rejection(&allowed).is_none());
        let limited = Decision::limited_for_tests();
        let response = rejection(&limited).unwrap();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()["retry-after"], "1");
        assert_eq!(response.headers()["ratelimit-remaining"], "0");
    }
}
