//! Deterministic seed data with the platform's shape: 400 users, 2000 URLs,
//! 3422 events, and the platform's quirks kept on purpose so the loader is
//! tested against them:
//! - some usernames repeat (emails never do);
//! - events are numbered by type, not ordered by time;
//! - some `deleted` events belong to URLs that are still active, and some
//!   inactive URLs have no `deleted` event;
//! - a user may be created after the URLs they own.

use chrono::{Duration, NaiveDate};
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;

use crate::domain::{RedirectType, ShortCode, Timestamp};
use crate::store::{Event, EventSource, Url, User};

pub const USERS: usize = 400;
pub const URLS: usize = 2000;
pub const UPDATED_EVENTS: usize = 1206;
pub const DELETED_EVENTS: usize = 216;
/// Fixed so that `seed generate` always writes the same files.
const SEED: u64 = 0x5107_7e4e;

const ADJECTIVES: &[&str] = &[
    "amber", "bold", "brisk", "calm", "clever", "cosmic", "crisp", "eager", "gentle", "golden",
    "lucky", "mellow", "nimble", "proud", "quiet", "rapid", "silver", "steady", "sunny", "urban",
    "vivid", "warm", "wild", "witty",
];
const NOUNS: &[&str] = &[
    "anchor", "beacon", "canyon", "delta", "engine", "field", "garden", "harbor", "harvest",
    "island", "journey", "kernel", "lagoon", "meadow", "network", "orbit", "pioneer", "quartz",
    "river", "signal", "trail", "uplink", "valley", "window", "yard", "zenith",
];
const DOMAINS: &[&str] = &[
    "example.com",
    "acme.dev",
    "hackstack.io",
    "opswise.net",
    "relay.cloud",
    "seeded.app",
];
const TITLES: &[&str] = &[
    "Alert feed",
    "Campaign page",
    "Demo link",
    "Incident notes",
    "Launch deck",
    "Ops review",
    "Quarterly brief",
    "Roadmap update",
    "Service guide",
    "Status board",
];
const NEW_VALUES: &[&str] = &["archived", "patched", "rerouted", "renamed", "rotated"];
const DELETE_REASONS: &[&str] = &["duplicate", "expired", "policy_cleanup", "user_requested"];

pub struct Generated {
    pub users: Vec<User>,
    pub urls: Vec<Url>,
    pub events: Vec<Event>,
}

fn time_between(rng: &mut ChaCha8Rng, from: Timestamp, to: Timestamp) -> Timestamp {
    let span = (to - from).num_seconds().max(1);
    from + Duration::seconds(rng.random_range(0..span))
}

fn date(y: i32, m: u32, d: u32) -> Timestamp {
    NaiveDate::from_ymd_opt(y, m, d)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .unwrap_or_default()
}

pub fn generate() -> Generated {
    let mut rng = ChaCha8Rng::seed_from_u64(SEED);
    let (start, end) = (date(2024, 1, 1), date(2026, 2, 1));

    let mut users: Vec<User> = Vec::with_capacity(USERS);
    for id in 1..=USERS as i64 {
        // About one user in fifteen reuses an earlier username, as people do.
        let username = match users.choose(&mut rng) {
            Some(earlier) if rng.random_ratio(1, 15) => earlier.username.clone(),
            _ => format!(
                "{}{}{:02}",
                ADJECTIVES.choose(&mut rng).unwrap_or(&"calm"),
                NOUNS.choose(&mut rng).unwrap_or(&"river"),
                rng.random_range(0..100)
            ),
        };
        let domain = DOMAINS.choose(&mut rng).unwrap_or(&"example.com");
        // The id in the address keeps emails unique even when names repeat.
        let email = format!("{username}.{id}@{domain}");
        users.push(User {
            id,
            username,
            email,
            created_at: time_between(&mut rng, start, end),
        });
    }

    let mut urls = Vec::with_capacity(URLS);
    let mut events = Vec::with_capacity(URLS + UPDATED_EVENTS + DELETED_EVENTS);
    for id in 1..=URLS as i64 {
        let user_id = rng.random_range(1..=USERS as i64);
        let created_at = time_between(&mut rng, start, end);
        let url = Url {
            id,
            user_id: Some(user_id),
            short_code: ShortCode::generate_len_with(&mut rng, 6).to_string(),
            original_url: format!(
                "https://{}/{}/{}/{id}",
                DOMAINS.choose(&mut rng).unwrap_or(&"example.com"),
                ADJECTIVES.choose(&mut rng).unwrap_or(&"calm"),
                NOUNS.choose(&mut rng).unwrap_or(&"river"),
            ),
            title: Some(format!(
                "{} {}",
                TITLES.choose(&mut rng).unwrap_or(&"Demo link"),
                NOUNS.choose(&mut rng).unwrap_or(&"river")
            )),
            is_active: !rng.random_ratio(18, 100),
            created_at,
            updated_at: time_between(&mut rng, created_at, end + Duration::days(30)),
            version: 1,
            redirect_type: RedirectType::Found,
            expires_at: None,
            max_visits: None,
            fallback_url: None,
            password_hash: None,
            rules: Default::default(),
            forward_query: false,
            visits: 0,
        };
        events.push(Event {
            id,
            url_id: id,
            user_id: Some(user_id),
            event_type: "created".into(),
            timestamp: created_at,
            details: sqlx::types::Json(
                json!({"short_code": url.short_code, "original_url": url.original_url}),
            ),
            source: EventSource::Service,
            key_id: None,
        });
        urls.push(url);
    }

    // Updates and deletions: random URLs, random times, numbered after the
    // `created` events regardless of when they happened.
    let fields = ["is_active", "original_url", "title"];
    for n in 0..UPDATED_EVENTS + DELETED_EVENTS {
        let url = &urls[rng.random_range(0..URLS)];
        let updated = n < UPDATED_EVENTS;
        let details = if updated {
            json!({
                "field": fields.choose(&mut rng).unwrap_or(&"title"),
                "new_value": NEW_VALUES.choose(&mut rng).unwrap_or(&"patched"),
            })
        } else {
            json!({"reason": DELETE_REASONS.choose(&mut rng).unwrap_or(&"expired")})
        };
        events.push(Event {
            id: (URLS + n + 1) as i64,
            url_id: url.id,
            user_id: url.user_id,
            event_type: if updated { "updated" } else { "deleted" }.into(),
            timestamp: time_between(&mut rng, start, end),
            details: sqlx::types::Json(details),
            source: EventSource::Service,
            key_id: None,
        });
    }
    Generated {
        users,
        urls,
        events,
    }
}

/// Writes `users.csv`, `urls.csv` and `events.csv` into `dir`.
pub fn write_dir(dir: &std::path::Path) -> std::io::Result<()> {
    let data = generate();
    std::fs::create_dir_all(dir)?;
    let file = |name: &str| std::fs::File::create(dir.join(name));
    let to_io = |e: csv::Error| std::io::Error::other(e);
    super::csv::write_users(file("users.csv")?, &data.users).map_err(to_io)?;
    super::csv::write_urls(file("urls.csv")?, &data.urls).map_err(to_io)?;
    super::csv::write_events(file("events.csv")?, &data.events).map_err(to_io)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn has_the_platform_counts_and_quirks() {
        let data = generate();
        assert_eq!(
            (data.users.len(), data.urls.len(), data.events.len()),
            (400, 2000, 3422)
        );
        let names: HashSet<_> = data.users.iter().map(|u| &u.username).collect();
        assert!(names.len() < data.users.len(), "some usernames repeat");
        let emails: HashSet<_> = data.users.iter().map(|u| u.email.to_lowercase()).collect();
        assert_eq!(emails.len(), data.users.len(), "emails are unique");
        let times: Vec<_> = data.events.iter().map(|e| e.timestamp).collect();
        assert!(
            times.windows(2).any(|w| w[0] > w[1]),
            "events are not in time order"
        );
        let deleted: HashSet<_> = data
            .events
            .iter()
            .filter(|e| e.event_type == "deleted")
            .map(|e| e.url_id)
            .collect();
        assert!(
            data.urls
                .iter()
                .any(|u| u.is_active && deleted.contains(&u.id))
        );
        assert!(
            data.urls
                .iter()
                .any(|u| !u.is_active && !deleted.contains(&u.id))
        );
        let codes: HashSet<_> = data.urls.iter().map(|u| &u.short_code).collect();
        assert_eq!(codes.len(), data.urls.len(), "short codes are unique");
    }

    #[test]
    fn is_deterministic() {
        let (a, b) = (generate(), generate());
        assert_eq!(a.urls, b.urls);
        assert_eq!(a.events, b.events);
        assert_eq!(a.users, b.users);
    }
}
