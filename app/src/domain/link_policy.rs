//! How a link answers beyond its target: the redirect's status, when the link stops
//! (`expires_at`), after how many visits (`max_visits`), and where it sends visitors
//! then (`fallback_url`), behind which password, to which targets by rule, and whether
//! the query is forwarded.

use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;

use super::{PasswordHashed, Rules, Timestamp};

/// The status of a link's redirect. `302` unless the link says otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(into = "i16")]
pub enum RedirectType {
    /// 301 Moved Permanently.
    Moved,
    /// 302 Found: the default.
    #[default]
    Found,
    /// 307 Temporary Redirect (keeps the method and body).
    Temporary,
    /// 308 Permanent Redirect (keeps the method and body).
    Permanent,
}

impl RedirectType {
    pub const ALLOWED: &'static str = "one of 301, 302, 307, 308";

    pub fn status(self) -> u16 {
        i16::from(self).unsigned_abs()
    }

    pub fn from_status(status: i64) -> Result<Self, String> {
        match status {
            301 => Ok(Self::Moved),
            302 => Ok(Self::Found),
            307 => Ok(Self::Temporary),
            308 => Ok(Self::Permanent),
            other => Err(format!("{other} is not a redirect type: {}", Self::ALLOWED)),
        }
    }
}

/// As stored (a `SMALLINT`) and shown: the status itself.
impl TryFrom<i16> for RedirectType {
    type Error = String;
    fn try_from(status: i16) -> Result<Self, String> {
        Self::from_status(i64::from(status))
    }
}

impl From<RedirectType> for i16 {
    fn from(kind: RedirectType) -> i16 {
        match kind {
            RedirectType::Moved => 301,
            RedirectType::Found => 302,
            RedirectType::Temporary => 307,
            RedirectType::Permanent => 308,
        }
    }
}

/// Why a link that exists no longer redirects to its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gone {
    Expired,
    UsedUp,
}

impl Gone {
    pub fn message(self) -> &'static str {
        match self {
            Self::Expired => "this link has expired",
            Self::UsedUp => "this link has reached its visit limit",
        }
    }
}

/// How a link answers beyond its target, as set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkSettings {
    pub redirect_type: RedirectType,
    pub expires_at: Option<Timestamp>,
    pub max_visits: Option<i64>,
    pub fallback_url: Option<String>,
    /// Visitors must give this password first.
    pub password: Option<PasswordHashed>,
    /// Visitors some rule matches go to its target instead.
    pub rules: Rules,
    /// The short URL's query is added to the target's.
    pub forward_query: bool,
}

/// A link's policy when it differs from the default (302, no expiry, no cap, no fallback,
/// no password, no rules, no forwarding): the few links that have one carry it, the others
/// carry nothing.
#[derive(Debug)]
pub struct LinkPolicy {
    settings: LinkSettings,
    /// This replica saw the cap refuse a visit: the link's visits are used up for this
    /// version of it (a change of the cap is a new version, with a new policy).
    used_up: AtomicBool,
}

impl std::ops::Deref for LinkPolicy {
    type Target = LinkSettings;
    fn deref(&self) -> &LinkSettings {
        &self.settings
    }
}

impl LinkPolicy {
    /// The policy of a link with these settings; `None` for the default one.
    pub fn of(settings: LinkSettings) -> Option<Box<Self>> {
        (settings != LinkSettings::default()).then(|| {
            Box::new(Self {
                settings,
                used_up: AtomicBool::new(false),
            })
        })
    }

    /// Why the link no longer redirects to its target at `now`, if it does not.
    pub fn gone_at(&self, now: Timestamp) -> Option<Gone> {
        if self.expires_at.is_some_and(|at| at <= now) {
            Some(Gone::Expired)
        } else if self.used_up.load(Ordering::Relaxed) {
            Some(Gone::UsedUp)
        } else {
            None
        }
    }

    pub fn mark_used_up(&self) {
        self.used_up.store(true, Ordering::Relaxed);
    }
}

impl Clone for LinkPolicy {
    fn clone(&self) -> Self {
        Self {
            settings: self.settings.clone(),
            used_up: AtomicBool::new(self.used_up.load(Ordering::Relaxed)),
        }
    }
}

/// Equal settings; what a replica has seen of the visits is not part of it.
impl PartialEq for LinkPolicy {
    fn eq(&self, other: &Self) -> bool {
        self.settings == other.settings
    }
}

impl Eq for LinkPolicy {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::timestamp::parse;

    #[test]
    fn the_default_policy_is_no_policy() {
        assert!(LinkPolicy::of(LinkSettings::default()).is_none());
        let moved = LinkSettings {
            redirect_type: RedirectType::Moved,
            ..Default::default()
        };
        assert!(LinkPolicy::of(moved).is_some());
        let capped = LinkSettings {
            max_visits: Some(3),
            ..Default::default()
        };
        assert!(LinkPolicy::of(capped).is_some());
        let forwarding = LinkSettings {
            forward_query: true,
            ..Default::default()
        };
        assert!(LinkPolicy::of(forwarding).is_some());
    }

    #[test]
    fn a_link_is_gone_from_its_expiry_on_or_once_used_up() {
        let at = parse("2026-12-07 10:00:00").unwrap();
        let policy = LinkPolicy::of(LinkSettings {
            expires_at: Some(at),
            max_visits: Some(5),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(policy.gone_at(parse("2026-12-07 09:59:59").unwrap()), None);
        assert_eq!(policy.gone_at(at), Some(Gone::Expired));
        let capped = LinkPolicy::of(LinkSettings {
            max_visits: Some(5),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(capped.gone_at(at), None);
        capped.mark_used_up();
        assert_eq!(capped.gone_at(at), Some(Gone::UsedUp));
        assert_eq!(capped.clone().gone_at(at), Some(Gone::UsedUp));
    }

    #[test]
    fn redirect_types_are_the_four_redirect_statuses() {
        for status in [301, 302, 307, 308] {
            assert_eq!(
                i64::from(RedirectType::from_status(status).unwrap().status()),
                status
            );
        }
        for status in [200, 303, 304, 300, 0, -302] {
            assert!(RedirectType::from_status(status).is_err());
        }
    }
}
