use std::fmt;

/// Where a short code points: an absolute `http` or `https` URL with a host.
/// `hello`, `example.com`, `ftp://…` and `javascript:…` are all refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetUrl(String);

impl TargetUrl {
    /// Long enough for real-world tracking URLs, short enough that a row
    /// stays small. Browsers handle far longer, but nobody shortens those.
    pub const MAX_LEN: usize = 4096;

    pub fn parse(raw: &str) -> Result<Self, String> {
        let raw = raw.trim();
        if raw.is_empty() {
            return Err("must not be empty".into());
        }
        if raw.len() > Self::MAX_LEN {
            return Err(format!("must be at most {} characters", Self::MAX_LEN));
        }
        if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("must not contain whitespace or control characters".into());
        }
        let parsed =
            url::Url::parse(raw).map_err(|_| format!("'{raw}' is not an absolute http(s) URL"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(format!(
                "scheme '{}' is not allowed: use http or https",
                parsed.scheme()
            ));
        }
        // The URL parser forgives `https:///host` and `http:host` as
        // browsers do; a link we hand out should not depend on that guess.
        let after_scheme = &raw[parsed.scheme().len() + 1..];
        let authority = after_scheme.strip_prefix("//").unwrap_or("");
        if authority.is_empty() || authority.starts_with(['/', '\\']) {
            return Err(format!(
                "'{raw}' is not an absolute http(s) URL with a host"
            ));
        }
        match parsed.host_str() {
            Some(host) if !host.is_empty() => {}
            _ => return Err(format!("'{raw}' has no host")),
        }
        // Keep what the user sent (not the normalised form): they will compare
        // the stored value with their own string.
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TargetUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::TargetUrl;

    #[test]
    fn accepts_http_and_https_with_a_host() {
        for ok in [
            "https://example.com",
            "http://example.com/a/b?c=d#e",
            "https://sub.example.co.uk:8443/path",
            "http://127.0.0.1:8080/",
        ] {
            assert_eq!(
                TargetUrl::parse(ok).map(|u| u.to_string()),
                Ok(ok.to_owned())
            );
        }
    }

    #[test]
    fn refuses_what_the_contract_names() {
        for bad in [
            "hello",
            "example.com",
            "ftp://example.com/file",
            "javascript:alert(1)",
            "http://",
            "https:///path",
            "",
            "   ",
            "mailto:a@b.com",
            "data:text/html,hi",
            "http://exa mple.com",
            "http:example.com",
            "https:\\\\example.com",
        ] {
            assert!(TargetUrl::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }
}
