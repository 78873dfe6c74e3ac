//! The ShortLink controller: each ShortLink becomes a link of its Shortener, through the
//! service's API with a key of its own (the sync key, bound to one service user), and is
//! deactivated when the ShortLink is deleted.
//!
//! Requests per ShortLink: none while nothing changed and its refresh is not due (an
//! unchanged re-apply, a Shortener status change, a resync of the watch); one `GET` of its
//! stats at each refresh (the click count); that and one `PUT` when the declaration or the
//! link changed; a `POST` to create it. The status is written only when it changes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Client, Resource, ResourceExt};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tracing::{info, warn};

use super::crd::{ShortLink, ShortLinkSpec, ShortLinkStatus};
use super::service::{CallError, IN_FLIGHT, ServiceApi, Stats, Url};
use crate::backoff::Backoff;
use crate::children::{Component, Instance};
use crate::crd::{AuthMode, Shortener};
use crate::metrics::Metrics;
use crate::status::set_conditions;

/// Held on every ShortLink until its link is deactivated.
pub const FINALIZER: &str = "shortener.dev/shortlink";
/// How often a synced link's click count is read again.
pub const REFRESH: Duration = Duration::from_secs(300);
const SYNCED: &str = "Synced";
/// How often a ShortLink whose key was refused looks for a new one.
const KEY_RETRY: Duration = Duration::from_secs(60);
/// The service user that owns every link the sync makes, one per Shortener.
const SYNC_USERNAME: &str = "ShortLink sync";

/// Why a pass did not finish; the ShortLink is retried with backoff.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("Kubernetes API request failed: {0}")]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Service(#[from] CallError),
    #[error("{0}")]
    Key(String),
}

/// The service user and key the sync of one Shortener uses.
#[derive(Clone, Debug)]
struct SyncKey {
    user_id: i64,
    /// `None` when the Shortener runs with `authMode: open`.
    api_key: Option<String>,
}

/// State shared by the passes.
pub struct LinkContext {
    client: Client,
    http: reqwest::Client,
    metrics: Arc<Metrics>,
    shorteners: Store<Shortener>,
    /// Sync keys by Shortener uid: read from their Secret once.
    keys: Mutex<HashMap<String, SyncKey>>,
    /// Each service's gate (by Shortener uid): its requests in flight at once.
    gates: Mutex<HashMap<String, Arc<tokio::sync::Semaphore>>>,
    /// Held while a key is looked for or made, so that the passes of many new ShortLinks
    /// make one key, not one each.
    making: tokio::sync::Mutex<()>,
    /// When the service last answered for each ShortLink (by uid) and its generation: found
    /// as declared, or a code taken, or a declaration refused. Until the refresh is due,
    /// another pass of the same generation asks nothing.
    concluded: Mutex<HashMap<String, Instant>>,
    /// Consecutive failures by ShortLink uid.
    backoff: Backoff,
    /// Every ShortLink the controller watches.
    links: Store<ShortLink>,
}

/// The outcome of a pass, as the `Synced` condition says it.
struct Outcome {
    synced: bool,
    /// The service answered for this generation (see `LinkContext::concluded`).
    concluded: bool,
    reason: &'static str,
    message: String,
    /// When to look again (`None`: only when something changes).
    requeue: Option<Duration>,
}

impl Outcome {
    fn waiting(reason: &'static str, message: String) -> Self {
        Self {
            synced: false,
            concluded: false,
            reason,
            message,
            requeue: None,
        }
    }
}

/// The name of the Secret that holds a Shortener's sync key.
pub fn sync_secret_name(shortener: &str) -> String {
    format!("{shortener}-link-sync")
}

/// What the service is asked to hold for `spec`: the body of a `PUT /urls/{id}` (every
/// field, `null` restoring a default, so a field removed from the spec is removed from the
/// link too).
pub fn declared(spec: &ShortLinkSpec) -> Value {
    json!({
        "original_url": spec.target,
        "title": spec.title,
        "is_active": true,
        "redirect_type": spec.redirect_type,
        "expires_at": spec.expires_at.as_ref().map(|t| t.0.to_string()),
        "max_visits": spec.max_visits,
        "fallback_url": spec.fallback_url,
        "rules": spec.rules,
        "forward_query": spec.forward_query,
    })
}

/// The body of the `POST /urls` that creates the link for `user_id`.
fn creation(spec: &ShortLinkSpec, user_id: i64) -> Value {
    let mut body = declared(spec);
    if let Some(fields) = body.as_object_mut() {
        fields.remove("is_active");
        fields.insert("short_code".into(), json!(spec.code));
        fields.insert("user_id".into(), json!(user_id));
    }
    body
}

fn digest(body: &Value) -> String {
    format!("{:x}", Sha256::digest(body.to_string().as_bytes()))
}

impl LinkContext {
    fn concluded_recently(&self, uid: &str) -> Option<Duration> {
        let concluded = self.concluded.lock().ok()?;
        let since = concluded.get(uid)?.elapsed();
        (since < REFRESH).then(|| REFRESH - since)
    }

    fn mark_concluded(&self, uid: &str, yes: bool) {
        if let Ok(mut concluded) = self.concluded.lock() {
            if yes {
                concluded.insert(uid.to_string(), Instant::now());
            } else {
                concluded.remove(uid);
            }
        }
    }

    fn forget_key(&self, shortener_uid: &str) {
        if let Ok(mut keys) = self.keys.lock() {
            keys.remove(shortener_uid);
        }
    }

    fn api(&self, shortener: &Shortener, key: Option<String>) -> Result<ServiceApi, SyncError> {
        let instance = Instance::new(shortener).map_err(|e| SyncError::Key(e.to_string()))?;
        let uid = shortener.uid().unwrap_or_default();
        let gate = match self.gates.lock() {
            Ok(mut gates) => gates
                .entry(uid)
                .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT)))
                .clone(),
            Err(_) => Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT)),
        };
        Ok(ServiceApi::new(
            self.http.clone(),
            instance.service_url(),
            key,
            (*self.metrics).clone(),
            gate,
        ))
    }

    /// The Shortener's sync key: remembered, else read from its Secret, else made (a service
    /// user and a `user` key bound to it, with the admin key this once) and kept in a Secret
    /// the Shortener owns.
    async fn sync_key(&self, shortener: &Shortener) -> Result<SyncKey, SyncError> {
        let uid = shortener.uid().unwrap_or_default();
        let remembered = || self.keys.lock().ok().and_then(|k| k.get(&uid).cloned());
        if let Some(key) = remembered() {
            return Ok(key);
        }
        let _making = self.making.lock().await;
        if let Some(key) = remembered() {
            return Ok(key);
        }
        let instance = Instance::new(shortener).map_err(|e| SyncError::Key(e.to_string()))?;
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &instance.namespace);
        let name = sync_secret_name(&instance.name);
        let key = match secrets.get_opt(&name).await? {
            Some(secret) => read_key(&secret)
                .ok_or_else(|| SyncError::Key(format!("Secret {name} has no `user-id`")))?,
            None => {
                let key = self.make_key(shortener, &instance, &secrets).await?;
                let secret = key_secret(&instance, shortener, &name, &key);
                match secrets.create(&PostParams::default(), &secret).await {
                    Ok(_) => key,
                    // Made meanwhile by another pass: that one is the key (ours is unused).
                    Err(kube::Error::Api(e)) if e.code == 409 => {
                        let secret = secrets.get(&name).await?;
                        read_key(&secret).ok_or_else(|| {
                            SyncError::Key(format!("Secret {name} has no `user-id`"))
                        })?
                    }
                    Err(error) => return Err(error.into()),
                }
            }
        };
        if let Ok(mut keys) = self.keys.lock() {
            keys.insert(uid, key.clone());
        }
        Ok(key)
    }

    async fn make_key(
        &self,
        shortener: &Shortener,
        instance: &Instance<'_>,
        secrets: &Api<Secret>,
    ) -> Result<SyncKey, SyncError> {
        let open = instance.spec().app.config.auth_mode() == AuthMode::Open;
        let admin_key = if open {
            None
        } else {
            let name = instance.admin_secret_name();
            let secret = secrets.get(&name).await?;
            let key = secret_value(&secret, "api-key")
                .ok_or_else(|| SyncError::Key(format!("Secret {name} has no `api-key`")))?;
            Some(key)
        };
        let admin = self.api(shortener, admin_key)?;
        let email = format!(
            "shortlink-sync@{}.{}.svc",
            instance.name, instance.namespace
        );
        let user = json!({ "username": SYNC_USERNAME, "email": email });
        let user_id = match admin
            .call_as::<Value>(Method::POST, "/users", Some(&user))
            .await
        {
            Ok(user) => user["id"].as_i64(),
            // The user exists (a Secret lost): found by its email.
            Err(error) if error.status() == Some(StatusCode::CONFLICT) => {
                find_user(&admin, &email).await?
            }
            Err(error) => return Err(error.into()),
        }
        .ok_or_else(|| SyncError::Key(format!("no service user {email}")))?;
        let api_key = if open {
            None
        } else {
            let request = json!({
                "name": format!("{SYNC_USERNAME} ({})", instance.name),
                "scope": "user",
                "user_id": user_id,
            });
            let issued: Value = admin.call_as(Method::POST, "/keys", Some(&request)).await?;
            let secret = issued["secret"]
                .as_str()
                .ok_or_else(|| SyncError::Key("POST /keys answered no `secret`".into()))?;
            Some(secret.to_string())
        };
        info!(shortener = %instance.name, namespace = %instance.namespace, user_id, "made the link sync key");
        Ok(SyncKey { user_id, api_key })
    }
}

async fn find_user(admin: &ServiceApi, email: &str) -> Result<Option<i64>, SyncError> {
    let mut after = 0;
    loop {
        let path = format!("/users?per_page=100&after_id={after}");
        let page: Vec<Value> = admin.call_as(Method::GET, &path, None).await?;
        if let Some(user) = page.iter().find(|u| {
            u["email"]
                .as_str()
                .is_some_and(|e| e.eq_ignore_ascii_case(email))
        }) {
            return Ok(user["id"].as_i64());
        }
        match page.last().and_then(|u| u["id"].as_i64()) {
            Some(last) => after = last,
            None => return Ok(None),
        }
    }
}

fn secret_value(secret: &Secret, key: &str) -> Option<String> {
    let bytes = secret.data.as_ref()?.get(key)?;
    String::from_utf8(bytes.0.clone()).ok()
}

fn read_key(secret: &Secret) -> Option<SyncKey> {
    let user_id = secret_value(secret, "user-id")?.parse().ok()?;
    let api_key = secret_value(secret, "api-key").filter(|k| !k.is_empty());
    Some(SyncKey { user_id, api_key })
}

/// The Secret of the sync key: owned by the Shortener (collected with it), not one of its
/// children (the Shortener's passes neither apply nor prune it).
fn key_secret(instance: &Instance<'_>, shortener: &Shortener, name: &str, key: &SyncKey) -> Secret {
    let mut data =
        std::collections::BTreeMap::from([("user-id".to_string(), key.user_id.to_string())]);
    if let Some(api_key) = &key.api_key {
        data.insert("api-key".to_string(), api_key.clone());
    }
    let mut labels = instance.labels(Component::App);
    labels.remove("app.kubernetes.io/managed-by");
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(instance.namespace.clone()),
            labels: Some(labels),
            owner_references: shortener.controller_owner_ref(&()).map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".into()),
        string_data: Some(data),
        ..Secret::default()
    }
}

pub async fn reconcile(
    link: Arc<ShortLink>,
    ctx: Arc<LinkContext>,
) -> Result<Action, FinalizerError> {
    let ns = link.namespace().unwrap_or_default();
    let api: Api<ShortLink> = Api::namespaced(ctx.client.clone(), &ns);
    let uid = link.uid().unwrap_or_default();
    let shortener = link.spec.shortener.clone();
    let result = finalizer(&api, FINALIZER, link, |event| async {
        match event {
            Finalizer::Apply(link) => apply(&link, &ctx).await,
            Finalizer::Cleanup(link) => cleanup(&link, &ctx).await,
        }
    })
    .await;
    let outcome = if result.is_ok() { "success" } else { "error" };
    ctx.metrics.link_pass(&ns, &shortener, outcome);
    if result.is_ok() {
        ctx.backoff.reset(&uid);
    }
    result.map_err(Box::new)
}

pub type FinalizerError = Box<kube::runtime::finalizer::Error<SyncError>>;

pub fn error_policy(link: Arc<ShortLink>, error: &FinalizerError, ctx: Arc<LinkContext>) -> Action {
    let delay = ctx.backoff.next(&link.uid().unwrap_or_default());
    warn!(
        shortlink = %format!("{}/{}", link.namespace().unwrap_or_default(), link.name_any()),
        %error,
        retry_in = ?delay,
        "link sync failed"
    );
    Action::requeue(delay)
}

fn shortener_of(link: &ShortLink, ctx: &LinkContext) -> Option<Arc<Shortener>> {
    let ns = link.namespace().unwrap_or_default();
    ctx.shorteners
        .get(&ObjectRef::new(&link.spec.shortener).within(&ns))
        .filter(|s| s.meta().deletion_timestamp.is_none())
}

/// The older ShortLink that claims the same code of the same Shortener, if any: the oldest
/// claim keeps the code, the others wait (and say so).
fn earlier_claim(link: &ShortLink, links: &Store<ShortLink>) -> Option<String> {
    let ns = link.namespace();
    let rank = |l: &ShortLink| (l.creation_timestamp(), l.name_any());
    links
        .state()
        .into_iter()
        .filter(|other| {
            other.namespace() == ns
                && other.uid() != link.uid()
                && other.spec.shortener == link.spec.shortener
                && other.spec.code == link.spec.code
                && other.meta().deletion_timestamp.is_none()
                && rank(other) < rank(link)
        })
        .map(|other| other.name_any())
        .min()
}

async fn apply(link: &ShortLink, ctx: &LinkContext) -> Result<Action, SyncError> {
    let old = link.status.clone().unwrap_or_default();
    let uid = link.uid().unwrap_or_default();
    let generation = link.metadata.generation;
    let mut new = old.clone();
    let outcome = match shortener_of(link, ctx) {
        None => Outcome::waiting(
            "ShortenerNotFound",
            format!(
                "no Shortener {} in this namespace; the link is made once it exists",
                link.spec.shortener
            ),
        ),
        Some(shortener) => {
            let instance = Instance::new(&shortener).map_err(|e| SyncError::Key(e.to_string()))?;
            new.short_url = Some(format!(
                "{}/{}",
                shortener
                    .status
                    .as_ref()
                    .and_then(|s| s.url.clone())
                    .unwrap_or_else(|| instance.public_url())
                    .trim_end_matches('/'),
                link.spec.code
            ));
            let unchanged = old.observed_generation == generation && new.short_url == old.short_url;
            match (unchanged, ctx.concluded_recently(&uid)) {
                (true, Some(due_in)) => return Ok(Action::requeue(due_in)),
                _ => match earlier_claim(link, &ctx.links) {
                    Some(other) => Outcome::waiting(
                        "CodeTaken",
                        format!(
                            "ShortLink {other} declared code {} first; this one waits until it is deleted",
                            link.spec.code
                        ),
                    ),
                    None => sync(link, &shortener, &instance, ctx, &mut new).await?,
                },
            }
        }
    };
    write_status(link, ctx, new, &outcome).await?;
    Ok(match outcome.requeue {
        Some(after) => Action::requeue(after),
        None => Action::await_change(),
    })
}

/// Makes the service's link what `link` declares; fills `status` with what it found.
async fn sync(
    link: &ShortLink,
    shortener: &Shortener,
    instance: &Instance<'_>,
    ctx: &LinkContext,
    status: &mut ShortLinkStatus,
) -> Result<Outcome, SyncError> {
    let key = ctx.sync_key(shortener).await?;
    let api = ctx.api(shortener, key.api_key.clone())?;
    let desired = declared(&link.spec);
    let wanted = digest(&desired);
    let result = write(link, &api, &key, &desired, &wanted, status).await;
    let refused =
        |reason: &'static str, error: CallError| Outcome::waiting(reason, error.message());
    match result {
        Ok(found) => {
            status.synced_digest = Some(wanted);
            status.url_id = Some(found.url.id);
            status.link_updated_at = Some(found.url.updated_at);
            status.clicks = Some(found.redirect_count);
            Ok(Outcome {
                synced: true,
                concluded: true,
                reason: "Synced",
                message: format!("{} redirects to {}", link.spec.code, link.spec.target),
                requeue: Some(REFRESH),
            })
        }
        Err(Written::Taken) => Ok(Outcome {
            synced: false,
            concluded: true,
            reason: "CodeTaken",
            message: format!(
                "code {} is held by a link made through the API, not by a ShortLink: it is \
                 left as it is. Choose another code, or deactivate that link and give the \
                 code a ShortLink of its own",
                link.spec.code
            ),
            requeue: Some(REFRESH),
        }),
        Err(Written::Failed(error)) => match error.status() {
            Some(StatusCode::BAD_REQUEST) => Ok(Outcome {
                concluded: true,
                ..refused("Refused", error)
            }),
            Some(StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) => {
                ctx.forget_key(&shortener.uid().unwrap_or_default());
                // Looked at again: the Secret's deletion (the way out) sends no event here.
                Ok(Outcome {
                    requeue: Some(KEY_RETRY),
                    ..Outcome::waiting(
                        "KeyRefused",
                        format!(
                            "the service refused the sync key ({}); delete Secret {} and the \
                             operator makes a new one",
                            error.message(),
                            sync_secret_name(&instance.name)
                        ),
                    )
                })
            }
            _ => {
                let message = error.to_string();
                let outcome = Outcome {
                    synced: false,
                    concluded: false,
                    reason: "ServiceUnavailable",
                    message,
                    requeue: None,
                };
                // Said in the status, then retried with backoff.
                write_status(link, ctx, status.clone(), &outcome).await?;
                Err(error.into())
            }
        },
    }
}

/// How a write ended when it did not.
enum Written {
    /// The code belongs to a link the sync user does not own.
    Taken,
    Failed(CallError),
}

impl From<CallError> for Written {
    fn from(error: CallError) -> Self {
        Self::Failed(error)
    }
}

async fn write(
    link: &ShortLink,
    api: &ServiceApi,
    key: &SyncKey,
    desired: &Value,
    wanted: &str,
    status: &ShortLinkStatus,
) -> Result<Stats, Written> {
    let code = &link.spec.code;
    let ours = |url: &Url| url.short_code == *code && url.user_id == Some(key.user_id);
    if let Some(id) = status.url_id {
        match api
            .call_as::<Stats>(Method::GET, &format!("/urls/{id}/stats"), None)
            .await
        {
            Ok(stats) if ours(&stats.url) => {
                let same = status.synced_digest.as_deref() == Some(wanted)
                    && status.link_updated_at.as_deref() == Some(stats.url.updated_at.as_str());
                if same {
                    return Ok(stats);
                }
                let url: Url = api
                    .call_as(Method::PUT, &format!("/urls/{id}"), Some(desired))
                    .await?;
                return Ok(Stats { url, ..stats });
            }
            // Gone or not ours any more (a database restored from elsewhere): found by code.
            Ok(_) => {}
            Err(error) if error.status() == Some(StatusCode::NOT_FOUND) => {}
            Err(error) if error.status() == Some(StatusCode::FORBIDDEN) => {}
            Err(error) => return Err(error.into()),
        }
    }
    let created = api
        .call_as::<Url>(
            Method::POST,
            "/urls",
            Some(&creation(&link.spec, key.user_id)),
        )
        .await;
    let id = match created {
        Ok(url) => {
            return Ok(Stats {
                url,
                redirect_count: 0,
            });
        }
        Err(error) if error.status() == Some(StatusCode::CONFLICT) => {
            // Ours from before (a ShortLink deleted and declared again, a status lost), or
            // someone else's: the sync key finds only its own user's links.
            let path = format!("/urls?short_code={code}");
            let found: Vec<Url> = api.call_as(Method::GET, &path, None).await?;
            match found.into_iter().find(|url| ours(url)) {
                Some(url) => url.id,
                None => return Err(Written::Taken),
            }
        }
        Err(error) => return Err(error.into()),
    };
    let url: Url = api
        .call_as(Method::PUT, &format!("/urls/{id}"), Some(desired))
        .await?;
    let stats: Stats = api
        .call_as(Method::GET, &format!("/urls/{id}/stats"), None)
        .await?;
    Ok(Stats { url, ..stats })
}

/// Writes `status` with the `Synced` condition `outcome` says, if that changes the status,
/// and remembers whether the service answered for this generation.
async fn write_status(
    link: &ShortLink,
    ctx: &LinkContext,
    mut new: ShortLinkStatus,
    outcome: &Outcome,
) -> Result<(), SyncError> {
    ctx.mark_concluded(&link.uid().unwrap_or_default(), outcome.concluded);
    let generation = link.metadata.generation;
    new.observed_generation = generation;
    let now = Time(Timestamp::now());
    let condition = (
        SYNCED,
        outcome.synced,
        outcome.reason,
        outcome.message.as_str(),
    );
    set_conditions(&mut new.conditions, &[condition], generation, &now);
    if link.status.as_ref() != Some(&new) {
        let api: Api<ShortLink> =
            Api::namespaced(ctx.client.clone(), &link.namespace().unwrap_or_default());
        let patch = json!({ "status": new });
        let params = PatchParams::default();
        api.patch_status(&link.name_any(), &params, &Patch::Merge(&patch))
            .await?;
        ctx.metrics.link_status_write();
    }
    Ok(())
}

/// The ShortLink is being deleted: its link is deactivated (soft-deleted: it stops
/// redirecting, its clicks stay readable), unless its Shortener is gone too.
async fn cleanup(link: &ShortLink, ctx: &LinkContext) -> Result<Action, SyncError> {
    let uid = link.uid().unwrap_or_default();
    ctx.mark_concluded(&uid, false);
    ctx.backoff.reset(&uid);
    let id = link.status.as_ref().and_then(|s| s.url_id);
    let (Some(shortener), Some(id)) = (shortener_of(link, ctx), id) else {
        return Ok(Action::await_change());
    };
    let key = ctx.sync_key(&shortener).await?;
    let api = ctx.api(&shortener, key.api_key)?;
    match api.call(Method::DELETE, &format!("/urls/{id}"), None).await {
        Ok(_) => {
            info!(shortlink = %link.name_any(), url_id = id, "deactivated the link");
            Ok(Action::await_change())
        }
        // Already gone, or not ours (then not ours to deactivate).
        Err(error)
            if matches!(
                error.status(),
                Some(StatusCode::NOT_FOUND | StatusCode::FORBIDDEN)
            ) =>
        {
            Ok(Action::await_change())
        }
        Err(error) => Err(error.into()),
    }
}

/// Runs the ShortLink controller until `shutdown` resolves: over the whole cluster, or one
/// per namespace of `namespaces` (as the Shortener controller). A Shortener's change wakes
/// its ShortLinks (cheaply: a pass with nothing to do makes no request).
pub async fn run(
    client: Client,
    metrics: Arc<Metrics>,
    namespaces: &[String],
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let http = match ServiceApi::client() {
        Ok(http) => http,
        Err(error) => {
            warn!(%error, "no HTTP client: ShortLinks are not synced");
            return;
        }
    };
    let shutdown = futures::FutureExt::shared(shutdown);
    let scopes: Vec<Option<&str>> = if namespaces.is_empty() {
        vec![None]
    } else {
        namespaces.iter().map(|ns| Some(ns.as_str())).collect()
    };
    let controllers = scopes.into_iter().map(|ns| {
        run_in(
            client.clone(),
            http.clone(),
            metrics.clone(),
            ns,
            shutdown.clone(),
        )
    });
    futures::future::join_all(controllers).await;
}

fn api_in<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

async fn run_in(
    client: Client,
    http: reqwest::Client,
    metrics: Arc<Metrics>,
    namespace: Option<&str>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let (shorteners, writer) = reflector::store();
    let shortener_events = reflector(
        writer,
        watcher(
            api_in::<Shortener>(&client, namespace),
            watcher::Config::default().any_semantic(),
        )
        .default_backoff(),
    )
    .touched_objects();
    let controller = Controller::new(
        api_in::<ShortLink>(&client, namespace),
        watcher::Config::default().any_semantic(),
    );
    let links = controller.store();
    let ctx = Arc::new(LinkContext {
        client,
        http,
        metrics,
        shorteners,
        keys: Mutex::new(HashMap::new()),
        making: tokio::sync::Mutex::new(()),
        gates: Mutex::new(HashMap::new()),
        concluded: Mutex::new(HashMap::new()),
        backoff: Backoff::default(),
        links: links.clone(),
    });
    controller
        .watches_stream(shortener_events, move |shortener: Shortener| {
            let ns = shortener.namespace();
            let name = shortener.name_any();
            links
                .state()
                .into_iter()
                .filter(|l| l.namespace() == ns && l.spec.shortener == name)
                .map(|l| ObjectRef::from_obj(&*l))
                .collect::<Vec<_>>()
        })
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "link controller");
            }
        })
        .await;
}
