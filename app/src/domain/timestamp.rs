use chrono::{NaiveDateTime, Timelike, Utc};
use serde::Serializer;

/// All timestamps are UTC, kept at whole seconds: what is stored is exactly
/// what the API renders (`YYYY-MM-DDTHH:MM:SS`).
pub type Timestamp = NaiveDateTime;

/// Format used on the wire.
pub const API_FORMAT: &str = "%Y-%m-%dT%H:%M:%S";
/// Format used by the platform's CSV files.
pub const CSV_FORMAT: &str = "%Y-%m-%d %H:%M:%S";

/// The current UTC time, truncated to the second.
pub fn now() -> Timestamp {
    let now = Utc::now().naive_utc();
    now.with_nanosecond(0).unwrap_or(now)
}

/// Parses a timestamp as the platform's CSVs or our API write it.
pub fn parse(raw: &str) -> Result<Timestamp, String> {
    let raw = raw.trim();
    NaiveDateTime::parse_from_str(raw, CSV_FORMAT)
        .or_else(|_| NaiveDateTime::parse_from_str(raw, API_FORMAT))
        .or_else(|_| NaiveDateTime::parse_from_str(raw, "%Y-%m-%dT%H:%M:%S%.f"))
        .or_else(|_| NaiveDateTime::parse_from_str(raw, "%Y-%m-%d %H:%M:%S%.f"))
        .map(|t| t.with_nanosecond(0).unwrap_or(t))
        .map_err(|_| format!("'{raw}' is not a timestamp (expected YYYY-MM-DD HH:MM:SS)"))
}

/// A point in time as a client may give one: RFC 3339 with any offset
/// (converted to UTC), or the API's own form (taken as UTC). Kept within
/// 1970 to 9999: an earlier time is stored as 1970-01-01T00:00:00 (for an
/// expiry, already past either way).
pub fn parse_instant(raw: &str) -> Result<Timestamp, String> {
    let raw = raw.trim();
    // RFC 3339 allows a lowercase `t` between date and time; so does the form without an
    // offset, as the OpenAPI document's pattern says.
    let upper_t;
    let naive = if raw.as_bytes().get(10) == Some(&b't') && raw.is_char_boundary(11) {
        upper_t = format!("{}T{}", &raw[..10], &raw[11..]);
        upper_t.as_str()
    } else {
        raw
    };
    let parsed = chrono::DateTime::parse_from_rfc3339(raw)
        .map(|t| t.naive_utc())
        .or_else(|_| parse(naive))
        .map_err(|_| {
            format!("'{raw}' is not a time (RFC 3339, e.g. 2026-12-31T23:59:59Z, or YYYY-MM-DDTHH:MM:SS in UTC)")
        })?;
    let earliest = chrono::DateTime::UNIX_EPOCH.naive_utc();
    let latest = NaiveDateTime::parse_from_str("9999-12-31 23:59:59", CSV_FORMAT).unwrap_or(parsed);
    let kept = parsed.clamp(earliest, latest);
    Ok(kept.with_nanosecond(0).unwrap_or(kept))
}

/// serde helper: `#[serde(serialize_with = "timestamp::serialize")]`.
pub fn serialize<S: Serializer>(t: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&t.format(API_FORMAT))
}

/// serde helper for optional timestamps.
pub fn serialize_opt<S: Serializer>(t: &Option<Timestamp>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => serialize(t, s),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_and_api_forms_parse_to_the_same_second() {
        let a = parse("2025-08-18 05:25:03").unwrap();
        let b = parse("2025-08-18T05:25:03").unwrap();
        let c = parse("2025-08-18T05:25:03.999").unwrap();
        assert_eq!(a, b);
        assert_eq!(a, c);
        assert_eq!(a.format(API_FORMAT).to_string(), "2025-08-18T05:25:03");
        assert!(parse("yesterday").is_err());
    }

    #[test]
    fn instants_take_any_offset_and_stay_within_1970_to_9999() {
        let utc = parse("2026-12-31 22:59:59").unwrap();
        assert_eq!(parse_instant("2026-12-31T23:59:59+01:00"), Ok(utc));
        assert_eq!(parse_instant("2026-12-31T22:59:59.5Z"), Ok(utc));
        assert_eq!(parse_instant("2026-12-31T22:59:59"), Ok(utc));
        assert_eq!(parse_instant("2026-12-31t22:59:59.731300010"), Ok(utc));
        assert_eq!(parse_instant("2026-12-31t22:59:59z"), Ok(utc));
        assert_eq!(
            parse_instant("0000-01-01T00:00:00+01:00"),
            Ok(parse("1970-01-01 00:00:00").unwrap())
        );
        assert_eq!(
            parse_instant("9999-12-31T23:59:59-23:59"),
            Ok(parse("9999-12-31 23:59:59").unwrap())
        );
        assert!(parse_instant("tomorrow").is_err());
    }

    #[test]
    fn now_has_no_fraction() {
        assert_eq!(now().nanosecond(), 0);
    }
}
