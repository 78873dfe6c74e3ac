//! Values that are valid by construction. Everything that crosses the HTTP
//! edge or a CSV file is parsed into one of these once; code behind the edge
//! never re-checks.

mod email;
mod link_password;
mod link_policy;
pub mod link_rules;
mod short_code;
mod target_url;
pub mod timestamp;

pub use email::Email;
pub use link_password::{MAX_PASSWORD_CHARS, MIN_PASSWORD_CHARS, PasswordHashed};
pub use link_policy::{Gone, LinkPolicy, LinkSettings, RedirectType};
pub use link_rules::{Asked, Device, MAX_RULES, QueryCondition, Rule, Rules, forward_query};
pub use short_code::{ShortCode, ShortCodeError, random_alphanumeric};
pub use target_url::{TargetPolicy, TargetUrl};
pub use timestamp::{Timestamp, now};

/// Longest username we keep; longer input is refused, not truncated.
pub const MAX_USERNAME_CHARS: usize = 100;
/// Longest title we keep.
pub const MAX_TITLE_CHARS: usize = 300;
/// Longest event type accepted on `POST /events`.
pub const MAX_EVENT_TYPE_CHARS: usize = 64;

/// A username: non-empty after trimming, at most [`MAX_USERNAME_CHARS`].
/// Usernames are deliberately not unique (the platform's data repeats them).
pub fn parse_username(raw: &str) -> Result<String, String> {
    let name = raw.trim();
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if name.chars().count() > MAX_USERNAME_CHARS {
        return Err(format!("must be at most {MAX_USERNAME_CHARS} characters"));
    }
    if name.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    Ok(name.to_owned())
}

/// A title: trimmed, at most [`MAX_TITLE_CHARS`]; an empty title is no title.
pub fn parse_title(raw: &str) -> Result<Option<String>, String> {
    let title = raw.trim();
    if title.chars().count() > MAX_TITLE_CHARS {
        return Err(format!("must be at most {MAX_TITLE_CHARS} characters"));
    }
    if title.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    Ok((!title.is_empty()).then(|| title.to_owned()))
}

/// An event type on `POST /events`: a short lowercase identifier.
pub fn parse_event_type(raw: &str) -> Result<String, String> {
    let ty = raw.trim();
    if ty.is_empty() || ty.len() > MAX_EVENT_TYPE_CHARS {
        return Err(format!("must be 1 to {MAX_EVENT_TYPE_CHARS} characters"));
    }
    if !ty
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-' || c == '.')
    {
        return Err("may contain only a-z, 0-9, '_', '-' and '.'".into());
    }
    if RECORDED_BY_THE_SERVICE.contains(&ty) {
        return Err(format!("'{ty}' events are recorded by the service itself"));
    }
    Ok(ty.to_owned())
}

/// Event types only the service writes: a client posting them would forge
/// click counts.
pub const RECORDED_BY_THE_SERVICE: &[&str] = &["redirect", BOT_VISIT];

/// The event type of a bot's visit (see `crate::bots`; the click writers' statements spell
/// it too, and the API tests read it back from each backend).
pub const BOT_VISIT: &str = "bot_visit";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_are_trimmed_and_bounded() {
        assert_eq!(parse_username("  ada ").as_deref(), Ok("ada"));
        assert!(parse_username("   ").is_err());
        assert!(parse_username(&"x".repeat(MAX_USERNAME_CHARS + 1)).is_err());
        assert!(parse_username("a\u{0}b").is_err());
    }

    #[test]
    fn empty_title_is_no_title() {
        assert_eq!(parse_title("  "), Ok(None));
        assert_eq!(parse_title(" Deck "), Ok(Some("Deck".into())));
        assert!(parse_title(&"t".repeat(MAX_TITLE_CHARS + 1)).is_err());
    }

    #[test]
    fn event_types_are_identifiers() {
        assert!(parse_event_type("click").is_ok());
        assert!(parse_event_type("qr_scan").is_ok());
        assert!(parse_event_type("").is_err());
        assert!(parse_event_type("Drop Table").is_err());
        assert!(parse_event_type("redirect").is_err());
    }
}
