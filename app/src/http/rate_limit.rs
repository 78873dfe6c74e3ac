//! Per-client rate limiting of the management API (the redirect path is not
//! limited: it is cheap, cached, and what the product is for).
//!
//! Each replica limits on its own (a GCRA bucket per client IP, via
//! `governor`), so the cluster-wide allowance is the per-replica rate times
//! the replicas behind the load balancer. That keeps Redis off the request
//! path; it is a guard against runaway clients, not billing.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

use super::AppState;
use super::error::ErrorBody;

/// How often state for clients that went quiet is dropped.
const FORGET_EVERY: Duration = Duration::from_secs(60);

pub struct RateLimit {
    limiter: Option<Arc<DefaultKeyedRateLimiter<IpAddr>>>,
    /// Take the client address from `X-Real-IP` (set by the ingress) rather
    /// than the TCP peer (which is the ingress itself).
    trust_proxy_headers: bool,
}

impl RateLimit {
    /// `per_minute` of 0 turns limiting off.
    pub fn new(per_minute: u32, burst: u32, trust_proxy_headers: bool) -> Self {
        let limiter = NonZeroU32::new(per_minute).map(|rate| {
            let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
            let limiter = Arc::new(DefaultKeyedRateLimiter::keyed(
                Quota::per_minute(rate).allow_burst(burst),
            ));
            let weak = Arc::downgrade(&limiter);
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(FORGET_EVERY).await;
                    let Some(limiter) = weak.upgrade() else {
                        return;
                    };
                    limiter.retain_recent();
                }
            });
            limiter
        });
        Self {
            limiter,
            trust_proxy_headers,
        }
    }

    pub fn off() -> Self {
        Self {
            limiter: None,
            trust_proxy_headers: false,
        }
    }

    fn client(&self, req: &Request) -> Option<IpAddr> {
        let forwarded = self
            .trust_proxy_headers
            .then(|| req.headers().get("x-real-ip"))
            .flatten()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok());
        forwarded.or_else(|| {
            req.extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(addr)| addr.ip())
        })
    }
}

pub async fn limit(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let rate = &state.rate_limit;
    let (Some(limiter), Some(client)) = (&rate.limiter, rate.client(&req)) else {
        return next.run(req).await;
    };
    match limiter.check_key(&client) {
        Ok(()) => next.run(req).await,
        Err(not_until) => {
            state.metrics.rate_limited.inc();
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            let retry_after = wait.as_secs().max(1);
            let body = ErrorBody {
                error: format!("too many requests; retry in {retry_after} s"),
                details: Default::default(),
            };
            let mut response = (StatusCode::TOO_MANY_REQUESTS, axum::Json(body)).into_response();
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
            response
        }
    }
}
