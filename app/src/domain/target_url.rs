use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Where a short code points: an absolute `http` or `https` URL with a host,
/// that every client reads the same way. `hello`, `example.com`, `ftp://…`
/// and `javascript:…` are refused, and so is anything a reader and a browser
/// may disagree on: credentials before the host
/// (`https://good.example@evil.example/`), backslashes (which browsers read
/// as slashes), and invisible formatting or bidirectional-override
/// characters. Which hosts a deployment accepts is [`TargetPolicy`]'s call.
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
        if raw.chars().any(is_invisible_format) {
            return Err("must not contain invisible formatting or bidirectional characters".into());
        }
        if raw.contains('\\') {
            return Err("must not contain '\\' (browsers read it as '/')".into());
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
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err("must not contain credentials ('user@' before the host)".into());
        }
        // Keep what the user sent (not the normalised form): they will compare
        // the stored value with their own string.
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The host as the URL parser reads it (IPv4 in any notation becomes
    /// an address).
    fn host(&self) -> Option<url::Host<String>> {
        url::Url::parse(&self.0).ok()?.host().map(|h| h.to_owned())
    }
}

/// Unicode format characters that change how a URL is displayed without
/// being visible: soft hyphen, zero-width and joiner characters,
/// bidirectional marks, embeddings, overrides and isolates, word joiner and
/// invisible operators, the byte-order mark, interlinear annotations.
fn is_invisible_format(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{061C}' | '\u{180E}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{206F}' | '\u{FEFF}' | '\u{FFF9}'..='\u{FFFB}')
}

/// Which targets a deployment accepts, beyond what [`TargetUrl`] refuses
/// everywhere. A shortener is an open redirect by design; it should not
/// also point into the network it runs in (cloud metadata, loopback
/// admin ports, private ranges), nor at domains the operators have banned.
#[derive(Debug, Clone, Default)]
pub struct TargetPolicy {
    /// Accept IP literals in loopback, private, link-local (metadata),
    /// shared and unspecified ranges, and `localhost`.
    pub allow_private: bool,
    /// Domains refused with all their subdomains (lowercase).
    pub denied_domains: Vec<String>,
}

impl TargetPolicy {
    pub fn check(&self, target: &TargetUrl) -> Result<(), String> {
        match target.host() {
            Some(url::Host::Ipv4(ip)) if !self.allow_private && is_internal(IpAddr::V4(ip)) => {
                Err(format!("points into a private network ({ip})"))
            }
            Some(url::Host::Ipv6(ip)) if !self.allow_private && is_internal(IpAddr::V6(ip)) => {
                Err(format!("points into a private network ({ip})"))
            }
            Some(url::Host::Domain(domain)) => {
                let domain = domain.trim_end_matches('.').to_ascii_lowercase();
                let under = |d: &str| domain == d || domain.ends_with(&format!(".{d}"));
                if !self.allow_private && under("localhost") {
                    return Err("points at localhost".into());
                }
                match self.denied_domains.iter().find(|d| under(d)) {
                    Some(denied) => Err(format!("the domain {denied} is not allowed")),
                    None => Ok(()),
                }
            }
            _ => Ok(()),
        }
    }
}

/// Loopback, private, link-local (cloud metadata lives at 169.254.169.254),
/// shared address space, unspecified, broadcast; IPv6 unique-local and
/// link-local, and IPv4 addresses mapped into IPv6.
fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_internal_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_internal_v4(v4),
            None => {
                let first = v6.segments()[0];
                v6.is_loopback()
                    || v6.is_unspecified()
                    || (first & 0xfe00) == 0xfc00
                    || (first & 0xffc0) == 0xfe80
                    || v6 == Ipv6Addr::LOCALHOST
            }
        },
    }
}

fn is_internal_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || a == 0
        || (a == 100 && (64..128).contains(&b))
}

impl fmt::Display for TargetUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::{TargetPolicy, TargetUrl};

    #[test]
    fn accepts_http_and_https_with_a_host() {
        for ok in [
            "https://example.com",
            "http://example.com/a/b?c=d#e",
            "https://sub.example.co.uk:8443/path",
            "http://127.0.0.1:8080/",
            "https://example.com/a%40b?x=y@z",
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
            "https://good.example@evil.example/x",
            "https://user:pw@example.com/",
            "https://evil.example\\@good.example/",
            "https://example.com/\u{202E}gpj.exe",
            "https://exa\u{200B}mple.com/",
        ] {
            assert!(TargetUrl::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn the_policy_keeps_targets_out_of_internal_networks() {
        let strict = TargetPolicy::default();
        let refused = [
            "http://169.254.169.254/latest/meta-data/",
            "http://127.0.0.1:8080/admin",
            "http://2130706433/",
            "http://0x7f.1/",
            "http://10.1.2.3/",
            "http://192.168.0.1/",
            "http://172.16.5.4/",
            "http://100.64.0.1/",
            "http://0.0.0.0/",
            "http://[::1]/",
            "http://[fd00::1]/",
            "http://[fe80::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://localhost:9000/",
            "http://api.localhost/",
        ];
        for raw in refused {
            let target = TargetUrl::parse(raw).unwrap();
            assert!(strict.check(&target).is_err(), "{raw} should be refused");
        }
        let open = TargetPolicy {
            allow_private: true,
            ..TargetPolicy::default()
        };
        for raw in refused {
            assert!(open.check(&TargetUrl::parse(raw).unwrap()).is_ok(), "{raw}");
        }
        for raw in [
            "https://example.com/",
            "http://8.8.8.8/",
            "http://[2001:db8::1]/",
        ] {
            assert!(
                strict.check(&TargetUrl::parse(raw).unwrap()).is_ok(),
                "{raw}"
            );
        }
        let denying = TargetPolicy {
            denied_domains: vec!["evil.example".into()],
            ..TargetPolicy::default()
        };
        for raw in ["https://evil.example/", "https://a.b.EVIL.example./x"] {
            assert!(
                denying.check(&TargetUrl::parse(raw).unwrap()).is_err(),
                "{raw}"
            );
        }
        assert!(
            denying
                .check(&TargetUrl::parse("https://notevil.example/").unwrap())
                .is_ok()
        );
    }
}
