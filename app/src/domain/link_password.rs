//! A link's password: kept only as its Argon2id hash (PHC string form), checked in constant
//! time by the `argon2` crate. The password itself lives no longer than the request that
//! carries it: it is never stored, logged, put in an event or cached.

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

/// Shortest and longest password accepted, in characters.
pub const MIN_PASSWORD_CHARS: usize = 4;
pub const MAX_PASSWORD_CHARS: usize = 128;

/// The hash of a link's password (`$argon2id$v=19$m=…`).
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHashed(Box<str>);

/// Never the hash itself, in logs or debug output.
impl std::fmt::Debug for PasswordHashed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PasswordHashed(..)")
    }
}

/// Argon2id with OWASP's first recommended setting (19 MiB, 2 passes, 1 lane): about 20 ms
/// of one core per hash or check on the dev VM, and 19 MiB while it runs.
fn argon2() -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::default())
}

impl PasswordHashed {
    /// A password as a client gave it: 4-128 characters, not all blank. CPU-heavy (see
    /// [`argon2`]): call it off the request threads.
    pub fn of(password: &str) -> Result<Self, String> {
        let chars = password.chars().count();
        if !(MIN_PASSWORD_CHARS..=MAX_PASSWORD_CHARS).contains(&chars) {
            return Err(format!(
                "must be {MIN_PASSWORD_CHARS} to {MAX_PASSWORD_CHARS} characters"
            ));
        }
        if password.trim().is_empty() {
            return Err("must not be blank".into());
        }
        let salt = SaltString::generate(&mut OsRng);
        let hash = argon2()
            .hash_password(password.as_bytes(), &salt)
            .map_err(|e| format!("could not be hashed: {e}"))?;
        Ok(Self(hash.to_string().into()))
    }

    /// A hash as stored (the database, the shared cache); `None` if it is not one.
    pub fn stored(hash: &str) -> Option<Self> {
        let parsed = PasswordHash::new(hash).ok()?;
        (parsed.algorithm == Algorithm::Argon2id.ident()).then(|| Self(hash.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `password` is this hash's password. CPU-heavy, as [`PasswordHashed::of`].
    pub fn matches(&self, password: &str) -> bool {
        let Ok(hash) = PasswordHash::new(&self.0) else {
            return false;
        };
        // The parameters are the hash's own, so a hash made with other settings still checks.
        argon2().verify_password(password.as_bytes(), &hash).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_password_matches_its_hash() {
        let hash = PasswordHashed::of("correct horse").unwrap();
        assert!(hash.as_str().starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(!hash.as_str().contains("correct horse"));
        assert!(hash.matches("correct horse"));
        assert!(!hash.matches("correct horse "));
        assert!(!hash.matches(""));
        // Salted: the same password hashes differently each time.
        assert_ne!(hash, PasswordHashed::of("correct horse").unwrap());
        let stored = PasswordHashed::stored(hash.as_str()).unwrap();
        assert!(stored.matches("correct horse"));
        assert!(!format!("{stored:?}").contains("argon2"));
    }

    #[test]
    fn passwords_are_bounded_and_stored_hashes_checked() {
        assert!(PasswordHashed::of("abc").is_err());
        assert!(PasswordHashed::of("    ").is_err());
        assert!(PasswordHashed::of(&"x".repeat(129)).is_err());
        assert!(PasswordHashed::of("ünï4").is_ok());
        assert!(PasswordHashed::stored("not a hash").is_none());
        assert!(PasswordHashed::stored("").is_none());
        // Only Argon2id's: another algorithm's PHC string is not one of ours.
        let other = PasswordHashed::of("long enough")
            .unwrap()
            .as_str()
            .replacen("$argon2id$", "$argon2i$", 1);
        assert!(PasswordHashed::stored(&other).is_none());
    }
}
