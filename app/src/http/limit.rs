//! The management API's rate limit, as middleware: whose allowance a
//! request spends, of the class its route counts against.

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;

use super::error::rejection;
use super::state::AppState;
use crate::keys::Caller;
use crate::limits::{Class, Subject};

/// Limits a management route by its `class` (from the route table,
/// `routes.rs`), per the key of the [`Caller`] the key check found, else
/// (open mode) per client address. Allowed responses carry the
/// `RateLimit-*` headers too.
pub async fn limit(
    State((state, class)): State<(AppState, Class)>,
    req: Request,
    next: Next,
) -> Response {
    let rate = &state.rate_limit;
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
