//! The Redis tier: shared by all replicas, reached through the replica's
//! one Redis connection ([`SharedRedis`]: short time limits, and skipped for
//! a second after a failure, so that a sick Redis costs the redirect path at
//! most one timeout per second, not one per request).
//!
//! It also keeps the state coherence depends on: changes whose write or
//! announcement failed (retried in the background until delivered), and
//! whether the invalidation feed can be trusted right now (see
//! [`SharedCache::coherent`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::AsyncCommands;

use crate::domain::{LinkPolicy, LinkSettings, PasswordHashed, RedirectType, Rules};
use crate::metrics::Metrics;
use crate::shared_redis::{self, SharedRedis};
use crate::store::RedirectTarget;

/// Channel (under the key prefix) on which replicas announce changed short
/// codes, space-separated (codes never contain spaces).
const INVALIDATION_CHANNEL: &str = "invalidate";
const WARM_CHUNK: usize = 500;
/// After a Redis failure, or after the invalidation feed comes back, the
/// feed is not trusted for this long: a change another replica made
/// meanwhile may not have been announced yet (its retry runs every
/// [`super::cache::REPAIR_INTERVAL`], after at most the second Redis is
/// skipped after a failure).
pub const UNRELIABLE_FOR: Duration = Duration::from_secs(5);

/// Stores `ARGV[2]` under `KEYS[1]` unless the value there has a higher
/// version (values start with `<format>:<version>|`, or with `<version>|` as
/// builds before link policies wrote them). Both a write's new value and a
/// fill from a possibly older database read go through it, so a slow fill
/// can never overwrite a newer write.
const PUT_IF_NEWER: &str = r"
local current = redis.call('GET', KEYS[1])
if current then
  local version = tonumber(string.match(current, '^%d+:(%d+)|') or string.match(current, '^(%d+)|'))
  if version and version > tonumber(ARGV[1]) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
return 1
";

pub struct SharedCache {
    redis: Arc<SharedRedis>,
    ttl_secs: u64,
    put_if_newer: redis::Script,
    epoch: Instant,
    /// The invalidation feed is subscribed.
    feed_up: AtomicBool,
    /// Milliseconds since `epoch` before which the feed is not trusted.
    unreliable_until_ms: AtomicU64,
    /// Set whenever the feed may have missed a message; the first coherent
    /// lookup after it flushes L1 ([`SharedCache::take_gap`]).
    gap: AtomicBool,
    /// Changes not yet delivered (written and announced), newest version
    /// per code.
    pending: Mutex<HashMap<String, RedirectTarget>>,
    /// `pending.len()`, readable on the redirect path without the lock.
    pending_len: AtomicUsize,
    metrics: Arc<Metrics>,
}

/// The format of the values this build writes: `4:` then the version, the URL id, the owner,
/// `1`/`0` for active, the redirect status, the expiry (Unix seconds), the cap, the password's
/// hash (a PHC string, which has no `|`), `1`/`0` for query forwarding, the fallback URL's
/// length in bytes and the rules' (their JSON), each followed by `|`, then the fallback URL,
/// the rules and the target URL (each may contain `|`). A value in another
/// format is not this build's to read: it is a miss (an older build's, during a rolling
/// upgrade: refilled from the database; older builds take this build's values for misses in
/// the same way, as their format prefix differs).
const FORMAT: &str = "4:";

fn encode(t: &RedirectTarget) -> String {
    let policy = t.policy.as_deref();
    let fallback = policy.and_then(|p| p.fallback_url.as_deref()).unwrap_or("");
    let rules = policy
        .filter(|p| !p.rules.is_empty())
        .map(|p| p.rules.stored_form())
        .unwrap_or_default();
    format!(
        "{FORMAT}{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{fallback}{rules}{}",
        t.version,
        t.url_id,
        t.user_id.map(|id| id.to_string()).unwrap_or_default(),
        u8::from(t.is_active),
        t.redirect_type().status(),
        policy
            .and_then(|p| p.expires_at)
            .map(|at| at.and_utc().timestamp().to_string())
            .unwrap_or_default(),
        policy
            .and_then(|p| p.max_visits)
            .map(|max| max.to_string())
            .unwrap_or_default(),
        policy
            .and_then(|p| p.password.as_ref())
            .map_or("", |hash| hash.as_str()),
        u8::from(policy.is_some_and(|p| p.forward_query)),
        fallback.len(),
        rules.len(),
        t.original_url
    )
}

fn decode(code: &str, raw: &str) -> Option<RedirectTarget> {
    let optional = |part: &str| -> Option<Option<i64>> {
        match part {
            "" => Some(None),
            n => n.parse().ok().map(Some),
        }
    };
    let mut parts = raw.strip_prefix(FORMAT)?.splitn(12, '|');
    let version = parts.next()?.parse().ok()?;
    let url_id = parts.next()?.parse().ok()?;
    let user_id = optional(parts.next()?)?;
    let is_active = parts.next()? == "1";
    let redirect_type = RedirectType::from_status(parts.next()?.parse().ok()?).ok()?;
    let expires_at = match optional(parts.next()?)? {
        Some(secs) => Some(chrono::DateTime::from_timestamp(secs, 0)?.naive_utc()),
        None => None,
    };
    let max_visits = optional(parts.next()?)?;
    // A hash that does not parse makes the value a miss, never an open link.
    let password = match parts.next()? {
        "" => None,
        hash => Some(PasswordHashed::stored(hash)?),
    };
    let forward_query = parts.next()? == "1";
    let fallback_len: usize = parts.next()?.parse().ok()?;
    let rules_len: usize = parts.next()?.parse().ok()?;
    let rest = parts.next()?;
    let (fallback, rest) = (rest.get(..fallback_len)?, rest.get(fallback_len..)?);
    let (rules, original_url) = (rest.get(..rules_len)?, rest.get(rules_len..)?);
    let fallback_url = (!fallback.is_empty()).then(|| fallback.to_owned());
    // Rules that do not read make the value a miss (the database has them).
    let rules = match rules {
        "" => Rules::default(),
        json => Rules::stored(json)?,
    };
    Some(RedirectTarget {
        short_code: code.to_owned(),
        url_id,
        user_id,
        original_url: original_url.to_owned(),
        is_active,
        version,
        policy: LinkPolicy::of(LinkSettings {
            redirect_type,
            expires_at,
            max_visits,
            fallback_url,
            password,
            rules,
            forward_query,
        }),
    })
}

/// Why the shared tier gave no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unavailable {
    /// Redis was not asked: a call failed less than a second ago.
    Skipped,
    /// The call failed or timed out.
    Failed,
}

impl Unavailable {
    /// The `result` label of `shortener_cache_lookups_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Skipped => "skipped",
            Self::Failed => "error",
        }
    }
}

impl SharedCache {
    /// The tier on `redis`, its entries living `ttl`.
    pub fn new(redis: Arc<SharedRedis>, ttl: Duration, metrics: Arc<Metrics>) -> Self {
        Self {
            redis,
            ttl_secs: ttl.as_secs().max(1),
            put_if_newer: redis::Script::new(PUT_IF_NEWER),
            epoch: Instant::now(),
            feed_up: AtomicBool::new(false),
            unreliable_until_ms: AtomicU64::new(0),
            gap: AtomicBool::new(false),
            pending: Mutex::new(HashMap::new()),
            pending_len: AtomicUsize::new(0),
            metrics,
        }
    }

    /// The replica's Redis.
    pub fn redis(&self) -> &SharedRedis {
        &self.redis
    }

    fn key(&self, code: &str) -> String {
        self.redis.key(format_args!("code:{code}"))
    }

    pub fn channel(&self) -> String {
        self.redis.key(INVALIDATION_CHANNEL)
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// A call failed, or was skipped because one failed a moment ago
    /// (whoever made it): messages of the feed may have been missed.
    fn failed(&self, what: &str, err: &dyn std::fmt::Display) {
        self.distrust_feed();
        tracing::debug!(error = %err, operation = what, "Redis call for the cache failed");
    }

    /// The feed may have missed messages: not trusted until
    /// [`UNRELIABLE_FOR`] from now.
    fn distrust_feed(&self) {
        let window_ms = u64::try_from(UNRELIABLE_FOR.as_millis()).unwrap_or(5000);
        self.unreliable_until_ms
            .fetch_max(self.now_ms() + window_ms, Ordering::AcqRel);
        self.gap.store(true, Ordering::Release);
    }

    /// The invalidation listener reports its subscription. A restored feed
    /// is trusted only after [`UNRELIABLE_FOR`]: messages sent while it was
    /// away are gone, and the changes behind them may still be queued on
    /// another replica.
    pub fn feed(&self, up: bool, restored: bool) {
        self.feed_up.store(up, Ordering::Release);
        if !up || restored {
            self.distrust_feed();
        }
    }

    /// Can this replica trust its L1 for the full TTL and read Redis? Yes
    /// when the feed is subscribed, no Redis call failed in the last
    /// [`UNRELIABLE_FOR`] (nor did the feed come back within it), and no
    /// change of ours is waiting to be delivered. Otherwise another
    /// replica's change may not have reached us (or Redis), so the caller
    /// uses the short TTL and the database instead.
    pub fn coherent(&self) -> bool {
        self.feed_up.load(Ordering::Acquire)
            && self.now_ms() >= self.unreliable_until_ms.load(Ordering::Acquire)
            && self.pending_count() == 0
    }

    /// Sets `shortener_cache_coherent` (by the repair task, not per lookup).
    pub fn report_coherence(&self) {
        self.metrics.cache_coherent.set(i64::from(self.coherent()));
    }

    /// True once after the feed may have missed messages. Read before the
    /// swap, so the redirect path only writes the flag when it is set.
    pub fn take_gap(&self) -> bool {
        self.gap.load(Ordering::Acquire) && self.gap.swap(false, Ordering::AcqRel)
    }

    fn pending_count(&self) -> usize {
        self.pending_len.load(Ordering::Acquire)
    }

    fn set_pending(&self, len: usize) {
        self.pending_len.store(len, Ordering::Release);
        self.metrics
            .cache_invalidations_pending
            .set(i64::try_from(len).unwrap_or(i64::MAX));
    }

    /// Queues changes whose write or announcement failed, for
    /// [`SharedCache::redeliver`]; a newer version of a code replaces an
    /// older one.
    pub fn defer(&self, targets: &[RedirectTarget]) {
        let Ok(mut pending) = self.pending.lock() else {
            tracing::error!("cache change queue poisoned; relying on the short TTL");
            return;
        };
        let was_empty = pending.is_empty();
        for target in targets {
            match pending.get(&target.short_code) {
                Some(queued) if queued.version > target.version => {}
                _ => {
                    pending.insert(target.short_code.clone(), target.clone());
                }
            }
        }
        self.set_pending(pending.len());
        if was_empty {
            tracing::warn!(
                codes = targets.len(),
                "cache change not delivered to Redis; retrying in the background"
            );
        }
    }

    /// Writes and announces the queued changes (the write is version
    /// checked, so an old value never replaces a newer one). Returns how
    /// many are still queued.
    pub async fn redeliver(&self) -> usize {
        let queued: Vec<RedirectTarget> = match self.pending.lock() {
            Ok(pending) => pending.values().cloned().collect(),
            Err(_) => return 1,
        };
        if queued.is_empty() {
            return 0;
        }
        for target in &queued {
            if self.put_if_newer(target).await.is_err() {
                return queued.len();
            }
        }
        let codes: Vec<&str> = queued.iter().map(|t| t.short_code.as_str()).collect();
        if self.publish(&codes).await.is_err() {
            return queued.len();
        }
        let Ok(mut pending) = self.pending.lock() else {
            return 1;
        };
        for target in &queued {
            if pending
                .get(&target.short_code)
                .is_some_and(|p| p.version <= target.version)
            {
                pending.remove(&target.short_code);
            }
        }
        let left = pending.len();
        self.set_pending(left);
        tracing::info!(
            codes = queued.len(),
            "delayed cache changes delivered to Redis"
        );
        left
    }

    /// Runs one Redis call, recording failures.
    async fn call<T, F>(&self, what: &str, call: F) -> Result<T, Unavailable>
    where
        F: std::future::Future<Output = redis::RedisResult<T>>,
    {
        match self.redis.call(call).await {
            Ok(value) => Ok(value),
            Err(shared_redis::Unavailable::Skipped) => {
                self.distrust_feed();
                Err(Unavailable::Skipped)
            }
            Err(failure) => {
                self.failed(what, &failure);
                Err(Unavailable::Failed)
            }
        }
    }

    #[tracing::instrument(target = "shortener::trace", name = "cache.get", level = "debug", skip_all, fields(otel.kind = "client", db.system.name = "redis", db.operation.name = "GET", cache.tier = "redis", cache.result = tracing::field::Empty))]
    pub async fn get(&self, code: &str) -> Result<Option<RedirectTarget>, Unavailable> {
        let mut conn = self.redis.connection();
        let raw: Result<Option<String>, _> = self.call("get", conn.get(self.key(code))).await;
        let found = raw.map(|raw| raw.and_then(|raw| decode(code, &raw)));
        let result = match &found {
            Ok(Some(_)) => "hit",
            Ok(None) => "miss",
            Err(unavailable) => unavailable.as_str(),
        };
        tracing::Span::current().record("cache.result", result);
        found
    }

    #[tracing::instrument(target = "shortener::trace", name = "cache.put", level = "debug", skip_all, fields(otel.kind = "client", db.system.name = "redis", db.operation.name = "EVALSHA", cache.tier = "redis", cache.result = tracing::field::Empty))]
    pub async fn put_if_newer(&self, target: &RedirectTarget) -> Result<bool, Unavailable> {
        let mut conn = self.redis.connection();
        let mut invocation = self.put_if_newer.prepare_invoke();
        invocation
            .key(self.key(&target.short_code))
            .arg(target.version)
            .arg(encode(target))
            .arg(self.ttl_secs);
        let written: Result<i64, _> = self.call("put", invocation.invoke_async(&mut conn)).await;
        // Failures are counted and logged by `call`; a refused put is a newer
        // version already there.
        let result = match written {
            Ok(1) => "written",
            Ok(_) => "kept_newer",
            Err(unavailable) => unavailable.as_str(),
        };
        tracing::Span::current().record("cache.result", result);
        written.map(|n| n == 1)
    }

    /// Evicts `codes` on every replica (they evict on the message).
    #[tracing::instrument(target = "shortener::trace", name = "cache.invalidate", level = "debug", skip_all, fields(otel.kind = "client", db.system.name = "redis", db.operation.name = "PUBLISH", cache.tier = "redis", cache.codes = codes.len(), cache.result = tracing::field::Empty))]
    pub async fn publish(&self, codes: &[&str]) -> Result<(), Unavailable> {
        let mut conn = self.redis.connection();
        let message = codes.join(" ");
        let published: Result<i64, _> = self
            .call("publish", conn.publish(self.channel(), message))
            .await;
        let result = match published {
            Ok(_) => "ok",
            Err(unavailable) => unavailable.as_str(),
        };
        tracing::Span::current().record("cache.result", result);
        published.map(|_| ())
    }

    /// Adds entries without replacing any (`SET NX`), pipelined.
    pub async fn warm(&self, targets: &[RedirectTarget]) {
        for chunk in targets.chunks(WARM_CHUNK) {
            let mut pipe = redis::pipe();
            for target in chunk {
                pipe.cmd("SET")
                    .arg(self.key(&target.short_code))
                    .arg(encode(target))
                    .arg("EX")
                    .arg(self.ttl_secs)
                    .arg("NX")
                    .ignore();
            }
            let mut conn = self.redis.connection();
            if self
                .call("warm", pipe.query_async::<()>(&mut conn))
                .await
                .is_err()
            {
                return;
            }
        }
    }

    /// The heartbeat: does Redis answer right now?
    pub async fn ping(&self) -> bool {
        let mut conn = self.redis.connection();
        let ping = async move { redis::cmd("PING").query_async::<String>(&mut conn).await };
        let patience = self.redis.timeout().max(Duration::from_millis(500));
        match self.redis.call_patiently(patience, ping).await {
            Ok(_) => true,
            Err(failure) => {
                self.failed("ping", &failure);
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_including_separators_in_urls() {
        let target = RedirectTarget {
            short_code: "abc".into(),
            url_id: 7,
            user_id: None,
            original_url: "https://e.com/a|b?c=1|2".into(),
            is_active: true,
            version: 3,
            policy: None,
        };
        assert_eq!(decode("abc", &encode(&target)), Some(target.clone()));
        let owned = RedirectTarget {
            user_id: Some(9),
            is_active: false,
            ..target.clone()
        };
        assert_eq!(decode("abc", &encode(&owned)), Some(owned));
        let expires = crate::domain::timestamp::parse("2027-01-02 03:04:05").unwrap();
        let with_policy = RedirectTarget {
            policy: LinkPolicy::of(LinkSettings {
                redirect_type: RedirectType::Permanent,
                expires_at: Some(expires),
                max_visits: Some(5),
                fallback_url: Some("https://f.example/x|y|9|".into()),
                ..Default::default()
            }),
            ..target.clone()
        };
        assert_eq!(decode("abc", &encode(&with_policy)), Some(with_policy));
        let protected = RedirectTarget {
            policy: LinkPolicy::of(LinkSettings {
                fallback_url: Some("https://f.example/|".into()),
                password: Some(PasswordHashed::of("open sesame").unwrap()),
                ..Default::default()
            }),
            ..target.clone()
        };
        let encoded = encode(&protected);
        assert_eq!(decode("abc", &encode(&protected)), Some(protected));
        // A hash that does not parse is a miss, never a link without its password.
        let broken = encoded.replacen("$argon2id$", "$nonsense$", 1);
        assert_eq!(decode("abc", &broken), None);
        let rules: Vec<crate::domain::Rule> = serde_json::from_str(
            r#"[{"query":{"name":"a|b","value":"|"},"target":"https://r.example/|"},
                {"device":"ios","language":"fr","target":"https://i.example/"}]"#,
        )
        .unwrap();
        let ruled = RedirectTarget {
            policy: LinkPolicy::of(LinkSettings {
                fallback_url: Some("https://f.example/|".into()),
                rules: crate::domain::Rules::parse(rules, |_, t| Ok(t.into())).unwrap(),
                forward_query: true,
                ..Default::default()
            }),
            ..target.clone()
        };
        assert_eq!(decode("abc", &encode(&ruled)), Some(ruled));
        let only_status = RedirectTarget {
            policy: LinkPolicy::of(LinkSettings {
                redirect_type: RedirectType::Moved,
                ..Default::default()
            }),
            ..target
        };
        assert_eq!(decode("abc", &encode(&only_status)), Some(only_status));
        assert_eq!(decode("abc", "garbage"), None);
    }

    /// A value as builds before link policies (or before link passwords) wrote it is a miss
    /// here (it says nothing of a cap, or a password), and this build's values are misses
    /// there: their first field is not a number, or their format prefix another.
    #[test]
    fn values_of_the_older_formats_are_misses() {
        assert_eq!(decode("abc", "3|7||1|https://e.com/"), None);
        assert_eq!(decode("abc", "2:3|7||1|302|||0|https://e.com/"), None);
        assert_eq!(decode("abc", "3:3|7||1|302||||0|https://e.com/"), None);
        let target = RedirectTarget {
            short_code: "abc".into(),
            url_id: 7,
            user_id: None,
            original_url: "https://e.com/".into(),
            is_active: true,
            version: 3,
            policy: None,
        };
        let encoded = encode(&target);
        let first = encoded.split('|').next().unwrap();
        assert!(first.parse::<i64>().is_err(), "{encoded}");
        assert!(
            !encoded.starts_with("2:") && !encoded.starts_with("3:"),
            "{encoded}"
        );
    }
}
