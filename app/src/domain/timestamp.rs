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
    fn now_has_no_fraction() {
        assert_eq!(now().nanosecond(), 0);
    }
}
