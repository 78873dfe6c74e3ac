//! API keys: how a key is made, what is kept of it, issuing one (the same
//! road for `shortener keys create` and `POST /keys`), checking a presented
//! one ([`KeyCheck`]: who is calling, as a [`Caller`], and what they may
//! do), what a replica takes on trust, and revoking (one road for
//! `DELETE /keys/{id}`, `shortener keys revoke` and the deletion of a key's
//! user: [`KeyCheck::revoked`] on a replica, [`Revocations::announce`] from
//! the command line).
//!
//! A key is `shk_` and 32 characters of `[A-Za-z0-9]` from the thread-local
//! CSPRNG (about 190 bits). Only its SHA-256 is stored: with that much
//! entropy there is nothing to brute-force, so a slow password hash would
//! only slow every request down. Its first 12 characters are kept to
//! recognise it by.
//!
//! A presented key is either `ADMIN_API_KEY` (compared in constant time with
//! the hash kept in memory) or an issued key, looked up by its SHA-256.
//! Accepted keys are remembered for `KEY_TRUST_SECS` (5 s). A revocation
//! empties that memory on the replica that made it and, through a Redis
//! channel, on every other one; without Redis (or while it is away) the
//! others follow within `KEY_TRUST_SECS`.

use std::sync::{Arc, Weak};
use std::time::Duration;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::AuthMode;
use crate::domain::Timestamp;
use crate::shared_redis::SharedRedis;
use crate::store::{Actor, ApiKey, DynStore, KeyScope, NewApiKey, Store, StoreError, StoreResult};

const PREFIX: &str = "shk_";
const RANDOM_LEN: usize = 32;
const SHOWN_LEN: usize = 12;

/// Longest key name accepted.
pub const MAX_NAME_LEN: usize = 100;
/// Longest lifetime a key may be given at creation.
pub const MAX_EXPIRY_DAYS: u32 = 3650;

/// The SHA-256 of a key, as the store keeps it (lowercase hex).
pub fn sha256_hex(key: &str) -> String {
    format!("{:x}", Sha256::digest(key.as_bytes()))
}

/// What to issue.
#[derive(Debug, Clone)]
pub struct KeyRequest {
    pub name: String,
    pub scope: KeyScope,
    pub user_id: Option<i64>,
    pub expires_in_days: Option<u32>,
    /// The key issuing this one (`None`: the command line).
    pub created_by: Option<i64>,
}

impl KeyRequest {
    /// The rules a request must keep, as a message naming the field.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        let name = self.name.trim();
        if name.is_empty() || name.chars().count() > MAX_NAME_LEN {
            return Err(("name", format!("must be 1 to {MAX_NAME_LEN} characters")));
        }
        if name.chars().any(char::is_control) {
            return Err(("name", "must not contain control characters".into()));
        }
        match (self.scope, self.user_id) {
            (KeyScope::User, None) => {
                return Err(("user_id", "a `user` key must name its user".into()));
            }
            (KeyScope::Admin, Some(_)) => {
                return Err(("user_id", "an `admin` key cannot be bound to a user".into()));
            }
            _ => {}
        }
        if let Some(days) = self.expires_in_days
            && !(1..=MAX_EXPIRY_DAYS).contains(&days)
        {
            return Err(("expires_in_days", format!("must be 1 to {MAX_EXPIRY_DAYS}")));
        }
        Ok(())
    }

    fn expires_at(&self, now: Timestamp) -> Option<Timestamp> {
        self.expires_in_days
            .map(|days| now + chrono::Duration::days(i64::from(days)))
    }
}

/// A key just issued: the stored row and the key itself, shown this once
/// (the answer to `POST /keys`).
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
#[schema(as = CreatedKey)]
pub struct Issued {
    #[serde(flatten)]
    pub key: ApiKey,
    /// The key itself. Shown only here: store it now.
    pub secret: String,
}

/// Makes a fresh key and stores its hash. The request must have passed
/// [`KeyRequest::check`].
pub async fn issue(store: &dyn Store, request: KeyRequest) -> StoreResult<Issued> {
    let secret = generate();
    let key = store
        .create_api_key(NewApiKey {
            name: request.name.trim().to_owned(),
            scope: request.scope,
            user_id: request.user_id,
            secret_sha256: sha256_hex(&secret),
            prefix: secret[..SHOWN_LEN].to_owned(),
            expires_at: request.expires_at(crate::domain::now()),
            created_by: request.created_by,
        })
        .await?;
    Ok(Issued { key, secret })
}

/// Why a key was not revoked.
#[derive(Debug, thiserror::Error)]
pub enum RevokeError {
    /// The row stands for `ADMIN_API_KEY`, which is checked against the
    /// environment: revoking the row would change nothing.
    #[error(
        "this key is ADMIN_API_KEY: change the variable (or the instance's Secret) to replace it"
    )]
    Bootstrap,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Revokes key `id` in the store (the same road for `DELETE /keys/{id}`
/// and `shortener keys revoke`); revoking it again changes nothing. The
/// replicas must then hear of it: [`KeyCheck::revoked`] on a replica,
/// [`Revocations::announce`] elsewhere. (Deleting a user revokes their keys
/// in the same transaction, and tells the replicas the same way.)
pub async fn revoke(store: &dyn Store, id: i64) -> Result<ApiKey, RevokeError> {
    if store.get_api_key(id).await?.bootstrap {
        return Err(RevokeError::Bootstrap);
    }
    Ok(store.revoke_api_key(id).await?)
}

/// The key check of a replica: who presented a key (by its hash, as
/// [`sha256_hex`] writes it), asking the store only for keys neither
/// `ADMIN_API_KEY` nor accepted within `KEY_TRUST_SECS`. The keys it
/// accepted are taken on trust that long, and forgotten at every
/// revocation: its own ([`KeyCheck::revoked`]) or another replica's (heard
/// on the Redis channel).
pub struct KeyCheck {
    mode: AuthMode,
    bootstrap: Option<Bootstrap>,
    store: DynStore,
    accepted: Arc<Accepted>,
    revocations: Option<Revocations>,
}

/// `ADMIN_API_KEY`: its hash, and the id of the row that names it in events.
struct Bootstrap {
    hash: String,
    key_id: i64,
}

impl KeyCheck {
    /// With `admin_key`, makes sure a row names it (for event attribution);
    /// remembers accepted keys for `trust`; with `revocations`, follows the
    /// other replicas' revocations and announces its own.
    pub async fn new(
        mode: AuthMode,
        admin_key: Option<&str>,
        store: DynStore,
        trust: Duration,
        revocations: Option<Revocations>,
    ) -> StoreResult<Self> {
        let bootstrap = match admin_key.map(sha256_hex) {
            Some(hash) => Some(Bootstrap {
                key_id: store.bootstrap_api_key(&hash, "ADMIN_API_KEY").await?,
                hash,
            }),
            None => None,
        };
        let accepted = Arc::new(
            moka::future::Cache::builder()
                .max_capacity(ACCEPTED_CAPACITY)
                .time_to_live(trust)
                .build(),
        );
        if let Some(revocations) = &revocations {
            follow_revocations(revocations, Arc::downgrade(&accepted));
        }
        Ok(Self {
            mode,
            bootstrap,
            store,
            accepted,
            revocations,
        })
    }

    /// The caller, when it is known without asking the database: open
    /// mode, `ADMIN_API_KEY`, or a key accepted within `KEY_TRUST_SECS`.
    pub async fn known(&self, hash: Option<&str>) -> Option<Caller> {
        if self.mode == AuthMode::Open {
            return Some(Caller::OPEN);
        }
        let hash = hash?;
        if let Some(bootstrap) = &self.bootstrap
            && bool::from(bootstrap.hash.as_bytes().ct_eq(hash.as_bytes()))
        {
            return Some(Caller {
                key_id: Some(bootstrap.key_id),
                scope: KeyScope::Admin,
                user_id: None,
            });
        }
        let key = self.accepted.get(hash).await?;
        // Remembered while live; an expiry may fall within KEY_TRUST_SECS.
        key.is_live(crate::domain::now()).then(|| Caller::of(&key))
    }

    /// Looks the key with this hash up (recording its use): the caller it
    /// makes, or `None` for a key that is unknown, revoked or expired.
    pub async fn look_up(&self, hash: String) -> StoreResult<Option<Caller>> {
        let Some(key) = self.store.use_api_key(&hash).await? else {
            return Ok(None);
        };
        let caller = Caller::of(&key);
        self.accepted.insert(hash, Arc::new(key)).await;
        Ok(Some(caller))
    }

    /// After keys were revoked in the store (`DELETE /keys/{id}`, or with
    /// their user by `DELETE /users/{id}`): forgets every accepted key
    /// here, and tells the other replicas to do the same. If Redis cannot
    /// be told, they follow within `KEY_TRUST_SECS`.
    pub async fn revoked(&self, key_ids: &[i64]) {
        if key_ids.is_empty() {
            return;
        }
        self.accepted.invalidate_all();
        let Some(revocations) = &self.revocations else {
            return;
        };
        if let Err(err) = revocations.announce(key_ids).await {
            tracing::warn!(
                key_ids = ?key_ids,
                error = %err,
                "revocation not announced; other replicas follow within KEY_TRUST_SECS"
            );
        }
    }
}

/// The key behind a request, as far as access goes. The rules of what it
/// may do live here; handlers ask them about the data they touch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    /// `None` in `AUTH_MODE=open`.
    pub key_id: Option<i64>,
    pub scope: KeyScope,
    /// The one user a bound key may see.
    pub user_id: Option<i64>,
}

/// What a valid key may not do (a 403 in the API).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Forbidden(&'static str);

impl Caller {
    fn of(key: &ApiKey) -> Self {
        Self {
            key_id: Some(key.id),
            scope: key.scope,
            user_id: key.user_id,
        }
    }

    /// `AUTH_MODE=open`: anyone may do anything, as no one.
    pub const OPEN: Self = Self {
        key_id: None,
        scope: KeyScope::Admin,
        user_id: None,
    };

    /// Who to record on the events a change writes.
    pub fn actor(&self) -> Actor {
        Actor {
            key_id: self.key_id,
        }
    }

    /// Refused unless the key may change things (it is not read-only).
    pub fn may_change(&self) -> Result<(), Forbidden> {
        match self.scope {
            KeyScope::ReadOnly => Err(Forbidden("this key is read-only")),
            _ => Ok(()),
        }
    }

    /// Refused unless this is an admin key.
    pub fn require_admin(&self) -> Result<(), Forbidden> {
        match self.scope {
            KeyScope::Admin => Ok(()),
            _ => Err(Forbidden("this needs an admin key")),
        }
    }

    /// The user this key is bound to, if it is.
    pub fn bound_user(&self) -> Option<i64> {
        self.user_id
    }

    /// Refused unless the key may see data owned by `owner`.
    pub fn may_see(&self, owner: Option<i64>) -> Result<(), Forbidden> {
        match self.user_id {
            Some(bound) if owner != Some(bound) => {
                Err(Forbidden("this key may only use its own user's data"))
            }
            _ => Ok(()),
        }
    }

    /// The `user_id` a list must be filtered by: what was asked for, or the
    /// bound user; refused when a bound key asks for someone else's.
    pub fn user_filter(&self, asked: Option<i64>) -> Result<Option<i64>, Forbidden> {
        match (self.user_id, asked) {
            (None, asked) => Ok(asked),
            (Some(bound), None) => Ok(Some(bound)),
            (Some(bound), Some(asked)) => {
                self.may_see(Some(asked))?;
                Ok(Some(bound))
            }
        }
    }
}

/// Most accepted keys remembered at once.
const ACCEPTED_CAPACITY: u64 = 10_000;
/// Longest wait for Redis when announcing or following revocations.
const REDIS_PATIENCE: Duration = Duration::from_secs(2);

/// Accepted keys by hash: taken on trust for a while.
type Accepted = moka::future::Cache<String, Arc<ApiKey>>;

/// The Redis channel on which replicas announce revocations.
pub struct Revocations {
    redis: Arc<SharedRedis>,
    channel: String,
}

impl Revocations {
    /// The channel of the replicas sharing `redis` (and its key prefix).
    pub fn new(redis: Arc<SharedRedis>) -> Self {
        let channel = redis.key("keys-revoked");
        Self { redis, channel }
    }

    /// The channel on the Redis at `url`, under `prefix`, for a process
    /// that is not a replica (`shortener keys revoke`).
    pub fn open(url: &str, prefix: &str) -> redis::RedisResult<Self> {
        SharedRedis::open(url, prefix, REDIS_PATIENCE, None).map(Self::new)
    }

    /// Tells every replica following this channel that keys `key_ids` are
    /// revoked (they forget the keys they took on trust). Tried even while
    /// Redis is being skipped after a failure: it is rare, and worth it.
    pub async fn announce(&self, key_ids: &[i64]) -> Result<(), String> {
        let mut conn = self.redis.connection();
        let announce = async {
            for key_id in key_ids {
                redis::AsyncCommands::publish::<_, _, i64>(&mut conn, &self.channel, key_id)
                    .await?;
            }
            Ok(())
        };
        self.redis
            .call_patiently(REDIS_PATIENCE, announce)
            .await
            .map_err(|failure| format!("Redis: {failure}"))
    }
}

/// Empties `accepted` whenever a replica announces a revocation, and each
/// time the subscription is (re)made (announcements may have been missed
/// meanwhile), for as long as `accepted` lives.
fn follow_revocations(revocations: &Revocations, accepted: Weak<Accepted>) {
    let (redis, channel) = (revocations.redis.clone(), revocations.channel.clone());
    tokio::spawn(async move {
        loop {
            if let Err(err) = listen_for_revocations(&redis, &channel, &accepted).await {
                tracing::debug!(error = %err, "revocation feed interrupted");
            }
            if accepted.strong_count() == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
}

async fn listen_for_revocations(
    redis: &SharedRedis,
    channel: &str,
    accepted: &Weak<Accepted>,
) -> redis::RedisResult<()> {
    use futures_util::StreamExt;

    let pubsub = redis.subscribe(channel, REDIS_PATIENCE).await?;
    let Some(live) = accepted.upgrade() else {
        return Ok(());
    };
    live.invalidate_all();
    drop(live);
    let mut messages = pubsub.into_on_message();
    while messages.next().await.is_some() {
        let Some(live) = accepted.upgrade() else {
            return Ok(());
        };
        live.invalidate_all();
    }
    Ok(())
}

fn generate() -> String {
    let random = crate::domain::random_alphanumeric(&mut rand::rng(), RANDOM_LEN);
    format!("{PREFIX}{random}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(scope: KeyScope, user_id: Option<i64>) -> KeyRequest {
        KeyRequest {
            name: "ci".into(),
            scope,
            user_id,
            expires_in_days: None,
            created_by: None,
        }
    }

    #[test]
    fn keys_have_the_documented_shape_and_do_not_repeat() {
        let keys: std::collections::HashSet<_> = (0..1000).map(|_| generate()).collect();
        assert_eq!(keys.len(), 1000);
        for key in keys {
            assert!(key.starts_with("shk_"));
            assert_eq!(key.len(), 4 + RANDOM_LEN);
            assert!(key[4..].bytes().all(|b| b.is_ascii_alphanumeric()));
        }
    }

    #[test]
    fn the_hash_is_sha256_in_hex() {
        assert_eq!(
            sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn scopes_and_bindings_must_agree() {
        assert!(request(KeyScope::Admin, None).check().is_ok());
        assert!(request(KeyScope::ReadOnly, None).check().is_ok());
        assert!(request(KeyScope::ReadOnly, Some(3)).check().is_ok());
        assert!(request(KeyScope::User, Some(3)).check().is_ok());
        assert_eq!(
            request(KeyScope::User, None).check().unwrap_err().0,
            "user_id"
        );
        assert_eq!(
            request(KeyScope::Admin, Some(3)).check().unwrap_err().0,
            "user_id"
        );
    }

    fn bound(scope: KeyScope, user: i64) -> Caller {
        Caller {
            key_id: Some(1),
            scope,
            user_id: Some(user),
        }
    }

    #[test]
    fn a_bound_key_sees_only_its_user() {
        let caller = bound(KeyScope::User, 7);
        assert!(caller.may_see(Some(7)).is_ok());
        assert!(caller.may_see(Some(8)).is_err());
        assert!(caller.may_see(None).is_err());
        assert_eq!(caller.user_filter(None).unwrap(), Some(7));
        assert_eq!(caller.user_filter(Some(7)).unwrap(), Some(7));
        assert!(caller.user_filter(Some(8)).is_err());
        assert!(caller.require_admin().is_err());
    }

    #[test]
    fn unbound_keys_see_everything_as_asked() {
        for scope in [KeyScope::Admin, KeyScope::ReadOnly] {
            let caller = Caller {
                key_id: Some(1),
                scope,
                user_id: None,
            };
            assert!(caller.may_see(None).is_ok());
            assert!(caller.may_see(Some(3)).is_ok());
            assert_eq!(caller.user_filter(Some(3)).unwrap(), Some(3));
            assert_eq!(caller.user_filter(None).unwrap(), None);
        }
        assert!(Caller::OPEN.require_admin().is_ok());
        assert_eq!(Caller::OPEN.actor(), Actor::NONE);
    }

    #[test]
    fn names_and_lifetimes_are_bounded() {
        let mut bad = request(KeyScope::Admin, None);
        bad.name = " ".into();
        assert_eq!(bad.check().unwrap_err().0, "name");
        bad.name = "x".repeat(MAX_NAME_LEN + 1);
        assert_eq!(bad.check().unwrap_err().0, "name");
        bad.name = "tab\there".into();
        assert_eq!(bad.check().unwrap_err().0, "name");
        let mut expiring = request(KeyScope::Admin, None);
        expiring.expires_in_days = Some(0);
        assert_eq!(expiring.check().unwrap_err().0, "expires_in_days");
        expiring.expires_in_days = Some(MAX_EXPIRY_DAYS);
        assert!(expiring.check().is_ok());
    }
}
