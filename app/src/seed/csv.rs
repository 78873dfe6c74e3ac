//! The platform's CSV formats. Timestamps are `YYYY-MM-DD HH:MM:SS`,
//! booleans `True`/`False`, event details compact JSON.

use std::io::{Read, Write};

use serde::Serialize;
use serde_json::Value;

use crate::domain::{Email, RedirectType, parse_username, timestamp};
use crate::store::{Event, EventSource, ImportedUser, Url};

/// A line of an uploaded file that could not be imported, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct LineError {
    pub line: u64,
    pub error: String,
}

/// Rows read from an uploaded CSV: good rows and bad lines, side by side. The
/// report of bad lines is bounded: the first [`REPORTED_ERRORS`] lines (each
/// message cut to [`ERROR_CHARS`] characters), then only a count.
#[derive(Debug)]
pub struct Parsed<T> {
    pub rows: Vec<T>,
    pub errors: Vec<LineError>,
    /// Bad lines beyond the first [`REPORTED_ERRORS`].
    pub errors_omitted: u64,
}

impl<T> Default for Parsed<T> {
    fn default() -> Self {
        Self {
            rows: Vec::new(),
            errors: Vec::new(),
            errors_omitted: 0,
        }
    }
}

pub type ParsedUsers = Parsed<ImportedUser>;

/// Most lines (good and bad) one uploaded users CSV may have.
pub const MAX_UPLOADED_LINES: usize = 100_000;
/// Bad lines reported one by one.
pub const REPORTED_ERRORS: usize = 100;
/// Longest error message reported for one line.
const ERROR_CHARS: usize = 200;

impl<T> Parsed<T> {
    pub(crate) fn bad_line(&mut self, line: u64, error: String) {
        if self.errors.len() < REPORTED_ERRORS {
            let error = match error.char_indices().nth(ERROR_CHARS) {
                Some((cut, _)) => format!("{}…", &error[..cut]),
                None => error,
            };
            self.errors.push(LineError { line, error });
        } else {
            self.errors_omitted += 1;
        }
    }
}

/// Column positions, looked up by name so column order does not matter.
pub(crate) struct Columns(pub(crate) csv::StringRecord);

impl Columns {
    pub(crate) fn position(&self, name: &str) -> Option<usize> {
        self.0
            .iter()
            .position(|h| h.trim().eq_ignore_ascii_case(name))
    }

    fn require(&self, name: &str) -> Result<usize, String> {
        self.position(name).ok_or_else(|| {
            format!(
                "missing column '{name}' (header is: {})",
                self.0.iter().collect::<Vec<_>>().join(",")
            )
        })
    }
}

pub(crate) fn reader<R: Read>(input: R) -> csv::Reader<R> {
    csv::ReaderBuilder::new()
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(input)
}

pub(crate) fn cell(record: &csv::StringRecord, at: usize) -> &str {
    record.get(at).unwrap_or("")
}

pub(crate) fn optional(record: &csv::StringRecord, at: Option<usize>) -> Option<&str> {
    at.map(|i| cell(record, i)).filter(|s| !s.is_empty())
}

fn parse_id(raw: &str, column: &str) -> Result<i64, String> {
    raw.parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| format!("{column}: '{raw}' is not a positive integer"))
}

pub(crate) fn line_of(record: &csv::StringRecord) -> u64 {
    record.position().map_or(0, |p| p.line())
}

/// Reads a users CSV (`id,username,email,created_at`; `id` and `created_at`
/// may be absent). Bad lines are reported, not fatal; a missing header is.
pub fn read_users<R: Read>(input: R, max_lines: usize) -> Result<ParsedUsers, String> {
    let mut rdr = reader(input);
    let columns = Columns(
        rdr.headers()
            .map_err(|e| format!("cannot read CSV header: {e}"))?
            .clone(),
    );
    let (username, email) = (columns.require("username")?, columns.require("email")?);
    let (id, created_at) = (columns.position("id"), columns.position("created_at"));
    read_lines(rdr, max_lines, |line, record| {
        Ok(ImportedUser {
            line,
            id: optional(record, id)
                .map(|raw| parse_id(raw, "id"))
                .transpose()?,
            username: parse_username(cell(record, username))
                .map_err(|e| format!("username: {e}"))?,
            email: Email::parse(cell(record, email)).map_err(|e| format!("email: {e}"))?,
            created_at: optional(record, created_at)
                .map(timestamp::parse)
                .transpose()
                .map_err(|e| format!("created_at: {e}"))?,
        })
    })
}

/// Every line of an upload after its header, read by `row` (given the line's number):
/// lines that do not read, or that `row` refuses, are reported, not fatal; more than
/// `max_lines` lines are.
pub(crate) fn read_lines<R: Read, T>(
    mut rdr: csv::Reader<R>,
    max_lines: usize,
    row: impl Fn(u64, &csv::StringRecord) -> Result<T, String>,
) -> Result<Parsed<T>, String> {
    let mut parsed = Parsed::default();
    for (read, record) in rdr.records().enumerate() {
        if read == max_lines {
            return Err(format!("more than {max_lines} lines: split the file"));
        }
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line());
                parsed.bad_line(line, format!("unreadable line: {e}"));
                continue;
            }
        };
        let line = line_of(&record);
        match row(line, &record) {
            Ok(row) => parsed.rows.push(row),
            Err(error) => parsed.bad_line(line, error),
        }
    }
    Ok(parsed)
}

fn parse_bool(raw: &str) -> Result<bool, String> {
    match raw.to_ascii_lowercase().as_str() {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(format!("is_active: '{raw}' is not True or False")),
    }
}

/// Reads every line of a CSV whose columns are all required, in the order
/// of `names`; `row` gets the line's cells in that order. Fails on the first bad
/// line, naming it: seed files are trusted, a bad one is a bug to fix.
fn read_strict<R: Read, T>(
    input: R,
    names: &[&str],
    row: impl Fn(&[&str]) -> Result<T, String>,
) -> Result<Vec<T>, String> {
    let mut rdr = reader(input);
    let columns = Columns(rdr.headers().map_err(|e| e.to_string())?.clone());
    let at: Vec<usize> = names
        .iter()
        .map(|n| columns.require(n))
        .collect::<Result<_, _>>()?;
    let mut rows = Vec::new();
    for record in rdr.records() {
        let record = record.map_err(|e| e.to_string())?;
        let cells: Vec<&str> = at.iter().map(|&i| cell(&record, i)).collect();
        rows.push(row(&cells).map_err(|e| format!("line {}: {e}", line_of(&record)))?);
    }
    Ok(rows)
}

fn optional_id(raw: &str, column: &str) -> Result<Option<i64>, String> {
    Some(raw)
        .filter(|s| !s.is_empty())
        .map(|s| parse_id(s, column))
        .transpose()
}

fn required(raw: &str, column: &str) -> Result<String, String> {
    Some(raw.to_owned())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| format!("{column} is empty"))
}

/// Reads a urls CSV (`user_id` and `title` may be empty).
pub fn read_urls<R: Read>(input: R) -> Result<Vec<Url>, String> {
    read_strict(input, &URL_COLUMNS, |cell| {
        Ok(Url {
            id: parse_id(cell[0], "id")?,
            user_id: optional_id(cell[1], "user_id")?,
            short_code: required(cell[2], "short_code")?,
            original_url: required(cell[3], "original_url")?,
            title: Some(cell[4].to_owned()).filter(|s| !s.is_empty()),
            is_active: parse_bool(cell[5])?,
            created_at: timestamp::parse(cell[6])?,
            updated_at: timestamp::parse(cell[7])?,
            version: 1,
            redirect_type: RedirectType::Found,
            expires_at: None,
            max_visits: None,
            fallback_url: None,
            password_hash: None,
            rules: Default::default(),
            forward_query: false,
            visits: 0,
        })
    })
}

/// Reads an events CSV; `details` must be a JSON object (empty means `{}`).
pub fn read_events<R: Read>(input: R) -> Result<Vec<Event>, String> {
    read_strict(input, &EVENT_COLUMNS, |cell| {
        let details: Value = match cell[5] {
            "" => Value::Object(Default::default()),
            raw => serde_json::from_str(raw).map_err(|e| format!("details: {e}"))?,
        };
        if !details.is_object() {
            return Err("details: not a JSON object".to_owned());
        }
        Ok(Event {
            id: parse_id(cell[0], "id")?,
            url_id: parse_id(cell[1], "url_id")?,
            user_id: optional_id(cell[2], "user_id")?,
            event_type: required(cell[3], "event_type")?,
            timestamp: timestamp::parse(cell[4])?,
            details: sqlx::types::Json(details),
            source: EventSource::Service,
            key_id: None,
        })
    })
}

fn csv_time(t: &crate::domain::Timestamp) -> String {
    t.format(timestamp::CSV_FORMAT).to_string()
}

/// The platform's columns, in its order.
const USER_COLUMNS: [&str; 4] = ["id", "username", "email", "created_at"];
const URL_COLUMNS: [&str; 8] = [
    "id",
    "user_id",
    "short_code",
    "original_url",
    "title",
    "is_active",
    "created_at",
    "updated_at",
];
const EVENT_COLUMNS: [&str; 6] = [
    "id",
    "url_id",
    "user_id",
    "event_type",
    "timestamp",
    "details",
];

/// Writes a header and one record per row.
fn write_rows<W: Write, const N: usize>(
    out: W,
    header: [&str; N],
    rows: impl Iterator<Item = [String; N]>,
) -> csv::Result<()> {
    let mut w = csv::Writer::from_writer(out);
    w.write_record(header)?;
    for row in rows {
        w.write_record(row)?;
    }
    w.flush()?;
    Ok(())
}

fn optional_cell(id: Option<i64>) -> String {
    id.map(|id| id.to_string()).unwrap_or_default()
}

/// Writes users in the platform's format.
pub fn write_users<W: Write>(out: W, users: &[crate::store::User]) -> csv::Result<()> {
    let rows = users.iter().map(|u| {
        let (id, created) = (u.id.to_string(), csv_time(&u.created_at));
        [id, u.username.clone(), u.email.clone(), created]
    });
    write_rows(out, USER_COLUMNS, rows)
}

pub fn write_urls<W: Write>(out: W, urls: &[Url]) -> csv::Result<()> {
    let rows = urls.iter().map(|u| {
        [
            u.id.to_string(),
            optional_cell(u.user_id),
            u.short_code.clone(),
            u.original_url.clone(),
            u.title.clone().unwrap_or_default(),
            if u.is_active { "True" } else { "False" }.to_owned(),
            csv_time(&u.created_at),
            csv_time(&u.updated_at),
        ]
    });
    write_rows(out, URL_COLUMNS, rows)
}

pub fn write_events<W: Write>(out: W, events: &[Event]) -> csv::Result<()> {
    let rows = events.iter().map(|e| {
        [
            e.id.to_string(),
            e.url_id.to_string(),
            optional_cell(e.user_id),
            e.event_type.clone(),
            csv_time(&e.timestamp),
            e.details.0.to_string(),
        ]
    });
    write_rows(out, EVENT_COLUMNS, rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_csv_reports_bad_lines_and_keeps_good_ones() {
        let csv = "username,email\nada,ada@example.com\n,nobody@example.com\nbob,not-an-email\ncy,cy@example.com\n";
        let parsed = read_users(csv.as_bytes(), usize::MAX).unwrap();
        assert_eq!(parsed.rows.len(), 2);
        assert_eq!(parsed.rows[1].line, 5);
        assert_eq!(
            parsed.errors.iter().map(|e| e.line).collect::<Vec<_>>(),
            vec![3, 4]
        );
        assert!(parsed.errors[1].error.starts_with("email:"));
    }

    #[test]
    fn users_csv_without_email_column_is_refused() {
        assert!(
            read_users("id,username\n1,ada\n".as_bytes(), usize::MAX)
                .unwrap_err()
                .contains("email")
        );
    }

    #[test]
    fn events_details_must_be_objects() {
        let csv = "id,url_id,user_id,event_type,timestamp,details\n1,1,1,created,2025-01-01 00:00:00,\"[1]\"\n";
        assert!(read_events(csv.as_bytes()).unwrap_err().contains("line 2"));
    }
}
