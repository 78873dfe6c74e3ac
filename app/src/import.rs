//! Links imported from a CSV export of another shortener (Bitly, YOURLS, Shlink, Kutt) or of
//! this one (`GET /urls/export`): columns are found by name, whatever their order, case,
//! spaces or underscores, under the names those tools give them. Every link needs its short
//! code (a code column, or a short URL whose last path segment is the code): the code is what
//! makes an import idempotent, since printed links and QR codes carry it.

use std::io::Read;

use crate::domain::{ShortCode, TargetUrl, Timestamp, parse_title, timestamp};
use crate::seed::csv::{Columns, Parsed, cell, optional, read_lines, reader};

/// Most lines (good and bad) one imported file may have: one transaction writes them all,
/// within the request timeout.
pub const MAX_IMPORTED_LINES: usize = 10_000;

/// The names each column goes by (compared without case, spaces, `_` or `-`).
const TARGET: &[&str] = &["originalurl", "longurl", "url", "destination", "target"];
const CODE: &[&str] = &[
    "shortcode",
    "keyword",
    "code",
    "slug",
    "backhalf",
    "custombackhalf",
];
const SHORT_URL: &[&str] = &["shorturl", "link", "bitlylink", "shortlink"];
const TITLE: &[&str] = &["title", "name"];
const CREATED: &[&str] = &[
    "createdat",
    "created",
    "createddate",
    "datecreated",
    "timestamp",
    "date",
];
const EXPIRES: &[&str] = &["expiresat", "validuntil", "expires", "expiration"];
const MAX_VISITS: &[&str] = &["maxvisits"];

/// One link of an imported file, valid as far as the file can tell (the deployment's target
/// policy and the owner are the caller's to check).
#[derive(Debug, Clone, PartialEq)]
pub struct LinkRow {
    pub line: u64,
    pub code: ShortCode,
    pub target: TargetUrl,
    pub title: Option<String>,
    pub created_at: Option<Timestamp>,
    pub expires_at: Option<Timestamp>,
    pub max_visits: Option<i64>,
}

fn normalized(name: &str) -> String {
    name.chars()
        .filter(|c| !matches!(c, ' ' | '_' | '-'))
        .flat_map(char::to_lowercase)
        .collect()
}

fn find(columns: &Columns, names: &[&str]) -> Option<usize> {
    // The first name that matches wins (`original_url` before `url`), whatever the order
    // of the file's columns.
    names.iter().find_map(|name| {
        columns
            .0
            .iter()
            .position(|header| normalized(header) == *name)
    })
}

/// A time as the tools write them: RFC 3339, `YYYY-MM-DD HH:MM:SS` (UTC), or ISO 8601 with
/// an offset without a colon (`+0000`).
fn time(raw: &str) -> Result<Timestamp, String> {
    timestamp::parse_instant(raw).or_else(|error| {
        ["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%d %H:%M:%S%z"]
            .iter()
            .find_map(|format| chrono::DateTime::parse_from_str(raw, format).ok())
            .map(|t| t.naive_utc())
            .ok_or(error)
    })
}

/// The code a short URL ends with (`https://bit.ly/3xYz9` → `3xYz9`).
fn code_of_short_url(raw: &str) -> Option<&str> {
    let path = raw.split(['?', '#']).next()?.trim_end_matches('/');
    let (_, last) = path.rsplit_once('/')?;
    (!last.is_empty()).then_some(last)
}

/// Reads an export of links. Bad lines are reported, not fatal; a header without a target
/// column or without a code (or short URL) column is.
pub fn read_links<R: Read>(input: R, max_lines: usize) -> Result<Parsed<LinkRow>, String> {
    let mut rdr = reader(input);
    let columns = Columns(
        rdr.headers()
            .map_err(|e| format!("cannot read CSV header: {e}"))?
            .clone(),
    );
    let header = || columns.0.iter().collect::<Vec<_>>().join(",");
    let target = find(&columns, TARGET).ok_or_else(|| {
        format!(
            "no target column (original_url, long_url, url…) in: {}",
            header()
        )
    })?;
    let code = find(&columns, CODE);
    let short_url = find(&columns, SHORT_URL);
    if code.is_none() && short_url.is_none() {
        return Err(format!(
            "no short code column (short_code, keyword, short_url, link…) in: {}",
            header()
        ));
    }
    let title = find(&columns, TITLE);
    let created = find(&columns, CREATED);
    let expires = find(&columns, EXPIRES);
    let max_visits = find(&columns, MAX_VISITS);
    read_lines(rdr, max_lines, |line, record| {
        let raw_code = optional(record, code)
            .or_else(|| optional(record, short_url).and_then(code_of_short_url))
            .ok_or("no short code")?;
        Ok::<_, String>(LinkRow {
            line,
            code: ShortCode::parse(raw_code).map_err(|e| format!("short code: {e}"))?,
            target: TargetUrl::parse(cell(record, target)).map_err(|e| format!("target: {e}"))?,
            title: optional(record, title)
                .map(parse_title)
                .transpose()
                .map_err(|e| format!("title: {e}"))?
                .flatten(),
            created_at: optional(record, created)
                .map(time)
                .transpose()
                .map_err(|e| format!("created: {e}"))?,
            expires_at: optional(record, expires)
                .map(time)
                .transpose()
                .map_err(|e| format!("expires: {e}"))?,
            max_visits: optional(record, max_visits)
                .map(|raw| {
                    raw.parse::<i64>()
                        .ok()
                        .filter(|n| *n >= 1)
                        .ok_or_else(|| format!("max visits: '{raw}' is not a whole number ≥ 1"))
                })
                .transpose()?,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codes(csv: &str) -> Vec<String> {
        let parsed = read_links(csv.as_bytes(), 100).unwrap();
        assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
        parsed
            .rows
            .iter()
            .map(|r| r.code.as_str().to_owned())
            .collect()
    }

    #[test]
    fn the_tools_exports_are_read_by_their_column_names() {
        // YOURLS
        assert_eq!(
            codes(
                "keyword,url,title,timestamp,ip,clicks\nhandbook,https://e.com/d,Docs,2024-01-02 03:04:05,1.2.3.4,7\n"
            ),
            ["handbook"]
        );
        // Bitly
        let bitly = "Title,Long URL,Bitly Link,Created,Clicks\n\
                     Launch,https://e.com/l,https://bit.ly/3xYz9,2024-01-02T03:04:05+0000,12\n";
        assert_eq!(codes(bitly), ["3xYz9"]);
        let row = &read_links(bitly.as_bytes(), 10).unwrap().rows[0];
        assert_eq!(row.title.as_deref(), Some("Launch"));
        assert_eq!(
            row.created_at,
            Some(timestamp::parse("2024-01-02 03:04:05").unwrap())
        );
        // Shlink
        assert_eq!(
            codes(
                "createdAt,domain,shortCode,shortUrl,longUrl,title,tags,visitsCount\n\
                   2024-01-02T03:04:05+00:00,,abc12,https://s.test/abc12,https://e.com/s,,,0\n"
            ),
            ["abc12"]
        );
        // This service's own export: `original_url` wins over any other name.
        assert_eq!(
            codes(
                "id,user_id,short_code,original_url,title,is_active,created_at,updated_at,redirect_type,expires_at,max_visits\n\
                   1,,own-1,https://e.com/o,,true,2026-11-22T11:49:38,2026-11-22T11:49:38,302,2027-01-01T00:00:00,5\n"
            ),
            ["own-1"]
        );
    }

    #[test]
    fn bad_lines_are_reported_and_bad_headers_refused() {
        let parsed = read_links(
            "short_code,long_url,max_visits\nok1,https://e.com/1,\n,https://e.com/2,\nx,https://e.com/3,\nok4,ftp://e.com/4,\nok5,https://e.com/5,0\n"
                .as_bytes(),
            100,
        )
        .unwrap();
        assert_eq!(parsed.rows.len(), 1);
        let lines: Vec<u64> = parsed.errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, [3, 4, 5, 6]);
        assert!(parsed.errors[0].error.contains("no short code"));
        assert!(parsed.errors[1].error.starts_with("short code"));
        assert!(parsed.errors[2].error.starts_with("target"));
        assert!(parsed.errors[3].error.starts_with("max visits"));
        assert!(
            read_links("title,clicks\nx,1\n".as_bytes(), 10)
                .unwrap_err()
                .contains("no target")
        );
        assert!(
            read_links("url,title\nhttps://e.com,x\n".as_bytes(), 10)
                .unwrap_err()
                .contains("no short code")
        );
        assert!(
            read_links(
                "code,url\na1b,https://e.com\nc2d,https://e.com\n".as_bytes(),
                1
            )
            .unwrap_err()
            .contains("more than 1 lines")
        );
    }
}
