//! The tables of the documentation, generated from [`crate::ALL`]: the
//! README's (every variable) and docs/operator.md's (what a Shortener sets,
//! and what the operator sets itself). A test keeps the committed files
//! equal to what is generated here; `UPDATE_DOCS=1 cargo test -p
//! shortener-settings` rewrites them.

use crate::{ALL, Format, Kind, ReadBy, Setting, Shortener};

/// The README's configuration table: every variable the service reads.
pub fn variables() -> String {
    let mut out = String::from("| variable | default | meaning |\n|---|---|---|\n");
    for s in ALL {
        out.push_str(&format!(
            "| `{}` | {} | {}{} |\n",
            s.env,
            default_cell(s),
            cell(s.help),
            values_note(s)
        ));
    }
    out
}

/// docs/operator.md's table of `spec.app.config`: each field, its variable,
/// the values the schema admits and its default.
pub fn shortener_fields() -> String {
    let mut out = String::from(
        "| field of `spec.app.config` | variable | values | default | meaning |\n|---|---|---|---|---|\n",
    );
    for s in ALL {
        let Some(path) = s.field() else { continue };
        out.push_str(&format!(
            "| `{path}` | `{}` | {} | {} | {} |\n",
            s.env,
            values(s),
            default_cell(s),
            cell(s.help)
        ));
    }
    out
}

/// docs/operator.md's table of the variables the operator sets itself, or
/// leaves out on purpose.
pub fn operator_owned() -> String {
    let mut out = String::from("| variable | in a Shortener |\n|---|---|\n");
    for s in ALL {
        let how = match s.shortener {
            Shortener::Field(_) => continue,
            Shortener::Operator(how) => format!("set by the operator: {how}"),
            Shortener::Omitted(why) => format!("not set: {why}"),
        };
        out.push_str(&format!("| `{}` | {} |\n", s.env, cell(&how)));
    }
    out
}

fn default_cell(s: &Setting) -> String {
    match (s.kind, s.default_value()) {
        (Kind::List { .. }, _) => "empty".into(),
        (_, Some(value)) => format!("`{value}`"),
        (_, None) => "unset".into(),
    }
}

/// What the schema admits, in words.
fn values(s: &Setting) -> String {
    match s.kind {
        Kind::Integer { min, max, .. } => format!("{min}–{max}"),
        Kind::Ratio { .. } => "0–1".into(),
        Kind::Flag { .. } => "`true`, `false`".into(),
        Kind::Choice { choices, .. } => choices
            .iter()
            .map(|c| format!("`{c}`"))
            .collect::<Vec<_>>()
            .join(", "),
        Kind::Text { format, .. } => format_words(format),
        Kind::List { item } => format!("list of {}", format_words(item)),
        Kind::Secret | Kind::Replaced { .. } => String::new(),
    }
}

fn format_words(format: Format) -> String {
    match format {
        Format::Any => "text".into(),
        Format::Pattern { examples, .. } => format!(
            "like {}",
            examples
                .iter()
                .map(|e| format!("`{e}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Format::Network => "IP addresses or CIDR networks".into(),
    }
}

/// The README states ranges only where the help does not.
fn values_note(s: &Setting) -> String {
    match (s.kind, s.read_by) {
        (Kind::Integer { min, max, .. }, ReadBy::Flag) => format!(" ({min}–{max})"),
        _ => String::new(),
    }
}

/// Text safe inside a table cell.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;

    /// Replaces the text between `<!-- NAME:begin -->` and `<!-- NAME:end -->`.
    fn with_section(doc: &str, name: &str, body: &str) -> Option<String> {
        let begin = format!("<!-- {name}:begin -->\n");
        let end = format!("<!-- {name}:end -->");
        let start = doc.find(&begin)? + begin.len();
        let stop = start + doc[start..].find(&end)?;
        Some(format!("{}{body}{}", &doc[..start], &doc[stop..]))
    }

    fn repo_file(path: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
    }

    /// The committed documents carry the generated tables.
    #[test]
    fn documents_carry_the_generated_tables() {
        let documents = [
            ("README.md", vec![("settings", variables())]),
            (
                "docs/operator.md",
                vec![
                    ("shortener-settings", shortener_fields()),
                    ("operator-settings", operator_owned()),
                ],
            ),
        ];
        let update = std::env::var_os("UPDATE_DOCS").is_some();
        for (path, sections) in documents {
            let file = repo_file(path);
            let doc = std::fs::read_to_string(&file).expect("the document is readable");
            let mut expected = doc.clone();
            for (name, body) in sections {
                expected = with_section(&expected, name, &body)
                    .unwrap_or_else(|| panic!("{path} has no <!-- {name}:begin/end --> markers"));
            }
            if update {
                std::fs::write(&file, &expected).expect("the document is writable");
            } else {
                assert!(
                    doc == expected,
                    "{path} differs from the settings description: run \
                     `UPDATE_DOCS=1 cargo test -p shortener-settings` and commit the result"
                );
            }
        }
    }

    #[test]
    fn every_variable_is_in_the_readme_table_once() {
        let table = variables();
        for s in ALL {
            assert_eq!(table.matches(&format!("| `{}` |", s.env)).count(), 1);
        }
    }
}
