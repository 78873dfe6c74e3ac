//! The storage contract: the same tests against the PostgreSQL and the
//! SQLite implementation of `Store`, through the trait only.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::path::PathBuf;

use common::{Backend, TestDatabase};
use serde_json::json;
use shortener::domain::{Email, ShortCode, TargetUrl};
use shortener::seed;
use shortener::store::{
    Actor, BatchOrigin, Click, ClickBatch, Conflict, Entity, EventFilter, NewEvent, NewUrl,
    NewUser, Page, StoreError, UrlFilter, UrlPatch,
};

every_backend!(
    generated_codes_stay_unique_under_concurrency,
    taken_custom_code_is_a_conflict_and_writes_nothing,
    update_writes_one_event_per_changed_field_atomically,
    clicks_are_batched_in_one_statement,
    counters_of_several_writer_shards_add_up,
    spilled_batches_are_written_back_exactly_once,
    project_seed_loads_idempotently,
    platform_reference_seed_loads,
    ids_after_seed_do_not_collide,
    deleted_users_keep_their_rows_for_events,
    active_urls_are_counted,
);

fn url(to: &str) -> NewUrl {
    NewUrl {
        user_id: None,
        original_url: TargetUrl::parse(to).unwrap(),
        title: None,
        policy: Default::default(),
    }
}

/// Batch `seq` of click writer 1.
fn origin(seq: i64) -> BatchOrigin {
    BatchOrigin { writer: 1, seq }
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

async fn generated_codes_stay_unique_under_concurrency(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let store = db.store().await;
    let tasks: Vec<_> = (0..200)
        .map(|n| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .create_url_with_generated_code(url(&format!("https://e.com/{n}")), Actor::NONE)
                    .await
            })
        })
        .collect();
    let mut codes = HashSet::new();
    for task in tasks {
        let created = task.await.unwrap().unwrap();
        assert!(codes.insert(created.short_code));
    }
    assert_eq!(codes.len(), 200);
    let listing = store
        .list_urls(UrlFilter::default(), Page::default())
        .await
        .unwrap();
    assert_eq!(listing.total, 200);
}

async fn taken_custom_code_is_a_conflict_and_writes_nothing(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let store = db.store().await;
    let code = ShortCode::parse("taken").unwrap();
    store
        .insert_url(url("https://e.com/1"), &code, Actor::NONE)
        .await
        .unwrap();
    let err = store
        .insert_url(url("https://e.com/2"), &code, Actor::NONE)
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict(Conflict::ShortCodeTaken)),
        "{err:?}"
    );
    let events = store
        .list_events(EventFilter::default(), Page::default())
        .await
        .unwrap();
    assert_eq!(
        events.total, 1,
        "the refused insert left no `created` event behind"
    );
    let missing_owner = NewUrl {
        user_id: Some(77),
        ..url("https://e.com/3")
    };
    let err = store
        .insert_url(missing_owner, &ShortCode::generate(), Actor::NONE)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound(Entity::User)), "{err:?}");
}

async fn update_writes_one_event_per_changed_field_atomically(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let store = db.store().await;
    let created = store
        .create_url_with_generated_code(url("https://e.com/a"), Actor::NONE)
        .await
        .unwrap();
    let patch = UrlPatch {
        original_url: Some(TargetUrl::parse("https://e.com/b").unwrap()),
        title: Some(Some("t".into())),
        is_active: Some(true), // unchanged: no event
        policy: Default::default(),
    };
    let updated = store
        .update_url(created.id, patch, Actor::NONE)
        .await
        .unwrap();
    assert!(updated.updated_at > created.updated_at);
    let filter = EventFilter {
        url_id: Some(created.id),
        event_type: Some("updated".into()),
        ..Default::default()
    };
    let events = store.list_events(filter, Page::default()).await.unwrap();
    let details: HashSet<_> = events
        .items
        .iter()
        .map(|e| e.details.0.to_string())
        .collect();
    assert_eq!(
        details,
        HashSet::from([
            json!({"field": "original_url", "new_value": "https://e.com/b"}).to_string(),
            json!({"field": "title", "new_value": "t"}).to_string(),
        ])
    );
    let err = store
        .update_url(9999, UrlPatch::default(), Actor::NONE)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound(Entity::Url)));
}

async fn clicks_are_batched_in_one_statement(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let store = db.store().await;
    let created = store
        .create_url_with_generated_code(url("https://e.com/c"), Actor::NONE)
        .await
        .unwrap();
    let clicks: Vec<_> = (0..2500)
        .map(|_| Click {
            url_id: created.id,
            user_id: None,
            short_code: created.short_code.clone(),
            at: shortener::domain::now(),
            bot: false,
            agent: None,
            referrer: None,
            visitor: None,
        })
        .collect();
    store.record_clicks(&clicks, 0, origin(1)).await.unwrap();
    let stats = store.url_stats(created.id).await.unwrap();
    assert_eq!(stats.redirect_count, 2500);
}

async fn counters_of_several_writer_shards_add_up(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let store = db.store().await;
    let created = store
        .create_url_with_generated_code(url("https://e.com/shards"), Actor::NONE)
        .await
        .unwrap();
    let click = |at| Click {
        url_id: created.id,
        user_id: None,
        short_code: created.short_code.clone(),
        at,
        bot: false,
        agent: None,
        referrer: None,
        visitor: None,
    };
    let earlier = shortener::domain::now() - chrono::Duration::hours(1);
    let later = shortener::domain::now();
    store
        .record_clicks(&[click(later)], 3, origin(1))
        .await
        .unwrap();
    store
        .record_clicks(&[click(earlier), click(earlier)], 0, origin(2))
        .await
        .unwrap();
    store
        .record_clicks(&[click(earlier)], 63, origin(3))
        .await
        .unwrap();
    let stats = store.url_stats(created.id).await.unwrap();
    assert_eq!(stats.redirect_count, 4);
    assert_eq!(
        stats.last_redirect_at,
        Some(later),
        "the latest over every shard"
    );
}

async fn spilled_batches_are_written_back_exactly_once(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let store = db.store().await;
    let created = store
        .create_url_with_generated_code(url("https://e.com/spilled"), Actor::NONE)
        .await
        .unwrap();
    let batch = |id, clicks| ClickBatch {
        id,
        origin: None,
        clicks: (0..clicks)
            .map(|_| Click {
                url_id: created.id,
                user_id: None,
                short_code: created.short_code.clone(),
                at: shortener::domain::now(),
                bot: false,
                agent: None,
                referrer: None,
                visitor: None,
            })
            .collect(),
    };
    let first = [batch(11, 3), batch(-12, 2)];
    assert_eq!(store.record_spilled_clicks(&first, 5).await.unwrap(), 5);
    // Written back again (a crash before the file said so), with a new
    // batch: only the new one counts.
    let again = [batch(-12, 2), batch(11, 3), batch(i64::MAX, 4)];
    assert_eq!(store.record_spilled_clicks(&again, 6).await.unwrap(), 4);
    assert_eq!(store.record_spilled_clicks(&again, 0).await.unwrap(), 0);
    // A direct write whose answer was lost, spilled with its origin: it
    // had committed (writer 7's batch 2 is recorded), so the write-back
    // skips it; batch 3 of the same writer had not, so it is written.
    let direct = batch(0, 1).clicks;
    let first_try = BatchOrigin { writer: 7, seq: 2 };
    store.record_clicks(&direct, 1, first_try).await.unwrap();
    let spilled = ClickBatch {
        origin: Some(first_try),
        ..batch(21, 1)
    };
    assert_eq!(store.record_spilled_clicks(&[spilled], 1).await.unwrap(), 0);
    let never_written = ClickBatch {
        origin: Some(BatchOrigin { writer: 7, seq: 3 }),
        ..batch(22, 1)
    };
    let unknown_writer = ClickBatch {
        origin: Some(BatchOrigin { writer: 8, seq: 1 }),
        ..batch(23, 1)
    };
    let written = store
        .record_spilled_clicks(&[never_written, unknown_writer], 1)
        .await
        .unwrap();
    assert_eq!(written, 2);
    let stats = store.url_stats(created.id).await.unwrap();
    assert_eq!(stats.redirect_count, 12);
    let events = store
        .list_events(
            EventFilter {
                url_id: Some(created.id),
                user_id: None,
                event_type: Some("redirect".into()),
                source: None,
            },
            Page {
                page: 1,
                per_page: 100,
                after_id: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(events.items.len(), 12);
}

async fn load_dir(backend: Backend, dir: PathBuf) -> (TestDatabase, shortener::store::SeedOutcome) {
    let db = TestDatabase::new(backend).await;
    let store = db.store().await;
    let first = seed::load_dir(store.as_ref(), &dir).await.unwrap();
    let again = seed::load_dir(store.as_ref(), &dir).await.unwrap();
    assert_eq!(
        (again.users, again.urls, again.events),
        (0, 0, 0),
        "a second load adds nothing"
    );
    (db, first)
}

async fn project_seed_loads_idempotently(backend: Backend) {
    let (db, outcome) = load_dir(backend, repo_root().join("seed_data")).await;
    assert_eq!(
        (outcome.users, outcome.urls, outcome.events),
        (400, 2000, 3422)
    );
    let store = db.store().await;
    let users = store.list_users(Page::default()).await.unwrap();
    assert_eq!(users.total, 400);
    let inactive = store
        .list_urls(
            UrlFilter {
                is_active: Some(false),
                ..Default::default()
            },
            Page::default(),
        )
        .await
        .unwrap();
    assert!(inactive.total > 0);
}

/// The platform's own files, when the shared folder is beside the checkout
/// (it is in CI). They are not the project's to commit.
async fn platform_reference_seed_loads(backend: Backend) {
    let dir = repo_root().join("../shared/reference-seed");
    if !dir.join("users.csv").exists() {
        eprintln!("skipped: {} is not present", dir.display());
        return;
    }
    let (db, outcome) = load_dir(backend, dir).await;
    assert_eq!(
        (outcome.users, outcome.urls, outcome.events),
        (400, 2000, 3422)
    );
    let store = db.store().await;
    let target = store.resolve("ENE3UF").await.unwrap().unwrap();
    assert_eq!(target.original_url, "https://relay.cloud/harbor/garden/1");
    assert!(!target.is_active);
}

async fn ids_after_seed_do_not_collide(backend: Backend) {
    let (db, _) = load_dir(backend, repo_root().join("seed_data")).await;
    let store = db.store().await;
    let user = store
        .create_user(NewUser {
            username: "new".into(),
            email: Email::parse("new@example.org").unwrap(),
        })
        .await
        .unwrap();
    assert_eq!(user.id, 401);
    let created = store
        .create_url_with_generated_code(url("https://e.com/after-seed"), Actor::NONE)
        .await
        .unwrap();
    assert_eq!(created.id, 2001);
    let event = store
        .create_event(
            NewEvent {
                url_id: created.id,
                user_id: user.id,
                event_type: "click".into(),
                details: Default::default(),
            },
            Actor::NONE,
        )
        .await
        .unwrap();
    assert_eq!(event.id, 3424, "created event is 3423, this one next");
}

async fn deleted_users_keep_their_rows_for_events(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let store = db.store().await;
    let user = store
        .create_user(NewUser {
            username: "ada".into(),
            email: Email::parse("ada@e.com").unwrap(),
        })
        .await
        .unwrap();
    let owned = NewUrl {
        user_id: Some(user.id),
        ..url("https://e.com/owned")
    };
    let a = store
        .create_url_with_generated_code(owned.clone(), Actor::NONE)
        .await
        .unwrap();
    let b = store
        .create_url_with_generated_code(owned, Actor::NONE)
        .await
        .unwrap();
    store
        .deactivate_url(b.id, "user_requested", Actor::NONE)
        .await
        .unwrap();
    // Quick successive writes push updated_at ahead of the clock; deleting
    // the owner must still move it forward, never back.
    let mut latest = a.clone();
    for title in ["1", "2", "3"] {
        let patch = UrlPatch {
            title: Some(Some(title.into())),
            ..Default::default()
        };
        latest = store.update_url(a.id, patch, Actor::NONE).await.unwrap();
    }
    let deletion = store.delete_user(user.id, Actor::NONE).await.unwrap();
    assert!(deletion.deactivated[0].updated_at > latest.updated_at);
    assert_eq!(deletion.deactivated.len(), 1, "only the still-active URL");
    assert_eq!(deletion.deactivated[0].id, a.id);
    assert!(deletion.deactivated[0].version > a.version);
    assert!(!store.get_url(a.id).await.unwrap().is_active);
    let filter = EventFilter {
        user_id: Some(user.id),
        ..Default::default()
    };
    let events = store.list_events(filter, Page::default()).await.unwrap();
    // 2 created + 3 updated + 1 user_requested + 1 owner_deleted: all still
    // attributed to the deleted user.
    assert_eq!(events.total, 7);
    assert!(matches!(
        store.get_user(user.id).await,
        Err(StoreError::NotFound(Entity::User))
    ));
}

async fn active_urls_are_counted(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let store = db.store().await;
    assert_eq!(store.count_active_urls().await.unwrap(), 0);
    let mut ids = Vec::new();
    for n in 0..3 {
        let created = store
            .create_url_with_generated_code(url(&format!("https://e.com/{n}")), Actor::NONE)
            .await
            .unwrap();
        ids.push(created.id);
    }
    assert_eq!(store.count_active_urls().await.unwrap(), 3);
    store
        .deactivate_url(ids[1], "test", Actor::NONE)
        .await
        .unwrap();
    assert_eq!(store.count_active_urls().await.unwrap(), 2);
}
