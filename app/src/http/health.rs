use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;

use super::state::AppState;

#[derive(Serialize, utoipa::ToSchema)]
pub struct Health {
    /// `ok`, or `degraded` when the database is unreachable.
    status: &'static str,
    /// `ok` or `unavailable`.
    database: &'static str,
    /// The shared cache (Redis): `ok`, `unavailable` (served from the
    /// database meanwhile) or `not_configured`.
    cache: &'static str,
    /// Milliseconds since the database was last checked (every 5 s, in
    /// the background: this endpoint never waits on a store).
    checked_ms_ago: u64,
    version: &'static str,
}

/// The state of the stores as last seen in the background (the database
/// every 5 s, Redis every second): 503 when the database was unreachable,
/// so a load balancer stops sending traffic this replica cannot serve.
/// Answering costs no store round trip, whatever the rate of calls.
#[utoipa::path(get, path = "/health", tag = "operations",
    responses((status = 200, body = Health), (status = 503, body = Health)))]
pub async fn health(State(state): State<AppState>) -> (StatusCode, Json<Health>) {
    let (database_up, age) = state.health.database();
    let cache = match &state.redis {
        None => "not_configured",
        Some(redis) if redis.up() => "ok",
        // Redirects still work (from the database), so this is no 503.
        Some(_) => "unavailable",
    };
    let health = Health {
        status: if database_up { "ok" } else { "degraded" },
        database: if database_up { "ok" } else { "unavailable" },
        cache,
        checked_ms_ago: u64::try_from(age.as_millis()).unwrap_or(u64::MAX),
        version: env!("CARGO_PKG_VERSION"),
    };
    let status = if database_up {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(health))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Probe {
    status: &'static str,
}

/// Liveness: the process answers HTTP. Independent of the database and
/// Redis on purpose: restarting replicas cannot fix either, and would throw
/// away the caches that keep redirects working meanwhile.
#[utoipa::path(get, path = "/livez", tag = "operations", responses((status = 200, body = Probe)))]
pub async fn live() -> Json<Probe> {
    Json(Probe { status: "alive" })
}

/// Readiness: started (connected, migrated, caches warmed) and serving.
/// Also independent of the database: a replica with a warm cache still
/// serves redirects during a database outage, so it stays in the Service.
/// 503 while the replica drains after SIGTERM (`SHUTDOWN_DRAIN_SECS`).
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, body = Probe), (status = 503, body = Probe)))]
pub async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Probe>) {
    if state.draining.load(std::sync::atomic::Ordering::Relaxed) {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Probe { status: "draining" }),
        )
    } else {
        (StatusCode::OK, Json(Probe { status: "ready" }))
    }
}
