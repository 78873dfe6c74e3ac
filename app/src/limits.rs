//! Rate limits: per class ([`Class`]) and per subject ([`Subject`]: an API
//! key, or a client address). A service of its own: the HTTP side decides
//! which class a request counts against (the route table, `http/routes.rs`)
//! and turns a refusal into a 429 (`http/error.rs`).
//!
//! With Redis configured the limits hold across all replicas: each check is
//! one atomic round trip (a GCRA script, [`GCRA`], whose key expires once
//! the subject's allowance is whole again). When Redis is absent, or away,
//! or slower than `REDIS_TIMEOUT_MS`, the same limit is applied by this
//! replica alone (`governor`, in process) and the fallback is counted: a
//! request is never refused because Redis is down. After a Redis failure
//! the next second of checks goes straight to the local limiter, so a sick
//! Redis costs at most one timeout per second.
//!
//! Redirects are limited only on misses: a client that was answered too
//! many 404s after lookups beyond the in-process cache is refused further
//! such lookups for a while ([`RateLimit::refuse_miss`],
//! [`RateLimit::record_miss`]); links in the in-process cache always
//! redirect, and the redirect path never waits on Redis for them.

use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderName, HeaderValue, header};
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

use crate::config::RateLimitSettings;
use crate::metrics::Metrics;
use crate::shared_redis::{SharedRedis, Unavailable};

/// How often local state for subjects that went quiet is dropped.
const FORGET_EVERY: Duration = Duration::from_secs(60);
/// Subjects refused for their failures, remembered per replica (bounded).
const BLOCKS: u64 = 100_000;

/// GCRA in Redis, one round trip. `KEYS[1]`: the subject's key; `ARGV[1]`:
/// the emission interval (ms per request at the sustained rate); `ARGV[2]`:
/// the burst. The key holds the theoretical arrival time (TAT, ms on
/// Redis's clock, so every replica reads the same time) and expires when
/// the allowance is whole again. Returns `{allowed, remaining, retry_ms,
/// reset_ms}`.
const GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval = tonumber(ARGV[1])
local tolerance = interval * tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
if new_tat - now > tolerance then
  return {0, 0, new_tat - tolerance - now, tat - now}
end
redis.call('SET', KEYS[1], new_tat, 'PX', new_tat - now)
return {1, math.floor((tolerance - (new_tat - now)) / interval), 0, new_tat - now}
";

/// What a limit applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// Every management request that is not a creation.
    Management,
    /// `POST /urls`, `/shorten`, `/users`, `/users/bulk`: a stricter quota.
    Create,
    /// Redirect misses, per client address.
    RedirectMiss,
    /// Wrong passwords for a protected link, per link and client address (by default 10 at
    /// once, then 10 a minute: enough for a person who mistypes; at most 14,400 guesses a
    /// day per address against one link, each costing ~20 ms of Argon2id).
    LinkPassword,
}

impl Class {
    pub const ALL: [Class; 4] = [
        Class::Management,
        Class::Create,
        Class::RedirectMiss,
        Class::LinkPassword,
    ];

    /// The `class` label of the metrics, and part of the Redis key.
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Management => "management",
            Class::Create => "create",
            Class::RedirectMiss => "redirect_miss",
            Class::LinkPassword => "link_password",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The `decision` label of `shortener_rate_limit_decisions_total`.
fn decision_label(allowed: bool) -> &'static str {
    if allowed { "allowed" } else { "limited" }
}

/// Who a limit is counted for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Subject {
    /// An API key, by its id.
    Key(i64),
    /// A client address. IPv6 clients are counted per /64 (one customer's
    /// network: an address per request costs them nothing).
    Client(IpAddr),
    /// A client address (as [`Subject::Client`]) at one link, by the link's id.
    ClientAtLink(i64, IpAddr),
}

impl Subject {
    /// The form limits are counted under: IPv4-mapped IPv6 as IPv4, and
    /// other IPv6 addresses as their /64.
    fn normalized(&self) -> Subject {
        match self {
            Subject::Key(id) => Subject::Key(*id),
            Subject::Client(ip) => Subject::Client(network(*ip)),
            Subject::ClientAtLink(link, ip) => Subject::ClientAtLink(*link, network(*ip)),
        }
    }

    fn redis_part(&self) -> String {
        match self {
            Subject::Key(id) => format!("key:{id}"),
            Subject::Client(ip) => format!("ip:{ip}"),
            Subject::ClientAtLink(link, ip) => format!("link:{link}:ip:{ip}"),
        }
    }
}

/// The address limits count `ip` under: IPv4-mapped IPv6 as IPv4, other IPv6 addresses as
/// their /64.
fn network(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(bits))
        }
        v4 => v4,
    }
}

/// A sustained rate and a burst.
#[derive(Debug, Clone, Copy)]
struct Limit {
    per_minute: NonZeroU32,
    burst: NonZeroU32,
}

impl Limit {
    fn new(per_minute: u32, burst: u32) -> Option<Self> {
        Some(Self {
            per_minute: NonZeroU32::new(per_minute)?,
            burst: NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN),
        })
    }

    /// Milliseconds between two requests at the sustained rate (at least 1).
    fn interval_ms(self) -> u64 {
        (60_000 / u64::from(self.per_minute.get())).max(1)
    }

    /// Time for a spent allowance to be whole again.
    fn full_refill(self) -> Duration {
        Duration::from_millis(self.interval_ms() * u64::from(self.burst.get()))
    }
}

/// The answer to one check.
#[derive(Debug, Clone)]
pub struct Decision {
    outcome: Outcome,
}

#[derive(Debug, Clone, Copy)]
enum Outcome {
    /// The class is not limited.
    Unlimited,
    Allowed {
        limit: u32,
        remaining: u32,
        reset: Duration,
    },
    Limited {
        limit: u32,
        reset: Duration,
        retry_after: Duration,
    },
}

const RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
const RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
const RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

/// Whole seconds, rounded up (a client told 0 would retry at once).
fn ceil_secs(d: Duration) -> u64 {
    d.as_millis().div_ceil(1000).try_into().unwrap_or(u64::MAX)
}

impl Decision {
    pub(crate) fn unlimited() -> Self {
        Self {
            outcome: Outcome::Unlimited,
        }
    }

    /// A refusal (limit 10, whole again in a minute, retry in 200 ms), for
    /// the tests of what answers it.
    #[cfg(test)]
    pub fn limited_for_tests() -> Self {
        Self {
            outcome: Outcome::Limited {
                limit: 10,
                reset: Duration::from_secs(60),
                retry_after: Duration::from_millis(200),
            },
        }
    }

    /// Whether the request may proceed.
    pub fn is_allowed(&self) -> bool {
        !matches!(self.outcome, Outcome::Limited { .. })
    }

    /// Sets `RateLimit-Limit` (the burst), `RateLimit-Remaining` (requests
    /// left now) and `RateLimit-Reset` (seconds until the allowance is
    /// whole), and `Retry-After` when limited. Nothing when unlimited.
    pub fn set_headers(&self, headers: &mut HeaderMap) {
        let (limit, remaining, reset) = match self.outcome {
            Outcome::Unlimited => return,
            Outcome::Allowed {
                limit,
                remaining,
                reset,
            } => (limit, remaining, reset),
            Outcome::Limited {
                limit,
                reset,
                retry_after,
            } => {
                headers.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(ceil_secs(retry_after).max(1)),
                );
                (limit, 0, reset)
            }
        };
        headers.insert(RATELIMIT_LIMIT, HeaderValue::from(limit));
        headers.insert(RATELIMIT_REMAINING, HeaderValue::from(remaining));
        headers.insert(RATELIMIT_RESET, HeaderValue::from(ceil_secs(reset)));
    }

    /// Whole seconds to wait (at least 1), when the request is over its
    /// limit.
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self.outcome {
            Outcome::Limited { retry_after, .. } => Some(ceil_secs(retry_after).max(1)),
            _ => None,
        }
    }
}

type LocalLimiter =
    RateLimiter<Subject, DefaultKeyedStateStore<Subject>, DefaultClock, StateInformationMiddleware>;

/// One class's limit and its per-replica limiter.
struct ClassLimit {
    limit: Limit,
    local: Arc<LocalLimiter>,
}

pub struct RateLimit {
    classes: [Option<ClassLimit>; 4],
    redis: Option<RedisGcra>,
    /// Subjects refused for their failures (redirect misses, wrong link passwords), until
    /// when (per replica: a client learns of it on each replica by one more failure there,
    /// no more).
    blocks: moka::future::Cache<(Class, Subject), Instant>,
    metrics: Arc<Metrics>,
}

impl RateLimit {
    /// The limits of `settings`; shared through `redis` when given.
    pub fn new(
        settings: &RateLimitSettings,
        redis: Option<Arc<SharedRedis>>,
        metrics: Arc<Metrics>,
    ) -> Self {
        if settings.trust_proxy_headers.is_some() {
            tracing::warn!(
                "TRUST_PROXY_HEADERS is ignored: proxy headers are honoured only from TRUSTED_PROXIES"
            );
        }
        let class = |per_minute, burst| {
            Limit::new(per_minute, burst).map(|limit| ClassLimit {
                limit,
                local: local_limiter(limit),
            })
        };
        let classes = [
            class(settings.rate_limit_per_minute, settings.rate_limit_burst),
            class(
                settings.create_rate_limit_per_minute,
                settings.create_rate_limit_burst,
            ),
            class(
                settings.redirect_miss_limit_per_minute,
                settings.redirect_miss_burst,
            ),
            class(
                settings.link_password_limit_per_minute,
                settings.link_password_burst,
            ),
        ];
        let redis = redis.map(|redis| RedisGcra {
            redis,
            script: redis::Script::new(GCRA),
        });
        // Every series of the fixed label sets exists from the start (at
        // 0), so a rate over them is defined before the first event.
        for class in Class::ALL {
            for allowed in [true, false] {
                let labels = [class.as_str(), decision_label(allowed)];
                metrics.rate_limit_decisions.with_label_values(&labels);
            }
            for reason in Unavailable::REASONS {
                metrics
                    .rate_limit_fallbacks
                    .with_label_values(&[class.as_str(), reason]);
            }
        }
        let longest_block = [Class::RedirectMiss, Class::LinkPassword]
            .iter()
            .filter_map(|class| classes[class.index()].as_ref())
            .map(|c| c.limit.full_refill())
            .max()
            .unwrap_or(Duration::from_secs(1));
        Self {
            classes,
            redis,
            blocks: moka::future::Cache::builder()
                .max_capacity(BLOCKS)
                .time_to_live(longest_block)
                .build(),
            metrics,
        }
    }

    /// Checks and spends one request of `class` for `subject`: through
    /// Redis when configured and answering, else this replica's limiter.
    /// Counted in `shortener_rate_limit_decisions_total`.
    pub async fn check(&self, class: Class, subject: &Subject) -> Decision {
        let Some(limits) = &self.classes[class.index()] else {
            return Decision::unlimited();
        };
        let subject = subject.normalized();
        let outcome = match &self.redis {
            Some(redis) => match redis.check(class, limits.limit, &subject).await {
                Ok(outcome) => outcome,
                // The `reason` label: skipped (Redis failed less than a
                // second ago), error or timeout.
                Err(fallback) => {
                    self.metrics
                        .rate_limit_fallbacks
                        .with_label_values(&[class.as_str(), fallback.as_str()])
                        .inc();
                    local_check(limits, &subject)
                }
            },
            None => local_check(limits, &subject),
        };
        let decision = Decision { outcome };
        self.count(class, decision.is_allowed());
        decision
    }

    fn count(&self, class: Class, allowed: bool) {
        self.metrics
            .rate_limit_decisions
            .with_label_values(&[class.as_str(), decision_label(allowed)])
            .inc();
    }

    /// The refusal of a request that needs a lookup beyond the in-process
    /// cache from a client over its redirect-miss limit (a replica-local
    /// check: no Redis round trip).
    pub async fn refuse_miss(&self, client: IpAddr) -> Option<Decision> {
        self.refuse(Class::RedirectMiss, &Subject::Client(client))
            .await
    }

    /// Spends one redirect miss (a 404 after a lookup beyond the in-process
    /// cache) of `client`'s allowance; over it, the client's lookups are
    /// refused until the allowance has room again.
    pub async fn record_miss(&self, client: IpAddr) {
        self.record_failure(Class::RedirectMiss, Subject::Client(client))
            .await;
    }

    /// The refusal of `subject`, blocked for its failures of `class` (a replica-local check:
    /// no Redis round trip). Only failures count: a client that gets it right is never
    /// refused.
    pub async fn refuse(&self, class: Class, subject: &Subject) -> Option<Decision> {
        let limits = self.classes[class.index()].as_ref()?;
        let until = self.blocks.get(&(class, subject.normalized())).await?;
        let retry_after = until.checked_duration_since(Instant::now())?;
        self.count(class, false);
        Some(Decision {
            outcome: Outcome::Limited {
                limit: limits.limit.burst.get(),
                reset: limits.limit.full_refill(),
                retry_after,
            },
        })
    }

    /// Spends one failure of `class` from `subject`'s allowance (across replicas, through
    /// Redis when configured); over it, [`RateLimit::refuse`] refuses the subject until the
    /// allowance has room again.
    pub async fn record_failure(&self, class: Class, subject: Subject) {
        let decision = self.check(class, &subject).await;
        if let Outcome::Limited { retry_after, .. } = decision.outcome {
            self.blocks
                .insert((class, subject.normalized()), Instant::now() + retry_after)
                .await;
        }
    }
}

fn local_limiter(limit: Limit) -> Arc<LocalLimiter> {
    let quota = Quota::per_minute(limit.per_minute).allow_burst(limit.burst);
    let limiter =
        Arc::new(RateLimiter::keyed(quota).with_middleware::<StateInformationMiddleware>());
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
}

fn local_check(limits: &ClassLimit, subject: &Subject) -> Outcome {
    let limit = limits.limit;
    let burst = limit.burst.get();
    match limits.local.check_key(subject) {
        Ok(snapshot) => {
            let remaining = snapshot.remaining_burst_capacity();
            let spent = u64::from(burst.saturating_sub(remaining));
            Outcome::Allowed {
                limit: burst,
                remaining,
                reset: Duration::from_millis(spent * limit.interval_ms()),
            }
        }
        Err(not_until) => Outcome::Limited {
            limit: burst,
            reset: limit.full_refill(),
            retry_after: not_until.wait_time_from(DefaultClock::default().now()),
        },
    }
}

/// The shared limiter: [`GCRA`] in Redis.
struct RedisGcra {
    redis: Arc<SharedRedis>,
    script: redis::Script,
}

impl RedisGcra {
    async fn check(
        &self,
        class: Class,
        limit: Limit,
        subject: &Subject,
    ) -> Result<Outcome, Unavailable> {
        let key = self.redis.key(format_args!(
            "rl:{}:{}",
            class.as_str(),
            subject.redis_part()
        ));
        let mut invocation = self.script.key(key);
        invocation.arg(limit.interval_ms()).arg(limit.burst.get());
        let mut conn = self.redis.connection();
        let call = invocation.invoke_async::<(i64, i64, i64, i64)>(&mut conn);
        let (allowed, remaining, retry_ms, reset_ms) =
            self.redis.call(call).await.inspect_err(|failure| {
                if let Unavailable::Error(err) = failure {
                    tracing::debug!(error = %err, "rate limit check in Redis failed; limiting locally");
                }
            })?;
        let ms = |n: i64| Duration::from_millis(u64::try_from(n).unwrap_or(0));
        let burst = limit.burst.get();
        Ok(if allowed == 1 {
            Outcome::Allowed {
                limit: burst,
                remaining: u32::try_from(remaining).unwrap_or(0).min(burst),
                reset: ms(reset_ms),
            }
        } else {
            Outcome::Limited {
                limit: burst,
                reset: ms(reset_ms),
                retry_after: ms(retry_ms),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv6_clients_are_counted_per_slash_64() {
        let a = Subject::Client(ip("2001:db8:1:2:aaaa::1")).normalized();
        let b = Subject::Client(ip("2001:db8:1:2:bbbb::9")).normalized();
        assert_eq!(a, b);
        assert_eq!(a, Subject::Client(ip("2001:db8:1:2::")));
        assert_eq!(
            Subject::Client(ip("::ffff:192.0.2.1")).normalized(),
            Subject::Client(ip("192.0.2.1"))
        );
    }

    #[test]
    fn decisions_set_the_ietf_headers() {
        let allowed = Decision {
            outcome: Outcome::Allowed {
                limit: 10,
                remaining: 7,
                reset: Duration::from_millis(1500),
            },
        };
        let mut h = HeaderMap::new();
        allowed.set_headers(&mut h);
        assert_eq!(h["ratelimit-limit"], "10");
        assert_eq!(h["ratelimit-remaining"], "7");
        assert_eq!(h["ratelimit-reset"], "2");
        assert!(allowed.retry_after_secs().is_none());
        let limited = Decision::limited_for_tests();
        assert_eq!(limited.retry_after_secs(), Some(1));
        let mut h = HeaderMap::new();
        limited.set_headers(&mut h);
        assert_eq!(h["retry-after"], "1");
        assert_eq!(h["ratelimit-remaining"], "0");
        let mut h = HeaderMap::new();
        Decision::unlimited().set_headers(&mut h);
        assert!(h.is_empty());
    }

    #[tokio::test]
    async fn the_local_limiter_spends_the_burst_then_refuses() {
        let limits = ClassLimit {
            limit: Limit::new(1, 3).unwrap(),
            local: local_limiter(Limit::new(1, 3).unwrap()),
        };
        let who = Subject::Client(ip("192.0.2.1"));
        let remaining: Vec<u32> = (0..3)
            .map(|_| match local_check(&limits, &who) {
                Outcome::Allowed { remaining, .. } => remaining,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(remaining, [2, 1, 0]);
        assert!(matches!(
            local_check(&limits, &who),
            Outcome::Limited { .. }
        ));
        let other = Subject::Client(ip("192.0.2.2"));
        assert!(matches!(
            local_check(&limits, &other),
            Outcome::Allowed { .. }
        ));
    }
}
