//! The one Redis a replica shares with the others, and the one connection
//! to it that the link cache, the rate limiter and key revocations all use:
//! its address, the prefix of every key and channel, the time limit of a
//! call, and the second it is skipped after a failure, so that a sick Redis
//! costs at most one timeout a second whoever calls it. What each user does
//! about a failure (serve from the database, limit locally, trust keys a
//! little longer) is its own business; that Redis failed is this module's.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig, PubSub};
use redis::{Client, RedisError, RedisResult};

use crate::metrics::Metrics;

/// After a failed call, Redis is not asked again for this long.
const SKIP_AFTER_FAILURE: Duration = Duration::from_secs(1);

/// Why a call gave no answer.
#[derive(Debug)]
pub enum Unavailable {
    /// Not tried: a call failed less than a second ago.
    Skipped,
    Error(RedisError),
    Timeout,
}

impl Unavailable {
    /// Every label of [`Unavailable::as_str`].
    pub const REASONS: [&'static str; 3] = ["skipped", "error", "timeout"];

    /// The label metrics count it under.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Skipped => "skipped",
            Self::Error(_) => "error",
            Self::Timeout => "timeout",
        }
    }
}

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Skipped => f.write_str("skipped after a recent failure"),
            Self::Error(err) => write!(f, "{err}"),
            Self::Timeout => f.write_str("timed out"),
        }
    }
}

pub struct SharedRedis {
    client: Client,
    connection: ConnectionManager,
    prefix: String,
    timeout: Duration,
    epoch: Instant,
    /// Milliseconds since `epoch` before which Redis is not asked.
    skip_until_ms: AtomicU64,
    /// The last call failed (logged once per outage).
    down: AtomicBool,
    /// `shortener_redis_up`, in a serving replica.
    metrics: Option<Arc<Metrics>>,
}

impl SharedRedis {
    /// Prepares the connection to `url`; nothing is dialled until the first
    /// call, so the service starts (and serves from the database) while
    /// Redis is down. Each call may take `timeout`. With `metrics`, whether
    /// Redis answers is `shortener_redis_up`.
    pub fn open(
        url: &str,
        prefix: &str,
        timeout: Duration,
        metrics: Option<Arc<Metrics>>,
    ) -> RedisResult<Arc<Self>> {
        let client = Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout.max(Duration::from_millis(250))))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let connection = ConnectionManager::new_lazy_with_config(client.clone(), config)?;
        Ok(Arc::new(Self {
            client,
            connection,
            prefix: prefix.to_owned(),
            timeout,
            epoch: Instant::now(),
            skip_until_ms: AtomicU64::new(0),
            down: AtomicBool::new(false),
            metrics,
        }))
    }

    /// Whether the last call (whoever made it: a lookup, a limit, the
    /// heartbeat) got an answer: what `/health` reports, without a call.
    pub fn up(&self) -> bool {
        !self.down.load(Ordering::Relaxed)
    }

    fn record(&self, up: bool, failure: Option<&Unavailable>) {
        if let Some(metrics) = &self.metrics {
            metrics.redis_up.set(i64::from(up));
        }
        let was_down = self.down.swap(!up, Ordering::Relaxed);
        match failure {
            Some(failure) if !was_down => {
                tracing::warn!(error = %failure, "Redis unavailable; serving without it");
            }
            None if was_down => tracing::info!("Redis is back"),
            _ => {}
        }
    }

    /// `PREFIX:name`: every key and channel of this installation.
    pub fn key(&self, name: impl fmt::Display) -> String {
        format!("{}:{name}", self.prefix)
    }

    /// The multiplexed connection, for a call to pass to [`Self::call`].
    pub fn connection(&self) -> ConnectionManager {
        self.connection.clone()
    }

    /// A subscription of its own to `channel` (pub/sub needs a connection of
    /// its own), made within `patience`.
    pub async fn subscribe(&self, channel: &str, patience: Duration) -> RedisResult<PubSub> {
        let timed_out = || RedisError::from((redis::ErrorKind::Io, "Redis timed out"));
        let mut pubsub = tokio::time::timeout(patience, self.client.get_async_pubsub())
            .await
            .map_err(|_| timed_out())??;
        tokio::time::timeout(patience, pubsub.subscribe(channel))
            .await
            .map_err(|_| timed_out())??;
        Ok(pubsub)
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The time limit of a call.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Runs one call within the time limit, unless Redis failed less than a
    /// second ago; a failure skips Redis for the next second.
    pub async fn call<T>(
        &self,
        call: impl Future<Output = RedisResult<T>>,
    ) -> Result<T, Unavailable> {
        if self.now_ms() < self.skip_until_ms.load(Ordering::Relaxed) {
            return Err(Unavailable::Skipped);
        }
        self.call_patiently(self.timeout, call).await
    }

    /// Runs one call within `limit`, even while Redis is being skipped: for
    /// the calls that find out whether it is back (the heartbeat) or must
    /// get through if they can (announcing a revocation). A failure skips
    /// Redis for everyone else for the next second.
    pub async fn call_patiently<T>(
        &self,
        limit: Duration,
        call: impl Future<Output = RedisResult<T>>,
    ) -> Result<T, Unavailable> {
        let outcome = match tokio::time::timeout(limit, call).await {
            Ok(Ok(value)) => {
                self.record(true, None);
                return Ok(value);
            }
            Ok(Err(err)) => Unavailable::Error(err),
            Err(_) => Unavailable::Timeout,
        };
        let skip = u64::try_from(SKIP_AFTER_FAILURE.as_millis()).unwrap_or(1000);
        self.skip_until_ms
            .store(self.now_ms() + skip, Ordering::Relaxed);
        self.record(false, Some(&outcome));
        Err(outcome)
    }
}
