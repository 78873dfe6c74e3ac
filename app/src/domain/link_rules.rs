//! Rule-based targets: a link may send some visitors elsewhere than its `original_url`,
//! by their device, their languages, or a parameter of the short URL's query. Rules are
//! tried in order; the first whose every condition holds gives the target, and a visitor no
//! rule matches goes to `original_url`.

use std::cell::LazyCell;
use std::sync::LazyLock;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The most rules a link may have.
pub const MAX_RULES: usize = 16;
/// The longest query parameter name or value a rule may name, in characters.
pub const MAX_QUERY_PART: usize = 256;

/// One rule: its conditions (at least one; all must hold) and where it sends the visitor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// The visitor's device, from its `User-Agent`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    #[schema(nullable = false)]
    pub device: Option<Device>,
    /// A language tag (`fr`, `pt-BR`): holds when the visitor's `Accept-Language` accepts it
    /// (`fr` also accepts `fr-CA`; `fr-CA` only itself), at any quality above 0.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    #[schema(example = "fr", nullable = false)]
    pub language: Option<String>,
    /// A parameter of the short URL's query: present (and equal to `value`, when given).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    #[schema(nullable = false)]
    pub query: Option<QueryCondition>,
    /// Where the rule sends the visitor: an absolute http(s) URL, as `original_url`.
    #[schema(example = "https://example.fr/")]
    pub target: String,
}

/// A device class, as its `User-Agent` tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Device {
    /// iPhone, iPad (when it says so) and iPod.
    Ios,
    Android,
    /// Any phone or tablet, iOS and Android included.
    Mobile,
    /// Anything with a `User-Agent` that is not a phone or tablet.
    Desktop,
}

/// A query parameter a rule looks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QueryCondition {
    /// The parameter's name (as decoded).
    #[schema(example = "variant")]
    pub name: String,
    /// Its value; absent: any value.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    #[schema(example = "b", nullable = false)]
    pub value: Option<String>,
}

/// An optional field that, when present, has a value (`null` is refused, as the OpenAPI
/// document says: a condition is given or left out).
fn present<'de, D, T>(de: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(de).map(Some)
}

/// What of a request the rules may look at.
#[derive(Debug, Clone, Copy, Default)]
pub struct Asked<'a> {
    pub user_agent: Option<&'a str>,
    pub accept_language: Option<&'a str>,
    /// The raw query string (after `?`).
    pub query: Option<&'a str>,
}

// Valid by construction: see `Rules::parse`.
/// A link's rules, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, ToSchema)]
#[serde(transparent)]
pub struct Rules(Vec<Rule>);

impl Rules {
    /// Rules as given: at most [`MAX_RULES`], each with a condition, each language a tag,
    /// each query part non-empty and short. `check_target` validates each target (the
    /// deployment's target policy) and returns its canonical form.
    pub fn parse(
        rules: Vec<Rule>,
        mut check_target: impl FnMut(usize, &str) -> Result<String, String>,
    ) -> Result<Self, String> {
        if rules.len() > MAX_RULES {
            return Err(format!("at most {MAX_RULES} rules"));
        }
        let mut parsed = Vec::with_capacity(rules.len());
        for (i, mut rule) in rules.into_iter().enumerate() {
            let at = |e: String| format!("rule {i}: {e}");
            if rule.device.is_none() && rule.language.is_none() && rule.query.is_none() {
                return Err(at("needs a condition: device, language or query".into()));
            }
            if let Some(language) = &rule.language
                && !is_language_tag(language)
            {
                return Err(at(format!("{language:?} is not a language tag")));
            }
            if let Some(query) = &rule.query {
                let value = query.value.as_deref().unwrap_or("x");
                if query.name.is_empty() || value.is_empty() {
                    return Err(at("query name and value must not be empty".into()));
                }
                if query.name.chars().count() > MAX_QUERY_PART
                    || value.chars().count() > MAX_QUERY_PART
                {
                    return Err(at(format!(
                        "query name and value are at most {MAX_QUERY_PART} characters"
                    )));
                }
            }
            rule.target = check_target(i, &rule.target).map_err(|e| at(format!("target {e}")))?;
            parsed.push(rule);
        }
        Ok(Self(parsed))
    }

    /// Rules as stored (written by [`Rules::stored_form`]); `None` when they do not read.
    pub fn stored(json: &str) -> Option<Self> {
        serde_json::from_str(json).ok().map(Self)
    }

    /// The stored form: a JSON array.
    ///
    /// See also the `TryFrom<String>` the store reads it with.
    pub fn stored_form(&self) -> String {
        // A Vec of plain structs always serializes.
        serde_json::to_string(&self.0).unwrap_or_else(|_| "[]".into())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn as_slice(&self) -> &[Rule] {
        &self.0
    }

    /// Bytes held, for cache weights.
    pub fn heap_size(&self) -> usize {
        self.0
            .iter()
            .map(|r| {
                size_of::<Rule>()
                    + r.target.len()
                    + r.language.as_ref().map_or(0, String::len)
                    + r.query.as_ref().map_or(0, |q| {
                        q.name.len() + q.value.as_ref().map_or(0, String::len)
                    })
            })
            .sum()
    }

    /// The target of the first rule `asked` meets, if any.
    pub fn choose(&self, asked: &Asked<'_>) -> Option<&str> {
        // Each fact is worked out once, and only when a rule asks for it.
        let device = LazyCell::new(|| device_of(asked.user_agent));
        self.0
            .iter()
            .find(|rule| {
                rule.device.is_none_or(|wanted| device.matches(wanted))
                    && rule
                        .language
                        .as_deref()
                        .is_none_or(|tag| accepts(asked.accept_language, tag))
                    && rule
                        .query
                        .as_ref()
                        .is_none_or(|q| has_parameter(asked.query, q))
            })
            .map(|rule| rule.target.as_str())
    }
}

/// As the store reads them (a column written by [`Rules::stored_form`]).
impl TryFrom<String> for Rules {
    type Error = String;
    fn try_from(json: String) -> Result<Self, String> {
        Self::stored(&json).ok_or_else(|| format!("stored rules do not read: {json:.80}"))
    }
}

/// What a `User-Agent` says of the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    Ios,
    Android,
    OtherMobile,
    Desktop,
    /// No `User-Agent`, or one no parser knows: no device rule holds.
    Unknown,
}

impl Seen {
    fn matches(self, wanted: Device) -> bool {
        match wanted {
            Device::Ios => self == Self::Ios,
            Device::Android => self == Self::Android,
            Device::Mobile => matches!(self, Self::Ios | Self::Android | Self::OtherMobile),
            Device::Desktop => self == Self::Desktop,
        }
    }
}

fn device_of(user_agent: Option<&str>) -> Seen {
    static PARSER: LazyLock<woothee::parser::Parser> = LazyLock::new(woothee::parser::Parser::new);
    let Some(parsed) = user_agent.and_then(|ua| PARSER.parse(ua)) else {
        return Seen::Unknown;
    };
    match (parsed.os, parsed.category) {
        ("iPhone" | "iPad" | "iPod" | "iOS", _) => Seen::Ios,
        ("Android", _) => Seen::Android,
        (_, "smartphone" | "mobilephone") => Seen::OtherMobile,
        (_, "pc") => Seen::Desktop,
        _ => Seen::Unknown,
    }
}

/// `[A-Za-z]{1,8}(-[A-Za-z0-9]{1,8})*`: a BCP 47 tag's shape.
fn is_language_tag(tag: &str) -> bool {
    let mut parts = tag.split('-');
    let primary = parts.next().unwrap_or("");
    let fits = |p: &str| (1..=8).contains(&p.len());
    fits(primary)
        && primary.bytes().all(|b| b.is_ascii_alphabetic())
        && parts.all(|p| fits(p) && p.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// Whether `accept_language` accepts `tag` (or a more specific tag under it) at a quality
/// above 0.
fn accepts(accept_language: Option<&str>, tag: &str) -> bool {
    let Some(header) = accept_language else {
        return false;
    };
    header.split(',').any(|range| {
        let mut parts = range.split(';');
        let given = parts.next().unwrap_or("").trim();
        let refused = parts.any(|p| {
            p.trim()
                .strip_prefix("q=")
                .and_then(|q| q.trim().parse::<f32>().ok())
                .is_some_and(|q| q <= 0.0)
        });
        !refused
            && given.len() >= tag.len()
            && given[..tag.len()].eq_ignore_ascii_case(tag)
            && (given.len() == tag.len() || given.as_bytes()[tag.len()] == b'-')
    })
}

fn has_parameter(query: Option<&str>, wanted: &QueryCondition) -> bool {
    let Some(query) = query else {
        return false;
    };
    url::form_urlencoded::parse(query.as_bytes()).any(|(name, value)| {
        name == wanted.name.as_str() && wanted.value.as_deref().is_none_or(|v| value == v)
    })
}

/// `target` with the visitor's `query` added to its own (before any fragment).
pub fn forward_query(target: &str, query: Option<&str>) -> Option<String> {
    let query = query.filter(|q| !q.is_empty())?;
    let (base, fragment) = match target.split_once('#') {
        Some((base, fragment)) => (base, Some(fragment)),
        None => (target, None),
    };
    let joiner = if !base.contains('?') {
        "?"
    } else if base.ends_with('?') || base.ends_with('&') {
        ""
    } else {
        "&"
    };
    let mut forwarded = format!("{base}{joiner}{query}");
    if let Some(fragment) = fragment {
        forwarded.push('#');
        forwarded.push_str(fragment);
    }
    Some(forwarded)
}

#[cfg(test)]
mod tests {
    use super::*;

    const IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) \
        AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1";
    const PIXEL: &str = "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 \
        (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36";
    const WINDOWS: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 \
        (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";

    fn rule(json: &str) -> Rule {
        serde_json::from_str(json).unwrap()
    }

    fn rules(list: &[&str]) -> Rules {
        Rules::parse(list.iter().map(|r| rule(r)).collect(), |_, t| Ok(t.into())).unwrap()
    }

    #[test]
    fn devices_are_told_apart_by_their_user_agents() {
        assert_eq!(device_of(Some(IPHONE)), Seen::Ios);
        assert_eq!(device_of(Some(PIXEL)), Seen::Android);
        assert_eq!(device_of(Some(WINDOWS)), Seen::Desktop);
        assert_eq!(device_of(None), Seen::Unknown);
        assert!(Seen::Ios.matches(Device::Mobile) && Seen::Android.matches(Device::Mobile));
        assert!(!Seen::Desktop.matches(Device::Mobile) && !Seen::Unknown.matches(Device::Desktop));
    }

    #[test]
    fn the_first_rule_that_holds_wins() {
        let rules = rules(&[
            r#"{"device":"ios","target":"https://apps.apple.com/x"}"#,
            r#"{"device":"mobile","language":"de","target":"https://m.example.de/"}"#,
            r#"{"language":"fr","target":"https://example.fr/"}"#,
            r#"{"query":{"name":"v","value":"b"},"target":"https://example.com/b"}"#,
            r#"{"query":{"name":"beta"},"target":"https://example.com/beta"}"#,
        ]);
        let asked = |ua, lang, query| Asked {
            user_agent: ua,
            accept_language: lang,
            query,
        };
        assert_eq!(
            rules.choose(&asked(Some(IPHONE), Some("fr"), None)),
            Some("https://apps.apple.com/x")
        );
        assert_eq!(
            rules.choose(&asked(Some(PIXEL), Some("de-AT, en;q=0.5"), None)),
            Some("https://m.example.de/")
        );
        assert_eq!(
            rules.choose(&asked(Some(WINDOWS), Some("de-AT, fr-CA;q=0.4"), None)),
            Some("https://example.fr/")
        );
        // Refused outright (q=0) is not accepted; `fr` is not `fra`.
        assert_eq!(
            rules.choose(&asked(None, Some("fr;q=0, fra"), Some("v=a"))),
            None
        );
        assert_eq!(
            rules.choose(&asked(None, None, Some("x=1&v=b"))),
            Some("https://example.com/b")
        );
        assert_eq!(
            rules.choose(&asked(None, None, Some("beta"))),
            Some("https://example.com/beta")
        );
        assert_eq!(rules.choose(&Asked::default()), None);
    }

    #[test]
    fn a_specific_language_does_not_hold_for_its_parent() {
        assert!(accepts(Some("fr-CA"), "fr"));
        assert!(accepts(Some("en, FR-ca;q=0.8"), "fr-CA"));
        assert!(!accepts(Some("fr"), "fr-CA"));
        assert!(!accepts(Some("fr-FR"), "fr-CA"));
    }

    #[test]
    fn rules_are_refused_with_the_reason() {
        let parse = |json: &str| {
            let list: Vec<Rule> = serde_json::from_str(json).unwrap();
            Rules::parse(list, |_, t| {
                t.starts_with("https://")
                    .then(|| t.to_owned())
                    .ok_or_else(|| "is not https".to_owned())
            })
        };
        assert!(
            parse(r#"[{"target":"https://a.example/"}]"#)
                .unwrap_err()
                .contains("needs a condition")
        );
        assert!(
            parse(r#"[{"language":"fr_FR","target":"https://a.example/"}]"#)
                .unwrap_err()
                .contains("not a language tag")
        );
        assert!(
            parse(r#"[{"query":{"name":""},"target":"https://a.example/"}]"#)
                .unwrap_err()
                .contains("must not be empty")
        );
        assert_eq!(
            parse(r#"[{"device":"ios","target":"https://a.example/"},{"device":"android","target":"ftp://x"}]"#)
                .unwrap_err(),
            "rule 1: target is not https"
        );
        let many = format!(
            "[{}]",
            vec![r#"{"device":"ios","target":"https://a.example/"}"#; 17].join(",")
        );
        assert!(parse(&many).unwrap_err().contains("at most 16"));
        assert!(serde_json::from_str::<Rule>(r#"{"device":"tablet","target":"x"}"#).is_err());
        assert!(serde_json::from_str::<Rule>(r#"{"devices":"ios","target":"x"}"#).is_err());
        assert!(serde_json::from_str::<Rule>(r#"{"device":null,"target":"x"}"#).is_err());
    }

    #[test]
    fn stored_rules_round_trip() {
        let rules =
            rules(&[r#"{"query":{"name":"v"},"language":"en-GB","target":"https://a.example/"}"#]);
        assert_eq!(Rules::stored(&rules.stored_form()), Some(rules));
        assert_eq!(Rules::stored("[]"), Some(Rules::default()));
        assert_eq!(Rules::stored("{"), None);
    }

    #[test]
    fn a_forwarded_query_joins_the_targets_own_before_its_fragment() {
        let f = |t, q| forward_query(t, Some(q));
        assert_eq!(
            f("https://a.example/p", "x=1"),
            Some("https://a.example/p?x=1".into())
        );
        assert_eq!(
            f("https://a.example/p?y=2", "x=1"),
            Some("https://a.example/p?y=2&x=1".into())
        );
        assert_eq!(
            f("https://a.example/p?", "x=1"),
            Some("https://a.example/p?x=1".into())
        );
        assert_eq!(
            f("https://a.example/p#top", "x=1"),
            Some("https://a.example/p?x=1#top".into())
        );
        assert_eq!(f("https://a.example/p", ""), None);
        assert_eq!(forward_query("https://a.example/p", None), None);
    }
}
