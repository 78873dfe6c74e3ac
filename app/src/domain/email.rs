use std::fmt;

/// An email address, checked structurally (one `@`, a dotted domain, no
/// whitespace). Deliverability is not our business; obvious garbage is.
/// Uniqueness is case-insensitive (enforced by the store), but the address is
/// kept as the user wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    pub const MAX_LEN: usize = 254;

    pub fn parse(raw: &str) -> Result<Self, String> {
        let email = raw.trim();
        let invalid = || format!("'{email}' is not a valid email address");
        if email.is_empty() {
            return Err("must not be empty".into());
        }
        if email.len() > Self::MAX_LEN {
            return Err(format!("must be at most {} characters", Self::MAX_LEN));
        }
        let (local, domain) = email.split_once('@').ok_or_else(invalid)?;
        let domain_ok = !domain.contains('@')
            && domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
            && !domain.contains("..")
            && domain
                .chars()
                .all(|c| c.is_alphanumeric() || c == '-' || c == '.');
        let local_ok = !local.is_empty()
            && local.len() <= 64
            && !local
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == '<' || c == '>');
        if !(local_ok && domain_ok) {
            return Err(invalid());
        }
        Ok(Self(email.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::Email;

    #[test]
    fn accepts_ordinary_addresses() {
        for ok in ["a@b.co", "first.last+tag@sub.example.com", " x@y.io "] {
            assert!(Email::parse(ok).is_ok(), "{ok}");
        }
        assert_eq!(
            Email::parse(" x@y.io ").map(|e| e.to_string()),
            Ok("x@y.io".into())
        );
    }

    #[test]
    fn refuses_garbage() {
        for bad in [
            "",
            "plain",
            "@example.com",
            "a@",
            "a@b",
            "a@@b.com",
            "a b@c.com",
            "a@b..com",
            "a@.b.com",
            "a@b.com.",
            "a@exa mple.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }
}
