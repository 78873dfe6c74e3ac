use std::fmt;

use rand::Rng;

/// The key of a redirect: `GET /{short_code}`.
///
/// Generated codes are random (not derived from the row id, so they cannot be
/// enumerated), [`ShortCode::GENERATED_LEN`] characters of `[A-Za-z0-9]`.
/// Uniqueness across replicas is the database's job (a unique index); the
/// caller retries with a fresh code on the rare collision.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ShortCode(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShortCodeError {
    #[error("must be {min} to {max} characters long", min = ShortCode::MIN_LEN, max = ShortCode::MAX_LEN)]
    Length,
    #[error("may contain only letters, digits, '_' and '-'")]
    Alphabet,
    #[error("'{0}' is reserved")]
    Reserved(String),
}

impl ShortCode {
    /// Paths the service serves itself or may serve later; a custom code equal
    /// to one of them (in any letter case) would shadow or be shadowed by a
    /// route.
    pub const RESERVED: &'static [&'static str] = &[
        "admin",
        "api",
        "docs",
        "events",
        "favicon.ico",
        "health",
        "healthz",
        "keys",
        "livez",
        "login",
        "logout",
        "metrics",
        "openapi",
        "openapi.json",
        "readyz",
        "robots.txt",
        "shorten",
        "static",
        "status",
        "swagger",
        "urls",
        "users",
        "v1",
        "v2",
    ];

    pub const MIN_LEN: usize = 3;
    pub const MAX_LEN: usize = 32;
    /// 62^7 ≈ 3.5e12 codes: a collision needs millions of links before it is
    /// even likely once, and is then retried.
    pub const GENERATED_LEN: usize = 7;

    /// Validates a user-chosen code.
    pub fn parse(raw: &str) -> Result<Self, ShortCodeError> {
        let len = raw.chars().count();
        if !(Self::MIN_LEN..=Self::MAX_LEN).contains(&len) {
            return Err(ShortCodeError::Length);
        }
        if !in_alphabet(raw) {
            return Err(ShortCodeError::Alphabet);
        }
        if Self::is_reserved(raw) {
            return Err(ShortCodeError::Reserved(raw.to_owned()));
        }
        Ok(Self(raw.to_owned()))
    }

    /// Whether `raw` could name a link at all (any code ever stored: at most
    /// [`ShortCode::MAX_LEN`] of `[A-Za-z0-9_-]`). A path that could not is
    /// answered 404 without a lookup, so junk paths cost no database or
    /// Redis round trip and no cache entry.
    pub fn could_be(raw: &str) -> bool {
        !raw.is_empty() && raw.len() <= Self::MAX_LEN && in_alphabet(raw)
    }

    /// Whether `raw` names one of the service's own routes.
    pub fn is_reserved(raw: &str) -> bool {
        Self::RESERVED.iter().any(|r| r.eq_ignore_ascii_case(raw))
    }

    /// A fresh random code from the thread-local CSPRNG.
    pub fn generate() -> Self {
        Self::generate_with(&mut rand::rng())
    }

    /// A random code from the given generator (seed data uses a seeded one).
    pub fn generate_with<R: Rng + ?Sized>(rng: &mut R) -> Self {
        Self::generate_len_with(rng, Self::GENERATED_LEN)
    }

    pub fn generate_len_with<R: Rng + ?Sized>(rng: &mut R, len: usize) -> Self {
        Self(random_alphanumeric(rng, len))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The letters of generated short codes and API keys.
const ALPHANUMERIC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// `len` characters of [A-Za-z0-9] from `rng`.
pub fn random_alphanumeric<R: Rng + ?Sized>(rng: &mut R, len: usize) -> String {
    (0..len)
        .map(|_| char::from(ALPHANUMERIC[rng.random_range(0..ALPHANUMERIC.len())]))
        .collect()
}

fn in_alphabet(raw: &str) -> bool {
    raw.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl fmt::Display for ShortCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    /// docs/api.md lists exactly the reserved words.
    #[test]
    fn the_api_reference_lists_every_reserved_word() {
        let doc = include_str!("../../../docs/api.md");
        let start = doc
            .find("not a reserved word (case-insensitive): ")
            .expect("the validation rules name the reserved words");
        let rest = &doc[start..];
        let list = &rest[..rest.find(". ").expect("the list ends a sentence")];
        let listed: Vec<&str> = list.split('`').skip(1).step_by(2).collect();
        assert_eq!(listed, ShortCode::RESERVED);
    }

    use super::*;

    #[test]
    fn generated_codes_have_the_promised_shape() {
        for _ in 0..1000 {
            let code = ShortCode::generate();
            assert_eq!(code.as_str().len(), ShortCode::GENERATED_LEN);
            assert!(code.as_str().bytes().all(|b| b.is_ascii_alphanumeric()));
        }
    }

    #[test]
    fn generated_codes_do_not_repeat() {
        let codes: std::collections::HashSet<_> =
            (0..10_000).map(|_| ShortCode::generate()).collect();
        assert_eq!(codes.len(), 10_000);
    }

    #[test]
    fn custom_codes_are_validated() {
        assert!(ShortCode::parse("my-link_2").is_ok());
        assert_eq!(ShortCode::parse("ab"), Err(ShortCodeError::Length));
        assert_eq!(
            ShortCode::parse(&"a".repeat(33)),
            Err(ShortCodeError::Length)
        );
        assert_eq!(ShortCode::parse("no spaces"), Err(ShortCodeError::Alphabet));
        assert_eq!(ShortCode::parse("ünï"), Err(ShortCodeError::Alphabet));
        assert!(matches!(
            ShortCode::parse("Health"),
            Err(ShortCodeError::Reserved(_))
        ));
        assert!(matches!(
            ShortCode::parse("shorten"),
            Err(ShortCodeError::Reserved(_))
        ));
    }
}
