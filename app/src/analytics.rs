//! Link analytics: what a click carries for them, the rollups the click writer adds up
//! from a batch (written in the same statement as the clicks, so exactly once), and the
//! visitor hash (a salted daily hash of the client address and agent: no address is kept).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, LazyLock, RwLock};
use std::time::Duration;

use chrono::NaiveDate;
use sha2::{Digest as _, Sha256};

use crate::domain::Timestamp;
use crate::store::Click;

/// The longest `User-Agent` or `Referer` a click keeps (longer ones are cut).
pub const MAX_HEADER_KEPT: usize = 512;

/// What clicks are broken down by (each a column of `click_rollups`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Dimension {
    /// The `Referer`'s host; `""`: none (typed in, or a client that sends none).
    Referrer,
    Browser,
    Os,
    /// `desktop`, `mobile`, `appliance` (consoles, TVs), or `other`.
    Device,
}

impl Dimension {
    pub const ALL: [Self; 4] = [Self::Referrer, Self::Browser, Self::Os, Self::Device];

    /// Its column in `click_rollups` (and its name in the store's breakdown rows).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Referrer => "referrer",
            Self::Browser => "browser",
            Self::Os => "os",
            Self::Device => "device",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.as_str() == raw)
    }
}

/// Clicks alike in everything the rollups keep.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RollupKey {
    pub url_id: i64,
    pub hour: Timestamp,
    pub referrer: String,
    pub browser: String,
    pub os: String,
    pub device: &'static str,
}

/// One row of `click_rollups` to add to (for the writer's shard).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollupDelta {
    pub key: RollupKey,
    pub clicks: i64,
}

/// One row of `visitor_days` to insert (if it is not there).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VisitorDay {
    pub url_id: i64,
    pub day: NaiveDate,
    pub visitor: i64,
}

/// Clicks counted together: link, hour, agent, referrer.
type Alike<'a> = (i64, Timestamp, Option<&'a str>, Option<&'a str>);

/// What a batch adds to the analytics, in key order (writers then take row locks in one
/// order and never deadlock). Bots' visits add nothing.
#[derive(Debug, Default)]
pub struct BatchRollup {
    pub rollups: Vec<RollupDelta>,
    pub visitors: Vec<VisitorDay>,
}

impl BatchRollup {
    pub fn of(clicks: &[Click]) -> Self {
        // Clicks alike (link, hour, agent, referrer) are counted together first, borrowing
        // from the batch: one map operation per click, and each agent and referrer of the
        // batch is parsed once per link and hour, not once per click.
        let mut alike: HashMap<Alike<'_>, i64> = HashMap::new();
        let mut visitors = BTreeSet::new();
        for click in clicks.iter().filter(|c| !c.bot) {
            let key = (
                click.url_id,
                hour_of(click.at),
                click.agent.as_deref(),
                click.referrer.as_deref(),
            );
            *alike.entry(key).or_default() += 1;
            if let Some(visitor) = click.visitor {
                visitors.insert(VisitorDay {
                    url_id: click.url_id,
                    day: click.at.date(),
                    visitor,
                });
            }
        }
        let mut agents: HashMap<Option<&str>, Families> = HashMap::new();
        let mut referrers: HashMap<&str, String> = HashMap::new();
        let mut counts: BTreeMap<RollupKey, i64> = BTreeMap::new();
        for ((url_id, hour, agent, referrer), clicks) in alike {
            let families = agents
                .entry(agent)
                .or_insert_with(|| Families::known(agent));
            let key = RollupKey {
                url_id,
                hour,
                referrer: referrer
                    .map(|r| {
                        referrers
                            .entry(r)
                            .or_insert_with(|| referrer_host(r))
                            .clone()
                    })
                    .unwrap_or_default(),
                browser: families.browser.clone(),
                os: families.os.clone(),
                device: families.device,
            };
            *counts.entry(key).or_default() += clicks;
        }
        Self {
            rollups: counts
                .into_iter()
                .map(|(key, clicks)| RollupDelta { key, clicks })
                .collect(),
            visitors: visitors.into_iter().collect(),
        }
    }
}

/// The visitor rows a store knows it has written (committed): a batch leaves them out
/// instead of inserting them again to find them there (most clicks are repeat visits of the
/// day). Bounded: emptied when full, which only costs the inserts again. Per store, so that
/// it never speaks for another database.
#[derive(Debug, Default)]
pub struct WrittenVisitors(std::sync::Mutex<std::collections::HashSet<VisitorDay>>);

/// Visitor rows remembered per store.
const WRITTEN_VISITORS: usize = 100_000;

impl WrittenVisitors {
    /// `visitors` but those known to be written.
    pub fn unwritten(&self, mut visitors: Vec<VisitorDay>) -> Vec<VisitorDay> {
        let written = self.0.lock().unwrap_or_else(|e| e.into_inner());
        visitors.retain(|v| !written.contains(v));
        visitors
    }

    /// Remembers `visitors` as written: call only once their transaction committed.
    pub fn committed(&self, visitors: &[VisitorDay]) {
        if visitors.is_empty() {
            return;
        }
        let mut written = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if written.len() + visitors.len() > WRITTEN_VISITORS {
            written.clear();
        }
        written.extend(visitors.iter().copied());
    }
}

/// `at`, down to its hour.
pub fn hour_of(at: Timestamp) -> Timestamp {
    at.date()
        .and_hms_opt(chrono::Timelike::hour(&at), 0, 0)
        .unwrap_or(at)
}

/// The host a `Referer` names, lower-cased; `""` when it names none (or is not a URL).
fn referrer_host(referrer: &str) -> String {
    url::Url::parse(referrer)
        .ok()
        .and_then(|u| u.host_str().map(str::to_ascii_lowercase))
        .unwrap_or_default()
}

/// Browser, operating system and device class, as a user-agent parser names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Families {
    pub browser: String,
    pub os: String,
    pub device: &'static str,
}

/// Agents parsed lately, by agent: most traffic comes from a few browser versions.
const KNOWN_AGENTS: usize = 1024;

impl Families {
    /// [`Families::of`], remembered for the most common agents across batches (a bounded
    /// map, emptied when full).
    pub fn known(user_agent: Option<&str>) -> Self {
        static KNOWN: LazyLock<std::sync::Mutex<HashMap<String, Families>>> =
            LazyLock::new(Default::default);
        let Some(agent) = user_agent else {
            return Self::of(None);
        };
        let mut known = KNOWN.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(families) = known.get(agent) {
            return families.clone();
        }
        let families = Self::of(Some(agent));
        if known.len() >= KNOWN_AGENTS {
            known.clear();
        }
        known.insert(agent.to_owned(), families.clone());
        families
    }

    pub fn of(user_agent: Option<&str>) -> Self {
        static PARSER: LazyLock<woothee::parser::Parser> =
            LazyLock::new(woothee::parser::Parser::new);
        let Some(parsed) = user_agent.and_then(|ua| PARSER.parse(ua)) else {
            return Self {
                browser: "Other".into(),
                os: "Other".into(),
                device: "other",
            };
        };
        let known = |name: &str| if name == "UNKNOWN" { "Other" } else { name }.to_owned();
        Self {
            browser: known(parsed.name),
            os: known(parsed.os),
            device: match parsed.category {
                "pc" => "desktop",
                "smartphone" | "mobilephone" => "mobile",
                "appliance" => "appliance",
                _ => "other",
            },
        }
    }
}

/// `value`, cut to at most [`MAX_HEADER_KEPT`] bytes at a character boundary.
pub fn kept(value: &str) -> String {
    let mut end = value.len().min(MAX_HEADER_KEPT);
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    value[..end].to_owned()
}

/// The salted daily visitor hash. The salt is the day's, shared by every replica through
/// the database ([`Visitors::refresh`]); until a replica has it (the database away at its
/// start), it uses one of its own, so the same visitor may count once per replica that day.
pub struct Visitors {
    salt: RwLock<Salt>,
}

#[derive(Debug, Clone)]
struct Salt {
    day: NaiveDate,
    bytes: Vec<u8>,
    /// The database's salt for `day` (not one of this replica's own).
    shared: bool,
}

impl Default for Visitors {
    fn default() -> Self {
        Self::new()
    }
}

impl Visitors {
    pub fn new() -> Self {
        Self {
            salt: RwLock::new(Salt {
                day: crate::domain::now().date(),
                bytes: fresh_salt(),
                shared: false,
            }),
        }
    }

    /// The visitor `client` with `user_agent` is today (a hash; never reversed to the address).
    pub fn visitor(&self, client: IpAddr, user_agent: Option<&[u8]>) -> i64 {
        let mut hash = Sha256::new();
        {
            let salt = self.salt.read().unwrap_or_else(|e| e.into_inner());
            hash.update(&salt.bytes);
        }
        match client {
            IpAddr::V4(v4) => hash.update(v4.octets()),
            IpAddr::V6(v6) => hash.update(v6.octets()),
        }
        hash.update([0]);
        hash.update(user_agent.unwrap_or_default());
        let digest = hash.finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        i64::from_be_bytes(first)
    }

    /// Takes today's salt from the store (adding `fresh` when no replica has yet), and forgets
    /// salts older than yesterday. Run at start and every minute.
    pub async fn refresh(&self, store: &crate::store::DynStore) -> crate::store::StoreResult<()> {
        let today = crate::domain::now().date();
        {
            let salt = self.salt.read().unwrap_or_else(|e| e.into_inner());
            if salt.day == today && salt.shared {
                return Ok(());
            }
        }
        let bytes = store.visitor_salt(today, fresh_salt()).await?;
        let mut salt = self.salt.write().unwrap_or_else(|e| e.into_inner());
        *salt = Salt {
            day: today,
            bytes,
            shared: true,
        };
        Ok(())
    }
}

/// Takes the day's salt now (waiting at most a few seconds: a database away at start leaves
/// the replica on a salt of its own until it is back), then every 30 seconds, while
/// `visitors` is in use.
pub async fn keep_salt_fresh(visitors: &Arc<Visitors>, store: crate::store::DynStore) {
    match tokio::time::timeout(Duration::from_secs(3), visitors.refresh(&store)).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::warn!(%error, "visitor salt not read; a local one for now"),
        Err(_) => tracing::warn!("visitor salt not read in time; a local one for now"),
    }
    let visitors = Arc::downgrade(visitors);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(30));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(visitors) = visitors.upgrade() else {
                break;
            };
            if let Err(error) = visitors.refresh(&store).await {
                tracing::warn!(%error, "visitor salt not refreshed");
            }
        }
    });
}

fn fresh_salt() -> Vec<u8> {
    rand::random::<[u8; 32]>().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::timestamp::parse;

    fn click(url_id: i64, at: &str, ua: Option<&str>, referrer: Option<&str>) -> Click {
        Click {
            url_id,
            user_id: None,
            short_code: "c".into(),
            at: parse(at).unwrap(),
            bot: false,
            agent: ua.map(str::to_owned),
            referrer: referrer.map(str::to_owned),
            visitor: Some(url_id * 10),
        }
    }

    const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 \
        (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";

    #[test]
    fn a_batch_adds_up_per_link_hour_and_dimension_leaving_bots_out() {
        let mut bot = click(1, "2026-12-07 10:59:00", Some(CHROME), None);
        bot.bot = true;
        let clicks = [
            click(
                1,
                "2026-12-07 10:01:00",
                Some(CHROME),
                Some("https://News.example.com/x?y"),
            ),
            click(1, "2026-12-07 10:59:59", Some(CHROME), None),
            click(1, "2026-12-07 11:00:00", None, Some("not a url")),
            click(2, "2026-12-07 10:30:00", Some(CHROME), None),
            bot,
        ];
        let batch = BatchRollup::of(&clicks);
        let sum = |url, hour: &str, pick: &dyn Fn(&RollupKey) -> bool| -> i64 {
            batch
                .rollups
                .iter()
                .filter(|r| {
                    r.key.url_id == url && r.key.hour == parse(hour).unwrap() && pick(&r.key)
                })
                .map(|r| r.clicks)
                .sum()
        };
        assert_eq!(sum(1, "2026-12-07 10:00:00", &|_| true), 2);
        assert_eq!(sum(1, "2026-12-07 11:00:00", &|_| true), 1);
        assert_eq!(sum(2, "2026-12-07 10:00:00", &|_| true), 1);
        assert_eq!(
            sum(1, "2026-12-07 10:00:00", &|k| k.referrer
                == "news.example.com"),
            1
        );
        assert_eq!(sum(1, "2026-12-07 10:00:00", &|k| k.referrer.is_empty()), 1);
        assert_eq!(sum(1, "2026-12-07 11:00:00", &|k| k.referrer.is_empty()), 1);
        assert_eq!(sum(1, "2026-12-07 10:00:00", &|k| k.browser == "Chrome"), 2);
        assert_eq!(sum(1, "2026-12-07 10:00:00", &|k| k.device == "desktop"), 2);
        assert_eq!(sum(1, "2026-12-07 11:00:00", &|k| k.browser == "Other"), 1);
        // Clicks alike are one row; rows sorted by key, so that concurrent writers lock
        // rows in one order.
        assert_eq!(batch.rollups.len(), 4);
        let keys: Vec<&RollupKey> = batch.rollups.iter().map(|r| &r.key).collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]));
        // One visitor row per link and day, whatever the clicks.
        assert_eq!(batch.visitors.len(), 2);
    }

    #[test]
    fn visitors_differ_by_address_agent_and_salt() {
        let visitors = Visitors::new();
        let a: IpAddr = "203.0.113.7".parse().unwrap();
        let b: IpAddr = "2001:db8::7".parse().unwrap();
        let ua = Some(CHROME.as_bytes());
        assert_eq!(visitors.visitor(a, ua), visitors.visitor(a, ua));
        assert_ne!(visitors.visitor(a, ua), visitors.visitor(b, ua));
        assert_ne!(visitors.visitor(a, ua), visitors.visitor(a, None));
        assert_ne!(visitors.visitor(a, ua), Visitors::new().visitor(a, ua));
    }

    #[test]
    fn only_committed_visitor_rows_are_left_out() {
        let day = |d: u32| VisitorDay {
            url_id: 1,
            day: NaiveDate::from_ymd_opt(2026, 12, d).unwrap(),
            visitor: 7,
        };
        let written = WrittenVisitors::default();
        assert_eq!(written.unwritten(vec![day(1), day(2)]), [day(1), day(2)]);
        written.committed(&[day(1)]);
        assert_eq!(written.unwritten(vec![day(1), day(2)]), [day(2)]);
    }

    #[test]
    fn kept_headers_are_cut_at_a_character_boundary() {
        let long = "é".repeat(MAX_HEADER_KEPT);
        let cut = kept(&long);
        assert!(cut.len() <= MAX_HEADER_KEPT && cut.chars().all(|c| c == 'é'));
        assert_eq!(kept("short"), "short");
    }
}
